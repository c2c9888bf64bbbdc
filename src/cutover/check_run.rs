//! `cutover check` from end to end: resolve both sides of every service ([`super::targets`]),
//! reach LiteLLM (a running one, or one started with the rendered config for this check), compare
//! ([`super::check::run`]), then keep the report under `<state>/cutover/`, note it in
//! `cutover.json` and the ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::check::{self, CheckOptions, CheckReport};
use super::edge;
use super::litellm::{self, Launched, LiteLlm};
use super::scope::{entry, Scope};
use super::state::{CutoverState, LastCheck};
use super::targets;
use crate::error::CommandError;
use crate::manifest::LiteLlmNetwork;
use crate::rollout::ledger::Ledger;

/// Which LiteLLM the check goes through.
#[derive(Debug, Clone)]
pub enum LiteLlmSource {
    /// Old vs new only.
    Skip,
    /// A running proxy; its master key is the manifest's.
    Url(String),
    /// mcpctl starts one with the rendered config, byte for byte, and stops it afterwards.
    Start {
        bin: Option<PathBuf>,
        port: Option<u16>,
        /// How long it may take to answer `/health/liveliness`.
        startup: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// Only these services (empty: every service with a `legacy` endpoint).
    pub services: Vec<String>,
    /// `SERVICE=URL`: where the new stack answers, instead of what the labels say.
    pub new_urls: Vec<String>,
    pub litellm: LiteLlmSource,
    pub latency_calls: usize,
    /// Bound of every MCP or HTTP request.
    pub timeout: Duration,
    pub edge_admin: String,
}

/// The check's report (its JSON form) and where it was kept.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct CheckOutcome {
    pub report: CheckReport,
    #[serde(skip)]
    pub path: PathBuf,
}

pub async fn run(scope: &Scope, req: &CheckRequest) -> anyhow::Result<CheckOutcome> {
    let names = scope.selected(&req.services)?;
    let new_urls = targets::parse_new_urls(&req.new_urls, &names)?;
    // Only what the edge routes each service to: a check runs without an edge too.
    let admin = edge::admin(&req.edge_admin, Duration::from_secs(2), &scope.state_dir);
    let routes = edge::routes(&admin).await.ok();
    let targets = targets::resolve(scope, &names, &new_urls, routes.as_ref()).await?;
    let (llm, launched) = reach_litellm(scope, &req.litellm, req.timeout).await?;
    let report = check::run(
        &targets,
        llm.as_ref(),
        &CheckOptions {
            timeout: req.timeout,
            latency_calls: req.latency_calls,
        },
    )
    .await;
    drop(launched);
    let path = record(&scope.state_dir, &names, &report)?;
    Ok(CheckOutcome { report, path })
}

/// The LiteLLM client for the check, and the process when mcpctl started it (dropping it stops
/// LiteLLM).
async fn reach_litellm(
    scope: &Scope,
    source: &LiteLlmSource,
    timeout: Duration,
) -> anyhow::Result<(Option<LiteLlm>, Option<Launched>)> {
    // LiteLLM's MCP calls time out at 30 s (launch); a client must wait a bit longer.
    let client_timeout = timeout.max(Duration::from_secs(35));
    let (key_env, key) = scope.master_key();
    match source {
        LiteLlmSource::Skip => Ok((None, None)),
        LiteLlmSource::Url(url) => {
            if key.is_none() {
                tracing::warn!(
                    "LiteLLM's master key ({key_env}) is not set: calls to {url} go unauthenticated \
                     and a proxy with a key answers 401"
                );
            }
            Ok((Some(LiteLlm::new(url, key, client_timeout)?), None))
        }
        LiteLlmSource::Start { bin, port, startup } => {
            if scope.manifest.litellm.network != LiteLlmNetwork::Host {
                return Err(CommandError::usage(
                    "--start-litellm runs LiteLLM on this host, but `litellm.network` is `docker` (its \
                     config names mcp-<service>:8080, which only resolves on the stack network): run \
                     LiteLLM on the stack network and pass --litellm-url, or set litellm.network: host",
                )
                .into());
            }
            let key = litellm::required_key(&key_env, key)?;
            let config = litellm::rendered_config(&scope.manifest)?;
            let port = port.unwrap_or_else(litellm::free_port);
            let bin = bin.clone().unwrap_or_else(litellm::default_bin);
            let dir = litellm::run_dir(&scope.state_dir);
            let mut l = litellm::launch(
                &bin,
                &config,
                &dir,
                port,
                &key_env,
                &key,
                &scope.litellm_tokens()?,
            )?;
            let client = LiteLlm::new(&l.url, Some(key), client_timeout)?;
            tracing::info!(
                "started LiteLLM (pid {}) on {} with {}; waiting for it",
                l.pid(),
                l.url,
                l.config_path.display()
            );
            let took = client.wait_alive(*startup, || l.check_running()).await?;
            tracing::info!("LiteLLM answered after {:.1} s", took.as_secs_f64());
            Ok((Some(client), Some(l)))
        }
    }
}

/// Where a report made at `at` (RFC 3339) is kept.
pub fn report_path(state_dir: &Path, at: &str) -> PathBuf {
    state_dir.join("cutover").join(format!(
        "check-{}.json",
        at.replace([':', '-'], "").replace('T', "-")
    ))
}

/// Keep the report, note it as the last check in `cutover.json`, and append it to the ledger.
fn record(state_dir: &Path, names: &[String], report: &CheckReport) -> anyhow::Result<PathBuf> {
    let path = report_path(state_dir, &report.at);
    fs_err::create_dir_all(state_dir.join("cutover"))?;
    fs_err::write(&path, serde_json::to_vec_pretty(report)?)?;
    let mut st = CutoverState::load(state_dir)?;
    st.last_check = Some(LastCheck {
        at: report.at.clone(),
        services: names.to_vec(),
        differences: report.differences,
        report: path.clone(),
    });
    st.save(state_dir)?;
    let mut e = entry(
        "cutover check",
        None,
        if report.differences == 0 {
            "ok"
        } else {
            "differences"
        },
        None,
    );
    e.services = names.to_vec();
    e.detail = Some(format!(
        "{} differences; report {}",
        report.differences,
        path.display()
    ));
    Ledger::new(state_dir).append(&e)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_named_by_their_time_without_colons() {
        assert_eq!(
            report_path(Path::new("/s"), "2026-11-25T01:02:03Z"),
            Path::new("/s/cutover/check-20261125-010203Z.json")
        );
    }

    #[test]
    fn a_check_is_recorded_in_the_state_and_the_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let report = CheckReport {
            at: "2026-11-25T01:02:03Z".into(),
            litellm_url: None,
            litellm_alive_after: None,
            services: vec![],
            differences: 2,
        };
        let names = ["alpha".to_string()];
        let path = record(dir.path(), &names, &report).unwrap();
        let kept: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(kept["differences"], 2);
        let st = CutoverState::load(dir.path()).unwrap();
        let last = st.last_check.unwrap();
        assert_eq!((last.differences, last.report), (2, path));
        let ledger = std::fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap();
        assert!(
            ledger.contains("\"cutover check\"") && ledger.contains("\"differences\""),
            "{ledger}"
        );
    }
}
