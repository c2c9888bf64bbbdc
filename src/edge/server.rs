//! `mcpctl edge serve`: the reverse proxy inside the edge container.
//!
//! Listens on each service's port (published on the host) and on 8080 and any other service's
//! `container_port` (Host `mcp-<service>:<its container_port>` inside the network); forwards to the service's current upstream, streaming both ways (nothing
//! is buffered but the first legacy SSE event, to learn the session id); a dropped client drops
//! the upstream request. Affinity: a legacy SSE session stays on the upstream that sent its
//! `endpoint` event, a Streamable HTTP session on the upstream that answered its `initialize` with
//! `Mcp-Session-Id`. After a switch the previous upstream *drains*: its pinned sessions keep
//! working until they end or the drain deadline, when the edge ends their streams cleanly.
//!
//! The admin API (`GET /healthz`, `GET /routes`, `PUT /routes/<service>`, `GET /metrics`) answers
//! only loopback and the network gateway (the host, through the 127.0.0.1-published port); the
//! route endpoints also need the admin token ([`super::token`]) as a bearer token.
//! Routes persist in a JSON file (the `<project>-edge` volume) and are reloaded at start.
//!
//! Must not: talk to Docker, or decide what serves (mcpctl decides, through the admin API).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::metrics::{EdgeMetrics, Refused};
use super::routes::{
    query_session_id, DrainingView, EndpointScan, PutRoute, RouteKind, RouteView, RoutesView,
    Upstream, MAX_UPSTREAMS,
};
use crate::bridge::guard;
use crate::locks::{MutexExt, RwLockExt};

/// A Streamable HTTP session counts as open (for draining) this long after its last request;
/// clients that end sessions with DELETE release it at once.
const HTTP_SESSION_IDLE: Duration = Duration::from_secs(5);
/// Pins of sessions that were never deleted are forgotten after this long without a request.
const PIN_TTL: Duration = Duration::from_secs(30 * 60);
/// How often the members of a route with replicas are asked `GET /readyz`, and how long each may
/// take to answer.
const READY_PROBE_EVERY: Duration = Duration::from_secs(1);
const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a replica that refused a connection stays out of balancing (the probe brings it back
/// sooner once it is ready).
const UNREACHABLE_DOWN: Duration = Duration::from_secs(5);
/// The largest request body the edge holds to send again to another replica; larger (or chunked)
/// bodies are streamed and not re-routed.
const MAX_REROUTE_BODY: u64 = 4 << 20;
/// `Mcp-Method`s that only read, so one that failed before answering may go to another replica.
/// (`tools/call` is re-routed only when its upstream was never reached: it may have side effects.)
const SAFE_METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];

/// One upstream (a revision's bridge or a legacy proxy) and the sessions it holds.
pub struct Backend {
    pub upstream: String,
    up: Upstream,
    revision: Mutex<Option<u64>>,
    kind: RouteKind,
    streams: AtomicUsize,
    in_flight: AtomicUsize,
    http_sessions: Mutex<HashMap<String, Instant>>,
    cancel: CancellationToken,
    retired: AtomicBool,
    deadline: Mutex<Option<(Instant, SystemTime)>>,
    /// Out of balancing until then (a replica that was unreachable or not ready).
    down_until: Mutex<Option<Instant>>,
}

impl Backend {
    fn new(up: Upstream, upstream: String, revision: Option<u64>, kind: RouteKind) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            up,
            revision: Mutex::new(revision),
            kind,
            streams: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            http_sessions: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            retired: AtomicBool::new(false),
            deadline: Mutex::new(None),
            down_until: Mutex::new(None),
        })
    }

    /// Takes new requests without a session (not marked down, or its time out is over).
    fn healthy(&self) -> bool {
        self.down_until
            .lock_ignore_poison()
            .is_none_or(|t| Instant::now() >= t)
    }

    /// Out of balancing for `d`; true when it was in (so the transition is counted once).
    fn mark_down(&self, d: Duration) -> bool {
        let mut until = self.down_until.lock_ignore_poison();
        let was_up = until.is_none_or(|t| Instant::now() >= t);
        *until = Some(Instant::now() + d);
        was_up
    }

    fn mark_up(&self) {
        *self.down_until.lock_ignore_poison() = None;
    }

    /// Open SSE streams plus Streamable HTTP sessions used within [`HTTP_SESSION_IDLE`].
    fn sessions(&self) -> usize {
        let http = self
            .http_sessions
            .lock_ignore_poison()
            .values()
            .filter(|t| t.elapsed() < HTTP_SESSION_IDLE)
            .count();
        self.streams.load(Ordering::SeqCst) + http
    }

    fn busy(&self) -> usize {
        self.sessions() + self.in_flight.load(Ordering::SeqCst)
    }

    fn revision(&self) -> Option<u64> {
        *self.revision.lock_ignore_poison()
    }
}

struct ServiceRoute {
    /// The primary upstream (the revision's first container, or a legacy proxy).
    current: Arc<Backend>,
    /// The revision's other replicas, balanced with `current`.
    replicas: Vec<Arc<Backend>>,
    since: SystemTime,
    draining: Vec<Arc<Backend>>,
    /// Where the next balanced pick starts looking (equal loads are taken in turn).
    next: AtomicUsize,
}

impl ServiceRoute {
    fn new(current: Arc<Backend>, replicas: Vec<Arc<Backend>>, since: SystemTime) -> Self {
        Self {
            current,
            replicas,
            since,
            draining: vec![],
            next: AtomicUsize::new(0),
        }
    }

    /// The upstreams new requests go to: `current`, then the replicas.
    fn members(&self) -> impl Iterator<Item = &Arc<Backend>> {
        std::iter::once(&self.current).chain(self.replicas.iter())
    }

    /// Current, replica or draining: an upstream a pinned session may still use.
    fn serves(&self, b: &Arc<Backend>) -> bool {
        self.members()
            .chain(self.draining.iter())
            .any(|d| Arc::ptr_eq(d, b))
    }

    /// The least busy healthy member not in `tried` (equal loads in turn); with none healthy,
    /// the least busy untried member (it may have recovered; a failure is then reported).
    fn balance(&self, tried: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let members: Vec<&Arc<Backend>> = self
            .members()
            .filter(|b| !tried.iter().any(|t| Arc::ptr_eq(t, b)))
            .collect();
        if members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        let order = || (0..members.len()).map(|i| members[(start + i) % members.len()]);
        order()
            .filter(|b| b.healthy())
            .min_by_key(|b| b.busy())
            .or_else(|| order().min_by_key(|b| b.busy()))
            .cloned()
    }
}

/// A session's pin: its upstream, when it was last seen, and whether an open stream holds it
/// (then it is never swept; the stream's end unpins it).
type Pin = (Arc<Backend>, Instant, bool);

/// The edge's whole state.
pub struct Edge {
    services: BTreeSet<String>,
    routes: RwLock<BTreeMap<String, ServiceRoute>>,
    affinity: Mutex<HashMap<String, Pin>>,
    client: reqwest::Client,
    state_file: Option<PathBuf>,
    drain_timeout: Duration,
    metrics: EdgeMetrics,
    admin_peers: Vec<IpAddr>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Edge {
    pub fn new(
        services: BTreeSet<String>,
        state_file: Option<PathBuf>,
        drain_timeout: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .http1_only()
            .build()?;
        let mut admin_peers = vec![IpAddr::from([127, 0, 0, 1])];
        admin_peers.extend(default_gateway());
        let edge = Arc::new(Self {
            services,
            routes: RwLock::new(BTreeMap::new()),
            affinity: Mutex::new(HashMap::new()),
            client,
            state_file,
            drain_timeout,
            metrics: EdgeMetrics::default(),
            admin_peers,
        });
        edge.load();
        Ok(edge)
    }

    fn load(&self) {
        let Some(file) = &self.state_file else { return };
        let Ok(text) = std::fs::read_to_string(file) else {
            return;
        };
        let saved: RoutesView = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "ignoring an unreadable route file");
                return;
            }
        };
        let mut routes = self.routes.write_ignore_poison();
        for (service, r) in saved.routes {
            if !self.services.contains(&service) {
                tracing::warn!(%service, "dropping the saved route of a service this edge does not front");
                continue;
            }
            let Ok(up) = Upstream::parse(&r.upstream) else {
                continue;
            };
            let since = humantime::parse_rfc3339(&r.since).unwrap_or_else(|_| SystemTime::now());
            let replicas = r
                .replicas
                .iter()
                .filter_map(|u| {
                    let up = Upstream::parse(u).ok()?;
                    Some(Backend::new(up, u.clone(), r.revision, r.kind))
                })
                .collect();
            tracing::info!(%service, upstream = %r.upstream, replicas = ?r.replicas, "route restored");
            routes.insert(
                service,
                ServiceRoute::new(
                    Backend::new(up, r.upstream, r.revision, r.kind),
                    replicas,
                    since,
                ),
            );
        }
    }

    /// Write the routes as they will be (draining is not persisted), flushed, then renamed over
    /// the state file: a crash leaves the old routes or the new ones.
    fn persist(&self, view: &RoutesView) -> std::io::Result<()> {
        use std::io::Write as _;
        let Some(file) = &self.state_file else {
            return Ok(());
        };
        let mut view = view.clone();
        for r in view.routes.values_mut() {
            r.draining.clear();
            r.unhealthy.clear();
        }
        let tmp = file.with_extension("tmp");
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&view).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs_err::rename(&tmp, file)
    }

    fn route_view(r: &ServiceRoute) -> RouteView {
        RouteView {
            upstream: r.current.upstream.clone(),
            revision: r.current.revision(),
            kind: r.current.kind,
            since: rfc3339(r.since),
            draining: r
                .draining
                .iter()
                .map(|b| DrainingView {
                    upstream: b.upstream.clone(),
                    revision: b.revision(),
                    sessions: b.busy(),
                    deadline: b
                        .deadline
                        .lock_ignore_poison()
                        .map(|(_, t)| rfc3339(t))
                        .unwrap_or_default(),
                })
                .collect(),
            replicas: r.replicas.iter().map(|b| b.upstream.clone()).collect(),
            unhealthy: r
                .members()
                .filter(|b| !b.healthy())
                .map(|b| b.upstream.clone())
                .collect(),
        }
    }

    pub fn view(&self) -> RoutesView {
        let routes = self.routes.read_ignore_poison();
        RoutesView {
            routes: routes
                .iter()
                .map(|(s, r)| (s.clone(), Self::route_view(r)))
                .collect(),
        }
    }

    /// Switch `service` to `put.upstream` (and `put.replicas`) atomically. Upstreams of the old
    /// set that are in the new one keep their sessions and counts; the others start draining; an
    /// upstream still draining from an earlier switch is taken back with its sessions.
    pub fn switch(self: &Arc<Self>, service: &str, put: PutRoute) -> Result<RouteView, String> {
        if !self.services.contains(service) {
            return Err(format!("no service `{service}` on this edge"));
        }
        let up = Upstream::parse(&put.upstream)?;
        let mut wanted = vec![(put.upstream.clone(), up)];
        for r in &put.replicas {
            if wanted.iter().any(|(u, _)| u == r) {
                return Err(format!("upstream `{r}` is named twice"));
            }
            wanted.push((r.clone(), Upstream::parse(r)?));
        }
        if wanted.len() > MAX_UPSTREAMS {
            return Err(format!(
                "at most {MAX_UPSTREAMS} upstreams per route (upstream plus replicas), got {}",
                wanted.len()
            ));
        }
        if put.drain_timeout_s.is_some_and(|d| d > MAX_DRAIN_S) {
            return Err(format!(
                "drain_timeout_s must be at most {MAX_DRAIN_S} (one hour)"
            ));
        }
        let drain = put
            .drain_timeout_s
            .map(Duration::from_secs)
            .unwrap_or(self.drain_timeout);
        let mut to_drain = Vec::new();
        let view = {
            let mut routes = self.routes.write_ignore_poison();
            // Persisted first: a switch the edge could not record would be undone by its next
            // restart (and then by `edge up`), so it is refused instead and nothing changes.
            let mut next_view = RoutesView {
                routes: routes
                    .iter()
                    .map(|(s, r)| (s.clone(), Self::route_view(r)))
                    .collect(),
            };
            next_view.routes.insert(
                service.to_string(),
                RouteView {
                    upstream: put.upstream.clone(),
                    revision: put.revision,
                    kind: put.kind,
                    since: rfc3339(
                        routes
                            .get(service)
                            .filter(|r| {
                                r.current.upstream == put.upstream && r.current.kind == put.kind
                            })
                            .map_or_else(SystemTime::now, |r| r.since),
                    ),
                    draining: vec![],
                    replicas: put.replicas.clone(),
                    unhealthy: vec![],
                },
            );
            if let Err(e) = self.persist(&next_view) {
                tracing::error!(error = %e, "cannot persist routes: switch refused");
                return Err(format!(
                    "{PERSIST_FAILED}: {e}; nothing was switched (free space or fix the edge's volume)"
                ));
            }
            match routes.get_mut(service) {
                Some(r) => {
                    let same_primary =
                        r.current.upstream == put.upstream && r.current.kind == put.kind;
                    let old: Vec<Arc<Backend>> = r.members().cloned().collect();
                    let mut members = Vec::with_capacity(wanted.len());
                    for (upstream, up) in wanted {
                        let same = |b: &Arc<Backend>| b.upstream == upstream && b.kind == put.kind;
                        let b = if let Some(b) = old.iter().find(|b| same(b)) {
                            b.clone()
                        } else if let Some(i) = r.draining.iter().position(same) {
                            // Switching back to an upstream still draining keeps its sessions.
                            let b = r.draining.remove(i);
                            *b.deadline.lock_ignore_poison() = None;
                            b
                        } else {
                            Backend::new(up, upstream, put.revision, put.kind)
                        };
                        *b.revision.lock_ignore_poison() = put.revision;
                        members.push(b);
                    }
                    let changed = old.len() != members.len()
                        || old.iter().zip(&members).any(|(a, b)| !Arc::ptr_eq(a, b));
                    for b in old {
                        if members.iter().any(|m| Arc::ptr_eq(m, &b)) {
                            continue;
                        }
                        *b.deadline.lock_ignore_poison() =
                            Some((Instant::now() + drain, SystemTime::now() + drain));
                        r.draining.push(b.clone());
                        to_drain.push(b);
                    }
                    let mut members = members.into_iter();
                    r.current = members.next().expect("the primary is always wanted");
                    r.replicas = members.collect();
                    if !same_primary {
                        r.since = SystemTime::now();
                    }
                    if changed {
                        self.metrics.route_switched(service);
                    }
                }
                None => {
                    let mut members = wanted
                        .into_iter()
                        .map(|(u, up)| Backend::new(up, u, put.revision, put.kind));
                    let current = members.next().expect("the primary is always wanted");
                    routes.insert(
                        service.to_string(),
                        ServiceRoute::new(current, members.collect(), SystemTime::now()),
                    );
                    self.metrics.route_switched(service);
                }
            }
            Self::route_view(&routes[service])
        };
        tracing::info!(%service, upstream = %put.upstream, replicas = ?put.replicas, revision = ?put.revision, kind = ?put.kind, "route switched");
        for old in to_drain {
            tokio::spawn(self.clone().drain(service.to_string(), old));
        }
        Ok(view)
    }

    /// Wait until the old upstream holds nothing or the deadline passes (then end its streams).
    async fn drain(self: Arc<Self>, service: String, b: Arc<Backend>) {
        loop {
            // The deadline is read each time: switched back to, the upstream has none (this task
            // ends); drained again later, a newer task owns its new deadline and this one ends.
            let Some((deadline, _)) = *b.deadline.lock_ignore_poison() else {
                return;
            };
            let expired = Instant::now() >= deadline;
            let busy = b.busy();
            if busy == 0 || expired {
                let mut routes = self.routes.write_ignore_poison();
                let Some(r) = routes.get_mut(&service) else {
                    return;
                };
                let Some(i) = r.draining.iter().position(|d| Arc::ptr_eq(d, &b)) else {
                    return; // switched back to it: current again
                };
                r.draining.remove(i);
                b.retired.store(true, Ordering::SeqCst);
                if busy > 0 {
                    b.cancel.cancel();
                    self.metrics.drain_closed(&service, busy as u64);
                }
                self.affinity
                    .lock_ignore_poison()
                    .retain(|_, (p, _, _)| !Arc::ptr_eq(p, &b));
                tracing::info!(%service, upstream = %b.upstream, closed = busy, "drained");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The upstream for a request: its session's pin — only if that upstream serves this very
    /// service (current, replica or draining) — else the least busy healthy member of the route.
    #[cfg(test)]
    fn pick(&self, service: &str, session: Option<&str>) -> Option<Arc<Backend>> {
        self.pick_excluding(service, session, &[])
    }

    /// As [`Self::pick`], never one of `tried` (upstreams that already failed this request).
    fn pick_excluding(
        &self,
        service: &str,
        session: Option<&str>,
        tried: &[Arc<Backend>],
    ) -> Option<Arc<Backend>> {
        let routes = self.routes.read_ignore_poison();
        let route = routes.get(service)?;
        if let Some(id) = session {
            let mut pins = self.affinity.lock_ignore_poison();
            if let Some((b, seen, _)) = pins.get_mut(id) {
                if route.serves(b) && !b.retired.load(Ordering::SeqCst) {
                    *seen = Instant::now();
                    return Some(b.clone());
                }
            }
        }
        if route.replicas.is_empty() {
            return (!tried.iter().any(|t| Arc::ptr_eq(t, &route.current)))
                .then(|| route.current.clone());
        }
        route.balance(tried)
    }

    /// Whether requests without a session are balanced over several upstreams for `service`.
    fn balanced(&self, service: &str) -> bool {
        self.routes
            .read_ignore_poison()
            .get(service)
            .is_some_and(|r| !r.replicas.is_empty())
    }

    /// Every second: `GET /readyz` on each member of a route with replicas; one that does not
    /// answer 200 within a second is out of balancing until it does. (A route with one upstream
    /// has nowhere else to send requests: it is not probed.)
    async fn check_replicas(self: Arc<Self>) {
        let probe = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(READY_PROBE_TIMEOUT)
            .build()
            .expect("a client without TLS or proxy always builds");
        let mut tick = tokio::time::interval(READY_PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let members: Vec<(String, Arc<Backend>)> = self
                .routes
                .read_ignore_poison()
                .iter()
                .filter(|(_, r)| !r.replicas.is_empty())
                .flat_map(|(s, r)| {
                    r.members()
                        .map(|b| (s.clone(), b.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            let checks = members.into_iter().map(|(service, b)| {
                let probe = probe.clone();
                let edge = self.clone();
                async move {
                    let host = format!("mcp-{service}:{}", b.up.port());
                    let ok = probe
                        .get(b.up.url("/readyz"))
                        .header(header::HOST, host)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if ok {
                        b.mark_up();
                    } else if b.mark_down(READY_PROBE_EVERY * 3) {
                        edge.metrics.replica_down(&service, &b.upstream);
                        tracing::warn!(%service, upstream = %b.upstream, "replica not ready: out of balancing");
                    }
                }
            });
            futures::future::join_all(checks).await;
        }
    }

    /// Pin a session to `b`; `live` when an open stream holds it (unpinned when the stream ends).
    fn pin(&self, id: &str, b: &Arc<Backend>, live: bool) {
        self.affinity
            .lock_ignore_poison()
            .insert(id.to_string(), (b.clone(), Instant::now(), live));
    }

    fn unpin(&self, id: &str, b: &Arc<Backend>) {
        let mut pins = self.affinity.lock_ignore_poison();
        if pins.get(id).is_some_and(|(p, _, _)| Arc::ptr_eq(p, b)) {
            pins.remove(id);
        }
    }

    /// Forget pins of sessions idle for [`PIN_TTL`] (clients that never DELETE).
    fn sweep(&self) {
        self.affinity
            .lock_ignore_poison()
            .retain(|_, (_, seen, live)| *live || seen.elapsed() < PIN_TTL);
        for r in self.routes.read_ignore_poison().values() {
            for b in r.members().chain(r.draining.iter()) {
                b.http_sessions
                    .lock_ignore_poison()
                    .retain(|_, t| t.elapsed() < PIN_TTL);
            }
        }
    }

    /// What `GET /metrics` encodes: the counters, and the sessions each upstream holds now.
    fn metrics_registry(&self) -> prometheus_client::registry::Registry {
        let mut active = Vec::new();
        for (s, r) in self.routes.read_ignore_poison().iter() {
            for b in r.members().chain(r.draining.iter()) {
                active.push((s.clone(), b.upstream.clone(), b.sessions()));
            }
        }
        self.metrics.registry(active)
    }
}

/// The default gateway from /proc/net/route: inside a container, the host as the network sees it
/// (what connections through a published port come from).
fn default_gateway() -> Option<IpAddr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 2 && f[1] == "00000000" {
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            (gw != 0).then(|| IpAddr::from(gw.to_le_bytes()))
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Proxying.

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            to.append(k.clone(), v.clone());
        }
    }
}

fn error(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"error": msg}).to_string(),
    )
        .into_response()
}

/// Decrements a counter when the request (or its streamed response) ends.
struct Held(Arc<Backend>, fn(&Backend) -> &AtomicUsize);
impl Held {
    fn new(b: &Arc<Backend>, f: fn(&Backend) -> &AtomicUsize) -> Self {
        f(b).fetch_add(1, Ordering::SeqCst);
        Self(b.clone(), f)
    }
}
impl Drop for Held {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::SeqCst);
    }
}

/// The response body relay: upstream chunks to the client as they come, ended cleanly when the
/// backend's drain deadline passes; dropping it (client gone) drops the upstream response.
struct Relay {
    inner: futures::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    cancel: CancellationToken,
    scan: Option<EndpointScan>,
    edge: Arc<Edge>,
    backend: Arc<Backend>,
    service: String,
    sse_session: Option<String>,
    /// A GET event stream: at the drain deadline it ends cleanly (the client reconnects). Any
    /// other reply cut by the deadline is aborted, so the client sees the loss.
    event_stream: bool,
    _held: Vec<Held>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(id) = &self.sse_session {
            self.edge.unpin(id, &self.backend);
        }
    }
}

fn relay_body(r: Relay) -> Body {
    let s = futures::stream::unfold(Some(r), |state| async move {
        let mut r = state?;
        loop {
            let next = tokio::select! {
                biased;
                _ = r.cancel.cancelled() => {
                    if r.event_stream {
                        return None;
                    }
                    let cut = std::io::Error::other("the upstream was retired at its drain deadline");
                    return Some((Err(cut), None));
                }
                n = r.inner.next() => n,
            };
            match next {
                None => return None,
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
                Some(Ok(chunk)) => {
                    let Some(scan) = &mut r.scan else {
                        return Some((Ok(chunk), Some(r)));
                    };
                    let out = scan.push(&chunk);
                    if scan.done {
                        if let Some(id) = scan.session.clone() {
                            r.edge.pin(&id, &r.backend, true);
                            r.edge
                                .metrics
                                .session_opened(&r.service, &r.backend.upstream);
                            r.sse_session = Some(id);
                        }
                        r.scan = None;
                    }
                    if !out.is_empty() {
                        return Some((Ok(Bytes::from(out)), Some(r)));
                    }
                }
            }
        }
    });
    Body::from_stream(s)
}

/// Start of the error a switch returns when the routes file cannot be written.
const PERSIST_FAILED: &str = "cannot persist the routes";

/// Longest session id the edge tracks (the bridge's are 32 hex characters; mcp-proxy's UUIDs 32–36).
const MAX_SESSION_ID: usize = 128;
/// Longest drain a route switch may ask for (as the manifest's `edge.drain_timeout` bound).
const MAX_DRAIN_S: u64 = 3600;

fn plausible_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_SESSION_ID && id.bytes().all(|c| c.is_ascii_graphic())
}

/// A `.` or `..` segment in any spelling the upstream's URL parser resolves (joined to a route's
/// path prefix it would leave the prefix): `%2e` for a dot, and `\\` as a separator as well as `/`
/// (WHATWG URLs read a backslash as a slash in http(s) paths, and hyper accepts it in a request
/// target: `/..\\other` was forwarded to a sibling of the route's upstream path).
fn has_dot_segment(path: &str) -> bool {
    path.split(['/', '\\']).any(|seg| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    })
}

async fn forward(edge: Arc<Edge>, service: String, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path_q = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if has_dot_segment(parts.uri.path()) {
        return error(
            StatusCode::BAD_REQUEST,
            "`.` and `..` path segments are refused (they could leave the route's path prefix)"
                .into(),
        );
    }
    if parts.uri.path().contains('\\') {
        return error(
            StatusCode::BAD_REQUEST,
            "a backslash in the path is refused (URL parsers read it as `/`)".into(),
        );
    }
    let sse_session = query_session_id(parts.uri.query());
    let http_session = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    for id in sse_session.iter().chain(http_session.iter()) {
        if !plausible_session_id(id) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("a session id is at most {MAX_SESSION_ID} visible ASCII characters"),
            );
        }
    }
    let session = sse_session.as_deref().or(http_session.as_deref());
    // 2026-07-28 requests name their method and tool in headers: counted here (bodies are never
    // parsed at the edge), and a read-only one may be sent again to another replica.
    let mcp_method = parts
        .headers
        .get("mcp-method")
        .and_then(|v| v.to_str().ok());
    if let Some(m) = mcp_method {
        let name = parts.headers.get("mcp-name").and_then(|v| v.to_str().ok());
        edge.metrics.call(&service, m, name);
    }
    let has_body = parts.headers.contains_key(header::CONTENT_LENGTH)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    // Balanced over replicas, a request that opens no session can go to another replica when its
    // upstream cannot take it: its body is held for that (bounded; chunked or larger bodies are
    // streamed and go to one upstream only).
    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let reroutable = session.is_none()
        && edge.balanced(&service)
        && (!has_body || content_length.is_some_and(|n| n <= MAX_REROUTE_BODY));
    let mut body = Some(body);
    let held_body = if reroutable && has_body {
        match axum::body::to_bytes(
            body.take().expect("not taken yet"),
            MAX_REROUTE_BODY as usize,
        )
        .await
        {
            Ok(b) => Some(b),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                )
            }
        }
    } else {
        None
    };
    let safe_again =
        parts.method == Method::GET || mcp_method.is_some_and(|m| SAFE_METHODS.contains(&m));
    let mut tried: Vec<Arc<Backend>> = Vec::new();
    let (backend, resp, in_flight) = loop {
        let Some(backend) = edge.pick_excluding(&service, session, &tried) else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the edge has no route for `{service}` yet (mcpctl deploy sets it)"),
            );
        };
        let in_flight = Held::new(&backend, |b| &b.in_flight);
        // Only sessions the upstream issued (recorded from its response below) are refreshed: an
        // id a client makes up never enters the map.
        if let Some(id) = &http_session {
            if let Some(seen) = backend.http_sessions.lock_ignore_poison().get_mut(id) {
                *seen = Instant::now();
            }
        }
        edge.metrics.request(&service, &backend.upstream);

        let mut headers = HeaderMap::new();
        copy_headers(&parts.headers, &mut headers);
        if backend.kind == RouteKind::Stack {
            // The bridge admits loopback and its in-network name as Host (DNS-rebinding guard:
            // `--allow-host mcp-<service>:<container_port>`), and the upstream names that port.
            headers.insert(
                header::HOST,
                HeaderValue::from_str(&format!("mcp-{service}:{}", backend.up.port()))
                    .expect("service names are ASCII"),
            );
        }
        let mut rb = edge
            .client
            .request(parts.method.clone(), backend.up.url(&path_q))
            .headers(headers);
        if let Some(b) = &held_body {
            rb = rb.body(b.clone());
        } else if has_body {
            if let Some(b) = body.take() {
                rb = rb.body(reqwest::Body::wrap_stream(b.into_data_stream()));
            }
        }
        let sent = tokio::select! {
            r = rb.send() => r,
            _ = backend.cancel.cancelled() => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("`{service}`: upstream {} was retired at its drain deadline before it answered; retry", backend.upstream),
                );
            }
        };
        match sent {
            Ok(r) => break (backend, r, in_flight),
            Err(e) => {
                edge.metrics.upstream_error(&service, &backend.upstream);
                tracing::warn!(%service, upstream = %backend.upstream, error = %e, "upstream unreachable");
                if reroutable
                    && (e.is_connect() || e.is_timeout())
                    && backend.mark_down(UNREACHABLE_DOWN)
                {
                    edge.metrics.replica_down(&service, &backend.upstream);
                }
                // Never reached (nothing was delivered), or a request that only reads.
                let again = reroutable && (e.is_connect() || safe_again);
                tried.push(backend.clone());
                if again && tried.len() < MAX_UPSTREAMS {
                    if let Some(next) = edge.pick_excluding(&service, session, &tried) {
                        edge.metrics.rerouted(&service, &backend.upstream);
                        tracing::info!(%service, from = %backend.upstream, to = %next.upstream, "request re-routed to another replica");
                        continue;
                    }
                }
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "`{service}`: upstream {} unreachable: {e}",
                        backend.upstream
                    ),
                );
            }
        }
    };
    if let Some(id) = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        if http_session.as_deref() != Some(id) {
            edge.pin(id, &backend, false);
            edge.metrics.session_opened(&service, &backend.upstream);
            backend
                .http_sessions
                .lock_ignore_poison()
                .insert(id.to_string(), Instant::now());
        }
    }
    if parts.method == Method::DELETE {
        if let Some(id) = &http_session {
            edge.unpin(id, &backend);
            backend.http_sessions.lock_ignore_poison().remove(id);
        }
    }
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let legacy_open =
        streaming && parts.method == Method::GET && parts.uri.path().ends_with("/sse");
    let mut out = Response::builder().status(resp.status());
    // A stream counts as one open session (not also as a request in flight) while it lasts.
    let held = if streaming {
        let stream = Held::new(&backend, |b| &b.streams);
        drop(in_flight);
        vec![stream]
    } else {
        vec![in_flight]
    };
    {
        let h = out.headers_mut().expect("fresh builder");
        copy_headers(resp.headers(), h);
        if streaming {
            h.remove(header::CONTENT_LENGTH);
            // Tell intermediaries (nginx) not to buffer either.
            h.insert(
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            );
        }
    }
    let relay = Relay {
        inner: resp.bytes_stream().boxed(),
        cancel: backend.cancel.clone(),
        scan: legacy_open.then(|| EndpointScan::new(&backend.up.prefix)),
        edge: edge.clone(),
        backend: backend.clone(),
        service,
        sse_session: None,
        event_stream: streaming && parts.method == Method::GET,
        _held: held,
    };
    out.body(relay_body(relay))
        .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, e.to_string()))
}

/// Host `mcp-<service>[:port]` → service.
fn service_of_host(host: Option<&str>) -> Option<String> {
    let host = host?;
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    name.strip_prefix("mcp-").map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// DNS-rebinding guard.

/// Why a proxied request was refused before anything was forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No Host (HTTP/1.1 requires one: 400), several, or one that is not text.
    BadHost,
    /// A Host that names neither loopback at this port nor the service's in-network name (403).
    Host,
    /// An Origin that is neither loopback nor the service's in-network name (403).
    Origin,
}

/// Where a proxied request arrived: the service it goes to, the port of the listener it came in
/// on, and the edge's in-network port (the one `mcp-<service>` is reached at), if it has one.
#[derive(Debug, Clone, Copy)]
struct Arrival<'a> {
    service: &'a str,
    port: u16,
    internal: Option<u16>,
}

/// The edge's DNS-rebinding guard, decided before anything is rewritten: for `kind: stack` the edge
/// sends `Host: mcp-<service>:<upstream port>`, so the bridge's own Host check never sees the
/// client's.
/// The bridge's rules (`bridge::guard`), narrowed to the port the request came in on:
/// - Host: a loopback name (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`) without a port or
///   with this listener's port, or `mcp-<service>` with its in-network port (its `container_port`,
///   8080 by default: what the bridge admits with `--allow-host mcp-<service>:<port>`; no manifest
///   setting adds to it). Missing → 400.
/// - Origin (when present): loopback on any port, or `http(s)://mcp-<service>:<in-network port>`
///   (`guard::origin_allowed`); `null` and anything else are foreign.
fn admit(at: Arrival<'_>, host: Option<&str>, origin: Option<&str>) -> Result<(), Refusal> {
    use crate::bridge::guard;
    let in_network = at
        .internal
        .map(|p| guard::normalise(&format!("mcp-{}:{p}", at.service)));
    let authority = guard::normalise(host.ok_or(Refusal::BadHost)?);
    let name = guard::host_of(&authority);
    let port: Option<u16> = match &authority[name.len()..] {
        "" => None,
        rest => match rest.strip_prefix(':') {
            Some(p) if p.bytes().all(|c| c.is_ascii_digit()) => {
                Some(p.parse().map_err(|_| Refusal::Host)?)
            }
            _ => return Err(Refusal::Host),
        },
    };
    let host_ok = (guard::loopback(name) && port.is_none_or(|p| p == at.port))
        || in_network.as_deref() == Some(authority.as_str());
    if !host_ok {
        return Err(Refusal::Host);
    }
    if let Some(o) = origin {
        if !guard::origin_allowed(o, &[], in_network.as_slice()) {
            return Err(Refusal::Origin);
        }
    }
    Ok(())
}

/// [`admit`] on a request's headers: exactly one Host, which must be text; every `Origin` given
/// must be allowed (one that is not text is foreign); an absolute-form request target's authority
/// must pass the Host rule too.
fn admit_request(at: Arrival<'_>, headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => Some(h.to_str().map_err(|_| Refusal::BadHost)?),
        (None, _) => None,
        (Some(_), Some(_)) => return Err(Refusal::BadHost),
    };
    admit(at, host, None)?;
    if let Some(a) = uri.authority() {
        admit(at, Some(a.as_str()), None)?;
    }
    for o in headers.get_all(header::ORIGIN) {
        admit(at, host, Some(o.to_str().map_err(|_| Refusal::Origin)?))?;
    }
    Ok(())
}

/// The guard in front of [`forward`]: `None` lets the request through; a refusal is logged,
/// counted (`mcp_edge_refused_total`) and answered in plain text with `Connection: close` (the
/// body is never read, so the connection is not reused).
fn guard(edge: &Edge, at: Arrival<'_>, req: &Request) -> Option<Response> {
    let refusal = admit_request(at, req.headers(), req.uri()).err()?;
    let (status, text) = match refusal {
        Refusal::BadHost => (
            StatusCode::BAD_REQUEST,
            "Bad Request: missing or invalid Host",
        ),
        Refusal::Host => (StatusCode::FORBIDDEN, "Forbidden: foreign Host"),
        Refusal::Origin => (StatusCode::FORBIDDEN, "Forbidden: foreign Origin"),
    };
    edge.metrics.refused(match refusal {
        Refusal::Origin => Refused::Origin,
        Refusal::BadHost | Refusal::Host => Refused::Host,
    });
    tracing::debug!(
        service = at.service,
        port = at.port,
        path = %req.uri().path(),
        host = ?req.headers().get(header::HOST),
        origin = ?req.headers().get(header::ORIGIN),
        "refused: {text}"
    );
    Some(
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CONNECTION, "close"),
            ],
            text,
        )
            .into_response(),
    )
}

// ---------------------------------------------------------------------------------------------
// Admin API.

fn admin_allowed(edge: &Edge, peer: &SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    };
    ip.is_loopback() || edge.admin_peers.contains(&ip)
}

fn forbidden() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "the admin API answers loopback only".into(),
    )
}

/// The admin API's state: the edge, and the token every route-reading or -switching request
/// must present (`Authorization: Bearer <token>`; compared as SHA-256 digests in constant time,
/// [`guard::Token`]).
#[derive(Clone)]
struct Admin {
    edge: Arc<Edge>,
    token: Arc<guard::Token>,
}

/// Peer first (403 for anyone but the host), then the token: a missing or wrong one → 401 with a
/// JSON reason and `WWW-Authenticate: Bearer`, counted as
/// `mcp_edge_refused_total{reason="admin_unauthorized"}`.
fn admin_refusal(admin: &Admin, peer: &SocketAddr, headers: &HeaderMap) -> Option<Response> {
    if !admin_allowed(&admin.edge, peer) {
        return Some(forbidden());
    }
    let given = match headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .collect::<Vec<_>>()[..]
    {
        [one] => one.to_str().ok(),
        _ => None,
    };
    if admin.token.matches(given) {
        return None;
    }
    admin.edge.metrics.refused(Refused::AdminUnauthorized);
    tracing::debug!("admin API: refused a request without the admin token");
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        format!(
            "{} the edge admin token: send `Authorization: Bearer <token>` (the token is the \
             file edge/admin.token in mcpctl's state directory)",
            if given.is_some() {
                "wrong or malformed"
            } else {
                "missing"
            }
        ),
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(resp)
}

async fn get_routes(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = admin_refusal(&admin, &peer, &headers) {
        return refused;
    }
    Json(admin.edge.view()).into_response()
}

async fn get_route(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Response {
    if let Some(refused) = admin_refusal(&admin, &peer, &headers) {
        return refused;
    }
    match admin.edge.view().routes.remove(&service) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no route for `{service}`")),
    }
}

async fn put_route(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(service): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = admin_refusal(&admin, &peer, &headers) {
        return refused;
    }
    let put: PutRoute = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("route body: {e}")),
    };
    match admin.edge.switch(&service, put) {
        Ok(v) => Json(v).into_response(),
        Err(e) if e.starts_with("no service") => error(StatusCode::NOT_FOUND, e),
        Err(e) if e.starts_with(PERSIST_FAILED) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /metrics` needs no token (like the bridges' `/metrics`): read-only counters that the
/// host's Prometheus scrapes without credentials; the peer rule still applies.
async fn metrics(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !admin_allowed(&admin.edge, &peer) {
        return forbidden();
    }
    crate::metrics::response(&admin.edge.metrics_registry())
}

/// The admin API. `/healthz` (`ok`, nothing else) and `/metrics` answer without the token:
/// `edge up`/`replace` wait on `/healthz` and measure the swap gap with it, Prometheus scrapes
/// `/metrics`; everything that reads or moves routes needs `token`.
pub fn admin_router(edge: Arc<Edge>, token: Arc<guard::Token>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/routes", get(get_routes))
        .route("/routes/{service}", get(get_route).put(put_route))
        .route("/metrics", get(metrics))
        .with_state(Admin { edge, token })
}

/// A listener for one service (a published port, `port`): every request goes to that service,
/// once its Host and Origin pass the guard. `internal`: the edge's in-network port, if any.
pub fn service_router(
    edge: Arc<Edge>,
    service: String,
    port: u16,
    internal: Option<u16>,
) -> Router {
    Router::new().fallback(move |req: Request| {
        let (edge, service) = (edge.clone(), service.clone());
        async move {
            let at = Arrival {
                service: &service,
                port,
                internal,
            };
            if let Some(refused) = guard(&edge, at, &req) {
                return refused;
            }
            forward(edge, service, req).await
        }
    })
}

/// An in-network listener (8080, or a service's own `container_port`; `port`): the service comes
/// from the Host header `mcp-<service>`, which must then carry this port, and this port must be
/// that service's in-network port (`ports`), else the guard refuses it.
pub fn host_router(edge: Arc<Edge>, port: u16, ports: Arc<BTreeMap<String, u16>>) -> Router {
    Router::new().fallback(move |req: Request| {
        let (edge, ports) = (edge.clone(), ports.clone());
        async move {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match service_of_host(host.as_deref()) {
                Some(s) if edge.services.contains(&s) => {
                    let at = Arrival {
                        service: &s,
                        port,
                        internal: (ports.get(&s) == Some(&port)).then_some(port),
                    };
                    if let Some(refused) = guard(&edge, at, &req) {
                        return refused;
                    }
                    forward(edge, s, req).await
                }
                _ => error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "Host {:?} names no service of this edge (use mcp-<service>:<its container_port>, 8080 by default)",
                        host.unwrap_or_default()
                    ),
                ),
            }
        }
    })
}

/// Responses are written as headers, then body chunks: without TCP_NODELAY, Nagle holds each
/// chunk until the client's (delayed, ~40 ms) ACK of the headers.
fn nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// What `serve` listens on.
pub struct Listeners {
    /// (service, address) for each published port.
    pub services: Vec<(String, SocketAddr)>,
    /// In-network Host routing (all services), usually 0.0.0.0:8080.
    pub internal: Option<SocketAddr>,
    /// Services whose in-network port is not `internal`'s (their bridge's `container_port`):
    /// `mcp-<service>` is reached at this address's port, where the edge routes by Host too.
    pub in_network: Vec<(String, SocketAddr)>,
    pub admin: SocketAddr,
    /// The admin API's bearer token.
    pub admin_token: Arc<guard::Token>,
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{what} {addr}: {e}"))
}

/// Bind every listener, then serve until the process ends. Returns when a listener fails.
pub async fn run(edge: Arc<Edge>, l: Listeners) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let admin = bind("admin", l.admin).await?;
    let app = admin_router(edge.clone(), l.admin_token.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    tasks.spawn(async move { axum::serve(admin, app).await });
    // The in-network listeners first: a service's in-network port is part of its guard.
    let mut host_listeners = Vec::new();
    let mut ports = BTreeMap::new();
    if let Some(addr) = l.internal {
        let lis = bind("internal", addr).await?;
        let port = lis.local_addr()?.port();
        for s in &edge.services {
            ports.insert(s.clone(), port);
        }
        host_listeners.push((lis, port));
    }
    let published: BTreeMap<u16, &str> = l
        .services
        .iter()
        .map(|(s, a)| (a.port(), s.as_str()))
        .collect();
    for (service, addr) in &l.in_network {
        anyhow::ensure!(
            edge.services.contains(service),
            "--in-network-port {service}: not a service of this edge"
        );
        anyhow::ensure!(addr.port() != 0, "--in-network-port {service}: port 0");
        ports.insert(service.clone(), addr.port());
        if host_listeners.iter().any(|(_, p)| *p == addr.port()) {
            continue;
        }
        match published.get(&addr.port()) {
            // Its own published port is its in-network port too: that listener admits
            // `mcp-<service>:<port>` already, and sends everything to it.
            Some(s) if s == service => continue,
            Some(other) => anyhow::bail!(
                "--in-network-port {service}={}: the published port of `{other}`",
                addr.port()
            ),
            None => {}
        }
        let lis = bind(&format!("{service} in-network"), *addr).await?;
        host_listeners.push((lis, addr.port()));
    }
    let ports = Arc::new(ports);
    for (lis, port) in host_listeners {
        let app = host_router(edge.clone(), port, ports.clone());
        let lis = lis.tap_io(nodelay);
        tasks.spawn(async move { axum::serve(lis, app).await });
    }
    for (service, addr) in l.services {
        let lis = bind(&service, addr).await?;
        let port = lis.local_addr()?.port();
        let internal = ports.get(&service).copied();
        let app = service_router(edge.clone(), service, port, internal);
        let lis = lis.tap_io(nodelay);
        tasks.spawn(async move { axum::serve(lis, app).await });
    }
    let sweeper = edge.clone();
    tasks.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            sweeper.sweep();
        }
    });
    let checker = edge.clone();
    tasks.spawn(async move {
        checker.check_replicas().await;
        Ok(())
    });
    tracing::info!("edge listening");
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(anyhow::anyhow!("listener failed: {e}")),
        Some(Err(e)) => Err(anyhow::anyhow!("listener task: {e}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_services() {
        assert_eq!(
            service_of_host(Some("mcp-fetch:8080")).as_deref(),
            Some("fetch")
        );
        assert_eq!(service_of_host(Some("mcp-fetch")).as_deref(), Some("fetch"));
        assert_eq!(service_of_host(Some("127.0.0.1:8501")), None);
        assert_eq!(service_of_host(None), None);
    }

    const ALPHA: Arrival<'static> = Arrival {
        service: "alpha",
        port: 8501,
        internal: Some(8080),
    };

    type Verdict = Result<(), Refusal>;

    #[test]
    fn the_guard_admits_loopback_at_this_port_and_the_in_network_name_only() {
        use Refusal::{BadHost, Host, Origin};
        let loopback = Some("127.0.0.1:8501");
        #[rustfmt::skip]
        let table: &[(Option<&str>, Option<&str>, Verdict)] = &[
            // Hosts the edge admits on alpha's published port 8501 (in-network port 8080).
            (Some("localhost:8501"), None, Ok(())),
            (Some("127.0.0.1:8501"), None, Ok(())),
            (Some("[::1]:8501"), None, Ok(())),
            (Some("localhost"), None, Ok(())),
            (Some("127.0.0.1"), None, Ok(())),
            (Some("[::1]"), None, Ok(())),
            (Some("LocalHost:8501"), None, Ok(())),
            (Some("mcp-alpha:8080"), None, Ok(())),
            (Some("MCP-Alpha:8080"), None, Ok(())),
            // Origins it admits (loopback on any port, the in-network name).
            (loopback, Some("http://localhost:3000"), Ok(())),
            (loopback, Some("http://127.0.0.1:8501"), Ok(())),
            (loopback, Some("https://[::1]"), Ok(())),
            (Some("mcp-alpha:8080"), Some("http://mcp-alpha:8080"), Ok(())),
            // Foreign Hosts.
            (Some("evil.example:8501"), None, Err(Host)),
            (Some("evil.example"), None, Err(Host)),
            (Some("127.0.0.1.evil.example"), None, Err(Host)),
            (Some("127.0.0.1.evil.example:8501"), None, Err(Host)),
            (Some("localhost.evil.example:8501"), None, Err(Host)),
            (Some("localhost:9999"), None, Err(Host)),
            (Some("127.0.0.1:80"), None, Err(Host)),
            (Some("[::1]:9999"), None, Err(Host)),
            (Some("localhost:"), None, Err(Host)),
            (Some("localhost:+8501"), None, Err(Host)),
            (Some("localhost:99999"), None, Err(Host)),
            (Some("[::1]x:8501"), None, Err(Host)),
            (Some("mcp-alpha"), None, Err(Host)),
            (Some("mcp-alpha:8501"), None, Err(Host)),
            (Some("mcp-beta:8080"), None, Err(Host)),
            (Some(""), None, Err(Host)),
            (Some("evil.example:8501"), Some("http://evil.example:8501"), Err(Host)),
            // No Host: HTTP/1.1 requires one (RFC 9112 §3.2: 400).
            (None, None, Err(BadHost)),
            // Foreign Origins behind an admitted Host.
            (loopback, Some("http://evil.example"), Err(Origin)),
            (loopback, Some("http://evil.example:8501"), Err(Origin)),
            (loopback, Some("http://127.0.0.1.evil.example:8501"), Err(Origin)),
            (loopback, Some("http://localhost.evil.example"), Err(Origin)),
            (loopback, Some("null"), Err(Origin)),
            (loopback, Some(""), Err(Origin)),
            (loopback, Some("file://localhost"), Err(Origin)),
            (loopback, Some("http://mcp-alpha:9999"), Err(Origin)),
            (loopback, Some("http://mcp-beta:8080"), Err(Origin)),
        ];
        for (host, origin, want) in table {
            assert_eq!(
                admit(ALPHA, *host, *origin),
                *want,
                "Host {host:?}, Origin {origin:?}"
            );
        }
        // Without an in-network listener `mcp-alpha` names nothing of this edge.
        let bare = Arrival {
            internal: None,
            ..ALPHA
        };
        assert_eq!(admit(bare, Some("mcp-alpha:8080"), None), Err(Host));
        assert_eq!(
            admit(bare, loopback, Some("http://mcp-alpha:8080")),
            Err(Origin)
        );
        // On the in-network listener, its own port is the one a loopback Host may carry.
        let inside = Arrival {
            port: 8080,
            ..ALPHA
        };
        assert_eq!(admit(inside, Some("mcp-alpha:8080"), None), Ok(()));
        assert_eq!(admit(inside, Some("mcp-alpha:9999"), None), Err(Host));
    }

    #[test]
    fn the_guard_reads_every_host_and_origin_a_request_carries() {
        let req = |uri: &str, headers: &[(&str, &[u8])]| {
            let mut b = axum::http::Request::builder().uri(uri);
            for (k, v) in headers {
                b = b.header(*k, HeaderValue::from_bytes(v).unwrap());
            }
            b.body(Body::empty()).unwrap()
        };
        let check = |r: &Request| admit_request(ALPHA, r.headers(), r.uri());
        let host: (&str, &[u8]) = ("host", b"127.0.0.1:8501");
        assert_eq!(check(&req("/sse", &[host])), Ok(()));
        assert_eq!(check(&req("/sse", &[])), Err(Refusal::BadHost));
        assert_eq!(
            check(&req("/sse", &[host, ("host", b"evil.example:8501")])),
            Err(Refusal::BadHost),
            "two Hosts"
        );
        assert_eq!(
            check(&req("/sse", &[("host", b"local\xffhost:8501")])),
            Err(Refusal::BadHost)
        );
        assert_eq!(
            check(&req("http://evil.example:8501/sse", &[host])),
            Err(Refusal::Host),
            "an absolute-form target names the host as well"
        );
        assert_eq!(check(&req("http://localhost:8501/sse", &[host])), Ok(()));
        assert_eq!(
            check(&req(
                "/mcp",
                &[
                    host,
                    ("origin", b"http://localhost:3000"),
                    ("origin", b"http://evil.example")
                ]
            )),
            Err(Refusal::Origin),
            "every Origin is checked"
        );
        assert_eq!(
            check(&req("/mcp", &[host, ("origin", b"http://\xff")])),
            Err(Refusal::Origin)
        );
    }

    #[tokio::test]
    async fn a_refusal_is_plain_text_closes_and_is_counted() {
        let e = edge();
        let req = |host: &str, origin: Option<&str>| {
            let mut b = axum::http::Request::builder()
                .uri("/mcp")
                .header("host", host);
            if let Some(o) = origin {
                b = b.header("origin", o);
            }
            b.body(Body::empty()).unwrap()
        };
        assert!(guard(&e, ALPHA, &req("localhost:8501", None)).is_none());
        for (r, status, text) in [
            (
                req("evil.example:8501", None),
                403,
                "Forbidden: foreign Host",
            ),
            (req("localhost:9999", None), 403, "Forbidden: foreign Host"),
            (
                req("localhost:8501", Some("http://evil.example")),
                403,
                "Forbidden: foreign Origin",
            ),
            (
                axum::http::Request::builder()
                    .uri("/sse")
                    .body(Body::empty())
                    .unwrap(),
                400,
                "Bad Request: missing or invalid Host",
            ),
        ] {
            let resp = guard(&e, ALPHA, &r).expect("refused");
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[header::CONNECTION], "close");
            assert!(resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain"));
            let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
            assert_eq!(body, text);
        }
        let m = crate::metrics::encode(&e.metrics_registry()).unwrap();
        assert!(
            m.contains("mcp_edge_refused_total{reason=\"host\"} 3"),
            "{m}"
        );
        assert!(
            m.contains("mcp_edge_refused_total{reason=\"origin\"} 1"),
            "{m}"
        );
    }

    /// Every route-reading or -switching admin request needs the token (compared by
    /// `guard::Token`, constant time over SHA-256 digests); `/healthz` and `/metrics` do not.
    /// Refusals are 401 JSON with `WWW-Authenticate: Bearer`, counted as `admin_unauthorized`.
    #[tokio::test]
    async fn the_admin_api_needs_its_token() {
        let e = edge();
        let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let lis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", lis.local_addr().unwrap());
        let app = admin_router(e.clone(), Arc::new(guard::Token::new(secret)))
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(lis, app).await });
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = serde_json::json!({"upstream": "http://127.0.0.1:9", "revision": 1});
        let wrong = [
            None,
            Some("Bearer wrong".to_string()),
            Some(format!("Bearer {}", &secret[..63])),
            Some(format!("Bearer {secret}0")),
            Some(format!("Basic {secret}")),
            Some(secret.to_string()),
        ];
        for auth in &wrong {
            for put in [false, true] {
                let mut rb = if put {
                    http.put(format!("{base}/routes/alpha")).json(&body)
                } else {
                    http.get(format!("{base}/routes"))
                };
                if let Some(a) = auth {
                    rb = rb.header(header::AUTHORIZATION, a);
                }
                let r = rb.send().await.unwrap();
                assert_eq!(r.status(), 401, "{auth:?} put={put}");
                assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
                let j: serde_json::Value = r.json().await.unwrap();
                let why = j["error"].as_str().unwrap();
                assert!(why.contains("admin token"), "{why}");
                assert!(!why.contains(secret), "{why}");
            }
        }
        assert!(
            e.view().routes.is_empty(),
            "no refused PUT switched anything"
        );
        // Two headers, one of them right: refused too.
        let r = http
            .get(format!("{base}/routes"))
            .header(header::AUTHORIZATION, format!("Bearer {secret}"))
            .header(header::AUTHORIZATION, "Bearer wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // The right token (the scheme in any case) is served.
        let client = super::super::admin::AdminClient::at(&base).with_token(secret);
        client
            .put("alpha", &put("http://127.0.0.1:9", 1))
            .await
            .unwrap();
        assert_eq!(
            client.route("alpha").await.unwrap().unwrap().revision,
            Some(1)
        );
        let r = http
            .get(format!("{base}/routes/alpha"))
            .header(header::AUTHORIZATION, format!("bearer {secret}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A client with the wrong token gets an error saying what to do; without one, why.
        let err = super::super::admin::AdminClient::at(&base)
            .with_token("nope")
            .routes()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("401") && err.contains("edge replace"), "{err}");
        let err = super::super::admin::AdminClient::at(&base)
            .routes()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no edge admin token"), "{err}");

        // Probes stay open; the refusals are counted.
        let ok = |p: &str| http.get(format!("{base}{p}")).send();
        assert_eq!(ok("/healthz").await.unwrap().text().await.unwrap(), "ok");
        let m = ok("/metrics").await.unwrap().text().await.unwrap();
        let refused = 2 * wrong.len() + 1 + 1;
        assert!(
            m.contains(&format!(
                "mcp_edge_refused_total{{reason=\"admin_unauthorized\"}} {refused}\n"
            )),
            "{m}"
        );
        assert!(
            m.contains("mcp_edge_refused_total{reason=\"host\"} 0\n"),
            "{m}"
        );
    }

    fn edge() -> Arc<Edge> {
        Edge::new(
            BTreeSet::from(["alpha".to_string()]),
            None,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn dot_segments_and_implausible_session_ids_are_recognised() {
        for p in [
            "/../x",
            "/a/./sse",
            "/%2e%2e/servers/other/sse",
            "/%2E/x",
            "/.%2e/x",
        ] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in [
            "/sse",
            "/messages/",
            "/mcp",
            "/servers/fetch/sse",
            "/a..b/c",
        ] {
            assert!(!has_dot_segment(p), "{p}");
        }
        assert!(plausible_session_id("0123456789abcdef0123456789abcdef"));
        assert!(!plausible_session_id(""));
        assert!(!plausible_session_id(&"a".repeat(MAX_SESSION_ID + 1)));
        assert!(!plausible_session_id("a b"));
    }

    #[tokio::test]
    async fn a_switch_that_cannot_be_persisted_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = Edge::new(
            ["alpha".to_string()].into(),
            Some(dir.path().join("missing-dir").join("routes.json")),
            Duration::from_secs(1),
        )
        .unwrap();
        let err = e.switch("alpha", put("http://a:8080", 1)).unwrap_err();
        assert!(err.starts_with(PERSIST_FAILED), "{err}");
        assert!(e.pick("alpha", None).is_none(), "no route was set");
    }

    #[tokio::test]
    async fn a_pin_never_crosses_services() {
        let e = Edge::new(
            ["alpha".to_string(), "beta".to_string()].into(),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        e.switch("alpha", put("http://a:8080", 1)).unwrap();
        e.switch("beta", put("http://b:8080", 1)).unwrap();
        let beta = e.pick("beta", None).unwrap();
        e.pin("s1", &beta, false);
        assert_eq!(
            e.pick("beta", Some("s1")).unwrap().upstream,
            "http://b:8080"
        );
        assert_eq!(
            e.pick("alpha", Some("s1")).unwrap().upstream,
            "http://a:8080",
            "beta's session id on alpha's port goes to alpha's route"
        );
    }

    fn put(up: &str, rev: u64) -> PutRoute {
        PutRoute {
            upstream: up.into(),
            revision: Some(rev),
            kind: RouteKind::Stack,
            drain_timeout_s: None,
            replicas: vec![],
        }
    }

    #[tokio::test]
    async fn a_switch_to_a_set_keeps_shared_members_and_drains_the_rest() {
        let e = edge();
        let mut set = put("http://a:8080", 1);
        set.replicas = vec!["http://b:8080".into()];
        let v = e.switch("alpha", set).unwrap();
        assert_eq!(v.replicas, vec!["http://b:8080".to_string()]);
        let b = e.routes.read().unwrap()["alpha"].replicas[0].clone();
        e.pin("s1", &b, false);
        let _stream = Held::new(&b, |b| &b.streams);
        // Rolling: c takes a's place; b stays a member with its session and counts.
        let mut next = put("http://c:8080", 2);
        next.replicas = vec!["http://b:8080".into()];
        let v = e.switch("alpha", next).unwrap();
        assert_eq!(v.upstream, "http://c:8080");
        assert_eq!(v.replicas, vec!["http://b:8080".to_string()]);
        assert_eq!(
            v.draining
                .iter()
                .map(|d| d.upstream.as_str())
                .collect::<Vec<_>>(),
            ["http://a:8080"]
        );
        assert!(Arc::ptr_eq(
            &e.routes.read().unwrap()["alpha"].replicas[0],
            &b
        ));
        assert!(Arc::ptr_eq(&e.pick("alpha", Some("s1")).unwrap(), &b));
        assert_eq!(b.revision(), Some(2));
        // Duplicates and too many upstreams are refused, and change nothing.
        let mut dup = put("http://c:8080", 3);
        dup.replicas = vec!["http://c:8080".into()];
        assert!(e.switch("alpha", dup).unwrap_err().contains("named twice"));
        let mut many = put("http://c:8080", 3);
        many.replicas = (0..MAX_UPSTREAMS)
            .map(|i| format!("http://r{i}:8080"))
            .collect();
        assert!(e.switch("alpha", many).unwrap_err().contains("at most"));
        assert_eq!(e.view().routes["alpha"].revision, Some(2));
        // Back to one upstream: the replica drains, keeping its pinned session meanwhile.
        let v = e.switch("alpha", put("http://c:8080", 2)).unwrap();
        assert!(v.replicas.is_empty());
        assert!(v.draining.iter().any(|d| d.upstream == "http://b:8080"));
        assert!(Arc::ptr_eq(&e.pick("alpha", Some("s1")).unwrap(), &b));
    }

    /// An upstream that answers with its own name, and opens a session when asked.
    async fn named_upstream(name: &'static str) -> String {
        let lis = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = lis.local_addr().unwrap().port();
        let app = Router::new()
            .route("/readyz", get(|| async { "ready" }))
            .fallback(move |headers: HeaderMap| async move {
                let mut r = name.into_response();
                if headers.contains_key("x-open-session") {
                    r.headers_mut().insert(
                        "mcp-session-id",
                        HeaderValue::from_str(&format!("session-{name}")).unwrap(),
                    );
                }
                r
            });
        tokio::spawn(async move { axum::serve(lis, app).await });
        format!("http://127.0.0.1:{port}")
    }

    /// Balanced over replicas: requests without a session spread over the healthy ones, a session
    /// stays on the replica that opened it, a replica that refuses connections costs no request
    /// (re-routed, then out of balancing until its /readyz answers), and the edge counts calls
    /// by their `Mcp-Method`/`Mcp-Name` headers.
    #[tokio::test]
    async fn replicas_are_balanced_sessions_stay_and_a_dead_one_is_routed_around() {
        let (a, b) = (named_upstream("A").await, named_upstream("B").await);
        let dead = format!("http://127.0.0.1:{}", free_port());
        let e = edge();
        let mut set = put(&a, 1);
        set.replicas = vec![b.clone(), dead.clone()];
        e.switch("alpha", set).unwrap();
        let published = free_port();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let listeners = Listeners {
            services: vec![("alpha".into(), SocketAddr::new(ip, published))],
            internal: None,
            in_network: vec![],
            admin: SocketAddr::new(ip, 0),
            admin_token: Arc::new(guard::Token::new("t")),
        };
        tokio::spawn(run(e.clone(), listeners));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://127.0.0.1:{published}/mcp");
        let deadline = Instant::now() + Duration::from_secs(5);
        while http.get(&url).send().await.is_err() {
            assert!(Instant::now() < deadline, "the edge did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut seen = BTreeMap::<String, usize>::new();
        for i in 0..40 {
            let r = http
                .post(&url)
                .header("mcp-method", "tools/call")
                .header("mcp-name", if i % 2 == 0 { "echo" } else { "bad name!" })
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "request {i} failed");
            *seen.entry(r.text().await.unwrap()).or_default() += 1;
        }
        assert_eq!(seen.len(), 2, "both live replicas served: {seen:?}");
        assert!(seen.values().all(|n| *n >= 10), "spread: {seen:?}");
        let view = e.view();
        assert_eq!(view.routes["alpha"].unhealthy, vec![dead.clone()]);
        // A session stays where it opened.
        let open = http
            .post(&url)
            .header("x-open-session", "1")
            .send()
            .await
            .unwrap();
        let id = open.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let home = open.text().await.unwrap();
        for _ in 0..10 {
            let r = http
                .post(&url)
                .header("mcp-session-id", &id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.text().await.unwrap(), home);
        }
        // The only replica believed healthy refuses the connection: the request still succeeds
        // on another one (it was never delivered, so it is safe to send again), and is counted.
        let dead2 = format!("http://127.0.0.1:{}", free_port());
        let mut set = put(&dead2, 2);
        set.replicas = vec![a.clone()];
        e.switch("alpha", set).unwrap();
        e.routes.read().unwrap()["alpha"].replicas[0].mark_down(Duration::from_secs(30));
        let r = http
            .post(&url)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status().as_u16(), r.text().await.unwrap()),
            (200, "A".to_string())
        );
        let text = crate::metrics::encode(&e.metrics_registry()).unwrap();
        assert!(
            text.contains(&format!(
                "mcp_edge_rerouted_total{{service=\"alpha\",upstream=\"{dead2}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains(
            "mcp_edge_calls_total{service=\"alpha\",method=\"tools/call\",name=\"echo\"} 21"
        ));
        assert!(text.contains(
            "mcp_edge_calls_total{service=\"alpha\",method=\"tools/call\",name=\"_invalid\"} 20"
        ));
        // The readiness probe keeps an unreachable replica out, and brings a ready one back.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(e.view().routes["alpha"].unhealthy, vec![dead2]);
        let _ = dead;
    }

    #[test]
    fn call_names_are_bounded_per_service() {
        let m = EdgeMetrics::default();
        for i in 0..300 {
            m.call("alpha", "tools/call", Some(&format!("t{i}")));
        }
        m.call("alpha", "made/up", None);
        let text = crate::metrics::encode(&m.registry(Vec::new())).unwrap();
        let names = text
            .lines()
            .filter(|l| l.starts_with("mcp_edge_calls_total{"))
            .count();
        assert_eq!(names, 128 + 1 + 1, "128 names, _other, and method other");
        assert!(text.contains("name=\"_other\"} 172"));
        assert!(text.contains("method=\"other\",name=\"\"} 1"));
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A stack route's upstream gets `Host: mcp-<service>:<its port>` (what its bridge admits
    /// with `--allow-host mcp-<service>:<container_port>`); a service with its own in-network
    /// port is reached there by Host, and only there.
    #[tokio::test]
    async fn the_upstream_host_names_its_port_and_in_network_ports_are_per_service() {
        // The upstream answers with the Host it received.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_port = up.local_addr().unwrap().port();
        let app = Router::new().fallback(|headers: HeaderMap| async move {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_string()
        });
        tokio::spawn(async move { axum::serve(up, app).await });

        let e = Edge::new(
            BTreeSet::from(["alpha".to_string(), "beta".to_string()]),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        let upstream = format!("http://127.0.0.1:{up_port}");
        e.switch("alpha", put(&upstream, 1)).unwrap();
        e.switch("beta", put(&upstream, 1)).unwrap();
        let (published, internal, beta_in) = (free_port(), free_port(), free_port());
        let ip = IpAddr::from([127, 0, 0, 1]);
        let listeners = Listeners {
            services: vec![("alpha".into(), SocketAddr::new(ip, published))],
            internal: Some(SocketAddr::new(ip, internal)),
            in_network: vec![("beta".into(), SocketAddr::new(ip, beta_in))],
            admin: SocketAddr::new(ip, 0),
            admin_token: Arc::new(guard::Token::new("t")),
        };
        tokio::spawn(run(e, listeners));

        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |port: u16, host: Option<String>| {
            let http = http.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let mut rb = http.get(format!("http://127.0.0.1:{port}/mcp"));
                    if let Some(h) = &host {
                        rb = rb.header(header::HOST, h);
                    }
                    match rb.send().await {
                        Ok(r) => return (r.status().as_u16(), r.text().await.unwrap()),
                        Err(e) => assert!(Instant::now() < deadline, "{port}: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let want = |s: &str| (200, format!("mcp-{s}:{up_port}"));
        // A client on the published port (its own Host, 127.0.0.1:<port>).
        assert_eq!(get(published, None).await, want("alpha"));
        // In-network: alpha at the default port, beta at its own.
        assert_eq!(
            get(internal, Some(format!("mcp-alpha:{internal}"))).await,
            want("alpha")
        );
        assert_eq!(
            get(beta_in, Some(format!("mcp-beta:{beta_in}"))).await,
            want("beta")
        );
        assert_eq!(
            get(published, Some(format!("mcp-alpha:{internal}"))).await,
            want("alpha"),
            "the in-network name on the published port"
        );
        // Each service only at its own in-network port.
        for (port, host) in [
            (internal, format!("mcp-beta:{internal}")),
            (internal, format!("mcp-beta:{beta_in}")),
            (beta_in, format!("mcp-alpha:{beta_in}")),
            (beta_in, format!("mcp-alpha:{internal}")),
        ] {
            let (status, _) = get(port, Some(host.clone())).await;
            assert_eq!(status, 403, "{host} at {port}");
        }
    }

    #[tokio::test]
    async fn a_switch_pins_old_sessions_and_drains_them() {
        let e = edge();
        assert!(e.switch("beta", put("http://a:8080", 1)).is_err());
        let mut long = put("http://a:8080", 1);
        long.drain_timeout_s = Some(u64::MAX);
        assert!(
            e.switch("alpha", long).is_err(),
            "an overflowing drain is refused"
        );
        e.switch("alpha", put("http://a:8080", 1)).unwrap();
        let a = e.pick("alpha", None).unwrap();
        e.pin("s1", &a, false);
        let stream = Held::new(&a, |b| &b.streams);
        let v = e.switch("alpha", put("http://b:8080", 2)).unwrap();
        assert_eq!(
            (v.upstream.as_str(), v.revision),
            ("http://b:8080", Some(2))
        );
        assert_eq!(v.draining.len(), 1);
        assert_eq!(v.draining[0].sessions, 1);
        // New sessions go to b; the pinned one stays on a.
        assert_eq!(e.pick("alpha", None).unwrap().upstream, "http://b:8080");
        assert_eq!(
            e.pick("alpha", Some("s1")).unwrap().upstream,
            "http://a:8080"
        );
        // The session ends: the drain finishes before the deadline.
        drop(stream);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(e.view().routes["alpha"].draining.is_empty());
        assert!(!a.cancel.is_cancelled(), "nothing left to close");
        assert_eq!(
            e.pick("alpha", Some("s1")).unwrap().upstream,
            "http://b:8080"
        );
    }

    #[tokio::test]
    async fn the_deadline_closes_what_is_left_and_switching_back_revives() {
        let e = edge();
        e.switch("alpha", put("http://a:8080", 1)).unwrap();
        let a = e.pick("alpha", None).unwrap();
        let _stream = Held::new(&a, |b| &b.streams);
        e.switch("alpha", put("http://b:8080", 2)).unwrap();
        // Back to a before its deadline: a is current again, with its session.
        let v = e.switch("alpha", put("http://a:8080", 1)).unwrap();
        assert_eq!(v.upstream, "http://a:8080");
        assert!(Arc::ptr_eq(&e.pick("alpha", None).unwrap(), &a));
        // Away again, and wait out the 1 s deadline.
        e.switch("alpha", put("http://c:8080", 3)).unwrap();
        tokio::time::sleep(Duration::from_millis(1400)).await;
        assert!(a.cancel.is_cancelled(), "the open stream was closed");
        let v = e.view();
        assert_eq!(v.routes["alpha"].draining.len(), 0, "{v:?}");
        assert!(crate::metrics::encode(&e.metrics_registry())
            .unwrap()
            .contains("mcp_edge_drain_closed_total{service=\"alpha\"} 1"));
    }

    #[test]
    fn routes_persist_without_draining() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.json");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = Edge::new(
                BTreeSet::from(["alpha".into()]),
                Some(file.clone()),
                Duration::from_secs(5),
            )
            .unwrap();
            e.switch("alpha", put("http://a:8080", 1)).unwrap();
            e.switch("alpha", put("http://b:8080/p", 2)).unwrap();
            let again = Edge::new(
                BTreeSet::from(["alpha".into()]),
                Some(file.clone()),
                Duration::from_secs(5),
            )
            .unwrap();
            let r = &again.view().routes["alpha"];
            assert_eq!(
                (r.upstream.as_str(), r.revision),
                ("http://b:8080/p", Some(2))
            );
            assert!(r.draining.is_empty());
        });
    }

    use proptest::prelude::*;

    /// Path segments meant to confuse a prefix join: dot segments in every spelling the URL
    /// parser resolves, encoded slashes and backslashes, and things that only look like them;
    /// with `backslash`, also raw backslashes (which the URL parser reads as `/`).
    fn segment(backslash: bool) -> impl Strategy<Value = String> {
        let mut tricky = vec![
            ".",
            "..",
            "%2e",
            "%2E",
            "%2e%2e",
            ".%2E",
            "%2E.",
            "...",
            ".a",
            "a.",
            "%252e",
            "%2f",
            "%2F",
            "..%2f",
            "%2f..",
            "%5c",
            "..%5c",
            "%5C..",
            ";",
            "..;",
            ".;",
            "%00",
            "%",
            "%2",
            "\t",
            ".\t.",
            "\n",
            " ",
            "\u{e9}",
            "\u{ff0e}\u{ff0e}",
            "@",
            ":",
            "..:",
            "%3a",
            "#",
            "?",
            "|",
            "^",
            "`",
            "{",
            "}",
            "\"",
            "<",
            ">",
            "[",
            "]",
        ];
        if backslash {
            tricky.extend(["\\", "..\\", "\\..", ".\\.", "a\\..\\.."]);
        }
        prop_oneof![
            3 => "[a-z0-9_~-]{0,6}",
            1 => prop::sample::select(tricky).prop_map(str::to_string),
        ]
    }

    /// A request target from segments (and maybe a query), if the HTTP layer takes it.
    fn target(segs: &[String], query: &Option<String>) -> Option<Uri> {
        let mut t = format!("/{}", segs.join("/"));
        if let Some(q) = query {
            t.push('?');
            t.push_str(q);
        }
        t.parse::<Uri>().ok()
    }

    /// Whether a path has a segment the WHATWG URL parser resolves (for http URLs it splits
    /// segments at `/` and `\\`).
    fn whatwg_dotted(path: &str) -> bool {
        path.split(['/', '\\']).any(|seg| {
            let s = seg.to_ascii_lowercase();
            matches!(s.as_str(), "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e")
        })
    }

    /// The edge's forwarding of `path_and_query` on a route to `http://up:9000<prefix>` keeps the
    /// request on that upstream, under the prefix, with the client's segments as they were.
    fn check_stays_under(prefix: &str, uri: &Uri) -> Result<(), TestCaseError> {
        if has_dot_segment(uri.path()) || uri.path().contains('\\') {
            return Ok(()); // refused (see dot_segments_are_always_refused, forward)
        }
        let up = Upstream::parse(&format!("http://up:9000{prefix}")).unwrap();
        let path_q = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = up.url(path_q);
        // What reqwest does with it (an unparsable URL fails the request: nothing is sent).
        let Ok(parsed) = reqwest::Url::parse(&url) else {
            return Ok(());
        };
        prop_assert_eq!(parsed.host_str(), Some("up"), "{}", url);
        prop_assert_eq!(parsed.port(), Some(9000), "{}", url);
        let under = format!("{}/", up.prefix);
        prop_assert!(
            parsed.path().starts_with(&under),
            "{} -> {}",
            url,
            parsed.path()
        );
        prop_assert_eq!(
            parsed.path()[up.prefix.len()..].split('/').count(),
            uri.path().split('/').count(),
            "{} -> {}",
            url,
            parsed.path()
        );
        Ok(())
    }

    fn request(uri: Uri) -> Request {
        axum::http::Request::builder()
            .uri(uri)
            .header("host", "127.0.0.1:8501")
            .body(Body::empty())
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever path (without raw backslashes) the HTTP layer accepts and the edge does not
        /// refuse, the URL it asks reqwest for stays on the route's upstream, under its prefix,
        /// with the client's segments unchanged (none resolved away, none split into two).
        #[test]
        fn an_accepted_path_stays_under_the_route_prefix(
            prefix in prop_oneof![Just(""), Just("/servers/fetch"), Just("/servers/fetch/")],
            segs in prop::collection::vec(segment(false), 0..6),
            query in proptest::option::of("[a-z_=&./%]{0,12}"),
        ) {
            let Some(uri) = target(&segs, &query) else { return Ok(()) };
            check_stays_under(prefix, &uri)?;
        }

        /// The same with raw backslashes. hyper (httparse, http::Uri) accepts `\\` in a path,
        /// `has_dot_segment` splits at `/` only, and the URL parser reads `\\` as `/`: on a route
        /// to `http://up:9000/servers/fetch`, `GET /..\\other\\sse` is sent to
        /// `http://up:9000/servers/other/sse` — another named server of the same mcp-proxy.
        #[test]
        fn an_accepted_backslash_path_stays_under_the_route_prefix(
            prefix in prop_oneof![Just(""), Just("/servers/fetch"), Just("/servers/fetch/")],
            segs in prop::collection::vec(segment(true), 0..6),
            query in proptest::option::of("[a-z_=&./%]{0,12}"),
        ) {
            let Some(uri) = target(&segs, &query) else { return Ok(()) };
            check_stays_under(prefix, &uri)?;
            prop_assert_eq!(has_dot_segment(uri.path()), whatwg_dotted(uri.path()), "{}", uri);
        }

        /// A path with a dot segment (in any spelling the URL parser resolves) is refused with
        /// 400 before anything is routed; any other path gets as far as routing (503 here: no
        /// route), unless its session id is implausible.
        #[test]
        fn dot_segments_are_always_refused(
            segs in prop::collection::vec(segment(false), 0..6),
            dot in proptest::option::of((prop::sample::select(vec![".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "%2e%2E"]), any::<prop::sample::Index>())),
            query in proptest::option::of("[a-z_=&./%]{0,12}"),
        ) {
            let mut segs = segs;
            if let Some((d, at)) = dot {
                segs.insert(at.index(segs.len() + 1), d.to_string());
            }
            let Some(uri) = target(&segs, &query) else { return Ok(()) };
            let dotted = whatwg_dotted(uri.path());
            // (A `#` or `?` before the dot segment takes it out of the path.)
            if dot.is_some() && !segs.iter().any(|s| s.contains(['#', '?'])) {
                prop_assert!(dotted, "{}", uri);
            }
            prop_assert_eq!(has_dot_segment(uri.path()), dotted, "{}", uri);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let resp = rt.block_on(forward(edge(), "alpha".into(), request(uri.clone())));
            let implausible = query_session_id(uri.query()).is_some_and(|id| !plausible_session_id(&id));
            let want = if dotted || implausible {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            prop_assert_eq!(resp.status(), want, "{}", uri);
        }

        /// The in-network Host `mcp-<service>[:port]` names that service, and the guard admits
        /// a Host for a service's listener only when it names that very service (at the
        /// in-network port): a request never reaches another service than its Host names.
        #[test]
        fn a_host_names_its_own_service_only(
            named in prop_oneof!["[a-z][a-z0-9-]{0,8}", Just("alpha".to_string())],
            serving in prop_oneof!["[a-z][a-z0-9-]{0,8}", Just("alpha".to_string())],
            port in prop_oneof![Just(8080u16), any::<u16>()],
            with_port in any::<bool>(),
            upper in any::<bool>(),
        ) {
            let host = if with_port { format!("mcp-{named}:{port}") } else { format!("mcp-{named}") };
            let host = if upper { host.to_ascii_uppercase() } else { host };
            let routed = service_of_host(Some(&host));
            if upper {
                prop_assert!(routed.is_none() || routed.as_deref() == Some(named.to_ascii_uppercase().as_str()));
            } else {
                prop_assert_eq!(routed.as_deref(), Some(named.as_str()));
            }
            let at = Arrival { service: &serving, port: 8501, internal: Some(8080) };
            let admitted = admit(at, Some(&host), None).is_ok();
            prop_assert_eq!(admitted, with_port && port == 8080 && named == serving, "{} at {}", host, serving);
        }
    }

    /// The minimal input of the backslash property above: the edge must refuse it or keep it under
    /// the prefix (it once forwarded it to a sibling of the route's upstream path).
    #[test]
    fn a_backslash_dot_segment_cannot_leave_the_route_prefix() {
        let uri: Uri = "/..\\other\\sse".parse().expect("hyper accepts it");
        let up = Upstream::parse("http://up:9000/servers/fetch").unwrap();
        let sent = reqwest::Url::parse(&up.url(uri.path())).unwrap();
        assert!(
            has_dot_segment(uri.path()) || sent.path().starts_with("/servers/fetch/"),
            "{uri} is forwarded to {sent}"
        );
        // And any backslash is refused before routing, dots or not.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for path in ["/..\\other\\sse", "/sse\\x"] {
            let uri: Uri = path.parse().unwrap();
            let resp = rt.block_on(forward(edge(), "alpha".into(), request(uri)));
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        }
    }

    /// One step of the affinity model: switch a service's route, pin a session to what a service
    /// serves now, let drains run, or pick an upstream for a session.
    #[derive(Debug, Clone)]
    enum Step {
        Switch {
            service: usize,
            upstream: usize,
            quick: bool,
        },
        Pin {
            session: usize,
            service: usize,
            live: bool,
        },
        RunDrains,
        Pick {
            session: usize,
            service: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0usize..3, 0usize..3, any::<bool>()).prop_map(|(service, upstream, quick)| {
                Step::Switch {
                    service,
                    upstream,
                    quick,
                }
            }),
            (0usize..4, 0usize..3, any::<bool>()).prop_map(|(session, service, live)| Step::Pin {
                session,
                service,
                live
            }),
            Just(Step::RunDrains),
            (0usize..4, 0usize..3).prop_map(|(session, service)| Step::Pick { session, service }),
            (0usize..4, 0usize..3).prop_map(|(session, service)| Step::Pick { session, service }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Through switches (some draining at once), pins and drains, a session's pick is always
        /// an upstream of the service asked for (current or draining), its pinned one exactly
        /// when that one still serves the service, else the current one. Services share
        /// upstream URLs and sessions are pinned on several services, so a wrong pick can show.
        #[test]
        fn a_session_never_crosses_services(steps in prop::collection::vec(step(), 1..30)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let _in = rt.enter();
            let names = ["alpha", "beta", "gamma"];
            let e = Edge::new(names.iter().map(|s| s.to_string()).collect(), None, Duration::from_secs(3600)).unwrap();
            for st in steps {
                match st {
                    Step::Switch { service, upstream, quick } => {
                        let mut p = put(&format!("http://u{upstream}:8080"), upstream as u64);
                        p.drain_timeout_s = quick.then_some(0);
                        e.switch(names[service], p).unwrap();
                    }
                    Step::Pin { session, service, live } => {
                        if let Some(b) = e.pick(names[service], None) {
                            e.pin(&format!("s{session}"), &b, live);
                        }
                    }
                    Step::RunDrains => rt.block_on(async {
                        for _ in 0..4 {
                            tokio::task::yield_now().await;
                        }
                    }),
                    Step::Pick { session, service } => {
                        let id = format!("s{session}");
                        let want = {
                            let routes = e.routes.read().unwrap();
                            routes.get(names[service]).map(|r| {
                                let serves = |b: &Arc<Backend>| {
                                    Arc::ptr_eq(b, &r.current) || r.draining.iter().any(|d| Arc::ptr_eq(d, b))
                                };
                                let pinned = e.affinity.lock().unwrap().get(&id).map(|p| p.0.clone());
                                let own: Vec<Arc<Backend>> = std::iter::once(r.current.clone()).chain(r.draining.iter().cloned()).collect();
                                let want = match pinned {
                                    Some(b) if serves(&b) && !b.retired.load(Ordering::SeqCst) => b,
                                    _ => r.current.clone(),
                                };
                                (want, own)
                            })
                        };
                        let got = e.pick(names[service], Some(&id));
                        match (want, got) {
                            (None, None) => {}
                            (Some((want, own)), Some(got)) => {
                                prop_assert!(own.iter().any(|b| Arc::ptr_eq(b, &got)), "{} got {} of another service", names[service], got.upstream);
                                prop_assert!(Arc::ptr_eq(&want, &got), "{} {}: want {}, got {}", names[service], id, want.upstream, got.upstream);
                            }
                            (want, got) => prop_assert!(false, "route {:?} vs pick {:?}", want.map(|w| w.0.upstream.clone()), got.map(|g| g.upstream.clone())),
                        }
                    }
                }
            }
        }
    }
}
