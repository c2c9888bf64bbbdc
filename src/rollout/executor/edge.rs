//! The executor's blue-green path, when the manifest enables the edge (`edge.enabled`):
//!
//! 1. candidate and gate exactly as without the edge;
//! 2. the new revision starts *next to* the serving one, with no fixed port and no alias (the edge
//!    owns both; an ephemeral 127.0.0.1 port remains for the gate), and is gated there;
//! 3. switch: `PUT /routes/<service>` on the edge — new sessions go to the new revision at once;
//!    the upstream is `http://<container>:<container_port>` (where its bridge listens);
//! 4. through the edge: the MCP gate again at the service's published port, as a client reaches
//!    it (its address, so its `Host`), while the previous revision still runs untouched;
//! 5. drain: sessions pinned to the previous revision keep it until they end or the drain
//!    deadline (the edge then ends them), then the previous revision is stopped and kept.
//!
//! A failure before the switch leaves the previous revision serving and untouched (it is verified
//! by its gate, as without the edge). A failure through the edge puts the route back as it was,
//! verifies the previous revision through the edge and removes the new one (exit 3, as any gate
//! failure that was rolled back). A route of kind `legacy` (cutover) is left alone: the new
//! revision is gated and left running for `cutover` to switch to.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{
    client_ip, fail_check, replica_spec, Executor, GateConfig, GateInput, Outcome, Prober, Step,
    StepResult,
};
use crate::edge::admin::{revision_upstream, stack_upstream, AdminClient};
use crate::edge::routes::{RouteKind, RouteView};
use crate::engine::{Engine, PortSpec};
use crate::rollout::plan::Revision;

/// Where an edge step switches.
pub struct EdgeSwitch {
    pub admin: AdminClient,
    /// The edge's drain timeout (deploy waits this long, plus a margin, for a drain).
    pub drain_timeout: Duration,
}

/// The probe through the edge may take this much longer than the pre-switch gate did.
const THROUGH_EDGE_SLACK: Duration = Duration::from_secs(10);

/// What became of a route switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// Switched, answered through the edge, the previous upstream drained.
    Switched,
    /// Switched, failed through the edge, and put back as it was.
    Reverted,
    /// Switched, failed through the edge, and the route could not be put back.
    RevertFailed,
}

impl SwitchOutcome {
    /// The `outcome` of the ledger's `route` entry.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchOutcome::Switched => "switched",
            SwitchOutcome::Reverted => "reverted",
            SwitchOutcome::RevertFailed => "revert_failed",
        }
    }
}

/// The step's state at the point of a revert: the route before the switch, the switch as
/// recorded, and the failed check with the gate through the edge it belongs to.
struct Revert<'a> {
    before: Option<&'a RouteView>,
    switch: RouteSwitch,
    failed: crate::health::Check,
    through: crate::health::GateReport,
}

/// What a step did at the edge, for the ledger.
#[derive(Debug, Clone)]
pub struct RouteSwitch {
    pub service: String,
    /// The upstream before the switch.
    pub from: Option<String>,
    /// The route the switch set (after a revert: the route as it was put back).
    pub route: RouteView,
    /// How long the previous upstream drained before it was stopped.
    pub drained_ms: Option<u64>,
    /// The MCP gate through the edge after the switch (none without a published port).
    pub through_edge: Option<crate::health::Check>,
    pub outcome: SwitchOutcome,
}

impl RouteSwitch {
    /// One line for the ledger's `route` entry: the switch, the probe through the edge, then the
    /// drain or the revert.
    pub fn detail(&self) -> String {
        let from = self.from.as_deref().unwrap_or("(none)");
        let revision = |r: &RouteView| r.revision.map(|n| format!("r{n}")).unwrap_or("-".into());
        let through = self
            .through_edge
            .as_ref()
            .map(|c| format!("; {}: {}", c.name, c.detail))
            .unwrap_or_default();
        match self.outcome {
            SwitchOutcome::Switched => format!(
                "edge route {from} → {} (revision {}){through}{}",
                self.route.upstream,
                revision(&self.route),
                self.drained_ms
                    .map(|d| format!("; previous upstream drained in {d} ms"))
                    .unwrap_or_default()
            ),
            SwitchOutcome::Reverted => format!(
                "edge route switched away from {from}{through}; put back to {} (revision {})",
                self.route.upstream,
                revision(&self.route)
            ),
            SwitchOutcome::RevertFailed => format!(
                "edge route {from} → {} (revision {}){through}; could not be put back",
                self.route.upstream,
                revision(&self.route)
            ),
        }
    }
}

/// The upstreams of a revision's other replicas (`<container>-2`…, as many as it records).
pub fn replica_upstreams(r: &Revision, keys: &crate::engine::labels::Keys) -> Vec<String> {
    let port = crate::edge::admin::revision_port(r);
    (2..=keys.replica_count(&r.labels))
        .map(|n| stack_upstream(&super::replica_name(&r.container, n), port))
        .collect()
}

/// The port the new revision's bridge listens on (the service's `container_port`).
fn container_port(step: &Step) -> u16 {
    step.spec
        .port
        .map(|p| p.container_port)
        .unwrap_or(crate::edge::INTERNAL_PORT)
}

/// Where a client on the host reaches the service: the edge's published port on the manifest's
/// `bind_address` (loopback when it binds every address), so the probe sends the `Host` a client
/// sends.
fn published_base(step: &Step) -> Option<String> {
    let p = step.spec.port.filter(|p| p.host_port != 0)?;
    Some(format!("http://{}:{}", client_ip(p.host_ip), p.host_port))
}

/// The through-edge probe as one check (`through-edge`, or `through-edge <failed check>`).
fn through_edge_check(r: &crate::health::GateReport, base: &str) -> crate::health::Check {
    match r.failure() {
        None if r.passed => crate::health::Check {
            name: "through-edge".into(),
            ok: true,
            detail: format!(
                "answers through the edge at {base} ({} checks in {} ms)",
                r.checks.len(),
                r.elapsed_ms
            ),
        },
        f => crate::health::Check {
            name: match f {
                Some(f) => format!("through-edge {}", f.name),
                None => "through-edge".into(),
            },
            ok: false,
            detail: format!(
                "through the edge at {base}: {}",
                f.map(|f| f.detail.as_str()).unwrap_or("failed")
            ),
        },
    }
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
        crate::rollout::fault::point("revision-started");
        let pre = self
            .gate_container(GateInput {
                container: &spec.name,
                port: spec.port,
                role: step.role,
                transport: step.transport,
                health: &step.health,
                previous: previous_tools,
                interruptible: false,
            })
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
        let port = container_port(step);
        let upstream = stack_upstream(&spec.name, port);
        let count = self.keys.replica_count(&spec.labels);
        // What serves before: the route's upstreams (or the previous revision's containers).
        let old: Vec<String> = match (&before, &step.previous) {
            (Some(r), _) => std::iter::once(r.upstream.clone())
                .chain(r.replicas.iter().cloned())
                .collect(),
            (None, Some(prev)) => std::iter::once(revision_upstream(prev))
                .chain(replica_upstreams(prev, self.keys))
                .collect(),
            (None, None) => vec![],
        };
        // Rolling: the new revision's containers replace the old ones one at a time — after the
        // k-th new container passed its gate, the route holds the k new ones and the old ones
        // from the (k+1)-th on (the others drain). The old containers keep running until the
        // whole new set answered through the edge, so any failure puts the route back at once.
        let mixed = |new_replicas: &[String], k: usize| -> Vec<String> {
            new_replicas
                .iter()
                .cloned()
                .chain(
                    old.iter()
                        .skip(k)
                        .filter(|u| **u != upstream && !new_replicas.contains(u))
                        .cloned(),
                )
                .collect()
        };
        let drain = Some(edge.drain_timeout);
        let route = match edge
            .admin
            .switch_to_revision(&step.service, &upstream, &mixed(&[], 1), release, drain)
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
        crate::rollout::fault::point("route-switched");
        let mut switch = RouteSwitch {
            service: step.service.clone(),
            from: before.as_ref().map(|r| r.upstream.clone()),
            route,
            drained_ms: None,
            through_edge: None,
            outcome: SwitchOutcome::Switched,
        };

        // 3b. The other replicas, one at a time: started, gated, then put in the route in place
        //     of one old container.
        let mut new_replicas = Vec::new();
        for n in 2..=count {
            let rspec = replica_spec(&spec, n, self.keys);
            let _ = self.engine.remove_container(&rspec.name).await;
            let gate = match self.launch(&rspec).await {
                Ok(_) => {
                    self.gate_container(GateInput {
                        container: &rspec.name,
                        port: rspec.port,
                        role: step.role,
                        transport: step.transport,
                        health: &step.health,
                        previous: previous_tools,
                        interruptible: false,
                    })
                    .await
                }
                Err((_, error, _)) => crate::health::GateReport {
                    passed: false,
                    checks: vec![fail_check("start", error)],
                    ..pre.clone()
                },
            };
            let routed = if gate.passed {
                let up = stack_upstream(&rspec.name, port);
                let mut with = new_replicas.clone();
                with.push(up.clone());
                match edge
                    .admin
                    .switch_to_revision(
                        &step.service,
                        &upstream,
                        &mixed(&with, n as usize),
                        release,
                        drain,
                    )
                    .await
                {
                    Ok(r) => {
                        new_replicas = with;
                        switch.route = r;
                        Ok(())
                    }
                    Err(e) => Err(fail_check("switch", format!("adding replica {n}: {e:#}"))),
                }
            } else {
                Err(gate
                    .failure()
                    .cloned()
                    .map(|f| crate::health::Check {
                        name: format!("replica {n} {}", f.name),
                        ..f
                    })
                    .unwrap_or_else(|| fail_check(&format!("replica {n}"), "failed")))
            };
            if let Err(failed) = routed {
                let revert = Revert {
                    before: before.as_ref(),
                    switch,
                    failed,
                    through: gate,
                };
                return self.revert_route(step, started, &spec, edge, revert).await;
            }
            self.say(
                &step.service,
                &format!(
                    "replica {n} of {} passed its gate ({} ms) and takes requests",
                    step.revision, gate.elapsed_ms
                ),
            );
            crate::rollout::fault::point("replica-routed");
        }
        if switch.route.replicas != new_replicas {
            // More old containers than new ones: the rest leave the route now.
            match edge
                .admin
                .switch_to_revision(&step.service, &upstream, &new_replicas, release, drain)
                .await
            {
                Ok(r) => switch.route = r,
                Err(e) => {
                    let revert = Revert {
                        before: before.as_ref(),
                        switch,
                        failed: fail_check("switch", format!("{e:#}")),
                        through: pre.clone(),
                    };
                    return self.revert_route(step, started, &spec, edge, revert).await;
                }
            }
        }

        // 4. Through the edge, as a client reaches it (published port, its Host), before the
        //    previous revision loses anything: a failure puts the route back.
        let mut pre = pre;
        if let Some(base) = published_base(step) {
            let through = self.probe_through_edge(step, &spec.name, &base, &pre).await;
            let check = through_edge_check(&through, &base);
            switch.through_edge = Some(check.clone());
            if !through.passed {
                let revert = Revert {
                    before: before.as_ref(),
                    switch,
                    failed: check,
                    through,
                };
                return self.revert_route(step, started, &spec, edge, revert).await;
            }
            self.say(&step.service, &check.detail);
            pre.checks.push(check);
        } else {
            self.say(
                &step.service,
                "no published port: not probed through the edge (in-network clients only)",
            );
        }

        // 5. Drain the previous upstreams, then stop (keep) the previous revision and remove its
        //    other replicas (a rollback starts them again from its recorded config).
        let current: Vec<&String> = std::iter::once(&switch.route.upstream)
            .chain(switch.route.replicas.iter())
            .collect();
        for up in old.iter().filter(|u| !current.contains(u)) {
            let progress = |line: &str| self.say(&step.service, line);
            match edge
                .admin
                .wait_drained(
                    &step.service,
                    up,
                    edge.drain_timeout + Duration::from_secs(10),
                    &progress,
                )
                .await
            {
                Ok(d) => {
                    let ms = d.as_millis() as u64;
                    switch.drained_ms = Some(switch.drained_ms.unwrap_or(0).max(ms));
                    self.say(&step.service, &format!("{up} drained in {ms} ms"));
                }
                Err(e) => self.say(
                    &step.service,
                    &format!("drain of {up} not confirmed ({e:#}); stopping it anyway"),
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
                self.remove_replicas(&prev.container).await;
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
        crate::rollout::fault::point("step-done");
        (self.ok(step, started, pre), Some(switch))
    }

    /// The MCP gate (initialize, tools/list and the expected tools, smoke calls) at the edge's
    /// published port. The revision already passed it directly, so this one is bounded tighter:
    /// the health timeout, and at most 10 s more than the pre-switch gate took — every new session
    /// goes to the new revision meanwhile.
    async fn probe_through_edge(
        &self,
        step: &Step,
        container: &str,
        base: &str,
        pre: &crate::health::GateReport,
    ) -> crate::health::GateReport {
        let limit = step
            .health
            .timeout
            .min(THROUGH_EDGE_SLACK + Duration::from_millis(pre.elapsed_ms));
        self.say(
            &step.service,
            &format!("probing {} through the edge at {base}", step.revision),
        );
        self.prober
            .probe(
                container,
                base,
                step.transport,
                &step.health,
                None,
                Instant::now() + limit,
            )
            .await
    }

    /// The probe through the edge failed after the switch: put the route back as it was (the
    /// previous revision still runs: nothing was drained or stopped), verify the previous revision
    /// answers through the edge, and remove the new one.
    async fn revert_route(
        &self,
        step: &Step,
        started: Instant,
        spec: &crate::engine::ContainerSpec,
        edge: &EdgeSwitch,
        revert: Revert<'_>,
    ) -> (StepResult, Option<RouteSwitch>) {
        let Revert {
            before,
            mut switch,
            failed,
            through,
        } = revert;
        self.say(
            &step.service,
            &format!("FAILED {}: {}", failed.name, failed.detail),
        );
        let logs = self.tail(&spec.name).await;
        // The replaced upstream is being removed: its sessions need no drain.
        let drain = Some(Duration::from_secs(1));
        let put_back = match (before, &step.previous) {
            (Some(r), _) => Some(edge.admin.restore(&step.service, r, drain).await),
            (None, Some(prev)) => Some(
                edge.admin
                    .switch_to_revision(
                        &step.service,
                        &revision_upstream(prev),
                        &replica_upstreams(prev, self.keys),
                        prev.release,
                        drain,
                    )
                    .await,
            ),
            (None, None) => None,
        };
        let (ok, restored) = match put_back {
            Some(Err(e)) => {
                // The edge still routes to the new revision: it stays (removing it would leave
                // the route to nothing); the previous revision runs too.
                switch.outcome = SwitchOutcome::RevertFailed;
                (
                    false,
                    format!(
                        "could not put the edge's route back ({e:#}): it still routes to {}, which was left running beside {}; fix the edge, then `mcpctl edge up` or `mcpctl rollback {}`",
                        step.revision,
                        step.previous.as_ref().map(Revision::name).unwrap_or("nothing".into()),
                        step.service
                    ),
                )
            }
            None => {
                switch.outcome = SwitchOutcome::Reverted;
                let _ = self.engine.remove_container(&spec.name).await;
                self.remove_replicas(&spec.name).await;
                (
                    true,
                    format!(
                        "nothing was serving before; {} was removed (the edge's route names it until the next deploy)",
                        step.revision
                    ),
                )
            }
            Some(Ok(back)) => {
                switch.outcome = SwitchOutcome::Reverted;
                let _ = self.engine.remove_container(&spec.name).await;
                self.remove_replicas(&spec.name).await;
                self.say(
                    &step.service,
                    &format!("edge route put back to {}", back.upstream),
                );
                let verified = self.verify_restored(step).await;
                switch.route = back;
                verified
            }
        };
        self.say(&step.service, &restored);
        let result = StepResult {
            service: step.service.clone(),
            from: step.previous.as_ref().map(Revision::name),
            to: step.revision.clone(),
            outcome: if ok {
                Outcome::GateFailedRestored
            } else {
                Outcome::RestoreFailed
            },
            failed: Some(failed),
            gate: Some(through),
            logs_tail: logs,
            restored: Some(restored),
            downtime_ms: None,
            backups: vec![],
            duration_ms: started.elapsed().as_millis() as u64,
        };
        (result, Some(switch))
    }

    /// After the route was put back: the previous revision must answer through the edge, with the
    /// gate it passed before.
    async fn verify_restored(&self, step: &Step) -> (bool, String) {
        let (Some(prev), Some(base)) = (&step.previous, published_base(step)) else {
            return (
                true,
                "the edge's route is back as it was (no revision of this project to verify)".into(),
            );
        };
        let gate = GateConfig::of(prev, self.keys).unwrap_or(GateConfig {
            health: step.health.clone(),
            transport: step.transport,
            role: step.role,
        });
        let report = self
            .prober
            .probe(
                &prev.container,
                &base,
                gate.transport,
                &gate.health,
                None,
                Instant::now() + gate.health.timeout,
            )
            .await;
        if report.passed {
            (
                true,
                format!(
                    "{} serves again through the edge (route put back) and passed its gate at {base} in {} ms",
                    prev.name(),
                    report.elapsed_ms
                ),
            )
        } else {
            let f = report
                .failure()
                .cloned()
                .unwrap_or_else(|| fail_check("gate", "failed"));
            (
                false,
                format!(
                    "the edge's route was put back to {} but it fails its gate through the edge at {base}: {}: {}",
                    prev.name(),
                    f.name,
                    f.detail
                ),
            )
        }
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
        let token = Arc::new(crate::bridge::guard::Token::new("admin-token"));
        let app = crate::edge::server::admin_router(e, token)
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(lis, app).await });
        EdgeSwitch {
            admin: AdminClient::at(&format!("http://{addr}")).with_token("admin-token"),
            drain_timeout: Duration::from_secs(1),
        }
    }

    fn step(release: u64, previous: Option<Revision>) -> Step {
        Step {
            retain: 3,
            ..crate::rollout::executor::tests::step(release, "img", previous)
        }
    }

    /// Where the test step's service is published (the edge's port for it).
    const PUBLISHED: &str = "http://127.0.0.1:8501";

    /// The fake gate; a probe at the published port (through the edge) fails for the containers
    /// in `bad_through`. Every probe is recorded with the engine's call count at that moment.
    struct EdgeProber<'a> {
        inner: crate::rollout::executor::tests::FakeProber<'a>,
        bad_through: BTreeSet<String>,
        probes: std::sync::Mutex<Vec<(String, String, usize)>>,
    }

    impl<'a> EdgeProber<'a> {
        fn new(e: &'a FakeEngine, bad: &[&str], bad_through: &[&str]) -> Self {
            Self {
                inner: crate::rollout::executor::tests::FakeProber {
                    engine: e,
                    bad_images: BTreeSet::new(),
                    bad_containers: bad.iter().map(|s| s.to_string()).collect(),
                },
                bad_through: bad_through.iter().map(|s| s.to_string()).collect(),
                probes: Default::default(),
            }
        }

        fn through_edge(&self) -> Vec<(String, usize)> {
            let probes = self.probes.lock().unwrap();
            probes
                .iter()
                .filter(|(_, base, _)| base == PUBLISHED)
                .map(|(c, _, n)| (c.clone(), *n))
                .collect()
        }
    }

    impl Prober for EdgeProber<'_> {
        async fn probe(
            &self,
            container: &str,
            base: &str,
            transport: crate::manifest::Transport,
            health: &crate::manifest::Health,
            previous: Option<&BTreeMap<String, String>>,
            deadline: Instant,
        ) -> crate::health::GateReport {
            let calls = self.inner.engine.calls().len();
            self.probes
                .lock()
                .unwrap()
                .push((container.into(), base.into(), calls));
            if base == PUBLISHED && self.bad_through.contains(container) {
                return crate::health::GateReport::default().fail(
                    "initialize",
                    "HTTP 403 Forbidden: foreign Host",
                    Instant::now(),
                );
            }
            self.inner
                .probe(container, base, transport, health, previous, deadline)
                .await
        }
    }

    async fn serving(e: &FakeEngine) -> Option<Revision> {
        let list = e.list_containers("com.mcp.project=p").await.unwrap();
        observe(&list, &Keys::new("com.mcp"))
            .services
            .get("alpha")
            .and_then(|o| o.serving.clone())
    }

    async fn run_step(
        e: &FakeEngine,
        prober: &EdgeProber<'_>,
        step: Step,
        sw: &EdgeSwitch,
    ) -> (StepResult, Option<RouteSwitch>) {
        let k = Keys::new("com.mcp");
        let exec = Executor {
            engine: e,
            prober,
            keys: &k,
            project: "p",
            progress: &|_| {},
            interrupted: Arc::new(AtomicBool::new(false)),
        };
        exec.run_step_edge(&step, None, sw).await
    }

    async fn run(e: &FakeEngine, bad: &[&str], release: u64, sw: &EdgeSwitch) -> StepResult {
        let prober = EdgeProber::new(e, bad, &[]);
        let s = step(release, serving(e).await);
        run_step(e, &prober, s, sw).await.0
    }

    fn running(e: &FakeEngine, name: &str) -> bool {
        e.state
            .lock()
            .unwrap()
            .containers
            .get(name)
            .is_some_and(|c| c.state == crate::engine::RunState::Running)
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

    async fn run_replicas(
        e: &FakeEngine,
        bad: &[&str],
        release: u64,
        replicas: u32,
        sw: &EdgeSwitch,
    ) -> StepResult {
        let prober = EdgeProber::new(e, bad, &[]);
        let mut s = step(release, serving(e).await);
        s.spec
            .labels
            .insert(Keys::new("com.mcp").replicas(), replicas.to_string());
        run_step(e, &prober, s, sw).await.0
    }

    /// Replicas: each new container is started and gated one at a time and takes one old
    /// container's place in the route; the old set runs until the new one answered through the
    /// edge; a failing replica puts the old set back and removes every new container.
    #[tokio::test]
    async fn replicas_roll_one_at_a_time_and_a_failing_one_puts_the_old_set_back() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        assert_eq!(run_replicas(&e, &[], 1, 3, &sw).await.outcome, Outcome::Ok);
        let r = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(r.upstream, "http://p-alpha-r1:8080");
        assert_eq!(
            r.replicas,
            ["http://p-alpha-r1-2:8080", "http://p-alpha-r1-3:8080"]
        );
        for c in ["p-alpha-r1", "p-alpha-r1-2", "p-alpha-r1-3"] {
            assert!(running(&e, c), "{c}");
        }
        {
            let st = e.state.lock().unwrap();
            let rep = &st.containers["p-alpha-r1-2"].spec;
            assert_eq!(rep.labels["com.mcp.replica"], "2");
            assert!(
                !rep.labels.contains_key("com.mcp.spec"),
                "the revision's own carries it"
            );
        }

        // A rolling update: every new replica passes its gate before the old set stops.
        let before = e.calls().len();
        assert_eq!(run_replicas(&e, &[], 2, 3, &sw).await.outcome, Outcome::Ok);
        let later = e.calls()[before..].to_vec();
        let at = |c: &str| {
            later
                .iter()
                .position(|x| x == c)
                .unwrap_or_else(|| panic!("{c}: {later:?}"))
        };
        assert!(at("start p-alpha-r2") < at("start p-alpha-r2-2"));
        assert!(at("start p-alpha-r2-2") < at("start p-alpha-r2-3"));
        assert!(
            at("start p-alpha-r2-3") < at("stop p-alpha-r1"),
            "{later:?}"
        );
        let r = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(r.upstream, "http://p-alpha-r2:8080");
        assert_eq!(
            r.replicas,
            ["http://p-alpha-r2-2:8080", "http://p-alpha-r2-3:8080"]
        );
        {
            let st = e.state.lock().unwrap();
            assert!(
                !st.containers.contains_key("p-alpha-r1-2"),
                "old replicas removed"
            );
            assert!(!st.containers.contains_key("p-alpha-r1-3"));
            assert_eq!(
                st.containers["p-alpha-r1"].state,
                crate::engine::RunState::Exited
            );
        }

        // The third replica of r3 fails its gate: the route is r2's set again, r3 is gone.
        let r = run_replicas(&e, &["p-alpha-r3-3"], 3, 3, &sw).await;
        assert_eq!(r.outcome, Outcome::GateFailedRestored, "{r:?}");
        assert!(r.failed.unwrap().name.starts_with("replica 3"));
        let route = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(route.upstream, "http://p-alpha-r2:8080");
        assert_eq!(
            route.replicas,
            ["http://p-alpha-r2-2:8080", "http://p-alpha-r2-3:8080"]
        );
        for c in ["p-alpha-r2", "p-alpha-r2-2", "p-alpha-r2-3"] {
            assert!(running(&e, c), "{c} still serves");
        }
        {
            let st = e.state.lock().unwrap();
            for c in ["p-alpha-r3", "p-alpha-r3-2", "p-alpha-r3-3"] {
                assert!(!st.containers.contains_key(c), "{c} removed");
            }
        }

        // Scaling down to one: the extra old replicas leave the route and are removed.
        assert_eq!(run_replicas(&e, &[], 4, 1, &sw).await.outcome, Outcome::Ok);
        let route = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(route.upstream, "http://p-alpha-r4:8080");
        assert!(route.replicas.is_empty(), "{route:?}");
        let st = e.state.lock().unwrap();
        assert!(!st.containers.contains_key("p-alpha-r2-2"));
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

    #[tokio::test]
    async fn the_switched_route_is_probed_through_the_edge_before_the_old_revision_stops() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        assert_eq!(run(&e, &[], 1, &sw).await.outcome, Outcome::Ok);
        let prober = EdgeProber::new(&e, &[], &[]);
        let (r, switch) = run_step(&e, &prober, step(2, serving(&e).await), &sw).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let calls = e.calls();
        let stop = calls
            .iter()
            .position(|c| c == "stop p-alpha-r1")
            .expect("r1 stopped");
        let through = prober.through_edge();
        assert_eq!(through.len(), 1, "one probe through the edge: {through:?}");
        assert_eq!(through[0].0, "p-alpha-r2");
        assert!(through[0].1 <= stop, "probed before r1 stopped: {calls:?}");
        let gate = r.gate.unwrap();
        assert!(
            gate.checks.iter().any(|c| c.name == "through-edge" && c.ok),
            "{gate:?}"
        );
        let switch = switch.expect("a route switch");
        assert_eq!(switch.outcome, SwitchOutcome::Switched);
        assert!(switch.through_edge.as_ref().is_some_and(|c| c.ok));
        assert!(
            switch.detail().contains("→ http://p-alpha-r2:8080 (revision r2); through-edge: answers through the edge at http://127.0.0.1:8501"),
            "{}",
            switch.detail()
        );
    }

    #[tokio::test]
    async fn a_failure_through_the_edge_puts_the_route_back_and_removes_the_new_revision() {
        for (bad_through, want) in [
            (vec!["p-alpha-r2"], Outcome::GateFailedRestored),
            (vec!["p-alpha-r2", "p-alpha-r1"], Outcome::RestoreFailed),
        ] {
            let e = FakeEngine::new();
            e.add_image("img", BTreeMap::new());
            let sw = edge().await;
            assert_eq!(run(&e, &[], 1, &sw).await.outcome, Outcome::Ok);
            let before = e.calls().len();
            let prober = EdgeProber::new(&e, &[], &bad_through);
            let (r, switch) = run_step(&e, &prober, step(2, serving(&e).await), &sw).await;
            assert_eq!(r.outcome, want, "{r:?}");
            let failed = r.failed.as_ref().unwrap();
            assert_eq!(failed.name, "through-edge initialize", "{r:?}");
            assert!(
                failed.detail.contains("http://127.0.0.1:8501"),
                "{failed:?}"
            );
            let restored = r.restored.as_deref().unwrap();
            match want {
                Outcome::GateFailedRestored => {
                    assert!(
                        restored.contains("serves again through the edge"),
                        "{restored}"
                    )
                }
                _ => assert!(
                    restored.contains("fails its gate through the edge"),
                    "{restored}"
                ),
            }
            // The route is r1's again (the edge's truth), r2 is gone, r1 never stopped.
            let route = sw.admin.route("alpha").await.unwrap().unwrap();
            assert_eq!(
                (route.upstream.as_str(), route.revision),
                ("http://p-alpha-r1:8080", Some(1))
            );
            assert!(!e
                .state
                .lock()
                .unwrap()
                .containers
                .contains_key("p-alpha-r2"));
            assert!(running(&e, "p-alpha-r1"));
            let later = e.calls()[before..].to_vec();
            assert!(!later.iter().any(|c| c == "stop p-alpha-r1"), "{later:?}");
            // r2 was probed through the edge, then r1 (after the route was put back).
            let through: Vec<String> = prober.through_edge().into_iter().map(|p| p.0).collect();
            assert_eq!(through, vec!["p-alpha-r2", "p-alpha-r1"]);
            // The ledger's route line says what happened.
            let switch = switch.expect("the switch and its revert are recorded");
            assert_eq!(switch.outcome, SwitchOutcome::Reverted);
            assert_eq!(switch.outcome.as_str(), "reverted");
            assert_eq!(switch.from.as_deref(), Some("http://p-alpha-r1:8080"));
            assert_eq!(switch.route.upstream, "http://p-alpha-r1:8080");
            let d = switch.detail();
            assert!(
                d.contains(
                    "through-edge initialize: through the edge at http://127.0.0.1:8501: HTTP 403"
                ) && d.contains("put back to http://p-alpha-r1:8080 (revision r1)"),
                "{d}"
            );
        }
    }

    #[tokio::test]
    async fn a_first_deploy_that_fails_through_the_edge_is_removed() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        let prober = EdgeProber::new(&e, &[], &["p-alpha-r1"]);
        let (r, switch) = run_step(&e, &prober, step(1, None), &sw).await;
        assert_eq!(r.outcome, Outcome::GateFailedRestored, "{r:?}");
        assert!(r.restored.unwrap().contains("nothing was serving before"));
        assert!(e.state.lock().unwrap().containers.is_empty());
        assert_eq!(switch.unwrap().outcome, SwitchOutcome::Reverted);
    }

    #[tokio::test]
    async fn the_upstream_is_the_revisions_container_port() {
        let e = FakeEngine::new();
        e.add_image("img", BTreeMap::new());
        let sw = edge().await;
        let at_9090 = |mut s: Step| {
            s.spec.port.as_mut().unwrap().container_port = 9090;
            s
        };
        let prober = EdgeProber::new(&e, &[], &[]);
        let (r, _) = run_step(&e, &prober, at_9090(step(1, None)), &sw).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let route = sw.admin.route("alpha").await.unwrap().unwrap();
        assert_eq!(route.upstream, "http://p-alpha-r1:9090");
        // The next switch finds the previous upstream at its port (recorded config), and drains it.
        let prev = serving(&e).await.unwrap();
        assert_eq!(revision_upstream(&prev), "http://p-alpha-r1:9090");
        let (r, switch) = run_step(&e, &prober, at_9090(step(2, Some(prev))), &sw).await;
        assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
        let switch = switch.unwrap();
        assert_eq!(switch.from.as_deref(), Some("http://p-alpha-r1:9090"));
        assert_eq!(switch.route.upstream, "http://p-alpha-r2:9090");
        assert!(switch.drained_ms.is_some(), "{switch:?}");
    }
}
