"""A legacy stdio server that is particular about its first message, wrapping mcp-testserver, for
test_modern_child.py: the bridge must probe a sibling, never the real child.

  picky_server.py exit|ignore -- COMMAND...

The first line must be `initialize`; anything else (the era probe's `server/discover`) makes it
exit at once (`exit`, status 3) or go silent until its stdin closes (`ignore`). After an
`initialize` it starts COMMAND and relays stdin to it (COMMAND writes to our stdout itself)."""

from __future__ import annotations

import json
import subprocess
import sys

mode, sep, *command = sys.argv[1:]
assert mode in ("exit", "ignore") and sep == "--" and command, sys.argv
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
