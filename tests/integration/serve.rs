//! `cargo eterna-port serve` on 127.0.0.1 against copies of the bundled workspace:
//! every route with its success and error cases, live events (server-sent events and
//! the websocket) against what the command line says for the same port, auth, one
//! writer at a time, and runs that survive a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::server::{answer, client, read_sse, Server};
use crate::common::{assert_code, copy_tree, fixture_dir, git, json_lines, run, write};

/// A copy of the bundled workspace in a git repository with everything committed.
fn committed_fixture() -> TempDir {
    let ws = copy_tree(&fixture_dir());
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-q", "-m", "start"]);
    ws
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    answer(client().get(s.url(path)).send().unwrap())
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    answer(client().post(s.url(path)).json(body).send().unwrap())
}

fn git_clean(dir: &Path) -> bool {
    git(dir, &["status", "--porcelain", "--untracked-files=all"])
        .lines()
        .all(|l| l.contains("target/"))
}

/// Waits until a run has ended; returns its record.
fn wait_for(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, run) = get(s, &format!("/runs/{id}"));
        assert_eq!(code, 200, "{run}");
        if run["status"] != "running" {
            return run;
        }
        assert!(Instant::now() < deadline, "run {id} never ended: {run}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_health_openapi_and_pages_answer_and_unknown_routes_are_json_404s() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    let (code, status) = get(&s, "/");
    assert_eq!(code, 200);
    assert_eq!(status["backend"], "offline");
    assert_eq!(status["auth"], false);
    assert_eq!(
        Path::new(status["workspace"].as_str().unwrap())
            .canonicalize()
            .unwrap(),
        ws.path().canonicalize().unwrap()
    );
    assert!(status["store"].as_str().unwrap().ends_with("eterna.db"));
    assert_eq!(status["runs_in_progress"], json!([]));

    let (code, health) = get(&s, "/swarm/health");
    assert_eq!(code, 200);
    assert_eq!(health["source"], "none", "{health}");

    let (code, doc) = get(&s, "/openapi.json");
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/",
        "/swarm/health",
        "/swarm/orchestrate",
        "/agent/{type}/execute",
        "/eterna/port",
        "/eterna/port/bulk",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/cancel",
        "/runs/{id}/events",
        "/runs/{id}/ws",
    ] {
        assert!(paths.contains_key(p), "{p} missing from /openapi.json");
    }
    assert!(doc["components"]["schemas"]["WorkRequest"].is_object());

    for page in ["/docs", "/ui"] {
        let r = client().get(s.url(page)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{page}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let body = r.text().unwrap();
        assert!(!body.contains("://cdn"), "{page} loads from a CDN");
    }

    let (code, err) = get(&s, "/no/such/route");
    assert_eq!(code, 404);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/openapi.json"));
    let (code, err) = get(&s, "/runs/run-nope");
    assert_eq!(code, 404, "{err}");
    let (code, _) = answer(
        client()
            .post(s.url("/runs/run-nope/cancel"))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 404);
    let (code, _) = get(&s, "/runs/run-nope/events");
    assert_eq!(code, 404);
}

/// The CLI's JSON summary of `port vmcs` on a fresh copy: the figures a server run
/// must match.
fn cli_port_summary(targets: &[&str]) -> Value {
    let ws = committed_fixture();
    let mut args = vec![
        "port",
        "--message-format",
        "json",
        "--max-fix-iterations",
        "0",
    ];
    args.extend_from_slice(targets);
    let o = run(ws.path(), &args);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{o:?}");
    json_lines(&o)
        .into_iter()
        .find(|l| l["reason"] == "port-finished")
        .expect("the CLI's port-finished line")
}

#[test]
fn orchestrate_in_words_streams_events_and_the_run_shows_what_the_cli_shows() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    let (code, started) = post(
        &s,
        "/swarm/orchestrate",
        &json!({"userMessage": "Port VMCS to x86", "conversationId": "c-1", "write": true, "max_fix_iterations": 0}),
    );
    assert_eq!(code, 202, "{started}");
    assert_eq!(started["targets"], json!(["vm-control"]));
    assert_eq!(started["conversationId"], "c-1");
    assert_eq!(started["write"], true);
    let tasks = started["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty());
    assert!(
        tasks.iter().all(|t| t["component"] == "vm-control"),
        "{started}"
    );
    let id = started["run_id"].as_str().unwrap().to_string();

    // A subscriber from the start, and one that comes after the end: the same events,
    // numbered without gaps, each once, ending with the final event.
    let early = read_sse(
        client()
            .get(s.url(&format!("/runs/{id}/events")))
            .send()
            .unwrap(),
    );
    let run = wait_for(&s, &id);
    let late = read_sse(
        client()
            .get(s.url(&format!("/runs/{id}/events")))
            .send()
            .unwrap(),
    );
    assert_eq!(early, late);
    for (i, (seq, _)) in early.iter().enumerate() {
        assert_eq!(seq.as_deref(), Some(i.to_string().as_str()));
    }
    let reasons: Vec<&str> = early
        .iter()
        .map(|(_, e)| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.last(), Some(&"run-finished"), "{reasons:?}");
    assert_eq!(reasons.iter().filter(|r| **r == "run-finished").count(), 1);
    for r in ["task-started", "task-finished", "port-finished"] {
        assert!(reasons.contains(&r), "no {r} event: {reasons:?}");
    }
    let last = &early.last().unwrap().1;
    assert_eq!(last["status"], run["status"]);
    assert_eq!(last["run_id"], id.as_str());

    // The websocket sends the same events.
    let ws_events = websocket_events(&s, &id);
    assert_eq!(
        ws_events,
        early.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>()
    );

    // What GET /runs/{id} shows is what the command line shows for the same port.
    assert_eq!(run["kind"], "orchestrate");
    let summary = &run["result"]["summary"];
    let cli = cli_port_summary(&["vmcs"]);
    assert_eq!(
        summary["coverage"], cli["coverage"],
        "server vs CLI coverage"
    );
    let items = |v: &Value| -> Vec<(Value, Value, Value)> {
        v["modules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["items"].as_array().unwrap().clone())
            .map(|i| (i["name"].clone(), i["status"].clone(), i["by"].clone()))
            .collect()
    };
    assert_eq!(items(summary), items(&cli));
    assert!(!items(summary).is_empty());
    // The files were written, each with its diff.
    let files = run["result"]["files"].as_array().unwrap();
    let created: Vec<&Value> = files.iter().filter(|f| f["action"] == "create").collect();
    assert!(!created.is_empty(), "{files:?}");
    for f in &created {
        assert!(ws.path().join(f["path"].as_str().unwrap()).is_file());
        assert!(f["diff"].as_str().unwrap().contains("+++"));
    }
    // The run is listed, and the health table is this run's.
    let (_, runs) = get(&s, "/runs");
    assert_eq!(runs[0]["run_id"], id.as_str());
    let (_, health) = get(&s, "/swarm/health");
    assert_eq!(health["source"], "last-run");
    assert!(health["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["agent"].as_str().unwrap().starts_with("EternaPortAgent")));

    // ?wait=true answers when the run ends, in the original system's shape.
    let (code, waited) = post(
        &s,
        "/swarm/orchestrate?wait=true",
        &json!({"userMessage": "port the gic please"}),
    );
    assert_eq!(code, 200, "{waited}");
    let tasks = waited["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty(), "{waited}");
    for t in tasks {
        assert!(t["status"].is_string() && t["agent"].is_string(), "{t}");
        assert!(t["file_path"].as_str().unwrap().contains("x86_64"), "{t}");
    }
    assert_eq!(waited["swarm_stats"]["total_tasks"], tasks.len());
    assert!(waited["swarm_stats"]["failures"].is_u64());
    assert!(waited["swarm_stats"]["completion_time_ms"].is_u64());
}

fn websocket_events(s: &Server, id: &str) -> Vec<Value> {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/runs/{id}/ws", s.addr))
                .await
                .unwrap();
        let mut out = Vec::new();
        while let Some(m) = socket.next().await {
            match m.unwrap() {
                tokio_tungstenite::tungstenite::Message::Text(t) => {
                    out.push(serde_json::from_str(&t).unwrap())
                }
                tokio_tungstenite::tungstenite::Message::Close(_) => break,
                _ => {}
            }
        }
        out
    })
}

#[test]
fn requests_are_dry_runs_unless_they_say_write() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    let (code, run) = post(
        &s,
        "/eterna/port?wait=true",
        &json!({"file": "eterna/src/arch/aarch64/gic.rs"}),
    );
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["write"], false);
    assert!(
        matches!(run["status"].as_str(), Some("done" | "problems")),
        "{run}"
    );
    let files = run["result"]["files"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["action"] == "create" && f["diff"].is_string()));
    assert_eq!(run["result"]["summary"]["dry_run"], true);
    assert!(git_clean(ws.path()), "a dry run wrote to the workspace");

    // Bulk: several files, also dry.
    let (code, run) = post(
        &s,
        "/eterna/port/bulk?wait=true",
        &json!({"files": ["eterna/src/arch/aarch64/gic.rs", "./eterna/src/arch/aarch64/timer.rs"]}),
    );
    assert_eq!(code, 200, "{run}");
    let modules = run["result"]["summary"]["modules"].as_array().unwrap();
    assert_eq!(modules.len(), 2, "{modules:?}");
    assert!(git_clean(ws.path()));

    // One agent: only its tasks run.
    let (code, run) = post(
        &s,
        "/agent/eterna_port/execute?wait=true",
        &json!({"targets": ["gic"]}),
    );
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["kind"], "agent:eterna_port");
    let tasks = run["result"]["summary"]["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty());
    assert!(
        tasks.iter().all(|t| t["role"] == "eterna-port"),
        "{tasks:?}"
    );
}

/// A bad request: route, body, status, the field its error names (JSON null: none),
/// words of its message.
type BadRequest = (
    &'static str,
    String,
    u16,
    Option<Value>,
    Option<&'static str>,
);

#[test]
fn bad_requests_get_a_status_and_a_message_naming_the_field() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &["--body-limit", "4096"], &[]);
    let send = |path: &str, body: &str| {
        answer(
            client()
                .post(s.url(path))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap(),
        )
    };
    let cases: Vec<BadRequest> = vec![
        (
            "/swarm/orchestrate",
            "{\"userMessage\": ".into(),
            400,
            None,
            None,
        ),
        (
            "/swarm/orchestrate",
            "{\"userMesage\": \"port vmcs\"}".into(),
            400,
            Some(json!("userMesage")),
            None,
        ),
        (
            "/swarm/orchestrate",
            "{}".into(),
            400,
            Some(json!("userMessage")),
            None,
        ),
        (
            "/swarm/orchestrate",
            "{\"userMessage\": \"make it faster\"}".into(),
            400,
            None,
            Some("vm-control"),
        ),
        (
            "/swarm/orchestrate",
            "{\"userMessage\": 7}".into(),
            400,
            Some(Value::Null),
            Some("invalid type"),
        ),
        (
            "/eterna/port",
            json!({"file": "eterna/src/nope.rs"}).to_string(),
            400,
            None,
            Some("does not exist"),
        ),
        (
            "/eterna/port",
            json!({"targets": ["warp-drive"]}).to_string(),
            400,
            Some(json!("targets")),
            None,
        ),
        (
            "/eterna/port",
            "{}".into(),
            400,
            Some(json!("targets")),
            None,
        ),
        (
            "/eterna/port",
            json!({"targets": ["gic"], "backend": "quantum"}).to_string(),
            400,
            Some(json!("backend")),
            None,
        ),
        // `boot` without `write`.
        (
            "/eterna/port",
            json!({"targets": ["gic"], "boot": "qemu"}).to_string(),
            400,
            None,
            None,
        ),
        (
            "/eterna/port",
            json!({"targets": ["gic"], "userMessage": "x"}).to_string(),
            400,
            Some(json!("userMessage")),
            None,
        ),
        (
            "/agent/wizard/execute",
            "{}".into(),
            404,
            None,
            Some("eterna_port"),
        ),
        (
            "/agent/debug/execute",
            json!({"targets": ["gic"]}).to_string(),
            400,
            Some(json!("write")),
            None,
        ),
    ];
    for (path, body, status, field, words) in cases {
        let (code, e) = send(path, &body);
        assert_eq!(code, status, "{path} {body}: {e}");
        if let Some(field) = field {
            assert_eq!(e["error"]["field"], field, "{path} {body}: {e}");
        }
        if let Some(words) = words {
            assert!(
                e["error"]["message"].as_str().unwrap().contains(words),
                "{path} {body}: {e}"
            );
        }
    }
    for outside in ["../../etc/passwd", "/etc/passwd", "eterna/../../x.rs"] {
        let (code, e) = send("/eterna/port", &json!({"file": outside}).to_string());
        assert_eq!(code, 400, "{outside}: {e}");
        assert_eq!(e["error"]["field"], "file");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("outside"),
            "{e}"
        );
    }

    let big = json!({"userMessage": "x".repeat(10_000)}).to_string();
    let (code, e) = send("/swarm/orchestrate", &big);
    assert_eq!(code, 413, "{e}");

    // A run that ended cannot be cancelled.
    let (code, done) = send(
        "/eterna/port?wait=true",
        &json!({"targets": ["gic"]}).to_string(),
    );
    assert_eq!(code, 200);
    let id = done["run_id"].as_str().unwrap();
    let (code, e) = send(&format!("/runs/{id}/cancel"), "");
    assert_eq!(code, 409, "{e}");
    // Nothing above crashed the server.
    assert_eq!(get(&s, "/").0, 200);
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}

#[test]
fn a_token_guards_every_route_but_status_and_is_needed_off_loopback() {
    let ws = committed_fixture();
    let token = "tok-3f9a7c1e-serve-test";
    let file = ws.path().join("target/serve-token");
    write(
        ws.path(),
        "target/serve-token",
        format!("{token}\n").as_bytes(),
    );
    let key = "sk-or-v1-serve-test-secret-key-0000";
    let s = Server::start(
        ws.path(),
        &["--token-file", file.to_str().unwrap()],
        &[
            ("OPENROUTER_API_KEY", key),
            (
                "ETERNA_PORT_LLM_BASE_URL",
                "https://proxyuser:proxy-secret-pw@llm.example.invalid/api/v1",
            ),
        ],
    );
    let (code, status) = get(&s, "/");
    assert_eq!(code, 200);
    assert_eq!(status["auth"], true);
    assert_eq!(status["backend"], "llm");
    assert!(
        !status.to_string().contains(key),
        "the key leaked: {status}"
    );
    for path in ["/runs", "/swarm/health", "/openapi.json", "/ui", "/plan"] {
        let r = client().get(s.url(path)).send().unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = client()
            .get(s.url(path))
            .bearer_auth("tok-3f9a7c1e-serve-tesT")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path} with a wrong token");
        let r = client().get(s.url(path)).bearer_auth(token).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path} with the token");
        let body = r.text().unwrap();
        assert!(
            !body.contains(key) && !body.contains(token),
            "{path} leaks a secret"
        );
    }
    let r = client()
        .get(s.url(&format!("/runs?token={token}")))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "?token= works where headers cannot be set"
    );
    let r = client()
        .post(s.url("/swarm/orchestrate"))
        .json(&json!({"userMessage": "port vmcs"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(s);

    // Off loopback: refused without a token, before listening.
    let o = run(ws.path(), &["serve", "--bind", "0.0.0.0:0"]);
    assert_code(&o, 2);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--bind 0.0.0.0:0") && err.contains("token"),
        "{err}"
    );
    // An empty token file, or a missing one, is a usage error naming it.
    write(ws.path(), "target/empty-token", b"\n");
    let o = run(ws.path(), &["serve", "--token-file", "target/empty-token"]);
    assert_code(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("target/empty-token"));
    let o = run(ws.path(), &["serve", "--token-file", "target/none"]);
    assert_code(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("target/none"));
    // With the token in the environment, anything but loopback is allowed.
    let mut cmd = crate::common::command(
        ws.path(),
        &["serve", "--bind", "0.0.0.0:0", "--message-format", "json"],
    );
    cmd.env("ETERNA_PORT_SERVE_TOKEN", token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.contains("\"listening\"") && line.contains("0.0.0.0:"),
        "{line}"
    );
}

/// An OpenAI-compatible server that answers after `delay` (a run that stays in
/// progress while the test looks at it).
fn slow_model(rt: &tokio::runtime::Runtime, delay: Duration) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/chat/completions"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_delay(delay)
                    .set_body_json(json!({
                        "id": "x", "object": "chat.completion", "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "no code here"}}]
                    })),
            )
            .mount(&server)
            .await;
        server
    })
}

fn llm_env(model: &wiremock::MockServer) -> Vec<(&'static str, String)> {
    vec![
        (
            "OPENROUTER_API_KEY",
            crate::common::scripted::DUMMY_KEY.to_string(),
        ),
        (
            "ETERNA_PORT_LLM_BASE_URL",
            format!("{}/api/v1", model.uri()),
        ),
        ("ETERNA_PORT_LLM_TIMEOUT", "600".to_string()),
    ]
}

#[test]
fn one_writing_run_at_a_time_and_a_dirty_tree_needs_allow_dirty() {
    let ws = committed_fixture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = slow_model(&rt, Duration::from_secs(120));
    let env = llm_env(&model);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start(ws.path(), &[], &env);
    let (code, first) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["gic"], "write": true}),
    );
    assert_eq!(code, 202, "{first}");
    let id = first["run_id"].as_str().unwrap().to_string();
    let (code, e) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["timer"], "write": true}),
    );
    assert_eq!(code, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains(&id), "{e}");
    let (_, status) = get(&s, "/");
    assert_eq!(status["runs_in_progress"], json!([id.clone()]));
    // The command line respects the server's writing run (one per workspace, across
    // processes), and leaves the workspace alone.
    let o = run(ws.path(), &["port", "timer", "--backend", "offline"]);
    assert_code(&o, 2);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("another eterna-port run is writing"),
        "{o:?}"
    );
    // Dry runs go on beside it.
    let (code, dry) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["timer"], "backend": "offline"}),
    );
    assert_eq!(code, 202, "{dry}");
    // The live health table is the writing run's (the dry one may be newer).
    let (_, health) = get(&s, "/swarm/health");
    assert_eq!(health["source"], "live", "{health}");
    // Cancelled, it ends `cancelled`, and the slot is free again.
    let (code, c) = answer(
        client()
            .post(s.url(&format!("/runs/{id}/cancel")))
            .send()
            .unwrap(),
    );
    assert_eq!(code, 202, "{c}");
    let run = wait_for(&s, &id);
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        git_clean(ws.path()),
        "a cancelled run before writing left files"
    );

    // Another process holding the workspace's write lock: a 409 before anything starts.
    {
        use std::os::unix::io::AsRawFd;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ws.path().join("target/eterna-port/write.lock"))
            .unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(
            unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let (code, e) = post(
            &s,
            "/eterna/port",
            &json!({"targets": ["gic"], "write": true, "backend": "offline"}),
        );
        assert_eq!(code, 409, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("write.lock"),
            "{e}"
        );
    }
    // A tree with changes: refused unless allowed, and nothing is written.
    write(ws.path(), "NOTES.md", b"my uncommitted notes\n");
    let (code, e) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["gic"], "write": true, "backend": "offline"}),
    );
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("allow"),
        "{e}"
    );
    let (code, ok) = post(
        &s,
        "/eterna/port?wait=true",
        &json!({"targets": ["gic"], "write": true, "allow_dirty": true, "backend": "offline", "max_fix_iterations": 0}),
    );
    assert_eq!(code, 200, "{ok}");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("NOTES.md")).unwrap(),
        "my uncommitted notes\n"
    );
}

#[test]
fn runs_survive_a_restart_and_a_cut_off_run_is_interrupted() {
    let ws = committed_fixture();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = slow_model(&rt, Duration::from_secs(120));
    let env = llm_env(&model);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut s = Server::start(ws.path(), &[], &env);
    let (code, done) = post(
        &s,
        "/eterna/port?wait=true",
        &json!({"targets": ["gic"], "backend": "offline"}),
    );
    assert_eq!(code, 200, "{done}");
    let done_id = done["run_id"].as_str().unwrap().to_string();
    let events_before = read_sse(
        client()
            .get(s.url(&format!("/runs/{done_id}/events")))
            .send()
            .unwrap(),
    );
    let (code, cut) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["timer"], "write": true}),
    );
    assert_eq!(code, 202, "{cut}");
    let cut_id = cut["run_id"].as_str().unwrap().to_string();
    // Wait until it asks the model (it is working), then kill the server outright.
    let deadline = Instant::now() + Duration::from_secs(120);
    while rt
        .block_on(model.received_requests())
        .unwrap_or_default()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the run never asked the model");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.kill();

    let s = Server::start(ws.path(), &[], &env);
    let (code, runs) = get(&s, "/runs");
    assert_eq!(code, 200);
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [cut_id.as_str(), done_id.as_str()]);
    assert_eq!(runs[0]["status"], "interrupted");
    assert_eq!(runs[1]["status"], done["status"]);
    let (_, again) = get(&s, &format!("/runs/{done_id}"));
    assert_eq!(again["result"], done["result"]);
    // The ended run's events replay as they were sent; the cut one's end by saying so.
    let events_after = read_sse(
        client()
            .get(s.url(&format!("/runs/{done_id}/events")))
            .send()
            .unwrap(),
    );
    assert_eq!(events_before, events_after);
    let cut_events = read_sse(
        client()
            .get(s.url(&format!("/runs/{cut_id}/events")))
            .send()
            .unwrap(),
    );
    let last = &cut_events.last().unwrap().1;
    assert_eq!(last["reason"], "run-finished");
    assert_eq!(last["status"], "interrupted");
    // The writer slot is free in the new server.
    let (code, _) = post(
        &s,
        "/eterna/port",
        &json!({"targets": ["gic"], "write": true, "allow_dirty": true, "backend": "offline", "max_fix_iterations": 0}),
    );
    assert_eq!(code, 202);
}

#[test]
fn the_research_agent_and_the_search_cite_files_and_lines() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    let (code, answer) = post(
        &s,
        "/agent/research/execute",
        &json!({"question": "how are the stage-2 translation tables set up to map guest IPAs?"}),
    );
    assert_eq!(code, 200, "{answer}");
    let passages = answer["passages"].as_array().unwrap();
    assert!(
        passages
            .iter()
            .take(3)
            .any(|p| p["path"] == "eterna/src/arch/aarch64/stage2.rs"),
        "{passages:?}"
    );
    for p in passages {
        let text = std::fs::read_to_string(ws.path().join(p["path"].as_str().unwrap()));
        if let Ok(text) = text {
            let line = p["start_line"].as_u64().unwrap() as usize;
            assert!(text.lines().count() >= line, "{p}");
        }
    }
    assert_eq!(answer["answer"], Value::Null, "offline: passages only");
    let (code, e) = post(&s, "/agent/research/execute", &json!({"question": "  "}));
    assert_eq!(code, 400);
    assert_eq!(e["error"]["field"], "question");
    let (code, e) = post(
        &s,
        "/agent/research/execute",
        &json!({"question": "gic", "targets": ["gic"]}),
    );
    assert_eq!(code, 400);
    assert_eq!(e["error"]["field"], "targets");

    let (code, found) = get(&s, "/search?q=stage-2%20translation%20table&n=5");
    assert_eq!(code, 200, "{found}");
    let found = found.as_array().unwrap();
    assert!(!found.is_empty() && found.len() <= 5);
    assert!(found
        .iter()
        .all(|r| r["path"].is_string() && r["start_line"].is_u64()));
    let (code, _) = get(&s, "/search?q=");
    assert_eq!(code, 400);
    let (code, plan) = get(&s, "/plan");
    assert_eq!(code, 200);
    assert!(!plan["modules"].as_array().unwrap().is_empty());
}

#[test]
fn a_written_port_holds_the_check_and_boot_verdicts_the_cli_gives() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    let (code, run) = post(
        &s,
        "/swarm/orchestrate?wait=true",
        &json!({"userMessage": "port all", "write": true, "boot": "qemu"}),
    );
    assert_eq!(code, 200, "{run}");
    let id = run["run_id"].as_str().unwrap();
    let (_, run) = get(&s, &format!("/runs/{id}"));
    let result = &run["result"];
    let fix_loop = &result["summary"]["fix_loop"];
    assert!(fix_loop["stop"].is_string(), "{result}");
    let boot = &result["boot"];
    assert!(boot["success"].is_boolean(), "{result}");
    assert_ne!(boot["port"]["ending"], "timed-out", "{boot}");
    // The command line on the same written tree says the same.
    let o = crate::common::command(ws.path(), &["check", "--message-format", "json"])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let check = crate::common::json(&o);
    assert_eq!(
        fix_loop["errors_left"].as_u64().unwrap(),
        check["errors"].as_u64().unwrap(),
        "server's check verdict vs `check`: {check}"
    );
    let o = crate::common::command(
        ws.path(),
        &[
            "qemu",
            "--accel",
            "auto",
            "--timeout",
            "60",
            "--message-format",
            "json",
        ],
    )
    .env_remove("CARGO_TARGET_DIR")
    .output()
    .unwrap();
    let cli_boot = crate::common::json(&o);
    assert_eq!(boot["success"], cli_boot["success"], "{cli_boot}");
    assert_eq!(boot["port"]["ending"], cli_boot["port"]["ending"]);
    // The run's status says the same as the command line's exit codes would.
    let problems = fix_loop["errors_left"].as_u64() != Some(0)
        || boot["success"] != true
        || result["summary"]["coverage"]["unported"].as_u64() != Some(0);
    assert_eq!(run["status"], if problems { "problems" } else { "done" });
}

#[test]
fn the_code_and_debug_agents_run_alone() {
    let ws = committed_fixture();
    let s = Server::start(ws.path(), &[], &[]);
    // The CodeAgent: only its tasks (the modules edited in place), a dry run.
    let (code, run) = post(&s, "/agent/code/execute?wait=true", &json!({}));
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["kind"], "agent:code");
    let tasks = run["result"]["summary"]["tasks"].as_array().unwrap();
    assert!(!tasks.is_empty(), "{run}");
    assert!(tasks.iter().all(|t| t["role"] == "code"), "{tasks:?}");
    assert!(git_clean(ws.path()));
    // The DebugAgent: no port task; the written drafts go through the fix loop.
    let (code, run) = post(
        &s,
        "/agent/debug/execute?wait=true",
        &json!({"targets": ["gic"], "write": true}),
    );
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["kind"], "agent:debug");
    let summary = &run["result"]["summary"];
    assert_eq!(summary["tasks"].as_array().unwrap().len(), 0, "{summary}");
    assert!(summary["fix_loop"]["stop"].is_string(), "{summary}");
    assert!(!summary["fix_loop"]["iterations"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(!git_clean(ws.path()), "a written debug run wrote nothing");
}
