//! The one MCP client of mcpctl: legacy HTTP+SSE, Streamable HTTP and stateless 2026-07-28 over
//! reqwest (`client`, with the era probe), the modern request shape and discover classification
//! (`modern`), and the `text/event-stream` decoding the transports need (`sse`). The deploy gate
//! ([`crate::health`]), soak, cutover and the tests speak MCP through it.
//!
//! Owns: speaking MCP as a client. Must not: touch the engine (the caller watches the
//! container), print, or retry beyond the deadline it is given.

pub mod client;
#[cfg(test)]
pub(crate) mod fake;
pub mod modern;
pub mod sse;

pub use client::{
    Era, McpError, Mode, Options, Probe, Session, Tool, ToolResult, Transport, DISCOVER_TIMEOUT,
};
pub use modern::Discovery;
