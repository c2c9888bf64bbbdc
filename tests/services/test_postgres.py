"""postgres (PyPI postgres-mcp 0.3.0 on the python313/trixie base; `--no-deps` + `pglast~=7.2`
because its `pglast==7.2.0` pin has no wheel; `mcp<2`) in restricted mode, against the stack's
database image (the `db` service: PostgreSQL from the postgresql base, initialised by its
entrypoint from the mounted password secret)."""

import re
import secrets

from conftest import (
    build_image, check_tools_and_smoke, hardened, mcp_call, measure, network, run, secret_file, service,
    sh, start_service, text_of, wait_for,
)


def test_postgres_offline_image_restricted_mode_against_db(prepared):
    db_image, _ = build_image(prepared, "db")
    image, build_s = build_image(prepared, "postgres")
    net = network(prepared, "pg")
    password = secrets.token_hex(12)
    pw = prepared.workdir / "pgpass"
    pw.write_text(password)
    pw.chmod(0o644)
    # The entrypoint refuses to start without the role file of every consumer the manifest gives
    # the database (mcpctl mounts one each): mount one per login its rendered script names.
    script = (prepared.rendered / "services" / "db" / "docker-entrypoint.sh").read_text()
    roles = []
    for login in sorted(set(re.findall(r"/run/secrets/db_role_([a-z0-9_]+)", script))):
        f = prepared.workdir / f"db_role_{login}"
        f.write_text(secrets.token_hex(12))
        f.chmod(0o644)
        roles += ["-v", f"{f}:/run/secrets/db_role_{login}:ro"]
    db = run(
        "db", db_image, "--network", net, "--network-alias", "db", *hardened(service(prepared, "db")),
        "-v", "/var/lib/postgresql/data", "-v", f"{pw}:/run/secrets/POSTGRES_PASSWORD:ro", *roles,
    )
    isready = ["pg_isready", "--host", "127.0.0.1", "--port", "5432", "--quiet"]
    wait_for("db accepting connections", 90, lambda: sh("docker", "exec", db, *isready, check=False).returncode == 0)

    cname, port, start_s = start_service(
        prepared, "postgres", image, "--network", net,
        *secret_file(prepared, "DATABASE_URI", f"postgresql://postgres:{password}@db:5432/postgres"),
    )
    tools = check_tools_and_smoke(prepared, "postgres", port)
    assert len(tools) == 9, tools

    async def go(s):
        one = await s.call_tool("execute_sql", {"sql": "select 1 as one"})
        write = await s.call_tool("execute_sql", {"sql": "create table mcpctl_should_not_exist (a int)"})
        schemas = await s.call_tool("list_schemas", {})
        return one, write, schemas

    one, write, schemas = mcp_call(port, go)
    assert not one.isError and "'one': 1" in text_of(one), text_of(one)
    assert "public" in text_of(schemas), text_of(schemas)[:300]
    # Restricted mode: writes are refused (read-only transaction or statement check).
    assert write.isError or "error" in text_of(write).lower(), text_of(write)
    exists = sh("docker", "exec", db, "psql", "-h", "/tmp", "-U", "postgres", "-tAc",
                "select count(*) from pg_tables where tablename = 'mcpctl_should_not_exist'").stdout.strip()
    assert exists == "0", "restricted mode let a CREATE TABLE through"
    measure("postgres", image, build_s, start_s, cname, len(tools))
    print(f"\n[postgres] {len(tools)} tools: {', '.join(tools)}")
