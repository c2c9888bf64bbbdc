//! One module per verb. Commands are thin: resolve inputs, call the domain, report through `output`.

pub mod audit;
pub mod bases;
pub mod bridge;
pub mod build;
mod common;
pub mod completions;
pub mod cutover;
pub mod deploy;
pub mod docker_proxy;
pub mod doctor;
pub mod down;
pub mod edge;
pub mod history;
pub mod images;
pub mod logs;
pub mod man;
pub mod plan;
pub mod prune;
mod render;
pub mod rollback;
pub mod soak;
pub mod status;
pub mod token;
mod validate;
pub mod vendor;
pub mod version;

use crate::cli::Command;
use crate::error::ExitCode;
use crate::settings::Settings;

pub fn dispatch(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate => validate::run(settings),
        Command::Render(args) => render::run(settings, &args),
        Command::Bridge(args) => bridge::run(args),
        Command::DockerProxy(args) => docker_proxy::run(args),
        Command::Build(args) => build::run(settings, &args),
        Command::Plan(args) => plan::run(settings, &args),
        Command::Deploy(args) => deploy::run(settings, &args),
        Command::Rollback(args) => rollback::run(settings, &args),
        Command::Status(args) => status::run(settings, &args),
        Command::History(args) => history::run(settings, &args),
        Command::Logs(args) => logs::run(settings, &args),
        Command::Audit(args) => audit::run(settings, &args),
        Command::Down(args) => down::run(settings, &args),
        Command::Prune(args) => prune::run(settings, &args),
        Command::Bases(args) => bases::run(settings, &args),
        Command::Images(args) => images::run(settings, &args),
        Command::Vendor(args) => vendor::run(settings, &args),
        Command::Soak(args) => soak::run(settings, &args),
        Command::Cutover(args) => cutover::run(settings, &args),
        Command::Edge(args) => edge::run(settings, args),
        Command::Token(args) => token::run(settings, &args),
        Command::Version => version::run(settings),
        Command::Doctor(args) => doctor::run(settings, &args),
        Command::Completions(args) => completions::run(&args),
        Command::Man(args) => man::run(settings, &args),
    }
}
