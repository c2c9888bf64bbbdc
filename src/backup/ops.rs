//! Taking, verifying and restoring a set against the engine (module docs in `super`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::jobs::{self, Common, Server};
use super::{Covered, Part, PartKind, SetManifest, Status};
use crate::engine::{Engine, JobResult};
use crate::manifest::Role;
use crate::rollout::plan::{self, Revision};
use crate::rollout::Project;

fn job_failed(what: &str, r: &JobResult) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} exited with code {}; its last lines:\n{}",
        r.exit_code,
        r.logs.trim_end()
    )
}

/// The databases a `role: database` service holds for its consumers, in manifest order.
pub fn databases_of(project: &Project, db: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in project.manifest.database_consumers(db) {
        if !out.contains(&c.database) {
            out.push(c.database);
        }
    }
    out
}

/// How jobs reach the serving revision of database service `db`.
fn server_of(db: &str, rev: &Revision) -> anyhow::Result<Server> {
    let spec = rev.spec.as_ref().with_context(|| {
        format!(
            "`{db}`: revision {} has no recorded config; redeploy it",
            rev.name()
        )
    })?;
    let password = spec
        .binds
        .iter()
        .find(|b| b.target == "/run/secrets/POSTGRES_PASSWORD")
        .cloned()
        .with_context(|| {
            format!(
                "`{db}`: revision {} mounts no POSTGRES_PASSWORD secret",
                rev.name()
            )
        })?;
    Ok(Server {
        network: spec.network.clone(),
        host: spec
            .aliases
            .first()
            .cloned()
            .unwrap_or_else(|| rev.container.clone()),
        password,
    })
}

async fn observe<E: Engine>(engine: &E, project: &Project) -> anyhow::Result<plan::Observed> {
    let list = engine
        .list_containers(&project.keys.project_filter(project.name()))
        .await?;
    Ok(plan::observe(&list, &project.keys))
}

fn serving<'a>(obs: &'a plan::Observed, service: &str) -> Option<&'a Revision> {
    obs.services.get(service).and_then(|s| s.serving.as_ref())
}

fn common(project: &Project, image: &str) -> Common {
    Common {
        project: project.name().to_string(),
        image: image.to_string(),
        labels: project.keys.base(project.name(), "job"),
    }
}

fn mkdir_private(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

fn part(set: &Path, rel: &str, kind: PartKind) -> anyhow::Result<Part> {
    let (sha256, bytes) = super::digest_file(&set.join(rel))?;
    Ok(Part {
        path: rel.to_string(),
        kind,
        service: None,
        database: None,
        volume: None,
        target: None,
        postgres: None,
        schema_level: None,
        bytes,
        sha256,
    })
}

/// Dump `databases` of database service `db` into `dest` (`<db>.dump` each); returns the server
/// version and each database's schema level.
async fn dump<E: Engine>(
    engine: &E,
    project: &Project,
    db: &str,
    rev: &Revision,
    databases: &[String],
    dest: &Path,
) -> anyhow::Result<(String, BTreeMap<String, i64>)> {
    mkdir_private(dest)?;
    let tar = dest.join(".job-output.tar");
    let job = jobs::dump(
        &common(project, &rev.image),
        &server_of(db, rev)?,
        databases,
        tar.clone(),
    );
    let r = engine.run_job(&job).await?;
    if r.exit_code != 0 {
        return Err(job_failed(&format!("pg_dump of `{db}`"), &r));
    }
    let files = super::extract_flat(&tar, dest)?;
    std::fs::remove_file(&tar)?;
    let read = |name: &str| -> Option<String> {
        let p = dest.join(name);
        let v = std::fs::read_to_string(&p).ok()?.trim().to_string();
        let _ = std::fs::remove_file(&p);
        Some(v)
    };
    let version = read("server_version").unwrap_or_default();
    let mut levels = BTreeMap::new();
    for d in databases {
        anyhow::ensure!(
            files.contains(&format!("{d}.dump")),
            "pg_dump of `{db}` wrote no dump of database `{d}`"
        );
        if let Some(l) = read(&format!("{d}.level")).and_then(|l| l.parse().ok()) {
            levels.insert(d.clone(), l);
        }
    }
    Ok((version, levels))
}

/// A complete set.
#[derive(Debug, Serialize)]
pub struct Created {
    pub path: PathBuf,
    pub manifest: SetManifest,
    pub seconds: f64,
    /// Older sets removed by retention.
    pub pruned: Vec<PathBuf>,
}

/// Take a set of `services` (all when empty) into a new directory under `dir`.
pub async fn create<E: Engine>(
    engine: &E,
    project: &Project,
    manifest_path: &Path,
    services: &[String],
    dir: &Path,
    say: &dyn Fn(&str),
) -> anyhow::Result<Created> {
    let started = Instant::now();
    let m = &project.manifest;
    let selected: Vec<String> = if services.is_empty() {
        m.services.keys().cloned().collect()
    } else {
        services.to_vec()
    };
    let obs = observe(engine, project).await?;
    let now = std::time::SystemTime::now();
    let name = super::set_name(project.name(), now);
    mkdir_private(dir)?;
    let set = super::partial_path(dir, &name);
    if set.exists() {
        std::fs::remove_dir_all(&set)?;
    }
    mkdir_private(&set)?;
    let result = async {
        let mut parts = Vec::new();
        let mut releases = BTreeMap::new();
        for s in &selected {
            let svc = &m.services[s];
            let Some(rev) = serving(&obs, s) else {
                if svc.role == Role::Database || svc.volumes.iter().any(|v| v.is_named()) {
                    bail!("`{s}` holds data but has no serving revision: deploy it (`mcpctl deploy {s}`) or leave it out of the backup");
                }
                continue;
            };
            releases.insert(
                s.clone(),
                Covered {
                    release: rev.release,
                    revision: rev.name(),
                    image: rev.image.clone(),
                },
            );
            if svc.role == Role::Database {
                let databases = databases_of(project, s);
                if databases.is_empty() {
                    say(&format!("{s}: no consumer names a database; nothing to dump"));
                    continue;
                }
                let t = Instant::now();
                let rel = format!("db/{s}");
                let (version, levels) =
                    dump(engine, project, s, rev, &databases, &set.join(&rel)).await?;
                for d in &databases {
                    let mut p = part(&set, &format!("{rel}/{d}.dump"), PartKind::Database)?;
                    p.service = Some(s.clone());
                    p.database = Some(d.clone());
                    p.postgres = Some(version.clone());
                    p.schema_level = levels.get(d).copied();
                    say(&format!("{s}: dumped database {d} ({} bytes)", p.bytes));
                    parts.push(p);
                }
                say(&format!(
                    "{s}: {} database(s) dumped in {:.1} s (PostgreSQL {version})",
                    databases.len(),
                    t.elapsed().as_secs_f64()
                ));
                continue;
            }
            // Named volumes of other services, archived from the running container.
            let spec_binds = rev.spec.as_ref().map(|sp| sp.binds.clone()).unwrap_or_default();
            for v in svc.volumes.iter().filter(|v| v.is_named()) {
                let Some(b) = spec_binds.iter().find(|b| b.target == v.target) else {
                    continue;
                };
                let rel = format!("volumes/{s}/{}.tar", v.source);
                mkdir_private(&set.join(format!("volumes/{s}")))?;
                engine
                    .copy_out(&rev.container, &v.target, &set.join(&rel))
                    .await
                    .with_context(|| format!("archiving volume {} of `{s}`", v.source))?;
                let mut p = part(&set, &rel, PartKind::Volume)?;
                p.service = Some(s.clone());
                p.volume = Some(b.source.clone());
                p.target = Some(v.target.clone());
                say(&format!("{s}: archived volume {} ({} bytes)", v.source, p.bytes));
                parts.push(p);
            }
        }
        if project.state_dir.join("install.key").exists() {
            super::archive_state(&project.state_dir, &set.join("state.tar"))?;
            parts.push(part(&set, "state.tar", PartKind::State)?);
            say("state: install key, ledger, tokens and recorded secret values archived");
        }
        let rendered = set.join(".artifacts");
        crate::render::write(&rendered, &crate::render::render(m, None)?)?;
        super::archive_dir(&rendered, &set.join("artifacts.tar"))?;
        std::fs::remove_dir_all(&rendered)?;
        parts.push(part(&set, "artifacts.tar", PartKind::Artifacts)?);
        std::fs::copy(manifest_path, set.join("services.yaml"))
            .with_context(|| format!("copying {}", manifest_path.display()))?;
        parts.push(part(&set, "services.yaml", PartKind::Manifest)?);
        let manifest = SetManifest::new(project.name(), now, selected.clone(), releases, parts);
        let file = set.join(super::SET_FILE);
        std::fs::write(&file, serde_json::to_vec_pretty(&manifest)?)?;
        std::fs::File::open(&file)?.sync_all()?;
        anyhow::Ok(manifest)
    }
    .await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&set);
            return Err(e);
        }
    };
    let path = dir.join(&name);
    std::fs::rename(&set, &path)
        .with_context(|| format!("renaming {} to {}", set.display(), path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    let pruned = super::prune(dir, project.name(), project.manifest.backup.keep)?;
    super::write_status(
        &project.state_dir,
        &Status {
            project: project.name().to_string(),
            set: path.display().to_string(),
            created_unix: manifest.created_unix,
            bytes: manifest.parts.iter().map(|p| p.bytes).sum(),
        },
    )?;
    Ok(Created {
        path,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
        pruned,
    })
}

/// A work directory removed when dropped (test-restore inputs and outputs: copies of the data).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(path: PathBuf) -> anyhow::Result<Self> {
        mkdir_private(&path)?;
        Ok(Self(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One database restored into the throwaway server.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCheck {
    pub service: String,
    pub database: String,
    pub tables: BTreeMap<String, u64>,
    pub rows: u64,
}

#[derive(Debug, Serialize)]
pub struct Verified {
    pub set: PathBuf,
    pub parts: usize,
    pub problems: Vec<super::PartProblem>,
    pub databases: Vec<DatabaseCheck>,
    pub seconds: f64,
}

impl Verified {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The PostgreSQL image a set's dumps of `db` are restored with: the one that dumped them if the
/// engine still has it, else the project's serving revision of `db`.
async fn postgres_image<E: Engine>(
    engine: &E,
    m: &SetManifest,
    db: &str,
    fallback: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(c) = m.releases.get(db) {
        if engine.image_id(&c.image).await?.is_some() {
            return Ok(c.image.clone());
        }
    }
    fallback.map(str::to_string).with_context(|| {
        format!(
            "no PostgreSQL image to restore `{db}`'s dumps with: neither {} nor a serving `{db}` is present (import images with `mcpctl images import`, or deploy)",
            m.releases.get(db).map(|c| c.image.as_str()).unwrap_or("the set's image")
        )
    })
}

/// Checksums of every part, then every database restored into a throwaway server (no network),
/// with exact row counts: proof the set restores, not only that it exists.
pub async fn verify<E: Engine>(
    engine: &E,
    project: &Project,
    set: &Path,
    say: &dyn Fn(&str),
) -> anyhow::Result<Verified> {
    let started = Instant::now();
    let m = SetManifest::read(set)?;
    let problems = super::check_parts(set, &m);
    for p in &problems {
        say(&format!("{}: {}", p.path, p.problem));
    }
    let mut databases = Vec::new();
    if problems.is_empty() {
        say(&format!("{} parts: sizes and SHA-256 match", m.parts.len()));
        let obs = observe(engine, project).await?;
        let mut by_service: BTreeMap<String, Vec<&Part>> = BTreeMap::new();
        for p in m.databases() {
            by_service
                .entry(p.service.clone().unwrap_or_default())
                .or_default()
                .push(p);
        }
        let work = WorkDir::new(set.join(format!(
            ".verify-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )))?;
        for (db, dumps) in by_service {
            let fallback = serving(&obs, &db).map(|r| r.image.clone());
            let image = postgres_image(engine, &m, &db, fallback.as_deref()).await?;
            let files: Vec<(String, PathBuf)> = dumps
                .iter()
                .map(|p| {
                    (
                        format!("{}.dump", p.database.clone().unwrap_or_default()),
                        set.join(&p.path),
                    )
                })
                .collect();
            let input = work.path().join(format!("{db}-in.tar"));
            super::input_tar(&files, "in", &input)?;
            let output = work.path().join(format!("{db}-out.tar"));
            let t = Instant::now();
            let r = engine
                .run_job(&jobs::verify(
                    &common(project, &image),
                    input,
                    output.clone(),
                ))
                .await?;
            if r.exit_code != 0 {
                return Err(job_failed(
                    &format!("the test restore of `{db}`'s dumps"),
                    &r,
                ));
            }
            let out = work.path().join(format!("{db}-out"));
            super::extract_flat(&output, &out)?;
            let rows = std::fs::read_to_string(out.join("rows.tsv"))?;
            for p in &dumps {
                let d = p.database.clone().unwrap_or_default();
                let tables: BTreeMap<String, u64> = rows
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.split('\t');
                        let (db_name, table, n) = (f.next()?, f.next()?, f.next()?);
                        (db_name == d).then(|| Some((table.to_string(), n.parse().ok()?)))?
                    })
                    .collect();
                let total = tables.values().sum();
                say(&format!(
                    "{db}/{d}: restored into a throwaway server, {} tables, {total} rows",
                    tables.len()
                ));
                databases.push(DatabaseCheck {
                    service: db.clone(),
                    database: d,
                    tables,
                    rows: total,
                });
            }
            say(&format!(
                "{db}: test restore took {:.1} s",
                t.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(Verified {
        set: set.to_path_buf(),
        parts: m.parts.len(),
        problems,
        databases,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How a restore may proceed.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore a database whose set schema level is above the running one.
    pub allow_newer_schema: bool,
    /// Stop services to restore their volumes (a volume cannot be replaced under a running one).
    pub allow_downtime: bool,
}

/// What happened to one database or volume.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    pub service: String,
    pub what: String,
    pub outcome: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RestoreReport {
    pub set: PathBuf,
    /// The state directory was absent and was brought back from the set.
    pub state_restored: Vec<String>,
    pub restored: Vec<Restored>,
    /// Where the data replaced by this restore was saved first.
    pub previous: Option<PathBuf>,
    /// Services gated after the restore.
    pub gated: Vec<String>,
    /// What the operator does next (a fresh host: deploy, then restore the data).
    pub next: Option<String>,
    pub seconds: f64,
}

/// Read a set for a restore: it must be of this project and every part must match its size and
/// SHA-256 — a damaged set restores nothing (usage error, exit 2).
pub fn open_set(project: &Project, set: &Path) -> anyhow::Result<SetManifest> {
    let m = SetManifest::read(set)?;
    if m.project != project.name() {
        return Err(crate::error::CommandError::usage(format!(
            "{} is a set of project `{}`, this manifest's project is `{}`",
            set.display(),
            m.project,
            project.name()
        ))
        .into());
    }
    let problems = super::check_parts(set, &m);
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("  {}: {}", p.path, p.problem))
            .collect();
        return Err(crate::error::CommandError::usage(format!(
            "{} is damaged; nothing was restored:\n{}",
            set.display(),
            lines.join("\n")
        ))
        .into());
    }
    Ok(m)
}

/// Bring `state.tar` back when this install has no key (a fresh host, a lost state dir). A
/// present key is never replaced: returns what was unpacked, or nothing.
pub fn restore_state(set: &Path, m: &SetManifest, state_dir: &Path) -> anyhow::Result<Vec<String>> {
    if state_dir.join("install.key").exists() {
        return Ok(vec![]);
    }
    let Some(p) = m.parts.iter().find(|p| p.kind == PartKind::State) else {
        return Ok(vec![]);
    };
    super::unpack_state(&set.join(&p.path), state_dir)
}

/// Which databases of the set `services` select: a database service selects all of its dumps, a
/// consumer the databases it names; none selects every dump.
fn selected_dumps<'a>(project: &Project, m: &'a SetManifest, services: &[String]) -> Vec<&'a Part> {
    m.databases()
        .filter(|p| {
            services.is_empty()
                || services.iter().any(|s| {
                    p.service.as_deref() == Some(s.as_str())
                        || project
                            .manifest
                            .database_consumers(p.service.as_deref().unwrap_or_default())
                            .iter()
                            .any(|c| &c.service == s && Some(&c.database) == p.database.as_ref())
                })
        })
        .collect()
}

/// The consumers (MCP services) of the databases restored: gated after the restore.
fn consumers_of(project: &Project, dumps: &[&Part]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in dumps {
        for c in project
            .manifest
            .database_consumers(p.service.as_deref().unwrap_or_default())
        {
            if Some(&c.database) == p.database.as_ref() {
                out.insert(c.service);
            }
        }
    }
    out.into_iter().collect()
}

async fn restore_dumps<E: Engine>(
    engine: &E,
    project: &Project,
    db: &str,
    rev: &Revision,
    files: &[(String, PathBuf)],
    work: &Path,
) -> anyhow::Result<()> {
    let input = work.join(format!("{db}-restore-in.tar"));
    super::input_tar(
        &files
            .iter()
            .map(|(d, p)| (format!("{d}.dump"), p.clone()))
            .collect::<Vec<_>>(),
        "in",
        &input,
    )?;
    let databases: Vec<String> = files.iter().map(|(d, _)| d.clone()).collect();
    let r = engine
        .run_job(&jobs::restore(
            &common(project, &rev.image),
            &server_of(db, rev)?,
            &databases,
            input.clone(),
        ))
        .await;
    let _ = std::fs::remove_file(&input);
    let r = r?;
    if r.exit_code != 0 {
        return Err(job_failed(&format!("pg_restore into `{db}`"), &r));
    }
    Ok(())
}

/// Gate each consumer's serving revision through its published port (the MCP handshake, tools
/// and smoke steps of its manifest `health`).
async fn gate(project: &Project, services: &[String], say: &dyn Fn(&str)) -> anyhow::Result<()> {
    let prober = crate::rollout::executor::McpProber::for_project(project)?;
    for s in services {
        let svc = &project.manifest.services[s];
        let Some(port) = svc.port else { continue };
        let base = format!("http://{}:{port}", loopback(project.manifest.bind_address));
        let deadline = Instant::now() + svc.health.timeout.min(Duration::from_secs(120));
        let report = crate::health::gate::run(
            &base,
            svc.transport.unwrap_or(project.manifest.litellm.transport),
            prober.token.as_deref(),
            &svc.health,
            None,
            deadline,
        )
        .await;
        if !report.passed {
            let f = report
                .failure()
                .map(|c| format!("{}: {}", c.name, c.detail))
                .unwrap_or_else(|| "failed".into());
            bail!("`{s}` failed the gate after the restore: {f}");
        }
        say(&format!("{s}: passed the gate on the restored data"));
    }
    Ok(())
}

/// Where host-side clients reach a published port: the bind address, or loopback for 0.0.0.0.
fn loopback(addr: std::net::IpAddr) -> std::net::IpAddr {
    if addr.is_unspecified() {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        addr
    }
}

/// Restore `services` (all when empty) from `set` into the running stack. The data being
/// replaced is dumped first (`previous`); each database is replaced in one transaction; the
/// consumers are gated after, and a failed gate puts the previous data back.
pub async fn restore<E: Engine>(
    engine: &E,
    project: &Project,
    set: &Path,
    m: &SetManifest,
    services: &[String],
    opts: &RestoreOptions,
    say: &dyn Fn(&str),
) -> anyhow::Result<(RestoreReport, crate::error::ExitCode)> {
    use crate::error::ExitCode;
    let started = Instant::now();
    let mut report = RestoreReport {
        set: set.to_path_buf(),
        ..RestoreReport::default()
    };
    report.state_restored = restore_state(set, m, &project.state_dir)?;
    if !report.state_restored.is_empty() {
        say(&format!(
            "state: {} brought back from the set (install key, ledger, tokens)",
            report.state_restored.join(", ")
        ));
    }
    let dumps = selected_dumps(project, m, services);
    let volumes: Vec<&Part> = m
        .parts
        .iter()
        .filter(|p| p.kind == PartKind::Volume)
        .filter(|p| services.is_empty() || services.iter().any(|s| p.service.as_deref() == Some(s)))
        .collect();
    if dumps.is_empty() && volumes.is_empty() {
        if services.is_empty() || !report.state_restored.is_empty() {
            report.seconds = started.elapsed().as_secs_f64();
            return Ok((report, ExitCode::Ok));
        }
        return Err(crate::error::CommandError::usage(format!(
            "{} holds no data of {}",
            set.display(),
            services.join(", ")
        ))
        .into());
    }
    let obs = observe(engine, project).await?;
    let mut by_db: BTreeMap<String, Vec<&Part>> = BTreeMap::new();
    for p in &dumps {
        by_db
            .entry(p.service.clone().unwrap_or_default())
            .or_default()
            .push(p);
    }
    // A fresh host: the database is not deployed yet. The state is back, so a deploy derives the
    // same passwords and tokens; the data comes after.
    if let Some(db) = by_db.keys().find(|db| serving(&obs, db).is_none()) {
        report.next = Some(format!(
            "`{db}` is not running: run `mcpctl deploy`, then `mcpctl restore {}` again to restore the data",
            set.display()
        ));
        report.seconds = started.elapsed().as_secs_f64();
        return Ok((report, ExitCode::Ok));
    }
    if !volumes.is_empty() && !opts.allow_downtime {
        return Err(crate::error::CommandError::usage(format!(
            "restoring volume(s) {} stops their services: pass --allow-downtime (or name only database services)",
            volumes
                .iter()
                .filter_map(|p| p.volume.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    // The data being replaced, first: a restore that fails its gate puts it back.
    let previous = project
        .state_dir
        .join("backups")
        .join("pre-restore")
        .join(super::set_name(
            project.name(),
            std::time::SystemTime::now(),
        ));
    report.previous = Some(previous.clone());
    let mut saved: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    for (db, parts) in &by_db {
        let rev = serving(&obs, db).expect("checked above");
        let names: Vec<String> = parts.iter().filter_map(|p| p.database.clone()).collect();
        let dest = previous.join(db);
        let (_, running_levels) = dump(engine, project, db, rev, &names, &dest)
            .await
            .with_context(|| format!("saving `{db}`'s current data before the restore"))?;
        for p in parts {
            let d = p.database.clone().unwrap_or_default();
            if let (Some(set_level), running) = (p.schema_level, running_levels.get(&d).copied()) {
                let running = running.unwrap_or(0);
                if set_level > running && !opts.allow_newer_schema {
                    return Err(crate::error::CommandError::usage(format!(
                        "`{db}`/{d}: the set's schema level {set_level} is newer than the running {running}: the running server may not read it; deploy the version that wrote the set first, or pass --allow-newer-schema. Nothing was restored (the current data was saved to {})",
                        dest.display()
                    ))
                    .into());
                }
            }
        }
        saved.insert(
            db.clone(),
            names
                .iter()
                .map(|d| (d.clone(), dest.join(format!("{d}.dump"))))
                .collect(),
        );
        say(&format!("{db}: current data saved to {}", dest.display()));
    }
    if !saved.is_empty() {
        let mut parts = Vec::new();
        for (db, files) in &saved {
            for (d, _) in files {
                let mut p = part(&previous, &format!("{db}/{d}.dump"), PartKind::Database)?;
                p.service = Some(db.clone());
                p.database = Some(d.clone());
                parts.push(p);
            }
        }
        write_previous(&previous, project, m, parts)?;
    }
    for (db, parts) in &by_db {
        let rev = serving(&obs, db).expect("checked above");
        let files: Vec<(String, PathBuf)> = parts
            .iter()
            .map(|p| (p.database.clone().unwrap_or_default(), set.join(&p.path)))
            .collect();
        let t = Instant::now();
        if let Err(e) = restore_dumps(engine, project, db, rev, &files, &previous).await {
            // This database's transaction rolled back; the ones before it committed.
            let back = put_back(engine, project, &obs, &saved, &report.restored, &previous).await;
            return Err(e.context(format!(
                "restoring `{db}`: nothing of `{db}` changed (one transaction); {back}"
            )));
        }
        for (d, _) in &files {
            report.restored.push(Restored {
                service: db.clone(),
                what: format!("database {d}"),
                outcome: "restored".into(),
            });
        }
        say(&format!(
            "{db}: {} database(s) restored in {:.1} s",
            files.len(),
            t.elapsed().as_secs_f64()
        ));
    }
    let consumers = consumers_of(project, &dumps);
    if let Err(e) = gate(project, &consumers, say).await {
        let back = put_back(engine, project, &obs, &saved, &report.restored, &previous).await;
        say(&format!("{e:#}; {back}"));
        report.seconds = started.elapsed().as_secs_f64();
        let code = if back.starts_with("the previous data is back") {
            ExitCode::GateFailedRestored
        } else {
            ExitCode::GateFailedRestoreFailed
        };
        return Ok((report, code));
    }
    report.gated = consumers;
    if !volumes.is_empty() {
        for p in &volumes {
            let s = p.service.clone().unwrap_or_default();
            restore_volume(engine, project, &obs, set, p, &previous, say)
                .await
                .with_context(|| {
                    format!(
                        "restoring volume {} of `{s}`",
                        p.volume.clone().unwrap_or_default()
                    )
                })?;
            report.restored.push(Restored {
                service: s,
                what: format!("volume {}", p.volume.clone().unwrap_or_default()),
                outcome: "restored".into(),
            });
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, ExitCode::Ok))
}

/// Make the data saved before a restore a set of its own (`backup.json`), so `mcpctl restore
/// <previous>` puts it back; called again as more parts are saved.
fn write_previous(
    previous: &Path,
    project: &Project,
    restored_from: &SetManifest,
    mut parts: Vec<Part>,
) -> anyhow::Result<()> {
    let file = previous.join(super::SET_FILE);
    if let Ok(old) = SetManifest::read(previous) {
        parts.splice(0..0, old.parts);
    }
    let m = SetManifest::new(
        project.name(),
        std::time::SystemTime::now(),
        restored_from.services.clone(),
        BTreeMap::new(),
        parts,
    );
    std::fs::write(&file, serde_json::to_vec_pretty(&m)?)?;
    Ok(())
}

/// Re-apply the data saved before the restore to every database already restored.
async fn put_back<E: Engine>(
    engine: &E,
    project: &Project,
    obs: &plan::Observed,
    saved: &BTreeMap<String, Vec<(String, PathBuf)>>,
    restored: &[Restored],
    work: &Path,
) -> String {
    let mut failed = Vec::new();
    for (db, files) in saved {
        let done: Vec<(String, PathBuf)> = files
            .iter()
            .filter(|(d, _)| {
                restored
                    .iter()
                    .any(|r| &r.service == db && r.what == format!("database {d}"))
            })
            .cloned()
            .collect();
        if done.is_empty() {
            continue;
        }
        let Some(rev) = serving(obs, db) else {
            failed.push(format!("`{db}` is not running"));
            continue;
        };
        if let Err(e) = restore_dumps(engine, project, db, rev, &done, work).await {
            failed.push(format!("`{db}`: {e:#}"));
        }
    }
    if failed.is_empty() {
        format!("the previous data is back (saved in {})", work.display())
    } else {
        format!(
            "putting the previous data back FAILED ({}); it is saved as a set: `mcpctl restore {}`",
            failed.join("; "),
            work.display()
        )
    }
}

/// Replace a volume's contents from its archive: the current contents saved into `previous`,
/// the service stopped, the volume emptied and refilled by a job from the service's own image,
/// the service started and gated; a failed gate refills it with what was saved.
async fn restore_volume<E: Engine>(
    engine: &E,
    project: &Project,
    obs: &plan::Observed,
    set: &Path,
    p: &Part,
    previous: &Path,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let s = p.service.clone().unwrap_or_default();
    let (Some(volume), Some(target)) = (p.volume.clone(), p.target.clone()) else {
        bail!("backup.json names no volume or mount point for {}", p.path);
    };
    let rev = serving(obs, &s).with_context(|| {
        format!("`{s}` is not running: deploy it (`mcpctl deploy {s}`), then restore again")
    })?;
    let saved_dir = previous.join("volumes").join(&s);
    mkdir_private(&saved_dir)?;
    let saved = saved_dir.join(format!("{volume}.tar"));
    engine
        .copy_out(&rev.container, &target, &saved)
        .await
        .with_context(|| format!("saving volume {volume} before the restore"))?;
    let rel = format!("volumes/{s}/{volume}.tar");
    let mut vp = part(previous, &rel, PartKind::Volume)?;
    vp.service = Some(s.clone());
    vp.volume = Some(volume.clone());
    vp.target = Some(target.clone());
    write_previous(previous, project, &SetManifest::read(set)?, vec![vp])?;
    say(&format!(
        "{s}: volume {volume} saved to {}",
        saved.display()
    ));
    let job = |archive: PathBuf| {
        jobs::volume(
            &common(project, &rev.image),
            &rev.image,
            &volume,
            &target,
            archive,
        )
    };
    let refill = |job: crate::engine::JobSpec| async move {
        let r = engine.run_job(&job).await?;
        if r.exit_code != 0 {
            return Err(job_failed(
                "refilling the volume (from the service's image, which needs /bin/sh, find and cp)",
                &r,
            ));
        }
        anyhow::Ok(())
    };
    say(&format!(
        "{s}: stopping {} (downtime starts)",
        rev.container
    ));
    let down_at = Instant::now();
    engine.stop_container(&rev.container, 30).await?;
    let result = refill(job(set.join(&p.path))).await;
    engine.start_container(&rev.container).await?;
    if let Err(e) = result {
        return Err(e.context(format!(
            "the service was started again on its unchanged volume (saved in {})",
            saved.display()
        )));
    }
    if let Err(e) = gate(project, std::slice::from_ref(&s), say).await {
        engine.stop_container(&rev.container, 30).await?;
        let back = refill(job(saved.clone())).await;
        engine.start_container(&rev.container).await?;
        return Err(match back {
            Ok(()) => e.context("the previous contents are back"),
            Err(b) => e.context(format!(
                "putting the previous contents back FAILED too ({b:#}); they are saved in {}",
                saved.display()
            )),
        });
    }
    say(&format!(
        "{s}: volume {volume} restored, serving again after {} ms of downtime",
        down_at.elapsed().as_millis()
    ));
    Ok(())
}
