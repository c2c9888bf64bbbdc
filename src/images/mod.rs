//! Base images and vendored packages: what offline builds start from.
//!
//! - [`bases`]: the manifest's `bases:` built locally — one debootstrap minbase per Debian suite,
//!   every base derived from it by copy + chroot apt-get (security updates applied) and imported
//!   with `docker import`, tagged by the hash of its recipe (`src/images/bases.sh`, embedded here).
//! - [`vendor`]: `<state>/vendor/<service>/<lock-hash>/`, filled on the host from the committed
//!   locks (`locks/<service>/`) for the image's runtime (the base suite's Python, the base's Node),
//!   hashes checked, so image builds need no network.
//! - [`transfer`]: `mcpctl images export|import`, the project's images as verified files for a
//!   host with no registry.
//!
//! This module never builds service images or runs containers (that is the engine's job).

pub mod bases;
pub mod transfer;
pub mod vendor;

/// The recipe script: the single source of truth for how a base image is made. `scripts/bases`
/// runs the same file, so the setup step and `mcpctl bases build` share caches.
pub const BASES_SH: &str = include_str!("bases.sh");

/// Cache directory shared by scripts and the binary: `$MCPCTL_CACHE`, default /var/cache/mcpctl.
pub fn cache_dir() -> std::path::PathBuf {
    std::env::var_os("MCPCTL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache/mcpctl"))
}

/// Runs the embedded recipe with `args`; returns its stdout (trimmed). Its log goes to stderr,
/// line by line through `output` (above any progress bar).
pub(crate) fn run_recipe(args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::{BufRead as _, Write as _};
    let mut script = tempfile_in_tmp()?;
    script.1.write_all(BASES_SH.as_bytes())?;
    script.1.flush()?;
    let what = || format!("running the base-image recipe ({})", args.join(" "));
    let spawned = std::process::Command::new("bash")
        .arg(&script.0)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&script.0);
            return Err(e).with_context(what);
        }
    };
    let log = child.stderr.take().map(|stderr| {
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line);
                crate::output::diagnostic(text.trim_end_matches(['\n', '\r']));
                line.clear();
            }
        })
    });
    let out = child.wait_with_output();
    if let Some(log) = log {
        let _ = log.join();
    }
    let _ = std::fs::remove_file(&script.0);
    let out = out.with_context(what)?;
    if !out.status.success() {
        anyhow::bail!(
            "base-image recipe `{}` failed ({}); its log is above",
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn tempfile_in_tmp() -> anyhow::Result<(std::path::PathBuf, fs_err::File)> {
    let dir = std::env::temp_dir();
    for i in 0..100u32 {
        let path = dir.join(format!("mcpctl-bases-{}-{i}.sh", std::process::id()));
        match fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not create a temporary file in {}", dir.display())
}

/// A copy of `binary` without symbols and debug information, for images (tests and the host keep
/// the one build profile's line tables; an image does not need them: ~82 MB → ~23 MB for mcpctl).
/// Cached under `cache` by the binary's path, size and mtime. When `strip` (binutils) is missing
/// or fails, the binary itself is used and the image is only larger.
pub fn stripped(binary: &std::path::Path, cache: &std::path::Path) -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(binary) else {
        return binary.to_path_buf();
    };
    let mut h = Sha256::new();
    h.update(binary.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let out = cache.join(format!("{name}-{}", &hex::encode(h.finalize())[..16]));
    if out.exists() {
        return out;
    }
    let tmp = cache.join(format!(".{name}-{}.tmp", std::process::id()));
    let ok = std::fs::create_dir_all(cache).is_ok()
        && std::process::Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&tmp)
            .arg(binary)
            .status()
            .is_ok_and(|s| s.success())
        && std::fs::rename(&tmp, &out).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(binary = %binary.display(), "strip unavailable: the image gets the binary as built");
        return binary.to_path_buf();
    }
    // Older copies of the same binary are never used again.
    if let Ok(dir) = std::fs::read_dir(cache) {
        for e in dir.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with(&format!("{name}-")) && e.path() != out {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    out
}
