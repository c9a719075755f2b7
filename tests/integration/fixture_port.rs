//! The offline port of the reference fixture (a temp copy, no API key, no network):
//! coverage is counted item by item from the files written, and a one-component port
//! touches only that module and the support library. (That the port checks clean for
//! x86_64 and leaves the aarch64 build as it was: the `layouts::` area.)

use crate::common;

use common::*;

/// A committed copy of the fixture.
fn fixture_repo() -> tempfile::TempDir {
    let copy = copy_tree(&fixture_dir());
    std::fs::write(copy.path().join(".gitignore"), "/target\n").unwrap();
    git(copy.path(), &["init", "-q"]);
    git(copy.path(), &["add", "-A"]);
    git(copy.path(), &["commit", "-q", "-m", "fixture"]);
    copy
}

#[test]
fn coverage_is_counted_from_the_text_written() {
    let copy = fixture_repo();
    let out = run(
        copy.path(),
        &["--message-format", "json", "--max-fix-iterations", "0"],
    );
    let report = json(&out);
    let modules = report["modules"].as_array().unwrap();
    // Per item: a name, a kind, a status; a reason for every item not ported.
    let mut stubbed_in_reports = 0;
    let mut left_out_in_reports = 0;
    for m in modules {
        let items = m["items"].as_array().unwrap();
        assert_eq!(
            m["items_total"].as_u64().unwrap() as usize,
            items.len(),
            "{m:#}"
        );
        let ported = items.iter().filter(|i| i["status"] == "ported").count();
        assert_eq!(
            m["items_ported"].as_u64().unwrap() as usize,
            ported,
            "{m:#}"
        );
        for i in items {
            assert!(!i["name"].as_str().unwrap().is_empty());
            if i["status"] != "ported" {
                assert!(!i["reason"].as_str().unwrap_or_default().is_empty(), "{i}");
            }
            if m["mode"] != "in-place" {
                stubbed_in_reports += usize::from(i["status"] == "stubbed");
                left_out_in_reports += usize::from(i["status"] == "left-out");
            }
        }
    }
    // The figures are the written files': a module has stubbed items exactly when its
    // x86_64 file has stubs (at least one each; a macro may hold several), and one
    // left-out item per marker of left-out assembly.
    let mut stubs_on_disk = 0;
    for m in modules.iter().filter(|m| m["mode"] != "in-place") {
        let text =
            std::fs::read_to_string(copy.path().join(m["target"].as_str().unwrap())).unwrap();
        let stubs = text.matches("unimplemented!(\"eterna-port: ").count();
        let items = m["items"].as_array().unwrap();
        let stubbed = items.iter().filter(|i| i["status"] == "stubbed").count();
        let left_out = items.iter().filter(|i| i["status"] == "left-out").count();
        assert_eq!(
            stubs > 0,
            stubbed > 0,
            "{}: {stubs} stubs on disk",
            m["target"]
        );
        assert!(
            stubbed <= stubs,
            "{}: {stubbed} stubbed items, {stubs} stubs",
            m["target"]
        );
        assert_eq!(
            left_out,
            text.matches("// eterna-port: left out: ").count(),
            "{}",
            m["target"]
        );
        stubs_on_disk += stubs;
    }
    assert!(
        stubs_on_disk > 0,
        "the reference workspace's port has ARM64 code to stub"
    );
    assert!(stubbed_in_reports > 0 && left_out_in_reports > 0);
    let total = report["coverage"]["total"].as_u64().unwrap();
    let ported = report["coverage"]["ported"].as_u64().unwrap();
    assert!(ported < total, "{:#}", report["coverage"]);
    // Stubs left: the port is incomplete, exit 1.
    assert_code(&out, 1);
}

#[test]
fn porting_vmcs_touches_only_the_vm_control_module() {
    let copy = fixture_repo();
    let out = run(copy.path(), &["vmcs"]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let status = git(
        copy.path(),
        &["status", "--porcelain", "--untracked-files=all"],
    );
    let touched: Vec<&str> = status.lines().map(|l| &l[3..]).collect();
    // The vm-control module's target, wherever the plan puts it.
    let plan = json(&run(copy.path(), &["plan", "--message-format", "json"]));
    let vmcs = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["component"] == "vm-control")
        .and_then(|m| m["target"].as_str())
        .expect("a planned vm-control module")
        .to_string();
    let vmcs = vmcs.as_str();
    assert!(touched.contains(&vmcs), "{status}");
    // Besides the module: the VT-x support library beside the crate root, and the
    // root's one `mod` line for it.
    for path in &touched {
        assert!(
            *path == vmcs || path.starts_with("eterna/src/vtx/") || *path == "eterna/src/main.rs",
            "`vmcs` touched {path}: {status}"
        );
    }
    let diff = git(copy.path(), &["diff", "-U0", "eterna/src/main.rs"]);
    let added: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert_eq!(
        added,
        [
            "+",
            "+// The x86_64 (VT-x) support library of the port, by cargo-eterna-port.",
            "+#[cfg(target_arch = \"x86_64\")]",
            "+mod vtx;"
        ],
        "{diff}"
    );
}
