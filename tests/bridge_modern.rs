//! The bridge serves MCP 2026-07-28 (stateless) clients on `/mcp` next to legacy sessions, on one
//! warm child: real `mcpctl bridge` processes in front of `mcp-testserver`, driven by a hand-written
//! modern client that also misbehaves on purpose (wrong headers, missing `_meta`, unsupported
//! versions, removed methods, a flood beyond the cap). docs/bridge.md "MCP 2026-07-28 (stateless)
//! clients" is the behaviour under test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use serde_json::{json, Value};

const MODERN: &str = "2026-07-28";

/// A bridge on 127.0.0.1 (port chosen by the OS, read from its log), killed when dropped.
struct Bridge {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Bridge {
    fn start(dir: &Path, nonce: &str, bridge_args: &[&str], server_args: &[&str]) -> Bridge {
        let log = dir.join(format!("bridge-{nonce}.log"));
        let mut cmd = Command::new(mcpctl());
        cmd.args(["bridge", "--listen", "127.0.0.1:0"])
            .args(bridge_args)
            .arg("--")
            .arg(testserver())
            .args(["--nonce", nonce])
            .args(server_args)
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
                let ready =
                    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && ready(port);
                ready.then_some(port)
            },
        );
        Bridge {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET /readyz answers 200 (a blocking one-shot HTTP/1.0 request: no runtime needed here).
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

fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN,
           "io.modelcontextprotocol/clientCapabilities": {},
           "io.modelcontextprotocol/clientInfo": {"name": "bridge-modern-test", "version": "1"}})
}

/// A well-formed modern request: body with `_meta`, and the headers that mirror it.
fn request(id: Value, method: &str, mut params: Value) -> (Vec<(&'static str, String)>, Value) {
    if params.is_null() {
        params = json!({});
    }
    params["_meta"] = meta();
    let mut headers = vec![
        ("mcp-protocol-version", MODERN.to_string()),
        ("mcp-method", method.to_string()),
        ("accept", "application/json, text/event-stream".to_string()),
    ];
    if let Some(name) = params["name"].as_str().or(params["uri"].as_str()) {
        headers.push(("mcp-name", name.to_string()));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    (headers, body)
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    headers: &[(&str, String)],
    body: &Value,
) -> Reply {
    let mut req = http.post(format!("{base}/mcp")).json(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("the bridge answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    // Refusals before the MCP layer (401, 429, 413) are plain text: kept as a JSON string.
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        headers,
        body,
    }
}

async fn modern(
    http: &reqwest::Client,
    base: &str,
    id: Value,
    method: &str,
    params: Value,
) -> Reply {
    let (h, b) = request(id, method, params);
    post(http, base, &h, &b).await
}

/// A legacy Streamable HTTP session (2025-11-25): its id.
async fn legacy_session(http: &reqwest::Client, base: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "legacy", "version": "1"}}});
    let r = post(
        http,
        base,
        &[("accept", "application/json, text/event-stream".into())],
        &init,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.headers["mcp-session-id"].to_str().unwrap().to_string()
}

async fn legacy_call(
    http: &reqwest::Client,
    base: &str,
    sid: &str,
    id: Value,
    text: &str,
) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}});
    let h = [
        ("mcp-session-id", sid.to_string()),
        ("mcp-protocol-version", "2025-11-25".to_string()),
        ("accept", "application/json".to_string()),
    ];
    post(http, base, &h, &body).await.body
}

fn text_of(reply: &Value) -> &str {
    reply["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {reply}"))
}

async fn metric(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn modern_clients_are_served_statelessly_by_the_warm_child_legacy_sessions_use() {
    let dir = TestDir::new();
    let spawns = dir.path().join("spawns.log");
    let b = Bridge::start(
        dir.path(),
        "m1",
        &[],
        &["--spawn-log", spawns.to_str().unwrap()],
    );
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = &b.base;

        let d = modern(&http, base, json!("d1"), "server/discover", Value::Null).await;
        assert_eq!(d.status, 200, "{}", d.body);
        assert!(
            d.headers.get("mcp-session-id").is_none(),
            "no session is minted"
        );
        let r = &d.body["result"];
        assert_eq!(d.body["id"], "d1");
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["supportedVersions"][0], MODERN);
        assert!(r["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2025-11-25")));
        assert_eq!(r["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(
            r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "mcp-testserver"
        );
        assert_eq!(r["instructions"], "test server nonce=m1");
        assert_eq!(
            (r["ttlMs"].as_u64(), r["cacheScope"].as_str()),
            (Some(60_000), Some("public"))
        );

        let l = modern(&http, base, json!(1), "tools/list", Value::Null).await;
        assert_eq!(l.status, 200, "{}", l.body);
        let r = &l.body["result"];
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["cacheScope"], "public");
        assert!(r["ttlMs"].as_u64().is_some());
        assert!(r["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo"));

        let c = modern(
            &http,
            base,
            json!(1),
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
        .await;
        assert_eq!(c.status, 200, "{}", c.body);
        assert_eq!(text_of(&c.body), "hi|m1");
        assert_eq!(c.body["result"]["resultType"], "complete");
        assert!(
            c.body["result"].get("ttlMs").is_none(),
            "tools/call is not cacheable"
        );
        assert!(c.headers.get("mcp-session-id").is_none());

        // A legacy session on the same bridge works as before, on the same child.
        let sid = legacy_session(&http, base).await;
        let v = legacy_call(&http, base, &sid, json!(1), "old").await;
        assert_eq!(text_of(&v), "old|m1");
        assert!(
            v["result"].get("resultType").is_none(),
            "legacy results are not stamped"
        );

        // One child process; it saw exactly one initialize (the bridge's own).
        let counters = modern(
            &http,
            base,
            json!(2),
            "tools/call",
            json!({"name": "counters", "arguments": {}}),
        )
        .await;
        let counts: Value = serde_json::from_str(text_of(&counters.body)).unwrap();
        assert_eq!(counts["initialize"], 1, "{counts}");
        // The server/discover probe's sibling process (`--child-era auto`) is in the spawn log too.
        let spawned = std::fs::read_to_string(&spawns).unwrap().lines().count();
        let probes = std::fs::read_to_string(&b.log)
            .unwrap()
            .matches("child era decided by the server/discover probe")
            .count();
        assert_eq!(
            (spawned - probes, probes),
            (1, 1),
            "{}",
            log_tail(&b.log, 20)
        );

        // Progress on the request's own stream (SSE when asked for with a progressToken).
        let (h, body) = request(
            json!(9),
            "tools/call",
            json!({"name": "progress", "arguments": {"steps": 3, "text": "p"}, "_meta": {}}),
        );
        let mut body = body;
        body["params"]["_meta"]["progressToken"] = json!("tok");
        let resp = {
            let mut req = http.post(format!("{base}/mcp")).json(&body);
            for (k, v) in &h {
                req = req.header(*k, v);
            }
            req.send().await.unwrap()
        };
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let text = resp.text().await.unwrap();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(events.len(), 4, "{text}");
        for (i, e) in events[..3].iter().enumerate() {
            assert_eq!(e["method"], "notifications/progress");
            assert_eq!(
                e["params"]["progressToken"], "tok",
                "the client's own token"
            );
            assert_eq!(e["params"]["progress"], i + 1);
        }
        assert_eq!(events[3]["id"], 9);
        assert_eq!(text_of(&events[3]), "p|m1");
        assert_eq!(events[3]["result"]["resultType"], "complete");

        // Counted by era, with the same request metrics as legacy requests.
        assert_eq!(
            metric(&http, base, "mcp_bridge_era_requests_total{era=\"modern\"}").await,
            5.0
        );
        assert_eq!(
            metric(&http, base, "mcp_bridge_era_requests_total{era=\"legacy\"}").await,
            2.0
        );
        assert_eq!(
            metric(
                &http,
                base,
                "mcp_bridge_requests_total{method=\"server/discover\",tool=\"\"}"
            )
            .await,
            1.0
        );
        assert_eq!(
            metric(
                &http,
                base,
                "mcp_bridge_requests_total{method=\"tools/call\",tool=\"echo\"}"
            )
            .await,
            2.0
        );
        assert_eq!(
            metric(&http, base, "mcp_bridge_modern_in_flight").await,
            0.0
        );
    });
}

#[test]
fn misbehaving_modern_clients_get_the_errors_the_spec_defines() {
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "m2", &["--tools-deny", "whoami"], &[]);
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = &b.base;
        let (good_h, good_b) = request(json!(1), "tools/call", json!({"name": "echo", "arguments": {"text": "x"}}));
        let with = |name: &'static str, value: &str| {
            let mut h: Vec<(&str, String)> = good_h.iter().filter(|(k, _)| *k != name).cloned().collect();
            h.push((name, value.to_string()));
            h
        };
        let without = |name: &'static str| -> Vec<(&'static str, String)> {
            good_h.iter().filter(|(k, _)| *k != name).cloned().collect()
        };
        let expect = |r: Reply, status: u16, code: i64, what: &str| {
            assert_eq!((r.status, r.body["error"]["code"].as_i64()), (status, Some(code)), "{what}: {}", r.body);
            assert_eq!(r.body["id"], 1, "{what}: the error names the request");
            r.body
        };

        let r = post(&http, base, &with("mcp-name", "other"), &good_b).await;
        let body = expect(r, 400, -32020, "Mcp-Name vs params.name");
        assert!(body["error"]["message"].as_str().unwrap().contains("'other'"), "{body}");
        expect(post(&http, base, &with("mcp-method", "tools/list"), &good_b).await, 400, -32020, "Mcp-Method vs method");
        expect(post(&http, base, &without("mcp-method"), &good_b).await, 400, -32020, "no Mcp-Method");
        expect(post(&http, base, &without("mcp-name"), &good_b).await, 400, -32020, "no Mcp-Name");
        expect(post(&http, base, &with("mcp-protocol-version", "2025-06-18"), &good_b).await, 400, -32020, "header vs _meta version");
        let mut no_meta = good_b.clone();
        no_meta["params"].as_object_mut().unwrap().remove("_meta");
        // Without `_meta` but with the 2026-07-28 header: recognised as modern, and malformed.
        expect(post(&http, base, &good_h, &no_meta).await, 400, -32602, "no _meta");
        let mut no_caps = good_b.clone();
        no_caps["params"]["_meta"].as_object_mut().unwrap().remove("io.modelcontextprotocol/clientCapabilities");
        expect(post(&http, base, &good_h, &no_caps).await, 400, -32602, "no clientCapabilities");

        let mut future = good_b.clone();
        future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
        let body = expect(post(&http, base, &with("mcp-protocol-version", "2099-01-01"), &future).await, 400, -32022, "unsupported version");
        assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
        assert_eq!(body["error"]["data"]["supported"][0], MODERN);

        let (h, b2) = request(json!(1), "ping", Value::Null);
        expect(post(&http, base, &h, &b2).await, 404, -32601, "ping was removed");
        let (h, b2) = request(json!(1), "logging/setLevel", json!({"level": "info"}));
        expect(post(&http, base, &h, &b2).await, 404, -32601, "logging/setLevel was removed");

        // The bridge's own guards apply as to legacy sessions: tool policy, argument schemas.
        let r = modern(&http, base, json!(1), "tools/call", json!({"name": "whoami", "arguments": {}})).await;
        let body = expect(r, 200, -32602, "hidden tool");
        assert!(body["error"]["message"].as_str().unwrap().contains("not allowed"), "{body}");
        expect(modern(&http, base, json!(1), "tools/call", json!({"name": "echo", "arguments": {"text": 5}})).await, 200, -32602, "schema");
        let l = modern(&http, base, json!(1), "tools/list", Value::Null).await;
        assert!(!l.body["result"]["tools"].as_array().unwrap().iter().any(|t| t["name"] == "whoami"));

        // A response posted by a client, and a batch: refused.
        let resp = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        assert_eq!(post(&http, base, &good_h, &resp).await.status, 400);

        // Legacy clients are untouched by any of this.
        let sid = legacy_session(&http, base).await;
        assert_eq!(text_of(&legacy_call(&http, base, &sid, json!(1), "still").await), "still|m2");
        assert_eq!(
            metric(&http, base, "mcp_bridge_request_errors_total{method=\"tools/call\",tool=\"echo\",error_type=\"bad_request\"}").await,
            9.0,
            "8 transport refusals and 1 schema refusal, under the tool's own label"
        );
    });
}

#[test]
fn concurrent_modern_and_legacy_clients_with_equal_ids_get_only_their_own_replies() {
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "m3", &[], &[]);
    let (clients, calls) = (20usize, 200usize);
    let t0 = Instant::now();
    let wrong = runtime().block_on(async {
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (http, base) = (http.clone(), b.base.clone());
            tasks.push(tokio::spawn(async move {
                let mut wrong = 0;
                let sid = if c % 2 == 0 {
                    Some(legacy_session(&http, &base).await)
                } else {
                    None
                };
                for i in 0..calls {
                    let text = format!("c{c}-{i}");
                    // Every client uses the same ids: the bridge must keep them apart at the child.
                    let reply = match &sid {
                        Some(sid) => legacy_call(&http, &base, sid, json!(i % 3), &text).await,
                        None => {
                            modern(
                                &http,
                                &base,
                                json!(i % 3),
                                "tools/call",
                                json!({"name": "echo", "arguments": {"text": text}}),
                            )
                            .await
                            .body
                        }
                    };
                    if reply["id"] != json!(i % 3)
                        || reply["result"]["content"][0]["text"] != json!(format!("{text}|m3"))
                    {
                        wrong += 1;
                    }
                }
                wrong
            }));
        }
        let mut wrong = 0;
        for t in tasks {
            wrong += t.await.unwrap();
        }
        wrong
    });
    eprintln!(
        "{clients} clients (half modern) x {calls} calls: {wrong} wrong replies in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(wrong, 0);
}

#[test]
fn a_flood_of_modern_requests_beyond_the_cap_gets_503_with_a_reason() {
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "m4", &["--max-sessions", "3"], &[]);
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = b.base.clone();
        let slow = |i: u64| {
            let (http, base) = (http.clone(), base.clone());
            tokio::spawn(async move {
                modern(&http, &base, json!(i), "tools/call",
                    json!({"name": "slow_echo", "arguments": {"text": "s", "delay_ms": 3000}})).await
            })
        };
        let held: Vec<_> = (0..3).map(slow).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&http, &base, "mcp_bridge_modern_in_flight").await < 3.0 {
            assert!(Instant::now() < deadline, "3 slow calls never were in flight");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut refused = 0;
        for i in 0..20 {
            let r = modern(&http, &base, json!(100 + i), "tools/call", json!({"name": "echo", "arguments": {"text": "f"}})).await;
            assert_eq!(r.status, 503, "{}", r.body);
            assert_eq!(r.headers["retry-after"], "1");
            assert!(r.body["error"]["message"].as_str().unwrap().contains("stateless requests are in flight"), "{}", r.body);
            refused += 1;
        }
        for h in held {
            let r = h.await.unwrap();
            assert_eq!(text_of(&r.body), "s|m4");
        }
        let ok = modern(&http, &base, json!(1), "tools/call", json!({"name": "echo", "arguments": {"text": "after"}})).await;
        assert_eq!(text_of(&ok.body), "after|m4");
        assert_eq!(metric(&http, &base, "mcp_bridge_overloaded_total{era=\"modern\"}").await, refused as f64);
        assert_eq!(metric(&http, &base, "mcp_bridge_overloaded_total{era=\"legacy\"}").await, 0.0);
        assert_eq!(
            metric(&http, &base, "mcp_bridge_request_errors_total{method=\"tools/call\",tool=\"echo\",error_type=\"overloaded\"}").await,
            refused as f64
        );
    });
}

#[test]
fn subscriptions_listen_relays_the_childs_list_changed() {
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "m5", &[], &[]);
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = &b.base;
        let (h, body) = request(
            json!("sub-1"),
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true}}),
        );
        let mut req = http.post(format!("{base}/mcp")).json(&body);
        for (k, v) in &h {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut next_event = async || -> Value {
            loop {
                if let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                        return serde_json::from_str(data).unwrap();
                    }
                    continue;
                }
                let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .expect("an event within 10 s")
                    .expect("the stream stays open")
                    .unwrap();
                buf.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        let ack = next_event().await;
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(
            ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "sub-1"
        );
        // The child advertises tools.listChanged only: prompts are not acknowledged.
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true})
        );
        assert_eq!(
            metric(&http, base, "mcp_bridge_modern_listeners").await,
            1.0
        );

        let c = modern(
            &http,
            base,
            json!(1),
            "tools/call",
            json!({"name": "notify_list_changed", "arguments": {}}),
        )
        .await;
        assert_eq!(text_of(&c.body), "changed|m5");
        let note = next_event().await;
        assert_eq!(note["method"], "notifications/tools/list_changed");
        assert_eq!(
            note["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "sub-1"
        );
        let l = modern(&http, base, json!(2), "tools/list", Value::Null).await;
        assert!(
            l.body["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "added"),
            "the bridge's tools/list cache was voided: {}",
            l.body
        );
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(&http, base, "mcp_bridge_modern_listeners").await != 0.0 {
            assert!(
                Instant::now() < deadline,
                "a closed listen stream is forgotten"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn per_session_services_send_modern_clients_to_initialize_and_auth_applies() {
    let dir = TestDir::new();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-modern\n").unwrap();
    let b = Bridge::start(
        dir.path(),
        "m6",
        &[
            "--session-model",
            "per_session",
            "--token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = &b.base;
        let (h, body) = request(json!(1), "server/discover", Value::Null);
        let r = post(&http, base, &h, &body).await;
        assert_eq!(r.status, 401, "auth comes first: {}", r.body);
        let mut h = h;
        h.push(("authorization", "Bearer s3cret-modern".into()));
        let r = post(&http, base, &h, &body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.body["error"]["code"], -32600,
            "not a modern error: dual-era clients fall back"
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("send initialize"),
            "{}",
            r.body
        );
        assert_eq!(
            metric(&http, base, "mcp_bridge_era_requests_total{era=\"modern\"}").await,
            1.0
        );
    });
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(!log.contains("s3cret-modern"), "the token is never logged");
}

#[test]
fn methods_outside_the_modern_client_set_are_404_method_not_found_at_the_bridge() {
    // The official conformance suite (tests/bridge/test_conformance.py) found both: an unknown
    // method reached the child (a Python SDK 1.x child answers it −32602, HTTP 200), and an
    // `initialize` in modern shape was taken for a legacy handshake (400 −32600).
    let dir = TestDir::new();
    let b = Bridge::start(dir.path(), "m7", &[], &[]);
    runtime().block_on(async {
        let http = reqwest::Client::new();
        let base = &b.base;
        for (id, method) in [
            (1, "unknown/method"),
            (2, "sampling/createMessage"),
            (3, "initialize"),
        ] {
            let r = modern(&http, base, json!(id), method, Value::Null).await;
            assert_eq!(
                (r.status, r.body["error"]["code"].as_i64()),
                (404, Some(-32601)),
                "{method}: {}",
                r.body
            );
            assert_eq!(r.body["id"], id, "{method}: the error names the request");
            assert!(
                r.headers.get("mcp-session-id").is_none(),
                "{method}: no session"
            );
        }
        // Refused by the bridge (bad_request), not answered by the child (jsonrpc).
        let errors = |method: &'static str, kind: &'static str| {
            let series = format!(
                "mcp_bridge_request_errors_total{{method=\"{method}\",tool=\"\",error_type=\"{kind}\"}}"
            );
            let http = http.clone();
            async move { metric(&http, base, &series).await }
        };
        assert_eq!(errors("other", "bad_request").await, 2.0);
        assert_eq!(errors("other", "jsonrpc").await, 0.0);
        assert_eq!(errors("initialize", "bad_request").await, 1.0);
        // The child was initialized once, by the bridge; a legacy initialize still opens a session.
        let sid = legacy_session(&http, base).await;
        assert_eq!(
            text_of(&legacy_call(&http, base, &sid, json!(1), "legacy").await),
            "legacy|m7"
        );
        let counters = modern(
            &http,
            base,
            json!(4),
            "tools/call",
            json!({"name": "counters", "arguments": {}}),
        )
        .await;
        let counts: Value = serde_json::from_str(text_of(&counters.body)).unwrap();
        assert_eq!(counts["initialize"], 1, "{counts}");
    });
}
