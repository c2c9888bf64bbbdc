#!/usr/bin/env python3
"""The LiteLLM path, measured (issue 24 item 5): the same non-mutating tool call (mcp-testserver's
`echo`, every reply checked against the text sent and the server's nonce) directly to an
`mcpctl bridge` and through a real LiteLLM proxy running the config `mcpctl render --only litellm`
writes for that bridge, at concurrency 1 and 10. Run by scripts/bench-litellm (which builds the
binaries and finds LiteLLM's venv); not a test.

    benches/litellm.py run --mcpctl CLI --bridge BIN --testserver BIN --litellm BIN [options]
    benches/litellm.py summarize SAMPLES.json [--json RESULT.json]   # figures of a saved run

Paths (each at concurrency 1 and 10, `--calls` calls per cell, pooled over `--rounds`
interleaved rounds):
  direct.fresh_http   a new Streamable HTTP session per call: connect, initialize, initialized,
                      tools/call, DELETE — what LiteLLM does upstream per call (transport http)
  direct.fresh_sse    the same over legacy HTTP+SSE: GET /sse, endpoint event, initialize,
                      initialized, tools/call on /messages, replies on the stream (transport sse)
  direct.warm         one Streamable HTTP session per client, reused for every call
  <variant>.health    GET /health/liveliness: LiteLLM's own HTTP stack, no MCP (its floor)
  <variant>.rest      POST /mcp-rest/tools/call (what LiteLLM's UI, its REST clients and
                      `mcpctl cutover check`'s judged latency use)
  <variant>.mcp       LiteLLM's own MCP endpoint (/mcp, Streamable HTTP), one session per client
                      reused for every call (what MCP clients — IDEs, agents — do)
A variant is one LiteLLM process: the rendered config for one manifest choice (`litellm.transport`
sse or http), or a candidate setting on top of it, and LiteLLM's launch flags (`--num_workers`).
Each variant must pass correctness probes before it is measured (tools listed, a call right on
both endpoints, an unknown tool a clean error on /mcp, one /mcp session usable over fresh TCP
connections); one that fails is reported and not ranked.

Both LiteLLM endpoints are measured because clients use both: MCP clients (IDEs, agents) speak
MCP to /mcp and keep their session; LiteLLM's UI, scripts and `cutover check` (whose SLO is judged
there) call the REST endpoint, one request per call. They differ upstream: a REST call opens a
fresh session to the server every time (initialize, tools/list, tools/call, close), while a /mcp
client session keeps one upstream session open (LiteLLM 1.108.7) — the bridge's own counters,
read around every cell, show it ("up sess/call", "up req/call").

LiteLLM's share of a call = through LiteLLM minus direct, per percentile: REST against a fresh
direct session of the variant's transport, /mcp against the warm direct session. LiteLLM's CPU
time per call (its process tree's user + system time around each cell, divided by the calls) is
reported too: on a shared machine it ranks configurations where wall-clock latency cannot (time
spent waiting for a CPU is not in it).

Standard library only (runs with the system python3).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import re
import secrets
import hashlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROTOCOL = "2025-06-18"
SERVICE = "alpha"
TOOL = "echo"
CONCURRENCY = (1, 10)
# Variants measured by default (`name=transport[+workers=N][+protocol=VERSION]`): the two
# transports the manifest offers (`litellm.transport`), as mcpctl renders them, with LiteLLM's
# default single worker; the candidate it does not render, http pinned to MCP 2026-07-28
# (stateless: no upstream session per call); and the rendered default with two uvicorn workers
# (this machine class has 2 CPUs).
DEFAULT_VARIANTS = "sse=sse,http=http,modern=http+protocol=2026-07-28,sse_w2=sse+workers=2"
PATHS_DIRECT = ("direct.fresh_http", "direct.fresh_sse", "direct.warm")
PATHS_LITELLM = ("health", "rest", "mcp")
MAX_CALLS = 5000
MAX_ROUNDS = 20
MAX_BODY = 1 << 20  # bytes read from any reply: every network input is bounded
SAMPLES_SCHEMA = 1


class UsageError(Exception):
    """Bad arguments or input file (exit 2)."""


# ---------------------------------------------------------------- arguments and variants


def parse_variants(spec: str) -> list[dict]:
    """`name=transport[+workers=N][+protocol=VERSION],...` → [{name, transport, workers, protocol}].
    Names become figure names (`<name>.rest.c10.p95_ms`): [a-z][a-z0-9_]*, unique."""
    out, seen = [], set()
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if "=" not in part:
            raise UsageError(f"--variants: {part!r}: write NAME=TRANSPORT[+workers=N][+protocol=VERSION]")
        name, rest = part.split("=", 1)
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", name):
            raise UsageError(f"--variants: name {name!r} must match [a-z][a-z0-9_]*")
        if name in seen or name == "direct":
            raise UsageError(f"--variants: name {name!r} used twice (or reserved)")
        seen.add(name)
        bits = rest.split("+")
        transport = bits[0]
        if transport not in ("sse", "http"):
            raise UsageError(f"--variants: {name}: transport must be sse or http, got {transport!r}")
        v = {"name": name, "transport": transport, "workers": 1, "protocol": None}
        for b in bits[1:]:
            k, _, val = b.partition("=")
            if k == "workers" and val.isdigit() and 1 <= int(val) <= 8:
                v["workers"] = int(val)
            elif k == "protocol" and val in ("2026-07-28",):
                if transport != "http":
                    raise UsageError(f"--variants: {name}: protocol {val} needs transport http (LiteLLM refuses it over sse)")
                v["protocol"] = val
            else:
                raise UsageError(f"--variants: {name}: unknown setting {b!r} (workers=1..8, protocol=2026-07-28)")
        out.append(v)
    if not out:
        raise UsageError("--variants: give at least one variant")
    return out


def check_counts(calls: int, rounds: int) -> None:
    if not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--rounds {rounds}: give 1-{MAX_ROUNDS}")
    if not max(CONCURRENCY) * rounds <= calls <= MAX_CALLS:
        raise UsageError(f"--calls {calls}: give {max(CONCURRENCY) * rounds}-{MAX_CALLS} "
                         f"(at least one call per client per round)")


# ---------------------------------------------------------------- statistics and figures


def pct(xs: list[float], q: float) -> float:
    """The q-quantile by rank (no interpolation), as bench_bridge.py and cutover's latency do."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def cell_stats(cell: dict) -> dict:
    """{p50_ms, p95_ms, max_ms, calls_per_s, calls, wrong} of one cell's pooled samples
    (`ms`: latencies; `wall_s`: the wall time of each round's run; `wrong`)."""
    ms = cell["ms"]
    wall = sum(cell["wall_s"])
    n = len(ms)
    return {"p50_ms": pct(ms, .50), "p95_ms": pct(ms, .95), "max_ms": max(ms),
            "calls_per_s": n / wall if wall > 0 else 0.0, "calls": n, "wrong": cell["wrong"],
            "sessions_per_call": cell.get("upstream_sessions", 0) / n,
            "requests_per_call": cell.get("upstream_requests", 0) / n,
            "litellm_cpu_ms": 1000 * cell.get("litellm_cpu_s", 0.0) / n,
            "bridge_cpu_ms": 1000 * cell.get("bridge_cpu_s", 0.0) / n}


def direct_counterpart(endpoint: str, transport: str) -> str:
    """The direct path a LiteLLM path's share is taken against: LiteLLM opens a fresh upstream
    session per REST call, over the variant's transport; on /mcp it keeps one upstream session per
    client session (LiteLLM 1.108.7; the bridge's session counter shows it), so the warm session."""
    if endpoint == "rest":
        return f"direct.fresh_{transport}"
    return "direct.warm"


def figures(samples: dict) -> tuple[dict, dict, list[dict]]:
    """Result figures, peers (none) and table rows from a samples document (see `run`). Pure.

    Judged by `--compare`: per variant, endpoint and concurrency, LiteLLM's CPU time per call and
    the JSON-RPC requests that reached the bridge per call. Recorded and compared for context,
    not judged: every latency and throughput (and the share). Why: two runs of the same build
    on this shared 2-core machine (load 8 and 22) differed 0.56-2.08x in latency through
    LiteLLM, 0.36-2.77x when normalised by LiteLLM's own /health/liveliness of the same run
    (tried as a peer: a 2 ms request waits for a CPU differently from a 30 ms one), while CPU
    per call stayed within 0.77-1.04x: time spent waiting for a CPU is not in it, and LiteLLM is
    CPU-bound (another run was 1.06-1.43x, the machine slower per unit of work: benches/README.md).
    The requests per call are deterministic: a config or bridge change that adds round trips
    upstream always moves them."""
    cells, variants = samples["cells"], samples["variants"]
    by_name = {v["name"]: v for v in variants}
    figs, rows = {}, []

    def f(value, unit, better, floor, reference=False):
        d = {"value": round(float(value), 3), "unit": unit, "better": better, "floor": float(floor)}
        if reference:
            d["reference"] = True
        return d

    stats = {k: cell_stats(c) for k, c in cells.items()}
    for key, s in stats.items():
        path, conc = key.rsplit(".c", 1)
        name, endpoint = path.split(".", 1)
        # Latency floors: 0.05 ms for the direct bridge (scheduler noise below), 1 ms through
        # LiteLLM (a Python proxy: its tens of ms move by more than that between runs).
        floor = 0.05 if name == "direct" else 1.0
        for q in ("p50_ms", "p95_ms"):
            figs[f"{key}.{q}"] = f(s[q], "ms", "lower", floor, reference=True)
        figs[f"{key}.calls_per_s"] = f(s["calls_per_s"], "calls/s", "higher", 0, reference=True)
        row = {"path": path, "concurrency": int(conc), **s}
        if name != "direct" and endpoint != "health":
            # Floor 0.5 ms: the kernel counts CPU time in 10 ms ticks, over ~200 calls.
            figs[f"{key}.litellm_cpu_ms_per_call"] = f(s["litellm_cpu_ms"], "ms", "lower", 0.5)
            figs[f"{key}.upstream_requests_per_call"] = f(s["requests_per_call"], "requests", "lower", 0.1)
            figs[f"{key}.upstream_sessions_per_call"] = f(s["sessions_per_call"], "sessions", "lower", 0.1,
                                                          reference=True)
            direct = f"{direct_counterpart(endpoint, by_name[name]['transport'])}.c{conc}"
            if direct in stats:
                for q in ("p50_ms", "p95_ms"):
                    share = max(0.0, s[q] - stats[direct][q])
                    figs[f"{key}.litellm_share_{q}"] = f(share, "ms", "lower", 1.0, reference=True)
                    row[f"share_{q}"] = share
                row["direct"] = direct
        rows.append(row)
    return figs, {}, rows


def rank(rows: list[dict], variants: list[dict], correct: dict, key: str = "p95_ms") -> list[tuple[str, float]]:
    """Correct variants by the mean of `key` over their REST and /mcp cells at both concurrencies
    (lower is better); a variant with a wrong reply or a failed probe is not ranked."""
    out = []
    for v in variants:
        if not correct.get(v["name"], {}).get("ok"):
            continue
        mine = [r for r in rows if r["path"] in (f"{v['name']}.rest", f"{v['name']}.mcp")]
        if not mine or any(r["wrong"] for r in mine):
            continue
        out.append((v["name"], statistics.mean(r[key] for r in mine)))
    return sorted(out, key=lambda x: x[1])


def print_report(samples: dict, rows: list[dict], out=sys.stdout) -> None:
    p = samples["params"]
    print(f"\nLiteLLM path benchmark — LiteLLM {p.get('litellm_version', '?')}, server: mcp-testserver echo behind "
          f"`mcpctl bridge` (bearer auth on); {p['calls']} calls per cell, {p['rounds']} interleaved rounds, pooled", file=out)
    print("direct.*: straight to the bridge; <variant>.health: GET /health/liveliness (LiteLLM without MCP); "
          "<variant>.rest: /mcp-rest/tools/call; <variant>.mcp: LiteLLM's /mcp, one session per client; share = "
          "through LiteLLM minus direct (rest: a fresh session of the variant's transport; mcp: a warm session), ms; "
          "up sess|req/call: sessions and JSON-RPC requests that reached the bridge per call", file=out)
    for v in samples["variants"]:
        c = samples.get("correctness", {}).get(v["name"], {})
        extra = (f", protocol_version {v['protocol']}" if v.get("protocol") else "")
        print(f"  variant {v['name']}: transport {v['transport']}, --num_workers {v['workers']}{extra}; "
              f"start-up {c.get('startup_s', '?')} s; first call {c.get('first_call_ms', '?')} ms; "
              f"probes {'ok' if c.get('ok') else 'FAILED: ' + '; '.join(c.get('failures', []))}", file=out)
    hdr = (f"{'path':<22} {'conc':>4} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9} {'calls/s':>9} "
           f"{'share p50':>10} {'share p95':>10} {'wrong':>6} {'up sess/call':>12} {'up req/call':>11} "
           f"{'LiteLLM CPU ms/call':>19} {'bridge CPU ms/call':>18}")
    print("\n" + hdr, file=out)
    print("-" * len(hdr), file=out)
    order = {n: i for i, n in enumerate([*PATHS_DIRECT, *[f"{v['name']}.{e}" for v in samples['variants'] for e in PATHS_LITELLM]])}
    for r in sorted(rows, key=lambda r: (order.get(r["path"], 99), r["concurrency"])):
        sh = lambda k: f"{r[k]:.2f}" if k in r else "–"
        print(f"{r['path']:<22} {r['concurrency']:>4} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} {r['max_ms']:>9.1f} "
              f"{r['calls_per_s']:>9.1f} {sh('share_p50_ms'):>10} {sh('share_p95_ms'):>10} {r['wrong']:>6} "
              f"{r['sessions_per_call']:>12.2f} {r['requests_per_call']:>11.2f} "
              f"{r['litellm_cpu_ms'] if not r['path'].startswith('direct.') else float('nan'):>19.2f} "
              f"{r['bridge_cpu_ms']:>18.2f}", file=out)
    print(file=out)
    for key, what in (("litellm_cpu_ms", "LiteLLM CPU ms per call"), ("p50_ms", "p50"), ("p95_ms", "p95")):
        ranked = rank(rows, samples["variants"], samples.get("correctness", {}), key)
        if ranked:
            print(f"variants by mean {what} (REST and /mcp, c1 and c10; correct ones only): "
                  + ", ".join(f"{n} {v:.1f} ms" for n, v in ranked), file=out)


def result_doc(samples: dict) -> dict:
    """The benches/bench.py result (schema 1) of a samples document."""
    sys.path.insert(0, HERE)
    import bench  # benches/bench.py: standard library only

    figs, peers, _ = figures(samples)
    doc = bench.result("litellm", {}, peers, samples["params"])
    # When, at which revision and how busy: the run's, not this summary's.
    doc.update({k: v for k, v in samples.get("measured", {}).items() if k in ("created", "git_rev", "load_avg_1m")})
    doc["figures"] = figs
    for name, fg in figs.items():
        bench.check_figure(name, fg, "<this run>")
    return doc


def load_samples(path: str) -> dict:
    try:
        with open(path) as fh:
            s = json.load(fh)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file")
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: not readable as JSON ({e})")
    if not isinstance(s, dict) or s.get("schema") != SAMPLES_SCHEMA or s.get("kind") != "litellm-samples":
        raise UsageError(f"{path}: not a samples file of benches/litellm.py (schema {SAMPLES_SCHEMA})")
    if not isinstance(s.get("variants"), list) or not isinstance(s.get("cells"), dict) or not s["cells"]:
        raise UsageError(f"{path}: no variants or no cells")
    names = {v.get("name") for v in s["variants"] if isinstance(v, dict)}
    for key, c in s["cells"].items():
        path_part, _, conc = key.rpartition(".c")
        head = path_part.split(".", 1)[0]
        if not conc.isdigit() or (head != "direct" and head not in names):
            raise UsageError(f"{path}: cell {key!r} is not <path>.c<concurrency> of a known variant")
        ms = c.get("ms") if isinstance(c, dict) else None
        if (not isinstance(ms, list) or not ms or not all(isinstance(x, (int, float)) and x >= 0 for x in ms)
                or not isinstance(c.get("wall_s"), list) or not isinstance(c.get("wrong"), int)):
            raise UsageError(f"{path}: cell {key!r} needs ms (non-empty list of numbers), wall_s and wrong")
    if not isinstance(s.get("params"), dict):
        raise UsageError(f"{path}: no params")
    return s


def write_json(doc: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- MCP clients (stdlib, bounded)


def call_msg(i: int, name: str, text: str) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": {"text": text}}}


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench-litellm", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def result_text(msg) -> str | None:
    try:
        if msg["result"].get("isError"):
            return None
        return "".join(c["text"] for c in msg["result"]["content"] if c.get("type") == "text")
    except (KeyError, TypeError, AttributeError):
        return None


def connect(port: int, timeout: float) -> http.client.HTTPConnection:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.connect()
    c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def read_body(r: http.client.HTTPResponse) -> bytes:
    body = r.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise RuntimeError(f"reply over {MAX_BODY} bytes")
    return body


def parse_reply(r: http.client.HTTPResponse, body: bytes, want_id) -> dict | None:
    if (r.getheader("content-type") or "").startswith("text/event-stream"):
        for line in body.split(b"\n"):
            if line.startswith(b"data:"):
                m = json.loads(line[5:])
                if m.get("id") == want_id and ("result" in m or "error" in m):
                    return m
        raise RuntimeError("no reply in the SSE response")
    return json.loads(body) if body else None


class StreamableSession:
    """A Streamable HTTP session on one keep-alive connection (Accept: JSON or SSE, as SDKs send)."""

    def __init__(self, port: int, auth: str, path: str = "/mcp", timeout: float = 60):
        self.port, self.path, self.timeout = port, path, timeout
        self.conn = connect(port, timeout)
        self.auth = {"authorization": auth}
        self.sid = None
        init = self.post(INIT)
        if not init or "result" not in init:
            raise RuntimeError(f"initialize failed: {init}")
        self.post(INITIALIZED)

    def headers(self) -> dict:
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **self.auth}
        if self.sid:
            h["mcp-session-id"] = self.sid
            h["mcp-protocol-version"] = PROTOCOL
        return h

    def post(self, msg: dict, conn: http.client.HTTPConnection | None = None):
        c = conn or self.conn
        c.request("POST", self.path, json.dumps(msg), self.headers())
        r = c.getresponse()
        body = read_body(r)
        self.sid = r.getheader("mcp-session-id") or self.sid
        if r.status == 202:
            return None
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
        return parse_reply(r, body, msg.get("id"))

    def close(self):
        try:
            if self.sid:
                self.conn.request("DELETE", self.path, headers=self.headers())
                read_body(self.conn.getresponse())
        finally:
            self.conn.close()


def fresh_http_call(port: int, auth: str, text: str) -> str | None:
    """connect + initialize + initialized + tools/call + DELETE + close."""
    s = StreamableSession(port, auth)
    try:
        return result_text(s.post(call_msg(1, TOOL, text)))
    finally:
        s.close()


def fresh_sse_call(port: int, auth: str, text: str, timeout: float = 60) -> str | None:
    """Legacy HTTP+SSE: GET /sse, read the endpoint event, POST initialize / initialized /
    tools/call to it, read the replies from the stream, close."""
    stream = connect(port, timeout)
    post = connect(port, timeout)
    try:
        stream.request("GET", "/sse", headers={"accept": "text/event-stream", "authorization": auth})
        r = stream.getresponse()
        if r.status != 200:
            raise RuntimeError(f"GET /sse: HTTP {r.status}")
        budget = [MAX_BODY]

        def event() -> tuple[str, str]:
            name, data = "message", []
            while True:
                line = r.readline(65536)
                budget[0] -= len(line)
                if not line or budget[0] < 0:
                    raise RuntimeError("SSE stream ended (or exceeded its budget)")
                line = line.rstrip(b"\r\n")
                if not line:
                    if data:
                        return name, "\n".join(data)
                    continue
                if line.startswith(b"event:"):
                    name = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    data.append(line[5:].strip().decode())

        name, endpoint = event()
        if name != "endpoint":
            raise RuntimeError(f"first SSE event {name!r}, not endpoint")

        def send(msg: dict):
            post.request("POST", endpoint, json.dumps(msg), {"content-type": "application/json", "authorization": auth})
            pr = post.getresponse()
            read_body(pr)
            if pr.status not in (200, 202):
                raise RuntimeError(f"POST {endpoint}: HTTP {pr.status}")

        def reply(want_id) -> dict:
            while True:
                name, data = event()
                if name == "message":
                    m = json.loads(data)
                    if m.get("id") == want_id:
                        return m

        send(INIT)
        reply(0)
        send(INITIALIZED)
        send(call_msg(1, TOOL, text))
        return result_text(reply(1))
    finally:
        stream.close()
        post.close()


class RestClient:
    """LiteLLM's POST /mcp-rest/tools/call on one keep-alive connection."""

    def __init__(self, port: int, key: str, timeout: float = 60):
        self.conn = connect(port, timeout)
        self.h = {"content-type": "application/json", "authorization": f"Bearer {key}"}

    def call(self, tool: str, text: str, server: str = SERVICE) -> tuple[int, dict | None]:
        self.conn.request("POST", "/mcp-rest/tools/call",
                          json.dumps({"server_id": server, "name": tool, "arguments": {"text": text}}), self.h)
        r = self.conn.getresponse()
        body = read_body(r)
        try:
            return r.status, json.loads(body)
        except json.JSONDecodeError:
            return r.status, None

    def echo(self, text: str) -> str | None:
        status, doc = self.call(TOOL, text)
        if status != 200 or not isinstance(doc, dict) or doc.get("isError"):
            return None
        return "".join(c.get("text", "") for c in doc.get("content", []) if isinstance(c, dict))

    def close(self):
        self.conn.close()


# ---------------------------------------------------------------- processes


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def bridge_counts(port: int) -> dict:
    """The bridge's session and request counters (its /metrics, no auth): what reached it."""
    c = connect(port, 10)
    try:
        c.request("GET", "/metrics")
        text = read_body(c.getresponse()).decode(errors="replace")
    finally:
        c.close()
    out = {"sessions": 0.0, "requests": 0.0}
    for line in text.splitlines():
        if line.startswith("mcp_bridge_sessions_opened_total{"):
            out["sessions"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("mcp_bridge_requests_total{"):
            out["requests"] += float(line.rsplit(" ", 1)[1])
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants (LiteLLM's
    uvicorn workers; the bridge's server child). Time spent waiting for a CPU is not in it, so it
    compares configurations on a busy machine where wall-clock latency cannot."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo and len(seen) < 256:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def log_tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "\n".join(fh.read().splitlines()[-n:])
    except OSError:
        return ""


class Proc:
    def __init__(self, cmd: list[str], log: str, env: dict | None = None):
        self.log = log
        with open(log, "wb") as err:
            self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                                      start_new_session=True)

    def check(self, what: str):
        if self.p.poll() is not None:
            raise RuntimeError(f"{what} exited with {self.p.returncode}; last log lines ({self.log}):\n{log_tail(self.log)}")

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                pass


def wait_until(what: str, ok, proc: Proc, within: float) -> float:
    t0 = time.monotonic()
    while True:
        proc.check(what)
        try:
            if ok():
                return time.monotonic() - t0
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            pass
        if time.monotonic() - t0 > within:
            raise RuntimeError(f"{what} not ready after {within:.0f} s; last log lines ({proc.log}):\n{log_tail(proc.log)}")
        time.sleep(0.25)


def manifest(transport: str, port: int) -> str:
    """The manifest whose rendered LiteLLM config is measured: one service `alpha` (the test
    server behind a bridge on the host), LiteLLM on the host network, default (bearer) auth.
    Nothing is deployed from it: the bridge runs on the host at `port`."""
    return f"""version: 1
project: benchlitellm
bind_address: 127.0.0.1
bases:
  runtime: {{suite: bookworm, image: "mcpctl-bench/none:runtime"}}
litellm:
  network: host
  transport: {transport}
  master_key: {{from_env: BENCH_LITELLM_MASTER_KEY}}
services:
  {SERVICE}:
    description: echo test server
    port: {port}
    server:
      source: {{image: {{ref: "mcpctl-bench/none:runtime"}}}}
      command: [/usr/local/bin/mcp-testserver]
    health:
      expect_tools: {{include: [{TOOL}]}}
"""


def render(mcpctl: str, transport: str, port: int, work: str) -> str:
    d = os.path.join(work, f"render-{transport}")
    os.makedirs(d, exist_ok=True)
    mf = os.path.join(d, "services.yaml")
    with open(mf, "w") as fh:
        fh.write(manifest(transport, port))
    out = subprocess.run([mcpctl, "-f", mf, "--state-dir", os.path.join(d, "state"), "render", "--only", "litellm",
                          "--out", os.path.join(d, "out")], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"mcpctl render --only litellm failed ({out.returncode}): {out.stderr.strip()}")
    with open(os.path.join(d, "out", "litellm", "config.yaml")) as fh:
        return fh.read()


def apply_candidate(config: str, v: dict) -> str:
    """A candidate setting not (yet) rendered by mcpctl, added to each server entry."""
    if not v.get("protocol"):
        return config
    lines, out = config.splitlines(), []
    for line in lines:
        out.append(line)
        if line.startswith("    transport: "):
            out.append(f'    protocol_version: "{v["protocol"]}"')
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- measurement


def _worker(make_call, idx: int, n: int, barrier, q):
    """One client: set up (not timed), wait for the others, `n` calls, each timed and checked."""
    try:
        call, close = make_call(idx)
        barrier.wait(120)
        ms, wrong, err = [], 0, None
        for i in range(n):
            text = f"c{idx}-{i}-{uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            try:
                got = call(text)
            except Exception as e:  # a failed call counts as wrong, with its time
                got, err = None, err or repr(e)
            ms.append((time.perf_counter() - t0) * 1000)
            wrong += got != f"{text}|{NONCE[0]}"
        close()
        q.put((idx, ms, wrong, err))
    except Exception as e:
        q.put((idx, [], n, repr(e)))
        try:
            barrier.abort()
        except Exception:
            pass


NONCE = [""]


def run_cell(make_call, conc: int, n: int) -> tuple[list[float], float, int, str | None]:
    """`n` calls over `conc` concurrent clients (forked processes, so the Python client's GIL never
    queues one client behind another); latencies, wall time, wrong replies, first error."""
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(conc + 1)
    q = ctx.Queue()
    per = [n // conc + (1 if i < n % conc else 0) for i in range(conc)]
    procs = [ctx.Process(target=_worker, args=(make_call, i, per[i], barrier, q)) for i in range(conc)]
    for p in procs:
        p.start()
    try:
        barrier.wait(180)
    except Exception:
        pass
    t0 = time.perf_counter()
    results = [q.get(timeout=900) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    ms = [x for _, m, _, _ in results for x in m]
    errs = [e for _, _, _, e in results if e]
    return ms, wall, sum(w for _, _, w, _ in results), (errs[0] if errs else None)


def probes(port: int, key: str, variant: dict) -> dict:
    """Correctness of one LiteLLM variant (done once, before measuring)."""
    fails = []
    base = {"authorization": f"Bearer {key}"}
    c = connect(port, 60)
    try:
        c.request("GET", "/v1/mcp/tools", headers=base)
        r = c.getresponse()
        tools = [t.get("name") for t in json.loads(read_body(r)).get("tools", [])]
        if f"{SERVICE}-{TOOL}" not in tools:
            fails.append(f"/v1/mcp/tools lacks {SERVICE}-{TOOL} (got {tools[:5]})")
    except Exception as e:
        fails.append(f"/v1/mcp/tools: {e!r}")
    finally:
        c.close()
    rest = RestClient(port, key)
    try:
        t0 = time.perf_counter()
        got = rest.echo("probe")
        first_ms = (time.perf_counter() - t0) * 1000
        if got != f"probe|{NONCE[0]}":
            fails.append(f"REST echo returned {got!r}")
        status, doc = rest.call("no_such_tool", "x")
        unknown_rest = f"HTTP {status}" + (f", isError {doc.get('isError')}" if isinstance(doc, dict) and "isError" in doc else "")
    except Exception as e:
        fails.append(f"REST: {e!r}")
        first_ms, unknown_rest = None, "?"
    finally:
        rest.close()
    try:
        s = StreamableSession(port, f"Bearer {key}")
        try:
            got = result_text(s.post(call_msg(5, f"{SERVICE}-{TOOL}", "probe")))
            if got != f"probe|{NONCE[0]}":
                fails.append(f"/mcp echo returned {got!r}")
            bad = s.post(call_msg(6, f"{SERVICE}-no_such_tool", "x"))
            if not (isinstance(bad, dict) and (bad.get("result", {}).get("isError") is True or "error" in bad)):
                fails.append(f"/mcp unknown tool: no clean error ({str(bad)[:120]})")
            # The same session over fresh connections (clients with a connection pool do this; with
            # several LiteLLM workers a session lives in one process only).
            lost = 0
            for i in range(20):
                conn = connect(port, 60)
                try:
                    lost += result_text(s.post(call_msg(100 + i, f"{SERVICE}-{TOOL}", f"re{i}"), conn)) != f"re{i}|{NONCE[0]}"
                except RuntimeError:
                    lost += 1
                finally:
                    conn.close()
            if lost:
                fails.append(f"/mcp session over fresh connections: {lost}/20 calls failed")
        finally:
            s.close()
    except Exception as e:
        fails.append(f"/mcp: {e!r}")
    return {"ok": not fails, "failures": fails, "first_call_ms": round(first_ms, 1) if first_ms else None,
            "unknown_tool_rest": unknown_rest}


def litellm_version(bin_: str) -> str:
    py = os.path.join(os.path.dirname(bin_), "python")
    try:
        out = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def cmd_run(a) -> int:
    variants = parse_variants(a.variants)
    check_counts(a.calls, a.rounds)
    for p in (a.mcpctl, a.bridge, a.testserver, a.litellm):
        if not os.access(p, os.X_OK):
            raise UsageError(f"{p}: not an executable (scripts/bench-litellm builds mcpctl and mcp-testserver; "
                             f"LiteLLM's venv comes from scripts/cutover-venvs)")
    NONCE[0] = uuid.uuid4().hex[:10]
    # SIGTERM unwinds like Ctrl-C, so the bridge and the LiteLLMs (own sessions) are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    token = "mcp_" + secrets.token_hex(32)
    key = "sk-bench-" + secrets.token_hex(16)
    work = tempfile.mkdtemp(prefix="bench-litellm-")
    procs: list[Proc] = []
    try:
        auth_file = os.path.join(work, "auth.json")
        fd = os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"consumers": [{"name": "litellm", "sha256": hashlib.sha256(token.encode()).hexdigest()}]}, fh)
        bport = free_port()
        bridge = Proc([a.bridge, "bridge", "--listen", f"127.0.0.1:{bport}", "--auth-file", auth_file,
                       "--service", SERVICE, "--", a.testserver, "--nonce", NONCE[0]], os.path.join(work, "bridge.log"))
        procs.append(bridge)
        wait_until("the bridge", lambda: fresh_http_call(bport, f"Bearer {token}", "w") == f"w|{NONCE[0]}", bridge, 60)
        configs = {t: render(a.mcpctl, t, bport, work) for t in sorted({v["transport"] for v in variants})}
        env = dict(os.environ, BENCH_LITELLM_MASTER_KEY=key, MCPCTL_TOKEN_LITELLM=token,
                   LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MCP_CLIENT_TIMEOUT="30",
                   LITELLM_MCP_TOOL_LISTING_TIMEOUT="10", NO_PROXY="*")
        ports, correctness, t_start = {}, {}, {}
        for v in variants:  # started together: start-up is 7-44 s each
            cfg = apply_candidate(configs[v["transport"]], v)
            path = os.path.join(work, f"litellm-{v['name']}.yaml")
            with open(path, "w") as fh:
                fh.write(cfg)
            ports[v["name"]] = free_port()
            cmd = [a.litellm, "--config", path, "--host", "127.0.0.1", "--port", str(ports[v["name"]])]
            if v["workers"] > 1:
                # uvicorn (>= 0.37) kills a worker that has not answered its health check within
                # 5 s; LiteLLM's start-up takes longer than that on a busy 2-core machine, so the
                # workers would be restarted forever (measured): give them the start-up budget.
                cmd += ["--num_workers", str(v["workers"]), "--timeout_worker_healthcheck", str(int(a.startup_timeout))]
            procs.append(Proc(cmd, os.path.join(work, f"litellm-{v['name']}.log"), env))
            t_start[v["name"]] = time.monotonic()
        for v, lp in zip(variants, procs[1:]):
            port = ports[v["name"]]

            def alive(port=port):
                c = connect(port, 5)
                try:
                    c.request("GET", "/health/liveliness")
                    return c.getresponse().status == 200
                finally:
                    c.close()
            wait_until(f"LiteLLM {v['name']}", alive, lp, a.startup_timeout)
            startup = time.monotonic() - t_start[v["name"]]
            correctness[v["name"]] = {**probes(port, key, v), "startup_s": round(startup, 1)}
            print(f"variant {v['name']}: up in {startup:.1f} s, probes "
                  f"{'ok' if correctness[v['name']]['ok'] else correctness[v['name']]['failures']}", file=sys.stderr, flush=True)

        auth = f"Bearer {token}"

        def maker(path: str, conc_key: str):
            if path == "direct.fresh_http":
                return lambda idx: ((lambda text: fresh_http_call(bport, auth, text)), lambda: None)
            if path == "direct.fresh_sse":
                return lambda idx: ((lambda text: fresh_sse_call(bport, auth, text)), lambda: None)
            if path == "direct.warm":
                def mk(idx):
                    s = StreamableSession(bport, auth)
                    counter = [1000]

                    def call(text):
                        counter[0] += 1
                        return result_text(s.post(call_msg(counter[0], TOOL, text)))
                    return call, s.close
                return mk
            name, ep = path.split(".", 1)
            port = ports[name]
            if ep == "health":
                def mk(idx):
                    c = connect(port, 60)

                    def call(text):
                        c.request("GET", "/health/liveliness")
                        r = c.getresponse()
                        read_body(r)
                        return f"{text}|{NONCE[0]}" if r.status == 200 else None
                    return call, c.close
                return mk
            if ep == "rest":
                def mk(idx):
                    c = RestClient(port, key)
                    return c.echo, c.close
                return mk

            def mk(idx):
                s = StreamableSession(port, f"Bearer {key}")
                counter = [1000]

                def call(text):
                    counter[0] += 1
                    return result_text(s.post(call_msg(counter[0], f"{SERVICE}-{TOOL}", text)))
                return call, s.close
            return mk

        paths = [*PATHS_DIRECT, *[f"{v['name']}.{e}" for v in variants for e in PATHS_LITELLM]]
        cells = {f"{p}.c{c}": {"ms": [], "wall_s": [], "wrong": 0, "errors": [], "upstream_sessions": 0,
                               "upstream_requests": 0, "litellm_cpu_s": 0.0, "bridge_cpu_s": 0.0}
                 for p in paths for c in CONCURRENCY}
        pid_of = {v["name"]: lp.p.pid for v, lp in zip(variants, procs[1:])}
        per_round = a.calls // a.rounds
        t_run = time.monotonic()
        for r in range(a.rounds):
            keys = list(cells)
            order = keys[r % len(keys):] + keys[:r % len(keys)]  # rotate who goes first
            for k in order:
                p, conc = k.rsplit(".c", 1)
                n = per_round + (a.calls % a.rounds if r == a.rounds - 1 else 0)
                lpid = pid_of.get(p.split(".", 1)[0])
                before = bridge_counts(bport)
                cpu0 = (tree_cpu_s(lpid) if lpid else 0.0, tree_cpu_s(bridge.p.pid))
                ms, wall, wrong, err = run_cell(maker(p, k), int(conc), n)
                cpu1 = (tree_cpu_s(lpid) if lpid else 0.0, tree_cpu_s(bridge.p.pid))
                after = bridge_counts(bport)
                c = cells[k]
                c["litellm_cpu_s"] = round(c["litellm_cpu_s"] + cpu1[0] - cpu0[0], 3)
                c["bridge_cpu_s"] = round(c["bridge_cpu_s"] + cpu1[1] - cpu0[1], 3)
                # What reached the bridge (set-up of warm sessions included: a few per cell).
                c["upstream_sessions"] += int(after["sessions"] - before["sessions"])
                c["upstream_requests"] += int(after["requests"] - before["requests"])
                c["ms"] += [round(x, 3) for x in ms]
                c["wall_s"].append(round(wall, 4))
                c["wrong"] += wrong + (n - len(ms))
                if err:
                    c["errors"].append(err)
            print(f"round {r + 1}/{a.rounds} done ({time.monotonic() - t_run:.0f} s)", file=sys.stderr, flush=True)
        for v, lp in zip(variants, procs[1:]):
            lp.check(f"LiteLLM {v['name']}")
    finally:
        for p in reversed(procs):
            p.stop()
        if a.keep_work:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    for k, c in cells.items():
        if not c["ms"]:
            c["ms"] = [0.0]
    sys.path.insert(0, HERE)
    import bench  # benches/bench.py: standard library only

    measured = bench.result("litellm", {}, {}, {})
    samples = {"schema": SAMPLES_SCHEMA, "kind": "litellm-samples", "variants": variants, "correctness": correctness,
               "cells": cells,
               "measured": {k: measured[k] for k in ("created", "git_rev", "load_avg_1m")},
               "params": {"calls": a.calls, "rounds": a.rounds, "variants": a.variants, "tool": f"{SERVICE}/{TOOL}",
                          "litellm_version": litellm_version(a.litellm), "mcpctl": a.bridge,
                          "env": "LITELLM_MCP_CLIENT_TIMEOUT=30 LITELLM_MCP_TOOL_LISTING_TIMEOUT=10"}}
    if a.samples:
        write_json(samples, a.samples)
    return report(samples, a.json)


def report(samples: dict, json_out: str | None) -> int:
    _, _, rows = figures(samples)
    print_report(samples, rows)
    errs = {k: c.get("errors", []) for k, c in samples["cells"].items() if c.get("errors")}
    for k, e in errs.items():
        print(f"  {k}: {len(e)} client(s) failed, first: {e[0]}", file=sys.stderr)
    if json_out:
        write_json(result_doc(samples), json_out)
    wrong = sum(c["wrong"] for c in samples["cells"].values())
    bad = [n for n, c in samples.get("correctness", {}).items() if not c.get("ok")]
    if wrong:
        print(f"\n{wrong} wrong or failed replies (figures of those cells are not trustworthy)", file=sys.stderr)
    if bad:
        print(f"variants that failed their correctness probes: {', '.join(bad)}", file=sys.stderr)
    return 1 if wrong else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="start a bridge and LiteLLM variants, measure, print (and write) figures")
    p.add_argument("--mcpctl", required=True, help="the full mcpctl (for `render --only litellm`)")
    p.add_argument("--bridge", required=True, help="the mcpctl binary that runs `bridge` (what images carry)")
    p.add_argument("--testserver", required=True)
    p.add_argument("--litellm", required=True, help="LiteLLM's executable (its venv: scripts/cutover-venvs)")
    p.add_argument("--calls", type=int, default=200, help="calls per path and concurrency (default 200)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds the calls are split over (default 4)")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"default {DEFAULT_VARIANTS}")
    p.add_argument("--startup-timeout", type=float, default=180)
    p.add_argument("--json", default="", help="write the figures as a result file (benches/bench.py schema)")
    p.add_argument("--samples", default="", help="also write every latency (for `summarize`)")
    p.add_argument("--keep-work", action="store_true", help="keep the work directory (configs, logs)")
    p = sub.add_parser("summarize", help="print the figures of a samples file (and write its result file)")
    p.add_argument("samples")
    p.add_argument("--json", default="")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "run":
            return cmd_run(a)
        return report(load_samples(a.samples), a.json or None)
    except UsageError as e:
        print(f"bench-litellm: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
