//! ARM-only dependencies move under `[target.'cfg(target_arch = "aarch64")'.dependencies]`
//! once no code compiled for x86_64 names them (toml_edit keeps the manifest's
//! formatting and comments).

use toml_edit::{DocumentMut, Item, Table};

/// The cfg key of the ARM64-only dependency table.
pub const AARCH64_CFG: &str = "cfg(target_arch = \"aarch64\")";

/// Moves `names` (dependency keys of `[dependencies]`) to the aarch64-only table of
/// manifest `text`. Returns the new text, or `None` when none of them was there.
pub fn gate_to_aarch64(
    text: &str,
    names: &[String],
) -> Result<Option<String>, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    let mut moved: Vec<(toml_edit::Key, Item)> = Vec::new();
    if let Some(deps) = doc.get_mut("dependencies").and_then(Item::as_table_mut) {
        for name in names {
            if let Some((key, item)) = deps.remove_entry(name) {
                moved.push((key, item));
            }
        }
    }
    if moved.is_empty() {
        return Ok(None);
    }
    let target = doc
        .entry("target")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut();
    let Some(target) = target else {
        return Ok(None);
    };
    let cfg = target
        .entry(AARCH64_CFG)
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut();
    let Some(cfg) = cfg else {
        return Ok(None);
    };
    let deps = cfg
        .entry("dependencies")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut();
    let Some(deps) = deps else {
        return Ok(None);
    };
    for (key, item) in moved {
        let mut key = key;
        // The moved line keeps its comments but not a blank line of the old table.
        key.leaf_decor_mut().clear();
        deps.insert_formatted(&key, item);
    }
    Ok(Some(doc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_only_dependencies_move_under_the_aarch64_table_keeping_the_rest() {
        let text = "[package]\nname = \"hv\"\n\n[dependencies]\nlog = \"0.4\" # logging\naarch64-cpu = \"10.0\"\nspin = { version = \"0.10\", default-features = false }\n\n[features]\ndefault = []\n";
        let out = gate_to_aarch64(text, &["aarch64-cpu".to_string()])
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "[package]\nname = \"hv\"\n\n[dependencies]\nlog = \"0.4\" # logging\nspin = { version = \"0.10\", default-features = false }\n\n[features]\ndefault = []\n\n[target.'cfg(target_arch = \"aarch64\")'.dependencies]\naarch64-cpu = \"10.0\"\n"
        );
        // Idempotent: nothing left to move.
        assert_eq!(
            gate_to_aarch64(&out, &["aarch64-cpu".to_string()]).unwrap(),
            None
        );
        // An existing aarch64 table gets the dependency appended.
        let two = gate_to_aarch64(
            "[dependencies]\na = \"1\"\n\n[target.'cfg(target_arch = \"aarch64\")'.dependencies]\nb = \"2\"\n",
            &["a".to_string()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            two,
            "[dependencies]\n\n[target.'cfg(target_arch = \"aarch64\")'.dependencies]\nb = \"2\"\na = \"1\"\n"
        );
    }
}

/// Moves `names` back from the aarch64-only table of manifest `text` to
/// `[dependencies]` (the x86_64 side turned out to need them). `None` when none of
/// them was there.
pub fn ungate_from_aarch64(
    text: &str,
    names: &[String],
) -> Result<Option<String>, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    let mut moved: Vec<(toml_edit::Key, Item)> = Vec::new();
    if let Some(deps) = doc
        .get_mut("target")
        .and_then(Item::as_table_mut)
        .and_then(|t| t.get_mut(AARCH64_CFG))
        .and_then(Item::as_table_mut)
        .and_then(|t| t.get_mut("dependencies"))
        .and_then(Item::as_table_mut)
    {
        for name in names {
            if let Some(entry) = deps.remove_entry(name) {
                moved.push(entry);
            }
        }
    }
    if moved.is_empty() {
        return Ok(None);
    }
    // An aarch64 table left empty goes too (and `target` when nothing else is in it).
    if let Some(target) = doc.get_mut("target").and_then(Item::as_table_mut) {
        let empty = target
            .get(AARCH64_CFG)
            .and_then(Item::as_table)
            .is_some_and(|t| {
                t.iter()
                    .all(|(k, v)| k == "dependencies" && v.as_table().is_some_and(|d| d.is_empty()))
            });
        if empty {
            target.remove(AARCH64_CFG);
        }
        if target.is_empty() {
            doc.remove("target");
        }
    }
    let Some(deps) = doc
        .entry("dependencies")
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
    else {
        return Ok(None);
    };
    for (mut key, item) in moved {
        key.leaf_decor_mut().clear();
        deps.insert_formatted(&key, item);
    }
    Ok(Some(doc.to_string()))
}

/// The note line above imports the port dropped for ARM-only crate `ident`.
pub fn dropped_note(ident: &str) -> String {
    format!("eterna-port: `{ident}` is an ARM64-only dependency")
}

/// Restores the imports of `ident` that [`drop_imports_of`] commented out.
pub fn restore_imports_of(text: &str, ident: &str) -> String {
    let marker = format!("// {}:", dropped_note(ident));
    let mut out = String::with_capacity(text.len());
    let mut restoring = false;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == marker {
            restoring = true;
            continue;
        }
        if restoring {
            if let Some(code) = line.strip_prefix("// ") {
                out.push_str(code);
                continue;
            }
            restoring = false;
        }
        out.push_str(line);
    }
    out
}

/// An ARM-only dependency of a workspace package, as the plan found it.
#[derive(Debug, Clone)]
pub struct ArmDependency {
    /// The workspace package that depends on it.
    pub package: String,
    /// The dependency's key in `[dependencies]` (the name code uses, `-` as `_`).
    pub name: String,
    /// Code outside the planned ARM64 modules uses it (it must stay for x86_64).
    pub used_outside_arm64: bool,
}

/// The identifier code names a dependency by.
pub fn ident_of(dependency: &str) -> String {
    dependency.replace('-', "_")
}

/// Comments out the `use` and `extern crate` items of x86_64 text `text` that import
/// from crate `ident`; returns the new text.
pub fn drop_imports_of(text: &str, ident: &str) -> String {
    let Ok(file) = syn::parse_file(text) else {
        return text.to_string();
    };
    let mut edits = Vec::new();
    for item in &file.items {
        let root = match item {
            syn::Item::Use(u) => match &u.tree {
                syn::UseTree::Path(p) => Some(p.ident.to_string()),
                syn::UseTree::Name(n) => Some(n.ident.to_string()),
                syn::UseTree::Rename(r) => Some(r.ident.to_string()),
                _ => None,
            },
            syn::Item::ExternCrate(e) => Some(e.ident.to_string()),
            _ => None,
        };
        if root.as_deref() == Some(ident) {
            use syn::spanned::Spanned;
            let r = item.span().byte_range();
            if let Some(t) = text.get(r.clone()) {
                edits.push((r, super::derive::comment_out(t, &dropped_note(ident))));
            }
        }
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    super::source::splice(text, edits)
}

/// Whether code (not comments) in `text` still names crate `ident` as a path root.
pub fn names_crate(text: &str, ident: &str) -> bool {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .any(|l| {
            l.match_indices(ident).any(|(i, _)| {
                let before = l[..i].chars().next_back();
                let after = &l[i + ident.len()..];
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && (after.starts_with("::") || after.trim_start().starts_with(';'))
            })
        })
}

#[cfg(test)]
mod import_tests {
    use super::*;

    #[test]
    fn imports_of_an_arm_crate_are_dropped_and_remaining_uses_found() {
        let text = "use aarch64_cpu::registers::*;\nuse core::fmt;\nextern crate aarch64_cpu;\npub fn f() { unimplemented!(\"eterna-port: x\") }\n";
        let out = drop_imports_of(text, "aarch64_cpu");
        assert!(out.starts_with("// eterna-port: `aarch64_cpu` is an ARM64-only dependency:\n// use aarch64_cpu::registers::*;\nuse core::fmt;"), "{out}");
        assert!(!names_crate(&out, "aarch64_cpu"), "{out}");
        assert_eq!(restore_imports_of(&out, "aarch64_cpu"), text);
        assert!(names_crate(
            "pub struct X(aarch64_cpu::registers::Reg);",
            "aarch64_cpu"
        ));
        assert!(!names_crate(
            "pub struct X(my_aarch64_cpu::Reg);",
            "aarch64_cpu"
        ));
    }
}
