//! The only place that prints: diagnostics, reports, tables and JSON for scripts.
//! Logs (tracing) go to stderr; results go to stdout.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::cli::OutputFormat;
use crate::settings::Settings;

/// Logs to stderr. `MCPCTL_LOG` overrides the level (an env-filter expression);
/// `MCPCTL_LOG_FORMAT=json` switches to JSON lines for log shippers.
pub fn init_tracing(settings: &Settings) {
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
        .with_writer(std::io::stderr)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Print a command's error for the operator: the message chain, most specific last.
pub fn print_error(err: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(stderr, "  caused by: {cause}");
    }
}

/// Write a JSON value as one line to stdout.
pub fn json_line(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
}

/// Write human text to stdout unless `--output json` was asked for.
pub fn human(settings: &Settings, text: &str) {
    if settings.output == OutputFormat::Human {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }
}

/// Write a diagnostic line (warnings, validation problems) to stderr.
pub fn diagnostic(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

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
