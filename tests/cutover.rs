//! `mcpctl cutover` end to end, with a real LiteLLM (1.108.7, its own venv), a real old proxy
//! (mcp-proxy 0.13 in named-server mode on the host, each named server a `docker run -i --rm
//! --network <stack>` of the test server) and the real edge, against a stack `mcpctl deploy`
//! brought up with `edge.enabled`:
//!
//! revert to the old proxy (the parallel old setup) → check (one service deliberately different:
//! the old proxy's beta omits a tool; exit 6) → switch each service to the stack while LiteLLM is
//! called continuously (zero failed calls, the answering side's nonce changes) → a clean check →
//! revert while called → retire refused within the clean period and without confirmation →
//! retire stops the old proxy → LiteLLM still answers from the stack → revert refused.
//!
//! The old proxy listens on the docker bridge gateway address (reachable from the edge container
//! as `host.docker.internal`, not from other machines). LiteLLM runs on the host
//! (`litellm.network: host`) and reaches the services at their published ports, which the edge
//! owns; it is started ONCE per run (start-up 7–44 s) by `mcpctl cutover litellm` with the
//! rendered config byte for byte, and never restarted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, text, unique_project, wait_for};
use serde_json::{json, Value};

struct Cleanup {
    project: String,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first: `mcpctl cutover litellm` stops its LiteLLM on it.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // The old proxy's containers (`docker run --rm`) carry their own label: they belong to
        // the old setup, not to the project mcpctl manages.
        common::remove_project(
            &self.project,
            &[format!("label=mcpctl-test.legacy={}", self.project)],
        );
    }
}

struct Env {
    dir: PathBuf,
    state: PathBuf,
    key: String,
}

impl Env {
    fn mcpctl(&self, manifest: &str, args: &[&str]) -> Output {
        self.command(manifest, args).output().expect("mcpctl runs")
    }

    fn command(&self, manifest: &str, args: &[&str]) -> Command {
        let mut c = Command::new(common::mcpctl());
        c.arg("-f")
            .arg(manifest)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .env("CUTOVER_TEST_KEY", &self.key)
            .stdin(Stdio::null());
        c
    }
}

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

struct Ports {
    alpha: u16,
    beta: u16,
    proxy: u16,
    admin: u16,
}

fn manifest(project: &str, runtime: &str, gateway: &str, p: &Ports, stop_pid: u32) -> String {
    let mut m = format!(
        r#"version: 1
project: {project}
bases:
  runtime: {{suite: bookworm, image: "{runtime}"}}
edge: {{enabled: true, admin_port: {admin}, drain_timeout: 3s}}
litellm:
  network: host
  transport: http
  master_key: {{from_env: CUTOVER_TEST_KEY}}
cutover:
  clean_period: 1h
  legacy_stop: [kill, "{stop_pid}"]
services:
"#,
        admin = p.admin
    );
    for (name, port) in [("alpha", p.alpha), ("beta", p.beta)] {
        // beta hides getenv from every client (the tool policy, checked through LiteLLM).
        let policy = if name == "beta" {
            "    tools: {deny: [getenv]}\n"
        } else {
            ""
        };
        m.push_str(&format!(
            r#"  {name}:
    port: {port}
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, NEW{name}]
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
{policy}    health:
      start_period: 1s
      interval: 1s
      timeout: 20s
      expect_tools: {{min: 3, include: [echo]}}
      smoke:
        - {{tool: echo, args: {{text: hi}}, expect: {{is_error: false, contains: "hi|"}}}}
    # The seed's 100 ms is judged through LiteLLM; this shared test machine gets headroom
    # (the measured figures are printed and reported, not asserted).
    slo: {{p95_ms: 1000}}
    legacy:
      url: "http://{gateway}:{proxy}/servers/{name}/sse"
      transport: sse
      upstream: "http://host.docker.internal:{proxy}/servers/{name}"
"#,
            proxy = p.proxy
        ));
    }
    m
}

/// `GET /routes` with the install's admin token (`<state>/edge/admin.token`).
fn routes(rt: &tokio::runtime::Runtime, admin: u16, state: &Path) -> Value {
    let token = mcpctl::edge::token::load(state).unwrap();
    rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{admin}/routes"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })["routes"]
        .clone()
}

/// Call `echo` on `server` through LiteLLM's REST endpoint; Ok(nonce) or Err(what happened).
async fn echo_through(
    http: &reqwest::Client,
    llm: &str,
    key: &str,
    server: &str,
) -> Result<String, String> {
    let r = http
        .post(format!("{llm}/mcp-rest/tools/call"))
        .bearer_auth(key)
        .json(&json!({"server_id": server, "name": "echo", "arguments": {"text": "x"}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() || body["isError"] != json!(false) {
        return Err(format!("HTTP {status}: {body}"));
    }
    let t = body["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    t.strip_prefix("x|")
        .map(str::to_string)
        .ok_or_else(|| format!("unexpected text {t}"))
}

/// Run `action` while LiteLLM is called continuously on `server` (a new upstream session per
/// call, LiteLLM's pattern); returns (nonces in order of answer, failures).
fn calls_during(
    rt: &tokio::runtime::Runtime,
    llm: &str,
    key: &str,
    server: &str,
    action: impl FnOnce(),
) -> (Vec<String>, Vec<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let (llm, key, server) = (llm.to_string(), key.to_string(), server.to_string());
    let handle = {
        let (stop, count) = (stop.clone(), count.clone());
        rt.spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let (mut seen, mut failed) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match echo_through(&http, &llm, &key, &server).await {
                    Ok(n) => seen.push(n),
                    Err(e) => failed.push(e),
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
            (seen, failed)
        })
    };
    // Some calls before, the action, some calls after.
    wait_for("calls before the action", Duration::from_secs(30), || {
        (count.load(Ordering::SeqCst) >= 10).then_some(())
    });
    action();
    let after = count.load(Ordering::SeqCst);
    wait_for("calls after the action", Duration::from_secs(30), || {
        (count.load(Ordering::SeqCst) >= after + 10).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(handle).unwrap()
}

fn nonce_changes(seen: &[String], from: &str, to: &str) {
    assert_eq!(seen.first().map(String::as_str), Some(from), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some(to), "{seen:?}");
    let first_to = seen.iter().position(|n| n == to).unwrap();
    assert!(
        seen[first_to..].iter().all(|n| n == to),
        "after the switch every new call must reach the new side: {seen:?}"
    );
}

/// p50/p95 (ms) of 50 echo calls through the old proxy's named server: on one session, or each
/// on a new session (LiteLLM's pattern).
async fn old_proxy_latency(host: &str, port: u16, name: &str, per_call: bool) -> (f64, f64) {
    let base = format!("http://{host}:{port}/servers/{name}");
    let t = mcpctl::manifest::Transport::Sse;
    let timeout = Duration::from_secs(10);
    let mut samples = Vec::new();
    let mut warm = None;
    for i in 0..55 {
        let started = Instant::now();
        if per_call || warm.is_none() {
            warm = Some(
                mcpctl::mcp::Session::connect(&base, t, timeout)
                    .await
                    .unwrap(),
            );
        }
        let s = warm.as_mut().unwrap();
        let r = s.call_tool("echo", json!({"text": "x"})).await.unwrap();
        assert!(!r.is_error);
        if per_call {
            warm.take().unwrap().close().await;
        }
        if i >= 5 {
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    if let Some(s) = warm {
        s.close().await;
    }
    let p = |q| mcpctl::cutover::latency::percentile(&samples, q).unwrap();
    (p(0.5), p(0.95))
}

fn ledger(state: &Path) -> Vec<Value> {
    std::fs::read_to_string(state.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn cutover_through_real_litellm_and_mcp_proxy() {
    if !common::docker_available("cutover") {
        return;
    }
    let cache = std::env::var("MCPCTL_CACHE").unwrap_or_else(|_| "/var/cache/mcpctl".into());
    let Some(litellm_bin) = common::tool(
        "cutover",
        "litellm",
        &[&format!("{cache}/venv-litellm/bin/litellm")],
    ) else {
        return;
    };
    let Some(proxy_bin) = common::tool(
        "cutover",
        "mcp-proxy",
        &[&format!("{cache}/venv-mcp-proxy/bin/mcp-proxy")],
    ) else {
        return;
    };

    let project = unique_project("cut");
    let tmp = common::TestDir::new();
    let env = Env {
        dir: tmp.path().to_path_buf(),
        state: tmp.path().join("state"),
        key: format!("sk-cutover-{project}"),
    };
    let mut cleanup = Cleanup {
        project: project.clone(),
        children: vec![],
    };
    let runtime = common::runtime_image();
    let ports = Ports {
        alpha: free_port(),
        beta: free_port(),
        proxy: free_port(),
        admin: free_port(),
    };
    let llm_port = free_port();
    // host.docker.internal (host-gateway) is the default bridge's gateway address.
    let gateway = common::bridge_gateway();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let get_ok = |url: String| -> Option<()> {
        rt.block_on(async {
            let c = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            c.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
    };

    // 1. The new stack, deployed behind the gate and the edge (which routes both to the stack).
    //    The manifest's stop command is rewritten with the old proxy's pid below.
    let write = |pid: u32| {
        std::fs::write(
            tmp.path().join("services.yaml"),
            manifest(&project, &runtime, &gateway, &ports, pid),
        )
        .unwrap()
    };
    write(0);
    let out = env.mcpctl("services.yaml", &["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "deploy: {}", show(&out));
    let r = routes(&rt, ports.admin, &env.state);
    assert_eq!(r["alpha"]["kind"], "stack", "{r:#}");

    // 2. The old proxy: mcp-proxy 0.13, named servers run as containers on the stack network;
    //    beta's deliberately lacks `whoami`.
    let docker_run = |name: &str, extra: &str| {
        format!(
            "docker run -i --rm --network {project} \
             --label mcpctl-test.legacy={project} --name {project}-legacy-{name} {runtime} \
             /usr/local/bin/mcp-testserver --nonce OLD{name}{extra}"
        )
    };
    let proxy = Command::new(&proxy_bin)
        .args(["--host", &gateway, "--port", &ports.proxy.to_string()])
        .args(["--named-server", "alpha", &docker_run("alpha", "")])
        .args([
            "--named-server",
            "beta",
            &docker_run("beta", " --omit-tool whoami"),
        ])
        // The same server run natively, only to measure what `docker run -i` costs the old proxy.
        .args([
            "--named-server",
            "native",
            &format!("{} --nonce OLDnative", common::testserver().display()),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(tmp.path().join("mcp-proxy.log")).unwrap())
        .stderr(std::fs::File::create(tmp.path().join("mcp-proxy.err")).unwrap())
        .spawn()
        .unwrap();
    let proxy_pid = proxy.id();
    cleanup.children.push(proxy);
    write(proxy_pid);
    let proxy_logs = [
        tmp.path().join("mcp-proxy.log"),
        tmp.path().join("mcp-proxy.err"),
    ];
    common::wait_for_logged(
        "mcp-proxy /status",
        Duration::from_secs(60),
        &[&proxy_logs[0], &proxy_logs[1]],
        || get_ok(format!("http://{gateway}:{}/status", ports.proxy)),
    );
    // What running each named server as `docker run -i` costs the old proxy (printed, not
    // asserted: a figure for the report).
    for (label, per_call) in [("warm session", false), ("session per call", true)] {
        for name in ["native", "alpha"] {
            let f = rt.block_on(old_proxy_latency(&gateway, ports.proxy, name, per_call));
            eprintln!(
                "mcp-proxy /servers/{name} ({label}, SSE): p50 {:.2} ms, p95 {:.2} ms",
                f.0, f.1
            );
        }
    }

    // 3. ONE LiteLLM for the run, started by mcpctl with the rendered config.
    let started = Instant::now();
    let llm_child = env
        .command(
            "services.yaml",
            &[
                "cutover",
                "litellm",
                "--port",
                &llm_port.to_string(),
                "--litellm-bin",
                litellm_bin.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tmp.path().join("cutover-litellm.err")).unwrap())
        .spawn()
        .unwrap();
    cleanup.children.push(llm_child);
    let llm = format!("http://127.0.0.1:{llm_port}");
    common::wait_for_logged(
        "LiteLLM liveliness",
        Duration::from_secs(240),
        &[&tmp.path().join("cutover-litellm.err")],
        || get_ok(format!("{llm}/health/liveliness")),
    );
    eprintln!(
        "LiteLLM answered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let out = env.mcpctl(
        "services.yaml",
        &["render", "--only", "litellm", "--out", "r"],
    );
    assert_eq!(code(&out), 0, "render: {}", show(&out));
    assert_eq!(
        std::fs::read(tmp.path().join("r/litellm/config.yaml")).unwrap(),
        std::fs::read(env.state.join("cutover/litellm/litellm-config.yaml")).unwrap(),
        "LiteLLM runs the rendered config byte for byte"
    );
    let echo_now = |server: &str| {
        rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            echo_through(&c, &llm, &env.key, server).await
        })
    };
    assert_eq!(echo_now("alpha").as_deref(), Ok("NEWalpha"));
    // The rendered config authenticates LiteLLM to every bridge (auth_type bearer_token with
    // os.environ/MCPCTL_TOKEN_LITELLM, set by `cutover litellm`): the echo above went through
    // it. beta's tool policy reaches LiteLLM: getenv is not listed and a call of it is refused.
    let (listed, denied_call) = rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let listed: Value = c
            .get(format!("{llm}/v1/mcp/tools"))
            .bearer_auth(&env.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let r = c
            .post(format!("{llm}/mcp-rest/tools/call"))
            .bearer_auth(&env.key)
            .json(&json!({"server_id": "beta", "name": "getenv", "arguments": {"name": "HOME"}}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        (listed, (status, body))
    });
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"beta-echo") && names.contains(&"alpha-getenv"),
        "LiteLLM lists both services' tools through the authenticated config: {names:?}"
    );
    assert!(
        !names.contains(&"beta-getenv"),
        "beta's denied tool is listed: {names:?}"
    );
    let refused = !denied_call.0.is_success()
        || serde_json::from_str::<Value>(&denied_call.1).is_ok_and(|b| b["isError"] == json!(true));
    assert!(
        refused && !denied_call.1.contains("/root") && !denied_call.1.contains("/tmp"),
        "a call of beta's denied getenv through LiteLLM: HTTP {} {}",
        denied_call.0,
        denied_call.1
    );
    eprintln!(
        "LiteLLM (authenticated): {} tools listed, beta-getenv absent; calling it: HTTP {}",
        names.len(),
        denied_call.0
    );

    // 4. Revert: both services to the old proxy (the parallel old setup, the rollback path).
    let out = env.mcpctl(
        "services.yaml",
        &["cutover", "revert", "-m", "start of cutover"],
    );
    assert_eq!(code(&out), 0, "revert: {}", show(&out));
    let r = routes(&rt, ports.admin, &env.state);
    assert_eq!(r["alpha"]["kind"], "legacy", "{r:#}");
    assert_eq!(
        r["beta"]["upstream"],
        json!(format!(
            "http://host.docker.internal:{}/servers/beta",
            ports.proxy
        ))
    );
    assert_eq!(echo_now("alpha").as_deref(), Ok("OLDalpha"));

    // 5. Check: old vs new (the serving revision directly) and through LiteLLM; beta's missing
    //    tool is found (exit 6).
    let out = env.mcpctl(
        "services.yaml",
        &[
            "--output",
            "json",
            "cutover",
            "check",
            "--litellm-url",
            &llm,
            "--latency-calls",
            "10",
        ],
    );
    assert_eq!(code(&out), 6, "check finds beta different: {}", show(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let svc = |report: &Value, name: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()
            .clone()
    };
    let kinds = |s: &Value| -> Vec<String> {
        s["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["kind"].as_str().unwrap().to_string())
            .collect()
    };
    let (alpha, beta) = (svc(&report, "alpha"), svc(&report, "beta"));
    assert_eq!(alpha["routed_to"], "legacy");
    assert_ne!(
        alpha["new"]["url"],
        json!(format!("http://127.0.0.1:{}", ports.alpha)),
        "new is the serving revision itself, not the edge's port (routed to the old proxy)"
    );
    for k in kinds(&alpha) {
        assert!(
            ![
                "tool_missing",
                "tool_extra",
                "schema",
                "smoke",
                "unreachable"
            ]
            .contains(&k.as_str()),
            "alpha is the same on both sides: {alpha:#}"
        );
    }
    assert!(
        kinds(&beta).contains(&"tool_extra".to_string())
            && beta["differences"].to_string().contains("whoami"),
        "beta's missing whoami is reported: {beta:#}"
    );
    assert_eq!(
        alpha["litellm"]["tools_listed"],
        json!(alpha["new"]["tools"].as_object().unwrap().len())
    );
    assert_eq!(alpha["litellm"]["smoke_rest"][0]["ok"], json!(true));
    assert_eq!(alpha["litellm"]["smoke_mcp"]["ok"], json!(true));
    eprintln!(
        "check through LiteLLM to the old proxy:\n{:#}",
        json!({"errors": alpha["litellm"]["errors"], "latency": alpha["litellm"]["latency"]})
    );

    // 6. Switch while LiteLLM is called: no failed call, OLD → NEW.
    for name in ["alpha", "beta"] {
        let (seen, failed) = calls_during(&rt, &llm, &env.key, name, || {
            let out = env.mcpctl("services.yaml", &["cutover", "switch", name]);
            assert_eq!(code(&out), 0, "switch {name}: {}", show(&out));
        });
        assert!(
            failed.is_empty(),
            "calls failed during the switch of {name}: {failed:?}"
        );
        nonce_changes(&seen, &format!("OLD{name}"), &format!("NEW{name}"));
        eprintln!(
            "switch {name}: {} calls through LiteLLM, 0 failed",
            seen.len()
        );
    }
    let r = routes(&rt, ports.admin, &env.state);
    assert_eq!(r["alpha"]["kind"], "stack", "{r:#}");
    assert_eq!(
        r["alpha"]["upstream"],
        json!(format!("http://{project}-alpha-r1:8080")),
        "{r:#}"
    );

    // 7. A clean check of alpha, now on the stack through LiteLLM.
    let out = env.mcpctl(
        "services.yaml",
        &[
            "--output",
            "json",
            "-q",
            "cutover",
            "check",
            "alpha",
            "--litellm-url",
            &llm,
            "--latency-calls",
            "50",
        ],
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&out)));
    eprintln!(
        "check of alpha on the stack through LiteLLM:\n{:#}",
        json!({"errors": report["services"][0]["litellm"]["errors"],
               "latency": report["services"][0]["litellm"]["latency"]})
    );
    assert_eq!(
        code(&out),
        0,
        "alpha on the stack checks clean: {}",
        show(&out)
    );
    let errors = report["services"][0]["litellm"]["errors"]
        .as_array()
        .unwrap();
    assert_eq!(
        errors.len(),
        4,
        "unknown tool and bad arguments, REST and /mcp"
    );
    assert!(errors.iter().all(|e| e["clean"] == json!(true)));

    // 8. Revert alpha while LiteLLM is called: NEW → OLD, nothing fails; then back.
    let (seen, failed) = calls_during(&rt, &llm, &env.key, "alpha", || {
        let out = env.mcpctl("services.yaml", &["cutover", "revert", "alpha"]);
        assert_eq!(code(&out), 0, "revert alpha: {}", show(&out));
    });
    assert!(
        failed.is_empty(),
        "calls failed during the revert: {failed:?}"
    );
    nonce_changes(&seen, "NEWalpha", "OLDalpha");

    // Switching takes the lock deploy takes: while another run holds it, exit 5, route unchanged.
    {
        let keys = mcpctl::engine::labels::Keys::new("com.mcp");
        let engine = rt
            .block_on(mcpctl::engine::docker::DockerEngine::connect())
            .unwrap();
        let me = mcpctl::rollout::lock::LockInfo::current("deploy (test holder)", None);
        let got = rt
            .block_on(mcpctl::rollout::lock::acquire(
                &engine, &keys, &project, &me, false,
            ))
            .unwrap();
        let held = got.expect("the test takes the lock");
        let out = env.mcpctl("services.yaml", &["cutover", "switch", "alpha"]);
        assert_eq!(code(&out), 5, "switch under a held lock: {}", show(&out));
        assert!(
            text(&out.stderr).contains("deploy (test holder)"),
            "{}",
            show(&out)
        );
        assert_eq!(
            routes(&rt, ports.admin, &env.state)["alpha"]["kind"],
            "legacy"
        );
        rt.block_on(mcpctl::rollout::lock::release(&engine, &project, &held));
    }
    let out = env.mcpctl("services.yaml", &["cutover", "switch", "alpha"]);
    assert_eq!(code(&out), 0, "switch alpha again: {}", show(&out));
    let out = env.mcpctl("services.yaml", &["--output", "json", "cutover", "status"]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["route"]["kind"] == "stack" && s["legacy_answers"] == json!(true)),
        "{st:#}"
    );

    // A switch to a revision that stopped answering: beta back on the old proxy, its revision
    // stopped. `switch` refuses before touching the route; with --force it routes to the recorded
    // revision, finds it dead through the published port and restores the old proxy's route
    // (exit 1). Started again, it switches.
    let out = env.mcpctl("services.yaml", &["cutover", "revert", "beta"]);
    assert_eq!(code(&out), 0, "revert beta: {}", show(&out));
    let beta_container = format!("{project}-beta-r1");
    common::must(Command::new("docker").args(["stop", "-t", "2", &beta_container]));
    // Without --force the pre-flight refuses: nothing running to check, the route is untouched.
    let out = env.mcpctl("services.yaml", &["cutover", "switch", "beta"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(text(&out.stdout).contains("REFUSED"), "{}", show(&out));
    assert_eq!(
        routes(&rt, ports.admin, &env.state)["beta"]["kind"],
        "legacy"
    );
    // With --force the switch happens, the post-switch check fails and the old route comes back.
    let out = env.mcpctl("services.yaml", &["cutover", "switch", "beta", "--force"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("the previous route was restored"),
        "{}",
        show(&out)
    );
    assert_eq!(
        routes(&rt, ports.admin, &env.state)["beta"]["kind"],
        "legacy"
    );
    assert_eq!(echo_now("beta").as_deref(), Ok("OLDbeta"));
    common::must(Command::new("docker").args(["start", &beta_container]));
    wait_for("beta healthy again", Duration::from_secs(30), || {
        let out = common::must(Command::new("docker").args([
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &beta_container,
        ]));
        (out.trim() == "healthy").then_some(())
    });
    let out = env.mcpctl("services.yaml", &["cutover", "switch", "beta"]);
    assert_eq!(code(&out), 0, "switch beta again: {}", show(&out));
    assert_eq!(echo_now("beta").as_deref(), Ok("NEWbeta"));

    // 9. Retire: refused within the manifest's 1h clean period; refused without confirmation;
    //    then done with a 1s clean period, and revert is no longer possible.
    let out = env.mcpctl("services.yaml", &["cutover", "retire"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(text(&out.stderr).contains("clean period"), "{}", show(&out));
    std::thread::sleep(Duration::from_millis(1100)); // the clean period itself, not a sync
    let out = env.mcpctl(
        "services.yaml",
        &["cutover", "retire", "--clean-period", "1s"],
    );
    assert_eq!(code(&out), 2, "no TTY and no --yes: {}", show(&out));
    assert_eq!(echo_now("beta").as_deref(), Ok("NEWbeta"));
    assert!(get_ok(format!("http://{gateway}:{}/status", ports.proxy)).is_some());
    let out = env.mcpctl(
        "services.yaml",
        &[
            "--yes",
            "cutover",
            "retire",
            "--clean-period",
            "1s",
            "-m",
            "clean for the period",
        ],
    );
    assert_eq!(code(&out), 0, "retire: {}", show(&out));
    let proxy = &mut cleanup.children[0];
    wait_for("mcp-proxy to exit", Duration::from_secs(10), || {
        proxy.try_wait().unwrap()
    });
    // LiteLLM keeps serving from the stack after the old proxy is gone (it never restarted).
    assert_eq!(echo_now("alpha").as_deref(), Ok("NEWalpha"));
    assert_eq!(echo_now("beta").as_deref(), Ok("NEWbeta"));
    let out = env.mcpctl("services.yaml", &["cutover", "revert"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(text(&out.stderr).contains("retired"), "{}", show(&out));
    // Even with the retirement record removed by hand, revert checks the old proxy first and
    // refuses to route to one that does not answer; the routes stay on the stack.
    let path = env.state.join("cutover.json");
    let mut st: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    st["retired"] = Value::Null;
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    let out = env.mcpctl("services.yaml", &["cutover", "revert", "alpha"]);
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        text(&out.stdout).contains("REFUSED: the old proxy does not answer"),
        "{}",
        show(&out)
    );
    assert_eq!(
        routes(&rt, ports.admin, &env.state)["alpha"]["kind"],
        "stack"
    );

    // The ledger has every step.
    let commands: Vec<String> = ledger(&env.state)
        .iter()
        .filter(|e| e["event"] == "cutover")
        .map(|e| {
            format!(
                "{} {}",
                e["command"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "cutover revert ok",
        "cutover check differences",
        "cutover switch ok",
        "cutover check ok",
        "cutover retire ok",
        "cutover revert error",
    ] {
        assert!(commands.iter().any(|c| c == want), "{want} in {commands:?}");
    }
    wait_for(
        "the old proxy's containers to go",
        Duration::from_secs(20),
        || {
            let out = common::must(Command::new("docker").args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=mcpctl-test.legacy={project}"),
            ]));
            out.trim().is_empty().then_some(())
        },
    );
    let out = env.mcpctl("services.yaml", &["--yes", "down"]);
    assert_eq!(code(&out), 0, "down: {}", show(&out));
}
