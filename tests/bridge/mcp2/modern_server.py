"""A MODERN (2026-07-28) stdio MCP server written with the Python SDK 2.x (`MCPServer`), for
test_modern_child.py: the bridge's era probe finds it modern and serves it natively.

  modern_server.py --nonce X [--spawn-log FILE]

Tools: `echo` (text -> "text|nonce"), `greet` (asks the client for a name with a multi-round-trip
elicitation: an `input_required` result, then the client's retry), `add_tool` (registers a tool
at run time: the server announces `notifications/tools/list_changed` to its subscribers)."""

from __future__ import annotations

import argparse
import os
from typing import Annotated

from pydantic import BaseModel

from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve

p = argparse.ArgumentParser()
p.add_argument("--nonce", required=True)
p.add_argument("--spawn-log")
args = p.parse_args()
if args.spawn_log:
    with open(args.spawn_log, "a") as f:
        f.write(f"{os.getpid()}\n")

server = MCPServer("modern-testserver", instructions=f"modern test server nonce={args.nonce}")


@server.tool()
def echo(text: str) -> str:
    return f"{text}|{args.nonce}"


class Name(BaseModel):
    name: str


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


@server.tool()
def greet(who: Annotated[Name, Resolve(ask_name)]) -> str:
    return f"hello {who.name}|{args.nonce}"


@server.tool()
async def add_tool(name: str, ctx: Context) -> str:
    def extra() -> str:
        return name

    server.add_tool(extra, name=name)
    await ctx.notify_tools_changed()
    return f"added {name}"


server.run("stdio")
