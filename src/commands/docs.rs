//! `mcpctl docs [--out DIR] [--check]`: the API reference from each deployed service's live
//! tools/list (`crate::apidocs`). `--check` writes nothing and exits 1 listing the files that
//! differ, like `render --check`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::common::{open_project, runtime};
use crate::error::{CommandError, ExitCode};
use crate::output::{self, Render};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct DocsArgs {
    /// Directory of the reference (one page per service and README.md).
    #[arg(long, default_value = "docs/api")]
    pub out: PathBuf,
    /// Write nothing; exit 1 listing the files that differ from what the deployed stack reports.
    #[arg(long)]
    pub check: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    out: &'a Path,
    check: bool,
    files: Vec<PathBuf>,
    /// `--check`: files that differ, are missing or would be removed.
    differing: Vec<PathBuf>,
    /// Pages of services no longer listed, removed by this run.
    removed: Vec<PathBuf>,
}

impl Render for Report<'_> {
    fn human(&self) -> String {
        let at = |p: &PathBuf| self.out.join(p).display().to_string();
        if self.check {
            if self.differing.is_empty() {
                return format!(
                    "{}: {} files up to date",
                    self.out.display(),
                    self.files.len()
                );
            }
            return self
                .differing
                .iter()
                .map(|p| format!("differs: {}", at(p)))
                .collect::<Vec<_>>()
                .join("\n");
        }
        self.files
            .iter()
            .map(|p| format!("wrote {}", at(p)))
            .chain(self.removed.iter().map(|p| format!("removed {}", at(p))))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn run(settings: &Settings, args: &DocsArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    let key = crate::rollout::secrets::install_key(&project.state_dir)?;
    let token = Some(crate::auth::mcpctl_token(&key));
    let listings = runtime()?.block_on(crate::apidocs::fetch(
        &project.manifest,
        token,
        Duration::from_secs(30),
    ))?;
    let files = crate::apidocs::files(&project.manifest, &listings);
    let names = files.iter().map(|f| f.path.clone()).collect();
    if args.check {
        let differing = crate::apidocs::differences(&args.out, &files);
        let n = differing.len();
        output::emit(
            settings,
            &Report {
                out: &args.out,
                check: true,
                files: names,
                differing,
                removed: Vec::new(),
            },
        )?;
        if n == 0 {
            return Ok(ExitCode::Ok);
        }
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "{n} file(s) in {} differ from what the deployed services report; run `mcpctl docs --out {}` and commit the result",
                args.out.display(),
                args.out.display()
            ),
        )
        .into());
    }
    let removed = crate::apidocs::write(&args.out, &files)?;
    output::emit(
        settings,
        &Report {
            out: &args.out,
            check: false,
            files: names,
            differing: Vec::new(),
            removed,
        },
    )?;
    Ok(ExitCode::Ok)
}
