//! `mcpctl render --target kubernetes`: the same manifest as a kustomize base + overlay
//! (docs/kubernetes.md). Owns the Kubernetes view models — workload kind, replicas, probes,
//! resources, security context, NetworkPolicy peers, image overrides — decided here and tested;
//! the templates under `templates/kubernetes/` hold layout only.
//!
//! Like the rest of `render`, this never sees a secret value: Secrets are referenced by name, and
//! `create-secrets.sh` obtains values at run time from the sources mcpctl uses (`from_env`,
//! `from_file`, `mcpctl token …`). Output is byte-stable: no clocks, no hash-map order, no host
//! paths. Must not talk to an engine or a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::view::{config_hash, labels, Label};
use super::{Artifact, ArtifactKind};
use crate::manifest::{AuthMode, Manifest, Role, Service};

/// The uid and gid MCP service images run as (`USER 10001:10001` in the Dockerfiles).
pub const SERVICE_UID: u32 = 10001;
/// The `postgres` account of the `postgresql` base (Debian's package creates it as a system user:
/// `id postgres` in `mcpctl-base/postgresql:bookworm` → uid=100 gid=102). The database image runs
/// as that named user; Kubernetes needs the number to enforce `runAsNonRoot`. A base built from
/// other packages may differ: patch `runAsUser`/`runAsGroup`/`fsGroup` in the overlay.
pub const DB_UID: u32 = 100;
pub const DB_GID: u32 = 102;
/// Storage requested for a named volume (Docker volumes have no size; patch it in the overlay).
pub const DB_STORAGE: &str = "10Gi";
pub const VOLUME_STORAGE: &str = "1Gi";
/// Where the startup probe finds mcpctl's own bearer token: outside /run/secrets, whose files the
/// bridge hands to the MCP server as environment variables.
pub const PROBE_TOKEN_DIR: &str = "/run/mcpctl-probe";
pub const PROBE_TOKEN_KEY: &str = "token";

/// What `render --target kubernetes` is told besides the manifest.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Registry prefix for every image (`R/<project>/<name>`); none: the local names.
    pub registry: Option<String>,
    /// Image tag per service (from an `images export` manifest); services without one keep the
    /// base's tag.
    pub tags: BTreeMap<String, String>,
    /// MCP services allowed to reach the public internet (e.g. fetch).
    pub internet: Vec<String>,
}

/// The tag of each service's serving revision in an `mcpctl images export` directory (its
/// `manifest.json`): the same `<project>/<name>:<hash12>` tags `mcpctl deploy` runs.
pub fn tags_from_export(dir: &Path, project: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let export = crate::images::transfer::read_manifest(dir).map_err(|e| {
        anyhow::anyhow!(
            "--images {}: {e}; pass a directory written by `mcpctl images export --out DIR`",
            dir.display()
        )
    })?;
    anyhow::ensure!(
        export.project == project,
        "--images {}: the export is of project `{}`, the manifest's project is `{project}`",
        dir.display(),
        export.project
    );
    let mut tags = BTreeMap::new();
    for e in export
        .images
        .iter()
        .filter(|e| e.role == crate::images::transfer::Role::Service)
    {
        for user in &e.used_by {
            let Some(service) = &user.service else {
                continue;
            };
            let prefix = format!("{project}/{service}:");
            if let Some(tag) = e.repo_tags.iter().find_map(|t| t.strip_prefix(&prefix)) {
                tags.insert(service.clone(), tag.to_string());
            }
        }
    }
    Ok(tags)
}

#[derive(Debug, Serialize)]
pub struct KubeStack {
    pub version: &'static str,
    pub project: String,
    pub label_prefix: String,
    /// Labels every rendered object carries (docs/contracts.md "Names").
    pub common_labels: Vec<Label>,
    pub services: Vec<KubeService>,
    /// The overlay's `images:` entries.
    pub images: Vec<ImageOverride>,
    /// Bearer-token consumers declared in the manifest, with the services that accept each.
    pub consumers: Vec<ConsumerView>,
    /// Whether any service checks tokens (the startup probe then needs mcpctl's token).
    pub probe_token: bool,
    pub revision_history: u32,
    /// Prometheus' name for a pod label of the prefix: `__meta_kubernetes_pod_label_<p>_`.
    pub meta: String,
    /// The sanitized prefix alone (`com_mcp_`), for annotations.
    pub meta_suffix: String,
}

#[derive(Debug, Serialize)]
pub struct ImageOverride {
    pub name: String,
    pub new_name: Option<String>,
    pub new_tag: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ConsumerView {
    pub name: String,
    /// Services (and their ports) this consumer's pods may reach.
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub service: String,
    pub port: u16,
}

#[derive(Debug, Serialize)]
pub struct SecretKey {
    pub key: String,
    /// How `create-secrets.sh` obtains the value (no value here).
    pub source: &'static str,
    /// `from_env`: the variable; `from_file`: the path relative to the manifest; `database`: the
    /// URL without its password (`scheme://role:` … `@host:port/db`); `db_role`: the role.
    pub arg: String,
    pub arg2: String,
    /// `database` / `db_role`: the database service (its role passwords are shared).
    pub db: String,
    pub optional: bool,
}

#[derive(Debug, Serialize)]
pub struct Probe {
    /// `exec` command or empty for `http_path`.
    pub exec: Vec<String>,
    pub http_path: String,
    pub tcp: bool,
    pub period_s: u64,
    pub timeout_s: u64,
    pub failure_threshold: u64,
}

#[derive(Debug, Serialize)]
pub struct DataVolume {
    pub name: String,
    pub claim: String,
    pub target: String,
    pub read_only: bool,
    pub storage: &'static str,
}

#[derive(Debug, Serialize)]
pub struct KubeService {
    pub name: String,
    /// Object name of the workload, Service, ServiceAccount, PDB and NetworkPolicy: `mcp-<name>`,
    /// the same DNS name as on the Docker network (database URLs and the bridge's allowed Host
    /// header keep working).
    pub object: String,
    pub secret_name: String,
    pub role: &'static str,
    pub stateful_set: bool,
    pub replicas: u32,
    /// Selector labels (immutable once applied): project and service.
    pub selector: Vec<Label>,
    /// Pod labels: the contract's identity labels plus the selector.
    pub labels: Vec<Label>,
    pub config_hash: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub cpu: String,
    pub memory: String,
    pub shm: Option<String>,
    pub run_as_user: u32,
    pub run_as_group: u32,
    pub read_only_root: bool,
    pub secrets: Vec<SecretKey>,
    pub probe_token: bool,
    pub volumes: Vec<DataVolume>,
    pub startup: Probe,
    pub readiness: Probe,
    pub liveness: Probe,
    pub progress_deadline_s: u64,
    /// Kubernetes Service `sessionAffinity: ClientIP` timeout (replicas > 1 keep legacy sessions
    /// on one pod); None with one replica.
    pub affinity_timeout_s: Option<u64>,
    pub pdb_min_available: Option<u32>,
    pub pdb_max_unavailable: Option<u32>,
    /// Consumers (by name) whose pods may reach this service.
    pub consumers: Vec<String>,
    /// Services whose pods may reach this one (a database's consumers, `depends_on`).
    pub clients: Vec<String>,
    /// What this service's pods may reach.
    pub egress: Vec<Target>,
    pub internet: bool,
}

/// The services `name` reaches: its `depends_on` and the databases its secrets name, in that
/// order, each once. The stack graph's edges out of `name` (what the Docker network allows and
/// the rollout orders by).
pub fn dependencies(m: &Manifest, name: &str) -> Vec<String> {
    let svc = &m.services[name];
    let mut out: Vec<String> = Vec::new();
    let dbs = svc
        .secrets
        .values()
        .filter_map(|r| r.database.as_ref().map(|d| d.service.clone()));
    for d in svc.depends_on.iter().cloned().chain(dbs) {
        if m.services.contains_key(&d) && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// Replicas: the manifest's `replicas` when it asks for more than one (validate allows that only
/// where it is safe); else one for a database (one writer per volume) and for a service with a
/// volume (a ReadWriteOnce claim binds one node); two otherwise, so a node drain or a rollout never
/// leaves the service without a ready pod.
fn replicas(svc: &Service) -> u32 {
    if svc.replicas > 1 {
        svc.replicas
    } else if svc.role == Role::Database || svc.stateful || !svc.volumes.is_empty() {
        1
    } else {
        2
    }
}

/// Kubernetes quantity of a byte size: the largest binary unit that divides it.
fn quantity(bytes: u64) -> String {
    for (shift, unit) in [(30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn millicores(cpus: f64) -> String {
    format!("{}m", (cpus * 1000.0).round() as u64)
}

/// Probe periods: seconds, rounded up, at least 1.
fn startup_threshold(start_period_s: u64, interval_s: u64, period_s: u64) -> u64 {
    // Docker: failures during start_period do not count, then 3 retries at `interval`.
    (start_period_s + 3 * interval_s).div_ceil(period_s).max(1)
}

/// A label name as Prometheus' Kubernetes discovery spells it, plus the separator.
fn sanitized(prefix: &str) -> String {
    let s: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{s}_")
}

/// `items|labels(pad)`: Label items as YAML mapping lines (`key: "value"`), each indented by
/// `pad` spaces, without a final newline (the template's line supplies it).
fn yaml_labels(items: Vec<minijinja::Value>, pad: usize) -> Result<String, minijinja::Error> {
    let mut lines = Vec::with_capacity(items.len());
    for item in items {
        let key = item.get_attr("key")?;
        let value = item.get_attr("value")?;
        let value =
            serde_json::to_string(value.as_str().unwrap_or_default()).expect("strings serialize");
        lines.push(format!("{}{key}: {value}", " ".repeat(pad)));
    }
    Ok(lines.join("\n"))
}

/// A POSIX shell single-quoted word.
fn sh_quote(s: String) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn label(key: String, value: &str) -> Label {
    Label {
        key,
        value: value.to_string(),
    }
}

impl KubeStack {
    pub fn new(m: &Manifest, opts: &Options) -> anyhow::Result<Self> {
        let p = &m.label_prefix;
        for s in &opts.internet {
            match m.services.get(s) {
                Some(svc) if svc.role == Role::Service => {}
                Some(_) => anyhow::bail!(
                    "--internet {s}: `{s}` is a database; only MCP services may be given internet egress"
                ),
                None => anyhow::bail!(
                    "--internet {s}: no service `{s}` in the manifest (services: {})",
                    m.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        for s in opts.tags.keys() {
            anyhow::ensure!(
                m.services.contains_key(s),
                "--images: the export has an image for `{s}`, which the manifest does not name"
            );
        }
        // Who reaches whom: invert the dependency edges once.
        let mut clients: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for name in m.services.keys() {
            for d in dependencies(m, name) {
                let e = clients.entry(m.services.get_key_value(&d).unwrap().0);
                e.or_default().push(name.clone());
            }
        }
        let mut services = Vec::new();
        let mut probe_token = false;
        for (name, svc) in &m.services {
            let ks = KubeService::new(
                m,
                name,
                svc,
                clients.get(name.as_str()).cloned().unwrap_or_default(),
                opts.internet.contains(name),
            )?;
            probe_token |= ks.probe_token;
            services.push(ks);
        }
        let consumers = m
            .auth
            .consumers
            .keys()
            .map(|c| ConsumerView {
                name: c.clone(),
                targets: services
                    .iter()
                    .filter(|s| s.consumers.contains(c))
                    .map(|s| Target {
                        service: s.name.clone(),
                        port: s.port,
                    })
                    .collect(),
            })
            .collect();
        let images = services
            .iter()
            .map(|s| ImageOverride {
                name: format!("{}/{}", m.project, s.name),
                new_name: opts
                    .registry
                    .as_ref()
                    .map(|r| format!("{}/{}/{}", r.trim_end_matches('/'), m.project, s.name)),
                new_tag: opts.tags.get(&s.name).cloned(),
            })
            .collect();
        Ok(KubeStack {
            version: env!("CARGO_PKG_VERSION"),
            project: m.project.clone(),
            label_prefix: p.clone(),
            common_labels: vec![
                label(format!("{p}.managed"), "true"),
                label(format!("{p}.project"), &m.project),
                label("app.kubernetes.io/part-of".into(), &m.project),
                label("app.kubernetes.io/managed-by".into(), "mcpctl"),
            ],
            services,
            images,
            consumers,
            probe_token,
            revision_history: m.retain_revisions,
            meta: format!("__meta_kubernetes_pod_label_{}", sanitized(p)),
            meta_suffix: sanitized(p),
        })
    }
}

impl KubeService {
    fn new(
        m: &Manifest,
        name: &str,
        svc: &Service,
        clients: Vec<String>,
        internet: bool,
    ) -> anyhow::Result<Self> {
        let p = &m.label_prefix;
        let is_db = svc.role == Role::Database;
        let port = svc.container_port;
        let start = svc.health.start_period.as_secs();
        let interval = svc.health.interval.as_secs().max(1);
        let auth = crate::auth::effective(m, name);
        let auth_on = !is_db && auth.mode != AuthMode::None;
        let mut volumes = Vec::new();
        for v in &svc.volumes {
            anyhow::ensure!(
                v.is_named(),
                "service `{name}`: volume source `{}` is a host path, which has no place on a \
                 cluster node; use a named volume (it becomes a PersistentVolumeClaim) to render \
                 for Kubernetes",
                v.source
            );
            volumes.push(DataVolume {
                name: v.source.clone(),
                claim: if is_db {
                    v.source.clone()
                } else {
                    format!("{}-{}", m.project, v.source)
                },
                target: v.target.clone(),
                read_only: v.read_only,
                storage: if is_db { DB_STORAGE } else { VOLUME_STORAGE },
            });
        }
        let mut secrets: Vec<SecretKey> = Vec::new();
        for (key, r) in &svc.secrets {
            let (source, arg, arg2, db) = if let Some(d) = &r.database {
                let target = &m.services[&d.service];
                (
                    "database",
                    format!("mcp_{name}"),
                    format!("@mcp-{}:{}/{}", d.service, target.container_port, d.name),
                    d.service.clone(),
                )
            } else if r.generate {
                ("generate", String::new(), String::new(), String::new())
            } else if let Some(v) = &r.from_env {
                ("env", v.clone(), String::new(), String::new())
            } else if let Some(f) = &r.from_file {
                ("file", f.clone(), String::new(), String::new())
            } else {
                anyhow::bail!("service `{name}`: secret `{key}` has no source");
            };
            secrets.push(SecretKey {
                key: key.clone(),
                source,
                arg,
                arg2,
                db,
                optional: r.optional,
            });
        }
        if is_db {
            let mut roles: Vec<String> = m
                .database_consumers(name)
                .into_iter()
                .map(|c| c.role)
                .collect();
            roles.dedup();
            for role in roles {
                secrets.push(SecretKey {
                    key: format!("db_role_{role}"),
                    source: "db_role",
                    arg: role,
                    arg2: String::new(),
                    db: name.to_string(),
                    optional: false,
                });
            }
        }
        if auth_on {
            secrets.push(SecretKey {
                key: crate::auth::AUTH_SECRET.into(),
                source: "bridge_file",
                arg: name.to_string(),
                arg2: String::new(),
                db: String::new(),
                optional: false,
            });
        }
        let mut env = crate::auth::container_env(m, name);
        if is_db {
            // A fresh claim's root is not empty (`lost+found`) and takes the fsGroup's mode, both
            // of which initdb refuses: the cluster lives one directory down.
            if let Some(v) = volumes.iter().find(|v| !v.read_only) {
                env.push(("PGDATA".into(), format!("{}/pgdata", v.target)));
            }
        }
        let period = 5;
        let startup_exec: Vec<String> = if is_db {
            vec![
                "pg_isready".into(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--quiet".into(),
            ]
        } else {
            let mut exec: Vec<String> = vec![
                "/usr/local/bin/mcpctl".into(),
                "bridge".into(),
                "healthcheck".into(),
                "--port".into(),
                port.to_string(),
                "--mcp".into(),
            ];
            // A flag, not MCPCTL_BRIDGE_TOKEN_FILE in the container's environment: the bridge
            // itself reads that variable as its own --token-file.
            if auth_on {
                exec.extend([
                    "--token-file".into(),
                    format!("{PROBE_TOKEN_DIR}/{PROBE_TOKEN_KEY}"),
                ]);
            }
            exec
        };
        let startup = Probe {
            exec: startup_exec.clone(),
            http_path: String::new(),
            tcp: false,
            period_s: period,
            // initialize + tools/list of a cold shared child can take seconds.
            timeout_s: 10,
            failure_threshold: startup_threshold(start, interval, period),
        };
        let readiness = if is_db {
            Probe {
                exec: startup_exec,
                http_path: String::new(),
                tcp: false,
                period_s: interval,
                timeout_s: 5,
                failure_threshold: 3,
            }
        } else {
            Probe {
                exec: vec![],
                http_path: "/readyz".into(),
                tcp: false,
                period_s: interval,
                timeout_s: 3,
                failure_threshold: 3,
            }
        };
        let liveness = Probe {
            exec: vec![],
            http_path: if is_db {
                String::new()
            } else {
                "/healthz".into()
            },
            tcp: is_db,
            period_s: interval,
            timeout_s: 3,
            failure_threshold: 3,
        };
        let replicas = replicas(svc);
        let selector = vec![
            label(format!("{p}.project"), &m.project),
            label(format!("{p}.service"), name),
        ];
        let mut pod_labels = labels(m, name, svc);
        pod_labels.push(label("app.kubernetes.io/name".into(), name));
        pod_labels.push(label("app.kubernetes.io/part-of".into(), &m.project));
        pod_labels.push(label("app.kubernetes.io/managed-by".into(), "mcpctl"));
        let (pdb_min_available, pdb_max_unavailable) = if is_db || svc.stateful {
            // One writer: a voluntary eviction is downtime, so it waits for the operator
            // (docs/kubernetes.md "Draining a node").
            (None, Some(0))
        } else if replicas > 1 {
            (Some(replicas - 1), None)
        } else {
            (None, Some(1))
        };
        Ok(KubeService {
            name: name.to_string(),
            object: format!("mcp-{name}"),
            secret_name: format!("mcp-{name}"),
            role: svc.role.as_str(),
            stateful_set: is_db || svc.stateful,
            replicas,
            selector,
            labels: pod_labels,
            config_hash: config_hash(name, svc),
            image: format!("{}/{name}:compose", m.project),
            env,
            port,
            cpu: millicores(svc.limits.cpus),
            memory: quantity(svc.limits.memory.0),
            shm: svc.limits.shm_size.map(|s| quantity(s.0)),
            run_as_user: if is_db { DB_UID } else { SERVICE_UID },
            run_as_group: if is_db { DB_GID } else { SERVICE_UID },
            read_only_root: svc.read_only_root,
            secrets,
            probe_token: auth_on,
            volumes,
            startup,
            readiness,
            liveness,
            progress_deadline_s: (start + svc.health.timeout.as_secs()).max(60),
            affinity_timeout_s: (replicas > 1).then(|| svc.bridge.idle_timeout.as_secs().max(60)),
            pdb_min_available,
            pdb_max_unavailable,
            consumers: if is_db {
                vec![]
            } else {
                auth.consumers
                    .into_iter()
                    .filter(|c| c != crate::manifest::MCPCTL_CONSUMER)
                    .collect()
            },
            clients,
            egress: dependencies(m, name)
                .into_iter()
                .map(|d| Target {
                    port: m.services[&d].container_port,
                    service: d,
                })
                .collect(),
            internet,
        })
    }
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "k8s/service.yaml.j2",
        include_str!("../../templates/kubernetes/service.yaml.j2"),
    ),
    (
        "k8s/network.yaml.j2",
        include_str!("../../templates/kubernetes/network.yaml.j2"),
    ),
    (
        "k8s/base-kustomization.yaml.j2",
        include_str!("../../templates/kubernetes/base-kustomization.yaml.j2"),
    ),
    (
        "k8s/overlay-kustomization.yaml.j2",
        include_str!("../../templates/kubernetes/overlay-kustomization.yaml.j2"),
    ),
    (
        "k8s/namespace.yaml.j2",
        include_str!("../../templates/kubernetes/namespace.yaml.j2"),
    ),
    (
        "k8s/create-secrets.sh.j2",
        include_str!("../../templates/kubernetes/create-secrets.sh.j2"),
    ),
    (
        "k8s/prometheus.yml.j2",
        include_str!("../../templates/kubernetes/prometheus.yml.j2"),
    ),
];

/// Every file of the Kubernetes render, relative to the output directory.
pub fn render(m: &Manifest, opts: &Options) -> anyhow::Result<Vec<Artifact>> {
    let mut env = super::environment();
    env.add_filter("sh", sh_quote);
    env.add_filter("labels", yaml_labels);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .expect("embedded templates parse (checked by tests)");
    }
    let k = KubeStack::new(m, opts)?;
    let mut out = Vec::new();
    let mut add = |path: PathBuf, template: &str, ctx: minijinja::Value, executable| {
        let contents = env
            .get_template(template)?
            .render(ctx)
            .map_err(|e| anyhow::anyhow!("rendering {} from {template}: {e:#}", path.display()))?;
        out.push(Artifact {
            kind: ArtifactKind::Kubernetes,
            path,
            contents,
            executable,
        });
        anyhow::Ok(())
    };
    let ctx = minijinja::context! { k => &k };
    for svc in &k.services {
        add(
            PathBuf::from(format!("base/{}.yaml", svc.name)),
            "k8s/service.yaml.j2",
            minijinja::context! { k => &k, svc => svc },
            false,
        )?;
    }
    for (path, template, executable) in [
        ("base/network.yaml", "k8s/network.yaml.j2", false),
        (
            "base/kustomization.yaml",
            "k8s/base-kustomization.yaml.j2",
            false,
        ),
        (
            "overlays/default/kustomization.yaml",
            "k8s/overlay-kustomization.yaml.j2",
            false,
        ),
        (
            "overlays/default/namespace.yaml",
            "k8s/namespace.yaml.j2",
            false,
        ),
        ("create-secrets.sh", "k8s/create-secrets.sh.j2", true),
    ] {
        add(PathBuf::from(path), template, ctx.clone(), executable)?;
    }
    let o = super::observability::ObsView::new(m);
    add(
        PathBuf::from("prometheus/prometheus.yml"),
        "k8s/prometheus.yml.j2",
        minijinja::context! { k => &k, o => &o },
        false,
    )?;
    for (path, template) in [
        ("prometheus/rules/mcp-recording.yml", "mcp-recording.yml.j2"),
        ("prometheus/rules/mcp-alerts.yml", "mcp-alerts.yml.j2"),
    ] {
        add(
            PathBuf::from(path),
            template,
            minijinja::context! { o => &o },
            false,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_thresholds() {
        assert_eq!(quantity(128 << 20), "128Mi");
        assert_eq!(quantity(2 << 30), "2Gi");
        assert_eq!(quantity(3072), "3Ki");
        assert_eq!(quantity(1536), "1536");
        assert_eq!(quantity(1000), "1000");
        assert_eq!(millicores(0.25), "250m");
        assert_eq!(millicores(1.0), "1000m");
        // 20 s start period + 3 × 10 s retries, probed every 5 s.
        assert_eq!(startup_threshold(20, 10, 5), 10);
        assert_eq!(startup_threshold(0, 1, 5), 1);
        assert_eq!(sh_quote("a'b $x".into()), r"'a'\''b $x'");
        assert_eq!(sanitized("com.mcp"), "com_mcp_");
    }
}
