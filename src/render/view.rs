//! View models: everything a template needs, decided here (names, labels, bridge flags, paths).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, Role, Service, SourceKind};

#[derive(Debug, Serialize)]
pub struct Stack {
    pub project: String,
    pub label_prefix: String,
    /// The project's Docker network; container-to-container traffic stays on it.
    pub network: String,
    pub network_labels: Vec<Label>,
    pub bind_address: String,
    pub litellm: LiteLlmView,
    pub services: Vec<ServiceView>,
    pub volumes: Vec<VolumeDecl>,
    pub version: &'static str,
}

#[derive(Debug, Serialize)]
pub struct LiteLlmView {
    /// The variable LiteLLM reads its master key from (`os.environ/NAME`).
    pub master_key_env: String,
    pub network: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
pub struct VolumeDecl {
    /// Key in the compose file (the manifest's name).
    pub key: String,
    /// Docker volume name: `<project>-<name>`.
    pub name: String,
    pub labels: Vec<Label>,
}

#[derive(Debug, Serialize)]
pub struct VolumeView {
    /// `<project>-<name>` for named volumes, the path for host paths.
    pub source: String,
    pub key: String,
    pub named: bool,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub name: String,
    /// LiteLLM's token for this service: the environment variable its config reads
    /// (`os.environ/…`); None when the service takes no token (auth mode `none`).
    pub litellm_token_env: Option<String>,
    /// LiteLLM is not among the consumers this service accepts: left out of its config.
    pub litellm_refused: bool,
    /// In-network DNS alias: `mcp-<name>`.
    pub alias: String,
    pub description: String,
    pub role: &'static str,
    pub mcp_type: &'static str,
    pub source: &'static str,
    #[serde(skip)]
    pub dockerfile_template: &'static str,
    /// Image name used by the compose export.
    pub image: String,
    pub base_ref: String,
    pub offline: bool,
    /// npm: run install scripts (`build.npm_install_scripts`); else `npm ci --ignore-scripts`.
    pub npm_install_scripts: bool,
    pub package: String,
    pub version: String,
    pub requirements: Vec<String>,
    pub no_deps: bool,
    pub command: Vec<String>,
    /// The container's ENTRYPOINT: the bridge with its flags, ending in `--`.
    pub entrypoint: Vec<String>,
    pub healthcheck: Vec<String>,
    pub labels: Vec<Label>,
    pub port: Option<u16>,
    pub container_port: u16,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    /// For a database service: the roles, databases and grants its entrypoint converges on.
    pub db: DbSetupView,
    pub volumes: Vec<VolumeView>,
    pub mem_limit: String,
    pub cpus: f64,
    pub shm_size: Option<String>,
    pub pids: u32,
    pub start_period_s: u64,
    pub interval_s: u64,
    pub depends_on: Vec<String>,
    pub read_only_root: bool,
    pub session_model: &'static str,
    pub transport: &'static str,
    /// URL LiteLLM uses, for its network setting.
    pub url: String,
    pub config_hash: String,
}

/// What a `role: database` service's entrypoint (templates/db-entrypoint.sh.j2) makes true on
/// every start: these databases with their owner roles, these login roles, and exactly these
/// grants. Empty for other services, and for a database nobody names (its entrypoint still runs,
/// to disable consumers that were removed).
#[derive(Debug, Default, Serialize)]
pub struct DbSetupView {
    /// Each database once, in first-mention order.
    pub databases: Vec<DbDatabaseView>,
    /// Each consumer's login role once, in manifest order.
    pub logins: Vec<String>,
    /// One per (login, database): validation refuses a service naming one database twice with
    /// different access.
    pub grants: Vec<crate::manifest::DbConsumer>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct DbDatabaseView {
    pub name: String,
    pub owner: String,
}

impl DbSetupView {
    pub fn new(grants: Vec<crate::manifest::DbConsumer>) -> DbSetupView {
        let mut databases: Vec<DbDatabaseView> = Vec::new();
        let mut logins: Vec<String> = Vec::new();
        for g in &grants {
            if !databases.iter().any(|d| d.name == g.database) {
                databases.push(DbDatabaseView {
                    name: g.database.clone(),
                    owner: g.owner.clone(),
                });
            }
            if !logins.contains(&g.role) {
                logins.push(g.role.clone());
            }
        }
        DbSetupView {
            databases,
            logins,
            grants,
        }
    }
}

/// Hash of a service's desired configuration (contract label `<p>.config-hash`; revision suffix).
pub fn config_hash(name: &str, svc: &Service) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(svc).expect("the model serializes"));
    hex::encode(h.finalize())
}

/// Identity labels of `service` (docs/contracts.md "Names"), carried by its images and containers.
/// Containers also get `<p>.config-hash` and the per-run `<p>.release` (added by deploy); images
/// do not, so a configuration change restarts a container without rebuilding its image.
pub fn labels(m: &Manifest, name: &str, svc: &Service) -> Vec<Label> {
    let p = &m.label_prefix;
    let mcp_type = match svc.role {
        Role::Database => "image",
        Role::Service => svc.server.source.kind().mcp_type(),
    };
    [
        ("managed", "true".to_string()),
        ("project", m.project.clone()),
        ("service", name.to_string()),
        ("role", svc.role.as_str().to_string()),
        ("mcp-type", mcp_type.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| Label {
        key: format!("{p}.{k}"),
        value: v,
    })
    .collect()
}

fn base_labels(m: &Manifest, role: &str) -> Vec<Label> {
    let p = &m.label_prefix;
    vec![
        Label {
            key: format!("{p}.managed"),
            value: "true".into(),
        },
        Label {
            key: format!("{p}.project"),
            value: m.project.clone(),
        },
        Label {
            key: format!("{p}.role"),
            value: role.into(),
        },
    ]
}

/// The image a base name stands for: the user's `image:` or the locally built one.
pub fn base_ref(m: &Manifest, base: &str) -> String {
    let b = &m.bases[base];
    b.image
        .clone()
        .unwrap_or_else(|| format!("mcpctl-base/{base}:{}", b.suite))
}

impl Stack {
    pub fn new(m: &Manifest) -> Self {
        let mut volumes: Vec<VolumeDecl> = Vec::new();
        let services = m
            .services
            .iter()
            .map(|(name, svc)| {
                for v in svc.volumes.iter().filter(|v| v.is_named()) {
                    if !volumes.iter().any(|d| d.key == v.source) {
                        volumes.push(VolumeDecl {
                            key: v.source.clone(),
                            name: format!("{}-{}", m.project, v.source),
                            labels: base_labels(m, svc.role.as_str()),
                        });
                    }
                }
                ServiceView::new(m, name, svc)
            })
            .collect();
        Stack {
            project: m.project.clone(),
            label_prefix: m.label_prefix.clone(),
            network: m.project.clone(),
            network_labels: base_labels(m, "service"),
            bind_address: m.bind_address.to_string(),
            litellm: LiteLlmView {
                master_key_env: m
                    .litellm
                    .master_key
                    .from_env
                    .clone()
                    .unwrap_or_else(|| "LITELLM_MASTER_KEY".into()),
                network: match m.litellm.network {
                    crate::manifest::LiteLlmNetwork::Docker => "docker",
                    crate::manifest::LiteLlmNetwork::Host => "host",
                },
            },
            services,
            volumes,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

impl ServiceView {
    fn new(m: &Manifest, name: &str, svc: &Service) -> Self {
        let src = &svc.server.source;
        let kind = src.kind();
        let (package, version, requirements, no_deps) = match kind {
            SourceKind::Pypi => {
                let p = src.pypi.as_ref().expect("kind is pypi");
                let mut reqs = vec![format!("{}=={}", p.package, p.version)];
                reqs.extend(p.with.iter().cloned());
                (p.package.clone(), p.version.clone(), reqs, p.no_deps)
            }
            SourceKind::Npm => {
                let p = src.npm.as_ref().expect("kind is npm");
                (p.package.clone(), p.version.clone(), vec![], false)
            }
            SourceKind::Crate => (
                src.krate.as_ref().expect("kind is crate").name.clone(),
                String::new(),
                vec![],
                false,
            ),
            SourceKind::Image => (String::new(), String::new(), vec![], false),
        };
        let base_ref = match (kind, &svc.build.base) {
            (SourceKind::Image, _) => src.image.as_ref().expect("kind is image").reference.clone(),
            (_, Some(base)) => base_ref(m, base),
            (_, None) => unreachable!("validation requires build.base for built sources"),
        };
        let (template, role) = match svc.role {
            Role::Database => ("Dockerfile.database.j2", "database"),
            Role::Service => (
                match kind {
                    SourceKind::Pypi => "Dockerfile.pypi.j2",
                    SourceKind::Npm => "Dockerfile.npm.j2",
                    SourceKind::Crate => "Dockerfile.crate.j2",
                    SourceKind::Image => "Dockerfile.image.j2",
                },
                "service",
            ),
        };
        let port = svc.container_port.to_string();
        let entrypoint = [
            "/usr/local/bin/mcpctl",
            "bridge",
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--session-model",
            svc.session_model.as_str(),
            "--keepalive",
            &svc.bridge.keepalive.as_secs().to_string(),
            "--idle-timeout",
            &svc.bridge.idle_timeout.as_secs().to_string(),
            // DNS-rebinding protection: besides loopback, only the in-network name is accepted.
            "--allow-host",
            &format!("mcp-{name}:{port}"),
        ]
        .map(String::from)
        .to_vec();
        let mut entrypoint = entrypoint;
        if let Some(n) = svc.bridge.max_sessions {
            entrypoint.extend(["--max-sessions".to_string(), n.to_string()]);
        }
        entrypoint.push("--".into());
        let healthcheck = match svc.role {
            Role::Service => [
                "/usr/local/bin/mcpctl",
                "bridge",
                "healthcheck",
                "--port",
                &port,
            ]
            .map(String::from)
            .to_vec(),
            Role::Database => [
                "pg_isready",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--quiet",
            ]
            .map(String::from)
            .to_vec(),
        };
        let transport = svc.transport.unwrap_or(m.litellm.transport);
        let db = DbSetupView::new(match svc.role {
            Role::Database => m.database_consumers(name),
            Role::Service => vec![],
        });
        let url = match m.litellm.network {
            crate::manifest::LiteLlmNetwork::Docker => {
                format!(
                    "http://mcp-{name}:{}{}",
                    svc.container_port,
                    transport.path()
                )
            }
            crate::manifest::LiteLlmNetwork::Host => format!(
                "http://{}:{}{}",
                m.bind_address,
                svc.port.unwrap_or(svc.container_port),
                transport.path()
            ),
        };
        let auth = crate::auth::effective(m, name);
        let auth_on = role == "service" && auth.mode != crate::manifest::AuthMode::None;
        ServiceView {
            litellm_token_env: auth_on.then(|| crate::auth::token_env("litellm")),
            litellm_refused: auth_on && !auth.consumers.iter().any(|c| c == "litellm"),
            name: name.to_string(),
            alias: format!("mcp-{name}"),
            description: svc.description.clone(),
            role,
            mcp_type: kind.mcp_type(),
            source: match kind {
                SourceKind::Pypi => "pypi",
                SourceKind::Npm => "npm",
                SourceKind::Crate => "crate",
                SourceKind::Image => "image",
            },
            dockerfile_template: template,
            image: format!("{}/{name}:compose", m.project),
            base_ref,
            offline: svc.build.mode == crate::manifest::BuildMode::Offline,
            npm_install_scripts: svc.build.npm_install_scripts.is_some(),
            package,
            version,
            requirements,
            no_deps,
            command: svc.server.command.clone(),
            entrypoint,
            healthcheck,
            labels: labels(m, name, svc),
            port: svc.port,
            container_port: svc.container_port,
            // As the deployed container gets it (rollout::desired).
            env: crate::auth::container_env(m, name).into_iter().collect(),
            secrets: svc
                .secrets
                .keys()
                .cloned()
                .chain(db.logins.iter().map(|role| format!("db_role_{role}")))
                .chain(auth_on.then(|| crate::auth::AUTH_SECRET.to_string()))
                .collect(),
            db,
            volumes: svc
                .volumes
                .iter()
                .map(|v| VolumeView {
                    source: if v.is_named() {
                        format!("{}-{}", m.project, v.source)
                    } else {
                        v.source.clone()
                    },
                    key: v.source.clone(),
                    named: v.is_named(),
                    target: v.target.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            mem_limit: svc.limits.memory.docker(),
            cpus: svc.limits.cpus,
            shm_size: svc.limits.shm_size.map(|s| s.docker()),
            pids: svc.limits.pids,
            start_period_s: svc.health.start_period.as_secs(),
            interval_s: svc.health.interval.as_secs().max(1),
            depends_on: svc.depends_on.clone(),
            read_only_root: svc.read_only_root,
            session_model: svc.session_model.as_str(),
            transport: transport.as_str(),
            url,
            config_hash: config_hash(name, svc),
        }
    }
}
