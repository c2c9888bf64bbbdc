//! `mcpctl doctor`: one pre-flight of the machine and the project, a [`Check`] per thing that
//! must hold before a deploy — the manifest loads, the engine answers (and its clock agrees with
//! ours), the clock is sane, disks have room, the published ports are free (or held by this
//! project), base images and vendored packages are there, the install key is intact — each with
//! a fix when it does not hold.
//!
//! Owns: the probes (each bounded by [`CHECK_TIMEOUT`], so a stuck engine or a dead mount never
//! hangs doctor) and the judgement of what they found (pure functions, unit-tested below).
//! Must not: change anything — no install key created, no directory made, no image built or
//! pulled, a port bound only to see whether it is free and released at once — nor print (the
//! command hands the [`Report`] to `output`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::engine::docker::DockerEngine;
use crate::engine::{ContainerInfo, Engine, EngineError};
use crate::images::{bases, vendor};
use crate::manifest::{BuildMode, Manifest};
use crate::rollout::secrets::KEY_LEN;
use crate::rollout::Project;

/// How long any one probe may take before its check fails as "no answer".
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Free space below this is a warning.
pub const WARN_FREE_BYTES: u64 = 5 << 30;
/// Free space below this is a failure.
pub const FAIL_FREE_BYTES: u64 = 1 << 30;
/// Largest tolerated difference between our clock and the engine's (and the build time's slack).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Pass,
    /// Worth acting on, but doctor still exits 0.
    Warn,
    Fail,
}

/// One line of the pre-flight. `ok` is false only for a failure.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub level: Level,
    pub detail: String,
    /// What to do (the exact command where there is one); null when the check passed.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Pass, detail, None)
    }
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Level::Warn, detail, Some(fix.into()))
    }
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Level::Fail, detail, Some(fix.into()))
    }
    fn new(
        name: impl Into<String>,
        level: Level,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            ok: level != Level::Fail,
            level,
            detail: detail.into(),
            fix,
        }
    }
}

/// What `mcpctl doctor` reports: `{"checks": [...]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.level == Level::Fail)
            .count()
    }
    pub fn warnings(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.level == Level::Warn)
            .count()
    }
}

/// Runs `f` on its own thread and waits at most `limit` for it. `None`: it did not finish in
/// time (the thread is left to finish or die with the process; doctor moves on).
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("doctor-probe".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(limit).ok()
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

// ---------------------------------------------------------------------------------------------
// The whole pre-flight

/// The project doctor looks at, or why the manifest could not be loaded (the checks that need it
/// are then left out; the others still run).
pub type Target<'a> = Result<&'a Project, String>;

/// Every check, in the order an operator fixes things: manifest, engine, clocks, disks, ports,
/// base images, vendored packages, install key.
pub async fn run(manifest_path: &Path, target: Target<'_>) -> Report {
    let mut checks = Vec::new();
    checks.push(match &target {
        Ok(p) => Check::pass(
            "manifest",
            format!(
                "{}: project {}, {} services",
                manifest_path.display(),
                p.name(),
                p.manifest.services.len()
            ),
        ),
        Err(problem) => manifest_check_failed(manifest_path, problem),
    });

    let (engine, facts) = match tokio::time::timeout(CHECK_TIMEOUT, DockerEngine::connect()).await {
        Ok(Ok(engine)) => {
            let facts = engine_facts(&engine).await;
            (Some(engine), Ok(facts))
        }
        Ok(Err(EngineError::Unreachable(why))) => (None, Err(why)),
        Ok(Err(e)) => (None, Err(e.to_string())),
        Err(_) => (
            None,
            Err(format!(
                "{} did not answer within {} s",
                docker_host(),
                secs(CHECK_TIMEOUT)
            )),
        ),
    };
    checks.push(engine_check(&facts));
    let now = SystemTime::now();
    checks.push(clock_check(now, build_time()));
    if let Ok(EngineFacts {
        system_time: Some(t),
        ..
    }) = &facts
    {
        checks.push(engine_clock_check(now, t));
    }

    let docker_root = match &facts {
        Ok(EngineFacts {
            root_dir: Some(d), ..
        }) => PathBuf::from(d),
        _ => std::env::var_os("MCPCTL_DOCKER_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/docker")),
    };
    checks.push(docker_root_check(&docker_root));

    let Ok(project) = target else {
        return Report { checks };
    };
    checks.push(state_dir_check(&project.state_dir));

    let containers = match &engine {
        Some(e) => project_containers(e, project).await,
        None => None,
    };
    checks.extend(port_checks(
        &project.manifest,
        manifest_path,
        containers.as_deref(),
        probe_bind,
    ));
    checks.extend(base_checks(&project.manifest, engine.is_some()));
    checks.extend(vendor_checks(project, manifest_path));
    let key = key_path(&project.state_dir);
    let probe = {
        let key = key.clone();
        bounded(CHECK_TIMEOUT, move || probe_install_key(&key))
            .unwrap_or_else(|| KeyProbe::Unreadable(timed_out()))
    };
    checks.push(install_key_check(&key, &probe));
    Report { checks }
}

fn timed_out() -> String {
    format!("no answer within {} s", secs(CHECK_TIMEOUT))
}

fn manifest_check_failed(path: &Path, problem: &str) -> Check {
    let first = problem.lines().next().unwrap_or(problem);
    Check::fail(
        "manifest",
        format!("{} does not load: {first}", path.display()),
        format!(
            "`mcpctl validate -f {}` lists every problem with file:line and a fix; the checks of ports, bases, vendored packages and the install key need a valid manifest",
            path.display()
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Engine

/// What the engine told us about itself.
#[derive(Debug, Clone, Default)]
pub struct EngineFacts {
    pub version: String,
    /// `SystemTime` of `GET /info` (RFC 3339, the engine's own clock).
    pub system_time: Option<String>,
    /// `DockerRootDir` of `GET /info`.
    pub root_dir: Option<String>,
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

async fn engine_facts(engine: &DockerEngine) -> EngineFacts {
    let mut facts = EngineFacts {
        version: engine.version().await.unwrap_or_default(),
        ..Default::default()
    };
    if let Ok(Ok(info)) = tokio::time::timeout(CHECK_TIMEOUT, engine.client().info()).await {
        facts.system_time = info.system_time;
        facts.root_dir = info.docker_root_dir;
    }
    facts
}

pub fn engine_check(facts: &Result<EngineFacts, String>) -> Check {
    match facts {
        Ok(f) => Check::pass("engine", format!("{} at {}", f.version, docker_host())),
        Err(why) => Check::fail(
            "engine",
            format!("the Docker engine does not answer: {why}"),
            "start it (as root: `scripts/setup docker`, or `dockerd &`) or point DOCKER_HOST at a running engine; then `docker info` must answer",
        ),
    }
}

/// The containers of the project (any state), or None when the engine does not answer in time.
pub async fn project_containers<E: Engine>(
    engine: &E,
    project: &Project,
) -> Option<Vec<ContainerInfo>> {
    let filter = project.keys.project_filter(project.name());
    tokio::time::timeout(CHECK_TIMEOUT, engine.list_containers(&filter))
        .await
        .ok()?
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Clocks

/// When this binary was built: its file's modification time (set by the linker). No build
/// script stamps a date into the binary, which would change every build's bytes and so every
/// image tag that hashes the binary.
pub fn build_time() -> Option<SystemTime> {
    std::fs::metadata(std::env::current_exe().ok()?)
        .ok()?
        .modified()
        .ok()
}

pub fn clock_check(now: SystemTime, built: Option<SystemTime>) -> Check {
    let Some(built) = built else {
        return Check::pass(
            "clock",
            format!(
                "system time {} (this binary's build time is unknown)",
                rfc3339(now)
            ),
        );
    };
    if now + MAX_CLOCK_SKEW < built {
        return Check::fail(
            "clock",
            format!(
                "system time {} is before this binary was built ({})",
                rfc3339(now),
                rfc3339(built)
            ),
            "set the clock: enable NTP (`timedatectl set-ntp true`, or chrony / systemd-timesyncd), or `date -s 'YYYY-MM-DD HH:MM:SS'`; token expiry, TLS and the ledger's times depend on it",
        );
    }
    Check::pass(
        "clock",
        format!(
            "system time {}, after this binary's build ({})",
            rfc3339(now),
            rfc3339(built)
        ),
    )
}

pub fn engine_clock_check(ours: SystemTime, engine_time: &str) -> Check {
    let Some(theirs) = parse_rfc3339(engine_time) else {
        return Check::warn(
            "engine clock",
            format!("the engine reported a time doctor cannot read: {engine_time:?}"),
            "compare `docker info --format '{{.SystemTime}}'` with `date` by hand",
        );
    };
    let (skew, behind) = match ours.duration_since(theirs) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    if skew > MAX_CLOCK_SKEW {
        return Check::fail(
            "engine clock",
            format!(
                "the engine's clock ({engine_time}) is {} s {} ours ({})",
                skew.as_secs(),
                if behind { "behind" } else { "ahead of" },
                rfc3339(ours)
            ),
            "synchronise both hosts' clocks with NTP (`timedatectl set-ntp true`); a remote DOCKER_HOST keeps its own clock, and uptimes, log times and the soak's windows compare the two",
        );
    }
    Check::pass(
        "engine clock",
        format!("within {} s of ours", skew.as_secs()),
    )
}

/// RFC 3339 with `Z` or a `±HH:MM` offset (Docker reports its local zone) and any fraction.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (local, offset_s): (&str, i64) = if let Some(l) = s.strip_suffix(['Z', 'z']) {
        (l, 0)
    } else {
        let (l, off) = s.split_at(s.len().checked_sub(6)?);
        let sign = match off.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = off[1..].split_once(':')?;
        (
            l,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let t = humantime::parse_rfc3339_weak(local).ok()?;
    // `local` is the wall time at `offset`: UTC = local - offset.
    let shift = Duration::from_secs(offset_s.unsigned_abs());
    if offset_s >= 0 {
        t.checked_sub(shift)
    } else {
        t.checked_add(shift)
    }
}

// ---------------------------------------------------------------------------------------------
// Disk space

/// Free bytes for an unprivileged user on the filesystem of `path`, measured at `path` or, when
/// it does not exist yet, at its nearest existing ancestor (returned).
pub fn probe_free(path: &Path) -> Result<(PathBuf, u64), String> {
    let at = path
        .ancestors()
        .find(|p| p.exists())
        .ok_or_else(|| format!("no part of {} exists", path.display()))?
        .to_path_buf();
    let st = nix::sys::statvfs::statvfs(at.as_path()).map_err(|e| e.to_string())?;
    Ok((
        at,
        (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64),
    ))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The verdict on `free` bytes at `path` for check `name`; `fix` says how to make room there.
pub fn disk_check(
    name: &str,
    path: &Path,
    measured: Result<(PathBuf, u64), String>,
    fix: &str,
) -> Check {
    let (at, free) = match measured {
        Ok(m) => m,
        Err(why) => {
            return Check::warn(
                name,
                format!("could not measure free space at {}: {why}", path.display()),
                format!("check by hand: `df -h {}`", path.display()),
            )
        }
    };
    let place = if at == path {
        path.display().to_string()
    } else {
        format!(
            "{} (not created yet; measured at {})",
            path.display(),
            at.display()
        )
    };
    let detail = format!("{} free at {place}", gib(free));
    if free < FAIL_FREE_BYTES {
        Check::fail(
            name,
            format!("only {detail}: under {}", gib(FAIL_FREE_BYTES)),
            fix,
        )
    } else if free < WARN_FREE_BYTES {
        Check::warn(
            name,
            format!("only {detail}: under {}", gib(WARN_FREE_BYTES)),
            fix,
        )
    } else {
        Check::pass(name, detail)
    }
}

fn docker_root_check(root: &Path) -> Check {
    let name = "disk docker root";
    if !root.exists() {
        return Check::warn(
            name,
            format!(
                "the engine's root {} is not visible from here (a remote engine?): not measured",
                root.display()
            ),
            "check free space on the engine's host (`docker system df`, `df -h` there)",
        );
    }
    let r = root.to_path_buf();
    let measured =
        bounded(CHECK_TIMEOUT, move || probe_free(&r)).unwrap_or_else(|| Err(timed_out()));
    disk_check(
        name,
        root,
        measured,
        "make room where the engine keeps images: `mcpctl prune --yes` (old revisions, unused images), `docker image prune`, `docker builder prune`",
    )
}

fn state_dir_check(state: &Path) -> Check {
    let s = state.to_path_buf();
    let measured =
        bounded(CHECK_TIMEOUT, move || probe_free(&s)).unwrap_or_else(|| Err(timed_out()));
    disk_check(
        "disk state dir",
        state,
        measured,
        "make room on that filesystem, or move the state directory (`--state-dir` / MCPCTL_STATE_DIR) together with its contents: it holds the ledger, secrets, the install key and vendored packages",
    )
}

// ---------------------------------------------------------------------------------------------
// Published ports

/// A host port the manifest publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPort {
    pub port: u16,
    pub addr: IpAddr,
    /// Who publishes it: `service alpha`, `the edge's admin API`.
    pub owner: String,
    /// The manifest field that sets it.
    pub setting: String,
}

/// Every host port the manifest publishes, in manifest order (the edge's admin port last).
pub fn wanted_ports(m: &Manifest) -> Vec<WantedPort> {
    let mut out: Vec<WantedPort> = m
        .services
        .iter()
        .filter_map(|(name, s)| {
            s.port.map(|port| WantedPort {
                port,
                addr: m.bind_address,
                owner: format!("service {name}"),
                setting: format!("services.{name}.port"),
            })
        })
        .collect();
    if m.edge.enabled {
        out.push(WantedPort {
            port: m.edge.admin_port,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            owner: "the edge's admin API".into(),
            setting: "edge.admin_port".into(),
        });
    }
    out
}

/// What binding a port (and releasing it at once) said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Free,
    InUse,
    Error(String),
}

/// Bind `addr` and release it at once.
pub fn probe_bind(addr: SocketAddr) -> Bind {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Bind::Free,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Bind::InUse,
        Err(e) => Bind::Error(e.to_string()),
    }
}

/// One check per published port. `containers`: the project's containers, None when the engine
/// did not answer (a port in use cannot then be attributed).
pub fn port_checks(
    m: &Manifest,
    manifest_path: &Path,
    containers: Option<&[ContainerInfo]>,
    bind: impl Fn(SocketAddr) -> Bind,
) -> Vec<Check> {
    wanted_ports(m)
        .iter()
        .map(|w| {
            port_check(
                w,
                manifest_path,
                &bind(SocketAddr::new(w.addr, w.port)),
                containers,
            )
        })
        .collect()
}

pub fn port_check(
    w: &WantedPort,
    manifest_path: &Path,
    bind: &Bind,
    containers: Option<&[ContainerInfo]>,
) -> Check {
    let name = format!("port {}", w.port);
    let at = SocketAddr::new(w.addr, w.port);
    let ours = containers.and_then(|cs| cs.iter().find(|c| c.ports.values().any(|p| *p == w.port)));
    if let Some(c) = ours {
        return Check::pass(
            name,
            format!(
                "{at} ({}) is held by this project's container {}",
                w.owner, c.name
            ),
        );
    }
    match bind {
        Bind::Free => Check::pass(name, format!("{at} ({}) is free", w.owner)),
        Bind::InUse => Check::fail(
            name,
            format!(
                "port {} on {} ({}) is in use by another process{}",
                w.port,
                w.addr,
                w.owner,
                if containers.is_none() {
                    " (the engine did not answer, so a container of this project is not ruled out)"
                } else {
                    ""
                }
            ),
            format!(
                "find what holds it (`ss -ltnp 'sport = :{p}'`, `docker ps --filter publish={p}`) and stop it, or change `{}` in {}",
                w.setting,
                manifest_path.display(),
                p = w.port
            ),
        ),
        Bind::Error(why) => Check::fail(
            name,
            format!("cannot bind {at} ({}): {why}", w.owner),
            format!(
                "publish on an address of this host: check `bind_address` (and `{}`) in {}; ports under 1024 need root",
                w.setting,
                manifest_path.display()
            ),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Base images

/// The verdict on one base, as `mcpctl bases list` sees it.
pub fn base_check(s: &bases::BaseStatus) -> Check {
    let name = format!("base {}", s.spec.name);
    let reference = &s.spec.reference;
    match (&s.spec.hash_tag, s.built, s.current) {
        (_, true, true) => Check::pass(
            name,
            format!(
                "{reference}{} present{}",
                s.spec
                    .hash_tag
                    .as_ref()
                    .map(|t| format!(" = {t}"))
                    .unwrap_or_default(),
                s.size_bytes
                    .map(|b| format!(", {} MB", b / 1_000_000))
                    .unwrap_or_default()
            ),
        ),
        (Some(tag), true, false) => Check::fail(
            name,
            format!("{tag} is built but {reference} (what Dockerfiles name) does not point at it"),
            format!(
                "`mcpctl bases build {}` tags it (nothing is rebuilt)",
                s.spec.name
            ),
        ),
        (Some(tag), false, _) => Check::fail(
            name,
            format!("{tag} is missing: services on this base cannot be built"),
            format!(
                "as root: `mcpctl bases build {}` (or `scripts/setup bases`)",
                s.spec.name
            ),
        ),
        (None, _, _) => Check::fail(
            name,
            format!("the upstream image {reference} is not in the engine"),
            format!(
                "load it (`docker load -i FILE`, `mcpctl images import DIR`), or `docker pull {reference}` where a registry is reachable"
            ),
        ),
    }
}

/// Every base the manifest defines, as `mcpctl bases list` shows them (services name them in
/// `build.base`, and a database may run one as its `image:`).
fn base_checks(m: &Manifest, engine_answers: bool) -> Vec<Check> {
    if m.bases.is_empty() {
        return Vec::new();
    }
    if !engine_answers {
        let names: Vec<&str> = m.bases.keys().map(String::as_str).collect();
        return vec![Check::warn(
            "bases",
            format!(
                "not checked ({}): the engine does not answer",
                names.join(", ")
            ),
            "fix the `engine` check first",
        )];
    }
    let manifest = m.clone();
    let specs = match bounded(CHECK_TIMEOUT, move || {
        bases::specs(&manifest, &[]).map_err(|e| format!("{e:#}"))
    }) {
        Some(Ok(specs)) => specs,
        Some(Err(why)) => {
            return vec![Check::fail(
                "bases",
                format!("cannot work out the base images' recipe tags: {why}"),
                "`mcpctl bases list` shows the same error with its log",
            )]
        }
        None => {
            return vec![Check::fail(
                "bases",
                format!("working out the recipe tags gave {}", timed_out()),
                "`mcpctl bases list` runs the same step with its log",
            )]
        }
    };
    specs
        .into_iter()
        .map(|spec| {
            let name = spec.name.clone();
            match bounded(CHECK_TIMEOUT, move || bases::status(vec![spec])) {
                Some(mut st) if !st.is_empty() => base_check(&st.remove(0)),
                _ => Check::fail(
                    format!("base {name}"),
                    format!("asking the engine about it gave {}", timed_out()),
                    "`docker image ls mcpctl-base/*` must answer: fix the engine first",
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Vendored packages

/// The verdict on one offline-built service's vendored packages (`vendor::context_dir`).
pub fn vendor_check(service: &str, found: &anyhow::Result<Option<PathBuf>>) -> Option<Check> {
    let name = format!("vendor {service}");
    match found {
        Ok(Some(dir)) => Some(Check::pass(name, format!("vendored at {}", dir.display()))),
        Ok(None) => None,
        Err(e) => {
            // The build's own message ends with the command to run: that is the fix line here.
            let why = format!("{e:#}");
            let detail = why.split(": run `").next().unwrap_or(&why).to_string();
            Some(Check::fail(
                name,
                detail,
                format!("`mcpctl vendor {service}` (fetches on the host from the committed locks, hashes checked)"),
            ))
        }
    }
}

fn vendor_checks(project: &Project, manifest_path: &Path) -> Vec<Check> {
    let m = &project.manifest;
    let locks = vendor::locks_root(manifest_path);
    m.services
        .iter()
        .filter(|(name, s)| s.build.mode == BuildMode::Offline && vendor::needs_lock(m, name))
        .filter_map(|(name, _)| {
            // A missing lock is the maintainer's step, not `mcpctl vendor`'s.
            if let Err(e) = vendor::spec(m, &locks, &project.state_dir, name) {
                return Some(missing_lock_check(name, &e));
            }
            vendor_check(
                name,
                &vendor::context_dir(m, &locks, &project.state_dir, name),
            )
        })
        .collect()
}

pub fn missing_lock_check(service: &str, e: &anyhow::Error) -> Check {
    Check::fail(
        format!("vendor {service}"),
        format!("{e:#}"),
        format!(
            "commit the lock `locks/{service}/` next to the manifest (`scripts/bases-locks` writes it; see its header), then `mcpctl vendor {service}`"
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Install key

pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("install.key")
}

/// What reading the install key found (read only; doctor never creates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProbe {
    Missing,
    Unreadable(String),
    Present { len: usize, mode: u32 },
}

pub fn probe_install_key(path: &Path) -> KeyProbe {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::read(path) {
        Ok(bytes) => match std::fs::metadata(path) {
            Ok(meta) => KeyProbe::Present {
                len: bytes.len(),
                mode: meta.permissions().mode() & 0o7777,
            },
            Err(e) => KeyProbe::Unreadable(e.to_string()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyProbe::Missing,
        Err(e) => KeyProbe::Unreadable(e.to_string()),
    }
}

pub fn install_key_check(path: &Path, probe: &KeyProbe) -> Check {
    const NAME: &str = "install key";
    let p = path.display();
    let restore = "restore it from a backup of the state directory: every generated secret, database password and secret fingerprint derives from it (only if it is lost for good, delete it; the next deploy then changes them all and a rollback needs `--current-secrets`)";
    match probe {
        KeyProbe::Missing => Check::fail(
            NAME,
            format!("{p} is missing"),
            format!(
                "run `mcpctl plan` (or the first `mcpctl deploy`): it creates the key once (0600). If this install has deployed before, do not: restore `install.key` from a backup of {} instead, as a new key changes every generated secret",
                path.parent().unwrap_or(Path::new(".")).display()
            ),
        ),
        KeyProbe::Unreadable(why) => Check::fail(
            NAME,
            format!("{p} cannot be read: {why}"),
            format!("run mcpctl as the user that owns it (deploys run as root), or {restore}"),
        ),
        KeyProbe::Present { len, .. } if *len != KEY_LEN => Check::fail(
            NAME,
            format!("{p} is {len} bytes long, not {KEY_LEN} (torn or truncated)"),
            restore,
        ),
        KeyProbe::Present { mode, .. } if *mode != 0o600 => Check::fail(
            NAME,
            format!("{p} has mode {mode:04o}, not 0600: others may read what every secret derives from"),
            format!("`chmod 600 {p}`"),
        ),
        KeyProbe::Present { .. } => Check::pass(NAME, format!("{p}: {KEY_LEN} bytes, mode 0600")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::fake::{FakeContainer, FakeEngine};
    use crate::engine::{ContainerSpec, PortSpec, Restart, RunState};

    fn manifest(extra: &str) -> Manifest {
        let text = format!(
            r#"version: 1
project: doc
{extra}services:
  alpha:
    port: 8601
    server:
      source: {{image: {{ref: "debian:12"}}}}
      command: [srv]
    health:
      expect_tools: {{include: [echo]}}
  beta:
    port: 8602
    server:
      source: {{image: {{ref: "debian:12"}}}}
      command: [srv]
    health:
      expect_tools: {{include: [echo]}}
"#
        );
        match crate::manifest::load_str(&text, "services.yaml") {
            Ok((m, _)) => m,
            Err(e) => panic!("{e}"),
        }
    }

    fn container(name: &str, host_port: u16) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            image: "img".into(),
            labels: BTreeMap::new(),
            state: RunState::Running,
            created: 0,
            ports: BTreeMap::from([(8080, host_port)]),
        }
    }

    const M: &str = "services.yaml";

    #[test]
    fn a_check_is_ok_unless_it_failed_and_only_problems_carry_a_fix() {
        let p = Check::pass("a", "fine");
        let w = Check::warn("b", "low", "do x");
        let f = Check::fail("c", "broken", "do y");
        assert!(p.ok && p.fix.is_none());
        assert!(w.ok && w.fix.as_deref() == Some("do x"));
        assert!(!f.ok && f.fix.as_deref() == Some("do y"));
        let r = Report {
            checks: vec![p, w, f],
        };
        assert_eq!((r.failures(), r.warnings()), (1, 1));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["checks"][2],
            serde_json::json!({"name": "c", "ok": false, "level": "fail", "detail": "broken", "fix": "do y"})
        );
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
    }

    #[test]
    fn bounded_gives_up_on_a_probe_that_hangs() {
        assert_eq!(bounded(Duration::from_secs(5), || 7), Some(7));
        let t0 = std::time::Instant::now();
        let r = bounded(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(3));
            1
        });
        assert_eq!(r, None);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }

    #[test]
    fn engine_check_names_the_version_or_how_to_start_it() {
        let ok = engine_check(&Ok(EngineFacts {
            version: "Docker 20.10.24 (API 1.41)".into(),
            ..Default::default()
        }));
        assert!(ok.ok && ok.detail.contains("Docker 20.10.24"), "{ok:?}");
        let down = engine_check(&Err("connection refused".into()));
        assert!(
            !down.ok && down.detail.contains("connection refused"),
            "{down:?}"
        );
        assert!(down.fix.unwrap().contains("dockerd"));
    }

    #[test]
    fn the_clock_must_not_be_before_the_build() {
        let built = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ok = clock_check(built + Duration::from_secs(10), Some(built));
        assert!(ok.ok, "{ok:?}");
        // Within the slack: an NTP step back just after a build is not a failure.
        assert!(clock_check(built - Duration::from_secs(30), Some(built)).ok);
        let bad = clock_check(built - Duration::from_secs(86_400), Some(built));
        assert!(!bad.ok, "{bad:?}");
        assert!(
            bad.detail.contains("before this binary was built"),
            "{bad:?}"
        );
        assert!(bad.fix.unwrap().contains("timedatectl set-ntp true"));
        assert!(clock_check(built, None).ok);
    }

    #[test]
    fn engine_times_parse_with_any_offset_and_fraction() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // 2023-11-14T22:13:20Z
        for s in [
            "2023-11-14T22:13:20Z",
            "2023-11-14T22:13:20.000000000Z",
            "2023-11-15T00:13:20+02:00",
            "2023-11-14T20:13:20.0-02:00",
        ] {
            assert_eq!(parse_rfc3339(s), Some(t), "{s}");
        }
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn the_engine_clock_must_be_within_a_minute_of_ours() {
        let ours = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ok = engine_clock_check(ours, "2023-11-14T22:13:50.123456789Z");
        assert!(ok.ok, "{ok:?}");
        let ahead = engine_clock_check(ours, "2023-11-14T22:15:21Z");
        assert!(!ahead.ok, "{ahead:?}");
        assert!(ahead.detail.contains("121 s ahead of ours"), "{ahead:?}");
        assert!(ahead.fix.unwrap().contains("NTP"));
        let behind = engine_clock_check(ours, "2023-11-14T23:11:20+01:00");
        assert!(
            !behind.ok && behind.detail.contains("120 s behind"),
            "{behind:?}"
        );
        let odd = engine_clock_check(ours, "soon");
        assert_eq!(odd.level, Level::Warn, "{odd:?}");
    }

    #[test]
    fn disk_space_warns_under_5_gib_and_fails_under_1_gib() {
        let p = Path::new("/var/lib/docker");
        let at = |free: u64| disk_check("disk", p, Ok((p.to_path_buf(), free)), "prune");
        let plenty = at(20 << 30);
        assert_eq!(plenty.level, Level::Pass, "{plenty:?}");
        assert!(
            plenty.detail.contains("20.0 GiB free at /var/lib/docker"),
            "{plenty:?}"
        );
        let low = at(3 << 30);
        assert_eq!(low.level, Level::Warn, "{low:?}");
        assert!(low.ok && low.detail.contains("under 5.0 GiB"), "{low:?}");
        let full = at(512 << 20);
        assert_eq!(full.level, Level::Fail, "{full:?}");
        assert!(full.detail.contains("only 0.5 GiB") && full.detail.contains("under 1.0 GiB"));
        assert_eq!(full.fix.as_deref(), Some("prune"));
        let unborn = disk_check(
            "disk",
            Path::new("/srv/state/x"),
            Ok((PathBuf::from("/srv"), 10 << 30)),
            "f",
        );
        assert!(
            unborn.detail.contains("not created yet; measured at /srv"),
            "{unborn:?}"
        );
        let unknown = disk_check("disk", p, Err("EIO".into()), "f");
        assert_eq!(unknown.level, Level::Warn);
    }

    #[test]
    fn free_space_is_measured_at_the_nearest_existing_ancestor() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("a/b/c");
        let (at, free) = probe_free(&missing).unwrap();
        assert_eq!(at, t.path());
        assert!(free > 0);
        assert!(!missing.exists(), "measuring created nothing");
    }

    #[test]
    fn wanted_ports_are_the_services_and_the_edge_admin_port() {
        let m = manifest("");
        let w = wanted_ports(&m);
        assert_eq!(
            w.iter().map(|w| w.port).collect::<Vec<_>>(),
            vec![8601, 8602]
        );
        assert_eq!(w[0].setting, "services.alpha.port");
        assert_eq!(w[0].addr, IpAddr::from([127, 0, 0, 1]));
        let edge = manifest(
            "bases:\n  runtime: {suite: bookworm}\nedge: {enabled: true, admin_port: 8600}\n",
        );
        let w = wanted_ports(&edge);
        assert_eq!(w.last().unwrap().port, 8600);
        assert_eq!(w.last().unwrap().setting, "edge.admin_port");
    }

    #[test]
    fn a_port_is_ok_when_free_or_held_by_this_project_and_fails_naming_it_otherwise() {
        let m = manifest("");
        let path = Path::new(M);
        let ours = [container("doc-alpha-r1", 8601)];
        let checks = port_checks(&m, path, Some(&ours), |_| Bind::InUse);
        assert!(checks[0].ok, "{:?}", checks[0]);
        assert!(checks[0]
            .detail
            .contains("held by this project's container doc-alpha-r1"));
        let beta = &checks[1];
        assert!(!beta.ok, "{beta:?}");
        assert_eq!(beta.name, "port 8602");
        assert!(
            beta.detail
                .contains("port 8602 on 127.0.0.1 (service beta) is in use by another process"),
            "{beta:?}"
        );
        let fix = beta.fix.as_deref().unwrap();
        assert!(
            fix.contains("ss -ltnp 'sport = :8602'") && fix.contains("services.beta.port"),
            "{fix}"
        );

        let free = port_checks(&m, path, Some(&[]), |_| Bind::Free);
        assert!(
            free.iter().all(|c| c.ok && c.detail.contains("is free")),
            "{free:?}"
        );

        let blind = port_checks(&m, path, None, |_| Bind::InUse);
        assert!(blind[0].detail.contains("not ruled out"), "{blind:?}");

        let odd = port_checks(&m, path, Some(&[]), |_| {
            Bind::Error("Cannot assign requested address".into())
        });
        assert!(!odd[0].ok && odd[0].fix.as_deref().unwrap().contains("bind_address"));
    }

    #[test]
    fn the_real_bind_probe_sees_a_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(probe_bind(addr), Bind::InUse);
        drop(l);
        assert_eq!(probe_bind(addr), Bind::Free);
    }

    #[tokio::test]
    async fn the_project_containers_come_from_the_engine_by_project_label() {
        let m = manifest("");
        let project = Project::new(m, Path::new(M), PathBuf::from("/tmp/doc-state")).unwrap();
        let engine = FakeEngine::new();
        let add = |name: &str, project_label: &str, host_port: u16| {
            let spec = ContainerSpec {
                name: name.into(),
                image: "img".into(),
                cmd: vec![],
                env: BTreeMap::new(),
                labels: BTreeMap::from([("com.mcp.project".into(), project_label.into())]),
                network: "n".into(),
                aliases: vec![],
                port: Some(PortSpec {
                    host_ip: [127, 0, 0, 1].into(),
                    host_port,
                    container_port: 8080,
                }),
                binds: vec![],
                memory: 1,
                nano_cpus: 1,
                pids: 1,
                shm_size: None,
                read_only_root: true,
                restart: Restart::UnlessStopped,
            };
            engine.state.lock().unwrap().containers.insert(
                name.into(),
                FakeContainer {
                    spec,
                    state: RunState::Running,
                    id: format!("id-{name}"),
                    created: 1,
                    ports: BTreeMap::from([(8080, host_port)]),
                    exit_code: None,
                },
            );
        };
        add("doc-alpha-r1", "doc", 8601);
        add("other-beta-r1", "other", 8602);
        let cs = project_containers(&engine, &project).await.unwrap();
        assert_eq!(cs.len(), 1, "{cs:?}");
        let checks = port_checks(&project.manifest, Path::new(M), Some(&cs), |_| Bind::InUse);
        assert!(checks[0].ok, "alpha is ours: {:?}", checks[0]);
        assert!(!checks[1].ok, "beta is another project's: {:?}", checks[1]);
    }

    fn status(hash_tag: Option<&str>, built: bool, current: bool) -> bases::BaseStatus {
        bases::BaseStatus {
            spec: bases::BaseSpec {
                name: "python311".into(),
                suite: "bookworm".into(),
                node: None,
                packages: vec![],
                reference: "mcpctl-base/python311:bookworm".into(),
                hash_tag: hash_tag.map(String::from),
            },
            built,
            current,
            size_bytes: Some(150_000_000),
        }
    }

    #[test]
    fn a_base_must_be_built_and_its_reference_current() {
        let tag = Some("mcpctl-base/python311:bookworm-abc");
        let ok = base_check(&status(tag, true, true));
        assert!(
            ok.ok && ok.detail.contains("= mcpctl-base/python311:bookworm-abc"),
            "{ok:?}"
        );
        assert!(ok.detail.contains("150 MB"));
        let missing = base_check(&status(tag, false, false));
        assert!(
            !missing.ok && missing.detail.contains("is missing"),
            "{missing:?}"
        );
        assert!(missing
            .fix
            .unwrap()
            .contains("mcpctl bases build python311"));
        let untagged = base_check(&status(tag, true, false));
        assert!(!untagged.ok && untagged.fix.unwrap().contains("nothing is rebuilt"));
        let upstream = base_check(&status(None, false, false));
        assert!(!upstream.ok && upstream.fix.unwrap().contains("docker load"));
        assert_eq!(base_check(&status(None, true, true)).level, Level::Pass);
    }

    #[test]
    fn vendor_checks_pass_with_the_dir_and_fail_with_the_command_to_run() {
        let ok = vendor_check("fetch", &Ok(Some(PathBuf::from("/s/vendor/fetch/abc"))));
        assert!(ok.unwrap().detail.contains("/s/vendor/fetch/abc"));
        assert!(vendor_check("fetch", &Ok(None)).is_none());
        let bad = vendor_check(
            "fetch",
            &Err(anyhow::anyhow!(
                "service 'fetch' is built offline but its packages are not vendored yet (/s/v): run `mcpctl vendor fetch`"
            )),
        )
        .unwrap();
        assert!(
            !bad.ok && bad.detail.ends_with("not vendored yet (/s/v)"),
            "{bad:?}"
        );
        assert_eq!(bad.name, "vendor fetch");
        assert!(bad.fix.unwrap().contains("`mcpctl vendor fetch`"));
        let lock = missing_lock_check(
            "fetch",
            &anyhow::anyhow!("locks/fetch/requirements.txt is missing"),
        );
        assert!(!lock.ok && lock.detail.contains("requirements.txt is missing"));
        assert!(lock.fix.unwrap().contains("scripts/bases-locks"));
    }

    #[test]
    fn the_install_key_must_be_32_bytes_mode_0600_and_is_never_created() {
        use std::os::unix::fs::PermissionsExt as _;
        let t = tempfile::tempdir().unwrap();
        let path = key_path(t.path());

        let missing = install_key_check(&path, &probe_install_key(&path));
        assert!(
            !missing.ok && missing.detail.ends_with("install.key is missing"),
            "{missing:?}"
        );
        assert!(missing.fix.unwrap().contains("`mcpctl plan`"));
        assert!(!path.exists(), "doctor created the key");

        std::fs::write(&path, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let good = install_key_check(&path, &probe_install_key(&path));
        assert!(good.ok, "{good:?}");
        assert!(good.detail.contains("32 bytes, mode 0600"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = install_key_check(&path, &probe_install_key(&path));
        assert!(!open.ok && open.detail.contains("mode 0644"), "{open:?}");
        assert!(open.fix.unwrap().contains("chmod 600"));

        std::fs::write(&path, [7u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let torn = install_key_check(&path, &probe_install_key(&path));
        assert!(
            !torn.ok && torn.detail.contains("31 bytes long, not 32"),
            "{torn:?}"
        );
        assert!(torn.fix.unwrap().contains("restore it from a backup"));
        assert_eq!(std::fs::read(&path).unwrap().len(), 31, "left as it was");

        let unreadable =
            install_key_check(&path, &KeyProbe::Unreadable("Permission denied".into()));
        assert!(!unreadable.ok && unreadable.detail.contains("Permission denied"));
    }

    #[test]
    fn a_manifest_that_does_not_load_names_validate() {
        let c = manifest_check_failed(Path::new("x.yaml"), "x.yaml:3:1: unknown field\nmore");
        assert!(
            !c.ok
                && c.detail
                    .contains("x.yaml does not load: x.yaml:3:1: unknown field")
        );
        assert!(c.fix.unwrap().contains("mcpctl validate -f x.yaml"));
    }
}
