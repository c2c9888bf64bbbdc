//! The run: long-lived sessions held for the whole run, a rate-paced mix of calls on them and
//! new-session-per-call (LiteLLM's pattern), a tools/list per service per coverage interval, a
//! sampler (bridge /metrics, container memory, timeline), optional chaos, a checkpoint every
//! interval, and after the load the leak check. Bounded everywhere: calls in flight ≤
//! concurrency (a tick finding none free is counted, never queued), every MCP request ≤ the call
//! timeout, the drain and the leak grace have deadlines, chaos actions ≤ duration / chaos_min.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::observe::{self, BridgeObs, BridgeSnapshot, ContainerSample, PromView};
use super::stats::{CallOutcome, Histogram, Point, ServiceStats};
use super::{Probe, SoakOptions, Target};
use crate::engine::{Engine, RunState};
use crate::locks::{self, MutexExt};
use crate::mcp::{McpError, Mode, Session};

/// The project's containers over the run (Engine), when Docker has them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerObs {
    pub measured: bool,
    pub peak_bytes: Option<u64>,
    pub last_bytes: Option<u64>,
    pub running: usize,
    /// Restart count per container when first seen, and now.
    pub restarts_first: BTreeMap<String, i64>,
    pub restarts_last: BTreeMap<String, i64>,
    pub note: Option<String>,
    /// CPU cores used (Δ CPU seconds / Δ time, summed over containers) at the last sample.
    #[serde(default)]
    pub last_cores: Option<f64>,
    #[serde(default)]
    pub peak_cores: Option<f64>,
    #[serde(default)]
    cpu_prev: BTreeMap<String, f64>,
    #[serde(default)]
    cpu_prev_t: Option<f64>,
    /// When each container's current incarnation was first sampled (seconds since the soak
    /// began): its first sample in this run, or the sample after a restart (its CPU time went
    /// back). The memory-growth warm-up counts from here.
    #[serde(default)]
    pub started_s: BTreeMap<String, f64>,
    /// The `<p>.service` label per container seen.
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    #[serde(default)]
    cpu_seen: BTreeMap<String, f64>,
}

impl ContainerObs {
    fn observe(&mut self, s: ContainerSample, t_s: f64) {
        // A container that restarted or was replaced starts from its own first sample.
        if let Some(t0) = self.cpu_prev_t.filter(|t0| t_s > *t0) {
            let used: f64 = s
                .cpu_seconds
                .iter()
                .filter_map(|(c, now)| Some((now - self.cpu_prev.get(c)?).max(0.0)))
                .sum();
            let cores = used / (t_s - t0);
            self.last_cores = Some(cores);
            self.peak_cores = Some(self.peak_cores.unwrap_or(0.0).max(cores));
        }
        // A stop + start recreates the cgroup: CPU time starts again from zero. The last CPU
        // time seen is kept while a container is away (stopped by chaos, stats unavailable).
        for (name, now) in &s.cpu_seconds {
            let restarted = self.cpu_seen.get(name).is_some_and(|prev| now < prev);
            if restarted || !self.started_s.contains_key(name) {
                self.started_s.insert(name.clone(), t_s);
            }
            self.cpu_seen.insert(name.clone(), *now);
        }
        self.services.extend(s.service_of.clone());
        self.cpu_prev = s.cpu_seconds.clone();
        self.cpu_prev_t = Some(t_s);
        for (name, n) in &s.restarts {
            self.restarts_first.entry(name.clone()).or_insert(*n);
        }
        self.restarts_last = s.restarts;
        self.running = s.running;
        if let Some(b) = s.memory_bytes {
            self.measured = true;
            self.peak_bytes = Some(self.peak_bytes.unwrap_or(0).max(b));
        }
        self.last_bytes = s.memory_bytes;
    }

    /// Restarts during the run, summed over containers (Docker's restart counts).
    pub fn restarts(&self) -> i64 {
        self.restarts_last
            .iter()
            .map(|(k, n)| n - self.restarts_first.get(k).copied().unwrap_or(*n))
            .filter(|d| *d > 0)
            .sum()
    }
}

/// One chaos action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChaosEvent {
    pub t_s: f64,
    /// When the container was started again.
    pub done_s: f64,
    pub service: String,
    pub container: String,
    /// `kill` (stop with no grace) or `restart` (stop with 10 s grace); both start it again.
    pub action: String,
    pub ok: bool,
    pub detail: String,
}

/// Sessions and child processes after the load, against the baseline before it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeakCheck {
    /// False when the bridge published no /metrics (or the run was interrupted).
    pub judged: bool,
    pub leaked: bool,
    pub sessions_baseline: Option<f64>,
    pub sessions_after: Option<f64>,
    pub children_baseline: Option<f64>,
    pub children_after: Option<f64>,
    pub waited_s: f64,
    pub detail: String,
    /// Legacy sessions the run opened: the bridge's session count is about these alone
    /// (2026-07-28 requests are stateless and open none), so with none the session half of the
    /// check is vacuous and the detail says so.
    #[serde(default)]
    pub legacy_sessions_opened: u64,
    /// Load calls answered over 2026-07-28 (no bridge session behind them).
    #[serde(default)]
    pub modern_calls: u64,
}

/// Everything measured; serialised as the checkpoint's `state`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub services: BTreeMap<String, ServiceStats>,
    pub bridges: BTreeMap<String, BridgeObs>,
    pub containers: ContainerObs,
    pub timeline: Vec<Point>,
    pub chaos: Vec<ChaosEvent>,
    /// Ticks that found every call slot busy (the client, not the servers, was saturated).
    pub skipped_ticks: u64,
    pub held_sessions: usize,
    pub leaks: BTreeMap<String, LeakCheck>,
    pub prometheus: Option<PromView>,
    #[serde(skip)]
    interval: BTreeMap<String, Histogram>,
    #[serde(skip)]
    interval_calls: u64,
    #[serde(skip)]
    interval_errors: u64,
}

/// The checkpoint file: the run's settings and what it measured so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub project: String,
    pub started_at: String,
    pub report_dir: PathBuf,
    pub options: SoakOptions,
    pub targets: Vec<Target>,
    pub prometheus_url: String,
    /// Seconds of load run so far (over all segments).
    pub elapsed_s: f64,
    /// Each start (the first run and every `--resume`).
    pub segments: Vec<String>,
    pub finished: bool,
    pub interrupted: bool,
    pub state: State,
}

impl Checkpoint {
    pub fn remaining(&self) -> Duration {
        self.options
            .duration
            .saturating_sub(Duration::from_secs_f64(self.elapsed_s.max(0.0)))
    }

    pub fn read(path: &Path) -> anyhow::Result<Checkpoint> {
        let bytes = std::fs::read(path)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Written to a temporary file and renamed, so a crash never leaves half a checkpoint.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        fs_err::write(&tmp, serde_json::to_vec(self)?)?;
        fs_err::rename(&tmp, path)?;
        Ok(())
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    Interrupted,
}

/// Current figures for the live progress line.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    pub remaining: Duration,
    pub calls: u64,
    pub errors: u64,
    pub availability: Option<f64>,
    pub p95_ms: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub sessions_active: Option<f64>,
}

#[derive(Clone, Copy)]
struct Clock {
    t0: Instant,
    offset_s: f64,
}

impl Clock {
    fn now_s(&self) -> f64 {
        self.offset_s + self.t0.elapsed().as_secs_f64()
    }
}

type Held = Arc<tokio::sync::Mutex<Option<Session>>>;

fn classify(e: &McpError) -> (String, String) {
    let kind = match e {
        McpError::Connect { .. } => "connect",
        McpError::Http { .. } => "http",
        McpError::Timeout(_) => "timeout",
        McpError::Protocol(_) => "protocol",
        McpError::Rpc { .. } => "rpc",
    };
    (kind.to_string(), excerpt(&e.to_string()))
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

/// One probe on an open session: (answered, error, latency µs).
async fn exec(s: &mut Session, probe: &Probe) -> (bool, Option<(String, String)>, Option<u64>) {
    let t = Instant::now();
    match probe {
        Probe::Tool { tool, args, expect } => match s.call_tool(tool, args.clone()).await {
            Ok(r) => {
                let lat = t.elapsed().as_micros() as u64;
                let want_error = expect.is_error.unwrap_or(false);
                let err = if r.is_error != want_error {
                    Some((
                        "is_error".to_string(),
                        format!(
                            "isError was {}, expected {want_error}: {}",
                            r.is_error,
                            excerpt(&r.text)
                        ),
                    ))
                } else {
                    match &expect.contains {
                        Some(want) if !r.text.contains(want.as_str()) => Some((
                            "contains".to_string(),
                            format!("result lacks {want:?}: {}", excerpt(&r.text)),
                        )),
                        _ => None,
                    }
                };
                (true, err, Some(lat))
            }
            Err(e) => (false, Some(classify(&e)), None),
        },
        Probe::ListTools => match s.list_tools().await {
            Ok(_) => (true, None, Some(t.elapsed().as_micros() as u64)),
            Err(e) => (false, Some(classify(&e)), None),
        },
    }
}

/// Room for sessions the load does not open itself, at every service: one coverage check, and one
/// session the bridge is still tearing down after its client closed it (per_session: a child
/// process exiting). Held and fresh sessions together stay within `max_sessions` minus this.
const SESSION_RESERVE: usize = 2;

/// Long-lived sessions `t` may hold: half of what its bridge allows beyond the reserve.
fn held_cap(t: &Target) -> usize {
    t.max_sessions.saturating_sub(SESSION_RESERVE) / 2
}

/// Fresh sessions `t` may have open at once beside its `held` ones (at least one).
fn fresh_slots(t: &Target, held: usize) -> usize {
    t.max_sessions.saturating_sub(held + SESSION_RESERVE).max(1)
}

async fn fresh_call(
    t: &Target,
    slots: &Semaphore,
    probe: &Probe,
    timeout: Duration,
    clock: Clock,
    mode: Mode,
) -> CallOutcome {
    // Never more sessions than the bridge holds: a 503 the soak caused itself is no finding.
    let _slot = slots.acquire().await;
    let setup = Instant::now();
    let mut o = CallOutcome {
        probe: probe.name(),
        answered: false,
        error: None,
        latency_us: None,
        setup_us: None,
        held: false,
        reconnected: false,
        at_s: 0.0,
        era: None,
        opened_auto: None,
    };
    match t.connect(timeout, mode).await {
        Ok(mut s) => {
            o.setup_us = Some(setup.elapsed().as_micros() as u64);
            o.era = Some(s.era);
            o.opened_auto = Some(mode == Mode::Auto);
            let (answered, error, lat) = exec(&mut s, probe).await;
            o.answered = answered;
            o.error = error;
            o.latency_us = lat;
            s.close().await;
        }
        Err(e) => o.error = Some(classify(&e)),
    }
    o.at_s = clock.now_s();
    o
}

async fn held_call(
    t: &Target,
    slots: &Semaphore,
    probe: &Probe,
    held: &Held,
    mode: Mode,
    timeout: Duration,
    clock: Clock,
) -> CallOutcome {
    let Ok(mut guard) = held.try_lock() else {
        // Busy with a slow call: LiteLLM would open a new session too.
        return fresh_call(t, slots, probe, timeout, clock, mode).await;
    };
    let mut o = CallOutcome {
        probe: probe.name(),
        answered: false,
        error: None,
        latency_us: None,
        setup_us: None,
        held: true,
        reconnected: false,
        at_s: 0.0,
        era: None,
        opened_auto: None,
    };
    if guard.is_none() {
        o.reconnected = true;
        match t.connect(timeout, mode).await {
            Ok(s) => {
                o.opened_auto = Some(mode == Mode::Auto);
                *guard = Some(s);
            }
            Err(e) => {
                o.error = Some(classify(&e));
                o.at_s = clock.now_s();
                return o;
            }
        }
    }
    let s = guard.as_mut().expect("connected above");
    o.era = Some(s.era);
    let (answered, error, lat) = exec(s, probe).await;
    o.answered = answered;
    o.error = error;
    o.latency_us = lat;
    if !answered {
        // The session may be gone with the server; reconnect on next use.
        if let Some(dead) = guard.take() {
            tokio::spawn(dead.close());
        }
    }
    o.at_s = clock.now_s();
    o
}

fn record(state: &Mutex<State>, service: &str, o: &CallOutcome) {
    let mut st = state.lock_ignore_poison();
    st.services
        .entry(service.to_string())
        .or_default()
        .record(o);
    st.interval_calls += 1;
    if o.error.is_some() {
        st.interval_errors += 1;
    }
    if let (true, Some(us)) = (o.answered, o.latency_us) {
        st.interval
            .entry(service.to_string())
            .or_default()
            .record_us(us);
    }
}

/// One tools/list on a new session; the checks alternate eras as the load does ([`Target::mode`]),
/// so the list each era serves is checked.
async fn coverage_check(t: &Target, timeout: Duration, state: &Mutex<State>) {
    let n = {
        let st = state.lock_ignore_poison();
        st.services
            .get(&t.name)
            .map_or(0, |s| s.coverage.checks + s.coverage.unreachable)
    };
    let mode = t.mode(n);
    let mut opened = None;
    let listed = match t.connect(timeout, mode).await {
        Ok(mut s) => {
            opened = Some(s.era);
            let r = s.list_tools().await;
            s.close().await;
            r.ok()
        }
        Err(_) => None,
    };
    let mut st = state.lock_ignore_poison();
    let svc = st.services.entry(t.name.clone()).or_default();
    if let Some(era) = opened {
        svc.opened(mode == Mode::Auto, era);
    }
    let cov = &mut svc.coverage;
    match listed {
        None => cov.unreachable += 1,
        Some(tools) => {
            cov.checks += 1;
            cov.tools_listed = tools.len();
            let missing: Vec<&String> = t
                .expect_tools
                .include
                .iter()
                .filter(|n| !tools.iter().any(|x| &x.name == *n))
                .collect();
            if missing.is_empty() && tools.len() >= t.expect_tools.min {
                cov.complete += 1;
            }
            for m in missing {
                cov.missing.insert(m.clone());
            }
            if tools.len() < t.expect_tools.min {
                cov.missing.insert(format!(
                    "(only {} tools listed, at least {} expected)",
                    tools.len(),
                    t.expect_tools.min
                ));
            }
        }
    }
}

async fn load_loop(
    targets: Arc<Vec<Target>>,
    held: Arc<Vec<Vec<Held>>>,
    opts: SoakOptions,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    clock: Clock,
) {
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let slots: Arc<Vec<Semaphore>> = Arc::new(
        targets
            .iter()
            .zip(held.iter())
            .map(|(t, h)| Semaphore::new(fresh_slots(t, h.len())))
            .collect(),
    );
    let mut set: JoinSet<()> = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / opts.rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cov = tokio::time::interval(opts.coverage_interval);
    cov.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let covering: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
        targets
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    let fresh_counts: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        targets
            .iter()
            .map(|t| t.probes.iter().map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let ti = (n % targets.len() as u64) as usize;
                let k = n / targets.len() as u64;
                n += 1;
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    state.lock_ignore_poison().skipped_ticks += 1;
                    continue;
                };
                let t = targets.clone();
                let hs = held.clone();
                let sl = slots.clone();
                let fc = fresh_counts.clone();
                let st = state.clone();
                let timeout = opts.call_timeout;
                set.spawn(async move {
                    let target = &t[ti];
                    let probe = &target.probes[(k % target.probes.len() as u64) as usize];
                    let mine = &hs[ti];
                    let o = if !mine.is_empty() && k % 2 == 0 {
                        let j = (k / 2) % mine.len() as u64;
                        let h = &mine[j as usize];
                        let mode = target.mode(j);
                        held_call(target, &sl[ti], probe, h, mode, timeout, clock).await
                    } else {
                        // Each probe's fresh calls alternate modes (a count per probe: the
                        // tick number would tie a probe to one mode when it has an even count).
                        let pi = (k % target.probes.len() as u64) as usize;
                        let mode = target.mode(fc[ti][pi].fetch_add(1, Ordering::Relaxed));
                        fresh_call(target, &sl[ti], probe, timeout, clock, mode).await
                    };
                    record(&st, &target.name, &o);
                    drop(permit);
                });
            }
            _ = cov.tick() => {
                for ti in 0..targets.len() {
                    if covering[ti].swap(true, std::sync::atomic::Ordering::SeqCst) {
                        continue; // the previous check is still running
                    }
                    let t = targets.clone();
                    let st = state.clone();
                    let flags = covering.clone();
                    let timeout = opts.call_timeout;
                    set.spawn(async move {
                        coverage_check(&t[ti], timeout, &st).await;
                        flags[ti].store(false, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            }
            Some(_) = set.join_next(), if !set.is_empty() => {}
        }
    }
    // Let calls in flight finish (each is bounded by the call timeout) so every started call is
    // counted once; anything still running past the bound is abandoned uncounted.
    let drain = opts.call_timeout * 2 + Duration::from_secs(5);
    let drained =
        tokio::time::timeout(drain, async { while set.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        set.abort_all();
    }
}

async fn scrape_all(
    http: &reqwest::Client,
    targets: &[Target],
) -> Vec<(String, Option<BridgeSnapshot>)> {
    let futs = targets
        .iter()
        .map(|t| async move { (t.name.clone(), observe::scrape(http, &t.base_url).await) });
    futures::future::join_all(futs).await
}

async fn sample<E: Engine>(
    http: &reqwest::Client,
    targets: &[Target],
    ctx: &RunContext<'_, E>,
    state: &Mutex<State>,
    clock: Clock,
) {
    let scraped = scrape_all(http, targets).await;
    let containers = match ctx.engine {
        Some(e) => Some(observe::sample_containers(e, &ctx.label_prefix, &ctx.project).await),
        None => None,
    };
    let mut st = state.lock_ignore_poison();
    let mut sessions: Option<f64> = None;
    for (name, snap) in scraped {
        if let Some(s) = snap.as_ref().and_then(|s| s.sessions_active) {
            *sessions.get_or_insert(0.0) += s;
        }
        st.bridges.entry(name).or_default().observe(snap);
    }
    let memory = containers.as_ref().and_then(|c| c.memory_bytes);
    let by_container = containers
        .as_ref()
        .map(|c| c.memory_by_container.clone())
        .unwrap_or_default();
    let t_s = clock.now_s();
    let cpu_cores = match containers {
        Some(c) => {
            st.containers.observe(c, t_s);
            st.containers.last_cores
        }
        None => None,
    };
    let interval = std::mem::take(&mut st.interval);
    let mut all = Histogram::default();
    let mut per = BTreeMap::new();
    for (name, h) in &interval {
        all.merge(h);
        if let Some(p) = h.quantile_ms(0.95) {
            per.insert(name.clone(), p);
        }
    }
    let point = Point {
        t_s: clock.now_s(),
        calls: std::mem::take(&mut st.interval_calls),
        errors: std::mem::take(&mut st.interval_errors),
        p50_ms: all.quantile_ms(0.5),
        p95_ms: all.quantile_ms(0.95),
        service_p95_ms: per,
        memory_bytes: memory,
        cpu_cores,
        sessions_active: sessions,
        container_memory_bytes: by_container,
    };
    st.timeline.push(point);
}

async fn sampler_loop<E: Engine>(
    http: reqwest::Client,
    targets: Arc<Vec<Target>>,
    ctx: &RunContext<'_, E>,
    interval: Duration,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    clock: Clock,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await; // the baseline was just taken
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                sample(&http, &targets, ctx, &state, clock).await;
            }
        }
    }
}

/// Chaos needs the engine: without one (`ctx.engine` is `None`) it does nothing.
async fn chaos_loop<E: Engine>(
    ctx: &RunContext<'_, E>,
    targets: &[Target],
    opts: &SoakOptions,
    state: &Mutex<State>,
    stop: CancellationToken,
    clock: Clock,
    deadline: tokio::time::Instant,
) {
    let Some(engine) = ctx.engine else {
        return;
    };
    let (prefix, project) = (&ctx.label_prefix, &ctx.project);
    let max_actions =
        (opts.duration.as_secs_f64() / opts.chaos_min.as_secs_f64().max(1.0)) as u64 + 1;
    let label = format!("{prefix}.project={project}");
    for _ in 0..max_actions {
        let (lo, hi) = (
            opts.chaos_min.min(opts.chaos_max),
            opts.chaos_max.max(opts.chaos_min),
        );
        let pause = rand::thread_rng().gen_range(lo.as_secs_f64()..=hi.as_secs_f64());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs_f64(pause)) => {}
        }
        // No action in the run's last chaos_min: its recovery could not be observed.
        if deadline.saturating_duration_since(tokio::time::Instant::now()) < opts.chaos_min {
            return;
        }
        let Ok(list) = engine.list_containers(&label).await else {
            continue;
        };
        let k = |s: &str| format!("{prefix}.{s}");
        let candidates: Vec<_> = list
            .into_iter()
            .filter(|c| {
                c.state == RunState::Running
                    && c.labels.get(&k("managed")).map(String::as_str) == Some("true")
                    && c.labels.get(&k("role")).map(String::as_str) == Some("service")
                    && !c.labels.contains_key(&k("phase"))
                    && c.labels
                        .get(&k("service"))
                        .is_some_and(|s| targets.iter().any(|t| &t.name == s))
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let (idx, kill) = {
            let mut rng = rand::thread_rng();
            (rng.gen_range(0..candidates.len()), rng.gen_bool(0.5))
        };
        let c = &candidates[idx];
        let t_s = clock.now_s();
        let grace = if kill { 0 } else { 10 };
        let r = match engine.stop_container(&c.name, grace).await {
            Ok(()) => engine.start_container(&c.name).await,
            Err(e) => Err(e),
        };
        let ev = ChaosEvent {
            t_s,
            done_s: clock.now_s(),
            service: c.labels.get(&k("service")).cloned().unwrap_or_default(),
            container: c.name.clone(),
            action: if kill { "kill" } else { "restart" }.into(),
            ok: r.is_ok(),
            detail: r.err().map(|e| e.to_string()).unwrap_or_default(),
        };
        tracing::info!(service = %ev.service, container = %ev.container, action = %ev.action, "chaos");
        state.lock_ignore_poison().chaos.push(ev);
    }
}

/// Where things are and who the run belongs to.
pub struct RunContext<'a, E: Engine> {
    pub engine: Option<&'a E>,
    pub label_prefix: String,
    pub project: String,
    pub checkpoint_path: PathBuf,
}

/// Run (or continue) the soak described by `ckpt`. Returns the final checkpoint (also written).
pub async fn run<E: Engine>(
    mut ckpt: Checkpoint,
    ctx: RunContext<'_, E>,
    on_progress: &mut dyn FnMut(&Progress),
) -> anyhow::Result<(Checkpoint, Ending)> {
    let opts = ckpt.options.clone();
    let targets = Arc::new(ckpt.targets.clone());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let clock = Clock {
        t0: Instant::now(),
        offset_s: ckpt.elapsed_s,
    };
    let remaining = ckpt.remaining();
    let state = Arc::new(Mutex::new(std::mem::take(&mut ckpt.state)));
    let deadline = tokio::time::Instant::now() + remaining;

    // Baseline: bridge sessions/children before this segment's load (the first one counts), and
    // the containers.
    sample(&http, &targets, &ctx, &state, clock).await;
    {
        let mut st = state.lock_ignore_poison();
        st.timeline.pop(); // a baseline, not a point of the load
        if ctx.engine.is_none() {
            st.containers.note = Some("Docker engine unreachable".into());
        } else if !st.containers.measured {
            st.containers.note = Some(format!(
                "no running containers labelled {}.project={}",
                ctx.label_prefix, ctx.project
            ));
        }
    }

    // Long-lived sessions, spread round-robin over the services, opened concurrently.
    // A service whose bridge allows few sessions (per_session) gets at most [`held_cap`].
    let mut held: Vec<Vec<Held>> = targets.iter().map(|_| Vec::new()).collect();
    let mut placed = 0;
    for i in 0..opts.sessions * targets.len() {
        if placed == opts.sessions {
            break;
        }
        let ti = i % targets.len();
        if held[ti].len() < held_cap(&targets[ti]) {
            held[ti].push(Arc::new(tokio::sync::Mutex::new(None)));
            placed += 1;
        }
    }
    // Held session j speaks in `mode(j)` for the whole run (reconnects too).
    let opens = held.iter().enumerate().flat_map(|(ti, hs)| {
        let t = &targets[ti];
        let state = &state;
        hs.iter().enumerate().map(move |(j, h)| async move {
            let mode = t.mode(j as u64);
            if let Ok(s) = t.connect(opts.call_timeout, mode).await {
                state
                    .lock_ignore_poison()
                    .services
                    .entry(t.name.clone())
                    .or_default()
                    .opened(mode == Mode::Auto, s.era);
                *h.lock().await = Some(s);
            }
        })
    });
    futures::future::join_all(opens).await;
    state.lock_ignore_poison().held_sessions = placed;
    let held = Arc::new(held);

    let stop = CancellationToken::new();
    let load = load_loop(
        targets.clone(),
        held.clone(),
        opts.clone(),
        state.clone(),
        stop.clone(),
        clock,
    );
    let sampler = sampler_loop(
        http.clone(),
        targets.clone(),
        &ctx,
        opts.sample_interval,
        state.clone(),
        stop.clone(),
        clock,
    );
    let chaos = async {
        if opts.chaos {
            chaos_loop(&ctx, &targets, &opts, &state, stop.clone(), clock, deadline).await;
        }
    };
    let ckpt_path = ctx.checkpoint_path.clone();
    let base = ckpt.clone();
    let timer = async {
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        let mut checkpoint = tokio::time::interval(opts.checkpoint_interval);
        checkpoint.tick().await;
        // One registration for the whole run, so a Ctrl-C between two polls is not lost.
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let ending = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break Ending::Finished,
                _ = &mut ctrl_c => break Ending::Interrupted,
                _ = progress.tick() => {
                    let p = current_progress(&state, clock, &opts);
                    on_progress(&p);
                }
                _ = checkpoint.tick() => {
                    let mut c = base.clone();
                    c.elapsed_s = clock.now_s();
                    c.state = state.lock_ignore_poison().clone();
                    if let Err(e) = c.write(&ckpt_path) {
                        tracing::warn!("checkpoint {}: {e}", ckpt_path.display());
                    }
                }
            }
        };
        stop.cancel();
        // The load's own length: draining calls in flight afterwards is not part of it.
        (ending, clock.now_s())
    };
    let ((ending, load_elapsed), (), (), ()) = tokio::join!(timer, load, sampler, chaos);

    // Close the long-lived sessions, as a well-behaved client does.
    let closes = held.iter().flatten().map(|h| async move {
        if let Some(s) = h.lock().await.take() {
            s.close().await;
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(closes)).await;

    // Leak check: every bridge back at its baseline within the grace (not judged on Ctrl-C).
    let grace_start = Instant::now();
    let grace = if ending == Ending::Finished {
        opts.leak_grace
    } else {
        Duration::ZERO
    };
    let mut after: Vec<(String, Option<BridgeSnapshot>)>;
    loop {
        after = scrape_all(&http, &targets).await;
        let settled = {
            let st = state.lock_ignore_poison();
            after
                .iter()
                .all(|(name, snap)| match (snap, st.bridges.get(name)) {
                    (Some(s), Some(b)) => b.settled(s),
                    _ => true,
                })
        };
        if settled || grace_start.elapsed() >= grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let waited_s = grace_start.elapsed().as_secs_f64();
    {
        let mut st = state.lock_ignore_poison();
        for (name, snap) in after {
            let (legacy_sessions_opened, modern_calls) =
                st.services.get(&name).map_or((0, 0), |s| {
                    (
                        s.legacy_sessions_opened,
                        s.eras.get("modern").map_or(0, |e| e.calls),
                    )
                });
            let obs = st.bridges.entry(name.clone()).or_default();
            obs.after = snap.clone();
            let base = obs.baseline.clone();
            let mut lc = LeakCheck {
                waited_s,
                sessions_baseline: base.as_ref().and_then(|b| b.sessions_active),
                children_baseline: base.as_ref().and_then(|b| b.child_processes),
                sessions_after: snap.as_ref().and_then(|s| s.sessions_active),
                children_after: snap.as_ref().and_then(|s| s.child_processes),
                legacy_sessions_opened,
                modern_calls,
                ..Default::default()
            };
            match (&base, &snap, ending) {
                (_, _, Ending::Interrupted) => lc.detail = "not judged: interrupted".into(),
                (None, _, _) => lc.detail = "not judged: no /metrics before the load".into(),
                (_, None, _) => {
                    lc.detail = "not judged: /metrics did not answer after the load".into()
                }
                (Some(_), Some(s), _) => {
                    lc.judged = true;
                    lc.leaked = !obs.settled(s);
                    lc.detail = if lc.leaked {
                        format!(
                            "{} sessions / {} child processes {:.1} s after the load stopped (baseline {} / {})",
                            fmt_opt(lc.sessions_after),
                            fmt_opt(lc.children_after),
                            waited_s,
                            fmt_opt(lc.sessions_baseline),
                            fmt_opt(lc.children_baseline)
                        )
                    } else if legacy_sessions_opened == 0 {
                        "back at baseline (no legacy session was opened: only child processes \
                         were judged)"
                            .into()
                    } else {
                        "back at baseline".into()
                    };
                }
            }
            st.leaks.insert(name, lc);
        }
    }
    if let Some(e) = ctx.engine {
        let c = observe::sample_containers(e, &ctx.label_prefix, &ctx.project).await;
        state
            .lock_ignore_poison()
            .containers
            .observe(c, clock.now_s());
    }
    let prom = observe::prometheus(&ckpt.prometheus_url).await;

    let mut st = Arc::try_unwrap(state)
        .map(locks::into_inner_ignore_poison)
        .unwrap_or_else(|a| a.lock_ignore_poison().clone());
    st.prometheus = Some(prom);
    ckpt.state = st;
    ckpt.elapsed_s = load_elapsed;
    ckpt.finished = ending == Ending::Finished;
    ckpt.interrupted = ending == Ending::Interrupted;
    ckpt.write(&ctx.checkpoint_path)?;
    Ok((ckpt, ending))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v}")).unwrap_or_else(|| "?".into())
}

fn current_progress(state: &Mutex<State>, clock: Clock, opts: &SoakOptions) -> Progress {
    let st = state.lock_ignore_poison();
    let mut all = Histogram::default();
    let (mut calls, mut answered, mut errors) = (0, 0, 0);
    for s in st.services.values() {
        all.merge(&s.latency);
        calls += s.calls;
        answered += s.answered;
        errors += s.errors;
    }
    let elapsed = Duration::from_secs_f64(clock.now_s());
    Progress {
        elapsed,
        remaining: opts.duration.saturating_sub(elapsed),
        calls,
        errors,
        availability: (calls > 0).then(|| answered as f64 / calls as f64),
        p95_ms: all.quantile_ms(0.95),
        memory_bytes: st.containers.last_bytes,
        sessions_active: st.timeline.last().and_then(|p| p.sessions_active),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(max_sessions: usize) -> Target {
        Target {
            name: "t".into(),
            base_url: "http://127.0.0.1:1".into(),
            transport: crate::manifest::Transport::Sse,
            probes: vec![Probe::ListTools],
            expect_tools: Default::default(),
            slo_p95_ms: 100,
            token: None,
            max_sessions,
        }
    }

    #[test]
    fn the_load_stays_within_each_bridges_session_cap() {
        for cap in [1, 2, 3, 4, 5, 16, 1000] {
            let t = target(cap);
            let held = held_cap(&t);
            let peak = held + fresh_slots(&t, held) + SESSION_RESERVE;
            assert!(
                peak <= cap.max(1 + SESSION_RESERVE),
                "cap {cap}: {held} held + fresh + reserve = {peak}"
            );
        }
        // playwright (per_session, max_sessions 4): one held, one fresh at a time.
        assert_eq!(held_cap(&target(4)), 1);
        assert_eq!(fresh_slots(&target(4), 1), 1);
        assert_eq!(held_cap(&target(1000)), 499);
    }

    #[test]
    fn sessions_alternate_legacy_and_auto_and_auto_ones_use_streamable_http() {
        use crate::manifest::Transport;
        let mut t = target(10);
        for transport in [Transport::Sse, Transport::Http] {
            t.transport = transport;
            let modes: Vec<Mode> = (0..4).map(|n| t.mode(n)).collect();
            assert_eq!(modes, [Mode::Legacy, Mode::Auto, Mode::Legacy, Mode::Auto]);
            assert_eq!(t.transport_for(Mode::Legacy), transport);
            assert_eq!(t.transport_for(Mode::Auto), Transport::Http);
        }
    }
}
