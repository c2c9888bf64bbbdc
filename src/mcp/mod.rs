//! The one MCP client of mcpctl: legacy HTTP+SSE and Streamable HTTP over reqwest (`client`),
//! with the `text/event-stream` decoding both transports need (`sse`). The deploy gate
//! ([`crate::health`]), soak, cutover and the tests speak MCP through it.
//!
//! Owns: speaking MCP as a client. Must not: touch the engine (the caller watches the
//! container), print, or retry beyond the deadline it is given.

pub mod client;
pub mod sse;

pub use client::{McpError, Options, Session, Tool, ToolResult, Transport};
