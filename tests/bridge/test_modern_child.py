"""A MODERN stdio child (MCP 2026-07-28 only: the Python SDK 2.x `MCPServer`, mcp2/modern_server.py,
behind picky_server.py's `modern-only` wrapper, which refuses `initialize`) behind the bridge: the
era probe (a sibling process asked `server/discover`, a second one asked `initialize`) finds it
modern, modern clients are served natively (the child's own answers, `input_required` round trips,
listen subscriptions), legacy clients are refused with −32022. The same server WITHOUT the wrapper
is dual-era (its `server/discover` names only 2026-07-28, yet it answers `initialize`: so does
mcp-server-fetch in the default stack) and is served legacy, so clients of both eras work. And the
other side of the probe: legacy children stay legacy under the default `auto` (an answering one, a
silent one, one that exits on an unknown first message), and no probe sibling outlives its probe.

The era flags are set through their environment variables (MCPCTL_BRIDGE_CHILD_ERA,
MCPCTL_BRIDGE_ERA_PROBE_TIMEOUT for `--child-era` / `--era-probe-timeout`): the fixtures pass env."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import TESTSERVER, post_json, wait_until
from mcpclient import connect, text_of

HERE = Path(__file__).resolve().parent
SERVER = HERE / "mcp2" / "modern_server.py"
CLIENT = HERE / "mcp2" / "client.py"
MODERN_CLIENT = HERE / "mcp2" / "modern_child_client.py"
PICKY = HERE / "picky_server.py"
MCP2 = os.environ.get("MCP2_PYTHON", "")
V = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": V, "io.modelcontextprotocol/clientCapabilities": {}}
# The 2.x server takes ~4 s to import on a busy 2-core machine: a generous probe timeout keeps the
# verdict about the server, not about the machine's load.
SLOW_START = {"MCPCTL_BRIDGE_ERA_PROBE_TIMEOUT": "30"}


def mcp2_python() -> str:
    if not MCP2 or not os.path.isfile(MCP2):
        pytest.fail(f"MCP2_PYTHON ({MCP2 or 'unset'}) is not a python: run the tier with scripts/bridge-tests "
                    "(scripts/bridge-envs mcp2 makes the 2.x venv)")
    return MCP2


def metric(b, series: str) -> float:
    text = httpx.get(b.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in /metrics")


def era_line(b) -> str:
    lines = [l for l in b.log_text().splitlines() if "child era decided" in l]
    assert len(lines) == 1, lines
    return lines[0]


def probe_took_ms(b) -> int:
    return int(re.search(r'took_ms[=":]+(\d+)', era_line(b)).group(1))


def gone(pid: int) -> bool:
    """Exited and reaped: not even a zombie is left."""
    return not os.path.exists(f"/proc/{pid}")


def dead(pid: int) -> bool:
    """Exited, perhaps a zombie: a sibling's own child (the server behind the wrapper) is
    reparented when the sibling's process group is killed, and only its new parent can reap it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def modern(b, method: str, params: dict | None = None, id=1, name: str | None = None, caps: dict | None = None,
           headers: dict | None = None) -> httpx.Response:
    params = dict(params or {})
    params["_meta"] = dict(META, **({"io.modelcontextprotocol/clientCapabilities": caps} if caps else {}))
    h = {"mcp-protocol-version": V, "mcp-method": method, "accept": "application/json"}
    if name:
        h["mcp-name"] = name
    h.update(headers or {})
    return post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": id, "method": method, "params": params}, h, timeout=30)


def start_modern(bridge_factory, tmp_path, env: dict | None = None, only: bool = True):
    """The 2.x server as a modern-only child (`only`: behind the wrapper) or as it is (dual-era)."""
    nonce = uuid.uuid4().hex[:12]
    log = tmp_path / f"modern-spawns-{nonce}.log"
    server = [mcp2_python(), str(SERVER), "--nonce", nonce, "--spawn-log", str(log)]
    wrapper = [sys.executable, str(PICKY), "modern-only", "--"] if only else []
    b = bridge_factory(command=[*wrapper, *server], env={**SLOW_START, **(env or {})}, ready=False)
    b.spawn_log, b.nonce = log, nonce  # so that stop() kills what the server command started
    b.wait_ready(60)
    return b


@pytest.fixture
def modern_bridge(bridge_factory, tmp_path):
    return start_modern(bridge_factory, tmp_path)


def test_a_modern_child_is_detected_by_a_sibling_that_is_gone_afterwards(modern_bridge, capsys):
    b = modern_bridge
    line = era_line(b)
    assert 'era="modern"' in line or '"era":"modern"' in line, line
    assert "2026-07-28" in line, line
    assert metric(b, 'mcp_bridge_child_era{era="modern"}') == 1
    assert metric(b, 'mcp_bridge_child_era{era="legacy"}') == 0
    assert b.readyz()[1]["child_era"] == "modern"
    assert "initialize refused (error -32022)" in line, line
    # Two siblings (discover, then initialize), one after the other, both gone. The spawn log is
    # the wrapped server's: the first sibling's and the child's, and the second sibling's only if
    # the server got to start before the wrapper's refusal ended it; only the child is left.
    probes = b.probe_pids()
    assert len(probes) == 2 and all(gone(p) for p in probes), probes
    spawned = b.all_spawned_pids()
    assert len(spawned) in (2, 3) and [dead(p) for p in spawned] == [True] * (len(spawned) - 1) + [False], spawned
    assert metric(b, "mcp_bridge_child_processes") == 1
    with capsys.disabled():
        print(f"\nera probe of a modern-only child (Python SDK 2.x behind the wrapper): {probe_took_ms(b)} ms")


def test_a_dual_era_child_is_served_legacy_so_clients_of_both_eras_work(bridge_factory, tmp_path, capsys):
    b = start_modern(bridge_factory, tmp_path, only=False)
    line = era_line(b)
    assert ('era="legacy"' in line or '"era":"legacy"' in line) and "dual-era" in line, line
    assert metric(b, 'mcp_bridge_child_era{era="legacy"}') == 1
    probes = b.probe_pids()
    assert len(probes) == 2 and all(gone(p) for p in probes), probes
    spawned = b.all_spawned_pids()
    assert len(spawned) == 3 and [gone(p) for p in spawned] == [True, True, False], spawned

    # A legacy 1.x client over Streamable HTTP and over SSE.
    async def legacy(transport: str):
        async with connect(b.base, transport) as s:
            return text_of(await s.call_tool("echo", {"text": "hi"}))

    for transport in ("streamable", "sse"):
        assert anyio.run(legacy, transport) == f"hi|{b.nonce}", transport
    # The SDK 2.x client, auto and pinned: served 2026-07-28 (translated onto the legacy child).
    for mode in ("auto", V):
        out = subprocess.run([mcp2_python(), str(CLIENT), "probe", b.base + "/mcp", "--mode", mode],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["protocol_version"] == V and not got["initialized"], (mode, got)
        assert got["reply"] == f"hello 2.x|{b.nonce}" and not got["is_error"], (mode, got)
    assert metric(b, 'mcp_bridge_era_refused_total{reason="initialize"}') == 0
    with capsys.disabled():
        print(f"\nera probe of a dual-era child (Python SDK 2.x, as mcp-server-fetch): {probe_took_ms(b)} ms")


def test_a_modern_client_is_served_natively(modern_bridge):
    b = modern_bridge
    # The SDK 2.x client in its default auto mode: discover (the child's own answer), list, call.
    out = subprocess.run([mcp2_python(), str(CLIENT), "probe", b.base + "/mcp", "--mode", "auto"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["protocol_version"] == V and got["discovered"] and not got["initialized"], got
    assert got["server_name"] == "modern-testserver", got
    assert got["instructions"] == f"modern test server nonce={b.nonce}", got
    assert {"echo", "greet", "add_tool"} <= set(got["tools"]), got
    assert got["reply"] == f"hello 2.x|{b.nonce}" and not got["is_error"], got
    # Raw: the child's discover result as it wrote it (a translating bridge would stamp
    # ttlMs 60000 / cacheScope public and list the legacy versions too).
    r = modern(b, "server/discover")
    assert r.status_code == 200, r.text
    d = r.json()["result"]
    assert d["supportedVersions"] == [V], d
    assert (d["ttlMs"], d["cacheScope"]) == (0, "private"), d
    # A call: the client's id back, the child's result untouched.
    r = modern(b, "tools/call", {"name": "echo", "arguments": {"text": "raw"}}, id="x-1", name="echo")
    assert r.status_code == 200 and r.json()["id"] == "x-1", r.text
    assert r.json()["result"]["structuredContent"] == {"result": f"raw|{b.nonce}"}, r.text
    # The bridge's own checks still run first: a header that disagrees with the body.
    r = modern(b, "tools/call", {"name": "echo", "arguments": {"text": "x"}}, name="other")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020, r.text
    # A version the child does not speak: −32022 naming the child's versions.
    r = post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2099-01-01", "io.modelcontextprotocol/clientCapabilities": {}}}},
        {"mcp-protocol-version": "2099-01-01", "mcp-method": "tools/list"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == -32022 and r.json()["error"]["data"]["supported"] == [V], r.text
    assert metric(b, 'mcp_bridge_era_requests_total{era="legacy"}') == 0


def test_input_required_passes_through_and_the_retry_completes(modern_bridge):
    b = modern_bridge
    caps = {"elicitation": {"form": {}}}
    r = modern(b, "tools/call", {"name": "greet", "arguments": {}}, id=7, name="greet", caps=caps)
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["resultType"] == "input_required", res
    (key, req), = res["inputRequests"].items()
    assert req["method"] == "elicitation/create", req
    # The client's retry: the same request with the answers and the state, as a new request.
    r = modern(b, "tools/call", {"name": "greet", "arguments": {}, "requestState": res["requestState"],
                                 "inputResponses": {key: {"action": "accept", "content": {"name": "Ada"}}}},
               id=8, name="greet", caps=caps)
    assert r.status_code == 200, r.text
    done = r.json()["result"]
    assert done["resultType"] == "complete" and done["structuredContent"] == {"result": f"hello Ada|{b.nonce}"}, done
    # The SDK 2.x client does the same round trip by itself.
    out = subprocess.run([mcp2_python(), str(MODERN_CLIENT), "greet", b.base + "/mcp", "--name", "Grace"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"asked": ["What is your name?"], "reply": f"hello Grace|{b.nonce}", "is_error": False}, got


def test_listen_notifications_reach_their_own_subscription(modern_bridge):
    """Two listeners that chose the same id: each gets its acknowledgement and the child's
    list_changed tagged with its own id; closing the streams ends them at the bridge."""
    b = modern_bridge
    frames: dict[int, list] = {0: [], 1: []}

    def listen(n: int, stop: list):
        body = {"jsonrpc": "2.0", "id": "sub", "method": "subscriptions/listen",
                "params": {"notifications": {"toolsListChanged": True}, "_meta": META}}
        h = {"accept": "application/json, text/event-stream", "content-type": "application/json",
             "mcp-protocol-version": V, "mcp-method": "subscriptions/listen"}
        with httpx.stream("POST", b.base + "/mcp", content=json.dumps(body), headers=h, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    frames[n].append(json.loads(line[6:]))
                if stop:
                    return

    import threading
    stop: list = []
    threads = [threading.Thread(target=listen, args=(n, stop), daemon=True) for n in (0, 1)]
    for t in threads:
        t.start()
    wait_until(lambda: all(frames[n] for n in (0, 1)), 30, "both acknowledgements")
    for n in (0, 1):
        ack = frames[n][0]
        assert ack["method"] == "notifications/subscriptions/acknowledged", ack
        assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub", ack
    assert metric(b, "mcp_bridge_modern_listeners") == 2
    r = modern(b, "tools/call", {"name": "add_tool", "arguments": {"name": "late"}}, name="add_tool")
    assert r.status_code == 200 and "error" not in r.json(), r.text
    wait_until(lambda: all(len(frames[n]) >= 2 for n in (0, 1)), 30, "list_changed on both streams")
    for n in (0, 1):
        note = frames[n][1]
        assert note["method"] == "notifications/tools/list_changed", note
        assert note["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub", note
    # The new tool is listed (the child's fresh answer, not a stale cache).
    tools = {t["name"] for t in modern(b, "tools/list").json()["result"]["tools"]}
    assert "late" in tools, tools
    stop.append(True)
    # Wake the readers with one more event, then the streams close and the bridge forgets them.
    modern(b, "tools/call", {"name": "add_tool", "arguments": {"name": "later"}}, name="add_tool")
    for t in threads:
        t.join(30)
    wait_until(lambda: metric(b, "mcp_bridge_modern_listeners") == 0, 30, "listeners gone after the clients closed")


def test_legacy_clients_are_refused_with_the_supported_versions(modern_bridge):
    b = modern_bridge
    r = post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "old", "version": "0"}}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == -32022 and err["data"]["supported"] == [V], err
    assert "2026-07-28 client" in err["message"], err
    r = httpx.get(b.base + "/sse", timeout=10)
    assert r.status_code == 400 and "only MCP 2026-07-28" in r.text and "POST /mcp" in r.text, r.text

    async def legacy_1x():
        async with connect(b.base, "streamable"):
            pass

    # The 1.x client fails at its first request (it reports the 400, not the body: the reason is
    # for clients that read it, and for the operator in the metrics).
    with pytest.raises(BaseException) as e:
        anyio.run(legacy_1x)
    assert "400" in repr(e.value), repr(e.value)
    assert metric(b, 'mcp_bridge_era_refused_total{reason="initialize"}') == 2
    assert metric(b, 'mcp_bridge_era_refused_total{reason="sse"}') == 1
    assert metric(b, "mcp_bridge_sessions_active{transport=\"streamable_http\"}") == 0


def test_child_era_modern_skips_the_probe(bridge_factory, tmp_path):
    b = start_modern(bridge_factory, tmp_path, env={"MCPCTL_BRIDGE_CHILD_ERA": "modern"})
    assert "child era decided" not in b.log_text()
    assert b.all_spawned_pids() == b.spawned_pids() and len(b.spawned_pids()) == 1
    assert metric(b, 'mcp_bridge_child_era{era="modern"}') == 1
    assert modern(b, "tools/list").json()["result"]["tools"], "served"


# ---- legacy children under the default `auto` ----

def echo_ok(b) -> str:
    async def go():
        async with connect(b.base, "streamable") as s:
            return text_of(await s.call_tool("echo", {"text": "hi"}))

    return anyio.run(go)


def test_a_legacy_child_stays_legacy_and_its_probe_sibling_is_gone(bridge, capsys):
    line = era_line(bridge)
    assert ('era="legacy"' in line or '"era":"legacy"' in line) and "-32601" in line, line
    assert metric(bridge, 'mcp_bridge_child_era{era="legacy"}') == 1
    assert metric(bridge, 'mcp_bridge_child_era{era="modern"}') == 0
    assert bridge.readyz()[1]["child_era"] == "legacy"
    probes = bridge.probe_pids()
    assert len(probes) == 1 and gone(probes[0]), probes
    # The sibling ran the server command too (it wrote its pid in the spawn log).
    assert probes[0] in bridge.all_spawned_pids(), (probes, bridge.all_spawned_pids(), line)
    assert len(bridge.spawned_pids()) == 1
    assert echo_ok(bridge) == f"hi|{bridge.nonce}"
    assert metric(bridge, "mcp_bridge_child_processes") == 1, "the sibling is not counted as a child"
    with capsys.disabled():
        print(f"\nera probe of a legacy child (mcp-testserver, answers -32601): {probe_took_ms(bridge)} ms")


def picky(bridge_factory, mode: str, env: dict):
    nonce = uuid.uuid4().hex[:12]
    b = bridge_factory(command=[sys.executable, str(PICKY), mode, "--", TESTSERVER, "--nonce", nonce],
                       env=env, ready=False)
    b.nonce = nonce
    return b


def test_a_silent_child_is_legacy_after_the_probe_timeout(bridge_factory, capsys):
    t0 = time.monotonic()
    b = picky(bridge_factory, "ignore", {"MCPCTL_BRIDGE_ERA_PROBE_TIMEOUT": "0.5"})
    b.wait_ready(20)
    ready_s = time.monotonic() - t0
    line = era_line(b)
    assert ('era="legacy"' in line or '"era":"legacy"' in line) and "no answer within 500ms" in line, line
    assert probe_took_ms(b) >= 500
    assert gone(b.probe_pids()[0])
    assert echo_ok(b) == f"hi|{b.nonce}"
    with capsys.disabled():
        print(f"\nsilent child, --era-probe-timeout 0.5: probe {probe_took_ms(b)} ms, ready after {ready_s:.1f} s")


def test_a_child_that_exits_on_an_unknown_first_message_is_served(bridge_factory):
    b = picky(bridge_factory, "exit", {})
    b.wait_ready(20)
    line = era_line(b)
    assert ('era="legacy"' in line or '"era":"legacy"' in line) and "exited" in line, line
    assert echo_ok(b) == f"hi|{b.nonce}"
    assert metric(b, 'mcp_bridge_child_restarts_total{reason="exited"}') == 0, "the real child never saw discover"


def test_child_era_legacy_skips_the_probe(bridge_factory):
    b = bridge_factory(env={"MCPCTL_BRIDGE_CHILD_ERA": "legacy"})
    assert "child era decided" not in b.log_text()
    assert len(b.all_spawned_pids()) == 1
    assert metric(b, 'mcp_bridge_child_era{era="legacy"}') == 1


def test_an_unknown_child_era_is_a_usage_error(tmp_path):
    out = subprocess.run([os.environ.get("MCPCTL_BIN", "target/debug/mcpctl"), "bridge", "--listen", "127.0.0.1:0",
                          "--", "true"], env=dict(os.environ, MCPCTL_BRIDGE_CHILD_ERA="future"),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "possible values: auto, legacy, modern" in out.stderr, (out.returncode, out.stderr)
