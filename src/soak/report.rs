//! The verdict: every SLO with its target, the measured value and pass / fail / not measured;
//! written as `report.json` (stable field names), `report.md` (for people and runbooks/reports/)
//! and `chart.svg` (p95 latency and memory — or sessions, when memory was not measured — over
//! time, drawn by hand: no plotting crate for two polylines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::driver::{ChaosEvent, Checkpoint, LeakCheck};
use super::growth::{self, Growth};
use super::observe::{trend_per_hour, PromView};
use super::stats::{Coverage, EraStats, Histogram, Outage, Point, ProbeStats};
use super::{SoakOptions, Targets};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotMeasured,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slo {
    /// availability | p95 | error_rate | coverage | leaks | memory
    pub slo: String,
    pub service: Option<String>,
    pub target: String,
    pub actual: String,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutageReport {
    pub start_s: f64,
    pub end_s: Option<f64>,
    pub recovery_s: Option<f64>,
    pub failed_calls: u64,
    pub first_error: String,
}

impl From<&Outage> for OutageReport {
    fn from(o: &Outage) -> Self {
        Self {
            start_s: o.start_s,
            end_s: o.end_s,
            recovery_s: o.recovery_s(),
            failed_calls: o.failed_calls,
            first_error: o.first_error.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceReport {
    pub url: String,
    pub transport: String,
    pub calls: u64,
    pub answered: u64,
    pub errors: u64,
    pub availability: Option<f64>,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub slo_p95_ms: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    pub probes: BTreeMap<String, ProbeStats>,
    pub held_calls: u64,
    pub fresh_calls: u64,
    pub reconnects: u64,
    pub session_setup_p95_ms: Option<f64>,
    pub coverage: Coverage,
    pub coverage_ratio: Option<f64>,
    pub outages: Vec<OutageReport>,
    pub sessions_baseline: Option<f64>,
    pub sessions_peak: Option<f64>,
    pub children_peak: Option<f64>,
    pub open_fds_peak: Option<f64>,
    pub bridge_child_restarts: Option<f64>,
    pub leak: Option<LeakCheck>,
    /// The era the service answered auto-mode sessions in (`modern`: 2026-07-28; `legacy`: it
    /// is not modern, or per_session, and initialize took over; `mixed`: both over the run);
    /// `None` when the load opened no auto session (legacy SSE speaks one era).
    #[serde(default)]
    pub auto_era: Option<String>,
    /// The load's calls by the era that answered them (`legacy`, `modern`; `none`: no session
    /// could be opened).
    #[serde(default)]
    pub eras: BTreeMap<String, EraReport>,
}

/// The load's calls over one era, for one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EraReport {
    pub calls: u64,
    pub answered: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Connecting (new sessions): initialize, server/discover, or discover then initialize.
    pub session_setup_p95_ms: Option<f64>,
}

impl From<&EraStats> for EraReport {
    fn from(e: &EraStats) -> Self {
        Self {
            calls: e.calls,
            answered: e.answered,
            errors: e.errors,
            p50_ms: e.latency.quantile_ms(0.5),
            p95_ms: e.latency.quantile_ms(0.95),
            session_setup_p95_ms: e.session_setup.quantile_ms(0.95),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub calls: u64,
    pub answered: u64,
    pub errors: u64,
    pub availability: Option<f64>,
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub calls_per_s: Option<f64>,
    pub skipped_ticks: u64,
    pub held_sessions: usize,
    /// Calls by the era that answered them, over all services.
    #[serde(default)]
    pub era_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryReport {
    pub measured: bool,
    pub budget_bytes: u64,
    pub peak_bytes: Option<u64>,
    pub last_bytes: Option<u64>,
    pub trend_bytes_per_hour: Option<f64>,
    /// CPU cores used by the project's containers: peak, mean and trend over the run.
    #[serde(default)]
    pub cpu_peak_cores: Option<f64>,
    #[serde(default)]
    pub cpu_mean_cores: Option<f64>,
    #[serde(default)]
    pub cpu_trend_cores_per_hour: Option<f64>,
    pub containers_running: usize,
    pub container_restarts: i64,
    pub note: Option<String>,
    /// The memory-growth SLO per container: warm-up applied, and each container's verdict.
    #[serde(default)]
    pub growth_warm_up_s: f64,
    #[serde(default)]
    pub growth: Vec<Growth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosReport {
    #[serde(flatten)]
    pub event: ChaosEvent,
    /// From the action to the service's next answered call (0 when no call failed).
    pub recovery_s: Option<f64>,
}

/// Prometheus' figure next to the client's, per rule and service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossCheck {
    pub rule: String,
    pub service: String,
    pub prometheus: f64,
    pub client: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub project: String,
    pub started_at: String,
    pub segments: Vec<String>,
    pub planned_s: f64,
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub options: SoakOptions,
    pub passed: bool,
    pub slos: Vec<Slo>,
    pub totals: Totals,
    pub services: BTreeMap<String, ServiceReport>,
    pub memory: MemoryReport,
    pub chaos: Vec<ChaosReport>,
    pub prometheus: Option<PromView>,
    pub cross_check: Vec<CrossCheck>,
    pub timeline: Vec<Point>,
}

fn pct(v: f64) -> String {
    format!("{:.3} %", v * 100.0)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms"))
        .unwrap_or_else(|| "–".into())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Evaluate the checkpoint of a run against `targets`.
pub fn build(ck: &Checkpoint, targets: Targets) -> Report {
    let st = &ck.state;
    let mut slos = Vec::new();
    let mut services = BTreeMap::new();
    let mut all = Histogram::default();
    let (mut calls, mut answered, mut errors) = (0u64, 0u64, 0u64);
    for t in &ck.targets {
        let s = st.services.get(&t.name).cloned().unwrap_or_default();
        let b = st.bridges.get(&t.name).cloned().unwrap_or_default();
        all.merge(&s.latency);
        calls += s.calls;
        answered += s.answered;
        errors += s.errors;
        let svc = Some(t.name.clone());
        let availability = s.availability();
        slos.push(Slo {
            slo: "availability".into(),
            service: svc.clone(),
            target: format!("≥ {}", pct(targets.availability)),
            actual: availability
                .map(|a| format!("{} ({}/{})", pct(a), s.answered, s.calls))
                .unwrap_or_else(|| "no calls".into()),
            status: match availability {
                Some(a) if a >= targets.availability => Status::Pass,
                _ => Status::Fail,
            },
        });
        let p95 = s.latency.quantile_ms(0.95);
        slos.push(Slo {
            slo: "p95".into(),
            service: svc.clone(),
            target: format!("< {} ms", t.slo_p95_ms),
            actual: ms(p95),
            status: match p95 {
                Some(p) if p < t.slo_p95_ms as f64 => Status::Pass,
                Some(_) => Status::Fail,
                None => Status::NotMeasured,
            },
        });
        let er = s.error_rate();
        slos.push(Slo {
            slo: "error_rate".into(),
            service: svc.clone(),
            target: format!("< {}", pct(targets.error_rate)),
            actual: er
                .map(|e| format!("{} ({}/{})", pct(e), s.errors, s.calls))
                .unwrap_or_else(|| "no calls".into()),
            status: match er {
                Some(e) if e < targets.error_rate => Status::Pass,
                _ => Status::Fail,
            },
        });
        let cov =
            (s.coverage.checks > 0).then(|| s.coverage.complete as f64 / s.coverage.checks as f64);
        slos.push(Slo {
            slo: "coverage".into(),
            service: svc.clone(),
            target: pct(targets.coverage),
            actual: match cov {
                Some(c) if s.coverage.missing.is_empty() => {
                    format!("{} of {} lists", pct(c), s.coverage.checks)
                }
                Some(c) => format!(
                    "{} of {} lists; missing: {}",
                    pct(c),
                    s.coverage.checks,
                    s.coverage
                        .missing
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "no tools/list answered".into(),
            },
            status: match cov {
                Some(c) if c >= targets.coverage => Status::Pass,
                Some(_) => Status::Fail,
                None => Status::NotMeasured,
            },
        });
        let leak = st.leaks.get(&t.name).cloned();
        slos.push(Slo {
            slo: "leaks".into(),
            service: svc.clone(),
            target: "0 sessions / child processes outliving their client".into(),
            actual: leak
                .as_ref()
                .map(|l| l.detail.clone())
                .unwrap_or_else(|| "not checked".into()),
            status: match &leak {
                Some(l) if l.judged && l.leaked => Status::Fail,
                Some(l) if l.judged => Status::Pass,
                _ => Status::NotMeasured,
            },
        });
        let restarts = match (
            b.baseline.as_ref().and_then(|x| x.child_restarts),
            b.last.as_ref().and_then(|x| x.child_restarts),
        ) {
            (Some(a), Some(z)) => Some(z - a),
            _ => None,
        };
        services.insert(
            t.name.clone(),
            ServiceReport {
                url: t.base_url.clone(),
                transport: t.transport.as_str().into(),
                calls: s.calls,
                answered: s.answered,
                errors: s.errors,
                availability,
                error_rate: er,
                p50_ms: s.latency.quantile_ms(0.5),
                p95_ms: p95,
                p99_ms: s.latency.quantile_ms(0.99),
                slo_p95_ms: t.slo_p95_ms,
                error_kinds: s.error_kinds.clone(),
                last_error: s.last_error.clone(),
                probes: s.probes.clone(),
                held_calls: s.held_calls,
                fresh_calls: s.fresh_calls,
                reconnects: s.reconnects,
                session_setup_p95_ms: s.session_setup.quantile_ms(0.95),
                coverage: s.coverage.clone(),
                coverage_ratio: cov,
                outages: s.outages.iter().map(OutageReport::from).collect(),
                sessions_baseline: b.baseline.as_ref().and_then(|x| x.sessions_active),
                sessions_peak: b.peak_sessions,
                children_peak: b.peak_children,
                open_fds_peak: b.peak_fds,
                bridge_child_restarts: restarts,
                leak,
                auto_era: s.auto_era(),
                eras: s
                    .eras
                    .iter()
                    .map(|(k, e)| (k.clone(), EraReport::from(e)))
                    .collect(),
            },
        );
    }
    let mem_points: Vec<(f64, f64)> = st
        .timeline
        .iter()
        .filter_map(|p| p.memory_bytes.map(|m| (p.t_s, m as f64)))
        .collect();
    let cpu_points: Vec<(f64, f64)> = st
        .timeline
        .iter()
        .filter_map(|p| p.cpu_cores.map(|c| (p.t_s, c)))
        .collect();
    // Per container: its samples, its service, when its current incarnation was first seen.
    let mut series: BTreeMap<&str, Vec<(f64, u64)>> = BTreeMap::new();
    for p in &st.timeline {
        for (c, b) in &p.container_memory_bytes {
            series.entry(c.as_str()).or_default().push((p.t_s, *b));
        }
    }
    let warm_up_s = ck.options.memory_warm_up.as_secs_f64();
    let growth: Vec<Growth> = series
        .iter()
        .map(|(c, pts)| {
            let service = st.containers.services.get(*c).map(String::as_str);
            let started = st
                .containers
                .started_s
                .get(*c)
                .copied()
                .unwrap_or_else(|| pts.first().map(|p| p.0).unwrap_or(0.0));
            growth::judge(
                c,
                service,
                pts,
                started,
                warm_up_s,
                targets.memory_growth_for(service),
            )
        })
        .collect();
    for g in &growth {
        slos.push(Slo {
            slo: "memory_growth".into(),
            service: Some(g.service.clone().unwrap_or_else(|| g.container.clone())),
            target: format!(
                "< {:.1} MiB/h ({})",
                g.target_bytes_per_hour as f64 / (1u64 << 20) as f64,
                g.container
            ),
            actual: g.detail.clone(),
            status: g.status,
        });
    }
    let memory = MemoryReport {
        cpu_peak_cores: st.containers.peak_cores,
        cpu_mean_cores: (!cpu_points.is_empty())
            .then(|| cpu_points.iter().map(|p| p.1).sum::<f64>() / cpu_points.len() as f64),
        cpu_trend_cores_per_hour: trend_per_hour(&cpu_points),
        measured: st.containers.measured,
        budget_bytes: targets.memory_budget,
        peak_bytes: st.containers.peak_bytes,
        last_bytes: st.containers.last_bytes,
        trend_bytes_per_hour: trend_per_hour(&mem_points),
        containers_running: st.containers.running,
        container_restarts: st.containers.restarts(),
        note: st.containers.note.clone(),
        growth_warm_up_s: warm_up_s,
        growth,
    };
    slos.push(Slo {
        slo: "memory".into(),
        service: None,
        target: format!("< {} (memory_budget)", mib(targets.memory_budget)),
        actual: match memory.peak_bytes {
            Some(p) => format!("peak {}", mib(p)),
            None => format!(
                "not measured ({})",
                memory
                    .note
                    .clone()
                    .unwrap_or_else(|| "no containers".into())
            ),
        },
        status: match memory.peak_bytes {
            Some(p) if p < targets.memory_budget => Status::Pass,
            Some(_) => Status::Fail,
            None => Status::NotMeasured,
        },
    });
    let totals = Totals {
        calls,
        answered,
        errors,
        availability: (calls > 0).then(|| answered as f64 / calls as f64),
        error_rate: (calls > 0).then(|| errors as f64 / calls as f64),
        p50_ms: all.quantile_ms(0.5),
        p95_ms: all.quantile_ms(0.95),
        p99_ms: all.quantile_ms(0.99),
        calls_per_s: (ck.elapsed_s > 0.0).then(|| calls as f64 / ck.elapsed_s),
        skipped_ticks: st.skipped_ticks,
        held_sessions: st.held_sessions,
        era_calls: st
            .services
            .values()
            .flat_map(|s| s.eras.iter().map(|(k, e)| (k.clone(), e.calls)))
            .fold(BTreeMap::new(), |mut m, (k, n)| {
                *m.entry(k).or_default() += n;
                m
            }),
    };
    let chaos = st
        .chaos
        .iter()
        .map(|ev| {
            let outages = st
                .services
                .get(&ev.service)
                .map(|s| s.outages.as_slice())
                .unwrap_or_default();
            // The outage this action caused: the first one starting after the action began and
            // before the container was up again plus one call timeout.
            let window_end = ev.done_s + ck.options.call_timeout.as_secs_f64() + 1.0;
            let caused = outages
                .iter()
                .find(|o| o.start_s >= ev.t_s - 0.5 && o.start_s <= window_end);
            let recovery_s = match caused {
                Some(o) => o.end_s.map(|e| (e - ev.t_s).max(0.0)),
                None => Some(0.0),
            };
            ChaosReport {
                event: ev.clone(),
                recovery_s,
            }
        })
        .collect();
    let mut cross_check = Vec::new();
    if let Some(p) = st.prometheus.as_ref().filter(|p| p.available) {
        for (rule, per) in &p.values {
            for (svc, v) in per {
                let client = services
                    .get(svc)
                    .and_then(|s: &ServiceReport| match rule.as_str() {
                        "error_ratio" => s.error_rate,
                        "p95_seconds" => s.p95_ms.map(|m| m / 1000.0),
                        // Prometheus answers for "now": after the load and the leak grace.
                        "sessions_active" => s.leak.as_ref().and_then(|l| l.sessions_after),
                        _ => None,
                    });
                cross_check.push(CrossCheck {
                    rule: rule.clone(),
                    service: svc.clone(),
                    prometheus: *v,
                    client,
                });
            }
        }
    }
    let passed = !ck.interrupted && slos.iter().all(|s| s.status != Status::Fail);
    Report {
        version: 1,
        project: ck.project.clone(),
        started_at: ck.started_at.clone(),
        segments: ck.segments.clone(),
        planned_s: ck.options.duration.as_secs_f64(),
        elapsed_s: ck.elapsed_s,
        interrupted: ck.interrupted,
        options: ck.options.clone(),
        passed,
        slos,
        totals,
        services,
        memory,
        chaos,
        prometheus: st.prometheus.clone(),
        cross_check,
        timeline: st.timeline.clone(),
    }
}

impl Report {
    pub fn breaches(&self) -> Vec<&Slo> {
        self.slos
            .iter()
            .filter(|s| s.status == Status::Fail)
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.interrupted {
            "INTERRUPTED (partial figures)"
        } else if self.passed {
            "PASS"
        } else {
            "FAIL"
        };
        let _ = writeln!(m, "# Soak report: {} — {verdict}\n", self.project);
        let _ = writeln!(
            m,
            "Started {} · ran {:.0} s of {:.0} s · rate {}/s · concurrency {} · {} long-lived sessions{}\n",
            self.started_at,
            self.elapsed_s,
            self.planned_s,
            self.options.rate,
            self.options.concurrency,
            self.options.sessions,
            if self.options.chaos { " · chaos" } else { "" }
        );
        if self.segments.len() > 1 {
            let _ = writeln!(
                m,
                "Resumed: {} segments ({}).\n",
                self.segments.len(),
                self.segments.join(", ")
            );
        }
        let _ = writeln!(
            m,
            "## SLOs\n\n| SLO | service | target | measured | result |\n|---|---|---|---|---|"
        );
        for s in &self.slos {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                s.slo,
                s.service.as_deref().unwrap_or("stack"),
                s.target,
                s.actual.replace('|', "\\|"),
                match s.status {
                    Status::Pass => "pass",
                    Status::Fail => "**FAIL**",
                    Status::NotMeasured => "not measured",
                }
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            m,
            "\n## Totals\n\n{} calls ({:.2}/s), {} answered, {} errors · availability {} · error rate {} · p50 {} · p95 {} · p99 {} · {} ticks skipped (client saturated)\n",
            t.calls,
            t.calls_per_s.unwrap_or(0.0),
            t.answered,
            t.errors,
            t.availability.map(pct).unwrap_or_else(|| "–".into()),
            t.error_rate.map(pct).unwrap_or_else(|| "–".into()),
            ms(t.p50_ms),
            ms(t.p95_ms),
            ms(t.p99_ms),
            t.skipped_ticks
        );
        let _ = writeln!(m, "## Services\n\n| service | transport | calls | errors | p50 | p95 | p99 | SLO p95 | sessions base/peak/after | children peak | fds peak | outages |\n|---|---|---|---|---|---|---|---|---|---|---|---|");
        let f = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "–".into());
        for (name, s) in &self.services {
            let outages = if s.outages.is_empty() {
                "none".to_string()
            } else {
                s.outages
                    .iter()
                    .map(|o| match o.recovery_s {
                        Some(r) => format!("{} calls, recovered in {r:.1} s", o.failed_calls),
                        None => format!("{} calls, not recovered", o.failed_calls),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let _ = writeln!(
                m,
                "| {name} | {} | {} | {} | {} | {} | {} | {} ms | {}/{}/{} | {} | {} | {} |",
                s.transport,
                s.calls,
                s.errors,
                ms(s.p50_ms),
                ms(s.p95_ms),
                ms(s.p99_ms),
                s.slo_p95_ms,
                f(s.sessions_baseline),
                f(s.sessions_peak),
                f(s.leak.as_ref().and_then(|l| l.sessions_after)),
                f(s.children_peak),
                f(s.open_fds_peak),
                outages
            );
        }
        let _ = writeln!(m, "\n## Eras\n\nStreamable HTTP load alternates legacy sessions and auto mode (server/discover first, initialize when the service is not modern); legacy SSE is legacy only.\n\n| service | auto → era | legacy calls (errors, p95) | modern calls (errors, p95) | legacy sessions opened |\n|---|---|---|---|---|");
        for (name, s) in &self.services {
            let era = |k: &str| match s.eras.get(k) {
                Some(e) => format!("{} ({}, {})", e.calls, e.errors, ms(e.p95_ms)),
                None => "–".into(),
            };
            let _ = writeln!(
                m,
                "| {name} | {} | {} | {} | {} |",
                s.auto_era.as_deref().unwrap_or("–"),
                era("legacy"),
                era("modern"),
                s.leak
                    .as_ref()
                    .map(|l| l.legacy_sessions_opened.to_string())
                    .unwrap_or_else(|| "–".into())
            );
        }
        for (name, s) in &self.services {
            if let Some(e) = &s.last_error {
                let _ = writeln!(m, "\n- {name}: last error: `{}`", e.replace('`', "'"));
            }
        }
        let mem = &self.memory;
        let _ = writeln!(
            m,
            "\n## Memory and restarts\n\n{} · budget {} · trend {} · {} containers running · {} container restarts\n",
            match mem.peak_bytes {
                Some(p) => format!("peak {}", mib(p)),
                None => format!("not measured ({})", mem.note.clone().unwrap_or_default()),
            },
            mib(mem.budget_bytes),
            mem.trend_bytes_per_hour
                .map(|b| format!("{:+.1} MiB/h", b / (1u64 << 20) as f64))
                .unwrap_or_else(|| "–".into()),
            mem.containers_running,
            mem.container_restarts
        );
        if !mem.growth.is_empty() {
            let _ = writeln!(
                m,
                "Memory growth per container (Theil–Sen slope after a {:.0} min warm-up):\n\n| container | service | samples | slope | target | result |\n|---|---|---|---|---|---|",
                mem.growth_warm_up_s / 60.0
            );
            for g in &mem.growth {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | < {:.1} MiB/h | {} |",
                    g.container,
                    g.service.as_deref().unwrap_or("–"),
                    g.samples,
                    match g.slope_bytes_per_hour {
                        Some(b) => format!("{:+.2} MiB/h", b / (1u64 << 20) as f64),
                        None => g.detail.clone(),
                    },
                    g.target_bytes_per_hour as f64 / (1u64 << 20) as f64,
                    match g.status {
                        Status::Pass => "pass",
                        Status::Fail => "**FAIL**",
                        Status::NotMeasured => "not judged",
                    }
                );
            }
            let _ = writeln!(m);
        }
        if let Some(peak) = mem.cpu_peak_cores {
            let _ = writeln!(
                m,
                "CPU (the project's containers): peak {peak:.2} cores · mean {} · trend {}\n",
                mem.cpu_mean_cores
                    .map(|c| format!("{c:.2} cores"))
                    .unwrap_or_else(|| "–".into()),
                mem.cpu_trend_cores_per_hour
                    .map(|c| format!("{c:+.3} cores/h"))
                    .unwrap_or_else(|| "–".into())
            );
        }
        if !self.chaos.is_empty() {
            let _ = writeln!(m, "## Chaos\n\n| at | service | container | action | ok | recovery |\n|---|---|---|---|---|---|");
            for c in &self.chaos {
                let _ = writeln!(
                    m,
                    "| {:.0} s | {} | {} | {} | {} | {} |",
                    c.event.t_s,
                    c.event.service,
                    c.event.container,
                    c.event.action,
                    c.event.ok,
                    c.recovery_s
                        .map(|r| format!("{r:.1} s"))
                        .unwrap_or_else(|| "not recovered".into())
                );
            }
        }
        let _ = writeln!(m, "\n## Prometheus cross-check\n");
        match &self.prometheus {
            Some(p) if p.available => {
                let _ = writeln!(
                    m,
                    "| rule | service | Prometheus | client |\n|---|---|---|---|"
                );
                for c in &self.cross_check {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} |",
                        c.rule,
                        c.service,
                        c.prometheus,
                        c.client
                            .map(|v| format!("{v}"))
                            .unwrap_or_else(|| "–".into())
                    );
                }
            }
            Some(p) => {
                let _ = writeln!(
                    m,
                    "Not done: {} ({}).",
                    p.reason.clone().unwrap_or_default(),
                    p.url
                );
            }
            None => {
                let _ = writeln!(m, "Not done.");
            }
        }
        let _ = writeln!(m, "\n![latency and memory over time](chart.svg)");
        m
    }

    /// Two panels over time: p95 latency (total and per service, SLO lines dashed) and memory
    /// used (or bridge sessions, when memory was not measured).
    pub fn svg(&self) -> String {
        const W: f64 = 900.0;
        const PH: f64 = 240.0;
        const L: f64 = 70.0;
        const R: f64 = 160.0;
        const PAL: [&str; 10] = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf",
        ];
        let pts = downsample(&self.timeline, 600);
        let t_max = pts.last().map(|p| p.t_s).unwrap_or(1.0).max(1.0);
        let t_min = pts.first().map(|p| p.t_s).unwrap_or(0.0).min(t_max - 0.001);
        let x = |t: f64| L + (t - t_min) / (t_max - t_min) * (W - L - R);
        let mut s = String::new();
        let h = PH * 2.0 + 90.0;
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
        );
        let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{L}\" y=\"16\" font-size=\"13\">soak {}: {} (seconds since start)</text>",
            esc(&self.project),
            if self.passed { "PASS" } else { "FAIL" }
        );
        // Panel 1: latency.
        let names: Vec<&String> = self.services.keys().collect();
        let mut y_max: f64 = 1.0;
        for p in &pts {
            y_max = y_max.max(p.p95_ms.unwrap_or(0.0));
            for v in p.service_p95_ms.values() {
                y_max = y_max.max(*v);
            }
        }
        for s in self.services.values() {
            y_max = y_max.max(s.slo_p95_ms as f64);
        }
        let y_max = y_max * 1.1;
        let top1 = 30.0;
        let panel1 = Panel {
            top: top1,
            h: PH,
            l: L,
            r: W - R,
            y_max,
            t0: t_min,
            t1: t_max,
        };
        axes(&mut s, "p95 latency (ms)", &panel1);
        let y1 = |v: f64| top1 + PH - v / y_max * PH;
        for (i, name) in names.iter().enumerate() {
            let color = PAL[i % PAL.len()];
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter_map(|p| p.service_p95_ms.get(*name).map(|v| (x(p.t_s), y1(*v))))
                .collect();
            polyline(&mut s, &line, color, 1.0);
            let slo = self.services[*name].slo_p95_ms as f64;
            let _ = writeln!(
                s,
                "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\" stroke-width=\"0.8\"/>",
                W - R,
                y1(slo),
                y1(slo)
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{} (SLO {} ms)</text>",
                W - R + 8.0,
                top1 + 12.0 + i as f64 * 14.0,
                esc(name),
                slo
            );
        }
        let total: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| p.p95_ms.map(|v| (x(p.t_s), y1(v))))
            .collect();
        polyline(&mut s, &total, "black", 2.0);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">all services (bold)</text>",
            W - R + 8.0,
            top1 + 12.0 + names.len() as f64 * 14.0
        );
        // Panel 2: memory, or sessions.
        let top2 = top1 + PH + 50.0;
        let mem = self.memory.measured;
        let series: Vec<(f64, f64)> = pts
            .iter()
            .filter_map(|p| {
                if mem {
                    p.memory_bytes
                        .map(|b| (p.t_s, b as f64 / (1u64 << 20) as f64))
                } else {
                    p.sessions_active.map(|v| (p.t_s, v))
                }
            })
            .collect();
        let mut y2_max = series.iter().map(|p| p.1).fold(1.0f64, f64::max);
        if mem {
            y2_max = y2_max.max(self.memory.budget_bytes as f64 / (1u64 << 20) as f64);
        }
        let y2_max = y2_max * 1.1;
        let title = if mem {
            "memory used, all containers (MiB); budget dashed"
        } else {
            "memory not measured: bridge sessions active (sum)"
        };
        let panel2 = Panel {
            top: top2,
            y_max: y2_max,
            ..panel1
        };
        axes(&mut s, title, &panel2);
        let y2 = |v: f64| top2 + PH - v / y2_max * PH;
        let line: Vec<(f64, f64)> = series.iter().map(|(t, v)| (x(*t), y2(*v))).collect();
        polyline(&mut s, &line, "#1f77b4", 1.5);
        if mem {
            let b = self.memory.budget_bytes as f64 / (1u64 << 20) as f64;
            let _ = writeln!(
                s,
                "<line x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/>",
                W - R,
                y2(b),
                y2(b)
            );
        }
        for c in &self.chaos {
            let cx = x(c.event.t_s.clamp(t_min, t_max));
            let _ = writeln!(
                s,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{top1}\" y2=\"{:.1}\" stroke=\"#d62728\" stroke-width=\"0.8\"><title>{} {}</title></line>",
                top2 + PH,
                esc(&c.event.action),
                esc(&c.event.service)
            );
        }
        s.push_str("</svg>\n");
        s
    }

    /// Write report.json, report.md and chart.svg into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        fs_err::create_dir_all(dir)?;
        let files = [
            ("report.json", serde_json::to_string_pretty(self)? + "\n"),
            ("report.md", self.markdown()),
            ("chart.svg", self.svg()),
        ];
        let mut out = Vec::new();
        for (name, body) in files {
            let p = dir.join(name);
            fs_err::write(&p, body)?;
            out.push(p);
        }
        Ok(out)
    }
}

fn downsample(points: &[Point], max: usize) -> Vec<Point> {
    if points.len() <= max {
        return points.to_vec();
    }
    let step = points.len().div_ceil(max);
    points.iter().step_by(step).cloned().collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn polyline(s: &mut String, pts: &[(f64, f64)], color: &str, width: f64) {
    if pts.is_empty() {
        return;
    }
    let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"/>",
        d.join(" ")
    );
}

/// Where a chart panel sits in the SVG and what its axes span.
#[derive(Clone, Copy)]
struct Panel {
    /// The plot area: top edge, height, left and right edges.
    top: f64,
    h: f64,
    l: f64,
    r: f64,
    /// The y axis spans 0..y_max, the x axis t0..t1 (seconds).
    y_max: f64,
    t0: f64,
    t1: f64,
}

fn axes(s: &mut String, title: &str, p: &Panel) {
    let Panel {
        top,
        h,
        l,
        r,
        y_max,
        t0,
        t1,
    } = *p;
    let _ = writeln!(
        s,
        "<text x=\"{l}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>",
        top - 4.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{l}\" y=\"{top}\" width=\"{:.1}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>",
        r - l
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = top + h - h * i as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            l - 4.0,
            y + 4.0
        );
        let t = t0 + (t1 - t0) * i as f64 / 4.0;
        let x = l + (r - l) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}</text>",
            top + h + 14.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::driver::State;
    use crate::soak::stats::{CallOutcome, ServiceStats};
    use crate::soak::{Probe, Target};
    use std::time::Duration;

    fn opts() -> SoakOptions {
        let s = Duration::from_secs;
        SoakOptions {
            duration: s(60),
            rate: 5.0,
            concurrency: 4,
            sessions: 2,
            chaos: false,
            call_timeout: s(5),
            coverage_interval: s(60),
            sample_interval: s(10),
            checkpoint_interval: s(60),
            leak_grace: s(10),
            chaos_min: s(300),
            chaos_max: s(900),
            memory_warm_up: s(600),
        }
    }

    fn ck(stats: ServiceStats) -> Checkpoint {
        let mut state = State::default();
        state.services.insert("a".into(), stats);
        state.leaks.insert(
            "a".into(),
            LeakCheck {
                judged: true,
                leaked: false,
                detail: "back at baseline".into(),
                ..Default::default()
            },
        );
        Checkpoint {
            version: 1,
            project: "p".into(),
            started_at: "now".into(),
            report_dir: "/tmp/x".into(),
            options: opts(),
            targets: vec![Target {
                name: "a".into(),
                base_url: "http://127.0.0.1:1".into(),
                transport: crate::manifest::Transport::Sse,
                probes: vec![Probe::ListTools],
                expect_tools: Default::default(),
                slo_p95_ms: 100,
                token: None,
                max_sessions: 4,
            }],
            prometheus_url: "http://127.0.0.1:9".into(),
            elapsed_s: 60.0,
            segments: vec!["now".into()],
            finished: true,
            interrupted: false,
            state,
        }
    }

    fn outcome(ok: bool, latency_ms: u64) -> CallOutcome {
        CallOutcome {
            probe: "tools/list".into(),
            answered: true,
            error: (!ok).then(|| ("is_error".into(), "x".into())),
            latency_us: Some(latency_ms * 1000),
            setup_us: None,
            held: true,
            reconnected: false,
            at_s: 1.0,
            era: Some(crate::mcp::Era::Legacy),
            opened_auto: None,
        }
    }

    fn status(r: &Report, slo: &str) -> Status {
        r.slos.iter().find(|s| s.slo == slo).unwrap().status
    }

    #[test]
    fn clean_run_passes_and_memory_is_not_measured_without_containers() {
        let mut s = ServiceStats::default();
        s.coverage.checks = 1;
        s.coverage.complete = 1;
        for _ in 0..2000 {
            s.record(&outcome(true, 5));
        }
        let r = build(&ck(s), Targets::seed(2 << 30));
        assert!(r.passed, "{:#?}", r.slos);
        assert_eq!(status(&r, "memory"), Status::NotMeasured);
        assert_eq!(r.totals.calls, 2000);
        assert!(r.svg().starts_with("<svg"));
        assert!(r.markdown().contains("PASS"));
    }

    /// A clean run whose timeline holds one sample per 10 s of two containers: `a`'s growing by
    /// `leak_mib_h`, the edge's flat.
    fn with_memory(minutes: usize, leak_mib_h: f64) -> Checkpoint {
        let mut s = ServiceStats::default();
        s.coverage.checks = 1;
        s.coverage.complete = 1;
        for _ in 0..2000 {
            s.record(&outcome(true, 5));
        }
        let mut c = ck(s);
        let st = &mut c.state;
        st.containers.services.insert("p-a-r1".into(), "a".into());
        for i in 0..minutes * 6 {
            let t = i as f64 * 10.0;
            let mut p = Point {
                t_s: t,
                ..Default::default()
            };
            let a = 60.0 + leak_mib_h * t / 3600.0 + if i % 2 == 0 { 0.5 } else { -0.5 };
            p.container_memory_bytes
                .insert("p-a-r1".into(), (a * (1u64 << 20) as f64) as u64);
            p.container_memory_bytes.insert("p-edge".into(), 8 << 20);
            st.timeline.push(p);
        }
        c
    }

    fn growth_slo<'a>(r: &'a Report, service: &str) -> &'a Slo {
        r.slos
            .iter()
            .find(|s| s.slo == "memory_growth" && s.service.as_deref() == Some(service))
            .unwrap()
    }

    #[test]
    fn memory_growth_is_judged_per_container_with_the_services_target() {
        let r = build(&with_memory(60, 12.0), Targets::seed(2 << 30));
        assert_eq!(growth_slo(&r, "a").status, Status::Fail, "{:#?}", r.slos);
        assert!(growth_slo(&r, "a").actual.starts_with("+12.0 MiB/h"));
        assert_eq!(growth_slo(&r, "p-edge").status, Status::Pass);
        assert!(!r.passed);
        assert!(r.breaches().iter().any(|s| s.slo == "memory_growth"));
        assert!(r
            .markdown()
            .contains("| p-a-r1 | a | 300 | +12.00 MiB/h | < 5.0 MiB/h | **FAIL** |"));
        // The service's own target: 20 MiB/h lets the same run pass.
        let mut t = Targets::seed(2 << 30);
        t.memory_growth_per_hour.insert("a".into(), 20 << 20);
        let r = build(&with_memory(60, 12.0), t);
        assert_eq!(growth_slo(&r, "a").status, Status::Pass);
        assert!(r.passed, "{:#?}", r.slos);
        // The JSON carries the verdicts.
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["memory"]["growth"][0]["container"], "p-a-r1");
        assert_eq!(v["memory"]["growth_warm_up_s"], 600.0);
    }

    #[test]
    fn a_short_run_leaves_memory_growth_not_judged() {
        let r = build(&with_memory(15, 100.0), Targets::seed(2 << 30));
        let g = growth_slo(&r, "a");
        assert_eq!(g.status, Status::NotMeasured);
        assert!(
            g.actual
                .starts_with("not judged (need ≥ 30 samples after warm-up"),
            "{}",
            g.actual
        );
        assert!(r.passed, "not judged is neither pass nor fail");
    }

    #[test]
    fn one_error_in_a_thousand_breaches_and_slow_p95_breaches() {
        let mut s = ServiceStats::default();
        s.coverage.checks = 1;
        s.coverage.complete = 1;
        for i in 0..1000 {
            s.record(&outcome(i != 0, 5));
        }
        let r = build(&ck(s.clone()), Targets::seed(2 << 30));
        assert_eq!(
            status(&r, "error_rate"),
            Status::Fail,
            "0.1 % is not < 0.1 %"
        );
        assert_eq!(status(&r, "availability"), Status::Pass);
        assert!(!r.passed);
        let mut slow = ServiceStats::default();
        slow.coverage.checks = 1;
        slow.coverage.complete = 1;
        for i in 0..100 {
            slow.record(&outcome(true, if i < 94 { 5 } else { 150 }));
        }
        let r = build(&ck(slow), Targets::seed(2 << 30));
        assert_eq!(status(&r, "p95"), Status::Fail);
    }
}
