//! `mcpctl soak`: a bounded load of real, non-mutating MCP traffic against the published ports of
//! a running stack, measured on the client side, judged against the seed's SLOs.
//!
//! Layout: `stats` (latency histograms and per-service counters — plain data, checkpointed),
//! `observe` (bridge `/metrics`, container memory/restarts through the Engine, the optional
//! Prometheus cross-check), `driver` (the load, sampler, chaos and checkpoint loops), `report`
//! (SLO evaluation, JSON, Markdown and the SVG chart).
//!
//! Owns: generating load and judging it. Must not: print (the command renders progress and the
//! summary through `output`/indicatif), build or deploy anything, or touch containers of another
//! project (chaos only stops/starts containers labelled with this project). Every loop here is
//! bounded in time (the run's deadline) and in count (concurrency, the sessions it holds).

pub mod driver;
pub mod growth;
pub mod observe;
pub mod report;
pub mod stats;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::{Expect, ExpectTools, Manifest, Role, Transport};

/// The run's settings (validated; recorded in the checkpoint so `--resume` continues the same run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakOptions {
    /// Total length of the run (across resumes).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Tool calls per second, over all services.
    pub rate: f64,
    /// Calls in flight at most; a tick finding none free is counted as skipped, never queued.
    pub concurrency: usize,
    /// Long-lived sessions held for the whole run (spread over the services).
    pub sessions: usize,
    pub chaos: bool,
    /// Per-request bound of every MCP exchange.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// One tools/list per service this often (coverage).
    #[serde(with = "humantime_serde")]
    pub coverage_interval: Duration,
    /// Bridge /metrics, container memory and a timeline point this often.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// After the load stops, how long sessions/children may take to return to their baseline.
    #[serde(with = "humantime_serde")]
    pub leak_grace: Duration,
    /// Chaos: the pause before each action is drawn uniformly from [min, max].
    #[serde(with = "humantime_serde")]
    pub chaos_min: Duration,
    #[serde(with = "humantime_serde")]
    pub chaos_max: Duration,
    /// Memory-growth SLO: each container's samples from its first this long (after its first
    /// sample or a restart) are not judged (caches filling, pools opening). Absent in
    /// checkpoints written before it existed: the default.
    #[serde(with = "humantime_serde", default = "default_memory_warm_up")]
    pub memory_warm_up: Duration,
}

/// 10 minutes: the seed's servers reach their plateau within a few minutes of load (Python
/// imports, Node JIT, connection pools), and a 1-hour run keeps 50 minutes to judge.
pub const DEFAULT_MEMORY_WARM_UP: Duration = Duration::from_secs(600);

fn default_memory_warm_up() -> Duration {
    DEFAULT_MEMORY_WARM_UP
}

/// One kind of call the load makes to a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Probe {
    /// A smoke step with `mutates: false`, checked against its `expect`.
    Tool {
        tool: String,
        args: serde_json::Value,
        expect: Expect,
    },
    /// For services with no usable smoke step.
    ListTools,
}

impl Probe {
    pub fn name(&self) -> String {
        match self {
            Probe::Tool { tool, .. } => tool.clone(),
            Probe::ListTools => "tools/list".into(),
        }
    }
}

/// A service as the soak sees it: where to reach it, what to call, what to expect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    /// `http://<bind_address>:<port>`.
    pub base_url: String,
    pub transport: Transport,
    pub probes: Vec<Probe>,
    pub expect_tools: ExpectTools,
    pub slo_p95_ms: u64,
    /// mcpctl's bearer token for this service (`None`: its auth mode is `none`); never written
    /// into a report.
    #[serde(skip)]
    pub token: Option<crate::auth::Bearer>,
    /// Sessions the service's bridge holds at once (`bridge.max_sessions`, else the bridge's own
    /// default for its session model and memory limit): the load never asks for more.
    #[serde(default = "unlimited_sessions")]
    pub max_sessions: usize,
}

fn unlimited_sessions() -> usize {
    1000
}

impl Target {
    /// An MCP session with this service in `mode`, carrying mcpctl's token.
    pub async fn connect(
        &self,
        timeout: std::time::Duration,
        mode: crate::mcp::Mode,
    ) -> Result<crate::mcp::Session, crate::mcp::McpError> {
        let opts = crate::mcp::Options {
            timeout,
            bearer_token: self.token.as_ref().map(|t| t.expose().to_string()),
        };
        crate::mcp::Session::connect_mode(&self.base_url, self.transport_for(mode), &opts, mode)
            .await
    }

    /// The mode of this service's `n`-th session of a kind (held, fresh, coverage): every service
    /// alternates legacy (initialize, a bridge session, over the service's own transport: what
    /// LiteLLM speaks) and auto (`server/discover` first: stateless 2026-07-28 requests when the
    /// bridge serves them, else initialize, as the Python SDK 2.x does), so one soak measures both
    /// eras.
    pub fn mode(&self, n: u64) -> crate::mcp::Mode {
        if n % 2 == 0 {
            crate::mcp::Mode::Legacy
        } else {
            crate::mcp::Mode::Auto
        }
    }

    /// Where a session of `mode` goes: legacy sessions over the service's transport, auto ones
    /// over Streamable HTTP `/mcp` (every bridge serves both; 2026-07-28 has no SSE transport).
    pub fn transport_for(&self, mode: crate::mcp::Mode) -> Transport {
        match mode {
            crate::mcp::Mode::Legacy => self.transport,
            _ => Transport::Http,
        }
    }
}

/// The SLO targets of the seed (docs: issue 11); memory comes from the manifest's budget, memory
/// growth from each service's `slo.memory_growth_per_hour`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    pub availability: f64,
    pub error_rate: f64,
    pub coverage: f64,
    pub memory_budget: u64,
    /// Bytes per hour, by service name (the containers' `<p>.service` label).
    pub memory_growth_per_hour: std::collections::BTreeMap<String, u64>,
    /// For containers of no manifest service (the edge, the exporter).
    pub memory_growth_default: u64,
}

impl Targets {
    pub fn seed(memory_budget: u64) -> Self {
        Self {
            availability: 0.999,
            error_rate: 0.001,
            coverage: 1.0,
            memory_budget,
            memory_growth_per_hour: Default::default(),
            memory_growth_default: crate::manifest::Slo::default().memory_growth_per_hour.0,
        }
    }

    /// The seed's targets with the manifest's budget and every service's growth target.
    pub fn from_manifest(manifest: &Manifest) -> Self {
        let mut t = Self::seed(manifest.memory_budget.0);
        t.memory_growth_per_hour = manifest
            .services
            .iter()
            .map(|(name, s)| (name.clone(), s.slo.memory_growth_per_hour.0))
            .collect();
        t
    }

    pub fn memory_growth_for(&self, service: Option<&str>) -> u64 {
        service
            .and_then(|s| self.memory_growth_per_hour.get(s))
            .copied()
            .unwrap_or(self.memory_growth_default)
    }
}

/// The services to soak: every MCP service with a published port (databases have no MCP), or
/// only `only` when given. Errors name the service and say what to do.
pub fn targets(manifest: &Manifest, only: &[String]) -> Result<Vec<Target>, String> {
    for name in only {
        match manifest.services.get(name) {
            None => {
                let known: Vec<&str> = manifest.services.keys().map(String::as_str).collect();
                return Err(format!(
                    "no service `{name}` in the manifest (services: {})",
                    known.join(", ")
                ));
            }
            Some(s) if s.role == Role::Database => {
                return Err(format!("`{name}` is a database: soak speaks MCP only"))
            }
            Some(s) if s.port.is_none() => {
                return Err(format!(
                    "`{name}` publishes no port: soak reaches services on their published ports"
                ))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (name, svc) in &manifest.services {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let Some(port) = svc.port else { continue };
        if svc.role == Role::Database {
            continue;
        }
        let mut probes: Vec<Probe> = svc
            .health
            .smoke
            .iter()
            .filter(|s| !s.mutates)
            .map(|s| Probe::Tool {
                tool: s.tool.clone(),
                args: s.args.clone(),
                expect: s.expect.clone(),
            })
            .collect();
        if probes.is_empty() {
            probes.push(Probe::ListTools);
        }
        let host = match manifest.bind_address {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            a => a.to_string(),
        };
        out.push(Target {
            name: name.clone(),
            base_url: format!("http://{host}:{port}"),
            transport: svc.transport.unwrap_or(manifest.litellm.transport),
            probes,
            expect_tools: svc.health.expect_tools.clone(),
            slo_p95_ms: svc.slo.p95_ms,
            token: None,
            max_sessions: svc.bridge.max_sessions.map_or_else(
                || {
                    crate::bridge::default_max_sessions(
                        match svc.session_model {
                            crate::manifest::SessionModel::Shared => {
                                crate::bridge::SessionModel::Shared
                            }
                            crate::manifest::SessionModel::PerSession => {
                                crate::bridge::SessionModel::PerSession
                            }
                        },
                        Some(svc.limits.memory.0),
                    )
                },
                |m| m as usize,
            ),
        });
    }
    if out.is_empty() {
        return Err("no MCP service with a published port to soak".into());
    }
    Ok(out)
}
