//! `mcpctl edge`: one container per stack that owns every published port and the in-network names
//! `mcp-<service>`, and switches each service between upstreams (revisions of the stack, or a
//! legacy proxy for cutover) by route, with session affinity and draining — blue-green in the
//! manner of kamal-proxy, aware of MCP sessions.
//!
//! - `routes`: the admin API's JSON and the parsing the proxy needs (pure);
//! - `server`: the proxy and admin API (`mcpctl edge serve`, inside the container);
//! - `metrics`: the edge's own series for the admin API's `GET /metrics`;
//! - `admin`: the host side's client of the admin API (switch, wait for a drain);
//! - `token`: the admin API's bearer token (`<state>/edge/admin.token`);
//! - `container`: the edge's image and container (up, replace with a measured gap).
//!
//! Must not: be scraped through (Prometheus discovers bridges by label), or decide what serves.

#[cfg(feature = "cli")]
pub mod admin;
#[cfg(feature = "cli")]
pub mod container;
mod metrics;
pub mod routes;
pub mod server;
pub mod token;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The default in-network port: `mcp-<service>:8080`, where a bridge listens unless the service
/// sets another `container_port` (then the edge listens in-network on that port too:
/// `--in-network-port`).
pub const INTERNAL_PORT: u16 = 8080;
/// Where the route file lives inside the edge container (the `<project>-edge` volume).
pub const STATE_DIR: &str = "/var/lib/mcpctl-edge";

/// How to run the edge (`mcpctl edge serve`'s flags: `crate::commands::edge::ServeArgs`, where
/// each is documented).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `NAME[=PORT]`: a service and the port the edge listens on for it; `NAME` alone: in-network only.
    pub services: Vec<String>,
    pub listen_ip: IpAddr,
    /// In-network listener routing by Host `mcp-<service>` (0 = none).
    pub internal_port: u16,
    /// `NAME=PORT`: a service reached in-network at another port than `internal_port`.
    pub in_network_ports: Vec<String>,
    pub admin: SocketAddr,
    /// The admin API's bearer token, a file (a read-only mount in the container).
    pub admin_token_file: PathBuf,
    pub state_file: Option<PathBuf>,
    /// Default time a replaced upstream keeps its sessions.
    pub drain_timeout: Duration,
}

/// Run the edge until it is stopped (SIGTERM ends it at once: a replacement is waiting for the ports).
pub fn serve(args: ServeConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Read before anything listens: an edge that cannot check the token must not start.
    let admin_token = std::sync::Arc::new(crate::bridge::guard::Token::new(&token::read_file(
        &args.admin_token_file,
    )?));
    rt.block_on(async move {
        let mut names = BTreeSet::new();
        let mut services = Vec::new();
        for s in &args.services {
            match s.split_once('=') {
                Some((name, port)) => {
                    let port: u16 = port
                        .parse()
                        .map_err(|_| anyhow::anyhow!("--service {s}: bad port"))?;
                    names.insert(name.to_string());
                    services.push((name.to_string(), SocketAddr::new(args.listen_ip, port)));
                }
                None => {
                    names.insert(s.clone());
                }
            }
        }
        let mut in_network = Vec::new();
        for s in &args.in_network_ports {
            let (name, port) = s
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--in-network-port {s}: expected NAME=PORT"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| anyhow::anyhow!("--in-network-port {s}: bad port"))?;
            in_network.push((name.to_string(), SocketAddr::new(args.listen_ip, port)));
        }
        let edge = server::Edge::new(names, args.state_file.clone(), args.drain_timeout)?;
        let listeners = server::Listeners {
            services,
            internal: (args.internal_port != 0)
                .then(|| SocketAddr::new(args.listen_ip, args.internal_port)),
            in_network,
            admin: args.admin,
            admin_token,
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = server::run(edge, listeners) => r,
            _ = term.recv() => { tracing::info!("SIGTERM: edge exits"); Ok(()) }
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
