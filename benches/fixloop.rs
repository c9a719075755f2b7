//! The fix loop's own cost: its wall time against the sum of the `cargo check` wall
//! times it ran, on a ported copy of the fixture with an injected error.
//!
//! `cargo bench --bench fixloop`: 10 loops per case. Cases: a fixer answering at once
//! with the fix (a zero-latency DebugAgent; check → fix → check), and an error rustc
//! fixes itself (check → rustfix → check). Target: loop ≤ 1.05 × Σ cargo check. Without
//! `--bench` (as `cargo test` runs it) one loop per case, as a smoke test.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use cargo_eterna_port::fixloop::{self, Fixer, LoopOptions, ModuleDiagnostics};
use cargo_eterna_port::plan::ModulePlan;

/// Answers every request with the stored fix of `.0` (a workspace-relative path), at
/// once.
struct Instant(String, String);

impl Fixer for Instant {
    fn fix(&mut self, _: u32, _: &[ModuleDiagnostics]) -> anyhow::Result<Vec<(String, String)>> {
        Ok(vec![(self.0.clone(), self.1.clone())])
    }
}

fn specs(root: &Path) -> Vec<ModulePlan> {
    let out = common::command(root, &["plan", "--message-format", "json"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    common::json(&out)["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_value(m.clone()).expect("a planned module"))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &str,
    runs: usize,
    root: &Path,
    file: &str,
    opts: &LoopOptions,
    broken: &str,
    fixed: &str,
    fixer: bool,
) {
    let (mut loops, mut checks, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut n_checks = 0;
    for _ in 0..runs {
        std::fs::write(root.join(file), broken).unwrap();
        let mut f = Instant(file.to_string(), fixed.to_string());
        let outcome = fixloop::run_loop(
            opts,
            fixer.then_some(&mut f as &mut dyn Fixer),
            &mut |files| fixloop::write_files(root, files),
            &mut |_| Ok(()),
        )
        .unwrap();
        assert_eq!(
            outcome.stop,
            fixloop::StopReason::Clean,
            "{:#?}",
            outcome.iterations
        );
        n_checks = outcome.iterations.len();
        loops.push(outcome.total_time);
        checks.push(outcome.check_time);
        ratios.push(outcome.total_time.as_secs_f64() / outcome.check_time.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "{name}: loop median {:.1?}, Σ cargo check median {:.1?} ({n_checks} checks), ratio median {:.3} (max {:.3}; {runs} runs; target ≤ 1.05)",
        median(loops),
        median(checks),
        ratios[ratios.len() / 2],
        ratios[ratios.len() - 1],
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 10 } else { 1 };
    let dir = common::copy_tree(&common::fixture_dir());
    let root = dir.path();
    let out = common::command(root, &["--allow-no-vcs", "--quiet"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    // 1: the port is complete but for stubs, which still check.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        common::stderr(&out)
    );
    let modules = specs(root);
    // The injected errors go into the VM-control module, wherever the plan puts it.
    let vm = modules
        .iter()
        .find(|m| m.component == cargo_eterna_port::knowledge::ComponentId::VmControl)
        .map(|m| m.target.clone())
        .expect("a planned vm-control module");
    let packages = vec!["eterna".to_string()];
    let mut opts = LoopOptions::new(root, "x86_64-unknown-none", &modules);
    opts.packages = &packages;
    opts.target_dir = Some(root.join("target"));
    let original = std::fs::read_to_string(root.join(&vm)).unwrap();
    // Warm the build (dependencies, the first full check).
    fixloop::check(&opts).unwrap();

    // A function of its own at the end of the module: no assumption about its items.
    let with = |line: &str| {
        format!("{original}\n#[allow(dead_code)]\nfn eterna_bench_injected() {{\n    {line}\n}}\n")
    };
    case(
        "zero-latency fixer",
        runs,
        root,
        &vm,
        &opts,
        &with("let x: u32 = \"s\";"),
        &original,
        true,
    );
    case(
        "rustfix (MachineApplicable)",
        runs,
        root,
        &vm,
        &opts,
        &with("let _r: &u32 = 5u32;"),
        &original,
        false,
    );
}
