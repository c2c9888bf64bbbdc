"""github (npm @modelcontextprotocol/server-github on the node22 base): deprecated upstream (its
successor is GitHub's Go server, which users who can pull may name as `image:`). Offline, with no
token, tools/list works; tool calls need api.github.com, which the test machine cannot reach."""

from conftest import build_image, check_tools_and_smoke, measure, start_service


def test_github_offline_image_lists_its_tools(prepared):
    image, build_s = build_image(prepared, "github")
    cname, port, start_s = start_service(prepared, "github", image)
    tools = check_tools_and_smoke(prepared, "github", port)
    assert len(tools) == 26, f"server-github 2025.4.8 advertises 26 tools, got {len(tools)}: {tools}"
    measure("github", image, build_s, start_s, cname, len(tools))
