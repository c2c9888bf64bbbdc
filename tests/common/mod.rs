//! Helpers shared by the integration tests: the built binaries, a per-run project name, the
//! Docker requirement policy, and small local images (no registry is reachable here).
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The mcpctl binary under test.
pub fn mcpctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcpctl"))
}

/// The test MCP server, built into the same target directory by `cargo build --workspace`.
pub fn testserver() -> PathBuf {
    let path = mcpctl().with_file_name("mcp-testserver");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`; scripts/test does)",
        path.display()
    );
    path
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run mcpctl with arguments in `dir`.
pub fn run_mcpctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(mcpctl())
        .args(args)
        .current_dir(dir)
        .env_remove("MCPCTL_FILE")
        .env_remove("MCPCTL_STATE_DIR")
        .output()
        .expect("mcpctl runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A project name unique to this test run, so leftovers on a reused machine never collide and
/// cleanup can filter on `com.mcp.project=<name>`.
pub fn unique_project(prefix: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("{:x}{:x}", std::process::id() % 0xfff, nanos % 0xffff)
    });
    format!("t{prefix}{run}")
}

/// Whether the Docker tier must run. `scripts/test` (and so CI) sets MCPCTL_TEST_REQUIRE_DOCKER=1:
/// then a missing engine or tool FAILS the test. A developer running plain `cargo test` without an
/// engine sees the test report itself skipped.
pub fn docker_available(test: &str) -> bool {
    let required = std::env::var("MCPCTL_TEST_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(!required, "{test}: the Docker engine is required (MCPCTL_TEST_REQUIRE_DOCKER=1) but `docker info` fails; run scripts/setup");
        eprintln!("SKIPPED {test}: no Docker engine (set MCPCTL_TEST_REQUIRE_DOCKER=1 to make this a failure)");
    }
    ok
}

/// A host tool the test needs; required under the same policy as Docker.
pub fn tool(test: &str, name: &str, candidates: &[&str]) -> Option<PathBuf> {
    let required = std::env::var("MCPCTL_TEST_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(text(&out.stdout).trim()))
        });
    if found.is_none() {
        assert!(
            !required,
            "{test}: `{name}` is required but not installed; run scripts/setup"
        );
        eprintln!("SKIPPED {test}: `{name}` is not installed (run scripts/setup)");
    }
    found
}

/// Run a command, panicking with its output if it fails.
pub fn must(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The tail (last `lines` lines) of a log file, for failure messages; says so when it is missing.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let all = text(&bytes);
            let v: Vec<&str> = all.lines().collect();
            let from = v.len().saturating_sub(lines);
            format!(
                "--- {} (last {} of {} lines) ---\n{}",
                path.display(),
                v.len() - from,
                v.len(),
                v[from..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

/// [`wait_for`] for a process the test started: on timeout the panic carries the tail of each of
/// the process's logs, so a start-up failure is visible in CI's output.
pub fn wait_for_logged<T>(
    what: &str,
    timeout: Duration,
    logs: &[&Path],
    f: impl FnMut() -> Option<T>,
) -> T {
    wait_for_explained(what, timeout, f, || {
        let tails: Vec<String> = logs.iter().map(|p| log_tail(p, 40)).collect();
        tails.join("\n")
    })
}

/// A scratch directory removed when the test passes and KEPT (its path printed) when the test
/// panics, so the logs of what the test started can be read after a failure.
pub struct TestDir(Option<tempfile::TempDir>);

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().unwrap()))
    }
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until drop").path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!("test failed: kept its directory {}", dir.keep().display());
            }
        }
    }
}

/// The address containers reach the host on through Docker's default bridge (what
/// `host-gateway` resolves to). Engines differ in what they record: the bridge network's IPAM
/// gateway when set, else the bridge interface's IPv4 address (`docker0`; Debian's engine 20.10
/// records only the subnet). Panics with both findings when neither gives an address.
pub fn bridge_gateway() -> String {
    let ipam = must(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
    ]));
    if let Some(gw) = ipam
        .split_whitespace()
        .find(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
    {
        return gw.to_string();
    }
    let ifname = must(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ]));
    let ifname = match ifname.trim() {
        "" | "<no value>" => "docker0",
        name => name,
    }
    .to_string();
    let addr = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &ifname])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    // `3: docker0    inet 172.17.0.1/16 brd ... scope global docker0`
    let found = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok());
    match found {
        Some(a) => a.to_string(),
        None => panic!(
            "cannot find the address of Docker's default bridge: the network's IPAM config has no \
             gateway ({ipam:?}) and interface {ifname} has no IPv4 address ({addr:?}); is dockerd \
             running with its default bridge (not --bridge=none)?"
        ),
    }
}

/// Poll `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_explained(what, timeout, f, String::new)
}

/// A tiny base image holding the test MCP server and the shared libraries it and mcpctl need,
/// built `FROM scratch` from host files (a few MB, under a second). Tagged by the content hash
/// of what goes in, so it is built once per machine and binary version.
pub fn runtime_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let server = testserver();
            let ctx = tempfile::tempdir().unwrap();
            let mut files: Vec<PathBuf> = vec![];
            for bin in [mcpctl(), server.clone()] {
                let out = must(Command::new("ldd").arg(&bin));
                for line in out.lines() {
                    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
                    let path = line
                        .split("=>")
                        .last()
                        .unwrap()
                        .trim()
                        .split(' ')
                        .next()
                        .unwrap();
                    if path.starts_with('/') && !files.iter().any(|f| f == Path::new(path)) {
                        files.push(PathBuf::from(path));
                    }
                }
            }
            let mut dockerfile = String::from("FROM scratch\n");
            for (i, f) in files.iter().enumerate() {
                let name = format!("lib{i}");
                std::fs::copy(f, ctx.path().join(&name)).unwrap();
                dockerfile.push_str(&format!("COPY {name} {}\n", f.display()));
            }
            std::fs::copy(&server, ctx.path().join("mcp-testserver")).unwrap();
            dockerfile.push_str("COPY mcp-testserver /usr/local/bin/mcp-testserver\n");
            std::fs::write(ctx.path().join("Dockerfile"), &dockerfile).unwrap();
            let hash = {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                for f in files.iter().chain([&server]) {
                    h.update(std::fs::read(f).unwrap());
                }
                hex::encode(&h.finalize()[..8])
            };
            let tag = format!("mcpctl-test/runtime:{hash}");
            let exists = Command::new("docker")
                .args(["image", "inspect", &tag])
                .output()
                .unwrap()
                .status
                .success();
            if !exists {
                must(
                    Command::new("docker")
                        .args(["build", "-q", "-t", &tag, "--label", "com.mcp.role=test"])
                        .arg(ctx.path()),
                );
            }
            tag
        })
        .clone()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test's own services).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Remove every container, network, volume and image labelled `com.mcp.project=<project>` (and
/// the containers matching `extra_container_filters`, e.g. a test's own label), whatever state
/// they are in. Errors are ignored: this runs from `Drop` after a failed test too.
pub fn remove_project(project: &str, extra_container_filters: &[String]) {
    let filter = format!("label=com.mcp.project={project}");
    let ids = |args: &[&str]| -> Vec<String> {
        let out = Command::new("docker")
            .args(args)
            .output()
            .map(|o| text(&o.stdout))
            .unwrap_or_default();
        out.split_whitespace().map(str::to_string).collect()
    };
    let mut containers = ids(&["ps", "-aq", "--filter", &filter]);
    for f in extra_container_filters {
        containers.extend(ids(&["ps", "-aq", "--filter", f]));
    }
    if !containers.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v"])
            .args(&containers)
            .output();
    }
    for n in ids(&["network", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker").args(["network", "rm", &n]).output();
    }
    for v in ids(&["volume", "ls", "-q", "--filter", &filter]) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &v])
            .output();
    }
    let images = ids(&["images", "-q", "--filter", &filter]);
    if !images.is_empty() {
        let _ = Command::new("docker")
            .args(["rmi", "-f"])
            .args(&images)
            .output();
    }
}

/// Removes the project's every container, network, volume and image when dropped.
pub struct Cleanup {
    pub project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_project(&self.project, &[]);
    }
}

/// Send a child's stdout and stderr to `log` (appended, created when missing), so a test that
/// waits on the child can show why it failed ([`wait_for_logged`], [`log_tail`]).
pub fn log_to<'a>(cmd: &'a mut Command, log: &Path) -> &'a mut Command {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
    };
    cmd.stdout(open()).stderr(open())
}

/// The port a `mcpctl bridge --listen 127.0.0.1:0` chose, read from its log (`bridge listening
/// addr=127.0.0.1:PORT`, or `"addr":"127.0.0.1:PORT"` in JSON); None until it is logged. The port
/// then belongs to the bridge: no window in which another test could take it.
pub fn logged_bridge_port(log: &Path) -> Option<u16> {
    let all = std::fs::read_to_string(log).ok()?;
    all.lines()
        .filter(|l| l.contains("bridge listening"))
        .find_map(|l| {
            ["addr=", "\"addr\":\""].iter().find_map(|key| {
                let rest = l.split(key).nth(1)?;
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
            })
        })
}

/// A child process killed and reaped when dropped, so a failed test never leaves it running.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`wait_for`] whose timeout panic also carries `explain()`: for waits on things that have no
/// log file of the test's own (containers: see [`container_report`]).
pub fn wait_for_explained<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// State, health and the last 40 log lines of each container, for failure messages.
pub fn container_report(names: &[&str]) -> String {
    let mut out = String::new();
    for name in names {
        let state = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.State.Status}} exit={{.State.ExitCode}} restarts={{.RestartCount}} \
                 health={{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
                name,
            ])
            .output()
            .map(|o| text(&o.stdout).trim().to_string() + text(&o.stderr).trim())
            .unwrap_or_else(|e| e.to_string());
        let logs = Command::new("docker")
            .args(["logs", "--tail", "40", name])
            .output()
            .map(|o| text(&o.stdout) + &text(&o.stderr))
            .unwrap_or_else(|e| e.to_string());
        out.push_str(&format!("--- container {name}: {state} ---\n{logs}\n"));
    }
    out
}

/// mcpctl's own bearer token for the services deployed with `state_dir` (docs/contracts.md
/// "Access control": derived from `<state>/install.key` alone, accepted by every service whose
/// auth mode is not `none`). Read at each call: a test that deletes the state directory gets the
/// token of the key the next run creates. Panics when no deploy has created the key yet.
pub fn mcpctl_token(state_dir: &Path) -> String {
    let path = state_dir.join("install.key");
    let key = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (no deploy has created the install key yet)",
            path.display()
        )
    });
    mcpctl::auth::mcpctl_token(&key)
}

/// Options for [`mcpctl::mcp::Session::connect_with`]: `timeout` per request, `token` sent as
/// `Authorization: Bearer` when given.
pub fn mcp_options(timeout: Duration, token: Option<&str>) -> mcpctl::mcp::Options {
    mcpctl::mcp::Options {
        timeout,
        bearer_token: token.map(str::to_string),
    }
}

/// An MCP session with a service deployed with `state_dir`, authenticated as mcpctl.
pub async fn session(
    base: &str,
    transport: mcpctl::manifest::Transport,
    timeout: Duration,
    state_dir: &Path,
) -> Result<mcpctl::mcp::Session, mcpctl::mcp::McpError> {
    let token = mcpctl_token(state_dir);
    mcpctl::mcp::Session::connect_with(base, transport, &mcp_options(timeout, Some(&token))).await
}

/// The default manifest text (`source`) as another project: `project: mcp` renamed, every
/// `port:` and the edge's `admin_port:` moved by `offset`, and — with `keep` — only those
/// services (a service is a two-space-indented key under `services:`).
pub fn moved_manifest(source: &str, project: &str, offset: u16, keep: Option<&[&str]>) -> String {
    let mut out = String::new();
    let (mut in_services, mut kept) = (false, true);
    for line in source.lines() {
        if line == "services:" {
            in_services = true;
        } else if in_services && line.starts_with("  ") && !line.starts_with("   ") {
            let name = line.trim().trim_end_matches(':');
            kept = keep.is_none_or(|k| k.contains(&name));
        }
        if in_services && !kept {
            continue;
        }
        let moved = |key: &str| {
            line.trim_start()
                .strip_prefix(key)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse::<u16>().ok())
        };
        let line = if line == "project: mcp" {
            format!("project: {project}")
        } else if let Some(p) = moved("admin_port: ").or_else(|| moved("port: ")) {
            line.replacen(&p.to_string(), &(p + offset).to_string(), 1)
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}
