//! `mcpctl cutover check|litellm|status|switch|revert|retire`: move LiteLLM from the old proxy to
//! the new stack at the edge's routes, with the old proxy running in parallel as the rollback path
//! until `retire`. The domain is in `crate::cutover`; this file resolves inputs and reports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::OutputFormat;
use crate::cutover::check::{self, CheckOptions, CheckReport, Target};
use crate::cutover::edge::{self, EdgeAdmin, RouteKind, RoutePut};
use crate::cutover::litellm::{self, LiteLlm};
use crate::cutover::state::{self, CutoverState, LastCheck, Retired};
use crate::error::{CommandError, ExitCode};
use crate::health::client::{Session, Transport};
use crate::manifest::{Manifest, Role};
use crate::output;
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{hostname, whoami};
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

impl EdgeArgs {
    fn url(&self, manifest: &Manifest) -> String {
        self.edge_admin
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", manifest.edge.admin_port))
    }
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
    let manifest = loaded.manifest;
    let manifest_dir = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let state_dir = settings.state_dir(&manifest.project);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match &args.command {
        CutoverCommand::Check(a) => {
            rt.block_on(check_cmd(settings, &manifest, &manifest_dir, &state_dir, a))
        }
        CutoverCommand::Litellm(a) => {
            rt.block_on(litellm_cmd(&manifest, &manifest_dir, &state_dir, a))
        }
        CutoverCommand::Status(a) => rt.block_on(status_cmd(settings, &manifest, &state_dir, a)),
        CutoverCommand::Switch(a) => rt.block_on(locked(
            settings,
            "cutover switch",
            route_cmd(settings, &manifest, &state_dir, a, RouteKind::Stack),
        )),
        CutoverCommand::Revert(a) => rt.block_on(locked(
            settings,
            "cutover revert",
            route_cmd(settings, &manifest, &state_dir, a, RouteKind::Legacy),
        )),
        CutoverCommand::Retire(a) => rt.block_on(locked(
            settings,
            "cutover retire",
            retire_cmd(settings, &manifest, &state_dir, a),
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

/// The services a cutover command acts on: the named ones (each must have `legacy`), else every
/// service with a `legacy` endpoint.
fn selected(manifest: &Manifest, names: &[String]) -> Result<Vec<String>, CommandError> {
    let with_legacy: Vec<String> = manifest
        .services
        .iter()
        .filter(|(_, s)| s.role == Role::Service && s.legacy.is_some())
        .map(|(n, _)| n.clone())
        .collect();
    if names.is_empty() {
        if with_legacy.is_empty() {
            return Err(CommandError::usage(
                "no service names a `legacy` endpoint (services.<name>.legacy.url): nothing to cut over",
            ));
        }
        return Ok(with_legacy);
    }
    for n in names {
        match manifest.services.get(n) {
            None => {
                return Err(CommandError::usage(format!(
                    "unknown service `{n}` (the manifest has: {})",
                    manifest
                        .services
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            Some(s) if s.legacy.is_none() => {
                return Err(CommandError::usage(format!(
                    "service `{n}` has no `legacy` endpoint in the manifest: nothing to cut over"
                )))
            }
            _ => {}
        }
    }
    Ok(names.to_vec())
}

fn master_key(
    manifest: &Manifest,
    manifest_dir: &Path,
) -> anyhow::Result<(String, Option<String>)> {
    let r = &manifest.litellm.master_key;
    let env_name = r
        .from_env
        .clone()
        .unwrap_or_else(|| "LITELLM_MASTER_KEY".into());
    let value = if let Some(var) = &r.from_env {
        std::env::var(var).ok().filter(|v| !v.is_empty())
    } else if let Some(file) = &r.from_file {
        std::fs::read_to_string(manifest_dir.join(file))
            .ok()
            .map(|v| v.trim_end_matches('\n').to_string())
    } else {
        None
    };
    Ok((env_name, value))
}

fn entry(command: &str, service: Option<&str>, outcome: &str, message: Option<&str>) -> Entry {
    Entry {
        ts: now_rfc3339(),
        event: "cutover".into(),
        release: 0,
        command: command.into(),
        who: whoami(),
        host: hostname(),
        pid: std::process::id(),
        message: message.map(str::to_string),
        service: service.map(str::to_string),
        outcome: outcome.into(),
        ..Entry::default()
    }
}

fn transport_of(manifest: &Manifest, service: &str) -> Transport {
    manifest.services[service]
        .transport
        .unwrap_or(manifest.litellm.transport)
}

async fn check_cmd(
    settings: &Settings,
    manifest: &Manifest,
    manifest_dir: &Path,
    state_dir: &Path,
    a: &CheckArgs,
) -> anyhow::Result<ExitCode> {
    let names = selected(manifest, &a.services)?;
    let mut new_urls = std::collections::BTreeMap::new();
    for spec in &a.new_urls {
        let (svc, url) = spec.split_once('=').ok_or_else(|| {
            CommandError::usage(format!("--new-url {spec}: expected SERVICE=URL"))
        })?;
        if !names.iter().any(|n| n == svc) {
            return Err(CommandError::usage(format!(
                "--new-url {spec}: `{svc}` is not among the services checked ({})",
                names.join(", ")
            ))
            .into());
        }
        new_urls.insert(svc.to_string(), edge::strip_transport_suffix(url));
    }
    if !a.no_litellm && a.litellm.litellm_url.is_none() && !a.litellm.start_litellm {
        return Err(CommandError::usage(
            "cutover check goes through LiteLLM: pass --litellm-url URL (a running proxy), \
             --start-litellm (mcpctl starts one with the rendered config), or --no-litellm",
        )
        .into());
    }
    let routes = match EdgeAdmin::new(&a.edge.url(manifest), Duration::from_secs(2)) {
        Ok(admin) => admin.routes().await.ok(),
        Err(_) => None,
    };
    let mut targets = Vec::new();
    for name in &names {
        let svc = &manifest.services[name];
        let legacy = svc.legacy.as_ref().expect("selected services have legacy");
        // The serving revision itself (behind the edge it keeps an ephemeral 127.0.0.1 port),
        // so "new" is the stack even while the edge routes the service to the old proxy; else
        // the service's published port.
        let serving = match new_urls.get(name) {
            Some(_) => None,
            None => Some(stack_container(manifest, name).await),
        };
        // The published port is the stack only when no edge fronts the service or the edge
        // routes it to the stack; otherwise it may be the old proxy, and comparing the old proxy
        // with itself would pass.
        let published_is_stack = !manifest.edge.enabled
            || routes
                .as_ref()
                .and_then(|r| r.get(name))
                .is_some_and(|r| r.kind == RouteKind::Stack);
        let new_base = match (
            new_urls.get(name),
            serving
                .as_ref()
                .and_then(|c| c.as_ref().ok())
                .and_then(|c| c.host_port),
            svc.port,
        ) {
            (Some(u), _, _) => u.clone(),
            (None, Some(p), _) => format!("http://127.0.0.1:{p}"),
            (None, None, Some(p)) if published_is_stack => {
                format!("http://{}:{p}", manifest.bind_address)
            }
            (None, None, Some(_)) => {
                let why = match serving {
                    Some(Err(e)) => e.to_string(),
                    _ => "the serving revision publishes no port".into(),
                };
                return Err(CommandError::usage(format!(
                    "service `{name}`: cannot reach its serving revision ({why}), and its \
                     published port may be the old proxy (the edge does not route it to the \
                     stack): fix that, or give --new-url {name}=URL"
                ))
                .into());
            }
            (None, None, None) => {
                return Err(CommandError::usage(format!(
                    "service `{name}` has no running revision with a port and publishes none: \
                     give --new-url {name}=URL"
                ))
                .into())
            }
        };
        targets.push(Target {
            service: name.clone(),
            old_base: edge::strip_transport_suffix(&legacy.url),
            old_transport: legacy.transport,
            new_base,
            new_transport: transport_of(manifest, name),
            smoke: svc.health.smoke.clone(),
            slo_p95_ms: svc.slo.p95_ms,
            routed_to: routes
                .as_ref()
                .and_then(|r| r.get(name))
                .map(|r| r.kind.as_str().to_string()),
        });
    }
    let (key_env, key) = master_key(manifest, manifest_dir)?;
    let mut launched = None;
    let llm = if a.no_litellm {
        None
    } else if let Some(url) = &a.litellm.litellm_url {
        if key.is_none() {
            tracing::warn!(
                "LiteLLM's master key ({key_env}) is not set: calls to {url} go unauthenticated \
                 and a proxy with a key answers 401"
            );
        }
        Some(LiteLlm::new(
            url,
            key.clone(),
            a.timeout.max(Duration::from_secs(35)),
        )?)
    } else {
        if manifest.litellm.network != crate::manifest::LiteLlmNetwork::Host {
            return Err(CommandError::usage(
                "--start-litellm runs LiteLLM on this host, but `litellm.network` is `docker` (its \
                 config names mcp-<service>:8080, which only resolves on the stack network): run \
                 LiteLLM on the stack network and pass --litellm-url, or set litellm.network: host",
            )
            .into());
        }
        let key = key.clone().ok_or_else(|| {
            CommandError::usage(format!(
                "LiteLLM's master key is not set ({key_env}): export it or fix litellm.master_key"
            ))
        })?;
        let config = rendered_litellm_config(manifest)?;
        let port = a.litellm.litellm_port.unwrap_or_else(free_port);
        let bin = a
            .litellm
            .litellm_bin
            .clone()
            .unwrap_or_else(litellm::default_bin);
        let dir = state_dir.join("cutover").join("litellm");
        let mut l = litellm::launch(&bin, &config, &dir, port, &key_env, &key)?;
        let client = LiteLlm::new(&l.url, Some(key), a.timeout.max(Duration::from_secs(35)))?;
        tracing::info!(
            "started LiteLLM (pid {}) on {} with {}; waiting for it",
            l.pid(),
            l.url,
            l.config_path.display()
        );
        let took = client
            .wait_alive(a.litellm.litellm_startup, || l.check_running())
            .await?;
        tracing::info!("LiteLLM answered after {:.1} s", took.as_secs_f64());
        launched = Some(l);
        Some(client)
    };
    let report = check::run(
        &targets,
        llm.as_ref(),
        &CheckOptions {
            timeout: a.timeout,
            latency_calls: a.latency_calls,
        },
    )
    .await;
    drop(launched);

    let dir = state_dir.join("cutover");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "check-{}.json",
        report.at.replace([':', '-'], "").replace('T', "-")
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    let mut st = CutoverState::load(state_dir)?;
    st.last_check = Some(LastCheck {
        at: report.at.clone(),
        services: names.clone(),
        differences: report.differences,
        report: path.clone(),
    });
    st.save(state_dir)?;
    let mut e = entry(
        "cutover check",
        None,
        if report.differences == 0 {
            "ok"
        } else {
            "differences"
        },
        None,
    );
    e.services = names.clone();
    e.detail = Some(format!(
        "{} differences; report {}",
        report.differences,
        path.display()
    ));
    Ledger::new(state_dir).append(&e)?;

    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::to_value(&report)?),
        OutputFormat::Human => output::human(settings, &human_check(&report, &path)),
    }
    Ok(if report.differences == 0 {
        ExitCode::Ok
    } else {
        ExitCode::SloBreach
    })
}

fn rendered_litellm_config(manifest: &Manifest) -> anyhow::Result<String> {
    let artifacts = crate::render::render(manifest, Some(crate::render::ArtifactKind::Litellm))?;
    artifacts
        .into_iter()
        .find(|a| a.path.ends_with("config.yaml"))
        .map(|a| a.contents)
        .ok_or_else(|| anyhow::anyhow!("render produced no litellm/config.yaml"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4000)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

fn human_check(r: &CheckReport, path: &Path) -> String {
    let mut rows = Vec::new();
    for s in &r.services {
        let tools = |side: &crate::cutover::compare::Side| match &side.error {
            Some(_) => "unreachable".to_string(),
            None => side.tools.len().to_string(),
        };
        let smoke = |side: &crate::cutover::compare::Side| {
            let ok = side.smoke.iter().filter(|o| o.ok).count();
            format!("{ok}/{}", side.smoke.len())
        };
        let (llm_tools, llm_smoke, errors, direct, through) = match &s.litellm {
            None => ("–".into(), "–".into(), "–".into(), "–".into(), "–".into()),
            Some(l) => (
                format!("{}", l.tools_listed),
                format!(
                    "{}/{}{}",
                    l.smoke_rest.iter().filter(|o| o.ok).count(),
                    l.smoke_rest.len(),
                    match &l.smoke_mcp {
                        Some(o) if o.ok => " +mcp",
                        Some(_) => " mcp FAIL",
                        None => "",
                    }
                ),
                format!(
                    "{}/{} clean",
                    l.errors.iter().filter(|p| p.clean).count(),
                    l.errors.len()
                ),
                l.latency
                    .as_ref()
                    .map(|x| format!("{} / {}", ms(x.direct.p50_ms), ms(x.direct.p95_ms)))
                    .unwrap_or_else(|| "–".into()),
                l.latency
                    .as_ref()
                    .map(|x| {
                        format!(
                            "{} / {}",
                            ms(x.through_litellm.p50_ms),
                            ms(x.through_litellm.p95_ms)
                        )
                    })
                    .unwrap_or_else(|| "–".into()),
            ),
        };
        rows.push(vec![
            s.service.clone(),
            s.routed_to.clone().unwrap_or_else(|| "–".into()),
            format!("{} / {}", tools(&s.old), tools(&s.new)),
            format!("{} / {}", smoke(&s.old), smoke(&s.new)),
            llm_tools,
            llm_smoke,
            errors,
            direct,
            through,
            if s.differences.is_empty() {
                "same".into()
            } else {
                format!("{} DIFF", s.differences.len())
            },
        ]);
    }
    let mut out = output::table(
        &[
            "SERVICE",
            "ROUTED",
            "TOOLS old/new",
            "SMOKE old/new",
            "LITELLM TOOLS",
            "LITELLM SMOKE",
            "ERRORS",
            "DIRECT p50/p95 ms",
            "LITELLM REST p50/p95 ms",
            "RESULT",
        ],
        rows,
    );
    for s in &r.services {
        for d in &s.differences {
            out.push_str(&format!("\n{}: [{}] {}", s.service, d.kind, d.detail));
        }
    }
    for s in &r.services {
        if let Some(m) = s
            .litellm
            .as_ref()
            .and_then(|l| l.latency.as_ref())
            .and_then(|x| x.through_litellm_mcp.as_ref())
        {
            out.push_str(&format!(
                "\n{}: through LiteLLM's /mcp on one session p50 {} / p95 {} ms ({} calls, {} failed)",
                s.service,
                ms(m.p50_ms),
                ms(m.p95_ms),
                m.calls,
                m.failed
            ));
        }
    }
    // Which error path LiteLLM uses, as observed.
    let mut paths = std::collections::BTreeMap::new();
    for s in &r.services {
        for p in s.litellm.iter().flat_map(|l| &l.errors) {
            let what = match (p.http_status, p.is_error, p.jsonrpc_error) {
                (_, Some(true), _) => "isError result".to_string(),
                (Some(h), Some(false), _) => format!("HTTP {h}, accepted as a success"),
                (None, Some(false), _) => "accepted as a success".to_string(),
                (_, _, Some(c)) => format!("JSON-RPC error {c}"),
                (Some(h), _, _) => format!("HTTP {h}"),
                _ => "no answer".to_string(),
            };
            paths
                .entry((p.case, p.path))
                .or_insert_with(std::collections::BTreeSet::new)
                .insert(what);
        }
    }
    for ((case, path), whats) in paths {
        out.push_str(&format!(
            "\nerror path: {case} via {} → {}",
            if path == "rest" {
                "/mcp-rest/tools/call"
            } else {
                "/mcp"
            },
            whats.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out.push_str(&format!(
        "\n{} difference(s); report {}",
        r.differences,
        path.display()
    ));
    out
}

async fn litellm_cmd(
    manifest: &Manifest,
    manifest_dir: &Path,
    state_dir: &Path,
    a: &LitellmRunArgs,
) -> anyhow::Result<ExitCode> {
    let (key_env, key) = master_key(manifest, manifest_dir)?;
    let key = key.ok_or_else(|| {
        CommandError::usage(format!(
            "LiteLLM's master key is not set ({key_env}): export it or fix litellm.master_key"
        ))
    })?;
    let config = rendered_litellm_config(manifest)?;
    let bin = a.litellm_bin.clone().unwrap_or_else(litellm::default_bin);
    let dir = state_dir.join("cutover").join("litellm");
    let mut l = litellm::launch(&bin, &config, &dir, a.port, &key_env, &key)?;
    let client = LiteLlm::new(&l.url, Some(key), Duration::from_secs(5))?;
    let took = client
        .wait_alive(Duration::from_secs(180), || l.check_running())
        .await?;
    output::diagnostic(&format!(
        "LiteLLM (pid {}) answers on {} after {:.1} s; config {} (as rendered); log {}. Ctrl-C stops it.",
        l.pid(),
        l.url,
        took.as_secs_f64(),
        l.config_path.display(),
        l.log_path.display()
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Err(e) = l.check_running() {
                    return Err(anyhow::anyhow!(e));
                }
            }
        }
    }
    l.stop();
    Ok(ExitCode::Ok)
}

/// initialize + tools/list at an MCP endpoint (a `/sse` or `/mcp` suffix is ignored): the number
/// of tools listed.
async fn mcp_answers(url: &str, transport: Transport, timeout: Duration) -> Result<usize, String> {
    let base = edge::strip_transport_suffix(url);
    let mut s = Session::connect(&base, transport, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let n = s.list_tools().await.map_err(|e| e.to_string())?.len();
    s.close().await;
    Ok(n)
}

async fn status_cmd(
    settings: &Settings,
    manifest: &Manifest,
    state_dir: &Path,
    a: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let names = selected(manifest, &[])?;
    let st = CutoverState::load(state_dir)?;
    let admin = EdgeAdmin::new(&a.edge.url(manifest), Duration::from_secs(3))?;
    let routes = admin.routes().await;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for n in &names {
        let legacy = manifest.services[n].legacy.as_ref().expect("selected");
        let flag = st.services.get(n);
        let route = routes.as_ref().ok().and_then(|r| r.get(n));
        let old = mcp_answers(&legacy.url, legacy.transport, Duration::from_secs(3)).await;
        rows.push(vec![
            n.clone(),
            flag.map(|f| format!("{} since {}", f.active.as_str(), f.since))
                .unwrap_or_else(|| "–".into()),
            route
                .map(|r| format!("{} → {}", r.kind.as_str(), r.upstream))
                .unwrap_or_else(|| match &routes {
                    Ok(_) => "no route".into(),
                    Err(_) => "edge unreachable".into(),
                }),
            match &old {
                Ok(t) => format!("answers ({t} tools)"),
                Err(_) if st.retired.is_some() => "retired".into(),
                Err(e) => format!("DOWN: {}", check_excerpt(e)),
            },
        ]);
        json_rows.push(serde_json::json!({
            "service": n,
            "flag": flag,
            "route": route,
            "legacy_url": legacy.url,
            "legacy_answers": old.is_ok(),
        }));
    }
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({
            "services": json_rows,
            "retired": st.retired,
            "last_check": st.last_check,
            "edge_error": routes.as_ref().err().map(|e| e.to_string()),
        })),
        OutputFormat::Human => {
            let mut out = output::table(
                &["SERVICE", "CUTOVER FLAG", "EDGE ROUTE", "OLD PROXY"],
                rows,
            );
            if let Some(r) = &st.retired {
                out.push_str(&format!("\nold proxy retired {} by {}", r.at, r.who));
            }
            if let Some(c) = &st.last_check {
                out.push_str(&format!(
                    "\nlast check {}: {} difference(s) ({})",
                    c.at,
                    c.differences,
                    c.report.display()
                ));
            }
            output::human(settings, &out);
        }
    }
    Ok(ExitCode::Ok)
}

fn check_excerpt(s: &str) -> String {
    crate::cutover::compare::excerpt(s)
}

/// The serving revision of a service, from Docker labels (the truth about what runs).
struct StackContainer {
    /// `http://<container>:<container port>` on the project network (what the edge routes to).
    upstream: String,
    revision: Option<u64>,
    /// Its port published on the host, if any (behind the edge: an ephemeral 127.0.0.1 port).
    host_port: Option<u16>,
}

async fn stack_container(manifest: &Manifest, service: &str) -> anyhow::Result<StackContainer> {
    use crate::engine::Engine;
    let engine = tokio::time::timeout(
        Duration::from_secs(5),
        crate::engine::docker::DockerEngine::connect(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the Docker engine did not answer"))??;
    let keys = crate::engine::labels::Keys::new(&manifest.label_prefix);
    let list = engine
        .list_containers(&keys.project_filter(&manifest.project))
        .await?;
    let c = list
        .into_iter()
        .filter(|c| {
            c.labels.get(&keys.service()).map(String::as_str) == Some(service)
                && c.labels.get(&keys.role()).map(String::as_str) == Some("service")
                && !c.labels.contains_key(&keys.phase())
                && c.state == crate::engine::RunState::Running
        })
        .max_by_key(|c| c.created)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no running revision of `{service}` (deploy it first: mcpctl deploy {service})"
            )
        })?;
    let revision = c.labels.get(&keys.release()).and_then(|r| r.parse().ok());
    let port = manifest.services[service].container_port;
    Ok(StackContainer {
        upstream: format!("http://{}:{port}", c.name),
        revision,
        host_port: c.ports.get(&port).copied(),
    })
}

async fn route_cmd(
    settings: &Settings,
    manifest: &Manifest,
    state_dir: &Path,
    a: &SwitchArgs,
    to: RouteKind,
) -> anyhow::Result<ExitCode> {
    let names = selected(manifest, &a.services)?;
    let verb = match to {
        RouteKind::Stack => "switch",
        RouteKind::Legacy => "revert",
    };
    let mut st = CutoverState::load(state_dir)?;
    if to == RouteKind::Legacy {
        if let Some(r) = &st.retired {
            return Err(CommandError::new(
                ExitCode::Runtime,
                format!(
                    "the old proxy was retired at {} by {}: there is nothing to revert to (start it \
                     again and remove `retired` from {} to re-enable revert)",
                    r.at,
                    r.who,
                    CutoverState::path(state_dir).display()
                ),
            )
            .into());
        }
    }
    let admin = EdgeAdmin::new(&a.edge.url(manifest), Duration::from_secs(5))?;
    let routes = admin.routes().await?;
    let ledger = Ledger::new(state_dir);
    let mut rows = Vec::new();
    let mut failed = 0;
    for name in &names {
        let started = std::time::Instant::now();
        let legacy = manifest.services[name].legacy.as_ref().expect("selected");
        let current = routes.get(name);
        let now = now_rfc3339();
        // The edge is the truth about where traffic goes: the file follows it both ways.
        if let Some(r) = current {
            st.set_active(name, r.kind, &now);
            if r.kind == RouteKind::Stack {
                st.remember_stack(name, &r.upstream, r.revision);
            }
        }
        if current.is_some_and(|r| r.kind == to) {
            st.set_active(name, to, &now);
            rows.push(vec![
                name.clone(),
                to.as_str().into(),
                current.map(|r| r.upstream.clone()).unwrap_or_default(),
                "already".into(),
            ]);
            continue;
        }
        let put = match to {
            RouteKind::Stack => {
                // The running revision first: a deploy while the service was on the old proxy
                // gated a new revision and stopped the one recorded here.
                let recorded = st
                    .services
                    .get(name)
                    .and_then(|s| s.stack_upstream.clone().map(|u| (u, s.stack_revision)));
                let (upstream, revision) = match (stack_container(manifest, name).await, recorded) {
                    (Ok(c), _) => (c.upstream, c.revision),
                    (Err(e), Some(r)) => {
                        tracing::warn!(
                            "{name}: {e:#}; using the stack route recorded in cutover.json ({})",
                            r.0
                        );
                        r
                    }
                    (Err(e), None) => {
                        failed += 1;
                        rows.push(vec![
                            name.clone(),
                            current.map(|r| r.kind.as_str()).unwrap_or("–").into(),
                            "–".into(),
                            format!("FAILED: {e:#}"),
                        ]);
                        continue;
                    }
                };
                RoutePut {
                    upstream,
                    revision,
                    kind: RouteKind::Stack,
                    drain_timeout_s: a.drain_timeout_s,
                }
            }
            RouteKind::Legacy => {
                if let Err(e) =
                    mcp_answers(&legacy.url, legacy.transport, Duration::from_secs(5)).await
                {
                    if !a.force {
                        failed += 1;
                        let mut e2 =
                            entry("cutover revert", Some(name), "error", a.message.as_deref());
                        e2.detail = Some(format!(
                            "the old proxy at {} does not answer: {e}",
                            legacy.url
                        ));
                        ledger.append(&e2)?;
                        rows.push(vec![
                            name.clone(),
                            current.map(|r| r.kind.as_str()).unwrap_or("–").into(),
                            legacy.url.clone(),
                            format!("REFUSED: the old proxy does not answer ({}); --force to revert anyway", check_excerpt(&e)),
                        ]);
                        continue;
                    }
                }
                RoutePut {
                    upstream: legacy
                        .upstream
                        .clone()
                        .unwrap_or_else(|| edge::legacy_upstream(&legacy.url)),
                    revision: None,
                    kind: RouteKind::Legacy,
                    drain_timeout_s: a.drain_timeout_s,
                }
            }
        };
        if to == RouteKind::Stack && !a.force {
            // Pre-flight: the revision about to get LiteLLM's traffic answers MCP.
            // It cannot be checked without a running revision with a host port: refused then too.
            let target = stack_container(manifest, name).await.and_then(|c| {
                c.host_port
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .ok_or_else(|| {
                        anyhow::anyhow!("the serving revision publishes no port to check")
                    })
            });
            {
                let checked = match &target {
                    Ok(url) => {
                        mcp_answers(url, transport_of(manifest, name), Duration::from_secs(5))
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))
                    }
                    Err(e) => Err(anyhow::anyhow!("cannot check it: {e:#}")),
                };
                let url = target
                    .as_ref()
                    .map(String::as_str)
                    .unwrap_or("–")
                    .to_string();
                if let Err(e) = checked {
                    failed += 1;
                    let mut e2 = entry("cutover switch", Some(name), "error", a.message.as_deref());
                    e2.detail = Some(format!(
                        "the serving revision at {url} does not answer: {e}"
                    ));
                    ledger.append(&e2)?;
                    rows.push(vec![
                        name.clone(),
                        current.map(|r| r.kind.as_str()).unwrap_or("–").into(),
                        put.upstream.clone(),
                        format!(
                            "REFUSED: the serving revision does not answer ({}); --force to switch anyway",
                            check_excerpt(&format!("{e:#}"))
                        ),
                    ]);
                    continue;
                }
            }
        }
        let result = match admin.put_route(name, &put).await {
            // Post-switch: new sessions on the published port reach the new side; if they fail,
            // put the previous route back.
            Ok(()) => match verify_published(manifest, name).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let restored = match current {
                        Some(prev) => admin
                            .put_route(
                                name,
                                &RoutePut {
                                    upstream: prev.upstream.clone(),
                                    revision: prev.revision,
                                    kind: prev.kind,
                                    drain_timeout_s: None,
                                },
                            )
                            .await
                            .map(|()| "the previous route was restored".to_string())
                            .unwrap_or_else(|e| {
                                format!("restoring the previous route FAILED: {e}")
                            }),
                        None => "there was no previous route to restore".into(),
                    };
                    Err(anyhow::anyhow!(
                        "after the switch the service did not answer on its published port ({e}); {restored}"
                    ))
                }
            },
            Err(e) => Err(e),
        };
        let from = current.map(|r| format!("{} {}", r.kind.as_str(), r.upstream));
        let mut e = entry(
            &format!("cutover {verb}"),
            Some(name),
            if result.is_ok() { "ok" } else { "error" },
            a.message.as_deref(),
        );
        e.from = from;
        e.to = Some(format!("{} {}", to.as_str(), put.upstream));
        e.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                st.set_active(name, to, &now);
                if to == RouteKind::Stack {
                    st.remember_stack(name, &put.upstream, put.revision);
                }
                st.save(state_dir)?;
                ledger.append(&e)?;
                rows.push(vec![
                    name.clone(),
                    to.as_str().into(),
                    put.upstream.clone(),
                    format!("{verb}ed"),
                ]);
            }
            Err(err) => {
                failed += 1;
                // The PUT may have landed (a timeout), or the restore may have failed: record
                // where the edge really routes the service, so the clean period stays honest.
                if let Some(r) = admin.routes().await.ok().and_then(|r| r.get(name).cloned()) {
                    st.set_active(name, r.kind, &now);
                    if r.kind == RouteKind::Stack {
                        st.remember_stack(name, &r.upstream, r.revision);
                    }
                }
                e.detail = Some(err.to_string());
                ledger.append(&e)?;
                rows.push(vec![
                    name.clone(),
                    current.map(|r| r.kind.as_str()).unwrap_or("–").into(),
                    put.upstream.clone(),
                    format!("FAILED: {err}"),
                ]);
            }
        }
    }
    st.save(state_dir)?;
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({
            "command": verb,
            "services": rows.iter().map(|r| serde_json::json!({
                "service": r[0], "route": r[1], "upstream": r[2], "result": r[3]})).collect::<Vec<_>>(),
            "failed": failed,
        })),
        OutputFormat::Human => output::human(
            settings,
            &output::table(&["SERVICE", "ROUTE", "UPSTREAM", "RESULT"], rows),
        ),
    }
    if failed > 0 {
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "cutover {verb}: {failed} service(s) not changed (see above and `mcpctl history`)"
            ),
        )
        .into());
    }
    Ok(ExitCode::Ok)
}

/// A new session through the service's published port (the edge) lists tools. Services without
/// a published port are not checked. Three tries within ~6 s: the edge switches at once, but a
/// just-switched upstream may still be accepting its first connection.
async fn verify_published(manifest: &Manifest, service: &str) -> Result<(), String> {
    let Some(port) = manifest.services[service].port else {
        return Ok(());
    };
    let host = if manifest.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match manifest.bind_address {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        }
    };
    let url = format!("http://{host}:{port}");
    let mut last = String::new();
    for _ in 0..3 {
        match mcp_answers(
            &url,
            transport_of(manifest, service),
            Duration::from_secs(2),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("{url}: {last}"))
}

/// How long `cutover.legacy_stop` may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

async fn retire_cmd(
    settings: &Settings,
    manifest: &Manifest,
    state_dir: &Path,
    a: &RetireArgs,
) -> anyhow::Result<ExitCode> {
    let names = selected(manifest, &[])?;
    let mut st = CutoverState::load(state_dir)?;
    if let Some(r) = &st.retired {
        output::human(
            settings,
            &format!("the old proxy was already retired at {} by {}", r.at, r.who),
        );
        return Ok(ExitCode::Ok);
    }
    let stop = &manifest.cutover.legacy_stop;
    if stop.is_empty() {
        return Err(CommandError::usage(
            "the manifest does not say how to stop the old proxy: set `cutover.legacy_stop` \
             (an argv, e.g. [systemctl, stop, mcp-proxy])",
        )
        .into());
    }
    let clean_period = a.clean_period.unwrap_or(manifest.cutover.clean_period);
    // The edge must agree that everything is on the stack.
    let admin = EdgeAdmin::new(&a.edge.url(manifest), Duration::from_secs(5))?;
    let routes = admin.routes().await?;
    let mut problems = state::not_clean(&st, &names, clean_period, std::time::SystemTime::now());
    for n in &names {
        match routes.get(n) {
            Some(r) if r.kind == RouteKind::Stack => {}
            Some(r) => problems.push((
                n.clone(),
                format!("the edge routes it to {} ({})", r.kind.as_str(), r.upstream),
            )),
            None => problems.push((n.clone(), "the edge has no route for it".into())),
        }
    }
    if !problems.is_empty() {
        let list = problems
            .iter()
            .map(|(n, why)| format!("  {n}: {why}"))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!("not retiring the old proxy: not every service has run on the stack for the clean period ({}):\n{list}", humantime::format_duration(clean_period)),
        )
        .into());
    }
    super::common::confirm(
        settings,
        &format!(
            "Stop the old proxy ({}) serving {}? Revert will no longer be possible",
            stop.join(" "),
            names.join(", ")
        ),
    )?;
    let started = std::time::Instant::now();
    // Bounded: a stop command that hangs must not hold the project's lock for ever.
    let child = tokio::process::Command::new(&stop[0])
        .args(&stop[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", stop.join(" ")))?;
    let out = tokio::time::timeout(STOP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} did not finish within {}s (killed); the old proxy may still run",
                stop.join(" "),
                STOP_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("running {}: {e}", stop.join(" ")))?;
    let ledger = Ledger::new(state_dir);
    if !out.status.success() {
        let mut e = entry("cutover retire", None, "error", a.message.as_deref());
        e.detail = Some(format!(
            "{} exited {}: {}",
            stop.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        ledger.append(&e)?;
        return Err(CommandError::new(ExitCode::Runtime, e.detail.unwrap_or_default()).into());
    }
    // The old endpoints must stop answering.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut still = Vec::new();
    loop {
        still.clear();
        for n in &names {
            let l = manifest.services[n].legacy.as_ref().expect("selected");
            if mcp_answers(&l.url, l.transport, Duration::from_secs(2))
                .await
                .is_ok()
            {
                still.push(n.clone());
            }
        }
        if still.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut e = entry(
        "cutover retire",
        None,
        if still.is_empty() { "ok" } else { "error" },
        a.message.as_deref(),
    );
    e.services = names.clone();
    e.duration_ms = started.elapsed().as_millis() as u64;
    if !still.is_empty() {
        e.detail = Some(format!("still answering: {}", still.join(", ")));
        ledger.append(&e)?;
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "ran `{}`, but the old proxy still answers for {} after 15 s",
                stop.join(" "),
                still.join(", ")
            ),
        )
        .into());
    }
    ledger.append(&e)?;
    st.retired = Some(Retired {
        at: now_rfc3339(),
        who: whoami(),
        command: stop.clone(),
    });
    st.save(state_dir)?;
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({
            "retired": st.retired, "services": names})),
        OutputFormat::Human => output::human(
            settings,
            &format!(
                "old proxy stopped (`{}`); its endpoints no longer answer for {}",
                stop.join(" "),
                names.join(", ")
            ),
        ),
    }
    Ok(ExitCode::Ok)
}
