//! mcp-monitoring: health, resource use, logs and alerts of an mcpctl stack, served over stdio.
//! Docker data comes only through `mcpctl docker-proxy` (no Docker socket here); readiness and
//! request figures from each service's bridge; alerts from Prometheus when configured.
//! stdout carries only JSON-RPC; logs go to stderr.

mod docker;
mod http;
mod metrics;
mod monitor;
mod server;
mod settings;

use std::process::ExitCode;

use rmcp::ServiceExt;

fn main() -> ExitCode {
    let level = std::env::var("MONITORING_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();

    let settings = match settings::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(serve(settings));
    // Do not wait for a pending stdin read: nothing else is in flight once serve returns.
    rt.shutdown_background();
    code
}

async fn serve(settings: settings::Settings) -> ExitCode {
    tracing::info!(
        docker_proxy = %settings.docker_proxy_url,
        bridges = %settings.bridge_url_template,
        prometheus = settings.prometheus_url.as_deref().unwrap_or("(not configured)"),
        label_prefix = %settings.label_prefix,
        "mcp-monitoring {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let monitor = match monitor::Monitor::new(settings) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let service = match server::MonitoringServer::new(monitor)
        .serve(rmcp::transport::stdio_pipes())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("MCP session did not start: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        r = service.waiting() => {
            if let Err(e) = r {
                tracing::error!("MCP service stopped abnormally: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM: exiting");
            ExitCode::SUCCESS
        }
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
