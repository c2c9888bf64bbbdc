"""Thin helpers around the official MCP Python SDK client, for both transports."""

from __future__ import annotations

from contextlib import asynccontextmanager

from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TRANSPORTS = ["sse", "streamable"]


@asynccontextmanager
async def connect(base: str, transport: str, headers: dict | None = None, **session_kwargs):
    """An initialized ClientSession to the bridge at `base` over `transport`."""
    if transport == "sse":
        async with sse_client(base + "/sse", headers=headers, timeout=10, sse_read_timeout=60) as (read, write):
            async with ClientSession(read, write, **session_kwargs) as s:
                await s.initialize()
                yield s
    else:
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(base + "/mcp", http_client=http) as (read, write, _get_id):
                async with ClientSession(read, write, **session_kwargs) as s:
                    await s.initialize()
                    yield s


def text_of(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")
