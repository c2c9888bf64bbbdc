//! Alerting end to end (issue 22): a real Prometheus and a real Alertmanager (Debian's
//! prometheus-alertmanager), both with the configs `mcpctl render` writes for the fixture's
//! manifest plus an `observability.alerting` section pointing at a webhook receiver in this test.
//! A stopped service must reach the receiver as a firing notification and, once it is started
//! again, as a resolved one, both carrying the runbook link.
//!
//! One deliberate change to the rendered files: the `for:` of McpServiceMissing (2m) is shortened
//! to 5s here so the check takes seconds; its full duration is covered by the promtool unit tests
//! (tests/prometheus/alerts.test.yml). Alertmanager's timers come from the manifest (1s).

use super::*;

#[path = "../common/webhook.rs"]
mod webhook;

const VICTIM: &str = "fetch";
const ALERT: &str = "McpServiceMissing";

/// The fixture's manifest with an `alerting` section routing everything to `hook_url`.
fn manifest_with_alerting(
    fx: &Fixture,
    dir: &std::path::Path,
    am: &str,
    hook_url: &str,
) -> Result<PathBuf> {
    let source = std::fs::read_to_string(fx.file())?;
    let block = format!(
        "observability:\n  alerting:\n    alertmanager: {am}\n    receivers:\n      hook: {{webhook: {{url: \"{hook_url}\"}}}}\n    routes: {{critical: [hook], warning: [hook]}}\n    group_wait: 1s\n    group_interval: 1s\n    repeat_interval: 1h\n"
    );
    ensure!(
        source.contains("\nobservability:\n"),
        "the fixture manifest has no observability section"
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join("services.yaml");
    std::fs::write(
        &path,
        source.replacen("\nobservability:\n", &format!("\n{block}"), 1),
    )?;
    let locks = dir.join("locks");
    if !locks.exists() {
        std::os::unix::fs::symlink(repo_root().join("locks"), locks)?;
    }
    Ok(path)
}

fn spawn(cmd: &mut Command, log: &std::path::Path, what: &str) -> Result<Killed> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).context("creating a log file")?)
        .spawn()
        .with_context(|| format!("starting {what} (installed by scripts/setup)"))?;
    Ok(Killed(child))
}

/// Firing, then resolved, notifications of McpServiceMissing for a service this check stops and
/// starts again; the service answers again afterwards.
pub fn alerts_reach_a_receiver(fx: &Fixture) -> Result<()> {
    let hooks = webhook::Receiver::start();
    let dir = fx.dir.path().join("alerting");
    let am_port = free_port();
    let prom_port = free_port();
    let manifest = manifest_with_alerting(
        fx,
        &dir,
        &format!("127.0.0.1:{am_port}"),
        &hooks.url("/hook"),
    )?;
    let out = dir.join("rendered");
    must(
        Command::new(mcpctl())
            .arg("-f")
            .arg(&manifest)
            .args(["render", "--only", "observability", "--out"])
            .arg(&out)
            .env_remove("MCPCTL_FILE"),
    );
    let rules = out.join("prometheus/rules/mcp-alerts.yml");
    let text_rules = std::fs::read_to_string(&rules)?;
    let marker = format!("      - alert: {ALERT}\n        expr: absent(up{{job=\"mcp-bridges\",service=\"{VICTIM}\"}})\n        for: 2m\n");
    ensure!(
        text_rules.contains(&marker),
        "the rendered rules have no {ALERT} for {VICTIM} in the expected shape"
    );
    std::fs::write(
        &rules,
        text_rules.replacen(&marker, &marker.replace("for: 2m", "for: 5s"), 1),
    )?;

    let am_log = dir.join("alertmanager.log");
    let prom_log = dir.join("prometheus.log");
    let _am = spawn(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                out.join("alertmanager/alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
        &am_log,
        "prometheus-alertmanager",
    )?;
    let _prom = spawn(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                out.join("prometheus/prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
        &prom_log,
        "prometheus",
    )?;
    let logs = || {
        format!(
            "\nalertmanager:\n{}\nprometheus:\n{}",
            common::log_tail(&am_log, 20),
            common::log_tail(&prom_log, 20)
        )
    };

    // Prometheus scrapes the victim and knows an Alertmanager before anything is stopped.
    let api = format!("http://127.0.0.1:{prom_port}");
    let ready = rt().block_on(async {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up: Value = match http
                .get(format!("{api}/api/v1/query"))
                .query(&[(
                    "query",
                    format!("up{{job=\"mcp-bridges\",service=\"{VICTIM}\"}} == 1"),
                )])
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or(json!({})),
                Err(_) => json!({}),
            };
            let ams: Value = match http.get(format!("{api}/api/v1/alertmanagers")).send().await {
                Ok(r) => r.json().await.unwrap_or(json!({})),
                Err(_) => json!({}),
            };
            let scraped = up["data"]["result"]
                .as_array()
                .is_some_and(|r| r.len() == 1);
            let connected = ams["data"]["activeAlertmanagers"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            if scraped && connected {
                return Ok::<_, anyhow::Error>(());
            }
            ensure!(
                Instant::now() < deadline,
                "after 90 s: victim scraped {scraped}, alertmanager known {connected}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    ready.map_err(|e| anyhow::anyhow!("{e:#}{}", logs()))?;
    // The victim's alert as the receiver got it: (status, startsAt, alert). A firing that started
    // before the stop (Prometheus' start-up, before discovery) is not the one this check causes;
    // the resolved notification must be of the very alert that fired (same startsAt).
    let victim_alerts = |h: &webhook::Receiver| -> Vec<(String, String, Value)> {
        h.alerts()
            .into_iter()
            .filter(|(_, _, a)| {
                a["labels"]["alertname"] == ALERT && a["labels"]["service"] == VICTIM
            })
            .map(|(_, status, a)| {
                (
                    status,
                    a["startsAt"].as_str().unwrap_or_default().to_string(),
                    a,
                )
            })
            .collect()
    };
    let before: std::collections::BTreeSet<String> = victim_alerts(&hooks)
        .into_iter()
        .map(|(_, at, _)| at)
        .collect();

    let container = fx.container(VICTIM);
    let stopped_at = Instant::now();
    must(Command::new("docker").args(["stop", "--time", "5", &container]));
    // Whatever happens next, the service is started again before this check returns.
    let fired = {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some((_, _, a)) = victim_alerts(&hooks)
                .into_iter()
                .find(|(status, at, _)| status == "firing" && !before.contains(at))
            {
                break Ok(a);
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "no firing {ALERT} for {VICTIM} within 90 s of the stop; received: {:?}{}",
                    victim_alerts(&hooks),
                    logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let fired_s = stopped_at.elapsed().as_secs_f64();
    let fired_at = fired
        .as_ref()
        .ok()
        .and_then(|a| a["startsAt"].as_str().map(str::to_string));
    must(Command::new("docker").args(["start", &container]));
    let started_at = Instant::now();
    let resolved = if fired.is_err() {
        Err(anyhow::anyhow!("nothing fired, so nothing to resolve"))
    } else {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some((_, _, a)) = victim_alerts(&hooks).into_iter().find(|(status, at, _)| {
                status == "resolved" && Some(at.as_str()) == fired_at.as_deref()
            }) {
                break Ok(a);
            }
            if Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "no resolved {ALERT} for {VICTIM} within 90 s of the restart; received: {:?}{}",
                    victim_alerts(&hooks),
                    logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let resolved_s = started_at.elapsed().as_secs_f64();
    // The service answers again (later checks use it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = rt().block_on(async {
            let mut s = session(&fx.base(VICTIM)).await?;
            let n = s
                .list_tools()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .len();
            s.close().await;
            Ok::<_, anyhow::Error>(n)
        });
        match ok {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{VICTIM} after the restart")))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
    let fired = fired?;
    let resolved = resolved?;
    let runbook = format!("runbooks/alerts/{ALERT}.md");
    for (what, a) in [("firing", &fired), ("resolved", &resolved)] {
        ensure!(
            a["annotations"]["runbook_url"] == runbook.as_str(),
            "the {what} notification lacks the runbook link {runbook}: {a}"
        );
        ensure!(
            a["labels"]["severity"] == "critical",
            "{what}: severity {}",
            a["labels"]["severity"]
        );
    }
    eprintln!(
        "  {VICTIM} stopped: {ALERT} firing at the receiver after {fired_s:.1} s; started: resolved after {resolved_s:.1} s; runbook {runbook}"
    );
    Ok(())
}
