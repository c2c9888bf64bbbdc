//! The edge's own series (docs/contracts.md "Edge", `GET /metrics` of the admin API), exposed
//! through `crate::metrics` (prometheus-client's text encoder).
//!
//! Counters are prometheus-client families, counted as requests pass (no lock of the edge's);
//! `mcp_edge_sessions_active` and the process RSS are read from state at scrape time into a fresh
//! gauge family set just before encoding, so an upstream that finished draining drops out of it.
//!
//! Must not: route, or hold anything but counts.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceUpstream {
    service: String,
    upstream: String,
}

impl ServiceUpstream {
    fn new(service: &str, upstream: &str) -> Self {
        Self {
            service: service.to_string(),
            upstream: upstream.to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

/// `mcp_edge_calls_total`: a 2026-07-28 request by its `Mcp-Method` and `Mcp-Name` headers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: &'static str,
    name: String,
}

/// The methods `mcp_edge_calls_total` names; any other `Mcp-Method` value counts as `other`, so a
/// client cannot mint series.
const METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "subscriptions/listen",
];
/// Distinct `name` values per service before the rest count as `_other` (a client that invents
/// tool names must not grow the edge's memory or the scrape).
const MAX_NAMES_PER_SERVICE: usize = 128;
/// Longest `Mcp-Name` kept as a label value (tool and prompt names are short identifiers).
const MAX_NAME_LEN: usize = 64;

/// The `method` label of an `Mcp-Method` header value.
pub(super) fn method_label(m: &str) -> &'static str {
    METHODS.iter().copied().find(|k| *k == m).unwrap_or("other")
}

/// A name that is a plausible tool or prompt identifier (resource URIs are not labels).
fn plausible_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/'))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// What the DNS-rebinding guard, or the admin API's token check, refused
/// (`mcp_edge_refused_total{reason}`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Refused {
    /// A foreign Host, or a missing or repeated one.
    Host,
    Origin,
    /// An admin API request without the admin token, or with a wrong one.
    AdminUnauthorized,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::Host, Refused::Origin, Refused::AdminUnauthorized];
    fn label(self) -> ReasonLabel {
        ReasonLabel {
            reason: match self {
                Refused::Host => "host",
                Refused::Origin => "origin",
                Refused::AdminUnauthorized => "admin_unauthorized",
            },
        }
    }
}

/// The edge's counters.
#[derive(Debug)]
pub(super) struct EdgeMetrics {
    requests: Family<ServiceUpstream, Counter>,
    upstream_errors: Family<ServiceUpstream, Counter>,
    sessions_opened: Family<ServiceUpstream, Counter>,
    route_switches: Family<ServiceLabel, Counter>,
    drain_closed: Family<ServiceLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    calls: Family<CallLabels, Counter>,
    /// The `name` values seen per service (bounded by [`MAX_NAMES_PER_SERVICE`]).
    names: std::sync::Mutex<std::collections::HashMap<String, std::collections::HashSet<String>>>,
    rerouted: Family<ServiceUpstream, Counter>,
    replica_down: Family<ServiceUpstream, Counter>,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        let m = Self {
            requests: Family::default(),
            upstream_errors: Family::default(),
            sessions_opened: Family::default(),
            route_switches: Family::default(),
            drain_closed: Family::default(),
            refused: Family::default(),
            calls: Family::default(),
            names: Default::default(),
            rerouted: Family::default(),
            replica_down: Family::default(),
        };
        // Both refusal series are always present (the contract).
        for r in Refused::ALL {
            let _ = m.refused.get_or_create(&r.label());
        }
        m
    }
}

impl EdgeMetrics {
    /// A request forwarded to `upstream`.
    pub(super) fn request(&self, service: &str, upstream: &str) {
        self.requests
            .get_or_create(&ServiceUpstream::new(service, upstream))
            .inc();
    }

    /// A request `upstream` could not be reached for (502).
    pub(super) fn upstream_error(&self, service: &str, upstream: &str) {
        self.upstream_errors
            .get_or_create(&ServiceUpstream::new(service, upstream))
            .inc();
    }

    /// A session pinned to `upstream` (legacy SSE endpoint or `Mcp-Session-Id`).
    pub(super) fn session_opened(&self, service: &str, upstream: &str) {
        self.sessions_opened
            .get_or_create(&ServiceUpstream::new(service, upstream))
            .inc();
    }

    pub(super) fn route_switched(&self, service: &str) {
        self.route_switches
            .get_or_create(&ServiceLabel {
                service: service.to_string(),
            })
            .inc();
    }

    /// `sessions` closed by the edge at a drain deadline.
    pub(super) fn drain_closed(&self, service: &str, sessions: u64) {
        self.drain_closed
            .get_or_create(&ServiceLabel {
                service: service.to_string(),
            })
            .inc_by(sessions);
    }

    /// A 2026-07-28 request, by its headers only (the edge never parses bodies): `method` is
    /// `Mcp-Method` (or `other`), `name` is `Mcp-Name` for `tools/call` and `prompts/get` when it
    /// is a plausible identifier (`_invalid` otherwise, `_other` past the per-service bound, empty
    /// for other methods).
    pub(super) fn call(&self, service: &str, method: &str, name: Option<&str>) {
        let method = method_label(method);
        let name = match (method, name) {
            ("tools/call" | "prompts/get", Some(n)) if plausible_name(n) => {
                let mut names = crate::locks::MutexExt::lock_ignore_poison(&self.names);
                let seen = names.entry(service.to_string()).or_default();
                if seen.contains(n) || seen.len() < MAX_NAMES_PER_SERVICE {
                    seen.insert(n.to_string());
                    n.to_string()
                } else {
                    "_other".to_string()
                }
            }
            ("tools/call" | "prompts/get", _) => "_invalid".to_string(),
            _ => String::new(),
        };
        self.calls
            .get_or_create(&CallLabels {
                service: service.to_string(),
                method,
                name,
            })
            .inc();
    }

    /// A request `from` could not take (unreachable, or failed before answering a request that is
    /// safe to send again) that the edge sent to another replica instead.
    pub(super) fn rerouted(&self, service: &str, from: &str) {
        self.rerouted
            .get_or_create(&ServiceUpstream::new(service, from))
            .inc();
    }

    /// A replica taken out of balancing (unreachable, or its `/readyz` failed).
    pub(super) fn replica_down(&self, service: &str, upstream: &str) {
        self.replica_down
            .get_or_create(&ServiceUpstream::new(service, upstream))
            .inc();
    }

    pub(super) fn refused(&self, r: Refused) {
        self.refused.get_or_create(&r.label()).inc();
    }

    /// The registry a scrape encodes: the counters, the open sessions per (service, upstream)
    /// now, and the process RSS when /proc tells it.
    pub(super) fn registry(
        &self,
        sessions_active: impl IntoIterator<Item = (String, String, usize)>,
    ) -> Registry {
        let mut r = Registry::default();
        // HELP texts without the final "." (`Registry::register` appends it).
        r.register(
            "mcp_edge_requests",
            "Requests forwarded, by service and upstream",
            self.requests.clone(),
        );
        r.register(
            "mcp_edge_upstream_errors",
            "Requests the upstream could not be reached for (502)",
            self.upstream_errors.clone(),
        );
        r.register(
            "mcp_edge_sessions_opened",
            "Sessions pinned (legacy SSE endpoint or Mcp-Session-Id)",
            self.sessions_opened.clone(),
        );
        let active = Family::<ServiceUpstream, Gauge>::default();
        for (service, upstream, n) in sessions_active {
            active
                .get_or_create(&ServiceUpstream { service, upstream })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        r.register(
            "mcp_edge_sessions_active",
            "Open SSE streams and recently active Streamable HTTP sessions",
            active,
        );
        r.register(
            "mcp_edge_route_switches",
            "Route switches",
            self.route_switches.clone(),
        );
        r.register(
            "mcp_edge_drain_closed",
            "Sessions closed by the edge at a drain deadline",
            self.drain_closed.clone(),
        );
        r.register(
            "mcp_edge_refused",
            "Requests refused: a foreign or missing Host or a foreign Origin (DNS-rebinding guard), or an admin API request without the admin token",
            self.refused.clone(),
        );
        r.register(
            "mcp_edge_calls",
            "2026-07-28 requests by their Mcp-Method and Mcp-Name headers (name: tools/call and prompts/get only; _other past 128 names per service)",
            self.calls.clone(),
        );
        r.register(
            "mcp_edge_rerouted",
            "Requests sent to another replica because this upstream could not take them",
            self.rerouted.clone(),
        );
        r.register(
            "mcp_edge_replica_down",
            "Times a replica was taken out of balancing (unreachable or not ready)",
            self.replica_down.clone(),
        );
        if let Some(rss) = crate::metrics::resident_memory_bytes() {
            r.register(
                "process_resident_memory_bytes",
                "Resident memory",
                ConstGauge::new(rss),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{encode, parse::parse};

    #[test]
    fn exposition_parses_and_carries_every_contract_metric() {
        let m = EdgeMetrics::default();
        m.request("alpha", "http://a:8080");
        m.request("alpha", "http://a:8080");
        m.upstream_error("alpha", "http://a:8080");
        m.session_opened("alpha", "http://a:8080");
        m.route_switched("alpha");
        m.drain_closed("alpha", 2);
        m.refused(Refused::Origin);
        let text = encode(&m.registry([("alpha".into(), "http://a:8080".into(), 1)])).unwrap();
        let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (name, kind, labels, value) in [
            (
                "mcp_edge_requests_total",
                "counter",
                &["service", "upstream"][..],
                2.0,
            ),
            (
                "mcp_edge_upstream_errors_total",
                "counter",
                &["service", "upstream"],
                1.0,
            ),
            (
                "mcp_edge_sessions_opened_total",
                "counter",
                &["service", "upstream"],
                1.0,
            ),
            (
                "mcp_edge_sessions_active",
                "gauge",
                &["service", "upstream"],
                1.0,
            ),
            (
                "mcp_edge_route_switches_total",
                "counter",
                &["service"],
                1.0,
            ),
            ("mcp_edge_drain_closed_total", "counter", &["service"], 2.0),
        ] {
            let f = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
            assert_eq!(f.kind, kind, "{name}");
            assert!(f.help.is_some(), "{name}");
            assert_eq!(f.samples.len(), 1, "{name}");
            let s = &f.samples[0];
            let keys: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(keys, labels, "{name}");
            assert_eq!(s.label("service"), Some("alpha"));
            assert_eq!(s.value, value, "{name}");
        }
        let refused = &families["mcp_edge_refused_total"];
        assert_eq!(refused.kind, "counter");
        assert!(
            text.contains("mcp_edge_refused_total{reason=\"host\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("mcp_edge_refused_total{reason=\"origin\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("mcp_edge_route_switches_total{service=\"alpha\"} 1\n"),
            "{text}"
        );
        let rss = &families["process_resident_memory_bytes"];
        assert_eq!(rss.kind, "gauge");
        assert!(rss.samples[0].value > 0.0 && rss.samples[0].value.fract() == 0.0);
        assert_eq!(families.len(), 8, "{:?}", families.keys());
    }

    #[test]
    fn label_values_with_newline_quote_and_backslash_are_escaped() {
        let m = EdgeMetrics::default();
        let odd = "a\nb \"c\" d\\e";
        m.request(odd, odd);
        let text = encode(&m.registry([])).unwrap();
        assert!(
            text.contains(
                "mcp_edge_requests_total{service=\"a\\nb \\\"c\\\" d\\\\e\",upstream=\"a\\nb \\\"c\\\" d\\\\e\"} 1\n"
            ),
            "{text}"
        );
        let families = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let s = &families["mcp_edge_requests_total"].samples[0];
        assert_eq!(
            (s.label("service"), s.label("upstream")),
            (Some(odd), Some(odd))
        );
    }
}
