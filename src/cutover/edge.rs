//! HTTP client of the edge's loopback admin API (issue #7; docs/contracts.md "Edge"):
//! `GET /routes` → `{"routes": {"<service>": Route}}`, `PUT /routes/<service>` with a [`RoutePut`].
//! Kept here, not in `src/edge/`, so cutover depends only on the wire contract.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Which side a route sends new sessions to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    Stack,
    Legacy,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Stack => "stack",
            RouteKind::Legacy => "legacy",
        }
    }
}

/// One service's route as `GET /routes` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    pub upstream: String,
    #[serde(default)]
    pub revision: Option<u64>,
    pub kind: RouteKind,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub draining: Vec<serde_json::Value>,
}

/// The body of `PUT /routes/<service>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoutePut {
    pub upstream: String,
    pub revision: Option<u64>,
    pub kind: RouteKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u64>,
}

#[derive(Deserialize)]
struct Routes {
    routes: BTreeMap<String, Route>,
}

pub struct EdgeAdmin {
    base: String,
    http: reqwest::Client,
}

impl EdgeAdmin {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn routes(&self) -> anyhow::Result<BTreeMap<String, Route>> {
        let url = format!("{}/routes", self.base);
        let resp = self.http.get(&url).send().await.with_context(|| {
            format!(
                "the edge admin API at {url} does not answer (is the edge running? --edge-admin)"
            )
        })?;
        let status = resp.status();
        let body = resp.text().await?;
        anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}: {body}");
        let r: Routes = serde_json::from_str(&body)
            .with_context(|| format!("GET {url}: not a routes document: {body}"))?;
        Ok(r.routes)
    }

    /// Point `service` at `put`; returns the route the edge reports afterwards (if it echoes one).
    pub async fn put_route(&self, service: &str, put: &RoutePut) -> anyhow::Result<()> {
        let url = format!("{}/routes/{service}", self.base);
        let resp = self
            .http
            .put(&url)
            .json(put)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "PUT {url}: HTTP {status}: {body}");
        Ok(())
    }
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
    fn route_documents_parse_and_puts_serialize_as_the_contract_says() {
        let r: Routes = serde_json::from_str(
            r#"{"routes": {"alpha": {"upstream": "http://p-alpha-r3:8080", "revision": 3,
                "kind": "stack", "since": "2026-11-25T00:00:00Z", "draining": []}}}"#,
        )
        .unwrap();
        assert_eq!(r.routes["alpha"].kind, RouteKind::Stack);
        let put = RoutePut {
            upstream: "http://host.docker.internal:9000/servers/alpha".into(),
            revision: None,
            kind: RouteKind::Legacy,
            drain_timeout_s: None,
        };
        assert_eq!(
            serde_json::to_value(&put).unwrap(),
            serde_json::json!({"upstream": "http://host.docker.internal:9000/servers/alpha",
                               "revision": null, "kind": "legacy"})
        );
    }
}
