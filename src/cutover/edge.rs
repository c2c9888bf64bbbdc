//! The edge as cutover uses it (issue #7; docs/contracts.md "Edge"): its loopback admin API through
//! the edge's own client and route model ([`crate::edge::admin::AdminClient`],
//! [`crate::edge::routes`]) — `GET /routes`, `PUT /routes/<service>` — and the upstream URLs cutover
//! routes to. Switching a service is one route change there, so LiteLLM keeps pointing at
//! `mcp-<service>` and never restarts. Owns no wire types: the edge defines them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;

pub use crate::edge::admin::AdminClient;
pub use crate::edge::routes::{PutRoute, RouteKind, RouteView};

/// A client of the admin API at `base` whose requests give up after `timeout`, sending the
/// install's admin token (`<state_dir>/edge/admin.token`).
pub fn admin(base: &str, timeout: Duration, state_dir: &std::path::Path) -> AdminClient {
    AdminClient::with_timeout(base, timeout).with_token_from(state_dir)
}

/// `GET /routes` as a map by service; an error names the address and the flag that sets it.
pub async fn routes(admin: &AdminClient) -> anyhow::Result<BTreeMap<String, RouteView>> {
    admin.routes().await.map(|r| r.routes).with_context(|| {
        format!(
            "the edge admin API at {}/routes (is the edge running? --edge-admin)",
            admin.base()
        )
    })
}

/// How the edge container reaches a legacy endpoint the manifest gives as the host sees it:
/// loopback becomes `host.docker.internal` (the edge has `host.docker.internal:host-gateway`), and
/// a transport suffix (`/sse`, `/mcp`) is dropped — the edge route is a base the client's path is
/// appended to (mcp-proxy named servers live under `/servers/<name>/`).
pub fn legacy_upstream(url: &str) -> String {
    let base = strip_transport_suffix(url);
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        for scheme in ["http://", "https://"] {
            let prefix = format!("{scheme}{host}");
            if let Some(rest) = base.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with(':') || rest.starts_with('/') {
                    return format!("{scheme}host.docker.internal{rest}");
                }
            }
        }
    }
    base
}

/// `http://h:p/servers/x/sse` → `http://h:p/servers/x` (the MCP client appends the path itself).
pub fn strip_transport_suffix(url: &str) -> String {
    let u = url.trim_end_matches('/');
    for suffix in ["/sse", "/mcp"] {
        if let Some(base) = u.strip_suffix(suffix) {
            return base.to_string();
        }
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_upstreams_as_the_edge_container_reaches_them() {
        assert_eq!(
            legacy_upstream("http://127.0.0.1:9000/servers/memory/sse"),
            "http://host.docker.internal:9000/servers/memory"
        );
        assert_eq!(
            legacy_upstream("http://localhost:9000/servers/fetch/"),
            "http://host.docker.internal:9000/servers/fetch"
        );
        assert_eq!(
            legacy_upstream("http://old-proxy.internal:8096/servers/x/mcp"),
            "http://old-proxy.internal:8096/servers/x"
        );
        assert_eq!(
            legacy_upstream("http://127.0.0.10:1/sse"),
            "http://127.0.0.10:1"
        );
    }

    #[test]
    fn a_legacy_put_serializes_as_the_contract_says() {
        // What cutover sends to route a service back to the old proxy: a null revision.
        let put = PutRoute {
            upstream: "http://host.docker.internal:9000/servers/alpha".into(),
            revision: None,
            kind: RouteKind::Legacy,
            drain_timeout_s: None,
            replicas: vec![],
        };
        assert_eq!(
            serde_json::to_value(&put).unwrap(),
            serde_json::json!({"upstream": "http://host.docker.internal:9000/servers/alpha",
                               "revision": null, "kind": "legacy"})
        );
    }
}
