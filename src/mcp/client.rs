//! A minimal MCP client over every HTTP transport the bridge serves, in both eras:
//! - 2026-07-28 ("modern", [`Mode::Modern`]): stateless `POST /mcp`, every request carrying its
//!   version and client capabilities in `_meta` plus the `MCP-Protocol-Version`, `Mcp-Method` and
//!   `Mcp-Name` (and `Mcp-Param-*`) headers; no handshake, no session. `server/discover` first.
//! - Streamable HTTP (2025-06-18 / 2025-11-25): `POST /mcp`, `Mcp-Session-Id`, answers as JSON or
//!   as an SSE stream; `DELETE /mcp` ends the session.
//! - Legacy HTTP+SSE (2024-11-05): `GET /sse` → `endpoint` event with the POST URL; replies arrive
//!   as `message` events on that stream.
//!
//! [`Mode::Auto`] is what the Python SDK 2.x client does by default: probe with `server/discover`
//! and fall back to `initialize` on anything but a modern answer. The session records the era it
//! ended up speaking ([`Session::era`]) and the versions the server named
//! ([`Session::supported_versions`]).
//!
//! rmcp has no legacy SSE client, hence this module. It speaks only what mcpctl needs (initialize,
//! tools/list with pagination, tools/call, ping) and answers nothing the server asks (a modern
//! `input_required` result is an error here). Every request is bounded by the session's
//! per-request timeout, every reply body by [`MAX_REPLY_BYTES`].

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::modern::{self, Answer, Discovery, ParamHeader};
use super::sse;
pub use crate::manifest::Transport;

/// Protocol versions this client offers, newest first.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
pub const LEGACY_PROTOCOL_VERSION: &str = "2024-11-05";

/// Longest reply body read (JSON or an error's text): a server cannot make mcpctl buffer more.
pub const MAX_REPLY_BYTES: usize = 32 << 20;

/// How long `server/discover` may take before the server counts as legacy (the spec's "does not
/// respond within a reasonable timeout"; the Python SDK 2.x waits 10 s too). Bounded further by
/// the caller's per-request timeout.
pub const DISCOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Which era a client speaks to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `initialize` and a session (what [`Session::connect_with`] does).
    #[default]
    Legacy,
    /// 2026-07-28 only: `server/discover`, then stateless requests; an error when the server is
    /// not modern.
    Modern,
    /// `server/discover` first; modern when it answers as a modern server that speaks a version
    /// this client speaks, else legacy `initialize` (the Python SDK 2.x default).
    Auto,
}

/// The era a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Era {
    /// An initialize-based session (2025-11-25 and earlier).
    Legacy,
    /// Stateless 2026-07-28 requests.
    Modern,
}

/// What `server/discover` told about a server's era.
#[derive(Debug)]
pub enum Probe {
    /// A modern server: a `DiscoverResult`, or −32022 naming the versions it supports.
    Modern(Discovery),
    /// A 2026-07-28 error other than −32022: a modern server refused the request as sent (no
    /// fallback, per the spec).
    Refused(String),
    /// Not a modern answer: the server is legacy (or serves this endpoint to legacy sessions
    /// only). `timed_out`: it did not answer within the probe's bound, which the spec counts as
    /// legacy but a server still starting looks the same.
    Legacy { reason: String, timed_out: bool },
    /// No answer that says anything about the era (connection refused, 502/503/504): the
    /// server is not up yet.
    Unreachable(McpError),
}

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        url: String,
        status: u16,
        body: String,
    },
    #[error("timed out after {0:?} waiting for the server")]
    Timeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// A tool as tools/list describes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "inputSchema", default)]
    pub input_schema: Value,
}

/// The outcome of tools/call.
#[derive(Debug, Clone)]
pub struct ToolResult {
    pub is_error: bool,
    /// Text content items joined by newlines.
    pub text: String,
    pub raw: Value,
}

enum Wire {
    Http {
        url: String,
        session_id: Option<String>,
    },
    Sse {
        post_url: String,
        inbox: mpsc::Receiver<Result<Value, String>>,
        reader: tokio::task::JoinHandle<()>,
    },
    /// 2026-07-28: stateless POSTs; `protocol_version` goes with every request.
    Modern { url: String },
}

/// How to connect: the per-request timeout and an optional bearer token.
#[derive(Debug, Clone)]
pub struct Options {
    pub timeout: Duration,
    pub bearer_token: Option<String>,
}

/// An MCP session: an initialized legacy session, or a modern client that has discovered the
/// server (2026-07-28 has no session; the name stays for the callers).
pub struct Session {
    http: reqwest::Client,
    wire: Wire,
    next_id: i64,
    timeout: Duration,
    pub protocol_version: String,
    pub server_info: Value,
    /// The era this session speaks.
    pub era: Era,
    /// The versions the server named (`server/discover`, or −32022's `data.supported`); empty
    /// when it was not asked or answered as a legacy server does.
    pub supported_versions: Vec<String>,
    /// Modern: each listed tool's `x-mcp-header` annotations (from the last tools/list).
    param_headers: std::collections::HashMap<String, Vec<ParamHeader>>,
}

/// The HTTP client of a session: no proxy, the connect timeout, the bearer token (sensitive).
fn http_client(opts: &Options) -> Result<reqwest::Client, McpError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &opts.bearer_token {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| McpError::Protocol("the bearer token is not a valid header".into()))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(opts.timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| McpError::Protocol(e.to_string()))
}

/// A response body, at most `limit` bytes (more is an error: the reply is not trusted to end).
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, McpError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| McpError::Protocol(format!("reading the reply: {e}")))?
    {
        if out.len() + chunk.len() > limit {
            return Err(McpError::Protocol(format!(
                "the reply is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error response's body as text, bounded (for the error message).
async fn error_text(resp: reqwest::Response) -> String {
    let body = read_body(resp, 64 << 10).await.unwrap_or_default();
    String::from_utf8_lossy(&body).trim().to_string()
}

fn is_sse(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
}

/// The JSON-RPC response to `id` in a reply body: the JSON object, or the SSE stream's message
/// with that id (notifications before it are skipped).
async fn read_reply(resp: reqwest::Response, id: Option<i64>) -> Result<Value, McpError> {
    if !is_sse(&resp) {
        let body = read_body(resp, MAX_REPLY_BYTES).await?;
        return serde_json::from_slice(&body)
            .map_err(|e| McpError::Protocol(format!("reply is not JSON: {e}")));
    }
    let mut events = std::pin::pin!(sse::events(resp.bytes_stream()));
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| McpError::Protocol(format!("reply stream broke: {e}")))?;
        if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
            if v.get("id").and_then(Value::as_i64) == id && v.get("method").is_none() {
                return Ok(v);
            }
        }
    }
    Err(McpError::Protocol(
        "the reply stream ended without a response".into(),
    ))
}

fn connect_err(url: &str, e: reqwest::Error) -> McpError {
    if e.is_timeout() {
        return McpError::Timeout(Duration::ZERO);
    }
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason = format!("{reason}: {s}");
        src = s.source();
    }
    McpError::Connect {
        url: url.to_string(),
        reason,
    }
}

/// A 2026-07-28 POST of `msg`: both content types accepted, the version header, `Mcp-Method`
/// and `Mcp-Name` from the body, and `extra` (`Mcp-Param-*`).
fn modern_post(
    http: &reqwest::Client,
    url: &str,
    msg: &Value,
    version: &str,
    extra: &[(String, String)],
) -> reqwest::RequestBuilder {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .json(msg);
    for (name, value) in modern::request_headers(msg).iter().chain(extra) {
        req = req.header(name.as_str(), value.as_str());
    }
    req
}

impl Session {
    /// Connect to a bridge at `base` (e.g. `http://127.0.0.1:8501`) and run initialize +
    /// notifications/initialized. `timeout` bounds each request.
    pub async fn connect(
        base: &str,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Session, McpError> {
        Self::connect_with(
            base,
            transport,
            &Options {
                timeout,
                bearer_token: None,
            },
        )
        .await
    }

    /// [`Session::connect`] with options (a bearer token for bridges that require one).
    pub async fn connect_with(
        base: &str,
        transport: Transport,
        opts: &Options,
    ) -> Result<Session, McpError> {
        let timeout = opts.timeout;
        let http = http_client(opts)?;
        let base = base.trim_end_matches('/');
        let wire = match transport {
            Transport::Http => Wire::Http {
                url: format!("{base}/mcp"),
                session_id: None,
            },
            Transport::Sse => Self::open_sse(&http, base, timeout).await?,
        };
        let version = match transport {
            Transport::Http => PROTOCOL_VERSION,
            Transport::Sse => LEGACY_PROTOCOL_VERSION,
        };
        let mut s = Session {
            http,
            wire,
            next_id: 0,
            timeout,
            protocol_version: version.to_string(),
            server_info: Value::Null,
            era: Era::Legacy,
            supported_versions: Vec::new(),
            param_headers: Default::default(),
        };
        let init = s
            .request(
                "initialize",
                json!({
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "mcpctl", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        if let Some(v) = init["protocolVersion"].as_str() {
            s.protocol_version = v.to_string();
        }
        s.server_info = init["serverInfo"].clone();
        s.notify("notifications/initialized", None).await?;
        Ok(s)
    }

    /// Connect in `mode`: legacy as [`Session::connect_with`]; modern after a `server/discover`
    /// that must answer as a modern server; auto: modern when discover says so, else legacy over
    /// `transport` (see [`Mode::Auto`]). The modern requests go to `{base}/mcp` whatever
    /// `transport` is (2026-07-28 is a Streamable HTTP revision).
    pub async fn connect_mode(
        base: &str,
        transport: Transport,
        opts: &Options,
        mode: Mode,
    ) -> Result<Session, McpError> {
        if mode == Mode::Legacy {
            return Self::connect_with(base, transport, opts).await;
        }
        match Self::probe(base, opts).await {
            Probe::Modern(d) if d.version.is_some() => Self::modern(base, opts, &d),
            Probe::Modern(d) if mode == Mode::Auto && d.speaks_legacy() => {
                let mut s = Self::connect_with(base, transport, opts).await?;
                s.supported_versions = d.supported;
                Ok(s)
            }
            Probe::Modern(d) => Err(McpError::Protocol(format!(
                "the server speaks {}; mcpctl speaks {} and (with initialize) {}",
                d.supported.join(", "),
                modern::MODERN_VERSIONS.join(", "),
                modern::LEGACY_VERSIONS.join(", ")
            ))),
            Probe::Refused(why) => Err(McpError::Protocol(why)),
            Probe::Legacy { reason, .. } if mode == Mode::Modern => Err(McpError::Protocol(
                format!("not a {} server: {reason}", modern::version()),
            )),
            Probe::Legacy { .. } => Self::connect_with(base, transport, opts).await,
            Probe::Unreachable(e) => Err(e),
        }
    }

    /// Ask `{base}/mcp` for `server/discover` in 2026-07-28 shape and classify the answer
    /// (spec "Streamable HTTP: Backward Compatibility"). Bounded by [`DISCOVER_TIMEOUT`] and
    /// the options' timeout, whichever is shorter.
    pub async fn probe(base: &str, opts: &Options) -> Probe {
        let http = match http_client(opts) {
            Ok(h) => h,
            Err(e) => return Probe::Unreachable(e),
        };
        let url = format!("{}/mcp", base.trim_end_matches('/'));
        let bound = opts.timeout.min(DISCOVER_TIMEOUT);
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover",
            "params": modern::with_meta(json!({}), modern::version())});
        let exchange = async {
            let resp = modern_post(&http, &url, &msg, modern::version(), &[])
                .send()
                .await
                .map_err(|e| connect_err(&url, e))?;
            let status = resp.status().as_u16();
            if matches!(status, 502..=504) {
                return Err(McpError::Http {
                    url: url.clone(),
                    status,
                    body: error_text(resp).await,
                });
            }
            if resp.status().is_success() {
                // A body that is not a reply (or too large) says "not modern", not "down".
                return Ok(match read_reply(resp, Some(1)).await {
                    Ok(v) => modern::classify(status, Some(&v), ""),
                    Err(e) => modern::classify(status, None, &e.to_string()),
                });
            }
            let body = error_text(resp).await;
            let reply = serde_json::from_str::<Value>(&body).ok();
            Ok(modern::classify(status, reply.as_ref(), &body))
        };
        match tokio::time::timeout(bound, exchange).await {
            Err(_) => Probe::Legacy {
                reason: format!("no answer to server/discover within {bound:?}"),
                timed_out: true,
            },
            Ok(Err(e @ McpError::Timeout(_))) => Probe::Legacy {
                reason: format!("server/discover: {e}"),
                timed_out: true,
            },
            Ok(Err(e)) => Probe::Unreachable(e),
            Ok(Ok(Answer::Modern(d))) => Probe::Modern(d),
            Ok(Ok(Answer::Refused(why))) => Probe::Refused(why),
            Ok(Ok(Answer::NotModern(reason))) => Probe::Legacy {
                reason,
                timed_out: false,
            },
        }
    }

    /// A modern client of a server that `discovery` describes (no request is sent: discovery
    /// already was). An error when it named no modern version this client speaks.
    pub fn modern(base: &str, opts: &Options, discovery: &Discovery) -> Result<Session, McpError> {
        let Some(version) = discovery.version.clone() else {
            return Err(McpError::Protocol(format!(
                "the server names no modern version mcpctl speaks ({}; it supports {})",
                modern::MODERN_VERSIONS.join(", "),
                discovery.supported.join(", ")
            )));
        };
        Ok(Session {
            http: http_client(opts)?,
            wire: Wire::Modern {
                url: format!("{}/mcp", base.trim_end_matches('/')),
            },
            next_id: 0,
            timeout: opts.timeout,
            protocol_version: version,
            server_info: discovery.server_info(),
            era: Era::Modern,
            supported_versions: discovery.supported.clone(),
            param_headers: Default::default(),
        })
    }

    async fn open_sse(
        http: &reqwest::Client,
        base: &str,
        timeout: Duration,
    ) -> Result<Wire, McpError> {
        let url = format!("{base}/sse");
        let resp = tokio::time::timeout(
            timeout,
            http.get(&url).header("accept", "text/event-stream").send(),
        )
        .await
        .map_err(|_| McpError::Timeout(timeout))?
        .map_err(|e| connect_err(&url, e))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            return Err(McpError::Http {
                url,
                status,
                body: body.trim().to_string(),
            });
        }
        // Bounded: a server that streams faster than this client reads is slowed by TCP
        // back-pressure (the reader awaits room), not buffered without end.
        let (tx, mut rx) = mpsc::channel(256);
        let reader = tokio::spawn(async move {
            let mut events = std::pin::pin!(sse::events(resp.bytes_stream()));
            let end = loop {
                let ev = match events.next().await {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => break format!("the SSE stream ended: {e}"),
                    None => break "the SSE stream ended".to_string(),
                };
                let item = match ev.event.as_deref() {
                    Some("endpoint") => Ok(json!({"endpoint": ev.data})),
                    Some("message") | None => match serde_json::from_str::<Value>(&ev.data) {
                        Ok(v) => Ok(v),
                        Err(e) => Err(format!("bad JSON in SSE message: {e}")),
                    },
                    _ => continue,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            };
            let _ = tx.send(Err(end)).await;
        });
        let first = tokio::time::timeout(timeout, rx.recv())
            .await
            .map_err(|_| McpError::Timeout(timeout))?;
        let endpoint = match first {
            Some(Ok(v)) if v.get("endpoint").is_some() => {
                v["endpoint"].as_str().unwrap_or_default().to_string()
            }
            other => {
                reader.abort();
                return Err(McpError::Protocol(format!(
                    "expected an `endpoint` event first, got {other:?}"
                )));
            }
        };
        // Resolved as a URL reference against the stream's URL: an absolute path names the
        // origin's path (mcp-proxy's named servers send `/servers/<name>/messages/?session_id=`
        // from `/servers/<name>/sse`), not one under `base`.
        let post_url = match reqwest::Url::parse(&url).and_then(|u| u.join(&endpoint)) {
            Ok(u) => u.to_string(),
            Err(e) => {
                reader.abort();
                return Err(McpError::Protocol(format!(
                    "the endpoint event {endpoint:?} is not a URL reference: {e}"
                )));
            }
        };
        Ok(Wire::Sse {
            post_url,
            inbox: rx,
            reader,
        })
    }

    /// Send a request and wait for its result (bounded by the session timeout). A modern
    /// session adds the request's `_meta` and headers.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        self.request_with(method, params, Vec::new()).await
    }

    async fn request_with(
        &mut self,
        method: &str,
        params: Value,
        extra: Vec<(String, String)>,
    ) -> Result<Value, McpError> {
        self.next_id += 1;
        let id = self.next_id;
        let params = match self.era {
            Era::Modern => modern::with_meta(params, &self.protocol_version),
            Era::Legacy => params,
        };
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, self.exchange(msg, Some(id), &extra))
            .await
            .map_err(|_| McpError::Timeout(timeout))??;
        let reply = reply.ok_or_else(|| McpError::Protocol(format!("no reply to {method}")))?;
        if let Some(err) = reply.get("error") {
            return Err(McpError::Rpc {
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or("").to_string(),
            });
        }
        let result = reply.get("result").cloned().unwrap_or(Value::Null);
        // 2026-07-28: an absent resultType means complete; `input_required` asks the client for
        // sampling/elicitation/roots, which this client never provides.
        match result.get("resultType").and_then(Value::as_str) {
            None | Some("complete") => Ok(result),
            Some(other) => Err(McpError::Protocol(format!(
                "{method} answered resultType {other:?}: mcpctl's client answers no input requests"
            ))),
        }
    }

    pub async fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        let mut msg = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(msg, None, &[]))
            .await
            .map_err(|_| McpError::Timeout(timeout))??;
        Ok(())
    }

    async fn exchange(
        &mut self,
        msg: Value,
        id: Option<i64>,
        extra: &[(String, String)],
    ) -> Result<Option<Value>, McpError> {
        match &mut self.wire {
            Wire::Modern { url } => {
                let resp = modern_post(&self.http, url, &msg, &self.protocol_version, extra)
                    .send()
                    .await
                    .map_err(|e| connect_err(url, e))?;
                let status = resp.status();
                if status.as_u16() == 202 || id.is_none() {
                    return Ok(None);
                }
                if !status.is_success() {
                    // 2026-07-28 answers errors with 400/404 and a JSON-RPC error body.
                    let body = error_text(resp).await;
                    if let Ok(v) = serde_json::from_str::<Value>(&body) {
                        if v.get("error").is_some_and(Value::is_object) {
                            return Ok(Some(v));
                        }
                    }
                    return Err(McpError::Http {
                        url: url.clone(),
                        status: status.as_u16(),
                        body,
                    });
                }
                read_reply(resp, id).await.map(Some)
            }
            Wire::Http { url, session_id } => {
                let mut req = self
                    .http
                    .post(url.as_str())
                    .header("accept", "application/json, text/event-stream")
                    .json(&msg);
                if let Some(sid) = session_id.as_deref() {
                    req = req
                        .header("mcp-session-id", sid)
                        .header("mcp-protocol-version", &self.protocol_version);
                }
                let resp = req.send().await.map_err(|e| connect_err(url, e))?;
                let status = resp.status();
                if let Some(sid) = resp
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                {
                    *session_id = Some(sid.to_string());
                }
                if status.as_u16() == 202 || id.is_none() {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(McpError::Http {
                        url: url.clone(),
                        status: status.as_u16(),
                        body: error_text(resp).await,
                    });
                }
                read_reply(resp, id).await.map(Some)
            }
            Wire::Sse {
                post_url, inbox, ..
            } => {
                let resp = self
                    .http
                    .post(post_url.as_str())
                    .json(&msg)
                    .send()
                    .await
                    .map_err(|e| connect_err(post_url, e))?;
                if !resp.status().is_success() {
                    let status = resp.status().as_u16();
                    return Err(McpError::Http {
                        url: post_url.clone(),
                        status,
                        body: error_text(resp).await,
                    });
                }
                let Some(id) = id else { return Ok(None) };
                loop {
                    match inbox.recv().await {
                        Some(Ok(v)) => {
                            if v.get("id").and_then(Value::as_i64) == Some(id)
                                && v.get("method").is_none()
                            {
                                return Ok(Some(v));
                            }
                        }
                        Some(Err(e)) => return Err(McpError::Protocol(e)),
                        None => return Err(McpError::Protocol("the SSE stream ended".into())),
                    }
                }
            }
        }
    }

    /// Every tool (following `nextCursor`).
    pub async fn list_tools(&mut self) -> Result<Vec<Tool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            let r = self.request("tools/list", params).await?;
            let page: Vec<Tool> = serde_json::from_value(r["tools"].clone())
                .map_err(|e| McpError::Protocol(format!("tools/list result: {e}")))?;
            tools.extend(page);
            match r["nextCursor"].as_str() {
                Some(c) if !c.is_empty() && tools.len() < 10_000 => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        if self.era == Era::Modern {
            // Streamable HTTP clients MUST leave out tools whose x-mcp-header annotations break
            // the spec's rules, and mirror the valid ones on every call.
            self.param_headers.clear();
            tools.retain(|t| match modern::param_headers(&t.input_schema) {
                Ok(h) => {
                    if !h.is_empty() {
                        self.param_headers.insert(t.name.clone(), h);
                    }
                    true
                }
                Err(why) => {
                    tracing::warn!(tool = %t.name, "tool left out of tools/list: {why}");
                    false
                }
            });
        }
        Ok(tools)
    }

    pub async fn call_tool(&mut self, name: &str, args: Value) -> Result<ToolResult, McpError> {
        let params = json!({"name": name, "arguments": args});
        let r = match self.era {
            Era::Legacy => self.request("tools/call", params).await?,
            Era::Modern => {
                let extra = self.tool_headers(name, &args);
                let first = self.request_with("tools/call", params.clone(), extra).await;
                match first {
                    // The tool's x-mcp-header annotations are unknown or changed: list, retry once
                    // (spec "Client Behavior").
                    Err(McpError::Rpc { code, .. }) if code == modern::HEADER_MISMATCH => {
                        self.list_tools().await?;
                        let extra = self.tool_headers(name, &args);
                        self.request_with("tools/call", params, extra).await?
                    }
                    other => other?,
                }
            }
        };
        let text = r["content"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        Ok(ToolResult {
            is_error: r["isError"].as_bool().unwrap_or(false),
            text,
            raw: r,
        })
    }

    /// `Mcp-Param-*` headers of a call to `name` with `args` (modern; from the last tools/list).
    fn tool_headers(&self, name: &str, args: &Value) -> Vec<(String, String)> {
        self.param_headers
            .get(name)
            .map(|hs| hs.iter().filter_map(|h| h.header(args)).collect())
            .unwrap_or_default()
    }

    /// End the session (DELETE for Streamable HTTP; closing the stream for legacy SSE; nothing
    /// for 2026-07-28, which has no session).
    pub async fn close(self) {
        match self.wire {
            Wire::Modern { .. } => {}
            Wire::Http {
                url,
                session_id: Some(sid),
            } => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.http.delete(&url).header("mcp-session-id", sid).send(),
                )
                .await;
            }
            Wire::Http { .. } => {}
            Wire::Sse { reader, .. } => reader.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Spec};
    use super::*;

    fn opts(ms: u64) -> Options {
        Options {
            timeout: Duration::from_millis(ms),
            bearer_token: None,
        }
    }

    async fn auto(base: &str) -> Result<Session, McpError> {
        Session::connect_mode(base, Transport::Http, &opts(5000), Mode::Auto).await
    }

    #[tokio::test]
    async fn auto_speaks_modern_to_a_dual_era_server_with_every_header_it_needs() {
        let f = fake::start(Spec::dual()).await;
        let mut s = auto(&f.base).await.unwrap();
        assert_eq!(s.era, Era::Modern);
        assert_eq!(s.protocol_version, "2026-07-28");
        assert_eq!(
            s.supported_versions,
            ["2026-07-28", "2025-11-25", "2025-06-18"]
        );
        assert_eq!(s.server_info["name"], "fake");
        let tools = s.list_tools().await.unwrap();
        assert_eq!(tools[0].name, "echo");
        // The fake refuses (−32020) a call whose headers disagree with its body.
        let r = s.call_tool("echo", json!({"text": "hi"})).await.unwrap();
        assert_eq!((r.is_error, r.text.as_str()), (false, "hi|fake"));
        s.close().await;
        assert_eq!(
            f.methods(),
            ["server/discover", "tools/list", "tools/call"],
            "no initialize, no session"
        );
        let seen = f.seen.lock().unwrap();
        for (h, body) in seen.iter() {
            assert!(h.get("mcp-session-id").is_none());
            assert_eq!(h["accept"], "application/json, text/event-stream");
            assert_eq!(
                body["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
                "mcpctl"
            );
        }
        assert_eq!(seen[2].0["mcp-name"], "echo");
    }

    #[tokio::test]
    async fn auto_falls_back_to_initialize_on_a_legacy_server() {
        let f = fake::start(Spec::legacy()).await;
        let mut s = auto(&f.base).await.unwrap();
        assert_eq!(s.era, Era::Legacy);
        assert!(s.supported_versions.is_empty());
        assert_eq!(s.list_tools().await.unwrap().len(), 1);
        s.close().await;
        assert_eq!(
            f.methods(),
            [
                "server/discover",
                "initialize",
                "notifications/initialized",
                "tools/list"
            ]
        );
        // Modern only: the same server is an error that says why.
        let e = Session::connect_mode(&f.base, Transport::Http, &opts(5000), Mode::Modern)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not a 2026-07-28 server") && e.contains("No valid session ID"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_modern_only_server_is_spoken_to_without_initialize() {
        let f = fake::start(Spec::modern()).await;
        let mut s = auto(&f.base).await.unwrap();
        assert_eq!(s.era, Era::Modern);
        assert_eq!(s.list_tools().await.unwrap().len(), 1);
        assert!(!f.methods().contains(&"initialize".to_string()));
        // Legacy mode is refused by it, as the spec's compatibility matrix says.
        let e = Session::connect_with(&f.base, Transport::Http, &opts(5000))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, McpError::Http { status: 400, .. }), "{e}");
    }

    #[tokio::test]
    async fn unsupported_version_records_what_the_server_supports_and_picks_legacy() {
        // A modern server of a later revision that also speaks 2025-06-18 through initialize.
        let mut spec = Spec::dual();
        spec.supported = vec!["2027-01-01", "2025-06-18"];
        let f = fake::start(spec).await;
        let p = Session::probe(&f.base, &opts(5000)).await;
        let Probe::Modern(d) = p else { panic!("{p:?}") };
        assert_eq!(d.version, None);
        assert_eq!(d.supported, ["2027-01-01", "2025-06-18"]);
        let s = auto(&f.base).await.unwrap();
        assert_eq!(s.era, Era::Legacy);
        assert_eq!(s.supported_versions, ["2027-01-01", "2025-06-18"]);
        // Without a legacy version in common there is nothing to speak.
        let mut spec = Spec::modern();
        spec.supported = vec!["2027-01-01"];
        let f = fake::start(spec).await;
        let e = auto(&f.base).await.err().unwrap().to_string();
        assert!(e.contains("2027-01-01") && e.contains("2026-07-28"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_discover_counts_as_legacy_and_a_closed_port_as_unreachable() {
        let mut spec = Spec::dual();
        spec.discover_delay = Duration::from_secs(5);
        let f = fake::start(spec).await;
        let t = Instant::now();
        let p = Session::probe(&f.base, &opts(300)).await;
        assert!(
            matches!(
                p,
                Probe::Legacy {
                    timed_out: true,
                    ..
                }
            ),
            "{p:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = Session::probe(&format!("http://127.0.0.1:{port}"), &opts(1000)).await;
        assert!(matches!(p, Probe::Unreachable(_)), "{p:?}");
    }

    use std::time::Instant;

    #[tokio::test]
    async fn x_mcp_header_values_are_mirrored_after_a_header_mismatch_relists() {
        let mut spec = Spec::modern();
        spec.tools = vec![
            json!({"name": "echo", "inputSchema": {"type": "object", "properties": {
                "text": {"type": "string", "x-mcp-header": "Text"}}}}),
            json!({"name": "broken", "inputSchema": {"type": "object", "properties": {
                "n": {"type": "number", "x-mcp-header": "N"}}}}),
        ];
        let f = fake::start(spec).await;
        let mut s = auto(&f.base).await.unwrap();
        // Called before any tools/list: −32020, then tools/list, then the call with the header.
        let r = s.call_tool("echo", json!({"text": "eu-1"})).await.unwrap();
        assert_eq!(r.text, "eu-1|fake");
        assert_eq!(
            f.methods(),
            ["server/discover", "tools/call", "tools/list", "tools/call"]
        );
        assert_eq!(f.seen.lock().unwrap()[3].0["mcp-param-text"], "eu-1");
        // The tool with an invalid annotation is left out of the list.
        let names: Vec<String> = s
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["echo"]);
    }

    #[tokio::test]
    async fn input_required_results_are_an_error() {
        let mut spec = Spec::modern();
        spec.input_required = true;
        let f = fake::start(spec).await;
        let mut s = auto(&f.base).await.unwrap();
        let e = s.list_tools().await.err().unwrap().to_string();
        assert!(e.contains("input_required"), "{e}");
    }

    #[tokio::test]
    async fn reply_bodies_are_bounded() {
        let app =
            axum::Router::new().route("/big", axum::routing::get(|| async { "x".repeat(100_000) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let http = http_client(&opts(5000)).unwrap();
        let resp = http.get(format!("http://{addr}/big")).send().await.unwrap();
        let e = read_body(resp, 1000).await.err().unwrap().to_string();
        assert!(e.contains("larger than 1000 bytes"), "{e}");
        let resp = http.get(format!("http://{addr}/big")).send().await.unwrap();
        assert_eq!(read_body(resp, 200_000).await.unwrap().len(), 100_000);
        task.abort();
    }
}
