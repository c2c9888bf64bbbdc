//! The host side of the edge's admin API (`http://127.0.0.1:<admin_port>`): read routes, switch
//! one, wait for a replaced upstream to drain. Used by deploy/rollback, `mcpctl edge` and cutover.
//! Every request but `/healthz` carries the admin token ([`super::token`]) as a bearer token.

use std::path::Path;
use std::sync::Arc;
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

/// Deliberately not `Debug`: it holds the admin token.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    client: reqwest::Client,
    /// The admin token, or why there is none (said when a request needs it).
    token: Result<Arc<str>, Arc<str>>,
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
            token: Err("no edge admin token was given to this client".into()),
        }
    }

    /// Send `token` with every admin request.
    pub fn with_token(mut self, token: impl Into<Arc<str>>) -> Self {
        self.token = Ok(token.into());
        self
    }

    /// Send the install's token (`<state>/edge/admin.token`); a missing or damaged file is
    /// reported, with what to do, by the first request that needs it (`/healthz` does not).
    pub fn with_token_from(mut self, state_dir: &Path) -> Self {
        self.token = super::token::load(state_dir)
            .map(Arc::from)
            .map_err(|e| Arc::from(format!("{e:#}")));
        self
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> anyhow::Result<reqwest::RequestBuilder> {
        match &self.token {
            Ok(t) => Ok(rb.bearer_auth(t)),
            Err(why) => Err(anyhow::anyhow!("{why}")),
        }
    }

    /// An answer that is not a success, as an error; 401 says what the operator can do.
    async fn refused(&self, what: &str, r: reqwest::Response) -> anyhow::Error {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return anyhow::anyhow!(
                "{what}: the edge admin API at {} refused the admin token ({status}: {body}); \
                 the running edge was created with another token than edge/admin.token in the \
                 state directory: `mcpctl edge replace --yes` recreates it with the current one",
                self.base
            );
        }
        anyhow::anyhow!("{what}: {status}: {body}")
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
            .authed(self.client.get(format!("{}/routes", self.base)))?
            .send()
            .await
            .with_context(|| {
                format!(
                    "edge admin API {} (is the edge running? `mcpctl edge up`)",
                    self.base
                )
            })?;
        if !r.status().is_success() {
            return Err(self.refused("GET /routes", r).await);
        }
        Ok(r.json().await?)
    }

    pub async fn route(&self, service: &str) -> anyhow::Result<Option<RouteView>> {
        Ok(self.routes().await?.routes.remove(service))
    }

    pub async fn put(&self, service: &str, put: &PutRoute) -> anyhow::Result<RouteView> {
        let r = self
            .authed(self.client.put(format!("{}/routes/{service}", self.base)))?
            .json(put)
            .send()
            .await
            .with_context(|| format!("edge admin API {}", self.base))?;
        if !r.status().is_success() {
            return Err(self.refused(&format!("PUT /routes/{service}"), r).await);
        }
        Ok(r.json().await?)
    }

    /// Point `service` at a stack revision (`upstream`: [`stack_upstream`], plus the upstreams of
    /// its other `replicas`); replaced upstreams drain for `drain` (default: the edge's own
    /// `--drain-timeout`).
    pub async fn switch_to_revision(
        &self,
        service: &str,
        upstream: &str,
        replicas: &[String],
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
                replicas: replicas.to_vec(),
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
                replicas: before.replicas.clone(),
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
