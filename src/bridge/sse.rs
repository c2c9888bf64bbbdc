//! Server-Sent Events framing and the streaming body every SSE response of the bridge uses.
//!
//! One writer task per stream owns the source of events, sends keepalive comments on a fixed
//! interval (so idle-killing proxies keep the connection), and notices the client going away
//! (the body is dropped) — dropping whatever it owns, which is how an abandoned call gets cancelled.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;

/// One SSE event. `data` is split on newlines so every line gets its own `data:` field.
pub fn event(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    // SSE readers end a line at CRLF, LF or a bare CR: split on all three, so no data line can
    // start a field of its own (`x\revent: evil` would otherwise become an event named evil).
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

pub fn message(msg: &serde_json::Value) -> Bytes {
    event(Some("message"), &msg.to_string())
}

pub const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// The sending half given to a producer; the body ends when it is dropped or `shutdown` fires.
pub type Frames = mpsc::Sender<Bytes>;

/// Build an SSE response whose body is fed by the returned sender, with keepalive comments.
/// `extra_headers` carries e.g. `Mcp-Session-Id`.
pub fn response(
    keepalive: Duration,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    extra_headers: &[(&'static str, String)],
) -> (Frames, Response<Body>) {
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(64);
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                f = frames_rx.recv() => match f { Some(f) => f, None => break },
                _ = tick.tick() => {
                    stats.keepalive_sent.fetch_add(1, Ordering::Relaxed);
                    Bytes::from_static(KEEPALIVE)
                }
                _ = body_tx.closed() => break,
                _ = shutdown.cancelled() => break,
            };
            if body_tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
        // Dropping frames_rx here tells the producer the client is gone.
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in extra_headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    (frames_tx, resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_events() {
        assert_eq!(
            event(Some("endpoint"), "/messages?session_id=x"),
            Bytes::from("event: endpoint\ndata: /messages?session_id=x\n\n")
        );
        assert_eq!(
            event(None, "a\nb\r\nc"),
            Bytes::from("data: a\ndata: b\ndata: c\n\n")
        );
        let m = message(&serde_json::json!({"id": 1}));
        assert_eq!(m, Bytes::from("event: message\ndata: {\"id\":1}\n\n"));
    }

    use proptest::prelude::*;

    /// What a WHATWG event-stream parser makes of a byte stream: the events it dispatches, and
    /// every field line it saw (to spot `id:`/`retry:`/extra `event:` lines smuggled in by data).
    #[derive(Debug, Default)]
    struct Parsed {
        /// (event type, data) of each dispatched event.
        events: Vec<(String, String)>,
        /// Field names in order of appearance (comments left out).
        fields: Vec<String>,
        /// Empty lines (each one ends an event, dispatched or not).
        blank_lines: usize,
        /// Text after the last line terminator (a parser discards it).
        leftover: String,
    }

    /// The event-stream interpretation of html.spec.whatwg.org §9.2.6: lines end at CRLF, CR or
    /// LF; `field: value` (one leading space dropped); `data` lines are joined with LF; an empty
    /// line dispatches, unless the data buffer is empty.
    fn parse_sse(stream: &str) -> Parsed {
        let mut p = Parsed::default();
        let (mut lines, mut cur, mut chars) =
            (Vec::new(), String::new(), stream.chars().peekable());
        while let Some(c) = chars.next() {
            match c {
                '\r' => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    lines.push(std::mem::take(&mut cur));
                }
                '\n' => lines.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        p.leftover = cur;
        let (mut ty, mut data) = (String::new(), String::new());
        for line in lines {
            if line.is_empty() {
                p.blank_lines += 1;
                if !data.is_empty() {
                    data.pop(); // the trailing LF
                    let name = if ty.is_empty() {
                        "message".to_string()
                    } else {
                        ty.clone()
                    };
                    p.events.push((name, std::mem::take(&mut data)));
                }
                ty.clear();
                data.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            p.fields.push(field.to_string());
            match field {
                "event" => ty = value.to_string(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                _ => {}
            }
        }
        p
    }

    /// `data` with every line break (CRLF, CR, LF) written as LF.
    fn normalised(data: &str) -> String {
        data.replace("\r\n", "\n").replace('\r', "\n")
    }

    /// Text made of pieces that stress the framing: line breaks of every kind, empty lines,
    /// things that look like fields, and non-ASCII (U+2028 and NEL are not SSE line breaks).
    fn sse_text(bare_cr: bool) -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("\n\n".to_string()),
            Just(String::new()),
            Just(":".to_string()),
            Just(" ".to_string()),
            Just("data: x".to_string()),
            Just("event: evil".to_string()),
            Just("id: 7".to_string()),
            Just("retry: 1".to_string()),
            Just(": comment".to_string()),
            Just("\u{e9}\u{1F600}\u{2028}\u{85}\u{0}".to_string()),
            "[a-z{}\":, ]{0,6}",
            any::<String>(),
        ];
        let piece = if bare_cr {
            prop_oneof![4 => piece, 1 => Just("\r".to_string())].boxed()
        } else {
            // CR only as part of CRLF.
            piece
                .prop_map(|s| {
                    s.replace("\r\n", "\n")
                        .replace('\r', "")
                        .replace('\n', "\r\n")
                })
                .prop_flat_map(|s| prop_oneof![Just(s.replace("\r\n", "\n")), Just(s)])
                .boxed()
        };
        prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
    }

    fn check_frame(frame: &[u8], name: Option<&str>, data: &str) -> Result<(), TestCaseError> {
        let text = std::str::from_utf8(frame).expect("frames are UTF-8");
        prop_assert!(
            text.ends_with("\n\n"),
            "{:?} does not end with a blank line",
            text
        );
        let p = parse_sse(text);
        prop_assert_eq!(&p.leftover, "", "{:?}", text);
        prop_assert_eq!(p.blank_lines, 1, "one event per frame: {:?}", text);
        let want = (name.unwrap_or("message").to_string(), normalised(data));
        prop_assert_eq!(p.events, vec![want], "{:?}", text);
        // Only the fields event() writes itself: at most one `event`, then `data` lines.
        let mut fields = p.fields.iter().map(String::as_str).peekable();
        if name.is_some() {
            prop_assert_eq!(fields.next(), Some("event"), "{:?}", text);
        }
        prop_assert!(
            fields.all(|f| f == "data"),
            "a field smuggled in by the data: {:?}",
            text
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Data with LF and CRLF line breaks (and empty lines, field look-alikes, non-ASCII)
        /// parses back to itself with LF line breaks, under the event name given, as one event
        /// ending in a blank line, with no field line the data could have injected.
        #[test]
        fn an_event_parses_back_to_its_data(name in proptest::option::of("[a-z][a-z_-]{0,11}"), data in sse_text(false)) {
            check_frame(&event(name.as_deref(), &data), name.as_deref(), &data)?;
        }

        /// The same with bare CRs in the data. A CR is a line break to an SSE parser, but
        /// `event` splits on LF only: `event(None, "a\rb")` is `data: a\rb`, which a client reads
        /// as data `a` and a field `b` (and `"x\revent: evil"` sets the event type). Latent: the
        /// callers pass JSON (CR escaped) and `/messages?session_id=<hex>`.
        #[test]
        fn an_event_with_bare_crs_parses_back_to_its_data(name in proptest::option::of("[a-z][a-z_-]{0,11}"), data in sse_text(true)) {
            check_frame(&event(name.as_deref(), &data), name.as_deref(), &data)?;
        }

        /// A message is one `message` event whose data is the JSON text, which parses back to the
        /// same value (JSON escapes CR and LF in strings, so it is always one `data` line).
        #[test]
        fn a_message_parses_back_to_its_value(value in json_value()) {
            let frame = message(&value);
            let text = value.to_string();
            check_frame(&frame, Some("message"), &text)?;
            let p = parse_sse(std::str::from_utf8(&frame).unwrap());
            let back: serde_json::Value = serde_json::from_str(&p.events[0].1).unwrap();
            prop_assert_eq!(back, value);
        }
    }

    /// Bare CR in event data (minimal input of the bare-CR property above).
    #[test]
    fn a_bare_cr_in_event_data_is_a_line_break() {
        let p = parse_sse(std::str::from_utf8(&event(None, "x\revent: evil")).unwrap());
        assert_eq!(
            p.events,
            [("message".to_string(), "x\nevent: evil".to_string())]
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            "[\r\n\t\u{2028}\u{85}a:]{0,6}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\r\n]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
