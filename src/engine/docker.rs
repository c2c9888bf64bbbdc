//! The bollard implementation of [`Engine`]: the local Docker engine over its socket (or
//! DOCKER_HOST), API version negotiated (20.10 speaks 1.41), classic builder only.
//!
//! Must not: retry or interpret outcomes (rollout decides), or print.

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as BError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    HostConfigLogConfig, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters as q;
use bollard::Docker;
use futures::StreamExt;

use super::{
    ContainerDetail, ContainerInfo, ContainerSpec, Engine, EngineError, ImageInfo, Restart, Result,
    RunState,
};

pub struct DockerEngine {
    docker: Docker,
    version: String,
}

impl DockerEngine {
    /// Connect (DOCKER_HOST or the local socket) and negotiate the API version.
    pub async fn connect() -> Result<Self> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let docker = Docker::connect_with_defaults()
            .map_err(|e| EngineError::Unreachable(format!("{host}: {e}")))?
            .with_timeout(std::time::Duration::from_secs(300));
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| EngineError::Unreachable(format!("{host}: {e}")))?;
        let v = docker
            .version()
            .await
            .map_err(|e| EngineError::Unreachable(format!("{host}: {e}")))?;
        let version = format!(
            "Docker {} (API {})",
            v.version.unwrap_or_default(),
            docker.client_version()
        );
        Ok(Self { docker, version })
    }

    /// The negotiated bollard client, for read-only views that need Docker's own JSON
    /// (`mcpctl docker-proxy`).
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

fn map_err(what: &str, e: BError) -> EngineError {
    match e {
        BError::DockerResponseServerError {
            status_code: 409,
            message,
        } => EngineError::Conflict(format!("{what}: {message}")),
        BError::DockerResponseServerError {
            status_code: 404,
            message,
        } => EngineError::NotFound(format!("{what}: {message}")),
        BError::DockerResponseServerError { message, .. }
            if message.contains("port is already allocated")
                || message.contains("address already in use") =>
        {
            EngineError::PortTaken(format!("{what}: {message}"))
        }
        BError::DockerResponseServerError {
            status_code,
            message,
        } => EngineError::Other(format!("{what}: engine answered {status_code}: {message}")),
        e @ (BError::HyperLegacyError { .. }
        | BError::IOError { .. }
        | BError::SocketNotFoundError(_)) => EngineError::Unreachable(e.to_string()),
        e => EngineError::Other(format!("{what}: {e}")),
    }
}

fn label_filter(label: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), vec![label.to_string()])])
}

fn to_btree(m: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

/// The host configuration every mcpctl container shares: memory limit without extra swap, CPU and
/// PID limits, a read-only root with a small `/tmp` tmpfs (when `tmpfs` names its size), all
/// capabilities dropped, no privilege escalation, rotated JSON logs, the restart policy. Callers
/// add ports, mounts and the network.
pub(crate) fn hardened_host_config(
    memory: i64,
    nano_cpus: i64,
    pids: i64,
    tmpfs: Option<&str>,
    restart: Restart,
) -> HostConfig {
    HostConfig {
        memory: Some(memory),
        // Swap equal to memory: the limit is the limit, no silent swapping beyond it.
        memory_swap: Some(memory),
        nano_cpus: Some(nano_cpus),
        pids_limit: Some(pids),
        readonly_rootfs: Some(tmpfs.is_some()),
        tmpfs: tmpfs.map(|size| {
            HashMap::from([("/tmp".to_string(), format!("rw,noexec,nosuid,size={size}"))])
        }),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), "10m".to_string()),
                ("max-file".to_string(), "3".to_string()),
            ])),
        }),
        restart_policy: Some(RestartPolicy {
            name: Some(match restart {
                Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                Restart::No => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: None,
        }),
        ..Default::default()
    }
}

/// `source:target:ro|rw`, the engine's bind syntax.
fn bind_specs(binds: &[super::Bind]) -> Vec<String> {
    binds
        .iter()
        .map(|b| {
            format!(
                "{}:{}:{}",
                b.source,
                b.target,
                if b.read_only { "ro" } else { "rw" }
            )
        })
        .collect()
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings = HashMap::new();
    let mut exposed = Vec::new();
    if let Some(p) = spec.port {
        let key = format!("{}/tcp", p.container_port);
        exposed.push(key.clone());
        port_bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(if p.host_port == 0 {
                    String::new()
                } else {
                    p.host_port.to_string()
                }),
            }]),
        );
    }
    let binds = bind_specs(&spec.binds);
    let host_config = HostConfig {
        shm_size: spec.shm_size,
        port_bindings: Some(port_bindings),
        binds: Some(binds),
        network_mode: Some(spec.network.clone()),
        ..hardened_host_config(
            spec.memory,
            spec.nano_cpus,
            spec.pids,
            spec.read_only_root.then_some("64m"),
            spec.restart,
        )
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        // An empty command keeps the image's CMD (a database runs its entrypoint as built).
        cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        // Aliases exist only on user-defined networks (not on `none`, used by the lock).
        networking_config: (!spec.aliases.is_empty()).then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings {
                    aliases: Some(spec.aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// A host file as a request body, streamed from disk a chunk at a time (the first read error
/// ends the body): image loads and job inputs are as large as the data, never held in memory.
async fn file_body(
    path: &std::path::Path,
) -> std::io::Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static> {
    use tokio::io::AsyncReadExt as _;
    const CHUNK: usize = 1 << 20;
    let file = tokio::fs::File::open(path).await?;
    Ok(futures::stream::unfold(Some(file), |file| async move {
        let mut f = file?;
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        match f.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(f))),
            Err(e) => Some((Err(e), None)),
        }
    }))
}

impl DockerEngine {
    /// The body of [`Engine::run_job`] once the container exists: input, start, wait, output.
    async fn job_steps(&self, job: &super::JobSpec) -> Result<super::JobResult> {
        let name = &job.name;
        if let Some((tar, dir)) = &job.input {
            let body = file_body(tar).await.map_err(|e| {
                EngineError::Other(format!("job {name}: reading {}: {e}", tar.display()))
            })?;
            let opts = q::UploadToContainerOptionsBuilder::default()
                .path(dir)
                .build();
            self.docker
                .upload_to_container(name, Some(opts), bollard::body_try_stream(body))
                .await
                .map_err(|e| map_err(&format!("copying {} into job {name}", tar.display()), e))?;
        }
        self.start_container(name).await?;
        let wait = async {
            let mut stream = self
                .docker
                .wait_container(name, None::<q::WaitContainerOptions>);
            match stream.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard reports a nonzero exit as an error carrying the code.
                Some(Err(BError::DockerContainerWaitError { code, .. })) => Ok(code),
                Some(Err(e)) => Err(map_err(&format!("waiting for job {name}"), e)),
                None => Err(EngineError::Other(format!(
                    "job {name}: the engine ended the wait without an exit code"
                ))),
            }
        };
        let exit_code = match tokio::time::timeout(job.timeout, wait).await {
            Ok(code) => code?,
            Err(_) => {
                let logs = self.logs_tail(name, 20).await.unwrap_or_default();
                return Err(EngineError::Other(format!(
                    "job {name} did not finish within {:?} and was stopped; its last lines:\n{logs}",
                    job.timeout
                )));
            }
        };
        let logs = self.logs_tail(name, super::JOB_LOG_LINES).await?;
        let mut output_bytes = 0;
        if exit_code == 0 {
            if let Some((path, dest)) = &job.output {
                output_bytes = self.copy_out(name, path, dest).await?;
            }
        }
        Ok(super::JobResult {
            exit_code,
            logs,
            output_bytes,
        })
    }

    /// One build of [`Engine::build_image`] (the engine's classic builder, offline).
    async fn build_image_once(
        &self,
        context: bytes::Bytes,
        tag: &str,
        labels: &BTreeMap<String, String>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let labels: HashMap<String, String> = labels.clone().into_iter().collect();
        let opts = q::BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            // Offline builds: everything the image needs is in the context.
            .networkmode("none")
            .labels(&labels)
            .build();
        let mut stream = self
            .docker
            .build_image(opts, None, Some(bollard::body_full(context)));
        let mut tail: Vec<String> = Vec::new();
        let mut push = |line: &str, tail: &mut Vec<String>| {
            for l in line.lines().filter(|l| !l.trim().is_empty()) {
                on_line(l);
                tail.push(l.to_string());
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
        };
        let mut id = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(s) = info.stream.as_deref() {
                        push(s, &mut tail);
                    }
                    if let Some(s) = info.status.as_deref() {
                        push(s, &mut tail);
                    }
                    if let Some(err) = info.error_detail.and_then(|d| d.message) {
                        push(&err, &mut tail);
                        return Err(EngineError::Build { message: err, tail });
                    }
                    if let Some(aux) = info.aux.and_then(|a| a.id) {
                        id = Some(aux);
                    }
                }
                Err(BError::DockerStreamError { error }) => {
                    push(&error, &mut tail);
                    return Err(EngineError::Build {
                        message: error,
                        tail,
                    });
                }
                Err(e) => {
                    let e = map_err(&format!("building {tag}"), e);
                    if matches!(e, EngineError::Unreachable(_)) {
                        return Err(e);
                    }
                    return Err(EngineError::Build {
                        message: e.to_string(),
                        tail,
                    });
                }
            }
        }
        match id {
            Some(id) => Ok(id),
            None => self.image_id(tag).await?.ok_or_else(|| EngineError::Build {
                message: format!("the engine produced no image {tag}"),
                tail,
            }),
        }
    }
}

/// How often [`Engine::build_image`] builds at most when a cached layer vanishes under it.
const BUILD_ATTEMPTS: u32 = 3;

/// The classic builder's error when an intermediate image it reused ("Using cache") was deleted
/// before its next step ran: removing an image also removes its untagged parents that no other
/// image uses, so a concurrent prune or `down` of another project (or another test) can take a
/// layer this build shares. Building again recreates it; nothing about the context is wrong.
fn lost_cached_layer(message: &str) -> bool {
    message.contains("No such image: sha256:")
}

impl Engine for DockerEngine {
    async fn version(&self) -> Result<String> {
        Ok(self.version.clone())
    }

    async fn list_containers(&self, label: &str) -> Result<Vec<ContainerInfo>> {
        let opts = q::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filter(label))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| map_err("listing containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                labels: to_btree(c.labels),
                state: match c.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
                    Some(ContainerSummaryStateEnum::CREATED) => RunState::Created,
                    Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Restarting,
                    Some(ContainerSummaryStateEnum::EXITED) => RunState::Exited,
                    _ => RunState::Other,
                },
                created: c.created.unwrap_or_default(),
                ports: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| Some((p.private_port, p.public_port?)))
                    .collect(),
            })
            .collect())
    }

    async fn inspect_container(&self, name: &str) -> Result<Option<ContainerDetail>> {
        let c = match self
            .docker
            .inspect_container(name, None::<q::InspectContainerOptions>)
            .await
        {
            Ok(c) => c,
            Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(map_err(name, e)),
        };
        let state = c.state.clone().unwrap_or_default();
        let config = c.config.clone().unwrap_or_default();
        let ports = c
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| {
                let cport: u16 = k.split('/').next()?.parse().ok()?;
                let hport: u16 = v?.first()?.host_port.as_ref()?.parse().ok()?;
                Some((cport, hport))
            })
            .collect();
        use bollard::models::ContainerStateStatusEnum as S;
        let run = match state.status {
            Some(S::RUNNING) => RunState::Running,
            Some(S::CREATED) => RunState::Created,
            Some(S::RESTARTING) => RunState::Restarting,
            Some(S::EXITED) => RunState::Exited,
            _ => RunState::Other,
        };
        Ok(Some(ContainerDetail {
            info: ContainerInfo {
                id: c.id.clone().unwrap_or_default(),
                name: c
                    .name
                    .clone()
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                image: config.image.clone().unwrap_or_default(),
                labels: to_btree(config.labels.clone()),
                state: run,
                created: 0,
                ports,
            },
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: state.started_at.clone(),
            restart_count: c.restart_count.unwrap_or(0),
            health: state.health.and_then(|h| h.status).map(|s| s.to_string()),
            memory_limit: c.host_config.and_then(|h| h.memory),
        }))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String> {
        let opts = q::CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(opts), create_body(spec))
            .await
            .map_err(|e| map_err(&format!("creating {}", spec.name), e))?;
        Ok(created.id)
    }

    async fn rename_container(&self, name: &str, new_name: &str) -> Result<()> {
        let opts = q::RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        match self.docker.rename_container(name, opts).await {
            Ok(()) => Ok(()),
            // 400 "Renaming a container with the same name as its current name": it is taken.
            Err(BError::DockerResponseServerError {
                status_code: 400,
                message,
            }) if message.contains("same name") => Err(EngineError::Conflict(format!(
                "renaming {name} to {new_name}: {message}"
            ))),
            Err(e) => Err(map_err(&format!("renaming {name} to {new_name}"), e)),
        }
    }

    async fn start_container(&self, name: &str) -> Result<()> {
        self.docker
            .start_container(name, None::<q::StartContainerOptions>)
            .await
            .map_err(|e| map_err(&format!("starting {name}"), e))
    }

    async fn stop_container(&self, name: &str, timeout_s: i64) -> Result<()> {
        let opts = q::StopContainerOptionsBuilder::default()
            .t(timeout_s as i32)
            .build();
        match self.docker.stop_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(BError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(&format!("stopping {name}"), e)),
        }
    }

    async fn remove_container_if_present(&self, name: &str) -> Result<bool> {
        let opts = q::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(true),
            Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            // 409 "removal of container … is already in progress" is a `Conflict`.
            Err(e) => Err(map_err(&format!("removing {name}"), e)),
        }
    }

    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String> {
        let opts = q::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut out = String::new();
        let mut stream = self.docker.logs(name, Some(opts));
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => return Err(map_err(&format!("logs of {name}"), e)),
            }
        }
        Ok(out)
    }

    async fn follow_logs(&self, name: &str, tail: usize, sink: &mut dyn FnMut(&str)) -> Result<()> {
        let opts = q::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => sink(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => return Err(map_err(&format!("logs of {name}"), e)),
            }
        }
        Ok(())
    }

    async fn stdout_logs(
        &self,
        name: &str,
        tail: usize,
        since: Option<i64>,
        until: Option<i64>,
        sink: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let secs = |t: i64| i32::try_from(t.max(0)).unwrap_or(i32::MAX);
        let mut opts = q::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(false)
            .tail(&tail.to_string());
        if let Some(t) = since {
            opts = opts.since(secs(t));
        }
        if let Some(t) = until {
            opts = opts.until(secs(t));
        }
        let mut stream = self.docker.logs(name, Some(opts.build()));
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => sink(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) => return Err(map_err(&format!("logs of {name}"), e)),
            }
        }
        Ok(())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(map_err(&format!("inspecting image {reference}"), e)),
        }
    }

    async fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<String> {
        // Shared, not copied, between attempts.
        let context = bytes::Bytes::from(context);
        let mut attempt = 1;
        loop {
            match self
                .build_image_once(context.clone(), tag, labels, on_line)
                .await
            {
                Err(EngineError::Build { message, .. })
                    if attempt < BUILD_ATTEMPTS && lost_cached_layer(&message) =>
                {
                    attempt += 1;
                    tracing::warn!(tag, %message, attempt, "a cached layer this build used was removed while it ran (removing another image took its untagged parent); building again");
                }
                other => return other,
            }
        }
    }

    async fn list_images(&self, label: &str) -> Result<Vec<ImageInfo>> {
        let opts = q::ListImagesOptionsBuilder::default()
            .all(false)
            .filters(&label_filter(label))
            .build();
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| map_err("listing images", e))?;
        Ok(list
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels.into_iter().collect(),
                created: i.created,
                size: i.size,
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let opts = q::RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_)
            | Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_err(&format!("removing image {reference}"), e)),
        }
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let i = match self.docker.inspect_image(reference).await {
            Ok(i) => i,
            Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(map_err(&format!("inspecting image {reference}"), e)),
        };
        let created = i
            .created
            .as_deref()
            .and_then(|t| t.split('.').next())
            .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Ok(i.id.map(|id| ImageInfo {
            id,
            tags: i
                .repo_tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect(),
            labels: to_btree(i.config.and_then(|c| c.labels)),
            created,
            size: i.size.unwrap_or(0),
        }))
    }

    async fn save_image(
        &self,
        references: &[String],
        sink: &mut dyn std::io::Write,
    ) -> Result<u64> {
        let what = format!("saving {}", references.join(" "));
        let names: Vec<&str> = references.iter().map(String::as_str).collect();
        // `GET /images/get?names=…`: one image under all its tags (`export_image` takes one name).
        let mut stream = self.docker.export_images(&names);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| map_err(&what, e))?;
            sink.write_all(&chunk)
                .map_err(|e| EngineError::Other(format!("{what}: writing the tar: {e}")))?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    async fn load_image(
        &self,
        path: &std::path::Path,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let what = format!("loading {}", path.display());
        let body = file_body(path)
            .await
            .map_err(|e| EngineError::Other(format!("{what}: {e}")))?;
        // Not quiet: the engine answers (and reports progress) while it loads, not only at the end.
        let opts = q::ImportImageOptionsBuilder::default().quiet(false).build();
        let mut stream = self
            .docker
            .import_image(opts, bollard::body_try_stream(body), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    for s in [info.stream.as_deref(), info.status.as_deref()]
                        .into_iter()
                        .flatten()
                    {
                        for l in s.lines().filter(|l| !l.trim().is_empty()) {
                            on_line(l);
                        }
                    }
                }
                Err(BError::DockerStreamError { error }) => {
                    return Err(EngineError::Other(format!("{what}: {error}")))
                }
                Err(e) => return Err(map_err(&what, e)),
            }
        }
        Ok(())
    }

    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        if self
            .docker
            .inspect_network(name, None::<q::InspectNetworkOptions>)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        match self.docker.create_network(req).await {
            Ok(_)
            | Err(BError::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(map_err(&format!("creating network {name}"), e)),
        }
    }

    async fn list_networks(&self, label: &str) -> Result<Vec<String>> {
        let opts = q::ListNetworksOptionsBuilder::default()
            .filters(&label_filter(label))
            .build();
        let list = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| map_err("listing networks", e))?;
        Ok(list.into_iter().filter_map(|n| n.name).collect())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Ok(())
            | Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_err(&format!("removing network {name}"), e)),
        }
    }

    async fn ensure_volume(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<()> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        // Creating an existing volume returns it unchanged.
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|e| map_err(&format!("creating volume {name}"), e))
    }

    async fn list_volumes(&self, label: &str) -> Result<Vec<String>> {
        let opts = q::ListVolumesOptionsBuilder::default()
            .filters(&label_filter(label))
            .build();
        let list = self
            .docker
            .list_volumes(Some(opts))
            .await
            .map_err(|e| map_err("listing volumes", e))?;
        Ok(list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, None::<q::RemoveVolumeOptions>)
            .await
        {
            Ok(())
            | Err(BError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(map_err(&format!("removing volume {name}"), e)),
        }
    }

    async fn copy_out(&self, container: &str, path: &str, dest: &std::path::Path) -> Result<u64> {
        use std::io::Write;
        let opts = q::DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(container, Some(opts));
        let io = |e: std::io::Error| EngineError::Other(format!("writing {}: {e}", dest.display()));
        let mut f = std::fs::File::create(dest).map_err(io)?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| map_err(&format!("copying {path} out of {container}"), e))?;
            f.write_all(&chunk).map_err(io)?;
            n += chunk.len() as u64;
        }
        f.sync_all().map_err(io)?;
        Ok(n)
    }

    async fn run_job(&self, job: &super::JobSpec) -> Result<super::JobResult> {
        let host_config = HostConfig {
            binds: Some(bind_specs(&job.binds)),
            network_mode: Some(job.network.clone().unwrap_or_else(|| "none".into())),
            cap_add: (!job.cap_add.is_empty()).then(|| job.cap_add.clone()),
            // Writable root: a job writes its output (a dump) into its own layer, copied out after.
            ..hardened_host_config(job.memory, 1_000_000_000, 256, None, Restart::No)
        };
        let body = ContainerCreateBody {
            image: Some(job.image.clone()),
            entrypoint: Some(job.entrypoint.clone()),
            user: job.user.clone(),
            cmd: Some(vec![]),
            env: Some(job.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(job.labels.clone().into_iter().collect()),
            host_config: Some(host_config),
            ..Default::default()
        };
        // A job of an earlier, interrupted run under the same name is ours to replace.
        self.remove_container_if_present(&job.name).await?;
        let opts = q::CreateContainerOptionsBuilder::default()
            .name(&job.name)
            .build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| map_err(&format!("creating job {}", job.name), e))?;
        let result = self.job_steps(job).await;
        // Removed whatever happened (forced: a job that timed out is still running).
        let _ = self.remove_container_if_present(&job.name).await;
        result
    }

    async fn usage(&self, name: &str) -> Result<Option<super::Usage>> {
        let opts = q::StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.docker.stats(name, Some(opts));
        match stream.next().await {
            Some(Ok(s)) => {
                let cpu_seconds = s
                    .cpu_stats
                    .as_ref()
                    .and_then(|c| c.cpu_usage.as_ref())
                    .and_then(|u| u.total_usage)
                    .map(|ns| ns as f64 / 1e9)
                    .unwrap_or(0.0);
                Ok(s.memory_stats.and_then(|m| {
                    let usage = m.usage?;
                    // cgroup v1 reports total_inactive_file, v2 inactive_file; docker stats subtracts it.
                    let inactive = m
                        .stats
                        .as_ref()
                        .and_then(|st| {
                            st.get("total_inactive_file")
                                .or_else(|| st.get("inactive_file"))
                                .copied()
                        })
                        .unwrap_or(0);
                    Some(super::Usage {
                        memory_used: usage.saturating_sub(inactive),
                        memory_limit: m.limit.unwrap_or(0),
                        cpu_seconds,
                    })
                }))
            }
            Some(Err(e)) => Err(map_err(&format!("stats of {name}"), e)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lost_cached_layer;

    #[test]
    fn only_a_vanished_cached_layer_is_built_again() {
        // What the engine said in a CI run when a concurrent test's image removal took the
        // "Using cache" layer of this build.
        assert!(lost_cached_layer(
            "No such image: sha256:28cd102edee6d36c8de43ed458276311019af058c3dba7b0ae7533ef7e45c068"
        ));
        for other in [
            "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
            "COPY failed: file not found in build context or excluded by .dockerignore: stat vendor: file does not exist",
            "pull access denied for nosuchbase, repository does not exist",
        ] {
            assert!(!lost_cached_layer(other), "{other}");
        }
    }
}
