//! `cargo eterna-port check`: one `cargo check` of the port target, its diagnostics per
//! planned module; nothing is written (except the `--junit` report).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{full_plan, open, EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS};
use crate::check_report::{self, CheckDocument};
use crate::cli::{CheckArgs, CheckFormat, GlobalArgs, MessageFormat};
use crate::fixloop::{self, ModuleSpec};
use crate::report;
use crate::workspace::Severity;

pub(super) fn cmd_check(g: &GlobalArgs, a: &CheckArgs) -> Result<u8> {
    let json = g.message_format == MessageFormat::Json;
    if json && a.format == CheckFormat::Github {
        bail!("`--format github` and `--message-format json` both write stdout; pick one");
    }
    let s = open(g)?;
    let root = s.ws.root.clone();
    let root_str = root.display().to_string();
    let full = full_plan(&s, true);
    if !g.quiet {
        // Unreadable sources show up as compiler errors too; say what the scan saw.
        report::print_diagnostics(&full.diagnostics, g.quiet);
    }
    let specs = ModuleSpec::from_plan(&full.modules);

    if a.staged {
        let staged = staged_files(&root)?;
        let planned: BTreeSet<String> = specs
            .iter()
            .flat_map(|m| {
                let mut f = m.files(&root);
                f.push(m.source.clone());
                f
            })
            .collect();
        if !staged.iter().any(|f| planned.contains(f)) {
            if !g.quiet && !json {
                report::stderr_message(
                    "note",
                    "no staged file belongs to a planned module; nothing to check",
                );
            }
            if json {
                report::print_json(&CheckDocument::skipped(
                    root_str,
                    s.config.target.value.clone(),
                ))?;
            }
            return Ok(EXIT_OK);
        }
    }

    let mut selected = full.clone();
    crate::plan::select(&mut selected, &a.targets, &s.knowledge)?;
    if selected.modules.is_empty() {
        if !g.quiet {
            report::stderr_message(
                "note",
                &format!(
                    "no ARM64 code found in {}; nothing to check",
                    root.display()
                ),
            );
        }
        if json {
            report::print_json(&CheckDocument::skipped(
                root_str,
                s.config.target.value.clone(),
            ))?;
        }
        return Ok(EXIT_OK);
    }
    let keep: BTreeSet<String> = selected
        .modules
        .iter()
        .map(|m| m.module_path.clone())
        .collect();
    let packages = selected.packages();

    let wanted = s.config.target.value.clone();
    let toolchain = crate::toolchain::Toolchain::for_workspace(&root)?;
    if let (Some(note), false) = (toolchain.override_note(), g.quiet) {
        report::stderr_message("note", &note);
    }
    let choice = toolchain.resolve_target(&root, &wanted, a.host_fallback)?;
    if let (Some(note), false) = (&choice.note, g.quiet) {
        report::stderr_message("note", note);
    }
    let target = choice.triple.clone();
    let mut opts = fixloop::LoopOptions::new(&root, &target, &specs);
    opts.packages = &packages;
    opts.toolchain = toolchain;
    opts.build_std = choice.build_std;
    opts.apply_rustfix = false;
    let spinner = if g.quiet || json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("cargo check --target {target}"));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    };
    let check = fixloop::check(&opts);
    spinner.finish_and_clear();
    let check = check?;

    // Diagnostics of planned modules outside the selection are not reported, but said.
    let hidden: usize = check
        .report
        .modules
        .iter()
        .filter(|m| m.component.is_some() && !keep.contains(&m.module_path))
        .map(|m| m.errors)
        .sum();
    let doc = CheckDocument::new(root_str, wanted, check.report, &|m| {
        m.component.is_none() || keep.contains(&m.module_path)
    });

    if !g.quiet {
        for f in &doc.build_failures {
            report::stderr_message("error", &f.message());
            if f.missing_tool.is_none() && !f.stderr.is_empty() {
                eprintln!("{}", f.stderr);
            }
        }
    }
    if json {
        report::print_json(&doc)?;
    } else {
        for m in &doc.modules {
            for d in &m.diagnostics {
                if d.is_error() || g.verbose > 0 {
                    eprint!("{}", d.rendered);
                }
            }
        }
        if a.format == CheckFormat::Github {
            report::print_stdout(&check_report::github(&doc, &repo_prefix(&root)))?;
        }
        report::print_stdout(&check_report::human(&doc))?;
    }
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
        if let Err(e) = write_junit(path, &check_report::junit(&doc)) {
            report::stderr_message("error", &format!("{e:#}"));
            return Ok(EXIT_ERROR);
        }
    }
    let scan_errors = full
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    Ok(if doc.clean && !scan_errors {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
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

/// Files staged in git, relative to `root` (`git diff --cached --relative`).
fn staged_files(root: &Path) -> Result<Vec<String>> {
    let out = Command::new("git")
        .args(["diff", "--cached", "--name-only", "--relative", "-z"])
        .current_dir(root)
        .output()
        .context("--staged: could not run git")?;
    if !out.status.success() {
        bail!(
            "--staged: `git diff --cached` failed in {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect())
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
