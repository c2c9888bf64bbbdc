//! `mcpctl bridge [healthcheck]`: the flags of the bridge that runs inside every service container
//! (and of its Docker HEALTHCHECK), turned into the plain options of [`crate::bridge`].

use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};

use crate::bridge::{self, SessionModel};
use crate::error::ExitCode;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BridgeArgs {
    #[command(subcommand)]
    pub action: Option<BridgeAction>,
    /// Address to serve on (inside a container 0.0.0.0; the host publishes it on 127.0.0.1).
    /// Port 0 picks a free port; the chosen address is logged ("bridge listening").
    #[arg(long, env = "MCPCTL_BRIDGE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Seconds between keepalive comments on every open SSE stream.
    #[arg(long, default_value_t = 15)]
    pub keepalive: u64,
    /// shared: one warm child for all sessions; per_session: one child per session.
    #[arg(long, value_enum, default_value_t = SessionModelArg::Shared)]
    pub session_model: SessionModelArg,
    /// Close a session after this many seconds without requests (an open SSE stream keeps it).
    #[arg(long, default_value_t = 1800)]
    pub idle_timeout: u64,
    /// Readiness pings the child when it produced no output for this many seconds.
    #[arg(long, default_value_t = 30)]
    pub ready_stale: u64,
    /// A child that leaves a request waiting this many seconds with no output, and then does not
    /// answer a ping within 2 s, is reported not ready, killed and restarted (with the crash
    /// backoff and circuit breaker); the waiting callers get an error.
    #[arg(long, default_value_t = 60)]
    pub hung_after: u64,
    /// On SIGTERM, wait at most this many seconds for requests in flight before stopping.
    #[arg(long, default_value_t = 3)]
    pub drain_timeout: u64,
    /// How long the child may take to answer initialize.
    #[arg(long, default_value_t = 30)]
    pub init_timeout: u64,
    /// The MCP era the stdio server speaks. auto: at start a sibling process of the same command
    /// is asked `server/discover` (the real child is sent nothing until the answer) — a
    /// 2026-07-28-only answer makes it modern unless a second sibling then answers `initialize`
    /// (dual-era, e.g. any Python SDK 2.x server: legacy), anything else legacy; legacy:
    /// initialize it once and translate 2026-07-28 requests onto it; modern: serve 2026-07-28
    /// natively and refuse legacy clients (−32022 naming the supported versions). per_session
    /// children are always legacy.
    #[arg(long, env = "MCPCTL_BRIDGE_CHILD_ERA", value_enum, default_value_t = ChildEraArg::Auto)]
    pub child_era: ChildEraArg,
    /// How long the auto probe waits for each sibling's answer (`server/discover`, then
    /// `initialize`) before the server counts as legacy (seconds, fractions allowed). Raise it for
    /// a modern server that starts slowly.
    #[arg(long, env = "MCPCTL_BRIDGE_ERA_PROBE_TIMEOUT", default_value_t = 5.0, value_parser = probe_timeout)]
    pub era_probe_timeout: f64,
    /// Every file here becomes an environment variable of the child, named after the file (one
    /// trailing newline dropped). mcpctl mounts secrets here, so values never appear in the
    /// container's configuration (`docker inspect`) or in logs. A missing directory means none.
    #[arg(
        long,
        env = "MCPCTL_BRIDGE_SECRETS_DIR",
        default_value = "/run/secrets"
    )]
    pub secrets_dir: std::path::PathBuf,
    /// A file holding the bearer token MCP endpoints require (`Authorization: Bearer …`); probes
    /// (/healthz, /readyz, /metrics) never need it. One trailing newline is dropped. Secrets are
    /// mounted as files: the token never appears in `ps`, `docker inspect` or a log line. This
    /// file is never exported to the server's environment, even when it lies in --secrets-dir.
    #[arg(long, env = "MCPCTL_BRIDGE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// The access-control file mcpctl mounts (JSON: each consumer's name, the SHA-256 of its
    /// token and its rate; optionally the JWT issuer, audiences and keys; docs/contracts.md
    /// "Access control"). MCP endpoints then need `Authorization: Bearer <token>` of one of these
    /// consumers (or a valid access token from the issuer): 401 otherwise. Overrides --token-file.
    /// A file that cannot be read or parsed stops the bridge: auth asked for is never off.
    #[arg(long, env = "MCPCTL_BRIDGE_AUTH_FILE", value_name = "PATH")]
    pub auth_file: Option<std::path::PathBuf>,
    /// The service name written in audit lines (one JSON line per tools/call on stdout).
    #[arg(
        long,
        env = "MCPCTL_BRIDGE_SERVICE",
        default_value = "",
        value_name = "NAME"
    )]
    pub service: String,
    /// Write `tools/call` argument values into the audit lines (at most 4 KiB each; default:
    /// tool name and outcome only).
    #[arg(long, env = "MCPCTL_BRIDGE_AUDIT_ARGUMENTS")]
    pub audit_arguments: bool,
    /// Also allow browser requests from this Origin (`scheme://host[:port]`); repeatable.
    /// Loopback origins (localhost, 127.0.0.1, [::1]) are always allowed; any other Origin gets 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Allowed `Host` header (`host[:port]`; `host` alone allows any port); repeatable. When
    /// given, requests naming any other (non-loopback) host get 403, and http(s) origins on these
    /// hosts are allowed too. mcpctl renders `--allow-host mcp-<name>:8080` for in-network callers.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_host: Vec<String>,
    /// Requests per second each client may make to MCP endpoints (keyed by the bearer token, or
    /// the client address without one); beyond it 429 with Retry-After. 0: no limit.
    #[arg(long, default_value_t = 0.0, value_name = "PER_SEC")]
    pub rate_limit: f64,
    /// Requests a client may make in a burst before --rate-limit applies (default: 2 s worth, at
    /// least 10).
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<f64>,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub max_request_bytes: usize,
    /// Most JSON values (scalars, arrays, objects and keys) one request may hold; checked by a
    /// streaming scan before the body is parsed (413 above).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_json_values: usize,
    /// Deepest nesting of arrays and objects in one request (413 above; at most 120).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_json_depth: usize,
    /// Bytes all requests in flight may hold at once, bodies and their parsed trees (503 with
    /// Retry-After beyond it). Default: a quarter of the container's memory limit (cgroup),
    /// between 8 and 256 MiB; 64 MiB without a limit.
    #[arg(long, value_name = "BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// Most sessions at once (503 with Retry-After beyond it, after evicting a session idle for
    /// over a minute with no open stream). Default: 1000 in shared mode; in per_session mode one
    /// child per 64 MiB of the container's memory limit (at least 1, at most 64), else 16.
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Do not check `tools/call` arguments against the tool's `inputSchema` in the bridge (for a
    /// server that deliberately accepts more than its schema says, e.g. numbers as strings).
    #[arg(long)]
    pub no_argument_validation: bool,
    /// Only this tool is listed by `tools/list` and callable; repeatable (the manifest's
    /// `tools: {allow: […]}`). Other tools are hidden and their `tools/call` is refused (−32602).
    /// Comma-separated in the environment (mcpctl sets it from the manifest).
    #[arg(
        long = "tools-allow",
        env = "MCPCTL_BRIDGE_TOOLS_ALLOW",
        value_name = "NAME",
        value_delimiter = ',',
        conflicts_with = "tools_deny"
    )]
    pub tools_allow: Vec<String>,
    /// Hide this tool from `tools/list` and refuse its `tools/call` (−32602) without reaching the
    /// server; repeatable (the manifest's `tools: {deny: […]}`).
    #[arg(
        long = "tools-deny",
        env = "MCPCTL_BRIDGE_TOOLS_DENY",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tools_deny: Vec<String>,
    /// The stdio MCP server command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum BridgeAction {
    /// Probe a bridge on loopback: GET /readyz (3 s timeout); --mcp also lists tools over MCP.
    /// Exit 0 healthy, 1 not. Used as the Docker HEALTHCHECK (needs no shell).
    Healthcheck(HealthcheckArgs),
}

/// `--child-era` ([`bridge::EraChoice`]).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEraArg {
    /// Probe a sibling process with `server/discover`.
    Auto,
    /// An initialize-based server (MCP 2025-11-25 and earlier).
    Legacy,
    /// A 2026-07-28 server, served natively.
    Modern,
}

impl From<ChildEraArg> for bridge::EraChoice {
    fn from(e: ChildEraArg) -> Self {
        match e {
            ChildEraArg::Auto => Self::Auto,
            ChildEraArg::Legacy => Self::Legacy,
            ChildEraArg::Modern => Self::Modern,
        }
    }
}

fn probe_timeout(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(s),
        _ => Err(format!("{v:?} is not a number of seconds in (0, 3600]")),
    }
}

/// `--session-model` ([`SessionModel`]).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionModelArg {
    /// One warm child for every session (stateless servers).
    Shared,
    /// One child per session (servers with per-client state).
    #[value(name = "per_session", alias = "per-session")]
    PerSession,
}

impl From<SessionModelArg> for SessionModel {
    fn from(m: SessionModelArg) -> Self {
        match m {
            SessionModelArg::Shared => Self::Shared,
            SessionModelArg::PerSession => Self::PerSession,
        }
    }
}

#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// The bridge's port on 127.0.0.1.
    #[arg(long, env = "MCPCTL_BRIDGE_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Also run an MCP initialize + tools/list round trip.
    #[arg(long)]
    pub mcp: bool,
    /// The bridge's bearer-token file (for --mcp); default: MCPCTL_BRIDGE_TOKEN_FILE, else the
    /// deprecated MCPCTL_BRIDGE_TOKEN.
    #[arg(long, env = "MCPCTL_BRIDGE_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

pub fn run(args: BridgeArgs) -> anyhow::Result<ExitCode> {
    if let Some(BridgeAction::Healthcheck(h)) = args.action {
        return bridge::healthcheck(bridge::Probe {
            port: h.port,
            mcp: h.mcp,
            token_file: h.token_file,
        })
        .map(|()| ExitCode::Ok);
    }
    bridge::run(bridge::Options {
        listen: args.listen,
        keepalive: args.keepalive,
        session_model: args.session_model.into(),
        idle_timeout: args.idle_timeout,
        ready_stale: args.ready_stale,
        hung_after: args.hung_after,
        drain_timeout: args.drain_timeout,
        init_timeout: args.init_timeout,
        child_era: args.child_era.into(),
        era_probe_timeout: args.era_probe_timeout,
        secrets_dir: args.secrets_dir,
        token_file: args.token_file,
        auth_file: args.auth_file,
        service: args.service,
        audit_arguments: args.audit_arguments,
        allow_origin: args.allow_origin,
        allow_host: args.allow_host,
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        max_request_bytes: args.max_request_bytes,
        max_json_values: args.max_json_values,
        max_json_depth: args.max_json_depth,
        max_inflight_bytes: args.max_inflight_bytes,
        max_sessions: args.max_sessions,
        no_argument_validation: args.no_argument_validation,
        tools_allow: args.tools_allow,
        tools_deny: args.tools_deny,
        command: args.command,
    })
    .map(|()| ExitCode::Ok)
}
