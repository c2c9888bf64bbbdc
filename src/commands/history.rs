//! `mcpctl history [SERVICE]`: the ledger, newest last. Without a ledger (state directory lost),
//! the retained revisions from Docker labels are listed instead.

use clap::Args;
use serde_json::json;

use super::common::{connect, observe, open_project, runtime};
use crate::cli::OutputFormat;
use crate::error::ExitCode;
use crate::output;
use crate::rollout::ledger::Ledger;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only this service.
    pub service: Option<String>,
}

pub fn run(settings: &Settings, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    let ledger = Ledger::new(&project.state_dir);
    let entries: Vec<_> = ledger
        .read()
        .into_iter()
        .filter(|e| {
            args.service.is_none()
                || e.service == args.service
                || (e.event == "release"
                    && e.services.iter().any(|s| Some(s) == args.service.as_ref()))
        })
        .collect();
    if entries.is_empty() {
        // No ledger: what Docker still holds is the history we can show.
        return runtime()?.block_on(async {
            let engine = connect().await?;
            let observed = observe(&engine, &project).await?;
            let mut revs = Vec::new();
            for (name, o) in &observed.services {
                if args.service.as_ref().is_some_and(|s| s != name) {
                    continue;
                }
                for r in o.serving.iter().chain(o.retained.iter()) {
                    revs.push((r.release, name.clone(), r.name(), r.is_running(), r.image.clone()));
                }
            }
            revs.sort();
            match settings.output {
                OutputFormat::Json => output::json_line(&json!({"source": "labels", "revisions": revs.iter().map(|r| json!({"release": r.0, "service": r.1, "revision": r.2, "serving": r.3, "image": r.4})).collect::<Vec<_>>()})),
                OutputFormat::Human => {
                    output::human(settings, &format!("no ledger at {}; retained revisions from Docker labels:", ledger.path().display()));
                    output::human(settings, &output::table(&["RELEASE", "SERVICE", "REVISION", "SERVING", "IMAGE"], revs.into_iter().map(|r| vec![r.0.to_string(), r.1, r.2, if r.3 { "yes".into() } else { "".into() }, r.4]).collect()));
                }
            }
            Ok(ExitCode::Ok)
        });
    }
    match settings.output {
        OutputFormat::Json => {
            for e in &entries {
                output::json_line(&serde_json::to_value(e)?);
            }
        }
        OutputFormat::Human => {
            let rows = entries
                .iter()
                .map(|e| {
                    let what = match e.event.as_str() {
                        "release" => format!("release ({})", e.services.join(" ")),
                        "reconcile" => "reconcile".into(),
                        _ => e.service.clone().unwrap_or_default(),
                    };
                    vec![
                        e.release.to_string(),
                        e.ts.clone(),
                        e.command.clone(),
                        what,
                        format!(
                            "{} → {}",
                            e.from.as_deref().unwrap_or("-"),
                            e.to.as_deref().unwrap_or("-")
                        ),
                        e.outcome.clone(),
                        format!("{:.1}s", e.duration_ms as f64 / 1000.0),
                        [
                            e.failed_check.clone(),
                            e.detail.clone(),
                            e.message.clone().map(|m| format!("\"{m}\"")),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(": "),
                    ]
                })
                .collect();
            output::human(
                settings,
                &output::table(
                    &[
                        "RELEASE",
                        "WHEN",
                        "COMMAND",
                        "SERVICE",
                        "FROM → TO",
                        "OUTCOME",
                        "TOOK",
                        "DETAIL",
                    ],
                    rows,
                ),
            );
        }
    }
    Ok(ExitCode::Ok)
}
