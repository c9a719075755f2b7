//! Benchmark: `cargo eterna-port plan` on a generated 90,000-line, 35-crate ARM64
//! hypervisor workspace, against `cargo metadata --no-deps` on the same workspace; and
//! the offline port (`cargo eterna-port`, no API key) of a 52-module workspace.
//!
//! Targets: plan wall time ≤ 2 × cargo metadata wall time, warm (unchanged workspace,
//! as on re-runs and in pre-commit hooks; cold = scan cache deleted, every file parsed,
//! is printed too); the offline port of 50 modules ≤ 1 s.
//! Run with `cargo bench --bench plan`; it prints the medians and the ratios.
//! `ETERNA_BENCH_LINES` changes the size, `ETERNA_BENCH_RUNS` the repetitions,
//! `ETERNA_BENCH_DIR` keeps the generated workspace there.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ARM_MODULES: [&str; 12] = [
    "gic",
    "stage2",
    "mmu",
    "timer",
    "pl011",
    "psci",
    "vcpu",
    "exception",
    "sysreg",
    "vm",
    "cache",
    "hypercall",
];

/// Writes one ARM64-flavoured module of about `lines` lines.
fn arm_module(name: &str, lines: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "//! Generated {name} module.\nuse core::arch::asm;\nuse super::sysreg;\n"
    );
    let mut i = 0;
    while s.lines().count() < lines {
        let _ = write!(
            s,
            "/// Programs register block {i}.\n\
             pub fn {name}_op_{i}(value: u64) -> u64 {{\n\
             \x20   let out: u64;\n\
             \x20   // SAFETY: generated benchmark code, never executed.\n\
             \x20   unsafe {{\n\
             \x20       asm!(\"msr hcr_el2, {{0}}\", \"isb\", in(reg) value);\n\
             \x20       asm!(\"mrs {{0}}, vttbr_el2\", out(reg) out);\n\
             \x20       asm!(\"tlbi vmalls12e1is\", \"dsb ish\");\n\
             \x20   }}\n\
             \x20   out.wrapping_add({i})\n\
             }}\n\n\
             pub struct {ty}State{i} {{\n\
             \x20   pub base: u64,\n\
             \x20   pub len: usize,\n\
             }}\n\n\
             impl {ty}State{i} {{\n\
             \x20   pub fn new(base: u64) -> Self {{\n\
             \x20       Self {{ base, len: {i} }}\n\
             \x20   }}\n\
             }}\n\n",
            ty = capitalize(name)
        );
        i += 1;
    }
    s
}

/// Writes one arch-neutral module of about `lines` lines.
fn neutral_module(name: &str, lines: usize) -> String {
    let mut s = format!("//! Generated {name} module.\n\n");
    let mut i = 0;
    while s.lines().count() < lines {
        let _ = write!(
            s,
            "/// Bookkeeping entry {i}.\n\
             #[derive(Debug, Clone, Copy)]\n\
             pub struct Entry{i} {{\n\
             \x20   pub id: u32,\n\
             \x20   pub flags: u64,\n\
             }}\n\n\
             pub fn lookup_{i}(table: &[u64], key: u64) -> Option<usize> {{\n\
             \x20   table.iter().position(|&v| v == key ^ {i})\n\
             }}\n\n"
        );
        i += 1;
    }
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Generates a workspace of `crates` hypervisor crates totalling about `total_lines`.
fn generate(root: &Path, total_lines: usize, crates: usize) -> usize {
    let files_per_crate = ARM_MODULES.len() + 8;
    let per_file = total_lines / (crates * files_per_crate);
    let members: Vec<String> = (0..crates).map(|c| format!("\"hv{c}\"")).collect();
    write(
        root,
        "Cargo.toml",
        &format!(
            "[workspace]\nmembers = [{}]\nresolver = \"2\"\n",
            members.join(", ")
        ),
    );
    let mut lines = 0;
    for c in 0..crates {
        let base = format!("hv{c}");
        write(
            root,
            &format!("{base}/Cargo.toml"),
            &format!("[package]\nname = \"hv{c}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        );
        let mut lib = String::from("#![no_std]\npub mod arch;\n");
        for n in 0..8 {
            let _ = writeln!(lib, "pub mod core{n};");
            let text = neutral_module(&format!("core{n}"), per_file);
            lines += text.lines().count();
            write(root, &format!("{base}/src/core{n}.rs"), &text);
        }
        write(root, &format!("{base}/src/lib.rs"), &lib);
        write(
            root,
            &format!("{base}/src/arch/mod.rs"),
            "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n",
        );
        let mods: String = ARM_MODULES
            .iter()
            .map(|m| format!("pub mod {m};\n"))
            .collect();
        write(root, &format!("{base}/src/arch/aarch64/mod.rs"), &mods);
        for m in ARM_MODULES {
            let text = arm_module(m, per_file);
            lines += text.lines().count();
            write(root, &format!("{base}/src/arch/aarch64/{m}.rs"), &text);
        }
    }
    lines
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm the page cache and cargo's own caches
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` passes nothing and
    // expects a quick run.
    let full = std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("ETERNA_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 90_000 } else { 4_000 });
    let runs: usize = std::env::var("ETERNA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 15 } else { 1 });
    let dir = tempfile::tempdir().unwrap();
    // ETERNA_BENCH_DIR keeps the generated workspace for profiling.
    let root = std::env::var_os("ETERNA_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().to_path_buf());
    let lines = generate(&root, total, if full { 35 } else { 4 });
    let manifest = root.join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    let metadata = time(runs, || {
        let out = Command::new(&cargo)
            .args([
                "metadata",
                "--no-deps",
                "--offline",
                "--format-version",
                "1",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(out.status.success());
    });
    let mut modules = 0;
    let mut run_plan = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cargo-eterna-port"))
            .args(["plan", "--message-format", "json", "--manifest-path"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        modules = v["modules"].as_array().unwrap().len();
    };
    // Cold: no scan cache, every file parsed (a first run, or after an upgrade).
    let cache = root.join("target/eterna-port/scan-cache");
    let cold = time(runs, || {
        let _ = std::fs::remove_file(&cache);
        run_plan();
    });
    // Warm: the workspace is unchanged since the last plan (re-runs, pre-commit hooks).
    let plan = time(runs, &mut run_plan);
    let ratio = plan.as_secs_f64() / metadata.as_secs_f64();
    let cold_ratio = cold.as_secs_f64() / metadata.as_secs_f64();
    println!("plan benchmark: {lines} lines, {modules} planned modules, median of {runs} runs");
    println!(
        "  cargo metadata --no-deps      : {:>8.1} ms",
        metadata.as_secs_f64() * 1e3
    );
    println!(
        "  cargo eterna-port plan, cold  : {:>8.1} ms  ({cold_ratio:.2}x)",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "  cargo eterna-port plan, warm  : {:>8.1} ms  ({ratio:.2}x, target <= 2.00x)",
        plan.as_secs_f64() * 1e3
    );

    // The offline port of 4 crates × 13 planned modules (12 + the arch root) = 52, each
    // run on a fresh copy of the workspace (the copy is not timed).
    let port_dir = tempfile::tempdir().unwrap();
    let port_src = port_dir.path().join("src");
    generate(&port_src, if full { 20_000 } else { 2_000 }, 4);
    let mut ported = 0usize;
    let mut port_run = |tag: &str, extra: &[&str]| -> Duration {
        let mut times = Vec::new();
        for n in 0..runs.max(1) + 1 {
            let copy = port_dir.path().join(format!("{tag}{n}"));
            copy_tree(&port_src, &copy);
            let t = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_cargo-eterna-port"))
                .args(["--allow-no-vcs", "--quiet", "--message-format", "json"])
                .args(extra)
                .arg("--manifest-path")
                .arg(copy.join("Cargo.toml"))
                .env_remove("OPENROUTER_API_KEY")
                .env_remove("OPENROUTER_API_KEY1")
                .env_remove("OPENROUTER_API_KEY2")
                .env_remove("OPENROUTER_API_KEY3")
                .output()
                .unwrap();
            let elapsed = t.elapsed();
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            ported = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["reason"] == "port-finished")
                .and_then(|v| v["modules"].as_array().map(Vec::len))
                .unwrap_or(0);
            if n > 0 {
                times.push(elapsed); // the first run warms the page cache
            }
            let _ = std::fs::remove_dir_all(&copy);
        }
        median(times)
    };
    // The engine alone (derive, wire, write, record in the store) …
    let engine = port_run("engine", &["--max-fix-iterations", "0"]);
    // … and the whole offline port, with the cargo check loop (cargo's own time).
    let whole = port_run("whole", &[]);
    println!(
        "  offline port, {ported:>3} modules: {:>8.1} ms  (engine, no fix loop; target <= 1000 ms)",
        engine.as_secs_f64() * 1e3
    );
    println!(
        "  offline port + fix loop       : {:>8.1} ms  (includes cargo check of the port)",
        whole.as_secs_f64() * 1e3
    );
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
