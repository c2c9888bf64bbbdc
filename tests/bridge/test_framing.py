"""Framing: large messages intact, stderr floods and junk on stdout never disturb replies."""

from __future__ import annotations

import anyio
import pytest

from conftest import wait_until
from mcpclient import TRANSPORTS, connect, text_of


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_5mb_response_and_1mb_request_arrive_intact(bridge, transport):
    async def main():
        async with connect(bridge.base, transport) as s:
            big = text_of(await s.call_tool("big", {"bytes": 5 * 1024 * 1024}))
            assert len(big) == 5 * 1024 * 1024 + len(bridge.nonce)
            assert big == "x" * (5 * 1024 * 1024) + bridge.nonce
            payload = "".join(chr(0x61 + i % 26) for i in range(1024 * 1024)) + "é✓"
            echoed = text_of(await s.call_tool("echo", {"text": payload}))
            assert echoed == f"{payload}|{bridge.nonce}"

    anyio.run(main)


def test_stderr_flood_never_blocks_stdout(bridge):
    async def main():
        async with connect(bridge.base, "streamable") as s:
            async with anyio.create_task_group() as tg:
                async def flood():
                    r = await s.call_tool("stderr_flood", {"lines": 200_000})
                    assert text_of(r) == f"flooded 200000|{bridge.nonce}"
                tg.start_soon(flood)
                with anyio.fail_after(25):
                    for i in range(50):
                        assert text_of(await s.call_tool("echo", {"text": str(i)})) == f"{i}|{bridge.nonce}"

    anyio.run(main)
    # The dropped-line summary is logged once a second.
    wait_until(lambda: "rate-limited" in bridge.log_text(), 5, "a rate-limit summary in the log")


def test_non_json_stdout_lines_are_logged_and_skipped(bridge_factory):
    b = bridge_factory(server_args=["--garbage-stdout"])

    async def main():
        async with connect(b.base, "sse") as s:
            for i in range(5):
                assert text_of(await s.call_tool("echo", {"text": str(i)})) == f"{i}|{b.nonce}"

    anyio.run(main)
    assert "non-JSON line" in b.log_text()


def test_request_over_the_4mb_limit_is_refused(bridge):
    from conftest import INIT, post_json
    sid = post_json(bridge.base + "/mcp", INIT).headers["mcp-session-id"]
    huge = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x" * (5 * 1024 * 1024)}}}
    assert post_json(bridge.base + "/mcp", huge, {"mcp-session-id": sid}).status_code == 413
