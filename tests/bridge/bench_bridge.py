"""Benchmark: the same stdio echo server reached directly (the floor), through `mcpctl bridge`, and
through mcp-proxy 0.13, in interleaved rounds; prints medians over rounds. Run by
scripts/bench-bridge (which builds the binaries and the mcp-proxy venv). Not a test.

Clients are deliberately thin (stdlib sockets, one JSON-RPC message per request, the headers an MCP
SDK client sends), so the figures show the transports, not a client library. Every reply is
checked against the text the call sent and the server's nonce."""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid

PROTOCOL = "2025-06-18"
INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call_msg(i: int, text: str) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}


def reply_text(msg: dict) -> str | None:
    try:
        return "".join(c["text"] for c in msg["result"]["content"] if c.get("type") == "text")
    except (KeyError, TypeError):
        return None


class Stdio:
    """A client that owns its server process (what an MCP host does with a stdio server)."""

    def __init__(self, cmd: list[str]):
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
        self.out = self.p.stdout
        self.rpc(INIT)
        self.send(INITIALIZED)

    def send(self, msg: dict):
        self.p.stdin.write(json.dumps(msg).encode() + b"\n")

    def rpc(self, msg: dict) -> dict:
        self.send(msg)
        while True:
            line = self.out.readline()
            if not line:
                raise RuntimeError("server closed stdout")
            m = json.loads(line)
            if m.get("id") == msg["id"]:
                return m

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(2)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class Http:
    """Streamable HTTP (POST /mcp), one keep-alive connection, SDK-like Accept header (the server
    chooses JSON or an SSE stream for the reply; both are parsed)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sid = None
        self.rpc(INIT)
        self.post(INITIALIZED)

    def post(self, msg: dict):
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if self.sid:
            h["mcp-session-id"] = self.sid
            h["mcp-protocol-version"] = PROTOCOL
        self.conn.request("POST", "/mcp", json.dumps(msg), h)
        r = self.conn.getresponse()
        body = r.read()
        self.sid = r.getheader("mcp-session-id") or self.sid
        if r.status == 202 or not body:
            return None
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
        if (r.getheader("content-type") or "").startswith("text/event-stream"):
            for line in body.split(b"\n"):
                if line.startswith(b"data:"):
                    m = json.loads(line[5:])
                    if m.get("id") == msg.get("id") and ("result" in m or "error" in m):
                        return m
            raise RuntimeError("no reply in the SSE response")
        return json.loads(body)

    def rpc(self, msg: dict) -> dict:
        return self.post(msg)

    def close(self):
        if self.sid:
            self.conn.request("DELETE", "/mcp", headers={"mcp-session-id": self.sid, "mcp-protocol-version": PROTOCOL})
            self.conn.getresponse().read()
        self.conn.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Target:
    def __init__(self, name: str, server: list[str], nonce: str, kind: str, start: list[str] | None = None):
        self.name, self.server, self.nonce, self.kind = name, server, nonce, kind
        self.proc = None
        self.port = None
        if start is not None:
            self.port = free_port()
            cmd = [a.replace("{port}", str(self.port)) for a in start]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            wait_port(self.port, self.proc)
            # Ready means a call works (the bridge's child may still be starting).
            deadline = time.monotonic() + 30
            while True:
                try:
                    c = self.client()
                    assert reply_text(c.rpc(call_msg(1, "warm"))) == f"warm|{nonce}"
                    c.close()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def client(self):
        return Stdio(self.server) if self.kind == "stdio" else Http(self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def sequential(t: Target, n: int) -> tuple[list[float], int]:
    c = t.client()
    lat, wrong = [], 0
    for i in range(n):
        text = f"seq-{i}-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        r = c.rpc(call_msg(i + 10, text))
        lat.append(time.perf_counter() - t0)
        wrong += reply_text(r) != f"{text}|{t.nonce}"
    c.close()
    return lat, wrong


def _worker(t: Target, idx: int, calls: int, barrier, out):
    try:
        c = t.client()
        barrier.wait(60)
        wrong = 0
        for i in range(1, calls + 1):  # every session reuses ids 1..calls
            text = f"s{idx:02d}-{i}"
            wrong += reply_text(c.rpc(call_msg(i, text))) != f"{text}|{t.nonce}"
        c.close()
        out.put((idx, wrong, None))
    except Exception as e:  # counted as all wrong
        out.put((idx, calls, repr(e)))
        try:
            barrier.abort()
        except Exception:
            pass


def throughput(t: Target, sessions: int, calls: int) -> tuple[float, int, int]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(sessions + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(t, i, calls, barrier, out)) for i in range(sessions)]
    for p in procs:
        p.start()
    barrier.wait(120)
    t0 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(10)
    errors = [e for _, _, e in results if e]
    if errors:
        print(f"  {t.name}: {len(errors)} sessions failed, first: {errors[0]}", file=sys.stderr)
    peak = rss_kb(t.proc.pid) if t.proc else 0
    return sessions * calls / elapsed, sum(w for _, w, _ in results), peak


def litellm(t: Target, n: int) -> tuple[list[float], int]:
    """New session + initialize + one call + close, each time (what LiteLLM does per tool call)."""
    lat, wrong = [], 0
    for i in range(n):
        text = f"lite-{i}"
        t0 = time.perf_counter()
        c = t.client()
        r = c.rpc(call_msg(1, text))
        c.close()
        lat.append(time.perf_counter() - t0)
        wrong += reply_text(r) != f"{text}|{t.nonce}"
    return lat, wrong


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mcpctl", required=True)
    ap.add_argument("--testserver", required=True)
    ap.add_argument("--mcp-proxy", default="")
    ap.add_argument("--fastmcp-python", default="", help="python with mcp<2: use tests/bridge/fastmcp_server.py as the echo server")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq", type=int, default=300)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--lite", type=int, default=40)
    a = ap.parse_args()

    nonce = uuid.uuid4().hex[:10]
    if a.fastmcp_python:
        here = os.path.dirname(os.path.abspath(__file__))
        server = [a.fastmcp_python, os.path.join(here, "fastmcp_server.py"), nonce]
        server_name = "FastMCP echo (Python, mcp<2)"
    else:
        server = [a.testserver, "--nonce", nonce]
        server_name = "mcp-testserver echo (Rust)"
    targets = [Target("stdio direct", server, nonce, "stdio"),
               Target("mcpctl bridge", server, nonce, "http",
                      [a.mcpctl, "bridge", "--listen", "127.0.0.1:{port}", "--", *server])]
    if a.mcp_proxy:
        targets.append(Target("mcp-proxy 0.13", server, nonce, "http",
                              [a.mcp_proxy, "--port", "{port}", "--host", "127.0.0.1", "--", *server]))
    bridge = targets[1]
    idle_rss = rss_kb(bridge.proc.pid)
    res = {t.name: {"p50": [], "p95": [], "p99": [], "tput": [], "lite95": [], "wrong": 0, "peak": 0} for t in targets}
    try:
        for r in range(a.rounds):
            order = targets[r % len(targets):] + targets[:r % len(targets)]  # rotate who goes first
            for t in order:
                lat, w = sequential(t, a.seq)
                d = res[t.name]
                d["p50"].append(pct(lat, .50)); d["p95"].append(pct(lat, .95)); d["p99"].append(pct(lat, .99))
                d["wrong"] += w
            for t in order:
                tp, w, peak = throughput(t, a.sessions, a.calls)
                res[t.name]["tput"].append(tp); res[t.name]["wrong"] += w
                res[t.name]["peak"] = max(res[t.name]["peak"], peak)
            for t in order:
                lat, w = litellm(t, a.lite)
                res[t.name]["lite95"].append(pct(lat, .95)); res[t.name]["wrong"] += w
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        hwm = rss_kb(bridge.proc.pid, "VmHWM")
        proxy_rss = rss_kb(targets[2].proc.pid) if len(targets) > 2 else 0
    finally:
        for t in targets:
            t.stop()

    med = statistics.median
    ms = lambda x: f"{x * 1000:.2f}"
    print(f"\nmcpctl bridge benchmark — server: {server_name}; {a.rounds} interleaved rounds, medians over rounds")
    print(f"bridge binary: {a.mcpctl}; streamable HTTP, Accept: application/json, text/event-stream; stdlib clients")
    print(f"sequential: {a.seq} calls/round; throughput: {a.sessions} sessions x {a.calls} calls (ids reused per session); "
          f"LiteLLM pattern: {a.lite} x (connect + initialize + initialized + call + DELETE)/round\n")
    hdr = f"{'target':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'LiteLLM p95 ms':>15} {'wrong':>6} {'RSS MB':>7}"
    print(hdr)
    print("-" * len(hdr))
    for t in targets:
        d = res[t.name]
        rss = "" if t.kind == "stdio" else f"{(d['peak'] or 0) / 1024:.1f}"
        print(f"{t.name:<16} {ms(med(d['p50'])):>8} {ms(med(d['p95'])):>8} {ms(med(d['p99'])):>8} {med(d['tput']):>9.0f} "
              f"{ms(med(d['lite95'])):>15} {d['wrong']:>6} {rss:>7}")
    floor, br = res["stdio direct"], res["mcpctl bridge"]
    print("\ntargets (bridge):")
    checks = [
        (f"p50 {ms(med(br['p50']))} ms <= floor {ms(med(floor['p50']))} + 0.5 ms", med(br["p50"]) <= med(floor["p50"]) + 0.0005),
        (f"LiteLLM pattern p95 {ms(med(br['lite95']))} ms <= floor + 10 ms, floor = one warm stdio call p95 "
         f"{ms(med(floor['p95']))} ms (strict reading)",
         med(br["lite95"]) <= med(floor["p95"]) + 0.010),
        (f"LiteLLM pattern p95 {ms(med(br['lite95']))} ms <= floor + 10 ms, floor = the same pattern over stdio "
         f"(spawn + initialize + call + exit) p95 {ms(med(floor['lite95']))} ms",
         med(br["lite95"]) <= med(floor["lite95"]) + 0.010),
        (f"own RSS {idle_rss / 1024:.1f} MB idle, {br['peak'] / 1024:.1f} MB after 20 sessions, peak (VmHWM) {hwm / 1024:.1f} MB <= 10 MB",
         hwm <= 10 * 1024),
        (f"wrong replies {sum(d['wrong'] for d in res.values())} == 0", all(d["wrong"] == 0 for d in res.values())),
    ]
    if len(targets) > 2:
        px = res["mcp-proxy 0.13"]
        checks.insert(1, (f"throughput {med(br['tput']):.0f} calls/s >= 2 x mcp-proxy {med(px['tput']):.0f}",
                          med(br["tput"]) >= 2 * med(px["tput"])))
        print(f"  (mcp-proxy RSS at the end: {proxy_rss / 1024:.1f} MB, its own process only)")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")


if __name__ == "__main__":
    main()
