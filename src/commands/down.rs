//! `mcpctl down [--volumes]`: remove the project's containers (every revision) and its network,
//! after confirmation and under the lock. Named volumes (data) only with `--volumes`, and then
//! only after a backup set of them was taken (asked on a terminal; without one, `--no-backup` is
//! the only way to skip it); images stay (`mcpctl prune` removes those no revision uses).

use clap::Args;
use serde::Serialize;

use super::common::{connect, open_project, release_lock, runtime, take_lock};
use crate::engine::Engine;
use crate::error::{CommandError, ExitCode};
use crate::output::{self, confirm, Render};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::{self, LockInfo};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct DownArgs {
    /// Also remove the project's named volumes — this deletes their data. A backup set is taken
    /// first (`mcpctl backup`; offered on a terminal), unless --no-backup.
    #[arg(long)]
    pub volumes: bool,
    /// With --volumes: delete the data without taking a backup set first.
    #[arg(long, requires = "volumes")]
    pub no_backup: bool,
    /// With --volumes: where the backup set goes (default as for `mcpctl backup`).
    #[arg(
        long,
        value_name = "DIR",
        requires = "volumes",
        conflicts_with = "no_backup"
    )]
    pub backup_out: Option<std::path::PathBuf>,
    /// Why: recorded on the lock and in the ledger.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Remove a lock left by another run first.
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    containers: Vec<String>,
    volumes: Vec<String>,
    /// The backup set taken before the volumes were removed.
    backup: Option<std::path::PathBuf>,
    #[serde(skip)]
    project: &'a str,
    /// `--volumes` was given.
    #[serde(skip)]
    with_volumes: bool,
}

impl Render for Report<'_> {
    fn human(&self) -> String {
        format!(
            "project `{}` is down ({} containers removed{}); images are kept for a later deploy",
            self.project,
            self.containers.len(),
            if self.with_volumes {
                match &self.backup {
                    Some(b) => format!(
                        ", {} volumes removed after backup set {}",
                        self.volumes.len(),
                        b.display()
                    ),
                    None => format!(", {} volumes removed", self.volumes.len()),
                }
            } else {
                ", volumes kept".into()
            }
        )
    }
}

pub fn run(settings: &Settings, args: &DownArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let filter = project.keys.project_filter(project.name());
        let lock_name = lock::lock_name(project.name());
        let containers: Vec<String> = engine
            .list_containers(&filter)
            .await?
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n != &lock_name)
            .collect();
        let volumes = if args.volumes {
            engine.list_volumes(&filter).await?
        } else {
            vec![]
        };
        let what = format!(
            "remove {} container(s) and the network of project `{}`{}",
            containers.len(),
            project.name(),
            if args.volumes {
                format!(
                    " AND {} volume(s) with their data ({})",
                    volumes.len(),
                    volumes.join(", ")
                )
            } else {
                String::new()
            }
        );
        confirm(settings, &what)?;
        let backup_first = args.volumes
            && !volumes.is_empty()
            && !args.no_backup
            && output::ask(settings, "take a backup set of the data first?", true)?;
        let ledger = Ledger::new(&project.state_dir);
        let me = LockInfo::current(
            if args.volumes {
                "down --volumes"
            } else {
                "down"
            },
            args.message.as_deref(),
        );
        let held = take_lock(&engine, &project, settings, &me, args.force_unlock, &ledger).await?;
        let say = output::say(settings);
        let result = async {
            let backup = if backup_first {
                let created = super::backup::take(settings, &project, &engine, &[], args.backup_out.as_deref())
                    .await
                    .map_err(|e| {
                        CommandError::new(
                            ExitCode::Runtime,
                            format!("{e:#}\nthe backup before removing the volumes failed, so nothing was removed; fix it, or pass --no-backup to delete the data without one"),
                        )
                    })?;
                say(&format!("backup set {} taken", created.path.display()));
                Some(created.path)
            } else {
                None
            };
            for c in &containers {
                engine.remove_container(c).await?;
                say(&format!("removed container {c}"));
            }
            for n in engine.list_networks(&filter).await? {
                engine.remove_network(&n).await?;
                say(&format!("removed network {n}"));
            }
            for v in &volumes {
                engine.remove_volume(v).await?;
                say(&format!("removed volume {v}"));
            }
            anyhow::Ok(backup)
        }
        .await;
        release_lock(&engine, &project, &held).await;
        let backup = result?;
        ledger.append(&Entry {
            ts: now_rfc3339(),
            event: "down".into(),
            command: me.command.clone(),
            who: me.who.clone(),
            host: me.host.clone(),
            pid: me.pid,
            message: args.message.clone(),
            outcome: "ok".into(),
            detail: Some(format!(
                "{} containers, {} volumes removed",
                containers.len(),
                volumes.len()
            )),
            ..Default::default()
        })?;
        output::emit(
            settings,
            &Report {
                containers,
                volumes,
                backup,
                project: project.name(),
                with_volumes: args.volumes,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}
