//! `mcpctl bridge healthcheck`: the Docker HEALTHCHECK of every image. Cheap, no shell needed:
//! GET /readyz on loopback with a 3 s timeout; `--mcp` also runs initialize + tools/list over
//! Streamable HTTP and ends the session (with the bridge's token file as bearer token when set).
//! Exit 0 healthy, 1 not.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// What to probe (`mcpctl bridge healthcheck`'s flags: `crate::commands::bridge::HealthcheckArgs`).
#[derive(Debug)]
pub struct Probe {
    /// The bridge's port on 127.0.0.1.
    pub port: u16,
    /// Also run an MCP initialize + tools/list round trip.
    pub mcp: bool,
    /// The bridge's bearer-token file (for `mcp`); None: the deprecated MCPCTL_BRIDGE_TOKEN.
    pub token_file: Option<std::path::PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

pub fn run(args: Probe) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(check(&args))
}

async fn check(args: &Probe) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{}", args.port);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .build()?;
    let r = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .with_context(|| format!("GET {base}/readyz"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("bridge not ready ({status}): {}", body.trim());
    }
    if !args.mcp {
        return Ok(());
    }
    let mcp = format!("{base}/mcp");
    let token = super::read_token(args.token_file.as_deref())?;
    let token = token.as_ref().map(|t| t.expose());
    let post = |body: Value, session: Option<&str>| {
        let mut req = client
            .post(&mcp)
            .header("accept", "application/json")
            .json(&body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", super::jsonrpc::LATEST_VERSION);
        }
        req.send()
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": super::jsonrpc::LATEST_VERSION, "capabilities": {},
        "clientInfo": {"name": "mcpctl-healthcheck", "version": env!("CARGO_PKG_VERSION")}}});
    let r = post(init, None).await.context("initialize")?;
    let session = r
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let v: Value = r.json().await.context("initialize response")?;
    if v.get("result").is_none() {
        bail!("initialize failed: {v}");
    }
    let session = session.context("initialize response has no Mcp-Session-Id")?;
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await?;
    let v: Value = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(&session),
    )
    .await?
    .json()
    .await
    .context("tools/list response")?;
    let mut delete = client.delete(&mcp).header("mcp-session-id", &session);
    if let Some(t) = &token {
        delete = delete.bearer_auth(t);
    }
    let _ = delete.send().await;
    match v["result"]["tools"].as_array() {
        Some(tools) => {
            tracing::debug!(tools = tools.len(), "healthcheck ok");
            Ok(())
        }
        None => bail!("tools/list failed: {v}"),
    }
}
