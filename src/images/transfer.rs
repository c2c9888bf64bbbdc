//! `mcpctl images export|import`: the images a project runs, moved to another host as files (no
//! registry, no network) — one `docker save` tar per image and a `manifest.json` recording each
//! file's SHA-256 and size, the image's id and tags, and which containers use it.
//!
//! Owns: choosing what to export (serving revisions found by label, the bases the manifest builds
//! them from, the edge and exporter images), writing files atomically (temporary name, fsync,
//! rename; the manifest last), verifying a whole directory before anything is loaded, and checking
//! each loaded image's id against the recorded one.
//! Must not: print (progress goes to a callback), or change what runs (no container is touched).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{Engine, ImageInfo, RunState};
use crate::error::CommandError;
use crate::rollout::Project;

/// The file that lists an export's images; written last, so a directory without it is unfinished.
pub const MANIFEST: &str = "manifest.json";
/// The layout of manifest.json; an import refuses any other.
pub const FORMAT: u32 = 1;

/// Why an image is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A serving revision's image.
    Service,
    /// What service images (or the edge) are built from: a manifest base or a service's upstream
    /// `image:` source. Needed on the new host to build the next revision, not to run this one.
    Base,
    /// The edge container's image.
    Edge,
    /// The exporter (docker-proxy) container's image.
    Exporter,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Base => "base",
            Role::Edge => "edge",
            Role::Exporter => "exporter",
        }
    }
}

/// A container using an image (directly, or through an image built from it). `service` and
/// `revision` are set for a service's revision, null for the edge and the exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub container: String,
    pub service: Option<String>,
    pub revision: Option<String>,
}

/// One image file of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name inside the export directory (a plain name, no directories).
    pub file: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// The image id (`sha256:…`); a loaded image must have exactly this id.
    pub image_id: String,
    /// Every tag the image carried when exported (restored by the load).
    pub repo_tags: Vec<String>,
    pub role: Role,
    pub used_by: Vec<User>,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportManifest {
    pub format: u32,
    pub mcpctl_version: String,
    pub project: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub images: Vec<Entry>,
}

/// One image chosen for export.
#[derive(Debug, Clone)]
pub struct Selected {
    pub image: ImageInfo,
    pub role: Role,
    pub used_by: Vec<User>,
}

/// Something not exported, and why (a service with no serving revision, a base not built).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub what: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub images: Vec<Selected>,
    pub skipped: Vec<Skipped>,
}

impl Selection {
    /// Add `image` for `user`; an image already selected (same id) only gains the user.
    fn add(&mut self, image: ImageInfo, role: Role, user: &User) {
        if let Some(s) = self.images.iter_mut().find(|s| s.image.id == image.id) {
            if !s.used_by.contains(user) {
                s.used_by.push(user.clone());
            }
            return;
        }
        self.images.push(Selected {
            image,
            role,
            used_by: vec![user.clone()],
        });
    }
}

/// The base a service's image is built from, as its Dockerfile names it in `FROM` (the same rule
/// as `rollout::desired`): its upstream `image:` source, else its manifest base.
fn service_base(project: &Project, service: &str) -> Option<String> {
    let m = &project.manifest;
    let svc = m.services.get(service)?;
    match (&svc.server.source.image, &svc.build.base) {
        (Some(img), _) => Some(img.reference.clone()),
        (None, Some(base)) if m.bases.contains_key(base) => {
            Some(crate::render::view::base_ref(m, base))
        }
        _ => None,
    }
}

/// What `images export` writes: the image of every serving revision (of `only`, or of every
/// service), the base each is built from, and — for a whole-project export — the running edge
/// and exporter images and the edge's base. Services are found by label, as `status` finds them.
/// A service named in `only` without a serving revision is a usage error (exit 2).
pub async fn select<E: Engine>(
    engine: &E,
    project: &Project,
    only: &[String],
) -> anyhow::Result<Selection> {
    let keys = &project.keys;
    let containers = engine
        .list_containers(&keys.project_filter(project.name()))
        .await?;
    let observed = crate::rollout::plan::observe(&containers, keys);
    let mut names: Vec<String> = if only.is_empty() {
        project.manifest.services.keys().cloned().collect()
    } else {
        only.to_vec()
    };
    if only.is_empty() {
        for n in observed.services.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let mut sel = Selection::default();
    let mut bases: Vec<(String, User)> = Vec::new();
    for name in &names {
        let Some(rev) = observed.services.get(name).and_then(|o| o.serving.as_ref()) else {
            if !only.is_empty() {
                return Err(CommandError::usage(format!(
                    "service `{name}` has no serving revision: nothing to export for it (`mcpctl status` shows what runs)"
                ))
                .into());
            }
            sel.skipped.push(Skipped {
                what: name.clone(),
                reason: "no serving revision".into(),
            });
            continue;
        };
        let image = engine.inspect_image(&rev.image).await?.with_context(|| {
            format!(
                "image {} of {name}'s serving revision {} is gone from the engine",
                rev.image,
                rev.name()
            )
        })?;
        let user = User {
            container: rev.container.clone(),
            service: Some(name.clone()),
            revision: Some(rev.name()),
        };
        sel.add(image, Role::Service, &user);
        if let Some(base) = service_base(project, name) {
            bases.push((base, user));
        }
    }
    if only.is_empty() {
        for c in &containers {
            let role = match c.labels.get(&keys.role()).map(String::as_str) {
                Some("edge") => Role::Edge,
                Some("exporter") => Role::Exporter,
                _ => continue,
            };
            if c.labels.get(&keys.managed()).map(String::as_str) != Some("true")
                || c.state != RunState::Running
            {
                continue;
            }
            let image = engine.inspect_image(&c.image).await?.with_context(|| {
                format!("image {} of {} is gone from the engine", c.image, c.name)
            })?;
            let user = User {
                container: c.name.clone(),
                service: None,
                revision: None,
            };
            sel.add(image, role, &user);
            if role == Role::Edge && project.manifest.bases.contains_key("runtime") {
                bases.push((
                    crate::render::view::base_ref(&project.manifest, "runtime"),
                    user,
                ));
            }
        }
    }
    for (reference, user) in bases {
        match engine.inspect_image(&reference).await? {
            Some(image) => sel.add(image, Role::Base, &user),
            None => {
                let s = Skipped {
                    what: reference,
                    reason: "base image not present in the engine".into(),
                };
                if !sel.skipped.contains(&s) {
                    sel.skipped.push(s);
                }
            }
        }
    }
    Ok(sel)
}

/// What an export or import is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Item `index` (from 0) of `total` begins: `what` (an image reference or a file name), about
    /// `bytes` long.
    Start {
        phase: Phase,
        index: usize,
        total: usize,
        what: &'a str,
        bytes: u64,
    },
    /// Bytes of the current item done so far.
    Bytes(u64),
    /// A line the engine reported while loading.
    Line(&'a str),
    /// The current item is done.
    Done {
        what: &'a str,
        bytes: u64,
        seconds: f64,
        outcome: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Save,
    Verify,
    Load,
}

/// One exported image and how long its save took.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedImage {
    #[serde(flatten)]
    pub entry: Entry,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub dir: PathBuf,
    pub project: String,
    pub mcpctl_version: String,
    pub images: Vec<ExportedImage>,
    pub bytes: u64,
    pub seconds: f64,
}

/// The file an image is saved as: role, its first tag (or id) made file-safe, and the id's first
/// 12 hex digits, e.g. `service-proj_alpha_0123456789ab-89abcdef0123.tar`.
pub fn file_name(role: Role, image: &ImageInfo) -> String {
    let hex = image.id.trim_start_matches("sha256:");
    let id12 = &hex[..hex.len().min(12)];
    let slug: String = image
        .tags
        .first()
        .map(String::as_str)
        .unwrap_or(id12)
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    format!(
        "{}-{}-{id12}.tar",
        role.as_str(),
        slug.trim_start_matches('.')
    )
}

/// Make `dir` ready for an export of about `need` bytes: created if missing; one that already
/// holds a manifest is refused (exit 2) unless `force`, which removes that manifest first (so an
/// interrupted re-export never leaves a manifest naming files it replaced) and returns the files
/// it listed. Too little free space is refused before anything changes.
pub fn prepare_dir(dir: &Path, force: bool, need: u64) -> anyhow::Result<Vec<String>> {
    let manifest = dir.join(MANIFEST);
    if dir.exists() && !dir.is_dir() {
        return Err(CommandError::usage(format!(
            "{} exists and is not a directory",
            dir.display()
        ))
        .into());
    }
    let mut old = Vec::new();
    if manifest.exists() {
        if !force {
            return Err(CommandError::usage(format!(
                "{} already holds an export ({MANIFEST}); choose another --out, or pass --force to replace it",
                dir.display()
            ))
            .into());
        }
        if let Ok(m) = read_manifest(dir) {
            old = m.images.into_iter().map(|e| e.file).collect();
        }
    }
    // Room: the free space where DIR is (or will be), plus what the replaced export's files take.
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("."));
    if let Some(free) = free_bytes(existing) {
        let replaced: u64 = old
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum();
        // The tars are about the images' size; keep a margin for the filesystem.
        if free + replaced < need + need / 20 + (64 << 20) {
            anyhow::bail!(
                "{} has {} MB free; the export needs about {} MB: free space or choose another --out",
                existing.display(),
                (free + replaced) / 1_000_000,
                need / 1_000_000
            );
        }
    }
    if manifest.exists() {
        fs_err::remove_file(&manifest)?;
        sync_dir(dir)?;
    }
    fs_err::create_dir_all(dir)?;
    Ok(old)
}

/// A writer that hashes and counts what goes through it and reports the count.
struct Hashing<'a, W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
    on_bytes: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        (self.on_bytes)(self.bytes);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Write `bytes` to `dir/name` atomically: a temporary name, fsync, rename, fsync the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.partial"));
    let mut f = fs_err::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs_err::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Free bytes for an unprivileged writer under `dir`, when the filesystem tells.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)] // c_ulong / fsblkcnt_t: u64 here, not everywhere
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Save every selected image into `dir` (see [`prepare_dir`] for `force`), then write the
/// manifest. Each tar goes to a temporary name, is fsynced and renamed; the manifest is written
/// the same way, last. An image whose tags moved while it was saved is an error (run again).
pub async fn export<E: Engine>(
    engine: &E,
    project: &str,
    images: &[Selected],
    dir: &Path,
    force: bool,
    on: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<Exported> {
    let started = Instant::now();
    let need: u64 = images.iter().map(|s| s.image.size.max(0) as u64).sum();
    let old = prepare_dir(dir, force, need)?;
    let mut out = Vec::new();
    let total = images.len();
    for (index, s) in images.iter().enumerate() {
        let t0 = Instant::now();
        let refs: Vec<String> = if s.image.tags.is_empty() {
            vec![s.image.id.clone()]
        } else {
            s.image.tags.clone()
        };
        let what = refs[0].clone();
        on(Progress::Start {
            phase: Phase::Save,
            index,
            total,
            what: &what,
            bytes: s.image.size.max(0) as u64,
        });
        let file = file_name(s.role, &s.image);
        let tmp = dir.join(format!(".{file}.partial"));
        let saved = async {
            let f = fs_err::File::create(&tmp)?;
            let mut on_bytes = |n: u64| on(Progress::Bytes(n));
            let mut w = Hashing {
                inner: std::io::BufWriter::with_capacity(1 << 20, f),
                hash: Sha256::new(),
                bytes: 0,
                on_bytes: &mut on_bytes,
            };
            engine.save_image(&refs, &mut w).await?;
            w.flush()?;
            let (sha, size) = (hex::encode(w.hash.clone().finalize()), w.bytes);
            let f = w
                .inner
                .into_inner()
                .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
            f.sync_all()?;
            drop(f);
            anyhow::Ok((sha, size))
        }
        .await;
        let (sha256, size) = match saved {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("exporting {what}")));
            }
        };
        // The tags must still name the image recorded (a `bases build` may retag meanwhile).
        for r in &refs {
            let now = engine.image_id(r).await?;
            if now.as_deref() != Some(s.image.id.as_str()) {
                let _ = std::fs::remove_file(&tmp);
                anyhow::bail!(
                    "{r} changed while it was exported (it was {}, now {}): run the export again",
                    s.image.id,
                    now.as_deref().unwrap_or("absent")
                );
            }
        }
        fs_err::rename(&tmp, dir.join(&file))?;
        let seconds = t0.elapsed().as_secs_f64();
        on(Progress::Done {
            what: &what,
            bytes: size,
            seconds,
            outcome: "exported",
        });
        out.push(ExportedImage {
            entry: Entry {
                file,
                sha256,
                size,
                image_id: s.image.id.clone(),
                repo_tags: s.image.tags.clone(),
                role: s.role,
                used_by: s.used_by.clone(),
            },
            seconds,
        });
    }
    sync_dir(dir)?;
    // Files of the replaced export that this one does not list are its leftovers.
    for f in old {
        if check_file_name(&f).is_ok() && !out.iter().any(|e| e.entry.file == f) {
            let _ = std::fs::remove_file(dir.join(&f));
        }
    }
    let manifest = ExportManifest {
        format: FORMAT,
        mcpctl_version: env!("CARGO_PKG_VERSION").to_string(),
        project: project.to_string(),
        created: crate::rollout::ledger::now_rfc3339(),
        images: out.iter().map(|e| e.entry.clone()).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    write_atomic(dir, MANIFEST, &json)?;
    Ok(Exported {
        dir: dir.to_path_buf(),
        project: manifest.project,
        mcpctl_version: manifest.mcpctl_version,
        bytes: out.iter().map(|e| e.entry.size).sum(),
        images: out,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What is wrong with an export directory. Nothing has been loaded when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}: no {MANIFEST} (not a directory written by `mcpctl images export`, or an unfinished one)")]
    NoManifest(PathBuf),
    #[error("{path}: not a valid export manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("{dir}: {} of {total} image files fail verification; nothing was loaded. Copy them again from the source host:\n  {}", problems.len(), problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Files {
        dir: PathBuf,
        total: usize,
        problems: Vec<FileProblem>,
    },
}

/// One file that does not match the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    #[error("{file}: missing")]
    Missing { file: String },
    #[error("{file}: {actual} bytes, the manifest says {expected}")]
    Size {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: SHA-256 {actual}, the manifest says {expected} (the file is corrupt)")]
    Digest {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{file}: unreadable: {error}")]
    Unreadable { file: String, error: String },
}

/// A manifest's file name must be a plain name in the directory, never a path elsewhere.
fn check_file_name(f: &str) -> Result<(), String> {
    if f.is_empty() || f.starts_with('.') || f.contains(['/', '\\', '\0']) || f == MANIFEST {
        return Err(format!(
            "file name {f:?} is not a plain file name of the export"
        ));
    }
    Ok(())
}

/// Read and check `dir/manifest.json`: its format, plain and unique file names, well-formed
/// digests and ids.
pub fn read_manifest(dir: &Path) -> Result<ExportManifest, VerifyError> {
    let path = dir.join(MANIFEST);
    let bad = |reason: String| VerifyError::BadManifest {
        path: path.clone(),
        reason,
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::NoManifest(dir.to_path_buf()))
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let m: ExportManifest = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if m.format != FORMAT {
        return Err(bad(format!(
            "format {} (this mcpctl reads format {FORMAT}; written by mcpctl {})",
            m.format, m.mcpctl_version
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &m.images {
        check_file_name(&e.file).map_err(&bad)?;
        if !seen.insert(e.file.as_str()) {
            return Err(bad(format!("{} is listed twice", e.file)));
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "{}: sha256 {:?} is not 64 hex digits",
                e.file, e.sha256
            )));
        }
        if !e.image_id.starts_with("sha256:") {
            return Err(bad(format!(
                "{}: image id {:?} is not sha256:…",
                e.file, e.image_id
            )));
        }
    }
    Ok(m)
}

/// Check every listed file's size and SHA-256 (files the manifest does not list are ignored);
/// every problem is reported, not only the first.
pub fn verify(
    dir: &Path,
    m: &ExportManifest,
    on: &mut dyn FnMut(Progress<'_>),
) -> Result<(), VerifyError> {
    let mut problems = Vec::new();
    let total = m.images.len();
    for (index, e) in m.images.iter().enumerate() {
        let t0 = Instant::now();
        on(Progress::Start {
            phase: Phase::Verify,
            index,
            total,
            what: &e.file,
            bytes: e.size,
        });
        let path = dir.join(&e.file);
        let problem = match std::fs::metadata(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(FileProblem::Missing {
                file: e.file.clone(),
            }),
            Err(err) => Some(FileProblem::Unreadable {
                file: e.file.clone(),
                error: err.to_string(),
            }),
            Ok(meta) if meta.len() != e.size => Some(FileProblem::Size {
                file: e.file.clone(),
                expected: e.size,
                actual: meta.len(),
            }),
            Ok(_) => match sha256_file(&path, &mut |n| on(Progress::Bytes(n))) {
                Err(err) => Some(FileProblem::Unreadable {
                    file: e.file.clone(),
                    error: err.to_string(),
                }),
                Ok(actual) if !actual.eq_ignore_ascii_case(&e.sha256) => {
                    Some(FileProblem::Digest {
                        file: e.file.clone(),
                        expected: e.sha256.clone(),
                        actual,
                    })
                }
                Ok(_) => None,
            },
        };
        on(Progress::Done {
            what: &e.file,
            bytes: e.size,
            seconds: t0.elapsed().as_secs_f64(),
            outcome: if problem.is_some() {
                "FAILED"
            } else {
                "verified"
            },
        });
        problems.extend(problem);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::Files {
            dir: dir.to_path_buf(),
            total,
            problems,
        })
    }
}

fn sha256_file(path: &Path, on_bytes: &mut dyn FnMut(u64)) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
        on_bytes(n);
    }
    Ok(hex::encode(h.finalize()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadResult {
    /// Loaded from its file; its id checked.
    Loaded,
    /// The engine already had the image under every recorded tag: not loaded.
    Present,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportedImage {
    #[serde(flatten)]
    pub entry: Entry,
    pub result: LoadResult,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub dir: PathBuf,
    pub project: String,
    pub mcpctl_version: String,
    pub created: String,
    pub images: Vec<ImportedImage>,
    /// Bytes of the files loaded (present images not counted).
    pub bytes_loaded: u64,
    pub seconds: f64,
}

/// Whether the engine has `e`'s image under every recorded tag (or, untagged, by id).
async fn present<E: Engine>(engine: &E, e: &Entry) -> anyhow::Result<bool> {
    if engine.image_id(&e.image_id).await?.is_none() {
        return Ok(false);
    }
    for t in &e.repo_tags {
        if engine.image_id(t).await?.as_deref() != Some(e.image_id.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `images import DIR`: read the manifest, verify EVERY file (size, SHA-256) before loading any
/// ([`VerifyError`] otherwise, nothing loaded), then load each image the engine does not already
/// have and check that each recorded tag (or the id) now names the recorded image id.
pub async fn import<E: Engine>(
    engine: &E,
    dir: &Path,
    on: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<Imported> {
    let started = Instant::now();
    let m = read_manifest(dir)?;
    verify(dir, &m, on)?;
    let mut images = Vec::new();
    let total = m.images.len();
    for (index, e) in m.images.iter().enumerate() {
        let t0 = Instant::now();
        let what = e.repo_tags.first().unwrap_or(&e.image_id).clone();
        on(Progress::Start {
            phase: Phase::Load,
            index,
            total,
            what: &what,
            bytes: e.size,
        });
        let result = if present(engine, e).await? {
            LoadResult::Present
        } else {
            engine
                .load_image(&dir.join(&e.file), &mut |line| on(Progress::Line(line)))
                .await
                .with_context(|| format!("loading {} ({what})", e.file))?;
            let refs: Vec<&str> = if e.repo_tags.is_empty() {
                vec![e.image_id.as_str()]
            } else {
                e.repo_tags.iter().map(String::as_str).collect()
            };
            for r in refs {
                let got = engine.image_id(r).await?;
                if got.as_deref() != Some(e.image_id.as_str()) {
                    anyhow::bail!(
                        "{}: after loading, {r} is {} but the manifest records {}; the file does not hold the image it was exported as",
                        e.file,
                        got.as_deref().unwrap_or("absent"),
                        e.image_id
                    );
                }
            }
            LoadResult::Loaded
        };
        let seconds = t0.elapsed().as_secs_f64();
        on(Progress::Done {
            what: &what,
            bytes: e.size,
            seconds,
            outcome: match result {
                LoadResult::Loaded => "loaded",
                LoadResult::Present => "already present",
            },
        });
        images.push(ImportedImage {
            entry: e.clone(),
            result,
            seconds,
        });
    }
    Ok(Imported {
        dir: dir.to_path_buf(),
        project: m.project,
        mcpctl_version: m.mcpctl_version,
        created: m.created,
        bytes_loaded: images
            .iter()
            .filter(|i| i.result == LoadResult::Loaded)
            .map(|i| i.entry.size)
            .sum(),
        images,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;
    use crate::engine::{ContainerSpec, Restart};
    use std::collections::BTreeMap;

    fn entry(dir: &Path, file: &str, bytes: &[u8]) -> Entry {
        std::fs::write(dir.join(file), bytes).unwrap();
        Entry {
            file: file.into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
            image_id: format!("sha256:{:064x}", bytes.len()),
            repo_tags: vec![format!("p/{file}:1")],
            role: Role::Service,
            used_by: vec![User {
                container: "p-alpha-r1".into(),
                service: Some("alpha".into()),
                revision: Some("r1-0123abcd".into()),
            }],
        }
    }

    /// An export directory with two image files and its manifest.json.
    fn export_dir() -> (tempfile::TempDir, ExportManifest) {
        let dir = tempfile::tempdir().unwrap();
        let m = ExportManifest {
            format: FORMAT,
            mcpctl_version: "0.1.0".into(),
            project: "p".into(),
            created: "2026-01-01T00:00:00Z".into(),
            images: vec![
                entry(dir.path(), "service-a.tar", b"first image tar"),
                entry(dir.path(), "base-b.tar", &[7u8; 3000]),
            ],
        };
        std::fs::write(
            dir.path().join(MANIFEST),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
        (dir, m)
    }

    fn check(dir: &Path) -> Result<ExportManifest, VerifyError> {
        let m = read_manifest(dir)?;
        verify(dir, &m, &mut |_| {})?;
        Ok(m)
    }

    fn problems(e: VerifyError) -> Vec<FileProblem> {
        match e {
            VerifyError::Files { problems, .. } => problems,
            other => panic!("expected file problems, got {other}"),
        }
    }

    #[test]
    fn a_manifest_round_trips_and_files_not_listed_are_ignored() {
        let (dir, m) = export_dir();
        std::fs::write(dir.path().join("NOTES.txt"), "copied from host a").unwrap();
        std::fs::write(dir.path().join(".service-a.tar.partial"), "junk").unwrap();
        assert_eq!(check(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_flipped_byte_is_named_with_both_digests() {
        let (dir, m) = export_dir();
        let path = dir.path().join("base-b.tar");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[1234] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = check(dir.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("1 of 2 image files") && text.contains("nothing was loaded"),
            "{text}"
        );
        assert!(text.contains("base-b.tar: SHA-256"), "{text}");
        assert_eq!(
            problems(e),
            vec![FileProblem::Digest {
                file: "base-b.tar".into(),
                expected: m.images[1].sha256.clone(),
                actual: hex::encode(Sha256::digest(&bytes)),
            }]
        );
    }

    #[test]
    fn a_missing_file_and_a_size_mismatch_are_both_reported() {
        let (dir, _) = export_dir();
        std::fs::remove_file(dir.path().join("service-a.tar")).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("base-b.tar"))
            .unwrap();
        f.write_all(b"x").unwrap();
        let e = check(dir.path()).unwrap_err();
        assert!(e.to_string().contains("service-a.tar: missing"), "{e}");
        assert_eq!(
            problems(e),
            vec![
                FileProblem::Missing {
                    file: "service-a.tar".into()
                },
                FileProblem::Size {
                    file: "base-b.tar".into(),
                    expected: 3000,
                    actual: 3001
                },
            ]
        );
    }

    #[test]
    fn a_truncated_file_is_a_size_mismatch() {
        let (dir, _) = export_dir();
        std::fs::write(dir.path().join("service-a.tar"), b"first image").unwrap();
        assert_eq!(
            problems(check(dir.path()).unwrap_err()),
            vec![FileProblem::Size {
                file: "service-a.tar".into(),
                expected: 15,
                actual: 11
            }]
        );
    }

    #[test]
    fn manifests_that_name_paths_or_another_format_are_refused() {
        let (dir, m) = export_dir();
        let write = |m: &ExportManifest| {
            std::fs::write(dir.path().join(MANIFEST), serde_json::to_vec(m).unwrap()).unwrap()
        };
        for bad in ["../etc/passwd", "sub/x.tar", ".hidden", MANIFEST, ""] {
            let mut m2 = m.clone();
            m2.images[0].file = bad.into();
            write(&m2);
            let e = read_manifest(dir.path()).unwrap_err();
            assert!(matches!(e, VerifyError::BadManifest { .. }), "{bad}: {e}");
        }
        let mut m2 = m.clone();
        m2.images[1].file = m2.images[0].file.clone();
        write(&m2);
        assert!(read_manifest(dir.path())
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let mut m2 = m.clone();
        m2.format = 2;
        write(&m2);
        assert!(read_manifest(dir.path())
            .unwrap_err()
            .to_string()
            .contains("format 2"));
        std::fs::write(dir.path().join(MANIFEST), "{not json").unwrap();
        assert!(matches!(
            read_manifest(dir.path()).unwrap_err(),
            VerifyError::BadManifest { .. }
        ));
        std::fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        let e = read_manifest(dir.path()).unwrap_err();
        assert!(matches!(e, VerifyError::NoManifest(_)), "{e}");
    }

    #[test]
    fn an_existing_export_is_replaced_only_with_force() {
        let (dir, _) = export_dir();
        let e = prepare_dir(dir.path(), false, 0).unwrap_err();
        assert_eq!(
            crate::error::exit_code_of(&e),
            crate::error::ExitCode::Usage
        );
        assert!(e.to_string().contains("--force"), "{e}");
        assert!(dir.path().join(MANIFEST).exists(), "left as it was");
        // More than any disk holds: refused before the old export is touched.
        let e = prepare_dir(dir.path(), true, u64::MAX / 4).unwrap_err();
        assert!(e.to_string().contains("MB free"), "{e}");
        assert!(dir.path().join(MANIFEST).exists(), "left as it was");
        let old = prepare_dir(dir.path(), true, 0).unwrap();
        assert_eq!(old, ["service-a.tar", "base-b.tar"]);
        assert!(!dir.path().join(MANIFEST).exists());
        // A new directory is created; a file is refused.
        let fresh = dir.path().join("new/out");
        assert!(prepare_dir(&fresh, false, 0).unwrap().is_empty());
        assert!(fresh.is_dir());
        let file = dir.path().join("service-a.tar");
        assert!(prepare_dir(&file, true, 0).is_err());
    }

    #[test]
    fn file_names_are_plain_and_carry_the_role_and_id() {
        let img = ImageInfo {
            id: format!("sha256:{}", "ab".repeat(32)),
            tags: vec!["mcpctl-base/runtime:bookworm".into()],
            labels: BTreeMap::new(),
            created: 0,
            size: 1,
        };
        let f = file_name(Role::Base, &img);
        assert_eq!(f, "base-mcpctl-base_runtime_bookworm-abababababab.tar");
        assert!(check_file_name(&f).is_ok());
        let untagged = ImageInfo {
            tags: vec![],
            ..img
        };
        assert_eq!(
            file_name(Role::Service, &untagged),
            "service-abababababab-abababababab.tar"
        );
    }

    fn project() -> Project {
        let text = r#"version: 1
project: p
bases:
  runtime: {suite: bookworm, packages: [ca-certificates]}
services:
  alpha:
    port: 8501
    server: {source: {image: {ref: "up/alpha:1"}}, command: [x]}
  beta:
    port: 8502
    build: {base: runtime}
    server: {source: {pypi: {package: beta-mcp, version: "1.0"}}, command: [beta-mcp]}
  gamma:
    port: 8503
    server: {source: {image: {ref: "up/gamma:1"}}, command: [x]}
"#;
        let (m, _) = crate::manifest::load_str(text, "services.yaml").expect("manifest");
        Project::new(m, Path::new("services.yaml"), "/tmp/s".into()).unwrap()
    }

    async fn run(engine: &FakeEngine, name: &str, image: &str, labels: &[(String, &str)]) {
        engine.add_image(image, BTreeMap::new());
        let spec = ContainerSpec {
            name: name.into(),
            image: image.into(),
            cmd: vec![],
            env: BTreeMap::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            network: "p".into(),
            aliases: vec![],
            port: None,
            binds: vec![],
            memory: 1,
            nano_cpus: 1,
            pids: 1,
            shm_size: None,
            read_only_root: true,
            restart: Restart::UnlessStopped,
        };
        engine.create_container(&spec).await.unwrap();
        engine.start_container(name).await.unwrap();
    }

    #[tokio::test]
    async fn serving_revisions_their_bases_and_the_edge_are_selected_once_each() {
        let p = project();
        let k = &p.keys;
        let e = FakeEngine::new();
        let rev = |svc: &'static str, release: &'static str| {
            vec![
                (k.managed(), "true"),
                (k.project(), "p"),
                (k.service(), svc),
                (k.role(), "service"),
                (k.release(), release),
                (k.config_hash(), "0123456789abcdef"),
            ]
        };
        run(&e, "p-alpha-r2", "p/alpha:aaa", &rev("alpha", "2")).await;
        // A retained (stopped) revision is not exported.
        run(&e, "p-alpha-r1", "p/alpha:old", &rev("alpha", "1")).await;
        e.stop_container("p-alpha-r1", 1).await.unwrap();
        run(&e, "p-beta-r2", "p/beta:bbb", &rev("beta", "2")).await;
        run(
            &e,
            "p-edge",
            "p/mcpctl-edge:eee",
            &[
                (k.managed(), "true"),
                (k.project(), "p"),
                (k.role(), "edge"),
            ],
        )
        .await;
        // alpha is built FROM its upstream source image; beta and the edge from the runtime base.
        e.add_image("up/alpha:1", BTreeMap::new());
        e.add_image("mcpctl-base/runtime:bookworm", BTreeMap::new());

        let sel = select(&e, &p, &[]).await.unwrap();
        let got: Vec<(String, Role, Vec<String>)> = sel
            .images
            .iter()
            .map(|s| {
                (
                    s.image.tags[0].clone(),
                    s.role,
                    s.used_by.iter().map(|u| u.container.clone()).collect(),
                )
            })
            .collect();
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("p/alpha:aaa".into(), Role::Service, v(&["p-alpha-r2"])),
                ("p/beta:bbb".into(), Role::Service, v(&["p-beta-r2"])),
                ("p/mcpctl-edge:eee".into(), Role::Edge, v(&["p-edge"])),
                ("up/alpha:1".into(), Role::Base, v(&["p-alpha-r2"])),
                (
                    "mcpctl-base/runtime:bookworm".into(),
                    Role::Base,
                    v(&["p-beta-r2", "p-edge"])
                ),
            ]
        );
        assert_eq!(
            sel.images[0].used_by[0].revision.as_deref(),
            Some("r2-01234567")
        );
        assert_eq!(
            sel.skipped,
            vec![Skipped {
                what: "gamma".into(),
                reason: "no serving revision".into()
            }]
        );

        // Named services: only theirs (no edge); one that does not serve is a usage error.
        let sel = select(&e, &p, &["beta".into()]).await.unwrap();
        let tags: Vec<&str> = sel
            .images
            .iter()
            .map(|s| s.image.tags[0].as_str())
            .collect();
        assert_eq!(tags, ["p/beta:bbb", "mcpctl-base/runtime:bookworm"]);
        let err = select(&e, &p, &["gamma".into()]).await.unwrap_err();
        assert_eq!(
            crate::error::exit_code_of(&err),
            crate::error::ExitCode::Usage
        );
        assert!(err.to_string().contains("no serving revision"), "{err}");
    }
}
