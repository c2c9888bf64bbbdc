//! `mcpctl man [--out DIR]`: roff manual pages generated from the clap definitions
//! (clap_mangen): with `--out`, one page per command and subcommand (`mcpctl.1`,
//! `mcpctl-deploy.1`, `mcpctl-bases-build.1`, …); without it, `mcpctl.1` on stdout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use serde::Serialize;

use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write one page per command and subcommand into this directory (created if missing);
    /// without it, the page of `mcpctl` itself goes to stdout (`mcpctl man | man -l -`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Serialize)]
struct Written {
    dir: PathBuf,
    pages: Vec<PathBuf>,
}

impl Render for Written {
    fn human(&self) -> String {
        format!(
            "wrote {} manual pages to {} (read one with `man -l {}`)",
            self.pages.len(),
            self.dir.display(),
            self.dir.join("mcpctl.1").display()
        )
    }
}

/// The command tree as the pages describe it: built (so subcommands carry their full names,
/// `mcpctl-deploy`), without clap's `help` subcommand.
fn command() -> clap::Command {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes the page of `cmd` and of every visible subcommand under it, depth first.
fn write_pages(cmd: &clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    fs_err::write(&path, page)?;
    pages.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, pages)?;
    }
    Ok(())
}

pub fn run(settings: &Settings, args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = command();
    let Some(dir) = &args.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        output::write_stdout(String::from_utf8(page)?.trim_end_matches('\n'));
        return Ok(ExitCode::Ok);
    };
    fs_err::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = Vec::new();
    write_pages(&cmd, dir, &mut pages)?;
    output::emit(
        settings,
        &Written {
            dir: dir.clone(),
            pages,
        },
    )?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_per_command_and_subcommand_named_after_its_path() {
        let t = tempfile::tempdir().unwrap();
        let mut pages = Vec::new();
        write_pages(&command(), t.path(), &mut pages).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "mcpctl.1",
            "mcpctl-deploy.1",
            "mcpctl-doctor.1",
            "mcpctl-bases-build.1",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let deploy = std::fs::read_to_string(t.path().join("mcpctl-deploy.1")).unwrap();
        assert!(
            deploy.starts_with(".ie") || deploy.contains(".TH"),
            "{deploy}"
        );
        assert!(deploy.contains("mcpctl\\-deploy"), "{deploy}");
    }
}
