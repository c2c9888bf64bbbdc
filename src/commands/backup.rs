//! `mcpctl backup [SERVICE...] [--out DIR]`, `backup list`, `backup verify SET` and
//! `mcpctl restore SET [SERVICE...]`: the work is in `crate::backup`; this file parses, locks,
//! records in the ledger and reports.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{connect, open_project, open_project_for, release_lock, runtime, take_lock};
use crate::backup::{self, ops};
use crate::error::{CommandError, ExitCode};
use crate::output::{self, Render};
use crate::rollout::ledger::{now_rfc3339, Entry, Ledger};
use crate::rollout::lock::LockInfo;
use crate::settings::Settings;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    /// Directory the set is written under (default: the manifest's `backup.dir`, else
    /// `<state dir>/backups/sets`). Copy sets off this host.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Remove a lock left by another run first.
    #[arg(long)]
    pub force_unlock: bool,
    /// Only these services (a database service: all its databases; others: their named
    /// volumes). Default: every service. A service named like a subcommand: `backup -- list`.
    pub services: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// The complete sets in the backup directory, newest first.
    List(ListArgs),
    /// Check every part's size and SHA-256, then restore every database dump into a throwaway
    /// PostgreSQL (no network) and report its tables and exact row counts; exit 1 on any problem.
    Verify(VerifyArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The backup directory (default as for `backup`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A set directory written by `mcpctl backup`.
    #[arg(value_name = "SET")]
    pub set: PathBuf,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A set directory written by `mcpctl backup` (checked against its backup.json first; a
    /// damaged set restores nothing).
    #[arg(value_name = "SET")]
    pub set: PathBuf,
    /// Only these services' data (a database service: all its databases; a consumer: the
    /// databases it names). Default: everything in the set.
    pub services: Vec<String>,
    /// Restore a database whose schema level in the set is above the running one.
    #[arg(long)]
    pub allow_newer_schema: bool,
    /// Allow stopping services to restore their volumes.
    #[arg(long)]
    pub allow_downtime: bool,
    /// Only bring back the state (install key, ledger, tokens) when this install has no key;
    /// leave every database and volume as it is.
    #[arg(long, conflicts_with_all = ["services", "allow_newer_schema", "allow_downtime"])]
    pub state_only: bool,
    /// Why: recorded on the lock and in the ledger.
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Remove a lock left by another run first.
    #[arg(long)]
    pub force_unlock: bool,
}

pub fn run(settings: &Settings, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(BackupCommand::List(a)) => list(settings, a),
        Some(BackupCommand::Verify(a)) => verify(settings, a),
        None => create(settings, args),
    }
}

#[derive(Serialize)]
struct CreatedReport {
    event: &'static str,
    #[serde(flatten)]
    created: ops::Created,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl Render for CreatedReport {
    fn human(&self) -> String {
        let m = &self.created.manifest;
        let mut s = format!(
            "backup set {} ({} parts, {}) in {:.1} s",
            self.created.path.display(),
            m.parts.len(),
            mb(m.parts.iter().map(|p| p.bytes).sum()),
            self.created.seconds
        );
        for p in &self.created.pruned {
            s.push_str(&format!("\nremoved by retention: {}", p.display()));
        }
        s.push_str("\nnext: `mcpctl backup verify ");
        s.push_str(&self.created.path.display().to_string());
        s.push_str("`, then copy the set off this host");
        s
    }
}

/// Take a set under the lock (so no deploy replaces a database mid-dump); used by `down
/// --volumes` too.
pub(crate) async fn take(
    settings: &Settings,
    project: &crate::rollout::Project,
    engine: &crate::engine::docker::DockerEngine,
    services: &[String],
    out: Option<&std::path::Path>,
) -> anyhow::Result<ops::Created> {
    let dir = backup::sets_dir(project, out);
    let say = output::say(settings);
    ops::create(
        engine,
        project,
        &settings.manifest_path,
        services,
        &dir,
        &say,
    )
    .await
}

fn create(settings: &Settings, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let ledger = Ledger::new(&project.state_dir);
        let me = LockInfo::current("backup", None);
        let held = take_lock(&engine, &project, settings, &me, args.force_unlock, &ledger).await?;
        let result = take(
            settings,
            &project,
            &engine,
            &args.services,
            args.out.as_deref(),
        )
        .await;
        release_lock(&engine, &project, &held).await;
        ledger.append(&Entry {
            ts: now_rfc3339(),
            event: "backup".into(),
            command: me.command.clone(),
            who: me.who.clone(),
            host: me.host.clone(),
            pid: me.pid,
            outcome: if result.is_ok() { "ok" } else { "failed" }.into(),
            detail: Some(match &result {
                Ok(c) => c.path.display().to_string(),
                Err(e) => format!("{e:#}"),
            }),
            ..Default::default()
        })?;
        let created = result?;
        output::emit(
            settings,
            &CreatedReport {
                event: "backup",
                created,
            },
        )?;
        Ok(ExitCode::Ok)
    })
}

#[derive(Serialize)]
struct ListReport {
    dir: PathBuf,
    sets: Vec<backup::SetSummary>,
}

impl Render for ListReport {
    fn human(&self) -> String {
        if self.sets.is_empty() {
            return format!("no backup sets in {}", self.dir.display());
        }
        let rows = self
            .sets
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.created.clone(),
                    s.parts.to_string(),
                    mb(s.bytes),
                    s.services.join(","),
                ]
            })
            .collect();
        output::table(&["set", "created", "parts", "size", "services"], rows)
    }
}

fn list(settings: &Settings, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    let dir = backup::sets_dir(&project, args.dir.as_deref());
    let sets = backup::list(&dir, project.name())?;
    output::emit(settings, &ListReport { dir, sets })?;
    Ok(ExitCode::Ok)
}

#[derive(Serialize)]
struct VerifyReport {
    ok: bool,
    #[serde(flatten)]
    verified: ops::Verified,
}

impl Render for VerifyReport {
    fn human(&self) -> String {
        let v = &self.verified;
        if !self.ok {
            let mut s = format!("set {} is DAMAGED:", v.set.display());
            for p in &v.problems {
                s.push_str(&format!("\n  {}: {}", p.path, p.problem));
            }
            return s;
        }
        let mut s = format!(
            "set {} verified in {:.1} s: {} parts match their SHA-256",
            v.set.display(),
            v.seconds,
            v.parts
        );
        for d in &v.databases {
            s.push_str(&format!(
                "\n  {}/{}: restores; {} tables, {} rows",
                d.service,
                d.database,
                d.tables.len(),
                d.rows
            ));
        }
        s
    }
}

fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        let say = output::say(settings);
        let verified = ops::verify(&engine, &project, &args.set, &say).await?;
        let ok = verified.ok();
        output::emit(settings, &VerifyReport { ok, verified })?;
        Ok(if ok { ExitCode::Ok } else { ExitCode::Runtime })
    })
}

#[derive(Serialize)]
struct RestoreOut {
    event: &'static str,
    #[serde(flatten)]
    report: ops::RestoreReport,
}

impl Render for RestoreOut {
    fn human(&self) -> String {
        let r = &self.report;
        let mut lines = vec![];
        if !r.state_restored.is_empty() {
            lines.push(format!(
                "state brought back from the set: {}",
                r.state_restored.join(", ")
            ));
        }
        for x in &r.restored {
            lines.push(format!("{}: {} {}", x.service, x.what, x.outcome));
        }
        if let Some(p) = &r.previous {
            lines.push(format!("the data it replaced is saved in {}", p.display()));
        }
        if !r.gated.is_empty() {
            lines.push(format!("gate passed: {}", r.gated.join(", ")));
        }
        if let Some(n) = &r.next {
            lines.push(format!("next: {n}"));
        }
        if lines.is_empty() {
            lines.push("nothing to restore".into());
        }
        lines.push(format!("({:.1} s)", r.seconds));
        lines.join("\n")
    }
}

pub fn restore(settings: &Settings, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let project = open_project_for(settings, &args.services)?;
    if !args.set.join(backup::SET_FILE).is_file() {
        return Err(CommandError::usage(format!(
            "{} is not a backup set (no {} in it); `mcpctl backup list` shows the sets",
            args.set.display(),
            backup::SET_FILE
        ))
        .into());
    }
    let set_manifest = ops::open_set(&project, &args.set)?;
    runtime()?.block_on(async {
        let engine = connect().await?;
        // A fresh host: the key (and ledger) come first, before the lock records anything.
        let early = ops::restore_state(&args.set, &set_manifest, &project.state_dir)?;
        if args.state_only {
            if early.is_empty() && project.state_dir.join("install.key").exists() {
                output::say(settings)(
                    "this install has its key: nothing was changed (a present key is never replaced)",
                );
            }
            output::emit(
                settings,
                &RestoreOut {
                    event: "restore",
                    report: ops::RestoreReport {
                        set: args.set.clone(),
                        state_restored: early,
                        ..ops::RestoreReport::default()
                    },
                },
            )?;
            return Ok(ExitCode::Ok);
        }
        let ledger = Ledger::new(&project.state_dir);
        let me = LockInfo::current("restore", args.message.as_deref());
        let held = take_lock(&engine, &project, settings, &me, args.force_unlock, &ledger).await?;
        let say = output::say(settings);
        let opts = ops::RestoreOptions {
            allow_newer_schema: args.allow_newer_schema,
            allow_downtime: args.allow_downtime,
        };
        let result = ops::restore(
            &engine,
            &project,
            &args.set,
            &set_manifest,
            &args.services,
            &opts,
            &say,
        )
        .await;
        release_lock(&engine, &project, &held).await;
        ledger.append(&Entry {
            ts: now_rfc3339(),
            event: "restore".into(),
            command: me.command.clone(),
            who: me.who.clone(),
            host: me.host.clone(),
            pid: me.pid,
            message: args.message.clone(),
            outcome: match &result {
                Ok((_, ExitCode::Ok)) => "ok",
                Ok(_) => "gate-failed",
                Err(_) => "failed",
            }
            .into(),
            detail: Some(match &result {
                Ok(_) => args.set.display().to_string(),
                Err(e) => format!("{e:#}"),
            }),
            ..Default::default()
        })?;
        let (mut report, code) = result?;
        if report.state_restored.is_empty() {
            report.state_restored = early;
        }
        output::emit(
            settings,
            &RestoreOut {
                event: "restore",
                report,
            },
        )?;
        Ok(code)
    })
}
