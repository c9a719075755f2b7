//! `ask`, the ResearchAgent: offline on a temp copy of the reference fixture (the right
//! file among the first passages for questions whose answer lives in one file), and
//! with a scripted OpenAI-compatible model (wiremock on 127.0.0.1): the prompt carries
//! the numbered passages with path:lines, citations are checked, a refusal exits 1,
//! and the key is never shown.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A fake key: the server is local; the key only selects the LLM backend.
const KEY: &str = "sk-or-v1-ask-test-key-must-never-be-shown-0123456789";

fn ask_json(ws: &Path, question: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["ask", question, "--message-format", "json"];
    args.extend_from_slice(extra);
    let out = run(ws, &args);
    let v = json(&out);
    (out, v)
}

fn paths(v: &Value) -> Vec<String> {
    v["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn offline_the_right_file_is_among_the_first_three_passages() {
    let ws = copy_tree(&fixture_dir());
    let ws = ws.path();
    // (question, the one file whose code answers it)
    let cases = [
        (
            "how does the hypervisor inject a virtual interrupt into the guest through the GIC list registers?",
            "eterna/src/arch/aarch64/gic.rs",
        ),
        (
            "how are the stage-2 translation tables set up to map guest IPAs?",
            "eterna/src/arch/aarch64/stage2.rs",
        ),
        (
            "how does the hypervisor call PSCI to power CPUs on?",
            "eterna/src/arch/aarch64/psci.rs",
        ),
    ];
    for (question, file) in cases {
        // No index yet on the first question: `ask` builds it.
        let (out, v) = ask_json(ws, question, &[]);
        assert_code(&out, 0);
        assert_eq!(v["question"], question);
        assert!(v["answer"].is_null() && v["model"].is_null(), "{v:#}");
        assert_eq!(v["refused"], false);
        let passages = v["passages"].as_array().unwrap();
        assert_eq!(passages.len(), 5, "the default limit: {v:#}");
        for (i, p) in passages.iter().enumerate() {
            assert_eq!(p["n"], i + 1, "numbered from 1: {v:#}");
            let (start, end) = (
                p["start_line"].as_i64().unwrap(),
                p["end_line"].as_i64().unwrap(),
            );
            assert!(start >= 1 && end >= start, "{p:#}");
            assert!(!p["text"].as_str().unwrap().is_empty(), "{p:#}");
        }
        let top3 = &paths(&v)[..3];
        assert!(
            top3.iter().any(|p| p == file),
            "{question}: {file} not in the first three: {:#?}",
            paths(&v)
        );
        // The passage's lines are the file's: its text is there, at those lines.
        let p = passages.iter().find(|p| p["path"] == file).unwrap();
        let source = std::fs::read_to_string(ws.join(file)).unwrap();
        let lines: Vec<&str> = source.lines().collect();
        let (start, end) = (
            p["start_line"].as_u64().unwrap() as usize,
            p["end_line"].as_u64().unwrap() as usize,
        );
        let first = p["text"].as_str().unwrap().lines().next().unwrap();
        assert!(
            lines[start - 1..end].contains(&first),
            "{file}:{start}-{end} does not hold {first:?}"
        );
    }

    // Human: `[n] path:start-end  title`, then a few lines of the passage.
    let out = run(
        ws,
        &[
            "ask",
            "how are the stage-2 translation tables set up?",
            "-n",
            "3",
        ],
    );
    assert_code(&out, 0);
    let text = stdout(&out);
    let (_, v) = ask_json(
        ws,
        "how are the stage-2 translation tables set up?",
        &["-n", "3"],
    );
    assert_eq!(v["passages"].as_array().unwrap().len(), 3);
    for p in v["passages"].as_array().unwrap() {
        let head = format!(
            "[{}] {}:{}-{}  {}",
            p["n"],
            p["path"].as_str().unwrap(),
            p["start_line"],
            p["end_line"],
            p["title"].as_str().unwrap()
        );
        assert!(text.contains(&head), "no {head:?} in:\n{text}");
    }
    assert!(text.contains("│ "), "passage lines are shown:\n{text}");
}

#[test]
fn offline_brings_a_stale_index_up_to_date() {
    let ws = copy_tree(&fixture_dir());
    let ws = ws.path();
    assert_code(&run(ws, &["index", "-q"]), 0);
    // A document written after the index was built.
    write(
        ws,
        "docs/quuxification.md",
        b"# Quuxification\n\nThe zorblax handshake quuxifies every vCPU before its first entry.\n",
    );
    let (out, v) = ask_json(ws, "what does the zorblax handshake quuxify?", &["-n", "3"]);
    assert_code(&out, 0);
    let doc = v["passages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == "docs/quuxification.md")
        .unwrap_or_else(|| panic!("the new document is not found: {v:#}"));
    assert_eq!(doc["kind"], "doc");
    assert_eq!(doc["start_line"], 1);
    assert!(doc["text"].as_str().unwrap().contains("zorblax handshake"));
}

#[test]
fn an_empty_question_or_limit_is_a_usage_error() {
    let ws = copy_tree(&fixture_dir());
    for q in ["", "   "] {
        let out = run(ws.path(), &["ask", q]);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("QUESTION is empty"),
            "{}",
            stderr(&out)
        );
    }
    let out = run(ws.path(), &["ask", "how is the timer set up?", "-n", "0"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--limit 0"), "{}", stderr(&out));
    // Said before any workspace is looked for.
    let empty = workspace(&[]);
    let out = run(empty.path(), &["ask", ""]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("QUESTION is empty"),
        "{}",
        stderr(&out)
    );
    let out = run(ws.path(), &["ask"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("QUESTION"), "{}", stderr(&out));
}

fn completion(content: &str) -> Value {
    json!({
        "id": "gen-ask",
        "object": "chat.completion",
        "model": "scripted/research-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

/// A model server answering every chat request with `reply` (or `status`).
async fn model(status: u16, reply: &str) -> MockServer {
    let server = MockServer::start().await;
    let template = if status == 200 {
        ResponseTemplate::new(200).set_body_json(completion(reply))
    } else {
        ResponseTemplate::new(status).set_body_json(json!({"error": {"message": reply}}))
    };
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn ask_model(ws: &Path, server: &MockServer, args: &[&str]) -> Output {
    let mut all = vec!["ask"];
    all.extend_from_slice(args);
    let mut cmd = command(ws, &all);
    cmd.env("OPENROUTER_API_KEY", KEY)
        .env(
            "ETERNA_PORT_LLM_BASE_URL",
            format!("{}/api/v1", server.uri()),
        )
        .env("ETERNA_PORT_LLM_TIMEOUT", "10");
    tokio::task::spawn_blocking(move || cmd.output().expect("run cargo-eterna-port"))
        .await
        .unwrap()
}

async fn prompts(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn no_key(out: &Output) {
    assert!(!stdout(out).contains(KEY), "the key is on stdout");
    assert!(!stderr(out).contains(KEY), "the key is on stderr");
    assert!(
        !stdout(out).contains("ask-test-key"),
        "part of the key is shown"
    );
    assert!(
        !stderr(out).contains("ask-test-key"),
        "part of the key is shown"
    );
}

const QUESTION: &str = "how are virtual interrupts injected into the guest with list registers?";

#[tokio::test]
async fn the_model_answers_from_the_numbered_passages_and_bad_citations_are_dropped() {
    let ws = copy_tree(&fixture_dir());
    let server = model(
        200,
        "The hypervisor writes a list register [1]; see also the pitfalls [9].",
    )
    .await;
    let out = ask_model(ws.path(), &server, &[QUESTION, "--message-format", "json"]).await;
    assert_code(&out, 0);
    no_key(&out);
    let v = json(&out);
    assert_eq!(
        v["answer"],
        "The hypervisor writes a list register [1]; see also the pitfalls [9]."
    );
    assert_eq!(v["model"], "scripted/research-model");
    assert_eq!(v["refused"], false);
    assert_eq!(v["citations"], json!([1]), "[9] names no passage: {v:#}");
    let warnings = v["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("[9]")),
        "the dropped citation is said: {v:#}"
    );

    // One request; its prompt numbers every passage with its path and lines, and
    // carries the question and the refusal rule.
    let sent = prompts(&server).await;
    assert_eq!(sent.len(), 1, "one question, one request");
    let messages = sent[0]["messages"].as_array().unwrap();
    let user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap();
    let passages = v["passages"].as_array().unwrap();
    assert_eq!(passages.len(), 5);
    for p in passages {
        let head = format!(
            "## [{}] {}:{}-{}",
            p["n"],
            p["path"].as_str().unwrap(),
            p["start_line"],
            p["end_line"]
        );
        assert!(user.contains(&head), "no {head:?} in the prompt:\n{user}");
        let first = p["text"].as_str().unwrap().lines().next().unwrap();
        assert!(
            user.contains(first),
            "the passage's text is sent: {first:?}"
        );
    }
    assert!(user.contains(QUESTION));
    assert!(user.contains("NOT IN PASSAGES"));
    assert!(user.contains("ONLY"), "{user}");
    // The key goes in the header only, never in the body.
    assert!(!serde_json::to_string(&sent[0]).unwrap().contains(KEY));

    // Human: the answer first, then the passages, the uncited ones marked.
    let out = ask_model(ws.path(), &server, &[QUESTION]).await;
    assert_code(&out, 0);
    no_key(&out);
    let text = stdout(&out);
    let answer_at = text.find("writes a list register [1]").expect(&text);
    let first_passage = format!("[1] {}:", passages[0]["path"].as_str().unwrap());
    assert!(
        answer_at < text.find(&first_passage).expect(&text),
        "{text}"
    );
    assert!(text.contains("(not cited)"), "{text}");
    assert!(stderr(&out).contains("[9]"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_refusal_exits_1_and_is_kept() {
    let ws = copy_tree(&fixture_dir());
    let server = model(
        200,
        "NOT IN PASSAGES\nThe passages do not say how the port handles this on x86.",
    )
    .await;
    let out = ask_model(ws.path(), &server, &[QUESTION, "--message-format", "json"]).await;
    assert_code(&out, 1);
    no_key(&out);
    let v = json(&out);
    assert_eq!(v["refused"], true, "{v:#}");
    assert!(v["answer"].as_str().unwrap().starts_with("NOT IN PASSAGES"));
    assert_eq!(v["citations"], json!([]));
    assert!(!v["passages"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn backend_offline_asks_no_model_and_model_errors_show_no_key() {
    let ws = copy_tree(&fixture_dir());
    let server = model(200, "unused [1]").await;
    let out = ask_model(
        ws.path(),
        &server,
        &[QUESTION, "--backend", "offline", "--message-format", "json"],
    )
    .await;
    assert_code(&out, 0);
    let v = json(&out);
    assert!(v["answer"].is_null(), "{v:#}");
    assert!(prompts(&server).await.is_empty(), "offline asks no model");

    // Nothing to ground an answer in (only stop words): exit 1, no model asked.
    let out = ask_model(
        ws.path(),
        &server,
        &["the of and is", "--message-format", "json"],
    )
    .await;
    assert_code(&out, 1);
    let v = json(&out);
    assert_eq!(v["passages"], json!([]), "{v:#}");
    assert!(v["answer"].is_null(), "{v:#}");
    assert!(prompts(&server).await.is_empty(), "no passage, no request");
    let out = ask_model(
        ws.path(),
        &server,
        &["the of and is", "--backend", "offline"],
    )
    .await;
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("no passage found"),
        "{}",
        stdout(&out)
    );

    // The server refuses the key: exit 2, said, and the key not shown.
    let denied = model(401, "No auth credentials found").await;
    let out = ask_model(ws.path(), &denied, &[QUESTION]).await;
    assert_code(&out, 2);
    no_key(&out);
    assert!(
        stderr(&out).contains("401") || stderr(&out).contains("auth"),
        "{}",
        stderr(&out)
    );
}

/// The library call as the REST API makes it: on a session whose configuration points
/// at the scripted model, from inside an async runtime (the model is asked on a thread
/// of its own, so no runtime is started within this one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_call_answers_from_inside_an_async_runtime() {
    use cargo_eterna_port::config::{Config, Flags};
    use cargo_eterna_port::ops::ask::{self, AskOptions};
    use cargo_eterna_port::ops::{Session, SessionOptions};

    let ws = copy_tree(&fixture_dir());
    let server = model(200, "Through list registers [2].").await;
    let mut s = Session::open(&SessionOptions {
        manifest_path: Some(ws.path().join("Cargo.toml")),
        workspace: true,
        ..SessionOptions::default()
    })
    .unwrap();
    let base_url = format!("{}/api/v1", server.uri());
    let env = |var: &str| match var {
        "OPENROUTER_API_KEY" => Some(KEY.to_string()),
        "ETERNA_PORT_LLM_BASE_URL" => Some(base_url.clone()),
        _ => None,
    };
    s.config = Config::resolve(&s.ws, &Flags::default(), &env, &mut Vec::new()).unwrap();

    let answer = ask::run(&s, &AskOptions::new(QUESTION)).unwrap();
    assert_eq!(
        answer.answer.as_deref(),
        Some("Through list registers [2].")
    );
    assert_eq!(answer.citations, vec![2]);
    assert!(answer.found() && !answer.refused);
    assert_eq!(answer.passages.len(), ask::DEFAULT_LIMIT);
    assert_eq!(prompts(&server).await.len(), 1);
    let doc = serde_json::to_string(&answer).unwrap();
    assert!(!doc.contains(KEY), "the key is not in the answer");

    // Bad input is an error of its own kind, exit 2, before anything is asked.
    let err = ask::run(&s, &AskOptions::new("")).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("QUESTION"), "{err}");
    assert_eq!(prompts(&server).await.len(), 1);
}
