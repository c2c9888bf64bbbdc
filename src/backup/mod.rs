//! Backup sets (`mcpctl backup`, `backup verify`, `backup list`, `restore`; issue 19,
//! runbooks/backup-restore.md).
//!
//! A set is one directory `<dir>/<project>-<UTC timestamp>/`, written under a `.partial` name and
//! renamed when complete, so a set either exists whole or not at all:
//!
//! ```text
//! backup.json                     what is inside: every part with its SHA-256 and size, the
//!                                 releases it covers, PostgreSQL and mcpctl versions
//! db/<service>/<database>.dump    pg_dump custom format, one per database of each database service
//! volumes/<service>/<volume>.tar  the named volumes of other services, as the engine archives them
//! state.tar                       the install key (every generated secret and database password
//!                                 derives from it), the ledger, consumers' tokens, recorded secret
//!                                 values — what a fresh host needs to keep secrets and history
//! services.yaml                   the manifest the set was taken with
//! artifacts.tar                   what `mcpctl render` writes for that manifest
//! ```
//!
//! Databases are dumped by a one-off container from the database service's own serving image
//! (same PostgreSQL major version) over the project network, logged in as the superuser with the
//! mounted password secret: no downtime, no change to the running database. Volumes are archived
//! from the serving container without stopping it. Nothing here prints: callers pass `say`.
//!
//! Must not: put a secret value in a container's configuration, a log line or `backup.json`.

pub mod jobs;
pub mod ops;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the set layout; a set with a higher one is refused.
pub const FORMAT: u32 = 1;
/// The set's own description, at its root.
pub const SET_FILE: &str = "backup.json";
/// Suffix of a set being written (never listed, verified or restored; removed by the next run).
const PARTIAL: &str = ".partial";

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetManifest {
    pub format: u32,
    pub project: String,
    /// RFC 3339, UTC, seconds.
    pub created: String,
    pub created_unix: i64,
    /// `mcpctl version` of the binary that wrote it.
    pub mcpctl: String,
    /// The services the set was asked for (every service when none were named).
    pub services: Vec<String>,
    /// The serving revision of each service when the set was taken.
    pub releases: BTreeMap<String, Covered>,
    pub parts: Vec<Part>,
}

/// A serving revision a set covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Covered {
    pub release: u64,
    pub revision: String,
    pub image: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Database,
    Volume,
    State,
    Manifest,
    /// `artifacts.tar`: what `mcpctl render` writes for the manifest (Dockerfiles, compose,
    /// LiteLLM, observability), for a host that has mcpctl's output but not mcpctl.
    Artifacts,
}

/// One file of a set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    /// Relative to the set's directory.
    pub path: String,
    pub kind: PartKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The container path the volume is mounted at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `server_version` of the PostgreSQL the database was dumped from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// `max(version)` of the database's `schema_migrations` table (the convention of the
    /// first-party servers' expand-only migrations), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_level: Option<i64>,
    pub bytes: u64,
    pub sha256: String,
}

impl SetManifest {
    /// A set of `project` taken at `now` by this mcpctl.
    pub fn new(
        project: &str,
        now: std::time::SystemTime,
        services: Vec<String>,
        releases: BTreeMap<String, Covered>,
        parts: Vec<Part>,
    ) -> Self {
        SetManifest {
            format: FORMAT,
            project: project.to_string(),
            created: humantime::format_rfc3339_seconds(now).to_string(),
            created_unix: now
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64,
            mcpctl: format!("{} ({})", env!("CARGO_PKG_VERSION"), env!("MCPCTL_GIT_REV")),
            services,
            releases,
            parts,
        }
    }

    pub fn read(set: &Path) -> anyhow::Result<Self> {
        let file = set.join(SET_FILE);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "{} is not a backup set: {} cannot be read",
                set.display(),
                file.display()
            )
        })?;
        let m: SetManifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a backup.json mcpctl can read", file.display()))?;
        anyhow::ensure!(
            m.format <= FORMAT,
            "{}: set format {} is newer than this mcpctl understands ({FORMAT}); use a newer mcpctl",
            file.display(),
            m.format
        );
        Ok(m)
    }

    pub fn databases(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.kind == PartKind::Database)
    }
}

/// Where sets go: `--out`, else the manifest's `backup.dir` (relative to the manifest), else
/// `<state>/backups/sets`.
pub fn sets_dir(project: &crate::rollout::Project, out: Option<&Path>) -> PathBuf {
    match (out, &project.manifest.backup.dir) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(d)) => project.manifest_dir.join(d),
        (None, None) => project.state_dir.join("backups").join("sets"),
    }
}

/// `<project>-20261203T163512Z`.
pub fn set_name(project: &str, now: std::time::SystemTime) -> String {
    let ts = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    format!("{project}-{ts}")
}

pub fn partial_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{PARTIAL}"))
}

/// SHA-256 (hex) and size of a file, read in chunks.
pub fn digest_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A problem with one part of a set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartProblem {
    pub path: String,
    pub problem: String,
}

/// Every part present with its recorded size and SHA-256; extra files are not an error.
pub fn check_parts(set: &Path, m: &SetManifest) -> Vec<PartProblem> {
    let mut problems = Vec::new();
    for p in &m.parts {
        let file = safe_join(set, &p.path);
        let problem = match file.map(|f| digest_file(&f)) {
            None => Some("unsafe path in backup.json".to_string()),
            Some(Err(e)) => Some(format!("missing or unreadable: {e:#}")),
            Some(Ok((_, n))) if n != p.bytes => {
                Some(format!("size {n} bytes, backup.json says {}", p.bytes))
            }
            Some(Ok((d, _))) if d != p.sha256 => {
                Some(format!("SHA-256 {d}, backup.json says {}", p.sha256))
            }
            Some(Ok(_)) => None,
        };
        if let Some(problem) = problem {
            problems.push(PartProblem {
                path: p.path.clone(),
                problem,
            });
        }
    }
    problems
}

/// `rel` under `dir`, or None when it would leave it (absolute, `..`).
pub fn safe_join(dir: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| dir.join(p))
}

/// One set as `backup list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SetSummary {
    pub path: PathBuf,
    pub name: String,
    pub created: String,
    pub created_unix: i64,
    pub parts: usize,
    pub bytes: u64,
    pub services: Vec<String>,
}

/// The complete sets of `project` in `dir`, newest first. Partial sets and other files are not
/// sets; an unreadable `backup.json` is skipped.
pub fn list(dir: &Path, project: &str) -> anyhow::Result<Vec<SetSummary>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(PARTIAL) || !path.is_dir() {
            continue;
        }
        let Ok(m) = SetManifest::read(&path) else {
            continue;
        };
        if m.project != project {
            continue;
        }
        out.push(SetSummary {
            name,
            created: m.created.clone(),
            created_unix: m.created_unix,
            parts: m.parts.len(),
            bytes: m.parts.iter().map(|p| p.bytes).sum(),
            services: m.services.clone(),
            path,
        });
    }
    out.sort_by(|a, b| {
        b.created_unix
            .cmp(&a.created_unix)
            .then(b.name.cmp(&a.name))
    });
    Ok(out)
}

/// Remove complete sets beyond the newest `keep` (never the newest one) and partial sets left by
/// interrupted runs; returns what was removed.
pub fn prune(dir: &Path, project: &str, keep: u32) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for s in list(dir, project)?.into_iter().skip(keep.max(1) as usize) {
        std::fs::remove_dir_all(&s.path)
            .with_context(|| format!("removing {}", s.path.display()))?;
        removed.push(s.path);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{project}-")) && name.ends_with(PARTIAL) {
                std::fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
                removed.push(e.path());
            }
        }
    }
    Ok(removed)
}

/// What the container exporter publishes as `mcp_backup_last_success_timestamp_seconds`: the
/// newest complete set, written by `mcpctl backup` to `<state>/backup-status/last.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub project: String,
    pub set: String,
    pub created_unix: i64,
    pub bytes: u64,
}

/// The directory the exporter mounts read-only (a directory: a file bind-mounted before it
/// exists would be created as a directory by the engine).
pub fn status_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("backup-status")
}

pub const STATUS_FILE: &str = "last.json";

pub fn write_status(state_dir: &Path, status: &Status) -> anyhow::Result<()> {
    let dir = status_dir(state_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".last.json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(status)?)?;
        f.sync_all()?;
    }
    // Readable by the exporter (uid 10001); it holds no secret.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, dir.join(STATUS_FILE))?;
    Ok(())
}

/// The entries of the state directory a set carries: everything but caches (vendored packages,
/// stripped binaries, build caches), reports and the backups themselves.
pub const STATE_EXCLUDED: &[&str] = &[
    "vendor",
    "stripped",
    "cache",
    "soak",
    "backups",
    "backup-status",
];

/// `state.tar` of `state_dir` (modes and owners kept: secret files are 0400 for uid 10001).
pub fn archive_state(state_dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut b = tar::Builder::new(f);
    b.follow_symlinks(false);
    let mut names: Vec<_> = std::fs::read_dir(state_dir)
        .with_context(|| format!("reading {}", state_dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !STATE_EXCLUDED.contains(&n.to_string_lossy().as_ref()))
        .collect();
    names.sort();
    for n in names {
        let p = state_dir.join(&n);
        if p.is_dir() {
            b.append_dir_all(&n, &p)
        } else {
            b.append_path_with_name(&p, &n)
        }
        .with_context(|| format!("archiving {}", p.display()))?;
    }
    b.into_inner()?.sync_all()?;
    Ok(())
}

/// Unpack `state.tar` into `state_dir` (created 0700), keeping modes and owners; a file that
/// exists already is kept. Refuses entries that would leave the directory. Returns the top-level
/// names that were unpacked.
pub fn unpack_state(tar_path: &Path, state_dir: &Path) -> anyhow::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))?;
    let f = std::fs::File::open(tar_path)?;
    let mut a = tar::Archive::new(f);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_overwrite(false);
    let mut top = std::collections::BTreeSet::new();
    for e in a.entries()? {
        let mut e = e?;
        let path = e.path()?.into_owned();
        // A file this install still has is kept: it is newer than the set's.
        if e.header().entry_type() != tar::EntryType::Directory
            && std::fs::symlink_metadata(state_dir.join(&path)).is_ok()
        {
            continue;
        }
        if e.header().entry_type() != tar::EntryType::Directory {
            if let Some(std::path::Component::Normal(first)) = path.components().next() {
                top.insert(first.to_string_lossy().into_owned());
            }
        }
        // `unpack_in` refuses `..` and absolute paths.
        anyhow::ensure!(
            e.unpack_in(state_dir)
                .with_context(|| format!("unpacking {}", path.display()))?,
            "state.tar: entry {} would leave the state directory",
            path.display()
        );
    }
    Ok(top.into_iter().collect())
}

/// The regular files of a tar the engine copied out of a container (`docker cp` of a directory:
/// entries under its base name), written into `dest` under their own names. Only plain names
/// (no directories, no links) are accepted.
pub fn extract_flat(tar_path: &Path, dest: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dest)?;
    let mut a = tar::Archive::new(std::fs::File::open(tar_path)?);
    let mut names = Vec::new();
    for e in a.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path()?.into_owned();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        anyhow::ensure!(
            !name.starts_with('.') && name.len() < 256,
            "unexpected file {} in a job's output",
            path.display()
        );
        let out = dest.join(&name);
        let mut f = std::fs::File::create(&out)?;
        std::io::copy(&mut e, &mut f)?;
        f.sync_all()?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// `artifacts.tar` of `dir` (a render output).
pub fn archive_dir(dir: &Path, dest: &Path) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(dest)?);
    b.follow_symlinks(false);
    b.append_dir_all(".", dir)
        .with_context(|| format!("archiving {}", dir.display()))?;
    b.into_inner()?.sync_all()?;
    Ok(())
}

/// A tar of `files` under `dir/` (mode 0644, owner 0): a job's input.
pub fn input_tar(files: &[(String, PathBuf)], dir: &str, dest: &Path) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(dest)?);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    b.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    for (name, path) in files {
        let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(f.metadata()?.len());
        h.set_mtime(0);
        b.append_data(&mut h, format!("{dir}/{name}"), f)?;
    }
    b.into_inner()?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(path: &str, body: &[u8]) -> Part {
        Part {
            path: path.into(),
            kind: PartKind::Database,
            service: Some("db".into()),
            database: Some("memory".into()),
            volume: None,
            target: None,
            postgres: Some("15.8".into()),
            schema_level: Some(2),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
        }
    }

    fn set(dir: &Path, name: &str, created_unix: i64, project: &str) -> PathBuf {
        let s = dir.join(name);
        std::fs::create_dir_all(s.join("db/db")).unwrap();
        std::fs::write(s.join("db/db/memory.dump"), b"dump").unwrap();
        let m = SetManifest {
            format: FORMAT,
            project: project.into(),
            created: "2026-12-03T16:00:00Z".into(),
            created_unix,
            mcpctl: "test".into(),
            services: vec!["db".into()],
            releases: BTreeMap::new(),
            parts: vec![part("db/db/memory.dump", b"dump")],
        };
        std::fs::write(s.join(SET_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        s
    }

    #[test]
    fn a_set_name_is_the_project_and_a_compact_utc_time() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_315_712);
        assert_eq!(set_name("mcp", t), "mcp-20261203T163512Z");
    }

    #[test]
    fn parts_are_checked_for_presence_size_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let s = set(dir.path(), "mcp-1", 1, "mcp");
        let m = SetManifest::read(&s).unwrap();
        assert!(check_parts(&s, &m).is_empty());
        std::fs::write(s.join("db/db/memory.dump"), b"dumq").unwrap();
        let p = check_parts(&s, &m);
        assert!(p[0].problem.contains("SHA-256"), "{p:?}");
        std::fs::write(s.join("db/db/memory.dump"), b"du").unwrap();
        assert!(check_parts(&s, &m)[0].problem.contains("size 2 bytes"));
        std::fs::remove_file(s.join("db/db/memory.dump")).unwrap();
        assert!(check_parts(&s, &m)[0].problem.contains("missing"));
        let mut evil = m.clone();
        evil.parts[0].path = "../../etc/passwd".into();
        assert!(check_parts(&s, &evil)[0].problem.contains("unsafe"));
    }

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let s = set(dir.path(), "mcp-1", 1, "mcp");
        let mut m = SetManifest::read(&s).unwrap();
        m.format = FORMAT + 1;
        std::fs::write(s.join(SET_FILE), serde_json::to_vec(&m).unwrap()).unwrap();
        let e = format!("{:#}", SetManifest::read(&s).unwrap_err());
        assert!(e.contains("newer mcpctl"), "{e}");
    }

    #[test]
    fn list_is_newest_first_and_prune_keeps_the_newest_and_drops_partials() {
        let dir = tempfile::tempdir().unwrap();
        for (i, n) in ["mcp-a", "mcp-b", "mcp-c"].iter().enumerate() {
            set(dir.path(), n, i as i64, "mcp");
        }
        set(dir.path(), "other-x", 10, "other");
        std::fs::create_dir_all(dir.path().join("mcp-d.partial")).unwrap();
        let names: Vec<_> = list(dir.path(), "mcp")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["mcp-c", "mcp-b", "mcp-a"]);
        let removed = prune(dir.path(), "mcp", 2).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(dir.path().join("mcp-c").exists() && dir.path().join("mcp-b").exists());
        assert!(!dir.path().join("mcp-a").exists() && !dir.path().join("mcp-d.partial").exists());
        assert!(
            dir.path().join("other-x").exists(),
            "another project's set is not ours"
        );
        // keep 0 still keeps the newest: a backup never removes the set it just wrote.
        prune(dir.path(), "mcp", 0).unwrap();
        assert!(dir.path().join("mcp-c").exists());
    }

    #[test]
    fn state_round_trips_without_caches_and_keeps_modes() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(state.join("auth")).unwrap();
        std::fs::create_dir_all(state.join("vendor/x")).unwrap();
        std::fs::write(state.join("install.key"), [7u8; 32]).unwrap();
        std::fs::set_permissions(
            state.join("install.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(state.join("auth/litellm.token"), "t").unwrap();
        std::fs::write(state.join("vendor/x/big"), "cache").unwrap();
        let tar = dir.path().join("state.tar");
        archive_state(&state, &tar).unwrap();
        let fresh = dir.path().join("fresh");
        let top = unpack_state(&tar, &fresh).unwrap();
        assert_eq!(top, ["auth", "install.key"]);
        assert_eq!(std::fs::read(fresh.join("install.key")).unwrap(), [7u8; 32]);
        let mode = std::fs::metadata(fresh.join("install.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!fresh.join("vendor").exists());
        // Into a partial state dir: what exists stays, what is missing comes back.
        let partial = dir.path().join("partial");
        std::fs::create_dir_all(partial.join("auth")).unwrap();
        std::fs::write(partial.join("auth/litellm.token"), "newer").unwrap();
        let top = unpack_state(&tar, &partial).unwrap();
        assert_eq!(top, ["install.key"]);
        assert_eq!(
            std::fs::read_to_string(partial.join("auth/litellm.token")).unwrap(),
            "newer"
        );
    }

    #[test]
    fn a_job_output_is_extracted_flat_and_hidden_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.dump");
        std::fs::write(&a, b"A").unwrap();
        let t = dir.path().join("in.tar");
        input_tar(&[("a.dump".into(), a)], "out", &t).unwrap();
        let got = extract_flat(&t, &dir.path().join("x")).unwrap();
        assert_eq!(got, ["a.dump"]);
        assert_eq!(std::fs::read(dir.path().join("x/a.dump")).unwrap(), b"A");
        let h = dir.path().join(".hidden");
        std::fs::write(&h, b"H").unwrap();
        input_tar(&[(".hidden".into(), h)], "out", &t).unwrap();
        assert!(extract_flat(&t, &dir.path().join("y")).is_err());
    }
}
