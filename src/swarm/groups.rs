//! Item groups: a module whose port prompt is over the prompt budget (the
//! `prompt-budget` setting, in tokens) is sent as several requests, each asking for one
//! group of the module's items, and the answers are merged into the draft item by item.
//!
//! - **Tokens** are estimated, not counted: [`estimate_tokens`] is the number of
//!   characters divided by [`CHARS_PER_PROMPT_TOKEN`] (3), rounded up. Tokenizers of
//!   current models give 3–4 characters a token for Rust source and English; the lower
//!   figure errs on the side of a smaller prompt, so a prompt estimated within the
//!   budget is within it for the model too.
//! - **Units** are what a group holds: the draft's top-level items (a trait or an inline
//!   module whole, with the items inside it) and each member of an `impl` block
//!   (`Type::method`, `<Type as Trait>::item`), named as
//!   [`crate::engine::coverage::items_of`] and the API contract ([`super::contract`])
//!   name them, and the engine's left-out ARM64 code (`global_asm!`).
//! - **What is grouped**: the units the model must fill (the draft's `eterna-port` stubs
//!   and left-out code, [`super::prompts::stubs_of`]); a draft without any: all of its
//!   units. The other items stay as the draft has them.
//! - **Packing** ([`plan`]): every group's prompt repeats the shared context (the system
//!   prompt with the toolchain and concept map, the module's whole API, the draft's
//!   `use` lines and check); the units are packed greedily by size, largest first, into
//!   the first group with room (a unit's size: its draft text and its ARM64 source).
//!   Every group's prompt is then rendered and measured; a group over the budget is
//!   halved until each fits. A unit over the budget alone gets a group of its own, and a
//!   warning says so. The group prompt shows the draft trimmed to the group's units, the
//!   outline (signature) of the other units they name, and the ARM64 source of the
//!   group's units.
//! - **Judging** ([`judge`]): a group's answer is held to the API contract for that
//!   group's items only, and sent back once like a whole-module answer.
//! - **Merging** ([`splice`], [`fold`]): the accepted items of every group replace the
//!   draft's, item by item, where the answer's item is a real body (ported at least as
//!   often as the draft's, and ported); the private helpers and `use` lines they need
//!   come along. A group that failed, or an item the contract refused, keeps the draft's
//!   item. The module's file is written once, from the merged text, and counted from it.

use std::collections::BTreeSet;
use std::ops::Range;

use anyhow::Result;
use serde::Serialize;
use syn::spanned::Spanned;

use super::contract::{self, idents, ContractReport, Judgement};
use super::{FilesFrom, Task, TaskResult, TaskStatus};
use crate::engine::coverage::{items_of, ItemReport, ItemStatus, LEFT_OUT_MARKER};
use crate::llm::{Message, Usage};
use crate::workspace::type_name;

/// Characters per token assumed by the prompt budget (see [`estimate_tokens`]).
pub const CHARS_PER_PROMPT_TOKEN: usize = 3;

/// The estimated number of tokens of `text`: its characters divided by
/// [`CHARS_PER_PROMPT_TOKEN`], rounded up. An estimate on the safe side for source code
/// and English (tokenizers give about 3–4 characters a token), with no tokenizer to
/// ship or match to the model.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(CHARS_PER_PROMPT_TOKEN)
}

/// The estimated tokens of a prompt: every message's content.
pub fn prompt_tokens(messages: &[Message]) -> usize {
    messages.iter().map(|m| estimate_tokens(&m.content)).sum()
}

/// One group of a module's items: which part of the module a task asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The module's task id (`<module>#port`), the same for every group of the module.
    pub module_task: String,
    /// 1-based.
    pub index: usize,
    /// How many groups the module was sent as.
    pub count: usize,
    /// The items the group asks for, in the draft's order (`name`, `Type::method`,
    /// `<Type as Trait>::item`, `global_asm!`).
    pub items: Vec<String>,
    /// Those of `items` that hold other items (a trait, an inline module): `name::…`
    /// belongs to them.
    #[serde(skip)]
    pub nested: Vec<String>,
}

impl Group {
    /// The group's task id: `<module>#port.2of3`.
    pub fn task_id(&self) -> String {
        format!("{}.{}of{}", self.module_task, self.index, self.count)
    }

    /// Whether an API item (as the contract names it) is this group's to answer for.
    pub fn covers(&self, name: &str) -> bool {
        if self.items.iter().any(|i| i == name) {
            return true;
        }
        let under = |n: &String| {
            name.strip_prefix(n.as_str())
                .is_some_and(|r| r.starts_with("::"))
        };
        if self.nested.iter().any(under) {
            return true;
        }
        // A trait impl (`<T as Tr>`) is answered by every group with one of its items.
        name.starts_with('<')
            && !name.contains(">::")
            && self
                .items
                .iter()
                .any(|i| i.strip_prefix(name).is_some_and(|r| r.starts_with("::")))
    }

    /// The group's item that an API item belongs to (`None`: not this group's).
    pub fn unit_of<'a>(&'a self, name: &str) -> Option<&'a str> {
        self.items
            .iter()
            .find(|i| *i == name)
            .or_else(|| {
                self.nested.iter().find(|n| {
                    name.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with("::"))
                })
            })
            .map(String::as_str)
    }
}

// ---------------------------------------------------------------------------------
// Reading a file as units.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    /// A member of the file's impl block number `n`.
    Member(usize),
    /// The engine's marker of left-out ARM64 code (a comment block).
    LeftOut,
}

#[derive(Debug, Clone)]
struct Unit {
    name: String,
    /// Items inside it are its own (`name::…`): a trait or an inline module.
    nested: bool,
    place: Place,
    /// Byte range in the text it was read from (attributes and doc comments included).
    range: Range<usize>,
    /// The identifier other code names it by (a function's, a method's, a type's).
    ident: String,
    /// Its signature for a prompt: a function's without its body, a short item whole.
    outline: String,
}

#[derive(Debug, Clone)]
struct ImplBlock {
    /// (self type, trait) as names.
    key: (String, Option<String>),
    /// The text from the impl's start to its `{`.
    header: String,
    /// Where members are inserted: the start of the line of its closing brace.
    close: usize,
}

/// A `use` leaf: the name it binds (`*` for a glob, `_` for an anonymous import) and
/// the path that binds it (`a::b::c`, `a::b::c as d`, `a::*`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    name: String,
    path: String,
}

#[derive(Debug, Clone)]
struct UseItem {
    /// `pub `, `pub(crate) ` or empty.
    vis: String,
    leaves: Vec<Leaf>,
}

#[derive(Debug, Clone, Default)]
struct Layout {
    units: Vec<Unit>,
    impls: Vec<ImplBlock>,
    /// The file's inner attributes (doc comments left out), `use` and `extern crate`
    /// items and `mod x;` declarations, as written.
    head: Vec<String>,
    uses: Vec<UseItem>,
    /// Names the file binds at its top level: items and `use` leaves.
    bound: BTreeSet<String>,
    /// Paths of its glob and anonymous (`as _`) imports.
    imported: BTreeSet<String>,
    /// Where new `use` lines go: after the last `use` item, else before the first item.
    use_at: usize,
    /// Items that are neither units nor head (macro invocations, `extern` blocks).
    others: usize,
}

const OUTLINE_MAX_CHARS: usize = 600;

fn span_text<'a>(text: &'a str, node: &impl Spanned) -> &'a str {
    text.get(node.span().byte_range()).unwrap_or_default()
}

fn last_ident(path: &syn::Path) -> String {
    path.segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default()
}

fn use_leaves(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Leaf>) {
    let join = |prefix: &[String], last: &str| {
        let mut p = prefix.join("::");
        if !p.is_empty() && !p.ends_with(':') {
            p.push_str("::");
        }
        p.push_str(last);
        p
    };
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_leaves(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) if n.ident == "self" => {
            if let Some(last) = prefix.last() {
                out.push(Leaf {
                    name: last.clone(),
                    path: prefix.join("::"),
                });
            }
        }
        syn::UseTree::Name(n) => out.push(Leaf {
            name: n.ident.to_string(),
            path: join(prefix, &n.ident.to_string()),
        }),
        syn::UseTree::Rename(r) => out.push(Leaf {
            name: r.rename.to_string(),
            path: format!("{} as {}", join(prefix, &r.ident.to_string()), r.rename),
        }),
        syn::UseTree::Glob(_) => out.push(Leaf {
            name: "*".into(),
            path: join(prefix, "*"),
        }),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix, out);
            }
        }
    }
}

/// A function's text up to its body, with `{ … }` for the body.
fn fn_outline(text: &str, item: &impl Spanned, block: &syn::Block) -> String {
    let start = item.span().byte_range().start;
    let body = block.span().byte_range().start;
    let head = text.get(start..body).unwrap_or_default().trim_end();
    format!("{head} {{ … }}")
}

fn short_outline(text: &str) -> String {
    if text.len() <= OUTLINE_MAX_CHARS {
        return text.to_string();
    }
    let first = text.lines().next().unwrap_or_default().trim_end();
    format!("{first} … }}")
}

/// The start of the line `at` is on, when only whitespace precedes it there.
fn line_start(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    if text[start..at].trim().is_empty() {
        start
    } else {
        at
    }
}

fn read(text: &str) -> Option<Layout> {
    let file = syn::parse_file(text).ok();
    let layout = file.map(|file| read_file(text, &file));
    proc_macro2::extra::invalidate_current_thread_spans();
    layout
}

fn read_file(text: &str, file: &syn::File) -> Layout {
    let mut l = Layout::default();
    for a in &file.attrs {
        if !a.path().is_ident("doc") {
            l.head.push(span_text(text, a).to_string());
        }
    }
    l.use_at = file.items.first().map_or(text.len(), |i| {
        line_start(text, i.span().byte_range().start)
    });
    let top = |l: &mut Layout, name: String, nested: bool, item: &syn::Item, outline: String| {
        l.bound.insert(name.clone());
        l.units.push(Unit {
            ident: name.clone(),
            name,
            nested,
            place: Place::Top,
            range: item.span().byte_range(),
            outline,
        });
    };
    for item in &file.items {
        let item_text = span_text(text, item);
        let short = || short_outline(item_text);
        match item {
            syn::Item::Use(u) => {
                l.head.push(item_text.to_string());
                l.use_at = item.span().byte_range().end;
                let mut leaves = Vec::new();
                let mut prefix = Vec::new();
                if u.leading_colon.is_some() {
                    prefix.push(String::new());
                }
                use_leaves(&u.tree, &mut prefix, &mut leaves);
                for leaf in &leaves {
                    match leaf.name.as_str() {
                        "*" | "_" => {
                            l.imported.insert(leaf.path.clone());
                        }
                        n => {
                            l.bound.insert(n.to_string());
                        }
                    }
                }
                let vis = match &u.vis {
                    syn::Visibility::Inherited => String::new(),
                    v => format!("{} ", span_text(text, v)),
                };
                l.uses.push(UseItem { vis, leaves });
            }
            syn::Item::ExternCrate(c) => {
                l.head.push(item_text.to_string());
                l.bound.insert(
                    c.rename
                        .as_ref()
                        .map_or(c.ident.to_string(), |(_, r)| r.to_string()),
                );
            }
            syn::Item::Mod(m) if m.content.is_none() => {
                l.head.push(item_text.to_string());
                l.bound.insert(m.ident.to_string());
            }
            syn::Item::Mod(m) => top(&mut l, m.ident.to_string(), true, item, short()),
            syn::Item::Fn(f) => top(
                &mut l,
                f.sig.ident.to_string(),
                false,
                item,
                fn_outline(text, item, &f.block),
            ),
            syn::Item::Trait(t) => top(&mut l, t.ident.to_string(), true, item, short()),
            syn::Item::Struct(s) => top(&mut l, s.ident.to_string(), false, item, short()),
            syn::Item::Enum(e) => top(&mut l, e.ident.to_string(), false, item, short()),
            syn::Item::Union(u) => top(&mut l, u.ident.to_string(), false, item, short()),
            syn::Item::Type(t) => top(&mut l, t.ident.to_string(), false, item, short()),
            syn::Item::Const(c) => top(&mut l, c.ident.to_string(), false, item, short()),
            syn::Item::Static(s) => top(&mut l, s.ident.to_string(), false, item, short()),
            syn::Item::Macro(m) => match &m.ident {
                Some(i) => top(&mut l, i.to_string(), false, item, short()),
                None => {
                    // An invocation (`global_asm!(…)`): the counterpart of left-out code.
                    let name = format!("{}!", last_ident(&m.mac.path));
                    l.units.push(Unit {
                        ident: name.clone(),
                        name,
                        nested: false,
                        place: Place::Top,
                        range: item.span().byte_range(),
                        outline: short(),
                    });
                }
            },
            syn::Item::Impl(im) => {
                let ty = type_name(&im.self_ty);
                let tr = im.trait_.as_ref().map(|(_, p, _)| last_ident(p));
                let owner = match &tr {
                    Some(t) => format!("<{ty} as {t}>"),
                    None => ty.clone(),
                };
                let start = item.span().byte_range().start;
                let open = im.brace_token.span.open().byte_range().start;
                let close = im.brace_token.span.close().byte_range().start;
                let n = l.impls.len();
                l.impls.push(ImplBlock {
                    key: (ty.clone(), tr.clone()),
                    header: text
                        .get(start..open)
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                    close: line_start(text, close),
                });
                if im.items.is_empty() {
                    l.units.push(Unit {
                        name: owner.clone(),
                        nested: false,
                        place: Place::Top,
                        range: item.span().byte_range(),
                        ident: ty,
                        outline: item_text.to_string(),
                    });
                    continue;
                }
                for ii in &im.items {
                    let (ident, outline) = match ii {
                        syn::ImplItem::Fn(f) => {
                            (f.sig.ident.to_string(), fn_outline(text, ii, &f.block))
                        }
                        syn::ImplItem::Const(c) => {
                            (c.ident.to_string(), short_outline(span_text(text, ii)))
                        }
                        syn::ImplItem::Type(t) => {
                            (t.ident.to_string(), short_outline(span_text(text, ii)))
                        }
                        _ => continue,
                    };
                    l.units.push(Unit {
                        name: format!("{owner}::{ident}"),
                        nested: false,
                        place: Place::Member(n),
                        range: ii.span().byte_range(),
                        ident,
                        outline,
                    });
                }
            }
            _ => l.others += 1,
        }
    }
    // The engine's left-out code: a marker line and the commented-out original.
    let mut offset = 0;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let Some(rest) = line.trim_start().strip_prefix(LEFT_OUT_MARKER) else {
            offset += line.len();
            i += 1;
            continue;
        };
        let name = rest
            .split_once(' ')
            .map_or(rest, |(head, _)| head)
            .trim_end()
            .to_string();
        let start = offset;
        offset += line.len();
        i += 1;
        while i < lines.len() && lines[i].trim_start().starts_with("// ") {
            offset += lines[i].len();
            i += 1;
        }
        let end = text[..offset].trim_end().len();
        l.units.push(Unit {
            ident: name.clone(),
            name,
            nested: false,
            place: Place::LeftOut,
            range: start..end,
            outline: line.trim_end().to_string(),
        });
    }
    l.units.sort_by_key(|u| u.range.start);
    l
}

// ---------------------------------------------------------------------------------
// Planning the groups.
// ---------------------------------------------------------------------------------

/// What a group's prompt shows of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The items it asks for, in the draft's order.
    pub items: Vec<String>,
    /// Those of `items` that are the engine's stubs (or left-out code).
    pub stubs: Vec<String>,
    /// The draft trimmed to the group: its head (inner attributes, `use` lines), the
    /// group's items whole, the outline of the other items they name.
    pub draft: String,
    /// The ARM64 source of the group's items.
    pub source: String,
    /// Those of `items` that hold other items (see [`Group::nested`]).
    pub nested: Vec<String>,
    /// The group's items as the draft and the source have them (without the draft's
    /// head and outlines): what the concept map entries are chosen by.
    pub focus: String,
}

/// The groups of a module (see [`plan`]).
#[derive(Debug, Clone)]
pub struct Planned {
    /// Each group's part and its prompt.
    pub parts: Vec<(Part, Vec<Message>)>,
}

impl Planned {
    /// The group descriptions for the module's task `module_task`.
    pub fn groups(&self, module_task: &str) -> Vec<Group> {
        let count = self.parts.len();
        self.parts
            .iter()
            .enumerate()
            .map(|(i, (p, _))| Group {
                module_task: module_task.to_string(),
                index: i + 1,
                count,
                items: p.items.clone(),
                nested: p.nested.clone(),
            })
            .collect()
    }
}

/// A unit as the planner sees it: its draft unit(s) (cfg twins share a name) and size.
struct Slot {
    /// Indexes into the draft layout's units.
    units: Vec<usize>,
    /// Estimated tokens of its draft and source text.
    size: usize,
}

/// A file read as units, with its text.
struct Read<'a> {
    text: &'a str,
    layout: Layout,
}

impl Read<'_> {
    /// The text of unit `i` from the start of its line.
    fn unit_text(&self, i: usize) -> &str {
        let u = &self.layout.units[i];
        &self.text[line_start(self.text, u.range.start)..u.range.end]
    }

    /// The file trimmed: its head (with `head`), the units `whole` as written, the
    /// units `outlined` as their outline, members inside their impl's header; the
    /// number of units left out.
    fn excerpt(
        &self,
        head: bool,
        whole: &BTreeSet<usize>,
        outlined: &BTreeSet<usize>,
    ) -> (String, usize) {
        let l = &self.layout;
        let mut out = String::new();
        if head {
            for h in &l.head {
                out.push_str(h);
                out.push('\n');
            }
        }
        let mut open: Option<usize> = None;
        let mut hidden = 0usize;
        for (i, u) in l.units.iter().enumerate() {
            let text = if whole.contains(&i) {
                let t = self.unit_text(i);
                match u.place {
                    Place::Member(_) if !t.starts_with(char::is_whitespace) => format!("    {t}"),
                    _ => t.to_string(),
                }
            } else if outlined.contains(&i) {
                match u.place {
                    Place::Member(_) => format!("    {}", u.outline),
                    _ => u.outline.clone(),
                }
            } else {
                hidden += 1;
                continue;
            };
            match u.place {
                Place::Member(n) if open == Some(n) => {}
                Place::Member(n) => {
                    if open.take().is_some() {
                        out.push_str("}\n");
                    }
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&l.impls[n].header);
                    out.push_str(" {\n");
                    open = Some(n);
                }
                _ => {
                    if open.take().is_some() {
                        out.push_str("}\n");
                    }
                    if !out.is_empty() {
                        out.push('\n');
                    }
                }
            }
            out.push_str(&text);
            out.push('\n');
        }
        if open.is_some() {
            out.push_str("}\n");
        }
        (out, hidden + l.others)
    }
}

/// Renders a group's prompt: `(part, index, count)` (1-based index).
pub type RenderPart<'a> = dyn Fn(&Part, usize, usize) -> Result<Vec<Message>> + 'a;

/// Splits a module whose prompt is over `budget` tokens into groups of its items (see
/// the module docs). `render(part, index, count)` gives a group's prompt. `None`: the
/// draft does not parse, or there is nothing to split: the module goes as one request
/// (`warnings` say why, and name the items over the budget alone).
pub fn plan(
    draft: &str,
    source: &str,
    budget: usize,
    render: &RenderPart<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<Planned>> {
    let Some(layout) = read(draft) else {
        warnings.push("its draft does not parse: sent whole".into());
        return Ok(None);
    };
    let d = Read {
        text: draft,
        layout,
    };
    let s = Read {
        text: source,
        layout: read(source).unwrap_or_default(),
    };
    // The units to ask for: the stubs, else everything.
    let stubs = super::prompts::stubs_of(draft);
    let is_stub = |u: &Unit| {
        stubs.iter().any(|s| {
            *s == u.name
                || (u.nested
                    && s.strip_prefix(u.name.as_str())
                        .is_some_and(|r| r.starts_with("::")))
        })
    };
    let units = &d.layout.units;
    let mut wanted: Vec<usize> = (0..units.len()).filter(|&i| is_stub(&units[i])).collect();
    if wanted.is_empty() {
        wanted = (0..units.len()).collect();
    }
    let mut slots: Vec<Slot> = Vec::new();
    for i in wanted {
        let size = estimate_tokens(d.unit_text(i));
        match slots
            .iter_mut()
            .find(|s| units[s.units[0]].name == units[i].name)
        {
            Some(slot) => {
                slot.units.push(i);
                slot.size += size;
            }
            None => {
                let name = &units[i].name;
                let source_size: usize = (0..s.layout.units.len())
                    .filter(|&j| s.layout.units[j].name == *name)
                    .map(|j| estimate_tokens(s.unit_text(j)))
                    .sum();
                slots.push(Slot {
                    units: vec![i],
                    size: size + source_size + estimate_tokens(name) + 2,
                });
            }
        }
    }
    if slots.is_empty() {
        warnings.push("its draft has no items to split: sent whole".into());
        return Ok(None);
    }
    let part_of = |group: &[usize]| part(&d, &s, &slots, group, &stubs);
    let shared = prompt_tokens(&render(&part_of(&[]), 1, 1)?);
    let room = budget.saturating_sub(shared);
    if room == 0 {
        warnings.push(format!(
            "its shared context alone (system prompt, API, the draft's `use` lines and check) is about {shared} tokens, over the prompt budget of {budget}: each item is sent alone"
        ));
    }
    // First fit, largest first.
    let mut order: Vec<usize> = (0..slots.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(slots[i].size));
    let mut packed: Vec<(Vec<usize>, usize)> = Vec::new();
    for i in order {
        let size = slots[i].size;
        match packed.iter_mut().find(|(_, used)| used + size <= room) {
            Some((g, used)) => {
                g.push(i);
                *used += size;
            }
            None => packed.push((vec![i], size)),
        }
    }
    let mut groups: Vec<Vec<usize>> = packed
        .into_iter()
        .map(|(mut g, _)| {
            g.sort();
            g
        })
        .collect();
    groups.sort();
    // Measured: a group over the budget (the outlines of the items it names count
    // too) is halved until every group fits or holds one item.
    let rendered = loop {
        let count = groups.len();
        let mut out = Vec::with_capacity(count);
        let mut split = None;
        for (i, g) in groups.iter().enumerate() {
            let p = part_of(g);
            let msgs = render(&p, i + 1, count)?;
            if prompt_tokens(&msgs) > budget && g.len() > 1 {
                split = Some(i);
                break;
            }
            out.push((p, msgs));
        }
        match split {
            Some(i) => {
                let g = groups.remove(i);
                let (a, b) = g.split_at(g.len() / 2);
                groups.insert(i, b.to_vec());
                groups.insert(i, a.to_vec());
            }
            None => break out,
        }
    };
    for (p, msgs) in &rendered {
        let tokens = prompt_tokens(msgs);
        if tokens > budget {
            warnings.push(format!(
                "`{}` alone needs a prompt of about {tokens} tokens, over the prompt budget of {budget}: it is sent in a group of its own",
                p.items.join("`, `")
            ));
        }
    }
    Ok(Some(Planned { parts: rendered }))
}

/// The part of the module a group of slots shows.
fn part(d: &Read<'_>, s: &Read<'_>, slots: &[Slot], group: &[usize], stubs: &[String]) -> Part {
    let units = &d.layout.units;
    let mine: BTreeSet<usize> = group
        .iter()
        .flat_map(|&i| slots[i].units.iter().copied())
        .collect();
    let mut items: Vec<String> = Vec::new();
    let mut nested: Vec<String> = Vec::new();
    for &i in &mine {
        let u = &units[i];
        if !items.contains(&u.name) {
            items.push(u.name.clone());
            if u.nested {
                nested.push(u.name.clone());
            }
        }
    }
    // The ARM64 source of the group's items.
    let in_source: BTreeSet<usize> = (0..s.layout.units.len())
        .filter(|&j| items.contains(&s.layout.units[j].name))
        .collect();
    let (source, _) = s.excerpt(false, &in_source, &BTreeSet::new());
    // The draft: head, the group's units whole, the outline of the units they name.
    let mut names = BTreeSet::new();
    idents(&source, &mut names);
    let mut focus = source.clone();
    for &i in &mine {
        focus.push('\n');
        focus.push_str(d.unit_text(i));
        idents(d.unit_text(i), &mut names);
        if let Place::Member(n) = units[i].place {
            names.insert(d.layout.impls[n].key.0.clone());
        }
    }
    let outlined: BTreeSet<usize> = (0..units.len())
        .filter(|i| !mine.contains(i))
        .filter(|&i| units[i].place != Place::LeftOut && names.contains(&units[i].ident))
        .collect();
    let (mut draft, hidden) = d.excerpt(true, &mine, &outlined);
    if hidden > 0 && !group.is_empty() {
        draft.push_str(&format!(
            "\n// … {hidden} other item(s) of the draft, not shown: they stay as they are\n"
        ));
    }
    let stubs = items
        .iter()
        .filter(|i| {
            stubs.iter().any(|s| {
                s == *i
                    || nested.contains(i)
                        && s.strip_prefix(i.as_str())
                            .is_some_and(|r| r.starts_with("::"))
            })
        })
        .cloned()
        .collect();
    Part {
        items,
        stubs,
        draft: draft.trim_end().to_string(),
        source: source.trim_end().to_string(),
        nested,
        focus,
    }
}

// ---------------------------------------------------------------------------------
// Judging and merging.
// ---------------------------------------------------------------------------------

/// A group's answer held to the API contract for the group's items only.
pub fn judge(
    draft: &str,
    api: &[crate::workspace::Item],
    answer: &str,
    group: &Group,
) -> Judgement {
    let mut j = contract::judge(draft, api, answer);
    j.missing.retain(|s| group.covers(&s.name));
    j.changed.retain(|s| group.covers(&s.name));
    j
}

/// The message that sends a group's answer back: its shortfalls, and what to answer.
pub fn resend_message(j: &Judgement, target: &str, group: &Group) -> String {
    let mut s = format!(
        "Your answer for part {} of {} of `{target}` does not keep the module's API: the rest of the workspace uses these items with exactly these signatures.\n",
        group.index, group.count
    );
    s.push_str(&j.shortfall_lines());
    s.push_str(&format!(
        "\nAnswer again with only this part's items ({}) for `{target}`, in one ```rust block whose info string names that path: each with its signature and visibility and a real x86_64 body, methods inside an `impl` block of their type, with the `use` lines and helpers they need.",
        group
            .items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
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

/// The result of [`splice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    /// The merged file.
    pub text: String,
    /// The items taken from the answer.
    pub taken: Vec<String>,
}

/// `base` with the items `accepted` taken from `answer` where the answer's item is a
/// real body (ported, and at least as often as `base`'s), with the answer's private
/// helpers and `use` lines that `base` lacks. Names in `reserved` (the draft's other
/// items) are never taken from the answer unless accepted. A text that does not parse
/// (either one, or the result) leaves `base` as it is.
pub fn splice(
    base: &str,
    answer: &str,
    accepted: &[String],
    reserved: &BTreeSet<String>,
) -> Spliced {
    let unchanged = || Spliced {
        text: base.to_string(),
        taken: Vec::new(),
    };
    let (Some(b), Some(a)) = (read(base), read(answer)) else {
        return unchanged();
    };
    let (b_items, a_items) = (items_of(base), items_of(answer));
    // (start, end, text, order)
    let mut edits: Vec<(usize, usize, String, usize)> = Vec::new();
    let edit = |edits: &mut Vec<(usize, usize, String, usize)>, r: Range<usize>, t: String| {
        let n = edits.len();
        edits.push((r.start, r.end, t, n));
    };
    let mut appended: Vec<String> = Vec::new();
    // (impl key, header, members) of impl blocks `base` lacks.
    type NewImpl = ((String, Option<String>), String, Vec<String>);
    let mut new_impls: Vec<NewImpl> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    let mut bound = b.bound.clone();
    let mut replaced: BTreeSet<usize> = BTreeSet::new();
    let mut inserted: BTreeSet<String> = BTreeSet::new();
    for au in &a.units {
        let text = answer[au.range.clone()].to_string();
        // An invocation (`global_asm!`) may come several times under one name.
        let invocation = au.name.ends_with('!');
        if au.place == Place::LeftOut {
            continue;
        }
        if accepted.contains(&au.name) {
            let real = invocation || {
                let ap = ported(&a_items, &au.name, au.nested);
                ap > 0 && ap >= ported(&b_items, &au.name, au.nested)
            };
            if !real {
                continue;
            }
            if !taken.contains(&au.name) {
                taken.push(au.name.clone());
            }
            // The next unit of that name in `base` not replaced yet (cfg twins pair up).
            if let Some((i, bu)) = b
                .units
                .iter()
                .enumerate()
                .find(|(i, bu)| bu.name == au.name && !replaced.contains(i))
            {
                replaced.insert(i);
                edit(&mut edits, bu.range.clone(), text);
                continue;
            }
            if !invocation && !inserted.insert(au.name.clone()) {
                continue;
            }
        } else if reserved.contains(&au.name)
            || b.units.iter().any(|bu| bu.name == au.name)
            || (au.place == Place::Top && !invocation && bound.contains(&au.name))
            || (!invocation && !inserted.insert(au.name.clone()))
        {
            // Another group's item, or one the file has: not this answer's to change.
            continue;
        }
        // Not in `base`: an item the draft lacked, or the answer's helper.
        match au.place {
            Place::Top | Place::LeftOut => {
                if !invocation {
                    bound.insert(au.name.clone());
                }
                appended.push(text);
            }
            Place::Member(n) => {
                let key = a.impls[n].key.clone();
                match b.impls.iter().find(|im| im.key == key) {
                    Some(im) => edit(&mut edits, im.close..im.close, format!("    {text}\n")),
                    None => match new_impls.iter_mut().find(|(k, _, _)| *k == key) {
                        Some((_, _, members)) => members.push(text),
                        None => new_impls.push((key, a.impls[n].header.clone(), vec![text])),
                    },
                }
            }
        }
    }
    if taken.is_empty() && appended.is_empty() && new_impls.is_empty() && edits.is_empty() {
        return unchanged();
    }
    // The answer's imports that `base` lacks.
    let mut uses = String::new();
    let mut imported = b.imported.clone();
    for u in &a.uses {
        for leaf in &u.leaves {
            let new = match leaf.name.as_str() {
                "*" | "_" => imported.insert(leaf.path.clone()),
                n => bound.insert(n.to_string()),
            };
            if new {
                uses.push_str(&format!("{}use {};\n", u.vis, leaf.path));
            }
        }
    }
    if !uses.is_empty() {
        let at = b.use_at;
        let text = if at == 0 || base[..at].ends_with('\n') {
            uses
        } else {
            format!("\n{}", uses.trim_end())
        };
        edit(&mut edits, at..at, text);
    }
    let mut tail = String::new();
    for t in &appended {
        tail.push('\n');
        tail.push_str(t);
        tail.push('\n');
    }
    for (_, header, members) in &new_impls {
        tail.push_str(&format!("\n{header} {{\n"));
        for m in members {
            tail.push_str(&format!("    {m}\n"));
        }
        tail.push_str("}\n");
    }
    if !tail.is_empty() {
        let end = base.len();
        let sep = if base.ends_with('\n') { "" } else { "\n" };
        edit(&mut edits, end..end, format!("{sep}{tail}"));
    }
    edits.sort_by_key(|e| std::cmp::Reverse((e.0, e.3)));
    let mut text = base.to_string();
    for (start, end, with, _) in edits {
        if start <= end && end <= text.len() {
            text.replace_range(start..end, &with);
        }
    }
    let parses = syn::parse_file(&text).is_ok();
    proc_macro2::extra::invalidate_current_thread_spans();
    if !parses {
        return unchanged();
    }
    Spliced { text, taken }
}

/// The names of a draft's units (the items a group answer may not add as helpers).
pub fn unit_names(draft: &str) -> BTreeSet<String> {
    read(draft)
        .map(|l| l.units.into_iter().map(|u| u.name).collect())
        .unwrap_or_default()
}

/// The results of a run with one result per module: the results of a module's group
/// tasks merged into one (the module's task id, its draft with every group's accepted
/// items, see the module docs). `results[i]` is the result of `tasks[i]`; the results
/// of other tasks pass through.
pub fn fold(tasks: &[Task], results: Vec<TaskResult>) -> Vec<TaskResult> {
    if tasks.iter().all(|t| t.group.is_none()) {
        return results;
    }
    let mut out: Vec<TaskResult> = Vec::new();
    let mut pending: Vec<(&Task, TaskResult)> = Vec::new();
    let flush = |pending: &mut Vec<(&Task, TaskResult)>, out: &mut Vec<TaskResult>| {
        if !pending.is_empty() {
            out.push(fold_module(std::mem::take(pending)));
        }
    };
    for (t, r) in tasks.iter().zip(results) {
        match &t.group {
            Some(g) => {
                if pending.first().is_some_and(|(p, _)| {
                    p.group.as_ref().map(|pg| &pg.module_task) != Some(&g.module_task)
                }) {
                    flush(&mut pending, &mut out);
                }
                pending.push((t, r));
            }
            None => {
                flush(&mut pending, &mut out);
                out.push(r);
            }
        }
    }
    flush(&mut pending, &mut out);
    out
}

fn push_unique(v: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
}

fn fold_module(parts: Vec<(&Task, TaskResult)>) -> TaskResult {
    let (first, _) = parts[0];
    let group = first.group.as_ref().expect("a group task");
    let (target, draft) = first
        .draft
        .first()
        .map(|(rel, text)| (rel.clone(), text.clone()))
        .unwrap_or_default();
    let reserved = unit_names(&draft);
    let mut text = draft.clone();
    let mut extra: Vec<(String, String)> = Vec::new();
    let mut agents: Vec<String> = Vec::new();
    let mut report = ContractReport::default();
    let mut notes: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let (mut attempts, mut requests, mut hits) = (0, 0, 0);
    let mut usage = Usage::default();
    let mut latency = std::time::Duration::ZERO;
    let (mut failed, mut cancelled, mut fatal, mut clean) = (false, false, false, true);
    let mut any_taken = false;
    for (t, r) in &parts {
        let g = t.group.as_ref().expect("a group task");
        let label = format!("part {} of {}", g.index, g.count);
        attempts += r.attempts;
        requests += r.requests;
        hits += r.cache_hits;
        usage.add(&r.usage);
        latency = latency.max(r.latency);
        fatal |= r.fatal;
        if !r.agent.is_empty() && !agents.contains(&r.agent) {
            agents.push(r.agent.clone());
        }
        match r.status {
            TaskStatus::Cancelled => cancelled = true,
            TaskStatus::Failed => failed = true,
            TaskStatus::Done => {}
        }
        if let Some(e) = &r.error {
            errors.push(format!("{label} ({}): {e}", quoted(&g.items)));
        }
        let answered = r.status == TaskStatus::Done && r.files_from != FilesFrom::Draft;
        if !answered {
            clean = false;
            push_unique(&mut report.kept_from_draft, g.items.iter().cloned());
            continue;
        }
        // The group's items the contract refused keep the draft's.
        let refused: BTreeSet<&str> = r
            .contract
            .iter()
            .flat_map(|c| c.missing.iter().chain(&c.changed))
            .filter_map(|n| g.unit_of(n))
            .collect();
        let accepted: Vec<String> = g
            .items
            .iter()
            .filter(|i| !refused.contains(i.as_str()))
            .cloned()
            .collect();
        if let Some(c) = &r.contract {
            clean = false;
            report.resent |= c.resent;
            push_unique(&mut report.missing, c.missing.iter().cloned());
            push_unique(&mut report.changed, c.changed.iter().cloned());
            if let Some(n) = &c.note {
                notes.push(format!("{label}: {n}"));
            }
        }
        for (rel, t) in &r.files {
            if *rel == target {
                let s = splice(&text, t, &accepted, &reserved);
                any_taken |= !s.taken.is_empty();
                let not_taken: Vec<String> = g
                    .items
                    .iter()
                    .filter(|i| !s.taken.contains(i))
                    .cloned()
                    .collect();
                if !not_taken.is_empty() {
                    clean = false;
                }
                push_unique(&mut report.kept_from_draft, not_taken);
                text = s.text;
            } else {
                match extra.iter_mut().find(|(p, _)| p == rel) {
                    Some((_, old)) => *old = t.clone(),
                    None => extra.push((rel.clone(), t.clone())),
                }
            }
        }
    }
    // Never fewer ported items than the draft.
    if contract::lowers(&draft, &text) {
        let m = contract::merge(&draft, &text);
        notes.push(
            "the merged parts would have lowered the ported items: merged with the draft again"
                .into(),
        );
        push_unique(&mut report.kept_from_draft, m.kept_from_draft);
        text = m.text;
    }
    let files_from = if cancelled || (!any_taken && extra.is_empty()) {
        FilesFrom::Draft
    } else if clean {
        FilesFrom::Model
    } else {
        FilesFrom::Merged
    };
    let mut files = vec![(
        target,
        if files_from == FilesFrom::Draft {
            draft
        } else {
            text
        },
    )];
    if files_from != FilesFrom::Draft {
        files.extend(extra);
    }
    report.note = (!notes.is_empty()).then(|| notes.join("; "));
    let status = if cancelled {
        TaskStatus::Cancelled
    } else if failed {
        TaskStatus::Failed
    } else {
        TaskStatus::Done
    };
    TaskResult {
        task: group.module_task.clone(),
        module: first.module.clone(),
        role: first.role,
        agent: agents.join(","),
        status,
        files,
        files_from,
        attempts,
        requests,
        cache_hits: hits,
        usage,
        latency,
        error: (!errors.is_empty())
            .then(|| format!("{}; those items keep the offline draft", errors.join("; "))),
        contract: (!clean || report.broken() || report.resent).then_some(report),
        fatal,
    }
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAFT: &str = "#![allow(dead_code)]\n//! Doc.\nuse core::fmt;\n\n/// A counter.\npub struct Counter(u64);\n\nimpl Counter {\n    /// Reads it.\n    pub fn read(&self) -> u64 {\n        unimplemented!(\"eterna-port: mrs cntpct_el0\")\n    }\n    pub fn bump(&mut self) {\n        self.0 += 1;\n    }\n}\n\npub fn start() {\n    unimplemented!(\"eterna-port: msr cntv_ctl_el0\")\n}\n\nfn helper() -> u32 {\n    7\n}\n\npub const N: u32 = 4;\n// eterna-port: left out: global_asm! (ARM64 assembly: boot.S; it needs an x86_64 counterpart)\n// global_asm!(include_str!(\"boot.S\"));\n";

    #[test]
    fn tokens_are_characters_over_three_rounded_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abc"), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
        assert_eq!(estimate_tokens(&"é".repeat(9)), 3, "characters, not bytes");
        assert_eq!(
            prompt_tokens(&[Message::system("abcdef"), Message::user("a")]),
            3
        );
    }

    #[test]
    fn a_draft_reads_as_items_members_and_left_out_code() {
        let l = read(DRAFT).unwrap();
        let names: Vec<(&str, Place)> =
            l.units.iter().map(|u| (u.name.as_str(), u.place)).collect();
        assert_eq!(
            names,
            [
                ("Counter", Place::Top),
                ("Counter::read", Place::Member(0)),
                ("Counter::bump", Place::Member(0)),
                ("start", Place::Top),
                ("helper", Place::Top),
                ("N", Place::Top),
                ("global_asm!", Place::LeftOut),
            ]
        );
        assert_eq!(l.head, ["#![allow(dead_code)]", "use core::fmt;"]);
        let read_fn = &l.units[1];
        assert!(DRAFT[read_fn.range.clone()].starts_with("/// Reads it."));
        assert_eq!(
            read_fn.outline,
            "/// Reads it.\n    pub fn read(&self) -> u64 { … }"
        );
        let asm = &l.units[6];
        assert!(DRAFT[asm.range.clone()].ends_with("include_str!(\"boot.S\"));"));
    }

    fn render(p: &Part, i: usize, n: usize) -> Result<Vec<Message>> {
        Ok(vec![
            Message::system("s".repeat(30)),
            Message::user(format!(
                "part {i} of {n}: {}\n{}\n{}",
                p.items.join(","),
                p.draft,
                p.source
            )),
        ])
    }

    #[test]
    fn stubs_are_packed_into_groups_that_fit_the_budget() {
        let source = "pub struct Counter(u64);\nimpl Counter {\n    pub fn read(&self) -> u64 {\n        let v: u64;\n        unsafe { core::arch::asm!(\"mrs {}, cntpct_el0\", out(reg) v) };\n        v\n    }\n}\npub fn start() {\n    unsafe { core::arch::asm!(\"msr cntv_ctl_el0, {}\", in(reg) 1u64) };\n}\ncore::arch::global_asm!(include_str!(\"boot.S\"));\n";
        let mut warnings = Vec::new();
        let d = Read {
            text: DRAFT,
            layout: read(DRAFT).unwrap(),
        };
        let none = Read {
            text: "",
            layout: Layout::default(),
        };
        let whole = prompt_tokens(&render(&part(&d, &none, &[], &[], &[]), 1, 1).unwrap());
        // A budget a little over the shared context: one stub a group.
        let budget = whole + 110;
        let planned = plan(DRAFT, source, budget, &render, &mut warnings)
            .unwrap()
            .unwrap();
        let items: Vec<Vec<String>> = planned.parts.iter().map(|(p, _)| p.items.clone()).collect();
        assert!(items.len() >= 2, "{items:?}");
        let all: Vec<String> = items.concat();
        for stub in ["Counter::read", "start", "global_asm!"] {
            assert_eq!(
                all.iter().filter(|i| *i == stub).count(),
                1,
                "{stub}: {items:?}"
            );
        }
        assert!(
            !all.iter().any(|i| i == "helper" || i == "Counter::bump"),
            "{items:?}"
        );
        for (p, msgs) in &planned.parts {
            let t = prompt_tokens(msgs);
            assert!(
                t <= budget || p.items.len() == 1,
                "{t} > {budget}: {:?}",
                p.items
            );
        }
        // The group with `Counter::read` shows its impl, the type and the ARM64 code.
        let (p, _) = planned
            .parts
            .iter()
            .find(|(p, _)| p.items.contains(&"Counter::read".to_string()))
            .unwrap();
        assert!(
            p.draft
                .contains("impl Counter {\n    /// Reads it.\n    pub fn read(&self) -> u64 {"),
            "{}",
            p.draft
        );
        assert!(
            p.draft.contains("pub struct Counter(u64);"),
            "outline of the type it names: {}",
            p.draft
        );
        assert!(!p.draft.contains("fn start"), "{}", p.draft);
        assert!(
            p.source.contains("mrs {}, cntpct_el0") && !p.source.contains("cntv_ctl"),
            "{}",
            p.source
        );
        assert_eq!(p.stubs, ["Counter::read"]);

        // A budget below one item with the shared context: that item alone, and said.
        let mut warnings = Vec::new();
        let tight = plan(DRAFT, source, whole + 5, &render, &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(tight.parts.len(), 3);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("alone needs a prompt of about")),
            "{warnings:?}"
        );
        // The shared context alone over the budget: each item alone, and said.
        let mut warnings = Vec::new();
        let alone = plan(DRAFT, source, 20, &render, &mut warnings)
            .unwrap()
            .unwrap();
        assert_eq!(alone.parts.len(), 3);
        assert!(warnings[0].contains("shared context alone"), "{warnings:?}");
    }

    #[test]
    fn accepted_items_are_spliced_in_with_their_helpers_and_uses() {
        let reserved = unit_names(DRAFT);
        let answer = "use core::arch::asm;\nuse core::fmt;\n\nimpl Counter {\n    pub fn read(&self) -> u64 {\n        rdtsc()\n    }\n    pub fn bump(&mut self) {}\n}\n\nfn rdtsc() -> u64 {\n    let lo: u32;\n    unsafe { asm!(\"rdtsc\", out(\"eax\") lo, out(\"edx\") _) };\n    lo as u64\n}\n\nfn helper() -> u32 { 0 }\n\npub fn start() { todo!() }\n";
        let s = splice(
            DRAFT,
            answer,
            &["Counter::read".to_string(), "start".to_string()],
            &reserved,
        );
        assert_eq!(s.taken, ["Counter::read"], "a stub is not a real body");
        let t = &s.text;
        assert!(
            t.contains("    pub fn read(&self) -> u64 {\n        rdtsc()\n    }"),
            "{t}"
        );
        assert!(
            t.contains("fn rdtsc() -> u64"),
            "the helper comes along: {t}"
        );
        assert!(t.contains("use core::arch::asm;\n"), "{t}");
        assert_eq!(t.matches("use core::fmt;").count(), 1, "{t}");
        assert!(
            t.contains("self.0 += 1;"),
            "another group's item is not touched: {t}"
        );
        assert!(
            t.contains("fn helper() -> u32 {\n    7\n}"),
            "the draft's own helper stays: {t}"
        );
        assert!(
            t.contains("msr cntv_ctl_el0"),
            "the stubbed answer keeps the draft's: {t}"
        );
        let items = items_of(t);
        assert!(items
            .iter()
            .any(|i| i.name == "Counter::read" && i.status == ItemStatus::Ported));

        // Left-out code is replaced by the answer's counterpart.
        let s = splice(
            DRAFT,
            "core::arch::global_asm!(\".globl start\", \"start:\", \"hlt\");\n",
            &["global_asm!".to_string()],
            &reserved,
        );
        assert_eq!(s.taken, ["global_asm!"]);
        assert!(
            !s.text.contains(LEFT_OUT_MARKER) && s.text.contains("\"hlt\""),
            "{}",
            s.text
        );

        // Junk (does not parse) changes nothing.
        let s = splice(DRAFT, "fn (", &["start".to_string()], &reserved);
        assert_eq!((s.text.as_str(), s.taken.len()), (DRAFT, 0));
    }

    #[test]
    fn a_group_covers_its_items_and_what_is_inside_them() {
        let g = Group {
            module_task: "m#port".into(),
            index: 1,
            count: 2,
            items: vec![
                "Gic::ack".into(),
                "<Gic as Arch>::eoi".into(),
                "regs".into(),
            ],
            nested: vec!["regs".into()],
        };
        assert_eq!(g.task_id(), "m#port.1of2");
        assert!(g.covers("Gic::ack") && g.covers("regs::Lr") && g.covers("<Gic as Arch>"));
        assert!(!g.covers("Gic") && !g.covers("Gic::eoi") && !g.covers("regsx"));
        assert_eq!(g.unit_of("regs::Lr"), Some("regs"));
    }
}
