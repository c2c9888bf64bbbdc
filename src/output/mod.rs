//! The only place that prints: reports (human tables or JSON), diagnostics, confirmation and
//! progress. Results go to stdout, everything else (logs, progress, problems) to stderr.
//!
//! A command hands a typed report to [`emit`]: the report is `Serialize` (its JSON form, the
//! stable interface for scripts) and [`Render`] (what a person reads). Every write goes through
//! the progress reporter ([`progress`]), so a log line or a result never tears a bar.
//!
//! Must not: decide anything about the stack, or be imported by the domain for more than a
//! diagnostic line.

#[cfg(feature = "cli")]
mod confirm;
// The in-container binary (no `cli` feature) has no bars: a plain writer without indicatif.
#[cfg_attr(not(feature = "cli"), path = "progress_plain.rs")]
pub mod progress;

use std::io::Write;

use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::settings::Settings;

#[cfg(feature = "cli")]
pub use confirm::{ask, confirm};

/// `--output`: human tables and reports, or JSON for scripts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Human,
    Json,
}

/// A command's result as a person reads it; its `Serialize` form is what `--output json` prints.
pub trait Render: Serialize {
    /// Text for stdout in human mode (empty: nothing is printed).
    fn human(&self) -> String;

    /// Lines for stderr in human mode, before [`Render::human`] (validation problems).
    fn diagnostics(&self) -> Vec<String> {
        Vec::new()
    }

    /// The JSON form: one object, or a stream of objects (JSON Lines) where a report is a stream.
    fn json_lines(&self) -> serde_json::Result<Vec<String>> {
        Ok(vec![serde_json::to_string(self)?])
    }
}

/// Print a command's report: JSON line(s) with `--output json`, else its human rendering.
pub fn emit<R: Render>(settings: &Settings, report: &R) -> anyhow::Result<()> {
    match settings.output {
        OutputFormat::Json => {
            for line in report.json_lines()? {
                write_stdout(&line);
            }
        }
        OutputFormat::Human => {
            for line in report.diagnostics() {
                diagnostic(&line);
            }
            let text = report.human();
            if !text.is_empty() {
                write_stdout(&text);
            }
        }
    }
    Ok(())
}

/// One event of a stream (e.g. a build log line) as a JSON line, with `--output json` only.
pub fn event<T: Serialize>(settings: &Settings, event: &T) {
    if settings.output == OutputFormat::Json {
        if let Ok(line) = serde_json::to_string(event) {
            write_stdout(&line);
        }
    }
}

/// Logs to stderr through the progress reporter (a log line never tears a bar). `MCPCTL_LOG`
/// overrides the level (an env-filter expression); `MCPCTL_LOG_FORMAT=json` switches to JSON
/// lines for log shippers. Also decides whether progress bars are drawn (see [`progress::init`]).
pub fn init_tracing(settings: &Settings) {
    progress::init(settings);
    let level = if settings.quiet {
        "warn"
    } else {
        match settings.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("MCPCTL_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let json = std::env::var("MCPCTL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::StderrWriter)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// Print a command's error for the operator: the message chain, most specific last.
pub fn print_error(err: &anyhow::Error) {
    let mut text = format!("error: {err}\n");
    for cause in err.chain().skip(1) {
        text.push_str(&format!("  caused by: {cause}\n"));
    }
    progress::write_stderr(text.as_bytes());
}

/// Write human text to stdout unless `--output json` was asked for (notes a report does not
/// carry, and streams such as `logs`).
pub fn human(settings: &Settings, text: &str) {
    if settings.output == OutputFormat::Human {
        write_stdout(text);
    }
}

/// Write a diagnostic line (warnings, validation problems, progress lines) to stderr.
pub fn diagnostic(text: &str) {
    progress::write_stderr(format!("{text}\n").as_bytes());
}

/// A printer of progress lines ("removed container …", the gate's steps) for stderr; silent with
/// `--quiet`.
pub fn say(settings: &Settings) -> impl Fn(&str) + '_ {
    move |line: &str| {
        if !settings.quiet {
            diagnostic(line);
        }
    }
}

/// One line to stdout, above any progress bar.
pub(crate) fn write_stdout(text: &str) {
    progress::suspend(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    });
}

#[cfg(feature = "cli")]
/// A plain table (no borders to copy-paste around), as operators expect from `docker ps`.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Stream(Vec<u32>);
    impl Render for Stream {
        fn human(&self) -> String {
            String::new()
        }
        fn json_lines(&self) -> serde_json::Result<Vec<String>> {
            self.0.iter().map(serde_json::to_string).collect()
        }
    }

    #[derive(Serialize)]
    struct One {
        b: u32,
        a: &'static str,
    }
    impl Render for One {
        fn human(&self) -> String {
            format!("{} {}", self.a, self.b)
        }
    }

    #[test]
    fn json_is_one_object_in_field_order_unless_the_report_is_a_stream() {
        let one = One { b: 1, a: "x" };
        assert_eq!(one.json_lines().unwrap(), vec![r#"{"b":1,"a":"x"}"#]);
        assert_eq!(one.human(), "x 1");
        assert_eq!(Stream(vec![1, 2]).json_lines().unwrap(), vec!["1", "2"]);
    }

    #[test]
    fn tables_have_no_borders() {
        let t = table(&["A", "B"], vec![vec!["1".into(), "2".into()]]);
        assert!(!t.contains('|') && !t.contains('+'), "{t}");
        assert!(t.contains('A') && t.contains('2'));
    }
}
