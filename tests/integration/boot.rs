//! `cargo eterna-port qemu` on the bundled workspace, honestly:
//!
//! * the offline engine's port boots as far as its stubs allow: `qemu` says up to
//!   which item (or that the image cannot boot at all), exit 1, never a hang;
//! * the port by the LLM backend, served the hand-written x86_64 port as scripted model
//!   answers (`tests/fixtures/eterna-x86-answers/`, `common::scripted`), checks clean,
//!   boots under QEMU TCG to the VMX-unavailable verdict (status 33) and runs its guest
//!   under Bochs with VMX with the same `[guest]` trace as the ARM64 original (the
//!   fixture names its console patterns in `[workspace.metadata.eterna-port]`; without
//!   them the emulator's own signals decide and `--compare` is a usage error);
//! * broken boots, stubs reached while booting, images without boot code, missing
//!   emulators and unported workspaces are reported, never a hang.
//!
//! Needs `qemu-system-x86 qemu-system-arm bochs bochsbios vgabios bochs-term
//! grub-pc-bin grub-common xorriso mtools` (Debian); the tool names the missing package.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::scripted;

/// Runs the tool in `dir` with the copy's own target directory (a `CARGO_TARGET_DIR`
/// of the caller would send images and serial logs elsewhere).
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    common::command(dir, args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo-eterna-port")
}

/// The fixture ported in a temp copy by the LLM backend against the scripted model
/// (the hand-written port as answers), with the answers' boot files in its metadata.
fn ported() -> tempfile::TempDir {
    scripted::scripted_port()
}

/// The workspace-relative target of the (first) planned module of `component`.
fn target_of(root: &Path, component: &str) -> String {
    scripted::plan_modules(root)
        .into_iter()
        .find(|m| m.component == component)
        .map(|m| m.target)
        .unwrap_or_else(|| panic!("no planned {component} module"))
}

fn serial_log(root: &Path) -> String {
    fs::read_to_string(root.join("target/eterna-port/serial.log")).unwrap_or_default()
}

#[test]
fn scripted_answers_port_checks_clean_and_boots_to_the_vmx_unavailable_verdict() {
    let dir = ported();
    let out = run(dir.path(), &["check"]);
    common::assert_code(&out, 0);
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
    assert!(doc["port"]["boots_up_to"].is_null(), "{doc:#}");
    assert!(doc["compare"].is_null());
    // Linked with the workspace's own linker script, named in its metadata.
    assert_eq!(doc["linker_script"]["origin"], "config", "{doc:#}");
    assert!(doc["linker_script"]["path"]
        .as_str()
        .unwrap()
        .ends_with("x86-boot/linker-x86_64.ld"));
    assert!(doc["port"]["serial_log"]
        .as_str()
        .unwrap()
        .ends_with("serial.log"));
}

#[test]
fn scripted_answers_port_runs_the_guest_under_bochs_with_the_arm64_trace() {
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
    let boot = root.join(target_of(root, "boot"));
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
    // QEMU logs the triple fault (`-d cpu_reset`): -no-reboot alone would exit 0.
    assert!(stdout.contains("triple-faulted"), "{stdout}");
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

/// The console keys of the fixture's `[workspace.metadata.eterna-port]`.
const CONSOLE_KEYS: [&str; 5] = [
    "trace-prefix",
    "success-patterns",
    "failure-patterns",
    "exit-code-pattern",
    "vmx-unavailable-pattern",
];

/// Removes the console keys from the root manifest: a workspace that configured none.
fn unconfigure_console(root: &Path) {
    let manifest = root.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            !CONSOLE_KEYS
                .iter()
                .any(|k| l.starts_with(&format!("{k} =")))
        })
        .collect();
    assert!(
        kept.len() < text.lines().count(),
        "no console keys in {text}"
    );
    fs::write(&manifest, kept.join("\n") + "\n").unwrap();
}

#[test]
fn compare_without_a_trace_prefix_is_a_usage_error_naming_the_key() {
    let dir = common::copy_tree(&common::fixture_dir());
    unconfigure_console(dir.path());
    let out = run(dir.path(), &["qemu", "--compare"]);
    common::assert_code(&out, 2);
    let stderr = common::stderr(&out);
    assert!(stderr.contains("`trace-prefix`"), "{stderr}");
    assert!(
        stderr.contains("[workspace.metadata.eterna-port]"),
        "{stderr}"
    );
}

#[test]
fn without_configuration_the_verdict_is_the_emulators_signal() {
    let dir = ported();
    unconfigure_console(dir.path());
    // isa-debug-exit status 33 is the VMX-unavailable verdict whatever the console says;
    // with no trace prefix there is no trace.
    let out = run(
        dir.path(),
        &["qemu", "--accel", "tcg", "--message-format", "json"],
    );
    common::assert_code(&out, 0);
    let doc = common::json(&out);
    assert_eq!(doc["port"]["verdict"], "vmx-unavailable", "{doc:#}");
    assert!(
        doc["port"]["reason"]
            .as_str()
            .unwrap()
            .contains("status 33"),
        "{doc:#}"
    );
    assert_eq!(doc["port"]["trace"], serde_json::json!([]), "{doc:#}");
}

#[test]
fn custom_patterns_decide_the_verdict() {
    let dir = ported();
    // From the workspace's configuration…
    let manifest = dir.path().join("Cargo.toml");
    let text = fs::read_to_string(&manifest).unwrap();
    let configured = text.replacen(
        "failure-patterns = [",
        "failure-patterns = [\"x86_64: long mode\", ",
        1,
    );
    assert_ne!(configured, text, "the fixture configures failure-patterns");
    fs::write(&manifest, &configured).unwrap();
    let out = run(dir.path(), &["qemu", "--accel", "tcg"]);
    common::assert_code(&out, 1);
    let stdout = common::stdout(&out);
    assert!(
        stdout.contains("failure pattern `x86_64: long mode`"),
        "{stdout}"
    );
    fs::write(&manifest, &text).unwrap();
    // …and from the flags, which replace it.
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
fn the_offline_port_boots_as_far_as_its_stubs_allow() {
    // The offline engine alone: what it could not port is an `eterna-port` stub. The
    // port checks clean; booting it says how far it gets, never hangs, and exits 1
    // while stubs remain (0 only for a complete port that reaches a verdict).
    let dir = common::copy_tree(&common::fixture_dir());
    let out = run(dir.path(), &["--allow-no-vcs", "--message-format", "json"]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        common::stderr(&out)
    );
    let unported = common::json(&out)["coverage"]["unported"].as_u64().unwrap();
    let out = run(dir.path(), &["check"]);
    common::assert_code(&out, 0);
    let started = Instant::now();
    let out = run(
        dir.path(),
        &[
            "qemu",
            "--accel",
            "tcg",
            "--timeout",
            "20",
            "--message-format",
            "json",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(300));
    let doc = common::json(&out);
    let port = &doc["port"];
    assert_ne!(port["ending"], "timed-out", "{doc:#}");
    if unported == 0 {
        // A complete port reaches a verdict either way (with the tool's generic
        // layout, a workspace whose code needs its own linker-script symbols fails,
        // and the report names them).
        assert!(matches!(out.status.code(), Some(0 | 1)), "{doc:#}");
        return;
    }
    common::assert_code(&out, 1);
    assert_eq!(port["verdict"], "failure", "{doc:#}");
    let reason = port["reason"].as_str().unwrap();
    // Either it ran into a stub (named), or no loader could start it (said so).
    match port["boots_up_to"].as_str() {
        Some(item) => {
            assert!(!item.is_empty());
            assert!(reason.starts_with("boots up to"), "{doc:#}");
        }
        None => assert!(
            port["ending"] == "not-bootable" && reason.contains("cannot boot"),
            "{doc:#}"
        ),
    }
    assert_ne!(port["ending"], "timed-out", "{doc:#}");
}

#[test]
fn a_stub_reached_while_booting_is_reported_as_how_far_the_port_boots() {
    let dir = ported();
    // The port of the ARM64 `gic.rs`, wherever the plan puts it.
    let gic = scripted::plan_modules(dir.path())
        .into_iter()
        .find(|m| m.source.ends_with("/gic.rs"))
        .map(|m| m.target)
        .expect("a planned gic.rs");
    let path = dir.path().join(&gic);
    let text = fs::read_to_string(&path).unwrap();
    let anchor = "pub unsafe fn init() -> GicInfo {\n";
    assert!(text.contains(anchor), "{gic} has no `init`");
    let stub = "    unimplemented!(\"eterna-port: `init` has ARM64-specific code (msr ICC_SRE_EL2) with no x86_64 mapping yet\");\n";
    fs::write(&path, text.replacen(anchor, &format!("{anchor}{stub}"), 1)).unwrap();
    let out = run(dir.path(), &["qemu", "--accel", "tcg", "--timeout", "20"]);
    common::assert_code(&out, 1);
    let stdout = common::stdout(&out);
    assert!(stdout.contains("boots up to `init`"), "{stdout}");
    // With the serial lines that show it.
    assert!(
        stdout.contains("last serial lines")
            && stdout.contains("  | [eterna] panic: not implemented: eterna-port: `init`"),
        "{stdout}"
    );
}

#[test]
fn an_image_without_boot_code_is_reported_as_not_bootable() {
    let dir = ported();
    // The boot module as a port leaves it when it cannot write boot code: its
    // assembly (multiboot header, `_start`) left out.
    let boot = target_of(dir.path(), "boot");
    let path = dir.path().join(&boot);
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("global_asm!(").expect("boot code in global_asm!");
    let end = start + text[start..].find("\n);\n").expect("end of global_asm!") + 4;
    fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let started = Instant::now();
    let out = run(dir.path(), &["qemu", "--accel", "tcg", "--timeout", "20"]);
    common::assert_code(&out, 1);
    assert!(started.elapsed() < Duration::from_secs(300));
    let stdout = common::stdout(&out);
    assert!(stdout.contains("the image cannot boot"), "{stdout}");
    assert!(stdout.contains("no multiboot header"), "{stdout}");
    assert!(stdout.contains(&boot), "the boot module is named: {stdout}");
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

/// The names a file makes public at its top level (items, `pub use` leaves, `pub mod`).
fn public_names(text: &str) -> std::collections::BTreeSet<String> {
    fn leaves(tree: &syn::UseTree, out: &mut std::collections::BTreeSet<String>) {
        match tree {
            syn::UseTree::Path(p) => leaves(&p.tree, out),
            syn::UseTree::Name(n) => {
                out.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) => {
                out.insert(r.rename.to_string());
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| leaves(t, out)),
            syn::UseTree::Glob(_) => {}
        }
    }
    let file = syn::parse_file(text).expect("parses");
    let mut out = std::collections::BTreeSet::new();
    for item in &file.items {
        let public = |v: &syn::Visibility| matches!(v, syn::Visibility::Public(_));
        let name = match item {
            syn::Item::Fn(i) if public(&i.vis) => Some(i.sig.ident.to_string()),
            syn::Item::Struct(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Enum(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Const(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Static(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Type(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Trait(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Mod(i) if public(&i.vis) => Some(i.ident.to_string()),
            syn::Item::Macro(i) if i.attrs.iter().any(|a| a.path().is_ident("macro_export")) => {
                i.ident.as_ref().map(|i| i.to_string())
            }
            syn::Item::Use(u) if public(&u.vis) => {
                leaves(&u.tree, &mut out);
                None
            }
            _ => None,
        };
        out.extend(name);
    }
    out
}

#[test]
fn scripted_answers_keep_every_public_name_of_their_arm64_module() {
    // The shared code reaches both layers by the same names: each answer
    // `arch/x86_64/X.rs` defines every public name of `arch/aarch64/X.rs`.
    let arm = common::fixture_dir().join("eterna/src/arch/aarch64");
    let answers = scripted::answers_dir().join("eterna/src/arch/x86_64");
    let mut missing = Vec::new();
    for entry in fs::read_dir(&arm).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path.file_name().unwrap();
        let answer = fs::read_to_string(answers.join(name))
            .unwrap_or_else(|_| panic!("no answer for arch/x86_64/{}", name.to_string_lossy()));
        let ours = public_names(&answer);
        for n in public_names(&fs::read_to_string(&path).unwrap()) {
            if !ours.contains(&n) {
                missing.push(format!("{}: {n}", name.to_string_lossy()));
            }
        }
    }
    assert!(missing.is_empty(), "answers lack ARM64 names: {missing:?}");
    assert!(scripted::answers().contains_key("src/guest/x86_64.rs"));
}
