//! Expand-only schema migrations, applied at start (and on first use if the database was not
//! reachable then).
//!
//! Owns: the list of migrations and the `schema_migrations` ledger. Rules: a migration is never
//! edited or removed once released, and never drops or renames anything a previous release reads,
//! so an older binary keeps working against a newer schema (rollback across a migration needs no
//! down-migration; there is none). A database ahead of this binary is accepted with a log line.

use deadpool_postgres::tokio_postgres::{Client, Error};

/// One forward step. `sql` runs inside the migration transaction.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Append only.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "knowledge_graph",
    // Identity ids give insertion order (the reference keeps entities, relations and observations in
    // insertion order). Relations name their endpoints rather than referencing entity rows: the
    // reference accepts relations to entities that do not exist. Observation uniqueness uses an md5
    // expression index so long observations stay under the btree row-size limit.
    sql: "
CREATE TABLE entities (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL,
    entity_type text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entities_name_key UNIQUE (name)
);
CREATE TABLE observations (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id  bigint NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    content    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX observations_entity_content_key ON observations (entity_id, md5(content));
CREATE TABLE relations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_name     text NOT NULL,
    to_name       text NOT NULL,
    relation_type text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT relations_key UNIQUE (from_name, to_name, relation_type)
);
CREATE INDEX relations_to_name_idx ON relations (to_name);
",
}];

/// Serialises concurrent starters (two replicas, or a restart racing the old process).
const LOCK_KEY: i64 = 0x6d63_702d_6d65_6d6f; // "mcp-memo"

/// What `run` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<i32>,
    /// Highest version recorded in the database after the run.
    pub current: i32,
}

pub fn latest_known() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Apply every missing migration in one transaction under an advisory lock.
pub async fn run(client: &mut Client) -> Result<Outcome, Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut outcome = Outcome::default();
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        outcome.applied.push(m.version);
    }
    outcome.current = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_strictly_increasing_and_expand_only() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.version);
            last = m.version;
            let sql = m.sql.to_ascii_uppercase();
            for forbidden in ["DROP ", "RENAME ", "TRUNCATE "] {
                assert!(
                    !sql.contains(forbidden),
                    "migration {} is not expand-only ({forbidden})",
                    m.version
                );
            }
        }
        assert_eq!(latest_known(), last);
    }
}
