"""Supervision and readiness: crashes, unstartable commands, crash loops, hung children,
graceful shutdown, and the healthcheck command."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import anyio
import pytest
from mcp.shared.exceptions import McpError

from conftest import MCPCTL, TESTSERVER, post_json, INIT, pid_alive, wait_until
from mcpclient import connect, text_of


def test_child_crash_fails_every_waiting_caller_fast_then_restarts(bridge):
    first = bridge.spawned_pids()
    errors: list[tuple[float, str]] = []
    t_crash = {}
    survivor = {}

    async def survive():
        # A session opened before the crash keeps working with the restarted child.
        async with connect(bridge.base, "streamable") as s:
            await s.call_tool("echo", {"text": "before"})
            with anyio.fail_after(15):
                while "crashed" not in survivor:
                    await anyio.sleep(0.02)
                while True:
                    try:
                        survivor["text"] = text_of(await s.call_tool("echo", {"text": "after"}))
                        return
                    except McpError:
                        await anyio.sleep(0.05)

    async def waiter():
        async with connect(bridge.base, "streamable") as s:
            try:
                await s.call_tool("slow_echo", {"text": "x", "delay_ms": 60_000})
            except McpError as e:
                errors.append((time.monotonic() - t_crash["t"], e.error.message))

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(survive)
            for _ in range(4):
                tg.start_soon(waiter)
            with anyio.fail_after(10):
                while bridge.readyz()[1]["pending"] < 4:
                    await anyio.sleep(0.02)
            async with connect(bridge.base, "sse") as s:
                t_crash["t"] = time.monotonic()
                with pytest.raises(McpError, match="exited"):
                    await s.call_tool("crash", {})
                with anyio.fail_after(10):
                    while len(errors) < 4:
                        await anyio.sleep(0.01)
                survivor["crashed"] = True

    anyio.run(main)
    assert len(errors) == 4
    worst = max(t for t, _ in errors)
    print(f"crash → error to all 4 waiting callers within {worst * 1000:.0f} ms")
    assert worst < 5, "target 1 s, deadline 5x"
    assert all("exited" in m for _, m in errors), errors
    assert survivor["text"] == f"after|{bridge.nonce}"
    bridge.wait_ready(10)
    assert bridge.readyz()[1]["restarts"] >= 1
    assert len(bridge.spawned_pids()) == len(first) + 1

    async def after():
        async with connect(bridge.base, "sse") as s:
            return text_of(await s.call_tool("echo", {"text": "back"}))

    assert anyio.run(after) == f"back|{bridge.nonce}"


@pytest.mark.parametrize("model", ["shared", "per_session"])
def test_unstartable_command_fails_readiness_fast(bridge_factory, model):
    b = bridge_factory("--session-model", model, command=["/nonexistent/mcp-server"], ready=False)
    t0 = time.monotonic()
    status, body = wait_until(lambda: (lambda r: r if r[0] == 503 and "cannot start" in r[1]["reason"] else None)(b.readyz()), 5, "503 naming the cause")
    print(f"unstartable command → /readyz 503 in {(time.monotonic() - t0) * 1000:.0f} ms")
    r = post_json(b.base + "/mcp", INIT)
    assert "error" in r.json()
    hc = subprocess.run([MCPCTL, "bridge", "healthcheck", "--port", str(b.port)], capture_output=True, timeout=10)
    assert hc.returncode == 1


def test_crash_loop_opens_the_circuit_breaker(bridge_factory):
    b = bridge_factory(server_args=["--crash-at-start"], ready=False)
    wait_until(lambda: "circuit breaker open" in b.readyz()[1]["reason"], 20, "breaker to open")
    assert b.readyz()[0] == 503
    n = len(b.spawned_pids())
    assert n >= 5
    # While open, no further restarts are attempted and callers get an error at once.
    t0 = time.monotonic()
    assert "circuit breaker" in post_json(b.base + "/mcp", INIT).json()["error"]["message"]
    assert time.monotonic() - t0 < 2
    assert len(b.spawned_pids()) == n


def test_stopped_child_is_detected_by_readiness_and_recovers(bridge_factory):
    b = bridge_factory("--ready-stale", "1")
    pid = b.spawned_pids()[0]

    async def stop():
        async with connect(b.base, "sse") as s:
            await s.call_tool("stop", {})

    anyio.run(stop)
    wait_until(lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T", 10, "child stopped")
    _, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(b.readyz()), 10, "readiness to fail for a stopped child")
    assert "ping" in body["reason"], body
    os.kill(pid, signal.SIGCONT)
    b.wait_ready(10)


def test_request_waiting_longer_than_hung_after_fails_readiness(bridge_factory):
    b = bridge_factory("--hung-after", "2")

    async def hang():
        async with connect(b.base, "streamable") as s:
            with anyio.move_on_after(60):
                try:
                    await s.call_tool("hang", {})
                except McpError:
                    pass  # the fixture's SIGTERM answers it with "shutting down"

    t = threading.Thread(target=lambda: anyio.run(hang), daemon=True)
    t.start()
    # Generous bounds: on a loaded 2-core machine the SDK client alone can take seconds to start.
    wait_until(lambda: b.readyz()[1]["pending"] == 1, 30, "hanging call pending")
    _, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(b.readyz()), 20, "hung-after rule to fail readiness")
    assert "hung" in body["reason"], body


def test_sigterm_drains_in_flight_kills_the_process_group_and_exits(bridge_factory, tmp_path):
    grandchild = tmp_path / "grandchild.pid"
    spawn_log = tmp_path / "spawn.log"
    cmd = ["sh", "-c", f'sleep 300 & echo $! > {grandchild}; exec "$0" "$@"', TESTSERVER, "--nonce", "N", "--spawn-log", str(spawn_log)]
    b = bridge_factory("--drain-timeout", "10", command=cmd)
    child = int(spawn_log.read_text().split()[0])
    sleeper = int(wait_until(lambda: grandchild.exists() and grandchild.read_text().strip(), 5, "grandchild pid"))
    result = {}

    async def slow():
        async with connect(b.base, "streamable") as s:
            await s.list_tools()  # the SDK lists tools after a first call; new requests are refused while draining
            result["text"] = text_of(await s.call_tool("slow_echo", {"text": "drained", "delay_ms": 1500}))

    t = threading.Thread(target=lambda: anyio.run(slow), daemon=True)
    t.start()
    wait_until(lambda: b.readyz()[1]["pending"] == 1, 10, "call in flight")
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(25)
    took = time.monotonic() - t0
    print(f"SIGTERM → exit in {took * 1000:.0f} ms with a 1.5 s call in flight")
    t.join(10)
    assert result.get("text") == "drained|N", "the in-flight call must complete during the drain"
    assert b.proc.returncode == 0
    assert not pid_alive(child) and not pid_alive(sleeper), "no orphans"
    assert took < 25


def test_healthcheck_command(bridge):
    ok = subprocess.run([MCPCTL, "bridge", "healthcheck", "--port", str(bridge.port)], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    ok = subprocess.run([MCPCTL, "bridge", "healthcheck", "--mcp", "--port", str(bridge.port)], capture_output=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    assert bridge.readyz()[1]["sessions"] == 0, "healthcheck ends its session"
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    bad = subprocess.run([MCPCTL, "bridge", "healthcheck", "--port", str(closed_port)], capture_output=True, timeout=10)
    assert bad.returncode == 1


def test_healthz_and_metrics(bridge):
    import httpx
    assert httpx.get(bridge.base + "/healthz").status_code == 200
    m = httpx.get(bridge.base + "/metrics").text
    assert "mcp_bridge_ready 1" in m
    assert 'mcp_bridge_sessions_closed_total{transport="sse",reason="idle_expired"} 0' in m


def test_sigterm_with_a_stopped_child_answers_abandoned_calls_and_exits_after_the_drain_timeout(bridge_factory):
    b = bridge_factory("--drain-timeout", "1")
    child = b.spawned_pids()[0]
    outcome = {}

    async def hang():
        async with connect(b.base, "sse") as s:
            try:
                await s.call_tool("hang", {})
            except McpError as e:
                outcome["error"] = e.error.message

    t = threading.Thread(target=lambda: anyio.run(hang), daemon=True)
    t.start()
    wait_until(lambda: b.readyz()[1]["pending"] == 1, 10, "call in flight")
    os.kill(child, signal.SIGSTOP)
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    b.proc.wait(25)
    took = time.monotonic() - t0
    print(f"SIGTERM with a stopped child and a call in flight (drain 1 s) → exit in {took * 1000:.0f} ms")
    t.join(10)
    assert "shutting down" in outcome.get("error", ""), outcome
    assert not pid_alive(child)
    assert took < 10


def test_child_that_never_answers_initialize_is_not_ready_and_is_restarted(bridge_factory):
    b = bridge_factory("--init-timeout", "1", server_args=["--hang-at-start"], ready=False)
    assert b.readyz()[0] == 503
    wait_until(lambda: "did not answer initialize" in b.readyz()[1]["reason"], 10, "handshake timeout reported")
    wait_until(lambda: len(b.spawned_pids()) >= 2, 10, "a restart after the handshake timeout")
    assert b.readyz()[0] == 503


def test_testserver_revision_flags_for_rollout_tests(bridge_factory):
    """The deploy tests use these to build broken revisions: a missing tool, a failing smoke call."""
    missing = bridge_factory(server_args=["--omit-tool", "echo"])
    failing = bridge_factory(server_args=["--fail-tool", "echo"])

    async def main():
        async with connect(missing.base, "streamable") as s:
            assert "echo" not in {t.name for t in (await s.list_tools()).tools}
        async with connect(failing.base, "streamable") as s:
            r = await s.call_tool("echo", {"text": "smoke"})
            assert r.isError and text_of(r) == f"smoke|{failing.nonce}"

    anyio.run(main)
