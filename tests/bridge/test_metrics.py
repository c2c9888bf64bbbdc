"""/metrics against docs/contracts.md "Metrics (bridge)", exact counts after a scripted workload,
`promtool check metrics`, and structured (JSON) logs carrying session and request ids."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx

from conftest import INIT, post_json, wait_until
from test_lifecycle import RawSse

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def contract():
    """name → (type, label names, {label: enumeration}, buckets) from the contract table."""
    text = CONTRACTS.read_text()
    section = text.split("## Metrics (bridge)", 1)[1]
    out = {}
    for line in section.splitlines()[3:]:
        if not line.startswith("|"):
            break
        names, kind, labels = [c.strip() for c in line.strip("|").split("|")]
        buckets = []
        if ";" in labels:
            labels, b = labels.split(";", 1)
            buckets = [float(x) for x in b.replace("buckets", "").split()]
        enums, label_names = {}, []
        if labels.strip() not in ("–", "-", ""):
            for m in re.finditer(r"(\w+)(?:\s*∈\s*\{([^}]*)\})?", labels):
                label_names.append(m.group(1))
                if m.group(2):
                    enums[m.group(1)] = [v.strip() for v in m.group(2).split(",")]
        kind = kind.split()[0]
        for name in names.split(","):
            out[name.strip()] = (kind, set(label_names), enums, buckets)
    assert "mcp_bridge_request_duration_seconds" in out and len(out) >= 16, out
    return out


def scrape(base: str) -> tuple[str, dict[str, str], list[tuple[str, dict, float]]]:
    text = httpx.get(base + "/metrics", timeout=10).text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    samples = []
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        samples.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return text, types, samples


def value(samples, name, **labels) -> float:
    """The one sample of `name` whose label set is exactly `labels`."""
    found = [v for n, l, v in samples if n == name and l == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def promtool_check(text: str):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs it (Debian package prometheus)"
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_contract_metric_is_exposed_with_its_type_labels_buckets_and_enumerations(bridge):
    # Some traffic first, so the per-request series exist beyond the pre-initialised ones.
    sid = post_json(bridge.base + "/mcp", INIT).headers["mcp-session-id"]
    post_json(bridge.base + "/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "m"}}},
              {"mcp-session-id": sid})
    text, types, samples = scrape(bridge.base)
    promtool_check(text)
    for name, (kind, labels, enums, buckets) in contract().items():
        assert types.get(name) == kind, (name, types.get(name), kind)
        series = [l for n, l, _ in samples if n == (name + "_bucket" if kind == "histogram" else name)]
        assert series, f"{name} has no samples"
        for l in series:
            assert set(l) - {"le"} == labels, (name, l, labels)
        for label, values in enums.items():
            if label in ("transport",):
                continue
            # Every enumerated value exists (pre-initialised) for every other-label combination.
            others = {tuple(sorted((k, v) for k, v in l.items() if k != label)) for l in series}
            for combo in others:
                have = {l[label] for l in series if tuple(sorted((k, v) for k, v in l.items() if k != label)) == combo}
                assert have == set(values), (name, combo, have ^ set(values))
        if buckets:
            les = sorted({float(l["le"]) for l in series if l["le"] != "+Inf"})
            assert les == buckets, les
            assert all(any(l["le"] == "+Inf" for l in series if l["method"] == m) for m in {l["method"] for l in series})
    transports = {l["transport"] for n, l, _ in samples if n == "mcp_bridge_sessions_active"}
    assert transports == {"sse", "streamable_http"}
    # The tool label is bounded by the child's own tools/list (pre-initialised for each tool).
    tools = {l["tool"] for n, l, _ in samples if n == "mcp_bridge_requests_total" and l["method"] == "tools/call"}
    listed = {t["name"] for t in post_json(bridge.base + "/mcp", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                                           {"mcp-session-id": sid, "accept": "application/json"}).json()["result"]["tools"]}
    assert tools == listed | {"other"}
    assert value(samples, "mcp_bridge_tools_advertised") == len(listed)


def test_a_scripted_workload_is_counted_exactly(bridge_factory):
    b = bridge_factory("--max-request-bytes", "100000")
    sid = post_json(b.base + "/mcp", INIT).headers["mcp-session-id"]
    h = {"mcp-session-id": sid, "accept": "application/json"}
    n, k = 25, 6

    def call(i, name, args):
        return post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                           "params": {"name": name, "arguments": args}}, h).json()

    errors = 0
    for i in range(n):
        r = call(i, "echo", {"text": 5} if i % 4 == 1 and errors < k else {"text": str(i)})
        if "error" in r:
            errors += 1
            assert r["error"]["code"] == -32602
        else:
            assert r["result"]["content"][0]["text"] == f"{i}|{b.nonce}"
    assert errors == k
    for i, name in enumerate(["nope", "made_up_1", "made_up_2", "nope"]):
        assert call(100 + i, name, {})["error"]["code"] == -32602  # from the child: unknown tool
    for i in range(2):
        post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": 200 + i, "method": "ping"}, h)
    big = {"jsonrpc": "2.0", "id": 300, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x" * 200_000}}}
    for _ in range(2):
        assert post_json(b.base + "/mcp", big, h).status_code == 413
    assert httpx.post(b.base + "/mcp", content="{", headers={**h, "content-type": "application/json"}).status_code == 400
    # Probes are not counted, however many.
    for _ in range(10):
        for p in ("/healthz", "/readyz", "/metrics"):
            httpx.get(b.base + p)
    # A crash: the waiting call fails with child_exited, the restart is counted.
    assert "exited" in call(400, "crash", {})["error"]["message"]
    b.wait_ready(10)
    assert httpx.delete(b.base + "/mcp", headers=h).status_code == 200

    text, _, s = scrape(b.base)
    promtool_check(text)
    req = lambda m, t: value(s, "mcp_bridge_requests_total", method=m, tool=t)
    err = lambda m, t, e: value(s, "mcp_bridge_request_errors_total", method=m, tool=t, error_type=e)
    assert req("tools/call", "echo") == n
    assert err("tools/call", "echo", "bad_request") == k
    assert err("tools/call", "echo", "jsonrpc") == 0
    assert req("tools/call", "other") == 4 and err("tools/call", "other", "jsonrpc") == 4
    assert not [l for nm, l, _ in s if l.get("tool", "").startswith("made_up")], "unknown tools must become `other`"
    assert req("tools/call", "crash") == 1 and err("tools/call", "crash", "child_exited") == 1
    assert req("initialize", "") == 1 and req("ping", "") == 2
    assert req("other", "") == 3  # 2 × 413 + 1 parse error
    assert err("other", "", "too_large") == 2 and err("other", "", "bad_request") == 1
    assert value(s, "mcp_bridge_request_duration_seconds_count", method="tools/call", tool="echo") == n
    assert value(s, "mcp_bridge_request_duration_seconds_bucket", method="tools/call", tool="echo", le="+Inf") == n
    assert value(s, "mcp_bridge_request_duration_seconds_bucket", method="tools/call", tool="echo", le="10") == n
    total_requests = sum(v for nm, _, v in s if nm == "mcp_bridge_requests_total")
    assert total_requests == n + 4 + 1 + 1 + 2 + 3
    assert value(s, "mcp_bridge_sessions_opened_total", transport="streamable_http") == 1
    assert value(s, "mcp_bridge_sessions_closed_total", transport="streamable_http", reason="deleted") == 1
    assert value(s, "mcp_bridge_sessions_active", transport="streamable_http") == 0
    assert value(s, "mcp_bridge_child_restarts_total", reason="exited") == 1
    assert value(s, "mcp_bridge_child_restarts_total", reason="start_failed") == 0
    assert value(s, "mcp_bridge_child_up") == 1 and value(s, "mcp_bridge_ready") == 1
    assert value(s, "mcp_bridge_child_processes") == 1
    assert value(s, "mcp_bridge_requests_in_flight") == 0
    assert value(s, "process_resident_memory_bytes") > 1_000_000
    assert value(s, "process_open_fds") > 3


def test_keepalives_and_per_session_child_processes_are_counted(bridge_factory):
    b = bridge_factory("--keepalive", "1", "--session-model", "per_session")
    raw = RawSse(b.base)
    raw.initialize()
    sid = post_json(b.base + "/mcp", INIT).headers["mcp-session-id"]
    wait_until(lambda: value(scrape(b.base)[2], "mcp_bridge_keepalive_sent_total") >= 2, 10, "keepalives counted")
    wait_until(lambda: value(scrape(b.base)[2], "mcp_bridge_child_processes") == 2, 10, "one child per session")
    raw.close()
    httpx.delete(b.base + "/mcp", headers={"mcp-session-id": sid})
    wait_until(lambda: value(scrape(b.base)[2], "mcp_bridge_child_processes") == 0, 10, "children gone with their sessions")


def test_json_logs_carry_session_and_request_id_on_every_line_of_a_request(bridge_factory):
    b = bridge_factory(env={"MCPCTL_LOG": "debug", "MCPCTL_LOG_FORMAT": "json"})
    sid = post_json(b.base + "/mcp", INIT).headers["mcp-session-id"]
    h = {"mcp-session-id": sid}
    for i in range(3):
        post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": f"req-{i}", "method": "tools/call",
                                    "params": {"name": "echo", "arguments": {"text": "x"}}}, h)
    post_json(b.base + "/mcp", {"jsonrpc": "2.0", "id": "req-bad", "method": "tools/call",
                                "params": {"name": "echo", "arguments": {"text": 1}}}, h)
    raw = RawSse(b.base)
    raw.initialize()
    assert raw.post({"jsonrpc": "2.0", "id": 77, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "y"}}}) == 202
    raw.reply(77)
    raw.close()
    wait_until(lambda: b.log_text().count("request done") >= 7, 10, "request logs")
    lines = [json.loads(l) for l in b.log_text().splitlines() if l.startswith("{")]
    assert len(lines) == len([l for l in b.log_text().splitlines() if l.strip()]), "every line is JSON"
    in_request = [l for l in lines if l.get("span", {}).get("name") == "mcp"]
    done = [l for l in lines if l.get("message") == "request done"]
    assert len(done) == 7, done  # 2 initialize + 4 calls (one refused) + 1 legacy call
    assert all(l in in_request for l in done), "request logs carry the request span"
    for l in in_request:
        assert l["span"]["session"] and l["span"]["request_id"], l
    ids = {(l["span"]["session"], l["span"]["request_id"]) for l in done}
    assert {(sid, f"req-{i}") for i in range(3)} | {(sid, "req-bad")} <= ids
    assert any(rid == "77" and s != sid for s, rid in ids)
    refused = [l for l in done if l.get("error_type") == "bad_request"]
    assert len(refused) == 1 and refused[0]["span"]["request_id"] == "req-bad"
