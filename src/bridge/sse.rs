//! Server-Sent Events framing and the streaming body every SSE response of the bridge uses.
//!
//! One writer task per stream owns the source of events, sends keepalive comments on a fixed
//! interval (so idle-killing proxies keep the connection), and notices the client going away
//! (the body is dropped) — dropping whatever it owns, which is how an abandoned call gets cancelled.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;

/// One SSE event. `data` is split on newlines so every line gets its own `data:` field.
pub fn event(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

pub fn message(msg: &serde_json::Value) -> Bytes {
    event(Some("message"), &msg.to_string())
}

pub const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// The sending half given to a producer; the body ends when it is dropped or `shutdown` fires.
pub type Frames = mpsc::Sender<Bytes>;

/// Build an SSE response whose body is fed by the returned sender, with keepalive comments.
/// `extra_headers` carries e.g. `Mcp-Session-Id`.
pub fn response(
    keepalive: Duration,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    extra_headers: &[(&'static str, String)],
) -> (Frames, Response<Body>) {
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(64);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                f = frames_rx.recv() => match f { Some(f) => f, None => break },
                _ = tick.tick() => {
                    stats.keepalive_sent.fetch_add(1, Ordering::Relaxed);
                    Bytes::from_static(KEEPALIVE)
                }
                _ = body_tx.closed() => break,
                _ = shutdown.cancelled() => break,
            };
            if body_tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        // Dropping frames_rx here tells the producer the client is gone.
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in extra_headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    (frames_tx, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events() {
        assert_eq!(
            event(Some("endpoint"), "/messages?session_id=x"),
            Bytes::from("event: endpoint\ndata: /messages?session_id=x\n\n")
        );
        assert_eq!(
            event(None, "a\nb\r\nc"),
            Bytes::from("data: a\ndata: b\ndata: c\n\n")
        );
        let m = message(&serde_json::json!({"id": 1}));
        assert_eq!(m, Bytes::from("event: message\ndata: {\"id\":1}\n\n"));
    }
}
