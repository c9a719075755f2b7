//! `cargo eterna-port check`: one `cargo check` of the port target, its diagnostics per
//! planned module; nothing is written (except the `--junit` report).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{open, EXIT_ERROR};
use crate::cli::{CheckArgs, CheckFormat, GlobalArgs, MessageFormat};
use crate::ops::check::{self, CheckEvents, CheckOptions, Skipped};
use crate::ops::port::Level;
use crate::report;
use crate::report::check as check_report;

pub(super) fn cmd_check(g: &GlobalArgs, a: &CheckArgs) -> Result<u8> {
    let json = g.message_format == MessageFormat::Json;
    if json && a.format == CheckFormat::Github {
        bail!("`--format github` and `--message-format json` both write stdout; pick one");
    }
    let s = open(g)?;
    /// Notes on stderr (not with `-q`), and a spinner while cargo checks.
    struct Shown {
        quiet: bool,
        spinner: indicatif::ProgressBar,
    }
    impl CheckEvents for Shown {
        fn message(&self, level: Level, text: &str) {
            if !self.quiet || level == Level::Error {
                report::stderr_message(level.as_str(), text);
            }
        }
        fn checking(&self, target: &str) {
            if !self.spinner.is_hidden() {
                self.spinner
                    .set_message(format!("cargo check --target {target}"));
                self.spinner
                    .enable_steady_tick(std::time::Duration::from_millis(120));
            }
        }
    }
    let shown = Shown {
        quiet: g.quiet,
        spinner: if g.quiet || json {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new_spinner()
        },
    };
    let options = CheckOptions {
        targets: a.targets.clone(),
        staged: a.staged,
        host_fallback: a.host_fallback,
    };
    let result = check::run(&s, &options, &shown);
    shown.spinner.finish_and_clear();
    let done = result?;
    if !g.quiet {
        report::print_diagnostics(&done.scan_diagnostics, g.quiet);
    }
    let root = &s.ws.root;
    if let Some(why) = done.skipped {
        let note = match why {
            Skipped::NothingStaged if !json => {
                Some("no staged file belongs to a planned module; nothing to check".to_string())
            }
            Skipped::NothingStaged => None,
            Skipped::NoArmCode => Some(format!(
                "no ARM64 code found in {}; nothing to check",
                root.display()
            )),
        };
        if let (Some(note), false) = (note, g.quiet) {
            report::stderr_message("note", &note);
        }
        if json {
            report::print_json(&done.document)?;
        }
        return Ok(done.outcome.exit_code());
    }
    let doc = &done.document;
    if !g.quiet {
        for f in &doc.build_failures {
            report::stderr_message("error", &f.message());
            if f.missing_tool.is_none() && !f.stderr.is_empty() {
                eprintln!("{}", f.stderr);
            }
        }
    }
    if json {
        report::print_json(doc)?;
    } else {
        for m in &doc.modules {
            for d in &m.diagnostics {
                if d.is_error() || g.verbose > 0 {
                    eprint!("{}", d.rendered);
                }
            }
        }
        if a.format == CheckFormat::Github {
            report::print_stdout(&check_report::github(doc, &repo_prefix(root)))?;
        }
        report::print_stdout(&check_report::human(doc))?;
    }
    let hidden = done.hidden_errors;
    if hidden > 0 && !g.quiet {
        report::stderr_message(
            "note",
            &format!(
                "{hidden} error{} in planned modules not selected (run `check` without targets to see them)",
                if hidden == 1 { "" } else { "s" }
            ),
        );
    }
    if let Some(path) = &a.junit {
        if let Err(e) = write_junit(path, &check_report::junit(doc)) {
            report::stderr_message("error", &format!("{e:#}"));
            return Ok(EXIT_ERROR);
        }
    }
    Ok(done.outcome.exit_code())
}

fn write_junit(path: &Path, xml: &str) -> Result<()> {
    if path.is_dir() {
        bail!(
            "--junit {}: is a directory; give the path of the XML file to write",
            path.display()
        );
    }
    crate::writer::atomic_write(path, xml.as_bytes(), None).with_context(|| {
        format!(
            "--junit {}: could not write the JUnit report there",
            path.display()
        )
    })
}

/// The workspace's directory inside its git repository (`git rev-parse --show-prefix`),
/// so annotations name repository-relative files; empty outside git.
fn repo_prefix(root: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "--show-prefix"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
