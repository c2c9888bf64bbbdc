//! Whether an MCP endpoint answers (initialize + tools/list on a new session): the old proxy before
//! a revert and during retire, a serving revision before a switch, and a service's published port
//! (the edge) right after one.

use std::net::IpAddr;
use std::time::Duration;

use super::edge::strip_transport_suffix;
use crate::manifest::{Manifest, Transport};
use crate::mcp::{Mode, Session};

/// Connect in `mode` + tools/list at an MCP endpoint (a `/sse` or `/mcp` suffix is ignored): the
/// number of tools listed. The old proxy and anything LiteLLM is about to use are asked in
/// [`Mode::Legacy`] (that is what they speak to LiteLLM); the new stack's published ports in
/// [`Mode::Auto`], as any 2026-07-28 client finds them.
pub async fn mcp_answers(
    url: &str,
    transport: Transport,
    token: Option<&str>,
    timeout: Duration,
    mode: Mode,
) -> Result<usize, String> {
    let base = strip_transport_suffix(url);
    let opts = crate::mcp::Options {
        timeout,
        bearer_token: token.map(str::to_string),
    };
    let mut s = Session::connect_mode(&base, transport, &opts, mode)
        .await
        .map_err(|e| e.to_string())?;
    let n = s.list_tools().await.map_err(|e| e.to_string())?.len();
    s.close().await;
    Ok(n)
}

/// Where this host reaches a service's published port: the bind address (loopback when it binds
/// every address). None when the service publishes no port.
pub fn published_url(manifest: &Manifest, service: &str) -> Option<String> {
    let port = manifest.services[service].port?;
    let host = if manifest.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match manifest.bind_address {
            IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    };
    Some(format!("http://{host}:{port}"))
}

/// A new session through the service's published port (the edge) lists tools. Services without
/// a published port are not checked. Three tries within ~6 s: the edge switches at once, but a
/// just-switched upstream may still be accepting its first connection.
pub async fn verify_published(
    manifest: &Manifest,
    service: &str,
    transport: Transport,
    token: Option<&str>,
) -> Result<(), String> {
    let Some(url) = published_url(manifest, service) else {
        return Ok(());
    };
    let mut last = String::new();
    for _ in 0..3 {
        match mcp_answers(&url, transport, token, Duration::from_secs(2), Mode::Auto).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{url}: {last}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::manifest;

    #[test]
    fn the_published_port_is_reached_at_the_bind_address_or_loopback() {
        let mut m = manifest(true);
        assert_eq!(
            published_url(&m, "alpha").as_deref(),
            Some("http://127.0.0.1:8501")
        );
        m.bind_address = "0.0.0.0".parse().unwrap();
        assert_eq!(
            published_url(&m, "alpha").as_deref(),
            Some("http://127.0.0.1:8501")
        );
        m.bind_address = "::1".parse().unwrap();
        assert_eq!(
            published_url(&m, "alpha").as_deref(),
            Some("http://[::1]:8501")
        );
        m.bind_address = "10.1.2.3".parse().unwrap();
        assert_eq!(
            published_url(&m, "alpha").as_deref(),
            Some("http://10.1.2.3:8501")
        );
        m.services.get_mut("alpha").unwrap().port = None;
        assert_eq!(published_url(&m, "alpha"), None);
    }
}
