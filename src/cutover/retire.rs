//! `cutover retire`: stop the old proxy with the manifest's `cutover.legacy_stop`, once every
//! service has run on the stack for the clean period (by `cutover.json`) and the edge agrees it
//! routes every one to the stack; then wait until the old endpoints stop answering, and record
//! the retirement (revert is refused from then on).
//!
//! Two steps, so the command can ask for confirmation in between: [`plan`] decides whether the
//! old proxy may go, [`execute`] stops it. Must not: take the project lock, or print.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::edge::{self, RouteKind, RouteView};
use super::probe::mcp_answers;
use super::scope::{entry, Scope};
use super::state::{self, CutoverState, Retired};
use crate::error::{CommandError, ExitCode};
use crate::mcp::Mode;
use crate::rollout::ledger::{now_rfc3339, Ledger};
use crate::rollout::lock::whoami;

/// How long `cutover.legacy_stop` may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the old endpoints may keep answering after the stop command returned.
pub const GONE_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct RetireRequest {
    /// Overrides the manifest's `cutover.clean_period`.
    pub clean_period: Option<Duration>,
    /// Why (recorded in the ledger).
    pub message: Option<String>,
    pub edge_admin: String,
}

/// Whether the old proxy may be stopped.
#[derive(Debug)]
pub enum RetirePlan {
    /// It was already: nothing to do.
    AlreadyRetired(Retired),
    /// Every service is clean; stop it with `stop`.
    Ready(Ready),
}

#[derive(Debug)]
pub struct Ready {
    pub services: Vec<String>,
    /// `cutover.legacy_stop`.
    pub stop: Vec<String>,
    state: CutoverState,
}

impl Ready {
    /// What the operator confirms.
    pub fn question(&self) -> String {
        format!(
            "Stop the old proxy ({}) serving {}? Revert will no longer be possible",
            self.stop.join(" "),
            self.services.join(", ")
        )
    }
}

/// The old proxy was stopped: the retirement record and the services it served.
#[derive(Debug, Clone, Serialize)]
pub struct RetireReport {
    pub retired: Retired,
    pub services: Vec<String>,
}

/// Why each service is not ready for retirement: not on the stack for the clean period by
/// `state` at `now`, or not routed to the stack by the edge (`routes`).
pub fn problems(
    st: &CutoverState,
    names: &[String],
    routes: &BTreeMap<String, RouteView>,
    clean_period: Duration,
    now: SystemTime,
) -> Vec<(String, String)> {
    let mut problems = state::not_clean(st, names, clean_period, now);
    for n in names {
        match routes.get(n) {
            Some(r) if r.kind == RouteKind::Stack => {}
            Some(r) => problems.push((
                n.clone(),
                format!("the edge routes it to {} ({})", r.kind.as_str(), r.upstream),
            )),
            None => problems.push((n.clone(), "the edge has no route for it".into())),
        }
    }
    problems
}

/// The refusal listing [`problems`].
pub fn not_ready(problems: &[(String, String)], clean_period: Duration) -> CommandError {
    let list = problems
        .iter()
        .map(|(n, why)| format!("  {n}: {why}"))
        .collect::<Vec<_>>()
        .join("\n");
    CommandError::new(
        ExitCode::Runtime,
        format!(
            "not retiring the old proxy: not every service has run on the stack for the clean \
             period ({}):\n{list}",
            humantime::format_duration(clean_period)
        ),
    )
}

/// Decide whether the old proxy may be stopped (nothing is changed).
pub async fn plan(scope: &Scope, req: &RetireRequest) -> anyhow::Result<RetirePlan> {
    let names = scope.selected(&[])?;
    let st = CutoverState::load(&scope.state_dir)?;
    if let Some(r) = &st.retired {
        return Ok(RetirePlan::AlreadyRetired(r.clone()));
    }
    let stop = &scope.manifest.cutover.legacy_stop;
    if stop.is_empty() {
        return Err(CommandError::usage(
            "the manifest does not say how to stop the old proxy: set `cutover.legacy_stop` \
             (an argv, e.g. [systemctl, stop, mcp-proxy])",
        )
        .into());
    }
    let clean_period = req
        .clean_period
        .unwrap_or(scope.manifest.cutover.clean_period);
    // The edge must agree that everything is on the stack.
    let admin = edge::admin(&req.edge_admin, Duration::from_secs(5), &scope.state_dir);
    let routes = edge::routes(&admin).await?;
    let problems = problems(&st, &names, &routes, clean_period, SystemTime::now());
    if !problems.is_empty() {
        return Err(not_ready(&problems, clean_period).into());
    }
    Ok(RetirePlan::Ready(Ready {
        services: names,
        stop: stop.clone(),
        state: st,
    }))
}

/// Stop the old proxy, wait until its endpoints no longer answer, and record the retirement.
pub async fn execute(
    scope: &Scope,
    ready: Ready,
    message: Option<&str>,
) -> anyhow::Result<RetireReport> {
    let Ready {
        services: names,
        stop,
        state: mut st,
    } = ready;
    let started = Instant::now();
    let out = run_stop(&stop).await?;
    let ledger = Ledger::new(&scope.state_dir);
    if !out.status.success() {
        let mut e = entry("cutover retire", None, "error", message);
        e.detail = Some(format!(
            "{} exited {}: {}",
            stop.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        ledger.append(&e)?;
        return Err(CommandError::new(ExitCode::Runtime, e.detail.unwrap_or_default()).into());
    }
    // The old endpoints must stop answering.
    let deadline = Instant::now() + GONE_WITHIN;
    let mut still = Vec::new();
    loop {
        still.clear();
        for n in &names {
            let l = scope.legacy(n);
            if mcp_answers(
                &l.url,
                l.transport,
                None,
                Duration::from_secs(2),
                Mode::Legacy,
            )
            .await
            .is_ok()
            {
                still.push(n.clone());
            }
        }
        if still.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut e = entry(
        "cutover retire",
        None,
        if still.is_empty() { "ok" } else { "error" },
        message,
    );
    e.services = names.clone();
    e.duration_ms = started.elapsed().as_millis() as u64;
    if !still.is_empty() {
        e.detail = Some(format!("still answering: {}", still.join(", ")));
        ledger.append(&e)?;
        return Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "ran `{}`, but the old proxy still answers for {} after {} s",
                stop.join(" "),
                still.join(", "),
                GONE_WITHIN.as_secs()
            ),
        )
        .into());
    }
    ledger.append(&e)?;
    let retired = Retired {
        at: now_rfc3339(),
        who: whoami(),
        command: stop,
    };
    st.retired = Some(retired.clone());
    st.save(&scope.state_dir)?;
    Ok(RetireReport {
        retired,
        services: names,
    })
}

/// Run the stop command, bounded: one that hangs must not hold the project's lock for ever.
async fn run_stop(stop: &[String]) -> anyhow::Result<std::process::Output> {
    let child = tokio::process::Command::new(&stop[0])
        .args(&stop[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", stop.join(" ")))?;
    tokio::time::timeout(STOP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} did not finish within {}s (killed); the old proxy may still run",
                stop.join(" "),
                STOP_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("running {}: {e}", stop.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::route;

    #[test]
    fn retirement_needs_the_clean_period_and_the_edge_on_the_stack() {
        let names = ["alpha".to_string(), "beta".to_string(), "gamma".to_string()];
        let mut st = CutoverState::default();
        for n in &names {
            st.set_active(n, RouteKind::Stack, "2026-11-25T00:00:00Z");
        }
        let mut routes = BTreeMap::new();
        routes.insert("alpha".to_string(), route(RouteKind::Stack));
        routes.insert("beta".to_string(), route(RouteKind::Legacy));
        let now = humantime::parse_rfc3339("2026-11-25T02:00:00Z").unwrap();
        let hour = Duration::from_secs(3600);
        let found = problems(&st, &names, &routes, hour, now);
        assert_eq!(
            found,
            [
                (
                    "beta".to_string(),
                    "the edge routes it to legacy (http://host.docker.internal:9000/servers/alpha)"
                        .to_string()
                ),
                (
                    "gamma".to_string(),
                    "the edge has no route for it".to_string()
                ),
            ]
        );
        routes.insert("beta".to_string(), route(RouteKind::Stack));
        routes.insert("gamma".to_string(), route(RouteKind::Stack));
        assert!(problems(&st, &names, &routes, hour, now).is_empty());
        // Not yet on the stack for the whole period.
        let found = problems(&st, &names, &routes, 3 * hour, now);
        assert_eq!(found.len(), 3);
        let e = not_ready(&found, 3 * hour);
        assert_eq!(e.code, ExitCode::Runtime);
        assert!(
            e.message.contains("clean period (3h)")
                && e.message.contains("\n  alpha: on the stack"),
            "{e}"
        );
    }

    #[test]
    fn the_confirmation_names_the_command_and_the_services() {
        let ready = Ready {
            services: vec!["alpha".into(), "beta".into()],
            stop: vec!["systemctl".into(), "stop".into(), "mcp-proxy".into()],
            state: CutoverState::default(),
        };
        assert_eq!(
            ready.question(),
            "Stop the old proxy (systemctl stop mcp-proxy) serving alpha, beta? Revert will no \
             longer be possible"
        );
    }

    #[tokio::test]
    async fn a_stop_command_that_fails_to_start_says_which() {
        let e = run_stop(&["/nonexistent/mcpctl-stop".into()])
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("running /nonexistent/mcpctl-stop: "),
            "{e}"
        );
        let out = run_stop(&["sh".into(), "-c".into(), "echo no >&2; exit 3".into()])
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "no");
    }
}
