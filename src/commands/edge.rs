//! `mcpctl edge serve|up|status|replace`: the stack's edge (src/edge/). `serve` runs inside the
//! edge container; the others drive it from the host.

use clap::{Args, Subcommand};
use serde_json::json;

use super::common::{confirm, connect, open_project, progress_printer, runtime};
use crate::cli::OutputFormat;
use crate::edge::container;
use crate::error::{CommandError, ExitCode};
use crate::output;
use crate::rollout::executor::EdgeSwitch;
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::LockInfo;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct EdgeArgs {
    #[command(subcommand)]
    pub command: EdgeCommand,
}

#[derive(Subcommand, Debug)]
pub enum EdgeCommand {
    /// Run the edge proxy (the edge container's command; not for the host).
    Serve(crate::edge::ServeArgs),
    /// Create or start the project's edge (idempotent) and route services that have none yet.
    Up,
    /// Routes: which upstream serves each service, and what still drains.
    Status,
    /// Recreate the edge container itself (new image or ports); measures the gap on a published port.
    Replace,
}

pub fn run(settings: &Settings, args: EdgeArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        EdgeCommand::Serve(a) => crate::edge::serve(a).map(|()| ExitCode::Ok),
        EdgeCommand::Up => up(settings),
        EdgeCommand::Status => status(settings),
        EdgeCommand::Replace => replace(settings),
    }
}

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

fn up(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let say = progress_printer(settings);
        let r = container::up(&engine, &project, &say).await?;
        match settings.output {
            OutputFormat::Json => output::json_line(&json!(r)),
            OutputFormat::Human => output::human(
                settings,
                &format!("edge {}: {} ({})", r.container, r.action, r.image),
            ),
        }
        Ok(ExitCode::Ok)
    })
}

fn status(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let desc = container::describe(&engine, &project).await?;
        let routes = container::admin(&project).routes().await?;
        match settings.output {
            OutputFormat::Json => {
                output::json_line(&json!({"edge": desc, "routes": routes.routes}))
            }
            OutputFormat::Human => {
                let rows = routes
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
                let mem = desc
                    .get("memory_used_bytes")
                    .and_then(|v| v.as_u64())
                    .map(|b| format!(", memory used {:.1} MiB", b as f64 / (1u64 << 20) as f64))
                    .unwrap_or_default();
                output::human(
                    settings,
                    &format!(
                        "edge {}: {}{mem}\n{}",
                        desc["container"].as_str().unwrap_or_default(),
                        desc["state"].as_str().unwrap_or_default(),
                        output::table(
                            &["SERVICE", "KIND", "REVISION", "UPSTREAM", "SINCE", "DRAINING"],
                            rows
                        )
                    ),
                );
            }
        }
        Ok(ExitCode::Ok)
    })
}

fn replace(settings: &Settings) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    require_enabled(&project)?;
    confirm(
        settings,
        "replace the edge container? every connection through it is cut and new ones wait for the swap",
    )?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let say = progress_printer(settings);
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
        match settings.output {
            OutputFormat::Json => output::json_line(&json!(r)),
            OutputFormat::Human => output::human(
                settings,
                &format!(
                    "edge {} replaced ({}): gap {} ms on {} ({} of {} probes failed)",
                    r.container, r.image, r.gap_ms, r.probed, r.failed_probes, r.probes
                ),
            ),
        }
        Ok(ExitCode::Ok)
    })
}

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
            "{} does not front the manifest's services and ports as they are now; run `mcpctl edge replace --yes` first (it cuts connections through the edge for about a second). Nothing was changed.",
            up.container
        ))
        .into());
    }
    Ok(Some(EdgeSwitch {
        admin: container::admin(project),
        drain_timeout: project.manifest.edge.drain_timeout,
    }))
}
