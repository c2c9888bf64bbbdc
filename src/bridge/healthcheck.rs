//! `mcpctl bridge healthcheck`: the Docker HEALTHCHECK of every image. Cheap, no shell needed:
//! GET /readyz on loopback with a 3 s timeout; `--mcp` also asks `server/discover` (MCP
//! 2026-07-28) and then lists tools in the era the bridge serves: a stateless 2026-07-28
//! tools/list on a shared service (two requests, no session), or — when the answer is not a
//! modern one, as on a per_session service — initialize + tools/list over Streamable HTTP, ending
//! the session (with the bridge's token file as bearer token when set). Exit 0 healthy, 1 not.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

/// What to probe (`mcpctl bridge healthcheck`'s flags: `crate::commands::bridge::HealthcheckArgs`).
#[derive(Debug)]
pub struct Probe {
    /// The bridge's port on 127.0.0.1.
    pub port: u16,
    /// Also run an MCP round trip: server/discover, then tools/list in the era it names.
    pub mcp: bool,
    /// The bridge's bearer-token file (for `mcp`); None: the deprecated MCPCTL_BRIDGE_TOKEN.
    pub token_file: Option<std::path::PathBuf>,
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// Longest reply read: the bridge is local, but a reply is still input.
const MAX_REPLY: usize = 8 << 20;

/// The era the bridge answered `server/discover` in.
#[derive(Debug, PartialEq)]
enum Era {
    /// 2026-07-28: requests go stateless with this version.
    Modern(&'static str),
    /// Not a modern answer (why, for the debug log): initialize.
    Legacy(String),
}

/// A reply body, at most [`MAX_REPLY`] bytes, as the JSON-RPC response with `id`: a JSON body,
/// or the `data:` of the SSE event carrying it.
async fn reply(mut r: reqwest::Response, id: i64) -> anyhow::Result<Value> {
    let sse = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await? {
        if body.len() + chunk.len() > MAX_REPLY {
            bail!("the reply is larger than {MAX_REPLY} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    if !sse {
        return serde_json::from_slice(&body).context("the reply is not JSON");
    }
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim_start()).ok())
        .find(|v| v["id"] == json!(id) && v.get("method").is_none())
        .context("the reply stream holds no response")
}

/// Classify the bridge's answer to `server/discover` (HTTP status, JSON body if it was one).
fn era_of(status: u16, body: Option<&Value>) -> anyhow::Result<Era> {
    let ours = super::modern::MODERN_VERSIONS[0];
    let Some(v) = body else {
        return Ok(Era::Legacy(format!("HTTP {status} without a JSON reply")));
    };
    let lists_ours = v["result"]["supportedVersions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(ours)));
    if lists_ours {
        return Ok(Era::Modern(ours));
    }
    let lists_legacy = v["error"]["data"]["supported"].as_array().is_some_and(|a| {
        a.iter().any(|x| {
            x.as_str()
                .is_some_and(|x| super::jsonrpc::SUPPORTED_VERSIONS.contains(&x))
        })
    });
    match v["error"]["code"].as_i64().unwrap_or(0) {
        super::modern::UNSUPPORTED_VERSION if lists_legacy => Ok(Era::Legacy(format!(
            "{ours} is not supported: {}",
            v["error"]
        ))),
        // Other 2026-07-28 errors: a modern bridge refused its own healthcheck's request.
        -32022..=-32020 => bail!("server/discover refused (HTTP {status}): {}", v["error"]),
        _ => Ok(Era::Legacy(format!("HTTP {status}: {v}"))),
    }
}

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

    // The era probe (2026-07-28): server/discover. A shared service answers it as a modern
    // server; a per_session one refuses it with a non-modern error (then initialize, as before).
    let (meta_version, meta_capabilities) = (
        super::modern::META_VERSION,
        super::modern::META_CAPABILITIES,
    );
    let modern_post = |version: &str, id: i64, method: &str| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"_meta": {
            meta_version: version,
            meta_capabilities: {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcpctl-healthcheck", "version": env!("CARGO_PKG_VERSION")}}}});
        let mut req = client
            .post(&mcp)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", version)
            .header("mcp-method", method)
            .json(&body);
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let ours = super::modern::MODERN_VERSIONS[0];
    let r = modern_post(ours, 1, "server/discover")
        .await
        .context("server/discover")?;
    let status = r.status().as_u16();
    let v = reply(r, 1).await.ok();
    match era_of(status, v.as_ref())? {
        Era::Modern(version) => {
            let r = modern_post(version, 2, "tools/list")
                .await
                .with_context(|| format!("tools/list ({version})"))?;
            let v = reply(r, 2)
                .await
                .with_context(|| format!("tools/list ({version}) response"))?;
            return match v["result"]["tools"].as_array() {
                Some(tools) => {
                    tracing::debug!(tools = tools.len(), era = version, "healthcheck ok");
                    Ok(())
                }
                None => bail!("tools/list ({version}) failed: {v}"),
            };
        }
        Era::Legacy(why) => tracing::debug!(%why, "not a modern answer: initialize"),
    }

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
    let v = reply(r, 1).await.context("initialize response")?;
    if v.get("result").is_none() {
        bail!("initialize failed: {v}");
    }
    let session = session.context("initialize response has no Mcp-Session-Id")?;
    post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        Some(&session),
    )
    .await?;
    let r = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        Some(&session),
    )
    .await?;
    let v = reply(r, 2).await.context("tools/list response")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_discover_answer_picks_the_era() {
        let modern = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "supportedVersions": ["2026-07-28", "2025-11-25"], "capabilities": {}}});
        assert_eq!(
            era_of(200, Some(&modern)).unwrap(),
            Era::Modern("2026-07-28")
        );
        // A per_session bridge: −32600 (not a modern error) → initialize.
        let per_session = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600,
            "message": "Invalid Request: ... send initialize"}});
        assert!(matches!(
            era_of(400, Some(&per_session)).unwrap(),
            Era::Legacy(_)
        ));
        assert!(matches!(era_of(404, None).unwrap(), Era::Legacy(_)));
        // −32022 naming a legacy version → initialize; other modern errors are unhealthy.
        let later = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022, "message": "x",
            "data": {"supported": ["2027-01-01", "2025-11-25"]}}});
        assert!(matches!(era_of(400, Some(&later)).unwrap(), Era::Legacy(_)));
        let mismatch =
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32020, "message": "x"}});
        assert!(era_of(400, Some(&mismatch)).is_err());
    }
}
