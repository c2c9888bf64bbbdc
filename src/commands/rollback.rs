//! `mcpctl rollback [SERVICE] [--to N]`: restore retained revisions — no rebuild, the recorded
//! config from the revision's own labels, the same gate. `--to N` restores the state after
//! release N; without it, one service goes back one revision, or (no SERVICE) every service goes
//! back to the release before the latest. A rollback is a release of its own.

use std::sync::atomic::Ordering;

use clap::Args;
use serde_json::json;

use super::deploy::{
    confirm, connect, finish, observe, open_project, prepare, progress_printer, runtime,
    step_entry, take_lock, watch_ctrl_c,
};
use crate::engine::{ContainerSpec, Engine};
use crate::error::{CommandError, ExitCode};
use crate::manifest::{Role, Transport};
use crate::rollout::executor::{Executor, GateConfig, McpProber, Outcome, Step};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{self, LockInfo};
use crate::rollout::plan::{Observed, Revision};
use crate::rollout::{revision_name, secrets, Project};
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
}

/// The revision of each service to restore, from labels alone.
pub fn targets(
    observed: &Observed,
    service: Option<&str>,
    to: Option<u64>,
) -> Vec<(String, Revision, Option<Revision>)> {
    let latest = observed
        .services
        .values()
        .filter_map(|o| o.serving.as_ref())
        .map(|s| s.release)
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for (name, o) in &observed.services {
        if service.is_some_and(|s| s != name) {
            continue;
        }
        let serving = o.serving.clone();
        let all = o.serving.iter().chain(o.retained.iter());
        let target = match (to, service) {
            (Some(n), _) => all.filter(|r| r.release <= n).max_by_key(|r| r.release),
            (None, Some(_)) => {
                let cur = serving.as_ref().map(|s| s.release).unwrap_or(u64::MAX);
                o.retained
                    .iter()
                    .filter(|r| r.release < cur)
                    .max_by_key(|r| r.release)
            }
            (None, None) => all.filter(|r| r.release < latest).max_by_key(|r| r.release),
        };
        if let Some(t) = target {
            if serving.as_ref().map(|s| &s.container) != Some(&t.container) {
                out.push((name.clone(), t.clone(), serving));
            }
        }
    }
    out
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
    let planned = targets(&observed, args.service.as_deref(), args.to);
    if planned.is_empty() {
        crate::output::human(settings, "nothing to roll back: the requested revisions are already serving (or none is retained)");
        return Ok(ExitCode::Ok);
    }
    let what: Vec<String> = planned
        .iter()
        .map(|(s, t, cur)| {
            format!(
                "{s} {} → {}",
                cur.as_ref().map(Revision::name).unwrap_or("(none)".into()),
                t.name()
            )
        })
        .collect();
    confirm(settings, &format!("roll back: {}?", what.join(", ")))?;
    take_lock(&engine, project, settings, &me, args.force_unlock, &ledger).await?;
    let interrupted = watch_ctrl_c();
    let r = apply(settings, args, project, &engine, &ledger, &me, interrupted).await;
    lock::release(&engine, project.name()).await;
    let (release, results) = r?;
    finish(settings, "rollback", release, &results, json!(null))
}

async fn apply(
    settings: &Settings,
    args: &RollbackArgs,
    project: &Project,
    engine: &crate::engine::docker::DockerEngine,
    ledger: &Ledger,
    me: &LockInfo,
    interrupted: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(u64, Vec<crate::rollout::executor::StepResult>)> {
    let say = progress_printer(settings);
    let observed = observe(engine, project).await?;
    let planned = targets(&observed, args.service.as_deref(), args.to);
    let release = observed.max_release.max(ledger.max_release()) + 1;
    let started = std::time::Instant::now();
    let edge = super::edge::prepare_edge(engine, project, &say).await?;
    let exec = Executor {
        engine,
        prober: &McpProber,
        keys: &project.keys,
        project: project.name(),
        progress: &say,
        interrupted: interrupted.clone(),
    };
    let mut results = Vec::new();
    let mut services = Vec::new();
    for (service, target, current) in planned {
        services.push(service.clone());
        let Some(recorded) = target.spec.clone() else {
            return Err(anyhow::anyhow!(
                "{service}: {} carries no recorded config (label {}); it cannot be restored",
                target.name(),
                project.keys.spec()
            ));
        };
        if engine.image_id(&recorded.image).await?.is_none() {
            return Err(anyhow::anyhow!(
                "{service}: the image {} of {} is gone (pruned?); restore needs a rebuild: check out that manifest and `mcpctl deploy`",
                recorded.image,
                target.name()
            ));
        }
        let gate = GateConfig::of(&target, &project.keys);
        let (role, health, transport) = match (&gate, project.manifest.services.get(&service)) {
            (Some(g), _) => (g.role, g.health.clone(), g.transport),
            (None, Some(svc)) => (
                svc.role,
                svc.health.clone(),
                svc.transport.unwrap_or(project.manifest.litellm.transport),
            ),
            (None, None) => (Role::Service, Default::default(), Transport::Sse),
        };
        // Secrets are files in the state directory, which may be gone: resolve them again.
        let resolved = match project.manifest.services.get(&service) {
            Some(_) => {
                let key = secrets::install_key(&project.state_dir)
                    .map_err(|e| CommandError::usage(e.to_string()))?;
                secrets::resolve(&project.manifest, &service, &project.manifest_dir, &key)
                    .map_err(|e| CommandError::usage(e.to_string()))?
            }
            None => vec![],
        };
        let needed: Vec<String> = recorded
            .binds
            .iter()
            .filter(|b| b.target.starts_with("/run/secrets/"))
            .map(|b| b.target["/run/secrets/".len()..].to_string())
            .collect();
        for n in &needed {
            if !resolved.iter().any(|r| &r.name == n) {
                return Err(CommandError::usage(format!(
                    "{service}: {} needs secret `{n}`, which the manifest no longer provides",
                    target.name()
                ))
                .into());
            }
        }
        prepare(engine, project, &service, role, &resolved).await?;
        // Rebind to this state directory (it may have moved), keep the rest as recorded.
        let mut spec: ContainerSpec = recorded;
        let fresh = secrets::binds(&project.state_dir, &service, &resolved);
        spec.binds
            .retain(|b| !b.target.starts_with("/run/secrets/"));
        spec.binds.extend(
            fresh
                .into_iter()
                .filter(|b| needed.iter().any(|n| b.target.ends_with(&format!("/{n}")))),
        );
        spec.name = project.container_name(&service, release);
        spec.labels = target.labels.clone();
        spec.labels.remove(&project.keys.spec());
        spec.labels.remove(&project.keys.gate());
        spec.labels.remove(&project.keys.phase());
        spec.labels
            .insert(project.keys.release(), release.to_string());
        let step = Step {
            service: service.clone(),
            spec,
            revision: revision_name(release, &target.config_hash),
            health,
            transport,
            role,
            stateful: project
                .manifest
                .services
                .get(&service)
                .is_some_and(|s| s.stateful),
            previous: current,
            retain: project.manifest.retain_revisions,
            backup_dir: Some(project.state_dir.join("backups").join(&service)),
        };
        say(&format!(
            "{service}: restoring {} (recorded config, image {}) as {}",
            target.name(),
            step.spec.image,
            step.revision
        ));
        let r = super::edge::run_step(
            &exec,
            edge.as_ref(),
            project,
            &step,
            None,
            ledger,
            (me, "rollback", release),
        )
        .await?;
        let mut entry = step_entry(me, "rollback", release, &r, args.message.as_deref());
        entry.detail = Some(format!(
            "restores {}{}",
            target.name(),
            entry.detail.map(|d| format!("; {d}")).unwrap_or_default()
        ));
        ledger.append(&entry)?;
        let stop = r.outcome != Outcome::Ok;
        results.push(r);
        if stop || interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
    let outcome = results
        .iter()
        .map(|r| r.outcome)
        .find(|o| *o != Outcome::Ok)
        .unwrap_or(Outcome::Ok);
    ledger.append(&Entry {
        ts: now_rfc3339(),
        event: "release".into(),
        release,
        command: "rollback".into(),
        who: me.who.clone(),
        host: me.host.clone(),
        pid: me.pid,
        message: args.message.clone(),
        outcome: outcome.as_str().into(),
        detail: args.to.map(|n| format!("to the state after release {n}")),
        duration_ms: started.elapsed().as_millis() as u64,
        services,
        ..Default::default()
    })?;
    Ok((release, results))
}
