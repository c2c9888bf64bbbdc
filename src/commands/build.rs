//! `mcpctl build [SERVICE...]`: build missing images (tag = content hash of the build context and
//! base image id), or all of them with `--force`. Offline: the engine builds with no network.

use clap::Args;
use serde_json::json;

use super::common::{build_if_needed, connect, open_project_for, runtime};
use crate::engine::context::DigestCache;
use crate::error::ExitCode;
use crate::output;
use crate::rollout::desired;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Only these services (default: all).
    pub services: Vec<String>,
    /// Build even when the image for this content hash exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(settings: &Settings, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let cache = DigestCache::load(project.state_dir.join("cache/digests.json"));
        let desired = desired::compute(&engine, &project, &args.services, &cache).await?;
        let mut built = Vec::new();
        for d in &desired {
            let did = build_if_needed(&engine, settings, d, args.force).await?;
            output::human(
                settings,
                &format!(
                    "{}: {} {}",
                    d.summary.service,
                    d.summary.image,
                    if did { "built" } else { "up to date" }
                ),
            );
            built.push(
                json!({"service": d.summary.service, "image": d.summary.image, "built": did}),
            );
        }
        if settings.output == crate::cli::OutputFormat::Json {
            output::json_line(&json!({"event": "done", "images": built}));
        }
        Ok(ExitCode::Ok)
    })
}
