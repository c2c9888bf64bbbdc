//! PostgreSQL storage for the knowledge graph: a deadpool connection pool, the migration gate, a
//! short retry on connection loss, and one function per graph operation.
//!
//! Owns: SQL and the mapping from database errors to [`StoreError`]. Must not: format tool
//! results (server.rs) or write to stdout.
//!
//! Surviving a database restart: pooled connections whose socket closed are dropped on checkout
//! (`RecyclingMethod::Fast` checks `is_closed`), and an operation that fails because the connection
//! went away (or the server is shutting down / starting up) is retried with a fresh connection
//! until `retry_window` has passed, then reported as a clean "database unavailable" error. Every
//! operation is idempotent at the row level (ON CONFLICT / DELETE), so a retry after a lost COMMIT
//! acknowledgement cannot duplicate data; at worst the retried call reports fewer "new" items.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::tokio_postgres::{
    self, error::SqlState, types::ToSql, IsolationLevel, NoTls,
};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::sync::Mutex;
use tokio::time::{sleep, timeout, Instant};

use crate::graph::{
    dedup_keep_order, AddedObservations, Entity, KnowledgeGraph, ObservationAddition,
    ObservationDeletion, Relation,
};
use crate::migrations;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The reference's exact message (add_observations on a missing entity).
    #[error("Entity with name {0} not found")]
    EntityNotFound(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(String),
    /// A deadlock or serialization failure between concurrent calls; retried like an outage.
    #[error("database conflict with a concurrent call: {0}")]
    Conflict(String),
    #[error("database call did not finish within {0:?}")]
    Timeout(Duration),
}

impl StoreError {
    fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Conflict(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let connection_class = code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW;
            let text = format!("{} ({})", db.message(), code.code());
            return if connection_class {
                StoreError::Unavailable(text)
            } else if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
            {
                StoreError::Conflict(text)
            } else {
                StoreError::Database(text)
            };
        }
        // No SQLSTATE: the socket failed, the connection was closed, or connecting failed.
        let mut text = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            text = format!("{text}: {src}");
        }
        if e.is_closed() || std::error::Error::source(&e).is_some() {
            StoreError::Unavailable(text)
        } else {
            StoreError::Database(text)
        }
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => match StoreError::from(e) {
                StoreError::Database(t) => StoreError::Unavailable(t),
                other => other,
            },
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// Run `$body` (an expression using `$client: &mut Object`, evaluating to `Result<T>`) on a pooled
/// connection with the schema ensured, retrying connection-class failures with a fresh connection
/// until the retry window closes; each attempt is bounded by the operation timeout. (A macro rather
/// than a function taking an async closure: the closure's future could not be proven `Send`.)
macro_rules! with_retry {
    ($store:expr, $client:ident => $body:expr) => {{
        let store: &Store = $store;
        let deadline = Instant::now() + store.retry_window;
        let mut backoff = Duration::from_millis(50);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = typed(async {
                let mut conn = store.pool.get().await?;
                store.migrate_with(&mut conn).await?;
                let $client = &mut conn;
                $body
            });
            let err = match timeout(store.op_timeout, attempt).await {
                Ok(Ok(v)) => break Ok(v),
                Ok(Err(e)) => e,
                Err(_) => break Err(StoreError::Timeout(store.op_timeout)),
            };
            // A conflict gets a few attempts even when detecting it used up the window
            // (deadlock_timeout is 1 s by default).
            let wait = store.next_backoff(deadline, &mut backoff).or_else(|| {
                matches!(err, StoreError::Conflict(_))
                    .then_some(Duration::from_millis(50))
                    .filter(|_| attempts < 3)
            });
            match wait {
                Some(wait) if err.retryable() => {
                    tracing::warn!(error = %err, "database call failed; retrying with a fresh connection");
                    sleep(wait).await;
                }
                _ => break Err(err),
            }
        }
    }};
}

/// Pins an attempt's output type so `?` inside the macro body knows its error type.
fn typed<T, F: std::future::Future<Output = Result<T>>>(f: F) -> F {
    f
}

pub struct Store {
    pool: Pool,
    migrated: AtomicBool,
    migrate_lock: Mutex<()>,
    op_timeout: Duration,
    retry_window: Duration,
}

type Result<T> = std::result::Result<T, StoreError>;

impl Store {
    pub fn new(settings: &Settings) -> std::result::Result<Self, String> {
        let mut pg: tokio_postgres::Config = settings
            .database_url
            .parse()
            .map_err(|e| format!("DATABASE_URL is not a valid PostgreSQL URL: {e}"))?;
        pg.connect_timeout(settings.connect_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("mcp-memory");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.connect_timeout))
            .create_timeout(Some(settings.connect_timeout))
            .recycle_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| format!("cannot build the connection pool: {e}"))?;
        Ok(Store {
            pool,
            migrated: AtomicBool::new(false),
            migrate_lock: Mutex::new(()),
            op_timeout: settings.op_timeout,
            retry_window: settings.retry_window,
        })
    }

    /// Run migrations now (called at start; errors are logged by the caller and retried lazily).
    pub async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        self.migrate_with(&mut client).await
    }

    async fn migrate_with(&self, client: &mut Object) -> Result<()> {
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let _guard = self.migrate_lock.lock().await;
        if self.migrated.load(Ordering::Acquire) {
            return Ok(());
        }
        let outcome = migrations::run(client).await?;
        let latest = migrations::latest_known();
        if outcome.applied.is_empty() {
            tracing::info!(version = outcome.current, "schema up to date");
        } else {
            tracing::info!(applied = ?outcome.applied, version = outcome.current, "schema migrated");
        }
        if outcome.current > latest {
            tracing::warn!(
                database = outcome.current,
                binary = latest,
                "the schema is newer than this binary (migrations are expand-only: continuing)"
            );
        }
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// Pause before the next attempt of a connection-class failure, or `None` once the retry
    /// window has closed.
    fn next_backoff(&self, deadline: Instant, backoff: &mut Duration) -> Option<Duration> {
        let wait = *backoff;
        if Instant::now() + wait > deadline {
            return None;
        }
        *backoff = (wait * 2).min(Duration::from_millis(500));
        Some(wait)
    }

    pub async fn create_entities(&self, entities: &[Entity]) -> Result<Vec<Entity>> {
        // One row per name: later duplicates inside the request are ignored.
        let mut seen = HashSet::new();
        let wanted: Vec<&Entity> = entities
            .iter()
            .filter(|e| seen.insert(e.name.as_str()))
            .collect();
        with_retry!(self, client => {
            let tx = client.transaction().await?;
            let insert_entity = tx
                .prepare_cached(
                    "INSERT INTO entities (name, entity_type) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .await?;
            let insert_obs = tx.prepare_cached(INSERT_OBSERVATIONS).await?;
            let mut created = Vec::new();
            for e in &wanted {
                let row = tx
                    .query_opt(&insert_entity, &[&e.name, &e.entity_type])
                    .await?;
                let Some(row) = row else { continue };
                let id: i64 = row.get(0);
                let observations = dedup_keep_order(&e.observations);
                tx.query(&insert_obs, &[&id, &observations]).await?;
                created.push(Entity {
                    name: e.name.clone(),
                    entity_type: e.entity_type.clone(),
                    observations,
                });
            }
            tx.commit().await?;
            Ok(created)
        })
    }

    pub async fn create_relations(&self, relations: &[Relation]) -> Result<Vec<Relation>> {
        let wanted = dedup_keep_order(relations);
        let (from, to, ty) = columns(&wanted);
        with_retry!(self, client => {
            let st = client
                .prepare_cached(
                    "INSERT INTO relations (from_name, to_name, relation_type)
                     SELECT f, t, r FROM unnest($1::text[], $2::text[], $3::text[])
                          WITH ORDINALITY AS u(f, t, r, n)
                     ORDER BY n
                     ON CONFLICT DO NOTHING
                     RETURNING from_name, to_name, relation_type",
                )
                .await?;
            let rows = client.query(&st, &[&from, &to, &ty]).await?;
            let inserted: HashSet<Relation> = rows.iter().map(relation_from_row).collect();
            Ok(wanted
                .iter()
                .filter(|r| inserted.contains(*r))
                .cloned()
                .collect())
        })
    }

    pub async fn add_observations(
        &self,
        additions: &[ObservationAddition],
    ) -> Result<Vec<AddedObservations>> {
        with_retry!(self, client => {
            // All or nothing, like the reference: a missing entity fails the whole call.
            let tx = client.transaction().await?;
            let find = tx
                .prepare_cached("SELECT id FROM entities WHERE name = $1")
                .await?;
            let insert_obs = tx.prepare_cached(INSERT_OBSERVATIONS).await?;
            let mut results = Vec::with_capacity(additions.len());
            for a in additions {
                let Some(row) = tx.query_opt(&find, &[&a.entity_name]).await? else {
                    return Err(StoreError::EntityNotFound(a.entity_name.clone()));
                };
                let id: i64 = row.get(0);
                let contents = dedup_keep_order(&a.contents);
                let rows = tx.query(&insert_obs, &[&id, &contents]).await?;
                let inserted: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
                results.push(AddedObservations {
                    entity_name: a.entity_name.clone(),
                    added_observations: contents
                        .into_iter()
                        .filter(|c| inserted.contains(c))
                        .collect(),
                });
            }
            tx.commit().await?;
            Ok(results)
        })
    }

    pub async fn delete_entities(&self, names: &[String]) -> Result<()> {
        with_retry!(self, client => {
            let tx = client.transaction().await?;
            tx.execute(
                "DELETE FROM relations WHERE from_name = ANY($1) OR to_name = ANY($1)",
                &[&names],
            )
            .await?;
            // Observations go with their entity (ON DELETE CASCADE).
            tx.execute("DELETE FROM entities WHERE name = ANY($1)", &[&names])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn delete_observations(&self, deletions: &[ObservationDeletion]) -> Result<()> {
        with_retry!(self, client => {
            let tx = client.transaction().await?;
            let st = tx
                .prepare_cached(
                    "DELETE FROM observations o USING entities e
                     WHERE o.entity_id = e.id AND e.name = $1 AND o.content = ANY($2)",
                )
                .await?;
            for d in deletions {
                tx.execute(&st, &[&d.entity_name, &d.observations]).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn delete_relations(&self, relations: &[Relation]) -> Result<()> {
        let (from, to, ty) = columns(relations);
        with_retry!(self, client => {
            let st = client
                .prepare_cached(
                    "DELETE FROM relations r
                     USING unnest($1::text[], $2::text[], $3::text[]) AS u(f, t, ty)
                     WHERE r.from_name = u.f AND r.to_name = u.t AND r.relation_type = u.ty",
                )
                .await?;
            client.execute(&st, &[&from, &to, &ty]).await?;
            Ok(())
        })
    }

    pub async fn read_graph(&self) -> Result<KnowledgeGraph> {
        with_retry!(self, client => {
            let tx = snapshot(client).await?;
            let entities = load_entities(
                &tx,
                "SELECT id, name, entity_type FROM entities ORDER BY id",
                "SELECT entity_id, content FROM observations ORDER BY id",
                &[],
            )
            .await?;
            let rows = tx
                .query(
                    "SELECT from_name, to_name, relation_type FROM relations ORDER BY id",
                    &[],
                )
                .await?;
            tx.commit().await?;
            Ok(KnowledgeGraph {
                entities,
                relations: rows.iter().map(relation_from_row).collect(),
            })
        })
    }

    /// The named entities (in insertion order) and every relation touching one of them.
    pub async fn open_nodes(&self, names: &[String]) -> Result<KnowledgeGraph> {
        with_retry!(self, client => {
            let tx = snapshot(client).await?;
            let entities = load_entities(
                &tx,
                "SELECT id, name, entity_type FROM entities WHERE name = ANY($1) ORDER BY id",
                "SELECT o.entity_id, o.content FROM observations o
                 JOIN entities e ON e.id = o.entity_id
                 WHERE e.name = ANY($1) ORDER BY o.id",
                &[&names],
            )
            .await?;
            let found: Vec<&str> = entities.iter().map(|e| e.name.as_str()).collect();
            let rows = tx
                .query(
                    "SELECT from_name, to_name, relation_type FROM relations
                     WHERE from_name = ANY($1) OR to_name = ANY($1) ORDER BY id",
                    &[&found],
                )
                .await?;
            tx.commit().await?;
            Ok(KnowledgeGraph {
                entities,
                relations: rows.iter().map(relation_from_row).collect(),
            })
        })
    }
}

/// Insert an entity's observations in the given order, skipping ones it already has; returns the
/// inserted contents.
const INSERT_OBSERVATIONS: &str = "
    INSERT INTO observations (entity_id, content)
    SELECT $1, c FROM unnest($2::text[]) WITH ORDINALITY AS u(c, n)
    ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING content";

/// A consistent read: all three tables from one snapshot.
async fn snapshot(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

async fn load_entities(
    tx: &deadpool_postgres::Transaction<'_>,
    entities_sql: &str,
    observations_sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Entity>> {
    let rows = tx.query(entities_sql, params).await?;
    let mut index = HashMap::with_capacity(rows.len());
    let mut entities = Vec::with_capacity(rows.len());
    for row in &rows {
        index.insert(row.get::<_, i64>(0), entities.len());
        entities.push(Entity {
            name: row.get(1),
            entity_type: row.get(2),
            observations: Vec::new(),
        });
    }
    for row in tx.query(observations_sql, params).await? {
        if let Some(&i) = index.get(&row.get::<_, i64>(0)) {
            entities[i].observations.push(row.get(1));
        }
    }
    Ok(entities)
}

fn relation_from_row(row: &tokio_postgres::Row) -> Relation {
    Relation {
        from: row.get(0),
        to: row.get(1),
        relation_type: row.get(2),
    }
}

fn columns(relations: &[Relation]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    (
        relations.iter().map(|r| r.from.as_str()).collect(),
        relations.iter().map(|r| r.to.as_str()).collect(),
        relations.iter().map(|r| r.relation_type.as_str()).collect(),
    )
}
