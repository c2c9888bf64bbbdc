//! Tier 4 (issue 8): the five off-the-shelf services — filesystem, fetch, postgres, github, n8n —
//! built OFFLINE (`docker build --network none`) on the locally made base images from the
//! vendored, hash-checked locks, each proven through the bridge by the official MCP Python SDK
//! client (tools/list + the manifest's smoke steps + each service's own checks). The work is in
//! `tests/services/` (pytest) run by `scripts/service-tests`; this test runs it under `cargo test`
//! so the project's test command covers it, and prints its measurement table.

mod common;

use std::io::Write as _;
use std::process::Command;

#[test]
fn five_services_built_offline_and_proven_by_the_mcp_sdk_client() {
    if !common::docker_available("five_services_built_offline_and_proven_by_the_mcp_sdk_client") {
        return;
    }
    let root = common::repo_root();
    let out = Command::new(root.join("scripts/service-tests"))
        .env("MCPCTL_BIN", common::mcpctl())
        .current_dir(&root)
        .output()
        .expect("scripts/service-tests runs");
    let stdout = common::text(&out.stdout);
    let stderr = common::text(&out.stderr);
    // Written straight to the process's stderr (not through the test harness's capture), so the
    // measurement table shows in the test command's output even when the test passes.
    let table: String = stdout
        .lines()
        .skip_while(|l| !l.contains("service measurements"))
        .take_while(|l| !(l.contains(" passed") || l.contains(" failed") || l.contains(" error")))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = std::io::stderr().write_all(format!("\n{table}").as_bytes());
    assert!(
        out.status.success(),
        "scripts/service-tests failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for svc in ["filesystem", "fetch", "postgres", "github", "n8n"] {
        assert!(
            table.lines().any(|l| l.starts_with(svc)),
            "no measurement row for {svc}: did its test run?\n{stdout}"
        );
    }
}
