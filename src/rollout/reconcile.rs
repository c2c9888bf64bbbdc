//! Recovery after an interrupted run (SIGKILL, power loss), from Docker labels alone:
//! - gate candidates left behind are removed (the run died before its switch: revert);
//! - a service with no running revision gets its newest retained revision started and gated
//!   (the run died between stopping the old and starting the new: finish, or fall back to older);
//! - a revision started by the dead run (created after its lock) is gated again; if it fails, the
//!   previous revision is restored (the run died during the post-switch analysis);
//! - with the edge, the route decides which revision serves a fronted service (see [`reconcile`]).
//!
//! Runs under the lock, every time a command takes it (cheap when all is consistent), before
//! anything else of the new run. Must not: print (returns what it did).

use std::time::UNIX_EPOCH;

use super::executor::{Executor, GateConfig, GateInput, Prober};
use super::ledger::Entry;
use super::plan::{observe, Observed, Revision};
use crate::edge::admin::AdminClient;
use crate::edge::routes::{RouteKind, RoutesView};
use crate::engine::{Engine, RunState};
use crate::manifest::{Health, Role, Transport};

async fn gate_revision<E: Engine, P: Prober>(
    exec: &Executor<'_, E, P>,
    r: &Revision,
) -> Result<u64, String> {
    let GateConfig {
        health,
        role,
        transport,
    } = GateConfig::of(r, exec.keys).unwrap_or(GateConfig {
        health: Health::default(),
        transport: Transport::Sse,
        role: Role::Service,
    });
    let port = r.spec.as_ref().and_then(|s| s.port);
    let report = exec
        .gate_container(GateInput {
            container: &r.container,
            port,
            role,
            transport,
            health: &health,
            previous: None,
            interruptible: false,
        })
        .await;
    if report.passed {
        Ok(report.elapsed_ms)
    } else {
        let f = report.failure().cloned();
        Err(f
            .map(|f| format!("{}: {}", f.name, f.detail))
            .unwrap_or_else(|| "gate failed".into()))
    }
}

/// Where reconcile reads and moves edge routes, when the edge is enabled.
pub struct EdgeRoutes<'a> {
    pub admin: &'a AdminClient,
    /// Does the edge front this service? (`edge::container::fronts`.)
    pub fronts: &'a dyn Fn(&str) -> bool,
}

/// The container a stack route's upstream names (`http://<container>:<port>`).
pub fn upstream_container(upstream: &str) -> Option<&str> {
    let rest = upstream.strip_prefix("http://")?;
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|c| !c.is_empty())
}

/// Bring the project back to one truth. `since`: start time (RFC 3339) of the run that died,
/// when known (taken-over lock). Returns one line per action taken (empty: it was consistent).
///
/// With the edge, the route is the truth about what serves a fronted service: its revision is
/// started if it is not running, and any other running revision (left by a run killed before its
/// switch, or during a drain) is stopped and kept. Restores move the route too.
pub async fn reconcile<E: Engine, P: Prober>(
    exec: &Executor<'_, E, P>,
    since: Option<&str>,
    edge: Option<EdgeRoutes<'_>>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let list = exec
        .engine
        .list_containers(&exec.keys.project_filter(exec.project))
        .await?;
    let mut obs = observe(&list, exec.keys);
    for (service, o) in &obs.services {
        for c in &o.candidates {
            exec.engine.remove_container(&c.container).await?;
            done.push(format!("{service}: removed the unfinished candidate {} (the run stopped before its switch; reverted)", c.name()));
        }
    }
    let routes = match &edge {
        Some(e) => match e.admin.routes().await {
            Ok(r) => Some(r),
            Err(err) => {
                // The edge is down: the release starts it and aligns its routes (`edge::container::up`).
                tracing::info!("reconcile: edge routes not checked: {err:#}");
                None
            }
        },
        None => None,
    };
    if let (Some(e), Some(routes)) = (&edge, &routes) {
        done.extend(align_to_routes(exec.engine, e.admin, &obs, routes, e.fronts).await?);
        let list = exec
            .engine
            .list_containers(&exec.keys.project_filter(exec.project))
            .await?;
        obs = observe(&list, exec.keys);
    }
    let since_unix = since
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    // Route `service` to `r` when the edge fronts it (a restore must move the traffic too).
    let route_to = |service: &str, r: &Revision| {
        let admin = edge
            .as_ref()
            .filter(|e| (e.fronts)(service) && routes.is_some())
            .map(|e| e.admin.clone());
        let upstream = crate::edge::admin::revision_upstream(r);
        let replicas = obs
            .services
            .get(service)
            .map(|o| o.running_replica_upstreams(r))
            .unwrap_or_default();
        let (service, release) = (service.to_string(), r.release);
        async move {
            match admin {
                Some(a) => a
                    .switch_to_revision(&service, &upstream, &replicas, release, None)
                    .await
                    .map(|_| "; the edge routes to it".to_string())
                    .unwrap_or_else(|e| format!("; routing the edge to it FAILED: {e:#}")),
                None => String::new(),
            }
        }
    };
    // Starting stopped services and re-gating what the dead run switched to is recovery from a
    // run known to have died; a plain lock acquisition only clears candidates and aligns routes
    // (an operator may have stopped a service on purpose).
    if since.is_none() {
        return Ok(done);
    }
    for (service, o) in &obs.services {
        match &o.serving {
            None => {
                for r in &o.retained {
                    if let Err(e) = exec.engine.start_container(&r.container).await {
                        done.push(format!("{service}: could not start {}: {e}", r.name()));
                        continue;
                    }
                    match gate_revision(exec, r).await {
                        Ok(ms) => {
                            let routed = route_to(service, r).await;
                            done.push(format!("{service}: nothing was running; started {} and it passed the gate in {ms} ms{routed}", r.name()));
                            break;
                        }
                        Err(why) => {
                            let _ = exec.engine.stop_container(&r.container, 10).await;
                            done.push(format!(
                                "{service}: {} fails the gate ({why}); trying an older revision",
                                r.name()
                            ));
                        }
                    }
                }
            }
            Some(s) => {
                let started_by_dead_run = since_unix.is_some_and(|t| s.created >= t);
                if !started_by_dead_run {
                    continue;
                }
                match gate_revision(exec, s).await {
                    Ok(ms) => done.push(format!("{service}: {} was switched to by the interrupted run and passes the gate ({ms} ms); kept", s.name())),
                    Err(why) => {
                        let prev = o.retained.iter().find(|r| r.state != RunState::Running);
                        match prev {
                            Some(p) => {
                                let _ = exec.engine.start_container(&p.container).await;
                                let verdict = match gate_revision(exec, p).await {
                                    Ok(ms) => format!("passes the gate ({ms} ms)"),
                                    Err(e) => format!("FAILS the gate too: {e}"),
                                };
                                let routed = route_to(service, p).await;
                                let _ = exec.engine.stop_container(&s.container, 10).await;
                                done.push(format!(
                                    "{service}: {} (from the interrupted run) fails the gate ({why}); restored {}, which {verdict}{routed}",
                                    s.name(),
                                    p.name()
                                ));
                            }
                            None => done.push(format!("{service}: {} fails the gate ({why}) and no earlier revision is retained; left running", s.name())),
                        }
                    }
                }
            }
        }
    }
    Ok(done)
}

/// The route is the truth about what serves a fronted service (kind `stack`): its revision is
/// started if it is not running, and any other running revision — left by a run interrupted
/// before its switch, or during a drain — is stopped and kept, so `plan` and `rollback` see the
/// routed revision as serving. Routes to containers this project does not have are left alone.
pub async fn align_to_routes<E: Engine>(
    engine: &E,
    admin: &crate::edge::admin::AdminClient,
    obs: &Observed,
    routes: &RoutesView,
    fronts: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    for (service, o) in &obs.services {
        let Some(route) = routes
            .routes
            .get(service)
            .filter(|r| r.kind == RouteKind::Stack && fronts(service))
        else {
            continue;
        };
        let revisions: Vec<_> = o.serving.iter().chain(o.retained.iter()).collect();
        let Some(routed) = revisions
            .iter()
            .find(|r| upstream_container(&route.upstream) == Some(r.container.as_str()))
        else {
            continue;
        };
        if !routed.is_running() {
            engine.start_container(&routed.container).await?;
            done.push(format!(
                "{service}: started {} (the edge routes to it; it was not running)",
                routed.name()
            ));
        }
        for r in revisions
            .iter()
            .filter(|r| r.container != routed.container && r.is_running())
        {
            engine.stop_container(&r.container, 10).await?;
            done.push(format!(
                "{service}: stopped {} (running but not routed: left by an interrupted run; kept)",
                r.name()
            ));
        }
        // Replicas: a route left mixed by a run killed mid-roll (the routed revision's own
        // replicas beside older ones) is put back to the routed revision's own running replicas
        // (fewer than it wants shows in `plan`, and the next deploy replaces it whole); the
        // route's are started if they are not running; any other is removed (a replica holds
        // nothing; a rollback starts its revision's again).
        let own: Vec<String> = o
            .replicas_of(routed.release)
            .filter(|r| {
                r.is_running()
                    || route
                        .replicas
                        .iter()
                        .any(|u| upstream_container(u) == Some(r.container.as_str()))
            })
            .map(crate::edge::admin::revision_upstream)
            .collect();
        let mut route = route.clone();
        if route.replicas != own {
            route = admin
                .switch_to_revision(service, &route.upstream, &own, routed.release, None)
                .await?;
            done.push(format!(
                "{service}: the edge's route now balances over {} and its {} own replica(s) only (left mixed by an interrupted run)",
                routed.name(),
                own.len()
            ));
        }
        for r in &o.replicas {
            let routed_here = route
                .replicas
                .iter()
                .any(|u| upstream_container(u) == Some(r.container.as_str()));
            if routed_here && !r.is_running() {
                engine.start_container(&r.container).await?;
                done.push(format!(
                    "{service}: started replica {} (the edge routes to it; it was not running)",
                    r.container
                ));
            } else if !routed_here {
                engine.remove_container(&r.container).await?;
                done.push(format!(
                    "{service}: removed replica {} (not routed: left by an interrupted run)",
                    r.container
                ));
            }
        }
    }
    Ok(done)
}

/// The release a dead run left without its closing `release` line in the ledger, if any: the
/// highest release number known (containers, ledger) that has step or route lines, or a
/// container, but no `release` line.
pub fn unfinished_release(max_on_containers: u64, ledger: &[Entry]) -> Option<u64> {
    let n = ledger
        .iter()
        .map(|e| e.release)
        .max()
        .unwrap_or(0)
        .max(max_on_containers);
    let closed = ledger
        .iter()
        .any(|e| e.release == n && e.event == "release");
    (n > 0 && !closed).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_container_reads_the_host_of_a_stack_upstream() {
        assert_eq!(
            upstream_container("http://p-alpha-r3:8080"),
            Some("p-alpha-r3")
        );
        assert_eq!(
            upstream_container("http://p-alpha-r3:9090/"),
            Some("p-alpha-r3")
        );
        assert_eq!(upstream_container("http://p-alpha-r3"), Some("p-alpha-r3"));
        assert_eq!(upstream_container("https://x:1"), None);
        assert_eq!(upstream_container("http://"), None);
    }

    #[test]
    fn a_release_without_its_closing_line_is_unfinished() {
        let e = |release, event: &str| Entry {
            release,
            event: event.into(),
            ..Default::default()
        };
        assert_eq!(unfinished_release(0, &[]), None);
        assert_eq!(
            unfinished_release(3, &[e(3, "step"), e(3, "release")]),
            None
        );
        assert_eq!(
            unfinished_release(3, &[e(2, "release"), e(3, "step")]),
            Some(3)
        );
        // A container of release 4 (started, then the run died before any ledger line).
        assert_eq!(unfinished_release(4, &[e(3, "release")]), Some(4));
        // Reconcile lines (release 0) never count.
        assert_eq!(unfinished_release(0, &[e(0, "reconcile")]), None);
    }
}
