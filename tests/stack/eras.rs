//! Both MCP eras against every service of the stack (issue 20, tests): the Python SDK 2.x client
//! (`tests/bridge/mcp2/client.py probe-service`, in the 2.x venv `scripts/bridge-envs mcp2` makes,
//! as the bridge tier and scripts/bench-bridge find it) in its default `auto` mode and pinned to
//! 2026-07-28, with mcpctl's bearer token: tools/list holds the manifest's expected tools and the
//! service's first non-mutating smoke step passes. A shared service answers both modes in
//! 2026-07-28; a per_session one is served in auto mode after the fallback to `initialize`, and a
//! client pinned to 2026-07-28 is refused cleanly (−32600 naming per_session). The legacy 1.x and
//! mcpctl clients are the other checks of this fixture. A missing 2.x venv fails the check.

use super::*;
use mcpctl::manifest::SessionModel;

/// Longest one client run may take (connect, tools/list, one smoke call: playwright's browser).
const CLIENT_DEADLINE: Duration = Duration::from_secs(180);

/// The 2.x client's python: `scripts/bridge-envs mcp2` (builds the venv when missing, a few ms
/// when present) prints `export MCP2_PYTHON=…`.
fn mcp2_python() -> Result<PathBuf> {
    let out = Command::new(repo_root().join("scripts/bridge-envs"))
        .arg("mcp2")
        .stdin(Stdio::null())
        .output()
        .context("running scripts/bridge-envs mcp2")?;
    ensure!(
        out.status.success(),
        "scripts/bridge-envs mcp2 failed (the Python SDK 2.x venv is required):\n{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export MCP2_PYTHON="))
        .map(|p| p.trim().trim_matches('\'').to_string())
        .with_context(|| format!("scripts/bridge-envs mcp2 named no MCP2_PYTHON: {stdout}"))?;
    let path = PathBuf::from(path);
    ensure!(
        path.is_file(),
        "MCP2_PYTHON {} is not a file (scripts/bridge-envs mcp2)",
        path.display()
    );
    Ok(path)
}

/// One `client.py probe-service` run: its JSON line. The token goes through the environment
/// (`MCP2_TOKEN`), not the command line.
fn probe(
    python: &PathBuf,
    url: &str,
    mode: &str,
    expect: &[String],
    call: Option<(&str, &Value)>,
) -> Result<Value> {
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/bridge/mcp2/client.py"))
        .args(["probe-service", url, "--mode", mode, "--expect"])
        .arg(expect.join(","))
        .env("MCP2_TOKEN", token())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((tool, args)) = call {
        cmd.args(["--call", tool, "--args", &args.to_string()]);
    }
    let mut child = cmd.spawn().context("starting the 2.x client")?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > CLIENT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "client.py probe-service {url} --mode {mode}: no result within {CLIENT_DEADLINE:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    let stdout = text(&out.stdout);
    ensure!(
        out.status.success(),
        "client.py probe-service {url} --mode {mode} exited {}:\n{}",
        out.status,
        text(&out.stderr)
            .chars()
            .rev()
            .take(3000)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>()
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("client.py printed {stdout:?}"))
}

/// The outcome of one mode against one service, for the table.
struct Run {
    era: String,
    ok: bool,
    tools: usize,
    ms: f64,
}

/// A run that must have worked: connected in `want_era`, every expected tool listed (and at
/// least `min`), the smoke call (when one was made) met its `expect`.
fn judge_served(
    name: &str,
    mode: &str,
    want_era: &str,
    svc: &mcpctl::manifest::Service,
    smoke: Option<&mcpctl::manifest::SmokeStep>,
    r: &Value,
) -> Result<Run> {
    ensure!(
        r["ok"] == true,
        "{name} --mode {mode}: {} (code {})",
        r["error"],
        r["error_code"]
    );
    let era = r["era"].as_str().unwrap_or("?").to_string();
    ensure!(
        era == want_era,
        "{name} --mode {mode}: answered in the {era} era ({}), expected {want_era}",
        r["protocol_version"]
    );
    let missing: Vec<&Value> = r["missing"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    ensure!(
        missing.is_empty(),
        "{name} --mode {mode}: tools missing: {missing:?}"
    );
    let tools = r["tools"].as_array().map_or(0, Vec::len);
    ensure!(
        tools >= svc.health.expect_tools.min,
        "{name} --mode {mode}: {tools} tools, expected at least {}",
        svc.health.expect_tools.min
    );
    if let Some(step) = smoke {
        let c = &r["call"];
        let is_error = c["is_error"].as_bool().unwrap_or(true);
        let text = c["text"].as_str().unwrap_or_default();
        let want_error = step.expect.is_error.unwrap_or(false);
        ensure!(
            is_error == want_error,
            "{name} --mode {mode}: {} is_error {is_error}, expected {want_error}: {text}",
            step.tool
        );
        if let Some(want) = &step.expect.contains {
            ensure!(
                text.contains(want.as_str()),
                "{name} --mode {mode}: {}: {want:?} not in {text}",
                step.tool
            );
        }
    }
    Ok(Run {
        era,
        ok: true,
        tools,
        ms: r["ms"].as_f64().unwrap_or(0.0),
    })
}

pub fn sdk2_speaks_both_eras_to_every_service(fx: &Fixture) -> Result<()> {
    let python = mcp2_python()?;
    let mut rows = vec![
        "| service | session model | auto → era | pinned 2026-07-28 | tools | smoke | ms (auto / pinned) |"
            .to_string(),
        "|---|---|---|---|---|---|---|".to_string(),
    ];
    let mut problems = Vec::new();
    for name in fx.mcp_services() {
        let svc = &fx.manifest.services[&name];
        let url = format!("{}/mcp", fx.base(&name));
        let expect = &svc.health.expect_tools.include;
        let smoke = svc.health.smoke.iter().find(|s| !s.mutates);
        let call = smoke.map(|s| (s.tool.as_str(), &s.args));
        let per_session = svc.session_model == SessionModel::PerSession;
        let r: Result<String> = (|| {
            // auto: discover first; per_session answers −32600, so initialize takes over.
            let auto = probe(&python, &url, "auto", expect, call)?;
            let want = if per_session { "legacy" } else { "modern" };
            let a = judge_served(&name, "auto", want, svc, smoke, &auto)?;
            let pinned = probe(&python, &url, "2026-07-28", expect, call)?;
            let (pinned_cell, pinned_ms) = if per_session {
                let why = pinned["error"].as_str().unwrap_or_default();
                ensure!(
                    pinned["ok"] == false,
                    "{name} --mode 2026-07-28: a per_session service served a pinned modern client: {pinned}"
                );
                ensure!(
                    pinned["error_code"] == -32600 && why.contains("per_session"),
                    "{name} --mode 2026-07-28: not refused cleanly (want −32600 naming per_session): {why} (code {})",
                    pinned["error_code"]
                );
                (
                    "refused (−32600: per_session, legacy sessions only)".to_string(),
                    pinned["ms"].as_f64().unwrap_or(0.0),
                )
            } else {
                let p = judge_served(&name, "2026-07-28", "modern", svc, smoke, &pinned)?;
                ensure!(
                    p.tools == a.tools,
                    "{name}: {} tools pinned to 2026-07-28, {} in auto mode",
                    p.tools,
                    a.tools
                );
                (if p.ok { "ok" } else { "failed" }.to_string(), p.ms)
            };
            Ok(format!(
                "| {name} | {} | {} | {pinned_cell} | {} | {} | {:.0} / {:.0} |",
                if per_session { "per_session" } else { "shared" },
                a.era,
                a.tools,
                smoke.map_or("–".to_string(), |s| format!("`{}` ok", s.tool)),
                a.ms,
                pinned_ms
            ))
        })();
        match r {
            Ok(row) => rows.push(row),
            Err(e) => {
                rows.push(format!("| {name} | | FAILED | | | | |"));
                problems.push(format!("{e:#}"));
            }
        }
    }
    eprintln!("{}", rows.join("\n"));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}
