//! `cargo eterna-port serve` under load: 100 clients polling `GET /swarm/health` and
//! 20 server-sent-event subscribers while a port runs (the bundled workspace, every
//! module, against a model server that answers after 150 ms, two tasks at a time, so
//! the port lasts a few seconds). Reported: the health latency p50/p99/max and its
//! request count; per subscriber, events received against the run's record (none lost,
//! none twice, in order); the server's resident memory at rest before and after.
//!
//! `cargo bench --bench serve`; without `--bench` (as `cargo test` runs it) a smoke run
//! with 10 pollers and 4 subscribers.

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Reads a server-sent-event stream to its end: (id, data) of each event.
async fn subscribe(client: reqwest::Client, url: String) -> Vec<(usize, String)> {
    let r = client.get(url).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let (mut id, mut data) = (None, String::new());
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                out.push((id.take().unwrap_or(usize::MAX), std::mem::take(&mut data)));
            }
        }
    }
    out
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (pollers, subscribers) = if bench { (100, 20) } else { (10, 4) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let model = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_delay(Duration::from_millis(150))
                    .set_body_json(json!({
                        "id": "bench", "object": "chat.completion", "model": "m",
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "no code"}}]
                    })),
            )
            .mount(&server)
            .await;
        server
    });
    let ws = common::copy_tree(&common::fixture_dir());
    common::git(ws.path(), &["init", "-q"]);
    common::git(ws.path(), &["add", "-A"]);
    common::git(ws.path(), &["commit", "-q", "-m", "start"]);
    let base = format!("{}/api/v1", model.uri());
    let server = common::server::Server::start(
        ws.path(),
        &[],
        &[
            ("OPENROUTER_API_KEY", "sk-bench-not-a-real-key"),
            ("ETERNA_PORT_LLM_BASE_URL", base.as_str()),
        ],
    );
    let pid = server.pid();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(200)
        .build()
        .unwrap();
    let (idle_before, started) = rt.block_on(async {
        // Warm: one of each route the load uses.
        client
            .get(server.url("/swarm/health"))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let idle = rss_kib(pid);
        let started: Value = client
            .post(server.url("/swarm/orchestrate"))
            .json(&json!({"userMessage": "port all", "jobs": 2, "max_fix_iterations": 0}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (idle, started)
    });
    let id = started["run_id"].as_str().expect("a run id").to_string();
    let done = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (latencies, streams, peak) = rt.block_on(async {
        let subs: Vec<_> = (0..subscribers)
            .map(|_| {
                tokio::spawn(subscribe(
                    client.clone(),
                    server.url(&format!("/runs/{id}/events")),
                ))
            })
            .collect();
        let polls: Vec<_> = (0..pollers)
            .map(|_| {
                let client = client.clone();
                let url = server.url("/swarm/health");
                let done = done.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = client.get(&url).send().await.unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        let _ = r.bytes().await.unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            let run: Value = client
                .get(server.url(&format!("/runs/{id}")))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if run["status"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for p in polls {
            latencies.extend(p.await.unwrap());
        }
        let mut streams = Vec::new();
        for s in subs {
            streams.push(s.await.unwrap());
        }
        (latencies, streams, peak)
    });
    let port_time = t0.elapsed();
    // The run's record: every event once, in order (a late subscriber replays it).
    let record = rt.block_on(subscribe(
        client.clone(),
        server.url(&format!("/runs/{id}/events")),
    ));
    let mut lost = 0;
    let mut duplicated = 0;
    let mut out_of_order = 0;
    for s in &streams {
        let ids: Vec<usize> = s.iter().map(|(i, _)| *i).collect();
        let mut seen = std::collections::BTreeSet::new();
        for w in ids.windows(2) {
            if w[1] != w[0] + 1 {
                out_of_order += 1;
            }
        }
        for i in &ids {
            if !seen.insert(*i) {
                duplicated += 1;
            }
        }
        lost += record.len().saturating_sub(seen.len());
        assert_eq!(
            s, &record,
            "a subscriber's events differ from the run's record"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_after = rss_kib(pid);
    let mut sorted = latencies.clone();
    sorted.sort();
    println!(
        "serve load: port of every module took {:.1} s; {pollers} pollers made {} GET /swarm/health: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        port_time.as_secs_f64(),
        sorted.len(),
        percentile(&sorted, 0.50).as_secs_f64() * 1e3,
        percentile(&sorted, 0.99).as_secs_f64() * 1e3,
        sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "serve events: {subscribers} subscribers, {} events each in the run's record: lost {lost}, duplicated {duplicated}, out of order {out_of_order}",
        record.len()
    );
    println!(
        "serve memory (RSS): at rest {} KiB before the run, peak {} KiB during it, at rest {} KiB after",
        idle_before.unwrap_or(0),
        peak,
        idle_after.unwrap_or(0)
    );
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));
    assert!(!sorted.is_empty());
}
