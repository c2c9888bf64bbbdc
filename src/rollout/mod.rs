//! Rollout: what should run (`desired`), what runs (`plan::observe`), the pure difference
//! (`plan`), and applying it one service at a time behind the MCP gate (`executor`), with the
//! ledger, the engine-held lock, secrets, and recovery after an interrupted run (`reconcile`).
//!
//! Must not: print (commands report through `output`), or keep state that Docker does not also
//! hold — labels on containers and images are the truth; the state directory holds history
//! (ledger), secrets files, the install key and caches.

pub mod desired;
pub mod executor;
pub mod exporter;
pub mod fault;
pub mod ledger;
pub mod lock;
pub mod plan;
pub mod reconcile;
pub mod release;
pub mod secrets;

use std::path::PathBuf;

use crate::engine::labels::Keys;
use crate::manifest::Manifest;

/// One project as rollout sees it: the manifest and where things live.
pub struct Project {
    pub manifest: Manifest,
    /// Directory of the manifest (relative `from_file` secrets and host-path volumes resolve here).
    pub manifest_dir: PathBuf,
    /// Absolute state directory (bind-mount sources must be absolute).
    pub state_dir: PathBuf,
    pub keys: Keys,
}

impl Project {
    pub fn new(
        manifest: Manifest,
        manifest_path: &std::path::Path,
        state_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let manifest_dir = manifest_path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        let manifest_dir = std::fs::canonicalize(&manifest_dir).unwrap_or(manifest_dir);
        let state_dir = if state_dir.is_absolute() {
            state_dir
        } else {
            std::env::current_dir()?.join(state_dir)
        };
        let keys = Keys::new(&manifest.label_prefix);
        Ok(Self {
            manifest,
            manifest_dir,
            state_dir,
            keys,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.project
    }

    /// `<project>-<service>-r<release>`
    pub fn container_name(&self, service: &str, release: u64) -> String {
        format!("{}-{service}-r{release}", self.manifest.project)
    }
}

/// `r<N>-<hash8>`
pub fn revision_name(release: u64, config_hash: &str) -> String {
    format!("r{release}-{}", &config_hash[..config_hash.len().min(8)])
}
