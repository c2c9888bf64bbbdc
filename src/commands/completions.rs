//! `mcpctl completions SHELL`: the shell completion script, generated from the clap definitions
//! (clap_complete), so it always matches the binary that prints it.

use clap::{Args, CommandFactory};

use crate::error::ExitCode;

#[derive(Args, Debug)]
#[command(
    after_help = "Install for bash (what `scripts/setup` does as root):\n  \
    mcpctl completions bash > /usr/share/bash-completion/completions/mcpctl\n\
    zsh: write `_mcpctl` into a directory of $fpath; fish: ~/.config/fish/completions/mcpctl.fish"
)]
pub struct CompletionsArgs {
    /// The shell to generate the script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::cli::Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "mcpctl", &mut script);
    let script = String::from_utf8(script)?;
    crate::output::write_stdout(script.trim_end_matches('\n'));
    Ok(ExitCode::Ok)
}
