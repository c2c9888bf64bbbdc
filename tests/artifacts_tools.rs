//! Render tier, checked by the real tools offline: hadolint on every Dockerfile, `docker-compose
//! config -q`, and one `docker-compose up` of a two-service slice of small local images proving
//! that `mem_limit` reaches the engine and `service_healthy` ordering holds.
//!
//! Tools and the engine are required when MCPCTL_TEST_REQUIRE_DOCKER=1 (scripts/test, CI).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{must, run_mcpctl, text};

const HADOLINT_CACHE: &str = "/var/cache/mcpctl/tools/bin/hadolint";

fn render_default(dir: &Path) {
    let m = common::repo_root().join("services.yaml");
    let out = run_mcpctl(dir, &["-f", m.to_str().unwrap(), "render", "--out", "out"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn rendered_dockerfiles_pass_hadolint_without_global_ignores() {
    let Some(hadolint) = common::tool("hadolint", "hadolint", &[HADOLINT_CACHE]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    render_default(tmp.path());
    let mut checked = 0;
    for entry in std::fs::read_dir(tmp.path().join("out/services")).unwrap() {
        let dockerfile = entry.unwrap().path().join("Dockerfile");
        // Run from the temp dir so no project-level .hadolint.yaml could apply.
        let out = Command::new(&hadolint)
            .args(["--no-color", "--failure-threshold", "info"])
            .arg(&dockerfile)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            dockerfile.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(checked, 10);
    assert!(
        !common::repo_root().join(".hadolint.yaml").exists(),
        "no global hadolint config"
    );
}

#[test]
fn every_inline_hadolint_ignore_carries_a_reason() {
    let mut dirs = vec![common::repo_root().join("templates")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let body = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<&str> = body.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                if line.contains("hadolint ignore=") {
                    let reason = i.checked_sub(1).map(|j| lines[j].trim()).unwrap_or("");
                    assert!(
                        reason.starts_with('#')
                            && reason.len() > 10
                            && !reason.contains("hadolint"),
                        "{}:{}: an inline ignore needs a comment line above it saying why",
                        path.display(),
                        i + 1
                    );
                }
            }
        }
    }
}

#[test]
fn compose_export_passes_docker_compose_config() {
    let Some(compose) = common::tool("compose_config", "docker-compose", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    render_default(tmp.path());
    let out = Command::new(compose)
        .args(["-f", "out/docker-compose.yml", "config", "-q"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-compose config -q:\n{}",
        text(&out.stderr)
    );
}

/// Removes everything the slice created, whatever happened.
struct ComposeSlice<'a> {
    dir: &'a Path,
    project: String,
}

impl Drop for ComposeSlice<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "-f",
                "out/docker-compose.yml",
                "down",
                "-v",
                "--remove-orphans",
                "-t",
                "2",
            ])
            .current_dir(self.dir)
            .output();
        for svc in ["alpha", "beta"] {
            let _ = Command::new("docker")
                .args([
                    "image",
                    "rm",
                    "-f",
                    &format!("{}/{svc}:compose", self.project),
                ])
                .output();
        }
    }
}

#[test]
fn compose_up_applies_mem_limit_and_waits_for_service_healthy() {
    if !common::docker_available("compose_up") {
        return;
    }
    let Some(_) = common::tool("compose_up", "docker-compose", &[]) else {
        return;
    };
    let project = common::unique_project("slice");
    let runtime = common::runtime_image();
    let (pa, pb) = (common::free_port(), common::free_port());
    let manifest = format!(
        r#"version: 1
project: {project}
services:
  alpha:
    port: {pa}
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, alpha]
    limits: {{memory: 64m, cpus: 0.5}}
    health: {{start_period: 1s, interval: 1s, expect_tools: {{include: [echo]}}}}
  beta:
    port: {pb}
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, beta]
    depends_on: [alpha]
    limits: {{memory: 48m, cpus: 0.25}}
    health: {{start_period: 1s, interval: 1s, expect_tools: {{include: [echo]}}}}
"#
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("services.yaml"), manifest).unwrap();
    let out = run_mcpctl(tmp.path(), &["render", "--out", "out"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _cleanup = ComposeSlice {
        dir: tmp.path(),
        project: project.clone(),
    };

    // Build each image from its rendered Dockerfile, with the mcpctl binary in the context.
    for svc in ["alpha", "beta"] {
        let ctx = tmp.path().join("out/services").join(svc);
        std::fs::copy(common::mcpctl(), ctx.join("mcpctl")).unwrap();
        must(
            Command::new("docker")
                .args(["build", "-q", "-t", &format!("{project}/{svc}:compose")])
                .arg(&ctx),
        );
    }
    // The bridges' access files, as the compose header says: ./secrets next to the compose
    // file (uid 10001 reads them).
    for svc in ["alpha", "beta"] {
        let dir = tmp.path().join("out/secrets").join(svc);
        std::fs::create_dir_all(&dir).unwrap();
        let out = run_mcpctl(tmp.path(), &["token", "bridge-file", svc]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("\"sha256\""),
            "{}",
            text(&out.stdout)
        );
        std::fs::write(dir.join("mcpctl_auth"), &out.stdout).unwrap();
    }
    let since = must(Command::new("date").arg("+%s.%N")).trim().to_string();
    must(
        Command::new("docker-compose")
            .args([
                "-p",
                &project,
                "-f",
                "out/docker-compose.yml",
                "up",
                "-d",
                "--no-build",
            ])
            .current_dir(tmp.path()),
    );
    let health = |c: &str| {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Health.Status}}", c])
            .output()
            .unwrap();
        text(&out.stdout).trim().to_string()
    };
    let (alpha, beta) = (format!("{project}-alpha"), format!("{project}-beta"));
    common::wait_for_explained(
        "both services healthy",
        Duration::from_secs(60),
        || (health(&alpha) == "healthy" && health(&beta) == "healthy").then_some(()),
        || common::container_report(&[&alpha, &beta]),
    );

    // mem_limit and cpus reached the engine.
    for (svc, mem, nano_cpus) in [
        ("alpha", 64u64 << 20, 500_000_000u64),
        ("beta", 48 << 20, 250_000_000),
    ] {
        let got = must(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.ReadonlyRootfs}} {{.Config.User}}",
            &format!("{project}-{svc}"),
        ]));
        assert_eq!(
            got.trim(),
            format!("{mem} {nano_cpus} true 10001:10001"),
            "{svc}"
        );
    }
    // Published on 127.0.0.1 only.
    let ports = must(Command::new("docker").args(["port", &format!("{project}-alpha"), "8080"]));
    assert_eq!(ports.trim(), format!("127.0.0.1:{pa}"));

    // Ordering, from the engine's own event stream: beta started only after alpha was healthy.
    let until = must(Command::new("date").arg("+%s.%N")).trim().to_string();
    let events = must(Command::new("docker").args([
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("label=com.mcp.project={project}"),
        "--filter",
        "type=container",
        "--format",
        "{{.TimeNano}} {{.Actor.Attributes.name}} {{.Status}}",
    ]));
    let time_of = |name: &str, status: &str| -> u128 {
        events
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ' ');
                let (t, n, s) = (parts.next()?, parts.next()?, parts.next()?);
                (n == name && s == status).then(|| t.parse::<u128>().unwrap())
            })
            .min()
            .unwrap_or_else(|| panic!("no `{status}` event for {name} in:\n{events}"))
    };
    let alpha_healthy = time_of(&format!("{project}-alpha"), "health_status: healthy");
    let beta_start = time_of(&format!("{project}-beta"), "start");
    let alpha_start = time_of(&format!("{project}-alpha"), "start");
    assert!(
        alpha_start < alpha_healthy,
        "alpha became healthy after starting"
    );
    assert!(
        beta_start >= alpha_healthy,
        "beta started {} ms before alpha was healthy",
        (alpha_healthy - beta_start) / 1_000_000
    );
}
