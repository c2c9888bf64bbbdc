"""Session lifecycle: disconnects cancel, unknown/missing sessions, idle expiry, keepalive, Origin."""

from __future__ import annotations

import json
import threading
import time

import anyio
import httpx

from conftest import INIT, post_json, wait_until
from mcpclient import connect, text_of


class RawSse:
    """A legacy SSE session driven by hand, to control exactly when the connection goes away."""

    def __init__(self, base: str):
        self.base = base
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=60))
        self.events: list[tuple[str, str]] = []
        self.comments = 0
        self.headers = None
        self.endpoint = None
        self.error = None
        self._resp_cm = self.client.stream("GET", base + "/sse")
        self.resp = self._resp_cm.__enter__()
        self.headers = self.resp.headers
        threading.Thread(target=self._read, daemon=True).start()
        self.endpoint = wait_until(lambda: next((d for e, d in self.events if e == "endpoint"), None), 10, "endpoint event")

    def _read(self):
        event = "message"
        try:
            for line in self.resp.iter_lines():
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    self.events.append((event, line[5:].strip()))
                    event = "message"
        except Exception as e:  # the connection was closed under us
            self.error = e

    def post(self, msg) -> int:
        return self.client.post(self.base + self.endpoint, content=json.dumps(msg)).status_code

    def reply(self, id_, timeout=10):
        def find():
            for e, d in self.events:
                if e == "message":
                    m = json.loads(d)
                    if m.get("id") == id_ and ("result" in m or "error" in m):
                        return m
            return None
        return wait_until(find, timeout, f"reply to {id_}")

    def initialize(self):
        assert self.post(INIT) == 202
        self.reply(1)
        assert self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}) == 202

    def close(self):
        self._resp_cm.__exit__(None, None, None)
        self.client.close()


def test_sse_disconnect_mid_call_cancels_at_the_child_and_closes_the_session(bridge_factory):
    # hyper notices a vanished client when it next writes: the keepalive interval bounds that.
    bridge = bridge_factory("--keepalive", "1")
    raw = RawSse(bridge.base)
    raw.initialize()
    assert raw.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "hang", "arguments": {}}}) == 202
    wait_until(lambda: bridge.readyz()[1]["pending"] == 1, 10, "call pending at the child")
    assert bridge.readyz()[1]["sessions"] == 1
    raw.close()
    wait_until(lambda: "cancelled request" in bridge.log_text(), 10, "notifications/cancelled at the child")
    wait_until(lambda: bridge.readyz()[1]["sessions"] == 0, 10, "session closed")
    assert bridge.readyz()[1]["pending"] == 0


def test_streamable_disconnect_mid_call_cancels_at_the_child(bridge_factory):
    bridge = bridge_factory("--keepalive", "1")
    r = post_json(bridge.base + "/mcp", INIT)
    sid = r.headers["mcp-session-id"]
    h = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "hang", "arguments": {}}}
    with httpx.Client(timeout=10) as c:
        with c.stream("POST", bridge.base + "/mcp", content=json.dumps(call),
                      headers={**h, "accept": "application/json, text/event-stream", "content-type": "application/json"}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            wait_until(lambda: bridge.readyz()[1]["pending"] == 1, 10, "call pending at the child")
    wait_until(lambda: "cancelled request" in bridge.log_text(), 10, "notifications/cancelled at the child")
    wait_until(lambda: bridge.readyz()[1]["pending"] == 0, 10, "nothing pending")
    assert httpx.delete(bridge.base + "/mcp", headers=h).status_code == 200
    assert bridge.readyz()[1]["sessions"] == 0


def test_unknown_session_is_404_and_missing_session_is_400(bridge):
    b = bridge.base
    tools = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert httpx.post(b + "/messages", content=json.dumps(tools)).status_code == 400
    assert httpx.post(b + "/messages?session_id=nope", content=json.dumps(tools)).status_code == 404
    assert post_json(b + "/mcp", tools).status_code == 400
    assert post_json(b + "/mcp", tools, {"mcp-session-id": "nope"}).status_code == 404
    assert httpx.get(b + "/mcp", headers={"mcp-session-id": "nope", "accept": "text/event-stream"}).status_code == 404
    assert httpx.delete(b + "/mcp", headers={"mcp-session-id": "nope"}).status_code == 404
    assert post_json(b + "/mcp", INIT, {"mcp-protocol-version": "1999-01-01"}).status_code == 400


def test_foreign_origin_is_rejected(bridge):
    assert post_json(bridge.base + "/mcp", INIT, {"origin": "http://evil.example"}).status_code == 403
    assert post_json(bridge.base + "/mcp", INIT, {"origin": "http://localhost:3000"}).status_code == 200


def test_idle_sessions_expire_but_an_open_sse_stream_keeps_its_session(bridge_factory):
    b = bridge_factory("--idle-timeout", "1")
    raw = RawSse(b.base)
    raw.initialize()
    t_last = time.monotonic()
    sid = post_json(b.base + "/mcp", INIT).headers["mcp-session-id"]
    h = {"mcp-session-id": sid}
    tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    # Poll readiness (which touches no session), not the session itself (a request is activity).
    wait_until(lambda: b.readyz()[1]["sessions"] == 1, 10, "streamable session to expire")
    assert post_json(b.base + "/mcp", tools, h).status_code == 404
    wait_until(lambda: time.monotonic() - t_last > 3, 10, "legacy session idle for 3x the timeout")
    assert raw.post({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}) == 202
    assert "tools" in raw.reply(3)["result"]
    raw.close()


def test_keepalive_comments_hold_an_idle_stream_open_through_an_idle_killing_proxy(bridge_factory, idle_proxy):
    """keepalive 1 s through a proxy that drops connections idle for 3 s: a legacy session idle for
    15 s still answers. Control: with keepalive 30 s the same proxy does drop the stream."""
    b = bridge_factory("--keepalive", "1")
    control = bridge_factory("--keepalive", "30")
    proxy = idle_proxy(b.port, 3)
    control_proxy = idle_proxy(control.port, 3)

    raw = RawSse(f"http://127.0.0.1:{proxy.port}")
    assert raw.headers["cache-control"].startswith("no-cache")
    assert raw.headers["x-accel-buffering"] == "no"
    raw.initialize()
    dropped = RawSse(f"http://127.0.0.1:{control_proxy.port}")
    wait_until(lambda: control_proxy.dropped >= 1, 10, "the proxy to drop the stream without keepalive")
    wait_until(lambda: control.readyz()[1]["sessions"] == 0, 10, "control session closed with its stream")

    async def idle_streamable():
        async with connect(f"http://127.0.0.1:{proxy.port}", "streamable") as s:
            await anyio.sleep(15)  # the idle period is what is tested, not a synchronisation
            return text_of(await s.call_tool("echo", {"text": "still here"}))

    assert anyio.run(idle_streamable) == f"still here|{b.nonce}"
    assert raw.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "after idle"}}}) == 202
    reply = raw.reply(7)
    assert reply["result"]["content"][0]["text"] == f"after idle|{b.nonce}"
    # (the proxy may drop idle pooled POST connections; the streams themselves must survive)
    assert raw.error is None
    assert raw.comments >= 10, raw.comments
    raw.close()
    dropped.close()


def test_bearer_token_guards_mcp_endpoints_but_not_probes(bridge_factory):
    import os
    import subprocess
    from conftest import MCPCTL
    b = bridge_factory(env={"MCPCTL_BRIDGE_TOKEN": "s3cret"})
    assert post_json(b.base + "/mcp", INIT).status_code == 401
    assert post_json(b.base + "/mcp", INIT, {"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(b.base + "/sse").status_code == 401
    assert httpx.get(b.base + "/readyz").status_code == 200
    assert httpx.get(b.base + "/metrics").status_code == 200

    async def call(transport):
        async with connect(b.base, transport, headers={"Authorization": "Bearer s3cret"}) as s:
            return text_of(await s.call_tool("echo", {"text": transport}))

    for t in ("sse", "streamable"):
        assert anyio.run(call, t) == f"{t}|{b.nonce}"
    hc = [MCPCTL, "bridge", "healthcheck", "--mcp", "--port", str(b.port)]
    env = {k: v for k, v in os.environ.items() if k != "MCPCTL_BRIDGE_TOKEN"}
    assert subprocess.run(hc, env=env, capture_output=True, timeout=10).returncode == 1
    assert subprocess.run(hc, env={**env, "MCPCTL_BRIDGE_TOKEN": "s3cret"}, capture_output=True, timeout=10).returncode == 0
