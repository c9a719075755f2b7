//! The API contract end to end: `cargo eterna-port --backend llm` on a temp copy of the
//! bundled workspace, against a local OpenAI-compatible server (wiremock on 127.0.0.1)
//! whose answers keep or break the module's API.

use crate::common;

use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use cargo_eterna_port::engine::coverage::{items_of, ItemStatus};
use common::{assert_code, command, copy_tree, fixture_dir, json, stdout};
use serde_json::{json, Value};
use syn::spanned::Spanned;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-or-v1-contract-test-not-a-secret";
/// The component the tests port: one module whose draft has stubs and working items.
const COMPONENT: &str = "timer";
const ENGINE_STUB: &str = "unimplemented!(\"eterna-port";

fn user_messages(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "user")
                .filter_map(|m| m["content"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The target and the engine's draft a port prompt names.
fn target_and_draft(body: &Value) -> (String, String) {
    let first = user_messages(body).into_iter().next().unwrap_or_default();
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

/// The draft with every engine stub's call replaced by `loop {}`: a body for any
/// return type, so the answer fills every stub.
fn fill_stubs(draft: &str) -> String {
    let mut out = String::new();
    let mut rest = draft;
    while let Some(at) = rest.find(ENGINE_STUB) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        // The end of the string literal: a `")` whose quote is not escaped.
        let end = tail
            .match_indices("\")")
            .find(|(i, _)| !tail[..*i].ends_with('\\'))
            .map(|(i, _)| i + 2)
            .expect("a closed stub");
        out.push_str("loop {}");
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The draft's first `pub const` and first `pub` method with a working body (names as
/// the coverage has them), and the filled draft without both.
fn without_two_working_items(draft: &str) -> (Vec<String>, String) {
    let file = syn::parse_file(draft).expect("the draft parses");
    let mut cut: Vec<(String, std::ops::Range<usize>)> = Vec::new();
    if let Some((name, r)) = file.items.iter().find_map(|i| match i {
        syn::Item::Const(c) if matches!(c.vis, syn::Visibility::Public(_)) => {
            Some((c.ident.to_string(), i.span().byte_range()))
        }
        _ => None,
    }) {
        cut.push((name, r));
    }
    'impls: for item in &file.items {
        let syn::Item::Impl(im) = item else { continue };
        if im.trait_.is_some() {
            continue;
        }
        for ii in &im.items {
            let syn::ImplItem::Fn(f) = ii else { continue };
            let body = &draft[f.block.span().byte_range()];
            if matches!(f.vis, syn::Visibility::Public(_)) && !body.contains("unimplemented!") {
                let ty = match &*im.self_ty {
                    syn::Type::Path(p) => p.path.segments.last().unwrap().ident.to_string(),
                    _ => continue,
                };
                cut.push((format!("{ty}::{}", f.sig.ident), ii.span().byte_range()));
                break 'impls;
            }
        }
    }
    assert_eq!(
        cut.len(),
        2,
        "the draft has a pub const and a working pub method"
    );
    let mut text = draft.to_string();
    cut.sort_by_key(|(_, r)| std::cmp::Reverse(r.start));
    for (_, r) in &cut {
        text.replace_range(r.clone(), "");
    }
    let names = cut.into_iter().rev().map(|(n, _)| n).collect();
    (names, fill_stubs(&text))
}

/// A model answering the port prompt of the test's module with `answer(draft)`,
/// recording every request body.
struct Model {
    answer: fn(&str) -> String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Respond for Model {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let (target, draft) = target_and_draft(&body);
        self.bodies.lock().unwrap().push(body);
        let content = format!("```rust {target}\n{}\n```\n", (self.answer)(&draft));
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "gen-contract",
            "object": "chat.completion",
            "model": "test/contract",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 100, "total_tokens": 200}
        }))
    }
}

async fn server(answer: fn(&str) -> String) -> (MockServer, Arc<Mutex<Vec<Value>>>) {
    let server = MockServer::start().await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(Model {
            answer,
            bodies: bodies.clone(),
        })
        .mount(&server)
        .await;
    (server, bodies)
}

async fn port(ws: &Path, server: &MockServer, json_format: bool) -> Output {
    let mut args = vec![
        COMPONENT,
        "--allow-no-vcs",
        "--allow-dirty",
        "--max-fix-iterations",
        "0",
    ];
    if json_format {
        args.extend(["--message-format", "json"]);
    }
    let mut cmd = command(ws, &args);
    cmd.env("OPENROUTER_API_KEY", KEY).env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    );
    tokio::task::spawn_blocking(move || cmd.output().expect("run cargo-eterna-port"))
        .await
        .unwrap()
}

fn only_module(summary: &Value) -> (Value, Value) {
    let modules = summary["modules"].as_array().unwrap();
    let tasks = summary["tasks"].as_array().unwrap();
    assert_eq!((modules.len(), tasks.len()), (1, 1), "{summary:#}");
    (modules[0].clone(), tasks[0].clone())
}

fn broken_answer(draft: &str) -> String {
    without_two_working_items(draft).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_missing_api_items_is_sent_back_once_then_merged_with_the_draft() {
    let (server, bodies) = server(broken_answer).await;
    let ws = copy_tree(&fixture_dir());
    let out = port(ws.path(), &server, true).await;
    // Every stub is filled and nothing failed: only the contract makes it exit 1.
    assert_code(&out, 1);
    let summary = json(&out);
    assert_eq!(summary["coverage"]["unported"], 0, "{summary:#}");
    let (module, task) = only_module(&summary);

    // Exactly two requests: the answer, and the resend naming what it lacks.
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    let (_, draft) = target_and_draft(&bodies[0]);
    let (removed, first_answer) = without_two_working_items(&draft);
    assert_eq!(user_messages(&bodies[0]).len(), 1);
    let resend = user_messages(&bodies[1]);
    assert_eq!(resend.len(), 2, "the answer was sent back once");
    let list = &resend[1];
    for name in &removed {
        assert!(
            list.contains(&format!("`{name}`")),
            "{name} not named:\n{list}"
        );
    }
    assert!(list.contains("Missing"), "{list}");
    assert_eq!(task["requests"], 2);
    assert_eq!(task["attempts"], 2);
    assert_eq!(task["status"], "done");
    assert_eq!(task["files_from"], "merged");

    // The written file: the answer's bodies, and the draft's items it lacked.
    let target = module["target"].as_str().unwrap();
    let written = std::fs::read_to_string(ws.path().join(target)).unwrap();
    assert_ne!(written.trim_end(), first_answer.trim_end());
    syn::parse_file(&written).expect("the written file parses");
    assert!(!written.contains(ENGINE_STUB), "{written}");
    assert!(written.contains("loop {}"), "the answer's bodies are kept");
    for name in &removed {
        let short = name.rsplit("::").next().unwrap();
        assert!(
            written.contains(&format!("const {short}:"))
                || written.contains(&format!("fn {short}(")),
            "{name} is not in the written file:\n{written}"
        );
    }
    let contract = &task["contract"];
    assert_eq!(contract["resent"], true);
    let listed = |key: &str| -> Vec<String> {
        contract[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(listed("missing"), removed, "{contract:#}");
    for name in &removed {
        assert!(listed("kept_from_draft").contains(name), "{contract:#}");
    }

    // The true count, from the file written.
    let items = items_of(&written);
    let ported = items
        .iter()
        .filter(|i| i.status == ItemStatus::Ported)
        .count();
    assert_eq!(module["items_ported"], ported, "{module:#}");
    assert_eq!(module["items_total"], items.len(), "{module:#}");
    let draft_ported = items_of(&draft)
        .iter()
        .filter(|i| i.status == ItemStatus::Ported)
        .count();
    assert!(ported >= draft_ported, "{ported} < {draft_ported}");

    // An unchanged re-run takes both answers from the cache and says the same, in
    // words: which module, how many items were kept from the draft.
    let again = port(ws.path(), &server, false).await;
    assert_code(&again, 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let text = stdout(&again);
    let line = text
        .lines()
        .find(|l| l.contains("API contract"))
        .unwrap_or_else(|| panic!("no contract line:\n{text}"));
    assert!(
        line.contains(task["module"].as_str().unwrap())
            && line.contains(&format!(
                "{} item(s) kept from the engine's draft",
                listed("kept_from_draft").len()
            )),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_keeps_the_api_and_fills_every_stub_is_written_as_answered() {
    let (server, bodies) = server(fill_stubs).await;
    let ws = copy_tree(&fixture_dir());
    let out = port(ws.path(), &server, true).await;
    assert_code(&out, 0);
    let summary = json(&out);
    let (module, task) = only_module(&summary);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "no resend");
    let (_, draft) = target_and_draft(&bodies[0]);
    assert!(draft.contains(ENGINE_STUB), "the draft had stubs to fill");
    assert_eq!(task["files_from"], "model");
    assert!(task.get("contract").is_none(), "{task:#}");
    let written =
        std::fs::read_to_string(ws.path().join(module["target"].as_str().unwrap())).unwrap();
    assert_eq!(written.trim_end(), fill_stubs(&draft).trim_end());
    assert_eq!(summary["coverage"]["unported"], 0, "{summary:#}");
    assert_eq!(module["items_ported"], module["items_total"]);
}
