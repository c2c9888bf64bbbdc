//! Where `cutover check` finds each side of a service: the old proxy at the manifest's `legacy`
//! URL, and the new stack at `--new-url`, else its serving revision's own host port, else its
//! published port — but only when that port is known to reach the stack (no edge, or the edge
//! routes the service to the stack): comparing the old proxy with itself would pass.

use std::collections::BTreeMap;

use super::check::Target;
use super::edge::{strip_transport_suffix, RouteKind, RouteView};
use super::scope::Scope;
use super::stack::{self, StackContainer};
use crate::error::CommandError;
use crate::manifest::Manifest;

/// `--new-url SERVICE=URL` flags, for services among `names`; URLs without a transport suffix.
pub fn parse_new_urls(
    specs: &[String],
    names: &[String],
) -> Result<BTreeMap<String, String>, CommandError> {
    let mut new_urls = BTreeMap::new();
    for spec in specs {
        let (svc, url) = spec.split_once('=').ok_or_else(|| {
            CommandError::usage(format!("--new-url {spec}: expected SERVICE=URL"))
        })?;
        if !names.iter().any(|n| n == svc) {
            return Err(CommandError::usage(format!(
                "--new-url {spec}: `{svc}` is not among the services checked ({})",
                names.join(", ")
            )));
        }
        new_urls.insert(svc.to_string(), strip_transport_suffix(url));
    }
    Ok(new_urls)
}

/// Where the new stack answers for `name`: `given` (`--new-url`), else the serving revision's
/// host port (behind the edge it keeps an ephemeral 127.0.0.1 port, so "new" is the stack even
/// while the edge routes the service to the old proxy), else the published port when it is the
/// stack's. `serving` is the lookup of the serving revision (None when not looked up); `route`
/// is the edge's route for the service, when the edge answered.
pub fn new_base(
    manifest: &Manifest,
    name: &str,
    given: Option<&String>,
    serving: Option<&anyhow::Result<StackContainer>>,
    route: Option<&RouteView>,
) -> Result<String, CommandError> {
    let published_is_stack =
        !manifest.edge.enabled || route.is_some_and(|r| r.kind == RouteKind::Stack);
    let host_port = serving
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.host_port);
    match (given, host_port, manifest.services[name].port) {
        (Some(u), _, _) => Ok(u.clone()),
        (None, Some(p), _) => Ok(format!("http://127.0.0.1:{p}")),
        (None, None, Some(p)) if published_is_stack => {
            Ok(format!("http://{}:{p}", manifest.bind_address))
        }
        (None, None, Some(_)) => {
            let why = match serving {
                Some(Err(e)) => e.to_string(),
                _ => "the serving revision publishes no port".into(),
            };
            Err(CommandError::usage(format!(
                "service `{name}`: cannot reach its serving revision ({why}), and its \
                 published port may be the old proxy (the edge does not route it to the \
                 stack): fix that, or give --new-url {name}=URL"
            )))
        }
        (None, None, None) => Err(CommandError::usage(format!(
            "service `{name}` has no running revision with a port and publishes none: \
             give --new-url {name}=URL"
        ))),
    }
}

/// The targets of a check: both sides of every named service, with the edge's current route.
pub async fn resolve(
    scope: &Scope,
    names: &[String],
    new_urls: &BTreeMap<String, String>,
    routes: Option<&BTreeMap<String, RouteView>>,
) -> anyhow::Result<Vec<Target>> {
    let manifest = &scope.manifest;
    let mut targets = Vec::new();
    for name in names {
        let svc = &manifest.services[name];
        let legacy = scope.legacy(name);
        let given = new_urls.get(name);
        let serving = match given {
            Some(_) => None,
            None => Some(stack::find(manifest, name).await),
        };
        let route = routes.and_then(|r| r.get(name));
        let new_base = new_base(manifest, name, given, serving.as_ref(), route)?;
        targets.push(Target {
            service: name.clone(),
            old_base: strip_transport_suffix(&legacy.url),
            old_transport: legacy.transport,
            new_base,
            new_transport: scope.transport(name),
            new_token: scope.token(name).map(crate::auth::Bearer::new),
            smoke: svc.health.smoke.clone(),
            tools: svc.tools.clone(),
            slo_p95_ms: svc.slo.p95_ms,
            routed_to: route.map(|r| r.kind.as_str().to_string()),
        });
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cutover::testing::{manifest, route};

    fn container(host_port: Option<u16>) -> anyhow::Result<StackContainer> {
        Ok(StackContainer {
            upstream: "http://p-alpha-r3:8080".into(),
            revision: Some(3),
            host_port,
        })
    }

    #[test]
    fn new_urls_name_checked_services_and_lose_their_suffix() {
        let names = ["alpha".to_string()];
        let got = parse_new_urls(&["alpha=http://127.0.0.1:9/mcp/".into()], &names).unwrap();
        assert_eq!(got["alpha"], "http://127.0.0.1:9");
        let e = parse_new_urls(&["beta=http://x".into()], &names).unwrap_err();
        assert!(
            e.message.contains("not among the services checked (alpha)"),
            "{e}"
        );
        assert!(parse_new_urls(&["alpha".into()], &names).is_err());
    }

    #[test]
    fn the_new_side_is_the_stack_never_possibly_the_old_proxy() {
        let behind_edge = manifest(true);
        let given = "http://10.0.0.1:1".to_string();
        let on_stack = route(RouteKind::Stack);
        let on_legacy = route(RouteKind::Legacy);
        // --new-url wins; then the serving revision's own port.
        assert_eq!(
            new_base(&behind_edge, "alpha", Some(&given), None, None).unwrap(),
            given
        );
        assert_eq!(
            new_base(
                &behind_edge,
                "alpha",
                None,
                Some(&container(Some(49153))),
                Some(&on_legacy)
            )
            .unwrap(),
            "http://127.0.0.1:49153"
        );
        // Without one, the published port only when the edge routes the service to the stack.
        let none = anyhow::Result::Err(anyhow::anyhow!("no running revision of `alpha`"));
        assert_eq!(
            new_base(&behind_edge, "alpha", None, Some(&none), Some(&on_stack)).unwrap(),
            "http://127.0.0.1:8501"
        );
        let e = new_base(&behind_edge, "alpha", None, Some(&none), Some(&on_legacy)).unwrap_err();
        assert!(
            e.message.contains("no running revision of `alpha`")
                && e.message.contains("--new-url alpha=URL"),
            "{e}"
        );
        let e = new_base(&behind_edge, "alpha", None, Some(&container(None)), None).unwrap_err();
        assert!(e.message.contains("publishes no port"), "{e}");
        // No edge: the published port is the stack's.
        assert_eq!(
            new_base(&manifest(false), "alpha", None, Some(&none), None).unwrap(),
            "http://127.0.0.1:8501"
        );
        // A service publishing nothing needs --new-url.
        let mut unpublished = behind_edge;
        unpublished.services.get_mut("gamma").unwrap().port = None;
        let e = new_base(&unpublished, "gamma", None, Some(&none), None).unwrap_err();
        assert!(e.message.contains("publishes none"), "{e}");
    }
}
