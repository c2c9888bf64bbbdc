//! mcp-memory's own guarantees, beyond parity: data survives a server restart and a database
//! restart, concurrent clients never duplicate entities, the schema is migrated once and an older
//! binary keeps working against a newer (expanded) schema, and duplicates inside one request
//! collapse (a deliberate difference from the reference, which stores them twice).

mod common;

use std::time::{Duration, Instant};

use common::{is_error, prerequisite, text, McpProcess, PgCluster};
use serde_json::{json, Value};

fn names(graph: &Value) -> Vec<String> {
    graph["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

fn seed(p: &mut McpProcess) {
    p.call_ok(
        "create_entities",
        json!({"entities": [
            {"name": "Alice", "entityType": "person", "observations": ["likes tea"]},
            {"name": "Acme", "entityType": "company", "observations": []}
        ]}),
    );
    p.call_ok(
        "create_relations",
        json!({"relations": [{"from": "Alice", "to": "Acme", "relationType": "works_at"}]}),
    );
}

#[test]
fn data_survives_server_restart_and_schema_is_migrated_once() {
    let Some(pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    let mut first = McpProcess::memory(&pg.url());
    seed(&mut first);
    let before = first.call_ok("read_graph", json!({}));
    let status = first.shutdown();
    assert!(status.success(), "server exit on stdin EOF: {status}");

    let mut second = McpProcess::memory(&pg.url());
    let after = second.call_ok("read_graph", json!({}));
    assert_eq!(before, after);
    assert_eq!(names(&after), ["Alice", "Acme"]);
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',') FROM schema_migrations"),
        "1"
    );
    let status = second.terminate();
    assert!(status.success(), "server exit on SIGTERM: {status}");
}

#[test]
fn survives_database_restart_and_a_database_that_starts_late() {
    let Some(mut pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    let url = pg.url();
    pg.stop();

    // Database down at start: the MCP handshake and tools/list still work, tool calls fail cleanly.
    let mut server = McpProcess::memory(&url);
    let tools = server.request("tools/list", json!({}));
    assert_eq!(tools["result"]["tools"].as_array().map(Vec::len), Some(9));
    let started = Instant::now();
    let r = server.call("read_graph", json!({}));
    assert!(is_error(&r), "read_graph with no database: {r}");
    assert!(text(&r).contains("database unavailable"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "error took {:?}",
        started.elapsed()
    );

    // Database comes up: the first call migrates and works, without restarting the server.
    pg.resume();
    seed(&mut server);
    let before = server.call_ok("read_graph", json!({}));

    // Restart the database under the running server (pooled connections die).
    pg.stop();
    let during = server.call("read_graph", json!({}));
    assert!(is_error(&during), "read_graph during the outage: {during}");
    assert!(text(&during).contains("database unavailable"), "{during}");
    pg.resume();
    let after = server.call_ok("read_graph", json!({}));
    assert_eq!(before, after, "data after the database restart");
    server.call_ok(
        "add_observations",
        json!({"observations": [{"entityName": "Alice", "contents": ["still here"]}]}),
    );

    // A restart nobody saw: the pooled connections are dead, the next call must still succeed.
    pg.stop();
    pg.resume();
    let g = server.call_ok("open_nodes", json!({"names": ["Alice"]}));
    assert_eq!(
        g["entities"][0]["observations"],
        json!(["likes tea", "still here"])
    );
}

#[test]
fn concurrent_clients_never_duplicate_entities() {
    let Some(pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    // Migrate first so both servers race on data, not on the schema (that race is covered by
    // the advisory lock; here we want the unique constraints).
    McpProcess::memory(&pg.url()).call_ok("read_graph", json!({}));

    let batch: Vec<Value> = (0..25)
        .map(|i| json!({"name": format!("E{i}"), "entityType": "thing", "observations": ["o"]}))
        .collect();
    let relations: Vec<Value> = (0..25)
        .map(|i| json!({"from": format!("E{i}"), "to": "E0", "relationType": "points_at"}))
        .collect();
    // The second client goes in reverse order, so the two transactions wait on each other's
    // uncommitted rows: PostgreSQL breaks the deadlock and the server must retry, not fail.
    let handles: Vec<_> = (0..2)
        .map(|client| {
            let url = pg.url();
            let mut batch = batch.clone();
            let mut relations = relations.clone();
            if client == 1 {
                batch.reverse();
                relations.reverse();
            }
            std::thread::spawn(move || {
                let mut p = McpProcess::memory(&url);
                let mut created = 0;
                for _ in 0..3 {
                    let r = p.call_ok("create_entities", json!({"entities": batch}));
                    created += r.as_array().unwrap().len();
                    p.call_ok("create_relations", json!({"relations": relations}));
                    p.call_ok(
                        "add_observations",
                        json!({"observations": [{"entityName": "E1", "contents": ["same"]}]}),
                    );
                }
                created
            })
        })
        .collect();
    let created: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(created, 25, "each entity reported as created exactly once");

    let mut p = McpProcess::memory(&pg.url());
    let g = p.call_ok("read_graph", json!({}));
    let mut n = names(&g);
    assert_eq!(n.len(), 25, "{g}");
    n.sort();
    n.dedup();
    assert_eq!(n.len(), 25, "duplicate entities: {g}");
    assert_eq!(g["relations"].as_array().unwrap().len(), 25);
    let e1 = g["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "E1")
        .unwrap();
    assert_eq!(e1["observations"], json!(["o", "same"]));
}

#[test]
fn duplicates_inside_one_request_collapse() {
    let Some(pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    let mut p = McpProcess::memory(&pg.url());
    let created = p.call_ok(
        "create_entities",
        json!({"entities": [
            {"name": "A", "entityType": "t", "observations": ["x", "x", "y"]},
            {"name": "A", "entityType": "other", "observations": []}
        ]}),
    );
    assert_eq!(
        created,
        json!([{"name": "A", "entityType": "t", "observations": ["x", "y"]}])
    );
    let rel = json!({"from": "A", "to": "B", "relationType": "r"});
    let created = p.call_ok("create_relations", json!({"relations": [rel, rel]}));
    assert_eq!(created, json!([rel]));
    let added = p.call_ok(
        "add_observations",
        json!({"observations": [{"entityName": "A", "contents": ["z", "z", "x"]}]}),
    );
    assert_eq!(
        added,
        json!([{"entityName": "A", "addedObservations": ["z"]}])
    );
    // Long observations are fine (uniqueness is on a hash, not the btree-limited text).
    let long = "l".repeat(20_000);
    let added = p.call_ok(
        "add_observations",
        json!({"observations": [{"entityName": "A", "contents": [long]}]}),
    );
    assert_eq!(
        added[0]["addedObservations"][0].as_str().map(str::len),
        Some(20_000)
    );
    let g = p.call_ok("open_nodes", json!({"names": ["A"]}));
    assert_eq!(
        g["entities"][0]["observations"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn older_binary_works_against_a_newer_expanded_schema() {
    let Some(pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    let mut p = McpProcess::memory(&pg.url());
    seed(&mut p);
    drop(p);
    // What a later release's expand-only migration could do: add columns, tables, and record a
    // version this binary does not know. This binary must neither fail nor try to undo it.
    pg.psql(
        "ALTER TABLE entities ADD COLUMN importance integer NOT NULL DEFAULT 0;
         CREATE TABLE entity_embeddings (entity_id bigint REFERENCES entities (id));
         INSERT INTO schema_migrations (version, name) VALUES (2, 'from_the_future')",
    );
    let mut p = McpProcess::memory(&pg.url());
    let g = p.call_ok("read_graph", json!({}));
    assert_eq!(names(&g), ["Alice", "Acme"]);
    p.call_ok(
        "create_entities",
        json!({"entities": [{"name": "Bob", "entityType": "person", "observations": []}]}),
    );
    assert_eq!(pg.psql("SELECT count(*) FROM entities"), "3");
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"),
        "1,2"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.stderr().contains("newer than this binary") {
        assert!(
            Instant::now() < deadline,
            "no warning about the newer schema:\n{}",
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
