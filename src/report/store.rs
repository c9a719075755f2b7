//! The store's commands: `index`, `search` and `status` (with the last run's items).

use std::fmt::Write as _;

use super::{BOLD, DIM};

/// What `index` did.
pub fn index_human(store: &std::path::Path, st: &crate::store::IndexStats) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{BOLD}indexed{BOLD:#} {} sources into {} in {:.2}s",
        st.sources,
        store.display(),
        st.seconds
    );
    let _ = writeln!(
        s,
        "  sources: {} changed, {} unchanged, {} removed",
        st.sources_indexed, st.sources_unchanged, st.sources_removed
    );
    let _ = writeln!(
        s,
        "  chunks:  {} added, {} updated, {} unchanged, {} removed",
        st.chunks_added, st.chunks_updated, st.chunks_unchanged, st.chunks_removed
    );
    let _ = writeln!(
        s,
        "  embedded {} chunk{} with {}{}",
        st.chunks_embedded,
        if st.chunks_embedded == 1 { "" } else { "s" },
        st.embedder,
        if st.reembedded_all {
            " (embedder changed: everything re-embedded)"
        } else {
            ""
        }
    );
    s
}

/// Search results, best first.
pub fn search_human(results: &[crate::store::RankedChunk], verbose: bool) -> String {
    let mut s = String::new();
    if results.is_empty() {
        let _ = writeln!(s, "no results");
        return s;
    }
    for r in results {
        let comp = r.component.as_deref().unwrap_or("-");
        let _ = writeln!(
            s,
            "{BOLD}{:>3}.{BOLD:#} {}:{}-{}  {DIM}{} · {} · {} · {:.4}{DIM:#}",
            r.rank, r.path, r.start_line, r.end_line, r.kind, r.arch, comp, r.score
        );
        let _ = writeln!(s, "     {}", r.title);
        let lines: Vec<&str> = r
            .content
            .lines()
            .filter(|l| {
                // Knowledge entries: the table header and name are in the title already.
                let t = l.trim();
                !t.is_empty() && !t.starts_with("[[") && !t.starts_with("name = ")
            })
            .take(if verbose { 12 } else { 2 })
            .collect();
        for l in lines {
            let l: String = l.chars().take(96).collect();
            let _ = writeln!(s, "     {DIM}│ {l}{DIM:#}");
        }
    }
    s
}

/// The store's statistics.
pub fn status_human(st: &crate::store::Stats, problem: Option<&str>) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("store".into(), st.path.clone()),
        ("schema".into(), format!("version {}", st.schema_version)),
        ("size".into(), format!("{} bytes", st.file_bytes)),
        (
            "embedder".into(),
            match (&st.embedder, st.embedding_dim) {
                (Some(e), Some(d)) => format!("{e} ({d} dimensions)"),
                (Some(e), None) => e.clone(),
                _ => "(none yet)".into(),
            },
        ),
        ("sources".into(), st.sources.to_string()),
        ("chunks".into(), {
            let kinds: Vec<String> = st
                .chunks_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if kinds.is_empty() {
                st.chunks.to_string()
            } else {
                format!("{} ({})", st.chunks, kinds.join(", "))
            }
        }),
        ("vectors".into(), st.vectors.to_string()),
        ("full-text rows".into(), st.fts_rows.to_string()),
        ("code artifacts".into(), st.code_artifacts.to_string()),
        ("agent tasks".into(), st.agent_tasks.to_string()),
        ("runs".into(), st.runs.to_string()),
        ("llm cache".into(), st.llm_cache.to_string()),
        (
            "last indexed".into(),
            st.last_indexed.clone().unwrap_or_else(|| "never".into()),
        ),
        (
            "consistent".into(),
            match problem {
                None => "yes".into(),
                Some(p) => format!("no: {p}; run `cargo eterna-port index`"),
            },
        ),
    ];
    if st.unembedded > 0 {
        rows.push(("not embedded".into(), st.unembedded.to_string()));
    }
    let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{BOLD}{k:<kw$}{BOLD:#}  {v}");
    }
    s
}

/// The last run as `status` shows it: its tasks, its swarm health table and, for a run
/// with a fix loop, its iterations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    #[serde(flatten)]
    /// The run.
    pub run: crate::store::RunRow,
    /// Its tasks.
    pub tasks: Vec<crate::store::TaskRow>,
    /// The agents' health at its end.
    pub health: Vec<crate::store::HealthRecord>,
    /// The fix loop's iterations.
    pub fix_iterations: Vec<crate::store::FixIterationRecord>,
    /// Every item the run wrote, with its status and who wrote it.
    pub items: Vec<crate::store::PortItemRecord>,
}

/// The last run's swarm health and tasks for a person.
pub fn last_run_human(r: &LastRun) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{BOLD}Last run{BOLD:#}: {} ({}), started {}{}",
        r.run.command,
        r.run.status,
        r.run.started_at,
        r.run
            .finished_at
            .as_ref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_default()
    );
    if !r.health.is_empty() {
        let w = r
            .health
            .iter()
            .map(|h| h.agent.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "{BOLD}{:<w$}  {:<12}  {:>4}  {:>6}  {:>10}  LAST HEARTBEAT{BOLD:#}",
            "AGENT", "STATUS", "DONE", "FAILED", "MEAN MS"
        );
        for h in &r.health {
            let _ = writeln!(
                s,
                "{:<w$}  {:<12}  {:>4}  {:>6}  {:>10}  {}",
                h.agent,
                h.status,
                h.tasks_done,
                h.tasks_failed,
                h.mean_latency_ms
                    .map(|m| format!("{m:.0}"))
                    .unwrap_or_else(|| "-".into()),
                h.last_heartbeat.as_deref().unwrap_or("-")
            );
        }
    }
    if !r.items.is_empty() {
        // Per module: how many items are ported, stubbed, left out, missing, and by whom.
        type Counts<K> = std::collections::BTreeMap<K, usize>;
        let mut modules: Vec<(&str, Counts<&str>, Counts<String>)> = Vec::new();
        for i in &r.items {
            if modules.last().map_or(true, |m| m.0 != i.module) {
                modules.push((&i.module, Counts::new(), Counts::new()));
            }
            let m = modules.last_mut().expect("pushed");
            *m.1.entry(i.status.as_str()).or_default() += 1;
            if i.status == "ported" {
                let who = match (&i.by, &i.model) {
                    (Some(b), Some(model)) => format!("{b} ({model})"),
                    (Some(b), None) => b.clone(),
                    (None, _) => "unknown".into(),
                };
                *m.2.entry(who).or_default() += 1;
            }
        }
        let w = modules.iter().map(|m| m.0.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(
            s,
            "{BOLD}{:<w$}  {:>6}  {:>7}  {:>8}  {:>7}  PORTED BY{BOLD:#}",
            "MODULE", "PORTED", "STUBBED", "LEFT OUT", "MISSING"
        );
        for (module, status, by) in &modules {
            let n = |k: &str| status.get(k).copied().unwrap_or(0);
            let by: Vec<String> = by.iter().map(|(who, k)| format!("{who} {k}")).collect();
            let _ = writeln!(
                s,
                "{module:<w$}  {:>6}  {:>7}  {:>8}  {:>7}  {}",
                n("ported"),
                n("stubbed"),
                n("left-out"),
                n("missing"),
                if by.is_empty() {
                    "-".to_string()
                } else {
                    by.join(", ")
                }
            );
        }
    }
    if !r.tasks.is_empty() {
        let w = r
            .tasks
            .iter()
            .map(|t| t.module.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "{BOLD}{:<w$}  {:<16}  {:<9}  {:>8}  {:>8}  {:>8}{BOLD:#}",
            "MODULE", "AGENT", "STATUS", "TOK IN", "TOK OUT", "COST"
        );
        for t in &r.tasks {
            let _ = writeln!(
                s,
                "{:<w$}  {:<16}  {:<9}  {:>8}  {:>8}  {:>8.4}{}",
                t.module,
                t.agent,
                t.status,
                t.tokens_in,
                t.tokens_out,
                t.cost,
                t.error
                    .as_ref()
                    .map(|e| format!("\n{:w$}  {DIM}{e}{DIM:#}", ""))
                    .unwrap_or_default()
            );
        }
    }
    for it in &r.fix_iterations {
        let _ = writeln!(
            s,
            "fix iteration {}: {} error(s), {} warning(s), {} rustfix, {} file(s) from the DebugAgent, {} ms in cargo check: {}",
            it.iteration, it.errors, it.warnings, it.rustfix_applied, it.agent_files, it.check_ms, it.outcome
        );
    }
    s
}
