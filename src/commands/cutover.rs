//! `mcpctl cutover check|litellm|status|switch|revert|retire`: move LiteLLM from the old proxy to
//! the new stack at the edge's routes, with the old proxy running in parallel as the rollback path
//! until `retire`. The work is in `crate::cutover` (one function per command, a typed report back);
//! this file parses the flags, asks for confirmation, holds the lock around route changes and
//! prints.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cutover::check_run::{self, CheckOutcome, CheckRequest, LiteLlmSource};
use crate::cutover::edge::RouteKind;
use crate::cutover::retire::{self, RetirePlan, RetireReport, RetireRequest};
use crate::cutover::scope::Scope;
use crate::cutover::status::{self, StatusReport};
use crate::cutover::switch::{self, SwitchReport, SwitchRequest};
use crate::cutover::{litellm, report};
use crate::error::{CommandError, ExitCode};
use crate::output::{self, Render};
use crate::rollout::ledger::Ledger;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct CutoverArgs {
    #[command(subcommand)]
    pub command: CutoverCommand,
}

/// Where the edge's loopback admin API answers.
#[derive(Args, Debug, Clone)]
pub struct EdgeArgs {
    /// The edge's admin API (`GET/PUT /routes`) [default: http://127.0.0.1:<edge.admin_port>].
    #[arg(long, env = "MCPCTL_EDGE_ADMIN")]
    pub edge_admin: Option<String>,
}

/// Which LiteLLM to use.
#[derive(Args, Debug, Clone)]
pub struct LiteLlmArgs {
    /// An existing LiteLLM proxy (e.g. http://127.0.0.1:4000); its master key is read from the
    /// manifest's `litellm.master_key`.
    #[arg(long, conflicts_with = "start_litellm")]
    pub litellm_url: Option<String>,
    /// Start LiteLLM from its venv with the rendered config (byte for byte) for this check, and
    /// stop it afterwards. Needs `litellm.network: host` (a host process cannot resolve `mcp-<name>`).
    #[arg(long)]
    pub start_litellm: bool,
    /// The LiteLLM executable [default: $MCPCTL_CACHE/venv-litellm/bin/litellm].
    #[arg(long)]
    pub litellm_bin: Option<PathBuf>,
    /// Port for a LiteLLM mcpctl starts (127.0.0.1) [default: a free one].
    #[arg(long)]
    pub litellm_port: Option<u16>,
    /// How long a started LiteLLM may take to answer /health/liveliness (measured 7–44 s).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub litellm_startup: Duration,
}

#[derive(Subcommand, Debug)]
pub enum CutoverCommand {
    /// Old vs new per service (tools, schemas, smoke), then through LiteLLM (tools listed, smoke
    /// calls, error handling, latency vs direct); exit 6 on any difference.
    Check(CheckArgs),
    /// Run LiteLLM in the foreground with the rendered config, byte for byte (Ctrl-C stops it).
    Litellm(LitellmRunArgs),
    /// Per service: the cutover flag, the edge's route, and whether the old proxy answers.
    Status(StatusArgs),
    /// Route services to the new stack at the edge (LiteLLM is not restarted).
    Switch(SwitchArgs),
    /// Route services back to the old proxy at the edge (the rollback path).
    Revert(SwitchArgs),
    /// Stop the old proxy, once every service has been on the stack for the clean period.
    Retire(RetireArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only these services (default: every service with a `legacy` endpoint).
    pub services: Vec<String>,
    #[command(flatten)]
    pub litellm: LiteLlmArgs,
    /// Skip the LiteLLM part (old vs new only).
    #[arg(long, conflicts_with_all = ["litellm_url", "start_litellm"])]
    pub no_litellm: bool,
    /// Where the new stack answers for a service, as SERVICE=URL (default: the serving revision
    /// found by its labels, at its host port — behind the edge an ephemeral 127.0.0.1 one — else
    /// the service's published port). Repeatable.
    #[arg(long = "new-url", value_name = "SERVICE=URL")]
    pub new_urls: Vec<String>,
    /// Calls per service timed directly and through LiteLLM.
    #[arg(long, default_value_t = 40)]
    pub latency_calls: usize,
    /// Bound of every MCP or HTTP request.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub edge: EdgeArgs,
}

#[derive(Args, Debug)]
pub struct LitellmRunArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 4000)]
    pub port: u16,
    /// The LiteLLM executable [default: $MCPCTL_CACHE/venv-litellm/bin/litellm].
    #[arg(long)]
    pub litellm_bin: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub edge: EdgeArgs,
}

#[derive(Args, Debug)]
pub struct SwitchArgs {
    /// Only these services (default: every service with a `legacy` endpoint).
    pub services: Vec<String>,
    /// Why (recorded in the ledger).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// How long sessions open on the side being left may continue (the edge's default otherwise).
    #[arg(long)]
    pub drain_timeout_s: Option<u64>,
    /// Revert even when the old proxy does not answer (it is checked first).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub edge: EdgeArgs,
}

#[derive(Args, Debug)]
pub struct RetireArgs {
    /// Override the manifest's `cutover.clean_period` (e.g. 24h, 30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub clean_period: Option<Duration>,
    /// Why (recorded in the ledger).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    #[command(flatten)]
    pub edge: EdgeArgs,
}

pub fn run(settings: &Settings, args: &CutoverArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::manifest::load_checked(settings)?;
    let state_dir = settings.state_dir(&loaded.manifest.project);
    let scope = Scope::new(loaded.manifest, &loaded.path, state_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match &args.command {
        CutoverCommand::Check(a) => rt.block_on(check_cmd(settings, &scope, a)),
        CutoverCommand::Litellm(a) => rt.block_on(litellm_cmd(&scope, a)),
        CutoverCommand::Status(a) => {
            let r = rt.block_on(status::run(&scope, &edge_admin(&scope, &a.edge)))?;
            output::emit(settings, &r)?;
            Ok(ExitCode::Ok)
        }
        CutoverCommand::Switch(a) => rt.block_on(locked(
            settings,
            "cutover switch",
            route_cmd(settings, &scope, a, RouteKind::Stack),
        )),
        CutoverCommand::Revert(a) => rt.block_on(locked(
            settings,
            "cutover revert",
            route_cmd(settings, &scope, a, RouteKind::Legacy),
        )),
        CutoverCommand::Retire(a) => rt.block_on(locked(
            settings,
            "cutover retire",
            retire_cmd(settings, &scope, a),
        )),
    }
}

/// Run a command that changes routes under the project's engine-held lock, the one deploy and
/// rollback take: a cutover step never interleaves with a rollout (exit 5 names the holder).
async fn locked(
    settings: &Settings,
    command: &str,
    work: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    use crate::commands::common::{connect, open_project, release_lock, take_lock};
    let project = open_project(settings)?;
    let engine = connect().await?;
    let ledger = Ledger::new(&project.state_dir);
    let me = crate::rollout::lock::LockInfo::current(command, None);
    let held = take_lock(&engine, &project, settings, &me, false, &ledger).await?;
    let result = work.await;
    release_lock(&engine, &project, &held).await;
    result
}

fn edge_admin(scope: &Scope, a: &EdgeArgs) -> String {
    scope.edge_admin_url(a.edge_admin.as_deref())
}

async fn check_cmd(settings: &Settings, scope: &Scope, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let l = &a.litellm;
    let litellm = if a.no_litellm {
        LiteLlmSource::Skip
    } else if let Some(url) = &l.litellm_url {
        LiteLlmSource::Url(url.clone())
    } else if l.start_litellm {
        LiteLlmSource::Start {
            bin: l.litellm_bin.clone(),
            port: l.litellm_port,
            startup: l.litellm_startup,
        }
    } else {
        return Err(CommandError::usage(
            "cutover check goes through LiteLLM: pass --litellm-url URL (a running proxy), \
             --start-litellm (mcpctl starts one with the rendered config), or --no-litellm",
        )
        .into());
    };
    let req = CheckRequest {
        services: a.services.clone(),
        new_urls: a.new_urls.clone(),
        litellm,
        latency_calls: a.latency_calls,
        timeout: a.timeout,
        edge_admin: edge_admin(scope, &a.edge),
    };
    let outcome = check_run::run(scope, &req).await?;
    output::emit(settings, &outcome)?;
    Ok(if outcome.report.differences == 0 {
        ExitCode::Ok
    } else {
        ExitCode::SloBreach
    })
}

async fn litellm_cmd(scope: &Scope, a: &LitellmRunArgs) -> anyhow::Result<ExitCode> {
    let (l, took) = litellm::start_rendered(scope, a.litellm_bin.clone(), a.port).await?;
    output::diagnostic(&format!(
        "LiteLLM (pid {}) answers on {} after {:.1} s; config {} (as rendered); log {}. Ctrl-C stops it.",
        l.pid(),
        l.url,
        took.as_secs_f64(),
        l.config_path.display(),
        l.log_path.display()
    ));
    litellm::serve_until_signal(l).await?;
    Ok(ExitCode::Ok)
}

async fn route_cmd(
    settings: &Settings,
    scope: &Scope,
    a: &SwitchArgs,
    to: RouteKind,
) -> anyhow::Result<ExitCode> {
    let req = SwitchRequest {
        services: a.services.clone(),
        to,
        message: a.message.clone(),
        drain_timeout_s: a.drain_timeout_s,
        force: a.force,
        edge_admin: edge_admin(scope, &a.edge),
    };
    let r = switch::run(scope, &req).await?;
    output::emit(settings, &r)?;
    match r.failure() {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::Ok),
    }
}

async fn retire_cmd(
    settings: &Settings,
    scope: &Scope,
    a: &RetireArgs,
) -> anyhow::Result<ExitCode> {
    let req = RetireRequest {
        clean_period: a.clean_period,
        message: a.message.clone(),
        edge_admin: edge_admin(scope, &a.edge),
    };
    let ready = match retire::plan(scope, &req).await? {
        RetirePlan::AlreadyRetired(r) => {
            // A note, not a report: `--output json` prints nothing here (as it always has).
            output::human(settings, &report::already_retired_text(&r));
            return Ok(ExitCode::Ok);
        }
        RetirePlan::Ready(ready) => ready,
    };
    output::confirm(settings, &ready.question())?;
    let r = retire::execute(scope, ready, a.message.as_deref()).await?;
    output::emit(settings, &r)?;
    Ok(ExitCode::Ok)
}

impl Render for CheckOutcome {
    fn human(&self) -> String {
        self.human_text()
    }
}

impl Render for StatusReport {
    fn human(&self) -> String {
        self.human_text()
    }
}

impl Render for SwitchReport {
    fn human(&self) -> String {
        self.human_text()
    }
}

impl Render for RetireReport {
    fn human(&self) -> String {
        self.human_text()
    }
}
