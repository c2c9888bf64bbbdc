//! `mcpctl bridge`: serves one stdio MCP server over legacy HTTP+SSE and Streamable HTTP, with
//! supervision, readiness and graceful shutdown; `mcpctl bridge healthcheck` probes it.
//!
//! Every service container runs this, so its correctness is the product's. Layout:
//! `child` (processes), `upstream` (id/token remapping and routing for one child), `app` (sessions,
//! shared-child rules, readiness), `http` (the endpoints), `sse` (framing), `stats` (counters for
//! metrics), `healthcheck` (the Docker HEALTHCHECK client).

pub mod access;
mod admission;
mod app;
pub mod audit;
mod child;
pub(crate) mod guard;
mod healthcheck;
mod http;
mod jsonrpc;
pub mod jwt;
// pub(crate): mcpctl's client (`crate::mcp::modern`) speaks the same wire constants.
pub(crate) mod modern;
mod policy;
mod probe;
mod schema;
mod sse;
mod stats;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::serve::ListenerExt as _;

use crate::error::CommandError;
use app::{App, Config, RateLimit, Secret};
use child::ChildSpec;
use stats::CloseReason;

/// How to run the bridge (`mcpctl bridge`'s flags: `crate::commands::bridge::BridgeArgs`, where
/// each is documented). Durations are in seconds.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub keepalive: u64,
    pub session_model: SessionModel,
    pub idle_timeout: u64,
    pub ready_stale: u64,
    pub hung_after: u64,
    pub drain_timeout: u64,
    pub init_timeout: u64,
    /// What the stdio server speaks (`--child-era`).
    pub child_era: EraChoice,
    /// Seconds the auto probe waits for `server/discover` (`--era-probe-timeout`).
    pub era_probe_timeout: f64,
    /// Every file here becomes an environment variable of the child.
    pub secrets_dir: std::path::PathBuf,
    pub token_file: Option<std::path::PathBuf>,
    /// The consumers' token digests and JWT settings (mcpctl mounts it; see `access`).
    pub auth_file: Option<std::path::PathBuf>,
    /// The service name in audit lines.
    pub service: String,
    /// Put `tools/call` argument values in the audit lines.
    pub audit_arguments: bool,
    pub allow_origin: Vec<String>,
    pub allow_host: Vec<String>,
    /// Requests per second per client; 0: no limit.
    pub rate_limit: f64,
    pub rate_burst: Option<f64>,
    pub max_request_bytes: usize,
    pub max_json_values: usize,
    pub max_json_depth: usize,
    pub max_inflight_bytes: Option<usize>,
    pub max_sessions: Option<usize>,
    pub no_argument_validation: bool,
    /// Only these tools are listed and callable (`--tools-allow`); excludes `tools_deny`.
    pub tools_allow: Vec<String>,
    /// These tools are hidden and refused (`--tools-deny`).
    pub tools_deny: Vec<String>,
    /// The stdio MCP server command and its arguments.
    pub command: Vec<String>,
}

pub use app::SessionModel;
pub use healthcheck::{run as healthcheck, Probe};
pub use probe::EraChoice;

/// Serve until SIGTERM (then drain).
pub fn run(args: Options) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CommandError::usage("bridge: a COMMAND after `--` is required"))?;
    let secs = Duration::from_secs;
    let token = read_token(args.token_file.as_deref())?;
    let skip: Vec<std::path::PathBuf> = args
        .token_file
        .iter()
        .chain(&args.auth_file)
        .cloned()
        .collect();
    let auth_text = match &args.auth_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            CommandError::usage(format!(
                "bridge: cannot read --auth-file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let env = child::secret_env(&args.secrets_dir, &skip)?;
    if !(args.rate_limit >= 0.0 && args.rate_limit.is_finite()) {
        return Err(CommandError::usage("bridge: --rate-limit must be ≥ 0").into());
    }
    let rate_limit = (args.rate_limit > 0.0).then(|| RateLimit {
        per_sec: args.rate_limit,
        burst: args
            .rate_burst
            .unwrap_or((args.rate_limit * 2.0).max(10.0))
            .max(1.0),
    });
    let tools = policy::ToolPolicy::from_flags(&args.tools_allow, &args.tools_deny)
        .map_err(CommandError::usage)?;
    let memory_limit = admission::cgroup_memory_limit();
    let cfg = Config {
        child: ChildSpec {
            program: program.clone(),
            args: rest.to_vec(),
            env,
            init_timeout: secs(args.init_timeout.max(1)),
            hung_after: secs(args.hung_after.max(1)),
            era: probe::EraSettings {
                choice: args.child_era,
                probe_timeout: Duration::from_secs_f64(args.era_probe_timeout.clamp(0.001, 3600.0)),
            },
        },
        model: args.session_model,
        keepalive: secs(args.keepalive.max(1)),
        idle_timeout: secs(args.idle_timeout.max(1)),
        ready_stale: secs(args.ready_stale.max(1)),
        hung_after: secs(args.hung_after.max(1)),
        drain_timeout: secs(args.drain_timeout),
        token,
        allow_origins: args
            .allow_origin
            .iter()
            .map(|o| guard::normalise(o))
            .collect(),
        allow_hosts: args
            .allow_host
            .iter()
            .map(|h| guard::normalise(h))
            .collect(),
        rate_limit,
        max_body: args.max_request_bytes.max(1024),
        json_limits: admission::Limits {
            max_values: args.max_json_values.max(16),
            max_depth: args.max_json_depth.clamp(2, 120),
        },
        inflight_budget: args
            .max_inflight_bytes
            .unwrap_or_else(|| admission::default_budget(memory_limit)),
        max_sessions: args
            .max_sessions
            .unwrap_or_else(|| default_max_sessions(args.session_model, memory_limit))
            .max(1),
        validate_args: !args.no_argument_validation,
        tools: std::sync::Arc::new(tools),
        access: None,
        service: args.service.clone(),
        audit_arguments: args.audit_arguments,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads(
        std::env::var_os("TOKIO_WORKER_THREADS").is_some(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    ) {
        builder.worker_threads(n);
    }
    let rt = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut cfg = cfg;
    if let Some(text) = auth_text {
        let access = rt.block_on(access::Access::load(&text)).map_err(|e| {
            CommandError::usage(format!(
                "bridge: --auth-file {}: {e:#}",
                args.auth_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })?;
        cfg.access = Some(std::sync::Arc::new(access));
    }
    rt.block_on(serve(args.listen, cfg))?;
    // Do not wait for blocking tasks (e.g. a stuck stdin write to a stopped child).
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// Runtime worker threads the bridge uses unless `TOKIO_WORKER_THREADS` says otherwise (then
/// tokio reads it itself: `None`). A bridge relays one child's pipes: two workers keep a slow
/// handler from stalling the rest, and more only add stacks and per-thread allocator arenas to
/// its RSS (own RSS after 20×200 calls: 9.5 MB with 1 or 2 workers, 10.1 MB with 4, 11.2 MB with
/// 8), which a 64-core host would otherwise multiply by its core count.
pub const MAX_WORKERS: usize = 2;

fn worker_threads(env_set: bool, cores: usize) -> Option<usize> {
    (!env_set).then_some(cores.clamp(1, MAX_WORKERS))
}

/// Sessions a bridge holds at once unless told: shared sessions are cheap (a table entry), a
/// per-session child is a whole server process, so its cap follows the memory it may use.
pub fn default_max_sessions(model: SessionModel, memory_limit: Option<u64>) -> usize {
    match (model, memory_limit) {
        (SessionModel::Shared, _) => 1000,
        (SessionModel::PerSession, Some(limit)) => (limit / (64 << 20)).clamp(1, 64) as usize,
        (SessionModel::PerSession, None) => 16,
    }
}

/// Deprecated fallback: `MCPCTL_BRIDGE_TOKEN` in the environment, used only when no
/// `--token-file` is given. Kept because existing callers (tests/engine.rs, hand-written compose
/// files) set it; mcpctl itself renders `--token-file`, since an env value shows in
/// `docker inspect` and /proc/<pid>/environ.
pub(crate) const TOKEN_ENV: &str = "MCPCTL_BRIDGE_TOKEN";

/// The bearer token: from `file` when given (an empty or unreadable file is an error: a guard
/// asked for must not silently be off), else from `MCPCTL_BRIDGE_TOKEN`.
pub(crate) fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<Secret>> {
    let Some(path) = file else {
        return Ok(std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new));
    };
    let mut t = std::fs::read_to_string(path).map_err(|e| {
        CommandError::usage(format!(
            "bridge: cannot read --token-file {}: {e}",
            path.display()
        ))
    })?;
    if t.ends_with('\n') {
        t.pop();
        if t.ends_with('\r') {
            t.pop();
        }
    }
    if t.is_empty() {
        return Err(CommandError::usage(format!(
            "bridge: --token-file {} is empty",
            path.display()
        ))
        .into());
    }
    Ok(Some(Secret::new(t)))
}

async fn serve(listen: SocketAddr, cfg: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CommandError::usage(format!("bridge: cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let app = App::new(cfg.clone());
    tracing::info!(
        %addr,
        command = %cfg.child.program,
        model = ?cfg.model,
        auth = ?app.access,
        rate_limit = ?cfg.rate_limit,
        allow_hosts = ?cfg.allow_hosts,
        allow_origins = ?cfg.allow_origins,
        tools = ?cfg.tools,
        "bridge listening"
    );

    let supervisor = app.shared.clone().map(|up| {
        tokio::spawn(child::supervise_shared(
            up,
            cfg.child.clone(),
            app.stats.clone(),
            app.shutdown.clone(),
        ))
    });
    if cfg.model == SessionModel::PerSession {
        tokio::spawn(app.clone().run_spawn_probe());
    }
    tokio::spawn(app.clone().run_reaper());

    let router = http::router(app.clone());
    let stop = app.shutdown.clone();
    // No Nagle: small JSON-RPC replies must not wait for the peer's delayed ACK (~40 ms each).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    });

    let signal = wait_for_signal().await?;
    let t0 = Instant::now();
    tracing::info!(%signal, in_flight = app.stats.requests_in_flight.load(Ordering::Relaxed), "draining");
    app.draining.store(true, Ordering::Relaxed);
    let deadline = t0 + cfg.drain_timeout;
    while app.stats.requests_in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let abandoned = app.stats.requests_in_flight.load(Ordering::Relaxed);
    if abandoned > 0 {
        app.fail_in_flight().await;
    }
    app.close_all(if abandoned == 0 {
        CloseReason::Drained
    } else {
        CloseReason::Shutdown
    });
    app.shutdown.cancel();
    if let Some(s) = supervisor {
        let _ = tokio::time::timeout(Duration::from_secs(3), s).await;
    }
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(Err(e))) => tracing::warn!("http server: {e}"),
        Err(_) => tracing::warn!("http connections still open after shutdown; closing them"),
        _ => {}
    }
    // The audit lines of the last calls are written before the process ends (bounded wait).
    let audit_deadline = Instant::now() + Duration::from_secs(1);
    while app.audit.pending() > 0 && Instant::now() < audit_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(
        abandoned,
        took_ms = t0.elapsed().as_millis() as u64,
        "bridge stopped"
    );
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_capped_unless_the_environment_says() {
        assert_eq!(worker_threads(false, 1), Some(1));
        assert_eq!(worker_threads(false, 2), Some(2));
        assert_eq!(worker_threads(false, 64), Some(MAX_WORKERS));
        assert_eq!(worker_threads(true, 64), None);
    }
}
