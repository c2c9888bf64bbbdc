//! `mcpctl deploy [SERVICE...]`: plan, confirm, take the engine lock, then for each changed service
//! in dependency order: build if needed → candidate → MCP gate → switch → post-switch gate; any
//! failure restores the previous revision and stops the rollout (exit 3, or 4 if the restore
//! failed). The steps come from `rollout::plan::deploy_steps`; `rollout::release` runs them.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::common::{
    build_if_needed, connect, executor, finish, observe, open_project_for, plan_rows, release_lock,
    runtime, take_lock,
};
use crate::engine::context::DigestCache;
use crate::engine::docker::DockerEngine;
use crate::error::{CommandError, ExitCode};
use crate::output::{self, confirm, progress::Bar, Render};
use crate::rollout::desired::{self, Desired};
use crate::rollout::executor::{Outcome, StepResult};
use crate::rollout::ledger::Ledger;
use crate::rollout::lock::{self, LockInfo};
use crate::rollout::plan::{self, ActionKind, Observed, Plan};
use crate::rollout::{release, Project};
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

/// Is a host port free? (Bind and release; the engine's proxy would hold it otherwise.)
fn port_free(ip: std::net::IpAddr, port: u16) -> bool {
    std::net::TcpListener::bind((ip, port)).is_ok()
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

    if args.dry_run {
        print_plan(settings, args, &plan, "dry run: nothing was changed")?;
        return Ok(ExitCode::Ok);
    }
    // A run killed earlier may have left a stale lock and a stack that is not what `plan` shows
    // (an unrouted revision): recover under the lock even when nothing seems to change, then plan
    // again from what is true.
    let stale = lock::holder(&engine, &project.keys, project.name())
        .await?
        .is_some_and(|h| h.is_stale() || args.force_unlock);
    if changed.is_empty() && !stale {
        print_plan(settings, args, &plan, "nothing to deploy")?;
        return Ok(ExitCode::Ok);
    }
    if !changed.is_empty() {
        confirm(settings, &confirm_question(changed.iter()))?;
    }
    let held = take_lock(&engine, project, settings, &me, args.force_unlock, &ledger).await?;
    let interrupted = release::watch_signals();
    let locked = UnderLock {
        project,
        engine: &engine,
        ledger: &ledger,
        me: &me,
        interrupted,
    };
    let result = apply(settings, args, locked, &compute_plan, !changed.is_empty()).await;
    release_lock(&engine, project, &held).await;
    match result? {
        Ok((release, results)) => finish(settings, "deploy", release, &results),
        Err(plan) => {
            print_plan(settings, args, &plan, "nothing to deploy")?;
            Ok(ExitCode::Ok)
        }
    }
}

fn confirm_question<'a>(changed: impl Iterator<Item = &'a plan::Action>) -> String {
    let names: Vec<&str> = changed.map(|a| a.service.as_str()).collect();
    format!("deploy {} service(s): {}?", names.len(), names.join(", "))
}

/// The plan deploy would apply (a dry run, or nothing to do).
#[derive(Serialize)]
struct PlanReport<'a> {
    dry_run: bool,
    plan: &'a Plan,
    /// The services asked for (empty: all); the table shows only those.
    #[serde(skip)]
    services: &'a [String],
    #[serde(skip)]
    note: &'a str,
}

impl Render for PlanReport<'_> {
    fn human(&self) -> String {
        let wanted = |s: &str| self.services.is_empty() || self.services.iter().any(|x| x == s);
        let relevant = self.plan.actions.iter().filter(|a| wanted(&a.service));
        format!(
            "{}\n{}",
            output::table(
                &["SERVICE", "ACTION", "FROM", "IMAGE", "CHANGES"],
                plan_rows(relevant),
            ),
            self.note
        )
    }
}

fn print_plan(
    settings: &Settings,
    args: &DeployArgs,
    plan: &Plan,
    note: &str,
) -> anyhow::Result<()> {
    output::emit(
        settings,
        &PlanReport {
            dry_run: args.dry_run,
            plan,
            services: &args.services,
            note,
        },
    )
}

/// What [`apply`] works with while deploy holds the engine lock.
struct UnderLock<'a> {
    project: &'a Project,
    engine: &'a DockerEngine,
    ledger: &'a Ledger,
    /// Who holds the lock (recorded in the ledger).
    me: &'a LockInfo,
    /// Set by a signal: the rollout stops after the current step.
    interrupted: Arc<AtomicBool>,
}

async fn apply<F, Fut>(
    settings: &Settings,
    args: &DeployArgs,
    locked: UnderLock<'_>,
    compute_plan: &F,
    confirmed: bool,
) -> anyhow::Result<Result<(u64, Vec<StepResult>), Plan>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<Desired>, Observed, Plan)>>,
{
    let UnderLock {
        project,
        engine,
        ledger,
        me,
        interrupted,
    } = locked;
    let say = output::say(settings);
    // Re-plan under the lock: a reconcile or another run may have changed things.
    let (desired, observed, plan) = compute_plan().await?;
    let wanted = |s: &str| args.services.is_empty() || args.services.iter().any(|x| x == s);
    let release = release::next_release(observed.max_release, ledger);
    if plan.changed().all(|a| !wanted(&a.service)) {
        return Ok(Err(plan));
    }
    if !confirmed {
        // Only the reconcile showed there is work (a revision it stopped): ask now.
        confirm(
            settings,
            &confirm_question(plan.changed().filter(|a| wanted(&a.service))),
        )?;
    }

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
    let prober = crate::rollout::executor::McpProber::for_project(project)?;
    let exec = executor(engine, project, &prober, &say, interrupted.clone());
    let steps = plan::deploy_steps(project, release, &plan, &desired, &observed, wanted, |s| {
        ledger.last_gate(s).map(|g| g.tool_hashes)
    });
    let who = release::Run {
        ledger,
        me,
        command: "deploy",
        message: args.message.as_deref(),
        detail: None,
    };
    let hooks = Build {
        engine,
        settings,
        desired: &desired,
        bar: Bar::steps(steps.len() as u64, "deploy"),
        started: std::cell::Cell::new(0),
    };
    let done = release::run(&exec, edge.as_ref(), project, &who, release, &steps, &hooks).await?;
    drop(hooks);
    for r in &done.results {
        if let Some(drift) = r
            .gate
            .as_ref()
            .and_then(|g| g.drift.as_ref())
            .filter(|d| !d.is_empty())
        {
            say(&format!(
                "{}: tool schema drift against the previous revision: added [{}] removed [{}] changed [{}]",
                r.service,
                drift.added.join(", "),
                drift.removed.join(", "),
                drift.changed.join(", ")
            ));
        }
    }
    if done.interrupted {
        say("interrupted: the current step finished; the rollout stopped there");
    }
    if done.interrupted && done.results.iter().all(|r| r.outcome == Outcome::Ok) {
        return Err(CommandError::new(
            ExitCode::Interrupted,
            "deploy interrupted after a completed step; later services were not changed",
        )
        .into());
    }
    Ok(Ok((release, done.results)))
}

/// Deploy's hook: move the bar to the step, and build the step's image if it is missing (a
/// spinner on a TTY).
struct Build<'a> {
    engine: &'a DockerEngine,
    settings: &'a Settings,
    desired: &'a [Desired],
    bar: Bar,
    /// Steps started so far (the bar's position: the steps before this one are done).
    started: std::cell::Cell<u64>,
}

impl release::Hooks for Build<'_> {
    async fn before_step(&self, p: &release::Planned) -> anyhow::Result<()> {
        self.bar.set_position(self.started.get());
        self.started.set(self.started.get() + 1);
        self.bar.set_message(p.step.service.clone());
        let d = self
            .desired
            .iter()
            .find(|d| d.summary.service == p.step.service)
            .expect("planned from desired");
        build_if_needed(self.engine, self.settings, d, false).await?;
        Ok(())
    }
}
