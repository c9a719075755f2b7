//! A local OpenAI-compatible server on 127.0.0.1 that streams its answers as a script
//! says, pause by pause (wiremock sends a body all at once): for stall timeouts and
//! slow-but-steady streams. It also counts requests in flight, to show whether the
//! client sends one request at a time after it gave up on one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// One step of an answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes now.
    Send(String),
    /// Write nothing for this long.
    Sleep(Duration),
    /// Go silent, the connection left open, until the client gives up and closes it.
    Hang,
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Log {
    /// The JSON body of every request, in arrival order.
    pub requests: Vec<Value>,
    /// Requests being answered now.
    pub in_flight: usize,
    /// The client closed a connection the server had gone silent on.
    pub abandoned: usize,
    /// Requests that arrived, after an abandoned one, while another was being
    /// answered.
    pub overlaps_after_abandon: usize,
}

type Script = dyn Fn(&Value) -> Vec<Step> + Send + Sync;

pub struct Trickle {
    /// The base URL (`…/v1`).
    pub url: String,
    pub log: Arc<Mutex<Log>>,
}

impl Trickle {
    /// Starts the server; `script` gives the steps of the answer to each request body.
    pub fn start(script: impl Fn(&Value) -> Vec<Step> + Send + Sync + 'static) -> Trickle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let script: Arc<Script> = Arc::new(script);
        let shared = log.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (log, script) = (shared.clone(), script.clone());
                std::thread::spawn(move || serve(conn, &log, &*script));
            }
        });
        Trickle { url, log }
    }

    pub fn requests(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }
}

fn serve(conn: TcpStream, log: &Mutex<Log>, script: &Script) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let steps = script(&body);
    {
        let mut log = log.lock().unwrap();
        log.requests.push(body);
        log.in_flight += 1;
        if log.abandoned > 0 && log.in_flight > 1 {
            log.overlaps_after_abandon += 1;
        }
    }
    let mut out = conn;
    let mut done = false;
    let mut finish = |log: &Mutex<Log>| {
        if !std::mem::replace(&mut done, true) {
            log.lock().unwrap().in_flight -= 1;
        }
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        finish(log);
        return;
    }
    let n = steps.len();
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Send(text) => {
                // Done before the last bytes go out: the client may send its next
                // request the moment it has them.
                if i + 1 == n {
                    finish(log);
                }
                if out
                    .write_all(text.as_bytes())
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    finish(log);
                    return;
                }
            }
            Step::Sleep(d) => std::thread::sleep(d),
            Step::Hang => {
                // Silent until the client closes the connection (at most a minute).
                let _ = out.set_read_timeout(Some(Duration::from_secs(60)));
                let mut sink = [0u8; 64];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                finish(log);
                log.lock().unwrap().abandoned += 1;
                return;
            }
        }
    }
    finish(log);
}

/// An SSE event with a content delta.
pub fn delta(content: &str) -> String {
    let ev = json!({"choices": [{"index": 0, "delta": {"content": content}}]});
    format!("data: {ev}\n\n")
}

/// The events that end an answer.
pub fn end() -> String {
    let last = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
    format!("data: {last}\n\ndata: [DONE]\n\n")
}

/// `content` in `pieces` deltas, each after `gap`, then the end.
pub fn steady(content: &str, pieces: usize, gap: Duration) -> Vec<Step> {
    let chars: Vec<char> = content.chars().collect();
    let size = chars.len().div_ceil(pieces.max(1)).max(1);
    let mut steps = Vec::new();
    for chunk in chars.chunks(size) {
        steps.push(Step::Sleep(gap));
        steps.push(Step::Send(delta(&chunk.iter().collect::<String>())));
    }
    steps.push(Step::Send(end()));
    steps
}
