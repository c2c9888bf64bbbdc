//! Access control on the host side (docs/contracts.md "Access control"): which consumers may
//! call each service, their tokens, and the file that tells a bridge how to check them.
//!
//! - A consumer's token comes from its `token:` source (`generate`: derived from the install key
//!   and the consumer's generation, so `mcpctl token rotate` can replace it; `from_env` /
//!   `from_file`: read on the host at deploy time). Tokens are kept as files
//!   `<state>/auth/<consumer>.token` (0600 in a 0700 directory) for the people and clients that
//!   need them (`mcpctl token show`, `mcpctl cutover litellm`); nothing else ever sees a value.
//! - A bridge receives only SHA-256 digests of the tokens it accepts, in one JSON file mounted as
//!   the secret [`AUTH_SECRET`] (see `rollout::secrets`): its fingerprint is part of the
//!   `<p>.secrets-hmac` label, so `plan` shows a changed token or policy as a secrets change and a
//!   rollback mounts the file its revision was deployed with.
//! - mcpctl itself is the built-in consumer [`MCPCTL_CONSUMER`]: the deploy gate, reconcile, soak
//!   and cutover send its token to every service whose mode is not `none`.
//!
//! Must not: log, print, label or ledger a token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::bridge::access::{AuthFile, ConsumerEntry, Rate};
use crate::manifest::{AuthMode, Manifest, RateLimitSpec, MCPCTL_CONSUMER};
use crate::rollout::secrets;

/// The secret name of a bridge's auth file (`/run/secrets/mcpctl_auth`): reserved, the bridge
/// reads it and never exports it to its server.
pub const AUTH_SECRET: &str = "mcpctl_auth";

/// The environment variable naming the auth file for `mcpctl bridge --auth-file`.
pub const AUTH_FILE_ENV: &str = "MCPCTL_BRIDGE_AUTH_FILE";

/// The environment variable naming the service for the bridge's audit lines.
pub const SERVICE_ENV: &str = "MCPCTL_BRIDGE_SERVICE";

/// The environment variable that turns on argument values in the audit lines.
pub const AUDIT_ARGUMENTS_ENV: &str = "MCPCTL_BRIDGE_AUDIT_ARGUMENTS";

/// Where the auth file is mounted inside a container.
pub fn auth_file_path() -> String {
    format!("/run/secrets/{AUTH_SECRET}")
}

/// The environment variable the rendered LiteLLM config reads a consumer's token from
/// (`authentication_token: os.environ/…`).
pub fn token_env(consumer: &str) -> String {
    format!(
        "MCPCTL_TOKEN_{}",
        consumer.to_ascii_uppercase().replace('-', "_")
    )
}

/// A service's access rules after the stack default and its override are combined.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub mode: AuthMode,
    /// Consumers whose bearer token the service accepts ([`MCPCTL_CONSUMER`] first).
    pub consumers: Vec<String>,
    /// Rate per consumer (its own, else the service's, else the stack's); absent: unlimited.
    pub rates: BTreeMap<String, RateLimitSpec>,
    /// Rate of each JWT identity (the service's, else the stack's).
    pub jwt_rate: Option<RateLimitSpec>,
    pub audit_arguments: bool,
}

pub fn effective(m: &Manifest, service: &str) -> Effective {
    let svc_auth = m.services[service].auth.clone().unwrap_or_default();
    let mode = svc_auth.mode.unwrap_or(m.auth.mode);
    let default_rate = svc_auth.rate_limit.or(m.auth.rate_limit);
    let mut consumers = vec![MCPCTL_CONSUMER.to_string()];
    let mut rates = BTreeMap::new();
    for (name, c) in &m.auth.consumers {
        let allowed = svc_auth
            .consumers
            .as_ref()
            .is_none_or(|only| only.contains(name));
        if allowed {
            consumers.push(name.clone());
            if let Some(r) = c.rate_limit.or(default_rate) {
                rates.insert(name.clone(), r);
            }
        }
    }
    Effective {
        mode,
        consumers,
        rates,
        jwt_rate: default_rate,
        audit_arguments: svc_auth.audit_arguments.unwrap_or(m.auth.audit_arguments),
    }
}

/// Node's V8 sizes its old space from the memory it is told about: in a 192 MiB container Node
/// 22 sets `heap_size_limit` to 259 MB, above the container's limit, so a heap that keeps growing
/// meets the OOM killer (the whole container, bridge included) before V8 collects hard. npm
/// services therefore get `NODE_OPTIONS=--max-old-space-size=<this share of limits.memory>` unless
/// their `env` sets `NODE_OPTIONS` itself: a runaway heap then ends the Node child (restarted by
/// the bridge) while the container and its other sessions live. Half leaves room for code, buffers
/// and native memory (n8n-mcp's SQLite) outside the heap.
pub const NODE_HEAP_SHARE: (u64, u64) = (1, 2);

/// `NODE_OPTIONS` of an npm service that does not set its own (see [`NODE_HEAP_SHARE`]).
fn node_heap_option(svc: &crate::manifest::Service) -> Option<(String, String)> {
    let npm = svc.server.source.kinds() == [crate::manifest::SourceKind::Npm];
    if !npm || svc.env.contains_key("NODE_OPTIONS") {
        return None;
    }
    let mib = (svc.limits.memory.0 * NODE_HEAP_SHARE.0 / NODE_HEAP_SHARE.1) >> 20;
    Some((
        "NODE_OPTIONS".into(),
        format!("--max-old-space-size={}", mib.max(16)),
    ))
}

/// A service container's environment, as deploy creates it and the compose export renders it:
/// the manifest's `env`, then (MCP services) the tool policy, the service name, the audit switch,
/// the access file's path when the service checks tokens, and for npm servers a V8 heap cap
/// ([`NODE_HEAP_SHARE`]). Part of the container spec, so a change is a spec change `plan` names.
pub fn container_env(m: &Manifest, service: &str) -> Vec<(String, String)> {
    let svc = &m.services[service];
    let mut env: Vec<(String, String)> = svc
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(
            svc.tools
                .as_ref()
                .and_then(|t| t.bridge_env())
                .map(|(k, v)| (k.to_string(), v)),
        )
        .collect();
    if svc.role == crate::manifest::Role::Service {
        let eff = effective(m, service);
        env.push((SERVICE_ENV.into(), service.to_string()));
        if eff.audit_arguments {
            env.push((AUDIT_ARGUMENTS_ENV.into(), "true".into()));
        }
        if eff.mode != AuthMode::None {
            env.push((AUTH_FILE_ENV.into(), auth_file_path()));
        }
        env.extend(node_heap_option(svc));
    }
    env
}

/// A consumer's token; `Debug` never shows it.
#[derive(Clone)]
pub struct Token {
    pub consumer: String,
    value: String,
}

impl Token {
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// SHA-256 of the token, hex: what a bridge compares against.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.value.as_bytes()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <redacted>)", self.consumer)
    }
}

/// A bearer token a client sends (mcpctl's own); `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Bearer(String);

impl Bearer {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

fn auth_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("auth")
}

fn generation_path(state_dir: &Path, consumer: &str) -> PathBuf {
    auth_dir(state_dir).join(format!("{consumer}.generation"))
}

/// The file holding a consumer's token for people and clients (`mcpctl token show`).
pub fn token_path(state_dir: &Path, consumer: &str) -> PathBuf {
    auth_dir(state_dir).join(format!("{consumer}.token"))
}

/// How many times a generated token was rotated (0: never).
pub fn generation(state_dir: &Path, consumer: &str) -> anyhow::Result<u64> {
    let path = generation_path(state_dir, consumer);
    match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().parse().with_context(|| {
            format!(
                "{} does not hold a number: fix or delete it (deleting brings back generation 0)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// A generated token: `mcp_` + 64 hex of the HMAC of the consumer and generation under the key.
fn generated(key: &[u8], consumer: &str, generation: u64) -> String {
    let msg = format!("auth token\0{consumer}\0{generation}");
    format!("mcp_{}", hex::encode(secrets::hmac(key, msg.as_bytes())))
}

/// Every consumer's token (mcpctl's first). A consumer whose `optional` source is unset is left
/// out; a missing required one is an error naming where it was looked for.
pub fn resolve_tokens(
    m: &Manifest,
    manifest_dir: &Path,
    state_dir: &Path,
    key: &[u8],
) -> anyhow::Result<Vec<Token>> {
    // mcpctl's own token never rotates on its own (a rollback's gate must still get in): it
    // changes only with the install key.
    let mut out = vec![Token {
        consumer: MCPCTL_CONSUMER.into(),
        value: mcpctl_token(key),
    }];
    for (name, c) in &m.auth.consumers {
        let value = if c.token.generate {
            generated(key, name, generation(state_dir, name)?)
        } else {
            match secrets::read_source(&c.token, manifest_dir) {
                Ok(Some(v)) => String::from_utf8(v).map_err(|_| {
                    anyhow::anyhow!("auth consumer `{name}`: its token is not UTF-8 text")
                })?,
                Ok(None) if c.token.optional => continue,
                Ok(None) => anyhow::bail!(
                    "auth consumer `{name}`: its token is not set ({}); set it, mark it `optional: true`, or remove `token:` to generate one",
                    secrets::describe_source(&c.token)
                ),
                Err(e) => anyhow::bail!(
                    "auth consumer `{name}`: reading its token ({}): {e}",
                    secrets::describe_source(&c.token)
                ),
            }
        };
        out.push(Token {
            consumer: name.clone(),
            value,
        });
    }
    Ok(out)
}

/// mcpctl's own token (the gate, reconcile, soak and cutover send it).
pub fn mcpctl_token(key: &[u8]) -> String {
    generated(key, MCPCTL_CONSUMER, 0)
}

/// mcpctl's own token for a service, when the service checks tokens (`None`: mode `none`).
pub fn client_token(
    m: &Manifest,
    service: &str,
    state_dir: &Path,
) -> anyhow::Result<Option<String>> {
    if m.services
        .get(service)
        .is_none_or(|_| effective(m, service).mode == AuthMode::None)
    {
        return Ok(None);
    }
    let key = secrets::install_key(state_dir)?;
    Ok(Some(mcpctl_token(&key)))
}

/// The bridge's auth file for `service` (`None` for mode `none`): the digests of the tokens it
/// accepts, their rates, and the JWT settings (a `jwks_file` is read now and embedded).
pub fn bridge_file(
    m: &Manifest,
    service: &str,
    tokens: &[Token],
    manifest_dir: &Path,
) -> anyhow::Result<Option<Vec<u8>>> {
    let eff = effective(m, service);
    if eff.mode == AuthMode::None {
        return Ok(None);
    }
    let rate = |r: &RateLimitSpec| Rate {
        per_sec: r.per_sec,
        burst: r.burst(),
    };
    let consumers = tokens
        .iter()
        .filter(|t| eff.consumers.contains(&t.consumer))
        .map(|t| ConsumerEntry {
            name: t.consumer.clone(),
            sha256: t.digest(),
            rate_limit: eff.rates.get(&t.consumer).map(rate),
        })
        .collect();
    let jwt = match (eff.mode, &m.auth.jwt) {
        (AuthMode::Jwt, Some(j)) => Some(jwt_config(j, manifest_dir)?),
        (AuthMode::Jwt, None) => {
            anyhow::bail!("service `{service}`: auth mode jwt needs `auth.jwt` (issuer, audience, jwks_file or jwks_url)")
        }
        _ => None,
    };
    let file = AuthFile {
        consumers,
        jwt,
        jwt_rate_limit: eff.jwt_rate.as_ref().map(rate),
    };
    Ok(Some(serde_json::to_vec_pretty(&file)?))
}

/// The bridge's auth file as the secret [`AUTH_SECRET`] (`None`: mode `none`).
pub fn bridge_secret(
    m: &Manifest,
    service: &str,
    tokens: &[Token],
    manifest_dir: &Path,
    key: &[u8],
) -> anyhow::Result<Option<secrets::Resolved>> {
    Ok(bridge_file(m, service, tokens, manifest_dir)?
        .map(|bytes| secrets::Resolved::made(key, AUTH_SECRET, bytes)))
}

/// Every secret a service's container mounts with the manifest as it is now: its `secrets` and,
/// for an MCP service, the bridge's auth file (what `rollback --current-secrets` re-keys to).
pub fn current_secrets(
    m: &Manifest,
    service: &str,
    manifest_dir: &Path,
    state_dir: &Path,
    key: &[u8],
) -> anyhow::Result<Vec<secrets::Resolved>> {
    let mut out = secrets::resolve(m, service, manifest_dir, key)?;
    if m.services[service].role == crate::manifest::Role::Service {
        let tokens = resolve_tokens(m, manifest_dir, state_dir, key)?;
        out.extend(bridge_secret(m, service, &tokens, manifest_dir, key)?);
    }
    Ok(out)
}

fn jwt_config(
    j: &crate::manifest::JwtSpec,
    manifest_dir: &Path,
) -> anyhow::Result<crate::bridge::jwt::JwtConfig> {
    use crate::bridge::jwt::{JwksSource, JwtConfig};
    let jwks =
        match (&j.jwks_file, &j.jwks_url) {
            (Some(f), _) => {
                let path = manifest_dir.join(f);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("auth.jwt.jwks_file: reading {}", path.display()))?;
                JwksSource::Inline(serde_json::from_str(&text).with_context(|| {
                    format!("auth.jwt.jwks_file: {} is not JSON", path.display())
                })?)
            }
            (None, Some(u)) => JwksSource::Url(u.clone()),
            (None, None) => anyhow::bail!("auth.jwt needs `jwks_file` or `jwks_url`"),
        };
    Ok(JwtConfig {
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        jwks,
        resource: j.resource.clone(),
        required_scopes: j.scopes.clone(),
        leeway_s: 30,
    })
}

/// Write each consumer's token file (0600 in a 0700 directory, atomically; unchanged files are
/// left alone). Called by deploy before anything is started.
pub fn write_token_files(state_dir: &Path, tokens: &[Token]) -> anyhow::Result<()> {
    let dir = auth_dir(state_dir);
    secrets::private_dir(&dir)?;
    for t in tokens {
        let path = token_path(state_dir, &t.consumer);
        if std::fs::read(&path).is_ok_and(|v| v == t.value.as_bytes()) {
            continue;
        }
        secrets::write_private(&path, t.value.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `mcpctl token rotate`: the next generation of a generated token (takes effect with the next
/// deploy, which rolls every service that accepts it).
pub fn rotate(m: &Manifest, state_dir: &Path, consumer: &str) -> anyhow::Result<u64> {
    if consumer == MCPCTL_CONSUMER {
        anyhow::bail!(
            "mcpctl's own token is derived from the install key and is not rotated on its own (a rollback's gate must still reach older revisions); see runbooks/access-control.md"
        );
    }
    let c = m.auth.consumers.get(consumer).ok_or_else(|| {
        anyhow::anyhow!(
            "no consumer `{consumer}` in auth.consumers (known: {})",
            m.auth
                .consumers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    if !c.token.generate {
        anyhow::bail!(
            "consumer `{consumer}` takes its token from {}: change it there, then `mcpctl deploy`",
            secrets::describe_source(&c.token)
        );
    }
    let next = generation(state_dir, consumer)? + 1;
    secrets::private_dir(&auth_dir(state_dir))?;
    secrets::write_private(
        &generation_path(state_dir, consumer),
        format!("{next}\n").as_bytes(),
    )?;
    Ok(next)
}

/// The HMAC fingerprint of a token (12 hex under the install key): safe to print.
pub fn fingerprint(key: &[u8], t: &Token) -> String {
    secrets::fingerprint(key, &format!("auth:{}", t.consumer), t.value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(text: &str, service: &str) -> BTreeMap<String, String> {
        let (m, _) = crate::manifest::load_str(text, "services.yaml").expect("manifest");
        container_env(&m, service).into_iter().collect()
    }

    const MANIFEST: &str = r#"
version: 1
project: t
bases:
  runtime: {suite: bookworm, packages: [ca-certificates]}
  node22: {suite: bookworm, packages: [ca-certificates], node: "22.23.3"}
services:
  js:
    port: 8501
    build: {base: node22}
    server: {source: {npm: {package: js-mcp, version: "1.0.0"}}, command: [js-mcp]}
    limits: {memory: 192m}
  own:
    port: 8502
    build: {base: node22}
    server: {source: {npm: {package: own-mcp, version: "1.0.0"}}, command: [own-mcp]}
    env: {NODE_OPTIONS: "--max-old-space-size=300"}
  py:
    port: 8503
    build: {base: runtime}
    server: {source: {pypi: {package: py-mcp, version: "1.0"}}, command: [py-mcp]}
"#;

    #[test]
    fn npm_servers_get_a_heap_cap_below_their_memory_limit_unless_they_set_one() {
        assert_eq!(
            env_of(MANIFEST, "js")
                .get("NODE_OPTIONS")
                .map(String::as_str),
            Some("--max-old-space-size=96")
        );
        // The manifest's own value wins.
        assert_eq!(
            env_of(MANIFEST, "own")
                .get("NODE_OPTIONS")
                .map(String::as_str),
            Some("--max-old-space-size=300")
        );
        assert_eq!(env_of(MANIFEST, "py").get("NODE_OPTIONS"), None);
    }
}
