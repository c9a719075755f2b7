//! `cargo eterna-port plan` on small temp workspaces: plan contents and bad input.

use crate::common;

use common::*;
use serde_json::Value;

fn module<'a>(plan: &'a Value, path: &str) -> &'a Value {
    plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module_path"] == path)
        .unwrap_or_else(|| panic!("module {path} not planned: {plan:#}"))
}

fn module_paths(plan: &Value) -> Vec<String> {
    plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["module_path"].as_str().unwrap().to_string())
        .collect()
}

fn evidence_line(m: &Value, kind: &str, name: &str) -> Option<u64> {
    m["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind && e["name"] == name)
        .map(|e| e["line"].as_u64().unwrap_or(0))
}

#[test]
fn plans_the_arm64_modules_with_components_targets_and_evidence() {
    let ws = mini_hypervisor();
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let plan = json(&out);
    assert_eq!(plan["target_triple"], "x86_64-unknown-none");
    assert_eq!(plan["schema_version"], 1);
    let root = std::fs::canonicalize(ws.path()).unwrap();
    assert_eq!(plan["workspace_root"], root.display().to_string());

    let gic = module(&plan, "hv::arch::aarch64::gic");
    assert_eq!(gic["package"], "hv");
    assert_eq!(gic["component"], "interrupt-controller");
    assert_eq!(gic["source"], "hv/src/arch/aarch64/gic.rs");
    assert_eq!(gic["target"], "hv/src/arch/x86_64/gic.rs");
    assert_eq!(gic["status"], "new");
    assert_eq!(
        gic["depends_on"],
        serde_json::json!(["hv::arch::aarch64::sysreg"])
    );
    assert_eq!(evidence_line(gic, "sysreg", "ICC_IAR1_EL1"), Some(9));
    assert_eq!(evidence_line(gic, "sysreg", "ICH_LR0_EL2"), Some(18));
    assert_eq!(evidence_line(gic, "asm-mnemonic", "msr"), Some(14));
    assert_eq!(
        evidence_line(gic, "path", "hv/src/arch/aarch64/gic.rs"),
        Some(0)
    );
    let items: Vec<&str> = gic["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(items, ["Gic", "Gic::ack", "eoi", "inject"]);

    let s2 = module(&plan, "hv::arch::aarch64::stage2");
    assert_eq!(s2["component"], "stage2");
    assert_eq!(s2["target"], "hv/src/arch/x86_64/stage2.rs");
    assert_eq!(evidence_line(s2, "sysreg", "VTTBR_EL2"), Some(9));
    assert_eq!(s2["depends_on"], serde_json::json!([]));

    let sys = module(&plan, "hv::arch::aarch64::sysreg");
    assert_eq!(sys["component"], "sysreg");

    // The cfg-gated wiring module is planned as an in-place, arch-neutral edit.
    let arch = module(&plan, "hv::arch");
    assert_eq!(arch["component"], "arch-neutral");
    assert_eq!(arch["target"], "hv/src/arch/mod.rs");
    assert_eq!(arch["status"], "partial");
    assert_eq!(
        evidence_line(arch, "cfg", "target_arch = \"aarch64\""),
        Some(1)
    );

    // The arch-neutral core crate and main.rs carry no ARM64 evidence: not planned.
    let paths = module_paths(&plan);
    assert!(!paths.iter().any(|p| p.starts_with("hv_core")), "{paths:?}");
    assert!(!paths.contains(&"hv".to_string()), "{paths:?}");

    // Dependency order: sysreg before gic, and the arch root (which uses nothing) anywhere.
    let pos = |p: &str| paths.iter().position(|x| x == p).unwrap();
    assert!(pos("hv::arch::aarch64::sysreg") < pos("hv::arch::aarch64::gic"));
}

#[test]
fn existing_x86_64_modules_are_exists_or_partial() {
    let ws = mini_hypervisor();
    // A complete gic.rs, a stage2.rs that lacks one item, a sysreg.rs with a placeholder.
    write(
        ws.path(),
        "hv/src/arch/x86_64/gic.rs",
        b"pub struct Gic;\nimpl Gic { pub fn ack(&self) -> u32 { 0 } }\npub fn eoi(_: u32) {}\npub fn inject(_: u64) {}\n",
    );
    write(
        ws.path(),
        "hv/src/arch/x86_64/stage2.rs",
        b"pub fn activate(_root: u64) {}\n",
    );
    write(
        ws.path(),
        "hv/src/arch/x86_64/sysreg.rs",
        b"pub fn current_el() -> u64 { todo!() }\n",
    );
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let plan = json(&out);
    assert_eq!(module(&plan, "hv::arch::aarch64::gic")["status"], "exists");
    let s2 = module(&plan, "hv::arch::aarch64::stage2");
    assert_eq!(s2["status"], "partial");
    assert_eq!(s2["missing"], serde_json::json!(["PAGE_SIZE"]));
    let sys = module(&plan, "hv::arch::aarch64::sysreg");
    assert_eq!(sys["status"], "partial");
    assert!(sys["missing"][0].as_str().unwrap().contains("todo!"));
}

#[test]
fn human_table_lists_every_module_and_a_summary() {
    let ws = mini_hypervisor();
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("hv/src/arch/aarch64/gic.rs → hv/src/arch/x86_64/gic.rs"),
        "{text}"
    );
    assert!(
        text.contains("5 modules: 4 new, 1 partial, 0 exists"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour when not a terminal: {text:?}"
    );
    let out = run(ws.path(), &["plan", "--color", "always"]);
    assert!(stdout(&out).contains('\u{1b}'), "colour when asked for");
}

#[test]
fn works_as_a_cargo_subcommand_and_standalone() {
    let ws = mini_hypervisor();
    // Cargo runs `cargo-eterna-port eterna-port …`.
    let out = run(
        ws.path(),
        &["eterna-port", "plan", "--message-format", "json"],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 5);
    // And through cargo itself, with the binary on PATH.
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(env!("CARGO"))
        .args(["eterna-port", "plan", "--message-format", "json"])
        .current_dir(ws.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 5);
}

#[test]
fn manifest_path_and_package_select_the_workspace() {
    let ws = mini_hypervisor();
    let elsewhere = tempfile::tempdir().unwrap();
    let manifest = ws.path().join("Cargo.toml");
    let out = run(
        elsewhere.path(),
        &[
            "plan",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "-p",
            "hv-core",
            "--message-format",
            "json",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"], serde_json::json!([]));

    let out = run(ws.path(), &["plan", "-p", "nope"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("package `nope`"), "{}", stderr(&out));
    assert!(stderr(&out).contains("hv-core"), "{}", stderr(&out));
}

#[test]
fn port_targets_select_by_component_alias_or_module() {
    let ws = mini_hypervisor();
    let out = run(ws.path(), &["plan", "gic", "--message-format", "json"]);
    assert_code(&out, 0);
    assert_eq!(module_paths(&json(&out)), ["hv::arch::aarch64::gic"]);
    let out = run(
        ws.path(),
        &["plan", "ept", "aarch64::sysreg", "--message-format", "json"],
    );
    assert_code(&out, 0);
    let mut got = module_paths(&json(&out));
    got.sort();
    assert_eq!(
        got,
        ["hv::arch::aarch64::stage2", "hv::arch::aarch64::sysreg"]
    );

    let out = run(ws.path(), &["plan", "vmcz"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("`vmcz`"), "{}", stderr(&out));
    assert!(stderr(&out).contains("vm-control"), "{}", stderr(&out));

    // A bare positional is a port target (the `port::` area covers porting itself).
    let out = run(ws.path(), &["ept", "--dry-run"]);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("+++ b/hv/src/arch/x86_64/stage2.rs"),
        "{text}"
    );
    assert!(
        !text.contains("x86_64/gic.rs"),
        "only the selected module: {text}"
    );
    assert!(
        !ws.path().join("hv/src/arch/x86_64").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn path_attributes_inline_modules_and_cfg_gates_are_followed() {
    let ws = workspace(&[
        (
            "Cargo.toml",
            "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        (
            "src/lib.rs",
            "pub mod platform {\n    #[cfg(target_arch = \"aarch64\")]\n    #[path = \"../board/virt.rs\"]\n    pub mod virt;\n}\n",
        ),
        (
            "src/board/virt.rs",
            "pub mod arm64 {\n    pub fn halt() { unsafe { core::arch::asm!(\"wfi\") } }\n}\nmod uart;\n",
        ),
        (
            "src/board/uart.rs",
            "pub fn put(b: u8) { unsafe { core::arch::asm!(\"dsb sy\", \"strb {0:w}, [{1}]\", in(reg) b, in(reg) 0x0900_0000u64) } }\n",
        ),
    ]);
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let plan = json(&out);
    let virt = module(&plan, "hv::platform::virt");
    assert_eq!(virt["source"], "src/board/virt.rs");
    assert_eq!(evidence_line(virt, "asm-mnemonic", "wfi"), Some(2));
    let uart = module(&plan, "hv::platform::virt::uart");
    assert_eq!(uart["source"], "src/board/uart.rs");
    // lib.rs: the cfg gate inside the inline module is evidence.
    let lib = module(&plan, "hv");
    assert_eq!(
        evidence_line(lib, "cfg", "target_arch = \"aarch64\""),
        Some(2)
    );
}

#[test]
fn unreachable_git_dependencies_do_not_stop_the_plan() {
    let ws = mini_hypervisor();
    let manifest = ws.path().join("hv/Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("vendor-blob = { git = \"https://127.0.0.1:9/never/there.git\" }\n");
    std::fs::write(&manifest, text).unwrap();
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 5);
}

#[test]
fn no_arm64_code_is_a_clean_empty_plan() {
    let ws = workspace(&[
        (
            "Cargo.toml",
            "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("src/main.rs", "fn main() { println!(\"hi\"); }\n"),
    ]);
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("no ARM64 code found"),
        "{}",
        stderr(&out)
    );
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"], serde_json::json!([]));
}

#[test]
fn not_a_cargo_project_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["plan"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not inside a cargo project"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("--manifest-path"), "{}", stderr(&out));
}

#[test]
fn missing_or_wrong_manifest_path_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope/Cargo.toml");
    let out = run(
        dir.path(),
        &["plan", "--manifest-path", missing.to_str().unwrap()],
    );
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("does not exist") && err.contains("nope/Cargo.toml"),
        "{err}"
    );
    let out = run(
        dir.path(),
        &["plan", "--manifest-path", dir.path().to_str().unwrap()],
    );
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not a Cargo.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn malformed_cargo_toml_is_a_usage_error() {
    let ws = workspace(&[
        ("Cargo.toml", "[package\nname = \"broken\"\n"),
        ("src/lib.rs", ""),
    ]);
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("cargo metadata failed"), "{err}");
    assert!(err.contains("Cargo.toml"), "{err}");
}

#[test]
fn unparsable_file_is_reported_with_line_and_the_rest_is_planned() {
    let ws = mini_hypervisor();
    write(
        ws.path(),
        "hv/src/arch/aarch64/stage2.rs",
        b"pub fn ok() {}\n\npub fn broken( {\n",
    );
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("hv/src/arch/aarch64/stage2.rs:"), "{err}");
    assert!(err.contains("does not parse"), "{err}");
    let plan = json(&out);
    assert_eq!(
        plan["diagnostics"][0]["path"],
        "hv/src/arch/aarch64/stage2.rs"
    );
    assert!(plan["diagnostics"][0]["line"].as_u64().unwrap() >= 3);
    let paths = module_paths(&plan);
    assert!(
        paths.contains(&"hv::arch::aarch64::gic".to_string()),
        "{paths:?}"
    );
    assert!(!paths.contains(&"hv::arch::aarch64::stage2".to_string()));
}

#[test]
fn non_utf8_source_is_reported() {
    let ws = mini_hypervisor();
    write(
        ws.path(),
        "hv/src/arch/aarch64/stage2.rs",
        b"pub fn a() {}\n// caf\xe9\n",
    );
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("hv/src/arch/aarch64/stage2.rs:2: not valid UTF-8"),
        "{err}"
    );
    assert!(stdout(&out).contains("x86_64/gic.rs"), "rest still planned");
}

#[test]
fn module_cycle_through_path_is_reported_not_followed_forever() {
    let ws = mini_hypervisor();
    write(
        ws.path(),
        "hv/src/arch/aarch64/stage2.rs",
        b"#[path = \"loop.rs\"]\nmod again;\npub fn f() {}\n",
    );
    write(
        ws.path(),
        "hv/src/arch/aarch64/loop.rs",
        b"#[path = \"stage2.rs\"]\nmod back;\n",
    );
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("module cycle"), "{err}");
    assert!(err.contains("hv/src/arch/aarch64/loop.rs:2"), "{err}");
}

#[cfg(unix)]
#[test]
fn symlink_loop_is_reported() {
    let ws = mini_hypervisor();
    let dir = ws.path().join("hv/src/arch/aarch64");
    std::fs::remove_file(dir.join("stage2.rs")).unwrap();
    std::os::unix::fs::symlink("stage2_b.rs", dir.join("stage2.rs")).unwrap();
    std::os::unix::fs::symlink("stage2.rs", dir.join("stage2_b.rs")).unwrap();
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("stage2.rs") && err.contains("symbolic link loop"),
        "{err}"
    );
    assert!(stdout(&out).contains("x86_64/gic.rs"), "rest still planned");
}

#[test]
fn huge_generated_file_is_skipped_with_a_clear_error() {
    let ws = mini_hypervisor();
    let mut big = String::from("pub static TABLE: [u8; 0] = [];\n");
    let line =
        "// generated padding line for a very large file .......................................\n";
    while big.len() < 50 * 1024 * 1024 {
        big.push_str(line);
    }
    write(ws.path(), "hv/src/arch/aarch64/stage2.rs", big.as_bytes());
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("stage2.rs: not scanned: 50.0 MiB"), "{err}");
    assert!(err.contains("max-file-size"), "{err}");
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 4);
}

#[test]
fn bad_flags_are_usage_errors_and_help_is_not() {
    let ws = mini_hypervisor();
    let out = run(ws.path(), &["plan", "--message-format", "yaml"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("--message-format"),
        "{}",
        stderr(&out)
    );
    let out = run(ws.path(), &["--help"]);
    assert_code(&out, 0);
    let help = stdout(&out);
    for word in [
        "plan",
        "config",
        "--manifest-path",
        "--message-format",
        "vmcs",
    ] {
        assert!(help.contains(word), "help mentions {word}: {help}");
    }
}

fn plan_json(dir: &std::path::Path) -> Value {
    let out = run(dir, &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    json(&out)
}

#[test]
fn rescans_use_the_cache_and_notice_every_change() {
    let ws = mini_hypervisor();
    write(
        ws.path(),
        "hv/src/arch/aarch64/boot.S",
        b"_start:\n    mrs x0, currentel\n",
    );
    write(
        ws.path(),
        "hv/src/arch/aarch64/mod.rs",
        b"pub mod gic;\npub mod stage2;\npub mod sysreg;\ncore::arch::global_asm!(include_str!(\"boot.S\"));\n",
    );
    let first = plan_json(ws.path());
    let cache = ws.path().join("target/eterna-port/scan-cache");
    assert!(cache.is_file(), "the scan is cached");
    assert_eq!(
        plan_json(ws.path()),
        first,
        "a cached rescan gives the same plan"
    );

    // A changed source file is scanned again.
    let gic = ws.path().join("hv/src/arch/aarch64/gic.rs");
    let mut text = std::fs::read_to_string(&gic).unwrap();
    text.push_str("pub fn pmr() { unsafe { asm!(\"msr icc_pmr_el1, xzr\") } }\n");
    std::fs::write(&gic, text).unwrap();
    let plan = plan_json(ws.path());
    let gic = module(&plan, "hv::arch::aarch64::gic");
    assert!(evidence_line(gic, "sysreg", "ICC_PMR_EL1").is_some());
    assert!(gic["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["name"] == "pmr"));

    // So is a file whose included assembly changed.
    let root = module(&plan, "hv::arch::aarch64");
    assert!(evidence_line(root, "asm-mnemonic", "eret").is_none());
    write(
        ws.path(),
        "hv/src/arch/aarch64/boot.S",
        b"_start:\n    mrs x0, currentel\n    eret\n",
    );
    let plan = plan_json(ws.path());
    let root = module(&plan, "hv::arch::aarch64");
    assert!(evidence_line(root, "asm-mnemonic", "eret").is_some());

    // A removed module disappears.
    write(
        ws.path(),
        "hv/src/arch/aarch64/mod.rs",
        b"pub mod gic;\npub mod sysreg;\ncore::arch::global_asm!(include_str!(\"boot.S\"));\n",
    );
    let plan = plan_json(ws.path());
    assert!(!module_paths(&plan).contains(&"hv::arch::aarch64::stage2".to_string()));
}

#[test]
fn a_corrupt_or_unwritable_cache_never_fails_the_plan() {
    let ws = mini_hypervisor();
    let first = plan_json(ws.path());
    let cache = ws.path().join("target/eterna-port/scan-cache");
    std::fs::write(&cache, b"\x00\x01garbage that is not a cache").unwrap();
    assert_eq!(plan_json(ws.path()), first);

    // A `target` that is a file: the cache cannot be written, the plan still works.
    let ws = mini_hypervisor();
    std::fs::write(ws.path().join("target"), b"not a directory").unwrap();
    let plan = plan_json(ws.path());
    assert_eq!(plan["modules"].as_array().unwrap().len(), 5);
}

#[test]
fn inside_a_member_only_that_member_is_planned_unless_workspace() {
    let ws = mini_hypervisor();
    // From the core crate's directory: cargo's rule selects just that member, which
    // has no ARM64 code.
    let out = run(
        &ws.path().join("core"),
        &["plan", "--message-format", "json"],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"], serde_json::json!([]));
    let out = run(
        &ws.path().join("core/src"),
        &["plan", "--workspace", "--message-format", "json"],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 5);
    // The same through --manifest-path of a member.
    let manifest = ws.path().join("hv/Cargo.toml");
    let out = run(
        ws.path(),
        &[
            "plan",
            "--manifest-path",
            manifest.to_str().unwrap(),
            "--message-format",
            "json",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(json(&out)["modules"].as_array().unwrap().len(), 5);
}
