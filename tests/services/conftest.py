"""Service tests (issue 8): each off-the-shelf MCP server built OFFLINE into its image and proven by
the official MCP Python SDK client through the bridge in its container.

What a session does, once:
  1. `mcpctl bases build` for the bases these services use (cached by recipe hash);
  2. `mcpctl vendor` for each service (cached by lock hash, under $MCPCTL_CACHE);
  3. `mcpctl render --only dockerfiles`.
Each service test then builds its image with `docker build --network none` from the rendered
Dockerfile + the mcpctl binary + the vendored directory, runs it hardened (read-only root, no
capabilities, no-new-privileges, the manifest's limits, port on 127.0.0.1), and checks tools/list and
the manifest's smoke steps, plus the service's own properties. Everything created carries the
label com.mcp.project=<unique run name> and is removed at the end. A measurement table (image size,
build time, start-up time, idle memory) is printed at the end of the run.

Until `mcpctl deploy` lands (issue 6) containers are started here with the docker CLI; the flags
mirror the compose export's hardening.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MCPCTL = Path(os.environ.get("MCPCTL_BIN", ROOT / "target/debug/mcpctl"))
CACHE = Path(os.environ.get("MCPCTL_CACHE", "/var/cache/mcpctl"))
# Vendored packages are keyed by lock hash, so a cache-wide state dir is safe to share across runs.
STATE = CACHE / "service-tests-state"
RUN = "tsvc" + secrets.token_hex(4)
LABEL = f"com.mcp.project={RUN}"
BASES = ["python311", "python313", "node22", "postgresql"]
SERVICES = ["filesystem", "fetch", "postgres", "github", "n8n"]

MEASUREMENTS: list[dict] = []


def sh(*args, check=True, timeout=900, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def mcpctl(*args, **kw):
    return sh(MCPCTL, "-f", ROOT / "services.yaml", "--state-dir", STATE, *args, **kw)


def wait_for(what: str, timeout: float, f):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


@dataclass
class Prepared:
    manifest: dict
    rendered: Path
    vendor: dict[str, Path]
    workdir: Path
    images: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def prepared():
    assert MCPCTL.exists(), f"{MCPCTL} is missing: run `cargo build` first"
    sh("docker", "info", timeout=30)
    # Bases (chroot apt) and vendoring (pip/npm on the host) are independent: run them together.
    t0 = time.monotonic()
    common = [MCPCTL, "-f", ROOT / "services.yaml", "--state-dir", STATE]
    procs = {
        "bases": subprocess.Popen([str(a) for a in common + ["bases", "build", *BASES]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "vendor": subprocess.Popen([str(a) for a in common + ["--output", "json", "vendor", *SERVICES]],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    outs = {}
    for what, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=1800)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, f"mcpctl {what} failed ({proc.returncode}):\n{out}\n{err}"
        outs[what] = out
        print(f"\n[service-tests] {what} ready after {time.monotonic() - t0:.0f} s")
    vendor = {v["service"]: Path(v["dir"]) for v in json.loads(outs["vendor"])["vendored"]}
    work = Path(tempfile.mkdtemp(prefix=f"{RUN}-"))
    rendered = work / "rendered"
    mcpctl("render", "--out", rendered, "--only", "dockerfiles")
    manifest = yaml.safe_load((ROOT / "services.yaml").read_text())
    p = Prepared(manifest=manifest, rendered=rendered, vendor=vendor, workdir=work)
    try:
        yield p
    finally:
        cleanup(p)


def cleanup(p: Prepared):
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        sh("docker", "rm", "-f", "-v", *ids, check=False)
    nets = sh("docker", "network", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if nets:
        sh("docker", "network", "rm", *nets, check=False)
    for img in p.images:
        sh("docker", "rmi", img, check=False)
    shutil.rmtree(p.workdir, ignore_errors=True)


def service(p: Prepared, name: str) -> dict:
    return p.manifest["services"][name]


def build_image(p: Prepared, name: str) -> tuple[str, float]:
    """Builds `name` from its rendered Dockerfile with NO network; returns (tag, seconds)."""
    ctx = p.workdir / f"ctx-{name}"
    shutil.copytree(p.rendered / "services" / name, ctx)
    shutil.copy2(MCPCTL, ctx / "mcpctl")
    if name in p.vendor:
        # symlinks=True: node_modules/.bin entries stay links (their targets resolve their imports).
        shutil.copytree(p.vendor[name], ctx / "vendor", symlinks=True)
    tag = f"mcpctl-svctest/{name}:{RUN}"
    t0 = time.monotonic()
    sh("docker", "build", "--quiet", "--network", "none", "--label", LABEL, "-t", tag, ctx, timeout=900)
    secs = time.monotonic() - t0
    p.images.append(tag)
    if name != "db":  # the database runs as the base's `postgres` account
        user = sh("docker", "image", "inspect", "-f", "{{.Config.User}}", tag).stdout.strip()
        assert user == "10001:10001", f"{name}: image runs as {user!r}, not uid 10001"
    return tag, secs


def secret_file(p: Prepared, name: str, value: str) -> list[str]:
    """Docker flags mounting a secret the way deploy does: a 0400 file owned by uid 10001 at
    /run/secrets/<NAME>; the bridge exports it to the server's environment (never `docker run -e`)."""
    d = p.workdir / "secrets" / secrets.token_hex(4)
    d.mkdir(parents=True)
    f = d / name
    f.write_text(value)
    os.chown(f, 10001, 10001)
    f.chmod(0o400)
    return ["-v", f"{f}:/run/secrets/{name}:ro"]


def image_size(tag: str) -> int:
    return int(sh("docker", "image", "inspect", "-f", "{{.Size}}", tag).stdout.strip())


def network(p: Prepared, suffix: str) -> str:
    name = f"{RUN}-{suffix}"
    sh("docker", "network", "create", "--label", LABEL, "--label", "com.mcp.managed=true", name)
    return name


def hardened(svc: dict) -> list[str]:
    """The runtime flags the compose export and deploy use: read-only root (writable /tmp), no
    capabilities, no-new-privileges, the manifest's limits, the port on loopback only."""
    limits = svc.get("limits", {})
    flags = [
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--pids-limit", str(limits.get("pids", 256)),
        "--memory", str(limits.get("memory", "256m")),
        "--cpus", str(limits.get("cpus", 0.5)),
    ]
    if svc.get("read_only_root", True):
        flags += ["--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m"]
    if "shm_size" in limits:
        flags += ["--shm-size", str(limits["shm_size"])]
    return flags


def run(name: str, image: str, *args: str, cmd: list[str] | None = None) -> str:
    """Starts a labelled container; returns its name."""
    cname = f"{RUN}-{name}"
    sh(
        "docker", "run", "-d", "--name", cname,
        "--label", LABEL, "--label", "com.mcp.managed=true", "--label", "com.mcp.role=test",
        *args, image, *(cmd or []),
    )
    return cname


def host_port(cname: str, port: int = 8080) -> int:
    out = sh("docker", "port", cname, f"{port}/tcp").stdout.strip().splitlines()[0]
    assert out.startswith("127.0.0.1:"), f"published on {out}, not loopback"
    return int(out.rsplit(":", 1)[1])


def logs(cname: str) -> str:
    p = sh("docker", "logs", "--tail", "60", cname, check=False)
    return p.stdout + p.stderr


def wait_ready(cname: str, port: int, timeout: float = 90) -> float:
    """Polls the bridge's /readyz (child started and its MCP handshake done); returns seconds."""
    t0 = time.monotonic()

    def ready():
        state = sh("docker", "inspect", "-f", "{{.State.Running}}", cname).stdout.strip()
        if state != "true":
            raise AssertionError(f"{cname} exited:\n{logs(cname)}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return r.status == 200

    try:
        wait_for(f"{cname} /readyz", timeout, ready)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- logs of {cname}:\n{logs(cname)}") from None
    return time.monotonic() - t0


def memory_used(cname: str) -> str:
    """`docker stats` memory (usage minus inactive file cache, as docs/contracts.md defines it)."""
    return sh("docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cname).stdout.split("/")[0].strip()


def start_service(p: Prepared, name: str, image: str, *extra: str, cmd: list[str] | None = None,
                  suffix: str | None = None) -> tuple[str, int, float]:
    """Runs a service image hardened with its port on 127.0.0.1; returns (container, port, start s)."""
    svc = service(p, name)
    env = []
    for k, v in (svc.get("env") or {}).items():
        env += ["-e", f"{k}={v}"]
    cname = run(suffix or name, image, "-p", "127.0.0.1::8080", *hardened(svc), *env, *extra, cmd=cmd)
    port = host_port(cname)
    secs = wait_ready(cname, port)
    return cname, port, secs


def measure(name: str, image: str, build_s: float, start_s: float, cname: str, tools: int):
    MEASUREMENTS.append(
        {
            "service": name,
            "image MB": f"{image_size(image) / 1e6:.0f}",
            "build s": f"{build_s:.1f}",
            "start s": f"{start_s:.1f}",
            "idle memory": memory_used(cname),
            "tools": str(tools),
        }
    )


# --- the MCP client ----------------------------------------------------------------------------

async def _with_session(url: str, fn, roots: list[str] | None = None):
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    kwargs = {}
    if roots is not None:
        import mcp.types as types
        from pydantic import FileUrl

        async def list_roots(_ctx):
            return types.ListRootsResult(roots=[types.Root(uri=FileUrl(r)) for r in roots])

        kwargs["list_roots_callback"] = list_roots
    async with sse_client(url, timeout=10, sse_read_timeout=120) as (r, w):
        async with ClientSession(r, w, **kwargs) as s:
            await s.initialize()
            return await fn(s)


def mcp_call(port: int, fn, roots: list[str] | None = None, timeout: float = 120):
    """Runs `fn(session)` in an initialized MCP session over the bridge's legacy SSE endpoint."""
    return asyncio.run(asyncio.wait_for(_with_session(f"http://127.0.0.1:{port}/sse", fn, roots), timeout))


def text_of(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def check_tools_and_smoke(p: Prepared, name: str, port: int, svc: dict | None = None) -> list[str]:
    """tools/list ⊇ the manifest's expectation, and every smoke step's expectation holds."""
    svc = svc or service(p, name)
    health = svc.get("health", {})
    expect = health.get("expect_tools", {})

    async def go(s):
        tools = [t.name for t in (await s.list_tools()).tools]
        results = []
        for step in health.get("smoke", []):
            results.append((step, await s.call_tool(step["tool"], step.get("args") or {})))
        return tools, results

    tools, results = mcp_call(port, go)
    missing = set(expect.get("include", [])) - set(tools)
    assert not missing, f"{name}: tools/list lacks {sorted(missing)}; it has {tools}"
    assert len(tools) >= expect.get("min", 0), f"{name}: {len(tools)} tools < min {expect.get('min')}: {tools}"
    for step, r in results:
        exp = step.get("expect", {})
        body = text_of(r)
        if "is_error" in exp:
            assert bool(r.isError) == exp["is_error"], f"{name} smoke {step['tool']}: isError={r.isError}: {body[:500]}"
        if "contains" in exp:
            assert exp["contains"] in body, f"{name} smoke {step['tool']}: {exp['contains']!r} not in {body[:500]}"
    return tools


def pytest_terminal_summary(terminalreporter):
    if not MEASUREMENTS:
        return
    cols = ["service", "image MB", "build s", "start s", "idle memory", "tools"]
    widths = {c: max(len(c), *(len(m[c]) for m in MEASUREMENTS)) for c in cols}
    tr = terminalreporter
    tr.write_sep("=", "service measurements (offline build, hardened container, through the bridge)")
    tr.write_line("  ".join(c.ljust(widths[c]) for c in cols))
    for m in MEASUREMENTS:
        tr.write_line("  ".join(m[c].ljust(widths[c]) for c in cols))
    out = os.environ.get("MCPCTL_SERVICE_TABLE")
    if out:
        Path(out).write_text(json.dumps(MEASUREMENTS, indent=2))
