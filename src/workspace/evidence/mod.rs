//! What one source file says: its `mod` declarations, public API, `use` paths and the
//! ARM64 evidence in it (cfgs, `core::arch::aarch64`, asm mnemonics, system registers,
//! included `.S` files). One pass over the `syn` tree, no name resolution.

use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::ToTokens;
use serde::{Deserialize, Serialize};
use syn::visit::Visit;

use crate::knowledge::Knowledge;

mod asm;
use asm::is_sysreg_shape;

/// Hash of file contents (the scan cache's validation, and the facts' record of what
/// a file held when it was read).
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The kind of an ARM64 evidence record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceKind {
    /// The file lives under an `aarch64`/`arm64` directory or is named so.
    Path,
    /// `cfg(target_arch = "aarch64")` (also `cfg_attr`, `cfg!`).
    Cfg,
    /// A `core::arch::aarch64` / `std::arch::aarch64` path.
    CoreArch,
    /// A path through a crate's own `aarch64`/`arm64` module (`arch::aarch64::Gic`).
    ArchPath,
    /// An AArch64-specific mnemonic in `asm!`/`global_asm!` or an included `.S` file.
    AsmMnemonic,
    /// An AArch64 system register named in asm or in code.
    Sysreg,
    /// An AArch64 general register (`x0`, `w1`, `xzr`) or operand modifier (`{0:w}`)
    /// in assembly.
    AsmRegister,
    /// An assembly file pulled in with `include_str!`.
    AsmFile,
    /// The module is (in) a subtree whose `mod` line is gated to AArch64
    /// (`#[cfg(target_arch = "aarch64")] mod foo;`): `name` is `mod foo`, `file` and
    /// `line_in_file` locate the gated line (workspace-relative).
    GatedMod,
    /// A path through an ARM-only crate (`aarch64_cpu::registers::HCR_EL2`,
    /// `arm_gicv2::GicDistributor`), per `templates/knowledge/arch.toml`.
    ArmCratePath,
    /// The module belongs to a package whose name or directory names ARM64
    /// (`arm_vcpu`, `arch_hal/aarch64_hal/gic`): `name` is that name or directory.
    ArchCrate,
}

impl EvidenceKind {
    /// The kind's name in plan JSON (`sysreg`, `asm-mnemonic`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Path => "path",
            EvidenceKind::Cfg => "cfg",
            EvidenceKind::CoreArch => "core-arch",
            EvidenceKind::ArchPath => "arch-path",
            EvidenceKind::AsmMnemonic => "asm-mnemonic",
            EvidenceKind::AsmRegister => "asm-register",
            EvidenceKind::Sysreg => "sysreg",
            EvidenceKind::AsmFile => "asm-file",
            EvidenceKind::GatedMod => "gated-mod",
            EvidenceKind::ArchCrate => "arch-crate",
            EvidenceKind::ArmCratePath => "arm-crate-path",
        }
    }
}

/// Which architecture a `cfg` gates an item (or file) to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchGate {
    /// `target_arch = "aarch64"` (or `any(…)` of AArch64 and 32-bit ARM only).
    Arm,
    /// `target_arch = "x86_64"` (or `x86`): the port's output.
    X86_64,
    /// Only other architectures (`riscv64`, `loongarch64`, …).
    Other,
}

/// The architecture a `cfg(…)` text (attribute tokens) gates to: every
/// `target_arch` it lists must be of one kind, and a negation (`not(…)`) gates nothing.
pub fn arch_gate_of(cfg: &str) -> Option<ArchGate> {
    let compact: String = cfg.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.contains("not(") || compact.contains("all(") && compact.contains("any(") {
        return None;
    }
    let mut arches = Vec::new();
    let mut rest = compact.as_str();
    while let Some(i) = rest.find("target_arch=\"") {
        rest = &rest[i + "target_arch=\"".len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        arches.push(&rest[..end]);
        rest = &rest[end..];
    }
    let kind = |a: &str| match a {
        "aarch64" | "arm" | "arm64ec" => ArchGate::Arm,
        "x86_64" | "x86" => ArchGate::X86_64,
        _ => ArchGate::Other,
    };
    let first = kind(arches.first()?);
    if arches.iter().all(|a| kind(a) == first) {
        Some(first)
    } else if arches.iter().all(|a| kind(a) != ArchGate::Arm) {
        // x86_64 together with other architectures: not ARM64 input either way.
        Some(ArchGate::Other)
    } else {
        None
    }
}

/// `#[cfg_attr(target_arch = "aarch64", path = "arch/aarch64/mod.rs")]`: the path
/// an item takes when built for AArch64.
fn arm_cfg_attr_path(attrs: &[syn::Attribute]) -> Option<String> {
    use syn::punctuated::Punctuated;
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg_attr"))
        .find_map(|a| {
            let metas = a
                .parse_args_with(Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
                .ok()?;
            let mut it = metas.iter();
            let pred = it.next()?.to_token_stream().to_string();
            if arch_gate_of(&format!("cfg({pred})")) != Some(ArchGate::Arm) {
                return None;
            }
            it.find_map(|m| match m {
                syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            })
        })
}

/// The gate of an item's `#[cfg]` attributes (the first that gates an architecture).
fn arch_gate(attrs: &[syn::Attribute]) -> Option<ArchGate> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .find_map(|a| arch_gate_of(&a.meta.to_token_stream().to_string()))
}

/// Whether a piece of evidence is AArch64's alone. Mnemonics and registers that other
/// ISAs share (`bl`, `ret`, `x0`, `{0:x}`) are not, nor is anything listed as shared
/// in `templates/knowledge/arch.toml`; a file needs at least one that is.
pub fn is_arm64_only(e: &Evidence, knowledge: &Knowledge) -> bool {
    match e.kind {
        EvidenceKind::AsmMnemonic => !knowledge.arch.is_shared_mnemonic(&e.name),
        // `Arch::Aarch64`, `ImageArch::Arm64`: multi-arch code naming the arch, not
        // AArch64 code; a path through an `aarch64` module is.
        EvidenceKind::ArchPath => e.name.split("::").any(|s| s == "aarch64" || s == "arm64"),
        EvidenceKind::AsmRegister => {
            // `x0`–`x30` are RISC-V's names too; `{:x}` is an x86 operand modifier.
            !(e.name == "{:x}" || e.name.starts_with('x') && e.name != "xzr")
        }
        _ => true,
    }
}

/// One piece of ARM64 evidence: first occurrence in the module and how often it occurs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// What kind of evidence.
    pub kind: EvidenceKind,
    /// What was found (`HCR_EL2`, `eret`, `core::arch::aarch64`).
    pub name: String,
    /// 1-based line in the module's source file (`None` for path evidence).
    pub line: Option<usize>,
    /// Set when the evidence was found in an included assembly file (relative to the
    /// module's directory), whose line `line_in_file` is; `None` otherwise.
    pub file: Option<String>,
    /// The line in `file`, when the evidence is in an included file.
    pub line_in_file: Option<usize>,
    /// How often it occurs in the module.
    pub count: usize,
}

/// Kinds of public items recorded for a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// A free function.
    Fn,
    /// A method or associated function of an `impl`.
    Method,
    /// A struct.
    Struct,
    /// An enum.
    Enum,
    /// A union.
    Union,
    /// A trait.
    Trait,
    /// A type alias.
    Type,
    /// A constant.
    Const,
    /// A static.
    Static,
    /// A `macro_rules!` macro.
    Macro,
    /// A trait implementation.
    Impl,
}

/// A public item of a module with its signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// What the item is.
    pub kind: ItemKind,
    /// Its name (`Type::method` for methods).
    pub name: String,
    /// Its signature, tidied (`pub fn ack(&self) -> u32`).
    pub signature: String,
    /// 1-based line of the item.
    pub line: usize,
}

/// A non-inline `mod name;` declaration found in a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModDecl {
    /// Names of the inline modules enclosing the declaration, outermost first.
    pub inline_path: Vec<String>,
    /// `#[path]` given on each enclosing inline module, if any (same length).
    pub inline_path_attrs: Vec<Option<String>>,
    pub name: String,
    pub path_attr: Option<String>,
    /// 1-based line.
    pub line: usize,
    /// The architecture the declaration's `#[cfg]` gates it to, if any.
    #[serde(default)]
    pub gate: Option<ArchGate>,
}

/// A `use` path, relative to the inline module it appears in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsePath {
    pub inline_path: Vec<String>,
    pub segments: Vec<String>,
}

/// Everything the scan learns from one file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct FileFacts {
    pub mods: Vec<ModDecl>,
    pub items: Vec<Item>,
    pub uses: Vec<UsePath>,
    pub evidence: Vec<Evidence>,
    /// The file already has `cfg(target_arch = "x86_64")` code.
    pub has_x86_64_cfg: bool,
    /// The file contains `todo!`/`unimplemented!`.
    pub has_placeholders: bool,
    /// Problems with files it pulls in (e.g. an unreadable `.S`).
    pub warnings: Vec<(usize, String)>,
    /// Files pulled in with `include_str!` (relative to the file's directory) and the
    /// hash of their contents (`None`: unreadable), so a cached scan notices changes.
    pub includes: Vec<(String, Option<u64>)>,
    /// The architecture an inner `#![cfg(target_arch = …)]` gates the whole file to.
    #[serde(default)]
    pub file_gate: Option<ArchGate>,
    /// First segments of every path the file writes (`aarch64_cpu` of
    /// `aarch64_cpu::registers::X`), sorted, each once: which crates it names.
    #[serde(default)]
    pub path_roots: Vec<String>,
}

/// Parses `text` (the contents of `path`) and collects its facts.
///
/// Function bodies are not parsed into syntax trees: the token stream is scanned for
/// evidence (macro calls, paths, cfg attributes) and each body is replaced by `{}`
/// before `syn` parses the items. Bodies hold most of a hypervisor's code and none of
/// its API, so this makes the scan several times faster.
pub fn analyze_file(
    text: &str,
    path: &Path,
    knowledge: &Knowledge,
) -> Result<FileFacts, ParseError> {
    let result = analyze_tokens(text, path, knowledge).map_err(|e| {
        let start = e.span().start();
        ParseError {
            line: start.line,
            column: start.column + 1,
            message: e.to_string(),
        }
    });
    // The span-location table of this thread holds every file parsed on it; nothing
    // refers to this file's spans any more.
    proc_macro2::extra::invalidate_current_thread_spans();
    result
}

/// A file that does not parse as Rust, with where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// syn's message.
    pub message: String,
}

fn analyze_tokens(text: &str, path: &Path, knowledge: &Knowledge) -> syn::Result<FileFacts> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // A shebang line (not an inner attribute `#![...]`) is blanked, keeping lines.
    let blanked;
    let text = if text.starts_with("#!") && !text[2..].trim_start().starts_with('[') {
        let end = text.find('\n').unwrap_or(text.len());
        blanked = format!("{}{}", " ".repeat(end), &text[end..]);
        blanked.as_str()
    } else {
        text
    };
    let tokens: TokenStream = text.parse()?;
    let mut v = Collector {
        knowledge,
        dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        facts: FileFacts::default(),
    };
    let tokens = v.strip_bodies(tokens);
    let file: syn::File = syn::parse2(tokens)?;
    for attr in &file.attrs {
        v.attr(attr);
    }
    v.facts.file_gate = arch_gate(&file.attrs);
    v.items(&file.items, &mut Vec::new(), &mut Vec::new());
    v.visit_file(&file);
    // A path whose first segment is one of the file's own modules or imports
    // (`mod psci;`, `use crate::psci;`) goes through local code, not the ARM crate
    // of that name.
    let local: Vec<&str> = v
        .facts
        .mods
        .iter()
        .map(|d| d.name.as_str())
        .chain(v.facts.uses.iter().filter_map(|u| {
            let first = u.segments.first()?;
            matches!(first.as_str(), "crate" | "self" | "super")
                .then(|| u.segments.last().map(String::as_str))
                .flatten()
        }))
        .collect();
    let local: Vec<String> = local.into_iter().map(str::to_string).collect();
    v.facts.evidence.retain(|e| {
        e.kind != EvidenceKind::ArmCratePath
            || !local
                .iter()
                .any(|l| e.name.split("::").next() == Some(l.as_str()))
    });
    v.facts.evidence = merge_evidence(std::mem::take(&mut v.facts.evidence));
    v.facts.path_roots.sort();
    v.facts.path_roots.dedup();
    Ok(v.facts)
}

/// Keeps the first occurrence of each (kind, name, file), counting the rest.
pub fn merge_evidence(mut all: Vec<Evidence>) -> Vec<Evidence> {
    all.sort_by(|a, b| {
        (a.kind, &a.name, &a.file, a.line, a.line_in_file).cmp(&(
            b.kind,
            &b.name,
            &b.file,
            b.line,
            b.line_in_file,
        ))
    });
    let mut out: Vec<Evidence> = Vec::new();
    for e in all {
        match out.last_mut() {
            Some(last) if last.kind == e.kind && last.name == e.name && last.file == e.file => {
                last.count += e.count;
            }
            _ => out.push(e),
        }
    }
    out.sort_by(|a, b| (a.line, a.kind, &a.name).cmp(&(b.line, b.kind, &b.name)));
    out
}

struct Collector<'k> {
    knowledge: &'k Knowledge,
    dir: PathBuf,
    facts: FileFacts,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let t = a.meta.to_token_stream().to_string();
            t.replace(' ', "") == "cfg(test)"
        }
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        if !a.path().is_ident("path") {
            return None;
        }
        match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            },
            _ => None,
        }
    })
}

fn is_pub(vis: &syn::Visibility) -> bool {
    !matches!(vis, syn::Visibility::Inherited)
}

fn line_of<T: syn::spanned::Spanned>(node: &T) -> usize {
    node.span().start().line
}

/// Token text spaced the way Rust is usually written (`pub fn f(x: u32) -> Vec<u8>`),
/// in one pass over the tokens.
pub fn tidy_tokens(tokens: TokenStream) -> String {
    let mut out = String::new();
    write_tokens(&mut out, tokens);
    out.trim().to_string()
}

fn write_tokens(out: &mut String, tokens: TokenStream) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    // Whether the last thing written was a word (identifier, literal, closing bracket),
    // so that a following word needs a space.
    let mut word = false;
    let mut i = 0;
    while i < tts.len() {
        match &tts[i] {
            TokenTree::Ident(id) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&id.to_string());
                word = true;
            }
            TokenTree::Literal(l) => {
                if word {
                    out.push(' ');
                }
                out.push_str(&l.to_string());
                word = true;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => (if word { " [" } else { "[" }, "]"),
                    Delimiter::Brace => (" { ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(out, g.stream());
                while out.ends_with(' ') || out.ends_with(',') {
                    out.pop();
                }
                out.push_str(close);
                word = true;
            }
            TokenTree::Punct(p) => {
                let c = p.as_char();
                let joint = p.spacing() == proc_macro2::Spacing::Joint;
                let next = match tts.get(i + 1) {
                    Some(TokenTree::Punct(n)) => Some(n.as_char()),
                    _ => None,
                };
                let pair = |a: char, b: char| c == a && joint && next == Some(b);
                let spaced = |out: &mut String, s: &str| {
                    while out.ends_with(' ') {
                        out.pop();
                    }
                    out.push_str(s);
                };
                word = false;
                if pair(':', ':') {
                    spaced(out, "::");
                    i += 2;
                    continue;
                }
                if pair('-', '>') || pair('=', '>') {
                    spaced(out, if c == '-' { " -> " } else { " => " });
                    i += 2;
                    continue;
                }
                match c {
                    ':' => spaced(out, ": "),
                    ',' => spaced(out, ", "),
                    ';' => spaced(out, "; "),
                    '=' | '+' => spaced(out, if c == '=' { " = " } else { " + " }),
                    '>' => {
                        out.push('>');
                        word = true;
                    }
                    '\'' => {
                        if out.ends_with(|ch: char| ch.is_alphanumeric() || ch == '_') {
                            out.push(' ');
                        }
                        out.push('\'');
                    }
                    other => out.push(other),
                }
            }
        }
        i += 1;
    }
}

/// The last path segment of a type (`Gic` for `crate::gic::Gic`), else its tokens.
pub fn type_name(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        other => tidy_tokens(other.to_token_stream()),
    }
}

impl Collector<'_> {
    fn items(
        &mut self,
        items: &[syn::Item],
        inline: &mut Vec<String>,
        inline_attrs: &mut Vec<Option<String>>,
    ) {
        for item in items {
            self.item(item, inline, inline_attrs);
        }
    }

    fn push_item(&mut self, kind: ItemKind, name: String, signature: String, line: usize) {
        self.facts.items.push(Item {
            kind,
            name,
            signature,
            line,
        });
    }

    /// Records a struct, enum, union or trait as `vis keyword Name<Generics>`.
    fn type_item(
        &mut self,
        kind: ItemKind,
        keyword: &str,
        prefix: &str,
        vis: &syn::Visibility,
        ident: &syn::Ident,
        generics: &syn::Generics,
    ) {
        let kw = syn::Ident::new(keyword, ident.span());
        self.push_item(
            kind,
            format!("{prefix}{ident}"),
            tidy_tokens(quote::quote!(#vis #kw #ident #generics)),
            line_of(ident),
        );
    }

    fn item(
        &mut self,
        item: &syn::Item,
        inline: &mut Vec<String>,
        inline_attrs: &mut Vec<Option<String>>,
    ) {
        // Items of nested inline modules are reported with their path prefix.
        let prefix = if inline.is_empty() {
            String::new()
        } else {
            format!("{}::", inline.join("::"))
        };
        match item {
            syn::Item::Mod(m) => {
                if is_cfg_test(&m.attrs) {
                    return;
                }
                let name = m.ident.unraw_string();
                match &m.content {
                    Some((_, content)) => {
                        inline.push(name);
                        inline_attrs.push(path_attr(&m.attrs));
                        self.items(content, inline, inline_attrs);
                        inline.pop();
                        inline_attrs.pop();
                    }
                    None => {
                        // A module whose file is chosen per architecture with
                        // `cfg_attr(…, path = …)` is followed to its AArch64 file.
                        let (path_attr, gate) = match path_attr(&m.attrs) {
                            Some(p) => (Some(p), arch_gate(&m.attrs)),
                            None => match arm_cfg_attr_path(&m.attrs) {
                                Some(p) => (Some(p), Some(ArchGate::Arm)),
                                None => (None, arch_gate(&m.attrs)),
                            },
                        };
                        self.facts.mods.push(ModDecl {
                            inline_path: inline.clone(),
                            inline_path_attrs: inline_attrs.clone(),
                            name,
                            path_attr,
                            line: line_of(&m.ident),
                            gate,
                        })
                    }
                }
            }
            syn::Item::Use(u) => {
                let mut out = Vec::new();
                flatten_use(&u.tree, &mut Vec::new(), &mut out);
                for (segments, line) in out {
                    self.path_evidence(&segments, line);
                    self.facts.uses.push(UsePath {
                        inline_path: inline.clone(),
                        segments,
                    });
                }
            }
            syn::Item::Fn(f) if is_pub(&f.vis) => {
                let (vis, sig) = (&f.vis, &f.sig);
                self.push_item(
                    ItemKind::Fn,
                    format!("{prefix}{}", f.sig.ident),
                    tidy_tokens(quote::quote!(#vis #sig)),
                    line_of(&f.sig.ident),
                );
            }
            syn::Item::Struct(s) if is_pub(&s.vis) => self.type_item(
                ItemKind::Struct,
                "struct",
                &prefix,
                &s.vis,
                &s.ident,
                &s.generics,
            ),
            syn::Item::Enum(e) if is_pub(&e.vis) => self.type_item(
                ItemKind::Enum,
                "enum",
                &prefix,
                &e.vis,
                &e.ident,
                &e.generics,
            ),
            syn::Item::Union(u) if is_pub(&u.vis) => self.type_item(
                ItemKind::Union,
                "union",
                &prefix,
                &u.vis,
                &u.ident,
                &u.generics,
            ),
            syn::Item::Trait(t) if is_pub(&t.vis) => self.type_item(
                ItemKind::Trait,
                "trait",
                &prefix,
                &t.vis,
                &t.ident,
                &t.generics,
            ),
            syn::Item::Type(t) if is_pub(&t.vis) => {
                let (vis, ident, generics, ty) = (&t.vis, &t.ident, &t.generics, &t.ty);
                self.push_item(
                    ItemKind::Type,
                    format!("{prefix}{ident}"),
                    tidy_tokens(quote::quote!(#vis type #ident #generics = #ty)),
                    line_of(ident),
                );
            }
            syn::Item::Const(c) if is_pub(&c.vis) => {
                let (vis, ident, ty) = (&c.vis, &c.ident, &c.ty);
                self.push_item(
                    ItemKind::Const,
                    format!("{prefix}{ident}"),
                    tidy_tokens(quote::quote!(#vis const #ident: #ty)),
                    line_of(ident),
                );
            }
            syn::Item::Static(s) if is_pub(&s.vis) => {
                let (vis, mutability, ident, ty) = (&s.vis, &s.mutability, &s.ident, &s.ty);
                self.push_item(
                    ItemKind::Static,
                    format!("{prefix}{ident}"),
                    tidy_tokens(quote::quote!(#vis static #mutability #ident: #ty)),
                    line_of(ident),
                );
            }
            syn::Item::Macro(m) => {
                let exported = m.attrs.iter().any(|a| a.path().is_ident("macro_export"));
                if let (Some(ident), true) = (&m.ident, exported) {
                    self.push_item(
                        ItemKind::Macro,
                        format!("{prefix}{ident}"),
                        format!("macro_rules! {ident}"),
                        line_of(ident),
                    );
                }
            }
            syn::Item::Impl(imp) => {
                let self_ty = type_name(&imp.self_ty);
                if let Some((_, trait_path, _)) = &imp.trait_ {
                    let tr = tidy_tokens(trait_path.to_token_stream());
                    self.push_item(
                        ItemKind::Impl,
                        format!("{prefix}{tr} for {self_ty}"),
                        format!(
                            "impl {tr} for {}",
                            tidy_tokens(imp.self_ty.to_token_stream())
                        ),
                        line_of(&imp.self_ty),
                    );
                    return;
                }
                for it in &imp.items {
                    if let syn::ImplItem::Fn(f) = it {
                        if is_pub(&f.vis) {
                            let (vis, sig) = (&f.vis, &f.sig);
                            self.push_item(
                                ItemKind::Method,
                                format!("{prefix}{self_ty}::{}", f.sig.ident),
                                tidy_tokens(quote::quote!(#vis #sig)),
                                line_of(&f.sig.ident),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Replaces every function body with `{}`, scanning it for evidence first. Macro
    /// invocations are left whole (the syntax-tree visitor scans them).
    fn strip_bodies(&mut self, tokens: TokenStream) -> TokenStream {
        let mut out = Vec::new();
        let mut after_fn = false;
        let mut prev_bang = false;
        for tt in tokens {
            match tt {
                TokenTree::Group(g) => {
                    if after_fn && g.delimiter() == Delimiter::Brace {
                        self.scan_body(&g.stream());
                        let mut empty = Group::new(Delimiter::Brace, TokenStream::new());
                        empty.set_span(g.span());
                        out.push(TokenTree::Group(empty));
                        after_fn = false;
                    } else if prev_bang {
                        // `name!(…)` or `macro_rules! name { … }`'s body: untouched.
                        out.push(TokenTree::Group(g));
                    } else {
                        let mut ng = Group::new(g.delimiter(), self.strip_bodies(g.stream()));
                        ng.set_span(g.span());
                        out.push(TokenTree::Group(ng));
                    }
                    prev_bang = false;
                }
                TokenTree::Ident(id) => {
                    if id == "fn" {
                        after_fn = true;
                    }
                    // `macro_rules! name { … }`: the body group follows the name.
                    prev_bang = prev_bang
                        && matches!(
                            out.len().checked_sub(2).and_then(|k| out.get(k)),
                            Some(TokenTree::Ident(m)) if m == "macro_rules"
                        );
                    out.push(TokenTree::Ident(id));
                }
                TokenTree::Punct(p) => {
                    match p.as_char() {
                        // A declaration without a body (trait method, extern fn).
                        ';' => after_fn = false,
                        '!' => prev_bang = true,
                        _ => prev_bang = false,
                    }
                    out.push(TokenTree::Punct(p));
                }
                other => {
                    prev_bang = false;
                    out.push(other);
                }
            }
        }
        out.into_iter().collect()
    }

    /// Evidence in a function body, from its tokens: macro calls (`asm!`, `cfg!`,
    /// `todo!`), `#[cfg]` attributes, `…::arch::aarch64…` paths, nested functions.
    fn scan_body(&mut self, tokens: &TokenStream) {
        let tts: Vec<TokenTree> = tokens.clone().into_iter().collect();
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    let mut j = i + 1;
                    if matches!(tts.get(j), Some(TokenTree::Punct(b)) if b.as_char() == '!') {
                        j += 1;
                    }
                    if let Some(TokenTree::Group(g)) = tts.get(j) {
                        if g.delimiter() == Delimiter::Bracket {
                            let text = tidy_tokens(g.stream());
                            if text.starts_with("cfg") {
                                self.cfg_text(&text, g.span().start().line);
                            }
                            i = j + 1;
                            continue;
                        }
                    }
                }
                TokenTree::Ident(id) => {
                    // A path run `a::b::c`, possibly a macro call `a::b::c!(…)`.
                    let mut segs = vec![id.to_string()];
                    let mut j = i + 1;
                    while let (
                        Some(TokenTree::Punct(c1)),
                        Some(TokenTree::Punct(c2)),
                        Some(TokenTree::Ident(next)),
                    ) = (tts.get(j), tts.get(j + 1), tts.get(j + 2))
                    {
                        if c1.as_char() != ':' || c2.as_char() != ':' {
                            break;
                        }
                        segs.push(next.to_string());
                        j += 3;
                    }
                    self.path_evidence(&segs, id.span().start().line);
                    if let (Some(TokenTree::Punct(bang)), Some(TokenTree::Group(g))) =
                        (tts.get(j), tts.get(j + 1))
                    {
                        if bang.as_char() == '!' {
                            let name = segs.last().map(String::as_str).unwrap_or_default();
                            self.body_macro(name, id.span().start().line, &g.stream());
                            i = j + 2;
                            continue;
                        }
                    }
                    i = j;
                    continue;
                }
                TokenTree::Group(g) => self.scan_body(&g.stream()),
                _ => {}
            }
            i += 1;
        }
    }

    fn body_macro(&mut self, name: &str, line: usize, tokens: &TokenStream) {
        match name {
            "todo" | "unimplemented" => self.facts.has_placeholders = true,
            "cfg" => {
                let text = format!("cfg({})", tidy_tokens(tokens.clone()));
                self.cfg_text(&text, line);
            }
            _ => {}
        }
        let in_asm = matches!(name, "asm" | "global_asm" | "naked_asm");
        self.macro_tokens(tokens, in_asm);
    }

    /// Evidence in a path: `core::arch::aarch64…` (also std/alloc); a crate's own
    /// ARM64 module (`crate::arch::aarch64::Gic`), which ties the code using it to
    /// AArch64; and segments naming a known system register
    /// (`sysreg::hcr_el2::write(…)`, `use …::{vttbr_el2}`).
    fn path_evidence(&mut self, segs: &[String], line: usize) {
        if let (Some(first), true) = (segs.first(), segs.len() >= 2) {
            let first = first.strip_prefix("r#").unwrap_or(first);
            if !matches!(first, "crate" | "self" | "super" | "Self")
                && self.facts.path_roots.last().map(String::as_str) != Some(first)
            {
                self.facts.path_roots.push(first.to_string());
            }
        }
        for seg in segs {
            if is_sysreg_shape(seg) && self.knowledge.is_known_sysreg(seg) {
                self.evidence(EvidenceKind::Sysreg, seg.to_ascii_uppercase(), line);
            }
        }
        let from_std = segs
            .first()
            .is_some_and(|s| matches!(s.as_str(), "core" | "std" | "alloc"));
        let arm = |s: &String| names_arm64(s);
        if from_std && segs.windows(2).any(|w| w[0] == "arch" && arm(&w[1])) {
            self.evidence(EvidenceKind::CoreArch, segs.join("::"), line);
        } else if !from_std && segs.iter().any(arm) {
            self.evidence(EvidenceKind::ArchPath, segs.join("::"), line);
        } else if segs.len() >= 2 && self.knowledge.arch.is_arm_crate(&segs[0]) {
            self.evidence(EvidenceKind::ArmCratePath, segs.join("::"), line);
        }
    }

    fn evidence(&mut self, kind: EvidenceKind, name: String, line: usize) {
        self.facts.evidence.push(Evidence {
            kind,
            name,
            line: Some(line),
            file: None,
            line_in_file: None,
            count: 1,
        });
    }

    fn attr(&mut self, attr: &syn::Attribute) {
        let p = attr.path();
        if p.is_ident("cfg") || p.is_ident("cfg_attr") {
            let text = tidy_tokens(attr.meta.to_token_stream());
            self.cfg_text(&text, line_of(attr));
        }
    }

    fn cfg_text(&mut self, text: &str, line: usize) {
        if !text.contains("target_arch") {
            return;
        }
        let compact = text.replace(' ', "");
        if compact.contains("target_arch=\"aarch64\"") {
            let inner = text
                .strip_prefix("cfg(")
                .or_else(|| text.strip_prefix("cfg_attr("))
                .and_then(|t| t.strip_suffix(')'))
                .unwrap_or(text)
                .replace("= \"", "=\"")
                .replace("=\"", " = \"")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            self.evidence(EvidenceKind::Cfg, inner, line);
        }
        if compact.contains("target_arch=\"x86_64\"") {
            self.facts.has_x86_64_cfg = true;
        }
    }
}

/// A path segment that names the AArch64 layer: a module `aarch64`/`arm64` or a type
/// such as `Aarch64`, `AArch64Timer`, `Arm64Platform`.
fn names_arm64(seg: &str) -> bool {
    seg == "aarch64"
        || seg == "arm64"
        || seg.contains("Aarch64")
        || seg.contains("AArch64")
        || seg.contains("Arm64")
}

/// Whether a literal token is a (raw) string: `"…"`, `r"…"`, `r#"…"#`.
pub fn is_string_literal(token: &str) -> bool {
    token.starts_with('"') || token.starts_with("r\"") || token.starts_with("r#")
}

/// Every path a `use` tree imports, with the line of its last segment.
fn flatten_use(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
    let mut leaf = |last: Option<&syn::Ident>, line: usize| {
        let mut v = prefix.clone();
        v.extend(last.map(UnrawString::unraw_string));
        out.push((v, line));
    };
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.unraw_string());
            flatten_use(&p.tree, prefix, out);
            prefix.pop();
        }
        // `use a::b::{self}` imports `a::b` itself.
        syn::UseTree::Name(n) if n.ident == "self" => leaf(None, line_of(&n.ident)),
        syn::UseTree::Name(n) => leaf(Some(&n.ident), line_of(&n.ident)),
        syn::UseTree::Rename(r) if r.ident == "self" => leaf(None, line_of(&r.ident)),
        syn::UseTree::Rename(r) => leaf(Some(&r.ident), line_of(&r.ident)),
        syn::UseTree::Glob(g) => leaf(None, line_of(g)),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                flatten_use(t, prefix, out);
            }
        }
    }
}

trait UnrawString {
    fn unraw_string(&self) -> String;
}

impl UnrawString for syn::Ident {
    fn unraw_string(&self) -> String {
        let s = self.to_string();
        s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_cfg_test(&m.attrs) {
            return;
        }
        syn::visit::visit_item_mod(self, m);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        self.attr(attr);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segs: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.path_evidence(&segs, line_of(path));
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let name = mac
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        self.body_macro(&name, line_of(&mac.path), &mac.tokens);
        syn::visit::visit_macro(self, mac);
    }
}

#[cfg(test)]
mod tests {
    use super::asm::{is_arm_register, is_encoded_sysreg};
    use super::*;

    fn facts(src: &str) -> FileFacts {
        let k = Knowledge::embedded().unwrap();
        analyze_file(src, Path::new("/nonexistent/x.rs"), &k).unwrap()
    }

    fn has(f: &FileFacts, kind: EvidenceKind, name: &str) -> Option<usize> {
        f.evidence
            .iter()
            .find(|e| e.kind == kind && e.name == name)
            .and_then(|e| e.line)
    }

    #[test]
    fn finds_asm_mnemonics_and_sysregs_with_lines() {
        let f = facts(
            "use core::arch::asm;\n\
             pub fn read_hcr() -> u64 {\n\
                 let v: u64;\n\
                 unsafe { asm!(\"mrs {}, hcr_el2\", out(reg) v) };\n\
                 v\n\
             }\n\
             pub fn flush() {\n\
                 unsafe { asm!(\"dsb ish\", \"tlbi vmalls12e1is\\n dsb ish\\n isb\") };\n\
             }\n",
        );
        assert_eq!(has(&f, EvidenceKind::Sysreg, "HCR_EL2"), Some(4));
        assert_eq!(has(&f, EvidenceKind::AsmMnemonic, "mrs"), Some(4));
        assert_eq!(has(&f, EvidenceKind::AsmMnemonic, "tlbi"), Some(8));
        let dsb = f
            .evidence
            .iter()
            .find(|e| e.name == "dsb")
            .expect("dsb found");
        assert_eq!(dsb.count, 2);
        assert!(has(&f, EvidenceKind::CoreArch, "core::arch::asm").is_none());
        assert_eq!(f.items.len(), 2);
        assert_eq!(f.items[0].signature, "pub fn read_hcr() -> u64");
    }

    #[test]
    fn finds_cfg_core_arch_and_sysreg_identifiers_in_macros() {
        let f = facts(
            "#[cfg(target_arch = \"aarch64\")]\n\
             mod imp;\n\
             use core::arch::aarch64::__wfi;\n\
             fn f() { read_sysreg!(ICH_LR0_EL2); if cfg!(target_arch = \"x86_64\") {} }\n",
        );
        assert_eq!(
            has(&f, EvidenceKind::Cfg, "target_arch = \"aarch64\""),
            Some(1),
            "{:?}",
            f.evidence
        );
        assert_eq!(
            has(&f, EvidenceKind::CoreArch, "core::arch::aarch64::__wfi"),
            Some(3)
        );
        assert_eq!(has(&f, EvidenceKind::Sysreg, "ICH_LR0_EL2"), Some(4));
        assert!(f.has_x86_64_cfg);
        assert_eq!(f.mods.len(), 1);
        assert_eq!(f.mods[0].name, "imp");
    }

    #[test]
    fn plain_rust_has_no_evidence() {
        let f = facts(
            "pub struct Vm { pub id: u32 }\n\
             impl Vm { pub fn new(id: u32) -> Self { Self { id } } fn private(&self) {} }\n\
             #[cfg(test)] mod tests { fn t() { let _ = \"msr hcr_el2, x0\"; } }\n",
        );
        assert!(f.evidence.is_empty(), "{:?}", f.evidence);
        let names: Vec<&str> = f.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["Vm", "Vm::new"]);
        assert_eq!(f.items[1].signature, "pub fn new(id: u32) -> Self");
    }

    #[test]
    fn inline_modules_and_path_attributes_are_recorded() {
        let f = facts(
            "pub mod outer { #[path = \"deep/x.rs\"] mod x; pub fn g() {} use super::y::Z; }\n",
        );
        assert_eq!(f.mods[0].inline_path, ["outer"]);
        assert_eq!(f.mods[0].path_attr.as_deref(), Some("deep/x.rs"));
        assert_eq!(f.items[0].name, "outer::g");
        assert_eq!(f.uses[0].segments, ["super", "y", "Z"]);
        assert_eq!(f.uses[0].inline_path, ["outer"]);
    }

    #[test]
    fn evidence_in_function_bodies_survives_body_stripping() {
        let f = facts(
            "pub fn a() {\n\
                 #[cfg(target_arch = \"aarch64\")]\n\
                 { unsafe { core::arch::asm!(\"eret\") } }\n\
                 let _ = core::arch::aarch64::__isb;\n\
             }\n\
             macro_rules! acc { () => { pub fn r() -> u64 { unsafe { asm!(\"mrs x0, vbar_el2\") }; 0 } } }\n\
             impl S { pub fn later(&self) { todo!() } }\n",
        );
        assert_eq!(
            has(&f, EvidenceKind::Cfg, "target_arch = \"aarch64\""),
            Some(2)
        );
        assert_eq!(has(&f, EvidenceKind::AsmMnemonic, "eret"), Some(3));
        assert_eq!(
            has(&f, EvidenceKind::CoreArch, "core::arch::aarch64::__isb"),
            Some(4)
        );
        assert_eq!(has(&f, EvidenceKind::Sysreg, "VBAR_EL2"), Some(6));
        assert!(f.has_placeholders);
        let names: Vec<&str> = f.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "S::later"]);
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let k = Knowledge::embedded().unwrap();
        let e = analyze_file("fn ok() {}\nfn bad( {\n", Path::new("x.rs"), &k).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.column > 1);
    }

    #[test]
    fn signatures_are_spaced_like_rust() {
        let sig = |src: &str| tidy_tokens(src.parse().unwrap());
        assert_eq!(
            sig("pub ( crate ) unsafe fn map < 'a , T : Copy > ( & 'a mut self , ipa : u64 , pages : & mut [ T ] ) -> Result < ( ) , Error >"),
            "pub(crate) unsafe fn map<'a, T: Copy>(&'a mut self, ipa: u64, pages: &mut [T]) -> Result<(), Error>"
        );
        assert_eq!(
            sig("pub static mut TABLE : [ u64 ; 512 ]"),
            "pub static mut TABLE: [u64; 512]"
        );
        assert_eq!(
            sig("pub extern \"C\" fn entry ( p : * const u8 , ) -> !"),
            "pub extern \"C\" fn entry(p: *const u8) -> !"
        );
        assert_eq!(
            sig("impl core :: fmt :: Write for Uart"),
            "impl core::fmt::Write for Uart"
        );
        assert_eq!(
            sig("pub type H = fn ( u32 ) -> u32"),
            "pub type H = fn(u32) -> u32"
        );
    }

    #[test]
    fn arm_registers_and_modifiers_in_asm_are_evidence() {
        let f = facts("fn f(a: u64) { unsafe { core::arch::asm!(\"str {0:w}, [{1}]\", \"mov x0, xzr\", in(reg) a, in(reg) a) } }\n");
        assert_eq!(
            has(&f, EvidenceKind::AsmRegister, "{:w}"),
            Some(1),
            "{:?}",
            f.evidence
        );
        assert_eq!(
            has(&f, EvidenceKind::AsmRegister, "x0"),
            Some(1),
            "{:?}",
            f.evidence
        );
        assert_eq!(has(&f, EvidenceKind::AsmRegister, "xzr"), Some(1));
        assert!(is_arm_register("w30") && !is_arm_register("x31") && !is_arm_register("x01"));
        assert!(!is_arm_register("rax") && !is_arm_register("x") && !is_arm_register("width"));
    }

    #[test]
    fn raw_string_assembly_is_scanned() {
        let f = facts("core::arch::global_asm!(\n    r#\"\n.macro v i\n    mov x1, #\\i\n.endm\n    eret\n\"#\n);\n");
        assert_eq!(
            has(&f, EvidenceKind::AsmRegister, "x1"),
            Some(4),
            "{:?}",
            f.evidence
        );
        assert_eq!(has(&f, EvidenceKind::AsmMnemonic, "eret"), Some(6));
    }

    #[test]
    fn arch_gates_of_cfgs() {
        assert_eq!(
            arch_gate_of("cfg(target_arch = \"aarch64\")"),
            Some(ArchGate::Arm)
        );
        assert_eq!(
            arch_gate_of("cfg(any(target_arch = \"aarch64\", target_arch = \"arm\"))"),
            Some(ArchGate::Arm)
        );
        assert_eq!(
            arch_gate_of("cfg(any(target_arch = \"aarch64\", target_arch = \"riscv64\"))"),
            None
        );
        assert_eq!(
            arch_gate_of("cfg(target_arch = \"x86_64\")"),
            Some(ArchGate::X86_64)
        );
        assert_eq!(
            arch_gate_of("cfg(target_arch = \"riscv64\")"),
            Some(ArchGate::Other)
        );
        assert_eq!(arch_gate_of("cfg(not(target_arch = \"aarch64\"))"), None);
        assert_eq!(arch_gate_of("cfg(feature = \"x\")"), None);
    }

    #[test]
    fn gated_mods_cfg_attr_paths_and_file_gates_are_recorded() {
        let f = facts(
            "#![cfg(target_arch = \"riscv64\")]\n\
             #[cfg(target_arch = \"aarch64\")] mod a;\n\
             #[cfg(target_arch = \"x86_64\")] mod x86_64;\n\
             #[cfg_attr(target_arch = \"aarch64\", path = \"arch/aarch64/mod.rs\")]\n\
             #[cfg_attr(target_arch = \"x86_64\", path = \"arch/x86_64/mod.rs\")]\n\
             mod arch;\n\
             mod plain;\n",
        );
        assert_eq!(f.file_gate, Some(ArchGate::Other));
        let gates: Vec<_> = f.mods.iter().map(|d| (d.name.as_str(), d.gate)).collect();
        assert_eq!(
            gates,
            [
                ("a", Some(ArchGate::Arm)),
                ("x86_64", Some(ArchGate::X86_64)),
                ("arch", Some(ArchGate::Arm)),
                ("plain", None)
            ]
        );
        assert_eq!(f.mods[2].path_attr.as_deref(), Some("arch/aarch64/mod.rs"));
    }

    #[test]
    fn shared_mnemonics_and_registers_are_not_arm64_only() {
        let k = Knowledge::embedded().unwrap();
        let riscv = facts(
            "fn f() { unsafe { core::arch::asm!(\"sd x1, 0(sp)\", \"ld x1, 0(sp)\", \"bl 1f\", \"1:\", \"wfi\", \"ret\") } }\n",
        );
        assert!(
            !riscv.evidence.iter().any(|e| is_arm64_only(e, &k)),
            "{:?}",
            riscv.evidence
        );
        let arm = facts("fn f() { unsafe { core::arch::asm!(\"bl 1f\", \"1:\", \"eret\") } }\n");
        assert!(arm.evidence.iter().any(|e| is_arm64_only(e, &k)));
        let multi = facts("fn f(a: Arch) -> bool { matches!(a, Arch::Aarch64) }\n");
        assert!(!multi.evidence.iter().any(|e| is_arm64_only(e, &k)));
    }

    #[test]
    fn paths_through_arm_crates_are_evidence_unless_local() {
        let f = facts(
            "use aarch64_cpu::registers::CurrentEL;\nfn f() { psci::cpu_on(); }\nmod psci;\n",
        );
        assert!(f
            .evidence
            .iter()
            .any(|e| e.kind == EvidenceKind::ArmCratePath && e.name.starts_with("aarch64_cpu")));
        assert!(
            !f.evidence.iter().any(|e| e.name.starts_with("psci")),
            "{:?}",
            f.evidence
        );
        assert_eq!(f.path_roots, ["aarch64_cpu", "psci"]);
    }

    #[test]
    fn sysreg_shapes() {
        assert!(is_sysreg_shape("vttbr_el2"));
        assert!(is_sysreg_shape("CNTV_CTL_EL0"));
        assert!(!is_sysreg_shape("level_el"));
        assert!(!is_sysreg_shape("_el2"));
        assert!(is_encoded_sysreg("S3_4_C12_C9_5"));
        assert!(!is_encoded_sysreg("S3_4_12"));
    }
}
