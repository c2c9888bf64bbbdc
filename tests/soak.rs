//! `mcpctl soak` against bridges run on the host (`mcpctl bridge -- mcp-testserver`) and a tiny
//! fake MCP server, through a test manifest naming their 127.0.0.1 ports. Short runs (seconds):
//! a clean soak passes; scheduled failures show as exactly k failures of n calls (exit 6); a
//! bridge killed mid-run shows as lost availability and its recovery; a server whose sessions
//! never return to baseline is flagged, a clean one is not; Ctrl-C writes a report, exits 130
//! and `--resume` finishes the run. With Docker: memory is summed over the project's containers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A bridge on the host, killed (with its child) when dropped. Its output goes to
/// `<dir>/bridge-<nonce>.log` (appended across restarts), shown when a wait on it times out.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    /// Start a bridge on 127.0.0.1:`port`; port 0 lets the OS choose (read back from the log), so
    /// no other test can take it between choosing and binding.
    fn start(dir: &Path, port: u16, nonce: &str, server_args: &[&str]) -> Bridge {
        let log = dir.join(format!("bridge-{nonce}.log"));
        let mut cmd = Command::new(mcpctl());
        cmd.args(["bridge", "--listen", &format!("127.0.0.1:{port}"), "--"])
            .arg(testserver())
            .args(["--nonce", nonce])
            .args(server_args)
            .env("MCPCTL_LOG", "info")
            .stdin(Stdio::null());
        let child = log_to(&mut cmd, &log).spawn().expect("bridge starts");
        let mut b = Bridge { child, port, log };
        let log = b.log.clone();
        b.port = wait_for_logged(
            &format!("bridge {nonce} ready (asked for port {port})"),
            Duration::from_secs(20),
            &[&log],
            || {
                if let Some(status) = b.child.try_wait().unwrap() {
                    panic!(
                        "bridge {nonce} exited ({status}) before it was ready\n{}",
                        log_tail(&log, 40)
                    );
                }
                let p = if port == 0 {
                    logged_bridge_port(&log)?
                } else {
                    port
                };
                http_get(p, "/readyz")
                    .filter(|(code, _)| *code == 200)
                    .map(|_| p)
            },
        );
        b
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A soak run in the background, its stdout and stderr in files of the test's directory (kept
/// when the test fails); killed if the test ends before it does.
struct BackgroundSoak {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl BackgroundSoak {
    fn spawn(mut cmd: Command, dir: &Path) -> BackgroundSoak {
        let (stdout, stderr) = (dir.join("soak.stdout"), dir.join("soak.stderr"));
        let file = |p: &Path| std::fs::File::create(p).unwrap();
        let child = cmd
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("mcpctl soak starts");
        BackgroundSoak {
            child,
            stdout,
            stderr,
        }
    }

    /// Wait for the run to end; (exit code, stderr).
    fn wait(&mut self, timeout: Duration, other_logs: &[&Path]) -> (i32, String) {
        let mut logs = vec![self.stderr.as_path(), self.stdout.as_path()];
        logs.extend_from_slice(other_logs);
        let status = wait_for_logged("the soak to end", timeout, &logs, || {
            self.child.try_wait().unwrap()
        });
        (
            status.code().unwrap_or(-1),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }
}

impl Drop for BackgroundSoak {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET on 127.0.0.1 with a 2 s bound: (status, body), or None when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Some((code, body))
}

/// A fake Streamable HTTP MCP server that never forgets a session: `mcp_bridge_sessions_active`
/// counts every initialize and never goes down (DELETE is acknowledged and ignored) — a leak.
struct LeakyServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeakyServer {
    fn start() -> LeakyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let sessions = Arc::new(AtomicU64::new(0));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let sessions = sessions.clone();
                std::thread::spawn(move || {
                    let _ = serve_leaky(conn, &sessions);
                });
            }
        });
        LeakyServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LeakyServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_leaky(conn: TcpStream, sessions: &AtomicU64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let respond = |out: &mut TcpStream, code: &str, extra: &str, ctype: &str, body: &str| {
        write!(
            out,
            "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => {
            let n = sessions.load(Ordering::SeqCst);
            let text = format!(
                "mcp_bridge_sessions_active{{transport=\"streamable_http\"}} {n}\nmcp_bridge_child_processes 1\n"
            );
            respond(&mut out, "200 OK", "", "text/plain", &text)
        }
        ("POST", "/mcp") => {
            let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(id) = msg.get("id").cloned() else {
                return respond(&mut out, "202 Accepted", "", "text/plain", "");
            };
            let (result, extra) = match msg["method"].as_str().unwrap_or("") {
                "initialize" => {
                    let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
                    (
                        json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                               "serverInfo": {"name": "leaky", "version": "0"}}),
                        format!("Mcp-Session-Id: leaky-{n}\r\n"),
                    )
                }
                "tools/list" => (
                    json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}),
                    String::new(),
                ),
                "tools/call" => (
                    json!({"content": [{"type": "text", "text": "hi|leaky"}], "isError": false}),
                    String::new(),
                ),
                _ => (json!({}), String::new()),
            };
            let reply = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
            respond(&mut out, "200 OK", &extra, "application/json", &reply)
        }
        ("DELETE", "/mcp") => respond(&mut out, "200 OK", "", "text/plain", ""),
        _ => respond(&mut out, "404 Not Found", "", "text/plain", ""),
    }
}

/// One service of the test manifest.
struct Svc<'a> {
    name: &'a str,
    port: u16,
    transport: &'a str,
    /// YAML flow sequence of smoke steps.
    smoke: &'a str,
    expect: &'a str,
}

fn manifest(dir: &Path, project: &str, services: &[Svc]) -> PathBuf {
    let mut y = format!(
        "version: 1\nproject: {project}\nbind_address: 127.0.0.1\n\
         observability: {{prometheus_url: \"http://127.0.0.1:{}\"}}\nservices:\n",
        free_port()
    );
    for s in services {
        // The SLO is generous: a debug build on a shared 2-core machine; the p95 figure itself is
        // asserted to be present, and the SLO logic has unit tests.
        y.push_str(&format!(
            "  {}:\n    port: {}\n    transport: {}\n    server:\n      source: {{image: {{ref: \"mcpctl-test/none:1\"}}}}\n      command: [mcp-testserver]\n    health:\n      expect_tools: {{include: [{}]}}\n      smoke: {}\n    slo: {{p95_ms: 2000}}\n",
            s.name, s.port, s.transport, s.expect, s.smoke
        ));
    }
    let path = dir.join("services.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

const ECHO: &str = "[{tool: echo, args: {text: hi}, expect: {is_error: false, contains: \"hi|\"}}]";

fn soak_cmd(file: &Path, state: &Path, report: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(mcpctl());
    c.args(["-f"])
        .arg(file)
        .arg("--state-dir")
        .arg(state)
        .args(["--output", "json", "soak", "--report-dir"])
        .arg(report)
        .args([
            "--rate",
            "20",
            "--concurrency",
            "8",
            "--sessions",
            "4",
            "--sample-interval",
            "1s",
            "--coverage-interval",
            "2s",
            "--checkpoint-interval",
            "1s",
            "--call-timeout",
            "5s",
        ])
        .args(extra)
        .env_remove("MCPCTL_FILE")
        .env_remove("MCPCTL_STATE_DIR")
        .env("MCPCTL_LOG", "warn");
    c
}

/// The tails of the bridges' logs, for a failed run's message.
fn tails(bridges: &[&Bridge]) -> String {
    let t: Vec<String> = bridges.iter().map(|b| log_tail(&b.log, 40)).collect();
    t.join("\n")
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("mcpctl runs");
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn slo<'a>(report: &'a Value, name: &str, service: &str) -> &'a str {
    report["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slo"] == name && s["service"] == service)
        .unwrap_or_else(|| panic!("no {name} SLO for {service}"))["status"]
        .as_str()
        .unwrap()
}

/// A running container of the project (labels as mcpctl sets them), so memory is measured.
struct LabelledContainer(String);

impl LabelledContainer {
    fn start(project: &str) -> LabelledContainer {
        let name = format!("{project}-mem");
        must(
            Command::new("docker")
                .args(["run", "-d", "-i", "--name", &name])
                .args(["--label", "com.mcp.managed=true"])
                .args(["--label", &format!("com.mcp.project={project}")])
                .args(["--label", "com.mcp.role=test"])
                .args(["--entrypoint", "/usr/local/bin/mcp-testserver"])
                .arg(runtime_image()),
        );
        LabelledContainer(name)
    }
}

impl Drop for LabelledContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn clean_soak_passes_with_figures() {
    let dir = TestDir::new();
    let project = unique_project("soakok");
    let a = Bridge::start(dir.path(), 0, "A", &[]);
    let b = Bridge::start(dir.path(), 0, "B", &[]);
    let (pa, pb) = (a.port, b.port);
    let docker = docker_available("clean_soak_passes_with_figures");
    let _mem = docker.then(|| LabelledContainer::start(&project));
    let file = manifest(
        dir.path(),
        &project,
        &[
            Svc {
                name: "a",
                port: pa,
                transport: "sse",
                smoke: ECHO,
                expect: "echo, whoami",
            },
            Svc {
                name: "b",
                port: pb,
                transport: "http",
                smoke: ECHO,
                expect: "echo",
            },
        ],
    );
    let report_dir = dir.path().join("report");
    let state = dir.path().join("state");
    let (code, stdout, stderr) = run(&mut soak_cmd(
        &file,
        &state,
        &report_dir,
        &["--duration", "6s", "--leak-grace", "15s"],
    ));
    assert_eq!(
        code,
        0,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        tails(&[&a, &b])
    );
    let r = read_json(&report_dir.join("report.json"));
    assert_eq!(r["passed"], true);
    assert!(
        r["totals"]["calls"].as_u64().unwrap() >= 40,
        "{}",
        r["totals"]
    );
    assert_eq!(r["totals"]["errors"], 0);
    assert!(r["totals"]["p95_ms"].as_f64().unwrap() > 0.0);
    for svc in ["a", "b"] {
        let s = &r["services"][svc];
        assert!(s["calls"].as_u64().unwrap() >= 20, "{svc}: {s}");
        assert_eq!(s["availability"], 1.0);
        assert_eq!(s["error_rate"], 0.0);
        assert!(s["p50_ms"].as_f64().is_some() && s["p99_ms"].as_f64().is_some());
        assert!(
            s["held_calls"].as_u64().unwrap() > 0,
            "long-lived sessions used"
        );
        assert!(
            s["fresh_calls"].as_u64().unwrap() > 0,
            "new session per call used"
        );
        assert!(s["coverage"]["checks"].as_u64().unwrap() >= 2);
        assert_eq!(s["coverage_ratio"], 1.0);
        // The load held 2 sessions per service: the bridge saw the legacy one (the second is an
        // auto-mode client the bridge serves stateless, over /mcp even for the SSE service),
        // and after the load they went back to the baseline.
        assert!(s["sessions_peak"].as_f64().unwrap() >= 1.0, "{s}");
        assert_eq!(s["leak"]["judged"], true, "{s}");
        assert_eq!(s["leak"]["leaked"], false, "{s}");
        assert!(
            s["leak"]["legacy_sessions_opened"].as_u64().unwrap() > 0,
            "{s}"
        );
        assert_eq!(slo(&r, "p95", svc), "pass");
    }
    // Both eras on every service: legacy sessions over the service's transport (SSE for a,
    // Streamable HTTP for b) alternate with auto-mode clients on /mcp, which the bridge answers
    // in 2026-07-28.
    for name in ["a", "b"] {
        let b = &r["services"][name];
        assert_eq!(b["auto_era"], "modern", "{b}");
        for era in ["legacy", "modern"] {
            let e = &b["eras"][era];
            assert!(e["calls"].as_u64().unwrap() >= 5, "{era}: {b}");
            assert_eq!(e["errors"], 0, "{era}: {b}");
            assert!(e["p95_ms"].as_f64().unwrap() > 0.0, "{era}: {b}");
        }
    }
    assert_eq!(
        r["totals"]["era_calls"]["legacy"].as_u64().unwrap()
            + r["totals"]["era_calls"]["modern"].as_u64().unwrap(),
        r["totals"]["calls"].as_u64().unwrap(),
        "{}",
        r["totals"]
    );
    let tl = r["timeline"].as_array().unwrap();
    assert!(tl.len() >= 4, "a point per second: {}", tl.len());
    if docker {
        assert_eq!(r["memory"]["measured"], true, "{}", r["memory"]);
        assert!(r["memory"]["peak_bytes"].as_u64().unwrap() > 0);
        let mem = r["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slo"] == "memory")
            .unwrap();
        assert_eq!(mem["status"], "pass", "{mem}");
    }
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(
        md.contains("PASS") && md.contains("| availability | a |"),
        "{md}"
    );
    assert!(
        md.contains("## Eras") && md.contains("| b | modern |"),
        "{md}"
    );
    let svg = std::fs::read_to_string(report_dir.join("chart.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
    let ck = read_json(&state.join("soak/checkpoint.json"));
    assert_eq!(ck["finished"], true);
    // stdout is the same report as one JSON object.
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["totals"]["calls"], r["totals"]["calls"]);
}

#[test]
fn scheduled_failures_are_counted_exactly() {
    let dir = TestDir::new();
    let project = unique_project("soakfail");
    let a = Bridge::start(dir.path(), 0, "A", &[]);
    // b: every whoami call returns isError (its smoke step says it must not); echo works. The
    // load alternates b's two steps, so exactly the whoami calls fail. The mutating `crash` step
    // must never be called (it would kill b's server and fail the echo calls too).
    let b = Bridge::start(dir.path(), 0, "B", &["--fail-tool", "whoami"]);
    let (pa, pb) = (a.port, b.port);
    let smoke_b =
        "[{tool: echo, args: {text: hi}, expect: {is_error: false, contains: \"hi|B\"}}, \
                   {tool: whoami, expect: {is_error: false}}, {tool: crash, mutates: true}]";
    let file = manifest(
        dir.path(),
        &project,
        &[
            Svc {
                name: "a",
                port: pa,
                transport: "sse",
                smoke: ECHO,
                expect: "echo",
            },
            Svc {
                name: "b",
                port: pb,
                transport: "sse",
                smoke: smoke_b,
                expect: "echo, whoami",
            },
        ],
    );
    let report_dir = dir.path().join("report");
    let (code, stdout, stderr) = run(&mut soak_cmd(
        &file,
        &dir.path().join("state"),
        &report_dir,
        &["--duration", "5s", "--leak-grace", "15s"],
    ));
    assert_eq!(
        code,
        6,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        tails(&[&a, &b])
    );
    assert!(
        stderr.contains("SLO breach") && stderr.contains("error_rate of b"),
        "{stderr}"
    );
    let r = read_json(&report_dir.join("report.json"));
    let b = &r["services"]["b"];
    let whoami = &b["probes"]["whoami"];
    let k = whoami["calls"].as_u64().unwrap();
    let n = b["calls"].as_u64().unwrap();
    assert!(k >= 10 && n > k, "{b}");
    assert_eq!(whoami["errors"], k, "every whoami call failed: {b}");
    assert_eq!(b["probes"]["echo"]["errors"], 0, "{b}");
    assert!(
        b["probes"].get("crash").is_none(),
        "the mutating step was called: {b}"
    );
    assert_eq!(b["errors"], k, "exactly k of n: {b}");
    assert_eq!(b["error_kinds"], json!({"is_error": k}));
    assert_eq!(b["availability"], 1.0, "isError is an answer: {b}");
    let rate = b["error_rate"].as_f64().unwrap();
    assert!(
        (rate - k as f64 / n as f64).abs() < 1e-9,
        "{rate} vs {k}/{n}"
    );
    assert_eq!(r["services"]["a"]["errors"], 0);
    assert_eq!(r["totals"]["errors"], k);
    assert_eq!(slo(&r, "error_rate", "b"), "fail");
    assert_eq!(slo(&r, "error_rate", "a"), "pass");
    assert_eq!(slo(&r, "availability", "b"), "pass");
    assert_eq!(r["passed"], false);
}

#[test]
fn killed_bridge_shows_lost_availability_and_recovery() {
    let dir = TestDir::new();
    let project = unique_project("soakkill");
    let mut a = Bridge::start(dir.path(), 0, "A", &[]);
    let b = Bridge::start(dir.path(), 0, "B", &[]);
    let (pa, pb) = (a.port, b.port);
    let file = manifest(
        dir.path(),
        &project,
        &[
            Svc {
                name: "a",
                port: pa,
                transport: "sse",
                smoke: ECHO,
                expect: "echo",
            },
            Svc {
                name: "b",
                port: pb,
                transport: "http",
                smoke: ECHO,
                expect: "echo",
            },
        ],
    );
    let report_dir = dir.path().join("report");
    let state = dir.path().join("state");
    let cmd = soak_cmd(
        &file,
        &state,
        &report_dir,
        &["--duration", "14s", "--leak-grace", "15s"],
    );
    let mut soak = BackgroundSoak::spawn(cmd, dir.path());
    let ckpt = state.join("soak/checkpoint.json");
    let figure = |svc: &str, f: &dyn Fn(&Value) -> bool| -> Option<()> {
        let v: Value = serde_json::from_slice(&std::fs::read(&ckpt).ok()?).ok()?;
        f(&v["state"]["services"][svc]).then_some(())
    };
    let (soak_log, a_log) = (soak.stderr.clone(), a.log.clone());
    let logs = [soak_log.as_path(), a_log.as_path(), b.log.as_path()];
    wait_for_logged(
        "answered calls to a (checkpoint)",
        Duration::from_secs(20),
        &logs,
        || figure("a", &|s| s["answered"].as_u64().unwrap_or(0) >= 5),
    );
    a.kill();
    wait_for_logged(
        "failed calls to a recorded (checkpoint)",
        Duration::from_secs(20),
        &logs,
        || {
            figure("a", &|s| {
                s["calls"].as_u64().unwrap_or(0) - s["answered"].as_u64().unwrap_or(0) >= 3
            })
        },
    );
    // The same port again: the soak's manifest names it. (Free only since `a` died; taking it
    // back is the point, and a failure shows as the bridge's bind error in its log.)
    let a2 = Bridge::start(dir.path(), pa, "A", &[]);
    let (code, stderr) = soak.wait(Duration::from_secs(45), &[&a2.log, &b.log]);
    assert_eq!(code, 6, "stderr:\n{stderr}");
    let r = read_json(&report_dir.join("report.json"));
    let s = &r["services"]["a"];
    let avail = s["availability"].as_f64().unwrap();
    assert!(avail < 0.999 && avail > 0.0, "{s}");
    let outages = s["outages"].as_array().unwrap();
    assert!(!outages.is_empty(), "{s}");
    let o = &outages[0];
    assert!(o["failed_calls"].as_u64().unwrap() >= 3, "{o}");
    let recovery = o["recovery_s"].as_f64().expect("a recovered");
    assert!(recovery > 0.0 && recovery < 30.0, "{o}");
    assert!(s["error_kinds"]["connect"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(slo(&r, "availability", "a"), "fail");
    assert_eq!(slo(&r, "availability", "b"), "pass");
    assert!(
        s["reconnects"].as_u64().unwrap() > 0,
        "held sessions re-established: {s}"
    );
}

#[test]
fn leaking_server_is_flagged_and_a_clean_one_is_not() {
    let dir = TestDir::new();
    let project = unique_project("soakleak");
    let leaky = LeakyServer::start();
    let clean = Bridge::start(dir.path(), 0, "C", &[]);
    let pc = clean.port;
    let file = manifest(
        dir.path(),
        &project,
        &[
            Svc {
                name: "leaky",
                port: leaky.port,
                transport: "http",
                smoke: ECHO,
                expect: "echo",
            },
            Svc {
                name: "clean",
                port: pc,
                transport: "http",
                smoke: ECHO,
                expect: "echo",
            },
        ],
    );
    let report_dir = dir.path().join("report");
    let (code, stdout, stderr) = run(&mut soak_cmd(
        &file,
        &dir.path().join("state"),
        &report_dir,
        &["--duration", "4s", "--leak-grace", "3s"],
    ));
    assert_eq!(
        code,
        6,
        "stdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        tails(&[&clean])
    );
    let r = read_json(&report_dir.join("report.json"));
    let l = &r["services"]["leaky"];
    assert_eq!(l["errors"], 0, "the fake answers correctly: {l}");
    assert_eq!(l["leak"]["judged"], true, "{l}");
    assert_eq!(l["leak"]["leaked"], true, "{l}");
    assert!(l["leak"]["sessions_after"].as_f64().unwrap() > 0.0);
    let c = &r["services"]["clean"];
    assert_eq!(c["leak"]["judged"], true, "{c}");
    assert_eq!(c["leak"]["leaked"], false, "{c}");
    assert_eq!(slo(&r, "leaks", "leaky"), "fail");
    assert_eq!(slo(&r, "leaks", "clean"), "pass");
    assert!(stderr.contains("leaks of leaky"), "{stderr}");
    assert!(!stderr.contains("leaks of clean"), "{stderr}");
}

#[test]
fn ctrl_c_writes_a_report_and_resume_finishes_the_run() {
    let dir = TestDir::new();
    let project = unique_project("soakint");
    let a = Bridge::start(dir.path(), 0, "A", &[]);
    let pa = a.port;
    let file = manifest(
        dir.path(),
        &project,
        &[Svc {
            name: "a",
            port: pa,
            transport: "sse",
            smoke: ECHO,
            expect: "echo",
        }],
    );
    let state = dir.path().join("state");
    let report_dir = dir.path().join("report");
    let cmd = soak_cmd(
        &file,
        &state,
        &report_dir,
        &["--duration", "8s", "--leak-grace", "15s"],
    );
    let mut soak = BackgroundSoak::spawn(cmd, dir.path());
    let ckpt = state.join("soak/checkpoint.json");
    wait_for_logged(
        "a checkpoint with answered calls",
        Duration::from_secs(20),
        &[&soak.stderr, &a.log],
        || {
            let v: Value = serde_json::from_slice(&std::fs::read(&ckpt).ok()?).ok()?;
            (v["state"]["services"]["a"]["answered"].as_u64()? >= 5).then_some(())
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(soak.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, stderr) = soak.wait(Duration::from_secs(30), &[&a.log]);
    assert_eq!(code, 130, "{stderr}");
    let r = read_json(&report_dir.join("report.json"));
    assert_eq!(r["interrupted"], true);
    let first_calls = r["totals"]["calls"].as_u64().unwrap();
    assert!(first_calls >= 5);
    let first_elapsed = r["elapsed_s"].as_f64().unwrap();
    assert!(first_elapsed < 8.0, "{first_elapsed}");
    let ck = read_json(&ckpt);
    assert_eq!(ck["finished"], false);

    let (code, stdout, stderr) = run(&mut soak_cmd(&file, &state, &report_dir, &["--resume"]));
    // --resume takes the run's settings (and the remaining time) from the checkpoint; the
    // tuning flags the helper passes are ignored.
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let r = read_json(&report_dir.join("report.json"));
    assert_eq!(r["interrupted"], false);
    assert_eq!(r["segments"].as_array().unwrap().len(), 2);
    assert!(
        r["elapsed_s"].as_f64().unwrap() >= 7.5,
        "{}",
        r["elapsed_s"]
    );
    assert!(r["totals"]["calls"].as_u64().unwrap() > first_calls);
    let (code, _, stderr) = run(&mut soak_cmd(&file, &state, &report_dir, &["--resume"]));
    assert_eq!(code, 2, "a finished run cannot be resumed: {stderr}");
}

/// A service container of the project as a deploy leaves it (contract labels, restart policy,
/// port on 127.0.0.1): the bridge (mcpctl, mounted read-only) serving mcp-testserver.
struct ServiceContainer(String);

impl ServiceContainer {
    fn start(project: &str, service: &str, port: u16) -> ServiceContainer {
        let name = format!("{project}-{service}-r1");
        // The guard first: a container that never gets ready is removed too.
        let c = ServiceContainer(name.clone());
        must(
            Command::new("docker")
                .args(["run", "-d", "--name", &name, "--restart", "unless-stopped"])
                .args(["-p", &format!("127.0.0.1:{port}:8080")])
                .args(["--label", "com.mcp.managed=true"])
                .args(["--label", &format!("com.mcp.project={project}")])
                .args(["--label", &format!("com.mcp.service={service}")])
                .args(["--label", "com.mcp.role=service"])
                .arg("-v")
                .arg(format!("{}:/mcpctl:ro", mcpctl().display()))
                .args(["--entrypoint", "/mcpctl"])
                .arg(runtime_image())
                .args(["bridge", "--listen", "0.0.0.0:8080", "--"])
                .args(["/usr/local/bin/mcp-testserver", "--nonce", "D"]),
        );
        wait_for_explained(
            &format!("{name} ready on 127.0.0.1:{port}"),
            Duration::from_secs(30),
            || http_get(port, "/readyz").filter(|(code, _)| *code == 200),
            || container_report(&[&name]),
        );
        c
    }
}

impl Drop for ServiceContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn chaos_stops_and_restarts_the_projects_container_and_reports_recovery() {
    if !docker_available("chaos_stops_and_restarts_the_projects_container_and_reports_recovery") {
        return;
    }
    let dir = TestDir::new();
    let project = unique_project("soakchaos");
    let port = free_port();
    let c = ServiceContainer::start(&project, "a", port);
    let file = manifest(
        dir.path(),
        &project,
        &[Svc {
            name: "a",
            port,
            transport: "sse",
            smoke: ECHO,
            expect: "echo",
        }],
    );
    let report_dir = dir.path().join("report");
    let (code, stdout, stderr) = run(&mut soak_cmd(
        &file,
        &dir.path().join("state"),
        &report_dir,
        &[
            "--duration",
            "12s",
            "--chaos",
            "--chaos-min",
            "3s",
            "--chaos-max",
            "4s",
            "--leak-grace",
            "15s",
        ],
    ));
    // Availability may or may not dip below 99.9 % (it depends on which calls met the stop);
    // either way the run ends with a verdict, not an error.
    assert!(
        code == 0 || code == 6,
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let r = read_json(&report_dir.join("report.json"));
    let events = r["chaos"].as_array().unwrap();
    // Pauses of 3–4 s and none in the last 3 s: one to three actions.
    assert!(!events.is_empty() && events.len() <= 3, "{events:?}");
    for e in events {
        assert_eq!(
            e["container"],
            c.0.as_str(),
            "only the project's container: {e}"
        );
        assert_eq!(e["ok"], true, "{e}");
        match e["recovery_s"].as_f64() {
            Some(rec) => assert!((0.0..15.0).contains(&rec), "{e}"),
            // On a loaded machine the last action's container may still be starting when the
            // run ends; any earlier one must have recovered.
            None => assert!(
                e["t_s"].as_f64().unwrap() > r["elapsed_s"].as_f64().unwrap() - 6.0,
                "not recovered long before the end: {e}"
            ),
        }
    }
    assert!(
        events[0]["recovery_s"].as_f64().is_some() || events.len() == 1,
        "{events:?}"
    );
    assert_eq!(r["memory"]["measured"], true, "{}", r["memory"]);
    let s = &r["services"]["a"];
    assert!(s["answered"].as_u64().unwrap() > 0);
    // Every unanswered call is inside an outage, and every outage but possibly none recovered.
    let failed: u64 = s["outages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["failed_calls"].as_u64().unwrap())
        .sum();
    assert_eq!(
        failed,
        s["calls"].as_u64().unwrap() - s["answered"].as_u64().unwrap(),
        "{s}"
    );
    let running = must(Command::new("docker").args(["inspect", "-f", "{{.State.Running}}", &c.0]));
    assert_eq!(running.trim(), "true", "chaos leaves the container running");
}
