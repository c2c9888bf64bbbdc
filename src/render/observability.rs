//! Observability artifacts: Prometheus scrape config, recording and alert rules, Grafana
//! provisioning and dashboard, Promtail and Alloy log shipping. Every PromQL expression here names
//! only metrics of docs/contracts.md ("Metrics (bridge)" and the container exporter's).
//!
//! The dashboard is built as JSON in Rust rather than templated: its structure (a row per service,
//! stable panel ids and uids) is data, and serde_json keeps it well-formed and byte-stable.

use serde::Serialize;
use serde_json::{json, Value};

use crate::manifest::{Manifest, Role};

/// Grafana datasource uid the dashboard refers to (no `${DS_…}` placeholders).
pub const DATASOURCE_UID: &str = "mcp-prometheus";
pub const DASHBOARD_UID: &str = "mcp-overview";

#[derive(Debug, Serialize)]
pub struct ObsView {
    pub version: &'static str,
    pub label_prefix: String,
    /// `__meta_docker_container_label_<prefix with dots as _>_`.
    pub meta: String,
    /// The exact discovery filter: `<p>.managed=true`.
    pub managed_filter: String,
    pub project_filter: String,
    pub scrape_interval_s: u64,
    pub docker_host: String,
    pub loki_url: String,
    pub prometheus_url: String,
    pub runbook_base: String,
    pub datasource_uid: &'static str,
    /// The edge's loopback admin port (its own `mcp_edge_*` series), when the edge is enabled.
    pub edge_admin_port: Option<u16>,
    pub services: Vec<ObsService>,
    /// Services grouped by SLO threshold (seconds) for the latency alert.
    pub slo_groups: Vec<Group>,
    /// Services grouped by idle expiry (seconds) for the session-age alert.
    pub idle_groups: Vec<Group>,
    /// Every service grouped by `slo.memory_growth_per_hour` (bytes per hour, in `threshold`) for
    /// the memory-growth alert.
    pub growth_groups: Vec<Group>,
    /// The exporter runs (its own up/absent alert; the database alerts read its series).
    pub exporter: bool,
    /// `role: database` services (their health comes from the exporter's `mcp_container_healthy`).
    pub databases: Vec<ObsService>,
    /// `backup.max_age` in seconds: the `BackupTooOld` alert (from the exporter's
    /// `mcp_backup_last_success_timestamp_seconds`), when set and the exporter runs.
    pub backup_max_age_s: Option<u64>,
    /// Prometheus' `alerting.alertmanagers` target, when `observability.alerting` is set.
    pub alertmanager: Option<String>,
}

/// The Alertmanager config's view (`alertmanager/alertmanager.yml`).
#[derive(Debug, Serialize)]
pub struct AlertmanagerView {
    pub version: &'static str,
    pub group_wait: String,
    pub group_interval: String,
    pub repeat_interval: String,
    /// One child route per (severity, receiver), in manifest order.
    pub routes: Vec<AlertRoute>,
    pub receivers: Vec<AlertReceiver>,
    /// The alert whose firing inhibits every per-service alert (`None` without an edge).
    pub edge_alert: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct AlertRoute {
    pub severity: &'static str,
    pub receiver: String,
}

/// One receiver: exactly one of the kinds is set (checked by validation).
#[derive(Debug, Serialize)]
pub struct AlertReceiver {
    pub name: String,
    pub webhook_url: Option<String>,
    pub email: Option<AlertEmail>,
    pub slack: Option<AlertSlack>,
}

#[derive(Debug, Serialize)]
pub struct AlertEmail {
    /// Alertmanager's `to` is one comma-separated string.
    pub to: String,
    pub from: String,
    pub smarthost: String,
    pub username: Option<String>,
    /// Path of the password file (never the value).
    pub password_file: Option<String>,
    pub require_tls: bool,
}

#[derive(Debug, Serialize)]
pub struct AlertSlack {
    pub url_file: String,
    pub channel: Option<String>,
}

/// The edge-down alert's name: the Alertmanager inhibition refers to it.
pub const EDGE_DOWN_ALERT: &str = "McpEdgeDown";

fn duration(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

impl AlertmanagerView {
    /// `None` when the manifest has no `observability.alerting`.
    pub fn new(m: &Manifest) -> Option<Self> {
        let a = m.observability.alerting.as_ref()?;
        let routes = [
            ("critical", &a.routes.critical),
            ("warning", &a.routes.warning),
        ]
        .into_iter()
        .flat_map(|(severity, names)| {
            names.iter().map(move |r| AlertRoute {
                severity,
                receiver: r.clone(),
            })
        })
        .collect();
        let receivers = a
            .receivers
            .iter()
            .map(|(name, r)| AlertReceiver {
                name: name.clone(),
                webhook_url: r.webhook.as_ref().map(|w| w.url.clone()),
                email: r.email.as_ref().map(|e| AlertEmail {
                    to: e.to.join(", "),
                    from: e.from.clone(),
                    smarthost: e.smarthost.clone(),
                    username: e.username.clone(),
                    password_file: e.password.as_ref().and_then(|p| p.from_file.clone()),
                    require_tls: e.require_tls,
                }),
                slack: r.slack.as_ref().map(|s| AlertSlack {
                    url_file: s.url.from_file.clone().unwrap_or_default(),
                    channel: s.channel.clone(),
                }),
            })
            .collect();
        Some(AlertmanagerView {
            version: env!("CARGO_PKG_VERSION"),
            group_wait: duration(a.group_wait),
            group_interval: duration(a.group_interval),
            repeat_interval: duration(a.repeat_interval),
            routes,
            receivers,
            edge_alert: m.edge.enabled.then_some(EDGE_DOWN_ALERT),
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ObsService {
    pub name: String,
}

#[derive(Debug, Serialize)]
pub struct Group {
    /// Anchored regex alternation of service names, e.g. `fetch|memory`.
    pub services: String,
    pub threshold: String,
    pub idle: u64,
}

/// Prometheus' name for a Docker label: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn meta_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ObsView {
    pub fn new(m: &Manifest) -> Self {
        let p = &m.label_prefix;
        let mcp: Vec<(&String, &crate::manifest::Service)> = m
            .services
            .iter()
            .filter(|(_, s)| s.role == Role::Service)
            .collect();
        let mut slo_groups: Vec<(u64, Vec<String>)> = Vec::new();
        let mut idle_groups: Vec<(u64, Vec<String>)> = Vec::new();
        for (name, svc) in &mcp {
            push_group(&mut slo_groups, svc.slo.p95_ms, name);
            push_group(&mut idle_groups, svc.bridge.idle_timeout.as_secs(), name);
        }
        let mut growth_groups: Vec<(u64, Vec<String>)> = Vec::new();
        for (name, svc) in &m.services {
            push_group(&mut growth_groups, svc.slo.memory_growth_per_hour.0, name);
        }
        ObsView {
            version: env!("CARGO_PKG_VERSION"),
            label_prefix: p.clone(),
            meta: format!("__meta_docker_container_label_{}_", meta_label(p)),
            managed_filter: format!("{p}.managed=true"),
            project_filter: format!("{p}.project={}", m.project),
            scrape_interval_s: m.observability.scrape_interval.as_secs().max(1),
            docker_host: m.observability.docker_host.clone(),
            loki_url: m.observability.loki_url.clone(),
            prometheus_url: m.observability.prometheus_url.clone(),
            runbook_base: m.observability.runbook_base.clone(),
            datasource_uid: DATASOURCE_UID,
            edge_admin_port: m.edge.enabled.then_some(m.edge.admin_port),
            services: mcp
                .iter()
                .map(|(n, _)| ObsService {
                    name: n.to_string(),
                })
                .collect(),
            slo_groups: slo_groups
                .into_iter()
                .map(|(ms, names)| Group {
                    services: names.join("|"),
                    threshold: seconds(ms),
                    idle: 0,
                })
                .collect(),
            idle_groups: idle_groups
                .into_iter()
                .map(|(s, names)| Group {
                    services: names.join("|"),
                    threshold: String::new(),
                    idle: s,
                })
                .collect(),
            growth_groups: growth_groups
                .into_iter()
                .map(|(b, names)| Group {
                    services: names.join("|"),
                    threshold: b.to_string(),
                    idle: 0,
                })
                .collect(),
            exporter: m.observability.exporter,
            backup_max_age_s: m.backup.max_age.map(|d| d.as_secs()),
            databases: m
                .services
                .iter()
                .filter(|(_, s)| s.role == Role::Database)
                .map(|(n, _)| ObsService { name: n.clone() })
                .collect(),
            alertmanager: m
                .observability
                .alerting
                .as_ref()
                .map(|a| a.alertmanager.clone()),
        }
    }
}

fn push_group(groups: &mut Vec<(u64, Vec<String>)>, key: u64, name: &str) {
    match groups.iter_mut().find(|(k, _)| *k == key) {
        Some((_, names)) => names.push(name.to_string()),
        None => groups.push((key, vec![name.to_string()])),
    }
}

/// Milliseconds as a PromQL seconds literal: 100 → `0.1`, 2500 → `2.5`.
fn seconds(ms: u64) -> String {
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// One panel query. Queries in a service's row aggregate `by (service)`: one series each.
fn target(expr: String, legend: &str) -> Value {
    json!({
        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
        "expr": expr,
        "legendFormat": legend,
        "refId": "A",
    })
}

/// Where a panel sits on Grafana's 24-column grid (every panel is 6 rows high).
struct Grid {
    x: u64,
    y: u64,
    w: u64,
}

fn panel(id: u64, title: &str, unit: &str, at: Grid, kind: &str, targets: Vec<Value>) -> Value {
    let targets: Vec<Value> = targets
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            t["refId"] = json!(((b'A' + i as u8) as char).to_string());
            t
        })
        .collect();
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
        "gridPos": {"h": 6, "w": at.w, "x": at.x, "y": at.y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": targets,
    })
}

/// Every query of the dashboard, with the service whose row it is in (`None` for stack totals).
pub fn dashboard_queries(dashboard: &Value) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut service = None;
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            service = p["title"]
                .as_str()
                .filter(|t| *t != "Stack")
                .map(str::to_string);
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                service.clone(),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// The overview dashboard: stack totals, then one row per MCP service with health, tool-call
/// rate, sessions, errors, p95 latency, memory and CPU.
pub fn dashboard(m: &Manifest) -> Value {
    let mut panels = Vec::new();
    let mut id = 1;
    let mut y = 0;
    let mut next = || {
        id += 1;
        id
    };
    panels.push(json!({"id": 1, "type": "row", "title": "Stack", "collapsed": false, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}));
    y += 1;
    let stack = [
        ("Services up", "none", "sum(up{job=\"mcp-bridges\"})".to_string(), "up"),
        (
            "Tool calls / s",
            "reqps",
            "sum(rate(mcp_bridge_requests_total{job=\"mcp-bridges\",method=\"tools/call\"}[5m]))".to_string(),
            "calls",
        ),
        (
            "Error ratio",
            "percentunit",
            "sum(rate(mcp_bridge_request_errors_total{job=\"mcp-bridges\"}[5m])) / sum(rate(mcp_bridge_requests_total{job=\"mcp-bridges\"}[5m]))".to_string(),
            "errors",
        ),
        ("Memory used", "bytes", "sum(mcp_container_memory_used_bytes)".to_string(), "used"),
    ];
    for (i, (title, unit, expr, legend)) in stack.into_iter().enumerate() {
        panels.push(panel(
            next(),
            title,
            unit,
            Grid {
                x: i as u64 * 6,
                y,
                w: 6,
            },
            "stat",
            vec![target(expr, legend)],
        ));
    }
    y += 6;
    for (name, _) in m.services.iter().filter(|(_, s)| s.role == Role::Service) {
        let sel = format!("job=\"mcp-bridges\",service=\"{name}\"");
        let csel = format!("service=\"{name}\"");
        panels.push(json!({"id": next(), "type": "row", "title": name, "collapsed": false, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}));
        y += 1;
        let row: Vec<(&str, &str, Vec<Value>)> = vec![
            (
                "Health",
                "none",
                vec![
                    target(format!("sum by (service) (up{{{sel}}})"), "up"),
                    target(format!("sum by (service) (mcp_bridge_ready{{{sel}}})"), "ready"),
                ],
            ),
            (
                "Tool calls / s",
                "reqps",
                vec![target(
                    format!("sum by (service) (rate(mcp_bridge_requests_total{{{sel},method=\"tools/call\"}}[5m]))"),
                    "calls",
                )],
            ),
            (
                "Sessions",
                "none",
                vec![target(format!("sum by (service) (mcp_bridge_sessions_active{{{sel}}})"), "active")],
            ),
            (
                "Errors / s",
                "reqps",
                vec![target(format!("sum by (service) (rate(mcp_bridge_request_errors_total{{{sel}}}[5m]))"), "errors")],
            ),
            (
                "p95 tool call",
                "s",
                vec![target(
                    format!(
                        "histogram_quantile(0.95, sum by (service, le) (rate(mcp_bridge_request_duration_seconds_bucket{{{sel},method=\"tools/call\"}}[5m])))"
                    ),
                    "p95",
                )],
            ),
            (
                "Memory",
                "bytes",
                vec![
                    target(format!("sum by (service) (mcp_container_memory_used_bytes{{{csel}}})"), "used"),
                    target(format!("sum by (service) (mcp_container_memory_limit_bytes{{{csel}}})"), "limit"),
                ],
            ),
            (
                "CPU (cores)",
                "none",
                vec![target(format!("sum by (service) (rate(mcp_container_cpu_seconds_total{{{csel}}}[5m]))"), "cpu")],
            ),
        ];
        let w = 24 / 4;
        for (i, (title, unit, targets)) in row.into_iter().enumerate() {
            let x = (i as u64 % 4) * w;
            let py = y + (i as u64 / 4) * 6;
            panels.push(panel(
                next(),
                title,
                unit,
                Grid { x, y: py, w },
                "timeseries",
                targets,
            ));
        }
        y += 12;
    }
    json!({
        "uid": DASHBOARD_UID,
        "title": format!("MCP services ({})", m.project),
        "tags": ["mcp", "mcpctl"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": false,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_literals() {
        assert_eq!(seconds(100), "0.1");
        assert_eq!(seconds(2500), "2.5");
        assert_eq!(seconds(1000), "1");
        assert_eq!(seconds(5), "0.005");
    }

    #[test]
    fn meta_labels_follow_prometheus_sanitising() {
        assert_eq!(meta_label("com.mcp.mcp-type"), "com_mcp_mcp_type");
    }
}
