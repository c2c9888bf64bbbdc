//! `mcpctl validate`: every problem in the manifest, with position and fix; exit 2 on any error.

use serde::Serialize;

use crate::error::ExitCode;
use crate::manifest::{self, Diagnostic, Severity};
use crate::output::{self, Render};
use crate::settings::Settings;

#[derive(Serialize)]
struct Report {
    file: String,
    ok: bool,
    errors: usize,
    warnings: usize,
    services: usize,
    diagnostics: Vec<Diagnostic>,
}

impl Render for Report {
    /// The summary when the manifest is valid (problems go to stderr).
    fn human(&self) -> String {
        if self.ok {
            summary_ok(&self.file, self.services, &self.diagnostics)
        } else {
            String::new()
        }
    }

    fn diagnostics(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.diagnostics.iter().map(|d| d.to_string()).collect();
        if !self.ok {
            lines.push(format!(
                "{}: {} error{}, {} warning{}; nothing was changed",
                self.file,
                self.errors,
                plural(self.errors),
                self.warnings,
                plural(self.warnings)
            ));
        }
        lines
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let file = settings.manifest_path.display().to_string();
    let (diagnostics, services) = match manifest::load(&settings.manifest_path) {
        Ok(loaded) => (loaded.warnings, loaded.manifest.services.len()),
        Err(invalid) => (invalid.diagnostics, 0),
    };
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let report = Report {
        file,
        ok: errors == 0,
        errors,
        warnings: diagnostics.len() - errors,
        services,
        diagnostics,
    };
    output::emit(settings, &report)?;
    Ok(if report.ok {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: bool) -> Report {
        Report {
            file: "services.yaml".into(),
            ok,
            errors: usize::from(!ok),
            warnings: 0,
            services: 9,
            diagnostics: vec![],
        }
    }

    #[test]
    fn a_valid_manifest_reads_as_a_summary_and_an_invalid_one_goes_to_stderr() {
        let good = report(true);
        assert_eq!(
            good.human(),
            "services.yaml: valid (9 services, 0 warnings)"
        );
        assert!(good.diagnostics().is_empty());
        let bad = report(false);
        assert_eq!(bad.human(), "");
        assert_eq!(
            bad.diagnostics(),
            ["services.yaml: 1 error, 0 warnings; nothing was changed"]
        );
        let v: serde_json::Value = serde_json::from_str(&bad.json_lines().unwrap()[0]).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "file",
                "ok",
                "errors",
                "warnings",
                "services",
                "diagnostics"
            ]
        );
    }
}
