//! Reading the audit trail back (`mcpctl audit`): the bridge's audit lines (`bridge::audit`,
//! docs/contracts.md "Access control") parsed out of container log text, filtered, and the
//! newest `limit` kept.
//!
//! Owns: parsing, filters, time arguments, the bounded collection. Must not: talk to the engine
//! or print (the command does both).
//!
//! A line counts only when it is a JSON object with `"audit":"tools/call"` and a `ts`, standing
//! alone on its line (optionally after a Docker timestamp): tracing lines, JSON logs and anything
//! else are skipped. Unknown fields are ignored, so newer bridges stay readable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Log lines read per container at most (the newest; older lines are not read).
pub const MAX_LINES_PER_CONTAINER: usize = 200_000;
/// Records kept unless told (`--limit`).
pub const DEFAULT_LIMIT: usize = 1000;

/// One `tools/call` as its bridge recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub ts: String,
    #[serde(default)]
    pub service: String,
    /// The revision (container) whose log held the line; set by the reader, not by the line.
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub consumer: String,
    #[serde(default)]
    pub tool: String,
    /// `ok`, `tool_error`, `error` or `cancelled` (kept as written: a newer bridge's outcome
    /// still reads).
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub duration_ms: f64,
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub rpc_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

/// The line's discriminator, checked before the record is taken.
#[derive(Deserialize)]
struct Tag<'a> {
    #[serde(borrow)]
    audit: Option<std::borrow::Cow<'a, str>>,
}

/// `outcome` values (`--outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    ToolError,
    Error,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One line of log text as a record, with its time; `None` for anything but an audit line.
pub fn parse_line(line: &str) -> Option<(SystemTime, Record)> {
    let line = line.trim();
    let json = if line.starts_with('{') {
        line
    } else {
        // `docker logs --timestamps`: "2026-12-03T13:00:00.123456789Z {...}".
        let (stamp, rest) = line.split_once(' ')?;
        humantime::parse_rfc3339(stamp).ok()?;
        rest.trim_start()
    };
    if !json.starts_with('{') || !json.contains("\"audit\"") {
        return None;
    }
    let tag: Tag = serde_json::from_str(json).ok()?;
    if tag.audit.as_deref() != Some("tools/call") {
        return None;
    }
    let record: Record = serde_json::from_str(json).ok()?;
    let at = humantime::parse_rfc3339(&record.ts).ok()?;
    Some((at, record))
}

/// Which records to keep. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub tool: Option<String>,
    pub consumer: Option<String>,
    pub outcome: Option<Outcome>,
    /// At or after.
    pub since: Option<SystemTime>,
    /// At or before.
    pub until: Option<SystemTime>,
}

impl Filter {
    pub fn matches(&self, at: SystemTime, r: &Record) -> bool {
        self.tool.as_ref().is_none_or(|t| *t == r.tool)
            && self.consumer.as_ref().is_none_or(|c| *c == r.consumer)
            && self.outcome.is_none_or(|o| o.as_str() == r.outcome)
            && self.since.is_none_or(|s| at >= s)
            && self.until.is_none_or(|u| at <= u)
    }
}

/// `--since`/`--until`: a duration before `now` (`10m`, `2h`, `1d 6h`: humantime units) or an
/// RFC 3339 time in UTC (`2026-12-03T13:00:00Z`, fractional seconds allowed; the `Z` may be
/// left out, other offsets are not understood).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return now
            .checked_sub(d)
            .ok_or_else(|| format!("`{s}` reaches before 1970"));
    }
    humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!("`{s}` is neither a duration (10m, 2h, 1d) nor an RFC 3339 time in UTC (2026-12-03T13:00:00Z)")
    })
}

/// Splits log text that arrives in chunks into lines (a chunk may end mid-line) and counts them.
#[derive(Debug, Default)]
pub struct Lines {
    carry: String,
    count: usize,
}

impl Lines {
    /// Call `f` with every complete line of `chunk` (after what the previous chunk left).
    pub fn push(&mut self, chunk: &str, mut f: impl FnMut(&str)) {
        let mut rest = chunk;
        while let Some(i) = rest.find('\n') {
            self.count += 1;
            if self.carry.is_empty() {
                f(&rest[..i]);
            } else {
                self.carry.push_str(&rest[..i]);
                f(&std::mem::take(&mut self.carry));
            }
            rest = &rest[i + 1..];
        }
        self.carry.push_str(rest);
    }

    /// The last line when it had no newline; then the number of lines seen.
    pub fn finish(mut self, mut f: impl FnMut(&str)) -> usize {
        if !self.carry.is_empty() {
            self.count += 1;
            f(&std::mem::take(&mut self.carry));
        }
        self.count
    }
}

/// Orders kept records by time, then request id (equal timestamps stay in a stable order).
#[derive(Debug)]
struct Kept(SystemTime, Record);

impl Kept {
    fn key(&self) -> (SystemTime, &str, &str) {
        (self.0, &self.1.request_id, &self.1.revision)
    }
}
impl PartialEq for Kept {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Kept {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Matching records as they are read, the newest `limit` kept (memory bounded by the limit).
#[derive(Debug)]
pub struct Collector {
    filter: Filter,
    limit: usize,
    /// A min-heap: the oldest kept record is popped first.
    kept: BinaryHeap<Reverse<Kept>>,
    matched: usize,
}

impl Collector {
    pub fn new(filter: Filter, limit: usize) -> Self {
        Self {
            filter,
            limit: limit.max(1),
            kept: BinaryHeap::new(),
            matched: 0,
        }
    }

    /// One log line from `revision`'s container: kept if it is a matching audit line (and among
    /// the newest `limit`).
    pub fn line(&mut self, revision: &str, line: &str) {
        let Some((at, mut r)) = parse_line(line) else {
            return;
        };
        if !self.filter.matches(at, &r) {
            return;
        }
        self.matched += 1;
        r.revision = revision.to_string();
        self.kept.push(Reverse(Kept(at, r)));
        if self.kept.len() > self.limit {
            self.kept.pop();
        }
    }

    /// The kept records, oldest first, and how many matched in all.
    pub fn finish(self) -> Found {
        let mut kept: Vec<Kept> = self.kept.into_iter().map(|Reverse(k)| k).collect();
        kept.sort();
        Found {
            records: kept.into_iter().map(|k| k.1).collect(),
            matched: self.matched,
        }
    }
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Oldest first; at most the limit (the newest of the matches).
    pub records: Vec<Record>,
    /// Matching records seen, kept or not.
    pub matched: usize,
}

impl Found {
    /// More records matched than were kept.
    pub fn truncated(&self) -> bool {
        self.matched > self.records.len()
    }
}

/// Whole seconds for the engine's `since` (rounded down, so nothing at `since` is missed).
pub fn unix_floor(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whole seconds for the engine's `until`: rounded up plus a margin, since Docker stamps a line
/// when it receives it, a moment after the bridge's `ts` (the exact bound is applied here).
pub fn unix_ceil_with_margin(t: SystemTime) -> i64 {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0) + 5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::audit::{AuditOutcome, Auditor};
    use serde_json::json;

    fn t(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn audit_line(ts: &str, tool: &str, consumer: &str, outcome: &str, id: u32) -> String {
        format!(
            "{{\"audit\":\"tools/call\",\"ts\":\"{ts}\",\"service\":\"fetch\",\"consumer\":\"{consumer}\",\
             \"tool\":\"{tool}\",\"outcome\":\"{outcome}\",\"duration_ms\":1.5,\
             \"request_id\":\"{id:016x}\",\"rpc_id\":\"{id}\"}}"
        )
    }

    const MIXED: &str = concat!(
        "2026-12-03T13:00:00.001Z  INFO bridge listening addr=0.0.0.0:8080\n",
        "{\"timestamp\":\"2026-12-03T13:00:00Z\",\"level\":\"INFO\",\"message\":\"{\\\"audit\\\":\\\"tools/call\\\"}\"}\n",
        "{\"audit\":\"tools/call\",\"ts\":\"2026-12-03T13:00:01.000Z\",\"service\":\"fetch\",\"consumer\":\"litellm\",\"tool\":\"fetch\",\"outcome\":\"ok\",\"duration_ms\":12.345,\"request_id\":\"9f2c000000000001\",\"rpc_id\":\"7\"}\n",
        "garbage {not json\n",
        "{\"audit\":\"something/else\",\"ts\":\"2026-12-03T13:00:02.000Z\"}\n",
        "{\"audit\":\"tools/call\",\"ts\":\"not a time\"}\n",
        "INFO child_stderr: {\"audit\":\"tools/call\",\"ts\":\"2026-12-03T13:00:03.000Z\"}\n",
        "2026-12-03T13:00:04.123456789Z {\"audit\":\"tools/call\",\"ts\":\"2026-12-03T13:00:04.120Z\",\"service\":\"fetch\",\"consumer\":\"anonymous\",\"tool\":\"fetch\",\"outcome\":\"error\",\"duration_ms\":0.5,\"request_id\":\"9f2c000000000002\",\"rpc_id\":\"8\",\"error_code\":-32602,\"error\":\"bad\",\"future_field\":1}\n",
        "[1, 2]\n",
        "\n",
    );

    #[test]
    fn mixed_log_text_yields_only_audit_lines() {
        let found: Vec<(SystemTime, Record)> = MIXED.lines().filter_map(parse_line).collect();
        assert_eq!(found.len(), 2, "{found:#?}");
        let (at, r) = &found[0];
        assert_eq!(*at, t("2026-12-03T13:00:01Z"));
        assert_eq!(
            (
                r.service.as_str(),
                r.consumer.as_str(),
                r.tool.as_str(),
                r.outcome.as_str()
            ),
            ("fetch", "litellm", "fetch", "ok")
        );
        assert_eq!(r.duration_ms, 12.345);
        assert_eq!(r.rpc_id, "7");
        assert_eq!((r.error_code, r.error.as_deref()), (None, None));
        // After a Docker timestamp; the record's own ts counts, unknown fields are ignored.
        let (at, r) = &found[1];
        assert_eq!(*at, t("2026-12-03T13:00:04.120Z"));
        assert_eq!(
            (r.error_code, r.error.as_deref()),
            (Some(-32602), Some("bad"))
        );
        // The output form: no `audit`, no absent optionals.
        let v = serde_json::to_value(r).unwrap();
        assert!(
            v.get("audit").is_none() && v.get("arguments").is_none(),
            "{v}"
        );
    }

    #[test]
    fn a_line_the_bridge_writes_reads_back() {
        let a = Auditor::with_writer(
            "fetch".into(),
            true,
            std::sync::Arc::new(Default::default()),
            4,
            Box::new(std::io::sink()),
        );
        let line = a.line(
            t("2026-12-03T13:00:00.123Z"),
            "0123456789abcdef",
            "litellm",
            "fetch",
            &json!("r-1"),
            Some(&json!({"url": "x"})),
            AuditOutcome::Error {
                code: -32602,
                message: "no",
            },
            Duration::from_micros(1500),
        );
        let (at, r) = parse_line(&line).expect("parses");
        assert_eq!(at, t("2026-12-03T13:00:00.123Z"));
        assert_eq!(
            r,
            Record {
                ts: "2026-12-03T13:00:00.123Z".into(),
                service: "fetch".into(),
                revision: String::new(),
                consumer: "litellm".into(),
                tool: "fetch".into(),
                outcome: "error".into(),
                duration_ms: 1.5,
                request_id: "0123456789abcdef".into(),
                rpc_id: "r-1".into(),
                error_code: Some(-32602),
                error: Some("no".into()),
                arguments: Some(json!({"url": "x"})),
            }
        );
        for o in [
            Outcome::Ok,
            Outcome::ToolError,
            Outcome::Error,
            Outcome::Cancelled,
        ] {
            let bridge = match o {
                Outcome::Ok => AuditOutcome::Ok,
                Outcome::ToolError => AuditOutcome::ToolError,
                Outcome::Error => AuditOutcome::Error {
                    code: 1,
                    message: "",
                },
                Outcome::Cancelled => AuditOutcome::Cancelled,
            };
            assert_eq!(o.as_str(), bridge.label());
        }
    }

    #[test]
    fn each_filter_narrows() {
        let lines = [
            audit_line("2026-12-03T13:00:00Z", "fetch", "litellm", "ok", 1),
            audit_line("2026-12-03T13:10:00Z", "search", "litellm", "error", 2),
            audit_line(
                "2026-12-03T13:20:00Z",
                "fetch",
                "anonymous",
                "tool_error",
                3,
            ),
            audit_line("2026-12-03T13:30:00Z", "fetch", "litellm", "cancelled", 4),
        ];
        let ids = |f: Filter| -> Vec<String> {
            let mut c = Collector::new(f, 100);
            for l in &lines {
                c.line("fetch-r1", l);
            }
            c.finish().records.into_iter().map(|r| r.rpc_id).collect()
        };
        assert_eq!(ids(Filter::default()), ["1", "2", "3", "4"]);
        let f = |g: fn(&mut Filter)| {
            let mut f = Filter::default();
            g(&mut f);
            f
        };
        assert_eq!(ids(f(|f| f.tool = Some("fetch".into()))), ["1", "3", "4"]);
        assert_eq!(ids(f(|f| f.consumer = Some("anonymous".into()))), ["3"]);
        assert_eq!(ids(f(|f| f.outcome = Some(Outcome::Error))), ["2"]);
        assert_eq!(ids(f(|f| f.outcome = Some(Outcome::ToolError))), ["3"]);
        assert_eq!(ids(f(|f| f.outcome = Some(Outcome::Cancelled))), ["4"]);
        // Bounds are inclusive.
        assert_eq!(
            ids(f(|f| f.since = Some(t("2026-12-03T13:10:00Z")))),
            ["2", "3", "4"]
        );
        assert_eq!(
            ids(f(|f| f.until = Some(t("2026-12-03T13:10:00Z")))),
            ["1", "2"]
        );
        assert_eq!(
            ids(f(|f| {
                f.since = Some(t("2026-12-03T13:05:00Z"));
                f.until = Some(t("2026-12-03T13:25:00Z"));
                f.tool = Some("fetch".into());
            })),
            ["3"]
        );
    }

    #[test]
    fn since_and_until_take_durations_and_rfc3339() {
        let now = t("2026-12-03T13:00:00Z");
        assert_eq!(parse_time("10m", now), Ok(t("2026-12-03T12:50:00Z")));
        assert_eq!(parse_time("2h", now), Ok(t("2026-12-03T11:00:00Z")));
        assert_eq!(parse_time("1d 6h", now), Ok(t("2026-12-02T07:00:00Z")));
        assert_eq!(
            parse_time("2026-12-01T08:30:00Z", now),
            Ok(t("2026-12-01T08:30:00Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T08:30:00.250Z", now),
            Ok(t("2026-12-01T08:30:00.250Z"))
        );
        assert_eq!(
            parse_time("2026-12-01T08:30:00", now),
            Ok(t("2026-12-01T08:30:00Z"))
        );
        for bad in ["", "yesterday", "10", "2026-12-01T08:30:00+02:00", "-5m"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_limit_keeps_the_newest_sorted_by_time() {
        // Two containers' logs, interleaved in time, read one after the other.
        let a: Vec<String> = (0..10)
            .map(|i| {
                audit_line(
                    &format!("2026-12-03T13:00:{:02}Z", i * 2),
                    "t",
                    "c",
                    "ok",
                    i * 2,
                )
            })
            .collect();
        let b: Vec<String> = (0..10)
            .map(|i| {
                audit_line(
                    &format!("2026-12-03T13:00:{:02}Z", i * 2 + 1),
                    "t",
                    "c",
                    "ok",
                    i * 2 + 1,
                )
            })
            .collect();
        let mut c = Collector::new(Filter::default(), 5);
        for l in a.iter().rev() {
            c.line("s-r2", l);
        }
        for l in &b {
            c.line("s-r1", l);
        }
        let found = c.finish();
        let ids: Vec<&str> = found.records.iter().map(|r| r.rpc_id.as_str()).collect();
        assert_eq!(ids, ["15", "16", "17", "18", "19"]);
        assert_eq!(found.records[0].revision, "s-r1");
        assert_eq!(found.records[1].revision, "s-r2");
        assert_eq!(found.matched, 20);
        assert!(found.truncated());

        let mut c = Collector::new(Filter::default(), 50);
        for l in &a {
            c.line("s-r2", l);
        }
        let found = c.finish();
        assert_eq!((found.records.len(), found.truncated()), (10, false));
    }

    #[test]
    fn chunks_are_split_into_lines_across_boundaries() {
        let mut lines = Lines::default();
        let mut got = Vec::new();
        for chunk in ["ab", "c\nde", "f\n", "\ng", "h"] {
            lines.push(chunk, |l| got.push(l.to_string()));
        }
        let n = lines.finish(|l| got.push(l.to_string()));
        assert_eq!(got, ["abc", "def", "", "gh"]);
        assert_eq!(n, 4);
    }

    #[test]
    fn engine_bounds_round_outwards() {
        let at = t("2026-12-03T13:00:00.500Z");
        let secs = unix_floor(t("2026-12-03T13:00:00Z"));
        assert_eq!(unix_floor(at), secs);
        assert_eq!(unix_ceil_with_margin(at), secs + 1 + 5);
        assert_eq!(unix_ceil_with_margin(t("2026-12-03T13:00:00Z")), secs + 5);
    }
}
