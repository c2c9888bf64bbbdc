//! `mcpctl docker-proxy`: the stack's only holder of the Docker socket. A GET-only, read-only view
//! of the project's managed containers (list, inspect without env, one stats sample, log tail) for
//! the monitoring server, plus the container exporter's `/metrics` (`mcp_container_*`) for
//! Prometheus. docs/contracts.md "Docker proxy and container exporter" is the interface.
//!
//! Must not: forward arbitrary Docker API calls, show containers of other projects or unmanaged
//! ones, or reveal environment variables (secrets live in files, but images may set env).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bollard::query_parameters as q;
use bollard::Docker;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::engine::docker::DockerEngine;

#[derive(Args, Debug, Clone)]
pub struct DockerProxyArgs {
    /// Address to serve on (inside its container 0.0.0.0:2375).
    #[arg(long, default_value = "0.0.0.0:2375")]
    pub listen: SocketAddr,
    /// Only containers of this project are visible.
    #[arg(long)]
    pub project: String,
    /// The manifest's label prefix.
    #[arg(long, default_value = "com.mcp")]
    pub label_prefix: String,
}

/// Timeout of every Docker call made for a request: a slow engine must not hang the monitoring
/// server or a Prometheus scrape.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_LOG_LINES: usize = 1000;

struct Proxy {
    docker: Docker,
    prefix: String,
    project: String,
}

type Shared = Arc<Proxy>;

pub fn run(args: DockerProxyArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let engine = DockerEngine::connect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let proxy = Arc::new(Proxy {
            docker: engine.client().clone(),
            prefix: args.label_prefix.clone(),
            project: args.project.clone(),
        });
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
        .fallback(|method: Method| async move {
            if method == Method::GET {
                (
                    StatusCode::FORBIDDEN,
                    "docker-proxy: only the endpoints of docs/contracts.md are served\n",
                )
            } else {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "docker-proxy is read-only\n",
                )
            }
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "docker-proxy is read-only\n",
            )
        })
        .with_state(proxy)
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

    /// Inspect `id`, or 404 when it is not one of ours (indistinguishable from missing).
    async fn inspect_visible(
        &self,
        id: &str,
    ) -> Result<bollard::models::ContainerInspectResponse, Response> {
        let c = timed(
            self.docker
                .inspect_container(id, None::<q::InspectContainerOptions>),
        )
        .await?;
        if self.visible(c.config.as_ref().and_then(|cfg| cfg.labels.as_ref())) {
            Ok(c)
        } else {
            Err((StatusCode::NOT_FOUND, "no such container\n").into_response())
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

async fn inspect(State(p): State<Shared>, Path(id): Path<String>) -> Response {
    match p.inspect_visible(&id).await {
        Ok(mut c) => {
            if let Some(cfg) = c.config.as_mut() {
                cfg.env = None;
            }
            Json(c).into_response()
        }
        Err(r) => r,
    }
}

async fn stats(State(p): State<Shared>, Path(id): Path<String>) -> Response {
    if let Err(r) = p.inspect_visible(&id).await {
        return r;
    }
    match p.stats_of(&id).await {
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
    Path(id): Path<String>,
    Query(lq): Query<LogsQuery>,
) -> Response {
    if let Err(r) = p.inspect_visible(&id).await {
        return r;
    }
    let tail = lq.tail.unwrap_or(100).min(MAX_LOG_LINES);
    let opts = q::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail.to_string())
        .build();
    let collect = async {
        let mut lines = Vec::new();
        let mut stream = p.docker.logs(&id, Some(opts));
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
            let detail = p.inspect_visible(&id).await.ok()?;
            let running = detail
                .state
                .as_ref()
                .and_then(|s| s.running)
                .unwrap_or(false);
            let stats = if running {
                p.stats_of(&id).await.ok()
            } else {
                None
            };
            Some((detail, stats))
        }
    }))
    .await;
    let mut text = String::new();
    if let Err(e) = exporter::encode(&p.prefix, samples.into_iter().flatten(), &mut text) {
        return engine_error(e);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
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

    pub fn encode(
        prefix: &str,
        containers: impl Iterator<
            Item = (
                bollard::models::ContainerInspectResponse,
                Option<serde_json::Value>,
            ),
        >,
        out: &mut String,
    ) -> std::fmt::Result {
        let used = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let limit = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let cpu = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let cpu_limit = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let restarts = Family::<Labels, Counter<f64, AtomicU64>>::default();
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
        prometheus_client::encoding::prometheus_text::encode(out, &r)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn memory_used_subtracts_inactive_file_v1_and_v2() {
            let v1 = serde_json::json!({"memory_stats": {"usage": 1000, "stats": {"total_inactive_file": 300, "inactive_file": 100}}});
            let v2 = serde_json::json!({"memory_stats": {"usage": 1000, "stats": {"inactive_file": 100}}});
            assert_eq!(super::memory_used(&v1), Some(700));
            assert_eq!(super::memory_used(&v2), Some(900));
            assert_eq!(super::memory_used(&serde_json::json!({})), None);
        }
    }
}
