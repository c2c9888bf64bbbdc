//! An in-memory [`Engine`] for unit tests of planning and execution: containers, images, networks
//! and volumes as plain maps, with the engine's observable rules (names unique, one holder per host
//! port, ephemeral ports assigned on start, unique container ids, a container named by name or id,
//! create-by-name atomic). Failure injection: images whose containers exit at start, and builds
//! that fail.
//!
//! Container operations yield to the executor before they act and again before they answer (a
//! request and a reply in flight), so concurrent futures on one fake interleave as concurrent
//! clients of one engine do; each operation itself is atomic, as in the engine.
//!
//! Must not: be used outside tests and benchmarks of pure logic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::{
    ContainerDetail, ContainerInfo, ContainerSpec, Engine, EngineError, ImageInfo, Result, RunState,
};
use crate::locks::MutexExt;

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub spec: ContainerSpec,
    pub state: RunState,
    pub id: String,
    pub created: i64,
    pub ports: BTreeMap<u16, u16>,
    pub exit_code: Option<i64>,
}

#[derive(Default)]
pub struct FakeState {
    pub containers: BTreeMap<String, FakeContainer>,
    pub images: BTreeMap<String, ImageInfo>,
    pub networks: BTreeMap<String, BTreeMap<String, String>>,
    pub volumes: BTreeMap<String, BTreeMap<String, String>>,
    /// Images whose containers exit (code 1) as soon as they start.
    pub crash_images: BTreeSet<String>,
    /// Tags whose build fails.
    pub failing_builds: BTreeSet<String>,
    /// Every mutating call, in order (`create NAME`, `start NAME`, ...), for assertions.
    pub calls: Vec<String>,
    next: i64,
}

#[derive(Default)]
pub struct FakeEngine {
    pub state: Mutex<FakeState>,
}

/// Give other futures on the executor a turn (once), whatever the executor.
async fn in_flight() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

fn matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

impl FakeEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pre-existing image (e.g. a base or an upstream image).
    pub fn add_image(&self, tag: &str, labels: BTreeMap<String, String>) {
        let mut s = self.state.lock_ignore_poison();
        s.next += 1;
        let (id, created) = (format!("sha256:{:064x}", s.next), s.next);
        s.images.insert(
            tag.to_string(),
            ImageInfo {
                id,
                tags: vec![tag.to_string()],
                labels,
                created,
                size: 1,
            },
        );
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock_ignore_poison().calls.clone()
    }

    /// The key (name) of the container called `name_or_id`: the full id first, then the name,
    /// as Docker resolves it.
    fn resolve(s: &FakeState, name_or_id: &str) -> Option<String> {
        s.containers
            .values()
            .find(|c| c.id == name_or_id)
            .map(|c| c.spec.name.clone())
            .or_else(|| {
                s.containers
                    .contains_key(name_or_id)
                    .then(|| name_or_id.to_string())
            })
    }

    fn info(c: &FakeContainer) -> ContainerInfo {
        ContainerInfo {
            id: c.id.clone(),
            name: c.spec.name.clone(),
            image: c.spec.image.clone(),
            labels: c.spec.labels.clone(),
            state: c.state.clone(),
            created: c.created,
            ports: c.ports.clone(),
        }
    }
}

impl Engine for FakeEngine {
    async fn version(&self) -> Result<String> {
        Ok("fake engine".into())
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerInfo>> {
        in_flight().await;
        let s = self.state.lock_ignore_poison();
        Ok(s.containers
            .values()
            .filter(|c| matches(&c.spec.labels, label))
            .map(Self::info)
            .collect())
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<ContainerDetail>> {
        in_flight().await;
        let detail = {
            let s = self.state.lock_ignore_poison();
            Self::resolve(&s, name).map(|key| {
                let c = &s.containers[&key];
                ContainerDetail {
                    info: Self::info(c),
                    exit_code: c.exit_code,
                    oom_killed: false,
                    started_at: None,
                    restart_count: 0,
                    health: None,
                    memory_limit: Some(c.spec.memory),
                }
            })
        };
        in_flight().await;
        Ok(detail)
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        in_flight().await;
        let id = {
            let mut s = self.state.lock_ignore_poison();
            if s.containers.contains_key(&spec.name) {
                return Err(EngineError::Conflict(format!("container {}", spec.name)));
            }
            if !s.images.contains_key(&spec.image) {
                return Err(EngineError::NotFound(format!("image {}", spec.image)));
            }
            s.next += 1;
            // Shaped like Docker's (64 hex digits), unique per engine.
            let (id, created) = (format!("{:064x}", 0xc0_0000 + s.next), s.next);
            s.calls.push(format!("create {}", spec.name));
            s.containers.insert(
                spec.name.clone(),
                FakeContainer {
                    spec: spec.clone(),
                    state: RunState::Created,
                    id: id.clone(),
                    created,
                    ports: BTreeMap::new(),
                    exit_code: None,
                },
            );
            id
        };
        in_flight().await;
        Ok(id)
    }

    async fn rename_container(&self, name: &str, new_name: &str) -> Result<()> {
        in_flight().await;
        {
            let mut s = self.state.lock_ignore_poison();
            s.calls.push(format!("rename {name} {new_name}"));
            let Some(key) = Self::resolve(&s, name) else {
                return Err(EngineError::NotFound(format!("container {name}")));
            };
            if s.containers.contains_key(new_name) {
                return Err(EngineError::Conflict(format!("container {new_name}")));
            }
            let mut c = s.containers.remove(&key).unwrap();
            c.spec.name = new_name.to_string();
            s.containers.insert(new_name.to_string(), c);
        }
        in_flight().await;
        Ok(())
    }

    async fn start_container(&self, name: &str) -> Result<()> {
        in_flight().await;
        let mut s = self.state.lock_ignore_poison();
        s.calls.push(format!("start {name}"));
        let Some(name) = Self::resolve(&s, name) else {
            return Err(EngineError::NotFound(format!("container {name}")));
        };
        let name = name.as_str();
        let c = s.containers[name].clone();
        let mut ports = BTreeMap::new();
        if let Some(p) = c.spec.port {
            let host = if p.host_port == 0 {
                s.next += 1;
                40000 + s.next as u16
            } else {
                p.host_port
            };
            let taken = s.containers.values().any(|o| {
                o.spec.name != name
                    && o.state == RunState::Running
                    && o.ports.values().any(|h| *h == host)
            });
            if taken {
                return Err(EngineError::PortTaken(format!(
                    "starting {name}: port {host} is already allocated"
                )));
            }
            ports.insert(p.container_port, host);
        }
        let crash = s.crash_images.contains(&c.spec.image);
        let c = s.containers.get_mut(name).unwrap();
        if crash {
            c.state = RunState::Exited;
            c.exit_code = Some(1);
        } else {
            c.state = RunState::Running;
            c.ports = ports;
            c.exit_code = None;
        }
        Ok(())
    }

    async fn stop_container(&self, name: &str, _timeout_s: i64) -> Result<()> {
        in_flight().await;
        let mut s = self.state.lock_ignore_poison();
        s.calls.push(format!("stop {name}"));
        let key = Self::resolve(&s, name).unwrap_or_default();
        match s.containers.get_mut(&key) {
            Some(c) => {
                if c.state == RunState::Running {
                    c.state = RunState::Exited;
                    c.exit_code = Some(0);
                }
                c.ports.clear();
                Ok(())
            }
            None => Err(EngineError::NotFound(format!("container {name}"))),
        }
    }

    async fn remove_container_if_present(&self, name: &str) -> Result<bool> {
        in_flight().await;
        let removed = {
            let mut s = self.state.lock_ignore_poison();
            s.calls.push(format!("remove {name}"));
            match Self::resolve(&s, name) {
                Some(key) => s.containers.remove(&key).is_some(),
                None => false,
            }
        };
        in_flight().await;
        Ok(removed)
    }

    async fn logs_tail(&self, name: &str, _lines: usize) -> Result<String> {
        Ok(format!("(fake logs of {name})\n"))
    }

    async fn follow_logs(
        &self,
        name: &str,
        _tail: usize,
        sink: &mut dyn FnMut(&str),
    ) -> Result<()> {
        sink(&format!("(fake logs of {name})\n"));
        Ok(())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        Ok(self
            .state
            .lock_ignore_poison()
            .images
            .get(reference)
            .map(|i| i.id.clone()))
    }

    async fn build_image(
        &self,
        _context: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String> {
        on_line(&format!("Step 1/1 : fake build of {tag}"));
        if self.state.lock_ignore_poison().failing_builds.contains(tag) {
            return Err(EngineError::Build {
                message: "The command '/bin/sh -c false' returned a non-zero code: 1".into(),
                tail: vec!["Step 1/1 : RUN false".into()],
            });
        }
        self.state
            .lock_ignore_poison()
            .calls
            .push(format!("build {tag}"));
        self.add_image(tag, labels.clone());
        Ok(self.state.lock_ignore_poison().images[tag].id.clone())
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>> {
        let s = self.state.lock_ignore_poison();
        Ok(s.images
            .values()
            .filter(|i| matches(&i.labels, label))
            .cloned()
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let mut s = self.state.lock_ignore_poison();
        if s.containers.values().any(|c| c.spec.image == reference) {
            return Err(EngineError::Conflict(format!(
                "image {reference} is in use"
            )));
        }
        s.calls.push(format!("rmi {reference}"));
        s.images.remove(reference);
        Ok(())
    }

    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.state
            .lock_ignore_poison()
            .networks
            .entry(name.into())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    async fn list_networks(&self, label: &str) -> Result<Vec<String>> {
        let s = self.state.lock_ignore_poison();
        Ok(s.networks
            .iter()
            .filter(|(_, l)| matches(l, label))
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.state.lock_ignore_poison().networks.remove(name);
        Ok(())
    }

    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        self.state
            .lock_ignore_poison()
            .volumes
            .entry(name.into())
            .or_insert_with(|| labels.clone());
        Ok(())
    }

    async fn list_volumes(&self, label: &str) -> Result<Vec<String>> {
        let s = self.state.lock_ignore_poison();
        Ok(s.volumes
            .iter()
            .filter(|(_, l)| matches(l, label))
            .map(|(n, _)| n.clone())
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.state.lock_ignore_poison().volumes.remove(name);
        Ok(())
    }

    async fn copy_out(&self, container: &str, path: &str, dest: &std::path::Path) -> Result<u64> {
        self.state
            .lock_ignore_poison()
            .calls
            .push(format!("copy_out {container}:{path}"));
        std::fs::write(dest, b"fake tar").map_err(|e| EngineError::Other(e.to_string()))?;
        Ok(8)
    }

    async fn usage(&self, _name: &str) -> Result<Option<super::Usage>> {
        Ok(None)
    }
}
