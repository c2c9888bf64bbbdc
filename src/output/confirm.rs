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
}
