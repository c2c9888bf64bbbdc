//! The ledger: append-only JSON Lines in `<state>/ledger.jsonl`, one line per rollout step and one
//! per release: who, when, what, from → to, outcome, durations, gate results. Never a secret value.
//!
//! Docker labels remain the truth about what runs; the ledger is the history. Losing it loses the
//! history, not the ability to roll back.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::GateReport;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Entry {
    /// RFC 3339 UTC.
    pub ts: String,
    /// `step` (one service) or `release` (one run's summary) or `reconcile`.
    pub event: String,
    pub release: u64,
    /// deploy | rollback | reconcile
    pub command: String,
    pub who: String,
    pub host: String,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// ok | gate_failed_restored | restore_failed | error | interrupted | reverted | finished
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

pub struct Ledger {
    path: PathBuf,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Ledger {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("ledger.jsonl"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one entry (O_APPEND: concurrent appends never interleave within a line).
    pub fn append(&self, entry: &Entry) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let mut f = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Every entry; unreadable lines are skipped (a torn last line after a crash).
    pub fn read(&self) -> Vec<Entry> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return vec![];
        };
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn max_release(&self) -> u64 {
        self.read().iter().map(|e| e.release).max().unwrap_or(0)
    }

    /// The last successful gate of a service (for schema drift).
    pub fn last_gate(&self, service: &str) -> Option<GateReport> {
        self.read()
            .into_iter()
            .rev()
            .filter(|e| e.service.as_deref() == Some(service) && e.outcome == "ok")
            .find_map(|e| e.gate.filter(|g| g.passed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operator whose state directory is unusable is told which path failed, not just
    /// "Not a directory (os error 20)".
    #[test]
    fn append_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("state");
        std::fs::write(&not_a_dir, "a file where the state directory should be").unwrap();
        let err = Ledger::new(&not_a_dir)
            .append(&Entry::default())
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&not_a_dir.display().to_string()),
            "error does not name the path: {msg}"
        );
    }
}
