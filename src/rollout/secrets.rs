//! Secrets at deploy time: resolved on the host (`from_env` / `from_file`), written to
//! `<state>/secrets/<service>/<NAME>` (dir 0700, file 0400, owned by the container user 10001 for
//! MCP services) and bind-mounted read-only at `/run/secrets/<NAME>`. `plan` sees only an HMAC of
//! the values under a per-install key (`<state>/install.key`, 0600), never a value.
//!
//! Must not: log, print, label or ledger a value.

use std::collections::BTreeMap;
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
pub struct Resolved {
    pub name: String,
    value: Vec<u8>,
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
            out.push(Resolved {
                name: name.clone(),
                value: value.into_bytes(),
            });
            continue;
        }
        if let Some(db) = &r.database {
            out.push(Resolved {
                name: name.clone(),
                value: database_url(m, service, db, key)?.into_bytes(),
            });
            continue;
        }
        match read(r, manifest_dir) {
            Ok(Some(value)) => out.push(Resolved { name: name.clone(), value }),
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
            out.push(Resolved {
                name: format!("db_role_{role}"),
                value: role_password(key, service, &role).into_bytes(),
            });
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

/// The per-install HMAC key, created on first use (0600).
pub fn install_key(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state_dir.join("install.key");
    if let Ok(k) = std::fs::read(&path) {
        if k.len() >= 32 {
            return Ok(k);
        }
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let key: [u8; 32] = rand::random();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(&key)?;
    Ok(key.to_vec())
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

/// Per-secret HMACs (12 hex) and one combined value for the `<p>.secrets-hmac` label.
pub fn fingerprints(key: &[u8], secrets: &[Resolved]) -> (BTreeMap<String, String>, String) {
    let mut per = BTreeMap::new();
    for s in secrets {
        let mut msg = s.name.as_bytes().to_vec();
        msg.push(0);
        msg.extend_from_slice(&s.value);
        per.insert(s.name.clone(), hex::encode(&hmac(key, &msg)[..6]));
    }
    let combined: String = per.iter().map(|(k, v)| format!("{k}={v};")).collect();
    let all = if per.is_empty() {
        String::new()
    } else {
        hex::encode(&Sha256::digest(combined.as_bytes())[..6])
    };
    (per, all)
}

pub fn secret_dir(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join("secrets").join(service)
}

/// The bind mounts for a service's secrets (paths only; the files are written by [`write`]).
pub fn binds(state_dir: &Path, service: &str, secrets: &[Resolved]) -> Vec<Bind> {
    let dir = secret_dir(state_dir, service);
    secrets
        .iter()
        .map(|s| Bind {
            source: dir.join(&s.name).display().to_string(),
            target: format!("/run/secrets/{}", s.name),
            read_only: true,
        })
        .collect()
}

/// Write the files a service's containers mount. MCP services read them as uid 10001; a database
/// image runs as its own distribution-assigned user, whose uid the host cannot know, so its files
/// are world-readable inside a root-only directory.
pub fn write(
    state_dir: &Path,
    service: &str,
    role: Role,
    secrets: &[Resolved],
) -> anyhow::Result<()> {
    let dir = secret_dir(state_dir, service);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    for s in secrets {
        let path = dir.join(&s.name);
        let tmp = dir.join(format!(".{}.tmp", s.name));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&s.value)?;
        drop(f);
        let mode = match role {
            Role::Service => {
                // Only root can give files away; an unprivileged operator's files stay theirs.
                let _ = std::os::unix::fs::chown(&tmp, Some(SERVICE_UID), Some(SERVICE_UID));
                0o400
            }
            Role::Database => 0o444,
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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
        let a = [Resolved {
            name: "TOKEN".into(),
            value: b"s3cr3t-value".to_vec(),
        }];
        let b = [Resolved {
            name: "TOKEN".into(),
            value: b"other".to_vec(),
        }];
        let (pa, ca) = fingerprints(b"k", &a);
        let (_, cb) = fingerprints(b"k", &b);
        assert_ne!(ca, cb);
        assert!(!format!("{pa:?}{ca}{a:?}").contains("s3cr3t"));
    }
}
