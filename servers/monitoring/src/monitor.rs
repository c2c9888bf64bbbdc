//! What the five tools report: the stack's services from container labels, their health (container
//! state, Docker health, bridge readiness), resource use, logs and Prometheus alerts.
//!
//! Owns: which container stands for a service, when a service counts as unhealthy and the plain
//! words that say why, the JSON each tool returns. Must not: speak MCP (server.rs does) or build
//! URLs for Docker itself (docker.rs does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::docker::{short_id, ContainerSummary, DockerProxy, Inspect, LogLine};
use crate::http::{snippet, FetchError, Http};
use crate::metrics::{self, BridgeFigures};
use crate::settings::Settings;

pub const MAX_LOG_LINES: u64 = 1000;
pub const DEFAULT_LOG_LINES: u64 = 50;

/// A tool's answer: `text` for the model/human, `data` as structured content.
pub struct Output {
    pub text: String,
    pub data: Value,
}

impl Output {
    /// Text = the pretty JSON itself (its first field is a plain-words `summary`).
    fn json(data: Value) -> Self {
        let text = serde_json::to_string_pretty(&data).expect("JSON values always serialise");
        Output { text, data }
    }
}

/// A failed tool call, worded for the caller.
pub type ToolError = String;

fn proxy_err(e: FetchError) -> ToolError {
    format!("{e} (Docker data is read only through mcpctl docker-proxy; is it running?)")
}

pub struct Monitor {
    settings: Settings,
    http: Http,
    docker: DockerProxy,
}

/// The container that stands for a service, with what its labels say.
#[derive(Debug, Clone)]
struct ServiceContainer {
    service: String,
    role: String,
    revision: Option<String>,
    summary: ContainerSummary,
}

impl ServiceContainer {
    /// Only MCP services run behind a bridge (databases, exporters, the edge do not).
    fn has_bridge(&self) -> bool {
        self.role == "service"
    }
}

/// What a bridge's `/readyz` said.
#[derive(Debug, Clone)]
enum Readiness {
    Answered {
        url: String,
        status: u16,
        body: Value,
    },
    Unreachable {
        url: String,
        error: String,
    },
    NotChecked {
        why: String,
    },
}

impl Readiness {
    fn short(&self) -> String {
        match self {
            Readiness::Answered { status: 200, .. } => "ready".into(),
            Readiness::Answered { status, .. } => format!("not ready (HTTP {status})"),
            Readiness::Unreachable { .. } => "unreachable".into(),
            Readiness::NotChecked { why } => format!("not checked: {why}"),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Readiness::Answered { url, status, body } => json!({
                "checked": true, "url": url, "status": status, "ready": *status == 200, "body": body,
            }),
            Readiness::Unreachable { url, error } => json!({
                "checked": true, "url": url, "ready": false, "error": error,
            }),
            Readiness::NotChecked { why } => json!({ "checked": false, "why": why }),
        }
    }
}

impl Monitor {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let http = Http::new(settings.call_timeout)?;
        let docker = DockerProxy::new(&settings.docker_proxy_url, http.clone());
        Ok(Monitor {
            settings,
            http,
            docker,
        })
    }

    fn label_key(&self, key: &str) -> String {
        format!("{}.{key}", self.settings.label_prefix)
    }

    /// One container per service: the running one, else the newest release. Candidates (being
    /// gated) and the lock container are not services.
    fn services(&self, list: Vec<ContainerSummary>) -> BTreeMap<String, ServiceContainer> {
        let (k_service, k_role, k_release, k_hash, k_phase) = (
            self.label_key("service"),
            self.label_key("role"),
            self.label_key("release"),
            self.label_key("config-hash"),
            self.label_key("phase"),
        );
        let mut by_service: BTreeMap<String, (bool, u64, ServiceContainer)> = BTreeMap::new();
        for c in list {
            let Some(service) = c.labels.get(&k_service).cloned() else {
                continue;
            };
            let role = c.labels.get(&k_role).cloned().unwrap_or_default();
            if role == "lock" || c.labels.get(&k_phase).is_some_and(|p| p == "candidate") {
                continue;
            }
            let release = c.labels.get(&k_release).and_then(|r| r.parse::<u64>().ok());
            let revision = match (release, c.labels.get(&k_hash)) {
                (Some(n), Some(h)) => {
                    Some(format!("r{n}-{}", h.chars().take(8).collect::<String>()))
                }
                (Some(n), None) => Some(format!("r{n}")),
                _ => None,
            };
            let rank = (c.state == "running", release.unwrap_or(0));
            let sc = ServiceContainer {
                service: service.clone(),
                role,
                revision,
                summary: c,
            };
            match by_service.get(&service) {
                Some((r, n, _)) if (*r, *n) >= rank => {}
                _ => {
                    by_service.insert(service, (rank.0, rank.1, sc));
                }
            }
        }
        by_service
            .into_iter()
            .map(|(k, (_, _, v))| (k, v))
            .collect()
    }

    async fn container_for(&self, service: &str) -> Result<ServiceContainer, ToolError> {
        let mut services = self.services(self.docker.list().await.map_err(proxy_err)?);
        services.remove(service).ok_or_else(|| {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("no container of service '{service}' found: the docker proxy lists no services of this stack")
            } else {
                format!(
                    "no container of service '{service}' found; services of this stack: {}",
                    known.join(", ")
                )
            }
        })
    }

    async fn readiness(&self, sc: &ServiceContainer, running: bool) -> Readiness {
        if !sc.has_bridge() {
            return Readiness::NotChecked {
                why: format!("role '{}' has no bridge", sc.role),
            };
        }
        if !running {
            return Readiness::NotChecked {
                why: "the container is not running".into(),
            };
        }
        let url = format!("{}/readyz", self.settings.bridge_url(&sc.service));
        match self.http.get("the bridge", &url).await {
            Ok(r) => {
                let body = serde_json::from_slice::<Value>(&r.body)
                    .unwrap_or_else(|_| Value::String(snippet(&r.text(), 500)));
                Readiness::Answered {
                    url,
                    status: r.status,
                    body,
                }
            }
            Err(e) => Readiness::Unreachable {
                url,
                error: e.to_string(),
            },
        }
    }

    // ---- list_services -------------------------------------------------------------------------

    pub async fn list_services(self: &Arc<Self>) -> Result<Output, ToolError> {
        let services = self.services(self.docker.list().await.map_err(proxy_err)?);
        let mut tasks = tokio::task::JoinSet::new();
        for (i, sc) in services.into_values().enumerate() {
            let me = self.clone();
            tasks.spawn(async move { (i, me.service_row(sc).await) });
        }
        let mut rows: Vec<(usize, Value, Option<String>)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (i, (row, problem)) =
                joined.map_err(|e| format!("internal error while gathering services: {e}"))?;
            rows.push((i, row, problem));
        }
        rows.sort_by_key(|(i, _, _)| *i);
        let unhealthy: Vec<String> = rows.iter().filter_map(|(_, _, p)| p.clone()).collect();
        let summary = match (rows.len(), unhealthy.len()) {
            (0, _) => {
                "No services found: the docker proxy lists no containers of this stack.".to_string()
            }
            (n, 0) => format!("{n} services, all healthy."),
            (n, u) => format!(
                "{n} services, {} healthy, {u} unhealthy: {}",
                n - u,
                unhealthy.join("; ")
            ),
        };
        Ok(Output::json(json!({
            "summary": summary,
            "services": rows.into_iter().map(|(_, r, _)| r).collect::<Vec<_>>(),
        })))
    }

    /// One row of `list_services`, and "name: why" when the service is unhealthy.
    async fn service_row(&self, sc: ServiceContainer) -> (Value, Option<String>) {
        let running = sc.summary.state == "running";
        let (inspect, readiness) = tokio::join!(
            self.docker.inspect(&sc.summary.id),
            self.readiness(&sc, running)
        );
        let mut row = Map::new();
        row.insert("name".into(), json!(sc.service));
        row.insert("role".into(), json!(sc.role));
        row.insert("state".into(), json!(sc.summary.state));
        let problem = match &inspect {
            Ok(i) => {
                let reasons = unhealthy_reasons(i, &readiness);
                row.insert("health".into(), json!(docker_health(i)));
                row.insert("healthy".into(), json!(reasons.is_empty()));
                row.insert("revision".into(), json!(sc.revision));
                let up = uptime(i);
                row.insert("uptime".into(), json!(up.map(human_duration)));
                row.insert("uptime_seconds".into(), json!(up.map(|d| d.as_secs())));
                row.insert("restarts".into(), json!(i.restart_count));
                row.insert("readiness".into(), json!(readiness.short()));
                if reasons.is_empty() {
                    None
                } else {
                    row.insert("problems".into(), json!(reasons));
                    Some(format!("{} ({})", sc.service, reasons.join("; ")))
                }
            }
            Err(e) => {
                let why = format!("container details unavailable: {e}");
                row.insert("health".into(), json!("unknown"));
                row.insert("healthy".into(), json!(false));
                row.insert("revision".into(), json!(sc.revision));
                row.insert("readiness".into(), json!(readiness.short()));
                row.insert("problems".into(), json!([why]));
                Some(format!("{} ({why})", sc.service))
            }
        };
        row.insert("status".into(), json!(sc.summary.status));
        row.insert("container".into(), json!(sc.summary.name()));
        (Value::Object(row), problem)
    }

    // ---- service_health ------------------------------------------------------------------------

    pub async fn service_health(&self, service: &str) -> Result<Output, ToolError> {
        let sc = self.container_for(service).await?;
        let inspect = self
            .docker
            .inspect(&sc.summary.id)
            .await
            .map_err(proxy_err)?;
        let readiness = self.readiness(&sc, inspect.state.running).await;
        let reasons = unhealthy_reasons(&inspect, &readiness);
        let summary = if reasons.is_empty() {
            format!("{service} is healthy.")
        } else {
            format!("{service} is unhealthy: {}.", reasons.join("; "))
        };
        let st = &inspect.state;
        let last_health_output = st
            .health
            .as_ref()
            .and_then(|h| h.log.last())
            .map(|l| snippet(&l.output, 300));
        Ok(Output::json(json!({
            "summary": summary,
            "service": service,
            "healthy": reasons.is_empty(),
            "reasons": reasons,
            "container": {
                "name": sc.summary.name(),
                "id": short_id(&inspect.id),
                "role": sc.role,
                "revision": sc.revision,
                "state": st.status,
                "running": st.running,
                "health": docker_health(&inspect),
                "health_failing_streak": st.health.as_ref().map(|h| h.failing_streak),
                "last_health_check_output": last_health_output,
                "exit_code": st.exit_code,
                "oom_killed": st.oom_killed,
                "error": if st.error.is_empty() { Value::Null } else { json!(st.error) },
                "restarts": inspect.restart_count,
                "started_at": st.started_at,
                "finished_at": st.finished_at,
                "uptime": uptime(&inspect).map(human_duration),
            },
            "readiness": readiness.to_json(),
        })))
    }

    // ---- service_stats -------------------------------------------------------------------------

    pub async fn service_stats(&self, service: &str) -> Result<Output, ToolError> {
        let sc = self.container_for(service).await?;
        let running = sc.summary.state == "running";
        let metrics_url = format!("{}/metrics", self.settings.bridge_url(service));
        let bridge = async {
            if !sc.has_bridge() {
                return json!({ "checked": false, "why": format!("role '{}' has no bridge", sc.role) });
            }
            if !running {
                return json!({ "checked": false, "why": "the container is not running" });
            }
            match self.http.get("the bridge", &metrics_url).await {
                Ok(r) if r.status == 200 => {
                    let figures = BridgeFigures::from_samples(&metrics::parse(&r.text()));
                    let mut v = serde_json::to_value(figures).expect("figures serialise");
                    v["url"] = json!(metrics_url);
                    v
                }
                Ok(r) => json!({ "url": metrics_url, "error":
                    format!("the bridge answered GET {metrics_url} with HTTP {}", r.status) }),
                Err(e) => json!({ "url": metrics_url, "error": e.to_string() }),
            }
        };
        let (stats, inspect, bridge) = tokio::join!(
            self.docker.stats(&sc.summary.id),
            self.docker.inspect(&sc.summary.id),
            bridge
        );
        let stats = stats.map_err(proxy_err)?;
        let mem = &stats.memory_stats;
        let used = if running { mem.used() } else { None };
        let limit = mem.limit.filter(|l| *l > 0 && running);
        let used_pct = match (used, limit) {
            (Some(u), Some(l)) => Some(round2(u as f64 / l as f64 * 100.0)),
            _ => None,
        };
        let cpu_percent = stats.cpu_percent().map(round2);
        let limit_cores = inspect
            .as_ref()
            .ok()
            .and_then(|i| i.host_config.cpu_limit_cores());

        let mut summary = vec![format!("{service} ({})", sc.summary.state)];
        match (used, limit) {
            (Some(u), Some(l)) => summary.push(format!(
                "memory {} of {} ({}%)",
                human_bytes(u),
                human_bytes(l),
                used_pct.unwrap_or(0.0)
            )),
            (Some(u), None) => summary.push(format!("memory {}", human_bytes(u))),
            _ if !running => summary.push("no memory figures (container not running)".into()),
            _ => summary.push("no memory figures in the stats sample".into()),
        }
        if let Some(p) = cpu_percent {
            summary.push(format!("CPU {p}%"));
        }
        if bridge.get("requests_total").is_some() {
            summary.push(format!(
                "{} requests, {} errors, {} active sessions",
                count(&bridge["requests_total"]),
                count(&bridge["request_errors_total"]),
                count(&bridge["sessions_active"])
            ));
        } else if let Some(e) = bridge.get("error").and_then(Value::as_str) {
            summary.push(format!("bridge metrics unavailable: {e}"));
        }

        Ok(Output::json(json!({
            "summary": summary.join(", "),
            "service": service,
            "container": sc.summary.name(),
            "state": sc.summary.state,
            "sampled_at": stats.read,
            "memory": {
                "used_bytes": used,
                "used": used.map(human_bytes),
                "limit_bytes": limit,
                "limit": limit.map(human_bytes),
                "used_percent_of_limit": used_pct,
                "usage_bytes": mem.usage,
                "inactive_file_bytes": mem.inactive_file(),
            },
            "cpu": {
                "percent": cpu_percent,
                "total_seconds": round2(stats.cpu_stats.cpu_usage.total_usage as f64 / 1e9),
                "limit_cores": limit_cores,
                "online_cpus": stats.cpu_stats.online_cpus,
            },
            "bridge": bridge,
        })))
    }

    // ---- recent_logs ---------------------------------------------------------------------------

    pub async fn recent_logs(&self, service: &str, lines: u64) -> Result<Output, ToolError> {
        let sc = self.container_for(service).await?;
        let logs = self
            .docker
            .logs(&sc.summary.id, lines as u32)
            .await
            .map_err(proxy_err)?;
        // The proxy honours tail; a longer answer is cut here so the caller gets what it asked.
        let skip = logs.lines.len().saturating_sub(lines as usize);
        let shown: Vec<LogLine> = logs.lines.into_iter().skip(skip).collect();
        let name = sc.summary.name();
        let mut text = format!(
            "Last {} log line(s) of {service} (container {name}, {}):",
            shown.len(),
            sc.summary.state
        );
        if shown.is_empty() {
            text.push_str("\n(no output)");
        }
        for l in &shown {
            text.push('\n');
            if l.stream == "stderr" {
                text.push_str("[stderr] ");
            }
            text.push_str(&l.line);
        }
        Ok(Output {
            text,
            data: json!({
                "service": service,
                "container": name,
                "state": sc.summary.state,
                "requested": lines,
                "returned": shown.len(),
                "lines": shown,
            }),
        })
    }

    // ---- firing_alerts -------------------------------------------------------------------------

    pub async fn firing_alerts(&self) -> Result<Output, ToolError> {
        let Some(prom) = &self.settings.prometheus_url else {
            return Ok(Output::json(json!({
                "summary": "No Prometheus is configured (PROMETHEUS_URL is not set), so there are no alerts to report. Use service_health and list_services for the current state.",
                "configured": false,
                "alerts": [],
            })));
        };
        let url = format!("{prom}/api/v1/alerts");
        let answer: PromAlerts = self
            .http
            .get_json("Prometheus", &url)
            .await
            .map_err(|e| e.to_string())?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus answered GET {url} with status '{}': {}",
                answer.status,
                answer.error.unwrap_or_default()
            ));
        }
        let firing: Vec<Value> = answer
            .data
            .alerts
            .into_iter()
            .filter(|a| a.state == "firing")
            .map(|a| {
                json!({
                    "name": a.labels.get("alertname"),
                    "severity": a.labels.get("severity"),
                    "service": a.labels.get("service"),
                    "summary": a.annotations.get("summary"),
                    "description": a.annotations.get("description"),
                    "active_at": a.active_at,
                    "value": a.value,
                    "labels": a.labels,
                    "annotations": a.annotations,
                })
            })
            .collect();
        let summary = if firing.is_empty() {
            "No alerts are firing.".to_string()
        } else {
            let names: Vec<String> = firing
                .iter()
                .map(|a| {
                    let name = a["name"].as_str().unwrap_or("(unnamed)");
                    match a["service"].as_str() {
                        Some(s) => format!("{name} (service {s})"),
                        None => name.to_string(),
                    }
                })
                .collect();
            format!("{} alert(s) firing: {}", firing.len(), names.join(", "))
        };
        Ok(Output::json(json!({
            "summary": summary,
            "configured": true,
            "prometheus": prom,
            "alerts": firing,
        })))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromAlerts {
    status: String,
    error: Option<String>,
    data: PromData,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromData {
    alerts: Vec<PromAlert>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: String,
    #[serde(rename = "activeAt")]
    active_at: Option<String>,
    value: Option<String>,
}

/// Docker's health status, or "none" when the image defines no health check.
fn docker_health(i: &Inspect) -> String {
    match &i.state.health {
        Some(h) if !h.status.is_empty() => h.status.clone(),
        _ => "none".into(),
    }
}

/// Why a service counts as unhealthy, in plain words; empty when it is healthy. Unhealthy means:
/// the container is not running, its Docker health is not "healthy" (when it has a health check),
/// or its bridge's /readyz did not answer 200.
fn unhealthy_reasons(i: &Inspect, readiness: &Readiness) -> Vec<String> {
    let st = &i.state;
    let mut reasons = Vec::new();
    if !st.running || st.restarting {
        let mut why = match st.status.as_str() {
            "exited" => format!("the container has exited with code {}", st.exit_code),
            "restarting" => format!(
                "the container keeps restarting ({} restarts so far, last exit code {})",
                i.restart_count, st.exit_code
            ),
            "created" => "the container was created but never started".into(),
            "" => "the container is not running".into(),
            other => format!("the container is {other}, not running"),
        };
        if st.oom_killed {
            why.push_str(" after being killed for running out of memory (OOM)");
        }
        if !st.error.is_empty() {
            why.push_str(&format!(" (Docker: {})", snippet(&st.error, 200)));
        }
        reasons.push(why);
    } else if st.oom_killed {
        reasons
            .push("a process in the container was killed for running out of memory (OOM)".into());
    }
    if let Some(h) = &st.health {
        match h.status.as_str() {
            "healthy" | "" | "none" => {}
            "starting" => reasons.push("its Docker health check is still starting".into()),
            other => {
                let mut why = format!("its Docker health check reports {other}");
                if h.failing_streak > 0 {
                    why.push_str(&format!(" ({} failures in a row)", h.failing_streak));
                }
                if let Some(out) = h.log.last().map(|l| snippet(&l.output, 200)) {
                    if !out.is_empty() {
                        why.push_str(&format!(": {out}"));
                    }
                }
                reasons.push(why);
            }
        }
    }
    match readiness {
        Readiness::Answered { status: 200, .. } | Readiness::NotChecked { .. } => {}
        Readiness::Answered { status, body, .. } => {
            let detail = match body {
                Value::Null => String::new(),
                Value::String(s) if s.is_empty() => String::new(),
                Value::String(s) => format!(": {s}"),
                other => format!(": {}", snippet(&other.to_string(), 300)),
            };
            reasons.push(format!(
                "its bridge is not ready (/readyz answered HTTP {status}{detail})"
            ));
        }
        Readiness::Unreachable { error, .. } => {
            reasons.push(format!("its bridge's /readyz could not be read ({error})"))
        }
    }
    reasons
}

fn uptime(i: &Inspect) -> Option<Duration> {
    if !i.state.running {
        return None;
    }
    let started = humantime::parse_rfc3339(&i.state.started_at).ok()?;
    SystemTime::now().duration_since(started).ok()
}

fn human_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A Prometheus figure for prose: "10", not "10.0".
fn count(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => "?".into(),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Validates a service name against the contract (`^[a-z][a-z0-9]{0,30}$`), which also keeps it
/// safe to put into a host name and a URL path.
pub fn check_service_name(name: &str) -> Result<(), ToolError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 31
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a service name (lowercase letters and digits, starting with a letter, at most 31 characters)"
        ))
    }
}

/// `lines` for recent_logs: default 50, capped at 1000, at least 1.
pub fn log_line_count(lines: Option<&Value>) -> Result<u64, ToolError> {
    match lines {
        None | Some(Value::Null) => Ok(DEFAULT_LOG_LINES),
        Some(v) => {
            let n = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or_else(|| {
                    format!("lines must be a whole number from 1 to {MAX_LOG_LINES}, got {v}")
                })?;
            if n == 0 || n > MAX_LOG_LINES {
                return Err(format!("lines must be from 1 to {MAX_LOG_LINES}, got {n}"));
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{Health, HealthLog, InspectState};

    fn inspect(state: InspectState) -> Inspect {
        Inspect {
            state,
            ..Default::default()
        }
    }

    fn ready() -> Readiness {
        Readiness::Answered {
            url: "u".into(),
            status: 200,
            body: json!({"ready": true}),
        }
    }

    #[test]
    fn running_healthy_ready_is_healthy() {
        let i = inspect(InspectState {
            status: "running".into(),
            running: true,
            health: Some(Health {
                status: "healthy".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(unhealthy_reasons(&i, &ready()).is_empty());
    }

    #[test]
    fn exited_oom_says_so() {
        let i = inspect(InspectState {
            status: "exited".into(),
            exit_code: 137,
            oom_killed: true,
            ..Default::default()
        });
        let r = unhealthy_reasons(&i, &Readiness::NotChecked { why: "x".into() });
        assert_eq!(
            r,
            ["the container has exited with code 137 after being killed for running out of memory (OOM)"]
        );
    }

    #[test]
    fn docker_unhealthy_and_not_ready_both_reported() {
        let i = inspect(InspectState {
            status: "running".into(),
            running: true,
            health: Some(Health {
                status: "unhealthy".into(),
                failing_streak: 3,
                log: vec![HealthLog {
                    exit_code: 1,
                    output: "readyz: 503\n".into(),
                }],
            }),
            ..Default::default()
        });
        let r = unhealthy_reasons(
            &i,
            &Readiness::Answered {
                url: "u".into(),
                status: 503,
                body: json!({"ready": false, "reason": "circuit open"}),
            },
        );
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r[0],
            "its Docker health check reports unhealthy (3 failures in a row): readyz: 503"
        );
        assert!(
            r[1].starts_with("its bridge is not ready (/readyz answered HTTP 503: {"),
            "{}",
            r[1]
        );
        assert!(r[1].contains("circuit open"));
    }

    #[test]
    fn service_names_and_line_counts() {
        assert!(check_service_name("fetch").is_ok());
        assert!(check_service_name("a1").is_ok());
        for bad in ["", "1a", "Fetch", "a-b", "../x", &"a".repeat(32)] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
        assert_eq!(log_line_count(None).unwrap(), 50);
        assert_eq!(log_line_count(Some(&json!(1000))).unwrap(), 1000);
        assert_eq!(log_line_count(Some(&json!(3.0))).unwrap(), 3);
        assert!(log_line_count(Some(&json!(1001))).is_err());
        assert!(log_line_count(Some(&json!(0))).is_err());
        assert!(log_line_count(Some(&json!("5"))).is_err());
    }

    fn row(name: &str, state: &str, labels: &[(&str, &str)]) -> ContainerSummary {
        ContainerSummary {
            id: format!("id-{name}"),
            names: vec![format!("/{name}")],
            state: state.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn one_container_per_service_running_first_then_newest() {
        let settings =
            Settings::from_lookup(|k| (k == "MCP_LABEL_PREFIX").then(|| "org.example".to_string()))
                .unwrap();
        let m = Monitor::new(settings).unwrap();
        let svc = |s: &'static str, release: &'static str| {
            vec![
                ("org.example.service", s),
                ("org.example.role", "service"),
                ("org.example.release", release),
                ("org.example.config-hash", "0123456789abcdef"),
            ]
        };
        let mut cand = svc("a", "9");
        cand.push(("org.example.phase", "candidate"));
        let list = vec![
            row("a-r1", "running", &svc("a", "1")),
            row("a-r2", "exited", &svc("a", "2")),
            row("a-r9-candidate", "running", &cand),
            row("b-r3", "exited", &svc("b", "3")),
            row("b-r4", "exited", &svc("b", "4")),
            row(
                "lock",
                "exited",
                &[("org.example.role", "lock"), ("org.example.service", "x")],
            ),
            row("unlabelled", "running", &[("com.mcp.service", "c")]),
        ];
        let got = m.services(list);
        let picked: Vec<(&str, String, Option<&str>)> = got
            .values()
            .map(|s| (s.service.as_str(), s.summary.name(), s.revision.as_deref()))
            .collect();
        assert_eq!(
            picked,
            [
                ("a", "a-r1".to_string(), Some("r1-01234567")),
                ("b", "b-r4".to_string(), Some("r4-01234567"))
            ]
        );
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
    }
}
