//! The check of the offline engine's drafts made once per run, before the model is
//! asked, so a prompt says whether a draft compiles only when `cargo check` said so.
//!
//! Nothing is written to the workspace before the swarm has answered: the drafted
//! workspace (the workspace's files with the engine's changes applied) is mirrored into
//! `<target-dir>/eterna-port/draft-check/ws` and checked there, with the workspace's
//! toolchain and target (as the fix loop checks) and a target dir of its own beside it.
//! The mirror is kept between runs and only files whose content changed are rewritten,
//! so an unchanged re-run re-checks nothing and sees the same results (and prompts).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::engine::port::FileChange;
use crate::fixloop::LoopOptions;
use crate::plan::ModulePlan;
use crate::swarm::prompts::{DraftCheck, DraftChecks};

/// Files above this size are compared by size and modification time only.
const LARGE_FILE: u64 = 1 << 20;

/// What the check needs.
pub struct DraftCheckJob<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The workspace's cargo target dir (the mirror and its build go under it).
    pub target_dir: &'a Path,
    /// The drafts (workspace-relative path, text) as the port would write them.
    pub changes: &'a [FileChange],
    /// The selected modules.
    pub modules: &'a [ModulePlan],
    /// `-p` packages (empty: the whole workspace).
    pub packages: &'a [String],
    /// The configured target triple.
    pub target: &'a str,
    /// Check for the host target when the toolchain lacks the target's std.
    pub host_fallback: bool,
}

/// Checks the drafts; a check that cannot run gives every module a `not checked`
/// result saying why.
pub fn check_drafts(job: &DraftCheckJob<'_>) -> DraftChecks {
    let started = std::time::Instant::now();
    let out = match run(job) {
        Ok(checks) => checks,
        Err(e) => {
            let reason = format!("the drafts could not be checked ({e:#})");
            let first = reason.lines().next().unwrap_or_default().to_string();
            tracing::warn!("{reason}");
            DraftChecks {
                target: job.target.to_string(),
                modules: BTreeMap::new(),
                not_run: Some(first),
            }
        }
    };
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "the engine's drafts checked"
    );
    out
}

fn run(job: &DraftCheckJob<'_>) -> Result<DraftChecks> {
    let toolchain = crate::toolchain::Toolchain::for_workspace(job.root)?;
    let choice = toolchain.resolve_target(job.root, job.target, job.host_fallback)?;
    let base = job.target_dir.join("eterna-port").join("draft-check");
    let mirror = base.join("ws");
    sync_mirror(job.root, &mirror, &[job.target_dir, &base], job.changes)?;
    let mut opts = LoopOptions::new(&mirror, &choice.triple, job.modules);
    opts.packages = job.packages;
    opts.toolchain = toolchain;
    opts.build_std = choice.build_std;
    opts.apply_rustfix = false;
    opts.target_dir = Some(base.join("target"));
    let check = crate::fixloop::check(&opts)?;
    let crate_errors = errors_by_crate(&mirror, job.modules, &check.report);
    Ok(DraftChecks {
        target: choice.triple.clone(),
        modules: check
            .report
            .modules
            .iter()
            .filter(|m| m.component.is_some())
            .map(|m| {
                let dir = crate_dir(&mirror, job.modules, &m.module_path);
                let elsewhere = crate_errors
                    .get(&dir)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(m.errors);
                (m.module_path.clone(), DraftCheck::from_result(m, elsewhere))
            })
            .collect(),
        not_run: None,
    })
}

/// The package directory (relative to the mirror, `/`-separated) of a planned module:
/// the nearest directory above its source with a `Cargo.toml`.
fn crate_dir(mirror: &Path, modules: &[ModulePlan], module: &str) -> String {
    let Some(m) = modules.iter().find(|m| m.module_path == module) else {
        return String::new();
    };
    mirror
        .join(&m.source)
        .ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file())
        .map(|d| crate::workspace::relative_to(mirror, d))
        .unwrap_or_default()
}

/// The check's errors per package directory: each error counted in the package whose
/// directory holds its file (the deepest one); an error without a file counts in every
/// package.
fn errors_by_crate(
    mirror: &Path,
    modules: &[ModulePlan],
    report: &crate::fixloop::CheckReport,
) -> BTreeMap<String, usize> {
    let dirs: BTreeSet<String> = modules
        .iter()
        .map(|m| crate_dir(mirror, modules, &m.module_path))
        .collect();
    let mut out: BTreeMap<String, usize> = dirs.iter().map(|d| (d.clone(), 0)).collect();
    for d in report
        .modules
        .iter()
        .flat_map(|m| &m.diagnostics)
        .filter(|d| d.is_error())
    {
        let owner = dirs
            .iter()
            .filter(|dir| dir.is_empty() || d.file.starts_with(&format!("{dir}/")))
            .max_by_key(|dir| dir.len());
        match owner {
            Some(dir) if !d.file.is_empty() => *out.entry(dir.clone()).or_default() += 1,
            _ => out.values_mut().for_each(|n| *n += 1),
        }
    }
    out
}

/// Makes `mirror` hold the workspace's files (without `.git` and the `skip`ped
/// directories) with `changes` applied. A file is written only when it differs (so
/// cargo re-checks only what changed); files that are gone are removed.
fn sync_mirror(root: &Path, mirror: &Path, skip: &[&Path], changes: &[FileChange]) -> Result<()> {
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))
        .collect();
    let changed: BTreeMap<PathBuf, &str> = changes
        .iter()
        .map(|c| (PathBuf::from(&c.rel), c.new.as_str()))
        .collect();
    let mut files = Vec::new();
    collect(root, Path::new(""), &skip, &mut files)?;
    let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
    for rel in files {
        if !changed.contains_key(&rel) {
            copy_if_changed(&root.join(&rel), &mirror.join(&rel))?;
        }
        wanted.insert(rel);
    }
    for (rel, text) in &changed {
        let path = mirror.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        write(&path, text.as_bytes())?;
        wanted.insert(rel.clone());
    }
    wanted.extend(changed.keys().cloned());
    let mut present = BTreeSet::new();
    if mirror.is_dir() {
        collect_paths(mirror, Path::new(""), &mut present)?;
    }
    for gone in present.difference(&wanted) {
        let _ = std::fs::remove_file(mirror.join(gone));
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("could not write {}", path.display()))
}

/// Copies `from` to `to` unless `to` already has its content.
fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let (Ok(src), Ok(dst)) = (std::fs::metadata(from), std::fs::metadata(to)) else {
        let bytes =
            std::fs::read(from).with_context(|| format!("could not read {}", from.display()))?;
        return write(to, &bytes);
    };
    let newer = match (src.modified(), dst.modified()) {
        (Ok(s), Ok(d)) => s > d,
        _ => true,
    };
    // Sources are compared byte for byte; only a large file (an image, a blob) is
    // taken as unchanged from its size and age.
    if src.len() == dst.len() && !newer && src.len() > LARGE_FILE {
        return Ok(());
    }
    let bytes =
        std::fs::read(from).with_context(|| format!("could not read {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    write(to, &bytes)
}

/// The workspace's files, relative, without `.git`, `skip` and symlinked directories.
fn collect(root: &Path, rel: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("could not read {}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let path = e.path();
        let Ok(kind) = e.file_type() else {
            continue;
        };
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
            if kind.is_symlink() || name == ".git" || skip.contains(&canonical) {
                continue;
            }
            collect(root, &rel.join(&name), skip, out)?;
        } else if meta.is_file() {
            out.push(rel.join(&name));
        }
    }
    Ok(())
}

/// Every file under `dir`, relative.
fn collect_paths(dir: &Path, rel: &Path, out: &mut BTreeSet<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir.join(rel))?.flatten() {
        let rel = rel.join(e.file_name());
        match e.file_type() {
            Ok(t) if t.is_dir() => collect_paths(dir, &rel, out)?,
            Ok(_) => {
                out.insert(rel);
            }
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_holds_the_drafted_workspace_and_rewrites_only_what_changed() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("Cargo.toml", "[workspace]\n");
        write("hv/src/lib.rs", "mod a;\n");
        write("hv/src/a.rs", "pub fn a() {}\n");
        write(".git/HEAD", "ref\n");
        write("target/debug/big", "x");
        let target = root.path().join("target");
        let mirror = target.join("eterna-port/draft-check/ws");
        let change = |rel: &str, new: &str| FileChange {
            rel: rel.into(),
            new: new.into(),
        };
        let changes = vec![change("hv/src/x86.rs", "pub fn b() {}\n")];
        sync_mirror(root.path(), &mirror, &[&target], &changes).unwrap();
        let mut files = BTreeSet::new();
        collect_paths(&mirror, Path::new(""), &mut files).unwrap();
        let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            files,
            [
                "Cargo.toml",
                "hv/src/a.rs",
                "hv/src/lib.rs",
                "hv/src/x86.rs"
            ]
        );
        let stamp = |rel: &str| {
            std::fs::metadata(mirror.join(rel))
                .unwrap()
                .modified()
                .unwrap()
        };
        let before = stamp("hv/src/a.rs");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // The next run: a.rs unchanged (not rewritten), the draft changed, lib.rs gone.
        std::fs::remove_file(root.path().join("hv/src/lib.rs")).unwrap();
        let changes = vec![change("hv/src/x86.rs", "pub fn c() {}\n")];
        sync_mirror(root.path(), &mirror, &[&target], &changes).unwrap();
        assert_eq!(stamp("hv/src/a.rs"), before);
        assert_eq!(
            std::fs::read_to_string(mirror.join("hv/src/x86.rs")).unwrap(),
            "pub fn c() {}\n"
        );
        assert!(!mirror.join("hv/src/lib.rs").exists());
        // A workspace file edited since: copied again.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write("hv/src/a.rs", "pub fn z() {}\n");
        sync_mirror(root.path(), &mirror, &[&target], &changes).unwrap();
        assert_eq!(
            std::fs::read_to_string(mirror.join("hv/src/a.rs")).unwrap(),
            "pub fn z() {}\n"
        );
    }
}
