//! The route model of the edge as plain data: the admin API's JSON shapes, upstream URLs (with an
//! optional path prefix, for mcp-proxy's named servers under `/servers/<name>/`), and the parsing
//! the proxy needs (session ids in queries, the legacy SSE `endpoint` event). Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What serves a route: a revision of this stack, or a legacy proxy (cutover).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    #[default]
    Stack,
    Legacy,
}

impl RouteKind {
    /// The wire name (`stack`, `legacy`), for tables and ledger lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Stack => "stack",
            RouteKind::Legacy => "legacy",
        }
    }
}

/// `PUT /routes/<service>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRoute {
    /// `http://host:port[/prefix]`.
    pub upstream: String,
    /// The release number of a stack revision (`r<N>`); null for a legacy proxy.
    #[serde(default)]
    pub revision: Option<u64>,
    #[serde(default)]
    pub kind: RouteKind,
    /// Overrides the edge's drain timeout for the upstream this switch replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u64>,
    /// More upstreams of the same revision (the service's other replicas): requests without a
    /// session are balanced over `upstream` and these; a session stays on the one that opened it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
}

/// The most upstreams one route balances over (`upstream` plus `replicas`).
pub const MAX_UPSTREAMS: usize = 16;

/// One upstream still holding sessions after a switch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrainingView {
    pub upstream: String,
    pub revision: Option<u64>,
    /// Open SSE streams plus Streamable HTTP sessions active recently, plus requests in flight.
    pub sessions: usize,
    /// RFC 3339: when the edge closes what is left.
    pub deadline: String,
}

/// One service's route (`GET /routes`, the answer of `PUT`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteView {
    pub upstream: String,
    pub revision: Option<u64>,
    pub kind: RouteKind,
    /// RFC 3339: when this upstream became current.
    pub since: String,
    #[serde(default)]
    pub draining: Vec<DrainingView>,
    /// The route's other upstreams (replicas), balanced with `upstream`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// Upstreams of this route the edge currently sends nothing new to (unreachable or not ready;
    /// rechecked every second). Never persisted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<String>,
}

/// `GET /routes`; also the persisted state file (with `draining` empty).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct RoutesView {
    pub routes: BTreeMap<String, RouteView>,
}

/// An upstream split into its origin (`http://host:port`) and path prefix (`""` or `/servers/x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub origin: String,
    pub prefix: String,
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| format!("upstream `{s}` must start with http://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
            return Err(format!(
                "upstream `{s}`: expected http://host:port[/prefix]"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!(
                "upstream `{s}`: a prefix is a path only (no query or fragment)"
            ));
        }
        Ok(Self {
            origin: format!("http://{authority}"),
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// The port the upstream listens on (80 when the URL names none). For a stack revision this
    /// is its bridge's `--listen` port, the service's `container_port`.
    pub fn port(&self) -> u16 {
        let authority = self.origin.trim_start_matches("http://");
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !port.contains(']') => {
                port.parse().unwrap_or(80)
            }
            _ => 80,
        }
    }

    /// The URL of a client's request path (`/sse`, `/messages?session_id=…`, `/mcp`).
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}{}", self.origin, self.prefix, path_and_query)
    }
}

/// `session_id` (or `sessionId`) from a query string: how legacy SSE POSTs name their session.
pub fn query_session_id(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "session_id" || k == "sessionId").then(|| v.to_string())
    })
}

/// Finds the first `endpoint` event of a legacy SSE stream, learns its session id and strips the
/// upstream's prefix from it so the client keeps using root paths. Holds back at most one event
/// (the first ones, until the endpoint); everything after passes through untouched.
#[derive(Debug)]
pub struct EndpointScan {
    buf: Vec<u8>,
    prefix: String,
    pub session: Option<String>,
    pub done: bool,
}

/// Give up looking for the endpoint event after this much (then pass everything through).
const SCAN_LIMIT: usize = 64 * 1024;

impl EndpointScan {
    pub fn new(prefix: &str) -> Self {
        Self {
            buf: Vec::new(),
            prefix: prefix.to_string(),
            session: None,
            done: false,
        }
    }

    /// Feed a chunk; returns what may be sent to the client now (possibly nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.done {
            return chunk.to_vec();
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            match self.rewrite(&event) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    out.append(&mut self.buf);
                    self.done = true;
                    return out;
                }
                None => out.extend_from_slice(&event),
            }
        }
        if self.buf.len() > SCAN_LIMIT {
            out.append(&mut self.buf);
            self.done = true;
        }
        out
    }

    fn rewrite(&mut self, event: &[u8]) -> Option<Vec<u8>> {
        let text = std::str::from_utf8(event).ok()?;
        let mut is_endpoint = false;
        let mut data = None;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(v) = line.strip_prefix("event:") {
                is_endpoint = v.trim() == "endpoint";
            } else if let Some(v) = line.strip_prefix("data:") {
                data = Some(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !is_endpoint {
            return None;
        }
        let data = data?;
        // Absolute URLs keep only their path (the client reaches us, not the upstream).
        let path = match data
            .strip_prefix("http://")
            .or(data.strip_prefix("https://"))
        {
            Some(rest) => rest
                .find('/')
                .map(|i| &rest[i..])
                .unwrap_or("/")
                .to_string(),
            None => data.clone(),
        };
        let path = if !self.prefix.is_empty() && path.starts_with(&self.prefix) {
            path[self.prefix.len()..].to_string()
        } else {
            path
        };
        self.session = query_session_id(path.split_once('?').map(|(_, q)| q));
        Some(format!("event: endpoint\ndata: {path}\n\n").into_bytes())
    }
}

/// End of the first complete event in `buf`: (index of the separator, its length).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_keep_their_prefix() {
        let u = Upstream::parse("http://host.docker.internal:9000/servers/fetch/").unwrap();
        assert_eq!(u.origin, "http://host.docker.internal:9000");
        assert_eq!(u.prefix, "/servers/fetch");
        assert_eq!(
            u.url("/messages/?session_id=a"),
            "http://host.docker.internal:9000/servers/fetch/messages/?session_id=a"
        );
        let u = Upstream::parse("http://p-alpha-r3:8080").unwrap();
        assert_eq!(
            (u.prefix.as_str(), u.url("/mcp").as_str()),
            ("", "http://p-alpha-r3:8080/mcp")
        );
        assert_eq!(u.port(), 8080);
        assert_eq!(
            Upstream::parse("http://p-alpha-r3:9090").unwrap().port(),
            9090
        );
        assert_eq!(
            Upstream::parse("http://legacy/servers/x").unwrap().port(),
            80
        );
        assert_eq!(Upstream::parse("http://[::1]").unwrap().port(), 80);
        assert_eq!(Upstream::parse("http://[::1]:9000").unwrap().port(), 9000);
        assert!(Upstream::parse("https://x").is_err());
        assert!(Upstream::parse("http:///x").is_err());
        assert!(Upstream::parse("http://x/a?b").is_err());
    }

    #[test]
    fn session_ids_come_from_either_spelling() {
        assert_eq!(
            query_session_id(Some("a=1&session_id=xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(query_session_id(Some("sessionId=q")).as_deref(), Some("q"));
        assert_eq!(query_session_id(Some("x=1")), None);
        assert_eq!(query_session_id(None), None);
    }

    #[test]
    fn the_endpoint_event_is_found_across_chunks_and_its_prefix_removed() {
        let mut s = EndpointScan::new("/servers/fetch");
        assert!(s.push(b": ping\n\nevent: endp").starts_with(b": ping\n\n"));
        assert!(!s.done);
        let out = s
            .push(b"oint\r\ndata: /servers/fetch/messages/?session_id=abc\r\n\r\nevent: message\n");
        assert!(s.done);
        assert_eq!(s.session.as_deref(), Some("abc"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: endpoint\ndata: /messages/?session_id=abc\n\nevent: message\n"
        );
        assert_eq!(s.push(b"data: {}\n\n"), b"data: {}\n\n");
    }

    #[test]
    fn a_bridge_endpoint_passes_unchanged() {
        let mut s = EndpointScan::new("");
        let out = s.push(b"event: endpoint\ndata: /messages?session_id=x\n\n");
        assert_eq!(out, b"event: endpoint\ndata: /messages?session_id=x\n\n");
        assert_eq!(s.session.as_deref(), Some("x"));
    }

    #[test]
    fn route_json_matches_the_contract() {
        let put: PutRoute = serde_json::from_str(
            r#"{"upstream": "http://host.docker.internal:9000/servers/x", "revision": null, "kind": "legacy"}"#,
        )
        .unwrap();
        assert_eq!(put.kind, RouteKind::Legacy);
        let put: PutRoute =
            serde_json::from_str(r#"{"upstream": "http://a:8080", "revision": 3}"#).unwrap();
        assert_eq!((put.kind, put.revision), (RouteKind::Stack, Some(3)));
        assert!(
            serde_json::from_str::<PutRoute>(r#"{"upstream": "http://a:8080", "x": 1}"#).is_err()
        );
    }

    use proptest::prelude::*;

    /// Query parameters that are not a session id, some of them close to one.
    fn other_param() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z_]{0,8}=[a-zA-Z0-9%=._-]{0,8}",
            Just("xsession_id=evil".to_string()),
            Just("session_idx=evil".to_string()),
            Just("Session_Id=evil".to_string()),
            Just("session%5Fid=evil".to_string()),
            Just("a=session_id=evil".to_string()),
            Just("session_id".to_string()),
            Just(String::new()),
        ]
        .prop_filter("not a session id", |kv| {
            !kv.starts_with("session_id=") && !kv.starts_with("sessionId=")
        })
    }

    /// A session id as a client may send it: visible ASCII, no `&` or `#`.
    fn session_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~%=:/+!$'()*,;@?-]{0,40}"
    }

    /// The endpoint event's data as the upstream may write it: a path or an absolute URL.
    fn endpoint_data(prefix: &str, id: &str, absolute: bool) -> String {
        let path = format!("{prefix}/messages/?session_id={id}");
        if absolute {
            format!("http://0.0.0.0:9000{path}")
        } else {
            path
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The session id is the value of the first `session_id`/`sessionId` parameter, exactly as
        /// given, whatever else the query holds; without one there is none.
        #[test]
        fn the_session_id_found_is_the_one_given(
            before in prop::collection::vec(other_param(), 0..4),
            after in prop::collection::vec(prop_oneof![other_param(), "session_id=[a-z]{0,4}"], 0..4),
            key in prop_oneof![Just("session_id"), Just("sessionId")],
            id in session_id(),
        ) {
            let q = before.join("&");
            prop_assert_eq!(query_session_id(Some(&q)), None, "{}", q);
            let mut params = before.clone();
            params.push(format!("{key}={id}"));
            params.extend(after);
            let q = params.join("&");
            prop_assert_eq!(query_session_id(Some(&q)), Some(id), "{}", q);
        }

        /// However the upstream's stream is cut into chunks and whatever precedes the endpoint
        /// event (comments, other events, LF or CRLF lines), what reaches the client is the stream
        /// with only the endpoint's data rewritten (the route's prefix and origin removed), and the
        /// session id learnt is the one in it.
        #[test]
        fn the_endpoint_is_found_however_the_stream_is_cut(
            prefix in prop_oneof![Just(""), Just("/servers/fetch"), Just("/p")],
            before in prop::collection::vec(prop_oneof![
                Just(": ping\n\n"),
                Just(":\r\n\r\n"),
                Just("event: message\ndata: {\"endpoint\":1}\n\n"),
                Just("event: endpointx\r\ndata: /x?session_id=evil\r\n\r\n"),
                Just("data: event: endpoint\n\n"),
            ], 0..4),
            crlf in any::<bool>(),
            space in any::<bool>(),
            absolute in any::<bool>(),
            id in "[A-Za-z0-9-]{1,36}",
            after in prop::collection::vec(any::<u8>(), 0..40),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let sp = if space { " " } else { "" };
            let endpoint = format!(
                "event:{sp}endpoint{nl}data:{sp}{}{nl}{nl}",
                endpoint_data(prefix, &id, absolute)
            );
            let mut stream = before.concat().into_bytes();
            stream.extend_from_slice(endpoint.as_bytes());
            stream.extend_from_slice(&after);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            at.push(stream.len());
            at.sort_unstable();
            let mut scan = EndpointScan::new(prefix);
            let (mut out, mut from) = (Vec::new(), 0);
            for to in at {
                out.extend(scan.push(&stream[from..to]));
                from = to;
            }
            let mut want = before.concat().into_bytes();
            want.extend_from_slice(format!("event: endpoint\ndata: /messages/?session_id={id}\n\n").as_bytes());
            want.extend_from_slice(&after);
            prop_assert!(scan.done);
            prop_assert_eq!(scan.session, Some(id));
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        }

        /// An upstream URL is the origin, the prefix (without trailing slashes) and the client's
        /// path, verbatim.
        #[test]
        fn an_upstream_url_is_origin_prefix_and_path(
            host in "[a-z][a-z0-9.-]{0,12}(:[0-9]{1,5})?",
            segs in prop::collection::vec("[a-z0-9_-]{1,6}", 0..3),
            slashes in 0usize..3,
            path in "(/[a-z0-9?=&_-]{0,6}){1,3}",
        ) {
            let prefix: String = segs.iter().map(|s| format!("/{s}")).collect();
            let u = Upstream::parse(&format!("http://{host}{prefix}{}", "/".repeat(slashes))).unwrap();
            prop_assert_eq!(&u.origin, &format!("http://{host}"));
            prop_assert_eq!(&u.prefix, &prefix);
            prop_assert_eq!(u.url(&path), format!("http://{host}{prefix}{path}"));
        }
    }
}
