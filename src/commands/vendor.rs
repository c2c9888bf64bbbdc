//! `mcpctl vendor [SERVICE...]`: fetch on the host, from the committed locks, what offline image
//! builds install — into `<state>/vendor/<service>/<lock-hash>/`, hashes checked.

use clap::Args;
use serde::Serialize;

use crate::error::ExitCode;
use crate::images::vendor;
use crate::manifest;
use crate::output::{self, progress::Bar, Render};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct VendorArgs {
    /// Services to vendor (default: every PyPI or npm service built in offline mode).
    pub services: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    vendored: Vec<vendor::Vendored>,
    /// Each service's runtime, for the table ("CPython 3.11").
    #[serde(skip)]
    runtimes: Vec<String>,
}

impl Render for Report {
    fn human(&self) -> String {
        let rows = self
            .vendored
            .iter()
            .zip(&self.runtimes)
            .map(|(d, runtime)| {
                vec![
                    d.service.clone(),
                    runtime.clone(),
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
        output::table(&["SERVICE", "RUNTIME", "RESULT", "SIZE", "DIRECTORY"], rows)
    }
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
        // With no services named, a service whose lock is not committed yet is reported and
        // skipped; a service named explicitly must have one.
        if args.services.is_empty() && !locks.join(n).is_dir() && vendor::needs_lock(m, n) {
            output::diagnostic(&format!(
                "{n}: no lock committed under {} — skipped (scripts/bases-locks writes one)",
                locks.join(n).display()
            ));
            continue;
        }
        match vendor::spec(m, &locks, &state, n)? {
            Some(s) => specs.push(s),
            None if !args.services.is_empty() => output::diagnostic(&format!(
                "{n}: nothing to vendor (its server is a crate or an image)"
            )),
            None => {}
        }
    }
    // Services are independent (each has its own directory): fetch them in parallel.
    let bar = Bar::steps(specs.len() as u64, "vendor");
    let results: Vec<anyhow::Result<vendor::Vendored>> = std::thread::scope(|scope| {
        let bar = &bar;
        let handles: Vec<_> = specs
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    tracing::info!(service = %s.service, dir = %s.dir.display(), "vendoring");
                    let r = vendor::vendor(s);
                    bar.inc(1);
                    bar.set_message(format!("{} done", s.service));
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("vendor thread"))
            .collect()
    });
    drop(bar);
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for (s, r) in specs.iter().zip(results) {
        match r {
            Ok(v) => done.push(v),
            Err(e) => errors.push(format!("{}: {e:#}", s.service)),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "vendoring failed (nothing half-done was kept):\n  {}",
            errors.join("\n  ")
        );
    }
    let runtimes = specs
        .iter()
        .map(|s| match &s.runtime {
            vendor::Runtime::Python { version } => format!("CPython {version}"),
            vendor::Runtime::Node { version } => format!("Node {version}"),
        })
        .collect();
    output::emit(
        settings,
        &Report {
            vendored: done,
            runtimes,
        },
    )?;
    Ok(ExitCode::Ok)
}
