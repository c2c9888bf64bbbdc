//! Engine and MCP-client tier: the one MCP client of mcpctl against a real bridge (both
//! transports), and the bollard engine's build failure report (the tail of the build log).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcpctl::engine::context::BuildContext;
use mcpctl::engine::docker::DockerEngine;
use mcpctl::engine::{Engine, EngineError};
use mcpctl::manifest::{Health, Transport};
use mcpctl::mcp::Session;

/// A bridge on 127.0.0.1 (port chosen by the OS, read from its log), killed when dropped; its
/// log is in a directory kept when the test fails.
struct Bridge(Child, u16, common::TestDir);

impl Bridge {
    fn log(&self) -> std::path::PathBuf {
        self.2.path().join("bridge.log")
    }

    /// The tail of the bridge's log, for failure messages.
    fn tail(&self) -> String {
        common::log_tail(&self.log(), 40)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bridge(flags: &[&str]) -> Bridge {
    bridge_env(flags, &[])
}

fn bridge_env(flags: &[&str], env: &[(&str, &str)]) -> Bridge {
    let dir = common::TestDir::new();
    let log = dir.path().join("bridge.log");
    let mut cmd = Command::new(common::mcpctl());
    cmd.envs(env.iter().copied())
        .env("MCPCTL_LOG", "info")
        .args(["bridge", "--listen", "127.0.0.1:0", "--"])
        .arg(common::testserver())
        .args(flags)
        .stdin(Stdio::null());
    let child = common::log_to(&mut cmd, &log).spawn().unwrap();
    let mut b = Bridge(child, 0, dir);
    b.1 = common::wait_for_logged(
        "the bridge to listen",
        Duration::from_secs(20),
        &[&log],
        || {
            if let Some(status) = b.0.try_wait().unwrap() {
                panic!(
                    "the bridge exited ({status})\n{}",
                    common::log_tail(&log, 40)
                );
            }
            common::logged_bridge_port(&log)
        },
    );
    b
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn client_speaks_both_transports_to_the_bridge() {
    let b = bridge(&["--nonce", "N1"]);
    let base = format!("http://127.0.0.1:{}", b.1);
    rt().block_on(async {
        for transport in [Transport::Sse, Transport::Http] {
            // The bridge starts asynchronously: retry the connect within a deadline.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut s = loop {
                match Session::connect(&base, transport, Duration::from_secs(5)).await {
                    Ok(s) => break s,
                    Err(e) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "{transport:?}: {e}\n{}",
                            b.tail()
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            assert_eq!(s.server_info["name"], "mcp-testserver", "{transport:?}");
            let tools = s.list_tools().await.unwrap();
            assert!(tools.iter().any(|t| t.name == "echo"), "{transport:?}");
            let r = s
                .call_tool("echo", serde_json::json!({"text": "x"}))
                .await
                .unwrap();
            assert_eq!(
                (r.is_error, r.text.as_str()),
                (false, "x|N1"),
                "{transport:?}"
            );
            s.close().await;
        }
    });
}

#[test]
fn gate_reports_the_failing_check() {
    let b = bridge(&["--fail-tool", "echo"]);
    let base = format!("http://127.0.0.1:{}", b.1);
    let health: Health = serde_yaml_ng::from_str(
        "timeout: 10s\nexpect_tools: {include: [echo]}\nsmoke: [{tool: echo, args: {text: hi}, expect: {contains: 'hi|'}}]",
    )
    .unwrap();
    let report = rt().block_on(mcpctl::health::gate::run(
        &base,
        Transport::Http,
        None,
        &health,
        None,
        std::time::Instant::now() + health.timeout,
    ));
    assert!(!report.passed, "{report:?}");
    let f = report.failure().unwrap();
    assert_eq!(f.name, "smoke echo", "{report:?}\n{}", b.tail());
    assert!(f.detail.contains("isError was true"), "{}", f.detail);
    assert!(
        report.schema_digest.is_some(),
        "tools/list ran before the smoke step"
    );

    // Missing expected tool: fails at tools/list and names it.
    let health: Health =
        serde_yaml_ng::from_str("timeout: 10s\nexpect_tools: {include: [echo, nosuchtool]}")
            .unwrap();
    let report = rt().block_on(mcpctl::health::gate::run(
        &base,
        Transport::Sse,
        None,
        &health,
        None,
        std::time::Instant::now() + health.timeout,
    ));
    let f = report.failure().unwrap();
    assert_eq!(f.name, "tools/list", "{report:?}\n{}", b.tail());
    assert!(f.detail.contains("nosuchtool"), "{}", f.detail);
}

#[test]
fn gate_times_out_on_a_server_that_never_answers() {
    let b = bridge(&["--hang-at-start"]);
    let base = format!("http://127.0.0.1:{}", b.1);
    let health: Health = serde_yaml_ng::from_str("timeout: 2s").unwrap();
    let started = std::time::Instant::now();
    let report = rt().block_on(mcpctl::health::gate::run(
        &base,
        Transport::Http,
        None,
        &health,
        None,
        started + health.timeout,
    ));
    assert!(!report.passed);
    assert_eq!(
        report.failure().unwrap().name,
        "initialize",
        "{report:?}\n{}",
        b.tail()
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the deadline holds: {:?}",
        started.elapsed()
    );
}

#[test]
fn build_failure_reports_the_last_lines_of_the_log() {
    if !common::docker_available("engine_build_failure") {
        return;
    }
    let project = common::unique_project("bld");
    // Removes what the failed build left (by the project's label only), even if the test panics.
    let _cleanup = common::Cleanup {
        project: project.clone(),
    };
    let tag = format!("{project}/broken:1");
    let mut ctx = BuildContext::new();
    ctx.add_bytes(
        "Dockerfile",
        format!(
            "FROM {}\nRUN [\"/nonexistent-binary\"]\n",
            common::runtime_image()
        ),
        false,
    );
    let labels = BTreeMap::from([
        ("com.mcp.managed".to_string(), "true".to_string()),
        ("com.mcp.project".to_string(), project.clone()),
    ]);
    let r = rt().block_on(async {
        let engine = DockerEngine::connect().await.unwrap();
        let mut lines = Vec::new();
        let r = engine
            .build_image(ctx.to_tar().unwrap(), &tag, &labels, &mut |l| {
                lines.push(l.to_string())
            })
            .await;
        (r, lines, engine.image_id(&tag).await.unwrap())
    });
    match r {
        (Err(EngineError::Build { message, tail }), lines, None) => {
            assert!(
                message.contains("nonexistent-binary")
                    || message.contains("returned a non-zero code"),
                "{message}"
            );
            assert!(
                tail.iter().any(|l| l.contains("RUN")),
                "the tail shows the failing step: {tail:?}"
            );
            assert!(!lines.is_empty(), "log lines were streamed");
        }
        (other, _, id) => panic!(
            "expected a build failure and no image, got {:?} / {id:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn client_sends_the_bearer_token_when_given_one() {
    let b = bridge_env(&[], &[("MCPCTL_BRIDGE_TOKEN", "tok-123")]);
    let base = format!("http://127.0.0.1:{}", b.1);
    rt().block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for transport in [Transport::Http, Transport::Sse] {
            // Without the token: 401 (retry while the bridge starts listening).
            loop {
                match Session::connect(&base, transport, Duration::from_secs(5)).await {
                    Err(mcpctl::mcp::McpError::Http { status, .. }) => {
                        assert_eq!(status, 401, "{transport:?}\n{}", b.tail());
                        break;
                    }
                    Err(e) => assert!(
                        std::time::Instant::now() < deadline,
                        "{transport:?}: {e}\n{}",
                        b.tail()
                    ),
                    Ok(_) => panic!("{transport:?}: connected without the token"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let opts = mcpctl::mcp::Options {
                timeout: Duration::from_secs(5),
                bearer_token: Some("tok-123".into()),
            };
            let mut s = Session::connect_with(&base, transport, &opts)
                .await
                .unwrap();
            assert!(!s.list_tools().await.unwrap().is_empty(), "{transport:?}");
            s.close().await;
        }
    });
}
