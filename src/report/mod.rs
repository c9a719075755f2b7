//! Human and JSON renderings of results, one file per command: [`plan`], [`config`],
//! [`port`], [`store`] (index, search, status), [`ask`], [`boot`] (qemu) and [`check`] (its
//! summary, JSON, GitHub annotations and JUnit XML). Colour goes through `anstream`,
//! which strips it when the stream is not a terminal or colour is turned off.

pub mod ask;
pub mod boot;
pub mod check;
pub mod config;
pub mod plan;
pub mod port;
pub mod store;

use std::io::Write;

use anstyle::{AnsiColor, Style};

use crate::workspace::{Diagnostic, Severity};

pub use ask::ask_human;
pub use boot::boot_human;
pub use config::config_human;
pub use plan::plan_human;
pub use port::{
    port_human, Coverage, FileResult, FixLoopSummary, GatedDependency, PortSummary, UsageTotals,
};
pub use store::{index_human, last_run_human, search_human, status_human, LastRun};

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const NOTE: Style = AnsiColor::Cyan.on_default().bold();
const NOTE_OK: Style = AnsiColor::Green.on_default().bold();

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
