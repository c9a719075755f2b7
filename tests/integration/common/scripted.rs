//! A scripted model for the bundled workspace: a local OpenAI-compatible server
//! (wiremock on 127.0.0.1) that answers each port prompt with the hand-written x86_64
//! port of the file the prompt names (`tests/fixtures/eterna-x86-answers/`), and
//! `scripted_port`, which ports a temp copy of the fixture through it with
//! `cargo eterna-port --backend llm`.
//!
//! This is where the bundled workspace's end-to-end proof comes from (the port checks
//! clean, boots under QEMU to the VMX-unavailable verdict, and runs its guest under
//! Bochs with the ARM64 original's trace): the answers are test data, never part of
//! the tool, and the tool takes them through the same path as any model's answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A dummy key: the server is local, the key only selects the LLM backend.
pub const DUMMY_KEY: &str = "sk-or-v1-scripted-answers-not-a-secret";
/// Where the test copies the answers' boot files in the workspace copy (named in its
/// `[workspace.metadata.eterna-port]`).
pub const BOOT_FILES_DIR: &str = "x86-boot";

/// The answers: the hand-written port, laid out like the workspace.
pub fn answers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eterna-x86-answers")
}

/// Every answer file (`.rs`), by its path relative to its package root
/// (`src/arch/x86_64/gic.rs`), as the prompts name them.
pub fn answers() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    let package = answers_dir().join("eterna");
    walk(&package, &package, &mut out);
    out
}

/// The text of the first user message (the task).
fn task(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// The first fenced block after `heading` in `text`.
fn block_after(text: &str, heading: &str) -> Option<String> {
    let rest = &text[text.find(heading)? + heading.len()..];
    let start = rest.find("```rust\n")? + "```rust\n".len();
    let body = &rest[start..];
    Some(body[..body.find("\n```")?].to_string())
}

/// The files a prompt asks for and the scripted answer for each: the answer file
/// when there is one, else the text the prompt shows (the engine's draft of a file it
/// edits in place, or the current file of a debug prompt), unchanged.
fn script(task: &str, answers: &BTreeMap<String, String>) -> Vec<(String, String)> {
    if let Some(target) = task
        .split("Write exactly this file: `")
        .nth(1)
        .and_then(|r| r.split('`').next())
    {
        let content = answers
            .get(target)
            .cloned()
            .or_else(|| block_after(task, &format!("draft of `{target}`")))
            .or_else(|| block_after(task, &format!("`{target}` as the offline engine leaves it")))
            .unwrap_or_default();
        return vec![(target.to_string(), content)];
    }
    // A DebugAgent prompt: the files it may rewrite, then their current text.
    let Some(files) = task
        .split("Files you may rewrite (paths relative to the package root): ")
        .nth(1)
        .and_then(|r| r.split(".\n").next())
    else {
        return Vec::new();
    };
    files
        .split(", ")
        .map(|f| {
            let content = answers
                .get(f)
                .cloned()
                .or_else(|| block_after(task, &format!("## Current `{f}`")))
                .unwrap_or_default();
            (f.to_string(), content)
        })
        .collect()
}

/// Every file a prompt asked for, and whether an answer file served it.
pub type Asked = Arc<Mutex<Vec<(String, bool)>>>;

/// The wiremock responder: one JSON envelope `{"files": [...]}` per request (file
/// contents may hold ``` in doc comments, which a fenced answer could not carry).
pub struct ScriptedModel {
    answers: BTreeMap<String, String>,
    pub asked: Asked,
}

impl Respond for ScriptedModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let files = script(&task(&body), &self.answers);
        if let Ok(mut asked) = self.asked.lock() {
            for (f, _) in &files {
                asked.push((f.clone(), self.answers.contains_key(f)));
            }
        }
        let envelope = json!({
            "files": files
                .iter()
                .map(|(path, content)| json!({"path": path, "content": content}))
                .collect::<Vec<_>>()
        });
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "gen-scripted",
            "object": "chat.completion",
            "model": "scripted/eterna-x86-answers",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": envelope.to_string()}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000, "cost": 0.0}
        }))
    }
}

/// Starts the scripted model on 127.0.0.1 in `rt`; returns the server (serving while
/// it lives) and the record of what was asked.
pub fn start(rt: &tokio::runtime::Runtime) -> (MockServer, Asked) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/chat/completions"))
            .respond_with(ScriptedModel {
                answers: answers(),
                asked: asked.clone(),
            })
            .mount(&server)
            .await;
        server
    });
    (server, asked)
}

/// Copies the answers' workspace-specific boot files (linker script, grub.cfg,
/// bochsrc) into `root/x86-boot/` and names them in the root manifest's
/// `[workspace.metadata.eterna-port]`.
pub fn add_boot_files(root: &Path) {
    let dir = root.join(BOOT_FILES_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let from = answers_dir().join("eterna");
    for (src, dst) in [
        ("linker-x86_64.ld", "linker-x86_64.ld"),
        ("boot/grub.cfg", "grub.cfg"),
        ("boot/bochsrc", "bochsrc"),
    ] {
        std::fs::copy(from.join(src), dir.join(dst)).unwrap();
    }
    let manifest = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // The fixture has its own table (its console patterns): the keys go into it.
    const TABLE: &str = "[workspace.metadata.eterna-port]\n";
    let keys = format!(
        "x86_64-linker-script = \"{BOOT_FILES_DIR}/linker-x86_64.ld\"\n\
         x86_64-grub-cfg = \"{BOOT_FILES_DIR}/grub.cfg\"\n\
         x86_64-bochsrc = \"{BOOT_FILES_DIR}/bochsrc\"\n"
    );
    assert!(
        !text.contains("x86_64-linker-script"),
        "the fixture names its own boot files"
    );
    let text = if text.contains(TABLE) {
        text.replacen(TABLE, &format!("{TABLE}{keys}"), 1)
    } else {
        format!("{text}\n{TABLE}{keys}")
    };
    std::fs::write(&manifest, text).unwrap();
}

/// One planned module (workspace-relative paths).
pub struct Planned {
    pub source: String,
    pub target: String,
    pub component: String,
}

/// The planned modules of `root`.
pub fn plan_modules(root: &Path) -> Vec<Planned> {
    let out = super::command(root, &["plan", "--message-format", "json"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    super::assert_code(&out, 0);
    let field = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    super::json(&out)["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Planned {
            source: field(m, "source"),
            target: field(m, "target"),
            component: field(m, "component"),
        })
        .collect()
}

/// The fixture, ported in a temp copy by `cargo eterna-port --backend llm` against
/// the scripted model, with the answers' boot files named in its metadata. Asserts
/// that every module the plan ports to a file of its own has an answer, and that the
/// port wrote exactly the answers.
pub fn scripted_port() -> tempfile::TempDir {
    let dir = super::copy_tree(&super::fixture_dir());
    add_boot_files(dir.path());
    // Every module with a new file of its own needs an answer at that path; the
    // files edited in place (main.rs, arch/mod.rs, guest.rs) keep the engine's edit.
    let answered: Vec<String> = plan_modules(dir.path())
        .into_iter()
        .filter(|m| m.component != "arch-neutral")
        .map(|m| m.target)
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|t| !answers_dir().join(t).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the plan ports to {missing:?}, which have no scripted answer in {}: the answers follow the source-derived layout (arch/x86_64/<same name as arch/aarch64>, guest/x86_64.rs)",
        answers_dir().display()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, asked) = start(&rt);
    let out = super::command(
        dir.path(),
        &[
            "--backend",
            "llm",
            "--allow-no-vcs",
            "--message-format",
            "json",
        ],
    )
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET_DIR")
    .env("OPENROUTER_API_KEY", DUMMY_KEY)
    .env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    )
    .output()
    .expect("run cargo-eterna-port");
    drop(server);
    super::assert_code(&out, 0);
    let summary = super::json(&out);
    assert_eq!(summary["backend"], "llm", "{summary:#}");
    let asked = asked.lock().unwrap().clone();
    for target in &answered {
        let rel = target.split_once('/').map_or(target.as_str(), |(_, r)| r);
        assert!(
            asked.iter().any(|(f, served)| f == rel && *served),
            "no prompt asked for {rel}: {asked:?}"
        );
        let written = std::fs::read_to_string(dir.path().join(target)).unwrap();
        let answer = std::fs::read_to_string(answers_dir().join(target)).unwrap();
        assert!(
            written.trim_end() == answer.trim_end(),
            "{target} is not the scripted answer"
        );
    }
    dir
}
