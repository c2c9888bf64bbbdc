//! mcp-monitoring driven over stdio JSON-RPC against fakes of everything it reads: the docker
//! proxy (docs/contracts.md endpoints, canned Docker JSON for three services — `fetch` healthy,
//! `memory` exited after an OOM kill, `github` running but Docker-unhealthy with /readyz 503 —
//! plus a gating candidate that must be ignored), the services' bridges (/readyz, /metrics) and
//! Prometheus. Everything listens on 127.0.0.1:0 inside the test; the server process is killed
//! when its handle drops.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const REPLY_DEADLINE: Duration = Duration::from_secs(20);

// ---- canned Docker data ---------------------------------------------------------------------

const ID_FETCH: &str = "f0f0f0f0f0f0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_CANDIDATE: &str = "c4c4c4c4c4c4aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_MEMORY: &str = "e0e0e0e0e0e0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_GITHUB: &str = "9a9a9a9a9a9aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const FETCH_USAGE: u64 = 104_857_600; // 100 MiB
const FETCH_INACTIVE: u64 = 20_971_520; // 20 MiB (cgroup v1: total_inactive_file)
const FETCH_LIMIT: u64 = 201_326_592; // 192 MiB
const GITHUB_USAGE: u64 = 50_000_000;
const GITHUB_INACTIVE: u64 = 10_000_000; // cgroup v2: inactive_file only
const GITHUB_LIMIT: u64 = 134_217_728;

fn labels(service: &str, role: &str, release: u32, hash: &str, extra: &[(&str, &str)]) -> Value {
    let mut l = json!({
        "com.mcp.managed": "true",
        "com.mcp.project": "stack",
        "com.mcp.service": service,
        "com.mcp.role": role,
        "com.mcp.release": release.to_string(),
        "com.mcp.config-hash": hash,
        "com.mcp.mcp-type": "python",
    });
    for (k, v) in extra {
        l[*k] = json!(v);
    }
    l
}

struct Canned {
    id: &'static str,
    name: &'static str,
    summary_state: &'static str,
    status: &'static str,
    labels: Value,
    state: Value,
    restarts: u64,
    host_config: Value,
    stats: Value,
    logs: Vec<(&'static str, &'static str)>,
}

fn canned() -> Vec<Canned> {
    vec![
        Canned {
            id: ID_FETCH,
            name: "stack-fetch-r3",
            summary_state: "running",
            status: "Up 2 hours (healthy)",
            labels: labels("fetch", "service", 3, "abcdef1234567890", &[]),
            state: json!({
                "Status": "running", "Running": true, "Paused": false, "Restarting": false,
                "OOMKilled": false, "Dead": false, "Pid": 42, "ExitCode": 0, "Error": "",
                "StartedAt": "2025-01-01T00:00:00.123456789Z", "FinishedAt": "0001-01-01T00:00:00Z",
                "Health": {"Status": "healthy", "FailingStreak": 0,
                           "Log": [{"Start": "2025-01-01T00:00:01Z", "End": "2025-01-01T00:00:01Z", "ExitCode": 0, "Output": "ready"}]}
            }),
            restarts: 1,
            host_config: json!({"Memory": FETCH_LIMIT, "NanoCpus": 500_000_000u64, "CpuQuota": 0, "CpuPeriod": 0}),
            stats: json!({
                "read": "2026-11-25T21:40:00.000000001Z",
                "memory_stats": {"usage": FETCH_USAGE, "limit": FETCH_LIMIT,
                                 "stats": {"total_inactive_file": FETCH_INACTIVE, "inactive_file": FETCH_INACTIVE, "rss": 1234}},
                "cpu_stats": {"cpu_usage": {"total_usage": 12_500_000_000u64}, "system_cpu_usage": 99_000_000_000_000u64, "online_cpus": 2},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}}
            }),
            logs: vec![("stdout", "fetch ready")],
        },
        // A revision being gated: not the service's container, whatever its release.
        Canned {
            id: ID_CANDIDATE,
            name: "stack-fetch-r4-candidate",
            summary_state: "running",
            status: "Up 3 seconds (health: starting)",
            labels: labels(
                "fetch",
                "service",
                4,
                "ffffffffffffffff",
                &[("com.mcp.phase", "candidate")],
            ),
            state: json!({"Status": "running", "Running": true}),
            restarts: 0,
            host_config: json!({}),
            stats: json!({}),
            logs: vec![],
        },
        Canned {
            id: ID_MEMORY,
            name: "stack-memory-r2",
            summary_state: "exited",
            status: "Exited (137) 3 minutes ago",
            labels: labels("memory", "service", 2, "0123456789abcdef", &[]),
            state: json!({
                "Status": "exited", "Running": false, "Paused": false, "Restarting": false,
                "OOMKilled": true, "Dead": false, "Pid": 0, "ExitCode": 137, "Error": "",
                "StartedAt": "2025-01-01T00:00:00Z", "FinishedAt": "2025-01-01T01:00:00Z",
                "Health": {"Status": "unhealthy", "FailingStreak": 1, "Log": null}
            }),
            restarts: 0,
            host_config: json!({"Memory": 67_108_864u64, "NanoCpus": 250_000_000u64}),
            // What Docker answers for a stopped container: empty figures.
            stats: json!({
                "read": "0001-01-01T00:00:00Z",
                "memory_stats": {},
                "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
                "precpu_stats": {"cpu_usage": {"total_usage": 0}}
            }),
            logs: vec![
                ("stdout", "mcp-memory 0.1.0 serving on stdio"),
                ("stdout", "loading graph: 120000 entities"),
                ("stderr", "memory allocation of 67108864 bytes failed"),
            ],
        },
        Canned {
            id: ID_GITHUB,
            name: "stack-github-r3",
            summary_state: "running",
            status: "Up 5 minutes (unhealthy)",
            labels: labels("github", "service", 3, "99887766554433221100", &[]),
            state: json!({
                "Status": "running", "Running": true, "OOMKilled": false, "ExitCode": 0, "Error": "",
                "StartedAt": "2025-06-01T12:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z",
                "Health": {"Status": "unhealthy", "FailingStreak": 4,
                           "Log": [{"ExitCode": 1, "Output": "readyz: HTTP 503\n"}]}
            }),
            restarts: 0,
            host_config: json!({"Memory": GITHUB_LIMIT, "NanoCpus": 0, "CpuQuota": 50000, "CpuPeriod": 100000}),
            stats: json!({
                "read": "2026-11-25T21:40:00Z",
                "memory_stats": {"usage": GITHUB_USAGE, "limit": GITHUB_LIMIT,
                                 "stats": {"inactive_file": GITHUB_INACTIVE, "anon": 1}},
                "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
                "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64}
            }),
            logs: vec![("stderr", "github: rate limited")],
        },
    ]
}

// ---- fake docker proxy ----------------------------------------------------------------------

#[derive(Clone, Default)]
struct ProxyState {
    containers: Arc<Vec<Canned>>,
    /// Every request the proxy saw, as "METHOD path?query".
    seen: Arc<Mutex<Vec<String>>>,
    forbidden: Arc<Mutex<Vec<String>>>,
}

impl ProxyState {
    fn find(&self, id: &str) -> Option<&Canned> {
        self.containers
            .iter()
            .find(|c| c.id == id || c.id.starts_with(id) && id.len() >= 12 || c.name == id)
    }
    fn saw(&self, uri: &Uri) {
        self.seen.lock().unwrap().push(uri.to_string());
    }
}

async fn proxy_list(State(s): State<ProxyState>, uri: Uri) -> Response {
    s.saw(&uri);
    let rows: Vec<Value> = s
        .containers
        .iter()
        .map(|c| {
            json!({
                "Id": c.id, "Names": [format!("/{}", c.name)], "Image": "stack/x:0123456789ab",
                "ImageID": "sha256:00", "Command": "mcpctl bridge", "Created": 1_700_000_000,
                "Ports": [], "Labels": c.labels, "State": c.summary_state, "Status": c.status,
                "HostConfig": {"NetworkMode": "stack"}, "Mounts": []
            })
        })
        .collect();
    Json(rows).into_response()
}

async fn proxy_inspect(State(s): State<ProxyState>, Path(id): Path<String>, uri: Uri) -> Response {
    s.saw(&uri);
    match s.find(&id) {
        Some(c) => Json(json!({
            "Id": c.id, "Name": format!("/{}", c.name), "RestartCount": c.restarts,
            "Created": "2025-01-01T00:00:00Z", "State": c.state, "HostConfig": c.host_config,
            "Config": {"Labels": c.labels, "Image": "stack/x:0123456789ab"}
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "no such container\n").into_response(),
    }
}

async fn proxy_stats(State(s): State<ProxyState>, Path(id): Path<String>, uri: Uri) -> Response {
    s.saw(&uri);
    match s.find(&id) {
        Some(c) => Json(c.stats.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such container\n").into_response(),
    }
}

async fn proxy_logs(
    State(s): State<ProxyState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    s.saw(&uri);
    let tail: usize = q.get("tail").and_then(|t| t.parse().ok()).unwrap_or(100);
    match s.find(&id) {
        Some(c) => {
            let skip = c.logs.len().saturating_sub(tail);
            let lines: Vec<Value> = c.logs[skip..]
                .iter()
                .map(|(stream, line)| json!({"stream": stream, "line": line}))
                .collect();
            Json(json!({ "lines": lines })).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such container\n").into_response(),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn fake_proxy() -> (String, ProxyState) {
    let state = ProxyState {
        containers: Arc::new(canned()),
        ..Default::default()
    };
    let forbidden = state.forbidden.clone();
    let app = Router::new()
        .route("/containers/json", get(proxy_list))
        .route("/containers/{id}/json", get(proxy_inspect))
        .route("/containers/{id}/stats", get(proxy_stats))
        .route("/containers/{id}/logs", get(proxy_logs))
        .fallback(move |uri: Uri| {
            let forbidden = forbidden.clone();
            async move {
                forbidden.lock().unwrap().push(uri.to_string());
                StatusCode::FORBIDDEN
            }
        })
        .with_state(state.clone());
    (serve(app).await, state)
}

// ---- fake bridges (one server, a path prefix per service) and Prometheus ----------------------

const FETCH_METRICS: &str = r#"# HELP mcp_bridge_requests_total Requests by method and tool.
# TYPE mcp_bridge_requests_total counter
mcp_bridge_requests_total{method="tools/call",tool="fetch"} 7
mcp_bridge_requests_total{method="tools/list",tool=""} 3
mcp_bridge_requests_total{method="tools/call",tool="other"} 0
# TYPE mcp_bridge_request_errors_total counter
mcp_bridge_request_errors_total{method="tools/call",tool="fetch",error_type="timeout"} 2
mcp_bridge_request_errors_total{method="tools/call",tool="fetch",error_type="jsonrpc"} 0
# TYPE mcp_bridge_request_duration_seconds histogram
mcp_bridge_request_duration_seconds_bucket{method="tools/call",tool="fetch",le="+Inf"} 7
mcp_bridge_request_duration_seconds_sum{method="tools/call",tool="fetch"} 0.7
mcp_bridge_request_duration_seconds_count{method="tools/call",tool="fetch"} 7
# TYPE mcp_bridge_sessions_active gauge
mcp_bridge_sessions_active{transport="sse"} 1
mcp_bridge_sessions_active{transport="streamable_http"} 2
mcp_bridge_sessions_opened_total{transport="sse"} 4
mcp_bridge_sessions_opened_total{transport="streamable_http"} 5
mcp_bridge_requests_in_flight 0
mcp_bridge_ready 1
"#;

async fn bridge_readyz(Path(service): Path<String>) -> Response {
    match service.as_str() {
        "fetch" => Json(json!({"ready": true, "child": "running"})).into_response(),
        "github" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "circuit breaker open"})),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn bridge_metrics(Path(service): Path<String>) -> Response {
    match service.as_str() {
        "fetch" => FETCH_METRICS.into_response(),
        "github" => {
            "mcp_bridge_requests_total{method=\"tools/call\",tool=\"x\"} 1\n".into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The bridge URL template for the fake bridges.
async fn fake_bridges() -> String {
    let app = Router::new()
        .route("/{service}/readyz", get(bridge_readyz))
        .route("/{service}/metrics", get(bridge_metrics));
    format!("{}/{{service}}", serve(app).await)
}

async fn fake_prometheus() -> String {
    let app = Router::new().route(
        "/api/v1/alerts",
        get(|| async {
            Json(json!({"status": "success", "data": {"alerts": [
                {"labels": {"alertname": "McpServiceDown", "service": "memory", "severity": "critical"},
                 "annotations": {"summary": "memory has been down for 1 minute"},
                 "state": "firing", "activeAt": "2026-11-25T21:00:00.5Z", "value": "0e+00"},
                {"labels": {"alertname": "McpHighLatency", "service": "fetch", "severity": "warning"},
                 "annotations": {}, "state": "pending", "activeAt": "2026-11-25T21:30:00Z", "value": "0.3"}
            ]}}))
        }),
    );
    serve(app).await
}

// ---- the server under test, over stdio ------------------------------------------------------

struct McpServer {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

impl McpServer {
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-monitoring"));
        cmd.env_remove("PROMETHEUS_URL")
            .env_remove("MCP_DOCKER_PROXY_URL")
            .env_remove("MCP_BRIDGE_URL_TEMPLATE")
            .env_remove("MCP_LABEL_PREFIX")
            .env("MONITORING_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("mcp-monitoring starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = McpServer {
            _child: child,
            stdin,
            stdout,
            next_id: 1,
        };
        let init = s
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "monitoring-test", "version": "0"}}),
            )
            .await;
        assert_eq!(
            init["result"]["serverInfo"]["name"], "mcp-monitoring",
            "{init}"
        );
        assert!(
            init["result"]["capabilities"]["tools"].is_object(),
            "{init}"
        );
        s.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        s
    }

    async fn send(&mut self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request and waits (with a deadline) for the response with its id. Every line on
    /// stdout must be JSON-RPC.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let deadline = Instant::now() + REPLY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {REPLY_DEADLINE:?}"))
                .expect("stdout readable")
                .unwrap_or_else(|| panic!("mcp-monitoring closed stdout during {method}"));
            let msg: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON-RPC ({e}): {line}"));
            assert_eq!(msg["jsonrpc"], "2.0", "{line}");
            if msg["id"] == json!(id) {
                return msg;
            }
        }
    }

    /// tools/call; returns the CallToolResult.
    async fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await;
        assert!(r.get("error").is_none(), "{tool}: protocol error {r}");
        r["result"].clone()
    }
}

fn text(result: &Value) -> String {
    result["content"]
        .as_array()
        .expect("content array")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}

/// Server wired to a fake proxy and fake bridges (no Prometheus).
async fn stack() -> (McpServer, ProxyState) {
    let (proxy, state) = fake_proxy().await;
    let bridges = fake_bridges().await;
    let server = McpServer::start(&[
        ("MCP_DOCKER_PROXY_URL", &proxy),
        ("MCP_BRIDGE_URL_TEMPLATE", &bridges),
    ])
    .await;
    (server, state)
}

fn assert_only_contract_paths(state: &ProxyState) {
    let forbidden = state.forbidden.lock().unwrap();
    assert!(
        forbidden.is_empty(),
        "requests outside the contract: {forbidden:?}"
    );
}

// ---- tests ----------------------------------------------------------------------------------

#[tokio::test]
async fn tools_list_is_exactly_the_five_tools_with_schemas() {
    let (mut s, _) = stack().await;
    let r = s.request("tools/list", json!({})).await;
    let tools = r["result"]["tools"].as_array().expect("tools").clone();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "firing_alerts",
            "list_services",
            "recent_logs",
            "service_health",
            "service_stats"
        ]
    );
    for t in &tools {
        let schema = &t["inputSchema"];
        assert_eq!(schema["type"], "object", "{t}");
        let needs_service = ["service_health", "service_stats", "recent_logs"]
            .contains(&t["name"].as_str().unwrap());
        assert_eq!(
            schema["required"] == json!(["service"]),
            needs_service,
            "{t}"
        );
        assert!(
            t["description"].as_str().is_some_and(|d| d.len() > 20),
            "{t}"
        );
    }
    let logs = tools.iter().find(|t| t["name"] == "recent_logs").unwrap();
    assert_eq!(logs["inputSchema"]["properties"]["lines"]["maximum"], 1000);
}

#[tokio::test]
async fn list_services_reports_each_service_and_the_stopped_one_unhealthy() {
    let (mut s, state) = stack().await;
    let r = s.call("list_services", json!({})).await;
    assert!(!is_error(&r), "{r}");
    let data = &r["structuredContent"];
    assert_eq!(serde_json::from_str::<Value>(&text(&r)).unwrap(), *data);
    let rows = data["services"].as_array().unwrap();
    let by: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r))
        .collect();
    assert_eq!(rows.len(), 3, "the candidate is not a service: {data}");

    let fetch = by["fetch"];
    assert_eq!(fetch["revision"], "r3-abcdef12", "{fetch}");
    assert_eq!(fetch["container"], "stack-fetch-r3");
    assert_eq!(fetch["role"], "service");
    assert_eq!(fetch["state"], "running");
    assert_eq!(fetch["health"], "healthy");
    assert_eq!(fetch["readiness"], "ready");
    assert_eq!(fetch["restarts"], 1);
    assert_eq!(fetch["healthy"], true);
    assert!(fetch["uptime_seconds"].as_u64().unwrap() > 3600, "{fetch}");

    let memory = by["memory"];
    assert_eq!(memory["state"], "exited");
    assert_eq!(memory["healthy"], false);
    assert_eq!(memory["revision"], "r2-01234567");
    assert!(memory["uptime"].is_null());
    assert!(memory["readiness"]
        .as_str()
        .unwrap()
        .starts_with("not checked"));
    let problems = memory["problems"].to_string();
    assert!(
        problems.contains("exited with code 137") && problems.contains("out of memory"),
        "{problems}"
    );

    let github = by["github"];
    assert_eq!(github["health"], "unhealthy");
    assert_eq!(github["readiness"], "not ready (HTTP 503)");
    assert_eq!(github["healthy"], false);

    let summary = data["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("3 services, 1 healthy, 2 unhealthy"),
        "{summary}"
    );
    assert!(!summary.contains("fetch ("), "{summary}");
    assert_only_contract_paths(&state);
}

#[tokio::test]
async fn service_health_says_why_in_plain_words() {
    let (mut s, state) = stack().await;

    let r = s.call("service_health", json!({"service": "memory"})).await;
    assert!(
        !is_error(&r),
        "an unhealthy service is a result, not a failure: {r}"
    );
    let d = &r["structuredContent"];
    assert_eq!(d["healthy"], false);
    assert_eq!(d["container"]["oom_killed"], true);
    assert_eq!(d["container"]["exit_code"], 137);
    assert_eq!(d["container"]["state"], "exited");
    assert_eq!(
        d["reasons"][0],
        "the container has exited with code 137 after being killed for running out of memory (OOM)"
    );
    assert_eq!(d["readiness"]["checked"], false);
    assert!(
        text(&r).contains("memory is unhealthy: the container has exited"),
        "{}",
        text(&r)
    );

    let r = s.call("service_health", json!({"service": "github"})).await;
    let d = &r["structuredContent"];
    assert_eq!(d["healthy"], false, "{d}");
    let reasons: Vec<&str> = d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        reasons[0],
        "its Docker health check reports unhealthy (4 failures in a row): readyz: HTTP 503"
    );
    assert!(
        reasons[1].starts_with("its bridge is not ready (/readyz answered HTTP 503"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[1].contains("circuit breaker open"),
        "{}",
        reasons[1]
    );
    assert_eq!(d["readiness"]["status"], 503);
    assert_eq!(d["readiness"]["body"]["reason"], "circuit breaker open");

    let r = s.call("service_health", json!({"service": "fetch"})).await;
    let d = &r["structuredContent"];
    assert_eq!(d["healthy"], true, "{d}");
    assert_eq!(d["reasons"], json!([]));
    assert_eq!(d["summary"], "fetch is healthy.");
    assert_eq!(d["readiness"]["status"], 200);
    assert_eq!(d["readiness"]["body"]["ready"], true);
    assert_eq!(d["container"]["revision"], "r3-abcdef12");
    assert_eq!(d["container"]["restarts"], 1);

    let r = s.call("service_health", json!({"service": "nosuch"})).await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains(
            "no container of service 'nosuch' found; services of this stack: fetch, github, memory"
        ),
        "{}",
        text(&r)
    );

    let r = s
        .call("service_health", json!({"service": "../../images"}))
        .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("is not a service name"), "{}", text(&r));
    let r = s.call("service_health", json!({})).await;
    assert!(
        is_error(&r) && text(&r).contains("missing field `service`"),
        "{r}"
    );
    assert_only_contract_paths(&state);
}

#[tokio::test]
async fn service_stats_match_the_canned_sample_and_metrics() {
    let (mut s, state) = stack().await;

    let r = s.call("service_stats", json!({"service": "fetch"})).await;
    assert!(!is_error(&r), "{r}");
    let d = &r["structuredContent"];
    let m = &d["memory"];
    assert_eq!(m["used_bytes"], FETCH_USAGE - FETCH_INACTIVE, "{d}");
    assert_eq!(m["usage_bytes"], FETCH_USAGE);
    assert_eq!(m["inactive_file_bytes"], FETCH_INACTIVE);
    assert_eq!(m["limit_bytes"], FETCH_LIMIT);
    assert_eq!(m["used"], "80.0 MiB");
    assert_eq!(m["used_percent_of_limit"], 41.67);
    assert_eq!(d["cpu"]["total_seconds"], 12.5);
    assert_eq!(d["cpu"]["limit_cores"], 0.5);
    assert!(
        d["cpu"]["percent"].is_null(),
        "one-shot sample: no interval"
    );
    let b = &d["bridge"];
    assert_eq!(b["requests_total"], 10.0, "{b}");
    assert_eq!(b["request_errors_total"], 2.0);
    assert_eq!(b["errors_by_type"], json!({"timeout": 2.0}));
    assert_eq!(
        b["requests_by_tool"],
        json!({"fetch": 7.0, "tools/list": 3.0})
    );
    assert_eq!(b["sessions_active"], 3.0);
    assert_eq!(b["sessions_opened_total"], 9.0);
    assert_eq!(b["mean_request_ms"], 100.0);
    assert_eq!(b["ready"], true);
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains("memory 80.0 MiB of 192.0 MiB (41.67%)"),
        "{summary}"
    );
    assert!(
        summary.contains("10 requests, 2 errors, 3 active sessions"),
        "{summary}"
    );

    // cgroup v2 figures (inactive_file only), CPU % over the sample interval, quota/period limit.
    let r = s.call("service_stats", json!({"service": "github"})).await;
    let d = &r["structuredContent"];
    assert_eq!(
        d["memory"]["used_bytes"],
        GITHUB_USAGE - GITHUB_INACTIVE,
        "{d}"
    );
    assert_eq!(d["memory"]["limit_bytes"], GITHUB_LIMIT);
    assert_eq!(d["cpu"]["percent"], 20.0);
    assert_eq!(d["cpu"]["limit_cores"], 0.5);
    assert_eq!(d["bridge"]["requests_total"], 1.0);

    // A stopped container has no memory figures and its bridge is not asked.
    let r = s.call("service_stats", json!({"service": "memory"})).await;
    assert!(!is_error(&r), "{r}");
    let d = &r["structuredContent"];
    assert!(d["memory"]["used_bytes"].is_null(), "{d}");
    assert_eq!(d["state"], "exited");
    assert_eq!(d["bridge"]["checked"], false);
    assert_only_contract_paths(&state);
}

#[tokio::test]
async fn recent_logs_returns_the_tail() {
    let (mut s, state) = stack().await;

    let r = s
        .call("recent_logs", json!({"service": "memory", "lines": 2}))
        .await;
    assert!(!is_error(&r), "{r}");
    let t = text(&r);
    assert!(
        t.ends_with(
            "loading graph: 120000 entities\n[stderr] memory allocation of 67108864 bytes failed"
        ),
        "{t}"
    );
    assert!(
        !t.contains("serving on stdio"),
        "only the last 2 lines: {t}"
    );
    let d = &r["structuredContent"];
    assert_eq!(d["returned"], 2);
    assert_eq!(
        d["lines"][1],
        json!({"stream": "stderr", "line": "memory allocation of 67108864 bytes failed"})
    );

    let r = s.call("recent_logs", json!({"service": "memory"})).await;
    assert_eq!(r["structuredContent"]["returned"], 3, "{r}");

    let seen = state.seen.lock().unwrap().clone();
    let log_calls: Vec<&String> = seen.iter().filter(|p| p.contains("/logs")).collect();
    assert_eq!(
        log_calls,
        [
            &format!("/containers/{ID_MEMORY}/logs?tail=2"),
            &format!("/containers/{ID_MEMORY}/logs?tail=50")
        ]
    );

    for bad in [json!(1001), json!(0), json!("ten")] {
        let r = s
            .call("recent_logs", json!({"service": "memory", "lines": bad}))
            .await;
        assert!(is_error(&r), "{bad}: {r}");
        assert!(text(&r).contains("lines must be"), "{}", text(&r));
    }
    assert_only_contract_paths(&state);
}

#[tokio::test]
async fn firing_alerts_without_prometheus_says_none_is_configured() {
    let (mut s, _) = stack().await;
    let r = s.call("firing_alerts", json!({})).await;
    assert!(!is_error(&r), "{r}");
    assert!(
        text(&r).contains("No Prometheus is configured"),
        "{}",
        text(&r)
    );
    assert_eq!(r["structuredContent"]["configured"], false);
    assert_eq!(r["structuredContent"]["alerts"], json!([]));
}

#[tokio::test]
async fn firing_alerts_returns_only_firing_ones() {
    let (proxy, _) = fake_proxy().await;
    let prom = fake_prometheus().await;
    let mut s =
        McpServer::start(&[("MCP_DOCKER_PROXY_URL", &proxy), ("PROMETHEUS_URL", &prom)]).await;
    let r = s.call("firing_alerts", json!({})).await;
    assert!(!is_error(&r), "{r}");
    let d = &r["structuredContent"];
    assert_eq!(d["configured"], true);
    let alerts = d["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "pending alerts are not firing: {d}");
    assert_eq!(alerts[0]["name"], "McpServiceDown");
    assert_eq!(alerts[0]["service"], "memory");
    assert_eq!(alerts[0]["severity"], "critical");
    assert_eq!(alerts[0]["summary"], "memory has been down for 1 minute");
    assert_eq!(
        d["summary"],
        "1 alert(s) firing: McpServiceDown (service memory)"
    );
}

#[tokio::test]
async fn unreachable_prometheus_is_a_clean_error() {
    let (_reserved, closed) = closed_port();
    let url = format!("http://127.0.0.1:{closed}");
    let mut s = McpServer::start(&[("PROMETHEUS_URL", &url)]).await;
    let r = s.call("firing_alerts", json!({})).await;
    assert!(is_error(&r), "{r}");
    assert!(
        text(&r).contains(&format!(
            "Prometheus could not be reached at {url}/api/v1/alerts"
        )),
        "{}",
        text(&r)
    );
}

/// A port nothing listens on, reserved while the socket returned with it lives: bound but never
/// listening, so a connection is refused, and no other test (this binary runs them in parallel
/// and binds port 0 for its fakes) can be given the port meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

#[tokio::test]
async fn unreachable_proxy_is_a_clean_error_quickly() {
    let (_reserved, port) = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut s = McpServer::start(&[("MCP_DOCKER_PROXY_URL", &url)]).await;
    for (tool, args) in [
        ("list_services", json!({})),
        ("service_health", json!({"service": "fetch"})),
        ("service_stats", json!({"service": "fetch"})),
        ("recent_logs", json!({"service": "fetch", "lines": 5})),
    ] {
        let started = Instant::now();
        let r = s.call(tool, args).await;
        let took = started.elapsed();
        assert!(is_error(&r), "{tool}: {r}");
        let t = text(&r);
        assert!(
            t.starts_with(&format!(
                "{tool} failed: the docker proxy could not be reached at {url}/containers/json"
            )),
            "{t}"
        );
        assert!(t.contains("mcpctl docker-proxy"), "{t}");
        assert!(took < Duration::from_secs(5), "{tool} took {took:?}");
    }
}

#[tokio::test]
async fn silent_proxy_times_out_in_about_two_seconds() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            keep.lock().unwrap().push(sock);
        }
    });
    let mut s = McpServer::start(&[("MCP_DOCKER_PROXY_URL", &url)]).await;
    let started = Instant::now();
    let r = s.call("list_services", json!({})).await;
    let took = started.elapsed();
    assert!(is_error(&r), "{r}");
    assert!(
        text(&r).contains(&format!(
            "the docker proxy did not answer GET {url}/containers/json within 2s"
        )),
        "{}",
        text(&r)
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "took {took:?}"
    );
    acceptor.abort();
}
