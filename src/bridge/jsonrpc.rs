//! JSON-RPC 2.0 message shapes the bridge needs to tell apart, and the errors it writes itself.
//!
//! The bridge never interprets tool payloads: it classifies a message, rewrites ids and progress
//! tokens (see `upstream`), and otherwise passes bytes through.

use serde_json::{json, Value};

/// Newest first: the protocol revisions this bridge speaks to clients.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_VERSION: &str = "2025-11-25";

/// Server error codes the bridge uses (JSON-RPC reserves −32000..−32099 for implementations).
pub const CHILD_EXITED: i64 = -32000;
pub const CHILD_UNAVAILABLE: i64 = -32001;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INVALID_REQUEST: i64 = -32600;
pub const PARSE_ERROR: i64 = -32700;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
    Invalid,
}

pub fn kind(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid;
    };
    let has_id = obj
        .get("id")
        .is_some_and(|id| id.is_string() || id.is_number());
    // An `id` of another type (object, array, bool; null for a request) makes it neither.
    let bad_id = obj.contains_key("id") && !has_id;
    match (obj.get("method").and_then(Value::as_str), has_id) {
        (Some(_), true) => Kind::Request,
        (Some(_), false) if !bad_id => Kind::Notification,
        (None, true) if obj.contains_key("result") || obj.contains_key("error") => Kind::Response,
        _ => Kind::Invalid,
    }
}

pub fn method(msg: &Value) -> &str {
    msg.get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The version to answer a client's `initialize` with, given what the child negotiated with us:
/// the client's own version when we speak it and it is not newer than the child's, else the child's
/// (a client that cannot speak that disconnects, as the spec prescribes).
pub fn negotiate(client_asked: Option<&str>, child_version: &str) -> String {
    match client_asked {
        Some(v) if SUPPORTED_VERSIONS.contains(&v) && v <= child_version => v.to_string(),
        _ => child_version.to_string(),
    }
}

/// MCP logging levels in increasing severity (RFC 5424 names).
const LEVELS: &[&str] = &[
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub fn level_rank(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})),
            Kind::Request
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Kind::Notification
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":"a","result":{}})),
            Kind::Response
        );
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":null,"error":{}})),
            Kind::Invalid
        );
        assert_eq!(kind(&json!([1, 2])), Kind::Invalid);
        assert_eq!(
            kind(&json!({"jsonrpc":"2.0","id":{"x":1},"method":"ping"})),
            Kind::Invalid
        );
    }

    #[test]
    fn negotiates_the_newest_common_version() {
        assert_eq!(negotiate(Some("2025-06-18"), "2025-11-25"), "2025-06-18");
        assert_eq!(negotiate(Some("2025-11-25"), "2024-11-05"), "2024-11-05");
        assert_eq!(negotiate(Some("1999-01-01"), "2025-11-25"), "2025-11-25");
        assert_eq!(negotiate(None, "2025-06-18"), "2025-06-18");
    }
}
