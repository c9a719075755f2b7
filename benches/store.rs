//! Benchmark: the store with the local embedder.
//!
//! Targets (issue "memory"): with 100,000 chunks, indexing ≥ 2,000 chunks/s, hybrid
//! search p50 ≤ 10 ms and p99 ≤ 50 ms; incremental re-index of the unchanged reference
//! fixture ≤ 1 s (wall time of `cargo eterna-port index`, cargo metadata included).
//!
//! Run with `cargo bench --bench store`. Without `--bench` (as under `cargo test
//! --all-targets`) it does a quick small run. `ETERNA_BENCH_CHUNKS` changes the size,
//! `ETERNA_BENCH_QUERIES` the number of searches.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use cargo_eterna_port::store::index::Kind;
use cargo_eterna_port::store::{Filters, LocalEmbedder, SourceFile, Store};

const WORDS: [&str; 48] = [
    "interrupt",
    "controller",
    "distributor",
    "redistributor",
    "vcpu",
    "guest",
    "trap",
    "exception",
    "vector",
    "table",
    "stage",
    "translation",
    "page",
    "descriptor",
    "timer",
    "counter",
    "uart",
    "serial",
    "psci",
    "power",
    "secondary",
    "boot",
    "cache",
    "tlb",
    "invalidate",
    "barrier",
    "hypercall",
    "smc",
    "hvc",
    "mmio",
    "device",
    "memory",
    "region",
    "mapping",
    "context",
    "switch",
    "save",
    "restore",
    "register",
    "virtual",
    "physical",
    "address",
    "fault",
    "syndrome",
    "inject",
    "pending",
    "priority",
    "group",
];
const SYSREGS: [&str; 16] = [
    "HCR_EL2",
    "VTTBR_EL2",
    "VTCR_EL2",
    "ESR_EL2",
    "FAR_EL2",
    "HPFAR_EL2",
    "ICH_LR0_EL2",
    "ICH_HCR_EL2",
    "ICC_IAR1_EL1",
    "CNTHP_CTL_EL2",
    "CNTV_CVAL_EL0",
    "SCTLR_EL2",
    "TCR_EL2",
    "MAIR_EL2",
    "VBAR_EL2",
    "SPSR_EL2",
];
const MNEMONICS: [&str; 8] = ["msr", "mrs", "eret", "tlbi", "dsb", "isb", "hvc", "dc"];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// One generated Rust file of `items` functions (one chunk each).
fn rust_file(rng: &mut Rng, file: usize, items: usize) -> String {
    let mut s = String::new();
    for i in 0..items {
        let (a, b, c) = (rng.pick(&WORDS), rng.pick(&WORDS), rng.pick(&WORDS));
        let reg = rng.pick(&SYSREGS);
        let m = rng.pick(&MNEMONICS);
        let _ = write!(
            s,
            "/// Handles the {a} {b} of the {c} ({reg}).\n\
             pub fn {a}_{b}_{file}_{i}(value: u64) -> u64 {{\n\
             \x20   let v_{c} = value ^ {i};\n\
             \x20   unsafe {{ core::arch::asm!(\"{m} {reg}, {{0}}\", in(reg) v_{c}) }};\n\
             \x20   v_{c}.rotate_left({file} % 64)\n\
             }}\n\n"
        );
    }
    s
}

/// CPU time of this process so far (user + system), from /proc; `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let chunks: usize = std::env::var("ETERNA_BENCH_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let queries: usize = std::env::var("ETERNA_BENCH_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 500 } else { 20 });
    let per_file = 50;
    let files = chunks.div_ceil(per_file);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sources: Vec<SourceFile> = (0..files)
        .map(|f| SourceFile {
            path: format!("hv/src/arch/aarch64/gen{f}.rs"),
            kind: Kind::Code,
            text: rust_file(&mut rng, f, per_file),
            module_path: Some(format!("hv::arch::aarch64::gen{f}")),
            component: Some(["interrupt-controller", "stage2", "timer", "uart"][f % 4].into()),
            arch: "aarch64".into(),
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.db")).unwrap();
    let embedder = LocalEmbedder::new();
    let t = Instant::now();
    let stats = store.index(&sources, &embedder, &|_, _| {}).unwrap();
    let index_time = t.elapsed();
    let indexed = stats.chunks_added;
    assert!(
        indexed >= chunks,
        "{indexed} chunks indexed, expected {chunks}"
    );
    let rate = indexed as f64 / index_time.as_secs_f64();

    // Unchanged re-index of the same sources (library call).
    let t = Instant::now();
    let again = store.index(&sources, &embedder, &|_, _| {}).unwrap();
    let reindex_time = t.elapsed();
    assert_eq!(again.chunks_embedded, 0);

    // Searches: 2–4 words, sometimes a register name, CLI defaults.
    let filters = Filters {
        max_per_source: Some(2),
        ..Filters::default()
    };
    let mut times = Vec::with_capacity(queries);
    let cpu0 = cpu_time();
    for q in 0..queries {
        let mut text = format!("{} {}", rng.pick(&WORDS), rng.pick(&WORDS));
        if q % 2 == 0 {
            text.push(' ');
            text.push_str(rng.pick(&WORDS));
        }
        if q % 3 == 0 {
            text.push(' ');
            text.push_str(rng.pick(&SYSREGS));
        }
        let t = Instant::now();
        let r = store.search(&text, 10, &filters, &embedder).unwrap();
        times.push(t.elapsed());
        assert!(!r.is_empty(), "no result for {text}");
    }
    let cpu_per_search = match (cpu0, cpu_time()) {
        (Some(a), Some(b)) => Some((b - a) / queries as u32),
        _ => None,
    };
    times.sort();
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));

    // The fixture: `cargo eterna-port index` twice, timing the second (unchanged) run.
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eterna-arm64");
    let ws = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-R")
        .arg(&fixture)
        .arg(ws.path().join("ws"))
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(ws.path().join("ws/target"));
    let manifest = ws.path().join("ws/Cargo.toml");
    let run_index = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cargo-eterna-port"))
            .args(["index", "-q", "--manifest-path"])
            .arg(&manifest)
            .env_remove("ETERNA_PORT_DB")
            .env_remove("ETERNA_PORT_EMBEDDER")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_index();
    let mut fixture_times: Vec<Duration> = (0..if full { 5 } else { 1 })
        .map(|_| {
            let t = Instant::now();
            run_index();
            t.elapsed()
        })
        .collect();
    fixture_times.sort();
    let fixture_reindex = fixture_times[fixture_times.len() / 2];

    println!(
        "store benchmark: {indexed} chunks in {files} files, local embedder, {queries} searches"
    );
    println!(
        "  index                     : {:>8.2} s  ({rate:>8.0} chunks/s; target ≥ 2000)",
        index_time.as_secs_f64()
    );
    println!(
        "  re-index, unchanged (lib) : {:>8.1} ms",
        reindex_time.as_secs_f64() * 1e3
    );
    println!(
        "  search p50                : {:>8.2} ms (target ≤ 10)",
        p50.as_secs_f64() * 1e3
    );
    println!(
        "  search p99                : {:>8.2} ms (target ≤ 50)",
        p99.as_secs_f64() * 1e3
    );
    if let Some(cpu) = cpu_per_search {
        println!(
            "  search CPU time (mean)    : {:>8.2} ms (wall times above include waiting for a CPU on a busy machine)",
            cpu.as_secs_f64() * 1e3
        );
    }
    println!(
        "  fixture re-index (CLI)    : {:>8.1} ms (target ≤ 1000)",
        fixture_reindex.as_secs_f64() * 1e3
    );
}
