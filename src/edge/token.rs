//! The edge admin API's bearer token (docs/contracts.md "Edge", issue 17 item 6).
//!
//! One random token per install at `<state>/edge/admin.token` (64 hex characters, 0600, the
//! directory 0700), created once like `install.key`: written under a temporary name, fsynced,
//! then hard-linked into place (a link never overwrites, so two first runs agree on one token).
//! It is random rather than derived from the install key so that it can be rotated alone (delete
//! it, `mcpctl edge replace`) without changing every generated secret.
//!
//! The edge reads it from a read-only bind mount (`--admin-token-file`), never from an
//! environment variable, label, argument or log line; the host side ([`super::admin`]) reads it
//! from the state directory.
//!
//! Must not: print the token, or create it on the host side's read path (only `edge up`/`replace`
//! create it, so a lost token is an error rather than a silent mismatch with the running edge).

#[cfg(feature = "cli")]
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where the token is mounted inside the edge container.
pub const MOUNTED_AT: &str = "/run/mcpctl-edge/admin.token";
/// The user the edge image runs as (its Dockerfile's `USER`).
#[cfg(feature = "cli")]
const EDGE_UID: u32 = 10001;
const TOKEN_BYTES: usize = 32;

/// `<state>/edge/admin.token`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("edge").join("admin.token")
}

/// The token's text (trailing newlines dropped) if it is a plausible token: 64 hex characters.
fn parse(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not text".to_string())?;
    let t = text.trim_end_matches(['\n', '\r']);
    if t.is_empty() {
        return Err("is empty".into());
    }
    if t.len() != TOKEN_BYTES * 2 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "is not a token ({} characters; expected {} hex characters)",
            t.len(),
            TOKEN_BYTES * 2
        ));
    }
    Ok(t.to_string())
}

/// Read a token file (the edge's `--admin-token-file`, or the host's copy). Errors name the file
/// but never its content.
pub fn read_file(file: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("reading the edge admin token {}", file.display()))?;
    parse(&bytes).map_err(|p| anyhow::anyhow!("the edge admin token {} {p}", file.display()))
}

/// The host side's token. A missing file says what to do.
pub fn load(state_dir: &Path) -> anyhow::Result<String> {
    let file = path(state_dir);
    if !file.exists() {
        anyhow::bail!(
            "the edge admin token {} is missing (the edge's admin API refuses requests without \
             it). `mcpctl edge up` creates it; if the running edge was created with another token \
             (the file was deleted or the state directory restored), `mcpctl edge replace --yes` \
             then makes the edge use the new one",
            file.display()
        );
    }
    read_file(&file)
}

/// The token, created on first use. Readable by the operator (owner) and, when mcpctl runs as
/// root, chowned to the edge's user so the container can read its read-only mount; an
/// unprivileged operator's file stays theirs and is made world-readable inside the 0700
/// `<state>/edge` directory (the container user must read it; the directory keeps other host
/// users out). Host side only (the in-container binary has no `rollout`).
#[cfg(feature = "cli")]
pub fn ensure(state_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("edge");
    let file = path(state_dir);
    if file.exists() {
        read_file(&file)?;
        return Ok(file);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))?;
    let token = hex::encode(rand::random::<[u8; TOKEN_BYTES]>());
    let prepare = |tmp: &Path| {
        if std::os::unix::fs::chown(tmp, Some(EDGE_UID), Some(EDGE_UID)).is_err() {
            std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(())
    };
    match crate::rollout::secrets::create_once(&file, token.as_bytes(), prepare) {
        // Created, or another run created it first: use theirs.
        Ok(_) => {
            read_file(&file)?;
            Ok(file)
        }
        Err(e) => Err(anyhow::anyhow!(
            "creating the edge admin token {}: {e}",
            file.display()
        )),
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn the_token_is_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("edge/admin.token is missing") && err.contains("mcpctl edge up"),
            "{err}"
        );
        let file = ensure(dir.path()).unwrap();
        let token = load(dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(ensure(dir.path()).unwrap(), file);
        assert_eq!(load(dir.path()).unwrap(), token, "never replaced");
        let meta = std::fs::metadata(&file).unwrap();
        // Root: 0600, owned by the edge's user; otherwise 0644 inside a 0700 directory.
        let mode = meta.mode() & 0o777;
        assert!(
            (meta.uid() == EDGE_UID && mode == 0o600) || mode == 0o644,
            "{mode:o}"
        );
        let dmode = std::fs::metadata(file.parent().unwrap()).unwrap().mode() & 0o777;
        assert_eq!(dmode, 0o700);
        // A damaged file is an error that names it and not its content.
        std::fs::write(&file, "short\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("is not a token") && !err.contains("short"),
            "{err}"
        );
        std::fs::write(&file, format!("{token}\n")).unwrap();
        assert_eq!(
            read_file(&file).unwrap(),
            token,
            "a trailing newline is not part of it"
        );
    }
}
