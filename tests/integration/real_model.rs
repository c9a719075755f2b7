//! The swarm against a real local model: llama.cpp's OpenAI-compatible server
//! (`scripts/llama-server.sh`, built generic from `llama-cpp-python[server]`) with the
//! packaged Gemma 3 270M model. A model that small answers mostly junk: the point is
//! that the run ends in bounded time, that every answer is judged by the module's API
//! contract, and that what the tool reports is what it wrote.
//!
//! `scripts/test.sh` installs the server and sets `ETERNA_PORT_REAL_MODEL=1`, which
//! makes a missing server a failure; without it (a plain `cargo test`) the test says
//! why it skips.

use crate::common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Far above what a bounded run needs here (a few minutes): a run past it is a hang.
const RUN_BOUND: Duration = Duration::from_secs(20 * 60);
const MODULE: &str = "timer";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama-server.sh")
}

/// The venv `scripts/llama-server.sh install` builds (same default home).
fn installed() -> bool {
    let home = std::env::var_os("ETERNA_PORT_LLAMA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/llama"));
    home.join("venv/bin/python").exists()
}

/// The server process, killed (with its group) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("bash")
        .arg(script())
        .args(["serve", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start scripts/llama-server.sh");
    let mut server = Server { child, port };
    // Loading a 270M model takes seconds; the script may also assemble the model first.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = server.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the model server exited ({status}):\n{err}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the model server did not listen within 300 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs the command, killing it past [`RUN_BOUND`] (then the test fails).
fn run_bounded(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo-eterna-port");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let reader_err = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > RUN_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the port against the real model did not end within {} s",
                RUN_BOUND.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::process::Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: reader_err.join().unwrap(),
    }
}

fn module_of<'a>(summary: &'a Value, needle: &str) -> &'a Value {
    summary["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module_path"].as_str().unwrap().ends_with(needle))
        .unwrap_or_else(|| panic!("no module {needle} in {summary:#}"))
}

fn ported(items: &Value) -> usize {
    items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "ported")
        .count()
}

fn committed_fixture() -> tempfile::TempDir {
    let ws = copy_tree(&fixture_dir());
    std::fs::write(ws.path().join(".gitignore"), "/target\n").unwrap();
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "-A"]);
    git(
        ws.path(),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "fixture",
        ],
    );
    ws
}

#[test]
fn a_real_local_model_ports_one_module_in_bounded_time_and_is_judged_by_the_contract() {
    if !installed() {
        assert!(
            std::env::var_os("ETERNA_PORT_REAL_MODEL").is_none(),
            "ETERNA_PORT_REAL_MODEL is set but the model server is not installed: run `bash scripts/llama-server.sh install`"
        );
        eprintln!("skipped: no local model server (run `bash scripts/llama-server.sh install`)");
        return;
    }
    // The offline port of the same module: what an answer must never fall below.
    let offline = committed_fixture();
    let o = run(
        offline.path(),
        &[
            "port",
            MODULE,
            "--backend",
            "offline",
            "--message-format",
            "json",
        ],
    );
    let offline_summary = json(&o);
    let draft_ported = ported(&module_of(&offline_summary, MODULE)["items"]);

    let server = start_server();
    let ws = committed_fixture();
    let mut cmd = command(
        ws.path(),
        &[
            "port",
            MODULE,
            "--backend",
            "llm",
            "--message-format",
            "json",
        ],
    );
    cmd.env(
        "ETERNA_PORT_LLM_BASE_URL",
        format!("http://127.0.0.1:{}/v1", server.port),
    )
    .env("ETERNA_PORT_MODEL", "gemma-3-270m")
    // Streamed, so only silence is bounded; generous for one slot on two cores,
    // bounded all the same. Small prompts: the server's context is 8192 tokens (prompt and
    // answer) and the model reads ~100 tokens/s here.
    .env("ETERNA_PORT_LLM_STREAM", "on")
    .env("ETERNA_PORT_LLM_STALL_TIMEOUT", "120")
    .env("ETERNA_PORT_PROMPT_BUDGET", "3000");
    let started = Instant::now();
    let o = run_bounded(cmd);
    let elapsed = started.elapsed();
    drop(server);
    let code = o.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "exit {code:?}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let summary = json(&o);
    let module = module_of(&summary, MODULE);

    // Every task that asked the model made a request and was judged.
    let tasks = summary["tasks"].as_array().unwrap();
    let task = tasks
        .iter()
        .find(|t| t["module"].as_str().unwrap().ends_with(MODULE))
        .unwrap_or_else(|| panic!("no task for {MODULE}: {summary:#}"));
    assert!(task["requests"].as_u64().unwrap() >= 1, "{task:#}");
    // What the run did, for the record (`--nocapture`).
    eprintln!(
        "real model: exit {code:?} in {:.0} s; tasks: {}; items: {}",
        elapsed.as_secs_f64(),
        serde_json::to_string(tasks).unwrap(),
        serde_json::to_string(&module["items"]).unwrap()
    );

    // The contract held: every item of the offline draft is in the written file, as
    // answered or kept from the draft (a 270M model's answers are mostly junk).

    // The report is what is on disk: items recounted from the written file.
    let target = module["target"].as_str().unwrap();
    let text = std::fs::read_to_string(ws.path().join(target)).unwrap();
    let on_disk = cargo_eterna_port::engine::coverage::items_of(&text);
    let reported: Vec<(String, String)> = module["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(_, s)| s != "missing")
        .collect();
    let counted: Vec<(String, String)> = on_disk
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                serde_json::to_value(i.status)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(reported, counted, "the report is not the written file");
    for item in module_of(&offline_summary, MODULE)["items"]
        .as_array()
        .unwrap()
    {
        let name = item["name"].as_str().unwrap();
        assert!(
            on_disk.iter().any(|i| i.name == name),
            "`{name}` of the module's API is not in the written file: {module:#}"
        );
    }
    // An answer never lowers the number of ported items.
    assert!(
        ported(&module["items"]) >= draft_ported,
        "coverage fell below the offline draft ({draft_ported}): {module:#}"
    );
    // Exit 0 only for a run with nothing left to do.
    if code == Some(0) {
        assert_eq!(summary["coverage"]["unported"], 0, "{summary:#}");
    }
}
