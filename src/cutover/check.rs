//! `cutover check`: per service, old vs new side by side ([`super::compare`]); then, through a real
//! LiteLLM: every tool of every service listed by `/v1/mcp/tools`, every smoke step called through
//! `/mcp-rest/tools/call` (and the first through LiteLLM's own `/mcp`), error handling (an unknown
//! tool, arguments violating the input schema) on both paths, and latency direct vs through
//! LiteLLM. Everything that is not as it should be becomes a [`Difference`]; the command exits 6
//! when there is any.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use super::compare::{self, excerpt, Difference, Side, SmokeOutcome};
use super::latency::{self, Figures};
use super::litellm::{LiteLlm, RestCall};
use crate::manifest::SmokeStep;
use crate::mcp::{McpError, Mode, Session, Transport};

/// The tool name used to provoke "unknown tool" (no server lists it).
pub const UNKNOWN_TOOL: &str = "mcpctl_cutover_no_such_tool";

/// Calls made on each path before latency is timed (not counted).
pub const WARMUP: usize = 3;

/// One service to check: where its old proxy and the new stack answer.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: String,
    pub old_base: String,
    pub old_transport: Transport,
    pub new_base: String,
    pub new_transport: Transport,
    /// mcpctl's token for the new side (never sent to the old proxy).
    pub new_token: Option<crate::auth::Bearer>,
    pub smoke: Vec<SmokeStep>,
    /// The manifest's `tools` policy: tools it hides are expected to be missing from the new
    /// stack (the old proxy still lists them), so they are no difference.
    pub tools: Option<crate::manifest::ToolPolicy>,
    pub slo_p95_ms: u64,
    /// What the edge routes this service to right now, when the edge answered.
    pub routed_to: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub timeout: Duration,
    pub latency_calls: usize,
}

/// How one error case came back on one path.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorProbe {
    /// `rest` (/mcp-rest/tools/call) or `mcp` (/mcp).
    pub path: &'static str,
    /// unknown_tool | bad_arguments
    pub case: &'static str,
    pub http_status: Option<u16>,
    pub is_error: Option<bool>,
    pub jsonrpc_error: Option<i64>,
    /// A readable error came back (not a success, not a hang or a dropped connection).
    pub clean: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub tool: String,
    /// New session per call at the new stack's endpoint (LiteLLM's own upstream pattern).
    pub direct: Figures,
    /// Through `/mcp-rest/tools/call` (judged against the SLO).
    pub through_litellm: Figures,
    /// Through LiteLLM's own MCP endpoint on one open session (reported, not judged).
    pub through_litellm_mcp: Option<Figures>,
    pub slo_p95_ms: u64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughLiteLlm {
    pub tools_listed: usize,
    pub tools_missing: Vec<String>,
    pub smoke_rest: Vec<SmokeOutcome>,
    pub smoke_mcp: Option<SmokeOutcome>,
    pub errors: Vec<ErrorProbe>,
    pub latency: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceReport {
    pub service: String,
    pub routed_to: Option<String>,
    pub old: Side,
    pub new: Side,
    pub litellm: Option<ThroughLiteLlm>,
    pub differences: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub at: String,
    pub litellm_url: Option<String>,
    pub litellm_alive_after: Option<bool>,
    pub services: Vec<ServiceReport>,
    pub differences: usize,
}

/// Arguments that violate `schema`: a declared property given a value of the wrong type, or,
/// failing that, an empty object when something is required. None when the schema accepts
/// anything.
pub fn bad_arguments(schema: &Value) -> Option<Value> {
    if let Some(props) = schema["properties"].as_object() {
        for (name, p) in props {
            let wrong = match p["type"].as_str() {
                Some("string") => json!(12345),
                Some("integer") | Some("number") => json!("not a number"),
                Some("boolean") => json!("not a boolean"),
                Some("array") | Some("object") => json!(12345),
                _ => continue,
            };
            return Some(json!({ name.clone(): wrong }));
        }
    }
    schema["required"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
        .then(|| json!({}))
}

fn rest_probe(case: &'static str, r: &RestCall) -> ErrorProbe {
    let clean = match (r.status, r.is_error) {
        (None, _) => false,
        (Some(_), Some(true)) => true,
        (Some(200), _) => false,
        // An HTTP error carrying a message (LiteLLM: {"detail": {"error", "message"}}).
        (Some(s), _) => s >= 400 && !r.text.trim().is_empty(),
    };
    ErrorProbe {
        path: "rest",
        case,
        http_status: r.status,
        is_error: r.is_error,
        jsonrpc_error: None,
        clean,
        detail: excerpt(&r.text),
    }
}

async fn mcp_probe(
    session: &mut Session,
    case: &'static str,
    tool: &str,
    args: Value,
) -> ErrorProbe {
    let mut p = ErrorProbe {
        path: "mcp",
        case,
        http_status: None,
        is_error: None,
        jsonrpc_error: None,
        clean: false,
        detail: String::new(),
    };
    match session.call_tool(tool, args).await {
        Ok(r) => {
            p.is_error = Some(r.is_error);
            p.clean = r.is_error;
            p.detail = excerpt(&r.text);
        }
        Err(McpError::Rpc { code, message }) => {
            p.jsonrpc_error = Some(code);
            p.clean = true;
            p.detail = excerpt(&message);
        }
        Err(McpError::Http { status, body, .. }) => {
            p.http_status = Some(status);
            p.detail = excerpt(&body);
        }
        Err(e) => p.detail = e.to_string(),
    }
    p
}

/// Old vs new for every target; then, with `llm`, everything through LiteLLM.
pub async fn run(targets: &[Target], llm: Option<&LiteLlm>, opts: &CheckOptions) -> CheckReport {
    let mut services = Vec::new();
    for t in targets {
        let (old, new) = tokio::join!(
            compare::probe(
                &t.old_base,
                t.old_transport,
                None,
                &t.smoke,
                opts.timeout,
                Mode::Legacy
            ),
            compare::probe(
                &t.new_base,
                t.new_transport,
                t.new_token.as_ref().map(|b| b.expose()),
                &t.smoke,
                opts.timeout,
                Mode::Auto
            ),
        );
        let differences = match &t.tools {
            Some(policy) => compare::differences(&compare::as_permitted(&old, policy), &new),
            None => compare::differences(&old, &new),
        };
        services.push(ServiceReport {
            service: t.service.clone(),
            routed_to: t.routed_to.clone(),
            old,
            new,
            litellm: None,
            differences,
        });
    }
    let mut alive_after = None;
    if let Some(llm) = llm {
        let listed: Result<BTreeSet<String>, String> = llm
            .tools()
            .await
            .map(|v| v.into_iter().collect())
            .map_err(|e| e.to_string());
        let mut mcp = llm
            .mcp_session(opts.timeout)
            .await
            .map_err(|e| e.to_string());
        for (t, rep) in targets.iter().zip(services.iter_mut()) {
            let through = through_litellm(t, rep, llm, &listed, &mut mcp, opts).await;
            rep.differences.extend(through.1);
            rep.litellm = Some(through.0);
        }
        if let Ok(s) = mcp {
            s.close().await;
        }
        alive_after = Some(llm.alive().await);
        if alive_after == Some(false) {
            if let Some(first) = services.first_mut() {
                first.differences.push(Difference {
                    kind: "litellm_down",
                    detail: "LiteLLM stopped answering /health/liveliness during the check".into(),
                });
            }
        }
    }
    let differences = services.iter().map(|s| s.differences.len()).sum();
    CheckReport {
        at: crate::rollout::ledger::now_rfc3339(),
        litellm_url: llm.map(|l| l.base().to_string()),
        litellm_alive_after: alive_after,
        services,
        differences,
    }
}

async fn through_litellm(
    t: &Target,
    rep: &ServiceReport,
    llm: &LiteLlm,
    listed: &Result<BTreeSet<String>, String>,
    mcp: &mut Result<Session, String>,
    opts: &CheckOptions,
) -> (ThroughLiteLlm, Vec<Difference>) {
    let mut diffs = Vec::new();
    let svc = &t.service;
    // The tools the new stack lists (the old proxy's when the stack did not answer).
    let expected: &BTreeMap<String, String> = if rep.new.error.is_none() {
        &rep.new.tools
    } else {
        &rep.old.tools
    };
    let prefix = format!("{svc}-");
    let (tools_listed, tools_missing) = match listed {
        Ok(l) => {
            let mine = l.iter().filter(|n| n.starts_with(&prefix)).count();
            let missing: Vec<String> = expected
                .keys()
                .filter(|t| !l.contains(&format!("{prefix}{t}")))
                .cloned()
                .collect();
            (mine, missing)
        }
        Err(e) => {
            diffs.push(Difference {
                kind: "litellm_tools",
                detail: format!("/v1/mcp/tools failed: {e}"),
            });
            (0, vec![])
        }
    };
    if !tools_missing.is_empty() {
        diffs.push(Difference {
            kind: "litellm_tools",
            detail: format!(
                "/v1/mcp/tools lacks {} of the service's {} tools: {}",
                tools_missing.len(),
                expected.len(),
                tools_missing.join(", ")
            ),
        });
    }

    let mut smoke_rest = Vec::new();
    for step in &t.smoke {
        let r = llm.rest_call(svc, &step.tool, &step.args).await;
        let verdict = match (r.status, r.is_error) {
            (Some(200), Some(e)) => compare::judge(step, e, &r.text),
            (s, _) => Err(format!(
                "HTTP {}: {}",
                s.map(|s| s.to_string()).unwrap_or_else(|| "none".into()),
                excerpt(&r.text)
            )),
        };
        if let Err(e) = &verdict {
            diffs.push(Difference {
                kind: "litellm_smoke",
                detail: format!("smoke `{}` through /mcp-rest/tools/call: {e}", step.tool),
            });
        }
        smoke_rest.push(SmokeOutcome {
            tool: step.tool.clone(),
            ok: verdict.is_ok(),
            is_error: r.is_error,
            detail: verdict.err().unwrap_or_else(|| excerpt(&r.text)),
            ms: r.ms,
        });
    }

    let mut smoke_mcp = None;
    let mut errors = Vec::new();
    let first = t.smoke.first();
    let bad = first.and_then(|s| {
        rep.new
            .schemas
            .get(&s.tool)
            .and_then(bad_arguments)
            .map(|a| (s.tool.clone(), a))
    });
    // Unknown tool and bad arguments on both paths.
    let r = llm.rest_call(svc, UNKNOWN_TOOL, &json!({})).await;
    errors.push(rest_probe("unknown_tool", &r));
    if let Some((tool, args)) = &bad {
        let r = llm.rest_call(svc, tool, args).await;
        errors.push(rest_probe("bad_arguments", &r));
    }
    match mcp {
        Ok(session) => {
            if let Some(step) = first {
                let started = std::time::Instant::now();
                let o = SmokeOutcome::of(
                    step,
                    session
                        .call_tool(&format!("{prefix}{}", step.tool), step.args.clone())
                        .await,
                    started,
                );
                if !o.ok {
                    diffs.push(Difference {
                        kind: "litellm_smoke",
                        detail: format!("smoke `{}` through /mcp: {}", step.tool, o.detail),
                    });
                }
                smoke_mcp = Some(o);
            }
            errors.push(
                mcp_probe(
                    session,
                    "unknown_tool",
                    &format!("{prefix}{UNKNOWN_TOOL}"),
                    json!({}),
                )
                .await,
            );
            if let Some((tool, args)) = &bad {
                errors.push(
                    mcp_probe(
                        session,
                        "bad_arguments",
                        &format!("{prefix}{tool}"),
                        args.clone(),
                    )
                    .await,
                );
            }
        }
        Err(e) => diffs.push(Difference {
            kind: "litellm_mcp",
            detail: format!("LiteLLM's /mcp endpoint: {e}"),
        }),
    }
    for p in errors.iter().filter(|p| !p.clean) {
        diffs.push(Difference {
            kind: "litellm_error_handling",
            detail: format!(
                "{} through {}: no clean error ({}{})",
                p.case,
                if p.path == "rest" {
                    "/mcp-rest/tools/call"
                } else {
                    "/mcp"
                },
                p.http_status
                    .map(|s| format!("HTTP {s}, "))
                    .unwrap_or_default(),
                if p.is_error == Some(false) {
                    format!("accepted as a success: {}", p.detail)
                } else {
                    p.detail.clone()
                }
            ),
        });
    }

    // Latency on the first non-mutating smoke step that is expected to succeed (a step that
    // expects an error would count every timed call as failed).
    let latency = match t
        .smoke
        .iter()
        .find(|s| !s.mutates && s.expect.is_error != Some(true))
    {
        Some(step) if opts.latency_calls > 0 => {
            // Warm-up, not counted: LiteLLM's first calls to a server pay for its client set-up.
            latency::direct(
                &t.new_base,
                t.new_transport,
                t.new_token.as_ref().map(|b| b.expose()),
                &step.tool,
                &step.args,
                WARMUP,
                opts.timeout,
            )
            .await;
            latency::through_litellm(llm, svc, &step.tool, &step.args, WARMUP).await;
            let direct = latency::direct(
                &t.new_base,
                t.new_transport,
                t.new_token.as_ref().map(|b| b.expose()),
                &step.tool,
                &step.args,
                opts.latency_calls,
                opts.timeout,
            )
            .await;
            let through =
                latency::through_litellm(llm, svc, &step.tool, &step.args, opts.latency_calls)
                    .await;
            let through_mcp = match mcp {
                Ok(session) => Some(
                    latency::through_mcp_session(
                        session,
                        &format!("{prefix}{}", step.tool),
                        &step.args,
                        opts.latency_calls,
                    )
                    .await,
                ),
                Err(_) => None,
            };
            let pass =
                through.failed == 0 && through.p95_ms.is_some_and(|p| p < t.slo_p95_ms as f64);
            if !pass {
                diffs.push(Difference {
                    kind: "latency",
                    detail: format!(
                        "through LiteLLM p95 {} (target < {} ms), {} of {} calls failed",
                        through
                            .p95_ms
                            .map(|p| format!("{p:.1} ms"))
                            .unwrap_or_else(|| "–".into()),
                        t.slo_p95_ms,
                        through.failed,
                        through.calls
                    ),
                });
            }
            Some(Latency {
                tool: step.tool.clone(),
                direct,
                through_litellm: through,
                through_litellm_mcp: through_mcp,
                slo_p95_ms: t.slo_p95_ms,
                pass,
            })
        }
        _ => None,
    };
    (
        ThroughLiteLlm {
            tools_listed,
            tools_missing,
            smoke_rest,
            smoke_mcp,
            errors,
            latency,
        },
        diffs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_break_the_schema() {
        let s = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        assert_eq!(bad_arguments(&s), Some(json!({"text": 12345})));
        let s = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        assert_eq!(bad_arguments(&s), Some(json!({"n": "not a number"})));
        let s = json!({"type": "object", "required": ["x"], "properties": {"x": {}}});
        assert_eq!(bad_arguments(&s), Some(json!({})));
        assert_eq!(bad_arguments(&json!({"type": "object"})), None);
    }

    #[test]
    fn rest_errors_are_clean_when_they_say_something() {
        let call = |status: Option<u16>, is_error: Option<bool>, text: &str| RestCall {
            status,
            is_error,
            text: text.into(),
            ms: 1.0,
        };
        // LiteLLM 1.108.7's answer to an unknown tool.
        assert!(
            rest_probe(
                "unknown_tool",
                &call(
                    Some(500),
                    None,
                    r#"{"detail":{"error":"internal_server_error"}}"#
                )
            )
            .clean
        );
        assert!(rest_probe("bad_arguments", &call(Some(200), Some(true), "bad")).clean);
        assert!(!rest_probe("bad_arguments", &call(Some(200), Some(false), "|N")).clean);
        assert!(!rest_probe("unknown_tool", &call(None, None, "timed out")).clean);
    }
}
