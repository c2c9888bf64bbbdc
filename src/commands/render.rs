//! `mcpctl render`: write (or `--check`) every generated file for the manifest.

use crate::cli::{OutputFormat, RenderArgs};
use crate::error::{CommandError, ExitCode};
use crate::settings::Settings;
use crate::{manifest, output, render};

pub fn run(settings: &Settings, args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = manifest::load_checked(settings)?;
    let artifacts = render::render(&loaded.manifest, args.only)?;
    if args.check {
        let differing = render::differences(&args.out, &artifacts);
        match settings.output {
            OutputFormat::Json => output::json_line(&serde_json::json!({
                "out": args.out, "checked": artifacts.len(), "differing": differing,
            })),
            OutputFormat::Human => {
                for path in &differing {
                    output::human(
                        settings,
                        &format!("differs: {}", args.out.join(path).display()),
                    );
                }
            }
        }
        if differing.is_empty() {
            output::human(
                settings,
                &format!(
                    "{}: {} files up to date",
                    args.out.display(),
                    artifacts.len()
                ),
            );
            return Ok(ExitCode::Ok);
        }
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "{} of {} rendered files differ in {}; run `mcpctl render --out {}` to update them",
                differing.len(),
                artifacts.len(),
                args.out.display(),
                args.out.display()
            ),
        )
        .into());
    }
    render::write(&args.out, &artifacts)?;
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({
            "out": args.out,
            "files": artifacts.iter().map(|a| serde_json::json!({"path": a.path, "kind": a.kind})).collect::<Vec<_>>(),
        })),
        OutputFormat::Human => {
            for a in &artifacts {
                output::human(
                    settings,
                    &format!("wrote {}", args.out.join(&a.path).display()),
                );
            }
        }
    }
    Ok(ExitCode::Ok)
}
