//! A small, careful reader of the Prometheus text exposition format, and the bridge figures
//! (docs/contracts.md, "Metrics (bridge)") that `service_stats` reports.
//!
//! Owns: sample parsing (names, quoted label values with escapes, special float values,
//! optional timestamps) and the sums over label sets. Must not: fetch anything. Lines it cannot
//! read are skipped, never fatal: one odd series must not hide the others.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (l, r) = parse_labels(after)?;
        labels = l;
        rest = r;
    }
    // value [timestamp]
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and what follows `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        // Skip blanks and separators between pairs (a trailing comma is allowed).
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == ',' {
                chars.next();
            } else {
                break;
            }
        }
        let &(start, c) = chars.peek()?;
        if c == '}' {
            return Some((labels, &s[start + 1..]));
        }
        let mut key_end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                chars.next();
                key_end = i + c.len_utf8();
            } else {
                break;
            }
        }
        let key = &s[start..key_end];
        if key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next()?.1 != '=' {
            return None;
        }
        while chars.peek().is_some_and(|&(_, c)| c.is_whitespace()) {
            chars.next();
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other), // \\ and \"
                },
                c => value.push(c),
            }
        }
        labels.push((key.to_string(), value));
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The bridge's request, error and session figures, summed over their label sets.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BridgeFigures {
    pub requests_total: f64,
    pub request_errors_total: f64,
    /// Non-zero error counts by `error_type`.
    pub errors_by_type: BTreeMap<String, f64>,
    /// Non-zero request counts by `tool` (tools/call only; other methods under their method).
    pub requests_by_tool: BTreeMap<String, f64>,
    pub requests_in_flight: Option<f64>,
    /// Mean request duration in milliseconds, when any request was timed.
    pub mean_request_ms: Option<f64>,
    pub sessions_active: f64,
    pub sessions_opened_total: f64,
    pub sessions_closed_total: f64,
    pub child_restarts_total: f64,
    pub ready: Option<bool>,
    pub resident_memory_bytes: Option<f64>,
}

impl BridgeFigures {
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut f = BridgeFigures::default();
        let (mut dur_sum, mut dur_count) = (0.0, 0.0);
        for s in samples {
            let v = s.value;
            if !v.is_finite() {
                continue;
            }
            match s.name.as_str() {
                "mcp_bridge_requests_total" => {
                    f.requests_total += v;
                    if v != 0.0 {
                        let key = match s.label("tool") {
                            Some(t) if !t.is_empty() => t,
                            _ => s.label("method").unwrap_or("other"),
                        };
                        *f.requests_by_tool.entry(key.to_string()).or_default() += v;
                    }
                }
                "mcp_bridge_request_errors_total" => {
                    f.request_errors_total += v;
                    if v != 0.0 {
                        let key = s.label("error_type").unwrap_or("other").to_string();
                        *f.errors_by_type.entry(key).or_default() += v;
                    }
                }
                "mcp_bridge_requests_in_flight" => {
                    *f.requests_in_flight.get_or_insert(0.0) += v;
                }
                "mcp_bridge_request_duration_seconds_sum" => dur_sum += v,
                "mcp_bridge_request_duration_seconds_count" => dur_count += v,
                "mcp_bridge_sessions_active" => f.sessions_active += v,
                "mcp_bridge_sessions_opened_total" => f.sessions_opened_total += v,
                "mcp_bridge_sessions_closed_total" => f.sessions_closed_total += v,
                "mcp_bridge_child_restarts_total" => f.child_restarts_total += v,
                "mcp_bridge_ready" => f.ready = Some(v >= 1.0),
                "process_resident_memory_bytes" => f.resident_memory_bytes = Some(v),
                _ => {}
            }
        }
        if dur_count > 0.0 {
            f.mean_request_ms = Some((dur_sum / dur_count * 1000.0 * 100.0).round() / 100.0);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_specials_and_timestamps() {
        let text = r#"
# HELP mcp_bridge_requests_total Requests.
# TYPE mcp_bridge_requests_total counter
mcp_bridge_requests_total{method="tools/call",tool="read_file"} 7
mcp_bridge_requests_total{ method = "tools/call" , tool="we\"ird,\\one}" , } 2 1700000000000
mcp_bridge_request_duration_seconds_bucket{le="+Inf"} +Inf
process_open_fds 12
not a sample line
bad{x="unterminated} 3
"#;
        let s = parse(text);
        assert_eq!(s.len(), 4, "{s:?}");
        assert_eq!(s[0].label("tool"), Some("read_file"));
        assert_eq!(s[1].label("tool"), Some("we\"ird,\\one}"));
        assert_eq!(s[1].value, 2.0);
        assert!(s[2].value.is_infinite());
        assert_eq!(s[3].name, "process_open_fds");
        assert!(s[3].labels.is_empty());
    }

    #[test]
    fn bridge_figures_sum_over_labels() {
        let text = r#"
mcp_bridge_requests_total{method="tools/call",tool="read_file"} 7
mcp_bridge_requests_total{method="tools/list",tool=""} 3
mcp_bridge_requests_total{method="tools/call",tool="other"} 0
mcp_bridge_request_errors_total{method="tools/call",tool="read_file",error_type="timeout"} 2
mcp_bridge_request_errors_total{method="tools/call",tool="read_file",error_type="jsonrpc"} 0
mcp_bridge_request_duration_seconds_sum{method="tools/call",tool="read_file"} 0.5
mcp_bridge_request_duration_seconds_count{method="tools/call",tool="read_file"} 10
mcp_bridge_sessions_active{transport="sse"} 1
mcp_bridge_sessions_active{transport="streamable_http"} 2
mcp_bridge_sessions_opened_total{transport="sse"} 5
mcp_bridge_ready 1
"#;
        let f = BridgeFigures::from_samples(&parse(text));
        assert_eq!(f.requests_total, 10.0);
        assert_eq!(f.request_errors_total, 2.0);
        assert_eq!(f.errors_by_type.get("timeout"), Some(&2.0));
        assert_eq!(f.errors_by_type.len(), 1);
        assert_eq!(f.requests_by_tool.get("read_file"), Some(&7.0));
        assert_eq!(f.requests_by_tool.get("tools/list"), Some(&3.0));
        assert_eq!(f.mean_request_ms, Some(50.0));
        assert_eq!(f.sessions_active, 3.0);
        assert_eq!(f.sessions_opened_total, 5.0);
        assert_eq!(f.ready, Some(true));
        assert_eq!(f.requests_in_flight, None);
    }
}
