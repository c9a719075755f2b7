//! The port: its summary (coverage, files, tasks, the fix loop) as JSON and for a
//! person.

use std::fmt::Write as _;

use super::{BOLD, DIM, WARNING};
use crate::plan::Plan;

/// Items ported over items total.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Coverage {
    /// Items ported (a real body).
    pub ported: usize,
    /// Items counted in the written text (and missing API items).
    pub total: usize,
    /// Items not ported: stubbed, left out or missing.
    pub unported: usize,
    /// `ported` of `total`, in percent.
    pub percent: f64,
}

/// One file of a port and what was done with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileResult {
    /// Workspace-relative path.
    pub path: String,
    #[serde(flatten)]
    /// What the writer did with it.
    pub action: crate::writer::Action,
}

impl FileResult {
    /// Whether the file was not written because someone edited it.
    pub fn skipped(&self) -> bool {
        matches!(self.action, crate::writer::Action::SkipEdited { .. })
    }
}

/// Token usage and cost of a run's model requests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UsageTotals {
    /// Requests sent to the model server.
    pub requests: u32,
    /// Answers taken from the store's cache instead.
    pub cache_hits: u32,
    /// Prompt tokens, as the server reported them.
    pub prompt_tokens: u64,
    /// Answer tokens, as the server reported them.
    pub completion_tokens: u64,
    /// In the provider's currency (OpenRouter: USD credits), when it reports one.
    pub cost: Option<f64>,
}

/// The outcome of `cargo eterna-port [port]` (also its JSON document; with
/// `--message-format json` it is the last line, after the swarm's events).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortSummary {
    /// `port-finished`: tells this line from the event lines before it.
    pub reason: &'static str,
    /// The document's version.
    pub schema_version: u32,
    /// `offline` or `llm`.
    pub backend: &'static str,
    /// The model the LLM backend used (`None` offline).
    pub model: Option<String>,
    /// The x86_64 target triple.
    pub target_triple: String,
    /// Nothing was written (`--dry-run`).
    pub dry_run: bool,
    /// Items ported of all items, over every module.
    pub coverage: Coverage,
    /// Every module with its items.
    pub modules: Vec<crate::engine::port::ModuleReport>,
    /// One per agent task, in plan order.
    pub tasks: Vec<crate::swarm::TaskResult>,
    /// What the model was asked, and what it cost.
    pub usage: UsageTotals,
    /// Every file the writer decided on.
    pub files: Vec<FileResult>,
    /// The cargo check fix loop after the writes (LLM backend), if it ran.
    pub fix_loop: Option<FixLoopSummary>,
    /// ARM-only dependencies moved under `[target.'cfg(target_arch = "aarch64")'.dependencies]`.
    pub gated_dependencies: Vec<GatedDependency>,
}

/// An ARM-only dependency the port moved under the aarch64 target table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatedDependency {
    /// The package whose manifest changed.
    pub package: String,
    /// The dependency's key.
    pub name: String,
}

/// How the fix loop ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FixLoopSummary {
    /// `clean`, `max-iterations`, `no-progress`, `no-fixer`, `outside-modules`,
    /// `not-compiled`, `regressed`.
    pub stop: &'static str,
    /// The stop reason, for a person.
    pub explanation: &'static str,
    /// The target the loop checked (the host's after a fallback).
    pub target_triple: String,
    /// Fix rounds made, those backed out included.
    pub fix_rounds: usize,
    /// Rounds backed out because they made things worse (each iteration's
    /// `regression` says which and why).
    pub regressed: usize,
    /// Every iteration.
    pub iterations: Vec<crate::fixloop::IterationSummary>,
    /// Errors after the last check.
    pub errors_left: usize,
    /// `file:line: message` of the first error left, if any.
    pub first_error: Option<String>,
    /// Time in `cargo check`, in milliseconds.
    pub check_ms: u64,
    /// Wall time of the loop, in milliseconds.
    pub total_ms: u64,
}

impl PortSummary {
    /// The summary of a port: coverage from the modules' items, files from the writer's decisions.
    pub fn new(
        selected: &Plan,
        output: &crate::engine::port::PortOutput,
        planned: &[crate::writer::Planned],
        dry_run: bool,
    ) -> Self {
        let total = output.items_total();
        let ported = output.items_ported();
        PortSummary {
            reason: "port-finished",
            schema_version: 1,
            backend: "offline",
            model: None,
            tasks: Vec::new(),
            usage: UsageTotals::default(),
            fix_loop: None,
            target_triple: selected.target_triple.clone(),
            dry_run,
            coverage: Coverage {
                ported,
                total,
                unported: output.modules.iter().map(|m| m.unported.len()).sum(),
                percent: if total == 0 {
                    100.0
                } else {
                    (ported as f64 * 1000.0 / total as f64).round() / 10.0
                },
            },
            modules: output.modules.clone(),
            gated_dependencies: output
                .gated_dependencies
                .iter()
                .map(|(package, name)| GatedDependency {
                    package: package.clone(),
                    name: name.clone(),
                })
                .collect(),
            files: planned
                .iter()
                .map(|p| FileResult {
                    path: p.rel.clone(),
                    action: p.action.clone(),
                })
                .collect(),
        }
    }
}

/// The port summary as text.
pub fn port_human(s: &PortSummary, verbose: bool) -> String {
    use crate::writer::Action;
    let mut out = String::new();
    let verb = if s.dry_run { "Would port" } else { "Ported" };
    let engine = match &s.model {
        Some(m) => format!("agents on {m}"),
        None => "offline engine".to_string(),
    };
    let _ = writeln!(
        out,
        "{BOLD}{verb} {} module{} to {}{BOLD:#} ({engine})",
        s.modules.len(),
        if s.modules.len() == 1 { "" } else { "s" },
        s.target_triple
    );
    let _ = writeln!(out);
    let width = s
        .modules
        .iter()
        .map(|m| m.component.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let _ = writeln!(
        out,
        "{BOLD}{:>4}  {:<width$}  {:>7}  TARGET{BOLD:#}",
        "#", "COMPONENT", "ITEMS"
    );
    for (i, m) in s.modules.iter().enumerate() {
        let items = format!("{}/{}", m.items_ported, m.items_total);
        let how = match m.mode {
            _ if m.ported_by.is_some() => {
                format!("by {} on the model", m.ported_by.as_deref().unwrap_or(""))
            }
            crate::engine::port::Mode::InPlace => "cfg wiring in place".to_string(),
            crate::engine::port::Mode::Split => "x86_64 child, derived".to_string(),
            crate::engine::port::Mode::Mirrored => "derived from the source".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<width$}  {:>7}  {}  {DIM}({how}){DIM:#}",
            i + 1,
            m.component,
            items,
            m.target
        );
        if verbose {
            let _ = writeln!(
                out,
                "      {DIM}from{DIM:#} {} ({})",
                m.source, m.module_path
            );
        }
    }
    let _ = writeln!(out);
    let c = &s.coverage;
    let _ = writeln!(
        out,
        "Coverage: {}/{} items ({:.1}%)",
        c.ported, c.total, c.percent
    );
    let unported: Vec<_> = s
        .modules
        .iter()
        .flat_map(|m| m.unported.iter().map(move |u| (m, u)))
        .collect();
    if !unported.is_empty() {
        let _ = writeln!(
            out,
            "{WARNING}Not ported{WARNING:#} (an `unimplemented!` stub, or ARM64 assembly left out):"
        );
        const SHOWN: usize = 20;
        let count = unported.len();
        for (m, u) in unported
            .into_iter()
            .take(if verbose { usize::MAX } else { SHOWN })
        {
            let _ = writeln!(out, "  {}::{} — {}", m.module_path, u.item, u.reason);
        }
        if !verbose && count > SHOWN {
            let _ = writeln!(
                out,
                "  … and {} more (-v lists them all; --message-format json has every item with its status)",
                count - SHOWN
            );
        }
    }
    for d in &s.gated_dependencies {
        let _ = writeln!(
            out,
            "Moved ARM-only dependency `{}` of {} under [target.'cfg(target_arch = \"aarch64\")'.dependencies]",
            d.name, d.package
        );
    }
    let failed: Vec<_> = s
        .tasks
        .iter()
        .filter(|t| t.status != crate::swarm::TaskStatus::Done)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "{WARNING}Agent tasks that did not finish{WARNING:#}:");
        for t in failed {
            let _ = writeln!(
                out,
                "  {} ({}, {}): {}",
                t.module,
                t.agent,
                t.status.as_str(),
                t.error.as_deref().unwrap_or("cancelled")
            );
        }
    }
    for t in &s.tasks {
        let Some(c) = t.contract.as_ref().filter(|c| c.broken()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{WARNING}API contract{WARNING:#}: {} ({}): the answer still lacks {} and changes {} API item(s) after one resend; {} item(s) kept from the engine's draft{}",
            t.module,
            t.agent,
            c.missing.len(),
            c.changed.len(),
            c.kept_from_draft.len(),
            c.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    if s.model.is_some() {
        let u = &s.usage;
        let _ = writeln!(
            out,
            "Model: {} request{}, {} cached answer{}, {} prompt + {} completion tokens{}",
            u.requests,
            if u.requests == 1 { "" } else { "s" },
            u.cache_hits,
            if u.cache_hits == 1 { "" } else { "s" },
            u.prompt_tokens,
            u.completion_tokens,
            u.cost.map(|c| format!(", cost {c:.4}")).unwrap_or_default()
        );
    }
    if let Some(f) = &s.fix_loop {
        let checks = f.iterations.len();
        let _ = writeln!(
            out,
            "Fix loop ({}, {checks} cargo check{}, {} fix round{}): {}",
            f.target_triple,
            if checks == 1 { "" } else { "s" },
            f.fix_rounds,
            if f.fix_rounds == 1 { "" } else { "s" },
            f.explanation
        );
        if f.regressed > 0 {
            let _ = writeln!(
                out,
                "  {} round{} made things worse and {} backed out (files restored as they were)",
                f.regressed,
                if f.regressed == 1 { "" } else { "s" },
                if f.regressed == 1 { "was" } else { "were" }
            );
        }
        if let Some(e) = &f.first_error {
            let _ = writeln!(
                out,
                "  {} error{} left, the first: {e}",
                f.errors_left,
                if f.errors_left == 1 { "" } else { "s" }
            );
        }
    }
    let count = |f: &dyn Fn(&Action) -> bool| s.files.iter().filter(|x| f(&x.action)).count();
    let created = count(&|a| matches!(a, Action::Create));
    let updated = count(&|a| matches!(a, Action::Update | Action::ForceUpdate { .. }));
    let unchanged = count(&|a| matches!(a, Action::Unchanged));
    let _ = writeln!(
        out,
        "Files{}: {created} created, {updated} updated, {unchanged} unchanged",
        if s.dry_run {
            " (dry run, nothing written)"
        } else {
            ""
        }
    );
    for f in &s.files {
        match &f.action {
            Action::SkipEdited { reason } => {
                let _ = writeln!(
                    out,
                    "  {WARNING}skipped{WARNING:#} {}: {reason}; pass --force to overwrite it (a backup is kept)",
                    f.path
                );
            }
            Action::ForceUpdate { backup } => {
                let _ = writeln!(out, "  overwrote {} (backup: {backup})", f.path);
            }
            _ => {}
        }
    }
    out
}
