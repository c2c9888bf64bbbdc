//! Docker data, read ONLY through `mcpctl docker-proxy` (docs/contracts.md, "Docker proxy and
//! container exporter"): container list, inspect, one stats sample, recent logs.
//!
//! Owns: the typed subset of Docker's JSON that this server reads (every field optional/defaulted,
//! so a newer engine or a trimmed proxy answer never breaks decoding) and the memory/CPU
//! arithmetic. Must not: talk to a Docker socket, or send anything but GET.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::http::{FetchError, Http};

const COMPONENT: &str = "the docker proxy";

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    /// created | restarting | running | removing | paused | exited | dead
    pub state: String,
    /// Docker's human status, e.g. "Up 2 hours (healthy)" or "Exited (137) 5 minutes ago".
    pub status: String,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: HashMap<String, String>,
}

impl ContainerSummary {
    pub fn name(&self) -> String {
        self.names
            .first()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| short_id(&self.id))
    }
}

/// The part of `GET /containers/{id}/json` this server reads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Inspect {
    pub id: String,
    pub name: String,
    pub restart_count: u64,
    pub state: InspectState,
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct InspectState {
    pub status: String,
    pub running: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct Health {
    /// none | starting | healthy | unhealthy
    pub status: String,
    pub failing_streak: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub log: Vec<HealthLog>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthLog {
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub memory: i64,
    pub nano_cpus: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
}

impl HostConfig {
    /// The CPU limit in cores, when one is set (`--cpus`, or quota/period).
    pub fn cpu_limit_cores(&self) -> Option<f64> {
        if self.nano_cpus > 0 {
            Some(self.nano_cpus as f64 / 1e9)
        } else if self.cpu_quota > 0 && self.cpu_period > 0 {
            Some(self.cpu_quota as f64 / self.cpu_period as f64)
        } else {
            None
        }
    }
}

/// One sample of `GET /containers/{id}/stats` (Docker's `stream=false` answer).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Stats {
    pub read: String,
    pub memory_stats: MemoryStats,
    pub cpu_stats: CpuStats,
    pub precpu_stats: CpuStats,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct MemoryStats {
    pub usage: Option<u64>,
    pub limit: Option<u64>,
    #[serde(deserialize_with = "null_as_default")]
    pub stats: HashMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct CpuStats {
    pub cpu_usage: CpuUsage,
    pub system_cpu_usage: Option<u64>,
    pub online_cpus: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct CpuUsage {
    /// Nanoseconds of CPU time.
    pub total_usage: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub percpu_usage: Vec<u64>,
}

impl MemoryStats {
    /// `inactive_file` as `docker stats` subtracts it: cgroup v1 reports `total_inactive_file`
    /// (hierarchical), cgroup v2 `inactive_file`.
    pub fn inactive_file(&self) -> Option<u64> {
        ["total_inactive_file", "inactive_file"]
            .iter()
            .find_map(|k| self.stats.get(*k).and_then(Value::as_u64))
    }

    /// "Memory used" as the contract defines it: usage − inactive_file (never below zero; when
    /// inactive_file is not smaller than usage, usage is kept, as the docker CLI does).
    pub fn used(&self) -> Option<u64> {
        let usage = self.usage?;
        Some(match self.inactive_file() {
            Some(inactive) if inactive < usage => usage - inactive,
            _ => usage,
        })
    }
}

impl Stats {
    /// CPU use over the sample interval in percent of ONE core (docker stats' CPU %), when the
    /// engine sent a previous sample to compare with.
    pub fn cpu_percent(&self) -> Option<f64> {
        let cpu_delta = self
            .cpu_stats
            .cpu_usage
            .total_usage
            .checked_sub(self.precpu_stats.cpu_usage.total_usage)?;
        let sys_delta = self
            .cpu_stats
            .system_cpu_usage?
            .checked_sub(self.precpu_stats.system_cpu_usage?)?;
        if sys_delta == 0 || self.precpu_stats.cpu_usage.total_usage == 0 {
            return None;
        }
        let cpus = self
            .cpu_stats
            .online_cpus
            .filter(|n| *n > 0)
            .unwrap_or(self.cpu_stats.cpu_usage.percpu_usage.len().max(1) as u64);
        Some(cpu_delta as f64 / sys_delta as f64 * cpus as f64 * 100.0)
    }
}

/// `GET /containers/{id}/logs?tail=N` as the proxy shapes it.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Logs {
    pub lines: Vec<LogLine>,
}

#[derive(Debug, Clone, Deserialize, Default, serde::Serialize)]
#[serde(default)]
pub struct LogLine {
    pub stream: String,
    pub line: String,
}

pub struct DockerProxy {
    base: String,
    http: Http,
}

impl DockerProxy {
    pub fn new(base: &str, http: Http) -> Self {
        DockerProxy {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub async fn list(&self) -> Result<Vec<ContainerSummary>, FetchError> {
        self.get("/containers/json").await
    }

    pub async fn inspect(&self, id: &str) -> Result<Inspect, FetchError> {
        self.get(&format!("/containers/{}/json", path_segment(id)))
            .await
    }

    pub async fn stats(&self, id: &str) -> Result<Stats, FetchError> {
        self.get(&format!("/containers/{}/stats", path_segment(id)))
            .await
    }

    pub async fn logs(&self, id: &str, tail: u32) -> Result<Logs, FetchError> {
        self.get(&format!(
            "/containers/{}/logs?tail={tail}",
            path_segment(id)
        ))
        .await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, FetchError> {
        let url = format!("{}{path}", self.base);
        let mut v: Value = self.http.get_json(COMPONENT, &url).await?;
        // Docker (and serialisers of its models) write `null` where a value is absent; treat it
        // as absent so every field's default applies.
        strip_nulls(&mut v);
        serde_json::from_value(v).map_err(|e| FetchError {
            component: COMPONENT.to_string(),
            url,
            kind: crate::http::FetchErrorKind::BadBody(e.to_string()),
        })
    }
}

/// Container ids and names are `[a-zA-Z0-9_.-]`; anything else is dropped rather than sent.
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        .collect()
}

pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Docker sends `null` for empty maps and lists in a few places.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn memory_used_subtracts_inactive_file_v1_and_v2() {
        let v1: MemoryStats = serde_json::from_value(json!({
            "usage": 100_000_000u64, "limit": 268_435_456u64,
            "stats": {"total_inactive_file": 30_000_000u64, "inactive_file": 1u64}
        }))
        .unwrap();
        assert_eq!(v1.used(), Some(70_000_000));
        let v2: MemoryStats = serde_json::from_value(json!({
            "usage": 50, "limit": 1000, "stats": {"inactive_file": 20}
        }))
        .unwrap();
        assert_eq!(v2.used(), Some(30));
        let bigger: MemoryStats =
            serde_json::from_value(json!({"usage": 5, "stats": {"inactive_file": 9}})).unwrap();
        assert_eq!(bigger.used(), Some(5));
        let stopped: MemoryStats = serde_json::from_value(json!({"stats": null})).unwrap();
        assert_eq!(stopped.used(), None);
    }

    #[test]
    fn cpu_percent_needs_a_previous_sample() {
        let s: Stats = serde_json::from_value(json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64}
        }))
        .unwrap();
        assert_eq!(s.cpu_percent(), Some(20.0));
        let first: Stats = serde_json::from_value(json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 10, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 0}}
        }))
        .unwrap();
        assert_eq!(first.cpu_percent(), None);
    }

    #[test]
    fn inspect_decodes_nulls_and_missing_fields() {
        let i: Inspect = serde_json::from_value(json!({
            "Id": "abc", "Name": "/p-db-r1", "RestartCount": 2,
            "State": {"Status": "exited", "Running": false, "OOMKilled": true, "ExitCode": 137,
                      "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": null}},
            "HostConfig": {"Memory": 67108864, "NanoCpus": 250000000}
        }))
        .unwrap();
        assert!(i.state.oom_killed && !i.state.running);
        assert_eq!(i.state.health.unwrap().status, "unhealthy");
        assert_eq!(i.host_config.cpu_limit_cores(), Some(0.25));
        let l: ContainerSummary =
            serde_json::from_value(json!({"Id": "0123456789abcdef", "Labels": null})).unwrap();
        assert_eq!(l.name(), "0123456789ab");
    }

    #[test]
    fn nulls_anywhere_decode_as_absent() {
        let mut v = json!({
            "read": null,
            "memory_stats": {"usage": 10, "stats": {"inactive_file": 4, "x": null}},
            "cpu_stats": {"cpu_usage": null, "online_cpus": null},
            "precpu_stats": null
        });
        strip_nulls(&mut v);
        let s: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(s.memory_stats.used(), Some(6));
        assert_eq!(s.cpu_stats.cpu_usage.total_usage, 0);
        let mut v =
            json!({"Id": "a", "State": {"Status": null, "Health": null}, "HostConfig": null});
        strip_nulls(&mut v);
        let i: Inspect = serde_json::from_value(v).unwrap();
        assert!(i.state.health.is_none() && i.host_config.cpu_limit_cores().is_none());
    }

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(path_segment("../../images/json"), "....imagesjson");
        assert_eq!(path_segment("stack-fetch-r3"), "stack-fetch-r3");
    }
}
