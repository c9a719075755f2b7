//! The LLM client against a local OpenAI-compatible server (wiremock on 127.0.0.1; no
//! test reaches the network), and the extraction of files from answers.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cargo_eterna_port::config::{Backend, Config, Secret, Setting, Source};
use cargo_eterna_port::llm::extract::{extract_files, ExtractError, ExtractOptions};
use cargo_eterna_port::llm::{
    CancellationToken, ChatRequest, LlmClient, LlmError, LlmSettings, Message, Notice,
};
use common::trickle::{self, Step, Trickle};
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEYS: [&str; 3] = [
    "sk-or-v1-aaaa-secret-key-one",
    "sk-or-v1-bbbb-secret-key-two",
    "sk-or-v1-cccc-secret-key-three",
];

fn settings(server: &MockServer, keys: &[&str]) -> LlmSettings {
    let mut s = LlmSettings::new(
        format!("{}/api/v1", server.uri()),
        "x-ai/grok-4-fast",
        keys.iter().map(|k| Secret::new(k.to_string())).collect(),
    );
    s.timeout = Duration::from_secs(5);
    s.backoff_base = Duration::from_millis(1);
    s.backoff_max = Duration::from_millis(5);
    s.default_cooldown = Duration::from_millis(20);
    s.max_attempts = 3;
    s
}

fn client(server: &MockServer, keys: &[&str]) -> LlmClient {
    LlmClient::new(settings(server, keys)).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::system("You port ARM64 hypervisors to x86_64."),
            Message::user("Port the GIC driver."),
        ],
        temperature: Some(0.2),
        max_tokens: Some(256),
        model: None,
    }
}

fn completion(content: &str) -> Value {
    json!({
        "id": "gen-1",
        "object": "chat.completion",
        "model": "x-ai/grok-4-fast",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "cost": 0.00042}
    })
}

fn ok(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(content))
}

fn bearer(req: &Request) -> String {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn used_keys(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(bearer)
        .collect()
}

fn chat_path() -> wiremock::matchers::PathExactMatcher {
    path("/api/v1/chat/completions")
}

#[tokio::test]
async fn happy_path_sends_an_openai_request_with_openrouter_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(chat_path())
        .and(header(
            "authorization",
            format!("Bearer {}", KEYS[0]).as_str(),
        ))
        .and(header(
            "http-referer",
            "https://crates.io/crates/cargo-eterna-port",
        ))
        .and(header("x-title", "cargo-eterna-port"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "model": "x-ai/grok-4-fast",
            "messages": [
                {"role": "system", "content": "You port ARM64 hypervisors to x86_64."},
                {"role": "user", "content": "Port the GIC driver."}
            ],
            "max_tokens": 256,
            "stream": false
        })))
        .respond_with(ok("mod vmx;"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let resp = c.chat(&request(), &CancellationToken::new()).await.unwrap();
    assert_eq!(resp.content, "mod vmx;");
    assert_eq!(resp.model, "x-ai/grok-4-fast");
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(resp.key_index, 0);
    assert_eq!(resp.attempts, 1);
    assert_eq!(resp.usage.prompt_tokens, 12);
    assert_eq!(resp.usage.completion_tokens, 5);
    assert_eq!(resp.usage.total_tokens, 17);
    assert_eq!(resp.usage.cost, Some(0.00042));
    let body: Value = server.received_requests().await.unwrap()[0]
        .body_json()
        .unwrap();
    assert!((body["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
    assert!(
        body.get("usage").is_none(),
        "OpenRouter's usage field only goes to OpenRouter"
    );
}

#[tokio::test]
async fn keys_are_used_in_rotation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(chat_path())
        .respond_with(ok("ok"))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS);
    let cancel = CancellationToken::new();
    let mut indices = Vec::new();
    for _ in 0..4 {
        indices.push(c.chat(&request(), &cancel).await.unwrap().key_index);
    }
    assert_eq!(indices, [0, 1, 2, 0]);
    let keys = used_keys(&server).await;
    let expected: Vec<String> = [0, 1, 2, 0]
        .iter()
        .map(|&i| format!("Bearer {}", KEYS[i]))
        .collect();
    assert_eq!(
        keys, expected,
        "3 requests carry 3 different keys, then wrap"
    );
}

#[tokio::test]
async fn rate_limited_key_cools_down_for_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {}", KEYS[0]).as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "120")
                .set_body_json(json!({"error": {"message": "Rate limit exceeded", "code": 429}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {}", KEYS[1]).as_str(),
        ))
        .respond_with(ok("from key two"))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..2]);
    let cancel = CancellationToken::new();
    let first = c.chat(&request(), &cancel).await.unwrap();
    assert_eq!(first.content, "from key two");
    assert_eq!(first.key_index, 1);
    assert_eq!(first.attempts, 2, "the 429 counts as an attempt");
    // Key one is cooling down for 120 s: the next requests all use key two.
    for _ in 0..3 {
        assert_eq!(c.chat(&request(), &cancel).await.unwrap().key_index, 1);
    }
    let keys = used_keys(&server).await;
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(KEYS[0])).count(),
        1,
        "the rate-limited key is not used again during its Retry-After"
    );
}

#[tokio::test]
async fn single_rate_limited_key_waits_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_string("slow down"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok("after the wait"))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let start = Instant::now();
    let resp = c.chat(&request(), &CancellationToken::new()).await.unwrap();
    assert_eq!(resp.content, "after the wait");
    assert!(
        start.elapsed() >= Duration::from_millis(20),
        "waited for the default cool-down (no Retry-After)"
    );
}

#[tokio::test]
async fn rate_limit_longer_than_the_wait_bound_fails_clearly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "3600")
                .set_body_json(json!({"error": {"message": "daily limit reached"}})),
        )
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.max_key_wait = Duration::from_secs(1);
    let c = LlmClient::new(s).unwrap();
    let start = Instant::now();
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(err, LlmError::RateLimited { attempts: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("rate-limiting") && msg.contains("daily limit reached"),
        "{msg}"
    );
    assert!(msg.contains(c.endpoint()), "{msg}");
}

#[tokio::test]
async fn refused_key_is_disabled_for_the_run() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "authorization",
            format!("Bearer {}", KEYS[1]).as_str(),
        ))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "User not found.", "code": 401}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok("ok"))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS);
    let cancel = CancellationToken::new();
    let mut indices = Vec::new();
    for _ in 0..5 {
        indices.push(c.chat(&request(), &cancel).await.unwrap().key_index);
    }
    assert_eq!(indices, [0, 2, 0, 2, 0]);
    let keys = used_keys(&server).await;
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(KEYS[1])).count(),
        1,
        "key two is never used after its 401"
    );
}

#[tokio::test]
async fn all_keys_refused_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"error": {"message": "Key disabled"}})),
        )
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..2]);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::AllKeysRefused {
                keys: 2,
                status: 403,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("all 2 API keys") && msg.contains("Key disabled"),
        "{msg}"
    );
    assert!(msg.contains("OPENROUTER_API_KEY"), "says what to do: {msg}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // The client has stopped: later requests fail at once, not sent, saying why.
    assert_eq!(c.stopped().as_deref(), Some(msg.as_str()));
    let again = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(again, LlmError::NotSent { .. }), "{again:?}");
    assert_eq!(again.to_string(), format!("not sent: {msg}"));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// Collects the client's notices.
fn notices(c: &LlmClient) -> Arc<Mutex<Vec<Notice>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    c.on_notice(move |n| sink.lock().unwrap().push(n.clone()));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_costs_one_request_however_many_agents_ask_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": "No auth credentials found"}}))
                .set_delay(Duration::from_millis(200)),
        )
        .mount(&server)
        .await;
    // The refusal comes within the key's grace period (a refusal is quick; here it is
    // slowed down so that the twelve agents certainly ask while it is on its way).
    let mut s = settings(&server, &KEYS[..2]);
    s.probation_grace = Some(Duration::from_secs(2));
    let c = Arc::new(LlmClient::new(s).unwrap());
    let seen = notices(&c);
    let asks = (0..12).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.chat(&request(), &CancellationToken::new()).await })
    });
    let errors: Vec<LlmError> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap_err())
        .collect();
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "one request per key, not one per agent"
    );
    assert!(
        errors.iter().all(|e| matches!(
            e,
            LlmError::AllKeysRefused { .. } | LlmError::NotSent { .. }
        )),
        "{errors:?}"
    );
    assert!(errors.iter().all(LlmError::stops_requests));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "said once: {seen:?}");
    assert!(
        matches!(&seen[0], Notice::Stopped { message } if message.contains("No auth credentials found") && message.contains("OPENROUTER_API_KEY")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_accepted_carries_requests_in_parallel() {
    let server = MockServer::start().await;
    let slot = Arc::new(OneSlot {
        slow: Duration::from_millis(300),
        fast: Duration::from_millis(300),
        state: Mutex::new((Instant::now(), Vec::new())),
    });
    Mock::given(method("POST"))
        .respond_with(Shared(slot.clone()))
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.probation_grace = Some(Duration::from_millis(20));
    let c = Arc::new(LlmClient::new(s).unwrap());
    // The first request goes alone for the key's grace period only, not until its
    // whole answer is back: the others overlap it.
    let asks = (0..4).map(|i| {
        let c = c.clone();
        tokio::spawn(async move {
            c.chat(&asking(&format!("m{i}"), 64), &CancellationToken::new())
                .await
        })
    });
    for r in futures_util::future::join_all(asks).await {
        r.unwrap().unwrap();
    }
    assert!(
        slot.state
            .lock()
            .unwrap()
            .1
            .iter()
            .any(|p| p.starts_with('m')),
        "an unconfirmed key is held back for its grace period, not a whole answer"
    );
    c.chat(&asking("prove", 64), &CancellationToken::new())
        .await
        .unwrap();
    let asks = (0..4).map(|i| {
        let c = c.clone();
        tokio::spawn(async move {
            c.chat(&asking(&format!("n{i}"), 64), &CancellationToken::new())
                .await
        })
    });
    for r in futures_util::future::join_all(asks).await {
        r.unwrap().unwrap();
    }
    let overlapping = slot.state.lock().unwrap().1.clone();
    assert!(
        overlapping.iter().any(|p| p.starts_with('n')),
        "a confirmed key's requests overlap: {overlapping:?}"
    );
    assert!(!c.is_serial());
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream exploded"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok("second time lucky"))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let resp = c.chat(&request(), &CancellationToken::new()).await.unwrap();
    assert_eq!(resp.content, "second time lucky");
    assert_eq!(resp.attempts, 2);
}

#[tokio::test]
async fn persistent_server_errors_fail_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"error": {"message": "no provider available"}})),
        )
        .mount(&server)
        .await;
    let c = client(&server, &KEYS);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("after 3 attempt(s)"), "{msg}");
    assert!(msg.contains("HTTP 503: no provider available"), "{msg}");
    assert!(msg.contains(c.endpoint()), "{msg}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_timeout_is_retried_once_the_server_is_free_then_fails_clearly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok("too late").set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.timeout = Duration::from_millis(100);
    s.drain_tokens_per_sec = 10_000;
    let c = LlmClient::new(s).unwrap();
    let seen = notices(&c);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    // The retry had the server to itself and timed out too: not tried a third time.
    assert!(
        matches!(err, LlmError::RetriesExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("no answer within 0.1s") && msg.contains("ETERNA_PORT_LLM_TIMEOUT"),
        "{msg}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert!(c.is_serial());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn without_serial_mode_a_timeout_is_retried_with_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok("too late").set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.timeout = Duration::from_millis(100);
    s.serial_after_timeout = false;
    let c = LlmClient::new(s).unwrap();
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    assert!(!c.is_serial());
}

/// A server with one slot, like llama.cpp's: requests queue, and one abandoned by its
/// client is still worked on. It answers a prompt containing "slow" in `slow`, others
/// in `fast`, and records every request that arrived while the slot was taken.
struct OneSlot {
    slow: Duration,
    fast: Duration,
    state: Mutex<(Instant, Vec<String>)>,
}

struct Shared(Arc<OneSlot>);

impl Respond for Shared {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let slot = &self.0;
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let prompt = body["messages"][1]["content"].as_str().unwrap().to_string();
        let work = if prompt.contains("slow") {
            slot.slow
        } else {
            slot.fast
        };
        let now = Instant::now();
        let mut state = slot.state.lock().unwrap();
        let (free_at, overlaps) = &mut *state;
        if *free_at > now {
            overlaps.push(prompt.clone());
        }
        let done = (*free_at).max(now) + work;
        *free_at = done;
        ResponseTemplate::new(200)
            .set_body_json(completion(&prompt))
            .set_delay(done - now)
    }
}

fn asking(prompt: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::system("s"), Message::user(prompt)],
        max_tokens: Some(max_tokens),
        ..ChatRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_timeout_requests_wait_for_the_server_and_go_one_at_a_time() {
    let server = MockServer::start().await;
    let slot = Arc::new(OneSlot {
        slow: Duration::from_millis(1200),
        fast: Duration::from_millis(50),
        state: Mutex::new((Instant::now(), Vec::new())),
    });
    Mock::given(method("POST"))
        .respond_with(Shared(slot.clone()))
        .mount(&server)
        .await;
    let mut s = settings(&server, &[]);
    s.timeout = Duration::from_millis(500);
    // 16 tokens at 10 tokens/s: the client leaves the server 1.6 s for an abandoned
    // request, more than the 1.2 s it takes.
    s.drain_tokens_per_sec = 10;
    let c = Arc::new(LlmClient::new(s).unwrap());
    let seen = notices(&c);
    let burst = |label: &'static str| {
        let c = c.clone();
        async move {
            let asks = (0..4).map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.chat(
                        &asking(&format!("{label} {i}"), 16),
                        &CancellationToken::new(),
                    )
                    .await
                })
            });
            futures_util::future::join_all(asks).await
        }
    };
    // Before any timeout the agents' requests go together (and queue on the slot).
    c.chat(&asking("first", 16), &CancellationToken::new())
        .await
        .unwrap();
    for r in burst("before").await {
        assert!(r.unwrap().is_ok());
    }
    let queued = std::mem::take(&mut slot.state.lock().unwrap().1);
    assert!(!queued.is_empty(), "the first burst was concurrent");
    assert!(!c.is_serial());

    // A request the server is too slow for: abandoned, retried once the server has had
    // time to finish it, abandoned again.
    let err = c
        .chat(&asking("slow", 16), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::RetriesExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(c.is_serial());
    // Then the agents' requests go one at a time, none while the slot is taken.
    for r in burst("after").await {
        assert!(r.unwrap().is_ok());
    }
    let state = slot.state.lock().unwrap();
    assert!(
        state.1.is_empty(),
        "requests sent while the server was busy: {:?}",
        state.1
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "said once: {seen:?}");
    let Notice::Serial { message } = &seen[0] else {
        panic!("{seen:?}")
    };
    assert!(
        message.contains(&server.uri())
            && message.contains("did not answer within")
            && message.contains("one request at a time"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_server_stops_the_client_after_one_attempt() {
    // A port on 127.0.0.1 that nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let mut s = LlmSettings::new(base.clone(), "m", vec![Secret::new(KEYS[0].into())]);
    s.backoff_base = Duration::from_millis(1);
    s.backoff_max = Duration::from_millis(2);
    s.max_attempts = 5;
    let c = LlmClient::new(s).unwrap();
    let seen = notices(&c);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LlmError::Unreachable { .. }),
        "not retried: {err:?}"
    );
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}/v1/chat/completions"))
            && msg.contains("ETERNA_PORT_LLM_BASE_URL"),
        "{msg}"
    );
    // Every later request fails at once, not sent, with the reason.
    for _ in 0..3 {
        let again = c
            .chat(&request(), &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&again, LlmError::NotSent { reason } if reason.contains(&base)),
            "{again:?}"
        );
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(&seen[0], Notice::Stopped { message } if message.contains(&base) && message.contains("start the server")),
        "{seen:?}"
    );
}

fn stream_client(url: &str, stall: Duration) -> LlmClient {
    let mut s = LlmSettings::new(url, "m", vec![]);
    s.stall_timeout = stall;
    // A total bound that a stall-bounded stream must not be held to.
    s.timeout = Duration::from_millis(200);
    s.backoff_base = Duration::from_millis(1);
    s.backoff_max = Duration::from_millis(5);
    LlmClient::new(s).unwrap()
}

#[tokio::test]
async fn a_stream_that_goes_silent_fails_after_the_stall_timeout() {
    let server = Trickle::start(|_| {
        vec![
            Step::Send(": PROCESSING\n\n".into()),
            Step::Send(trickle::delta("pub fn vmx")),
            Step::Hang,
        ]
    });
    let c = stream_client(&server.url, Duration::from_millis(500));
    let seen = notices(&c);
    let mut got = String::new();
    let err = c
        .chat_stream(&request(), &CancellationToken::new(), &mut |d: &str| {
            got.push_str(d)
        })
        .await
        .unwrap_err();
    assert_eq!(got, "pub fn vmx");
    assert!(
        matches!(
            err,
            LlmError::Truncated {
                received_chars: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("stalled")
            && msg.contains("nothing received for 0.5s")
            && msg.contains("ETERNA_PORT_LLM_STALL_TIMEOUT"),
        "{msg}"
    );
    assert_eq!(server.requests(), 1, "content went out: not retried");
    // The server may still be working on it: said once.
    assert!(matches!(&seen.lock().unwrap()[..], [Notice::Serial { .. }]));
}

#[tokio::test]
async fn a_slow_but_steady_stream_is_not_cut_off() {
    let text = "pub fn vmxon(region: u64) -> Result<(), VmxError> { Ok(()) }";
    let server = Trickle::start(move |body| {
        assert_eq!(body["stream"], true);
        // 8 pieces 150 ms apart: 1.2 s in all, over both bounds, never silent 0.5 s.
        trickle::steady(text, 8, Duration::from_millis(150))
    });
    let c = stream_client(&server.url, Duration::from_millis(500));
    let seen = notices(&c);
    let resp = c
        .chat_stream(&request(), &CancellationToken::new(), &mut |_: &str| {})
        .await
        .unwrap();
    assert_eq!(resp.content, text);
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(server.requests(), 1);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_clear_error_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw("{\"choices\": [", "application/json"),
        )
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::InvalidResponse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("not JSON") && msg.contains("not an OpenAI-compatible"),
        "{msg}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "x"})))
        .mount(&server)
        .await;
    let err = client(&server, &KEYS[..1])
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no `choices[0]`"), "{err}");
}

#[tokio::test]
async fn client_error_is_not_retried_and_shows_the_server_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": {"message": "x-ai/grok-9 is not a valid model ID", "code": 400}}),
        ))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS);
    let err = c
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("is not a valid model ID"), "{err}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn error_inside_a_200_answer_is_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"error": {"message": "Provider returned error", "code": 502}}),
            ),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok("fine"))
        .mount(&server)
        .await;
    let resp = client(&server, &KEYS[..1])
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((resp.content.as_str(), resp.attempts), ("fine", 2));
}

fn sse(events: &[&str]) -> ResponseTemplate {
    let mut body = String::from(": OPENROUTER PROCESSING\n\n");
    for e in events {
        body.push_str("data: ");
        body.push_str(e);
        body.push_str("\n\n");
    }
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

#[tokio::test]
async fn streaming_assembles_content_and_usage() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(chat_path())
        .and(body_partial_json(json!({"stream": true, "stream_options": {"include_usage": true}})))
        .respond_with(sse(&[
            r#"{"model":"x-ai/grok-4-fast","choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"pub fn "}}]}"#,
            r#"{"choices":[{"delta":{"content":"vmxon() {}"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34,"cost":0.001}}"#,
            "[DONE]",
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let mut deltas = Vec::new();
    let resp = c
        .chat_stream(&request(), &CancellationToken::new(), &mut |d: &str| {
            deltas.push(d.to_string())
        })
        .await
        .unwrap();
    assert_eq!(deltas, ["pub fn ", "vmxon() {}"]);
    assert_eq!(resp.content, "pub fn vmxon() {}");
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (
            resp.usage.prompt_tokens,
            resp.usage.completion_tokens,
            resp.usage.cost
        ),
        (30, 4, Some(0.001))
    );
}

#[tokio::test]
async fn truncated_stream_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(&[
            r#"{"choices":[{"delta":{"content":"pub fn vmx"}}]}"#,
            r#"{"choices":[{"delta":{"content":"on("}}]}"#,
        ]))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let err = c
        .chat_stream(&request(), &CancellationToken::new(), &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Truncated {
                received_chars: 13,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("[DONE]"), "{err}");
}

#[tokio::test]
async fn openrouter_gets_its_usage_field() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"usage": {"include": true}})))
        .respond_with(ok("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.openrouter_usage = true;
    LlmClient::new(s)
        .unwrap()
        .chat(&request(), &CancellationToken::new())
        .await
        .unwrap();
}

#[tokio::test]
async fn cancellation_stops_a_slow_request_promptly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok("never").set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let c = client(&server, &KEYS[..1]);
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        canceller.cancel();
    });
    let start = Instant::now();
    let err = c.chat(&request(), &cancel).await.unwrap_err();
    assert!(matches!(err, LlmError::Cancelled { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn cancellation_interrupts_a_backoff_wait() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.backoff_base = Duration::from_secs(30);
    s.backoff_max = Duration::from_secs(30);
    let c = LlmClient::new(s).unwrap();
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        canceller.cancel();
    });
    let start = Instant::now();
    let err = c.chat(&request(), &cancel).await.unwrap_err();
    assert!(matches!(err, LlmError::Cancelled { .. }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn no_key_server_sends_no_authorization() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok("local model"))
        .mount(&server)
        .await;
    let c = client(&server, &[]);
    let resp = c.chat(&request(), &CancellationToken::new()).await.unwrap();
    assert_eq!(resp.content, "local model");
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs[0].headers.get("authorization").is_none());
}

#[test]
fn settings_from_config() {
    let setting = |v: &str| Setting {
        value: v.to_string(),
        source: Source::Default,
    };
    let key = |v: &str| Setting {
        value: Secret::new(v.to_string()),
        source: Source::Env { var: "X".into() },
    };
    let number = |n: u64| Setting {
        value: n,
        source: Source::Default,
    };
    let config = Config {
        target: setting("x86_64-unknown-none"),
        model: setting("qwen2.5-coder:7b"),
        base_url: setting("http://127.0.0.1:11434/v1/"),
        api_keys: vec![
            ("OPENROUTER_API_KEY1".into(), key(KEYS[0])),
            ("OPENROUTER_API_KEY".into(), key(KEYS[1])),
        ],
        openai_api_key: None,
        serve_token: None,
        backend: Setting {
            value: Backend::Llm,
            source: Source::Default,
        },
        db: Setting {
            value: "eterna.db".into(),
            source: Source::Default,
        },
        max_file_size: Setting {
            value: 1,
            source: Source::Default,
        },
        boot_files: Default::default(),
        console: Default::default(),
        embedder: setting("local"),
        embeddings_base_url: setting("https://api.openai.com/v1"),
        embedding_model: setting("text-embedding-3-small"),
        heartbeat_ms: number(1000),
        llm_stream: Setting {
            value: None,
            source: Source::Default,
        },
        llm_timeout_secs: number(42),
        llm_stall_timeout_secs: number(7),
        llm_max_tokens: None,
        prompt_budget: number(6000),
        log_filter: None,
    };
    let s = LlmSettings::from_config(&config);
    assert_eq!(s.endpoint(), "http://127.0.0.1:11434/v1/chat/completions");
    assert_eq!(s.timeout, Duration::from_secs(42), "the request timeout");
    assert_eq!(s.stall_timeout, Duration::from_secs(7), "the stall timeout");
    assert!(s.serial_after_timeout, "a local server has one slot");
    assert_eq!(s.model, "qwen2.5-coder:7b");
    assert_eq!(
        s.keys.iter().map(|k| k.expose()).collect::<Vec<_>>(),
        [KEYS[0], KEYS[1]]
    );
    assert!(!s.openrouter_usage);
    assert!(
        !format!("{s:?}").contains(KEYS[0]),
        "settings debug redacts keys"
    );
    let or = LlmSettings::new("https://openrouter.ai/api/v1", "x-ai/grok-4-fast", vec![]);
    assert!(or.openrouter_usage);
    assert!(
        !or.serial_after_timeout,
        "OpenRouter routes each request to a provider of its own"
    );
    assert_eq!(
        or.endpoint(),
        "https://openrouter.ai/api/v1/chat/completions"
    );
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_key_appears_in_errors_or_logs() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = MockServer::start().await;
    // A server that echoes the key it was sent, in every kind of failure.
    let echo = |status: u16| {
        move |req: &Request| {
            let key = bearer(req);
            ResponseTemplate::new(status)
                .insert_header("retry-after", "0")
                .set_body_json(
                    json!({"error": {"message": format!("Incorrect API key provided: {key}")}}),
                )
        }
    };
    // Each key gets a different error, and every error body echoes the key.
    for (key, status) in KEYS.iter().zip([401, 500, 400]) {
        Mock::given(method("POST"))
            .and(header("authorization", format!("Bearer {key}").as_str()))
            .respond_with(echo(status))
            .mount(&server)
            .await;
    }

    let mut errors = Vec::new();
    let c = client(&server, &KEYS);
    let cancel = CancellationToken::new();
    for _ in 0..3 {
        errors.push(c.chat(&request(), &cancel).await.unwrap_err());
    }
    errors.push(
        client(&server, &KEYS[..1])
            .chat(&request(), &cancel)
            .await
            .unwrap_err(),
    );
    let mut malformed = settings(&server, &KEYS);
    malformed.base_url = "not a url".into();
    errors.push(LlmClient::new(malformed).unwrap_err());

    let mut text = String::new();
    for e in &errors {
        text.push_str(&format!("{e}\n{e:?}\n"));
    }
    text.push_str(&format!("{c:?}\n{:?}\n", c.settings()));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("API key refused"),
        "the logs were captured: {logs}"
    );
    assert!(
        text.contains("<redacted>"),
        "server echoes are scrubbed: {text}"
    );
    for key in KEYS {
        assert!(!text.contains(key), "key in an error: {text}");
        assert!(!logs.contains(key), "key in the logs: {logs}");
        // Not even a recognisable part of it.
        assert!(!text.contains(&key[10..]) && !logs.contains(&key[10..]));
    }
}

// ---------------------------------------------------------------- extraction

fn opts() -> ExtractOptions {
    ExtractOptions::for_targets(["src/arch/x86_64/vmx.rs", "src/arch/x86_64/ept/"])
}

#[test]
fn json_envelope_is_accepted_bare_and_fenced() {
    let envelope = json!({"files": [
        {"path": "src/arch/x86_64/vmx.rs", "content": "pub fn vmxon() {}\n"},
        {"path": "./src/arch/x86_64/ept/tables.rs", "content": "pub struct Pml4;\n"}
    ]})
    .to_string();
    for answer in [
        envelope.clone(),
        format!("Here are the files:\n\n```json\n{envelope}\n```\nDone."),
        format!("Here are the files: {envelope} (two of them)."),
    ] {
        let files = extract_files(&answer, &opts()).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "src/arch/x86_64/vmx.rs");
        assert_eq!(files[0].content, "pub fn vmxon() {}\n");
        assert_eq!(files[1].path, "src/arch/x86_64/ept/tables.rs");
    }
}

#[test]
fn fenced_rust_blocks_are_accepted() {
    // No file named: the single expected target.
    let answer = "The port:\n\n```rust\npub fn vmxon() -> bool { true }\n```\n";
    let files = extract_files(
        answer,
        &ExtractOptions::for_targets(["src/arch/x86_64/vmx.rs"]),
    )
    .unwrap();
    assert_eq!(files[0].path, "src/arch/x86_64/vmx.rs");
    assert_eq!(files[0].content, "pub fn vmxon() -> bool { true }\n");

    // Files named in the info string, a first-line comment, and a heading.
    let answer = "\
```rust src/arch/x86_64/vmx.rs
pub fn vmxon() {}
```

```rust
// path: src/arch/x86_64/ept/mod.rs
pub mod tables;
```

**`src/arch/x86_64/ept/tables.rs`**
```rust
pub struct Pml4;
```
";
    let files = extract_files(answer, &opts()).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "src/arch/x86_64/vmx.rs",
            "src/arch/x86_64/ept/mod.rs",
            "src/arch/x86_64/ept/tables.rs"
        ]
    );
    assert_eq!(
        files[1].content, "pub mod tables;\n",
        "the path comment is dropped"
    );
}

#[test]
fn rust_that_mentions_files_is_not_taken_for_an_envelope() {
    let answer = "```rust\npub fn manifest() -> &'static str { r#\"{\"files\": [\"# }\n```\n";
    let files = extract_files(answer, &ExtractOptions::for_targets(["src/a.rs"])).unwrap();
    assert_eq!(files[0].path, "src/a.rs");
}

#[test]
fn invalid_rust_is_rejected_with_its_line() {
    let answer = "```rust\npub fn vmxon() {\n    let x = ;\n}\n```\n";
    let err = extract_files(
        answer,
        &ExtractOptions::for_targets(["src/arch/x86_64/vmx.rs"]),
    )
    .unwrap_err();
    match &err {
        ExtractError::InvalidRust {
            path, line, column, ..
        } => {
            assert_eq!(path, "src/arch/x86_64/vmx.rs");
            assert_eq!((*line, *column), (2, 13));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("line 2, column 13"), "{err}");
}

#[test]
fn paths_outside_the_targets_are_rejected() {
    let file = |p: &str| json!({"files": [{"path": p, "content": "fn main() {}"}]}).to_string();
    let cases = [
        ("../../etc/passwd", "ParentDir"),
        ("src/arch/x86_64/ept/../../../../x.rs", "ParentDir"),
        ("/abs/src/arch/x86_64/vmx.rs", "AbsolutePath"),
        ("other-crate/src/x.rs", "OutsideTargets"),
        ("src/lib.rs", "OutsideTargets"),
    ];
    for (path, variant) in cases {
        let err = extract_files(&file(path), &opts()).unwrap_err();
        assert!(format!("{err:?}").starts_with(variant), "{path}: {err:?}");
        assert!(err.to_string().contains(path), "names the path: {err}");
    }
    // In a fenced block too.
    let answer = "```rust ../../etc/passwd.rs\nfn x() {}\n```";
    assert!(matches!(
        extract_files(answer, &opts()),
        Err(ExtractError::ParentDir { .. })
    ));
}

#[test]
fn build_scripts_and_manifests_need_allow_deps() {
    let answer = json!({"files": [
        {"path": "build.rs", "content": "fn main() {}"},
        {"path": "src/arch/x86_64/vmx.rs", "content": "pub fn vmxon() {}"}
    ]})
    .to_string();
    let err = extract_files(&answer, &opts()).unwrap_err();
    assert_eq!(
        err,
        ExtractError::DepsChange {
            path: "build.rs".into()
        }
    );
    assert!(err.to_string().contains("--allow-deps"));
    let manifest = "```toml Cargo.toml\n[dependencies]\nx86 = \"0.52\"\n```\n```rust src/arch/x86_64/vmx.rs\nfn a() {}\n```";
    let err = extract_files(manifest, &opts()).unwrap_err();
    assert!(matches!(err, ExtractError::DepsChange { .. }), "{err:?}");

    let allow = ExtractOptions {
        allow_deps: true,
        ..opts()
    };
    assert_eq!(extract_files(&answer, &allow).unwrap().len(), 2);
    let bad_manifest =
        json!({"files": [{"path": "Cargo.toml", "content": "[dependencies\n"}]}).to_string();
    assert!(matches!(
        extract_files(&bad_manifest, &allow),
        Err(ExtractError::InvalidManifest { .. })
    ));
}

#[test]
fn answers_without_usable_code_are_rejected() {
    assert_eq!(
        extract_files("I cannot do that.", &opts()),
        Err(ExtractError::NoCode)
    );
    assert!(matches!(
        extract_files("{\"files\": [{\"path\": 3}]}", &opts()),
        Err(ExtractError::Envelope(_))
    ));
    // Two unnamed blocks, one target: which one is it?
    let two = "```rust\nfn a() {}\n```\n\n```rust\nfn b() {}\n```";
    assert!(matches!(
        extract_files(two, &ExtractOptions::for_targets(["src/a.rs"])),
        Err(ExtractError::AmbiguousTarget { blocks: 2, .. })
    ));
    // An unnamed block and no single target.
    assert!(matches!(
        extract_files(
            "```rust\nfn a() {}\n```",
            &ExtractOptions::for_targets(["src/a.rs", "src/b.rs"])
        ),
        Err(ExtractError::NoTarget { .. })
    ));
    let dup = json!({"files": [
        {"path": "src/arch/x86_64/vmx.rs", "content": ""},
        {"path": "./src/arch/x86_64/vmx.rs", "content": ""}
    ]})
    .to_string();
    assert!(matches!(
        extract_files(&dup, &opts()),
        Err(ExtractError::DuplicatePath { .. })
    ));
}

#[tokio::test]
async fn retry_after_on_a_server_error_is_honoured_within_the_backoff_bound() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ok("back"))
        .mount(&server)
        .await;
    let mut s = settings(&server, &KEYS[..1]);
    s.backoff_max = Duration::from_millis(150);
    let c = LlmClient::new(s).unwrap();
    let start = Instant::now();
    let resp = c.chat(&request(), &CancellationToken::new()).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(resp.attempts, 2);
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(1),
        "waited {waited:?}: Retry-After 1 s, capped at backoff_max"
    );
}

#[tokio::test]
async fn stream_server_error_before_any_content_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse(&[
            r#"{"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}]}"#,
        ]))
        .mount(&server)
        .await;
    let mut seen = String::new();
    let resp = client(&server, &KEYS[..1])
        .chat_stream(&request(), &CancellationToken::new(), &mut |d: &str| {
            seen.push_str(d)
        })
        .await
        .unwrap();
    assert_eq!((resp.content.as_str(), resp.attempts), ("ok", 2));
    assert_eq!(
        seen, "ok",
        "a finish_reason without [DONE] is a complete answer"
    );
}

#[tokio::test]
async fn stream_error_event_after_content_is_truncation() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sse(&[
            r#"{"choices":[{"delta":{"content":"pub fn"}}]}"#,
            r#"{"error":{"message":"Provider disconnected","code":502},"choices":[{"delta":{"content":""},"finish_reason":"error"}]}"#,
        ]))
        .mount(&server)
        .await;
    let err = client(&server, &KEYS[..1])
        .chat_stream(&request(), &CancellationToken::new(), &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Truncated {
                received_chars: 6,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Provider disconnected"), "{err}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn server_that_does_not_stream_still_answers_a_stream_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ok("whole answer"))
        .mount(&server)
        .await;
    let mut seen = Vec::new();
    let resp = client(&server, &KEYS[..1])
        .chat_stream(&request(), &CancellationToken::new(), &mut |d: &str| {
            seen.push(d.to_string())
        })
        .await
        .unwrap();
    assert_eq!(resp.content, "whole answer");
    assert_eq!(seen, ["whole answer"]);
    assert_eq!(resp.usage.total_tokens, 17);
}
