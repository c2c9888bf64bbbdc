//! `mcpctl version`: what this binary is — version, git revision, build profile and optimisation
//! level (from build.rs) — so an operator can see what an image carries
//! (`docker run --rm IMAGE mcpctl version --output json`, or `docker exec`) — and which feature
//! set it was built with: `cli` (the operator's mcpctl: every command), `docker-proxy` (the
//! exporter image: `docker-proxy` + the runtime commands) or `runtime` (service and edge images:
//! `bridge`, `bridge healthcheck`, `edge serve`, `version`; no Docker client).

use serde::Serialize;

use crate::error::ExitCode;
use crate::output::{self, Render};
use crate::settings::Settings;

#[derive(Serialize)]
pub struct Version {
    pub version: &'static str,
    pub git_revision: &'static str,
    pub profile: &'static str,
    pub opt_level: &'static str,
    pub debug_assertions: bool,
    pub target: String,
    /// The Cargo feature set compiled in (Cargo.toml `[features]`): `cli`, `docker-proxy` or
    /// `runtime`.
    pub features: &'static str,
}

/// The feature set this binary was built with; the widest wins (`cli` implies the others).
pub const FEATURES: &str = if cfg!(feature = "cli") {
    "cli"
} else if cfg!(feature = "docker-proxy") {
    "docker-proxy"
} else {
    "runtime"
};

impl Version {
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_revision: env!("MCPCTL_GIT_REV"),
            profile: env!("MCPCTL_PROFILE"),
            opt_level: env!("MCPCTL_OPT_LEVEL"),
            debug_assertions: cfg!(debug_assertions),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            features: FEATURES,
        }
    }
}

impl Render for Version {
    fn human(&self) -> String {
        format!(
            "mcpctl {} (revision {}, {} profile, opt-level {}{}, {}, {} features)",
            self.version,
            self.git_revision,
            self.profile,
            self.opt_level,
            if self.debug_assertions {
                ", debug assertions"
            } else {
                ""
            },
            self.target,
            self.features
        )
    }
}

pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    output::emit(settings, &Version::current())?;
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_facts_are_filled_in() {
        let v = Version::current();
        assert!(!v.git_revision.is_empty());
        assert!(matches!(v.profile, "debug" | "release"), "{}", v.profile);
        assert!(
            matches!(v.opt_level, "0" | "1" | "2" | "3" | "s" | "z"),
            "{}",
            v.opt_level
        );
        let h = v.human();
        assert!(
            h.starts_with(&format!("mcpctl {} (revision ", v.version)),
            "{h}"
        );
        // Tests build the operator's CLI; scripts/build-dist checks the image binaries' sets.
        if cfg!(feature = "cli") {
            assert_eq!(v.features, "cli");
            assert!(h.ends_with(", cli features)"), "{h}");
        }
        let j = serde_json::to_value(&v).unwrap();
        for k in [
            "version",
            "git_revision",
            "profile",
            "opt_level",
            "debug_assertions",
            "target",
            "features",
        ] {
            assert!(j.get(k).is_some(), "{k}: {j}");
        }
    }
}
