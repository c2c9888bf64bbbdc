//! MCP-level health: the deploy gate (`gate`: initialize, tools/list ⊇ expected, tool schema
//! digest and drift, smoke steps with their `expect`, all within a deadline), built on the MCP
//! client of [`crate::mcp`].
//!
//! Owns: judging a deployed service by what it says over MCP. Must not: touch the engine (the
//! caller watches the container), print, or retry beyond the deadline it is given.

pub mod gate;

pub use gate::{Check, GateReport};
