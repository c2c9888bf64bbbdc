//! The LiteLLM proxy (tested with 1.108.7), as cutover uses it:
//! - [`launch`] starts it from its venv (scripts/cutover-venvs) on 127.0.0.1 with the config
//!   `mcpctl render` produces, written byte for byte; LiteLLM cannot reload a config, so one process
//!   serves a whole cutover and is never restarted by a switch;
//! - [`LiteLlm`] talks to a running one: `GET /health/liveliness`, `GET /v1/mcp/tools` (names
//!   `<server>-<tool>`), `POST /mcp-rest/tools/call` (`{server_id, name, arguments}`; `server_id`
//!   may be the server's name) and its own MCP endpoint `/mcp` (Streamable HTTP, bearer auth).
//!
//! Measured on 1.108.7: the REST call endpoint answers an unknown tool with HTTP 500
//! (`{"detail": {"error": "internal_server_error", ...}}`) and an unknown server with 404, while
//! `/mcp` answers a tools/call result with `isError: true`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::scope::Scope;
use crate::error::CommandError;
use crate::manifest::Manifest;
use crate::mcp::{Options, Session, Transport};

/// What one REST tool call returned.
#[derive(Debug, Clone, Serialize)]
pub struct RestCall {
    /// HTTP status, or None when LiteLLM did not answer (connect error, timeout).
    pub status: Option<u16>,
    /// The result's `isError`, when the body is a tool result.
    pub is_error: Option<bool>,
    /// Text content joined, or the error body.
    pub text: String,
    pub ms: f64,
}

impl RestCall {
    pub fn succeeded(&self) -> bool {
        self.status == Some(200) && self.is_error == Some(false)
    }
}

pub struct LiteLlm {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl LiteLlm {
    pub fn new(base: &str, key: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            key,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(timeout)
                .build()?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// Wait until `GET /health/liveliness` answers 200, or `within` passes. `alive` is polled
    /// between tries, so a launched process that died ends the wait at once.
    pub async fn wait_alive(
        &self,
        within: Duration,
        mut alive: impl FnMut() -> Result<(), String>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let url = format!("{}/health/liveliness", self.base);
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(started.elapsed());
                }
            }
            alive().map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                started.elapsed() < within,
                "LiteLLM at {} did not answer /health/liveliness within {within:?}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn alive(&self) -> bool {
        let url = format!("{}/health/liveliness", self.base);
        matches!(self.http.get(&url).send().await, Ok(r) if r.status().is_success())
    }

    /// `GET /v1/mcp/tools`: every tool LiteLLM can reach, as `<server>-<tool>`.
    pub async fn tools(&self) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/v1/mcp/tools", self.base);
        let resp = self
            .auth(self.http.get(&url))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}: {body}");
        Ok(body["tools"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `POST /mcp-rest/tools/call`. Never fails: what happened is in the [`RestCall`].
    pub async fn rest_call(&self, server: &str, tool: &str, arguments: &Value) -> RestCall {
        let url = format!("{}/mcp-rest/tools/call", self.base);
        let started = Instant::now();
        let sent = self
            .auth(self.http.post(&url))
            .json(&json!({"server_id": server, "name": tool, "arguments": arguments}))
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return RestCall {
                    status: None,
                    is_error: None,
                    text: e.to_string(),
                    ms: started.elapsed().as_secs_f64() * 1e3,
                }
            }
        };
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let is_error = parsed.get("isError").and_then(Value::as_bool);
        let text = match parsed["content"].as_array() {
            Some(items) if is_error.is_some() => items
                .iter()
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => body,
        };
        RestCall {
            status: Some(status),
            is_error,
            text,
            ms,
        }
    }

    /// An MCP session with LiteLLM's own endpoint (`/mcp`, Streamable HTTP): tools are named
    /// `<server>-<tool>` there. Legacy: LiteLLM speaks initialize-based sessions only.
    pub async fn mcp_session(&self, timeout: Duration) -> anyhow::Result<Session> {
        Session::connect_with(
            &self.base,
            Transport::Http,
            &Options {
                timeout,
                bearer_token: self.key.clone(),
            },
        )
        .await
        .with_context(|| format!("MCP initialize with LiteLLM at {}/mcp", self.base))
    }
}

/// A LiteLLM process mcpctl started. Dropping it stops the process.
pub struct Launched {
    child: std::process::Child,
    pub url: String,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Launched {
    /// Err with the log tail if the process has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "LiteLLM exited ({status}) during start-up; last log lines ({}):\n{}",
                self.log_path.display(),
                log_tail(&self.log_path, 20)
            )),
            _ => Ok(()),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The default LiteLLM executable: the venv scripts/cutover-venvs makes.
pub fn default_bin() -> PathBuf {
    let cache = std::env::var_os("MCPCTL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/mcpctl"));
    cache.join("venv-litellm/bin/litellm")
}

/// The litellm/config.yaml `mcpctl render` writes for `manifest`, byte for byte.
pub fn rendered_config(manifest: &Manifest) -> anyhow::Result<String> {
    let artifacts = crate::render::render(manifest, Some(crate::render::ArtifactKind::Litellm))?;
    artifacts
        .into_iter()
        .find(|a| a.path.ends_with("config.yaml"))
        .map(|a| a.contents)
        .ok_or_else(|| anyhow::anyhow!("render produced no litellm/config.yaml"))
}

/// A port on 127.0.0.1 nothing listens on right now (4000 if none can be found).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(4000)
}

/// Where a LiteLLM mcpctl starts keeps its config and log.
pub fn run_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cutover").join("litellm")
}

/// LiteLLM's master key, required to start one: its value, or a usage error naming the variable.
pub fn required_key(env_name: &str, value: Option<String>) -> Result<String, CommandError> {
    value.ok_or_else(|| {
        CommandError::usage(format!(
            "LiteLLM's master key is not set ({env_name}): export it or fix litellm.master_key"
        ))
    })
}

/// `cutover litellm`: start LiteLLM on 127.0.0.1:`port` with the rendered config and wait (up to
/// 180 s) until it answers; how long that took.
pub async fn start_rendered(
    scope: &Scope,
    bin: Option<PathBuf>,
    port: u16,
) -> anyhow::Result<(Launched, Duration)> {
    let (key_env, key) = scope.master_key();
    let key = required_key(&key_env, key)?;
    let config = rendered_config(&scope.manifest)?;
    let bin = bin.unwrap_or_else(default_bin);
    let mut l = launch(
        &bin,
        &config,
        &run_dir(&scope.state_dir),
        port,
        &key_env,
        &key,
        &scope.litellm_tokens()?,
    )?;
    let client = LiteLlm::new(&l.url, Some(key), Duration::from_secs(5))?;
    let took = client
        .wait_alive(Duration::from_secs(180), || l.check_running())
        .await?;
    Ok((l, took))
}

/// Keep a started LiteLLM until Ctrl-C or SIGTERM, then stop it; an error if it exits first.
pub async fn serve_until_signal(mut l: Launched) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Err(e) = l.check_running() {
                    return Err(anyhow::anyhow!(e));
                }
            }
        }
    }
    l.stop();
    Ok(())
}

/// Write `config` (the rendered litellm/config.yaml, unchanged) into `dir` and start LiteLLM on
/// 127.0.0.1:`port` with the master key in the environment variable the config names. No
/// network is needed (`LITELLM_LOCAL_MODEL_COST_MAP`); MCP timeouts as FACTS.md measured.
pub fn launch(
    bin: &Path,
    config: &str,
    dir: &Path,
    port: u16,
    master_key_env: &str,
    master_key: &str,
    tokens: &[(String, crate::auth::Bearer)],
) -> anyhow::Result<Launched> {
    anyhow::ensure!(
        bin.exists(),
        "no LiteLLM at {} (create its venv with scripts/cutover-venvs, or pass --litellm-bin / --litellm-url)",
        bin.display()
    );
    fs_err::create_dir_all(dir)?;
    let config_path = dir.join("litellm-config.yaml");
    fs_err::write(&config_path, config.as_bytes())?;
    let log_path = dir.join("litellm.log");
    let log = fs_err::File::create(&log_path)?.into_file();
    let child = std::process::Command::new(bin)
        .arg("--config")
        .arg(&config_path)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env(master_key_env, master_key)
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_MCP_CLIENT_TIMEOUT", "30")
        .env("LITELLM_MCP_TOOL_LISTING_TIMEOUT", "10")
        .env("NO_PROXY", "*")
        .envs(tokens.iter().map(|(k, v)| (k, v.expose())))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Launched {
        child,
        url: format!("http://127.0.0.1:{port}"),
        config_path,
        log_path,
    })
}
