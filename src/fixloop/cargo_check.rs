//! Running `cargo check` and reading what it says: one `cargo check
//! --message-format=json`, each diagnostic attributed to the planned module whose file
//! holds its primary span (a `#[path]` part or a macro's expansion site included),
//! what rustfix may apply, which modules the check did not compile, and the build
//! scripts that failed. The loop ([`super::run_loop`]) and `check` use it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cargo_metadata::diagnostic::{Diagnostic, DiagnosticLevel, DiagnosticSpan};
use cargo_metadata::Message;
use serde::Serialize;

use super::{LoopOptions, ModuleDiagnostics, OTHER};
use crate::plan::ModulePlan;

/// How severe a diagnostic is (the ones the check keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The crate does not compile.
    Error,
    /// It compiles, with a warning.
    Warning,
}

impl Level {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

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
    pub level: Level,
    /// `E0308`, `unused_mut`, …
    pub code: Option<String>,
    /// rustc's message (without the rendering).
    pub message: String,
    /// rustc's rendering, as a person reads it.
    pub rendered: String,
}

impl Diag {
    /// Whether it is an error.
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

/// One module's result of a check.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleResult {
    /// The module's path, or `(other)`.
    pub module_path: String,
    /// `None` for the `(other)` bucket.
    pub component: Option<String>,
    /// The module's package (`None` for `(other)`).
    pub package: Option<String>,
    /// The module's files (workspace-relative).
    pub files: Vec<String>,
    /// Errors in its files.
    pub errors: usize,
    /// Warnings in its files.
    pub warnings: usize,
    /// Whether the check compiled the module's crate (`false`: its package, a
    /// dependency or a build script failed first, or it was not in the checked set).
    pub compiled: bool,
    /// `ok`, `warnings`, `errors` or `not-compiled` (see [`ModuleResult::status_of`]).
    pub status: &'static str,
    /// Its diagnostics, in the order rustc gave them.
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

    /// Its first error.
    pub fn first_error(&self) -> Option<&Diag> {
        self.diagnostics.iter().find(|d| d.is_error())
    }
}

/// The result of one `cargo check`, per planned module.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The target the check ran for.
    pub target_triple: String,
    /// Every planned module, in plan order, then `(other)` when it holds diagnostics.
    pub modules: Vec<ModuleResult>,
    /// Errors in the workspace's files, all modules together.
    pub errors: usize,
    /// Warnings in the workspace's files, all modules together.
    pub warnings: usize,
    /// Planned modules whose crate the check did not compile.
    pub not_compiled: usize,
    /// Build scripts that failed.
    pub build_failures: Vec<BuildFailure>,
    /// Wall time of the check, attribution included.
    pub check_ms: u64,
}

/// A build script that failed, from cargo's stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildFailure {
    /// The package whose build script failed.
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
    /// The check, per module.
    pub report: CheckReport,
    /// MachineApplicable suggestions of error/warning diagnostics, per module file.
    pub suggestions: BTreeMap<String, Vec<rustfix::Suggestion>>,
    /// Wall time of the cargo process (spawn to exit).
    pub cargo_time: Duration,
}

/// What one `cargo check` said: its diagnostics (each with the package directory of its
/// target), what it compiled, and how it ended.
struct CargoRun {
    diagnostics: Vec<Diagnostic>,
    /// The package directory of each diagnostic's target (same order).
    fallback_dirs: Vec<PathBuf>,
    /// Package directories cargo compiled (an artifact of a non-build-script target).
    compiled_dirs: BTreeSet<PathBuf>,
    /// Those of them whose dep-info was read.
    depinfo_dirs: BTreeSet<PathBuf>,
    /// The source files rustc read for them.
    compiled_files: BTreeSet<PathBuf>,
    /// Package directories whose compile reported errors.
    error_dirs: BTreeSet<PathBuf>,
    status: std::process::ExitStatus,
    stderr: String,
    cargo_time: Duration,
}

/// Runs `cargo check --message-format=json` and reads its messages.
fn run_cargo(opts: &LoopOptions) -> Result<CargoRun> {
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
    Ok(CargoRun {
        diagnostics,
        fallback_dirs,
        compiled_dirs,
        depinfo_dirs,
        compiled_files,
        error_dirs,
        status,
        stderr,
        cargo_time,
    })
}

/// The diagnostics attributed to modules, and what rustfix may apply.
struct Attributed {
    /// One per planned module, in plan order.
    buckets: Vec<ModuleResult>,
    /// Diagnostics in workspace files of no planned module.
    other: ModuleResult,
    suggestions: BTreeMap<String, Vec<rustfix::Suggestion>>,
    /// Errors anywhere in the workspace (deduplicated).
    errors_in_workspace: usize,
}

/// Attributes the diagnostics to planned modules by the file of their primary span,
/// deduplicated, and collects the MachineApplicable suggestions rustfix may apply.
fn attribute(opts: &LoopOptions, run: &CargoRun) -> Attributed {
    let (diagnostics, fallback_dirs) = (&run.diagnostics, &run.fallback_dirs);
    let spec_files = module_files(opts.root, opts.modules);
    let mut buckets: Vec<ModuleResult> = opts
        .modules
        .iter()
        .zip(&spec_files)
        .map(|(m, files)| ModuleResult {
            module_path: m.module_path.clone(),
            component: Some(m.component.to_string()),
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
    for (diag, pkg_dir) in diagnostics.iter().zip(fallback_dirs) {
        let level = match diag.level {
            DiagnosticLevel::Error => Level::Error,
            _ => Level::Warning,
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
            level.as_str().to_string(),
            diag.message.clone(),
        );
        if !seen.insert(key) {
            continue;
        }
        if level == Level::Error {
            errors_in_workspace += 1;
        }
        let d = Diag {
            file: file.clone(),
            line,
            column,
            level,
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
                    && (level == Level::Error || !shared.contains(&f))
                    && seen_suggestions.insert(s.clone())
                {
                    suggestions.entry(f).or_default().push(s);
                }
            }
        }
    }
    Attributed {
        buckets,
        other,
        suggestions,
        errors_in_workspace,
    }
}

/// Marks the modules the check did not compile; returns how many.
fn mark_not_compiled(opts: &LoopOptions, run: &CargoRun, buckets: &mut [ModuleResult]) -> usize {
    let (compiled_dirs, depinfo_dirs, compiled_files, error_dirs) = (
        &run.compiled_dirs,
        &run.depinfo_dirs,
        &run.compiled_files,
        &run.error_dirs,
    );
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
    not_compiled
}

/// Runs one `cargo check --message-format=json` and attributes its diagnostics.
/// Fails (a setup error) when cargo cannot run, or fails without a compiler error in
/// the workspace (bad manifest, missing target, unresolvable dependency).
pub fn check(opts: &LoopOptions) -> Result<Check> {
    let started = Instant::now();
    let run = run_cargo(opts)?;
    let Attributed {
        mut buckets,
        other,
        mut suggestions,
        errors_in_workspace,
    } = attribute(opts, &run);
    let build_failures = build_script_failures(&run.stderr);
    let not_compiled = mark_not_compiled(opts, &run, &mut buckets);
    let (status, stderr, cargo_time) = (run.status, &run.stderr, run.cargo_time);
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

/// The files the port owns for a module: the target, the files it pulls in with
/// `#[path = "…"]` (relative to the target's directory), and the source when the
/// module is edited in place.
pub fn owned_files(m: &ModulePlan, root: &Path) -> Vec<String> {
    let mut files = vec![m.target.clone()];
    if let Ok(text) = std::fs::read_to_string(root.join(&m.target)) {
        let dir = Path::new(&m.target).parent().unwrap_or(Path::new(""));
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

/// The source files listed in the dep-info file cargo writes beside a check artifact
/// (`deps/libfoo-HASH.rmeta` → `deps/foo-HASH.d`), canonical; `None` without one.
/// Relative names are relative to the workspace `root` (how cargo writes members').
pub(super) fn dep_info_sources(artifact: &Path, root: &Path) -> Option<Vec<PathBuf>> {
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

pub(super) fn canonical(p: &Path) -> PathBuf {
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
pub(super) fn missing_tool(text: &str) -> Option<String> {
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

/// The files of each module (see [`owned_files`]).
pub fn module_files(root: &Path, modules: &[ModulePlan]) -> Vec<Vec<String>> {
    modules.iter().map(|m| owned_files(m, root)).collect()
}

/// rustc's closing lines ("aborting due to 2 previous errors", "N warnings emitted").
pub(super) fn is_summary(d: &Diagnostic) -> bool {
    let m = d.message.as_str();
    m.starts_with("aborting due to")
        || (m.ends_with("emitted") && m.contains("warning"))
        || m.starts_with("Some errors have detailed explanations")
        || m.starts_with("For more information about")
}

/// The primary span in a workspace file: the diagnostic's own primary span, or, for
/// one inside a macro from elsewhere, the expansion site in the workspace.
pub(super) fn primary_span<'d>(
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
pub(super) fn normalize_rel(p: &Path) -> Option<String> {
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
