"""filesystem (npm @modelcontextprotocol/server-filesystem on the node22 base): the allowed
directory is the argument (/data, mounted read-only). Roots REPLACE allowed directories in this
server, so a client must not be able to widen access: the bridge initialises the shared child with
no client capabilities, so a client's roots never reach it."""

from conftest import build_image, check_tools_and_smoke, mcp_call, measure, start_service, text_of

CONTENT = "hello from the read-only data volume\n"


def test_filesystem_offline_image_read_only_and_roots_cannot_widen(prepared):
    image, build_s = build_image(prepared, "filesystem")
    data = prepared.workdir / "fsdata"
    data.mkdir()
    (data / "hello.txt").write_text(CONTENT)
    data.chmod(0o755)
    (data / "hello.txt").chmod(0o644)
    cname, port, start_s = start_service(prepared, "filesystem", image, "-v", f"{data}:/data:ro")
    tools = check_tools_and_smoke(prepared, "filesystem", port)

    async def plain(s):
        read = await s.call_tool("read_text_file", {"path": "/data/hello.txt"})
        write = await s.call_tool("write_file", {"path": "/data/new.txt", "content": "x"})
        outside = await s.call_tool("read_text_file", {"path": "/etc/passwd"})
        return read, write, outside

    read, write, outside = mcp_call(port, plain)
    assert not read.isError and text_of(read) == CONTENT, text_of(read)
    assert write.isError, f"write to the read-only mount succeeded: {text_of(write)}"
    assert not (data / "new.txt").exists()
    assert outside.isError, text_of(outside)
    assert "root:" not in text_of(outside)

    # A client that offers roots (file:///etc, file:///) and announces a change: the child never
    # asks it (no client capabilities), so the allowed directories stay exactly /data.
    async def with_roots(s):
        await s.send_roots_list_changed()
        allowed = await s.call_tool("list_allowed_directories", {})
        passwd = await s.call_tool("read_text_file", {"path": "/etc/passwd"})
        return allowed, passwd

    allowed, passwd = mcp_call(port, with_roots, roots=["file:///etc", "file:///"])
    dirs = [line.strip() for line in text_of(allowed).splitlines() if line.strip().startswith("/")]
    assert dirs == ["/data"], text_of(allowed)
    assert passwd.isError and "root:" not in text_of(passwd), text_of(passwd)
    # And a fresh client afterwards still sees only /data (nothing persisted in the shared child).
    allowed2 = mcp_call(port, lambda s: s.call_tool("list_allowed_directories", {}))
    assert [x.strip() for x in text_of(allowed2).splitlines() if x.strip().startswith("/")] == ["/data"]
    measure("filesystem", image, build_s, start_s, cname, len(tools))
    print(f"\n[filesystem] {len(tools)} tools: {', '.join(tools)}")
