//! `<state>/cutover.json`: the cutover feature flag per service (which side the edge routes it to),
//! the stack route to return to, and whether the old proxy was retired. Written atomically
//! (temporary file + rename). The edge's `GET /routes` stays the truth about what is routed; this
//! file is what cutover needs to switch back and to judge the clean period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::edge::routes::{RouteKind, RouteView};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CutoverState {
    pub version: u32,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceState>,
    #[serde(default)]
    pub retired: Option<Retired>,
    #[serde(default)]
    pub last_check: Option<LastCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceState {
    /// The side the edge routes this service to.
    pub active: RouteKind,
    /// RFC 3339: when `active` last changed.
    pub since: String,
    /// The stack route last seen or set, so `switch` after `revert` returns to it.
    #[serde(default)]
    pub stack_upstream: Option<String>,
    #[serde(default)]
    pub stack_revision: Option<u64>,
    #[serde(default)]
    pub switches: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retired {
    pub at: String,
    pub who: String,
    /// What was run to stop the old proxy.
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastCheck {
    pub at: String,
    pub services: Vec<String>,
    pub differences: usize,
    pub report: PathBuf,
}

impl CutoverState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("cutover.json")
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path(state_dir);
        match fs_err::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a cutover state file ({e}); move it away to start over",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: 1,
                ..Self::default()
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        fs_err::create_dir_all(state_dir)?;
        let path = Self::path(state_dir);
        // A temporary file of this writer's own, flushed before it replaces the state: two
        // writers never interleave, and a crash leaves the old state or the new one.
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = fs_err::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self)?)?;
            f.sync_all()?;
            fs_err::rename(&tmp, &path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(())
    }

    /// Record that `service` is now routed to `kind` (the `since` clock restarts only on a change).
    pub fn set_active(&mut self, service: &str, kind: RouteKind, now: &str) {
        let entry = self
            .services
            .entry(service.to_string())
            .or_insert_with(|| ServiceState {
                active: kind,
                since: now.to_string(),
                stack_upstream: None,
                stack_revision: None,
                switches: 0,
            });
        if entry.active != kind {
            entry.active = kind;
            entry.since = now.to_string();
            entry.switches += 1;
        }
    }

    /// Remember the stack route to come back to.
    pub fn remember_stack(&mut self, service: &str, upstream: &str, revision: Option<u64>) {
        if let Some(s) = self.services.get_mut(service) {
            s.stack_upstream = Some(upstream.to_string());
            s.stack_revision = revision;
        }
    }

    /// Follow where the edge routes `service` (the edge is the truth about where traffic goes):
    /// its side, and the stack route to return to when it is the stack.
    pub fn follow_edge(&mut self, service: &str, route: &RouteView, now: &str) {
        self.set_active(service, route.kind, now);
        if route.kind == RouteKind::Stack {
            self.remember_stack(service, &route.upstream, route.revision);
        }
    }

    /// The stack route last seen or set for `service`: (upstream, revision).
    pub fn recorded_stack(&self, service: &str) -> Option<(String, Option<u64>)> {
        self.services
            .get(service)
            .and_then(|s| s.stack_upstream.clone().map(|u| (u, s.stack_revision)))
    }
}

/// Whether every named service has been on the stack for at least `clean_period` at `now`
/// (seconds since the epoch); the services that are not, with why.
pub fn not_clean(
    state: &CutoverState,
    services: &[String],
    clean_period: std::time::Duration,
    now: std::time::SystemTime,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in services {
        match state.services.get(name) {
            None => out.push((name.clone(), "never switched to the stack".into())),
            Some(s) if s.active != RouteKind::Stack => {
                out.push((name.clone(), format!("routed to legacy since {}", s.since)))
            }
            Some(s) => {
                let since = humantime::parse_rfc3339(&s.since).unwrap_or(now);
                let on_stack = now.duration_since(since).unwrap_or_default();
                if on_stack < clean_period {
                    out.push((
                        name.clone(),
                        format!(
                            "on the stack for {} only (since {}), the clean period is {}",
                            humantime::format_duration(std::time::Duration::from_secs(
                                on_stack.as_secs()
                            )),
                            s.since,
                            humantime::format_duration(clean_period)
                        ),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn clean_period_counts_from_the_last_switch_to_the_stack() {
        let mut s = CutoverState::default();
        s.set_active("a", RouteKind::Stack, "2026-11-25T00:00:00Z");
        s.set_active("b", RouteKind::Legacy, "2026-11-25T00:00:00Z");
        let now = humantime::parse_rfc3339("2026-11-25T02:00:00Z").unwrap();
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let bad = not_clean(&s, &names, Duration::from_secs(3600), now);
        let who: Vec<&str> = bad.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(who, ["b", "c"]);
        let bad = not_clean(&s, &names[..1], Duration::from_secs(3 * 3600), now);
        assert!(bad[0].1.contains("2h"), "{bad:?}");
        // A revert and a new switch restart the clock.
        s.set_active("a", RouteKind::Legacy, "2026-11-25T01:00:00Z");
        s.set_active("a", RouteKind::Stack, "2026-11-25T01:30:00Z");
        assert_eq!(s.services["a"].switches, 2);
        assert_eq!(
            not_clean(&s, &names[..1], Duration::from_secs(3600), now).len(),
            1
        );
        assert!(not_clean(&s, &names[..1], Duration::from_secs(60), SystemTime::now()).is_empty());
    }

    #[test]
    fn the_state_follows_the_edge_and_remembers_only_stack_routes() {
        let route = |kind, upstream: &str, revision| RouteView {
            upstream: upstream.into(),
            revision,
            kind,
            since: "2026-11-25T00:00:00Z".into(),
            draining: vec![],
            replicas: vec![],
            unhealthy: vec![],
        };
        let mut s = CutoverState::default();
        s.follow_edge(
            "a",
            &route(RouteKind::Stack, "http://p-a-r2:8080", Some(2)),
            "t1",
        );
        assert_eq!(
            s.recorded_stack("a"),
            Some(("http://p-a-r2:8080".to_string(), Some(2)))
        );
        s.follow_edge(
            "a",
            &route(RouteKind::Legacy, "http://host.docker.internal:9000", None),
            "t2",
        );
        let a = &s.services["a"];
        assert_eq!(
            (a.active, a.since.as_str(), a.switches),
            (RouteKind::Legacy, "t2", 1)
        );
        // Routed to the old proxy, the stack route to return to is kept.
        assert_eq!(
            s.recorded_stack("a"),
            Some(("http://p-a-r2:8080".to_string(), Some(2)))
        );
        assert_eq!(s.recorded_stack("b"), None);
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = CutoverState::load(dir.path()).unwrap();
        s.set_active("a", RouteKind::Legacy, "2026-11-25T00:00:00Z");
        s.remember_stack("a", "http://p-a-r1:8080", Some(1));
        s.save(dir.path()).unwrap();
        let back = CutoverState::load(dir.path()).unwrap();
        assert_eq!(
            back.services["a"].stack_upstream.as_deref(),
            Some("http://p-a-r1:8080")
        );
    }
}
