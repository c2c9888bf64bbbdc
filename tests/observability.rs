//! Observability artifacts, checked by the real tools offline: promtool (config, rules, alert unit
//! tests), every PromQL expression parsed and naming only metrics of docs/contracts.md, runbooks
//! that exist, a dashboard without placeholders or fallbacks, and log-shipping configs discovering
//! on the exact managed label. (Promtail, Alloy, Loki and Grafana binaries are not reachable here:
//! their configs are checked structurally and by snapshot.)

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{run_mcpctl, text};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

/// Every metric an expression may name: the bridge's and the exporter's (docs/contracts.md),
/// Prometheus' own `up`, and the recording rules mcpctl renders.
const BRIDGE_METRICS: &[&str] = &[
    "mcp_bridge_sessions_active",
    "mcp_bridge_sessions_opened_total",
    "mcp_bridge_sessions_closed_total",
    "mcp_bridge_session_oldest_seconds",
    "mcp_bridge_requests_total",
    "mcp_bridge_request_errors_total",
    "mcp_bridge_request_duration_seconds_bucket",
    "mcp_bridge_requests_in_flight",
    "mcp_bridge_ready",
    "mcp_bridge_child_up",
    "mcp_bridge_child_processes",
    "mcp_bridge_child_restarts_total",
    "mcp_bridge_keepalive_sent_total",
    "mcp_bridge_tools_advertised",
];
const EXPORTER_METRICS: &[&str] = &[
    "mcp_container_memory_used_bytes",
    "mcp_container_memory_limit_bytes",
    "mcp_container_cpu_seconds_total",
    "mcp_container_cpu_limit_cores",
    "mcp_container_restarts_total",
    "mcp_container_healthy",
    // From `mcpctl backup`'s status file (docs/contracts.md "Docker proxy and container exporter").
    "mcp_backup_last_success_timestamp_seconds",
];

fn render(dir: &Path) -> std::path::PathBuf {
    let m = common::repo_root().join("services.yaml");
    let out = run_mcpctl(
        dir,
        &[
            "-f",
            m.to_str().unwrap(),
            "render",
            "--out",
            "out",
            "--only",
            "observability",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("out")
}

fn yaml(path: &Path) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Names(BTreeSet<String>);
impl ExprVisitor for Names {
    type Error = ();
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
        match e {
            Expr::VectorSelector(vs) => {
                self.0.extend(vs.name.clone());
            }
            Expr::MatrixSelector(ms) => {
                self.0.extend(ms.vs.name.clone());
            }
            _ => {}
        }
        Ok(true)
    }
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    let parsed =
        parser::parse(expr).unwrap_or_else(|e| panic!("PromQL does not parse: {e}\n{expr}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &parsed).unwrap();
    names.0
}

/// (record or alert name, expression) of every rule in the rendered rule files.
fn rules(out: &Path) -> Vec<(String, String, serde_yaml_ng::Value)> {
    let mut all = Vec::new();
    for file in ["mcp-recording.yml", "mcp-alerts.yml"] {
        let v = yaml(&out.join("prometheus/rules").join(file));
        for group in v["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                let name = rule
                    .get("record")
                    .or_else(|| rule.get("alert"))
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
                all.push((
                    name,
                    rule["expr"].as_str().unwrap().to_string(),
                    rule.clone(),
                ));
            }
        }
    }
    all
}

#[test]
fn promtool_accepts_the_config_and_rules_and_every_alert_unit_test_passes() {
    let Some(promtool) = common::tool("promtool", "promtool", &[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = render(tmp.path());
    let prom = out.join("prometheus");
    let run = |args: &[&str]| {
        let o = Command::new(&promtool)
            .args(args)
            .current_dir(&prom)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "promtool {args:?}:\n{}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout) + &text(&o.stderr)
    };
    run(&["check", "config", "prometheus.yml"]);
    run(&[
        "check",
        "rules",
        "rules/mcp-recording.yml",
        "rules/mcp-alerts.yml",
    ]);
    std::fs::copy(
        common::repo_root().join("tests/prometheus/alerts.test.yml"),
        prom.join("alerts.test.yml"),
    )
    .unwrap();
    let report = run(&["test", "rules", "alerts.test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");

    // Each alert has a unit test in the file.
    let tests = std::fs::read_to_string(prom.join("alerts.test.yml")).unwrap();
    let alerts: BTreeSet<String> = rules(&out)
        .into_iter()
        .filter(|r| r.2.get("alert").is_some())
        .map(|r| r.0)
        .collect();
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "alert {a} has no promtool unit test"
        );
    }
}

#[test]
fn every_expression_parses_and_names_only_contract_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let out = render(tmp.path());
    let rules = rules(&out);
    let mut known: BTreeSet<String> = BRIDGE_METRICS
        .iter()
        .chain(EXPORTER_METRICS)
        .map(|s| s.to_string())
        .collect();
    known.insert("up".into());
    known.extend(
        rules
            .iter()
            .filter(|r| r.2.get("record").is_some())
            .map(|r| r.0.clone()),
    );
    // The contract document lists every bridge and exporter metric used here.
    let contract = std::fs::read_to_string(common::repo_root().join("docs/contracts.md")).unwrap();
    for m in BRIDGE_METRICS.iter().chain(EXPORTER_METRICS) {
        let base = m.trim_end_matches("_bucket");
        assert!(
            contract.contains(base),
            "{base} is not in docs/contracts.md"
        );
    }

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("grafana/dashboards/mcp-overview.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<(String, String)> =
        rules.iter().map(|r| (r.0.clone(), r.1.clone())).collect();
    for (svc, e) in mcpctl::render::observability::dashboard_queries(&dashboard) {
        exprs.push((
            format!("dashboard {}", svc.unwrap_or_else(|| "stack".into())),
            e,
        ));
    }
    assert!(
        exprs.len() > 60,
        "expected rules and panel queries, got {}",
        exprs.len()
    );
    for (name, e) in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{name}: names no metric: {e}");
        for n in names {
            assert!(known.contains(&n), "{name}: unknown metric `{n}` in {e}");
        }
    }
}

#[test]
fn alerts_carry_for_severity_and_an_existing_runbook() {
    let tmp = tempfile::tempdir().unwrap();
    let out = render(tmp.path());
    for (name, _, rule) in rules(&out)
        .into_iter()
        .filter(|r| r.2.get("alert").is_some())
    {
        assert!(rule.get("for").is_some(), "{name}: no `for:`");
        let sev = rule["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            ["critical", "warning"].contains(&sev),
            "{name}: severity {sev:?}"
        );
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert_eq!(url, format!("runbooks/alerts/{name}.md"));
        let body = std::fs::read_to_string(common::repo_root().join(url))
            .unwrap_or_else(|_| panic!("{url} is missing"));
        for section in [
            "**Symptom:**",
            "**Check**",
            "**Causes**",
            "**Fix**",
            "```sh",
        ] {
            assert!(body.contains(section), "{url} lacks {section}");
        }
    }
}

#[test]
fn dashboard_has_a_row_per_service_stable_uids_and_no_placeholders_or_fallbacks() {
    let tmp = tempfile::tempdir().unwrap();
    let out = render(tmp.path());
    let raw = std::fs::read_to_string(out.join("grafana/dashboards/mcp-overview.json")).unwrap();
    assert!(
        !raw.contains("${DS_"),
        "datasource placeholders need import-time input"
    );
    assert!(
        !raw.contains("or vector(") && !raw.contains("absent("),
        "fallbacks hide missing data"
    );
    let d: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(d["uid"], "mcp-overview");
    let rows: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Stack",
            "filesystem",
            "monitoring",
            "memory",
            "fetch",
            "postgres",
            "github",
            "n8n",
            "playwright",
            "timescaledb"
        ]
    );
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "mcp-prometheus");
        }
    }
    for (svc, e) in mcpctl::render::observability::dashboard_queries(&d) {
        if let Some(svc) = svc {
            assert!(
                e.contains(&format!("service=\"{svc}\"")),
                "{svc} row query is not about {svc}: {e}"
            );
            assert!(
                e.contains("by (service"),
                "{svc} row query must give one series per service: {e}"
            );
        }
    }
    let ds = yaml(&out.join("grafana/provisioning/datasources/mcp.yml"));
    assert_eq!(ds["datasources"][0]["uid"], "mcp-prometheus");
    let provider = yaml(&out.join("grafana/provisioning/dashboards/mcp.yml"));
    assert_eq!(provider["providers"][0]["type"], "file");
}

#[test]
fn log_shipping_discovers_on_the_exact_managed_label_and_labels_no_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let out = render(tmp.path());
    // Promtail: typed parse of what it reads.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Filter {
        name: String,
        values: Vec<String>,
    }
    #[derive(serde::Deserialize)]
    struct Sd {
        host: String,
        filters: Vec<Filter>,
    }
    #[derive(serde::Deserialize)]
    struct Scrape {
        job_name: String,
        docker_sd_configs: Vec<Sd>,
        relabel_configs: Vec<serde_yaml_ng::Value>,
        pipeline_stages: Vec<serde_yaml_ng::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Promtail {
        scrape_configs: Vec<Scrape>,
        clients: Vec<serde_yaml_ng::Value>,
    }
    let p: Promtail = serde_yaml_ng::from_str(
        &std::fs::read_to_string(out.join("promtail/promtail.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(p.clients.len(), 1);
    let sc = &p.scrape_configs[0];
    assert_eq!(sc.job_name, "mcp-services");
    assert_eq!(sc.docker_sd_configs[0].host, "unix:///var/run/docker.sock");
    let f = &sc.docker_sd_configs[0].filters[0];
    assert_eq!(
        (f.name.as_str(), f.values.as_slice()),
        ("label", &["com.mcp.managed=true".to_string()][..])
    );
    assert!(
        !sc.docker_sd_configs[0]
            .filters
            .iter()
            .flat_map(|f| &f.values)
            .any(|v| v.contains('*')),
        "no label globs"
    );
    let targets: Vec<&str> = sc
        .relabel_configs
        .iter()
        .filter_map(|r| r["target_label"].as_str())
        .collect();
    for l in ["service", "revision", "mcp_type"] {
        assert!(targets.contains(&l), "promtail lacks the {l} label");
    }
    let all = serde_yaml_ng::to_string(&sc.pipeline_stages).unwrap() + &targets.join(",");
    assert!(
        !all.contains("session"),
        "session ids must not become labels"
    );

    // Alloy: the same discovery and labels, in Alloy's syntax.
    let alloy = std::fs::read_to_string(out.join("alloy/config.alloy")).unwrap();
    assert_eq!(
        alloy.matches('{').count(),
        alloy.matches('}').count(),
        "unbalanced braces"
    );
    assert!(alloy.contains("values = [\"com.mcp.managed=true\"]"));
    for l in ["\"service\"", "\"revision\"", "\"mcp_type\""] {
        assert!(
            alloy.contains(&format!("target_label  = {l}")),
            "alloy lacks {l}"
        );
    }
    for block in [
        "discovery.docker \"mcp\"",
        "discovery.relabel \"mcp\"",
        "loki.source.docker \"mcp\"",
        "loki.write \"default\"",
    ] {
        assert!(alloy.contains(block), "alloy lacks {block}");
    }
    assert!(
        !alloy.contains("target_label  = \"session") && !alloy.contains("session_id ="),
        "session ids must not become labels"
    );
}

#[path = "common/webhook.rs"]
mod webhook;

/// The default manifest with an `observability.alerting` section: receivers of every kind,
/// routes by severity, and the timers shortened to seconds (as tests use them).
fn alerting_manifest(
    dir: &Path,
    alertmanager: &str,
    webhook: &str,
    warning_hook: &str,
) -> std::path::PathBuf {
    let source = std::fs::read_to_string(common::repo_root().join("services.yaml")).unwrap();
    let block = format!(
        "observability:
  alerting:
    alertmanager: {alertmanager}
    receivers:
      oncall: {{webhook: {{url: \"{webhook}\"}}}}
      team: {{webhook: {{url: \"{warning_hook}\"}}}}
      mail:
        email:
          to: [ops@example.com, oncall@example.com]
          from: alertmanager@example.com
          smarthost: smtp.example.com:587
          username: alertmanager
          password: {{from_file: /etc/mcpctl/smtp-password}}
      chat: {{slack: {{url: {{from_file: /etc/mcpctl/slack-webhook}}, channel: \"#mcp\"}}}}
    routes: {{critical: [oncall, mail], warning: [team, chat]}}
    group_wait: 1s
    group_interval: 1s
    repeat_interval: 1h
"
    );
    assert!(source.contains("\nobservability:\n"));
    let text = source.replacen("\nobservability:\n", &format!("\n{block}"), 1);
    let path = dir.join("services.yaml");
    std::fs::write(&path, text).unwrap();
    let _ = std::os::unix::fs::symlink(common::repo_root().join("locks"), dir.join("locks"));
    path
}

fn render_with(dir: &Path, manifest: &Path) -> std::path::PathBuf {
    let out = run_mcpctl(
        dir,
        &[
            "-f",
            manifest.to_str().unwrap(),
            "render",
            "--out",
            "out",
            "--only",
            "observability",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("out")
}

#[test]
fn alertmanager_config_passes_amtool_routes_by_severity_and_holds_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let m = alerting_manifest(
        tmp.path(),
        "127.0.0.1:9093",
        "https://hooks.example.com/mcp",
        "https://hooks.example.com/team",
    );
    let out = render_with(tmp.path(), &m);
    let am = out.join("alertmanager/alertmanager.yml");
    let raw = std::fs::read_to_string(&am).unwrap();
    insta::assert_snapshot!("alertmanager.yml", &raw);
    assert!(raw.contains("auth_password_file: \"/etc/mcpctl/smtp-password\""));
    assert!(raw.contains("api_url_file: \"/etc/mcpctl/slack-webhook\""));
    assert!(
        !raw.contains("auth_password:"),
        "no password value, only its file"
    );

    // Prometheus sends to it.
    let prom = yaml(&out.join("prometheus/prometheus.yml"));
    assert_eq!(
        prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
        "127.0.0.1:9093"
    );
    // Without `alerting`, neither the file nor the Prometheus section exists.
    std::fs::create_dir_all(tmp.path().join("plain")).unwrap();
    let plain = render(&tmp.path().join("plain"));
    assert!(!plain.join("alertmanager").exists());
    assert!(yaml(&plain.join("prometheus/prometheus.yml"))
        .get("alerting")
        .is_none());

    if let Some(promtool) = common::tool("promtool", "promtool", &[]) {
        let o = Command::new(promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(out.join("prometheus"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    }
    let Some(amtool) = common::tool("amtool", "amtool", &[]) else {
        return;
    };
    let o = Command::new(&amtool)
        .arg("check-config")
        .arg(&am)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "amtool check-config:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    // Routing by severity, as Alertmanager itself resolves it.
    let route = |labels: &[&str]| {
        let o = Command::new(&amtool)
            .args(["config", "routes", "test", "--config.file"])
            .arg(&am)
            .args(labels)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
        text(&o.stdout).trim().to_string()
    };
    assert_eq!(
        route(&[
            "alertname=McpServiceDown",
            "severity=critical",
            "service=fetch"
        ]),
        "oncall,mail"
    );
    assert_eq!(
        route(&[
            "alertname=McpMemoryHigh",
            "severity=warning",
            "service=fetch"
        ]),
        "team,chat"
    );
    assert_eq!(route(&["alertname=Other", "severity=info"]), "unrouted");
}

#[test]
fn alerting_credentials_must_be_files_and_routes_must_name_receivers() {
    let tmp = tempfile::tempdir().unwrap();
    let m = alerting_manifest(
        tmp.path(),
        "127.0.0.1:9093",
        "https://hooks.example.com/mcp",
        "https://hooks.example.com/team",
    );
    let good = std::fs::read_to_string(&m).unwrap();
    for (from, to, expect) in [
        (
            "password: {from_file: /etc/mcpctl/smtp-password}",
            "password: {from_env: SMTP_PASSWORD}",
            "an alerting credential must be `{from_file: /absolute/path}`",
        ),
        (
            "password: {from_file: /etc/mcpctl/smtp-password}",
            "password: hunter2",
            "password",
        ),
        (
            "url: {from_file: /etc/mcpctl/slack-webhook}",
            "url: {from_file: slack-webhook}",
            "is not an absolute path",
        ),
        (
            "critical: [oncall, mail]",
            "critical: [oncal, mail]",
            "did you mean `oncall`?",
        ),
        (
            "group_wait: 1s",
            "group_wait: 1500ms",
            "whole number of seconds",
        ),
        (
            "\"https://hooks.example.com/mcp\"",
            "\"hooks.example.com/mcp\"",
            "is not an http(s) URL",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        std::fs::write(&m, good.replacen(from, to, 1)).unwrap();
        let out = run_mcpctl(tmp.path(), &["-f", m.to_str().unwrap(), "validate"]);
        let err = text(&out.stderr) + &text(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{to}: {err}");
        assert!(err.contains(expect), "{to}: expected {expect:?} in\n{err}");
        assert!(!err.contains("hunter2") || expect == "password", "{err}");
    }
}

/// A real Alertmanager (Debian's prometheus-alertmanager) with the rendered config: alerts posted
/// to its API reach the receiver of their severity, and while McpEdgeDown fires the per-service
/// alerts are held back.
#[test]
fn alertmanager_routes_by_severity_and_inhibits_service_alerts_while_the_edge_is_down() {
    let Some(bin) = common::tool("alertmanager", "prometheus-alertmanager", &[]) else {
        return;
    };
    let hooks = webhook::Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let m = alerting_manifest(
        tmp.path(),
        &format!("127.0.0.1:{port}"),
        &hooks.url("/critical"),
        &hooks.url("/warning"),
    );
    let out = render_with(tmp.path(), &m);
    let data = tmp.path().join("am-data");
    let log = tmp.path().join("alertmanager.log");
    let mut am = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            out.join("alertmanager/alertmanager.yml").display()
        ))
        .arg(format!("--storage.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut am);
    let api = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !rt
        .block_on(async { http.get(format!("{api}/-/ready")).send().await })
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "alertmanager not ready in 30 s:\n{}",
            common::log_tail(&log, 30)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let alert = |name: &str, severity: &str, service: Option<&str>| {
        let mut labels = serde_json::json!({"alertname": name, "severity": severity});
        if let Some(s) = service {
            labels["service"] = s.into();
        }
        serde_json::json!({"labels": labels, "annotations": {"runbook_url": format!("runbooks/alerts/{name}.md")}})
    };
    let r = rt
        .block_on(async {
            http.post(format!("{api}/api/v2/alerts"))
                .json(&serde_json::json!([
                    alert("McpEdgeDown", "critical", None),
                    alert("McpServiceDown", "critical", Some("fetch")),
                    alert("McpMemoryHigh", "warning", Some("memory")),
                    alert("McpExporterDown", "warning", None),
                ]))
                .send()
                .await
        })
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let names = |a: &[(String, String, serde_json::Value)], path: &str| -> BTreeSet<String> {
        a.iter()
            .filter(|(p, _, _)| p == path)
            .filter_map(|(_, _, a)| a["labels"]["alertname"].as_str().map(str::to_string))
            .collect()
    };
    let got = hooks
        .wait_for(std::time::Duration::from_secs(30), |a| {
            names(a, "/critical").contains("McpEdgeDown")
                && names(a, "/warning").contains("McpExporterDown")
        })
        .unwrap_or_else(|a| {
            panic!(
                "not delivered in 30 s: {a:?}\n{}",
                common::log_tail(&log, 30)
            )
        });
    // Give a held-back alert every chance to show up: several group intervals.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let all = hooks.alerts();
    assert_eq!(
        names(&all, "/critical"),
        BTreeSet::from(["McpEdgeDown".to_string()]),
        "{got:?}"
    );
    assert_eq!(
        names(&all, "/warning"),
        BTreeSet::from(["McpExporterDown".to_string()]),
        "{all:?}"
    );
    let edge = all
        .iter()
        .find(|(_, _, a)| a["labels"]["alertname"] == "McpEdgeDown")
        .unwrap();
    assert_eq!(edge.1, "firing");
    assert_eq!(
        edge.2["annotations"]["runbook_url"],
        "runbooks/alerts/McpEdgeDown.md"
    );
}
