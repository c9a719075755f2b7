//! `plan` on a temp copy of the reference ARM64 hypervisor (tests/fixtures/eterna-arm64).

use crate::common;

use std::collections::{HashMap, HashSet};

use common::*;
use serde_json::Value;

/// (module path, component, target) for every module the fixture's plan must contain.
const EXPECTED: [(&str, &str, &str); 17] = [
    // main.rs names `arch::aarch64` items: it needs an in-place wiring edit.
    ("eterna", "arch-neutral", "eterna/src/main.rs"),
    ("eterna::arch", "arch-neutral", "eterna/src/arch/mod.rs"),
    (
        "eterna::arch::aarch64",
        "platform",
        "eterna/src/arch/x86_64/mod.rs",
    ),
    (
        "eterna::arch::aarch64::boot",
        "boot",
        "eterna/src/arch/x86_64/boot.rs",
    ),
    (
        "eterna::arch::aarch64::cache",
        "cache-tlb",
        "eterna/src/arch/x86_64/cache.rs",
    ),
    (
        "eterna::arch::aarch64::exception",
        "exception",
        "eterna/src/arch/x86_64/exception.rs",
    ),
    (
        "eterna::arch::aarch64::gic",
        "interrupt-controller",
        "eterna/src/arch/x86_64/gic.rs",
    ),
    (
        "eterna::arch::aarch64::hypercall",
        "hypercall",
        "eterna/src/arch/x86_64/hypercall.rs",
    ),
    (
        "eterna::arch::aarch64::mmu",
        "mmu",
        "eterna/src/arch/x86_64/mmu.rs",
    ),
    (
        "eterna::arch::aarch64::pl011",
        "uart",
        "eterna/src/arch/x86_64/pl011.rs",
    ),
    (
        "eterna::arch::aarch64::psci",
        "smp-power",
        "eterna/src/arch/x86_64/psci.rs",
    ),
    (
        "eterna::arch::aarch64::stage2",
        "stage2",
        "eterna/src/arch/x86_64/stage2.rs",
    ),
    (
        "eterna::arch::aarch64::sysreg",
        "sysreg",
        "eterna/src/arch/x86_64/sysreg.rs",
    ),
    (
        "eterna::arch::aarch64::timer",
        "timer",
        "eterna/src/arch/x86_64/timer.rs",
    ),
    (
        "eterna::arch::aarch64::vcpu",
        "vcpu",
        "eterna/src/arch/x86_64/vcpu.rs",
    ),
    (
        "eterna::arch::aarch64::vm",
        "vm-control",
        "eterna/src/arch/x86_64/vm.rs",
    ),
    (
        "eterna::guest",
        "interrupt-controller",
        "eterna/src/guest/x86_64.rs",
    ),
];

fn plan_fixture(extra: &[&str]) -> (tempfile::TempDir, Value) {
    let copy = copy_tree(&fixture_dir());
    let mut args = vec!["plan", "--message-format", "json"];
    args.extend_from_slice(extra);
    let out = run(copy.path(), &args);
    assert_code(&out, 0);
    let plan = json(&out);
    (copy, plan)
}

#[test]
fn fixture_plan_maps_every_arm64_module() {
    let (_copy, plan) = plan_fixture(&[]);
    assert_eq!(plan["diagnostics"], serde_json::json!([]));
    let modules = plan["modules"].as_array().unwrap();
    let got: HashMap<&str, (&str, &str, &str)> = modules
        .iter()
        .map(|m| {
            (
                m["module_path"].as_str().unwrap(),
                (
                    m["component"].as_str().unwrap(),
                    m["target"].as_str().unwrap(),
                    m["status"].as_str().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), EXPECTED.len(), "{:#?}", got.keys());
    for (path, component, target) in EXPECTED {
        let (c, t, status) = got
            .get(path)
            .unwrap_or_else(|| panic!("{path} not planned"));
        assert_eq!((*c, *t), (component, target), "{path}");
        // In-place wiring edits exist but lack the x86_64 side.
        let in_place = path == "eterna::arch" || path == "eterna";
        let want = if in_place { "partial" } else { "new" };
        assert_eq!(*status, want, "{path}");
    }
    // The arch-neutral core crate is not ARM64 code.
    assert!(!got.keys().any(|p| p.starts_with("eterna_core")));
}

#[test]
fn fixture_evidence_points_at_real_lines() {
    let (copy, plan) = plan_fixture(&[]);
    let modules = plan["modules"].as_array().unwrap();
    let find = |path: &str| {
        modules
            .iter()
            .find(|m| m["module_path"] == path)
            .unwrap_or_else(|| panic!("{path}"))
    };
    // Every sysreg/mnemonic evidence line of a Rust file names that register or
    // instruction in the copied source (or in the assembly file it cites).
    for m in modules {
        let source =
            std::fs::read_to_string(copy.path().join(m["source"].as_str().unwrap())).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        for e in m["evidence"].as_array().unwrap() {
            let kind = e["kind"].as_str().unwrap();
            if !matches!(kind, "sysreg" | "asm-mnemonic") {
                continue;
            }
            let name = e["name"].as_str().unwrap().to_ascii_lowercase();
            let text = match e["file"].as_str() {
                Some(f) => {
                    let dir = std::path::Path::new(m["source"].as_str().unwrap())
                        .parent()
                        .unwrap();
                    let asm = std::fs::read_to_string(copy.path().join(dir).join(f)).unwrap();
                    let n = e["line_in_file"].as_u64().unwrap() as usize;
                    asm.lines().nth(n - 1).unwrap().to_ascii_lowercase()
                }
                None => {
                    let n = e["line"].as_u64().unwrap() as usize;
                    // A string literal may span lines; the evidence is on its line.
                    lines[n - 1].to_ascii_lowercase()
                }
            };
            assert!(
                text.contains(&name),
                "{}: {e} not on its line: {text}",
                m["module_path"]
            );
        }
    }
    let kinds = |m: &Value| -> HashSet<(String, String)> {
        m["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let vm = kinds(find("eterna::arch::aarch64::vm"));
    for reg in [
        "HCR_EL2",
        "VTCR_EL2",
        "VTTBR_EL2",
        "VMPIDR_EL2",
        "VPIDR_EL2",
    ] {
        assert!(
            vm.contains(&("sysreg".into(), reg.into())),
            "vm.rs uses {reg}"
        );
    }
    let gic = kinds(find("eterna::arch::aarch64::gic"));
    assert!(gic.contains(&("sysreg".into(), "ICH_LR0_EL2".into())));
    let boot = kinds(find("eterna::arch::aarch64::boot"));
    assert!(boot.contains(&("asm-file".into(), "boot.S".into())));
    assert!(boot.contains(&("sysreg".into(), "VBAR_EL2".into())));
    let psci = kinds(find("eterna::arch::aarch64::psci"));
    assert!(psci.contains(&("asm-mnemonic".into(), "smc".into())));
    let arch = kinds(find("eterna::arch"));
    assert!(arch.contains(&("cfg".into(), "target_arch = \"aarch64\"".into())));
}

#[test]
fn fixture_modules_come_after_their_dependencies() {
    let (_copy, plan) = plan_fixture(&[]);
    let modules = plan["modules"].as_array().unwrap();
    let index: HashMap<&str, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m["module_path"].as_str().unwrap(), i))
        .collect();
    let deps: Vec<Vec<usize>> = modules
        .iter()
        .map(|m| {
            m["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| index[d.as_str().unwrap()])
                .collect()
        })
        .collect();
    let reaches = |from: usize, to: usize| {
        let mut seen = HashSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                stack.extend(&deps[n]);
            }
        }
        false
    };
    let mut edges = 0;
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            edges += 1;
            // A dependency listed later is only allowed inside a `use` cycle.
            assert!(
                j < i || reaches(j, i),
                "{} is listed before its dependency {}",
                modules[i]["module_path"],
                modules[j]["module_path"]
            );
        }
    }
    assert!(edges >= 10, "the fixture's arch modules use each other");
    // The sysreg accessors are a leaf everything builds on.
    assert_eq!(modules[0]["module_path"], "eterna::arch::aarch64::sysreg");
}

#[test]
fn fixture_plan_selects_by_alias() {
    let (_copy, plan) = plan_fixture(&["vmcs", "ept", "serial"]);
    let mut got: Vec<&str> = plan["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["target"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "eterna/src/arch/x86_64/pl011.rs",
            "eterna/src/arch/x86_64/stage2.rs",
            "eterna/src/arch/x86_64/vm.rs"
        ]
    );
}
