"""Benchmark: the same stdio echo server reached directly (the floor), through `mcpctl bridge`
(legacy sessions; 2026-07-28 stateless requests on the same bridge and warm child, "bridge
modern"; with `--auth-file` bearer tokens; with `--auth-file` JWT access tokens), and through
mcp-proxy 0.13, in interleaved rounds; prints medians over rounds, modern vs legacy, and the added
latency of auth per call. Run by scripts/bench-bridge (which builds the binaries and the mcp-proxy
venv; PyJWT and cryptography, for the JWT target, come with mcp in that venv). Not a test.

Clients are deliberately thin (stdlib sockets, one JSON-RPC message per request, the headers an MCP
SDK client sends), so the figures show the transports, not a client library. Every reply is
checked against the text the call sent and the server's nonce."""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
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
    chooses JSON or an SSE stream for the reply; both are parsed). `auth`: the `Authorization`
    value sent on every request (POSTs and the closing DELETE; this client opens no GET stream)."""

    def __init__(self, port: int, auth: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.auth = {"authorization": auth} if auth else {}
        self.sid = None
        self.rpc(INIT)
        self.post(INITIALIZED)

    def post(self, msg: dict):
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **self.auth}
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
            self.conn.request("DELETE", "/mcp", headers={"mcp-session-id": self.sid, "mcp-protocol-version": PROTOCOL,
                                                          **self.auth})
            self.conn.getresponse().read()
        self.conn.close()


MODERN = "2026-07-28"
MODERN_META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {},
               "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"}}


class Modern(Http):
    """A 2026-07-28 (stateless) client on one keep-alive connection: no initialize, no session;
    every request carries `_meta` (version, capabilities, client info) and the headers that mirror
    it (MCP-Protocol-Version, Mcp-Method, Mcp-Name), as an SDK client sends them."""

    def __init__(self, port: int, auth: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.auth = {"authorization": auth} if auth else {}
        self.sid = None

    def post(self, msg: dict):
        msg = {**msg, "params": {**msg.get("params", {}), "_meta": MODERN_META}}
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream", **self.auth,
             "mcp-protocol-version": MODERN, "mcp-method": msg["method"]}
        name = msg["params"].get("name")
        if name:
            h["mcp-name"] = name
        self.conn.request("POST", "/mcp", json.dumps(msg), h)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
        return json.loads(body)

    def close(self):
        self.conn.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def log_tail(path: str | None) -> str:
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "; stderr: " + " | ".join(f.read().strip().splitlines()[-5:])
    except OSError:
        return ""


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30, log: str | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}{log_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s{log_tail(log)}")


def init_status(port: int, auth: str | None) -> int:
    """The status of one `initialize` POST with this `Authorization` value (None: no header)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if auth is not None:
        h["authorization"] = auth
    try:
        conn.request("POST", "/mcp", json.dumps(INIT), h)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


JWT_ISSUER = "https://issuer.bench"
JWT_AUDIENCE = "mcp-bench"
JWT_KID = "bench-key-1"


def write_auth_file(path: str, doc: dict):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)


def consumer(name: str, token: str) -> dict:
    return {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest()}


def bearer_auth(directory: str) -> tuple[str, str]:
    """An auth file of 8 consumers (the bench's token last: the bridge compares every one
    anyway) and the bench's token."""
    token = secrets.token_urlsafe(32)
    others = [consumer(f"other{i}", secrets.token_urlsafe(32)) for i in range(1, 8)]
    path = os.path.join(directory, "auth-bearer.json")
    write_auth_file(path, {"consumers": [*others, consumer("bench", token)]})
    return path, token


def jwt_auth(directory: str, alg: str) -> tuple[str, str]:
    """An auth file with one bearer consumer (not the bench's) and an issuer whose JWKS is inline
    (`JwksSource` is externally tagged, snake_case: `{"inline": {...}}`), and an access token
    from that issuer: iss, aud, sub, iat, exp (+1 h), `kid` in the header."""
    import jwt  # PyJWT, with cryptography: in the mcp venv scripts/bench-bridge runs
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=JWT_KID, use="sig", alg=alg)
    now = int(time.time())
    token = jwt.encode({"iss": JWT_ISSUER, "aud": [JWT_AUDIENCE], "sub": "bench-agent", "iat": now, "exp": now + 3600},
                       key, algorithm=alg, headers={"kid": JWT_KID})
    path = os.path.join(directory, "auth-jwt.json")
    write_auth_file(path, {
        "consumers": [consumer("bench", secrets.token_urlsafe(32))],
        "jwt": {"issuer": JWT_ISSUER, "audience": [JWT_AUDIENCE], "jwks": {"inline": {"keys": [jwk]}},
                "required_scopes": [], "leeway_s": 30},
    })
    return path, token


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Target:
    """`token`: the bearer token every request carries (None: no Authorization header). `log`: a
    file for the server's stderr (its last lines explain a failed start), else /dev/null."""

    def __init__(self, name: str, server: list[str], nonce: str, kind: str, start: list[str] | None = None,
                 token: str | None = None, log: str | None = None, same_process_as: Target | None = None):
        self.name, self.server, self.nonce, self.kind = name, server, nonce, kind
        self.auth = f"Bearer {token}" if token else None
        self.proc = None
        self.port = None
        # Another era on a target that is already running (same bridge, same warm child): it is
        # stopped by its owner.
        self.owner = same_process_as is None
        if same_process_as is not None:
            self.proc, self.port = same_process_as.proc, same_process_as.port
        if start is not None:
            self.port = free_port()
            cmd = [a.replace("{port}", str(self.port)) for a in start]
            err = open(log, "wb") if log else subprocess.DEVNULL
            try:
                self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            finally:
                if log:
                    err.close()
            wait_port(self.port, self.proc, log=log)
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
            if self.auth:
                # Auth is really on: the figures must not come from a bridge that ignores the file.
                for bad in (None, "Bearer " + secrets.token_urlsafe(32)):
                    status = init_status(self.port, bad)
                    if status != 401:
                        raise RuntimeError(f"{name}: initialize with {'no' if bad is None else 'a wrong'} token "
                                           f"got HTTP {status}, not 401")

    def client(self):
        if self.kind == "stdio":
            return Stdio(self.server)
        return Modern(self.port, self.auth) if self.kind == "modern" else Http(self.port, self.auth)

    def stop(self):
        if self.owner and self.proc and self.proc.poll() is None:
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
    ap.add_argument("--jwt-alg", choices=["ES256", "RS256"], default="ES256",
                    help="signing algorithm of the bridge+jwt target's access token (ES256: P-256; RS256: 2048-bit RSA)")
    ap.add_argument("--no-auth", action="store_true", help="leave out the bridge+bearer and bridge+jwt targets")
    ap.add_argument("--json", default="", help="also write the figures as a result file (benches/bench.py schema)")
    a = ap.parse_args()

    nonce = uuid.uuid4().hex[:10]
    if a.fastmcp_python:
        here = os.path.dirname(os.path.abspath(__file__))
        server = [a.fastmcp_python, os.path.join(here, "fastmcp_server.py"), nonce]
        server_name = "FastMCP echo (Python, mcp<2)"
    else:
        server = [a.testserver, "--nonce", nonce]
        server_name = "mcp-testserver echo (Rust)"
    # Auth files and bridge stderr; removed at the end (the tokens never leave this directory).
    work = tempfile.TemporaryDirectory(prefix="bench-bridge-")
    bridge_cmd = [a.mcpctl, "bridge", "--listen", "127.0.0.1:{port}"]
    targets: list[Target] = []
    try:
        targets.append(Target("stdio direct", server, nonce, "stdio"))
        targets.append(Target("mcpctl bridge", server, nonce, "http", [*bridge_cmd, "--", *server],
                              log=os.path.join(work.name, "bridge.log")))
        # The same bridge and warm child, reached by 2026-07-28 (stateless) clients.
        targets.append(Target("bridge modern", server, nonce, "modern", same_process_as=targets[-1]))
        if not a.no_auth:
            path, token = bearer_auth(work.name)
            targets.append(Target("bridge+bearer", server, nonce, "http",
                                  [*bridge_cmd, "--auth-file", path, "--", *server], token=token,
                                  log=os.path.join(work.name, "bridge-bearer.log")))
            path, token = jwt_auth(work.name, a.jwt_alg)
            targets.append(Target("bridge+jwt", server, nonce, "http",
                                  [*bridge_cmd, "--auth-file", path, "--", *server], token=token,
                                  log=os.path.join(work.name, "bridge-jwt.log")))
        if a.mcp_proxy:
            targets.append(Target("mcp-proxy 0.13", server, nonce, "http",
                                  [a.mcp_proxy, "--port", "{port}", "--host", "127.0.0.1", "--", *server]))
    except BaseException:
        for t in targets:
            t.stop()
        work.cleanup()
        raise
    by_name = {t.name: t for t in targets}
    bridge = by_name["mcpctl bridge"]
    proxy = by_name.get("mcp-proxy 0.13")
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
        proxy_rss = rss_kb(proxy.proc.pid) if proxy else 0
    finally:
        for t in targets:
            t.stop()
        work.cleanup()

    med = statistics.median
    ms = lambda x: f"{x * 1000:.2f}"
    us = lambda x: f"{x * 1e6:+.0f}"
    print(f"\nmcpctl bridge benchmark — server: {server_name}; {a.rounds} interleaved rounds, medians over rounds")
    print(f"bridge binary: {a.mcpctl}; streamable HTTP, Accept: application/json, text/event-stream; stdlib clients")
    print(f"sequential: {a.seq} calls/round; throughput: {a.sessions} sessions x {a.calls} calls (ids reused per session); "
          f"LiteLLM pattern: {a.lite} x (connect + initialize + initialized + call + DELETE)/round; "
          f"bridge modern: 2026-07-28 requests (_meta + MCP-Protocol-Version/Mcp-Method/Mcp-Name, no session) "
          f"to the same bridge, its LiteLLM pattern is connect + call + close")
    if "bridge+bearer" in res:
        print("auth: Authorization: Bearer on every request; bridge+bearer: --auth-file with 8 consumers (SHA-256 "
              f"digests); bridge+jwt: --auth-file with 1 consumer + an inline JWKS, an access token signed with "
              f"{a.jwt_alg} (iss, aud, sub, exp, kid), the same token on every request (the bridge checks its signature once, then trusts it ≤ 60 s)")
    print()
    hdr = f"{'target':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'LiteLLM p95 ms':>15} {'wrong':>6} {'RSS MB':>7}"
    print(hdr)
    print("-" * len(hdr))
    for t in targets:
        d = res[t.name]
        rss = "" if t.kind == "stdio" else f"{(d['peak'] or 0) / 1024:.1f}"
        print(f"{t.name:<16} {ms(med(d['p50'])):>8} {ms(med(d['p95'])):>8} {ms(med(d['p99'])):>8} {med(d['tput']):>9.0f} "
              f"{ms(med(d['lite95'])):>15} {d['wrong']:>6} {rss:>7}")
    floor, br = res["stdio direct"], res["mcpctl bridge"]
    if "bridge+bearer" in res:
        be, jw = res["bridge+bearer"], res["bridge+jwt"]
        # Difference of the medians in the table; the per-round paired differences show the noise.
        print(f"\nauth overhead per call (p50): bearer {us(med(be['p50']) - med(br['p50']))} µs, "
              f"jwt {us(med(jw['p50']) - med(br['p50']))} µs vs the bridge without auth (medians over rounds)")
        per_round = lambda x: " ".join(us(v - b) for v, b in zip(x["p50"], br["p50"]))
        print(f"  per round (p50 minus the bridge's p50 of the same round, µs): bearer {per_round(be)}; jwt {per_round(jw)}")
        print(f"  p95: bearer {us(med(be['p95']) - med(br['p95']))} µs, jwt {us(med(jw['p95']) - med(br['p95']))} µs; "
              f"throughput: bearer {100 * (med(be['tput']) / med(br['tput']) - 1):+.1f} %, "
              f"jwt {100 * (med(jw['tput']) / med(br['tput']) - 1):+.1f} % vs the bridge without auth")
    mo = res["bridge modern"]
    print(f"\nmodern (2026-07-28, stateless) vs legacy (2025-06-18 session) on the same bridge and child: "
          f"p50 {ms(med(mo['p50']))} vs {ms(med(br['p50']))} ms ({us(med(mo['p50']) - med(br['p50']))} µs), "
          f"p95 {ms(med(mo['p95']))} vs {ms(med(br['p95']))} ms; throughput {med(mo['tput']):.0f} vs "
          f"{med(br['tput']):.0f} calls/s ({100 * (med(mo['tput']) / med(br['tput']) - 1):+.1f} %); new connection + "
          f"one call p95 {ms(med(mo['lite95']))} ms vs new session + initialize + call + DELETE {ms(med(br['lite95']))} ms")
    print("\ntargets (bridge):")
    checks = [
        (f"p50 {ms(med(br['p50']))} ms <= floor {ms(med(floor['p50']))} + 0.5 ms", med(br["p50"]) <= med(floor["p50"]) + 0.0005),
        (f"LiteLLM pattern p95 {ms(med(br['lite95']))} ms <= floor + 10 ms, floor = one warm stdio call p95 "
         f"{ms(med(floor['p95']))} ms (strict reading)",
         med(br["lite95"]) <= med(floor["p95"]) + 0.010),
        (f"LiteLLM pattern p95 {ms(med(br['lite95']))} ms <= floor + 10 ms, floor = the same pattern over stdio "
         f"(spawn + initialize + call + exit) p95 {ms(med(floor['lite95']))} ms",
         med(br["lite95"]) <= med(floor["lite95"]) + 0.010),
        (f"own RSS {idle_rss / 1024:.1f} MB idle, {br['peak'] / 1024:.1f} MB after {a.sessions} sessions, "
         f"peak (VmHWM) {hwm / 1024:.1f} MB <= 10 MB",
         hwm <= 10 * 1024),
        (f"wrong replies {sum(d['wrong'] for d in res.values())} == 0", all(d["wrong"] == 0 for d in res.values())),
        (f"modern p50 {ms(med(mo['p50']))} ms <= legacy p50 {ms(med(br['p50']))} + 0.5 ms (no stateless tax)",
         med(mo["p50"]) <= med(br["p50"]) + 0.0005),
    ]
    if proxy:
        px = res[proxy.name]
        checks.insert(1, (f"throughput {med(br['tput']):.0f} calls/s >= 2 x mcp-proxy {med(px['tput']):.0f}",
                          med(br["tput"]) >= 2 * med(px["tput"])))
        print(f"  (mcp-proxy RSS at the end: {proxy_rss / 1024:.1f} MB, its own process only)")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    if a.json:
        write_json(a, res, targets, server_name, idle_rss, hwm, proxy_rss)


# Figure names in the result file: the target's short name, a dot, the figure.
SLUG = {"stdio direct": "direct", "mcpctl bridge": "bridge", "bridge modern": "bridge_modern",
        "bridge+bearer": "bridge_bearer", "bridge+jwt": "bridge_jwt", "mcp-proxy 0.13": "mcp_proxy"}


def write_json(a, res, targets, server_name, idle_rss, hwm, proxy_rss):
    """The medians of the table as benches/bench.py result: latencies (ms, floor 0.05 ms: below
    that a ratio is scheduler noise), throughput, the LiteLLM pattern, RSS; every bridge figure
    has mcp-proxy's same figure as its peer when mcp-proxy ran."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benches"))
    import bench  # benches/bench.py: standard library only

    med = statistics.median
    figs, peers = {}, {}
    for t in targets:
        d, n = res[t.name], SLUG[t.name]
        ref = n == "direct"  # the stdio floor: the test server alone, shown for context
        for q in ("p50", "p95", "p99"):
            figs[f"{n}.{q}_ms"] = bench.fig(med(d[q]) * 1000, "ms", "lower", 0.05, ref)
        figs[f"{n}.calls_per_s"] = bench.fig(med(d["tput"]), "calls/s", "higher", 0, ref)
        figs[f"{n}.litellm_p95_ms"] = bench.fig(med(d["lite95"]) * 1000, "ms", "lower", 0.05, ref)
    figs["bridge.rss_idle_mb"] = bench.fig(idle_rss / 1024, "MB", "lower", 1.0)
    figs["bridge.rss_peak_mb"] = bench.fig(hwm / 1024, "MB", "lower", 1.0)
    if proxy_rss:
        figs["mcp_proxy.rss_mb"] = bench.fig(proxy_rss / 1024, "MB", "lower", 1.0, reference=True)
    if "mcp_proxy.p50_ms" in figs:
        for n in ("bridge", "bridge_modern", "bridge_bearer", "bridge_jwt"):
            for f in ("p50_ms", "p95_ms", "p99_ms", "calls_per_s", "litellm_p95_ms"):
                if f"{n}.{f}" in figs:
                    peers[f"{n}.{f}"] = f"mcp_proxy.{f}"
    params = {"server": server_name, "rounds": a.rounds, "seq": a.seq, "sessions": a.sessions,
              "calls": a.calls, "lite": a.lite, "jwt_alg": a.jwt_alg, "mcpctl": a.mcpctl}
    bench.write(bench.result("bridge", figs, peers, params), a.json)

if __name__ == "__main__":
    main()
