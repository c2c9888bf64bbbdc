//! mcp-testserver: a small stdio MCP server whose behaviour is chosen by flags, for mcpctl's tests.
//!
//! It speaks newline-delimited JSON-RPC on stdin/stdout (one message per line) and handles every
//! `tools/call` on its own thread, so a slow call never delays another. It owns no state between runs
//! except the optional spawn log (one line per start), which tests read to count child processes.
//!
//! Start-up flags model the revisions a rollout test needs: healthy (default), `--omit-tool NAME`
//! (a tool missing), `--crash-at-start`, `--fail-tool NAME` (the smoke call returns `isError`),
//! `--hang-at-start` (reads but never answers).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const SUPPORTED_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

#[derive(Default)]
struct Flags {
    nonce: String,
    omit: HashSet<String>,
    fail: HashSet<String>,
    crash_at_start: bool,
    hang_at_start: bool,
    spawn_log: Option<String>,
    protocol_version: Option<String>,
    stderr_at_start: u64,
    garbage_stdout: bool,
}

fn parse_flags() -> Flags {
    let mut f = Flags::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        match a.as_str() {
            "--nonce" => f.nonce = val("--nonce"),
            "--omit-tool" => {
                f.omit.insert(val("--omit-tool"));
            }
            "--fail-tool" => {
                f.fail.insert(val("--fail-tool"));
            }
            "--crash-at-start" => f.crash_at_start = true,
            "--hang-at-start" => f.hang_at_start = true,
            "--spawn-log" => f.spawn_log = Some(val("--spawn-log")),
            "--protocol-version" => f.protocol_version = Some(val("--protocol-version")),
            "--stderr-at-start" => {
                f.stderr_at_start = val("--stderr-at-start")
                    .parse()
                    .unwrap_or_else(|_| die("bad number"))
            }
            "--garbage-stdout" => f.garbage_stdout = true,
            "--help" | "-h" => {
                println!(
                    "mcp-testserver [--nonce X] [--omit-tool NAME]... [--fail-tool NAME]... [--crash-at-start] \
                     [--hang-at-start] [--spawn-log FILE] [--protocol-version V] [--stderr-at-start LINES] [--garbage-stdout]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown flag {other}")),
        }
    }
    f
}

fn die(msg: &str) -> ! {
    eprintln!("mcp-testserver: {msg}");
    std::process::exit(2);
}

/// Everything a handler thread needs: the output lock (one whole line per write) and the table of
/// requests this server sent to the client, awaiting replies.
struct Server {
    flags: Flags,
    out: Mutex<std::io::Stdout>,
    next_server_id: AtomicU64,
    waiting: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    extra_tool: AtomicBool,
    /// How often this process was asked to initialize and to list tools (the shared bridge should
    /// do each once).
    initialize_count: AtomicU64,
    tools_list_count: AtomicU64,
    /// tools/call requests received (to prove a refused call never reached the server).
    tools_call_count: AtomicU64,
    init_params: Mutex<Value>,
}

impl Server {
    fn send(&self, msg: &Value) {
        let mut line = serde_json::to_vec(msg).expect("serialise");
        line.push(b'\n');
        let mut out = self.out.lock().unwrap();
        if self.flags.garbage_stdout {
            let _ = out.write_all(b"this line is not JSON\n");
        }
        // A failed write means the client went away: nothing useful left to do.
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    }

    fn reply(&self, id: &Value, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    fn error(&self, id: &Value, code: i64, message: &str) {
        self.send(
            &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        );
    }

    fn text(&self, id: &Value, tool: &str, text: String) {
        let is_error = self.flags.fail.contains(tool);
        self.reply(
            id,
            json!({"content": [{"type": "text", "text": text}], "isError": is_error}),
        );
    }

    /// Send a request to the client and wait for its answer (bounded, so a test never hangs here).
    fn ask_client(&self, method: &str) -> Value {
        let id = format!(
            "srv-{}",
            self.next_server_id.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().unwrap().insert(id.clone(), tx);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}}));
        let answer = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or(json!({"timeout": true}));
        self.waiting.lock().unwrap().remove(&id);
        answer
    }

    fn tools(&self) -> Vec<Value> {
        let obj = |props: Value| json!({"type": "object", "properties": props});
        let mut tools = vec![
            json!({"name": "echo", "description": "Returns text|nonce", "inputSchema": obj(json!({"text": {"type": "string"}}))}),
            json!({"name": "slow_echo", "description": "echo after delay_ms", "inputSchema": obj(json!({"text": {"type": "string"}, "delay_ms": {"type": "integer"}}))}),
            json!({"name": "big", "description": "Returns `bytes` characters", "inputSchema": obj(json!({"bytes": {"type": "integer"}}))}),
            json!({"name": "crash", "description": "Exits the process without replying", "inputSchema": obj(json!({"code": {"type": "integer"}}))}),
            json!({"name": "progress", "description": "Sends `steps` progress notifications, then text", "inputSchema": obj(json!({"steps": {"type": "integer"}, "delay_ms": {"type": "integer"}, "text": {"type": "string"}}))}),
            json!({"name": "stderr_flood", "description": "Writes `lines` lines to stderr, then replies", "inputSchema": obj(json!({"lines": {"type": "integer"}}))}),
            json!({"name": "hang", "description": "Never replies", "inputSchema": obj(json!({}))}),
            json!({"name": "stop", "description": "Stops the whole process with SIGSTOP", "inputSchema": obj(json!({}))}),
            json!({"name": "ask_roots", "description": "Sends roots/list to the client; returns its answer", "inputSchema": obj(json!({}))}),
            json!({"name": "notify_list_changed", "description": "Adds tool `added` and sends tools/list_changed", "inputSchema": obj(json!({}))}),
            json!({"name": "whoami", "description": "Returns pid|nonce", "inputSchema": obj(json!({}))}),
            json!({"name": "counters", "description": "Returns how often initialize and tools/list were received", "inputSchema": obj(json!({}))}),
            json!({"name": "client_info", "description": "Returns the initialize params this process received", "inputSchema": obj(json!({}))}),
            json!({"name": "log", "description": "Sends notifications/message at `level`", "inputSchema": obj(json!({"level": {"type": "string"}, "text": {"type": "string"}}))}),
            json!({"name": "typed", "description": "A strict schema (argument validation tests); returns count|mode|nonce", "inputSchema": {
                "type": "object", "additionalProperties": false, "required": ["count"],
                "properties": {"count": {"type": "integer", "minimum": 1}, "mode": {"enum": ["fast", "slow"]},
                               "tags": {"type": "array", "items": {"type": "string"}}}}}),
            json!({"name": "getenv", "description": "Returns the value of environment variable `name` (or <unset>)", "inputSchema": obj(json!({"name": {"type": "string"}}))}),
        ];
        if self.extra_tool.load(Ordering::Relaxed) {
            tools.push(json!({"name": "added", "description": "Appears after notify_list_changed", "inputSchema": obj(json!({}))}));
        }
        tools.retain(|t| {
            !self
                .flags
                .omit
                .contains(t["name"].as_str().unwrap_or_default())
        });
        tools
    }

    fn call(self: &Arc<Self>, id: Value, params: Value) {
        let name = params["name"].as_str().unwrap_or_default().to_string();
        let args = &params["arguments"];
        let nonce = &self.flags.nonce;
        if self.flags.omit.contains(&name)
            || !self.tools().iter().any(|t| t["name"] == name.as_str())
        {
            return self.error(&id, -32602, &format!("unknown tool: {name}"));
        }
        let s = |k: &str| args[k].as_str().unwrap_or_default().to_string();
        let n = |k: &str, d: u64| args[k].as_u64().unwrap_or(d);
        match name.as_str() {
            "echo" => self.text(&id, &name, format!("{}|{nonce}", s("text"))),
            "slow_echo" => {
                std::thread::sleep(Duration::from_millis(n("delay_ms", 1000)));
                self.text(&id, &name, format!("{}|{nonce}", s("text")))
            }
            "big" => {
                let mut text = "x".repeat(n("bytes", 5 * 1024 * 1024) as usize);
                text.push_str(nonce);
                self.text(&id, &name, text)
            }
            "crash" => std::process::exit(n("code", 3) as i32),
            "progress" => {
                let token = params["_meta"]["progressToken"].clone();
                let steps = n("steps", 3);
                for i in 1..=steps {
                    if !token.is_null() {
                        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                            "progressToken": token, "progress": i, "total": steps, "message": format!("{}|{nonce}", s("text"))}}));
                    }
                    std::thread::sleep(Duration::from_millis(n("delay_ms", 0)));
                }
                self.text(&id, &name, format!("{}|{nonce}", s("text")))
            }
            "stderr_flood" => {
                let lines = n("lines", 100_000);
                let mut err = std::io::stderr().lock();
                for i in 0..lines {
                    let _ = writeln!(err, "stderr flood line {i} {}", "e".repeat(100));
                }
                drop(err);
                self.text(&id, &name, format!("flooded {lines}|{nonce}"))
            }
            "hang" => {}
            "whoami" => self.text(&id, &name, format!("{}|{nonce}", std::process::id())),
            "typed" => {
                let mode = args["mode"].as_str().unwrap_or("fast");
                self.text(&id, &name, format!("{}|{mode}|{nonce}", args["count"]))
            }
            "getenv" => {
                let v = std::env::var(s("name")).unwrap_or_else(|_| "<unset>".into());
                self.text(&id, &name, v)
            }
            "counters" => {
                let mut counts = json!({
                    "initialize": self.initialize_count.load(Ordering::Relaxed),
                    "tools_list": self.tools_list_count.load(Ordering::Relaxed),
                });
                if args["with_calls"].as_bool() == Some(true) {
                    counts["tools_call"] = json!(self.tools_call_count.load(Ordering::Relaxed));
                }
                self.text(&id, &name, counts.to_string())
            }
            "client_info" => {
                let init = self.init_params.lock().unwrap().clone();
                self.text(&id, &name, init.to_string())
            }
            "stop" => {
                self.text(&id, &name, format!("stopping|{nonce}"));
                std::thread::sleep(Duration::from_millis(50));
                stop_self();
            }
            "ask_roots" => {
                let answer = self.ask_client("roots/list");
                self.text(&id, &name, answer.to_string())
            }
            "notify_list_changed" => {
                self.extra_tool.store(true, Ordering::Relaxed);
                self.send(&json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
                self.text(&id, &name, format!("changed|{nonce}"))
            }
            "log" => {
                let level = args["level"].as_str().unwrap_or("info");
                self.send(
                    &json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {
                    "level": level, "data": format!("{}|{nonce}", s("text"))}}),
                );
                self.text(&id, &name, format!("logged|{nonce}"))
            }
            _ => self.error(&id, -32602, &format!("unknown tool: {name}")),
        }
    }
}

fn stop_self() {
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &std::process::id().to_string()])
        .status();
}

fn main() {
    let flags = parse_flags();
    if let Some(path) = &flags.spawn_log {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| die(&format!("{path}: {e}")));
        let _ = writeln!(f, "{}", std::process::id());
    }
    if flags.crash_at_start {
        eprintln!("mcp-testserver: crashing at start as asked");
        std::process::exit(3);
    }
    if flags.stderr_at_start > 0 {
        let mut err = std::io::stderr().lock();
        for i in 0..flags.stderr_at_start {
            let _ = writeln!(err, "start-up noise {i}");
        }
    }
    let server = Arc::new(Server {
        flags,
        out: Mutex::new(std::io::stdout()),
        next_server_id: AtomicU64::new(1),
        waiting: Mutex::new(HashMap::new()),
        extra_tool: AtomicBool::new(false),
        init_params: Mutex::new(Value::Null),
        initialize_count: AtomicU64::new(0),
        tools_list_count: AtomicU64::new(0),
        tools_call_count: AtomicU64::new(0),
    });
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if server.flags.hang_at_start || line.trim().is_empty() {
            continue;
        }
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            eprintln!("mcp-testserver: not JSON: {:.80}", line);
            continue;
        };
        let id = msg.get("id").cloned();
        let method = msg["method"].as_str().map(str::to_string);
        match (method.as_deref(), id) {
            (None, Some(id)) => {
                // A reply to one of our own requests (e.g. roots/list).
                let key = id
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| id.to_string());
                if let Some(tx) = server.waiting.lock().unwrap().remove(&key) {
                    let _ = tx.send(msg);
                }
            }
            (Some("initialize"), Some(id)) => {
                server.initialize_count.fetch_add(1, Ordering::Relaxed);
                *server.init_params.lock().unwrap() = msg["params"].clone();
                let asked = msg["params"]["protocolVersion"]
                    .as_str()
                    .unwrap_or_default();
                let version = server.flags.protocol_version.clone().unwrap_or_else(|| {
                    if SUPPORTED_VERSIONS.contains(&asked) {
                        asked.to_string()
                    } else {
                        SUPPORTED_VERSIONS.last().unwrap().to_string()
                    }
                });
                server.reply(&id, json!({
                    "protocolVersion": version,
                    "capabilities": {"tools": {"listChanged": true}, "logging": {}},
                    "serverInfo": {"name": "mcp-testserver", "version": env!("CARGO_PKG_VERSION")},
                    "instructions": format!("test server nonce={}", server.flags.nonce),
                }));
            }
            (Some("ping"), Some(id)) => server.reply(&id, json!({})),
            (Some("tools/list"), Some(id)) => {
                server.tools_list_count.fetch_add(1, Ordering::Relaxed);
                server.reply(&id, json!({"tools": server.tools()}))
            }
            (Some("logging/setLevel"), Some(id)) => server.reply(&id, json!({})),
            (Some("tools/call"), Some(id)) => {
                server.tools_call_count.fetch_add(1, Ordering::Relaxed);
                let s = server.clone();
                let params = msg["params"].clone();
                std::thread::spawn(move || s.call(id, params));
            }
            (Some(other), Some(id)) => {
                server.error(&id, -32601, &format!("method not found: {other}"))
            }
            (Some("notifications/cancelled"), None) => {
                // Tests look for this line in the bridge's log (it drains our stderr there).
                eprintln!(
                    "mcp-testserver: cancelled request {}",
                    msg["params"]["requestId"]
                );
            }
            (Some(_), None) => {} // other notifications (initialized) need no answer
            (None, None) => {}
        }
    }
}
