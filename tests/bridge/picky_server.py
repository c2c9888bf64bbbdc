"""A stdio server that is particular about `initialize`, wrapping another server, for
test_modern_child.py.

  picky_server.py exit|ignore|modern-only -- COMMAND...

`exit`, `ignore` (a legacy server around mcp-testserver: the bridge must probe a sibling, never the
real child): the first line must be `initialize`; anything else (the era probe's
`server/discover`) makes it exit at once (`exit`, status 3) or go silent until its stdin closes
(`ignore`). After an `initialize` it starts COMMAND and relays stdin to it (COMMAND writes to our
stdout itself).

`modern-only` (around the Python SDK 2.x server, which answers `initialize` as well as
`server/discover`): a server that speaks ONLY 2026-07-28. COMMAND starts at once; every
`initialize` is answered here with −32022 naming 2026-07-28 and never reaches it; every other
line is relayed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

mode, sep, *command = sys.argv[1:]
assert mode in ("exit", "ignore", "modern-only") and sep == "--" and command, sys.argv
if mode == "modern-only":
    proc = subprocess.Popen(command, stdin=subprocess.PIPE)
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if isinstance(msg, dict) and msg.get("method") == "initialize":
            asked = (msg.get("params") or {}).get("protocolVersion")
            err = {"jsonrpc": "2.0", "id": msg.get("id"), "error": {
                "code": -32022, "message": "Unsupported protocol version",
                "data": {"supported": ["2026-07-28"], "requested": asked}}}
            os.write(1, (json.dumps(err) + "\n").encode())  # one write: whole line
            continue
        proc.stdin.write(line)
        proc.stdin.flush()
    proc.stdin.close()
    sys.exit(proc.wait())
first = sys.stdin.buffer.readline()
try:
    method = json.loads(first).get("method")
except ValueError:
    method = None
if method != "initialize":
    if mode == "exit":
        sys.exit(3)
    for _ in sys.stdin.buffer:  # silent: read and ignore everything until EOF
        pass
    sys.exit(0)
proc = subprocess.Popen(command, stdin=subprocess.PIPE)
proc.stdin.write(first)
proc.stdin.flush()
for line in sys.stdin.buffer:
    proc.stdin.write(line)
    proc.stdin.flush()
proc.stdin.close()
sys.exit(proc.wait())
