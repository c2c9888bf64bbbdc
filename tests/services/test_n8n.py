"""n8n (npm n8n-mcp on the node22 base, Node >= 20, telemetry off): documentation tools work with
no n8n at all; with N8N_API_URL/N8N_API_KEY pointing at a fake n8n REST API (a container this test
starts) the workflow-management tools appear and list the fake's workflow. The fake is on a private
Docker network, so WEBHOOK_SECURITY_MODE=permissive is needed (n8n-mcp's SSRF guard otherwise
refuses private addresses for its API base URL)."""

import secrets
from pathlib import Path

from conftest import (
    build_image, check_tools_and_smoke, mcp_call, measure, network, run, secret_file, sh, start_service,
    text_of, wait_for,
)


def test_n8n_offline_image_docs_tools_and_fake_api(prepared):
    image, build_s = build_image(prepared, "n8n")
    cname, port, start_s = start_service(prepared, "n8n", image)
    tools = check_tools_and_smoke(prepared, "n8n", port)
    assert not any(t.startswith("n8n_") for t in tools), f"API tools without an API configured: {tools}"
    measure("n8n", image, build_s, start_s, cname, len(tools))
    print(f"\n[n8n] without API: {len(tools)} tools: {', '.join(tools)}")

    net = network(prepared, "n8n")
    key = secrets.token_hex(16)
    src = prepared.workdir / "fake-n8n"
    src.mkdir()
    (src / "fake_n8n.py").write_text((Path(__file__).parent / "fake_n8n.py").read_text())
    src.chmod(0o755)
    (src / "fake_n8n.py").chmod(0o644)
    fake = run(
        "fake-n8n", "mcpctl-base/python311:bookworm",
        "--network", net, "--network-alias", "fake-n8n", "--user", "10001:10001",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{src}:/app:ro",
        cmd=["python3", "/app/fake_n8n.py", "5678", key],
    )
    probe = ["python3", "-c", "import urllib.request;urllib.request.urlopen('http://127.0.0.1:5678/healthz',timeout=2)"]
    wait_for("fake n8n", 30, lambda: sh("docker", "exec", fake, *probe, check=False).returncode == 0)

    _, aport, _ = start_service(
        prepared, "n8n", image, "--network", net,
        "-e", "N8N_API_URL=http://fake-n8n:5678", *secret_file(prepared, "N8N_API_KEY", key),
        "-e", "WEBHOOK_SECURITY_MODE=permissive",
        suffix="n8n-api",
    )

    async def go(s):
        names = [t.name for t in (await s.list_tools()).tools]
        listed = await s.call_tool("n8n_list_workflows", {})
        return names, listed

    api_tools, listed = mcp_call(aport, go)
    print(f"[n8n] with API: {len(api_tools)} tools")
    assert "n8n_list_workflows" in api_tools and len(api_tools) > len(tools), api_tools
    body = text_of(listed)
    assert not listed.isError, body[:800]
    assert "mcpctl fake workflow" in body and "mcpctlWf0001" in body, body[:800]
    assert "/api/v1/workflows" in sh("docker", "logs", fake).stderr
