//! The API contract of a ported module: a model's answer must keep the module's API,
//! and never lowers the number of ported items.
//!
//! The API is what the rest of the workspace can see of the module, read from the
//! engine's draft (which keeps every item of the ARM64 module with its signature) and,
//! where the draft lacks an item, from the ARM64 source's public items (the scan):
//! every item visible outside the module (`pub`, `pub(crate)`, …), the `pub` methods of
//! its types as `Type::method`, the items of trait impls as `<Type as Trait>::item`,
//! `pub use` re-exports, `pub mod` declarations and `#[macro_export]` macros. Private
//! helpers are the answer's business.
//!
//! [`judge`] compares an answer with that API item by item: `missing` (the name is
//! absent) and `changed` (another kind, a narrower visibility, another `fn` signature,
//! or a stub where the draft has a working body). Signatures are compared as token
//! strings without whitespace, parameter names and `const`. A type alias stands for the
//! struct/enum it replaces, and a re-export for any item of its name.
//!
//! [`merge`] keeps the engine's draft wherever the answer falls short, per item: an
//! answer's item replaces the draft's only where it is ported at least as often (as
//! [`crate::engine::coverage::items_of`] counts it: a stub is not ported); draft items the
//! answer lacks are kept (free items appended, methods put back into an `impl` block of
//! their type), with the draft's `use` lines they need; the answer's own helpers stay.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, ToTokens};
use serde::Serialize;
use syn::spanned::Spanned;

use crate::engine::coverage::{items_of, ItemReport, ItemStatus};
use crate::workspace::{tidy_tokens, type_name, Item as ScanItem, ItemKind};

/// What the API contract found in a task's answer (JSON: `contract` of a task).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContractReport {
    /// The answer was sent back once with the list of its shortfalls.
    pub resent: bool,
    /// API items the final answer lacks.
    pub missing: Vec<String>,
    /// API items the final answer changed (kind, visibility, signature, or a stub
    /// where the draft had a body).
    pub changed: Vec<String>,
    /// Items the written file takes from the engine's draft instead of the answer.
    pub kept_from_draft: Vec<String>,
    /// What else happened (the resend failed, the merge fell back to the whole draft).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ContractReport {
    /// The final answer still breaks the module's API.
    pub fn broken(&self) -> bool {
        !self.missing.is_empty() || !self.changed.is_empty()
    }
}

/// One API item the answer does not keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// `name`, `Type::method`, `<Type as Trait>::item`.
    pub name: String,
    /// The item as the API has it (`pub fn ack(&self) -> u32`).
    pub expected: String,
    /// What the answer has instead (`None`: nothing of that name).
    pub found: Option<String>,
}

/// The comparison of an answer with the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// API items the answer has nothing of that name for.
    pub missing: Vec<Shortfall>,
    /// API items the answer changed (kind, visibility, signature, or a stub where the draft has a body).
    pub changed: Vec<Shortfall>,
}

impl Judgement {
    /// The answer keeps the whole API.
    pub fn clean(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty()
    }

    /// Missing and changed items together (fewer is better).
    pub fn shortfalls(&self) -> usize {
        self.missing.len() + self.changed.len()
    }

    /// The answer's shortfalls as the resend message lists them: what is missing, what
    /// changed, each with its expected item.
    pub fn shortfall_lines(&self) -> String {
        let mut s = String::new();
        if !self.missing.is_empty() {
            s.push_str("\nMissing from your answer:\n");
            for m in &self.missing {
                s.push_str(&format!("- `{}`: `{}`\n", m.name, m.expected));
            }
        }
        if !self.changed.is_empty() {
            s.push_str("\nChanged in your answer:\n");
            for c in &self.changed {
                s.push_str(&format!(
                    "- `{}`: expected `{}`, found {}\n",
                    c.name,
                    c.expected,
                    c.found.as_deref().unwrap_or("nothing")
                ));
            }
        }
        s
    }

    /// The message that sends an answer back: every shortfall with its expected item.
    pub fn resend_message(&self, target: &str) -> String {
        let mut s = format!(
            "Your answer for `{target}` does not keep the module's API: the rest of the workspace uses these items with exactly these signatures.\n"
        );
        s.push_str(&self.shortfall_lines());
        s.push_str(&format!(
            "\nAnswer again with the complete file `{target}` in a ```rust block whose info string names its path: keep every item of the API with its signature and visibility, give each a real x86_64 body (no `unimplemented!`/`todo!` where the draft has a working one), and keep the helpers you added."
        ));
        s
    }

    /// The report of a final answer (before any merge).
    pub fn report(&self) -> ContractReport {
        ContractReport {
            missing: self.missing.iter().map(|m| m.name.clone()).collect(),
            changed: self.changed.iter().map(|c| c.name.clone()).collect(),
            ..ContractReport::default()
        }
    }
}

/// One item of a module as the contract sees it.
#[derive(Debug, Clone)]
struct Entry {
    /// `name`, `Type::m`, `<Type as Trait>`, `<Type as Trait>::m`, with the prefix of
    /// the inline modules around it.
    name: String,
    kind: &'static str,
    /// 0 private, 1 `pub(super)`/`pub(in …)`, 2 `pub(crate)`, 3 `pub`.
    vis: u8,
    /// The normalised signature of a free function or an inherent method.
    sig: Option<Vec<String>>,
    /// The item as a person reads it.
    display: String,
    /// Visible outside the module (the API), for the draft's entries.
    exported: bool,
    /// For items of an impl: the prefix, the self type, the trait and the member.
    owner: Option<Owner>,
}

#[derive(Debug, Clone)]
struct Owner {
    prefix: String,
    ty: String,
    tr: Option<String>,
    member: Option<String>,
}

impl Owner {
    fn name_with(&self, ty: &str) -> String {
        let head = match &self.tr {
            Some(tr) => format!("<{}{ty} as {tr}>", self.prefix),
            None => format!("{}{ty}", self.prefix),
        };
        match &self.member {
            Some(m) => format!("{head}::{m}"),
            None => head,
        }
    }
}

fn vis_rank(vis: &syn::Visibility) -> u8 {
    match vis {
        syn::Visibility::Public(_) => 3,
        syn::Visibility::Restricted(r) if r.path.is_ident("crate") => 2,
        syn::Visibility::Restricted(r) if r.path.is_ident("self") => 0,
        syn::Visibility::Restricted(_) => 1,
        syn::Visibility::Inherited => 0,
    }
}

/// A signature's tokens without whitespace, parameter names and `const`; `None` for a
/// function with a foreign ABI (`extern "C"`): its callers are the assembly the port
/// rewrites per architecture, so only its name and visibility are held.
fn norm_sig(sig: &syn::Signature) -> Option<Vec<String>> {
    if sig.abi.is_some() {
        return None;
    }
    let mut s = sig.clone();
    s.constness = None;
    for arg in s.inputs.iter_mut() {
        if let syn::FnArg::Typed(pt) = arg {
            pt.attrs.clear();
            *pt.pat = syn::parse_quote!(_);
        }
    }
    fn flat(ts: TokenStream, out: &mut Vec<String>) {
        for tt in ts {
            match tt {
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                        proc_macro2::Delimiter::Bracket => ("[", "]"),
                        proc_macro2::Delimiter::Brace => ("{", "}"),
                        proc_macro2::Delimiter::None => ("", ""),
                    };
                    out.push(open.into());
                    flat(g.stream(), out);
                    out.push(close.into());
                }
                other => out.push(other.to_string()),
            }
        }
    }
    let mut out = Vec::new();
    flat(s.to_token_stream(), &mut out);
    Some(out)
}

/// Two signatures are the same up to the answer's type aliases (`type A = B`).
fn same_sig(a: &[String], b: &[String], aliases: &BTreeMap<String, String>) -> bool {
    let short = |t: &String| -> String {
        aliases
            .iter()
            .find(|(k, _)| k.rsplit("::").next() == Some(t.as_str()))
            .map(|(_, v)| v.rsplit("::").next().unwrap_or(v).to_string())
            .unwrap_or_else(|| t.clone())
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || short(x) == short(y))
}

fn last_ident(path: &syn::Path) -> String {
    path.segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default()
}

/// Every `use` leaf: (name it binds or `path::*`, the path as written, is a glob).
fn use_leaves(tree: &syn::UseTree, path: &mut Vec<String>, out: &mut Vec<(String, String, bool)>) {
    match tree {
        syn::UseTree::Path(p) => {
            path.push(p.ident.to_string());
            use_leaves(&p.tree, path, out);
            path.pop();
        }
        syn::UseTree::Name(n) => {
            let name = n.ident.to_string();
            if name == "self" {
                if let Some(last) = path.last() {
                    out.push((last.clone(), path.join("::"), false));
                }
            } else {
                let mut full = path.clone();
                full.push(name.clone());
                out.push((name, full.join("::"), false));
            }
        }
        syn::UseTree::Rename(r) => {
            let mut full = path.clone();
            full.push(r.ident.to_string());
            out.push((
                r.rename.to_string(),
                format!("{} as {}", full.join("::"), r.rename),
                false,
            ));
        }
        syn::UseTree::Glob(_) => {
            let mut full = path.clone();
            full.push("*".into());
            let p = full.join("::");
            out.push((p.clone(), p, true));
        }
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, path, out);
            }
        }
    }
}

fn use_line(u: &syn::ItemUse, path: &str) -> String {
    let vis = &u.vis;
    let vis = tidy_tokens(quote!(#vis));
    let colon = if u.leading_colon.is_some() { "::" } else { "" };
    if vis.is_empty() {
        format!("use {colon}{path};")
    } else {
        format!("{vis} use {colon}{path};")
    }
}

/// The names of the types declared private at one level.
fn private_types(items: &[syn::Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|i| match i {
            syn::Item::Struct(s) if vis_rank(&s.vis) == 0 => Some(s.ident.to_string()),
            syn::Item::Enum(e) if vis_rank(&e.vis) == 0 => Some(e.ident.to_string()),
            syn::Item::Union(u) if vis_rank(&u.vis) == 0 => Some(u.ident.to_string()),
            syn::Item::Type(t) if vis_rank(&t.vis) == 0 => Some(t.ident.to_string()),
            syn::Item::Trait(t) if vis_rank(&t.vis) == 0 => Some(t.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// The entries of a module and its type aliases (`prefix`ed alias → `prefix`ed type).
fn collect(
    items: &[syn::Item],
    prefix: &str,
    exported: bool,
    out: &mut Vec<Entry>,
    aliases: &mut BTreeMap<String, String>,
) {
    let private = private_types(items);
    let mut push =
        |name: String, kind: &'static str, vis: u8, sig, display, owner: Option<Owner>| {
            // The items of an impl of a private type are not the module's API.
            let public_type = owner.as_ref().map_or(true, |o| !private.contains(&o.ty));
            out.push(Entry {
                name,
                kind,
                vis,
                sig,
                display,
                exported: exported && vis > 0 && public_type,
                owner,
            })
        };
    let mut nested = Vec::new();
    for item in items {
        match item {
            syn::Item::Fn(f) => {
                let (vis, sig) = (&f.vis, &f.sig);
                push(
                    format!("{prefix}{}", sig.ident),
                    "fn",
                    vis_rank(vis),
                    norm_sig(sig),
                    tidy_tokens(quote!(#vis #sig)),
                    None,
                );
            }
            syn::Item::Struct(s) => {
                let (vis, ident, g) = (&s.vis, &s.ident, &s.generics);
                push(
                    format!("{prefix}{ident}"),
                    "struct",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis struct #ident #g)),
                    None,
                );
            }
            syn::Item::Enum(e) => {
                let (vis, ident, g) = (&e.vis, &e.ident, &e.generics);
                push(
                    format!("{prefix}{ident}"),
                    "enum",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis enum #ident #g)),
                    None,
                );
            }
            syn::Item::Union(u) => {
                let (vis, ident, g) = (&u.vis, &u.ident, &u.generics);
                push(
                    format!("{prefix}{ident}"),
                    "union",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis union #ident #g)),
                    None,
                );
            }
            syn::Item::Type(t) => {
                let (vis, ident, g, ty) = (&t.vis, &t.ident, &t.generics, &t.ty);
                if let syn::Type::Path(_) = &**ty {
                    aliases.insert(
                        format!("{prefix}{ident}"),
                        format!("{prefix}{}", type_name(ty)),
                    );
                }
                push(
                    format!("{prefix}{ident}"),
                    "type",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis type #ident #g = #ty)),
                    None,
                );
            }
            syn::Item::Const(c) => {
                let (vis, ident, ty) = (&c.vis, &c.ident, &c.ty);
                push(
                    format!("{prefix}{ident}"),
                    "const",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis const #ident: #ty)),
                    None,
                );
            }
            syn::Item::Static(s) => {
                let (vis, m, ident, ty) = (&s.vis, &s.mutability, &s.ident, &s.ty);
                push(
                    format!("{prefix}{ident}"),
                    "static",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis static #m #ident: #ty)),
                    None,
                );
            }
            syn::Item::Trait(t) => {
                let (vis, ident, g) = (&t.vis, &t.ident, &t.generics);
                push(
                    format!("{prefix}{ident}"),
                    "trait",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis trait #ident #g)),
                    None,
                );
            }
            syn::Item::Macro(m) => {
                if let Some(ident) = &m.ident {
                    let exported = m.attrs.iter().any(|a| a.path().is_ident("macro_export"));
                    push(
                        format!("{prefix}{ident}"),
                        "macro",
                        if exported { 3 } else { 0 },
                        None,
                        format!("macro_rules! {ident}"),
                        None,
                    );
                }
            }
            syn::Item::Mod(m) => {
                let (vis, ident) = (&m.vis, &m.ident);
                push(
                    format!("{prefix}{ident}"),
                    "mod",
                    vis_rank(vis),
                    None,
                    tidy_tokens(quote!(#vis mod #ident)),
                    None,
                );
                if let Some((_, inner)) = &m.content {
                    nested.push((inner, format!("{prefix}{ident}::"), vis_rank(vis) > 0));
                }
            }
            syn::Item::Use(u) => {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                for (name, path, _) in leaves {
                    push(
                        format!("{prefix}{name}"),
                        "use",
                        vis_rank(&u.vis),
                        None,
                        use_line(u, &path),
                        None,
                    );
                }
            }
            syn::Item::Impl(im) => {
                let ty = type_name(&im.self_ty);
                let tr = im.trait_.as_ref().map(|(_, p, _)| last_ident(p));
                let owner = |member: Option<String>| Owner {
                    prefix: prefix.to_string(),
                    ty: ty.clone(),
                    tr: tr.clone(),
                    member,
                };
                if let Some((_, path, _)) = &im.trait_ {
                    let self_ty = &im.self_ty;
                    let o = owner(None);
                    push(
                        o.name_with(&ty),
                        "impl",
                        3,
                        None,
                        tidy_tokens(quote!(impl #path for #self_ty)),
                        Some(o),
                    );
                }
                for ii in &im.items {
                    let (ident, kind, vis, sig, display) = match ii {
                        syn::ImplItem::Fn(f) => {
                            let (vis, sig) = (&f.vis, &f.sig);
                            (
                                &sig.ident,
                                "fn",
                                vis_rank(vis),
                                tr.is_none().then(|| norm_sig(sig)).flatten(),
                                tidy_tokens(quote!(#vis #sig)),
                            )
                        }
                        syn::ImplItem::Const(c) => {
                            let (vis, ident, t) = (&c.vis, &c.ident, &c.ty);
                            (
                                ident,
                                "const",
                                vis_rank(vis),
                                None,
                                tidy_tokens(quote!(#vis const #ident: #t)),
                            )
                        }
                        syn::ImplItem::Type(t) => {
                            let (vis, ident, t2) = (&t.vis, &t.ident, &t.ty);
                            (
                                ident,
                                "type",
                                vis_rank(vis),
                                None,
                                tidy_tokens(quote!(#vis type #ident = #t2)),
                            )
                        }
                        _ => continue,
                    };
                    // Items of a trait impl are as visible as the trait.
                    let vis = if tr.is_some() { 3 } else { vis };
                    let o = owner(Some(ident.to_string()));
                    push(o.name_with(&ty), kind, vis, sig, display, Some(o));
                }
            }
            _ => {}
        }
    }
    for (inner, prefix, public) in nested {
        collect(inner, &prefix, exported && public, out, aliases);
    }
}

fn entries_of(text: &str) -> Option<(Vec<Entry>, BTreeMap<String, String>)> {
    let file = syn::parse_file(text).ok()?;
    let mut out = Vec::new();
    let mut aliases = BTreeMap::new();
    collect(&file.items, "", true, &mut out, &mut aliases);
    Some((out, aliases))
}

/// The visibility at the start of a scanned signature (`pub(crate) fn …`).
fn vis_of_signature(sig: &str) -> u8 {
    use syn::parse::Parser;
    let parse = |input: syn::parse::ParseStream| -> syn::Result<syn::Visibility> {
        let vis: syn::Visibility = input.parse()?;
        let _: TokenStream = input.parse()?;
        Ok(vis)
    };
    parse.parse_str(sig).map(|v| vis_rank(&v)).unwrap_or(3)
}

/// An API entry for an item of the ARM64 source's scan.
fn scan_entry(item: &ScanItem) -> Option<Entry> {
    let kind = match item.kind {
        ItemKind::Fn | ItemKind::Method => "fn",
        ItemKind::Struct => "struct",
        ItemKind::Enum => "enum",
        ItemKind::Union => "union",
        ItemKind::Trait => "trait",
        ItemKind::Type => "type",
        ItemKind::Const => "const",
        ItemKind::Static => "static",
        ItemKind::Macro => "macro",
        // Trait impls are in the draft, which keeps them with their items.
        ItemKind::Impl => return None,
    };
    let sig = (kind == "fn")
        .then(|| syn::parse_str::<syn::ForeignItemFn>(&format!("{};", item.signature)).ok())
        .flatten()
        .and_then(|f| norm_sig(&f.sig));
    let vis = if kind == "macro" {
        3
    } else {
        vis_of_signature(&item.signature)
    };
    Some(Entry {
        name: item.name.clone(),
        kind,
        vis,
        sig,
        display: item.signature.clone(),
        exported: vis > 0,
        owner: None,
    })
}

/// The module's API: the draft's exported items, then the scan's where the draft has
/// nothing of that name; grouped by name (cfg twins share one), in order.
fn api(draft: &str, scanned: &[ScanItem]) -> Vec<(String, Vec<Entry>)> {
    let (entries, _) = entries_of(draft).unwrap_or_default();
    let in_draft: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let extra: Vec<Entry> = scanned
        .iter()
        .filter(|i| !in_draft.contains(i.name.as_str()))
        .filter_map(scan_entry)
        .filter(|e| e.exported)
        .collect();
    let mut out: Vec<(String, Vec<Entry>)> = Vec::new();
    for e in entries.iter().filter(|e| e.exported).cloned().chain(extra) {
        match out.iter_mut().find(|(n, _)| *n == e.name) {
            Some((_, v)) => v.push(e),
            None => out.push((e.name.clone(), vec![e])),
        }
    }
    out
}

/// The module's API (see [`api`]) as a prompt lists it, one line per item: a method or
/// an item of an impl named with its type (`` `Gic::ack`: `pub fn ack(&self) -> u32` ``),
/// a trait impl as its `impl Trait for Type` line (its items are the trait's), every
/// other item (`pub mod`, `pub use`, types, functions, …) as its signature. Items under
/// cfg twins are listed once per distinct signature.
pub fn api_lines(draft: &str, scanned: &[ScanItem]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, entries) in api(draft, scanned) {
        for e in entries {
            let line = match &e.owner {
                Some(o) if o.tr.is_some() && o.member.is_some() => continue,
                Some(o) if o.member.is_some() => format!("`{name}`: `{}`", e.display),
                _ => format!("`{}`", e.display),
            };
            if !out.contains(&line) {
                out.push(line);
            }
        }
    }
    out
}

/// The names an entry of the answer answers to: its own, and the same item through
/// the answer's type aliases (`type A = B`: an impl of `B` is one of `A` and back).
fn names_through_aliases(e: &Entry, aliases: &BTreeMap<String, String>) -> Vec<String> {
    let mut names = vec![e.name.clone()];
    if let Some(o) = &e.owner {
        let full = format!("{}{}", o.prefix, o.ty);
        let mut types: Vec<String> = Vec::new();
        if let Some(target) = aliases.get(&full) {
            types.push(target.clone());
        }
        types.extend(
            aliases
                .iter()
                .filter(|(_, t)| **t == full)
                .map(|(a, _)| a.clone()),
        );
        for t in types {
            let short = t.strip_prefix(&o.prefix).unwrap_or(&t).to_string();
            names.push(o.name_with(&short));
        }
    }
    names
}

fn compatible(expected: &Entry, found: &Entry, aliases: &BTreeMap<String, String>) -> bool {
    let kind = expected.kind == found.kind
        || found.kind == "use"
        || expected.kind == "use"
        || (found.kind == "type" && matches!(expected.kind, "struct" | "enum" | "union"));
    let sig = match (&expected.sig, &found.sig) {
        (Some(a), Some(b)) => same_sig(a, b, aliases),
        _ => true,
    };
    kind && found.vis >= expected.vis && sig
}

/// (ported, stubbed) per item name.
fn statuses(items: &[ItemReport]) -> BTreeMap<&str, (usize, usize)> {
    let mut out: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in items {
        let e = out.entry(i.name.as_str()).or_default();
        match i.status {
            ItemStatus::Ported => e.0 += 1,
            ItemStatus::Stubbed => e.1 += 1,
            ItemStatus::LeftOut | ItemStatus::Missing => {}
        }
    }
    out
}

/// Compares `answer` (the model's text for the module's file) with the API of the
/// module whose engine draft is `draft` and whose ARM64 source has the public items
/// `scanned`.
pub fn judge(draft: &str, scanned: &[ScanItem], answer: &str) -> Judgement {
    let api = api(draft, scanned);
    let (found, aliases) = entries_of(answer).unwrap_or_default();
    let mut index: BTreeMap<String, Vec<&Entry>> = BTreeMap::new();
    for e in &found {
        for n in names_through_aliases(e, &aliases) {
            index.entry(n).or_default().push(e);
        }
    }
    let draft_items = items_of(draft);
    let answer_items = items_of(answer);
    let (d_status, a_status) = (statuses(&draft_items), statuses(&answer_items));
    let mut j = Judgement::default();
    for (name, expected) in api {
        let shortfall = |found: Option<String>| Shortfall {
            name: name.clone(),
            expected: expected[0].display.clone(),
            found,
        };
        let Some(candidates) = index.get(&name) else {
            j.missing.push(shortfall(None));
            continue;
        };
        let Some(hit) = candidates
            .iter()
            .find(|c| expected.iter().any(|e| compatible(e, c, &aliases)))
        else {
            j.changed
                .push(shortfall(Some(format!("`{}`", candidates[0].display))));
            continue;
        };
        let draft_ported = d_status.get(name.as_str()).map_or(0, |s| s.0);
        let (ported, stubbed) = a_status.get(hit.name.as_str()).copied().unwrap_or_default();
        if draft_ported > 0 && ported == 0 && stubbed > 0 {
            j.changed.push(shortfall(Some(STUB_FOR_BODY.into())));
        }
    }
    // Private helpers the answer keeps are its business, but not as stubs of what the
    // draft has working.
    for name in lowered_items(&draft_items, &answer_items) {
        if j.changed.iter().all(|c| c.name != name) && j.missing.iter().all(|m| m.name != name) {
            j.changed.push(Shortfall {
                name: name.to_string(),
                expected: "the draft's working body".into(),
                found: Some(STUB_FOR_BODY.into()),
            });
        }
    }
    j
}

/// The public items of the ARM64 source (`scanned`) that `text` has nothing of that
/// name for (through its type aliases too): `(name, the item as the source has it)`.
pub fn absent_from(text: &str, scanned: &[ScanItem]) -> Vec<(String, String)> {
    judge(text, scanned, text)
        .missing
        .into_iter()
        .map(|s| (s.name, s.expected))
        .collect()
}

const STUB_FOR_BODY: &str = "a stub (`unimplemented!`/`todo!`) where the draft has a working body";

/// The items `text` stubs that the draft has working more often (a cfg twin the text
/// drops is not one of them).
fn lowered_items<'a>(draft: &'a [ItemReport], text: &[ItemReport]) -> Vec<&'a str> {
    let (d, t) = (statuses(draft), statuses(text));
    d.into_iter()
        .filter(|(name, (dp, _))| t.get(name).is_some_and(|(tp, ts)| *ts > 0 && tp < dp))
        .map(|(name, _)| name)
        .collect()
}

/// Whether `text` lowers the draft's coverage: a stub where the draft has a working
/// item of that name, or a text that does not parse.
pub fn lowers(draft: &str, text: &str) -> bool {
    let parses = syn::parse_file(text).is_ok();
    proc_macro2::extra::invalidate_current_thread_spans();
    !parses || !lowered_items(&items_of(draft), &items_of(text)).is_empty()
}

/// The result of [`merge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The merged file.
    pub text: String,
    /// Names of the items taken from the draft.
    pub kept_from_draft: Vec<String>,
    /// The merge would have lowered the ported count or did not parse: the draft whole.
    pub whole_draft: bool,
}

/// The number of ported items named `name` (with `nested`: also those inside it).
fn ported(items: &[ItemReport], name: &str, nested: bool) -> usize {
    items
        .iter()
        .filter(|i| i.status == ItemStatus::Ported)
        .filter(|i| {
            i.name == name
                || (nested
                    && i.name
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with("::")))
        })
        .count()
}

fn span_text<'a>(text: &'a str, node: &impl Spanned) -> &'a str {
    text.get(node.span().byte_range()).unwrap_or_default()
}

/// A node's text with the indentation of the line it starts on (when only whitespace
/// precedes it there).
fn indented(text: &str, node: &impl Spanned) -> String {
    let start = node.span().byte_range().start.min(text.len());
    let line = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let indent = text.get(line..start).unwrap_or_default();
    let indent = if indent.trim().is_empty() { indent } else { "" };
    format!("{indent}{}", span_text(text, node))
}

/// Adds every identifier of `text` (a token stream) to `out`.
pub(super) fn idents(text: &str, out: &mut BTreeSet<String>) {
    fn walk(ts: TokenStream, out: &mut BTreeSet<String>) {
        for tt in ts {
            match tt {
                TokenTree::Ident(i) => {
                    out.insert(i.to_string());
                }
                TokenTree::Group(g) => walk(g.stream(), out),
                _ => {}
            }
        }
    }
    if let Ok(ts) = text.parse::<TokenStream>() {
        walk(ts, out);
    }
}

/// The name of a named item other than an impl or a `use`.
fn unit_name(item: &syn::Item) -> Option<(String, bool)> {
    let (ident, nested) = match item {
        syn::Item::Fn(f) => (&f.sig.ident, false),
        syn::Item::Struct(s) => (&s.ident, false),
        syn::Item::Enum(e) => (&e.ident, false),
        syn::Item::Union(u) => (&u.ident, false),
        syn::Item::Type(t) => (&t.ident, false),
        syn::Item::Const(c) => (&c.ident, false),
        syn::Item::Static(s) => (&s.ident, false),
        syn::Item::Trait(t) => (&t.ident, true),
        syn::Item::Mod(m) => (&m.ident, true),
        syn::Item::Macro(m) => (m.ident.as_ref()?, false),
        _ => return None,
    };
    Some((ident.to_string(), nested))
}

fn impl_member_name(ii: &syn::ImplItem) -> Option<String> {
    match ii {
        syn::ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
        syn::ImplItem::Const(c) => Some(c.ident.to_string()),
        syn::ImplItem::Type(t) => Some(t.ident.to_string()),
        _ => None,
    }
}

struct MergeCx<'a> {
    draft: &'a str,
    draft_items: &'a [ItemReport],
    answer_items: &'a [ItemReport],
    /// The answer's type aliases (prefixed).
    aliases: &'a BTreeMap<String, String>,
    /// (start, end, replacement, order) in the answer's text.
    edits: Vec<(usize, usize, String, usize)>,
    kept: Vec<String>,
}

impl MergeCx<'_> {
    fn edit(&mut self, start: usize, end: usize, text: String) {
        let n = self.edits.len();
        self.edits.push((start, end, text, n));
    }

    /// The answer's canonical name of a (prefixed) type: through its alias, if any.
    fn canon(&self, ty: &str) -> String {
        self.aliases
            .get(ty)
            .cloned()
            .unwrap_or_else(|| ty.to_string())
    }

    fn level(
        &mut self,
        d_items: &[syn::Item],
        a_items: &[syn::Item],
        prefix: &str,
        indent: &str,
        insert_at: usize,
    ) {
        let draft = self.draft;
        let mut a_units: BTreeMap<String, Vec<&syn::Item>> = BTreeMap::new();
        let mut a_bound: BTreeSet<String> = BTreeSet::new();
        for item in a_items {
            if let Some((n, _)) = unit_name(item) {
                a_units.entry(n).or_default().push(item);
            } else if let syn::Item::Use(u) = item {
                let mut leaves = Vec::new();
                use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
                a_bound.extend(leaves.into_iter().map(|(n, _, _)| n));
            }
        }
        let mut d_units: Vec<(String, bool, Vec<&syn::Item>)> = Vec::new();
        for item in d_items {
            if let Some((n, nested)) = unit_name(item) {
                match d_units.iter_mut().find(|(m, _, _)| *m == n) {
                    Some((_, _, v)) => v.push(item),
                    None => d_units.push((n, nested, vec![item])),
                }
            }
        }
        let mut appended: Vec<String> = Vec::new();
        let mut carried = String::new();
        for (name, nested, d_list) in &d_units {
            let full = format!("{prefix}{name}");
            // A module inline in both: merged item by item.
            if let (Some(syn::Item::Mod(dm)), Some(Some(syn::Item::Mod(am)))) =
                (d_list.first(), a_units.get(name).map(|v| v.first()))
            {
                if let (Some((_, di)), Some((brace, ai))) = (&dm.content, &am.content) {
                    let at = brace.span.close().byte_range().start;
                    let inner = format!("{indent}    ");
                    self.level(di, ai, &format!("{full}::"), &inner, at);
                    continue;
                }
            }
            let d_texts: Vec<&str> = d_list.iter().map(|i| span_text(draft, *i)).collect();
            match a_units.get(name) {
                None if a_bound.contains(name) => {}
                None => {
                    appended.extend(d_list.iter().map(|i| indented(draft, *i)));
                    self.kept.push(full);
                }
                Some(a_list) => {
                    let dp = ported(self.draft_items, &full, *nested);
                    let ap = ported(self.answer_items, &full, *nested);
                    if ap < dp {
                        let first = a_list[0].span().byte_range();
                        self.edit(first.start, first.end, d_texts.join("\n\n"));
                        for other in &a_list[1..] {
                            let r = other.span().byte_range();
                            self.edit(r.start, r.end, String::new());
                        }
                        carried.push_str(&d_texts.join("\n"));
                        self.kept.push(full);
                    }
                }
            }
        }
        // Methods and associated items, per impl block of the draft.
        let a_impls: Vec<&syn::ItemImpl> = a_items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Impl(im) => Some(im),
                _ => None,
            })
            .collect();
        let key = |cx: &Self, im: &syn::ItemImpl| {
            (
                cx.canon(&format!("{prefix}{}", type_name(&im.self_ty))),
                im.trait_.as_ref().map(|(_, p, _)| last_ident(p)),
            )
        };
        for item in d_items {
            let syn::Item::Impl(dim) = item else { continue };
            let d_ty = type_name(&dim.self_ty);
            let tr = dim.trait_.as_ref().map(|(_, p, _)| last_ident(p));
            let owner = match &tr {
                Some(t) => format!("<{prefix}{d_ty} as {t}>"),
                None => format!("{prefix}{d_ty}"),
            };
            let k = key(self, dim);
            let matching: Vec<&syn::ItemImpl> = a_impls
                .iter()
                .copied()
                .filter(|a| key(self, a) == k)
                .collect();
            let mut missing: Vec<String> = Vec::new();
            for ii in &dim.items {
                let Some(m) = impl_member_name(ii) else {
                    continue;
                };
                let d_name = format!("{owner}::{m}");
                let found = matching.iter().find_map(|a| {
                    a.items
                        .iter()
                        .find(|x| impl_member_name(x).as_deref() == Some(m.as_str()))
                        .map(|x| (*a, x))
                });
                let text = span_text(draft, ii);
                match found {
                    None => {
                        missing.push(indented(draft, ii));
                        self.kept.push(d_name);
                    }
                    Some((a, x)) => {
                        let a_ty = type_name(&a.self_ty);
                        let a_name = match &tr {
                            Some(t) => format!("<{prefix}{a_ty} as {t}>::{m}"),
                            None => format!("{prefix}{a_ty}::{m}"),
                        };
                        if ported(self.answer_items, &a_name, false)
                            < ported(self.draft_items, &d_name, false)
                        {
                            let r = x.span().byte_range();
                            self.edit(r.start, r.end, text.to_string());
                            carried.push_str(text);
                            carried.push('\n');
                            self.kept.push(d_name);
                        }
                    }
                }
            }
            let body: String = missing.iter().map(|t| format!("{t}\n")).collect();
            carried.push_str(&body);
            match matching.first() {
                Some(a) if !missing.is_empty() => {
                    let at = a.brace_token.span.close().byte_range().start;
                    self.edit(at, at, format!("\n{body}"));
                }
                Some(_) => {}
                None if missing.is_empty() && !dim.items.is_empty() => {}
                None => {
                    let start = item.span().byte_range().start;
                    let open = dim.brace_token.span.open().byte_range().start;
                    let header = draft.get(start..open).unwrap_or_default().trim_end();
                    appended.push(format!("{indent}{header} {{\n{body}{indent}}}"));
                    if dim.items.is_empty() {
                        self.kept.push(owner);
                    }
                }
            }
        }
        // `use` lines: the draft's re-exports the answer lacks, and the imports the
        // carried items name.
        for t in &appended {
            carried.push_str(t);
            carried.push('\n');
        }
        let mut needed = BTreeSet::new();
        idents(&carried, &mut needed);
        let mut uses: Vec<String> = Vec::new();
        for item in d_items {
            let syn::Item::Use(u) = item else { continue };
            let mut leaves = Vec::new();
            use_leaves(&u.tree, &mut Vec::new(), &mut leaves);
            for (name, path, glob) in leaves {
                let public = vis_rank(&u.vis) > 0;
                let bound = a_bound.contains(&name) || a_units.contains_key(&name);
                let wanted = if glob {
                    public
                } else {
                    public || needed.contains(&name)
                };
                if wanted && !bound {
                    a_bound.insert(name.clone());
                    uses.push(use_line(u, &path));
                    if public {
                        self.kept.push(format!("{prefix}{name}"));
                    }
                }
            }
        }
        if appended.is_empty() && uses.is_empty() {
            return;
        }
        let mut block = format!(
            "\n{indent}// eterna-port: kept from the offline draft (the model's answer lacked them)\n"
        );
        for u in &uses {
            block.push_str(indent);
            block.push_str(u);
            block.push('\n');
        }
        for t in &appended {
            block.push('\n');
            block.push_str(t);
            block.push('\n');
        }
        self.edit(insert_at, insert_at, block);
    }
}

/// The answer with the draft's items wherever the answer falls short (see the module
/// docs). Never fewer ported items than the draft: if the merged text would have
/// fewer (or not parse), it is the draft.
pub fn merge(draft: &str, answer: &str) -> Merged {
    let draft_items = items_of(draft);
    let answer_items = items_of(answer);
    let whole = |draft_items: &[ItemReport]| {
        let mut kept: Vec<String> = Vec::new();
        for i in draft_items {
            if !kept.contains(&i.name) {
                kept.push(i.name.clone());
            }
        }
        Merged {
            text: draft.to_string(),
            kept_from_draft: kept,
            whole_draft: true,
        }
    };
    let (Ok(d), Ok(a)) = (syn::parse_file(draft), syn::parse_file(answer)) else {
        proc_macro2::extra::invalidate_current_thread_spans();
        return whole(&draft_items);
    };
    let (_, aliases) = entries_of(answer).unwrap_or_default();
    let mut cx = MergeCx {
        draft,
        draft_items: &draft_items,
        answer_items: &answer_items,
        aliases: &aliases,
        edits: Vec::new(),
        kept: Vec::new(),
    };
    cx.level(&d.items, &a.items, "", "", answer.len());
    let (mut edits, kept) = (cx.edits, cx.kept);
    drop((d, a));
    proc_macro2::extra::invalidate_current_thread_spans();
    // Back to front; inserts at one place keep their order.
    edits.sort_by_key(|e| std::cmp::Reverse((e.0, e.3)));
    let mut text = answer.to_string();
    for (start, end, with, _) in edits {
        if start <= end
            && end <= text.len()
            && text.is_char_boundary(start)
            && text.is_char_boundary(end)
        {
            text.replace_range(start..end, &with);
        }
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let parses = syn::parse_file(&text).is_ok();
    proc_macro2::extra::invalidate_current_thread_spans();
    let count = |v: &[ItemReport]| v.iter().filter(|i| i.status == ItemStatus::Ported).count();
    if !parses || count(&items_of(&text)) < count(&draft_items) {
        return whole(&draft_items);
    }
    Merged {
        text,
        kept_from_draft: kept,
        whole_draft: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUB: &str = "unimplemented!(\"eterna-port: `x` uses ARM64 y\")";

    fn draft() -> String {
        format!(
            "use core::sync::atomic::{{AtomicU32, Ordering}};\n\
             use super::fence::full;\n\n\
             /// The controller.\n\
             pub struct Gic {{\n    pub base: usize,\n}}\n\n\
             impl Gic {{\n    \
                 pub fn ack(&self) -> u32 {{\n        COUNT.load(Ordering::Relaxed)\n    }}\n\n    \
                 pub fn eoi(&self, intid: u32) {{\n        {STUB}\n    }}\n}}\n\n\
             static COUNT: AtomicU32 = AtomicU32::new(0);\n\n\
             pub const MAX_SLOTS: usize = 4;\n\n\
             fn helper() -> u32 {{\n    full();\n    7\n}}\n\n\
             pub fn enable(level: u8) -> u32 {{\n    helper() + level as u32\n}}\n\n\
             pub fn raise(intid: u32) -> Result<(), u32> {{\n    {STUB}\n}}\n"
        )
    }

    fn ported_count(text: &str) -> usize {
        items_of(text)
            .iter()
            .filter(|i| i.status == ItemStatus::Ported)
            .count()
    }

    fn names(v: &[Shortfall]) -> Vec<&str> {
        v.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn the_draft_keeps_its_own_contract() {
        let d = draft();
        assert!(judge(&d, &[], &d).clean());
        let m = merge(&d, &d);
        assert_eq!((m.text.as_str(), m.kept_from_draft.len()), (d.as_str(), 0));
    }

    #[test]
    fn a_missing_fn_and_a_changed_signature_are_named_with_the_expected_item() {
        let answer = "pub struct Gic { pub base: usize }\n\
             impl Gic {\n    pub fn ack(&self) -> u64 { 0 }\n    pub fn eoi(&self, id: u32) { let _ = id; }\n}\n\
             pub const MAX_SLOTS: usize = 1;\n\
             pub fn raise(intid: u32) -> Result<(), u32> { Err(intid) }\n";
        let j = judge(&draft(), &[], answer);
        assert_eq!(names(&j.missing), ["enable"]);
        assert_eq!(j.missing[0].expected, "pub fn enable(level: u8) -> u32");
        // A renamed parameter is not a change; another return type is.
        assert_eq!(names(&j.changed), ["Gic::ack"]);
        assert_eq!(j.changed[0].expected, "pub fn ack(&self) -> u32");
        assert_eq!(
            j.changed[0].found.as_deref(),
            Some("`pub fn ack(&self) -> u64`")
        );
        let msg = j.resend_message("src/arch/x86_64/gic.rs");
        assert!(
            msg.contains("- `enable`: `pub fn enable(level: u8) -> u32`")
                && msg.contains("`Gic::ack`: expected `pub fn ack(&self) -> u32`")
                && msg.contains("`src/arch/x86_64/gic.rs`"),
            "{msg}"
        );
        assert_eq!(j.report().missing, ["enable"]);
        assert!(j.report().broken());
    }

    #[test]
    fn narrower_visibility_and_another_kind_are_changes_aliases_and_reexports_are_not() {
        let answer = "pub(crate) struct Gic { pub base: usize }\n\
             impl Gic {\n    pub fn ack(&self) -> u32 { 1 }\n    pub fn eoi(&self, intid: u32) { let _ = intid; }\n}\n\
             pub static MAX_SLOTS: usize = 1;\n\
             pub use super::apic::enable;\n\
             pub fn raise(intid: u32) -> Result<(), u32> { Err(intid) }\n";
        let j = judge(&draft(), &[], answer);
        assert!(j.missing.is_empty(), "{j:?}");
        assert_eq!(names(&j.changed), ["Gic", "MAX_SLOTS"]);

        // A type alias stands for the struct, its impls and signatures for the alias.
        let d = "pub struct PowerFault(pub i64);\n\
             impl core::fmt::Display for PowerFault {\n    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { write!(f, \"{}\", self.0) }\n}\n\
             pub fn version() -> Result<u16, PowerFault> { Ok(1) }\n";
        let a = "pub struct CpuFault(pub i64);\npub type PowerFault = CpuFault;\n\
             impl core::fmt::Display for CpuFault {\n    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { write!(f, \"{}\", self.0) }\n}\n\
             pub fn version() -> Result<u16, CpuFault> { Ok(2) }\n";
        assert!(judge(d, &[], a).clean(), "{:?}", judge(d, &[], a));
    }

    #[test]
    fn private_helpers_are_the_answers_business_but_a_stub_for_a_body_is_not() {
        // Without `helper` and `COUNT`, with `Gic::ack` a stub although the draft has it.
        let answer = String::from(
            "pub struct Gic { pub base: usize }\n\
             impl Gic {\n    pub fn ack(&self) -> u32 { todo!() }\n    pub fn eoi(&self, intid: u32) { let _ = intid; }\n}\n\
             pub const MAX_SLOTS: usize = 1;\n\
             pub fn enable(level: u8) -> u32 { level as u32 }\n\
             pub fn raise(intid: u32) -> Result<(), u32> { Err(intid) }\n"
        );
        let j = judge(&draft(), &[], &answer);
        assert!(j.missing.is_empty(), "{j:?}");
        assert_eq!(names(&j.changed), ["Gic::ack"]);
        assert!(j.changed[0].found.as_deref().unwrap().contains("stub"));
        // A stub the draft has too is not a change.
        let draft_stub_kept = answer.replace("{ Err(intid) }", &format!("{{ {STUB} }}"));
        assert_eq!(
            names(&judge(&draft(), &[], &draft_stub_kept).changed),
            ["Gic::ack"]
        );
    }

    #[test]
    fn an_answer_may_drop_the_arm64_twin_of_an_item_edited_in_place() {
        let d = "#[cfg(target_arch = \"aarch64\")]\npub fn id() -> u32 { 1 }\n\
             #[cfg(target_arch = \"x86_64\")]\npub fn id() -> u32 { 2 }\n";
        let a = "pub fn id() -> u32 { 3 }\n";
        assert!(judge(d, &[], a).clean());
        assert!(!lowers(d, a));
        // A stub in its place is a change.
        let stubbed = "pub fn id() -> u32 { todo!() }\n";
        assert_eq!(names(&judge(d, &[], stubbed).changed), ["id"]);
        assert!(lowers(d, stubbed));
    }

    #[test]
    fn the_sources_public_items_count_where_the_draft_lacks_them() {
        let scanned = vec![
            ScanItem {
                kind: ItemKind::Fn,
                name: "enable".into(),
                signature: "pub fn enable(level: u8) -> u32".into(),
                line: 1,
            },
            ScanItem {
                kind: ItemKind::Method,
                name: "Gic::status".into(),
                signature: "pub fn status(&self) -> u32".into(),
                line: 2,
            },
            ScanItem {
                kind: ItemKind::Fn,
                name: "hidden".into(),
                signature: "fn hidden()".into(),
                line: 3,
            },
        ];
        let j = judge(&draft(), &scanned, &draft());
        assert_eq!(names(&j.missing), ["Gic::status"]);
        assert_eq!(j.missing[0].expected, "pub fn status(&self) -> u32");
    }

    #[test]
    fn merge_puts_missing_items_back_and_keeps_the_answers_helpers() {
        let answer = "use core::sync::atomic::AtomicU32;\n\n\
             pub struct Gic { pub base: usize }\n\n\
             impl Gic {\n    pub fn eoi(&self, intid: u32) { apic_write(intid) }\n}\n\n\
             fn apic_write(v: u32) { let _ = v; }\n\n\
             pub fn raise(intid: u32) -> Result<(), u32> { Err(intid) }\n";
        let m = merge(&draft(), answer);
        assert!(!m.whole_draft);
        let file = syn::parse_file(&m.text).expect("the merged text parses");
        // `ack` went back into the answer's `impl Gic`, not a new block.
        let impls: Vec<&syn::ItemImpl> = file
            .items
            .iter()
            .filter_map(|i| match i {
                syn::Item::Impl(im) => Some(im),
                _ => None,
            })
            .collect();
        assert_eq!(impls.len(), 1, "{}", m.text);
        assert_eq!(impls[0].items.len(), 2, "{}", m.text);
        // The answer's helper and its own `eoi` stay; the draft's free items are back
        // with the imports they use, without a second `AtomicU32`.
        for needle in [
            "fn apic_write(v: u32)",
            "pub fn eoi(&self, intid: u32) { apic_write(intid) }",
            "pub fn enable(level: u8) -> u32",
            "fn helper() -> u32",
            "static COUNT: AtomicU32",
            "use core::sync::atomic::Ordering;",
            "use super::fence::full;",
        ] {
            assert!(m.text.contains(needle), "{needle} missing:\n{}", m.text);
        }
        assert_eq!(m.text.matches("AtomicU32;").count(), 1, "{}", m.text);
        assert_eq!(
            m.kept_from_draft,
            ["COUNT", "MAX_SLOTS", "helper", "enable", "Gic::ack"]
        );
        assert!(ported_count(&m.text) >= ported_count(&draft()));
        assert!(judge(&draft(), &[], &m.text).clean(), "{}", m.text);
    }

    #[test]
    fn a_stub_never_replaces_a_working_body_and_a_body_replaces_a_stub() {
        let d = draft();
        // The answer stubs `enable` (working in the draft) and fills `raise` (a stub).
        let answer = d
            .replace("    helper() + level as u32\n", "    todo!()\n")
            .replace(&format!("{{\n    {STUB}\n}}"), "{\n    Err(intid)\n}");
        assert!(answer.contains("Err(intid)") && answer.contains("todo!()"));
        let m = merge(&d, &answer);
        assert!(m.text.contains("helper() + level as u32"), "{}", m.text);
        assert!(m.text.contains("Err(intid)"), "{}", m.text);
        assert!(!m.text.contains("todo!()"), "{}", m.text);
        assert_eq!(m.kept_from_draft, ["enable"]);
        assert_eq!(ported_count(&m.text), ported_count(&d) + 1);
        // The same for a method: the draft's `ack` body is kept.
        let answer = d.replace(
            "        COUNT.load(Ordering::Relaxed)\n",
            "        todo!()\n",
        );
        let m = merge(&d, &answer);
        assert_eq!(m.kept_from_draft, ["Gic::ack"]);
        assert_eq!(m.text, d);
    }

    #[test]
    fn a_missing_type_gets_its_methods_in_a_new_impl_block() {
        let d = "pub struct Timer;\n\
             impl<'a> Timer {\n    /// Arms it.\n    pub fn arm(&self, ticks: u64) -> u64 { ticks }\n}\n\
             impl Default for Timer {\n    fn default() -> Self { Timer }\n}\n\
             pub mod regs {\n    pub const CTL: u32 = 1;\n    pub const CVAL: u32 = 2;\n}\n";
        let answer =
            "pub mod regs {\n    pub const CTL: u32 = 1;\n}\n\npub fn frequency() -> u64 { 1 }\n";
        let j = judge(d, &[], answer);
        assert_eq!(
            names(&j.missing),
            [
                "Timer",
                "Timer::arm",
                "<Timer as Default>",
                "<Timer as Default>::default",
                "regs::CVAL"
            ]
        );
        let m = merge(d, answer);
        syn::parse_file(&m.text).unwrap();
        assert!(
            m.text.contains("impl<'a> Timer {\n    /// Arms it.\n    pub fn arm(&self, ticks: u64) -> u64 { ticks }\n}"),
            "{}",
            m.text
        );
        assert!(m.text.contains("impl Default for Timer {"), "{}", m.text);
        // Into the inline module the answer has.
        let regs = &m.text[..m.text.find("pub fn frequency").unwrap()];
        assert!(regs.contains("pub const CVAL: u32 = 2;"), "{}", m.text);
        assert!(m.text.contains("pub fn frequency() -> u64 { 1 }"));
        assert!(judge(d, &[], &m.text).clean(), "{}", m.text);
        assert!(ported_count(&m.text) >= ported_count(d));
    }

    #[test]
    fn merged_text_never_has_fewer_ported_items_than_the_draft() {
        let d = draft();
        let answers = [
            String::new(),
            "pub fn init() {}\n".to_string(),
            "pub fn enable(level: u8) -> u32 { todo!() }\nfn helper() -> u32 { todo!() }\n"
                .to_string(),
            // A name the answer imports instead of defining cannot be put back.
            "pub use super::other::enable;\npub use super::other::MAX_SLOTS;\n".to_string(),
            d.replace("pub struct Gic", "pub(crate) struct Gic"),
        ];
        for a in &answers {
            let m = merge(&d, a);
            assert!(syn::parse_file(&m.text).is_ok(), "{a}\n=>\n{}", m.text);
            assert!(
                ported_count(&m.text) >= ported_count(&d),
                "{a}\n=>\n{}",
                m.text
            );
            assert!(!lowers(&d, &m.text), "{a}\n=>\n{}", m.text);
        }
        // The answer with its items imported falls back to the draft whole.
        let m = merge(&d, &answers[3]);
        assert!(m.text.contains("pub use super::other::enable;") || m.whole_draft);
        assert!(lowers(&d, "pub fn enable(level: u8) -> u32 { todo!() }\n"));
        assert!(lowers(&d, "pub fn broken( {"));
    }
}
