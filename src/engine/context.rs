//! Build contexts: the one place that assembles what `docker build` receives (rendered Dockerfile,
//! the mcpctl binary, first-party binaries, locks, vendored packages). Other features (base
//! images, vendoring) extend a context with [`BuildContext::add_file`] / [`BuildContext::add_dir`].
//!
//! The content digest of a context is part of the image tag, so it must be stable: entries are
//! sorted, tar headers carry no mtimes/owners, and large files are digested once per (path, size,
//! mtime) through a small cache file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::locks::MutexExt;

#[derive(Debug, Clone)]
enum Entry {
    Bytes { data: Vec<u8>, mode: u32 },
    File { path: PathBuf, mode: u32 },
}

/// Files to send as a build context, by path inside the context.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    entries: BTreeMap<String, Entry>,
}

impl BuildContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_bytes(&mut self, at: &str, data: impl Into<Vec<u8>>, executable: bool) {
        let mode = if executable { 0o755 } else { 0o644 };
        self.entries.insert(
            at.to_string(),
            Entry::Bytes {
                data: data.into(),
                mode,
            },
        );
    }

    /// A host file, read when the context is digested or sent.
    pub fn add_file(&mut self, at: &str, path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .with_context(|| format!("build context: {}", path.display()))?;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        self.entries.insert(
            at.to_string(),
            Entry::File {
                path: path.to_path_buf(),
                mode,
            },
        );
        Ok(())
    }

    /// Every file under a host directory, below `at`.
    pub fn add_dir(&mut self, at: &str, dir: &Path) -> anyhow::Result<()> {
        let mut stack = vec![(dir.to_path_buf(), at.trim_end_matches('/').to_string())];
        while let Some((d, prefix)) = stack.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("build context: {}", d.display()))?
            {
                let entry = entry.with_context(|| format!("build context: {}", d.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let inner = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                if entry.file_type()?.is_dir() {
                    stack.push((entry.path(), inner));
                } else {
                    self.add_file(&inner, &entry.path())?;
                }
            }
        }
        Ok(())
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Content digest (hex) of the whole context: paths, modes and contents.
    pub fn digest(&self, cache: &DigestCache) -> anyhow::Result<String> {
        let mut h = Sha256::new();
        for (at, e) in &self.entries {
            h.update(at.as_bytes());
            h.update([0]);
            match e {
                Entry::Bytes { data, mode } => {
                    h.update(mode.to_le_bytes());
                    h.update(Sha256::digest(data));
                }
                Entry::File { path, mode } => {
                    h.update(mode.to_le_bytes());
                    h.update(cache.file_digest(path)?.as_bytes());
                }
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    /// The context as an uncompressed tar.
    pub fn to_tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (at, e) in &self.entries {
            let (data, mode) = match e {
                Entry::Bytes { data, mode } => (data.clone(), *mode),
                Entry::File { path, mode } => (
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                    *mode,
                ),
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_cksum();
            b.append_data(&mut header, at, data.as_slice())?;
        }
        Ok(b.into_inner()?)
    }
}

/// Digests of host files keyed by (path, size, mtime), persisted in the state directory so a
/// no-op `plan` does not re-read a 50 MB binary every time.
pub struct DigestCache {
    file: Option<PathBuf>,
    map: std::sync::Mutex<BTreeMap<String, String>>,
}

impl DigestCache {
    pub fn in_memory() -> Self {
        Self {
            file: None,
            map: Default::default(),
        }
    }

    pub fn load(file: PathBuf) -> Self {
        let map = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            file: Some(file),
            map: std::sync::Mutex::new(map),
        }
    }

    pub fn file_digest(&self, path: &Path) -> anyhow::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let key = format!(
            "{}|{}|{}.{}|{}",
            path.display(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ino()
        );
        if let Some(d) = self.map.lock_ignore_poison().get(&key) {
            return Ok(d.clone());
        }
        let mut f = fs_err::File::open(path)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        let d = hex::encode(h.finalize());
        let mut map = self.map.lock_ignore_poison();
        // Keep the cache small: one entry per path.
        let prefix = format!("{}|", path.display());
        map.retain(|k, _| !k.starts_with(&prefix));
        map.insert(key, d.clone());
        if let Some(file) = &self.file {
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let tmp = file.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&*map)?).is_ok() {
                let _ = std::fs::rename(&tmp, file);
            }
        }
        Ok(d)
    }
}
