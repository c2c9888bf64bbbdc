//! mcp-memory: the knowledge-graph tools of npm `@modelcontextprotocol/server-memory`, stored in
//! PostgreSQL, served over stdio. stdout carries only JSON-RPC; logs go to stderr.

mod graph;
mod migrations;
mod server;
mod settings;
mod store;

use std::process::ExitCode;
use std::sync::Arc;

use rmcp::ServiceExt;

fn main() -> ExitCode {
    let level = std::env::var("MEMORY_LOG")
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
    let store = match store::Store::new(&settings) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    // Migrate at start without holding up the MCP handshake: if the database is not reachable yet
    // (it may start after us), the first tool call migrates instead.
    tokio::spawn({
        let store = store.clone();
        async move {
            if let Err(e) = store.migrate().await {
                tracing::warn!("schema not checked at start (the first call will retry): {e}");
            }
        }
    });

    let service = match server::MemoryServer::new(store)
        .serve(rmcp::transport::stdio_pipes())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("MCP session did not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!("mcp-memory {} serving on stdio", env!("CARGO_PKG_VERSION"));

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
