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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cargo_metadata::diagnostic::{Diagnostic, DiagnosticLevel, DiagnosticSpan};
use cargo_metadata::Message;
use serde::Serialize;

use crate::plan::ModulePlan;
use crate::store::FixIterationRecord;

/// The bucket of diagnostics in workspace files that belong to no planned module.
pub const OTHER: &str = "(other)";

/// Default bound on fix rounds (`--max-fix-iterations`).
pub const DEFAULT_MAX_ITERATIONS: u32 = 5;

/// One compiler diagnostic, attributed to a workspace file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diag {
    /// Workspace-relative, `/`-separated; empty for a diagnostic without a span.
    pub file: String,
    /// 1-based (0 without a span).
    pub line: usize,
    /// 1-based (0 without a span).
    pub column: usize,
    /// `error` or `warning`.
    pub level: String,
    /// `E0308`, `unused_mut`, …
    pub code: Option<String>,
    pub message: String,
    /// rustc's rendering, as a person reads it.
    pub rendered: String,
}

impl Diag {
    pub fn is_error(&self) -> bool {
        self.level == "error"
    }
}

/// A module's remaining errors, as the fixer gets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleDiagnostics {
    pub module_path: String,
    /// Workspace-relative target files of the module (the files the fixer may rewrite).
    pub files: Vec<String>,
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
    pub errors_before: usize,
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

/// A planned module as the loop needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleSpec {
    pub module_path: String,
    pub component: String,
    pub package: String,
    /// The ARM64 source, workspace-relative.
    pub source: String,
    /// The x86_64 target, workspace-relative (equal to `source` when edited in place).
    pub target: String,
}

impl From<&ModulePlan> for ModuleSpec {
    fn from(m: &ModulePlan) -> Self {
        ModuleSpec {
            module_path: m.module_path.clone(),
            component: m.component.clone(),
            package: m.package.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
        }
    }
}

impl ModuleSpec {
    pub fn from_plan(modules: &[ModulePlan]) -> Vec<ModuleSpec> {
        modules.iter().map(ModuleSpec::from).collect()
    }

    /// The files the port owns for this module: the target, the files it pulls in with
    /// `#[path = "…"]` (relative to the target's directory), and the source when the
    /// module is edited in place.
    pub fn files(&self, root: &Path) -> Vec<String> {
        let mut files = vec![self.target.clone()];
        if let Ok(text) = std::fs::read_to_string(root.join(&self.target)) {
            let dir = Path::new(&self.target).parent().unwrap_or(Path::new(""));
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("#[path") else {
                    continue;
                };
                let Some(p) = rest
                    .trim_start()
                    .strip_prefix('=')
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('"'))
                    .and_then(|r| r.split('"').next())
                else {
                    continue;
                };
                if let Some(rel) = normalize_rel(&dir.join(p)) {
                    if !files.contains(&rel) {
                        files.push(rel);
                    }
                }
            }
        }
        files
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
    pub modules: &'a [ModuleSpec],
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
    pub fn new(root: &'a Path, target: &'a str, modules: &'a [ModuleSpec]) -> Self {
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

/// One module's result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleResult {
    pub module_path: String,
    /// `None` for the `(other)` bucket.
    pub component: Option<String>,
    pub package: Option<String>,
    pub files: Vec<String>,
    pub errors: usize,
    pub warnings: usize,
    /// Whether the check compiled the module's crate (`false`: its package, a
    /// dependency or a build script failed first, or it was not in the checked set).
    pub compiled: bool,
    /// `ok`, `warnings`, `errors` or `not-compiled` (see [`ModuleResult::status_of`]).
    pub status: &'static str,
    pub diagnostics: Vec<Diag>,
}

impl ModuleResult {
    /// `ok`, `warnings`, `errors` or `not-compiled`.
    pub fn status_of(&self) -> &'static str {
        if !self.compiled {
            "not-compiled"
        } else if self.errors > 0 {
            "errors"
        } else if self.warnings > 0 {
            "warnings"
        } else {
            "ok"
        }
    }

    pub fn first_error(&self) -> Option<&Diag> {
        self.diagnostics.iter().find(|d| d.is_error())
    }
}

/// The result of one `cargo check`, per planned module.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub target_triple: String,
    /// Every planned module, in plan order, then `(other)` when it holds diagnostics.
    pub modules: Vec<ModuleResult>,
    pub errors: usize,
    pub warnings: usize,
    /// Planned modules whose crate the check did not compile.
    pub not_compiled: usize,
    /// Build scripts that failed.
    pub build_failures: Vec<BuildFailure>,
    pub check_ms: u64,
}

/// A build script that failed, from cargo's stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildFailure {
    pub package: String,
    /// The program it ran that is not installed, when its output says so.
    pub missing_tool: Option<String>,
    /// The script's stderr (its last lines).
    pub stderr: String,
}

impl BuildFailure {
    /// One line for a person.
    pub fn message(&self) -> String {
        match &self.missing_tool {
            Some(t) => format!(
                "build script of package {} failed: it runs `{t}`, which is not installed (or not on PATH)",
                self.package
            ),
            None => format!("build script of package {} failed", self.package),
        }
    }
}

impl CheckReport {
    /// No errors (what the fix loop works on).
    pub fn clean(&self) -> bool {
        self.errors == 0
    }

    /// No errors, every planned module compiled, no build script failed.
    pub fn complete(&self) -> bool {
        self.errors == 0 && self.not_compiled == 0 && self.build_failures.is_empty()
    }

    /// Hash of the error set: sorted (file, line, code, message).
    pub fn errors_hash(&self) -> String {
        let mut keys: Vec<String> = self
            .modules
            .iter()
            .flat_map(|m| &m.diagnostics)
            .filter(|d| d.is_error())
            .map(|d| {
                format!(
                    "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    d.file,
                    d.line,
                    d.code.as_deref().unwrap_or(""),
                    d.message
                )
            })
            .collect();
        keys.sort();
        keys.dedup();
        let hash = blake3::hash(keys.join("\u{1e}").as_bytes());
        hash.to_hex()[..16].to_string()
    }

    /// Errors of planned modules, grouped per module (what the fixer gets).
    pub fn module_errors(&self) -> Vec<ModuleDiagnostics> {
        self.modules
            .iter()
            .filter(|m| m.component.is_some() && m.errors > 0)
            .map(|m| ModuleDiagnostics {
                module_path: m.module_path.clone(),
                files: m.files.clone(),
                diagnostics: m
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .cloned()
                    .collect(),
            })
            .collect()
    }
}

/// A check plus what rustfix could do about it.
#[derive(Debug, Clone)]
pub struct Check {
    pub report: CheckReport,
    /// MachineApplicable suggestions of error/warning diagnostics, per module file.
    pub suggestions: BTreeMap<String, Vec<rustfix::Suggestion>>,
    /// Wall time of the cargo process (spawn to exit).
    pub cargo_time: Duration,
}

/// One iteration of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct IterationSummary {
    /// 1-based: the n-th `cargo check`.
    pub iteration: u32,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics_hash: String,
    /// MachineApplicable suggestions applied after this check.
    pub rustfix_applied: usize,
    /// Files rustfix rewrote.
    pub rustfix_files: Vec<String>,
    /// Whether the fixer was asked.
    pub fixer_called: bool,
    /// Files the fixer rewrote.
    pub fixer_files: Vec<String>,
    pub check_ms: u64,
    /// Time spent in the fixer (the DebugAgent's latency).
    pub fix_ms: u64,
    /// `fixing`, `regressed` (this check found the last round made things worse, its
    /// files were restored, and a new round was made from the check before), `clean`, `max-iterations`, `no-progress`, `no-fixer`,
    /// `outside-modules`, `not-compiled`.
    pub outcome: String,
    /// The round this check backed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

impl IterationSummary {
    pub fn to_record(&self) -> FixIterationRecord {
        FixIterationRecord {
            iteration: i64::from(self.iteration),
            errors: self.errors as i64,
            warnings: self.warnings as i64,
            rustfix_applied: self.rustfix_applied as i64,
            agent_files: self.fixer_files.len() as i64,
            diagnostics_hash: self.diagnostics_hash.clone(),
            check_ms: self.check_ms as i64,
            outcome: self.outcome.clone(),
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone)]
pub struct LoopOutcome {
    pub stop: StopReason,
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
            .filter(|i| i.outcome == "fixing" || i.outcome == "regressed")
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
            outcome: "fixing".into(),
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
            it.outcome = reason.as_str().into();
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
            it.outcome = "regressed".into();
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

/// Runs one `cargo check --message-format=json` and attributes its diagnostics.
/// Fails (a setup error) when cargo cannot run, or fails without a compiler error in
/// the workspace (bad manifest, missing target, unresolvable dependency).
pub fn check(opts: &LoopOptions) -> Result<Check> {
    let started = Instant::now();
    let mut cmd = opts.cargo_command();
    cmd.arg("check")
        .arg("--message-format=json")
        .arg("--target")
        .arg(opts.target);
    if opts.build_std {
        cmd.arg("-Zbuild-std=core,alloc");
    }
    if let Some(dir) = &opts.target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    if opts.packages.is_empty() {
        cmd.arg("--workspace");
    } else {
        for p in opts.packages {
            cmd.arg("-p").arg(p);
        }
    }
    cmd.current_dir(opts.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "could not run `{} check`; is cargo installed and on PATH?",
            opts.cargo.to_string_lossy()
        )
    })?;
    // Drain stderr on a thread so a chatty cargo cannot block on a full pipe.
    let mut stderr = child.stderr.take().context("cargo's stderr")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut fallback_dirs: Vec<PathBuf> = Vec::new();
    // Package directories cargo compiled (an artifact of a non-build-script target) and
    // those whose compile reported errors: a module in neither was not compiled.
    let mut compiled_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut depinfo_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut compiled_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut error_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for msg in Message::parse_stream(std::io::BufReader::new(stdout)) {
        let m = match msg {
            Ok(Message::CompilerMessage(m)) => m,
            Ok(Message::CompilerArtifact(a)) => {
                let build_script = a
                    .target
                    .kind
                    .iter()
                    .any(|k| k.to_string() == "custom-build");
                if !build_script {
                    if let Some(dir) = a.manifest_path.as_std_path().parent() {
                        let dir = canonical(dir);
                        // The source files rustc read for it (its dep-info, beside the
                        // .rmeta): a module file missing there was not compiled.
                        let mut read = false;
                        for f in &a.filenames {
                            if let Some(files) = dep_info_sources(f.as_std_path(), opts.root) {
                                compiled_files.extend(files);
                                read = true;
                            }
                        }
                        if read {
                            depinfo_dirs.insert(dir.clone());
                        }
                        compiled_dirs.insert(dir);
                    }
                }
                continue;
            }
            _ => continue,
        };
        if m.message.level == DiagnosticLevel::Error && !is_summary(&m.message) {
            if let Some(dir) = m
                .target
                .src_path
                .as_std_path()
                .ancestors()
                .find(|a| a.join("Cargo.toml").is_file())
            {
                error_dirs.insert(canonical(dir));
            }
        }
        if matches!(
            m.message.level,
            DiagnosticLevel::Error | DiagnosticLevel::Warning
        ) {
            fallback_dirs.push(
                m.target
                    .src_path
                    .as_std_path()
                    .ancestors()
                    .find(|a| a.join("Cargo.toml").is_file())
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
            diagnostics.push(m.message);
        }
    }
    let status = child.wait().context("waiting for cargo check")?;
    let cargo_time = spawned.elapsed();
    let stderr = err_reader.join().unwrap_or_default();

    let spec_files = module_files(opts.root, opts.modules);
    let mut buckets: Vec<ModuleResult> = opts
        .modules
        .iter()
        .zip(&spec_files)
        .map(|(m, files)| ModuleResult {
            module_path: m.module_path.clone(),
            component: Some(m.component.clone()),
            package: Some(m.package.clone()),
            files: files.clone(),
            errors: 0,
            warnings: 0,
            compiled: true,
            status: "ok",
            diagnostics: Vec::new(),
        })
        .collect();
    let mut other = ModuleResult {
        module_path: OTHER.into(),
        component: None,
        package: None,
        files: Vec::new(),
        errors: 0,
        warnings: 0,
        compiled: true,
        status: "ok",
        diagnostics: Vec::new(),
    };
    // File → module index: the module's own files, then the ARM64 sources (the port
    // edits those to gate them).
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, files) in spec_files.iter().enumerate() {
        for f in files {
            owner.entry(f.clone()).or_insert(i);
        }
    }
    for (i, m) in opts.modules.iter().enumerate() {
        owner.entry(m.source.clone()).or_insert(i);
    }
    let fixable: BTreeSet<&String> = spec_files.iter().flatten().collect();
    // Files edited in place are the ARM64 build's too: what the x86_64 build finds
    // unused there (an import only the aarch64-gated code needs) is not the ARM64
    // build's to lose, so only errors' suggestions apply to them.
    let shared: BTreeSet<&String> = opts
        .modules
        .iter()
        .filter(|m| m.source == m.target)
        .map(|m| &m.source)
        .collect();

    let mut seen: HashSet<(String, usize, usize, String, String)> = HashSet::new();
    let mut suggestions: BTreeMap<String, Vec<rustfix::Suggestion>> = BTreeMap::new();
    let mut seen_suggestions: HashSet<rustfix::Suggestion> = HashSet::new();
    let mut errors_in_workspace = 0;
    for (diag, pkg_dir) in diagnostics.iter().zip(&fallback_dirs) {
        let level = match diag.level {
            DiagnosticLevel::Error => "error",
            _ => "warning",
        };
        if diag.spans.is_empty() && is_summary(diag) {
            continue;
        }
        let primary = primary_span(diag, opts.root, pkg_dir);
        let (file, line, column) = match &primary {
            Some((f, s)) => (f.clone(), s.line_start, s.column_start),
            None if diag.spans.is_empty() && pkg_dir.starts_with(opts.root) => {
                (String::new(), 0, 0)
            }
            // A diagnostic in a file outside the workspace: not ours.
            None => continue,
        };
        let key = (
            file.clone(),
            line,
            column,
            level.to_string(),
            diag.message.clone(),
        );
        if !seen.insert(key) {
            continue;
        }
        if level == "error" {
            errors_in_workspace += 1;
        }
        let d = Diag {
            file: file.clone(),
            line,
            column,
            level: level.into(),
            code: diag.code.as_ref().map(|c| c.code.clone()),
            message: diag.message.clone(),
            rendered: diag
                .rendered
                .clone()
                .unwrap_or_else(|| diag.message.clone()),
        };
        let bucket = match owner.get(&file) {
            Some(&i) => &mut buckets[i],
            None => &mut other,
        };
        if d.is_error() {
            bucket.errors += 1;
        } else {
            bucket.warnings += 1;
        }
        bucket.diagnostics.push(d);

        // rustfix: MachineApplicable suggestions whose every replacement is in one
        // module file.
        if let Ok(json) = serde_json::to_string(diag) {
            let found = rustfix::get_suggestions_from_json(
                &json,
                &HashSet::<String>::new(),
                rustfix::Filter::MachineApplicableOnly,
            )
            .unwrap_or_default();
            for s in found {
                let files: BTreeSet<Option<String>> = s
                    .solutions
                    .iter()
                    .flat_map(|sol| &sol.replacements)
                    .map(|r| normalize_file(&r.snippet.file_name, opts.root, pkg_dir))
                    .collect();
                let mut files = files.into_iter();
                let (Some(Some(f)), None) = (files.next(), files.next()) else {
                    continue;
                };
                if fixable.contains(&f)
                    && (level == "error" || !shared.contains(&f))
                    && seen_suggestions.insert(s.clone())
                {
                    suggestions.entry(f).or_default().push(s);
                }
            }
        }
    }
    let build_failures = build_script_failures(&stderr);
    let mut not_compiled = 0;
    for (m, bucket) in opts.modules.iter().zip(buckets.iter_mut()) {
        let dir = opts
            .root
            .join(&m.source)
            .ancestors()
            .find(|a| a.join("Cargo.toml").is_file())
            .map(canonical);
        let compiled = match &dir {
            None => false,
            // Its crate failed with errors of its own: reported as errors.
            Some(d) if error_dirs.contains(d) => true,
            // Its crate compiled: the module's files must be among those rustc read
            // (a cfg'd-out or not yet written module file is not).
            Some(d) if depinfo_dirs.contains(d) => bucket
                .files
                .iter()
                .any(|f| compiled_files.contains(&canonical(&opts.root.join(f)))),
            Some(d) => compiled_dirs.contains(d),
        };
        if !compiled {
            bucket.compiled = false;
            not_compiled += 1;
        }
    }
    if !status.success() && errors_in_workspace == 0 && build_failures.is_empty() {
        let tail: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim_start().starts_with("Compiling") && !l.trim().is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(15)..].join("\n");
        bail!(
            "`cargo check --target {}` failed in {} without a compiler error in the workspace:\n{tail}",
            opts.target,
            opts.root.display()
        );
    }
    // Keep each file's suggestions in source order (rustfix applies them in reverse).
    for list in suggestions.values_mut() {
        list.sort_by_key(|s| {
            s.solutions
                .first()
                .and_then(|sol| sol.replacements.first())
                .map(|r| r.snippet.range.start)
                .unwrap_or(0)
        });
    }
    if !other.diagnostics.is_empty() {
        buckets.push(other);
    }
    for b in &mut buckets {
        b.status = b.status_of();
    }
    let errors = buckets.iter().map(|m| m.errors).sum();
    let warnings = buckets.iter().map(|m| m.warnings).sum();
    Ok(Check {
        report: CheckReport {
            target_triple: opts.target.to_string(),
            modules: buckets,
            errors,
            warnings,
            not_compiled,
            build_failures,
            check_ms: started.elapsed().as_millis() as u64,
        },
        suggestions,
        cargo_time,
    })
}

/// The source files listed in the dep-info file cargo writes beside a check artifact
/// (`deps/libfoo-HASH.rmeta` → `deps/foo-HASH.d`), canonical; `None` without one.
/// Relative names are relative to the workspace `root` (how cargo writes members').
fn dep_info_sources(artifact: &Path, root: &Path) -> Option<Vec<PathBuf>> {
    let ext = artifact.extension()?.to_str()?;
    if !matches!(ext, "rmeta" | "rlib") {
        return None;
    }
    let stem = artifact.file_stem()?.to_str()?;
    let stem = stem.strip_prefix("lib").unwrap_or(stem);
    let text = std::fs::read_to_string(artifact.with_file_name(format!("{stem}.d"))).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.strip_suffix(':'))
            .filter(|f| !f.is_empty() && !f.contains(": "))
            .map(|f| canonical(&root.join(f.replace("\\ ", " "))))
            .collect(),
    )
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Build scripts that failed, from cargo's stderr: `failed to run custom build command
/// for `pkg v…`` followed by the script's output (`--- stderr`).
pub fn build_script_failures(stderr: &str) -> Vec<BuildFailure> {
    let mut out: Vec<BuildFailure> = Vec::new();
    let lines: Vec<&str> = stderr.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(rest) = line
            .split("failed to run custom build command for `")
            .nth(1)
        else {
            i += 1;
            continue;
        };
        let package = rest
            .split(['`', ' '])
            .next()
            .unwrap_or_default()
            .to_string();
        // The script's output runs until cargo's next `error:`/`warning:` line.
        let mut j = i + 1;
        let mut body: Vec<&str> = Vec::new();
        while j < lines.len() {
            let l = lines[j];
            if (l.starts_with("error:") || l.starts_with("warning:")) && j > i + 1 {
                break;
            }
            body.push(l);
            j += 1;
        }
        let text = body.join("\n");
        let stderr_part = text.split("--- stderr").nth(1).unwrap_or(&text);
        let missing_tool = missing_tool(stderr_part).or_else(|| missing_tool(&text));
        let tail: Vec<&str> = stderr_part
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        out.push(BuildFailure {
            package,
            missing_tool,
            stderr: tail[tail.len().saturating_sub(10)..].join("\n"),
        });
        i = j;
    }
    out
}

/// The program a build script's output says could not be run.
fn missing_tool(text: &str) -> Option<String> {
    let clean = |s: &str| -> Option<String> {
        let t = s
            .trim()
            .trim_matches(|c: char| matches!(c, '`' | '\'' | '"' | ':' | ',' | '(' | ')'))
            .to_string();
        let ok = !t.is_empty()
            && t.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+'));
        ok.then(|| t.rsplit('/').next().unwrap_or(&t).to_string())
    };
    for line in text.lines() {
        let l = line.trim();
        let not_found = l.contains("No such file or directory")
            || l.contains("NotFound")
            || l.contains("not found");
        // `sh: 1: dtc: not found`, `dtc: command not found`
        if let Some(before) = l
            .strip_suffix(": command not found")
            .or_else(|| l.strip_suffix(": not found"))
        {
            if let Some(t) = before.rsplit(": ").next().and_then(clean) {
                return Some(t);
            }
        }
        for marker in [
            "failed to execute ",
            "failed to run ",
            "failed to spawn ",
            "could not run ",
            "could not execute ",
            "Failed to execute ",
            "Failed to run ",
        ] {
            if let Some(rest) = l.split(marker).nth(1) {
                if !not_found && !l.contains("failed to execute") {
                    continue;
                }
                let word = rest
                    .trim_start_matches(['`', '\'', '"'])
                    .split(|c: char| c.is_whitespace() || matches!(c, '`' | '\'' | '"' | ':'))
                    .next()
                    .unwrap_or_default();
                let word = if word == "command" || word == "program" {
                    rest.split_whitespace().nth(1).unwrap_or_default()
                } else {
                    word
                };
                if let Some(t) = clean(word) {
                    return Some(t);
                }
            }
        }
    }
    None
}

/// The files of each module (see [`ModuleSpec::files`]).
pub fn module_files(root: &Path, modules: &[ModuleSpec]) -> Vec<Vec<String>> {
    modules.iter().map(|m| m.files(root)).collect()
}

/// rustc's closing lines ("aborting due to 2 previous errors", "N warnings emitted").
fn is_summary(d: &Diagnostic) -> bool {
    let m = d.message.as_str();
    m.starts_with("aborting due to")
        || (m.ends_with("emitted") && m.contains("warning"))
        || m.starts_with("Some errors have detailed explanations")
        || m.starts_with("For more information about")
}

/// The primary span in a workspace file: the diagnostic's own primary span, or, for
/// one inside a macro from elsewhere, the expansion site in the workspace.
fn primary_span<'d>(
    d: &'d Diagnostic,
    root: &Path,
    pkg_dir: &Path,
) -> Option<(String, &'d DiagnosticSpan)> {
    let first = d.spans.iter().find(|s| s.is_primary)?;
    let mut span = first;
    loop {
        if let Some(f) = normalize_file(&span.file_name, root, pkg_dir) {
            return Some((f, span));
        }
        span = &span.expansion.as_ref()?.span;
    }
}

/// A span's file name as a workspace-relative `/` path, if the file is in the
/// workspace (and not under its `target/`). rustc names workspace members' files
/// relative to the workspace root, other files absolutely; a name relative to the
/// package directory is tried too.
pub fn normalize_file(name: &str, root: &Path, pkg_dir: &Path) -> Option<String> {
    if name.starts_with('<') {
        return None; // <anon>, <built-in>, …
    }
    let p = Path::new(name);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else if root.join(p).exists() || pkg_dir.as_os_str().is_empty() {
        root.join(p)
    } else {
        pkg_dir.join(p)
    };
    let rel = match abs.strip_prefix(root).ok() {
        Some(r) => normalize_rel(r)?,
        None => {
            // The root may be spelled differently (symlinks): compare canonical forms.
            let canon_root = root.canonicalize().ok()?;
            let canon = abs.canonicalize().ok()?;
            normalize_rel(canon.strip_prefix(&canon_root).ok()?)?
        }
    };
    if rel.starts_with("target/") {
        return None;
    }
    Some(rel)
}

/// `a/./b/../c` → `a/c`; `None` when it leaves the root or is absolute.
fn normalize_rel(p: &Path) -> Option<String> {
    use std::path::Component;
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
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
        let spec = ModuleSpec {
            module_path: "k::arch::aarch64::vm".into(),
            component: "vm-control".into(),
            package: "k".into(),
            source: "k/src/arch/aarch64/vm.rs".into(),
            target: "k/src/arch/x86_64/vmcs.rs".into(),
        };
        assert_eq!(
            spec.files(root),
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
            level: "error".into(),
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
        w.level = "warning".into();
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
