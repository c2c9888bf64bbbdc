//! `cutover switch` and `cutover revert`: route services to the stack, or back to the old proxy,
//! at the edge — one `PUT /routes/<service>` each, so LiteLLM is never restarted.
//!
//! Per service: follow where the edge routes it now (the edge is the truth; `cutover.json`
//! follows it both ways); pick the target (the serving revision, else the stack route recorded;
//! the old proxy's endpoint as the edge reaches it); refuse, unless `--force`, when the side about
//! to get the traffic does not answer MCP (pre-flight); PUT the route; verify a new session
//! through the published port and put the previous route back when it fails; then record the
//! result in `cutover.json` and the ledger. A service that fails does not stop the others.
//!
//! Must not: take the project lock (the command holds it around this), or print.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::compare::excerpt;
use super::edge::{self, AdminClient, PutRoute, RouteKind, RouteView};
use super::probe::{mcp_answers, verify_published};
use super::scope::{entry, Scope};
use super::stack::{self, StackContainer};
use super::state::{CutoverState, Retired};
use crate::error::{CommandError, ExitCode};
use crate::manifest::Legacy;
use crate::mcp::Mode;
use crate::rollout::ledger::{now_rfc3339, Ledger};

#[derive(Debug, Clone)]
pub struct SwitchRequest {
    /// Only these services (empty: every service with a `legacy` endpoint).
    pub services: Vec<String>,
    /// The side to route to: `Stack` switches, `Legacy` reverts.
    pub to: RouteKind,
    /// Why (recorded in the ledger).
    pub message: Option<String>,
    /// How long sessions open on the side being left may continue (the edge's default otherwise).
    pub drain_timeout_s: Option<u64>,
    /// Skip the pre-flight: route even when the side about to get the traffic does not answer.
    pub force: bool,
    pub edge_admin: String,
}

/// One service's line of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchRow {
    pub service: String,
    /// Where the edge routes it after this command (`stack`, `legacy`, `–` when unknown).
    pub route: String,
    pub upstream: String,
    /// `already`, `switched`/`reverted`, `REFUSED: …` or `FAILED: …`.
    pub result: String,
}

/// What `cutover switch|revert` did; `failed` services were not changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchReport {
    /// `switch` or `revert`.
    pub command: &'static str,
    pub services: Vec<SwitchRow>,
    pub failed: usize,
}

impl SwitchReport {
    /// The error that ends the command when a service was not changed (exit 1).
    pub fn failure(&self) -> Option<CommandError> {
        (self.failed > 0).then(|| {
            CommandError::new(
                ExitCode::Runtime,
                format!(
                    "cutover {}: {} service(s) not changed (see above and `mcpctl history`)",
                    self.command, self.failed
                ),
            )
        })
    }
}

/// The command's verb for a target side.
pub fn verb(to: RouteKind) -> &'static str {
    match to {
        RouteKind::Stack => "switch",
        RouteKind::Legacy => "revert",
    }
}

/// Revert needs the old proxy: refused once it was retired.
pub fn revert_allowed(retired: Option<&Retired>, state_dir: &Path) -> Result<(), CommandError> {
    match retired {
        None => Ok(()),
        Some(r) => Err(CommandError::new(
            ExitCode::Runtime,
            format!(
                "the old proxy was retired at {} by {}: there is nothing to revert to (start it \
                 again and remove `retired` from {} to re-enable revert)",
                r.at,
                r.who,
                CutoverState::path(state_dir).display()
            ),
        )),
    }
}

/// The stack route a switch puts in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackTarget {
    pub upstream: String,
    pub revision: Option<u64>,
    /// Why the route recorded in `cutover.json` is used instead of a running revision (to log).
    pub warning: Option<String>,
}

/// The stack route to switch to: the running revision first (a deploy while the service was on
/// the old proxy gated a new revision and stopped the one recorded), else the one recorded in
/// `cutover.json`, with a warning. Err when there is neither.
pub fn stack_target(
    found: anyhow::Result<StackContainer>,
    recorded: Option<(String, Option<u64>)>,
) -> anyhow::Result<StackTarget> {
    match (found, recorded) {
        (Ok(c), _) => Ok(StackTarget {
            upstream: c.upstream,
            revision: c.revision,
            warning: None,
        }),
        (Err(e), Some((upstream, revision))) => Ok(StackTarget {
            warning: Some(format!(
                "{e:#}; using the stack route recorded in cutover.json ({upstream})"
            )),
            upstream,
            revision,
        }),
        (Err(e), None) => Err(e),
    }
}

/// The route back to the old proxy: its endpoint as the edge container reaches it.
pub fn legacy_put(legacy: &Legacy, drain_timeout_s: Option<u64>) -> PutRoute {
    PutRoute {
        upstream: legacy
            .upstream
            .clone()
            .unwrap_or_else(|| edge::legacy_upstream(&legacy.url)),
        revision: None,
        kind: RouteKind::Legacy,
        drain_timeout_s,
        replicas: vec![],
    }
}

/// A pre-flight that did not pass: the ledger's detail and the report's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub detail: String,
    pub result: String,
}

/// Before a revert: the old proxy at `url` must answer (`answer`), unless forced.
pub fn legacy_preflight(
    url: &str,
    answer: &Result<usize, String>,
    force: bool,
) -> Result<(), Refusal> {
    match answer {
        Err(e) if !force => Err(Refusal {
            detail: format!("the old proxy at {url} does not answer: {e}"),
            result: format!(
                "REFUSED: the old proxy does not answer ({}); --force to revert anyway",
                excerpt(e)
            ),
        }),
        _ => Ok(()),
    }
}

/// Before a switch (not forced): the serving revision reached directly at `url` ("–" when it
/// could not be found) must answer; `checked` is the outcome.
pub fn stack_preflight(url: &str, checked: &anyhow::Result<()>) -> Result<(), Refusal> {
    match checked {
        Ok(()) => Ok(()),
        Err(e) => Err(Refusal {
            detail: format!("the serving revision at {url} does not answer: {e}"),
            result: format!(
                "REFUSED: the serving revision does not answer ({}); --force to switch anyway",
                excerpt(&format!("{e:#}"))
            ),
        }),
    }
}

/// Where to reach the serving revision for the pre-flight: its published host port.
pub fn preflight_url(found: anyhow::Result<StackContainer>) -> anyhow::Result<String> {
    found.and_then(|c| {
        c.direct_url()
            .ok_or_else(|| anyhow::anyhow!("the serving revision publishes no port to check"))
    })
}

fn row(service: &str, route: &str, upstream: &str, result: String) -> SwitchRow {
    SwitchRow {
        service: service.into(),
        route: route.into(),
        upstream: upstream.into(),
        result,
    }
}

/// The side a route is on, for a row ("–" without one).
fn side(route: Option<&RouteView>) -> &'static str {
    route.map(|r| r.kind.as_str()).unwrap_or("–")
}

pub async fn run(scope: &Scope, req: &SwitchRequest) -> anyhow::Result<SwitchReport> {
    let state_dir = scope.state_dir.as_path();
    let names = scope.selected(&req.services)?;
    let to = req.to;
    let verb = verb(to);
    let mut st = CutoverState::load(state_dir)?;
    if to == RouteKind::Legacy {
        revert_allowed(st.retired.as_ref(), state_dir)?;
    }
    let admin = edge::admin(&req.edge_admin, Duration::from_secs(5), state_dir);
    let routes = edge::routes(&admin).await?;
    let ledger = Ledger::new(state_dir);
    let mut rows = Vec::new();
    let mut failed = 0;
    for name in &names {
        let started = Instant::now();
        let legacy = scope.legacy(name);
        let current = routes.get(name);
        let now = now_rfc3339();
        // The edge is the truth about where traffic goes: the file follows it both ways.
        if let Some(r) = current {
            st.follow_edge(name, r, &now);
        }
        if let Some(r) = current.filter(|r| r.kind == to) {
            rows.push(row(name, to.as_str(), &r.upstream, "already".into()));
            continue;
        }
        let refuse = |rows: &mut Vec<SwitchRow>, upstream: &str, r: Refusal| {
            let mut e = entry(
                &format!("cutover {verb}"),
                Some(name),
                "error",
                req.message.as_deref(),
            );
            e.detail = Some(r.detail);
            rows.push(row(name, side(current), upstream, r.result));
            ledger.append(&e)
        };
        let put = match to {
            RouteKind::Stack => {
                let found = stack::find(&scope.manifest, name).await;
                match stack_target(found, st.recorded_stack(name)) {
                    Ok(t) => {
                        if let Some(w) = t.warning {
                            tracing::warn!("{name}: {w}");
                        }
                        PutRoute {
                            upstream: t.upstream,
                            revision: t.revision,
                            kind: RouteKind::Stack,
                            drain_timeout_s: req.drain_timeout_s,
                            replicas: vec![],
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        rows.push(row(name, side(current), "–", format!("FAILED: {e:#}")));
                        continue;
                    }
                }
            }
            RouteKind::Legacy => {
                let answer = mcp_answers(
                    &legacy.url,
                    legacy.transport,
                    None,
                    Duration::from_secs(5),
                    Mode::Legacy,
                )
                .await;
                let put = legacy_put(legacy, req.drain_timeout_s);
                if let Err(r) = legacy_preflight(&legacy.url, &answer, req.force) {
                    failed += 1;
                    refuse(&mut rows, &legacy.url, r)?;
                    continue;
                }
                put
            }
        };
        if to == RouteKind::Stack && !req.force {
            // Pre-flight: the revision about to get LiteLLM's traffic answers MCP. It cannot be
            // checked without a running revision with a host port: refused then too.
            let target = preflight_url(stack::find(&scope.manifest, name).await);
            let checked = match &target {
                // Legacy: LiteLLM, whose traffic it is about to get, speaks initialize.
                Ok(url) => mcp_answers(
                    url,
                    scope.transport(name),
                    scope.token(name).as_deref(),
                    Duration::from_secs(5),
                    Mode::Legacy,
                )
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("{e}")),
                Err(e) => Err(anyhow::anyhow!("cannot check it: {e:#}")),
            };
            let url = target.as_deref().unwrap_or("–");
            if let Err(r) = stack_preflight(url, &checked) {
                failed += 1;
                refuse(&mut rows, &put.upstream, r)?;
                continue;
            }
        }
        let result = put_and_verify(scope, &admin, name, &put, current).await;
        let mut e = entry(
            &format!("cutover {verb}"),
            Some(name),
            if result.is_ok() { "ok" } else { "error" },
            req.message.as_deref(),
        );
        e.from = current.map(|r| format!("{} {}", r.kind.as_str(), r.upstream));
        e.to = Some(format!("{} {}", to.as_str(), put.upstream));
        e.duration_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                st.set_active(name, to, &now);
                if to == RouteKind::Stack {
                    st.remember_stack(name, &put.upstream, put.revision);
                }
                st.save(state_dir)?;
                ledger.append(&e)?;
                rows.push(row(name, to.as_str(), &put.upstream, format!("{verb}ed")));
            }
            Err(err) => {
                failed += 1;
                // The PUT may have landed (a timeout), or the restore may have failed: record
                // where the edge really routes the service, so the clean period stays honest.
                if let Some(r) = edge::routes(&admin)
                    .await
                    .ok()
                    .and_then(|r| r.get(name).cloned())
                {
                    st.follow_edge(name, &r, &now);
                }
                e.detail = Some(err.to_string());
                ledger.append(&e)?;
                rows.push(row(
                    name,
                    side(current),
                    &put.upstream,
                    format!("FAILED: {err}"),
                ));
            }
        }
    }
    st.save(state_dir)?;
    Ok(SwitchReport {
        command: verb,
        services: rows,
        failed,
    })
}

/// PUT the route; then a new session through the published port must reach the new side, else
/// the previous route is put back.
async fn put_and_verify(
    scope: &Scope,
    admin: &AdminClient,
    name: &str,
    put: &PutRoute,
    previous: Option<&RouteView>,
) -> anyhow::Result<()> {
    admin.put(name, put).await?;
    // mcpctl's token goes only to the stack, never to the old proxy.
    let token = (put.kind == RouteKind::Stack)
        .then(|| scope.token(name))
        .flatten();
    let Err(e) = verify_published(
        &scope.manifest,
        name,
        scope.transport(name),
        token.as_deref(),
    )
    .await
    else {
        return Ok(());
    };
    let restored = match previous {
        Some(prev) => admin
            .restore(name, prev, None)
            .await
            .map(|_| "the previous route was restored".to_string())
            .unwrap_or_else(|e| format!("restoring the previous route FAILED: {e}")),
        None => "there was no previous route to restore".into(),
    };
    Err(anyhow::anyhow!(
        "after the switch the service did not answer on its published port ({e}); {restored}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::manifest;

    fn container(host_port: Option<u16>) -> anyhow::Result<StackContainer> {
        Ok(StackContainer {
            upstream: "http://p-alpha-r4:8080".into(),
            revision: Some(4),
            host_port,
        })
    }

    fn gone() -> anyhow::Result<StackContainer> {
        Err(anyhow::anyhow!("no running revision of `alpha`"))
    }

    #[test]
    fn a_switch_goes_to_the_running_revision_else_to_the_one_recorded() {
        let recorded = Some(("http://p-alpha-r3:8080".to_string(), Some(3)));
        assert_eq!(
            stack_target(container(None), recorded.clone()).unwrap(),
            StackTarget {
                upstream: "http://p-alpha-r4:8080".into(),
                revision: Some(4),
                warning: None
            }
        );
        let t = stack_target(gone(), recorded).unwrap();
        assert_eq!(
            (t.upstream.as_str(), t.revision),
            ("http://p-alpha-r3:8080", Some(3))
        );
        let warning = t.warning.unwrap();
        assert!(
            warning.contains("no running revision") && warning.contains("p-alpha-r3"),
            "{warning}"
        );
        let e = stack_target(gone(), None).unwrap_err();
        assert!(e.to_string().contains("no running revision"), "{e}");
    }

    #[test]
    fn a_revert_routes_to_the_old_proxy_as_the_edge_reaches_it() {
        let m = manifest(true);
        let put = legacy_put(m.services["alpha"].legacy.as_ref().unwrap(), Some(7));
        assert_eq!(
            (
                put.upstream.as_str(),
                put.revision,
                put.kind,
                put.drain_timeout_s
            ),
            (
                "http://host.docker.internal:9000/servers/alpha",
                None,
                RouteKind::Legacy,
                Some(7)
            )
        );
        // An `upstream` given in the manifest is used as it is.
        let put = legacy_put(m.services["gamma"].legacy.as_ref().unwrap(), None);
        assert_eq!(put.upstream, "http://old-proxy:9000/servers/gamma");
    }

    #[test]
    fn the_pre_flight_refuses_a_side_that_does_not_answer_unless_forced() {
        let url = "http://127.0.0.1:9000/servers/alpha/sse";
        assert_eq!(legacy_preflight(url, &Ok(3), false), Ok(()));
        let down = Err("connection refused".to_string());
        assert_eq!(legacy_preflight(url, &down, true), Ok(()));
        let r = legacy_preflight(url, &down, false).unwrap_err();
        assert_eq!(
            r.detail,
            "the old proxy at http://127.0.0.1:9000/servers/alpha/sse does not answer: connection refused"
        );
        assert_eq!(
            r.result,
            "REFUSED: the old proxy does not answer (connection refused); --force to revert anyway"
        );

        assert_eq!(stack_preflight("http://127.0.0.1:1", &Ok(())), Ok(()));
        let r = stack_preflight("–", &Err(anyhow::anyhow!("cannot check it: gone"))).unwrap_err();
        assert_eq!(
            r.detail,
            "the serving revision at – does not answer: cannot check it: gone"
        );
        assert!(r
            .result
            .starts_with("REFUSED: the serving revision does not answer"));
        assert!(r.result.ends_with("--force to switch anyway"));
    }

    #[test]
    fn the_pre_flight_reaches_the_revision_at_its_host_port_or_cannot_check_it() {
        assert_eq!(
            preflight_url(container(Some(49153))).unwrap(),
            "http://127.0.0.1:49153"
        );
        let e = preflight_url(container(None)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the serving revision publishes no port to check"
        );
        assert!(preflight_url(gone()).is_err());
    }

    #[test]
    fn revert_is_refused_once_the_old_proxy_is_retired() {
        let dir = Path::new("/s");
        assert!(revert_allowed(None, dir).is_ok());
        let retired = Retired {
            at: "2026-11-25T00:00:00Z".into(),
            who: "ops".into(),
            command: vec!["systemctl".into(), "stop".into(), "mcp-proxy".into()],
        };
        let e = revert_allowed(Some(&retired), dir).unwrap_err();
        assert_eq!(e.code, ExitCode::Runtime);
        assert!(
            e.message.contains("retired at 2026-11-25T00:00:00Z by ops")
                && e.message.contains("/s/cutover.json"),
            "{e}"
        );
    }

    #[test]
    fn a_report_with_failures_ends_the_command_with_exit_1() {
        let mut r = SwitchReport {
            command: "switch",
            services: vec![],
            failed: 0,
        };
        assert!(r.failure().is_none());
        r.failed = 2;
        let e = r.failure().unwrap();
        assert_eq!(e.code, ExitCode::Runtime);
        assert!(e
            .message
            .starts_with("cutover switch: 2 service(s) not changed"));
    }
}
