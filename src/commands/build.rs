//! `mcpctl build [SERVICE...]`: build missing images (tag = content hash of the build context and
//! base image id), or all of them with `--force`. Offline: the engine builds with no network.

use clap::Args;
use serde::Serialize;

use super::common::{build_if_needed, connect, open_project_for, runtime};
use crate::engine::context::DigestCache;
use crate::error::ExitCode;
use crate::output::{self, progress::Bar, Render};
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

#[derive(Serialize)]
struct Image {
    service: String,
    image: String,
    built: bool,
}

#[derive(Serialize)]
struct Report {
    event: &'static str,
    images: Vec<Image>,
}

impl Render for Report {
    fn human(&self) -> String {
        self.images
            .iter()
            .map(|i| {
                format!(
                    "{}: {} {}",
                    i.service,
                    i.image,
                    if i.built { "built" } else { "up to date" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn run(settings: &Settings, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let cache = DigestCache::load(project.state_dir.join("cache/digests.json"));
        let desired = desired::compute(&engine, &project, &args.services, &cache).await?;
        let bar = Bar::steps(desired.len() as u64, "build");
        let mut report = Report {
            event: "done",
            images: Vec::new(),
        };
        for d in &desired {
            bar.set_message(d.summary.service.clone());
            let built = match build_if_needed(&engine, settings, d, args.force).await {
                Ok(built) => built,
                Err(e) => {
                    // What was built before the failure stays listed (human output only).
                    if !report.images.is_empty() {
                        output::human(settings, &report.human());
                    }
                    return Err(e);
                }
            };
            bar.inc(1);
            report.images.push(Image {
                service: d.summary.service.clone(),
                image: d.summary.image.clone(),
                built,
            });
        }
        drop(bar);
        output::emit(settings, &report)?;
        Ok(ExitCode::Ok)
    })
}
