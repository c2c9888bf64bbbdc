//! `mcpctl cutover`: move LiteLLM's traffic from the old proxy (the endpoints the manifest names as
//! `legacy`) to the new stack, service by service, with the old setup kept running as the rollback
//! path until it is retired.
//!
//! - [`compare`]: old vs new side by side per service (tools/list names and input schemas, smoke
//!   results) — pure diffing over what [`crate::health::client`] observed;
//! - [`litellm`]: the LiteLLM proxy — started from its venv with the rendered config byte for byte,
//!   or an existing one — and its REST (`/v1/mcp/tools`, `/mcp-rest/tools/call`) and MCP (`/mcp`)
//!   endpoints;
//! - [`latency`]: the same calls timed directly and through LiteLLM (p50/p95);
//! - [`edge`]: the HTTP client of the edge's loopback admin API (`GET/PUT /routes`); switching a
//!   service is one route change there, so LiteLLM keeps pointing at `mcp-<service>` and never
//!   restarts;
//! - [`state`]: `<state>/cutover.json`, the feature flag per service (legacy | stack) and the
//!   retirement record.
//!
//! This module never edits the edge, the ledger format or the manifest; it only reads them and
//! appends ledger entries.

pub mod check;
pub mod compare;
pub mod edge;
pub mod latency;
pub mod litellm;
pub mod state;
