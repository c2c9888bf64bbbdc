//! Fault injection for the kill-anywhere tests: `MCPCTL_FAULT=<signal>@<point>` makes this
//! process send itself `<signal>` (`kill` = SIGKILL, `term` = SIGTERM, `int` = SIGINT) the first
//! time the release reaches `<point>`. SIGKILL is exactly what `kill -9`, the OOM killer or a
//! power cut do to a run: no destructor, no lock release, no ledger line. Each point is a step
//! boundary of a release (see [`POINTS`]); the tests walk all of them, deploy and rollback, with
//! and without the edge, and check that the next run converges.
//!
//! Unset (every real run) it costs one environment lookup per point. The line printed just before
//! the signal is what a test checks to know the point was really reached.

use std::sync::atomic::{AtomicBool, Ordering};

/// Every point a release passes, in order. A point name not listed here is a bug (debug builds
/// panic), so the kill matrix cannot silently skip one.
pub const POINTS: &[&str] = &[
    // Under the lock, before anything changed.
    "locked",
    // The candidate container runs, before its gate.
    "candidate-started",
    // The candidate passed and was removed; nothing switched yet.
    "candidate-passed",
    // Classic switch: the previous revision is stopped, the new one not yet created.
    "previous-stopped",
    // The new revision runs (classic: on the real port; edge: beside the old one, unrouted).
    "revision-started",
    // Edge: the route points at the new revision; the old one still runs (draining).
    "route-switched",
    // Edge, a service with replicas: a new replica passed its gate and took an old one's place
    // in the route (the route mixes revisions; the old ones still run).
    "replica-routed",
    // The step is verified (post-switch gate or drain done); the old revision is stopped.
    "step-done",
    // The step's ledger line is written; the next service has not started.
    "step-recorded",
    // Every step done, before the release's own ledger line.
    "release-done",
];

static FIRED: AtomicBool = AtomicBool::new(false);

/// Reached `point`: fire the configured fault if it names this point (once per process).
pub fn point(point: &str) {
    debug_assert!(POINTS.contains(&point), "unknown fault point {point}");
    let Ok(spec) = std::env::var("MCPCTL_FAULT") else {
        return;
    };
    let Some((signal, at)) = spec.split_once('@') else {
        return;
    };
    if at != point || FIRED.swap(true, Ordering::SeqCst) {
        return;
    }
    use nix::sys::signal::{kill, Signal};
    let sig = match signal {
        "kill" => Signal::SIGKILL,
        "term" => Signal::SIGTERM,
        "int" => Signal::SIGINT,
        _ => return,
    };
    // Written straight to stderr (no buffering, no tracing): a test reads it after the kill.
    eprintln!("fault injection: {} at {point}", sig.as_str());
    let _ = kill(nix::unistd::Pid::this(), sig); // to the process, as `kill` does; SIGKILL does not return
}
