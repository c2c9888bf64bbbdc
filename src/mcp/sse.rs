//! `text/event-stream` decoding for the MCP client: the `sse-stream` crate's decoder over the raw
//! bytes, reduced to the two fields MCP uses (`event` and `data`).
//!
//! Decoding bytes, not chunks of text, is the point: a line may end with CR, LF or CRLF, and a
//! CRLF split across two reads is one line break, not two (which would end the event early); a
//! multibyte character split across two reads is decoded whole, because UTF-8 is decoded per
//! complete field. A field that is not UTF-8 ends the stream with an error, as `reqwest`'s JSON
//! replies do, instead of becoming replacement characters a comparison would trip over.
//!
//! Owns: bytes → events. Must not: interpret the data (JSON is the caller's business).

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::channel::mpsc;
use futures::{Stream, StreamExt, TryStream};

/// One server-sent event: its `event` field, if it had one, and its `data` lines joined by LF.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// A stream that could not be read (transport error, or a field that is not UTF-8). The decoder
/// ends after it.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SseError(#[from] sse_stream::Error);

/// A block with neither `event` nor `data` (only `id`/`retry`) carries nothing MCP reads.
fn to_event(block: sse_stream::Sse) -> Option<SseEvent> {
    if block.event.is_none() && block.data.is_none() {
        return None;
    }
    Some(SseEvent {
        event: block.event,
        data: block.data.unwrap_or_default(),
    })
}

/// The events of a byte stream, e.g. `reqwest::Response::bytes_stream()`. An incomplete event at
/// the end of the stream is dropped, as the SSE standard says.
pub fn events<S>(bytes: S) -> impl Stream<Item = Result<SseEvent, SseError>>
where
    S: TryStream,
    S::Ok: Buf,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    sse_stream::SseByteStream::new(bytes).filter_map(|block| {
        futures::future::ready(match block {
            Ok(block) => to_event(block).map(Ok),
            Err(e) => Some(Err(SseError(e))),
        })
    })
}

type Feed = mpsc::UnboundedReceiver<Result<Bytes, Infallible>>;

/// Push-style decoding for callers that read the chunks themselves: the decoder of [`events`],
/// fed one chunk at a time. Bytes of an unfinished line (or character) wait for the next chunk.
pub struct SseParser {
    // Unbounded as a channel, never more than one chunk in it: `push` sends one chunk and then
    // polls the decoder until it is `Pending`, which drains the channel before `push` returns.
    feed: mpsc::UnboundedSender<Result<Bytes, Infallible>>,
    decoder: sse_stream::SseByteStream<Feed>,
}

impl Default for SseParser {
    fn default() -> Self {
        let (feed, rx) = mpsc::unbounded();
        SseParser {
            feed,
            decoder: sse_stream::SseByteStream::new(rx),
        }
    }
}

impl SseParser {
    /// The events that `chunk` completes. After an error the parser yields no more events.
    pub fn push(&mut self, chunk: impl AsRef<[u8]>) -> Result<Vec<SseEvent>, SseError> {
        // The receiver lives in `decoder`, so the send cannot fail while `self` exists.
        let _ = self
            .feed
            .unbounded_send(Ok(Bytes::copy_from_slice(chunk.as_ref())));
        // Every byte is already queued: `Pending` only means "the rest of a line is still to
        // come", so nobody needs waking.
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut out = Vec::new();
        loop {
            match self.decoder.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Ok(block))) => out.extend(to_event(block)),
                Poll::Ready(Some(Err(e))) => return Err(SseError(e)),
                Poll::Ready(None) | Poll::Pending => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_string),
            data: data.to_string(),
        }
    }

    /// Every line ending (LF, CRLF, bare CR), a BOM, comments, multi-line data, `data:` with and
    /// without its space, 2-, 3- and 4-byte characters, an `id`/`retry`-only block, a colonless
    /// `data` field, and an unfinished event at the end.
    const STREAM: &str = "\u{feff}: a comment\r\n\
        event: endpoint\r\n\
        data: /messages?session_id=ab\r\n\r\n\
        data: {\"text\":\"caf\u{e9} \u{20ac}5 \u{1f600}\"}\n\n\
        event: message\rdata: line one\rdata:line two \u{1f600}\r\r\
        id: 7\nretry: 10\n\n\
        event: message\ndata\n\n\
        : keepalive\n\n\
        data: split\r\ndata: crlf\r\n\r\n\
        data: last\r\n\r\n\
        data: unfinished";

    fn expected() -> Vec<SseEvent> {
        vec![
            ev(Some("endpoint"), "/messages?session_id=ab"),
            ev(None, "{\"text\":\"caf\u{e9} \u{20ac}5 \u{1f600}\"}"),
            ev(Some("message"), "line one\nline two \u{1f600}"),
            ev(Some("message"), ""),
            ev(None, "split\ncrlf"),
            ev(None, "last"),
        ]
    }

    fn push_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).unwrap());
        }
        out
    }

    fn stream_all(chunks: Vec<&'static [u8]>) -> Vec<SseEvent> {
        let chunks = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Bytes::from_static(c)));
        futures::executor::block_on(
            events(futures::stream::iter(chunks))
                .map(Result::unwrap)
                .collect(),
        )
    }

    #[test]
    fn the_whole_stream_at_once() {
        assert_eq!(push_all([STREAM.as_bytes()]), expected());
        assert_eq!(stream_all(vec![STREAM.as_bytes()]), expected());
    }

    /// Split in two at every byte boundary: inside each multibyte character, between each CR
    /// and its LF, inside `data:` and inside the BOM. Both entry points see the same events.
    #[test]
    fn a_split_at_any_byte_changes_nothing() {
        let bytes = STREAM.as_bytes();
        for i in 1..bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(push_all([a, b]), expected(), "split at byte {i}");
            assert_eq!(stream_all(vec![a, b]), expected(), "split at byte {i}");
        }
    }

    #[test]
    fn one_byte_at_a_time_changes_nothing() {
        let bytes = STREAM.as_bytes();
        let singles: Vec<&'static [u8]> = (0..bytes.len()).map(|i| &bytes[i..=i]).collect();
        assert_eq!(push_all(singles.iter().copied()), expected());
        assert_eq!(stream_all(singles), expected());
    }

    /// The two faults of decoding each chunk as text: a CR|LF split read as two line breaks (the
    /// event ended early), and a character split in two read as two replacement characters.
    #[test]
    fn a_split_crlf_and_a_split_character() {
        assert_eq!(
            push_all([&b"data: a\r"[..], b"\ndata: b\r\n\r\n"]),
            [ev(None, "a\nb")]
        );
        let euro = "data: \u{20ac}\n\n".as_bytes();
        assert_eq!(push_all([&euro[..7], &euro[7..]]), [ev(None, "\u{20ac}")]);
    }

    #[test]
    fn a_field_that_is_not_utf8_is_an_error() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: \xff\xfe\n\n").is_err());
        let items: Vec<_> = futures::executor::block_on(
            events(futures::stream::iter([Ok::<_, Infallible>(
                Bytes::from_static(b"data: ok\n\ndata: \xff\n\ndata: never\n\n"),
            )]))
            .collect(),
        );
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].as_ref().unwrap(), &ev(None, "ok"));
        assert!(items[1].is_err());
    }
}
