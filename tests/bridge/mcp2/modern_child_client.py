"""The Python SDK 2.x client against a bridge wrapping a MODERN stdio server (mcp2/modern_server.py),
for test_modern_child.py; run in the 2.x venv (MCP2_PYTHON). Prints one JSON object on stdout.

  modern_child_client.py greet URL --name N
      a client pinned to 2026-07-28 that declares form elicitation and answers it with {"name": N}:
      calls `greet`, which needs a multi-round-trip (`input_required`, then the retry)."""

from __future__ import annotations

import argparse
import json

import anyio
import mcp_types as types
from mcp import Client


async def greet(url: str, name: str) -> dict:
    asked: list[str] = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": name})

    async with Client(url, mode="2026-07-28", read_timeout_seconds=30, elicitation_callback=on_elicit) as c:
        r = await c.call_tool("greet", {})
        return {
            "asked": asked,
            "reply": "".join(getattr(x, "text", "") for x in r.content),
            "is_error": bool(r.is_error),
        }


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("greet")
    g.add_argument("url")
    g.add_argument("--name", required=True)
    a = p.parse_args()
    if a.cmd == "greet":
        print(json.dumps(anyio.run(greet, a.url, a.name)))


if __name__ == "__main__":
    main()
