//! Human and JSON renderings of results. Colour goes through `anstream`, which strips it
//! when the stream is not a terminal or colour is turned off.

use std::fmt::Write as _;
use std::io::Write;

use anstyle::{AnsiColor, Style};

use crate::config::Config;
use crate::plan::{Plan, Status};
use crate::workspace::{Diagnostic, Severity};

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const NOTE: Style = AnsiColor::Cyan.on_default().bold();
const NOTE_OK: Style = AnsiColor::Green.on_default().bold();

fn status_style(s: Status) -> Style {
    match s {
        Status::New => AnsiColor::Cyan.on_default(),
        Status::Exists => AnsiColor::Green.on_default(),
        Status::Partial => AnsiColor::Yellow.on_default(),
    }
}

/// Prints a message on stderr in cargo's style (`error: …`, `warning: …`, `note: …`).
pub fn stderr_message(level: &str, message: &str) {
    let style = match level {
        "error" => ERROR,
        "warning" => WARNING,
        _ => NOTE,
    };
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{style}{level}{style:#}: {message}");
}

/// Prints scan diagnostics on stderr.
pub fn print_diagnostics(diags: &[Diagnostic], quiet: bool) {
    for d in diags {
        if quiet && d.severity == Severity::Warning {
            continue;
        }
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let at = match d.line {
            Some(l) => format!("{}:{l}", d.path),
            None => d.path.clone(),
        };
        stderr_message(level, &format!("{at}: {}", d.message));
    }
}

/// The plan as a table.
pub fn plan_human(plan: &Plan, verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{BOLD}ARM64 → x86_64 port plan{BOLD:#} for {} (target {})",
        plan.workspace_root, plan.target_triple
    );
    if plan.modules.is_empty() {
        return s;
    }
    let width = plan
        .modules
        .iter()
        .map(|m| m.component.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{BOLD}{:>4}  {:<width$}  {:<7}  SOURCE → TARGET{BOLD:#}",
        "#", "COMPONENT", "STATUS"
    );
    for (i, m) in plan.modules.iter().enumerate() {
        let st = status_style(m.status);
        let _ = writeln!(
            s,
            "{:>4}  {:<width$}  {st}{:<7}{st:#}  {} → {}",
            i + 1,
            m.component,
            m.status.as_str(),
            m.source,
            m.target
        );
        if verbose {
            let pad = " ".repeat(6);
            let _ = writeln!(s, "{pad}{DIM}module{DIM:#} {}", m.module_path);
            if !m.depends_on.is_empty() {
                let _ = writeln!(s, "{pad}{DIM}after{DIM:#}  {}", m.depends_on.join(", "));
            }
            let ev: Vec<String> = m
                .evidence
                .iter()
                .map(|e| match e.line {
                    Some(l) => format!("{} {} (line {l})", e.kind.as_str(), e.name),
                    None => format!("{} {}", e.kind.as_str(), e.name),
                })
                .collect();
            if !ev.is_empty() {
                let _ = writeln!(s, "{pad}{DIM}evidence{DIM:#} {}", ev.join("; "));
            }
            if !m.missing.is_empty() {
                let _ = writeln!(s, "{pad}{DIM}missing{DIM:#} {}", m.missing.join(", "));
            }
        }
    }
    let count = |st: Status| plan.modules.iter().filter(|m| m.status == st).count();
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{} module{}: {} new, {} partial, {} exists",
        plan.modules.len(),
        if plan.modules.len() == 1 { "" } else { "s" },
        count(Status::New),
        count(Status::Partial),
        count(Status::Exists)
    );
    s
}

/// The configuration as a table; secrets are already redacted by `Config::rows`.
pub fn config_human(config: &Config) -> String {
    let rows = config.rows();
    let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let vw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (k, v, src) in rows {
        let _ = writeln!(s, "{BOLD}{k:<kw$}{BOLD:#}  {v:<vw$}  {DIM}{src}{DIM:#}");
    }
    let _ = writeln!(
        s,
        "\nenvironment (process first, then the workspace's .env; a flag beats both):"
    );
    let ew = crate::config::ENVIRONMENT
        .iter()
        .map(|(var, _)| var.len())
        .max()
        .unwrap_or(0);
    for (var, key) in crate::config::ENVIRONMENT {
        let _ = writeln!(s, "  {var:<ew$}  sets {key}");
    }
    s
}

/// Writes `value` as one JSON document on stdout: indented for a person at a terminal,
/// compact for programs. JSON carries no colour, so it bypasses the colour adapter.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let pretty = stdout.is_terminal();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if pretty {
        serde_json::to_writer_pretty(&mut out, value)?;
    } else {
        serde_json::to_writer(&mut out, value)?;
    }
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Writes `text` to stdout (colour stripped when not wanted).
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Items ported over items total.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Coverage {
    pub ported: usize,
    pub total: usize,
    pub unported: usize,
    pub percent: f64,
}

/// One file of a port and what was done with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileResult {
    pub path: String,
    #[serde(flatten)]
    pub action: crate::writer::Action,
}

impl FileResult {
    pub fn skipped(&self) -> bool {
        matches!(self.action, crate::writer::Action::SkipEdited { .. })
    }
}

/// Token usage and cost of a run's model requests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UsageTotals {
    pub requests: u32,
    pub cache_hits: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// In the provider's currency (OpenRouter: USD credits), when it reports one.
    pub cost: Option<f64>,
}

/// The outcome of `cargo eterna-port [port]` (also its JSON document; with
/// `--message-format json` it is the last line, after the swarm's events).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PortSummary {
    /// `port-finished`: tells this line from the event lines before it.
    pub reason: &'static str,
    pub schema_version: u32,
    /// `offline` or `llm`.
    pub backend: &'static str,
    /// The model the LLM backend used (`None` offline).
    pub model: Option<String>,
    pub target_triple: String,
    pub dry_run: bool,
    pub coverage: Coverage,
    pub modules: Vec<crate::engine::port::ModuleReport>,
    /// One per agent task, in plan order.
    pub tasks: Vec<crate::swarm::TaskResult>,
    pub usage: UsageTotals,
    pub files: Vec<FileResult>,
    /// The cargo check fix loop after the writes (LLM backend), if it ran.
    pub fix_loop: Option<FixLoopSummary>,
    /// ARM-only dependencies moved under `[target.'cfg(target_arch = "aarch64")'.dependencies]`.
    pub gated_dependencies: Vec<GatedDependency>,
}

/// An ARM-only dependency the port moved under the aarch64 target table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GatedDependency {
    pub package: String,
    pub name: String,
}

/// How the fix loop ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FixLoopSummary {
    /// `clean`, `max-iterations`, `no-progress`, `no-fixer`, `outside-modules`,
    /// `not-compiled`, `regressed`.
    pub stop: &'static str,
    pub explanation: &'static str,
    pub target_triple: String,
    pub fix_rounds: usize,
    /// Rounds backed out because they made things worse (each iteration's
    /// `regression` says which and why).
    pub regressed: usize,
    pub iterations: Vec<crate::fixloop::IterationSummary>,
    pub errors_left: usize,
    /// `file:line: message` of the first error left, if any.
    pub first_error: Option<String>,
    pub check_ms: u64,
    pub total_ms: u64,
}

impl PortSummary {
    pub fn new(
        selected: &Plan,
        output: &crate::engine::port::PortOutput,
        planned: &[crate::writer::Planned],
        dry_run: bool,
    ) -> Self {
        let total = output.items_total();
        let ported = output.items_ported();
        PortSummary {
            reason: "port-finished",
            schema_version: 1,
            backend: "offline",
            model: None,
            tasks: Vec::new(),
            usage: UsageTotals::default(),
            fix_loop: None,
            target_triple: selected.target_triple.clone(),
            dry_run,
            coverage: Coverage {
                ported,
                total,
                unported: output.modules.iter().map(|m| m.unported.len()).sum(),
                percent: if total == 0 {
                    100.0
                } else {
                    (ported as f64 * 1000.0 / total as f64).round() / 10.0
                },
            },
            modules: output.modules.clone(),
            gated_dependencies: output
                .gated_dependencies
                .iter()
                .map(|(package, name)| GatedDependency {
                    package: package.clone(),
                    name: name.clone(),
                })
                .collect(),
            files: planned
                .iter()
                .map(|p| FileResult {
                    path: p.rel.clone(),
                    action: p.action.clone(),
                })
                .collect(),
        }
    }
}

/// The port summary as text.
pub fn port_human(s: &PortSummary, verbose: bool) -> String {
    use crate::writer::Action;
    let mut out = String::new();
    let verb = if s.dry_run { "Would port" } else { "Ported" };
    let engine = match &s.model {
        Some(m) => format!("agents on {m}"),
        None => "offline engine".to_string(),
    };
    let _ = writeln!(
        out,
        "{BOLD}{verb} {} module{} to {}{BOLD:#} ({engine})",
        s.modules.len(),
        if s.modules.len() == 1 { "" } else { "s" },
        s.target_triple
    );
    let _ = writeln!(out);
    let width = s
        .modules
        .iter()
        .map(|m| m.component.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let _ = writeln!(
        out,
        "{BOLD}{:>4}  {:<width$}  {:>7}  TARGET{BOLD:#}",
        "#", "COMPONENT", "ITEMS"
    );
    for (i, m) in s.modules.iter().enumerate() {
        let items = format!("{}/{}", m.items_ported, m.items_total);
        let how = match m.mode {
            _ if m.ported_by.is_some() => {
                format!("by {} on the model", m.ported_by.as_deref().unwrap_or(""))
            }
            crate::engine::port::Mode::InPlace => "cfg wiring in place".to_string(),
            crate::engine::port::Mode::Split => "x86_64 child, derived".to_string(),
            crate::engine::port::Mode::Mirrored => "derived from the source".to_string(),
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<width$}  {:>7}  {}  {DIM}({how}){DIM:#}",
            i + 1,
            m.component,
            items,
            m.target
        );
        if verbose {
            let _ = writeln!(
                out,
                "      {DIM}from{DIM:#} {} ({})",
                m.source, m.module_path
            );
        }
    }
    let _ = writeln!(out);
    let c = &s.coverage;
    let _ = writeln!(
        out,
        "Coverage: {}/{} items ({:.1}%)",
        c.ported, c.total, c.percent
    );
    let unported: Vec<_> = s
        .modules
        .iter()
        .flat_map(|m| m.unported.iter().map(move |u| (m, u)))
        .collect();
    if !unported.is_empty() {
        let _ = writeln!(
            out,
            "{WARNING}Not ported{WARNING:#} (an `unimplemented!` stub, or ARM64 assembly left out):"
        );
        const SHOWN: usize = 20;
        let count = unported.len();
        for (m, u) in unported
            .into_iter()
            .take(if verbose { usize::MAX } else { SHOWN })
        {
            let _ = writeln!(out, "  {}::{} — {}", m.module_path, u.item, u.reason);
        }
        if !verbose && count > SHOWN {
            let _ = writeln!(
                out,
                "  … and {} more (-v lists them all; --message-format json has every item with its status)",
                count - SHOWN
            );
        }
    }
    for d in &s.gated_dependencies {
        let _ = writeln!(
            out,
            "Moved ARM-only dependency `{}` of {} under [target.'cfg(target_arch = \"aarch64\")'.dependencies]",
            d.name, d.package
        );
    }
    let failed: Vec<_> = s
        .tasks
        .iter()
        .filter(|t| t.status != crate::swarm::TaskStatus::Done)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "{WARNING}Agent tasks that did not finish{WARNING:#}:");
        for t in failed {
            let _ = writeln!(
                out,
                "  {} ({}, {}): {}",
                t.module,
                t.agent,
                t.status.as_str(),
                t.error.as_deref().unwrap_or("cancelled")
            );
        }
    }
    for t in &s.tasks {
        let Some(c) = t.contract.as_ref().filter(|c| c.broken()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "{WARNING}API contract{WARNING:#}: {} ({}): the answer still lacks {} and changes {} API item(s) after one resend; {} item(s) kept from the engine's draft{}",
            t.module,
            t.agent,
            c.missing.len(),
            c.changed.len(),
            c.kept_from_draft.len(),
            c.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    if s.model.is_some() {
        let u = &s.usage;
        let _ = writeln!(
            out,
            "Model: {} request{}, {} cached answer{}, {} prompt + {} completion tokens{}",
            u.requests,
            if u.requests == 1 { "" } else { "s" },
            u.cache_hits,
            if u.cache_hits == 1 { "" } else { "s" },
            u.prompt_tokens,
            u.completion_tokens,
            u.cost.map(|c| format!(", cost {c:.4}")).unwrap_or_default()
        );
    }
    if let Some(f) = &s.fix_loop {
        let checks = f.iterations.len();
        let _ = writeln!(
            out,
            "Fix loop ({}, {checks} cargo check{}, {} fix round{}): {}",
            f.target_triple,
            if checks == 1 { "" } else { "s" },
            f.fix_rounds,
            if f.fix_rounds == 1 { "" } else { "s" },
            f.explanation
        );
        if f.regressed > 0 {
            let _ = writeln!(
                out,
                "  {} round{} made things worse and {} backed out (files restored as they were)",
                f.regressed,
                if f.regressed == 1 { "" } else { "s" },
                if f.regressed == 1 { "was" } else { "were" }
            );
        }
        if let Some(e) = &f.first_error {
            let _ = writeln!(
                out,
                "  {} error{} left, the first: {e}",
                f.errors_left,
                if f.errors_left == 1 { "" } else { "s" }
            );
        }
    }
    let count = |f: &dyn Fn(&Action) -> bool| s.files.iter().filter(|x| f(&x.action)).count();
    let created = count(&|a| matches!(a, Action::Create));
    let updated = count(&|a| matches!(a, Action::Update | Action::ForceUpdate { .. }));
    let unchanged = count(&|a| matches!(a, Action::Unchanged));
    let _ = writeln!(
        out,
        "Files{}: {created} created, {updated} updated, {unchanged} unchanged",
        if s.dry_run {
            " (dry run, nothing written)"
        } else {
            ""
        }
    );
    for f in &s.files {
        match &f.action {
            Action::SkipEdited { reason } => {
                let _ = writeln!(
                    out,
                    "  {WARNING}skipped{WARNING:#} {}: {reason}; pass --force to overwrite it (a backup is kept)",
                    f.path
                );
            }
            Action::ForceUpdate { backup } => {
                let _ = writeln!(out, "  overwrote {} (backup: {backup})", f.path);
            }
            _ => {}
        }
    }
    out
}

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
            "{BOLD}{:>3}.{BOLD:#} {}:{}-{}  {DIM}{} · {} · {:.4}{DIM:#}",
            r.rank, r.path, r.start_line, r.end_line, r.kind, comp, r.score
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
    pub run: crate::store::RunRow,
    pub tasks: Vec<crate::store::TaskRow>,
    pub health: Vec<crate::store::HealthRecord>,
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

/// The verdict of `qemu` for a person: verdict line, serial tail on failure, trace diff.
pub fn boot_human(r: &crate::emulate::Report, quiet: bool) -> String {
    use crate::emulate::{BootRun, Emulator, Verdict};
    let mut s = String::new();
    let name = |run: &BootRun| match run.emulator {
        Emulator::Qemu => format!("QEMU ({})", run.accel.as_deref().unwrap_or("tcg")),
        Emulator::Bochs => "Bochs (VMX)".to_string(),
        Emulator::QemuAarch64 => "qemu-system-aarch64 (ARM64 original)".to_string(),
    };
    let status = |run: &BootRun| match run.status {
        Some(code) => format!("status {code}"),
        None => run.ending.clone(),
    };
    let one = |run: &BootRun, s: &mut String| {
        let (style, word) = match run.verdict {
            Verdict::Success => (NOTE_OK, "ok"),
            Verdict::VmxUnavailable => (NOTE_OK, "ok (vmx unavailable)"),
            Verdict::Failure => (ERROR, "FAILED"),
        };
        s.push_str(&format!(
            "{style}boot {word}{style:#}: {} {}/{} in {:.1} s, {}: {}\n",
            name(run),
            r.package,
            r.bin,
            run.elapsed_ms as f64 / 1000.0,
            status(run),
            run.reason
        ));
        if run.verdict == Verdict::Failure && run.ending != "not-bootable" {
            s.push_str(&format!(
                "last serial lines ({}):\n",
                run.serial_log.display()
            ));
            for line in &run.serial_tail {
                s.push_str(&format!("  | {line}\n"));
            }
        } else if !quiet {
            s.push_str(&format!("serial log: {}\n", run.serial_log.display()));
        }
    };
    one(&r.port, &mut s);
    if !quiet {
        let origin = match r.linker_script.origin {
            crate::emulate::image::Origin::Config => "the workspace's x86_64-linker-script",
            crate::emulate::image::Origin::CrateDir => "the crate's own",
            crate::emulate::image::Origin::Generated => "the tool's generic multiboot layout",
        };
        s.push_str(&format!(
            "linker script: {} ({origin})\n",
            r.linker_script.path.display()
        ));
    }
    if let Some(c) = &r.compare {
        one(&c.original, &mut s);
        if c.identical {
            s.push_str(&format!(
                "{NOTE_OK}traces identical{NOTE_OK:#}: {} guest trace lines, x86_64 = ARM64\n",
                c.original.trace.len()
            ));
        } else if c.diff.is_empty() {
            s.push_str(&format!(
                "{ERROR}traces not compared{ERROR:#}: the ARM64 original did not boot\n"
            ));
        } else {
            s.push_str(&format!(
                "{ERROR}traces differ{ERROR:#} (- ARM64 original, + x86_64 port):\n{}",
                c.diff
            ));
        }
    }
    s
}
