//! The container engine as mcpctl sees it: a small trait over the few Docker operations rollout
//! needs, a bollard implementation (`docker`), an in-memory fake for unit tests (`fake`), the
//! contract labels (`labels`) and build-context assembly (`context`).
//!
//! Owns: talking to the engine. Must not: decide what to deploy (rollout), speak MCP (health),
//! or print (output). Docker is the truth about what runs; nothing here caches engine state.

pub mod context;
pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod labels;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What went wrong talking to the engine, in terms rollout can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker engine ({0}); start it (as root: `scripts/setup`, or `dockerd &`) or point DOCKER_HOST at a running engine")]
    Unreachable(String),
    /// The name is taken (used by the lock: creation by name is the atomic test-and-set).
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A published host port is held by something else.
    #[error("{0}")]
    PortTaken(String),
    #[error("image build failed: {message}")]
    Build { message: String, tail: Vec<String> },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Restart policy of a container. Serving revisions restart unless stopped (a stopped, retained
/// revision stays stopped across engine restarts); gate candidates never restart, so a crash shows
/// up as an exit instead of a restart loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    UnlessStopped,
    No,
}

/// A host path or named volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// An absolute host path or a volume name.
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// One published port: `host_ip:host_port -> container_port/tcp`. `host_port` 0 = ephemeral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub host_ip: std::net::IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// Everything needed to create a container. Also the "recorded config" of a revision: rollout
/// stores it (minus labels) as JSON in the `<p>.spec` label so a revision can be recreated from
/// Docker alone, with no state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Arguments after the image's ENTRYPOINT (the bridge): the stdio server's argv.
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    pub network: String,
    pub aliases: Vec<String>,
    pub port: Option<PortSpec>,
    pub binds: Vec<Bind>,
    pub memory: i64,
    pub nano_cpus: i64,
    pub pids: i64,
    pub shm_size: Option<i64>,
    pub read_only_root: bool,
    pub restart: Restart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Restarting,
    Exited,
    Other,
}

/// A container as listed (no per-container inspect needed).
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    /// Unix seconds.
    pub created: i64,
    /// Host ports published, by container port.
    pub ports: BTreeMap<u16, u16>,
}

/// Details only inspect gives.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerDetail {
    pub info: ContainerInfo,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub restart_count: i64,
    /// Docker's own health status (healthy / unhealthy / starting), if the image has a check.
    pub health: Option<String>,
    pub memory_limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub created: i64,
    pub size: i64,
}

/// The operations rollout needs. Implementations: [`docker::DockerEngine`], [`fake::FakeEngine`].
/// Futures are awaited on the caller's runtime; nothing requires them to be `Send`.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// The engine's version and negotiated API version, or `Unreachable`.
    async fn version(&self) -> Result<String>;
    /// Every container (running or not) carrying `label` (`key=value` or `key`).
    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerInfo>>;
    /// By name or id (as everywhere a container is named below).
    async fn inspect_container(&self, name: &str) -> Result<Option<ContainerDetail>>;
    /// Create by name and return the new container's id; `Conflict` when the name is taken
    /// (atomic in the engine: of two concurrent creates of one name, exactly one succeeds).
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String>;
    /// Rename (by name or id); `NotFound` when gone, `Conflict` when `new_name` is taken (the
    /// container's own name included): like create, atomic in the engine.
    async fn rename_container(&self, name_or_id: &str, new_name: &str) -> Result<()>;
    async fn start_container(&self, name: &str) -> Result<()>;
    async fn stop_container(&self, name: &str, timeout_s: i64) -> Result<()>;
    /// Force-remove (also its anonymous volumes). Missing is fine.
    async fn remove_container(&self, name: &str) -> Result<()> {
        self.remove_container_if_present(name).await.map(|_| ())
    }
    /// Force-remove (also its anonymous volumes); `Ok(false)` when it was already gone. By id,
    /// this tells which of several concurrent removers removed it: only one gets `Ok(true)` (the
    /// others get `Ok(false)`, or `Conflict` while the engine is still removing it).
    async fn remove_container_if_present(&self, name_or_id: &str) -> Result<bool>;
    /// The last `lines` lines of stdout+stderr.
    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String>;
    /// Stream logs to `sink` (follow until the container stops or the caller drops the future).
    async fn follow_logs(&self, name: &str, tail: usize, sink: &mut dyn FnMut(&str)) -> Result<()>;
    /// The container's stdout only (no stderr), its last `tail` lines among those logged at or
    /// after `since` and before `until` (Unix seconds, as Docker stamps lines; `None`: no bound),
    /// handed to `sink` in chunks that may end mid-line. Used by `mcpctl audit`. The default (for
    /// engines without the filters) hands over `logs_tail`: both streams and no time bounds, so a
    /// caller must filter the lines itself.
    async fn stdout_logs(
        &self,
        name: &str,
        tail: usize,
        since: Option<i64>,
        until: Option<i64>,
        sink: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let _ = (since, until);
        sink(&self.logs_tail(name, tail).await?);
        Ok(())
    }
    /// The image id of a reference, `None` when absent.
    async fn image_id(&self, reference: &str) -> Result<Option<String>>;
    /// Build `tag` from a tar context with no network (offline builds); `on_line` gets each log line.
    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String>;
    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>>;
    /// Remove an image reference; `Conflict` when a container still uses it.
    async fn remove_image(&self, reference: &str) -> Result<()>;
    /// An image by reference (tag or id): its id, every tag it carries, labels and size; `None`
    /// when absent. The default (engines without inspect) knows only the id and the reference.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.image_id(reference).await?.map(|id| ImageInfo {
            id,
            tags: vec![reference.to_string()],
            labels: BTreeMap::new(),
            created: 0,
            size: 0,
        }))
    }
    /// `docker save` of one image under `references` (its tags, or its id), streamed into `sink`
    /// chunk by chunk (never held in memory); returns the bytes written. Used by
    /// `mcpctl images export`; the caller owns the file (temporary name, fsync, rename).
    async fn save_image(
        &self,
        references: &[String],
        sink: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let _ = sink;
        Err(EngineError::Other(format!(
            "saving {} is not supported by this engine",
            references.join(" ")
        )))
    }
    /// `docker load` of the tar at `path`, streamed from disk; `on_line` gets each line the
    /// engine reports (`Loaded image: NAME:TAG`). Used by `mcpctl images import`.
    async fn load_image(
        &self,
        path: &std::path::Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let _ = on_line;
        Err(EngineError::Other(format!(
            "loading {} is not supported by this engine",
            path.display()
        )))
    }
    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()>;
    async fn list_networks(&self, label: &str) -> Result<Vec<String>>;
    async fn remove_network(&self, name: &str) -> Result<()>;
    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()>;
    async fn list_volumes(&self, label: &str) -> Result<Vec<String>>;
    async fn remove_volume(&self, name: &str) -> Result<()>;
    /// Copy a path out of a (possibly stopped) container — volumes mounted there included — as a
    /// tar file at `dest`; returns its size. Used to back up a database volume before replacing it.
    async fn copy_out(&self, container: &str, path: &str, dest: &std::path::Path) -> Result<u64>;
    /// Memory used (usage − inactive_file, as `docker stats` shows) and limit, of a running container.
    /// Memory used (usage − inactive_file, as `docker stats` shows) and limit, in bytes.
    async fn memory(&self, name: &str) -> Result<Option<(u64, u64)>> {
        Ok(self
            .usage(name)
            .await?
            .map(|u| (u.memory_used, u.memory_limit)))
    }
    /// One stats sample of a running container: memory and cumulative CPU time.
    async fn usage(&self, name: &str) -> Result<Option<Usage>>;
    /// Run a one-off container to completion (backup, verify, restore): see [`JobSpec`]. The
    /// container is removed afterwards whatever happened.
    async fn run_job(&self, job: &JobSpec) -> Result<JobResult> {
        Err(EngineError::Other(format!(
            "job {}: this engine does not run one-off containers",
            job.name
        )))
    }
}

/// A one-off container: created from `image` with `entrypoint` (the image's own is replaced),
/// the hardened host config of every mcpctl container (no capabilities, no-new-privileges,
/// memory and pids limits, never restarted), `input` unpacked into it before it starts, run
/// until it exits or `timeout` passes (then it is killed: an error), `output` copied out, then
/// removed. Secret values reach it only as read-only bind mounts, never in `env`.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub image: String,
    pub entrypoint: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// A network to join (the project's, to reach a database by its alias), or none.
    pub network: Option<String>,
    pub binds: Vec<Bind>,
    pub memory: i64,
    /// Run as this user instead of the image's (`0` to restore files of any owner).
    pub user: Option<String>,
    /// Capabilities given back (every other one stays dropped).
    pub cap_add: Vec<String>,
    /// A host tar file unpacked at this container directory before the start (streamed).
    pub input: Option<(std::path::PathBuf, String)>,
    /// A container path copied out after the exit, as a tar file at this host path.
    pub output: Option<(String, std::path::PathBuf)>,
    pub timeout: std::time::Duration,
}

/// How a job ended: its exit code and the tail of its log (stdout and stderr, at most
/// [`JOB_LOG_LINES`] lines), and the size of the copied-out tar.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub exit_code: i64,
    pub logs: String,
    pub output_bytes: u64,
}

/// Lines of a job's log kept in [`JobResult`].
pub const JOB_LOG_LINES: usize = 400;

/// One resource sample of a container.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub memory_used: u64,
    pub memory_limit: u64,
    /// CPU time used since the container started, in seconds.
    pub cpu_seconds: f64,
}
