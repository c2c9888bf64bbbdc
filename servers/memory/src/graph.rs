//! The knowledge-graph data model and the pure rules the tools share with npm
//! `@modelcontextprotocol/server-memory` (search matching, "which relations belong to a node set").
//!
//! Owns: the wire shapes (field names and order are part of the contract: the tools' text result is
//! `JSON.stringify(value, null, 2)` of these, and serde serialises struct fields in declaration
//! order). Must not: touch the database.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub name: String,
    pub entity_type: String,
    pub observations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relation {
    pub from: String,
    pub to: String,
    pub relation_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeGraph {
    pub entities: Vec<Entity>,
    pub relations: Vec<Relation>,
}

/// One item of `add_observations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationAddition {
    pub entity_name: String,
    pub contents: Vec<String>,
}

/// One item of the `add_observations` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddedObservations {
    pub entity_name: String,
    pub added_observations: Vec<String>,
}

/// One item of `delete_observations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationDeletion {
    pub entity_name: String,
    pub observations: Vec<String>,
}

/// Case-insensitive substring match on name, type or any observation, as the reference does with
/// `String.prototype.toLowerCase` + `includes`. Done here rather than in SQL so the result does not
/// depend on the database's collation (`lower()` under the C locale only folds ASCII).
pub fn entity_matches(entity: &Entity, query: &str) -> bool {
    let q = query.to_lowercase();
    entity.name.to_lowercase().contains(&q)
        || entity.entity_type.to_lowercase().contains(&q)
        || entity
            .observations
            .iter()
            .any(|o| o.to_lowercase().contains(&q))
}

/// The sub-graph made of `entities` and every relation with at least one endpoint among them
/// (the reference's rule for both search_nodes and open_nodes), keeping the input order.
pub fn subgraph(entities: Vec<Entity>, relations: Vec<Relation>) -> KnowledgeGraph {
    let names: HashSet<&str> = entities.iter().map(|e| e.name.as_str()).collect();
    let relations = relations
        .into_iter()
        .filter(|r| names.contains(r.from.as_str()) || names.contains(r.to.as_str()))
        .collect();
    KnowledgeGraph {
        entities,
        relations,
    }
}

/// Search the whole graph.
pub fn search(graph: KnowledgeGraph, query: &str) -> KnowledgeGraph {
    let entities = graph
        .entities
        .into_iter()
        .filter(|e| entity_matches(e, query))
        .collect();
    subgraph(entities, graph.relations)
}

/// First occurrences only, order kept: the database holds each entity name, relation and
/// (entity, observation) pair once, so duplicates inside one request collapse.
pub fn dedup_keep_order<T: Eq + std::hash::Hash + Clone>(items: &[T]) -> Vec<T> {
    let mut seen = HashSet::new();
    items
        .iter()
        .filter(|i| seen.insert((*i).clone()))
        .cloned()
        .collect()
}

/// Pretty JSON exactly as `JSON.stringify(value, null, 2)` prints it (2-space indent, `": "`,
/// `[]` for empty arrays, non-ASCII left as is).
pub fn to_js_pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("graph values always serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, ty: &str, obs: &[&str]) -> Entity {
        Entity {
            name: name.into(),
            entity_type: ty.into(),
            observations: obs.iter().map(|s| s.to_string()).collect(),
        }
    }
    fn r(from: &str, to: &str, ty: &str) -> Relation {
        Relation {
            from: from.into(),
            to: to.into(),
            relation_type: ty.into(),
        }
    }

    #[test]
    fn search_is_case_insensitive_on_name_type_and_observations() {
        let g = KnowledgeGraph {
            entities: vec![
                e("Alice", "person", &["Likes TEA"]),
                e("Bob", "Robot", &[]),
                e("Ärger", "feeling", &[]),
            ],
            relations: vec![r("Alice", "Bob", "knows"), r("Bob", "Carol", "builds")],
        };
        let names = |g: KnowledgeGraph| -> Vec<String> {
            g.entities.into_iter().map(|e| e.name).collect::<Vec<_>>()
        };
        assert_eq!(names(search(g.clone(), "tea")), ["Alice"]);
        assert_eq!(names(search(g.clone(), "ROBOT")), ["Bob"]);
        assert_eq!(names(search(g.clone(), "äR")), ["Ärger"]);
        assert_eq!(names(search(g.clone(), "")), ["Alice", "Bob", "Ärger"]);
        // Relations with one endpoint in the result are kept, including to unknown entities.
        assert_eq!(
            search(g.clone(), "bob").relations,
            vec![r("Alice", "Bob", "knows"), r("Bob", "Carol", "builds")]
        );
        assert!(search(g, "zzz").relations.is_empty());
    }

    #[test]
    fn pretty_json_matches_javascript() {
        let g = KnowledgeGraph {
            entities: vec![e("a", "t", &[])],
            relations: vec![],
        };
        assert_eq!(
            to_js_pretty(&g),
            "{\n  \"entities\": [\n    {\n      \"name\": \"a\",\n      \"entityType\": \"t\",\n      \"observations\": []\n    }\n  ],\n  \"relations\": []\n}"
        );
        assert_eq!(to_js_pretty(&Vec::<Entity>::new()), "[]");
    }

    #[test]
    fn dedup_keeps_first_occurrence_order() {
        assert_eq!(
            dedup_keep_order(&["b", "a", "b", "c", "a"]),
            ["b", "a", "c"]
        );
    }
}
