//! `mcpctl validate`: every problem in the manifest, with position and fix; exit 2 on any error.

use crate::cli::OutputFormat;
use crate::error::ExitCode;
use crate::manifest::{self, Diagnostic, Severity};
use crate::output;
use crate::settings::Settings;

pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let file = settings.manifest_path.display().to_string();
    let (diags, services) = match manifest::load(&settings.manifest_path) {
        Ok(loaded) => (loaded.warnings, loaded.manifest.services.len()),
        Err(invalid) => (invalid.diagnostics, 0),
    };
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({
            "file": file,
            "ok": errors == 0,
            "errors": errors,
            "warnings": warnings,
            "services": services,
            "diagnostics": diags,
        })),
        OutputFormat::Human => {
            for d in &diags {
                output::diagnostic(&d.to_string());
            }
            if errors == 0 {
                output::human(settings, &summary_ok(&file, services, &diags));
            } else {
                output::diagnostic(&format!(
                    "{file}: {errors} error{}, {warnings} warning{}; nothing was changed",
                    plural(errors),
                    plural(warnings)
                ));
            }
        }
    }
    Ok(if errors == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Usage
    })
}

fn summary_ok(file: &str, services: usize, diags: &[Diagnostic]) -> String {
    format!(
        "{file}: valid ({services} services, {} warning{})",
        diags.len(),
        plural(diags.len())
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
