//! The contract labels (docs/contracts.md "Names") and the few mcpctl adds for rollout. Docker
//! labels are the truth about what runs: every container, image, network and volume mcpctl
//! creates carries `<p>.managed=true` and `<p>.project`.

use std::collections::BTreeMap;

/// The most containers one revision runs (manifest `replicas`; a label never asks for more).
pub const MAX_REPLICAS: u32 = 8;

/// Label keys under one prefix (`<p>`, manifest `label_prefix`).
#[derive(Debug, Clone)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }
    fn k(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
    pub fn managed(&self) -> String {
        self.k("managed")
    }
    pub fn project(&self) -> String {
        self.k("project")
    }
    pub fn service(&self) -> String {
        self.k("service")
    }
    pub fn role(&self) -> String {
        self.k("role")
    }
    pub fn release(&self) -> String {
        self.k("release")
    }
    pub fn config_hash(&self) -> String {
        self.k("config-hash")
    }
    pub fn mcp_type(&self) -> String {
        self.k("mcp-type")
    }
    /// The revision's recorded container config (JSON of [`super::ContainerSpec`]), for rollback
    /// without a state directory. Holds secret *paths*, never values.
    pub fn spec(&self) -> String {
        self.k("spec")
    }
    /// The revision's gate settings (JSON of the manifest's `health`), so a restore is verified
    /// by the gate that revision passed.
    pub fn gate(&self) -> String {
        self.k("gate")
    }
    /// `candidate` while a revision is gated on an ephemeral port; absent on serving revisions.
    pub fn phase(&self) -> String {
        self.k("phase")
    }
    /// How many containers the revision runs (manifest `replicas`), on its own container when
    /// more than one; a rollback restores the same count.
    pub fn replicas(&self) -> String {
        self.k("replicas")
    }
    /// The replica count a revision's labels record (1 when absent).
    pub fn replica_count(&self, labels: &BTreeMap<String, String>) -> u32 {
        labels
            .get(&self.replicas())
            .and_then(|n| n.parse().ok())
            .filter(|n| *n >= 1)
            .unwrap_or(1)
            .min(MAX_REPLICAS)
    }
    /// `2`, `3`…: one of a revision's other replicas (`<revision container>-<n>`, manifest
    /// `replicas`), started and gated after the revision's own container and balanced with it by
    /// the edge. Absent on the revision's container (replica 1), which stands for the revision.
    pub fn replica(&self) -> String {
        self.k("replica")
    }
    /// HMAC of the secret values the revision started with (rotation shows in `plan`).
    pub fn secrets_hmac(&self) -> String {
        self.k("secrets-hmac")
    }
    /// The image's content hash (rendered build files, locks, base id, mcpctl digest).
    pub fn image_hash(&self) -> String {
        self.k("image-hash")
    }
    /// Lock details (on the `<project>-lock` container).
    pub fn lock(&self, field: &str) -> String {
        self.k(&format!("lock.{field}"))
    }

    /// The filter selecting everything of one project.
    pub fn project_filter(&self, project: &str) -> String {
        format!("{}={project}", self.project())
    }

    /// `managed`, `project` and `role`: the labels of networks, volumes and the lock.
    pub fn base(&self, project: &str, role: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (self.managed(), "true".to_string()),
            (self.project(), project.to_string()),
            (self.role(), role.to_string()),
        ])
    }
}
