//! Porting planned modules: each gets its x86_64 text from a template, arch-neutral
//! items carried over, stubs for what has no counterpart, and the cfg wiring that
//! lets both architectures build from one tree.
//!
//! Three shapes, by where the plan puts the target:
//! - mirrored (`arch/aarch64/gic.rs` → `arch/x86_64/apic.rs`): the target is written;
//! - in place (`arch/mod.rs`, `main.rs`): every item that reaches into the ARM64
//!   layer gets an x86_64 twin under `cfg(target_arch = "x86_64")`;
//! - split (`guest.rs` → `guest/x86_64.rs`): ARM64 items of the source are gated to
//!   aarch64 and the x86_64 child, re-exported, provides their counterparts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::source::{items, rename_idents, SourceItem};
use super::templates::{RenderContext, Templates};
use crate::knowledge::Knowledge;
use crate::plan::{ModulePlan, Plan};
use crate::workspace::{analyze_target, ItemKind};

/// What happened to one item the engine could not port.
#[derive(Debug, Clone, Serialize)]
pub struct Unported {
    pub item: String,
    pub reason: String,
}

/// How a module was ported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Mirrored,
    InPlace,
    Split,
}

/// The port of one planned module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReport {
    pub module_path: String,
    pub component: String,
    pub source: String,
    pub target: String,
    pub mode: Mode,
    /// The template used (`None`: items were carried over from the source).
    pub template: Option<String>,
    /// The agent whose model answer replaced the engine's draft (LLM backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ported_by: Option<String>,
    pub items_total: usize,
    pub items_ported: usize,
    pub unported: Vec<Unported>,
}

/// One file the port writes (relative to the workspace root).
#[derive(Debug, Clone)]
pub struct FileChange {
    pub rel: String,
    pub new: String,
}

/// Everything a port computes; nothing is written yet.
#[derive(Debug, Default)]
pub struct PortOutput {
    pub changes: Vec<FileChange>,
    pub modules: Vec<ModuleReport>,
}

impl PortOutput {
    pub fn items_total(&self) -> usize {
        self.modules.iter().map(|m| m.items_total).sum()
    }
    pub fn items_ported(&self) -> usize {
        self.modules.iter().map(|m| m.items_ported).sum()
    }
}

/// Inputs of a port.
pub struct PortJob<'a> {
    pub root: &'a Path,
    /// The whole plan (for renames and the x86_64 module list).
    pub full: &'a Plan,
    /// The modules to port now.
    pub selected: &'a Plan,
    pub knowledge: &'a Knowledge,
    pub templates: &'a Templates,
    /// Package name → its directory (for template extras).
    pub package_dirs: &'a BTreeMap<String, PathBuf>,
}

/// Renames from the ARM64 layer to the x86_64 one, from the plan's targets.
struct Renames {
    /// `(arm module dir segment, source stem) → target stem`, e.g. gic → apic.
    stems: BTreeMap<String, String>,
}

impl Renames {
    fn from_plan(plan: &Plan) -> Self {
        let mut stems = BTreeMap::new();
        for m in &plan.modules {
            let (Some(src), Some(dst)) = (stem_of(&m.source), stem_of(&m.target)) else {
                continue;
            };
            let under_arm = m.source.split('/').any(|s| s == "aarch64" || s == "arm64");
            if under_arm && src != dst && src != "mod" {
                stems.insert(src.to_string(), dst.to_string());
            }
        }
        Renames { stems }
    }

    fn ident(s: &str) -> Option<String> {
        match s {
            "aarch64" | "arm64" => Some("x86_64".into()),
            _ if s.contains("Aarch64") => Some(s.replace("Aarch64", "X86_64")),
            _ if s.contains("AArch64") => Some(s.replace("AArch64", "X86_64")),
            _ if s.contains("AARCH64") => Some(s.replace("AARCH64", "X86_64")),
            _ => None,
        }
    }

    /// Renames `text`; `inside_arm_dir` also renames `super::gic` (siblings).
    fn apply(&self, text: &str, inside_arm_dir: bool) -> String {
        rename_idents(text, &Self::ident, &|prev, s| {
            // Siblings: `super::gic`, `self::gic`, `mod gic;`, `gic::eoi()`.
            let sibling = inside_arm_dir && matches!(prev, "super" | "self" | "mod" | "::");
            if prev == "aarch64" || prev == "arm64" || sibling {
                self.stems.get(s).cloned()
            } else {
                None
            }
        })
    }
}

fn stem_of(path: &str) -> Option<&str> {
    path.rsplit('/').next()?.strip_suffix(".rs")
}

fn read(root: &Path, rel: &str) -> Result<String> {
    let p = root.join(rel);
    std::fs::read_to_string(&p).with_context(|| format!("could not read {}", p.display()))
}

/// Computes the port of `job.selected`'s modules.
pub fn port(job: &PortJob<'_>) -> Result<PortOutput> {
    let renames = Renames::from_plan(job.full);
    let mut out = PortOutput::default();
    // Files edited by more than one step are edited in sequence.
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let current = |pending: &BTreeMap<String, String>, rel: &str| -> Result<String> {
        match pending.get(rel) {
            Some(t) => Ok(t.clone()),
            None => read(job.root, rel),
        }
    };
    for m in &job.selected.modules {
        let source_text = current(&pending, &m.source)?;
        let source_path = job.root.join(&m.source);
        let src_items = items(&source_text, &source_path, job.knowledge)
            .map_err(|e| anyhow::anyhow!("{}:{}: does not parse: {e}", m.source, e.line))?;
        let report = if m.source == m.target {
            let (text, report) = wire_in_place(m, &source_text, &src_items, &renames);
            pending.insert(m.source.clone(), text);
            report
        } else {
            let split = !m.source.split('/').any(|s| s == "aarch64" || s == "arm64");
            let (text, report) = port_to_target(job, m, &src_items, &renames, split)?;
            pending.insert(m.target.clone(), text);
            if let Some(t) = &report.template {
                add_support_files(job, t, m, &mut pending)?;
            }
            if split {
                let child = pending.get(&m.target).cloned().unwrap_or_default();
                let gated = gate_and_delegate(&source_text, &src_items, &child);
                pending.insert(m.source.clone(), gated);
            }
            report
        };
        out.modules.push(report);
    }
    reconcile_arch_roots(job, &mut pending)?;
    add_extras(job, &mut pending)?;
    for (rel, new) in pending {
        out.changes.push(FileChange { rel, new });
    }
    Ok(out)
}

/// The pub items a report counts (named, not impl blocks).
fn counted(it: &SourceItem) -> bool {
    it.public && it.name.is_some() && !matches!(it.kind, None | Some(ItemKind::Impl))
}

fn port_to_target(
    job: &PortJob<'_>,
    m: &ModulePlan,
    src_items: &[SourceItem],
    renames: &Renames,
    split: bool,
) -> Result<(String, ModuleReport)> {
    let stem = stem_of(&m.source).unwrap_or_default();
    let stem = if stem == "mod" {
        // arch/aarch64/mod.rs: the directory names the module.
        m.source.rsplit('/').nth(1).unwrap_or(stem)
    } else {
        stem
    };
    let crate_name = m.module_path.split("::").next().unwrap_or_default();
    let template = job.templates.select(
        &m.component,
        if stem == "aarch64" || stem == "arm64" {
            "mod"
        } else {
            stem
        },
    );
    let mut text = match template {
        Some(t) => job.templates.render(
            &t.file,
            &RenderContext {
                crate_name,
                source: &m.source,
                target: &m.target,
                component: &m.component,
                target_triple: &job.full.target_triple,
            },
        )?,
        None if !split => {
            // No template: the whole module, renamed, with its ARM64 code stubbed.
            return Ok(carry_whole_module(job, m, src_items, renames));
        }
        None => format!(
            "//! x86_64 counterparts of the ARM64 items of `{}`.\n//!\n//! No x86_64 template covers this module: its ARM64 items were carried over\n//! from {} with `unimplemented!` stubs.\n\n#[allow(unused_imports)]\nuse super::*;\n",
            m.module_path, m.source
        ),
    };
    let target_path = job.root.join(&m.target);
    let have: BTreeSet<String> = items(&text, &target_path, job.knowledge)
        .map(|v| v.into_iter().filter_map(|i| i.name).collect())
        .unwrap_or_default();
    let inside_arm = !split;
    let mut total = 0;
    let mut ported = 0;
    let mut unported = Vec::new();
    let mut carried = Vec::new();
    for it in src_items {
        // A split module keeps its arch-neutral items in the source file.
        if split && !it.has_arm64_code() {
            continue;
        }
        let name = it.name.clone().unwrap_or_default();
        // The template defines items under their x86_64 names (`Aarch64` → `X86_64`).
        let x86_name = |n: &str| Renames::ident(n).unwrap_or_else(|| n.to_string());
        if counted(it) {
            total += 1;
            if have.contains(&name) || have.contains(&x86_name(&name)) {
                ported += 1;
                continue;
            }
        } else if it.kind == Some(ItemKind::Impl) {
            // Methods of a type the template defines come with the template.
            if impl_self_type(&it.text)
                .is_some_and(|t| have.contains(&t) || have.contains(&x86_name(&t)))
            {
                continue;
            }
        } else if split && it.has_arm64_code() && it.mod_decl.is_none() && it.name.is_some() {
            // A private ARM64 helper of a split module: the shared code beside it
            // may call it, so its counterpart must be visible to the parent.
            if have.contains(&name) {
                continue;
            }
        } else if it.mod_decl.is_some() || !it.public || it.kind.is_none() {
            // Private helpers and imports: the template brings its own.
            continue;
        }
        let renamed = renames.apply(&it.text, inside_arm);
        let renamed = if split && !it.public {
            raise_to_pub_super(&renamed)
        } else {
            renamed
        };
        let (stubbed, stubs) = stub_arm64_bodies(&renamed, job.knowledge);
        let clean = stubs.is_empty() && !has_arm64(&stubbed, job.knowledge);
        carried.push(stubbed);
        if counted(it) {
            if clean {
                ported += 1;
            } else {
                unported.push(Unported {
                    item: name.clone(),
                    reason: if stubs.is_empty() {
                        format!(
                            "carried over unchanged but uses ARM64 code ({})",
                            it.arm64.join(", ")
                        )
                    } else {
                        format!(
                            "no x86_64 counterpart in {}; stubbed `unimplemented!` ({})",
                            template.map(|t| t.file.as_str()).unwrap_or("any template"),
                            it.arm64.join(", ")
                        )
                    },
                });
            }
        }
    }
    if !carried.is_empty() {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "\n// ---- carried over from {} by cargo-eterna-port ----\n",
            m.source
        ));
        for c in carried {
            text.push('\n');
            text.push_str(&c);
            text.push('\n');
        }
    }
    Ok((
        text,
        ModuleReport {
            module_path: m.module_path.clone(),
            component: m.component.clone(),
            source: m.source.clone(),
            target: m.target.clone(),
            mode: if split { Mode::Split } else { Mode::Mirrored },
            template: template.map(|t| t.file.clone()),
            ported_by: None,
            items_total: total,
            items_ported: ported,
            unported,
        },
    ))
}

/// Without a template: the source module as a whole, renamed into the x86_64 layer,
/// every ARM64 function body stubbed and ARM64 assembly items left out.
fn carry_whole_module(
    job: &PortJob<'_>,
    m: &ModulePlan,
    src_items: &[SourceItem],
    renames: &Renames,
) -> (String, ModuleReport) {
    let source = std::fs::read_to_string(job.root.join(&m.source)).unwrap_or_default();
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut total = 0;
    let mut ported = 0;
    let mut unported = Vec::new();
    for it in src_items {
        let new = if it.kind.is_none() && it.mod_decl.is_none() && it.is_arm64() {
            // `global_asm!(…)` and the like.
            format!(
                "// eterna-port: ARM64 item left out ({}); it needs an x86_64 counterpart.",
                it.arm64.join(", ")
            )
        } else {
            let (text, stubs) = stub_arm64_bodies(&renames.apply(&it.text, true), job.knowledge);
            if counted(it) {
                total += 1;
                if stubs.is_empty() && !has_arm64(&text, job.knowledge) {
                    ported += 1;
                } else {
                    unported.push(Unported {
                        item: it.name.clone().unwrap_or_default(),
                        reason: format!(
                            "no x86_64 template for {}; stubbed `unimplemented!` ({})",
                            m.component,
                            it.arm64.join(", ")
                        ),
                    });
                }
            }
            text
        };
        edits.push((it.range.clone(), new));
    }
    let mut text = format!(
        "// x86_64 port of {} by cargo-eterna-port: no x86_64 template covers the\n// {} component, so the module was carried over with its ARM64 code stubbed.\n\n",
        m.source, m.component
    );
    let mut at = 0;
    for (r, new) in edits {
        if r.start < at || r.end > source.len() {
            continue;
        }
        text.push_str(&source[at..r.start]);
        text.push_str(&new);
        at = r.end;
    }
    text.push_str(&source[at..]);
    let report = ModuleReport {
        module_path: m.module_path.clone(),
        component: m.component.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        mode: Mode::Mirrored,
        template: None,
        ported_by: None,
        items_total: total,
        items_ported: ported,
        unported,
    };
    (text, report)
}

/// Whether a piece of Rust still holds ARM64 code (asm, system registers, paths).
fn has_arm64(text: &str, knowledge: &Knowledge) -> bool {
    analyze_target(text, Path::new("."), knowledge).map_or(true, |f| !f.evidence.is_empty())
}

/// Makes a private item `pub(super)`: inserts the visibility after its attributes.
fn raise_to_pub_super(text: &str) -> String {
    use proc_macro2::{TokenStream, TokenTree};
    let Ok(tokens) = text.parse::<TokenStream>() else {
        return text.to_string();
    };
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    // Skip `#[…]` attributes (doc comments are attributes too).
    while matches!(tts.get(i), Some(TokenTree::Punct(p)) if p.as_char() == '#')
        && matches!(tts.get(i + 1), Some(TokenTree::Group(_)))
    {
        i += 2;
    }
    let at = tts.get(i).map(|t| t.span().byte_range().start);
    proc_macro2::extra::invalidate_current_thread_spans();
    match at {
        Some(at) if at <= text.len() => format!("{}pub(super) {}", &text[..at], &text[at..]),
        _ => text.to_string(),
    }
}

/// `impl … for Type` / `impl Type`: the last path segment of the self type.
fn impl_self_type(text: &str) -> Option<String> {
    let item: syn::ItemImpl = syn::parse_str(text).ok()?;
    match &*item.self_ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// Replaces the body of every `fn` in `text` that contains ARM64 code with an
/// `unimplemented!` naming it; returns the new text and the stubbed names.
fn stub_arm64_bodies(text: &str, knowledge: &Knowledge) -> (String, Vec<String>) {
    use proc_macro2::{Delimiter, TokenStream, TokenTree};
    let Ok(tokens) = text.parse::<TokenStream>() else {
        return (text.to_string(), Vec::new());
    };
    let mut bodies: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    fn walk(ts: TokenStream, out: &mut Vec<(String, std::ops::Range<usize>)>) {
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
    walk(tokens, &mut bodies);
    proc_macro2::extra::invalidate_current_thread_spans();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut stubbed = Vec::new();
    for (name, r) in bodies {
        let Some(body) = text.get(r.clone()) else {
            continue;
        };
        let uses: Vec<String> = analyze_target(
            &format!("fn __eterna_body() {body}"),
            Path::new("."),
            knowledge,
        )
        .map(|f| f.evidence.iter().map(|e| e.name.clone()).collect())
        .unwrap_or_default();
        if uses.is_empty() || r.start < at {
            continue;
        }
        // Inline assembly the knowledge can translate statement by statement.
        if let Some(translated) = translate_asm(body, knowledge) {
            let clean = analyze_target(
                &format!("fn __eterna_body() {translated}"),
                Path::new("."),
                knowledge,
            )
            .is_ok_and(|f| f.evidence.is_empty());
            if clean {
                out.push_str(&text[at..r.start]);
                out.push_str(&translated);
                at = r.end;
                continue;
            }
        }
        out.push_str(&text[at..r.start]);
        // Indent like the line the body opens on.
        let line_start = text[..r.start].rfind('\n').map_or(0, |i| i + 1);
        let indent: String = text[line_start..]
            .chars()
            .take_while(|c| *c == ' ' || *c == '\t')
            .collect();
        out.push_str(&format!(
            "{{\n{indent}    unimplemented!(\"eterna-port: `{name}` has ARM64-specific code ({}) with no x86_64 counterpart yet\")\n{indent}}}",
            uses.join(", ")
        ));
        at = r.end;
        stubbed.push(name);
    }
    out.push_str(&text[at..]);
    (out, stubbed)
}

/// Rewrites every `asm!` template in `body` to x86_64 when the knowledge has a
/// translation for each of its statements; `None` if any statement has none.
fn translate_asm(body: &str, knowledge: &Knowledge) -> Option<String> {
    use proc_macro2::{TokenStream, TokenTree};
    let tokens: TokenStream = body.parse().ok()?;
    let mut literals: Vec<std::ops::Range<usize>> = Vec::new();
    fn find(ts: TokenStream, out: &mut Vec<std::ops::Range<usize>>) {
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

const CFG_AARCH64: &str = "#[cfg(target_arch = \"aarch64\")]";
const CFG_X86_64: &str = "#[cfg(target_arch = \"x86_64\")]";

fn normalized(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// In-place wiring: each item that reaches into the ARM64 layer gets an x86_64 twin.
fn wire_in_place(
    m: &ModulePlan,
    text: &str,
    src_items: &[SourceItem],
    renames: &Renames,
) -> (String, ModuleReport) {
    let existing: BTreeSet<String> = src_items.iter().map(|i| normalized(&i.text)).collect();
    let mut edits: Vec<(usize, String)> = Vec::new();
    let mut total = 0;
    for it in src_items {
        if !it.is_arm64() || it.cfg_x86_64 || it.text.contains("not(target_arch") {
            continue;
        }
        let renamed = renames.apply(&it.text, false);
        let twin_body = renamed
            .replace("target_arch = \"aarch64\"", "target_arch = \"x86_64\"")
            .replace("target_arch=\"aarch64\"", "target_arch=\"x86_64\"");
        if twin_body == it.text {
            continue; // nothing architecture-specific to twin (e.g. a `cfg!` test)
        }
        total += 1;
        let twin = if it.cfg_aarch64 {
            twin_body
        } else {
            format!("{CFG_X86_64}\n{twin_body}")
        };
        if existing.contains(&normalized(&twin)) {
            continue; // wired by an earlier run
        }
        if !it.cfg_aarch64 {
            edits.push((it.range.start, format!("{CFG_AARCH64}\n")));
        }
        edits.push((it.range.end, format!("\n{twin}")));
    }
    let new = splice(text, edits);
    let report = ModuleReport {
        module_path: m.module_path.clone(),
        component: m.component.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        mode: Mode::InPlace,
        template: None,
        ported_by: None,
        items_total: total,
        items_ported: total,
        unported: Vec::new(),
    };
    (new, report)
}

/// Gates the ARM64 items of a split module to aarch64 and delegates to `x86_64`.
fn gate_and_delegate(text: &str, src_items: &[SourceItem], child: &str) -> String {
    let gated = gated_items(src_items, &identifiers(child));
    let mut edits = Vec::new();
    for (i, it) in src_items.iter().enumerate() {
        if gated[i] && !it.cfg_aarch64 && !it.cfg_x86_64 {
            edits.push((it.range.start, format!("{CFG_AARCH64}\n")));
        }
    }
    let mut new = splice(text, edits);
    let delegated = src_items
        .iter()
        .any(|i| i.mod_decl.as_deref() == Some("x86_64"));
    if !delegated {
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&format!(
            "\n// x86_64 counterparts of the items above, by cargo-eterna-port.\n{CFG_X86_64}\nmod x86_64;\n{CFG_X86_64}\npub use self::x86_64::*;\n"
        ));
    }
    new
}

/// Which items of a split module are gated to aarch64: those with ARM64 code, and,
/// to a fixed point, private items and imports used only by gated items and not by
/// the x86_64 child (`child_words`), so the x86_64 build has no unused leftovers.
fn gated_items(items: &[SourceItem], child_words: &[String]) -> Vec<bool> {
    let words: Vec<Vec<String>> = items.iter().map(|i| identifiers(&i.text)).collect();
    let names: Vec<Vec<String>> = items.iter().map(defined_names).collect();
    let mut gated: Vec<bool> = items
        .iter()
        .map(|i| (i.is_arm64() || i.cfg_aarch64) && !i.cfg_x86_64)
        .collect();
    loop {
        let mut changed = false;
        for i in 0..items.len() {
            let it = &items[i];
            if gated[i] || it.public || it.cfg_x86_64 || names[i].is_empty() {
                continue;
            }
            let used_only_by_gated = names[i].iter().all(|n| {
                let users = |g: bool| {
                    (0..items.len())
                        .filter(|&j| j != i && gated[j] == g)
                        .any(|j| words[j].iter().any(|w| w == n))
                };
                users(true) && !users(false) && !child_words.iter().any(|w| w == n)
            });
            if used_only_by_gated {
                gated[i] = true;
                changed = true;
            }
        }
        if !changed {
            return gated;
        }
    }
}

/// The names an item brings into scope: its own, or the leaves a `use` imports
/// (empty for globs and unnamed items).
fn defined_names(it: &SourceItem) -> Vec<String> {
    if it.mod_decl.is_some() {
        return Vec::new();
    }
    if let Some(n) = &it.name {
        return vec![n.clone()];
    }
    let Ok(u) = syn::parse_str::<syn::ItemUse>(&it.text) else {
        return Vec::new();
    };
    fn leaves(t: &syn::UseTree, out: &mut Vec<String>) -> bool {
        match t {
            syn::UseTree::Path(p) => leaves(&p.tree, out),
            syn::UseTree::Name(n) => {
                out.push(n.ident.to_string());
                true
            }
            syn::UseTree::Rename(r) => {
                out.push(r.rename.to_string());
                true
            }
            syn::UseTree::Glob(_) => false,
            syn::UseTree::Group(g) => g.items.iter().all(|i| leaves(i, out)),
        }
    }
    let mut out = Vec::new();
    if leaves(&u.tree, &mut out) {
        out
    } else {
        Vec::new()
    }
}

/// Every identifier-like word of a piece of text.
fn identifiers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Inserts `(offset, text)` edits (applied back to front, so offsets stay valid).
fn splice(text: &str, mut edits: Vec<(usize, String)>) -> String {
    edits.sort_by_key(|e| e.0);
    let mut out = text.to_string();
    for (at, ins) in edits.into_iter().rev() {
        if at <= out.len() {
            out.insert_str(at, &ins);
        }
    }
    out
}

/// Renders the pure-logic files template `template` declares with `#[path]`, beside
/// the target of `m`.
fn add_support_files(
    job: &PortJob<'_>,
    template: &str,
    m: &ModulePlan,
    pending: &mut BTreeMap<String, String>,
) -> Result<()> {
    let dir = m.target.rsplit_once('/').map_or("", |(d, _)| d);
    for sup in job.templates.support_of(template) {
        let name = sup.file.rsplit('/').next().unwrap_or(&sup.file);
        let rel = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        let text = job.templates.render_support(
            &sup.file,
            &RenderContext {
                crate_name: m.module_path.split("::").next().unwrap_or_default(),
                source: &m.source,
                target: &rel,
                component: &m.component,
                target_triple: &job.full.target_triple,
            },
        )?;
        pending.insert(rel, text);
    }
    Ok(())
}

/// Makes the x86_64 arch root (`…/x86_64/mod.rs`), when it is written now, agree with
/// the tree: it declares every planned module of its directory; a module it declares
/// that no plan entry produces comes from its template (the x86_64 layer needs it even
/// when the ARM64 layer had no counterpart), or, without one, is commented out.
fn reconcile_arch_roots(job: &PortJob<'_>, pending: &mut BTreeMap<String, String>) -> Result<()> {
    let roots: Vec<String> = pending
        .keys()
        .filter(|rel| rel.ends_with("/x86_64/mod.rs"))
        .cloned()
        .collect();
    for root_rel in roots {
        let dir = root_rel.trim_end_matches("mod.rs").to_string();
        let Some(root_plan) = job.full.modules.iter().find(|m| m.target == root_rel) else {
            continue;
        };
        let mut text = pending.get(&root_rel).cloned().unwrap_or_default();
        let declared: Vec<SourceItem> = items(&text, &job.root.join(&root_rel), job.knowledge)
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i.mod_decl.is_some())
            .collect();
        let names: BTreeSet<String> = declared.iter().filter_map(|i| i.mod_decl.clone()).collect();
        // Planned modules the template does not declare.
        let mut missing = Vec::new();
        for m in &job.full.modules {
            let Some(stem) = m
                .target
                .strip_prefix(&dir)
                .and_then(|r| r.strip_suffix(".rs"))
            else {
                continue;
            };
            if stem != "mod" && !stem.contains('/') && !names.contains(stem) {
                missing.push(stem.to_string());
            }
        }
        // Declared modules nothing produces.
        let mut edits = Vec::new();
        for d in &declared {
            let name = d.mod_decl.clone().unwrap_or_default();
            let file = format!("{dir}{name}.rs");
            let nested = format!("{dir}{name}/mod.rs");
            let exists = |rel: &str| pending.contains_key(rel) || job.root.join(rel).exists();
            if exists(&file) || exists(&nested) || job.full.modules.iter().any(|m| m.target == file)
            {
                continue;
            }
            let template = job
                .templates
                .module_templates()
                .find(|t| t.file == format!("{name}.rs"))
                .cloned();
            match template {
                Some(t) => {
                    let ctx = RenderContext {
                        crate_name: root_plan.module_path.split("::").next().unwrap_or_default(),
                        source: "",
                        target: &file,
                        component: &t.component,
                        target_triple: &job.full.target_triple,
                    };
                    let body = job.templates.render(&t.file, &ctx)?;
                    pending.insert(file.clone(), body);
                    let as_module = ModulePlan {
                        target: file.clone(),
                        ..root_plan.clone()
                    };
                    add_support_files(job, &t.file, &as_module, pending)?;
                }
                None => {
                    let commented: String = d.text.lines().map(|l| format!("// {l}\n")).collect();
                    edits.push((
                        d.range.clone(),
                        format!(
                            "// eterna-port: no source module or template for `{name}`:\n{}",
                            commented.trim_end()
                        ),
                    ));
                }
            }
        }
        if !edits.is_empty() {
            let mut out = String::new();
            let mut at = 0;
            for (r, new) in edits {
                out.push_str(&text[at..r.start]);
                out.push_str(&new);
                at = r.end;
            }
            out.push_str(&text[at..]);
            text = out;
        }
        if !missing.is_empty() {
            text.push_str("\n// Modules of the plan the template does not declare.\n");
            for stem in missing {
                text.push_str(&format!("pub mod {stem};\n"));
            }
        }
        pending.insert(root_rel, text);
    }
    Ok(())
}

/// Writes the templates' extra files (linker script, pure-logic submodules) for the
/// packages whose arch root is ported now.
fn add_extras(job: &PortJob<'_>, pending: &mut BTreeMap<String, String>) -> Result<()> {
    let packages: BTreeSet<&str> = job
        .selected
        .modules
        .iter()
        .filter(|m| m.component == "platform")
        .map(|m| m.package.as_str())
        .collect();
    for pkg in packages {
        let Some(dir) = job.package_dirs.get(pkg) else {
            continue;
        };
        let dir_rel = crate::workspace::relative_to(job.root, dir);
        let crate_name = pkg.replace('-', "_");
        for e in job.templates.extras() {
            let rel = if dir_rel.is_empty() {
                e.target.clone()
            } else {
                format!("{dir_rel}/{}", e.target)
            };
            let text = job.templates.render_extra(
                &e.file,
                &RenderContext {
                    crate_name: &crate_name,
                    source: "",
                    target: &rel,
                    component: "platform",
                    target_triple: &job.full.target_triple,
                },
            )?;
            pending.insert(rel, text);
        }
    }
    Ok(())
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
            out.contains("    pub fn freq(&self) -> u64 {\n        unimplemented!(\"eterna-port: `freq` has ARM64-specific code (mrs, CNTFRQ_EL0)"),
            "{out}"
        );
        assert!(out.contains("yet\")\n    }\n    pub fn double"), "{out}");
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
    fn split_modules_gate_arm64_items_and_what_only_they_use() {
        let k = Knowledge::embedded().unwrap();
        let text = "use core::sync::atomic::{AtomicU32, Ordering};\nconst ONLY_ARM: u32 = 1;\nconst SHARED: u32 = 2;\nconst CHILD: u32 = 3;\nstatic N: AtomicU32 = AtomicU32::new(0);\nfn arm() -> u32 { unsafe { core::arch::asm!(\"wfi\") }; N.load(Ordering::Relaxed) + ONLY_ARM + CHILD }\npub fn shared() -> u32 { SHARED }\n";
        let items = items(text, Path::new("g.rs"), &k).unwrap();
        let out = gate_and_delegate(text, &items, "fn x86() -> u32 { CHILD }");
        let gated = |needle: &str| out.contains(&format!("{CFG_AARCH64}\n{needle}"));
        assert!(gated("fn arm()"), "{out}");
        assert!(gated("const ONLY_ARM"), "{out}");
        assert!(gated("static N"), "{out}");
        assert!(gated("use core::sync::atomic"), "{out}");
        assert!(
            !gated("const SHARED") && !gated("const CHILD") && !gated("pub fn shared"),
            "{out}"
        );
        assert!(out.ends_with(
            "mod x86_64;\n#[cfg(target_arch = \"x86_64\")]\npub use self::x86_64::*;\n"
        ));
        // Idempotent: a second pass over the gated text adds nothing.
        let again = gate_and_delegate(
            &out,
            &super::super::source::items(&out, Path::new("g.rs"), &k).unwrap(),
            "fn x86() -> u32 { CHILD }",
        );
        assert_eq!(again, out);
    }

    #[test]
    fn splice_inserts_at_offsets() {
        assert_eq!(
            splice(
                "abcdef",
                vec![(3, "X".into()), (0, "<".into()), (6, ">".into())]
            ),
            "<abcXdef>"
        );
    }
}
