//! MCP 2026-07-28 ("modern", stateless) requests on `/mcp`, served by the same warm legacy child
//! that legacy sessions share.
//!
//! Owns: telling a modern request from a legacy one, the transport checks of the 2026-07-28
//! Streamable HTTP binding (headers against the body, `_meta`, version), the methods that era
//! removed, `server/discover` (from the child's cached `initialize` result), `subscriptions/listen`
//! (the child's `list_changed` notifications), and stamping results (`resultType`, `ttlMs`,
//! `cacheScope`, `serverInfo`). Everything else goes through `App::handle` exactly as a legacy
//! session's request does, on a bridge-owned stateless `Session` that lives for one request: the
//! tool policy, argument validation, the `tools/list` cache, id/token remapping at the child,
//! request metrics and audit lines are the legacy code paths. Access control, rate limits and
//! admission (body size, JSON shape, in-flight bytes) ran before this module (`http::guard_mcp`).
//!
//! Must not: open sessions or mint `Mcp-Session-Id`, spawn children, or talk to a per-session
//! child (per-session services keep per-client state that a stateless request cannot name; they
//! answer modern requests with a non-modern error, so dual-era clients fall back to `initialize`).
//!
//! A MODERN child (the era probe, `probe`, found one that speaks 2026-07-28) is served natively
//! instead ([`native`]): after the same checks (headers, `_meta`, the 2026-07-28 method set; the
//! `-32022` list is then the child's `supportedVersions`) a request goes to the child as the
//! client wrote it, through `App::handle` (tool policy, argument validation, id and token
//! remapping, metrics, audit), and the child's reply comes back as it wrote it: no stamping, no
//! `_meta` stripping, `input_required` results and `requestState` retries pass through (the child
//! is stateless, so a retry may even land on another replica). `server/discover` is the child's
//! own answer. `subscriptions/listen` is one long-lived request at the child; `upstream` routes
//! the notifications tagged with its subscription id back to it; closing the stream cancels it
//! at the child (`notifications/cancelled`), as any call whose client went away. Legacy clients
//! are refused, never translated ([`legacy_refusal`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::app::{App, Call, Outcome, Session};
use super::jsonrpc::{self, Kind};
use super::sse;
use super::stats::{self, Era, ErrorType};
use super::upstream::{Delivery, Upstream};
use crate::locks::MutexExt;

/// Modern revisions the bridge serves statelessly, newest first.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];

pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";
/// `_meta` keys of the modern per-request protocol (not forwarded to a legacy child).
const META_PREFIX: &str = "io.modelcontextprotocol/";

/// Error codes of the 2026-07-28 schema.
/// (−32021, missing client capability, is never sent: the shared child was initialized without
/// client capabilities and its server→client requests are refused by the bridge, so no request
/// served here depends on one.)
pub const HEADER_MISMATCH: i64 = -32020;
pub const UNSUPPORTED_VERSION: i64 = -32022;

const VERSION_HEADER: &str = "mcp-protocol-version";
const SESSION_HEADER: &str = "mcp-session-id";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// How long a client may cache discovery and list results (`ttlMs`). The bridge's own
/// `tools/list` cache is voided by the child's `list_changed`, which `subscriptions/listen`
/// relays; a child restart (a new revision is a new container) changes nothing clients cache.
pub const LIST_TTL_MS: u64 = 60_000;

/// Methods of earlier revisions that 2026-07-28 removed (or moved to an extension the bridge
/// does not advertise): refused with 404 + −32601, as for any method the server does not implement.
const REMOVED: &[(&str, &str)] = &[
    ("ping", "ping was removed in 2026-07-28"),
    (
        "logging/setLevel",
        "logging/setLevel was removed in 2026-07-28: set `_meta[\"io.modelcontextprotocol/logLevel\"]` per request",
    ),
    (
        "resources/subscribe",
        "resources/subscribe was removed in 2026-07-28: use subscriptions/listen",
    ),
    (
        "resources/unsubscribe",
        "resources/unsubscribe was removed in 2026-07-28: close the subscriptions/listen stream",
    ),
    (
        "initialize",
        "initialize is a legacy method: a 2026-07-28 request carries its version in `_meta`",
    ),
];

/// The requests a 2026-07-28 client may send (the schema's `ClientRequest`). Any other method
/// (besides the `REMOVED` ones, refused with their own reason) is 404 + −32601 before it reaches
/// the child: the bridge translates these onto the legacy child and nothing else, and a legacy
/// child's own answer to a method it does not know is not reliably −32601 (the Python SDK 1.x
/// answers −32602).
const CLIENT_METHODS: &[&str] = &[
    "server/discover",
    "completion/complete",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
];

/// Methods whose `Mcp-Name` header must mirror `params.name` / `params.uri`.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// Results that carry `ttlMs` and `cacheScope` (the spec's `CacheableResult`).
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// The bridge's modern-request state: stateless requests in flight (bounded), and open
/// `subscriptions/listen` streams (bounded).
#[derive(Default)]
pub struct Modern {
    in_flight: Arc<AtomicUsize>,
    next: AtomicU64,
    listeners: Mutex<HashMap<u64, Listener>>,
    /// Open `subscriptions/listen` streams relayed from a modern child.
    native_listeners: Arc<AtomicUsize>,
}

struct Listener {
    /// The `subscriptions/listen` request's id: the subscription id in every notification.
    id: Value,
    filter: Filter,
    out: sse::Frames,
}

/// What a listener opted in to, narrowed to what the child advertises.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Filter {
    fn wants(&self, method: &str) -> bool {
        match method {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            _ => false,
        }
    }
    fn to_json(self) -> Value {
        let mut m = Map::new();
        for (on, key) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                m.insert(key.into(), Value::Bool(true));
            }
        }
        Value::Object(m)
    }
}

/// One stateless request's place in the in-flight bound; released when dropped.
pub struct Slot(Arc<AtomicUsize>);
impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Modern {
    fn try_slot(&self, cap: usize) -> Option<Slot> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= cap {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.in_flight.clone()))
    }

    /// Modern requests being served now (gauge).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Open `subscriptions/listen` streams (gauge).
    pub fn listeners(&self) -> usize {
        self.listeners.lock_ignore_poison().len() + self.native_listeners.load(Ordering::Relaxed)
    }

    /// A notification the child sent to everyone (`list_changed`): to every listener that opted
    /// in, tagged with its subscription id. A listener whose stream is full or gone is dropped
    /// (its stream ends; the client re-subscribes).
    pub fn broadcast(&self, msg: &Value) {
        let method = jsonrpc::method(msg);
        let mut g = self.listeners.lock_ignore_poison();
        if g.is_empty() {
            return;
        }
        let params = match msg.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p.clone(),
            Some(_) => return,
        };
        let mut dead = Vec::new();
        for (key, l) in g.iter() {
            if !l.filter.wants(method) {
                continue;
            }
            let mut p = params.clone();
            let meta = p
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(META_SUBSCRIPTION.into(), l.id.clone());
            }
            let note = json!({"jsonrpc": "2.0", "method": method, "params": p});
            if l.out.try_send(sse::message(&note)).is_err() {
                dead.push(*key);
            }
        }
        for key in dead {
            g.remove(&key);
        }
    }
}

/// Whether a POST to `/mcp` speaks 2026-07-28: its body carries the per-request protocol version
/// in `_meta`, or (without a session) its `MCP-Protocol-Version` header names a version that is
/// not a legacy one. An `initialize` without that `_meta` key opens a legacy session (legacy
/// clients never send the key); one that carries it is a modern request for a method 2026-07-28
/// removed (spec, versioning: "A request carrying modern per-request `_meta` is served
/// statelessly according to this revision").
pub fn is_modern(headers: &HeaderMap, msg: &Value) -> bool {
    let meta_version = msg
        .get("params")
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_VERSION))
        .is_some();
    if meta_version {
        return true;
    }
    if jsonrpc::method(msg) == "initialize" {
        return false;
    }
    if headers.contains_key(SESSION_HEADER) {
        return false;
    }
    match headers.get(VERSION_HEADER) {
        None => false,
        Some(v) => !matches!(v.to_str(), Ok(v) if jsonrpc::SUPPORTED_VERSIONS.contains(&v)),
    }
}

/// Every version the bridge speaks: modern ones (per request) then legacy ones (`initialize`).
pub fn supported_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .chain(jsonrpc::SUPPORTED_VERSIONS)
        .copied()
        .collect()
}

/// A refusal before the request reached the child: HTTP status + JSON-RPC error.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }
    fn mismatch(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, HEADER_MISMATCH, message)
    }
    fn body(&self, id: Value) -> Value {
        let mut v = jsonrpc::error(id, self.code, self.message.clone());
        if let Some(d) = &self.data {
            v["error"]["data"] = d.clone();
        }
        v
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            Refusal::mismatch(format!(
                "Header mismatch: the {name} header contains characters that are not visible ASCII"
            ))
        }),
    }
}

/// An `Mcp-Name` value as the client meant it: `=?base64?…?=` is decoded (spec "Value Encoding").
fn decode_name(raw: &str) -> Result<String, Refusal> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        None => Ok(raw.to_string()),
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Refusal::mismatch(
                    "Header mismatch: the Mcp-Name header is not valid base64-encoded UTF-8",
                )
            }),
    }
}

/// What a valid modern request asked for, besides its body.
#[derive(Debug, PartialEq)]
pub struct Checked {
    /// `io.modelcontextprotocol/logLevel` as a rank (`notifications/message` at or above it are
    /// relayed; without it none are).
    pub log_min: Option<usize>,
}

/// The transport and `_meta` rules of 2026-07-28 for one request (already known to be a JSON-RPC
/// request): required headers (−32020), required `_meta` fields (−32602), header against body
/// (−32020), the version (−32022; a legacy version without a session: −32600, so dual-era clients
/// fall back to `initialize`).
pub fn check(h: &HeaderMap, msg: &Value) -> Result<Checked, Refusal> {
    let method = jsonrpc::method(msg);
    let Some(hv) = header(h, VERSION_HEADER)? else {
        return Err(Refusal::mismatch(
            "Header mismatch: the MCP-Protocol-Version header is required",
        ));
    };
    let Some(hm) = header(h, METHOD_HEADER)? else {
        return Err(Refusal::mismatch(
            "Header mismatch: the Mcp-Method header is required",
        ));
    };
    let invalid = |m: String| Refusal::new(StatusCode::BAD_REQUEST, jsonrpc::INVALID_PARAMS, m);
    let meta = match msg.get("params") {
        Some(Value::Object(p)) => p.get("_meta"),
        None => None,
        Some(_) => return Err(invalid("Invalid params: params must be an object".into())),
    };
    let Some(meta) = meta.and_then(Value::as_object) else {
        return Err(invalid(format!(
            "Invalid params: a 2026-07-28 request needs params._meta with \"{META_VERSION}\" and \"{META_CAPABILITIES}\""
        )));
    };
    let Some(version) = meta.get(META_VERSION).and_then(Value::as_str) else {
        return Err(invalid(format!(
            "Invalid params: params._meta[\"{META_VERSION}\"] (a string) is required"
        )));
    };
    if !meta.get(META_CAPABILITIES).is_some_and(Value::is_object) {
        return Err(invalid(format!(
            "Invalid params: params._meta[\"{META_CAPABILITIES}\"] (an object) is required"
        )));
    }
    if hv != version {
        return Err(Refusal::mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header value '{hv}' does not match body value '{version}'"
        )));
    }
    if !MODERN_VERSIONS.contains(&version) {
        if jsonrpc::SUPPORTED_VERSIONS.contains(&version) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                format!("Invalid Request: protocol version {version} is initialize-based; send initialize to open a session, or use 2026-07-28 per request"),
            ));
        }
        let mut r = Refusal::new(
            StatusCode::BAD_REQUEST,
            UNSUPPORTED_VERSION,
            "Unsupported protocol version",
        );
        r.data = Some(json!({"supported": supported_versions(), "requested": version}));
        return Err(r);
    }
    if hm != method {
        return Err(Refusal::mismatch(format!(
            "Header mismatch: Mcp-Method header value '{hm}' does not match body value '{method}'"
        )));
    }
    if let Some(field) = name_field(method) {
        let Some(raw) = header(h, NAME_HEADER)? else {
            return Err(Refusal::mismatch(format!(
                "Header mismatch: the Mcp-Name header is required for {method}"
            )));
        };
        let name = decode_name(raw)?;
        let body = msg["params"][field].as_str().unwrap_or_default();
        if name != body {
            return Err(Refusal::mismatch(format!(
                "Header mismatch: Mcp-Name header value '{name}' does not match body value '{body}'"
            )));
        }
    }
    let log_min = match meta.get(META_LOG_LEVEL) {
        None => None,
        Some(l) => Some(l.as_str().and_then(jsonrpc::level_rank).ok_or_else(|| {
            invalid(format!(
                "Invalid params: params._meta[\"{META_LOG_LEVEL}\"] is not a logging level"
            ))
        })?),
    };
    Ok(Checked { log_min })
}

/// The request as the legacy child should see it: no modern `_meta` keys, no multi-round-trip
/// retry fields (the bridge never returns `input_required`, so there is nothing to answer).
fn for_legacy_child(mut msg: Value) -> Value {
    if let Some(p) = msg.get_mut("params").and_then(Value::as_object_mut) {
        p.remove("inputResponses");
        p.remove("requestState");
        let empty = match p.get_mut("_meta").and_then(Value::as_object_mut) {
            Some(meta) => {
                meta.retain(|k, _| !k.starts_with(META_PREFIX));
                meta.is_empty()
            }
            None => false,
        };
        if empty {
            p.remove("_meta");
        }
    }
    msg
}

/// How results are stamped for one bridge (2026-07-28 "Result", "Caching").
#[derive(Clone)]
pub struct Stamp {
    server_info: Option<Value>,
    /// `public` only when anyone may call this bridge (no access control): with tokens, a
    /// shared cache must not hand a result to a caller the bridge would refuse.
    public: bool,
}

impl Stamp {
    fn new(app: &App) -> Self {
        let server_info = app
            .shared
            .as_ref()
            .and_then(|up| up.init_info())
            .and_then(|i| i.result.get("serverInfo").cloned());
        Self {
            server_info,
            public: app.access.is_none(),
        }
    }

    /// Stamp a response to `method` in place: `resultType`, `serverInfo`, caching hints; a
    /// legacy `-32002` (resource not found) becomes `-32602`, which 2026-07-28 uses instead.
    pub fn apply(&self, method: &str, reply: &mut Value) {
        if let Some(e) = reply.get_mut("error") {
            if e["code"] == json!(-32002) {
                e["code"] = json!(jsonrpc::INVALID_PARAMS);
            }
            return;
        }
        let Some(r) = reply.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        r.entry("resultType").or_insert_with(|| json!("complete"));
        if let Some(info) = &self.server_info {
            if let Some(meta) = r
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
            {
                meta.entry(META_SERVER_INFO).or_insert_with(|| info.clone());
            }
        }
        if cacheable(method) {
            let (ttl, scope) = match method {
                // Contents may change at any moment, and may depend on who asks.
                "resources/read" => (0, "private"),
                _ if self.public => (LIST_TTL_MS, "public"),
                _ => (LIST_TTL_MS, "private"),
            };
            r.entry("ttlMs").or_insert_with(|| json!(ttl));
            r.entry("cacheScope").or_insert_with(|| json!(scope));
        }
    }
}

/// The server's capabilities as a modern client should see them: what the child advertised,
/// minus what the bridge cannot offer statelessly (`resources.subscribe`: per-resource updates
/// need a subscription at the shared child; `tasks`: the 2025-11-25 experiment, now an
/// extension the bridge does not speak).
fn modern_capabilities(child: &Value) -> Value {
    let mut caps = child.as_object().cloned().unwrap_or_default();
    caps.remove("tasks");
    if let Some(r) = caps.get_mut("resources").and_then(Value::as_object_mut) {
        r.remove("subscribe");
    }
    Value::Object(caps)
}

/// `server/discover` from the child's cached `initialize` result.
fn discover(init: &Value, stamp: &Stamp, id: Value) -> Value {
    let mut result = json!({
        "supportedVersions": supported_versions(),
        "capabilities": modern_capabilities(&init["capabilities"]),
    });
    if let Some(i) = init.get("instructions").filter(|i| i.is_string()) {
        result["instructions"] = i.clone();
    }
    let mut reply = jsonrpc::result(id, result);
    stamp.apply("server/discover", &mut reply);
    reply
}

fn reply_status(v: &Value) -> StatusCode {
    match v["error"]["code"].as_i64() {
        Some(jsonrpc::METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn accepts_sse(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Seconds a client refused for capacity is told to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// The request-metric labels of a request, as `App::handle` would give them (`tool`: a listed
/// tool's name for `tools/call`, else `other`; empty for other methods).
fn labels(app: &App, msg: &Value) -> (&'static str, String) {
    let method = stats::method_label(jsonrpc::method(msg));
    let tool = if method == "tools/call" {
        app.stats
            .tool_label(msg["params"]["name"].as_str().unwrap_or_default())
    } else {
        String::new()
    };
    (method, tool)
}

/// 503 + Retry-After, counted as `overloaded` for the modern era.
fn overloaded(app: &App, msg: &Value, t0: Instant, why: &str) -> Response {
    let (method, tool) = labels(app, msg);
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    app.stats
        .record(method, &tool, t0.elapsed(), Some(ErrorType::Overloaded));
    app.stats.overloaded(Era::Modern);
    tracing::debug!(why, "modern request refused: overloaded");
    let mut r = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::error(
            id,
            jsonrpc::CHILD_UNAVAILABLE,
            format!("Service Unavailable: {why}; retry after {RETRY_AFTER_SECS}s"),
        ),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// Serve one modern POST to `/mcp` (`msg` parsed, admitted and authenticated already; `who`:
/// the caller, for audit lines).
pub async fn serve(app: Arc<App>, who: Arc<str>, headers: HeaderMap, msg: Value) -> Response {
    let t0 = Instant::now();
    let kind = if msg["jsonrpc"] == "2.0" {
        jsonrpc::kind(&msg)
    } else {
        Kind::Invalid
    };
    let method = jsonrpc::method(&msg).to_string();
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let refuse = |r: Refusal, error: ErrorType| {
        let (m, tool) = labels(&app, &msg);
        app.stats.record(m, &tool, t0.elapsed(), Some(error));
        tracing::debug!(%method, code = r.code, message = %r.message, "modern request refused");
        let id = if kind == Kind::Request {
            id.clone()
        } else {
            Value::Null
        };
        json_response(r.status, r.body(id))
    };
    match kind {
        Kind::Request => {}
        // 2026-07-28 defines no client notifications over HTTP (closing a response stream is
        // the cancellation): accepted and dropped.
        Kind::Notification => return StatusCode::ACCEPTED.into_response(),
        Kind::Response | Kind::Invalid => return refuse(
            Refusal::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: a 2026-07-28 POST carries one JSON-RPC request or notification",
            ),
            ErrorType::BadRequest,
        ),
    }
    app.stats.era_request(Era::Modern);
    let Some(up) = app.shared.clone() else {
        // Per-session services: a non-modern error, so a dual-era client falls back to
        // `initialize` and gets its own child, as legacy clients do.
        return refuse(
            Refusal::new(
                StatusCode::BAD_REQUEST,
                jsonrpc::INVALID_REQUEST,
                "Invalid Request: this service keeps per-client state (session_model per_session) and is served to legacy sessions only: send initialize",
            ),
            ErrorType::BadRequest,
        );
    };
    let native = up.wait_era(app.cfg.child.init_timeout).await == Some(Era::Modern);
    let checked = match check(&headers, &msg) {
        Ok(c) => c,
        // A modern child names its own versions; a legacy version gets no "send initialize".
        Err(r)
            if native && (r.code == UNSUPPORTED_VERSION || r.code == jsonrpc::INVALID_REQUEST) =>
        {
            let requested = msg["params"]["_meta"][META_VERSION].clone();
            let mut r = Refusal::new(
                StatusCode::BAD_REQUEST,
                UNSUPPORTED_VERSION,
                "Unsupported protocol version",
            );
            r.data = Some(json!({"supported": up.supported_versions(), "requested": requested}));
            return refuse(r, ErrorType::BadRequest);
        }
        Err(r) => return refuse(r, ErrorType::BadRequest),
    };
    if let Some((_, why)) = REMOVED.iter().find(|(m, _)| *m == method) {
        return refuse(
            Refusal::new(
                StatusCode::NOT_FOUND,
                jsonrpc::METHOD_NOT_FOUND,
                format!("Method not found: {why}"),
            ),
            ErrorType::BadRequest,
        );
    }
    if method.starts_with("tasks/") {
        return refuse(
            Refusal::new(
                StatusCode::NOT_FOUND,
                jsonrpc::METHOD_NOT_FOUND,
                "Method not found: this server does not offer the io.modelcontextprotocol/tasks extension",
            ),
            ErrorType::BadRequest,
        );
    }
    if !CLIENT_METHODS.contains(&method.as_str()) {
        return refuse(
            Refusal::new(
                StatusCode::NOT_FOUND,
                jsonrpc::METHOD_NOT_FOUND,
                format!("Method not found: '{method}' is not a 2026-07-28 client request"),
            ),
            ErrorType::BadRequest,
        );
    }
    if app.draining.load(Ordering::Relaxed) {
        return overloaded(&app, &msg, t0, "bridge is shutting down");
    }
    let cap = app.cfg.max_sessions;
    if native {
        return self::native(app, who, up, headers, msg, checked, t0).await;
    }
    if method == "subscriptions/listen" {
        return listen(&app, &up, &headers, msg, t0).await;
    }
    let Some(slot) = app.modern.try_slot(cap) else {
        return overloaded(
            &app,
            &msg,
            t0,
            &format!("{cap} stateless requests are in flight already (--max-sessions)"),
        );
    };
    if method == "server/discover" {
        let reply = match up.wait_ready(app.cfg.child.init_timeout).await {
            Err(e) => e.to_response(id),
            Ok(()) => match up.init_info() {
                Some(info) => discover(&info.result, &Stamp::new(&app), id),
                None => jsonrpc::error(
                    id,
                    jsonrpc::CHILD_UNAVAILABLE,
                    "MCP server restarted; retry",
                ),
            },
        };
        let error = reply.get("error").map(|_| ErrorType::ChildExited);
        app.stats
            .record(stats::method_label(&method), "", t0.elapsed(), error);
        drop(slot);
        return json_response(StatusCode::OK, reply);
    }
    let n = app.modern.next.fetch_add(1, Ordering::Relaxed);
    let session = Session::stateless(format!("modern-{n}").into(), who, up);
    let want_stream = accepts_sse(&headers)
        && (checked.log_min.is_some() || msg["params"]["_meta"].get("progressToken").is_some());
    let msg = for_legacy_child(msg);
    let stamp = Stamp::new(&app);
    match app.handle(&session, msg).await {
        Outcome::Accepted => StatusCode::ACCEPTED.into_response(),
        Outcome::Reply(mut v) => {
            stamp.apply(&method, &mut v);
            json_response(reply_status(&v), v)
        }
        Outcome::Forwarded(call) if want_stream => {
            let (frames, resp) = sse::response(
                app.cfg.keepalive,
                app.stats.clone(),
                app.shutdown.clone(),
                &[],
            );
            let span = tracing::info_span!("mcp", era = "modern", method = %method);
            tokio::spawn(
                relay(call, frames, stamp, method, checked.log_min, slot).instrument(span),
            );
            resp
        }
        Outcome::Forwarded(mut call) => {
            // Dropping this future (the client went away) drops the call: cancelled at the child.
            match call.response().await {
                Some(mut v) => {
                    stamp.apply(&method, &mut v);
                    drop(slot);
                    json_response(reply_status(&v), v)
                }
                None => json_response(
                    StatusCode::OK,
                    jsonrpc::error(
                        id,
                        jsonrpc::CHILD_UNAVAILABLE,
                        "the request was not completed; retry",
                    ),
                ),
            }
        }
    }
}

/// The answer to a legacy client's `initialize` when the child speaks only 2026-07-28: −32022 with
/// the child's versions, and what to do (the spec: a modern-only server names its versions in
/// any error to `initialize`, as legacy clients have no other diagnostic).
pub fn legacy_refusal(up: &Upstream, id: Value) -> Value {
    let supported = up.supported_versions();
    let mut v = jsonrpc::error(
        id,
        UNSUPPORTED_VERSION,
        format!(
            "Unsupported protocol version: this service speaks only MCP {} (its server is a 2026-07-28 stdio server, which has no initialize); use a 2026-07-28 client: POST /mcp without initialize, each request carrying params._meta[\"{META_VERSION}\"] and the MCP-Protocol-Version header",
            supported.join(", ")
        ),
    );
    v["error"]["data"] = json!({"supported": supported});
    v
}

/// A modern request to a modern child (checked already): forwarded as written, answered as the
/// child answered (see the module doc).
async fn native(
    app: Arc<App>,
    who: Arc<str>,
    up: Arc<Upstream>,
    headers: HeaderMap,
    msg: Value,
    checked: Checked,
    t0: Instant,
) -> Response {
    let method = jsonrpc::method(&msg).to_string();
    let id = msg["id"].clone();
    if method == "subscriptions/listen" {
        return native_listen(&app, up, &headers, msg, t0).await;
    }
    let cap = app.cfg.max_sessions;
    let Some(slot) = app.modern.try_slot(cap) else {
        return overloaded(
            &app,
            &msg,
            t0,
            &format!("{cap} stateless requests are in flight already (--max-sessions)"),
        );
    };
    let n = app.modern.next.fetch_add(1, Ordering::Relaxed);
    let session = Session::stateless(format!("modern-{n}").into(), who, up);
    let want_stream = accepts_sse(&headers)
        && (checked.log_min.is_some() || msg["params"]["_meta"].get("progressToken").is_some());
    match app.handle(&session, msg).await {
        Outcome::Accepted => StatusCode::ACCEPTED.into_response(),
        Outcome::Reply(v) => json_response(reply_status(&v), v),
        Outcome::Forwarded(call) if want_stream => {
            let (frames, resp) = sse::response(
                app.cfg.keepalive,
                app.stats.clone(),
                app.shutdown.clone(),
                &[],
            );
            let span =
                tracing::info_span!("mcp", era = "modern", child = "modern", method = %method);
            tokio::spawn(relay_native(call, frames, slot).instrument(span));
            resp
        }
        Outcome::Forwarded(mut call) => match call.response().await {
            Some(v) => {
                drop(slot);
                json_response(reply_status(&v), v)
            }
            None => json_response(
                StatusCode::OK,
                jsonrpc::error(
                    id,
                    jsonrpc::CHILD_UNAVAILABLE,
                    "the request was not completed; retry",
                ),
            ),
        },
    }
}

/// Everything the child sends for one call (its progress and log notifications, then its
/// response), verbatim, on the request's SSE stream; ends early when the client goes away.
async fn relay_native(mut call: Call, out: sse::Frames, _slot: Slot) {
    loop {
        let d = tokio::select! {
            biased;
            d = call.recv() => d,
            _ = out.closed() => return,
        };
        if !pass_on(&out, d).await {
            return;
        }
    }
}

/// One delivery of the child's, verbatim, as an SSE frame: whether the stream goes on (false
/// after the response, when the channel ended, or when the client stopped reading).
async fn pass_on(out: &sse::Frames, d: Option<Delivery>) -> bool {
    let (msg, last) = match d {
        Some(Delivery::Notification(m)) => (m, false),
        Some(Delivery::Response(v)) => (v, true),
        None => return false,
    };
    let sent = tokio::time::timeout(SLOW_CONSUMER_AFTER, out.send(sse::message(&msg))).await;
    matches!(sent, Ok(Ok(()))) && !last
}

/// Counts one open native listen stream while alive.
struct NativeListener(Arc<AtomicUsize>);
impl Drop for NativeListener {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `subscriptions/listen` at a modern child: one long-lived request whose notifications (tagged
/// with its subscription id, routed back by `upstream`) and final result are relayed verbatim.
/// The client closing the stream cancels it at the child; the bridge stopping ends it with the
/// closing result the spec describes (the child is stopped with the bridge). Not counted as a
/// request in flight: an open subscription must not hold up a drain.
async fn native_listen(
    app: &Arc<App>,
    up: Arc<Upstream>,
    headers: &HeaderMap,
    msg: Value,
    t0: Instant,
) -> Response {
    let method = "subscriptions/listen";
    let id = msg["id"].clone();
    let record = |error: Option<ErrorType>| {
        app.stats
            .record(stats::method_label(method), "", t0.elapsed(), error)
    };
    if !accepts_sse(headers) {
        record(Some(ErrorType::BadRequest));
        return json_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                id,
                jsonrpc::INVALID_PARAMS,
                "Invalid params: subscriptions/listen answers with a stream: send Accept: text/event-stream",
            ),
        );
    }
    let cap = app.cfg.max_sessions;
    if app.modern.listeners() >= cap {
        return overloaded(
            app,
            &msg,
            t0,
            &format!("{cap} subscriptions/listen streams are open already (--max-sessions)"),
        );
    }
    if let Err(e) = up.wait_ready(app.cfg.child.init_timeout).await {
        record(Some(ErrorType::ChildExited));
        return json_response(StatusCode::OK, e.to_response(id));
    }
    let n = app.modern.next.fetch_add(1, Ordering::Relaxed);
    let session: Arc<str> = format!("modern-{n}").into();
    let mut call = match up.send_request(Some(session), msg, false) {
        Ok(h) => h,
        Err(e) => {
            record(Some(ErrorType::ChildExited));
            return json_response(StatusCode::OK, e.to_response(id));
        }
    };
    record(None);
    app.modern.native_listeners.fetch_add(1, Ordering::AcqRel);
    let counted = NativeListener(app.modern.native_listeners.clone());
    let (frames, resp) = sse::response(
        app.cfg.keepalive,
        app.stats.clone(),
        CancellationToken::new(),
        &[],
    );
    let app = app.clone();
    tokio::spawn(async move {
        let _counted = counted;
        loop {
            let d = tokio::select! {
                d = call.recv() => d,
                _ = frames.closed() => return, // dropping `call` cancels it at the child
                _ = app.shutdown.cancelled() => {
                    let done = json!({"jsonrpc": "2.0", "id": id.clone(),
                        "result": {"resultType": "complete", "_meta": {META_SUBSCRIPTION: id}}});
                    let _ = frames.try_send(sse::message(&done));
                    return;
                }
            };
            if !pass_on(&frames, d).await {
                return;
            }
        }
    });
    resp
}

/// How long a frame may wait for a client that stopped reading its response stream.
const SLOW_CONSUMER_AFTER: Duration = Duration::from_secs(10);

/// Forward one call's progress and (opted-in) log notifications, then its stamped response, on
/// the request's own SSE stream. Ends early when the client goes away (dropping the call
/// cancels it at the child).
async fn relay(
    mut call: Call,
    out: sse::Frames,
    stamp: Stamp,
    method: String,
    log_min: Option<usize>,
    _slot: Slot,
) {
    loop {
        let d = tokio::select! {
            biased;
            d = call.recv() => d,
            _ = out.closed() => return,
        };
        let (msg, last) = match d {
            Some(Delivery::Notification(m)) => {
                let keep = match jsonrpc::method(&m) {
                    "notifications/progress" => true,
                    "notifications/message" => {
                        let rank = m["params"]["level"].as_str().and_then(jsonrpc::level_rank);
                        matches!((log_min, rank), (Some(min), Some(r)) if r >= min)
                    }
                    _ => false,
                };
                if !keep {
                    continue;
                }
                (m, false)
            }
            Some(Delivery::Response(mut v)) => {
                stamp.apply(&method, &mut v);
                (v, true)
            }
            None => return,
        };
        match tokio::time::timeout(SLOW_CONSUMER_AFTER, out.send(sse::message(&msg))).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        if last {
            return;
        }
    }
}

/// `subscriptions/listen`: an SSE stream that acknowledges the filter (narrowed to the
/// `listChanged` notifications the child advertises; per-resource subscriptions are not
/// offered), then relays the child's `list_changed` notifications tagged with the subscription
/// id, until the client closes it or the bridge stops (then a final result closes it cleanly).
async fn listen(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    headers: &HeaderMap,
    msg: Value,
    t0: Instant,
) -> Response {
    let method = "subscriptions/listen";
    let id = msg["id"].clone();
    let bad = |text: &str| {
        app.stats.record(
            stats::method_label(method),
            "",
            t0.elapsed(),
            Some(ErrorType::BadRequest),
        );
        json_response(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(id.clone(), jsonrpc::INVALID_PARAMS, text),
        )
    };
    if !accepts_sse(headers) {
        return bad("Invalid params: subscriptions/listen answers with a stream: send Accept: text/event-stream");
    }
    let Some(asked) = msg["params"]
        .get("notifications")
        .and_then(Value::as_object)
    else {
        return bad("Invalid params: subscriptions/listen needs params.notifications (an object)");
    };
    let cap = app.cfg.max_sessions;
    if app.modern.listeners() >= cap {
        return overloaded(
            app,
            &msg,
            t0,
            &format!("{cap} subscriptions/listen streams are open already (--max-sessions)"),
        );
    }
    if let Err(e) = up.wait_ready(app.cfg.child.init_timeout).await {
        app.stats.record(
            stats::method_label(method),
            "",
            t0.elapsed(),
            Some(ErrorType::ChildExited),
        );
        return json_response(StatusCode::OK, e.to_response(id));
    }
    let caps = up
        .init_info()
        .map(|i| i.result["capabilities"].clone())
        .unwrap_or(Value::Null);
    let offered = |cap: &str| caps[cap]["listChanged"] == Value::Bool(true);
    let on = |key: &str| asked.get(key) == Some(&Value::Bool(true));
    let filter = Filter {
        tools: on("toolsListChanged") && offered("tools"),
        prompts: on("promptsListChanged") && offered("prompts"),
        resources: on("resourcesListChanged") && offered("resources"),
    };
    // The stream ends when the client goes away or the listener task drops its senders (bridge
    // shutdown, after the closing result): not on the shared shutdown token, which could end it
    // before that result is written.
    let (frames, resp) = sse::response(
        app.cfg.keepalive,
        app.stats.clone(),
        CancellationToken::new(),
        &[],
    );
    let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": {META_SUBSCRIPTION: id.clone()}, "notifications": filter.to_json()}});
    if frames.try_send(sse::message(&ack)).is_err() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let key = app.modern.next.fetch_add(1, Ordering::Relaxed);
    app.modern.listeners.lock_ignore_poison().insert(
        key,
        Listener {
            id: id.clone(),
            filter,
            out: frames.clone(),
        },
    );
    app.stats
        .record(stats::method_label(method), "", t0.elapsed(), None);
    let app = app.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = frames.closed() => {}
            _ = app.shutdown.cancelled() => {
                let done = json!({"jsonrpc": "2.0", "id": id.clone(),
                    "result": {"resultType": "complete", "_meta": {META_SUBSCRIPTION: id}}});
                let _ = frames.try_send(sse::message(&done));
            }
        }
        app.modern.listeners.lock_ignore_poison().remove(&key);
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {}}}})
    }

    fn good(name: &str) -> HeaderMap {
        headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ])
    }

    #[test]
    fn modern_requests_are_told_apart_from_legacy_ones() {
        let legacy = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert!(!is_modern(&HeaderMap::new(), &legacy));
        assert!(!is_modern(
            &headers(&[
                ("mcp-protocol-version", "2025-11-25"),
                ("mcp-session-id", "x")
            ]),
            &legacy
        ));
        assert!(!is_modern(
            &headers(&[("mcp-protocol-version", "2025-06-18")]),
            &legacy
        ));
        assert!(is_modern(&HeaderMap::new(), &call("echo")));
        assert!(is_modern(
            &headers(&[("mcp-protocol-version", "2026-07-28")]),
            &legacy
        ));
        assert!(is_modern(
            &headers(&[("mcp-protocol-version", "2099-01-01")]),
            &legacy
        ));
        // A session header with a legacy body stays legacy; so does a legacy-shaped initialize.
        assert!(!is_modern(
            &headers(&[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-session-id", "x")
            ]),
            &legacy
        ));
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}}});
        assert!(!is_modern(&HeaderMap::new(), &init));
        assert!(!is_modern(
            &headers(&[("mcp-protocol-version", "2026-07-28")]),
            &init
        ));
        // An initialize in modern shape is a modern request (for a removed method).
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"_meta": {META_VERSION: "2026-07-28"}}});
        assert!(is_modern(&HeaderMap::new(), &init));
    }

    #[test]
    fn a_well_formed_request_passes_and_names_may_be_base64() {
        assert_eq!(
            check(&good("echo"), &call("echo")),
            Ok(Checked { log_min: None })
        );
        let odd = "héllo wörld";
        let enc = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(odd)
        );
        assert!(check(&good(&enc), &call(odd)).is_ok());
        let mut with_level = call("echo");
        with_level["params"]["_meta"][META_LOG_LEVEL] = json!("warning");
        assert_eq!(
            check(&good("echo"), &with_level),
            Ok(Checked {
                log_min: jsonrpc::level_rank("warning")
            })
        );
    }

    fn code(r: Result<Checked, Refusal>) -> (StatusCode, i64) {
        let r = r.unwrap_err();
        (r.status, r.code)
    }

    #[test]
    fn headers_that_are_missing_or_disagree_with_the_body_are_a_mismatch() {
        let mismatch = (StatusCode::BAD_REQUEST, HEADER_MISMATCH);
        let c = call("echo");
        for missing in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
            let mut h = good("echo");
            h.remove(missing);
            assert_eq!(code(check(&h, &c)), mismatch, "without {missing}");
        }
        assert_eq!(code(check(&good("other"), &c)), mismatch);
        let mut h = good("echo");
        h.insert("mcp-method", HeaderValue::from_static("tools/list"));
        assert_eq!(code(check(&h, &c)), mismatch);
        let mut h = good("echo");
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        assert_eq!(code(check(&h, &c)), mismatch, "header vs _meta version");
        let mut h = good("echo");
        h.insert("mcp-name", HeaderValue::from_bytes(b"ech\xff").unwrap());
        assert_eq!(code(check(&h, &c)), mismatch, "not visible ASCII");
        assert_eq!(code(check(&good("=?base64?!!!?="), &c)), mismatch);
        // tools/list needs no Mcp-Name.
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_VERSION: "2026-07-28", META_CAPABILITIES: {}}}});
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
        ]);
        assert!(check(&h, &list).is_ok());
    }

    #[test]
    fn missing_meta_fields_are_invalid_params() {
        let invalid = (StatusCode::BAD_REQUEST, jsonrpc::INVALID_PARAMS);
        let mut c = call("echo");
        c["params"]["_meta"]
            .as_object_mut()
            .unwrap()
            .remove(META_CAPABILITIES);
        assert_eq!(code(check(&good("echo"), &c)), invalid);
        let mut c = call("echo");
        c["params"]["_meta"]
            .as_object_mut()
            .unwrap()
            .remove(META_VERSION);
        assert_eq!(code(check(&good("echo"), &c)), invalid);
        let mut c = call("echo");
        c["params"].as_object_mut().unwrap().remove("_meta");
        assert_eq!(code(check(&good("echo"), &c)), invalid);
        let mut c = call("echo");
        c["params"]["_meta"][META_LOG_LEVEL] = json!("loud");
        assert_eq!(code(check(&good("echo"), &c)), invalid);
    }

    #[test]
    fn versions_we_do_not_serve_statelessly_are_refused_with_the_supported_list() {
        let mut c = call("echo");
        c["params"]["_meta"][META_VERSION] = json!("2099-01-01");
        let mut h = good("echo");
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2099-01-01"),
        );
        let r = check(&h, &c).unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_REQUEST, UNSUPPORTED_VERSION)
        );
        let body = r.body(json!(1));
        assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
        assert_eq!(body["error"]["data"]["supported"][0], "2026-07-28");
        assert!(body["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25")));
        // A legacy version in modern shape: not a modern error, so dual-era clients fall back.
        c["params"]["_meta"][META_VERSION] = json!("2025-11-25");
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        assert_eq!(
            code(check(&h, &c)),
            (StatusCode::BAD_REQUEST, jsonrpc::INVALID_REQUEST)
        );
    }

    #[test]
    fn the_legacy_child_sees_no_modern_fields() {
        let mut c = call("echo");
        c["params"]["_meta"]["progressToken"] = json!("p");
        c["params"]["requestState"] = json!("s");
        let out = for_legacy_child(c);
        assert_eq!(out["params"]["_meta"], json!({"progressToken": "p"}));
        assert!(out["params"].get("requestState").is_none());
        let out = for_legacy_child(call("echo"));
        assert!(out["params"].get("_meta").is_none());
        assert_eq!(out["params"]["name"], "echo");
    }

    #[test]
    fn results_are_stamped_as_the_spec_requires() {
        let stamp = Stamp {
            server_info: Some(json!({"name": "s", "version": "1"})),
            public: true,
        };
        let mut v = jsonrpc::result(json!(1), json!({"tools": []}));
        stamp.apply("tools/list", &mut v);
        assert_eq!(v["result"]["resultType"], "complete");
        assert_eq!(v["result"]["ttlMs"], LIST_TTL_MS);
        assert_eq!(v["result"]["cacheScope"], "public");
        assert_eq!(v["result"]["_meta"][META_SERVER_INFO]["name"], "s");
        let mut v = jsonrpc::result(json!(1), json!({"contents": []}));
        stamp.apply("resources/read", &mut v);
        assert_eq!(
            (
                v["result"]["ttlMs"].clone(),
                v["result"]["cacheScope"].clone()
            ),
            (json!(0), json!("private"))
        );
        let mut v = jsonrpc::result(json!(1), json!({"content": []}));
        stamp.apply("tools/call", &mut v);
        assert_eq!(v["result"]["resultType"], "complete");
        assert!(v["result"].get("ttlMs").is_none());
        let private = Stamp {
            server_info: None,
            public: false,
        };
        let mut v = jsonrpc::result(json!(1), json!({"prompts": []}));
        private.apply("prompts/list", &mut v);
        assert_eq!(v["result"]["cacheScope"], "private");
        assert!(v["result"].get("_meta").is_none());
        let mut e = jsonrpc::error(json!(1), -32002, "no such resource");
        private.apply("resources/read", &mut e);
        assert_eq!(e["error"]["code"], jsonrpc::INVALID_PARAMS);
    }

    #[test]
    fn discover_comes_from_the_cached_handshake() {
        let init = json!({"protocolVersion": "2025-11-25", "instructions": "be nice",
            "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true, "listChanged": true}, "tasks": {}},
            "serverInfo": {"name": "child", "version": "9"}});
        let stamp = Stamp {
            server_info: init.get("serverInfo").cloned(),
            public: false,
        };
        let v = discover(&init, &stamp, json!("d"));
        let r = &v["result"];
        assert_eq!(v["id"], "d");
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["supportedVersions"][0], "2026-07-28");
        assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(r["capabilities"]["resources"], json!({"listChanged": true}));
        assert!(r["capabilities"].get("tasks").is_none());
        assert_eq!(r["instructions"], "be nice");
        assert_eq!(r["_meta"][META_SERVER_INFO]["name"], "child");
        assert_eq!(r["ttlMs"], LIST_TTL_MS);
        assert_eq!(r["cacheScope"], "private");
    }

    #[tokio::test]
    async fn listeners_get_only_what_they_opted_in_to_tagged_with_their_id() {
        let m = Modern::default();
        let (ta, mut ra) = tokio::sync::mpsc::channel(4);
        let (tb, mut rb) = tokio::sync::mpsc::channel(1);
        m.listeners.lock().unwrap().insert(
            1,
            Listener {
                id: json!(7),
                filter: Filter {
                    tools: true,
                    ..Default::default()
                },
                out: ta,
            },
        );
        m.listeners.lock().unwrap().insert(
            2,
            Listener {
                id: json!("b"),
                filter: Filter {
                    tools: true,
                    prompts: true,
                    resources: false,
                },
                out: tb,
            },
        );
        m.broadcast(&json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}));
        assert!(ra.try_recv().is_err(), "a did not ask for prompts");
        let got = String::from_utf8(rb.try_recv().unwrap().to_vec()).unwrap();
        assert!(
            got.contains("prompts/list_changed")
                && got.contains(r#""io.modelcontextprotocol/subscriptionId":"b""#),
            "{got}"
        );
        // b's stream holds one frame: the second notification finds it full and drops b.
        m.broadcast(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        m.broadcast(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
        let got = String::from_utf8(ra.try_recv().unwrap().to_vec()).unwrap();
        assert!(
            got.contains(r#""io.modelcontextprotocol/subscriptionId":7"#),
            "{got}"
        );
        assert_eq!(
            m.listeners(),
            1,
            "the listener that stopped reading is gone"
        );
    }

    #[test]
    fn a_legacy_client_of_a_modern_child_is_told_the_versions_and_what_to_do() {
        let up = Upstream::new(
            true,
            None,
            Arc::new(|_| {}),
            Arc::new(stats::Stats::default()),
            Arc::new(super::super::policy::ToolPolicy::All),
        );
        up.set_init(super::super::upstream::InitInfo {
            protocol_version: "2026-07-28".into(),
            result: json!({"supportedVersions": ["2026-07-28"], "capabilities": {}}),
        });
        let v = legacy_refusal(&up, json!(1));
        assert_eq!(v["id"], 1);
        assert_eq!(v["error"]["code"], UNSUPPORTED_VERSION);
        assert_eq!(v["error"]["data"]["supported"], json!(["2026-07-28"]));
        let text = v["error"]["message"].as_str().unwrap();
        assert!(
            text.contains("2026-07-28 client") && text.contains(META_VERSION),
            "{text}"
        );
    }

    #[test]
    fn the_in_flight_bound_holds_and_slots_are_released() {
        let m = Modern::default();
        let a = m.try_slot(2).unwrap();
        let _b = m.try_slot(2).unwrap();
        assert!(m.try_slot(2).is_none());
        assert_eq!(m.in_flight(), 2);
        drop(a);
        assert!(m.try_slot(2).is_some());
    }
}
