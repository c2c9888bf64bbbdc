//! One bad manifest per error class: the message names file:line:column, offers the fix, the
//! exit code is 2, and nothing is written.

mod common;

use common::{run_mcpctl, text};

/// (fixture, line:column, words in the message, words in the help)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "max_sessions_zero",
        "13:28",
        "max_sessions must be at least 1",
        "derive a cap from `limits.memory`",
    ),
    (
        "replicas_without_edge",
        "13:15",
        "replicas are balanced by the edge, which is not enabled",
        "set `edge: {enabled: true}`",
    ),
    (
        "install_scripts_reason",
        "11:48",
        "npm_install_scripts needs a reason",
        "which package needs its install script",
    ),
    (
        "database_secret",
        "13:42",
        "`beta` is not a `role: database` service",
        "name the PostgreSQL service",
    ),
    (
        "database_name",
        "17:52",
        "`pg_alpha` would need the owner role `pg_alpha_owner`, and PostgreSQL reserves role names",
        "does not start with `pg_`",
    ),
    (
        "database_access",
        "18:64",
        "database `app` on `db` is read_only here but read_write in secret `DATABASE_URL`",
        "use the same `access` in both secrets",
    ),
    (
        "unknown_field",
        "13:14",
        "unknown field `memroy`",
        "did you mean `memory`?",
    ),
    (
        "duplicate_port",
        "14:11",
        "host port 8501 is already used by `alpha`",
        "its own host port",
    ),
    (
        "duplicate_name",
        "13:3",
        "duplicate service name `alpha`",
        "already defined on line 6",
    ),
    (
        "bad_name",
        "6:3",
        "service name `Alpha_1` is not allowed",
        "lowercase letters and digits",
    ),
    (
        "unknown_dependency",
        "13:18",
        "unknown dependency `betta`",
        "did you mean `beta`?",
    ),
    (
        "dependency_cycle",
        "13:17",
        "dependency cycle: alpha → beta → gamma → alpha",
        "break the cycle",
    ),
    (
        "literal_secret",
        "13:20",
        "`API_KEY` looks like a secret",
        "move it to `secrets:`",
    ),
    (
        "unpinned_npm",
        "9:59",
        "`^1.0.0` is not a pinned version",
        "pin an exact version",
    ),
    (
        "unpinned_image",
        "9:29",
        "is not pinned to a tag or digest",
        "not `latest`",
    ),
    (
        "wrong_type",
        "7:11",
        "invalid type: string \"eighty\"",
        "a whole number from 0 to 65535",
    ),
    (
        "unknown_base",
        "11:19",
        "unknown base `node23`",
        "did you mean `node22`?",
    ),
    (
        "missing_field",
        "6:3",
        "missing field `server`",
        "services.alpha.server",
    ),
    (
        "legacy_upstream",
        "12:17",
        "`host.docker.internal:9000/servers/alpha` is not an http(s) URL",
        "as the edge container reaches it",
    ),
    (
        "tools_policy_gate",
        "12:45",
        "the gate expects tool `slow_echo`, which `tools.deny` hides from clients",
        "remove `slow_echo` from `tools.deny`",
    ),
    (
        "auth_unknown_consumer",
        "15:24",
        "no consumer `litelm` in auth.consumers",
        "did you mean `litellm`?",
    ),
    (
        "auth_jwt_missing",
        "6:9",
        "auth mode `jwt` needs `auth.jwt`",
        "jwks_file",
    ),
    (
        "syntax_error",
        "5:1",
        "YAML syntax error",
        "indentation and quoting",
    ),
];

#[test]
fn each_error_class_is_positioned_with_a_fix_exits_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, at, message, help) in CASES {
        let file = common::repo_root().join(format!("tests/fixtures/invalid/{fixture}.yaml"));
        let out_dir = tmp.path().join(fixture);
        let out = run_mcpctl(
            tmp.path(),
            &[
                "-f",
                file.to_str().unwrap(),
                "render",
                "--out",
                out_dir.to_str().unwrap(),
            ],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{fixture}: exit code\n{stderr}");
        let line = stderr
            .lines()
            .position(|l| {
                l.contains(&format!("{fixture}.yaml:{at}: error:")) && l.contains(message)
            })
            .unwrap_or_else(|| {
                panic!("{fixture}: no error at {at} saying {message:?} in:\n{stderr}")
            });
        let detail: String = stderr
            .lines()
            .skip(line + 1)
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            detail.contains(help),
            "{fixture}: help {help:?} missing after the error:\n{stderr}"
        );
        assert!(
            !out_dir.exists(),
            "{fixture}: render wrote {} despite the error",
            out_dir.display()
        );
        // validate agrees, and JSON output carries the same position.
        let json = run_mcpctl(
            tmp.path(),
            &["-f", file.to_str().unwrap(), "--output", "json", "validate"],
        );
        assert_eq!(json.status.code(), Some(2), "{fixture}: validate exit code");
        let v: serde_json::Value =
            serde_json::from_slice(&json.stdout).expect("validate --output json prints JSON");
        let (l, c) = at.split_once(':').unwrap();
        assert!(
            v["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["line"].as_u64() == l.parse().ok()
                    && d["column"].as_u64() == c.parse().ok()
                    && d["severity"] == "error"),
            "{fixture}: JSON diagnostics lack {at}: {v}"
        );
    }
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let file = common::repo_root().join("tests/fixtures/invalid/several_errors.yaml");
    let out = run_mcpctl(tmp.path(), &["-f", file.to_str().unwrap(), "validate"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    for expected in [
        ":13:14: error:",
        ":15:11: error:",
        ":21:18: error:",
        "3 errors",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn the_default_manifest_is_valid() {
    let out = run_mcpctl(&common::repo_root(), &["validate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("valid (10 services"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_missing_manifest_says_how_to_point_at_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_mcpctl(tmp.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("-f/--file"),
        "{}",
        text(&out.stderr)
    );
}
