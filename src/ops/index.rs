//! The store's index as a library call: what `index` indexes (module files with their
//! module path and component, Markdown docs, the knowledge, the generated artifacts),
//! and bringing the index up to date.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use include_dir::{include_dir, Dir};

use super::{Error, Session};
use crate::config::Config;
use crate::knowledge::{ARCH_AARCH64, ARCH_OTHER, ARCH_X86_64, NO_ARCH};
use crate::plan;
use crate::store::index::Kind;
use crate::store::{Embedder, IndexStats, LocalEmbedder, RemoteEmbedder, SourceFile, Store};
use crate::workspace::{relative_to, Diagnostic, ScannedModule, Severity};

/// The knowledge, embedded so that an installed binary can index it.
static KNOWLEDGE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates/knowledge");

/// Path prefix of the embedded knowledge in the index.
pub const KNOWLEDGE_PREFIX: &str = "@knowledge/";
/// Path prefix of generated artifacts in the index.
pub const ARTIFACT_PREFIX: &str = "@artifact/";

/// The configured embedder.
pub fn make_embedder(config: &Config) -> Result<Box<dyn Embedder>> {
    match config.embedder.value.as_str() {
        "remote" => {
            let key = config.openai_api_key.as_ref().ok_or_else(|| {
                anyhow!(
                    "the remote embedder is configured ({}) but OPENAI_API_KEY is not set; set it in the environment or the workspace's .env, or use the local embedder (embedder = \"local\")",
                    config.embedder.source
                )
            })?;
            Ok(Box::new(RemoteEmbedder::new(
                &config.embeddings_base_url.value,
                &config.embedding_model.value,
                key.value.clone(),
            )?))
        }
        _ => Ok(Box::new(LocalEmbedder::new())),
    }
}

/// Opens the configured store.
pub fn open_store(config: &Config) -> Result<Store> {
    Ok(Store::open(&config.db.value)?)
}

/// The knowledge files as sources (`@knowledge/notes/vm-control.md`, …).
pub fn knowledge_sources() -> Vec<SourceFile> {
    let mut out = Vec::new();
    let mut stack = vec![&KNOWLEDGE];
    while let Some(dir) = stack.pop() {
        for entry in dir.entries() {
            match entry {
                include_dir::DirEntry::Dir(d) => stack.push(d),
                include_dir::DirEntry::File(f) => {
                    let rel = f.path().to_string_lossy().replace('\\', "/");
                    let Some(text) = f.contents_utf8() else {
                        continue;
                    };
                    let stem = f
                        .path()
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let component = (rel.starts_with("notes/")
                        && crate::knowledge::COMPONENTS.contains(&stem.as_str()))
                    .then_some(stem);
                    out.push(SourceFile {
                        path: format!("{KNOWLEDGE_PREFIX}{rel}"),
                        kind: Kind::Knowledge,
                        text: text.to_string(),
                        module_path: None,
                        component,
                        arch: NO_ARCH.to_string(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Markdown files of the workspace (not under `target/` or hidden directories).
fn markdown_files(root: &Path, target_dir: &Path, max: u64, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if name.starts_with('.') || name == "target" || path == target_dir {
                continue;
            }
            markdown_files(&path, target_dir, max, out);
        } else if ft.is_file()
            && name.ends_with(".md")
            && e.metadata().map(|m| m.len() <= max).unwrap_or(false)
        {
            out.push(path);
        }
    }
}

/// Everything `index` indexes: module files with module path and component, Markdown
/// docs, the knowledge and the newest version of every generated artifact; with the
/// scan's diagnostics.
fn collect_sources(
    s: &Session,
    store: &Store,
    scanning: &(dyn Fn(usize) + Sync),
) -> Result<(Vec<SourceFile>, Vec<Diagnostic>)> {
    let (modules, diagnostics) = s.scan(true, scanning);
    let scan_diagnostics = diagnostics.clone();
    let plan = plan::build(
        &s.ws.root,
        &s.config.target.value,
        &modules,
        diagnostics,
        &s.knowledge,
    );
    let component_of: HashMap<&str, &str> = plan
        .modules
        .iter()
        .map(|m| (m.module_path.as_str(), m.component.as_str()))
        .collect();

    let mut sources = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in &modules {
        if !seen.insert(m.file.clone()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&m.file) else {
            continue; // reported by the scan
        };
        let module_path = m.module_path();
        let planned = component_of.get(module_path.as_str()).copied();
        let component = planned.unwrap_or(crate::knowledge::ARCH_NEUTRAL);
        let arch = module_arch(s, m, planned.is_some());
        sources.push(SourceFile {
            path: relative_to(&s.ws.root, &m.file),
            kind: Kind::Code,
            text,
            component: Some(component.to_string()),
            module_path: Some(module_path),
            arch: arch.to_string(),
        });
    }
    // Assembly files the planned modules include (`boot.S`): code of their module.
    for m in &plan.modules {
        let dir = Path::new(&m.source).parent().unwrap_or(Path::new(""));
        let mut files: Vec<&str> = m
            .evidence
            .iter()
            .filter_map(|e| e.file.as_deref())
            .collect();
        files.sort_unstable();
        files.dedup();
        for f in files {
            let abs = s.ws.root.join(dir).join(f);
            let Ok(text) = std::fs::read_to_string(&abs) else {
                continue;
            };
            let rel = relative_to(&s.ws.root, &abs);
            if seen.insert(abs) {
                sources.push(SourceFile {
                    path: rel,
                    kind: Kind::Code,
                    text,
                    module_path: Some(m.module_path.clone()),
                    component: Some(m.component.to_string()),
                    arch: ARCH_AARCH64.to_string(),
                });
            }
        }
    }
    let mut docs = Vec::new();
    markdown_files(
        &s.ws.root,
        &s.ws.target_dir,
        s.config.max_file_size.value,
        &mut docs,
    );
    for d in docs {
        if let Ok(text) = std::fs::read_to_string(&d) {
            let path = relative_to(&s.ws.root, &d);
            let arch = path_arch(&s.knowledge, &path).unwrap_or(NO_ARCH);
            sources.push(SourceFile {
                path,
                kind: Kind::Doc,
                text,
                module_path: None,
                component: None,
                arch: arch.to_string(),
            });
        }
    }
    sources.extend(knowledge_sources());
    for a in store.latest_artifacts()? {
        let component = component_of.get(a.module.as_str()).map(|c| c.to_string());
        sources.push(SourceFile {
            path: format!("{ARTIFACT_PREFIX}{}", a.path),
            kind: Kind::Artifact,
            text: a.content,
            module_path: Some(a.module),
            component,
            // What the port wrote is x86_64 code.
            arch: ARCH_X86_64.to_string(),
        });
    }
    Ok((sources, scan_diagnostics))
}

/// The architecture a workspace path names, by its first segment that names one.
fn path_arch(k: &crate::knowledge::Knowledge, rel: &str) -> Option<&'static str> {
    rel.split('/').find_map(|seg| k.arch.arch_label(seg))
}

/// The architecture of a module's file: `aarch64` for ARM64 input (planned, or with
/// AArch64-only evidence), the named one for another architecture's code (its path in
/// the package, the package's directory or crate name, its file's cfg gate), else
/// `neutral`.
fn module_arch(s: &Session, m: &ScannedModule, planned: bool) -> &'static str {
    if planned || m.is_arm64(&s.knowledge) {
        return ARCH_AARCH64;
    }
    if !m.other_arch {
        return NO_ARCH;
    }
    let in_package = relative_to(&m.package_dir, &m.file);
    let named = path_arch(&s.knowledge, &in_package)
        .or_else(|| {
            m.package_dir
                .file_name()
                .and_then(|d| s.knowledge.arch.arch_label(&d.to_string_lossy()))
        })
        .or_else(|| s.knowledge.arch.arch_label(&m.crate_name))
        .filter(|a| *a != ARCH_AARCH64);
    match (named, &m.facts.file_gate) {
        (Some(a), _) => a,
        (None, Some(crate::workspace::ArchGate::X86_64)) => ARCH_X86_64,
        (None, _) => ARCH_OTHER,
    }
}

/// Brings the index up to date (incremental) without output: the LLM backend's
/// retrieved context needs one.
pub fn refresh(s: &Session, store: &Store) -> Result<()> {
    let embedder = make_embedder(&s.config)?;
    let (sources, _) = collect_sources(s, store, &|_| {})?;
    store.index(&sources, embedder.as_ref(), &|_, _| {})?;
    Ok(())
}

/// What [`run`] is asked to do.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Drop the derived tables (chunks, vectors, full-text rows) first.
    pub rebuild: bool,
}

/// What to tell the user while indexing.
pub trait IndexEvents: Sync {
    /// The derived tables of the store were dropped (`rebuild`).
    fn rebuilt(&self, store: &Path);
    /// Files scanned so far.
    fn scanning(&self, files: usize);
    /// Files indexed so far, of `total`.
    fn indexing(&self, done: usize, total: usize);
}

/// The result of [`run`].
#[derive(Debug)]
pub struct IndexRun {
    /// The store indexed.
    pub store: PathBuf,
    /// What the indexing did.
    pub stats: IndexStats,
    /// The scan's diagnostics (files that could not be scanned are not indexed).
    pub diagnostics: Vec<Diagnostic>,
}

impl IndexRun {
    /// Source files that could not be scanned.
    pub fn scan_errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Indexes the workspace into the store (incremental: unchanged files are skipped),
/// recording the run.
pub fn run(s: &Session, opts: &IndexOptions, events: &dyn IndexEvents) -> Result<IndexRun, Error> {
    let embedder = make_embedder(&s.config)?;
    let store = open_store(&s.config)?;
    if opts.rebuild {
        store.rebuild_derived()?;
        events.rebuilt(store.path());
    }
    let run = store.begin_run("index")?;
    let (sources, diagnostics) = collect_sources(s, &store, &|n| events.scanning(n))?;
    let stats = match store.index(&sources, embedder.as_ref(), &|done, total| {
        events.indexing(done, total)
    }) {
        Ok(stats) => stats,
        Err(e) => {
            let _ = store.finish_run(&run, "failed");
            return Err(anyhow::Error::new(e)
                .context(format!(
                    "indexing stopped; what was indexed so far is kept in {}",
                    store.path().display()
                ))
                .into());
        }
    };
    store.finish_run(&run, "ok")?;
    if let Some(problem) = store.check_consistency()? {
        return Err(anyhow!(
            "the index in {} is inconsistent after indexing ({problem}); run `cargo eterna-port index --rebuild-index`",
            store.path().display()
        )
        .into());
    }
    Ok(IndexRun {
        store: store.path().to_path_buf(),
        stats,
        diagnostics,
    })
}
