//! Confirmation of destructive steps: asked on a terminal, refused without one unless `--yes`.

use crate::error::CommandError;
use crate::settings::Settings;

/// Ask for confirmation, or refuse without a TTY and `--yes` (exit 2; nothing was changed).
pub fn confirm(settings: &Settings, question: &str) -> anyhow::Result<()> {
    if settings.yes {
        return Ok(());
    }
    if !settings.interactive {
        return Err(CommandError::usage(format!(
            "{question}: refusing without confirmation (no terminal to ask on); pass --yes"
        ))
        .into());
    }
    let ok = super::progress::suspend(|| {
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
    })?;
    if ok {
        Ok(())
    } else {
        Err(CommandError::usage("cancelled; nothing was changed").into())
    }
}

/// A yes/no question with a default: asked on a terminal; without one, or with `--yes`, the
/// default is the answer (so the default must be the safe choice).
pub fn ask(settings: &Settings, question: &str, default: bool) -> anyhow::Result<bool> {
    if settings.yes || !settings.interactive {
        return Ok(default);
    }
    Ok(super::progress::suspend(|| {
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(default)
            .interact()
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitCode;

    fn settings(yes: bool) -> Settings {
        let mut s = Settings::from_args(&crate::cli::GlobalArgs {
            file: "services.yaml".into(),
            state_dir: None,
            output: crate::output::OutputFormat::Human,
            yes,
            verbose: 0,
            quiet: false,
        });
        s.interactive = false;
        s
    }

    #[test]
    fn without_a_terminal_only_yes_confirms() {
        assert!(confirm(&settings(true), "remove it?").is_ok());
        let err = confirm(&settings(false), "remove it?").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&err), ExitCode::Usage);
        assert!(err.to_string().contains("pass --yes"), "{err}");
    }

    #[test]
    fn without_a_terminal_a_question_takes_its_default() {
        assert!(ask(&settings(false), "back up first?", true).unwrap());
        assert!(!ask(&settings(true), "really?", false).unwrap());
    }
}
