"""Security rules of the bridge (issue: bridge hardening), one test each: Origin/Host on every
endpoint, the bearer token from a file (never logged, never in the server's environment), the
rate limit, the request size limit, malformed JSON-RPC, and tools/call argument validation."""

from __future__ import annotations

import json
import os
import subprocess

import anyio
import httpx
import pytest
from mcp.shared.exceptions import McpError

from conftest import INIT, MCPCTL, post_json, wait_until
from mcpclient import TRANSPORTS, connect, text_of

TOKEN = "tok-" + "9f8e7d6c5b4a" * 3
WRONG = "wrong-" + "0a1b2c3d4e5f" * 3


def session(base: str, headers: dict | None = None) -> dict:
    r = post_json(base + "/mcp", INIT, headers)
    assert r.status_code == 200, r.text
    return {"mcp-session-id": r.headers["mcp-session-id"], **(headers or {})}


def every_endpoint(base: str, headers: dict) -> dict[str, int]:
    """Status of one request to each endpoint with `headers` (nothing else valid needed: the
    Origin/Host rule is checked before anything else)."""
    h = {"accept": "application/json, text/event-stream", "content-type": "application/json", **headers}
    out = {}
    with httpx.Client(timeout=10) as c:
        for name, method, path in [
            ("healthz", "GET", "/healthz"), ("readyz", "GET", "/readyz"), ("metrics", "GET", "/metrics"),
            ("mcp POST", "POST", "/mcp"), ("mcp GET", "GET", "/mcp"), ("mcp DELETE", "DELETE", "/mcp"),
            ("messages", "POST", "/messages?session_id=x"),
        ]:
            out[name] = c.request(method, base + path, headers=h, content=json.dumps(INIT) if method == "POST" else None).status_code
        # /sse streams: only look at the status line.
        with c.stream("GET", base + "/sse", headers=h) as r:
            out["sse"] = r.status_code
    return out


def test_foreign_origin_is_403_on_every_endpoint_and_loopback_origins_pass(bridge):
    for origin in ["http://evil.example", "null", "http://localhost.evil.example", "file://localhost"]:
        got = every_endpoint(bridge.base, {"origin": origin})
        assert set(got.values()) == {403}, (origin, got)
    # DNS rebinding: the attacker's name resolves to us, so Host and Origin agree — still foreign.
    got = every_endpoint(bridge.base, {"origin": "http://evil.example:%d" % bridge.port, "host": "evil.example:%d" % bridge.port})
    assert set(got.values()) == {403}, got
    for origin in ["http://localhost:3000", "http://127.0.0.1:%d" % bridge.port, "http://[::1]:8080"]:
        got = every_endpoint(bridge.base, {"origin": origin})
        assert 403 not in got.values(), (origin, got)
        assert got["healthz"] == 200 and got["mcp POST"] == 200


def test_allowed_hosts_and_origins_are_configurable(bridge_factory):
    b = bridge_factory("--allow-host", "mcp-fetch:8080", "--allow-origin", "https://app.example.com")
    # The in-network name passes (as Host and as Origin); other hosts do not; loopback always does.
    assert post_json(b.base + "/mcp", INIT, {"host": "mcp-fetch:8080"}).status_code == 200
    assert post_json(b.base + "/mcp", INIT, {"host": "mcp-fetch:8080", "origin": "http://mcp-fetch:8080"}).status_code == 200
    assert post_json(b.base + "/mcp", INIT, {"origin": "https://app.example.com"}).status_code == 200
    assert httpx.get(b.base + "/readyz", headers={"host": "mcp-fetch:8080"}).status_code == 200
    assert post_json(b.base + "/mcp", INIT, {"host": "evil.example:8080"}).status_code == 403
    assert httpx.get(b.base + "/metrics", headers={"host": "mcp-fetch:9999"}).status_code == 403
    assert post_json(b.base + "/mcp", INIT, {"origin": "http://app.example.com"}).status_code == 403
    assert post_json(b.base + "/mcp", INIT).status_code == 200  # Host 127.0.0.1:port


def start_with_token(bridge_factory, tmp_path, *args, env=None):
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "API_KEY").write_text("child-secret\n")
    token_file = secrets / "BRIDGE_TOKEN"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o400)
    log_env = {"MCPCTL_LOG": "debug", "MCPCTL_LOG_FORMAT": "json", **(env or {})}
    return bridge_factory("--token-file", str(token_file), "--secrets-dir", str(secrets), *args, env=log_env), token_file


def test_token_file_guards_mcp_endpoints_only_and_never_reaches_logs_or_the_child(bridge_factory, tmp_path):
    b, token_file = start_with_token(bridge_factory, tmp_path)
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert post_json(b.base + "/mcp", INIT).status_code == 401
    assert post_json(b.base + "/mcp", INIT, {"authorization": f"Bearer {WRONG}"}).status_code == 401
    assert post_json(b.base + "/mcp", INIT, {"authorization": f"Bearer {TOKEN[:-1]}"}).status_code == 401
    assert post_json(b.base + "/mcp", INIT, {"authorization": TOKEN}).status_code == 401
    r = httpx.get(b.base + "/sse")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(b.base + "/messages?session_id=x", content="{}").status_code == 401
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(b.base + probe).status_code == 200, probe
    sid = session(b.base, auth)

    async def calls():
        out = {}
        for t in TRANSPORTS:
            async with connect(b.base, t, headers={"Authorization": f"Bearer {TOKEN}"}) as s:
                out[t] = text_of(await s.call_tool("echo", {"text": t}))
                out["env"] = text_of(await s.call_tool("getenv", {"name": "BRIDGE_TOKEN"}))
                out["api"] = text_of(await s.call_tool("getenv", {"name": "API_KEY"}))
        return out

    out = anyio.run(calls)
    assert out["sse"] == f"sse|{b.nonce}" and out["streamable"] == f"streamable|{b.nonce}"
    assert out["env"] == "<unset>", "the bridge's token file must not be exported to the server"
    assert out["api"] == "child-secret", "other secret files still are"
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
    assert post_json(b.base + "/mcp", call, sid).status_code == 200
    # healthcheck --mcp with the token file, and without it.
    hc = [MCPCTL, "bridge", "healthcheck", "--mcp", "--port", str(b.port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPCTL_BRIDGE_TOKEN")}
    assert subprocess.run(hc, env=env, capture_output=True, timeout=10).returncode == 1
    assert subprocess.run([*hc, "--token-file", str(token_file)], env=env, capture_output=True, timeout=10).returncode == 0

    b.stop()
    log = b.log_text()
    assert '"session"' in log and "request done" in log, "debug request logs were captured"
    for secret in (TOKEN, WRONG, TOKEN[:-1], TOKEN[4:20]):
        assert secret not in log, "a token reached the logs"
    # Nor the process table: no flag or environment variable carries it.
    assert TOKEN not in " ".join(b.proc.args)


def test_unreadable_or_empty_token_file_refuses_to_start(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path in (empty, tmp_path / "missing"):
        p = subprocess.run([MCPCTL, "bridge", "--listen", "127.0.0.1:0", "--token-file", str(path), "--", "true"],
                           capture_output=True, timeout=10, text=True)
        assert p.returncode == 2, p
        assert "--token-file" in p.stderr


def test_rate_limit_keyed_by_client_address_without_a_token(bridge_factory):
    b = bridge_factory("--rate-limit", "2", "--rate-burst", "4")
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10) as a, \
            httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as other:
        h = {"accept": "application/json", "content-type": "application/json"}
        statuses = [a.post(b.base + "/mcp", content=json.dumps(INIT), headers=h).status_code for _ in range(8)]
        assert statuses[:4] == [200] * 4 and 429 in statuses[4:], statuses
        r = a.post(b.base + "/mcp", content=json.dumps(ping), headers=h)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["message"].startswith("Too Many Requests")
        # Another client address has its own budget; probes are never limited.
        assert other.post(b.base + "/mcp", content=json.dumps(INIT), headers=h).status_code == 200
        assert all(a.get(b.base + "/readyz").status_code == 200 for _ in range(10))
        # The budget refills (2/s): a request passes again within the Retry-After.
        wait_until(lambda: a.post(b.base + "/mcp", content=json.dumps(INIT), headers=h).status_code == 200, 5,
                   "the rate budget to refill", interval=0.25)


def test_rate_limit_keyed_by_token(bridge_factory, tmp_path):
    b, _ = start_with_token(bridge_factory, tmp_path, "--rate-limit", "1", "--rate-burst", "3")
    h = {"accept": "application/json", "content-type": "application/json", "authorization": f"Bearer {TOKEN}"}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10) as a, \
            httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10) as other:
        assert [a.post(b.base + "/mcp", content=json.dumps(INIT), headers=h).status_code for _ in range(3)] == [200] * 3
        # Same token from another address: same budget, exhausted.
        assert other.post(b.base + "/mcp", content=json.dumps(INIT), headers=h).status_code == 429
        # Without the token that address is judged on its own budget: 401, not 429.
        no_tok = {k: v for k, v in h.items() if k != "authorization"}
        assert other.post(b.base + "/mcp", content=json.dumps(INIT), headers=no_tok).status_code == 401


def test_request_size_limit_413_declared_or_streamed_and_configurable(bridge_factory):
    b = bridge_factory("--max-request-bytes", "65536")
    sid = session(b.base)
    def call(n):
        return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x" * n}}}
    assert post_json(b.base + "/mcp", call(60_000), sid).status_code == 200
    r = post_json(b.base + "/mcp", call(70_000), sid)
    assert r.status_code == 413 and r.json()["error"]["code"] == -32600

    def chunks():  # no Content-Length: the limit must hold while reading
        body = json.dumps(call(200_000)).encode()
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]
    r = httpx.post(b.base + "/mcp", content=chunks(), headers={**sid, "content-type": "application/json", "accept": "application/json"})
    assert r.status_code == 413
    assert httpx.post(b.base + f"/messages?session_id=x", content=json.dumps(call(70_000))).status_code == 413


def test_malformed_json_rpc_gets_json_rpc_errors(bridge):
    sid = session(bridge.base)
    h = {"accept": "application/json", "content-type": "application/json", **sid}
    r = httpx.post(bridge.base + "/mcp", content="{not json", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700 and r.json()["jsonrpc"] == "2.0"
    for bad in [{"jsonrpc": "2.0", "id": 5}, {"jsonrpc": "1.0", "id": 5, "method": "ping"}, {"id": 5, "method": "ping"},
                {"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, "just a string", 42]:
        r = httpx.post(bridge.base + "/mcp", content=json.dumps(bad), headers=h)
        assert r.json()["error"]["code"] == -32600, (bad, r.text)
    r = httpx.post(bridge.base + "/mcp", content=json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]), headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32600
    # Legacy transport: the parse error is the HTTP answer, malformed messages answer on the stream.
    sse_sid = "nope"
    # The body is admitted (parsed) before the session is looked up: not JSON → 400 either way.
    assert httpx.post(bridge.base + f"/messages?session_id={sse_sid}", content="{").status_code == 400
    assert httpx.post(bridge.base + f"/messages?session_id={sse_sid}", content="{}").status_code == 404


@pytest.mark.parametrize("model", ["shared", "per_session"])
def test_tool_arguments_are_validated_against_the_cached_input_schema(bridge_factory, model):
    b = bridge_factory("--session-model", model)

    async def main():
        for transport in TRANSPORTS:
            async with connect(b.base, transport) as s:
                assert text_of(await s.call_tool("typed", {"count": 3, "mode": "slow"})) == f"3|slow|{b.nonce}"
                for args, field in [({}, "arguments.count"), ({"count": "3"}, "arguments.count"),
                                    ({"count": 0}, "arguments.count"), ({"count": 1, "mode": "turbo"}, "arguments.mode"),
                                    ({"count": 1, "tags": ["a", 2]}, "arguments.tags[1]"),
                                    ({"count": 1, "extra": True}, "arguments.extra"),
                                    ({"text": 5}, None)]:
                    tool = "echo" if field is None else "typed"
                    field = field or "arguments.text"
                    with pytest.raises(McpError) as e:
                        await s.call_tool(tool, args)
                    assert e.value.error.code == -32602, e.value.error
                    assert field in e.value.error.message and tool in e.value.error.message, e.value.error.message
                counts = json.loads(text_of(await s.call_tool("counters", {"with_calls": True})))
                # Only the valid typed call and this counters call reached the server.
                assert counts["tools_call"] == (2 if model == "per_session" else 2 + (transport == "streamable") * 2), counts

    anyio.run(main)


def test_argument_validation_can_be_switched_off(bridge_factory):
    b = bridge_factory("--no-argument-validation")
    sid = session(b.base)
    r = post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "typed", "arguments": {"count": "7"}}},
                  {**sid, "accept": "application/json"})
    assert r.json()["result"]["content"][0]["text"] == f'"7"|fast|{b.nonce}', "the server itself judged the arguments"
