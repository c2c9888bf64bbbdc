//! `mcpctl prune`: remove stopped revisions beyond `retain_revisions` per service and the
//! project's images no container uses (after confirmation, under the lock). Never touches a
//! running revision or a volume.

use std::collections::BTreeSet;

use clap::Args;
use serde::Serialize;

use super::common::{connect, observe, open_project, release_lock, runtime, take_lock};
use crate::engine::Engine;
use crate::error::ExitCode;
use crate::output::{self, confirm, Render};
use crate::rollout::ledger::Ledger;
use crate::rollout::lock::LockInfo;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove a lock left by another run first.
    #[arg(long)]
    pub force_unlock: bool,
}

#[derive(Serialize)]
struct Report {
    revisions: Vec<String>,
    images: Vec<String>,
}

impl Render for Report {
    fn human(&self) -> String {
        format!(
            "pruned {} revision(s) and {} image(s)",
            self.revisions.len(),
            self.images.len()
        )
    }
}

pub fn run(settings: &Settings, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let keep_stopped = project.manifest.retain_revisions.max(1) as usize - 1;
        let observed = observe(&engine, &project).await?;
        let old: Vec<String> = observed
            .services
            .values()
            .flat_map(|o| {
                o.retained
                    .iter()
                    .skip(keep_stopped)
                    .map(|r| r.container.clone())
            })
            .collect();
        confirm(
            settings,
            &format!(
                "prune {} old revision(s) and unused images of `{}`",
                old.len(),
                project.name()
            ),
        )?;
        let ledger = Ledger::new(&project.state_dir);
        let me = LockInfo::current("prune", None);
        let held = take_lock(&engine, &project, settings, &me, args.force_unlock, &ledger).await?;
        let say = output::say(settings);
        let result = async {
            for c in &old {
                engine.remove_container(c).await?;
                say(&format!("removed old revision {c}"));
            }
            let filter = project.keys.project_filter(project.name());
            let used: BTreeSet<String> = engine
                .list_containers(&filter)
                .await?
                .into_iter()
                .map(|c| c.image)
                .collect();
            let mut removed = Vec::new();
            for img in engine.list_images(&filter).await? {
                let refs: Vec<String> = if img.tags.is_empty() {
                    vec![img.id.clone()]
                } else {
                    img.tags.clone()
                };
                if refs.iter().any(|r| used.contains(r)) || used.contains(&img.id) {
                    continue;
                }
                for r in refs {
                    match engine.remove_image(&r).await {
                        Ok(()) => {
                            say(&format!("removed image {r}"));
                            removed.push(r);
                        }
                        Err(e) => say(&format!("kept image {r}: {e}")),
                    }
                }
            }
            anyhow::Ok(removed)
        }
        .await;
        release_lock(&engine, &project, &held).await;
        let removed = result?;
        output::emit(
            settings,
            &Report {
                revisions: old,
                images: removed,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}
