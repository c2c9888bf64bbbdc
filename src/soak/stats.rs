//! What the load measured, as plain serialisable data (the checkpoint is this, written as JSON):
//! a log-bucketed latency histogram (2 % resolution, constant size however long the run), the
//! counters per service and probe, outages (runs of unanswered calls) and the timeline.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Bucket growth factor: a quantile is reported as its bucket's upper bound, at most 2 % high.
const GROWTH: f64 = 1.02;

/// Latencies in microseconds, bucketed by `ceil(log_1.02(us))`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    pub buckets: BTreeMap<u32, u64>,
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
}

impl Histogram {
    fn index(us: u64) -> u32 {
        let us = us.max(1) as f64;
        (us.ln() / GROWTH.ln()).ceil().max(0.0) as u32
    }

    pub fn record_us(&mut self, us: u64) {
        *self.buckets.entry(Self::index(us)).or_default() += 1;
        self.count += 1;
        self.sum_us += us;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (k, v) in &other.buckets {
            *self.buckets.entry(*k).or_default() += v;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The q-quantile (0 < q ≤ 1) in milliseconds: the smallest bucket bound with at least
    /// ceil(q·n) samples at or below it (never above the maximum seen). `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (idx, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                let bound = GROWTH.powi(*idx as i32);
                return Some(bound.min(self.max_us as f64) / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64 / 1000.0)
    }
}

/// Counters of one probe (a smoke tool or tools/list).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeStats {
    pub calls: u64,
    pub errors: u64,
}

/// A run of consecutive unanswered calls to one service: when it started, when the next call was
/// answered (its recovery), how many calls it cost. Seconds since the start of the soak.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outage {
    pub start_s: f64,
    pub end_s: Option<f64>,
    pub failed_calls: u64,
    pub first_error: String,
}

impl Outage {
    pub fn recovery_s(&self) -> Option<f64> {
        self.end_s.map(|e| e - self.start_s)
    }
}

/// tools/list checks (one per service per coverage interval).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coverage {
    /// Lists that came back.
    pub checks: u64,
    /// Lists with every expected tool present (and at least `min`).
    pub complete: u64,
    /// Lists that could not be taken (the service did not answer: an availability matter).
    pub unreachable: u64,
    pub missing: BTreeSet<String>,
    pub tools_listed: usize,
}

/// The load's calls over one era: `legacy` (an initialize-based session), `modern` (stateless
/// 2026-07-28 requests) or `none` (no session: connecting failed before an era was settled).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EraStats {
    pub calls: u64,
    pub answered: u64,
    pub errors: u64,
    /// Round trip of the call itself (answered calls only).
    pub latency: Histogram,
    /// Connecting: initialize (legacy), server/discover (modern), or both (auto falling back).
    pub session_setup: Histogram,
}

/// The era names used as keys in [`ServiceStats::eras`] and [`ServiceStats::auto_eras`].
pub fn era_name(era: crate::mcp::Era) -> &'static str {
    match era {
        crate::mcp::Era::Legacy => "legacy",
        crate::mcp::Era::Modern => "modern",
    }
}

/// Everything measured for one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Load calls completed (answered or not).
    pub calls: u64,
    /// Calls that got a JSON-RPC result back (availability = answered / calls).
    pub answered: u64,
    /// Calls that failed, timed out, got a JSON-RPC error, or whose result contradicts the smoke
    /// step's `expect` (isError, contains).
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub probes: BTreeMap<String, ProbeStats>,
    /// Round trip of the call itself (answered calls only).
    pub latency: Histogram,
    /// connect + initialize of the new-session-per-call pattern.
    pub session_setup: Histogram,
    pub held_calls: u64,
    pub fresh_calls: u64,
    /// Long-lived sessions re-established after a failure.
    pub reconnects: u64,
    pub coverage: Coverage,
    pub outages: Vec<Outage>,
    pub last_error: Option<String>,
    /// The load's calls by the era that answered them (absent in checkpoints written before the
    /// soak spoke both eras).
    #[serde(default)]
    pub eras: BTreeMap<String, EraStats>,
    /// Sessions opened in auto mode (discover first, initialize when the server is not modern),
    /// by the era the service answered in.
    #[serde(default)]
    pub auto_eras: BTreeMap<String, u64>,
    /// Legacy sessions the run opened (held, fresh, coverage): what the leak check's session
    /// count covers (modern requests open no bridge session).
    #[serde(default)]
    pub legacy_sessions_opened: u64,
}

/// The outcome of one load call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub probe: String,
    pub answered: bool,
    /// `None` when the call was correct; else the kind of failure (connect, timeout, http, rpc,
    /// protocol, is_error, contains).
    pub error: Option<(String, String)>,
    pub latency_us: Option<u64>,
    pub setup_us: Option<u64>,
    pub held: bool,
    pub reconnected: bool,
    /// When the call ended, seconds since the soak started.
    pub at_s: f64,
    /// The era of the session the call went over; `None` when no session could be opened.
    pub era: Option<crate::mcp::Era>,
    /// The call opened its session (fresh, or a held session reconnecting) in this mode:
    /// `Some(true)` auto, `Some(false)` legacy; `None` when it used an open one.
    pub opened_auto: Option<bool>,
}

impl ServiceStats {
    /// A session opened (by a call, a held session or a coverage check): `auto` its mode.
    pub fn opened(&mut self, auto: bool, era: crate::mcp::Era) {
        if era == crate::mcp::Era::Legacy {
            self.legacy_sessions_opened += 1;
        }
        if auto {
            *self.auto_eras.entry(era_name(era).into()).or_default() += 1;
        }
    }

    /// The era auto-mode sessions found: `legacy`, `modern`, `mixed` (both over the run, e.g.
    /// across a redeploy) or `None` when no auto session was opened.
    pub fn auto_era(&self) -> Option<String> {
        let mut seen = self
            .auto_eras
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(e, _)| e);
        match (seen.next(), seen.next()) {
            (None, _) => None,
            (Some(e), None) => Some(e.clone()),
            (Some(_), Some(_)) => Some("mixed".into()),
        }
    }

    pub fn record(&mut self, o: &CallOutcome) {
        if let (Some(auto), Some(era)) = (o.opened_auto, o.era) {
            self.opened(auto, era);
        }
        let e = self
            .eras
            .entry(o.era.map_or("none", era_name).into())
            .or_default();
        e.calls += 1;
        if o.error.is_some() {
            e.errors += 1;
        }
        if o.answered {
            e.answered += 1;
            if let Some(us) = o.latency_us {
                e.latency.record_us(us);
            }
        }
        if let Some(us) = o.setup_us {
            e.session_setup.record_us(us);
        }
        self.calls += 1;
        let p = self.probes.entry(o.probe.clone()).or_default();
        p.calls += 1;
        if o.held {
            self.held_calls += 1;
        } else {
            self.fresh_calls += 1;
        }
        if o.reconnected {
            self.reconnects += 1;
        }
        if let Some(us) = o.setup_us {
            self.session_setup.record_us(us);
        }
        if let Some((kind, detail)) = &o.error {
            self.errors += 1;
            p.errors += 1;
            *self.error_kinds.entry(kind.clone()).or_default() += 1;
            self.last_error = Some(format!("{kind}: {detail}"));
        }
        if o.answered {
            self.answered += 1;
            if let Some(us) = o.latency_us {
                self.latency.record_us(us);
            }
            if let Some(open) = self.outages.last_mut().filter(|x| x.end_s.is_none()) {
                open.end_s = Some(o.at_s.max(open.start_s));
            }
        } else {
            match self.outages.last_mut().filter(|x| x.end_s.is_none()) {
                Some(open) => open.failed_calls += 1,
                None => self.outages.push(Outage {
                    start_s: o.at_s,
                    end_s: None,
                    failed_calls: 1,
                    first_error: o
                        .error
                        .as_ref()
                        .map(|(k, d)| format!("{k}: {d}"))
                        .unwrap_or_default(),
                }),
            }
        }
    }

    pub fn availability(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.answered as f64 / self.calls as f64)
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.errors as f64 / self.calls as f64)
    }
}

/// One point of the timeline (one sample interval).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    pub t_s: f64,
    pub calls: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub service_p95_ms: BTreeMap<String, f64>,
    /// Sum of memory used over the project's containers, when Docker has them.
    pub memory_bytes: Option<u64>,
    /// CPU cores used by the project's containers over the last interval.
    #[serde(default)]
    pub cpu_cores: Option<f64>,
    /// Sum of `mcp_bridge_sessions_active` over the bridges that answered.
    pub sessions_active: Option<f64>,
    /// Memory used per running container (the memory-growth SLO's samples).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_memory_bytes: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record_us(ms * 1000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p95 = h.quantile_ms(0.95).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..=51.0).contains(&p50), "{p50}");
        assert!((95.0..=96.9).contains(&p95), "{p95}");
        assert!((99.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile_ms(1.0).unwrap(), 100.0);
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count, 200);
        assert_eq!(m.quantile_ms(0.95), h.quantile_ms(0.95));
    }

    fn call(answered: bool, at_s: f64) -> CallOutcome {
        CallOutcome {
            probe: "echo".into(),
            answered,
            error: (!answered).then(|| ("connect".into(), "refused".into())),
            latency_us: answered.then_some(1000),
            setup_us: None,
            held: false,
            reconnected: false,
            at_s,
            era: answered.then_some(crate::mcp::Era::Legacy),
            opened_auto: None,
        }
    }

    #[test]
    fn calls_are_counted_per_era_and_auto_sessions_by_the_era_they_found() {
        let mut s = ServiceStats::default();
        let mut o = call(true, 1.0);
        o.era = Some(crate::mcp::Era::Modern);
        o.opened_auto = Some(true);
        s.record(&o);
        let mut o = call(true, 2.0);
        o.opened_auto = Some(false);
        s.record(&o);
        s.record(&call(false, 3.0));
        assert_eq!(s.eras["modern"].calls, 1);
        assert_eq!(s.eras["legacy"].answered, 1);
        assert_eq!(s.eras["none"].errors, 1);
        assert_eq!(s.auto_era().as_deref(), Some("modern"));
        assert_eq!(s.legacy_sessions_opened, 1);
        s.opened(true, crate::mcp::Era::Legacy);
        assert_eq!(s.auto_era().as_deref(), Some("mixed"));
        assert_eq!(s.legacy_sessions_opened, 2);
    }

    #[test]
    fn outages_open_on_failure_and_close_on_the_next_answer() {
        let mut s = ServiceStats::default();
        s.record(&call(true, 1.0));
        s.record(&call(false, 2.0));
        s.record(&call(false, 3.0));
        s.record(&call(true, 5.5));
        s.record(&call(false, 7.0));
        assert_eq!(s.calls, 5);
        assert_eq!(s.errors, 3);
        assert_eq!(s.availability(), Some(0.4));
        assert_eq!(s.outages.len(), 2);
        assert_eq!(s.outages[0].failed_calls, 2);
        assert_eq!(s.outages[0].recovery_s(), Some(3.5));
        assert_eq!(s.outages[1].recovery_s(), None);
    }
}
