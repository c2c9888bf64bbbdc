//! One module per verb. Commands are thin: resolve inputs, call the domain, report through `output`.

#[cfg(feature = "cli")]
pub mod audit;
#[cfg(feature = "cli")]
pub mod backup;
#[cfg(feature = "cli")]
pub mod bases;
pub mod bridge;
#[cfg(feature = "cli")]
pub mod build;
#[cfg(feature = "cli")]
mod common;
#[cfg(feature = "cli")]
pub mod completions;
#[cfg(feature = "cli")]
pub mod cutover;
#[cfg(feature = "cli")]
pub mod deploy;
#[cfg(feature = "docker-proxy")]
pub mod docker_proxy;
#[cfg(feature = "cli")]
pub mod docs;
#[cfg(feature = "cli")]
pub mod doctor;
#[cfg(feature = "cli")]
pub mod down;
pub mod edge;
#[cfg(feature = "cli")]
pub mod history;
#[cfg(feature = "cli")]
pub mod images;
#[cfg(feature = "cli")]
pub mod logs;
#[cfg(feature = "cli")]
pub mod man;
#[cfg(feature = "cli")]
pub mod plan;
#[cfg(feature = "cli")]
pub mod prune;
#[cfg(feature = "cli")]
mod render;
#[cfg(feature = "cli")]
pub mod rollback;
#[cfg(feature = "cli")]
pub mod soak;
#[cfg(feature = "cli")]
pub mod status;
#[cfg(feature = "cli")]
pub mod token;
#[cfg(feature = "cli")]
mod validate;
#[cfg(feature = "cli")]
pub mod vendor;
pub mod version;

use crate::cli::Command;
use crate::error::ExitCode;
use crate::settings::Settings;

pub fn dispatch(command: Command, settings: &Settings) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "cli")]
        Command::Validate => validate::run(settings),
        #[cfg(feature = "cli")]
        Command::Render(args) => render::run(settings, &args),
        Command::Bridge(args) => bridge::run(args),
        #[cfg(feature = "docker-proxy")]
        Command::DockerProxy(args) => docker_proxy::run(args),
        #[cfg(feature = "cli")]
        Command::Build(args) => build::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Plan(args) => plan::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Deploy(args) => deploy::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Rollback(args) => rollback::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Status(args) => status::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::History(args) => history::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Logs(args) => logs::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Audit(args) => audit::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Down(args) => down::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Backup(args) => backup::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Restore(args) => backup::restore(settings, &args),
        #[cfg(feature = "cli")]
        Command::Prune(args) => prune::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Bases(args) => bases::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Images(args) => images::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Vendor(args) => vendor::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Soak(args) => soak::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Cutover(args) => cutover::run(settings, &args),
        Command::Edge(args) => edge::run(settings, args),
        #[cfg(feature = "cli")]
        Command::Token(args) => token::run(settings, &args),
        Command::Version => version::run(settings),
        #[cfg(feature = "cli")]
        Command::Doctor(args) => doctor::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Completions(args) => completions::run(&args),
        #[cfg(feature = "cli")]
        Command::Man(args) => man::run(settings, &args),
        #[cfg(feature = "cli")]
        Command::Docs(args) => docs::run(settings, &args),
    }
}
