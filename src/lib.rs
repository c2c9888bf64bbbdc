//! mcpctl as a library: the binary (`src/main.rs`) is a thin shell over these modules, and the
//! integration tests use them directly.

pub mod audit;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod commands;
pub mod cutover;
pub mod dockerproxy;
pub mod doctor;
pub mod edge;
pub mod engine;
pub mod error;
pub mod health;
pub mod images;
pub mod locks;
pub mod manifest;
pub mod mcp;
pub mod metrics;
pub mod output;
pub mod render;
pub mod rollout;
pub mod settings;
pub mod soak;
