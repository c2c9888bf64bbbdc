//! The client side of MCP 2026-07-28 ("modern", stateless): what a request carries (`_meta` with
//! the protocol version and client capabilities; the `MCP-Protocol-Version`, `Mcp-Method`,
//! `Mcp-Name` and `Mcp-Param-*` headers of the Streamable HTTP binding), and how a
//! `server/discover` answer tells a modern server from a legacy one (spec "Versioning: Backward
//! Compatibility", "Streamable HTTP: Backward Compatibility").
//!
//! Pure functions over JSON and strings; the requests themselves go out through
//! [`super::client::Session`]. The wire constants the bridge checks are the bridge's own
//! ([`crate::bridge::modern`]), so both ends agree by construction.
//!
//! Owns: shaping a modern request, reading `x-mcp-header` annotations, classifying a discover
//! reply. Must not: send anything, or decide an era from anything but the reply in hand.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde_json::{json, Map, Value};

pub use crate::bridge::modern::{
    HEADER_MISMATCH, META_CAPABILITIES, META_VERSION, MODERN_VERSIONS, UNSUPPORTED_VERSION,
};

/// `_meta` key of the client's name and version (the spec's `clientInfo`, SHOULD).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the server's name and version in results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// −32021 (MissingRequiredClientCapability): a modern error, never a reason to fall back.
pub const MISSING_CAPABILITY: i64 = -32021;

/// Every initialize-based ("legacy") revision. The era is closed: 2026-07-28 and later are
/// modern, so this list never grows.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The modern revision this client sends (the newest it speaks).
pub fn version() -> &'static str {
    MODERN_VERSIONS[0]
}

/// Whether an error code is one of 2026-07-28's own (a server that sends one is modern).
pub fn is_modern_error(code: i64) -> bool {
    matches!(
        code,
        HEADER_MISMATCH | MISSING_CAPABILITY | UNSUPPORTED_VERSION
    )
}

/// `params` with the per-request `_meta` of 2026-07-28 added (keys the caller set, such as
/// `progressToken`, are kept).
pub fn with_meta(params: Value, version: &str) -> Value {
    let mut p = match params {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let meta = p
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Some(m) = meta.as_object_mut() {
        m.insert(META_VERSION.into(), json!(version));
        m.insert(META_CAPABILITIES.into(), json!({}));
        m.insert(
            META_CLIENT_INFO.into(),
            json!({"name": "mcpctl", "version": env!("CARGO_PKG_VERSION")}),
        );
    }
    Value::Object(p)
}

/// The body field `Mcp-Name` mirrors for `method`, if any.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// A header value as the spec's "Value Encoding" wants it: plain when it is visible ASCII,
/// space or tab without leading or trailing whitespace and does not look like the sentinel;
/// otherwise `=?base64?<UTF-8 in base64>?=`.
pub fn header_value(raw: &str) -> String {
    let plain = raw.chars().all(|c| c == '\t' || (' '..='~').contains(&c))
        && raw.trim() == raw
        && !(raw.starts_with("=?base64?") && raw.ends_with("?="));
    if plain {
        raw.to_string()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The request headers of one modern request: `Mcp-Method`, and `Mcp-Name` where the method has
/// one (`MCP-Protocol-Version` is the session's; `Mcp-Param-*` come from [`ParamHeader`]).
pub fn request_headers(msg: &Value) -> Vec<(String, String)> {
    let method = msg["method"].as_str().unwrap_or_default();
    let mut h = vec![("mcp-method".to_string(), header_value(method))];
    if let Some(field) = name_field(method) {
        if let Some(name) = msg["params"][field].as_str() {
            h.push(("mcp-name".to_string(), header_value(name)));
        }
    }
    h
}

/// One `x-mcp-header` annotation of a tool: the argument at `path` (a chain of `properties`
/// keys) goes in the header `Mcp-Param-<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamHeader {
    pub path: Vec<String>,
    pub name: String,
}

impl ParamHeader {
    /// The header for these call arguments; None when the value is absent, null or not a
    /// primitive the spec allows.
    pub fn header(&self, args: &Value) -> Option<(String, String)> {
        let mut v = args;
        for key in &self.path {
            v = v.get(key)?;
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => return None,
        };
        Some((format!("mcp-param-{}", self.name), header_value(&text)))
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The `x-mcp-header` annotations of a tool's input schema, or why the tool must be left out of
/// `tools/list` (spec "Custom Headers from Tool Parameters": an empty or non-token name, a
/// duplicate ignoring case, a type other than string/integer/boolean, or an annotation not
/// reachable from the root through `properties` alone).
pub fn param_headers(schema: &Value) -> Result<Vec<ParamHeader>, String> {
    fn reachable(
        schema: &Value,
        path: &mut Vec<String>,
        out: &mut Vec<ParamHeader>,
    ) -> Result<(), String> {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return Ok(());
        };
        for (key, sub) in props {
            path.push(key.clone());
            if let Some(name) = sub.get("x-mcp-header") {
                let at = path.join(".");
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("x-mcp-header of `{at}` is not a string"))?;
                if name.is_empty() || !name.chars().all(is_tchar) {
                    return Err(format!(
                        "x-mcp-header {name:?} of `{at}` is not an HTTP header name token"
                    ));
                }
                match sub.get("type").and_then(Value::as_str) {
                    Some("string" | "integer" | "boolean") => {}
                    other => {
                        return Err(format!(
                            "x-mcp-header {name:?} is on `{at}` of type {}: only string, integer and boolean parameters may be mirrored",
                            other.map(|t| format!("{t:?}")).unwrap_or("(none)".into())
                        ))
                    }
                }
                out.push(ParamHeader {
                    path: path.clone(),
                    name: name.to_string(),
                });
            }
            reachable(sub, path, out)?;
            path.pop();
        }
        Ok(())
    }
    /// Every `x-mcp-header` key anywhere in the schema (a property *named* so is not one).
    fn count(v: &Value, property_names: bool) -> usize {
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, sub)| {
                    let here = usize::from(!property_names && k == "x-mcp-header");
                    here + count(sub, !property_names && k == "properties")
                })
                .sum(),
            Value::Array(a) => a.iter().map(|x| count(x, false)).sum(),
            _ => 0,
        }
    }
    let mut out = Vec::new();
    reachable(schema, &mut Vec::new(), &mut out)?;
    if count(schema, false) != out.len() {
        return Err(
            "an x-mcp-header annotation is not reachable from the schema root through `properties` alone (items, oneOf/anyOf/allOf, if/then/else and $ref are not allowed on the way)"
                .into(),
        );
    }
    let mut seen = BTreeSet::new();
    for h in &out {
        if !seen.insert(h.name.to_ascii_lowercase()) {
            return Err(format!(
                "x-mcp-header {:?} appears twice (names are compared ignoring case)",
                h.name
            ));
        }
    }
    Ok(out)
}

/// What a server said about itself when asked `server/discover` in 2026-07-28 shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Every protocol version it supports (`supportedVersions`, or −32022's `data.supported`).
    pub supported: Vec<String>,
    /// The modern version this client will speak with it: None when it lists none this client
    /// speaks.
    pub version: Option<String>,
    /// The `DiscoverResult` (None when the server answered −32022 instead).
    pub result: Option<Value>,
}

impl Discovery {
    fn new(supported: Vec<String>, result: Option<Value>) -> Self {
        let version = MODERN_VERSIONS
            .iter()
            .find(|v| supported.iter().any(|s| s == *v))
            .map(|v| v.to_string());
        Self {
            supported,
            version,
            result,
        }
    }

    /// It also lists an initialize-based version (a dual-era server answers `initialize` too).
    pub fn speaks_legacy(&self) -> bool {
        self.supported
            .iter()
            .any(|v| LEGACY_VERSIONS.contains(&v.as_str()))
    }

    /// `serverInfo` from the result's `_meta` (Null when absent).
    pub fn server_info(&self) -> Value {
        self.result
            .as_ref()
            .and_then(|r| r.get("_meta"))
            .and_then(|m| m.get(META_SERVER_INFO))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// `name version (versions …)`, for reports.
    pub fn describe(&self) -> String {
        let info = self.server_info();
        let name = info["name"].as_str().unwrap_or("?");
        let ver = info["version"].as_str().unwrap_or("");
        format!(
            "{name} {ver} (supports {})",
            if self.supported.is_empty() {
                "nothing it named".to_string()
            } else {
                self.supported.join(", ")
            }
        )
        .replace("  ", " ")
    }
}

/// How a reply to `server/discover` classifies the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A valid `DiscoverResult`, or −32022 with the versions it supports: a modern server.
    Modern(Discovery),
    /// Another 2026-07-28 error (−32020, −32021): a modern server that refused the request as
    /// sent. Not a reason to fall back (spec): the request or the server needs fixing.
    Refused(String),
    /// Anything else: the server is not modern (a legacy server, or a bridge that serves this
    /// service to legacy sessions only). The text says what it answered.
    NotModern(String),
}

fn strings(v: &Value) -> Option<Vec<String>> {
    let a = v.as_array()?;
    let out: Vec<String> = a
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    (out.len() == a.len() && !out.is_empty()).then_some(out)
}

/// Bound on text quoted from a server into a report.
const EXCERPT: usize = 200;

pub fn excerpt(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > EXCERPT {
        format!("{}…", s.chars().take(EXCERPT).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Classify a JSON-RPC reply (`reply`, when the body was one) to `server/discover`, answered with
/// HTTP `status` and `body` (for the report when it was not JSON-RPC).
pub fn classify(status: u16, reply: Option<&Value>, body: &str) -> Answer {
    let Some(reply) = reply.filter(|r| r.get("result").is_some() || r.get("error").is_some())
    else {
        return Answer::NotModern(format!(
            "server/discover answered HTTP {status} without a JSON-RPC reply{}",
            if body.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", excerpt(body))
            }
        ));
    };
    if let Some(err) = reply.get("error") {
        let code = err["code"].as_i64().unwrap_or(0);
        let message = excerpt(err["message"].as_str().unwrap_or(""));
        if code == UNSUPPORTED_VERSION {
            return match strings(&err["data"]["supported"]) {
                Some(supported) => Answer::Modern(Discovery::new(supported, None)),
                None => Answer::Refused(format!(
                    "server/discover: error {code} (unsupported protocol version) without data.supported: {message}"
                )),
            };
        }
        if is_modern_error(code) {
            return Answer::Refused(format!(
                "server/discover: HTTP {status}, error {code}: {message}"
            ));
        }
        return Answer::NotModern(format!(
            "server/discover: HTTP {status}, error {code}: {message}"
        ));
    }
    let result = &reply["result"];
    let Some(supported) = strings(&result["supportedVersions"]) else {
        return Answer::NotModern(
            "server/discover answered a result without supportedVersions (a list of versions)"
                .into(),
        );
    };
    if !result["capabilities"].is_object() {
        return Answer::NotModern(
            "server/discover answered a result without a capabilities object".into(),
        );
    }
    Answer::Modern(Discovery::new(supported, Some(result.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_added_and_the_callers_keys_are_kept() {
        let p = with_meta(
            json!({"name": "echo", "_meta": {"progressToken": 7}}),
            "2026-07-28",
        );
        assert_eq!(p["_meta"][META_VERSION], "2026-07-28");
        assert_eq!(p["_meta"][META_CAPABILITIES], json!({}));
        assert_eq!(p["_meta"][META_CLIENT_INFO]["name"], "mcpctl");
        assert_eq!(p["_meta"]["progressToken"], 7);
        assert_eq!(p["name"], "echo");
        let p = with_meta(Value::Null, "2026-07-28");
        assert!(p["_meta"].is_object());
    }

    #[test]
    fn header_values_are_plain_or_base64_as_the_spec_shows() {
        // The spec's own table ("Encoding examples").
        assert_eq!(header_value("us-west1"), "us-west1");
        assert_eq!(
            header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(header_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            header_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
        let call = json!({"method": "tools/call", "params": {"name": "get_weather"}});
        assert_eq!(
            request_headers(&call),
            vec![
                ("mcp-method".to_string(), "tools/call".to_string()),
                ("mcp-name".to_string(), "get_weather".to_string())
            ]
        );
        let read = json!({"method": "resources/read", "params": {"uri": "file:///a b"}});
        assert_eq!(request_headers(&read)[1].1, "file:///a b");
        let list = json!({"method": "tools/list", "params": {}});
        assert_eq!(request_headers(&list).len(), 1);
    }

    #[test]
    fn x_mcp_header_annotations_are_read_and_mirrored() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "query": {"type": "string"},
            "opts": {"type": "object", "properties": {
                "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
                "n": {"type": "integer", "x-mcp-header": "N"}}}}});
        let h = param_headers(&schema).unwrap();
        assert_eq!(h.len(), 3);
        let args =
            json!({"region": "us-west1", "query": "SELECT 1", "opts": {"dry": true, "n": -7}});
        let got: Vec<_> = h.iter().filter_map(|h| h.header(&args)).collect();
        assert!(got.contains(&("mcp-param-Region".into(), "us-west1".into())));
        assert!(got.contains(&("mcp-param-Dry-Run".into(), "true".into())));
        assert!(got.contains(&("mcp-param-N".into(), "-7".into())));
        // Absent and null values: no header.
        let got: Vec<_> = h
            .iter()
            .filter_map(|h| h.header(&json!({"region": null})))
            .collect();
        assert!(got.is_empty());
        // A property *named* x-mcp-header is not an annotation.
        let odd = json!({"properties": {"x-mcp-header": {"type": "string"}}});
        assert_eq!(param_headers(&odd).unwrap(), vec![]);
    }

    #[test]
    fn invalid_x_mcp_header_annotations_reject_the_tool() {
        let bad = [
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
                "token",
            ),
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
                "token",
            ),
            (
                json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
                "number",
            ),
            (
                json!({"properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}}),
                "twice",
            ),
            (
                json!({"properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
                "reachable",
            ),
            (
                json!({"oneOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
                "reachable",
            ),
        ];
        for (schema, why) in bad {
            let e = param_headers(&schema).unwrap_err();
            assert!(e.contains(why), "{schema}: {e}");
        }
    }

    #[test]
    fn discover_replies_classify_the_server() {
        let ok = json!({"jsonrpc": "2.0", "id": 1, "result": {"resultType": "complete",
            "supportedVersions": ["2026-07-28", "2025-11-25"], "capabilities": {"tools": {}},
            "_meta": {META_SERVER_INFO: {"name": "s", "version": "1"}}}});
        let Answer::Modern(d) = classify(200, Some(&ok), "") else {
            panic!("modern")
        };
        assert_eq!(d.version.as_deref(), Some("2026-07-28"));
        assert!(d.speaks_legacy());
        assert_eq!(d.describe(), "s 1 (supports 2026-07-28, 2025-11-25)");
        // Modern only.
        let only = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "supportedVersions": ["2026-07-28"], "capabilities": {}}});
        let Answer::Modern(d) = classify(200, Some(&only), "") else {
            panic!("modern")
        };
        assert!(!d.speaks_legacy());
        // −32022: modern, with what it supports (here nothing this client speaks as modern).
        let unsupported = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32022,
            "message": "Unsupported protocol version",
            "data": {"supported": ["2027-01-01", "2025-06-18"], "requested": "2026-07-28"}}});
        let Answer::Modern(d) = classify(400, Some(&unsupported), "") else {
            panic!("modern")
        };
        assert_eq!(d.version, None);
        assert!(d.speaks_legacy());
        // Other modern errors: refused, no fallback.
        let mismatch = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32020, "message": "Header mismatch"}});
        assert!(matches!(
            classify(400, Some(&mismatch), ""),
            Answer::Refused(_)
        ));
        // Legacy answers: method not found, a per_session bridge's −32600, HTTP errors, junk.
        for (status, reply, body) in [
            (
                200,
                Some(
                    json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}}),
                ),
                "",
            ),
            (
                400,
                Some(
                    json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "send initialize"}}),
                ),
                "",
            ),
            (404, None, "Not Found"),
            (400, None, "Bad Request: No valid session ID provided"),
            (
                200,
                Some(json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})),
                "",
            ),
        ] {
            assert!(
                matches!(classify(status, reply.as_ref(), body), Answer::NotModern(_)),
                "{status} {reply:?} {body}"
            );
        }
    }
}
