//! What every cutover step works with: the manifest (and its directory, for secrets given as
//! files), the state directory (`cutover.json`, reports, the ledger), which services take part
//! (those with a `legacy` endpoint), and the shape of cutover's ledger entries.

use std::path::{Path, PathBuf};

use crate::error::CommandError;
use crate::manifest::{Legacy, Manifest, Role, Transport};
use crate::rollout::ledger::{now_rfc3339, Entry};
use crate::rollout::lock::{hostname, whoami};

pub struct Scope {
    pub manifest: Manifest,
    /// Where `services.yaml` lives: `litellm.master_key.from_file` is relative to it.
    pub manifest_dir: PathBuf,
    pub state_dir: PathBuf,
}

impl Scope {
    /// mcpctl's bearer token for a service of the stack (`None`: its auth mode is `none`, or the
    /// install key cannot be read — the request then gets the bridge's 401, which says so).
    /// The environment a LiteLLM started by mcpctl needs for the rendered config's
    /// `authentication_token: os.environ/MCPCTL_TOKEN_LITELLM`: the `litellm` consumer's token
    /// (empty when litellm is not a consumer).
    pub fn litellm_tokens(&self) -> anyhow::Result<Vec<(String, crate::auth::Bearer)>> {
        let key = crate::rollout::secrets::install_key(&self.state_dir)?;
        let tokens =
            crate::auth::resolve_tokens(&self.manifest, &self.manifest_dir, &self.state_dir, &key)?;
        Ok(tokens
            .into_iter()
            .filter(|t| t.consumer == "litellm")
            .map(|t| {
                (
                    crate::auth::token_env(&t.consumer),
                    crate::auth::Bearer::new(t.expose().to_string()),
                )
            })
            .collect())
    }

    pub fn token(&self, service: &str) -> Option<String> {
        crate::auth::client_token(&self.manifest, service, &self.state_dir)
            .ok()
            .flatten()
    }

    pub fn new(manifest: Manifest, manifest_path: &Path, state_dir: PathBuf) -> Self {
        let manifest_dir = manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            manifest,
            manifest_dir,
            state_dir,
        }
    }

    /// The services a cutover command acts on: the named ones (each must have `legacy`), else
    /// every service with a `legacy` endpoint.
    pub fn selected(&self, names: &[String]) -> Result<Vec<String>, CommandError> {
        let manifest = &self.manifest;
        let with_legacy: Vec<String> = manifest
            .services
            .iter()
            .filter(|(_, s)| s.role == Role::Service && s.legacy.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            if with_legacy.is_empty() {
                return Err(CommandError::usage(
                    "no service names a `legacy` endpoint (services.<name>.legacy.url): nothing to cut over",
                ));
            }
            return Ok(with_legacy);
        }
        for n in names {
            match manifest.services.get(n) {
                None => {
                    return Err(CommandError::usage(format!(
                        "unknown service `{n}` (the manifest has: {})",
                        manifest
                            .services
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
                Some(s) if s.legacy.is_none() => {
                    return Err(CommandError::usage(format!(
                    "service `{n}` has no `legacy` endpoint in the manifest: nothing to cut over"
                )))
                }
                _ => {}
            }
        }
        Ok(names.to_vec())
    }

    /// The old proxy's endpoint of a service [`Scope::selected`] returned.
    pub fn legacy(&self, service: &str) -> &Legacy {
        self.manifest.services[service]
            .legacy
            .as_ref()
            .expect("selected services have legacy")
    }

    /// How the new stack serves `service`: its own transport, else LiteLLM's default.
    pub fn transport(&self, service: &str) -> Transport {
        self.manifest.services[service]
            .transport
            .unwrap_or(self.manifest.litellm.transport)
    }

    /// The edge admin API: `--edge-admin`, else the manifest's loopback admin port.
    pub fn edge_admin_url(&self, flag: Option<&str>) -> String {
        flag.map(str::to_string)
            .unwrap_or_else(|| format!("http://127.0.0.1:{}", self.manifest.edge.admin_port))
    }

    /// LiteLLM's master key: the environment variable it is passed in (the rendered config names
    /// it), and its value when set.
    pub fn master_key(&self) -> (String, Option<String>) {
        let r = &self.manifest.litellm.master_key;
        let env_name = r
            .from_env
            .clone()
            .unwrap_or_else(|| "LITELLM_MASTER_KEY".into());
        let value = if let Some(var) = &r.from_env {
            std::env::var(var).ok().filter(|v| !v.is_empty())
        } else if let Some(file) = &r.from_file {
            std::fs::read_to_string(self.manifest_dir.join(file))
                .ok()
                .map(|v| v.trim_end_matches('\n').to_string())
        } else {
            None
        };
        (env_name, value)
    }
}

/// A ledger entry of a cutover step (`event: cutover`), by whom and where.
pub fn entry(command: &str, service: Option<&str>, outcome: &str, message: Option<&str>) -> Entry {
    Entry {
        ts: now_rfc3339(),
        event: "cutover".into(),
        release: 0,
        command: command.into(),
        who: whoami(),
        host: hostname(),
        pid: std::process::id(),
        message: message.map(str::to_string),
        service: service.map(str::to_string),
        outcome: outcome.into(),
        ..Entry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::manifest;

    fn scope() -> Scope {
        Scope::new(
            manifest(true),
            Path::new("/etc/mcp/services.yaml"),
            "/s".into(),
        )
    }

    #[test]
    fn cutover_acts_on_services_with_a_legacy_endpoint() {
        let s = scope();
        assert_eq!(s.manifest_dir, Path::new("/etc/mcp"));
        assert_eq!(s.selected(&[]).unwrap(), ["alpha", "gamma"]);
        assert_eq!(s.selected(&["gamma".into()]).unwrap(), ["gamma"]);
        let e = s.selected(&["plain".into()]).unwrap_err();
        assert!(
            e.message.contains("`plain` has no `legacy` endpoint"),
            "{e}"
        );
        let e = s.selected(&["nope".into()]).unwrap_err();
        assert!(
            e.message
                .contains("unknown service `nope` (the manifest has: alpha, gamma, plain)"),
            "{e}"
        );
    }

    #[test]
    fn transports_and_the_edge_admin_default_come_from_the_manifest() {
        let s = scope();
        // alpha names none: LiteLLM's; its old proxy is SSE (the default), gamma's HTTP.
        assert_eq!(s.transport("alpha"), Transport::Http);
        assert_eq!(s.legacy("alpha").transport, Transport::Sse);
        assert_eq!(s.legacy("gamma").transport, Transport::Http);
        assert_eq!(
            s.edge_admin_url(None),
            format!("http://127.0.0.1:{}", s.manifest.edge.admin_port)
        );
        assert_eq!(s.edge_admin_url(Some("http://e:1")), "http://e:1");
    }
}
