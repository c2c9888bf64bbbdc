//! MCP-level health: the one MCP client of mcpctl (`client`: legacy HTTP+SSE and Streamable HTTP
//! over reqwest) and the deploy gate built on it (`gate`: initialize, tools/list ⊇ expected, tool
//! schema digest and drift, smoke steps with their `expect`, all within a deadline).
//!
//! Owns: speaking MCP as a client. Must not: touch the engine (the caller watches the container),
//! print, or retry beyond the deadline it is given. Soak, cutover and monitoring reuse `client`.

pub mod client;
pub mod gate;

pub use client::{McpError, Options, Session, Tool, ToolResult};
pub use gate::{Check, GateReport};
