//! The x86_64 module derived from a whole ARM64 module (a file under an `aarch64`
//! directory, in a cfg-gated subtree, or in an arch-named crate): every item carried
//! over with its name and signature, function bodies with ARM64 code translated or
//! stubbed, ARM64 assembly blocks left out (and said so), `cfg(target_arch)` tests
//! mirrored, and paths into the crate's ARM64 modules pointed at their x86_64 twins.

use std::ops::Range;

use super::coverage::LEFT_OUT_MARKER;
use super::source::{rename_idents, splice, SourceItem};
use super::stub::{arm64_code, stub_arm64_bodies};
use crate::knowledge::Knowledge;

/// What the derivation needs to know of the plan.
pub struct MirrorContext<'a> {
    /// The workspace-relative path of the ARM64 source.
    pub source: &'a str,
    /// The workspace-relative path of the x86_64 module written.
    pub target: &'a str,
    /// Whether `mod <name>;` of this module names a module the port writes (or that
    /// exists for x86_64); other child declarations are commented out.
    pub child_is_ported: &'a dyn Fn(&str) -> bool,
    /// The concept map (translations and stub messages).
    pub knowledge: &'a Knowledge,
}

/// How every derived module starts (it tells the tool's files from the user's).
pub const HEADER_START: &str = "// x86_64 port of ";

/// The lint allowances of a derived module: stubs leave parameters and imports unused.
pub const ALLOW_LINE: &str =
    "#![allow(unused_imports, unused_variables, dead_code, unreachable_code)]";

/// Derives the x86_64 text of a whole ARM64 module.
pub fn mirror(text: &str, items: &[SourceItem], cx: &MirrorContext<'_>) -> String {
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    for it in items {
        if let Some(name) = &it.mod_decl {
            if !(cx.child_is_ported)(name) {
                edits.push((
                    it.range.clone(),
                    comment_out(
                        &it.text,
                        &format!("eterna-port: `mod {name};` has no x86_64 module: the plan ports no module behind it"),
                    ),
                ));
            }
            continue;
        }
        if is_use(&it.text) {
            if names_core_arch_aarch64(&it.text) {
                edits.push((
                    it.range.clone(),
                    comment_out(
                        &it.text,
                        "eterna-port: AArch64 intrinsics have no x86_64 meaning",
                    ),
                ));
            }
            continue;
        }
        if it.kind.is_none() {
            // `global_asm!(…)`: ARM64 assembly at item level. Invocations of the
            // workspace's own macros stay: their expansions call the ported items.
            let uses = arm64_code(&it.text, cx.knowledge);
            if !uses.is_empty() && is_asm_macro(&it.text) {
                edits.push((it.range.clone(), left_out(&it.text, &uses)));
            }
            continue;
        }
        let (stubbed, names) = stub_arm64_bodies(&it.text, cx.knowledge);
        if !names.is_empty() || stubbed != it.text {
            edits.push((it.range.clone(), stubbed));
        }
    }
    let body = splice(text, edits);
    let body = rename_arm64_paths(&body);
    let body = mirror_cfgs(&body);
    let body = reroot_includes(&body, cx.source, cx.target);
    let first_item = items
        .iter()
        .map(|i| i.range.start)
        .min()
        .map(|start| start.min(body.len()));
    let mut out = format!(
        "{HEADER_START}{}, derived by cargo-eterna-port from the ARM64 module: every\n// item keeps its name and signature; ARM64 code is translated where the porting\n// knowledge has a mechanical mapping and an `unimplemented!` stub naming what it used\n// elsewhere.\n",
        cx.source
    );
    match first_item {
        // The allowances go after the module's own inner attributes and docs.
        Some(at) if body.is_char_boundary(at) && !body.contains(ALLOW_LINE) => {
            out.push_str(&body[..at]);
            out.push_str(ALLOW_LINE);
            out.push('\n');
            out.push_str(&body[at..]);
        }
        _ => out.push_str(&body),
    }
    out
}

/// `include_str!("x")`, `include_bytes!("x")` and `include!("x")` in the module at
/// `target` name the files beside `source`.
pub fn reroot_includes(text: &str, source: &str, target: &str) -> String {
    let dir = |p: &str| {
        p.rsplit_once('/')
            .map_or(String::new(), |(d, _)| d.to_string())
    };
    let (from, to) = (dir(target), dir(source));
    if from == to {
        return text.to_string();
    }
    let up = from.split('/').filter(|s| !s.is_empty()).count();
    let common = from
        .split('/')
        .zip(to.split('/'))
        .take_while(|(a, b)| a == b)
        .count();
    let prefix: String = "../".repeat(up - common)
        + &to
            .split('/')
            .skip(common)
            .map(|s| format!("{s}/"))
            .collect::<String>();
    let mut out = text.to_string();
    for mac in ["include_str!(\"", "include_bytes!(\"", "include!(\""] {
        let mut at = 0;
        while let Some(i) = out[at..].find(mac) {
            let start = at + i + mac.len();
            let rest = &out[start..];
            if rest.starts_with('/') || rest.starts_with(&prefix) {
                at = start;
                continue;
            }
            out.insert_str(start, &prefix);
            at = start + prefix.len();
        }
    }
    out
}

/// Whether an item is an invocation of an assembly macro (`global_asm!`, `naked_asm!`).
pub fn is_asm_macro(text: &str) -> bool {
    syn::parse_str::<syn::ItemMacro>(text).is_ok_and(|m| {
        m.mac
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident.to_string().ends_with("asm"))
    })
}

/// Whether an item is a `use` declaration.
pub fn is_use(text: &str) -> bool {
    syn::parse_str::<syn::ItemUse>(text).is_ok()
}

fn names_core_arch_aarch64(text: &str) -> bool {
    let flat: String = text.split_whitespace().collect();
    [
        "core::arch::aarch64",
        "std::arch::aarch64",
        "core::arch::arm",
        "std::arch::arm",
    ]
    .iter()
    .any(|p| flat.contains(p))
}

/// Every line of `text` as a comment, after a note line.
pub fn comment_out(text: &str, note: &str) -> String {
    let mut out = format!("// {note}:");
    for l in text.lines() {
        out.push_str("\n// ");
        out.push_str(l);
    }
    out
}

/// The marker line of a left-out ARM64 assembly item, with the original commented out.
pub(super) fn left_out(text: &str, uses: &[String]) -> String {
    let name = syn::parse_str::<syn::ItemMacro>(text)
        .ok()
        .and_then(|m| m.mac.path.segments.last().map(|s| format!("{}!", s.ident)))
        .unwrap_or_else(|| "macro!".to_string());
    let mut out = format!(
        "{LEFT_OUT_MARKER}{name} (ARM64 assembly: {}; it needs an x86_64 counterpart)",
        uses.join(", ")
    );
    for l in text.lines() {
        out.push_str("\n// ");
        out.push_str(l);
    }
    out
}

const CORE_ARCH_GUARD: &str = "__eterna_port_core_arch_";

/// Paths through the crate's ARM64 modules (`crate::arch::aarch64::gic`,
/// `super::aarch64`, `mod aarch64`) point at their x86_64 twins; the standard
/// library's `core::arch::aarch64` is left alone, and so are item names.
pub fn rename_arm64_paths(text: &str) -> String {
    let mut guarded = text.to_string();
    for (from, to) in [
        (
            "core::arch::aarch64",
            "core::arch::__eterna_port_core_arch_aarch64",
        ),
        (
            "std::arch::aarch64",
            "std::arch::__eterna_port_core_arch_aarch64",
        ),
    ] {
        guarded = guarded.replace(from, to);
    }
    let renamed = rename_idents(
        &guarded,
        &|s| matches!(s, "aarch64" | "arm64").then(|| "x86_64".to_string()),
        &|_, _| None,
    );
    renamed.replace(&format!("{CORE_ARCH_GUARD}aarch64"), "aarch64")
}

/// Swaps `target_arch = "aarch64"` and `target_arch = "x86_64"` in cfg tests, so the
/// x86_64 twin keeps the module's own architecture choices.
pub fn mirror_cfgs(text: &str) -> String {
    const HOLD: &str = "\u{0}eterna-port-x86\u{0}";
    let mut out = text.to_string();
    for (a, x) in [
        ("target_arch = \"aarch64\"", "target_arch = \"x86_64\""),
        ("target_arch=\"aarch64\"", "target_arch=\"x86_64\""),
    ] {
        out = out.replace(x, HOLD).replace(a, x).replace(HOLD, a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::source::items;
    use std::path::Path;

    #[test]
    fn included_files_are_found_from_the_target() {
        assert_eq!(
            reroot_includes(
                "const T: &str = include_str!(\"regs.txt\");",
                "src/arch/aarch64/gic.rs",
                "src/arch/x86_64/gic.rs"
            ),
            "const T: &str = include_str!(\"../aarch64/regs.txt\");"
        );
        assert_eq!(
            reroot_includes(
                "include_bytes!(\"a.bin\")",
                "src/gic/mod.rs",
                "src/x86_64/gic/mod.rs"
            ),
            "include_bytes!(\"../../gic/a.bin\")"
        );
    }

    #[test]
    fn mirror_keeps_items_stubs_asm_and_mirrors_paths_and_cfgs() {
        let k = Knowledge::embedded().unwrap();
        let text = "//! GIC driver.\n#![allow(clippy::all)]\nuse crate::arch::aarch64::sysreg;\nuse core::arch::aarch64::__nop;\nmod regs;\n#[cfg(test)]\nmod tests;\ncore::arch::global_asm!(\"msr vbar_el2, x0\\neret\");\n/// The distributor.\npub struct Gic { base: usize }\nimpl Gic {\n    pub fn eoi(&self, id: u32) {\n        unsafe { core::arch::asm!(\"msr icc_eoir1_el1, {}\", in(reg) id as u64) }\n    }\n    pub fn base(&self) -> usize { self.base }\n}\n#[cfg(target_arch = \"aarch64\")]\npub fn on_arm() {}\n#[cfg(target_arch = \"x86_64\")]\npub fn on_x86() {}\n";
        let its = items(text, Path::new("gic.rs"), &k).unwrap();
        let out = mirror(
            text,
            &its,
            &MirrorContext {
                source: "src/arch/aarch64/gic.rs",
                target: "src/arch/x86_64/gic.rs",
                child_is_ported: &|n| n == "regs",
                knowledge: &k,
            },
        );
        assert!(
            out.starts_with("// x86_64 port of src/arch/aarch64/gic.rs"),
            "{out}"
        );
        assert!(
            out.contains("#![allow(clippy::all)]\n#![allow(unused_imports"),
            "{out}"
        );
        assert!(out.contains("use crate::arch::x86_64::sysreg;"), "{out}");
        assert!(out.contains("// use core::arch::aarch64::__nop;"), "{out}");
        assert!(out.contains("\nmod regs;\n"), "{out}");
        assert!(out.contains("// #[cfg(test)]\n// mod tests;"), "{out}");
        assert!(
            out.contains("// eterna-port: left out: global_asm! (ARM64 assembly: "),
            "{out}"
        );
        assert!(out.contains("pub struct Gic { base: usize }"), "{out}");
        assert!(
            out.contains("pub fn eoi(&self, id: u32) {\n        unimplemented!(\"eterna-port: `eoi` uses ARM64"),
            "{out}"
        );
        assert!(out.contains("pub fn base(&self) -> usize { self.base }"));
        assert!(
            out.contains("#[cfg(target_arch = \"x86_64\")]\npub fn on_arm()"),
            "{out}"
        );
        assert!(
            out.contains("#[cfg(target_arch = \"aarch64\")]\npub fn on_x86()"),
            "{out}"
        );
        syn::parse_file(&out).unwrap();
    }
}
