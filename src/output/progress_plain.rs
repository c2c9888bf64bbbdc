//! The progress reporter of the in-container binary (built without the `cli` feature): no bars
//! and no indicatif, the same functions as `progress.rs` for what the runtime commands use —
//! logs through [`StderrWriter`], one whole write per event, results and errors straight out.

use std::io::Write;

use crate::settings::Settings;

/// Nothing to decide: the in-container binary never draws bars.
pub fn init(_settings: &Settings) {}

/// Bars are never drawn.
pub fn visible() -> bool {
    false
}

/// Run `f` (a write to the terminal); there are no bars to lift.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Write bytes to stderr in one piece.
pub fn write_stderr(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
}

/// The tracing writer: each event is buffered and written whole (lines of concurrent tasks never
/// interleave mid-line in a container's log).
pub struct StderrWriter;

/// One event's bytes, written when the event is complete (on drop).
pub struct EventBuffer(Vec<u8>);

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write_stderr(&self.0);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for StderrWriter {
    type Writer = EventBuffer;
    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer(Vec::new())
    }
}
