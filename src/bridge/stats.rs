//! The bridge's metrics: counters kept on the hot path and their Prometheus text exposition.
//!
//! Names, types, labels, buckets and enumerations are docs/contracts.md "Metrics (bridge)" exactly.
//! Plain atomics for the fixed series; one small mutex-guarded map for the per-(method, tool)
//! request series. Label values are bounded: `method` by the MCP method names below (others become
//! `other`), `tool` by the child's own tools/list (others become `other`; empty for non-tool
//! methods), so no client can create series at will. Rendered by hand: the exposition format is a
//! few lines of text and a metrics crate would cost more build time and RSS than it saves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Sse,
    StreamableHttp,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::StreamableHttp];
    pub fn label(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::StreamableHttp => "streamable_http",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    ClientClosed,
    Deleted,
    IdleExpired,
    ChildExited,
    Drained,
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 6] = [
        CloseReason::ClientClosed,
        CloseReason::Deleted,
        CloseReason::IdleExpired,
        CloseReason::ChildExited,
        CloseReason::Drained,
        CloseReason::Shutdown,
    ];
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Deleted => "deleted",
            CloseReason::IdleExpired => "idle_expired",
            CloseReason::ChildExited => "child_exited",
            CloseReason::Drained => "drained",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// `error_type` of `mcp_bridge_request_errors_total` (docs/contracts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The child (or the bridge on its behalf) answered with a JSON-RPC error.
    Jsonrpc,
    /// The child was not ready within the wait (still starting).
    Timeout,
    /// The child exited (or is down) while the request waited.
    ChildExited,
    /// The client went away (or cancelled) before the response.
    Cancelled,
    RateLimited,
    TooLarge,
    /// Missing/wrong bearer token, or a foreign Origin/Host.
    Unauthorized,
    /// Not JSON, not JSON-RPC, or arguments that fail the tool's inputSchema.
    BadRequest,
    /// Refused for capacity: the in-flight byte budget or the session cap (503 + Retry-After).
    Overloaded,
}

impl ErrorType {
    pub const ALL: [ErrorType; 9] = [
        ErrorType::Jsonrpc,
        ErrorType::Timeout,
        ErrorType::ChildExited,
        ErrorType::Cancelled,
        ErrorType::RateLimited,
        ErrorType::TooLarge,
        ErrorType::Unauthorized,
        ErrorType::BadRequest,
        ErrorType::Overloaded,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ErrorType::Jsonrpc => "jsonrpc",
            ErrorType::Timeout => "timeout",
            ErrorType::ChildExited => "child_exited",
            ErrorType::Cancelled => "cancelled",
            ErrorType::RateLimited => "rate_limited",
            ErrorType::TooLarge => "too_large",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::BadRequest => "bad_request",
            ErrorType::Overloaded => "overloaded",
        }
    }
}

/// Why the shared child was restarted (`mcp_bridge_child_restarts_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// It exited (or closed stdout) after a successful handshake.
    Exited,
    /// The command could not be started.
    StartFailed,
    /// It started but failed or timed out its initialize handshake.
    HandshakeFailed,
    /// It stopped answering: requests waited past `--hung-after` with no output and a ping
    /// went unanswered, so the bridge killed it.
    Hung,
}

impl RestartReason {
    pub const ALL: [RestartReason; 4] = [
        RestartReason::Exited,
        RestartReason::StartFailed,
        RestartReason::HandshakeFailed,
        RestartReason::Hung,
    ];
    pub fn label(self) -> &'static str {
        match self {
            RestartReason::Exited => "exited",
            RestartReason::StartFailed => "start_failed",
            RestartReason::HandshakeFailed => "handshake_failed",
            RestartReason::Hung => "hung",
        }
    }
}

/// docs/contracts.md buckets for `mcp_bridge_request_duration_seconds`.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// MCP request methods kept as label values; anything else is `other`.
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// The most distinct tool names kept as label values (a child advertising more gets `other`).
const MAX_TOOLS: usize = 512;

pub const OTHER: &str = "other";

pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(OTHER)
}

#[derive(Default, Clone)]
struct Series {
    count: u64,
    errors: [u64; ErrorType::ALL.len()],
    buckets: [u64; 13],
    sum: f64,
}

#[derive(Default)]
struct Requests {
    series: BTreeMap<(&'static str, String), Series>,
    /// Tool names the child advertised (the only `tool` label values besides `other`).
    tools: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub sessions_opened: [AtomicU64; 2],
    pub sessions_active: [AtomicI64; 2],
    pub sessions_closed: [[AtomicU64; 6]; 2],
    /// Age of the oldest open session, refreshed by the idle reaper.
    pub session_oldest_ms: AtomicU64,
    pub requests_in_flight: AtomicI64,
    pub child_spawns: AtomicU64,
    pub child_restarts: [AtomicU64; RestartReason::ALL.len()],
    /// New sessions refused at the session cap.
    pub sessions_refused: AtomicU64,
    /// Bytes held by requests in flight (set from the admission budget before each render).
    pub inflight_bytes: AtomicI64,
    /// The admission budget's size in bytes.
    pub inflight_budget: AtomicI64,
    /// Sessions closed because their client did not read its event stream.
    pub slow_consumers: AtomicU64,
    pub child_up: AtomicI64,
    /// Child processes alive right now (shared: 0 or 1; per-session: one per session, plus probes).
    pub child_processes: AtomicI64,
    pub tools_advertised: AtomicI64,
    pub keepalive_sent: AtomicU64,
    pub stderr_lines_dropped: AtomicU64,
    pub stdout_lines_skipped: AtomicU64,
    requests: Mutex<RequestsCell>,
}

/// Wrapper so `Stats` can keep deriving Debug without printing the table.
#[derive(Default)]
struct RequestsCell(Requests);
impl std::fmt::Debug for RequestsCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Requests{..}")
    }
}

impl Stats {
    pub fn session_opened(&self, t: Transport) {
        self.sessions_opened[t.idx()].fetch_add(1, Ordering::Relaxed);
        self.sessions_active[t.idx()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn session_closed(&self, t: Transport, r: CloseReason) {
        self.sessions_active[t.idx()].fetch_sub(1, Ordering::Relaxed);
        self.sessions_closed[t.idx()][r as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn child_restarted(&self, r: RestartReason) {
        self.child_restarts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, RequestsCell> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The child's tools/list: its names become `tool` label values (series pre-initialised to 0
    /// for tools/call, every error type included) and the advertised-tools gauge is set.
    pub fn set_tools<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut n = 0;
        let mut g = self.requests();
        let r = &mut g.0;
        // Calls of tools not listed, and requests refused before their method was known.
        r.series
            .entry(("tools/call", OTHER.to_string()))
            .or_default();
        r.series.entry((OTHER, String::new())).or_default();
        for name in names {
            n += 1;
            if r.tools.len() < MAX_TOOLS || r.tools.contains(name) {
                r.tools.insert(name.to_string());
                r.series
                    .entry(("tools/call", name.to_string()))
                    .or_default();
            }
        }
        self.tools_advertised.store(n, Ordering::Relaxed);
    }

    /// The `tool` label value for a tools/call of `name`.
    pub fn tool_label(&self, name: &str) -> String {
        if self.requests().0.tools.contains(name) {
            name.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// One finished request (JSON-RPC request, or an HTTP request refused before its method was
    /// known: method `other`). `error` is its outcome when it failed.
    pub fn record(
        &self,
        method: &'static str,
        tool: &str,
        took: Duration,
        error: Option<ErrorType>,
    ) {
        let secs = took.as_secs_f64();
        let mut g = self.requests();
        let s = g.0.series.entry((method, tool.to_string())).or_default();
        s.count += 1;
        s.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
        if let Some(e) = error {
            s.errors[e as usize] += 1;
        }
    }

    /// Prometheus text exposition (format 0.0.4) of every metric in docs/contracts.md.
    pub fn render(&self, ready: bool) -> String {
        let mut s = String::with_capacity(8 * 1024);
        let g = |v: &AtomicI64| v.load(Ordering::Relaxed);
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let head = |s: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        head(
            &mut s,
            "mcp_bridge_sessions_active",
            "gauge",
            "Open MCP sessions.",
        );
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "mcp_bridge_sessions_active{{transport=\"{}\"}} {}",
                t.label(),
                g(&self.sessions_active[t.idx()])
            );
        }
        head(
            &mut s,
            "mcp_bridge_sessions_opened_total",
            "counter",
            "MCP sessions opened.",
        );
        for t in Transport::ALL {
            let _ = writeln!(
                s,
                "mcp_bridge_sessions_opened_total{{transport=\"{}\"}} {}",
                t.label(),
                c(&self.sessions_opened[t.idx()])
            );
        }
        head(
            &mut s,
            "mcp_bridge_sessions_closed_total",
            "counter",
            "MCP sessions closed, by reason.",
        );
        for t in Transport::ALL {
            for r in CloseReason::ALL {
                let _ = writeln!(
                    s,
                    "mcp_bridge_sessions_closed_total{{transport=\"{}\",reason=\"{}\"}} {}",
                    t.label(),
                    r.label(),
                    c(&self.sessions_closed[t.idx()][r as usize])
                );
            }
        }
        head(
            &mut s,
            "mcp_bridge_session_oldest_seconds",
            "gauge",
            "Age of the oldest open session.",
        );
        let _ = writeln!(
            s,
            "mcp_bridge_session_oldest_seconds {:.3}",
            c(&self.session_oldest_ms) as f64 / 1000.0
        );

        let series: Vec<((&'static str, String), Series)> = {
            let r = self.requests();
            r.0.series
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let labels = |m: &str, t: &str| format!("method=\"{m}\",tool=\"{}\"", escape(t));
        head(&mut s, "mcp_bridge_requests_total", "counter", "JSON-RPC requests received (and HTTP requests refused before parsing, method \"other\").");
        for ((m, t), v) in &series {
            let _ = writeln!(
                s,
                "mcp_bridge_requests_total{{{}}} {}",
                labels(m, t),
                v.count
            );
        }
        head(
            &mut s,
            "mcp_bridge_request_errors_total",
            "counter",
            "Requests that failed, by error type.",
        );
        for ((m, t), v) in &series {
            for e in ErrorType::ALL {
                let _ = writeln!(
                    s,
                    "mcp_bridge_request_errors_total{{{},error_type=\"{}\"}} {}",
                    labels(m, t),
                    e.label(),
                    v.errors[e as usize]
                );
            }
        }
        head(
            &mut s,
            "mcp_bridge_request_duration_seconds",
            "histogram",
            "Time from receiving a request to its response.",
        );
        for ((m, t), v) in &series {
            let l = labels(m, t);
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += v.buckets[i];
                let _ = writeln!(
                    s,
                    "mcp_bridge_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {cum}"
                );
            }
            let _ = writeln!(
                s,
                "mcp_bridge_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                v.count
            );
            let _ = writeln!(
                s,
                "mcp_bridge_request_duration_seconds_sum{{{l}}} {}",
                v.sum
            );
            let _ = writeln!(
                s,
                "mcp_bridge_request_duration_seconds_count{{{l}}} {}",
                v.count
            );
        }

        let gauge = |s: &mut String, name: &str, help: &str, v: i64| {
            head(s, name, "gauge", help);
            let _ = writeln!(s, "{name} {v}");
        };
        gauge(
            &mut s,
            "mcp_bridge_requests_in_flight",
            "Requests forwarded to the child and not answered yet.",
            g(&self.requests_in_flight),
        );
        gauge(
            &mut s,
            "mcp_bridge_ready",
            "1 when /readyz would answer 200.",
            i64::from(ready),
        );
        gauge(&mut s, "mcp_bridge_child_up", "1 when the (shared) child has completed its handshake and runs; per-session: the last spawn probe succeeded.", g(&self.child_up));
        gauge(
            &mut s,
            "mcp_bridge_child_processes",
            "Child processes running now.",
            g(&self.child_processes).max(0),
        );
        head(
            &mut s,
            "mcp_bridge_child_restarts_total",
            "counter",
            "Restarts of the shared child, by reason.",
        );
        for r in RestartReason::ALL {
            let _ = writeln!(
                s,
                "mcp_bridge_child_restarts_total{{reason=\"{}\"}} {}",
                r.label(),
                c(&self.child_restarts[r as usize])
            );
        }
        head(
            &mut s,
            "mcp_bridge_sessions_refused_total",
            "counter",
            "New sessions refused because the bridge held --max-sessions already.",
        );
        let _ = writeln!(
            s,
            "mcp_bridge_sessions_refused_total {}",
            c(&self.sessions_refused)
        );
        head(
            &mut s,
            "mcp_bridge_slow_consumer_closes_total",
            "counter",
            "Sessions closed because their client stopped reading its event stream.",
        );
        let _ = writeln!(
            s,
            "mcp_bridge_slow_consumer_closes_total {}",
            c(&self.slow_consumers)
        );
        gauge(
            &mut s,
            "mcp_bridge_inflight_bytes",
            "Bytes held by requests in flight (bodies and parsed trees), against the budget.",
            g(&self.inflight_bytes),
        );
        gauge(
            &mut s,
            "mcp_bridge_inflight_budget_bytes",
            "The in-flight byte budget (--max-inflight-bytes).",
            g(&self.inflight_budget),
        );
        head(
            &mut s,
            "mcp_bridge_keepalive_sent_total",
            "counter",
            "SSE keepalive comments sent.",
        );
        let _ = writeln!(
            s,
            "mcp_bridge_keepalive_sent_total {}",
            c(&self.keepalive_sent)
        );
        gauge(
            &mut s,
            "mcp_bridge_tools_advertised",
            "Tools in the child's tools/list.",
            g(&self.tools_advertised),
        );
        head(
            &mut s,
            "mcp_bridge_build_info",
            "gauge",
            "Always 1; the bridge's version.",
        );
        let _ = writeln!(
            s,
            "mcp_bridge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        gauge(
            &mut s,
            "process_resident_memory_bytes",
            "Resident memory of the bridge process (children excluded).",
            resident_bytes(),
        );
        gauge(
            &mut s,
            "process_open_fds",
            "Open file descriptors of the bridge process.",
            open_fds(),
        );
        s
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn resident_bytes() -> i64 {
    // /proc/self/statm: size resident shared ... in pages.
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * if page > 0 { page } else { 4096 }
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_labels_are_bounded_by_the_tools_list_and_counts_are_exact() {
        let st = Stats::default();
        st.set_tools(["echo", "big"]);
        assert_eq!(st.tool_label("echo"), "echo");
        assert_eq!(st.tool_label("made-up"), OTHER);
        assert_eq!(method_label("tools/call"), "tools/call");
        assert_eq!(method_label("x/y"), OTHER);
        st.record("tools/call", "echo", Duration::from_millis(3), None);
        st.record(
            "tools/call",
            "echo",
            Duration::from_millis(30),
            Some(ErrorType::Jsonrpc),
        );
        st.record("tools/call", "echo", Duration::from_secs(20), None);
        let text = st.render(true);
        assert!(text.contains("mcp_bridge_requests_total{method=\"tools/call\",tool=\"echo\"} 3\n"));
        assert!(text.contains("mcp_bridge_requests_total{method=\"tools/call\",tool=\"big\"} 0\n"));
        assert!(text.contains(
            "mcp_bridge_request_errors_total{method=\"tools/call\",tool=\"echo\",error_type=\"jsonrpc\"} 1\n"
        ));
        assert!(text.contains(
            "mcp_bridge_request_errors_total{method=\"tools/call\",tool=\"big\",error_type=\"rate_limited\"} 0\n"
        ));
        assert!(text.contains(
            "mcp_bridge_request_duration_seconds_bucket{method=\"tools/call\",tool=\"echo\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "mcp_bridge_request_duration_seconds_bucket{method=\"tools/call\",tool=\"echo\",le=\"10\"} 2\n"
        ));
        assert!(text.contains(
            "mcp_bridge_request_duration_seconds_bucket{method=\"tools/call\",tool=\"echo\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("mcp_bridge_tools_advertised 2\n"));
        assert!(text.contains("mcp_bridge_child_restarts_total{reason=\"exited\"} 0\n"));
    }
}
