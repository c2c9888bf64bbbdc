//! Problems found in a manifest, each with where it is (file:line:column and the YAML path), the
//! offending value, and what to do about it.

use std::fmt;

use serde::Serialize;

use super::spans::{Location, Seg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path into the document, e.g. `services.memory.limits.memory`.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(
        severity: Severity,
        file: &str,
        at: Location,
        path: &[Seg],
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity,
            file: file.to_string(),
            line: at.line,
            column: at.column,
            path: dotted(path),
            message: message.into(),
            value: None,
            help: None,
        }
    }

    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {sev}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(v) = &self.value {
            write!(f, "\n    value: {v}")?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n    help: {h}")?;
        }
        Ok(())
    }
}

pub fn dotted(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The closest candidate to `word`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Fields people bring from docker-compose or other tools, and where they live here.
pub fn known_alias(field: &str) -> Option<&'static str> {
    Some(match field {
        "mem_limit" | "memory_limit" | "memory" | "mem" => "limits.memory",
        "cpus" | "cpu" | "cpu_limit" => "limits.cpus",
        "shm_size" => "limits.shm_size",
        "pids_limit" => "limits.pids",
        "ports" | "host_port" => "port",
        "depends" | "dependencies" | "requires" => "depends_on",
        "environment" | "envs" => "env",
        "healthcheck" | "health_check" => "health",
        "image" => "server.source.image.ref",
        "command" | "cmd" | "args" => "server.command",
        "stateless" => "stateful",
        _ => return None,
    })
}
