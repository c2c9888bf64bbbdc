//! The MCP face of the store: tool definitions, argument parsing, result formatting.
//!
//! Owns: parity with npm `@modelcontextprotocol/server-memory` at the protocol level — the same
//! tool names, schemas, descriptions and annotations (src/tools.json, taken from the reference's
//! own tools/list), the same text and structuredContent, and the same way of reporting failures
//! (a tool result with `isError: true` and the reference's message, also for unknown tools and
//! invalid arguments, where the reference's SDK does the same). Must not: hold SQL.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::graph::{
    self, to_js_pretty, Entity, ObservationAddition, ObservationDeletion, Relation,
};
use crate::store::Store;

const TOOLS_JSON: &str = include_str!("tools.json");

pub fn tool_definitions() -> Vec<Tool> {
    serde_json::from_str(TOOLS_JSON).expect("src/tools.json holds valid tool definitions")
}

#[derive(Clone)]
pub struct MemoryServer {
    store: Arc<Store>,
    tools: Arc<Vec<Tool>>,
}

impl MemoryServer {
    pub fn new(store: Arc<Store>) -> Self {
        MemoryServer {
            store,
            tools: Arc::new(tool_definitions()),
        }
    }

    async fn call(&self, name: &str, args: JsonObject) -> Result<CallToolResult, String> {
        let store = &self.store;
        let db = |e: crate::store::StoreError| {
            tracing::warn!(tool = name, error = %e, "tool call failed");
            e.to_string()
        };
        match name {
            "create_entities" => {
                let a: CreateEntities = parse(name, args)?;
                let created = store.create_entities(&a.entities).await.map_err(db)?;
                Ok(structured(&created, json!({ "entities": created })))
            }
            "create_relations" => {
                let a: Relations = parse(name, args)?;
                let created = store.create_relations(&a.relations).await.map_err(db)?;
                Ok(structured(&created, json!({ "relations": created })))
            }
            "add_observations" => {
                let a: AddObservations = parse(name, args)?;
                let results = store.add_observations(&a.observations).await.map_err(db)?;
                Ok(structured(&results, json!({ "results": results })))
            }
            "delete_entities" => {
                let a: DeleteEntities = parse(name, args)?;
                store.delete_entities(&a.entity_names).await.map_err(db)?;
                Ok(done("Entities deleted successfully"))
            }
            "delete_observations" => {
                let a: DeleteObservations = parse(name, args)?;
                store.delete_observations(&a.deletions).await.map_err(db)?;
                Ok(done("Observations deleted successfully"))
            }
            "delete_relations" => {
                let a: Relations = parse(name, args)?;
                store.delete_relations(&a.relations).await.map_err(db)?;
                Ok(done("Relations deleted successfully"))
            }
            "read_graph" => {
                let g = store.read_graph().await.map_err(db)?;
                Ok(structured(&g, to_value(&g)))
            }
            "search_nodes" => {
                let a: Search = parse(name, args)?;
                let g = graph::search(store.read_graph().await.map_err(db)?, &a.query);
                Ok(structured(&g, to_value(&g)))
            }
            "open_nodes" => {
                let a: OpenNodes = parse(name, args)?;
                let g = store.open_nodes(&a.names).await.map_err(db)?;
                Ok(structured(&g, to_value(&g)))
            }
            // The reference's SDK turns an unknown tool into this tool error (code -32602).
            _ => Err(format!("MCP error -32602: Tool {name} not found")),
        }
    }
}

impl ServerHandler for MemoryServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcp-memory", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = match self.call(&request.name, args).await {
            Ok(r) => r,
            Err(message) => CallToolResult::error(vec![ContentBlock::text(message)]),
        };
        Ok(result.into())
    }
}

#[derive(Deserialize)]
struct CreateEntities {
    entities: Vec<Entity>,
}
#[derive(Deserialize)]
struct Relations {
    relations: Vec<Relation>,
}
#[derive(Deserialize)]
struct AddObservations {
    observations: Vec<ObservationAddition>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteEntities {
    entity_names: Vec<String>,
}
#[derive(Deserialize)]
struct DeleteObservations {
    deletions: Vec<ObservationDeletion>,
}
#[derive(Deserialize)]
struct Search {
    query: String,
}
#[derive(Deserialize)]
struct OpenNodes {
    names: Vec<String>,
}

fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, String> {
    serde_json::from_value(Value::Object(args)).map_err(|e| {
        format!("MCP error -32602: Input validation error: Invalid arguments for tool {tool}: {e}")
    })
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("graph values always serialise")
}

/// Text = `JSON.stringify(text_of, null, 2)`, plus the structured form.
fn structured<T: Serialize>(text_of: &T, structured: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(to_js_pretty(text_of))]);
    r.structured_content = Some(structured);
    r
}

fn done(message: &str) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(message)]);
    r.structured_content = Some(json!({ "success": true, "message": message }));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_tools_with_schemas() {
        let tools = tool_definitions();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "create_entities",
                "create_relations",
                "add_observations",
                "delete_entities",
                "delete_observations",
                "delete_relations",
                "read_graph",
                "search_nodes",
                "open_nodes"
            ]
        );
        for t in &tools {
            assert!(t.description.is_some() && t.title.is_some(), "{}", t.name);
            assert_eq!(t.input_schema.get("type"), Some(&json!("object")));
            assert!(t.output_schema.is_some() && t.annotations.is_some());
        }
    }

    #[test]
    fn bad_arguments_are_reported_with_the_reference_prefix() {
        let err = parse::<CreateEntities>("create_entities", JsonObject::new())
            .err()
            .unwrap();
        assert!(err.starts_with(
            "MCP error -32602: Input validation error: Invalid arguments for tool create_entities: "
        ));
    }
}
