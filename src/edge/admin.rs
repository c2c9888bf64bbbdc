//! The host side of the edge's admin API (`http://127.0.0.1:<admin_port>`): read routes, switch
//! one, wait for a replaced upstream to drain. Used by deploy/rollback, `mcpctl edge` and cutover.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::routes::{PutRoute, RouteKind, RouteView, RoutesView};
use crate::rollout::plan::Revision;

/// The upstream of a stack revision: its container name on the project network, at the port its
/// bridge listens on (the service's `container_port`, which the bridge's `--allow-host
/// mcp-<service>:<port>` names too; the edge sends that Host).
pub fn stack_upstream(container: &str, container_port: u16) -> String {
    format!("http://{container}:{container_port}")
}

/// The port a revision's bridge listens on: the in-container port of its recorded config, else of
/// its one published port, else the default 8080.
pub fn revision_port(r: &Revision) -> u16 {
    r.spec
        .as_ref()
        .and_then(|s| s.port)
        .map(|p| p.container_port)
        .or_else(|| (r.ports.len() == 1).then(|| *r.ports.keys().next().expect("one")))
        .unwrap_or(super::INTERNAL_PORT)
}

/// [`stack_upstream`] of an observed revision.
pub fn revision_upstream(r: &Revision) -> String {
    stack_upstream(&r.container, revision_port(r))
}

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    client: reqwest::Client,
}

impl AdminClient {
    pub fn new(admin_port: u16) -> Self {
        Self::at(&format!("http://127.0.0.1:{admin_port}"))
    }

    pub fn at(base: &str) -> Self {
        Self::with_timeout(base, Duration::from_secs(10))
    }

    /// [`AdminClient::at`] whose requests give up after `timeout` (cutover bounds each step).
    pub fn with_timeout(base: &str, timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()
                .expect("a plain HTTP client builds"),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn healthy(&self) -> bool {
        self.client
            .get(format!("{}/healthz", self.base))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Wait until the admin API answers (a freshly started edge).
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.healthy().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn routes(&self) -> anyhow::Result<RoutesView> {
        let r = self
            .client
            .get(format!("{}/routes", self.base))
            .send()
            .await
            .with_context(|| {
                format!(
                    "edge admin API {} (is the edge running? `mcpctl edge up`)",
                    self.base
                )
            })?;
        anyhow::ensure!(r.status().is_success(), "GET /routes: {}", r.status());
        Ok(r.json().await?)
    }

    pub async fn route(&self, service: &str) -> anyhow::Result<Option<RouteView>> {
        Ok(self.routes().await?.routes.remove(service))
    }

    pub async fn put(&self, service: &str, put: &PutRoute) -> anyhow::Result<RouteView> {
        let r = self
            .client
            .put(format!("{}/routes/{service}", self.base))
            .json(put)
            .send()
            .await
            .with_context(|| format!("edge admin API {}", self.base))?;
        let status = r.status();
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            anyhow::bail!("PUT /routes/{service}: {status}: {body}");
        }
        Ok(r.json().await?)
    }

    /// Point `service` at a stack revision (`upstream`: [`stack_upstream`]); the replaced upstream
    /// drains for `drain` (default: the edge's own `--drain-timeout`).
    pub async fn switch_to_revision(
        &self,
        service: &str,
        upstream: &str,
        release: u64,
        drain: Option<Duration>,
    ) -> anyhow::Result<RouteView> {
        self.put(
            service,
            &PutRoute {
                upstream: upstream.to_string(),
                revision: Some(release),
                kind: RouteKind::Stack,
                drain_timeout_s: drain.map(|d| d.as_secs().max(1)),
            },
        )
        .await
    }

    /// Put a route back as it was (`before`, read before a switch): the same upstream, revision
    /// and kind. An upstream still draining becomes current again with its sessions.
    pub async fn restore(
        &self,
        service: &str,
        before: &RouteView,
        drain: Option<Duration>,
    ) -> anyhow::Result<RouteView> {
        self.put(
            service,
            &PutRoute {
                upstream: before.upstream.clone(),
                revision: before.revision,
                kind: before.kind,
                drain_timeout_s: drain.map(|d| d.as_secs().max(1)),
            },
        )
        .await
    }

    /// Wait until `upstream` no longer drains for `service` (its sessions ended, or the edge
    /// closed them at the deadline). `progress` gets a line when the session count changes.
    pub async fn wait_drained(
        &self,
        service: &str,
        upstream: &str,
        limit: Duration,
        progress: &dyn Fn(&str),
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = None;
        loop {
            let route = self.route(service).await?;
            let d = route
                .as_ref()
                .and_then(|r| r.draining.iter().find(|d| d.upstream == upstream));
            let Some(d) = d else {
                return Ok(started.elapsed());
            };
            if last != Some(d.sessions) {
                progress(&format!(
                    "draining {upstream}: {} session(s) open, closed at {} at the latest",
                    d.sessions, d.deadline
                ));
                last = Some(d.sessions);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "{upstream} still drains after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
