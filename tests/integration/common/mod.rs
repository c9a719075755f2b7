//! Helpers shared by the integration tests: temp workspaces and running the binary.
#![allow(dead_code)]

pub mod scripted;
pub mod server;
pub mod trickle;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_cargo-eterna-port");

/// Writes `files` (relative path, contents) into a fresh temp dir.
pub fn workspace(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("eterna-port-test")
        .tempdir()
        .expect("temp dir");
    for (path, text) in files {
        write(dir.path(), path, text.as_bytes());
    }
    dir
}

pub fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Runs `cargo-eterna-port ARGS` in `dir` with a clean LLM environment.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run cargo-eterna-port")
}

pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir);
    for var in [
        "OPENROUTER_API_KEY",
        "OPENROUTER_API_KEY1",
        "OPENROUTER_API_KEY2",
        "OPENROUTER_API_KEY3",
        "OPENAI_API_KEY",
        "ETERNA_PORT_LLM_BASE_URL",
        "ETERNA_PORT_MODEL",
        "ETERNA_PORT_DB",
        "ETERNA_PORT_EMBEDDER",
        "ETERNA_PORT_EMBEDDINGS_BASE_URL",
        "ETERNA_PORT_EMBEDDING_MODEL",
        "ETERNA_PORT_HEARTBEAT_MS",
        "ETERNA_PORT_LLM_STREAM",
        "ETERNA_PORT_LLM_TIMEOUT",
        "ETERNA_PORT_LLM_STALL_TIMEOUT",
        "ETERNA_PORT_LLM_MAX_TOKENS",
        "ETERNA_PORT_PROMPT_BUDGET",
        "ETERNA_PORT_LOG",
        "ETERNA_PORT_SERVE_TOKEN",
        "CARGO_TERM_COLOR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_NET_OFFLINE", "true");
    cmd
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs; never a panic inside
/// the tool.
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status\n--- stdout\n{}\n--- stderr\n{}",
        stdout(o),
        stderr(o)
    );
    assert!(
        !stderr(o).contains("panicked"),
        "the tool panicked:\n{}",
        stderr(o)
    );
}

/// The JSON document on stdout; for commands that stream JSON lines (`port` emits
/// the swarm's events first), the last line.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .or_else(|e| {
            let text = String::from_utf8_lossy(&o.stdout);
            match text.lines().rfind(|l| !l.trim().is_empty()) {
                Some(last) if text.trim().lines().count() > 1 => serde_json::from_str(last),
                _ => Err(e),
            }
        })
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", stdout(o), stderr(o)))
}

/// Every line of stdout as JSON (`--message-format json` event streams).
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}\n{}", stderr(o)))
        })
        .collect()
}

/// The reference fixture, if it is in this checkout.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eterna-arm64")
}

/// Copies a directory tree (without `target/`) into a new temp dir.
pub fn copy_tree(src: &Path) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("eterna-fixture")
        .tempdir()
        .unwrap();
    copy_dir(src, dir.path());
    dir
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

/// A small ARM64 hypervisor workspace: a cfg-gated arch module with a GIC driver, a
/// stage-2 module and system-register accessors, plus an arch-neutral core crate.
pub fn mini_hypervisor() -> TempDir {
    workspace(&[
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"hv\", \"core\"]\nresolver = \"2\"\n",
        ),
        (
            "core/Cargo.toml",
            "[package]\nname = \"hv-core\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        (
            "core/src/lib.rs",
            "#![no_std]\n/// The boundary the arch layer implements.\npub trait Arch {\n    fn eoi(&self, intid: u32);\n}\npub struct Vm { pub id: u16 }\n",
        ),
        (
            "hv/Cargo.toml",
            "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nhv-core = { path = \"../core\" }\n",
        ),
        (
            "hv/src/main.rs",
            "#![no_std]\n#![no_main]\nmod arch;\n\n#[panic_handler]\nfn panic(_: &core::panic::PanicInfo) -> ! {\n    loop {}\n}\n",
        ),
        (
            "hv/src/arch/mod.rs",
            "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n",
        ),
        (
            "hv/src/arch/aarch64/mod.rs",
            "pub mod gic;\npub mod stage2;\npub mod sysreg;\n",
        ),
        (
            "hv/src/arch/aarch64/sysreg.rs",
            "use core::arch::asm;\n\n/// Reads a system register.\nmacro_rules! read_sysreg {\n    ($r:ident) => {{\n        let v: u64;\n        unsafe { asm!(concat!(\"mrs {}, \", stringify!($r)), out(reg) v) };\n        v\n    }};\n}\npub(crate) use read_sysreg;\n\npub fn current_el() -> u64 {\n    read_sysreg!(CurrentEL) >> 2\n}\n",
        ),
        (
            "hv/src/arch/aarch64/gic.rs",
            "use super::sysreg::read_sysreg;\nuse core::arch::asm;\n\npub struct Gic;\n\nimpl Gic {\n    /// Acknowledges the highest-priority interrupt.\n    pub fn ack(&self) -> u32 {\n        read_sysreg!(ICC_IAR1_EL1) as u32\n    }\n}\n\npub fn eoi(intid: u32) {\n    unsafe { asm!(\"msr icc_eoir1_el1, {0:x}\", \"isb\", in(reg) intid as u64) };\n}\n\npub fn inject(lr: u64) {\n    unsafe { asm!(\"msr ich_lr0_el2, {}\", in(reg) lr) };\n}\n",
        ),
        (
            "hv/src/arch/aarch64/stage2.rs",
            "use core::arch::asm;\nuse hv_core::Vm;\n\npub const PAGE_SIZE: usize = 4096;\n\npub fn activate(vm: &Vm, root: u64) {\n    let vttbr = ((vm.id as u64) << 48) | root;\n    unsafe {\n        asm!(\"msr vttbr_el2, {}\", in(reg) vttbr);\n        asm!(\"tlbi vmalls12e1is\", \"dsb ish\", \"isb\");\n    }\n}\n",
        ),
    ])
}

/// Runs `git ARGS` in `dir` with a fixed identity; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OpenAI-compatible `/embeddings` answer to `req`: one vector per input text,
/// `embed(text)` each, in the request's order.
pub fn embeddings_response(
    req: &wiremock::Request,
    embed: impl Fn(&str) -> Vec<f32>,
) -> wiremock::ResponseTemplate {
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    let data: Vec<serde_json::Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"object": "embedding", "index": i, "embedding": embed(t.as_str().unwrap())})
        })
        .collect();
    wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": 1, "total_tokens": 1}
    }))
}
