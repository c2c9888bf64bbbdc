//! Resolved, validated options shared by every command (paths, output format, confirmation policy).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::GlobalArgs;
use crate::output::OutputFormat;

#[derive(Debug, Clone)]
pub struct Settings {
    pub manifest_path: PathBuf,
    state_dir_override: Option<PathBuf>,
    pub output: OutputFormat,
    pub yes: bool,
    pub verbose: u8,
    pub quiet: bool,
    /// Whether stdin is a terminal: confirmations are asked only then (else `--yes` is required).
    pub interactive: bool,
}

impl Settings {
    pub fn from_args(args: &GlobalArgs) -> Self {
        Self {
            manifest_path: args.file.clone(),
            state_dir_override: args.state_dir.clone(),
            output: args.output,
            yes: args.yes,
            verbose: args.verbose,
            quiet: args.quiet,
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// The state directory for `project`: `--state-dir`, else `$XDG_STATE_HOME/mcpctl/<project>`, else
    /// `~/.local/state/mcpctl/<project>` — outside the checkout, so a `git clean` never loses it.
    pub fn state_dir(&self, project: &str) -> PathBuf {
        if let Some(dir) = &self.state_dir_override {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        base.join("mcpctl").join(project)
    }
}
