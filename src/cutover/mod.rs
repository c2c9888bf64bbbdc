//! `mcpctl cutover`: move LiteLLM's traffic from the old proxy (the endpoints the manifest names as
//! `legacy`) to the new stack, service by service, with the old setup kept running as the rollback
//! path until it is retired. Each command's work is one function here returning a typed,
//! `Serialize` report; `commands/cutover.rs` parses, confirms, holds the lock and prints.
//!
//! - [`check_run`]: `cutover check` end to end — [`targets`] (where old and new answer),
//!   [`check`] (old vs new, then through LiteLLM), the report kept and recorded;
//! - [`compare`]: old vs new side by side per service (tools/list names and input schemas, smoke
//!   results) — pure diffing over what [`crate::mcp`] observed;
//! - [`litellm`]: the LiteLLM proxy — started from its venv with the rendered config byte for byte,
//!   or an existing one — and its REST (`/v1/mcp/tools`, `/mcp-rest/tools/call`) and MCP (`/mcp`)
//!   endpoints;
//! - [`latency`]: the same calls timed directly and through LiteLLM (p50/p95);
//! - [`switch`]: `switch`/`revert` — pre-flight, one route change at the edge, verify through the
//!   published port (the previous route back on failure), state and ledger;
//! - [`retire`]: stop the old proxy once every service was on the stack for the clean period;
//! - [`status`]: flag, route and old proxy per service;
//! - [`report`]: the human text of every report;
//! - [`edge`]: the edge's admin API through its own client and route model (`GET/PUT /routes`);
//!   switching a service is one route change there, so LiteLLM keeps pointing at `mcp-<service>`
//!   and never restarts; [`stack`]: the serving revision by its labels; [`probe`]: does an MCP
//!   endpoint answer;
//! - [`scope`]: the manifest, state directory and services a command works on;
//! - [`state`]: `<state>/cutover.json`, the feature flag per service (legacy | stack) and the
//!   retirement record.
//!
//! This module never edits the edge's code, the ledger format or the manifest; it changes routes
//! through the admin API and appends ledger entries. It does not print.

pub mod check;
pub mod check_run;
pub mod compare;
pub mod edge;
pub mod latency;
pub mod litellm;
pub mod probe;
pub mod report;
pub mod retire;
pub mod scope;
pub mod stack;
pub mod state;
pub mod status;
pub mod switch;
pub mod targets;

#[cfg(test)]
mod testing;
