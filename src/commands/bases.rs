//! `mcpctl bases [list|build [NAME...]]`: the manifest's base images, built locally (no registry).

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::error::ExitCode;
use crate::images::bases;
use crate::manifest;
use crate::output::{self, progress::Bar, Render};
use crate::settings::Settings;

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

/// `bases list`.
#[derive(Serialize)]
struct Listed {
    bases: Vec<bases::BaseStatus>,
}

impl Render for Listed {
    fn human(&self) -> String {
        let rows = self
            .bases
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
        output::table(&["BASE", "REFERENCE", "RECIPE TAG", "STATE", "SIZE"], rows)
    }
}

/// `bases build`.
#[derive(Serialize)]
struct Built {
    built: Vec<bases::Built>,
}

impl Render for Built {
    fn human(&self) -> String {
        let rows = self
            .built
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
        output::table(&["BASE", "REFERENCE", "RESULT", "SIZE"], rows)
    }
}

pub fn run(settings: &Settings, args: &BasesArgs) -> anyhow::Result<ExitCode> {
    let loaded = manifest::load_checked(settings)?;
    let m = &loaded.manifest;
    match &args.action {
        None | Some(BasesAction::List) => {
            let bases = bases::status(bases::specs(m, &[])?);
            output::emit(settings, &Listed { bases })?;
        }
        Some(BasesAction::Build(b)) => {
            let specs = bases::specs(m, &b.names)?;
            let local = specs.iter().filter(|s| s.hash_tag.is_some()).count();
            let bar = Bar::steps(local as u64, "bases");
            let built = bases::build(&specs, b.jobs, &|step| match step {
                bases::Step::Minbase(suite) => bar.set_message(format!("minbase {suite}")),
                bases::Step::Base(name) => bar.set_message(name.to_string()),
                bases::Step::Done(_) => bar.inc(1),
            })?;
            drop(bar);
            output::emit(settings, &Built { built })?;
        }
    }
    Ok(ExitCode::Ok)
}
