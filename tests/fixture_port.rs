//! The offline port of the reference fixture (a temp copy, no API key, no network):
//! the x86_64 arch layer it produces builds for `x86_64-unknown-none` with zero errors,
//! the ARM64 build still builds, and coverage is reported item by item.

mod common;

use std::path::Path;
use std::process::Command;

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

/// `cargo check` of the hypervisor crate for `target`: (success, error lines).
fn cargo_check(dir: &Path, target: &str) -> (bool, Vec<String>) {
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "-p",
            "eterna",
            "--target",
            target,
            "--message-format",
            "short",
        ])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .output()
        .expect("cargo check runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("error"))
        .map(str::to_string)
        .collect();
    (out.status.success(), errors)
}

#[test]
fn the_fixture_ports_to_an_x86_64_layer_that_builds() {
    let copy = fixture_repo();
    let out = run(copy.path(), &["--message-format", "json"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report = json(&out);
    let coverage = &report["coverage"];
    let percent = coverage["percent"].as_f64().unwrap();
    assert!(percent >= 90.0, "coverage {percent}%: {report:#}");
    // Every unported item is named, with a reason.
    let named: usize = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["unported"].as_array().unwrap())
        .inspect(|u| {
            assert!(!u["item"].as_str().unwrap().is_empty());
            assert!(!u["reason"].as_str().unwrap().is_empty());
        })
        .count();
    assert_eq!(named as u64, coverage["unported"].as_u64().unwrap());
    assert_eq!(
        out.status.code(),
        Some(if named == 0 { 0 } else { 1 }),
        "exit status says whether the port is complete"
    );

    let (ok, errors) = cargo_check(copy.path(), "x86_64-unknown-none");
    assert!(
        ok && errors.is_empty(),
        "x86_64 check failed:\n{}",
        errors.join("\n")
    );
    // A second run over the committed port changes nothing.
    git(copy.path(), &["add", "-A"]);
    git(copy.path(), &["commit", "-q", "-m", "ported"]);
    let again = json(&run(copy.path(), &["--message-format", "json"]));
    for f in again["files"].as_array().unwrap() {
        assert_eq!(f["action"], "unchanged", "{f}");
    }
    let status = git(copy.path(), &["status", "--porcelain"]);
    assert!(status.trim().is_empty(), "{status}");

    let (ok, errors) = cargo_check(copy.path(), "aarch64-unknown-none");
    assert!(
        ok && errors.is_empty(),
        "the ARM64 build broke:\n{}",
        errors.join("\n")
    );
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
    let dir = vmcs.rsplit_once('/').map_or("", |(d, _)| d);
    assert!(touched.contains(&vmcs), "{status}");
    // Besides vmcs.rs, only the files vmcs.rs itself declares with `#[path]`.
    let text = std::fs::read_to_string(copy.path().join(vmcs)).unwrap();
    let declared: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("#[path = \""))
        .filter_map(|l| l.split('"').next())
        .map(|p| format!("{dir}/{p}"))
        .collect();
    for path in &touched {
        assert!(
            *path == vmcs || declared.iter().any(|d| d == path),
            "`vmcs` touched {path}: {status}"
        );
    }
}
