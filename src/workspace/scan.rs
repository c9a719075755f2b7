//! The module-tree walk: from each target root through `mod` declarations (`#[path]`,
//! inline modules, cfg-gated modules alike), one level at a time, parsing the files of a
//! level in parallel. Bad files become diagnostics; the rest of the tree is still walked.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::cache::{content_hash, settings_key, ScanCache};
use super::evidence::{analyze_file, is_arm64_only, ArchGate, Evidence, EvidenceKind, FileFacts};
use super::{relative_to, target_roots, Workspace};
use crate::knowledge::Knowledge;

pub use super::evidence::{Item, ItemKind};

/// Limits that keep one pathological file from stalling the scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Files larger than this many bytes are reported and not parsed.
    pub max_file_size: u64,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_file_size: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
/// How bad a scan problem is.
pub enum Severity {
    /// The file could not be read or parsed: the plan lacks it.
    Error,
    /// The file was read, but something it pulls in was not (an unreadable `.S`).
    Warning,
}

/// A problem found while scanning, located at a file (and line when known).
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Path relative to the workspace root.
    pub path: String,
    /// 1-based, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

/// One file module of the workspace with what its source says.
#[derive(Debug)]
pub struct ScannedModule {
    /// The package the module belongs to.
    pub package: String,
    /// The crate (target) name, `-` replaced by `_`.
    pub crate_name: String,
    /// Module path below the crate root (empty for the root).
    pub segments: Vec<String>,
    /// Absolute path of the source file.
    pub file: PathBuf,
    /// Directory where this module's `mod foo;` children live.
    pub child_dir: PathBuf,
    /// What the file says (as parsed or as cached).
    pub facts: FileFacts,
    /// Evidence from where the file is, not what it says: an `aarch64`/`arm64`
    /// directory or file name (`path`), a subtree gated to AArch64 (`gated-mod`), a
    /// package named after ARM64 (`arch-crate`).
    pub context_evidence: Vec<Evidence>,
    /// The file is another architecture's (riscv64/loongarch64/x86_64 directory, gated
    /// or package): never planned, never edited.
    pub other_arch: bool,
    /// The gated subtree (or top-level module of an ARM64 crate) this module is in.
    pub gated: Option<GatedRoot>,
    /// The module is the root of an ARM64-named package (lib.rs/main.rs).
    pub arch_crate_root: bool,
    /// The file holding this module's `mod` line (`None` for crate roots).
    pub parent_file: Option<PathBuf>,
    /// The package's directory (where its Cargo.toml is).
    pub package_dir: PathBuf,
    canonical: PathBuf,
    hash: u64,
}

impl ScannedModule {
    /// `crate::a::b` spelled with the crate name.
    pub fn module_path(&self) -> String {
        std::iter::once(self.crate_name.as_str())
            .chain(self.segments.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("::")
    }

    /// All ARM64 evidence: the context's first, then the file's, by line.
    pub fn evidence(&self) -> impl Iterator<Item = &Evidence> {
        self.context_evidence.iter().chain(&self.facts.evidence)
    }

    /// Whether the module has any ARM64 evidence, its own or its context's.
    pub fn has_evidence(&self) -> bool {
        !self.context_evidence.is_empty() || !self.facts.evidence.is_empty()
    }

    /// Whether the module is ARM64 input: not another architecture's, and with evidence
    /// that is AArch64's alone (its place, or at least one AArch64-only record).
    pub fn is_arm64(&self, knowledge: &Knowledge) -> bool {
        !self.other_arch
            && (!self.context_evidence.is_empty()
                || self
                    .facts
                    .evidence
                    .iter()
                    .any(|e| is_arm64_only(e, knowledge)))
    }
}

/// The root of a subtree that is ARM64 because of where it hangs: a `mod foo;` gated to
/// AArch64, or a top-level module of an ARM64-named package.
#[derive(Debug, Clone)]
pub struct GatedRoot {
    /// The directory the declaring file's children live in (`D`).
    pub dir: PathBuf,
    /// The module name (`foo`).
    pub name: String,
    /// The root's file and the directory its own children live in.
    pub root_file: PathBuf,
    /// The directory the root's own children live in.
    pub root_child_dir: PathBuf,
    /// `gated-mod` evidence for the `mod` line (none for an ARM64 crate's modules).
    pub evidence: Option<Evidence>,
}

#[derive(Debug, Clone)]
enum JobArch {
    Neutral,
    Other,
    Gated(GatedRoot),
}

struct Job {
    package: String,
    crate_name: String,
    segments: Vec<String>,
    file: PathBuf,
    child_dir: PathBuf,
    /// Canonical paths of the files on the way from the root (cycle detection).
    ancestors: Vec<PathBuf>,
    /// Where the `mod` declaration is: (file, line).
    declared_at: Option<(PathBuf, usize)>,
    arch: JobArch,
    package_dir: PathBuf,
    /// `arch-crate` evidence when the package is named after ARM64.
    arch_crate: Option<Evidence>,
}

enum Loaded {
    /// Parsed now: canonical path, content hash, facts.
    Parsed(PathBuf, u64, FileFacts),
    /// Unchanged since the cached scan.
    Cached(PathBuf, u64),
    Failed(Diagnostic),
}

/// Walks every lib/bin target of the selected packages. With `cache` (a file path),
/// files unchanged since the last scan are not parsed again. `progress` is told the
/// number of files scanned so far after each level of the module tree.
pub fn scan_packages(
    ws: &Workspace,
    knowledge: &Knowledge,
    limits: ScanLimits,
    cache: Option<&Path>,
    progress: &dyn Fn(usize),
) -> (Vec<ScannedModule>, Vec<Diagnostic>) {
    let mut cache = match cache {
        Some(p) => ScanCache::open(p.to_path_buf(), settings_key(limits.max_file_size)),
        None => ScanCache::disabled(),
    };
    let mut parsed = 0;
    let mut frontier = Vec::new();
    for pkg in ws.packages() {
        let package_dir = pkg
            .manifest_path
            .parent()
            .map(|p| p.as_std_path().to_path_buf())
            .unwrap_or_default();
        let (arch, arch_crate) = package_arch(&ws.root, pkg.name.as_str(), &package_dir, knowledge);
        for (crate_name, root) in target_roots(pkg) {
            let child_dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
            frontier.push(Job {
                package: pkg.name.to_string(),
                crate_name,
                segments: Vec::new(),
                file: root,
                child_dir,
                ancestors: Vec::new(),
                declared_at: None,
                arch: arch.clone(),
                package_dir: package_dir.clone(),
                arch_crate: arch_crate.clone(),
            });
        }
    }

    let root = ws.root.clone();
    let mut modules = Vec::new();
    let mut diagnostics = Vec::new();
    let mut visited: HashSet<PathBuf> = HashSet::new();

    let mut files = 0;
    while !frontier.is_empty() {
        let loaded: Vec<Loaded> = frontier
            .par_iter()
            .map(|job| load(job, &root, knowledge, limits, &cache))
            .collect();
        files += loaded.len();
        progress(files);
        let mut next = Vec::new();
        for (job, result) in frontier.into_iter().zip(loaded) {
            let (canonical, hash, facts) = match result {
                Loaded::Parsed(c, h, f) => {
                    parsed += 1;
                    (c, h, Some(f))
                }
                Loaded::Cached(c, h) => (c, h, None),
                Loaded::Failed(d) => {
                    diagnostics.push(d);
                    continue;
                }
            };
            if job.ancestors.contains(&canonical) {
                let (at, line) = job.declared_at.clone().unwrap_or((job.file.clone(), 0));
                diagnostics.push(Diagnostic {
                    severity: Severity::Error,
                    path: relative_to(&root, &at),
                    line: Some(line),
                    message: format!(
                        "module cycle: `{}` includes {}, which is already one of its parent modules; remove the `#[path]` that points back",
                        join_path(&job.crate_name, &job.segments),
                        relative_to(&root, &job.file)
                    ),
                });
                continue;
            }
            if !visited.insert(canonical.clone()) {
                tracing::debug!(
                    "{} is already scanned; not scanning it again as `{}`",
                    job.file.display(),
                    join_path(&job.crate_name, &job.segments)
                );
                continue;
            }
            let facts = match facts.or_else(|| cache.take(&canonical)) {
                Some(f) => f,
                // Cannot happen (a cached path is taken once, after the visited
                // check); parse rather than trust it.
                None => match load(&job, &root, knowledge, limits, &ScanCache::disabled()) {
                    Loaded::Parsed(_, _, f) => {
                        parsed += 1;
                        f
                    }
                    Loaded::Failed(d) => {
                        diagnostics.push(d);
                        continue;
                    }
                    Loaded::Cached(..) => continue,
                },
            };
            for (line, message) in &facts.warnings {
                diagnostics.push(Diagnostic {
                    severity: Severity::Warning,
                    path: relative_to(&root, &job.file),
                    line: Some(*line),
                    message: message.clone(),
                });
            }
            let rel = relative_to(&root, &job.file);
            // Directory names count inside the package only: a package *directory*
            // naming an architecture is the package's own arch (see `package_arch`).
            let rel_in_package = if job.file.starts_with(&job.package_dir) {
                relative_to(&job.package_dir, &job.file)
            } else {
                rel.clone()
            };
            let other_arch = matches!(job.arch, JobArch::Other)
                || matches!(facts.file_gate, Some(ArchGate::Other | ArchGate::X86_64))
                || rel_in_package
                    .split('/')
                    .any(|seg| knowledge.arch.names_other_arch(seg));
            let mut context_evidence = Vec::new();
            if is_arm64_path(&rel_in_package) {
                context_evidence.push(Evidence {
                    kind: EvidenceKind::Path,
                    name: rel.clone(),
                    line: None,
                    file: None,
                    line_in_file: None,
                    count: 1,
                });
            }
            if let JobArch::Gated(g) = &job.arch {
                context_evidence.extend(g.evidence.clone());
            }
            context_evidence.extend(job.arch_crate.clone());
            let arch_crate_root = job.arch_crate.is_some() && job.declared_at.is_none();
            let mut ancestors = job.ancestors.clone();
            ancestors.push(canonical.clone());
            for decl in &facts.mods {
                let gated_away = matches!(decl.gate, Some(ArchGate::Other | ArchGate::X86_64));
                match resolve_child(&job, decl) {
                    Ok((file, child_dir)) => {
                        let mut segments = job.segments.clone();
                        segments.extend(decl.inline_path.iter().cloned());
                        segments.push(decl.name.clone());
                        let arch = match &job.arch {
                            JobArch::Other => JobArch::Other,
                            _ if other_arch || gated_away => JobArch::Other,
                            JobArch::Gated(g) => JobArch::Gated(g.clone()),
                            JobArch::Neutral
                                if decl.gate == Some(ArchGate::Arm)
                                    || (arch_crate_root && decl.inline_path.is_empty()) =>
                            {
                                let evidence =
                                    (decl.gate == Some(ArchGate::Arm)).then(|| Evidence {
                                        kind: EvidenceKind::GatedMod,
                                        name: format!("mod {}", decl.name),
                                        line: None,
                                        file: Some(rel.clone()),
                                        line_in_file: Some(decl.line),
                                        count: 1,
                                    });
                                JobArch::Gated(GatedRoot {
                                    dir: declaring_dir(&job, decl),
                                    name: decl.name.clone(),
                                    root_file: file.clone(),
                                    root_child_dir: child_dir.clone(),
                                    evidence,
                                })
                            }
                            JobArch::Neutral => JobArch::Neutral,
                        };
                        next.push(Job {
                            package: job.package.clone(),
                            crate_name: job.crate_name.clone(),
                            segments,
                            file,
                            child_dir,
                            ancestors: ancestors.clone(),
                            declared_at: Some((job.file.clone(), decl.line)),
                            arch,
                            package_dir: job.package_dir.clone(),
                            arch_crate: job.arch_crate.clone(),
                        });
                    }
                    // A module gated to x86_64 (or another architecture) whose file does
                    // not exist yet is a port target, not an error.
                    Err(message) if gated_away || other_arch => {
                        tracing::debug!("{rel}:{}: {message} (gated away; skipped)", decl.line)
                    }
                    Err(message) => diagnostics.push(Diagnostic {
                        severity: Severity::Error,
                        path: rel.clone(),
                        line: Some(decl.line),
                        message,
                    }),
                }
            }
            let gated = match job.arch {
                JobArch::Gated(g) => Some(g),
                _ => None,
            };
            modules.push(ScannedModule {
                package: job.package,
                crate_name: job.crate_name,
                segments: job.segments,
                file: job.file,
                child_dir: job.child_dir,
                facts,
                context_evidence,
                other_arch,
                gated,
                arch_crate_root,
                parent_file: job.declared_at.map(|(f, _)| f),
                package_dir: job.package_dir,
                canonical,
                hash,
            });
        }
        frontier = next;
    }
    cache.save(
        modules
            .iter()
            .map(|m| (m.canonical.as_path(), m.hash, &m.facts)),
        parsed,
    );
    modules.sort_by(|a, b| {
        (&a.package, &a.crate_name, &a.segments).cmp(&(&b.package, &b.crate_name, &b.segments))
    });
    (modules, diagnostics)
}

fn join_path(crate_name: &str, segments: &[String]) -> String {
    std::iter::once(crate_name)
        .chain(segments.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("::")
}

/// Whether a package is an architecture's by its name or its directory (relative to
/// the workspace root): ARM64 (`arm_vcpu`, `arch_hal/aarch64_hal/gic`, `foo-aarch64`),
/// with `arch-crate` evidence, or another architecture (`riscv_vcpu`).
fn package_arch(
    ws_root: &Path,
    name: &str,
    dir: &Path,
    knowledge: &Knowledge,
) -> (JobArch, Option<Evidence>) {
    let rel_dir = relative_to(ws_root, dir);
    let dir_segs: Vec<&str> = if dir.starts_with(ws_root) {
        rel_dir.split('/').filter(|s| !s.is_empty()).collect()
    } else {
        Vec::new()
    };
    let arm_name = if knowledge.arch.names_arm64(name) {
        Some(name.to_string())
    } else if dir_segs.iter().any(|s| knowledge.arch.names_arm64(s)) {
        Some(rel_dir.clone())
    } else {
        None
    };
    if let Some(n) = arm_name {
        let evidence = Evidence {
            kind: EvidenceKind::ArchCrate,
            name: n,
            line: None,
            file: None,
            line_in_file: None,
            count: 1,
        };
        return (JobArch::Neutral, Some(evidence));
    }
    if knowledge.arch.names_other_arch(name)
        || dir_segs.iter().any(|s| knowledge.arch.names_other_arch(s))
    {
        return (JobArch::Other, None);
    }
    (JobArch::Neutral, None)
}

/// The directory that `mod name;` written in `job`'s file resolves in (without `#[path]`).
fn declaring_dir(job: &Job, decl: &super::evidence::ModDecl) -> PathBuf {
    let mut base = job.child_dir.clone();
    for (name, attr) in decl.inline_path.iter().zip(&decl.inline_path_attrs) {
        base.push(attr.as_deref().unwrap_or(name));
    }
    base
}

/// Whether a workspace-relative path names an ARM64 directory or file.
pub fn is_arm64_path(rel: &str) -> bool {
    rel.split('/').any(|seg| {
        let stem = seg.split('.').next().unwrap_or(seg);
        matches!(stem, "aarch64" | "arm64")
    })
}

/// Finds the file of `mod name;` declared in `job`'s file, and where its children live.
fn resolve_child(job: &Job, decl: &super::evidence::ModDecl) -> Result<(PathBuf, PathBuf), String> {
    let mut base = job.child_dir.clone();
    for (name, attr) in decl.inline_path.iter().zip(&decl.inline_path_attrs) {
        base.push(attr.as_deref().unwrap_or(name));
    }
    if let Some(p) = &decl.path_attr {
        // Top-level `#[path]` is relative to the declaring file's directory; inside
        // inline modules, to the inline modules' directory. The file behaves as mod.rs.
        let dir = if decl.inline_path.is_empty() {
            job.file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            base
        };
        let file = normalize(&dir.join(p));
        let child_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok((file, child_dir));
    }
    let flat = base.join(format!("{}.rs", decl.name));
    let nested = base.join(&decl.name).join("mod.rs");
    // `symlink_metadata` so that a dangling or looping link is still "there" and gets
    // its own, precise error when it is loaded.
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    match (exists(&flat), exists(&nested)) {
        (true, true) => Err(format!(
            "module `{}` is found at both {} and {}; delete one of them",
            decl.name,
            flat.display(),
            nested.display()
        )),
        (true, false) => Ok((flat, base.join(&decl.name))),
        (false, true) => Ok((nested, base.join(&decl.name))),
        (false, false) => Err(format!(
            "file not found for module `{}`: expected {} or {}",
            decl.name,
            flat.display(),
            nested.display()
        )),
    }
}

/// Resolves `.` and `..` lexically, so `#[path = "../x.rs"]` works even when the
/// directory it steps out of does not exist (as with inline modules).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn load(
    job: &Job,
    root: &Path,
    knowledge: &Knowledge,
    limits: ScanLimits,
    cache: &ScanCache,
) -> Loaded {
    let rel = relative_to(root, &job.file);
    let fail = |line: Option<usize>, message: String| {
        Loaded::Failed(Diagnostic {
            severity: Severity::Error,
            path: rel.clone(),
            line,
            message,
        })
    };
    let canonical = match job.file.canonicalize() {
        Ok(c) => c,
        Err(e) if is_symlink_loop(&e) => {
            return fail(
                None,
                format!("cannot open: symbolic link loop ({e}); fix the link"),
            )
        }
        Err(e) => {
            let declared = job
                .declared_at
                .as_ref()
                .map(|(f, l)| format!(" (declared at {}:{l})", relative_to(root, f)))
                .unwrap_or_default();
            return fail(None, format!("cannot open{declared}: {e}"));
        }
    };
    let size = match canonical.metadata() {
        Ok(m) if m.is_dir() => return fail(None, "is a directory, not a Rust file".into()),
        Ok(m) => m.len(),
        Err(e) => return fail(None, format!("cannot read: {e}")),
    };
    if size > limits.max_file_size {
        return fail(
            None,
            format!(
                "not scanned: {:.1} MiB is over the {:.1} MiB limit (a generated file?); raise `max-file-size` in [workspace.metadata.eterna-port] to scan it",
                size as f64 / 1048576.0,
                limits.max_file_size as f64 / 1048576.0
            ),
        );
    }
    let bytes = match std::fs::read(&canonical) {
        Ok(b) => b,
        Err(e) => return fail(None, format!("cannot read: {e}")),
    };
    let hash = content_hash(&bytes);
    let dir = canonical.parent().unwrap_or(Path::new("/"));
    if cache.is_fresh(&canonical, hash, job.file.parent().unwrap_or(dir)) {
        return Loaded::Cached(canonical, hash);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return fail(
                Some(line),
                format!("not valid UTF-8 (byte offset {at}); Rust source must be UTF-8"),
            );
        }
    };
    match analyze_file(&text, &job.file, knowledge) {
        Ok(facts) => Loaded::Parsed(canonical, hash, facts),
        Err(e) => fail(
            Some(e.line),
            format!("does not parse: {} (column {})", e.message, e.column),
        ),
    }
}

fn is_symlink_loop(e: &io::Error) -> bool {
    // ELOOP is 40 on Linux, 62 on macOS and the BSDs.
    matches!(e.raw_os_error(), Some(40) | Some(62)) || e.to_string().contains("symbolic links")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_paths() {
        assert!(is_arm64_path("hv/src/arch/aarch64/gic.rs"));
        assert!(is_arm64_path("src/arm64.rs"));
        assert!(!is_arm64_path("src/arch/x86_64/apic.rs"));
        assert!(!is_arm64_path("src/aarch64_notes/x.rs"));
    }
}
