//! Old vs new for one service: what each side lists (tool names, per-tool input-schema hashes) and
//! what its smoke steps return, then the differences between the two. Probing talks MCP through
//! [`crate::mcp`]; [`differences`] is pure and unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::health::gate::schema_digest;
use crate::manifest::SmokeStep;
use crate::mcp::{Mode, Session, Transport};

/// One smoke step's outcome on one side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SmokeOutcome {
    pub tool: String,
    /// The step's `expect` held.
    pub ok: bool,
    pub is_error: Option<bool>,
    pub detail: String,
    pub ms: f64,
}

impl SmokeOutcome {
    /// Judge one call of `step` that started at `started`.
    pub fn of(
        step: &SmokeStep,
        result: Result<crate::mcp::ToolResult, crate::mcp::McpError>,
        started: Instant,
    ) -> Self {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        match result {
            Ok(r) => {
                let verdict = judge(step, r.is_error, &r.text);
                SmokeOutcome {
                    tool: step.tool.clone(),
                    ok: verdict.is_ok(),
                    is_error: Some(r.is_error),
                    detail: verdict.err().unwrap_or_else(|| excerpt(&r.text)),
                    ms,
                }
            }
            Err(e) => SmokeOutcome {
                tool: step.tool.clone(),
                ok: false,
                is_error: None,
                detail: e.to_string(),
                ms,
            },
        }
    }
}

/// What one endpoint showed.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Side {
    pub url: String,
    pub transport: &'static str,
    /// The era the side answered in (`legacy`, `modern`); absent when it could not connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub era: Option<&'static str>,
    /// Why nothing could be listed (connect, initialize or tools/list failed).
    pub error: Option<String>,
    /// Tool name → 8-hex hash of its input schema (canonical JSON).
    pub tools: BTreeMap<String, String>,
    pub smoke: Vec<SmokeOutcome>,
    /// Tool name → input schema (for provoking a bad-arguments error); not reported.
    #[serde(skip)]
    pub schemas: BTreeMap<String, serde_json::Value>,
}

/// One difference between old and new, worded for the operator.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// unreachable | tool_missing | tool_extra | schema | smoke
    pub kind: &'static str,
    pub detail: String,
}

/// Check one smoke result against its step's `expect` (the gate's rule).
pub fn judge(step: &SmokeStep, is_error: bool, text: &str) -> Result<(), String> {
    let want_error = step.expect.is_error.unwrap_or(false);
    if is_error != want_error {
        return Err(format!(
            "isError {is_error}, expected {want_error}: {}",
            excerpt(text)
        ));
    }
    if let Some(want) = &step.expect.contains {
        if !text.contains(want.as_str()) {
            return Err(format!("no {want:?} in: {}", excerpt(text)));
        }
    }
    Ok(())
}

pub fn excerpt(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Connect to `base` in `mode`, list tools and run every smoke step, each request bounded by
/// `timeout`.
pub async fn probe(
    base: &str,
    transport: Transport,
    token: Option<&str>,
    smoke: &[SmokeStep],
    timeout: Duration,
    mode: Mode,
) -> Side {
    let mut side = Side {
        url: base.to_string(),
        transport: transport.as_str(),
        ..Side::default()
    };
    let opts = crate::mcp::Options {
        timeout,
        bearer_token: token.map(str::to_string),
    };
    let mut session = match Session::connect_mode(base, transport, &opts, mode).await {
        Ok(s) => {
            side.era = Some(match s.era {
                crate::mcp::Era::Legacy => "legacy",
                crate::mcp::Era::Modern => "modern",
            });
            s
        }
        Err(e) => {
            side.error = Some(format!("initialize: {e}"));
            return side;
        }
    };
    match session.list_tools().await {
        Ok(tools) => {
            side.tools = schema_digest(&tools).1;
            side.schemas = tools
                .into_iter()
                .map(|t| (t.name, t.input_schema))
                .collect();
        }
        Err(e) => {
            side.error = Some(format!("tools/list: {e}"));
            session.close().await;
            return side;
        }
    }
    for step in smoke {
        let started = Instant::now();
        let outcome = SmokeOutcome::of(
            step,
            session.call_tool(&step.tool, step.args.clone()).await,
            started,
        );
        side.smoke.push(outcome);
    }
    session.close().await;
    side
}

/// `side` as the manifest's `tools` policy lets clients see it: what the old proxy lists and the
/// policy hides is not a tool the new stack should offer.
pub fn as_permitted(side: &Side, policy: &crate::manifest::ToolPolicy) -> Side {
    let mut s = side.clone();
    s.tools.retain(|t, _| policy.permits(t));
    s.schemas.retain(|t, _| policy.permits(t));
    s
}

/// Every way `new` differs from `old`. Smoke steps differ when one side meets its `expect` and
/// the other does not (texts may legitimately differ, e.g. a nonce or a timestamp).
pub fn differences(old: &Side, new: &Side) -> Vec<Difference> {
    let mut out = Vec::new();
    for (name, side) in [("old", old), ("new", new)] {
        if let Some(e) = &side.error {
            out.push(Difference {
                kind: "unreachable",
                detail: format!("{name} ({}): {e}", side.url),
            });
        }
    }
    if !out.is_empty() {
        return out;
    }
    for t in old.tools.keys().filter(|t| !new.tools.contains_key(*t)) {
        out.push(Difference {
            kind: "tool_missing",
            detail: format!("`{t}` is listed by the old proxy but not by the new stack"),
        });
    }
    for t in new.tools.keys().filter(|t| !old.tools.contains_key(*t)) {
        out.push(Difference {
            kind: "tool_extra",
            detail: format!("`{t}` is listed by the new stack but not by the old proxy"),
        });
    }
    for (t, h) in &new.tools {
        if old.tools.get(t).is_some_and(|o| o != h) {
            out.push(Difference {
                kind: "schema",
                detail: format!(
                    "`{t}`: input schema differs (old {}, new {h})",
                    old.tools[t]
                ),
            });
        }
    }
    for (i, n) in new.smoke.iter().enumerate() {
        let o = old.smoke.get(i);
        if o.map(|o| o.ok) != Some(n.ok) {
            out.push(Difference {
                kind: "smoke",
                detail: format!(
                    "smoke `{}`: old {}, new {}",
                    n.tool,
                    o.map(|o| if o.ok {
                        "passes".to_string()
                    } else {
                        format!("fails ({})", o.detail)
                    })
                    .unwrap_or_else(|| "not run".into()),
                    if n.ok {
                        "passes".to_string()
                    } else {
                        format!("fails ({})", n.detail)
                    }
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(tools: &[(&str, &str)], smoke: &[bool]) -> Side {
        Side {
            url: "http://x".into(),
            transport: "sse",
            era: None,
            error: None,
            tools: tools
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            smoke: smoke
                .iter()
                .map(|ok| SmokeOutcome {
                    tool: "echo".into(),
                    ok: *ok,
                    is_error: Some(!ok),
                    detail: "d".into(),
                    ms: 1.0,
                })
                .collect(),
            schemas: BTreeMap::new(),
        }
    }

    #[test]
    fn equal_sides_have_no_differences() {
        let a = side(&[("echo", "aa"), ("whoami", "bb")], &[true]);
        assert!(differences(&a, &a.clone()).is_empty());
    }

    #[test]
    fn missing_extra_schema_and_smoke_are_each_reported() {
        let old = side(&[("echo", "aa"), ("gone", "cc"), ("typed", "11")], &[true]);
        let new = side(
            &[("echo", "aa"), ("typed", "22"), ("fresh", "dd")],
            &[false],
        );
        let kinds: Vec<&str> = differences(&old, &new).iter().map(|d| d.kind).collect();
        assert_eq!(kinds, ["tool_missing", "tool_extra", "schema", "smoke"]);
    }

    #[test]
    fn tools_the_policy_hides_are_not_missing() {
        let old = side(&[("echo", "aa"), ("execute_sql", "bb")], &[true]);
        let new = side(&[("echo", "aa")], &[true]);
        assert_eq!(differences(&old, &new)[0].kind, "tool_missing");
        let policy = crate::manifest::ToolPolicy {
            deny: Some(vec!["execute_sql".into()]),
            ..Default::default()
        };
        assert!(differences(&as_permitted(&old, &policy), &new).is_empty());
    }

    #[test]
    fn an_unreachable_side_is_the_only_difference_reported() {
        let old = side(&[("echo", "aa")], &[true]);
        let mut new = side(&[], &[]);
        new.error = Some("initialize: refused".into());
        let d = differences(&old, &new);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, "unreachable");
        assert!(d[0].detail.contains("new"));
    }

    #[test]
    fn judge_applies_the_gate_rule() {
        let step: SmokeStep =
            serde_yaml_ng::from_str("{tool: echo, expect: {contains: 'hi|'}}").unwrap();
        assert!(judge(&step, false, "hi|N").is_ok());
        assert!(judge(&step, true, "hi|N").is_err());
        assert!(judge(&step, false, "nope").is_err());
    }
}
