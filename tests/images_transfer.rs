//! Image transfer tier, on the real engine: deploy a one-service project (the test MCP server on
//! the small FROM-scratch runtime image), `mcpctl images export` it, and show that
//! - a second export into the same directory is refused without `--force` (exit 2);
//! - a copy with one flipped byte is refused by `images import` (exit 2, the file named) and
//!   nothing is loaded;
//! - after `down` and `docker rmi` of the service image, importing the good copy brings it back
//!   with the same id (the shared runtime base reported as already present), and `plan`/`deploy`
//!   use it without a build.
//!
//! Figures (export/import time, tar size) are printed with `--nocapture`. The project's objects
//! are removed by label (`Cleanup`); the shared runtime test image is never removed.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::{text, unique_project, Cleanup};

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn image_id(reference: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_string())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn an_export_brings_removed_images_back_and_a_corrupt_copy_loads_nothing() {
    if !common::docker_available("images_transfer") {
        return;
    }
    let project = unique_project("img");
    let _cleanup = Cleanup {
        project: project.clone(),
    };
    let dir = common::TestDir::new();
    let runtime = common::runtime_image();
    let manifest = format!(
        r#"version: 1
project: {project}
services:
  alpha:
    port: {port}
    transport: http
    server:
      source: {{image: {{ref: "{runtime}"}}}}
      command: ["/usr/local/bin/mcp-testserver", "--nonce", "X"]
    limits: {{memory: 64m, cpus: 0.5, pids: 64}}
    health:
      start_period: 1s
      interval: 1s
      timeout: 10s
      expect_tools: {{min: 1, include: [echo]}}
"#,
        port = common::free_port(),
    );
    std::fs::write(dir.path().join("services.yaml"), manifest).unwrap();
    let state = dir.path().join("state");
    let mcpctl = |args: &[&str]| -> Output {
        Command::new(common::mcpctl())
            .arg("--state-dir")
            .arg(&state)
            .args(args)
            .current_dir(dir.path())
            .env_remove("MCPCTL_FILE")
            .env_remove("MCPCTL_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("mcpctl runs")
    };

    let out = mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "deploy: {}", show(&out));

    // Export: the serving revision's image and the base it is built from.
    let good = dir.path().join("export");
    let t0 = Instant::now();
    let out = mcpctl(&[
        "--output",
        "json",
        "images",
        "export",
        "--out",
        good.to_str().unwrap(),
    ]);
    let export_s = t0.elapsed().as_secs_f64();
    assert_eq!(code(&out), 0, "export: {}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = report["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{report:#}");
    let service = &images[0];
    assert_eq!(service["role"], "service", "{report:#}");
    assert_eq!(service["used_by"][0]["service"], "alpha");
    assert!(service["used_by"][0]["revision"]
        .as_str()
        .unwrap()
        .starts_with("r1-"));
    let tag = service["repo_tags"][0].as_str().unwrap().to_string();
    assert!(tag.starts_with(&format!("{project}/alpha:")), "{tag}");
    let id = service["image_id"].as_str().unwrap().to_string();
    assert_eq!(image_id(&tag).as_deref(), Some(id.as_str()));
    assert_eq!(images[1]["role"], "base");
    assert_eq!(images[1]["repo_tags"][0], runtime.as_str());
    let file = service["file"].as_str().unwrap().to_string();
    let size = std::fs::metadata(good.join(&file)).unwrap().len();
    assert_eq!(service["size"].as_u64(), Some(size));
    // The manifest on disk is what the report says.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(good.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk["project"], project.as_str());
    assert_eq!(on_disk["images"][0]["sha256"], service["sha256"]);
    assert_eq!(on_disk["images"][0]["image_id"].as_str(), Some(id.as_str()));

    // An existing export is not overwritten by accident.
    let out = mcpctl(&["images", "export", "--out", good.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(text(&out.stderr).contains("--force"), "{}", show(&out));

    // A corrupt copy: one byte flipped in the middle of the service image's tar.
    let bad = dir.path().join("corrupt");
    copy_dir(&good, &bad);
    let mut bytes = std::fs::read(bad.join(&file)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(bad.join(&file), &bytes).unwrap();

    // Lose the image: the project's containers first (they hold it), then the image itself.
    let out = mcpctl(&["--yes", "down"]);
    assert_eq!(code(&out), 0, "down: {}", show(&out));
    common::must(Command::new("docker").args(["rmi", &tag]));
    assert_eq!(image_id(&tag), None, "removed");
    assert_eq!(image_id(&id), None, "no other tag keeps it");

    let out = mcpctl(&["images", "import", bad.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "corrupt import: {}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{file}: SHA-256")) && err.contains("nothing was loaded"),
        "{}",
        show(&out)
    );
    assert_eq!(image_id(&tag), None, "nothing loaded from a corrupt export");
    assert_eq!(image_id(&id), None, "nothing loaded from a corrupt export");

    // The good copy: the image is back under its tag with its id; the base was there already.
    let t0 = Instant::now();
    let out = mcpctl(&[
        "--output",
        "json",
        "images",
        "import",
        good.to_str().unwrap(),
    ]);
    let import_s = t0.elapsed().as_secs_f64();
    assert_eq!(code(&out), 0, "import: {}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"][0]["result"], "loaded", "{report:#}");
    assert_eq!(report["images"][1]["result"], "present", "{report:#}");
    assert_eq!(report["loaded"], 1);
    assert_eq!(image_id(&tag).as_deref(), Some(id.as_str()));

    // What losing a host costs now: no build. The plan finds the image; deploy runs it as is.
    let out = mcpctl(&["--output", "json", "plan"]);
    assert_eq!(code(&out), 0, "plan: {}", show(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["actions"][0]["action"], "create", "{plan:#}");
    assert_eq!(plan["actions"][0]["image"].as_str(), Some(tag.as_str()));
    assert_eq!(plan["actions"][0]["build"], false, "{plan:#}");
    let out = mcpctl(&["--yes", "deploy"]);
    assert_eq!(code(&out), 0, "deploy after import: {}", show(&out));
    assert!(!text(&out.stderr).contains("built"), "{}", show(&out));
    assert_eq!(image_id(&tag).as_deref(), Some(id.as_str()));

    // Again: everything present, nothing loaded.
    let out = mcpctl(&[
        "--output",
        "json",
        "images",
        "import",
        good.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["loaded"], 0, "{report:#}");
    assert_eq!(report["present"], 2, "{report:#}");

    eprintln!(
        "images_transfer: service image {tag}: tar {:.1} MB; export (2 images, {:.1} MB in all) {export_s:.2} s; import (verify both, load 1) {import_s:.2} s",
        size as f64 / 1e6,
        (std::fs::read_dir(&good)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>()) as f64
            / 1e6,
    );
}
