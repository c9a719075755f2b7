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
    s
}

/// Writes `text` to stdout (colour stripped when not wanted).
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = anstream::stdout();
    out.write_all(text.as_bytes())?;
    out.flush()
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
