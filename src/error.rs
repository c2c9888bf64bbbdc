//! Exit codes (docs/contracts.md "Exit codes") and the typed error that carries one to `main`.
//!
//! Domain modules define their own `thiserror` enums; a command that must end with a specific exit
//! code returns (or wraps) a [`CommandError`]. Anything else is a runtime error (exit 1).

use std::fmt;

/// Process exit codes, exactly as docs/contracts.md lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok,
    Runtime,
    /// Usage or validation error; nothing was changed.
    Usage,
    /// Health gate failed; the previous revision was restored and verified.
    GateFailedRestored,
    /// Health gate failed and the restore failed too: an operator must act.
    GateFailedRestoreFailed,
    /// Another run holds the lock.
    LockHeld,
    /// SLO breach (soak) or differences found (cutover check).
    SloBreach,
    Interrupted,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Runtime => 1,
            ExitCode::Usage => 2,
            ExitCode::GateFailedRestored => 3,
            ExitCode::GateFailedRestoreFailed => 4,
            ExitCode::LockHeld => 5,
            ExitCode::SloBreach => 6,
            ExitCode::Interrupted => 130,
        }
    }
}

/// An error that ends the command with a specific exit code. The message is already written for the
/// operator: what went wrong, where, and what to do next.
#[derive(Debug)]
pub struct CommandError {
    pub code: ExitCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, message)
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

/// The exit code an error maps to: the first [`CommandError`] in its chain decides, else 1.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| e.downcast_ref::<CommandError>().map(|c| c.code))
        .unwrap_or(ExitCode::Runtime)
}
