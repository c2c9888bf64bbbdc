//! Applying one service's change behind the MCP gate, never half-switched:
//!
//! 1. the new revision starts as a *candidate* (`…-candidate`, ephemeral 127.0.0.1 port, no
//!    network alias, no restart policy so a crash shows as an exit) and must pass the gate;
//! 2. switch: the serving container is stopped (kept for rollback), the final container is created
//!    with the manifest's port and alias, started, and gated again (post-switch analysis: it must
//!    pass without restarting);
//! 3. any failure: the new container is removed (its log tail kept for the report), the previous
//!    revision is started again if it was stopped, and verified by the gate it passed before.
//!
//! Stateful services (databases) are never run twice on one volume: the old container is stopped
//! first and the new one gated in place (downtime, only when the operator allowed it).
//!
//! Must not: decide what to deploy (commands build the steps from the plan), or print (progress
//! goes through the `progress` callback).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::{observe, Revision};

mod edge;
use crate::engine::labels::Keys;
use crate::engine::{ContainerSpec, Engine, PortSpec, Restart, RunState};
use crate::health::{Check, GateReport};
use crate::manifest::{Health, Role, Transport};
pub use edge::{EdgeSwitch, RouteSwitch};

/// Runs the gate against a started container. The real one speaks MCP; tests substitute it.
#[allow(async_fn_in_trait)]
pub trait Prober {
    async fn probe(
        &self,
        container: &str,
        base: &str,
        transport: Transport,
        health: &Health,
        previous: Option<&BTreeMap<String, String>>,
        deadline: Instant,
    ) -> GateReport;
}

/// The MCP gate of [`crate::health::gate`], as mcpctl's own consumer (`crate::auth`): its token
/// goes with every gate request (a bridge without auth ignores it).
pub struct McpProber {
    pub token: Option<String>,
}

impl McpProber {
    /// The prober of a project: mcpctl's token derives from the install key in its state dir.
    pub fn for_project(project: &super::Project) -> anyhow::Result<Self> {
        let key = super::secrets::install_key(&project.state_dir)?;
        Ok(Self {
            token: Some(crate::auth::mcpctl_token(&key)),
        })
    }
}

impl Prober for McpProber {
    async fn probe(
        &self,
        _container: &str,
        base: &str,
        transport: Transport,
        health: &Health,
        previous: Option<&BTreeMap<String, String>>,
        deadline: Instant,
    ) -> GateReport {
        crate::health::gate::run(
            base,
            transport,
            self.token.as_deref(),
            health,
            previous,
            deadline,
        )
        .await
    }
}

/// What [`Executor::gate_container`] gates, and how: each field is one independent input.
pub struct GateInput<'a> {
    /// The started container.
    pub container: &'a str,
    /// Its published port; without one (or for a database) the gate is Docker's health check.
    pub port: Option<PortSpec>,
    pub role: Role,
    pub transport: Transport,
    pub health: &'a Health,
    /// The tool schemas of the revision serving before, to report drift against.
    pub previous: Option<&'a BTreeMap<String, String>>,
    /// Whether a signal (the executor's `interrupted`) ends the gate early.
    pub interruptible: bool,
}

/// What a revision was gated with, recorded on its container (`<p>.gate`) so a restore or a
/// reconcile verifies it with the same gate, even after the manifest changed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GateConfig {
    pub health: Health,
    pub transport: Transport,
    pub role: Role,
}

impl GateConfig {
    pub fn of(r: &Revision, keys: &Keys) -> Option<Self> {
        r.labels
            .get(&keys.gate())
            .and_then(|g| serde_json::from_str(g).ok())
    }
}

/// One service to switch to `spec`.
#[derive(Debug, Clone)]
pub struct Step {
    pub service: String,
    /// The final container (name `<project>-<service>-r<N>`, all labels but `<p>.spec`/`<p>.gate`).
    pub spec: ContainerSpec,
    pub revision: String,
    pub health: Health,
    pub transport: Transport,
    pub role: Role,
    pub stateful: bool,
    pub previous: Option<Revision>,
    /// Revisions kept per service (serving included).
    pub retain: u32,
    /// Where a stateful service's volumes are backed up before an in-place replacement.
    pub backup_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Gate failed; the previous revision serves again and passed its gate (or nothing served before).
    GateFailedRestored,
    /// Gate failed and the restore failed too.
    RestoreFailed,
    /// Ctrl-C before the switch: the candidate was removed, nothing changed.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::GateFailedRestored => "gate_failed_restored",
            Outcome::RestoreFailed => "restore_failed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub service: String,
    pub from: Option<String>,
    pub to: String,
    pub outcome: Outcome,
    /// Which check failed (phase: candidate / switch / post-switch).
    pub failed: Option<Check>,
    pub gate: Option<GateReport>,
    pub logs_tail: Option<String>,
    /// What serves now after a failure, and how it was verified.
    pub restored: Option<String>,
    /// Milliseconds nothing served (stateful replacement) — stated, never hidden.
    pub downtime_ms: Option<u64>,
    /// Backup files taken before a stateful replacement.
    pub backups: Vec<String>,
    pub duration_ms: u64,
}

pub struct Executor<'a, E: Engine, P: Prober> {
    pub engine: &'a E,
    pub prober: &'a P,
    pub keys: &'a Keys,
    pub project: &'a str,
    pub progress: &'a dyn Fn(&str),
    /// Set by the Ctrl-C handler; checked between phases.
    pub interrupted: Arc<AtomicBool>,
}

const STOP_TIMEOUT_S: i64 = 10;
const LOG_LINES: usize = 20;

fn client_ip(host_ip: IpAddr) -> String {
    // The gate talks only to loopback-published ports; 0.0.0.0 is reachable there too.
    if host_ip.is_unspecified() || host_ip.is_loopback() {
        "127.0.0.1".into()
    } else {
        host_ip.to_string()
    }
}

/// The container of replica `n` (≥ 2) of the revision whose own container is `container`.
pub fn replica_name(container: &str, n: u32) -> String {
    format!("{container}-{n}")
}

/// Replica `n` (≥ 2) of a revision whose own container is `spec` (as started beside the serving
/// revision: loopback ephemeral port, no alias): the same config, its own name and `<p>.replica`,
/// without the recorded config and gate (the revision's own container carries them).
fn replica_spec(spec: &ContainerSpec, n: u32, keys: &Keys) -> ContainerSpec {
    let mut r = spec.clone();
    r.name = replica_name(&spec.name, n);
    r.labels.insert(keys.replica(), n.to_string());
    r.labels.remove(&keys.spec());
    r.labels.remove(&keys.gate());
    r.aliases.clear();
    r
}

fn fail_check(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
    }
}

impl<E: Engine, P: Prober> Executor<'_, E, P> {
    fn say(&self, service: &str, msg: &str) {
        (self.progress)(&format!("{service}: {msg}"));
    }

    /// Record the spec and gate config on the container, as the labels rollback reads.
    fn finalize_labels(&self, spec: &mut ContainerSpec, step: &Step) {
        spec.labels.insert(
            self.keys.spec(),
            serde_json::to_string(&*spec).expect("spec serializes"),
        );
        let gate = GateConfig {
            health: step.health.clone(),
            transport: step.transport,
            role: step.role,
        };
        spec.labels.insert(
            self.keys.gate(),
            serde_json::to_string(&gate).expect("gate config serializes"),
        );
    }

    /// Gate a started container. Fails fast when it exits; databases are gated on Docker health.
    pub async fn gate_container(&self, input: GateInput<'_>) -> GateReport {
        let GateInput {
            container: name,
            port,
            role,
            transport,
            health,
            previous,
            interruptible,
        } = input;
        let started = Instant::now();
        let deadline = started + health.timeout;
        let watch_exit = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                match self.engine.inspect_container(name).await {
                    Ok(Some(d))
                        if matches!(d.info.state, RunState::Running | RunState::Restarting) => {}
                    Ok(Some(d)) => {
                        return format!(
                            "the container stopped (exit code {}{})",
                            d.exit_code.map(|c| c.to_string()).unwrap_or("?".into()),
                            if d.oom_killed {
                                ", killed by the out-of-memory killer"
                            } else {
                                ""
                            }
                        )
                    }
                    Ok(None) => return "the container disappeared".to_string(),
                    Err(e) => return format!("cannot inspect the container: {e}"),
                }
            }
        };
        let interrupt = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if interruptible && self.interrupted.load(Ordering::SeqCst) {
                    return;
                }
            }
        };
        if role == Role::Database || port.is_none() {
            let wait_healthy = async {
                loop {
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "not healthy (Docker health check) within {:?}",
                            health.timeout
                        ));
                    }
                    if let Ok(Some(d)) = self.engine.inspect_container(name).await {
                        match d.health.as_deref() {
                            Some("healthy") => {
                                return Ok("Docker health check: healthy".to_string())
                            }
                            None if d.info.state == RunState::Running => {
                                return Ok("running (no health check)".to_string())
                            }
                            _ => {}
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            let r = tokio::select! {
                r = wait_healthy => r,
                why = watch_exit => Err(why),
            };
            let mut report = GateReport::default();
            return match r {
                Ok(detail) => {
                    report.passed = true;
                    report.checks.push(Check {
                        name: "health".into(),
                        ok: true,
                        detail,
                    });
                    report.elapsed_ms = started.elapsed().as_millis() as u64;
                    report
                }
                Err(detail) => report.fail("health", detail, started),
            };
        }
        let spec_port = port.expect("checked above");
        let host_port = match self.engine.inspect_container(name).await {
            Ok(Some(d)) => d.info.ports.get(&spec_port.container_port).copied(),
            _ => None,
        };
        let Some(host_port) = host_port else {
            return GateReport::default().fail(
                "start",
                "the container publishes no port (did it exit at once?)",
                started,
            );
        };
        let base = format!("http://{}:{host_port}", client_ip(spec_port.host_ip));
        tokio::select! {
            r = self.prober.probe(name, &base, transport, health, previous, deadline) => r,
            why = watch_exit => GateReport::default().fail("container", why, started),
            _ = interrupt => GateReport::default().fail("interrupted", "Ctrl-C during the gate", started),
        }
    }

    /// Create and start `spec`. On failure: which stage failed (`create` or `start`), the error,
    /// and the log tail of a container that was created but would not start (it is removed).
    async fn launch(
        &self,
        spec: &ContainerSpec,
    ) -> Result<(), (&'static str, String, Option<String>)> {
        if let Err(e) = self.engine.create_container(spec).await {
            return Err(("create", e.to_string(), None));
        }
        if let Err(e) = self.engine.start_container(&spec.name).await {
            let logs = self.tail(&spec.name).await;
            let _ = self.engine.remove_container(&spec.name).await;
            return Err(("start", e.to_string(), logs));
        }
        Ok(())
    }

    async fn tail(&self, name: &str) -> Option<String> {
        self.engine
            .logs_tail(name, LOG_LINES)
            .await
            .ok()
            .filter(|s| !s.trim().is_empty())
    }

    /// Start (if needed) and verify the previous revision with the gate it passed before.
    async fn restore(&self, step: &Step) -> (bool, String) {
        let Some(prev) = &step.previous else {
            return (
                true,
                "nothing was serving before; nothing to restore".into(),
            );
        };
        let gate = GateConfig::of(prev, self.keys).unwrap_or(GateConfig {
            health: step.health.clone(),
            transport: step.transport,
            role: step.role,
        });
        let running = matches!(
            self.engine.inspect_container(&prev.container).await,
            Ok(Some(d)) if d.info.state == RunState::Running
        );
        if !running {
            if let Err(e) = self.engine.start_container(&prev.container).await {
                return (false, format!("could not start {} again: {e}", prev.name()));
            }
        }
        let port = prev.spec.as_ref().and_then(|s| s.port).or(step.spec.port);
        let report = self
            .gate_container(GateInput {
                container: &prev.container,
                port,
                role: gate.role,
                transport: gate.transport,
                health: &gate.health,
                previous: None,
                interruptible: false,
            })
            .await;
        if report.passed {
            (
                true,
                format!(
                    "{} serves again and passed the gate in {} ms",
                    prev.name(),
                    report.elapsed_ms
                ),
            )
        } else {
            let f = report
                .failure()
                .cloned()
                .unwrap_or_else(|| fail_check("gate", "failed"));
            (
                false,
                format!(
                    "{} was started again but fails the gate: {}: {}",
                    prev.name(),
                    f.name,
                    f.detail
                ),
            )
        }
    }

    async fn failed(
        &self,
        step: &Step,
        started: Instant,
        failed: Check,
        gate: Option<GateReport>,
        logs_tail: Option<String>,
    ) -> StepResult {
        self.say(
            &step.service,
            &format!("FAILED {}: {}", failed.name, failed.detail),
        );
        let (ok, restored) = self.restore(step).await;
        self.say(&step.service, &restored);
        StepResult {
            service: step.service.clone(),
            from: step.previous.as_ref().map(Revision::name),
            to: step.revision.clone(),
            outcome: if ok {
                Outcome::GateFailedRestored
            } else {
                Outcome::RestoreFailed
            },
            failed: Some(failed),
            gate,
            logs_tail,
            restored: Some(restored),
            downtime_ms: None,
            backups: vec![],
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Phase 1: the revision as a candidate (`…-candidate`, ephemeral loopback port, no alias, no
    /// restart) must pass the gate; it is removed either way. `Err` is the step's final result.
    async fn gate_candidate(
        &self,
        step: &Step,
        spec: &ContainerSpec,
        previous_tools: Option<&BTreeMap<String, String>>,
        started: Instant,
    ) -> Result<GateReport, Box<StepResult>> {
        let mut cand = spec.clone();
        cand.name = format!("{}-candidate", spec.name);
        cand.aliases.clear();
        cand.restart = Restart::No;
        cand.port = spec.port.map(|p| PortSpec {
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_port: 0,
            ..p
        });
        cand.labels.insert(self.keys.phase(), "candidate".into());
        let _ = self.engine.remove_container(&cand.name).await;
        self.say(
            &step.service,
            &format!("starting candidate {} ({})", step.revision, spec.image),
        );
        if let Err((stage, error, logs)) = self.launch(&cand).await {
            return Err(Box::new(
                self.failed(step, started, fail_check(stage, error), None, logs)
                    .await,
            ));
        }
        super::fault::point("candidate-started");
        let report = self
            .gate_container(GateInput {
                container: &cand.name,
                port: cand.port,
                role: step.role,
                transport: step.transport,
                health: &step.health,
                previous: previous_tools,
                interruptible: true,
            })
            .await;
        // A signal that arrived while the gate passed still stops before the switch.
        let report = if report.passed && self.interrupted.load(Ordering::SeqCst) {
            report.fail("interrupted", "signal during the gate", started)
        } else {
            report
        };
        if !report.passed {
            let logs = self.tail(&cand.name).await;
            let _ = self.engine.remove_container(&cand.name).await;
            let f = report
                .failure()
                .cloned()
                .unwrap_or_else(|| fail_check("gate", "failed"));
            if f.name == "interrupted" {
                self.say(
                    &step.service,
                    "interrupted before the switch: candidate removed, nothing changed",
                );
                return Err(Box::new(StepResult {
                    service: step.service.clone(),
                    from: step.previous.as_ref().map(Revision::name),
                    to: step.revision.clone(),
                    outcome: Outcome::Interrupted,
                    failed: Some(f),
                    gate: Some(report),
                    logs_tail: None,
                    restored: Some("nothing was switched".into()),
                    downtime_ms: None,
                    backups: vec![],
                    duration_ms: started.elapsed().as_millis() as u64,
                }));
            }
            let f = Check {
                name: format!("candidate {}", f.name),
                ..f
            };
            return Err(Box::new(
                self.failed(step, started, f, Some(report), logs).await,
            ));
        }
        self.say(
            &step.service,
            &format!(
                "candidate passed the gate in {} ms ({} tools)",
                report.elapsed_ms,
                report.tools.len()
            ),
        );
        let _ = self.engine.remove_container(&cand.name).await;
        super::fault::point("candidate-passed");
        Ok(report)
    }

    /// Run one step to completion: switched and verified, or reverted and verified.
    pub async fn run_step(
        &self,
        step: &Step,
        previous_tools: Option<&BTreeMap<String, String>>,
    ) -> StepResult {
        let started = Instant::now();
        let mut spec = step.spec.clone();
        self.finalize_labels(&mut spec, step);
        let from = step.previous.as_ref().map(Revision::name);
        if step.stateful && step.previous.is_some() {
            return self.run_in_place(step, spec, previous_tools, started).await;
        }

        // 1. Candidate on an ephemeral loopback port.
        let report = match self
            .gate_candidate(step, &spec, previous_tools, started)
            .await
        {
            Ok(r) => r,
            Err(r) => return *r,
        };

        // 2. Switch.
        if let Some(prev) = &step.previous {
            if let Err(e) = self
                .engine
                .stop_container(&prev.container, STOP_TIMEOUT_S)
                .await
            {
                return self
                    .failed(
                        step,
                        started,
                        fail_check("switch", format!("stopping {}: {e}", prev.name())),
                        Some(report),
                        None,
                    )
                    .await;
            }
            super::fault::point("previous-stopped");
        }
        let _ = self.engine.remove_container(&spec.name).await;
        if let Err((_, error, logs)) = self.launch(&spec).await {
            return self
                .failed(
                    step,
                    started,
                    fail_check("switch", error),
                    Some(report),
                    logs,
                )
                .await;
        }
        super::fault::point("revision-started");

        // 3. Post-switch analysis: the gate again, on the real port, without a restart.
        let post = self
            .gate_container(GateInput {
                container: &spec.name,
                port: spec.port,
                role: step.role,
                transport: step.transport,
                health: &step.health,
                previous: previous_tools,
                interruptible: false,
            })
            .await;
        let restarts = match self.engine.inspect_container(&spec.name).await {
            Ok(Some(d)) => d.restart_count,
            _ => 0,
        };
        if !post.passed || restarts > 0 {
            let logs = self.tail(&spec.name).await;
            let _ = self.engine.remove_container(&spec.name).await;
            let f = match post.failure() {
                Some(f) => Check {
                    name: format!("post-switch {}", f.name),
                    ..f.clone()
                },
                None => fail_check(
                    "post-switch",
                    format!("restarted {restarts} times during the analysis window"),
                ),
            };
            return self.failed(step, started, f, Some(post), logs).await;
        }
        self.say(
            &step.service,
            &format!(
                "serving {} (post-switch gate {} ms)",
                step.revision, post.elapsed_ms
            ),
        );
        self.retain(step).await;
        super::fault::point("step-done");
        StepResult {
            service: step.service.clone(),
            from,
            to: step.revision.clone(),
            outcome: Outcome::Ok,
            failed: None,
            gate: Some(post),
            logs_tail: None,
            restored: None,
            downtime_ms: None,
            backups: vec![],
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Stateful replacement: stop, start the new one on the same volume, gate; revert on failure.
    async fn run_in_place(
        &self,
        step: &Step,
        spec: ContainerSpec,
        previous_tools: Option<&BTreeMap<String, String>>,
        started: Instant,
    ) -> StepResult {
        let prev = step
            .previous
            .as_ref()
            .expect("in-place replaces a running revision");
        self.say(
            &step.service,
            &format!("stateful: stopping {} (downtime starts)", prev.name()),
        );
        let down_at = Instant::now();
        if let Err(e) = self
            .engine
            .stop_container(&prev.container, STOP_TIMEOUT_S * 3)
            .await
        {
            return self
                .failed(step, started, fail_check("stop", e.to_string()), None, None)
                .await;
        }
        super::fault::point("previous-stopped");
        // Automatic backup of every named volume, from the stopped (cleanly shut down) container.
        let mut backups = Vec::new();
        if let Some(dir) = &step.backup_dir {
            for b in spec.binds.iter().filter(|b| !b.source.starts_with('/')) {
                let _ = std::fs::create_dir_all(dir);
                let file = dir.join(format!(
                    "{}-{}-{}.tar",
                    prev.name(),
                    b.source,
                    super::ledger::now_rfc3339().replace(':', "")
                ));
                match self
                    .engine
                    .copy_out(&prev.container, &b.target, &file)
                    .await
                {
                    Ok(bytes) => {
                        self.say(
                            &step.service,
                            &format!(
                                "backed up volume {} ({bytes} bytes) to {}",
                                b.source,
                                file.display()
                            ),
                        );
                        backups.push(file.display().to_string());
                    }
                    Err(e) => {
                        let mut r = self
                            .failed(
                                step,
                                started,
                                fail_check("backup", format!("volume {}: {e}", b.source)),
                                None,
                                None,
                            )
                            .await;
                        r.downtime_ms = Some(down_at.elapsed().as_millis() as u64);
                        return r;
                    }
                }
            }
        }
        let _ = self.engine.remove_container(&spec.name).await;
        if let Err((_, error, logs)) = self.launch(&spec).await {
            let mut r = self
                .failed(step, started, fail_check("start", error), None, logs)
                .await;
            r.downtime_ms = Some(down_at.elapsed().as_millis() as u64);
            r.backups = backups;
            return r;
        }
        super::fault::point("revision-started");
        let report = self
            .gate_container(GateInput {
                container: &spec.name,
                port: spec.port,
                role: step.role,
                transport: step.transport,
                health: &step.health,
                previous: previous_tools,
                interruptible: false,
            })
            .await;
        let downtime = down_at.elapsed().as_millis() as u64;
        if !report.passed {
            let logs = self.tail(&spec.name).await;
            let _ = self.engine.remove_container(&spec.name).await;
            let f = report
                .failure()
                .cloned()
                .unwrap_or_else(|| fail_check("gate", "failed"));
            let mut r = self.failed(step, started, f, Some(report), logs).await;
            r.downtime_ms = Some(down_at.elapsed().as_millis() as u64);
            r.backups = backups;
            return r;
        }
        self.say(
            &step.service,
            &format!("serving {} after {downtime} ms of downtime", step.revision),
        );
        self.retain(step).await;
        super::fault::point("step-done");
        StepResult {
            service: step.service.clone(),
            from: Some(prev.name()),
            to: step.revision.clone(),
            outcome: Outcome::Ok,
            failed: None,
            gate: Some(report),
            logs_tail: None,
            restored: None,
            downtime_ms: Some(downtime),
            backups,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Remove every other replica of the revision whose own container is `container` (they hold
    /// nothing: a rollback starts them again from the revision's recorded config).
    async fn remove_replicas(&self, container: &str) {
        let Ok(list) = self
            .engine
            .list_containers(&self.keys.project_filter(self.project))
            .await
        else {
            return;
        };
        let prefix = format!("{container}-");
        for c in list.iter().filter(|c| {
            c.labels.contains_key(&self.keys.replica())
                && c.name
                    .strip_prefix(&prefix)
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        }) {
            let _ = self.engine.remove_container(&c.name).await;
        }
    }

    /// Keep the newest `retain` revisions of the service (serving included); remove older ones,
    /// and every replica that is not the serving revision's.
    async fn retain(&self, step: &Step) {
        let Ok(list) = self
            .engine
            .list_containers(&self.keys.project_filter(self.project))
            .await
        else {
            return;
        };
        let obs = observe(&list, self.keys);
        let Some(o) = obs.services.get(&step.service) else {
            return;
        };
        let keep_stopped = step.retain.max(1) as usize - 1;
        for r in o.retained.iter().skip(keep_stopped) {
            self.say(
                &step.service,
                &format!("removing old revision {} (retain_revisions)", r.name()),
            );
            let _ = self.engine.remove_container(&r.container).await;
        }
        let serving = o.serving.as_ref().map(|s| s.release);
        for r in o.replicas.iter().filter(|r| Some(r.release) != serving) {
            let _ = self.engine.remove_container(&r.container).await;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use std::collections::BTreeSet;

    /// Passes unless the container's image or name is listed (also used by the edge path's tests).
    pub(crate) struct FakeProber<'a> {
        pub engine: &'a FakeEngine,
        pub bad_images: BTreeSet<String>,
        pub bad_containers: BTreeSet<String>,
    }

    impl Prober for FakeProber<'_> {
        async fn probe(
            &self,
            container: &str,
            _base: &str,
            _t: Transport,
            _h: &Health,
            _p: Option<&BTreeMap<String, String>>,
            _d: Instant,
        ) -> GateReport {
            let image = self.engine.state.lock().unwrap().containers[container]
                .spec
                .image
                .clone();
            let bad = self.bad_images.contains(&image) || self.bad_containers.contains(container);
            let mut r = GateReport::default();
            if bad {
                return r.fail("tools/list", "expected tools missing: x", Instant::now());
            }
            r.passed = true;
            r.checks.push(Check {
                name: "initialize".into(),
                ok: true,
                detail: String::new(),
            });
            r
        }
    }

    fn keys() -> Keys {
        Keys::new("com.mcp")
    }

    /// A step of service `alpha` in project `p` (also used by the edge path's tests).
    pub(crate) fn step(release: u64, image: &str, previous: Option<Revision>) -> Step {
        let k = keys();
        let labels = BTreeMap::from([
            (k.managed(), "true".to_string()),
            (k.project(), "p".to_string()),
            (k.service(), "alpha".to_string()),
            (k.release(), release.to_string()),
            (k.config_hash(), format!("{release:08}cafe")),
        ]);
        Step {
            service: "alpha".into(),
            spec: ContainerSpec {
                name: format!("p-alpha-r{release}"),
                image: image.into(),
                cmd: vec![],
                env: BTreeMap::new(),
                labels,
                network: "p".into(),
                aliases: vec!["mcp-alpha".into()],
                port: Some(PortSpec {
                    host_ip: [127, 0, 0, 1].into(),
                    host_port: 8501,
                    container_port: 8080,
                }),
                binds: vec![],
                memory: 64 << 20,
                nano_cpus: 500_000_000,
                pids: 64,
                shm_size: None,
                read_only_root: true,
                restart: Restart::UnlessStopped,
            },
            revision: format!("r{release}"),
            health: Health {
                timeout: Duration::from_secs(2),
                ..Health::default()
            },
            transport: Transport::Http,
            role: Role::Service,
            stateful: false,
            previous,
            retain: 2,
            backup_dir: None,
        }
    }

    async fn serving(engine: &FakeEngine) -> Option<Revision> {
        let list = engine.list_containers("com.mcp.project=p").await.unwrap();
        observe(&list, &keys())
            .services
            .get("alpha")
            .and_then(|o| o.serving.clone())
    }

    fn names(engine: &FakeEngine) -> Vec<String> {
        engine
            .state
            .lock()
            .unwrap()
            .containers
            .keys()
            .cloned()
            .collect()
    }

    async fn run(
        engine: &FakeEngine,
        prober: &FakeProber<'_>,
        release: u64,
        image: &str,
    ) -> StepResult {
        let k = keys();
        let exec = Executor {
            engine,
            prober,
            keys: &k,
            project: "p",
            progress: &|_| {},
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let prev = serving(engine).await;
        exec.run_step(&step(release, image, prev), None).await
    }

    fn engine_with(images: &[&str]) -> FakeEngine {
        let e = FakeEngine::new();
        for i in images {
            e.add_image(i, BTreeMap::new());
        }
        e
    }

    #[tokio::test]
    async fn first_deploy_gates_a_candidate_then_switches() {
        let e = engine_with(&["img:a"]);
        let p = FakeProber {
            engine: &e,
            bad_images: BTreeSet::new(),
            bad_containers: BTreeSet::new(),
        };
        let r = run(&e, &p, 1, "img:a").await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        assert_eq!(
            e.calls(),
            vec![
                "remove p-alpha-r1-candidate",
                "create p-alpha-r1-candidate",
                "start p-alpha-r1-candidate",
                "remove p-alpha-r1-candidate",
                "remove p-alpha-r1",
                "create p-alpha-r1",
                "start p-alpha-r1",
            ]
        );
        let s = serving(&e).await.unwrap();
        assert_eq!(s.container, "p-alpha-r1");
        assert_eq!(s.ports.get(&8080), Some(&8501));
        assert!(s.spec.is_some(), "the recorded config is on the container");
    }

    #[tokio::test]
    async fn failing_candidate_never_touches_the_serving_revision() {
        let e = engine_with(&["img:a", "img:b"]);
        let p = FakeProber {
            engine: &e,
            bad_images: BTreeSet::from(["img:b".to_string()]),
            bad_containers: BTreeSet::new(),
        };
        assert_eq!(run(&e, &p, 1, "img:a").await.outcome, Outcome::Ok);
        let before = e.calls().len();
        let r = run(&e, &p, 2, "img:b").await;
        assert_eq!(r.outcome, Outcome::GateFailedRestored);
        assert_eq!(r.failed.as_ref().unwrap().name, "candidate tools/list");
        assert!(r.restored.as_ref().unwrap().contains("r1-"), "{r:?}");
        let later = &e.calls()[before..];
        assert!(!later.iter().any(|c| c == "stop p-alpha-r1"), "{later:?}");
        assert_eq!(names(&e), vec!["p-alpha-r1"]);
        assert_eq!(serving(&e).await.unwrap().container, "p-alpha-r1");
    }

    #[tokio::test]
    async fn post_switch_failure_restarts_and_verifies_the_previous_revision() {
        for (bad, want) in [
            (vec!["p-alpha-r2"], Outcome::GateFailedRestored),
            (vec!["p-alpha-r2", "p-alpha-r1"], Outcome::RestoreFailed),
        ] {
            let e = engine_with(&["img:a", "img:b"]);
            let mut p = FakeProber {
                engine: &e,
                bad_images: BTreeSet::new(),
                bad_containers: BTreeSet::new(),
            };
            assert_eq!(run(&e, &p, 1, "img:a").await.outcome, Outcome::Ok);
            // The candidate passes; the switched-to container fails its post-switch gate.
            p.bad_containers = bad.iter().map(|s| s.to_string()).collect();
            let before = e.calls().len();
            let r = run(&e, &p, 2, "img:b").await;
            assert_eq!(r.outcome, want, "{r:?}");
            assert!(
                r.failed.as_ref().unwrap().name.starts_with("post-switch"),
                "{r:?}"
            );
            let later = &e.calls()[before..];
            for c in [
                "stop p-alpha-r1",
                "create p-alpha-r2",
                "remove p-alpha-r2",
                "start p-alpha-r1",
            ] {
                assert!(later.contains(&c.to_string()), "{c} missing from {later:?}");
            }
            assert_eq!(names(&e), vec!["p-alpha-r1"]);
            assert_eq!(
                serving(&e).await.unwrap().container,
                "p-alpha-r1",
                "r1 runs again"
            );
        }
    }

    #[tokio::test]
    async fn a_crashing_candidate_is_caught_by_the_exit_watcher() {
        let e = engine_with(&["img:a", "img:c"]);
        e.state.lock().unwrap().crash_images.insert("img:c".into());
        let p = FakeProber {
            engine: &e,
            bad_images: BTreeSet::new(),
            bad_containers: BTreeSet::new(),
        };
        assert_eq!(run(&e, &p, 1, "img:a").await.outcome, Outcome::Ok);
        let r = run(&e, &p, 2, "img:c").await;
        assert_eq!(r.outcome, Outcome::GateFailedRestored, "{r:?}");
        assert_eq!(names(&e), vec!["p-alpha-r1"]);
    }

    #[tokio::test]
    async fn only_retain_revisions_are_kept() {
        let e = engine_with(&["img:a", "img:b", "img:c", "img:d"]);
        let p = FakeProber {
            engine: &e,
            bad_images: BTreeSet::new(),
            bad_containers: BTreeSet::new(),
        };
        for (n, img) in ["img:a", "img:b", "img:c", "img:d"].iter().enumerate() {
            assert_eq!(run(&e, &p, n as u64 + 1, img).await.outcome, Outcome::Ok);
        }
        // retain 2 = the serving revision and one stopped predecessor.
        assert_eq!(names(&e), vec!["p-alpha-r3", "p-alpha-r4"]);
        assert_eq!(serving(&e).await.unwrap().container, "p-alpha-r4");
    }

    #[tokio::test]
    async fn reconcile_removes_candidates_and_restarts_a_stopped_service() {
        let e = engine_with(&["img:a", "img:b"]);
        let p = FakeProber {
            engine: &e,
            bad_images: BTreeSet::new(),
            bad_containers: BTreeSet::new(),
        };
        assert_eq!(run(&e, &p, 1, "img:a").await.outcome, Outcome::Ok);
        // A run died after stopping r1 and while a candidate of r2 existed.
        let mut cand = step(2, "img:b", None).spec;
        cand.name = "p-alpha-r2-candidate".into();
        cand.port = None;
        cand.labels.insert(keys().phase(), "candidate".into());
        e.create_container(&cand).await.unwrap();
        e.stop_container("p-alpha-r1", 1).await.unwrap();
        let k = keys();
        let exec = Executor {
            engine: &e,
            prober: &p,
            keys: &k,
            project: "p",
            progress: &|_| {},
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let done = super::super::reconcile::reconcile(&exec, Some("1970-01-01T00:00:00Z"), None)
            .await
            .unwrap();
        assert_eq!(done.len(), 2, "{done:?}");
        assert!(done[0].contains("removed the unfinished candidate"));
        assert!(done[1].contains("started r1-"), "{done:?}");
        assert_eq!(names(&e), vec!["p-alpha-r1"]);
        assert_eq!(serving(&e).await.unwrap().container, "p-alpha-r1");
    }
}
