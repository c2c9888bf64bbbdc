//! The MCP face: the five tool definitions, argument checking, and turning every outcome into a
//! tool result. A failure is a result with `isError: true` naming what failed, never a protocol
//! error and never a hang (each call has an overall deadline on top of the per-request ones).
//!
//! Owns: tool names, schemas, descriptions. Must not: fetch anything itself (monitor.rs does).

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::monitor::{self, Monitor, Output, ToolError};

/// No tool call takes longer than this, whatever the network does.
const TOOL_DEADLINE: Duration = Duration::from_secs(10);

pub fn tool_definitions() -> Vec<Tool> {
    let service = json!({
        "type": "string",
        "pattern": "^[a-z][a-z0-9]{0,30}$",
        "description": "Service name as in the stack manifest, e.g. fetch"
    });
    let read_only = json!({
        "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false
    });
    let defs = json!([
        {
            "name": "list_services",
            "title": "List services",
            "description": "Every service of this stack: role, container state, Docker health, revision (r<release>-<hash>), uptime, restarts, bridge readiness, and why any is unhealthy.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": read_only,
        },
        {
            "name": "service_health",
            "title": "Service health",
            "description": "Health of one service: its bridge's /readyz answer plus container state, Docker health, exit code and OOM flag. Unhealthy when the container is not running, its Docker health is not healthy, or /readyz is not 200; the reasons are given in plain words.",
            "inputSchema": {"type": "object", "properties": {"service": service}, "required": ["service"], "additionalProperties": false},
            "annotations": read_only,
        },
        {
            "name": "service_stats",
            "title": "Service stats",
            "description": "Resource use of one service: memory used (usage minus inactive file cache, as docker stats shows) and limit, CPU, plus request, error and session counts from its bridge's /metrics.",
            "inputSchema": {"type": "object", "properties": {"service": service}, "required": ["service"], "additionalProperties": false},
            "annotations": read_only,
        },
        {
            "name": "recent_logs",
            "title": "Recent logs",
            "description": "The last lines a service's container wrote to stdout/stderr (stderr lines are marked).",
            "inputSchema": {"type": "object", "properties": {
                "service": service,
                "lines": {"type": "integer", "minimum": 1, "maximum": monitor::MAX_LOG_LINES,
                          "default": monitor::DEFAULT_LOG_LINES, "description": "How many lines, 1 to 1000 (default 50)"}
            }, "required": ["service"], "additionalProperties": false},
            "annotations": read_only,
        },
        {
            "name": "firing_alerts",
            "title": "Firing alerts",
            "description": "Alerts currently firing in Prometheus (when PROMETHEUS_URL is configured; otherwise says that none is).",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "annotations": read_only,
        }
    ]);
    serde_json::from_value(defs).expect("tool definitions are valid")
}

#[derive(Clone)]
pub struct MonitoringServer {
    monitor: Arc<Monitor>,
    tools: Arc<Vec<Tool>>,
}

impl MonitoringServer {
    pub fn new(monitor: Monitor) -> Self {
        MonitoringServer {
            monitor: Arc::new(monitor),
            tools: Arc::new(tool_definitions()),
        }
    }

    async fn call(&self, name: &str, args: JsonObject) -> Result<Output, ToolError> {
        let m = &self.monitor;
        match name {
            "list_services" => {
                parse::<NoArgs>(name, args)?;
                m.list_services().await
            }
            "service_health" => {
                let a: ServiceArgs = parse(name, args)?;
                monitor::check_service_name(&a.service)?;
                m.service_health(&a.service).await
            }
            "service_stats" => {
                let a: ServiceArgs = parse(name, args)?;
                monitor::check_service_name(&a.service)?;
                m.service_stats(&a.service).await
            }
            "recent_logs" => {
                let a: LogsArgs = parse(name, args)?;
                monitor::check_service_name(&a.service)?;
                let lines = monitor::log_line_count(a.lines.as_ref())?;
                m.recent_logs(&a.service, lines).await
            }
            "firing_alerts" => {
                parse::<NoArgs>(name, args)?;
                m.firing_alerts().await
            }
            _ => Err(format!(
                "unknown tool '{name}'; tools: list_services, service_health, service_stats, recent_logs, firing_alerts"
            )),
        }
    }
}

impl ServerHandler for MonitoringServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("mcp-monitoring", env!("CARGO_PKG_VERSION")),
        )
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
        let name = request.name.to_string();
        let args = request.arguments.unwrap_or_default();
        let outcome = match tokio::time::timeout(TOOL_DEADLINE, self.call(&name, args)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{name} gave up after {}s without a complete answer",
                TOOL_DEADLINE.as_secs()
            )),
        };
        let result = match outcome {
            Ok(out) => {
                let mut r = CallToolResult::success(vec![ContentBlock::text(out.text)]);
                r.structured_content = Some(out.data);
                r
            }
            Err(message) => {
                tracing::warn!(tool = %name, error = %message, "tool call failed");
                CallToolResult::error(vec![ContentBlock::text(format!(
                    "{name} failed: {message}"
                ))])
            }
        };
        Ok(result.into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceArgs {
    service: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsArgs {
    service: String,
    lines: Option<Value>,
}

fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(args))
        .map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_tools_with_object_schemas() {
        let tools = tool_definitions();
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "list_services",
                "service_health",
                "service_stats",
                "recent_logs",
                "firing_alerts"
            ]
        );
        for t in &tools {
            assert_eq!(
                t.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                t.name
            );
            assert!(t.description.is_some() && t.annotations.is_some());
        }
    }

    #[test]
    fn unknown_and_missing_arguments_are_refused() {
        let mut args = JsonObject::new();
        args.insert("servce".into(), json!("fetch"));
        let e = parse::<ServiceArgs>("service_health", args).err().unwrap();
        assert!(
            e.starts_with("invalid arguments for service_health: unknown field `servce`"),
            "{e}"
        );
        assert!(parse::<ServiceArgs>("x", JsonObject::new()).is_err());
    }
}
