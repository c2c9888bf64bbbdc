//! mcpctl: parse flags, initialise tracing, dispatch to one command, map the outcome to an exit code.

use clap::Parser;

use mcpctl::error::exit_code_of;
use mcpctl::{cli, commands, output, settings};

fn main() {
    let cli = cli::Cli::parse();
    let settings = settings::Settings::from_args(&cli.global);
    output::init_tracing(&settings);
    let result = commands::dispatch(cli.command, &settings);
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            exit_code_of(&err)
        }
    };
    std::process::exit(code.code());
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        mcpctl::cli::Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_match_the_contract() {
        use mcpctl::error::ExitCode::*;
        let codes: Vec<i32> = [
            Ok,
            Runtime,
            Usage,
            GateFailedRestored,
            GateFailedRestoreFailed,
            LockHeld,
            SloBreach,
            Interrupted,
        ]
        .iter()
        .map(|c| c.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 130]);
    }
}
