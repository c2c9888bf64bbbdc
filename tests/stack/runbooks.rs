//! The runbooks' read-only commands, run against the full-stack fixture: every `mcpctl …` line in
//! a fenced block of `runbooks/**/*.md` or `README.md` (extracted and parsed as in
//! `tests/runbooks.rs`, placeholders substituted: `SERVICE` → `fetch`, …) whose parsed command
//! changes nothing is executed with the fixture's manifest and state directory, and must exit 0.
//!
//! Which commands run is decided from the PARSED command (`mcpctl::cli::Command`), not from text:
//!
//! - run: `validate`, `plan`, `status`, `history`, `logs` without `--follow`, `audit`, `token
//!   list` / `token bridge-file` (digests only) / `token show` (its output, a token, is never
//!   printed), `version`, `doctor`, `bases
//!   list`, `backup list`, `edge status`, `deploy --dry-run` (returns before the lock and
//!   before the exporter is touched), `completions`, `man` without `--out`, and `render` with
//!   `--out` redirected to a temporary directory (rendered there first when the line says
//!   `--check`, so the check compares like with like);
//! - not run, because they change the stack, its images or caches: `deploy`, `rollback`, `down`,
//!   `prune`, `build`, `bases build`, `vendor`, `images export|import` (gigabytes of tars),
//!   `edge up|replace`, `token rotate`, `cutover switch|revert|retire`;
//! - not run, because they need what the fixture does not have or run for minutes: `cutover`
//!   (services with a `legacy` endpoint, a LiteLLM; tests/cutover.rs), `backup`/`restore` (the
//!   drill in tests/backup.rs), `soak` (the fixture's own soak check covers it), `logs --follow`
//!   (streams until stopped), and the in-container servers (`bridge`, `docker-proxy`, `edge serve`).
//!
//! Identical command lines run once. Each is bounded to 120 s. With `--output json`, stdout must be
//! JSON. The check fails if fewer read-only commands were found than the runbooks show today, so
//! a broken extraction cannot pass by running nothing.

#[path = "../runbook_commands/mod.rs"]
mod runbook_commands;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use mcpctl::cli::Command as C;
use mcpctl::commands::token::TokenAction;
use mcpctl::commands::{backup::BackupCommand, bases::BasesAction, edge::EdgeCommand};

use super::Fixture;

const TIMEOUT: Duration = Duration::from_secs(120);

/// What to do with one documented command.
enum Plan {
    Run,
    /// `render`: with `--out` pointed at the temp dir; `true` = render there first (`--check`).
    Render(bool),
    /// Never print its stdout (a secret).
    RunQuiet,
    Skip(&'static str),
}

fn plan(cli: &mcpctl::cli::Cli) -> Plan {
    match &cli.command {
        C::Validate | C::Plan(_) | C::Status(_) | C::History(_) | C::Audit(_) | C::Version => {
            Plan::Run
        }
        C::Doctor(_) | C::Completions(_) => Plan::Run,
        C::Man(m) if m.out.is_none() => Plan::Run,
        C::Logs(l) if !l.follow => Plan::Run,
        C::Render(r) => Plan::Render(r.check),
        C::Deploy(d) if d.dry_run => Plan::Run,
        C::Bases(b) if matches!(b.action, None | Some(BasesAction::List)) => Plan::Run,
        C::Edge(e) if matches!(e.command, EdgeCommand::Status) => Plan::Run,
        C::Backup(b) if matches!(b.command, Some(BackupCommand::List(_))) => Plan::Run,
        C::Token(t) => match &t.action {
            None | Some(TokenAction::List | TokenAction::BridgeFile { .. }) => Plan::Run,
            Some(TokenAction::Show { .. }) => Plan::RunQuiet,
            Some(TokenAction::Rotate { .. }) => Plan::Skip("changes a token"),
        },
        C::Logs(_) => Plan::Skip("--follow streams until stopped"),
        C::Soak(_) => Plan::Skip("minutes of load (the fixture's soak check covers it)"),
        C::Cutover(_) => Plan::Skip(
            "needs services with a `legacy` endpoint and a LiteLLM, or changes routes (tests/cutover.rs)",
        ),
        C::Backup(_) | C::Restore(_) => {
            Plan::Skip("writes or restores a backup set (tests/backup.rs runs the runbooks' drill)")
        }
        C::Bridge(_) | C::DockerProxy(_) => Plan::Skip("an in-container server"),
        _ => Plan::Skip("changes the stack, its images or caches"),
    }
}

/// Run the read-only documented commands against the fixture; each must exit 0.
pub fn read_only_commands_succeed(fx: &Fixture) -> Result<()> {
    let commands = runbook_commands::all(&super::common::repo_root()).map_err(|p| {
        anyhow::anyhow!(
            "runbook commands that cannot be read:\n  {}",
            p.join("\n  ")
        )
    })?;
    let out_dir = tempfile::tempdir()?;
    let out = out_dir.path().to_string_lossy().into_owned();
    let mut seen = BTreeSet::new();
    let (mut ran, mut failures) = (Vec::new(), Vec::new());
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &commands {
        let cli = runbook_commands::parse(&c.argv)
            .map_err(|e| anyhow::anyhow!("{}: `{}` does not parse: {e}", c.at(), c.text))?;
        let mut args: Vec<String> = c.argv[1..].to_vec();
        let quiet = match plan(&cli) {
            Plan::Skip(why) => {
                *skipped.entry(why).or_default() += 1;
                continue;
            }
            Plan::Run => false,
            Plan::RunQuiet => true,
            Plan::Render(check) => {
                redirect_out(&mut args, &out);
                if check {
                    let first: Vec<String> =
                        args.iter().filter(|a| *a != "--check").cloned().collect();
                    run(fx, &first, false)
                        .with_context(|| format!("{}: rendering into {out} first", c.at()))?;
                }
                false
            }
        };
        if !seen.insert(args.clone()) {
            continue;
        }
        let t = Instant::now();
        match run(fx, &args, quiet) {
            Ok(()) => ran.push((args.join(" "), t.elapsed())),
            Err(e) => failures.push(format!("{}: `{}`: {e:#}", c.at(), c.text)),
        }
    }
    for (cmd, took) in &ran {
        eprintln!("  ok {:>6.2} s  mcpctl {cmd}", took.as_secs_f64());
    }
    eprintln!(
        "  {} distinct read-only runbook commands ran; documented commands not run: {skipped:?}",
        ran.len()
    );
    ensure!(
        failures.is_empty(),
        "{} runbook command(s) failed against the stack:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let verbs: BTreeSet<&str> = ran
        .iter()
        .filter_map(|(a, _)| a.split(' ').find(|w| !w.starts_with('-') && *w != "json"))
        .collect();
    for v in [
        "validate", "plan", "status", "history", "logs", "audit", "token", "doctor", "render",
        "edge", "deploy", "version",
    ] {
        ensure!(
            verbs.contains(v),
            "no read-only `mcpctl {v}` ran (ran: {verbs:?})"
        );
    }
    ensure!(ran.len() >= 25, "only {} read-only commands ran", ran.len());
    Ok(())
}

/// Point `--out DIR` (or `--out=DIR`) at `dir`; add it when the line has none.
fn redirect_out(args: &mut Vec<String>, dir: &str) {
    if let Some(i) = args.iter().position(|a| a == "--out") {
        if i + 1 < args.len() {
            args[i + 1] = dir.to_string();
            return;
        }
    }
    args.retain(|a| !a.starts_with("--out="));
    args.push("--out".into());
    args.push(dir.into());
}

fn run(fx: &Fixture, args: &[String], quiet: bool) -> Result<()> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = fx
        .cmd(&refs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning mcpctl")?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut b);
        b
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {} s (killed)", TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    let shown = if quiet {
        "(not shown: a secret)"
    } else {
        stdout.as_str()
    };
    ensure!(
        status.success(),
        "exit {}\nstdout: {}\nstderr: {}",
        status
            .code()
            .map(|c| c.to_string())
            .unwrap_or("by signal".into()),
        tail(shown),
        tail(&stderr)
    );
    if args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
    {
        let whole = serde_json::from_str::<serde_json::Value>(stdout.trim()).is_ok();
        let lines = stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok());
        ensure!(
            !stdout.trim().is_empty() && (whole || lines),
            "--output json printed something that is not JSON: {}",
            tail(shown)
        );
    }
    Ok(())
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
