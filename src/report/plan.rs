//! `plan`: the table of planned modules.

use std::fmt::Write as _;

use super::{BOLD, DIM};

use anstyle::{AnsiColor, Style};

use crate::plan::{Plan, Status};

fn status_style(s: Status) -> Style {
    match s {
        Status::New => AnsiColor::Cyan.on_default(),
        Status::Exists => AnsiColor::Green.on_default(),
        Status::Partial => AnsiColor::Yellow.on_default(),
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
        .map(|m| m.component.as_str().len())
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
