//! A fake MCP server on loopback for the client's and the gate's unit tests: legacy sessions
//! (Streamable HTTP, `initialize` + `Mcp-Session-Id`), stateless 2026-07-28 requests, or both,
//! with faults on demand. It checks what a 2026-07-28 server must check (the headers against the
//! body, `_meta`, the version), so a client that sends a wrong request gets the spec's errors.
//!
//! Tests only (`#[cfg(test)]`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

use super::modern::{META_CAPABILITIES, META_SERVER_INFO, META_VERSION};

/// What the fake server speaks and how it misbehaves.
#[derive(Clone)]
pub struct Spec {
    /// Answers `initialize` and legacy sessions.
    pub legacy: bool,
    /// Answers 2026-07-28 requests (else: 400 "No valid session ID", as a legacy SDK does).
    pub modern: bool,
    /// `supportedVersions` (modern versions it serves statelessly come first).
    pub supported: Vec<&'static str>,
    /// The tools it lists (each echoes `arguments.text`).
    pub tools: Vec<Value>,
    /// Modern tools/list answers a JSON-RPC error (the server lies in its discover answer).
    pub modern_list_fails: bool,
    /// server/discover answers after this long.
    pub discover_delay: Duration,
    /// Every result of a modern request is `input_required`.
    pub input_required: bool,
}

impl Spec {
    fn base(legacy: bool, modern: bool, supported: Vec<&'static str>) -> Self {
        Self {
            legacy,
            modern,
            supported,
            tools: vec![json!({"name": "echo", "inputSchema": {"type": "object",
                "properties": {"text": {"type": "string"}}}})],
            modern_list_fails: false,
            discover_delay: Duration::ZERO,
            input_required: false,
        }
    }
    /// Legacy only (a TypeScript SDK 1.x / Python SDK 1.x server).
    pub fn legacy() -> Self {
        Self::base(true, false, vec![])
    }
    /// 2026-07-28 only: refuses `initialize`.
    pub fn modern() -> Self {
        Self::base(false, true, vec!["2026-07-28"])
    }
    /// Both eras, as the bridge.
    pub fn dual() -> Self {
        Self::base(true, true, vec!["2026-07-28", "2025-11-25", "2025-06-18"])
    }
}

/// A running fake: its base URL and every request it received (method, headers, body).
pub struct Fake {
    pub base: String,
    pub seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// The methods received, in order.
    pub fn methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["method"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[derive(Clone)]
struct Ctx {
    spec: Spec,
    seen: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
}

pub async fn start(spec: Spec) -> Fake {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ctx = Ctx {
        spec,
        seen: seen.clone(),
    };
    let app = axum::Router::new()
        .route("/mcp", post(handle).delete(|| async { StatusCode::OK }))
        .with_state(ctx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Fake { base, seen, task }
}

fn rpc(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn error(id: &Value, status: StatusCode, code: i64, message: &str) -> Response {
    rpc(
        status,
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn handle(State(ctx): State<Ctx>, headers: HeaderMap, body: String) -> Response {
    let Ok(msg) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    ctx.seen
        .lock()
        .unwrap()
        .push((headers.clone(), msg.clone()));
    let spec = &ctx.spec;
    let id = msg["id"].clone();
    let method = msg["method"].as_str().unwrap_or("").to_string();
    let meta = &msg["params"]["_meta"];
    if meta.get(META_VERSION).is_some() {
        if !spec.modern {
            return (
                StatusCode::BAD_REQUEST,
                "Bad Request: No valid session ID provided",
            )
                .into_response();
        }
        return modern(spec, &headers, &msg, id, &method).await;
    }
    if !spec.legacy {
        // A 2026-07-28-only server: the request lacks the required headers and `_meta`.
        return error(
            &id,
            StatusCode::BAD_REQUEST,
            -32020,
            "Header mismatch: the MCP-Protocol-Version header is required (this server speaks 2026-07-28 only)",
        );
    }
    match method.as_str() {
        "initialize" => {
            let mut r = rpc(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18",
                    "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "1"}}}),
            );
            r.headers_mut()
                .insert("mcp-session-id", "fake-session".parse().unwrap());
            return r;
        }
        _ if header(&headers, "mcp-session-id") != Some("fake-session") => {
            return (
                StatusCode::BAD_REQUEST,
                "Bad Request: No valid session ID provided",
            )
                .into_response()
        }
        "notifications/initialized" => return StatusCode::ACCEPTED.into_response(),
        _ => {}
    }
    match answer(spec, &msg, &method) {
        Ok(result) => rpc(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
        ),
        Err((code, m)) => error(&id, StatusCode::OK, code, &m),
    }
}

/// tools/list and tools/call, the same in both eras.
fn answer(spec: &Spec, msg: &Value, method: &str) -> Result<Value, (i64, String)> {
    match method {
        "tools/list" => Ok(json!({"tools": spec.tools})),
        "tools/call" => {
            let name = msg["params"]["name"].as_str().unwrap_or("");
            if !spec.tools.iter().any(|t| t["name"] == name) {
                return Err((-32602, format!("Unknown tool: {name}")));
            }
            let text = msg["params"]["arguments"]["text"].as_str().unwrap_or("");
            Ok(json!({"content": [{"type": "text", "text": format!("{text}|fake")}]}))
        }
        other => Err((-32601, format!("Method not found: {other}"))),
    }
}

async fn modern(
    spec: &Spec,
    headers: &HeaderMap,
    msg: &Value,
    id: Value,
    method: &str,
) -> Response {
    let meta = &msg["params"]["_meta"];
    let version = meta[META_VERSION].as_str().unwrap_or("");
    if !meta[META_CAPABILITIES].is_object() {
        return error(
            &id,
            StatusCode::BAD_REQUEST,
            -32602,
            "clientCapabilities missing",
        );
    }
    if header(headers, "mcp-protocol-version") != Some(version)
        || header(headers, "mcp-method") != Some(method)
    {
        return error(
            &id,
            StatusCode::BAD_REQUEST,
            -32020,
            "Header mismatch: version or method",
        );
    }
    if method == "tools/call" {
        let name = msg["params"]["name"].as_str().unwrap_or("");
        if header(headers, "mcp-name") != Some(name) {
            return error(
                &id,
                StatusCode::BAD_REQUEST,
                -32020,
                "Header mismatch: Mcp-Name",
            );
        }
        // x-mcp-header: a top-level annotated argument must be mirrored.
        let tool = spec.tools.iter().find(|t| t["name"] == name);
        if let Some(props) = tool.and_then(|t| t["inputSchema"]["properties"].as_object()) {
            for (key, p) in props {
                if let (Some(h), Some(v)) = (
                    p["x-mcp-header"].as_str(),
                    msg["params"]["arguments"][key].as_str(),
                ) {
                    if header(headers, &format!("mcp-param-{h}")) != Some(v) {
                        return error(
                            &id,
                            StatusCode::BAD_REQUEST,
                            -32020,
                            &format!("Header mismatch: Mcp-Param-{h}"),
                        );
                    }
                }
            }
        }
    }
    if !spec.supported.contains(&version) {
        return rpc(
            StatusCode::BAD_REQUEST,
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32022,
                "message": "Unsupported protocol version",
                "data": {"supported": spec.supported, "requested": version}}}),
        );
    }
    let result = match method {
        "server/discover" => {
            tokio::time::sleep(spec.discover_delay).await;
            Ok(
                json!({"supportedVersions": spec.supported, "capabilities": {"tools": {}},
                "_meta": {META_SERVER_INFO: {"name": "fake", "version": "2"}},
                "ttlMs": 0, "cacheScope": "private"}),
            )
        }
        "tools/list" if spec.modern_list_fails => Err((
            -32603,
            "Internal error: tools are not available".to_string(),
        )),
        _ => answer(spec, msg, method),
    };
    match result {
        Ok(mut r) => {
            r["resultType"] = json!(if spec.input_required {
                "input_required"
            } else {
                "complete"
            });
            rpc(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": id, "result": r}),
            )
        }
        Err((code, m)) => {
            let status = if code == -32601 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            error(&id, status, code, &m)
        }
    }
}
