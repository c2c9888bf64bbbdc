//! A minimal MCP client over both HTTP transports the bridge serves:
//! - Streamable HTTP (2025-06-18 / 2025-11-25): `POST /mcp`, `Mcp-Session-Id`, answers as JSON or
//!   as an SSE stream; `DELETE /mcp` ends the session.
//! - Legacy HTTP+SSE (2024-11-05): `GET /sse` → `endpoint` event with the POST URL; replies arrive
//!   as `message` events on that stream.
//!
//! rmcp has no legacy SSE client, hence this module. It speaks only what mcpctl needs (initialize,
//! tools/list with pagination, tools/call, ping) and answers nothing the server asks. Every
//! request is bounded by the session's per-request timeout.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::sse;
pub use crate::manifest::Transport;

/// Protocol versions this client offers, newest first.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
pub const LEGACY_PROTOCOL_VERSION: &str = "2024-11-05";

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
}

/// How to connect: the per-request timeout and an optional bearer token.
#[derive(Debug, Clone)]
pub struct Options {
    pub timeout: Duration,
    pub bearer_token: Option<String>,
}

/// An initialized MCP session.
pub struct Session {
    http: reqwest::Client,
    wire: Wire,
    next_id: i64,
    timeout: Duration,
    pub protocol_version: String,
    pub server_info: Value,
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
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &opts.bearer_token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| McpError::Protocol("the bearer token is not a valid header".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| McpError::Protocol(e.to_string()))?;
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

    /// Send a request and wait for its result (bounded by the session timeout).
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, self.exchange(msg, Some(id)))
            .await
            .map_err(|_| McpError::Timeout(timeout))??;
        let reply = reply.ok_or_else(|| McpError::Protocol(format!("no reply to {method}")))?;
        if let Some(err) = reply.get("error") {
            return Err(McpError::Rpc {
                code: err["code"].as_i64().unwrap_or(0),
                message: err["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    pub async fn notify(&mut self, method: &str, params: Option<Value>) -> Result<(), McpError> {
        let mut msg = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange(msg, None))
            .await
            .map_err(|_| McpError::Timeout(timeout))??;
        Ok(())
    }

    async fn exchange(&mut self, msg: Value, id: Option<i64>) -> Result<Option<Value>, McpError> {
        match &mut self.wire {
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
                    let body = resp.text().await.unwrap_or_default();
                    return Err(McpError::Http {
                        url: url.clone(),
                        status: status.as_u16(),
                        body: body.trim().to_string(),
                    });
                }
                let is_sse = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.starts_with("text/event-stream"));
                if !is_sse {
                    let v: Value = resp
                        .json()
                        .await
                        .map_err(|e| McpError::Protocol(format!("reply is not JSON: {e}")))?;
                    return Ok(Some(v));
                }
                let mut events = std::pin::pin!(sse::events(resp.bytes_stream()));
                while let Some(ev) = events.next().await {
                    let ev =
                        ev.map_err(|e| McpError::Protocol(format!("reply stream broke: {e}")))?;
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        if v.get("id").and_then(Value::as_i64) == id && v.get("method").is_none() {
                            return Ok(Some(v));
                        }
                    }
                }
                Err(McpError::Protocol(
                    "the reply stream ended without a response".into(),
                ))
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
                    let body = resp.text().await.unwrap_or_default();
                    return Err(McpError::Http {
                        url: post_url.clone(),
                        status,
                        body: body.trim().to_string(),
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
                _ => return Ok(tools),
            }
        }
    }

    pub async fn call_tool(&mut self, name: &str, args: Value) -> Result<ToolResult, McpError> {
        let r = self
            .request("tools/call", json!({"name": name, "arguments": args}))
            .await?;
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

    /// End the session (DELETE for Streamable HTTP; closing the stream for legacy SSE).
    pub async fn close(self) {
        match self.wire {
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
