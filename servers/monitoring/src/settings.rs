//! Configuration from the environment, resolved and validated once at start.
//!
//! Owns: the variable names, their defaults and what makes a value invalid. Must not: do I/O.

use std::time::Duration;

pub const DEFAULT_DOCKER_PROXY_URL: &str = "http://mcp-dockerproxy:2375";
pub const DEFAULT_BRIDGE_URL_TEMPLATE: &str = "http://mcp-{service}:8080";
pub const DEFAULT_LABEL_PREFIX: &str = "com.mcp";
/// Every HTTP call (docker proxy, bridges, Prometheus) gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of `mcpctl docker-proxy`, without a trailing slash.
    pub docker_proxy_url: String,
    /// Base URL of a service's bridge; `{service}` is replaced by the service name.
    pub bridge_url_template: String,
    /// Base URL of Prometheus, when one is configured.
    pub prometheus_url: Option<String>,
    /// Container label prefix (`<p>` in docs/contracts.md).
    pub label_prefix: String,
    pub call_timeout: Duration,
}

#[derive(Debug)]
pub struct SettingsError(String);

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        // An empty variable counts as unset (compose renders unset optional values as "").
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let docker_proxy_url = base_url(
            "MCP_DOCKER_PROXY_URL",
            var("MCP_DOCKER_PROXY_URL").unwrap_or_else(|| DEFAULT_DOCKER_PROXY_URL.into()),
        )?;
        let bridge_url_template = base_url(
            "MCP_BRIDGE_URL_TEMPLATE",
            var("MCP_BRIDGE_URL_TEMPLATE").unwrap_or_else(|| DEFAULT_BRIDGE_URL_TEMPLATE.into()),
        )?;
        if !bridge_url_template.contains("{service}") {
            return Err(SettingsError(format!(
                "MCP_BRIDGE_URL_TEMPLATE must contain {{service}} (e.g. {DEFAULT_BRIDGE_URL_TEMPLATE}), got {bridge_url_template}"
            )));
        }
        let prometheus_url = var("PROMETHEUS_URL")
            .map(|u| base_url("PROMETHEUS_URL", u))
            .transpose()?;
        let label_prefix = var("MCP_LABEL_PREFIX").unwrap_or_else(|| DEFAULT_LABEL_PREFIX.into());
        if label_prefix.ends_with('.') || label_prefix.contains(char::is_whitespace) {
            return Err(SettingsError(format!(
                "MCP_LABEL_PREFIX must be a label prefix such as {DEFAULT_LABEL_PREFIX} (no trailing dot, no spaces), got {label_prefix:?}"
            )));
        }
        Ok(Settings {
            docker_proxy_url,
            bridge_url_template,
            prometheus_url,
            label_prefix,
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// Base URL of `service`'s bridge. `service` must already be a valid service name.
    pub fn bridge_url(&self, service: &str) -> String {
        self.bridge_url_template.replace("{service}", service)
    }
}

fn base_url(var: &str, value: String) -> Result<String, SettingsError> {
    if !value.starts_with("http://") && !value.starts_with("https://") {
        return Err(SettingsError(format!(
            "{var} must be an http:// URL, got {value:?}"
        )));
    }
    Ok(value.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = from(&[]).unwrap();
        assert_eq!(s.docker_proxy_url, "http://mcp-dockerproxy:2375");
        assert_eq!(s.bridge_url("fetch"), "http://mcp-fetch:8080");
        assert_eq!(s.prometheus_url, None);
        assert_eq!(s.label_prefix, "com.mcp");
    }

    #[test]
    fn overrides_and_trailing_slashes() {
        let s = from(&[
            ("MCP_DOCKER_PROXY_URL", "http://127.0.0.1:9/"),
            ("MCP_BRIDGE_URL_TEMPLATE", "http://127.0.0.1:7/{service}/"),
            ("PROMETHEUS_URL", "http://prom:9090/"),
            ("MCP_LABEL_PREFIX", "org.example"),
        ])
        .unwrap();
        assert_eq!(s.docker_proxy_url, "http://127.0.0.1:9");
        assert_eq!(s.bridge_url("db"), "http://127.0.0.1:7/db");
        assert_eq!(s.prometheus_url.as_deref(), Some("http://prom:9090"));
        assert_eq!(s.label_prefix, "org.example");
        assert_eq!(
            from(&[("PROMETHEUS_URL", "  ")]).unwrap().prometheus_url,
            None
        );
    }

    #[test]
    fn invalid_values_are_refused_with_the_variable_name() {
        let e = from(&[("MCP_BRIDGE_URL_TEMPLATE", "http://bridge:8080")]).unwrap_err();
        assert!(e.to_string().contains("{service}"), "{e}");
        let e = from(&[("MCP_DOCKER_PROXY_URL", "unix:///var/run/docker.sock")]).unwrap_err();
        assert!(e.to_string().starts_with("MCP_DOCKER_PROXY_URL"), "{e}");
        assert!(from(&[("MCP_LABEL_PREFIX", "com.mcp.")]).is_err());
    }
}
