//! Test harness for mcp-memory: a throwaway PostgreSQL cluster, a line-delimited JSON-RPC client
//! for stdio MCP servers, and the reference npm server-memory installation.
//!
//! Policy: when `MCPCTL_TEST_REQUIRE_DOCKER=1` (CI), a missing PostgreSQL, node or npm is a test
//! FAILURE; otherwise the test prints SKIP and passes. Every process started here is stopped by a
//! Drop guard; every wait is a poll with a deadline.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Version of npm `@modelcontextprotocol/server-memory` the parity test compares against.
pub const REFERENCE_VERSION: &str = "2026.8.31";

pub fn required() -> bool {
    std::env::var("MCPCTL_TEST_REQUIRE_DOCKER").as_deref() == Ok("1")
}

/// Missing prerequisite: FAIL under the CI policy, SKIP otherwise. Returns `None` to skip.
pub fn prerequisite<T>(what: Result<T, String>) -> Option<T> {
    match what {
        Ok(v) => Some(v),
        Err(e) if required() => panic!("FAIL (MCPCTL_TEST_REQUIRE_DOCKER=1): {e}"),
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
    }
}

/// A unique scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), tag)
    }
    /// A unique directory below `parent`: unique per process, call and clock reading.
    pub fn new_in(parent: &Path, tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = parent.join(format!(
            "mcp-memory-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The directory holding initdb/postgres/pg_isready/psql: `MCPCTL_PG_BINDIR`, or the newest
/// Debian `/usr/lib/postgresql/<major>/bin`, or `pg_config --bindir`.
pub fn pg_bindir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("MCPCTL_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").exists() {
            return Err(format!("MCPCTL_PG_BINDIR={} has no initdb", dir.display()));
        }
        return Ok(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").exists() {
            return Ok(bin);
        }
    }
    Err(
        "PostgreSQL server binaries (initdb, postgres) not found: install Debian's `postgresql` \
         (scripts/setup does) or set MCPCTL_PG_BINDIR"
            .into(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, socket in its own directory), run as
/// the `postgres` user when the tests run as root (initdb refuses root). Stopped on drop.
pub struct PgCluster {
    bindir: PathBuf,
    dir: TempDir,
    pub port: u16,
    server: Option<Child>,
}

impl PgCluster {
    /// `Ok(None)`-style skipping is the caller's: `prerequisite(PgCluster::start())`.
    pub fn start() -> Result<PgCluster, String> {
        let bindir = pg_bindir()?;
        let dir = TempDir::new("pg");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("cannot chown the cluster directory to the postgres user \
                            (does the user exist?)"
                    .into());
            }
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C.UTF-8"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut cluster = PgCluster {
            bindir,
            dir,
            port: free_port(),
            server: None,
        };
        // The free port is only free when we looked: another test may take it before postgres
        // binds it. Try a few ports before giving up.
        for attempt in 1..=3 {
            match cluster.try_resume() {
                Ok(()) => return Ok(cluster),
                Err(e) if attempt == 3 => panic!("{e}"),
                Err(_) => cluster.port = free_port(),
            }
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Start (or restart) the server on the same data directory and port; waits until it
    /// accepts connections.
    pub fn resume(&mut self) {
        if let Err(e) = self.try_resume() {
            panic!("{e}");
        }
    }

    fn try_resume(&mut self) -> Result<(), String> {
        assert!(self.server.is_none(), "cluster already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = as_pg_user(&self.bindir.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "deadlock_timeout=100ms"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(status) = self.server.as_mut().unwrap().try_wait().unwrap() {
                self.server = None;
                return Err(format!(
                    "postgres exited ({status}) before accepting connections:\n{}",
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "postgres did not accept connections within 30 s:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting until it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.server.take() else {
            return;
        };
        // The child may be runuser; signal the postmaster itself (first line of postmaster.pid).
        let pidfile = self.dir.path().join("data/postmaster.pid");
        let postmaster = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok());
        let target = postmaster.unwrap_or(child.id() as i32);
        // SAFETY: plain kill(2) on a process this harness started.
        unsafe { libc::kill(target, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() && !pidfile.exists() {
                return;
            }
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(target, libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Run SQL with psql against the cluster; panics on failure.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(),
            ])
            .args(["-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Path of the built server binary.
pub fn memory_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-memory"))
}

/// Reference npm server-memory, installed once per machine from the committed lock
/// (`tests/reference/package-lock.json`, integrity hashes; `npm ci --ignore-scripts`) into a cache
/// directory outside the repository keyed by the lock's hash (MCPCTL_CACHE, default
/// /var/cache/mcpctl). Returns the entry script.
///
/// Both parity tests call this at the same time on a cold cache, and several test processes may
/// too: each call installs into a staging directory of its own (pid, counter, clock) and renames it
/// into place; a loser removes only its own staging directory. Within one process a mutex makes the
/// second caller wait for the first instead of installing twice.
pub fn reference_server() -> Result<PathBuf, String> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        return Err("`node` is not available to run the reference server-memory".into());
    }
    let lock_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let manifest = std::fs::read(lock_dir.join("package.json")).map_err(|e| format!("{e}"))?;
    let lock = std::fs::read(lock_dir.join("package-lock.json")).map_err(|e| format!("{e}"))?;
    if !String::from_utf8_lossy(&manifest).contains(&format!("\"{REFERENCE_VERSION}\"")) {
        return Err(format!(
            "{}/package.json does not pin server-memory {REFERENCE_VERSION} (REFERENCE_VERSION)",
            lock_dir.display()
        ));
    }
    let key = fnv1a(&[&manifest[..], &lock[..]].concat());
    let base = std::env::var("MCPCTL_CACHE").unwrap_or_else(|_| "/var/cache/mcpctl".into());
    let mut cache = PathBuf::from(base);
    if std::fs::create_dir_all(&cache).is_err() {
        cache = std::env::temp_dir().join("mcpctl-cache");
        std::fs::create_dir_all(&cache).map_err(|e| format!("cache dir: {e}"))?;
    }
    let dir = cache.join(format!("refmem-{REFERENCE_VERSION}-{key:016x}"));
    let entry = dir.join("node_modules/@modelcontextprotocol/server-memory/dist/index.js");
    if entry.exists() {
        return Ok(entry);
    }
    let staging = TempDir::new_in(&cache, &format!("refmem-{REFERENCE_VERSION}.tmp"));
    std::fs::write(staging.path().join("package.json"), &manifest).map_err(|e| format!("{e}"))?;
    std::fs::write(staging.path().join("package-lock.json"), &lock).map_err(|e| format!("{e}"))?;
    let out = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
        ])
        .current_dir(staging.path())
        .output()
        .map_err(|e| format!("npm is not available to install the reference server: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "npm ci of the reference server (lock {}) failed: {}",
            lock_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Another process may have renamed its own copy into place first: then ours is dropped.
    let _ = std::fs::rename(staging.path(), &dir);
    if entry.exists() {
        Ok(entry)
    } else {
        Err(format!("{} missing after npm ci", entry.display()))
    }
}

/// 64-bit FNV-1a: a cache key for the reference lock (not a security boundary: npm checks the
/// integrity hashes in the lock itself).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A stdio MCP server process and a JSON-RPC client for it. Every stdout line must be a JSON-RPC
/// message (checked as it is read). Killed on drop.
pub struct McpProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
    stderr_path: PathBuf,
    _stderr_dir: TempDir,
    pub name: String,
}

pub const CALL_DEADLINE: Duration = Duration::from_secs(20);

impl McpProcess {
    pub fn spawn(name: &str, mut cmd: Command) -> McpProcess {
        let stderr_dir = TempDir::new("stderr");
        let stderr_path = stderr_dir.path().join("stderr.log");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = McpProcess {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            next_id: 1,
            stderr_path,
            _stderr_dir: stderr_dir,
            name: name.to_string(),
        };
        let init = p.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-memory-tests", "version": "0"}
            }),
        );
        assert!(
            init.get("result").is_some(),
            "{name}: initialize failed: {init}"
        );
        p.notify("notifications/initialized", json!({}));
        p
    }

    /// Our server against `database_url`.
    pub fn memory(database_url: &str) -> McpProcess {
        let mut cmd = Command::new(memory_bin());
        cmd.env("DATABASE_URL", database_url)
            .env("MEMORY_LOG", "debug")
            .env("MEMORY_DB_CONNECT_TIMEOUT_MS", "2000")
            .env("MEMORY_DB_RETRY_MS", "1500");
        McpProcess::spawn("mcp-memory", cmd)
    }

    /// The reference server with its JSONL file at `file`.
    pub fn reference(entry: &Path, file: &Path) -> McpProcess {
        let mut cmd = Command::new("node");
        cmd.arg(entry).env("MEMORY_FILE_PATH", file);
        McpProcess::spawn("reference server-memory", cmd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Send a request and wait (with a deadline) for the response with its id.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no response to {method} within {CALL_DEADLINE:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: stdout closed while waiting for {method}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            };
            let msg: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!("{}: non-JSON line on stdout ({e}): {line:?}", self.name)
            });
            assert_eq!(msg["jsonrpc"], "2.0", "{}: not JSON-RPC: {line}", self.name);
            if msg.get("id") == Some(&json!(id)) {
                return msg;
            }
        }
    }

    /// `tools/call`; returns the `result` object (panics on a JSON-RPC error).
    pub fn call(&mut self, tool: &str, args: Value) -> Value {
        let resp = self.request("tools/call", json!({"name": tool, "arguments": args}));
        match resp.get("result") {
            Some(r) => r.clone(),
            None => panic!("{}: {tool} returned a JSON-RPC error: {resp}", self.name),
        }
    }

    /// `tools/call` that must succeed; returns the parsed JSON text content.
    pub fn call_ok(&mut self, tool: &str, args: Value) -> Value {
        let r = self.call(tool, args);
        assert!(!is_error(&r), "{}: {tool} failed: {r}", self.name);
        let text = r["content"][0]["text"].as_str().unwrap();
        serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Resident memory in KiB (from /proc).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// Close stdin and wait (with a deadline) for a clean exit.
    pub fn shutdown(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.wait_exit()
    }

    /// SIGTERM (as `docker stop` sends) and wait (with a deadline) for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within 10 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for McpProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is_error(result: &Value) -> bool {
    result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("")
}
