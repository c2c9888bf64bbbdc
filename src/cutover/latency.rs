//! Latency of one tool call, directly and through LiteLLM, side by side. Both paths open a new
//! MCP session per call, because that is what LiteLLM does upstream (connect, initialize, call,
//! close) — so the difference is LiteLLM's own cost. The seed's p95 target is judged through
//! LiteLLM.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::litellm::LiteLlm;
use crate::mcp::{Session, Transport};

/// Percentiles of one series of calls, in milliseconds.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Figures {
    pub calls: usize,
    pub failed: usize,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

pub fn figures(samples: &[f64], failed: usize) -> Figures {
    let round = |v: Option<f64>| v.map(|x| (x * 100.0).round() / 100.0);
    Figures {
        calls: samples.len() + failed,
        failed,
        p50_ms: round(percentile(samples, 0.50)),
        p95_ms: round(percentile(samples, 0.95)),
        max_ms: round(samples.iter().copied().reduce(f64::max)),
    }
}

/// `n` calls of `tool`, each on a new legacy session at `base`: the baseline of LiteLLM's
/// overhead, so the same era LiteLLM speaks to the service (initialize, a session per call).
pub async fn direct(
    base: &str,
    transport: Transport,
    token: Option<&str>,
    tool: &str,
    args: &Value,
    n: usize,
    timeout: Duration,
) -> Figures {
    let mut ok = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let started = Instant::now();
        let r = async {
            let opts = crate::mcp::Options {
                timeout,
                bearer_token: token.map(str::to_string),
            };
            let mut s = Session::connect_with(base, transport, &opts).await?;
            let r = s.call_tool(tool, args.clone()).await;
            s.close().await;
            r
        }
        .await;
        match r {
            Ok(r) if !r.is_error => ok.push(started.elapsed().as_secs_f64() * 1e3),
            _ => failed += 1,
        }
    }
    figures(&ok, failed)
}

/// `n` calls of `tool` on `server` through LiteLLM's REST endpoint.
pub async fn through_litellm(
    llm: &LiteLlm,
    server: &str,
    tool: &str,
    args: &Value,
    n: usize,
) -> Figures {
    let mut ok = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let r = llm.rest_call(server, tool, args).await;
        if r.succeeded() {
            ok.push(r.ms);
        } else {
            failed += 1;
        }
    }
    figures(&ok, failed)
}

/// `n` calls of `tool` on one open `session` (LiteLLM's `/mcp`, where tools are `<server>-<tool>`);
/// the first WARMUP are not counted.
pub async fn through_mcp_session(
    session: &mut Session,
    tool: &str,
    args: &Value,
    n: usize,
) -> Figures {
    let mut ok = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n + super::check::WARMUP {
        let started = Instant::now();
        let r = session.call_tool(tool, args.clone()).await;
        if i < super::check::WARMUP {
            continue;
        }
        match r {
            Ok(r) if !r.is_error => ok.push(started.elapsed().as_secs_f64() * 1e3),
            _ => failed += 1,
        }
    }
    figures(&ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 0.5), Some(50.0));
        assert_eq!(percentile(&s, 0.95), Some(95.0));
        assert_eq!(percentile(&[3.0], 0.95), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
        let f = figures(&[2.0, 1.0, 3.0], 1);
        assert_eq!(
            (f.calls, f.failed, f.p50_ms, f.max_ms),
            (4, 1, Some(2.0), Some(3.0))
        );
    }
}
