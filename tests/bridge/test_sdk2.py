"""The official Python SDK 2.x client (`mcp.Client`, dual-era) against the bridge, beside the 1.x
client the rest of this tier uses. The 2.x client lives in its own venv (mcp2/requirements.txt;
scripts/bridge-envs makes it, MCP2_PYTHON names its python) and runs as a subprocess
(mcp2/client.py) that prints JSON. tests/bridge_modern.rs covers the wire rules with a hand-written
client; this file is about the real SDK clients of both eras."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import anyio
import httpx
import pytest

from mcpclient import connect, text_of

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "mcp2" / "client.py"
MCP2 = os.environ.get("MCP2_PYTHON", "")

CLIENTS = 20  # half modern (2.x), half legacy (1.x: five over Streamable HTTP, five over SSE)
CALLS = 200
MIXED_DEADLINE_S = 120


def mcp2_python() -> str:
    if not MCP2 or not os.path.isfile(MCP2):
        pytest.fail(f"MCP2_PYTHON ({MCP2 or 'unset'}) is not a python: run the tier with scripts/bridge-tests "
                    "(scripts/bridge-envs mcp2 makes the 2.x venv)")
    return MCP2


def mcp2(*args: str, timeout: float = 60) -> dict:
    out = subprocess.run([mcp2_python(), str(CLIENT), *args], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"mcp2/client.py {args[0]} failed ({out.returncode}):\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def metric(bridge, series: str) -> float:
    text = httpx.get(bridge.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


def child_counters(bridge) -> dict:
    async def go():
        async with connect(bridge.base, "streamable") as s:
            return json.loads(text_of(await s.call_tool("counters", {})))

    return anyio.run(go)


@pytest.mark.parametrize("mode", ["auto", "2026-07-28"])
def test_sdk2_client_discovers_lists_and_calls_without_initialize(bridge, mode):
    """mode="auto" (the SDK's default) probes `server/discover` and stays modern because the bridge
    answers it; a client pinned to 2026-07-28 skips the probe. Neither opens a session."""
    out = mcp2("probe", bridge.base + "/mcp", "--mode", mode)
    assert out["protocol_version"] == "2026-07-28", out
    assert out["initialized"] is False, "a modern client must not fall back to initialize"
    assert "echo" in out["tools"] and "counters" in out["tools"], out
    assert out["reply"] == f"hello 2.x|{bridge.nonce}" and not out["is_error"], out
    # auto: discover + tools/list + tools/call; pinned: no discover.
    want = 3 if mode == "auto" else 2
    if mode == "auto":
        assert out["server_name"] == "mcp-testserver", out
        assert out["instructions"] == f"test server nonce={bridge.nonce}", out
    assert metric(bridge, 'mcp_bridge_era_requests_total{era="modern"}') == want
    assert metric(bridge, 'mcp_bridge_era_requests_total{era="legacy"}') == 0
    assert metric(bridge, "mcp_bridge_modern_in_flight") == 0
    # The child saw the bridge's own initialize only (a 1.x session now asks it: one more session,
    # still one initialize at the child).
    assert child_counters(bridge)["initialize"] == 1
    assert len(bridge.spawned_pids()) == 1


def test_mixed_eras_concurrently_on_one_warm_child_every_reply_is_the_callers_own(bridge, capsys):
    """20 clients x 200 calls at once on one bridge and one child: ten 2.x clients (mode="auto",
    stateless) in one process, ten 1.x clients (five Streamable HTTP sessions, five SSE sessions)
    in this one. Every call sends its own token; a reply carrying anything else is wrong."""
    modern = subprocess.Popen(
        [mcp2_python(), str(CLIENT), "load", bridge.base + "/mcp", "--mode", "auto", "--clients", str(CLIENTS // 2),
         "--calls", str(CALLS), "--prefix", "modern", "--nonce", bridge.nonce],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    legacy_wrong: list[str] = []
    legacy_calls = {"n": 0}
    t = {}

    async def legacy_client(n: int, go: anyio.Event, connected: list):
        transport = "streamable" if n % 2 == 0 else "sse"
        async with connect(bridge.base, transport) as s:
            connected.append(n)
            await go.wait()
            for i in range(CALLS):
                token = f"legacy{n}-{i}"
                got = text_of(await s.call_tool("echo", {"text": token}))
                if got != f"{token}|{bridge.nonce}":
                    legacy_wrong.append(f"{token!r} got {got!r}")
                legacy_calls["n"] += 1

    async def main():
        go = anyio.Event()
        connected: list = []
        with anyio.fail_after(MIXED_DEADLINE_S):
            async with anyio.create_task_group() as tg:
                for n in range(CLIENTS // 2):
                    tg.start_soon(legacy_client, n, go, connected)
                line = await anyio.to_thread.run_sync(modern.stdout.readline)
                assert line.strip() == "ready", f"the 2.x clients did not connect: {line!r} {modern.stderr.read()[-3000:]}"
                while len(connected) < CLIENTS // 2:
                    await anyio.sleep(0.01)
                t["t0"] = time.monotonic()
                modern.stdin.write("go\n")
                modern.stdin.flush()
                go.set()
            t["legacy_done"] = time.monotonic()

    try:
        anyio.run(main)
        out, err = modern.communicate(timeout=MIXED_DEADLINE_S)
    finally:
        if modern.poll() is None:
            modern.kill()
            modern.wait(10)
    elapsed = time.monotonic() - t["t0"]
    assert modern.returncode == 0, f"the 2.x load client failed:\n{err[-3000:]}"
    m = json.loads(out.strip().splitlines()[-1])
    wrong = m["wrong"] + len(legacy_wrong)
    with capsys.disabled():
        print(f"\nmixed eras on one warm child: {CLIENTS} clients x {CALLS} calls (10 modern 2.x + 10 legacy 1.x), "
              f"{m['calls'] + legacy_calls['n']} calls in {elapsed:.1f}s, {wrong} wrong replies "
              f"(modern part {m['elapsed']:.1f}s, legacy part {t['legacy_done'] - t['t0']:.1f}s)")
    assert m["errors"] == [], m["errors"][:3]
    assert wrong == 0, f"wrong replies: modern {m['wrong_first']}, legacy {legacy_wrong[:5]}"
    assert m["calls"] == CLIENTS // 2 * CALLS and legacy_calls["n"] == CLIENTS // 2 * CALLS
    assert elapsed < MIXED_DEADLINE_S
    assert len(bridge.spawned_pids()) == 1, "one warm child serves both eras"
    assert child_counters(bridge)["initialize"] == 1, "the child was initialized once, by the bridge"
    assert metric(bridge, 'mcp_bridge_era_requests_total{era="modern"}') >= CLIENTS // 2 * CALLS
