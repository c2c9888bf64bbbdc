"""fetch (PyPI mcp-server-fetch on the python311 base): refuses private addresses in production; a
test-profile instance started with --allow-private-ips fetches a page from a static test-page
container on the same network. The image has no Node."""

from conftest import (
    RUN, build_image, check_tools_and_smoke, mcp_call, measure, network, run, sh, start_service,
    text_of, wait_for,
)

MARKER = "mcpctl-static-test-page-7f3a"
PAGE = f"""<!doctype html><html><head><title>mcpctl test page</title></head>
<body><main><h1>Offline test page</h1><p>The marker is {MARKER}.</p>
<p>Served by a static container on the test network.</p></main></body></html>"""


def static_page(p, net: str) -> str:
    """A static test page: python3's http.server on the python311 base, read-only, non-root."""
    d = p.workdir / "page"
    d.mkdir()
    (d / "index.html").write_text(PAGE)
    d.chmod(0o755)
    (d / "index.html").chmod(0o644)
    c = run(
        "testpage", "mcpctl-base/python311:bookworm",
        "--network", net, "--network-alias", "testpage", "--user", "10001:10001",
        "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{d}:/srv:ro",
        cmd=["python3", "-m", "http.server", "--directory", "/srv", "--bind", "0.0.0.0", "8000"],
    )
    probe = ["python3", "-c", "import urllib.request;urllib.request.urlopen('http://127.0.0.1:8000/',timeout=2)"]
    wait_for("test page", 30, lambda: sh("docker", "exec", c, *probe, check=False).returncode == 0)
    return c


def test_fetch_offline_image_refuses_private_and_fetches_in_test_profile(prepared):
    image, build_s = build_image(prepared, "fetch")
    cfg = sh("docker", "image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip()
    assert cfg == "10001:10001", f"image runs as {cfg!r}"
    # No Node (readabilipy would use it), no pip or compiler in the final image.
    check = "if command -v node || command -v gcc || test -e /opt/venv/bin/pip; then exit 1; fi"
    sh("docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c", check)

    net = network(prepared, "fetch")
    static_page(prepared, net)

    # Production: refuses private addresses as a clean tool error (the manifest's smoke step), also
    # for the reachable test page.
    prod, port, start_s = start_service(prepared, "fetch", image, "--network", net)
    tools = check_tools_and_smoke(prepared, "fetch", port)
    assert tools == ["fetch"], tools

    async def fetch_page(s):
        return await s.call_tool("fetch", {"url": "http://testpage:8000/"})

    r = mcp_call(port, fetch_page)
    assert r.isError, f"production fetch of a private address succeeded: {text_of(r)[:300]}"
    assert MARKER not in text_of(r)
    measure("fetch", image, build_s, start_s, prod, len(tools))

    # Test profile: --allow-private-ips fetches the page and returns its text as markdown.
    _, tport, _ = start_service(
        prepared, "fetch", image, "--network", net,
        cmd=["mcp-server-fetch", "--allow-private-ips"], suffix="fetch-testprofile",
    )
    r = mcp_call(tport, fetch_page)
    body = text_of(r)
    assert not r.isError, body[:500]
    assert MARKER in body, body[:500]
    assert "<p>" not in body, f"expected markdown, got HTML: {body[:300]}"
