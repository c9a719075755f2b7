//! `cargo eterna-port [port]`: safe writing like `cargo fix` — VCS checks, dry runs,
//! hand edits that survive, idempotent re-runs, no partial files after a kill.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// A committed git repository holding a copy of the mini hypervisor.
fn repo() -> tempfile::TempDir {
    let ws = mini_hypervisor();
    // As `cargo new` writes it; the lock file is not committed here (the fix loop's
    // cargo check creates one).
    write(ws.path(), ".gitignore", b"/target\nCargo.lock\n");
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "start"]);
    ws
}

/// Every file below `dir` (outside `target/` and `.git/`) with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "target" || name == ".git" {
                continue;
            }
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn port_refuses_dirty_or_unversioned_trees() {
    let ws = mini_hypervisor();
    let before = snapshot(ws.path());
    let out = run(ws.path(), &["port"]);
    assert_code(&out, 2);
    // Said once: the error's context chain is not repeated as its source.
    assert_eq!(
        stderr(&out).matches("--allow-no-vcs").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(ws.path()), before);

    let ws = repo();
    write(
        ws.path(),
        "hv/src/arch/aarch64/gic.rs",
        b"// my unsaved work\n",
    );
    let before = snapshot(ws.path());
    let out = run(ws.path(), &["port"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("uncommitted changes") && err.contains("gic.rs"),
        "{err}"
    );
    assert!(err.contains("--allow-dirty"), "{err}");
    assert_eq!(snapshot(ws.path()), before, "nothing written");
}

#[test]
fn the_tools_own_files_do_not_count_as_uncommitted_changes() {
    // A repository with no .gitignore: the scan cache and the store the first command
    // writes under target/ are the tool's, not the user's work.
    let ws = mini_hypervisor();
    git(ws.path(), &["init", "-q"]);
    assert_code(&run(ws.path(), &["plan"]), 0);
    assert!(ws.path().join("target/eterna-port").is_dir());
    git(ws.path(), &["add", "-A", "--", ".", ":!target"]);
    git(ws.path(), &["commit", "-q", "-m", "start"]);
    let out = run(ws.path(), &["port"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("uncommitted"), "{}", stderr(&out));
    // The bundled workspace ships the .gitignore `cargo new` writes.
    let ignore = std::fs::read_to_string(fixture_dir().join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/target"), "{ignore}");
}

#[test]
fn dry_run_prints_a_diff_and_writes_nothing() {
    let ws = mini_hypervisor();
    let before = snapshot(ws.path());
    // No VCS needed for a dry run: it writes nothing.
    let out = run(ws.path(), &["--dry-run"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(
        text.contains("--- /dev/null\n+++ b/hv/src/arch/x86_64/gic.rs"),
        "{text}"
    );
    assert!(
        text.contains("--- a/hv/src/arch/mod.rs\n+++ b/hv/src/arch/mod.rs"),
        "{text}"
    );
    assert!(
        text.contains("+#[cfg(target_arch = \"x86_64\")]\n+pub mod x86_64;"),
        "{text}"
    );
    assert!(text.contains("dry run, nothing written"), "{text}");
    assert_eq!(snapshot(ws.path()), before);
    assert!(
        !ws.path().join("target/eterna-port/eterna.db").exists(),
        "no store created"
    );
}

#[test]
fn a_component_target_touches_only_its_modules() {
    let ws = repo();
    let out = run(ws.path(), &["ept"]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let status = git(
        ws.path(),
        &["status", "--porcelain", "--untracked-files=all"],
    );
    let touched: Vec<&str> = status.lines().map(|l| &l[3..]).collect();
    // The stage-2 module keeps its name; besides it, only the VT-x support library
    // beside the crate root and the root's `mod` line for it.
    assert!(
        touched.contains(&"hv/src/arch/x86_64/stage2.rs"),
        "{status}"
    );
    for path in touched {
        assert!(
            path == "hv/src/arch/x86_64/stage2.rs"
                || path.starts_with("hv/src/vtx/")
                || path == "hv/src/main.rs",
            "`ept` touched {path}: {status}"
        );
    }
    let main = std::fs::read_to_string(ws.path().join("hv/src/main.rs")).unwrap();
    assert!(
        main.ends_with("#[cfg(target_arch = \"x86_64\")]\nmod vtx;\n"),
        "{main}"
    );
}

#[test]
fn port_writes_wires_and_a_rerun_changes_nothing() {
    let ws = repo();
    let out = run(ws.path(), &["port", "--message-format", "json"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        stderr(&out)
    );
    let report = json(&out);
    assert_eq!(report["dry_run"], false);
    let modules = report["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 5);
    let total = report["coverage"]["total"].as_u64().unwrap();
    let ported = report["coverage"]["ported"].as_u64().unwrap();
    assert!(total > 0 && ported <= total);
    let unported: usize = modules
        .iter()
        .map(|m| m["unported"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        report["coverage"]["unported"].as_u64().unwrap() as usize,
        unported
    );

    // The wiring: arch/mod.rs gets an x86_64 module beside the aarch64 one.
    let arch = std::fs::read_to_string(ws.path().join("hv/src/arch/mod.rs")).unwrap();
    assert_eq!(
        arch,
        "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n#[cfg(target_arch = \"x86_64\")]\npub mod x86_64;\n"
    );
    // The x86_64 root is derived from the ARM64 one: the same module names.
    let root = std::fs::read_to_string(ws.path().join("hv/src/arch/x86_64/mod.rs")).unwrap();
    for m in ["gic", "stage2", "sysreg"] {
        assert!(root.contains(&format!("pub mod {m};")), "{root}");
    }
    // The GIC keeps its API: `Gic::ack`, `eoi`, `inject`, each stubbed with its reason.
    let gic = std::fs::read_to_string(ws.path().join("hv/src/arch/x86_64/gic.rs")).unwrap();
    for f in [
        "pub fn ack(&self) -> u32 {",
        "pub fn eoi(intid: u32) {",
        "pub fn inject(lr: u64) {",
    ] {
        assert!(gic.contains(f), "{f} missing:\n{gic}");
    }
    assert!(
        gic.contains("unimplemented!(\"eterna-port: `inject` uses ARM64 "),
        "{gic}"
    );
    // Every generated file parses as Rust.
    for rel in ["gic.rs", "stage2.rs", "sysreg.rs", "mod.rs"] {
        let text = std::fs::read_to_string(ws.path().join("hv/src/arch/x86_64").join(rel)).unwrap();
        syn::parse_file(&text).unwrap_or_else(|e| panic!("{rel}: {e}\n{text}"));
    }
    // The offline fix loop ran: the port checks clean.
    assert_eq!(
        report["fix_loop"]["stop"], "clean",
        "{:#}",
        report["fix_loop"]
    );

    // Commit, run again: nothing changes, nothing is rewritten.
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "ported"]);
    let before = snapshot(ws.path());
    let out = run(ws.path(), &["port", "--message-format", "json"]);
    let again = json(&out);
    for f in again["files"].as_array().unwrap() {
        assert_eq!(f["action"], "unchanged", "{f}");
    }
    assert_eq!(snapshot(ws.path()), before);
}

#[test]
fn a_hand_edit_survives_a_rerun_unless_forced() {
    let ws = repo();
    run(ws.path(), &["port"]);
    let apic = ws.path().join("hv/src/arch/x86_64/gic.rs");
    let mut text = std::fs::read_to_string(&apic).unwrap();
    text.push_str("\n// hand-tuned: keep\n");
    std::fs::write(&apic, &text).unwrap();
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "hand edit"]);

    let out = run(ws.path(), &["port"]);
    assert_code(&out, 1);
    assert_eq!(
        std::fs::read_to_string(&apic).unwrap(),
        text,
        "hand edit kept"
    );
    let report = stdout(&out);
    assert!(
        report.contains("skipped hv/src/arch/x86_64/gic.rs"),
        "{report}"
    );
    assert!(report.contains("--force"), "{report}");

    let out = run(ws.path(), &["port", "--force"]);
    assert!(!stderr(&out).contains("panicked"));
    assert!(!std::fs::read_to_string(&apic)
        .unwrap()
        .contains("hand-tuned"));
    let backup = ws
        .path()
        .join("target/eterna-port/backup/hv/src/arch/x86_64/gic.rs");
    assert_eq!(
        std::fs::read_to_string(backup).unwrap(),
        text,
        "backup kept"
    );
}

#[test]
fn a_kill_during_the_port_leaves_no_partial_file() {
    // The finished port, for reference.
    let reference = repo();
    run(reference.path(), &["port"]);
    let done = snapshot(reference.path());
    let start = snapshot(repo().path());
    for delay_ms in [1u64, 5, 15, 30, 60] {
        let ws = repo();
        let mut child = command(ws.path(), &["port"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        for (rel, bytes) in snapshot(ws.path()) {
            let whole = start.get(&rel) == Some(&bytes) || done.get(&rel) == Some(&bytes);
            assert!(
                whole,
                "after a kill at {delay_ms} ms, {rel} is neither the old nor the new file"
            );
            assert!(
                !rel.contains(".eterna-port-"),
                "temp file {rel} left in the tree"
            );
        }
        // The next run completes.
        let out = run(ws.path(), &["port", "--allow-dirty"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{}",
            stderr(&out)
        );
        assert_eq!(snapshot(ws.path()), done);
    }
}

#[test]
fn written_files_are_recorded_in_the_store() {
    let ws = repo();
    let out = run(ws.path(), &["port"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        stderr(&out)
    );
    let out = run(ws.path(), &["status", "--message-format", "json"]);
    assert_code(&out, 0);
    let status = json(&out);
    let text = status.to_string();
    // One artifact per written file, one task per ported module, one run.
    let written = std::fs::read_dir(ws.path().join("hv/src/arch/x86_64"))
        .unwrap()
        .count();
    assert!(text.contains("code_artifacts"), "{text}");
    let count = |table: &str| -> u64 {
        fn find(v: &serde_json::Value, table: &str) -> Option<u64> {
            match v {
                serde_json::Value::Object(m) => m
                    .get(table)
                    .and_then(|x| x.as_u64())
                    .or_else(|| m.values().find_map(|x| find(x, table))),
                serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, table)),
                _ => None,
            }
        }
        find(&status, table).unwrap_or_else(|| panic!("no {table} count in {text}"))
    };
    assert!(count("code_artifacts") as usize >= written, "{text}");
    assert_eq!(count("agent_tasks"), 5, "{text}");
}

#[test]
fn a_users_own_x86_64_parent_is_kept_and_modules_it_does_not_declare_are_not_written() {
    let ws = mini_hypervisor();
    // The workspace already has an x86_64 arch root of its own, declaring only gic.
    write(
        ws.path(),
        "hv/src/arch/x86_64/mod.rs",
        b"//! Our own x86_64 layer.\npub mod gic;\n",
    );
    write(ws.path(), ".gitignore", b"/target\nCargo.lock\n");
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "start"]);
    let out = run(ws.path(), &["port", "--message-format", "json"]);
    assert_code(&out, 1);
    let report = json(&out);
    let x86 = ws.path().join("hv/src/arch/x86_64");
    assert_eq!(
        std::fs::read_to_string(x86.join("mod.rs")).unwrap(),
        "//! Our own x86_64 layer.\npub mod gic;\n",
        "the user's file is kept"
    );
    assert!(x86.join("gic.rs").is_file());
    for orphan in ["stage2.rs", "sysreg.rs"] {
        assert!(
            !x86.join(orphan).exists(),
            "{orphan} written though nothing declares it"
        );
    }
    let stage2 = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == "hv/src/arch/x86_64/stage2.rs")
        .unwrap();
    assert_eq!(stage2["items_ported"], 0);
    let reason = stage2["unported"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("does not declare `mod stage2`"), "{reason}");
}
