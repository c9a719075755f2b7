//! `cargo eterna-port qemu`: the port of the reference fixture (by the offline engine,
//! in a temp copy) boots under QEMU TCG to the VMX-unavailable verdict, runs its guest
//! under Bochs with VMX with the same `[guest]` trace as the ARM64 original, and broken
//! boots, missing emulators and unported workspaces are reported, never a hang.
//!
//! Needs `qemu-system-x86 qemu-system-arm bochs bochsbios vgabios bochs-term
//! grub-pc-bin grub-common xorriso mtools` (Debian); the tool names the missing package.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs the tool in `dir` with the copy's own target directory (a `CARGO_TARGET_DIR`
/// of the caller would send images and serial logs elsewhere).
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    common::command(dir, args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo-eterna-port")
}

/// The fixture ported by the tool (offline engine) in a temp copy.
fn ported() -> tempfile::TempDir {
    let dir = common::copy_tree(&common::fixture_dir());
    let out = run(dir.path(), &["--allow-no-vcs", "--quiet"]);
    common::assert_code(&out, 0);
    assert!(dir.path().join("eterna/linker-x86_64.ld").is_file());
    dir
}

fn serial_log(root: &Path) -> String {
    fs::read_to_string(root.join("target/eterna-port/serial.log")).unwrap_or_default()
}

#[test]
fn qemu_boots_the_port_to_the_vmx_unavailable_verdict() {
    let dir = ported();
    let out = run(dir.path(), &["qemu", "--accel", "tcg"]);
    common::assert_code(&out, 0);
    let stdout = common::stdout(&out);
    assert!(stdout.contains("vmx unavailable"), "{stdout}");
    assert!(stdout.contains("status 33"), "{stdout}");
    let log = serial_log(dir.path());
    // Boot markers, in order: long mode, paging, descriptor tables and the console;
    // a real timer interrupt taken by the host; then the VMX verdict.
    let markers = [
        "[eterna] x86_64: long mode, paging, GDT/TSS and IDT up; 16550 console on COM1",
        "[eterna] x86_64: local APIC timer interrupt received",
        "[eterna] vmx unavailable: CPUID.1:ECX.VMX is clear",
    ];
    let mut at = 0;
    for m in markers {
        let found = log[at..]
            .find(m)
            .unwrap_or_else(|| panic!("{m:?} missing (in order) from serial.log:\n{log}"));
        at += found + m.len();
    }
    assert!(!log.contains("[guest] "), "no guest without VMX:\n{log}");

    // The same run as one JSON verdict document (default accelerator: auto).
    let out = run(dir.path(), &["qemu", "--message-format", "json"]);
    common::assert_code(&out, 0);
    let doc = common::json(&out);
    assert_eq!(doc["success"], true, "{doc:#}");
    assert_eq!(doc["port"]["emulator"], "qemu", "{doc:#}");
    assert_eq!(doc["port"]["verdict"], "vmx-unavailable", "{doc:#}");
    assert!(doc["compare"].is_null());
    assert!(doc["port"]["serial_log"]
        .as_str()
        .unwrap()
        .ends_with("serial.log"));
}

#[test]
fn bochs_runs_the_guest_with_the_arm64_trace() {
    let dir = ported();
    let out = run(
        dir.path(),
        &[
            "qemu",
            "--emulator",
            "bochs",
            "--compare",
            "--message-format",
            "json",
        ],
    );
    common::assert_code(&out, 0);
    let doc = common::json(&out);
    assert_eq!(doc["success"], true, "{doc:#}");
    assert_eq!(doc["port"]["emulator"], "bochs");
    assert_eq!(doc["port"]["verdict"], "success", "{doc:#}");
    assert_eq!(doc["compare"]["identical"], true, "{doc:#}");
    assert_eq!(doc["compare"]["diff"], "");
    let expected = fs::read_to_string(common::fixture_dir().join("expected-trace.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    let trace: Vec<&str> = doc["port"]["trace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(trace, expected);
    let original = fs::read_to_string(dir.path().join("target/eterna-port/serial-aarch64.log"))
        .expect("the ARM64 original's serial log");
    assert!(original.contains("[eterna] guest exited code=0"));
    assert!(serial_log(dir.path()).contains("[cpu1] online"));
}

/// Replaces the first instructions of the multiboot entry `_start` with `code`.
fn break_entry(root: &Path, code: &str) {
    let boot = root.join("eterna/src/arch/x86_64/boot.rs");
    let text = fs::read_to_string(&boot).unwrap();
    assert!(
        text.contains("\n_start:\n"),
        "boot.rs has no `_start:` label"
    );
    let text = text.replacen("\n_start:\n", &format!("\n_start:\n{code}"), 1);
    fs::write(&boot, text).unwrap();
}

#[test]
fn broken_boots_fail_with_the_serial_tail_within_the_timeout() {
    let dir = ported();
    // A triple fault: an empty IDT, then an exception. QEMU resets, -no-reboot exits.
    break_entry(
        dir.path(),
        "    push 0\n    push 0\n    lidt [esp]\n    ud2\n",
    );
    let started = Instant::now();
    let out = run(dir.path(), &["qemu", "--accel", "tcg", "--timeout", "20"]);
    common::assert_code(&out, 1);
    assert!(started.elapsed() < Duration::from_secs(120));
    let stdout = common::stdout(&out);
    assert!(stdout.contains("boot FAILED"), "{stdout}");
    assert!(stdout.contains("without a success line"), "{stdout}");
    assert!(stdout.contains("last serial lines"), "{stdout}");

    // A hang (interrupts off, HLT): killed at the timeout, reported, not waited on.
    break_entry(dir.path(), "1:  hlt\n    jmp 1b\n");
    let out = run(dir.path(), &["qemu", "--accel", "tcg", "--timeout", "3"]);
    common::assert_code(&out, 1);
    let stdout = common::stdout(&out);
    assert!(stdout.contains("timeout"), "{stdout}");
    let out = run(
        dir.path(),
        &[
            "qemu",
            "--accel",
            "tcg",
            "--timeout",
            "3",
            "--message-format",
            "json",
        ],
    );
    common::assert_code(&out, 1);
    let doc = common::json(&out);
    assert_eq!(doc["port"]["verdict"], "failure", "{doc:#}");
    assert_eq!(doc["port"]["ending"], "timed-out", "{doc:#}");
    assert!(
        doc["port"]["elapsed_ms"].as_u64().unwrap() < 6000,
        "{doc:#}"
    );
}

#[test]
fn custom_patterns_decide_the_verdict() {
    let dir = ported();
    let out = run(
        dir.path(),
        &[
            "qemu",
            "--accel",
            "tcg",
            "--failure-pattern",
            "vmx unavailable",
        ],
    );
    common::assert_code(&out, 1);
    assert!(common::stdout(&out).contains("failure pattern `vmx unavailable`"));
}

#[test]
fn missing_emulator_names_the_debian_package() {
    let dir = common::copy_tree(&common::fixture_dir());
    let empty = tempfile::tempdir().unwrap();
    for (args, package) in [
        (vec!["qemu"], "apt-get install qemu-system-x86"),
        (
            vec!["qemu", "--emulator", "bochs"],
            "apt-get install bochs bochsbios vgabios bochs-term",
        ),
    ] {
        // cargo itself is found through $CARGO, which cargo sets for tests.
        let out = common::command(dir.path(), &args)
            .env_remove("CARGO_TARGET_DIR")
            .env("PATH", empty.path())
            .env("CARGO", env!("CARGO"))
            .output()
            .unwrap();
        common::assert_code(&out, 2);
        assert!(
            common::stderr(&out).contains(package),
            "{}",
            common::stderr(&out)
        );
    }
}

#[test]
fn unported_workspace_and_bad_flags_are_usage_errors() {
    let dir = common::copy_tree(&common::fixture_dir());
    let out = run(dir.path(), &["qemu"]);
    common::assert_code(&out, 2);
    assert!(
        common::stderr(&out).contains("run `cargo eterna-port` first to port"),
        "{}",
        common::stderr(&out)
    );
    let out = run(dir.path(), &["qemu", "--timeout", "0"]);
    common::assert_code(&out, 2);
    assert!(common::stderr(&out).contains("--timeout"));
    let out = run(dir.path(), &["qemu", "--bin", "nope"]);
    common::assert_code(&out, 2);
    assert!(common::stderr(&out).contains("--bin"));
}

#[test]
fn build_errors_are_shown_and_exit_1() {
    let dir = ported();
    break_entry(dir.path(), "    not_an_instruction eax\n");
    let out = run(dir.path(), &["qemu", "--accel", "tcg"]);
    common::assert_code(&out, 1);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("not_an_instruction"), "{stderr}");
    assert!(
        stderr
            .contains("cargo build --release --target x86_64-unknown-none -p eterna --bin eterna"),
        "{stderr}"
    );
}

#[test]
fn compare_reports_differing_traces_as_a_unified_diff() {
    // Under QEMU TCG the port has no guest, so its trace is empty: the ARM64 original's
    // lines all show as removed, and the run fails.
    let dir = ported();
    let out = run(dir.path(), &["qemu", "--accel", "tcg", "--compare"]);
    common::assert_code(&out, 1);
    let stdout = common::stdout(&out);
    assert!(stdout.contains("traces differ"), "{stdout}");
    assert!(stdout.contains("--- aarch64 (original)"), "{stdout}");
    assert!(
        stdout.contains("-[guest] vcpu0: print \"hello from the eterna guest\""),
        "{stdout}"
    );
    assert!(common::stderr(&out).contains("use --emulator bochs"));
}
