//! Access-control tier, on the real engine (docs/contracts.md "Access control"). One deploy of a
//! small manifest of the test MCP server as three services, then the checks in sequence:
//!
//! - alpha: the stack defaults (bearer tokens of `litellm`, `ops`, `bulk`; `bulk` limited to
//!   1 request/s, burst 3), `tools: {deny: [slow_echo]}`;
//! - beta (legacy SSE): `auth: {consumers: [litellm], audit_arguments: true}`;
//! - gamma: `auth: {mode: jwt}` with the stack's `auth.jwt` (a JWKS minted by this test).
//!
//! 1. no token / a wrong token → 401 with the `WWW-Authenticate` challenge, on `/mcp` and `/sse`
//!    of every published port, counted by reason; `/metrics` stays open;
//! 2. consumers' tokens (`mcpctl token show`) list and call tools; a session belongs to the
//!    consumer that opened it (another consumer naming it gets 404);
//! 3. a consumer narrowed out of a service is refused there and works elsewhere;
//! 4. a consumer's rate limit: 429 + `Retry-After`, counted, other consumers unaffected;
//! 5. `mcpctl audit` shows exactly the calls made, with consumer, tool and outcome, and argument
//!    values only where `audit_arguments` asks for them;
//! 6. JWT: a valid access token works (audited as `jwt:<client_id>`); expired, wrong audience,
//!    wrong issuer and foreign-key tokens get 401 `invalid_token`; RFC 9728 metadata; consumer
//!    tokens (mcpctl's gate) still work in mode jwt;
//! 7. no token in `docker inspect`, container logs, image history and layers, rendered files,
//!    the ledger, the state directory (but `auth/`), or plan/status/token list output;
//! 8. `mcpctl token rotate` → plan shows the services changing → deploy → old token 401, new
//!    token works.
//!
//! Figures (`ACCESS …` lines, `--nocapture`): the per-step times and the time of one
//! authenticated call (bearer, JWT) for orientation; the benchmark lives elsewhere.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::{text, unique_project, Cleanup};
use mcpctl::manifest::Transport;
use mcpctl::mcp::{McpError, Session};
use serde_json::{json, Value};

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "mcp-test";
const JWT_CLIENT: &str = "test-client";
/// Every consumer the manifest declares (mcpctl is built in).
const CONSUMERS: [&str; 3] = ["litellm", "ops", "bulk"];
const SERVICES: [&str; 3] = ["alpha", "beta", "gamma"];

struct Stack {
    dir: common::TestDir,
    project: String,
    ports: BTreeMap<&'static str, u16>,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    _cleanup: Cleanup,
}

impl Stack {
    fn new() -> Self {
        let project = unique_project("acc");
        let mut ports = BTreeMap::new();
        for s in SERVICES {
            let mut p = common::free_port();
            while ports.values().any(|q| *q == p) {
                p = common::free_port();
            }
            ports.insert(s, p);
        }
        Stack {
            dir: common::TestDir::new(),
            ports,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No kept-alive connections: a deploy replaces the container behind a port, and a
            // pooled connection to the old one would fail the next request.
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _cleanup: Cleanup {
                project: project.clone(),
            },
            project,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn base(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[service])
    }

    fn write_manifest(&self, jwks: &Value) {
        std::fs::write(
            self.dir.path().join("jwks.json"),
            serde_json::to_vec_pretty(jwks).unwrap(),
        )
        .unwrap();
        let runtime = common::runtime_image();
        let service = |name: &str, transport: &str, extra: &str| {
            format!(
                r#"  {name}:
    port: {port}
    transport: {transport}
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: [/usr/local/bin/mcp-testserver, --nonce, {name}]
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 10s
      expect_tools: {{include: [echo]}}
      smoke:
        - {{tool: echo, args: {{text: hi}}, expect: {{is_error: false, contains: "hi|"}}}}
{extra}"#,
                port = self.ports[name],
            )
        };
        let manifest = format!(
            r#"version: 1
project: {project}
auth:
  consumers:
    litellm: {{}}
    ops: {{}}
    bulk: {{rate_limit: {{per_sec: 1, burst: 3}}}}
  jwt: {{issuer: "{ISSUER}", audience: [{AUDIENCE}], jwks_file: jwks.json}}
services:
{alpha}{beta}{gamma}"#,
            project = self.project,
            alpha = service("alpha", "http", "    tools: {deny: [slow_echo]}\n"),
            beta = service(
                "beta",
                "sse",
                "    auth: {consumers: [litellm], audit_arguments: true}\n"
            ),
            gamma = service("gamma", "http", "    auth: {mode: jwt}\n"),
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

    /// `mcpctl <args>` that must exit 0; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.mcpctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "mcpctl {args:?}: {}",
            show(&out)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("mcpctl {a:?}: not JSON ({e}): {out}"))
    }

    /// `mcpctl token show NAME`.
    fn token(&self, consumer: &str) -> String {
        let t = self.ok(&["token", "show", consumer]).trim().to_string();
        assert!(
            t.starts_with("mcp_") && t.len() == 68,
            "a generated token is mcp_ + 64 hex ({consumer}: {} chars)",
            t.len()
        );
        t
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// An initialized MCP session with `service`, sending `token`.
    fn session(&self, service: &str, token: &str) -> Result<Session, McpError> {
        let transport = if service == "beta" {
            Transport::Sse
        } else {
            Transport::Http
        };
        let opts = common::mcp_options(Duration::from_secs(5), Some(token));
        self.block(Session::connect_with(&self.base(service), transport, &opts))
    }

    /// echo through a fresh session as `token`: the reply's text (`text|<service>`).
    fn echo(&self, service: &str, token: &str, what: &str) -> String {
        let mut s = self
            .session(service, token)
            .unwrap_or_else(|e| panic!("{what}: MCP session with {service}: {e}"));
        let r = self
            .block(s.call_tool("echo", json!({"text": what})))
            .unwrap_or_else(|e| panic!("{what}: echo on {service}: {e}"));
        self.block(s.close());
        assert!(!r.is_error, "{what}: echo on {service} failed: {}", r.text);
        assert_eq!(r.text, format!("{what}|{service}"), "{what}");
        r.text
    }

    /// A raw POST of one JSON-RPC message to `/mcp` of `service`.
    fn post(
        &self,
        service: &str,
        token: Option<&str>,
        session: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut rb = self
            .http
            .post(format!("{}/mcp", self.base(service)))
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(id) = session {
            rb = rb.header("mcp-session-id", id);
        }
        self.block(rb.send())
            .unwrap_or_else(|e| panic!("POST {service}/mcp: {e}"))
    }

    /// A raw GET of `/sse` of `service` (the stream is dropped at once when it opens).
    fn get_sse(&self, service: &str, token: Option<&str>) -> reqwest::Response {
        let mut rb = self
            .http
            .get(format!("{}/sse", self.base(service)))
            .header("accept", "text/event-stream");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.block(rb.send())
            .unwrap_or_else(|e| panic!("GET {service}/sse: {e}"))
    }

    /// The bridge's metrics (`/metrics` needs no token).
    fn metrics(&self, service: &str) -> String {
        let r = self
            .block(
                self.http
                    .get(format!("{}/metrics", self.base(service)))
                    .send(),
            )
            .unwrap_or_else(|e| panic!("GET {service}/metrics: {e}"));
        assert_eq!(r.status(), 200, "GET {service}/metrics is open");
        self.block(r.text()).unwrap()
    }

    /// `mcpctl audit --output json` with `args`, retried until it holds `want` records (the
    /// bridge writes audit lines from a queue): the records.
    fn audit(&self, args: &[&str], want: usize) -> (Vec<Value>, String) {
        let mut a = vec!["--output", "json", "audit"];
        a.extend_from_slice(args);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.mcpctl(&a);
            assert_eq!(out.status.code(), Some(0), "{}", show(&out));
            let raw = text(&out.stdout);
            let v: Value = serde_json::from_str(&raw).expect("audit JSON");
            let records = v["records"].as_array().expect("records").clone();
            assert!(
                records.len() <= want,
                "more audit records than calls made ({} > {want}):\n{raw}",
                records.len()
            );
            assert_eq!(v["count"], records.len(), "{raw}");
            assert_eq!(v["truncated"], false, "{raw}");
            if records.len() == want {
                return (records, raw);
            }
            assert!(
                Instant::now() < deadline,
                "`mcpctl {}` shows {} records, not {want}, after 10 s:\n{raw}",
                a.join(" "),
                records.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "access-test", "version": "1"}}})
}

/// A sample's value in Prometheus text (`series` with its labels); 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

fn refused(metrics: &str, reason: &str) -> f64 {
    sample(
        metrics,
        &format!("mcp_bridge_auth_refused_total{{reason=\"{reason}\"}}"),
    )
}

fn challenge(r: &reqwest::Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A wrong token of the right shape (no consumer holds it).
fn wrong_token() -> String {
    format!("mcp_{}", "0".repeat(64))
}

/// An ES256 signing key and its public JWK (as src/bridge/jwt.rs's unit tests make them).
struct TestKey {
    enc: jsonwebtoken::EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &str) -> TestKey {
    use p256::pkcs8::EncodePrivateKey;
    let sk = loop {
        if let Ok(sk) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break sk;
        }
    };
    let enc = jsonwebtoken::EncodingKey::from_ec_der(sk.to_pkcs8_der().unwrap().as_bytes());
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!(kid);
    TestKey { enc, jwk }
}

fn mint(key: &TestKey, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = key.jwk["kid"].as_str().map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
}

fn claims(f: impl FnOnce(&mut Value)) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let mut c = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": JWT_CLIENT,
                       "iat": now, "exp": now + 300});
    f(&mut c);
    c
}

/// Files under `dir` (recursively) whose bytes contain any of `tokens`: `grep -F`, fast over
/// image layers of a hundred MB.
fn files_containing(dir: &Path, tokens: &[(String, String)]) -> Vec<String> {
    let mut cmd = Command::new("grep");
    cmd.args(["-r", "-l", "-a", "-F"]);
    for (_, t) in tokens {
        cmd.arg("-e").arg(t);
    }
    let out = cmd.arg(dir).output().expect("grep runs");
    // grep: 0 found, 1 nothing found, 2 trouble.
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "grep in {}: {}",
        dir.display(),
        show(&out)
    );
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn assert_no_token(what: &str, body: &str, tokens: &[(String, String)]) {
    for (consumer, t) in tokens {
        assert!(
            !body.contains(t.as_str()),
            "{consumer}'s token appears in {what}"
        );
    }
}

#[test]
fn access_control_on_a_deployed_stack() {
    if !common::docker_available("access") {
        return;
    }
    let started = Instant::now();
    let s = Stack::new();
    // Request futures (reqwest's timeouts) are built outside `block_on`: in the runtime's context.
    let _rt = s.rt.enter();
    let key = ec_key("k1");
    let stranger = ec_key("k1"); // same kid, another key: a bad signature
    s.write_manifest(&json!({"keys": [key.jwk]}));

    let t = Instant::now();
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(out.status.code(), Some(0), "deploy: {}", show(&out));
    // mcpctl's gate (initialize, tools/list, the smoke call) passed on every service with its
    // own token, gamma (mode jwt) included: each serves a gated revision.
    let status = s.json(&["status"]);
    for svc in SERVICES {
        let row = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == svc)
            .unwrap_or_else(|| panic!("status names {svc}: {status}"));
        assert_eq!(row["state"], "running", "{svc}: {row}");
        assert!(row["revision"].is_string(), "{svc}: {row}");
    }
    eprintln!(
        "ACCESS deploy of 3 services: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let tokens: Vec<(String, String)> = std::iter::once("mcpctl")
        .chain(CONSUMERS)
        .map(|c| (c.to_string(), s.token(c)))
        .collect();
    let token = |c: &str| -> String {
        tokens
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    assert_eq!(
        token("mcpctl"),
        common::mcpctl_token(&s.state()),
        "`token show mcpctl` is the token derived from the install key"
    );
    let (litellm, ops, bulk) = (token("litellm"), token("ops"), token("bulk"));

    let step = |n: u32, name: &str, t: Instant| {
        eprintln!(
            "ACCESS {n}. {name}: ok ({:.1} s)",
            t.elapsed().as_secs_f64()
        );
    };

    // 1. No token, a wrong token: 401 with the challenge, on both transports of every port.
    let t = Instant::now();
    let wrong = wrong_token();
    for svc in SERVICES {
        let before = s.metrics(svc);
        for (token, what) in [(None, "no token"), (Some(wrong.as_str()), "a wrong token")] {
            for (path, r) in [
                ("POST /mcp", s.post(svc, token, None, &initialize())),
                ("GET /sse", s.get_sse(svc, token)),
            ] {
                let ctx = format!("{svc} {path} with {what}");
                assert_eq!(r.status(), 401, "{ctx}");
                let ch = challenge(&r);
                assert!(ch.starts_with("Bearer"), "{ctx}: WWW-Authenticate {ch:?}");
                if token.is_some() {
                    assert!(
                        ch.contains("error=\"invalid_token\""),
                        "{ctx}: WWW-Authenticate {ch:?}"
                    );
                } else {
                    assert!(!ch.contains("error="), "{ctx}: WWW-Authenticate {ch:?}");
                }
                if svc == "gamma" {
                    let meta = format!(
                        "resource_metadata=\"{}/.well-known/oauth-protected-resource\"",
                        s.base(svc)
                    );
                    assert!(ch.contains(&meta), "{ctx}: WWW-Authenticate {ch:?}");
                }
            }
        }
        let after = s.metrics(svc);
        for reason in ["missing", "invalid_token"] {
            assert_eq!(
                refused(&after, reason) - refused(&before, reason),
                2.0,
                "{svc}: mcp_bridge_auth_refused_total{{reason=\"{reason}\"}} counts the two refusals"
            );
        }
        // A header that is not a bearer token counts as missing.
        let r = s.block(
            s.http
                .post(format!("{}/mcp", s.base(svc)))
                .header("authorization", format!("Basic {litellm}"))
                .json(&initialize())
                .send(),
        );
        assert_eq!(r.unwrap().status(), 401, "{svc}: Basic is not Bearer");
    }
    step(1, "unauthenticated requests are refused", t);

    // 2. Consumers' tokens work; a session belongs to whoever opened it.
    let t = Instant::now();
    for (who, tok) in [("litellm", &litellm), ("ops", &ops)] {
        let mut m = s
            .session("alpha", tok)
            .unwrap_or_else(|e| panic!("{who} on alpha: {e}"));
        let names: Vec<String> = s
            .block(m.list_tools())
            .unwrap_or_else(|e| panic!("{who}: tools/list: {e}"))
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.iter().any(|n| n == "echo"), "{who}: {names:?}");
        assert!(!names.iter().any(|n| n == "slow_echo"), "{who}: {names:?}");
        let r = s
            .block(m.call_tool("echo", json!({"text": who})))
            .unwrap_or_else(|e| panic!("{who}: echo: {e}"));
        assert_eq!(r.text, format!("{who}|alpha"), "{who}");
        s.block(m.close());
    }
    let r = s.post("alpha", Some(&ops), None, &initialize());
    assert_eq!(r.status(), 200, "ops opens a session");
    let sid = r
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_string();
    drop(r);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = s.post("alpha", Some(&ops), Some(&sid), &initialized);
    assert!(r.status().is_success(), "ops: initialized: {}", r.status());
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let r = s.post("alpha", Some(&litellm), Some(&sid), &list);
    assert_eq!(
        r.status(),
        404,
        "litellm naming ops' session gets 404 (not found)"
    );
    let r = s.block(
        s.http
            .delete(format!("{}/mcp", s.base("alpha")))
            .bearer_auth(&litellm)
            .header("mcp-session-id", &sid)
            .send(),
    );
    assert_eq!(
        r.unwrap().status(),
        404,
        "litellm cannot end ops' session either"
    );
    let r = s.post("alpha", Some(&ops), Some(&sid), &list);
    assert_eq!(r.status(), 200, "ops' session still works for ops");
    step(2, "consumers call tools; sessions are their opener's", t);

    // 3. beta takes litellm only: ops is refused there, works on alpha.
    let t = Instant::now();
    let before = s.metrics("beta");
    match s.session("beta", &ops) {
        Err(McpError::Http { status: 401, .. }) => {}
        Err(e) => panic!("ops on beta: expected HTTP 401, got {e}"),
        Ok(_) => panic!("ops on beta: a session was opened"),
    }
    let r = s.post("beta", Some(&ops), None, &initialize());
    assert_eq!(r.status(), 401, "ops POST /mcp on beta");
    assert!(challenge(&r).contains("error=\"invalid_token\""));
    assert_eq!(
        refused(&s.metrics("beta"), "invalid_token") - refused(&before, "invalid_token"),
        2.0
    );
    s.echo("beta", &litellm, "litellm-on-beta");
    s.echo("alpha", &ops, "ops-on-alpha");
    step(3, "a consumer narrowed out is refused there only", t);

    // 4. bulk's rate (1/s, burst 3): a quick burst of 10 is cut; litellm in the same second is not.
    let t = Instant::now();
    let before = s.metrics("alpha");
    // tools/list on a session nobody has: 404 once past the limiter, 429 when limited (no
    // session is created).
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for _ in 0..10 {
        let r = s.post("alpha", Some(&bulk), Some("no-such-session"), &list);
        if r.status() == 429 {
            let ra = r
                .headers()
                .get("retry-after")
                .expect("429 carries Retry-After")
                .to_str()
                .unwrap()
                .parse::<u64>()
                .expect("Retry-After in seconds");
            retry_after.push(ra);
        }
        statuses.push(r.status().as_u16());
    }
    let burst_s = t.elapsed().as_secs_f64();
    let limited = statuses.iter().filter(|c| **c == 429).count();
    let passed = statuses.iter().filter(|c| **c == 404).count();
    assert_eq!(limited + passed, 10, "only 404 or 429: {statuses:?}");
    // The burst, plus what refilled at 1/s while the requests ran.
    let most = 3 + burst_s.ceil() as usize;
    assert!(
        (3..=most).contains(&passed) && limited >= 10 - most,
        "burst 3 at 1/s: 3 (up to {most}) pass in {burst_s:.2} s, the rest get 429: {statuses:?}"
    );
    assert!(
        retry_after.iter().all(|s| (1..=3).contains(s)),
        "{retry_after:?}"
    );
    // Right away: litellm has its own (unlimited) bucket.
    for i in 0..5 {
        let r = s.post("alpha", Some(&litellm), Some("no-such-session"), &list);
        assert_eq!(r.status(), 404, "litellm request {i} after bulk's burst");
    }
    let after = s.metrics("alpha");
    let series = |c: &str| format!("mcp_bridge_rate_limited_total{{consumer=\"{c}\"}}");
    assert_eq!(
        sample(&after, &series("bulk")) - sample(&before, &series("bulk")),
        limited as f64,
        "every 429 is counted under bulk"
    );
    assert_eq!(
        sample(&after, &series("litellm")),
        0.0,
        "litellm was never limited"
    );
    eprintln!("ACCESS rate limit: bulk's burst of 10 → {statuses:?}, Retry-After {retry_after:?}");
    step(4, "rate limit per consumer", t);

    // 5. Audit: exactly the calls made since now, without argument values (but on beta).
    let t = Instant::now();
    let since = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let marker = format!("audit-{}", s.project);
    let texts: Vec<String> = (1..=3).map(|i| format!("{marker}-litellm-{i}")).collect();
    {
        let mut m = s.session("alpha", &litellm).expect("litellm on alpha");
        for tx in &texts {
            let r = s.block(m.call_tool("echo", json!({"text": tx}))).unwrap();
            assert!(!r.is_error, "{}", r.text);
        }
        match s.block(m.call_tool("slow_echo", json!({"text": format!("{marker}-denied")}))) {
            Err(McpError::Rpc { code: -32602, .. }) => {}
            other => panic!("slow_echo is denied on alpha: {other:?}"),
        }
        s.block(m.close());
    }
    s.echo("alpha", &ops, &format!("{marker}-ops"));
    s.echo("beta", &litellm, &format!("{marker}-beta"));
    let (records, raw) = s.audit(&["--service", "alpha", "--since", &since], 5);
    let mut seen: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            assert_eq!(r["service"], "alpha", "{r}");
            assert!(
                r.get("arguments").is_none(),
                "no arguments without audit_arguments: {r}"
            );
            let rid = r["request_id"].as_str().unwrap_or_default();
            assert!(
                rid.len() == 16 && rid.chars().all(|c| c.is_ascii_hexdigit()),
                "{r}"
            );
            assert!(!r["rpc_id"].as_str().unwrap_or_default().is_empty(), "{r}");
            assert!(r["duration_ms"].as_f64().is_some(), "{r}");
            (
                r["consumer"].as_str().unwrap().to_string(),
                r["tool"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String, String)> = [
        ("litellm", "echo", "ok"),
        ("litellm", "echo", "ok"),
        ("litellm", "echo", "ok"),
        ("litellm", "slow_echo", "error"),
        ("ops", "echo", "ok"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    want.sort();
    assert_eq!(seen, want, "the audit of alpha:\n{raw}");
    assert!(
        !raw.contains(&marker),
        "argument values are not in alpha's audit:\n{raw}"
    );
    // beta has audit_arguments: its one call carries them.
    let (records, raw) = s.audit(&["--service", "beta", "--since", &since], 1);
    assert_eq!(records[0]["consumer"], "litellm", "{raw}");
    assert_eq!(records[0]["tool"], "echo", "{raw}");
    assert_eq!(records[0]["outcome"], "ok", "{raw}");
    assert_eq!(
        records[0]["arguments"],
        json!({"text": format!("{marker}-beta")}),
        "{raw}"
    );
    // The filters narrow what was found.
    let (records, _) = s.audit(
        &["--service", "alpha", "--since", &since, "--consumer", "ops"],
        1,
    );
    assert_eq!(records[0]["tool"], "echo");
    let (records, _) = s.audit(
        &[
            "--service",
            "alpha",
            "--since",
            &since,
            "--tool",
            "slow_echo",
        ],
        1,
    );
    assert_eq!(records[0]["outcome"], "error");
    step(5, "audit shows exactly the calls made", t);

    // 6. JWT on gamma.
    let t = Instant::now();
    let valid = mint(&key, &claims(|_| {}));
    s.echo("gamma", &valid, "jwt-call");
    // Consumers' tokens still work in mode jwt (as mcpctl's gate did).
    s.echo("gamma", &litellm, "litellm-on-gamma");
    // alpha (mode bearer) accepts no access token.
    let r = s.post("alpha", Some(&valid), None, &initialize());
    assert_eq!(r.status(), 401, "a JWT on a bearer-mode service");
    let before = s.metrics("gamma");
    let now = jsonwebtoken::get_current_timestamp();
    let bad = [
        (
            "expired",
            mint(
                &key,
                &claims(|c| {
                    c["exp"] = json!(now - 120);
                    c["iat"] = json!(now - 600);
                }),
            ),
        ),
        (
            "wrong_audience",
            mint(&key, &claims(|c| c["aud"] = json!("another-api"))),
        ),
        (
            "wrong_issuer",
            mint(&key, &claims(|c| c["iss"] = json!("https://evil.test"))),
        ),
        ("bad_signature", mint(&stranger, &claims(|_| {}))),
    ];
    for (reason, tok) in &bad {
        let r = s.post("gamma", Some(tok), None, &initialize());
        assert_eq!(r.status(), 401, "gamma with a token that is {reason}");
        let ch = challenge(&r);
        assert!(
            ch.starts_with("Bearer")
                && ch.contains("error=\"invalid_token\"")
                && ch.contains("resource_metadata="),
            "{reason}: WWW-Authenticate {ch:?}"
        );
    }
    let after = s.metrics("gamma");
    for (reason, _) in &bad {
        assert_eq!(
            refused(&after, reason) - refused(&before, reason),
            1.0,
            "mcp_bridge_auth_refused_total{{reason=\"{reason}\"}}"
        );
    }
    let r = s
        .block(
            s.http
                .get(format!(
                    "{}/.well-known/oauth-protected-resource",
                    s.base("gamma")
                ))
                .send(),
        )
        .unwrap();
    assert_eq!(r.status(), 200, "the protected-resource metadata");
    let meta: Value = s.block(r.json()).unwrap();
    assert_eq!(meta["authorization_servers"], json!([ISSUER]), "{meta}");
    assert_eq!(meta["resource"], s.base("gamma"), "{meta}");
    let r = s
        .block(
            s.http
                .get(format!(
                    "{}/.well-known/oauth-protected-resource",
                    s.base("alpha")
                ))
                .send(),
        )
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "a bearer-mode bridge publishes no metadata"
    );
    let (records, raw) = s.audit(
        &[
            "--service",
            "gamma",
            "--consumer",
            &format!("jwt:{JWT_CLIENT}"),
        ],
        1,
    );
    assert_eq!(records[0]["consumer"], format!("jwt:{JWT_CLIENT}"), "{raw}");
    assert_eq!(records[0]["tool"], "echo", "{raw}");
    assert_eq!(records[0]["outcome"], "ok", "{raw}");
    step(6, "JWT access tokens", t);

    // A figure: one authenticated call on a kept session (bearer on alpha, JWT on gamma).
    for (svc, tok, kind) in [("alpha", &litellm, "bearer"), ("gamma", &valid, "jwt")] {
        let mut m = s.session(svc, tok).unwrap();
        let n = 30;
        let t = Instant::now();
        for i in 0..n {
            let r = s
                .block(m.call_tool("echo", json!({"text": format!("f{i}")})))
                .unwrap();
            assert!(!r.is_error);
        }
        let per = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
        s.block(m.close());
        eprintln!("ACCESS figure: {kind} tools/call on {svc}: {per:.2} ms per call ({n} calls, one session, debug build)");
    }

    // 7. No token anywhere but the token files and `token show`.
    let t = Instant::now();
    // The search itself finds a token where there is one (a canary inside a tar, as in a layer).
    let canary = s.dir.path().join("canary");
    std::fs::create_dir_all(canary.join("in")).unwrap();
    std::fs::write(canary.join("in/f"), format!("x{}y", tokens[2].1)).unwrap();
    common::must(
        Command::new("tar")
            .arg("-cf")
            .arg(canary.join("layer.tar"))
            .arg("-C")
            .arg(canary.join("in"))
            .arg("f"),
    );
    std::fs::remove_dir_all(canary.join("in")).unwrap();
    assert_eq!(
        files_containing(&canary, &tokens).len(),
        1,
        "the leak search finds a token in a tar"
    );
    std::fs::remove_dir_all(&canary).unwrap();
    let containers: Vec<String> = common::must(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label=com.mcp.project={}", s.project),
        "--format",
        "{{.Names}}",
    ]))
    .split_whitespace()
    .map(str::to_string)
    .collect();
    assert!(containers.len() >= 3, "{containers:?}");
    for c in &containers {
        let inspect = common::must(Command::new("docker").args(["inspect", c]));
        assert_no_token(&format!("`docker inspect {c}`"), &inspect, &tokens);
        let logs = Command::new("docker").args(["logs", c]).output().unwrap();
        assert_no_token(
            &format!("`docker logs {c}` (stdout)"),
            &text(&logs.stdout),
            &tokens,
        );
        assert_no_token(
            &format!("`docker logs {c}` (stderr)"),
            &text(&logs.stderr),
            &tokens,
        );
    }
    let images: Vec<String> = common::must(Command::new("docker").args([
        "images",
        "--filter",
        &format!("label=com.mcp.project={}", s.project),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]))
    .split_whitespace()
    .filter(|i| !i.ends_with(":<none>"))
    .map(str::to_string)
    .collect();
    assert!(
        SERVICES
            .iter()
            .all(|svc| images.iter().any(|i| i.contains(&format!("/{svc}:")))),
        "an image per service: {images:?}"
    );
    for i in &images {
        let history = common::must(Command::new("docker").args(["history", "--no-trunc", i]));
        assert_no_token(&format!("`docker history {i}`"), &history, &tokens);
    }
    // The service images (the lock's image is empty: nothing to save).
    let service_images: Vec<&String> = images
        .iter()
        .filter(|i| SERVICES.iter().any(|svc| i.contains(&format!("/{svc}:"))))
        .collect();
    let saved = s.dir.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    let tar = saved.join("images.tar");
    common::must(
        Command::new("docker")
            .args(["save", "-o"])
            .arg(&tar)
            .args(&service_images),
    );
    let size = std::fs::metadata(&tar).unwrap().len();
    assert!(size < 2 << 30, "the saved images stay small: {size} bytes");
    common::must(
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&saved),
    );
    std::fs::remove_file(&tar).unwrap();
    let layers = walk(&saved)
        .into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| n == "layer.tar")
                || p.extension().is_some_and(|e| e == "tar")
        })
        .count();
    assert!(layers >= 2, "layer tars were saved: {layers}");
    let hits = files_containing(&saved, &tokens);
    assert!(hits.is_empty(), "a token is in the saved images: {hits:?}");
    std::fs::remove_dir_all(&saved).unwrap();
    let rendered = s.dir.path().join("r");
    s.ok(&["render", "--out", rendered.to_str().unwrap()]);
    assert!(!walk(&rendered).is_empty(), "render wrote files");
    let hits = files_containing(&rendered, &tokens);
    assert!(
        hits.is_empty(),
        "a token is in the rendered files: {hits:?}"
    );
    let ledger = std::fs::read_to_string(s.state().join("ledger.jsonl")).expect("the ledger");
    assert!(!ledger.is_empty());
    assert_no_token("the ledger", &ledger, &tokens);
    // The state directory: tokens only in auth/<consumer>.token (0600 in a 0700 directory).
    use std::os::unix::fs::PermissionsExt;
    let auth_dir = s.state().join("auth");
    assert_eq!(
        std::fs::metadata(&auth_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (c, tok) in &tokens {
        let f = auth_dir.join(format!("{c}.token"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap().trim(), tok.as_str());
    }
    let hits: Vec<String> = files_containing(&s.state(), &tokens)
        .into_iter()
        .filter(|p| !Path::new(p).starts_with(&auth_dir))
        .collect();
    assert!(
        hits.is_empty(),
        "a token is in the state directory outside auth/: {hits:?}"
    );
    for args in [
        &["plan"][..],
        &["--output", "json", "plan"],
        &["status"],
        &["--output", "json", "status"],
        &["token", "list"],
        &["token"],
        &["--output", "json", "audit"],
        &["history"],
    ] {
        let out = s.mcpctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "mcpctl {args:?}: {}",
            show(&out)
        );
        assert_no_token(
            &format!("`mcpctl {}`", args.join(" ")),
            &show(&out),
            &tokens,
        );
    }
    for svc in SERVICES {
        let out = s.ok(&["token", "bridge-file", svc]);
        assert!(out.contains("\"sha256\""), "{out}");
        assert_no_token(&format!("`mcpctl token bridge-file {svc}`"), &out, &tokens);
    }
    let list = s.json(&["token", "list"]);
    let rows = list["consumers"].as_array().expect("consumers");
    let mut fingerprints = std::collections::BTreeSet::new();
    for (c, _) in &tokens {
        let row = rows
            .iter()
            .find(|r| r["consumer"] == c.as_str())
            .unwrap_or_else(|| panic!("token list names {c}: {list}"));
        let fp = row["fingerprint"].as_str().unwrap_or_default();
        assert!(
            fp.len() >= 8 && fp.chars().all(|ch| ch.is_ascii_hexdigit()),
            "{c}: a hex fingerprint: {row}"
        );
        fingerprints.insert(fp.to_string());
    }
    assert_eq!(
        fingerprints.len(),
        tokens.len(),
        "one fingerprint per token: {list}"
    );
    let services_of = |c: &str| -> Vec<String> {
        rows.iter().find(|r| r["consumer"] == c).unwrap()["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(services_of("mcpctl"), ["alpha", "beta", "gamma"], "{list}");
    assert_eq!(services_of("litellm"), ["alpha", "beta", "gamma"], "{list}");
    assert_eq!(services_of("ops"), ["alpha", "gamma"], "{list}");
    step(7, "tokens never leak", t);

    // 8. Rotation: the next generation of litellm's token is rolled out by the next deploy.
    let t = Instant::now();
    let out = s.ok(&["token", "rotate", "litellm"]);
    assert!(out.contains("generation 1"), "{out}");
    let rotated = s.token("litellm");
    assert_ne!(rotated, litellm, "a new token");
    let plan = s.json(&["plan"]);
    let actions = plan["actions"].as_array().expect("actions");
    for svc in SERVICES {
        let a = actions
            .iter()
            .find(|a| a["service"] == svc)
            .unwrap_or_else(|| panic!("plan names {svc}: {plan}"));
        assert_eq!(
            a["action"], "update",
            "{svc} changes with litellm's token: {a}"
        );
        assert!(
            a["changes"].as_array().is_some_and(|c| c
                .iter()
                .any(|c| c.as_str().unwrap_or_default().contains("mcpctl_auth"))),
            "{svc}: the change is the access file (a secret): {a}"
        );
    }
    assert_no_token(
        "the plan after rotation",
        &plan.to_string(),
        &[("litellm".into(), rotated.clone())],
    );
    // Until the deploy, the old token still works.
    s.echo("alpha", &litellm, "old-token-before-deploy");
    let out = s.mcpctl(&["--yes", "deploy"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "deploy after rotation: {}",
        show(&out)
    );
    assert_no_token(
        "the deploy output after rotation",
        &show(&out),
        &[("litellm".into(), rotated.clone())],
    );
    for svc in SERVICES {
        let r = s.post(svc, Some(&litellm), None, &initialize());
        assert_eq!(r.status(), 401, "{svc}: the old litellm token is refused");
        s.echo(svc, &rotated, &format!("rotated-on-{svc}"));
    }
    s.echo("alpha", &ops, "ops-unchanged");
    let plan = s.json(&["plan"]);
    assert!(
        plan["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["action"] == "unchanged"),
        "nothing left to do: {plan}"
    );
    step(8, "rotation", t);
    eprintln!("ACCESS total: {:.1} s", started.elapsed().as_secs_f64());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
