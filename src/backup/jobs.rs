//! The one-off containers of backup, verify and restore: their shell scripts (run by the
//! PostgreSQL image's `/bin/sh`, as its own `postgres` user) and [`JobSpec`]s. Names reach the
//! scripts only as positional arguments (`"$@"`), never spliced into the script text; the
//! superuser password only as the mounted secret file, read inside the job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{Bind, JobSpec};

/// How long one job may run: a dump or restore of a database this size class takes seconds to
/// minutes; an hour means something is stuck (a lock held by a client, an engine problem).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// Memory of a job container (pg_dump/pg_restore stream; the verify job's throwaway server uses
/// the default, small shared_buffers).
pub const JOB_MEMORY: i64 = 512 << 20;

const PGBIN: &str = r#"PGBIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d | sort -V | tail -n 1)
if [ -z "$PGBIN" ]; then echo "no PostgreSQL under /usr/lib/postgresql in this image" >&2; exit 2; fi
"#;

const LOGIN: &str = r#"host=$1; shift
PGPASSWORD=$(cat /run/secrets/POSTGRES_PASSWORD)
export PGPASSWORD PGHOST="$host" PGUSER=postgres PGCONNECT_TIMEOUT=10
"#;

/// `sh -c DUMP mcpctl-dump HOST DB...`: `/tmp/out/server_version`, and per database
/// `<db>.dump` (custom format) and `<db>.level` (its `schema_migrations` level, when it has one).
const DUMP: &str = r#"mkdir -p /tmp/out
"$PGBIN/psql" -d postgres -XAtc 'show server_version' > /tmp/out/server_version
for db in "$@"; do
  "$PGBIN/pg_dump" --format=custom --dbname="$db" --file="/tmp/out/$db.dump"
  if ! "$PGBIN/psql" -d "$db" -XAt -c 'select coalesce(max(version), 0) from schema_migrations' > "/tmp/out/$db.level" 2>/dev/null; then
    rm -f "/tmp/out/$db.level"
  fi
  echo "dumped $db"
done
"#;

/// `sh -c RESTORE mcpctl-restore HOST DB...` with `/tmp/in/<db>.dump`: each database replaced
/// in ONE transaction (`--single-transaction`): it commits whole or changes nothing. A lock held
/// by a client for over a minute fails it rather than hanging.
const RESTORE: &str = r#"export PGOPTIONS='-c lock_timeout=60s'
for db in "$@"; do
  "$PGBIN/pg_restore" --clean --if-exists --single-transaction --exit-on-error --dbname="$db" "/tmp/in/$db.dump"
  echo "restored $db"
done
"#;

/// `sh -c VERIFY mcpctl-verify COUNT_SQL` with `/tmp/in/<db>.dump`: a throwaway server in the
/// job's own filesystem (no network, trust on its socket only), each dump restored into a new
/// database, then `/tmp/out/rows.tsv`: `database<TAB>schema.table<TAB>rows`.
const VERIFY: &str = r#"count_sql=$1
mkdir -p /tmp/out
: > /tmp/out/rows.tsv
"$PGBIN/initdb" --pgdata=/tmp/pg --username=postgres --auth=trust --encoding=UTF8 > /dev/null
"$PGBIN/pg_ctl" --pgdata=/tmp/pg --wait --silent \
  --options="-c listen_addresses='' -c unix_socket_directories=/tmp -c fsync=off" start
export PGHOST=/tmp PGUSER=postgres
for f in /tmp/in/*.dump; do
  db=$(basename "$f" .dump)
  "$PGBIN/createdb" "$db"
  "$PGBIN/pg_restore" --no-owner --no-acl --exit-on-error --dbname="$db" "$f"
  "$PGBIN/psql" -d "$db" -XAt -F '	' -c "$count_sql" | while IFS= read -r line; do
    printf '%s\t%s\n' "$db" "$line" >> /tmp/out/rows.tsv
  done
  echo "verified $db"
done
"$PGBIN/pg_ctl" --pgdata=/tmp/pg --wait --silent --mode=fast stop
"#;

/// Exact row count of every table (not the planner's estimate).
const COUNT_SQL: &str = "select format('%I.%I', table_schema, table_name), \
(xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]::text \
from information_schema.tables where table_type = 'BASE TABLE' \
and table_schema not in ('pg_catalog', 'information_schema') order by 1";

/// What every job shares: the image, labels, limits.
pub struct Common {
    pub project: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

impl Common {
    fn job(&self, kind: &str, script: &str, args: Vec<String>) -> JobSpec {
        let mut entrypoint = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            format!("set -eu\n{PGBIN}{script}"),
            format!("mcpctl-{kind}"),
        ];
        entrypoint.extend(args);
        JobSpec {
            name: format!(
                "{}-job-{kind}-{}",
                self.project,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            image: self.image.clone(),
            entrypoint,
            env: BTreeMap::new(),
            labels: self.labels.clone(),
            network: None,
            binds: vec![],
            memory: JOB_MEMORY,
            user: None,
            cap_add: vec![],
            input: None,
            output: None,
            timeout: JOB_TIMEOUT,
        }
    }
}

/// Where a job reaches the database: the project network, the database's network name, and the
/// superuser password file the serving revision mounts.
pub struct Server {
    pub network: String,
    pub host: String,
    pub password: Bind,
}

fn online(mut job: JobSpec, server: &Server) -> JobSpec {
    job.network = Some(server.network.clone());
    job.binds = vec![Bind {
        source: server.password.source.clone(),
        target: "/run/secrets/POSTGRES_PASSWORD".into(),
        read_only: true,
    }];
    job
}

pub fn dump(c: &Common, server: &Server, databases: &[String], out_tar: PathBuf) -> JobSpec {
    let mut args = vec![server.host.clone()];
    args.extend(databases.iter().cloned());
    let mut job = online(c.job("dump", &format!("{LOGIN}{DUMP}"), args), server);
    job.output = Some(("/tmp/out".into(), out_tar));
    job
}

pub fn restore(c: &Common, server: &Server, databases: &[String], in_tar: PathBuf) -> JobSpec {
    let mut args = vec![server.host.clone()];
    args.extend(databases.iter().cloned());
    let mut job = online(c.job("restore", &format!("{LOGIN}{RESTORE}"), args), server);
    job.input = Some((in_tar, "/tmp".into()));
    job
}

/// `sh -c VOLUME mcpctl-volume TARGET` with the archive unpacked under `/tmp` (the engine's
/// archive of TARGET holds its base name): the volume mounted at TARGET is emptied and filled
/// from it, owners and modes kept. Root with just the capabilities file ownership needs.
const VOLUME: &str = r#"t=$1
b=$(basename "$t")
test -d "/tmp/$b" || { echo "the archive holds no $b/" >&2; exit 2; }
find "$t" -mindepth 1 -delete
cp -a "/tmp/$b/." "$t/"
echo "restored $t"
"#;

/// Refill the named `volume` (mounted at `target`) from `archive`, in a job from `image` (any
/// image with `/bin/sh`, `find` and `cp`: the service's own).
pub fn volume(c: &Common, image: &str, volume: &str, target: &str, archive: PathBuf) -> JobSpec {
    let mut job = c.job("volume", "", vec![]);
    job.entrypoint = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("set -eu\n{VOLUME}"),
        "mcpctl-volume".into(),
        target.into(),
    ];
    job.image = image.to_string();
    job.user = Some("0".into());
    job.cap_add = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
        .map(String::from)
        .to_vec();
    job.binds = vec![Bind {
        source: volume.to_string(),
        target: target.to_string(),
        read_only: false,
    }];
    job.input = Some((archive, "/tmp".into()));
    job
}

pub fn verify(c: &Common, in_tar: PathBuf, out_tar: PathBuf) -> JobSpec {
    let mut job = c.job("verify", VERIFY, vec![COUNT_SQL.to_string()]);
    job.input = Some((in_tar, "/tmp".into()));
    job.output = Some(("/tmp/out".into(), out_tar));
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common() -> Common {
        Common {
            project: "mcp".into(),
            image: "mcp/db:1".into(),
            labels: BTreeMap::new(),
        }
    }

    fn server() -> Server {
        Server {
            network: "mcp-net".into(),
            host: "mcp-db".into(),
            password: Bind {
                source: "/state/secrets/db/POSTGRES_PASSWORD@ab".into(),
                target: "/run/secrets/POSTGRES_PASSWORD".into(),
                read_only: true,
            },
        }
    }

    #[test]
    fn names_are_arguments_never_script_text_and_no_secret_is_in_the_config() {
        let evil = "x\"; rm -rf / #".to_string();
        let j = dump(
            &common(),
            &server(),
            std::slice::from_ref(&evil),
            "/o.tar".into(),
        );
        assert_eq!(&j.entrypoint[..2], ["/bin/sh", "-c"]);
        assert!(
            !j.entrypoint[2].contains("rm -rf"),
            "the script is fixed text"
        );
        assert_eq!(j.entrypoint[3], "mcpctl-dump");
        assert_eq!(&j.entrypoint[4..], ["mcp-db".to_string(), evil]);
        assert!(j.env.is_empty(), "nothing secret (or otherwise) in env");
        assert!(j.binds.iter().all(|b| b.read_only));
        assert_eq!(j.network.as_deref(), Some("mcp-net"));
        assert!(j.name.starts_with("mcp-job-dump-"));
    }

    #[test]
    fn verify_runs_offline_and_restore_brings_its_input() {
        let v = verify(&common(), "/i.tar".into(), "/o.tar".into());
        assert_eq!(v.network, None, "a verify job needs no network");
        assert!(v.binds.is_empty(), "nor any secret");
        let r = restore(&common(), &server(), &["memory".into()], "/i.tar".into());
        assert_eq!(r.input.as_ref().unwrap().1, "/tmp");
        assert!(r.entrypoint[2].contains("--single-transaction"));
    }
}
