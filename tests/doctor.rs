//! `mcpctl doctor` against the real engine with a temporary manifest and state directory: the
//! engine check passes, the missing install key fails with the command that creates it, a port
//! held by another process fails naming the port, and doctor changes nothing. Also the generated
//! shell completions and manual pages (no engine needed).

mod common;

use std::path::Path;

use serde_json::Value;

/// `mcpctl --output json doctor` in `dir`: its exit code and its checks by name.
fn doctor(dir: &Path, state: &Path) -> (i32, Vec<Value>, String) {
    let out = common::run_mcpctl(
        dir,
        &[
            "--output",
            "json",
            "--state-dir",
            state.to_str().unwrap(),
            "doctor",
        ],
    );
    let stdout = common::text(&out.stdout);
    let stderr = common::text(&out.stderr);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("doctor's stdout is not one JSON object ({e}):\n{stdout}\n{stderr}")
    });
    let checks = v["checks"].as_array().expect("checks[]").clone();
    for c in &checks {
        for field in ["name", "ok", "detail", "fix"] {
            assert!(c.get(field).is_some(), "check without `{field}`: {c}");
        }
    }
    (
        out.status.code().unwrap_or(-1),
        checks,
        format!("{stdout}\n{stderr}"),
    )
}

fn check<'a>(checks: &'a [Value], name: &str, all: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check `{name}` in:\n{all}"))
}

#[test]
fn doctor_passes_the_engine_and_fails_a_missing_key_and_a_foreign_port() {
    if !common::docker_available(
        "doctor_passes_the_engine_and_fails_a_missing_key_and_a_foreign_port",
    ) {
        return;
    }
    let dir = common::TestDir::new();
    let state = dir.path().join("state");
    // A port held by another process (this test), and one that is free.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let free = common::free_port();
    let project = common::unique_project("doctor");
    std::fs::write(
        dir.path().join("services.yaml"),
        format!(
            r#"version: 1
project: {project}
services:
  alpha:
    port: {held}
    server:
      source: {{image: {{ref: "debian:12"}}}}
      command: [srv]
    health:
      expect_tools: {{include: [echo]}}
  beta:
    port: {free}
    server:
      source: {{image: {{ref: "debian:12"}}}}
      command: [srv]
    health:
      expect_tools: {{include: [echo]}}
"#
        ),
    )
    .unwrap();

    let (code, checks, all) = doctor(dir.path(), &state);
    assert_eq!(code, 1, "a failed check exits 1:\n{all}");

    let engine = check(&checks, "engine", &all);
    assert_eq!(engine["ok"], true, "{engine}");
    assert!(
        engine["detail"].as_str().unwrap().contains("Docker"),
        "{engine}"
    );
    assert_eq!(check(&checks, "manifest", &all)["ok"], true);

    let key = check(&checks, "install key", &all);
    assert_eq!(key["ok"], false, "{key}");
    assert!(key["detail"].as_str().unwrap().contains("missing"), "{key}");
    assert!(
        key["fix"].as_str().unwrap().contains("`mcpctl plan`"),
        "{key}"
    );

    let foreign = check(&checks, &format!("port {held}"), &all);
    assert_eq!(foreign["ok"], false, "{foreign}");
    let detail = foreign["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("port {held} ")) && detail.contains("another process"),
        "{foreign}"
    );
    assert!(
        foreign["fix"]
            .as_str()
            .unwrap()
            .contains("services.alpha.port"),
        "{foreign}"
    );
    let open = check(&checks, &format!("port {free}"), &all);
    assert_eq!(open["ok"], true, "{open}");
    assert_eq!(open["fix"], Value::Null, "{open}");

    assert!(
        !state.exists(),
        "doctor created the state directory (it must change nothing)"
    );

    // With a good key and the port released, every check that failed passes.
    drop(holder);
    std::fs::create_dir_all(&state).unwrap();
    let key_path = state.join("install.key");
    std::fs::write(&key_path, [9u8; 32]).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, checks, all) = doctor(dir.path(), &state);
    assert_eq!(check(&checks, "install key", &all)["ok"], true, "{all}");
    assert_eq!(
        check(&checks, &format!("port {held}"), &all)["ok"],
        true,
        "{all}"
    );
    assert_eq!(
        std::fs::read(&key_path).unwrap(),
        [9u8; 32],
        "the key was left as it was"
    );
}

#[test]
fn completions_name_the_binary_and_its_subcommands() {
    let out = common::run_mcpctl(&common::repo_root(), &["completions", "bash"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let script = common::text(&out.stdout);
    assert!(script.contains("mcpctl"), "{script}");
    for sub in ["deploy", "doctor", "rollback"] {
        assert!(script.contains(sub), "no `{sub}` in the bash completion");
    }
    assert!(
        script.contains("complete -F"),
        "not a bash completion script"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = common::run_mcpctl(&common::repo_root(), &["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
}

#[test]
fn man_writes_a_page_per_command_and_subcommand() {
    let dir = common::TestDir::new();
    let pages = dir.path().join("man");
    let out = common::run_mcpctl(
        dir.path(),
        &["--output", "json", "man", "--out", pages.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    for page in [
        "mcpctl.1",
        "mcpctl-deploy.1",
        "mcpctl-doctor.1",
        "mcpctl-edge-up.1",
    ] {
        let path = pages.join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a roff page");
        assert!(
            report["pages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str() == path.to_str()),
            "{page} not reported: {report}"
        );
    }
    let top = std::fs::read_to_string(pages.join("mcpctl.1")).unwrap();
    assert!(top.contains("deploy"), "the top page lists the subcommands");
}
