//! mcpctl as a library: the binary (`src/main.rs`) is a thin shell over these modules, and the
//! integration tests use them directly.
//!
//! Features (Cargo.toml): `runtime` compiles what runs inside a container (bridge, edge server,
//! metrics, version), `docker-proxy` adds the exporter's Docker proxy and the engine client
//! (bollard), `cli` (default) everything the operator runs on the host. A module only the host
//! uses is gated on `cli`; the in-container binary never links it.

#[cfg(feature = "cli")]
pub mod apidocs;
#[cfg(feature = "cli")]
pub mod audit;
#[cfg(feature = "cli")]
pub mod auth;
#[cfg(feature = "cli")]
pub mod backup;
pub mod bridge;
pub mod cli;
pub mod commands;
#[cfg(feature = "cli")]
pub mod cutover;
#[cfg(feature = "docker-proxy")]
pub mod dockerproxy;
#[cfg(feature = "cli")]
pub mod doctor;
pub mod edge;
#[cfg(feature = "docker-proxy")]
pub mod engine;
pub mod error;
#[cfg(feature = "cli")]
pub mod health;
#[cfg(feature = "cli")]
pub mod images;
pub mod locks;
#[cfg(feature = "cli")]
pub mod manifest;
#[cfg(feature = "cli")]
pub mod mcp;
pub mod metrics;
pub mod output;
#[cfg(feature = "cli")]
pub mod render;
#[cfg(feature = "cli")]
pub mod rollout;
pub mod settings;
#[cfg(feature = "cli")]
pub mod soak;
