//! The deploy gate: is this revision a working MCP server? Within one deadline: initialize
//! (retried while the server starts), tools/list ⊇ the expected tools (and at least `min`), the
//! tool-schema digest with drift against the previous revision, then every smoke step checked
//! against its `expect`. The first failing check ends the gate; the report says which and why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Health;
use crate::mcp::{Session, Tool, Transport};

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
}

impl GateReport {
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

    // 1. initialize, retried while the container starts (connection refused, 503 from the bridge).
    let mut last_err = String::from("no attempt made");
    let mut attempts = 0u32;
    let mut session = loop {
        if remaining().is_zero() {
            let detail = format!(
                "no MCP handshake within {:?} ({attempts} attempts); last error: {last_err}",
                health.timeout
            );
            return report.fail("initialize", detail, started);
        }
        attempts += 1;
        let per_try = remaining()
            .min(Duration::from_secs(30))
            .max(Duration::from_millis(50));
        let opts = crate::mcp::Options {
            timeout: per_try,
            bearer_token: token.map(str::to_string),
        };
        match Session::connect_with(base, transport, &opts).await {
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

    let outcome = tokio::time::timeout(
        remaining(),
        checks(&mut session, health, previous, &mut report),
    )
    .await;
    session.close().await;
    match outcome {
        Ok(Ok(())) => {
            report.passed = true;
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            report
        }
        Ok(Err((name, detail))) => report.fail(&name, detail, started),
        Err(_) => {
            let step = format!("{} (timeout)", next_step_name(&report, health));
            report.fail(
                &step,
                format!("the gate's {:?} ran out", health.timeout),
                started,
            )
        }
    }
}

fn next_step_name(report: &GateReport, health: &Health) -> String {
    let done = report.checks.len();
    match done {
        0 => "initialize".into(),
        1 => "tools/list".into(),
        n => health
            .smoke
            .get(n - 2)
            .map(|s| format!("smoke {}", s.tool))
            .unwrap_or_else(|| "gate".into()),
    }
}

async fn checks(
    session: &mut Session,
    health: &Health,
    previous: Option<&BTreeMap<String, String>>,
    report: &mut GateReport,
) -> Result<(), (String, String)> {
    let tools = session
        .list_tools()
        .await
        .map_err(|e| ("tools/list".to_string(), e.to_string()))?;
    let names: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
    let (digest, per) = schema_digest(&tools);
    report.tools = names.clone();
    report.schema_digest = Some(digest);
    report.drift = previous.map(|p| drift(p, &per));
    report.tool_hashes = per;
    let missing: Vec<&String> = health
        .expect_tools
        .include
        .iter()
        .filter(|t| !names.contains(t))
        .collect();
    if !missing.is_empty() {
        return Err((
            "tools/list".into(),
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
            "tools/list".into(),
            format!(
                "{} tools listed, at least {} expected",
                names.len(),
                health.expect_tools.min
            ),
        ));
    }
    report.checks.push(Check {
        name: "tools/list".into(),
        ok: true,
        detail: format!("{} tools, expected ones present", names.len()),
    });
    for step in &health.smoke {
        let name = format!("smoke {}", step.tool);
        let r = session
            .call_tool(&step.tool, step.args.clone())
            .await
            .map_err(|e| (name.clone(), e.to_string()))?;
        let want_error = step.expect.is_error.unwrap_or(false);
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
        if let Some(want) = &step.expect.contains {
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
}
