//! `serve`'s dashboard (`/ui`) and API docs page (`/docs`) in a real browser: headless
//! Chromium loads them from a live server on a git copy of the bundled workspace, and the
//! DOM it rendered (its scripts having run: fetch, EventSource) is checked against what
//! the API itself answers. A screenshot of the dashboard is kept in
//! `target/test-artifacts/dashboard.png`.
//!
//! Without chromium the tests skip, saying why; under `CI` a missing chromium fails
//! (scripts/setup.sh installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common;

/// The chromium binary; `None` (with the reason printed) when it is not installed and
/// this is not CI. Under CI a missing chromium is a failure.
fn chromium() -> Option<PathBuf> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    let found = Some(PathBuf::from("/usr/bin/chromium"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"));
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set and chromium is not installed: the dashboard test needs it (scripts/setup.sh installs it: apt-get install chromium)"
        );
        eprintln!(
            "SKIP: chromium is not installed (apt-get install chromium, or bash scripts/setup.sh); the dashboard's browser test did not run"
        );
    }
    found
}

/// The name of the directory the workspace copy is in: an element if a page put it in
/// as HTML.
const MARKUP_DIR: &str = "ws-<b id=\"injected\">markup";

/// A `serve` process on a git copy of the bundled workspace, killed when dropped.
struct DashServer {
    server: common::server::Server,
    token: Option<String>,
    _ws: TempDir,
}

impl DashServer {
    fn start(token: Option<&str>, env: &[(&str, &str)]) -> DashServer {
        // The workspace's directory name is markup: the page must show it as text.
        let ws = common::copy_tree(&common::fixture_dir());
        let root = ws.path().join(MARKUP_DIR);
        std::fs::create_dir(&root).unwrap();
        for entry in std::fs::read_dir(ws.path()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != MARKUP_DIR {
                std::fs::rename(entry.path(), root.join(entry.file_name())).unwrap();
            }
        }
        common::git(&root, &["init", "-q"]);
        common::git(&root, &["add", "-A"]);
        common::git(&root, &["commit", "-q", "-m", "fixture"]);
        let mut env = env.to_vec();
        if let Some(t) = token {
            env.push(("ETERNA_PORT_SERVE_TOKEN", t));
        }
        let server = common::server::Server::start(&root, &[], &env);
        DashServer {
            server,
            token: token.map(str::to_string),
            _ws: ws,
        }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// A request with the server's token as a bearer header.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        let r = client.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    fn get(&self, path: &str) -> Value {
        let r = self.request(reqwest::Method::GET, path).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// Waits for a run to end; its record.
    fn finished_run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let run = self.get(&format!("/runs/{id}"));
            if run["status"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} still running: {run}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs headless chromium on `url` with `extra` flags (`--dump-dom`, `--screenshot=…`),
/// in a profile of its own, killed if it takes over two minutes.
fn chrome(bin: &Path, extra: &[String], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--virtual-time-budget=10000")
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start chromium");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("chromium ran"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of the child this test started (still
            // unwaited: its waiting thread has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("chromium did not finish within 2 minutes on {url}");
        }
    }
}

/// The DOM chromium dumped, without the page's own script (which names the
/// attributes the assertions look for).
fn dump_dom(bin: &Path, url: &str) -> String {
    let out = chrome(bin, &["--dump-dom".to_string()], url);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom {url}: {:?}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest = dom.as_str();
    let mut kept = String::new();
    while let Some(start) = rest.find("<script") {
        kept.push_str(&rest[..start]);
        let end = rest[start..]
            .find("</script>")
            .map(|e| start + e + "</script>".len())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    kept.push_str(rest);
    kept
}

/// Text as HTML serializes it in a text node.
fn esc_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// Every element whose start tag holds `attr` (`name="value"`): from its `<` to its
/// closing `</tag>` (the elements asked for here hold no element of their own tag).
fn elements<'a>(dom: &'a str, attr: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = dom[from..].find(attr).map(|i| from + i) {
        from = at + attr.len();
        let open = dom[..at].rfind('<').expect("inside a tag");
        if dom[open..at].contains('>') {
            continue; // text, not an attribute
        }
        let tag: String = dom[open + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let close = format!("</{tag}>");
        let end = dom[at..]
            .find(&close)
            .map(|e| at + e + close.len())
            .unwrap_or(dom.len());
        found.push(&dom[open..end]);
    }
    found
}

/// The one element with `attr`.
fn element<'a>(dom: &'a str, attr: &str) -> &'a str {
    let all = elements(dom, attr);
    assert_eq!(all.len(), 1, "elements with {attr}: {all:#?}");
    all[0]
}

/// The start tag of an element.
fn start_tag(element: &str) -> &str {
    &element[..=element.find('>').unwrap()]
}

/// The text of an element with no child elements.
fn text_of(element: &str) -> &str {
    let after = &element[element.find('>').unwrap() + 1..];
    &after[..after.find('<').unwrap_or(after.len())]
}

#[test]
fn the_dashboard_shows_the_plan_and_a_runs_live_progress_and_result_in_a_browser() {
    let Some(bin) = chromium() else { return };
    let token = format!("dash-{}-token", std::process::id());
    let server = DashServer::start(Some(&token), &[]);
    let plan = server.get("/plan");
    let planned: Vec<&Value> = plan["modules"].as_array().unwrap().iter().collect();
    assert!(
        planned.len() > 3,
        "the bundled workspace plans modules: {plan}"
    );
    let status = server.get("/");
    // The store is indexed before the page searches it (the first search builds it).
    let search = server.get("/search?q=maintenance%20interrupt&n=10");

    let started = server
        .request(reqwest::Method::POST, "/swarm/orchestrate")
        .json(&json!({"userMessage": "port all"}))
        .send()
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    let started: Value = started.json().unwrap();
    let id = started["run_id"].as_str().unwrap().to_string();

    // Loaded while the run works (or just after): the page follows its events.
    let page = server.url(&format!(
        "/ui?run={id}&q=maintenance%20interrupt&token={token}"
    ));
    let dom = dump_dom(&bin, &page);
    let run = server.finished_run(&id);
    let summary = &run["result"]["summary"];
    assert!(summary.is_object(), "the run has a summary: {run}");

    assert!(
        !dom.contains(&token),
        "the token is not put in the page (only in its URL)"
    );

    // The status header, from GET /.
    let workspace = element(&dom, r#"data-field="workspace""#);
    assert!(
        workspace.contains(&esc_text(status["workspace"].as_str().unwrap())),
        "{workspace}"
    );
    assert!(element(&dom, r#"data-field="backend""#).contains("offline"));
    assert!(
        status["workspace"].as_str().unwrap().contains(MARKUP_DIR)
            && !dom.contains(r#"<b id="injected">"#),
        "server strings are text, not markup: {workspace}"
    );

    // The plan table: one row per planned module, with its component and files.
    assert_eq!(
        dom.matches("<tr data-module=").count(),
        planned.len(),
        "a row per planned module"
    );
    for m in &planned {
        let row = element(
            &dom,
            &format!(r#"data-module="{}""#, m["module_path"].as_str().unwrap()),
        );
        for field in ["component", "source", "target", "status"] {
            let value = m[field].as_str().unwrap();
            assert!(
                row.contains(&format!(">{}<", esc_text(value))),
                "{field} {value} in {row}"
            );
        }
    }

    // Live progress: a row per module of the run, at its task's final status, which
    // for an offline dry run is `done`.
    let tasks = summary["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), started["tasks"].as_array().unwrap().len());
    let mut done = 0;
    for t in tasks {
        let module = t["module"].as_str().unwrap();
        assert_eq!(t["status"], "done", "offline tasks end done: {t}");
        done += 1;
        let row = element(&dom, &format!(r#"data-progress-module="{module}""#));
        assert!(
            start_tag(row).contains(r#"data-status="done""#),
            "{module}: {row}"
        );
        assert!(
            row.contains(&format!(">{}<", t["agent"].as_str().unwrap())),
            "{row}"
        );
    }
    assert_eq!(
        dom.matches("<tr data-progress-module=").count(),
        tasks.len(),
        "one progress row per module"
    );
    assert_eq!(
        text_of(element(&dom, r#"id="tasks-done""#)),
        done.to_string()
    );

    // The final status, as the run-finished event and GET /runs/{id} say.
    let final_status = run["status"].as_str().unwrap();
    assert_ne!(final_status, "running");
    let shown = element(&dom, r#"id="run-status""#);
    assert_eq!(text_of(shown), final_status, "{shown}");

    // The result: per-module coverage and items, the check verdict, the diffs.
    for m in summary["modules"].as_array().unwrap() {
        let path = m["module_path"].as_str().unwrap();
        let coverage = element(&dom, &format!(r#"data-coverage-module="{path}""#));
        assert!(
            coverage.contains(&format!("{} / {}", m["items_ported"], m["items_total"])),
            "{coverage}"
        );
        let items = m["items"].as_array().unwrap();
        let rows = elements(&dom, &format!(r#"data-item-module="{path}""#));
        assert_eq!(rows.len(), items.len(), "{path}: a row per item");
        for it in items {
            let name = format!(">{}</td>", esc_text(it["name"].as_str().unwrap()));
            let status = format!(r#"data-item-status="{}""#, it["status"].as_str().unwrap());
            let by = format!(r#"class="item-by">{}<"#, it["by"].as_str().unwrap_or(""));
            assert!(
                rows.iter()
                    .any(|r| r.contains(&name) && r.contains(&status) && r.contains(&by)),
                "{path}: item {it} not shown"
            );
        }
    }
    assert!(summary["fix_loop"].is_null() && summary["dry_run"] == true);
    let check = element(&dom, r#"id="check-verdict""#);
    assert!(check.contains(r#"data-stop="not-run""#), "{check}");
    assert!(run["result"]["boot"].is_null(), "a dry run boots nothing");
    assert!(
        start_tag(element(&dom, r#"id="boot-section""#)).contains("hidden"),
        "no boot verdict shown without a boot"
    );
    let files = run["result"]["files"].as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        let shown = element(
            &dom,
            &format!(r#"data-file="{}""#, f["path"].as_str().unwrap()),
        );
        assert!(
            start_tag(shown).contains(&format!(
                r#"data-action="{}""#,
                f["action"].as_str().unwrap()
            )),
            "{shown}"
        );
        if let Some(diff) = f["diff"].as_str() {
            let first_added = diff
                .lines()
                .find(|l| l.starts_with('+') && !l.starts_with("+++"));
            if let Some(line) = first_added {
                assert!(shown.contains(&esc_text(line)), "{line} in {shown}");
            }
        }
    }

    // The search box, from ?q=: path:start-end, title and score of each result.
    let results = search.as_array().unwrap();
    assert!(!results.is_empty(), "{search}");
    let list = element(&dom, r#"id="search-results""#);
    for r in results {
        let loc = format!(
            "{}:{}-{}",
            r["path"].as_str().unwrap(),
            r["start_line"],
            r["end_line"]
        );
        assert!(list.contains(&esc_text(&loc)), "{loc} in {list}");
        assert!(list.contains(&esc_text(r["title"].as_str().unwrap())));
        let score = format!("score {:.4}", r["score"].as_f64().unwrap());
        assert!(list.contains(&score), "{score}");
    }

    // The screenshot, kept as the test's artifact.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let out = chrome(
        &bin,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2000".to_string(),
        ],
        &page,
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            png.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 2000));
    // A blank page of that size compresses to a few kilobytes; the dashboard's tables
    // and text do not.
    assert!(
        bytes.len() > 50_000,
        "the screenshot is nearly empty: {} bytes",
        bytes.len()
    );
}

#[test]
fn the_api_docs_page_renders_every_operation_of_the_openapi_document() {
    let Some(bin) = chromium() else { return };
    let server = DashServer::start(None, &[]);
    let doc = server.get("/openapi.json");
    let dom = dump_dom(&bin, &server.url("/docs"));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{doc}");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let name = format!("{} {path}", method.to_uppercase());
            let section = element(&dom, &format!(r#"data-op="{name}""#));
            operations += 1;
            // Its summary, its parameters, its request body's schema, its responses.
            let summary = op["summary"].as_str().unwrap_or_default();
            let words = summary
                .split(['`', '\n'])
                .max_by_key(|s| s.len())
                .unwrap_or_default();
            assert!(
                section.contains(&esc_text(words)),
                "{name}: summary {summary:?} in {section}"
            );
            for p in op["parameters"].as_array().into_iter().flatten() {
                let row = format!(r#"data-param="{}""#, p["name"].as_str().unwrap());
                assert!(section.contains(&row), "{name}: {row}");
            }
            if let Some(schema) = op
                .pointer("/requestBody/content/application~1json/schema/$ref")
                .and_then(Value::as_str)
            {
                let schema = schema.rsplit('/').next().unwrap();
                assert!(
                    section.contains(&format!(r##"href="#schema-{schema}">{schema}</a>"##)),
                    "{name}: body {schema}"
                );
            }
            for status in op["responses"].as_object().unwrap().keys() {
                assert!(
                    section.contains(&format!(r#"data-status="{status}""#)),
                    "{name}: response {status}"
                );
            }
            // A try-it form with an input per path and query parameter.
            let form = element(section, &format!(r#"data-try="{name}""#));
            for p in op["parameters"].as_array().into_iter().flatten() {
                let input = format!(r#"name="{}""#, p["name"].as_str().unwrap());
                assert!(form.contains(&input), "{name}: try-it input {input}");
            }
            assert_eq!(
                form.contains(r#"name="body""#),
                op.get("requestBody").is_some(),
                "{name}: a JSON body field when the operation takes one"
            );
        }
    }
    assert_eq!(
        dom.matches(r#"<section class="op""#).count(),
        operations,
        "one section per operation"
    );
    for schema in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            dom.contains(&format!(r#"data-schema="{schema}""#)),
            "schema {schema}"
        );
    }
}

#[test]
fn the_dashboard_says_what_is_wrong_with_an_unknown_run_and_a_wrong_token_gets_no_page() {
    let Some(bin) = chromium() else { return };
    let token = format!("dash-{}-other", std::process::id());
    let server = DashServer::start(Some(&token), &[]);

    let dom = dump_dom(
        &bin,
        &server.url(&format!("/ui?run=run-nope&token={token}")),
    );
    let error = element(&dom, r#"id="run-error""#);
    assert!(
        text_of(error).contains("no run `run-nope`"),
        "the server's 404 is shown: {error}"
    );
    assert_eq!(text_of(element(&dom, r#"id="run-status""#)), "unavailable");
    // The token is right: the plan is there, and no auth banner.
    assert!(dom.matches("<tr data-module=").count() > 3);
    assert!(start_tag(element(&dom, r#"id="auth-banner""#)).contains("hidden"));

    // The page itself is behind the token: a wrong one gets the server's 401, which
    // says what to send, and nothing of the dashboard.
    let dom = dump_dom(&bin, &server.url("/ui?token=not-the-token"));
    assert!(dom.contains("needs a bearer token"), "{dom}");
    assert!(!dom.contains(r#"id="plan""#) && !dom.contains(&token));
}

#[test]
fn the_dashboard_follows_a_run_in_progress_as_its_events_come() {
    let Some(bin) = chromium() else { return };
    // A model that takes 1.5 s per answer and never answers with code: each task asks,
    // is refused, asks again, and fails keeping its draft, seconds after the run starts.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = rt.block_on(async {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/v1/chat/completions"))
            .respond_with(
                wiremock::ResponseTemplate::new(200)
                    .set_delay(Duration::from_millis(1500))
                    .set_body_json(json!({
                        "id": "slow",
                        "object": "chat.completion",
                        "model": "slow-model",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "no code today"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
                    })),
            )
            .mount(&server)
            .await;
        server
    });
    let base = format!("{}/v1", model.uri());
    let token = format!("dash-{}-live", std::process::id());
    let server = DashServer::start(
        Some(&token),
        &[
            ("ETERNA_PORT_LLM_BASE_URL", base.as_str()),
            ("ETERNA_PORT_MODEL", "slow-model"),
        ],
    );
    let started = server
        .request(reqwest::Method::POST, "/swarm/orchestrate")
        .json(&json!({"userMessage": "port the timer and the mmu", "backend": "llm"}))
        .send()
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    let started: Value = started.json().unwrap();
    let id = started["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        server.get(&format!("/runs/{id}"))["status"],
        "running",
        "the run is still working when the page loads"
    );

    // No ?run=: the page finds the run in progress and follows it to its end.
    let dom = dump_dom(&bin, &server.url(&format!("/ui?token={token}")));
    let run = server.finished_run(&id);
    let summary = &run["result"]["summary"];
    let tasks = summary["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{summary}");
    assert_eq!(summary["backend"], "llm");

    assert_eq!(
        text_of(element(&dom, r#"id="run-id""#)),
        id,
        "the run in progress is opened"
    );
    assert_eq!(
        text_of(element(&dom, r#"id="run-status""#)),
        run["status"].as_str().unwrap()
    );
    let failed = tasks.iter().filter(|t| t["status"] != "done").count();
    assert!(
        failed > 0,
        "a model that answers no code fails its tasks: {summary}"
    );
    assert_eq!(
        text_of(element(&dom, r#"id="tasks-failed""#)),
        failed.to_string()
    );
    assert_eq!(text_of(element(&dom, r#"id="tasks-total""#)), "2");
    for t in tasks {
        let row = element(
            &dom,
            &format!(
                r#"data-progress-module="{}""#,
                t["module"].as_str().unwrap()
            ),
        );
        let status = t["status"].as_str().unwrap();
        assert!(
            start_tag(row).contains(&format!(r#"data-status="{status}""#)),
            "{status}: {row}"
        );
        // A failed task says why.
        if let Some(error) = t["error"].as_str() {
            assert!(row.contains(&esc_text(error)), "{error} in {row}");
        }
    }
    drop(server);
    drop(model);
}
