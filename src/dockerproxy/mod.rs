//! `mcpctl docker-proxy`: the stack's only holder of the Docker socket. A GET-only, read-only view
//! of the project's managed containers (list, inspect without env, one stats sample, log tail) for
//! the monitoring server, plus the container exporter's `/metrics` (`mcp_container_*`) for
//! Prometheus. docs/contracts.md "Docker proxy and container exporter" is the interface.
//!
//! Must not: forward arbitrary Docker API calls, show containers of other projects or unmanaged
//! ones, or reveal environment variables (secrets live in files, but images may set env).
//!
//! A container reference from the path reaches the engine only after [`container_ref`] accepted it
//! (Docker's id/name grammar, checked on the raw segment too), and only for the inspect that
//! resolves it to a visible container; every follow-up call (stats, logs) uses the inspected `Id`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bollard::query_parameters as q;
use bollard::Docker;
use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;

use crate::engine::docker::DockerEngine;

/// How to run the proxy (`mcpctl docker-proxy`'s flags: `crate::commands::docker_proxy`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Only containers of this project are visible.
    pub project: String,
    /// The manifest's label prefix.
    pub label_prefix: String,
    /// `mcpctl backup`'s status file (`crate::backup::Status` JSON), mounted read-only: the
    /// source of `mcp_backup_last_success_timestamp_seconds`.
    pub backup_status: Option<std::path::PathBuf>,
}

/// Timeout of every Docker call made for a request: a slow engine must not hang the monitoring
/// server or a Prometheus scrape.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_LOG_LINES: usize = 1000;

struct Proxy {
    docker: Docker,
    prefix: String,
    project: String,
    /// `mcp_dockerproxy_refused_total{reason}`: requests answered before any engine call.
    refused: Family<exporter::RefusedLabels, Counter>,
    /// [`Config::backup_status`].
    backup_status: Option<std::path::PathBuf>,
}

type Shared = Arc<Proxy>;

pub fn run(args: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let engine = DockerEngine::connect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut proxy = Proxy::new(
            engine.client().clone(),
            args.label_prefix.clone(),
            args.project.clone(),
        );
        proxy.backup_status = args.backup_status.clone();
        let proxy = Arc::new(proxy);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("docker-proxy: cannot listen on {}", args.listen))?;
        tracing::info!(addr = %listener.local_addr()?, project = %args.project, "docker-proxy listening");
        axum::serve(listener, router(proxy))
            .with_graceful_shutdown(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            })
            .await?;
        Ok(())
    })
}

fn router(proxy: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/containers/json", get(list))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/logs", get(logs))
        .fallback(|State(p): State<Shared>| async move { p.refuse(Refusal::Endpoint) })
        .method_not_allowed_fallback(
            |State(p): State<Shared>| async move { p.refuse(Refusal::Method) },
        )
        // Applies to the routes and the fallback: no handler runs for anything but GET (axum would
        // otherwise also route HEAD to the GET handlers).
        .layer(axum::middleware::from_fn_with_state(
            proxy.clone(),
            only_get,
        ))
        .with_state(proxy)
}

async fn only_get(State(p): State<Shared>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET {
        return p.refuse(Refusal::Method);
    }
    next.run(req).await
}

/// Why a request was answered without asking the engine (the `reason` label of
/// `mcp_dockerproxy_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not GET: 405.
    Method,
    /// A path that is not one of the contract's endpoints: 403.
    Endpoint,
    /// The id segment carries an encoded `/`, `?`, `#` or `%` (or a malformed escape): 400.
    Encoded,
    /// The id segment is `.` or `..` (also encoded): 400.
    DotSegment,
    /// The id is neither a container id nor a container name: 400.
    InvalidId,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Method,
        Refusal::Endpoint,
        Refusal::Encoded,
        Refusal::DotSegment,
        Refusal::InvalidId,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Method => "method",
            Refusal::Endpoint => "endpoint",
            Refusal::Encoded => "encoded",
            Refusal::DotSegment => "dot_segment",
            Refusal::InvalidId => "invalid_id",
        }
    }

    fn response(self) -> Response {
        let (status, text) = match self {
            Refusal::Method => (
                StatusCode::METHOD_NOT_ALLOWED,
                "docker-proxy is read-only: GET only\n",
            ),
            Refusal::Endpoint => (
                StatusCode::FORBIDDEN,
                "docker-proxy: only the endpoints of docs/contracts.md are served\n",
            ),
            Refusal::Encoded => (
                StatusCode::BAD_REQUEST,
                "docker-proxy: the container id contains an encoded '/', '?', '#' or '%'\n",
            ),
            Refusal::DotSegment => (
                StatusCode::BAD_REQUEST,
                "docker-proxy: '.' and '..' are not container ids\n",
            ),
            Refusal::InvalidId => (
                StatusCode::BAD_REQUEST,
                "docker-proxy: not a container id (12-64 lowercase hex) or name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128)\n",
            ),
        };
        if self == Refusal::Method {
            (status, [(header::ALLOW, "GET")], text).into_response()
        } else {
            (status, text).into_response()
        }
    }
}

/// Longest container name accepted (Docker itself has no documented limit; ours are far shorter).
pub const MAX_NAME_LEN: usize = 128;

/// A container id as Docker prints it: 12 (short) to 64 (full) lowercase hex characters.
pub fn is_container_id(s: &str) -> bool {
    (12..=64).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A container name per Docker's grammar `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most [`MAX_NAME_LEN`]
/// long; `..` anywhere is refused as well (no name mcpctl creates contains a dot).
pub fn is_container_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !s.contains("..")
}

/// Check the raw (still percent-encoded) path segment naming a container and return the decoded
/// reference, or why it is refused. Only what this accepts is ever sent to the engine.
pub fn container_ref(raw: &str) -> Result<String, Refusal> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            decoded.push(b);
            continue;
        }
        let hex = |b: Option<u8>| b.and_then(|b| (b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.next()), hex(bytes.next())) else {
            return Err(Refusal::Encoded);
        };
        let c = (hi * 16 + lo) as u8;
        if matches!(c, b'/' | b'?' | b'#' | b'%') {
            return Err(Refusal::Encoded);
        }
        decoded.push(c);
    }
    if matches!(decoded.as_slice(), b"." | b"..") {
        return Err(Refusal::DotSegment);
    }
    match String::from_utf8(decoded) {
        Ok(s) if is_container_id(&s) || is_container_name(&s) => Ok(s),
        _ => Err(Refusal::InvalidId),
    }
}

/// The `{id}` segment of `/containers/{id}/...`, validated by [`container_ref`] on the raw URI (a
/// refusal answers before any engine call and is counted).
struct ContainerRef(String);

impl FromRequestParts<Shared> for ContainerRef {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, p: &Shared) -> Result<Self, Response> {
        // The router is not nested, so `uri` is the request's own (undecoded) path.
        let raw = parts.uri.path().split('/').nth(2).unwrap_or("");
        container_ref(raw)
            .map(ContainerRef)
            .map_err(|r| p.refuse(r))
    }
}

fn engine_error(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        format!("docker-proxy: the engine did not answer: {e}\n"),
    )
        .into_response()
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Response> {
    match tokio::time::timeout(DOCKER_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Err((StatusCode::NOT_FOUND, "no such container\n").into_response()),
        Ok(Err(e)) => Err(engine_error(e)),
        Err(_) => Err(engine_error("timed out")),
    }
}

impl Proxy {
    fn new(docker: Docker, prefix: String, project: String) -> Proxy {
        let refused = Family::<exporter::RefusedLabels, Counter>::default();
        for r in Refusal::ALL {
            let _ = refused.get_or_create(&exporter::RefusedLabels::from(r));
        }
        Proxy {
            docker,
            prefix,
            project,
            refused,
            backup_status: None,
        }
    }

    fn refuse(&self, r: Refusal) -> Response {
        self.refused
            .get_or_create(&exporter::RefusedLabels::from(r))
            .inc();
        r.response()
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}.managed=true", self.prefix),
                format!("{}.project={}", self.prefix, self.project),
            ],
        )])
    }

    fn visible(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(&format!("{}.managed", self.prefix))
                .map(String::as_str)
                == Some("true")
                && l.get(&format!("{}.project", self.prefix)) == Some(&self.project)
        })
    }

    async fn list(&self) -> Result<Vec<bollard::models::ContainerSummary>, Response> {
        let opts = q::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&self.filters())
            .build();
        timed(self.docker.list_containers(Some(opts))).await
    }

    /// Inspect `id`, or 404 when it is not one of ours (indistinguishable from missing). Returns the
    /// inspected full `Id` (64 hex) too: every follow-up engine call uses it, never `id`.
    async fn inspect_visible(
        &self,
        id: &str,
    ) -> Result<(String, bollard::models::ContainerInspectResponse), Response> {
        let c = timed(
            self.docker
                .inspect_container(id, None::<q::InspectContainerOptions>),
        )
        .await?;
        if !self.visible(c.config.as_ref().and_then(|cfg| cfg.labels.as_ref())) {
            return Err((StatusCode::NOT_FOUND, "no such container\n").into_response());
        }
        match c.id.clone() {
            Some(full) if full.len() == 64 && is_container_id(&full) => Ok((full, c)),
            _ => Err(engine_error("inspect returned no full container id")),
        }
    }

    async fn stats_of(&self, id: &str) -> Result<Value, Response> {
        let opts = q::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(id, Some(opts));
        match tokio::time::timeout(DOCKER_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(s))) => Ok(serde_json::to_value(s).unwrap_or(Value::Null)),
            Ok(Some(Err(e))) => Err(engine_error(e)),
            Ok(None) => Err(engine_error("no stats sample")),
            Err(_) => Err(engine_error("timed out")),
        }
    }
}

async fn healthz(State(p): State<Shared>) -> Response {
    match timed(p.docker.ping()).await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(r) => r,
    }
}

async fn list(State(p): State<Shared>) -> Response {
    match p.list().await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

async fn inspect(State(p): State<Shared>, ContainerRef(id): ContainerRef) -> Response {
    match p.inspect_visible(&id).await {
        Ok((_, mut c)) => {
            if let Some(cfg) = c.config.as_mut() {
                cfg.env = None;
            }
            Json(c).into_response()
        }
        Err(r) => r,
    }
}

async fn stats(State(p): State<Shared>, ContainerRef(id): ContainerRef) -> Response {
    let full = match p.inspect_visible(&id).await {
        Ok((full, _)) => full,
        Err(r) => return r,
    };
    match p.stats_of(&full).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    tail: Option<usize>,
}

async fn logs(
    State(p): State<Shared>,
    ContainerRef(id): ContainerRef,
    Query(lq): Query<LogsQuery>,
) -> Response {
    let full = match p.inspect_visible(&id).await {
        Ok((full, _)) => full,
        Err(r) => return r,
    };
    let tail = lq.tail.unwrap_or(100).min(MAX_LOG_LINES);
    let opts = q::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail.to_string())
        .build();
    let collect = async {
        let mut lines = Vec::new();
        let mut stream = p.docker.logs(&full, Some(opts));
        while let Some(item) = stream.next().await {
            let (which, bytes) = match item? {
                bollard::container::LogOutput::StdErr { message } => ("stderr", message),
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => ("stdout", message),
                bollard::container::LogOutput::StdIn { .. } => continue,
            };
            for line in String::from_utf8_lossy(&bytes).lines() {
                lines.push(serde_json::json!({"stream": which, "line": line}));
            }
        }
        Ok::<_, bollard::errors::Error>(lines)
    };
    match timed(collect).await {
        Ok(lines) => Json(serde_json::json!({ "lines": lines })).into_response(),
        Err(r) => r,
    }
}

/// The exporter: one fresh registry per scrape, filled from Docker's view of every visible
/// container (stats sampled concurrently; a container that fails to answer is skipped).
async fn metrics(State(p): State<Shared>) -> Response {
    let list = match p.list().await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let samples = futures::future::join_all(list.iter().map(|c| {
        let p = p.clone();
        let id = c.id.clone().unwrap_or_default();
        async move {
            let (full, detail) = p.inspect_visible(&id).await.ok()?;
            let running = detail
                .state
                .as_ref()
                .and_then(|s| s.running)
                .unwrap_or(false);
            let stats = if running {
                p.stats_of(&full).await.ok()
            } else {
                None
            };
            Some((detail, stats))
        }
    }))
    .await;
    let mut registry = exporter::registry(&p.prefix, samples.into_iter().flatten(), &p.refused);
    if let Some(file) = &p.backup_status {
        exporter::register_backup(&mut registry, exporter::last_backup(file).await);
    }
    crate::metrics::response(&registry)
}

pub mod exporter {
    //! `mcp_container_*` series (docs/contracts.md "Metrics") from inspect + stats JSON.

    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct Labels {
        pub service: String,
        pub revision: String,
        pub container: String,
    }

    /// Labels of `mcp_dockerproxy_refused_total`.
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct RefusedLabels {
        pub reason: &'static str,
    }

    impl From<super::Refusal> for RefusedLabels {
        fn from(r: super::Refusal) -> Self {
            RefusedLabels { reason: r.label() }
        }
    }

    /// Memory used exactly as `docker stats` computes it: usage − total_inactive_file (cgroup v1),
    /// else usage − inactive_file (v2), each only when smaller than usage.
    pub fn memory_used(stats: &serde_json::Value) -> Option<u64> {
        let m = &stats["memory_stats"];
        let usage = m["usage"].as_u64()?;
        let inactive = [
            &m["stats"]["total_inactive_file"],
            &m["stats"]["inactive_file"],
        ]
        .into_iter()
        .filter_map(|v| v.as_u64())
        .find(|v| *v < usage)
        .unwrap_or(0);
        Some(usage - inactive)
    }

    /// A container's health for `mcp_container_healthy`: `None` without a Docker health check;
    /// healthy only while it runs (a stopped container keeps its last health status).
    pub fn health_of(detail: &bollard::models::ContainerInspectResponse) -> Option<bool> {
        use bollard::models::HealthStatusEnum as H;
        let state = detail.state.as_ref()?;
        let status = state.health.as_ref()?.status?;
        if matches!(status, H::EMPTY | H::NONE) {
            return None;
        }
        Some(state.running.unwrap_or(false) && status == H::HEALTHY)
    }

    /// One scrape's registry (encoded by `crate::metrics`): fresh families set from Docker's
    /// view of each container, and the proxy's refusal counter.
    pub fn registry(
        prefix: &str,
        containers: impl Iterator<
            Item = (
                bollard::models::ContainerInspectResponse,
                Option<serde_json::Value>,
            ),
        >,
        refused: &Family<RefusedLabels, Counter>,
    ) -> Registry {
        let used = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let limit = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let cpu_limit = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let restarts = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let healthy = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (detail, stats) in containers {
            let labels = detail
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let get = |k: &str| {
                labels
                    .get(&format!("{prefix}.{k}"))
                    .cloned()
                    .unwrap_or_default()
            };
            let hash8: String = get("config-hash").chars().take(8).collect();
            let l = Labels {
                service: get("service"),
                revision: format!("r{}-{hash8}", get("release")),
                container: detail
                    .name
                    .clone()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
            };
            let host = detail.host_config.as_ref();
            if let Some(mem) = host.and_then(|h| h.memory).filter(|m| *m > 0) {
                limit.get_or_create(&l).set(mem as f64);
            }
            if let Some(nano) = host.and_then(|h| h.nano_cpus).filter(|n| *n > 0) {
                cpu_limit.get_or_create(&l).set(nano as f64 / 1e9);
            }
            restarts
                .get_or_create(&l)
                .inc_by(detail.restart_count.unwrap_or(0) as f64);
            if let Some(h) = health_of(&detail) {
                healthy.get_or_create(&l).set(if h { 1.0 } else { 0.0 });
            }
            if let Some(s) = stats {
                if let Some(u) = memory_used(&s) {
                    used.get_or_create(&l).set(u as f64);
                }
                if let Some(ns) = s["cpu_stats"]["cpu_usage"]["total_usage"].as_u64() {
                    cpu.get_or_create(&l).inc_by(ns as f64 / 1e9);
                }
            }
        }
        let mut r = Registry::default();
        r.register(
            "mcp_container_memory_used_bytes",
            "Memory used (usage - inactive_file), as docker stats shows",
            used,
        );
        r.register(
            "mcp_container_memory_limit_bytes",
            "Memory limit of the container",
            limit,
        );
        r.register(
            "mcp_container_cpu_seconds",
            "CPU time used by the container",
            cpu,
        );
        r.register(
            "mcp_container_cpu_limit_cores",
            "CPU limit of the container in cores",
            cpu_limit,
        );
        r.register(
            "mcp_container_restarts",
            "Restarts of the container by the engine",
            restarts,
        );
        r.register(
            "mcp_container_healthy",
            "1 when the container runs and its Docker health check passes, else 0 (only containers with a health check)",
            healthy,
        );
        r.register(
            "mcp_dockerproxy_refused",
            "Requests the docker proxy refused before asking the engine",
            refused.clone(),
        );
        r
    }

    /// Creation time (unix seconds) of the newest complete backup set, from the status file
    /// `mcpctl backup` writes; 0 when there is none (or it cannot be read: the alert then fires,
    /// which is the point). At most 64 KiB is read.
    pub async fn last_backup(file: &std::path::Path) -> i64 {
        use tokio::io::AsyncReadExt as _;
        let Ok(f) = tokio::fs::File::open(file).await else {
            return 0;
        };
        let mut buf = Vec::new();
        if f.take(64 << 10).read_to_end(&mut buf).await.is_err() {
            return 0;
        }
        serde_json::from_slice::<serde_json::Value>(&buf)
            .ok()
            .and_then(|v| v["created_unix"].as_i64())
            .unwrap_or(0)
    }

    pub fn register_backup(r: &mut Registry, created_unix: i64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(created_unix as f64);
        r.register(
            "mcp_backup_last_success_timestamp_seconds",
            "Creation time of the newest complete backup set (mcpctl backup), 0 when there is none",
            g,
        );
    }

    #[cfg(test)]
    mod tests {
        #[tokio::test]
        async fn the_last_backup_is_read_from_the_status_file_and_0_without_one() {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("last.json");
            assert_eq!(super::last_backup(&f).await, 0);
            std::fs::write(
                &f,
                r#"{"project":"p","set":"/s","created_unix":1796315712,"bytes":1}"#,
            )
            .unwrap();
            assert_eq!(super::last_backup(&f).await, 1_796_315_712);
            std::fs::write(&f, "not json").unwrap();
            assert_eq!(super::last_backup(&f).await, 0);
            let mut r = prometheus_client::registry::Registry::default();
            super::register_backup(&mut r, 1_796_315_712);
            let text = crate::metrics::encode(&r).unwrap();
            assert!(
                text.contains("mcp_backup_last_success_timestamp_seconds 1796315712"),
                "{text}"
            );
        }

        #[test]
        fn memory_used_subtracts_inactive_file_v1_and_v2() {
            let v1 = serde_json::json!({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300, "inactive_file": 100}}});
            let v2 = serde_json::json!({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}});
            assert_eq!(super::memory_used(&v1), Some(700));
            assert_eq!(super::memory_used(&v2), Some(900));
            assert_eq!(super::memory_used(&serde_json::json!({})), None);
        }

        #[test]
        fn exposition_parses_and_carries_every_contract_metric() {
            use super::*;
            let detail: bollard::models::ContainerInspectResponse =
                serde_json::from_value(serde_json::json!({
                    "Name": "/shop-alpha-r1",
                    "RestartCount": 2,
                    "Config": {"Labels": {
                        "com.mcp.service": "alpha",
                        "com.mcp.release": "1",
                        "com.mcp.config-hash": "0123456789abcdef"
                    }},
                    "HostConfig": {"Memory": 67108864, "NanoCpus": 500000000},
                    "State": {"Running": true, "Health": {"Status": "healthy"}}
                }))
                .unwrap();
            let stats = serde_json::json!({
                "memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}},
                "cpu_stats": {"cpu_usage": {"total_usage": 1500000000u64}}
            });
            let refused = Family::<RefusedLabels, Counter>::default();
            let _ = refused.get_or_create(&RefusedLabels { reason: "method" });
            let reg = registry("com.mcp", std::iter::once((detail, Some(stats))), &refused);
            let text = crate::metrics::encode(&reg).unwrap();
            let families =
                crate::metrics::parse::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            for (name, kind, value) in [
                ("mcp_container_memory_used_bytes", "gauge", 900.0),
                ("mcp_container_memory_limit_bytes", "gauge", 67108864.0),
                ("mcp_container_cpu_seconds_total", "counter", 1.5),
                ("mcp_container_cpu_limit_cores", "gauge", 0.5),
                ("mcp_container_restarts_total", "counter", 2.0),
                ("mcp_container_healthy", "gauge", 1.0),
            ] {
                let f = families
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
                assert_eq!(f.kind, kind, "{name}");
                let s = &f.samples[..];
                assert_eq!(s.len(), 1, "{name}");
                let labels: Vec<(&str, &str)> = s[0]
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                assert_eq!(
                    labels,
                    [
                        ("service", "alpha"),
                        ("revision", "r1-01234567"),
                        ("container", "shop-alpha-r1")
                    ],
                    "{name}"
                );
                assert_eq!(s[0].value, value, "{name}");
            }
            let refused = &families["mcp_dockerproxy_refused_total"];
            assert_eq!(refused.kind, "counter");
            assert_eq!(refused.samples[0].label("reason"), Some("method"));
            assert_eq!(families.len(), 7, "{:?}", families.keys());
        }

        #[test]
        fn healthy_only_while_running_with_a_passing_health_check() {
            let of = |state: serde_json::Value| {
                let d: bollard::models::ContainerInspectResponse =
                    serde_json::from_value(serde_json::json!({ "State": state })).unwrap();
                super::health_of(&d)
            };
            let h = |running: bool, status: &str| {
                of(serde_json::json!({"Running": running, "Health": {"Status": status}}))
            };
            assert_eq!(h(true, "healthy"), Some(true));
            assert_eq!(h(true, "unhealthy"), Some(false));
            assert_eq!(h(true, "starting"), Some(false));
            // A stopped container keeps its last status: it is not healthy.
            assert_eq!(h(false, "healthy"), Some(false));
            assert_eq!(h(true, "none"), None);
            assert_eq!(of(serde_json::json!({"Running": true})), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ref_accepts_ids_and_names() {
        for ok in [
            FULL_ID,
            &FULL_ID[..12],
            "shop-alpha-r3",
            "shop-alpha-r3-candidate",
            "a",
            "My_container.1",
            "abc",
        ] {
            assert_eq!(container_ref(ok).as_deref(), Ok(ok), "{ok}");
        }
        // An unreserved character sent encoded is still the same name.
        assert_eq!(container_ref("shop%2Dalpha").as_deref(), Ok("shop-alpha"));
        assert!(container_ref(&"n".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn container_ref_refuses_paths_queries_and_dots() {
        for (raw, why) in [
            ("x%2Fjson%3F", Refusal::Encoded),
            ("%2F..%2F", Refusal::Encoded),
            ("x%2f..%2fimages", Refusal::Encoded),
            ("x%3F", Refusal::Encoded),
            ("x%3f", Refusal::Encoded),
            ("x%23", Refusal::Encoded),
            ("x%252F", Refusal::Encoded),
            ("x%25", Refusal::Encoded),
            ("x%", Refusal::Encoded),
            ("x%2", Refusal::Encoded),
            ("x%zz", Refusal::Encoded),
            (".", Refusal::DotSegment),
            ("..", Refusal::DotSegment),
            ("%2e%2E", Refusal::DotSegment),
            (".%2e", Refusal::DotSegment),
            ("", Refusal::InvalidId),
            ("-x", Refusal::InvalidId),
            (".hidden", Refusal::InvalidId),
            ("a..b", Refusal::InvalidId),
            ("a b", Refusal::InvalidId),
            ("a%20b", Refusal::InvalidId),
            ("a%00", Refusal::InvalidId),
            ("a:b", Refusal::InvalidId),
            ("%C3%A9t%C3%A9", Refusal::InvalidId),
            ("%FF", Refusal::InvalidId),
        ] {
            assert_eq!(container_ref(raw), Err(why), "{raw}");
        }
        assert_eq!(
            container_ref(&"n".repeat(MAX_NAME_LEN + 1)),
            Err(Refusal::InvalidId)
        );
        assert!(!is_container_id(&FULL_ID.to_uppercase()));
        assert!(!is_container_id(&FULL_ID[..11]));
        assert!(!is_container_id(&format!("{FULL_ID}0")));
    }

    proptest! {
        #[test]
        fn no_accepted_ref_contains_a_separator(raw in "([a-zA-Z0-9_./?#%-]|%[0-9a-fA-F]{2}|%25[0-9a-fA-F]{2}){0,40}") {
            if let Ok(s) = container_ref(&raw) {
                for bad in ["/", "?", "#", "%", ".."] {
                    prop_assert!(!s.contains(bad), "{raw} -> {s}");
                }
                prop_assert!(is_container_id(&s) || is_container_name(&s));
            }
        }

        #[test]
        fn every_hex_id_is_accepted(id in "[0-9a-f]{12,64}") {
            prop_assert_eq!(container_ref(&id), Ok(id.clone()));
            prop_assert!(is_container_id(&id));
        }

        #[test]
        fn typical_names_are_accepted(name in "[a-z][a-z0-9-]{0,30}-[a-z][a-z0-9]{0,30}-r[0-9]{1,6}(-candidate)?") {
            prop_assert_eq!(container_ref(&name), Ok(name.clone()));
        }
    }

    /// The router against an "engine" that cannot answer (a plain file as socket): every refusal
    /// must come before any engine call, which would surface as 502.
    #[test]
    fn refusals_answer_before_the_engine_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        std::fs::write(&sock, "").unwrap();
        let docker =
            Docker::connect_with_unix(sock.to_str().unwrap(), 2, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let proxy = Arc::new(Proxy::new(docker, "com.mcp".into(), "shop".into()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
                listener,
                router(proxy.clone()),
            )));
            for (method, path, status, reason) in [
                ("GET", "/containers/x%2Fjson%3F/logs", 400, "encoded"),
                ("GET", "/containers/x%2F..%2F/json", 400, "encoded"),
                ("GET", "/containers/x%252F/stats", 400, "encoded"),
                ("GET", "/containers/%3F/logs", 400, "encoded"),
                ("GET", "/containers/../logs", 400, "dot_segment"),
                ("GET", "/containers/%2e%2e/json", 400, "dot_segment"),
                ("GET", "/containers/-x/logs", 400, "invalid_id"),
                ("GET", "/containers/a..b/logs", 400, "invalid_id"),
                ("POST", "/containers/shop-a-r1/stop", 405, "method"),
                ("DELETE", "/containers/shop-a-r1/json", 405, "method"),
                ("HEAD", "/containers/shop-a-r1/json", 405, "method"),
                ("PUT", "/nowhere", 405, "method"),
                ("GET", "/info", 403, "endpoint"),
                ("GET", "/containers/shop-a-r1/exec", 403, "endpoint"),
            ] {
                let (got, head, body) = raw_request(port, method, path).await;
                assert_eq!(got, status, "{method} {path}: {head}{body}");
                assert_eq!(
                    body.lines().count(),
                    usize::from(method != "HEAD"),
                    "{body}"
                );
                if status == 405 {
                    assert!(
                        head.to_ascii_lowercase().contains("\r\nallow: get\r\n"),
                        "{head}"
                    );
                }
                let counted = proxy
                    .refused
                    .get_or_create(&exporter::RefusedLabels { reason })
                    .get();
                assert!(counted > 0, "{reason} not counted");
            }
            // A well-formed reference does reach the engine (which cannot answer here).
            let (got, _, _) = raw_request(port, "GET", "/containers/shop-a-r1/json").await;
            assert_eq!(got, 502);
        });
    }

    async fn raw_request(port: u16, method: &str, path: &str) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let resp = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, format!("{head}\r\n"), body.to_string())
    }

    #[test]
    fn refused_counter_is_exported_preinitialised() {
        let refused = Family::<exporter::RefusedLabels, Counter>::default();
        for r in Refusal::ALL {
            let _ = refused.get_or_create(&r.into());
        }
        refused.get_or_create(&Refusal::Encoded.into()).inc();
        let text =
            crate::metrics::encode(&exporter::registry("com.mcp", std::iter::empty(), &refused))
                .unwrap();
        assert!(
            text.contains("mcp_dockerproxy_refused_total{reason=\"encoded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mcp_dockerproxy_refused_total{reason=\"method\"} 0"),
            "{text}"
        );
    }
}
