//! Build facts `mcpctl version` reports (issue: production-grade binaries): the git revision the
//! binary was built from (uncommitted edits are not detected), the cargo profile and its
//! optimisation level. Reruns only when HEAD moves, so ordinary edits do not rerun it.

use std::process::Command;

fn main() {
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MCPCTL_GIT_REV={rev}");
    for (name, var) in [
        ("MCPCTL_PROFILE", "PROFILE"),
        ("MCPCTL_OPT_LEVEL", "OPT_LEVEL"),
    ] {
        println!(
            "cargo:rustc-env={name}={}",
            std::env::var(var).unwrap_or_else(|_| "unknown".into())
        );
    }
    // HEAD names the branch; the branch's ref (loose or packed) moves with each commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    println!("cargo:rerun-if-env-changed=PROFILE");
}
