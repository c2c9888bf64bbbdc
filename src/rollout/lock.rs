//! The rollout lock, held on the engine: a stopped, labelled `<project>-lock` container created by
//! name. Creation by name is atomic in the engine (a second create gets 409), so two mcpctl runs on
//! different hosts against one engine cannot both hold it. The labels say who holds it, from
//! which pid and host, since when, for which command and why (`--message`).
//!
//! A lock whose holder ran on this host and whose pid is gone is stale: the next run takes it
//! over and reconciles (crash recovery). Anything else needs `--force-unlock`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::labels::Keys;
use crate::engine::{ContainerSpec, Engine, EngineError, Restart};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LockInfo {
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
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }))
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

pub fn lock_name(project: &str) -> String {
    format!("{project}-lock")
}

fn lock_image(project: &str) -> String {
    format!("{project}/mcpctl-lock:1")
}

pub enum Acquired {
    Fresh,
    /// A stale lock was taken over: the previous run died mid-way; reconcile.
    TookOver(LockInfo),
}

/// Read the current holder, if any.
pub async fn holder<E: Engine>(
    engine: &E,
    keys: &Keys,
    project: &str,
) -> crate::engine::Result<Option<LockInfo>> {
    let Some(c) = engine.inspect_container(&lock_name(project)).await? else {
        return Ok(None);
    };
    let l = &c.info.labels;
    let get = |f: &str| l.get(&keys.lock(f)).cloned().unwrap_or_default();
    Ok(Some(LockInfo {
        who: get("who"),
        pid: get("pid").parse().unwrap_or(0),
        host: get("host"),
        started: get("started"),
        command: get("command"),
        message: get("message"),
    }))
}

/// Take the lock or say who holds it (`Err(Some(holder))`).
pub async fn acquire<E: Engine>(
    engine: &E,
    keys: &Keys,
    project: &str,
    me: &LockInfo,
    force: bool,
) -> anyhow::Result<Result<Acquired, LockInfo>> {
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
    let mut took_over = None;
    for _ in 0..2 {
        match engine.create_container(&spec).await {
            Ok(()) => {
                return Ok(Ok(match took_over {
                    Some(prev) => Acquired::TookOver(prev),
                    None => Acquired::Fresh,
                }))
            }
            Err(EngineError::Conflict(_)) => {
                let Some(h) = holder(engine, keys, project).await? else {
                    continue;
                };
                if force || h.is_stale() {
                    engine.remove_container(&lock_name(project)).await?;
                    took_over = Some(h);
                    continue;
                }
                return Ok(Err(h));
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!(
        "could not take the lock {}: it keeps being re-created",
        lock_name(project)
    )
}

pub async fn release<E: Engine>(engine: &E, project: &str) {
    if let Err(e) = engine.remove_container(&lock_name(project)).await {
        tracing::warn!("could not release the lock {}: {e}", lock_name(project));
    }
}
