//! `index`, `search` and `status`: the store's commands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use include_dir::{include_dir, Dir};

use super::{open, Session, EXIT_ERROR, EXIT_OK};
use crate::cli::{ChunkKind, GlobalArgs, IndexArgs, MessageFormat, SearchArgs};
use crate::config::Config;
use crate::plan;
use crate::report;
use crate::store::index::Kind;
use crate::store::{Embedder, Filters, LocalEmbedder, RemoteEmbedder, SourceFile, Store};
use crate::workspace::{relative_to, Severity};

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

fn open_store(config: &Config) -> Result<Store> {
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
/// docs, the knowledge and the newest version of every generated artifact.
fn collect_sources(s: &Session, store: &Store, quiet: bool) -> Result<(Vec<SourceFile>, usize)> {
    let (modules, diagnostics) = super::scan(s, true);
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    report::print_diagnostics(&diagnostics, quiet);
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
        let component = component_of
            .get(module_path.as_str())
            .copied()
            .unwrap_or(crate::knowledge::ARCH_NEUTRAL);
        sources.push(SourceFile {
            path: relative_to(&s.ws.root, &m.file),
            kind: Kind::Code,
            text,
            component: Some(component.to_string()),
            module_path: Some(module_path),
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
                    component: Some(m.component.clone()),
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
            sources.push(SourceFile {
                path: relative_to(&s.ws.root, &d),
                kind: Kind::Doc,
                text,
                module_path: None,
                component: None,
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
        });
    }
    Ok((sources, errors))
}

/// Brings the index up to date (incremental) without output: the LLM backend's
/// retrieved context needs one.
pub(super) fn refresh_index(s: &Session, store: &Store) -> Result<()> {
    let embedder = make_embedder(&s.config)?;
    let (sources, _) = collect_sources(s, store, true)?;
    store.index(&sources, embedder.as_ref(), &|_, _| {})?;
    Ok(())
}

pub(super) fn cmd_index(g: &GlobalArgs, args: &IndexArgs) -> Result<u8> {
    let s = open(g)?;
    let embedder = make_embedder(&s.config)?;
    let store = open_store(&s.config)?;
    if args.rebuild_index {
        store.rebuild_derived()?;
        if !g.quiet {
            report::stderr_message(
                "note",
                &format!(
                    "dropped the search index of {} (chunks, vectors, full-text rows); artifacts, tasks, runs and the LLM cache are kept",
                    store.path().display()
                ),
            );
        }
    }
    let run = store.begin_run("index")?;
    let (sources, scan_errors) = collect_sources(&s, &store, g.quiet)?;
    let bar = if g.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("indexing");
        bar
    };
    let result = store.index(&sources, embedder.as_ref(), &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = store.finish_run(&run, "failed");
            return Err(anyhow::Error::new(e).context(format!(
                "indexing stopped; what was indexed so far is kept in {}",
                store.path().display()
            )));
        }
    };
    store.finish_run(&run, "ok")?;
    if let Some(problem) = store.check_consistency()? {
        bail!(
            "the index in {} is inconsistent after indexing ({problem}); run `cargo eterna-port index --rebuild-index`",
            store.path().display()
        );
    }
    match g.message_format {
        MessageFormat::Json => {
            let v = serde_json::json!({
                "schema_version": 1,
                "store": store.path().display().to_string(),
                "index": stats,
            });
            report::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        MessageFormat::Human => {
            if !g.quiet {
                report::print_stdout(&report::index_human(store.path(), &stats))?;
            }
        }
    }
    if scan_errors > 0 {
        report::stderr_message(
            "error",
            &format!(
                "{scan_errors} file{} could not be scanned (listed above); the index covers the rest",
                if scan_errors == 1 { "" } else { "s" }
            ),
        );
        return Ok(EXIT_ERROR);
    }
    Ok(EXIT_OK)
}

pub(super) fn cmd_search(g: &GlobalArgs, args: &SearchArgs) -> Result<u8> {
    let s = open(g)?;
    if args.query.trim().is_empty() {
        bail!("the search QUERY is empty; give words to look for, e.g. `cargo eterna-port search \"VMCS launch\"`");
    }
    if args.limit == 0 || args.limit > 1000 {
        bail!("`-n/--limit {}` must be between 1 and 1000", args.limit);
    }
    let component = match &args.component {
        None => None,
        Some(c) => Some(
            s.knowledge
                .component_for_alias(c)
                .map(|c| c.name.clone())
                .ok_or_else(|| {
                    anyhow!(
                        "`--component {c}` is not a component; use one of: {}",
                        crate::knowledge::COMPONENTS.join(", ")
                    )
                })?,
        ),
    };
    let filters = Filters {
        kind: args.kind.map(|k| match k {
            ChunkKind::Code => Kind::Code,
            ChunkKind::Doc => Kind::Doc,
            ChunkKind::Knowledge => Kind::Knowledge,
            ChunkKind::Artifact => Kind::Artifact,
        }),
        path_prefix: args.path_prefix.clone(),
        component,
        prefer_components: crate::store::rag::query_components(&args.query, &s.knowledge),
        // Varied results, unless the search is about one file anyway.
        max_per_source: if args.path_prefix.is_some() {
            None
        } else {
            Some(2)
        },
    };
    let embedder = make_embedder(&s.config)?;
    let store = open_store(&s.config)?;
    let stats = store.stats()?;
    let results = store
        .search(&args.query, args.limit, &filters, embedder.as_ref())
        .with_context(|| format!("search in {} failed", store.path().display()))?;
    if stats.chunks == 0 && !g.quiet {
        report::stderr_message(
            "note",
            &format!(
                "the index in {} is empty; run `cargo eterna-port index` first",
                store.path().display()
            ),
        );
    }
    match g.message_format {
        MessageFormat::Json => {
            let v = serde_json::json!({
                "schema_version": 1,
                "query": args.query,
                "results": results,
            });
            report::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        MessageFormat::Human => {
            report::print_stdout(&report::search_human(&results, g.verbose > 0))?;
        }
    }
    Ok(EXIT_OK)
}

pub(super) fn cmd_status(g: &GlobalArgs) -> Result<u8> {
    let s = open(g)?;
    let path = &s.config.db.value;
    if !path.exists() {
        match g.message_format {
            MessageFormat::Json => {
                let v = serde_json::json!({
                    "schema_version": 1,
                    "store": path.display().to_string(),
                    "exists": false,
                });
                report::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
            }
            MessageFormat::Human => report::print_stdout(&format!(
                "no store at {} yet ({}); `cargo eterna-port index` creates it\n",
                path.display(),
                s.config.db.source
            ))?,
        }
        return Ok(EXIT_OK);
    }
    let store = open_store(&s.config)?;
    let stats = store.stats()?;
    let problem = store.check_consistency()?;
    // The last run with agent work (port or the fix loop), with its tasks and health.
    let last = match store.last_run(Some("port"))? {
        Some(run) => Some(report::LastRun {
            tasks: store.run_tasks(&run.run_id)?,
            health: store.run_health(&run.run_id)?,
            fix_iterations: store.run_fix_iterations(&run.run_id)?,
            items: store.run_port_items(&run.run_id)?,
            run,
        }),
        None => None,
    };
    match g.message_format {
        MessageFormat::Json => {
            let v = serde_json::json!({
                "schema_version": 1,
                "store": stats.path,
                "exists": true,
                "consistent": problem.is_none(),
                "problem": problem,
                "stats": stats,
                "last_run": last,
            });
            report::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        MessageFormat::Human => {
            report::print_stdout(&report::status_human(&stats, problem.as_deref()))?;
            if let Some(last) = &last {
                report::print_stdout(&report::last_run_human(last))?;
            }
        }
    }
    Ok(EXIT_OK)
}
