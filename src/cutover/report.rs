//! What a person reads of each cutover report (`--output human`); the reports' `Serialize` form
//! is the JSON. Pure text: the command hands it to `output`, which prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::check::CheckReport;
use super::check_run::CheckOutcome;
use super::compare::{excerpt, Side};
use super::retire::RetireReport;
use super::state::Retired;
use super::status::StatusReport;
use super::switch::SwitchReport;
use crate::output::table;

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "–".into())
}

impl CheckOutcome {
    pub fn human_text(&self) -> String {
        check_text(&self.report, &self.path)
    }
}

/// One row per service (old vs new, through LiteLLM, latency), then every difference, the
/// latency through LiteLLM's own `/mcp`, the error paths LiteLLM was seen to take, and the total.
pub fn check_text(r: &CheckReport, path: &Path) -> String {
    let mut rows = Vec::new();
    for s in &r.services {
        let tools = |side: &Side| match &side.error {
            Some(_) => "unreachable".to_string(),
            None => side.tools.len().to_string(),
        };
        let smoke = |side: &Side| {
            let ok = side.smoke.iter().filter(|o| o.ok).count();
            format!("{ok}/{}", side.smoke.len())
        };
        let (llm_tools, llm_smoke, errors, direct, through) = match &s.litellm {
            None => ("–".into(), "–".into(), "–".into(), "–".into(), "–".into()),
            Some(l) => (
                format!("{}", l.tools_listed),
                format!(
                    "{}/{}{}",
                    l.smoke_rest.iter().filter(|o| o.ok).count(),
                    l.smoke_rest.len(),
                    match &l.smoke_mcp {
                        Some(o) if o.ok => " +mcp",
                        Some(_) => " mcp FAIL",
                        None => "",
                    }
                ),
                format!(
                    "{}/{} clean",
                    l.errors.iter().filter(|p| p.clean).count(),
                    l.errors.len()
                ),
                l.latency
                    .as_ref()
                    .map(|x| format!("{} / {}", ms(x.direct.p50_ms), ms(x.direct.p95_ms)))
                    .unwrap_or_else(|| "–".into()),
                l.latency
                    .as_ref()
                    .map(|x| {
                        format!(
                            "{} / {}",
                            ms(x.through_litellm.p50_ms),
                            ms(x.through_litellm.p95_ms)
                        )
                    })
                    .unwrap_or_else(|| "–".into()),
            ),
        };
        rows.push(vec![
            s.service.clone(),
            s.routed_to.clone().unwrap_or_else(|| "–".into()),
            format!("{} / {}", tools(&s.old), tools(&s.new)),
            format!("{} / {}", smoke(&s.old), smoke(&s.new)),
            llm_tools,
            llm_smoke,
            errors,
            direct,
            through,
            if s.differences.is_empty() {
                "same".into()
            } else {
                format!("{} DIFF", s.differences.len())
            },
        ]);
    }
    let mut out = table(
        &[
            "SERVICE",
            "ROUTED",
            "TOOLS old/new",
            "SMOKE old/new",
            "LITELLM TOOLS",
            "LITELLM SMOKE",
            "ERRORS",
            "DIRECT p50/p95 ms",
            "LITELLM REST p50/p95 ms",
            "RESULT",
        ],
        rows,
    );
    for s in &r.services {
        for d in &s.differences {
            out.push_str(&format!("\n{}: [{}] {}", s.service, d.kind, d.detail));
        }
    }
    for s in &r.services {
        if let Some(m) = s
            .litellm
            .as_ref()
            .and_then(|l| l.latency.as_ref())
            .and_then(|x| x.through_litellm_mcp.as_ref())
        {
            out.push_str(&format!(
                "\n{}: through LiteLLM's /mcp on one session p50 {} / p95 {} ms ({} calls, {} failed)",
                s.service,
                ms(m.p50_ms),
                ms(m.p95_ms),
                m.calls,
                m.failed
            ));
        }
    }
    // Which error path LiteLLM uses, as observed.
    let mut paths = BTreeMap::new();
    for s in &r.services {
        for p in s.litellm.iter().flat_map(|l| &l.errors) {
            let what = match (p.http_status, p.is_error, p.jsonrpc_error) {
                (_, Some(true), _) => "isError result".to_string(),
                (Some(h), Some(false), _) => format!("HTTP {h}, accepted as a success"),
                (None, Some(false), _) => "accepted as a success".to_string(),
                (_, _, Some(c)) => format!("JSON-RPC error {c}"),
                (Some(h), _, _) => format!("HTTP {h}"),
                _ => "no answer".to_string(),
            };
            paths
                .entry((p.case, p.path))
                .or_insert_with(BTreeSet::new)
                .insert(what);
        }
    }
    for ((case, path), whats) in paths {
        out.push_str(&format!(
            "\nerror path: {case} via {} → {}",
            if path == "rest" {
                "/mcp-rest/tools/call"
            } else {
                "/mcp"
            },
            whats.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out.push_str(&format!(
        "\n{} difference(s); report {}",
        r.differences,
        path.display()
    ));
    out
}

impl StatusReport {
    /// A row per service (flag, edge route, old proxy), then the retirement and the last check.
    pub fn human_text(&self) -> String {
        let rows = self
            .services
            .iter()
            .map(|s| {
                vec![
                    s.service.clone(),
                    s.flag
                        .as_ref()
                        .map(|f| format!("{} since {}", f.active.as_str(), f.since))
                        .unwrap_or_else(|| "–".into()),
                    match (&s.route, &self.edge_error) {
                        (Some(r), _) => format!("{} → {}", r.kind.as_str(), r.upstream),
                        (None, None) => "no route".into(),
                        (None, Some(_)) => "edge unreachable".into(),
                    },
                    match &s.legacy {
                        Ok(t) => format!("answers ({t} tools)"),
                        Err(_) if self.retired.is_some() => "retired".into(),
                        Err(e) => format!("DOWN: {}", excerpt(e)),
                    },
                ]
            })
            .collect();
        let mut out = table(
            &["SERVICE", "CUTOVER FLAG", "EDGE ROUTE", "OLD PROXY"],
            rows,
        );
        if let Some(r) = &self.retired {
            out.push_str(&format!("\nold proxy retired {} by {}", r.at, r.who));
        }
        if let Some(c) = &self.last_check {
            out.push_str(&format!(
                "\nlast check {}: {} difference(s) ({})",
                c.at,
                c.differences,
                c.report.display()
            ));
        }
        out
    }
}

impl SwitchReport {
    pub fn human_text(&self) -> String {
        table(
            &["SERVICE", "ROUTE", "UPSTREAM", "RESULT"],
            self.services
                .iter()
                .map(|r| {
                    vec![
                        r.service.clone(),
                        r.route.clone(),
                        r.upstream.clone(),
                        r.result.clone(),
                    ]
                })
                .collect(),
        )
    }
}

impl RetireReport {
    pub fn human_text(&self) -> String {
        format!(
            "old proxy stopped (`{}`); its endpoints no longer answer for {}",
            self.retired.command.join(" "),
            self.services.join(", ")
        )
    }
}

/// `cutover retire` when there is nothing left to retire.
pub fn already_retired_text(r: &Retired) -> String {
    format!("the old proxy was already retired at {} by {}", r.at, r.who)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::check::{ErrorProbe, Latency, ServiceReport, ThroughLiteLlm};
    use crate::cutover::compare::{Difference, SmokeOutcome};
    use crate::cutover::edge::RouteKind;
    use crate::cutover::latency::Figures;
    use crate::cutover::state::{LastCheck, ServiceState};
    use crate::cutover::status::ServiceStatus;
    use crate::cutover::switch::SwitchRow;
    use crate::cutover::testing::route;

    fn side(tools: usize, smoke_ok: &[bool], error: Option<&str>) -> Side {
        Side {
            url: "http://x".into(),
            transport: "http",
            era: None,
            error: error.map(str::to_string),
            tools: (0..tools)
                .map(|i| (format!("t{i}"), "digest".into()))
                .collect(),
            smoke: smoke_ok
                .iter()
                .map(|ok| SmokeOutcome {
                    tool: "echo".into(),
                    ok: *ok,
                    is_error: Some(!ok),
                    detail: String::new(),
                    ms: 1.0,
                })
                .collect(),
            ..Side::default()
        }
    }

    fn figures(p50: f64, p95: f64) -> Figures {
        Figures {
            calls: 40,
            failed: 0,
            p50_ms: Some(p50),
            p95_ms: Some(p95),
            max_ms: Some(p95),
        }
    }

    fn probe(path: &'static str, case: &'static str, status: Option<u16>) -> ErrorProbe {
        ErrorProbe {
            path,
            case,
            http_status: status,
            is_error: if path == "mcp" { Some(true) } else { None },
            jsonrpc_error: None,
            clean: true,
            detail: String::new(),
        }
    }

    #[test]
    fn a_check_reads_per_service_then_differences_error_paths_and_the_total() {
        let report = CheckReport {
            at: "2026-11-25T00:00:00Z".into(),
            litellm_url: Some("http://127.0.0.1:4000".into()),
            litellm_alive_after: Some(true),
            services: vec![
                ServiceReport {
                    service: "alpha".into(),
                    routed_to: Some("legacy".into()),
                    old: side(3, &[true], None),
                    new: side(3, &[true], None),
                    litellm: Some(ThroughLiteLlm {
                        tools_listed: 3,
                        tools_missing: vec![],
                        smoke_rest: vec![],
                        smoke_mcp: None,
                        errors: vec![
                            probe("rest", "unknown_tool", Some(500)),
                            probe("mcp", "unknown_tool", Some(200)),
                        ],
                        latency: Some(Latency {
                            tool: "echo".into(),
                            direct: figures(1.25, 2.0),
                            through_litellm: figures(10.0, 20.04),
                            through_litellm_mcp: Some(figures(5.0, 6.0)),
                            slo_p95_ms: 100,
                            pass: true,
                        }),
                    }),
                    differences: vec![],
                },
                ServiceReport {
                    service: "beta".into(),
                    routed_to: None,
                    old: side(2, &[true, true], None),
                    new: side(0, &[], Some("connection refused")),
                    litellm: None,
                    differences: vec![Difference {
                        kind: "unreachable",
                        detail: "new: connection refused".into(),
                    }],
                },
            ],
            differences: 1,
        };
        let text = check_text(&report, Path::new("/s/cutover/check-1.json"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("SERVICE"), "{text}");
        let alpha: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            alpha.join(" "),
            "alpha legacy 3 / 3 1/1 / 1/1 3 0/0 2/2 clean 1.2 / 2.0 10.0 / 20.0 same"
        );
        let beta: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            beta.join(" "),
            "beta – 2 / unreachable 2/2 / 0/0 – – – – – 1 DIFF"
        );
        assert_eq!(
            &lines[3..],
            [
                "beta: [unreachable] new: connection refused",
                "alpha: through LiteLLM's /mcp on one session p50 5.0 / p95 6.0 ms (40 calls, 0 failed)",
                "error path: unknown_tool via /mcp → isError result",
                "error path: unknown_tool via /mcp-rest/tools/call → HTTP 500",
                "1 difference(s); report /s/cutover/check-1.json",
            ]
        );
    }

    #[test]
    fn status_shows_flag_route_and_old_proxy_per_service() {
        let flag = ServiceState {
            active: RouteKind::Stack,
            since: "2026-11-25T00:00:00Z".into(),
            stack_upstream: None,
            stack_revision: None,
            switches: 1,
        };
        let status = |name: &str, flag, route, legacy: Result<usize, String>| ServiceStatus {
            service: name.into(),
            flag,
            route,
            legacy_url: "http://127.0.0.1:9000/servers/x/sse".into(),
            legacy_answers: legacy.is_ok(),
            legacy,
        };
        let mut report = StatusReport {
            services: vec![
                status("alpha", Some(flag), Some(route(RouteKind::Stack)), Ok(3)),
                status("beta", None, None, Err("connection refused".into())),
            ],
            retired: None,
            last_check: Some(LastCheck {
                at: "2026-11-25T01:00:00Z".into(),
                services: vec!["alpha".into()],
                differences: 0,
                report: "/s/cutover/check-1.json".into(),
            }),
            edge_error: None,
        };
        let text = report.human_text();
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "SERVICE CUTOVER FLAG EDGE ROUTE OLD PROXY",
                "alpha stack since 2026-11-25T00:00:00Z stack → http://p-alpha-r3:8080 answers (3 tools)",
                "beta – no route DOWN: connection refused",
                "last check 2026-11-25T01:00:00Z: 0 difference(s) (/s/cutover/check-1.json)",
            ]
        );
        // The edge down, the old proxy retired.
        report.edge_error = Some("the edge admin API at http://127.0.0.1:8500/routes".into());
        report.retired = Some(Retired {
            at: "2026-11-26T00:00:00Z".into(),
            who: "ops".into(),
            command: vec!["true".into()],
        });
        report.services.remove(0);
        let text = report.human_text();
        assert!(
            text.contains("edge unreachable") && text.contains("retired"),
            "{text}"
        );
        assert!(
            text.contains("\nold proxy retired 2026-11-26T00:00:00Z by ops"),
            "{text}"
        );
        // JSON keeps the fields scripts read, without the human-only detail.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["services"][0],
            serde_json::json!({"service": "beta", "flag": null, "route": null,
                "legacy_url": "http://127.0.0.1:9000/servers/x/sse", "legacy_answers": false})
        );
    }

    #[test]
    fn switch_and_retire_reports_read_as_before() {
        let r = SwitchReport {
            command: "revert",
            services: vec![SwitchRow {
                service: "alpha".into(),
                route: "legacy".into(),
                upstream: "http://host.docker.internal:9000/servers/alpha".into(),
                result: "reverted".into(),
            }],
            failed: 0,
        };
        let text = r.human_text();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["SERVICE", "ROUTE", "UPSTREAM", "RESULT"]);
        assert_eq!(
            rows[1],
            [
                "alpha",
                "legacy",
                "http://host.docker.internal:9000/servers/alpha",
                "reverted"
            ]
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"command":"revert","services":[{"service":"alpha","route":"legacy","upstream":"http://host.docker.internal:9000/servers/alpha","result":"reverted"}],"failed":0}"#
        );
        let retired = Retired {
            at: "2026-11-26T00:00:00Z".into(),
            who: "ops".into(),
            command: vec!["systemctl".into(), "stop".into(), "mcp-proxy".into()],
        };
        let r = RetireReport {
            retired: retired.clone(),
            services: vec!["alpha".into(), "beta".into()],
        };
        assert_eq!(
            r.human_text(),
            "old proxy stopped (`systemctl stop mcp-proxy`); its endpoints no longer answer for alpha, beta"
        );
        assert_eq!(
            already_retired_text(&retired),
            "the old proxy was already retired at 2026-11-26T00:00:00Z by ops"
        );
    }
}
