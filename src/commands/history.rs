//! `mcpctl history [SERVICE]`: the ledger, newest last. Without a ledger (state directory lost),
//! the retained revisions from Docker labels are listed instead.

use clap::Args;
use serde::Serialize;

use super::common::{connect, observe, open_project, runtime};
use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::rollout::ledger::{Entry, Ledger};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Only this service.
    pub service: Option<String>,
}

/// The ledger's entries: JSON Lines, one entry each.
#[derive(Serialize)]
#[serde(transparent)]
struct Ledgered(Vec<Entry>);

impl Render for Ledgered {
    fn human(&self) -> String {
        let rows = self
            .0
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
        output::table(
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
        )
    }

    fn json_lines(&self) -> serde_json::Result<Vec<String>> {
        self.0.iter().map(serde_json::to_string).collect()
    }
}

/// One revision Docker still holds (no ledger to read).
#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Retained {
    release: u64,
    service: String,
    revision: String,
    serving: bool,
    image: String,
}

/// What Docker labels tell when the ledger is gone.
#[derive(Serialize)]
struct FromLabels {
    source: &'static str,
    revisions: Vec<Retained>,
    #[serde(skip)]
    ledger: String,
}

impl Render for FromLabels {
    fn human(&self) -> String {
        let rows = self
            .revisions
            .iter()
            .map(|r| {
                vec![
                    r.release.to_string(),
                    r.service.clone(),
                    r.revision.clone(),
                    if r.serving { "yes".into() } else { "".into() },
                    r.image.clone(),
                ]
            })
            .collect();
        format!(
            "no ledger at {}; retained revisions from Docker labels:\n{}",
            self.ledger,
            output::table(
                &["RELEASE", "SERVICE", "REVISION", "SERVING", "IMAGE"],
                rows
            )
        )
    }
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
            let mut revisions = Vec::new();
            for (name, o) in &observed.services {
                if args.service.as_ref().is_some_and(|s| s != name) {
                    continue;
                }
                for r in o.serving.iter().chain(o.retained.iter()) {
                    revisions.push(Retained {
                        release: r.release,
                        service: name.clone(),
                        revision: r.name(),
                        serving: r.is_running(),
                        image: r.image.clone(),
                    });
                }
            }
            revisions.sort();
            output::emit(
                settings,
                &FromLabels {
                    source: "labels",
                    revisions,
                    ledger: ledger.path().display().to_string(),
                },
            )?;
            Ok(ExitCode::Ok)
        });
    }
    output::emit(settings, &Ledgered(entries))?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_is_json_lines_and_one_table() {
        let entry = |release| Entry {
            release,
            ts: "2025-01-01T00:00:00Z".into(),
            event: "step".into(),
            command: "deploy".into(),
            service: Some("alpha".into()),
            outcome: "ok".into(),
            duration_ms: 2500,
            ..Default::default()
        };
        let l = Ledgered(vec![entry(1), entry(2)]);
        let lines = l.json_lines().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&lines[1]).unwrap()["release"],
            2
        );
        let table = l.human();
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.contains("2.5s"), "{table}");
    }
}
