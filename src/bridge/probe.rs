//! Which era the stdio child speaks: legacy (`initialize`-based, up to 2025-11-25) or modern
//! (MCP 2026-07-28, stateless, `server/discover`).
//!
//! Owns: the era probe and its verdict. The spec's stdio rule (versioning, "Backward
//! Compatibility") is to probe with `server/discover` and fall back to `initialize` on any error
//! that is not a recognized modern error. Sending `server/discover` as the first message to the
//! real child could upset a legacy server (some exit on an unknown first message; the Python SDK
//! 2.x locks a connection's era on its first message), so the probe talks to a SIBLING: the same
//! command started once more, asked `server/discover` with the modern `_meta`, given
//! `--era-probe-timeout` to answer, then closed (stdin), sent SIGTERM, SIGKILLed if still there
//! after [`GRACE`], and reaped. The real child starts after that (`child::supervise_shared`): two
//! copies side by side would need twice the server's memory in a container sized for one.
//!
//! Verdict ([`decide`], then [`confirm`]): a `DiscoverResult` whose `supportedVersions` names a
//! modern version the bridge speaks and no legacy one, or −32022 with `data.supported` naming a
//! version other than the legacy ones, is modern evidence; anything else (another error, a result
//! of another shape, no answer within the timeout, the sibling exiting) is legacy. Modern evidence
//! is then checked with a SECOND sibling asked only `initialize`: a server that answers it with a
//! legacy `protocolVersion` is dual-era (the Python SDK 2.x: its `server/discover` names only
//! 2026-07-28, yet a connection whose first message is `initialize` is served legacy, see
//! `tests/bridge/test_modern_child.py`) and is served legacy, because translating onto an
//! initialized child serves clients of both eras while native serving would refuse legacy ones
//! (`--child-era modern` forces native). A refusal (an error, an answer of another shape, the
//! sibling exiting) confirms modern; no answer within the timeout is legacy by timeout, so a
//! child whose `initialize` then fails is probed again.
//!
//! Must not: touch the real child, or count the sibling as a child (`mcp_bridge_child_processes`
//! and the spawn counters are the real child's).

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};

use super::child::ChildSpec;
use super::jsonrpc;
use super::modern::{MODERN_VERSIONS, UNSUPPORTED_VERSION};
use super::stats::Era;

/// How long the sibling has to leave after SIGTERM before it is SIGKILLed.
pub const GRACE: Duration = Duration::from_millis(500);
/// Default of `--era-probe-timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The sibling's stdout lines read while waiting for the answer (a chatty server's log lines
/// on stdout, notifications): beyond this it is taken for legacy.
const MAX_LINES: usize = 1000;
/// The sibling's stdout bytes read at most (one line may be that long, e.g. a huge tool list in
/// a DiscoverResult): a server that writes more without answering is taken for legacy.
const MAX_BYTES: u64 = 8 << 20;

/// `--child-era`: detect (`auto`), or trust the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EraChoice {
    #[default]
    Auto,
    Legacy,
    Modern,
}

impl std::str::FromStr for EraChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "legacy" => Ok(Self::Legacy),
            "modern" => Ok(Self::Modern),
            other => Err(format!(
                "unknown child era {other:?}: expected auto, legacy or modern"
            )),
        }
    }
}

/// The era settings of a bridge (`--child-era`, `--era-probe-timeout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EraSettings {
    pub choice: EraChoice,
    pub probe_timeout: Duration,
}

impl Default for EraSettings {
    fn default() -> Self {
        Self {
            choice: EraChoice::Auto,
            probe_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The `_meta` of a request the bridge itself sends to a modern child (probe, readiness, tools
/// prefetch): the newest modern version, no client capabilities, the bridge as the client.
pub fn modern_meta() -> Value {
    json!({
        super::modern::META_VERSION: MODERN_VERSIONS[0],
        super::modern::META_CAPABILITIES: {},
        "io.modelcontextprotocol/clientInfo": {"name": "mcpctl-bridge", "version": env!("CARGO_PKG_VERSION")},
    })
}

/// `server/discover` as the bridge sends it (probe, modern readiness and hang checks).
pub fn discover_request(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "server/discover",
           "params": {"_meta": modern_meta()}})
}

/// `initialize` as the bridge sends it (the second probe, the legacy child's handshake): the
/// newest legacy version, no client capabilities.
pub fn initialize_request(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": jsonrpc::LATEST_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "mcpctl-bridge", "version": env!("CARGO_PKG_VERSION")},
    }})
}

/// What the probe saw and what it concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub era: Era,
    /// One line for the log: what the sibling answered.
    pub answer: String,
    /// The versions the child named (a `DiscoverResult`'s `supportedVersions`, or −32022's
    /// `data.supported`); empty when it named none.
    pub supported: Vec<String>,
    /// Legacy because nothing came back in time (the child may merely be slow to start: see
    /// `child::supervise_shared` for when this is probed again).
    pub timed_out: bool,
}

impl Verdict {
    fn legacy(answer: impl Into<String>) -> Self {
        Self {
            era: Era::Legacy,
            answer: answer.into(),
            supported: Vec::new(),
            timed_out: false,
        }
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The verdict on the sibling's answer to `server/discover` (`None`: no answer, see `why`).
pub fn decide(answer: Option<&Value>, why: &str) -> Verdict {
    let Some(msg) = answer else {
        return Verdict {
            timed_out: why.starts_with("no answer"),
            ..Verdict::legacy(why)
        };
    };
    let modern_in = |v: &[String]| v.iter().any(|s| MODERN_VERSIONS.contains(&s.as_str()));
    let legacy_in = |v: &[String]| {
        v.iter()
            .any(|s| jsonrpc::SUPPORTED_VERSIONS.contains(&s.as_str()))
    };
    if let Some(result) = msg.get("result") {
        let Some(supported) = result.get("supportedVersions").and_then(strings) else {
            return Verdict::legacy(format!(
                "a result without supportedVersions: {}",
                short(msg)
            ));
        };
        if !result.get("capabilities").is_some_and(Value::is_object) {
            return Verdict::legacy(format!("a result without capabilities: {}", short(msg)));
        }
        let era = match (modern_in(&supported), legacy_in(&supported)) {
            (true, false) => Era::Modern,
            _ => Era::Legacy,
        };
        let answer = match (era, legacy_in(&supported)) {
            (Era::Modern, _) => format!("DiscoverResult, supportedVersions {supported:?}"),
            (_, true) if modern_in(&supported) => format!(
                "DiscoverResult of a dual-era server, supportedVersions {supported:?} (served legacy: both eras of client work)"
            ),
            _ => format!("DiscoverResult naming no modern version the bridge speaks, supportedVersions {supported:?}"),
        };
        return Verdict {
            era,
            answer,
            supported,
            timed_out: false,
        };
    }
    let code = msg["error"]["code"].as_i64();
    if code == Some(UNSUPPORTED_VERSION) {
        if let Some(supported) = msg["error"]["data"].get("supported").and_then(strings) {
            let only_legacy = !supported.is_empty()
                && supported
                    .iter()
                    .all(|s| jsonrpc::SUPPORTED_VERSIONS.contains(&s.as_str()));
            if !supported.is_empty() && !only_legacy {
                return Verdict {
                    era: Era::Modern,
                    answer: format!("-32022 (unsupported version), supported {supported:?}"),
                    supported,
                    timed_out: false,
                };
            }
        }
    }
    match code {
        Some(c) => Verdict::legacy(format!(
            "error {c} ({})",
            msg["error"]["message"].as_str().unwrap_or("")
        )),
        None => Verdict::legacy(format!("not a JSON-RPC response: {}", short(msg))),
    }
}

/// The verdict on modern evidence once a second sibling was asked `initialize` (`outcome`: its
/// answer, or why there was none). Only a `modern` verdict is worth confirming.
pub fn confirm(modern: Verdict, outcome: Result<&Value, &str>) -> Verdict {
    match outcome {
        Ok(msg) => match msg["result"]["protocolVersion"].as_str() {
            Some(v) if jsonrpc::SUPPORTED_VERSIONS.contains(&v) => Verdict {
                era: Era::Legacy,
                answer: format!(
                    "{}, and a second sibling answered initialize with {v}: a dual-era server, served legacy so clients of both eras work",
                    modern.answer
                ),
                ..modern
            },
            _ => {
                let said = match msg["error"]["code"].as_i64() {
                    Some(c) => format!("error {c}"),
                    None => format!("an answer without a legacy protocolVersion: {}", short(msg)),
                };
                Verdict {
                    answer: format!("{}; initialize refused ({said})", modern.answer),
                    ..modern
                }
            }
        },
        Err(why) if why.starts_with("no answer") => Verdict {
            era: Era::Legacy,
            answer: format!(
                "{}, but a second sibling asked initialize gave {why}: served legacy, probed again if its initialize fails",
                modern.answer
            ),
            timed_out: true,
            ..modern
        },
        Err(why) => Verdict {
            answer: format!("{}; initialize: {why}", modern.answer),
            ..modern
        },
    }
}

/// Start a sibling, send it `request` (id 1), wait up to `timeout` for the answer, stop it (stdin
/// closed, SIGTERM, SIGKILL after [`GRACE`], reaped). Returns the answer or why there is none, and
/// the sibling's pid (`None`: the command could not be started).
async fn ask(
    spec: &ChildSpec,
    request: &Value,
    timeout: Duration,
) -> (Result<Value, String>, Option<u32>) {
    let mut child = match super::child::command(spec, Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Err(format!("the probe could not start the command: {e}")),
                None,
            )
        }
    };
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("piped");
    let ask = async {
        let mut line = serde_json::to_vec(request).expect("serialises");
        line.push(b'\n');
        if let Some(w) = stdin.as_mut() {
            if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
                return Err("the sibling closed its stdin before the probe".to_string());
            }
        }
        let mut lines = BufReader::new(stdout.take(MAX_BYTES)).lines();
        for _ in 0..MAX_LINES {
            match lines.next_line().await {
                Ok(Some(l)) => {
                    let Ok(v) = serde_json::from_str::<Value>(&l) else {
                        continue;
                    };
                    if v.get("id") == Some(&json!(1))
                        && (v.get("result").is_some() || v.get("error").is_some())
                    {
                        return Ok(v);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Err("the sibling exited, closed its stdout or wrote more than the probe reads without answering".to_string())
    };
    let outcome = tokio::select! {
        r = ask => r,
        _ = tokio::time::sleep(timeout) => Err(format!("no answer within {timeout:?}")),
    };
    // Stop it: EOF first (a well-behaved stdio server leaves on it), then the signals.
    drop(stdin);
    let pgid = pid.map(|p| Pid::from_raw(p as i32));
    if let Some(g) = pgid {
        let _ = killpg(g, Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        if let Some(g) = pgid {
            let _ = killpg(g, Signal::SIGKILL);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    } else if let Some(g) = pgid {
        // The leader is gone; anything it started in its group goes too.
        let _ = killpg(g, Signal::SIGKILL);
    }
    (outcome, pid)
}

/// Decide the child's era: a sibling asked `server/discover` ([`decide`]); on modern evidence, a
/// second sibling asked `initialize` ([`confirm`]), one after the other (never two copies at
/// once). Each sibling gets `timeout`. Returns the verdict, the siblings' pids (empty: the command
/// could not be started) and how long the whole probe took.
pub async fn run(spec: &ChildSpec, timeout: Duration) -> (Verdict, Vec<u32>, Duration) {
    let t0 = Instant::now();
    let (outcome, pid) = ask(spec, &discover_request(1), timeout).await;
    let mut pids: Vec<u32> = pid.into_iter().collect();
    let mut verdict = match &outcome {
        Ok(v) => decide(Some(v), ""),
        Err(why) => decide(None, why),
    };
    if verdict.era == Era::Modern {
        let (outcome, pid) = ask(spec, &initialize_request(1), timeout).await;
        pids.extend(pid);
        verdict = confirm(verdict, outcome.as_ref().map_err(String::as_str));
    }
    (verdict, pids, t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: Value) -> Value {
        let mut v = json!({"jsonrpc": "2.0", "id": 1});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        v
    }

    #[test]
    fn a_discover_result_naming_a_modern_version_is_modern() {
        let v = decide(
            Some(&resp(
                json!({"result": {"supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}}}}),
            )),
            "",
        );
        assert_eq!(v.era, Era::Modern);
        assert_eq!(v.supported, ["2026-07-28"]);
        assert!(!v.timed_out);
    }

    #[test]
    fn unsupported_version_with_a_modern_supported_list_is_modern() {
        let v = decide(
            Some(&resp(
                json!({"error": {"code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": ["2026-07-28", "2027-01-01"], "requested": "2026-07-28"}}}),
            )),
            "",
        );
        assert_eq!(v.era, Era::Modern, "{v:?}");
        assert_eq!(v.supported, ["2026-07-28", "2027-01-01"]);
        // −32022 without a usable list, or naming only legacy versions, is no modern evidence.
        for data in [
            json!({}),
            json!({"supported": "x"}),
            json!({"supported": ["2025-06-18"]}),
        ] {
            let v = decide(
                Some(&resp(
                    json!({"error": {"code": -32022, "message": "m", "data": data}}),
                )),
                "",
            );
            assert_eq!(v.era, Era::Legacy, "{data}");
        }
    }

    #[test]
    fn legacy_errors_and_other_results_are_legacy() {
        for body in [
            json!({"error": {"code": -32601, "message": "Method not found"}}),
            json!({"error": {"code": -32602, "message": "Invalid request parameters"}}),
            json!({"error": {"code": -32600, "message": "not initialized"}}),
            json!({"result": {}}),
            json!({"result": {"supportedVersions": ["2025-11-25"], "capabilities": {}}}),
            json!({"result": {"supportedVersions": ["2026-07-28"]}}),
        ] {
            let v = decide(Some(&resp(body.clone())), "");
            assert_eq!(v.era, Era::Legacy, "{body}");
            assert!(!v.timed_out);
        }
    }

    #[test]
    fn a_dual_era_server_is_served_legacy() {
        let v = decide(
            Some(&resp(
                json!({"result": {"supportedVersions": ["2026-07-28", "2025-11-25"],
                "capabilities": {}}}),
            )),
            "",
        );
        assert_eq!(v.era, Era::Legacy);
        assert!(v.answer.contains("dual-era"), "{}", v.answer);
    }

    #[test]
    fn silence_and_exit_are_legacy_and_only_silence_is_a_timeout() {
        let v = decide(None, "no answer within 5s");
        assert_eq!((v.era, v.timed_out), (Era::Legacy, true));
        let v = decide(
            None,
            "the sibling exited (or closed its stdout) without answering",
        );
        assert_eq!((v.era, v.timed_out), (Era::Legacy, false));
    }

    fn sh(script: &str) -> ChildSpec {
        ChildSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![],
            init_timeout: Duration::from_secs(5),
            hung_after: Duration::from_secs(5),
            era: EraSettings::default(),
        }
    }

    fn gone(pid: u32) -> bool {
        // Reaped: no /proc entry (a zombie would still have one).
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn modern_evidence_is_confirmed_by_a_refused_initialize_and_undone_by_an_answered_one() {
        let modern = || {
            decide(
                Some(&resp(
                    json!({"result": {"supportedVersions": ["2026-07-28"], "capabilities": {}}}),
                )),
                "",
            )
        };
        // The Python SDK 2.x: discover names only 2026-07-28, initialize is served anyway.
        let answered =
            resp(json!({"result": {"protocolVersion": "2025-06-18", "capabilities": {}}}));
        let v = confirm(modern(), Ok(&answered));
        assert_eq!((v.era, v.timed_out), (Era::Legacy, false), "{v:?}");
        assert!(v.answer.contains("dual-era"), "{}", v.answer);
        assert_eq!(v.supported, ["2026-07-28"]);
        // Refusals confirm modern: an error, a version the bridge does not speak, an exit.
        for body in [
            json!({"error": {"code": -32022, "message": "Unsupported protocol version",
                   "data": {"supported": ["2026-07-28"]}}}),
            json!({"error": {"code": -32601, "message": "Method not found"}}),
            json!({"result": {"protocolVersion": "2026-07-28"}}),
        ] {
            let v = confirm(modern(), Ok(&resp(body.clone())));
            assert_eq!(v.era, Era::Modern, "{body}");
        }
        let v = confirm(modern(), Err("the sibling exited, closed its stdout or wrote more than the probe reads without answering"));
        assert_eq!(v.era, Era::Modern, "{v:?}");
        // Silence on initialize is no proof either way: legacy by timeout (probed again if the
        // real child's initialize then fails).
        let v = confirm(modern(), Err("no answer within 5s"));
        assert_eq!((v.era, v.timed_out), (Era::Legacy, true), "{v:?}");
    }

    #[tokio::test]
    async fn the_siblings_are_asked_stopped_and_reaped_one_after_the_other() {
        // Modern-only: discover answered, initialize refused; each sibling would linger and is
        // stopped and reaped, the second started after the first is gone.
        let modern_only = r#"read l; case "$l" in
            *server/discover*) echo '{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}';;
            *) echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28"]}}}';;
            esac; sleep 30"#;
        let (v, pids, took) = run(&sh(modern_only), Duration::from_secs(5)).await;
        assert_eq!(v.era, Era::Modern, "{v:?}");
        assert!(
            v.answer.contains("initialize refused (error -32022)"),
            "{}",
            v.answer
        );
        assert_eq!(pids.len(), 2, "{pids:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(pids.iter().all(|p| gone(*p)), "{pids:?}");
        // Dual-era: discover names only 2026-07-28, initialize is answered: legacy.
        let dual = r#"read l; case "$l" in
            *server/discover*) echo '{"jsonrpc":"2.0","id":1,"result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}';;
            *) echo '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{}}}';;
            esac"#;
        let (v, pids, _) = run(&sh(dual), Duration::from_secs(5)).await;
        assert_eq!((v.era, v.timed_out), (Era::Legacy, false), "{v:?}");
        assert_eq!(pids.len(), 2, "{pids:?}");
        // Silence: legacy by timeout, one sibling; one that ignores SIGTERM is SIGKILLed.
        let (v, pids, took) = run(
            &sh("trap '' TERM; while :; do sleep 1; done"),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!((v.era, v.timed_out), (Era::Legacy, true), "{v:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(pids.len(), 1, "{pids:?}");
        assert!(gone(pids[0]));
        // Exit without a word: legacy at once.
        let (v, _, took) = run(&sh("read l; exit 3"), Duration::from_secs(5)).await;
        assert_eq!((v.era, v.timed_out), (Era::Legacy, false), "{v:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // A legacy error after a non-JSON line: no second sibling.
        let legacy = r#"read l; echo 'starting up'; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}'"#;
        let (v, pids, _) = run(&sh(legacy), Duration::from_secs(5)).await;
        assert_eq!(v.era, Era::Legacy);
        assert_eq!(pids.len(), 1);
        assert!(v.answer.contains("-32601"), "{}", v.answer);
    }
}
