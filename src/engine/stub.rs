//! Function bodies with ARM64 code: translated statement by statement where the
//! knowledge has a mechanical x86_64 mapping for every statement of their inline
//! assembly, replaced by an `unimplemented!("eterna-port: …")` stub otherwise.

use std::ops::Range;
use std::path::Path;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

use crate::knowledge::Knowledge;
use crate::workspace::{analyze_target, EvidenceKind};

/// The text every stub the engine writes starts with (inside the string literal).
pub const STUB_MARKER: &str = "unimplemented!(\"eterna-port: ";

/// ARM64 code evidence in a piece of Rust: asm, system registers, `core::arch::aarch64`
/// paths, paths into the crate's ARM64 modules. A `cfg(target_arch = "aarch64")` test
/// is not code.
pub fn arm64_code(text: &str, knowledge: &Knowledge) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Ok(facts) = analyze_target(text, Path::new("."), knowledge) {
        for e in facts.evidence {
            if matches!(e.kind, EvidenceKind::Cfg | EvidenceKind::Path) {
                continue;
            }
            if !names.contains(&e.name) {
                names.push(e.name);
            }
        }
    }
    names
}

/// Whether a piece of Rust still holds ARM64 code.
pub fn has_arm64_code(text: &str, knowledge: &Knowledge) -> bool {
    !arm64_code(text, knowledge).is_empty()
}

/// A string usable inside the literal of `unimplemented!("…")`: quotes and
/// backslashes escaped, format braces doubled, on one line.
pub fn escape_message(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '{' => out.push_str("{{"),
            '}' => out.push_str("}}"),
            '\n' | '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The stub statement for function `name` whose body used `uses`.
pub fn stub_statement(name: &str, uses: &[String]) -> String {
    let reason = if uses.is_empty() {
        format!("`{name}` has ARM64-specific code with no mechanical x86_64 translation")
    } else {
        format!(
            "`{name}` uses ARM64 {} with no mechanical x86_64 translation",
            uses.join(", ")
        )
    };
    format!("{STUB_MARKER}{}\")", escape_message(&reason))
}

/// A function body holding only `statement`, indented like the line the body at byte
/// `at` of `text` opens on.
pub fn stub_body(text: &str, at: usize, statement: &str) -> String {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = text[line_start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect();
    format!("{{\n{indent}    {statement}\n{indent}}}")
}

/// The `fn` bodies (name, byte range of the `{…}` block) in a piece of Rust, at any
/// depth (free functions, methods of impl and trait blocks, nested modules).
pub(crate) fn fn_bodies(text: &str) -> Vec<(String, Range<usize>)> {
    let Ok(tokens) = text.parse::<TokenStream>() else {
        return Vec::new();
    };
    fn walk(ts: TokenStream, out: &mut Vec<(String, Range<usize>)>) {
        let mut fn_name: Option<String> = None;
        let mut after_fn = false;
        for tt in ts {
            match tt {
                TokenTree::Ident(id) => {
                    if after_fn && fn_name.is_none() {
                        fn_name = Some(id.to_string());
                    }
                    if id == "fn" {
                        after_fn = true;
                        fn_name = None;
                    }
                }
                TokenTree::Group(g) if after_fn && g.delimiter() == Delimiter::Brace => {
                    out.push((fn_name.take().unwrap_or_default(), g.span().byte_range()));
                    after_fn = false;
                }
                TokenTree::Group(g) if !after_fn => walk(g.stream(), out),
                TokenTree::Punct(p) if p.as_char() == ';' => after_fn = false,
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(tokens, &mut out);
    proc_macro2::extra::invalidate_current_thread_spans();
    out
}

/// Replaces the body of every `fn` in `text` that contains ARM64 code with its
/// mechanical translation, or else with an `unimplemented!` stub naming it. Returns the
/// new text and the names of the stubbed functions. Stubbed naked functions lose their
/// `naked` attribute (a naked function's body must be assembly).
pub fn stub_arm64_bodies(text: &str, knowledge: &Knowledge) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut stubbed = Vec::new();
    for (name, r) in fn_bodies(text) {
        let Some(body) = text.get(r.clone()) else {
            continue;
        };
        if r.start < at {
            continue;
        }
        let uses = arm64_code(&format!("fn __eterna_body() {body}"), knowledge);
        if uses.is_empty() {
            continue;
        }
        if let Some(translated) = translate_asm(body, knowledge) {
            if !has_arm64_code(&format!("fn __eterna_body() {translated}"), knowledge) {
                out.push_str(&text[at..r.start]);
                out.push_str(&translated);
                at = r.end;
                continue;
            }
        }
        out.push_str(&text[at..r.start]);
        out.push_str(&stub_body(text, r.start, &stub_statement(&name, &uses)));
        at = r.end;
        stubbed.push(name);
    }
    out.push_str(&text[at..]);
    if !stubbed.is_empty() {
        out = drop_naked_attributes(&out);
    }
    (out, stubbed)
}

/// Removes `#[naked]` / `#[unsafe(naked)]` attributes.
fn drop_naked_attributes(text: &str) -> String {
    let mut out = text.to_string();
    for attr in ["#[unsafe(naked)]", "#[naked]"] {
        while let Some(i) = out.find(attr) {
            let mut end = i + attr.len();
            // The rest of the line when it is only whitespace.
            let rest = &out[end..];
            let line_end = rest.find('\n').map_or(rest.len(), |n| n + 1);
            if rest[..line_end].trim().is_empty() {
                end += line_end;
                let line_start = out[..i].rfind('\n').map_or(0, |n| n + 1);
                if out[line_start..i].trim().is_empty() {
                    out.replace_range(line_start..end, "");
                    continue;
                }
            }
            out.replace_range(i..end, "");
        }
    }
    out
}

/// Rewrites every `asm!` template in `body` to x86_64 when the knowledge has a
/// translation for each of its statements; `None` if any statement has none.
pub fn translate_asm(body: &str, knowledge: &Knowledge) -> Option<String> {
    let tokens: TokenStream = body.parse().ok()?;
    let mut literals: Vec<Range<usize>> = Vec::new();
    fn find(ts: TokenStream, out: &mut Vec<Range<usize>>) {
        let tts: Vec<TokenTree> = ts.into_iter().collect();
        for (i, tt) in tts.iter().enumerate() {
            match tt {
                TokenTree::Ident(id) if id == "asm" => {
                    let bang =
                        matches!(tts.get(i + 1), Some(TokenTree::Punct(p)) if p.as_char() == '!');
                    if let (true, Some(TokenTree::Group(g))) = (bang, tts.get(i + 2)) {
                        // The template strings come first, before the operands.
                        for t in g.stream() {
                            match t {
                                TokenTree::Literal(l)
                                    if crate::workspace::is_string_literal(&l.to_string()) =>
                                {
                                    out.push(l.span().byte_range())
                                }
                                TokenTree::Punct(p) if p.as_char() == ',' => {}
                                _ => break,
                            }
                        }
                    }
                }
                TokenTree::Group(g) => find(g.stream(), out),
                _ => {}
            }
        }
    }
    find(tokens, &mut literals);
    proc_macro2::extra::invalidate_current_thread_spans();
    if literals.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(body.len());
    let mut at = 0;
    for r in literals {
        let lit: syn::LitStr = syn::parse_str(body.get(r.clone())?).ok()?;
        let mut x86 = Vec::new();
        for stmt in lit.value().split(['\n', ';']) {
            let stmt = stmt.trim();
            if stmt.is_empty() {
                continue;
            }
            let t = knowledge.translate_asm_statement(stmt)?;
            // AArch64 operand modifiers have no x86 meaning (`x` is 16-bit there).
            let t = t.replace(":x}", "}").replace(":w}", ":e}");
            if !t.is_empty() {
                x86.push(t);
            }
        }
        out.push_str(&body[at..r.start]);
        out.push_str(&format!("{:?}", x86.join("\n")));
        at = r.end;
    }
    out.push_str(&body[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm64_bodies_become_stubs_and_neutral_ones_stay() {
        let k = Knowledge::embedded().unwrap();
        let text = "impl Timer {\n    pub fn freq(&self) -> u64 {\n        let f: u64;\n        unsafe { core::arch::asm!(\"mrs {}, cntfrq_el0\", out(reg) f) };\n        f\n    }\n    pub fn double(x: u64) -> u64 { x * 2 }\n}";
        let (out, stubbed) = stub_arm64_bodies(text, &k);
        assert_eq!(stubbed, ["freq"]);
        assert!(
            out.contains("    pub fn freq(&self) -> u64 {\n        unimplemented!(\"eterna-port: `freq` uses ARM64 "),
            "{out}"
        );
        assert!(
            out.contains("translation\")\n    }\n    pub fn double"),
            "{out}"
        );
        assert!(out.contains("pub fn double(x: u64) -> u64 { x * 2 }"));
    }

    #[test]
    fn translatable_asm_is_translated_not_stubbed() {
        let k = Knowledge::embedded().unwrap();
        let text = "pub fn flush(addr: u64) {\n    unsafe { core::arch::asm!(\"dc civac, {0:x}\", \"dsb sy\", in(reg) addr) }\n}\npub fn park() -> ! {\n    loop { unsafe { core::arch::asm!(\"wfe\") } }\n}\npub fn count() -> u64 {\n    let v: u64;\n    unsafe { core::arch::asm!(\"mrs {}, cntvct_el0\", out(reg) v) };\n    v\n}";
        let (out, stubbed) = stub_arm64_bodies(text, &k);
        assert_eq!(stubbed, ["count"], "{out}");
        assert!(
            out.contains("asm!(\"clflush [{0}]\", \"mfence\", in(reg) addr)"),
            "{out}"
        );
        assert!(out.contains("asm!(\"pause\")"), "{out}");
    }

    #[test]
    fn stub_messages_are_escaped_for_the_format_string() {
        let s = stub_statement("f", &["mrs {0:x}, \"x\"".to_string()]);
        assert_eq!(
            s,
            "unimplemented!(\"eterna-port: `f` uses ARM64 mrs {{0:x}}, \\\"x\\\" with no mechanical x86_64 translation\")"
        );
        // It parses as an expression and its format string has no placeholder.
        syn::parse_str::<syn::Expr>(&s).unwrap();
    }

    #[test]
    fn stubbed_naked_functions_lose_the_attribute() {
        let k = Knowledge::embedded().unwrap();
        let text = "#[unsafe(naked)]\npub unsafe extern \"C\" fn entry() -> ! {\n    core::arch::naked_asm!(\"msr vbar_el2, x0\", \"eret\")\n}\n";
        let (out, stubbed) = stub_arm64_bodies(text, &k);
        assert_eq!(stubbed, ["entry"]);
        assert!(!out.contains("naked"), "{out}");
        assert!(
            out.starts_with("pub unsafe extern \"C\" fn entry() -> ! {"),
            "{out}"
        );
    }
}
