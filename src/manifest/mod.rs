//! The manifest (`services.yaml`): typed model, loading with positions, and validation.
//!
//! YAML crate choice: `serde_yaml` is archived and `serde_yml` carries RUSTSEC-2025-0068, so typed
//! deserialization uses `serde_yaml_ng` (a maintained fork of serde_yaml) behind this module, and
//! positions come from `saphyr-parser` (the maintained successor of yaml-rust), whose events carry
//! spans. serde errors are mapped to positions through `serde_path_to_error` paths. Nothing outside
//! this module knows which YAML crates are used.
//!
//! Every problem is reported in one run: each service is deserialized on its own so one broken
//! service does not hide the others, and cross-field checks run over everything that parsed.

pub mod diagnostic;
pub mod model;
pub mod spans;
mod validate;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;

pub use diagnostic::{Diagnostic, Severity};
pub use model::*;
use spans::{Location, Node, Seg};

/// A manifest that passed validation, with its warnings.
#[derive(Debug)]
pub struct Loaded {
    pub manifest: Manifest,
    pub warnings: Vec<Diagnostic>,
    pub path: PathBuf,
}

/// A manifest with at least one error. Holds every problem found (errors and warnings).
#[derive(Debug)]
pub struct Invalid {
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        let n = self.error_count();
        write!(
            f,
            "{n} error{} in the manifest; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Invalid {}

/// Read, parse and validate the manifest at `path`.
pub fn load(path: &Path) -> Result<Loaded, Invalid> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| Invalid {
        diagnostics: vec![Diagnostic::new(
            Severity::Error,
            &file,
            Location { line: 0, column: 0 },
            &[],
            format!("cannot read the manifest: {e}"),
        )
        .help("pass the manifest with -f/--file, or run mcpctl from the directory holding services.yaml")],
    })?;
    load_str(&source, &file).map(|(manifest, warnings)| Loaded {
        manifest,
        warnings,
        path: path.to_path_buf(),
    })
}

/// Parse and validate manifest text; `file` names it in diagnostics.
pub fn load_str(source: &str, file: &str) -> Result<(Manifest, Vec<Diagnostic>), Invalid> {
    let mut diags = Vec::new();
    let err = |at: Location, path: &[Seg], msg: String| {
        Diagnostic::new(Severity::Error, file, at, path, msg)
    };

    let tree = match spans::parse(source) {
        Ok(Some(tree)) => tree,
        Ok(None) => {
            return Err(Invalid {
                diagnostics: vec![err(
                    Location { line: 1, column: 1 },
                    &[],
                    "the manifest is empty".into(),
                )
                .help("start from the services.yaml in the mcpctl repository")],
            })
        }
        Err(e) => {
            let at = Location {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            };
            return Err(Invalid {
                diagnostics: vec![err(at, &[], format!("YAML syntax error: {}", e.info()))
                    .help("check indentation and quoting around this position")],
            });
        }
    };
    validate::duplicate_keys(&tree, &[], file, &mut diags);

    let mut aliases = Vec::new();
    let value = tree.to_value(&mut aliases);
    for at in aliases {
        diags.push(
            err(
                at,
                &[],
                "YAML aliases (`*name`) are not supported in the manifest".into(),
            )
            .help("write the value out in full at each place it is used"),
        );
    }
    let Some(top) = value.as_mapping() else {
        diags.push(err(
            tree.at,
            &[],
            "the manifest must be a mapping with `version`, `project` and `services`".into(),
        ));
        return Err(Invalid { diagnostics: diags });
    };

    // The top level without `services`, then each service on its own.
    let mut head = top.clone();
    let services_value = head.remove("services");
    head.insert(
        "services".into(),
        serde_yaml_ng::Value::Mapping(Default::default()),
    );
    let head_ok = typed::<Manifest>(
        serde_yaml_ng::Value::Mapping(head),
        &[],
        &tree,
        file,
        &mut diags,
    );
    let head_broken = head_ok.is_none();
    // With a broken top level, services are still checked against a stand-in head.
    let mut manifest = head_ok.unwrap_or_else(|| {
        serde_yaml_ng::from_str("{version: 1, project: invalid, services: {}}")
            .expect("static YAML")
    });
    let mut broken = Vec::new();

    let mut services = IndexMap::new();
    match services_value {
        None => diags.push(
            err(tree.at, &[], "missing field `services`".into())
                .help("list the MCP servers under `services:`"),
        ),
        Some(serde_yaml_ng::Value::Mapping(map)) => {
            for (key, body) in map {
                let name = match key {
                    serde_yaml_ng::Value::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let path = [Seg::Key("services".into()), Seg::Key(name.clone())];
                if let Some(svc) = typed::<Service>(body, &path, &tree, file, &mut diags) {
                    services.insert(name, svc);
                } else {
                    // Still known by name, so dependency checks don't report it as missing.
                    broken.push(name.clone());
                    services.insert(name, placeholder_service());
                }
            }
        }
        Some(_) => {
            let path = [Seg::Key("services".into())];
            diags.push(err(
                tree.locate(&path, false),
                &path,
                "`services` must be a mapping of name to service".into(),
            ));
        }
    }

    manifest.services = services;
    validate::check(&manifest, &tree, file, head_broken, &broken, &mut diags);
    diags.sort_by_key(|d| (d.line, d.column));
    if diags.iter().any(|d| d.severity == Severity::Error) {
        Err(Invalid { diagnostics: diags })
    } else {
        Ok((manifest, diags))
    }
}

/// serde's name for an expected type, as an operator would say it.
fn human_type(want: &str) -> String {
    match want {
        "u16" => "a whole number from 0 to 65535 (a port)".into(),
        "u32" | "u64" | "usize" => "a whole number".into(),
        "f64" => "a number, e.g. 0.5".into(),
        "a boolean" => "true or false".into(),
        "a string" => "text (quote it if it looks like a number)".into(),
        "a sequence" => "a list, e.g. `[a, b]`".into(),
        other => other.to_string(),
    }
}

/// A stand-in for a service whose body did not parse (its own errors are already reported).
fn placeholder_service() -> Service {
    serde_yaml_ng::from_str("server: {source: {}}\nstateful: false").expect("static YAML")
}

/// Deserialize `value` (found at `base` in the document) into `T`, turning a serde error into a
/// positioned diagnostic with a suggestion.
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    base: &[Seg],
    tree: &Node,
    file: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut path = base.to_vec();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
                    serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
                    _ => {}
                }
            }
            diags.push(serde_diagnostic(
                &e.into_inner().to_string(),
                path,
                tree,
                file,
            ));
            None
        }
    }
}

fn serde_diagnostic(message: &str, mut path: Vec<Seg>, tree: &Node, file: &str) -> Diagnostic {
    let message = message.trim_end_matches('.').to_string();
    let ticked: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let expected = &ticked[1..];
        if path.last() != Some(&Seg::Key(field.to_string())) {
            path.push(Seg::Key(field.to_string()));
        }
        let parent = diagnostic::dotted(&path[..path.len() - 1]);
        let help = match diagnostic::did_you_mean(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => match diagnostic::known_alias(field) {
                Some(alias) => format!("this setting is `{alias}` here"),
                None => format!("known fields here: {}", expected.join(", ")),
            },
        };
        let at = tree.locate(&path, true);
        return Diagnostic::new(
            Severity::Error,
            file,
            at,
            &path,
            format!(
                "unknown field `{field}` in `{}`",
                if parent.is_empty() {
                    "the top level"
                } else {
                    &parent
                }
            ),
        )
        .help(help);
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        let at = tree.locate(&path, true);
        let full = {
            let mut p = path.clone();
            p.push(Seg::Key(field.to_string()));
            diagnostic::dotted(&p)
        };
        return Diagnostic::new(
            Severity::Error,
            file,
            at,
            &path,
            format!("missing field `{field}`"),
        )
        .help(format!(
            "add `{full}`; see docs/contracts.md for the schema"
        ));
    }
    let at = tree.locate(&path, false);
    let value = tree
        .find(&path, false)
        .and_then(|n| n.scalar())
        .map(str::to_string);
    let help = if message.starts_with("invalid type") {
        message
            .rsplit("expected ")
            .next()
            .map(|want| format!("write {}", human_type(want)))
    } else if message.starts_with("unknown variant") {
        match (
            ticked.first(),
            diagnostic::did_you_mean(
                ticked.first().copied().unwrap_or(""),
                ticked.iter().skip(1).copied(),
            ),
        ) {
            (_, Some(s)) => Some(format!("did you mean `{s}`?")),
            _ => Some(format!("one of: {}", ticked[1..].join(", "))),
        }
    } else {
        None
    };
    let mut d = Diagnostic::new(Severity::Error, file, at, &path, message);
    if let Some(v) = value {
        d = d.value(v);
    }
    if let Some(h) = help {
        d = d.help(h);
    }
    d
}

/// Load the manifest named by the settings for a command that needs a valid one: warnings are
/// printed, and any error ends the command with exit 2 before anything is changed.
pub fn load_checked(settings: &crate::settings::Settings) -> anyhow::Result<Loaded> {
    match load(&settings.manifest_path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                crate::output::diagnostic(&w.to_string());
            }
            Ok(loaded)
        }
        Err(invalid) => Err(crate::error::CommandError::usage(invalid.to_string()).into()),
    }
}
