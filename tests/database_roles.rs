//! Tier 4 (issue 18): the database entrypoint converges its consumers' roles both ways, on the
//! real engine. The `db` image is built from what `render` writes for a small manifest (on the
//! `postgresql` base, no pulls) and run hardened like a deployed database, with one secret file
//! per consumer; the same named volume is then started by the image rendered from a changed
//! manifest, as a deploy of the database would.
//!
//! - databases named with SQL keywords (`user`, `order`) are created and their consumers log in
//!   and write;
//! - a restart with the same manifest converges again (idempotent);
//! - `writer` moved read_write → read_only: reads work, writes are refused with "permission
//!   denied" even with the read-only default turned off — on the table it created itself, and on
//!   one it had been granted INSERT on by hand — and hand-made role drift is gone;
//! - `gone`, removed from the manifest, can no longer log in; its role is kept, without
//!   memberships; roles mcpctl did not create are untouched;
//! - with no consumer left at all, the last one is disabled too and the data stays.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{must, text};

const WRITER_PW: &str = "writer-pw-'quoted'";
const GONE_PW: &str = "gone-pw";

struct Db {
    project: String,
    dir: tempfile::TempDir,
    volume: String,
}

impl Db {
    /// The manifest: `db`, `writer` on database `user` (unless `writer_access` is None) and
    /// `gone` on database `order` (if `with_gone`).
    fn manifest(&self, writer_access: Option<&str>, with_gone: bool) -> PathBuf {
        let gone = if with_gone {
            r#"
  gone:
    port: 8502
    server:
      source: {image: {ref: "example/server:1.0"}}
      command: [server]
    secrets:
      DATABASE_URL: {database: {service: db, name: order}}
    health: {expect_tools: {include: [echo]}}"#
        } else {
            ""
        };
        let writer = match writer_access {
            Some(access) => format!(
                r#"
  writer:
    port: 8501
    server:
      source: {{image: {{ref: "example/server:1.0"}}}}
      command: [server]
    secrets:
      DATABASE_URL: {{database: {{service: db, name: user, access: {access}}}}}
    health: {{expect_tools: {{include: [echo]}}}}"#
            ),
            None => String::new(),
        };
        let yaml = format!(
            r#"version: 1
project: {project}
services:
  db:
    role: database
    container_port: 5432
    stateful: true
    server:
      source: {{image: {{ref: "mcpctl-base/postgresql:bookworm"}}}}
    secrets:
      POSTGRES_PASSWORD: {{generate: true}}
    volumes: [{{source: pgdata, target: /var/lib/postgresql/data}}]
    health: {{start_period: 1s, interval: 1s, timeout: 30s}}{writer}{gone}
"#,
            project = self.project,
        );
        let path = self.dir.path().join("services.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Render the manifest, build the database image from `services/db/`, return its tag.
    fn build(&self, tag: &str, writer_access: Option<&str>, with_gone: bool) -> String {
        let file = self.manifest(writer_access, with_gone);
        let loaded = mcpctl::manifest::load(&file).expect("the test manifest is valid");
        let artifacts = mcpctl::render::render(
            &loaded.manifest,
            Some(mcpctl::render::ArtifactKind::Dockerfiles),
        )
        .unwrap();
        let out = self.dir.path().join(tag);
        mcpctl::render::write(&out, &artifacts).unwrap();
        let image = format!("{}/db:{tag}", self.project);
        must(
            Command::new("docker")
                .args(["build", "-q", "--network", "none", "-t", &image])
                .arg(out.join("services/db")),
        );
        image
    }

    fn secret(&self, name: &str, value: &str) -> String {
        let dir = self.dir.path().join("secrets");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        format!("{}:/run/secrets/{name}:ro", path.display())
    }

    /// Start the image on the volume, hardened as deploy runs a database, with the secret files
    /// deploy would mount; wait until it accepts TCP connections.
    fn start(&self, name: &str, image: &str, roles: &[(&str, &str)]) -> String {
        let container = format!("{}-{name}", self.project);
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", &container])
            .args(["--label", &format!("com.mcp.project={}", self.project)])
            .args(["--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid,size=64m"])
            .args([
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges:true",
            ])
            .args(["--network", "none"])
            .args(["-v", &format!("{}:/var/lib/postgresql/data", self.volume)])
            .args(["-v", &self.secret("POSTGRES_PASSWORD", "superuser-pw")]);
        for (role, pw) in roles {
            cmd.args(["-v", &self.secret(&format!("db_role_{role}"), pw)]);
        }
        must(cmd.arg(image));
        common::wait_for_explained(
            &format!("{container} accepting connections"),
            Duration::from_secs(60),
            || {
                Command::new("docker")
                    .args(["exec", &container, "pg_isready", "-q", "-h", "127.0.0.1"])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
            || common::container_report(&[&container]),
        );
        container
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        common::remove_project(&self.project, &[]);
    }
}

/// `sql` as a consumer over TCP with its password (scram), as the consumer's URL would connect.
fn consumer(container: &str, user: &str, password: &str, db: &str, sql: &str) -> Output {
    consumer_with(container, user, password, db, sql, "")
}

/// [`consumer`] with connection options (`PGOPTIONS`), e.g. a client's own settings.
fn consumer_with(
    container: &str,
    user: &str,
    password: &str,
    db: &str,
    sql: &str,
    options: &str,
) -> Output {
    Command::new("docker")
        .args(["exec", "-e", &format!("PGPASSWORD={password}")])
        .args(["-e", &format!("PGOPTIONS={options}"), container])
        .args(["psql", "--no-psqlrc", "-q", "-v", "ON_ERROR_STOP=1", "-tA"])
        .arg(format!("host=127.0.0.1 port=5432 dbname={db} user={user}"))
        .args(["-c", sql])
        .output()
        .unwrap()
}

fn consumer_ok(container: &str, user: &str, password: &str, db: &str, sql: &str) -> String {
    let out = consumer(container, user, password, db, sql);
    assert!(
        out.status.success(),
        "{user}@{db}: {sql}\n{}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

fn consumer_err(container: &str, user: &str, password: &str, db: &str, sql: &str) -> String {
    let out = consumer(container, user, password, db, sql);
    assert!(
        !out.status.success(),
        "{user}@{db} was allowed: {sql}\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// `sql` as the superuser over the local socket (peer authentication inside the container).
fn superuser(container: &str, db: &str, sql: &str) -> String {
    must(Command::new("docker").args([
        "exec",
        container,
        "psql",
        "--no-psqlrc",
        "-h",
        "/tmp",
        "-U",
        "postgres",
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-tAc",
        sql,
    ]))
    .trim()
    .to_string()
}

fn stop(container: &str) {
    must(Command::new("docker").args(["stop", "--time", "20", container]));
    must(Command::new("docker").args(["rm", container]));
}

fn step(t: &mut Instant, what: &str) {
    eprintln!("  {what}: {:.1}s", t.elapsed().as_secs_f64());
    *t = Instant::now();
}

#[test]
fn roles_converge_both_ways_on_keyword_named_databases() {
    if !common::docker_available("database_roles") {
        return;
    }
    let total = Instant::now();
    let mut t = Instant::now();
    // The postgresql base (cached by recipe hash: instant when built).
    let base = common::run_mcpctl(&common::repo_root(), &["bases", "build", "postgresql"]);
    assert!(
        base.status.success(),
        "bases build postgresql:\n{}{}",
        text(&base.stdout),
        text(&base.stderr)
    );
    let project = common::unique_project("dbroles");
    let db = Db {
        volume: format!("{project}-pgdata"),
        project,
        dir: tempfile::tempdir().unwrap(),
    };
    must(Command::new("docker").args([
        "volume",
        "create",
        "--label",
        &format!("com.mcp.project={}", db.project),
        &db.volume,
    ]));
    step(&mut t, "base");

    // 1. writer read_write on `user`, gone read_write on `order`.
    let image = db.build("a", Some("read_write"), true);
    let roles = [("mcp_writer", WRITER_PW), ("mcp_gone", GONE_PW)];
    let c = db.start("db-a", &image, &roles);
    step(&mut t, "first start (initdb)");
    assert_eq!(
        consumer_ok(
            &c,
            "mcp_writer",
            WRITER_PW,
            "user",
            "CREATE TABLE notes (i int); INSERT INTO notes VALUES (1); SELECT current_user || '@' || current_database()"
        ),
        "mcp_writer@user"
    );
    consumer_ok(&c, "mcp_gone", GONE_PW, "order", "CREATE TABLE o (i int)");
    // Each consumer reaches only its own database.
    let refused = consumer_err(&c, "mcp_gone", GONE_PW, "user", "SELECT 1");
    assert!(
        refused.contains("permission denied for database"),
        "{refused}"
    );
    // Drift made by hand, which the next start must remove: an attribute, a setting, a
    // privilege granted directly, a membership.
    superuser(
        &c,
        "user",
        "CREATE TABLE granted (i int); ALTER TABLE granted OWNER TO user_owner; \
         GRANT INSERT ON granted TO mcp_writer; ALTER ROLE mcp_writer CREATEDB; \
         ALTER ROLE mcp_writer SET work_mem = '1MB'; GRANT pg_write_all_data TO mcp_writer; \
         CREATE ROLE analyst LOGIN; GRANT user_owner TO analyst",
    );
    // Same manifest again: the convergence is idempotent (and already removes the drift).
    must(Command::new("docker").args(["restart", "--time", "20", &c]));
    common::wait_for_explained(
        "db-a accepting connections after a restart",
        Duration::from_secs(60),
        || {
            Command::new("docker")
                .args(["exec", &c, "pg_isready", "-q", "-h", "127.0.0.1"])
                .output()
                .ok()
                .filter(|o| o.status.success())
        },
        || common::container_report(&[&c]),
    );
    assert_eq!(
        consumer_ok(
            &c,
            "mcp_writer",
            WRITER_PW,
            "user",
            "INSERT INTO notes VALUES (2); SELECT count(*) FROM notes"
        ),
        "2"
    );
    stop(&c);
    step(&mut t, "writes, drift, restart");

    // 2. writer downgraded to read_only; gone removed (deploy no longer mounts its secret).
    let image = db.build("b", Some("read_only"), false);
    let c = db.start("db-b", &image, &roles[..1]);
    step(&mut t, "restart with the changed manifest");
    assert_eq!(
        consumer_ok(
            &c,
            "mcp_writer",
            WRITER_PW,
            "user",
            "SELECT count(*) FROM notes"
        ),
        "2",
        "the read-only consumer reads"
    );
    let e = consumer_err(
        &c,
        "mcp_writer",
        WRITER_PW,
        "user",
        "INSERT INTO notes VALUES (3)",
    );
    assert!(e.contains("read-only transaction"), "{e}");
    // The boundary is privileges, not the default a client may turn off.
    for sql in [
        "INSERT INTO notes VALUES (3)",
        "INSERT INTO granted VALUES (3)",
        "CREATE TABLE more (i int)",
        "DROP TABLE notes",
    ] {
        let out = consumer_with(
            &c,
            "mcp_writer",
            WRITER_PW,
            "user",
            sql,
            "-c default_transaction_read_only=off",
        );
        let e = text(&out.stderr);
        assert!(!out.status.success(), "the read-only consumer could: {sql}");
        assert!(
            e.contains("permission denied") || e.contains("must be owner"),
            "{sql}: {e}"
        );
    }
    let e = consumer_err(&c, "mcp_gone", GONE_PW, "order", "SELECT 1");
    assert!(
        e.contains("password authentication failed") || e.contains("not permitted to log in"),
        "{e}"
    );
    // What the catalog says now.
    assert_eq!(
        superuser(
            &c,
            "postgres",
            "SELECT string_agg(r.rolname || ':' || r.rolcanlogin || ':' || r.rolcreatedb || ':' || \
             coalesce((SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members a \
                       JOIN pg_roles g ON g.oid = a.roleid WHERE a.member = r.oid), '-'), ' ' ORDER BY r.rolname) \
             FROM pg_roles r WHERE r.rolname IN ('mcp_writer', 'mcp_gone', 'analyst')"
        ),
        "analyst:true:false:user_owner mcp_gone:false:false:- mcp_writer:true:false:pg_read_all_data",
        "logins, attributes and memberships (the operator's own role is untouched)"
    );
    assert_eq!(
        superuser(
            &c,
            "postgres",
            "SELECT string_agg(coalesce(d.datname, '*') || ':' || array_to_string(s.setconfig, ','), ' ') \
             FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE s.setrole = 'mcp_writer'::regrole"
        ),
        "user:default_transaction_read_only=on",
        "settings drift removed"
    );
    assert_eq!(
        superuser(
            &c,
            "user",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'"
        ),
        "user_owner",
        "the table the consumer created belongs to the database's owner"
    );
    stop(&c);
    step(&mut t, "checks");

    // 3. The last consumer removed too: the entrypoint still runs and disables it.
    let image = db.build("c", None, false);
    let c = db.start("db-c", &image, &[]);
    let e = consumer_err(&c, "mcp_writer", WRITER_PW, "user", "SELECT 1");
    assert!(
        e.contains("password authentication failed") || e.contains("not permitted to log in"),
        "{e}"
    );
    assert_eq!(
        superuser(&c, "user", "SELECT count(*) FROM notes"),
        "2",
        "the data stays"
    );
    stop(&c);
    step(&mut t, "no consumer left");
    eprintln!(
        "database_roles: {:.1}s in all",
        total.elapsed().as_secs_f64()
    );
}
