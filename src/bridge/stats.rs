//! The bridge's metrics: counters kept on the hot path, exposed through `crate::metrics`
//! (prometheus-client's text encoder) by a scrape-time collector.
//!
//! Names, types, labels, buckets and enumerations are docs/contracts.md "Metrics (bridge)" exactly.
//! Plain atomics for the fixed series; one small mutex-guarded map for the per-(method, tool)
//! request series. Label values are bounded: `method` by the MCP method names below (others become
//! `other`), `tool` by the child's own tools/list (others become `other`; empty for non-tool
//! methods), so no client can create series at will.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::locks::MutexExt;
use crate::metrics;

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

/// The protocol era of a request (`era` label): `legacy` (inside an `initialize` session, or the
/// HTTP+SSE transport), `modern` (stateless 2026-07-28, `bridge::modern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

impl Era {
    pub const ALL: [Era; 2] = [Era::Legacy, Era::Modern];
    pub fn label(self) -> &'static str {
        match self {
            Era::Legacy => "legacy",
            Era::Modern => "modern",
        }
    }
}

/// Why a legacy client was refused by a bridge whose child speaks only 2026-07-28
/// (`mcp_bridge_era_refused_total{reason}`): `initialize` on `/mcp`, or `GET /sse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraRefusal {
    Initialize,
    Sse,
}

impl EraRefusal {
    pub const ALL: [EraRefusal; 2] = [EraRefusal::Initialize, EraRefusal::Sse];
    pub fn label(self) -> &'static str {
        match self {
            EraRefusal::Initialize => "initialize",
            EraRefusal::Sse => "sse",
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
    "server/discover",
    "subscriptions/listen",
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
    /// Audit lines lost: queue full, or stdout not writable (`audit::Auditor`).
    pub audit_dropped: AtomicU64,
    /// JSON-RPC requests by protocol era (`Era`).
    pub era_requests: [AtomicU64; 2],
    /// Requests refused with 503 for capacity, by era: legacy at the session cap, modern at the
    /// cap on stateless requests in flight or open `subscriptions/listen` streams.
    pub overloaded_by_era: [AtomicU64; 2],
    /// Stateless (modern) requests being served and open listen streams (set before each render).
    pub modern_in_flight: AtomicI64,
    pub modern_listeners: AtomicI64,
    /// The era the child speaks (`Era`): 1 for the current one, 0 for the other (both 0 until
    /// the probe has decided).
    pub child_era: [AtomicI64; 2],
    /// Legacy clients refused because the child speaks only 2026-07-28 (`EraRefusal`).
    pub era_refused: [AtomicU64; 2],
    requests: Mutex<RequestsCell>,
    /// `tools/call`s refused by the tool policy, by `tool` label (see [`Stats::denied_label`]).
    tools_denied: Mutex<BTreeMap<String, u64>>,
    /// MCP requests refused for authentication, by `reason` (a fixed set: `access::Failure`).
    auth_refused: Mutex<BTreeMap<&'static str, u64>>,
    /// MCP requests refused by a rate limit, by `consumer` label (consumer names of the auth
    /// file, `jwt`, `anonymous`, `unauthenticated`: bounded).
    rate_limited: Mutex<BTreeMap<String, u64>>,
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
    pub fn era_request(&self, e: Era) {
        self.era_requests[e as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn overloaded(&self, e: Era) {
        self.overloaded_by_era[e as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn set_child_era(&self, e: Era) {
        for x in Era::ALL {
            self.child_era[x as usize].store(i64::from(x == e), Ordering::Relaxed);
        }
    }
    pub fn era_refused(&self, r: EraRefusal) {
        self.era_refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn child_restarted(&self, r: RestartReason) {
        self.child_restarts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, RequestsCell> {
        self.requests.lock_ignore_poison()
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

    /// Tools the policy hides (from `--tools-deny`, or seen in the child's tools/list and filtered
    /// out): their names become `tool` label values of `mcp_bridge_tool_denied_total`, at 0.
    pub fn tools_hidden<S: AsRef<str>>(&self, names: &[S]) {
        let mut g = self.tools_denied.lock_ignore_poison();
        for name in names {
            let name = name.as_ref();
            if g.len() < MAX_TOOLS && !g.contains_key(name) {
                g.insert(name.to_string(), 0);
            }
        }
    }

    /// The `tool` label of a refused tools/call: a name the policy is known to hide, else `other`
    /// (a client cannot create series by calling made-up names).
    pub fn denied_label(&self, name: &str) -> String {
        if self.tools_denied.lock_ignore_poison().contains_key(name) {
            name.to_string()
        } else {
            OTHER.to_string()
        }
    }

    /// Count one `tools/call` of `name` refused by the tool policy.
    pub fn tool_denied(&self, name: &str) {
        let label = self.denied_label(name);
        *self
            .tools_denied
            .lock_ignore_poison()
            .entry(label)
            .or_default() += 1;
    }

    /// One request refused for authentication (`reason`: `access::Failure::label`).
    pub fn auth_refused(&self, reason: &'static str) {
        *self
            .auth_refused
            .lock_ignore_poison()
            .entry(reason)
            .or_default() += 1;
    }

    /// One request refused by the rate limit of `consumer` (a bounded label, see the field).
    pub fn rate_limited(&self, consumer: &str) {
        let mut g = self.rate_limited.lock_ignore_poison();
        let key = if g.contains_key(consumer) || g.len() < MAX_TOOLS {
            consumer
        } else {
            OTHER
        };
        *g.entry(key.to_string()).or_default() += 1;
    }

    /// Label values present at 0 from the start (the consumers this bridge knows).
    pub fn consumers_known<S: AsRef<str>>(&self, names: &[S]) {
        let mut g = self.rate_limited.lock_ignore_poison();
        for n in names {
            g.entry(n.as_ref().to_string()).or_default();
        }
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

    /// The registry a scrape encodes (`crate::metrics::response`): every metric in
    /// docs/contracts.md "Metrics (bridge)", read from these counters when encoded.
    pub fn registry(self: &Arc<Self>, ready: bool) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(Scrape {
            stats: self.clone(),
            ready,
        }));
        r
    }
}

/// The bridge's series at scrape time. A collector rather than prometheus-client metric types:
/// the counters are plain atomics that the whole bridge updates on its hot path (no extra lock
/// or allocation per request), the request table keeps the contract's buckets itself, and the
/// readiness and in-flight-byte gauges are values of the moment.
#[derive(Debug)]
struct Scrape {
    stats: Arc<Stats>,
    ready: bool,
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        use metrics::{counter, counters, gauge, gauges};
        let st = &*self.stats;
        let e = &mut enc;
        let g = |v: &AtomicI64| v.load(Ordering::Relaxed);
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);

        gauges(
            e,
            "mcp_bridge_sessions_active",
            "Open MCP sessions.",
            Transport::ALL.map(|t| ([("transport", t.label())], g(&st.sessions_active[t.idx()]))),
        )?;
        counters(
            e,
            "mcp_bridge_sessions_opened_total",
            "MCP sessions opened.",
            Transport::ALL.map(|t| ([("transport", t.label())], c(&st.sessions_opened[t.idx()]))),
        )?;
        counters(
            e,
            "mcp_bridge_sessions_closed_total",
            "MCP sessions closed, by reason.",
            Transport::ALL.into_iter().flat_map(|t| {
                CloseReason::ALL.map(|r| {
                    (
                        [("transport", t.label()), ("reason", r.label())],
                        c(&st.sessions_closed[t.idx()][r as usize]),
                    )
                })
            }),
        )?;
        gauge(
            e,
            "mcp_bridge_session_oldest_seconds",
            "Age of the oldest open session.",
            c(&st.session_oldest_ms) as f64 / 1000.0,
        )?;

        let series: Vec<((&'static str, String), Series)> = {
            let r = st.requests();
            r.0.series
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        fn labels<'a>(m: &'a str, t: &'a str) -> [(&'static str, &'a str); 2] {
            [("method", m), ("tool", t)]
        }
        counters(
            e,
            "mcp_bridge_requests_total",
            "JSON-RPC requests received (and HTTP requests refused before parsing, method \"other\").",
            series.iter().map(|((m, t), v)| (labels(m, t), v.count)),
        )?;
        counters(
            e,
            "mcp_bridge_request_errors_total",
            "Requests that failed, by error type.",
            series.iter().flat_map(|((m, t), v)| {
                ErrorType::ALL.map(|err| {
                    (
                        [
                            ("method", *m),
                            ("tool", t.as_str()),
                            ("error_type", err.label()),
                        ],
                        v.errors[err as usize],
                    )
                })
            }),
        )?;
        let mut h = e.encode_descriptor(
            "mcp_bridge_request_duration_seconds",
            "Time from receiving a request to its response.",
            None,
            MetricType::Histogram,
        )?;
        for ((m, t), v) in &series {
            let buckets: Vec<(f64, u64)> = BUCKETS.into_iter().zip(v.buckets).collect();
            h.encode_family(&labels(m, t))?
                .encode_histogram::<NoLabelSet>(v.sum, v.count, &buckets, None)?;
        }

        gauge(
            e,
            "mcp_bridge_requests_in_flight",
            "Requests forwarded to the child and not answered yet.",
            g(&st.requests_in_flight),
        )?;
        gauge(
            e,
            "mcp_bridge_ready",
            "1 when /readyz would answer 200.",
            i64::from(self.ready),
        )?;
        gauge(e, "mcp_bridge_child_up", "1 when the (shared) child has completed its handshake and runs; per-session: the last spawn probe succeeded.", g(&st.child_up))?;
        gauge(
            e,
            "mcp_bridge_child_processes",
            "Child processes running now.",
            g(&st.child_processes).max(0),
        )?;
        counters(
            e,
            "mcp_bridge_child_restarts_total",
            "Restarts of the shared child, by reason.",
            RestartReason::ALL
                .map(|r| ([("reason", r.label())], c(&st.child_restarts[r as usize]))),
        )?;
        let mut denied = self.stats.tools_denied.lock_ignore_poison().clone();
        denied.entry(OTHER.to_string()).or_default();
        counters(
            e,
            "mcp_bridge_tool_denied_total",
            "tools/call requests refused by the tool policy (manifest `tools`), never forwarded.",
            denied.iter().map(|(t, v)| ([("tool", t.as_str())], *v)),
        )?;
        let mut auth = self.stats.auth_refused.lock_ignore_poison().clone();
        auth.entry("missing").or_default();
        auth.entry("invalid_token").or_default();
        counters(
            e,
            "mcp_bridge_auth_refused_total",
            "MCP requests refused for authentication (401/403), by reason.",
            auth.iter().map(|(r, v)| ([("reason", *r)], *v)),
        )?;
        let limited = self.stats.rate_limited.lock_ignore_poison().clone();
        counters(
            e,
            "mcp_bridge_rate_limited_total",
            "MCP requests refused with 429 by the caller's rate limit, by consumer.",
            limited
                .iter()
                .map(|(c, v)| ([("consumer", c.as_str())], *v)),
        )?;
        counter(
            e,
            "mcp_bridge_sessions_refused_total",
            "New sessions refused because the bridge held --max-sessions already.",
            c(&st.sessions_refused),
        )?;
        counter(
            e,
            "mcp_bridge_slow_consumer_closes_total",
            "Sessions closed because their client stopped reading its event stream.",
            c(&st.slow_consumers),
        )?;
        counters(
            e,
            "mcp_bridge_era_requests_total",
            "JSON-RPC requests by protocol era: legacy (initialize sessions, HTTP+SSE) or modern (stateless 2026-07-28).",
            Era::ALL.map(|x| ([("era", x.label())], c(&st.era_requests[x as usize]))),
        )?;
        counters(
            e,
            "mcp_bridge_overloaded_total",
            "Requests refused with 503 for capacity, by era: legacy at --max-sessions sessions, modern at --max-sessions stateless requests (or listen streams) at once.",
            Era::ALL.map(|x| ([("era", x.label())], c(&st.overloaded_by_era[x as usize]))),
        )?;
        gauges(
            e,
            "mcp_bridge_child_era",
            "The protocol era the child speaks: 1 for legacy (initialize-based) or modern (2026-07-28, served natively), 0 for the other; both 0 while the era probe runs.",
            Era::ALL.map(|x| ([("era", x.label())], g(&st.child_era[x as usize]))),
        )?;
        counters(
            e,
            "mcp_bridge_era_refused_total",
            "Legacy clients refused because the child speaks only 2026-07-28, by reason: initialize (POST /mcp, 400 -32022) or sse (GET /sse, 400).",
            EraRefusal::ALL.map(|x| ([("reason", x.label())], c(&st.era_refused[x as usize]))),
        )?;
        gauge(
            e,
            "mcp_bridge_modern_in_flight",
            "Stateless (2026-07-28) requests being served now.",
            g(&st.modern_in_flight),
        )?;
        gauge(
            e,
            "mcp_bridge_modern_listeners",
            "Open subscriptions/listen streams.",
            g(&st.modern_listeners),
        )?;
        counter(
            e,
            "mcp_bridge_audit_dropped_total",
            "Audit lines lost: the audit queue was full or stdout was not writable.",
            c(&st.audit_dropped),
        )?;
        gauge(
            e,
            "mcp_bridge_inflight_bytes",
            "Bytes held by requests in flight (bodies and parsed trees), against the budget.",
            g(&st.inflight_bytes),
        )?;
        gauge(
            e,
            "mcp_bridge_inflight_budget_bytes",
            "The in-flight byte budget (--max-inflight-bytes).",
            g(&st.inflight_budget),
        )?;
        counter(
            e,
            "mcp_bridge_keepalive_sent_total",
            "SSE keepalive comments sent.",
            c(&st.keepalive_sent),
        )?;
        gauge(
            e,
            "mcp_bridge_tools_advertised",
            "Tools in the child's tools/list.",
            g(&st.tools_advertised),
        )?;
        gauges(
            e,
            "mcp_bridge_build_info",
            "Always 1; the bridge's version.",
            [([("version", env!("CARGO_PKG_VERSION"))], 1)],
        )?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory of the bridge process (children excluded).",
            metrics::resident_memory_bytes().unwrap_or(0),
        )?;
        gauge(
            e,
            "process_open_fds",
            "Open file descriptors of the bridge process.",
            metrics::open_fds().unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(st: &Arc<Stats>, ready: bool) -> String {
        metrics::encode(&st.registry(ready)).unwrap()
    }

    #[test]
    fn tool_labels_are_bounded_by_the_tools_list_and_counts_are_exact() {
        let st = Arc::new(Stats::default());
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
        let text = text(&st, true);
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

    /// docs/contracts.md "Metrics (bridge)": name, type, label names.
    const CONTRACT: &[(&str, &str, &[&str])] = &[
        ("mcp_bridge_sessions_active", "gauge", &["transport"]),
        (
            "mcp_bridge_sessions_opened_total",
            "counter",
            &["transport"],
        ),
        (
            "mcp_bridge_sessions_closed_total",
            "counter",
            &["transport", "reason"],
        ),
        ("mcp_bridge_session_oldest_seconds", "gauge", &[]),
        ("mcp_bridge_requests_total", "counter", &["method", "tool"]),
        (
            "mcp_bridge_request_errors_total",
            "counter",
            &["method", "tool", "error_type"],
        ),
        (
            "mcp_bridge_request_duration_seconds",
            "histogram",
            &["method", "tool"],
        ),
        ("mcp_bridge_requests_in_flight", "gauge", &[]),
        ("mcp_bridge_ready", "gauge", &[]),
        ("mcp_bridge_child_up", "gauge", &[]),
        ("mcp_bridge_child_processes", "gauge", &[]),
        ("mcp_bridge_child_restarts_total", "counter", &["reason"]),
        ("mcp_bridge_keepalive_sent_total", "counter", &[]),
        ("mcp_bridge_sessions_refused_total", "counter", &[]),
        ("mcp_bridge_tool_denied_total", "counter", &["tool"]),
        ("mcp_bridge_auth_refused_total", "counter", &["reason"]),
        ("mcp_bridge_rate_limited_total", "counter", &["consumer"]),
        ("mcp_bridge_slow_consumer_closes_total", "counter", &[]),
        ("mcp_bridge_audit_dropped_total", "counter", &[]),
        ("mcp_bridge_era_requests_total", "counter", &["era"]),
        ("mcp_bridge_overloaded_total", "counter", &["era"]),
        ("mcp_bridge_child_era", "gauge", &["era"]),
        ("mcp_bridge_era_refused_total", "counter", &["reason"]),
        ("mcp_bridge_modern_in_flight", "gauge", &[]),
        ("mcp_bridge_modern_listeners", "gauge", &[]),
        ("mcp_bridge_inflight_bytes", "gauge", &[]),
        ("mcp_bridge_inflight_budget_bytes", "gauge", &[]),
        ("mcp_bridge_tools_advertised", "gauge", &[]),
        ("mcp_bridge_build_info", "gauge", &["version"]),
        ("process_resident_memory_bytes", "gauge", &[]),
        ("process_open_fds", "gauge", &[]),
    ];

    #[test]
    fn exposition_parses_and_carries_every_contract_metric() {
        let st = Arc::new(Stats::default());
        st.set_tools(["echo"]);
        st.session_opened(Transport::Sse);
        st.session_closed(Transport::Sse, CloseReason::IdleExpired);
        st.record("tools/call", "echo", Duration::from_millis(7), None);
        st.record(
            OTHER,
            "",
            Duration::from_millis(1),
            Some(ErrorType::BadRequest),
        );
        st.child_restarted(RestartReason::Hung);
        st.consumers_known(&["anonymous"]);
        st.rate_limited("anonymous");
        st.auth_refused("expired");
        let text = text(&st, true);
        let families = metrics::parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (name, kind, labels) in CONTRACT {
            let f = families
                .get(*name)
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
            assert_eq!(f.kind, *kind, "{name}");
            assert!(f.help.is_some(), "{name} has HELP");
            assert!(!f.samples.is_empty(), "{name} has samples");
            for s in &f.samples {
                let mut have: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
                have.retain(|k| *k != "le");
                assert_eq!(have, *labels, "{name}: {s:?}");
            }
        }
        assert_eq!(families.len(), CONTRACT.len(), "{:?}", families.keys());
        // Enumerations are pre-initialised: 2 transports × 6 reasons, 9 error types per series.
        assert_eq!(
            families["mcp_bridge_sessions_closed_total"].samples.len(),
            12
        );
        let series = families["mcp_bridge_requests_total"].samples.len();
        assert_eq!(series, 3, "tools/call echo, tools/call other, other");
        assert_eq!(
            families["mcp_bridge_request_errors_total"].samples.len(),
            9 * series
        );
        assert_eq!(
            families["mcp_bridge_request_duration_seconds"]
                .samples
                .len(),
            (BUCKETS.len() + 3) * series
        );
        let h = &families["mcp_bridge_request_duration_seconds"].samples;
        let count = |suffix: &str| h.iter().filter(|s| s.name.ends_with(suffix)).count();
        assert_eq!((count("_sum"), count("_count")), (series, series));
        assert!(text.contains(
            "mcp_bridge_sessions_closed_total{transport=\"sse\",reason=\"idle_expired\"} 1\n"
        ));
        assert!(text.contains("mcp_bridge_child_restarts_total{reason=\"hung\"} 1\n"));
        assert!(text.contains("mcp_bridge_ready 1\n"));
        assert!(text.contains(&format!(
            "mcp_bridge_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        let rss = &families["process_resident_memory_bytes"].samples[0];
        assert!(rss.value > 0.0 && rss.value.fract() == 0.0, "{rss:?}");
    }

    #[test]
    fn policy_refusals_are_counted_by_known_hidden_tools_only() {
        let st = Arc::new(Stats::default());
        assert!(text(&st, true).contains("mcp_bridge_tool_denied_total{tool=\"other\"} 0\n"));
        st.tools_hidden(&["slow_echo"]);
        st.tool_denied("slow_echo");
        st.tool_denied("slow_echo");
        st.tool_denied("made-up");
        let t = text(&st, true);
        assert!(
            t.contains("mcp_bridge_tool_denied_total{tool=\"slow_echo\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains("mcp_bridge_tool_denied_total{tool=\"other\"} 1\n"),
            "{t}"
        );
        assert!(!t.contains("made-up"));
    }

    #[test]
    fn tool_names_are_escaped_by_the_encoder() {
        let st = Arc::new(Stats::default());
        let odd = "line\nbreak \"quoted\" back\\slash";
        st.set_tools([odd]);
        let label = st.tool_label(odd);
        st.record("tools/call", &label, Duration::from_millis(1), None);
        let text = text(&st, false);
        assert!(
            text.contains(
                "mcp_bridge_requests_total{method=\"tools/call\",tool=\"line\\nbreak \\\"quoted\\\" back\\\\slash\"} 1\n"
            ),
            "{text}"
        );
        let families = metrics::parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(families["mcp_bridge_requests_total"]
            .samples
            .iter()
            .any(|s| s.label("tool") == Some(odd) && s.value == 1.0));
    }
}
