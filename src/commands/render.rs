//! `mcpctl render`: write (or `--check`) every generated file for the manifest.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::{RenderArgs, RenderTarget};
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
    let artifacts = match args.target {
        RenderTarget::Docker => {
            if args.registry.is_some() || args.images.is_some() || !args.internet.is_empty() {
                return Err(CommandError::usage(
                    "--registry, --images and --internet apply to `--target kubernetes` only",
                )
                .into());
            }
            render::render(&loaded.manifest, args.only.map(Into::into))?
        }
        RenderTarget::Kubernetes => {
            if args.only.is_some() {
                return Err(CommandError::usage(
                    "--only selects Docker artifacts; `--target kubernetes` renders one set",
                )
                .into());
            }
            let m = &loaded.manifest;
            let tags = match &args.images {
                Some(dir) => render::kubernetes::tags_from_export(dir, &m.project)
                    .map_err(|e| CommandError::usage(format!("{e:#}")))?,
                None => Default::default(),
            };
            let opts = render::kubernetes::Options {
                registry: args.registry.clone(),
                tags,
                internet: args.internet.clone(),
            };
            render::kubernetes::render(m, &opts)
                .map_err(|e| CommandError::usage(format!("{e:#}")))?
        }
    };
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
                "{} of {} rendered files differ in {}; run `mcpctl render{} --out {}` to update them",
                differ,
                artifacts.len(),
                args.out.display(),
                match args.target {
                    RenderTarget::Docker => "",
                    RenderTarget::Kubernetes => " --target kubernetes",
                },
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
