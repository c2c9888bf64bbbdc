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
            .switch_to_revision(&step.service, &spec.name, release, Some(edge.drain_timeout))
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::labels::Keys;
    use crate::engine::ContainerSpec;
    use crate::rollout::plan::observe;

    /// An in-process edge whose admin API listens on an ephemeral loopback port.
    async fn edge() -> EdgeSwitch {
        let e = crate::edge::server::Edge::new(
            BTreeSet::from(["alpha".to_string()]),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let lis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = lis.local_addr().unwrap();
        let app = crate::edge::server::admin_router(e)
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(lis, app).await });
        EdgeSwitch {
            admin: AdminClient::at(&format!("http://{addr}")),
            drain_timeout: Duration::from_secs(1),
        }
    }

    fn step(release: u64, previous: Option<Revision>) -> Step {
        Step {
            retain: 3,
            ..crate::rollout::executor::tests::step(release, "img", previous)
        }
    }

    async fn run(e: &FakeEngine, bad: &[&str], release: u64, sw: &EdgeSwitch) -> StepResult {
        let k = Keys::new("com.mcp");
        let prober = crate::rollout::executor::tests::FakeProber {
            engine: e,
            bad_images: BTreeSet::new(),
            bad_containers: bad.iter().map(|s| s.to_string()).collect(),
        };
        let exec = Executor {
            engine: e,
            prober: &prober,
            keys: &k,
            project: "p",
            progress: &|_| {},
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        let list = e.list_containers("com.mcp.project=p").await.unwrap();
        let prev = observe(&list, &k)
            .services
            .get("alpha")
            .and_then(|o| o.serving.clone());
        exec.run_step_edge(&step(release, prev), None, sw).await.0
    }

    #[tokio::test]
    async fn the_new_revision_starts_beside_the_old_and_the_route_switches_before_the_stop() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        assert_eq!(run(&e, &[], 1, &sw).await.outcome, Outcome::Ok);
        let r = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(
            (r.upstream.as_str(), r.revision),
            ("http://p-alpha-r1:8080", Some(1))
        );
        {
            let st = e.state.lock().unwrap();
            let c = &st.containers["p-alpha-r1"];
            assert!(c.spec.aliases.is_empty(), "the edge owns the alias");
            assert_eq!(c.spec.port.unwrap().host_port, 0, "no fixed port");
            let recorded: ContainerSpec =
                serde_json::from_str(&c.spec.labels["com.mcp.spec"]).unwrap();
            assert_eq!(
                recorded.port.unwrap().host_port,
                8501,
                "the manifest's port is recorded"
            );
        }
        let before = e.calls().len();
        assert_eq!(run(&e, &[], 2, &sw).await.outcome, Outcome::Ok);
        let later = e.calls()[before..].to_vec();
        let at = |c: &str| {
            later
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{c}: {later:?}"))
        };
        assert!(at("start p-alpha-r2") < at("stop p-alpha-r1"), "{later:?}");
        let r = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(r.upstream, "http://p-alpha-r2:8080");
        assert!(r.draining.is_empty(), "nothing held the old upstream");
        let st = e.state.lock().unwrap();
        assert_eq!(
            st.containers["p-alpha-r1"].state,
            crate::engine::RunState::Exited,
            "kept, stopped"
        );
    }

    #[tokio::test]
    async fn a_failure_before_the_switch_leaves_route_and_revision_alone() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        assert_eq!(run(&e, &[], 1, &sw).await.outcome, Outcome::Ok);
        for bad in ["p-alpha-r2-candidate", "p-alpha-r2"] {
            let r = run(&e, &[bad], 2, &sw).await;
            assert_eq!(r.outcome, Outcome::GateFailedRestored, "{bad}: {r:?}");
            let route = sw.admin.route("alpha").await.unwrap().unwrap();
            assert_eq!(route.upstream, "http://p-alpha-r1:8080", "{bad}");
            let st = e.state.lock().unwrap();
            assert!(!st.containers.contains_key("p-alpha-r2"), "{bad}: removed");
            assert_eq!(
                st.containers["p-alpha-r1"].state,
                crate::engine::RunState::Running
            );
        }
    }
}
