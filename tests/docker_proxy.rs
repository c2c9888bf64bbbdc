//! `mcpctl docker-proxy` on the real engine: only the project's managed containers are visible,
//! nothing but the contract's GET endpoints is served, env never leaks, and the exporter's
//! `/metrics` carries the contract series (checked with `promtool check metrics`). Container ids
//! smuggling a path or query (`%2Fjson%3F`, `..`, double encoding) never reach the engine.

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
        let (status, _, body) = request_with_head(port, method, path);
        (status, body)
    }
    /// Like [`request`], also returning the status line and headers (lower-cased).
    pub fn request_with_head(port: u16, method: &str, path: &str) -> (u16, String, String) {
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
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        (
            status,
            format!("{}\r\n", head.to_ascii_lowercase()),
            dechunk(body),
        )
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
    let other_project = format!("{project}-otherproject");
    let unmanaged = format!("{project}-unmanaged");
    let mut cleanup = Cleanup {
        names: vec![
            ours.clone(),
            foreign.clone(),
            other_project.clone(),
            unmanaged.clone(),
        ],
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
    // A managed container of another project and an unmanaged one, both with env to protect.
    must(Command::new("docker").args([
        "create",
        "--name",
        &other_project,
        "--label",
        "com.mcp.managed=true",
        "--label",
        &format!("com.mcp.project={project}x"),
        "-e",
        "SECRET_TOKEN=do-not-leak",
        &image,
        "/x",
    ]));
    must(Command::new("docker").args([
        "create",
        "--name",
        &unmanaged,
        "-e",
        "SECRET_TOKEN=do-not-leak",
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

    refuses_smuggled_ids_and_other_projects(port, &ours, &[&foreign, &other_project, &unmanaged]);

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

    // Well-formed references still work, by name, full id and short id; the log tail of the
    // attacks above is plain log lines, not inspect JSON.
    let full_id = must(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &ours]))
        .trim()
        .to_string();
    for id in [full_id.as_str(), &full_id[..12]] {
        let (status, body) = get(port, &format!("/containers/{id}/json"));
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("do-not-leak"));
        let (status, body) = get(port, &format!("/containers/{id}/logs?tail=5"));
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("do-not-leak") && !body.contains("\"Config\""),
            "{body}"
        );
    }

    let (status, metrics) = get(port, "/metrics");
    assert_eq!(status, 200);
    for reason in ["encoded", "dot_segment", "invalid_id", "method", "endpoint"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "mcp_dockerproxy_refused_total{{reason=\"{reason}\"}} "
                ))
            })
            .unwrap_or_else(|| panic!("no refusal counter for {reason} in:\n{metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
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

/// The answer must be a refusal, never engine data: no inspect JSON, no env, no log lines.
fn assert_refused(port: u16, method: &str, path: &str, want: u16) {
    let (status, head, body) = http::request_with_head(port, method, path);
    assert_eq!(status, want, "{method} {path}: {body}");
    for leak in [
        "do-not-leak",
        "SECRET_TOKEN",
        "\"Config\"",
        "\"Id\"",
        "\"lines\"",
        "{",
    ] {
        assert!(!body.contains(leak), "{method} {path} leaks {leak}: {body}");
    }
    assert!(body.lines().count() <= 1, "{method} {path}: {body}");
    if want == 405 {
        assert!(
            head.contains("\r\nallow: get\r\n"),
            "{method} {path}: {head}"
        );
    }
}

fn refuses_smuggled_ids_and_other_projects(port: u16, ours: &str, invisible: &[&str]) {
    for endpoint in ["logs", "json", "stats"] {
        for id in [
            format!("{ours}%2Fjson%3F"),
            format!("{ours}%2fjson%3f"),
            format!("{ours}%2F..%2F..%2Finfo%3F"),
            "%2F..%2F".to_string(),
            format!("{ours}%3F"),
            format!("{ours}%3Fx%3D1"),
            format!("{ours}%23"),
            format!("{ours}%252Fjson%253F"),
            format!("{ours}%25"),
            "..".to_string(),
            ".".to_string(),
            "%2e%2e".to_string(),
            format!("-{ours}"),
            format!("{ours}%20"),
            "x".repeat(200),
        ] {
            assert_refused(port, "GET", &format!("/containers/{id}/{endpoint}"), 400);
        }
        // Another project's container, an unmanaged one and one without a project: by name and by
        // full id, indistinguishable from a missing container.
        for name in invisible {
            let full = must(Command::new("docker").args(["inspect", "-f", "{{.Id}}", name]))
                .trim()
                .to_string();
            for id in [name.to_string(), full.clone(), full[..12].to_string()] {
                assert_refused(port, "GET", &format!("/containers/{id}/{endpoint}"), 404);
            }
        }
        for method in ["POST", "DELETE", "PUT", "PATCH", "HEAD"] {
            assert_refused(port, method, &format!("/containers/{ours}/{endpoint}"), 405);
        }
    }
    // Dot segments and extra segments around a valid id are not contract endpoints either.
    assert_refused(
        port,
        "GET",
        &format!("/containers/{ours}/json/../logs"),
        403,
    );
    assert_refused(port, "GET", &format!("/containers/{ours}/../../info"), 403);
    assert_refused(port, "POST", "/containers/create", 405);
    assert_refused(port, "POST", &format!("/containers/{ours}/exec"), 405);
}
