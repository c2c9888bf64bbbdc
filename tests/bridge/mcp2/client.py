"""The Python MCP SDK 2.x client (`mcp.Client`) against a bridge, run in the 2.x venv
(tests/bridge/mcp2/requirements.txt) by test_sdk2.py and scripts/bench-bridge: the 1.x venv the
other tests run in cannot import it. Prints one JSON object on stdout.

  client.py probe URL --mode auto|2026-07-28
      connect (auto: `server/discover`, falling back to `initialize`), tools/list, one echo call.
  client.py load URL --mode M --clients N --calls K --prefix P --nonce X
      N clients connect, print "ready" and wait for a line on stdin (so another process can start
      its clients at the same moment), then each makes K echo calls with its own token
      P<client>-<call>; a reply that does not carry the caller's token (+ "|X") is wrong.
  client.py latency URL --mode M --seq N --nonce X
      N sequential echo calls on one client: seconds per call (sorted).
  client.py probe-service URL --mode M [--token T] [--expect a,b] [--call NAME --args JSON]
      (the token may come from $MCP2_TOKEN instead, to keep it off the command line):
      a deployed service (tests/stack/eras.rs): connect with the bearer token, tools/list (every
      page), the expected tools missing from it, and optionally one call. A failure is reported
      in the JSON (`ok` false, `error`, `error_code`: a pinned client refused by a per_session
      service is an expected outcome), not as an exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def probe(url: str, mode: str) -> dict:
    async with Client(url, mode=mode, read_timeout_seconds=30) as c:
        s = c.session
        tools = await c.list_tools()
        r = await c.call_tool("echo", {"text": "hello 2.x"})
        info = c.server_info
        return {
            "protocol_version": c.protocol_version,
            "discovered": s.discover_result is not None,
            "initialized": s.initialize_result is not None,
            "server_name": info.name if info else None,
            "instructions": c.instructions,
            "tools": sorted(t.name for t in tools.tools),
            "reply": text_of(r),
            "is_error": bool(r.is_error),
        }


async def load(url: str, mode: str, clients: int, calls: int, prefix: str, nonce: str) -> dict:
    wrong: list[str] = []
    errors: list[str] = []
    done = {"calls": 0}
    go = anyio.Event()
    ready = {"n": 0}
    all_ready = anyio.Event()

    async def one(n: int):
        try:
            async with Client(url, mode=mode, read_timeout_seconds=60) as c:
                ready["n"] += 1
                if ready["n"] == clients:
                    all_ready.set()
                await go.wait()
                for i in range(calls):
                    token = f"{prefix}{n}-{i}"
                    r = await c.call_tool("echo", {"text": token})
                    got = text_of(r)
                    if got != f"{token}|{nonce}":
                        wrong.append(f"{token!r} got {got!r}")
                    done["calls"] += 1
        except Exception as e:  # counted: every call this client did not make is missing
            errors.append(f"client {n}: {e!r}")
            all_ready.set()

    t0 = 0.0

    async def starter():
        nonlocal t0
        await all_ready.wait()
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        t0 = time.monotonic()
        go.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(starter)
        for n in range(clients):
            tg.start_soon(one, n)
    return {"calls": done["calls"], "wrong": len(wrong), "wrong_first": wrong[:5], "errors": errors,
            "elapsed": time.monotonic() - t0}


async def latency(url: str, mode: str, seq: int, nonce: str) -> dict:
    lat, wrong = [], 0
    async with Client(url, mode=mode, read_timeout_seconds=30) as c:
        for i in range(seq):
            token = f"lat-{i}"
            t0 = time.perf_counter()
            r = await c.call_tool("echo", {"text": token})
            lat.append(time.perf_counter() - t0)
            wrong += text_of(r) != f"{token}|{nonce}"
        version = c.protocol_version
    return {"protocol_version": version, "latencies": sorted(lat), "wrong": wrong}


def first_leaf(e: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups from anyio task groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


async def probe_service(url: str, mode: str, token: str, expect: list[str], call: str,
                        args: dict) -> dict:
    out: dict = {"mode": mode, "ok": False, "era": None, "protocol_version": None, "tools": [],
                 "missing": [], "call": None, "error": None, "error_code": None, "ms": None}
    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with create_mcp_http_client(headers=headers) as http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode,
                              read_timeout_seconds=60) as c:
                s = c.session
                out["protocol_version"] = c.protocol_version
                out["era"] = "legacy" if s.initialize_result is not None else "modern"
                names: list[str] = []
                cursor = None
                for _ in range(100):
                    page = await c.list_tools(cursor=cursor)
                    names += [t.name for t in page.tools]
                    cursor = page.next_cursor
                    if not cursor:
                        break
                out["tools"] = sorted(names)
                out["missing"] = [t for t in expect if t not in names]
                if call:
                    r = await c.call_tool(call, args)
                    out["call"] = {"tool": call, "is_error": bool(r.is_error), "text": text_of(r)[:2000]}
                out["ok"] = True
    except Exception as e:  # reported, not raised: a refusal is an outcome the caller judges
        leaf = first_leaf(e)
        out["error"] = f"{type(leaf).__name__}: {leaf}"
        out["error_code"] = getattr(getattr(leaf, "error", None), "code", None)
    out["ms"] = round((time.monotonic() - t0) * 1000, 1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["probe", "load", "latency", "probe-service"])
    ap.add_argument("url")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seq", type=int, default=200)
    ap.add_argument("--prefix", default="m")
    ap.add_argument("--nonce", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--expect", default="")
    ap.add_argument("--call", default="")
    ap.add_argument("--args", default="{}")
    a = ap.parse_args()
    if a.command == "probe-service":
        expect = [t for t in a.expect.split(",") if t]
        token = a.token or os.environ.get("MCP2_TOKEN", "")
        out = anyio.run(probe_service, a.url, a.mode, token, expect, a.call, json.loads(a.args))
    elif a.command == "probe":
        out = anyio.run(probe, a.url, a.mode)
    elif a.command == "load":
        out = anyio.run(load, a.url, a.mode, a.clients, a.calls, a.prefix, a.nonce)
    else:
        out = anyio.run(latency, a.url, a.mode, a.seq, a.nonce)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
