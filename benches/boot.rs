//! Boot-to-verdict times of `cargo eterna-port qemu` on a ported copy of the fixture:
//! the port the LLM backend writes when a scripted local model serves the hand-written
//! x86_64 port as its answers (`tests/integration/common/scripted.rs`), the one that runs its guest.
//!
//! `cargo bench --bench boot`: the first run builds the image (reported separately),
//! then QEMU (TCG) and Bochs (VMX) runs are timed: the emulator's boot to verdict (from
//! the JSON document) and the whole command (metadata, plan, no-op cargo build, boot).
//! Targets: QEMU ≤ 3 s, Bochs ≤ 30 s. Without `--bench` (as `cargo test` runs it) one
//! run of each, as a smoke test.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

/// The tool in `dir`, with the copy's own target directory.
fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    common::command(dir, args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo-eterna-port")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `qemu ARGS --message-format json`; returns (emulator ms, wall time).
fn boot(root: &std::path::Path, args: &[&str]) -> (Duration, Duration) {
    let mut all = vec!["qemu", "--message-format", "json"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = run(root, &all);
    let wall = started.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    let doc = common::json(&out);
    let ms = doc["port"]["elapsed_ms"].as_u64().unwrap_or(0);
    (Duration::from_millis(ms), wall)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (qemu_runs, bochs_runs) = if full { (10, 3) } else { (1, 1) };
    let dir = common::scripted::scripted_port();

    let (_, first) = boot(dir.path(), &["--accel", "tcg"]);
    println!("qemu: first run incl. release build of the image: {first:.2?}");
    let mut emu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..qemu_runs {
        let (e, w) = boot(dir.path(), &["--accel", "tcg"]);
        emu.push(e);
        wall.push(w);
    }
    println!(
        "qemu (tcg) boot to verdict: median {:.2?} in the emulator, {:.2?} whole command ({qemu_runs} runs; target ≤ 3 s)",
        median(emu),
        median(wall)
    );

    let mut emu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..bochs_runs {
        let (e, w) = boot(dir.path(), &["--emulator", "bochs"]);
        emu.push(e);
        wall.push(w);
    }
    println!(
        "bochs (vmx) run to verdict: median {:.2?} in the emulator, {:.2?} whole command incl. ISO ({bochs_runs} runs; target ≤ 30 s)",
        median(emu),
        median(wall)
    );
}
