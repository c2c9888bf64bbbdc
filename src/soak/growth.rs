//! The memory-growth SLO: per container, the slope of "memory used" (bytes per hour) fitted by
//! Theil–Sen (the median of the pairwise slopes) over the samples taken after a warm-up, judged
//! against the service's `slo.memory_growth_per_hour`.
//!
//! Why Theil–Sen: container memory is noisy (allocator arenas, GC cycles, page cache churn) and
//! a single spike (a large reply, a burst of sessions) must not decide the verdict. Least squares
//! follows an outlier; the median of pairwise slopes ignores up to ~29 % of arbitrary points.
//! Why a warm-up: caches, JIT and connection pools grow once and then stay; that step is not a
//! leak. The warm-up counts from the container's first sample in this run (or its restart), so a
//! chaos restart starts a fresh warm-up instead of judging the restart's drop as negative growth.
//!
//! Owns: the fit and the verdict, as pure functions of samples (unit-tested with synthetic
//! series). Must not: sample anything or print.

use serde::{Deserialize, Serialize};

use super::report::Status;

/// At least this many samples after the warm-up...
pub const MIN_SAMPLES: usize = 30;
/// ...spanning at least this long: a slope fitted over minutes and extrapolated to an hour is
/// noise, whatever the sample count.
pub const MIN_SPAN_S: f64 = 20.0 * 60.0;
/// The fit uses at most this many points: beyond it the samples are grouped into this many
/// consecutive bins of equal count and each bin contributes its median time and median value.
/// Keeps the pairwise fit at ≤ 19,900 pairs for a 24-hour run (8,640 samples at 10 s).
const MAX_POINTS: usize = 200;

/// The verdict for one container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Growth {
    pub container: String,
    /// The service the container runs (its `<p>.service` label), when it has one.
    pub service: Option<String>,
    pub target_bytes_per_hour: u64,
    /// Theil–Sen slope over the samples after the warm-up; `None` when not judged.
    pub slope_bytes_per_hour: Option<f64>,
    /// Samples after the warm-up, and the time they span.
    pub samples: usize,
    pub span_s: f64,
    /// When the judged window started (seconds since the soak began).
    pub from_s: Option<f64>,
    pub status: Status,
    /// "+1.2 MiB/h over 240 samples (40 min) after warm-up", or "not judged (…)".
    pub detail: String,
}

fn mib(b: f64) -> String {
    format!("{:+.1} MiB/h", b / (1u64 << 20) as f64)
}

/// Median of a non-empty slice (sorted in place).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// At most `max` points: consecutive groups of (nearly) equal count, each reduced to its median
/// time and median value. `points` must be sorted by time.
fn reduce(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points.to_vec();
    }
    (0..max)
        .map(|i| {
            let a = i * points.len() / max;
            let b = ((i + 1) * points.len() / max).max(a + 1);
            let mut t: Vec<f64> = points[a..b].iter().map(|p| p.0).collect();
            let mut y: Vec<f64> = points[a..b].iter().map(|p| p.1).collect();
            (median(&mut t), median(&mut y))
        })
        .collect()
}

/// Theil–Sen slope of (t seconds, y) in y per hour: the median of (yj − yi)/(tj − ti) over all
/// pairs with distinct times (after reducing to at most 200 points). `None` with fewer than two
/// distinct times.
pub fn theil_sen_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pts = reduce(&sorted, MAX_POINTS);
    let mut slopes = Vec::with_capacity(pts.len() * pts.len().saturating_sub(1) / 2);
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            let dt = b.0 - a.0;
            if dt.abs() > f64::EPSILON {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    Some(median(&mut slopes) * 3600.0)
}

/// Judge one container's samples (t seconds since the soak began, bytes used). `started_s`: when
/// this incarnation of the container was first sampled; the warm-up counts from there.
pub fn judge(
    container: &str,
    service: Option<&str>,
    samples: &[(f64, u64)],
    started_s: f64,
    warm_up_s: f64,
    target_bytes_per_hour: u64,
) -> Growth {
    let from = started_s + warm_up_s;
    let after: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(t, b)| (*t, *b as f64))
        .collect();
    let span_s = match (after.first(), after.last()) {
        (Some(a), Some(z)) => z.0 - a.0,
        _ => 0.0,
    };
    let mut g = Growth {
        container: container.to_string(),
        service: service.map(str::to_string),
        target_bytes_per_hour,
        slope_bytes_per_hour: None,
        samples: after.len(),
        span_s,
        from_s: after.first().map(|p| p.0),
        status: Status::NotMeasured,
        detail: String::new(),
    };
    if after.len() < MIN_SAMPLES || span_s < MIN_SPAN_S {
        g.detail = format!(
            "not judged (need ≥ {MIN_SAMPLES} samples after warm-up spanning ≥ {:.0} min; have {} over {:.1} min after a {:.0} min warm-up)",
            MIN_SPAN_S / 60.0,
            after.len(),
            span_s / 60.0,
            warm_up_s / 60.0
        );
        return g;
    }
    let Some(slope) = theil_sen_per_hour(&after) else {
        g.detail = "not judged (no two distinct sample times)".into();
        return g;
    };
    g.slope_bytes_per_hour = Some(slope);
    g.status = if slope < target_bytes_per_hour as f64 {
        Status::Pass
    } else {
        Status::Fail
    };
    g.detail = format!(
        "{} over {} samples ({:.0} min) after warm-up",
        mib(slope),
        after.len(),
        span_s / 60.0
    );
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1u64 << 20) as f64;
    const WARM: f64 = 600.0;
    const TARGET: u64 = 5 << 20;

    /// A deterministic pseudo-random noise in [-1, 1) (no RNG dependency in a unit test).
    fn noise(i: usize) -> f64 {
        let x = (i as u64)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    }

    /// One sample every 10 s for `hours`, value from `f(t)`.
    fn series(hours: f64, f: impl Fn(usize, f64) -> f64) -> Vec<(f64, u64)> {
        let n = (hours * 360.0) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 * 10.0;
                (t, f(i, t).max(0.0) as u64)
            })
            .collect()
    }

    fn verdict(s: &[(f64, u64)]) -> Growth {
        judge("p-svc-r1", Some("svc"), s, 0.0, WARM, TARGET)
    }

    #[test]
    fn flat_with_noise_passes() {
        // 80 MiB ± 3 MiB of noise for an hour.
        let g = verdict(&series(1.0, |i, _| 80.0 * MIB + 3.0 * MIB * noise(i)));
        assert_eq!(g.status, Status::Pass, "{g:?}");
        assert!(g.slope_bytes_per_hour.unwrap().abs() < 1.0 * MIB, "{g:?}");
        assert_eq!(g.samples, 300);
    }

    #[test]
    fn a_steady_leak_fails() {
        // 12 MiB/h on top of the same noise.
        let g = verdict(&series(1.0, |i, t| {
            80.0 * MIB + 12.0 * MIB * t / 3600.0 + 3.0 * MIB * noise(i)
        }));
        assert_eq!(g.status, Status::Fail, "{g:?}");
        let s = g.slope_bytes_per_hour.unwrap() / MIB;
        assert!((11.0..13.0).contains(&s), "{s}");
        assert!(g.detail.starts_with("+12"), "{}", g.detail);
    }

    #[test]
    fn a_warm_up_step_then_a_plateau_passes() {
        // 40 MiB at the start, climbing to 90 MiB over the first 8 minutes (a cache filling),
        // then flat with noise. Least squares over the whole run would call it +40 MiB/h.
        let s = series(1.0, |i, t| {
            let base = if t < 480.0 {
                40.0 + 50.0 * t / 480.0
            } else {
                90.0
            };
            base * MIB + 1.0 * MIB * noise(i)
        });
        let all: Vec<(f64, f64)> = s.iter().map(|(t, b)| (*t, *b as f64)).collect();
        assert!(
            super::super::observe::trend_per_hour(&all).unwrap() > 10.0 * MIB,
            "the naive trend sees the step"
        );
        let g = verdict(&s);
        assert_eq!(g.status, Status::Pass, "{g:?}");
    }

    #[test]
    fn outliers_do_not_flip_the_verdict() {
        // Flat, with one sample in ten a +200 MiB spike, clustered at the end (where least
        // squares is most sensitive): still a pass.
        let flat = series(1.0, |i, t| {
            let spike = if i % 10 == 0 && t > 2400.0 {
                200.0
            } else {
                0.0
            };
            (80.0 + spike) * MIB + 2.0 * MIB * noise(i)
        });
        assert_eq!(verdict(&flat).status, Status::Pass, "{:?}", verdict(&flat));
        // A real leak with downward spikes (a GC returning memory now and then): still a fail.
        let leak = series(1.0, |i, t| {
            let dip = if i % 10 == 0 { 60.0 } else { 0.0 };
            (100.0 + 12.0 * t / 3600.0 - dip) * MIB + 2.0 * MIB * noise(i)
        });
        assert_eq!(verdict(&leak).status, Status::Fail, "{:?}", verdict(&leak));
    }

    #[test]
    fn a_short_run_is_not_judged() {
        // 15 minutes: 5 minutes after the warm-up, 30 samples but too short a span.
        let g = verdict(&series(0.25, |_, t| 80.0 * MIB + 100.0 * MIB * t / 3600.0));
        assert_eq!(g.status, Status::NotMeasured);
        assert_eq!(g.slope_bytes_per_hour, None);
        assert!(
            g.detail
                .starts_with("not judged (need ≥ 30 samples after warm-up"),
            "{}",
            g.detail
        );
        // Nothing after the warm-up at all.
        let g = verdict(&series(0.1, |_, _| 80.0 * MIB));
        assert_eq!((g.status, g.samples), (Status::NotMeasured, 0));
    }

    #[test]
    fn the_warm_up_counts_from_a_restart() {
        // Restarted at 30 min: its fresh climb during the new warm-up is ignored; after it
        // (26 min judged) it is flat.
        let s = series(1.1, |i, t| {
            let v = if t < 1800.0 {
                80.0
            } else if t < 2100.0 {
                20.0 + 60.0 * (t - 1800.0) / 300.0
            } else {
                80.0
            };
            v * MIB + noise(i) * MIB
        });
        let g = judge("c", None, &s, 1800.0, WARM, TARGET);
        assert_eq!(g.status, Status::Pass, "{g:?}");
        assert_eq!(g.from_s, Some(2400.0));
    }

    #[test]
    fn long_runs_are_reduced_and_still_exact_on_a_line() {
        // 24 h at 10 s: 8,640 samples; an exact 3 MiB/h line.
        let s = series(24.0, |_, t| 50.0 * MIB + 3.0 * MIB * t / 3600.0);
        let g = verdict(&s);
        let slope = g.slope_bytes_per_hour.unwrap() / MIB;
        assert!((slope - 3.0).abs() < 0.01, "{slope}");
        assert_eq!(g.status, Status::Pass);
        assert_eq!(theil_sen_per_hour(&[(1.0, 5.0)]), None);
    }
}
