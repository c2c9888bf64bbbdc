//! The desired state of each service, computed from the manifest without side effects: its
//! config hash, image tag (content hash of the build context and base image id), container spec
//! and secret fingerprints. Building the context reads files; nothing is written except the
//! digest cache.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use super::{secrets, Project};
use crate::engine::context::{BuildContext, DigestCache};
use crate::engine::{ContainerSpec, Engine, PortSpec, Restart};
use crate::manifest::{Health, Role, Service, SourceKind, Transport};

/// What plan compares: plain data.
#[derive(Debug, Clone)]
pub struct DesiredSummary {
    pub service: String,
    pub config_hash: String,
    pub image: String,
    pub image_hash: String,
    pub image_present: bool,
    /// Per-secret fingerprints, `NAME=hmac;...` (the `<p>.secrets-hmac` label).
    pub secrets_label: String,
    pub spec: ContainerSpec,
    /// Why this service cannot be deployed now (missing secret, missing base image).
    pub blocked: Option<String>,
    pub depends_on: Vec<String>,
}

pub struct Desired {
    pub summary: DesiredSummary,
    pub role: Role,
    pub stateful: bool,
    pub health: Health,
    pub transport: Transport,
    pub context: BuildContext,
    pub image_labels: BTreeMap<String, String>,
    pub secrets: Vec<secrets::Resolved>,
}

/// Names the mcpctl binary images carry (docs/contracts.md "Image binary").
pub const IMAGE_BINARY_ENV: &str = "MCPCTL_IMAGE_BINARY";

/// The file beside `$MCPCTL_IMAGE_BINARY` the exporter image carries: the build with the Docker
/// client (`--features docker-proxy`), since the exporter's command is `docker-proxy`.
pub const DOCKER_PROXY_BINARY: &str = "mcpctl-docker-proxy";

/// The mcpctl binary baked into service and edge images, and beside which first-party server
/// binaries (and [`DOCKER_PROXY_BINARY`]) are looked up: `$MCPCTL_IMAGE_BINARY` when set —
/// scripts/test and scripts/up point it at the optimized `--features runtime` build
/// (`scripts/build-dist`) — else this very executable (an operator who installed a release
/// build of mcpctl carries it as is).
pub fn mcpctl_binary() -> anyhow::Result<PathBuf> {
    image_binary_from(std::env::var_os(IMAGE_BINARY_ENV))
}

fn image_binary_from(configured: Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    match configured.filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            anyhow::ensure!(
                path.is_file(),
                "{IMAGE_BINARY_ENV}={} is not a file: build it with `scripts/build-dist` \
                 (cargo build --profile dist --no-default-features --features runtime), \
                 point {IMAGE_BINARY_ENV} at an mcpctl binary, or unset it to carry this mcpctl",
                path.display()
            );
            Ok(path)
        }
        None => std::env::current_exe().context("locating the mcpctl binary"),
    }
}

/// The mcpctl binary the exporter image carries (its command, `docker-proxy`, needs the Docker
/// client that the runtime build leaves out): with `$MCPCTL_IMAGE_BINARY` set, the file
/// [`DOCKER_PROXY_BINARY`] beside it (scripts/build-dist writes both), else this very executable
/// (the operator's CLI has every command).
pub fn docker_proxy_binary() -> anyhow::Result<PathBuf> {
    docker_proxy_binary_from(std::env::var_os(IMAGE_BINARY_ENV))
}

fn docker_proxy_binary_from(configured: Option<std::ffi::OsString>) -> anyhow::Result<PathBuf> {
    let configured = configured.filter(|v| !v.is_empty());
    let set = configured.is_some();
    let image = image_binary_from(configured)?;
    if !set {
        return Ok(image);
    }
    let path = image.with_file_name(DOCKER_PROXY_BINARY);
    anyhow::ensure!(
        path.is_file(),
        "the exporter image needs an mcpctl with `docker-proxy`, looked up beside \
         {IMAGE_BINARY_ENV}={}: {} is not a file. Build both with `scripts/build-dist` (it writes \
         the `--features docker-proxy` build there), copy such a build to that path, or unset \
         {IMAGE_BINARY_ENV} to carry this mcpctl",
        image.display(),
        path.display()
    );
    Ok(path)
}

/// What goes into an image for a host-built `binary`: its stripped copy, cached in the state dir.
pub fn image_binary(project: &Project, binary: &std::path::Path) -> PathBuf {
    crate::images::stripped(binary, &project.state_dir.join("stripped"))
}

/// The mcpctl service and edge images run (`bridge`, `edge serve`).
pub fn image_mcpctl(project: &Project) -> anyhow::Result<PathBuf> {
    Ok(image_binary(project, &mcpctl_binary()?))
}

/// The mcpctl the exporter image runs (`docker-proxy`).
pub fn image_mcpctl_docker_proxy(project: &Project) -> anyhow::Result<PathBuf> {
    Ok(image_binary(project, &docker_proxy_binary()?))
}

/// Assemble the build context of one service from its rendered files. Extension point for
/// vendored packages and base images (issue 8): add files here.
pub fn service_context(
    project: &Project,
    name: &str,
    svc: &Service,
    rendered: &[crate::render::Artifact],
) -> anyhow::Result<BuildContext> {
    let mut ctx = BuildContext::new();
    let dir = std::path::Path::new("services").join(name);
    for a in rendered
        .iter()
        .filter(|a| a.path.parent() == Some(dir.as_path()))
    {
        let file = a.path.file_name().unwrap().to_string_lossy().into_owned();
        ctx.add_bytes(&file, a.contents.clone(), a.executable);
    }
    if svc.role == Role::Service {
        let exe = mcpctl_binary()?;
        ctx.add_file("mcpctl", &image_mcpctl(project)?)?;
        if svc.server.source.kind() == SourceKind::Crate {
            let krate = &svc
                .server
                .source
                .krate
                .as_ref()
                .expect("kind is crate")
                .name;
            let bin = exe.with_file_name(krate);
            anyhow::ensure!(
                bin.exists(),
                "service `{name}`: the first-party server binary {} is missing; build it beside \
                 the mcpctl images carry ({}): `cargo build -p {krate}`, or `scripts/build-dist` \
                 when {IMAGE_BINARY_ENV} points at the dist build",
                bin.display(),
                exe.display()
            );
            ctx.add_file(&format!("bin/{krate}"), &image_binary(project, &bin))?;
        }
    }
    let locks = project.manifest_dir.join("locks");
    if locks.join(name).is_dir() {
        ctx.add_dir("", &locks.join(name))?;
    }
    Ok(ctx)
}

fn base_ref(project: &Project, svc: &Service) -> String {
    match (&svc.server.source.image, &svc.build.base) {
        (Some(img), _) => img.reference.clone(),
        (None, Some(base)) => {
            let b = &project.manifest.bases[base];
            b.image
                .clone()
                .unwrap_or_else(|| format!("mcpctl-base/{base}:{}", b.suite))
        }
        (None, None) => String::new(),
    }
}

/// Desired state of the named services (all when `only` is empty), in manifest order.
pub async fn compute<E: Engine>(
    engine: &E,
    project: &Project,
    only: &[String],
    cache: &DigestCache,
) -> anyhow::Result<Vec<Desired>> {
    let m = &project.manifest;
    let rendered = crate::render::render(m, Some(crate::render::ArtifactKind::Dockerfiles))?;
    let key = secrets::install_key(&project.state_dir)?;
    let keys = &project.keys;
    // Every consumer's token, once: a bridge's auth file holds their digests.
    let tokens = crate::auth::resolve_tokens(m, &project.manifest_dir, &project.state_dir, &key)
        .map_err(|e| e.to_string());
    let mut out = Vec::new();
    for (name, svc) in &m.services {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let mut blocked = None;
        let config_hash = crate::render::config_hash(name, svc);
        let mut ctx = service_context(project, name, svc, &rendered)?;
        // Offline builds install only from what `mcpctl vendor` prepared for this lock and base;
        // a service not vendored yet is blocked (with the command to run), not the whole plan.
        let locks = project.manifest_dir.join("locks");
        match crate::images::vendor::context_dir(m, &locks, &project.state_dir, name) {
            Ok(Some(vendor)) => ctx.add_dir("vendor", &vendor)?,
            Ok(None) => {}
            Err(e) => blocked = Some(e.to_string()),
        }
        let base = base_ref(project, svc);
        let base_id = match engine.image_id(&base).await? {
            Some(id) => id,
            None => {
                blocked = Some(format!("base image {base} is not present in the engine (no registry is used: build or load it first)"));
                "missing".into()
            }
        };
        let mut h = Sha256::new();
        h.update(ctx.digest(cache)?.as_bytes());
        h.update([0]);
        h.update(base_id.as_bytes());
        let image_hash = hex::encode(h.finalize());
        let image = format!("{}/{name}:{}", m.project, &image_hash[..12]);
        let image_present = engine.image_id(&image).await?.is_some();

        let mut resolved = match secrets::resolve(m, name, &project.manifest_dir, &key) {
            Ok(r) => r,
            Err(e) => {
                blocked.get_or_insert(e.to_string());
                vec![]
            }
        };
        // The bridge's access rules travel as one more secret (digests only, see crate::auth).
        if svc.role == crate::manifest::Role::Service {
            let file = tokens.as_ref().map_err(Clone::clone).and_then(|t| {
                crate::auth::bridge_secret(m, name, t, &project.manifest_dir, &key)
                    .map_err(|e| e.to_string())
            });
            match file {
                Ok(Some(secret)) => resolved.push(secret),
                Ok(None) => {}
                Err(e) => {
                    blocked.get_or_insert(e);
                }
            }
        }
        let (per, _) = secrets::fingerprints(&key, &resolved);
        let secrets_label: String = per.iter().map(|(k, v)| format!("{k}={v};")).collect();

        let mut identity: BTreeMap<String, String> = crate::render::labels(m, name, svc)
            .into_iter()
            .map(|l| (l.key, l.value))
            .collect();
        let image_labels = {
            let mut l = identity.clone();
            l.insert(keys.image_hash(), image_hash.clone());
            l
        };
        identity.insert(keys.config_hash(), config_hash.clone());
        identity.insert(keys.image_hash(), image_hash.clone());
        identity.insert(keys.secrets_hmac(), secrets_label.clone());
        if svc.replicas > 1 {
            identity.insert(keys.replicas(), svc.replicas.to_string());
        }

        let mut binds = secrets::binds(&project.state_dir, name, &resolved);
        for v in &svc.volumes {
            let source = if v.is_named() {
                format!("{}-{}", m.project, v.source)
            } else {
                project.manifest_dir.join(&v.source).display().to_string()
            };
            binds.push(crate::engine::Bind {
                source,
                target: v.target.clone(),
                read_only: v.read_only,
            });
        }
        let spec = ContainerSpec {
            name: String::new(),
            image: image.clone(),
            cmd: svc.server.command.clone(),
            // The tool policy and access settings reach the bridge as its environment.
            env: crate::auth::container_env(m, name).into_iter().collect(),
            labels: identity,
            network: m.project.clone(),
            aliases: vec![format!("mcp-{name}")],
            port: svc.port.map(|p| PortSpec {
                host_ip: m.bind_address,
                host_port: p,
                container_port: svc.container_port,
            }),
            binds,
            memory: svc.limits.memory.0 as i64,
            nano_cpus: (svc.limits.cpus * 1e9).round() as i64,
            pids: svc.limits.pids as i64,
            shm_size: svc.limits.shm_size.map(|s| s.0 as i64),
            read_only_root: svc.read_only_root,
            restart: Restart::UnlessStopped,
        };
        out.push(Desired {
            summary: DesiredSummary {
                service: name.clone(),
                config_hash,
                image,
                image_hash,
                image_present,
                secrets_label,
                spec,
                blocked,
                depends_on: svc.depends_on.clone(),
            },
            role: svc.role,
            stateful: svc.stateful,
            health: svc.health.clone(),
            transport: svc.transport.unwrap_or(m.litellm.transport),
            context: ctx,
            image_labels,
            secrets: resolved,
        });
    }
    Ok(out)
}

/// Dependency order (depends_on first), stable in manifest order otherwise.
pub fn dependency_order(services: &[DesiredSummary]) -> Vec<String> {
    let names: Vec<&str> = services.iter().map(|s| s.service.as_str()).collect();
    let mut done: Vec<String> = Vec::new();
    let mut guard = 0;
    while done.len() < services.len() && guard <= services.len() {
        guard += 1;
        for s in services {
            if done.contains(&s.service) {
                continue;
            }
            let ready = s
                .depends_on
                .iter()
                .all(|d| !names.contains(&d.as_str()) || done.contains(d));
            if ready {
                done.push(s.service.clone());
            }
        }
    }
    // Validation rejects cycles; anything left (impossible) goes last in manifest order.
    for s in services {
        if !done.contains(&s.service) {
            done.push(s.service.clone());
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_image_binary_is_used_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("mcpctl");
        std::fs::write(&bin, b"binary").unwrap();
        assert_eq!(image_binary_from(Some(bin.clone().into())).unwrap(), bin);

        let missing = dir.path().join("dist/mcpctl");
        let err = image_binary_from(Some(missing.clone().into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(IMAGE_BINARY_ENV), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("scripts/build-dist"), "{err}");
        // A directory is not a binary either.
        assert!(image_binary_from(Some(dir.path().as_os_str().to_owned())).is_err());
    }

    #[test]
    fn unset_or_empty_falls_back_to_this_executable() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(image_binary_from(None).unwrap(), me);
        assert_eq!(image_binary_from(Some("".into())).unwrap(), me);
        assert_eq!(docker_proxy_binary_from(None).unwrap(), me);
        assert_eq!(docker_proxy_binary_from(Some("".into())).unwrap(), me);
    }

    #[test]
    fn the_exporter_carries_the_docker_proxy_build_beside_the_image_binary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("mcpctl-runtime");
        std::fs::write(&bin, b"runtime build").unwrap();
        let missing = dir.path().join(DOCKER_PROXY_BINARY);
        let err = docker_proxy_binary_from(Some(bin.clone().into()))
            .unwrap_err()
            .to_string();
        // What (docker-proxy), where (both paths, the variable) and what to do.
        assert!(err.contains("docker-proxy"), "{err}");
        assert!(err.contains(IMAGE_BINARY_ENV), "{err}");
        assert!(err.contains(&bin.display().to_string()), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(err.contains("scripts/build-dist"), "{err}");

        std::fs::write(&missing, b"docker-proxy build").unwrap();
        assert_eq!(docker_proxy_binary_from(Some(bin.into())).unwrap(), missing);
        // The image binary itself must still exist: its own error comes first.
        let gone = dir.path().join("gone/mcpctl");
        let err = docker_proxy_binary_from(Some(gone.clone().into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&gone.display().to_string()), "{err}");
    }
}
