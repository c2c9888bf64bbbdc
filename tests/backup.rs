//! Tier 4 (issue 19): the disaster-recovery drill, on the real engine with the real services.
//!
//! The default manifest's `db`, `memory`, `postgres` and `filesystem` services (edge, exporter and auth as in
//! production) as project `mcpbackup` on ports +20000, deployed by mcpctl. Its own small stack, not
//! the shared full-stack fixture: the drill deletes the stack, its volumes and its state, which
//! would leave nothing for the other stack checks.
//!
//! 1. Data written through MCP (entities and a relation in `memory`) and rows in `app` (read back
//!    through `postgres`' `execute_sql`; its restricted mode cannot write, so they go in by psql).
//! 2. `mcpctl backup` → a set; `backup verify` restores each dump into a throwaway server and
//!    counts the rows; a set with one flipped byte fails verify (exit 1) and restore (exit 2)
//!    and changes nothing.
//! 3. "database corrupted": the entity deleted and the table dropped → `restore SET` (in place)
//!    → read back through MCP; the replaced data was saved first.
//! 4. "host lost": `down --volumes --no-backup` and the state (install key, ledger, tokens,
//!    secrets) deleted → `restore SET` brings the state back and says to deploy → `deploy` →
//!    `restore SET` → the same data through MCP, the same consumer token, the ledger's history.
//! 5. `down --volumes` without `--no-backup` takes a set first.
//!
//! Printed: RPO (time from the last write to the set) and RTO of each scenario, from these runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{docker_available, must, repo_root, text};
use serde_json::{json, Value};

const PROJECT: &str = "mcpbackup";
const PORT_OFFSET: u16 = 20000;
const KEEP: &[&str] = &["db", "memory", "postgres", "filesystem"];

struct Drill {
    dir: tempfile::TempDir,
    state: PathBuf,
}

impl Drill {
    fn file(&self) -> PathBuf {
        self.dir.path().join("services.yaml")
    }

    fn sets(&self) -> PathBuf {
        self.dir.path().join("sets")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(common::mcpctl())
            .arg("-f")
            .arg(self.file())
            .args(args)
            .env("MCPCTL_STATE_DIR", &self.state)
            .env_remove("MCPCTL_FILE")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mcpctl {args:?} failed ({:?}):\n{}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }

    fn port(&self, service: &str) -> u16 {
        let base = match service {
            "filesystem" => 8501,
            "memory" => 8503,
            "postgres" => 8505,
            _ => unreachable!(),
        };
        base + PORT_OFFSET
    }

    fn container(&self, service: &str) -> String {
        let status = self.json(&["status"]);
        status["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == service))
            .and_then(|s| s["container"].as_str())
            .unwrap_or_else(|| panic!("a serving {service}"))
            .to_string()
    }

    fn db_container(&self) -> String {
        self.container("db")
    }

    /// A shell command in a throwaway container of filesystem's image with its `fsdata` volume
    /// mounted writable (the service mounts it read-only).
    fn in_fsdata(&self, script: &str) -> String {
        let image = must(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.Config.Image}}",
            &self.container("filesystem"),
        ]));
        let volume = format!("{PROJECT}-fsdata");
        must(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            "none",
            "-u",
            "0",
            "-v",
            &format!("{volume}:/data"),
            "--entrypoint",
            "/bin/sh",
            image.trim(),
            "-c",
            script,
        ]))
    }

    fn file_via_mcp(&self) -> (bool, String) {
        self.call(
            "filesystem",
            "read_text_file",
            json!({"path": "/data/drill/notes.txt"}),
        )
    }

    fn psql(&self, database: &str, sql: &str) -> String {
        must(Command::new("docker").args([
            "exec",
            "-u",
            "postgres",
            &self.db_container(),
            "psql",
            "-h",
            "/tmp",
            "-d",
            database,
            "-XAtc",
            sql,
        ]))
    }

    /// One MCP call as mcpctl (the current install key's token).
    fn call(&self, service: &str, tool: &str, args: Value) -> (bool, String) {
        let base = format!("http://127.0.0.1:{}", self.port(service));
        let transport = mcpctl::manifest::Transport::Sse;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = common::session(&base, transport, Duration::from_secs(30), &self.state)
                .await
                .unwrap_or_else(|e| panic!("{service}: {e}"));
            let r = s
                .call_tool(tool, args)
                .await
                .unwrap_or_else(|e| panic!("{service} {tool}: {e}"));
            s.close().await;
            (r.is_error, r.text)
        })
    }

    fn call_ok(&self, service: &str, tool: &str, args: Value) -> String {
        let (err, t) = self.call(service, tool, args);
        assert!(!err, "{service} {tool} returned an error: {t}");
        t
    }

    /// The drill's data, read through MCP: (memory has the entity and its relation, rows in
    /// app.drill through postgres).
    fn data(&self) -> (bool, String) {
        let g = self.call_ok(
            "memory",
            "open_nodes",
            json!({"names": ["drill-alpha", "drill-beta"]}),
        );
        let has_graph = g.contains("written before the backup") && g.contains("depends_on");
        let (err, rows) = self.call(
            "postgres",
            "execute_sql",
            json!({"sql": "select count(*) as n, sum(v) as total from drill"}),
        );
        (has_graph, if err { format!("error: {rows}") } else { rows })
    }
}

/// The default manifest with only [`KEEP`] services, project [`PROJECT`], ports moved.
fn manifest() -> String {
    let source = std::fs::read_to_string(repo_root().join("services.yaml")).unwrap();
    let out = common::moved_manifest(&source, PROJECT, PORT_OFFSET, Some(KEEP));
    // Sets beside the manifest, three kept.
    let with_dir = out.replace(
        "\nbackup:\n  keep: 7\n",
        "\nbackup:\n  dir: sets\n  keep: 3\n",
    );
    assert_ne!(
        with_dir, out,
        "the default manifest's backup section moved: update the drill"
    );
    with_dir
}

fn flip_a_byte(file: &Path) {
    let mut b = std::fs::read(file).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0xff;
    std::fs::write(file, b).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    must(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn disaster_recovery_drill() {
    if !docker_available("backup") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), manifest()).unwrap();
    std::os::unix::fs::symlink(repo_root().join("locks"), dir.path().join("locks")).unwrap();
    // Vendored packages persist between runs (keyed by lock hash), like the stack fixture's.
    let cache = std::env::var("MCPCTL_CACHE").unwrap_or_else(|_| "/var/cache/mcpctl".into());
    let d = Drill {
        state: PathBuf::from(cache).join("backup-state"),
        dir,
    };
    let _ = d.run(&["--yes", "down", "--volumes", "--no-backup"]);
    d.ok(&[
        "bases",
        "build",
        "runtime",
        "python313",
        "postgresql",
        "node22",
    ]);
    d.ok(&["vendor", "postgres", "filesystem"]);
    let t = Instant::now();
    d.ok(&["--yes", "deploy"]);
    eprintln!(
        "deployed db, memory, postgres, filesystem in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 1. Data through MCP and in `app`.
    d.call_ok(
        "memory",
        "create_entities",
        json!({"entities": [
            {"name": "drill-alpha", "entityType": "test", "observations": ["written before the backup"]},
            {"name": "drill-beta", "entityType": "test", "observations": []}
        ]}),
    );
    d.call_ok(
        "memory",
        "create_relations",
        json!({"relations": [{"from": "drill-alpha", "to": "drill-beta", "relationType": "depends_on"}]}),
    );
    d.psql(
        "app",
        // As the database's owner role, so its consumers may read it (docs/contracts.md).
        "set role app_owner; drop table if exists drill; create table drill (v int); \
         insert into drill select generate_series(1, 50)",
    );
    d.in_fsdata("mkdir -p /data/drill && echo 'kept by the drill' > /data/drill/notes.txt");
    let file_before = d.file_via_mcp();
    assert!(
        file_before.1.contains("kept by the drill"),
        "{file_before:?}"
    );
    let before = d.data();
    assert!(before.0, "memory holds the drill's graph");
    assert!(
        before.1.contains("1275"),
        "postgres reads the rows: {}",
        before.1
    );
    let last_write = Instant::now();
    let litellm_token = d.ok(&["token", "show", "litellm"]);

    // 2. Backup, verify, a damaged copy.
    let created = d.json(&["backup"]);
    let rpo = last_write.elapsed();
    let set = PathBuf::from(created["path"].as_str().unwrap());
    assert!(set.starts_with(d.sets()), "backup.dir is honoured: {set:?}");
    let parts = created["manifest"]["parts"].as_array().unwrap();
    for kind in ["database", "volume", "state", "manifest", "artifacts"] {
        assert!(
            parts.iter().any(|p| p["kind"] == kind),
            "a {kind} part: {parts:?}"
        );
    }
    let memory_dump = parts
        .iter()
        .find(|p| p["database"] == "memory")
        .expect("memory's database is dumped");
    assert!(
        memory_dump["schema_level"].as_i64().unwrap() >= 1,
        "{memory_dump}"
    );
    assert!(memory_dump["postgres"].as_str().unwrap().starts_with("15"));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&set).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "a set is private to its owner");
    let status: Value =
        serde_json::from_slice(&std::fs::read(d.state.join("backup-status/last.json")).unwrap())
            .unwrap();
    assert_eq!(status["set"], set.display().to_string());

    let listed = d.json(&["backup", "list"]);
    assert_eq!(
        listed["sets"][0]["path"],
        set.display().to_string(),
        "the newest set first: {listed}"
    );
    let verified = d.json(&["backup", "verify", set.to_str().unwrap()]);
    assert_eq!(verified["ok"], true, "{verified}");
    let app = verified["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["database"] == "app")
        .expect("app verified");
    assert_eq!(app["tables"]["public.drill"], 50, "{app}");
    let memory = verified["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["database"] == "memory")
        .unwrap();
    assert!(
        memory["tables"]["public.entities"].as_u64().unwrap() >= 2,
        "{memory}"
    );

    let damaged = d.dir.path().join("damaged");
    copy_dir(&set, &damaged);
    flip_a_byte(&damaged.join("db/db/memory.dump"));
    let out = d.run(&["backup", "verify", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("db/db/memory.dump"),
        "{}",
        text(&out.stdout)
    );
    let out = d.run(&["restore", damaged.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing was restored"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(d.data(), before, "a refused restore changes nothing");

    // 3. Database corrupted: restore in place.
    d.call_ok(
        "memory",
        "delete_entities",
        json!({"entityNames": ["drill-alpha"]}),
    );
    d.psql("app", "drop table drill");
    assert!(!d.data().0, "the entity is gone");
    let t = Instant::now();
    let restored = d.json(&["restore", set.to_str().unwrap(), "db"]);
    let rto_in_place = t.elapsed();
    assert_eq!(d.data(), before, "the data is back: {restored}");
    let previous = PathBuf::from(restored["previous"].as_str().unwrap());
    assert!(
        previous.join("db/memory.dump").is_file(),
        "the replaced data was saved first"
    );
    assert!(
        restored["gated"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "memory"),
        "the consumers were gated: {restored}"
    );

    // 3b. Volume deleted: a volume is restored only with downtime allowed.
    d.in_fsdata("rm -rf /data/drill");
    assert!(d.file_via_mcp().0, "the file is gone");
    let out = d.run(&["restore", set.to_str().unwrap(), "filesystem"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--allow-downtime"),
        "{}",
        text(&out.stderr)
    );
    let t = Instant::now();
    d.ok(&[
        "restore",
        set.to_str().unwrap(),
        "filesystem",
        "--allow-downtime",
    ]);
    let rto_volume = t.elapsed();
    assert_eq!(d.file_via_mcp(), file_before, "the volume's file is back");
    assert_eq!(
        d.data(),
        before,
        "restoring a volume left the databases alone"
    );

    // 4. Host lost: no containers, no volumes, no state (caches stay: vendored packages).
    d.ok(&["--yes", "down", "--volumes", "--no-backup"]);
    for gone in ["install.key", "ledger.jsonl", "auth", "secrets"] {
        let p = d.state.join(gone);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
    let t = Instant::now();
    let first = d.json(&["restore", set.to_str().unwrap()]);
    assert!(
        first["state_restored"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "install.key"),
        "{first}"
    );
    assert!(
        first["next"].as_str().unwrap().contains("mcpctl deploy"),
        "{first}"
    );
    d.ok(&["--yes", "deploy"]);
    d.ok(&["restore", set.to_str().unwrap(), "--allow-downtime"]);
    let rto_host = t.elapsed();
    assert_eq!(d.data(), before, "the data is back on the new install");
    assert_eq!(
        d.ok(&["token", "show", "litellm"]),
        litellm_token,
        "consumers keep their tokens: the install key came back"
    );
    assert_eq!(
        d.file_via_mcp(),
        file_before,
        "the volume is back on the new install"
    );
    let again = d.json(&["restore", set.to_str().unwrap(), "--state-only"]);
    assert!(
        again["state_restored"].as_array().unwrap().is_empty(),
        "a present install key is never replaced: {again}"
    );
    let history = d.ok(&["history"]);
    assert!(
        history.contains("backup"),
        "the ledger came back:\n{history}"
    );

    // 5. down --volumes takes a set first unless told not to.
    let before_sets = mcpctl::backup::list(&d.sets(), PROJECT).unwrap().len();
    let out = d.ok(&["--yes", "down", "--volumes"]);
    assert!(out.contains("after backup set"), "{out}");
    assert_eq!(
        mcpctl::backup::list(&d.sets(), PROJECT).unwrap().len(),
        (before_sets + 1).min(3),
        "a new set, and retention (keep: 3) applied"
    );

    let bytes: u64 = parts.iter().filter_map(|p| p["bytes"].as_u64()).sum();
    eprintln!(
        "backup: {} parts, {bytes} bytes in {:.1} s; verify (test restore of every dump) {:.1} s",
        parts.len(),
        created["seconds"].as_f64().unwrap_or(0.0),
        verified["seconds"].as_f64().unwrap_or(0.0)
    );
    eprintln!(
        "RPO: {:.1} s from the last write to a complete set; RTO: {:.1} s in place (database corrupted), {:.1} s for a volume, {:.1} s for a lost host (state + deploy + data)",
        rpo.as_secs_f64(),
        rto_in_place.as_secs_f64(),
        rto_volume.as_secs_f64(),
        rto_host.as_secs_f64()
    );
}
