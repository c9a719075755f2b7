//! Prompt tokens per module on the bundled workspace (a temp copy), before and after
//! item grouping: `cargo eterna-port --backend llm` against a local OpenAI-compatible
//! server (wiremock on 127.0.0.1) with no prompt budget, a budget of 6000 and one of
//! 3000 tokens. Each module's first request per group is measured with the tool's own
//! estimate (`swarm::groups::estimate_tokens`: characters / 3, rounded up) over its
//! system and user messages. Printed: per module, the whole prompt's tokens, and per
//! budget the number of groups (requests), their total tokens and the largest group's.
//!
//! `cargo bench --bench prompts`: every module. Without `--bench` (as `cargo test
//! --all-targets` runs it): one component (`ETERNA_BENCH_COMPONENT`, else `timer`) as a
//! smoke test.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cargo_eterna_port::swarm::groups::estimate_tokens;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// (label, `ETERNA_PORT_PROMPT_BUDGET`): "none" is the setting's largest value.
const BUDGETS: [(&str, usize); 3] = [("none", 10_000_000), ("6000", 6000), ("3000", 3000)];

/// Per module: the tokens of each group's first request.
type Measured = BTreeMap<String, Vec<usize>>;

/// The module a port prompt is about (`…the ARM64 module `x` (…`).
fn module_of(user: &str) -> Option<String> {
    user.split("the ARM64 module `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .map(str::to_string)
}

fn measure(requests: &[wiremock::Request], label: &str) -> Measured {
    let mut out = Measured::new();
    for req in requests {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let Some(messages) = body["messages"].as_array() else {
            continue;
        };
        // The first ask of a task (a resend carries the answer and the reason too).
        if messages.len() != 2 {
            continue;
        }
        let text = |role: &str| {
            messages
                .iter()
                .find(|m| m["role"] == role)
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
        };
        let Some(module) = module_of(text("user")) else {
            continue;
        };
        // To read them: PROMPT_DUMP_DIR=dir cargo bench --bench prompts.
        if let Some(dir) = std::env::var_os("PROMPT_DUMP_DIR") {
            let n = out.get(&module).map_or(0, Vec::len) + 1;
            let file = std::path::Path::new(&dir)
                .join(format!("{}-{label}-{n}.md", module.replace("::", "_")));
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(file, format!("{}\n=====\n{}", text("system"), text("user")));
        }
        let tokens: usize = messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .map(estimate_tokens)
            .sum();
        out.entry(module).or_default().push(tokens);
    }
    out
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let fixture = common::fixture_dir();
    if !fixture.join("Cargo.toml").exists() {
        println!("prompts: the bundled workspace is not in this checkout; nothing to measure");
        return;
    }
    let component = std::env::var("ETERNA_BENCH_COMPONENT").unwrap_or_else(|_| "timer".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Answers hold no file: each is refused and the module keeps its draft; only the
    // prompts matter here.
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "gen-bench-prompts",
                "object": "chat.completion",
                "model": "test/prompts",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "No file today."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
            })))
            .mount(&server)
            .await;
        server
    });
    // One copy for every run: the drafts' check before prompting is made once.
    let ws = common::copy_tree(&fixture);
    let mut runs: Vec<Measured> = Vec::new();
    let mut seen = 0usize;
    for (label, budget) in BUDGETS {
        let mut args = vec![
            "--backend",
            "llm",
            "--allow-no-vcs",
            "--allow-dirty",
            "--no-cache",
            "--max-fix-iterations",
            "0",
            "--message-format",
            "json",
            "-q",
        ];
        if !bench {
            args.insert(0, component.as_str());
        }
        let out = common::command(ws.path(), &args)
            .env("OPENROUTER_API_KEY", "sk-bench-not-a-real-key")
            .env(
                "ETERNA_PORT_LLM_BASE_URL",
                format!("{}/api/v1", server.uri()),
            )
            .env("ETERNA_PORT_PROMPT_BUDGET", budget.to_string())
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "budget {label}: {}",
            common::stderr(&out)
        );
        let requests = rt.block_on(server.received_requests()).unwrap_or_default();
        let measured = measure(&requests[seen..], label);
        seen = requests.len();
        assert!(
            !measured.is_empty(),
            "budget {label}: no port prompt was sent"
        );
        runs.push(measured);
    }

    // Without a budget, one request per module; with one, groups within it where the
    // module's items allow (an item over the budget alone is a group of its own).
    assert!(runs[0].values().all(|g| g.len() == 1), "{:?}", runs[0]);
    let modules: Vec<&String> = runs[0].keys().collect();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "prompt tokens per module (estimate: characters / 3), bundled workspace{}",
        if bench {
            String::new()
        } else {
            format!(", component `{component}` (smoke run)")
        }
    );
    let _ = writeln!(
        table,
        "{:<36} {:>8} | {:>24} | {:>24}",
        "module", "tokens", "budget 6000: groups/total/max", "budget 3000: groups/total/max"
    );
    let mut totals = [(0usize, 0usize, 0usize); 3];
    for m in &modules {
        let whole = runs[0][*m][0];
        totals[0].0 += 1;
        totals[0].1 += whole;
        totals[0].2 = totals[0].2.max(whole);
        let mut cells = Vec::new();
        for (i, run) in runs.iter().enumerate().skip(1) {
            let groups = run.get(*m).cloned().unwrap_or_default();
            let total: usize = groups.iter().sum();
            let max = groups.iter().copied().max().unwrap_or(0);
            totals[i].0 += groups.len();
            totals[i].1 += total;
            totals[i].2 = totals[i].2.max(max);
            cells.push(format!("{:>3} / {:>6} / {:>6}", groups.len(), total, max));
        }
        let short = m.rsplit("::").next().unwrap_or(m);
        let _ = writeln!(
            table,
            "{:<36} {:>8} | {:>24} | {:>24}",
            short, whole, cells[0], cells[1]
        );
    }
    let _ = writeln!(
        table,
        "{:<36} {:>8} | {:>24} | {:>24}",
        format!("all ({} modules, {} requests)", totals[0].0, totals[0].0),
        totals[0].1,
        format!(
            "{:>3} / {:>6} / {:>6}",
            totals[1].0, totals[1].1, totals[1].2
        ),
        format!(
            "{:>3} / {:>6} / {:>6}",
            totals[2].0, totals[2].1, totals[2].2
        ),
    );
    print!("{table}");
    for (i, (label, budget)) in BUDGETS.iter().enumerate().skip(1) {
        let over: Vec<String> = runs[i]
            .iter()
            .flat_map(|(m, g)| {
                g.iter()
                    .filter(|t| **t > *budget)
                    .map(move |t| format!("{m}: {t}"))
            })
            .collect();
        if !over.is_empty() {
            println!(
                "budget {label}: {} group(s) over it (one item over the budget alone): {}",
                over.len(),
                over.join(", ")
            );
        }
    }
}
