//! Retrieval quality on real questions (issue "retrieval that finds the right ARM64
//! code"): for each question set in tests/fixtures/retrieval/*.questions.toml, the
//! workspace is copied to a temp dir, indexed with `cargo eterna-port index`, and every
//! question is searched with `search --message-format json`. Reported per set:
//!
//! - **top-3 hit rate**: the share of questions with an expected file among the first
//!   three workspace results (code and doc chunks; knowledge chunks are skipped, they
//!   are not the workspace's code);
//! - **nDCG@5**: binary relevance over the first five workspace results, at file level
//!   (a result is relevant when its path is expected and that file was not already
//!   counted higher up; the ideal ranking has min(expected files, 5) relevant results);
//! - **other-arch share**: the share of those five results from another
//!   architecture's directory (a path segment naming riscv, loongarch or x86 when the
//!   question's architecture is aarch64);
//! - the **misses**: each question without a hit in the top 3, and what came first.
//!
//! When `search --arch` exists (asked from `search --help` at run time), the same
//! figures again with `--arch <the question's arch>`.
//!
//! Sets: the multi-architecture test workspace (tests/fixtures/retrieval/multi-arch-hv)
//! and the public axvisor workspace from `ETERNA_RETRIEVAL_AXVISOR` (a checkout, or a
//! bare git mirror exported at `ETERNA_RETRIEVAL_AXVISOR_REV`, default `HEAD`), default
//! /work/.mirror/arceos-hypervisor+axvisor/repo; skipped with a line when absent.
//!
//! `cargo bench --bench retrieval`; without `--bench` (as `cargo test` runs it) only the
//! multi-arch set, as a smoke test. Every search asks for `ETERNA_RETRIEVAL_LIMIT`
//! results (default 10) so knowledge chunks do not crowd the five workspace results out.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

const DEFAULT_AXVISOR: &str = "/work/.mirror/arceos-hypervisor+axvisor/repo";

#[derive(Debug, Deserialize)]
struct QuestionSet {
    workspace: String,
    question: Vec<Question>,
}

#[derive(Debug, Deserialize)]
struct Question {
    question: String,
    expected: Vec<String>,
    arch: String,
}

/// The architecture family a path belongs to, from its directory and file names.
fn path_arch(path: &str) -> Option<&'static str> {
    path.split('/').find_map(|seg| {
        let seg = seg.to_ascii_lowercase();
        if seg.contains("aarch64") || seg.contains("arm64") || seg == "arm" {
            Some("aarch64")
        } else if seg.contains("riscv") {
            Some("riscv64")
        } else if seg.contains("loongarch") {
            Some("loongarch64")
        } else if seg.contains("x86") || seg.contains("amd64") {
            Some("x86_64")
        } else {
            None
        }
    })
}

fn family(arch: &str) -> &str {
    match arch {
        "arm64" | "arm" => "aarch64",
        "riscv" => "riscv64",
        "loongarch" => "loongarch64",
        "x86" | "amd64" => "x86_64",
        a => a,
    }
}

/// True when one of the first `k` paths is expected.
fn hit_at(paths: &[String], expected: &[String], k: usize) -> bool {
    paths.iter().take(k).any(|p| expected.contains(p))
}

/// nDCG@k with binary, file-level relevance (each expected file counts once).
fn ndcg_at(paths: &[String], expected: &[String], k: usize) -> f64 {
    let mut seen: Vec<&String> = Vec::new();
    let mut dcg = 0.0;
    for (i, p) in paths.iter().take(k).enumerate() {
        if expected.contains(p) && !seen.contains(&p) {
            seen.push(p);
            dcg += 1.0 / ((i + 2) as f64).log2();
        }
    }
    let ideal: f64 = (0..expected.len().min(k))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// Results among the first `k` from an architecture other than `arch`.
fn other_arch(paths: &[String], arch: &str, k: usize) -> usize {
    let arch = family(arch);
    paths
        .iter()
        .take(k)
        .filter(|p| path_arch(p).is_some_and(|a| a != arch))
        .count()
}

/// The metric functions on rankings whose figures are known.
fn self_check() {
    let e = vec!["a.rs".to_string()];
    let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!((ndcg_at(&r(&["a.rs", "b.rs"]), &e, 5) - 1.0).abs() < 1e-9);
    assert!((ndcg_at(&r(&["b.rs", "a.rs"]), &e, 5) - 1.0 / 3f64.log2()).abs() < 1e-9);
    assert_eq!(
        ndcg_at(&r(&["a.rs", "a.rs"]), &r(&["a.rs", "c.rs"]), 5),
        1.0 / (1.0 + 1.0 / 3f64.log2())
    );
    assert_eq!(ndcg_at(&r(&["b.rs"; 6]), &e, 5), 0.0);
    assert!(hit_at(&r(&["x", "y", "a.rs"]), &e, 3) && !hit_at(&r(&["x", "y", "z", "a.rs"]), &e, 3));
    let p = r(&[
        "src/arch/riscv64/trap.rs",
        "src/vm.rs",
        "src/arch/aarch64/psci.rs",
        "platform/riscv64-qemu-virt/src/irq.rs",
        "src/hal/arch/x86_64/cache.rs",
        "src/arch/loongarch64/ipi.rs",
    ]);
    assert_eq!(other_arch(&p, "aarch64", 5), 3);
    assert_eq!(other_arch(&p, "riscv64", 5), 2);
}

struct Row {
    question: String,
    paths: Vec<String>,
    hit3: bool,
    ndcg: f64,
    other: usize,
}

struct Figures {
    rows: Vec<Row>,
    millis: Vec<f64>,
}

impl Figures {
    fn hit_rate(&self) -> f64 {
        self.rows.iter().filter(|r| r.hit3).count() as f64 / self.rows.len().max(1) as f64
    }
    fn ndcg(&self) -> f64 {
        self.rows.iter().map(|r| r.ndcg).sum::<f64>() / self.rows.len().max(1) as f64
    }
    fn other_share(&self) -> f64 {
        let n: usize = self.rows.iter().map(|r| r.paths.len().min(5)).sum();
        self.rows.iter().map(|r| r.other).sum::<usize>() as f64 / n.max(1) as f64
    }
    fn p50_ms(&self) -> f64 {
        let mut v = self.millis.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status.code(),
        common::stdout(&out),
        common::stderr(&out)
    );
    out
}

/// The workspace paths of one search's code and doc results, in rank order.
fn search(dir: &Path, q: &Question, limit: &str, arch: bool) -> (Vec<String>, f64) {
    let mut args = vec!["search", "--message-format", "json", "-n", limit];
    if arch {
        args.extend(["--arch", q.arch.as_str()]);
    }
    args.push(q.question.as_str());
    let t = Instant::now();
    let out = run_ok(
        &mut common::command(dir, &args),
        &format!("search {:?}", q.question),
    );
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let v: Value = serde_json::from_slice(&out.stdout).expect("search JSON");
    let paths = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| matches!(r["kind"].as_str(), Some("code" | "doc")))
        .filter_map(|r| r["path"].as_str().map(str::to_string))
        .take(5)
        .collect();
    (paths, ms)
}

fn measure(dir: &Path, set: &QuestionSet, limit: &str, arch: bool) -> Figures {
    let mut rows = Vec::new();
    let mut millis = Vec::new();
    for q in &set.question {
        let (paths, ms) = search(dir, q, limit, arch);
        millis.push(ms);
        rows.push(Row {
            question: q.question.clone(),
            hit3: hit_at(&paths, &q.expected, 3),
            ndcg: ndcg_at(&paths, &q.expected, 5),
            other: other_arch(&paths, &q.arch, 5),
            paths,
        });
    }
    Figures { rows, millis }
}

fn report(name: &str, label: &str, f: &Figures) {
    println!(
        "{name:<14} {label:<16} questions {:>2}  top-3 hit {:>5.1}%  nDCG@5 {:.3}  other-arch {:>5.1}%  search p50 {:.0} ms",
        f.rows.len(),
        100.0 * f.hit_rate(),
        f.ndcg(),
        100.0 * f.other_share(),
        f.p50_ms()
    );
    for r in f.rows.iter().filter(|r| !r.hit3) {
        println!(
            "    miss: {:?} -> first: {}",
            r.question,
            r.paths
                .first()
                .map(String::as_str)
                .unwrap_or("(no code/doc result)")
        );
    }
}

fn load(name: &str) -> QuestionSet {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/retrieval")
        .join(format!("{name}.questions.toml"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let set: QuestionSet = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(set.workspace, name, "{}", p.display());
    assert!(!set.question.is_empty());
    set
}

/// The axvisor workspace in a temp dir: a checkout is copied, a bare mirror exported.
fn axvisor_copy() -> Option<tempfile::TempDir> {
    let src = PathBuf::from(
        std::env::var("ETERNA_RETRIEVAL_AXVISOR").unwrap_or_else(|_| DEFAULT_AXVISOR.into()),
    );
    if src.join("Cargo.toml").is_file() {
        return Some(common::copy_tree(&src));
    }
    if !(src.join("HEAD").is_file() && src.join("objects").is_dir()) {
        println!(
            "axvisor: skipped, no checkout or bare git mirror at {} (set ETERNA_RETRIEVAL_AXVISOR)",
            src.display()
        );
        return None;
    }
    let rev = std::env::var("ETERNA_RETRIEVAL_AXVISOR_REV").unwrap_or_else(|_| "HEAD".into());
    let dir = tempfile::Builder::new()
        .prefix("eterna-axvisor")
        .tempdir()
        .unwrap();
    let archive = run_ok(
        Command::new("git")
            .arg("--git-dir")
            .arg(&src)
            .args(["archive", "--format=tar", &rev]),
        "git archive",
    );
    let mut tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(tar.stdin.as_mut().unwrap(), &archive.stdout).unwrap();
    assert!(tar.wait().unwrap().success(), "tar -x");
    println!("axvisor: {} at {rev}", src.display());
    Some(dir)
}

fn run_set(name: &str, dir: &Path, limit: &str, has_arch: bool, strict: bool) {
    let set = load(name);
    for q in &set.question {
        let present: Vec<_> = q
            .expected
            .iter()
            .filter(|e| dir.join(e).is_file())
            .collect();
        if strict {
            assert_eq!(
                present.len(),
                q.expected.len(),
                "{name}: an expected file of {:?} is missing",
                q.question
            );
        } else if present.is_empty() {
            println!(
                "{name}: no expected file of {:?} is in this revision",
                q.question
            );
        }
    }
    let t = Instant::now();
    let idx = common::run(dir, &["index", "-q"]);
    if !idx.status.success() && !strict {
        println!(
            "{name}: skipped, index failed: {}",
            common::stderr(&idx).trim()
        );
        return;
    }
    assert!(
        idx.status.success(),
        "index {name}: {}",
        common::stderr(&idx)
    );
    println!("{name}: indexed in {:.1} s", t.elapsed().as_secs_f64());
    let all = measure(dir, &set, limit, false);
    assert!(
        all.rows.iter().all(|r| !r.paths.is_empty()),
        "{name}: a question found no workspace code"
    );
    report(name, "all archs", &all);
    if has_arch {
        let arch = measure(dir, &set, limit, true);
        report(name, "--arch", &arch);
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    self_check();
    let limit = std::env::var("ETERNA_RETRIEVAL_LIMIT").unwrap_or_else(|_| "10".into());
    let tmp = tempfile::tempdir().unwrap();
    let help = common::run(tmp.path(), &["search", "--help"]);
    let has_arch = common::stdout(&help).contains("--arch");
    if !has_arch {
        println!("search has no --arch: the filtered figures are left out");
    }

    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/retrieval/multi-arch-hv");
    let ws = common::copy_tree(&fixture);
    run_set("multi-arch-hv", ws.path(), &limit, has_arch, true);

    if !bench {
        return;
    }
    if let Some(ax) = axvisor_copy() {
        run_set("axvisor", ax.path(), &limit, has_arch, false);
    }
}
