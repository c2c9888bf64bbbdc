"""Fixtures for the bridge tests: start `mcpctl bridge` around `mcp-testserver`, wait on conditions
with deadlines (never sleep as synchronisation), and kill every process started.

Binaries come from MCPCTL_BIN and MCP_TESTSERVER_BIN (scripts/bridge-tests sets both)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

MCPCTL = os.environ.get("MCPCTL_BIN", "target/debug/mcpctl")
TESTSERVER = os.environ.get("MCP_TESTSERVER_BIN", "target/debug/mcp-testserver")


def wait_until(cond, timeout: float, what: str, interval: float = 0.02):
    """Poll `cond` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Bridge:
    def __init__(self, tmp: Path, bridge_args: list[str], server_args: list[str] | None, command: list[str] | None,
                 extra_env: dict | None = None):
        self.nonce = uuid.uuid4().hex[:12]
        self.tmp = tmp
        self.spawn_log = tmp / f"spawns-{self.nonce}.log"
        self.log_path = tmp / f"bridge-{self.nonce}.log"
        if command is None:
            command = [TESTSERVER, "--nonce", self.nonce, "--spawn-log", str(self.spawn_log), *(server_args or [])]
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, MCPCTL_LOG=os.environ.get("MCPCTL_TEST_LOG", "info"))
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [MCPCTL, "bridge", "--listen", "127.0.0.1:0", *bridge_args, "--", *command],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env,
            start_new_session=True,
        )
        # Plain (`bridge listening addr=…`) or JSON (`"addr":"…"`, MCPCTL_LOG_FORMAT=json) logs.
        listening = re.compile(rb'(?:bridge listening addr=|"addr":")127\.0\.0\.1:(\d+)')
        m = wait_until(lambda: listening.search(self.log_path.read_bytes()) or self.proc.poll() is not None, 10, "bridge to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"bridge exited early: {self.log_text()}")
        self.port = int(m.group(1))
        self.base = f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def all_spawned_pids(self) -> list[int]:
        """Every process that ran the server command: children and era-probe siblings."""
        if not self.spawn_log.exists():
            return []
        return [int(x) for x in self.spawn_log.read_text().split()]

    def probe_pids(self) -> list[int]:
        """The era-probe siblings (`--child-era auto`: the same command started once more to be
        asked `server/discover`), from the bridge's "child era decided" log lines."""
        return [int(x) for x in re.findall(r'probe_pid[=":]+(\d+)', self.log_text())]

    def spawned_pids(self) -> list[int]:
        """The children (probe siblings left out: the era is decided before the child is ready)."""
        probes = set(self.probe_pids())
        return [p for p in self.all_spawned_pids() if p not in probes]

    def readyz(self) -> tuple[int, dict]:
        r = httpx.get(self.base + "/readyz", timeout=10)
        return r.status_code, r.json()

    def wait_ready(self, timeout: float = 10):
        wait_until(lambda: self.readyz()[0] == 200, timeout, "bridge /readyz 200")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for pid in self.all_spawned_pids():
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.log.close()


@pytest.fixture
def bridge_factory(tmp_path):
    started: list[Bridge] = []

    def start(*bridge_args: str, server_args: list[str] | None = None, command: list[str] | None = None, ready: bool = True,
              env: dict | None = None) -> Bridge:
        b = Bridge(tmp_path, list(bridge_args), server_args, command, env)
        started.append(b)
        if ready:
            b.wait_ready()
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def bridge(bridge_factory) -> Bridge:
    return bridge_factory()


class IdleProxy:
    """A TCP proxy that drops a connection when no byte crossed it for `idle` seconds, like the
    load balancers and reverse proxies that keepalive comments exist for."""

    def __init__(self, target_port: int, idle: float):
        self.target_port = target_port
        self.idle = idle
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        self.closed = False
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.socks += [client, upstream]
            state = {"last": time.monotonic(), "done": False}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, state), daemon=True).start()
            threading.Thread(target=self._watch, args=(client, upstream, state), daemon=True).start()

    def _pump(self, src, dst, state):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                state["last"] = time.monotonic()
                dst.sendall(data)
        except OSError:
            pass
        state["done"] = True
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _watch(self, client, upstream, state):
        while not state["done"] and not self.closed:
            if time.monotonic() - state["last"] > self.idle:
                self.dropped += 1
                for s in (client, upstream):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            time.sleep(0.1)

    def close(self):
        self.closed = True
        self.listener.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture
def idle_proxy():
    proxies = []

    def make(port: int, idle: float) -> IdleProxy:
        p = IdleProxy(port, idle)
        proxies.append(p)
        return p

    yield make
    for p in proxies:
        p.close()


def post_json(url: str, body, headers: dict | None = None, timeout: float = 10) -> httpx.Response:
    h = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    h.update(headers or {})
    return httpx.post(url, content=json.dumps(body), headers=h, timeout=timeout)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
