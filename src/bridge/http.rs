//! HTTP surface: legacy HTTP+SSE (`/sse`, `/messages`), Streamable HTTP (`/mcp`), and the probe
//! endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Owns request parsing, status codes and headers only; every MCP decision is `App::handle`'s.
//! One era rule lives here, because it is about which endpoint a client may use at all: when the
//! child speaks only 2026-07-28 (`probe`), a legacy `initialize` on `/mcp` is 400 with −32022
//! naming the child's versions, and `GET /sse` is 400 with a plain reason (counted in
//! `mcp_bridge_era_refused_total`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::Router;
use serde_json::Value;
use tracing::Instrument as _;

use super::access::Failure;
use super::admission;
use super::app::RateLimit;
use super::app::{pump, App, Outcome};
use super::guard::{self, ClientKey};
use super::jsonrpc;
use super::sse;
use super::stats::{self, CloseReason, Era, EraRefusal, ErrorType, Transport};

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

pub fn router(app: Arc<App>) -> Router {
    let mcp = Router::new()
        .route("/sse", get(sse_open))
        .route("/messages", post(sse_message))
        .route("/messages/", post(sse_message))
        .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .layer(middleware::from_fn_with_state(app.clone(), guard_mcp))
        .layer(DefaultBodyLimit::max(app.cfg.max_body));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(PROTECTED_RESOURCE_PATH, get(protected_resource))
        .route(
            &format!("{PROTECTED_RESOURCE_PATH}/mcp"),
            get(protected_resource),
        )
        .merge(mcp)
        // Outermost: the DNS-rebinding rule holds for every endpoint, probes included.
        .layer(middleware::from_fn_with_state(app.clone(), check_origin))
        .with_state(app)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

fn json_rpc_error(status: StatusCode, code: i64, text: &str) -> Response {
    (status, axum::Json(jsonrpc::error(Value::Null, code, text))).into_response()
}

/// The MCP endpoints (counted in request metrics; probes and unknown paths are not).
fn is_mcp_endpoint(path: &str) -> bool {
    matches!(path, "/sse" | "/messages" | "/messages/" | "/mcp")
}

/// A refusal sent without reading the request body: hyper will not reuse the connection, so say
/// so (`Connection: close`) rather than let the client race its next request into a closing socket.
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// An MCP-endpoint request refused before its JSON-RPC method was known: counted as method
/// `other` (probes are never counted).
fn refused(app: &App, t0: Instant, e: ErrorType) {
    app.stats.record(stats::OTHER, "", t0.elapsed(), Some(e));
}

/// DNS-rebinding protection on every endpoint: a foreign `Origin` (and, with `--allow-host`, a
/// foreign `Host`) gets 403. Requests without `Origin` (every non-browser client) pass.
async fn check_origin(State(app): State<Arc<App>>, req: Request<Body>, next: Next) -> Response {
    let t0 = Instant::now();
    let h = req.headers();
    let origin_ok = h
        .get(header::ORIGIN)
        .map(|o| {
            o.to_str().is_ok_and(|o| {
                guard::origin_allowed(o, &app.cfg.allow_origins, &app.cfg.allow_hosts)
            })
        })
        .unwrap_or(true);
    let host_ok = guard::host_allowed(header_str(h, header::HOST.as_str()), &app.cfg.allow_hosts);
    if !(origin_ok && host_ok) {
        let what = if origin_ok { "Host" } else { "Origin" };
        tracing::debug!(path = %req.uri().path(), what, "refused: foreign {what}");
        if is_mcp_endpoint(req.uri().path()) {
            refused(&app, t0, ErrorType::Unauthorized);
        }
        return closing(plain(
            StatusCode::FORBIDDEN,
            &format!("Forbidden: foreign {what}"),
        ));
    }
    next.run(req).await
}

/// The caller of an MCP-endpoint request, as `guard_mcp` established it (`anonymous` without
/// auth); handlers bind sessions to it.
#[derive(Clone)]
pub(crate) struct Who(pub Arc<str>);

/// Consumer name of requests to a bridge without auth.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// The rate of failed authentication attempts per client address (a token cannot be guessed
/// faster than this, whatever --rate-limit says).
const UNAUTHENTICATED_RATE: RateLimit = RateLimit {
    per_sec: 10.0,
    burst: 20.0,
};

/// MCP endpoints only: who is calling (bearer token of a consumer, or a JWT), that caller's rate
/// limit, request size. A request that fails authentication is rate-limited by client address,
/// so guessing tokens is slow; one that passes is limited by its consumer's own rate.
async fn guard_mcp(State(app): State<Arc<App>>, mut req: Request<Body>, next: Next) -> Response {
    let t0 = Instant::now();
    let addr = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => addr.ip(),
        None => std::net::Ipv4Addr::UNSPECIFIED.into(),
    };
    let addr_key = || ClientKey::Addr(addr);
    let authorization =
        header_str(req.headers(), header::AUTHORIZATION.as_str()).map(str::to_string);
    let verdict = match &app.access {
        None => Ok(None),
        // A signature is verified only for an address whose failed attempts left budget: a
        // flood of forged JWTs must not cost a verification each (consumers' tokens and
        // recently verified JWTs are cheap and always checked).
        Some(access) => access
            .authenticate(authorization.as_deref(), || {
                app.limiter
                    .exhausted(&addr_key(), UNAUTHENTICATED_RATE, Instant::now())
                    .is_none()
            })
            .await
            .map(Some),
    };
    if verdict == Err(Failure::Throttled) {
        refused(&app, t0, ErrorType::RateLimited);
        app.stats.rate_limited("unauthenticated");
        return closing(too_many(Duration::from_secs(1)));
    }
    let (key, rate, label) = match &verdict {
        Ok(Some(c)) => (
            ClientKey::Consumer(c.name.clone()),
            c.rate.or(app.cfg.rate_limit),
            c.label.clone(),
        ),
        Ok(None) => (addr_key(), app.cfg.rate_limit, Arc::from(ANONYMOUS)),
        Err(_) => (
            addr_key(),
            Some(UNAUTHENTICATED_RATE),
            Arc::from("unauthenticated"),
        ),
    };
    if let Some(rate) = rate {
        if let Err(wait) = app.limiter.check(key, rate, Instant::now()) {
            refused(&app, t0, ErrorType::RateLimited);
            app.stats.rate_limited(&label);
            tracing::debug!(path = %req.uri().path(), consumer = %label, "refused: rate limited");
            return closing(too_many(wait));
        }
    }
    let who = match verdict {
        Ok(Some(c)) => c.name,
        Ok(None) => Arc::from(ANONYMOUS),
        Err(failure) => {
            refused(&app, t0, ErrorType::Unauthorized);
            app.stats.auth_refused(failure.label());
            tracing::debug!(path = %req.uri().path(), reason = failure.label(), "refused: not authenticated");
            return closing(unauthorized(&app, req.headers(), &failure));
        }
    };
    req.extensions_mut().insert(Who(who));
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    admit(&app, t0, req, next).await
}

/// 429 with `Retry-After` (whole seconds, at least 1) and a JSON-RPC error body.
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = json_rpc_error(
        StatusCode::TOO_MANY_REQUESTS,
        jsonrpc::INVALID_REQUEST,
        &format!("Too Many Requests: retry after {secs}s"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// 401 (403 for a missing scope) with the `WWW-Authenticate` challenge: `Bearer` and, when the
/// bridge accepts access tokens, the protected-resource metadata URL (RFC 9728, MCP
/// authorization) and the RFC 6750 error of a token that was given.
fn unauthorized(app: &App, h: &HeaderMap, failure: &Failure) -> Response {
    let (status, text) = match failure {
        Failure::Missing => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized: a bearer token is required (Authorization: Bearer <token>)".to_string(),
        ),
        Failure::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized: the bearer token is not valid here".to_string(),
        ),
        Failure::Jwt(r) => (
            StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED),
            format!("Unauthorized: {}", r.description()),
        ),
        Failure::Throttled => (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests".into()),
    };
    let challenge = match app.access.as_ref().and_then(|a| a.jwt()) {
        Some(v) => {
            let refusal = match failure {
                Failure::Jwt(r) => Some(r.clone()),
                Failure::InvalidToken => Some(super::jwt::Refusal::Malformed),
                Failure::Missing | Failure::Throttled => None,
            };
            v.challenge(&metadata_url(app, h), refusal.as_ref())
        }
        None if *failure == Failure::Missing => "Bearer".to_string(),
        None => r#"Bearer error="invalid_token""#.to_string(),
    };
    let mut r = plain(status, &text);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// This bridge's resource identifier: the manifest's `auth.jwt.resource`, else the origin the
/// client used (`http://<Host>`).
fn resource(app: &App, h: &HeaderMap) -> String {
    app.access
        .as_ref()
        .and_then(|a| a.resource().map(str::to_string))
        .unwrap_or_else(|| {
            let host = header_str(h, header::HOST.as_str()).unwrap_or("localhost");
            format!("http://{host}")
        })
}

fn metadata_url(app: &App, h: &HeaderMap) -> String {
    let r = resource(app, h);
    format!("{}{PROTECTED_RESOURCE_PATH}", r.trim_end_matches('/'))
}

const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 protected-resource metadata (only when the bridge accepts access tokens).
async fn protected_resource(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match app.access.as_ref().and_then(|a| a.jwt()) {
        Some(v) => axum::Json(v.metadata(&resource(&app, &headers))).into_response(),
        None => plain(
            StatusCode::NOT_FOUND,
            "Not Found: this bridge does not accept OAuth access tokens",
        ),
    }
}

/// Admission of a POST body before anything parses it (see `admission`): content type, size on
/// Content-Length at once, a share of the in-flight byte budget for the body (503 + Retry-After
/// when the bridge holds too much already), at most `max_body` bytes read, then the streaming shape
/// scan (one object, bounded values and depth) and a share for the tree the body will become. The
/// share is held until the handler has answered (or, for a stream, has forwarded the message).
async fn admit(app: &Arc<App>, t0: Instant, req: Request<Body>, next: Next) -> Response {
    let too_large = |app: &App, why: &str| {
        refused(app, t0, ErrorType::TooLarge);
        closing(json_rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            jsonrpc::INVALID_REQUEST,
            why,
        ))
    };
    let body_limit = || {
        format!(
            "Payload Too Large: requests are limited to {} bytes",
            app.cfg.max_body
        )
    };
    if let Some(ct) = header_str(req.headers(), header::CONTENT_TYPE.as_str()) {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            refused(app, t0, ErrorType::BadRequest);
            return closing(json_rpc_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                jsonrpc::INVALID_REQUEST,
                "Unsupported Media Type: MCP messages are sent as application/json",
            ));
        }
    }
    let declared = header_str(req.headers(), header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.cfg.max_body as u64) {
        return too_large(app, &body_limit());
    }
    let reserve = declared.map_or(app.cfg.max_body, |n| n as usize);
    let Some(mut charge) = app.budget.try_charge(reserve) else {
        discard(req.into_body(), app.cfg.max_body).await;
        return overloaded(app, t0, "the bridge holds as many request bytes as it may");
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, app.cfg.max_body).await {
        Ok(b) => b,
        Err(_) => return too_large(app, &body_limit()),
    };
    let shape = match admission::scan(&bytes, app.cfg.json_limits) {
        Ok(shape) => shape,
        Err(r @ (admission::Refusal::TooManyValues(_) | admission::Refusal::TooDeep(_))) => {
            return too_large(app, &r.to_string())
        }
        Err(r) => {
            refused(app, t0, ErrorType::BadRequest);
            let code = match r {
                admission::Refusal::NotJson(_) => jsonrpc::PARSE_ERROR,
                _ => jsonrpc::INVALID_REQUEST,
            };
            return json_rpc_error(StatusCode::BAD_REQUEST, code, &r.to_string());
        }
    };
    if !charge.extend(&app.budget, shape.values * admission::VALUE_COST) {
        return overloaded(app, t0, "the bridge holds as many request bytes as it may");
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(charge);
    resp
}

/// Read and drop what is left of a refused request's body (at most `limit` bytes, for at most
/// [`DISCARD_FOR`]), holding none of it. Closing a socket with unread data makes the kernel send
/// a reset, which can reach the client (or the edge in front of us) before our answer: it then sees
/// a broken connection (the edge: 502) instead of the 503 and its Retry-After.
async fn discard(body: Body, limit: usize) {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(DISCARD_FOR, async {
        let mut seen = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > limit {
                break;
            }
        }
    })
    .await;
}

/// How long a refused request's body is read and dropped before the connection is closed.
const DISCARD_FOR: Duration = Duration::from_secs(5);

/// Seconds a client refused for capacity is told to wait.
const RETRY_AFTER_SECS: u64 = 1;

/// 503 + Retry-After for a request refused for capacity, counted as `overloaded`.
fn overloaded(app: &App, t0: Instant, why: &str) -> Response {
    refused(app, t0, ErrorType::Overloaded);
    tracing::debug!(why, "refused: overloaded");
    let mut r = json_rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        jsonrpc::CHILD_UNAVAILABLE,
        &format!("Service Unavailable: {why}; retry after {RETRY_AFTER_SECS}s"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    closing(r)
}

/// A body that is not JSON: a JSON-RPC parse error (HTTP 400), counted as `bad_request`.
fn parse_error(app: &App) -> Response {
    app.stats.record(
        stats::OTHER,
        "",
        Duration::ZERO,
        Some(ErrorType::BadRequest),
    );
    json_rpc_error(
        StatusCode::BAD_REQUEST,
        jsonrpc::PARSE_ERROR,
        "Parse error: body is not JSON",
    )
}

/// The span every log line of one MCP message carries: its session and JSON-RPC request id.
fn request_span(session: &str, msg: &Value) -> tracing::Span {
    let id = msg.get("id").map_or_else(String::new, |v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    tracing::info_span!("mcp", session = %session, request_id = %id, method = %jsonrpc::method(msg))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (ready, detail) = app.readiness().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(detail)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let ready = app.readiness().await.0;
    let set = |g: &std::sync::atomic::AtomicI64, v: usize| {
        g.store(v as i64, std::sync::atomic::Ordering::Relaxed)
    };
    set(&app.stats.inflight_bytes, app.budget.in_use());
    set(&app.stats.inflight_budget, app.budget.total());
    set(&app.stats.modern_in_flight, app.modern.in_flight());
    set(&app.stats.modern_listeners, app.modern.listeners());
    crate::metrics::response(&app.stats.registry(ready))
}

/// A session that could not be opened (cap reached, draining, child cannot start): 503 with
/// Retry-After, counted as `overloaded`.
fn unavailable(app: &App, mut r: Response) -> Response {
    refused(app, Instant::now(), ErrorType::Overloaded);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    r
}

/// The shared child, when it speaks only 2026-07-28 (waits, bounded, while the probe runs).
async fn modern_child(app: &App) -> Option<&Arc<super::upstream::Upstream>> {
    let up = app.shared.as_ref()?;
    (up.wait_era(app.cfg.child.init_timeout).await == Some(Era::Modern)).then_some(up)
}

// ---- legacy HTTP+SSE (2024-11-05) ----

async fn sse_open(State(app): State<Arc<App>>, Extension(who): Extension<Who>) -> Response {
    if let Some(up) = modern_child(&app).await {
        app.stats.era_refused(EraRefusal::Sse);
        refused(&app, Instant::now(), ErrorType::BadRequest);
        return plain(
            StatusCode::BAD_REQUEST,
            &format!(
                "Bad Request: this service speaks only MCP {} (its server is a 2026-07-28 stdio server); the legacy HTTP+SSE transport is not offered: use POST /mcp with a 2026-07-28 client (params._meta[\"{}\"] and the MCP-Protocol-Version header on every request, no initialize)",
                up.supported_versions().join(", "),
                super::modern::META_VERSION
            ),
        );
    }
    let session = match app.open_session(Transport::Sse, who.0).await {
        Ok(s) => s,
        Err(e) => return unavailable(&app, plain(StatusCode::SERVICE_UNAVAILABLE, &e.message)),
    };
    let (frames, resp) = sse::response(
        app.cfg.keepalive,
        app.stats.clone(),
        app.shutdown.clone(),
        &[],
    );
    let endpoint = format!("/messages?session_id={}", session.id);
    let _ = frames.send(sse::event(Some("endpoint"), &endpoint)).await;
    session.set_outbound(Some(frames.clone()));
    // The stream is the session: when the client disconnects, the session closes and its calls
    // are cancelled at the child.
    let guard = session.stream_guard();
    tokio::spawn(async move {
        tokio::select! {
            _ = frames.closed() => {
                drop(guard);
                app.close_session(&session.id, CloseReason::ClientClosed);
            }
            _ = session.closed.cancelled() => drop(guard),
        }
    });
    resp
}

#[derive(serde::Deserialize)]
struct SessionQuery {
    session_id: Option<String>,
    #[serde(rename = "sessionId")]
    session_id_camel: Option<String>,
}

async fn sse_message(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    Query(q): Query<SessionQuery>,
    body: Bytes,
) -> Response {
    let Some(id) = q.session_id.or(q.session_id_camel) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: session_id is required",
        );
    };
    let Some(session) = app.session(&id).filter(|s| s.consumer == who.0) else {
        return plain(
            StatusCode::NOT_FOUND,
            "Not Found: unknown or expired session",
        );
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return parse_error(&app);
    };
    let Some(out) = session.outbound() else {
        return plain(StatusCode::NOT_FOUND, "Not Found: session has no stream");
    };
    let span = request_span(&session.id, &msg);
    match app.handle(&session, msg).instrument(span.clone()).await {
        Outcome::Accepted => {}
        Outcome::Reply(v) => {
            let _ = out.send(sse::message(&v)).await;
        }
        Outcome::Forwarded(call) => {
            tokio::spawn(pump(call, out, session.clone(), app.clone()).instrument(span));
        }
    }
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

// ---- Streamable HTTP (2025-03-26 / 2025-06-18 / 2025-11-25) ----

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn accepts_sse(h: &HeaderMap) -> bool {
    header_str(h, header::ACCEPT.as_str()).is_some_and(|a| a.contains("text/event-stream"))
}

/// A request refused before it reaches the session logic (kept small; rendered on return).
struct Reject(StatusCode, i64, String);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        json_rpc_error(self.0, self.1, &self.2)
    }
}

fn check_version(h: &HeaderMap) -> Result<(), Reject> {
    match header_str(h, VERSION_HEADER) {
        Some(v) if !jsonrpc::SUPPORTED_VERSIONS.contains(&v) => Err(Reject(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            format!("Bad Request: unsupported MCP-Protocol-Version {v}"),
        )),
        _ => Ok(()),
    }
}

/// The session a request names, if the same caller opened it (another caller's session is
/// "not found" too: a leaked session id is of no use to anyone else).
fn existing_session(
    app: &App,
    h: &HeaderMap,
    who: &Who,
) -> Result<Arc<super::app::Session>, Reject> {
    let Some(id) = header_str(h, SESSION_HEADER) else {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required".into(),
        ));
    };
    app.session(id)
        .filter(|s| s.consumer == who.0)
        .ok_or_else(|| {
            Reject(
                StatusCode::NOT_FOUND,
                jsonrpc::CHILD_UNAVAILABLE,
                "Session not found".into(),
            )
        })
}

async fn mcp_post(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check_version(&headers) {
        // A 2026-07-28 request naming a version we do not speak gets that era's answer
        // (−32022 with the supported versions), not the legacy one.
        return match serde_json::from_slice::<Value>(&body) {
            Ok(msg) if super::modern::is_modern(&headers, &msg) => {
                super::modern::serve(app, who.0, headers, msg).await
            }
            _ => r.into_response(),
        };
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return parse_error(&app),
    };
    if !msg.is_array() && super::modern::is_modern(&headers, &msg) {
        return super::modern::serve(app, who.0, headers, msg).await;
    }
    if msg.is_array() {
        app.stats.record(
            stats::OTHER,
            "",
            Duration::ZERO,
            Some(ErrorType::BadRequest),
        );
        return json_rpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let is_init =
        jsonrpc::kind(&msg) == jsonrpc::Kind::Request && jsonrpc::method(&msg) == "initialize";
    if is_init && header_str(&headers, SESSION_HEADER).is_none() {
        if let Some(up) = modern_child(&app).await {
            app.stats.era_refused(EraRefusal::Initialize);
            app.stats.record(
                stats::method_label("initialize"),
                "",
                Duration::ZERO,
                Some(ErrorType::BadRequest),
            );
            let v = super::modern::legacy_refusal(up, msg["id"].clone());
            return (StatusCode::BAD_REQUEST, axum::Json(v)).into_response();
        }
    }
    let (session, created) = if header_str(&headers, SESSION_HEADER).is_none() && is_init {
        match app
            .open_session(Transport::StreamableHttp, who.0.clone())
            .await
        {
            Ok(s) => (s, true),
            Err(e) => {
                return unavailable(
                    &app,
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(e.to_response(msg["id"].clone())),
                    )
                        .into_response(),
                )
            }
        }
    } else {
        match existing_session(&app, &headers, &who) {
            Ok(s) => (s, false),
            Err(r) => return r.into_response(),
        }
    };
    let sid = session.id.to_string();
    let span = request_span(&sid, &msg);
    let outcome = app.handle(&session, msg).instrument(span.clone()).await;
    match outcome {
        Outcome::Accepted => StatusCode::ACCEPTED.into_response(),
        Outcome::Reply(v) => {
            if created && v.get("error").is_some() {
                // The session never came to be (e.g. the child is down): do not keep it.
                app.close_session(&sid, CloseReason::ChildExited);
                return axum::Json(v).into_response();
            }
            let mut resp = axum::Json(v).into_response();
            if let Ok(h) = HeaderValue::from_str(&sid) {
                resp.headers_mut().insert(SESSION_HEADER, h);
            }
            resp
        }
        Outcome::Forwarded(mut call) => {
            if accepts_sse(&headers) {
                let (frames, resp) = sse::response(
                    app.cfg.keepalive,
                    app.stats.clone(),
                    app.shutdown.clone(),
                    &[(SESSION_HEADER, sid)],
                );
                tokio::spawn(pump(call, frames, session.clone(), app.clone()).instrument(span));
                resp
            } else {
                // JSON response: wait for the result; dropping the future on disconnect cancels.
                let reply = tokio::select! {
                    r = call.response().instrument(span) => r,
                    _ = session.closed.cancelled() => None,
                };
                match reply {
                    Some(v) => {
                        let mut resp = axum::Json(v).into_response();
                        if let Ok(h) = HeaderValue::from_str(&sid) {
                            resp.headers_mut().insert(SESSION_HEADER, h);
                        }
                        resp
                    }
                    None => plain(StatusCode::NOT_FOUND, "session closed"),
                }
            }
        }
    }
}

async fn mcp_get(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check_version(&headers) {
        return r.into_response();
    }
    if !accepts_sse(&headers) {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /mcp needs Accept: text/event-stream",
        );
    }
    let session = match existing_session(&app, &headers, &who) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let (frames, resp) = sse::response(
        app.cfg.keepalive,
        app.stats.clone(),
        app.shutdown.clone(),
        &[(SESSION_HEADER, session.id.to_string())],
    );
    session.set_outbound(Some(frames.clone()));
    let guard = session.stream_guard();
    tokio::spawn(async move {
        tokio::select! {
            _ = frames.closed() => {}
            _ = session.closed.cancelled() => {}
        }
        drop(guard);
    });
    resp
}

async fn mcp_delete(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
) -> Response {
    match existing_session(&app, &headers, &who) {
        Ok(s) => {
            app.close_session(&s.id, CloseReason::Deleted);
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}
