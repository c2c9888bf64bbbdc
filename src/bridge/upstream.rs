//! One connection to a stdio MCP child: request-id and progress-token remapping, routing of what
//! the child sends, and the child's status as seen by callers and readiness.
//!
//! Owns: the pending-request table (child-side id → session, original id, reply channel), the cached
//! handshake and `tools/list`, and the shared-child rules of docs/contracts.md for what the child
//! sends unasked. Must not: spawn or kill processes (`child` does), or know about HTTP (`http` does).
//!
//! Every request the bridge forwards gets a fresh child-side integer id, and any `progressToken` in it
//! becomes `mcpctl-<that id>`, so twenty sessions that all use ids 1..200 and the same tokens never
//! collide at the child, and each reply or progress notification finds its way back to exactly one
//! caller. The same remapping runs in per-session mode (harmless, one code path).
//!
//! A modern (2026-07-28) child, served natively, follows the same rules, plus one: a
//! `subscriptions/listen` is a long-lived request, and the child tags every notification of that
//! subscription (and its closing result) with `_meta["io.modelcontextprotocol/subscriptionId"]`,
//! the listen request's id, which is the child-side id here: such a notification goes to that
//! request's caller with the subscription id put back to the caller's own id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::jsonrpc::{self, Kind};
use super::policy::ToolPolicy;
use super::stats::{Era, Stats};
use crate::locks::MutexExt;

pub type SessionId = Arc<str>;

const TOKEN_PREFIX: &str = "mcpctl-";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// Bytes that may wait in a child's stdin queue. A child that stops reading its input (stopped,
/// deadlocked, busy) makes new requests fail at once with "not reading its input" instead of
/// growing the queue until the container is OOM-killed; the hang watchdog then replaces it.
pub const STDIN_QUEUE_MAX: usize = 8 << 20;

/// The sending half of a child's stdin queue, bounded in bytes (see [`STDIN_QUEUE_MAX`]).
#[derive(Clone)]
pub struct StdinWriter {
    // Unbounded as a channel, bounded in bytes: every `send` goes through the `queued` check.
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// The receiving half, held by the task that writes to the child's stdin.
pub struct StdinReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

pub enum StdinError {
    /// The writer task ended: the child is going away.
    Closed,
    /// The queue holds this many bytes already.
    Full(usize),
}

pub fn stdin_queue() -> (StdinWriter, StdinReader) {
    // Bounded by `StdinWriter::send` (bytes), not by the channel: lines vary from bytes to MBs.
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        StdinWriter {
            tx,
            queued: queued.clone(),
        },
        StdinReader { rx, queued },
    )
}

impl StdinWriter {
    /// Queue `line`, or refuse when the queue would pass [`STDIN_QUEUE_MAX`] (a queue that is
    /// empty always takes one line, however long: the body limit bounds it).
    pub fn send(&self, line: Bytes) -> Result<(), StdinError> {
        let len = line.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > STDIN_QUEUE_MAX {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(StdinError::Full(before));
        }
        self.tx.send(line).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            StdinError::Closed
        })
    }
}

impl StdinReader {
    /// The next line to write; call [`StdinReader::written`] once it is written.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Where a message the child sent unasked should go (decided here, delivered by the session table).
pub enum Route {
    Session(SessionId, Value),
    Broadcast(Value),
}
pub type Sink = Arc<dyn Fn(Route) + Send + Sync>;

/// What a caller receives for one request: notifications that belong to it, then its response.
#[derive(Debug)]
pub enum Delivery {
    Notification(Value),
    Response(Value),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Starting,
    Ready,
    Down { reason: String },
    BreakerOpen { reason: String },
    Stopped,
}

#[derive(Debug)]
pub struct InitInfo {
    pub protocol_version: String,
    /// The child's InitializeResult, answered (with the per-client version) to every session.
    pub result: Value,
}

/// Notifications (progress, logs) that may wait for one caller. The child's stdout reader must
/// never block (it serves every session), so the per-call channel is unbounded and this count
/// bounds it: beyond it notifications for that call are dropped (they are advisory); the one
/// response always gets through.
pub const MAX_QUEUED_NOTIFICATIONS: usize = 256;

struct Pending {
    session: Option<SessionId>,
    orig_id: Value,
    orig_token: Option<Value>,
    /// Unbounded, bounded by `queued_notes` (see [`MAX_QUEUED_NOTIFICATIONS`]) + one response.
    tx: mpsc::UnboundedSender<Delivery>,
    /// Notifications sent on `tx` and not yet received by the caller.
    queued_notes: Arc<AtomicUsize>,
    sent_at: Instant,
    generation: u64,
    /// Set for a cacheable tools/list: the cache epoch it was sent in (a list_changed since voids it).
    tools_epoch: Option<u64>,
    /// A tools/list (any page): its result is filtered by the tool policy before anyone sees it.
    tools_list: bool,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    generation: u64,
    writer: Option<StdinWriter>,
    pending: HashMap<u64, Pending>,
    init: Option<Arc<InitInfo>>,
    tools_cache: Option<Value>,
    tools_epoch: u64,
    /// `inputSchema` by tool name, from the cached tools/list (voided with it).
    tool_schemas: Option<Arc<ToolSchemas>>,
}

/// Tool name → its `inputSchema`, for validating `tools/call` arguments in the bridge.
pub type ToolSchemas = HashMap<String, Arc<Value>>;

/// The schemas of a tools/list result (tools without an object `inputSchema` are left out).
pub fn tool_schemas(result: &Value) -> ToolSchemas {
    result["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    let name = t["name"].as_str()?;
                    let schema = t.get("inputSchema").filter(|s| s.is_object())?;
                    Some((name.to_string(), Arc::new(schema.clone())))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub struct Upstream {
    /// Shared mode: one child for all sessions (server requests refused, notifications routed).
    /// Otherwise the child belongs to `owner` and everything it sends goes there.
    shared: bool,
    owner: Option<SessionId>,
    sink: Sink,
    stats: Arc<Stats>,
    /// Tools hidden from clients: removed from every tools/list result before it is cached.
    policy: Arc<ToolPolicy>,
    epoch: Instant,
    last_output_ms: AtomicI64,
    status: watch::Sender<Status>,
    /// The child's era, once known (`probe`); `None` while the probe runs.
    era: watch::Sender<Option<Era>>,
    inner: Mutex<Inner>,
    pub restarts: AtomicU64,
}

#[derive(Debug)]
pub struct CallError {
    pub code: i64,
    pub message: String,
}

impl CallError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn to_response(&self, id: Value) -> Value {
        jsonrpc::error(id, self.code, self.message.clone())
    }
}

/// A forwarded request in flight. Dropping it before the response arrived cancels the request at
/// the child (`notifications/cancelled`), which is how a client that went away is handled.
pub struct CallHandle {
    upstream: Arc<Upstream>,
    child_id: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
    queued_notes: Arc<AtomicUsize>,
    done: bool,
}

impl Pending {
    /// Queue a notification for this caller, unless [`MAX_QUEUED_NOTIFICATIONS`] wait already.
    fn notify(&self, msg: Value) {
        if self.queued_notes.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_NOTIFICATIONS {
            self.queued_notes.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(method = %jsonrpc::method(&msg), "caller is behind on notifications; dropped");
            return;
        }
        if self.tx.send(Delivery::Notification(msg)).is_err() {
            self.queued_notes.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl CallHandle {
    /// The next delivery; `None` when the request was cancelled or the child's table was reset.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let d = self.rx.recv().await;
        match d {
            Some(Delivery::Notification(_)) => {
                self.queued_notes.fetch_sub(1, Ordering::AcqRel);
            }
            Some(Delivery::Response(_)) | None => self.done = true,
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

impl Drop for CallHandle {
    fn drop(&mut self) {
        if !self.done {
            self.upstream
                .cancel_child_id(self.child_id, "client disconnected");
        }
    }
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Ready => "ready",
            Status::Down { .. } => "down",
            Status::BreakerOpen { .. } => "breaker_open",
            Status::Stopped => "stopped",
        }
    }
}

impl Upstream {
    pub fn new(
        shared: bool,
        owner: Option<SessionId>,
        sink: Sink,
        stats: Arc<Stats>,
        policy: Arc<ToolPolicy>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared,
            owner,
            sink,
            stats,
            policy,
            epoch: Instant::now(),
            last_output_ms: AtomicI64::new(0),
            status: watch::Sender::new(Status::Starting),
            era: watch::Sender::new(None),
            inner: Mutex::new(Inner::default()),
            restarts: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_ignore_poison()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }
    pub fn set_status(&self, s: Status) {
        if self.shared {
            self.stats
                .child_up
                .store(i64::from(s == Status::Ready), Ordering::Relaxed);
        }
        self.status.send_replace(s);
    }
    /// The era the child speaks, once known.
    pub fn era(&self) -> Option<Era> {
        *self.era.borrow()
    }
    pub fn set_era(&self, era: Era) {
        if self.shared {
            self.stats.set_child_era(era);
        }
        self.era.send_replace(Some(era));
    }
    /// Wait (bounded) until the child's era is known.
    pub async fn wait_era(&self, timeout: Duration) -> Option<Era> {
        let mut rx = self.era.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        let era = *rx.borrow();
        era
    }
    /// The versions a modern child named in its `server/discover` result (empty until known).
    pub fn supported_versions(&self) -> Vec<String> {
        self.init_info()
            .and_then(|i| {
                i.result["supportedVersions"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
            })
            .unwrap_or_default()
    }
    pub fn init_info(&self) -> Option<Arc<InitInfo>> {
        self.lock().init.clone()
    }
    pub fn set_init(&self, info: InitInfo) {
        self.lock().init = Some(Arc::new(info));
    }
    pub fn cached_tools(&self) -> Option<Value> {
        self.lock().tools_cache.clone()
    }
    /// The `inputSchema` of `tool` from the cached tools/list, if known.
    pub fn tool_schema(&self, tool: &str) -> Option<Arc<Value>> {
        self.lock().tool_schemas.as_ref()?.get(tool).cloned()
    }
    pub fn tool_schemas(&self) -> Option<Arc<ToolSchemas>> {
        self.lock().tool_schemas.clone()
    }
    pub fn since_last_output(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as i64;
        Duration::from_millis((now - self.last_output_ms.load(Ordering::Relaxed)).max(0) as u64)
    }
    /// Age of the oldest request still waiting at the child (internal requests included).
    pub fn oldest_pending(&self) -> Option<Duration> {
        let g = self.lock();
        g.pending
            .values()
            .filter(|p| p.generation == g.generation)
            .map(|p| p.sent_at.elapsed())
            .max()
    }
    /// How long the oldest request has waited, when both that and the child's silence exceed
    /// `after` (the "hung" condition of readiness and of the hang watchdog).
    pub fn stalled(&self, after: Duration) -> Option<Duration> {
        let oldest = self.oldest_pending()?;
        (oldest > after && self.since_last_output() > after).then_some(oldest)
    }

    /// Whether the child answers a `ping` (a modern child: `server/discover` with the modern
    /// `_meta`, since 2026-07-28 removed `ping`) within `timeout`. Any answer counts (a server
    /// without `ping` still answers −32601); an error the bridge made up because the child died
    /// does not, hence the status check.
    pub async fn answers_ping(self: &Arc<Self>, timeout: Duration) -> bool {
        let ping = match self.era() {
            Some(Era::Modern) => super::probe::discover_request(0),
            _ => json!({"jsonrpc": "2.0", "id": 0, "method": "ping"}),
        };
        match self.send_request(None, ping, false) {
            Ok(mut h) => {
                matches!(
                    tokio::time::timeout(timeout, h.response()).await,
                    Ok(Some(_))
                ) && self.status() == Status::Ready
            }
            Err(_) => false,
        }
    }

    pub fn pending_count(&self) -> usize {
        self.lock().pending.len()
    }

    /// A new child process is connected: its stdin is `writer`. Returns the generation number that
    /// `on_line` and `detach` must quote, so late output of a dead child is ignored.
    pub fn attach(&self, writer: StdinWriter) -> u64 {
        let mut g = self.lock();
        g.generation += 1;
        g.writer = Some(writer);
        g.init = None;
        g.tools_cache = None;
        g.tool_schemas = None;
        g.tools_epoch += 1;
        self.last_output_ms
            .store(self.epoch.elapsed().as_millis() as i64, Ordering::Relaxed);
        g.generation
    }

    /// The child of `generation` is gone: every caller still waiting gets an error now.
    pub fn detach(&self, generation: u64, reason: &str) {
        let failed: Vec<Pending> = {
            let mut g = self.lock();
            if g.generation != generation {
                return;
            }
            g.writer = None;
            g.init = None;
            g.tools_cache = None;
            g.tool_schemas = None;
            g.pending.drain().map(|(_, p)| p).collect()
        };
        for p in failed {
            let msg = format!("MCP server process {reason}; the request was not completed");
            let _ = p.tx.send(Delivery::Response(jsonrpc::error(
                p.orig_id,
                jsonrpc::CHILD_EXITED,
                msg,
            )));
        }
    }

    /// Answer everything still waiting with an error (the bridge is stopping and will not wait
    /// longer); the child keeps running until it is killed.
    pub fn fail_all(&self, code: i64, message: &str) {
        let failed: Vec<Pending> = self.lock().pending.drain().map(|(_, p)| p).collect();
        for p in failed {
            let _ =
                p.tx.send(Delivery::Response(jsonrpc::error(p.orig_id, code, message)));
        }
    }

    /// Wait (bounded) until the child is ready; errors at once when it is down.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), CallError> {
        let mut rx = self.status.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match &*rx.borrow_and_update() {
                Status::Ready => return Ok(()),
                Status::Starting => {}
                Status::Down { reason } | Status::BreakerOpen { reason } => {
                    return Err(CallError::new(
                        jsonrpc::CHILD_UNAVAILABLE,
                        format!("MCP server unavailable: {reason}"),
                    ))
                }
                Status::Stopped => {
                    return Err(CallError::new(
                        jsonrpc::CHILD_UNAVAILABLE,
                        "bridge is shutting down",
                    ))
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(CallError::new(
                    jsonrpc::CHILD_UNAVAILABLE,
                    "MCP server is still starting",
                ));
            }
        }
    }

    /// Forward a request (already known to be a request) to the child.
    /// `cache_tools`: remember the result as the tools/list cache.
    pub fn send_request(
        self: &Arc<Self>,
        session: Option<SessionId>,
        mut msg: Value,
        cache_tools: bool,
    ) -> Result<CallHandle, CallError> {
        // Unbounded as a channel, bounded in use: at most MAX_QUEUED_NOTIFICATIONS notifications
        // (counted in `queued_notes`; beyond, a notification is dropped) and one response per request (`Pending::notify`).
        let (tx, rx) = mpsc::unbounded_channel();
        let queued_notes = Arc::new(AtomicUsize::new(0));
        let tools_list = jsonrpc::method(&msg) == "tools/list";
        let (child_id, writer) = {
            let mut g = self.lock();
            let Some(writer) = g.writer.clone() else {
                return Err(CallError::new(
                    jsonrpc::CHILD_UNAVAILABLE,
                    "MCP server is not running",
                ));
            };
            g.next_id += 1;
            let child_id = g.next_id;
            let orig_id = std::mem::replace(&mut msg["id"], json!(child_id));
            let mut orig_token = None;
            if let Some(meta) = msg
                .get_mut("params")
                .and_then(|p| p.get_mut("_meta"))
                .and_then(Value::as_object_mut)
            {
                if let Some(tok) = meta.get_mut("progressToken") {
                    orig_token = Some(std::mem::replace(
                        tok,
                        json!(format!("{TOKEN_PREFIX}{child_id}")),
                    ));
                }
            }
            let tools_epoch = cache_tools.then_some(g.tools_epoch);
            let generation = g.generation;
            g.pending.insert(
                child_id,
                Pending {
                    session,
                    orig_id,
                    orig_token,
                    tx,
                    queued_notes: queued_notes.clone(),
                    sent_at: Instant::now(),
                    generation,
                    tools_epoch,
                    tools_list,
                },
            );
            (child_id, writer)
        };
        let handle = CallHandle {
            upstream: self.clone(),
            child_id,
            rx,
            queued_notes,
            done: false,
        };
        match writer.send(line(&msg)) {
            Ok(()) => Ok(handle),
            // The writer ended between our check and now: the child is going away.
            Err(StdinError::Closed) => Err(CallError::new(
                jsonrpc::CHILD_EXITED,
                "MCP server process exited",
            )),
            // Dropping `handle` forgets the pending entry (and tells the child nothing: the
            // request never reached it).
            Err(StdinError::Full(queued)) => Err(CallError::new(
                jsonrpc::CHILD_UNAVAILABLE,
                format!(
                    "MCP server is not reading its input ({queued} bytes waiting); retry later"
                ),
            )),
        }
    }

    /// Send a notification (or a client's response, in per-session mode) to the child as is.
    pub fn send_raw(&self, msg: &Value) {
        if let Some(w) = self.lock().writer.clone() {
            if let Err(StdinError::Full(queued)) = w.send(line(msg)) {
                tracing::warn!(queued, method = %jsonrpc::method(msg), "child is not reading its input; message dropped");
            }
        }
    }

    /// The client cancelled one of its requests: forward with the child-side id and stop waiting.
    pub fn client_cancelled(&self, session: &SessionId, mut msg: Value) {
        let Some(req) = msg.get("params").and_then(|p| p.get("requestId")).cloned() else {
            return;
        };
        let found = {
            let mut g = self.lock();
            let id = g
                .pending
                .iter()
                .find(|(_, p)| p.session.as_ref() == Some(session) && p.orig_id == req)
                .map(|(id, _)| *id);
            id.and_then(|id| g.pending.remove(&id).map(|_| id))
        };
        if let Some(id) = found {
            msg["params"]["requestId"] = json!(id);
            self.send_raw(&msg);
        }
    }

    fn cancel_child_id(&self, child_id: u64, reason: &str) {
        let was_pending = self.lock().pending.remove(&child_id).is_some();
        if was_pending {
            self.send_raw(
                &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": child_id, "reason": reason}}),
            );
        }
    }

    /// Cancel everything `session` still waits for (the session is closing).
    pub fn cancel_session(&self, session: &SessionId, reason: &str) {
        let ids: Vec<u64> = self
            .lock()
            .pending
            .iter()
            .filter(|(_, p)| p.session.as_ref() == Some(session))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.cancel_child_id(id, reason);
        }
    }

    /// One line from the child's stdout (without the newline).
    pub fn on_line(&self, generation: u64, raw: &[u8]) {
        self.last_output_ms
            .store(self.epoch.elapsed().as_millis() as i64, Ordering::Relaxed);
        let msg: Value = match serde_json::from_slice(raw) {
            Ok(v) => v,
            Err(_) => {
                let n = self
                    .stats
                    .stdout_lines_skipped
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                // Log the first few, then every 1000th: a chatty child must not flood the logs.
                if n <= 20 || n % 1000 == 0 {
                    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
                    tracing::warn!(line = %shown, len = raw.len(), skipped_total = n, "child wrote a non-JSON line to stdout; skipped");
                }
                return;
            }
        };
        if self.lock().generation != generation {
            return;
        }
        match jsonrpc::kind(&msg) {
            Kind::Response => self.on_response(msg),
            Kind::Request => self.on_server_request(msg),
            Kind::Notification => self.on_notification(msg),
            Kind::Invalid => tracing::warn!("child wrote an invalid JSON-RPC message; skipped"),
        }
    }

    fn on_response(&self, mut msg: Value) {
        let Some(id) = msg["id"].as_u64() else {
            tracing::debug!(id = %msg["id"], "response with an id the bridge never sent; dropped");
            return;
        };
        let Some(p) = ({
            let mut g = self.lock();
            let p = g.pending.remove(&id);
            if let Some(p) = &p {
                if p.tools_list {
                    if let Some(result) = msg.get_mut("result") {
                        let hidden = self.policy.filter_list(result);
                        self.stats.tools_hidden(&hidden);
                    }
                }
                if p.tools_epoch == Some(g.tools_epoch) && msg.get("result").is_some() {
                    let result = msg["result"].clone();
                    let schemas = tool_schemas(&result);
                    self.stats.set_tools(
                        result["tools"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t["name"].as_str()),
                    );
                    g.tools_cache = Some(result);
                    g.tool_schemas = Some(Arc::new(schemas));
                }
            }
            p
        }) else {
            return; // cancelled meanwhile: the caller is gone
        };
        // The closing result of a native `subscriptions/listen` names its subscription.
        if let Some(sub) = msg
            .get_mut("result")
            .and_then(|r| r.get_mut("_meta"))
            .and_then(|m| m.get_mut(META_SUBSCRIPTION))
        {
            if sub.as_u64() == Some(id) {
                *sub = p.orig_id.clone();
            }
        }
        msg["id"] = p.orig_id;
        let _ = p.tx.send(Delivery::Response(msg));
    }

    fn on_server_request(&self, msg: Value) {
        if !self.shared {
            if let Some(owner) = &self.owner {
                (self.sink)(Route::Session(owner.clone(), msg));
            }
            return;
        }
        // Shared child: no session can answer for the others, so the bridge does (contract).
        let id = msg["id"].clone();
        let reply = if jsonrpc::method(&msg) == "ping" {
            jsonrpc::result(id, json!({}))
        } else {
            jsonrpc::error(
                id,
                jsonrpc::METHOD_NOT_FOUND,
                "not supported by a shared bridge: the child is shared by many clients",
            )
        };
        self.send_raw(&reply);
    }

    fn on_notification(&self, mut msg: Value) {
        let method = jsonrpc::method(&msg).to_string();
        if method == "notifications/tools/list_changed" {
            let mut g = self.lock();
            g.tools_epoch += 1;
            g.tools_cache = None;
            g.tool_schemas = None;
        }
        // A notification of a native `subscriptions/listen` (modern child): to that listener.
        let sub = msg
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_SUBSCRIPTION))
            .and_then(Value::as_u64);
        if let Some(sub) = sub {
            let g = self.lock();
            if let Some(p) = g.pending.get(&sub) {
                msg["params"]["_meta"][META_SUBSCRIPTION] = p.orig_id.clone();
                p.notify(msg);
                return;
            }
            // Its listener is gone (the child has not yet seen the cancellation).
            tracing::debug!(%method, sub, "notification of a closed subscription; dropped");
            return;
        }
        if method == "notifications/progress" {
            let token = msg["params"]["progressToken"]
                .as_str()
                .and_then(|t| t.strip_prefix(TOKEN_PREFIX))
                .and_then(|t| t.parse::<u64>().ok());
            let g = self.lock();
            if let Some(p) = token.and_then(|t| g.pending.get(&t)) {
                msg["params"]["progressToken"] = p.orig_token.clone().unwrap_or(Value::Null);
                p.notify(msg);
            }
            return;
        }
        if method.ends_with("/list_changed") {
            match (&self.owner, self.shared) {
                (Some(owner), false) => (self.sink)(Route::Session(owner.clone(), msg)),
                _ => (self.sink)(Route::Broadcast(msg)),
            }
            return;
        }
        if !self.shared {
            if let Some(owner) = &self.owner {
                (self.sink)(Route::Session(owner.clone(), msg));
            }
            return;
        }
        if method == "notifications/cancelled" {
            return; // cancels a server request we already refused
        }
        // Other notifications carry no owner. They go to the one request in flight, or the one
        // session with requests in flight; when that is ambiguous they are dropped rather than
        // shown to a client they do not belong to.
        let g = self.lock();
        let mut owners = g.pending.values().filter(|p| p.session.is_some());
        let Some(first) = owners.next() else {
            tracing::debug!(%method, "notification with no session waiting; dropped");
            return;
        };
        let rest: Vec<&Pending> = owners.collect();
        if rest.is_empty() {
            first.notify(msg);
        } else if rest.iter().all(|p| p.session == first.session) {
            (self.sink)(Route::Session(
                first.session.clone().expect("filtered"),
                msg,
            ));
        } else {
            tracing::debug!(%method, "notification owner ambiguous (several sessions waiting); dropped");
        }
    }
}

fn line(msg: &Value) -> Bytes {
    let mut v = serde_json::to_vec(msg).expect("a Value always serialises");
    v.push(b'\n');
    Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(shared: bool) -> (Arc<Upstream>, StdinReader, Arc<Mutex<Vec<String>>>) {
        let routed = Arc::new(Mutex::new(Vec::new()));
        let r = routed.clone();
        let sink: Sink = Arc::new(move |route| {
            let s = match route {
                Route::Session(sid, m) => format!("{sid}:{}", m["method"]),
                Route::Broadcast(m) => format!("*:{}", m["method"]),
            };
            r.lock().unwrap().push(s);
        });
        let up = Upstream::new(
            shared,
            if shared { None } else { Some("solo".into()) },
            sink,
            Arc::new(Stats::default()),
            Arc::new(ToolPolicy::Deny(["hidden".to_string()].into())),
        );
        let (tx, rx) = stdin_queue();
        up.attach(tx);
        (up, rx, routed)
    }

    fn sent(rx: &mut StdinReader) -> Value {
        let line = rx.rx.try_recv().expect("a line to the child");
        rx.written(line.len());
        serde_json::from_slice(&line).unwrap()
    }

    #[tokio::test]
    async fn a_caller_that_is_behind_keeps_at_most_the_bound_of_notifications_and_its_response() {
        let (up, mut rx, _) = upstream(true);
        let req = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p","_meta":{"progressToken":"t"}}});
        let mut call = up.send_request(Some("a".into()), req, false).unwrap();
        let sent_req = sent(&mut rx);
        let token = sent_req["params"]["_meta"]["progressToken"].clone();
        let generation = up.lock().generation;
        for i in 0..(MAX_QUEUED_NOTIFICATIONS + 100) {
            let note = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken": token, "progress": i}});
            up.on_line(generation, note.to_string().as_bytes());
        }
        let reply = json!({"jsonrpc":"2.0","id": sent_req["id"],"result":{}});
        up.on_line(generation, reply.to_string().as_bytes());
        let mut notes = 0;
        loop {
            match call.recv().await {
                Some(Delivery::Notification(_)) => notes += 1,
                Some(Delivery::Response(r)) => {
                    assert_eq!(r["id"], 1);
                    break;
                }
                None => panic!("no response"),
            }
        }
        assert_eq!(notes, MAX_QUEUED_NOTIFICATIONS);
    }

    #[tokio::test]
    async fn a_child_that_stops_reading_makes_new_requests_fail_fast() {
        let (up, mut rx, _) = upstream(true);
        let big = "x".repeat(3 << 20);
        let call = |n: u64| json!({"jsonrpc":"2.0","id":n,"method":"tools/call","params":{"name":"echo","arguments":{"text": big}}});
        // Nobody writes to the child: the queue fills up to its bound, then requests are refused.
        let mut held = vec![];
        for n in 0..2 {
            held.push(
                up.send_request(Some("a".into()), call(n), false)
                    .expect("fits"),
            );
        }
        let refused = up.send_request(Some("a".into()), call(9), false);
        let err = refused.err().expect("refused");
        assert_eq!(err.code, jsonrpc::CHILD_UNAVAILABLE);
        assert!(
            err.message.contains("not reading its input"),
            "{}",
            err.message
        );
        assert_eq!(up.pending_count(), 2, "the refused request is not pending");
        // Once the child reads again, there is room.
        sent(&mut rx);
        assert!(up.send_request(Some("a".into()), call(10), false).is_ok());
    }

    #[tokio::test]
    async fn same_ids_and_tokens_from_two_sessions_stay_apart() {
        let (up, mut rx, _) = upstream(true);
        let req = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"p","_meta":{"progressToken":7}}});
        let mut a = up
            .send_request(Some("a".into()), req.clone(), false)
            .unwrap();
        let mut b = up.send_request(Some("b".into()), req, false).unwrap();
        let (ma, mb) = (sent(&mut rx), sent(&mut rx));
        assert_ne!(ma["id"], mb["id"]);
        assert_ne!(
            ma["params"]["_meta"]["progressToken"],
            mb["params"]["_meta"]["progressToken"]
        );
        // The child answers b first, with a progress notification for a in between.
        let g = 1;
        up.on_line(
            g,
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"who":"b"}}}}"#,
                mb["id"]
            )
            .as_bytes(),
        );
        up.on_line(g, format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":1}}}}"#, ma["params"]["_meta"]["progressToken"]).as_bytes());
        up.on_line(
            g,
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"who":"a"}}}}"#,
                ma["id"]
            )
            .as_bytes(),
        );
        match b.recv().await.unwrap() {
            Delivery::Response(v) => assert_eq!(
                (v["id"].clone(), v["result"]["who"].clone()),
                (json!(1), json!("b"))
            ),
            other => panic!("{other:?}"),
        }
        match a.recv().await.unwrap() {
            Delivery::Notification(v) => assert_eq!(v["params"]["progressToken"], json!(7)),
            other => panic!("{other:?}"),
        }
        match a.recv().await.unwrap() {
            Delivery::Response(v) => assert_eq!(
                (v["id"].clone(), v["result"]["who"].clone()),
                (json!(1), json!("a"))
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(up.pending_count(), 0);
    }

    #[tokio::test]
    async fn dropping_a_call_cancels_it_at_the_child() {
        let (up, mut rx, _) = upstream(true);
        let h = up
            .send_request(
                Some("a".into()),
                json!({"jsonrpc":"2.0","id":"x","method":"tools/call"}),
                false,
            )
            .unwrap();
        let m = sent(&mut rx);
        drop(h);
        let c = sent(&mut rx);
        assert_eq!(c["method"], "notifications/cancelled");
        assert_eq!(c["params"]["requestId"], m["id"]);
        assert_eq!(up.pending_count(), 0);
    }

    #[tokio::test]
    async fn client_cancel_is_remapped() {
        let (up, mut rx, _) = upstream(true);
        let _h = up
            .send_request(
                Some("a".into()),
                json!({"jsonrpc":"2.0","id":5,"method":"tools/call"}),
                false,
            )
            .unwrap();
        let m = sent(&mut rx);
        up.client_cancelled(
            &"a".into(),
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}),
        );
        assert_eq!(sent(&mut rx)["params"]["requestId"], m["id"]);
        // another session's id 5 is not touched
        up.client_cancelled(
            &"b".into(),
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}),
        );
        assert!(rx.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn shared_child_requests_are_refused_and_list_changed_broadcast() {
        let (up, mut rx, routed) = upstream(true);
        up.on_line(1, br#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#);
        let r = sent(&mut rx);
        assert_eq!(
            (r["id"].clone(), r["error"]["code"].clone()),
            (json!("s1"), json!(-32601))
        );
        up.on_line(
            1,
            br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        );
        assert_eq!(
            routed.lock().unwrap().as_slice(),
            ["*:\"notifications/tools/list_changed\""]
        );
    }

    #[tokio::test]
    async fn subscription_notifications_go_to_their_listener_with_its_own_id() {
        let (up, mut rx, routed) = upstream(true);
        let listen = |id: Value| {
            json!({"jsonrpc":"2.0","id":id,"method":"subscriptions/listen","params":{
                "notifications":{"toolsListChanged":true}}})
        };
        // Two listeners whose clients both chose id 7, and one other call.
        let mut a = up
            .send_request(Some("a".into()), listen(json!(7)), false)
            .unwrap();
        let sub_a = sent(&mut rx)["id"].clone();
        let mut b = up
            .send_request(Some("b".into()), listen(json!(7)), false)
            .unwrap();
        let sub_b = sent(&mut rx)["id"].clone();
        assert_ne!(sub_a, sub_b, "the child sees two subscriptions");
        let tagged = |method: &str, sub: &Value| {
            json!({"jsonrpc":"2.0","method":method,"params":{
                "_meta":{META_SUBSCRIPTION: sub}, "notifications":{"toolsListChanged":true}}})
            .to_string()
        };
        up.on_line(
            1,
            tagged("notifications/subscriptions/acknowledged", &sub_a).as_bytes(),
        );
        up.on_line(
            1,
            tagged("notifications/tools/list_changed", &sub_b).as_bytes(),
        );
        // A subscription that no longer exists, and an untagged list_changed (broadcast).
        up.on_line(
            1,
            tagged("notifications/tools/list_changed", &json!(999)).as_bytes(),
        );
        up.on_line(
            1,
            br#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#,
        );
        let note = |d: Option<Delivery>| match d {
            Some(Delivery::Notification(v)) => v,
            other => panic!("{other:?}"),
        };
        let got = note(a.recv().await);
        assert_eq!(got["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(got["params"]["_meta"][META_SUBSCRIPTION], 7);
        let got = note(b.recv().await);
        assert_eq!(got["method"], "notifications/tools/list_changed");
        assert_eq!(got["params"]["_meta"][META_SUBSCRIPTION], 7);
        assert!(a.rx.try_recv().is_err() && b.rx.try_recv().is_err());
        assert_eq!(
            routed.lock().unwrap().as_slice(),
            ["*:\"notifications/prompts/list_changed\""],
            "only the untagged notification is broadcast"
        );
        // The closing result names the client's subscription id.
        up.on_line(
            1,
            json!({"jsonrpc":"2.0","id":sub_a,"result":{"resultType":"complete",
                "_meta":{META_SUBSCRIPTION: sub_a}}})
            .to_string()
            .as_bytes(),
        );
        match a.recv().await {
            Some(Delivery::Response(v)) => {
                assert_eq!(v["id"], 7);
                assert_eq!(v["result"]["_meta"][META_SUBSCRIPTION], 7);
            }
            other => panic!("{other:?}"),
        }
        // A client that closes its stream cancels the subscription at the child.
        drop(b);
        let c = sent(&mut rx);
        assert_eq!(
            (c["method"].clone(), c["params"]["requestId"].clone()),
            (json!("notifications/cancelled"), sub_b)
        );
        assert_eq!(up.pending_count(), 0);
    }

    #[tokio::test]
    async fn the_liveness_check_of_a_modern_child_is_server_discover_never_ping() {
        for (era, method) in [(Era::Legacy, "ping"), (Era::Modern, "server/discover")] {
            let (up, mut rx, _) = upstream(true);
            up.set_era(era);
            up.set_status(Status::Ready);
            let check = tokio::spawn({
                let up = up.clone();
                async move { up.answers_ping(Duration::from_secs(5)).await }
            });
            let m = loop {
                if let Ok(line) = rx.rx.try_recv() {
                    rx.written(line.len());
                    break serde_json::from_slice::<Value>(&line).unwrap();
                }
                tokio::task::yield_now().await;
            };
            assert_eq!(m["method"], method);
            if era == Era::Modern {
                let meta = &m["params"]["_meta"];
                assert_eq!(
                    meta["io.modelcontextprotocol/protocolVersion"],
                    "2026-07-28"
                );
                assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
            }
            up.on_line(
                1,
                json!({"jsonrpc":"2.0","id":m["id"],"result":{}})
                    .to_string()
                    .as_bytes(),
            );
            assert!(check.await.unwrap(), "{method} answered");
        }
    }

    #[tokio::test]
    async fn per_session_child_requests_go_to_the_owner() {
        let (up, _rx, routed) = upstream(false);
        up.on_line(1, br#"{"jsonrpc":"2.0","id":"s1","method":"roots/list"}"#);
        assert_eq!(routed.lock().unwrap().as_slice(), ["solo:\"roots/list\""]);
    }

    #[tokio::test]
    async fn tools_cache_is_voided_by_list_changed_in_flight() {
        let (up, mut rx, _) = upstream(true);
        let _h = up
            .send_request(
                None,
                json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}),
                true,
            )
            .unwrap();
        let m = sent(&mut rx);
        up.on_line(
            1,
            br#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        );
        up.on_line(
            1,
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[]}}}}"#,
                m["id"]
            )
            .as_bytes(),
        );
        assert!(up.cached_tools().is_none());
        let _h = up
            .send_request(
                None,
                json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}),
                true,
            )
            .unwrap();
        let m = sent(&mut rx);
        up.on_line(
            1,
            format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":[]}}}}"#,
                m["id"]
            )
            .as_bytes(),
        );
        assert_eq!(up.cached_tools(), Some(json!({"tools": []})));
    }

    #[tokio::test]
    async fn hidden_tools_never_reach_the_cache_the_schemas_or_a_caller() {
        let (up, mut rx, _) = upstream(true);
        let tools = r#"[{"name":"echo","inputSchema":{"type":"object"}},{"name":"hidden","inputSchema":{"type":"object"}}]"#;
        // The cacheable first page and a later page (forwarded, not cached) are both filtered.
        for (id, cache, cursor) in [(1, true, None), (2, false, Some("p2"))] {
            let mut req = json!({"jsonrpc":"2.0","id":id,"method":"tools/list"});
            if let Some(c) = cursor {
                req["params"] = json!({"cursor": c});
            }
            let mut h = up.send_request(None, req, cache).unwrap();
            let m = sent(&mut rx);
            up.on_line(
                1,
                format!(
                    r#"{{"jsonrpc":"2.0","id":{},"result":{{"tools":{tools}}}}}"#,
                    m["id"]
                )
                .as_bytes(),
            );
            let v = h.response().await.unwrap();
            assert_eq!(v["id"], id);
            let names: Vec<&str> = v["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["echo"]);
        }
        let cached = up.cached_tools().unwrap();
        assert_eq!(cached["tools"].as_array().unwrap().len(), 1);
        assert!(up.tool_schema("echo").is_some());
        assert!(up.tool_schema("hidden").is_none());
        assert_eq!(up.stats.tool_label("hidden"), "other");
        assert_eq!(up.stats.denied_label("hidden"), "hidden");
    }

    #[tokio::test]
    async fn detach_fails_every_waiting_caller() {
        let (up, _rx, _) = upstream(true);
        let mut h = up
            .send_request(
                Some("a".into()),
                json!({"jsonrpc":"2.0","id":9,"method":"tools/call"}),
                false,
            )
            .unwrap();
        up.detach(1, "exited");
        match h.recv().await.unwrap() {
            Delivery::Response(v) => assert_eq!(
                (v["id"].clone(), v["error"]["code"].clone()),
                (json!(9), json!(jsonrpc::CHILD_EXITED))
            ),
            other => panic!("{other:?}"),
        }
    }

    use proptest::prelude::*;

    /// One request of a scenario: the session (of three) that sends it, its JSON-RPC id and
    /// progress token (chosen to collide across and within sessions, and with the bridge's own
    /// `mcpctl-<n>` tokens), how many progress notifications the child sends for it, whether the
    /// child answers it twice, and whether the client cancels it.
    #[derive(Debug, Clone)]
    struct Req {
        session: usize,
        id: Value,
        token: Option<Value>,
        progress: usize,
        dup: bool,
        cancel: bool,
    }

    /// What happens after the requests are sent, in a shuffled order.
    #[derive(Debug, Clone, Copy)]
    enum Ev {
        /// The child reports progress `k` on request `i`.
        Progress(usize, usize),
        /// The child answers request `i`.
        Response(usize),
        /// The client of request `i` cancels its id.
        Cancel(usize),
    }

    fn rpc_id() -> impl Strategy<Value = Value> {
        prop_oneof![
            (0i64..3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[ab1]{0,2}".prop_map(Value::from),
            Just(json!("mcpctl-1")),
        ]
    }

    fn req() -> impl Strategy<Value = Req> {
        let token = prop_oneof![
            (0i64..3).prop_map(Value::from),
            "[ab1]{0,2}".prop_map(Value::from),
            Just(json!("mcpctl-1")),
            Just(json!("mcpctl-2")),
        ];
        (
            0usize..3,
            rpc_id(),
            proptest::option::of(token),
            0usize..3,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(session, id, token, progress, dup, cancel)| Req {
                session,
                id,
                token,
                progress,
                dup,
                cancel,
            })
    }

    fn scenario() -> impl Strategy<Value = (bool, Vec<Req>, Vec<Ev>)> {
        (any::<bool>(), prop::collection::vec(req(), 1..12)).prop_flat_map(|(shared, reqs)| {
            let mut evs = Vec::new();
            for (i, r) in reqs.iter().enumerate() {
                evs.push(Ev::Response(i));
                if r.dup {
                    evs.push(Ev::Response(i));
                }
                if r.cancel {
                    evs.push(Ev::Cancel(i));
                }
                if r.token.is_some() {
                    evs.extend((0..r.progress).map(|k| Ev::Progress(i, k)));
                }
            }
            (Just(shared), Just(reqs), Just(evs).prop_shuffle())
        })
    }

    /// What a caller should have received, in order.
    #[derive(Debug, PartialEq)]
    enum Got {
        Progress(Value, usize),
        Response(Value, usize),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Requests from three sessions with colliding ids and tokens, sent while the child
        /// answers (in any order, some twice), reports progress and sees cancellations: every id
        /// and token the child sees is unique; each caller gets exactly its progress (with its
        /// own token) up to its response (with its own id), then nothing; a cancel reaches the
        /// child as that session's request and silences it; nothing leaks to other sessions.
        #[test]
        fn ids_and_tokens_are_remapped_and_routed_back((shared, reqs, evs) in scenario()) {
            let (up, mut rx, routed) = upstream(shared);
            let sid = |s: usize| -> SessionId { format!("s{s}").into() };
            let mut handles: Vec<CallHandle> = Vec::new();
            // Child-side id and token of each request sent so far.
            let mut child: Vec<(u64, Option<Value>)> = Vec::new();
            let mut seen_ids = std::collections::HashSet::new();
            let mut seen_tokens = std::collections::HashSet::new();
            let mut alive: Vec<bool> = Vec::new();
            let mut want: Vec<Vec<Got>> = Vec::new();
            for ev in evs {
                let i = match ev {
                    Ev::Progress(i, _) | Ev::Response(i) | Ev::Cancel(i) => i,
                };
                // Requests go out in order, the first time an event needs them.
                while handles.len() <= i {
                    let n = handles.len();
                    let r = &reqs[n];
                    let mut params = json!({"name": "t", "arguments": {"n": n}});
                    if let Some(tok) = &r.token {
                        params["_meta"] = json!({"progressToken": tok, "other": 1});
                    }
                    let msg = json!({"jsonrpc": "2.0", "id": r.id, "method": "tools/call", "params": params});
                    handles.push(up.send_request(Some(sid(r.session)), msg, false).expect("child attached"));
                    let m = sent(&mut rx);
                    prop_assert!(rx.rx.try_recv().is_err(), "one line per request");
                    let id = m["id"].as_u64().expect("child-side ids are integers");
                    prop_assert!(seen_ids.insert(id), "child id {} used twice", id);
                    prop_assert_eq!(&m["method"], "tools/call");
                    prop_assert_eq!(&m["params"]["arguments"]["n"], &json!(n));
                    let tok = match &r.token {
                        Some(_) => {
                            prop_assert_eq!(&m["params"]["_meta"]["other"], &json!(1));
                            let t = m["params"]["_meta"]["progressToken"].clone();
                            prop_assert!(seen_tokens.insert(t.to_string()), "child token {} used twice", t);
                            Some(t)
                        }
                        None => {
                            prop_assert!(m["params"].get("_meta").is_none());
                            None
                        }
                    };
                    child.push((id, tok));
                    alive.push(true);
                    want.push(Vec::new());
                }
                match ev {
                    Ev::Progress(i, k) => {
                        let tok = child[i].1.clone().expect("progress only for requests with a token");
                        up.on_line(1, json!({"jsonrpc": "2.0", "method": "notifications/progress",
                            "params": {"progressToken": tok, "progress": k}}).to_string().as_bytes());
                        if alive[i] {
                            want[i].push(Got::Progress(reqs[i].token.clone().unwrap(), k));
                        }
                    }
                    Ev::Response(i) => {
                        up.on_line(1, json!({"jsonrpc": "2.0", "id": child[i].0, "result": {"n": i}}).to_string().as_bytes());
                        if std::mem::replace(&mut alive[i], false) {
                            want[i].push(Got::Response(reqs[i].id.clone(), i));
                        }
                    }
                    Ev::Cancel(i) => {
                        let r = &reqs[i];
                        up.client_cancelled(&sid(r.session), json!({"jsonrpc": "2.0",
                            "method": "notifications/cancelled", "params": {"requestId": r.id, "reason": "x"}}));
                        // The requests the client may mean: its own, in flight, with that id.
                        let candidates: Vec<usize> = (0..child.len())
                            .filter(|&j| alive[j] && reqs[j].session == r.session && reqs[j].id == r.id)
                            .collect();
                        if candidates.is_empty() {
                            prop_assert!(rx.rx.try_recv().is_err(), "a cancel of nothing in flight reaches the child");
                        } else {
                            let c = sent(&mut rx);
                            prop_assert_eq!(&c["method"], "notifications/cancelled");
                            prop_assert_eq!(&c["params"]["reason"], "x");
                            let j = candidates.iter().copied().find(|&j| c["params"]["requestId"] == json!(child[j].0));
                            prop_assert!(j.is_some(), "cancelled {} of none of {:?}", c["params"]["requestId"], candidates);
                            alive[j.unwrap()] = false;
                        }
                    }
                }
                prop_assert!(rx.rx.try_recv().is_err(), "an unexpected line to the child");
            }
            prop_assert_eq!(up.pending_count(), 0);
            prop_assert!(routed.lock().unwrap().is_empty(), "routed to a session table: {:?}", routed.lock().unwrap());
            for (i, h) in handles.iter_mut().enumerate() {
                let mut got = Vec::new();
                while let Ok(d) = h.rx.try_recv() {
                    got.push(match d {
                        Delivery::Notification(v) => {
                            prop_assert_eq!(&v["method"], "notifications/progress");
                            Got::Progress(v["params"]["progressToken"].clone(), v["params"]["progress"].as_u64().unwrap() as usize)
                        }
                        Delivery::Response(v) => Got::Response(v["id"].clone(), v["result"]["n"].as_u64().unwrap() as usize),
                    });
                }
                prop_assert_eq!(&got, &want[i], "request {} ({:?})", i, reqs[i]);
                prop_assert!(matches!(h.rx.try_recv(), Err(mpsc::error::TryRecvError::Disconnected)),
                    "request {} is still wired after its end", i);
            }
        }
    }
}
