//! The prompt budget end to end: `cargo eterna-port --backend llm` on a temp copy of
//! the bundled workspace against a local OpenAI-compatible server (wiremock on
//! 127.0.0.1). A module whose port prompt is over `ETERNA_PORT_PROMPT_BUDGET` is sent
//! as groups of its items, each request within the budget and naming only its group's
//! items; the answers are merged into the draft item by item; a group whose answer is
//! junk keeps the draft's items. Without a (small) budget, one request per module.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};

use cargo_eterna_port::engine::coverage::{items_of, ItemStatus};
use cargo_eterna_port::swarm::groups::estimate_tokens;
use common::{assert_code, command, copy_tree, fixture_dir, json, json_lines};
use serde_json::{json, Value};
use syn::spanned::Spanned;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-or-v1-groups-test-not-a-secret";
/// One module whose draft has several stubs (its whole prompt is about 8 500 tokens).
const COMPONENT: &str = "timer";
const ENGINE_STUB: &str = "unimplemented!(\"eterna-port";
const BUDGET: usize = 3000;

fn messages(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["role"].as_str().unwrap_or_default().to_string(),
                        m["content"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn first_user(body: &Value) -> String {
    messages(body)
        .into_iter()
        .find(|(r, _)| r == "user")
        .map(|(_, c)| c)
        .unwrap_or_default()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    text.split(start).nth(1).and_then(|r| r.split(end).next())
}

/// A group prompt's part (`Port part 2 of 4 of …`): (index, count).
fn part_of(user: &str) -> Option<(usize, usize)> {
    let r = between(user, "Port part ", " of the ARM64 module")?;
    let (i, n) = r.split_once(" of ")?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// The items a group prompt asks for.
fn asked_items(user: &str) -> Vec<String> {
    between(user, "Your task: only these items of the module: ", ".\n")
        .map(|l| {
            l.split(", ")
                .map(|i| i.trim_matches('`').to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `text` with every engine stub's call replaced by `loop {}`.
fn fill_stubs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(ENGINE_STUB) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
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

/// The answer to a group prompt: its `use` lines and the asked items from the trimmed
/// draft it shows, every stub filled.
fn group_answer(user: &str, omit_first: bool) -> String {
    let mut items = asked_items(user);
    if omit_first {
        items.remove(0);
    }
    let excerpt = between(user, "trimmed to this part\n", "\n```\n")
        .and_then(|r| r.split("```rust\n").nth(1))
        .expect("a trimmed draft")
        // The outlines of other items (`fn f() { … }`) as Rust.
        .replace("{ … }", "{ loop {} }");
    let file = syn::parse_file(&excerpt).unwrap_or_else(|e| panic!("{e}:\n{excerpt}"));
    let text = |node: &dyn Spanned| excerpt[node.span().byte_range()].to_string();
    let mut out = String::new();
    for item in &file.items {
        match item {
            syn::Item::Use(u) => out.push_str(&format!("{}\n", text(u))),
            syn::Item::Fn(f) if items.contains(&f.sig.ident.to_string()) => {
                out.push_str(&format!("\n{}\n", text(f)));
            }
            syn::Item::Impl(im) => {
                let syn::Type::Path(p) = &*im.self_ty else {
                    continue;
                };
                let ty = p.path.segments.last().unwrap().ident.to_string();
                let members: Vec<String> = im
                    .items
                    .iter()
                    .filter_map(|ii| match ii {
                        syn::ImplItem::Fn(f)
                            if items.contains(&format!("{ty}::{}", f.sig.ident)) =>
                        {
                            Some(text(ii))
                        }
                        _ => None,
                    })
                    .collect();
                if !members.is_empty() {
                    out.push_str(&format!(
                        "\nimpl {ty} {{\n    {}\n}}\n",
                        members.join("\n    ")
                    ));
                }
            }
            _ => {}
        }
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    fill_stubs(&out)
}

/// A model answering port prompts: a group prompt with [`group_answer`] (junk for
/// the groups in `junk`, without the first item for those in `omit`, every time), a
/// whole-module prompt with its draft, stubs filled.
struct Model {
    junk: Vec<usize>,
    omit: Vec<usize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Respond for Model {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        self.bodies.lock().unwrap().push(body.clone());
        let user = first_user(&body);
        let content = match part_of(&user) {
            Some((i, _)) if self.junk.contains(&i) => "No code today, sorry.".to_string(),
            Some((i, _)) => {
                let target = between(&user, "whose info string is `", "`").unwrap();
                let answer = group_answer(&user, self.omit.contains(&i));
                format!("```rust {target}\n{answer}```\n")
            }
            None => {
                let target = between(&user, "Write exactly this file: `", "`").unwrap();
                let draft = between(&user, "draft of `", "\n```\n")
                    .and_then(|r| r.split("```rust\n").nth(1))
                    .unwrap();
                format!("```rust {target}\n{}\n```\n", fill_stubs(draft))
            }
        };
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "gen-groups",
            "object": "chat.completion",
            "model": "test/groups",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 100, "total_tokens": 200}
        }))
    }
}

async fn server(junk: Vec<usize>, omit: Vec<usize>) -> (MockServer, Arc<Mutex<Vec<Value>>>) {
    let server = MockServer::start().await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/api/v1/chat/completions"))
        .respond_with(Model {
            junk,
            omit,
            bodies: bodies.clone(),
        })
        .mount(&server)
        .await;
    (server, bodies)
}

async fn port(ws: &Path, server: &MockServer, budget: Option<usize>) -> Output {
    let mut cmd = command(
        ws,
        &[
            COMPONENT,
            "--allow-no-vcs",
            "--allow-dirty",
            "--no-cache",
            "--max-fix-iterations",
            "0",
            "--message-format",
            "json",
        ],
    );
    cmd.env("OPENROUTER_API_KEY", KEY).env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("{}/api/v1", server.uri()),
    );
    if let Some(b) = budget {
        cmd.env("ETERNA_PORT_PROMPT_BUDGET", b.to_string());
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run cargo-eterna-port"))
        .await
        .unwrap()
}

/// The first ask of each task (a rejected answer's retry carries the answer too).
fn first_asks(bodies: &[Value]) -> Vec<Value> {
    bodies
        .iter()
        .filter(|b| messages(b).len() == 2)
        .cloned()
        .collect()
}

/// The only module's report and task in the summary.
fn only_module(summary: &Value) -> (Value, Value) {
    let modules = summary["modules"].as_array().unwrap();
    let tasks = summary["tasks"].as_array().unwrap();
    assert_eq!((modules.len(), tasks.len()), (1, 1), "{summary:#}");
    (modules[0].clone(), tasks[0].clone())
}

/// The names of the engine's stubs in a text.
fn stubbed(text: &str) -> BTreeSet<String> {
    items_of(text)
        .into_iter()
        .filter(|i| {
            i.status == ItemStatus::Stubbed
                && i.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("eterna-port"))
        })
        .map(|i| i.name)
        .collect()
}

/// The module's groups as the requests show them: (index, count, items), by index.
fn groups_asked(asks: &[Value]) -> Vec<(usize, usize, Vec<String>)> {
    let mut groups: Vec<(usize, usize, Vec<String>)> = asks
        .iter()
        .map(|b| {
            let user = first_user(b);
            let (i, n) = part_of(&user).unwrap_or_else(|| panic!("not a group prompt:\n{user}"));
            (i, n, asked_items(&user))
        })
        .collect();
    groups.sort();
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_over_the_budget_goes_in_groups_within_it_and_is_merged_whole() {
    let (server, bodies) = server(Vec::new(), Vec::new()).await;
    let ws = copy_tree(&fixture_dir());
    let out = port(ws.path(), &server, Some(BUDGET)).await;
    assert_code(&out, 0);
    let summary = json(&out);
    let (module, task) = only_module(&summary);
    let target = module["target"].as_str().unwrap();
    // The engine's draft, as the tool writes it without a model (for its stubs).
    let offline = copy_tree(&fixture_dir());
    let draft_out = command(
        offline.path(),
        &[
            COMPONENT,
            "--allow-no-vcs",
            "--max-fix-iterations",
            "0",
            "-q",
        ],
    )
    .output()
    .unwrap();
    assert!(matches!(draft_out.status.code(), Some(0 | 1)));
    let draft = std::fs::read_to_string(offline.path().join(target)).unwrap();
    let stubs = stubbed(&draft);
    assert!(stubs.len() >= 4, "the draft has stubs to split: {stubs:?}");

    // Several requests, each within the budget, each naming only its group's items.
    let bodies = bodies.lock().unwrap().clone();
    let asks = first_asks(&bodies);
    assert_eq!(
        asks.len(),
        bodies.len(),
        "no answer was refused or sent back"
    );
    assert!(asks.len() >= 2, "{} request(s)", asks.len());
    let groups = groups_asked(&asks);
    let count = groups.len();
    assert!(
        groups
            .iter()
            .enumerate()
            .all(|(k, (i, n, _))| *i == k + 1 && *n == count),
        "{groups:?}"
    );
    let mut all: Vec<String> = groups.iter().flat_map(|(_, _, g)| g.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        stubs.iter().cloned().collect::<Vec<_>>(),
        "every stub in exactly one group"
    );
    for b in &asks {
        let tokens: usize = messages(b).iter().map(|(_, c)| estimate_tokens(c)).sum();
        assert!(tokens <= BUDGET, "a request of {tokens} tokens");
        let user = first_user(b);
        let mine = asked_items(&user);
        // The group's stubs are shown (their engine message names them), no other's.
        for stub in &stubs {
            let short = stub.rsplit("::").next().unwrap();
            let shown = user.contains(&format!("eterna-port: `{short}`"));
            assert_eq!(shown, mine.contains(stub), "{stub} in {mine:?}:\n{user}");
        }
        assert!(!user.contains("Write exactly this file"), "{user}");
    }
    // The model saw each group as its own task.
    let finished: Vec<String> = json_lines(&out)
        .iter()
        .filter(|e| e["reason"] == "task-finished")
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect();
    let base = task["task"].as_str().unwrap();
    assert_eq!(
        base,
        format!("{}#port", module["module_path"].as_str().unwrap())
    );
    for k in 1..=count {
        assert!(
            finished.contains(&format!("{base}.{k}of{count}")),
            "{finished:?}"
        );
    }

    // One task in the summary, the file written once with every group's items.
    assert_eq!(task["status"], "done", "{task:#}");
    assert_eq!(task["files_from"], "model", "{task:#}");
    assert_eq!(task["requests"], count);
    let written = std::fs::read_to_string(ws.path().join(target)).unwrap();
    syn::parse_file(&written).expect("the written file parses");
    assert!(stubbed(&written).is_empty(), "{written}");
    assert_eq!(written.matches("loop {}").count(), stubs.len(), "{written}");
    // The draft's other items are there as they were.
    let kept: Vec<String> = items_of(&draft)
        .into_iter()
        .filter(|i| i.status == ItemStatus::Ported)
        .map(|i| i.name)
        .collect();
    let now: Vec<String> = items_of(&written).into_iter().map(|i| i.name).collect();
    for k in &kept {
        assert!(now.contains(k), "{k} is gone:\n{written}");
    }
    assert_eq!(summary["coverage"]["unported"], 0, "{summary:#}");
    assert_eq!(module["items_ported"], module["items_total"]);
    assert_eq!(module["items_total"], now.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_junk_answer_keeps_the_drafts_items_the_others_are_ported() {
    let (server, bodies) = server(vec![1], Vec::new()).await;
    let ws = copy_tree(&fixture_dir());
    let out = port(ws.path(), &server, Some(BUDGET)).await;
    assert_code(&out, 1);
    let summary = json(&out);
    let (module, task) = only_module(&summary);
    let bodies = bodies.lock().unwrap().clone();
    let asks = first_asks(&bodies);
    let groups = groups_asked(&asks);
    assert!(groups.len() >= 2, "{groups:?}");
    // The junk answer was refused and asked again once; the others answered at once.
    assert_eq!(bodies.len(), asks.len() + 1, "one retry of the junk group");
    let junk: &Vec<String> = &groups[0].2;
    let ported: Vec<String> = groups[1..].iter().flat_map(|(_, _, g)| g.clone()).collect();

    let written =
        std::fs::read_to_string(ws.path().join(module["target"].as_str().unwrap())).unwrap();
    syn::parse_file(&written).expect("the written file parses");
    let left = stubbed(&written);
    assert_eq!(
        left,
        junk.iter().cloned().collect::<BTreeSet<_>>(),
        "the junk group's items keep the draft's stubs:\n{written}"
    );
    for p in &ported {
        assert!(!left.contains(p), "{p} is not ported");
    }
    assert_eq!(
        written.matches("loop {}").count(),
        ported.len(),
        "{written}"
    );
    assert_eq!(summary["coverage"]["unported"], junk.len(), "{summary:#}");

    // The module's one task failed in part and says which part, and why.
    assert_eq!(task["status"], "failed", "{task:#}");
    assert_eq!(task["files_from"], "merged", "{task:#}");
    let error = task["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("part 1 of {}", groups.len()))
            && error.contains("keep the offline draft"),
        "{error}"
    );
    let kept: Vec<String> = task["contract"]["kept_from_draft"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(&kept, junk, "{task:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_answer_missing_an_item_is_sent_back_for_that_group_only() {
    let (server, bodies) = server(Vec::new(), vec![2]).await;
    let ws = copy_tree(&fixture_dir());
    let out = port(ws.path(), &server, Some(BUDGET)).await;
    assert_code(&out, 1);
    let summary = json(&out);
    let (module, task) = only_module(&summary);
    let bodies = bodies.lock().unwrap().clone();
    let asks = first_asks(&bodies);
    let groups = groups_asked(&asks);
    assert!(groups.len() >= 2, "{groups:?}");
    let omitted = groups[1].2[0].clone();
    // Group 2 was sent back once, naming only what it lacks; no other group was.
    assert_eq!(bodies.len(), asks.len() + 1, "one resend");
    let resend = bodies
        .iter()
        .find(|b| messages(b).len() == 4)
        .map(|b| messages(b)[3].1.clone())
        .unwrap();
    assert!(
        resend.contains(&format!("part 2 of {}", groups.len()))
            && resend.contains("Missing from your answer")
            && resend.contains(&format!("`{omitted}`")),
        "{resend}"
    );
    for (_, _, items) in groups.iter().filter(|(i, _, _)| *i != 2) {
        for item in items {
            assert!(!resend.contains(&format!("`{item}`")), "{item}: {resend}");
        }
    }
    // The item it never gave keeps the draft's stub; the group's others are ported.
    let written =
        std::fs::read_to_string(ws.path().join(module["target"].as_str().unwrap())).unwrap();
    assert_eq!(
        stubbed(&written),
        BTreeSet::from([omitted.clone()]),
        "{written}"
    );
    assert_eq!(task["status"], "done", "{task:#}");
    assert_eq!(task["files_from"], "merged");
    assert_eq!(task["contract"]["resent"], true);
    assert_eq!(task["contract"]["missing"], json!([omitted]));
    assert_eq!(task["contract"]["kept_from_draft"], json!([omitted]));
    assert_eq!(summary["coverage"]["unported"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_small_budget_a_module_is_one_request_as_before() {
    for budget in [None, Some(10_000_000)] {
        let (server, bodies) = server(Vec::new(), Vec::new()).await;
        let ws = copy_tree(&fixture_dir());
        let out = port(ws.path(), &server, budget).await;
        assert_code(&out, 0);
        let summary = json(&out);
        let (module, task) = only_module(&summary);
        let bodies = bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 1, "budget {budget:?}");
        let user = first_user(&bodies[0]);
        assert!(
            user.contains("Write exactly this file") && part_of(&user).is_none(),
            "{user}"
        );
        let tokens: usize = messages(&bodies[0])
            .iter()
            .map(|(_, c)| estimate_tokens(c))
            .sum();
        assert!(
            tokens > BUDGET,
            "the whole prompt ({tokens}) is over the small budget"
        );
        assert_eq!(
            task["task"],
            format!("{}#port", module["module_path"].as_str().unwrap())
        );
        assert_eq!(task["files_from"], "model");
        assert_eq!(summary["coverage"]["unported"], 0);
    }
}
