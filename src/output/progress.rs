//! The one progress reporter: indicatif bars under a single `MultiProgress` on stderr, drawn only
//! when stderr is a terminal, the output is human and not `--quiet`; hidden otherwise (a bar then
//! costs nothing and shows nothing). Every other write to the terminal (logs through
//! [`StderrWriter`], results, diagnostics, prompts) goes through [`suspend`], which lifts the bars
//! for the write and redraws them after, so no line is ever torn by a bar.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::OutputFormat;
use crate::settings::Settings;

struct Reporter {
    multi: MultiProgress,
    visible: bool,
}

static REPORTER: OnceLock<Reporter> = OnceLock::new();

fn reporter() -> &'static Reporter {
    REPORTER.get_or_init(|| Reporter {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        visible: false,
    })
}

/// Whether bars are drawn for these settings: a terminal on stderr, human output, not `--quiet`.
pub fn wanted(settings: &Settings) -> bool {
    settings.output == OutputFormat::Human && !settings.quiet && std::io::stderr().is_terminal()
}

/// Decide once, at start, whether bars are drawn (before any is made; later calls change nothing).
pub fn init(settings: &Settings) {
    let visible = wanted(settings);
    let _ = REPORTER.set(Reporter {
        multi: MultiProgress::with_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }),
        visible,
    });
}

/// Whether bars are being drawn (else a caller may log progress now and then instead).
pub fn visible() -> bool {
    reporter().visible
}

/// Run `f` (a write to the terminal) with the bars lifted; they are redrawn after it.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let r = reporter();
    if r.visible {
        r.multi.suspend(f)
    } else {
        f()
    }
}

/// Write bytes to stderr above the bars.
pub fn write_stderr(bytes: &[u8]) {
    suspend(|| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    });
}

/// The tracing writer: each event is buffered and written whole, above the bars.
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

/// A line of the reporter: a bar of known length or a spinner. Cleared when dropped.
pub struct Bar(Option<ProgressBar>);

const STEPS: &str = "{prefix} [{bar:30}] {pos}/{len} {wide_msg}";
const SECONDS: &str = "{prefix} [{bar:30}] {percent:>3}% {wide_msg}";
const SPINNER: &str = "{spinner} {prefix}: {wide_msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("static template")
        .progress_chars("=> ")
}

fn add(pb: ProgressBar) -> Bar {
    let r = reporter();
    if !r.visible {
        return Bar(None);
    }
    Bar(Some(r.multi.add(pb)))
}

impl Bar {
    /// `prefix [=====>    ] 3/9 message`: `len` steps (services, bases, images).
    pub fn steps(len: u64, prefix: impl Into<Cow<'static, str>>) -> Self {
        let pb = ProgressBar::new(len)
            .with_style(style(STEPS))
            .with_prefix(prefix);
        let bar = add(pb);
        bar.tick_steadily();
        bar
    }

    /// `prefix [=====>    ] 42% message`: a run of known length in seconds (soak).
    pub fn seconds(len: Duration, prefix: impl Into<Cow<'static, str>>) -> Self {
        let pb = ProgressBar::new(len.as_secs().max(1))
            .with_style(style(SECONDS))
            .with_prefix(prefix);
        add(pb)
    }

    /// `⠋ prefix: message` for work of unknown length (one image's build log).
    pub fn spinner(prefix: impl Into<Cow<'static, str>>) -> Self {
        let pb = ProgressBar::new_spinner()
            .with_style(style(SPINNER))
            .with_prefix(prefix);
        let bar = add(pb);
        bar.tick_steadily();
        bar
    }

    fn tick_steadily(&self) {
        if let Some(b) = &self.0 {
            b.enable_steady_tick(Duration::from_millis(120));
        }
    }

    pub fn is_visible(&self) -> bool {
        self.0.is_some()
    }

    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        if let Some(b) = &self.0 {
            b.set_message(msg);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
            reporter().multi.remove(&b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_bars_are_hidden_and_writes_pass_through() {
        // Tests never call `init` with a terminal: the reporter is hidden.
        let b = Bar::steps(3, "build");
        assert!(!b.is_visible());
        b.inc(1);
        b.set_message("x");
        assert_eq!(suspend(|| 7), 7);
        let mut w = tracing_subscriber::fmt::MakeWriter::make_writer(&StderrWriter);
        w.write_all(b"").unwrap();
    }

    #[test]
    fn the_templates_parse() {
        // They are only used on a terminal, where a bad one would panic mid-run.
        for t in [STEPS, SECONDS, SPINNER] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
