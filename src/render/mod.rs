//! Rendering of artifacts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind { Dockerfiles, Compose, Litellm }
