//! What every command that drives the engine shares: open the project, connect, confirm, take
//! the lock (and reconcile under it), observe, build an image, report a release. Commands parse,
//! confirm and print; the rollout engine (`crate::rollout`) decides and acts.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::json;

use crate::cli::OutputFormat;
use crate::engine::docker::DockerEngine;
use crate::engine::{Engine, EngineError};
use crate::error::{CommandError, ExitCode};
use crate::output;
use crate::rollout::desired::Desired;
use crate::rollout::executor::{Executor, McpProber, Outcome, StepResult};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{self, Held, LockInfo};
use crate::rollout::plan::{self, Observed, Plan};
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

pub(crate) fn progress_printer(settings: &Settings) -> impl Fn(&str) + '_ {
    move |line: &str| {
        if !settings.quiet {
            output::diagnostic(line);
        }
    }
}

/// Ask for confirmation, or refuse without a TTY and `--yes`.
pub(crate) fn confirm(settings: &Settings, question: &str) -> anyhow::Result<()> {
    if settings.yes {
        return Ok(());
    }
    if !settings.interactive {
        return Err(CommandError::usage(format!(
            "{question}: refusing without confirmation (no terminal to ask on); pass --yes"
        ))
        .into());
    }
    let ok = dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()?;
    if ok {
        Ok(())
    } else {
        Err(CommandError::usage("cancelled; nothing was changed").into())
    }
}

pub(crate) async fn observe<E: Engine>(engine: &E, project: &Project) -> anyhow::Result<Observed> {
    let list = engine
        .list_containers(&project.keys.project_filter(project.name()))
        .await?;
    Ok(plan::observe(&list, &project.keys))
}

pub(crate) fn plan_rows(plan: &Plan) -> Vec<Vec<String>> {
    plan.actions
        .iter()
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
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && settings.output == OutputFormat::Human
        && !settings.quiet;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_prefix(format!("build {service}"));
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix}: {wide_msg}")
                .expect("static template"),
        );
        b.enable_steady_tick(std::time::Duration::from_millis(120));
        b
    });
    let json = settings.output == OutputFormat::Json;
    let mut on_line = |line: &str| {
        if let Some(b) = &bar {
            b.set_message(line.to_string());
        } else if json {
            output::json_line(&json!({"event": "build", "service": service, "line": line}));
        }
    };
    let tar = d.context.to_tar()?;
    let r = engine
        .build_image(tar, &d.summary.image, &d.image_labels, &mut on_line)
        .await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match r {
        Ok(_) => {
            progress_printer(settings)(&format!(
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
    let Ok(c) = std::ffi::CString::new(root.clone()) else {
        return Ok(());
    };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(()); // not visible from here (remote engine): the engine reports its own errors
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    if free < MIN_FREE_BYTES {
        return Err(anyhow::anyhow!(
            "only {} MiB free under {root}; free space first (`mcpctl prune`, `docker image prune`) — building now could fill the disk the running services need",
            free >> 20
        ));
    }
    Ok(())
}

/// Report the run and map it to the exit code.
pub(crate) fn finish(
    settings: &Settings,
    command: &str,
    release: u64,
    results: &[StepResult],
    extra: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let worst = results
        .iter()
        .map(|r| r.outcome)
        .find(|o| *o != Outcome::Ok);
    match settings.output {
        OutputFormat::Json => output::json_line(&json!({
            "command": command, "release": release, "steps": results, "extra": extra,
            "outcome": worst.map(Outcome::as_str).unwrap_or("ok"),
        })),
        OutputFormat::Human => {
            for r in results {
                let line = match r.outcome {
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
                        let mut s =
                            format!("{}: {} FAILED ({})", r.service, r.to, r.outcome.as_str());
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
                };
                output::human(settings, &line);
            }
        }
    }
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
    let say = progress_printer(settings);
    if let Some(prev) = &held.took_over {
        say(&format!(
            "lock: taking over from a run that is gone ({})",
            prev.describe()
        ));
    }
    let exec = Executor {
        engine,
        prober: &McpProber,
        keys: &project.keys,
        project: project.name(),
        progress: &say,
        interrupted: Arc::new(AtomicBool::new(false)),
    };
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
