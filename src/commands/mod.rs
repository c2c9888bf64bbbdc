//! One module per verb. Commands are thin: resolve inputs, call the domain, report through `output`.

mod render;
mod validate;

use crate::cli::Command;
use crate::error::ExitCode;
use crate::settings::Settings;

pub fn dispatch(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate => validate::run(settings),
        Command::Render(args) => render::run(settings, &args),
        Command::Bridge(args) => crate::bridge::run(args).map(|()| ExitCode::Ok),
    }
}
