//! `mcpctl logs SERVICE [--follow]`: the container log of a service's serving revision (or its newest
//! revision when none runs).

use clap::Args;

use super::common::{connect, observe, open_project, runtime};
use crate::engine::Engine;
use crate::error::{CommandError, ExitCode};
use crate::output;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub service: String,
    /// Keep streaming new lines (Ctrl-C to stop). Long form only: `-f` is the global `--file`.
    #[arg(long)]
    pub follow: bool,
    /// Lines from the end to start with.
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
}

pub fn run(settings: &Settings, args: &LogsArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let observed = observe(&engine, &project).await?;
        let o = observed.services.get(&args.service).ok_or_else(|| {
            CommandError::usage(format!(
                "no revision of `{}` exists in project `{}`",
                args.service,
                project.name()
            ))
        })?;
        let rev =
            o.serving.as_ref().or(o.retained.first()).ok_or_else(|| {
                CommandError::usage(format!("`{}` has no revision", args.service))
            })?;
        if o.serving.is_none() {
            output::diagnostic(&format!(
                "{}: nothing runs; showing the newest revision {}",
                args.service,
                rev.name()
            ));
        }
        if args.follow {
            let mut sink = |chunk: &str| output::human(settings, chunk.trim_end_matches('\n'));
            tokio::select! {
                r = engine.follow_logs(&rev.container, args.tail, &mut sink) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        } else {
            let text = engine.logs_tail(&rev.container, args.tail).await?;
            output::human(settings, text.trim_end_matches('\n'));
        }
        Ok(ExitCode::Ok)
    })
}
