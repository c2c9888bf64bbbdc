//! `mcpctl edge serve|up|status|replace`: the stack's edge (src/edge/). `serve` runs inside the
//! edge container; the others drive it from the host.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::error::ExitCode;
use crate::settings::Settings;
// The host side (`up`, `status`, `replace`); the in-container binary has `serve` only.
#[cfg(feature = "cli")]
use {
    super::common::{connect, open_project, runtime},
    crate::edge::container::{self, ReplaceReport, UpReport},
    crate::edge::routes::RouteView,
    crate::error::CommandError,
    crate::output::{self, confirm, Render},
    crate::rollout::executor::EdgeSwitch,
    crate::rollout::ledger::{now_rfc3339, Entry, Ledger},
    crate::rollout::lock::LockInfo,
    serde::Serialize,
    std::collections::BTreeMap,
};

#[derive(Args, Debug)]
pub struct EdgeArgs {
    #[command(subcommand)]
    pub command: EdgeCommand,
}

#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Run the edge proxy (the edge container's command; not for the host).
    Serve(ServeArgs),
    /// Create or start the project's edge (idempotent) and route services that have none yet.
    #[cfg(feature = "cli")]
    Up,
    /// Routes: which upstream serves each service, and what still drains.
    #[cfg(feature = "cli")]
    Status,
    /// Recreate the edge container itself (new image or ports); measures the gap on a published port.
    #[cfg(feature = "cli")]
    Replace,
}

/// `mcpctl edge serve` (the edge container's command).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A service and the port the edge listens on for it (published on the host as the same
    /// number); `NAME` alone for a service reachable only in-network.
    #[arg(long = "service", value_name = "NAME[=PORT]")]
    pub services: Vec<String>,
    /// Address the service and in-network listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,
    /// In-network listener routing by Host `mcp-<service>` (0 = none).
    #[arg(long, default_value_t = crate::edge::INTERNAL_PORT)]
    pub internal_port: u16,
    /// A service reached in-network at another port than `--internal-port` (its bridge's
    /// `container_port`): the edge listens there too and admits `mcp-<NAME>:<PORT>` for it only.
    #[arg(long = "in-network-port", value_name = "NAME=PORT")]
    pub in_network_ports: Vec<String>,
    /// Admin API (answers loopback and the network gateway only).
    #[arg(long, default_value = "0.0.0.0:8500")]
    pub admin: SocketAddr,
    /// File holding the admin API's bearer token (every admin request but `/healthz` and
    /// `/metrics` must send `Authorization: Bearer <token>`). A file, never a flag value or
    /// environment variable, so the token shows in no process list or `docker inspect`.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: PathBuf,
    /// Route file (reloaded at start, rewritten on every switch).
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Default time a replaced upstream keeps its sessions.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

impl From<ServeArgs> for crate::edge::ServeConfig {
    fn from(a: ServeArgs) -> Self {
        Self {
            services: a.services,
            listen_ip: a.listen_ip,
            internal_port: a.internal_port,
            in_network_ports: a.in_network_ports,
            admin: a.admin,
            admin_token_file: a.admin_token_file,
            state_file: a.state_file,
            drain_timeout: a.drain_timeout,
        }
    }
}

// `settings` is for the host-side commands only.
#[cfg_attr(not(feature = "cli"), allow(unused_variables))]
pub fn run(settings: &Settings, args: EdgeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EdgeCommand::Serve(a) => crate::edge::serve(a.into()).map(|()| ExitCode::Ok),
        #[cfg(feature = "cli")]
        EdgeCommand::Up => up(settings),
        #[cfg(feature = "cli")]
        EdgeCommand::Status => status(settings),
        #[cfg(feature = "cli")]
        EdgeCommand::Replace => replace(settings),
    }
}

#[cfg(feature = "cli")]
impl Render for UpReport {
    fn human(&self) -> String {
        format!("edge {}: {} ({})", self.container, self.action, self.image)
    }
}

#[cfg(feature = "cli")]
impl Render for ReplaceReport {
    fn human(&self) -> String {
        format!(
            "edge {} replaced ({}): gap {} ms on {} ({} of {} probes failed)",
            self.container, self.image, self.gap_ms, self.probed, self.failed_probes, self.probes
        )
    }
}

#[cfg(feature = "cli")]
/// `edge status`: the container as described, and its routes.
#[derive(Serialize)]
struct Status {
    edge: BTreeMap<String, serde_json::Value>,
    routes: BTreeMap<String, RouteView>,
}

#[cfg(feature = "cli")]
impl Render for Status {
    fn human(&self) -> String {
        let rows = self
            .routes
            .iter()
            .map(|(s, r)| {
                vec![
                    s.clone(),
                    format!("{:?}", r.kind).to_lowercase(),
                    r.revision.map(|n| format!("r{n}")).unwrap_or("-".into()),
                    r.upstream.clone(),
                    r.since.clone(),
                    r.draining
                        .iter()
                        .map(|d| {
                            format!(
                                "{} ({} sessions, until {})",
                                d.upstream, d.sessions, d.deadline
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect();
        let desc = &self.edge;
        let text = |k: &str| desc.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        let mem = desc
            .get("memory_used_bytes")
            .and_then(|v| v.as_u64())
            .map(|b| format!(", memory used {:.1} MiB", b as f64 / (1u64 << 20) as f64))
            .unwrap_or_default();
        format!(
            "edge {}: {}{mem}\n{}",
            text("container"),
            text("state"),
            output::table(
                &["SERVICE", "KIND", "REVISION", "UPSTREAM", "SINCE", "DRAINING"],
                rows
            )
        )
    }
}

#[cfg(feature = "cli")]
fn require_enabled(project: &crate::rollout::Project) -> anyhow::Result<()> {
    if project.manifest.edge.enabled {
        Ok(())
    } else {
        Err(CommandError::usage(
            "the manifest does not enable the edge (`edge: {enabled: true}`); nothing was changed",
        )
        .into())
    }
}

#[cfg(feature = "cli")]
fn up(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let say = output::say(settings);
        let r = container::up(&engine, &project, &say).await?;
        output::emit(settings, &r)?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(feature = "cli")]
fn status(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let desc = container::describe(&engine, &project).await?;
        let routes = container::admin(&project).routes().await?;
        output::emit(
            settings,
            &Status {
                edge: desc,
                routes: routes.routes,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(feature = "cli")]
fn replace(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    confirm(
        settings,
        "replace the edge container? every connection through it is cut and new ones wait for the swap",
    )?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let say = output::say(settings);
        let started = std::time::Instant::now();
        let r = container::replace(&engine, &project, &say).await?;
        let me = LockInfo::current("edge replace", None);
        Ledger::new(&project.state_dir).append(&Entry {
            ts: now_rfc3339(),
            event: "edge".into(),
            command: "edge replace".into(),
            who: me.who.clone(),
            host: me.host.clone(),
            pid: me.pid,
            outcome: "ok".into(),
            detail: Some(format!(
                "{} replaced ({}); gap {} ms on {} ({} of {} probes failed)",
                r.container, r.image, r.gap_ms, r.probed, r.failed_probes, r.probes
            )),
            duration_ms: started.elapsed().as_millis() as u64,
            ..Default::default()
        })?;
        output::emit(settings, &r)?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(feature = "cli")]
/// For deploy and rollback: with the edge enabled, make sure it runs (create or start it, route
/// what serves) and return where steps switch; `None` keeps today's behaviour.
pub(crate) async fn prepare_edge(
    engine: &crate::engine::docker::DockerEngine,
    project: &crate::rollout::Project,
    say: &dyn Fn(&str),
) -> anyhow::Result<Option<EdgeSwitch>> {
    if !project.manifest.edge.enabled {
        return Ok(None);
    }
    let up = container::up(engine, project, say).await?;
    if up.action == "layout-changed" {
        return Err(CommandError::usage(format!(
            "{} does not front the manifest's services and ports as they are now (or was created before the edge admin API required its token); run `mcpctl edge replace --yes` first (it cuts connections through the edge for about a second). Nothing was changed.",
            up.container
        ))
        .into());
    }
    Ok(Some(EdgeSwitch {
        admin: container::admin(project),
        drain_timeout: project.manifest.edge.drain_timeout,
    }))
}
