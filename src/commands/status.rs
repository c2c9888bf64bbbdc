//! `mcpctl status`: per service, what runs (from Docker) and how its last gate went (ledger):
//! revision, image, state, gate, uptime, restarts, tools, the MCP eras it speaks, port, memory
//! used/limit.

use clap::Args;
use serde::Serialize;

use super::common::{connect, observe, open_project, runtime};
use crate::engine::Engine;
use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::rollout::ledger::Ledger;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct StatusArgs {}

fn uptime(started: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(started.split('.').next()?.trim_end_matches('Z')).ok()?;
    std::time::SystemTime::now()
        .duration_since(t)
        .ok()
        .map(|d| d.as_secs())
}

fn mb(b: u64) -> String {
    format!("{:.0}M", b as f64 / (1 << 20) as f64)
}

/// The last gate a service went through (the ledger's last step for it).
#[derive(Serialize)]
struct Gate {
    outcome: String,
    at: String,
    release: u64,
}

/// One service: what runs and how it is doing.
#[derive(Serialize)]
struct ServiceStatus {
    service: String,
    revision: Option<String>,
    container: Option<String>,
    image: Option<String>,
    state: String,
    docker_health: Option<String>,
    gate: Option<Gate>,
    uptime_s: Option<u64>,
    restarts: i64,
    tools: Option<usize>,
    /// The MCP eras its last passed gate checked (`2026-07-28+legacy`, `legacy`): from the
    /// ledger; None when that gate predates era checks or there is none.
    era: Option<String>,
    port: Option<u16>,
    memory_used: Option<u64>,
    memory_limit: Option<u64>,
    retained: Vec<String>,
    /// The serving revision's containers: how many it wants (manifest `replicas` when it was
    /// deployed) and how many run; memory is its own container's.
    replicas: Option<Replicas>,
}

#[derive(Serialize)]
struct Replicas {
    wanted: u32,
    running: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    project: &'a str,
    services: Vec<ServiceStatus>,
}

impl Render for Report<'_> {
    fn human(&self) -> String {
        let rows = self
            .services
            .iter()
            .map(|s| {
                vec![
                    s.service.clone(),
                    s.revision.clone().unwrap_or("-".into()),
                    s.state.clone()
                        + &s.docker_health
                            .as_ref()
                            .map(|h| format!(" ({h})"))
                            .unwrap_or_default()
                        + &s.replicas
                            .as_ref()
                            .filter(|r| r.wanted > 1)
                            .map(|r| format!(" {}/{} replicas", r.running, r.wanted))
                            .unwrap_or_default(),
                    s.gate
                        .as_ref()
                        .map(|g| format!("{} ({})", g.outcome, g.at))
                        .unwrap_or("-".into()),
                    s.uptime_s
                        .map(|s| {
                            humantime::format_duration(std::time::Duration::from_secs(s))
                                .to_string()
                        })
                        .unwrap_or("-".into()),
                    s.restarts.to_string(),
                    s.tools.map(|t| t.to_string()).unwrap_or("-".into()),
                    s.era.clone().unwrap_or("-".into()),
                    s.port.map(|p| p.to_string()).unwrap_or("-".into()),
                    s.memory_used
                        .zip(s.memory_limit)
                        .map(|(u, l)| format!("{}/{}", mb(u), mb(l)))
                        .unwrap_or("-".into()),
                    s.image.clone().unwrap_or("-".into()),
                ]
            })
            .collect();
        output::table(
            &[
                "SERVICE",
                "REVISION",
                "STATE",
                "LAST GATE",
                "UPTIME",
                "RESTARTS",
                "TOOLS",
                "ERA",
                "PORT",
                "MEMORY",
                "IMAGE",
            ],
            rows,
        )
    }
}

/// The eras a service's last passed gate checked (ledger), e.g. `2026-07-28+legacy`: None when
/// it has none, or when that gate was recorded before the gate checked eras.
fn era_of(entries: &[crate::rollout::ledger::Entry], service: &str) -> Option<String> {
    entries
        .iter()
        .rev()
        .filter(|e| e.service.as_deref() == Some(service) && e.outcome == "ok")
        .find_map(|e| e.gate.as_ref().filter(|g| g.passed))
        .and_then(|g| g.era())
}

pub fn run(settings: &Settings, _args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    let ledger = Ledger::new(&project.state_dir);
    let entries = ledger.read();
    runtime()?.block_on(async {
        let engine = connect().await?;
        let observed = observe(&engine, &project).await?;
        let mut names: Vec<String> = project.manifest.services.keys().cloned().collect();
        for n in observed.services.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        // One stats sample takes the engine about a second: take them all at once.
        let serving_containers: Vec<String> = names
            .iter()
            .filter_map(|n| {
                observed
                    .services
                    .get(n)?
                    .serving
                    .as_ref()
                    .map(|s| s.container.clone())
            })
            .collect();
        let samples =
            futures::future::join_all(serving_containers.iter().map(|c| engine.memory(c))).await;
        let memory: std::collections::HashMap<&str, (u64, u64)> = serving_containers
            .iter()
            .zip(samples)
            .filter_map(|(c, m)| Some((c.as_str(), m.ok().flatten()?)))
            .collect();
        let mut services = Vec::new();
        for name in names {
            let o = observed.services.get(&name);
            let serving = o.and_then(|o| o.serving.as_ref());
            let last = entries
                .iter()
                .rev()
                .find(|e| e.event == "step" && e.service.as_deref() == Some(name.as_str()));
            let tools = entries
                .iter()
                .rev()
                .filter(|e| e.service.as_deref() == Some(name.as_str()) && e.outcome == "ok")
                .find_map(|e| e.gate.as_ref().map(|g| g.tools.len()));
            let era = era_of(&entries, &name);
            let (state, up, restarts, mem, health) = match serving {
                Some(s) => {
                    let d = engine.inspect_container(&s.container).await?;
                    let m = memory.get(s.container.as_str()).copied();
                    (
                        format!("{:?}", s.state).to_lowercase(),
                        d.as_ref()
                            .and_then(|d| d.started_at.as_deref().and_then(uptime)),
                        d.as_ref().map(|d| d.restart_count).unwrap_or(0),
                        m,
                        d.and_then(|d| d.health),
                    )
                }
                None => (
                    if o.is_some() {
                        "stopped".into()
                    } else {
                        "not deployed".into()
                    },
                    None,
                    0,
                    None,
                    None,
                ),
            };
            // Behind the edge the service's port is the edge's; the revision's own is ephemeral.
            let port = if crate::edge::container::fronts(&project, &name) {
                serving.and(project.manifest.services.get(&name).and_then(|s| s.port))
            } else {
                serving.and_then(|s| s.ports.values().next().copied())
            };
            services.push(ServiceStatus {
                service: name,
                revision: serving.map(|s| s.name()),
                container: serving.map(|s| s.container.clone()),
                image: serving.map(|s| s.image.clone()),
                state,
                docker_health: health,
                gate: last.map(|e| Gate {
                    outcome: e.outcome.clone(),
                    at: e.ts.clone(),
                    release: e.release,
                }),
                uptime_s: up,
                restarts,
                tools,
                era,
                port,
                memory_used: mem.map(|m| m.0),
                memory_limit: mem.map(|m| m.1),
                retained: o
                    .map(|o| o.retained.iter().map(|r| r.name()).collect())
                    .unwrap_or_default(),
                replicas: o.zip(serving).map(|(o, s)| Replicas {
                    wanted: s.replicas,
                    running: usize::from(s.is_running())
                        + o.replicas_of(s.release).filter(|r| r.is_running()).count(),
                }),
            });
        }
        output::emit(
            settings,
            &Report {
                project: project.name(),
                services,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::GateReport;
    use crate::rollout::ledger::Entry;

    fn step(service: &str, outcome: &str, eras: &[&str]) -> Entry {
        Entry {
            event: "step".into(),
            service: Some(service.into()),
            outcome: outcome.into(),
            gate: Some(GateReport {
                passed: outcome == "ok",
                eras: eras.iter().map(|e| e.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_era_comes_from_the_last_passed_gate() {
        let entries = vec![
            step("a", "ok", &["2026-07-28", "legacy"]),
            step("b", "ok", &["legacy"]),
            step("a", "gate_failed_restored", &["legacy"]),
            step("c", "ok", &[]),
        ];
        assert_eq!(era_of(&entries, "a").as_deref(), Some("2026-07-28+legacy"));
        assert_eq!(era_of(&entries, "b").as_deref(), Some("legacy"));
        // A gate recorded before eras were checked, and a service never gated.
        assert_eq!(era_of(&entries, "c"), None);
        assert_eq!(era_of(&entries, "d"), None);
    }
}
