//! `mcpctl bases [list|build [NAME...]]`: the manifest's base images, built locally (no registry).

use clap::{Args, Subcommand};

use crate::cli::OutputFormat;
use crate::error::ExitCode;
use crate::images::bases;
use crate::settings::Settings;
use crate::{manifest, output};

#[derive(Args, Debug)]
pub struct BasesArgs {
    #[command(subcommand)]
    pub action: Option<BasesAction>,
}

#[derive(Subcommand, Debug)]
pub enum BasesAction {
    /// Show each base: its reference, recipe-hash tag, whether it is built and current, its size.
    List,
    /// Build missing bases (all, or those named): one debootstrap minbase per suite, variants
    /// derived from it by chroot apt-get, imported with `docker import`. Needs root and the Debian
    /// mirror; an unchanged recipe is never rebuilt.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Bases to build (default: every base the manifest defines).
    pub names: Vec<String>,
    /// Variants built at the same time.
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
}

fn mb(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{} MB", b / 1_000_000))
        .unwrap_or_else(|| "-".into())
}

pub fn run(settings: &Settings, args: &BasesArgs) -> anyhow::Result<ExitCode> {
    let loaded = manifest::load_checked(settings)?;
    let m = &loaded.manifest;
    match &args.action {
        None | Some(BasesAction::List) => {
            let st = bases::status(bases::specs(m, &[])?);
            match settings.output {
                OutputFormat::Json => output::json_line(&serde_json::json!({ "bases": st })),
                OutputFormat::Human => {
                    let rows = st
                        .iter()
                        .map(|s| {
                            vec![
                                s.spec.name.clone(),
                                s.spec.reference.clone(),
                                s.spec
                                    .hash_tag
                                    .clone()
                                    .unwrap_or_else(|| "(upstream image)".into()),
                                match (s.built, s.current) {
                                    (true, true) => "built".into(),
                                    (true, false) => "built (reference not tagged)".into(),
                                    _ => "missing".into(),
                                },
                                mb(s.size_bytes),
                            ]
                        })
                        .collect();
                    output::human(
                        settings,
                        &output::table(&["BASE", "REFERENCE", "RECIPE TAG", "STATE", "SIZE"], rows),
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
        Some(BasesAction::Build(b)) => {
            let specs = bases::specs(m, &b.names)?;
            let built = bases::build(&specs, b.jobs)?;
            match settings.output {
                OutputFormat::Json => output::json_line(&serde_json::json!({ "built": built })),
                OutputFormat::Human => {
                    let rows = built
                        .iter()
                        .map(|b| {
                            vec![
                                b.name.clone(),
                                b.reference.clone(),
                                if b.built_now {
                                    format!("built in {:.0} s", b.seconds)
                                } else {
                                    "cached".into()
                                },
                                mb(b.size_bytes),
                            ]
                        })
                        .collect();
                    output::human(
                        settings,
                        &output::table(&["BASE", "REFERENCE", "RESULT", "SIZE"], rows),
                    );
                }
            }
            Ok(ExitCode::Ok)
        }
    }
}
