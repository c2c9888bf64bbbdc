//! Fixtures for cutover's unit tests: a manifest with services on the old proxy, edge routes.

use super::edge::{RouteKind, RouteView};
use crate::manifest::Manifest;

/// `alpha` (published on 8501) and `gamma` (8502) have a `legacy` endpoint; `plain` has none. The edge fronts the published ports when `edge` is set.
pub fn manifest(edge: bool) -> Manifest {
    let text = format!(
        r#"version: 1
project: p
bases:
  runtime: {{suite: bookworm, image: "busybox:1.36"}}
edge: {{enabled: {edge}}}
litellm:
  network: host
  transport: http
  master_key: {{from_env: CUTOVER_UNIT_TEST_KEY}}
cutover:
  clean_period: 1h
  legacy_stop: [systemctl, stop, mcp-proxy]
services:
  alpha:
    port: 8501
    server:
      source: {{image: {{ref: "busybox:1.36"}}}}
      command: [x]
    legacy:
      url: "http://127.0.0.1:9000/servers/alpha/sse"
  gamma:
    port: 8502
    server:
      source: {{image: {{ref: "busybox:1.36"}}}}
      command: [x]
    legacy:
      url: "http://old-proxy.internal:9000/servers/gamma/mcp"
      transport: http
      upstream: "http://old-proxy:9000/servers/gamma"
  plain:
    port: 8503
    server:
      source: {{image: {{ref: "busybox:1.36"}}}}
      command: [x]
"#
    );
    match crate::manifest::load_str(&text, "services.yaml") {
        Ok((m, _)) => m,
        Err(e) => panic!("{:?}", e.diagnostics),
    }
}

/// A route of `kind` as `GET /routes` reports it.
pub fn route(kind: RouteKind) -> RouteView {
    RouteView {
        upstream: match kind {
            RouteKind::Stack => "http://p-alpha-r3:8080".into(),
            RouteKind::Legacy => "http://host.docker.internal:9000/servers/alpha".into(),
        },
        revision: (kind == RouteKind::Stack).then_some(3),
        kind,
        since: "2026-11-25T00:00:00Z".into(),
        draining: vec![],
        replicas: vec![],
        unhealthy: vec![],
    }
}
