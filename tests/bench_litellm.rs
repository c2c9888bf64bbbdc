//! `scripts/bench-litellm`'s logic without LiteLLM (benches/litellm.py `summarize` and `run`'s
//! argument checks): the figures a samples file gives (names, LiteLLM's share against the right
//! direct path, what is judged), that `benches/bench.py compare` judges them as intended (more
//! LiteLLM CPU or more upstream requests per call regress; a busy machine that only stretches
//! latencies does not), wrong replies are exit 1, and bad input is exit 2 with the reason before
//! anything starts. No timing: the samples are made up. The real run is a benchmark
//! (benches/README.md), not a test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

fn litellm_py() -> PathBuf {
    repo_root().join("benches/litellm.py")
}

fn py(args: &[&str]) -> Output {
    Command::new("python3")
        .arg(litellm_py())
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs")
}

/// One cell: `n` equal latencies (so p50 = p95 = `ms`), one round of `wall_s`, LiteLLM's CPU,
/// one upstream session and 3 upstream requests per call.
fn cell(ms: f64, n: usize, wall_s: f64, cpu_s: f64) -> Value {
    json!({"ms": vec![ms; n], "wall_s": [wall_s], "wrong": 0, "errors": [],
           "upstream_sessions": n, "upstream_requests": 3 * n, "litellm_cpu_s": cpu_s, "bridge_cpu_s": 0.1})
}

/// Samples of one `sse` variant at concurrency 1: direct paths 2 ms (fresh SSE) and 1 ms (warm),
/// LiteLLM's health `health` ms, REST `rest` ms (LiteLLM CPU 0.6 s for its 20 calls) and /mcp
/// 40 ms, 20 calls each.
fn samples(health: f64, rest: f64) -> Value {
    json!({
        "schema": 1, "kind": "litellm-samples",
        "variants": [{"name": "sse", "transport": "sse", "workers": 1, "protocol": null}],
        "correctness": {"sse": {"ok": true, "failures": [], "startup_s": 20.0, "first_call_ms": 120.0}},
        "params": {"calls": 20, "rounds": 1, "variants": "sse=sse"},
        "cells": {
            "direct.fresh_sse.c1": cell(2.0, 20, 0.04, 0.0),
            "direct.warm.c1": cell(1.0, 20, 0.02, 0.0),
            "sse.health.c1": cell(health, 20, health * 0.02, 0.04),
            "sse.rest.c1": cell(rest, 20, rest * 0.02, 0.6),
            "sse.mcp.c1": cell(40.0, 20, 0.8, 0.5),
        },
    })
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

/// `summarize` a samples document into `<name>.result.json`: (exit code, stdout, result).
fn summarize(dir: &Path, name: &str, s: &Value) -> (i32, String, Value) {
    let samples = write(dir, &format!("{name}.samples.json"), s);
    let result = dir.join(format!("{name}.result.json"));
    let out = py(&[
        "summarize",
        samples.to_str().unwrap(),
        "--json",
        result.to_str().unwrap(),
    ]);
    let doc = std::fs::read(&result)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), text(&out.stdout), doc)
}

#[test]
fn summarize_gives_each_path_its_figures_share_and_peer() {
    let dir = TestDir::new();
    let (code, stdout, doc) = summarize(dir.path(), "a", &samples(2.0, 50.0));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(doc["bench"], "litellm");
    assert_eq!(doc["schema"], 1);
    let f = &doc["figures"];
    assert_eq!(f["sse.rest.c1.p50_ms"]["value"], 50.0);
    assert_eq!(f["sse.rest.c1.calls_per_s"]["value"], 20.0 / 1.0);
    // REST opens a fresh upstream session of the variant's transport per call: its share is
    // taken against the fresh SSE session (50 - 2); /mcp keeps one, so against the warm one.
    assert_eq!(f["sse.rest.c1.litellm_share_p50_ms"]["value"], 48.0);
    assert_eq!(f["sse.mcp.c1.litellm_share_p95_ms"]["value"], 39.0);
    // LiteLLM's CPU per call: 0.6 s over 20 calls; what reached the bridge per call.
    assert_eq!(f["sse.rest.c1.litellm_cpu_ms_per_call"]["value"], 30.0);
    assert_eq!(f["sse.rest.c1.upstream_requests_per_call"]["value"], 3.0);
    assert_eq!(f["sse.mcp.c1.upstream_sessions_per_call"]["value"], 1.0);
    // Judged: LiteLLM's CPU and the upstream requests per call of REST and /mcp; every latency,
    // throughput and share is context (a busy machine moves them 2x: benches/README.md).
    for name in [
        "sse.rest.c1.litellm_cpu_ms_per_call",
        "sse.mcp.c1.upstream_requests_per_call",
    ] {
        assert!(f[name].get("reference").is_none(), "{name}: {}", f[name]);
    }
    for name in [
        "direct.fresh_sse.c1.p50_ms",
        "direct.warm.c1.p95_ms",
        "sse.health.c1.p50_ms",
        "sse.rest.c1.p95_ms",
        "sse.mcp.c1.calls_per_s",
        "sse.rest.c1.litellm_share_p50_ms",
        "sse.rest.c1.upstream_sessions_per_call",
    ] {
        assert_eq!(f[name]["reference"], true, "{name}: {}", f[name]);
    }
    assert!(
        f.get("sse.health.c1.litellm_cpu_ms_per_call").is_none(),
        "{f}"
    );
    assert_eq!(doc["peers"], json!({}));
    assert_eq!(doc["params"]["variants"], "sse=sse");
    // The table names every path, and the variants are ranked.
    for path in [
        "direct.fresh_sse",
        "direct.warm",
        "sse.health",
        "sse.rest",
        "sse.mcp",
    ] {
        assert!(stdout.contains(path), "{path} missing:\n{stdout}");
    }
    assert!(stdout.contains("variants by mean p95"), "{stdout}");
}

#[test]
fn compare_flags_more_litellm_work_but_not_a_busier_machine() {
    let dir = TestDir::new();
    let (_, _, base) = summarize(dir.path(), "base", &samples(2.0, 50.0));
    let bench_py = repo_root().join("benches/bench.py");
    let compare = |cur: &Value| {
        let c = write(dir.path(), "cur.json", cur);
        let b = write(dir.path(), "base.json", &base);
        let out = Command::new("python3")
            .arg(&bench_py)
            .arg("compare")
            .arg(&c)
            .arg(&b)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    };
    // LiteLLM spends 1.5x the CPU on a REST call: a regression of that figure only.
    let mut harder = samples(2.0, 50.0);
    harder["cells"]["sse.rest.c1"]["litellm_cpu_s"] = json!(0.9);
    let (_, _, harder) = summarize(dir.path(), "harder", &harder);
    let (code, out, err) = compare(&harder);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("regression beyond 25%: sse.rest.c1.litellm_cpu_ms_per_call\n"),
        "{err}"
    );
    // Two more upstream requests per /mcp call (5 instead of 3): a regression.
    let mut chattier = samples(2.0, 50.0);
    chattier["cells"]["sse.mcp.c1"]["upstream_requests"] = json!(100);
    let (_, _, chattier) = summarize(dir.path(), "chattier", &chattier);
    let (code, out, err) = compare(&chattier);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("sse.mcp.c1.upstream_requests_per_call"),
        "{err}"
    );
    // A busy machine: every latency 1.5x or 2x, throughput down, LiteLLM's CPU per call the
    // same — the latencies are shown with their ratios, nothing regresses.
    let mut busy = samples(3.0, 100.0);
    busy["cells"]["sse.mcp.c1"] = cell(60.0, 20, 1.2, 0.5);
    let (_, _, busy) = summarize(dir.path(), "busy", &busy);
    let (code, out, err) = compare(&busy);
    assert_eq!(code, 0, "{out}\n{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("sse.rest.c1.p50_ms "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" 2.00 ") && row.contains("context"), "{row}");
}

#[test]
fn wrong_replies_are_exit_1_and_bad_samples_exit_2() {
    let dir = TestDir::new();
    let mut s = samples(2.0, 50.0);
    s["cells"]["sse.rest.c1"]["wrong"] = json!(3);
    let (code, _, _) = summarize(dir.path(), "wrong", &s);
    assert_eq!(code, 1);

    for (what, broken) in [
        (
            "kind",
            json!({"schema": 1, "kind": "other", "variants": [], "cells": {}}),
        ),
        ("cell of an unknown variant", {
            let mut b = samples(2.0, 50.0);
            b["cells"]["http.rest.c1"] = cell(1.0, 2, 0.1, 0.0);
            b
        }),
        ("negative latency", {
            let mut b = samples(2.0, 50.0);
            b["cells"]["sse.rest.c1"]["ms"] = json!([-1.0]);
            b
        }),
    ] {
        let p = write(dir.path(), "broken.json", &broken);
        let out = py(&["summarize", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).starts_with("bench-litellm: "),
            "{what}: {}",
            text(&out.stderr)
        );
    }
    let out = py(&["summarize", "/nonexistent/samples.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no such file"));
}

#[test]
fn run_refuses_bad_arguments_before_starting_anything() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--mcpctl",
            "/bin/true",
            "--bridge",
            "/bin/true",
            "--testserver",
            "/bin/true",
            "--litellm",
            "/bin/true",
        ];
        args.extend_from_slice(extra);
        let out = py(&args);
        (out.status.code(), text(&out.stderr))
    };
    for (extra, says) in [
        (vec!["--variants", "fast"], "NAME=TRANSPORT"),
        (vec!["--variants", "Bad=sse"], "must match"),
        (vec!["--variants", "a=sse,a=http"], "used twice"),
        (
            vec!["--variants", "a=grpc"],
            "transport must be sse or http",
        ),
        (vec!["--variants", "a=sse+workers=99"], "unknown setting"),
        (
            vec!["--variants", "a=sse+protocol=2026-07-28"],
            "needs transport http",
        ),
        (vec!["--calls", "5"], "--calls 5"),
        (vec!["--rounds", "0"], "--rounds 0"),
    ] {
        let (code, err) = run(&extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    let out = py(&[
        "run",
        "--mcpctl",
        "/nonexistent/mcpctl",
        "--bridge",
        "/bin/true",
        "--testserver",
        "/bin/true",
        "--litellm",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent/mcpctl: not an executable"),
        "{}",
        text(&out.stderr)
    );
    // The wrapper checks --compare's file before it builds or starts anything.
    let out = Command::new(repo_root().join("scripts/bench-litellm"))
        .args(["--compare", "/nonexistent/baseline.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no such file"));
}
