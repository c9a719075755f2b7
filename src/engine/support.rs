//! The generic x86_64 (VT-x) support library (`templates/x86_64/vtx/`), written once
//! into each crate that gets an x86_64 layer and declared from its root under
//! `cfg(target_arch = "x86_64")`.

use std::collections::BTreeMap;
use std::path::Path;

use include_dir::{include_dir, Dir};

static VTX: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates/x86_64/vtx");

/// The first line of the library's root: how a file of ours is told from the user's.
fn ours(text: &str) -> bool {
    text.starts_with("//! x86_64 (Intel VT-x) support library written by cargo-eterna-port.")
}

/// The library's files: (path below its directory, text).
pub fn files() -> impl Iterator<Item = (&'static str, &'static str)> {
    VTX.files()
        .filter_map(|f| Some((f.path().to_str()?, f.contents_utf8()?)))
}

/// Writes the library beside crate root `root_rel` (workspace-relative) into
/// `pending`, and its `mod` line into the root (as `vtx`, or `eterna_vtx` when the
/// crate already has a `vtx` of its own). Returns the library's files.
pub fn install(
    workspace: &Path,
    root_rel: &str,
    pending: &mut BTreeMap<String, String>,
) -> std::io::Result<Vec<String>> {
    let dir = root_rel.rsplit_once('/').map_or("", |(d, _)| d);
    let at = |name: &str, file: &str| {
        if dir.is_empty() {
            format!("{name}/{file}")
        } else {
            format!("{dir}/{name}/{file}")
        }
    };
    let current = |rel: &str, pending: &BTreeMap<String, String>| -> Option<String> {
        pending
            .get(rel)
            .cloned()
            .or_else(|| std::fs::read_to_string(workspace.join(rel)).ok())
    };
    let taken = |name: &str, pending: &BTreeMap<String, String>| {
        let file = if dir.is_empty() {
            format!("{name}.rs")
        } else {
            format!("{dir}/{name}.rs")
        };
        workspace.join(&file).exists()
            || current(&at(name, "mod.rs"), pending).is_some_and(|t| !ours(&t))
    };
    let name = if taken("vtx", pending) {
        "eterna_vtx"
    } else {
        "vtx"
    };
    let mut written = Vec::new();
    for (file, text) in files() {
        pending.insert(at(name, file), text.to_string());
        written.push(at(name, file));
    }
    let root = current(root_rel, pending).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("could not read the crate root {root_rel}"),
        )
    })?;
    let decl = format!("#[cfg(target_arch = \"x86_64\")]\nmod {name};\n");
    if !root.contains(&decl) {
        let mut new = root;
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str("\n// The x86_64 (VT-x) support library of the port, by cargo-eterna-port.\n");
        new.push_str(&decl);
        pending.insert(root_rel.to_string(), new);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_is_installed_once_beside_the_crate_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("hv/src")).unwrap();
        std::fs::write(
            dir.path().join("hv/src/lib.rs"),
            "#![no_std]\npub mod arch;",
        )
        .unwrap();
        let mut pending = BTreeMap::new();
        let files = install(dir.path(), "hv/src/lib.rs", &mut pending).unwrap();
        assert!(
            files.contains(&"hv/src/vtx/mod.rs".to_string()),
            "{files:?}"
        );
        assert!(pending["hv/src/vtx/mod.rs"].contains("pub mod instr;"));
        assert!(pending.contains_key("hv/src/vtx/vmx_fields.rs"));
        let root = pending["hv/src/lib.rs"].clone();
        assert!(
            root.starts_with("#![no_std]\npub mod arch;\n\n// The x86_64"),
            "{root}"
        );
        // Installing again (a second run, or another module of the crate) adds nothing.
        install(dir.path(), "hv/src/lib.rs", &mut pending).unwrap();
        assert_eq!(pending["hv/src/lib.rs"], root);
        // A crate with a `vtx` module of its own gets `eterna_vtx`.
        std::fs::write(dir.path().join("hv/src/vtx.rs"), "").unwrap();
        let mut pending = BTreeMap::new();
        let files = install(dir.path(), "hv/src/lib.rs", &mut pending).unwrap();
        assert!(
            files.contains(&"hv/src/eterna_vtx/mod.rs".to_string()),
            "{files:?}"
        );
        assert!(pending["hv/src/lib.rs"].ends_with("mod eterna_vtx;\n"));
    }
}
