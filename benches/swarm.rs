//! The swarm's scheduling overhead against a model server that answers after a fixed
//! 300 ms (wiremock on 127.0.0.1): 24 modules at `--jobs 8` are 3 rounds, so the ideal
//! is 3 × 300 ms. Reported: the swarm's wall time (from its `usage` event) against the
//! ideal (target ≤ 1.15×), the tool's CPU time during the swarm (from the same event,
//! target < 5% of the swarm's wall time), and the whole command's wall and CPU time
//! (user + system of the child process and its `cargo metadata`).
//!
//! `cargo bench --bench swarm`; without `--bench` (as `cargo test` runs it) one run as
//! a smoke test. `ETERNA_BENCH_RUNS` changes the repetitions.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const MODULES: usize = 24;
const JOBS: usize = 8;
const LATENCY: Duration = Duration::from_millis(300);

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A crate whose ARM64 layer has 23 modules plus its `mod.rs`: 24 mirrored modules.
fn generate(root: &Path) {
    write(
        root,
        "Cargo.toml",
        "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    write(
        root,
        "src/lib.rs",
        "#![no_std]\n#[cfg(target_arch = \"aarch64\")]\npub mod arch;\n",
    );
    let mut mods = String::new();
    for i in 0..MODULES - 1 {
        let _ = writeln!(mods, "pub mod unit{i};");
        write(
            root,
            &format!("src/arch/unit{i}.rs"),
            &format!(
                "//! Unit {i}.\npub fn read_{i}() -> u64 {{\n    let v: u64;\n    // SAFETY: reads a register.\n    unsafe {{ core::arch::asm!(\"mrs {{}}, vttbr_el2\", out(reg) v) }};\n    v + {i}\n}}\n"
            ),
        );
    }
    write(root, "src/arch/mod.rs", &mods);
    // Under an `aarch64` directory so the layer is recognised as ARM64.
    let from = root.join("src/arch");
    let to = root.join("src/aarch64");
    std::fs::rename(&from, &to).unwrap();
    write(
        root,
        "src/lib.rs",
        "#![no_std]\n#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n",
    );
}

/// A model that answers every port prompt with the engine's draft it shows, every stub
/// filled: an answer that keeps the module's API, so the contract sends nothing back and
/// each module costs exactly one request (what the benchmark measures).
struct KeepsTheApi;

impl Respond for KeepsTheApi {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let task = body["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        let draft = task
            .split("draft of `")
            .nth(1)
            .and_then(|r| r.split("```rust\n").nth(1))
            .and_then(|r| r.split("\n```").next())
            .unwrap_or_default();
        let answer = json!({
            "id": "gen-bench",
            "object": "chat.completion",
            "model": "x-ai/grok-4-fast",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("```rust\n{}\n```\n", fill_stubs(draft))}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 20, "total_tokens": 920}
        });
        ResponseTemplate::new(200)
            .set_body_json(answer)
            .set_delay(LATENCY)
    }
}

/// `text` with every engine stub call (`unimplemented!("eterna-port…")`) replaced by
/// `loop {}`, a body for any return type.
fn fill_stubs(text: &str) -> String {
    const STUB: &str = "unimplemented!(\"eterna-port";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(STUB) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let end = tail
            .match_indices("\")")
            .find(|(i, _)| !tail[..*i].ends_with('\\'))
            .map_or(tail.len(), |(i, _)| i + 2);
        out.push_str("loop {}");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn cpu_of_children() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs: usize = std::env::var("ETERNA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 7 } else { 1 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(KeepsTheApi)
            .mount(&server)
            .await;
        server
    });
    let ws = tempfile::tempdir().unwrap();
    generate(ws.path());
    let jobs = JOBS.to_string();
    let args = [
        "--allow-no-vcs",
        "--no-cache",
        "--max-fix-iterations",
        "0",
        "--jobs",
        jobs.as_str(),
        "--message-format",
        "json",
        "-q",
    ];
    let cmd = || {
        let mut c = common::command(ws.path(), &args);
        c.env("OPENROUTER_API_KEY", "sk-bench-not-a-real-key").env(
            "ETERNA_PORT_LLM_BASE_URL",
            format!("{}/api/v1", server.uri()),
        );
        c
    };
    // The first run creates the store and the search index: not timed.
    let first = cmd().output().unwrap();
    assert!(
        first.status.code().is_some_and(|c| c <= 1),
        "{}",
        common::stderr(&first)
    );

    let ideal = LATENCY * MODULES.div_ceil(JOBS) as u32;
    let (mut swarm, mut wall, mut cpu, mut swarm_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let cpu0 = cpu_of_children();
        let t = Instant::now();
        let out = cmd().output().unwrap();
        let w = t.elapsed();
        let c = cpu_of_children() - cpu0;
        let lines: Vec<Value> = common::stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let usage = lines
            .iter()
            .find(|l| l["reason"] == "usage")
            .unwrap_or_else(|| panic!("no usage event: {}", common::stderr(&out)));
        assert_eq!(usage["requests"], MODULES, "{usage}");
        swarm.push(Duration::from_millis(usage["wall_ms"].as_u64().unwrap()));
        swarm_cpu.push(Duration::from_millis(usage["cpu_ms"].as_u64().unwrap_or(0)));
        wall.push(w);
        cpu.push(c);
    }
    let (s, w, c, sc) = (median(swarm), median(wall), median(cpu), median(swarm_cpu));
    println!(
        "swarm: {MODULES} modules, --jobs {JOBS}, server latency {} ms ({runs} run(s), medians)",
        LATENCY.as_millis()
    );
    println!(
        "  swarm wall      {:>7.1} ms  ideal {} ms  ratio {:.3} (target ≤ 1.15)",
        s.as_secs_f64() * 1e3,
        ideal.as_millis(),
        s.as_secs_f64() / ideal.as_secs_f64()
    );
    println!(
        "  swarm CPU time  {:>7.1} ms  {:.1}% of the swarm's wall time (target < 5%)",
        sc.as_secs_f64() * 1e3,
        sc.as_secs_f64() * 100.0 / s.as_secs_f64()
    );
    println!(
        "  command wall    {:>7.1} ms  ratio to ideal {:.3}",
        w.as_secs_f64() * 1e3,
        w.as_secs_f64() / ideal.as_secs_f64()
    );
    println!(
        "  tool CPU time   {:>7.1} ms  {:.1}% of the command's wall time",
        c.as_secs_f64() * 1e3,
        c.as_secs_f64() * 100.0 / w.as_secs_f64()
    );
}
