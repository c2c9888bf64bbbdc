//! `mcpctl docker-proxy`: the flags of the stack's Docker proxy (src/dockerproxy/), which runs in
//! the exporter container.

use std::net::SocketAddr;

use clap::Args;

use crate::error::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct DockerProxyArgs {
    /// Address to serve on (inside its container 0.0.0.0:2375).
    #[arg(long, default_value = "0.0.0.0:2375")]
    pub listen: SocketAddr,
    /// Only containers of this project are visible.
    #[arg(long)]
    pub project: String,
    /// The manifest's label prefix.
    #[arg(long, default_value = "com.mcp")]
    pub label_prefix: String,
    /// `mcpctl backup`'s status file (mounted read-only by the exporter's container): exported as
    /// `mcp_backup_last_success_timestamp_seconds` (0 while there is none).
    #[arg(long, value_name = "FILE")]
    pub backup_status: Option<std::path::PathBuf>,
}

pub fn run(args: DockerProxyArgs) -> anyhow::Result<ExitCode> {
    crate::dockerproxy::run(crate::dockerproxy::Config {
        listen: args.listen,
        project: args.project,
        label_prefix: args.label_prefix,
        backup_status: args.backup_status,
    })
    .map(|()| ExitCode::Ok)
}
