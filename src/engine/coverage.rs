//! Coverage counted from the text the port writes: every named item and every
//! method or associated item of an `impl`, each `ported`, `stubbed` (its body is an
//! `eterna-port` stub), or `left-out` (ARM64 assembly the port dropped); and `missing`
//! for an item of the module's API (the ARM64 source's public items) the written text
//! has nothing of that name for.

use serde::Serialize;
use syn::spanned::Spanned;

use super::stub::STUB_MARKER;

/// The marker of an ARM64 item the port left out, on its own comment line.
pub const LEFT_OUT_MARKER: &str = "// eterna-port: left out: ";

/// What became of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStatus {
    /// It has a real body (no stub).
    Ported,
    /// Its body is a stub (`unimplemented!`/`todo!`).
    Stubbed,
    /// ARM64 assembly the port left out (a comment line names it).
    LeftOut,
    /// An API item of the ARM64 source the written text has nothing for.
    Missing,
}

impl ItemStatus {
    /// `ported`, `stubbed`, `left-out` or `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Ported => "ported",
            ItemStatus::Stubbed => "stubbed",
            ItemStatus::LeftOut => "left-out",
            ItemStatus::Missing => "missing",
        }
    }
}

/// One item of a written module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemReport {
    /// `name`, or `Type::name` for an item of an `impl`.
    pub name: String,
    /// `fn`, `struct`, `const`, … (`asm` for left-out code, `api` for a missing item).
    pub kind: &'static str,
    /// What became of it.
    pub status: ItemStatus,
    /// Why it is not ported (the stub's message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who wrote the item as it is: `engine`, `agent:<agent>` (a model's answer) or
    /// `fix-loop` (rustfix, the DebugAgent or the stub fixer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The model, for an item a model wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A hash of the item's text (whitespace ignored), to tell which items a later
    /// writer changed.
    #[serde(skip)]
    pub text_hash: u64,
}

/// Credits `by` (and `model`) with the items of `next` that are new or changed since
/// `prev`; the others keep who wrote them before.
pub fn attribute(prev: &[ItemReport], next: &mut [ItemReport], by: &str, model: Option<&str>) {
    for item in next {
        match prev.iter().find(|p| p.name == item.name) {
            Some(p) if p.text_hash == item.text_hash && p.by.is_some() => {
                item.by = p.by.clone();
                item.model = p.model.clone();
            }
            _ => {
                item.by = Some(by.to_string());
                item.model = model.map(str::to_string);
            }
        }
    }
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for w in text.split_whitespace() {
        w.hash(&mut h);
    }
    h.finish()
}

/// The items of `text` (a module the port writes) and what became of each. A text
/// that does not parse counts as one stubbed item named after nothing.
pub fn items_of(text: &str) -> Vec<ItemReport> {
    let mut out = Vec::new();
    match syn::parse_file(text) {
        Ok(file) => collect(text, &file.items, "", &mut out),
        Err(e) => out.push(ItemReport {
            name: "(module)".into(),
            kind: "module",
            status: ItemStatus::Stubbed,
            reason: Some(format!("does not parse: {e}")),
            by: None,
            model: None,
            text_hash: text_hash(text),
        }),
    }
    for line in text.lines() {
        if let Some(rest) = line.trim_start().strip_prefix(LEFT_OUT_MARKER) {
            out.push(ItemReport {
                name: rest
                    .split_once(' ')
                    .map_or(rest, |(head, _)| head)
                    .to_string(),
                kind: "asm",
                status: ItemStatus::LeftOut,
                reason: Some(rest.to_string()),
                by: None,
                model: None,
                text_hash: text_hash(line),
            });
        }
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    out
}

/// The stub message in a piece of text, if it has one.
fn stub_reason(text: &str) -> Option<String> {
    let Some(at) = text.find(STUB_MARKER) else {
        // Any other `unimplemented!`/`todo!` (a model's answer) is not ported either.
        let flat: String = text.split_whitespace().collect();
        return ["unimplemented!", "todo!"]
            .iter()
            .any(|m| flat.contains(m))
            .then(|| "left unimplemented".to_string());
    };
    let rest = &text[at + "unimplemented!(\"".len()..];
    let end = rest.find("\")").unwrap_or(rest.len());
    Some(rest[..end].replace("{{", "{").replace("}}", "}"))
}

fn span_text<'a>(text: &'a str, node: &impl Spanned) -> &'a str {
    text.get(node.span().byte_range()).unwrap_or_default()
}

fn push(out: &mut Vec<ItemReport>, name: String, kind: &'static str, body: &str, whole: &str) {
    let reason = stub_reason(body);
    out.push(ItemReport {
        name,
        kind,
        status: if reason.is_some() {
            ItemStatus::Stubbed
        } else {
            ItemStatus::Ported
        },
        reason,
        by: None,
        model: None,
        text_hash: text_hash(whole),
    });
}

fn collect(text: &str, items: &[syn::Item], prefix: &str, out: &mut Vec<ItemReport>) {
    let named = |i: &syn::Ident| format!("{prefix}{i}");
    for item in items {
        let whole = span_text(text, item);
        match item {
            syn::Item::Fn(f) => push(
                out,
                named(&f.sig.ident),
                "fn",
                span_text(text, &f.block),
                whole,
            ),
            syn::Item::Struct(s) => push(out, named(&s.ident), "struct", "", whole),
            syn::Item::Enum(e) => push(out, named(&e.ident), "enum", "", whole),
            syn::Item::Union(u) => push(out, named(&u.ident), "union", "", whole),
            syn::Item::Type(t) => push(out, named(&t.ident), "type", "", whole),
            syn::Item::Const(c) => push(
                out,
                named(&c.ident),
                "const",
                span_text(text, &c.expr),
                whole,
            ),
            syn::Item::Static(s) => push(
                out,
                named(&s.ident),
                "static",
                span_text(text, &s.expr),
                whole,
            ),
            syn::Item::Macro(m) => {
                // A `macro_rules!` whose expansion holds a stub is not ported either.
                if let Some(i) = &m.ident {
                    push(out, named(i), "macro", span_text(text, &m.mac), whole);
                }
            }
            syn::Item::Trait(t) => {
                push(out, named(&t.ident), "trait", "", whole);
                for ti in &t.items {
                    if let syn::TraitItem::Fn(f) = ti {
                        let body = f.default.as_ref().map_or("", |b| span_text(text, b));
                        push(
                            out,
                            format!("{}::{}", named(&t.ident), f.sig.ident),
                            "fn",
                            body,
                            span_text(text, ti),
                        );
                    }
                }
            }
            syn::Item::Impl(im) => {
                let ty = crate::workspace::type_name(&im.self_ty);
                let owner = match &im.trait_ {
                    Some((_, path, _)) => format!(
                        "<{prefix}{ty} as {}>",
                        path.segments
                            .last()
                            .map(|s| s.ident.to_string())
                            .unwrap_or_default()
                    ),
                    None => format!("{prefix}{ty}"),
                };
                for ii in &im.items {
                    match ii {
                        syn::ImplItem::Fn(f) => push(
                            out,
                            format!("{owner}::{}", f.sig.ident),
                            "fn",
                            span_text(text, &f.block),
                            span_text(text, ii),
                        ),
                        syn::ImplItem::Const(c) => push(
                            out,
                            format!("{owner}::{}", c.ident),
                            "const",
                            span_text(text, &c.expr),
                            span_text(text, ii),
                        ),
                        syn::ImplItem::Type(t) => push(
                            out,
                            format!("{owner}::{}", t.ident),
                            "type",
                            "",
                            span_text(text, ii),
                        ),
                        _ => {}
                    }
                }
            }
            syn::Item::Mod(m) => {
                if let Some((_, inner)) = &m.content {
                    collect(text, inner, &format!("{}::", named(&m.ident)), out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_trait_items_and_stubs_are_counted_from_the_text() {
        let text = "pub struct Gic;\nimpl Gic {\n    pub fn eoi(&self) { unimplemented!(\"eterna-port: `eoi` uses ARM64 ICC_EOIR1_EL1 with {{x}}\") }\n    pub const N: u32 = 4;\n}\nimpl core::fmt::Debug for Gic {\n    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result { Ok(()) }\n}\nfn helper() {}\n// eterna-port: left out: global_asm! (boot.S: ARM64 assembly)\n";
        let items = items_of(text);
        let got: Vec<(&str, ItemStatus)> =
            items.iter().map(|i| (i.name.as_str(), i.status)).collect();
        assert_eq!(
            got,
            [
                ("Gic", ItemStatus::Ported),
                ("Gic::eoi", ItemStatus::Stubbed),
                ("Gic::N", ItemStatus::Ported),
                ("<Gic as Debug>::fmt", ItemStatus::Ported),
                ("helper", ItemStatus::Ported),
                ("global_asm!", ItemStatus::LeftOut),
            ]
        );
        assert_eq!(
            items[1].reason.as_deref(),
            Some("eterna-port: `eoi` uses ARM64 ICC_EOIR1_EL1 with {x}")
        );
    }
}
