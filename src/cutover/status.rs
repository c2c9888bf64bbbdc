//! `cutover status`: per service, the cutover flag (`cutover.json`), the edge's route, and whether
//! the old proxy answers; the retirement and the last check. Reads only.

use std::time::Duration;

use serde::Serialize;

use super::edge::{self, RouteView};
use super::probe::mcp_answers;
use super::scope::Scope;
use super::state::{CutoverState, LastCheck, Retired, ServiceState};
use crate::mcp::Mode;

#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// The cutover flag: which side `cutover.json` says the edge routes it to, and since when.
    pub flag: Option<ServiceState>,
    /// The edge's route (None: no route, or the edge did not answer).
    pub route: Option<RouteView>,
    pub legacy_url: String,
    pub legacy_answers: bool,
    /// What the old proxy answered: its tool count, or why not.
    #[serde(skip)]
    pub legacy: Result<usize, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub services: Vec<ServiceStatus>,
    pub retired: Option<Retired>,
    pub last_check: Option<LastCheck>,
    /// Why the edge's routes could not be read.
    pub edge_error: Option<String>,
}

pub async fn run(scope: &Scope, edge_admin: &str) -> anyhow::Result<StatusReport> {
    let names = scope.selected(&[])?;
    let st = CutoverState::load(&scope.state_dir)?;
    let admin = edge::admin(edge_admin, Duration::from_secs(3), &scope.state_dir);
    let routes = edge::routes(&admin).await;
    let mut services = Vec::new();
    for n in &names {
        let legacy = scope.legacy(n);
        let old = mcp_answers(
            &legacy.url,
            legacy.transport,
            None,
            Duration::from_secs(3),
            Mode::Legacy,
        )
        .await;
        services.push(ServiceStatus {
            service: n.clone(),
            flag: st.services.get(n).cloned(),
            route: routes.as_ref().ok().and_then(|r| r.get(n)).cloned(),
            legacy_url: legacy.url.clone(),
            legacy_answers: old.is_ok(),
            legacy: old,
        });
    }
    Ok(StatusReport {
        services,
        retired: st.retired,
        last_check: st.last_check,
        edge_error: routes.as_ref().err().map(|e| e.to_string()),
    })
}
