//! The same scripted sequence against npm `@modelcontextprotocol/server-memory` and mcp-memory:
//! every result must match (text byte for byte, structuredContent as JSON, isError), and the tool
//! definitions must match. Nothing is normalised except `isError` absent == false, the reference's
//! `execution` hint (rmcp has no such field; absent means the same), and the detail of
//! argument-validation messages (zod's wording vs serde's; the prefix must match).

mod common;

use common::{is_error, prerequisite, text, McpProcess, PgCluster, TempDir};
use serde_json::{json, Value};

fn script() -> Vec<(&'static str, Value)> {
    vec![
        ("read_graph", json!({})),
        (
            "create_entities",
            json!({"entities": [
                {"name": "Alice", "entityType": "person", "observations": ["works at Acme", "likes tea"]},
                {"name": "Bob", "entityType": "person", "observations": ["Plays CHESS"]},
                {"name": "Acme", "entityType": "company", "observations": []}
            ]}),
        ),
        // Duplicate entity name (existing): only the new one is created and reported.
        (
            "create_entities",
            json!({"entities": [
                {"name": "Alice", "entityType": "robot", "observations": ["other"]},
                {"name": "Carol", "entityType": "person", "observations": ["new here"]}
            ]}),
        ),
        // Relations to an entity that does not exist are accepted by the reference.
        (
            "create_relations",
            json!({"relations": [
                {"from": "Alice", "to": "Acme", "relationType": "works_at"},
                {"from": "Bob", "to": "Alice", "relationType": "knows"},
                {"from": "Alice", "to": "Zed", "relationType": "knows"}
            ]}),
        ),
        (
            "create_relations",
            json!({"relations": [
                {"from": "Alice", "to": "Acme", "relationType": "works_at"},
                {"from": "Carol", "to": "Bob", "relationType": "knows"}
            ]}),
        ),
        (
            "add_observations",
            json!({"observations": [
                {"entityName": "Alice", "contents": ["likes tea", "drinks coffee"]},
                {"entityName": "Bob", "contents": ["likes tea"]},
                {"entityName": "Alice", "contents": ["drinks coffee", "reads"]}
            ]}),
        ),
        // A missing entity fails the whole call; Carol must not get "x" (checked by read_graph).
        (
            "add_observations",
            json!({"observations": [
                {"entityName": "Carol", "contents": ["x"]},
                {"entityName": "Nobody", "contents": ["y"]}
            ]}),
        ),
        ("read_graph", json!({})),
        ("search_nodes", json!({"query": "TEA"})),
        ("search_nodes", json!({"query": "acme"})),
        ("search_nodes", json!({"query": "PERSON"})),
        ("search_nodes", json!({"query": "zzz"})),
        ("open_nodes", json!({"names": ["Bob", "Alice", "Ghost"]})),
        ("open_nodes", json!({"names": ["Zed"]})),
        ("open_nodes", json!({"names": []})),
        // Deleting things that do not exist succeeds quietly.
        (
            "delete_observations",
            json!({"deletions": [
                {"entityName": "Alice", "observations": ["likes tea", "not there"]},
                {"entityName": "Ghost", "observations": ["x"]}
            ]}),
        ),
        (
            "delete_relations",
            json!({"relations": [
                {"from": "Bob", "to": "Alice", "relationType": "knows"},
                {"from": "No", "to": "One", "relationType": "here"}
            ]}),
        ),
        ("delete_entities", json!({"entityNames": ["Acme", "Ghost"]})),
        ("read_graph", json!({})),
        // Re-created after deletion: appended at the end (insertion order).
        (
            "create_entities",
            json!({"entities": [{"name": "Acme", "entityType": "company", "observations": ["back"]}]}),
        ),
        (
            "add_observations",
            json!({"observations": [
                {"entityName": "Acme", "contents": ["Ünïcode ✓ \"quoted\"\nnew line\ttab \\ back"]}
            ]}),
        ),
        ("search_nodes", json!({"query": "üNÏ"})),
        ("search_nodes", json!({"query": ""})),
        ("no_such_tool", json!({})),
        ("create_entities", json!({})),
        ("open_nodes", json!({"names": "Alice"})),
        ("read_graph", json!({})),
    ]
}

const VALIDATION_PREFIX: &str =
    "MCP error -32602: Input validation error: Invalid arguments for tool ";

#[test]
fn scripted_sequence_matches_reference_server_memory() {
    let Some(entry) = prerequisite(common::reference_server()) else {
        return;
    };
    let Some(pg) = prerequisite(PgCluster::start()) else {
        return;
    };
    let scratch = TempDir::new("ref");
    let mut reference = McpProcess::reference(&entry, &scratch.path().join("memory.jsonl"));
    let mut ours = McpProcess::memory(&pg.url());

    for (step, (tool, args)) in script().into_iter().enumerate() {
        let want = reference.call(tool, args.clone());
        let got = ours.call(tool, args.clone());
        let ctx = format!("step {step}: {tool} {args}\nreference: {want}\nours:      {got}");
        assert_eq!(is_error(&want), is_error(&got), "isError differs at {ctx}");
        if is_error(&want) && text(&want).starts_with(VALIDATION_PREFIX) {
            let upto = |t: &str| t.split(": ").take(3).collect::<Vec<_>>().join(": ");
            assert_eq!(
                upto(text(&want)),
                upto(text(&got)),
                "validation error at {ctx}"
            );
            continue;
        }
        assert_eq!(text(&want), text(&got), "text differs at {ctx}");
        assert_eq!(
            want.get("structuredContent"),
            got.get("structuredContent"),
            "structuredContent differs at {ctx}"
        );
        assert_eq!(
            want["content"].as_array().map(Vec::len),
            got["content"].as_array().map(Vec::len),
            "content blocks differ at {ctx}"
        );
    }

    // Sanity: the comparison above saw real data, not two empty graphs.
    let last = ours.call_ok("read_graph", json!({}));
    assert_eq!(last["entities"].as_array().unwrap().len(), 4, "{last}");
    assert!(
        !last.to_string().contains("\"x\""),
        "failed add_observations leaked: {last}"
    );

    if let Some(kib) = ours.rss_kib() {
        eprintln!(
            "figure: mcp-memory RSS after the parity script: {} KiB",
            kib
        );
    }
    if let Some(kib) = reference.rss_kib() {
        eprintln!("figure: reference server-memory (node) RSS: {} KiB", kib);
    }
}

#[test]
fn tool_definitions_match_reference() {
    let Some(entry) = prerequisite(common::reference_server()) else {
        return;
    };
    let scratch = TempDir::new("ref-tools");
    let mut reference = McpProcess::reference(&entry, &scratch.path().join("memory.jsonl"));
    // tools/list does not touch the database: a URL nobody listens on is fine.
    let mut ours = McpProcess::memory("postgres://postgres@127.0.0.1:9/none");

    let list = |p: &mut McpProcess| -> Vec<Value> {
        let r = p.request("tools/list", json!({}));
        let mut tools = r["result"]["tools"].as_array().cloned().unwrap_or_default();
        for t in &mut tools {
            t.as_object_mut().unwrap().remove("execution");
        }
        tools
    };
    let want = list(&mut reference);
    let got = list(&mut ours);
    assert_eq!(want.len(), 9);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "tool definition differs for {}", w["name"]);
    }
    assert_eq!(want.len(), got.len());
}
