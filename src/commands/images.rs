//! `mcpctl images export --out DIR [SERVICE...]` and `mcpctl images import DIR`: the images a
//! project runs, as files to carry to another host (no registry). The work is in
//! `crate::images::transfer`; this file parses, shows progress and reports.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{connect, open_project_for, runtime};
use crate::error::{CommandError, ExitCode};
use crate::images::transfer::{self, LoadResult, Phase, Progress, User};
use crate::output::{self, progress::Bar, Render};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Save the images the project runs into DIR: one `docker save` tar per image and a
    /// manifest.json (each file's SHA-256 and size, image id, tags, the containers using it).
    Export(ExportArgs),
    /// Verify every file in DIR against its manifest.json — a missing or corrupt file stops the
    /// import before anything is loaded (exit 2) — then load the images the engine lacks and
    /// check each loaded image's id. Does not read services.yaml.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Directory to write into (created if missing). One that already holds an export is refused
    /// unless --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace the export already in DIR (its manifest.json and the files it listed).
    #[arg(long)]
    pub force: bool,
    /// Only these services: their serving revisions' images and the bases those are built from.
    /// Default: every serving revision and its base, plus the edge and exporter images (and the
    /// edge's base) when they run.
    pub services: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A directory written by `mcpctl images export`.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn used_by(users: &[User]) -> String {
    users
        .iter()
        .map(|u| match (&u.service, &u.revision) {
            (Some(s), Some(r)) => format!("{s} {r}"),
            _ => u.container.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn image_name(tags: &[String], id: &str) -> String {
    tags.first().cloned().unwrap_or_else(|| id.to_string())
}

/// `images export`.
#[derive(Serialize)]
struct ExportReport {
    event: &'static str,
    #[serde(flatten)]
    exported: transfer::Exported,
    manifest: PathBuf,
    skipped: Vec<transfer::Skipped>,
}

impl Render for ExportReport {
    fn human(&self) -> String {
        let e = &self.exported;
        let rows = e
            .images
            .iter()
            .map(|i| {
                vec![
                    image_name(&i.entry.repo_tags, &i.entry.image_id),
                    i.entry.role.as_str().to_string(),
                    used_by(&i.entry.used_by),
                    mb(i.entry.size),
                    format!("{:.1} s", i.seconds),
                    i.entry.file.clone(),
                ]
            })
            .collect();
        let mut s = output::table(&["IMAGE", "ROLE", "USED BY", "SIZE", "TIME", "FILE"], rows);
        s.push_str(&format!(
            "\nexported {} images ({}) to {} in {:.1} s; manifest: {}",
            e.images.len(),
            mb(e.bytes),
            e.dir.display(),
            e.seconds,
            self.manifest.display()
        ));
        for k in &self.skipped {
            s.push_str(&format!("\nnot exported: {} ({})", k.what, k.reason));
        }
        s
    }
}

/// `images import`.
#[derive(Serialize)]
struct ImportReport {
    event: &'static str,
    #[serde(flatten)]
    imported: transfer::Imported,
    loaded: usize,
    present: usize,
}

impl Render for ImportReport {
    fn human(&self) -> String {
        let i = &self.imported;
        let rows = i
            .images
            .iter()
            .map(|x| {
                vec![
                    image_name(&x.entry.repo_tags, &x.entry.image_id),
                    x.entry.role.as_str().to_string(),
                    match x.result {
                        LoadResult::Loaded => format!("loaded in {:.1} s", x.seconds),
                        LoadResult::Present => "already present".into(),
                    },
                    mb(x.entry.size),
                    x.entry.file.clone(),
                ]
            })
            .collect();
        let mut s = output::table(&["IMAGE", "ROLE", "RESULT", "SIZE", "FILE"], rows);
        s.push_str(&format!(
            "\nverified {} files; loaded {} images ({}), {} already present, in {:.1} s (project {}, exported {} by mcpctl {})",
            i.images.len(),
            self.loaded,
            mb(i.bytes_loaded),
            self.present,
            i.seconds,
            i.project,
            i.created,
            i.mcpctl_version
        ));
        s
    }
}

/// Turns the transfer's progress into a bar (on a TTY) and one line per finished item on stderr.
struct Reporter<'a> {
    settings: &'a Settings,
    bar: Bar,
    what: String,
    expected: u64,
    last_shown: u64,
}

impl Reporter<'_> {
    fn on(&mut self, p: Progress<'_>) {
        match p {
            Progress::Start {
                phase, what, bytes, ..
            } => {
                self.what = format!(
                    "{} {what}",
                    match phase {
                        Phase::Save => "save",
                        Phase::Verify => "verify",
                        Phase::Load => "load",
                    }
                );
                self.expected = bytes;
                self.last_shown = 0;
                self.bar.set_message(self.what.clone());
            }
            Progress::Bytes(n) => {
                // One message per MB is plenty for a person.
                if n >= self.last_shown + 1_000_000 {
                    self.last_shown = n;
                    self.bar
                        .set_message(format!("{} {}/{}", self.what, mb(n), mb(self.expected)));
                }
            }
            Progress::Line(line) => self.bar.set_message(format!("{}: {line}", self.what)),
            Progress::Done {
                what,
                bytes,
                seconds,
                outcome,
            } => {
                self.bar.inc(1);
                output::say(self.settings)(&format!(
                    "{what}: {outcome} ({}, {seconds:.1} s)",
                    mb(bytes)
                ));
            }
        }
    }
}

pub fn run(settings: &Settings, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        ImagesCommand::Export(a) => export(settings, a),
        ImagesCommand::Import(a) => import(settings, a),
    }
}

fn export(settings: &Settings, args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let selection = transfer::select(&engine, &project, &args.services).await?;
        if selection.images.is_empty() {
            anyhow::bail!(
                "nothing to export: no service of project `{}` has a serving revision (`mcpctl status`)",
                project.name()
            );
        }
        let mut rep = Reporter {
            settings,
            bar: Bar::steps(selection.images.len() as u64, "export"),
            what: String::new(),
            expected: 0,
            last_shown: 0,
        };
        let exported = transfer::export(
            &engine,
            project.name(),
            &selection.images,
            &args.out,
            args.force,
            &mut |p| rep.on(p),
        )
        .await?;
        drop(rep);
        output::emit(
            settings,
            &ExportReport {
                event: "exported",
                manifest: exported.dir.join(transfer::MANIFEST),
                exported,
                skipped: selection.skipped,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

fn import(settings: &Settings, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    // The manifest is read before the engine is asked: a directory that is no export is a usage
    // error even where no engine runs.
    let count = match transfer::read_manifest(&args.dir) {
        Ok(m) => m.images.len(),
        Err(e) => return Err(CommandError::usage(e.to_string()).into()),
    };
    runtime()?.block_on(async {
        let engine = connect().await?;
        let mut rep = Reporter {
            settings,
            // Every file is verified, then loaded (or found present).
            bar: Bar::steps(2 * count as u64, "import"),
            what: String::new(),
            expected: 0,
            last_shown: 0,
        };
        let imported = match transfer::import(&engine, &args.dir, &mut |p| rep.on(p)).await {
            Ok(i) => i,
            Err(e) if e.downcast_ref::<transfer::VerifyError>().is_some() => {
                return Err(CommandError::usage(e.to_string()).into())
            }
            Err(e) => return Err(e),
        };
        drop(rep);
        let loaded = imported
            .images
            .iter()
            .filter(|i| i.result == LoadResult::Loaded)
            .count();
        output::emit(
            settings,
            &ImportReport {
                event: "imported",
                present: imported.images.len() - loaded,
                loaded,
                imported,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::transfer::{Entry, Exported, ExportedImage, Role};

    #[test]
    fn the_export_report_names_each_file_and_its_users() {
        let entry = Entry {
            file: "service-p_alpha_1-0123456789ab.tar".into(),
            sha256: "0".repeat(64),
            size: 12_345_678,
            image_id: format!("sha256:{}", "0".repeat(64)),
            repo_tags: vec!["p/alpha:1".into()],
            role: Role::Service,
            used_by: vec![User {
                container: "p-alpha-r3".into(),
                service: Some("alpha".into()),
                revision: Some("r3-0123abcd".into()),
            }],
        };
        let r = ExportReport {
            event: "exported",
            exported: Exported {
                dir: "/x".into(),
                project: "p".into(),
                mcpctl_version: "0.1.0".into(),
                images: vec![ExportedImage {
                    entry,
                    seconds: 0.5,
                }],
                bytes: 12_345_678,
                seconds: 0.7,
            },
            manifest: "/x/manifest.json".into(),
            skipped: vec![transfer::Skipped {
                what: "beta".into(),
                reason: "no serving revision".into(),
            }],
        };
        let h = r.human();
        assert!(
            h.contains("alpha r3-0123abcd") && h.contains("12.3 MB"),
            "{h}"
        );
        assert!(
            h.contains("not exported: beta (no serving revision)"),
            "{h}"
        );
        let v: serde_json::Value = serde_json::from_str(&r.json_lines().unwrap()[0]).unwrap();
        assert_eq!(v["event"], "exported");
        assert_eq!(v["project"], "p");
        assert_eq!(v["images"][0]["role"], "service");
        assert_eq!(v["images"][0]["used_by"][0]["revision"], "r3-0123abcd");
        assert_eq!(v["images"][0]["sha256"], "0".repeat(64));
    }
}
