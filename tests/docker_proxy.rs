//! `mcpctl docker-proxy` on the real engine: only the project's managed containers are visible,
//! nothing but the contract's GET endpoints is served, env never leaks, and the exporter's
//! `/metrics` carries the contract series (checked with `promtool check metrics`).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{must, text};

struct Cleanup {
    names: Vec<String>,
    proxy: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for n in &self.names {
            let _ = Command::new("docker").args(["rm", "-f", n]).output();
        }
    }
}

fn get(port: u16, path: &str) -> (u16, String) {
    http::request(port, "GET", path)
}

mod http {
    /// A minimal blocking HTTP/1.1 request over a TcpStream, enough for status codes and bodies.
    pub fn request(port: u16, method: &str, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(15)))
            .unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        let resp = String::from_utf8_lossy(&buf).into_owned();
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, dechunk(&body))
    }
    fn dechunk(body: &str) -> String {
        // axum answers with chunked encoding for streamed bodies; Json bodies carry a length.
        let mut out = String::new();
        let mut rest = body;
        loop {
            let Some((size, tail)) = rest.split_once("\r\n") else {
                return body.to_string();
            };
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                return body.to_string();
            };
            if n == 0 {
                return out;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
    }
}

#[test]
fn docker_proxy_shows_only_managed_project_containers_and_exports_metrics() {
    if !common::docker_available("docker_proxy") {
        return;
    }
    let project = common::unique_project("dp");
    let image = common::runtime_image();
    let ours = format!("{project}-alpha-r1");
    let foreign = format!("{project}-foreign");
    let mut cleanup = Cleanup {
        names: vec![ours.clone(), foreign.clone()],
        proxy: None,
    };
    // A managed container of the project (with limits and an env var that must not leak) and a
    // foreign one that must stay invisible.
    must(Command::new("docker").args([
        // -i keeps the server's stdin open (it exits on EOF).
        "run",
        "-d",
        "-i",
        "--name",
        &ours,
        "--label",
        "com.mcp.managed=true",
        "--label",
        &format!("com.mcp.project={project}"),
        "--label",
        "com.mcp.service=alpha",
        "--label",
        "com.mcp.role=service",
        "--label",
        "com.mcp.release=1",
        "--label",
        "com.mcp.config-hash=0123456789abcdef",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "-e",
        "SECRET_TOKEN=do-not-leak",
        &image,
        "/usr/local/bin/mcp-testserver",
        "--stderr-at-start",
        "3",
    ]));
    must(Command::new("docker").args([
        "create",
        "--name",
        &foreign,
        "--label",
        "com.mcp.managed=true",
        &image,
        "/x",
    ]));

    let port = common::free_port();
    let proxy = Command::new(common::mcpctl())
        .args([
            "docker-proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--project",
            &project,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cleanup.proxy = Some(proxy);
    common::wait_for("docker-proxy answering", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    assert_eq!(get(port, "/healthz").0, 200);

    let (status, body) = get(port, "/containers/json");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec![format!("/{ours}")]);

    let (status, body) = get(port, &format!("/containers/{ours}/json"));
    assert_eq!(status, 200);
    assert!(
        !body.contains("do-not-leak"),
        "inspect leaks the environment"
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["HostConfig"]["Memory"], 64 << 20);

    assert_eq!(
        get(port, &format!("/containers/{foreign}/json")).0,
        404,
        "a foreign container is invisible"
    );
    assert_eq!(get(port, &format!("/containers/{foreign}/logs")).0, 404);
    assert_eq!(
        http::request(port, "POST", &format!("/containers/{ours}/stop")).0,
        405,
        "read-only"
    );
    assert_eq!(
        http::request(port, "DELETE", &format!("/containers/{ours}/json")).0,
        405
    );
    assert_eq!(get(port, "/info").0, 403, "only contract endpoints");
    assert_eq!(get(port, "/images/json").0, 403);

    let state = must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        &ours,
    ]));
    let logs = Command::new("docker")
        .args(["logs", &ours])
        .output()
        .unwrap();
    let inspect = must(Command::new("docker").args(["inspect", "-f", "{{json .Config}}", &ours]));
    assert!(
        state.starts_with("running"),
        "{ours} is {state}; logs: {}{}; config {inspect}",
        text(&logs.stdout),
        text(&logs.stderr)
    );
    // The engine has no sample for a container in its first moments: wait for one.
    common::wait_for(
        "a stats sample with memory usage",
        Duration::from_secs(20),
        || {
            let (status, body) = get(port, &format!("/containers/{ours}/stats"));
            assert_eq!(status, 200, "{body}");
            let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
            stats["memory_stats"]["usage"].as_u64().filter(|u| *u > 0)
        },
    );

    let (status, body) = get(port, &format!("/containers/{ours}/logs?tail=50"));
    assert_eq!(status, 200, "{body}");
    let logs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        logs["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["stream"] == "stderr"),
        "{logs}"
    );

    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    let want = format!("{{service=\"alpha\",revision=\"r1-01234567\",container=\"{ours}\"}}");
    for series in [
        "mcp_container_memory_used_bytes",
        "mcp_container_memory_limit_bytes",
        "mcp_container_cpu_seconds_total",
        "mcp_container_cpu_limit_cores",
        "mcp_container_restarts_total",
    ] {
        assert!(
            metrics.contains(&format!("{series}{want}")),
            "{series} missing in:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(&format!("mcp_container_memory_limit_bytes{want} 67108864")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("mcp_container_cpu_limit_cores{want} 0.5")),
        "{metrics}"
    );
    assert!(!metrics.contains("foreign"));
    if let Some(promtool) = common::tool("docker_proxy", "promtool", &[]) {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
