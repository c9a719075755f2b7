//! `index`, `search` and `status`: the store's commands.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{open, EXIT_ERROR, EXIT_OK};
use crate::cli::{ChunkKind, GlobalArgs, IndexArgs, MessageFormat, SearchArgs};
use crate::ops::index::{self, make_embedder, open_store, IndexEvents, IndexOptions};
use crate::report;
use crate::store::index::Kind;
use crate::store::Filters;

pub(super) fn cmd_index(g: &GlobalArgs, args: &IndexArgs) -> Result<u8> {
    let s = open(g)?;
    /// Indexing progress on stderr: a bar, and the note on a rebuild.
    struct Shown {
        quiet: bool,
        bar: indicatif::ProgressBar,
    }
    impl IndexEvents for Shown {
        fn rebuilt(&self, store: &Path) {
            if !self.quiet {
                report::stderr_message(
                    "note",
                    &format!(
                        "dropped the search index of {} (chunks, vectors, full-text rows); artifacts, tasks, runs and the LLM cache are kept",
                        store.display()
                    ),
                );
            }
        }
        fn scanning(&self, _files: usize) {}
        fn indexing(&self, done: usize, total: usize) {
            self.bar.set_length(total as u64);
            self.bar.set_position(done as u64);
        }
    }
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
    let shown = Shown {
        quiet: g.quiet,
        bar,
    };
    let result = index::run(
        &s,
        &IndexOptions {
            rebuild: args.rebuild_index,
        },
        &shown,
    );
    shown.bar.finish_and_clear();
    let done = result?;
    report::print_diagnostics(&done.diagnostics, g.quiet);
    match g.message_format {
        MessageFormat::Json => {
            let v = serde_json::json!({
                "schema_version": 1,
                "store": done.store.display().to_string(),
                "index": done.stats,
            });
            report::print_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        }
        MessageFormat::Human => {
            if !g.quiet {
                report::print_stdout(&report::index_human(&done.store, &done.stats))?;
            }
        }
    }
    let scan_errors = done.scan_errors();
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
    let arches = match args.arch.as_deref().map(str::to_ascii_lowercase) {
        None => Vec::new(),
        Some(a) => {
            let a = match a.as_str() {
                "arm64" => crate::knowledge::ARCH_AARCH64.to_string(),
                "riscv" => crate::knowledge::ARCH_RISCV64.to_string(),
                "loongarch" => crate::knowledge::ARCH_LOONGARCH64.to_string(),
                "x86" => crate::knowledge::ARCH_X86_64.to_string(),
                _ => a,
            };
            if !crate::knowledge::ARCHES.contains(&a.as_str()) {
                bail!(
                    "`--arch {}` is not an architecture; use one of: {}",
                    args.arch.as_deref().unwrap_or(""),
                    crate::knowledge::ARCHES.join(", ")
                );
            }
            let mut v = vec![a];
            if v[0] != crate::knowledge::NO_ARCH {
                v.push(crate::knowledge::NO_ARCH.to_string());
            }
            v
        }
    };
    let filters = Filters {
        arches,
        literal: args.literal,
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
