//! `mcpctl vendor [SERVICE...]`: fetch on the host, from the committed locks, what offline image
//! builds install — into `<state>/vendor/<service>/<lock-hash>/`, hashes checked.

use clap::Args;

use crate::cli::OutputFormat;
use crate::error::ExitCode;
use crate::images::vendor;
use crate::settings::Settings;
use crate::{manifest, output};

#[derive(Args, Debug)]
pub struct VendorArgs {
    /// Services to vendor (default: every PyPI or npm service built in offline mode).
    pub services: Vec<String>,
}

pub fn run(settings: &Settings, args: &VendorArgs) -> anyhow::Result<ExitCode> {
    let loaded = manifest::load_checked(settings)?;
    let m = &loaded.manifest;
    let state = settings.state_dir(&m.project);
    let locks = vendor::locks_root(&settings.manifest_path);
    let names: Vec<String> = if args.services.is_empty() {
        m.services
            .iter()
            .filter(|(_, s)| s.build.mode == crate::manifest::BuildMode::Offline)
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        args.services.clone()
    };
    let mut specs = Vec::new();
    for n in &names {
        match vendor::spec(m, &locks, &state, n)? {
            Some(s) => specs.push(s),
            None if !args.services.is_empty() => output::diagnostic(&format!(
                "{n}: nothing to vendor (its server is a crate or an image)"
            )),
            None => {}
        }
    }
    let mut done = Vec::new();
    for s in &specs {
        tracing::info!(service = %s.service, dir = %s.dir.display(), "vendoring");
        done.push(vendor::vendor(s)?);
    }
    match settings.output {
        OutputFormat::Json => output::json_line(&serde_json::json!({ "vendored": done })),
        OutputFormat::Human => {
            let rows = done
                .iter()
                .zip(&specs)
                .map(|(d, s)| {
                    vec![
                        d.service.clone(),
                        match &s.runtime {
                            vendor::Runtime::Python { version } => format!("CPython {version}"),
                            vendor::Runtime::Node { version } => format!("Node {version}"),
                        },
                        if d.fetched_now {
                            format!("fetched in {:.0} s", d.seconds)
                        } else {
                            "up to date".into()
                        },
                        format!("{} MB", d.bytes / 1_000_000),
                        d.dir.display().to_string(),
                    ]
                })
                .collect();
            output::human(
                settings,
                &output::table(&["SERVICE", "RUNTIME", "RESULT", "SIZE", "DIRECTORY"], rows),
            );
        }
    }
    Ok(ExitCode::Ok)
}
