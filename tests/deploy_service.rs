//! The product path for a real packaged service: `mcpctl bases build` → `mcpctl vendor` →
//! `mcpctl deploy` of the default manifest's `fetch` (offline image, MCP gate) → an MCP call
//! through its published 127.0.0.1 port → `mcpctl down`. The manifest is the default one, cut down
//! to `fetch` with a per-run project name and a free port.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{must, text};

struct Down {
    dir: std::path::PathBuf,
    project: String,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(common::mcpctl())
            .args(["--state-dir", "state", "down", "--yes"])
            .current_dir(&self.dir)
            .output();
        // Images this run built, and the project's lock image (the base and vendored packages
        // are shared caches and stay).
        for repo in ["fetch", "mcpctl-lock"] {
            if let Ok(out) = Command::new("docker")
                .args(["images", "-q", &format!("{}/{repo}", self.project)])
                .output()
            {
                for id in text(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rmi", "-f", id]).output();
                }
            }
        }
    }
}

fn mcpctl(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--state-dir", "state"];
    all.extend_from_slice(args);
    Command::new(common::mcpctl())
        .args(&all)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn fetch_is_vendored_built_offline_deployed_through_the_gate_and_answers() {
    if !common::docker_available("deploy_service") {
        return;
    }
    let root = common::repo_root();
    let mut m = mcpctl::manifest::load(&root.join("services.yaml"))
        .unwrap()
        .manifest;
    let project = common::unique_project("svc");
    let port = common::free_port();
    m.project = project.clone();
    m.services.retain(|name, _| name == "fetch");
    m.services["fetch"].port = Some(port);
    // The revision itself serves the port here; the edge path and the exporter are proven on the
    // whole stack (tests/stack.rs) and in tests/edge.rs.
    m.edge.enabled = false;
    m.observability.exporter = false;
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("locks"), tmp.path().join("locks")).unwrap();
    std::fs::write(
        tmp.path().join("services.yaml"),
        serde_yaml_ng::to_string(&m).unwrap(),
    )
    .unwrap();
    let _down = Down {
        dir: tmp.path().to_path_buf(),
        project: project.clone(),
    };

    for args in [
        &["validate"][..],
        &["bases", "build", "python311"],
        &["vendor", "fetch"],
    ] {
        let out = mcpctl(tmp.path(), args);
        assert!(
            out.status.success(),
            "mcpctl {args:?}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let out = mcpctl(tmp.path(), &["deploy", "--yes"]);
    let log = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "deploy:\n{log}");
    assert!(log.contains("candidate passed the gate"), "{log}");

    // The serving container: our project, hardened as the manifest says.
    let name = must(Command::new("docker").args([
        "ps",
        "--filter",
        &format!("label=com.mcp.project={project}"),
        "--filter",
        "label=com.mcp.service=fetch",
        "--format",
        "{{.Names}}",
    ]));
    let name = name.trim();
    assert!(
        !name.is_empty() && !name.contains("candidate"),
        "serving container: {name:?}"
    );
    let cfg = must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.Memory}}",
        name,
    ]));
    assert_eq!(
        cfg.trim(),
        format!("true 10001:10001 [ALL] {}", 192u64 << 20)
    );

    // A real MCP session through the published port: the SSRF refusal is a clean tool error.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        // Auth is on by default: without a token the bridge refuses the session (401)...
        match mcpctl::mcp::Session::connect(
            &base,
            mcpctl::manifest::Transport::Sse,
            Duration::from_secs(20),
        )
        .await
        {
            Err(mcpctl::mcp::McpError::Http { status: 401, .. }) => {}
            Err(e) => panic!("without a token: expected HTTP 401, got {e}"),
            Ok(_) => panic!("without a token: a session was opened"),
        }
        // ...and with mcpctl's token (what the gate sent) it answers.
        let mut s = common::session(
            &base,
            mcpctl::manifest::Transport::Sse,
            Duration::from_secs(20),
            &tmp.path().join("state"),
        )
        .await
        .expect("MCP session");
        let tools = s.list_tools().await.unwrap();
        assert!(tools.iter().any(|t| t.name == "fetch"), "tools: {tools:?}");
        let r = s
            .call_tool("fetch", serde_json::json!({"url": "http://127.0.0.1/"}))
            .await
            .unwrap();
        assert!(r.is_error, "a private address must be refused: {}", r.text);
    });

    let status = mcpctl(tmp.path(), &["--output", "json", "status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("fetch"),
        "{}",
        text(&status.stdout)
    );
}
