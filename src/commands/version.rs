//! `mcpctl version`: what this binary is — version, git revision, build profile and optimisation
//! level (from build.rs) — so an operator can see what an image carries
//! (`docker run --rm IMAGE mcpctl version --output json`, or `docker exec`).

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
}

impl Version {
    pub fn current() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION"),
            git_revision: env!("MCPCTL_GIT_REV"),
            profile: env!("MCPCTL_PROFILE"),
            opt_level: env!("MCPCTL_OPT_LEVEL"),
            debug_assertions: cfg!(debug_assertions),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        }
    }
}

impl Render for Version {
    fn human(&self) -> String {
        format!(
            "mcpctl {} (revision {}, {} profile, opt-level {}{}, {})",
            self.version,
            self.git_revision,
            self.profile,
            self.opt_level,
            if self.debug_assertions {
                ", debug assertions"
            } else {
                ""
            },
            self.target
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
        let j = serde_json::to_value(&v).unwrap();
        for k in [
            "version",
            "git_revision",
            "profile",
            "opt_level",
            "debug_assertions",
            "target",
        ] {
            assert!(j.get(k).is_some(), "{k}: {j}");
        }
    }
}
