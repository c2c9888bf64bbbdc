//! The `mcpctl …` command lines the operator documentation shows, extracted so tests can hold
//! them to the real CLI (`tests/runbooks.rs`: each parses) and to the real stack
//! (`tests/stack/runbooks.rs`: the read-only ones run and exit 0).
//!
//! **What counts as a command.** In `runbooks/**/*.md` and `README.md`, inside fenced code blocks
//! (```` ``` ```` or `~~~`, any info string), a line whose first shell word — after an optional
//! `$ ` prompt and any `VAR=value` assignments — is `mcpctl` (or a path ending in `/mcpctl`), and
//! every `$(mcpctl …)` command substitution on any line of a block. A line ending in `\` continues
//! on the next. The command ends at the first unquoted `#` comment, `|`, `;`, `&`, `>` or `<`;
//! words are split and unquoted as the shell does (`shlex`). Prose outside fences is not checked:
//! inline `code` in tables is a synopsis (`mcpctl logs SERVICE [--follow]`), not a command line.
//!
//! **Placeholders.** A word that is a placeholder stands for an example value, substituted before
//! parsing (and before running, on the stack fixture), from [`PLACEHOLDERS`]: an all-capitals word
//! of two or more letters (`SERVICE`, `NAME`, `DIR`), a single capital `N`, or an angle-bracketed
//! word (`<service>`, `<N>`). A placeholder not in the table fails the test naming the file and
//! line: add it to the table (with a value that is real in the default `services.yaml`) rather than
//! writing around it. Quoted text is one word and never a placeholder (`-m "..."` is a message).
#![allow(dead_code)] // tests/runbooks.rs and tests/stack/runbooks.rs each use a subset

use std::path::{Path, PathBuf};

/// Placeholder → the example value it stands for. Values are real in the default manifest:
/// `fetch` is a service with a published port and read-only tools, `litellm` the default consumer.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("SERVICE", "fetch"),
    ("SVC", "fetch"),
    ("NAME", "litellm"),
    ("CONSUMER", "litellm"),
    ("N", "1"),
    ("DIR", "out"),
    ("<service>", "fetch"),
    ("<svc>", "fetch"),
    ("<name>", "litellm"),
    ("<consumer>", "litellm"),
    ("<n>", "1"),
    ("<dir>", "out"),
];

/// One command line as the documentation shows it.
#[derive(Debug, Clone)]
pub struct DocCommand {
    /// Relative to the repository root.
    pub file: PathBuf,
    /// 1-based line of the command's first line.
    pub line: usize,
    /// The command as written (after joining continuation lines, without its comment).
    pub text: String,
    /// `mcpctl` followed by its arguments, placeholders substituted.
    pub argv: Vec<String>,
}

impl DocCommand {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// The documents whose commands are held to the CLI: every Markdown file under `runbooks/` and
/// the README, in a stable order.
pub fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut stack = vec![root.join("runbooks")];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    files.extend(found);
    files
}

/// Every command of every document, or every problem found (unknown placeholder, unbalanced
/// quotes), each with its file and line.
pub fn all(root: &Path) -> Result<Vec<DocCommand>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for path in documents(root) {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        match from_markdown(&rel, &text) {
            Ok(c) => out.extend(c),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The commands in the fenced blocks of one Markdown text.
pub fn from_markdown(file: &Path, text: &str) -> Result<Vec<DocCommand>, Vec<String>> {
    let mut fence: Option<String> = None;
    let mut block = Vec::new();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &fence {
            None => {
                if let Some(marker) = fence_marker(trimmed) {
                    fence = Some(marker);
                    block.clear();
                }
            }
            Some(marker) => {
                if trimmed.starts_with(marker.as_str()) && trimmed[marker.len()..].trim().is_empty()
                {
                    fence = None;
                    collect(file, &block, &mut out, &mut problems);
                } else {
                    block.push((i + 1, line.to_string()));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The commands in lines of shell (a fenced block, or a workflow step's `run:`), numbered from
/// `first_line`.
pub fn from_shell(
    file: &Path,
    first_line: usize,
    script: &str,
) -> Result<Vec<DocCommand>, Vec<String>> {
    let lines: Vec<(usize, String)> = script
        .lines()
        .enumerate()
        .map(|(i, l)| (first_line + i, l.to_string()))
        .collect();
    let mut out = Vec::new();
    let mut problems = Vec::new();
    collect(file, &lines, &mut out, &mut problems);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn fence_marker(line: &str) -> Option<String> {
    for c in ['`', '~'] {
        let n = line.chars().take_while(|&x| x == c).count();
        if n >= 3 {
            return Some(std::iter::repeat_n(c, n).collect());
        }
    }
    None
}

fn collect(
    file: &Path,
    lines: &[(usize, String)],
    out: &mut Vec<DocCommand>,
    problems: &mut Vec<String>,
) {
    // Join continuation lines first: a command's line is the line it starts on.
    let mut joined: Vec<(usize, String)> = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, l) in lines {
        let (start, mut text) = open.take().unwrap_or((*n, String::new()));
        match l.trim_end().strip_suffix('\\') {
            Some(head) => {
                text.push_str(head);
                text.push(' ');
                open = Some((start, text));
            }
            None => {
                text.push_str(l);
                joined.push((start, text));
            }
        }
    }
    joined.extend(open);
    for (n, l) in joined {
        for text in commands_in_line(&l) {
            match argv_of(&text) {
                Ok(Some(argv)) => out.push(DocCommand {
                    file: file.to_path_buf(),
                    line: n,
                    text: text.trim().to_string(),
                    argv,
                }),
                Ok(None) => {}
                Err(e) => problems.push(format!("{}:{n}: `{}`: {e}", file.display(), text.trim())),
            }
        }
    }
}

/// The shell text of each command the line starts or substitutes (`$(mcpctl …)`), cut at the
/// first unquoted operator or comment.
fn commands_in_line(line: &str) -> Vec<String> {
    let mut found = vec![cut_at_operator(strip_prompt(line))];
    let mut rest = line;
    while let Some(at) = rest.find("$(") {
        let inner = &rest[at + 2..];
        let end = matching_paren(inner).unwrap_or(inner.len());
        found.push(cut_at_operator(&inner[..end]));
        rest = &inner[end.min(inner.len())..];
    }
    found
}

fn strip_prompt(line: &str) -> &str {
    let t = line.trim_start();
    t.strip_prefix("$ ").unwrap_or(t)
}

/// Index of the `)` closing a `$(` whose body starts at `s`, respecting quotes and nesting.
fn matching_paren(s: &str) -> Option<usize> {
    let (mut depth, mut quote) = (0usize, None::<char>);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') if depth == 0 => return Some(i),
            (None, ')') => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The text before the first unquoted shell operator or comment.
fn cut_at_operator(s: &str) -> String {
    let mut quote = None::<char>;
    let mut prev_space = true;
    let mut skip_to = 0;
    for (i, c) in s.char_indices() {
        if i < skip_to {
            continue;
        }
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            // `<service>` is a placeholder, not a redirection.
            (None, '<') if angle_placeholder(&s[i..]).is_some() => {
                skip_to = i + angle_placeholder(&s[i..]).unwrap_or(0);
            }
            (None, '|' | ';' | '&' | '>' | '<' | ')') => return s[..i].to_string(),
            (None, '#') if prev_space => return s[..i].to_string(),
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    s.to_string()
}

/// The length of a `<word>` placeholder at the start of `s`.
fn angle_placeholder(s: &str) -> Option<usize> {
    let body = s.strip_prefix('<')?;
    let end = body.find('>')?;
    let word = &body[..end];
    (!word.is_empty()
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(end + 2)
}

/// `Some(argv)` when the text is an mcpctl command (environment assignments dropped), `None` when
/// it is another command.
fn argv_of(text: &str) -> Result<Option<Vec<String>>, String> {
    let Some(words) = shlex::split(text) else {
        // Prose in a block (an apostrophe) is not a command; an mcpctl line must split cleanly.
        let first = text.split_whitespace().find(|w| !is_assignment(w));
        return match first {
            Some(p) if p == "mcpctl" || p.ends_with("/mcpctl") => Err("unbalanced quotes".into()),
            _ => Ok(None),
        };
    };
    let mut words = words.into_iter().skip_while(|w| is_assignment(w));
    let Some(program) = words.next() else {
        return Ok(None);
    };
    if program != "mcpctl" && !program.ends_with("/mcpctl") {
        return Ok(None);
    }
    // Which words were quoted: a quoted word is never a placeholder.
    let raw: Vec<&str> = text.split_whitespace().collect();
    let mut argv = vec!["mcpctl".to_string()];
    for w in words {
        let quoted = !raw.contains(&w.as_str());
        argv.push(if quoted { w } else { substitute(&w)? });
    }
    Ok(Some(argv))
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// The example value of a placeholder word; other words unchanged.
pub fn substitute(word: &str) -> Result<String, String> {
    let angle = word.starts_with('<') && word.ends_with('>') && word.len() > 2;
    let capitals = word == "N"
        || (word.len() >= 2
            && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
            && word.chars().any(|c| c.is_ascii_uppercase()));
    if !angle && !capitals {
        return Ok(word.to_string());
    }
    let key = if angle {
        word.to_ascii_lowercase()
    } else {
        word.to_string()
    };
    PLACEHOLDERS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| {
            format!(
                "placeholder `{word}` has no example value: add it to PLACEHOLDERS in \
                 tests/runbook_commands/mod.rs (a value real in the default services.yaml)"
            )
        })
}

/// Parse `argv` with the real CLI definition.
pub fn parse(argv: &[String]) -> Result<mcpctl::cli::Cli, clap::Error> {
    use clap::Parser as _;
    mcpctl::cli::Cli::try_parse_from(argv)
}
