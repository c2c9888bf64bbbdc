//! Engine and MCP-client tier: the one MCP client of mcpctl against a real bridge (both
//! transports), and the bollard engine's build failure report (the tail of the build log).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mcpctl::engine::context::BuildContext;
use mcpctl::engine::docker::DockerEngine;
use mcpctl::engine::{Engine, EngineError};
use mcpctl::health::Session;
use mcpctl::manifest::{Health, Transport};

struct Bridge(Child, u16);

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
    let port = common::free_port();
    let child = Command::new(common::mcpctl())
        .envs(env.iter().copied())
        .args(["bridge", "--listen", &format!("127.0.0.1:{port}"), "--"])
        .arg(common::testserver())
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Bridge(child, port)
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
                        assert!(std::time::Instant::now() < deadline, "{transport:?}: {e}");
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
        &health,
        None,
        std::time::Instant::now() + health.timeout,
    ));
    assert!(!report.passed, "{report:?}");
    let f = report.failure().unwrap();
    assert_eq!(f.name, "smoke echo", "{report:?}");
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
        &health,
        None,
        std::time::Instant::now() + health.timeout,
    ));
    let f = report.failure().unwrap();
    assert_eq!(f.name, "tools/list");
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
        &health,
        None,
        started + health.timeout,
    ));
    assert!(!report.passed);
    assert_eq!(report.failure().unwrap().name, "initialize", "{report:?}");
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
    // Remove dangling leftovers of the failed build (labelled with the project).
    let _ = Command::new("sh")
        .args(["-c", &format!("docker rm -f $(docker ps -aq --filter label=com.mcp.project={project}) 2>/dev/null; docker rmi -f $(docker images -aq --filter label=com.mcp.project={project}) 2>/dev/null")])
        .output();
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
                    Err(mcpctl::health::McpError::Http { status, .. }) => {
                        assert_eq!(status, 401, "{transport:?}");
                        break;
                    }
                    Err(e) => assert!(std::time::Instant::now() < deadline, "{transport:?}: {e}"),
                    Ok(_) => panic!("{transport:?}: connected without the token"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let opts = mcpctl::health::Options {
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
