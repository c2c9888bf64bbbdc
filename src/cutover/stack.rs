//! The serving revision of a service, found by its Docker labels (the truth about what runs): what
//! the edge routes to when a service is switched to the stack, and where `check` and the switch's
//! pre-flight reach it directly.

use std::time::Duration;

use crate::engine::labels::Keys;
use crate::engine::{ContainerInfo, Engine, RunState};
use crate::manifest::Manifest;

/// A running revision of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackContainer {
    /// `http://<container>:<container port>` on the project network (what the edge routes to).
    pub upstream: String,
    pub revision: Option<u64>,
    /// Its port published on the host, if any (behind the edge: an ephemeral 127.0.0.1 port).
    pub host_port: Option<u16>,
}

impl StackContainer {
    /// Where this host reaches it directly: its published port on loopback.
    pub fn direct_url(&self) -> Option<String> {
        self.host_port.map(|p| format!("http://127.0.0.1:{p}"))
    }
}

/// The serving revision of `service`, asking the local Docker engine.
pub async fn find(manifest: &Manifest, service: &str) -> anyhow::Result<StackContainer> {
    let engine = tokio::time::timeout(
        Duration::from_secs(5),
        crate::engine::docker::DockerEngine::connect(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the Docker engine did not answer"))??;
    let keys = Keys::new(&manifest.label_prefix);
    let list = engine
        .list_containers(&keys.project_filter(&manifest.project))
        .await?;
    serving(manifest, service, &keys, list)
}

/// Of the project's containers, the newest running service container of `service` that is not in
/// a rollout phase (a candidate being gated, a revision being stopped).
pub fn serving(
    manifest: &Manifest,
    service: &str,
    keys: &Keys,
    containers: Vec<ContainerInfo>,
) -> anyhow::Result<StackContainer> {
    let c = containers
        .into_iter()
        .filter(|c| {
            c.labels.get(&keys.service()).map(String::as_str) == Some(service)
                && c.labels.get(&keys.role()).map(String::as_str) == Some("service")
                && !c.labels.contains_key(&keys.phase())
                && c.state == RunState::Running
        })
        .max_by_key(|c| c.created)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no running revision of `{service}` (deploy it first: mcpctl deploy {service})"
            )
        })?;
    let revision = c.labels.get(&keys.release()).and_then(|r| r.parse().ok());
    let port = manifest.services[service].container_port;
    Ok(StackContainer {
        upstream: format!("http://{}:{port}", c.name),
        revision,
        host_port: c.ports.get(&port).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::manifest;
    use std::collections::BTreeMap;

    fn container(
        name: &str,
        service: &str,
        release: &str,
        phase: Option<&str>,
        state: RunState,
        created: i64,
    ) -> ContainerInfo {
        let keys = Keys::new("com.mcp");
        let mut labels = BTreeMap::from([
            (keys.service(), service.to_string()),
            (keys.role(), "service".to_string()),
            (keys.release(), release.to_string()),
        ]);
        if let Some(p) = phase {
            labels.insert(keys.phase(), p.to_string());
        }
        ContainerInfo {
            id: name.into(),
            name: name.into(),
            image: "img".into(),
            labels,
            state,
            created,
            ports: BTreeMap::from([(8080, 49153)]),
        }
    }

    #[test]
    fn the_serving_revision_is_the_newest_running_one_not_in_a_rollout_phase() {
        let m = manifest(true);
        let keys = Keys::new("com.mcp");
        let list = vec![
            container("p-alpha-r2", "alpha", "2", None, RunState::Running, 10),
            container("p-alpha-r3", "alpha", "3", None, RunState::Running, 20),
            container(
                "p-alpha-r4",
                "alpha",
                "4",
                Some("candidate"),
                RunState::Running,
                30,
            ),
            container("p-alpha-r5", "alpha", "5", None, RunState::Exited, 40),
            container("p-gamma-r9", "gamma", "9", None, RunState::Running, 50),
        ];
        let c = serving(&m, "alpha", &keys, list.clone()).unwrap();
        assert_eq!(
            c,
            StackContainer {
                upstream: "http://p-alpha-r3:8080".into(),
                revision: Some(3),
                host_port: Some(49153),
            }
        );
        assert_eq!(c.direct_url().as_deref(), Some("http://127.0.0.1:49153"));
        let e = serving(&m, "plain", &keys, list).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no running revision of `plain` (deploy it first: mcpctl deploy plain)"
        );
    }
}
