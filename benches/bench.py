#!/usr/bin/env python3
"""Benchmark results as JSON, committed baselines per machine class, and `compare`.

Used by scripts/bench-bridge, scripts/bench-deploy and scripts/bench-edge (`--json FILE`,
`--compare [BASELINE]`); runnable on its own:

    benches/bench.py class                              # e.g. 2cpu-x86_64
    benches/bench.py record --bench deploy --out F NAME:UNIT:lower|higher[:FLOOR]=VALUE ...
    benches/bench.py compare CURRENT.json [BASELINE.json] [--tolerance 0.25]

A result file (schema 1):
    {"schema": 1, "bench": "bridge", "machine_class": "2cpu-x86_64", "created": "...",
     "git_rev": "...", "params": {...},
     "figures": {"bridge.p50_ms": {"value": 0.49, "unit": "ms", "better": "lower", "floor": 0}},
     "peers": {"bridge.p50_ms": "mcp-proxy.p50_ms"}}
`peers` maps one of our figures to the same figure of a peer measured in the same run. A peer's
figures, and figures marked `"reference": true` (the stdio floor), are shown but never judged:
they measure the machine and the test server, not this project.

`compare` prints, per figure, the ratio current / baseline, and where the figure has a peer in
both files, the ratio (ours / peer now) / (ours / peer in the baseline). The verdict of a figure is
taken from the peer-normalised ratio when there is one (the machine's speed and load that day
cancel out: both were measured in the same run, interleaved), else from the ratio to the
baseline. A figure regresses when its ratio is worse than 1 + tolerance in its bad direction
(lower-is-better: ratio > 1.25; higher-is-better: ratio < 1 / 1.25 = 0.8, the same relative
change). Values under a figure's `floor` count as the floor (a 1 ms edge gap against a 2 ms one is
not a 2× regression). Exit 0: no regression; 1: at least one; 2: unusable input (missing or
unreadable file, another bench, another machine class unless --any-class).

Standard library only: it runs with the system python3 and inside the bench venvs alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

SCHEMA = 1
# 25 %: the figures are medians over interleaved rounds, and on this shared 2-core machine those
# medians still move by up to ~15 % between runs of the same build (benches/README.md has the
# measured spread); 25 % stays clear of that and still catches what matters here (the dev build
# is 1.9x the release build's p50, 0.61x its throughput).
DEFAULT_TOLERANCE = 0.25
HERE = os.path.dirname(os.path.abspath(__file__))


class InputError(Exception):
    """A file that cannot be compared (exit 2)."""


def machine_class() -> str:
    """`<cpus>cpu-<arch>`: the CPUs this process may run on (cgroup/affinity aware) and the
    architecture. Figures from different classes are not comparable."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return f"{cpus}cpu-{platform.machine() or 'unknown'}"


def baseline_path(bench: str, cls: str | None = None) -> str:
    return os.path.join(HERE, "baselines", cls or machine_class(), f"{bench}.json")


def git_rev() -> str:
    try:
        out = subprocess.run(["git", "-C", HERE, "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        rev = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty and rev else "") if rev else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def result(bench: str, figures: dict, peers: dict | None = None, params: dict | None = None) -> dict:
    """A result document; `figures`: name -> {value, unit, better[, floor]}."""
    for name, f in figures.items():
        check_figure(name, f, "<this run>")
    return {
        "schema": SCHEMA,
        "bench": bench,
        "machine_class": machine_class(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        # How busy the machine was (not compared): a baseline taken under load says so.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "params": params or {},
        "figures": figures,
        "peers": peers or {},
    }


def fig(value: float, unit: str, better: str, floor: float = 0.0, reference: bool = False) -> dict:
    """`reference`: printed and compared for context, never judged (e.g. the stdio floor)."""
    d = {"value": float(value), "unit": unit, "better": better, "floor": float(floor)}
    if reference:
        d["reference"] = True
    return d


def write(doc: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def check_figure(name: str, f, where: str) -> None:
    if not isinstance(f, dict):
        raise InputError(f"{where}: figure {name!r} is not an object")
    v = f.get("value")
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v < 0:
        raise InputError(f"{where}: figure {name!r} has no non-negative number as value ({v!r})")
    if f.get("better") not in ("lower", "higher"):
        raise InputError(f"{where}: figure {name!r}: better must be 'lower' or 'higher'")
    floor = f.get("floor", 0)
    if not isinstance(floor, (int, float)) or floor < 0:
        raise InputError(f"{where}: figure {name!r}: floor must be a non-negative number")


def load(path: str) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file")
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not readable as JSON ({e})")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{path}: not a bench result of schema {SCHEMA}")
    figs = doc.get("figures")
    if not isinstance(figs, dict) or not figs:
        raise InputError(f"{path}: no figures")
    for name, f in figs.items():
        check_figure(name, f, path)
    peers = doc.get("peers", {})
    if not isinstance(peers, dict) or any(p not in figs or o not in figs for o, p in peers.items()):
        raise InputError(f"{path}: `peers` must map figures of this file to figures of this file")
    return doc


def _v(f: dict) -> float:
    return max(float(f["value"]), float(f.get("floor", 0.0)))


def _worse(ratio: float, better: str, tol: float) -> bool:
    return ratio > 1 + tol if better == "lower" else ratio < 1 / (1 + tol)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def compare(cur: dict, base: dict, tol: float) -> tuple[list[dict], bool]:
    """Rows for every figure of the current run, and whether any regressed."""
    rows, regressed = [], False
    # A peer's figures and reference figures (the floor, e.g. the stdio server alone) are printed
    # for context but not judged: they measure the machine, not this project.
    context = set(cur.get("peers", {}).values()) | {n for n, f in cur["figures"].items() if f.get("reference")}
    for name, f in cur["figures"].items():
        b = base["figures"].get(name)
        row = {"figure": name, "unit": f.get("unit", ""), "better": f["better"], "value": f["value"],
               "baseline": b["value"] if b else None, "ratio": None, "peer": None, "peer_ratio": None,
               "judged_by": None, "verdict": "new (not in the baseline)"}
        if b:
            row["ratio"] = _ratio(_v(f), _v(b))
            peer = cur.get("peers", {}).get(name)
            if peer and base.get("peers", {}).get(name) == peer and peer in base["figures"]:
                now = _ratio(_v(f), _v(cur["figures"][peer]))
                was = _ratio(_v(b), _v(base["figures"][peer]))
                row["peer"] = peer
                if now is not None and was:
                    row["peer_ratio"] = now / was
            judged = row["peer_ratio"] if row["peer_ratio"] is not None else row["ratio"]
            row["judged_by"] = "peer" if row["peer_ratio"] is not None else "baseline"
            if name in context:
                row["judged_by"] = None
                row["verdict"] = "context (peer or reference: not judged)"
            elif judged is None:
                row["verdict"] = "not judged (zero baseline)"
            elif _worse(judged, f["better"], tol):
                row["verdict"] = "REGRESSION"
                regressed = True
            else:
                row["verdict"] = "ok"
        rows.append(row)
    for name in base["figures"]:
        if name not in cur["figures"]:
            rows.append({"figure": name, "unit": base["figures"][name].get("unit", ""), "value": None,
                         "baseline": base["figures"][name]["value"], "ratio": None, "peer_ratio": None,
                         "verdict": "missing from this run"})
    return rows, regressed


def _fmt(x, nd=3):
    return "–" if x is None else f"{x:.{nd}f}"


def print_report(cur: dict, base: dict, base_path: str, rows: list[dict], tol: float, out=sys.stdout) -> None:
    print(f"\ncompare: {cur['bench']} on {cur['machine_class']} (rev {cur.get('git_rev', '?')}) against "
          f"{base_path} (rev {base.get('git_rev', '?')}, {base.get('created', '?')})", file=out)
    if "load_avg_1m" in cur or "load_avg_1m" in base:
        print(f"load average (1 min) at the end: now {cur.get('load_avg_1m', '?')}, baseline {base.get('load_avg_1m', '?')}",
              file=out)
        try:
            cpus = int(str(cur.get("machine_class", "")).split("cpu-")[0])
        except ValueError:
            cpus = 0
        busy = [w for w, d in (("this run", cur), ("the baseline", base)) if cpus and d.get("load_avg_1m", 0) > cpus]
        if busy:
            print(f"WARNING: the machine was busy during {' and '.join(busy)} (load above its {cpus} CPUs): latency "
                  f"ratios are unreliable (measured: the same build's p50 varied 2x at load 16-24); rerun on a quiet "
                  f"machine before acting on a regression", file=out)
    print(f"tolerance: {tol:.0%} of the ratio (lower-is-better regresses above {1 + tol:.2f}, "
          f"higher-is-better below {1 / (1 + tol):.2f}); the peer ratio decides where there is one", file=out)
    bp, cp = base.get("params", {}), cur.get("params", {})
    differ = sorted(k for k in set(bp) | set(cp) if k != "mcpctl" and bp.get(k) != cp.get(k))
    if differ:
        print("note: run parameters differ from the baseline's (ratios may mean little): "
              + ", ".join(f"{k} {bp.get(k)!r} -> {cp.get(k)!r}" for k in differ), file=out)
    w = max([len(r["figure"]) for r in rows] + [6])
    hdr = f"{'figure':<{w}} {'now':>10} {'baseline':>10} {'now/base':>9} {'vs peer':>9}  verdict"
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in rows:
        print(f"{r['figure']:<{w}} {_fmt(r['value']):>10} {_fmt(r['baseline']):>10} {_fmt(r['ratio'], 2):>9} "
              f"{_fmt(r['peer_ratio'], 2):>9}  {r['verdict']}", file=out)


def cmd_compare(a) -> int:
    cur = load(a.current)
    base_path = a.baseline or baseline_path(cur["bench"], cur.get("machine_class"))
    base = load(base_path)
    if base.get("bench") != cur.get("bench"):
        raise InputError(f"{base_path} is a baseline of bench {base.get('bench')!r}, this run is {cur.get('bench')!r}")
    if base.get("machine_class") != cur.get("machine_class") and not a.any_class:
        raise InputError(f"{base_path} was measured on {base.get('machine_class')}, this run on "
                         f"{cur.get('machine_class')}: figures of different machine classes are not comparable "
                         f"(make a baseline for this class, see benches/README.md, or pass --any-class)")
    if not (0 < a.tolerance < 10):
        raise InputError(f"--tolerance {a.tolerance}: give a fraction such as 0.25")
    rows, regressed = compare(cur, base, a.tolerance)
    print_report(cur, base, base_path, rows, a.tolerance)
    if regressed:
        bad = ", ".join(r["figure"] for r in rows if r["verdict"] == "REGRESSION")
        print(f"\nregression beyond {a.tolerance:.0%}: {bad}", file=sys.stderr)
        return 1
    print("\nno regression", file=sys.stderr)
    return 0


def cmd_record(a) -> int:
    figures = {}
    for spec in a.figure:
        try:
            head, value = spec.rsplit("=", 1)
            parts = head.split(":")
            name, unit, better = parts[0], parts[1], parts[2]
            floor = float(parts[3]) if len(parts) > 3 else 0.0
            figures[name] = fig(float(value), unit, better, floor)
        except (ValueError, IndexError):
            raise InputError(f"figure {spec!r}: write NAME:UNIT:lower|higher[:FLOOR]=VALUE")
    params = dict(p.split("=", 1) for p in a.param)
    peers = dict(p.split("=", 1) for p in a.peer)
    doc = result(a.bench, figures, peers, params)
    write(doc, a.out)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("class", help="print this machine's class")
    p = sub.add_parser("baseline-path", help="where the committed baseline of BENCH for this machine class is")
    p.add_argument("bench")
    p = sub.add_parser("record", help="write a result file from figures given as arguments")
    p.add_argument("--bench", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--param", action="append", default=[], help="KEY=VALUE (recorded, not compared)")
    p.add_argument("--peer", action="append", default=[], help="OURS=PEER figure names")
    p.add_argument("figure", nargs="+", help="NAME:UNIT:lower|higher[:FLOOR]=VALUE")
    p = sub.add_parser("compare", help="compare a result with a baseline")
    p.add_argument("current")
    p.add_argument("baseline", nargs="?", help="default: benches/baselines/<class>/<bench>.json")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--any-class", action="store_true", help="compare across machine classes anyway")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "class":
            print(machine_class())
            return 0
        if a.cmd == "baseline-path":
            print(baseline_path(a.bench))
            return 0
        if a.cmd == "record":
            return cmd_record(a)
        return cmd_compare(a)
    except InputError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
