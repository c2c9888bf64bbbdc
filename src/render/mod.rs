//! Rendering: every generated file comes from an embedded minijinja template fed a view model
//! computed here. Templates hold layout only; decisions (labels, names, flags, paths) are made in
//! Rust where they are tested. Output is byte-stable: no clocks, no hash-map order, no host paths.
//!
//! This module must never see a secret's value: it only knows secret names and where they will be
//! mounted.

pub mod kubernetes;
pub mod observability;
pub mod view;

use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::manifest::Manifest;

pub use view::{config_hash, labels};

/// The kinds of artifact `render` writes (`--only`: `crate::cli::ArtifactArg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// One Dockerfile (and entrypoint files) per service: services/<name>/.
    Dockerfiles,
    /// docker-compose.yml, an export for users without mcpctl.
    Compose,
    /// litellm/config.yaml with a top-level `mcp_servers`.
    Litellm,
    /// Prometheus config and rules, Grafana provisioning and dashboard, Promtail and Alloy configs.
    Observability,
    /// `render --target kubernetes`: kustomize base + overlay, secrets script, kubernetes_sd
    /// Prometheus config (`render::kubernetes`).
    Kubernetes,
}

/// One rendered file, relative to the output directory.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub path: PathBuf,
    pub contents: String,
    /// Whether the file must be executable (entrypoint scripts).
    pub executable: bool,
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "Dockerfile.pypi.j2",
        include_str!("../../templates/Dockerfile.pypi.j2"),
    ),
    (
        "Dockerfile.npm.j2",
        include_str!("../../templates/Dockerfile.npm.j2"),
    ),
    (
        "Dockerfile.crate.j2",
        include_str!("../../templates/Dockerfile.crate.j2"),
    ),
    (
        "Dockerfile.image.j2",
        include_str!("../../templates/Dockerfile.image.j2"),
    ),
    (
        "Dockerfile.database.j2",
        include_str!("../../templates/Dockerfile.database.j2"),
    ),
    (
        "_bridge_runtime.j2",
        include_str!("../../templates/_bridge_runtime.j2"),
    ),
    ("_labels.j2", include_str!("../../templates/_labels.j2")),
    (
        "db-entrypoint.sh.j2",
        include_str!("../../templates/db-entrypoint.sh.j2"),
    ),
    (
        "docker-compose.yml.j2",
        include_str!("../../templates/docker-compose.yml.j2"),
    ),
    (
        "litellm-config.yaml.j2",
        include_str!("../../templates/litellm-config.yaml.j2"),
    ),
    (
        "prometheus.yml.j2",
        include_str!("../../templates/observability/prometheus.yml.j2"),
    ),
    (
        "mcp-recording.yml.j2",
        include_str!("../../templates/observability/mcp-recording.yml.j2"),
    ),
    (
        "mcp-alerts.yml.j2",
        include_str!("../../templates/observability/mcp-alerts.yml.j2"),
    ),
    (
        "grafana-datasource.yml.j2",
        include_str!("../../templates/observability/grafana-datasource.yml.j2"),
    ),
    (
        "grafana-dashboards.yml.j2",
        include_str!("../../templates/observability/grafana-dashboards.yml.j2"),
    ),
    (
        "promtail.yml.j2",
        include_str!("../../templates/observability/promtail.yml.j2"),
    ),
    (
        "config.alloy.j2",
        include_str!("../../templates/observability/config.alloy.j2"),
    ),
    (
        "alertmanager.yml.j2",
        include_str!("../../templates/observability/alertmanager.yml.j2"),
    ),
];

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    // No HTML/JSON escaping: quoting is explicit (`q`, `tojson`) where the format needs it.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .expect("embedded templates parse (checked by tests)");
    }
    // A double-quoted scalar, valid in YAML and as a Dockerfile JSON array element.
    env.add_filter("q", |s: String| {
        serde_json::to_string(&s).expect("strings serialize")
    });
    // A PostgreSQL string literal (what `format('%L')` / `quote_literal` produce for a non-null
    // value under standard_conforming_strings): the database entrypoint's names enter its SQL
    // only as values, and become identifiers there through `format('%I')`.
    env.add_filter("sql_literal", sql_literal);
    env
}

fn sql_literal(s: String) -> String {
    if s.contains('\\') {
        // `E'…'` keeps a backslash literal whatever standard_conforming_strings says.
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Render every artifact (or only one kind) for a validated manifest.
pub fn render(manifest: &Manifest, only: Option<ArtifactKind>) -> anyhow::Result<Vec<Artifact>> {
    let env = environment();
    let stack = view::Stack::new(manifest);
    let wanted = |k: ArtifactKind| only.is_none_or(|o| o == k);
    let mut out = Vec::new();
    let mut add = |kind,
                   path: PathBuf,
                   template: &str,
                   ctx: minijinja::Value,
                   executable|
     -> anyhow::Result<()> {
        let contents = env
            .get_template(template)?
            .render(ctx)
            .map_err(|e| anyhow::anyhow!("rendering {} from {template}: {e:#}", path.display()))?;
        out.push(Artifact {
            kind,
            path,
            contents,
            executable,
        });
        Ok(())
    };
    if wanted(ArtifactKind::Dockerfiles) {
        for svc in &stack.services {
            let dir = Path::new("services").join(&svc.name);
            let ctx = minijinja::context! { stack => &stack, svc => svc };
            add(
                ArtifactKind::Dockerfiles,
                dir.join("Dockerfile"),
                svc.dockerfile_template,
                ctx.clone(),
                false,
            )?;
            if svc.role == "database" {
                add(
                    ArtifactKind::Dockerfiles,
                    dir.join("docker-entrypoint.sh"),
                    "db-entrypoint.sh.j2",
                    ctx,
                    true,
                )?;
            }
        }
    }
    if wanted(ArtifactKind::Compose) {
        let ctx = minijinja::context! { stack => &stack };
        add(
            ArtifactKind::Compose,
            PathBuf::from("docker-compose.yml"),
            "docker-compose.yml.j2",
            ctx,
            false,
        )?;
    }
    if wanted(ArtifactKind::Litellm) {
        let ctx = minijinja::context! { stack => &stack };
        add(
            ArtifactKind::Litellm,
            PathBuf::from("litellm/config.yaml"),
            "litellm-config.yaml.j2",
            ctx,
            false,
        )?;
    }
    if wanted(ArtifactKind::Observability) {
        let o = observability::ObsView::new(manifest);
        let ctx = minijinja::context! { o => &o };
        for (path, template) in [
            ("prometheus/prometheus.yml", "prometheus.yml.j2"),
            ("prometheus/rules/mcp-recording.yml", "mcp-recording.yml.j2"),
            ("prometheus/rules/mcp-alerts.yml", "mcp-alerts.yml.j2"),
            (
                "grafana/provisioning/datasources/mcp.yml",
                "grafana-datasource.yml.j2",
            ),
            (
                "grafana/provisioning/dashboards/mcp.yml",
                "grafana-dashboards.yml.j2",
            ),
            ("promtail/promtail.yml", "promtail.yml.j2"),
            ("alloy/config.alloy", "config.alloy.j2"),
        ] {
            add(
                ArtifactKind::Observability,
                PathBuf::from(path),
                template,
                ctx.clone(),
                false,
            )?;
        }
        if let Some(a) = observability::AlertmanagerView::new(manifest) {
            add(
                ArtifactKind::Observability,
                PathBuf::from("alertmanager/alertmanager.yml"),
                "alertmanager.yml.j2",
                minijinja::context! { a => &a },
                false,
            )?;
        }
        let mut json = serde_json::to_string_pretty(&observability::dashboard(manifest))?;
        json.push('\n');
        out.push(Artifact {
            kind: ArtifactKind::Observability,
            path: PathBuf::from("grafana/dashboards/mcp-overview.json"),
            contents: json,
            executable: false,
        });
    }
    Ok(out)
}

/// Files under `dir` whose contents differ from `artifacts` (missing ones included).
pub fn differences(dir: &Path, artifacts: &[Artifact]) -> Vec<PathBuf> {
    artifacts
        .iter()
        .filter(|a| std::fs::read(dir.join(&a.path)).ok().as_deref() != Some(a.contents.as_bytes()))
        .map(|a| a.path.clone())
        .collect()
}

/// Write artifacts under `dir`. Each file is written to a temporary name and renamed, so a reader
/// never sees half a file and an interrupted render leaves the previous file intact.
pub fn write(dir: &Path, artifacts: &[Artifact]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for a in artifacts {
        let path = dir.join(&a.path);
        let parent = path.parent().expect("artifact paths have a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&tmp, &a.contents)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        let mode = if a.executable { 0o755 } else { 0o644 };
        fs_err::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| anyhow::anyhow!("replacing {}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sql_literal;

    #[test]
    fn sql_literals_quote_like_postgres_quote_literal() {
        assert_eq!(sql_literal("user".into()), "'user'");
        assert_eq!(sql_literal("o'brien".into()), "'o''brien'");
        assert_eq!(sql_literal(r"a\b'".into()), r"E'a\\b'''");
    }
}
