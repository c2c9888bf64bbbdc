//! Child processes: spawning (own process group, dies with the bridge), the stdin writer, the
//! stdout line reader, the stderr drain, and supervision (restart with backoff, circuit breaker).
//!
//! Owns the processes and nothing else: what the lines mean is `upstream`'s business.
//!
//! The shared child's era (`probe`): with `--child-era auto` a probe sibling is asked
//! `server/discover` while the real child starts; the real child is sent nothing until the verdict
//! is in, then gets the legacy handshake (`initialize`) or, when modern, only a `server/discover`
//! of its own (its result is the cached handshake: capabilities, `supportedVersions`). A restart
//! reuses the verdict, except a legacy verdict reached by the probe timing out whose handshake then
//! failed: that child may be a modern one that was slow to start, so the next start probes again
//! (the spec: persist the era across restarts, "re-probing if the cached assumption later fails").
//! stdout is read continuously into the upstream (which never blocks), and stderr is always drained
//! with rate-limited logging, so neither pipe can fill up and stall the child.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::jsonrpc;
use super::probe::{self, EraChoice, EraSettings};
use super::stats::{Era, RestartReason, Stats};
use super::upstream::{Delivery, InitInfo, Status, Upstream};
use crate::locks::MutexExt;

/// A line longer than this is dropped (and logged) rather than held in memory.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// stderr lines logged per second before the rest are only counted.
const STDERR_LINES_PER_SEC: u32 = 50;
/// Restart backoff: 200 ms doubling to 30 s; reset after a child stayed up this long.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Circuit breaker: this many failed starts or crashes within the window open it for the cool-down.
const BREAKER_FAILURES: usize = 5;
const BREAKER_WINDOW: Duration = Duration::from_secs(60);
const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Extra environment (secrets read from files at start-up). Values are never logged.
    pub env: Vec<(String, String)>,
    /// How long the child may take to answer `initialize`.
    pub init_timeout: Duration,
    /// A child that leaves a request waiting this long with no output at all, then does not
    /// answer a ping (a modern child: `server/discover`) within [`HUNG_PING_TIMEOUT`], is killed
    /// and restarted (see [`hung`]).
    pub hung_after: Duration,
    /// `--child-era` and `--era-probe-timeout` (shared children only).
    pub era: EraSettings,
}

/// How long a suspected-hung child has to answer a ping.
pub const HUNG_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Resolves when the child connected to `upstream` has stopped answering: a request has waited
/// longer than `hung_after`, the child wrote nothing for as long, and a ping goes unanswered for
/// [`HUNG_PING_TIMEOUT`]. A slow tool that still writes (progress, logs, other answers) is not hung.
/// Docker does not act on `unhealthy`, so this is what replaces a stopped (SIGSTOP), deadlocked or
/// wedged server: the caller kills it, waiting callers get an error, and supervision restarts it.
/// Worst case from the stall to the kill: `hung_after` + one check interval + the ping timeout.
pub async fn hung(upstream: &Arc<Upstream>, hung_after: Duration) -> String {
    let every = (hung_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        tokio::time::sleep(every).await;
        let Some(oldest) = upstream.stalled(hung_after) else {
            continue;
        };
        if !upstream.answers_ping(HUNG_PING_TIMEOUT).await {
            return format!(
                "hung: a request waited {}s with no output and a ping went unanswered for {}s",
                oldest.as_secs(),
                HUNG_PING_TIMEOUT.as_secs()
            );
        }
    }
}

/// Read secret files from `dir` as environment variables for the child: the file name is the
/// variable name, one trailing newline is dropped. Only names are logged. Files in `skip` (the
/// bridge's own bearer-token file, when it is mounted here) are not exported: the bridge's token is
/// no business of the server it runs.
pub fn secret_env(
    dir: &std::path::Path,
    skip: &[std::path::PathBuf],
) -> anyhow::Result<Vec<(String, String)>> {
    let skip: Vec<std::path::PathBuf> = skip.iter().filter_map(|p| p.canonicalize().ok()).collect();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => anyhow::bail!("reading secrets from {}: {e}", dir.display()),
    };
    let mut env = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| anyhow::anyhow!("reading secrets from {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        // Kubernetes-style mounts add `..data` links and dot-directories: skip what is not a name.
        if !valid || !entry.path().is_file() {
            continue;
        }
        if entry.path().canonicalize().is_ok_and(|p| skip.contains(&p)) {
            continue;
        }
        let mut value = std::fs::read_to_string(entry.path())
            .map_err(|e| anyhow::anyhow!("reading secret {name} from {}: {e}", dir.display()))?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        env.push((name, value));
    }
    env.sort();
    tracing::info!(names = ?env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), dir = %dir.display(), "secrets exported to the server's environment");
    Ok(env)
}

/// A running child. Dropping it kills the process group.
pub struct Running {
    child: Child,
    pgid: Option<i32>,
    pub generation: u64,
    stdout_eof: Option<oneshot::Receiver<()>>,
    /// Decremented (`child_processes`) once, when this is dropped.
    stats: Arc<Stats>,
}

impl Running {
    /// Resolves when the process exits or closes its stdout (either way it can no longer answer).
    pub async fn exited(&mut self) -> String {
        let eof = self.stdout_eof.take();
        tokio::select! {
            status = self.child.wait() => match status {
                Ok(s) => format!("exited ({s})"),
                Err(e) => format!("could not be waited for: {e}"),
            },
            _ = async { match eof { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => {
                // stdout closed: give the exit status a moment to arrive for a better message.
                match tokio::time::timeout(Duration::from_millis(200), self.child.wait()).await {
                    Ok(Ok(s)) => format!("exited ({s})"),
                    _ => "closed its stdout".to_string(),
                }
            }
        }
    }

    /// Kill the whole process group (the child and anything it started) and reap the child.
    pub async fn kill(&mut self) {
        self.signal_group(Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn signal_group(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(Pid::from_raw(pgid), sig);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
        self.stats.child_processes.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The server's command as the bridge runs it (the child, or the era probe's sibling): its own
/// process group (signals reach what it starts), piped stdin/stdout, killed with the bridge.
pub fn command(spec: &ChildSpec, stderr: Stdio) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes the kernel
    // kill the child if the bridge dies without cleaning up (e.g. SIGKILL), so no orphan survives.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Start the child and connect it to `upstream` (stdin writer, stdout reader, stderr drain).
pub fn spawn(
    spec: &ChildSpec,
    upstream: &Arc<Upstream>,
    stats: &Arc<Stats>,
) -> std::io::Result<Running> {
    let mut child = command(spec, Stdio::piped()).spawn()?;
    stats.child_spawns.fetch_add(1, Ordering::Relaxed);
    stats.child_processes.fetch_add(1, Ordering::Relaxed);
    let pid = child.id();
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");

    let (wtx, mut wrx) = super::upstream::stdin_queue();
    let generation = upstream.attach(wtx);
    tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(line) = wrx.recv().await {
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
            wrx.written(line.len());
        }
    });

    let (eof_tx, eof_rx) = oneshot::channel();
    let up = upstream.clone();
    tokio::spawn(async move {
        read_lines(stdout, |line| up.on_line(generation, line)).await;
        let _ = eof_tx.send(());
    });

    let stats2 = stats.clone();
    tokio::spawn(async move { drain_stderr(stderr, pid, stats2).await });

    Ok(Running {
        child,
        pgid: pid.map(|p| p as i32),
        generation,
        stdout_eof: Some(eof_rx),
        stats: stats.clone(),
    })
}

/// Call `f` with every complete line (newline stripped); lines over `MAX_LINE` are skipped.
async fn read_lines<R: AsyncRead + Unpin>(r: R, mut f: impl FnMut(&[u8])) {
    let mut reader = BufReader::with_capacity(256 * 1024, r);
    let mut line: Vec<u8> = Vec::new();
    let mut skipping = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        let (take, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(pos) => (pos + 1, true),
            None => (buf.len(), false),
        };
        if !skipping {
            line.extend_from_slice(&buf[..if complete { take - 1 } else { take }]);
        }
        reader.consume(take);
        if complete {
            if !skipping {
                let l = line.strip_suffix(b"\r").unwrap_or(&line);
                if !l.iter().all(u8::is_ascii_whitespace) {
                    f(l);
                }
            }
            line.clear();
            skipping = false;
        } else if line.len() > MAX_LINE {
            tracing::warn!(
                max = MAX_LINE,
                "child wrote a line longer than the limit; skipped"
            );
            line = Vec::new();
            skipping = true;
        }
    }
}

async fn drain_stderr<R: AsyncRead + Unpin>(r: R, pid: Option<u32>, stats: Arc<Stats>) {
    // (lines logged in this window, lines dropped since the last summary)
    let state = std::sync::Mutex::new((0u32, 0u64));
    let summary = |state: &std::sync::Mutex<(u32, u64)>| {
        let mut st = state.lock_ignore_poison();
        if st.1 > 0 {
            tracing::warn!(
                child_pid = pid,
                dropped = st.1,
                "child stderr rate-limited; lines not logged"
            );
        }
        *st = (0, 0);
    };
    let reader = read_lines(r, |line| {
        let mut st = state.lock_ignore_poison();
        if st.0 < STDERR_LINES_PER_SEC {
            st.0 += 1;
            let text = String::from_utf8_lossy(&line[..line.len().min(4096)]);
            tracing::info!(target: "child_stderr", child_pid = pid, "{text}");
        } else {
            st.1 += 1;
            stats.stderr_lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    tokio::pin!(reader);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut reader => break,
            _ = tick.tick() => summary(&state),
        }
    }
    summary(&state);
}

/// Run the bridge's own handshake: initialize with no client capabilities, then initialized.
pub async fn handshake(
    upstream: &Arc<Upstream>,
    running: &mut Running,
    timeout: Duration,
) -> Result<InitInfo, String> {
    let mut h = upstream
        .send_request(None, probe::initialize_request(0), false)
        .map_err(|e| e.message)?;
    let resp = tokio::select! {
        r = h.recv() => r,
        why = running.exited() => return Err(format!("{why} before answering initialize")),
        _ = tokio::time::sleep(timeout) => return Err(format!("did not answer initialize within {timeout:?}")),
    };
    let Some(Delivery::Response(resp)) = resp else {
        return Err("initialize was not answered".into());
    };
    if let Some(err) = resp.get("error") {
        return Err(format!("initialize failed: {err}"));
    }
    let result = resp["result"].clone();
    let Some(version) = result["protocolVersion"].as_str().map(str::to_string) else {
        return Err("initialize result has no protocolVersion".into());
    };
    if !jsonrpc::SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(format!(
            "child speaks protocol {version}, which the bridge does not"
        ));
    }
    upstream.send_raw(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    Ok(InitInfo {
        protocol_version: version,
        result,
    })
}

/// The modern child's "handshake": no `initialize` (2026-07-28 has none), a `server/discover` of
/// the bridge's own, whose result stands in for the cached handshake (`InitInfo::result`).
pub async fn discover(
    upstream: &Arc<Upstream>,
    running: &mut Running,
    timeout: Duration,
) -> Result<InitInfo, String> {
    let mut h = upstream
        .send_request(None, probe::discover_request(0), false)
        .map_err(|e| e.message)?;
    let resp = tokio::select! {
        r = h.recv() => r,
        why = running.exited() => return Err(format!("{why} before answering server/discover")),
        _ = tokio::time::sleep(timeout) => return Err(format!("did not answer server/discover within {timeout:?}")),
    };
    let Some(Delivery::Response(resp)) = resp else {
        return Err("server/discover was not answered".into());
    };
    if let Some(err) = resp.get("error") {
        return Err(format!("server/discover failed: {err}"));
    }
    let result = resp["result"].clone();
    let version = result["supportedVersions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|v| super::modern::MODERN_VERSIONS.contains(v))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "server/discover names no version the bridge speaks: {}",
                result["supportedVersions"]
            )
        })?;
    Ok(InitInfo {
        protocol_version: version,
        result,
    })
}

/// Keep one shared child running: spawn, handshake, wait for exit, back off, restart; open the
/// circuit breaker when it keeps failing. Returns (after killing the child) on `shutdown`.
pub async fn supervise_shared(
    upstream: Arc<Upstream>,
    spec: ChildSpec,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut last: Option<RestartReason> = None;
    let mut known: Option<Era> = match spec.era.choice {
        EraChoice::Auto => None,
        EraChoice::Legacy => Some(Era::Legacy),
        EraChoice::Modern => Some(Era::Modern),
    };
    // The last verdict came from a probe that timed out (see the module doc).
    let mut by_timeout = false;
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(why) = last {
            upstream.restarts.fetch_add(1, Ordering::Relaxed);
            stats.child_restarted(why);
        }
        upstream.set_status(Status::Starting);
        // The probe sibling runs (and is reaped) before the real child starts: two copies of a
        // server side by side would need twice its memory in a container sized for one
        // (postgres-mcp: 88 MiB of a 192 MiB limit). The probe costs start-up time once; a
        // restart reuses the verdict.
        let probing = known.is_none().then(|| {
            let spec = spec.clone();
            tokio::spawn(async move { probe::run(&spec, spec.era.probe_timeout).await })
        });
        let era = match (known, probing) {
            (Some(era), _) => era,
            (None, Some(task)) => {
                let (verdict, pids, took) = tokio::select! {
                    r = task => r.unwrap_or_else(|e| (probe::decide(None, &format!("the probe failed: {e}")), Vec::new(), Duration::ZERO)),
                    _ = shutdown.cancelled() => break,
                };
                tracing::info!(
                    era = verdict.era.label(),
                    answer = %verdict.answer,
                    probe_pid = pids.first().copied(),
                    initialize_probe_pid = pids.get(1).copied(),
                    took_ms = took.as_millis() as u64,
                    "child era decided by the server/discover probe"
                );
                by_timeout = verdict.timed_out;
                // A probe that could not even start the command decides nothing.
                if !pids.is_empty() {
                    known = Some(verdict.era);
                }
                verdict.era
            }
            (None, None) => unreachable!("a probe runs whenever the era is unknown"),
        };
        upstream.set_era(era);
        let spawned = spawn(&spec, &upstream, &stats);
        let (kind, reason) = match spawned {
            Err(e) => (
                RestartReason::StartFailed,
                format!("cannot start {:?}: {e}", spec.program),
            ),
            Ok(mut running) => {
                let generation = running.generation;
                let shaken = match era {
                    Era::Legacy => handshake(&upstream, &mut running, spec.init_timeout).await,
                    Era::Modern => discover(&upstream, &mut running, spec.init_timeout).await,
                };
                match shaken {
                    Err(why) => {
                        if by_timeout && spec.era.choice == EraChoice::Auto {
                            known = None;
                        }
                        running.kill().await;
                        upstream.detach(generation, "failed its handshake");
                        (RestartReason::HandshakeFailed, format!("child {why}"))
                    }
                    Ok(info) => {
                        tracing::info!(pid = running.pid(), protocol = %info.protocol_version, era = era.label(), "child ready");
                        upstream.set_init(info);
                        // Fill the tools/list cache before anyone is served: it bounds the `tool`
                        // metric label and holds the inputSchemas arguments are validated against.
                        prefetch_tools(&upstream, spec.init_timeout).await;
                        upstream.set_status(Status::Ready);
                        let up_since = Instant::now();
                        let (kind, why) = tokio::select! {
                            why = running.exited() => (RestartReason::Exited, why),
                            why = hung(&upstream, spec.hung_after) => {
                                tracing::error!(pid = running.pid(), %why, "MCP server stopped answering; killing it");
                                running.kill().await;
                                (RestartReason::Hung, why)
                            }
                            _ = shutdown.cancelled() => {
                                running.kill().await;
                                upstream.detach(generation, "was stopped (bridge shutting down)");
                                break;
                            }
                        };
                        // Fail waiting callers first (the "fast error"), then clean up the group.
                        upstream.detach(generation, &why);
                        upstream.set_status(Status::Down {
                            reason: format!("child {why}"),
                        });
                        running.kill().await;
                        if up_since.elapsed() >= STABLE_AFTER {
                            failures = 0;
                            recent.clear();
                        }
                        (kind, format!("child {why}"))
                    }
                }
            }
        };
        last = Some(kind);
        tracing::warn!(%reason, "MCP server down");
        failures += 1;
        recent.push_back(Instant::now());
        while recent.front().is_some_and(|t| t.elapsed() > BREAKER_WINDOW) {
            recent.pop_front();
        }
        let wait = if recent.len() >= BREAKER_FAILURES {
            tracing::error!(failures = recent.len(), cooldown = ?BREAKER_COOLDOWN, "circuit breaker open: the MCP server keeps failing");
            upstream.set_status(Status::BreakerOpen {
                reason: format!(
                    "circuit breaker open after {} failures: {reason}",
                    recent.len()
                ),
            });
            recent.clear();
            BREAKER_COOLDOWN
        } else {
            upstream.set_status(Status::Down { reason });
            backoff(failures)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    upstream.set_status(Status::Stopped);
}

/// Ask the child for tools/list once (cached by `upstream`); a server without tools, or one that
/// does not answer in time, is served anyway (arguments then go unvalidated).
pub async fn prefetch_tools(upstream: &Arc<Upstream>, timeout: Duration) {
    let mut req = json!({"jsonrpc": "2.0", "id": 0, "method": "tools/list"});
    if upstream.era() == Some(Era::Modern) {
        req["params"] = json!({"_meta": probe::modern_meta()});
    }
    let Ok(mut h) = upstream.send_request(None, req, true) else {
        return;
    };
    match tokio::time::timeout(timeout, h.response()).await {
        Ok(Some(v)) if v.get("result").is_some() => {}
        Ok(Some(v)) => tracing::debug!(error = %v["error"], "child has no tools/list"),
        _ => tracing::warn!(
            "child did not answer tools/list in time; tool arguments are not validated"
        ),
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_become_environment_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("GITHUB_TOKEN"), "ghp_x\n").unwrap();
        std::fs::write(dir.path().join("DATABASE_URL"), "postgres://a:b@db/x").unwrap();
        std::fs::write(dir.path().join("not-a-name"), "skipped").unwrap();
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("BRIDGE_TOKEN"), "t0k").unwrap();
        let env = secret_env(dir.path(), &[dir.path().join("BRIDGE_TOKEN")]).unwrap();
        assert_eq!(
            env,
            vec![
                (
                    "DATABASE_URL".to_string(),
                    "postgres://a:b@db/x".to_string()
                ),
                ("GITHUB_TOKEN".to_string(), "ghp_x".to_string()),
            ]
        );
        assert!(secret_env(&dir.path().join("missing"), &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[tokio::test]
    async fn reads_exact_lines_including_huge_ones() {
        let big = "y".repeat(3 * 1024 * 1024);
        let input = format!("a\r\n\n{big}\nlast-without-newline");
        let mut got = Vec::new();
        read_lines(input.as_bytes(), |l| got.push(l.len())).await;
        assert_eq!(got, vec![1, big.len()]);
    }
}
