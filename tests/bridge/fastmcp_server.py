"""A real MCP server built with the official SDK's FastMCP (stdio), for interoperability tests."""

import sys

from mcp.server.fastmcp import Context, FastMCP

mcp = FastMCP("fastmcp-echo")
NONCE = sys.argv[1] if len(sys.argv) > 1 else ""


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text with this process's nonce."""
    return f"{text}|{NONCE}"


@mcp.tool()
async def count(n: int, ctx: Context) -> str:
    """Report progress n times, then answer."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n)
    return f"counted {n}|{NONCE}"


if __name__ == "__main__":
    mcp.run("stdio")
