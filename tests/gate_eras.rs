//! mcpctl's own MCP client, deploy gate and `bridge healthcheck --mcp` speak both eras against a
//! real `mcpctl bridge` in front of `mcp-testserver`: a shared bridge (2026-07-28 + legacy) is
//! gated in both eras, a per_session bridge (modern requests refused with a non-modern error)
//! in the legacy era only; the client's auto mode ends up modern on the first and legacy on the
//! second; the healthcheck takes the stateless path on the first (no session) and falls back to
//! initialize on the second. The fake legacy-only / modern-only / lying servers are the unit
//! tests of `src/health/gate.rs` and `src/mcp/client.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mcpctl::manifest::{Health, Transport};
use mcpctl::mcp::{Era, Mode, Session};

/// A bridge on 127.0.0.1 (port chosen by the OS, read from its log), killed when dropped.
struct Bridge {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Bridge {
    fn start(dir: &Path, nonce: &str, bridge_args: &[&str]) -> Bridge {
        let log = dir.join(format!("bridge-{nonce}.log"));
        let mut cmd = Command::new(mcpctl());
        cmd.args(["bridge", "--listen", "127.0.0.1:0"])
            .args(bridge_args)
            .arg("--")
            .arg(testserver())
            .args(["--nonce", nonce])
            .env("MCPCTL_LOG", "info")
            .stdin(Stdio::null());
        let mut child = log_to(&mut cmd, &log).spawn().expect("bridge starts");
        let port = wait_for_logged(
            &format!("bridge {nonce} ready"),
            Duration::from_secs(30),
            &[&log],
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("bridge {nonce} exited ({status})\n{}", log_tail(&log, 40));
                }
                let port = logged_bridge_port(&log)?;
                ready(port).then_some(port)
            },
        );
        Bridge { child, port, log }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn tail(&self) -> String {
        log_tail(&self.log, 30)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /readyz answers 200 (a blocking one-shot HTTP/1.0 request).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

/// One series of the bridge's /metrics.
fn metric(port: u16, series: &str) -> f64 {
    let text = runtime().block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

const MODERN_REQUESTS: &str = "mcp_bridge_era_requests_total{era=\"modern\"}";
const LEGACY_REQUESTS: &str = "mcp_bridge_era_requests_total{era=\"legacy\"}";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn health() -> Health {
    serde_yaml_ng::from_str(
        "timeout: 20s\nexpect_tools: {include: [echo]}\nsmoke: [{tool: echo, args: {text: hi}, expect: {contains: 'hi|'}}]",
    )
    .unwrap()
}

fn gate(base: &str, transport: Transport, token: Option<&str>) -> mcpctl::health::GateReport {
    let h = health();
    runtime().block_on(mcpctl::health::gate::run(
        base,
        transport,
        token,
        &h,
        None,
        Instant::now() + h.timeout,
    ))
}

fn names(r: &mcpctl::health::GateReport) -> Vec<&str> {
    r.checks.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn a_shared_bridge_is_gated_in_both_eras() {
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "g1", &[]);
    let base = b.base();
    for transport in [Transport::Http, Transport::Sse] {
        let modern_before = metric(b.port, MODERN_REQUESTS);
        let r = gate(&base, transport, None);
        assert!(r.passed, "{transport:?}: {r:#?}\n{}", b.tail());
        assert_eq!(r.eras, ["2026-07-28", "legacy"], "{r:#?}");
        assert_eq!(r.era().as_deref(), Some("2026-07-28+legacy"));
        assert_eq!(
            names(&r),
            [
                "initialize",
                "tools/list",
                "smoke echo",
                "discover",
                "tools/list (2026-07-28)"
            ]
        );
        assert!(
            r.supported_versions.contains(&"2026-07-28".to_string())
                && r.supported_versions.contains(&"2025-11-25".to_string()),
            "{:?}",
            r.supported_versions
        );
        let modern = &r.checks[4];
        assert!(
            modern
                .detail
                .contains("the same tools and schemas as the legacy era"),
            "{}",
            modern.detail
        );
        // The modern checks went through the bridge's stateless path: at least the probe and
        // the stateless tools/list.
        let modern_after = metric(b.port, MODERN_REQUESTS);
        assert!(
            modern_after - modern_before >= 2.0,
            "{modern_before} → {modern_after}"
        );
    }
}

#[test]
fn a_per_session_bridge_is_gated_in_the_legacy_era_only() {
    let dir = TestDir::new();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-eras\n").unwrap();
    let b = Bridge::start(
        dir.path(),
        "g2",
        &[
            "--session-model",
            "per_session",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    let r = gate(&b.base(), Transport::Http, Some("s3cret-eras"));
    assert!(r.passed, "{r:#?}\n{}", b.tail());
    assert_eq!(r.eras, ["legacy"]);
    assert_eq!(names(&r), ["initialize", "tools/list", "smoke echo"]);
    let probe = r.era_probe.as_deref().unwrap();
    assert!(
        probe.contains("-32600") && probe.contains("per_session"),
        "{probe}"
    );
    // Without the token the handshake fails as before, naming the 401.
    let h: Health = serde_yaml_ng::from_str("timeout: 2s").unwrap();
    let r = runtime().block_on(mcpctl::health::gate::run(
        &b.base(),
        Transport::Http,
        None,
        &h,
        None,
        Instant::now() + h.timeout,
    ));
    let f = r.failure().unwrap();
    assert_eq!(f.name, "initialize");
    assert!(f.detail.contains("401"), "{}", f.detail);
}

#[test]
fn the_auto_client_speaks_modern_where_it_can_and_legacy_elsewhere() {
    let dir = TestDir::new();
    let shared = Bridge::start(dir.path(), "g3", &[]);
    let per_session = Bridge::start(dir.path(), "g4", &["--session-model", "per_session"]);
    let opts = mcpctl::mcp::Options {
        timeout: Duration::from_secs(10),
        bearer_token: None,
    };
    runtime().block_on(async {
        let mut s = Session::connect_mode(&shared.base(), Transport::Http, &opts, Mode::Auto)
            .await
            .unwrap();
        assert_eq!(s.era, Era::Modern);
        assert_eq!(s.protocol_version, "2026-07-28");
        let r = s
            .call_tool("echo", serde_json::json!({"text": "x"}))
            .await
            .unwrap();
        assert_eq!((r.is_error, r.text.as_str()), (false, "x|g3"));
        s.close().await;

        let mut s = Session::connect_mode(&per_session.base(), Transport::Http, &opts, Mode::Auto)
            .await
            .unwrap();
        assert_eq!(s.era, Era::Legacy);
        let r = s
            .call_tool("echo", serde_json::json!({"text": "y"}))
            .await
            .unwrap();
        assert_eq!(r.text, "y|g4");
        s.close().await;
        let e = Session::connect_mode(&per_session.base(), Transport::Http, &opts, Mode::Modern)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a 2026-07-28 server"), "{e}");
    });
}

fn healthcheck(port: u16, token_file: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(mcpctl());
    cmd.args([
        "bridge",
        "healthcheck",
        "--mcp",
        "--port",
        &port.to_string(),
    ])
    .env_remove("MCPCTL_BRIDGE_TOKEN_FILE")
    .env_remove("MCPCTL_BRIDGE_TOKEN");
    if let Some(f) = token_file {
        cmd.arg("--token-file").arg(f);
    }
    cmd.output().unwrap()
}

#[test]
fn healthcheck_mcp_is_stateless_on_a_shared_bridge_and_falls_back_on_per_session() {
    let dir = TestDir::new();
    let shared = Bridge::start(dir.path(), "g5", &[]);
    let (modern, legacy) = (
        metric(shared.port, MODERN_REQUESTS),
        metric(shared.port, LEGACY_REQUESTS),
    );
    let t = Instant::now();
    let out = healthcheck(shared.port, None);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        shared.tail()
    );
    eprintln!("healthcheck --mcp (shared, 2026-07-28): {:?}", t.elapsed());
    assert_eq!(
        metric(shared.port, MODERN_REQUESTS) - modern,
        2.0,
        "server/discover + tools/list"
    );
    assert_eq!(
        metric(shared.port, LEGACY_REQUESTS) - legacy,
        0.0,
        "no session was opened"
    );

    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-hc\n").unwrap();
    let per_session = Bridge::start(
        dir.path(),
        "g6",
        &[
            "--session-model",
            "per_session",
            "--token-file",
            token.to_str().unwrap(),
        ],
    );
    let legacy = metric(per_session.port, LEGACY_REQUESTS);
    let t = Instant::now();
    let out = healthcheck(per_session.port, Some(&token));
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        per_session.tail()
    );
    eprintln!("healthcheck --mcp (per_session, legacy): {:?}", t.elapsed());
    assert!(
        metric(per_session.port, LEGACY_REQUESTS) - legacy >= 1.0,
        "the legacy session's requests"
    );
    // A wrong token is unhealthy, and says so.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = healthcheck(per_session.port, Some(&wrong));
    assert!(!out.status.success());
}
