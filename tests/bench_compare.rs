//! `benches/bench.py compare` (what `scripts/bench-* --compare` runs) on synthetic result files:
//! an equal result passes, a regression beyond the tolerance of the ratio fails with exit 1 and
//! names the figure, a slower machine that slows the peer as much is no regression, floors and
//! the tolerance hold, unusable input is exit 2 — and every committed baseline is a valid result
//! that passes against itself. No timing: the figures are made up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

fn bench_py() -> PathBuf {
    repo_root().join("benches/bench.py")
}

fn result(class: &str, figures: Value, peers: Value) -> Value {
    json!({
        "schema": 1, "bench": "bridge", "machine_class": class, "created": "2026-12-03T00:00:00+00:00",
        "git_rev": "test", "params": {"rounds": 5}, "figures": figures, "peers": peers,
    })
}

fn f(value: f64, better: &str, floor: f64) -> Value {
    json!({"value": value, "unit": "x", "better": better, "floor": floor})
}

/// A bridge result: our p50 and throughput, mcp-proxy's as their peers, an RSS without peer.
fn bridge(p50: f64, proxy_p50: f64, tput: f64, proxy_tput: f64, rss: f64) -> Value {
    result(
        "2cpu-x86_64",
        json!({
            "bridge.p50_ms": f(p50, "lower", 0.05),
            "mcp_proxy.p50_ms": f(proxy_p50, "lower", 0.05),
            "bridge.calls_per_s": f(tput, "higher", 0.0),
            "mcp_proxy.calls_per_s": f(proxy_tput, "higher", 0.0),
            "bridge.rss_idle_mb": f(rss, "lower", 1.0),
        }),
        json!({"bridge.p50_ms": "mcp_proxy.p50_ms", "bridge.calls_per_s": "mcp_proxy.calls_per_s"}),
    )
}

fn write(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

/// Exit code, stdout, stderr of `bench.py compare CUR BASE [extra]`.
fn compare(dir: &Path, cur: &Value, base: &Value, extra: &[&str]) -> (i32, String, String) {
    let c = write(dir, "current.json", cur);
    let b = write(dir, "baseline.json", base);
    let out = Command::new("python3")
        .arg(bench_py())
        .arg("compare")
        .arg(&c)
        .arg(&b)
        .args(extra)
        .output()
        .expect("python3 runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The verdict column of one figure's row.
fn verdict<'a>(stdout: &'a str, figure: &str) -> &'a str {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{figure} ")))
        .unwrap_or_else(|| panic!("no row for {figure}:\n{stdout}"));
    line.rsplit("  ").next().unwrap().trim()
}

#[test]
fn an_equal_result_passes() {
    let dir = TestDir::new();
    let base = bridge(0.30, 5.0, 3000.0, 350.0, 6.0);
    let (code, out, err) = compare(dir.path(), &base, &base, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("no regression"), "{err}");
    for fig in ["bridge.p50_ms", "bridge.calls_per_s", "bridge.rss_idle_mb"] {
        assert_eq!(verdict(&out, fig), "ok", "{out}");
    }
    assert!(out.contains("tolerance: 25% of the ratio"), "{out}");
}

#[test]
fn a_regression_beyond_the_tolerance_fails_and_names_the_figure() {
    let dir = TestDir::new();
    let base = bridge(0.30, 5.0, 3000.0, 350.0, 6.0);
    // Our p50 1.5x, the peer's unchanged: (0.45/5) / (0.30/5) = 1.5 > 1.25.
    let (code, out, err) = compare(
        dir.path(),
        &bridge(0.45, 5.0, 3000.0, 350.0, 6.0),
        &base,
        &[],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert_eq!(verdict(&out, "bridge.p50_ms"), "REGRESSION", "{out}");
    assert_eq!(verdict(&out, "bridge.calls_per_s"), "ok", "{out}");
    assert!(
        err.contains("regression beyond 25%: bridge.p50_ms"),
        "{err}"
    );
    // Throughput is higher-is-better: 0.7x of the peer-normalised figure regresses, 0.85x not.
    let (code, out, _) = compare(
        dir.path(),
        &bridge(0.30, 5.0, 2100.0, 350.0, 6.0),
        &base,
        &[],
    );
    assert_eq!(
        (code, verdict(&out, "bridge.calls_per_s")),
        (1, "REGRESSION"),
        "{out}"
    );
    let (code, out, _) = compare(
        dir.path(),
        &bridge(0.30, 5.0, 2550.0, 350.0, 6.0),
        &base,
        &[],
    );
    assert_eq!(code, 0, "{out}");
    // A figure without a peer is judged by its ratio to the baseline: RSS 6 → 8 MB is 1.33x.
    let (code, out, _) = compare(
        dir.path(),
        &bridge(0.30, 5.0, 3000.0, 350.0, 8.0),
        &base,
        &[],
    );
    assert_eq!(
        (code, verdict(&out, "bridge.rss_idle_mb")),
        (1, "REGRESSION"),
        "{out}"
    );
    // ...and a looser tolerance lets it through.
    let (code, out, _) = compare(
        dir.path(),
        &bridge(0.30, 5.0, 3000.0, 350.0, 8.0),
        &base,
        &["--tolerance", "0.5"],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_slower_machine_that_slows_the_peer_as_much_is_no_regression() {
    let dir = TestDir::new();
    let base = bridge(0.30, 5.0, 3000.0, 350.0, 6.0);
    // Everything 1.6x slower (a busy or slower machine): the ratio to the baseline is 1.6, the
    // ratio to the peer unchanged — the peer ratio decides.
    let (code, out, err) = compare(
        dir.path(),
        &bridge(0.48, 8.0, 1875.0, 218.75, 6.0),
        &base,
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("bridge.p50_ms "))
        .unwrap();
    assert!(row.contains(" 1.60 ") && row.contains(" 1.00 "), "{row}");
    // The peer's own figures are context, not judged (they moved 1.6x too).
    assert!(
        verdict(&out, "mcp_proxy.p50_ms").starts_with("context"),
        "{out}"
    );
    // Values under a figure's floor count as the floor: 0.01 → 0.04 ms is not a 4x regression.
    let (code, out, _) = compare(
        dir.path(),
        &bridge(0.04, 0.04, 3000.0, 350.0, 0.5),
        &bridge(0.01, 0.04, 3000.0, 350.0, 0.2),
        &[],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn unusable_input_is_exit_2_with_the_reason() {
    let dir = TestDir::new();
    let base = bridge(0.30, 5.0, 3000.0, 350.0, 6.0);
    let mut other = base.clone();
    other["machine_class"] = json!("8cpu-aarch64");
    let (code, _, err) = compare(dir.path(), &base, &other, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("measured on 8cpu-aarch64") && err.contains("not comparable"),
        "{err}"
    );
    let (code, _, _) = compare(dir.path(), &base, &other, &["--any-class"]);
    assert_eq!(code, 0);
    let mut broken = base.clone();
    broken["figures"]["bridge.p50_ms"]["value"] = json!("fast");
    let (code, _, err) = compare(dir.path(), &broken, &base, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bridge.p50_ms"), "{err}");
    let out = Command::new("python3")
        .arg(bench_py())
        .args(["compare", "/nonexistent/current.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

#[test]
fn record_writes_a_result_that_compare_reads() {
    let dir = TestDir::new();
    let out = dir.path().join("deploy.json");
    let rec = Command::new("python3")
        .arg(bench_py())
        .args(["record", "--bench", "deploy", "--out"])
        .arg(&out)
        .args([
            "--param",
            "services=9",
            "noop_plan_s:s:lower:0.2=0.41",
            "rollback_s:s:lower=3.2",
        ])
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["bench"], "deploy");
    assert_eq!(doc["figures"]["noop_plan_s"]["value"], 0.41);
    assert_eq!(doc["figures"]["noop_plan_s"]["floor"], 0.2);
    assert!(doc["machine_class"].as_str().unwrap().contains("cpu-"));
    let mut slower = doc.clone();
    slower["figures"]["rollback_s"]["value"] = json!(4.5);
    let (code, stdout, _) = compare(dir.path(), &slower, &doc, &[]);
    assert_eq!(
        (code, verdict(&stdout, "rollback_s")),
        (1, "REGRESSION"),
        "{stdout}"
    );
    let bad = Command::new("python3")
        .arg(bench_py())
        .args(["record", "--bench", "x", "--out"])
        .arg(dir.path().join("x.json"))
        .arg("noop_plan_s=0.4")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn every_committed_baseline_is_valid_and_passes_against_itself() {
    let root = repo_root().join("benches/baselines");
    let mut seen = 0;
    for class in std::fs::read_dir(&root).expect("benches/baselines exists") {
        let class = class.unwrap().path();
        for file in std::fs::read_dir(&class).unwrap() {
            let file = file.unwrap().path();
            let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(
                doc["machine_class"].as_str(),
                class.file_name().and_then(|n| n.to_str()),
                "{}: the directory names the machine class",
                file.display()
            );
            assert_eq!(
                doc["bench"]
                    .as_str()
                    .map(|b| format!("{b}.json"))
                    .as_deref(),
                file.file_name().and_then(|n| n.to_str()),
                "{}: the file names the bench",
                file.display()
            );
            let out = Command::new("python3")
                .arg(bench_py())
                .arg("compare")
                .arg(&file)
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            seen += 1;
        }
    }
    assert!(seen >= 3, "baselines of bridge, deploy and edge: {seen}");
}
