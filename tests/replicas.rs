//! Replicas behind the edge, on the real engine (issue 20): a service with `replicas: 3`.
//! - deploy starts and gates the three containers one at a time; the edge balances 2026-07-28
//!   (stateless) calls over them (counts per replica from the edge's own metrics);
//! - a replica SIGKILLed mid-load: calls started after the kill all succeed (a refused
//!   connection is re-routed, the replica leaves the balance); a call that was inside the
//!   killed replica fails with a 502 that says so (a `tools/call` may have run: the edge never
//!   sends one twice) — counted and printed;
//! - a rolling deploy under the same load: 0 failed calls, every reply from the old or the new
//!   revision, the new one alone afterwards;
//! - `plan` names a revision short of its replicas, and the deploy replaces it whole.
//!
//! Figures: `REPLICAS …` lines (per-replica counts, kill and rollout failures, memory per
//! replica), with `--nocapture`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{text, unique_project, Cleanup};
use serde_json::{json, Value};

const MODERN: &str = "2026-07-28";
const CLIENTS: usize = 20;

struct Stack {
    dir: common::TestDir,
    project: String,
    port: u16,
    admin: u16,
    _cleanup: Cleanup,
}

impl Stack {
    fn new() -> Self {
        let project = unique_project("rep");
        Stack {
            dir: common::TestDir::new(),
            port: common::free_port(),
            admin: common::free_port(),
            _cleanup: Cleanup {
                project: project.clone(),
            },
            project,
        }
    }

    fn write(&self, nonce: &str, replicas: u32) {
        let runtime = common::runtime_image();
        let cmd =
            serde_json::to_string(&["/usr/local/bin/mcp-testserver", "--nonce", nonce]).unwrap();
        let manifest = format!(
            r#"version: 1
project: {project}
bases:
  runtime: {{suite: bookworm, image: "{runtime}"}}
edge: {{enabled: true, admin_port: {admin}, drain_timeout: 2s}}
services:
  alpha:
    port: {port}
    replicas: {replicas}
    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: {cmd}
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 10s
      expect_tools: {{min: 3, include: [echo]}}
"#,
            project = self.project,
            port = self.port,
            admin = self.admin,
        );
        std::fs::write(self.dir.path().join("services.yaml"), manifest).unwrap();
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(common::mcpctl());
        c.arg("--state-dir")
            .arg(self.state())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .env_remove("MCPCTL_FAULT")
            .stdin(std::process::Stdio::null());
        c
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        let out = self.command(&a).output().unwrap();
        assert!(
            out.status.success(),
            "mcpctl {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    fn deploy(&self) {
        let out = self.command(&["--yes", "deploy"]).output().unwrap();
        assert!(
            out.status.success(),
            "deploy: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            common::container_report(&[])
        );
    }

    /// The edge's request counts per upstream of `alpha`.
    fn per_upstream(&self) -> BTreeMap<String, u64> {
        let token = std::fs::read_to_string(self.state().join("edge").join("admin.token"))
            .unwrap_or_default();
        let body = common::must(Command::new("curl").args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://127.0.0.1:{}/metrics", self.admin),
        ]));
        body.lines()
            .filter(|l| l.starts_with("mcp_edge_requests_total{service=\"alpha\""))
            .filter_map(|l| {
                let up = l.split("upstream=\"").nth(1)?.split('"').next()?;
                let n = l.rsplit(' ').next()?.parse().ok()?;
                Some((up.to_string(), n))
            })
            .collect()
    }

    fn route(&self) -> (String, Vec<String>) {
        let edge = self.json(&["edge", "status"]);
        let r = &edge["routes"]["alpha"];
        (
            r["upstream"].as_str().unwrap_or_default().to_string(),
            r["replicas"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
}

/// One 2026-07-28 `tools/call echo`, stateless, authenticated as mcpctl: Ok(nonce) or Err(why).
async fn modern_echo(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    text: &str,
) -> Result<String, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": text},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}}}});
    let r = http
        .post(url)
        .bearer_auth(token)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .header("accept", "application/json, text/event-stream")
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status().as_u16();
    let t = r.text().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {t}"));
    }
    let v: Value = serde_json::from_str(&t).map_err(|e| format!("{e}: {t}"))?;
    let reply = v["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| format!("no text: {t}"))?;
    reply
        .strip_prefix(&format!("{text}|"))
        .map(str::to_string)
        .ok_or_else(|| format!("another caller's reply: {reply} (sent {text})"))
}

#[derive(Default)]
struct Load {
    ok: BTreeMap<String, usize>,
    /// (ms since the load started, why).
    failed: Vec<(u128, String)>,
}

/// `CLIENTS` clients calling until `stop` (at most `max_calls` each, 10 ms apart).
async fn load(url: String, token: String, stop: Arc<AtomicBool>, max_calls: usize) -> Load {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url, token, stop, sent) = (
            http.clone(),
            url.clone(),
            token.clone(),
            stop.clone(),
            sent.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Load::default();
            for k in 0..max_calls {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                match modern_echo(&http, &url, &token, &format!("c{c}-{k}")).await {
                    Ok(nonce) => *out.ok.entry(nonce).or_default() += 1,
                    Err(e) => out.failed.push((started.elapsed().as_millis(), e)),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            out
        }));
    }
    let mut all = Load::default();
    for t in tasks {
        let l = t.await.unwrap();
        for (k, v) in l.ok {
            *all.ok.entry(k).or_default() += v;
        }
        all.failed.extend(l.failed);
    }
    all
}

fn memory_per_replica(project: &str) -> Vec<String> {
    let out = common::must(Command::new("docker").args([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
    ]));
    out.lines()
        .filter(|l| l.starts_with(&format!("{project}-alpha-r")))
        .map(str::to_string)
        .collect()
}

#[test]
fn replicas_balance_modern_calls_survive_a_killed_replica_and_roll_without_a_failed_call() {
    if !common::docker_available("replicas") {
        return;
    }
    let s = Stack::new();
    s.write("A", 3);
    let t0 = Instant::now();
    s.deploy();
    let deploy_ms = t0.elapsed().as_millis();
    let (primary, replicas) = s.route();
    let first = primary
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        replicas,
        [
            format!("http://{first}-2:8080"),
            format!("http://{first}-3:8080")
        ],
        "the route balances over the revision's three containers"
    );
    let status = s.json(&["status"]);
    assert_eq!(status["services"][0]["replicas"]["wanted"], 3, "{status}");
    assert_eq!(status["services"][0]["replicas"]["running"], 3, "{status}");
    println!(
        "REPLICAS deploy of 3 replicas (each gated in turn): {deploy_ms} ms; memory: {:?}",
        memory_per_replica(&s.project)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/mcp", s.port);
    let token = common::mcpctl_token(&s.state());

    // 1. Spread: 20 clients × 15 calls.
    let before = s.per_upstream();
    let l = rt.block_on(load(
        url.clone(),
        token.clone(),
        Arc::new(AtomicBool::new(false)),
        15,
    ));
    assert!(l.failed.is_empty(), "failed: {:?}", l.failed);
    assert_eq!(l.ok.get("A"), Some(&(CLIENTS * 15)));
    let after = s.per_upstream();
    let spread: BTreeMap<&String, u64> = after
        .iter()
        .map(|(u, n)| (u, n - before.get(u).copied().unwrap_or(0)))
        .collect();
    println!(
        "REPLICAS spread of {} modern calls: {spread:?}",
        CLIENTS * 15
    );
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(
        spread.values().all(|n| *n >= (CLIENTS * 15 / 3 / 3) as u64),
        "each replica takes a share: {spread:?}"
    );

    // 2. A replica SIGKILLed mid-load.
    let stop = Arc::new(AtomicBool::new(false));
    let handle = rt.spawn(load(url.clone(), token.clone(), stop.clone(), 200));
    std::thread::sleep(Duration::from_millis(700));
    let victim = format!("{first}-2");
    let kill_at = Instant::now();
    common::must(Command::new("docker").args(["kill", &victim]));
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, Ordering::SeqCst);
    let l = rt.block_on(handle).unwrap();
    let killed_after_ms = kill_at.elapsed().as_millis();
    let total: usize = l.ok.values().sum::<usize>() + l.failed.len();
    println!(
        "REPLICAS kill: {} calls, {} failed ({:?}); the kill was {} ms before the load stopped",
        total,
        l.failed.len(),
        l.failed.iter().take(3).collect::<Vec<_>>(),
        killed_after_ms
    );
    assert!(
        l.failed.len() < CLIENTS,
        "at most the calls inside the killed replica fail: {:?}",
        l.failed
    );
    for (_, why) in &l.failed {
        assert!(
            why.contains("HTTP 502"),
            "a failure says where it came from: {why}"
        );
    }
    // The edge routes around it: a second round after the kill fails nothing.
    let l = rt.block_on(load(
        url.clone(),
        token.clone(),
        Arc::new(AtomicBool::new(false)),
        10,
    ));
    assert!(l.failed.is_empty(), "after the kill: {:?}", l.failed);
    let edge = s.json(&["edge", "status"]);
    println!(
        "REPLICAS after the kill the edge reports: {}",
        edge["routes"]["alpha"]
    );

    // 3. `plan` names the missing replica (unless Docker restarted it already).
    let plan = s.json(&["plan"]);
    let running = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", &victim])
        .output()
        .unwrap();
    if text(&running.stdout).trim() != "true" {
        let changes = plan["actions"][0]["changes"].to_string();
        assert!(changes.contains("replicas: 2 of 3 running"), "{plan}");
    }

    // 4. A rolling deploy of revision B under load: no failed call.
    s.write("B", 3);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = rt.spawn(load(url.clone(), token.clone(), stop.clone(), 2000));
    let t0 = Instant::now();
    s.deploy();
    let roll_ms = t0.elapsed().as_millis();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let l = rt.block_on(handle).unwrap();
    println!(
        "REPLICAS rolling deploy of 3 replicas under load: {roll_ms} ms, replies {:?}, failed {}",
        l.ok,
        l.failed.len()
    );
    assert!(
        l.failed.is_empty(),
        "failed during the roll: {:?}",
        l.failed
    );
    assert!(l.ok.contains_key("B"), "{:?}", l.ok);
    let l = rt.block_on(load(url, token, Arc::new(AtomicBool::new(false)), 3));
    assert_eq!(l.ok.keys().collect::<Vec<_>>(), ["B"], "only B answers now");
    let (primary, replicas) = s.route();
    assert_ne!(primary, format!("http://{first}:8080"));
    assert_eq!(replicas.len(), 2);
}
