//! Kill-anywhere tier, on the real engine: `MCPCTL_FAULT=kill@<point>` makes mcpctl SIGKILL
//! itself at one step boundary of a release (`mcpctl::rollout::fault::POINTS`). For every point a
//! release passes — deploy and rollback, with and without the edge — a run is killed there, then
//! the same command runs again, and the stack must have converged to one truth:
//! - exactly one running revision of the service, the one `status` shows, and (with the edge) the
//!   one the edge routes to; it answers an MCP call through the published port with the nonce the
//!   command asked for;
//! - no candidate left, no lock left, no retained revision lost;
//! - the ledger closes every release it opened.
//!
//! SIGTERM (`term@<point>`) stops at the next safe point: the step in progress finishes or
//! reverts, the lock is released, exit 130.
//!
//! Figures: `KILL …` lines (kill points, time to converge), with `--nocapture`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{text, unique_project, Cleanup};
use mcpctl::manifest::Transport;
use mcpctl::rollout::fault::POINTS;
use serde_json::Value;

struct Stack {
    dir: common::TestDir,
    project: String,
    port: u16,
    /// The edge's admin port, when the edge is enabled.
    admin: Option<u16>,
    _cleanup: Cleanup,
}

impl Stack {
    fn new(prefix: &str, edge: bool) -> Self {
        let project = unique_project(prefix);
        Stack {
            dir: common::TestDir::new(),
            port: common::free_port(),
            admin: edge.then(common::free_port),
            _cleanup: Cleanup {
                project: project.clone(),
            },
            project,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn revision(&self, nonce: &str) {
        let runtime = common::runtime_image();
        let cmd =
            serde_json::to_string(&["/usr/local/bin/mcp-testserver", "--nonce", nonce]).unwrap();
        let edge = match self.admin {
            Some(admin) => format!(
                "bases:\n  runtime: {{suite: bookworm, image: \"{runtime}\"}}\nedge: {{enabled: true, admin_port: {admin}, drain_timeout: 1s}}\n"
            ),
            None => String::new(),
        };
        // Behind the edge, the service runs two replicas: the kill points include the rolling
        // replacement's, and the truth includes the route's replicas.
        let replicas = if self.admin.is_some() {
            "    replicas: 2\n"
        } else {
            ""
        };
        let manifest = format!(
            r#"version: 1
project: {project}
retain_revisions: 50
{edge}services:
  alpha:
    port: {port}
{replicas}    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: {cmd}
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 10s
      expect_tools: {{min: 3, include: [echo]}}
      smoke:
        - {{tool: echo, args: {{text: hi}}, expect: {{is_error: false, contains: "hi|"}}}}
"#,
            project = self.project,
            port = self.port,
        );
        std::fs::write(self.dir.path().join("services.yaml"), manifest).unwrap();
    }

    fn mcpctl(&self, args: &[&str], fault: Option<&str>) -> Output {
        let mut c = Command::new(common::mcpctl());
        c.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .env_remove("MCPCTL_FAULT")
            .stdin(std::process::Stdio::null());
        if let Some(f) = fault {
            c.env("MCPCTL_FAULT", f);
        }
        c.output().expect("mcpctl runs")
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.mcpctl(args, None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "mcpctl {args:?}: {}",
            show(&out)
        );
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.ok(&a).stdout).expect("JSON output")
    }

    /// Containers of this project matching a `docker ps` filter.
    fn containers(&self, filter: &str) -> Vec<String> {
        let out = common::must(Command::new("docker").args([
            "ps",
            "-a",
            "--filter",
            &format!("label=com.mcp.project={}", self.project),
            "--filter",
            filter,
            "--format",
            "{{.Names}}",
        ]));
        out.split_whitespace().map(str::to_string).collect()
    }

    fn nonce(&self) -> Result<String, String> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = common::session(
                &base,
                Transport::Http,
                Duration::from_secs(5),
                &self.state(),
            )
            .await
            .map_err(|e| format!("MCP connect to {base}: {e}"))?;
            let r = s
                .call_tool("echo", serde_json::json!({"text": "who"}))
                .await
                .map_err(|e| format!("echo: {e}"));
            s.close().await;
            let r = r?;
            r.text
                .strip_prefix("who|")
                .map(str::to_string)
                .ok_or_else(|| format!("unexpected echo: {}", r.text))
        })
    }

    /// The one truth after a run: see the module comment. `keep`: containers that must still exist.
    fn assert_converged(&self, what: &str, nonce: &str, keep: &[String]) {
        let ctx = |m: &str| format!("{what}: {m}\n{}", common::container_report(&[]));
        assert!(
            self.containers("label=com.mcp.phase=candidate").is_empty(),
            "{}",
            ctx("a candidate is left")
        );
        assert!(
            self.containers(&format!("name=^{}-lock$", self.project))
                .is_empty(),
            "{}",
            ctx("the lock is left")
        );
        // Revisions' own containers are `<project>-alpha-r<N>`, their replicas `…-r<N>-<n>`.
        let prefix = format!("{}-alpha-r", self.project);
        let revision_of = |n: &str| -> Option<(bool, String)> {
            let rest = n.strip_prefix(&prefix)?;
            let (release, replica) = match rest.split_once('-') {
                Some((r, k)) => (r, Some(k)),
                None => (rest, None),
            };
            release.parse::<u64>().ok()?;
            Some((replica.is_some(), n.to_string()))
        };
        let (replicas, running): (Vec<_>, Vec<_>) = self
            .containers("status=running")
            .iter()
            .filter_map(|n| revision_of(n))
            .partition(|(replica, _)| *replica);
        let running: Vec<String> = running.into_iter().map(|(_, n)| n).collect();
        let replicas: Vec<String> = replicas.into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            running.len(),
            1,
            "{}",
            ctx(&format!("running revisions: {running:?}"))
        );
        let status = self.json(&["status"]);
        assert_eq!(
            status["services"][0]["container"].as_str(),
            Some(running[0].as_str()),
            "{}",
            ctx(&format!("status shows another revision: {status}"))
        );
        if self.admin.is_some() {
            let edge = self.json(&["edge", "status"]);
            let upstream = edge["routes"]["alpha"]["upstream"]
                .as_str()
                .unwrap_or_default();
            assert!(
                upstream.contains(&format!("//{}:", running[0])),
                "{}",
                ctx(&format!(
                    "the edge routes to {upstream}, {} runs",
                    running[0]
                ))
            );
            // Its one other replica runs, and the route balances over exactly the two.
            let want = format!("{}-2", running[0]);
            assert_eq!(
                replicas,
                std::slice::from_ref(&want),
                "{}",
                ctx("running replicas")
            );
            let routed: Vec<&str> = edge["routes"]["alpha"]["replicas"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(
                routed,
                [format!("http://{want}:8080")],
                "{}",
                ctx("the route's replicas")
            );
        } else {
            assert!(replicas.is_empty(), "{}", ctx("replicas without the edge"));
        }
        assert_eq!(
            self.nonce().as_deref(),
            Ok(nonce),
            "{}",
            ctx("the wrong revision answers")
        );
        let all = self.containers("label=com.mcp.service=alpha");
        for k in keep {
            assert!(
                all.contains(k),
                "{}",
                ctx(&format!("retained revision {k} was lost"))
            );
        }
        // The ledger closes every release it opened.
        let hist = text(&self.ok(&["--output", "json", "history"]).stdout);
        let entries: Vec<Value> = hist
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let opened: std::collections::BTreeSet<u64> = entries
            .iter()
            .filter(|e| e["event"] == "step" || e["event"] == "route")
            .filter_map(|e| e["release"].as_u64())
            .collect();
        for n in opened {
            assert!(
                entries
                    .iter()
                    .any(|e| e["event"] == "release" && e["release"].as_u64() == Some(n)),
                "{}",
                ctx(&format!(
                    "release {n} has steps but no release line:\n{hist}"
                ))
            );
        }
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?} signal {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        out.status.signal(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The points a release of one service passes in this mode.
fn points(edge: bool) -> Vec<&'static str> {
    POINTS
        .iter()
        .copied()
        .filter(|p| match *p {
            "previous-stopped" => !edge,
            "route-switched" | "replica-routed" => edge,
            _ => true,
        })
        .collect()
}

fn release_of(s: &Stack) -> u64 {
    let v = s.json(&["status"]);
    let c = v["services"][0]["container"]
        .as_str()
        .expect("serving")
        .to_string();
    c.rsplit("-r").next().unwrap().parse().unwrap()
}

/// Kill `command` at every point, run it again, check the truth; print the figures.
fn matrix(edge: bool, rollback: bool) {
    let mode = if edge { "edge" } else { "classic" };
    let command = if rollback { "rollback" } else { "deploy" };
    let s = Stack::new(&format!("k{}{}", &mode[..1], &command[..1]), edge);
    s.revision("A");
    s.ok(&["--yes", "deploy"]);
    let a = release_of(&s);
    s.revision("B");
    s.ok(&["--yes", "deploy"]);
    let b = release_of(&s);
    let keep = vec![
        format!("{}-alpha-r{a}", s.project),
        format!("{}-alpha-r{b}", s.project),
    ];
    let mut converge = Vec::new();
    let points = points(edge);
    for (i, point) in points.iter().enumerate() {
        let (args, nonce): (Vec<String>, String) = if rollback {
            // Alternate between A and B so that every rollback has something to do.
            let (to, n) = if i % 2 == 0 { (a, "A") } else { (b, "B") };
            (
                vec![
                    "--yes".into(),
                    "rollback".into(),
                    "--to".into(),
                    to.to_string(),
                ],
                n.into(),
            )
        } else {
            let n = format!("K{i}");
            s.revision(&n);
            (vec!["--yes".into(), "deploy".into()], n)
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let what = format!("{mode} {command} killed at {point}");
        let out = s.mcpctl(&args, Some(&format!("kill@{point}")));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{what}: not killed: {}",
            show(&out)
        );
        assert!(
            text(&out.stderr).contains(&format!("fault injection: SIGKILL at {point}")),
            "{what}: {}",
            show(&out)
        );
        let t = Instant::now();
        let out = s.ok(&args);
        converge.push(t.elapsed());
        assert!(
            text(&out.stderr).contains("taking over from a run that is gone"),
            "{what}: the next run did not take over the dead run's lock: {}",
            show(&out)
        );
        s.assert_converged(&what, &nonce, &keep);
    }
    converge.sort();
    println!(
        "KILL {mode} {command}: {} kill points, each converged by the next run: median {} ms, max {} ms",
        points.len(),
        converge[converge.len() / 2].as_millis(),
        converge.last().unwrap().as_millis()
    );
}

#[test]
fn deploy_killed_at_every_point_converges() {
    if !common::docker_available("kill_deploy") {
        return;
    }
    matrix(false, false);
}

#[test]
fn rollback_killed_at_every_point_converges() {
    if !common::docker_available("kill_rollback") {
        return;
    }
    matrix(false, true);
}

#[test]
fn deploy_through_the_edge_killed_at_every_point_converges() {
    if !common::docker_available("kill_edge_deploy") {
        return;
    }
    matrix(true, false);
}

#[test]
fn rollback_through_the_edge_killed_at_every_point_converges() {
    if !common::docker_available("kill_edge_rollback") {
        return;
    }
    matrix(true, true);
}

#[test]
fn sigterm_stops_at_the_next_safe_point() {
    if !common::docker_available("kill_sigterm") {
        return;
    }
    let s = Stack::new("kterm", false);
    s.revision("A");
    s.ok(&["--yes", "deploy"]);
    let a = format!("{}-alpha-r{}", s.project, release_of(&s));

    // During the candidate's gate: the candidate is removed, A keeps serving.
    s.revision("B");
    let out = s.mcpctl(&["--yes", "deploy"], Some("term@candidate-started"));
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(text(&out.stderr).contains("fault injection: SIGTERM at candidate-started"));
    s.assert_converged(
        "SIGTERM during the candidate gate",
        "A",
        std::slice::from_ref(&a),
    );

    // After the switch began: the step finishes (B serves, verified), then the run stops.
    let out = s.mcpctl(&["--yes", "deploy"], Some("term@previous-stopped"));
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(text(&out.stderr).contains("fault injection: SIGTERM at previous-stopped"));
    s.assert_converged("SIGTERM after the previous revision stopped", "B", &[a]);
    let out = s.ok(&["--yes", "deploy"]);
    assert!(
        text(&out.stdout).contains("nothing to deploy"),
        "the interrupted step was finished: {}",
        show(&out)
    );
}
