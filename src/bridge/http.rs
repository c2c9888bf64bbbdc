//! HTTP surface: legacy HTTP+SSE (`/sse`, `/messages`), Streamable HTTP (`/mcp`), and the probe
//! endpoints (`/healthz`, `/readyz`, `/metrics`).
//!
//! Owns request parsing, status codes and headers only; every MCP decision is `App::handle`'s.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::app::{pump, App, Outcome};
use super::jsonrpc;
use super::sse;
use super::stats::{CloseReason, Transport};

/// docs/contracts.md: default request size limit 4 MB.
const BODY_LIMIT: usize = 4 * 1024 * 1024;
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

pub fn router(app: Arc<App>) -> Router {
    let mcp = Router::new()
        .route("/sse", get(sse_open))
        .route("/messages", post(sse_message))
        .route("/messages/", post(sse_message))
        .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .layer(middleware::from_fn_with_state(app.clone(), check_token))
        .layer(middleware::from_fn(check_origin))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(mcp)
        .with_state(app)
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

fn json_rpc_error(status: StatusCode, code: i64, text: &str) -> Response {
    (status, axum::Json(jsonrpc::error(Value::Null, code, text))).into_response()
}

/// docs/contracts.md: MCP endpoints require the bearer token when one is configured (probe
/// endpoints never do).
async fn check_token(State(app): State<Arc<App>>, req: Request<Body>, next: Next) -> Response {
    if let Some(token) = &app.cfg.token {
        let given = header_str(req.headers(), header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: bearer token required",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Compare without an early exit, so response time does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// DNS-rebinding protection: a browser page from a foreign origin must not drive a local server.
/// Requests without `Origin` (every non-browser client) pass.
async fn check_origin(req: Request<Body>, next: Next) -> Response {
    if let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    {
        let authority = origin
            .split("://")
            .nth(1)
            .unwrap_or("")
            .trim_end_matches('/');
        let host = authority.rsplit_once(':').map_or(authority, |(h, p)| {
            if p.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                authority
            }
        });
        let same_host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            == Some(authority);
        let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
        if !(same_host || loopback) {
            return plain(StatusCode::FORBIDDEN, "Forbidden: foreign Origin");
        }
    }
    next.run(req).await
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
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.stats.render(ready),
    )
        .into_response()
}

// ---- legacy HTTP+SSE (2024-11-05) ----

async fn sse_open(State(app): State<Arc<App>>) -> Response {
    let session = match app.open_session(Transport::Sse).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, &e.message),
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
    Query(q): Query<SessionQuery>,
    body: Bytes,
) -> Response {
    let Some(id) = q.session_id.or(q.session_id_camel) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: session_id is required",
        );
    };
    let Some(session) = app.session(&id) else {
        return plain(
            StatusCode::NOT_FOUND,
            "Not Found: unknown or expired session",
        );
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return json_rpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::PARSE_ERROR,
            "body is not JSON",
        );
    };
    let Some(out) = session.outbound() else {
        return plain(StatusCode::NOT_FOUND, "Not Found: session has no stream");
    };
    match app.handle(&session, msg).await {
        Outcome::Accepted => {}
        Outcome::Reply(v) => {
            let _ = out.send(sse::message(&v)).await;
        }
        Outcome::Forwarded(call) => {
            tokio::spawn(pump(call, out, session.clone()));
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

fn existing_session(app: &App, h: &HeaderMap) -> Result<Arc<super::app::Session>, Reject> {
    let Some(id) = header_str(h, SESSION_HEADER) else {
        return Err(Reject(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "Bad Request: Mcp-Session-Id header is required".into(),
        ));
    };
    app.session(id).ok_or_else(|| {
        Reject(
            StatusCode::NOT_FOUND,
            jsonrpc::CHILD_UNAVAILABLE,
            "Session not found".into(),
        )
    })
}

async fn mcp_post(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = check_version(&headers) {
        return r.into_response();
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return json_rpc_error(
                StatusCode::BAD_REQUEST,
                jsonrpc::PARSE_ERROR,
                "Parse error: body is not JSON",
            )
        }
    };
    if msg.is_array() {
        return json_rpc_error(
            StatusCode::BAD_REQUEST,
            jsonrpc::INVALID_REQUEST,
            "JSON-RPC batches are not supported",
        );
    }
    let is_init =
        jsonrpc::kind(&msg) == jsonrpc::Kind::Request && jsonrpc::method(&msg) == "initialize";
    let (session, created) = if header_str(&headers, SESSION_HEADER).is_none() && is_init {
        match app.open_session(Transport::StreamableHttp).await {
            Ok(s) => (s, true),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(e.to_response(msg["id"].clone())),
                )
                    .into_response()
            }
        }
    } else {
        match existing_session(&app, &headers) {
            Ok(s) => (s, false),
            Err(r) => return r.into_response(),
        }
    };
    let sid = session.id.to_string();
    let outcome = app.handle(&session, msg).await;
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
                tokio::spawn(pump(call, frames, session.clone()));
                resp
            } else {
                // JSON response: wait for the result; dropping the future on disconnect cancels.
                let reply = tokio::select! {
                    r = call.handle.response() => r,
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

async fn mcp_get(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = check_version(&headers) {
        return r.into_response();
    }
    if !accepts_sse(&headers) {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /mcp needs Accept: text/event-stream",
        );
    }
    let session = match existing_session(&app, &headers) {
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

async fn mcp_delete(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match existing_session(&app, &headers) {
        Ok(s) => {
            app.close_session(&s.id, CloseReason::Deleted);
            StatusCode::OK.into_response()
        }
        Err(r) => r.into_response(),
    }
}
