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
