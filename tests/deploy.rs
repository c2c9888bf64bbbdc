//! Rollout tier, on the real engine: revisions A (healthy), B (missing a tool), C (crashes at
//! start), D (fails its smoke call), E (hangs at start) of a small FROM-scratch image holding the
//! test MCP server. Shows: deploy A → B, C, D, E each fail the gate and A serves again (checked by
//! an MCP call returning A's nonce) → A′ serves → `rollback --to` A → `history` shows every step;
//! and the faults: lock held, port taken, engine unreachable, no TTY without --yes, mcpctl
//! SIGKILLed between start and switch, state directory deleted before a rollback.
//!
//! Every test uses its own project name; a guard removes what it created (by label) even on failure.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{text, unique_project, Cleanup};
use mcpctl::manifest::Transport;

struct Stack {
    /// Kept (with the state directory and the logs of mcpctl runs in the background) when the
    /// test fails.
    dir: common::TestDir,
    project: String,
    port: u16,
    _cleanup: Cleanup,
}

impl Stack {
    fn new(prefix: &str) -> Self {
        let project = unique_project(prefix);
        Stack {
            dir: common::TestDir::new(),
            port: common::free_port(),
            _cleanup: Cleanup {
                project: project.clone(),
            },
            project,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write the manifest for one revision: the test server's flags, transport and smoke step.
    fn revision(&self, flags: &[&str], transport: &str, smoke: &str, timeout_s: u64) {
        let runtime = common::runtime_image();
        let mut cmd = vec!["/usr/local/bin/mcp-testserver".to_string()];
        cmd.extend(flags.iter().map(|s| s.to_string()));
        let manifest = format!(
            r#"version: 1
project: {project}
retain_revisions: 3
services:
  alpha:
    port: {port}
    transport: {transport}
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: {cmd}
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: {timeout_s}s
      expect_tools: {{min: 3, include: [echo, slow_echo]}}
      smoke:
        - {smoke}
"#,
            project = self.project,
            port = self.port,
            cmd = serde_json::to_string(&cmd).unwrap(),
        );
        std::fs::write(self.dir.path().join("services.yaml"), manifest).unwrap();
    }

    fn mcpctl(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("mcpctl runs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::mcpctl());
        c.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .stdin(std::process::Stdio::null());
        c
    }

    /// Ask the serving revision over MCP (on the published 127.0.0.1 port) for echo's nonce.
    fn nonce(&self, transport: Transport) -> String {
        let base = format!("http://127.0.0.1:{}", self.port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = common::session(&base, transport, Duration::from_secs(5), &self.state())
                .await
                .unwrap_or_else(|e| panic!("MCP connect to {base}: {e}"));
            let r = s
                .call_tool("echo", serde_json::json!({"text": "who"}))
                .await
                .expect("echo");
            s.close().await;
            assert!(!r.is_error, "echo failed: {}", r.text);
            r.text
                .strip_prefix("who|")
                .unwrap_or_else(|| panic!("unexpected echo: {}", r.text))
                .to_string()
        })
    }

    /// `mcpctl <args>` in the background, its output in `<dir>/<name>.log`; killed if the test
    /// ends first.
    fn spawn(&self, args: &[&str], name: &str) -> (common::KillOnDrop, PathBuf) {
        let log = self.dir.path().join(format!("{name}.log"));
        let mut cmd = self.command(args);
        let child = common::log_to(&mut cmd, &log)
            .spawn()
            .expect("mcpctl starts");
        (common::KillOnDrop(child), log)
    }

    fn containers(&self, extra: &str) -> Vec<String> {
        let out = common::must(Command::new("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.mcp.project={}", self.project),
            "--filter",
            extra,
            "--format",
            "{{.Names}}",
        ]));
        out.split_whitespace().map(str::to_string).collect()
    }
}

const SMOKE: &str = r#"{tool: echo, args: {text: hi}, expect: {is_error: false, contains: "hi|"}}"#;

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn release_of(stack: &Stack) -> u64 {
    let out = stack.mcpctl(&["--output", "json", "status"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rev = v["services"][0]["revision"]
        .as_str()
        .expect("a serving revision")
        .to_string();
    rev[1..rev.find('-').unwrap()].parse().unwrap()
}

#[test]
fn failing_revisions_roll_back_and_rollback_to_restores_a_release() {
    if !common::docker_available("deploy_flow") {
        return;
    }
    let s = Stack::new("dep");

    // A: healthy; serves its nonce.
    s.revision(&["--nonce", "A"], "sse", SMOKE, 5);
    let plan = s.mcpctl(&["--output", "json", "plan"]);
    assert_eq!(code(&plan), 0, "{}", show(&plan));
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "create");
    let out = s.mcpctl(&["--yes", "deploy", "-m", "first"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(s.nonce(Transport::Sse), "A");
    let release_a = release_of(&s);
    let plan = s.mcpctl(&["--output", "json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "unchanged", "{v}");

    // B, C, D, E: each fails a different check; A serves again (by MCP, not container state).
    let cases: [(&[&str], &str); 4] = [
        (
            &["--nonce", "B", "--omit-tool", "slow_echo"],
            "expected tools missing: slow_echo",
        ),
        (&["--nonce", "C", "--crash-at-start"], "child exited"),
        (&["--nonce", "D", "--fail-tool", "echo"], "smoke echo"),
        (
            &["--nonce", "E", "--hang-at-start"],
            "candidate initialize: no MCP handshake",
        ),
    ];
    for (flags, why) in cases {
        s.revision(flags, "sse", SMOKE, 4);
        let out = s.mcpctl(&["--yes", "deploy"]);
        assert_eq!(code(&out), 3, "{flags:?}: {}", show(&out));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            all.contains(why),
            "{flags:?}: report should say `{why}`:\n{all}"
        );
        assert!(
            all.contains("serves again"),
            "{flags:?}: report should say what was restored:\n{all}"
        );
        assert_eq!(
            s.nonce(Transport::Sse),
            "A",
            "{flags:?}: A must serve again"
        );
        assert!(
            s.containers("label=com.mcp.phase=candidate").is_empty(),
            "no candidate left behind"
        );
    }
    assert_eq!(
        release_of(&s),
        release_a,
        "the serving revision is still A's"
    );

    // A′: a different nonce, over Streamable HTTP this time; the serving revision changes.
    s.revision(&["--nonce", "A2"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(s.nonce(Transport::Http), "A2");
    let release_a2 = release_of(&s);
    assert!(release_a2 > release_a);
    let retained = s.containers("status=exited");
    assert!(
        retained
            .iter()
            .any(|c| c.ends_with(&format!("-r{release_a}"))),
        "A is kept stopped: {retained:?}"
    );

    // rollback --to the release that deployed A: A's recorded config (SSE) serves again.
    let out = s.mcpctl(&["--yes", "rollback", "--to", &release_a.to_string()]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(s.nonce(Transport::Sse), "A");
    assert!(
        release_of(&s) > release_a2,
        "a rollback is a release of its own"
    );

    // history shows every step with its outcome.
    let out = s.mcpctl(&["--output", "json", "history", "alpha"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let steps: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "step")
        .map(|e| {
            (
                e["command"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("deploy", "ok"),
        ("deploy", "gate_failed_restored"),
        ("deploy", "gate_failed_restored"),
        ("deploy", "gate_failed_restored"),
        ("deploy", "gate_failed_restored"),
        ("deploy", "ok"),
        ("rollback", "ok"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(steps, want);
    let human = s.mcpctl(&["history"]);
    assert!(
        text(&human.stdout).contains("first"),
        "the --message is in the history:\n{}",
        show(&human)
    );
}

#[test]
fn lock_port_tty_and_engine_faults_change_nothing() {
    if !common::docker_available("deploy_faults") {
        return;
    }
    let s = Stack::new("flt");
    s.revision(&["--nonce", "A"], "http", SMOKE, 5);

    // No TTY and no --yes: refuse, with a message.
    let out = s.mcpctl(&["deploy"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(text(&out.stderr).contains("--yes"), "{}", show(&out));

    // --dry-run: the plan, nothing started.
    let out = s.mcpctl(&["--yes", "deploy", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(text(&out.stdout).contains("dry run"), "{}", show(&out));
    assert!(s.containers("label=com.mcp.managed=true").is_empty());

    // Engine unreachable: exit 1 with how to start it.
    let out = s
        .command(&["plan"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("cannot reach the Docker engine"),
        "{}",
        show(&out)
    );
    assert!(text(&out.stderr).contains("start it"), "{}", show(&out));

    // Port taken by a foreign process: nothing is started, exit 2.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", s.port)).unwrap();
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("in use by another process"),
        "{}",
        show(&out)
    );
    assert!(
        s.containers("label=com.mcp.service=alpha").is_empty(),
        "nothing was started"
    );
    drop(squatter);

    // Lock held by a live process (this test): exit 5 with who, pid, host, command and message.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = mcpctl::engine::labels::Keys::new("com.mcp");
    let engine = rt
        .block_on(mcpctl::engine::docker::DockerEngine::connect())
        .unwrap();
    let me = mcpctl::rollout::lock::LockInfo::current(
        "deploy (test holder)",
        Some("holding for a test"),
    );
    let got = rt
        .block_on(mcpctl::rollout::lock::acquire(
            &engine, &keys, &s.project, &me, false,
        ))
        .unwrap();
    assert!(got.is_ok(), "the test takes the lock");
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 5, "{}", show(&out));
    let err = text(&out.stderr);
    for needle in [
        format!("pid {}", std::process::id()),
        "deploy (test holder)".into(),
        "holding for a test".into(),
        me.host.clone(),
    ] {
        assert!(
            err.contains(&needle),
            "lock report lacks {needle:?}:\n{err}"
        );
    }
    // --force-unlock takes it over.
    let out = s.mcpctl(&["--yes", "deploy", "--force-unlock"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(s.nonce(Transport::Http), "A");
    assert!(
        s.containers("name=-lock").is_empty(),
        "the lock is released after the run"
    );

    // build: up to date now; --force rebuilds and streams the log as JSON lines.
    let out = s.mcpctl(&["--output", "json", "build"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("\"built\":false"),
        "{}",
        show(&out)
    );
    let out = s.mcpctl(&["--output", "json", "build", "--force"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "build" && l["line"].as_str().unwrap().starts_with("Step ")),
        "{}",
        show(&out)
    );
    assert_eq!(lines.last().unwrap()["images"][0]["built"], true);
}

#[test]
fn sigkill_between_start_and_switch_is_reconciled_and_rollback_survives_a_lost_state_dir() {
    if !common::docker_available("deploy_crash") {
        return;
    }
    let s = Stack::new("crs");
    s.revision(&["--nonce", "A"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    // A slow smoke step keeps the candidate in its gate long enough to kill mcpctl there.
    let slow = r#"{tool: slow_echo, args: {text: hi, delay_ms: 4000}, expect: {contains: "hi|"}}"#;
    s.revision(&["--nonce", "K"], "http", slow, 15);
    let (mut child, log) = s.spawn(&["--yes", "deploy"], "deploy-killed");
    common::wait_for_logged(
        "the candidate to run",
        Duration::from_secs(60),
        &[&log],
        || (!s.containers("label=com.mcp.phase=candidate").is_empty()).then_some(()),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.0.wait();
    assert_eq!(
        s.nonce(Transport::Http),
        "A",
        "A still serves: the switch never happened"
    );
    assert_eq!(
        s.containers("name=-lock").len(),
        1,
        "the dead run's lock is left behind"
    );

    // The next run takes over the stale lock, reconciles (removes the candidate), and deploys.
    s.revision(&["--nonce", "K"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("removed the unfinished candidate"),
        "{}",
        show(&out)
    );
    assert!(s.containers("label=com.mcp.phase=candidate").is_empty());
    assert_eq!(s.nonce(Transport::Http), "K");
    let hist = text(&s.mcpctl(&["--output", "json", "history"]).stdout);
    assert!(
        hist.lines().any(|l| l.contains("\"event\":\"reconcile\"")),
        "{hist}"
    );

    // State directory lost: history falls back to labels; rollback still works from labels and
    // retained images. With access control on (the default), the retained revision's access file
    // (secret `mcpctl_auth`: digests of the lost install key's tokens) is gone with it, so a plain
    // rollback may refuse, naming `--current-secrets`, which re-keys it with the current tokens.
    std::fs::remove_dir_all(s.state()).unwrap();
    let out = s.mcpctl(&["history"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("retained revisions from Docker labels"),
        "{}",
        show(&out)
    );
    let out = s.mcpctl(&["--yes", "rollback", "alpha"]);
    let out = if code(&out) == 2 {
        assert!(
            text(&out.stderr).contains("--current-secrets"),
            "a refusal names the re-key step: {}",
            show(&out)
        );
        s.mcpctl(&["--yes", "rollback", "alpha", "--current-secrets"])
    } else {
        out
    };
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(s.nonce(Transport::Http), "A");
}

#[test]
fn sigkill_during_the_post_switch_gate_is_finished_by_the_next_run() {
    if !common::docker_available("deploy_crash_post_switch") {
        return;
    }
    let s = Stack::new("pst");
    s.revision(&["--nonce", "A"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let release_a = release_of(&s);

    // The slow smoke step runs in both gates; kill mcpctl once the switched-to container runs.
    let slow = r#"{tool: slow_echo, args: {text: hi, delay_ms: 2500}, expect: {contains: "hi|"}}"#;
    s.revision(&["--nonce", "K"], "http", slow, 15);
    let (mut child, log) = s.spawn(&["--yes", "deploy"], "deploy-killed");
    let final_name = format!("{}-alpha-r{}", s.project, release_a + 1);
    common::wait_for_logged(
        &format!("the switched-to revision ({final_name}) to run"),
        Duration::from_secs(60),
        &[&log],
        || {
            s.containers("status=running")
                .contains(&final_name)
                .then_some(())
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.0.wait();

    // Nothing changed in the manifest, yet the next run takes over the dead run's lock and
    // re-gates the revision it switched to: it passes, so it is kept (the step is finished).
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("passes the gate"),
        "{}",
        show(&out)
    );
    assert_eq!(s.nonce(Transport::Http), "K");
    assert!(
        s.containers("name=-lock").is_empty(),
        "the lock is released"
    );
    let hist = text(&s.mcpctl(&["--output", "json", "history"]).stdout);
    assert!(hist.contains("\"event\":\"reconcile\""), "{hist}");
}

#[test]
fn stateful_replacement_logs_prune_and_down() {
    if !common::docker_available("deploy_lifecycle") {
        return;
    }
    let s = Stack::new("lif");
    let runtime = common::runtime_image();
    let write = |marker: &str, retain: u32| {
        let manifest = format!(
            r#"version: 1
project: {project}
retain_revisions: {retain}
services:
  alpha:
    port: {port}
    transport: http
    stateful: true
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, S]
    env: {{MARKER: "{marker}"}}
    volumes:
      - {{source: data, target: /data}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 5s
      expect_tools: {{include: [echo]}}
"#,
            project = s.project,
            port = s.port,
        );
        std::fs::write(s.dir.path().join("services.yaml"), manifest).unwrap();
    };
    write("one", 3);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(
        code(&out),
        0,
        "creating a stateful service needs no downtime: {}",
        show(&out)
    );

    // A stateful update is refused without --allow-downtime; nothing changes.
    write("two", 3);
    let plan = s.mcpctl(&["plan"]);
    assert!(
        text(&plan.stdout).contains("env ~MARKER"),
        "plan says what changed:\n{}",
        show(&plan)
    );
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        text(&out.stderr).contains("--allow-downtime"),
        "{}",
        show(&out)
    );
    let out = s.mcpctl(&["--yes", "deploy", "--allow-downtime"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("downtime"),
        "the downtime is stated: {}",
        show(&out)
    );
    // The volume was backed up (from the stopped container) before the replacement.
    let backups: Vec<_> = std::fs::read_dir(s.state().join("backups/alpha"))
        .expect("a backup directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        std::fs::metadata(&backups[0]).unwrap().len() >= 512,
        "a tar archive"
    );
    assert!(
        text(&out.stdout).contains(&backups[0].display().to_string()),
        "the report names the backup: {}",
        show(&out)
    );
    assert_eq!(s.nonce(Transport::Http), "S");
    assert_eq!(
        s.containers("label=com.mcp.service=alpha").len(),
        2,
        "the old revision is kept stopped"
    );

    // logs: the serving revision's container log.
    let out = s.mcpctl(&["logs", "alpha", "--tail", "50"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("bridge listening"),
        "{}",
        show(&out)
    );

    // prune with retain_revisions 1: the stopped revision and its now unused image go (same image here).
    write("two", 1);
    let out = s.mcpctl(&["--yes", "prune"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        s.containers("label=com.mcp.service=alpha").len(),
        1,
        "{}",
        show(&out)
    );
    assert_eq!(
        s.nonce(Transport::Http),
        "S",
        "prune never touches the serving revision"
    );

    // down: confirmation required; volumes survive unless --volumes.
    let out = s.mcpctl(&["down"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let out = s.mcpctl(&["--yes", "down"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(s.containers("label=com.mcp.managed=true").is_empty());
    let vols = |p: &str| {
        common::must(Command::new("docker").args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.mcp.project={p}"),
        ]))
    };
    assert_eq!(vols(&s.project).trim(), format!("{}-data", s.project));
    // Deleting data takes a backup first; with nothing serving there is none to take, so the
    // volume stays until the operator says --no-backup.
    let out = s.mcpctl(&["--yes", "down", "--volumes"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(show(&out).contains("--no-backup"), "{}", show(&out));
    assert_eq!(vols(&s.project).trim(), format!("{}-data", s.project));
    let out = s.mcpctl(&["--yes", "down", "--volumes", "--no-backup"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(vols(&s.project).trim(), "");
}

#[test]
fn secrets_are_mounted_fingerprinted_and_never_shown() {
    if !common::docker_available("deploy_secrets") {
        return;
    }
    let s = Stack::new("sec");
    let runtime = common::runtime_image();
    let var = format!("MCPCTL_TEST_SECRET_{}", s.project.to_uppercase());
    let manifest = format!(
        r#"version: 1
project: {project}
services:
  alpha:
    port: {port}
    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, Z]
    secrets:
      API_TOKEN: {{from_env: {var}}}
    health: {{start_period: 1s, interval: 1s, timeout: 5s, expect_tools: {{include: [echo]}}}}
"#,
        project = s.project,
        port = s.port,
    );
    std::fs::write(s.dir.path().join("services.yaml"), manifest).unwrap();
    let value = "s3cr3t-value-for-the-test";

    // Missing: refused before anything changes.
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(text(&out.stderr).contains(&var), "{}", show(&out));

    let out = s
        .command(&["--yes", "deploy"])
        .env(&var, value)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", show(&out));

    // The host file (one per value, `NAME@<hmac>`): 0400, owned by the container user, holding
    // the value.
    use std::os::unix::fs::MetadataExt;
    let (auth_files, files): (Vec<_>, Vec<_>) = std::fs::read_dir(s.state().join("secrets/alpha"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .partition(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("mcpctl_auth@")
        });
    // The bridge's access file (token digests, docs/contracts.md "Access control") is mounted as
    // a secret too.
    assert_eq!(auth_files.len(), 1, "{auth_files:?}");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = files[0].clone();
    assert!(
        file.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("API_TOKEN@"),
        "{file:?}"
    );
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o400, 10001));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), value);
    let key = std::fs::metadata(s.state().join("install.key")).unwrap();
    assert_eq!(key.mode() & 0o777, 0o600);

    // Mounted read-only at /run/secrets/API_TOKEN in the container.
    let container = s.containers("label=com.mcp.service=alpha")[0].clone();
    let tar = Command::new("docker")
        .args(["cp", &format!("{container}:/run/secrets/API_TOKEN"), "-"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tar.stdout).contains(value),
        "the secret is in the container"
    );
    let mounts = common::must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{json .Mounts}}",
        &container,
    ]));
    assert!(
        mounts.contains("\"Destination\":\"/run/secrets/API_TOKEN\"")
            && mounts.contains("\"RW\":false"),
        "{mounts}"
    );

    // plan: an HMAC per secret, rotation by name; the value nowhere in plan, ledger or labels.
    let plan = s
        .command(&["--output", "json", "plan"])
        .env(&var, value)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "unchanged", "{v}");
    let hmac = v["actions"][0]["secrets"]["API_TOKEN"]
        .as_str()
        .expect("an HMAC")
        .to_string();
    assert_eq!(hmac.len(), 12);
    let rotated = s
        .command(&["--output", "json", "plan"])
        .env(&var, "another-value")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&rotated.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "update");
    assert!(
        v["actions"][0]["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("secret API_TOKEN rotated"),
        "{v}"
    );
    let labels = common::must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{json .Config.Labels}}",
        &container,
    ]));
    let ledger = std::fs::read_to_string(s.state().join("ledger.jsonl")).unwrap();
    for (what, body) in [
        ("plan", text(&plan.stdout)),
        ("rotated plan", text(&rotated.stdout)),
        ("labels", labels),
        ("ledger", ledger),
        ("deploy output", show(&out)),
    ] {
        assert!(!body.contains(value), "{what} contains the secret value");
    }
}

#[test]
fn ctrl_c_during_the_gate_removes_the_candidate_and_exits_130() {
    if !common::docker_available("deploy_interrupt") {
        return;
    }
    let s = Stack::new("int");
    s.revision(&["--nonce", "A"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let slow = r#"{tool: slow_echo, args: {text: hi, delay_ms: 8000}, expect: {contains: "hi|"}}"#;
    s.revision(&["--nonce", "I"], "http", slow, 15);
    let (mut child, log) = s.spawn(&["--yes", "deploy"], "deploy-interrupted");
    common::wait_for_logged(
        "the candidate to run",
        Duration::from_secs(60),
        &[&log],
        || (!s.containers("label=com.mcp.phase=candidate").is_empty()).then_some(()),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = common::wait_for_logged(
        "the interrupted deploy to exit",
        Duration::from_secs(60),
        &[&log],
        || child.0.try_wait().unwrap(),
    );
    assert_eq!(
        status.code(),
        Some(130),
        "{status}\n{}",
        common::log_tail(&log, 60)
    );
    assert!(
        s.containers("label=com.mcp.phase=candidate").is_empty(),
        "candidate removed"
    );
    assert!(s.containers("name=-lock").is_empty(), "lock released");
    assert_eq!(s.nonce(Transport::Http), "A");
    let hist = text(&s.mcpctl(&["--output", "json", "history"]).stdout);
    assert!(hist.contains("\"outcome\":\"interrupted\""), "{hist}");
}

/// Ask the serving revision over MCP what its server sees in environment variable `name` (the
/// bridge exports each `/run/secrets/NAME` file into it), as mcpctl (the current install key).
fn server_env(stack: &Stack, name: &str) -> String {
    server_env_as(stack, name, &common::mcpctl_token(&stack.state()))
}

/// [`server_env`] sending `token` (e.g. the token of an install key that was lost since).
fn server_env_as(stack: &Stack, name: &str, token: &str) -> String {
    let base = format!("http://127.0.0.1:{}", stack.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = common::mcp_options(Duration::from_secs(5), Some(token));
        let mut s = mcpctl::mcp::Session::connect_with(&base, Transport::Http, &opts)
            .await
            .unwrap_or_else(|e| panic!("MCP connect to {base}: {e}"));
        let r = s
            .call_tool("getenv", serde_json::json!({"name": name}))
            .await
            .expect("getenv");
        s.close().await;
        assert!(!r.is_error, "getenv failed: {}", r.text);
        r.text
    })
}

#[test]
fn rollback_across_a_secret_change_mounts_the_value_the_revision_was_deployed_with() {
    if !common::docker_available("deploy_secret_rollback") {
        return;
    }
    let s = Stack::new("srb");
    let runtime = common::runtime_image();
    let var = format!("MCPCTL_TEST_SECRET_{}", s.project.to_uppercase());
    let manifest = format!(
        r#"version: 1
project: {project}
retain_revisions: 3
services:
  alpha:
    port: {port}
    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, Z]
    secrets:
      API_TOKEN: {{from_env: {var}}}
    health: {{start_period: 1s, interval: 1s, timeout: 5s, expect_tools: {{include: [echo]}}}}
"#,
        project = s.project,
        port = s.port,
    );
    std::fs::write(s.dir.path().join("services.yaml"), manifest).unwrap();
    let with = |value: &str, args: &[&str]| s.command(args).env(&var, value).output().unwrap();
    let hmac_label = |release: u64| {
        common::must(Command::new("docker").args([
            "inspect",
            "-f",
            "{{index .Config.Labels \"com.mcp.secrets-hmac\"}}",
            &format!("{}-alpha-r{release}", s.project),
        ]))
        .trim()
        .to_string()
    };

    // v1, then v2: a rotation is an update; each revision sees its own value.
    let out = with("value-one", &["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r1 = release_of(&s);
    assert_eq!(server_env(&s, "API_TOKEN"), "value-one");
    let out = with("value-two", &["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r2 = release_of(&s);
    assert!(r2 > r1);
    assert_eq!(server_env(&s, "API_TOKEN"), "value-two");
    assert_ne!(hmac_label(r1), hmac_label(r2));

    // Rollback (the shell still holds v2): r1 is restored with v1, and its label says so.
    let out = with("value-two", &["--yes", "rollback", "alpha"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r3 = release_of(&s);
    assert!(r3 > r2, "a rollback is a release of its own");
    assert_eq!(
        server_env(&s, "API_TOKEN"),
        "value-one",
        "the restored revision mounts the value it was deployed with"
    );
    assert_eq!(hmac_label(r3), hmac_label(r1));

    // State directory lost (values and install key): going back to r2 cannot know v2 was its
    // value, so it refuses, naming the secret and the re-key step; nothing changes. (r3 still
    // accepts only the tokens of the lost key: keep mcpctl's to ask it.)
    let lost_key_token = common::mcpctl_token(&s.state());
    std::fs::remove_dir_all(s.state()).unwrap();
    let out = with("value-two", &["--yes", "rollback", "alpha"]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = text(&out.stderr);
    for want in ["secret `API_TOKEN`", "is gone", "--current-secrets"] {
        assert!(err.contains(want), "missing `{want}`: {}", show(&out));
    }
    assert_eq!(release_of(&s), r3);
    assert_eq!(server_env_as(&s, "API_TOKEN", &lost_key_token), "value-one");

    // Re-key: r2's config with the current value; the label records the new fingerprint.
    let out = with(
        "value-two",
        &["--yes", "rollback", "alpha", "--current-secrets"],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r4 = release_of(&s);
    assert!(r4 > r3);
    assert_eq!(server_env(&s, "API_TOKEN"), "value-two");
    assert!(
        text(&out.stderr).contains("mounting the current one"),
        "{}",
        show(&out)
    );
    assert_ne!(
        hmac_label(r4),
        hmac_label(r2),
        "fingerprints under the new key"
    );
    let all = format!("{}{}", show(&out), hmac_label(r4));
    assert!(!all.contains("value-two"), "the value is never shown");
}

#[test]
fn concurrent_starts_on_a_stale_lock_take_it_over_exactly_once() {
    if !common::docker_available("deploy_lock_race") {
        return;
    }
    let s = Stack::new("lkr");
    s.revision(&["--nonce", "A"], "http", SMOKE, 5);
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    // A lock left by a run of this host that is gone (a pid above any pid_max), written by the
    // code mcpctl takes the lock with.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = mcpctl::engine::labels::Keys::new("com.mcp");
    let engine = rt
        .block_on(mcpctl::engine::docker::DockerEngine::connect())
        .unwrap();
    let dead = mcpctl::rollout::lock::LockInfo {
        pid: 999_999_999,
        ..mcpctl::rollout::lock::LockInfo::current("deploy (killed)", None)
    };
    rt.block_on(mcpctl::rollout::lock::acquire(
        &engine, &keys, &s.project, &dead, false,
    ))
    .unwrap()
    .expect("the lock is free");
    assert_eq!(s.containers("name=-lock").len(), 1);

    // Four runs at once: each sees the stale lock; exactly one takes it over (and reconciles);
    // the others find it held (exit 5) or, once released, nothing to do (exit 0).
    let runs: Vec<std::process::Child> = (0..4)
        .map(|_| {
            s.command(&["--yes", "deploy"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("mcpctl starts")
        })
        .collect();
    let outs: Vec<Output> = runs
        .into_iter()
        .map(|c| c.wait_with_output().expect("mcpctl ends"))
        .collect();
    let all = outs.iter().map(show).collect::<Vec<_>>().join("\n---\n");
    for out in &outs {
        assert!(
            [0, 5].contains(&code(out)),
            "every run succeeds or finds the lock held:\n{all}"
        );
    }
    let took_over = outs
        .iter()
        .filter(|o| text(&o.stderr).contains("taking over from a run that is gone"))
        .count();
    assert_eq!(took_over, 1, "exactly one run takes the lock over:\n{all}");
    assert!(
        s.containers("name=-lock").is_empty(),
        "no lock (nor set-aside lock) is left:\n{all}"
    );
    assert_eq!(
        s.containers("label=com.mcp.service=alpha").len(),
        1,
        "one revision of alpha:\n{all}"
    );
    assert_eq!(release_of(&s), 1, "the first release still serves");
    assert_eq!(s.nonce(Transport::Http), "A");
}

/// Issue 17 item 4: the manifest's `tools` policy is enforced by the deployed bridge (a denied
/// tool is neither listed nor callable, and the child never sees the call), the gate passes on the
/// filtered list, and `plan` names a policy change.
#[test]
fn a_denied_tool_is_hidden_and_refused_and_plan_names_a_policy_change() {
    if !common::docker_available("deploy_tools_policy") {
        return;
    }
    let s = Stack::new("pol");
    let runtime = common::runtime_image();
    let write = |policy: &str| {
        let manifest = format!(
            r#"version: 1
project: {project}
services:
  alpha:
    port: {port}
    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, P]
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 10s
      expect_tools: {{include: [echo]}}
      smoke:
        - {SMOKE}
    tools: {policy}
"#,
            project = s.project,
            port = s.port,
        );
        std::fs::write(s.dir.path().join("services.yaml"), manifest).unwrap();
    };

    write("{deny: [slow_echo]}");
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "{}", show(&out));

    let base = format!("http://127.0.0.1:{}", s.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut m = common::session(&base, Transport::Http, Duration::from_secs(5), &s.state())
            .await
            .unwrap_or_else(|e| panic!("MCP connect to {base}: {e}"));
        let names: Vec<String> = m
            .list_tools()
            .await
            .expect("tools/list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.iter().any(|n| n == "echo"), "{names:?}");
        assert!(!names.iter().any(|n| n == "slow_echo"), "{names:?}");
        match m
            .call_tool("slow_echo", serde_json::json!({"text": "x"}))
            .await
        {
            Err(mcpctl::mcp::McpError::Rpc { code, message }) => {
                assert_eq!(code, -32602);
                assert_eq!(
                    message,
                    "tool `slow_echo` is not allowed on this service (manifest `tools` policy)"
                );
            }
            other => panic!("slow_echo must be refused by the bridge, got {other:?}"),
        }
        let r = m
            .call_tool("echo", serde_json::json!({"text": "ok"}))
            .await
            .expect("echo is still allowed");
        assert!(!r.is_error, "{}", r.text);
        m.close().await;
    });
    // The refusal is counted by the bridge (its /metrics on the published port).
    let metrics = rt.block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    });
    assert!(
        metrics.contains("mcp_bridge_tool_denied_total{tool=\"slow_echo\"} 1"),
        "{metrics}"
    );

    // Unchanged manifest: nothing to do; a different policy: plan names it.
    let plan = s.mcpctl(&["--output", "json", "plan"]);
    let v: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "unchanged", "{v}");
    write("{allow: [echo, getenv]}");
    let plan = s.mcpctl(&["plan"]);
    assert_eq!(code(&plan), 0, "{}", show(&plan));
    assert!(
        text(&plan.stdout).contains("tools policy deny [slow_echo] → allow [echo, getenv]"),
        "plan says what changed:\n{}",
        show(&plan)
    );
}
