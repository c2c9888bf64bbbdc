//! The bridge's state: the session table, what each client message turns into (answered here,
//! forwarded, or dropped), readiness, idle expiry and draining.
//!
//! Transport-neutral: `http` turns HTTP requests into calls on [`App`] and writes what comes back
//! as JSON or SSE. The shared-child rules of docs/contracts.md are applied here (local `initialize`,
//! `tools/list` cache, per-session `logging/setLevel`) and in `upstream` (remapping, routing).
//! A shared child that speaks only 2026-07-28 (`probe`) is never sent `initialize`: legacy
//! clients are refused (`http`, and here for a session that slipped in while the era was being
//! probed), and its stateless requests pass through [`App::handle`] unchanged (`modern`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
#[cfg(test)]
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::audit::{AuditOutcome, Auditor};
use super::child::{self, ChildSpec};
use super::jsonrpc::{self, Kind};
use super::policy::{self, ToolPolicy};
use super::schema;
use super::sse;
use super::stats::{self, CloseReason, ErrorType, Stats, Transport};
use super::upstream::{
    CallError, CallHandle, Delivery, Route, SessionId, Sink, Status, ToolSchemas, Upstream,
};
use crate::locks::MutexExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionModel {
    /// One warm child for every session (stateless servers).
    Shared,
    /// One child per session (servers with per-client state).
    PerSession,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub child: ChildSpec,
    pub model: SessionModel,
    pub keepalive: Duration,
    pub idle_timeout: Duration,
    pub ready_stale: Duration,
    pub hung_after: Duration,
    pub drain_timeout: Duration,
    /// Bearer token the MCP endpoints require (read from a file, never a flag value).
    pub token: Option<Secret>,
    /// Origins allowed besides loopback (`scheme://host[:port]`, lower case, no trailing slash).
    pub allow_origins: Vec<String>,
    /// When non-empty, the `Host` header must be loopback or one of these (`host[:port]`).
    pub allow_hosts: Vec<String>,
    /// Requests per second per client (token, else address), with a burst; `None`: unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Largest request body accepted (413 above).
    pub max_body: usize,
    /// Bounds on a body's JSON shape, checked before it is parsed.
    pub json_limits: super::admission::Limits,
    /// Bytes all requests in flight may hold at once (bodies and parsed trees).
    pub inflight_budget: usize,
    /// Sessions held at once (per_session mode: live children).
    pub max_sessions: usize,
    /// Check `tools/call` arguments against the tool's cached `inputSchema` in the bridge.
    pub validate_args: bool,
    /// Tools clients may see and call (`--tools-allow` / `--tools-deny`).
    pub tools: Arc<ToolPolicy>,
    /// Consumers' token digests and JWT settings (`--auth-file`); overrides `token`.
    pub access: Option<Arc<super::access::Access>>,
    /// The service this bridge serves (audit lines).
    pub service: String,
    /// Put `tools/call` argument values in the audit lines.
    pub audit_arguments: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: f64,
}

/// A secret value: its `Debug` never shows it, so no `?config` in a log line can leak it.
#[derive(Clone)]
pub struct Secret(String);
impl Secret {
    pub fn new(s: String) -> Self {
        Self(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub struct Session {
    pub id: SessionId,
    pub transport: Transport,
    /// Who opened it (`anonymous` without auth): only the same caller may use it, so a leaked
    /// session id is of no use to another consumer (MCP security best practices).
    pub consumer: Arc<str>,
    pub upstream: Arc<Upstream>,
    created: Instant,
    last_active: Mutex<Instant>,
    /// Open SSE streams; a session with one open is never idle-expired.
    streams: AtomicUsize,
    in_flight: AtomicUsize,
    /// Where unsolicited messages go: the legacy SSE stream, or the streamable GET stream if open.
    outbound: Mutex<Option<sse::Frames>>,
    /// Minimum rank of `notifications/message` this session wants (shared mode, set by setLevel).
    log_level: Mutex<Option<usize>>,
    pub closed: CancellationToken,
    /// A bridge-owned session for one stateless (2026-07-28) request (`modern`): never in the
    /// session table, never counted as a session.
    pub stateless: bool,
}

impl Session {
    /// The session one stateless request runs on: the shared child, the caller's name (audit),
    /// a unique id (the child-side id remapping keys on it). Dropped with the request.
    pub fn stateless(id: SessionId, consumer: Arc<str>, upstream: Arc<Upstream>) -> Arc<Self> {
        Arc::new(Session {
            id,
            transport: Transport::StreamableHttp,
            consumer,
            upstream,
            created: Instant::now(),
            last_active: Mutex::new(Instant::now()),
            streams: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            outbound: Mutex::new(None),
            log_level: Mutex::new(None),
            closed: CancellationToken::new(),
            stateless: true,
        })
    }

    pub fn touch(&self) {
        *self.last_active.lock_ignore_poison() = Instant::now();
    }
    fn idle_for(&self) -> Duration {
        self.last_active.lock_ignore_poison().elapsed()
    }
    /// Idle longer than `timeout`, with no open stream and nothing in flight.
    fn expired(&self, timeout: Duration) -> bool {
        self.streams.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.idle_for() > timeout
    }
    pub fn set_outbound(&self, frames: Option<sse::Frames>) {
        *self.outbound.lock_ignore_poison() = frames;
    }
    pub fn outbound(&self) -> Option<sse::Frames> {
        self.outbound.lock_ignore_poison().clone()
    }
    /// Holds the session open (not idle) while a stream is connected.
    pub fn stream_guard(self: &Arc<Self>) -> StreamGuard {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }
    /// Whether this session wants a notification (log messages below its `logging/setLevel`: no).
    fn wants(&self, msg: &Value) -> bool {
        if jsonrpc::method(msg) == "notifications/message" {
            let min = *self.log_level.lock_ignore_poison();
            let rank = msg["params"]["level"]
                .as_str()
                .and_then(jsonrpc::level_rank);
            if let (Some(min), Some(rank)) = (min, rank) {
                return rank >= min;
            }
        }
        true
    }

    /// Queue a notification on the session's stream. `false` when the stream's queue is full:
    /// the client has stopped reading (the caller closes the session).
    fn deliver(&self, msg: &Value) -> bool {
        if !self.wants(msg) {
            return true;
        }
        if let Some(out) = self.outbound() {
            match out.try_send(sse::message(msg)) {
                Ok(()) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => return false,
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!(session = %self.id, "session stream gone; notification dropped");
                }
            }
        }
        true
    }
}

pub struct StreamGuard(Arc<Session>);
impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Counts a forwarded request as in flight until it completes or is abandoned.
pub struct InFlight {
    stats: Arc<Stats>,
    session: Arc<Session>,
}
impl InFlight {
    fn new(stats: &Arc<Stats>, session: &Arc<Session>) -> Self {
        stats.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        session.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            stats: stats.clone(),
            session: session.clone(),
        }
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats
            .requests_in_flight
            .fetch_sub(1, Ordering::Relaxed);
        self.session.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.session.touch();
    }
}

/// Times one JSON-RPC request and records it in the request metrics exactly once: when its
/// response is seen (`finish`), or as `cancelled` when it is dropped unanswered.
pub struct Meter {
    stats: Arc<Stats>,
    method: &'static str,
    tool: String,
    start: Instant,
    done: bool,
    /// A `tools/call`'s audit line, written with its outcome (boxed: most requests have none).
    audit: Option<Box<AuditCall>>,
}

/// What a `tools/call`'s audit line needs besides its outcome.
struct AuditCall {
    auditor: Arc<Auditor>,
    consumer: Arc<str>,
    tool: String,
    rpc_id: Value,
    arguments: Option<Value>,
}

/// Longest tool name written into an audit line (the name is the client's).
const AUDIT_TOOL_CHARS: usize = 200;

impl Meter {
    fn start(stats: &Arc<Stats>, msg: &Value, audit: Option<(&Arc<Auditor>, &Arc<str>)>) -> Self {
        let method = stats::method_label(jsonrpc::method(msg));
        let name = msg["params"]["name"].as_str().unwrap_or_default();
        let tool = if method == "tools/call" {
            stats.tool_label(name)
        } else {
            String::new()
        };
        let audit = audit
            .filter(|_| method == "tools/call")
            .map(|(auditor, consumer)| {
                Box::new(AuditCall {
                    auditor: auditor.clone(),
                    consumer: consumer.clone(),
                    tool: name.chars().take(AUDIT_TOOL_CHARS).collect(),
                    rpc_id: msg.get("id").cloned().unwrap_or(Value::Null),
                    arguments: auditor
                        .arguments()
                        .then(|| msg["params"].get("arguments").cloned())
                        .flatten(),
                })
            });
        Self {
            stats: stats.clone(),
            method,
            tool,
            start: Instant::now(),
            done: false,
            audit,
        }
    }

    /// Record with the outcome read from `reply`; `forwarded`: it came from the child.
    fn finish(&mut self, reply: &Value, forwarded: bool) {
        if !self.done {
            let outcome = match reply.get("error") {
                Some(e) => AuditOutcome::Error {
                    code: e["code"].as_i64().unwrap_or(0),
                    message: e["message"].as_str().unwrap_or_default(),
                },
                None if reply["result"]["isError"] == Value::Bool(true) => AuditOutcome::ToolError,
                None => AuditOutcome::Ok,
            };
            self.audit(outcome);
        }
        let error = classify(reply, forwarded);
        self.record(error);
    }

    /// Write the audit line (once).
    fn audit(&mut self, outcome: AuditOutcome<'_>) {
        if let Some(a) = self.audit.take() {
            a.auditor.tool_call(
                &a.consumer,
                &a.tool,
                &a.rpc_id,
                a.arguments.as_ref(),
                outcome,
                self.start.elapsed(),
            );
        }
    }

    fn record(&mut self, error: Option<ErrorType>) {
        if self.done {
            return;
        }
        self.audit(match error {
            Some(ErrorType::Cancelled) => AuditOutcome::Cancelled,
            _ => AuditOutcome::Ok,
        });
        self.done = true;
        let took = self.start.elapsed();
        self.stats.record(self.method, &self.tool, took, error);
        tracing::debug!(
            method = self.method,
            tool = %self.tool,
            error_type = error.map(ErrorType::label),
            took_us = took.as_micros() as u64,
            "request done"
        );
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.record(Some(ErrorType::Cancelled));
    }
}

/// The `error_type` of a response. Errors the bridge makes itself carry its own codes; from the
/// child, −32000/−32001 can only be the bridge's "process exited / unavailable" answers.
fn classify(reply: &Value, forwarded: bool) -> Option<ErrorType> {
    let err = reply.get("error")?;
    let code = err["code"].as_i64().unwrap_or(0);
    let msg = err["message"].as_str().unwrap_or_default();
    Some(match code {
        jsonrpc::CHILD_EXITED => ErrorType::ChildExited,
        jsonrpc::CHILD_UNAVAILABLE if msg.contains("still starting") => ErrorType::Timeout,
        jsonrpc::CHILD_UNAVAILABLE => ErrorType::ChildExited,
        jsonrpc::PARSE_ERROR | jsonrpc::INVALID_REQUEST | jsonrpc::INVALID_PARAMS if !forwarded => {
            ErrorType::BadRequest
        }
        _ => ErrorType::Jsonrpc,
    })
}

/// A forwarded request: deliveries from the child plus the in-flight and metrics accounting.
pub struct Call {
    handle: CallHandle,
    _in_flight: InFlight,
    meter: Option<Meter>,
}

impl Call {
    /// The next delivery (see [`CallHandle::recv`]); a response is recorded in the metrics.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let d = self.handle.recv().await;
        if let (Some(Delivery::Response(v)), Some(m)) = (&d, &mut self.meter) {
            m.finish(v, true);
        }
        d
    }
    /// Wait for the response only, dropping notifications (JSON-mode HTTP replies).
    pub async fn response(&mut self) -> Option<Value> {
        loop {
            match self.recv().await? {
                Delivery::Response(v) => return Some(v),
                Delivery::Notification(_) => {}
            }
        }
    }
}

/// What a client message turned into.
pub enum Outcome {
    /// A notification or response: nothing to send back.
    Accepted,
    /// Answered by the bridge (or an error about the request).
    Reply(Value),
    /// Forwarded to the child; read the deliveries.
    Forwarded(Call),
}

#[derive(Default)]
struct Probe {
    ok: bool,
    detail: String,
    at: Option<Instant>,
}

pub struct App {
    pub cfg: Config,
    pub stats: Arc<Stats>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
    /// The one child (shared mode only).
    pub shared: Option<Arc<Upstream>>,
    probe: Mutex<Probe>,
    /// Per-session mode: the tools' inputSchemas as the last spawn probe listed them.
    probe_schemas: Mutex<Option<Arc<ToolSchemas>>>,
    tools_fill: tokio::sync::Mutex<()>,
    pub shutdown: CancellationToken,
    pub draining: AtomicBool,
    /// Who may call the MCP endpoints (`cfg.access`, or the single `cfg.token`); None: anyone.
    pub access: Option<Arc<super::access::Access>>,
    /// Token buckets per caller (each caller's rate: its consumer's, else `cfg.rate_limit`).
    pub limiter: super::guard::RateLimiter,
    /// One line per `tools/call` on stdout (`audit`).
    pub audit: Arc<Auditor>,
    /// Bytes requests in flight may hold (see `admission`).
    pub budget: super::admission::Budget,
    /// Stateless (2026-07-28) requests in flight and `subscriptions/listen` streams.
    pub modern: super::modern::Modern,
    me: Weak<App>,
}

/// A session (either mode) idle this long, with no open stream and nothing in flight, may be
/// evicted to make room when the session table is full.
const EVICTABLE_AFTER: Duration = Duration::from_secs(60);

impl App {
    pub fn new(cfg: Config) -> Arc<Self> {
        let stats = Arc::new(Stats::default());
        let access = cfg.access.clone().or_else(|| {
            cfg.token.as_ref().map(|t| {
                Arc::new(super::access::Access::single(
                    "token",
                    t.expose(),
                    cfg.rate_limit,
                ))
            })
        });
        let limiter = super::guard::RateLimiter::default();
        let audit = Auditor::new(cfg.service.clone(), cfg.audit_arguments, stats.clone());
        let budget = super::admission::Budget::new(cfg.inflight_budget);
        stats.tools_hidden(&cfg.tools.denied().collect::<Vec<_>>());
        let mut consumers = vec![
            super::http::ANONYMOUS.to_string(),
            "unauthenticated".to_string(),
        ];
        consumers.extend(access.iter().flat_map(|a| a.labels()));
        stats.consumers_known(&consumers);
        if cfg.model == SessionModel::PerSession {
            // A per-session child is a legacy notion (its own initialize per client): no probe.
            stats.set_child_era(stats::Era::Legacy);
        }
        Arc::new_cyclic(|me: &Weak<App>| {
            let shared = (cfg.model == SessionModel::Shared).then(|| {
                Upstream::new(
                    true,
                    None,
                    sink(me.clone()),
                    stats.clone(),
                    cfg.tools.clone(),
                )
            });
            App {
                cfg,
                stats,
                sessions: Mutex::new(HashMap::new()),
                shared,
                probe: Mutex::new(Probe::default()),
                probe_schemas: Mutex::new(None),
                tools_fill: tokio::sync::Mutex::new(()),
                shutdown: CancellationToken::new(),
                draining: AtomicBool::new(false),
                access,
                limiter,
                audit,
                budget,
                modern: Default::default(),
                me: me.clone(),
            }
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        self.sessions.lock_ignore_poison()
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.table().get(id).cloned();
        if let Some(s) = &s {
            s.touch();
        }
        s
    }

    pub fn session_count(&self) -> usize {
        self.table().len()
    }

    /// A new session: shares the warm child, or gets its own (per-session mode).
    pub async fn open_session(
        &self,
        transport: Transport,
        consumer: Arc<str>,
    ) -> Result<Arc<Session>, CallError> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(CallError {
                code: jsonrpc::CHILD_UNAVAILABLE,
                message: "bridge is shutting down".into(),
            });
        }
        self.make_room()?;
        let id: SessionId = uuid::Uuid::new_v4().simple().to_string().into();
        let upstream = match &self.shared {
            Some(up) => up.clone(),
            None => Upstream::new(
                false,
                Some(id.clone()),
                sink(self.me.clone()),
                self.stats.clone(),
                self.cfg.tools.clone(),
            ),
        };
        let session = Arc::new(Session {
            id: id.clone(),
            transport,
            consumer,
            upstream: upstream.clone(),
            created: Instant::now(),
            last_active: Mutex::new(Instant::now()),
            streams: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            outbound: Mutex::new(None),
            log_level: Mutex::new(None),
            closed: CancellationToken::new(),
            stateless: false,
        });
        if self.shared.is_none() {
            let mut running =
                child::spawn(&self.cfg.child, &upstream, &self.stats).map_err(|e| CallError {
                    code: jsonrpc::CHILD_UNAVAILABLE,
                    message: format!("cannot start {:?}: {e}", self.cfg.child.program),
                })?;
            upstream.set_status(Status::Ready);
            let me = self.me.clone();
            let hung_after = self.cfg.child.hung_after;
            let s = session.clone();
            tokio::spawn(async move {
                let why = tokio::select! {
                    why = running.exited() => Some(why),
                    why = child::hung(&upstream, hung_after) => {
                        tracing::error!(session = %s.id, %why, "per-session MCP server stopped answering; killing it");
                        Some(why)
                    }
                    _ = s.closed.cancelled() => None,
                };
                // Fail waiting callers first (fast error), then close the session, then reap.
                let reason = why
                    .clone()
                    .unwrap_or_else(|| "was stopped (session closed)".into());
                upstream.detach(running.generation, &reason);
                upstream.set_status(Status::Down { reason });
                if let (Some(why), Some(app)) = (why, me.upgrade()) {
                    tracing::info!(session = %s.id, %why, "per-session child ended; closing its session");
                    app.close_session(&s.id, CloseReason::ChildExited);
                }
                running.kill().await;
            });
        }
        self.table().insert(id, session.clone());
        self.stats.session_opened(transport);
        Ok(session)
    }

    /// At the session cap: evict the longest-idle session that is evictable (idle over a minute,
    /// no open stream, nothing in flight); when none is, refuse (the caller answers 503 with
    /// Retry-After). Counted as `mcp_bridge_sessions_refused_total`.
    fn make_room(&self) -> Result<(), CallError> {
        if self.session_count() < self.cfg.max_sessions {
            return Ok(());
        }
        let victim = self
            .table()
            .values()
            .filter(|s| s.expired(EVICTABLE_AFTER))
            .max_by_key(|s| s.idle_for())
            .map(|s| s.id.clone());
        if let Some(id) = victim {
            tracing::info!(session = %id, cap = self.cfg.max_sessions, "session cap reached: evicting the longest-idle session");
            self.close_session(&id, CloseReason::IdleExpired);
            return Ok(());
        }
        self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
        self.stats.overloaded(stats::Era::Legacy);
        tracing::warn!(
            cap = self.cfg.max_sessions,
            "session cap reached: new session refused"
        );
        Err(CallError {
            code: jsonrpc::CHILD_UNAVAILABLE,
            message: format!(
                "too many sessions: this bridge holds at most {} (--max-sessions); retry later",
                self.cfg.max_sessions
            ),
        })
    }

    /// Close a session; `false` when it was closed already.
    pub fn close_session(&self, id: &str, reason: CloseReason) -> bool {
        let Some(s) = self.table().remove(id) else {
            return false;
        };
        s.closed.cancel();
        s.upstream.cancel_session(&s.id, "session closed");
        self.stats.session_closed(s.transport, reason);
        tracing::debug!(session = %id, reason = reason.label(), "session closed");
        true
    }

    /// A client that does not read its event stream: its queue is full, so the session is closed
    /// (its calls are cancelled at the child) instead of buffering for it without end.
    pub fn close_slow(&self, s: &Session) {
        if self.close_session(&s.id, CloseReason::ClientClosed) {
            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %s.id, "client stopped reading its event stream; session closed");
        }
    }

    fn route(&self, route: Route) {
        match route {
            Route::Session(id, msg) => {
                if let Some(s) = self.table().get(&id).cloned() {
                    if !s.deliver(&msg) {
                        self.close_slow(&s);
                    }
                }
            }
            Route::Broadcast(msg) => {
                self.modern.broadcast(&msg);
                let all: Vec<Arc<Session>> = self.table().values().cloned().collect();
                for s in all {
                    if !s.deliver(&msg) {
                        self.close_slow(&s);
                    }
                }
            }
        }
    }

    /// Turn one client message into an outcome (see [`Outcome`]).
    pub async fn handle(&self, session: &Arc<Session>, msg: Value) -> Outcome {
        session.touch();
        let shared = self.shared.is_some();
        let up = &session.upstream;
        let kind = if msg["jsonrpc"] == "2.0" {
            jsonrpc::kind(&msg)
        } else {
            Kind::Invalid
        };
        match kind {
            Kind::Invalid => {
                self.stats.record(
                    stats::OTHER,
                    "",
                    Duration::ZERO,
                    Some(ErrorType::BadRequest),
                );
                Outcome::Reply(jsonrpc::error(
                    msg.get("id")
                        .filter(|id| id.is_string() || id.is_number())
                        .cloned()
                        .unwrap_or(Value::Null),
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: not a JSON-RPC 2.0 request, notification or response",
                ))
            }
            Kind::Response => {
                // Only a per-session child ever asks the client anything (shared: −32601 by us).
                if !shared {
                    up.send_raw(&msg);
                }
                Outcome::Accepted
            }
            Kind::Notification => {
                match jsonrpc::method(&msg) {
                    "notifications/cancelled" => up.client_cancelled(&session.id, msg),
                    // The shared child was initialized by the bridge, with no client capabilities:
                    // nothing else a client notifies concerns it.
                    _ if shared => {}
                    _ => up.send_raw(&msg),
                }
                Outcome::Accepted
            }
            Kind::Request => {
                if !session.stateless {
                    self.stats.era_request(stats::Era::Legacy);
                }
                let mut meter =
                    Meter::start(&self.stats, &msg, Some((&self.audit, &session.consumer)));
                match self.handle_request(session, msg).await {
                    Outcome::Reply(v) => {
                        meter.finish(&v, false);
                        Outcome::Reply(v)
                    }
                    Outcome::Forwarded(mut call) => {
                        call.meter = Some(meter);
                        Outcome::Forwarded(call)
                    }
                    Outcome::Accepted => {
                        meter.record(None);
                        Outcome::Accepted
                    }
                }
            }
        }
    }

    async fn handle_request(&self, session: &Arc<Session>, msg: Value) -> Outcome {
        let shared = self.shared.is_some();
        let up = &session.upstream;
        if self.draining.load(Ordering::Relaxed) {
            return self.err(&msg, jsonrpc::CHILD_UNAVAILABLE, "bridge is shutting down");
        }
        let id = msg["id"].clone();
        let method = jsonrpc::method(&msg).to_string();
        // The tool policy first: a hidden tool is refused here, whatever its arguments, and
        // never reaches the child.
        if method == "tools/call" {
            if let Some(name) = msg["params"]["name"].as_str() {
                if !self.cfg.tools.permits(name) {
                    self.stats.tool_denied(name);
                    tracing::debug!(tool = %name, "tools/call refused by the tool policy");
                    return self.err(&msg, jsonrpc::INVALID_PARAMS, &policy::refusal(name));
                }
            }
        }
        if method == "tools/call" && self.cfg.validate_args {
            if let Err(text) = self.check_tool_call(session, &msg) {
                tracing::debug!(%text, "tools/call refused before the child");
                return self.err(&msg, jsonrpc::INVALID_PARAMS, &text);
            }
        }
        if shared {
            match method.as_str() {
                "initialize" => return self.local_initialize(up, &msg).await,
                "logging/setLevel" => {
                    let Some(rank) = msg["params"]["level"]
                        .as_str()
                        .and_then(jsonrpc::level_rank)
                    else {
                        return self.err(&msg, jsonrpc::INVALID_PARAMS, "unknown logging level");
                    };
                    *session.log_level.lock_ignore_poison() = Some(rank);
                    return Outcome::Reply(jsonrpc::result(id, json!({})));
                }
                // A modern child's own tools/list result goes back as it wrote it (fresh, not
                // the cached one); it still refreshes the cache (labels, argument schemas).
                "tools/list"
                    if msg["params"].get("cursor").is_none_or(Value::is_null)
                        && up.era() != Some(stats::Era::Modern) =>
                {
                    return self.cached_tools_list(session, msg).await;
                }
                _ => {}
            }
        }
        if let Err(e) = up.wait_ready(self.cfg.child.init_timeout).await {
            return Outcome::Reply(e.to_response(id));
        }
        let refresh_tools = shared
            && method == "tools/list"
            && msg["params"].get("cursor").is_none_or(Value::is_null);
        match up.send_request(Some(session.id.clone()), msg, refresh_tools) {
            Ok(handle) => Outcome::Forwarded(Call {
                handle,
                _in_flight: InFlight::new(&self.stats, session),
                meter: None,
            }),
            Err(e) => Outcome::Reply(e.to_response(id)),
        }
    }

    /// `tools/call` must name a tool, and its arguments must satisfy that tool's cached
    /// `inputSchema` (when the bridge knows it): the error names the field.
    fn check_tool_call(&self, session: &Arc<Session>, msg: &Value) -> Result<(), String> {
        let params = &msg["params"];
        let Some(name) = params["name"].as_str() else {
            return Err("tools/call needs params.name (a string)".into());
        };
        let empty = json!({});
        let args = match params.get("arguments") {
            None | Some(Value::Null) => &empty,
            Some(a) => a,
        };
        let schema = match &self.shared {
            Some(_) => session.upstream.tool_schema(name),
            None => self
                .probe_schemas
                .lock_ignore_poison()
                .as_ref()
                .and_then(|s| s.get(name).cloned()),
        };
        match schema {
            Some(schema) => schema::validate(&schema, args)
                .map_err(|e| format!("invalid arguments for tool {name:?}: {e}")),
            None if !args.is_object() => Err(format!(
                "invalid arguments for tool {name:?}: arguments: expected object"
            )),
            None => Ok(()),
        }
    }

    /// Shared mode: tools/list from the cache; on a miss one request fills it while concurrent
    /// sessions wait for that instead of each asking the child (a burst of new sessions).
    async fn cached_tools_list(&self, session: &Arc<Session>, msg: Value) -> Outcome {
        let up = &session.upstream;
        let id = msg["id"].clone();
        if let Some(tools) = up.cached_tools() {
            return Outcome::Reply(jsonrpc::result(id, tools));
        }
        let _fill = self.tools_fill.lock().await;
        if let Some(tools) = up.cached_tools() {
            return Outcome::Reply(jsonrpc::result(id, tools));
        }
        if let Err(e) = up.wait_ready(self.cfg.child.init_timeout).await {
            return Outcome::Reply(e.to_response(id));
        }
        let mut call = match up.send_request(Some(session.id.clone()), msg, true) {
            Ok(handle) => Call {
                handle,
                _in_flight: InFlight::new(&self.stats, session),
                meter: None,
            },
            Err(e) => return Outcome::Reply(e.to_response(id)),
        };
        match call.response().await {
            Some(v) => Outcome::Reply(v),
            None => self.err(
                &json!({"id": id}),
                jsonrpc::CHILD_UNAVAILABLE,
                "tools/list was not answered",
            ),
        }
    }

    fn err(&self, msg: &Value, code: i64, text: &str) -> Outcome {
        Outcome::Reply(jsonrpc::error(msg["id"].clone(), code, text))
    }

    /// Answer a session's initialize from the shared child's handshake.
    async fn local_initialize(&self, up: &Arc<Upstream>, msg: &Value) -> Outcome {
        if let Err(e) = up.wait_ready(self.cfg.child.init_timeout).await {
            return Outcome::Reply(e.to_response(msg["id"].clone()));
        }
        if up.era() == Some(stats::Era::Modern) {
            return Outcome::Reply(super::modern::legacy_refusal(up, msg["id"].clone()));
        }
        let Some(info) = up.init_info() else {
            return self.err(
                msg,
                jsonrpc::CHILD_UNAVAILABLE,
                "MCP server restarted; retry",
            );
        };
        let mut result = info.result.clone();
        result["protocolVersion"] = json!(jsonrpc::negotiate(
            msg["params"]["protocolVersion"].as_str(),
            &info.protocol_version
        ));
        Outcome::Reply(jsonrpc::result(msg["id"].clone(), result))
    }

    /// docs/contracts.md "Bridge endpoints": ready iff the child runs, its handshake is done, the
    /// breaker is closed, it spoke recently or answers a ping within 2 s, and nothing hangs.
    pub async fn readiness(&self) -> (bool, Value) {
        if self.draining.load(Ordering::Relaxed) {
            return (false, json!({"ready": false, "reason": "draining"}));
        }
        let Some(up) = &self.shared else {
            let p = self.probe.lock_ignore_poison();
            let fresh =
                p.at.is_some_and(|at| at.elapsed() <= self.cfg.ready_stale * 2);
            let ready = p.ok && fresh;
            let reason = if p.at.is_none() {
                "spawn probe not run yet".to_string()
            } else if !fresh {
                "spawn probe is stale".to_string()
            } else {
                p.detail.clone()
            };
            return (
                ready,
                json!({"ready": ready, "mode": "per_session", "child_era": "legacy", "reason": reason, "sessions": self.session_count()}),
            );
        };
        let status = up.status();
        let era = up.era().map(stats::Era::label);
        let base = |ready: bool, reason: String| {
            json!({"ready": ready, "mode": "shared", "reason": reason, "child": status.label(),
                   "child_era": era,
                   "sessions": self.session_count(), "restarts": up.restarts.load(Ordering::Relaxed),
                   "pending": up.pending_count()})
        };
        match &status {
            Status::Ready => {}
            Status::Starting => return (false, base(false, "child starting".into())),
            Status::Down { reason } | Status::BreakerOpen { reason } => {
                return (false, base(false, reason.clone()))
            }
            Status::Stopped => return (false, base(false, "stopped".into())),
        }
        if let Some(oldest) = up.stalled(self.cfg.hung_after) {
            return (
                false,
                base(
                    false,
                    format!(
                        "hung: a request has waited {}s with no output from the child",
                        oldest.as_secs()
                    ),
                ),
            );
        }
        let silent = up.since_last_output();
        if silent > self.cfg.ready_stale && !up.answers_ping(child::HUNG_PING_TIMEOUT).await {
            return (
                false,
                base(
                    false,
                    format!(
                        "child silent for {}s and did not answer a {} within 2s",
                        silent.as_secs(),
                        match up.era() {
                            Some(stats::Era::Modern) => "server/discover",
                            _ => "ping",
                        }
                    ),
                ),
            );
        }
        (true, base(true, "ok".into()))
    }

    /// Per-session mode: start the command now and then, handshake, stop it; readiness reports the
    /// cached outcome so a probe never costs a process.
    pub async fn run_spawn_probe(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            let up = Upstream::new(
                false,
                None,
                Arc::new(|_| {}),
                self.stats.clone(),
                self.cfg.tools.clone(),
            );
            let outcome = match child::spawn(&self.cfg.child, &up, &self.stats) {
                Err(e) => Err(format!("cannot start {:?}: {e}", self.cfg.child.program)),
                Ok(mut running) => {
                    let r = child::handshake(&up, &mut running, self.cfg.child.init_timeout).await;
                    if r.is_ok() {
                        child::prefetch_tools(&up, self.cfg.child.init_timeout).await;
                        if let Some(schemas) = up.tool_schemas() {
                            *self.probe_schemas.lock_ignore_poison() = Some(schemas);
                        }
                    }
                    running.kill().await;
                    r.map(|info| info.protocol_version)
                }
            };
            let ok = outcome.is_ok();
            self.stats.child_up.store(i64::from(ok), Ordering::Relaxed);
            {
                let mut p = self.probe.lock_ignore_poison();
                p.ok = ok;
                p.detail = match outcome {
                    Ok(v) => format!("spawn probe ok (protocol {v})"),
                    Err(e) => format!("spawn probe failed: {e}"),
                };
                p.at = Some(Instant::now());
            }
            failures = if ok { 0 } else { failures + 1 };
            let wait = if ok {
                self.cfg.ready_stale
            } else {
                Duration::from_millis(500 * u64::from(failures.min(20)))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Close sessions idle longer than the timeout (never one with an open stream or a call in flight).
    pub async fn run_reaper(self: Arc<Self>) {
        let every =
            (self.cfg.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let sessions: Vec<Arc<Session>> = self.table().values().cloned().collect();
            let mut oldest = Duration::ZERO;
            for s in sessions {
                if s.expired(self.cfg.idle_timeout) {
                    self.close_session(&s.id, CloseReason::IdleExpired);
                } else {
                    oldest = oldest.max(s.created.elapsed());
                }
            }
            self.stats
                .session_oldest_ms
                .store(oldest.as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// Drain ran out of time: give every caller still waiting a JSON-RPC error rather than a
    /// dropped connection, then wait briefly for those answers to be written.
    pub async fn fail_in_flight(&self) {
        let mut ups: Vec<Arc<Upstream>> =
            self.table().values().map(|s| s.upstream.clone()).collect();
        ups.extend(self.shared.clone());
        for up in ups {
            up.fail_all(
                jsonrpc::CHILD_UNAVAILABLE,
                "bridge is shutting down; the request was not completed",
            );
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.stats.requests_in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn close_all(&self, reason: CloseReason) {
        let ids: Vec<SessionId> = self.table().keys().cloned().collect();
        for id in ids {
            self.close_session(&id, reason);
        }
    }
}

fn sink(app: Weak<App>) -> Sink {
    Arc::new(move |route| {
        if let Some(app) = app.upgrade() {
            app.route(route);
        }
    })
}

/// How long a frame may wait for room in a stream whose client stopped reading before the
/// session is closed as a slow consumer.
const SLOW_CONSUMER_AFTER: Duration = Duration::from_secs(10);

/// Forward a call's deliveries as SSE frames until its response; stop early if the stream or the
/// session goes away (dropping the call then cancels it at the child). A client that leaves the
/// stream full for [`SLOW_CONSUMER_AFTER`], or whose waiting frames no longer fit the in-flight
/// byte budget, has its session closed.
pub async fn pump(mut call: Call, out: sse::Frames, session: Arc<Session>, app: Arc<App>) {
    loop {
        let d = tokio::select! {
            // Deliveries first: a response already queued must go out even if the session is
            // closing at the same moment (e.g. its per-session child just exited).
            biased;
            d = call.recv() => d,
            _ = out.closed() => return,
            _ = session.closed.cancelled() => return,
        };
        let (msg, last) = match d {
            Some(super::upstream::Delivery::Notification(m)) if !session.wants(&m) => continue,
            Some(super::upstream::Delivery::Notification(m)) => (m, false),
            Some(super::upstream::Delivery::Response(m)) => (m, true),
            None => return,
        };
        let frame = sse::message(&msg);
        drop(msg);
        let frame = match out.try_send(frame) {
            Ok(()) => None,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
            Err(tokio::sync::mpsc::error::TrySendError::Full(frame)) => Some(frame),
        };
        if let Some(frame) = frame {
            // The client is behind: the frame waits in memory, so it takes a share of the same
            // budget request bodies use. No share left: the client is closed now, not in 10 s,
            // so clients that ask for big answers and never read cannot exhaust memory together.
            let Some(_held) = app.budget.try_charge(frame.len()) else {
                app.close_slow(&session);
                return;
            };
            match tokio::time::timeout(SLOW_CONSUMER_AFTER, out.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    app.close_slow(&session);
                    return;
                }
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Arc<App> {
        let secs = Duration::from_secs;
        App::new(Config {
            child: ChildSpec {
                program: "unused".into(),
                args: vec![],
                env: vec![],
                init_timeout: secs(1),
                hung_after: secs(60),
                era: Default::default(),
            },
            model: SessionModel::Shared,
            keepalive: secs(15),
            idle_timeout: secs(60),
            ready_stale: secs(30),
            hung_after: secs(60),
            drain_timeout: secs(1),
            token: None,
            allow_origins: vec![],
            allow_hosts: vec![],
            rate_limit: None,
            max_body: 4 << 20,
            json_limits: Default::default(),
            inflight_budget: 16 << 20,
            max_sessions: 3,
            validate_args: true,
            tools: Arc::new(ToolPolicy::Deny(["hidden".to_string()].into())),
            access: None,
            service: "test".into(),
            audit_arguments: false,
        })
    }

    fn age(s: &Session, by: Duration) {
        *s.last_active.lock().unwrap() = Instant::now() - by;
    }

    #[tokio::test]
    async fn idle_expiry_spares_open_streams_and_calls_in_flight() {
        let app = app();
        let s = app.open_session(Transport::Sse, "t".into()).await.unwrap();
        age(&s, Duration::from_secs(120));
        assert!(s.expired(Duration::from_secs(60)));
        let guard = s.stream_guard();
        age(&s, Duration::from_secs(120));
        assert!(
            !s.expired(Duration::from_secs(60)),
            "an open SSE stream keeps its session"
        );
        drop(guard);
        assert!(
            !s.expired(Duration::from_secs(60)),
            "closing the stream is activity"
        );
        let f = InFlight::new(&app.stats, &s);
        age(&s, Duration::from_secs(120));
        assert!(
            !s.expired(Duration::from_secs(60)),
            "a call in flight keeps its session"
        );
        drop(f);
        assert_eq!(app.stats.requests_in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_hidden_tool_is_refused_by_the_bridge_and_counted() {
        let app = app();
        let s = app
            .open_session(Transport::StreamableHttp, "t".into())
            .await
            .unwrap();
        // No child is attached: an answer can only come from the bridge itself.
        let call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "hidden", "arguments": {}}});
        let Outcome::Reply(v) = app.handle(&s, call).await else {
            panic!("refused in the bridge");
        };
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], jsonrpc::INVALID_PARAMS);
        assert_eq!(
            v["error"]["message"],
            "tool `hidden` is not allowed on this service (manifest `tools` policy)"
        );
        assert_eq!(app.stats.denied_label("hidden"), "hidden");
        let text = crate::metrics::encode(&app.stats.registry(true)).unwrap();
        assert!(
            text.contains("mcp_bridge_tool_denied_total{tool=\"hidden\"} 1\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn shared_sessions_share_one_upstream_and_closing_is_counted_once() {
        let app = app();
        let a = app.open_session(Transport::Sse, "t".into()).await.unwrap();
        let b = app
            .open_session(Transport::StreamableHttp, "t".into())
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&a.upstream, &b.upstream));
        assert_ne!(a.id, b.id);
        assert_eq!(app.session_count(), 2);
        app.close_session(&a.id, CloseReason::Deleted);
        app.close_session(&a.id, CloseReason::Deleted);
        assert!(a.closed.is_cancelled());
        assert!(app.session(&a.id).is_none());
        assert_eq!(
            app.stats.sessions_closed[0][CloseReason::Deleted as usize].load(Ordering::Relaxed),
            1
        );
        assert_eq!(app.stats.sessions_active[0].load(Ordering::Relaxed), 0);
        assert_eq!(app.stats.sessions_active[1].load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn broadcast_reaches_every_session_and_log_level_filters_per_session() {
        let app = app();
        let a = app.open_session(Transport::Sse, "t".into()).await.unwrap();
        let b = app.open_session(Transport::Sse, "t".into()).await.unwrap();
        let (ta, mut ra) = mpsc::channel(8);
        let (tb, mut rb) = mpsc::channel(8);
        a.set_outbound(Some(ta));
        b.set_outbound(Some(tb));
        *b.log_level.lock().unwrap() = jsonrpc::level_rank("error");
        app.route(Route::Broadcast(
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        ));
        let info = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}});
        app.route(Route::Session(a.id.clone(), info.clone()));
        app.route(Route::Session(b.id.clone(), info));
        assert!(std::str::from_utf8(&ra.try_recv().unwrap())
            .unwrap()
            .contains("list_changed"));
        assert!(std::str::from_utf8(&ra.try_recv().unwrap())
            .unwrap()
            .contains("notifications/message"));
        assert!(std::str::from_utf8(&rb.try_recv().unwrap())
            .unwrap()
            .contains("list_changed"));
        assert!(rb.try_recv().is_err(), "info is below b's level");
    }
}
