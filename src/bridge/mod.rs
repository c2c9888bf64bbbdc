//! The bridge: wraps a stdio MCP server and serves it over HTTP. (Placeholder until the bridge lands.)

use clap::Args;

#[derive(Args, Debug)]
pub struct BridgeArgs {
    /// The stdio server command and its arguments.
    #[arg(last = true)]
    pub command: Vec<String>,
}

pub fn run(_args: BridgeArgs) -> anyhow::Result<()> {
    anyhow::bail!("the bridge is not built yet")
}
