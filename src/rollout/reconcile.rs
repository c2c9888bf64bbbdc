//! Recovery after an interrupted run (SIGKILL, power loss), from Docker labels alone:
//! - gate candidates left behind are removed (the run died before its switch: revert);
//! - a service with no running revision gets its newest retained revision started and gated
//!   (the run died between stopping the old and starting the new: finish, or fall back to older);
//! - a revision started by the dead run (created after its lock) is gated again; if it fails, the
//!   previous revision is restored (the run died during the post-switch analysis).
//!
//! Runs under the lock, before anything else of the new run. Must not: print (returns what it did).

use std::time::UNIX_EPOCH;

use super::executor::{Executor, GateConfig, Prober};
use super::plan::{observe, Revision};
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
        .gate_container(&r.container, port, role, transport, &health, None, false)
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

/// Bring the project back to a consistent state. `since`: start time (RFC 3339) of the run that
/// died, when known (taken-over lock). Returns one line per action taken.
pub async fn reconcile<E: Engine, P: Prober>(
    exec: &Executor<'_, E, P>,
    since: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let list = exec
        .engine
        .list_containers(&exec.keys.project_filter(exec.project))
        .await?;
    let obs = observe(&list, exec.keys);
    let since_unix = since
        .and_then(|s| humantime::parse_rfc3339(s).ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    for (service, o) in &obs.services {
        for c in &o.candidates {
            exec.engine.remove_container(&c.container).await?;
            done.push(format!("{service}: removed the unfinished candidate {} (the run stopped before its switch; reverted)", c.name()));
        }
        match &o.serving {
            None => {
                for r in &o.retained {
                    if let Err(e) = exec.engine.start_container(&r.container).await {
                        done.push(format!("{service}: could not start {}: {e}", r.name()));
                        continue;
                    }
                    match gate_revision(exec, r).await {
                        Ok(ms) => {
                            done.push(format!("{service}: nothing was running; started {} and it passed the gate in {ms} ms", r.name()));
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
                        let _ = exec.engine.stop_container(&s.container, 10).await;
                        match prev {
                            Some(p) => {
                                let _ = exec.engine.start_container(&p.container).await;
                                let verdict = match gate_revision(exec, p).await {
                                    Ok(ms) => format!("passes the gate ({ms} ms)"),
                                    Err(e) => format!("FAILS the gate too: {e}"),
                                };
                                done.push(format!(
                                    "{service}: {} (from the interrupted run) fails the gate ({why}); restored {}, which {verdict}",
                                    s.name(),
                                    p.name()
                                ));
                            }
                            None => done.push(format!("{service}: {} fails the gate ({why}) and no earlier revision is retained", s.name())),
                        }
                    }
                }
            }
        }
    }
    Ok(done)
}
