//! Render tier: a snapshot of every generated file, byte stability across processes, `--check`,
//! `--only`, and the guarantee that no secret value reaches the output.

mod common;

use std::path::Path;

use common::{run_mcpctl, text};

fn default_render() -> Vec<mcpctl::render::Artifact> {
    let loaded = mcpctl::manifest::load(&common::repo_root().join("services.yaml"))
        .expect("default manifest is valid");
    mcpctl::render::render(&loaded.manifest, None).unwrap()
}

#[test]
fn every_rendered_file_matches_its_snapshot() {
    let artifacts = default_render();
    assert_eq!(
        artifacts.len(),
        10 + 1 + 1 + 1 + 8,
        "10 Dockerfiles, the db entrypoint, compose, litellm, 8 observability files"
    );
    for a in &artifacts {
        let name = a.path.to_string_lossy().replace('/', "__");
        insta::assert_snapshot!(name, &a.contents);
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn two_processes_render_identical_bytes_and_check_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    let manifest = root.join("services.yaml");
    let m = manifest.to_str().unwrap();
    for dir in ["a", "b"] {
        let out = run_mcpctl(tmp.path(), &["-f", m, "render", "--out", dir]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let a = files(&tmp.path().join("a"));
    assert_eq!(a.len(), 21);
    assert_eq!(a, files(&tmp.path().join("b")), "two renders differ");

    let check = run_mcpctl(tmp.path(), &["-f", m, "render", "--out", "a", "--check"]);
    assert!(
        check.status.success(),
        "fresh render is up to date: {}",
        text(&check.stderr)
    );

    // A hand edit and a deleted file are both reported, and --check writes nothing.
    let edited = tmp.path().join("a/services/fetch/Dockerfile");
    std::fs::write(&edited, "FROM scratch\n").unwrap();
    std::fs::remove_file(tmp.path().join("a/litellm/config.yaml")).unwrap();
    let check = run_mcpctl(tmp.path(), &["-f", m, "render", "--out", "a", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    let stdout = text(&check.stdout);
    assert!(stdout.contains("services/fetch/Dockerfile"), "{stdout}");
    assert!(stdout.contains("litellm/config.yaml"), "{stdout}");
    assert!(
        !stdout.contains("docker-compose.yml"),
        "an unchanged file is not listed: {stdout}"
    );
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "FROM scratch\n");
    assert!(!tmp.path().join("a/litellm/config.yaml").exists());
}

#[test]
fn only_renders_the_requested_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::repo_root().join("services.yaml");
    let out = run_mcpctl(
        tmp.path(),
        &[
            "-f",
            m.to_str().unwrap(),
            "render",
            "--out",
            "o",
            "--only",
            "litellm",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = files(&tmp.path().join("o"))
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(names, vec!["litellm/config.yaml"]);
}

#[test]
fn no_secret_value_ever_appears_in_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::repo_root().join("services.yaml");
    // Every secret the default manifest names, set to a recognisable value on the host.
    let vars = [
        "MCP_DB_PASSWORD",
        "MCP_MEMORY_DATABASE_URL",
        "MCP_POSTGRES_DATABASE_URI",
        "MCP_TIMESCALEDB_DATABASE_URI",
        "GITHUB_TOKEN",
        "N8N_API_KEY",
        "LITELLM_MASTER_KEY",
    ];
    let mut cmd = std::process::Command::new(common::mcpctl());
    cmd.args(["-f", m.to_str().unwrap(), "render", "--out", "o"])
        .current_dir(tmp.path());
    for (i, v) in vars.iter().enumerate() {
        cmd.env(v, format!("s3cr3t-value-{i}-zq"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = files(&tmp.path().join("o"));
    for (name, bytes) in &all {
        assert!(
            !text(bytes).contains("s3cr3t-value"),
            "{name} contains a secret value"
        );
    }
    assert!(
        !text(&out.stdout).contains("s3cr3t-value") && !text(&out.stderr).contains("s3cr3t-value")
    );
    // The references are there instead.
    let litellm = all.iter().find(|f| f.0 == "litellm/config.yaml").unwrap();
    assert!(text(&litellm.1).contains("os.environ/LITELLM_MASTER_KEY"));
}

#[test]
fn litellm_config_has_a_top_level_mcp_servers_with_nine_keys() {
    let a = default_render();
    let cfg = a
        .iter()
        .find(|a| a.path.ends_with("litellm/config.yaml"))
        .unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&cfg.contents).unwrap();
    let servers = v
        .get("mcp_servers")
        .and_then(|s| s.as_mapping())
        .expect("top-level mcp_servers");
    assert_eq!(servers.len(), 9);
    assert!(v
        .get("litellm_settings")
        .and_then(|s| s.get("mcp_servers"))
        .is_none());
    for (k, s) in servers {
        let key = k.as_str().unwrap();
        assert!(
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{key}: LiteLLM keys are [a-z0-9]"
        );
        assert_eq!(s["transport"], "sse");
        assert_eq!(
            s["url"].as_str().unwrap(),
            format!("http://mcp-{key}:8080/sse")
        );
    }
}
