//! Edge tier, on the real engine: with `edge.enabled`, deploy and rollback switch routes on the
//! edge instead of replacing the serving container. While a client calls tools through the host
//! port continuously (half new-session-per-call over Streamable HTTP like LiteLLM, half on short
//! legacy SSE sessions), deploy A → A′ and roll back: zero failed calls. A legacy SSE session
//! opened before the switch keeps answering with A's nonce until the drain deadline, when the
//! edge ends its stream cleanly. Then the edge's memory, and `edge replace` with its gap.
//!
//! Figures are printed (`EDGE …` lines; run with `--nocapture` to see them).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{text, unique_project, Cleanup};
use futures::StreamExt;
use mcpctl::manifest::Transport;
use mcpctl::mcp::sse::SseParser;
use serde_json::{json, Value};

struct Stack {
    dir: tempfile::TempDir,
    project: String,
    port: u16,
    admin: u16,
    _cleanup: Cleanup,
}

const DRAIN_S: u64 = 3;

impl Stack {
    fn new(prefix: &str) -> Self {
        let project = unique_project(prefix);
        Stack {
            dir: tempfile::tempdir().unwrap(),
            port: common::free_port(),
            admin: common::free_port(),
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
        self.revision_on(nonce, 8080)
    }

    /// A revision whose bridge listens on `container_port` inside its container.
    fn revision_on(&self, nonce: &str, container_port: u16) {
        let runtime = common::runtime_image();
        let container_port = if container_port == 8080 {
            String::new()
        } else {
            format!("\n    container_port: {container_port}")
        };
        let cmd =
            serde_json::to_string(&["/usr/local/bin/mcp-testserver", "--nonce", nonce]).unwrap();
        let manifest = format!(
            r#"version: 1
project: {project}
retain_revisions: 3
bases:
  runtime: {{suite: bookworm, image: "{runtime}"}}
edge: {{enabled: true, admin_port: {admin}, drain_timeout: {DRAIN_S}s}}
services:
  alpha:
    port: {port}{container_port}
    transport: sse
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
            admin = self.admin,
        );
        std::fs::write(self.dir.path().join("services.yaml"), manifest).unwrap();
    }

    fn mcpctl(&self, args: &[&str]) -> Output {
        Command::new(common::mcpctl())
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("mcpctl runs")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// mcpctl's bearer token for the deployed service (auth is on: the edge passes
    /// `Authorization` through to the bridge, which checks it).
    fn token(&self) -> String {
        common::mcpctl_token(&self.state())
    }

    fn route(&self) -> Value {
        let out = self.mcpctl(&["--output", "json", "edge", "status"]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["routes"]["alpha"].clone()
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// A client sending `Authorization: Bearer <token>` on every request when a token is given.
fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Run `script` with `python` (an image) on the project's network, as a container labelled as
/// the project's, with `token` on its stdin (never in `docker inspect`); its output.
fn python_in_network(project: &str, python: &str, script: &str, token: &str) -> String {
    must_with_stdin(
        Command::new("docker").args([
            "run",
            "--rm",
            "-i",
            "--network",
            project,
            "--label",
            &format!("com.mcp.project={project}"),
            python,
            "python3",
            "-c",
            script,
        ]),
        &format!("{token}\n"),
    )
}

/// Run `cmd` with `input` on its stdin; its output, or a panic with it when it fails. (A token
/// handed to a container this way is in no `docker inspect`.)
fn must_with_stdin(cmd: &mut Command, input: &str) -> String {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// echo's nonce from a fresh session (with `token` as bearer, when given: a deployed service
/// requires one; the host bridges of the `edge serve` tests check none).
async fn nonce(base: &str, transport: Transport, token: Option<&str>) -> Result<String, String> {
    let opts = common::mcp_options(Duration::from_secs(5), token);
    let mut s = mcpctl::mcp::Session::connect_with(base, transport, &opts)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let r = s
        .call_tool("echo", json!({"text": "who"}))
        .await
        .map_err(|e| format!("echo: {e}"));
    s.close().await;
    let r = r?;
    if r.is_error {
        return Err(format!("echo is_error: {}", r.text));
    }
    r.text
        .strip_prefix("who|")
        .map(str::to_string)
        .ok_or_else(|| format!("unexpected echo {}", r.text))
}

/// A raw legacy SSE client: GET /sse, POSTs to the endpoint it names, replies read off the stream.
/// Reports how the stream ended (clean end of body, or an error).
struct Legacy {
    http: reqwest::Client,
    post: String,
    replies: tokio::sync::mpsc::UnboundedReceiver<Value>,
    ended: tokio::sync::oneshot::Receiver<Result<(), String>>,
    next: u64,
}

impl Legacy {
    async fn open(base: &str, token: Option<&str>) -> Legacy {
        let http = http_client(token);
        let resp = http
            .get(format!("{base}/sse"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET /sse");
        assert!(resp.status().is_success(), "GET /sse: {}", resp.status());
        let (ep_tx, ep_rx) = tokio::sync::oneshot::channel();
        let (tx, replies) = tokio::sync::mpsc::unbounded_channel();
        let (end_tx, ended) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut ep_tx = Some(ep_tx);
            let mut parser = SseParser::default();
            let mut body = resp.bytes_stream();
            let end = loop {
                match body.next().await {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(e.to_string()),
                    Some(Ok(chunk)) => {
                        for ev in parser.push(&chunk).expect("a decodable event stream") {
                            if ev.event.as_deref() == Some("endpoint") {
                                if let Some(t) = ep_tx.take() {
                                    let _ = t.send(ev.data);
                                }
                            } else if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                                let _ = tx.send(v);
                            }
                        }
                    }
                }
            };
            let _ = end_tx.send(end);
        });
        let endpoint = tokio::time::timeout(Duration::from_secs(5), ep_rx)
            .await
            .expect("an endpoint event")
            .unwrap();
        assert!(endpoint.starts_with('/'), "a root path: {endpoint}");
        let mut l = Legacy {
            http,
            post: format!("{base}{endpoint}"),
            replies,
            ended,
            next: 0,
        };
        l.request(
            "initialize",
            json!({"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "edge-test", "version": "1"}}),
        )
        .await
        .expect("initialize");
        let r = l
            .http
            .post(&l.post)
            .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        l
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next += 1;
        let id = self.next;
        let r = self
            .http
            .post(&self.post)
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("POST: {}", r.status()));
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.replies.recv()).await {
                Ok(Some(v)) if v["id"] == json!(id) => return Ok(v),
                Ok(Some(_)) => continue,
                Ok(None) => return Err("stream ended".into()),
                Err(_) => return Err("no reply in 5 s".into()),
            }
        }
    }

    async fn echo(&mut self) -> Result<String, String> {
        let v = self
            .request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "who"}}),
            )
            .await?;
        let t = v["result"]["content"][0]["text"]
            .as_str()
            .ok_or_else(|| format!("no text: {v}"))?;
        Ok(t.strip_prefix("who|").unwrap_or(t).to_string())
    }
}

#[derive(Default)]
struct Load {
    calls: AtomicU64,
    failures: Mutex<Vec<String>>,
    nonces: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Calls echo until `stop`: worker 0 opens a new Streamable HTTP session per call (LiteLLM's
/// pattern), worker 1 uses legacy SSE sessions of 10 calls each.
async fn load(base: String, token: String, stop: Arc<AtomicBool>, stats: Arc<Load>, worker: usize) {
    let record = |r: Result<String, String>| match r {
        Ok(n) => {
            stats.calls.fetch_add(1, Ordering::SeqCst);
            *stats.nonces.lock().unwrap().entry(n).or_default() += 1;
        }
        Err(e) => {
            stats.calls.fetch_add(1, Ordering::SeqCst);
            stats.failures.lock().unwrap().push(e);
        }
    };
    while !stop.load(Ordering::SeqCst) {
        if worker == 0 {
            record(nonce(&base, Transport::Http, Some(&token)).await);
        } else {
            let opts = common::mcp_options(Duration::from_secs(5), Some(&token));
            match mcpctl::mcp::Session::connect_with(&base, Transport::Sse, &opts).await {
                Err(e) => record(Err(format!("sse connect: {e}"))),
                Ok(mut s) => {
                    for _ in 0..10 {
                        let r = s
                            .call_tool("echo", json!({"text": "who"}))
                            .await
                            .map_err(|e| format!("sse echo: {e}"))
                            .and_then(|r| {
                                r.text
                                    .strip_prefix("who|")
                                    .map(str::to_string)
                                    .ok_or(r.text)
                            });
                        record(r);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    s.close().await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn release_of(route: &Value) -> u64 {
    route["revision"].as_u64().expect("a stack revision")
}

/// The edge's DNS-rebinding guard, from a client on the host: through the published `port`, a
/// foreign Host on `/sse` and `/mcp` (also loopback at another port) and a foreign Origin get 403
/// in plain text with `Connection: close`, a request without Host gets 400; nothing of it
/// reaches the upstream (every request carries `token` when given: the refusal does not depend on
/// credentials). Returns how many Host and Origin refusals it caused.
async fn assert_foreign_hosts_and_origins_refused(port: u16, token: Option<&str>) -> (u64, u64) {
    let base = format!("http://127.0.0.1:{port}");
    let http = http_client(token);
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "rebind", "version": "1"}}});
    let sse = |extra: (&'static str, String)| {
        http.get(format!("{base}/sse"))
            .header("accept", "text/event-stream")
            .header(extra.0, extra.1)
    };
    let mcp = |extra: (&'static str, String)| {
        http.post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header(extra.0, extra.1)
            .json(&init)
    };
    let refused = |rb: reqwest::RequestBuilder, want: &'static str, what: String| async move {
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert_eq!(r.headers()["connection"], "close", "{what}");
        assert_eq!(r.text().await.unwrap(), want, "{what}");
    };
    let mut counted = (0, 0);
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        "localhost:1".to_string(),
    ] {
        for (rb, path) in [
            (sse(("host", host.clone())), "/sse"),
            (mcp(("host", host.clone())), "/mcp"),
        ] {
            refused(
                rb,
                "Forbidden: foreign Host",
                format!("{path} with Host {host}"),
            )
            .await;
            counted.0 += 1;
        }
    }
    for origin in ["http://evil.example", "null"] {
        let o = origin.to_string();
        for (rb, path) in [
            (sse(("origin", o.clone())), "/sse"),
            (mcp(("origin", o.clone())), "/mcp"),
        ] {
            refused(
                rb,
                "Forbidden: foreign Origin",
                format!("{path} with Origin {origin}"),
            )
            .await;
            counted.1 += 1;
        }
    }
    // No Host at all (HTTP/1.1 requires one).
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.write_all(b"GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("the edge closes after a refusal")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "no Host: {answer}");
    counted.0 += 1;
    // What a normal client sends still passes: a loopback Origin.
    let r = mcp(("origin", "http://localhost:3000".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a loopback Origin is admitted");
    counted
}

/// Through the edge at `base`: `/mcp` and `/sse` without a token, and with a token no consumer
/// holds, get the bridge's 401 and its `WWW-Authenticate: Bearer` challenge.
async fn assert_unauthenticated_refused_through_the_edge(base: &str) {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "noauth", "version": "1"}}});
    let wrong = format!("mcp_{}", "0".repeat(64));
    for (token, want) in [
        (None, "Bearer"),
        (Some(wrong.as_str()), "error=\"invalid_token\""),
    ] {
        let http = http_client(token);
        for (path, rb) in [
            (
                "/mcp",
                http.post(format!("{base}/mcp"))
                    .header("accept", "application/json, text/event-stream")
                    .json(&init),
            ),
            (
                "/sse",
                http.get(format!("{base}/sse"))
                    .header("accept", "text/event-stream"),
            ),
        ] {
            let r = rb.send().await.unwrap();
            let what = format!(
                "{path} through the edge with token {:?}",
                token.map(|_| "<wrong>")
            );
            assert_eq!(r.status(), 401, "{what}");
            let challenge = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate header"));
            assert!(
                challenge.starts_with("Bearer") && challenge.contains(want),
                "{what}: WWW-Authenticate {challenge:?}"
            );
        }
    }
}

/// `mcp_edge_refused_total{reason}` from the edge's admin API.
async fn refused_total(admin: u16, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("mcp_edge_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn deploy_and_rollback_switch_routes_with_zero_failed_calls() {
    if !common::docker_available("edge_flow") {
        return;
    }
    let s = Stack::new("edg");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // A: the first deploy creates the edge and routes alpha to A.
    s.revision("A");
    let out = s.mcpctl(&["--yes", "deploy", "-m", "A"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let route_a = s.route();
    assert_eq!(route_a["kind"], "stack", "{route_a}");
    let rel_a = release_of(&route_a);
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Sse, Some(&s.token())))
            .unwrap(),
        "A"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "A"
    );
    // The edge rewrites Host for the bridge, so it guards against DNS rebinding itself: foreign
    // Hosts and Origins are refused (and counted), and a normal client keeps working right after.
    let (hosts, origins) = rt.block_on(assert_foreign_hosts_and_origins_refused(
        s.port,
        Some(&s.token()),
    ));
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Sse, Some(&s.token())))
            .unwrap(),
        "A"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "A"
    );
    assert_eq!(rt.block_on(refused_total(s.admin, "host")), hosts);
    assert_eq!(rt.block_on(refused_total(s.admin, "origin")), origins);
    // Access control stays on behind the edge: the edge passes `Authorization` through and the
    // bridge's refusal (401 with its `WWW-Authenticate` challenge) back; the calls above carried
    // mcpctl's token.
    rt.block_on(assert_unauthenticated_refused_through_the_edge(&s.base()));
    // The admin API wants the install's token (`<state>/edge/admin.token`): a raw request
    // without it, or with another, gets 401 (counted); with it, the routes.
    let token = mcpctl::edge::token::load(&s.state()).unwrap();
    let admin_get = |auth: Option<&str>| {
        let mut rb = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/routes", s.admin));
        if let Some(t) = auth {
            rb = rb.bearer_auth(t);
        }
        rt.block_on(async { rb.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(admin_get(None), 401, "no token");
    assert_eq!(
        admin_get(Some("0".repeat(64).as_str())),
        401,
        "a wrong token"
    );
    assert_eq!(admin_get(Some(&token)), 200);
    assert_eq!(rt.block_on(refused_total(s.admin, "admin_unauthorized")), 2);
    // The token reaches the edge as a read-only file only: not in its environment, command,
    // labels or anything else `docker inspect` shows, nor in its log.
    let edge_name = format!("{}-edge", s.project);
    let inspect = common::must(Command::new("docker").args(["inspect", &edge_name]));
    assert!(
        !inspect.contains(&token),
        "the token is in `docker inspect {edge_name}`"
    );
    assert!(
        inspect.contains("/run/mcpctl-edge/admin.token:ro"),
        "{inspect}"
    );
    let logs = Command::new("docker")
        .args(["logs", &edge_name])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&logs.stdout).contains(&token));
    assert!(!String::from_utf8_lossy(&logs.stderr).contains(&token));
    // The recorded config is the manifest's: nothing to deploy again.
    let out = s.mcpctl(&["--output", "json", "plan"]);
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["actions"][0]["action"], "unchanged", "{plan}");
    // The revision publishes no fixed port: only the edge holds the host port.
    let ports = common::must(Command::new("docker").args([
        "ps",
        "--filter",
        &format!("label=com.mcp.project={}", s.project),
        "--format",
        "{{.Names}} {{.Ports}}",
    ]));
    let fixed = format!(":{}->", s.port);
    for line in ports.lines() {
        assert_eq!(
            line.contains(&fixed),
            line.starts_with(&format!("{}-edge ", s.project)),
            "only the edge publishes {}: {ports}",
            s.port
        );
    }

    // In the network, `mcp-alpha` names the edge, not a revision.
    let aliases = |c: &str| {
        common::must(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{json .Aliases}}{{end}}",
            c,
        ]))
    };
    assert!(aliases(&format!("{}-edge", s.project)).contains("\"mcp-alpha\""));
    assert!(!aliases(&format!("{}-alpha-r{rel_a}", s.project)).contains("mcp-alpha"));

    // From another container on the network: `mcp-alpha:8080` reaches the service through the
    // edge (Host routing), and the admin API refuses it (only the host may switch routes).
    let python = "mcpctl-base/python313:trixie";
    let have_python = Command::new("docker")
        .args(["image", "inspect", python])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_python {
        let script = format!(
            r#"
import json, sys, urllib.request, urllib.error
token = sys.stdin.readline().strip()
init = {{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {{"protocolVersion": "2025-03-26", "capabilities": {{}}, "clientInfo": {{"name": "peer", "version": "1"}}}}}}
req = urllib.request.Request("http://mcp-alpha:8080/mcp", json.dumps(init).encode(), {{"content-type": "application/json", "accept": "application/json, text/event-stream", "authorization": "Bearer " + token}})
r = urllib.request.urlopen(req, timeout=5)
print("mcp", r.status, bool(r.headers.get("mcp-session-id")))
noauth = urllib.request.Request("http://mcp-alpha:8080/mcp", json.dumps(init).encode(), {{"content-type": "application/json", "accept": "application/json, text/event-stream"}})
try:
    urllib.request.urlopen(noauth, timeout=5)
    print("noauth open")
except urllib.error.HTTPError as e:
    print("noauth", e.code, e.headers.get("www-authenticate"))
foreign = urllib.request.Request("http://mcp-alpha:8080/mcp", json.dumps(init).encode(), {{"content-type": "application/json", "accept": "application/json, text/event-stream", "origin": "http://evil.example", "authorization": "Bearer " + token}})
try:
    urllib.request.urlopen(foreign, timeout=5)
    print("origin open")
except urllib.error.HTTPError as e:
    print("origin", e.code)
try:
    urllib.request.urlopen("http://mcp-alpha:{admin}/routes", timeout=5)
    print("admin open")
except urllib.error.HTTPError as e:
    print("admin", e.code)
"#,
            admin = s.admin
        );
        let out = python_in_network(&s.project, python, &script, &s.token());
        assert!(
            out.contains("mcp 200 True"),
            "in-network MCP through the edge: {out}"
        );
        assert!(
            out.contains("noauth 401 Bearer"),
            "in-network, a request without a token is refused by the bridge: {out}"
        );
        assert!(
            out.contains("admin 403"),
            "the admin API refuses peers: {out}"
        );
        assert!(
            out.contains("origin 403"),
            "a foreign Origin is refused in-network too: {out}"
        );
    } else {
        eprintln!(
            "EDGE in-network check skipped: no {python} image (`mcpctl bases build python313`)"
        );
    }

    // Continuous load through the host port, and a legacy SSE session opened before the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Load::default());
    let workers: Vec<_> = (0..2)
        .map(|w| rt.spawn(load(s.base(), s.token(), stop.clone(), stats.clone(), w)))
        .collect();
    let mut legacy = rt.block_on(Legacy::open(&s.base(), Some(&s.token())));
    assert_eq!(rt.block_on(legacy.echo()).unwrap(), "A");
    let legacy_stop = Arc::new(AtomicBool::new(false));
    let legacy_task = {
        let stop = legacy_stop.clone();
        rt.spawn(async move {
            // Call every 100 ms until the stream is closed; every reply must carry A's nonce.
            let mut answers = Vec::new();
            let started = Instant::now();
            let mut err = None;
            while !stop.load(Ordering::SeqCst) {
                match legacy.echo().await {
                    Ok(n) => answers.push((started.elapsed(), n)),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ended = tokio::time::timeout(Duration::from_secs(10), legacy.ended)
                .await
                .map(|r| r.unwrap_or(Err("reader gone".into())));
            (answers, err, ended, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(700));

    // A′: deploy switches the route; the old revision drains, then is stopped and kept.
    s.revision("A2");
    let t = Instant::now();
    let out = s.mcpctl(&["--yes", "deploy", "-m", "A2"]);
    let deploy_s = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = text(&out.stderr);
    assert!(log.contains("edge routes new sessions to"), "{log}");
    assert!(
        log.contains("drained in"),
        "the deploy waited for the drain:\n{log}"
    );
    let route_a2 = s.route();
    assert!(release_of(&route_a2) > rel_a, "{route_a2}");
    assert_eq!(
        route_a2["draining"],
        json!([]),
        "the drain finished: {route_a2}"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "A2"
    );

    // The legacy session: A's nonce on every reply until the edge closed it at the deadline.
    legacy_stop.store(true, Ordering::SeqCst);
    let (answers, err, ended, lived) = rt.block_on(legacy_task).unwrap();
    assert!(
        answers.iter().all(|(_, n)| n == "A"),
        "every reply on the old session carries A's nonce: {answers:?}"
    );
    let last = answers.last().map(|(t, _)| *t).unwrap_or_default();
    assert!(
        last >= Duration::from_secs(DRAIN_S - 1),
        "the old session kept working after the switch ({} answers, last at {last:?})",
        answers.len()
    );
    assert_eq!(
        ended,
        Ok(Ok(())),
        "the edge ended the stream cleanly (end of body, not a reset); calls stopped with {err:?}"
    );
    eprintln!(
        "EDGE legacy session: {} answers with nonce A over {:.1} s, then closed cleanly by the edge ({err:?})",
        answers.len(),
        lived.as_secs_f64()
    );
    let a_container = format!("{}-alpha-r{rel_a}", s.project);
    let state = common::must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Status}}",
        &a_container,
    ]));
    assert_eq!(state.trim(), "exited", "A is stopped and kept");

    // Roll back: A's recorded config serves again through a route switch.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let out = s.mcpctl(&["--yes", "rollback", "alpha"]);
    let rollback_s = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Sse, Some(&s.token())))
            .unwrap(),
        "A"
    );
    std::thread::sleep(Duration::from_millis(500));

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let calls = stats.calls.load(Ordering::SeqCst);
    let failures = stats.failures.lock().unwrap().clone();
    let nonces = stats.nonces.lock().unwrap().clone();
    eprintln!(
        "EDGE load: {calls} calls, {} failed, by nonce {nonces:?}; deploy {deploy_s:.1} s, rollback {rollback_s:.1} s",
        failures.len()
    );
    assert!(
        calls >= 200,
        "at least 200 calls spanned the switches: {calls}"
    );
    assert!(failures.is_empty(), "zero failed calls: {failures:?}");
    assert!(
        nonces.get("A2").is_some_and(|n| *n > 0) && nonces.get("A").is_some_and(|n| *n > 0),
        "the load saw both revisions: {nonces:?}"
    );

    // The ledger records each route switch.
    let out = s.mcpctl(&["--output", "json", "history"]);
    let routes: Vec<Value> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "route")
        .collect();
    assert_eq!(routes.len(), 3, "A, A′ and the rollback: {routes:?}");

    // A revision running without a route (as an interrupted run leaves it) is stopped by
    // `edge up` (which deploy and rollback run first); the routed revision keeps serving.
    let a2_container = format!("{}-alpha-r{}", s.project, release_of(&route_a2));
    common::must(Command::new("docker").args(["start", &a2_container]));
    let out = s.mcpctl(&["--output", "json", "edge", "up"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let up: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(up["action"], "running", "idempotent: {up}");
    assert!(
        text(&out.stderr).contains(&format!("stopped r{}", release_of(&route_a2))),
        "{}",
        show(&out)
    );
    let state = common::must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Status}}",
        &a2_container,
    ]));
    assert_eq!(state.trim(), "exited");
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "A"
    );

    // The edge's own memory.
    let mem = common::must(Command::new("docker").args([
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}",
        &format!("{}-edge", s.project),
    ]));
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", s.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let rss = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the edge reports its RSS");
    // Anonymous memory (heap, stacks) of the edge process, from the host's /proc.
    let pid = common::must(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &format!("{}-edge", s.project),
    ]));
    let anon = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unreadable".into());
    eprintln!(
        "EDGE memory: docker stats {}; process RSS {:.1} MiB, of which anonymous {anon}",
        mem.trim(),
        rss as f64 / (1 << 20) as f64
    );
    assert!(rss < 64 << 20, "the edge stays small: {rss} bytes");
    assert!(
        metrics.contains("mcp_edge_route_switches_total{service=\"alpha\"} 3"),
        "{metrics}"
    );

    // Replacing the edge itself: confirmed, measured; routes survive (the volume).
    let before = s.route();
    let out = s.mcpctl(&["edge", "replace"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no TTY, no --yes: refused\n{}",
        show(&out)
    );
    let out = s.mcpctl(&["--yes", "--output", "json", "edge", "replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "EDGE replace: gap {} ms on {} ({} of {} probes failed)",
        r["gap_ms"], r["probed"], r["failed_probes"], r["probes"]
    );
    assert!(r["gap_ms"].as_u64().unwrap() < 10_000, "{r}");
    let after = s.route();
    assert_eq!(after["upstream"], before["upstream"], "{after}");
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "A"
    );
}

/// A service whose bridge listens on another port than 8080 (`container_port: 9090`) behind the
/// edge: the route names that port, the edge sends the Host that bridge admits, and each deploy
/// probes through the published port (as a client) before the previous revision is stopped.
#[test]
fn a_service_on_another_container_port_answers_through_the_edge() {
    if !common::docker_available("edge_container_port") {
        return;
    }
    let s = Stack::new("edp");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    s.revision_on("P1", 9090);
    let out = s.mcpctl(&["--yes", "deploy", "-m", "P1"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let through = format!("answers through the edge at http://127.0.0.1:{}", s.port);
    assert!(text(&out.stderr).contains(&through), "{}", show(&out));
    let route = s.route();
    let rel = release_of(&route);
    assert_eq!(
        route["upstream"],
        format!("http://{}-alpha-r{rel}:9090", s.project),
        "{route}"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "P1"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Sse, Some(&s.token())))
            .unwrap(),
        "P1"
    );
    let first_s = t.elapsed().as_secs_f64();

    // The next revision: switched, probed through the edge, the previous one (at :9090) drained.
    let t = Instant::now();
    s.revision_on("P2", 9090);
    let out = s.mcpctl(&["--yes", "deploy", "-m", "P2"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let log = text(&out.stderr);
    assert!(log.contains(&through), "{log}");
    assert!(
        log.contains(&format!("alpha-r{rel}:9090 drained in")),
        "the previous upstream (at its port) drained:\n{log}"
    );
    assert_eq!(
        rt.block_on(nonce(&s.base(), Transport::Http, Some(&s.token())))
            .unwrap(),
        "P2"
    );
    let second_s = t.elapsed().as_secs_f64();

    // In the network `mcp-alpha:9090` reaches it through the edge, as it would without the edge.
    let python = "mcpctl-base/python313:trixie";
    let have_python = Command::new("docker")
        .args(["image", "inspect", python])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_python {
        let script = r#"
import json, sys, urllib.request
token = sys.stdin.readline().strip()
init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "peer", "version": "1"}}}
req = urllib.request.Request("http://mcp-alpha:9090/mcp", json.dumps(init).encode(), {"content-type": "application/json", "accept": "application/json, text/event-stream", "authorization": "Bearer " + token})
r = urllib.request.urlopen(req, timeout=5)
print("mcp", r.status, bool(r.headers.get("mcp-session-id")))
"#;
        let out = python_in_network(&s.project, python, script, &s.token());
        assert!(
            out.contains("mcp 200 True"),
            "mcp-alpha:9090 in-network: {out}"
        );
    } else {
        eprintln!(
            "EDGE in-network check skipped: no {python} image (`mcpctl bases build python313`)"
        );
    }
    eprintln!("EDGE container_port 9090: first deploy {first_s:.1} s, switch {second_s:.1} s");
}

/// A child process killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn host_bridge(nonce: &str) -> (Child, u16) {
    let port = common::free_port();
    let child = Command::new(common::mcpctl())
        .args(["bridge", "--listen", &format!("127.0.0.1:{port}"), "--"])
        .arg(common::testserver())
        .args(["--nonce", nonce])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (Child(child), port)
}

async fn sse_sessions(bridge_port: u16) -> Option<i64> {
    let text = reqwest::get(format!("http://127.0.0.1:{bridge_port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("mcp_bridge_sessions_active{transport=\"sse\"} "))
        .and_then(|v| v.trim().parse().ok())
}

/// `mcpctl edge serve` as a host process in front of two host bridges (routes of kind `legacy`,
/// as cutover uses them): no route → 503; the admin API's refusals; routing by port and by Host;
/// a client that disconnects closes its upstream session; a switch sends new sessions over.
#[test]
fn edge_serve_routes_by_port_and_host_and_passes_disconnects() {
    let (_b1, p1) = host_bridge("L1");
    let (_b2, p2) = host_bridge("L2");
    let (port, internal, admin) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = mcpctl::edge::token::ensure(token_dir.path()).unwrap();
    let token = mcpctl::edge::token::load(token_dir.path()).unwrap();
    let _edge = Child(
        Command::new(common::mcpctl())
            .args([
                "edge",
                "serve",
                "--service",
                &format!("alpha={port}"),
                "--listen-ip",
                "127.0.0.1",
            ])
            .args([
                "--internal-port",
                &internal.to_string(),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .args(["--drain-timeout", "2s"])
            .arg("--admin-token-file")
            .arg(&token_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = mcpctl::edge::admin::AdminClient::new(admin).with_token(token.as_str());
        assert!(client.wait_healthy(Duration::from_secs(10)).await, "the edge starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = http.get(format!("{base}/sse")).send().await.unwrap();
        assert_eq!(r.status(), 503, "no route yet");

        let put = |service: &str, body: Value| {
            let http = http.clone();
            let url = format!("http://127.0.0.1:{admin}/routes/{service}");
            let token = token.clone();
            async move { http.put(url).bearer_auth(token).json(&body).send().await.unwrap().status().as_u16() }
        };
        assert_eq!(put("beta", json!({"upstream": format!("http://127.0.0.1:{p1}")})).await, 404);
        assert_eq!(put("alpha", json!({"upstream": "ftp://x"})).await, 400);
        let legacy = |p: u16| json!({"upstream": format!("http://127.0.0.1:{p}"), "revision": null, "kind": "legacy"});
        assert_eq!(put("alpha", legacy(p1)).await, 200);

        // By port, both transports (the bridge may still be starting: retry within a deadline).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match nonce(&base, Transport::Sse, None).await {
                Ok(n) => {
                    assert_eq!(n, "L1");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(nonce(&base, Transport::Http, None).await.unwrap(), "L1");

        // By Host on the in-network listener.
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let mcp = format!("http://127.0.0.1:{internal}/mcp");
        // (In the container the listener is 8080; here it is `internal`, which the Host must name.)
        let r = http
            .post(&mcp)
            .header("host", format!("mcp-alpha:{internal}"))
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("mcp-session-id"));
        let r = http
            .post(&mcp)
            .header("host", format!("mcp-alpha:{}", internal.wrapping_add(1)))
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "mcp-alpha at another port");
        // The guard on the published port, in front of a legacy route (whose upstream checks no
        // Host at all), and a normal client right after.
        let (hosts, origins) = assert_foreign_hosts_and_origins_refused(port, None).await;
        assert_eq!(nonce(&base, Transport::Http, None).await.unwrap(), "L1");
        assert_eq!(refused_total(admin, "host").await, hosts + 1);
        assert_eq!(refused_total(admin, "origin").await, origins);
        let r = http
            .post(&mcp)
            .header("host", "mcp-other:8080")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "a Host naming no service");

        // A client that goes away closes its session upstream.
        let before = sse_sessions(p1).await.expect("bridge metrics");
        let resp = http.get(format!("{base}/sse")).send().await.unwrap();
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("endpoint"), "{first:?}");
        assert_eq!(sse_sessions(p1).await, Some(before + 1));
        drop(body);
        let deadline = Instant::now() + Duration::from_secs(5);
        while sse_sessions(p1).await != Some(before) {
            assert!(Instant::now() < deadline, "the upstream SSE session was not closed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A switch: new sessions go to the other bridge.
        assert_eq!(put("alpha", legacy(p2)).await, 200);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match nonce(&base, Transport::Http, None).await {
                Ok(n) => {
                    assert_eq!(n, "L2");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let routes = client.routes().await.unwrap();
        assert_eq!(routes.routes["alpha"].upstream, format!("http://127.0.0.1:{p2}"));
    });
}

/// mcp-proxy 0.13 (as bench-bridge installs it), when present on this machine.
fn mcp_proxy() -> Option<PathBuf> {
    let cache = std::env::var("MCPCTL_CACHE").unwrap_or_else(|_| "/var/cache/mcpctl".into());
    let p = PathBuf::from(cache).join("venv-mcp-proxy-0.13/bin/mcp-proxy");
    p.exists().then_some(p)
}

/// A legacy route with a path prefix, as cutover sets it for mcp-proxy 0.13's named servers
/// (`/servers/<name>/…`): clients keep root paths over both transports; the `endpoint` event
/// comes back without the prefix, and POSTs find their session.
#[test]
fn a_legacy_route_reaches_an_mcp_proxy_named_server_under_its_prefix() {
    let Some(proxy) = mcp_proxy() else {
        eprintln!(
            "SKIPPED legacy prefix: no mcp-proxy 0.13 venv (scripts/bench-bridge creates it)"
        );
        return;
    };
    let proxy_port = common::free_port();
    let _proxy = Child(
        Command::new(proxy)
            .args(["--port", &proxy_port.to_string(), "--named-server", "alpha"])
            .arg(format!("{} --nonce P1", common::testserver().display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (port, admin) = (common::free_port(), common::free_port());
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = mcpctl::edge::token::ensure(token_dir.path()).unwrap();
    let token = mcpctl::edge::token::load(token_dir.path()).unwrap();
    let _edge = Child(
        Command::new(common::mcpctl())
            .args(["edge", "serve", "--service", &format!("alpha={port}")])
            .args(["--listen-ip", "127.0.0.1", "--internal-port", "0"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--admin-token-file")
            .arg(&token_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = mcpctl::edge::admin::AdminClient::new(admin).with_token(token);
        assert!(client.wait_healthy(Duration::from_secs(10)).await);
        let route = client
            .put(
                "alpha",
                &mcpctl::edge::routes::PutRoute {
                    upstream: format!("http://127.0.0.1:{proxy_port}/servers/alpha/"),
                    revision: None,
                    kind: mcpctl::edge::routes::RouteKind::Legacy,
                    drain_timeout_s: None,
                    replicas: vec![],
                },
            )
            .await
            .unwrap();
        assert_eq!(
            route.upstream,
            format!("http://127.0.0.1:{proxy_port}/servers/alpha/")
        );
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match nonce(&base, Transport::Sse, None).await {
                Ok(n) => {
                    assert_eq!(n, "P1");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "mcp-proxy via the edge: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(nonce(&base, Transport::Http, None).await.unwrap(), "P1");
        // The raw endpoint event: a root path, no prefix.
        let l = Legacy::open(&base, None).await;
        assert!(
            l.post.starts_with(&format!("{base}/messages/?session_id=")),
            "{}",
            l.post
        );
    });
}
