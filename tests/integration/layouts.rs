//! `cargo eterna-port plan` on one small workspace per layout real hypervisors use
//! (tests/fixtures/layouts/*): the exact plan of each.

use crate::common;

use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

fn layout_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/layouts")
        .join(name)
}

/// Plans a copy of the layout workspace (the checked-in one is never touched).
fn plan_layout(name: &str) -> Value {
    let copy = copy_tree(&layout_dir(name));
    let out = run(copy.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let plan = json(&out);
    assert_eq!(plan["diagnostics"], json!([]), "{name}: {plan:#}");
    plan
}

/// (source, component, target, status) of every planned module, sorted by source.
fn rows(plan: &Value) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap().to_string();
            (s("source"), s("component"), s("target"), s("status"))
        })
        .collect();
    v.sort();
    v
}

fn expect(rows: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    v.sort();
    v
}

fn evidence_kinds(plan: &Value, source: &str) -> Vec<String> {
    let m = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source"] == source)
        .unwrap_or_else(|| panic!("{source} not planned"));
    let mut kinds: Vec<String> = m["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[test]
fn arch_dir_layout_mirrors_the_arch_directory_keeping_names() {
    let plan = plan_layout("arch-dir");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "src/arch/aarch64/gic.rs",
                "interrupt-controller",
                "src/arch/x86_64/gic.rs",
                "new"
            ),
            (
                "src/arch/aarch64/mod.rs",
                "platform",
                "src/arch/x86_64/mod.rs",
                "new"
            ),
            (
                "src/arch/aarch64/stage2.rs",
                "stage2",
                "src/arch/x86_64/stage2.rs",
                "new"
            ),
            (
                "src/arch/mod.rs",
                "arch-neutral",
                "src/arch/mod.rs",
                "partial"
            ),
        ])
    );
    let gic = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source"] == "src/arch/aarch64/gic.rs")
        .unwrap();
    assert_eq!(gic["x86_concept"], "apic");
    assert_eq!(plan["arm_dependencies"], json!([]));
}

#[test]
fn arch_crates_layout_plans_every_module_of_arm64_named_packages() {
    let plan = plan_layout("arch-crates");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "arch/aarch64_hal/gic/src/gicd.rs",
                "interrupt-controller",
                "arch/aarch64_hal/gic/src/x86_64/gicd.rs",
                "new"
            ),
            (
                "arch/aarch64_hal/gic/src/lib.rs",
                "interrupt-controller",
                "arch/aarch64_hal/gic/src/lib.rs",
                "partial"
            ),
            (
                "arm_vcpu/src/context_frame.rs",
                "vcpu",
                "arm_vcpu/src/x86_64/context_frame.rs",
                "new"
            ),
            (
                "arm_vcpu/src/lib.rs",
                "vcpu",
                "arm_vcpu/src/lib.rs",
                "partial"
            ),
            (
                "arm_vcpu/src/vcpu.rs",
                "vcpu",
                "arm_vcpu/src/x86_64/vcpu.rs",
                "new"
            ),
            ("hv/src/lib.rs", "arch-neutral", "hv/src/lib.rs", "partial"),
        ])
    );
    assert_eq!(
        evidence_kinds(&plan, "arch/aarch64_hal/gic/src/gicd.rs"),
        ["arch-crate"]
    );
    assert_eq!(
        evidence_kinds(&plan, "hv/src/lib.rs"),
        ["arm-crate-path", "cfg"]
    );
    assert_eq!(
        plan["arm_dependencies"],
        json!([
            {"package": "hv", "name": "gic", "kind": "normal", "already_gated": false,
             "used_by": ["hv"], "used_outside_arm64": ["hv"]},
            {"package": "hv", "name": "arm_vcpu", "kind": "normal", "already_gated": true,
             "used_by": ["hv"], "used_outside_arm64": ["hv"]},
        ])
    );
}

#[test]
fn gated_subtree_layout_plans_the_whole_subtree_under_x86_64() {
    let plan = plan_layout("gated-subtree");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "src/gicv3/dist.rs",
                "interrupt-controller",
                "src/x86_64/gicv3/dist.rs",
                "new"
            ),
            (
                "src/gicv3/mod.rs",
                "interrupt-controller",
                "src/x86_64/gicv3/mod.rs",
                "new"
            ),
            ("src/lib.rs", "arch-neutral", "src/lib.rs", "partial"),
            ("src/psci.rs", "smp-power", "src/x86_64/psci.rs", "new"),
        ])
    );
    // dist.rs has no AArch64 text of its own: the gated `mod` line makes it ARM64.
    assert_eq!(evidence_kinds(&plan, "src/gicv3/dist.rs"), ["gated-mod"]);
    let dist = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["source"] == "src/gicv3/dist.rs")
        .unwrap();
    assert_eq!(
        dist["evidence"][0],
        json!({"kind": "gated-mod", "name": "mod gicv3", "line": null,
               "file": "src/lib.rs", "line_in_file": 5, "count": 1})
    );
}

#[test]
fn multi_arch_layout_never_plans_riscv_or_loongarch() {
    let plan = plan_layout("multi-arch");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "src/arch/aarch64/mod.rs",
                "platform",
                "src/arch/x86_64/mod.rs",
                "new"
            ),
            (
                "src/arch/mod.rs",
                "arch-neutral",
                "src/arch/mod.rs",
                "partial"
            ),
        ])
    );
    for m in plan["modules"].as_array().unwrap() {
        for key in ["source", "target"] {
            let p = m[key].as_str().unwrap();
            assert!(
                !p.contains("riscv") && !p.contains("loongarch"),
                "{p} planned"
            );
        }
    }
}

#[test]
fn missing_x86_layout_is_no_error_and_keeps_the_wired_target() {
    let plan = plan_layout("missing-x86");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "src/arch/aarch64/mod.rs",
                "platform",
                "src/arch/x86_64/mod.rs",
                "new"
            ),
            (
                "src/arch/aarch64/timer.rs",
                "timer",
                "src/arch/x86_64/timer.rs",
                "new"
            ),
            // Already has its `#[cfg(target_arch = "x86_64")] mod x86_64;` line.
            (
                "src/arch/mod.rs",
                "arch-neutral",
                "src/arch/mod.rs",
                "exists"
            ),
        ])
    );
}

#[test]
fn nightly_pin_layout_plans_with_the_pinned_toolchain() {
    // The plan runs cargo metadata with the pinned `nightly`; a machine without one
    // cannot plan this workspace (the tool says so, exit 2: the `check::` area).
    let nightly = std::process::Command::new("rustup")
        .args(["run", "nightly", "rustc", "-V"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        eprintln!("skipped: no nightly toolchain installed for the nightly-pin layout");
        return;
    }
    let plan = plan_layout("nightly-pin");
    assert_eq!(
        rows(&plan),
        expect(&[
            ("src/aarch64.rs", "platform", "src/x86_64.rs", "new"),
            ("src/lib.rs", "arch-neutral", "src/lib.rs", "partial"),
        ])
    );
}

#[test]
fn arm_dep_layout_lists_the_arm_only_dependency_and_its_users() {
    let plan = plan_layout("arm-dep");
    assert_eq!(
        rows(&plan),
        expect(&[
            ("src/cpu.rs", "arch-neutral", "src/x86_64/cpu.rs", "new"),
            ("src/lib.rs", "arch-neutral", "src/lib.rs", "partial"),
        ])
    );
    assert_eq!(
        plan["arm_dependencies"],
        json!([{"package": "armdep-hv", "name": "aarch64-cpu", "kind": "normal",
                "already_gated": false, "used_by": ["armdep_hv::cpu"],
                "used_outside_arm64": []}])
    );
}

#[test]
fn cfg_attr_paths_file_gates_and_missing_files() {
    let ws = workspace(&[
        (
            "Cargo.toml",
            "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        (
            "src/lib.rs",
            "#![no_std]\n\
             #[cfg_attr(target_arch = \"aarch64\", path = \"hal/arch/aarch64/mod.rs\")]\n\
             #[cfg_attr(target_arch = \"x86_64\", path = \"hal/arch/x86_64/mod.rs\")]\n\
             mod arch;\n\
             mod sbi;\n\
             #[cfg(target_arch = \"riscv64\")]\n\
             mod riscv_only;\n",
        ),
        (
            "src/hal/arch/aarch64/mod.rs",
            "pub fn halt() { unsafe { core::arch::asm!(\"wfe\") } }\n",
        ),
        // Gated to RISC-V as a whole file: never planned, whatever it holds.
        (
            "src/sbi.rs",
            "#![cfg(target_arch = \"riscv64\")]\npub fn f() { let _ = cfg!(target_arch = \"aarch64\"); }\n",
        ),
    ]);
    let out = run(ws.path(), &["plan", "--message-format", "json"]);
    assert_code(&out, 0);
    let plan = json(&out);
    assert_eq!(plan["diagnostics"], json!([]), "{plan:#}");
    assert_eq!(
        rows(&plan),
        expect(&[
            (
                "src/hal/arch/aarch64/mod.rs",
                "platform",
                "src/hal/arch/x86_64/mod.rs",
                "new"
            ),
            // Wires the new module in, though it has no evidence of its own.
            ("src/lib.rs", "arch-neutral", "src/lib.rs", "exists"),
        ])
    );

    // A missing file for an ungated `mod` line stays an error.
    write(ws.path(), "src/lib.rs", b"#![no_std]\nmod gone;\n");
    let out = run(ws.path(), &["plan"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("file not found for module `gone`"),
        "{}",
        stderr(&out)
    );
}
