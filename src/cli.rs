//! clap definitions only: flags are parsed here and resolved into [`crate::settings::Settings`].

use std::path::PathBuf;

#[cfg(feature = "cli")]
use clap::ValueEnum;
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mcpctl",
    version,
    about = "Deploy, gate, roll back and prove a stack of MCP tool servers on Docker",
    long_about = "mcpctl reads one manifest (services.yaml), renders every artifact the stack needs \
                  from templates, and drives the Docker engine. `mcpctl bridge` runs inside every \
                  service container and serves a stdio MCP server over legacy SSE and Streamable HTTP.\n\n\
                  Exit codes: 0 ok, 1 runtime error, 2 usage or validation error (nothing changed), \
                  3 health gate failed and previous revision restored, 4 gate failed and restore \
                  failed, 5 lock held, 6 SLO breach or cutover differences, 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts (docs/contracts.md "Global flags").
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The manifest.
    #[arg(
        short = 'f',
        long = "file",
        global = true,
        default_value = "services.yaml",
        env = "MCPCTL_FILE"
    )]
    pub file: PathBuf,
    /// Where the ledger, lock details and vendored packages live [default: $XDG_STATE_HOME/mcpctl/<project>].
    #[arg(long, global = true, env = "MCPCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Human tables and reports, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
    /// Answer yes to confirmations (required for destructive steps without a TTY).
    #[arg(long, global = true)]
    pub yes: bool,
    /// More log detail (-v debug, -vv trace).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

// Lives in `output` (settings and output use it); here for the flag.
use crate::output::OutputFormat;

// Parsed once per run; with the in-container features most variants are compiled out, which
// leaves `bridge`'s arguments the one large variant. Boxing them would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    #[cfg(feature = "cli")]
    /// Check the manifest: every problem with file:line:column and a fix; exit 2 on any error.
    Validate,
    #[cfg(feature = "cli")]
    /// Render Dockerfiles, docker-compose.yml and the LiteLLM config into a directory.
    Render(RenderArgs),
    /// Serve a stdio MCP server over legacy SSE and Streamable HTTP (runs inside every container).
    Bridge(crate::commands::bridge::BridgeArgs),
    #[cfg(feature = "docker-proxy")]
    /// Serve a read-only view of the project's containers and their `mcp_container_*` metrics
    /// (runs in the stack's exporter container; the only holder of the Docker socket).
    DockerProxy(crate::commands::docker_proxy::DockerProxyArgs),
    #[cfg(feature = "cli")]
    /// Build missing service images (tag = content hash of the build context and base image).
    Build(crate::commands::build::BuildArgs),
    #[cfg(feature = "cli")]
    /// Desired vs running, per service: create / update (what changed) / unchanged / orphaned.
    Plan(crate::commands::plan::PlanArgs),
    #[cfg(feature = "cli")]
    /// Deploy changed services one at a time behind the MCP health gate; roll back on failure.
    Deploy(crate::commands::deploy::DeployArgs),
    #[cfg(feature = "cli")]
    /// Restore retained revisions (no rebuild), behind the same gate.
    Rollback(crate::commands::rollback::RollbackArgs),
    #[cfg(feature = "cli")]
    /// What runs: revision, state, last gate, uptime, restarts, tools, port, memory.
    Status(crate::commands::status::StatusArgs),
    #[cfg(feature = "cli")]
    /// The ledger of deploys and rollbacks, with outcomes.
    History(crate::commands::history::HistoryArgs),
    #[cfg(feature = "cli")]
    /// Container logs of a service's serving revision (--follow to stream).
    Logs(crate::commands::logs::LogsArgs),
    #[cfg(feature = "cli")]
    /// The tools/call audit records of the services' revisions (from their container logs),
    /// filtered by service, tool, consumer, time and outcome; newest --limit kept, oldest first.
    Audit(crate::commands::audit::AuditArgs),
    #[cfg(feature = "cli")]
    /// Remove the project's containers and network (volumes only with --volumes, after a backup
    /// unless --no-backup).
    Down(crate::commands::down::DownArgs),
    #[cfg(feature = "cli")]
    /// Take a backup set (database dumps, volumes, state, manifest; checksummed), or `list` sets,
    /// or `verify SET` (checksums and a real test restore of every database).
    Backup(crate::commands::backup::BackupArgs),
    #[cfg(feature = "cli")]
    /// Restore a backup set into the running stack (the data replaced is saved first and put back
    /// if the gate fails), or bring the state back on a fresh host.
    Restore(crate::commands::backup::RestoreArgs),
    #[cfg(feature = "cli")]
    /// Remove revisions beyond retain_revisions and images no revision uses.
    Prune(crate::commands::prune::PruneArgs),
    #[cfg(feature = "cli")]
    /// Base images built locally from one debootstrap minbase per suite: `list` (default) or `build`.
    Bases(crate::commands::bases::BasesArgs),
    #[cfg(feature = "cli")]
    /// Carry the project's images to another host without a registry: `export --out DIR` (one
    /// tar per image + manifest.json with SHA-256s), `import DIR` (verify all, then load).
    Images(crate::commands::images::ImagesArgs),
    #[cfg(feature = "cli")]
    /// Fetch on the host, from the committed locks, what offline builds install (hashes checked).
    Vendor(crate::commands::vendor::VendorArgs),
    #[cfg(feature = "cli")]
    /// Drive a bounded load of real MCP calls at the running stack and judge the SLOs (exit 6 on a breach).
    Soak(crate::commands::soak::SoakArgs),
    #[cfg(feature = "cli")]
    /// Move LiteLLM from the old proxy to the stack: check (old vs new, through LiteLLM; exit 6 on
    /// differences), switch / revert at the edge's routes, retire the old proxy.
    Cutover(crate::commands::cutover::CutoverArgs),
    /// The stack's edge: owns the published ports, switches revisions by route with session
    /// affinity and draining (`up`, `status`, `replace`; `serve` runs in the edge container).
    Edge(crate::commands::edge::EdgeArgs),
    #[cfg(feature = "cli")]
    /// The consumers' bearer tokens: `list` (fingerprints only), `show NAME` (prints one token),
    /// `rotate NAME` (next generation; the next deploy rolls it out).
    Token(crate::commands::token::TokenArgs),
    /// What this binary is: version, git revision, build profile and optimisation level
    /// (`--output json` for scripts; run it inside an image to see what the image carries).
    Version,
    #[cfg(feature = "cli")]
    /// Pre-flight: engine, clocks, disk space, published ports, base images, vendored packages,
    /// install key — a line per check and a fix for each failure; exit 1 if any fails.
    Doctor(crate::commands::doctor::DoctorArgs),
    #[cfg(feature = "cli")]
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(crate::commands::completions::CompletionsArgs),
    #[cfg(feature = "cli")]
    /// Roff manual pages: one per command and subcommand with --out DIR, else mcpctl.1 on stdout.
    Man(crate::commands::man::ManArgs),
    #[cfg(feature = "cli")]
    /// The API reference docs/api/ from each deployed service's live tools/list (`--check`: exit 1
    /// listing the files that differ).
    Docs(crate::commands::docs::DocsArgs),
}

#[cfg(feature = "cli")]
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Output directory (created if missing).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Write nothing; list files that differ from what would be rendered and exit 1 if any do.
    #[arg(long)]
    pub check: bool,
    /// Render only this kind of artifact.
    #[arg(long, value_enum)]
    pub only: Option<ArtifactArg>,
    /// What to render for: `docker` (Dockerfiles, compose, LiteLLM, observability) or
    /// `kubernetes` (kustomize base + overlay, secrets script, kubernetes_sd Prometheus config;
    /// docs/kubernetes.md).
    #[arg(long, value_enum, default_value = "docker")]
    pub target: RenderTarget,
    /// kubernetes: prefix every image with this registry (`R/<project>/<service>`).
    #[arg(long, value_name = "R")]
    pub registry: Option<String>,
    /// kubernetes: take each service's image tag from an `mcpctl images export` directory.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// kubernetes: let this MCP service reach public addresses (repeatable), e.g. fetch.
    #[arg(long, value_name = "SERVICE")]
    pub internet: Vec<String>,
}

#[cfg(feature = "cli")]
/// `render --target`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderTarget {
    /// The Docker stack's files (today's behaviour).
    Docker,
    /// A kustomize base + overlay for a cluster.
    Kubernetes,
}

#[cfg(feature = "cli")]
/// `--only`: the kinds of artifact `render` writes ([`crate::render::ArtifactKind`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactArg {
    /// One Dockerfile (and entrypoint files) per service: services/<name>/.
    Dockerfiles,
    /// docker-compose.yml, an export for users without mcpctl.
    Compose,
    /// litellm/config.yaml with a top-level `mcp_servers`.
    Litellm,
    /// Prometheus config and rules, Grafana provisioning and dashboard, Promtail and Alloy configs.
    Observability,
}

#[cfg(feature = "cli")]
impl From<ArtifactArg> for crate::render::ArtifactKind {
    fn from(a: ArtifactArg) -> Self {
        match a {
            ArtifactArg::Dockerfiles => Self::Dockerfiles,
            ArtifactArg::Compose => Self::Compose,
            ArtifactArg::Litellm => Self::Litellm,
            ArtifactArg::Observability => Self::Observability,
        }
    }
}
