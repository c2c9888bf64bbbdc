//! The plan: desired vs observed per service, as plain data (create / update with what changed /
//! unchanged / orphaned). Pure: no engine, no files — [`observe`] turns a container list into
//! [`Observed`], [`diff`] compares. Printable as a table or JSON and tested on its own. The
//! steps of a release are planned here too: [`deploy_steps`] from the diff, [`rollback_targets`]
//! and [`restore_step`] from labels.

use std::collections::BTreeMap;

use serde::Serialize;

use super::desired::{Desired, DesiredSummary};
use super::executor::{GateConfig, Step};
use super::release::Planned;
use super::Project;
use crate::engine::labels::Keys;
use crate::engine::{ContainerInfo, ContainerSpec, RunState};
use crate::manifest::{Role, Transport};

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
    /// Containers the revision runs (`<p>.replicas`, 1 when absent).
    pub replicas: u32,
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
    /// The other replicas of any revision (`<p>.replica` ≥ 2), newest release first, then by
    /// replica number. Not revisions themselves: each follows its revision's container.
    pub replicas: Vec<Revision>,
}

impl ObservedService {
    /// The other replicas of release `release`, by replica number.
    pub fn replicas_of(&self, release: u64) -> impl Iterator<Item = &Revision> {
        self.replicas.iter().filter(move |r| r.release == release)
    }

    /// The edge upstreams of `r`'s other replicas that run now (in a route beside `r`'s own).
    pub fn running_replica_upstreams(&self, r: &Revision) -> Vec<String> {
        self.replicas_of(r.release)
            .filter(|x| x.is_running())
            .map(crate::edge::admin::revision_upstream)
            .collect()
    }
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
    let mut replicas: BTreeMap<String, Vec<(u32, Revision)>> = BTreeMap::new();
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
        let replica = l
            .get(&keys.replica())
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n >= 2);
        let rev = Revision {
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
            replicas: keys.replica_count(l),
        };
        match replica {
            Some(n) => replicas.entry(service.clone()).or_default().push((n, rev)),
            None => all.entry(service.clone()).or_default().push(rev),
        }
    }
    for (service, mut reps) in replicas {
        reps.sort_by_key(|(n, r)| (std::cmp::Reverse(r.release), *n));
        obs.services.entry(service).or_default().replicas =
            reps.into_iter().map(|(_, r)| r).collect();
    }
    for (service, mut revs) in all {
        revs.sort_by_key(|r| std::cmp::Reverse(r.release));
        let mut o = obs.services.remove(&service).unwrap_or_default();
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
    // The manifest's `tools` policy travels as bridge environment: name it, not its variables.
    let (old_env, old_tools) = split_tools_policy(&old.env);
    let (new_env, new_tools) = split_tools_policy(&new.env);
    if old_tools != new_tools {
        c.push(format!("tools policy {old_tools} → {new_tools}"));
    }
    if old_env != new_env {
        let mut parts = Vec::new();
        for k in new_env.keys() {
            match old_env.get(k) {
                None => parts.push(format!("+{k}")),
                Some(v) if Some(v) != new_env.get(k) => parts.push(format!("~{k}")),
                _ => {}
            }
        }
        for k in old_env.keys().filter(|k| !new_env.contains_key(*k)) {
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

/// A container's environment without the tool-policy variables, and that policy in words
/// (`all tools`, `deny [a, b]`, `allow [c]`).
fn split_tools_policy(env: &BTreeMap<String, String>) -> (BTreeMap<&String, &String>, String) {
    use crate::manifest::{TOOLS_ALLOW_ENV, TOOLS_DENY_ENV};
    let mut policy = Vec::new();
    for (var, word) in [(TOOLS_ALLOW_ENV, "allow"), (TOOLS_DENY_ENV, "deny")] {
        if let Some(v) = env.get(var) {
            policy.push(format!(
                "{word} [{}]",
                v.split(',').collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let rest = env
        .iter()
        .filter(|(k, _)| *k != TOOLS_ALLOW_ENV && *k != TOOLS_DENY_ENV)
        .collect();
    let policy = if policy.is_empty() {
        "all tools".to_string()
    } else {
        policy.join(" + ")
    };
    (rest, policy)
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
        // A revision short of its replicas (one failed or was removed by a recovery) is replaced
        // as a whole by the next deploy.
        let want = cur.replicas;
        if want > 1 {
            let running = observed.services.get(&d.service).map_or(0, |o| {
                o.replicas_of(cur.release)
                    .filter(|r| r.is_running())
                    .count()
            }) + 1;
            if running < want as usize {
                changes.push(format!("replicas: {running} of {want} running"));
            }
        }
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

/// Deploy: one step per changed action that `wanted` selects, in plan (dependency) order, as
/// release `release`. `previous_tools`: the tools a service's last gate saw (from the ledger).
pub fn deploy_steps(
    project: &Project,
    release: u64,
    plan: &Plan,
    desired: &[Desired],
    observed: &Observed,
    wanted: impl Fn(&str) -> bool,
    previous_tools: impl Fn(&str) -> Option<BTreeMap<String, String>>,
) -> Vec<Planned> {
    plan.changed()
        .filter(|a| wanted(&a.service))
        .filter_map(|a| {
            let d = desired.iter().find(|d| d.summary.service == a.service)?;
            let mut spec = d.summary.spec.clone();
            spec.name = project.container_name(&a.service, release);
            spec.labels
                .insert(project.keys.release(), release.to_string());
            Some(Planned {
                step: Step {
                    service: a.service.clone(),
                    spec,
                    revision: super::revision_name(release, &d.summary.config_hash),
                    health: d.health.clone(),
                    transport: d.transport,
                    role: d.role,
                    stateful: d.stateful,
                    previous: observed
                        .services
                        .get(&a.service)
                        .and_then(|o| o.serving.clone()),
                    retain: project.manifest.retain_revisions,
                    backup_dir: Some(project.state_dir.join("backups").join(&a.service)),
                },
                secrets: d.secrets.clone(),
                previous_tools: previous_tools(&a.service),
                note: None,
            })
        })
        .collect()
}

/// One service to roll back: the revision to restore and the one serving now.
#[derive(Debug, Clone)]
pub struct RollbackTarget {
    pub service: String,
    pub target: Revision,
    pub current: Option<Revision>,
}

/// Rollback's choice, from labels alone. `to: Some(N)`: the state after release N (each service's
/// newest revision at or before N). Else with `service`: that service one revision back (the
/// newest retained revision older than the serving one). Else: every service back to its newest
/// revision before the latest release. A service whose target already serves is left out.
pub fn rollback_targets(
    observed: &Observed,
    service: Option<&str>,
    to: Option<u64>,
) -> Vec<RollbackTarget> {
    let latest = observed
        .services
        .values()
        .filter_map(|o| o.serving.as_ref())
        .map(|s| s.release)
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for (name, o) in &observed.services {
        if service.is_some_and(|s| s != name) {
            continue;
        }
        let all = o.serving.iter().chain(o.retained.iter());
        let target = match (to, service) {
            (Some(n), _) => all.filter(|r| r.release <= n).max_by_key(|r| r.release),
            (None, Some(_)) => {
                let cur = o.serving.as_ref().map(|s| s.release).unwrap_or(u64::MAX);
                o.retained
                    .iter()
                    .filter(|r| r.release < cur)
                    .max_by_key(|r| r.release)
            }
            (None, None) => all.filter(|r| r.release < latest).max_by_key(|r| r.release),
        };
        if let Some(t) = target {
            if o.serving.as_ref().map(|s| &s.container) != Some(&t.container) {
                out.push(RollbackTarget {
                    service: name.clone(),
                    target: t.clone(),
                    current: o.serving.clone(),
                });
            }
        }
    }
    out
}

/// Restore `t.target` as release `release`: its recorded config (the `<p>.spec` label), its
/// recorded gate, the secret mounts the caller resolved for the values it was deployed with
/// (`secret_binds`, replacing the recorded ones), under a new name and release number.
/// `Err`: why it cannot be restored (nothing recorded).
pub fn restore_step(
    project: &Project,
    release: u64,
    t: &RollbackTarget,
    secret_binds: Vec<crate::engine::Bind>,
    secrets: Vec<super::secrets::Resolved>,
) -> Result<Planned, String> {
    let keys = &project.keys;
    let Some(mut spec) = t.target.spec.clone() else {
        return Err(format!(
            "{}: {} carries no recorded config (label {}); it cannot be restored",
            t.service,
            t.target.name(),
            keys.spec()
        ));
    };
    let svc = project.manifest.services.get(&t.service);
    let (role, health, transport) = match (GateConfig::of(&t.target, keys), svc) {
        (Some(g), _) => (g.role, g.health, g.transport),
        (None, Some(svc)) => (
            svc.role,
            svc.health.clone(),
            svc.transport.unwrap_or(project.manifest.litellm.transport),
        ),
        (None, None) => (Role::Service, Default::default(), Transport::Sse),
    };
    spec.binds
        .retain(|b| !b.target.starts_with("/run/secrets/"));
    spec.binds.extend(secret_binds);
    spec.name = project.container_name(&t.service, release);
    spec.labels = t.target.labels.clone();
    for k in [keys.spec(), keys.gate(), keys.phase()] {
        spec.labels.remove(&k);
    }
    spec.labels.insert(keys.release(), release.to_string());
    Ok(Planned {
        step: Step {
            service: t.service.clone(),
            spec,
            revision: super::revision_name(release, &t.target.config_hash),
            health,
            transport,
            role,
            stateful: svc.is_some_and(|s| s.stateful),
            previous: t.current.clone(),
            retain: project.manifest.retain_revisions,
            backup_dir: Some(project.state_dir.join("backups").join(&t.service)),
        },
        secrets,
        previous_tools: None,
        note: Some(format!("restores {}", t.target.name())),
    })
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
    fn a_tools_policy_change_is_named_as_such() {
        use crate::manifest::{TOOLS_ALLOW_ENV, TOOLS_DENY_ENV};
        let open = spec("p/a:1", 64 << 20);
        let mut deny = open.clone();
        deny.env.insert(TOOLS_DENY_ENV.into(), "slow_echo".into());
        let mut allow = open.clone();
        allow
            .env
            .insert(TOOLS_ALLOW_ENV.into(), "echo,getenv".into());
        assert_eq!(
            spec_changes(&open, &deny),
            ["tools policy all tools → deny [slow_echo]"]
        );
        assert_eq!(
            spec_changes(&deny, &allow),
            ["tools policy deny [slow_echo] → allow [echo, getenv]"]
        );
        let mut both = allow.clone();
        both.env.insert("A".into(), "2".into());
        assert_eq!(spec_changes(&allow, &both), ["env ~A"]);
        assert!(spec_changes(&deny, &deny).is_empty());
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

    fn history() -> Observed {
        // alpha: r1, r2 stopped, r4 serving; beta: r3 serving, r1 stopped.
        let a = desired("alpha", "p/alpha:1", 64 << 20, "");
        let b = desired("beta", "p/beta:1", 64 << 20, "");
        observe(
            &[
                container("alpha", 1, &a, RunState::Exited),
                container("alpha", 2, &a, RunState::Exited),
                container("alpha", 4, &a, RunState::Running),
                container("beta", 1, &b, RunState::Exited),
                container("beta", 3, &b, RunState::Running),
            ],
            &keys(),
        )
    }

    fn chosen(t: &[RollbackTarget]) -> Vec<String> {
        t.iter()
            .map(|t| format!("{} r{}", t.service, t.target.release))
            .collect()
    }

    #[test]
    fn rollback_targets_follow_the_three_rules() {
        let o = history();
        // One service, one revision back.
        assert_eq!(
            chosen(&rollback_targets(&o, Some("alpha"), None)),
            ["alpha r2"]
        );
        // Every service back to before the latest release (4): beta r3 already serves.
        assert_eq!(chosen(&rollback_targets(&o, None, None)), ["alpha r2"]);
        // The state after release 1: both go back to r1.
        assert_eq!(
            chosen(&rollback_targets(&o, None, Some(1))),
            ["alpha r1", "beta r1"]
        );
        // After release 3: alpha r2, beta r3 serves already (left out).
        assert_eq!(chosen(&rollback_targets(&o, None, Some(3))), ["alpha r2"]);
        // Nothing retained before the serving one.
        assert!(rollback_targets(&o, Some("beta"), Some(0)).is_empty());
        let t = &rollback_targets(&o, Some("alpha"), None)[0];
        assert_eq!(t.current.as_ref().map(|c| c.release), Some(4));
    }

    fn project() -> Project {
        let text = "version: 1\nproject: p\nretain_revisions: 4\nservices:\n  alpha:\n    port: 8501\n    server: {source: {image: {ref: \"x:1\"}}, command: [x]}\n";
        let (m, _) = crate::manifest::load_str(text, "services.yaml").expect("manifest");
        Project::new(m, std::path::Path::new("services.yaml"), "/tmp/s".into()).unwrap()
    }

    #[test]
    fn a_restore_step_keeps_the_recorded_config_under_a_new_name_and_release() {
        let o = history();
        let t = &rollback_targets(&o, Some("alpha"), None)[0];
        let secret = crate::engine::Bind {
            source: "/tmp/s/secrets/alpha/token".into(),
            target: "/run/secrets/token".into(),
            read_only: true,
        };
        let p = restore_step(&project(), 9, t, vec![secret.clone()], vec![]).unwrap();
        let k = keys();
        assert_eq!(p.step.spec.name, "p-alpha-r9");
        assert_eq!(p.step.spec.labels[&k.release()], "9");
        assert!(
            !p.step.spec.labels.contains_key(&k.spec()),
            "recorded again by the executor"
        );
        assert_eq!(p.step.spec.image, "p/alpha:1");
        assert_eq!(p.step.spec.binds, vec![secret]);
        assert_eq!(p.step.previous.as_ref().map(|r| r.release), Some(4));
        assert_eq!(p.step.retain, 4);
        assert!(p.step.revision.starts_with("r9-"));
        assert_eq!(
            p.note.as_deref(),
            Some(t.target.name().as_str())
                .map(|n| format!("restores {n}"))
                .as_deref()
        );
        // Nothing recorded: refused with the reason.
        let mut bare = t.clone();
        bare.target.spec = None;
        let e = restore_step(&project(), 9, &bare, vec![], vec![]).unwrap_err();
        assert!(e.contains("carries no recorded config"), "{e}");
    }
}
