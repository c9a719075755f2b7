//! Nothing the tool ships for every workspace (the VT-x support library, the agents'
//! prompts) may name an item, path or trace of the bundled reference workspace: that
//! workspace is test data. This test reads the workspace's item names and fails on any
//! distinctive one found in templates/x86_64 or templates/prompts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Names of the items the reference workspace defines, as syn sees them.
fn item_names(text: &str, out: &mut BTreeSet<String>) {
    fn walk(items: &[syn::Item], out: &mut BTreeSet<String>) {
        for item in items {
            let name = match item {
                syn::Item::Fn(f) => Some(&f.sig.ident),
                syn::Item::Struct(s) => Some(&s.ident),
                syn::Item::Enum(e) => Some(&e.ident),
                syn::Item::Const(c) => Some(&c.ident),
                syn::Item::Static(s) => Some(&s.ident),
                syn::Item::Type(t) => Some(&t.ident),
                syn::Item::Trait(t) => Some(&t.ident),
                syn::Item::Macro(m) => m.ident.as_ref(),
                syn::Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        walk(inner, out);
                    }
                    Some(&m.ident)
                }
                syn::Item::Impl(i) => {
                    for ii in &i.items {
                        if let syn::ImplItem::Fn(f) = ii {
                            out.insert(f.sig.ident.to_string());
                        }
                    }
                    None
                }
                _ => None,
            };
            if let Some(n) = name {
                out.insert(n.to_string());
            }
        }
    }
    if let Ok(file) = syn::parse_file(text) {
        walk(&file.items, out);
    }
}

/// A name only that workspace would use: long, and snake_case with a `_` or CamelCase
/// with two capitals. Plain architecture or Rust vocabulary is not distinctive.
fn distinctive(name: &str) -> bool {
    const GENERIC: [&str; 4] = ["PAGE_SIZE", "level_index", "write_byte", "write_str"];
    name.len() >= 6
        && (name.contains('_') || name.chars().filter(|c| c.is_ascii_uppercase()).count() >= 2)
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !GENERIC.contains(&name)
}

#[test]
fn templates_name_nothing_of_the_reference_workspace() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut fixture = Vec::new();
    files(&root.join("tests/fixtures/eterna-arm64"), &mut fixture);
    let mut names = BTreeSet::new();
    for f in fixture
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        item_names(&std::fs::read_to_string(f).unwrap(), &mut names);
    }
    assert!(
        names.contains("primary_main"),
        "the fixture's items were not read"
    );
    let names: Vec<&String> = names.iter().filter(|n| distinctive(n)).collect();
    // Its crates, paths and trace, too.
    let literal = [
        "eterna_core",
        "eterna-core",
        "eterna-arm64",
        "expected-trace",
        "[guest]",
    ];
    let mut shipped = Vec::new();
    files(&root.join("templates/x86_64"), &mut shipped);
    files(&root.join("templates/prompts"), &mut shipped);
    assert!(shipped.len() >= 8, "{shipped:?}");
    let mut found = Vec::new();
    for f in &shipped {
        let text = std::fs::read_to_string(f).unwrap();
        let words: BTreeSet<&str> = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        for n in &names {
            if words.contains(n.as_str()) {
                found.push(format!("{}: {n}", f.display()));
            }
        }
        for l in literal {
            if text.contains(l) {
                found.push(format!("{}: {l}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "templates name the reference workspace:\n{}",
        found.join("\n")
    );
}
