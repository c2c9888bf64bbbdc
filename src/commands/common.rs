//! What every command that drives the engine shares: open the project, connect, take
//! the lock (and reconcile under it), observe, build an image, report a release. Commands parse,
//! confirm and print; the rollout engine (`crate::rollout`) decides and acts.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;

use crate::engine::docker::DockerEngine;
use crate::engine::{Engine, EngineError};
use crate::error::{CommandError, ExitCode};
use crate::output::{self, progress::Bar};
use crate::rollout::desired::Desired;
use crate::rollout::executor::{Executor, McpProber, Outcome, StepResult};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{self, Held, LockInfo};
use crate::rollout::plan::{self, Action, Observed};
use crate::rollout::reconcile::{self, EdgeRoutes};
use crate::rollout::Project;
use crate::settings::Settings;

/// A single-threaded runtime: rollout is sequential by design; the gate's reader tasks share it.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn open_project(settings: &Settings) -> anyhow::Result<Project> {
    let loaded = crate::manifest::load_checked(settings)?;
    let state = settings.state_dir(&loaded.manifest.project);
    Project::new(loaded.manifest, &settings.manifest_path, state)
}

/// [`open_project`] for a command that names services: an unknown name is a usage error (exit 2)
/// before anything touches the engine.
pub(crate) fn open_project_for(
    settings: &Settings,
    services: &[String],
) -> anyhow::Result<Project> {
    let project = open_project(settings)?;
    if let Some(s) = services
        .iter()
        .find(|s| !project.manifest.services.contains_key(*s))
    {
        return Err(CommandError::usage(format!(
            "no service `{s}` in {}",
            settings.manifest_path.display()
        ))
        .into());
    }
    Ok(project)
}

pub(crate) async fn connect() -> anyhow::Result<DockerEngine> {
    DockerEngine::connect().await.map_err(anyhow::Error::new)
}

pub(crate) async fn observe<E: Engine>(engine: &E, project: &Project) -> anyhow::Result<Observed> {
    let list = engine
        .list_containers(&project.keys.project_filter(project.name()))
        .await?;
    Ok(plan::observe(&list, &project.keys))
}

/// The plan table's rows (SERVICE, ACTION, FROM, IMAGE, CHANGES).
pub(crate) fn plan_rows<'a>(actions: impl IntoIterator<Item = &'a Action>) -> Vec<Vec<String>> {
    actions
        .into_iter()
        .map(|a| {
            let mut changes = a.changes.join("; ");
            if let Some(b) = &a.blocked {
                changes = format!(
                    "BLOCKED: {b}{}",
                    if changes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({changes})")
                    }
                );
            }
            vec![
                a.service.clone(),
                format!("{:?}", a.action).to_lowercase(),
                a.from.clone().unwrap_or("-".into()),
                match (&a.image, a.build) {
                    (Some(i), true) => format!("{i} (build)"),
                    (Some(i), false) => i.clone(),
                    (None, _) => "-".into(),
                },
                changes,
            ]
        })
        .collect()
}

/// One line of an image build's log (`--output json` streams them as events).
#[derive(Serialize)]
struct BuildLine<'a> {
    event: &'static str,
    service: &'a str,
    line: &'a str,
}

/// Build an image if it is missing; log lines go to JSON lines or a spinner; the tail is shown on failure.
pub(crate) async fn build_if_needed<E: Engine>(
    engine: &E,
    settings: &Settings,
    d: &Desired,
    force: bool,
) -> anyhow::Result<bool> {
    if !force && engine.image_id(&d.summary.image).await?.is_some() {
        return Ok(false);
    }
    if let Some(b) = &d.summary.blocked {
        return Err(CommandError::usage(format!("{}: {b}", d.summary.service)).into());
    }
    check_free_disk()?;
    let service = d.summary.service.clone();
    let started = std::time::Instant::now();
    let bar = Bar::spinner(format!("build {service}"));
    let mut on_line = |line: &str| {
        if bar.is_visible() {
            bar.set_message(line.to_string());
        } else {
            output::event(
                settings,
                &BuildLine {
                    event: "build",
                    service: &service,
                    line,
                },
            );
        }
    };
    let tar = d.context.to_tar()?;
    let r = engine
        .build_image(tar, &d.summary.image, &d.image_labels, &mut on_line)
        .await;
    drop(bar);
    match r {
        Ok(_) => {
            output::say(settings)(&format!(
                "{service}: built {} in {:.1} s",
                d.summary.image,
                started.elapsed().as_secs_f64()
            ));
            Ok(true)
        }
        Err(EngineError::Build { message, tail }) => {
            output::diagnostic(&format!(
                "{service}: build failed; last lines of the build log:"
            ));
            for l in tail.iter().rev().take(15).rev() {
                output::diagnostic(&format!("  | {l}"));
            }
            Err(anyhow::anyhow!(
                "{service}: building {} failed: {message}",
                d.summary.image
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuse to build with less than this free where the engine keeps images (a full disk breaks
/// the running services too, not only the build).
const MIN_FREE_BYTES: u64 = 2 << 30;

fn check_free_disk() -> anyhow::Result<()> {
    let root = std::env::var("MCPCTL_DOCKER_ROOT").unwrap_or_else(|_| "/var/lib/docker".into());
    let Ok(st) = nix::sys::statvfs::statvfs(root.as_str()) else {
        return Ok(()); // not visible from here (remote engine): the engine reports its own errors
    };
    let free = st.blocks_available() * st.fragment_size();
    if free < MIN_FREE_BYTES {
        return Err(anyhow::anyhow!(
            "only {} MiB free under {root}; free space first (`mcpctl prune`, `docker image prune`) — building now could fill the disk the running services need",
            free >> 20
        ));
    }
    Ok(())
}

/// What `deploy` and `rollback` report: every step's result and the worst outcome.
#[derive(Serialize)]
pub(crate) struct ReleaseReport<'a> {
    command: &'a str,
    release: u64,
    steps: &'a [StepResult],
    /// Always null: kept so the JSON shape stays what scripts read.
    extra: (),
    outcome: &'static str,
}

impl output::Render for ReleaseReport<'_> {
    fn human(&self) -> String {
        self.steps
            .iter()
            .map(step_line)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn step_line(r: &StepResult) -> String {
    match r.outcome {
        Outcome::Ok => {
            format!(
                "{}: {} → {} ok in {:.1} s{}",
                r.service,
                r.from.as_deref().unwrap_or("(none)"),
                r.to,
                r.duration_ms as f64 / 1000.0,
                r.downtime_ms
                    .map(|d| format!(" (downtime {d} ms)"))
                    .unwrap_or_default()
            ) + &r
                .backups
                .iter()
                .map(|b| format!("\n  backup: {b}"))
                .collect::<String>()
        }
        _ => {
            let mut s = format!("{}: {} FAILED ({})", r.service, r.to, r.outcome.as_str());
            if let Some(c) = &r.failed {
                s.push_str(&format!("\n  failed check: {}: {}", c.name, c.detail));
            }
            if let Some(x) = &r.restored {
                s.push_str(&format!("\n  restored: {x}"));
            }
            if let Some(t) = &r.logs_tail {
                s.push_str("\n  container log (last lines):");
                for l in t.lines() {
                    s.push_str(&format!("\n    | {l}"));
                }
            }
            s
        }
    }
}

/// Report the run and map it to the exit code.
pub(crate) fn finish(
    settings: &Settings,
    command: &str,
    release: u64,
    results: &[StepResult],
) -> anyhow::Result<ExitCode> {
    let worst = results
        .iter()
        .map(|r| r.outcome)
        .find(|o| *o != Outcome::Ok);
    output::emit(
        settings,
        &ReleaseReport {
            command,
            release,
            steps: results,
            extra: (),
            outcome: worst.map(Outcome::as_str).unwrap_or("ok"),
        },
    )?;
    Ok(match worst {
        None => ExitCode::Ok,
        Some(Outcome::GateFailedRestored) => {
            return Err(CommandError::new(ExitCode::GateFailedRestored, format!("{command} release {release}: the health gate failed; the previous revision was restored and verified")).into())
        }
        Some(Outcome::RestoreFailed) => {
            return Err(CommandError::new(ExitCode::GateFailedRestoreFailed, format!("{command} release {release}: the health gate failed AND the restore failed: operator action needed (see `mcpctl status`, `mcpctl logs SERVICE`, runbooks/rollback.md)")).into())
        }
        Some(Outcome::Interrupted) => return Err(CommandError::new(ExitCode::Interrupted, format!("{command} interrupted; the current step was reverted")).into()),
        Some(Outcome::Ok) => ExitCode::Ok,
    })
}

/// Take the engine lock (exit 5 when held), then reconcile under it: containers, edge routes and
/// the ledger agree again after any interrupted run (a stale lock taken over is one; a run that
/// was killed after releasing nothing is another). Release it with [`release_lock`].
pub(crate) async fn take_lock(
    engine: &DockerEngine,
    project: &Project,
    settings: &Settings,
    me: &LockInfo,
    force: bool,
    ledger: &Ledger,
) -> anyhow::Result<Held> {
    let held = match lock::acquire(engine, &project.keys, project.name(), me, force).await? {
        Ok(h) => h,
        Err(holder) => {
            return Err(CommandError::new(
                ExitCode::LockHeld,
                format!(
                    "project `{}` is locked: {}.\nWait for it, or if that run is gone: `mcpctl deploy --force-unlock` (or `rollback --force-unlock`)",
                    project.name(),
                    holder.describe()
                ),
            )
            .into())
        }
    };
    match reconcile_under_lock(engine, project, settings, me, &held, ledger).await {
        Ok(()) => Ok(held),
        Err(e) => {
            lock::release(engine, project.name(), &held).await;
            Err(e)
        }
    }
}

async fn reconcile_under_lock(
    engine: &DockerEngine,
    project: &Project,
    settings: &Settings,
    me: &LockInfo,
    held: &Held,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let say = output::say(settings);
    if let Some(prev) = &held.took_over {
        say(&format!(
            "lock: taking over from a run that is gone ({})",
            prev.describe()
        ));
    }
    let prober = McpProber::for_project(project)?;
    let exec = executor(
        engine,
        project,
        &prober,
        &say,
        Arc::new(AtomicBool::new(false)),
    );
    let admin = crate::edge::container::admin(project);
    let fronts = |s: &str| crate::edge::container::fronts(project, s);
    let edge = project.manifest.edge.enabled.then_some(EdgeRoutes {
        admin: &admin,
        fronts: &fronts,
    });
    let since = held.took_over.as_ref().map(|p| p.started.as_str());
    let done = reconcile::reconcile(&exec, since, edge).await?;
    for line in &done {
        say(&format!("reconcile: {line}"));
    }
    let Some(prev) = &held.took_over else {
        if !done.is_empty() {
            ledger.append(&Entry {
                outcome: "reconciled".into(),
                detail: Some(done.join("; ")),
                ..reconcile_entry(me)
            })?;
        }
        return Ok(());
    };
    // Close the dead run's release in the ledger, so `history` tells what happened to it.
    let observed = observe(engine, project).await?;
    if let Some(n) = reconcile::unfinished_release(observed.max_release, &ledger.read()) {
        ledger.append(&Entry {
            event: "release".into(),
            release: n,
            command: prev.command.clone(),
            who: prev.who.clone(),
            host: prev.host.clone(),
            pid: prev.pid,
            outcome: "interrupted".into(),
            detail: Some(format!(
                "the run died (pid {} on {}); closed by the next run's reconcile",
                prev.pid, prev.host
            )),
            ..reconcile_entry(me)
        })?;
    }
    ledger.append(&Entry {
        outcome: if done.is_empty() {
            "nothing to do".into()
        } else {
            "reconciled".into()
        },
        detail: Some(format!(
            "after interrupted `{}` (pid {}): {}",
            prev.command,
            prev.pid,
            done.join("; ")
        )),
        ..reconcile_entry(me)
    })?;
    Ok(())
}

fn reconcile_entry(me: &LockInfo) -> Entry {
    Entry {
        ts: now_rfc3339(),
        event: "reconcile".into(),
        command: "reconcile".into(),
        who: me.who.clone(),
        host: me.host.clone(),
        pid: me.pid,
        ..Default::default()
    }
}

/// Release the lock this run holds (never another run's).
pub(crate) async fn release_lock(engine: &DockerEngine, project: &Project, held: &Held) {
    lock::release(engine, project.name(), held).await;
}

/// The executor every command that changes what serves uses: the real engine and the MCP gate.
pub(crate) fn executor<'a>(
    engine: &'a DockerEngine,
    project: &'a Project,
    prober: &'a McpProber,
    progress: &'a dyn Fn(&str),
    interrupted: Arc<AtomicBool>,
) -> Executor<'a, DockerEngine, McpProber> {
    Executor {
        engine,
        prober,
        keys: &project.keys,
        project: project.name(),
        progress,
        interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Render;

    fn step(service: &str, outcome: Outcome) -> StepResult {
        StepResult {
            service: service.into(),
            from: Some("r1".into()),
            to: "r2".into(),
            outcome,
            failed: None,
            gate: None,
            logs_tail: None,
            restored: None,
            downtime_ms: None,
            backups: vec![],
            duration_ms: 1500,
        }
    }

    #[test]
    fn a_release_report_keeps_its_json_shape_and_reads_per_step() {
        let mut failed = step("beta", Outcome::GateFailedRestored);
        failed.failed = Some(crate::health::Check {
            name: "tools/list".into(),
            ok: false,
            detail: "timeout".into(),
        });
        failed.restored = Some("r1 (verified)".into());
        failed.logs_tail = Some("boom\n".into());
        let mut ok = step("alpha", Outcome::Ok);
        ok.backups = vec!["alpha.sql".into()];
        let steps = vec![ok, failed];
        let r = ReleaseReport {
            command: "deploy",
            release: 4,
            steps: &steps,
            extra: (),
            outcome: "gate_failed_restored",
        };
        let json = r.json_lines().unwrap();
        assert_eq!(json.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["command", "release", "steps", "extra", "outcome"]);
        assert!(v["extra"].is_null());
        assert_eq!(v["steps"][1]["outcome"], "gate_failed_restored");
        assert_eq!(
            r.human(),
            "alpha: r1 → r2 ok in 1.5 s\n  backup: alpha.sql\n\
             beta: r2 FAILED (gate_failed_restored)\n  failed check: tools/list: timeout\n  \
             restored: r1 (verified)\n  container log (last lines):\n    | boom"
        );
    }
}
