//! The executor's blue-green path, when the manifest enables the edge (`edge.enabled`):
//!
//! 1. candidate and gate exactly as without the edge;
//! 2. the new revision starts *next to* the serving one, with no fixed port and no alias (the edge
//!    owns both; an ephemeral 127.0.0.1 port remains for the gate), and is gated there;
//! 3. switch: `PUT /routes/<service>` on the edge — new sessions go to the new revision at once;
//! 4. drain: sessions pinned to the previous revision keep it until they end or the drain
//!    deadline (the edge then ends them), then the previous revision is stopped and kept.
//!
//! A failure before the switch leaves the previous revision serving and untouched (it is verified
//! by its gate, as without the edge). A route of kind `legacy` (cutover) is left alone: the new
//! revision is gated and left running for `cutover` to switch to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{fail_check, Executor, Outcome, Prober, Step, StepResult};
use crate::edge::admin::{stack_upstream, AdminClient};
use crate::edge::routes::{RouteKind, RouteView};
use crate::engine::{Engine, PortSpec};
use crate::rollout::plan::Revision;

/// Where an edge step switches.
pub struct EdgeSwitch {
    pub admin: AdminClient,
    /// The edge's drain timeout (deploy waits this long, plus a margin, for a drain).
    pub drain_timeout: Duration,
}

/// What a step did at the edge, for the ledger.
#[derive(Debug, Clone)]
pub struct RouteSwitch {
    pub service: String,
    pub from: Option<String>,
    pub route: RouteView,
    /// How long the previous upstream drained before it was stopped.
    pub drained_ms: Option<u64>,
}

impl<E: Engine, P: Prober> Executor<'_, E, P> {
    /// Run one step through the edge: switched by route and drained, or reverted and verified.
    pub async fn run_step_edge(
        &self,
        step: &Step,
        previous_tools: Option<&BTreeMap<String, String>>,
        edge: &EdgeSwitch,
    ) -> (StepResult, Option<RouteSwitch>) {
        let started = Instant::now();
        let mut spec = step.spec.clone();
        // The recorded config stays the manifest's (port, alias): plan compares it, and a rollback
        // with the edge disabled restores it as it was.
        self.finalize_labels(&mut spec, step);
        spec.aliases.clear();
        spec.port = spec.port.map(|p| PortSpec {
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_port: 0,
            ..p
        });
        let release: u64 = spec
            .labels
            .get(&self.keys.release())
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);

        let report = match self
            .gate_candidate(step, &spec, previous_tools, started)
            .await
        {
            Ok(r) => r,
            Err(r) => return (*r, None),
        };

        // 2. The new revision next to the serving one, gated before it gets traffic.
        let _ = self.engine.remove_container(&spec.name).await;
        if let Err((_, error, logs)) = self.launch(&spec).await {
            let f = fail_check("switch", error);
            return (
                self.failed(step, started, f, Some(report), logs).await,
                None,
            );
        }
        let pre = self
            .gate_container(
                &spec.name,
                spec.port,
                step.role,
                step.transport,
                &step.health,
                previous_tools,
                false,
            )
            .await;
        if !pre.passed {
            let logs = self.tail(&spec.name).await;
            let _ = self.engine.remove_container(&spec.name).await;
            let f = pre
                .failure()
                .cloned()
                .map(|f| crate::health::Check {
                    name: format!("pre-switch {}", f.name),
                    ..f
                })
                .unwrap_or_else(|| fail_check("pre-switch", "failed"));
            return (self.failed(step, started, f, Some(pre), logs).await, None);
        }

        // 3. Switch the route (unless cutover keeps the service on its legacy proxy).
        let before = match edge.admin.route(&step.service).await {
            Ok(r) => r,
            Err(e) => {
                let _ = self.engine.remove_container(&spec.name).await;
                let f = fail_check("switch", format!("reading the edge's route: {e:#}"));
                return (self.failed(step, started, f, Some(pre), None).await, None);
            }
        };
        if before.as_ref().is_some_and(|r| r.kind == RouteKind::Legacy) {
            self.say(
                &step.service,
                &format!(
                    "{} passed its gates; the edge routes this service to its legacy proxy (cutover), so the route is left as it is",
                    step.revision
                ),
            );
            if let Some(prev) = &step.previous {
                let _ = self.engine.stop_container(&prev.container, 10).await;
            }
            self.retain(step).await;
            return (self.ok(step, started, pre), None);
        }
        let route = match edge
            .admin
            .switch_to_revision(&step.service, &spec.name, release)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = self.engine.remove_container(&spec.name).await;
                let f = fail_check("switch", format!("{e:#}"));
                return (self.failed(step, started, f, Some(pre), None).await, None);
            }
        };
        self.say(
            &step.service,
            &format!(
                "edge routes new sessions to {} ({})",
                step.revision, route.upstream
            ),
        );

        // 4. Drain the previous upstream, then stop (keep) the previous revision.
        let old_upstream = before
            .as_ref()
            .map(|r| r.upstream.clone())
            .or_else(|| step.previous.as_ref().map(|p| stack_upstream(&p.container)));
        let mut drained_ms = None;
        if let Some(up) = old_upstream.filter(|u| *u != route.upstream) {
            let progress = |line: &str| self.say(&step.service, line);
            match edge
                .admin
                .wait_drained(
                    &step.service,
                    &up,
                    edge.drain_timeout + Duration::from_secs(10),
                    &progress,
                )
                .await
            {
                Ok(d) => {
                    drained_ms = Some(d.as_millis() as u64);
                    self.say(
                        &step.service,
                        &format!("{up} drained in {} ms", d.as_millis()),
                    );
                }
                Err(e) => self.say(
                    &step.service,
                    &format!("drain not confirmed ({e:#}); stopping the previous revision anyway"),
                ),
            }
        }
        if let Some(prev) = &step.previous {
            if prev.container != spec.name {
                if let Err(e) = self.engine.stop_container(&prev.container, 10).await {
                    self.say(
                        &step.service,
                        &format!("could not stop {}: {e}", prev.name()),
                    );
                }
            }
        }
        self.say(
            &step.service,
            &format!(
                "serving {} through the edge (gate before the switch {} ms)",
                step.revision, pre.elapsed_ms
            ),
        );
        self.retain(step).await;
        let switch = RouteSwitch {
            service: step.service.clone(),
            from: before.map(|r| r.upstream),
            route,
            drained_ms,
        };
        (self.ok(step, started, pre), Some(switch))
    }

    fn ok(&self, step: &Step, started: Instant, gate: crate::health::GateReport) -> StepResult {
        StepResult {
            service: step.service.clone(),
            from: step.previous.as_ref().map(Revision::name),
            to: step.revision.clone(),
            outcome: Outcome::Ok,
            failed: None,
            gate: Some(gate),
            logs_tail: None,
            restored: None,
            downtime_ms: None,
            backups: vec![],
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}
