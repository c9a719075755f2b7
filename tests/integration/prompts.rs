//! Prompt snapshot tests: what the agents' prompts say about a workspace must be true
//! of it. The prompts are captured from the requests a local OpenAI-compatible server
//! (wiremock on 127.0.0.1) receives during `cargo eterna-port --backend llm`:
//!
//! - a small nightly-pinned, `no_std`, edition-2021 workspace with an aarch64 arch root
//!   whose API is its `pub mod`/`pub use` lines, a type with methods, and a draft that
//!   does not compile, without a trace configured;
//! - the bundled workspace (a temp copy), whose configuration names its trace.
//!
//! The expected statements are checked line by line, and the nightly workspace's main
//! prompt is compared with `tests/snapshots/prompts/nightly_irq.md` (after its
//! machine-specific parts are normalised): set `UPDATE_PROMPT_SNAPSHOTS=1` to rewrite it.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{command, copy_tree, fixture_dir, json_lines, stderr, workspace};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-or-v1-prompt-test-not-a-secret";

/// A server that answers every request with text holding no file: the answer is
/// refused and the module keeps its draft; only the prompts matter here.
fn start(rt: &tokio::runtime::Runtime) -> MockServer {
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "gen-prompts",
                "object": "chat.completion",
                "model": "test/prompts",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "No file today."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
            })))
            .mount(&server)
            .await;
        server
    })
}

/// One prompt: its system and first user message.
#[derive(Debug, Clone)]
struct Prompt {
    system: String,
    user: String,
}

/// Runs the port against the server and returns the first prompt of each target file.
fn port_prompts(ws: &Path) -> BTreeMap<String, Prompt> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = start(&rt);
    let out = command(
        ws,
        &[
            "--backend",
            "llm",
            "--allow-no-vcs",
            "--max-fix-iterations",
            "0",
            "--message-format",
            "json",
        ],
    )
    .env("OPENROUTER_API_KEY", KEY)
    .env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    )
    .env_remove("RUSTUP_TOOLCHAIN")
    .output()
    .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}\n{}",
        stderr(&out),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(json_lines(&out)
        .last()
        .is_some_and(|s| s["reason"] == "port-finished"));
    let mut prompts = BTreeMap::new();
    for req in rt.block_on(server.received_requests()).unwrap() {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let messages = body["messages"].as_array().unwrap();
        let text = |role: &str| {
            messages
                .iter()
                .find(|m| m["role"] == role)
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        let user = text("user");
        let target = user
            .split("Write exactly this file: `")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .unwrap_or_default()
            .to_string();
        assert!(!target.is_empty(), "a prompt without a target: {user}");
        prompts.entry(target).or_insert(Prompt {
            system: text("system"),
            user,
        });
    }
    assert!(!prompts.is_empty(), "no prompt was sent");
    // To read them: PROMPT_DUMP_DIR=dir cargo test --test integration prompts::.
    if let Some(dir) = std::env::var_os("PROMPT_DUMP_DIR") {
        let name = ws.file_name().unwrap().to_string_lossy().into_owned();
        for (target, p) in &prompts {
            let file = Path::new(&dir).join(format!("{name}-{}.md", target.replace('/', "_")));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, format!("{}\n=====\n{}", p.system, p.user)).unwrap();
        }
    }
    prompts
}

/// The fenced block right after the line `heading` in `text`.
fn block_after<'a>(text: &'a str, heading: &str) -> &'a str {
    let rest = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in:\n{text}"))..];
    let start = rest.find("```rust\n").unwrap() + "```rust\n".len();
    let body = &rest[start..];
    &body[..body.find("\n```").unwrap()]
}

/// The concept-map lines of a system prompt.
fn concept_lines(system: &str) -> Vec<&str> {
    system
        .lines()
        .skip_while(|l| !l.starts_with("ARM64 → x86_64 concept map"))
        .skip(1)
        .filter(|l| !l.is_empty())
        .collect()
}

fn assert_one_concept_per_line(p: &Prompt) {
    let lines = concept_lines(&p.system);
    assert!(!lines.is_empty(), "{}", p.system);
    for l in lines {
        assert!(
            l.starts_with("- ") && l.matches(" → ").count() <= 1,
            "concept entries run together: {l:?}"
        );
    }
}

/// An installed dated nightly with the x86_64-unknown-none standard library (its
/// channel, e.g. `nightly-2025-05-20`), or a plain `nightly` with it.
fn installed_nightly() -> Option<String> {
    let list = std::process::Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut channels: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|t| t.starts_with("nightly"))
        .map(|t| {
            // `nightly-2025-05-20-x86_64-unknown-linux-gnu` → `nightly-2025-05-20`.
            let parts: Vec<&str> = t.split('-').collect();
            if parts.len() >= 4
                && parts[1].len() == 4
                && parts[1].chars().all(|c| c.is_ascii_digit())
            {
                parts[..4].join("-")
            } else {
                "nightly".to_string()
            }
        })
        .collect();
    // Dated first: the test says which.
    channels.sort_by_key(|c| c == "nightly");
    channels.into_iter().find(|c| {
        std::process::Command::new("rustc")
            .args([&format!("+{c}"), "--print", "sysroot"])
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|s| s.join("lib/rustlib/x86_64-unknown-none/lib").is_dir())
    })
}

const IRQ_SOURCE: &str = r#"//! The interrupt controller.

use core::arch::asm;

/// The interrupt controller of one CPU.
pub struct IrqChip {
    pub base: usize,
}

impl IrqChip {
    /// Resets the controller.
    pub fn arch_irqchip_reset(&self) {
        unsafe { asm!("msr ich_hcr_el2, xzr") };
    }

    /// The highest-priority pending interrupt.
    pub fn pending(&self) -> u32 {
        let v: u64;
        unsafe { asm!("mrs {}, icc_hppir1_el1", out(reg) v) };
        v as u32
    }

    /// The base address, as the core sees it.
    pub fn base(&self) -> usize {
        self.base
    }
}

/// Also wrong on x86_64: the engine keeps it and the draft does not compile.
pub fn vector_table() -> core::arch::aarch64::uint8x16_t {
    unimplemented!()
}
"#;

/// The nightly-pinned workspace.
fn nightly_workspace(channel: &str) -> tempfile::TempDir {
    workspace(&[
        (
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"hv\"]\n",
        ),
        (
            "rust-toolchain.toml",
            &format!("[toolchain]\nchannel = \"{channel}\"\n"),
        ),
        (
            "hv/Cargo.toml",
            "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        ),
        (
            "hv/src/main.rs",
            "#![no_std]\n#![no_main]\n\nmod arch;\n\n#[panic_handler]\nfn panic(_: &core::panic::PanicInfo) -> ! {\n    loop {}\n}\n",
        ),
        (
            "hv/src/arch/mod.rs",
            "//! The architecture layer.\n\n#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n\n#[cfg(target_arch = \"aarch64\")]\npub use aarch64::irq::IrqChip;\n",
        ),
        (
            "hv/src/arch/aarch64/mod.rs",
            "//! AArch64.\n\npub mod irq;\npub mod timer;\n\npub use timer::ticks;\n",
        ),
        ("hv/src/arch/aarch64/irq.rs", IRQ_SOURCE),
        (
            "hv/src/arch/aarch64/timer.rs",
            "use core::arch::asm;\n\n/// The virtual counter.\npub fn ticks() -> u64 {\n    let v: u64;\n    unsafe { asm!(\"mrs {}, cntvct_el0\", out(reg) v) };\n    v\n}\n",
        ),
    ])
}

#[test]
fn a_nightly_workspace_without_a_trace_gets_only_true_statements() {
    let Some(channel) = installed_nightly() else {
        eprintln!("skipped: no nightly toolchain with x86_64-unknown-none is installed");
        return;
    };
    let ws = nightly_workspace(&channel);
    let prompts = port_prompts(ws.path());
    let irq = prompts
        .get("src/arch/x86_64/irq.rs")
        .unwrap_or_else(|| panic!("no prompt for irq.rs: {:?}", prompts.keys()));

    for (target, p) in &prompts {
        let all = format!("{}\n{}", p.system, p.user);
        // The toolchain and edition of the workspace, never "stable".
        assert!(
            p.system.contains(&format!(
                "The toolchain is `{channel}`, a nightly pinned by `rust-toolchain.toml`."
            )) && p.system.contains("with Rust edition 2021")
                && p.system.contains("The crate is `#![no_std]`"),
            "{target}: {}",
            p.system
        );
        assert!(!all.to_lowercase().contains("stable"), "{target}: {all}");
        // No trace configured: no trace rule at all.
        assert!(
            !all.contains("trace") && !all.contains("console line"),
            "{target}: {all}"
        );
        assert!(!all.contains("no public items"), "{target}: {all}");
        assert_one_concept_per_line(p);
    }

    // The API: methods with their type.
    for line in [
        "- `pub struct IrqChip`\n",
        "- `IrqChip::arch_irqchip_reset`: `pub fn arch_irqchip_reset(&self)`\n",
        "- `IrqChip::pending`: `pub fn pending(&self) -> u32`\n",
        "- `IrqChip::base`: `pub fn base(&self) -> usize`\n",
    ] {
        assert!(irq.user.contains(line), "{line}: {}", irq.user);
    }
    assert!(
        !irq.user.contains("- `pub fn arch_irqchip_reset(&self)`"),
        "a bare method: {}",
        irq.user
    );
    // The original ARM64 source, as the workspace has it.
    assert!(
        irq.user.contains(&format!(
            "## ARM64 source: `src/arch/aarch64/irq.rs`\n```rust\n{IRQ_SOURCE}\n```\n"
        )),
        "{}",
        irq.user
    );
    // The draft does not compile, and the prompt says so with its errors.
    assert!(
        irq.user
            .contains("It does not compile: `cargo check --target x86_64-unknown-none`")
            && irq.user.contains("error["),
        "{}",
        irq.user
    );
    assert!(!irq.user.contains("It compiles"), "{}", irq.user);
    // The task names the engine's stubs, not the source's own `unimplemented!()`.
    let task = irq
        .user
        .split("Your task: ")
        .nth(1)
        .expect("a task")
        .split("\n\n")
        .next()
        .unwrap();
    assert!(
        task.contains("`IrqChip::arch_irqchip_reset`") && task.contains("`IrqChip::pending`"),
        "{task}"
    );
    assert!(
        !task.contains("`IrqChip::base`") && !task.contains("`vector_table`"),
        "{task}"
    );

    // A module without errors of its own in a crate that has some: not said to compile
    // (rustc may have stopped before it).
    let timer = prompts.get("src/arch/x86_64/timer.rs").unwrap();
    assert!(
        timer.user.contains("It has not been compiled: cargo check found no error in it, but 1 error(s) elsewhere in its crate"),
        "{}",
        timer.user
    );
    // The arch roots: their `pub mod`/`pub use` lines are their API.
    let platform = prompts
        .get("src/arch/x86_64/mod.rs")
        .unwrap_or_else(|| panic!("no prompt for the arch root: {:?}", prompts.keys()));
    for line in [
        "- `pub mod irq`\n",
        "- `pub mod timer`\n",
        "- `pub use timer::ticks;`\n",
    ] {
        assert!(platform.user.contains(line), "{line}: {}", platform.user);
    }
    // No ARM64 source block holds a cfg line the engine inserted.
    for (target, p) in &prompts {
        if p.user.contains("## ARM64 source: `") {
            let source = block_after(&p.user, "## ARM64 source: `");
            assert!(
                !source.contains("#[cfg(target_arch = \"x86_64\")]"),
                "{target}: {source}"
            );
        }
    }

    snapshot("nightly_irq.md", &normalise(&irq.user, &channel));
}

#[test]
fn the_bundled_workspace_gets_its_trace_rule_and_its_toolchain() {
    let ws = copy_tree(&fixture_dir());
    let prompts = port_prompts(ws.path());
    let manifest = std::fs::read_to_string(ws.path().join("Cargo.toml")).unwrap();
    let value = |key: &str| {
        manifest
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{key} in the fixture's manifest"))
            .to_string()
    };
    let (prefix, exit, rust_version) = (
        value("trace-prefix"),
        value("exit-code-pattern"),
        value("rust-version"),
    );
    assert!(
        !ws.path().join("rust-toolchain.toml").exists()
            && !ws.path().join("rust-toolchain").exists()
    );
    for (target, p) in &prompts {
        assert!(
            p.system.contains(&format!(
                "every console line starting with\n  `{prefix}` that the ARM64 original prints"
            )) && p
                .system
                .contains(&format!("the run still ends with the line `{exit}<code>`")),
            "{target}: {}",
            p.system
        );
        assert!(
            p.system.contains(&format!(
                "No rust-toolchain file pins a toolchain: write stable Rust that builds with Rust {rust_version}"
            )) && p.system.contains("with Rust edition 2021")
                && !p.system.contains("nightly"),
            "{target}: {}",
            p.system
        );
        assert!(!p.user.contains("no public items"), "{target}: {}", p.user);
        assert_one_concept_per_line(p);
        // The draft's status is the check's: compiles, or its errors; never assumed.
        let says = [
            "It compiles: `cargo check",
            "It does not compile: `cargo check",
            "It has not been compiled: ",
        ]
        .iter()
        .filter(|s| p.user.contains(*s))
        .count();
        assert_eq!(says, 1, "{target}: {}", p.user);
    }
    // A split module's ARM64 source is the workspace's file, without the port's gates.
    let guest = prompts
        .get("src/guest/x86_64.rs")
        .unwrap_or_else(|| panic!("no prompt for the split module: {:?}", prompts.keys()));
    let original = std::fs::read_to_string(fixture_dir().join("eterna/src/guest.rs")).unwrap();
    assert!(
        guest.user.contains(&format!(
            "## ARM64 source: `src/guest.rs`\n```rust\n{original}\n```\n"
        )),
        "{}",
        guest.user
    );
    // The arch root is listed with its `pub mod` lines and methods with their type.
    let platform = prompts.get("src/arch/x86_64/mod.rs").unwrap();
    assert!(
        platform.user.contains("- `pub mod gic`\n"),
        "{}",
        platform.user
    );
    assert!(
        prompts.values().any(|p| p
            .user
            .lines()
            .any(|l| l.starts_with("- `") && l.contains("::") && l.contains("`: `pub fn"))),
        "no method listed with its type"
    );
}

/// The prompt with what depends on the machine replaced: the nightly's name and
/// rustc's rendering of the draft's errors (it changes between compilers).
fn normalise(text: &str, channel: &str) -> String {
    let mut out = String::new();
    let mut in_errors = false;
    let mut fence = false;
    for line in text.replace(channel, "<nightly>").lines() {
        if line.starts_with("It does not compile: ") {
            in_errors = true;
        } else if in_errors && line == "```" {
            fence = !fence;
            if !fence {
                out.push_str("```\n<rustc's rendering>\n```\n");
            }
            continue;
        } else if in_errors && !fence && !line.starts_with("run before this prompt") {
            in_errors = false;
        }
        if !fence {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Compares `text` with the committed snapshot (rewrites it with
/// `UPDATE_PROMPT_SNAPSHOTS=1`).
fn snapshot(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/prompts")
        .join(name);
    if std::env::var_os("UPDATE_PROMPT_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert!(
        expected == text,
        "the prompt differs from {} (UPDATE_PROMPT_SNAPSHOTS=1 rewrites it):\n{text}",
        path.display()
    );
}
