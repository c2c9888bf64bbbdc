//! The release engine: one runner for every command that changes what serves (deploy, rollback).
//! The command builds the steps (pure: [`super::plan`]), takes the lock and confirms; the runner
//! numbers nothing and decides nothing — for each step, in order, it runs the command's hook
//! (deploy builds the image), prepares what the containers need (network, volumes, secret files),
//! switches through the edge when it fronts the service or classically otherwise
//! ([`super::executor`]), and writes the ledger: a `route` line per edge switch, a `step` line per
//! service, a `release` line at the end. It stops at the first failed step, or at the next safe
//! point after SIGINT/SIGTERM ([`watch_signals`]).
//!
//! Generic over [`Engine`] and [`Prober`], so the fake engine tests the whole loop.
//!
//! Must not: print (progress goes through the executor's callback), read the manifest's intent
//! (the steps carry it), or take the lock (the command does, and reconciles first).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::executor::{EdgeSwitch, Executor, Outcome, Prober, Step, StepResult};
use super::fault;
use super::ledger::{now_rfc3339, Entry, Ledger};
use super::lock::LockInfo;
use super::{secrets, Project};
use crate::engine::Engine;
use crate::manifest::Role;

/// One service of a release, as the command planned it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub step: Step,
    /// The secret values the new revision mounts (written before it starts).
    pub secrets: Vec<secrets::Resolved>,
    /// The tools the previous revision passed its gate with (schema drift is reported against it).
    pub previous_tools: Option<BTreeMap<String, String>>,
    /// Prefix of the ledger's detail for this step (rollback: "restores r3-…").
    pub note: Option<String>,
}

/// What a command does before each step (deploy: build the image if it is missing).
#[allow(async_fn_in_trait)]
pub trait Hooks {
    async fn before_step(&self, planned: &Planned) -> anyhow::Result<()>;
}

/// No hook (rollback restores images that exist).
pub struct NoHooks;

impl Hooks for NoHooks {
    async fn before_step(&self, _: &Planned) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Who runs the release and why, and the ledger that records it.
pub struct Run<'a> {
    pub ledger: &'a Ledger,
    pub me: &'a LockInfo,
    /// `deploy` | `rollback`
    pub command: &'a str,
    pub message: Option<&'a str>,
    /// Detail of the release's own ledger line (rollback: "to the state after release N").
    pub detail: Option<String>,
}

/// A finished release: every step that ran, in order.
#[derive(Debug)]
pub struct Finished {
    pub release: u64,
    pub results: Vec<StepResult>,
    /// A signal arrived; the release stopped after the step in progress.
    pub interrupted: bool,
}

impl Finished {
    /// The release's outcome: the first step that did not succeed, else interrupted or ok.
    pub fn outcome(&self) -> Outcome {
        self.results
            .iter()
            .map(|r| r.outcome)
            .find(|o| *o != Outcome::Ok)
            .unwrap_or(if self.interrupted {
                Outcome::Interrupted
            } else {
                Outcome::Ok
            })
    }
}

/// The next release number: above every release on a container and in the ledger (a lost ledger
/// or lost containers never make a number be reused).
pub fn next_release(max_on_containers: u64, ledger: &Ledger) -> u64 {
    max_on_containers.max(ledger.max_release()) + 1
}

/// Run `steps` as release `release`. `Err` only for what is not a step outcome (the ledger cannot
/// be written, a hook failed: the release stops there, the service untouched).
pub async fn run<E: Engine, P: Prober, H: Hooks>(
    exec: &Executor<'_, E, P>,
    edge: Option<&EdgeSwitch>,
    project: &Project,
    who: &Run<'_>,
    release: u64,
    steps: &[Planned],
    hooks: &H,
) -> anyhow::Result<Finished> {
    let ledger = who.ledger;
    fault::point("locked");
    let started = Instant::now();
    let mut results = Vec::new();
    let mut services = Vec::new();
    for p in steps {
        let service = &p.step.service;
        services.push(service.clone());
        if let Err(e) = hooks.before_step(p).await {
            ledger.append(&Entry {
                outcome: "build_failed".into(),
                detail: Some(format!("{e:#}")),
                service: Some(service.clone()),
                from: p.step.previous.as_ref().map(|r| r.name()),
                ..entry(who, "step", release)
            })?;
            ledger.append(&Entry {
                outcome: "build_failed".into(),
                detail: who.detail.clone(),
                duration_ms: started.elapsed().as_millis() as u64,
                services,
                ..entry(who, "release", release)
            })?;
            return Err(e.context("the release stopped before changing this service"));
        }
        prepare(exec.engine, project, service, p.step.role, &p.secrets).await?;
        let r = run_step(
            exec,
            edge,
            project,
            &p.step,
            p.previous_tools.as_ref(),
            who,
            release,
        )
        .await?;
        let mut e = step_entry(who, release, &r);
        if let Some(n) = &p.note {
            e.detail = Some(match e.detail {
                Some(d) => format!("{n}; {d}"),
                None => n.clone(),
            });
        }
        ledger.append(&e)?;
        fault::point("step-recorded");
        let stop = r.outcome != Outcome::Ok;
        results.push(r);
        if stop || exec.interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
    let finished = Finished {
        release,
        interrupted: exec.interrupted.load(Ordering::SeqCst),
        results,
    };
    fault::point("release-done");
    ledger.append(&Entry {
        outcome: finished.outcome().as_str().into(),
        detail: who.detail.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
        services,
        ..entry(who, "release", release)
    })?;
    Ok(finished)
}

fn entry(who: &Run<'_>, event: &str, release: u64) -> Entry {
    Entry {
        ts: now_rfc3339(),
        event: event.into(),
        release,
        command: who.command.into(),
        who: who.me.who.clone(),
        host: who.me.host.clone(),
        pid: who.me.pid,
        message: who.message.map(str::to_string),
        ..Default::default()
    }
}

/// The ledger's `step` line for one service.
fn step_entry(who: &Run<'_>, release: u64, r: &StepResult) -> Entry {
    Entry {
        service: Some(r.service.clone()),
        from: r.from.clone(),
        to: Some(r.to.clone()),
        outcome: r.outcome.as_str().into(),
        failed_check: r.failed.as_ref().map(|c| c.name.clone()),
        detail: r
            .failed
            .as_ref()
            .map(|c| c.detail.clone())
            .into_iter()
            .chain(r.restored.clone())
            .chain(r.downtime_ms.map(|d| format!("downtime {d} ms")))
            .chain(r.backups.iter().map(|b| format!("backup {b}")))
            .reduce(|a, b| format!("{a}; {b}")),
        duration_ms: r.duration_ms,
        gate: r.gate.clone(),
        ..entry(who, "step", release)
    }
}

/// Network, named volumes and secret files a service's containers need.
pub async fn prepare<E: Engine>(
    engine: &E,
    project: &Project,
    service: &str,
    role: Role,
    resolved: &[secrets::Resolved],
) -> anyhow::Result<()> {
    let keys = &project.keys;
    engine
        .ensure_network(project.name(), &keys.base(project.name(), "service"))
        .await?;
    if let Some(svc) = project.manifest.services.get(service) {
        for v in svc.volumes.iter().filter(|v| v.is_named()) {
            let mut labels = keys.base(project.name(), svc.role.as_str());
            labels.insert(keys.service(), service.to_string());
            engine
                .ensure_volume(&format!("{}-{}", project.name(), v.source), &labels)
                .await?;
        }
    }
    secrets::write(&project.state_dir, service, role, resolved)?;
    if role == Role::Service {
        // The consumers' token files (for `mcpctl token show` and `cutover litellm`).
        let key = secrets::install_key(&project.state_dir)?;
        let m = &project.manifest;
        let tokens =
            crate::auth::resolve_tokens(m, &project.manifest_dir, &project.state_dir, &key)?;
        crate::auth::write_token_files(&project.state_dir, &tokens)?;
    }
    Ok(())
}

/// One step: through the edge when it fronts the service (the route switch is recorded in the
/// ledger as its own `route` line), else the classic switch.
async fn run_step<E: Engine, P: Prober>(
    exec: &Executor<'_, E, P>,
    edge: Option<&EdgeSwitch>,
    project: &Project,
    step: &Step,
    previous_tools: Option<&BTreeMap<String, String>>,
    who: &Run<'_>,
    release: u64,
) -> anyhow::Result<StepResult> {
    let ledger = who.ledger;
    let Some(edge) = edge.filter(|_| crate::edge::container::fronts(project, &step.service)) else {
        return Ok(exec.run_step(step, previous_tools).await);
    };
    let (r, switch) = exec.run_step_edge(step, previous_tools, edge).await;
    if let Some(s) = switch {
        ledger.append(&Entry {
            service: Some(s.service.clone()),
            from: s.from.clone(),
            to: Some(s.route.upstream.clone()),
            outcome: s.outcome.as_str().into(),
            detail: Some(s.detail()),
            duration_ms: r.duration_ms,
            ..entry(who, "route", release)
        })?;
    }
    Ok(r)
}

/// SIGINT (Ctrl-C) and SIGTERM (`timeout`, systemd stop, a CI cancel) set the returned flag: the
/// step in progress finishes or reverts, and the release stops there; a second signal stops at
/// once (the next run reconciles). Must run inside the runtime.
pub fn watch_signals() -> Arc<AtomicBool> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    // Registered here, before the first step, not when the task is first polled.
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot watch SIGINT/SIGTERM; a signal stops mcpctl at once");
        return flag;
    };
    let f = flag.clone();
    tokio::spawn(async move {
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n > 0 {
                // A second signal: the operator insists. Stop now; the next run reconciles.
                tracing::warn!("second interrupt: stopping now; the next mcpctl run reconciles");
                std::process::exit(crate::error::ExitCode::Interrupted.code());
            }
            f.store(true, Ordering::SeqCst);
        }
    });
    flag
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::rollout::executor::tests::{step, FakeProber};
    use crate::rollout::plan::observe;

    fn project(state: &std::path::Path) -> Project {
        let text = "version: 1\nproject: p\nservices:\n  alpha:\n    port: 8501\n    server: {source: {image: {ref: \"x:1\"}}, command: [x]}\n  beta:\n    port: 8502\n    server: {source: {image: {ref: \"x:1\"}}, command: [x]}\n";
        let (m, _) = crate::manifest::load_str(text, "services.yaml").expect("manifest");
        Project::new(m, std::path::Path::new("services.yaml"), state.into()).unwrap()
    }

    fn planned(service: &str, release: u64, image: &str) -> Planned {
        let mut s = step(release, image, None);
        s.service = service.into();
        s.spec.name = format!("p-{service}-r{release}");
        if let Some(p) = s.spec.port.as_mut() {
            p.host_port = if service == "alpha" { 8501 } else { 8502 };
        }
        s.spec.labels.insert(
            crate::engine::labels::Keys::new("com.mcp").service(),
            service.into(),
        );
        Planned {
            step: s,
            secrets: vec![],
            previous_tools: None,
            note: Some(format!("note {service}")),
        }
    }

    struct Failing;
    impl Hooks for Failing {
        async fn before_step(&self, p: &Planned) -> anyhow::Result<()> {
            anyhow::ensure!(p.step.service != "beta", "no base image");
            Ok(())
        }
    }

    async fn release(
        engine: &FakeEngine,
        bad: &[&str],
        steps: &[Planned],
        interrupted: bool,
        hooks: &impl Hooks,
    ) -> (anyhow::Result<Finished>, Vec<Entry>) {
        let dir = tempfile::tempdir().unwrap();
        let project = project(dir.path());
        let prober = FakeProber {
            engine,
            bad_images: bad.iter().map(|s| s.to_string()).collect(),
            bad_containers: BTreeSet::new(),
        };
        let exec = Executor {
            engine,
            prober: &prober,
            keys: &project.keys,
            project: "p",
            progress: &|_| {},
            interrupted: Arc::new(AtomicBool::new(interrupted)),
        };
        let ledger = Ledger::new(dir.path());
        let me = LockInfo::current("deploy", None);
        let who = Run {
            ledger: &ledger,
            me: &me,
            command: "deploy",
            message: Some("why"),
            detail: None,
        };
        let r = run(&exec, None, &project, &who, 7, steps, hooks).await;
        (r, ledger.read())
    }

    fn engine() -> FakeEngine {
        let e = FakeEngine::new();
        for i in ["good:1", "bad:1"] {
            e.add_image(i, BTreeMap::new());
        }
        e
    }

    fn events(l: &[Entry]) -> Vec<String> {
        l.iter()
            .map(|e| {
                format!(
                    "{} {} {}",
                    e.event,
                    e.service.as_deref().unwrap_or("-"),
                    e.outcome
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn every_step_runs_in_order_and_the_ledger_records_each_and_the_release() {
        let e = engine();
        let steps = [planned("alpha", 7, "good:1"), planned("beta", 7, "good:1")];
        let (r, l) = release(&e, &[], &steps, false, &NoHooks).await;
        let r = r.unwrap();
        assert_eq!(r.outcome(), Outcome::Ok);
        assert_eq!(r.results.len(), 2);
        assert_eq!(
            events(&l),
            ["step alpha ok", "step beta ok", "release - ok"]
        );
        assert!(l
            .iter()
            .all(|x| x.release == 7 && x.message.as_deref() == Some("why")));
        assert_eq!(l[0].detail.as_deref(), Some("note alpha"));
        assert_eq!(l[2].services, ["alpha", "beta"]);
        let list = e.list_containers("com.mcp.project=p").await.unwrap();
        let o = observe(&list, &crate::engine::labels::Keys::new("com.mcp"));
        assert!(o.services["alpha"].serving.is_some() && o.services["beta"].serving.is_some());
    }

    #[tokio::test]
    async fn the_first_failed_step_stops_the_release() {
        let e = engine();
        let steps = [planned("alpha", 7, "bad:1"), planned("beta", 7, "good:1")];
        let (r, l) = release(&e, &["bad:1"], &steps, false, &NoHooks).await;
        let r = r.unwrap();
        assert_eq!(r.outcome(), Outcome::GateFailedRestored);
        assert_eq!(r.results.len(), 1, "beta was never touched");
        assert_eq!(
            events(&l),
            [
                "step alpha gate_failed_restored",
                "release - gate_failed_restored"
            ]
        );
        assert!(
            e.calls().iter().all(|c| !c.contains("p-beta")),
            "{:?}",
            e.calls()
        );
    }

    #[tokio::test]
    async fn a_signal_reverts_the_step_before_its_switch_and_stops_the_release() {
        let e = engine();
        let steps = [planned("alpha", 7, "good:1"), planned("beta", 7, "good:1")];
        let (r, l) = release(&e, &[], &steps, true, &NoHooks).await;
        let r = r.unwrap();
        assert!(r.interrupted);
        assert_eq!(r.outcome(), Outcome::Interrupted);
        assert_eq!(
            events(&l),
            ["step alpha interrupted", "release - interrupted"]
        );
        let list = e.list_containers("com.mcp.project=p").await.unwrap();
        assert!(
            list.is_empty(),
            "the candidate is removed, nothing switched: {list:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_hook_changes_nothing_of_its_service_and_is_recorded() {
        let e = engine();
        let steps = [planned("alpha", 7, "good:1"), planned("beta", 7, "good:1")];
        let (r, l) = release(&e, &[], &steps, false, &Failing).await;
        let err = format!("{:#}", r.unwrap_err());
        assert!(err.contains("no base image"), "{err}");
        assert_eq!(
            events(&l),
            [
                "step alpha ok",
                "step beta build_failed",
                "release - build_failed"
            ]
        );
        assert!(
            e.calls().iter().all(|c| !c.contains("p-beta")),
            "{:?}",
            e.calls()
        );
    }

    #[test]
    fn release_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path());
        assert_eq!(next_release(0, &ledger), 1);
        assert_eq!(next_release(4, &ledger), 5);
        ledger
            .append(&Entry {
                event: "release".into(),
                release: 9,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            next_release(4, &ledger),
            10,
            "the ledger remembers a pruned release"
        );
    }
}
