//! Every layout test workspace (tests/fixtures/layouts/*) and the bundled reference
//! workspace port, offline, to code that checks clean for x86_64-unknown-none: the
//! tool's `check` and cargo's own report no error, the aarch64 build is as it was, no
//! file of another architecture changes, and a second port changes nothing.
//!
//! Needs the rustup targets x86_64-unknown-none and aarch64-unknown-none (scripts/test.sh).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_code, git, json, run};

fn layouts() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layouts");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.join("Cargo.toml").is_file());
    out.sort();
    out
}

/// `cargo check --target TRIPLE --workspace` in `dir`, through rustup's `cargo` so the
/// workspace's rust-toolchain.toml is honoured: (success, error lines).
fn cargo_check(dir: &Path, triple: &str) -> (bool, Vec<String>) {
    let out = Command::new("cargo")
        .args([
            "check",
            "--workspace",
            "--message-format",
            "short",
            "--target",
            triple,
        ])
        .current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("error") && !l.starts_with("error: could not compile"))
        .map(str::to_string)
        .collect();
    (out.status.success(), errors)
}

fn changed_files(dir: &Path) -> Vec<String> {
    git(dir, &["status", "--porcelain", "-uall"])
        .lines()
        .map(|l| l[3..].to_string())
        .collect()
}

/// The toolchain `dir` pins (rust-toolchain.toml), when it is not installed here:
/// such a layout cannot be built on this machine (scripts/test.sh adds the nightly
/// targets when a nightly is installed).
fn missing_pinned_toolchain(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("rust-toolchain.toml")).ok()?;
    let value: toml::Value = toml::from_str(&text).ok()?;
    let channel = value
        .get("toolchain")?
        .get("channel")?
        .as_str()?
        .to_string();
    let ok = Command::new("rustup")
        .args(["run", &channel, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|sysroot| {
            ["x86_64-unknown-none", "aarch64-unknown-none"]
                .iter()
                .all(|t| Path::new(&sysroot).join("lib/rustlib").join(t).is_dir())
        });
    (!ok).then_some(channel)
}

/// Ports a temp copy of `src` and holds the port to the acceptance points.
fn ports_clean(src: &Path) {
    let name = src.file_name().unwrap().to_string_lossy().to_string();
    if let Some(channel) = missing_pinned_toolchain(src) {
        eprintln!(
            "skipped {name}: its pinned toolchain `{channel}` (with the x86_64-unknown-none and aarch64-unknown-none targets) is not installed here"
        );
        return;
    }
    let copy = common::copy_tree(src);
    let dir = copy.path();
    // As `cargo new` leaves it: build output ignored, the lock file committed.
    if !dir.join(".gitignore").exists() {
        std::fs::write(dir.join(".gitignore"), "/target\n").unwrap();
    }
    let (arm_before, arm_errors) = cargo_check(dir, "aarch64-unknown-none");
    assert!(
        arm_before,
        "{name}: the ARM64 side must build before the port: {arm_errors:?}"
    );
    git(dir, &["init", "-q"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "base"]);

    let out = run(dir, &["--message-format", "json"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{name}: port exit {:?}: {}",
        out.status.code(),
        common::stderr(&out)
    );
    let changed = changed_files(dir);
    assert!(!changed.is_empty(), "{name}: the port changed nothing");
    for f in &changed {
        let other = ["riscv", "loongarch", "mips", "powerpc"];
        assert!(
            !other.iter().any(|a| f.contains(a)),
            "{name}: the port changed another architecture's file {f}"
        );
    }

    // The tool's check and cargo's own agree: no error for x86_64-unknown-none.
    let check = run(dir, &["check", "--message-format", "json"]);
    let report = json(&check);
    let errors: u64 = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["errors"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(errors, 0, "{name}: check found errors: {report:#}");
    assert_code(&check, 0);
    let (x86_ok, x86_errors) = cargo_check(dir, "x86_64-unknown-none");
    assert!(
        x86_ok,
        "{name}: cargo check for x86_64-unknown-none: {x86_errors:#?}"
    );

    // The ARM64 side builds as before.
    let (arm_after, arm_errors) = cargo_check(dir, "aarch64-unknown-none");
    assert!(
        arm_after,
        "{name}: the aarch64 build broke: {arm_errors:#?}"
    );

    // A second run changes nothing.
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "ported"]);
    let again = run(dir, &["--message-format", "json"]);
    assert!(
        matches!(again.status.code(), Some(0 | 1)),
        "{}",
        common::stderr(&again)
    );
    assert!(
        changed_files(dir).is_empty(),
        "{name}: a second port changed {:?}",
        changed_files(dir)
    );
}

#[test]
fn every_layout_workspace_ports_to_code_that_checks_clean() {
    let all = layouts();
    assert!(all.len() >= 5, "layout workspaces missing: {all:?}");
    for ws in all {
        ports_clean(&ws);
    }
}

#[test]
fn the_mini_hypervisor_ports_to_code_that_checks_clean() {
    let ws = common::mini_hypervisor();
    ports_clean(ws.path());
}

#[test]
fn the_reference_workspace_ports_offline_to_code_that_checks_clean() {
    ports_clean(&common::fixture_dir());
}
