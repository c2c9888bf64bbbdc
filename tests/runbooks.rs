//! The runbooks cannot rot: every `mcpctl …` command line in a fenced code block of
//! `runbooks/**/*.md` or `README.md` must parse with the real CLI definition
//! (`mcpctl::cli::Cli::try_parse_from`). No Docker needed; the read-only commands among them are
//! also run against the full-stack fixture by `tests/stack/runbooks.rs`.
//!
//! Convention (details in `tests/runbook_commands/mod.rs`): a command is a fenced line whose first
//! word is `mcpctl` (after a `$ ` prompt and `VAR=value` assignments) or a `$(mcpctl …)`
//! substitution; it ends at an unquoted `#`, `|`, `;`, `&`, `>` or `<`. Placeholders — all-capital
//! words such as `SERVICE`, a lone `N`, or `<service>`-style words — are replaced by the example
//! values of `PLACEHOLDERS` (`SERVICE` → `fetch`, `NAME` → `litellm`, `N` → `1`, `DIR` → `out`).
//! An unknown placeholder is a failure naming the file and line.

mod runbook_commands;

use std::collections::BTreeSet;
use std::path::Path;

use runbook_commands::{all, from_markdown, parse, DocCommand};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn documented() -> Vec<DocCommand> {
    all(root()).unwrap_or_else(|problems| {
        panic!(
            "runbook commands that cannot be read:\n  {}",
            problems.join("\n  ")
        )
    })
}

#[test]
fn every_documented_mcpctl_command_parses_with_the_real_cli() {
    let commands = documented();
    let mut failures = Vec::new();
    for c in &commands {
        if let Err(e) = parse(&c.argv) {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            failures.push(format!("{}: `{}` → {first}", c.at(), c.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documented mcpctl commands do not parse (fix the runbook, or the CLI):\n  {}",
        failures.len(),
        commands.len(),
        failures.join("\n  ")
    );
    eprintln!(
        "{} documented mcpctl commands parse, from {} files",
        commands.len(),
        commands
            .iter()
            .map(|c| &c.file)
            .collect::<BTreeSet<_>>()
            .len()
    );
}

/// The extraction finds what the runbooks really show: a floor on the count and the verbs an
/// on-call person needs, so a broken extractor (finding nothing) cannot pass the test above.
#[test]
fn the_extraction_finds_the_runbooks_commands() {
    let commands = documented();
    assert!(
        commands.len() >= 80,
        "only {} commands found in runbooks/ and README.md: is the extraction broken?",
        commands.len()
    );
    let verbs: BTreeSet<&str> = commands
        .iter()
        .filter_map(|c| c.argv.get(1).map(String::as_str))
        .collect();
    for verb in [
        "validate", "render", "plan", "deploy", "rollback", "status", "history", "logs", "doctor",
        "token", "audit", "edge", "bases", "vendor", "images", "soak", "cutover",
    ] {
        assert!(
            verbs.contains(verb),
            "no `mcpctl {verb}` in any runbook (found: {verbs:?})"
        );
    }
    let troubleshooting = commands
        .iter()
        .filter(|c| c.file == Path::new("runbooks/troubleshooting.md"))
        .count();
    assert!(
        troubleshooting >= 15,
        "runbooks/troubleshooting.md shows only {troubleshooting} mcpctl commands"
    );
}

#[test]
fn extraction_rules() {
    let md = r#"
Prose mentions `mcpctl deploy --bogus`, which is not a command line.

```sh
mcpctl status                 # a comment with a | pipe and --flag
$ mcpctl history SERVICE
LITELLM_MASTER_KEY=x mcpctl cutover check --litellm-url http://127.0.0.1:4000
export T="$(mcpctl token show litellm)"   # substitution
mcpctl token show litellm > litellm.token
mcpctl deploy fetch --yes -m "ROLL BACK # not a comment" && echo done
mcpctl soak --duration 10m \
  --rate 5
./target/debug/mcpctl logs <service> --tail N
docker ps   # not mcpctl
```
    mcpctl deploy --not-in-a-fence
~~~
mcpctl version
~~~
"#;
    let got = from_markdown(Path::new("x.md"), md).expect("extracts");
    let argv: Vec<String> = got.iter().map(|c| c.argv.join(" ")).collect();
    assert_eq!(
        argv,
        [
            "mcpctl status",
            "mcpctl history fetch",
            "mcpctl cutover check --litellm-url http://127.0.0.1:4000",
            "mcpctl token show litellm",
            "mcpctl token show litellm",
            "mcpctl deploy fetch --yes -m ROLL BACK # not a comment",
            "mcpctl soak --duration 10m --rate 5",
            "mcpctl logs fetch --tail 1",
            "mcpctl version",
        ]
    );
    let lines: Vec<usize> = got.iter().map(|c| c.line).collect();
    assert_eq!(lines, [5, 6, 7, 8, 9, 10, 11, 13, 18]);
    // The quoted message stays one word (a placeholder inside quotes is text).
    assert_eq!(got[5].argv.last().unwrap(), "ROLL BACK # not a comment");
    for c in &got {
        parse(&c.argv).unwrap_or_else(|e| panic!("{}: {e}", c.text));
    }
}

#[test]
fn a_stale_command_or_unknown_placeholder_is_reported_with_its_place() {
    let md = "```sh\nmcpctl deploy --no-such-flag\nmcpctl logs WIDGET\n```\n";
    let err = from_markdown(Path::new("runbooks/x.md"), md).unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].starts_with("runbooks/x.md:3:") && err[0].contains("WIDGET"),
        "{err:?}"
    );
    let md = "```sh\nmcpctl deploy --no-such-flag\n```\n";
    let got = from_markdown(Path::new("runbooks/x.md"), md).unwrap();
    let e = parse(&got[0].argv).expect_err("an unknown flag must not parse");
    assert!(e.to_string().contains("--no-such-flag"), "{e}");
    // A removed subcommand fails too.
    let e = parse(&["mcpctl".into(), "frobnicate".into()]).expect_err("no such subcommand");
    assert!(e.to_string().contains("frobnicate"), "{e}");
}
