//! `mcpctl audit`: the `tools/call` audit records the bridges wrote to their container logs, from
//! every revision that still exists (serving and retained), filtered, newest `--limit` kept,
//! oldest first. Parsing and filtering live in [`crate::audit`].

use std::time::SystemTime;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::common::{connect, observe, open_project, runtime};
use crate::audit::{self, Collector, Filter, Lines, Record, MAX_LINES_PER_CONTAINER};
use crate::engine::Engine;
use crate::error::{CommandError, ExitCode};
use crate::output::{self, Render};
use crate::settings::Settings;

#[derive(Args, Debug)]
#[command(
    after_help = "Records come from each revision's container log (stdout), so they \
    last as long as the container and its log: a pruned revision takes its records along, \
    and Docker's log rotation drops old lines. At most 200000 log lines are read per \
    container (its newest within --since/--until); when a container reaches that cap, older \
    records may exist (narrow --since/--until). Other log lines are skipped."
)]
pub struct AuditArgs {
    /// Only this service; repeatable [default: every service with a revision].
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// Only calls of this tool (exact name).
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    /// Only calls by this consumer (exact name; `anonymous` without authentication).
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,
    /// Only calls at or after this time: a duration before now (10m, 2h, 1d) or an RFC 3339 time
    /// in UTC (2026-12-03T13:00:00Z).
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = time_arg)]
    pub since: Option<SystemTime>,
    /// Only calls at or before this time (same forms as --since).
    #[arg(long, value_name = "DURATION|RFC3339", value_parser = time_arg)]
    pub until: Option<SystemTime>,
    /// Only calls that ended this way.
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Keep at most this many records (1 to 100000), the newest; the JSON's `truncated` tells
    /// when more matched.
    #[arg(long, default_value_t = audit::DEFAULT_LIMIT as u32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

fn time_arg(s: &str) -> Result<SystemTime, String> {
    audit::parse_time(s, SystemTime::now())
}

/// `--outcome` ([`audit::Outcome`]).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeArg {
    /// A result (without `isError`).
    Ok,
    /// A result with `isError: true`: the tool ran and reported a failure.
    #[value(name = "tool_error")]
    ToolError,
    /// A JSON-RPC error (from the server, or the bridge refusing the call).
    Error,
    /// No answer: the client went away or cancelled.
    Cancelled,
}

impl From<OutcomeArg> for audit::Outcome {
    fn from(o: OutcomeArg) -> Self {
        match o {
            OutcomeArg::Ok => Self::Ok,
            OutcomeArg::ToolError => Self::ToolError,
            OutcomeArg::Error => Self::Error,
            OutcomeArg::Cancelled => Self::Cancelled,
        }
    }
}

/// The records found: `{"records": [...], "count": N, "truncated": bool}`.
#[derive(Serialize)]
struct Report {
    records: Vec<Record>,
    count: usize,
    /// More records matched than `--limit`, or a container's log was read only up to the
    /// per-container line cap.
    truncated: bool,
    #[serde(skip)]
    matched: usize,
    /// Containers whose log reached the line cap.
    #[serde(skip)]
    capped: Vec<String>,
}

impl Render for Report {
    fn human(&self) -> String {
        if self.records.is_empty() {
            return "no audit records".into();
        }
        let rows = self
            .records
            .iter()
            .map(|r| {
                vec![
                    r.ts.clone(),
                    r.service.clone(),
                    r.consumer.clone(),
                    r.tool.clone(),
                    match r.error_code {
                        Some(code) => format!("{} ({code})", r.outcome),
                        None => r.outcome.clone(),
                    },
                    duration(r.duration_ms),
                ]
            })
            .collect();
        let mut text = output::table(
            &["TS", "SERVICE", "CONSUMER", "TOOL", "OUTCOME", "DURATION"],
            rows,
        );
        if self.matched > self.count {
            text.push_str(&format!(
                "\n(the newest {} of {} matching records; raise --limit or narrow the filters)",
                self.count, self.matched
            ));
        }
        text
    }

    fn diagnostics(&self) -> Vec<String> {
        self.capped
            .iter()
            .map(|c| {
                format!(
                    "{c}: read its newest {MAX_LINES_PER_CONTAINER} log lines only; older \
                     records may exist (narrow --since/--until)"
                )
            })
            .collect()
    }
}

/// `12.3 ms`, `1.20 s`.
fn duration(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn run(settings: &Settings, args: &AuditArgs) -> anyhow::Result<ExitCode> {
    if let (Some(s), Some(u)) = (args.since, args.until) {
        if s > u {
            return Err(CommandError::usage("audit: --since is after --until").into());
        }
    }
    let filter = Filter {
        tool: args.tool.clone(),
        consumer: args.consumer.clone(),
        outcome: args.outcome.map(Into::into),
        since: args.since,
        until: args.until,
    };
    let project = open_project(settings)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let observed = observe(&engine, &project).await?;
        if let Some(s) = args.services.iter().find(|s| {
            !observed.services.contains_key(*s) && !project.manifest.services.contains_key(*s)
        }) {
            return Err(CommandError::usage(format!(
                "no service `{s}` in {} and no revision of it in project `{}`",
                settings.manifest_path.display(),
                project.name()
            ))
            .into());
        }
        let since = args.since.map(audit::unix_floor);
        let until = args.until.map(audit::unix_ceil_with_margin);
        let mut collector = Collector::new(filter, args.limit as usize);
        let mut capped = Vec::new();
        for (service, o) in &observed.services {
            if !args.services.is_empty() && !args.services.contains(service) {
                continue;
            }
            for rev in o.serving.iter().chain(&o.retained) {
                let name = rev.name();
                let mut lines = Lines::default();
                let mut sink = |chunk: &str| lines.push(chunk, |l| collector.line(&name, l));
                engine
                    .stdout_logs(
                        &rev.container,
                        MAX_LINES_PER_CONTAINER,
                        since,
                        until,
                        &mut sink,
                    )
                    .await?;
                if lines.finish(|l| collector.line(&name, l)) >= MAX_LINES_PER_CONTAINER {
                    capped.push(rev.container.clone());
                }
            }
        }
        let found = collector.finish();
        let truncated = found.truncated() || !capped.is_empty();
        output::emit(
            settings,
            &Report {
                count: found.records.len(),
                truncated,
                matched: found.matched,
                records: found.records,
                capped,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts: &str, outcome: &str, code: Option<i64>, ms: f64) -> Record {
        Record {
            ts: ts.into(),
            service: "fetch".into(),
            revision: "fetch-r3-abc".into(),
            consumer: "litellm".into(),
            tool: "fetch".into(),
            outcome: outcome.into(),
            duration_ms: ms,
            request_id: "0123456789abcdef".into(),
            rpc_id: "7".into(),
            error_code: code,
            error: code.map(|_| "bad".into()),
            arguments: None,
        }
    }

    #[test]
    fn the_report_is_one_json_object_and_an_aligned_table() {
        let r = Report {
            records: vec![
                record("2026-12-03T13:00:00.123Z", "ok", None, 12.345),
                record("2026-12-03T13:00:01.000Z", "error", Some(-32602), 1500.0),
            ],
            count: 2,
            truncated: true,
            matched: 5,
            capped: vec![],
        };
        let lines = r.json_lines().unwrap();
        assert_eq!(lines.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["records", "count", "truncated"]);
        assert_eq!(v["count"], 2);
        assert_eq!(v["records"][1]["error_code"], -32602);
        assert_eq!(v["records"][0]["revision"], "fetch-r3-abc");

        let text = r.human();
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[0].contains("TS") && rows[0].contains("DURATION"),
            "{text}"
        );
        assert!(
            rows[1].contains("12.3 ms") && rows[2].contains("1.50 s"),
            "{text}"
        );
        assert!(rows[2].contains("error (-32602)"), "{text}");
        // Aligned: the OUTCOME column starts at the same offset on every row.
        let col = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(col(rows[0], "OUTCOME"), col(rows[1], "ok"), "{text}");
        assert_eq!(col(rows[0], "OUTCOME"), col(rows[2], "error"), "{text}");
        assert!(text.contains("the newest 2 of 5"), "{text}");
    }

    #[test]
    fn an_empty_report_says_so() {
        let r = Report {
            records: vec![],
            count: 0,
            truncated: false,
            matched: 0,
            capped: vec!["mcp-fetch-r1".into()],
        };
        assert_eq!(r.human(), "no audit records");
        assert_eq!(r.diagnostics().len(), 1);
    }
}
