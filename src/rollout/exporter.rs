//! The stack's exporter container (`observability.exporter: true`): `mcpctl docker-proxy`, the
//! only holder of the Docker socket (docs/contracts.md "Docker proxy and container exporter").
//! Name `<project>-dockerproxy`, alias `mcp-dockerproxy:2375` on the project network, port
//! published on 127.0.0.1 (ephemeral) for the host's Prometheus, `<p>.role=exporter`.
//!
//! Its image holds nothing but an mcpctl with `docker-proxy` (`desired::docker_proxy_binary`:
//! the `--features docker-proxy` build beside `$MCPCTL_IMAGE_BINARY`, else this mcpctl) and the
//! shared libraries it links (FROM scratch, no base image needed), tagged by that binary's
//! digest: a new mcpctl replaces it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

use super::Project;
use crate::engine::context::{BuildContext, DigestCache};
use crate::engine::{Bind, ContainerSpec, Engine, EngineError, PortSpec, Restart, RunState};

pub const PORT: u16 = 2375;
pub const ALIAS: &str = "mcp-dockerproxy";
/// Where the exporter sees `mcpctl backup`'s status directory.
pub const BACKUP_STATUS_MOUNT: &str = "/run/mcpctl/backup";
/// The shape of the exporter's container config (arguments, mounts), in its config-hash label:
/// bump it when [`ensure`] changes them, so a running exporter of the old shape is replaced
/// even when the mcpctl it carries did not change.
const SPEC_VERSION: &str = "exporter-2";

pub fn container_name(project: &str) -> String {
    format!("{project}-dockerproxy")
}

/// What happened to the exporter container.
#[derive(Debug, PartialEq, Eq)]
pub enum Ensured {
    Running,
    Created,
    Replaced,
}

/// Make sure the exporter runs the current mcpctl; idempotent and quick when it already does.
pub async fn ensure<E: Engine>(
    engine: &E,
    project: &Project,
    cache: &DigestCache,
) -> anyhow::Result<Ensured> {
    let exe = super::desired::image_mcpctl_docker_proxy(project)?;
    let digest = cache.file_digest(&exe)?;
    let image = format!("{}/mcpctl-exporter:{}", project.name(), &digest[..12]);
    let keys = &project.keys;
    let name = container_name(project.name());

    let current = engine.inspect_container(&name).await?;
    if let Some(c) = &current {
        if c.info.image == image
            && c.info.state == RunState::Running
            && c.info.labels.get(&keys.config_hash()).map(String::as_str) == Some(SPEC_VERSION)
        {
            return Ok(Ensured::Running);
        }
    }
    if engine.image_id(&image).await?.is_none() {
        let ctx = scratch_context(&exe, "mcpctl")?;
        engine
            .build_image(
                ctx.to_tar()?,
                &image,
                &keys.base(project.name(), "exporter"),
                &mut |_| {},
            )
            .await
            .with_context(|| format!("building the exporter image {image}"))?;
    }
    engine
        .ensure_network(project.name(), &keys.base(project.name(), "service"))
        .await?;
    let replaced = current.is_some();
    if replaced {
        let _ = engine.stop_container(&name, 5).await;
        engine.remove_container(&name).await?;
    }
    let mut labels = keys.base(project.name(), "exporter");
    labels.insert(keys.service(), "dockerproxy".into());
    labels.insert(keys.config_hash(), SPEC_VERSION.into());
    let socket = docker_socket();
    let backup_status = crate::backup::status_dir(&project.state_dir);
    std::fs::create_dir_all(&backup_status)
        .with_context(|| format!("creating {}", backup_status.display()))?;
    let spec = ContainerSpec {
        name: name.clone(),
        image,
        cmd: vec![
            "docker-proxy".into(),
            "--listen".into(),
            format!("0.0.0.0:{PORT}"),
            "--project".into(),
            project.name().into(),
            "--label-prefix".into(),
            project.manifest.label_prefix.clone(),
            "--backup-status".into(),
            format!("{BACKUP_STATUS_MOUNT}/{}", crate::backup::STATUS_FILE),
        ],
        env: BTreeMap::new(),
        labels,
        network: project.name().into(),
        aliases: vec![ALIAS.into()],
        port: Some(PortSpec {
            host_ip: IpAddr::from([127, 0, 0, 1]),
            host_port: 0,
            container_port: PORT,
        }),
        binds: vec![
            Bind {
                source: socket.display().to_string(),
                target: "/var/run/docker.sock".into(),
                read_only: true,
            },
            // `mcpctl backup`'s status (a directory: the file may not exist yet).
            Bind {
                source: backup_status.display().to_string(),
                target: BACKUP_STATUS_MOUNT.into(),
                read_only: true,
            },
        ],
        memory: 64 << 20,
        nano_cpus: 250_000_000,
        pids: 64,
        shm_size: None,
        read_only_root: true,
        restart: Restart::UnlessStopped,
    };
    match engine.create_container(&spec).await {
        Ok(_) => {}
        // A concurrent run created it first: theirs is as good as ours.
        Err(EngineError::Conflict(_)) => return Ok(Ensured::Running),
        Err(e) => return Err(e.into()),
    }
    engine.start_container(&name).await?;
    Ok(if replaced {
        Ensured::Replaced
    } else {
        Ensured::Created
    })
}

/// The engine's socket on this host (the exporter talks to the same engine mcpctl does).
fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// A FROM-scratch build context running `binary` (at /usr/local/bin/<name>) with the shared
/// libraries `ldd` says it needs, at the same paths as on this host.
pub fn scratch_context(binary: &Path, name: &str) -> anyhow::Result<BuildContext> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (package libc-bin) to find the libraries mcpctl links")?;
    anyhow::ensure!(
        out.status.success(),
        "ldd {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut ctx = BuildContext::new();
    let mut dockerfile = String::from(
        "# Generated by mcpctl: the binary and the libraries it links, nothing else.\nFROM scratch\n",
    );
    for (i, lib) in ldd_paths(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .enumerate()
    {
        let at = format!("lib/{i}");
        ctx.add_file(&at, lib)?;
        dockerfile.push_str(&format!("COPY {at} {}\n", lib.display()));
    }
    ctx.add_file(name, binary)?;
    dockerfile.push_str(&format!(
        "COPY {name} /usr/local/bin/{name}\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n"
    ));
    ctx.add_bytes("Dockerfile", dockerfile, false);
    Ok(ctx)
}

/// Absolute library paths in `ldd` output, in order, without duplicates.
fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .rsplit("=>")
            .next()
            .unwrap_or("")
            .trim()
            .split(' ')
            .next()
            .unwrap_or("");
        if path.starts_with('/') && !out.iter().any(|p| p == Path::new(path)) {
            out.push(PathBuf::from(path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_absolute_paths_once() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\t/lib64/ld-linux-x86-64.so.2 (0x3)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }
}
