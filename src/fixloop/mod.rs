//! The `cargo check` fix loop: one `cargo check --message-format=json` per iteration for
//! every module in flight, diagnostics attributed to planned modules by the file of
//! their primary span, rustc's MachineApplicable suggestions applied first (rustfix),
//! then the remaining errors handed, grouped per module, to a pluggable [`Fixer`] (the
//! DebugAgent). The loop stops when the port is clean, when an iteration makes no
//! progress (the same set of errors as the iteration before), at the iteration limit,
//! or when errors remain and there is nobody to fix them — and says which.
//!
//! An *iteration* is one `cargo check` plus the fixes made after it (rustfix, or else
//! the fixer). `max_iterations` bounds the fix rounds; the check after the last round
//! decides between clean and [`StopReason::MaxIterations`], so a loop runs at most
//! `max_iterations + 1` checks.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

mod cargo_check;

use crate::plan::ModulePlan;
use crate::store::FixIterationRecord;
use cargo_check::normalize_rel;
pub use cargo_check::{
    build_script_failures, check, module_files, normalize_file, owned_files, BuildFailure, Check,
    CheckReport, Diag, Level, ModuleResult,
};

/// The bucket of diagnostics in workspace files that belong to no planned module.
pub const OTHER: &str = "(other)";

/// Default bound on fix rounds (`--max-fix-iterations`).
pub const DEFAULT_MAX_ITERATIONS: u32 = 5;

/// A module's remaining errors, as the fixer gets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleDiagnostics {
    /// The module's path.
    pub module_path: String,
    /// Workspace-relative target files of the module (the files the fixer may rewrite).
    pub files: Vec<String>,
    /// Its errors (and warnings) from the last check.
    pub diagnostics: Vec<Diag>,
}

/// Something that rewrites module files to fix errors (the DebugAgent).
pub trait Fixer {
    /// Returns new contents (ws-relative path, full text) for files of the given
    /// modules. Returning nothing (or only unchanged contents) means "no fix".
    fn fix(
        &mut self,
        iteration: u32,
        modules: &[ModuleDiagnostics],
    ) -> Result<Vec<(String, String)>>;

    /// Told that its last change made things worse and was backed out, before the loop
    /// asks it again (the DebugAgent puts this failure in its next prompt).
    fn regressed(&mut self, _regression: &Regression) {}
}

/// A fix round that made things worse: more errors, or errors in a module that had
/// none. Its files were restored byte for byte before the next round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Regression {
    /// The check that found it.
    pub iteration: u32,
    /// Who made the round: `rustfix` or `fixer`.
    pub by: &'static str,
    /// Errors in the check before the round.
    pub errors_before: usize,
    /// Errors in the check after it.
    pub errors_after: usize,
    /// The files the round changed (and that were restored).
    pub files: Vec<String>,
    /// Errors the round introduced (rustc's rendering), the first ones.
    pub new_errors: Vec<String>,
}

/// Why the loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// `cargo check` reports no errors (and rustfix has nothing left to apply).
    Clean,
    /// The fix rounds ran out with errors left.
    MaxIterations,
    /// An iteration ended with the same set of errors as the one before, or the
    /// fixer returned no change.
    NoProgress,
    /// Errors remain, rustc has no MachineApplicable fix for them and there is no fixer.
    NoFixer,
    /// Errors remain only in workspace files that belong to no planned module, which
    /// the fixer is not given.
    OutsideModules,
    /// No compiler errors, but planned modules were not compiled (a build script, a
    /// dependency or their crate failed before them); nothing for the fixer.
    NotCompiled,
    /// The fixer's change made things worse twice running; both were backed out.
    Regressed,
}

impl StopReason {
    /// The reason's name (`clean`, `no-progress`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Clean => "clean",
            StopReason::MaxIterations => "max-iterations",
            StopReason::NoProgress => "no-progress",
            StopReason::NoFixer => "no-fixer",
            StopReason::OutsideModules => "outside-modules",
            StopReason::NotCompiled => "not-compiled",
            StopReason::Regressed => "regressed",
        }
    }

    /// One sentence for a person.
    pub fn explain(self) -> &'static str {
        match self {
            StopReason::Clean => "cargo check reports no errors",
            StopReason::MaxIterations => "the iteration limit was reached with errors left",
            StopReason::NoProgress => {
                "no progress: the last fix left the same errors as the iteration before"
            }
            StopReason::NoFixer => {
                "errors remain that rustc cannot fix and no fixer (DebugAgent) is available"
            }
            StopReason::OutsideModules => {
                "errors remain only in files that are not planned modules"
            }
            StopReason::NotCompiled => {
                "planned modules were not compiled (a build script or a crate before them failed)"
            }
            StopReason::Regressed => {
                "the fixer's changes made things worse twice running; both were backed out"
            }
        }
    }
}

/// What to check and how to loop.
#[derive(Debug, Clone)]
pub struct LoopOptions<'a> {
    /// Workspace root (where `cargo check` runs).
    pub root: &'a Path,
    /// Target triple for `--target` (resolve it with [`resolve_target`]).
    pub target: &'a str,
    /// Packages to check (`-p`); empty checks `--workspace`.
    pub packages: &'a [String],
    /// The planned modules diagnostics are attributed to.
    pub modules: &'a [ModulePlan],
    /// Bound on fix rounds (default 5).
    pub max_iterations: u32,
    /// Apply rustc's MachineApplicable suggestions in module files.
    pub apply_rustfix: bool,
    /// The cargo to run: `$CARGO` when set (as under `cargo eterna-port`), else `cargo`.
    pub cargo: OsString,
    /// `--target-dir`; `None` keeps the user's (`CARGO_TARGET_DIR`, config, `target/`).
    pub target_dir: Option<PathBuf>,
    /// The workspace's toolchain: when it pins one, cargo runs as the rustup proxy with
    /// `RUSTUP_TOOLCHAIN` set to it (and `cargo` above is not used).
    pub toolchain: crate::toolchain::Toolchain,
    /// Add `-Z build-std=core,alloc` (the target has no rust-std; see
    /// [`crate::toolchain::Toolchain::resolve_target`]).
    pub build_std: bool,
}

impl<'a> LoopOptions<'a> {
    /// Options to check `modules` of the workspace at `root` for `target`, with the defaults (rustfix on, 5 rounds).
    pub fn new(root: &'a Path, target: &'a str, modules: &'a [ModulePlan]) -> Self {
        LoopOptions {
            root,
            target,
            packages: &[],
            modules,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            apply_rustfix: true,
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            target_dir: None,
            toolchain: crate::toolchain::Toolchain::default(),
            build_std: false,
        }
    }

    /// The cargo command: the pinned toolchain's when there is one, else `cargo`.
    fn cargo_command(&self) -> Command {
        if self.toolchain.rustup_toolchain.is_some() {
            self.toolchain.cargo()
        } else {
            Command::new(&self.cargo)
        }
    }
}

/// One iteration of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct IterationSummary {
    /// 1-based: the n-th `cargo check`.
    pub iteration: u32,
    /// Errors the check found.
    pub errors: usize,
    /// Warnings it found.
    pub warnings: usize,
    /// A hash of the set of errors (equal sets: no progress).
    pub diagnostics_hash: String,
    /// MachineApplicable suggestions applied after this check.
    pub rustfix_applied: usize,
    /// Files rustfix rewrote.
    pub rustfix_files: Vec<String>,
    /// Whether the fixer was asked.
    pub fixer_called: bool,
    /// Files the fixer rewrote.
    pub fixer_files: Vec<String>,
    /// Wall time of the check.
    pub check_ms: u64,
    /// Time spent in the fixer (the DebugAgent's latency).
    pub fix_ms: u64,
    /// What came of the iteration (`fixing`, `regressed`, or why the loop stopped).
    pub outcome: IterationOutcome,
    /// The round this check backed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

impl IterationSummary {
    /// The iteration as the store records it.
    pub fn to_record(&self) -> FixIterationRecord {
        FixIterationRecord {
            iteration: i64::from(self.iteration),
            errors: self.errors as i64,
            warnings: self.warnings as i64,
            rustfix_applied: self.rustfix_applied as i64,
            agent_files: self.fixer_files.len() as i64,
            diagnostics_hash: self.diagnostics_hash.clone(),
            check_ms: self.check_ms as i64,
            outcome: self.outcome.as_str().to_string(),
        }
    }
}

/// What came of one iteration of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IterationOutcome {
    /// A fix round was made after the check (rustfix or the fixer).
    Fixing,
    /// The check found the last round made things worse: its files were restored, and
    /// a new round was made from the check before.
    Regressed,
    /// The loop stopped after this check.
    Stopped(StopReason),
}

impl IterationOutcome {
    /// `fixing`, `regressed`, or the stop reason (`clean`, `no-progress`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            IterationOutcome::Fixing => "fixing",
            IterationOutcome::Regressed => "regressed",
            IterationOutcome::Stopped(reason) => reason.as_str(),
        }
    }

    /// A fix round was made in this iteration (kept or backed out later).
    pub fn made_a_round(self) -> bool {
        matches!(self, IterationOutcome::Fixing | IterationOutcome::Regressed)
    }
}

impl Serialize for IterationOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// How the loop ended.
#[derive(Debug, Clone)]
pub struct LoopOutcome {
    /// Why the loop stopped.
    pub stop: StopReason,
    /// Every iteration, in order.
    pub iterations: Vec<IterationSummary>,
    /// The report of the last check.
    pub final_report: CheckReport,
    /// Sum of the `cargo check` process wall times (spawn to exit); everything else
    /// in `total_time` is the loop's own work and the fixer's.
    pub check_time: Duration,
    /// Wall time of the whole loop.
    pub total_time: Duration,
}

impl LoopOutcome {
    /// Fix rounds made (rustfix or fixer), those backed out later included.
    pub fn fix_rounds(&self) -> usize {
        self.iterations
            .iter()
            .filter(|i| i.outcome.made_a_round())
            .count()
    }

    /// Rounds backed out because they made things worse.
    pub fn regressions(&self) -> usize {
        self.iterations
            .iter()
            .filter(|i| i.regression.is_some())
            .count()
    }
}

/// Runs the loop. `write` gets every set of new file contents (rustfix's and the
/// fixer's) and writes them (through the safe writer; [`write_files`] for a plain
/// atomic write); `record` gets every iteration (for the store's `fix_iterations`).
pub fn run_loop(
    opts: &LoopOptions,
    mut fixer: Option<&mut dyn Fixer>,
    write: &mut dyn FnMut(Vec<(String, String)>) -> Result<()>,
    record: &mut dyn FnMut(&FixIterationRecord) -> Result<()>,
) -> Result<LoopOutcome> {
    let started = Instant::now();
    let mut iterations: Vec<IterationSummary> = Vec::new();
    let mut check_time = Duration::ZERO;
    let mut previous_hash: Option<String> = None;
    let mut rounds: u32 = 0;
    let mut iteration: u32 = 0;
    // The round written after the last check, to back out if the next check is worse.
    let mut last_round: Option<Round> = None;
    // rustfix made things worse once: its suggestions are not applied again.
    let mut rustfix_off = false;
    // The fixer's rounds backed out in a row.
    let mut fixer_regressions = 0u32;
    loop {
        iteration += 1;
        let check = check(opts)?;
        let elapsed = check.cargo_time;
        check_time += elapsed;
        let report = &check.report;
        let mut it = IterationSummary {
            iteration,
            errors: report.errors,
            warnings: report.warnings,
            diagnostics_hash: report.errors_hash(),
            rustfix_applied: 0,
            rustfix_files: Vec::new(),
            fixer_called: false,
            fixer_files: Vec::new(),
            check_ms: elapsed.as_millis() as u64,
            fix_ms: 0,
            outcome: IterationOutcome::Fixing,
            regression: None,
        };
        // The round before this check made things worse: back it out, and go on from
        // the check before it (the files are as they were then).
        let mut check = check;
        if let Some(round) = last_round.take() {
            if let Some(reg) = round.regression(iteration, &check.report) {
                round.restore(opts.root, write)?;
                if round.by == "rustfix" {
                    rustfix_off = true;
                } else {
                    fixer_regressions += 1;
                    if let Some(f) = fixer.as_deref_mut() {
                        f.regressed(&reg);
                    }
                }
                it.regression = Some(reg);
                check = round.before;
                // The fixer is asked again about the same errors: that is not "no progress".
                previous_hash = None;
            } else if round.by == "fixer" {
                fixer_regressions = 0;
            }
        }
        let report = &check.report;
        let hash = report.errors_hash();
        let mut stopped = None;
        let rustfix_ready = opts.apply_rustfix && !rustfix_off && !check.suggestions.is_empty();
        if fixer_regressions >= 2 {
            // A fixer that made things worse twice running is not asked a third time.
            stopped = Some(StopReason::Regressed);
        } else if report.clean() && !report.complete() {
            stopped = Some(StopReason::NotCompiled);
        } else if report.clean() && !rustfix_ready {
            stopped = Some(StopReason::Clean);
        } else if !report.clean() && previous_hash.as_deref() == Some(hash.as_str()) {
            stopped = Some(StopReason::NoProgress);
        } else if rounds >= opts.max_iterations {
            let reason = if report.clean() {
                StopReason::Clean
            } else {
                StopReason::MaxIterations
            };
            stopped = Some(reason);
        } else {
            // rustfix first: no fixer call for what rustc can fix itself.
            let fixed = if rustfix_ready {
                apply_rustfix(opts.root, &check.suggestions)?
            } else {
                RustfixResult::default()
            };
            if !fixed.files.is_empty() {
                it.rustfix_applied = fixed.applied;
                it.rustfix_files = fixed.files.iter().map(|(p, _)| p.clone()).collect();
                last_round = Some(Round::before_writing(
                    opts.root,
                    "rustfix",
                    &fixed.files,
                    check.clone(),
                )?);
                write(fixed.files)?;
                rounds += 1;
            } else if report.clean() {
                stopped = Some(StopReason::Clean);
            } else {
                let modules = report.module_errors();
                match fixer.as_deref_mut() {
                    _ if modules.is_empty() => {
                        stopped = Some(StopReason::OutsideModules);
                    }
                    None => {
                        stopped = Some(StopReason::NoFixer);
                    }
                    Some(f) => {
                        let t = Instant::now();
                        let files = f.fix(iteration, &modules)?;
                        it.fix_ms = t.elapsed().as_millis() as u64;
                        it.fixer_called = true;
                        let files = changed_files(opts.root, files)?;
                        if files.is_empty() {
                            stopped = Some(StopReason::NoProgress);
                        } else {
                            it.fixer_files = files.iter().map(|(p, _)| p.clone()).collect();
                            last_round = Some(Round::before_writing(
                                opts.root,
                                "fixer",
                                &files,
                                check.clone(),
                            )?);
                            write(files)?;
                            rounds += 1;
                        }
                    }
                }
            }
        }
        if let Some(reason) = stopped {
            it.outcome = IterationOutcome::Stopped(reason);
            record(&it.to_record())?;
            iterations.push(it);
            return Ok(LoopOutcome {
                stop: reason,
                iterations,
                final_report: check.report,
                check_time,
                total_time: started.elapsed(),
            });
        }
        if it.regression.is_some() {
            it.outcome = IterationOutcome::Regressed;
        }
        record(&it.to_record())?;
        // "No progress" judges the fixer's work: after a rustfix round the same errors
        // may remain while rustc's fixes went in.
        previous_hash = it.fixer_called.then_some(hash);
        iterations.push(it);
    }
}

/// A fix round as it was written: the files' bytes before it, and the check it
/// answered.
struct Round {
    by: &'static str,
    /// Workspace-relative path → the file's bytes before the round (`None`: it did not
    /// exist).
    saved: Vec<(String, Option<Vec<u8>>)>,
    before: Check,
}

impl Round {
    fn before_writing(
        root: &Path,
        by: &'static str,
        files: &[(String, String)],
        before: Check,
    ) -> Result<Round> {
        let mut saved = Vec::new();
        for (rel, _) in files {
            let path = root.join(rel);
            let bytes = match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("could not read {} before the fix round", path.display())
                    })
                }
            };
            saved.push((rel.clone(), bytes));
        }
        Ok(Round { by, saved, before })
    }

    /// Whether `after` (the check after the round) is worse than the check before it:
    /// more errors, or errors in a planned module that had none.
    fn regression(&self, iteration: u32, after: &CheckReport) -> Option<Regression> {
        let before = &self.before.report;
        let had_errors: BTreeSet<&str> = before
            .modules
            .iter()
            .filter(|m| m.errors > 0)
            .map(|m| m.module_path.as_str())
            .collect();
        let newly_broken = after.modules.iter().any(|m| {
            m.component.is_some() && m.errors > 0 && !had_errors.contains(m.module_path.as_str())
        });
        if after.errors <= before.errors && !newly_broken {
            return None;
        }
        // The errors the round added: per (file, code, message), those beyond the count
        // before, preferring ones on lines that had no such error.
        type Key = (String, Option<String>, String);
        let key = |d: &Diag| -> Key { (d.file.clone(), d.code.clone(), d.message.clone()) };
        let errors = |r: &'_ CheckReport| -> BTreeMap<Key, Vec<Diag>> {
            let mut out: BTreeMap<Key, Vec<Diag>> = BTreeMap::new();
            for d in r.modules.iter().flat_map(|m| &m.diagnostics) {
                if d.is_error() {
                    out.entry(key(d)).or_default().push(d.clone());
                }
            }
            out
        };
        let old = errors(before);
        let mut new_errors = Vec::new();
        for (k, mut now) in errors(after) {
            let had = old.get(&k).map_or(&[][..], Vec::as_slice);
            let surplus = now.len().saturating_sub(had.len());
            now.sort_by_key(|d| had.iter().any(|h| h.line == d.line));
            new_errors.extend(
                now.into_iter()
                    .take(surplus)
                    .map(|d| d.rendered.trim_end().to_string()),
            );
        }
        new_errors.truncate(10);
        Some(Regression {
            iteration,
            by: self.by,
            errors_before: before.errors,
            errors_after: after.errors,
            files: self.saved.iter().map(|(p, _)| p.clone()).collect(),
            new_errors,
        })
    }

    /// Puts every file back as it was: its bytes through `write` (the safe writer, so
    /// the ledger knows them), a file the round created removed.
    fn restore(
        &self,
        root: &Path,
        write: &mut dyn FnMut(Vec<(String, String)>) -> Result<()>,
    ) -> Result<()> {
        let mut back = Vec::new();
        for (rel, bytes) in &self.saved {
            match bytes {
                Some(b) => match String::from_utf8(b.clone()) {
                    Ok(text) => back.push((rel.clone(), text)),
                    // Not text (the round could only have read it as text): byte for byte.
                    Err(_) => crate::writer::atomic_write(&root.join(rel), b, None)?,
                },
                None => match std::fs::remove_file(root.join(rel)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("could not remove {rel}, which a backed-out fix created")
                        })
                    }
                },
            }
        }
        if !back.is_empty() {
            write(back)?;
        }
        Ok(())
    }
}

/// Writes files (workspace-relative) atomically: the plain writer for callers without
/// a ledger.
pub fn write_files(root: &Path, files: Vec<(String, String)>) -> Result<()> {
    for (rel, text) in files {
        crate::writer::atomic_write(&root.join(rel), text.as_bytes(), None)?;
    }
    Ok(())
}

/// Keeps the files whose content differs from what is on disk; rejects paths outside
/// the workspace.
fn changed_files(root: &Path, files: Vec<(String, String)>) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (rel, text) in files {
        let Some(norm) = normalize_rel(Path::new(&rel)) else {
            bail!("the fixer returned `{rel}`, which is not a path inside the workspace");
        };
        let old = std::fs::read_to_string(root.join(&norm)).ok();
        if old.as_deref() == Some(text.as_str()) {
            continue;
        }
        out.retain(|(p, _)| *p != norm);
        out.push((norm, text));
    }
    Ok(out)
}

#[derive(Default)]
struct RustfixResult {
    applied: usize,
    files: Vec<(String, String)>,
}

/// Applies the suggestions to each file, skipping any that conflict with one already
/// applied (the next check offers them again).
fn apply_rustfix(
    root: &Path,
    suggestions: &BTreeMap<String, Vec<rustfix::Suggestion>>,
) -> Result<RustfixResult> {
    let mut out = RustfixResult::default();
    for (rel, list) in suggestions {
        let path = root.join(rel);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {} to apply rustc's fixes", path.display()))?;
        let mut fix = rustfix::CodeFix::new(&text);
        let mut applied = 0;
        for s in list.iter().rev() {
            if fix.apply(s).is_ok() {
                applied += 1;
            }
        }
        let new = fix.finish().unwrap_or_else(|_| text.clone());
        if applied > 0 && new != text {
            out.applied += applied;
            out.files.push((rel.clone(), new));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::cargo_check::{canonical, dep_info_sources};
    use super::*;

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(
            normalize_rel(Path::new("a/./b/../c.rs")).as_deref(),
            Some("a/c.rs")
        );
        assert_eq!(normalize_rel(Path::new("../x.rs")), None);
        assert_eq!(normalize_rel(Path::new("/abs")), None);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/src")).unwrap();
        std::fs::write(root.join("pkg/src/lib.rs"), "").unwrap();
        let pkg = root.join("pkg");
        assert_eq!(
            normalize_file("pkg/src/lib.rs", root, &pkg).as_deref(),
            Some("pkg/src/lib.rs")
        );
        assert_eq!(
            normalize_file("src/lib.rs", root, &pkg).as_deref(),
            Some("pkg/src/lib.rs"),
            "relative to the package directory"
        );
        let abs = root.join("pkg/src/lib.rs");
        assert_eq!(
            normalize_file(abs.to_str().unwrap(), root, &pkg).as_deref(),
            Some("pkg/src/lib.rs")
        );
        assert_eq!(normalize_file("/elsewhere/lib.rs", root, &pkg), None);
        assert_eq!(normalize_file("<anon>", root, &pkg), None);
    }

    #[test]
    fn module_files_follow_path_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("k/src/arch/x86_64")).unwrap();
        std::fs::write(
            root.join("k/src/arch/x86_64/vmcs.rs"),
            "#[path = \"vmx_fields.rs\"]\nmod fields;\n#[path=\"../shared.rs\"] mod shared;\n",
        )
        .unwrap();
        let spec = ModulePlan {
            module_path: "k::arch::aarch64::vm".into(),
            component: crate::knowledge::ComponentId::VmControl,
            package: "k".into(),
            source: "k/src/arch/aarch64/vm.rs".into(),
            target: "k/src/arch/x86_64/vmcs.rs".into(),
            ..ModulePlan::default()
        };
        assert_eq!(
            owned_files(&spec, root),
            [
                "k/src/arch/x86_64/vmcs.rs",
                "k/src/arch/x86_64/vmx_fields.rs",
                "k/src/arch/shared.rs"
            ]
        );
    }

    fn diag(file: &str, line: usize, message: &str) -> Diag {
        Diag {
            file: file.into(),
            line,
            column: 1,
            level: Level::Error,
            code: Some("E0308".into()),
            message: message.into(),
            rendered: message.into(),
        }
    }

    fn report(diags: Vec<Diag>) -> CheckReport {
        CheckReport {
            target_triple: "x".into(),
            errors: diags.iter().filter(|d| d.is_error()).count(),
            warnings: 0,
            modules: vec![ModuleResult {
                module_path: "m".into(),
                component: Some("vcpu".into()),
                package: Some("p".into()),
                files: vec!["a.rs".into()],
                errors: diags.iter().filter(|d| d.is_error()).count(),
                warnings: 0,
                compiled: true,
                status: "errors",
                diagnostics: diags,
            }],
            not_compiled: 0,
            build_failures: Vec::new(),
            check_ms: 0,
        }
    }

    #[test]
    fn the_error_hash_ignores_order_and_warnings() {
        let a = report(vec![diag("a.rs", 1, "x"), diag("a.rs", 2, "y")]);
        let b = report(vec![diag("a.rs", 2, "y"), diag("a.rs", 1, "x")]);
        assert_eq!(a.errors_hash(), b.errors_hash());
        let c = report(vec![diag("a.rs", 3, "y"), diag("a.rs", 1, "x")]);
        assert_ne!(a.errors_hash(), c.errors_hash());
        let mut w = diag("a.rs", 9, "unused");
        w.level = Level::Warning;
        let d = report(vec![diag("a.rs", 2, "y"), diag("a.rs", 1, "x"), w]);
        assert_eq!(a.errors_hash(), d.errors_hash());
        assert_eq!(a.module_errors()[0].diagnostics.len(), 2);
    }

    #[test]
    fn fixer_output_outside_the_workspace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.rs"), "same").unwrap();
        assert!(changed_files(dir.path(), vec![("../x.rs".into(), "x".into())]).is_err());
        let kept = changed_files(
            dir.path(),
            vec![
                ("a.rs".into(), "same".into()),
                ("./b.rs".into(), "new".into()),
            ],
        )
        .unwrap();
        assert_eq!(kept, [("b.rs".to_string(), "new".to_string())]);
    }

    #[test]
    fn stop_reasons_have_names() {
        for r in [
            StopReason::Clean,
            StopReason::MaxIterations,
            StopReason::NoProgress,
            StopReason::NoFixer,
            StopReason::OutsideModules,
            StopReason::NotCompiled,
        ] {
            assert!(!r.as_str().is_empty() && !r.explain().is_empty());
            assert_eq!(
                serde_json::to_value(r).unwrap(),
                serde_json::json!(r.as_str())
            );
        }
    }

    #[test]
    fn failing_build_scripts_name_the_missing_tool() {
        let stderr = "   Compiling foo v0.1.0 (/w/foo)\n\
error: failed to run custom build command for `foo v0.1.0 (/w/foo)`\n\
\n\
Caused by:\n\
  process didn't exit successfully: `/w/target/debug/build/foo-1/build-script-build` (exit status: 101)\n\
  --- stderr\n\
\n\
  thread 'main' panicked at build.rs:2:5:\n\
  failed to execute dtc: Os { code: 2, kind: NotFound, message: \"No such file or directory\" }\n\
error: failed to run custom build command for `bar v0.2.0 (/w/bar)`\n\
  --- stderr\n\
  sh: 1: mkimage: not found\n\
error: failed to run custom build command for `baz v0.2.0 (/w/baz)`\n\
  --- stderr\n\
  assertion failed\n";
        let f = build_script_failures(stderr);
        assert_eq!(f.len(), 3, "{f:?}");
        assert_eq!(f[0].package, "foo");
        assert_eq!(f[0].missing_tool.as_deref(), Some("dtc"));
        assert!(f[0]
            .message()
            .contains("it runs `dtc`, which is not installed"));
        assert_eq!(f[1].package, "bar");
        assert_eq!(f[1].missing_tool.as_deref(), Some("mkimage"));
        assert_eq!(f[2].missing_tool, None);
        assert_eq!(f[2].message(), "build script of package baz failed");
    }

    #[test]
    fn dep_info_lists_the_files_rustc_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("k/src")).unwrap();
        std::fs::write(root.join("k/src/lib.rs"), "").unwrap();
        std::fs::write(root.join("k/src/a.rs"), "").unwrap();
        let deps = root.join("target/deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(
            deps.join("k-123.d"),
            format!(
                "{0}/k-123.d: k/src/lib.rs k/src/a.rs\n\n{0}/libk-123.rmeta: k/src/lib.rs k/src/a.rs\n\nk/src/lib.rs:\nk/src/a.rs:\n",
                deps.display()
            ),
        )
        .unwrap();
        let files = dep_info_sources(&deps.join("libk-123.rmeta"), root).unwrap();
        assert_eq!(
            files,
            [
                canonical(&root.join("k/src/lib.rs")),
                canonical(&root.join("k/src/a.rs"))
            ]
        );
        assert!(dep_info_sources(&deps.join("libk-9.rmeta"), root).is_none());
    }
}
