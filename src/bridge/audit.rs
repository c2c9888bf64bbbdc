//! The audit trail: one JSON line per `tools/call` the bridge handles, written to the bridge's
//! **stdout**. Docker keeps it in the container log, the rendered Promtail/Alloy configs ship it,
//! and `mcpctl audit` reads it back (`crate::audit`).
//!
//! stdout carries nothing else in bridge mode: tracing writes to stderr (`output::init_tracing`),
//! errors are printed to stderr (`output::print_error`), and the child's stdout and stderr are
//! pipes the bridge reads (`child::spawn`; its stderr is re-logged through tracing, so to stderr
//! too). A line on the container's stdout is therefore the bridge's own audit record; a child
//! cannot forge one.
//!
//! The line (docs/contracts.md "Access control"; field names and order are a contract):
//!
//! ```text
//! {"audit":"tools/call","ts":"2026-12-03T13:00:00.123Z","service":"fetch","consumer":"litellm",
//!  "tool":"fetch","outcome":"ok","duration_ms":12.345,"request_id":"9f2c…","rpc_id":"7"}
//! ```
//!
//! (one line). `ts` is when the call ended (UTC, milliseconds; it began `duration_ms` earlier).
//! `outcome` is `ok`, `tool_error` (`result.isError`), `error` (a JSON-RPC error:
//! then `error_code` and `error`, the message cut to [`MAX_ERROR_CHARS`] characters) or
//! `cancelled` (no answer). `rpc_id` is the client's id as a string, cut to [`MAX_RPC_ID_CHARS`];
//! `tool` and `consumer` are cut to [`MAX_NAME_CHARS`]. `arguments` is present only when the
//! bridge was told to record them; above [`MAX_ARGUMENTS_BYTES`] it is replaced by
//! `{"truncated": true, "bytes": N}`. The API takes no session id, token or header, so none can
//! be written.
//!
//! Owns: formatting and the writer thread. Must not: block or do I/O on the request path.
//! [`Auditor::tool_call`] formats the line and offers it to a bounded queue; one dedicated thread
//! writes the queue to stdout, flushing whenever it is empty. When the queue is full (stdout
//! blocked, e.g. a stalled log driver) the line is dropped and counted
//! (`mcp_bridge_audit_dropped_total`, [`Auditor::dropped`]); so is every line a failed write lost.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use super::stats::Stats;

/// Lines the queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 4096;
/// Largest `arguments` serialization recorded as is.
pub const MAX_ARGUMENTS_BYTES: usize = 4096;
/// `error` (a JSON-RPC error message) is cut to this many characters.
pub const MAX_ERROR_CHARS: usize = 200;
/// `rpc_id` is cut to this many characters.
pub const MAX_RPC_ID_CHARS: usize = 64;
/// `tool` and `consumer` are cut to this many characters (a client chooses the tool name).
pub const MAX_NAME_CHARS: usize = 128;
/// The `consumer` of a call made without authentication.
pub const ANONYMOUS: &str = "anonymous";
/// Lines written before a flush even while the queue is not empty (bounds the delay under load).
const BATCH_LINES: u64 = 256;

/// How a `tools/call` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome<'a> {
    /// A result without `isError`.
    Ok,
    /// A result with `isError: true` (the tool ran and reported a failure).
    ToolError,
    /// A JSON-RPC error (from the child, or made by the bridge).
    Error { code: i64, message: &'a str },
    /// No answer: the client went away or cancelled.
    Cancelled,
}

impl AuditOutcome<'_> {
    /// The line's `outcome` value.
    pub fn label(&self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::ToolError => "tool_error",
            AuditOutcome::Error { .. } => "error",
            AuditOutcome::Cancelled => "cancelled",
        }
    }
}

/// Writes the audit trail of one bridge. Cheap to call from any task; see the module doc.
pub struct Auditor {
    service: String,
    arguments: bool,
    tx: SyncSender<String>,
    /// `audit_dropped` counts lines lost (queue full, writer gone, write failed).
    stats: Arc<Stats>,
    /// Lines queued and not yet written and flushed.
    pending: Arc<AtomicU64>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("service", &self.service)
            .field("arguments", &self.arguments)
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Auditor {
    /// An auditor writing to stdout. `service` is the line's `service`; `arguments`: record each
    /// call's `params.arguments`. Dropped lines are counted in `stats.audit_dropped`.
    pub fn new(service: String, arguments: bool, stats: Arc<Stats>) -> Arc<Auditor> {
        Self::with_writer(
            service,
            arguments,
            stats,
            QUEUE_LINES,
            Box::new(std::io::stdout()),
        )
    }

    /// An auditor writing to `out` through a queue of `capacity` lines (tests; [`Auditor::new`]
    /// is stdout and [`QUEUE_LINES`]).
    pub fn with_writer(
        service: String,
        arguments: bool,
        stats: Arc<Stats>,
        capacity: usize,
        out: Box<dyn Write + Send>,
    ) -> Arc<Auditor> {
        let (tx, rx) = sync_channel(capacity.max(1));
        let pending = Arc::new(AtomicU64::new(0));
        let (st, p) = (stats.clone(), pending.clone());
        let spawned = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(rx, out, &st, &p));
        if let Err(e) = spawned {
            // The receiver is gone with the closure: every line is then counted as dropped.
            tracing::error!("cannot start the audit writer thread: {e}; audit lines are dropped");
        }
        Arc::new(Auditor {
            service,
            arguments,
            tx,
            stats,
            pending,
        })
    }

    /// Whether lines carry the call's `arguments`.
    pub fn arguments(&self) -> bool {
        self.arguments
    }

    /// Record one `tools/call`. Never blocks: the line is queued, or dropped and counted.
    /// `rpc_id` is the client's JSON-RPC id; `arguments` the call's `params.arguments` (ignored
    /// unless [`Auditor::arguments`]; `None` is then written as `null`).
    pub fn tool_call(
        &self,
        consumer: &str,
        tool: &str,
        rpc_id: &Value,
        arguments: Option<&Value>,
        outcome: AuditOutcome<'_>,
        took: Duration,
    ) {
        let line = self.line(
            SystemTime::now(),
            &request_id(),
            consumer,
            tool,
            rpc_id,
            arguments,
            outcome,
            took,
        );
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.stats.audit_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines lost so far: queue full, writer gone, or a failed write.
    pub fn dropped(&self) -> u64 {
        self.stats.audit_dropped.load(Ordering::Relaxed)
    }

    /// Lines queued and not written yet (at shutdown: wait, with a deadline, until 0).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// The line, newline included.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn line(
        &self,
        ts: SystemTime,
        request_id: &str,
        consumer: &str,
        tool: &str,
        rpc_id: &Value,
        arguments: Option<&Value>,
        outcome: AuditOutcome<'_>,
        took: Duration,
    ) -> String {
        let (error_code, error) = match outcome {
            AuditOutcome::Error { code, message } => {
                (Some(code), Some(clip(message, MAX_ERROR_CHARS)))
            }
            _ => (None, None),
        };
        let head = Line {
            audit: "tools/call",
            ts: humantime::format_rfc3339_millis(ts).to_string(),
            service: &self.service,
            consumer: clip(consumer, MAX_NAME_CHARS),
            tool: clip(tool, MAX_NAME_CHARS),
            outcome: outcome.label(),
            duration_ms: took.as_micros() as f64 / 1000.0,
            request_id,
            rpc_id: rpc_id_text(rpc_id),
            error_code,
            error,
        };
        // Serializing plain strings and numbers cannot fail.
        let mut line = serde_json::to_string(&head).unwrap_or_default();
        if self.arguments {
            line.pop(); // the closing brace
            line.push_str(",\"arguments\":");
            line.push_str(&arguments_json(arguments));
            line.push('}');
        }
        line.push('\n');
        line
    }
}

/// The fixed part of a line, in contract order.
#[derive(Serialize)]
struct Line<'a> {
    audit: &'static str,
    ts: String,
    service: &'a str,
    consumer: &'a str,
    tool: &'a str,
    outcome: &'static str,
    duration_ms: f64,
    request_id: &'a str,
    rpc_id: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// 16 random hex characters.
fn request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// At most `max` characters of `s`.
fn clip(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A string id as is, a number as written, anything else (null; invalid ids) as compact JSON;
/// cut to [`MAX_RPC_ID_CHARS`].
fn rpc_id_text(id: &Value) -> Cow<'_, str> {
    match id {
        Value::String(s) => Cow::Borrowed(clip(s, MAX_RPC_ID_CHARS)),
        other => {
            let s = other.to_string();
            Cow::Owned(clip(&s, MAX_RPC_ID_CHARS).to_string())
        }
    }
}

/// The `arguments` value: the JSON itself up to [`MAX_ARGUMENTS_BYTES`], else the marker.
fn arguments_json(arguments: Option<&Value>) -> String {
    let Some(v) = arguments else {
        return "null".into();
    };
    let mut w = Capped {
        buf: Vec::new(),
        bytes: 0,
    };
    if serde_json::to_writer(&mut w, v).is_err() || w.bytes > MAX_ARGUMENTS_BYTES {
        return format!("{{\"truncated\":true,\"bytes\":{}}}", w.bytes);
    }
    String::from_utf8(w.buf).unwrap_or_else(|_| "null".into())
}

/// Counts everything written, keeps only the first [`MAX_ARGUMENTS_BYTES`]: one pass, no
/// allocation beyond the cap, whatever the size of the arguments.
struct Capped {
    buf: Vec<u8>,
    bytes: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.bytes += b.len();
        if self.bytes <= MAX_ARGUMENTS_BYTES {
            self.buf.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writer thread: write what is queued, flush when the queue is empty (or every
/// [`BATCH_LINES`]); ends when the auditor is dropped.
fn write_loop(
    rx: Receiver<String>,
    out: Box<dyn Write + Send>,
    stats: &Stats,
    pending: &AtomicU64,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut n = 1u64;
        let mut ok = out.write_all(first.as_bytes()).is_ok();
        while n < BATCH_LINES {
            let Ok(line) = rx.try_recv() else { break };
            ok &= out.write_all(line.as_bytes()).is_ok();
            n += 1;
        }
        ok &= out.flush().is_ok();
        if !ok {
            // Some of the batch is lost (stdout closed or failing): count the batch.
            stats.audit_dropped.fetch_add(n, Ordering::Relaxed);
        }
        // Release: whoever sees the count fall also sees the `dropped` update above.
        pending.fetch_sub(n, Ordering::Release);
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Instant;

    use serde_json::json;

    fn auditor(arguments: bool) -> Arc<Auditor> {
        Auditor::with_writer(
            "fetch".into(),
            arguments,
            Arc::new(Stats::default()),
            8,
            Box::new(std::io::sink()),
        )
    }

    fn at() -> SystemTime {
        humantime::parse_rfc3339("2026-12-03T13:00:00.123Z").unwrap()
    }

    fn line(a: &Auditor, rpc_id: Value, args: Option<&Value>, o: AuditOutcome<'_>) -> String {
        a.line(
            at(),
            "0123456789abcdef",
            "litellm",
            "fetch",
            &rpc_id,
            args,
            o,
            Duration::from_micros(12_345),
        )
    }

    fn keys(line: &str) -> Vec<String> {
        let v: Value = serde_json::from_str(line).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    }

    const BASE: [&str; 9] = [
        "audit",
        "ts",
        "service",
        "consumer",
        "tool",
        "outcome",
        "duration_ms",
        "request_id",
        "rpc_id",
    ];

    #[test]
    fn an_ok_line_is_exactly_the_contract() {
        let l = line(&auditor(false), json!(7), None, AuditOutcome::Ok);
        assert_eq!(
            l,
            "{\"audit\":\"tools/call\",\"ts\":\"2026-12-03T13:00:00.123Z\",\"service\":\"fetch\",\
             \"consumer\":\"litellm\",\"tool\":\"fetch\",\"outcome\":\"ok\",\"duration_ms\":12.345,\
             \"request_id\":\"0123456789abcdef\",\"rpc_id\":\"7\"}\n"
        );
        assert_eq!(l.matches('\n').count(), 1);
    }

    #[test]
    fn each_outcome_has_its_field_set() {
        let a = auditor(false);
        for (o, label) in [
            (AuditOutcome::Ok, "ok"),
            (AuditOutcome::ToolError, "tool_error"),
            (AuditOutcome::Cancelled, "cancelled"),
        ] {
            let l = line(&a, json!(1), None, o);
            assert_eq!(keys(&l), BASE, "{l}");
            let v: Value = serde_json::from_str(&l).unwrap();
            assert_eq!(v["outcome"], label);
        }
        let long = "é".repeat(300);
        let l = line(
            &a,
            json!(1),
            None,
            AuditOutcome::Error {
                code: -32602,
                message: &long,
            },
        );
        let mut expected: Vec<&str> = BASE.to_vec();
        expected.extend(["error_code", "error"]);
        assert_eq!(keys(&l), expected, "{l}");
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["outcome"], "error");
        assert_eq!(v["error_code"], -32602);
        assert_eq!(
            v["error"].as_str().unwrap().chars().count(),
            MAX_ERROR_CHARS
        );
    }

    #[test]
    fn arguments_are_recorded_only_when_asked_and_capped() {
        let args = json!({"url": "https://example.org", "n": 1});
        let without = line(&auditor(false), json!(1), Some(&args), AuditOutcome::Ok);
        assert!(!keys(&without).contains(&"arguments".to_string()));

        let a = auditor(true);
        let l = line(&a, json!(1), Some(&args), AuditOutcome::Ok);
        let mut expected: Vec<&str> = BASE.to_vec();
        expected.push("arguments");
        assert_eq!(keys(&l), expected);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["arguments"], args);

        let none = line(&a, json!(1), None, AuditOutcome::Ok);
        assert_eq!(
            serde_json::from_str::<Value>(&none).unwrap()["arguments"],
            Value::Null
        );

        // Exactly at the cap: kept; one byte more: replaced by the marker with the size.
        let fit = json!("x".repeat(MAX_ARGUMENTS_BYTES - 2));
        let v: Value =
            serde_json::from_str(&line(&a, json!(1), Some(&fit), AuditOutcome::Ok)).unwrap();
        assert_eq!(v["arguments"], fit);
        let big = json!({"text": "y".repeat(10_000)});
        let n = serde_json::to_string(&big).unwrap().len();
        let l = line(&a, json!(1), Some(&big), AuditOutcome::Ok);
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["arguments"], json!({"truncated": true, "bytes": n}));
        assert!(l.len() < 1024, "{}", l.len());
    }

    #[test]
    fn rpc_ids_are_strings_cut_to_64_characters() {
        let a = auditor(false);
        let id = |v: Value| -> Value {
            serde_json::from_str::<Value>(&line(&a, v, None, AuditOutcome::Ok)).unwrap()["rpc_id"]
                .clone()
        };
        assert_eq!(id(json!(7)), "7");
        assert_eq!(id(json!(-3.5)), "-3.5");
        assert_eq!(id(json!("abc-1")), "abc-1");
        assert_eq!(id(Value::Null), "null");
        let long = "ü".repeat(100);
        assert_eq!(id(json!(long)), "ü".repeat(MAX_RPC_ID_CHARS));
        // A quote or newline in an id is escaped: the record stays one line.
        let l = line(&a, json!("a\"b\nc"), None, AuditOutcome::Ok);
        assert_eq!(l.matches('\n').count(), 1);
    }

    #[test]
    fn names_are_cut_and_request_ids_are_16_hex() {
        let a = auditor(false);
        let tool = "t".repeat(1000);
        let l = a.line(
            at(),
            &request_id(),
            "c",
            &tool,
            &json!(1),
            None,
            AuditOutcome::Ok,
            Duration::ZERO,
        );
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["tool"].as_str().unwrap().len(), MAX_NAME_CHARS);
        let rid = v["request_id"].as_str().unwrap();
        assert!(
            rid.len() == 16 && rid.chars().all(|c| c.is_ascii_hexdigit()),
            "{rid}"
        );
        assert_ne!(request_id(), request_id());
    }

    /// A writer whose first write blocks until released, announcing that it blocks.
    struct Stuck {
        entered: Option<mpsc::Sender<()>>,
        release: mpsc::Receiver<()>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Some(tx) = self.entered.take() {
                let _ = tx.send(());
                let _ = self.release.recv();
            }
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (entered_tx, entered) = mpsc::channel();
        let (release_tx, release) = mpsc::channel();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        const CAP: usize = 16;
        let a = Auditor::with_writer(
            "fetch".into(),
            false,
            stats.clone(),
            CAP,
            Box::new(Stuck {
                entered: Some(entered_tx),
                release,
                got: got.clone(),
            }),
        );
        let call = |a: &Auditor| {
            a.tool_call(
                "anonymous",
                "fetch",
                &json!(1),
                None,
                AuditOutcome::Ok,
                Duration::from_millis(1),
            )
        };
        call(&a);
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer took the first line");
        // The writer is stuck: CAP lines fill the queue, the next 5 are dropped, and none of
        // these calls waits (the whole batch runs on another thread, with a deadline).
        let (done_tx, done) = mpsc::channel();
        let a2 = a.clone();
        std::thread::spawn(move || {
            for _ in 0..CAP + 5 {
                call(&a2);
            }
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(10))
            .expect("tool_call blocked on a full queue");
        assert_eq!(a.dropped(), 5);
        assert_eq!(stats.audit_dropped.load(Ordering::Relaxed), 5);
        assert_eq!(a.pending(), 1 + CAP as u64);

        release_tx.send(()).unwrap();
        wait_until("the queue drained", || a.pending() == 0);
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1 + CAP, "{text}");
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["audit"], "tools/call");
        }
        assert_eq!(a.dropped(), 5);
    }

    /// A writer that always fails (stdout closed).
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn lines_a_failed_write_lost_are_counted_as_dropped() {
        let a = Auditor::with_writer(
            "fetch".into(),
            false,
            Arc::new(Stats::default()),
            8,
            Box::new(Broken),
        );
        a.tool_call(
            "anonymous",
            "fetch",
            &json!(1),
            None,
            AuditOutcome::Cancelled,
            Duration::ZERO,
        );
        wait_until("the write failed", || a.pending() == 0);
        assert!(a.dropped() >= 1);
    }
}
