//! Porting planned modules: each x86_64 module is derived from its ARM64 source.
//!
//! Three shapes, by where the plan puts the target:
//! - mirrored (`arch/aarch64/gic.rs` → `arch/x86_64/gic.rs`, a gated subtree or an
//!   arch-named crate → `…/x86_64/…`): the whole module is derived (derive.rs);
//! - in place (a crate root, `arch/mod.rs`, shared code): x86_64 twins of the items
//!   that reach into the ARM64 layer (wiring.rs);
//! - split (`guest.rs` → `guest/x86_64.rs`): ARM64 items of the source are gated to
//!   aarch64 and the x86_64 child, re-exported, provides their counterparts.
//!
//! Every crate that gets x86_64 modules also gets the generic VT-x support library
//! (support.rs). Coverage is counted from the text written (coverage.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::coverage::{items_of, ItemReport, ItemStatus};
use super::deps::{drop_imports_of, gate_to_aarch64, ident_of, names_crate, ArmDependency};
use super::derive::{mirror, MirrorContext};
use super::source::items;
use super::wiring;
use crate::knowledge::Knowledge;
use crate::plan::{ModulePlan, Plan};

/// What happened to one item the engine could not port.
#[derive(Debug, Clone, Serialize)]
pub struct Unported {
    /// The item's name (`name` or `Type::name`).
    pub item: String,
    /// Why: the stub's message, or the item's status.
    pub reason: String,
}

/// How a module was ported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A new x86_64 file beside the ARM64 one (`arch/aarch64/x.rs` → `arch/x86_64/x.rs`).
    Mirrored,
    /// The file itself, its ARM64 items gated and x86_64 twins added (`#[cfg]` wiring).
    InPlace,
    /// The file's ARM64 items gated to aarch64, and the file delegating to an x86_64
    /// child module derived from them.
    Split,
}

/// The port of one planned module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReport {
    /// The module's path.
    pub module_path: String,
    /// Its component.
    pub component: String,
    /// The ARM64 source, workspace-relative.
    pub source: String,
    /// The x86_64 file written, workspace-relative.
    pub target: String,
    /// How it was ported.
    pub mode: Mode,
    /// The agent whose model answer replaced the engine's draft (LLM backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ported_by: Option<String>,
    /// Items counted (missing API items included).
    pub items_total: usize,
    /// Items with a real body.
    pub items_ported: usize,
    /// The items not ported, with why.
    pub unported: Vec<Unported>,
    /// Every item of the x86_64 text written for the module, with its status, and the
    /// items of its API the text has nothing for (`missing`).
    pub items: Vec<ItemReport>,
    /// The module's API items the engine's draft lacks (`(name, item)`, from the ARM64
    /// source's public items): reported `missing` while the written text lacks them.
    #[serde(skip)]
    pub expected: Vec<(String, String)>,
}

impl ModuleReport {
    /// A report whose figures come from `items` (the offline engine's, unless they say
    /// who wrote them).
    pub fn new(m: &ModulePlan, mode: Mode, mut items: Vec<ItemReport>) -> Self {
        for i in &mut items {
            if i.by.is_none() {
                i.by = Some("engine".into());
            }
        }
        let mut r = ModuleReport {
            module_path: m.module_path.clone(),
            component: m.component.to_string(),
            source: m.source.clone(),
            target: m.target.clone(),
            mode,
            ported_by: None,
            items_total: 0,
            items_ported: 0,
            unported: Vec::new(),
            items: Vec::new(),
            expected: Vec::new(),
        };
        r.set_items(items);
        r
    }

    /// The same report, holding the written text to the API items `expected` (see
    /// [`crate::swarm::contract::absent_from`]): those it lacks count as `missing`.
    pub fn expecting(mut self, expected: Vec<(String, String)>) -> Self {
        self.expected = expected;
        let items = std::mem::take(&mut self.items);
        self.set_items(items);
        self
    }

    /// Recounts the module from the items of its new text, crediting `by` (and
    /// `model`) with the items that are new or changed (see
    /// [`super::coverage::attribute`]).
    pub fn set_items_by(&mut self, mut items: Vec<ItemReport>, by: &str, model: Option<&str>) {
        super::coverage::attribute(&self.items, &mut items, by, model);
        self.set_items(items);
    }

    /// Recounts the module from the items of its final text, with a `missing` item for
    /// each expected API item the text has nothing of that name for.
    pub fn set_items(&mut self, mut items: Vec<ItemReport>) {
        items.retain(|i| i.status != ItemStatus::Missing);
        for (name, item) in &self.expected {
            if !items.iter().any(|i| &i.name == name) {
                items.push(ItemReport {
                    name: name.clone(),
                    kind: "api",
                    status: ItemStatus::Missing,
                    reason: Some(format!("the written module has no `{item}`")),
                    by: None,
                    model: None,
                    text_hash: 0,
                });
            }
        }
        self.items_total = items.len();
        self.items_ported = items
            .iter()
            .filter(|i| i.status == ItemStatus::Ported)
            .count();
        self.unported = items
            .iter()
            .filter(|i| i.status != ItemStatus::Ported)
            .map(|i| Unported {
                item: i.name.clone(),
                reason: i
                    .reason
                    .clone()
                    .unwrap_or_else(|| i.status.as_str().to_string()),
            })
            .collect();
        self.items = items;
    }
}

/// One file the port writes (relative to the workspace root).
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Workspace-relative path.
    pub rel: String,
    /// The file's new content.
    pub new: String,
}

/// Everything a port computes; nothing is written yet.
#[derive(Debug, Default)]
pub struct PortOutput {
    /// Every file the port would write.
    pub changes: Vec<FileChange>,
    /// Every module ported.
    pub modules: Vec<ModuleReport>,
    /// ARM-only dependencies moved under the aarch64 target table: (package, name).
    pub gated_dependencies: Vec<(String, String)>,
    /// The files the tool owns (x86_64 modules and the support library), as opposed to
    /// the user's files it edits (crate roots, wiring, manifests).
    pub generated: BTreeSet<String>,
}

impl PortOutput {
    /// Items counted over all modules.
    pub fn items_total(&self) -> usize {
        self.modules.iter().map(|m| m.items_total).sum()
    }
    /// Items ported over all modules.
    pub fn items_ported(&self) -> usize {
        self.modules.iter().map(|m| m.items_ported).sum()
    }
}

/// Inputs of a port.
pub struct PortJob<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The whole plan (which modules have x86_64 twins).
    pub full: &'a Plan,
    /// The modules to port now.
    pub selected: &'a Plan,
    /// The concept map.
    pub knowledge: &'a Knowledge,
    /// Crate name (`my_crate`) → its root file, workspace-relative.
    pub crate_roots: &'a BTreeMap<String, String>,
    /// Package name → its `Cargo.toml`, workspace-relative.
    pub manifests: &'a BTreeMap<String, String>,
    /// The plan's ARM-only dependencies.
    pub arm_dependencies: &'a [ArmDependency],
}

/// The shape of a module's port, from its source and target.
pub fn mode_of(m: &ModulePlan) -> Mode {
    if m.source == m.target {
        return Mode::InPlace;
    }
    let file = m.source.rsplit('/').next().unwrap_or(&m.source);
    let dir = m.source.rsplit_once('/').map_or("", |(d, _)| d);
    let split_target = match file {
        "mod.rs" | "lib.rs" | "main.rs" => format!("{dir}/x86_64.rs"),
        f => format!("{dir}/{}/x86_64.rs", f.trim_end_matches(".rs")),
    };
    let split_target = split_target.trim_start_matches('/');
    let arm_named = matches!(file, "aarch64.rs" | "arm64.rs");
    if m.target == split_target && !arm_named {
        Mode::Split
    } else {
        Mode::Mirrored
    }
}

fn read(root: &Path, rel: &str) -> Result<String> {
    let p = root.join(rel);
    std::fs::read_to_string(&p).with_context(|| format!("could not read {}", p.display()))
}

/// Computes the port of `job.selected`'s modules.
pub fn port(job: &PortJob<'_>) -> Result<PortOutput> {
    let mut out = PortOutput::default();
    // Files edited by more than one step are edited in sequence.
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let current = |pending: &BTreeMap<String, String>, rel: &str| -> Result<String> {
        match pending.get(rel) {
            Some(t) => Ok(t.clone()),
            None => read(job.root, rel),
        }
    };
    // Module path → target of every planned module whose x86_64 twin replaces it
    // (a split module stays and gets a child instead).
    let elsewhere: BTreeMap<&str, &str> = job
        .full
        .modules
        .iter()
        .filter(|m| mode_of(m) == Mode::Mirrored)
        .map(|m| (m.module_path.as_str(), m.target.as_str()))
        .collect();
    let mut x86_crates: BTreeSet<String> = BTreeSet::new();
    for m in &job.selected.modules {
        let source_text = current(&pending, &m.source)?;
        let source_path = job.root.join(&m.source);
        let src_items = items(&source_text, &source_path, job.knowledge)
            .map_err(|e| anyhow::anyhow!("{}:{}: does not parse: {e}", m.source, e.line))?;
        let crate_name = m.module_path.split("::").next().unwrap_or_default();
        let mode = mode_of(m);
        let mut expected = Vec::new();
        let report_items = match mode {
            Mode::InPlace => {
                let children: BTreeMap<String, String> = src_items
                    .iter()
                    .filter_map(|i| i.mod_decl.clone())
                    .filter_map(|name| {
                        let path = format!("{}::{name}", m.module_path);
                        elsewhere.get(path.as_str()).map(|t| (name, t.to_string()))
                    })
                    .collect();
                let wired = wiring::in_place(
                    &m.source,
                    &source_text,
                    &src_items,
                    &children,
                    job.knowledge,
                );
                pending.insert(m.source.clone(), wiring::gate_arm_features(&wired.text));
                wired.twins.iter().flat_map(|t| items_of(t)).collect()
            }
            Mode::Mirrored => {
                let child_is_ported = |name: &str| {
                    let path = format!("{}::{name}", m.module_path);
                    elsewhere.contains_key(path.as_str())
                };
                let text = mirror(
                    &source_text,
                    &src_items,
                    &MirrorContext {
                        source: &m.source,
                        target: &m.target,
                        child_is_ported: &child_is_ported,
                        knowledge: job.knowledge,
                    },
                );
                let text = keep_fix_stubs(job.root, &m.target, text);
                expected = crate::swarm::contract::absent_from(&text, &m.items);
                let report = items_of(&text);
                pending.insert(m.target.clone(), text);
                out.generated.insert(m.target.clone());
                x86_crates.insert(crate_name.to_string());
                report
            }
            Mode::Split => {
                let child =
                    wiring::split_child(&m.module_path, &m.source, &src_items, job.knowledge);
                let child = keep_fix_stubs(job.root, &m.target, child);
                let gated = wiring::gate_and_delegate(&source_text, &src_items, &child);
                let report = items_of(&child);
                pending.insert(m.target.clone(), child);
                out.generated.insert(m.target.clone());
                pending.insert(m.source.clone(), gated);
                x86_crates.insert(crate_name.to_string());
                report
            }
        };
        out.modules
            .push(ModuleReport::new(m, mode, report_items).expecting(expected));
    }
    skip_undeclared_children(job, &elsewhere, &mut pending, &mut out);
    gate_arm_dependencies(job, &mut pending, &mut out)?;
    for krate in &x86_crates {
        if let Some(root_rel) = job.crate_roots.get(krate) {
            super::support::install(job.root, root_rel, &mut pending).with_context(|| {
                format!("installing the x86_64 support library into {root_rel}")
            })?;
        }
    }
    for (rel, new) in pending {
        out.changes.push(FileChange { rel, new });
    }
    Ok(out)
}

/// A derived module whose x86_64 parent is a file of the workspace's own (it exists and
/// does not declare the module) is not written: nothing would compile it. Its report
/// says so.
fn skip_undeclared_children(
    job: &PortJob<'_>,
    elsewhere: &BTreeMap<&str, &str>,
    pending: &mut BTreeMap<String, String>,
    out: &mut PortOutput,
) {
    for report in &mut out.modules {
        if report.mode != Mode::Mirrored {
            continue;
        }
        let Some((parent, name)) = report.module_path.rsplit_once("::") else {
            continue;
        };
        let Some(parent_target) = elsewhere.get(parent) else {
            continue;
        };
        let Ok(existing) = std::fs::read_to_string(job.root.join(parent_target)) else {
            continue;
        };
        let declares = syn::parse_file(&existing).is_ok_and(|f| {
            f.items
                .iter()
                .any(|i| matches!(i, syn::Item::Mod(m) if m.ident == name))
        });
        proc_macro2::extra::invalidate_current_thread_spans();
        // A parent the tool derived (its header says so) is rewritten with the line.
        if declares || existing.starts_with(super::derive::HEADER_START) {
            continue;
        }
        pending.remove(&report.target);
        out.generated.remove(&report.target);
        report.set_items(vec![ItemReport {
            name: "(module)".into(),
            kind: "module",
            status: ItemStatus::Stubbed,
            reason: Some(format!(
                "not written: {parent_target} exists, is not the tool's, and does not declare `mod {name}`"
            )),
            by: Some("engine".into()),
            model: None,
            text_hash: 0,
        }]);
    }
}

/// After a model answered the x86_64 child of split modules: each parent is gated
/// anew against the child it will have, so items only the answer uses stay visible to
/// it (the engine's draft may have used fewer of the parent's private items).
pub fn regate_split_parents(
    root: &Path,
    output: &mut PortOutput,
    knowledge: &Knowledge,
) -> Result<()> {
    let answered: Vec<(String, String)> = output
        .modules
        .iter()
        .filter(|m| m.mode == Mode::Split && m.ported_by.is_some())
        .map(|m| (m.source.clone(), m.target.clone()))
        .collect();
    for (source, target) in answered {
        let Some(child) = output
            .changes
            .iter()
            .find(|c| c.rel == target)
            .map(|c| c.new.clone())
        else {
            continue;
        };
        let text = read(root, &source)?;
        let src_items = items(&text, &root.join(&source), knowledge)
            .map_err(|e| anyhow::anyhow!("{source}:{}: does not parse: {e}", e.line))?;
        let gated = wiring::gate_and_delegate(&text, &src_items, &child);
        match output.changes.iter_mut().find(|c| c.rel == source) {
            Some(c) => c.new = gated,
            None => output.changes.push(FileChange {
                rel: source,
                new: gated,
            }),
        }
    }
    Ok(())
}

/// The derived `text` of `target` with the stubs the fix loop put in its last version.
fn keep_fix_stubs(root: &Path, target: &str, text: String) -> String {
    match std::fs::read_to_string(root.join(target)) {
        Ok(existing) => super::fix::carry_fix_stubs(&text, &existing),
        Err(_) => text,
    }
}

/// Drops the imports of ARM-only dependencies from the x86_64 code of each package
/// whose planned modules all have their x86_64 side now, and moves each dependency
/// that no x86_64 code names any more under the aarch64 target table.
fn gate_arm_dependencies(
    job: &PortJob<'_>,
    pending: &mut BTreeMap<String, String>,
    out: &mut PortOutput,
) -> Result<()> {
    let selected: BTreeSet<&str> = job
        .selected
        .modules
        .iter()
        .map(|m| m.module_path.as_str())
        .collect();
    let mut by_package: BTreeMap<&str, Vec<&ArmDependency>> = BTreeMap::new();
    for d in job.arm_dependencies {
        if !d.used_outside_arm64 {
            by_package.entry(d.package.as_str()).or_default().push(d);
        }
    }
    for (package, deps) in by_package {
        let modules: Vec<&ModulePlan> = job
            .full
            .modules
            .iter()
            .filter(|m| m.package == package)
            .collect();
        // Every planned module of the package has its x86_64 side (this run or before).
        let complete = modules.iter().all(|m| {
            selected.contains(m.module_path.as_str())
                || (mode_of(m) != Mode::InPlace && job.root.join(&m.target).is_file())
        });
        let Some(manifest) = job.manifests.get(package) else {
            continue;
        };
        if !complete || modules.is_empty() {
            continue;
        }
        let text_of = |rel: &str, pending: &BTreeMap<String, String>| {
            pending
                .get(rel)
                .cloned()
                .or_else(|| std::fs::read_to_string(job.root.join(rel)).ok())
                .unwrap_or_default()
        };
        let mut gate = Vec::new();
        for d in deps {
            let ident = ident_of(&d.name);
            let mut still = false;
            for m in &modules {
                if mode_of(m) == Mode::InPlace {
                    // Only what the x86_64 build compiles: items not gated to aarch64.
                    let text = text_of(&m.source, pending);
                    let path = job.root.join(&m.source);
                    if let Ok(items) = items(&text, &path, job.knowledge) {
                        still |= items
                            .iter()
                            .filter(|i| !i.cfg_aarch64)
                            .any(|i| names_crate(&i.text, &ident));
                    }
                    continue;
                }
                let text = text_of(&m.target, pending);
                let dropped = drop_imports_of(&text, &ident);
                still |= names_crate(&dropped, &ident);
                if dropped != text {
                    pending.insert(m.target.clone(), dropped);
                }
            }
            if !still {
                gate.push(d.name.clone());
            }
        }
        if gate.is_empty() {
            continue;
        }
        let text = text_of(manifest, pending);
        let new = gate_to_aarch64(&text, &gate)
            .with_context(|| format!("{manifest} is not valid TOML"))?;
        if let Some(new) = new {
            pending.insert(manifest.clone(), new);
            out.gated_dependencies
                .extend(gate.into_iter().map(|n| (package.to_string(), n)));
        }
    }
    Ok(())
}
