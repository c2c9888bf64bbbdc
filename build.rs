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
    // Cargo's PROFILE says only "release" or "debug" (what a custom profile inherits): the
    // profile's own name ("dist", what images carry) is the directory OUT_DIR lies in,
    // <target>/<profile>/build/<pkg>-<hash>/out.
    let profile = std::env::var("OUT_DIR")
        .ok()
        .and_then(|out| {
            std::path::Path::new(&out)
                .ancestors()
                .nth(3)
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("PROFILE").ok())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MCPCTL_PROFILE={profile}");
    println!(
        "cargo:rustc-env=MCPCTL_OPT_LEVEL={}",
        std::env::var("OPT_LEVEL").unwrap_or_else(|_| "unknown".into())
    );
    // HEAD names the branch; the branch's ref (loose or packed) moves with each commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    println!("cargo:rerun-if-changed=.git/packed-refs");
    println!("cargo:rerun-if-env-changed=PROFILE");
}
