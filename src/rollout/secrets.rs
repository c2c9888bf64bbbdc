//! Secrets at deploy time: resolved on the host (`from_env` / `from_file`), written one file per
//! value to `<state>/secrets/<service>/<NAME>@<hmac>` (dir 0700, file 0400, owned by the container
//! user 10001 for MCP services) and bind-mounted read-only at `/run/secrets/<NAME>`. `plan` sees
//! only an HMAC of the values under a per-install key (`<state>/install.key`, 0600), never a value.
//!
//! A value's file is named by its fingerprint (the one in the `<p>.secrets-hmac` label), so a
//! revision's mounts keep pointing at the values it was deployed with: a rotation writes a new file
//! beside the old one, and restarting or restoring an older revision mounts ITS values
//! ([`restore_binds`]), or refuses with the re-key step. Files are written atomically (temp file,
//! fsync, rename) and kept until [`prune`] is told no retained revision needs them.
//!
//! `install.key` is created once, atomically, and never replaced: every generated secret and
//! database password derives from it, so a present but unusable key is an error, not a new key.
//!
//! Must not: log, print, label or ledger a value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::engine::Bind;
use crate::manifest::{DatabaseRef, Manifest, Role, SecretRef};

/// The uid MCP service images run as (templates: `USER 10001:10001`).
pub const SERVICE_UID: u32 = 10001;

/// A resolved secret; `Debug` never shows the value.
#[derive(Clone)]
pub struct Resolved {
    pub name: String,
    value: Vec<u8>,
    /// [`fingerprint`] of the value under the install key it was resolved with.
    fp: String,
}

impl Resolved {
    /// A value mcpctl makes itself (the bridge's auth file, `crate::auth`), mounted like any other.
    pub(crate) fn made(key: &[u8], name: &str, value: Vec<u8>) -> Self {
        Self::new(key, name, value)
    }

    fn new(key: &[u8], name: &str, value: Vec<u8>) -> Self {
        Resolved {
            fp: fingerprint(key, name, &value),
            name: name.to_string(),
            value,
        }
    }

    /// The value's fingerprint: names its file and goes into the `<p>.secrets-hmac` label.
    pub fn fingerprint(&self) -> &str {
        &self.fp
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Resolved({}, <redacted>)", self.name)
    }
}

/// Resolve every secret of a service. Missing non-optional secrets are errors naming where the
/// value was looked for; optional ones are skipped. `generate` and `database` secrets are derived
/// from the per-install `key`; a database service also gets one `db_role_<role>` password file
/// per consumer role (its entrypoint sets each role's password from it on every start).
pub fn resolve(
    m: &Manifest,
    service: &str,
    manifest_dir: &Path,
    key: &[u8],
) -> anyhow::Result<Vec<Resolved>> {
    let svc = &m.services[service];
    let mut out = Vec::new();
    for (name, r) in &svc.secrets {
        if r.generate {
            let value = derive(key, &["generated secret", service, name]);
            out.push(Resolved::new(key, name, value.into_bytes()));
            continue;
        }
        if let Some(db) = &r.database {
            let url = database_url(m, service, db, key)?;
            out.push(Resolved::new(key, name, url.into_bytes()));
            continue;
        }
        match read(r, manifest_dir) {
            Ok(Some(value)) => out.push(Resolved::new(key, name, value)),
            Ok(None) if r.optional => {}
            Ok(None) => anyhow::bail!(
                "service `{service}`: secret `{name}` is not set ({}); set it, or mark it `optional: true`",
                describe(r)
            ),
            Err(e) => anyhow::bail!("service `{service}`: secret `{name}` ({}): {e}", describe(r)),
        }
    }
    if svc.role == Role::Database {
        let mut roles: Vec<String> = m
            .database_consumers(service)
            .into_iter()
            .map(|c| c.role)
            .collect();
        roles.dedup();
        for role in roles {
            let password = role_password(key, service, &role);
            out.push(Resolved::new(
                key,
                &format!("db_role_{role}"),
                password.into_bytes(),
            ));
        }
    }
    Ok(out)
}

/// 32 hex characters (128 bits) from the install key and a purpose; stable across runs.
fn derive(key: &[u8], parts: &[&str]) -> String {
    let msg = parts.join("\0");
    hex::encode(&hmac(key, msg.as_bytes())[..16])
}

fn role_password(key: &[u8], db: &str, role: &str) -> String {
    derive(key, &["database role password", db, role])
}

/// `postgresql://mcp_<service>:<password>@mcp-<db>:<port>/<name>` on the stack network.
fn database_url(
    m: &Manifest,
    service: &str,
    db: &DatabaseRef,
    key: &[u8],
) -> anyhow::Result<String> {
    let target = m
        .services
        .get(&db.service)
        .with_context(|| format!("service `{service}`: no database service `{}`", db.service))?;
    let role = format!("mcp_{service}");
    Ok(format!(
        "postgresql://{role}:{}@mcp-{}:{}/{}",
        role_password(key, &db.service, &role),
        db.service,
        target.container_port,
        db.name
    ))
}

/// Where a secret reference reads its value, for messages.
pub(crate) fn describe_source(r: &SecretRef) -> String {
    describe(r)
}

/// A `from_env` / `from_file` value (`Ok(None)`: not set).
pub(crate) fn read_source(r: &SecretRef, manifest_dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    read(r, manifest_dir)
}

/// Create `dir` (and parents) and make it 0700.
pub(crate) fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Atomically replace `path` with `value`, mode 0600 (temp file, fsync, rename, fsync the dir).
pub(crate) fn write_private(path: &Path, value: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    write_new(&tmp, value)?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Write `value` to a fresh file `tmp` (mode 0600, replacing a leftover of an interrupted run)
/// and fsync it, ready to be renamed into place.
fn write_new(tmp: &Path, value: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(value)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))
}

fn describe(r: &SecretRef) -> String {
    match (&r.from_env, &r.from_file) {
        (Some(v), _) => format!("environment variable {v}"),
        (_, Some(f)) => format!("file {f}"),
        _ => "no source".into(),
    }
}

fn read(r: &SecretRef, manifest_dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(var) = &r.from_env {
        return Ok(std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .filter(|v| !v.is_empty()));
    }
    if let Some(file) = &r.from_file {
        let path = manifest_dir.join(file);
        return match std::fs::read(&path) {
            Ok(mut v) => {
                // A trailing newline from `echo x > file` is not part of the secret.
                while v.last() == Some(&b'\n') {
                    v.pop();
                }
                Ok(Some(v))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    Ok(None)
}

/// Length of the per-install key.
pub const KEY_LEN: usize = 32;

/// The per-install HMAC key, created on first use (0600) and never replaced: created under a
/// temporary name, fsynced, then linked into place (a link never overwrites, so two first runs
/// agree on one key). A key file that is present but unreadable or of the wrong length (torn,
/// truncated, emptied) is an error saying what to do; a silent new key would change every
/// generated secret and database password.
pub fn install_key(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state_dir.join("install.key");
    if let Some(k) = read_key(&path)? {
        return Ok(k);
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let key: [u8; KEY_LEN] = rand::random();
    match create_once(&path, &key, |_| Ok(())) {
        Ok(true) => Ok(key.to_vec()),
        // Another run created it first: use theirs.
        Ok(false) => read_key(&path)?
            .ok_or_else(|| key_error(&path, "exists but cannot be opened (a dangling link?)")),
        Err(e) => Err(anyhow::anyhow!(
            "creating the install key {}: {e}",
            path.display()
        )),
    }
}

/// Create `path` holding `contents` unless it exists, never replacing it: written (0600) under a
/// temporary name in the same directory, `prepare`d (ownership, mode), fsynced, then hard-linked
/// into place — a link never overwrites, so of two first runs exactly one creates the file and
/// both then read the same contents. `Ok(false)`: it existed already (the caller reads it).
pub(crate) fn create_once(
    path: &Path,
    contents: &[u8],
    prepare: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        prepare(&tmp)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// `Ok(None)`: no key yet. A present key that is not exactly [`KEY_LEN`] readable bytes is an error.
fn read_key(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(k) if k.len() == KEY_LEN => Ok(Some(k)),
        Ok(k) if k.is_empty() => Err(key_error(path, "is empty")),
        Ok(k) => Err(key_error(
            path,
            &format!(
                "is {} bytes long, not {KEY_LEN} (torn or truncated)",
                k.len()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(key_error(path, &format!("cannot be read: {e}"))),
    }
}

fn key_error(path: &Path, problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the install key {} {problem}. Every generated secret, database password and secret \
         fingerprint derives from it, so mcpctl will not replace it: restore it from a backup of \
         the state directory. Only if it is lost for good, delete it: the next run creates a new \
         key, every generated secret and database password changes with the next deploy, and a \
         rollback needs `--current-secrets`",
        path.display()
    )
}

/// fsync a directory so a rename or link in it survives a crash (best effort: not every
/// filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// One secret's fingerprint: 12 hex of the HMAC of `NAME\0value` under the install key.
pub fn fingerprint(key: &[u8], name: &str, value: &[u8]) -> String {
    let mut msg = name.as_bytes().to_vec();
    msg.push(0);
    msg.extend_from_slice(value);
    hex::encode(&hmac(key, &msg)[..6])
}

/// Per-secret HMACs (12 hex) and one combined value for the `<p>.secrets-hmac` label.
pub fn fingerprints(key: &[u8], secrets: &[Resolved]) -> (BTreeMap<String, String>, String) {
    let mut per = BTreeMap::new();
    for s in secrets {
        per.insert(s.name.clone(), fingerprint(key, &s.name, &s.value));
    }
    let combined = label(&per);
    let all = if per.is_empty() {
        String::new()
    } else {
        hex::encode(&Sha256::digest(combined.as_bytes())[..6])
    };
    (per, all)
}

/// `NAME=hmac;NAME2=hmac;`: the `<p>.secrets-hmac` label (parsed by `plan::parse_fingerprints`).
pub fn label(per: &BTreeMap<String, String>) -> String {
    per.iter().map(|(k, v)| format!("{k}={v};")).collect()
}

pub fn secret_dir(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join("secrets").join(service)
}

/// The file holding one value: `<dir>/<NAME>@<fingerprint>`.
pub fn value_path(state_dir: &Path, service: &str, name: &str, fp: &str) -> PathBuf {
    secret_dir(state_dir, service).join(format!("{name}@{fp}"))
}

fn bind(source: PathBuf, name: &str) -> Bind {
    Bind {
        source: source.display().to_string(),
        target: format!("/run/secrets/{name}"),
        read_only: true,
    }
}

/// The bind mounts for a service's secrets: each value's own file (written by [`write`]).
pub fn binds(state_dir: &Path, service: &str, secrets: &[Resolved]) -> Vec<Bind> {
    secrets
        .iter()
        .map(|s| bind(value_path(state_dir, service, &s.name, &s.fp), &s.name))
        .collect()
}

/// Write the files a service's containers mount, one per value (see [`value_path`]); files of
/// other values stay for the revisions that mount them. MCP services read them as uid 10001; a
/// database image runs as its own distribution-assigned user, whose uid the host cannot know, so
/// its files are world-readable inside a root-only directory.
pub fn write(
    state_dir: &Path,
    service: &str,
    role: Role,
    secrets: &[Resolved],
) -> anyhow::Result<()> {
    for s in secrets {
        write_value(state_dir, service, role, &s.name, &s.fp, &s.value)?;
    }
    Ok(())
}

/// Atomically (temp file, fsync, rename, fsync the directory) write one value's file.
fn write_value(
    state_dir: &Path,
    service: &str,
    role: Role,
    name: &str,
    fp: &str,
    value: &[u8],
) -> anyhow::Result<()> {
    let dir = secret_dir(state_dir, service);
    private_dir(&dir)?;
    let path = value_path(state_dir, service, name, fp);
    let tmp = dir.join(format!(".{name}@{fp}.tmp"));
    write_new(&tmp, value)?;
    let mode = match role {
        Role::Service => {
            // Only root can give files away; an unprivileged operator's files stay theirs.
            let _ = std::os::unix::fs::chown(&tmp, Some(SERVICE_UID), Some(SERVICE_UID));
            0o400
        }
        Role::Database => 0o444,
    };
    fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    // The engine creates an empty directory at a missing bind source (a revision started after
    // its file was pruned); the value's file takes its place.
    if path.is_dir() {
        let _ = std::fs::remove_dir(&path);
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    sync_dir(&dir);
    Ok(())
}

/// What a restored revision mounts: the values it was deployed with where their files exist.
pub struct Restore<'a> {
    pub state_dir: &'a Path,
    pub service: &'a str,
    /// The restored revision, for messages (`r3-abc123`).
    pub revision: &'a str,
    pub role: Role,
    pub key: &'a [u8],
    /// The values the manifest provides now, or why they could not be resolved.
    pub current: Result<&'a [Resolved], String>,
    /// Re-key: where a recorded value is gone, mount the current one instead (and record its
    /// fingerprint): `mcpctl rollback --current-secrets`.
    pub use_current: bool,
}

/// The secret mounts of a restored revision and the `<p>.secrets-hmac` label that describes them.
#[derive(Debug)]
pub struct Restored {
    pub binds: Vec<Bind>,
    pub label: String,
    /// Secrets that now mount the current value instead of the recorded (gone) one.
    pub rekeyed: Vec<String>,
}

impl Restore<'_> {
    /// For each secret the revision mounted (`recorded_binds` targets under `/run/secrets/`), with
    /// the fingerprint its label recorded (`recorded_label`, `NAME=hmac;...`), the first that holds
    /// that value: its own file; the file an older mcpctl wrote (`<dir>/<NAME>`), if its content
    /// has that fingerprint; the current value, if it is the same. Otherwise the current value
    /// with [`Restore::use_current`], else an error naming the secret and the ways out. Values
    /// found outside their own file are written to it.
    pub fn binds(&self, recorded_binds: &[Bind], recorded_label: &str) -> anyhow::Result<Restored> {
        // Labels are data: a fingerprint that is not 12 hex digits names no file.
        let mut recorded = crate::rollout::plan::parse_fingerprints(recorded_label);
        recorded.retain(|_, fp| fp.len() == 12 && fp.bytes().all(|b| b.is_ascii_hexdigit()));
        let current = self.current.as_ref().ok();
        let mut per = BTreeMap::new();
        let mut binds = Vec::new();
        let mut rekeyed = Vec::new();
        let names = recorded_binds
            .iter()
            .filter_map(|b| b.target.strip_prefix("/run/secrets/"));
        for name in names {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                anyhow::bail!(
                    "{}: {} mounts `/run/secrets/{name}`, which is not a secret name",
                    self.service,
                    self.revision
                );
            }
            let now = current.and_then(|c| c.iter().find(|r| r.name == name));
            let found = match recorded.get(name) {
                Some(fp) => self.has_value(name, fp, now)?.then(|| fp.clone()),
                None => None,
            };
            let fp = match (found, now) {
                (Some(fp), _) => fp,
                (None, Some(now)) if self.use_current => {
                    self.write_current(now)?;
                    rekeyed.push(name.to_string());
                    now.fp.clone()
                }
                (None, _) => {
                    let recorded_fp = recorded.get(name).map(String::as_str);
                    return Err(self.gone(name, recorded_fp, now));
                }
            };
            binds.push(bind(
                value_path(self.state_dir, self.service, name, &fp),
                name,
            ));
            per.insert(name.to_string(), fp);
        }
        Ok(Restored {
            binds,
            label: label(&per),
            rekeyed,
        })
    }

    /// Is the value with fingerprint `fp` in its own file (written there if found elsewhere)?
    fn has_value(&self, name: &str, fp: &str, now: Option<&Resolved>) -> anyhow::Result<bool> {
        if value_path(self.state_dir, self.service, name, fp).is_file() {
            return Ok(true);
        }
        let legacy = secret_dir(self.state_dir, self.service).join(name);
        if let Ok(v) = std::fs::read(&legacy) {
            if fingerprint(self.key, name, &v) == fp {
                write_value(self.state_dir, self.service, self.role, name, fp, &v)?;
                return Ok(true);
            }
        }
        match now {
            Some(now) if now.fp == fp => {
                self.write_current(now)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn write_current(&self, now: &Resolved) -> anyhow::Result<()> {
        write_value(
            self.state_dir,
            self.service,
            self.role,
            &now.name,
            &now.fp,
            &now.value,
        )
    }

    fn gone(&self, name: &str, fp: Option<&str>, now: Option<&Resolved>) -> anyhow::Error {
        let (service, revision) = (self.service, self.revision);
        let which = match fp {
            Some(fp) => format!(
                "the value of secret `{name}` that {revision} was deployed with (hmac {fp}) is gone from {} (state directory lost or restored without it, value pruned, or a new install key)",
                secret_dir(self.state_dir, service).display()
            ),
            None => format!("{revision} mounts secret `{name}` but its label records no fingerprint for it"),
        };
        let restore = "restore the state directory (`secrets/` and `install.key`) from a backup";
        match (now, &self.current) {
            (Some(_), _) => anyhow::anyhow!(
                "{service}: {which}, and the current value differs. Either {restore}, or re-key: rerun the rollback with `--current-secrets` to restore {revision} with the current value (or deploy the current manifest: `mcpctl deploy {service}`)"
            ),
            (None, Err(e)) => anyhow::anyhow!(
                "{service}: {which}, and the current value cannot be resolved ({e}). Either {restore}, or provide the value and rerun the rollback with `--current-secrets`"
            ),
            (None, Ok(_)) => anyhow::anyhow!(
                "{service}: {which}, and the manifest no longer provides `{name}`. Either {restore}, or add `{name}` back to the manifest and rerun the rollback with `--current-secrets`"
            ),
        }
    }
}

/// Remove the value files of `service` whose fingerprint is not in `keep` (the fingerprints in
/// the `<p>.secrets-hmac` labels of every revision still held, serving or retained), and temp
/// files a crash left. Files of an older mcpctl (`<NAME>`, without a fingerprint) are left alone.
/// Returns the names of the removed files.
pub fn prune(
    state_dir: &Path,
    service: &str,
    keep: &BTreeSet<String>,
) -> anyhow::Result<Vec<String>> {
    let dir = secret_dir(state_dir, service);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut removed = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let file = e.file_name().to_string_lossy().into_owned();
        let stale = if file.starts_with('.') && file.ends_with(".tmp") {
            true
        } else {
            match file.rsplit_once('@') {
                Some((_, fp)) => !keep.contains(fp),
                None => false,
            }
        };
        if stale {
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
            removed.push(file);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_database_secret_and_its_role_file_carry_the_same_derived_password() {
        let (m, _) = crate::manifest::load_str(
            r#"
version: 1
project: demo
bases:
  node22: {suite: bookworm, node: "22.23.3"}
services:
  db:
    role: database
    container_port: 5432
    stateful: true
    server:
      source: {image: {ref: "postgres:16.4"}}
    secrets:
      POSTGRES_PASSWORD: {generate: true}
  app:
    port: 8501
    server:
      source: {npm: {package: "@example/server", version: "1.0.0"}}
      command: [server]
    build: {base: node22}
    secrets:
      DATABASE_URL: {database: {service: db, name: appdata, access: read_only}}
    health: {expect_tools: {include: [echo]}}
"#,
            "test.yaml",
        )
        .unwrap();
        let dir = Path::new(".");
        let app = resolve(&m, "app", dir, b"key-one").unwrap();
        let url = String::from_utf8(app[0].value.clone()).unwrap();
        let pw = url
            .strip_prefix("postgresql://mcp_app:")
            .and_then(|r| r.strip_suffix("@mcp-db:5432/appdata"))
            .unwrap_or_else(|| panic!("unexpected URL shape: {url}"));
        assert_eq!(pw.len(), 32);
        let db = resolve(&m, "db", dir, b"key-one").unwrap();
        let names: Vec<&str> = db.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["POSTGRES_PASSWORD", "db_role_mcp_app"]);
        assert_eq!(
            db[1].value,
            pw.as_bytes(),
            "the role file holds the URL's password"
        );
        // Stable for one key, different for another.
        assert_eq!(
            resolve(&m, "app", dir, b"key-one").unwrap()[0].value,
            app[0].value
        );
        assert_ne!(
            resolve(&m, "app", dir, b"key-two").unwrap()[0].value,
            app[0].value
        );
        assert!(
            !format!("{db:?}{app:?}").contains(pw),
            "Debug never shows a value"
        );
    }

    #[test]
    fn fingerprints_change_with_value_and_never_contain_it() {
        let a = [Resolved::new(b"k", "TOKEN", b"s3cr3t-value".to_vec())];
        let b = [Resolved::new(b"k", "TOKEN", b"other".to_vec())];
        let (pa, ca) = fingerprints(b"k", &a);
        let (_, cb) = fingerprints(b"k", &b);
        assert_ne!(ca, cb);
        assert_eq!(
            pa["TOKEN"],
            a[0].fingerprint(),
            "the file name is the label's hmac"
        );
        assert!(!format!("{pa:?}{ca}{a:?}").contains("s3cr3t"));
    }

    use std::os::unix::fs::MetadataExt;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(value: &str) -> Resolved {
        Resolved::new(KEY, "TOKEN", value.as_bytes().to_vec())
    }

    fn restore<'a>(state: &'a Path, current: Result<&'a [Resolved], String>) -> Restore<'a> {
        Restore {
            state_dir: state,
            service: "alpha",
            revision: "r1-abc",
            role: Role::Service,
            key: KEY,
            current,
            use_current: false,
        }
    }

    fn recorded(state: &Path, v: &[Resolved]) -> (Vec<Bind>, String) {
        let mut b = binds(state, "alpha", v);
        // A recorded spec also carries volumes; only /run/secrets/ targets are secrets.
        b.push(Bind {
            source: "alpha-data".into(),
            target: "/data".into(),
            read_only: false,
        });
        (b, label(&fingerprints(KEY, v).0))
    }

    #[test]
    fn install_key_is_created_once_atomically_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let k = install_key(&state).unwrap();
        assert_eq!(k.len(), KEY_LEN);
        let meta = std::fs::metadata(state.join("install.key")).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(install_key(&state).unwrap(), k, "read back, not replaced");
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["install.key"], "no temp file left");
    }

    #[test]
    fn an_unusable_install_key_is_an_error_never_a_new_key() {
        for (what, bytes) in [
            ("empty", vec![]),
            ("torn", vec![7u8; 16]),
            ("too long", vec![7u8; KEY_LEN + 1]),
        ] {
            let t = tempfile::tempdir().unwrap();
            let path = t.path().join("install.key");
            std::fs::write(&path, &bytes).unwrap();
            let e = install_key(t.path()).expect_err(what).to_string();
            assert!(e.contains(&path.display().to_string()), "{what}: {e}");
            assert!(e.contains("restore it from a backup"), "{what}: {e}");
            assert!(e.contains("delete it"), "{what}: {e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{what}: left as it was"
            );
        }
        // Unreadable (as root, permissions do not stop a read: a directory does).
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("install.key")).unwrap();
        let e = install_key(t.path()).unwrap_err().to_string();
        assert!(e.contains("cannot be read"), "{e}");
        assert!(t.path().join("install.key").is_dir(), "left as it was");
    }

    #[test]
    fn each_value_has_its_own_file_and_a_rotation_keeps_the_old_one() {
        let t = tempfile::tempdir().unwrap();
        let (v1, v2) = ([token("one")], [token("two")]);
        write(t.path(), "alpha", Role::Service, &v1).unwrap();
        write(t.path(), "alpha", Role::Service, &v2).unwrap();
        let (b1, b2) = (binds(t.path(), "alpha", &v1), binds(t.path(), "alpha", &v2));
        assert_ne!(b1[0].source, b2[0].source);
        assert_eq!(b1[0].target, "/run/secrets/TOKEN");
        assert!(b1[0].read_only);
        assert!(b2[0]
            .source
            .ends_with(&format!("/TOKEN@{}", v2[0].fingerprint())));
        assert_eq!(std::fs::read(&b1[0].source).unwrap(), b"one");
        assert_eq!(std::fs::read(&b2[0].source).unwrap(), b"two");
        let meta = std::fs::metadata(&b1[0].source).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o400);
        let dir = std::fs::metadata(secret_dir(t.path(), "alpha")).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
        // Rewriting a value is idempotent; a database's files are world-readable.
        write(t.path(), "db", Role::Database, &v1).unwrap();
        write(t.path(), "db", Role::Database, &v1).unwrap();
        let file = value_path(t.path(), "db", "TOKEN", v1[0].fingerprint());
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o444);
        assert_eq!(
            std::fs::read_dir(secret_dir(t.path(), "db"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_restore_mounts_the_recorded_value_not_the_current_one() {
        let t = tempfile::tempdir().unwrap();
        let (v1, v2) = ([token("one")], [token("two")]);
        write(t.path(), "alpha", Role::Service, &v1).unwrap();
        let (rb, rl) = recorded(t.path(), &v1);
        write(t.path(), "alpha", Role::Service, &v2).unwrap();
        let r = restore(t.path(), Ok(&v2)).binds(&rb, &rl).unwrap();
        assert_eq!(r.binds.len(), 1, "volumes are not secrets: {r:?}");
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"one");
        assert_eq!(r.label, rl);
        assert!(r.rekeyed.is_empty());
        // Still restorable when the manifest no longer provides it, or cannot resolve it now.
        let r = restore(t.path(), Ok(&[])).binds(&rb, &rl).unwrap();
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"one");
        let r = restore(t.path(), Err("TOKEN is not set".into()))
            .binds(&rb, &rl)
            .unwrap();
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"one");
    }

    #[test]
    fn a_gone_value_is_rewritten_from_the_same_current_value_or_from_an_old_unnamed_file() {
        let t = tempfile::tempdir().unwrap();
        let v1 = [token("one")];
        let (rb, rl) = recorded(t.path(), &v1);
        // The state directory was lost, the value did not change: written again from the host.
        let r = restore(t.path(), Ok(&v1)).binds(&rb, &rl).unwrap();
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"one");
        assert_eq!(r.label, rl);
        // An older mcpctl's `<dir>/TOKEN` holding the recorded value: moved into its own file.
        let t = tempfile::tempdir().unwrap();
        let dir = secret_dir(t.path(), "alpha");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("TOKEN"), "one").unwrap();
        let r = restore(t.path(), Ok(&[token("two")]))
            .binds(&rb, &rl)
            .unwrap();
        // (The recorded sources name the first state directory: a restore binds this one.)
        let own = value_path(t.path(), "alpha", "TOKEN", v1[0].fingerprint());
        assert_eq!(r.binds[0].source, own.display().to_string());
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"one");
        // ... but not one holding another value.
        std::fs::remove_file(&r.binds[0].source).unwrap();
        std::fs::write(dir.join("TOKEN"), "two").unwrap();
        assert!(restore(t.path(), Ok(&[])).binds(&rb, &rl).is_err());
    }

    #[test]
    fn a_gone_value_that_differs_now_is_refused_unless_rekeyed() {
        let t = tempfile::tempdir().unwrap();
        let (v1, v2) = ([token("s3cr3t-1")], [token("s3cr3t-2")]);
        let (rb, rl) = recorded(t.path(), &v1);
        let e = restore(t.path(), Ok(&v2))
            .binds(&rb, &rl)
            .unwrap_err()
            .to_string();
        for want in [
            "alpha: ",
            "secret `TOKEN`",
            "r1-abc",
            "is gone",
            "from a backup",
            "--current-secrets",
            "mcpctl deploy alpha",
        ] {
            assert!(e.contains(want), "missing `{want}`: {e}");
        }
        assert!(!e.contains("s3cr3t"), "no value in: {e}");
        assert!(!secret_dir(t.path(), "alpha").exists(), "nothing written");
        let e = restore(t.path(), Err("variable X is not set".into()))
            .binds(&rb, &rl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("variable X is not set"), "{e}");
        let e = restore(t.path(), Ok(&[]))
            .binds(&rb, &rl)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no longer provides `TOKEN`"), "{e}");

        // Re-key: the current value, and the label says so.
        let mut rk = restore(t.path(), Ok(&v2));
        rk.use_current = true;
        let r = rk.binds(&rb, &rl).unwrap();
        assert_eq!(std::fs::read(&r.binds[0].source).unwrap(), b"s3cr3t-2");
        assert_eq!(r.label, label(&fingerprints(KEY, &v2).0));
        assert_eq!(r.rekeyed, ["TOKEN"]);
    }

    #[test]
    fn prune_keeps_the_listed_values_and_files_of_older_versions() {
        let t = tempfile::tempdir().unwrap();
        let (v1, v2) = ([token("one")], [token("two")]);
        write(t.path(), "alpha", Role::Service, &v1).unwrap();
        write(t.path(), "alpha", Role::Service, &v2).unwrap();
        let dir = secret_dir(t.path(), "alpha");
        std::fs::write(dir.join("TOKEN"), "old").unwrap();
        std::fs::write(dir.join(".TOKEN@dead.tmp"), "torn").unwrap();
        let keep = BTreeSet::from([v2[0].fingerprint().to_string()]);
        let removed = prune(t.path(), "alpha", &keep).unwrap();
        assert_eq!(
            removed,
            [
                ".TOKEN@dead.tmp".to_string(),
                format!("TOKEN@{}", v1[0].fingerprint())
            ]
        );
        let mut left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "TOKEN".to_string(),
                format!("TOKEN@{}", v2[0].fingerprint())
            ]
        );
        assert!(prune(t.path(), "gone", &keep).unwrap().is_empty());
    }
}
