//! `mcpctl plan [SERVICE...]`: desired vs observed per service — create / update (what changed) /
//! unchanged / orphaned. Reads only; it may create the install key (first use) and the digest cache.

use clap::Args;
use serde::Serialize;

use super::common::{connect, observe, open_project_for, plan_rows, runtime};
use crate::engine::context::DigestCache;
use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::rollout::{desired, plan};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Only these services (default: all).
    pub services: Vec<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    project: &'a str,
    /// `actions`, flattened: `{"project": …, "actions": […]}`.
    #[serde(flatten)]
    plan: plan::Plan,
}

impl Render for Report<'_> {
    fn human(&self) -> String {
        let changed = self.plan.changed().count();
        format!(
            "{}\n{changed} to deploy; `mcpctl deploy` applies this plan",
            output::table(
                &["SERVICE", "ACTION", "FROM", "IMAGE", "CHANGES"],
                plan_rows(&self.plan.actions),
            ),
        )
    }
}

pub fn run(settings: &Settings, args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let cache = DigestCache::load(project.state_dir.join("cache/digests.json"));
        let desired = desired::compute(&engine, &project, &args.services, &cache).await?;
        let observed = observe(&engine, &project).await?;
        let summaries: Vec<_> = desired.iter().map(|d| d.summary.clone()).collect();
        let order = desired::dependency_order(&summaries);
        let ordered: Vec<_> = order
            .iter()
            .filter_map(|n| summaries.iter().find(|s| &s.service == n).cloned())
            .collect();
        let mut p = plan::diff(&ordered, &observed);
        if !args.services.is_empty() {
            p.actions.retain(|a| args.services.contains(&a.service));
        }
        output::emit(
            settings,
            &Report {
                project: project.name(),
                plan: p,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}
