//! `bases:` of the manifest → local images. The recipe (bases.sh) does the work; this module picks
//! what to build, runs suites and variants in parallel, and points the stable reference the
//! Dockerfiles use (`mcpctl-base/<name>:<suite>`) at the recipe-hash tag.

use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use crate::locks::{self, MutexExt};
use crate::manifest::{Base, Manifest};
use crate::render::view::base_ref;

/// One base as the manifest describes it, with the tags it maps to.
#[derive(Debug, Clone, Serialize)]
pub struct BaseSpec {
    pub name: String,
    pub suite: String,
    pub node: Option<String>,
    pub packages: Vec<String>,
    /// What service Dockerfiles name in `FROM`.
    pub reference: String,
    /// `mcpctl-base/<name>:<suite>-<recipe hash>`; None when the manifest names an upstream image.
    pub hash_tag: Option<String>,
}

impl BaseSpec {
    fn recipe_args(&self) -> Vec<String> {
        let mut a = vec![
            self.name.clone(),
            self.suite.clone(),
            self.node.clone().unwrap_or_else(|| "-".into()),
        ];
        a.extend(self.packages.iter().cloned());
        a
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseStatus {
    #[serde(flatten)]
    pub spec: BaseSpec,
    /// The recipe-hash tag exists.
    pub built: bool,
    /// The stable reference points at the recipe-hash tag.
    pub current: bool,
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Built {
    pub name: String,
    pub reference: String,
    pub hash_tag: String,
    /// False when the image was already there (nothing was done).
    pub built_now: bool,
    pub seconds: f64,
    pub size_bytes: Option<u64>,
}

/// The bases named (all of them when `names` is empty), in manifest order.
pub fn specs(m: &Manifest, names: &[String]) -> anyhow::Result<Vec<BaseSpec>> {
    for n in names {
        if !m.bases.contains_key(n) {
            let known: Vec<&str> = m.bases.keys().map(String::as_str).collect();
            return Err(crate::error::CommandError::usage(format!(
                "unknown base '{n}' (the manifest defines: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    m.bases
        .iter()
        .filter(|(n, _)| names.is_empty() || names.contains(n))
        .map(|(n, b)| spec(m, n, b))
        .collect()
}

fn spec(m: &Manifest, name: &str, b: &Base) -> anyhow::Result<BaseSpec> {
    let mut s = BaseSpec {
        name: name.to_string(),
        suite: b.suite.to_string(),
        node: b.node.clone(),
        packages: b.packages.clone(),
        reference: base_ref(m, name),
        hash_tag: None,
    };
    if b.image.is_none() {
        let args = s.recipe_args();
        let mut a = vec!["tag"];
        a.extend(args.iter().map(String::as_str));
        s.hash_tag = Some(super::run_recipe(&a)?);
    }
    Ok(s)
}

/// Image id and size of `reference`, if the engine has it.
fn inspect(reference: &str) -> Option<(String, u64)> {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.Size}}",
            reference,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    Some((it.next()?.to_string(), it.next()?.parse().ok()?))
}

pub fn status(specs: Vec<BaseSpec>) -> Vec<BaseStatus> {
    specs
        .into_iter()
        .map(|spec| {
            let reference = inspect(&spec.reference);
            let (built, current, size) = match &spec.hash_tag {
                Some(tag) => {
                    let h = inspect(tag);
                    let current = matches!((&h, &reference), (Some(a), Some(b)) if a.0 == b.0);
                    (h.is_some(), current, h.map(|x| x.1))
                }
                None => (
                    reference.is_some(),
                    reference.is_some(),
                    reference.as_ref().map(|x| x.1),
                ),
            };
            BaseStatus {
                spec,
                built,
                current,
                size_bytes: size,
            }
        })
        .collect()
}

/// What [`build`] is doing, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// The minbase of this suite is being made.
    Minbase(&'a str),
    /// This base is being built (or found).
    Base(&'a str),
    /// This base is done (built, found, or failed).
    Done(&'a str),
}

/// Builds what is missing: the minbase of each suite first (in parallel), then the variants (in
/// parallel, at most `jobs` at a time), then tags each stable reference. Bases that name an upstream
/// `image:` are skipped (pull them yourself). `on_step` hears of each step, from any thread.
pub fn build(
    specs: &[BaseSpec],
    jobs: usize,
    on_step: &(dyn Fn(Step<'_>) + Sync),
) -> anyhow::Result<Vec<Built>> {
    let todo: Vec<&BaseSpec> = specs.iter().filter(|s| s.hash_tag.is_some()).collect();
    let missing: Vec<&BaseSpec> = todo
        .iter()
        .copied()
        .filter(|s| inspect(s.hash_tag.as_deref().unwrap()).is_none())
        .collect();
    let mut suites: Vec<&str> = missing.iter().map(|s| s.suite.as_str()).collect();
    suites.sort();
    suites.dedup();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = suites
            .iter()
            .map(|suite| {
                on_step(Step::Minbase(suite));
                scope.spawn(move || super::run_recipe(&["minbase", suite]))
            })
            .collect();
        for h in handles {
            h.join().expect("minbase thread")?;
        }
        Ok(())
    })?;

    let results = std::sync::Mutex::new(Vec::new());
    let queue = std::sync::Mutex::new(todo.clone());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(s) = queue.lock_ignore_poison().pop() else {
                    break;
                };
                on_step(Step::Base(&s.name));
                let r = build_one(s);
                on_step(Step::Done(&s.name));
                results.lock_ignore_poison().push((s.name.clone(), r));
            });
        }
    });
    let mut built = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in locks::into_inner_ignore_poison(results) {
        match r {
            Ok(b) => built.push(b),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("base images failed:\n  {}", errors.join("\n  "));
    }
    let order: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    built.sort_by_key(|b| order.iter().position(|n| *n == b.name));
    Ok(built)
}

fn build_one(s: &BaseSpec) -> anyhow::Result<Built> {
    let tag = s.hash_tag.clone().expect("only local bases are built");
    let t0 = Instant::now();
    let existed = inspect(&tag).is_some();
    if !existed {
        let args = s.recipe_args();
        let mut a = vec!["variant"];
        a.extend(args.iter().map(String::as_str));
        let got = super::run_recipe(&a)?;
        anyhow::ensure!(got == tag, "the recipe built {got}, expected {tag}");
    }
    let st = Command::new("docker")
        .args(["tag", &tag, &s.reference])
        .status()
        .context("docker tag")?;
    anyhow::ensure!(st.success(), "docker tag {tag} {} failed", s.reference);
    Ok(Built {
        name: s.name.clone(),
        reference: s.reference.clone(),
        hash_tag: tag.clone(),
        built_now: !existed,
        seconds: t0.elapsed().as_secs_f64(),
        size_bytes: inspect(&tag).map(|x| x.1),
    })
}
