//! Server-side observations: each bridge's `/metrics` (parsed by metric name; absent series are
//! tolerated), the project's containers through the Engine (memory used, restarts), and the
//! optional Prometheus cross-check. None of these is authoritative — the client-side figures are —
//! and none may fail the run by being absent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, RunState};

/// The bridge series soak compares with what its load holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BridgeSnapshot {
    pub sessions_active: Option<f64>,
    pub child_processes: Option<f64>,
    pub child_restarts: Option<f64>,
    pub open_fds: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
}

/// Sum of every sample of `name` (all label sets) in Prometheus text; `None` when absent.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        // The name must end here: `name{...} v` or `name v`.
        let rest = if let Some(r) = rest.strip_prefix('{') {
            match r.rfind('}') {
                Some(i) => &r[i + 1..],
                None => continue,
            }
        } else if rest.starts_with(' ') {
            rest
        } else {
            continue;
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

pub fn parse_bridge_metrics(text: &str) -> BridgeSnapshot {
    BridgeSnapshot {
        sessions_active: metric_sum(text, "mcp_bridge_sessions_active"),
        child_processes: metric_sum(text, "mcp_bridge_child_processes"),
        child_restarts: metric_sum(text, "mcp_bridge_child_restarts_total"),
        open_fds: metric_sum(text, "process_open_fds"),
        resident_memory_bytes: metric_sum(text, "process_resident_memory_bytes"),
    }
}

/// GET `<base>/metrics` (2 s bound). `None` when the bridge does not answer.
pub async fn scrape(http: &reqwest::Client, base_url: &str) -> Option<BridgeSnapshot> {
    let resp = http
        .get(format!("{base_url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(parse_bridge_metrics(&resp.text().await.ok()?))
}

/// Per-service bridge observations over the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BridgeObs {
    /// Before the load started.
    pub baseline: Option<BridgeSnapshot>,
    pub last: Option<BridgeSnapshot>,
    /// After the load stopped and the leak grace passed (or ran out).
    pub after: Option<BridgeSnapshot>,
    pub peak_sessions: Option<f64>,
    pub peak_children: Option<f64>,
    pub peak_fds: Option<f64>,
    pub scrapes: u64,
    pub scrape_failures: u64,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl BridgeObs {
    pub fn observe(&mut self, snap: Option<BridgeSnapshot>) {
        self.scrapes += 1;
        match snap {
            Some(s) => {
                if self.baseline.is_none() {
                    self.baseline = Some(s.clone());
                }
                self.peak_sessions = max_opt(self.peak_sessions, s.sessions_active);
                self.peak_children = max_opt(self.peak_children, s.child_processes);
                self.peak_fds = max_opt(self.peak_fds, s.open_fds);
                self.last = Some(s);
            }
            None => self.scrape_failures += 1,
        }
    }

    /// Sessions and child processes back at (or below) their baseline?
    pub fn settled(&self, snap: &BridgeSnapshot) -> bool {
        let Some(base) = &self.baseline else {
            return true;
        };
        let back = |now: Option<f64>, was: Option<f64>| match (now, was) {
            (Some(n), Some(b)) => n <= b,
            _ => true,
        };
        back(snap.sessions_active, base.sessions_active)
            && back(snap.child_processes, base.child_processes)
    }
}

/// The project's containers as the Engine sees them, at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerSample {
    pub memory_bytes: Option<u64>,
    /// Cumulative CPU seconds per running container.
    #[serde(default)]
    pub cpu_seconds: BTreeMap<String, f64>,
    pub running: usize,
    /// Restart count per container name.
    pub restarts: BTreeMap<String, i64>,
    /// Memory used per running container (the memory-growth SLO fits each one).
    #[serde(default)]
    pub memory_by_container: BTreeMap<String, u64>,
    /// The `<p>.service` label per container, where it has one.
    #[serde(default)]
    pub service_of: BTreeMap<String, String>,
}

/// Sum memory used (usage − inactive_file) over the running containers labelled
/// `<p>.managed=true` and `<p>.project=<project>`; `memory_bytes` is `None` when there are none.
pub async fn sample_containers<E: Engine>(
    engine: &E,
    label_prefix: &str,
    project: &str,
) -> ContainerSample {
    let mut out = ContainerSample::default();
    let label = format!("{label_prefix}.project={project}");
    let managed = format!("{label_prefix}.managed");
    let service_key = format!("{label_prefix}.service");
    let Ok(list) = engine.list_containers(&label).await else {
        return out;
    };
    let mut total: Option<u64> = None;
    let managed: Vec<_> = list
        .iter()
        .filter(|c| c.labels.get(&managed).map(String::as_str) == Some("true"))
        .collect();
    // One stats sample takes the engine about a second: take them all at once.
    let samples = futures::future::join_all(managed.iter().map(|c| async move {
        let detail = engine.inspect_container(&c.name).await.ok().flatten();
        let usage = if c.state == RunState::Running {
            engine.usage(&c.name).await.ok().flatten()
        } else {
            None
        };
        (c, detail, usage)
    }))
    .await;
    for (c, detail, usage) in samples {
        if let Some(d) = detail {
            out.restarts.insert(c.name.clone(), d.restart_count);
        }
        if c.state != RunState::Running {
            continue;
        }
        out.running += 1;
        if let Some(svc) = c.labels.get(&service_key) {
            out.service_of.insert(c.name.clone(), svc.clone());
        }
        if let Some(u) = usage {
            *total.get_or_insert(0) += u.memory_used;
            out.cpu_seconds.insert(c.name.clone(), u.cpu_seconds);
            out.memory_by_container
                .insert(c.name.clone(), u.memory_used);
        }
    }
    out.memory_bytes = total;
    out
}

/// Slope of (t, y) by least squares, per hour. `None` with fewer than two distinct times.
pub fn trend_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var <= f64::EPSILON {
        return None;
    }
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    Some(cov / var * 3600.0)
}

/// The recording rules soak compares with its own figures (templates/observability).
pub const PROM_RULES: &[(&str, &str)] = &[
    ("error_ratio", "service:mcp_error_ratio:rate5m"),
    ("p95_seconds", "service:mcp_tool_call_seconds:p95_5m"),
    ("sessions_active", "service:mcp_sessions_active:sum"),
];

/// Prometheus' view, per rule and service, when `prometheus_url` answers; else why not.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PromView {
    pub url: String,
    pub available: bool,
    pub reason: Option<String>,
    /// rule key → service → value.
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
}

pub async fn prometheus(url: &str) -> PromView {
    let mut view = PromView {
        url: url.to_string(),
        ..Default::default()
    };
    let http = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            view.reason = Some(e.to_string());
            return view;
        }
    };
    let base = url.trim_end_matches('/');
    for (key, rule) in PROM_RULES {
        let resp = http
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", rule)])
            .send()
            .await;
        let body: serde_json::Value = match resp {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(v) => v,
                Err(e) => {
                    view.reason = Some(format!("{rule}: {e}"));
                    return view;
                }
            },
            Ok(r) => {
                view.reason = Some(format!("{rule}: HTTP {}", r.status()));
                return view;
            }
            Err(e) => {
                view.reason = Some(format!("not answering: {e}"));
                return view;
            }
        };
        view.available = true;
        let mut per = BTreeMap::new();
        for r in body["data"]["result"].as_array().into_iter().flatten() {
            let svc = r["metric"]["service"].as_str().unwrap_or("").to_string();
            if let Some(v) = r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()) {
                per.insert(svc, v);
            }
        }
        view.values.insert(key.to_string(), per);
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_over_labels_and_ignores_prefix_matches() {
        let text = "# HELP mcp_bridge_sessions_active x\n\
                    mcp_bridge_sessions_active{transport=\"sse\"} 3\n\
                    mcp_bridge_sessions_active{transport=\"streamable_http\"} 2\n\
                    mcp_bridge_sessions_active_extra 100\n\
                    mcp_bridge_child_processes 1\n\
                    process_open_fds 17\n";
        let s = parse_bridge_metrics(text);
        assert_eq!(s.sessions_active, Some(5.0));
        assert_eq!(s.child_processes, Some(1.0));
        assert_eq!(s.open_fds, Some(17.0));
        assert_eq!(s.child_restarts, None);
    }

    #[test]
    fn settled_compares_with_the_baseline() {
        let mut o = BridgeObs::default();
        let snap = |s: f64| BridgeSnapshot {
            sessions_active: Some(s),
            child_processes: Some(1.0),
            ..Default::default()
        };
        o.observe(Some(snap(1.0)));
        o.observe(Some(snap(21.0)));
        assert_eq!(o.peak_sessions, Some(21.0));
        assert!(!o.settled(&snap(2.0)));
        assert!(o.settled(&snap(1.0)));
        assert!(o.settled(&snap(0.0)));
    }

    #[test]
    fn trend_is_a_slope_per_hour() {
        let pts = [(0.0, 100.0), (1800.0, 150.0), (3600.0, 200.0)];
        assert!((trend_per_hour(&pts).unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(trend_per_hour(&pts[..1]), None);
    }
}
