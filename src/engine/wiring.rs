//! The cfg wiring that lets both architectures build from one tree.
//!
//! - In place (a crate root, `arch/mod.rs`, shared code): every item that reaches into
//!   the ARM64 layer is gated to aarch64 and gets an x86_64 twin beside it: `mod` lines
//!   of ported modules point at their x86_64 files (with `#[path]` where the file is
//!   not where rustc would look), paths into `aarch64` modules point at `x86_64`, and
//!   ARM64 code in a twin is translated or stubbed.
//! - Split (`guest.rs` → `guest/x86_64.rs`): a file that mixes ARM64 code with shared
//!   code keeps the shared code; its ARM64 items are gated to aarch64 and the x86_64
//!   child, re-exported, provides their counterparts.

use std::collections::{BTreeMap, BTreeSet};

use super::derive::{mirror_cfgs, rename_arm64_paths};
use super::source::splice;
use super::source::SourceItem;
use super::stub::stub_arm64_bodies;
use crate::knowledge::Knowledge;

/// The attribute that gates an item to the ARM64 build.
pub const CFG_AARCH64: &str = "#[cfg(target_arch = \"aarch64\")]";
/// The attribute that gates an item to the x86_64 build.
pub const CFG_X86_64: &str = "#[cfg(target_arch = \"x86_64\")]";

fn normalized(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Workspace-relative directory of a workspace-relative file.
fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Where rustc looks for `mod name;` declared in file `parent`.
fn natural_child_files(parent: &str, name: &str) -> [String; 2] {
    let dir = dir_of(parent);
    let file = parent.rsplit('/').next().unwrap_or(parent);
    let base = match file {
        "mod.rs" | "lib.rs" | "main.rs" => dir.to_string(),
        f => join(dir, f.trim_end_matches(".rs")),
    };
    [
        join(&base, &format!("{name}.rs")),
        join(&base, &format!("{name}/mod.rs")),
    ]
}

/// `to` relative to directory `from_dir` (both workspace-relative).
fn relative(from_dir: &str, to: &str) -> String {
    let from: Vec<&str> = from_dir.split('/').filter(|s| !s.is_empty()).collect();
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out: Vec<&str> = vec![".."; from.len() - common];
    out.extend(&to_parts[common..]);
    out.join("/")
}

/// Drops `#[path = "…"]` attributes from a `mod` declaration.
fn without_path_attr(text: &str) -> String {
    let mut out = text.to_string();
    while let Some(i) = out.find("#[path") {
        let Some(end) = out[i..].find(']') else {
            break;
        };
        let mut end = i + end + 1;
        if out[end..].starts_with('\n') {
            end += 1;
        }
        out.replace_range(i..end, "");
    }
    out
}

/// Whether an item's own cfg makes it exist off aarch64: `#[cfg(not(target_arch =
/// "aarch64"))]` and the like.
fn provides_for_other_arches(text: &str) -> bool {
    let flat: String = text.split_whitespace().collect();
    flat.contains("cfg(not(target_arch=\"aarch64\"))")
}

/// The names items define (modules, functions, types, …; `use` leaves).
fn defined_names(it: &SourceItem) -> Vec<String> {
    if let Some(n) = &it.mod_decl {
        return vec![n.clone()];
    }
    if let Some(n) = &it.name {
        return vec![n.clone()];
    }
    use_leaves(&it.text)
}

fn use_leaves(text: &str) -> Vec<String> {
    let Ok(u) = syn::parse_str::<syn::ItemUse>(text) else {
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

/// The result of wiring a file in place.
pub struct Wired {
    /// The file as wired: ARM64 items gated, their x86_64 twins beside them.
    pub text: String,
    /// The x86_64 twins added, in order (their items are the module's coverage).
    pub twins: Vec<String>,
}

/// Wires file `source` (text `text`) in place. `children` maps each `mod` name of this
/// file whose module the port writes elsewhere to that module's x86_64 file.
pub fn in_place(
    source: &str,
    text: &str,
    items: &[SourceItem],
    children: &BTreeMap<String, String>,
    knowledge: &Knowledge,
) -> Wired {
    let existing: BTreeSet<String> = items.iter().map(|i| normalized(&i.text)).collect();
    // What x86_64-gated items already define: those twins exist (by hand or by a
    // workspace that prepared its x86_64 lines).
    // So do items under `cfg(not(target_arch = "aarch64"))` (a host or other-arch
    // fallback the workspace keeps beside its aarch64 version).
    let x86_names: BTreeSet<String> = items
        .iter()
        .filter(|i| i.cfg_x86_64 || provides_for_other_arches(&i.text))
        .flat_map(defined_names)
        .collect();
    let mut edits: Vec<(usize, String)> = Vec::new();
    let mut twins = Vec::new();
    for it in items {
        if it.cfg_x86_64 || it.text.contains("not(target_arch") {
            continue;
        }
        let twin = if let Some(name) = &it.mod_decl {
            let Some(target) = children.get(name) else {
                continue;
            };
            // `#[cfg_attr(target_arch = "x86_64", path = "…")]`: wired already.
            let flat: String = it.text.split_whitespace().collect();
            if flat.contains("target_arch=\"x86_64\"") {
                continue;
            }
            let twin_name = if matches!(name.as_str(), "aarch64" | "arm64") {
                "x86_64"
            } else {
                name.as_str()
            };
            if x86_names.contains(twin_name) {
                continue;
            }
            let mut decl = rename_arm64_paths(&without_path_attr(&it.text));
            if !natural_child_files(source, twin_name).contains(target) {
                let rel = relative(dir_of(source), target);
                // After the item's own attributes, before its visibility.
                let at = decl.find(&format!("mod {twin_name}")).unwrap_or(0);
                let vis_at = decl[..at].rfind(['\n', ']']).map_or(0, |i| i + 1);
                let vis_at = vis_at + decl[vis_at..].len() - decl[vis_at..].trim_start().len();
                decl.insert_str(vis_at, &format!("#[path = \"{rel}\"]\n"));
            }
            mirror_cfgs(&decl)
        } else {
            if !it.is_arm64() {
                continue;
            }
            let (stubbed, _) = stub_arm64_bodies(&it.text, knowledge);
            let twin = mirror_cfgs(&rename_arm64_paths(&stubbed));
            if twin == it.text {
                continue; // nothing architecture-specific to twin (a `cfg!` test)
            }
            if defined_names(it).iter().any(|n| x86_names.contains(n)) {
                continue;
            }
            twin
        };
        let twin = if it.cfg_aarch64 {
            twin
        } else {
            format!("{CFG_X86_64}\n{twin}")
        };
        if existing.contains(&normalized(&twin)) {
            continue; // wired by an earlier run
        }
        if !it.cfg_aarch64 {
            edits.push((it.range.start, format!("{CFG_AARCH64}\n")));
        }
        edits.push((it.range.end, format!("\n{twin}")));
        twins.push(twin);
    }
    Wired {
        text: insert(text, edits),
        twins,
    }
}

/// Whether a `#![feature]` name is an ARM-only library or target feature
/// (`stdarch_arm_hints`, `stdarch_aarch64_prefetch`, `arm_target_feature`): the
/// standard library of another target does not know it, and rustc rejects it there.
fn arm_only_feature(name: &str) -> bool {
    name.split('_')
        .any(|w| matches!(w, "arm" | "aarch64" | "arm64" | "neon"))
}

/// Moves the ARM-only names of single-line `#![feature(…)]` attributes under
/// `#![cfg_attr(target_arch = "aarch64", feature(…))]`, so the crate builds for x86_64.
pub fn gate_arm_features(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end();
        let Some(list) = body
            .strip_prefix("#![feature(")
            .and_then(|r| r.strip_suffix(")]"))
        else {
            out.push_str(line);
            continue;
        };
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        let (arm, rest): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| arm_only_feature(n));
        if arm.is_empty() {
            out.push_str(line);
            continue;
        }
        let newline = if line.ends_with('\n') { "\n" } else { "" };
        if !rest.is_empty() {
            out.push_str(&format!("#![feature({})]\n", rest.join(", ")));
        }
        out.push_str(&format!(
            "#![cfg_attr(target_arch = \"aarch64\", feature({}))]{newline}",
            arm.join(", ")
        ));
    }
    out
}

/// Inserts `(offset, text)` edits.
fn insert(text: &str, edits: Vec<(usize, String)>) -> String {
    splice(text, edits.into_iter().map(|(at, s)| (at..at, s)).collect())
}

/// The x86_64 child of a split module: its ARM64 items, stubbed or translated, visible
/// to the parent.
pub fn split_child(
    module_path: &str,
    source: &str,
    items: &[SourceItem],
    knowledge: &Knowledge,
) -> String {
    let mut text = format!(
        "// x86_64 counterparts of the ARM64 items of `{module_path}` ({source}), derived by\n// cargo-eterna-port: same names and signatures; ARM64 code translated where the\n// porting knowledge has a mechanical mapping, stubbed elsewhere.\n{}\n\n#[allow(unused_imports)]\nuse super::*;\n#[allow(unused_imports)]\nuse core::arch::asm;\n",
        super::derive::ALLOW_LINE
    );
    for it in items {
        if !it.has_arm64_code() || it.mod_decl.is_some() || it.cfg_x86_64 {
            continue;
        }
        if it.kind.is_none() && super::derive::is_use(&it.text) {
            continue;
        }
        // The child is compiled for x86_64 only: the item's aarch64 gate (the one this
        // tool added, or the workspace's own) has no meaning there, and dropping it
        // keeps a re-run's child identical.
        let ungated: String = it
            .text
            .split_inclusive('\n')
            .filter(|l| l.trim() != CFG_AARCH64)
            .collect();
        if it.kind.is_none() && super::derive::is_asm_macro(&it.text) {
            let uses = super::stub::arm64_code(&it.text, knowledge);
            text.push('\n');
            text.push_str(&super::derive::left_out(&ungated, &uses));
            text.push('\n');
            continue;
        }
        let (stubbed, _) = stub_arm64_bodies(&ungated, knowledge);
        let renamed = mirror_cfgs(&rename_arm64_paths(&stubbed));
        // Macros and impl blocks have no visibility of their own.
        let no_visibility = matches!(
            it.kind,
            None | Some(crate::workspace::ItemKind::Macro | crate::workspace::ItemKind::Impl)
        );
        let visible = if it.public || no_visibility {
            renamed
        } else {
            raise_to_pub_super(&renamed)
        };
        text.push('\n');
        text.push_str(&visible);
        text.push('\n');
    }
    text
}

/// Makes a private item `pub(super)`: inserts the visibility after its attributes.
fn raise_to_pub_super(text: &str) -> String {
    use proc_macro2::{TokenStream, TokenTree};
    let Ok(tokens) = text.parse::<TokenStream>() else {
        return text.to_string();
    };
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
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

/// Gates the ARM64 items of a split module to aarch64 and delegates to `x86_64`.
pub fn gate_and_delegate(text: &str, items: &[SourceItem], child: &str) -> String {
    let gated = gated_items(items, &identifiers(child));
    let mut edits = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if gated[i] && !it.cfg_aarch64 && !it.cfg_x86_64 {
            edits.push((it.range.start, format!("{CFG_AARCH64}\n")));
        }
    }
    let mut new = insert(text, edits);
    let delegated = items
        .iter()
        .any(|i| i.mod_decl.as_deref() == Some("x86_64"));
    if !delegated {
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&delegation());
    }
    new
}

/// What [`gate_and_delegate`] appends to a split module.
fn delegation() -> String {
    format!(
        "\n// x86_64 counterparts of the items above, by cargo-eterna-port.\n{CFG_X86_64}\nmod x86_64;\n{CFG_X86_64}\npub use self::x86_64::*;\n"
    )
}

/// A split module's ARM64 source without the port's own edits, as an earlier run of
/// [`gate_and_delegate`] left it in the workspace: its delegation to `x86_64` and the
/// aarch64 gates before top-level items removed. A file without that delegation is
/// returned as it is. (A gate the file had of its own before the first port cannot be
/// told from one the port added, and is removed too.)
pub fn without_split_wiring(text: &str) -> String {
    let trailer = delegation();
    let Some(at) = text.rfind(&trailer) else {
        return text.to_string();
    };
    let rest = format!("{}{}", &text[..at], &text[at + trailer.len()..]);
    rest.split_inclusive('\n')
        .filter(|l| l.trim_end() != CFG_AARCH64)
        .collect()
}

/// Which items of a split module are gated to aarch64: those with ARM64 code, and,
/// to a fixed point, private items and imports used only by gated items and not by
/// the x86_64 child (`child_words`), so the x86_64 build has no unused leftovers.
fn gated_items(items: &[SourceItem], child_words: &[String]) -> Vec<bool> {
    let words: Vec<Vec<String>> = items.iter().map(|i| identifiers(&i.text)).collect();
    let names: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            if i.mod_decl.is_some() {
                Vec::new()
            } else {
                defined_names(i)
            }
        })
        .collect();
    // A `use` is gated for what it imports (an aarch64 module, AArch64 intrinsics), not
    // for names that merely look like system registers (`cntp_ctl_el0::Device`);
    // imports only gated items use follow below.
    let mut gated: Vec<bool> = items
        .iter()
        .map(|i| {
            let arm = if super::derive::is_use(&i.text) {
                identifiers(&i.text)
                    .iter()
                    .any(|w| w == "aarch64" || w == "arm64")
            } else {
                i.is_arm64()
            };
            (arm || i.cfg_aarch64) && !i.cfg_x86_64
        })
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

/// Every identifier-like word of a piece of text.
fn identifiers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::source::items;
    use std::path::Path;

    #[test]
    fn split_modules_gate_arm64_items_and_what_only_they_use() {
        let k = Knowledge::embedded().unwrap();
        let text = "use core::sync::atomic::{AtomicU32, Ordering};\nconst ONLY_ARM: u32 = 1;\nconst SHARED: u32 = 2;\nconst CHILD: u32 = 3;\nstatic N: AtomicU32 = AtomicU32::new(0);\nfn arm() -> u32 { unsafe { core::arch::asm!(\"wfi\") }; N.load(Ordering::Relaxed) + ONLY_ARM + CHILD }\npub fn shared() -> u32 { SHARED }\n";
        let its = items(text, Path::new("g.rs"), &k).unwrap();
        let out = gate_and_delegate(text, &its, "fn x86() -> u32 { CHILD }");
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
        let again = gate_and_delegate(
            &out,
            &items(&out, Path::new("g.rs"), &k).unwrap(),
            "fn x86() -> u32 { CHILD }",
        );
        assert_eq!(again, out);
        // What an earlier run left is shown to the model as the original it was.
        assert_eq!(without_split_wiring(&out), text);
        assert_eq!(without_split_wiring(text), text);
    }

    #[test]
    fn mod_lines_of_ported_modules_get_x86_64_twins_with_paths_where_needed() {
        let k = Knowledge::embedded().unwrap();
        let text = "#![no_std]\nmod arch;\n#[cfg(target_arch = \"aarch64\")]\npub mod gicv3;\nmod vcpu;\n#[cfg(target_arch = \"riscv64\")]\nmod riscv;\n";
        let its = items(text, Path::new("src/lib.rs"), &k).unwrap();
        let children: BTreeMap<String, String> = [
            ("gicv3", "src/x86_64/gicv3/mod.rs"),
            ("vcpu", "src/x86_64/vcpu.rs"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let w = in_place("src/lib.rs", text, &its, &children, &k);
        assert_eq!(
            w.text,
            "#![no_std]\nmod arch;\n#[cfg(target_arch = \"aarch64\")]\npub mod gicv3;\n#[cfg(target_arch = \"x86_64\")]\n#[path = \"x86_64/gicv3/mod.rs\"]\npub mod gicv3;\n#[cfg(target_arch = \"aarch64\")]\nmod vcpu;\n#[cfg(target_arch = \"x86_64\")]\n#[path = \"x86_64/vcpu.rs\"]\nmod vcpu;\n#[cfg(target_arch = \"riscv64\")]\nmod riscv;\n"
        );
        assert_eq!(w.twins.len(), 2);
        // A second run adds nothing.
        let again = in_place(
            "src/lib.rs",
            &w.text,
            &items(&w.text, Path::new("src/lib.rs"), &k).unwrap(),
            &children,
            &k,
        );
        assert_eq!(again.text, w.text);
    }

    #[test]
    fn an_existing_x86_64_mod_line_is_not_doubled() {
        let k = Knowledge::embedded().unwrap();
        let text = "#[cfg(target_arch = \"aarch64\")]\nmod aarch64;\n#[cfg(target_arch = \"x86_64\")]\npub mod x86_64;\n";
        let its = items(text, Path::new("src/arch/mod.rs"), &k).unwrap();
        let children: BTreeMap<String, String> =
            [("aarch64".to_string(), "src/arch/x86_64/mod.rs".to_string())].into();
        let w = in_place("src/arch/mod.rs", text, &its, &children, &k);
        assert_eq!(w.text, text);
    }

    #[test]
    fn a_mod_line_choosing_its_file_per_architecture_is_wired_already() {
        let k = Knowledge::embedded().unwrap();
        let text = "#[cfg_attr(target_arch = \"aarch64\", path = \"arch/aarch64/mod.rs\")]\n#[cfg_attr(target_arch = \"x86_64\", path = \"arch/x86_64/mod.rs\")]\npub mod arch;\n";
        let its = items(text, Path::new("src/hal/mod.rs"), &k).unwrap();
        let children: BTreeMap<String, String> =
            [("arch".to_string(), "src/hal/arch/x86_64/mod.rs".to_string())].into();
        assert_eq!(
            in_place("src/hal/mod.rs", text, &its, &children, &k).text,
            text
        );
    }

    #[test]
    fn arm_only_features_are_gated_to_aarch64() {
        assert_eq!(
            gate_arm_features("#![no_std]\n#![feature(stdarch_arm_hints, naked_functions)]\nmod a;\n"),
            "#![no_std]\n#![feature(naked_functions)]\n#![cfg_attr(target_arch = \"aarch64\", feature(stdarch_arm_hints))]\nmod a;\n"
        );
        let untouched = "#![feature(naked_functions)]\n";
        assert_eq!(gate_arm_features(untouched), untouched);
        // Idempotent.
        let once = gate_arm_features("#![feature(stdarch_arm_hints)]\n");
        assert_eq!(gate_arm_features(&once), once);
    }

    #[test]
    fn an_item_with_a_fallback_off_aarch64_gets_no_twin() {
        let k = Knowledge::embedded().unwrap();
        let text = "#[cfg(target_arch = \"aarch64\")]\nmod api {\n    pub use crate::arch::aarch64::eoi;\n}\n#[cfg(not(target_arch = \"aarch64\"))]\nmod api {\n    pub fn eoi() {}\n}\n";
        let its = items(text, Path::new("src/lib.rs"), &k).unwrap();
        assert_eq!(
            in_place("src/lib.rs", text, &its, &BTreeMap::new(), &k).text,
            text
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative("src", "src/x86_64/a.rs"), "x86_64/a.rs");
        assert_eq!(relative("src/a", "src/x86_64/a.rs"), "../x86_64/a.rs");
        assert_eq!(relative("", "x86_64/a.rs"), "x86_64/a.rs");
    }
}
