//! Scaffold checks of the x86_64 templates (`templates/x86_64/`) until the
//! offline engine instantiates them itself:
//!
//! * the manifest names existing files and the templates contain no
//!   template syntax, so minijinja renders them unchanged;
//! * every template defines every public item of the ARM64 module it
//!   replaces (the engine's coverage check);
//! * a temporary copy of the reference fixture with the templates written
//!   to their targets and the engine's wiring applied as text edits checks
//!   cleanly for `x86_64-unknown-none` and still for `aarch64-unknown-none`.
//!
//! Booting the port (QEMU TCG, Bochs with VMX, the trace comparison) is the
//! tool's job now: `cargo eterna-port qemu`, tested in `tests/boot.rs`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const TEMPLATE_TRIPLE: &str = "x86_64-unknown-none";

#[derive(Deserialize)]
struct Manifest {
    template: Vec<Template>,
    #[serde(default)]
    support: Vec<Support>,
    #[serde(default)]
    extra: Vec<Extra>,
}

#[derive(Deserialize)]
struct Template {
    file: String,
    component: String,
    stems: Vec<String>,
    target: String,
    summary: String,
}

#[derive(Deserialize)]
struct Support {
    file: String,
    declared_by: String,
    summary: String,
}

#[derive(Deserialize)]
struct Extra {
    file: String,
    target: String,
    summary: String,
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/x86_64")
}

fn manifest() -> Manifest {
    let text = fs::read_to_string(templates_dir().join("manifest.toml")).expect("manifest.toml");
    toml::from_str(&text).unwrap_or_else(|e| panic!("manifest.toml: {e}"))
}

/// The ARM64 source each template replaces (relative to the fixture's `eterna/`).
fn source_of(template: &Template) -> String {
    match template.stems[0].as_str() {
        "guest" => "src/guest.rs".to_string(),
        stem => format!("src/arch/aarch64/{stem}.rs"),
    }
}

/// Renders a template the way the engine does.
fn render(template: &Template, text: &str) -> String {
    let mut env = minijinja::Environment::new();
    // Source files end with a newline; minijinja drops it unless told not to.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("default delimiters"),
    );
    env.render_str(
        text,
        minijinja::context! {
            crate_name => "eterna",
            source => source_of(template),
            target => &template.target,
            component => &template.component,
            target_triple => TEMPLATE_TRIPLE,
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", template.file))
}

#[test]
fn manifest_lists_existing_templates_without_template_syntax() {
    let manifest = manifest();
    // The plan's vocabulary (arch-neutral modules are wired, not templated).
    let vocabulary: Vec<&str> = cargo_eterna_port::knowledge::COMPONENTS
        .into_iter()
        .filter(|c| *c != "arch-neutral")
        .collect();
    let modules = templates_dir().join("modules");
    let mut files = Vec::new();
    for template in &manifest.template {
        assert!(
            vocabulary.contains(&template.component.as_str()),
            "{}: component {}",
            template.file,
            template.component
        );
        assert!(!template.summary.is_empty() && !template.stems.is_empty());
        files.push(modules.join(&template.file));
    }
    for support in &manifest.support {
        assert!(manifest
            .template
            .iter()
            .any(|t| t.file == support.declared_by));
        assert!(!support.summary.is_empty());
        let declaring = fs::read_to_string(modules.join(&support.declared_by)).unwrap();
        let name = support.file.rsplit('/').next().unwrap();
        assert!(
            declaring.contains(&format!("#[path = \"{name}\"]")),
            "{} must declare {}",
            support.declared_by,
            support.file
        );
        files.push(templates_dir().join(&support.file));
    }
    for extra in &manifest.extra {
        assert!(!extra.summary.is_empty() && !extra.target.is_empty());
        files.push(templates_dir().join(&extra.file));
    }
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for syntax in ["{{", "{%", "{#"] {
            assert!(
                !text.contains(syntax),
                "{} contains `{syntax}`",
                file.display()
            );
        }
    }
    for template in &manifest.template {
        let text = fs::read_to_string(modules.join(&template.file)).unwrap();
        assert_eq!(
            render(template, &text),
            text,
            "{} changes when rendered",
            template.file
        );
    }
}

/// Names of the public items of a file, methods and nested modules
/// included (`pub(crate)` and `pub(super)` count: the engine compares
/// what the rest of the crate can name).
fn public_names(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = BTreeSet::new();
    collect(&file.items, &mut names);
    names
}

fn collect(items: &[syn::Item], names: &mut BTreeSet<String>) {
    let public = |vis: &syn::Visibility| !matches!(vis, syn::Visibility::Inherited);
    for item in items {
        let name = match item {
            syn::Item::Fn(i) if public(&i.vis) => Some(i.sig.ident.to_string()),
            syn::Item::Struct(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Enum(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Const(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Static(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Type(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Trait(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Mod(i) => {
                if let Some((_, inner)) = &i.content {
                    collect(inner, names);
                }
                None
            }
            syn::Item::Impl(i) => {
                for inner in &i.items {
                    if let syn::ImplItem::Fn(f) = inner {
                        if public(&f.vis) {
                            names.insert(f.sig.ident.to_string());
                        }
                    }
                }
                None
            }
            _ => None,
        };
        names.extend(name);
    }
}

/// Items of guest.rs that contain ARM64 code and are gated out on x86_64.
fn arm64_specific(item: &syn::Item) -> bool {
    let tokens = quote::ToTokens::to_token_stream(item).to_string();
    ["asm !", "global_asm !", "core :: arch"]
        .iter()
        .any(|needle| tokens.contains(needle))
}

#[test]
fn templates_cover_every_public_item_of_their_arm64_module() {
    let eterna = common::fixture_dir().join("eterna");
    let modules = templates_dir().join("modules");
    let mut report = Vec::new();
    for template in &manifest().template {
        let ours = public_names(&modules.join(&template.file));
        let wanted: BTreeSet<String> = if template.stems[0] == "guest" {
            // Only guest.rs's ARM64-specific items move to guest/x86_64.rs.
            let text = fs::read_to_string(eterna.join("src/guest.rs")).unwrap();
            let file = syn::parse_file(&text).unwrap();
            file.items
                .iter()
                .filter(|item| arm64_specific(item))
                .filter_map(|item| match item {
                    syn::Item::Fn(f) => Some(f.sig.ident.to_string()),
                    _ => None,
                })
                .collect()
        } else {
            public_names(&eterna.join(source_of(template)))
        };
        // The platform struct is renamed with the module (Aarch64 -> X86_64).
        let wanted: BTreeSet<String> = wanted.iter().map(|name| rename_idents(name)).collect();
        let missing: Vec<_> = wanted.difference(&ours).collect();
        if !missing.is_empty() {
            report.push(format!("{}: missing {missing:?}", template.file));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// ARM64 submodule names and their x86_64 targets, as the plan maps them.
const RENAMES: &[(&str, &str)] = &[
    ("aarch64", "x86_64"),
    ("Aarch64", "X86_64"),
    ("sysreg", "msr"),
    ("stage2", "ept"),
    ("vm", "vmcs"),
    ("gic", "apic"),
    ("exception", "vmexit"),
    ("mmu", "paging"),
    ("pl011", "uart16550"),
    ("psci", "smp"),
];

/// Replaces whole identifiers per [`RENAMES`].
fn rename_idents(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let replaced = RENAMES
            .iter()
            .find(|(from, _)| *from == word.as_str())
            .map_or(word.as_str(), |(_, to)| to);
        out.push_str(replaced);
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A temporary copy of the fixture with the templates instantiated.
struct Port {
    dir: tempfile::TempDir,
}

impl Port {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn crate_dir(&self) -> PathBuf {
        self.root().join("eterna")
    }
}

/// The fixture ported by the tool itself (offline engine) in a temp copy.
fn instantiate() -> Port {
    let dir = common::copy_tree(&common::fixture_dir());
    let out = common::run(dir.path(), &["--allow-no-vcs", "--message-format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the offline port is incomplete:\n{}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    Port { dir }
}

#[test]
fn plan_reports_the_instantiated_port_complete() {
    let port = instantiate();
    let output = common::run(port.root(), &["plan", "--message-format", "json"]);
    common::assert_code(&output, 0);
    let plan = common::json(&output);
    let modules = plan["modules"].as_array().expect("modules");
    assert!(modules.len() >= 15, "{plan:#}");
    for module in modules {
        let target = module["target"].as_str().unwrap();
        let missing: Vec<&str> = module["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        match target {
            // The platform type is renamed with the module (Aarch64 -> X86_64).
            "eterna/src/arch/x86_64/mod.rs" => assert_eq!(missing, ["Aarch64"], "{module:#}"),
            // guest.rs keeps its architecture-neutral items; the child only
            // replaces the ARM64 ones.
            "eterna/src/guest/x86_64.rs" => {
                let shared = public_names(&port.crate_dir().join("src/guest.rs"));
                for name in missing {
                    let item = name.rsplit("::").next().unwrap();
                    assert!(
                        shared.contains(item),
                        "{name} is neither in guest.rs nor in the template"
                    );
                }
            }
            _ => {
                assert_eq!(module["status"], "exists", "{module:#}");
                assert!(missing.is_empty(), "{module:#}");
            }
        }
    }
}
