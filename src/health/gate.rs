//! The deploy gate: is this revision a working MCP server, in every era it speaks? Within one
//! deadline: `server/discover` (retried while the server starts) says which eras the server
//! speaks (2026-07-28 "Backward Compatibility": a modern answer, or anything else = legacy). In
//! the legacy era: initialize (retried while the server starts), tools/list ⊇ the expected tools
//! (and at least `min`), the tool-schema digest with drift against the previous revision, then
//! every smoke step checked against its `expect`. In the modern era: the discover answer, then a
//! stateless tools/list ⊇ the expected tools (and the smoke steps when the server speaks no
//! legacy version). A dual-era server (the bridge) is checked in both; the first failing check
//! ends the gate; the report says which and why, and which eras were checked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Health;
use crate::mcp::{Discovery, Options, Probe, Session, Tool, Transport, DISCOVER_TIMEOUT};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Tools added, removed or changed (schema) against the previous revision.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Drift {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GateReport {
    pub passed: bool,
    pub checks: Vec<Check>,
    pub tools: Vec<String>,
    /// sha256 over every tool's name and input schema (sorted by name).
    pub schema_digest: Option<String>,
    /// Per-tool schema hashes (8 hex), for drift against the next revision.
    pub tool_hashes: BTreeMap<String, String>,
    pub drift: Option<Drift>,
    pub elapsed_ms: u64,
    /// The eras the gate checked, modern versions first, then `legacy` (initialize-based):
    /// `["2026-07-28", "legacy"]` for a bridge that serves both. Empty in reports written before
    /// the gate checked eras, and when the gate ended before it knew.
    #[serde(default)]
    pub eras: Vec<String>,
    /// The protocol versions the server named (`server/discover`'s `supportedVersions`, or
    /// −32022's `data.supported`); empty when it answered `server/discover` as a legacy server.
    #[serde(default)]
    pub supported_versions: Vec<String>,
    /// What the era probe found, one line: who answered `server/discover`, or why the server
    /// counts as legacy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era_probe: Option<String>,
}

impl GateReport {
    /// The eras checked as one label (`2026-07-28+legacy`, `legacy`, `2026-07-28`), if any.
    pub fn era(&self) -> Option<String> {
        (!self.eras.is_empty()).then(|| self.eras.join("+"))
    }
    /// The first failing check, for one-line reports.
    pub fn failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
    pub fn fail(mut self, name: &str, detail: impl Into<String>, started: Instant) -> Self {
        self.checks.push(Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        });
        self.passed = false;
        self.elapsed_ms = started.elapsed().as_millis() as u64;
        self
    }
}

fn canonical(v: &serde_json::Value) -> String {
    // serde_json with preserve_order keeps input order; sort keys so the digest ignores it.
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut sorted: BTreeMap<_, _> =
                    m.iter().map(|(k, v)| (k.clone(), sort(v))).collect();
                // Sets written as arrays: their order carries no meaning in JSON Schema.
                for key in ["required", "enum", "type"] {
                    if let Some(serde_json::Value::Array(a)) = sorted.get_mut(key) {
                        a.sort_by_key(|v| v.to_string());
                    }
                }
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// Per-tool hashes and the overall digest of a tool list.
pub fn schema_digest(tools: &[Tool]) -> (String, BTreeMap<String, String>) {
    let mut per = BTreeMap::new();
    for t in tools {
        let h = Sha256::digest(format!("{}\0{}", t.name, canonical(&t.input_schema)));
        per.insert(t.name.clone(), hex::encode(&h[..4]));
    }
    let mut all = Sha256::new();
    for (name, h) in &per {
        all.update(name.as_bytes());
        all.update([0]);
        all.update(h.as_bytes());
    }
    (hex::encode(all.finalize()), per)
}

pub fn drift(prev: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Drift {
    Drift {
        added: now
            .keys()
            .filter(|k| !prev.contains_key(*k))
            .cloned()
            .collect(),
        removed: prev
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect(),
        changed: now
            .iter()
            .filter(|(k, v)| prev.get(*k).is_some_and(|p| p != *v))
            .map(|(k, _)| k.clone())
            .collect(),
    }
}

/// The name of a check in the modern era: `tools/list (2026-07-28)`.
fn modern_name(name: &str, version: &str) -> String {
    format!("{name} ({version})")
}

/// The longest single request of the gate (a request also ends with the gate's deadline).
const PER_REQUEST: Duration = Duration::from_secs(30);

/// Run the gate against a bridge at `base` until `deadline`. `previous` holds the previous
/// revision's per-tool hashes, if known, for the drift report.
pub async fn run(
    base: &str,
    transport: Transport,
    token: Option<&str>,
    health: &Health,
    previous: Option<&BTreeMap<String, String>>,
    deadline: Instant,
) -> GateReport {
    let started = Instant::now();
    let mut report = GateReport::default();
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let opts = |timeout: Duration| Options {
        timeout: timeout.max(Duration::from_millis(50)),
        bearer_token: token.map(str::to_string),
    };

    // 1. Which eras: server/discover, retried while the container starts (connection refused,
    //    502-504). Half the time left at most, so a server that never answers it still gets
    //    its initialize attempts.
    let mut last_err = String::from("no attempt made");
    let mut attempts = 0u32;
    let probe = loop {
        if remaining().is_zero() {
            let detail = format!(
                "no MCP handshake (server/discover or initialize) within {:?} ({attempts} attempts); last error: {last_err}",
                health.timeout
            );
            return report.fail("initialize", detail, started);
        }
        attempts += 1;
        match Session::probe(base, &opts((remaining() / 2).min(DISCOVER_TIMEOUT))).await {
            Probe::Unreachable(e) => {
                last_err = e.to_string();
                tokio::time::sleep(Duration::from_millis(200).min(remaining())).await;
            }
            p => break p,
        }
    };
    let (mut discovery, legacy, reprobe) = match probe {
        Probe::Modern(d) => {
            let legacy = d.speaks_legacy();
            (Some(d), legacy, false)
        }
        Probe::Refused(why) => {
            report.era_probe = Some(why.clone());
            return report.fail("discover", why, started);
        }
        Probe::Legacy { reason, timed_out } => {
            report.era_probe = Some(format!("legacy: {reason}"));
            (None, true, timed_out)
        }
        Probe::Unreachable(_) => unreachable!("the loop above retries it"),
    };
    if let Some(d) = &discovery {
        report.supported_versions = d.supported.clone();
        report.era_probe = Some(format!("server/discover: {}", d.describe()));
        if d.version.is_none() && !legacy {
            let detail = format!(
                "the server supports {} only; mcpctl speaks {} and, with initialize, {}",
                d.supported.join(", "),
                crate::mcp::modern::MODERN_VERSIONS.join(", "),
                crate::mcp::modern::LEGACY_VERSIONS.join(", ")
            );
            return report.fail("discover", detail, started);
        }
    }
    let modern_version = discovery.as_ref().and_then(|d| d.version.clone());
    report.eras = eras(modern_version.as_deref(), legacy);

    // 2. The legacy era: initialize, retried while the container starts (connection refused,
    //    503 from the bridge), then the checks.
    let mut step = String::new();
    if legacy {
        let mut last_err = String::from("no attempt made");
        let mut attempts = 0u32;
        let mut session = loop {
            if remaining().is_zero() {
                let mut detail = format!(
                    "no MCP handshake within {:?} ({attempts} attempts); last error: {last_err}",
                    health.timeout
                );
                if let Some(p) = &report.era_probe {
                    detail.push_str(&format!(" ({p})"));
                }
                return report.fail("initialize", detail, started);
            }
            attempts += 1;
            match Session::connect_with(base, transport, &opts(remaining().min(PER_REQUEST))).await
            {
                Ok(s) => break s,
                Err(e) => {
                    last_err = e.to_string();
                    let pause = Duration::from_millis(200).min(remaining());
                    tokio::time::sleep(pause).await;
                }
            }
        };
        report.checks.push(Check {
            name: "initialize".into(),
            ok: true,
            detail: format!(
                "{} {} (protocol {})",
                session.server_info["name"].as_str().unwrap_or("?"),
                session.server_info["version"].as_str().unwrap_or(""),
                session.protocol_version
            ),
        });
        let era = Era::Legacy { smoke: true };
        let outcome = tokio::time::timeout(
            remaining(),
            checks(&mut session, health, previous, &mut report, &mut step, &era),
        )
        .await;
        session.close().await;
        if let Some(failed) = judge(outcome, &step, health) {
            return report.fail(&failed.0, failed.1, started);
        }
        // The first probe timed out (the server may have been starting): ask again now that it
        // answers. A second silence settles it: legacy.
        if reprobe && !remaining().is_zero() {
            let bound = remaining().min(DISCOVER_TIMEOUT);
            match Session::probe(base, &opts(bound)).await {
                Probe::Modern(d) if d.version.is_some() => {
                    report.supported_versions = d.supported.clone();
                    report.era_probe = Some(format!(
                        "server/discover (asked again after initialize): {}",
                        d.describe()
                    ));
                    discovery = Some(d);
                }
                Probe::Modern(d) => report.supported_versions = d.supported.clone(),
                Probe::Legacy { reason, .. } => {
                    report.era_probe = Some(format!("legacy: {reason} (asked twice)"))
                }
                Probe::Refused(why) => report.era_probe = Some(format!("legacy: {why}")),
                Probe::Unreachable(e) => report.era_probe = Some(format!("legacy: {e}")),
            }
        }
    }

    // 3. The modern era: the discover answer, a stateless tools/list (and the smoke steps when
    //    there is no legacy era to run them in).
    if let Some(d) = discovery.filter(|d| d.version.is_some()) {
        let version = d.version.clone().unwrap_or_default();
        report.eras = eras(Some(&version), legacy);
        report.checks.push(Check {
            name: "discover".into(),
            ok: true,
            detail: d.describe(),
        });
        let mut session = match Session::modern(base, &opts(remaining().min(PER_REQUEST)), &d) {
            Ok(s) => s,
            Err(e) => return report.fail("discover", e.to_string(), started),
        };
        let era = Era::Modern {
            version: version.clone(),
            smoke: !legacy,
            discovery: d,
        };
        let outcome = tokio::time::timeout(
            remaining(),
            checks(&mut session, health, previous, &mut report, &mut step, &era),
        )
        .await;
        session.close().await;
        if let Some(failed) = judge(outcome, &step, health) {
            return report.fail(&failed.0, failed.1, started);
        }
    }
    report.passed = true;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// `["2026-07-28", "legacy"]`: the report's `eras`.
fn eras(modern: Option<&str>, legacy: bool) -> Vec<String> {
    modern
        .map(str::to_string)
        .into_iter()
        .chain(legacy.then(|| "legacy".to_string()))
        .collect()
}

/// The failed check (name, detail) of one era's checks, if they failed or ran out of time.
fn judge(
    outcome: Result<Result<(), (String, String)>, tokio::time::error::Elapsed>,
    step: &str,
    health: &Health,
) -> Option<(String, String)> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(failed)) => Some(failed),
        Err(_) => Some((
            format!("{step} (timeout)"),
            format!("the gate's {:?} ran out", health.timeout),
        )),
    }
}

/// The era one pass of [`checks`] speaks.
enum Era {
    /// Check names as they always were; `smoke`: run the smoke steps here.
    Legacy { smoke: bool },
    /// Check names suffixed with the version; the tool list goes beside the legacy one when
    /// both eras are checked.
    Modern {
        version: String,
        smoke: bool,
        discovery: Discovery,
    },
}

impl Era {
    fn name(&self, check: &str) -> String {
        match self {
            Era::Legacy { .. } => check.to_string(),
            Era::Modern { version, .. } => modern_name(check, version),
        }
    }
    fn smoke(&self) -> bool {
        match self {
            Era::Legacy { smoke } | Era::Modern { smoke, .. } => *smoke,
        }
    }
}

/// tools/list (expected tools, digest, drift) and, if `era` runs them, the smoke steps. The
/// first era checked fills the report's tool fields; a second one is compared with them.
/// `step` names the check in progress (for a timeout).
async fn checks(
    session: &mut Session,
    health: &Health,
    previous: Option<&BTreeMap<String, String>>,
    report: &mut GateReport,
    step: &mut String,
    era: &Era,
) -> Result<(), (String, String)> {
    let list = era.name("tools/list");
    *step = list.clone();
    let tools = session.list_tools().await.map_err(|e| {
        let detail = match era {
            Era::Legacy { .. } => e.to_string(),
            Era::Modern {
                version, discovery, ..
            } => format!(
                "{e} (the server answered server/discover as a {version} server: {})",
                discovery.describe()
            ),
        };
        (list.clone(), detail)
    })?;
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let (digest, per) = schema_digest(&tools);
    let first = report.schema_digest.is_none();
    let agreement = if first {
        report.tools = names.clone();
        report.schema_digest = Some(digest);
        report.drift = previous.map(|p| drift(p, &per));
        report.tool_hashes = per;
        String::new()
    } else {
        let d = drift(&report.tool_hashes, &per);
        if d.is_empty() {
            ", the same tools and schemas as the legacy era".into()
        } else {
            format!(
                ", unlike the legacy era (added: [{}], missing: [{}], schema changed: [{}])",
                d.added.join(", "),
                d.removed.join(", "),
                d.changed.join(", ")
            )
        }
    };
    let missing: Vec<&String> = health
        .expect_tools
        .include
        .iter()
        .filter(|t| !names.contains(t))
        .collect();
    if !missing.is_empty() {
        return Err((
            list,
            format!(
                "expected tools missing: {} (the server lists {} tools: {})",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                names.len(),
                names.join(", ")
            ),
        ));
    }
    if names.len() < health.expect_tools.min {
        return Err((
            list,
            format!(
                "{} tools listed, at least {} expected",
                names.len(),
                health.expect_tools.min
            ),
        ));
    }
    report.checks.push(Check {
        name: list,
        ok: true,
        detail: format!("{} tools, expected ones present{agreement}", names.len()),
    });
    if !era.smoke() {
        return Ok(());
    }
    for s in &health.smoke {
        let name = era.name(&format!("smoke {}", s.tool));
        *step = name.clone();
        let r = session
            .call_tool(&s.tool, s.args.clone())
            .await
            .map_err(|e| (name.clone(), e.to_string()))?;
        let want_error = s.expect.is_error.unwrap_or(false);
        if r.is_error != want_error {
            return Err((
                name,
                format!(
                    "isError was {}, expected {want_error}: {}",
                    r.is_error,
                    excerpt(&r.text)
                ),
            ));
        }
        if let Some(want) = &s.expect.contains {
            if !r.text.contains(want.as_str()) {
                return Err((
                    name,
                    format!("result does not contain {want:?}: {}", excerpt(&r.text)),
                ));
            }
        }
        report.checks.push(Check {
            name,
            ok: true,
            detail: excerpt(&r.text),
        });
    }
    Ok(())
}

fn excerpt(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_digest_ignores_the_order_of_sets() {
        let a = serde_json::json!({"type": "object", "required": ["a", "b"], "properties": {"k": {"type": ["string", "null"], "enum": ["x", "y"]}}});
        let b = serde_json::json!({"properties": {"k": {"enum": ["y", "x"], "type": ["null", "string"]}}, "required": ["b", "a"], "type": "object"});
        assert_eq!(canonical(&a), canonical(&b));
        let c = serde_json::json!({"type": "object", "required": ["a"], "properties": {}});
        assert_ne!(canonical(&a), canonical(&c));
    }
    use serde_json::json;

    fn tool(name: &str, schema: serde_json::Value) -> Tool {
        Tool {
            name: name.into(),
            description: None,
            input_schema: schema,
        }
    }

    #[test]
    fn digest_ignores_order_and_drift_names_changes() {
        let a = [
            tool(
                "a",
                json!({"type": "object", "properties": {"x": {"type": "string"}}}),
            ),
            tool("b", json!({})),
        ];
        let b = [
            tool("b", json!({})),
            tool(
                "a",
                json!({"properties": {"x": {"type": "string"}}, "type": "object"}),
            ),
        ];
        assert_eq!(schema_digest(&a).0, schema_digest(&b).0);
        let c = [tool("a", json!({"type": "object"})), tool("c", json!({}))];
        let d = drift(&schema_digest(&a).1, &schema_digest(&c).1);
        assert_eq!(
            d,
            Drift {
                added: vec!["c".into()],
                removed: vec!["b".into()],
                changed: vec!["a".into()]
            }
        );
    }

    use crate::mcp::fake::{self, Spec};

    fn health(yaml: &str) -> Health {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    async fn gate(base: &str, h: &Health) -> GateReport {
        run(
            base,
            Transport::Http,
            None,
            h,
            None,
            Instant::now() + h.timeout,
        )
        .await
    }

    fn names(r: &GateReport) -> Vec<&str> {
        r.checks.iter().map(|c| c.name.as_str()).collect()
    }

    const SMOKE: &str = "timeout: 10s\nexpect_tools: {include: [echo]}\nsmoke: [{tool: echo, args: {text: hi}, expect: {contains: 'hi|fake'}}]";

    #[tokio::test]
    async fn a_dual_era_server_is_checked_in_both_eras() {
        let f = fake::start(Spec::dual()).await;
        let r = gate(&f.base, &health(SMOKE)).await;
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.eras, ["2026-07-28", "legacy"]);
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
            r.checks[4].detail.contains("the same tools and schemas"),
            "{}",
            r.checks[4].detail
        );
        assert_eq!(
            r.supported_versions,
            ["2026-07-28", "2025-11-25", "2025-06-18"]
        );
        assert_eq!(r.tools, ["echo"]);
        // The smoke step ran once, in the legacy session.
        let calls = f.methods().iter().filter(|m| *m == "tools/call").count();
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_legacy_only_server_passes_with_initialize_alone() {
        let f = fake::start(Spec::legacy()).await;
        let r = gate(&f.base, &health(SMOKE)).await;
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.eras, ["legacy"]);
        assert_eq!(names(&r), ["initialize", "tools/list", "smoke echo"]);
        assert!(r.supported_versions.is_empty());
        let probe = r.era_probe.as_deref().unwrap();
        assert!(
            probe.starts_with("legacy: ") && probe.contains("HTTP 400"),
            "{probe}"
        );
    }

    #[tokio::test]
    async fn a_modern_only_server_passes_with_modern_requests_alone() {
        let f = fake::start(Spec::modern()).await;
        let r = gate(&f.base, &health(SMOKE)).await;
        assert!(r.passed, "{r:#?}");
        assert_eq!(r.eras, ["2026-07-28"]);
        assert_eq!(
            names(&r),
            [
                "discover",
                "tools/list (2026-07-28)",
                "smoke echo (2026-07-28)"
            ]
        );
        assert!(r.schema_digest.is_some() && r.tools == ["echo"]);
        assert!(
            !f.methods().contains(&"initialize".to_string()),
            "{:?}",
            f.methods()
        );
        // A missing expected tool fails the modern tools/list check and names the tool.
        let r = gate(
            &f.base,
            &health("timeout: 10s\nexpect_tools: {include: [echo, nosuchtool]}"),
        )
        .await;
        let fail = r.failure().unwrap();
        assert_eq!(fail.name, "tools/list (2026-07-28)");
        assert!(fail.detail.contains("nosuchtool"), "{}", fail.detail);
    }

    #[tokio::test]
    async fn a_server_whose_discover_answer_lies_fails_with_the_reason() {
        // Discover says 2026-07-28 only, but its tools/list fails.
        let mut spec = Spec::modern();
        spec.modern_list_fails = true;
        let f = fake::start(spec).await;
        let r = gate(&f.base, &health(SMOKE)).await;
        assert!(!r.passed);
        let fail = r.failure().unwrap();
        assert_eq!(fail.name, "tools/list (2026-07-28)", "{r:#?}");
        assert!(
            fail.detail.contains("-32603")
                && fail
                    .detail
                    .contains("answered server/discover as a 2026-07-28 server"),
            "{}",
            fail.detail
        );
        // Discover names legacy versions, but initialize is refused: the legacy check fails.
        let mut spec = Spec::modern();
        spec.supported = vec!["2026-07-28", "2025-06-18"];
        let f = fake::start(spec).await;
        let h = health("timeout: 2s");
        let r = gate(&f.base, &h).await;
        let fail = r.failure().unwrap();
        assert_eq!(fail.name, "initialize", "{r:#?}");
        assert!(
            fail.detail.contains("HTTP 400") && fail.detail.contains("server/discover"),
            "{}",
            fail.detail
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_fails_the_handshake_within_the_deadline() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Instant::now();
        let r = gate(&format!("http://127.0.0.1:{port}"), &health("timeout: 1s")).await;
        assert!(t.elapsed() < Duration::from_secs(3));
        let fail = r.failure().unwrap();
        assert_eq!(fail.name, "initialize");
        assert!(
            fail.detail.contains("server/discover or initialize"),
            "{}",
            fail.detail
        );
        assert!(r.eras.is_empty());
    }

    #[test]
    fn reports_written_before_eras_still_parse() {
        let old = r#"{"passed": true, "checks": [], "tools": ["a"], "schema_digest": null, "tool_hashes": {}, "drift": null, "elapsed_ms": 5}"#;
        let r: GateReport = serde_json::from_str(old).unwrap();
        assert!(r.eras.is_empty() && r.era().is_none());
    }
}
