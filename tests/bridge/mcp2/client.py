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
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import anyio
from mcp import Client


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["probe", "load", "latency"])
    ap.add_argument("url")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--seq", type=int, default=200)
    ap.add_argument("--prefix", default="m")
    ap.add_argument("--nonce", default="")
    a = ap.parse_args()
    if a.command == "probe":
        out = anyio.run(probe, a.url, a.mode)
    elif a.command == "load":
        out = anyio.run(load, a.url, a.mode, a.clients, a.calls, a.prefix, a.nonce)
    else:
        out = anyio.run(latency, a.url, a.mode, a.seq, a.nonce)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
