//! `mcpctl soak (--hours N | --duration D) [SERVICE...]`: drive a bounded load of real,
//! non-mutating MCP calls at the services' published ports, then judge the SLOs; exit 6 on any
//! breach, 130 on Ctrl-C (the report of what ran is written first). `--resume` continues the run
//! recorded in `<state>/soak/checkpoint.json`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::engine::docker::DockerEngine;
use crate::error::{CommandError, ExitCode};
use crate::output::{self, progress::Bar, Render};
use crate::settings::Settings;
use crate::soak::driver::{self, Checkpoint, Ending, Progress, RunContext, State};
use crate::soak::report::{self, Status};
use crate::soak::{self as domain, SoakOptions, Targets};

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Only these services (default: every MCP service with a published port).
    pub services: Vec<String>,
    /// Length of the run in hours (e.g. 24, 0.5).
    #[arg(long, conflicts_with = "duration")]
    pub hours: Option<f64>,
    /// Length of the run (e.g. 10m, 90s, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Tool calls per second over all services.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Calls in flight at most (a tick finding none free is counted as skipped).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Long-lived sessions held for the whole run, spread over the services; every other call of
    /// a service uses one, the rest open a new session per call (LiteLLM's pattern).
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Now and then stop (kill or gracefully) one service container of this project and start
    /// it again; availability is counted honestly and recovery time reported. Needs Docker.
    #[arg(long)]
    pub chaos: bool,
    /// Continue the interrupted run recorded in <state>/soak/checkpoint.json, with its recorded
    /// services and settings (only --report-dir may be changed).
    #[arg(long, conflicts_with_all = ["hours", "duration"])]
    pub resume: bool,
    /// Where report.json, report.md and chart.svg go [default: <state>/soak/<timestamp>/].
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Bound of every MCP request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
    /// One tools/list per service this often (coverage).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub coverage_interval: Duration,
    /// Bridge /metrics, container memory and a timeline point this often.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Checkpoint this often (and at the end).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// After the load, how long bridge sessions and child processes may take to return to their
    /// baseline before they count as leaked.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub leak_grace: Duration,
    /// Chaos: shortest pause between two actions.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub chaos_min: Duration,
    /// Chaos: longest pause between two actions.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub chaos_max: Duration,
    /// Memory-growth SLO: ignore each container's first this long (from its first sample or a
    /// restart) before fitting its slope.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub memory_warm_up: Duration,
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn options(args: &SoakArgs) -> Result<SoakOptions, CommandError> {
    let duration = match (args.hours, args.duration) {
        (Some(h), None) if h.is_finite() && h > 0.0 && h <= 24.0 * 365.0 => {
            Duration::from_secs_f64(h * 3600.0)
        }
        (Some(h), None) => {
            return Err(CommandError::usage(format!(
                "--hours {h}: give a positive number of hours"
            )))
        }
        (None, Some(d)) if !d.is_zero() => d,
        _ => {
            return Err(CommandError::usage(
                "soak needs a length: --hours N or --duration 10m (or --resume)",
            ))
        }
    };
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 10_000.0) {
        return Err(CommandError::usage(
            "--rate must be between 0 and 10000 calls/s",
        ));
    }
    if args.concurrency == 0 || args.concurrency > 4096 {
        return Err(CommandError::usage(
            "--concurrency must be between 1 and 4096",
        ));
    }
    if args.sessions > 4096 {
        return Err(CommandError::usage("--sessions must be at most 4096"));
    }
    for (name, d) in [
        ("--call-timeout", args.call_timeout),
        ("--coverage-interval", args.coverage_interval),
        ("--sample-interval", args.sample_interval),
        ("--checkpoint-interval", args.checkpoint_interval),
        ("--chaos-min", args.chaos_min),
        ("--chaos-max", args.chaos_max),
    ] {
        if d < Duration::from_millis(100) {
            return Err(CommandError::usage(format!(
                "{name} must be at least 100ms"
            )));
        }
    }
    Ok(SoakOptions {
        duration,
        rate: args.rate,
        concurrency: args.concurrency,
        sessions: args.sessions,
        chaos: args.chaos,
        call_timeout: args.call_timeout,
        coverage_interval: args.coverage_interval,
        sample_interval: args.sample_interval,
        checkpoint_interval: args.checkpoint_interval,
        leak_grace: args.leak_grace,
        chaos_min: args.chaos_min,
        chaos_max: args.chaos_max,
        memory_warm_up: args.memory_warm_up,
    })
}

fn progress_text(p: &Progress) -> String {
    let fmt =
        |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
    format!(
        "elapsed {} · remaining {} · {} calls · {} errors · availability {} · p95 {} · memory {} · sessions {}",
        fmt(p.elapsed),
        fmt(p.remaining),
        p.calls,
        p.errors,
        p.availability
            .map(|a| format!("{:.3} %", a * 100.0))
            .unwrap_or_else(|| "–".into()),
        p.p95_ms
            .map(|v| format!("{v:.1} ms"))
            .unwrap_or_else(|| "–".into()),
        p.memory_bytes
            .map(|b| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64))
            .unwrap_or_else(|| "not measured".into()),
        p.sessions_active
            .map(|v| format!("{v}"))
            .unwrap_or_else(|| "–".into()),
    )
}

/// The soak report (its JSON is the report itself) and where its files were written.
#[derive(Serialize)]
#[serde(transparent)]
struct Summary<'a> {
    report: &'a report::Report,
    #[serde(skip)]
    files: Vec<PathBuf>,
}

impl Render for Summary<'_> {
    fn human(&self) -> String {
        let report = self.report;
        let rows = report
            .slos
            .iter()
            .map(|s| {
                vec![
                    s.slo.clone(),
                    s.service.clone().unwrap_or_else(|| "stack".into()),
                    s.target.clone(),
                    s.actual.clone(),
                    match s.status {
                        Status::Pass => "pass".into(),
                        Status::Fail => "FAIL".into(),
                        Status::NotMeasured => "not measured".into(),
                    },
                ]
            })
            .collect();
        let t = &report.totals;
        format!(
            "{}\n\n{} calls in {:.0} s, {} errors; report: {}",
            output::table(&["SLO", "SERVICE", "TARGET", "MEASURED", "RESULT"], rows),
            t.calls,
            report.elapsed_s,
            t.errors,
            self.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

pub fn run(settings: &Settings, args: &SoakArgs) -> anyhow::Result<ExitCode> {
    let loaded = crate::manifest::load_checked(settings)?;
    let manifest = loaded.manifest;
    let state_dir = settings.state_dir(&manifest.project);
    let checkpoint_path = state_dir.join("soak").join("checkpoint.json");
    let now = timestamp();
    let mut ckpt = if args.resume {
        let mut c = Checkpoint::read(&checkpoint_path).map_err(|e| {
            CommandError::usage(format!(
                "--resume: cannot read {}: {e}; start a new run with --hours or --duration",
                checkpoint_path.display()
            ))
        })?;
        if c.finished {
            return Err(CommandError::usage(format!(
                "--resume: the run in {} finished (report in {}); start a new one",
                checkpoint_path.display(),
                c.report_dir.display()
            ))
            .into());
        }
        if let Some(dir) = &args.report_dir {
            c.report_dir = dir.clone();
        }
        c.segments.push(now.clone());
        c.interrupted = false;
        c
    } else {
        let options = options(args)?;
        if let Ok(old) = Checkpoint::read(&checkpoint_path) {
            if !old.finished {
                tracing::warn!(
                    "replacing the unfinished run started {} ({:.0} s done; its report so far is in {})",
                    old.started_at,
                    old.elapsed_s,
                    old.report_dir.display()
                );
            }
        }
        if options.chaos && options.chaos_min > options.chaos_max {
            return Err(CommandError::usage("--chaos-min must not exceed --chaos-max").into());
        }
        let targets = domain::targets(&manifest, &args.services).map_err(CommandError::usage)?;
        let report_dir = args.report_dir.clone().unwrap_or_else(|| {
            state_dir
                .join("soak")
                .join(now.replace([':', '-'], "").replace('T', "-"))
        });
        Checkpoint {
            version: 1,
            project: manifest.project.clone(),
            started_at: now.clone(),
            report_dir,
            options,
            targets,
            prometheus_url: manifest.observability.prometheus_url.clone(),
            elapsed_s: 0.0,
            segments: vec![now.clone()],
            finished: false,
            interrupted: false,
            state: State::default(),
        }
    };
    ckpt.report_dir = std::path::absolute(&ckpt.report_dir).unwrap_or(ckpt.report_dir.clone());
    // mcpctl's token for each service (never in the checkpoint: set again on --resume).
    for t in &mut ckpt.targets {
        t.token = crate::auth::client_token(&manifest, &t.name, &state_dir)?
            .map(crate::auth::Bearer::new);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The run's whole length (a resumed run's bar starts where the checkpoint left it).
    let bar = Bar::seconds(ckpt.options.duration, format!("soak {}", ckpt.project));
    let label_prefix = manifest.label_prefix.clone();
    let project = manifest.project.clone();
    let chaos = ckpt.options.chaos;
    let ran = rt.block_on(async {
        let engine =
            match tokio::time::timeout(Duration::from_secs(5), DockerEngine::connect()).await {
                Ok(Ok(e)) => Some(e),
                Ok(Err(e)) => {
                    tracing::info!("memory and restarts not measured: {e}");
                    None
                }
                Err(_) => {
                    tracing::info!(
                        "memory and restarts not measured: the Docker engine did not answer"
                    );
                    None
                }
            };
        if chaos && engine.is_none() {
            return Err(CommandError::usage(
                "--chaos stops and starts this project's containers: it needs the Docker engine",
            )
            .into());
        }
        tracing::info!(
            services = ckpt.targets.len(),
            remaining_s = ckpt.remaining().as_secs(),
            "soak started; checkpoint {}",
            checkpoint_path.display()
        );
        let mut last_log = std::time::Instant::now();
        let mut on_progress = |p: &Progress| {
            if bar.is_visible() {
                bar.set_position(p.elapsed.as_secs());
                bar.set_message(progress_text(p));
            } else if last_log.elapsed() >= Duration::from_secs(60) {
                // No terminal (nohup, CI): a log line a minute instead of a live line.
                last_log = std::time::Instant::now();
                tracing::info!("soak: {}", progress_text(p));
            }
        };
        driver::run(
            ckpt,
            RunContext {
                engine: engine.as_ref(),
                label_prefix,
                project,
                checkpoint_path: checkpoint_path.clone(),
            },
            &mut on_progress,
        )
        .await
    });
    drop(bar);
    let (ckpt, ending) = ran?;
    let report = report::build(&ckpt, Targets::from_manifest(&manifest));
    let files = report.write(&ckpt.report_dir)?;
    output::emit(
        settings,
        &Summary {
            report: &report,
            files,
        },
    )?;
    if ending == Ending::Interrupted {
        output::diagnostic(&format!(
            "interrupted: the report covers the {:.0} s that ran; continue with `mcpctl soak --resume`",
            report.elapsed_s
        ));
        return Ok(ExitCode::Interrupted);
    }
    let breaches = report.breaches();
    if !breaches.is_empty() {
        let list: Vec<String> = breaches
            .iter()
            .map(|s| {
                format!(
                    "{}{}: {} (target {})",
                    s.slo,
                    s.service
                        .as_ref()
                        .map(|n| format!(" of {n}"))
                        .unwrap_or_default(),
                    s.actual,
                    s.target
                )
            })
            .collect();
        return Err(CommandError::new(
            ExitCode::SloBreach,
            format!(
                "SLO breach: {}; see {}",
                list.join("; "),
                ckpt.report_dir.join("report.md").display()
            ),
        )
        .into());
    }
    Ok(ExitCode::Ok)
}
