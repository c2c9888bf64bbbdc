//! The plan: desired vs observed per service, as plain data (create / update with what changed /
//! unchanged / orphaned). Pure: no engine, no files — [`observe`] turns a container list into
//! [`Observed`], [`diff`] compares. Printable as a table or JSON and tested on its own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::desired::DesiredSummary;
use crate::engine::labels::Keys;
use crate::engine::{ContainerInfo, ContainerSpec, RunState};

/// One revision of a service, read back from its container's labels.
#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    pub container: String,
    pub release: u64,
    pub config_hash: String,
    pub image: String,
    pub image_hash: String,
    pub secrets_label: String,
    #[serde(skip)]
    pub spec: Option<ContainerSpec>,
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub created: i64,
    pub ports: BTreeMap<u16, u16>,
    pub candidate: bool,
}

impl Revision {
    pub fn name(&self) -> String {
        super::revision_name(self.release, &self.config_hash)
    }
    pub fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Restarting)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ObservedService {
    /// The running revision (newest release if, abnormally, several run).
    pub serving: Option<Revision>,
    /// Every other non-candidate revision, newest first.
    pub retained: Vec<Revision>,
    /// Gate candidates left behind by an interrupted run.
    pub candidates: Vec<Revision>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    pub services: BTreeMap<String, ObservedService>,
    /// Highest release number on any container of the project.
    pub max_release: u64,
}

/// Read the project's containers (already filtered on `<p>.project`) into revisions per service.
pub fn observe(containers: &[ContainerInfo], keys: &Keys) -> Observed {
    let mut obs = Observed::default();
    let mut all: BTreeMap<String, Vec<Revision>> = BTreeMap::new();
    for c in containers {
        let l = &c.labels;
        if l.get(&keys.managed()).map(String::as_str) != Some("true") {
            continue;
        }
        let (Some(service), Some(release)) = (
            l.get(&keys.service()),
            l.get(&keys.release()).and_then(|r| r.parse::<u64>().ok()),
        ) else {
            continue; // the lock and other non-revision objects
        };
        obs.max_release = obs.max_release.max(release);
        all.entry(service.clone()).or_default().push(Revision {
            container: c.name.clone(),
            release,
            config_hash: l.get(&keys.config_hash()).cloned().unwrap_or_default(),
            image: c.image.clone(),
            image_hash: l.get(&keys.image_hash()).cloned().unwrap_or_default(),
            secrets_label: l.get(&keys.secrets_hmac()).cloned().unwrap_or_default(),
            spec: l
                .get(&keys.spec())
                .and_then(|s| serde_json::from_str(s).ok()),
            labels: l.clone(),
            state: c.state.clone(),
            created: c.created,
            ports: c.ports.clone(),
            candidate: l.get(&keys.phase()).is_some_and(|p| p == "candidate"),
        });
    }
    for (service, mut revs) in all {
        revs.sort_by_key(|r| std::cmp::Reverse(r.release));
        let mut o = ObservedService::default();
        for r in revs {
            if r.candidate {
                o.candidates.push(r);
            } else if o.serving.is_none() && r.is_running() {
                o.serving = Some(r);
            } else {
                o.retained.push(r);
            }
        }
        obs.services.insert(service, o);
    }
    obs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Create,
    Update,
    Unchanged,
    Orphaned,
}

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub service: String,
    pub action: ActionKind,
    /// What differs, for operators (never a secret value).
    pub changes: Vec<String>,
    /// The serving revision now.
    pub from: Option<String>,
    pub image: Option<String>,
    /// The image must be built first.
    pub build: bool,
    /// HMAC (under the per-install key) of each secret the desired revision gets; never a value.
    pub secrets: BTreeMap<String, String>,
    pub blocked: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
}

impl Plan {
    pub fn changed(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|a| matches!(a.action, ActionKind::Create | ActionKind::Update))
    }
}

fn size(b: i64) -> String {
    crate::manifest::ByteSize(b.max(0) as u64).docker()
}

/// What differs between a recorded spec and the desired one, in words.
pub fn spec_changes(old: &ContainerSpec, new: &ContainerSpec) -> Vec<String> {
    let mut c = Vec::new();
    if old.image != new.image {
        c.push(format!("image {} → {}", old.image, new.image));
    }
    if old.cmd != new.cmd {
        c.push(format!("command {:?} → {:?}", old.cmd, new.cmd));
    }
    if old.env != new.env {
        let mut parts = Vec::new();
        for k in new.env.keys() {
            match old.env.get(k) {
                None => parts.push(format!("+{k}")),
                Some(v) if Some(v) != new.env.get(k) => parts.push(format!("~{k}")),
                _ => {}
            }
        }
        for k in old.env.keys().filter(|k| !new.env.contains_key(*k)) {
            parts.push(format!("-{k}"));
        }
        c.push(format!("env {}", parts.join(" ")));
    }
    if old.memory != new.memory {
        c.push(format!(
            "memory {} → {}",
            size(old.memory),
            size(new.memory)
        ));
    }
    if old.nano_cpus != new.nano_cpus {
        c.push(format!(
            "cpus {} → {}",
            old.nano_cpus as f64 / 1e9,
            new.nano_cpus as f64 / 1e9
        ));
    }
    if old.pids != new.pids {
        c.push(format!("pids {} → {}", old.pids, new.pids));
    }
    if old.shm_size != new.shm_size {
        c.push(format!(
            "shm_size {} → {}",
            old.shm_size.map(size).unwrap_or("-".into()),
            new.shm_size.map(size).unwrap_or("-".into())
        ));
    }
    if old.port != new.port {
        let show = |p: &Option<crate::engine::PortSpec>| {
            p.map(|p| format!("{}:{}", p.host_ip, p.host_port))
                .unwrap_or("-".into())
        };
        c.push(format!("port {} → {}", show(&old.port), show(&new.port)));
    }
    let vols = |s: &ContainerSpec| {
        s.binds
            .iter()
            .filter(|b| !b.target.starts_with("/run/secrets/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    if vols(old) != vols(new) {
        c.push("volumes".into());
    }
    if old.read_only_root != new.read_only_root {
        c.push(format!(
            "read_only_root {} → {}",
            old.read_only_root, new.read_only_root
        ));
    }
    c
}

/// `NAME=hmac;NAME2=hmac;` → map.
pub fn parse_fingerprints(label: &str) -> BTreeMap<String, String> {
    label
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Secrets whose fingerprint differs (rotated), appeared or disappeared.
pub fn secret_changes(old: &str, new: &str) -> Vec<String> {
    let (o, n) = (parse_fingerprints(old), parse_fingerprints(new));
    let mut c = Vec::new();
    for (k, v) in &n {
        match o.get(k) {
            None => c.push(format!("secret {k} added")),
            Some(ov) if ov != v => c.push(format!("secret {k} rotated (hmac {ov} → {v})")),
            _ => {}
        }
    }
    for k in o.keys().filter(|k| !n.contains_key(*k)) {
        c.push(format!("secret {k} removed"));
    }
    c
}

/// Compare. `desired` in the order actions should be listed (dependency order).
pub fn diff(desired: &[DesiredSummary], observed: &Observed) -> Plan {
    let mut actions = Vec::new();
    for d in desired {
        let serving = observed
            .services
            .get(&d.service)
            .and_then(|o| o.serving.as_ref());
        let base = Action {
            service: d.service.clone(),
            action: ActionKind::Create,
            changes: vec![],
            from: serving.map(Revision::name),
            image: Some(d.image.clone()),
            build: !d.image_present,
            blocked: d.blocked.clone(),
            secrets: parse_fingerprints(&d.secrets_label),
        };
        let Some(cur) = serving else {
            let retained = observed
                .services
                .get(&d.service)
                .map(|o| o.retained.len())
                .unwrap_or(0);
            let why = if retained > 0 {
                "no revision is running"
            } else {
                "new service"
            };
            actions.push(Action {
                changes: vec![why.into()],
                ..base
            });
            continue;
        };
        let mut changes = Vec::new();
        match &cur.spec {
            Some(old) => changes.extend(spec_changes(old, &d.spec)),
            None => changes.push("recorded config unreadable".into()),
        }
        if cur.image_hash != d.image_hash && !changes.iter().any(|c| c.starts_with("image ")) {
            changes.push(format!("image {} → {}", cur.image, d.image));
        }
        changes.extend(secret_changes(&cur.secrets_label, &d.secrets_label));
        if changes.is_empty() && cur.config_hash != d.config_hash {
            changes.push("settings (health, bridge or other manifest fields)".into());
        }
        let kind = if changes.is_empty() {
            ActionKind::Unchanged
        } else {
            ActionKind::Update
        };
        actions.push(Action {
            action: kind,
            changes,
            build: kind == ActionKind::Update && !d.image_present,
            ..base
        });
    }
    for (name, o) in &observed.services {
        if desired.iter().any(|d| &d.service == name) {
            continue;
        }
        if let Some(s) = &o.serving {
            actions.push(Action {
                service: name.clone(),
                action: ActionKind::Orphaned,
                changes: vec![
                    "not in the manifest; `mcpctl down` or `mcpctl prune` removes it".into(),
                ],
                from: Some(s.name()),
                image: None,
                build: false,
                blocked: None,
                secrets: parse_fingerprints(&s.secrets_label),
            });
        }
    }
    Plan { actions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PortSpec, Restart};

    fn keys() -> Keys {
        Keys::new("com.mcp")
    }

    fn spec(image: &str, mem: i64) -> ContainerSpec {
        ContainerSpec {
            name: String::new(),
            image: image.into(),
            cmd: vec!["srv".into()],
            env: BTreeMap::from([("A".into(), "1".into())]),
            labels: BTreeMap::new(),
            network: "p".into(),
            aliases: vec![],
            port: Some(PortSpec {
                host_ip: [127, 0, 0, 1].into(),
                host_port: 8501,
                container_port: 8080,
            }),
            binds: vec![],
            memory: mem,
            nano_cpus: 500_000_000,
            pids: 256,
            shm_size: None,
            read_only_root: true,
            restart: Restart::UnlessStopped,
        }
    }

    fn desired(service: &str, image: &str, mem: i64, secrets: &str) -> DesiredSummary {
        DesiredSummary {
            service: service.into(),
            config_hash: format!("{image}{mem}{secrets}cafebabe"),
            image: image.into(),
            image_hash: format!("h-{image}"),
            image_present: true,
            secrets_label: secrets.into(),
            spec: spec(image, mem),
            blocked: None,
            depends_on: vec![],
        }
    }

    fn container(
        service: &str,
        release: u64,
        d: &DesiredSummary,
        state: RunState,
    ) -> ContainerInfo {
        let k = keys();
        ContainerInfo {
            id: format!("id{release}"),
            name: format!("p-{service}-r{release}"),
            image: d.image.clone(),
            labels: BTreeMap::from([
                (k.managed(), "true".into()),
                (k.project(), "p".into()),
                (k.service(), service.into()),
                (k.release(), release.to_string()),
                (k.config_hash(), d.config_hash.clone()),
                (k.image_hash(), d.image_hash.clone()),
                (k.secrets_hmac(), d.secrets_label.clone()),
                (k.spec(), serde_json::to_string(&d.spec).unwrap()),
            ]),
            state,
            created: release as i64,
            ports: BTreeMap::new(),
        }
    }

    #[test]
    fn unchanged_update_create_and_orphaned() {
        let a = desired("alpha", "p/alpha:1", 64 << 20, "TOKEN=aa;");
        let b_old = desired("beta", "p/beta:1", 64 << 20, "");
        let b_new = desired("beta", "p/beta:2", 128 << 20, "");
        let c = desired("gamma", "p/gamma:1", 64 << 20, "");
        let old = desired("legacy", "p/legacy:1", 64 << 20, "");
        let obs = observe(
            &[
                container("alpha", 1, &a, RunState::Running),
                container("beta", 1, &b_old, RunState::Running),
                container("legacy", 1, &old, RunState::Running),
            ],
            &keys(),
        );
        let plan = diff(&[a, b_new, c], &obs);
        let kinds: Vec<(String, ActionKind)> = plan
            .actions
            .iter()
            .map(|a| (a.service.clone(), a.action))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("alpha".into(), ActionKind::Unchanged),
                ("beta".into(), ActionKind::Update),
                ("gamma".into(), ActionKind::Create),
                ("legacy".into(), ActionKind::Orphaned),
            ]
        );
        let beta = &plan.actions[1];
        assert!(
            beta.changes
                .iter()
                .any(|c| c == "image p/beta:1 → p/beta:2"),
            "{:?}",
            beta.changes
        );
        assert!(
            beta.changes.iter().any(|c| c == "memory 64m → 128m"),
            "{:?}",
            beta.changes
        );
        assert_eq!(plan.changed().count(), 2);
    }

    #[test]
    fn secret_rotation_is_reported_by_name_only() {
        let old = desired("alpha", "p/alpha:1", 64 << 20, "TOKEN=aaaa;");
        let new = desired("alpha", "p/alpha:1", 64 << 20, "TOKEN=bbbb;");
        let obs = observe(&[container("alpha", 3, &old, RunState::Running)], &keys());
        let plan = diff(&[new], &obs);
        assert_eq!(plan.actions[0].action, ActionKind::Update);
        assert_eq!(
            plan.actions[0].changes,
            vec!["secret TOKEN rotated (hmac aaaa → bbbb)".to_string()]
        );
        assert_eq!(
            plan.actions[0].from.as_deref(),
            Some(&*format!("r3-{}", &old_hash(&old)[..8]))
        );
    }

    fn old_hash(d: &DesiredSummary) -> String {
        d.config_hash.clone()
    }

    #[test]
    fn stopped_revisions_are_retained_and_candidates_set_apart() {
        let a = desired("alpha", "p/alpha:1", 64 << 20, "");
        let mut cand = container("alpha", 3, &a, RunState::Running);
        cand.labels.insert(keys().phase(), "candidate".into());
        let obs = observe(
            &[
                container("alpha", 1, &a, RunState::Exited),
                container("alpha", 2, &a, RunState::Running),
                cand,
            ],
            &keys(),
        );
        let o = &obs.services["alpha"];
        assert_eq!(o.serving.as_ref().unwrap().release, 2);
        assert_eq!(
            o.retained.iter().map(|r| r.release).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(o.candidates.len(), 1);
        assert_eq!(obs.max_release, 3);
    }
}
