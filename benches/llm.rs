//! Benchmark of the LLM backend's own overhead (no model, no network: a local
//! OpenAI-compatible server on 127.0.0.1):
//! - extracting and validating a 3,000-line file from an answer (JSON envelope and
//!   fenced form; dominated by `syn` parsing),
//! - assembling a streamed answer of 4,000 SSE chunks,
//! - one non-streaming round trip.
//!
//! Run with `cargo bench --bench llm`; it prints medians. `ETERNA_BENCH_RUNS` changes
//! the repetitions.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use cargo_eterna_port::config::Secret;
use cargo_eterna_port::llm::extract::{extract_files, ExtractOptions};
use cargo_eterna_port::llm::{CancellationToken, ChatRequest, LlmClient, LlmSettings, Message};
use serde_json::json;
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn runs() -> usize {
    std::env::var("ETERNA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rust_file(lines: usize) -> String {
    let mut s = String::from("//! Generated VMX module.\n\n");
    let mut i = 0;
    while s.lines().count() < lines {
        let _ = write!(
            s,
            "/// VMCS field {i}.\npub const FIELD_{i}: u32 = {i};\n\n\
             pub fn vmread_{i}(v: u64) -> u64 {{\n    let x = v.wrapping_mul({i});\n    x ^ (x >> 7)\n}}\n\n"
        );
        i += 1;
    }
    s
}

fn main() {
    let runs = runs();
    let file = rust_file(3000);
    let target = "src/arch/x86_64/vmx.rs";
    let opts = ExtractOptions::for_targets([target]);
    let envelope = json!({"files": [{"path": target, "content": file}]}).to_string();
    let fenced = format!("Here is the port.\n\n```rust {target}\n{file}```\n");
    for (name, answer) in [("envelope", &envelope), ("fenced", &fenced)] {
        let times = (0..runs)
            .map(|_| {
                let t = Instant::now();
                let files = extract_files(answer, &opts).expect("valid answer");
                assert_eq!(files.len(), 1);
                t.elapsed()
            })
            .collect();
        println!(
            "extract {name:<8} 3,000-line file: median {:>8.2} ms",
            median(times).as_secs_f64() * 1e3
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let server = MockServer::start().await;
        let chunks = 4000;
        let mut sse = String::new();
        for i in 0..chunks {
            let _ = write!(
                sse,
                "data: {}\n\n",
                json!({"choices": [{"delta": {"content": format!("tok{i} ")}}]})
            );
        }
        sse.push_str("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":4000}}\n\ndata: [DONE]\n\n");
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"stream": true})))
            .respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream"))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"stream": false})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "model": "m",
                "choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1}
            })))
            .mount(&server)
            .await;
        let client = LlmClient::new(LlmSettings::new(
            format!("{}/v1", server.uri()),
            "m",
            vec![Secret::new("sk-bench".into())],
        ))
        .expect("client");
        let req = ChatRequest::new(vec![Message::user("port it")]);
        let cancel = CancellationToken::new();

        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let mut n = 0usize;
            let resp = client
                .chat_stream(&req, &cancel, &mut |_: &str| n += 1)
                .await
                .expect("stream");
            times.push(t.elapsed());
            assert_eq!(n, chunks);
            assert_eq!(resp.usage.completion_tokens, 4000);
        }
        let m = median(times);
        println!(
            "stream   {chunks} SSE chunks:         median {:>8.2} ms ({:.0} chunks/s)",
            m.as_secs_f64() * 1e3,
            chunks as f64 / m.as_secs_f64()
        );

        let mut times = Vec::new();
        for _ in 0..runs * 10 {
            let t = Instant::now();
            client.chat(&req, &cancel).await.expect("chat");
            times.push(t.elapsed());
        }
        println!(
            "chat     round trip (local):       median {:>8.2} ms",
            median(times).as_secs_f64() * 1e3
        );
    });
}
