"""The official MCP conformance suite (npm @modelcontextprotocol/conformance, pinned in
conformance/package-lock.json, run on the Node 22 that lock installs) against `mcpctl bridge`
wrapping a LEGACY stdio server written with the Python SDK 1.x (conformance/server.py, the suite's
fixture tools, resources and prompts). Three runs, each on a fresh bridge: the scenarios 2026-07-28
requires (stateless, modern clients), those 2025-11-25 requires (initialize + sessions), both
frozen requirement sets of the suite, and the suite's active server scenarios at the 2025-06-18
wire (`--spec-version`: the suite has no frozen set for that revision).

This is a figure, not a tuned test: the bridge knows nothing of the suite. What each run asserts:
the suite ran (every required scenario reported; a missing Node, a crash or an empty run fails),
every scenario listed in EXPECTED_PASS below passed, and at least MIN_CHECKS checks passed.
README.md (this directory) says why each other scenario fails. The figures (passed/total per
revision, scored scenarios only) are printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
NODE = os.environ.get("CONFORMANCE_NODE", "")
CLI = os.environ.get("CONFORMANCE_CLI", "")

# Scenarios the bridge in front of a legacy server is meant to pass (measured; see README.md for
# the ones left out and why). A regression in any of these fails the test.
EXPECTED_PASS = {
    "2026-07-28": {
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-error",
        "tools-call-with-progress",
        "server-sse-multiple-streams",
        "resources-list",
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "sep-2164-resource-not-found",
        "prompts-list",
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
        "dns-rebinding-protection",
        "caching",
        "input-required-result-unsupported-methods",
    },
    "2025-11-25": {
        "server-initialize",
        "logging-set-level",
        "ping",
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-with-logging",
        "tools-call-error",
        "tools-call-with-progress",
        "server-sse-multiple-streams",
        "resources-list",
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "resources-subscribe",
        "resources-unsubscribe",
        "prompts-list",
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
        "dns-rebinding-protection",
    },
    "2025-06-18": {
        "server-initialize",
        "server-session-lifecycle",
        "logging-set-level",
        "ping",
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-with-logging",
        "tools-call-error",
        "tools-call-with-progress",
        "resources-list",
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "resources-subscribe",
        "resources-unsubscribe",
        "prompts-list",
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
    },
}

# Revisions the suite has a frozen requirement set for (`--requirements`); others are run as the
# active suite filtered to that wire version (`--spec-version`).
FROZEN = {"2026-07-28", "2025-11-25"}

# Checks passed over the required scenarios (measured): a floor for the partly passing ones too
# (server-stateless passes 28 of its 30 checks at 2026-07-28).
MIN_CHECKS = {"2026-07-28": 97, "2025-11-25": 57, "2025-06-18": 54}

SUMMARY_LINE = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$")


def suite(*args: str, timeout: float) -> subprocess.CompletedProcess:
    if not (NODE and CLI):
        pytest.fail("CONFORMANCE_NODE / CONFORMANCE_CLI are not set: run the tier with scripts/bridge-tests "
                    "(scripts/bridge-envs conformance installs the suite)")
    for f in (NODE, CLI):
        if not os.path.isfile(f):
            pytest.fail(f"{f} is missing: the conformance install is incomplete; remove its directory in the cache "
                        "and rerun scripts/bridge-tests")
    env = dict(os.environ, NO_COLOR="1", FORCE_COLOR="0")
    return subprocess.run([NODE, CLI, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def selection(revision: str) -> list[str]:
    return ["--requirements", revision] if revision in FROZEN else ["--spec-version", revision]


def required(revision: str) -> list[str]:
    """The server scenarios `revision` requires (scored), as the suite lists them."""
    out = suite("list", "--server", *selection(revision), timeout=60)
    assert out.returncode == 0, f"conformance list failed ({out.returncode}): {out.stderr[-2000:]}"
    names, inside = [], False
    for line in out.stdout.splitlines():
        if line.startswith("Server scenarios"):
            inside = True
        elif inside and line.strip().startswith("- "):
            # `--spec-version` listings add the revisions in brackets: "- tools-list [2025-06-18,…]".
            names.append(line.strip()[2:].split(" [")[0].strip())
        elif inside and not line.strip():
            break
    assert names, f"no server scenarios listed for {revision}:\n{out.stdout[-2000:]}"
    return names


def run(bridge, revision: str) -> tuple[dict[str, tuple[int, int]], list[str], float, str]:
    """Run the suite's `revision` requirement set against the bridge: per scenario (checks passed,
    checks failed), the scored scenario names, the wall time, and the suite's output."""
    scored = required(revision)
    t0 = time.monotonic()
    out = suite("server", "--url", bridge.base + "/mcp", *selection(revision), timeout=600)
    elapsed = time.monotonic() - t0
    text = out.stdout + out.stderr
    results: dict[str, tuple[int, int]] = {}
    summary = text.split("=== SUMMARY ===", 1)
    assert len(summary) == 2, f"the suite did not finish (exit {out.returncode}):\n{text[-4000:]}"
    for line in summary[1].splitlines():
        m = SUMMARY_LINE.match(line.strip())
        if m:
            results[m.group(2)] = (int(m.group(3)), int(m.group(4)))
    missing = [s for s in scored if s not in results]
    assert not missing, f"required scenarios not reported: {missing}\n{text[-4000:]}"
    return results, scored, elapsed, text


def passed(r: tuple[int, int]) -> bool:
    return r[1] == 0 and r[0] > 0


@pytest.mark.parametrize("revision", ["2026-07-28", "2025-11-25", "2025-06-18"])
def test_official_conformance_suite_against_a_legacy_server_behind_the_bridge(bridge_factory, capsys, revision):
    b = bridge_factory(command=[sys.executable, str(HERE / "conformance" / "server.py")])
    results, scored, elapsed, text = run(b, revision)
    ok = sorted(s for s in scored if passed(results[s]))
    failing = sorted(s for s in scored if not passed(results[s]))
    checks_ok = sum(results[s][0] for s in scored)
    checks_total = sum(results[s][0] + results[s][1] for s in scored)
    extra = sorted(s for s in results if s not in scored)
    extra_ok = [s for s in extra if passed(results[s])]
    with capsys.disabled():
        kind = "required server scenarios" if revision in FROZEN else "active server scenarios at this wire"
        print(f"\nconformance {revision} ({kind}, legacy Python SDK 1.x server behind mcpctl bridge): "
              f"{len(ok)}/{len(scored)} scenarios passed ({checks_ok}/{checks_total} checks) in {elapsed:.0f}s"
              + (f"; not scored: {len(extra_ok)}/{len(extra)} passed" if extra else ""))
        print(f"  failing: {', '.join(failing) or 'none'}")
    assert b.proc.poll() is None, f"the bridge died during the suite:\n{b.log_text()[-3000:]}"
    regressed = sorted(EXPECTED_PASS[revision] - set(ok))
    assert not regressed, (f"{revision}: scenarios the bridge passed before now fail: {regressed}\n"
                           + "\n".join(line for line in text.splitlines() if "FAILURE" in line)[-6000:])
    assert checks_ok >= MIN_CHECKS[revision], f"{revision}: {checks_ok} checks passed, fewer than {MIN_CHECKS[revision]}"
    unknown = EXPECTED_PASS[revision] - set(scored)
    assert not unknown, f"EXPECTED_PASS names scenarios {revision} does not require: {sorted(unknown)}"
