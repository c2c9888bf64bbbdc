//! `mcpctl deploy [SERVICE...]`: plan, confirm, take the engine lock, then for each changed service
//! in dependency order: build if needed → candidate → MCP gate → switch → post-switch gate; any
//! failure restores the previous revision and stops the rollout (exit 3, or 4 if the restore
//! failed). Also the shared plumbing of the rollout commands (engine, lock, ledger, reports).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use crate::cli::OutputFormat;
use crate::engine::context::DigestCache;
use crate::engine::docker::DockerEngine;
use crate::engine::{Engine, EngineError};
use crate::error::{CommandError, ExitCode};
use crate::manifest::Role;
use crate::output;
use crate::rollout::desired::{self, Desired};
use crate::rollout::executor::{Executor, McpProber, Outcome, Step, StepResult};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{self, Acquired, LockInfo};
use crate::rollout::plan::{self, ActionKind, Observed, Plan};
use crate::rollout::{reconcile, revision_name, secrets, Project};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Only these services (default: every service in the manifest).
    pub services: Vec<String>,
    /// Show the plan and what would be built; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Allow replacing stateful services (databases) in place, with the downtime stated.
    #[arg(long)]
    pub allow_downtime: bool,
    /// Why: recorded on the lock and in the ledger.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Remove a lock left by another run first (check that it is really gone).
    #[arg(long)]
    pub force_unlock: bool,
}

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

/// Take the engine lock (exit 5 when held); after an interrupted run, reconcile first.
pub(crate) async fn take_lock<E: Engine>(
    engine: &E,
    project: &Project,
    settings: &Settings,
    me: &LockInfo,
    force: bool,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    match lock::acquire(engine, &project.keys, project.name(), me, force).await? {
        Ok(Acquired::Fresh) => Ok(()),
        Ok(Acquired::TookOver(prev)) => {
            let say = progress_printer(settings);
            say(&format!("lock: taking over from a run that is gone ({})", prev.describe()));
            let interrupted = Arc::new(AtomicBool::new(false));
            let exec = Executor {
                engine,
                prober: &McpProber,
                keys: &project.keys,
                project: project.name(),
                progress: &say,
                interrupted,
            };
            let done = reconcile::reconcile(&exec, Some(&prev.started)).await?;
            for line in &done {
                say(&format!("reconcile: {line}"));
            }
            ledger.append(&Entry {
                ts: now_rfc3339(),
                event: "reconcile".into(),
                command: "reconcile".into(),
                who: me.who.clone(),
                host: me.host.clone(),
                pid: me.pid,
                outcome: if done.is_empty() { "nothing to do".into() } else { "reconciled".into() },
                detail: Some(format!("after interrupted `{}` (pid {}): {}", prev.command, prev.pid, done.join("; "))),
                ..Default::default()
            })?;
            Ok(())
        }
        Err(holder) => Err(CommandError::new(
            ExitCode::LockHeld,
            format!(
                "project `{}` is locked: {}.\nWait for it, or if that run is gone: `mcpctl deploy --force-unlock` (or `rollback --force-unlock`)",
                project.name(),
                holder.describe()
            ),
        )
        .into()),
    }
}

/// Spawn the Ctrl-C watcher: the first Ctrl-C sets the flag (the current step finishes or reverts).
pub(crate) fn watch_ctrl_c() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.store(true, Ordering::SeqCst);
        }
    });
    flag
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

/// Network, named volumes and secret files a service's containers need.
pub(crate) async fn prepare<E: Engine>(
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
    Ok(())
}

/// Is a host port free? (Bind and release; the engine's proxy would hold it otherwise.)
fn port_free(ip: std::net::IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind((ip, port)).is_ok()
}

pub(crate) fn step_entry(
    me: &LockInfo,
    command: &str,
    release: u64,
    r: &StepResult,
    message: Option<&str>,
) -> Entry {
    Entry {
        ts: now_rfc3339(),
        event: "step".into(),
        release,
        command: command.into(),
        who: me.who.clone(),
        host: me.host.clone(),
        pid: me.pid,
        message: message.map(str::to_string),
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
        services: vec![],
    }
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

pub fn run(settings: &Settings, args: &DeployArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(deploy(settings, args, &project))
}

async fn deploy(
    settings: &Settings,
    args: &DeployArgs,
    project: &Project,
) -> anyhow::Result<ExitCode> {
    let engine = connect().await?;
    let cache = DigestCache::load(project.state_dir.join("cache/digests.json"));
    let ledger = Ledger::new(&project.state_dir);
    let me = LockInfo::current(
        format!("deploy {}", args.services.join(" ")).trim(),
        args.message.as_deref(),
    );

    let compute_plan = || async {
        let desired = desired::compute(&engine, project, &[], &cache).await?;
        let observed = observe(&engine, project).await?;
        let summaries: Vec<_> = desired.iter().map(|d| d.summary.clone()).collect();
        let order = desired::dependency_order(&summaries);
        let ordered: Vec<_> = order
            .iter()
            .filter_map(|n| summaries.iter().find(|s| &s.service == n).cloned())
            .collect();
        let plan = plan::diff(&ordered, &observed);
        anyhow::Ok((desired, observed, plan))
    };
    let (_, _, plan) = compute_plan().await?;
    let wanted = |s: &str| args.services.is_empty() || args.services.iter().any(|x| x == s);
    let changed: Vec<_> = plan
        .changed()
        .filter(|a| wanted(&a.service))
        .cloned()
        .collect();

    // Refusals that change nothing (exit 2).
    let mut problems = Vec::new();
    for a in &changed {
        if let Some(b) = &a.blocked {
            problems.push(format!("{}: {b}", a.service));
        }
        let svc = &project.manifest.services[&a.service];
        if svc.stateful && a.action == ActionKind::Update && !args.allow_downtime {
            problems.push(format!(
                "{}: stateful service (its volume is never used by two containers): replacing it means downtime; \
                 pass --allow-downtime (take a backup first: runbooks/deploy.md)",
                a.service
            ));
        }
    }
    if !problems.is_empty() {
        return Err(CommandError::usage(format!(
            "nothing was changed:\n  {}",
            problems.join("\n  ")
        ))
        .into());
    }

    if project.manifest.observability.exporter && !args.dry_run {
        let ensured = crate::rollout::exporter::ensure(&engine, project, &cache).await?;
        if ensured != crate::rollout::exporter::Ensured::Running {
            output::human(
                settings,
                &format!(
                    "exporter {}: {}",
                    crate::rollout::exporter::container_name(project.name()),
                    if ensured == crate::rollout::exporter::Ensured::Created {
                        "started"
                    } else {
                        "replaced (new mcpctl)"
                    }
                ),
            );
        }
    }

    if args.dry_run || changed.is_empty() {
        if changed.is_empty() {
            // An interrupted earlier run may still hold a stale lock: recover even when nothing changed.
            if let Some(h) = lock::holder(&engine, &project.keys, project.name()).await? {
                if h.is_stale() || args.force_unlock {
                    take_lock(&engine, project, settings, &me, args.force_unlock, &ledger).await?;
                    lock::release(&engine, project.name()).await;
                }
            }
        }
        match settings.output {
            OutputFormat::Json => {
                output::json_line(&json!({"dry_run": args.dry_run, "plan": plan}))
            }
            OutputFormat::Human => {
                let relevant: Plan = Plan {
                    actions: plan
                        .actions
                        .iter()
                        .filter(|a| wanted(&a.service))
                        .cloned()
                        .collect(),
                };
                output::human(
                    settings,
                    &output::table(
                        &["SERVICE", "ACTION", "FROM", "IMAGE", "CHANGES"],
                        plan_rows(&relevant),
                    ),
                );
                output::human(
                    settings,
                    if changed.is_empty() {
                        "nothing to deploy"
                    } else {
                        "dry run: nothing was changed"
                    },
                );
            }
        }
        return Ok(ExitCode::Ok);
    }

    confirm(
        settings,
        &format!(
            "deploy {} service(s): {}?",
            changed.len(),
            changed
                .iter()
                .map(|a| a.service.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    take_lock(&engine, project, settings, &me, args.force_unlock, &ledger).await?;
    let interrupted = watch_ctrl_c();
    let result = apply(
        settings,
        args,
        project,
        &engine,
        &ledger,
        &me,
        interrupted,
        &compute_plan,
    )
    .await;
    lock::release(&engine, project.name()).await;
    let (release, results) = result?;
    finish(settings, "deploy", release, &results, json!(null))
}

#[allow(clippy::too_many_arguments)]
async fn apply<F, Fut>(
    settings: &Settings,
    args: &DeployArgs,
    project: &Project,
    engine: &DockerEngine,
    ledger: &Ledger,
    me: &LockInfo,
    interrupted: Arc<AtomicBool>,
    compute_plan: &F,
) -> anyhow::Result<(u64, Vec<StepResult>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<Desired>, Observed, Plan)>>,
{
    let say = progress_printer(settings);
    // Re-plan under the lock: a reconcile or another run may have changed things.
    let (desired, observed, plan) = compute_plan().await?;
    let wanted = |s: &str| args.services.is_empty() || args.services.iter().any(|x| x == s);
    let release = observed.max_release.max(ledger.max_release()) + 1;
    let started = std::time::Instant::now();

    // Ports: a free port, or one held by this service's own serving revision.
    for a in plan.changed().filter(|a| wanted(&a.service)) {
        let d = desired
            .iter()
            .find(|d| d.summary.service == a.service)
            .expect("planned from desired");
        if let Some(p) = d
            .summary
            .spec
            .port
            .filter(|_| !crate::edge::container::fronts(project, &a.service))
        {
            let ours = observed
                .services
                .values()
                .filter_map(|o| o.serving.as_ref())
                .any(|s| s.ports.values().any(|h| *h == p.host_port));
            if !ours && !port_free(p.host_ip, p.host_port) {
                return Err(CommandError::usage(format!(
                    "{}: port {}:{} is in use by another process (not a revision of this project); free it or change `port` in the manifest. Nothing was changed.",
                    a.service, p.host_ip, p.host_port
                ))
                .into());
            }
        }
    }

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
    for a in plan.changed().filter(|a| wanted(&a.service)) {
        let d = desired
            .iter()
            .find(|d| d.summary.service == a.service)
            .expect("planned from desired");
        services.push(a.service.clone());
        if let Err(e) = build_if_needed(engine, settings, d, false).await {
            ledger.append(&Entry {
                ts: now_rfc3339(),
                event: "step".into(),
                release,
                command: "deploy".into(),
                who: me.who.clone(),
                host: me.host.clone(),
                pid: me.pid,
                message: args.message.clone(),
                service: Some(a.service.clone()),
                from: a.from.clone(),
                outcome: "build_failed".into(),
                detail: Some(format!("{e:#}")),
                ..Default::default()
            })?;
            return Err(e.context("the rollout stopped before changing this service"));
        }
        prepare(engine, project, &a.service, d.role, &d.secrets).await?;
        let mut spec = d.summary.spec.clone();
        spec.name = project.container_name(&a.service, release);
        spec.labels
            .insert(project.keys.release(), release.to_string());
        let step = Step {
            service: a.service.clone(),
            spec,
            revision: revision_name(release, &d.summary.config_hash),
            health: d.health.clone(),
            transport: d.transport,
            role: d.role,
            stateful: d.stateful,
            previous: observed
                .services
                .get(&a.service)
                .and_then(|o| o.serving.clone()),
            retain: project.manifest.retain_revisions,
            backup_dir: Some(project.state_dir.join("backups").join(&a.service)),
        };
        let prev_tools: Option<BTreeMap<String, String>> =
            ledger.last_gate(&a.service).map(|g| g.tool_hashes);
        let r = super::edge::run_step(
            &exec,
            edge.as_ref(),
            project,
            &step,
            prev_tools.as_ref(),
            ledger,
            (me, "deploy", release),
        )
        .await?;
        if let Some(drift) = r
            .gate
            .as_ref()
            .and_then(|g| g.drift.as_ref())
            .filter(|d| !d.is_empty())
        {
            say(&format!(
                "{}: tool schema drift against the previous revision: added [{}] removed [{}] changed [{}]",
                a.service,
                drift.added.join(", "),
                drift.removed.join(", "),
                drift.changed.join(", ")
            ));
        }
        ledger.append(&step_entry(
            me,
            "deploy",
            release,
            &r,
            args.message.as_deref(),
        ))?;
        let stop = r.outcome != Outcome::Ok;
        results.push(r);
        if stop {
            break;
        }
        if interrupted.load(Ordering::SeqCst) {
            say("interrupted: the current step finished; the rollout stops here");
            break;
        }
    }
    let outcome = results
        .iter()
        .map(|r| r.outcome)
        .find(|o| *o != Outcome::Ok)
        .unwrap_or(if interrupted.load(Ordering::SeqCst) {
            Outcome::Interrupted
        } else {
            Outcome::Ok
        });
    ledger.append(&Entry {
        ts: now_rfc3339(),
        event: "release".into(),
        release,
        command: "deploy".into(),
        who: me.who.clone(),
        host: me.host.clone(),
        pid: me.pid,
        message: args.message.clone(),
        outcome: outcome.as_str().into(),
        duration_ms: started.elapsed().as_millis() as u64,
        services,
        ..Default::default()
    })?;
    if interrupted.load(Ordering::SeqCst) && results.iter().all(|r| r.outcome == Outcome::Ok) {
        return Err(CommandError::new(
            ExitCode::Interrupted,
            "deploy interrupted after a completed step; later services were not changed",
        )
        .into());
    }
    Ok((release, results))
}
