//! The renderings of `cargo eterna-port check`: the per-module summary, the JSON
//! document, GitHub Actions annotations and JUnit XML.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

use crate::fixloop::{BuildFailure, CheckReport, ModuleResult};

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
const GREEN: Style = AnsiColor::Green.on_default().bold();

/// Version of the JSON document; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The result of `check` (also its JSON document).
#[derive(Debug, Clone, Serialize)]
pub struct CheckDocument {
    /// The document's version ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The workspace checked.
    pub workspace_root: String,
    /// The target checked.
    pub target_triple: String,
    /// The configured target; differs from `target_triple` after a host fallback.
    pub requested_target: String,
    /// `--staged` and no staged file belongs to a planned module: nothing was checked.
    pub skipped: bool,
    /// No error, no module left uncompiled, no build script failed.
    pub clean: bool,
    /// Errors in the reported modules.
    pub errors: usize,
    /// Warnings in the reported modules.
    pub warnings: usize,
    /// (Selected) planned modules whose crate the check did not compile (`"status":
    /// "not-compiled"`); any makes the check fail.
    pub not_compiled: usize,
    /// Build scripts that failed (with the missing host tool when known).
    pub build_failures: Vec<BuildFailure>,
    /// Wall time of the check.
    pub check_ms: u64,
    /// The (selected) planned modules in plan order, then `(other)` for diagnostics in
    /// workspace files that belong to no planned module.
    pub modules: Vec<ModuleResult>,
}

impl CheckDocument {
    /// The document of `report`, with the modules `keep` selects.
    pub fn new(
        workspace_root: String,
        requested_target: String,
        report: CheckReport,
        keep: &dyn Fn(&ModuleResult) -> bool,
    ) -> Self {
        let modules: Vec<ModuleResult> = report.modules.into_iter().filter(keep).collect();
        let errors = modules.iter().map(|m| m.errors).sum();
        let warnings = modules.iter().map(|m| m.warnings).sum();
        let not_compiled = modules.iter().filter(|m| !m.compiled).count();
        CheckDocument {
            schema_version: SCHEMA_VERSION,
            workspace_root,
            target_triple: report.target_triple,
            requested_target,
            skipped: false,
            clean: errors == 0 && not_compiled == 0 && report.build_failures.is_empty(),
            errors,
            warnings,
            not_compiled,
            build_failures: report.build_failures,
            check_ms: report.check_ms,
            modules,
        }
    }

    /// The document of a check that did not run (nothing to check).
    pub fn skipped(workspace_root: String, target: String) -> Self {
        CheckDocument {
            schema_version: SCHEMA_VERSION,
            workspace_root,
            target_triple: target.clone(),
            requested_target: target,
            skipped: true,
            clean: true,
            errors: 0,
            warnings: 0,
            not_compiled: 0,
            build_failures: Vec::new(),
            check_ms: 0,
            modules: Vec::new(),
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The per-module summary.
pub fn human(doc: &CheckDocument) -> String {
    let mut s = String::new();
    let planned = doc.modules.iter().filter(|m| m.component.is_some()).count();
    let (style, verdict) = if doc.clean {
        (GREEN, "ok")
    } else {
        (RED, "FAILED")
    };
    let not_compiled = if doc.not_compiled > 0 {
        format!(", {} not compiled", plural(doc.not_compiled, "module"))
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "{style}check {verdict}{style:#}: {} for {} in {:.1} s: {}, {}{not_compiled}",
        plural(planned, "planned module"),
        doc.target_triple,
        doc.check_ms as f64 / 1000.0,
        plural(doc.errors, "error"),
        plural(doc.warnings, "warning")
    );
    for f in &doc.build_failures {
        let _ = writeln!(s, "{RED}error{RED:#}: {}", f.message());
    }
    if doc.modules.is_empty() {
        return s;
    }
    let width = doc
        .modules
        .iter()
        .map(|m| m.module_path.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{BOLD}{:<width$}  {:>6}  {:>8}  FIRST ERROR{BOLD:#}",
        "MODULE", "ERRORS", "WARNINGS"
    );
    for m in &doc.modules {
        let first = match m.first_error() {
            _ if !m.compiled => format!("{RED}not compiled{RED:#}"),
            Some(d) if d.file.is_empty() => d.message.clone(),
            Some(d) => format!("{}:{}: {}", d.file, d.line, d.message),
            None if m.warnings > 0 => format!("{DIM}-{DIM:#}"),
            None => format!("{GREEN}ok{GREEN:#}"),
        };
        let e = if m.errors > 0 { RED } else { Style::new() };
        let w = if m.warnings > 0 { YELLOW } else { Style::new() };
        let _ = writeln!(
            s,
            "{:<width$}  {e}{:>6}{e:#}  {w}{:>8}{w:#}  {first}",
            m.module_path, m.errors, m.warnings
        );
    }
    s
}

/// Escapes the message of a GitHub workflow command (`%`, CR, LF).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value of a GitHub workflow command (also `:` and `,`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error …::` / `::warning …::` line per diagnostic. `prefix` turns a
/// workspace-relative path into a repository-relative one (GitHub wants those).
pub fn github(doc: &CheckDocument, prefix: &str) -> String {
    let mut s = String::new();
    for f in &doc.build_failures {
        let _ = writeln!(
            s,
            "::error title={}::{}",
            escape_property(&format!("build script of {}", f.package)),
            escape_data(&f.message())
        );
    }
    for m in doc.modules.iter().filter(|m| !m.compiled) {
        let file = m
            .files
            .first()
            .map(|f| format!("file={},", escape_property(&format!("{prefix}{f}"))))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "::error {file}title={}::{}",
            escape_property(&format!("{} not compiled", m.module_path)),
            escape_data(&format!(
                "{} was not compiled: its crate, a dependency or a build script failed before it",
                m.module_path
            ))
        );
    }
    for m in &doc.modules {
        for d in &m.diagnostics {
            let mut props = Vec::new();
            if !d.file.is_empty() {
                props.push(format!(
                    "file={}",
                    escape_property(&format!("{prefix}{}", d.file))
                ));
                props.push(format!("line={}", d.line));
                props.push(format!("col={}", d.column));
            }
            let title = match &d.code {
                Some(c) => format!("{c} in {}", m.module_path),
                None => m.module_path.clone(),
            };
            props.push(format!("title={}", escape_property(&title)));
            let text = if d.rendered.trim().is_empty() {
                &d.message
            } else {
                d.rendered.trim_end()
            };
            let _ = writeln!(
                s,
                "::{} {}::{}",
                if d.is_error() { "error" } else { "warning" },
                props.join(","),
                escape_data(text)
            );
        }
    }
    s
}

/// Escapes text for XML, dropping characters XML 1.0 cannot hold.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test suite, one test case per module; a module with errors fails
/// with its errors, warnings go to the case's `system-out`.
pub fn junit(doc: &CheckDocument) -> String {
    let failures = doc.modules.iter().filter(|m| m.errors > 0).count();
    let skipped = doc.modules.iter().filter(|m| !m.compiled).count();
    let secs = doc.check_ms as f64 / 1000.0;
    let suite = format!("cargo-eterna-port check ({})", doc.target_triple);
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="cargo-eterna-port" tests="{}" failures="{failures}" errors="0" time="{secs:.3}">"#,
        doc.modules.len()
    );
    let _ = writeln!(
        s,
        r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{secs:.3}">"#,
        xml_escape(&suite),
        doc.modules.len()
    );
    for m in &doc.modules {
        let classname = match (&m.package, &m.component) {
            (Some(p), Some(c)) => format!("{p}.{c}"),
            _ => "workspace".to_string(),
        };
        let file = m
            .files
            .first()
            .map(|f| format!(r#" file="{}""#, xml_escape(f)))
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"    <testcase name="{}" classname="{}"{file} time="0""#,
            xml_escape(&m.module_path),
            xml_escape(&classname)
        );
        if !m.compiled {
            let _ = writeln!(s, ">");
            let _ = writeln!(
                s,
                r#"      <skipped message="{}"/>"#,
                xml_escape(
                    "not compiled: its crate, a dependency or a build script failed before it"
                )
            );
            let _ = writeln!(s, "    </testcase>");
            continue;
        }
        if m.errors == 0 && m.warnings == 0 {
            let _ = writeln!(s, "/>");
            continue;
        }
        let _ = writeln!(s, ">");
        if let Some(first) = m.first_error() {
            let at = if first.file.is_empty() {
                String::new()
            } else {
                format!(" at {}:{}", first.file, first.line)
            };
            let message = format!(
                "{}; first: {}{at}",
                plural(m.errors, "error"),
                first.message
            );
            let body: Vec<&str> = m
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.rendered.as_str())
                .collect();
            let _ = writeln!(
                s,
                r#"      <failure type="cargo-check" message="{}">{}</failure>"#,
                xml_escape(&message),
                xml_escape(&body.join("\n"))
            );
        }
        let warnings: Vec<&str> = m
            .diagnostics
            .iter()
            .filter(|d| !d.is_error())
            .map(|d| d.rendered.as_str())
            .collect();
        if !warnings.is_empty() {
            let _ = writeln!(
                s,
                "      <system-out>{}</system-out>",
                xml_escape(&warnings.join("\n"))
            );
        }
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixloop::Diag;

    fn doc() -> CheckDocument {
        let d = Diag {
            file: "k/src/x86_64/vmcs.rs".into(),
            line: 7,
            column: 5,
            level: crate::fixloop::Level::Error,
            code: Some("E0308".into()),
            message: "mismatched types: 100% <wrong>".into(),
            rendered: "error[E0308]: mismatched\r\n  --> k/src/x86_64/vmcs.rs:7:5\n".into(),
        };
        let report = CheckReport {
            target_triple: "x86_64-unknown-none".into(),
            modules: vec![
                ModuleResult {
                    module_path: "k::arch::aarch64::vm".into(),
                    component: Some("vm-control".into()),
                    package: Some("k".into()),
                    files: vec!["k/src/x86_64/vmcs.rs".into()],
                    errors: 1,
                    warnings: 0,
                    compiled: true,
                    status: "errors",
                    diagnostics: vec![d],
                },
                ModuleResult {
                    module_path: "k::arch::aarch64::gic".into(),
                    component: Some("interrupt-controller".into()),
                    package: Some("k".into()),
                    files: vec!["k/src/x86_64/apic.rs".into()],
                    errors: 0,
                    warnings: 0,
                    compiled: true,
                    status: "ok",
                    diagnostics: vec![],
                },
            ],
            errors: 1,
            warnings: 0,
            not_compiled: 0,
            build_failures: Vec::new(),
            check_ms: 1500,
        };
        CheckDocument::new("/ws".into(), "x86_64-unknown-none".into(), report, &|_| {
            true
        })
    }

    #[test]
    fn github_annotations_escape_per_the_workflow_command_rules() {
        assert_eq!(escape_data("a%b\r\nc"), "a%25b%0D%0Ac");
        assert_eq!(escape_property("a::b,c"), "a%3A%3Ab%2Cc");
        let out = github(&doc(), "ws/");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.starts_with(
                "::error file=ws/k/src/x86_64/vmcs.rs,line=7,col=5,title=E0308 in k%3A%3Aarch%3A%3Aaarch64%3A%3Avm::error[E0308]: mismatched%0D%0A  --> "
            ),
            "{out}"
        );
    }

    #[test]
    fn junit_has_one_case_per_module_and_fails_the_broken_one() {
        let x = junit(&doc());
        assert!(x.contains(r#"<testsuite name="cargo-eterna-port check (x86_64-unknown-none)" tests="2" failures="1""#), "{x}");
        assert!(x.contains(r#"<testcase name="k::arch::aarch64::gic" classname="k.interrupt-controller" file="k/src/x86_64/apic.rs" time="0"/>"#), "{x}");
        assert!(
            x.contains(r#"message="1 error; first: mismatched types: 100% &lt;wrong&gt; at k/src/x86_64/vmcs.rs:7""#),
            "{x}"
        );
        assert_eq!(xml_escape("a\u{1b}[1m&"), "a[1m&amp;");
    }

    #[test]
    fn the_summary_names_module_and_line() {
        let h = human(&doc());
        assert!(h.contains("FAILED"), "{h}");
        assert!(
            h.contains("k/src/x86_64/vmcs.rs:7: mismatched types"),
            "{h}"
        );
    }
}
