"""Per-session routing and the shared-child rules (docs/contracts.md), through the official SDK."""

from __future__ import annotations

import json
import time

import anyio
import mcp.types as types
import pytest

from conftest import INIT, pid_alive, post_json, wait_until
from mcpclient import TRANSPORTS, connect, text_of

SESSIONS = 20
CALLS = 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_20_sessions_x_200_calls_every_reply_and_progress_reaches_its_own_session(bridge, transport):
    """All sessions reuse request ids 1..200 and the same progress tokens (the SDK uses the request
    id as token); the bridge must remap them so that each reply and each progress notification
    carries the text of the call that asked for it."""
    wrong: list[str] = []
    done = {"calls": 0, "progress": 0}

    async def one_session(n: int):
        session_nonce = f"s{n:02d}"
        async with connect(bridge.base, transport) as s:
            for i in range(1, CALLS + 1):
                want = f"{session_nonce}-{i}"
                seen: list[str] = []

                async def on_progress(progress, total, message, seen=seen):
                    seen.append(message)

                r = await s.call_tool("progress", {"text": want, "steps": 1}, progress_callback=on_progress)
                got = text_of(r)
                if got != f"{want}|{bridge.nonce}":
                    wrong.append(f"reply {got!r} for {want!r}")
                if seen != [f"{want}|{bridge.nonce}"]:
                    wrong.append(f"progress {seen!r} for {want!r}")
                done["calls"] += 1
                done["progress"] += len(seen)

    async def main():
        async with anyio.create_task_group() as tg:
            for n in range(SESSIONS):
                tg.start_soon(one_session, n)

    t0 = time.monotonic()
    anyio.run(main)
    elapsed = time.monotonic() - t0
    rss = next(line.split()[1] for line in open(f"/proc/{bridge.proc.pid}/status") if line.startswith("VmRSS"))
    print(f"{transport}: {SESSIONS * CALLS} calls in {elapsed:.1f}s ({SESSIONS * CALLS / elapsed:.0f} calls/s), bridge RSS {int(rss) // 1024} MB")
    assert wrong == [], f"{len(wrong)} misrouted, first: {wrong[:5]}"
    assert done == {"calls": SESSIONS * CALLS, "progress": SESSIONS * CALLS}
    assert len(bridge.spawned_pids()) == 1, "shared mode must not spawn per session"


def test_100_new_sessions_spawn_no_process_in_shared_mode(bridge):
    before = bridge.spawned_pids()
    assert len(before) == 1

    async def one(n: int):
        async with connect(bridge.base, TRANSPORTS[n % 2]) as s:
            r = await s.call_tool("whoami", {})
            assert text_of(r) == f"{before[0]}|{bridge.nonce}"

    async def main():
        async with anyio.create_task_group() as tg:
            for n in range(100):
                tg.start_soon(one, n)

    anyio.run(main)
    assert bridge.spawned_pids() == before

    async def counters():
        async with connect(bridge.base, "sse") as s:
            return json.loads(text_of(await s.call_tool("counters", {})))

    # Every SDK session listed tools (after its first call); the child saw one initialize and
    # one tools/list: sessions are answered from the handshake and the cache.
    assert anyio.run(counters) == {"initialize": 1, "tools_list": 1}


def test_child_is_initialized_once_without_client_capabilities(bridge):
    async def roots(_ctx):
        return types.ListRootsResult(roots=[])

    async def main():
        async with connect(bridge.base, "streamable", list_roots_callback=roots) as s:
            info = json.loads(text_of(await s.call_tool("client_info", {})))
            assert info["capabilities"] == {}
            assert info["clientInfo"]["name"] == "mcpctl-bridge"
            assert info["protocolVersion"] == "2025-11-25"

    anyio.run(main)


def test_initialize_is_answered_with_the_clients_version(bridge):
    for version in ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]:
        init = json.loads(json.dumps(INIT))
        init["params"]["protocolVersion"] = version
        r = post_json(bridge.base + "/mcp", init)
        assert r.status_code == 200
        assert r.json()["result"]["protocolVersion"] == version
        assert r.json()["result"]["serverInfo"]["name"] == "mcp-testserver"
        assert r.headers["mcp-session-id"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_to_client_requests_get_method_not_found_in_shared_mode(bridge, transport):
    asked = []

    async def roots(_ctx):
        asked.append(1)
        return types.ListRootsResult(roots=[])

    async def main():
        async with connect(bridge.base, transport, list_roots_callback=roots) as s:
            answer = json.loads(text_of(await s.call_tool("ask_roots", {})))
            assert answer["error"]["code"] == -32601, answer

    anyio.run(main)
    assert asked == [], "a shared child's request must not reach any client"


def test_per_session_mode_forwards_server_requests_and_gives_each_session_a_child(bridge_factory):
    b = bridge_factory("--session-model", "per_session")
    asked = []

    async def roots(_ctx):
        asked.append(1)
        return types.ListRootsResult(roots=[types.Root(uri="file:///tmp", name="tmp")])

    async def main():
        pids = set()
        for transport in TRANSPORTS:
            async with connect(b.base, transport, list_roots_callback=roots) as s:
                pids.add(text_of(await s.call_tool("whoami", {})).split("|")[0])
                answer = json.loads(text_of(await s.call_tool("ask_roots", {})))
                assert answer["result"]["roots"][0]["uri"] == "file:///tmp", answer
                info = json.loads(text_of(await s.call_tool("client_info", {})))
                assert info["capabilities"].get("roots") is not None, "per-session child sees the client's own initialize"
        assert len(pids) == 2

    anyio.run(main)
    assert asked == [1, 1]
    # A session whose child exits is closed: its next request is 404.
    from conftest import post_json as post
    sid = post(b.base + "/mcp", INIT).headers["mcp-session-id"]
    h = {"mcp-session-id": sid}
    crash = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "crash", "arguments": {}}}
    assert "exited" in post(b.base + "/mcp", crash, h, timeout=10).text
    wait_until(lambda: post(b.base + "/mcp", {"jsonrpc": "2.0", "id": 3, "method": "ping"}, h).status_code == 404, 10, "session closed with its child")
    # Each session's child is stopped when its session ends.
    pids = b.spawned_pids()
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "per-session children to exit")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_list_changed_reaches_every_session_and_refreshes_the_tools_cache(bridge, transport):
    async def main():
        got_b: list[str] = []

        async def on_msg(m):
            if isinstance(m, types.ServerNotification):
                got_b.append(m.root.method)

        async with connect(bridge.base, transport) as a, connect(bridge.base, transport, message_handler=on_msg) as b:
            names = {t.name for t in (await b.list_tools()).tools}
            assert "added" not in names
            await a.call_tool("notify_list_changed", {})
            with anyio.fail_after(10):
                while "notifications/tools/list_changed" not in got_b:
                    await anyio.sleep(0.02)
            names = {t.name for t in (await b.list_tools()).tools}
            assert "added" in names

    anyio.run(main)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_other_notifications_go_only_to_their_owner_and_set_level_is_per_session(bridge, transport):
    async def main():
        logs = {"a": [], "b": []}

        def cb(name):
            async def on_log(params):
                logs[name].append((params.level, params.data))
            return on_log

        async with connect(bridge.base, transport, logging_callback=cb("a")) as a, \
                connect(bridge.base, transport, logging_callback=cb("b")) as b:
            await a.call_tool("log", {"level": "info", "text": "for-a"})
            with anyio.fail_after(10):
                while not logs["a"]:
                    await anyio.sleep(0.02)
            await b.set_logging_level("error")
            await b.call_tool("log", {"level": "info", "text": "b-info"})
            await b.call_tool("log", {"level": "error", "text": "b-error"})
            with anyio.fail_after(10):
                while not logs["b"]:
                    await anyio.sleep(0.02)
            await a.call_tool("echo", {"text": "sync"})
            assert logs["a"] == [("info", f"for-a|{bridge.nonce}")]
            assert logs["b"] == [("error", f"b-error|{bridge.nonce}")]

    anyio.run(main)


@pytest.mark.parametrize("model", ["shared", "per_session"])
def test_a_real_sdk_server_works_behind_the_bridge(bridge_factory, model):
    import sys
    from pathlib import Path
    server = Path(__file__).with_name("fastmcp_server.py")
    b = bridge_factory("--session-model", model, command=[sys.executable, str(server), "fm-nonce"])

    async def main():
        for transport in TRANSPORTS:
            async with connect(b.base, transport) as s:
                names = {t.name for t in (await s.list_tools()).tools}
                assert {"echo", "count"} <= names
                assert text_of(await s.call_tool("echo", {"text": transport})) == f"{transport}|fm-nonce"
                seen = []

                async def on_progress(progress, total, message):
                    seen.append(progress)

                r = await s.call_tool("count", {"n": 3}, progress_callback=on_progress)
                assert text_of(r) == "counted 3|fm-nonce"
                assert seen == [1, 2, 3]

    anyio.run(main)
