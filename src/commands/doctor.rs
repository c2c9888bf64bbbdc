//! `mcpctl doctor`: the pre-flight of [`crate::doctor`] as one line per check, a fix under each
//! problem; exit 1 when any check fails (warnings do not), `--output json` for scripts.

use clap::Args;

use super::common::runtime;
use crate::doctor::{self, Level, Report};
use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::rollout::Project;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct DoctorArgs {}

impl Render for Report {
    fn human(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let tag = match c.level {
                Level::Pass => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("{tag}  {:width$}  {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("      {:width$}  fix: {fix}\n", ""));
            }
        }
        let (failed, warned, total) = (self.failures(), self.warnings(), self.checks.len());
        out.push_str(&match (failed, warned) {
            (0, 0) => format!("all {total} checks passed"),
            (0, w) => format!("{total} checks passed, {w} with a warning"),
            (f, 0) => format!("{f} of {total} checks failed"),
            (f, w) => format!("{f} of {total} checks failed, {w} more with a warning"),
        });
        out
    }
}

pub fn run(settings: &Settings, _args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let path = &settings.manifest_path;
    // A manifest that does not load is one failed check, not the end: the engine, clock and disk
    // checks still run.
    let project = match crate::manifest::load(path) {
        Ok(loaded) => {
            let state = settings.state_dir(&loaded.manifest.project);
            Project::new(loaded.manifest, path, state).map_err(|e| format!("{e:#}"))
        }
        Err(invalid) => Err(invalid.to_string()),
    };
    let report = runtime()?.block_on(doctor::run(path, project.as_ref().map_err(Clone::clone)));
    output::emit(settings, &report)?;
    Ok(if report.failures() > 0 {
        ExitCode::Runtime
    } else {
        ExitCode::Ok
    })
}
