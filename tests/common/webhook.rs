//! A webhook receiver for Alertmanager in tests: a loopback HTTP listener on a thread that records
//! every POSTed JSON body with its path. Bounded: headers 16 KiB, bodies 1 MiB, 5 s per connection.
//! Included with `#[path = "common/webhook.rs"] mod webhook;` (tests/observability.rs) or
//! `#[path = "../common/webhook.rs"]` (the stack checks).
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One received alert: (alertname, status, the whole alert object).
pub type Alert = (String, String, Value);

/// One notification: the request path and Alertmanager's JSON body.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub body: Value,
}

pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Hook>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let got = got.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(h) = serve(stream) {
                                got.lock().unwrap().push(h);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        Receiver { port, got, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn all(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    /// Every alert of every notification so far, as (path, status, alert object).
    pub fn alerts(&self) -> Vec<Alert> {
        self.all()
            .into_iter()
            .flat_map(|h| {
                let alerts = h.body["alerts"].as_array().cloned().unwrap_or_default();
                alerts.into_iter().map(move |a| {
                    (
                        h.path.clone(),
                        a["status"].as_str().unwrap_or_default().to_string(),
                        a,
                    )
                })
            })
            .collect()
    }

    /// Wait (bounded) until `pred` holds for the alerts received; the last alerts either way.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Alert]) -> bool,
    ) -> Result<Vec<Alert>, Vec<Alert>> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.alerts();
            if pred(&a) {
                return Ok(a);
            }
            if Instant::now() > deadline {
                return Err(a);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: std::net::TcpStream) -> Option<Hook> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut len = 0usize;
    let mut header_bytes = line.len();
    loop {
        let mut h = String::new();
        let n = reader.read_line(&mut h).ok()?;
        header_bytes += n;
        if n == 0 || h == "\r\n" || h == "\n" || header_bytes > 16 << 10 {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    if len > 1 << 20 {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut w = stream;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    Some(Hook {
        path,
        body: serde_json::from_slice(&body).ok()?,
    })
}
