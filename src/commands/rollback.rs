//! `mcpctl rollback [SERVICE] [--to N]`: restore retained revisions — no rebuild, the recorded
//! config from the revision's own labels, the same gate. `--to N` restores the state after
//! release N; without it, one service goes back one revision, or (no SERVICE) every service goes
//! back to the release before the latest. A rollback is a release of its own.

use clap::Args;

use super::common::{
    connect, executor, finish, observe, open_project, release_lock, runtime, take_lock,
};
use crate::engine::Engine;
use crate::error::{CommandError, ExitCode};
use crate::manifest::Role;
use crate::output::{self, confirm};
use crate::rollout::executor::{GateConfig, StepResult};
use crate::rollout::ledger::Ledger;
use crate::rollout::lock::LockInfo;
use crate::rollout::plan::{self, Revision};
use crate::rollout::{release, secrets, Project};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Only this service (default: every service).
    pub service: Option<String>,
    /// Restore the state after release N (see `mcpctl history`).
    #[arg(long = "to", value_name = "N")]
    pub to: Option<u64>,
    /// Why: recorded on the lock and in the ledger.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Remove a lock left by another run first.
    #[arg(long)]
    pub force_unlock: bool,
    /// Re-key: where a secret value a revision was deployed with is gone (state directory lost
    /// or pruned), mount the current value instead of refusing.
    #[arg(long)]
    pub current_secrets: bool,
}

pub fn run(settings: &Settings, args: &RollbackArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    runtime()?.block_on(rollback(settings, args, &project))
}

async fn rollback(
    settings: &Settings,
    args: &RollbackArgs,
    project: &Project,
) -> anyhow::Result<ExitCode> {
    let engine = connect().await?;
    let ledger = Ledger::new(&project.state_dir);
    let cmd = format!(
        "rollback{}{}",
        args.service
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default(),
        args.to.map(|n| format!(" --to {n}")).unwrap_or_default()
    );
    let me = LockInfo::current(&cmd, args.message.as_deref());
    let observed = observe(&engine, project).await?;
    if let Some(s) = &args.service {
        if !observed.services.contains_key(s) {
            return Err(CommandError::usage(format!(
                "no revisions of `{s}` exist in project `{}`",
                project.name()
            ))
            .into());
        }
    }
    let planned = plan::rollback_targets(&observed, args.service.as_deref(), args.to);
    if planned.is_empty() {
        output::human(settings, "nothing to roll back: the requested revisions are already serving (or none is retained)");
        return Ok(ExitCode::Ok);
    }
    let what: Vec<String> = planned
        .iter()
        .map(|t| {
            format!(
                "{} {} → {}",
                t.service,
                t.current
                    .as_ref()
                    .map(Revision::name)
                    .unwrap_or("(none)".into()),
                t.target.name()
            )
        })
        .collect();
    confirm(settings, &format!("roll back: {}?", what.join(", ")))?;
    let held = take_lock(&engine, project, settings, &me, args.force_unlock, &ledger).await?;
    let interrupted = release::watch_signals();
    let r = apply(settings, args, project, &engine, &ledger, &me, interrupted).await;
    release_lock(&engine, project, &held).await;
    let (release, results) = r?;
    finish(settings, "rollback", release, &results)
}

async fn apply(
    settings: &Settings,
    args: &RollbackArgs,
    project: &Project,
    engine: &crate::engine::docker::DockerEngine,
    ledger: &Ledger,
    me: &LockInfo,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(u64, Vec<StepResult>)> {
    let say = output::say(settings);
    // Re-read under the lock: a reconcile may have changed what serves.
    let observed = observe(engine, project).await?;
    let release = release::next_release(observed.max_release, ledger);
    let mut steps = Vec::new();
    for t in plan::rollback_targets(&observed, args.service.as_deref(), args.to) {
        if engine.image_id(&t.target.image).await?.is_none() {
            return Err(anyhow::anyhow!(
                "{}: the image {} of {} is gone (pruned?); restore needs a rebuild: check out that manifest and `mcpctl deploy`",
                t.service,
                t.target.image,
                t.target.name()
            ));
        }
        let (mounts, resolved) = secret_mounts(project, &t, args.current_secrets)?;
        let mut p = plan::restore_step(project, release, &t, mounts.binds, resolved)
            .map_err(|e| anyhow::anyhow!(e))?;
        // The fingerprints of the values it mounts (not the recorded ones where re-keyed).
        p.step
            .spec
            .labels
            .insert(project.keys.secrets_hmac(), mounts.label);
        for name in &mounts.rekeyed {
            say(&format!("{}: secret {name}: the recorded value is gone; mounting the current one (--current-secrets)", t.service));
        }
        say(&format!(
            "{}: restoring {} (recorded config, image {}) as {}",
            t.service,
            t.target.name(),
            p.step.spec.image,
            p.step.revision
        ));
        steps.push(p);
    }
    let edge = super::edge::prepare_edge(engine, project, &say).await?;
    let prober = crate::rollout::executor::McpProber::for_project(project)?;
    let exec = executor(engine, project, &prober, &say, interrupted);
    let who = release::Run {
        ledger,
        me,
        command: "rollback",
        message: args.message.as_deref(),
        detail: args.to.map(|n| format!("to the state after release {n}")),
    };
    let done = release::run(
        &exec,
        edge.as_ref(),
        project,
        &who,
        release,
        &steps,
        &release::NoHooks,
    )
    .await?;
    Ok((release, done.results))
}

/// The secret mounts of the revision to restore (the values it was deployed with: see
/// [`secrets::Restore`]) with the label that records them, and the current values (written too).
fn secret_mounts(
    project: &Project,
    t: &plan::RollbackTarget,
    use_current: bool,
) -> anyhow::Result<(secrets::Restored, Vec<secrets::Resolved>)> {
    let service = &t.service;
    let recorded = t.target.spec.as_ref().map_or(&[][..], |s| &s.binds[..]);
    let usage = |e: anyhow::Error| CommandError::usage(format!("{e:#}"));
    let key = secrets::install_key(&project.state_dir).map_err(usage)?;
    let svc = project.manifest.services.get(service);
    let current = match svc {
        Some(_) => crate::auth::current_secrets(
            &project.manifest,
            service,
            &project.manifest_dir,
            &project.state_dir,
            &key,
        ),
        None => Ok(vec![]),
    };
    let role = GateConfig::of(&t.target, &project.keys)
        .map(|g| g.role)
        .or(svc.map(|s| s.role))
        .unwrap_or(Role::Service);
    let restored = secrets::Restore {
        state_dir: &project.state_dir,
        service,
        revision: &t.target.name(),
        role,
        key: &key,
        current: current.as_deref().map_err(|e| format!("{e:#}")),
        use_current,
    }
    .binds(recorded, &t.target.secrets_label)
    .map_err(usage)?;
    Ok((restored, current.unwrap_or_default()))
}
