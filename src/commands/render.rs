//! `mcpctl render`: write (or `--check`) every generated file for the manifest.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::RenderArgs;
use crate::error::{CommandError, ExitCode};
use crate::output::{self, Render};
use crate::settings::Settings;
use crate::{manifest, render};

/// `render --check`: the files that differ from what would be rendered.
#[derive(Serialize)]
struct Checked<'a> {
    out: &'a Path,
    checked: usize,
    differing: Vec<PathBuf>,
}

impl Render for Checked<'_> {
    fn human(&self) -> String {
        if self.differing.is_empty() {
            return format!("{}: {} files up to date", self.out.display(), self.checked);
        }
        self.differing
            .iter()
            .map(|path| format!("differs: {}", self.out.join(path).display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Serialize)]
struct File<'a> {
    path: &'a Path,
    kind: render::ArtifactKind,
}

/// `render`: the files written.
#[derive(Serialize)]
struct Written<'a> {
    out: &'a Path,
    files: Vec<File<'a>>,
}

impl Render for Written<'_> {
    fn human(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("wrote {}", self.out.join(f.path).display()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn run(settings: &Settings, args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let loaded = manifest::load_checked(settings)?;
    let artifacts = render::render(&loaded.manifest, args.only.map(Into::into))?;
    if args.check {
        let differing = render::differences(&args.out, &artifacts);
        let differ = differing.len();
        output::emit(
            settings,
            &Checked {
                out: &args.out,
                checked: artifacts.len(),
                differing,
            },
        )?;
        if differ == 0 {
            return Ok(ExitCode::Ok);
        }
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "{} of {} rendered files differ in {}; run `mcpctl render --out {}` to update them",
                differ,
                artifacts.len(),
                args.out.display(),
                args.out.display()
            ),
        )
        .into());
    }
    render::write(&args.out, &artifacts)?;
    let files = artifacts
        .iter()
        .map(|a| File {
            path: &a.path,
            kind: a.kind,
        })
        .collect();
    output::emit(
        settings,
        &Written {
            out: &args.out,
            files,
        },
    )?;
    Ok(ExitCode::Ok)
}
