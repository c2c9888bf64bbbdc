//! The GitHub Actions workflows (`.github/workflows/`) and the dependency policy they rely on,
//! checked offline:
//!
//! - every workflow validates against the SchemaStore GitHub-workflow schema as vendored by
//!   `check-jsonschema` (PyPI, pinned with hashes in scripts/tools-requirements.txt;
//!   `--builtin-schema vendor.github-workflows`), and a broken workflow does not;
//! - what the issue asks of each is there: `ci.yml` runs `.ci/run`, `images.yml` runs `mcpctl
//!   bases build` and `mcpctl build`, `deploy.yml` is manual and its `mcpctl deploy` job waits
//!   for the `production` environment's reviewers after a plan job; every `mcpctl …` command in
//!   a `run:` script parses with the real CLI; actions are pinned to a commit; no `${{ … }}` is
//!   interpolated into a script (script injection), and permissions are read-only;
//! - `cargo deny check licenses bans sources` passes against the committed Cargo.lock
//!   (deny.toml; cargo-deny built by scripts/setup). `advisories` is not run: its database is a
//!   GitHub clone this machine cannot reach (docs/security.md).
//!
//! The tools are required under `MCPCTL_TEST_REQUIRE_DOCKER=1` (scripts/test), like hadolint.

mod common;
mod runbook_commands;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const CHECK_JSONSCHEMA: &str = "/var/cache/mcpctl/tools/bin/check-jsonschema";
const CARGO_DENY: &str = "/var/cache/mcpctl/tools-cargo-deny/bin/cargo-deny";

fn cache_path(default: &str) -> String {
    match std::env::var("MCPCTL_CACHE") {
        Ok(c) => default.replacen("/var/cache/mcpctl", &c, 1),
        Err(_) => default.to_string(),
    }
}

fn workflows() -> Vec<PathBuf> {
    let dir = common::repo_root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(name: &str) -> Value {
    let path = common::repo_root().join(".github/workflows").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `run:` script of a workflow, with the job and step it belongs to.
fn scripts(w: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (job, spec) in w["jobs"].as_object().expect("jobs") {
        for (i, step) in spec["steps"].as_array().into_iter().flatten().enumerate() {
            if let Some(run) = step["run"].as_str() {
                out.push((format!("{job} step {i}"), run.to_string()));
            }
        }
    }
    out
}

fn schema_check(tool: &Path, file: &Path) -> std::process::Output {
    Command::new(tool)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()))
}

#[test]
fn workflows_validate_against_the_schemastore_schema_and_a_broken_one_does_not() {
    let cached = cache_path(CHECK_JSONSCHEMA);
    let Some(tool) = common::tool("workflows", "check-jsonschema", &[&cached]) else {
        return;
    };
    let files = workflows();
    assert_eq!(
        files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["ci.yml", "deploy.yml", "images.yml"]
    );
    for f in &files {
        let out = schema_check(&tool, f);
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            f.display(),
            common::text(&out.stdout),
            common::text(&out.stderr)
        );
    }
    // The validator validates: a step with both `run` and `uses`, a non-numeric timeout and a
    // misspelt key are refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on: workflow_dispatch\njobs:\n  a:\n    runs-on: x\n    timeout-minutes: ten\n    stepz:\n      - run: echo\n        uses: actions/checkout@v4\n",
    )
    .unwrap();
    let out = schema_check(&tool, &bad);
    assert!(
        !out.status.success(),
        "a broken workflow passed the schema check:\n{}",
        common::text(&out.stdout)
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let w = load("ci.yml");
    let runs: Vec<String> = scripts(&w).into_iter().map(|(_, s)| s).collect();
    assert!(
        runs.iter()
            .any(|s| s.lines().any(|l| l.trim() == "bash .ci/run")),
        "ci.yml must run `.ci/run` (the README's test command): {runs:?}"
    );
    assert!(w["on"]["push"].is_object() && w["on"].get("pull_request").is_some());
    let ci = std::fs::read_to_string(common::repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("scripts/test"),
        ".ci/run no longer runs scripts/test"
    );
}

#[test]
fn images_builds_bases_then_service_images() {
    use mcpctl::cli::Command as C;
    use mcpctl::commands::bases::BasesAction;
    let w = load("images.yml");
    let commands = mcpctl_commands("images.yml", &w);
    let at = |want: fn(&C) -> bool| commands.iter().position(|(_, cli)| want(&cli.command));
    let bases = at(|c| {
        matches!(
            c,
            C::Bases(b) if matches!(b.action, Some(BasesAction::Build(_)))
        )
    });
    let build = at(|c| matches!(c, C::Build(_)));
    assert!(
        bases.is_some() && build.is_some() && bases < build,
        "images.yml must run `mcpctl bases build` and then `mcpctl build`: {:?}",
        commands
            .iter()
            .map(|(a, _)| a.join(" "))
            .collect::<Vec<_>>()
    );
}

#[test]
fn deploy_is_manual_and_waits_for_the_production_reviewers_after_a_plan() {
    let w = load("deploy.yml");
    let on = w["on"].as_object().expect("on: a mapping");
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["workflow_dispatch"],
        "deploy.yml must only run when started by hand"
    );
    let deploy = &w["jobs"]["deploy"];
    assert_eq!(
        deploy["environment"]["name"], "production",
        "the deploy job must be bound to the `production` environment (required reviewers)"
    );
    assert_eq!(
        deploy["needs"], "plan",
        "the deploy job must follow the plan job"
    );
    let commands = mcpctl_commands("deploy.yml", &w);
    let real: Vec<&(Vec<String>, mcpctl::cli::Cli)> = commands
        .iter()
        .filter(|(_, cli)| matches!(&cli.command, mcpctl::cli::Command::Deploy(d) if !d.dry_run))
        .collect();
    assert_eq!(real.len(), 1, "one real `mcpctl deploy` in deploy.yml");
    assert!(real[0].1.global.yes, "no TTY in CI: the deploy needs --yes");
    assert!(
        matches!(&real[0].1.command, mcpctl::cli::Command::Deploy(d) if d.message.is_some()),
        "the deploy carries -m (lock and ledger say why)"
    );
    let plan_job: Vec<String> = w["jobs"]["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(String::from))
        .collect();
    assert!(
        plan_job.iter().any(|s| s.contains("mcpctl plan")),
        "the plan job shows the plan: {plan_job:?}"
    );
}

/// Every workflow: actions pinned to a full commit, read-only token, nothing interpolated into a
/// shell script, and every `mcpctl` command parses with the real CLI.
#[test]
fn workflows_are_pinned_least_privilege_injection_free_and_their_commands_parse() {
    for f in workflows() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let w = load(&name);
        assert_eq!(
            w["permissions"]["contents"], "read",
            "{name}: top-level `permissions: contents: read`"
        );
        for (job, spec) in w["jobs"].as_object().unwrap() {
            assert!(
                spec["timeout-minutes"].as_u64().is_some_and(|t| t <= 90),
                "{name}: job {job} needs a timeout-minutes within CI's 90 minutes"
            );
            for step in spec["steps"].as_array().into_iter().flatten() {
                if let Some(uses) = step["uses"].as_str() {
                    let pin = uses.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
                    assert!(
                        pin.len() == 40 && pin.chars().all(|c| c.is_ascii_hexdigit()),
                        "{name}: `{uses}` must be pinned to a full commit SHA"
                    );
                }
            }
        }
        for (at, script) in scripts(&w) {
            assert!(
                !script.contains("${{"),
                "{name} {at}: `${{{{ … }}}}` in a run script is a script-injection hole; pass it through `env:`"
            );
        }
        let n = mcpctl_commands(&name, &w).len();
        assert!(n > 0 || name == "ci.yml", "{name}: no mcpctl command found");
    }
}

/// Every `mcpctl` command in the workflow's scripts, parsed with the real CLI (a command that
/// does not parse fails the test here).
fn mcpctl_commands(name: &str, w: &Value) -> Vec<(Vec<String>, mcpctl::cli::Cli)> {
    let mut out = Vec::new();
    for (at, script) in scripts(w) {
        let file = PathBuf::from(format!(".github/workflows/{name} ({at})"));
        let commands = runbook_commands::from_shell(&file, 1, &script)
            .unwrap_or_else(|p| panic!("{}", p.join("\n")));
        for c in commands {
            match runbook_commands::parse(&c.argv) {
                Ok(cli) => out.push((c.argv, cli)),
                Err(e) => panic!("{}: `{}` does not parse: {e}", c.at(), c.text),
            }
        }
    }
    out
}

#[test]
fn dependency_policy_holds_offline() {
    let cached = cache_path(CARGO_DENY);
    let Some(deny) = common::tool("dependency policy", "cargo-deny", &[&cached]) else {
        return;
    };
    let root = common::repo_root();
    // cargo-deny reads `cargo metadata` for every platform, offline; a build here downloads only
    // this platform's crates, so on a fresh machine those of other targets
    // (android_system_properties, valuable, …) are missing. Fetch them from the registry first
    // (`--locked`: exactly Cargo.lock; a no-op when they are there).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let fetched = Command::new(&cargo)
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cargo fetch: {e}"));
    assert!(
        fetched.status.success(),
        "cargo fetch --locked failed:\n{}",
        common::text(&fetched.stderr)
    );
    // Explicitly licenses, bans and sources: `advisories` needs the RustSec database from GitHub.
    let out = Command::new(&deny)
        .args([
            "deny",
            "-L",
            "error",
            "--offline",
            "--locked",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .args(["--workspace", "--config"])
        .arg(root.join("deny.toml"))
        .args(["check", "licenses", "bans", "sources"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", deny.display()));
    // The summary line goes to stdout, diagnostics to stderr.
    let stderr = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert!(
        out.status.success(),
        "cargo deny check licenses bans sources failed (deny.toml):\n{stderr}"
    );
    for check in ["bans ok", "licenses ok", "sources ok"] {
        assert!(
            stderr.contains(check),
            "no `{check}` in cargo-deny's summary:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("advisories"),
        "advisories must not run offline:\n{stderr}"
    );

    // The policy bites: a publishable crate under a copyleft license is refused.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        "[package]\nname = \"probe\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"GPL-3.0-only\"\npublish = false\n",
    )
    .unwrap();
    let out = Command::new(&deny)
        .args(["deny", "-L", "error", "--offline", "--manifest-path"])
        .arg(dir.path().join("Cargo.toml"))
        .arg("--config")
        .arg(root.join("deny.toml"))
        .args(["check", "licenses"])
        .output()
        .unwrap();
    // A private crate is ignored by [licenses.private]: publishable with GPL is refused.
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let toml = std::fs::read_to_string(dir.path().join("Cargo.toml"))
        .unwrap()
        .replace("publish = false\n", "");
    std::fs::write(dir.path().join("Cargo.toml"), toml).unwrap();
    let out = Command::new(&deny)
        .args(["deny", "-L", "error", "--offline", "--manifest-path"])
        .arg(dir.path().join("Cargo.toml"))
        .arg("--config")
        .arg(root.join("deny.toml"))
        .args(["check", "licenses"])
        .output()
        .unwrap();
    let err = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    assert!(
        !out.status.success() && err.contains("GPL-3.0"),
        "a GPL-3.0 crate passed the license policy:\n{err}"
    );
}
