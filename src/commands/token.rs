//! `mcpctl token list | show NAME | rotate NAME`: the consumers' bearer tokens (`crate::auth`).
//! `list` shows fingerprints only; `show` prints one token, on request, to stdout and nowhere
//! else (a pipe or a file: `mcpctl token show litellm > litellm.token`); `rotate` moves a
//! generated token to its next generation, which the next deploy rolls out.

use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::open_project;
use crate::auth;
use crate::error::{CommandError, ExitCode};
use crate::manifest::{AuthMode, MCPCTL_CONSUMER};
use crate::output::{self, Render};
use crate::rollout::secrets;
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: Option<TokenAction>,
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Every consumer: where its token comes from, its fingerprint (HMAC under the install key,
    /// never the token), its generation and the services that accept it (default).
    List,
    /// Print one consumer's token to stdout, for handing it to a person or a client (e.g.
    /// `export MCPCTL_TOKEN_LITELLM="$(mcpctl token show litellm)"`). Nothing else prints it.
    Show {
        /// The consumer (`auth.consumers`, or `mcpctl`).
        name: String,
    },
    /// Replace a generated token by its next generation. The old token keeps working until the
    /// next `mcpctl deploy` rolls every service that accepts it (runbooks/access-control.md).
    Rotate { name: String },
    /// Print a service's bridge access file (the `mcpctl_auth` secret: token digests, rates, JWT
    /// settings; no token), for running the rendered docker-compose.yml without mcpctl:
    /// `mcpctl token bridge-file fetch > secrets/fetch/mcpctl_auth`. Empty for auth mode `none`.
    BridgeFile { service: String },
}

#[derive(Serialize)]
struct Row {
    consumer: String,
    source: String,
    fingerprint: Option<String>,
    generation: Option<u64>,
    services: Vec<String>,
}

#[derive(Serialize)]
struct Listing {
    consumers: Vec<Row>,
    /// Services that take no token (auth mode `none`).
    open_services: Vec<String>,
}

impl Render for Listing {
    fn human(&self) -> String {
        let rows = self
            .consumers
            .iter()
            .map(|r| {
                vec![
                    r.consumer.clone(),
                    r.source.clone(),
                    r.fingerprint.clone().unwrap_or_else(|| "(not set)".into()),
                    r.generation.map(|g| g.to_string()).unwrap_or("-".into()),
                    r.services.join(" "),
                ]
            })
            .collect();
        let mut t = output::table(
            &["CONSUMER", "SOURCE", "FINGERPRINT", "GEN", "SERVICES"],
            rows,
        );
        if !self.open_services.is_empty() {
            t.push_str(&format!(
                "\nno token needed (auth mode none): {}",
                self.open_services.join(" ")
            ));
        }
        t
    }
}

#[derive(Serialize)]
struct Rotated {
    consumer: String,
    generation: u64,
    next: &'static str,
}

impl Render for Rotated {
    fn human(&self) -> String {
        format!(
            "{}: token rotated to generation {}. {}",
            self.consumer, self.generation, self.next
        )
    }
}

pub fn run(settings: &Settings, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let project = open_project(settings)?;
    let m = &project.manifest;
    let state = &project.state_dir;
    match args.action.as_ref().unwrap_or(&TokenAction::List) {
        TokenAction::List => {
            let key = secrets::install_key(state)?;
            let mut consumers = Vec::new();
            let services_of = |c: &str| -> Vec<String> {
                m.services
                    .keys()
                    .filter(|s| m.services[*s].role == crate::manifest::Role::Service)
                    .filter(|s| {
                        let e = auth::effective(m, s);
                        e.mode != AuthMode::None && e.consumers.iter().any(|x| x == c)
                    })
                    .cloned()
                    .collect()
            };
            // Resolve one at a time so an unset from_env token shows as "(not set)".
            let names: Vec<String> = std::iter::once(MCPCTL_CONSUMER.to_string())
                .chain(m.auth.consumers.keys().cloned())
                .collect();
            let resolved = auth::resolve_tokens(m, &project.manifest_dir, state, &key).ok();
            for name in names {
                let (source, generation) = match m.auth.consumers.get(&name) {
                    None => ("generated (install key)".to_string(), None),
                    Some(c) if c.token.generate => (
                        "generated (install key)".to_string(),
                        Some(auth::generation(state, &name)?),
                    ),
                    Some(c) => (secrets::describe_source(&c.token), None),
                };
                let fingerprint = resolved
                    .as_ref()
                    .and_then(|r| r.iter().find(|t| t.consumer == name))
                    .map(|t| auth::fingerprint(&key, t));
                consumers.push(Row {
                    services: services_of(&name),
                    consumer: name,
                    source,
                    fingerprint,
                    generation,
                });
            }
            let open_services = m
                .services
                .keys()
                .filter(|s| m.services[*s].role == crate::manifest::Role::Service)
                .filter(|s| auth::effective(m, s).mode == AuthMode::None)
                .cloned()
                .collect();
            output::emit(
                settings,
                &Listing {
                    consumers,
                    open_services,
                },
            )?;
        }
        TokenAction::Show { name } => {
            let key = secrets::install_key(state)?;
            known(m, name)?;
            let tokens = auth::resolve_tokens(m, &project.manifest_dir, state, &key)?;
            let t = tokens.iter().find(|t| &t.consumer == name).ok_or_else(|| {
                CommandError::usage(format!(
                    "consumer `{name}` has no token: its optional source is not set"
                ))
            })?;
            // The one place a token is printed: stdout, raw, whatever --output says.
            output::write_stdout(t.expose());
        }
        TokenAction::BridgeFile { service } => {
            if !m.services.contains_key(service) {
                return Err(
                    CommandError::usage(format!("no service `{service}` in the manifest")).into(),
                );
            }
            let key = secrets::install_key(state)?;
            let tokens = auth::resolve_tokens(m, &project.manifest_dir, state, &key)?;
            if let Some(bytes) = auth::bridge_file(m, service, &tokens, &project.manifest_dir)? {
                output::write_stdout(&String::from_utf8_lossy(&bytes));
            }
        }
        TokenAction::Rotate { name } => {
            known(m, name)?;
            let generation =
                auth::rotate(m, state, name).map_err(|e| CommandError::usage(e.to_string()))?;
            output::emit(
                settings,
                &Rotated {
                    consumer: name.clone(),
                    generation,
                    next: "Run `mcpctl deploy` to roll it out (every service that accepts it is replaced); then hand the new token over with `mcpctl token show`.",
                },
            )?;
        }
    }
    Ok(ExitCode::Ok)
}

fn known(m: &crate::manifest::Manifest, name: &str) -> anyhow::Result<()> {
    if name == MCPCTL_CONSUMER || m.auth.consumers.contains_key(name) {
        return Ok(());
    }
    Err(CommandError::usage(format!(
        "no consumer `{name}` (consumers: {}); add it under auth.consumers in the manifest",
        std::iter::once(MCPCTL_CONSUMER)
            .chain(m.auth.consumers.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .into())
}
