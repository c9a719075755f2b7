//! The agent swarm and its LLM backend, end to end through the CLI on a temp copy of
//! the fixture, against a local OpenAI-compatible server (wiremock on 127.0.0.1) that
//! answers like a model would: it reads the prompt and sends back a file.

use crate::common;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_code, command, copy_tree, fixture_dir, json, json_lines, stderr, stdout};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-or-v1-swarm-test-secret-0123456789";
const KEYS: [&str; 3] = [
    "sk-or-v1-swarm-key-one-aaaa",
    "sk-or-v1-swarm-key-two-bbbb",
    "sk-or-v1-swarm-key-three-cccc",
];
const MARK: &str = "// ported-by: test-model";
/// The scripted model hands back the engine's draft (plus its mark), so the draft's
/// `unimplemented!` stubs stay and the port is reported incomplete: exit 1.
const INCOMPLETE: i32 = 1;

/// The target path and the draft of a port prompt.
fn prompt_parts(body: &Value) -> (String, String) {
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string();
    // The first user message holds the task.
    let first = body["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or(&user)
        .to_string();
    let target = first
        .split("Write exactly this file: `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .unwrap_or_default()
        .to_string();
    let draft = first
        .split("draft of `")
        .nth(1)
        .and_then(|r| r.split("```rust\n").nth(1))
        .and_then(|r| r.split("\n```").next())
        .unwrap_or_default()
        .to_string();
    (target, draft)
}

fn completion(content: &str) -> Value {
    json!({
        "id": "gen-test",
        "object": "chat.completion",
        "model": "x-ai/grok-4-fast",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200, "cost": 0.0005}
    })
}

/// A model that answers every port prompt with the engine's draft plus a marker line,
/// in a fenced block naming the file. `twist` may change the answer per target.
struct Model {
    calls: Arc<AtomicUsize>,
    twist: fn(&str, &str, usize) -> Option<String>,
}

impl Respond for Model {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (target, draft) = prompt_parts(&body);
        let answer = (self.twist)(&target, &draft, n).unwrap_or_else(|| {
            format!("Here is the port.\n\n```rust {target}\n{draft}\n{MARK}\n```\n")
        });
        ResponseTemplate::new(200).set_body_json(completion(&answer))
    }
}

async fn model_server(
    twist: fn(&str, &str, usize) -> Option<String>,
) -> (MockServer, Arc<AtomicUsize>) {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(Model {
            calls: calls.clone(),
            twist,
        })
        .mount(&server)
        .await;
    (server, calls)
}

/// A server answering every POST with `template`.
async fn server_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn no_twist(_: &str, _: &str, _: usize) -> Option<String> {
    None
}

fn llm_cmd(ws: &Path, server: &MockServer, args: &[&str]) -> std::process::Command {
    let mut cmd = command(ws, args);
    cmd.env("OPENROUTER_API_KEY", KEY).env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    );
    cmd
}

async fn run_async(mut cmd: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run cargo-eterna-port"))
        .await
        .unwrap()
}

fn fixture_copy() -> tempfile::TempDir {
    copy_tree(&fixture_dir())
}

fn events<'a>(lines: &'a [Value], reason: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["reason"] == reason).collect()
}

/// The task of the summary whose module path ends with `needle`.
fn task_of(summary: &Value, needle: &str) -> Value {
    summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["module"].as_str().unwrap().ends_with(needle))
        .unwrap_or_else(|| panic!("no task for {needle}: {summary:#}"))
        .clone()
}

/// The text column of every row `sql` selects from the workspace's store.
fn store_strings(ws: &Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(ws.join("target/eterna-port/eterna.db")).unwrap();
    let mut st = conn.prepare(sql).unwrap();
    let rows: Vec<String> = st
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(|r| r.unwrap().unwrap_or_default())
        .collect();
    rows
}

fn read(ws: &Path, rel: &str) -> String {
    std::fs::read_to_string(ws.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for k in std::iter::once(KEY).chain(KEYS) {
        assert!(!text.contains(k), "an API key appears in {what}");
    }
}

/// The store's file, with its WAL, as bytes.
fn store_bytes(ws: &Path) -> Vec<u8> {
    let dir = ws.join("target/eterna-port");
    let mut all = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().is_file() {
            all.extend(std::fs::read(e.path()).unwrap_or_default());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_backend_ports_through_the_swarm_and_a_rerun_makes_no_request() {
    let (server, calls) = model_server(no_twist).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json", "-j", "3"],
    ))
    .await;
    assert_code(&out, INCOMPLETE);
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["reason"], "port-finished");
    assert_eq!(summary["backend"], "llm");
    // Counted from the answers' text: the stubs they kept are not ported.
    assert!(
        summary["coverage"]["unported"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert_eq!(summary["model"], "x-ai/grok-4-fast");

    // Every module with a file of its own went to an EternaPortAgent and the model.
    let tasks = summary["tasks"].as_array().unwrap();
    let port_tasks: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["role"] == "eterna-port")
        .collect();
    assert!(port_tasks.len() >= 8, "{summary:#}");
    for t in &port_tasks {
        assert_eq!(t["status"], "done", "{t:#}");
        assert_eq!(t["files_from"], "model", "{t:#}");
        assert_eq!(t["requests"], 1);
    }
    let requests = calls.load(Ordering::SeqCst);
    assert_eq!(requests, port_tasks.len(), "one request per ported module");
    // The model's port compiles: the fix loop ran one cargo check and stopped clean.
    assert_eq!(
        summary["fix_loop"]["stop"], "clean",
        "{:#}",
        summary["fix_loop"]
    );
    assert_eq!(
        summary["fix_loop"]["iterations"].as_array().unwrap().len(),
        1
    );
    assert_eq!(summary["usage"]["requests"], requests);
    assert_eq!(summary["usage"]["prompt_tokens"], 1000 * requests);
    // The prompt: concept map in the system message; source, draft, API and retrieved
    // context in the user message.
    let reqs = server.received_requests().await.unwrap();
    let vm = reqs
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap())
        .find(|b| prompt_parts(b).0 == "src/arch/x86_64/vm.rs")
        .expect("a request for vm.rs");
    let system = vm["messages"][0]["content"].as_str().unwrap();
    let user = vm["messages"][1]["content"].as_str().unwrap();
    assert!(
        system.contains("You are EternaPortAgent") && system.contains("- HCR_EL2 → "),
        "{system}"
    );
    assert!(
        user.contains("## ARM64 source: `src/arch/aarch64/vm.rs`"),
        "{user}"
    );
    assert!(user.contains("The API the rest of the workspace expects") && user.contains("pub fn"));
    assert!(user.contains("## Related code and notes from this workspace"));
    assert!(
        !prompt_parts(&vm).1.is_empty(),
        "the draft is in the prompt"
    );
    // The model's files were written, and the summary says which agent wrote them.
    let vm_report = summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == "eterna/src/arch/x86_64/vm.rs")
        .unwrap();
    assert!(vm_report["ported_by"]
        .as_str()
        .unwrap()
        .starts_with("EternaPortAgent#"));
    let vmcs = read(ws.path(), "eterna/src/arch/x86_64/vm.rs");
    assert!(vmcs.trim_end().ends_with(MARK), "{vmcs}");

    // Events: a handshake per agent, start and finish per task, health, usage.
    let hello = events(&lines, "agent-started");
    assert!(!hello.is_empty() && hello.len() <= 3 + 3, "{hello:?}");
    for h in &hello {
        assert!(h["agent"].as_str().unwrap().contains("Agent#"));
        assert!(!h["specialization"].as_str().unwrap().is_empty());
        assert!(h["languages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "rust"));
        assert_eq!(h["model"], "x-ai/grok-4-fast");
    }
    assert_eq!(events(&lines, "task-started").len(), tasks.len());
    assert_eq!(events(&lines, "task-finished").len(), tasks.len());
    // Every task starts after its agent's handshake and finishes after it starts.
    let pos = |reason: &str, key: &str, val: &Value| {
        lines
            .iter()
            .position(|l| l["reason"] == reason && &l[key] == val)
            .unwrap()
    };
    for t in events(&lines, "task-started") {
        assert!(
            pos("agent-started", "agent", &t["agent"]) < pos("task-started", "task", &t["task"])
        );
        assert!(pos("task-started", "task", &t["task"]) < pos("task-finished", "task", &t["task"]));
    }
    let health = events(&lines, "agent-health");
    assert!(health.iter().any(|h| h["agent"] == "PrimaryAgent#1"));
    let usage = events(&lines, "usage");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["requests"], requests);

    // The store: tasks with usage, the health table, artifacts by agent and model.
    let st = run_async(llm_cmd(
        ws.path(),
        &server,
        &["status", "--message-format", "json"],
    ))
    .await;
    assert_code(&st, 0);
    let st = json(&st);
    let last = &st["last_run"];
    assert_eq!(last["command"], "port", "{st:#}");
    assert_eq!(last["status"], "done");
    let stored: Vec<&Value> = last["tasks"].as_array().unwrap().iter().collect();
    assert_eq!(stored.len(), tasks.len());
    assert!(stored.iter().any(|t| t["agent"] == "EternaPortAgent"
        && t["tokens_in"] == 1000
        && t["tokens_out"] == 200));
    let table = last["health"].as_array().unwrap();
    assert!(table.iter().any(|h| h["agent"] == "EternaPortAgent#1"
        && h["tasks_done"].as_i64().unwrap() >= 1
        && h["mean_latency_ms"].as_f64().is_some()
        && h["last_heartbeat"].as_str().is_some()));
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT origin_agent || ' ' || model FROM code_artifacts WHERE path = 'eterna/src/arch/x86_64/vm.rs' ORDER BY id DESC LIMIT 1",
        ),
        ["EternaPortAgent x-ai/grok-4-fast"]
    );

    // An unchanged re-run answers from the cache: no request, nothing rewritten.
    let again = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&again, INCOMPLETE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        requests,
        "the re-run made requests"
    );
    let s2 = json(&again);
    assert_eq!(s2["usage"]["requests"], 0);
    assert_eq!(s2["usage"]["cache_hits"], requests);
    assert!(
        s2["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["action"] == "unchanged"),
        "{s2:#}"
    );

    // --no-cache asks again.
    let fresh = run_async(llm_cmd(
        ws.path(),
        &server,
        &["vmcs", "--allow-no-vcs", "--no-cache", "-q"],
    ))
    .await;
    assert_code(&fresh, INCOMPLETE);
    assert_eq!(calls.load(Ordering::SeqCst), requests + 1);

    // No key anywhere: output, events, the store.
    for o in [&out, &again, &fresh] {
        assert_no_secret("stdout", &o.stdout);
        assert_no_secret("stderr", &o.stderr);
    }
    assert_no_secret("the store", &store_bytes(ws.path()));
    for r in server.received_requests().await.unwrap() {
        assert_eq!(
            r.headers.get("authorization").unwrap().to_str().unwrap(),
            format!("Bearer {KEY}")
        );
    }
}

fn bad_vmcs(target: &str, _: &str, n: usize) -> Option<String> {
    let _ = n;
    if target.ends_with("/vm.rs") {
        // Invalid Rust every time: the task fails and keeps the draft.
        return Some(format!("```rust {target}\npub fn broken( {{\n```\n"));
    }
    if target.ends_with("/stage2.rs") {
        // A path traversal attempt, every time.
        return Some("```rust ../../../etc/evil.rs\npub fn x() {}\n```\n".to_string());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_answers_are_retried_then_keep_the_draft_without_stopping_other_modules() {
    let (server, _calls) = model_server(bad_vmcs).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    // Done, with problems: two modules kept their drafts.
    assert_code(&out, 1);
    let summary = json(&out);
    let task = |needle: &str| task_of(&summary, needle);
    let vmcs = task("::vm");
    assert_eq!(vmcs["status"], "failed");
    assert_eq!(vmcs["attempts"], 2, "the rejection is sent back once");
    assert!(
        vmcs["error"].as_str().unwrap().contains("not valid Rust"),
        "{vmcs:#}"
    );
    let ept = task("::stage2");
    assert_eq!(ept["status"], "failed");
    assert!(
        ept["error"].as_str().unwrap().contains("goes up with `..`"),
        "{ept:#}"
    );
    assert!(!ws.path().join("../../../etc/evil.rs").exists());
    // The failed modules got the offline draft; the others the model's file.
    let vmcs_file = read(ws.path(), "eterna/src/arch/x86_64/vm.rs");
    assert!(!vmcs_file.contains(MARK) && !vmcs_file.contains("broken"));
    assert!(read(ws.path(), "eterna/src/arch/x86_64/gic.rs").contains(MARK));
    let ok = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "done")
        .count();
    assert!(ok >= 6, "{summary:#}");
    // The second attempt carried the rejection reason to the model.
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs.iter().any(|r| {
        let b: Value = serde_json::from_slice(&r.body).unwrap();
        let msgs = b["messages"].as_array().unwrap();
        msgs.len() == 4
            && msgs[3]["content"]
                .as_str()
                .unwrap()
                .contains("was rejected")
    }));
    // Human output names the failed tasks.
    let human = run_async(llm_cmd(
        ws.path(),
        &server,
        &["vmcs", "--allow-no-vcs", "--allow-dirty"],
    ))
    .await;
    assert_code(&human, 1);
    assert!(
        stdout(&human).contains("did not finish"),
        "{}",
        stdout(&human)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_and_rate_limits_and_server_errors_are_survived() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    // First a 429 with Retry-After, then a 500, then answers.
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_string("{\"error\":{\"message\":\"slow down\"}}"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream hiccup"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(Model {
            calls: calls.clone(),
            twist: no_twist,
        })
        .with_priority(3)
        .mount(&server)
        .await;
    let ws = fixture_copy();
    let mut cmd = command(
        ws.path(),
        &["--allow-no-vcs", "--message-format", "json", "-j", "2"],
    );
    cmd.env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    );
    for (i, k) in KEYS.iter().enumerate() {
        cmd.env(format!("OPENROUTER_API_KEY{}", i + 1), k);
    }
    let out = run_async(cmd).await;
    assert_code(&out, INCOMPLETE);
    let summary = json(&out);
    assert!(
        summary["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "done"),
        "{summary:#}"
    );
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), calls.load(Ordering::SeqCst) + 2);
    let used: std::collections::BTreeSet<String> = reqs
        .iter()
        .map(|r| {
            r.headers
                .get("authorization")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(used.len(), 3, "all three keys are used");
    let retried = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["requests"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(
        retried as usize,
        calls.load(Ordering::SeqCst),
        "retries are inside one request"
    );
    assert_no_secret("stdout", &out.stdout);
    assert_no_secret("stderr", &out.stderr);
    assert_no_secret("the store", &store_bytes(ws.path()));
}

/// Every file of a port's workspace (without `target/`), by relative path.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The files the offline engine's port of the fixture writes (fix loop included).
async fn offline_port() -> std::collections::BTreeMap<String, Vec<u8>> {
    let ws = fixture_copy();
    let out = run_async(command(ws.path(), &["--allow-no-vcs", "-q"])).await;
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    tree(ws.path())
}

/// The lines of stderr that name `needle`.
fn lines_naming(out: &Output, needle: &str) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_cost_one_request_each_and_the_drafts_are_written() {
    let server = server_answering(ResponseTemplate::new(401).set_body_string(format!(
        "{{\"error\":\"invalid key {} (nor {})\"}}",
        KEYS[0], KEYS[2]
    )))
    .await;
    let ws = fixture_copy();
    // Three keys, eight agents; with debug logs and JSON events: the server's echo of
    // the key is never shown.
    let mut cmd = command(
        ws.path(),
        &["--allow-no-vcs", "-vv", "--message-format", "json"],
    );
    cmd.env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    );
    for (var, key) in [
        "OPENROUTER_API_KEY1",
        "OPENROUTER_API_KEY2",
        "OPENROUTER_API_KEY3",
    ]
    .iter()
    .zip(KEYS)
    {
        cmd.env(var, key);
    }
    let out = run_async(cmd).await;
    assert_code(&out, 1);
    assert!(stderr(&out).contains("DEBUG"), "debug logs are on");
    let requests = server.received_requests().await.unwrap().len();
    assert!(
        (1..=KEYS.len()).contains(&requests),
        "{requests} requests for {} keys",
        KEYS.len()
    );
    // One message, naming the server and what to do.
    let said = lines_naming(&out, "error:");
    assert_eq!(said.len(), 1, "{}", stderr(&out));
    assert!(
        said[0].contains(&server.uri())
            && said[0].contains("refused all 3 API keys")
            && said[0].contains("OPENROUTER_API_KEY"),
        "{}",
        said[0]
    );
    // Every module that needed the model failed without it and kept its draft; the
    // files are the offline port's (its fix loop ran offline: no request after).
    let summary = json(&out);
    for t in summary["tasks"].as_array().unwrap() {
        if t["requests"] != 0 || t["status"] == "failed" {
            assert_eq!(t["status"], "failed", "{t:#}");
            assert_eq!(t["files_from"], "draft", "{t:#}");
        }
    }
    let not_sent = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("not sent: "))
        })
        .count();
    assert!(not_sent > 0, "{summary:#}");
    assert!(
        summary["fix_loop"]["iterations"].is_array(),
        "the fix loop ran"
    );
    assert_eq!(tree(ws.path()), offline_port().await);
    assert_no_secret("stdout", &out.stdout);
    assert_no_secret("stderr", &out.stderr);
    assert_no_secret("the store", &store_bytes(ws.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_said_once_and_the_offline_port_is_written() {
    // A port on 127.0.0.1 that nothing listens on: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let ws = fixture_copy();
    let mut cmd = command(ws.path(), &["--allow-no-vcs"]);
    cmd.env("OPENROUTER_API_KEY", KEY)
        .env("ETERNA_PORT_LLM_BASE_URL", &base);
    let out = run_async(cmd).await;
    assert_code(&out, 1);
    let said = lines_naming(&out, &format!("127.0.0.1:{port}"));
    assert_eq!(said.len(), 1, "one message: {}", stderr(&out));
    assert!(
        said[0].starts_with("error:")
            && said[0].contains("cannot be reached")
            && said[0].contains("start the server")
            && said[0].contains("ETERNA_PORT_LLM_BASE_URL")
            && said[0].contains("offline engine's draft"),
        "{}",
        said[0]
    );
    assert!(!stderr(&out).contains("nothing was written"));
    assert_eq!(tree(ws.path()), offline_port().await);
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT status FROM runs WHERE command = 'port' ORDER BY id DESC LIMIT 1"
        ),
        ["failed"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_answers_fail_only_their_module() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    // Not a chat completion at all, for every request about the timer.
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains(
            "Write exactly this file: `src/arch/x86_64/timer.rs`",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"choices\": [ {\"mess"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(Model {
            calls: calls.clone(),
            twist: no_twist,
        })
        .with_priority(2)
        .mount(&server)
        .await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, 1);
    let summary = json(&out);
    let failed: Vec<&Value> = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] != "done")
        .collect();
    assert_eq!(failed.len(), 1, "{summary:#}");
    assert!(failed[0]["module"].as_str().unwrap().ends_with("timer"));
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("not an OpenAI-compatible"),
        "{:#}",
        failed[0]
    );
    assert!(read(ws.path(), "eterna/src/arch/x86_64/gic.rs").contains(MARK));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_swarm_and_writes_nothing() {
    use std::io::BufRead;
    let server = server_answering(
        ResponseTemplate::new(200)
            .set_body_json(completion("```rust\nfn x() {}\n```"))
            .set_delay(Duration::from_secs(60)),
    )
    .await;
    let ws = fixture_copy();
    let mut cmd = llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    let stdout_pipe = child.stdout.take().unwrap();
    let pid = child.id() as i32;
    let out = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout_pipe).lines();
        // Wait until the agents are at work, then press Ctrl-C.
        for line in lines.by_ref() {
            if line.unwrap().contains("\"task-started\"") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        unsafe { libc::kill(pid, libc::SIGINT) };
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status, rest, err)
    })
    .await
    .unwrap();
    let (status, rest, err) = out;
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it waited for the server"
    );
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        rest.iter().any(|l| l.contains("\"status\":\"cancelled\"")),
        "{rest:?}"
    );
    assert!(
        !ws.path().join("eterna/src/arch/x86_64").exists(),
        "a cancelled run wrote files"
    );
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT status FROM runs WHERE command = 'port' ORDER BY id DESC LIMIT 1"
        ),
        ["cancelled"]
    );
}

/// The coordinator through the library: bounded concurrency, handshakes, heartbeats
/// and the health table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_bounds_concurrency_and_keeps_a_health_table() {
    use cargo_eterna_port::config::Secret;
    use cargo_eterna_port::llm::{ExtractOptions, LlmClient, LlmSettings, Message};
    use cargo_eterna_port::swarm::{self, Event, Role, Task};

    let server = server_answering(
        ResponseTemplate::new(200)
            .set_body_json(completion("```rust\npub fn ported() {}\n```"))
            .set_delay(Duration::from_millis(150)),
    )
    .await;
    let mut settings = LlmSettings::new(
        format!("{}/api/v1", server.uri()),
        "test-model",
        vec![Secret::new(KEY.to_string())],
    );
    settings.max_attempts = 1;
    let backend = swarm::Backend::Llm(Arc::new(swarm::LlmBackend {
        client: LlmClient::new(settings).unwrap(),
        cache: None,
        stream: false,
        max_answer_attempts: 1,
        temperature: None,
        max_tokens: None,
    }));
    let tasks: Vec<Task> = (0..12)
        .map(|i| Task {
            id: format!("m{i}#port"),
            module: format!("hv::m{i}"),
            role: Role::EternaPort,
            messages: vec![Message::user(format!("port m{i}"))],
            extract: ExtractOptions::for_targets([format!("src/m{i}.rs")]),
            package_dir: "hv/".into(),
            draft: vec![(format!("hv/src/m{i}.rs"), "// draft".into())],
            ask_model: true,
            api: Vec::new(),
            max_tokens: Some(64),
            group: None,
        })
        .collect();
    let opts = swarm::SwarmOptions {
        jobs: 4,
        heartbeat: Duration::from_millis(20),
        cancel: Default::default(),
    };
    let mut seen: Vec<Event> = Vec::new();
    let (mut now, mut max) = (0i32, 0i32);
    let outcome = swarm::run(tasks, backend, &opts, &mut |e: &Event| {
        match e {
            Event::TaskStarted { .. } => {
                now += 1;
                max = max.max(now);
            }
            Event::TaskFinished(_) => now -= 1,
            _ => {}
        }
        seen.push(e.clone());
    })
    .await;
    assert_eq!(max, 4, "at most --jobs tasks in flight, and that many used");
    assert!(!outcome.cancelled && outcome.fatal.is_none());
    assert_eq!(outcome.results.len(), 12);
    for (i, r) in outcome.results.iter().enumerate() {
        assert_eq!(r.status, swarm::TaskStatus::Done, "{r:?}");
        // Results come back in task order, with the package directory joined.
        assert_eq!(
            r.files,
            [(
                format!("hv/src/m{i}.rs"),
                "pub fn ported() {}\n".to_string()
            )]
        );
    }
    let hellos = seen
        .iter()
        .filter(|e| matches!(e, Event::AgentStarted { .. }))
        .count();
    assert_eq!(hellos, 4, "one handshake per agent");
    let agents: Vec<_> = outcome
        .health
        .iter()
        .filter(|h| h.agent.starts_with("EternaPortAgent#"))
        .collect();
    assert_eq!(agents.len(), 4);
    assert_eq!(agents.iter().map(|h| h.tasks_done).sum::<i64>(), 12);
    for h in &agents {
        assert_eq!(h.status, "stopped");
        assert!(h.last_heartbeat.is_some());
        // Each request took the server's 150 ms at least.
        assert!(h.mean_latency_ms.unwrap() >= 150.0, "{h:?}");
        assert_eq!(h.model, "test-model");
    }
    assert_eq!(outcome.health[0].agent, "PrimaryAgent#1");
}

// ---------------------------------------------------------------------------
// The cargo check fix loop driven by the DebugAgent.
// ---------------------------------------------------------------------------

/// The current file of a DebugAgent prompt, if the request is one.
fn debug_file(body: &Value) -> Option<(String, String)> {
    let user = body["messages"][1]["content"].as_str()?;
    if !user.starts_with("`cargo check --target") {
        return None;
    }
    let rest = user.split("## Current `").nth(1)?;
    let path = rest.split('`').next()?.to_string();
    let content = rest
        .split("```rust\n")
        .nth(1)?
        .split("\n```")
        .next()?
        .to_string();
    Some((path, content))
}

const TYPE_ERROR: &str = "pub fn broken_for_the_test() -> u32 {\n    \"not a number\"\n}";
const FIXED: &str = "pub fn broken_for_the_test() -> u32 {\n    7\n}";

/// Port answers put a type error into vmcs.rs; the DebugAgent's answer is chosen by
/// `debug`.
struct LoopModel {
    port_calls: Arc<AtomicUsize>,
    debug_calls: Arc<AtomicUsize>,
    vmcs_extra: &'static str,
    debug: fn(&str) -> String,
}

impl Respond for LoopModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let answer = match debug_file(&body) {
            Some((path, content)) => {
                self.debug_calls.fetch_add(1, Ordering::SeqCst);
                format!(
                    "Fixed.\n\n```rust {path}\n{}\n```\n",
                    (self.debug)(&content)
                )
            }
            None => {
                self.port_calls.fetch_add(1, Ordering::SeqCst);
                let (target, draft) = prompt_parts(&body);
                let extra = if target.ends_with("/vm.rs") {
                    self.vmcs_extra
                } else {
                    ""
                };
                format!("```rust {target}\n{draft}\n{extra}\n{MARK}\n```\n")
            }
        };
        ResponseTemplate::new(200).set_body_json(completion(&answer))
    }
}

async fn loop_server(
    vmcs_extra: &'static str,
    debug: fn(&str) -> String,
) -> (MockServer, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let server = MockServer::start().await;
    let (port_calls, debug_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    Mock::given(method("POST"))
        .respond_with(LoopModel {
            port_calls: port_calls.clone(),
            debug_calls: debug_calls.clone(),
            vmcs_extra,
            debug,
        })
        .mount(&server)
        .await;
    (server, port_calls, debug_calls)
}

fn fix_the_error(content: &str) -> String {
    content.replace(TYPE_ERROR, FIXED)
}

fn move_the_error_elsewhere(content: &str) -> String {
    // Changes the file without fixing anything: the same error on the same line.
    format!("{content}\n// DebugAgent: tried\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fix_loop_converges_in_one_iteration_with_a_fixing_debug_agent() {
    let (server, _, debug_calls) = loop_server(TYPE_ERROR, fix_the_error).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, INCOMPLETE);
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "clean", "{fl:#}");
    assert_eq!(fl["fix_rounds"], 1, "{fl:#}");
    assert_eq!(fl["errors_left"], 0);
    let its = fl["iterations"].as_array().unwrap();
    assert_eq!(its.len(), 2);
    assert!(
        its[0]["errors"].as_u64().unwrap() >= 1 && its[0]["fixer_called"] == true,
        "{its:#?}"
    );
    assert_eq!(its[0]["fixer_files"][0], "eterna/src/arch/x86_64/vm.rs");
    assert_eq!(
        debug_calls.load(Ordering::SeqCst),
        1,
        "one DebugAgent request, for the one broken module"
    );
    let vmcs = read(ws.path(), "eterna/src/arch/x86_64/vm.rs");
    assert!(vmcs.contains(FIXED) && !vmcs.contains(TYPE_ERROR));
    // The DebugAgent's task, its iteration events, and the store's record of both.
    let debug_task = summary["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "debug")
        .expect("a DebugAgent task");
    assert_eq!(debug_task["status"], "done");
    assert_eq!(events(&lines, "fix-iteration").len(), 2);
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT outcome FROM fix_iterations ORDER BY iteration"
        ),
        ["fixing", "clean"]
    );
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT agent FROM agent_tasks WHERE task_id LIKE '%#debug1'"
        ),
        ["DebugAgent"]
    );
    // The DebugAgent's request is bounded by the size of the file it rewrites.
    let debug_body = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.body_json::<Value>().ok())
        .find(|b| debug_file(b).is_some())
        .unwrap();
    let (_, current) = debug_file(&debug_body).unwrap();
    let sized = cargo_eterna_port::swarm::answer_max_tokens([current.as_str()]);
    let max = debug_body["max_tokens"].as_u64().unwrap();
    assert!(
        max.abs_diff(u64::from(sized)) <= 2,
        "{max} for a file of {} chars",
        current.chars().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fix_loop_stops_on_no_progress_before_the_limit() {
    let (server, _, debug_calls) = loop_server(TYPE_ERROR, move_the_error_elsewhere).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &[
            "--allow-no-vcs",
            "--message-format",
            "json",
            "--max-fix-iterations",
            "5",
        ],
    ))
    .await;
    assert_code(&out, 1);
    let summary = json(&out);
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "no-progress", "{fl:#}");
    assert!(fl["fix_rounds"].as_u64().unwrap() < 5, "{fl:#}");
    assert!(fl["errors_left"].as_u64().unwrap() >= 1);
    assert!(
        fl["first_error"]
            .as_str()
            .unwrap()
            .starts_with("eterna/src/arch/x86_64/vm.rs:"),
        "{fl:#}"
    );
    assert_eq!(
        debug_calls.load(Ordering::SeqCst) as u64,
        fl["fix_rounds"].as_u64().unwrap()
    );
    // Human output says why it stopped.
    let human = run_async(llm_cmd(
        ws.path(),
        &server,
        &["vmcs", "--allow-no-vcs", "--max-fix-iterations", "2"],
    ))
    .await;
    assert_code(&human, 1);
    assert!(stdout(&human).contains("no progress"), "{}", stdout(&human));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_applicable_suggestion_is_applied_without_a_request() {
    const RUSTFIXABLE: &str = "pub fn rustfix_me() -> u32 {\n    let r: &u32 = 5u32;\n    *r\n}";
    let (server, port_calls, debug_calls) = loop_server(RUSTFIXABLE, fix_the_error).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, INCOMPLETE);
    let summary = json(&out);
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "clean", "{fl:#}");
    assert!(
        fl["iterations"][0]["rustfix_applied"].as_u64().unwrap() >= 1,
        "{fl:#}"
    );
    assert_eq!(
        debug_calls.load(Ordering::SeqCst),
        0,
        "rustc's own fix needs no model"
    );
    let total = server.received_requests().await.unwrap().len();
    assert_eq!(total, port_calls.load(Ordering::SeqCst));
    assert!(read(ws.path(), "eterna/src/arch/x86_64/vm.rs").contains("let r: &u32 = &5u32;"));
}

// ---------------------------------------------------------------------------
// Streaming answers (ETERNA_PORT_LLM_STREAM=on) and dependency changes.
// ---------------------------------------------------------------------------

/// SSE events for `content`, in pieces; `complete: false` cuts the stream off.
fn sse_body(content: &str, complete: bool) -> String {
    let mut body = String::from(": OPENROUTER PROCESSING\n\n");
    let chars: Vec<char> = content.chars().collect();
    let pieces: Vec<String> = chars.chunks(64).map(|c| c.iter().collect()).collect();
    let n = if complete {
        pieces.len()
    } else {
        pieces.len() / 2
    };
    for p in &pieces[..n] {
        let ev = json!({"choices": [{"index": 0, "delta": {"content": p}}]});
        body.push_str(&format!("data: {ev}\n\n"));
    }
    if complete {
        let last = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
        body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    }
    body
}

/// Streams the draft back; cuts the stream for the timer; answers the vmcs prompt with
/// a build script as well.
struct StreamingModel;

impl Respond for StreamingModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        assert_eq!(body["stream"], true, "the client was asked to stream");
        let (target, draft) = prompt_parts(&body);
        let mut answer = format!("```rust {target}\n{draft}\n{MARK}\n```\n");
        if target.ends_with("/vm.rs") {
            answer.push_str("```rust build.rs\nfn main() {}\n```\n");
        }
        let complete = !target.ends_with("timer.rs");
        ResponseTemplate::new(200).set_body_raw(sse_body(&answer, complete), "text/event-stream")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_assembled_and_a_cut_stream_fails_only_its_module() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(StreamingModel)
        .mount(&server)
        .await;
    let ws = fixture_copy();
    let mut cmd = llm_cmd(
        ws.path(),
        &server,
        &[
            "--allow-no-vcs",
            "--message-format",
            "json",
            "--max-fix-iterations",
            "0",
        ],
    );
    cmd.env("ETERNA_PORT_LLM_STREAM", "on");
    let out = run_async(cmd).await;
    assert_code(&out, 1);
    let summary = json(&out);
    let status = |needle: &str| task_of(&summary, needle);
    let timer = status("::timer");
    assert_eq!(timer["status"], "failed");
    assert!(
        timer["error"].as_str().unwrap().contains("cut off"),
        "{timer:#}"
    );
    // Rewriting the build script needs --allow-deps: refused, the draft kept, the
    // package's own build.rs untouched.
    let vm = status("::vm");
    assert_eq!(vm["status"], "failed");
    assert!(
        vm["error"].as_str().unwrap().contains("--allow-deps"),
        "{vm:#}"
    );
    let original = std::fs::read_to_string(fixture_dir().join("eterna/build.rs")).unwrap();
    assert_eq!(read(ws.path(), "eterna/build.rs"), original);
    // The streamed answers of the others were assembled and written, usage counted.
    let apic = status("::gic");
    assert_eq!(apic["status"], "done", "{apic:#}");
    assert_eq!(apic["usage"]["prompt_tokens"], 10);
    assert!(read(ws.path(), "eterna/src/arch/x86_64/gic.rs").contains(MARK));
    assert!(!read(ws.path(), "eterna/src/arch/x86_64/timer.rs").contains(MARK));

    // With --allow-deps the build script is accepted and written (a user file: the
    // git check guards it like the sources edited in place).
    let mut cmd = llm_cmd(
        ws.path(),
        &server,
        &[
            "vmcs",
            "--allow-no-vcs",
            "--allow-deps",
            "--max-fix-iterations",
            "0",
            "-q",
        ],
    );
    cmd.env("ETERNA_PORT_LLM_STREAM", "on");
    let out = run_async(cmd).await;
    assert_code(&out, INCOMPLETE);
    assert_eq!(read(ws.path(), "eterna/build.rs"), "fn main() {}\n");

    // A bad value of the switch is a usage error.
    let mut cmd = llm_cmd(ws.path(), &server, &["--allow-no-vcs"]);
    cmd.env("ETERNA_PORT_LLM_STREAM", "sometimes");
    let out = run_async(cmd).await;
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("ETERNA_PORT_LLM_STREAM"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_without_a_key_or_with_a_dry_run() {
    // --backend llm against OpenRouter without a key: a usage error naming the fix.
    let ws = fixture_copy();
    let out = run_async(command(ws.path(), &["--backend", "llm", "--allow-no-vcs"])).await;
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("OPENROUTER_API_KEY"),
        "{}",
        stderr(&out)
    );
    assert!(!ws.path().join("target/eterna-port/eterna.db").exists());

    // A dry run asks the model and shows its files as diffs, writing nothing, not even
    // a store.
    let (server, calls) = model_server(no_twist).await;
    let out = run_async(llm_cmd(ws.path(), &server, &["vmcs", "--dry-run"])).await;
    assert_code(&out, INCOMPLETE);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        stdout(&out).contains(&format!("+{MARK}")),
        "{}",
        stdout(&out)
    );
    assert!(!ws.path().join("eterna/src/arch/x86_64").exists());
    assert!(!ws.path().join("target/eterna-port/eterna.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_max_tokens_from_the_module_size_or_the_setting() {
    use cargo_eterna_port::swarm::answer_max_tokens;
    let (server, _) = model_server(no_twist).await;
    let ws = fixture_copy();
    let args = ["--allow-no-vcs", "-q", "--max-fix-iterations", "0"];
    let out = run_async(llm_cmd(ws.path(), &server, &args)).await;
    assert_code(&out, INCOMPLETE);
    let bodies: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.body_json().unwrap())
        .collect();
    assert!(bodies.len() > 3, "{}", bodies.len());
    let mut seen = std::collections::BTreeSet::new();
    for body in &bodies {
        let (target, draft) = prompt_parts(body);
        let max = body["max_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no max_tokens for {target}"));
        // At least what the draft alone asks for; the source may ask for more.
        assert!(
            max >= u64::from(answer_max_tokens([draft.as_str()])) && max <= 32768,
            "{target}: {max} for a draft of {} chars",
            draft.chars().count()
        );
        seen.insert(max);
    }
    assert!(seen.len() > 1, "sized per module: {seen:?}");

    // The setting overrides it for every request.
    let (server, _) = model_server(no_twist).await;
    let ws = fixture_copy();
    let mut cmd = llm_cmd(ws.path(), &server, &args);
    cmd.env("ETERNA_PORT_LLM_MAX_TOKENS", "777");
    let out = run_async(cmd).await;
    assert_code(&out, INCOMPLETE);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), bodies.len());
    for r in &requests {
        assert_eq!(r.body_json::<Value>().unwrap()["max_tokens"], 777);
    }
}

/// Streams the draft back, a piece every 300 ms, 2.4 s in all: over the 1 s stall
/// timeout, and still going when the client, having given up on the timer's answer
/// (silent after its first piece), has waited for the server as long as it does.
fn stall_the_timer(body: &Value) -> Vec<common::trickle::Step> {
    use common::trickle::{delta, steady, Step};
    let (target, draft) = prompt_parts(body);
    let answer = format!("```rust {target}\n{draft}\n{MARK}\n```\n");
    if target.ends_with("timer.rs") {
        return vec![Step::Send(delta("```rust")), Step::Hang];
    }
    steady(&answer, 8, Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_fails_its_module_and_then_requests_go_one_at_a_time() {
    let server = common::trickle::Trickle::start(stall_the_timer);
    let ws = fixture_copy();
    let mut cmd = command(
        ws.path(),
        &[
            "--allow-no-vcs",
            "--message-format",
            "json",
            "--max-fix-iterations",
            "0",
        ],
    );
    cmd.env("OPENROUTER_API_KEY", KEY)
        .env("ETERNA_PORT_LLM_BASE_URL", &server.url)
        .env("ETERNA_PORT_LLM_STREAM", "on")
        .env("ETERNA_PORT_LLM_STALL_TIMEOUT", "1")
        // 16 tokens: the client gives the server 0.8 s for what it abandoned.
        .env("ETERNA_PORT_LLM_MAX_TOKENS", "16");
    let out = run_async(cmd).await;
    assert_code(&out, 1);
    let summary = json(&out);
    let timer = task_of(&summary, "::timer");
    assert_eq!(timer["status"], "failed");
    let error = timer["error"].as_str().unwrap();
    assert!(
        error.contains("stalled") && error.contains("ETERNA_PORT_LLM_STALL_TIMEOUT"),
        "{error}"
    );
    // The slow but steady answers were not cut off.
    let gic = task_of(&summary, "::gic");
    assert_eq!(gic["status"], "done", "{gic:#}");
    assert!(read(ws.path(), "eterna/src/arch/x86_64/gic.rs").contains(MARK));
    // Said once; after the stall no two requests were out together.
    let said = lines_naming(&out, "one request at a time");
    assert_eq!(said.len(), 1, "{}", stderr(&out));
    assert!(said[0].contains(&server.url), "{}", said[0]);
    let log = server.log.lock().unwrap();
    assert_eq!(log.abandoned, 1);
    assert_eq!(
        log.overlaps_after_abandon, 0,
        "requests sent while others were out, after the stall"
    );
}

/// Port prompts as `LoopModel` answers them; DebugAgent prompts refused with 401.
struct RefusesDebugging(LoopModel);

impl Respond for RefusesDebugging {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if debug_file(&body).is_some() {
            self.0.debug_calls.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "key revoked"}}));
        }
        self.0.respond(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_during_the_fix_loop_hands_the_loop_to_the_stub_fixer() {
    let server = MockServer::start().await;
    let debug_calls = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .respond_with(RefusesDebugging(LoopModel {
            port_calls: Arc::new(AtomicUsize::new(0)),
            debug_calls: debug_calls.clone(),
            vmcs_extra: TYPE_ERROR,
            debug: fix_the_error,
        }))
        .mount(&server)
        .await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, 1);
    assert_eq!(
        debug_calls.load(Ordering::SeqCst),
        1,
        "one refused request, then no more"
    );
    let said = lines_naming(&out, "error:");
    assert_eq!(said.len(), 1, "{}", stderr(&out));
    assert!(said[0].contains("key revoked"), "{}", said[0]);
    // The loop went on with the stub fixer: the broken function is stubbed, the port
    // checks clean.
    let summary = json(&out);
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "clean", "{fl:#}");
    let vm = read(ws.path(), "eterna/src/arch/x86_64/vm.rs");
    assert!(!vm.contains(TYPE_ERROR) && vm.contains(MARK), "{vm}");
}

/// An answer cut at `max_tokens` and then rejected says so in the task's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_answer_cut_at_max_tokens_says_so() {
    use cargo_eterna_port::config::Secret;
    use cargo_eterna_port::llm::{ExtractOptions, LlmClient, LlmSettings, Message};
    use cargo_eterna_port::swarm::{self, Role, Task};

    let cut = |max: u64| {
        let mut answer = completion("```rust src/m.rs\npub fn vmxon(region: u64) -> Result<");
        answer["choices"][0]["finish_reason"] = json!("length");
        answer["usage"]["completion_tokens"] = json!(max);
        ResponseTemplate::new(200).set_body_json(answer)
    };
    let server = server_answering(cut(64)).await;
    let settings = LlmSettings::new(
        format!("{}/api/v1", server.uri()),
        "test-model",
        vec![Secret::new(KEY.to_string())],
    );
    let backend = |max_tokens| {
        swarm::Backend::Llm(Arc::new(swarm::LlmBackend {
            client: LlmClient::new(settings.clone()).unwrap(),
            cache: None,
            stream: false,
            max_answer_attempts: 2,
            temperature: None,
            max_tokens,
        }))
    };
    let task = Task {
        id: "m#port".into(),
        module: "hv::m".into(),
        role: Role::EternaPort,
        messages: vec![Message::user("port m")],
        extract: ExtractOptions::for_targets(["src/m.rs".to_string()]),
        package_dir: "hv/".into(),
        draft: vec![("hv/src/m.rs".into(), "// draft".into())],
        ask_model: true,
        api: Vec::new(),
        max_tokens: Some(64),
        group: None,
    };
    let opts = swarm::SwarmOptions {
        jobs: 1,
        heartbeat: Duration::from_millis(50),
        cancel: Default::default(),
    };
    let outcome = swarm::run(vec![task.clone()], backend(None), &opts, &mut |_| {}).await;
    let r = &outcome.results[0];
    assert_eq!(r.status, swarm::TaskStatus::Failed);
    assert_eq!(r.files, task.draft, "the draft is kept");
    let error = r.error.as_deref().unwrap();
    assert!(
        error.contains("cut off at max_tokens = 64")
            && error.contains("ETERNA_PORT_LLM_MAX_TOKENS"),
        "{error}"
    );
    let bodies = server.received_requests().await.unwrap();
    assert_eq!(bodies.len(), 2);
    assert!(bodies
        .iter()
        .all(|b| b.body_json::<Value>().unwrap()["max_tokens"] == 64));

    // The same answer without `finish_reason: length` is rejected without that note;
    // the backend's setting overrides the task's bound.
    let server = server_answering(ResponseTemplate::new(200).set_body_json(completion(
        "```rust src/m.rs\npub fn vmxon(region: u64) -> Result<",
    )))
    .await;
    let settings = LlmSettings::new(
        format!("{}/api/v1", server.uri()),
        "test-model",
        vec![Secret::new(KEY.to_string())],
    );
    let backend = swarm::Backend::Llm(Arc::new(swarm::LlmBackend {
        client: LlmClient::new(settings).unwrap(),
        cache: None,
        stream: false,
        max_answer_attempts: 1,
        temperature: None,
        max_tokens: Some(4096),
    }));
    let outcome = swarm::run(vec![task], backend, &opts, &mut |_| {}).await;
    let error = outcome.results[0].error.as_deref().unwrap();
    assert!(!error.contains("max_tokens"), "{error}");
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert_eq!(body["max_tokens"], 4096);
}

// ---------------------------------------------------------------------------
// A fix round that makes things worse is backed out (as `cargo fix` does).
// ---------------------------------------------------------------------------

/// Two more type errors, appended by a DebugAgent that makes things worse.
const WORSE: &str =
    "pub fn made_worse_a() -> u32 {\n    \"a\"\n}\npub fn made_worse_b() -> u32 {\n    \"b\"\n}";
const TOLD: &str = "Your previous fix made things worse";

/// Port answers put [`TYPE_ERROR`] into vm.rs. The DebugAgent's first answer keeps it
/// and adds [`WORSE`]; told that it made things worse, it fixes the error, unless
/// `always_worse`.
struct RegressingModel {
    debug_prompts: Arc<std::sync::Mutex<Vec<String>>>,
    always_worse: bool,
}

impl Respond for RegressingModel {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let answer = match debug_file(&body) {
            Some((path, content)) => {
                let user = body["messages"][1]["content"].as_str().unwrap().to_string();
                let told = user.contains(TOLD);
                self.debug_prompts.lock().unwrap().push(user);
                let new = if told && !self.always_worse {
                    fix_the_error(&content)
                } else {
                    format!("{content}\n{WORSE}")
                };
                format!("Fixed.\n\n```rust {path}\n{new}\n```\n")
            }
            None => {
                let (target, draft) = prompt_parts(&body);
                let extra = if target.ends_with("/vm.rs") {
                    TYPE_ERROR
                } else {
                    ""
                };
                format!("```rust {target}\n{draft}\n{extra}\n{MARK}\n```\n")
            }
        };
        ResponseTemplate::new(200).set_body_json(completion(&answer))
    }
}

async fn regressing_server(always_worse: bool) -> (MockServer, Arc<std::sync::Mutex<Vec<String>>>) {
    let server = MockServer::start().await;
    let debug_prompts = Arc::new(std::sync::Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .respond_with(RegressingModel {
            debug_prompts: debug_prompts.clone(),
            always_worse,
        })
        .mount(&server)
        .await;
    (server, debug_prompts)
}

const VM: &str = "eterna/src/arch/x86_64/vm.rs";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_answer_that_adds_errors_is_backed_out_and_the_next_prompt_says_so() {
    let (server, debug_prompts) = regressing_server(false).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, INCOMPLETE);
    let summary = json(&out);
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "clean", "{fl:#}");
    assert_eq!(fl["regressed"], 1, "{fl:#}");
    let its = fl["iterations"].as_array().unwrap();
    assert_eq!(
        its.iter()
            .map(|i| i["outcome"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["fixing", "regressed", "clean"],
        "{its:#?}"
    );
    // The check after the bad round: more errors, and which ones it brought.
    let reg = &its[1]["regression"];
    assert_eq!(reg["by"], "fixer", "{reg:#}");
    assert_eq!(reg["files"], json!([VM]), "{reg:#}");
    assert!(
        reg["errors_after"].as_u64().unwrap() > reg["errors_before"].as_u64().unwrap(),
        "{reg:#}"
    );
    // The two errors it added, not the one it was asked about.
    let new_errors = reg["new_errors"].as_array().unwrap();
    assert_eq!(new_errors.len(), 2, "{reg:#}");
    assert!(
        new_errors
            .iter()
            .all(|e| e.as_str().unwrap().contains("made_worse")),
        "{reg:#}"
    );
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT outcome FROM fix_iterations ORDER BY iteration"
        ),
        ["fixing", "regressed", "clean"]
    );
    // The DebugAgent was asked again about the file as it was before its bad answer,
    // and told what that answer did.
    let prompts = debug_prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), 2, "{prompts:#?}");
    assert!(!prompts[0].contains(TOLD));
    assert!(prompts[1].contains(TOLD), "{}", prompts[1]);
    assert!(prompts[1].contains("made_worse_a"), "{}", prompts[1]);
    let current = |p: &str| {
        debug_file(&json!({"messages": [{}, {"content": p}]}))
            .unwrap()
            .1
    };
    assert_eq!(current(&prompts[0]), current(&prompts[1]));
    assert!(!current(&prompts[1]).contains("made_worse"));
    let vm = read(ws.path(), VM);
    assert!(vm.contains(FIXED) && !vm.contains("made_worse"), "{vm}");
    // The item the DebugAgent fixed is the fix loop's; the answer's others stay the
    // port agent's.
    let module = summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["target"] == VM)
        .unwrap();
    let item = |name: &str| {
        module["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {module:#}"))
            .clone()
    };
    let fixed = item("broken_for_the_test");
    assert_eq!(fixed["by"], "fix-loop", "{fixed:#}");
    assert_eq!(fixed["status"], "ported", "{fixed:#}");
    assert!(fixed["model"].is_string(), "{fixed:#}");
    assert!(
        module["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["by"] == "engine"),
        "{module:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_agent_that_only_makes_things_worse_leaves_the_files_byte_identical() {
    // What the port writes before any fix round: the same answers, no fix loop.
    let (server, _) = regressing_server(true).await;
    let before = fixture_copy();
    let out = run_async(llm_cmd(
        before.path(),
        &server,
        &["--allow-no-vcs", "-q", "--max-fix-iterations", "0"],
    ))
    .await;
    assert_code(&out, 1);

    let (server, debug_prompts) = regressing_server(true).await;
    let ws = fixture_copy();
    let out = run_async(llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    ))
    .await;
    assert_code(&out, 1);
    let summary = json(&out);
    let fl = &summary["fix_loop"];
    assert_eq!(fl["stop"], "regressed", "{fl:#}");
    assert_eq!(fl["regressed"], 2, "{fl:#}");
    assert_eq!(debug_prompts.lock().unwrap().len(), 2);
    assert_eq!(
        store_strings(
            ws.path(),
            "SELECT outcome FROM fix_iterations ORDER BY iteration"
        ),
        ["fixing", "regressed", "regressed"]
    );
    // Every file as the port left it before the loop, byte for byte.
    let (a, b) = (tree(before.path()), tree(ws.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (rel, bytes) in &a {
        assert!(
            b[rel] == *bytes,
            "{rel} differs after the backed-out rounds"
        );
    }
    // The human summary says what happened.
    let human = run_async(llm_cmd(ws.path(), &server, &["--allow-no-vcs"])).await;
    assert_code(&human, 1);
    let text = stdout(&human);
    assert!(text.contains("made things worse"), "{text}");
}

// ---------------------------------------------------------------------------
// Per-item results: what each item is and who wrote it, in the events, `status` and
// the store.
// ---------------------------------------------------------------------------

/// Fills the first engine stub of every draft that has one (`loop {}` has every type),
/// and keeps the rest of the draft.
fn fill_first_stub(target: &str, draft: &str, _: usize) -> Option<String> {
    let at = draft.find("unimplemented!(\"eterna-port:")?;
    let end = at + draft[at..].find("\")")? + 2;
    let answer = format!("{}loop {{}}{}", &draft[..at], &draft[end..]);
    Some(format!("```rust {target}\n{answer}\n```\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_says_what_it_is_and_who_wrote_it_in_the_events_status_and_store() {
    let (server, _) = model_server(fill_first_stub).await;
    let ws = fixture_copy();
    let mut cmd = llm_cmd(
        ws.path(),
        &server,
        &["--allow-no-vcs", "--message-format", "json"],
    );
    cmd.env("ETERNA_PORT_MODEL", "test/model-1");
    let out = run_async(cmd).await;
    assert_code(&out, 1);
    let summary = json(&out);
    let items: Vec<&Value> = summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["items"].as_array().unwrap())
        .collect();
    let by_agent: Vec<&&Value> = items
        .iter()
        .filter(|i| i["by"].as_str().is_some_and(|b| b.starts_with("agent:")))
        .collect();
    assert!(!by_agent.is_empty(), "no item credited to an agent");
    // (An item whose text the answer changed is the agent's, ported or not: a macro
    // with several stubs keeps the others.)
    assert!(by_agent.iter().any(|i| i["status"] == "ported"));
    for i in &by_agent {
        assert_eq!(i["model"], "test/model-1", "{i:#}");
        assert!(
            i["by"]
                .as_str()
                .unwrap()
                .starts_with("agent:EternaPortAgent#"),
            "{i:#}"
        );
    }
    // The stubs the answers left are still the engine's, and said to be stubs.
    assert!(
        items
            .iter()
            .any(|i| i["by"] == "engine" && i["status"] == "stubbed" && i["model"].is_null()),
        "no engine stub left"
    );
    assert!(
        items.iter().all(|i| i["by"].is_string()),
        "an item without its author"
    );

    // The store has the same items, authors and models.
    let rows = store_strings(
        ws.path(),
        "SELECT module || '|' || name || '|' || status || '|' || by || '|' || coalesce(model, '')
         FROM port_items ORDER BY id",
    );
    assert_eq!(rows.len(), items.len());
    let mut json_rows: Vec<String> = summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["items"].as_array().unwrap().iter().map(move |i| {
                format!(
                    "{}|{}|{}|{}|{}",
                    m["module_path"].as_str().unwrap(),
                    i["name"].as_str().unwrap(),
                    i["status"].as_str().unwrap(),
                    i["by"].as_str().unwrap(),
                    i["model"].as_str().unwrap_or("")
                )
            })
        })
        .collect();
    let mut rows = rows;
    rows.sort();
    json_rows.sort();
    assert_eq!(rows, json_rows);

    // `status` shows them: JSON per item, and per module for a person.
    let st = json(&run_async(command(ws.path(), &["status", "--message-format", "json"])).await);
    let st_items = st["last_run"]["items"].as_array().unwrap();
    assert_eq!(st_items.len(), items.len());
    assert!(st_items
        .iter()
        .any(|i| i["by"].as_str().unwrap_or("").starts_with("agent:")
            && i["model"] == "test/model-1"));
    let human = stdout(&run_async(command(ws.path(), &["status"])).await);
    assert!(human.contains("PORTED BY"), "{human}");
    assert!(human.contains("(test/model-1)"), "{human}");
}
