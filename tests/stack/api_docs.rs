//! The committed API reference (docs/api/) is what the deployed services report (issue 22):
//! `mcpctl docs --check` against the fixture. The fixture runs as another project on other ports,
//! so this also proves the generated text names neither.

use super::*;

pub fn committed_reference_matches_the_stack(fx: &Fixture) -> Result<()> {
    let committed = repo_root().join("docs/api");
    let out = fx
        .cmd(&["docs", "--check", "--out"])
        .arg(&committed)
        .output()
        .context("running mcpctl docs --check")?;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    ensure!(
        out.status.success(),
        "docs/api/ drifted from the deployed services (regenerate with `mcpctl docs` against a \
         deployed stack and commit the result):\n{all}"
    );
    // And a fresh generation is byte-identical to the committed files (nothing else in the dir).
    let fresh = fx.dir.path().join("api-docs");
    must(fx.cmd(&["docs", "--out"]).arg(&fresh));
    let mut names: Vec<String> = std::fs::read_dir(&fresh)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = fx
        .mcp_services()
        .iter()
        .map(|s| format!("{s}.md"))
        .collect();
    want.push("README.md".into());
    want.sort();
    ensure!(names == want, "generated {names:?}, expected {want:?}");
    for n in &names {
        let body = std::fs::read_to_string(fresh.join(n))?;
        // The fixture's project, and its published ports below. (A bare 127.0.0.1 may be a tool
        // argument from the manifest, e.g. fetch's SSRF smoke step, not where the stack runs.)
        for leak in [PROJECT, "localhost"] {
            ensure!(!body.contains(leak), "{n} names `{leak}`");
        }
        for svc in fx.mcp_services() {
            let port = fx.port(&svc).to_string();
            ensure!(
                !body.contains(&format!(":{port}")),
                "{n} names the port {port}"
            );
        }
    }
    eprintln!(
        "  docs/api/: {} files match the deployed services",
        names.len()
    );
    Ok(())
}
