//! The offline fixer of the cargo check loop: a function of a generated x86_64 module
//! that does not compile for x86_64 (it calls an API its dependencies only have on
//! aarch64, uses a type that differs by architecture, …) gets an `unimplemented!` stub
//! naming the error, and an import that does not resolve is commented out. It never
//! touches the user's files, and a stubbed function counts as not ported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;

use super::stub::{escape_message, fn_bodies, stub_body, STUB_MARKER};
use crate::fixloop::{Fixer, ModuleDiagnostics};

/// What the stub fixer's stubs say, to tell them from the engine's own.
pub const DOES_NOT_COMPILE: &str = "does not compile for x86_64";

/// Keeps the stub fixer's stubs of an earlier run: a function of `derived` whose
/// counterpart in `existing` (same name, same place among the functions of that name)
/// is a fix-loop stub gets that stub again, so a re-run writes what the last run left.
/// (Delete the x86_64 file to derive it afresh.)
pub fn carry_fix_stubs(derived: &str, existing: &str) -> String {
    use std::collections::BTreeMap;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut stubs: BTreeMap<(String, usize), &str> = BTreeMap::new();
    for (name, r) in fn_bodies(existing) {
        let n = seen.entry(name.clone()).or_default();
        let body = &existing[r];
        if body.contains(STUB_MARKER) && body.contains(DOES_NOT_COMPILE) {
            stubs.insert((name, *n), body);
        }
        *n += 1;
    }
    if stubs.is_empty() {
        return derived.to_string();
    }
    seen.clear();
    let mut edits = Vec::new();
    for (name, r) in fn_bodies(derived) {
        let n = seen.entry(name.clone()).or_default();
        if let Some(body) = stubs.get(&(name, *n)) {
            if !derived[r.clone()].contains(STUB_MARKER) {
                edits.push((r, body.to_string()));
            }
        }
        *n += 1;
    }
    super::source::splice(derived, edits)
}

/// Stubs what does not compile in the tool's own files.
pub struct StubFixer<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The files the tool owns (the port's x86_64 modules).
    pub generated: &'a BTreeSet<String>,
    /// ARM-only crates whose imports the port dropped from x86_64 code: their
    /// identifier → the manifest and dependency name, when the port also moved the
    /// dependency under the aarch64 table. An error a stub cannot fix (a signature
    /// naming the crate's types) brings the imports and the dependency back.
    pub dropped_crates: &'a BTreeMap<String, Option<(String, String)>>,
}

/// Byte offset of 1-based `line`/`column` (columns count characters, as rustc's do).
fn offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.checked_sub(1)?)
        .map(str::len)
        .sum();
    let rest = text.get(start..)?;
    let col = rest
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(rest.len(), |(i, _)| i);
    Some(start + col)
}

/// Applies the fixes for `errors` (line, column, message) to `text`.
pub fn stub_failing(text: &str, errors: &[(usize, usize, String)]) -> String {
    stub_failing_counted(text, errors).0
}

/// [`stub_failing`], and how many errors were neither in a function body nor in an
/// import (a signature, a field type: nothing a stub can fix).
fn stub_failing_counted(text: &str, errors: &[(usize, usize, String)]) -> (String, usize) {
    let mut unfixable = 0;
    let bodies = fn_bodies(text);
    let uses: Vec<std::ops::Range<usize>> = syn::parse_file(text)
        .map(|f| {
            use syn::spanned::Spanned;
            f.items
                .iter()
                .filter(|i| matches!(i, syn::Item::Use(_)))
                .map(|i| i.span().byte_range())
                .collect()
        })
        .unwrap_or_default();
    proc_macro2::extra::invalidate_current_thread_spans();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for (line, column, message) in errors {
        let Some(at) = offset(text, *line, *column) else {
            unfixable += 1;
            continue;
        };
        // The innermost function body holding the error.
        let body = bodies
            .iter()
            .filter(|(_, r)| r.start <= at && at < r.end)
            .min_by_key(|(_, r)| r.len());
        if let Some((name, r)) = body {
            if edits
                .iter()
                .any(|(e, _)| e.start <= r.start && r.end <= e.end)
                || text[r.clone()].contains(STUB_MARKER)
            {
                continue;
            }
            edits.retain(|(e, _)| !(r.start <= e.start && e.end <= r.end));
            let reason = format!("`{name}` {DOES_NOT_COMPILE}: {message}");
            let statement = format!("{STUB_MARKER}{}\")", escape_message(&reason));
            edits.push((r.clone(), stub_body(text, r.start, &statement)));
        } else if let Some(u) = uses.iter().find(|u| u.start <= at && at < u.end) {
            if edits.iter().any(|(e, _)| e == u) {
                continue;
            }
            let note = format!(
                "eterna-port: import does not resolve for x86_64 ({})",
                message.replace('\n', " ")
            );
            edits.push((
                u.clone(),
                super::derive::comment_out(&text[u.clone()], &note),
            ));
        } else {
            unfixable += 1;
        }
    }
    (super::source::splice(text, edits), unfixable)
}

impl Fixer for StubFixer<'_> {
    fn fix(
        &mut self,
        _iteration: u32,
        modules: &[ModuleDiagnostics],
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut ungate: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for md in modules {
            for rel in md.files.iter().filter(|f| self.generated.contains(*f)) {
                let errors: Vec<(usize, usize, String)> = md
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error() && &d.file == rel && d.line > 0)
                    .map(|d| (d.line, d.column, d.message.clone()))
                    .collect();
                if errors.is_empty() {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(self.root.join(rel)) else {
                    continue;
                };
                let (mut fixed, unfixable) = stub_failing_counted(&text, &errors);
                if unfixable > 0 {
                    // The module's API itself needs an ARM-only crate's types: it keeps
                    // the crate (the errors in bodies are stubbed all the same).
                    for (ident, gated) in self.dropped_crates {
                        let restored = super::deps::restore_imports_of(&fixed, ident);
                        if restored != fixed {
                            fixed = restored;
                            if let Some((manifest, name)) = gated {
                                ungate
                                    .entry(manifest.clone())
                                    .or_default()
                                    .push(name.clone());
                            }
                        }
                    }
                }
                if fixed != text {
                    out.push((rel.clone(), fixed));
                }
            }
        }
        for (manifest, names) in ungate {
            let text = std::fs::read_to_string(self.root.join(&manifest))?;
            if let Some(new) = super::deps::ungate_from_aarch64(&text, &names)? {
                out.push((manifest, new));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_bodies_are_stubbed_and_bad_imports_commented_out() {
        let text = "use other::arm_only::Thing;\nuse core::fmt;\n\npub fn inject(v: u8) {\n    other::arch::inject_virq(v);\n}\n\npub fn fine() -> u8 {\n    1\n}\n";
        let out = stub_failing(
            text,
            &[
                (
                    5,
                    19,
                    "cannot find function `inject_virq` in module `other::arch`".into(),
                ),
                (1, 12, "unresolved import `other::arm_only`".into()),
            ],
        );
        assert_eq!(
            out,
            "// eterna-port: import does not resolve for x86_64 (unresolved import `other::arm_only`):\n// use other::arm_only::Thing;\nuse core::fmt;\n\npub fn inject(v: u8) {\n    unimplemented!(\"eterna-port: `inject` does not compile for x86_64: cannot find function `inject_virq` in module `other::arch`\")\n}\n\npub fn fine() -> u8 {\n    1\n}\n"
        );
        // Already stubbed: nothing more to do.
        assert_eq!(stub_failing(&out, &[(5, 5, "x".into())]), out);
        // A re-run's fresh derivation gets the stub back; other bodies stay.
        let again = carry_fix_stubs(text, &out);
        assert!(
            again.contains("pub fn inject(v: u8) {\n    unimplemented!(\"eterna-port: `inject` does not compile"),
            "{again}"
        );
        assert!(carry_fix_stubs(text, &out).contains("pub fn fine() -> u8 {\n    1\n}"));
        assert_eq!(carry_fix_stubs(text, text), text);
    }
}
