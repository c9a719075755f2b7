//! `check` as a library call ([`run`]): one `cargo check` of the port target for the
//! planned modules, its diagnostics attributed to modules, as a [`CheckDocument`] the
//! caller renders (summary, JSON, GitHub annotations, JUnit).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::error::Outcome;
use super::port::Level;
use super::{Error, Session};
use crate::fixloop;
use crate::report::check::CheckDocument;
use crate::workspace::{Diagnostic, Severity};

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Components, aliases, module paths or files; empty: every planned module.
    pub targets: Vec<String>,
    /// Only when a file staged in git belongs to a planned module (the pre-commit hook).
    pub staged: bool,
    /// Check for the host target when the toolchain lacks the target's std.
    pub host_fallback: bool,
}

/// What the check tells its caller while it works.
pub trait CheckEvents {
    /// A message for the user.
    fn message(&self, level: Level, text: &str);
    /// `cargo check` is running for this target triple.
    fn checking(&self, _target: &str) {}
}

/// Why nothing was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// `staged`: no staged file belongs to a planned module.
    NothingStaged,
    /// The selection has no ARM64 module.
    NoArmCode,
}

/// The result of [`run`].
#[derive(Debug)]
pub struct CheckRun {
    /// The check's document (per module, build failures, clean or not).
    pub document: CheckDocument,
    /// Set when nothing was checked (the document says so too).
    pub skipped: Option<Skipped>,
    /// Errors in planned modules outside the selection (not in the document).
    pub hidden_errors: usize,
    /// What the scan saw (unreadable sources show up as compiler errors too).
    pub scan_diagnostics: Vec<Diagnostic>,
    /// Clean (and every source scanned), or not.
    pub outcome: Outcome,
}

/// Checks the port of the session's workspace for its x86_64 target.
pub fn run(s: &Session, opts: &CheckOptions, events: &dyn CheckEvents) -> Result<CheckRun, Error> {
    let root = s.ws.root.clone();
    let root_str = root.display().to_string();
    let full = s.full_plan(true, &|_| {});
    let specs = &full.modules;
    let skipped = |why: Skipped| CheckRun {
        document: CheckDocument::skipped(root_str.clone(), s.config.target.value.clone()),
        skipped: Some(why),
        hidden_errors: 0,
        scan_diagnostics: full.diagnostics.clone(),
        outcome: Outcome::Done,
    };

    if opts.staged {
        let staged = staged_files(&root)?;
        let planned: BTreeSet<String> = specs
            .iter()
            .flat_map(|m| {
                let mut f = fixloop::owned_files(m, &root);
                f.push(m.source.clone());
                f
            })
            .collect();
        if !staged.iter().any(|f| planned.contains(f)) {
            return Ok(skipped(Skipped::NothingStaged));
        }
    }

    let mut selected = full.clone();
    crate::plan::select(&mut selected, &opts.targets, &s.knowledge)?;
    if selected.modules.is_empty() {
        return Ok(skipped(Skipped::NoArmCode));
    }
    let keep: BTreeSet<String> = selected
        .modules
        .iter()
        .map(|m| m.module_path.clone())
        .collect();
    let packages = selected.packages();

    let wanted = s.config.target.value.clone();
    let toolchain = crate::toolchain::Toolchain::for_workspace(&root)?;
    if let Some(note) = toolchain.override_note() {
        events.message(Level::Note, &note);
    }
    let choice = toolchain.resolve_target(&root, &wanted, opts.host_fallback)?;
    if let Some(note) = &choice.note {
        events.message(Level::Note, note);
    }
    let target = choice.triple.clone();
    let mut lopts = fixloop::LoopOptions::new(&root, &target, specs);
    lopts.packages = &packages;
    lopts.toolchain = toolchain;
    lopts.build_std = choice.build_std;
    lopts.apply_rustfix = false;
    events.checking(&target);
    let check = fixloop::check(&lopts)?;

    // Diagnostics of planned modules outside the selection are not reported, but said.
    let hidden_errors: usize = check
        .report
        .modules
        .iter()
        .filter(|m| m.component.is_some() && !keep.contains(&m.module_path))
        .map(|m| m.errors)
        .sum();
    let document = CheckDocument::new(root_str, wanted, check.report, &|m| {
        m.component.is_none() || keep.contains(&m.module_path)
    });
    let scan_errors = full
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    let outcome = Outcome::from_problems(!document.clean || scan_errors);
    Ok(CheckRun {
        document,
        skipped: None,
        hidden_errors,
        scan_diagnostics: full.diagnostics,
        outcome,
    })
}

/// Files staged in git, relative to `root` (`git diff --cached --relative`).
fn staged_files(root: &Path) -> Result<Vec<String>> {
    let out = Command::new("git")
        .args(["diff", "--cached", "--name-only", "--relative", "-z"])
        .current_dir(root)
        .output()
        .context("--staged: could not run git")?;
    if !out.status.success() {
        bail!(
            "--staged: `git diff --cached` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect())
}
