//! The rollout lock, held on the engine: a stopped, labelled `<project>-lock` container created by
//! name. Creation by name is atomic in the engine (a second create gets 409), so two mcpctl runs on
//! different hosts against one engine cannot both hold it. The labels say who holds it, from
//! which pid and host, since when, for which command and why (`--message`).
//!
//! A lock whose holder ran on this host and whose pid is gone is stale: the next run takes it
//! over and reconciles (crash recovery). Anything else needs `--force-unlock`.
//!
//! A run holds the lock by the container's id, not its name. Taking over renames the old holder
//! by id out of the way (`<project>-lock-taken-<id>`), and whichever run then creates the lock
//! removes the set-aside one by id and reports the takeover: each removal succeeds once, so
//! exactly one run reports a takeover, however many started at once and whichever of them won
//! the name (remove-then-create could not say that: the name is free in between, and a run that
//! arrives then holds a lock it believes was free). Releasing removes only this run's container,
//! never a lock a `--force-unlock` run created in its place.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::labels::Keys;
use crate::engine::{ContainerSpec, Engine, EngineError, Restart};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LockInfo {
    /// The lock container's id (empty for a lock not yet taken, e.g. [`LockInfo::current`]).
    #[serde(skip)]
    pub id: String,
    pub who: String,
    pub pid: u32,
    pub host: String,
    pub started: String,
    pub command: String,
    pub message: String,
}

impl LockInfo {
    /// This process.
    pub fn current(command: &str, message: Option<&str>) -> Self {
        Self {
            id: String::new(),
            who: whoami(),
            pid: std::process::id(),
            host: hostname(),
            started: super::ledger::now_rfc3339(),
            command: command.to_string(),
            message: message.unwrap_or("").to_string(),
        }
    }

    /// Held by a process of this host that no longer exists.
    pub fn is_stale(&self) -> bool {
        self.host == hostname() && !pid_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "held by {} (pid {} on {}) since {} running `{}`{}",
            self.who,
            self.pid,
            self.host,
            self.started,
            self.command,
            if self.message.is_empty() {
                String::new()
            } else {
                format!(" — \"{}\"", self.message)
            }
        )
    }
}

pub fn whoami() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", nix::unistd::getuid()))
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    use nix::sys::signal::kill;
    // Signal 0 only checks for existence and permission (EPERM: it exists, owned by another user).
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    matches!(
        kill(nix::unistd::Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

pub fn lock_name(project: &str) -> String {
    format!("{project}-lock")
}

fn lock_image(project: &str) -> String {
    format!("{project}/mcpctl-lock:1")
}

/// How many locks [`acquire`] sets aside (takes over) before giving up.
const ATTEMPTS: usize = 5;
/// How long [`acquire`] waits for a lock name that is taken but shows no container (the engine
/// reserves a name before the container it creates can be inspected, and during a rename).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The lock this run holds: release it with [`release`].
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The lock container's id.
    pub id: String,
    /// The stale (or force-unlocked) holder this run replaced (it removed that lock, by id): the
    /// previous run died mid-way; reconcile.
    pub took_over: Option<LockInfo>,
}

/// Read the current holder, with its container id, if any.
pub async fn holder<E: Engine>(
    engine: &E,
    keys: &Keys,
    project: &str,
) -> crate::engine::Result<Option<LockInfo>> {
    let Some(c) = engine.inspect_container(&lock_name(project)).await? else {
        return Ok(None);
    };
    Ok(Some(info(keys, &c.info.id, &c.info.labels)))
}

fn info(keys: &Keys, id: &str, labels: &BTreeMap<String, String>) -> LockInfo {
    let get = |f: &str| labels.get(&keys.lock(f)).cloned().unwrap_or_default();
    LockInfo {
        id: id.to_string(),
        who: get("who"),
        pid: get("pid").parse().unwrap_or(0),
        host: get("host"),
        started: get("started"),
        command: get("command"),
        message: get("message"),
    }
}

/// Take the lock or say who holds it (`Ok(Err(holder))`).
///
/// On a conflict the holder is read with its id; a stale holder (any holder with `force`) is set
/// aside by that id and the create retried. The run that then holds the lock removes the
/// set-aside lock and reports it in `took_over`; a run that loses the name gets `Err(holder)`.
/// `force` breaks at most one lock: never one created after this run started breaking one.
pub async fn acquire<E: Engine>(
    engine: &E,
    keys: &Keys,
    project: &str,
    me: &LockInfo,
    force: bool,
) -> anyhow::Result<Result<Held, LockInfo>> {
    let image = lock_image(project);
    if engine.image_id(&image).await?.is_none() {
        // An empty image: the lock container is never started, it only needs to exist.
        let mut ctx = crate::engine::context::BuildContext::new();
        ctx.add_bytes("Dockerfile", "FROM scratch\nCMD [\"lock\"]\n", false);
        engine
            .build_image(
                ctx.to_tar()?,
                &image,
                &keys.base(project, "lock"),
                &mut |_| {},
            )
            .await?;
    }
    let mut labels = keys.base(project, "lock");
    let fields: BTreeMap<&str, String> = BTreeMap::from([
        ("who", me.who.clone()),
        ("pid", me.pid.to_string()),
        ("host", me.host.clone()),
        ("started", me.started.clone()),
        ("command", me.command.clone()),
        ("message", me.message.clone()),
    ]);
    for (k, v) in fields {
        labels.insert(keys.lock(k), v);
    }
    let spec = ContainerSpec {
        name: lock_name(project),
        image,
        cmd: vec!["lock".into()],
        env: BTreeMap::new(),
        labels,
        network: "none".into(),
        aliases: vec![],
        port: None,
        binds: vec![],
        memory: 0,
        nano_cpus: 0,
        pids: 0,
        shm_size: None,
        read_only_root: true,
        restart: Restart::No,
    };
    let mut force = force;
    let mut set_aside = 0;
    let deadline = std::time::Instant::now() + SETTLE;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        match engine.create_container(&spec).await {
            Ok(id) => {
                return match adopt(engine, keys, project, &id).await {
                    Ok(took_over) => Ok(Ok(Held { id, took_over })),
                    Err(e) => {
                        let _ = engine.remove_container_if_present(&id).await;
                        Err(e.into())
                    }
                };
            }
            Err(EngineError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(h) = holder(engine, keys, project).await? else {
            // Released in between, or still being created: try again in a moment.
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "could not take the lock {}: its name stayed taken for {}s with no container \
                     under it; retry, and see `docker ps -a --filter name={}`",
                    lock_name(project),
                    SETTLE.as_secs(),
                    lock_name(project)
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(200));
            continue;
        };
        if !(force || h.is_stale()) {
            return Ok(Err(h));
        }
        set_aside += 1;
        if set_aside > ATTEMPTS {
            anyhow::bail!(
                "could not take the lock {}: taken over {ATTEMPTS} times and still stale; \
                 retry, and see `docker ps -a --filter name={}`",
                lock_name(project),
                lock_name(project)
            );
        }
        // Set it aside under a name of its own, by id: of several runs that saw it, exactly one
        // succeeds (the others find it renamed or gone). The name is then free for whoever
        // creates the lock next, and that run adopts the set-aside lock.
        match engine
            .rename_container(&h.id, &set_aside_name(project, &h.id))
            .await
        {
            Ok(()) | Err(EngineError::Conflict(_) | EngineError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Whoever set it aside, `force` has broken the lock it was meant for; never a newer one.
        force = false;
    }
}

/// The name a stale (or force-unlocked) lock is set aside under while it is replaced.
fn set_aside_name(project: &str, id: &str) -> String {
    format!("{}-taken-{}", lock_name(project), &id[..id.len().min(12)])
}

/// Now that this run holds the lock (container `mine`), remove the locks set aside for it, by id:
/// a removal succeeds for exactly one holder, so exactly one run reports each takeover, even when
/// the run that set a lock aside lost the name to another or died before creating its own.
/// Returns the earliest-started one removed (the widest window to reconcile).
async fn adopt<E: Engine>(
    engine: &E,
    keys: &Keys,
    project: &str,
    mine: &str,
) -> crate::engine::Result<Option<LockInfo>> {
    let mut took_over: Option<LockInfo> = None;
    for c in engine
        .list_containers(&keys.project_filter(project))
        .await?
    {
        let role = c.labels.get(&keys.role()).map(String::as_str);
        if role != Some("lock") || c.id == mine || c.name == lock_name(project) {
            continue;
        }
        if !engine.remove_container_if_present(&c.id).await? {
            continue; // adopted by an earlier holder
        }
        let prev = info(keys, &c.id, &c.labels);
        if took_over.as_ref().is_none_or(|t| prev.started < t.started) {
            took_over = Some(prev);
        }
    }
    Ok(took_over)
}

/// Release the lock this run holds, by its id. If it is gone, another run force-unlocked it and
/// may hold a lock of its own under the same name: that one is left alone.
pub async fn release<E: Engine>(engine: &E, project: &str, held: &Held) {
    match engine.remove_container_if_present(&held.id).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the lock {} was taken over while this run held it (--force-unlock); \
             left the new holder's lock alone",
            lock_name(project)
        ),
        Err(e) => tracing::warn!("could not release the lock {}: {e}", lock_name(project)),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::engine::fake::FakeEngine;

    const P: &str = "lk";

    fn keys() -> Keys {
        Keys::new("com.mcp")
    }

    fn run(command: &str) -> LockInfo {
        LockInfo::current(command, None)
    }

    /// A run of this host whose pid cannot exist (above any pid_max).
    fn dead(command: &str) -> LockInfo {
        LockInfo {
            pid: 999_999_999,
            ..run(command)
        }
    }

    async fn take(e: &FakeEngine, me: &LockInfo, force: bool) -> Result<Held, LockInfo> {
        acquire(e, &keys(), P, me, force).await.unwrap()
    }

    async fn current(e: &FakeEngine) -> Option<LockInfo> {
        holder(e, &keys(), P).await.unwrap()
    }

    #[tokio::test]
    async fn a_free_lock_is_taken_fresh_and_released_by_id() {
        let e = FakeEngine::new();
        let me = run("deploy");
        let held = take(&e, &me, false).await.expect("free");
        assert_eq!(held.took_over, None);
        let h = current(&e).await.expect("held");
        assert_eq!(h.id, held.id, "holder() reports the container id");
        assert_eq!(h.describe(), me.describe(), "describe() ignores the id");
        assert_eq!(
            e.inspect_container(&held.id)
                .await
                .unwrap()
                .unwrap()
                .info
                .name,
            lock_name(P),
            "the fake resolves a container by id"
        );
        release(&e, P, &held).await;
        assert_eq!(current(&e).await, None);
    }

    #[tokio::test]
    async fn a_live_holder_is_reported_not_taken() {
        let e = FakeEngine::new();
        let held = take(&e, &run("deploy (first)"), false).await.expect("free");
        let got = take(&e, &run("deploy (second)"), false).await;
        let h = got.expect_err("held by a live pid");
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.command, "deploy (first)");
        assert_eq!(h.id, held.id);
        assert_eq!(current(&e).await.unwrap().id, held.id, "left in place");
    }

    #[tokio::test]
    async fn a_stale_lock_is_taken_over_by_exactly_one_of_many_concurrent_runs() {
        // Many interleavings: run i starts after `start(i)` turns of the executor, so runs meet
        // the stale lock, the gap after its removal and the winner's lock at different moments.
        let mut raced = 0;
        for pattern in 0..40u64 {
            let start = |i: u64| (i * (pattern + 3) + pattern * pattern) % (1 + pattern % 9);
            raced += u32::from(contend(8, start).await);
        }
        assert!(
            raced > 20,
            "the runs raced for the stale lock in {raced} of 40 patterns"
        );
    }

    /// `n` runs start against one stale lock; returns whether more than one tried to set it aside.
    async fn contend(n: u64, start: impl Fn(u64) -> u64) -> bool {
        let e = FakeEngine::new();
        let stale = take(&e, &dead("deploy (killed)"), false)
            .await
            .expect("free");
        let holding = Cell::new(0u32);
        let most = Cell::new(0u32);
        let runs = (0..n).map(|i| {
            let (e, holding, most) = (&e, &holding, &most);
            let turns = start(i);
            async move {
                for _ in 0..turns {
                    tokio::task::yield_now().await;
                }
                let got = take(e, &run(&format!("deploy {i}")), false).await;
                if let Ok(held) = &got {
                    holding.set(holding.get() + 1);
                    most.set(most.get().max(holding.get()));
                    // Hold it across a few engine round trips while the others contend.
                    for _ in 0..3 {
                        assert_eq!(current(e).await.unwrap().id, held.id, "still ours");
                    }
                    holding.set(holding.get() - 1);
                    release(e, P, held).await;
                }
                got
            }
        });
        let results = futures::future::join_all(runs).await;
        let took: Vec<&LockInfo> = results
            .iter()
            .filter_map(|r| r.as_ref().ok()?.took_over.as_ref())
            .collect();
        assert_eq!(took.len(), 1, "exactly one takeover: {results:#?}");
        assert_eq!(took[0].id, stale.id);
        assert_eq!(took[0].command, "deploy (killed)");
        assert_eq!(most.get(), 1, "never two holders at once");
        for r in &results {
            if let Err(h) = r {
                assert!(h.command.starts_with("deploy "), "a live contender: {h:?}");
                assert!(!h.is_stale());
            }
        }
        assert_eq!(current(&e).await, None, "every holder released");
        let removes = e
            .calls()
            .iter()
            .filter(|c| c.starts_with(&format!("rename {} ", stale.id)))
            .count();
        removes > 1
    }

    #[tokio::test]
    async fn a_force_taken_run_releases_nothing_of_the_new_holder() {
        let e = FakeEngine::new();
        let first = take(&e, &run("deploy (stuck)"), false).await.expect("free");
        let second = take(&e, &run("deploy --force-unlock"), true)
            .await
            .expect("forced");
        assert_eq!(second.took_over.as_ref().map(|p| &p.id), Some(&first.id));
        release(&e, P, &first).await;
        let h = current(&e).await.expect("the new holder keeps the lock");
        assert_eq!(h.id, second.id);
        assert_eq!(h.command, "deploy --force-unlock");
        release(&e, P, &second).await;
        assert_eq!(current(&e).await, None);
    }

    #[tokio::test]
    async fn a_stale_lock_is_taken_over_alone() {
        let e = FakeEngine::new();
        let stale = take(&e, &dead("deploy (killed)"), false)
            .await
            .expect("free");
        let held = take(&e, &run("deploy"), false).await.expect("stale");
        assert_eq!(held.took_over.map(|p| p.id), Some(stale.id));
    }

    #[tokio::test]
    async fn a_lock_set_aside_by_a_run_that_died_is_taken_over_by_the_next_holder() {
        let e = FakeEngine::new();
        let stale = take(&e, &dead("deploy (killed)"), false)
            .await
            .expect("free");
        // A run set it aside, then died before creating its own lock.
        e.rename_container(&stale.id, &set_aside_name(P, &stale.id))
            .await
            .unwrap();
        let held = take(&e, &run("deploy"), false).await.expect("free name");
        assert_eq!(held.took_over.as_ref().map(|p| &p.id), Some(&stale.id));
        assert!(e.inspect_container(&stale.id).await.unwrap().is_none());
        release(&e, P, &held).await;
        let again = take(&e, &run("deploy"), false).await.expect("free");
        assert_eq!(again.took_over, None, "a takeover is reported once");
    }
}
