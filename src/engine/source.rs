//! A source file as a list of top-level items with their exact text and byte ranges,
//! and, per item, the ARM64 evidence inside it. The engine copies, gates and rewrites
//! items by these ranges, so everything it does not touch stays byte-for-byte.

use std::ops::Range;
use std::path::Path;

use proc_macro2::{TokenStream, TokenTree};
use syn::spanned::Spanned;

use crate::knowledge::Knowledge;
use crate::workspace::{analyze_target, EvidenceKind, ItemKind, ParseError};

/// One top-level item of a file.
#[derive(Debug, Clone)]
pub struct SourceItem {
    /// The item's name (`None` for `use`, `impl`, unnamed macro invocations).
    pub name: Option<String>,
    /// What the item is (`None` for items the scan does not list: `use`, `impl`, macros).
    pub kind: Option<ItemKind>,
    /// Declared `pub` (any `pub(…)` included).
    pub public: bool,
    /// Byte range in the file, attributes and doc comments included.
    pub range: Range<usize>,
    /// The item's exact text (`range` of the file).
    pub text: String,
    /// ARM64 evidence inside the item: its kind and name (`Sysreg`, `HCR_EL2`).
    pub arm64: Vec<(EvidenceKind, String)>,
    /// Already gated by `cfg(target_arch = "aarch64")` / `"x86_64"`.
    pub cfg_aarch64: bool,
    /// Already gated by `cfg(target_arch = "x86_64")`.
    pub cfg_x86_64: bool,
    /// A `mod name;` declaration without body.
    pub mod_decl: Option<String>,
}

impl SourceItem {
    /// Whether the item has any ARM64 evidence (a gate included).
    pub fn is_arm64(&self) -> bool {
        !self.arm64.is_empty()
    }

    /// ARM64 code, not merely a `cfg(target_arch = "aarch64")` gate on the item.
    pub fn has_arm64_code(&self) -> bool {
        self.arm64
            .iter()
            .any(|(kind, _)| *kind != EvidenceKind::Cfg)
    }
}

/// Splits `text` (the file at `path`) into its top-level items.
pub fn items(
    text: &str,
    path: &Path,
    knowledge: &Knowledge,
) -> Result<Vec<SourceItem>, ParseError> {
    let result = parse_items(text, path, knowledge);
    proc_macro2::extra::invalidate_current_thread_spans();
    result
}

fn parse_error(e: syn::Error) -> ParseError {
    let start = e.span().start();
    ParseError {
        line: start.line,
        column: start.column + 1,
        message: e.to_string(),
    }
}

fn parse_items(
    text: &str,
    path: &Path,
    knowledge: &Knowledge,
) -> Result<Vec<SourceItem>, ParseError> {
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let body = &text[bom..];
    let tokens: TokenStream = body.parse().map_err(|e| parse_error(syn::Error::from(e)))?;
    let file: syn::File = syn::parse2(tokens).map_err(parse_error)?;
    let mut out = Vec::new();
    for item in &file.items {
        let r = item.span().byte_range();
        // Outer doc comments and attributes are part of the item's tokens.
        let range = (r.start + bom)..(r.end + bom);
        let text_of = text.get(range.clone()).unwrap_or_default().to_string();
        let (name, kind, public, mod_decl) = describe(item);
        let attrs = item_attrs(item);
        let cfg_text: Vec<String> = attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
            .map(|a| {
                quote::ToTokens::to_token_stream(&a.meta)
                    .to_string()
                    .replace(' ', "")
            })
            .collect();
        let cfg_aarch64 = cfg_text
            .iter()
            .any(|c| c.contains("target_arch=\"aarch64\""));
        let cfg_x86_64 = cfg_text
            .iter()
            .any(|c| c.contains("target_arch=\"x86_64\""));
        out.push(SourceItem {
            name,
            kind,
            public,
            range,
            text: text_of,
            arm64: Vec::new(),
            cfg_aarch64,
            cfg_x86_64,
            mod_decl,
        });
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    // Evidence per item: the scan's own analysis run on the item's text (with the
    // file's path, so `include_str!` resolves).
    for it in &mut out {
        if let Ok(facts) = analyze_target(&it.text, path, knowledge) {
            it.arm64 = facts
                .evidence
                .iter()
                .filter(|e| e.kind != EvidenceKind::Path)
                .map(|e| (e.kind, e.name.clone()))
                .collect();
        }
    }
    Ok(out)
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::ExternCrate(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::ForeignMod(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::TraitAlias(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn is_pub(vis: &syn::Visibility) -> bool {
    !matches!(vis, syn::Visibility::Inherited)
}

type Description = (Option<String>, Option<ItemKind>, bool, Option<String>);

fn describe(item: &syn::Item) -> Description {
    use ItemKind as K;
    let named = |i: &syn::Ident, k, vis: &syn::Visibility| {
        (Some(i.to_string()), Some(k), is_pub(vis), None)
    };
    match item {
        syn::Item::Fn(f) => named(&f.sig.ident, K::Fn, &f.vis),
        syn::Item::Struct(s) => named(&s.ident, K::Struct, &s.vis),
        syn::Item::Enum(e) => named(&e.ident, K::Enum, &e.vis),
        syn::Item::Union(u) => named(&u.ident, K::Union, &u.vis),
        syn::Item::Trait(t) => named(&t.ident, K::Trait, &t.vis),
        syn::Item::Type(t) => named(&t.ident, K::Type, &t.vis),
        syn::Item::Const(c) => named(&c.ident, K::Const, &c.vis),
        syn::Item::Static(s) => named(&s.ident, K::Static, &s.vis),
        syn::Item::Macro(m) => match &m.ident {
            Some(i) => (
                Some(i.to_string()),
                Some(K::Macro),
                m.attrs.iter().any(|a| a.path().is_ident("macro_export")),
                None,
            ),
            None => (None, None, false, None),
        },
        syn::Item::Impl(_) => (None, Some(K::Impl), false, None),
        syn::Item::Mod(m) => {
            let decl = m.content.is_none().then(|| m.ident.to_string());
            (Some(m.ident.to_string()), None, is_pub(&m.vis), decl)
        }
        _ => (None, None, false, None),
    }
}

/// Renames identifiers in `text` (a piece of Rust) by `rename`, and by `after(context,
/// ident)` where the context is the previous path segment (`aarch64` in
/// `aarch64::gic`), `"mod"` for the name in `mod gic;`, or `"::"` for the head of a
/// path (`gic::eoi()`). Strings, comments and everything else stay as they are.
pub fn rename_idents(
    text: &str,
    rename: &dyn Fn(&str) -> Option<String>,
    after: &dyn Fn(&str, &str) -> Option<String>,
) -> String {
    let Ok(tokens) = text.parse::<TokenStream>() else {
        return text.to_string();
    };
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    collect_renames(tokens, rename, after, None, &mut edits);
    proc_macro2::extra::invalidate_current_thread_spans();
    splice(text, edits)
}

/// Replaces byte ranges of `text` (non-overlapping, any order; an overlapping or
/// out-of-bounds edit is dropped).
pub fn splice(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|e| e.0.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (r, new) in edits {
        if r.start < at || r.end > text.len() {
            continue;
        }
        out.push_str(&text[at..r.start]);
        out.push_str(&new);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `group_prefix`: inside `a::{…}`, the renamed `a`, which applies to the first
/// identifier of each comma-separated part.
fn collect_renames(
    tokens: TokenStream,
    rename: &dyn Fn(&str) -> Option<String>,
    after: &dyn Fn(&str, &str) -> Option<String>,
    group_prefix: Option<&str>,
    edits: &mut Vec<(Range<usize>, String)>,
) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    // The previous path segment, while a `::` path continues from it.
    let mut prev: Option<String> = group_prefix.map(str::to_string);
    let mut i = 0;
    while i < tts.len() {
        match &tts[i] {
            TokenTree::Ident(id) => {
                let s = id.to_string();
                let after_mod = matches!(
                    i.checked_sub(1).and_then(|k| tts.get(k)),
                    Some(TokenTree::Ident(m)) if m == "mod"
                );
                let path_head = prev.is_none()
                    && matches!(
                        (tts.get(i + 1), tts.get(i + 2)),
                        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':'
                    );
                let context = if after_mod {
                    Some("mod")
                } else if path_head {
                    Some("::")
                } else {
                    prev.as_deref()
                };
                let new = context.and_then(|p| after(p, &s)).or_else(|| rename(&s));
                if let Some(n) = &new {
                    edits.push((id.span().byte_range(), n.clone()));
                }
                let is_path = matches!(
                    (tts.get(i + 1), tts.get(i + 2)),
                    (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':'
                );
                if is_path {
                    if let Some(TokenTree::Group(g)) = tts.get(i + 3) {
                        // `seg::{a, b::c}`
                        collect_renames(g.stream(), rename, after, Some(&s), edits);
                        prev = None;
                        i += 4;
                        continue;
                    }
                }
                prev = if is_path { Some(s) } else { None };
                i += if is_path { 3 } else { 1 };
                continue;
            }
            TokenTree::Group(g) => collect_renames(g.stream(), rename, after, None, edits),
            TokenTree::Punct(p) if p.as_char() == ',' => {
                prev = group_prefix.map(str::to_string);
                i += 1;
                continue;
            }
            _ => {}
        }
        prev = None;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_have_exact_ranges_and_their_own_evidence() {
        let k = Knowledge::embedded().unwrap();
        let text = "\u{feff}//! Module doc.\n\n/// Reads HCR.\npub fn hcr() -> u64 {\n    let v: u64;\n    unsafe { core::arch::asm!(\"mrs {}, hcr_el2\", out(reg) v) };\n    v\n}\n\npub const PAGE: usize = 4096;\n#[cfg(target_arch = \"aarch64\")]\nmod imp;\n";
        let items = items(text, Path::new("x.rs"), &k).unwrap();
        assert_eq!(items.len(), 3);
        assert!(items[0].text.starts_with("/// Reads HCR.\npub fn hcr()"));
        assert!(items[0].text.ends_with("    v\n}"));
        assert_eq!(&text[items[0].range.clone()], items[0].text);
        assert!(
            items[0]
                .arm64
                .contains(&(EvidenceKind::Sysreg, "HCR_EL2".to_string())),
            "{:?}",
            items[0].arm64
        );
        assert!(!items[1].is_arm64());
        assert_eq!(items[1].name.as_deref(), Some("PAGE"));
        assert!(items[2].cfg_aarch64);
        assert_eq!(items[2].mod_decl.as_deref(), Some("imp"));
    }

    #[test]
    fn renames_paths_but_not_strings_or_comments() {
        let text = "use arch::aarch64::{self as platform, gic::Gic}; // aarch64 stays\nlet s = \"aarch64\"; arch::Aarch64.run(aarch64::gic::eoi());";
        let out = rename_idents(
            text,
            &|s| match s {
                "aarch64" => Some("x86_64".into()),
                "Aarch64" => Some("X86_64".into()),
                _ => None,
            },
            &|prev, s| (prev == "aarch64" && s == "gic").then(|| "apic".to_string()),
        );
        assert_eq!(
            out,
            "use arch::x86_64::{self as platform, apic::Gic}; // aarch64 stays\nlet s = \"aarch64\"; arch::X86_64.run(x86_64::apic::eoi());"
        );
    }
}
