//! One agent: a tokio task with a mailbox. It shakes hands, then runs the tasks it is
//! sent on its backend while sending heartbeats, until its mailbox closes or the run
//! is cancelled.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::contract::{self, Judgement};
use super::groups;
use super::{Backend, ContractReport, FilesFrom, LlmBackend, Role, Task, TaskResult, TaskStatus};
use crate::llm::{extract_files, ChatRequest, LlmError, Message, Usage};

/// Messages from agents to the coordinator.
pub(super) enum Report {
    Hello {
        agent: usize,
        role: Role,
        model: String,
        ack: oneshot::Sender<()>,
    },
    Heartbeat {
        agent: usize,
    },
    Started {
        agent: usize,
        task: usize,
    },
    Finished {
        agent: usize,
        task: usize,
        result: Box<TaskResult>,
    },
    Stopped {
        agent: usize,
    },
}

pub(super) struct AgentHandle {
    pub inbox: mpsc::Sender<(usize, Task)>,
}

/// Starts agent `index` of `role`; it introduces itself on `reports`.
pub(super) fn spawn(
    index: usize,
    name: String,
    role: Role,
    backend: Backend,
    reports: mpsc::UnboundedSender<Report>,
    cancel: CancellationToken,
    heartbeat: Duration,
) -> AgentHandle {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        run_agent(index, name, role, backend, rx, reports, cancel, heartbeat).await;
    });
    AgentHandle { inbox: tx }
}

#[allow(clippy::too_many_arguments)]
async fn run_agent(
    index: usize,
    name: String,
    role: Role,
    backend: Backend,
    mut inbox: mpsc::Receiver<(usize, Task)>,
    reports: mpsc::UnboundedSender<Report>,
    cancel: CancellationToken,
    heartbeat: Duration,
) {
    let (ack_tx, ack_rx) = oneshot::channel();
    if reports
        .send(Report::Hello {
            agent: index,
            role,
            model: backend.model(),
            ack: ack_tx,
        })
        .is_err()
    {
        return;
    }
    // No work before the coordinator has acknowledged the handshake.
    tokio::select! {
        r = ack_rx => if r.is_err() { return },
        _ = cancel.cancelled() => return,
    }
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            next = inbox.recv() => {
                let Some((task_index, task)) = next else { break };
                let _ = reports.send(Report::Started { agent: index, task: task_index });
                let work = AssertUnwindSafe(execute(&name, &task, &backend, &cancel)).catch_unwind();
                tokio::pin!(work);
                let result = loop {
                    tokio::select! {
                        r = &mut work => break r,
                        _ = beat.tick() => { let _ = reports.send(Report::Heartbeat { agent: index }); }
                    }
                };
                let result = result.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    failed(&name, &task, 0, 0, 0, Usage::default(), Duration::ZERO,
                        format!("internal error in {name}: {what}; the offline draft is kept"))
                });
                if reports.send(Report::Finished { agent: index, task: task_index, result: Box::new(result) }).is_err() {
                    break;
                }
            }
            _ = beat.tick() => {
                if reports.send(Report::Heartbeat { agent: index }).is_err() {
                    break;
                }
            }
        }
    }
    let _ = reports.send(Report::Stopped { agent: index });
}

fn result(name: &str, task: &Task, status: TaskStatus) -> TaskResult {
    TaskResult {
        task: task.id.clone(),
        module: task.module.clone(),
        role: task.role,
        agent: name.to_string(),
        status,
        files: task.draft.clone(),
        files_from: FilesFrom::Draft,
        attempts: 0,
        requests: 0,
        cache_hits: 0,
        usage: Usage::default(),
        latency: Duration::ZERO,
        error: None,
        contract: None,
        fatal: false,
    }
}

#[allow(clippy::too_many_arguments)]
fn failed(
    name: &str,
    task: &Task,
    attempts: u32,
    requests: u32,
    cache_hits: u32,
    usage: Usage,
    latency: Duration,
    error: String,
) -> TaskResult {
    TaskResult {
        attempts,
        requests,
        cache_hits,
        usage,
        latency,
        error: Some(error),
        ..result(name, task, TaskStatus::Failed)
    }
}

async fn execute(
    name: &str,
    task: &Task,
    backend: &Backend,
    cancel: &CancellationToken,
) -> TaskResult {
    match backend {
        Backend::Offline => TaskResult {
            attempts: 1,
            ..result(name, task, TaskStatus::Done)
        },
        Backend::Llm(llm) if task.ask_model => ask_model(name, task, llm, cancel).await,
        Backend::Llm(_) => TaskResult {
            attempts: 1,
            ..result(name, task, TaskStatus::Done)
        },
    }
}

/// The file a task's answer is held to the API contract for: a port task's target,
/// with the engine's draft of it (a DebugAgent's task has no draft).
fn contract_target(task: &Task) -> Option<(&str, &str)> {
    if task.role == Role::Debug {
        return None;
    }
    task.draft
        .first()
        .map(|(rel, text)| (rel.as_str(), text.as_str()))
}

/// Asks the model until an answer passes validation or the attempts are used up. A
/// port task's answer is then held to the module's API: sent back once with what it
/// lacks; if it still falls short, the written file is the answer merged with the
/// engine's draft, and the task says so.
async fn ask_model(
    name: &str,
    task: &Task,
    llm: &LlmBackend,
    cancel: &CancellationToken,
) -> TaskResult {
    let started = Instant::now();
    let mut messages = task.messages.clone();
    let mut usage = Usage::default();
    let (mut requests, mut hits) = (0u32, 0u32);
    // The last answer was cut at this `max_tokens` (`finish_reason == "length"`).
    let mut cut: Option<u32>;
    let attempts = llm.max_answer_attempts.max(1);
    let (mut asked, mut rejected) = (0u32, 0u32);
    let target = contract_target(task);
    // The answer that broke the contract and was sent back, with its judgement.
    let mut sent_back: Option<(Vec<(String, String)>, Judgement)> = None;
    let last_error = loop {
        asked += 1;
        let req = ChatRequest {
            messages: messages.clone(),
            temperature: llm.temperature,
            max_tokens: llm.max_tokens.or(task.max_tokens),
            model: None,
        };
        let key = llm.cache.as_ref().map(|c| c.key(&req));
        let cached = match (&llm.cache, &key) {
            (Some(c), Some(k)) => c.get(k),
            _ => None,
        };
        let answer = match cached {
            Some(a) => {
                hits += 1;
                cut = None;
                a
            }
            None => {
                requests += 1;
                let r = if llm.stream {
                    llm.client.chat_stream(&req, cancel, &mut |_| {}).await
                } else {
                    llm.client.chat(&req, cancel).await
                };
                match r {
                    Ok(r) => {
                        usage.add(&r.usage);
                        if let (Some(c), Some(k)) = (&llm.cache, &key) {
                            c.put(k, &r.content);
                        }
                        cut = (r.finish_reason.as_deref() == Some("length"))
                            .then_some(req.max_tokens)
                            .flatten();
                        r.content
                    }
                    Err(LlmError::Cancelled { .. }) => {
                        return TaskResult {
                            attempts: asked,
                            requests,
                            cache_hits: hits,
                            usage,
                            latency: started.elapsed(),
                            ..result(name, task, TaskStatus::Cancelled)
                        };
                    }
                    Err(e) => {
                        if matches!(e, LlmError::NotSent { .. }) {
                            requests -= 1;
                        }
                        // The client stopped sending: said once for the whole run.
                        let fatal = e.stops_requests();
                        if let (Some(best), false, Some(target)) = (sent_back.take(), fatal, target)
                        {
                            return TaskResult {
                                attempts: asked,
                                requests,
                                cache_hits: hits,
                                usage,
                                latency: started.elapsed(),
                                ..merged(
                                    name,
                                    task,
                                    target,
                                    best,
                                    Some(format!("the resend failed: {e}")),
                                )
                            };
                        }
                        let mut r = failed(
                            name,
                            task,
                            asked,
                            requests,
                            hits,
                            usage,
                            started.elapsed(),
                            format!("{e}; the offline draft is kept"),
                        );
                        r.fatal = fatal;
                        return r;
                    }
                }
            }
        };
        let done = |files, contract, usage| TaskResult {
            files,
            files_from: FilesFrom::Model,
            attempts: asked,
            requests,
            cache_hits: hits,
            usage,
            latency: started.elapsed(),
            contract,
            ..result(name, task, TaskStatus::Done)
        };
        match extract_files(&answer, &task.extract) {
            Ok(files) => {
                let files: Vec<(String, String)> = files
                    .into_iter()
                    .map(|f| (format!("{}{}", task.package_dir, f.path), f.content))
                    .collect();
                let Some((target_rel, draft)) = target else {
                    return done(files, None, usage);
                };
                let text = files
                    .iter()
                    .find(|(rel, _)| rel == target_rel)
                    .map_or("", |(_, t)| t.as_str());
                // A group's answer is judged for the group's items only.
                let judged = match &task.group {
                    Some(g) => groups::judge(draft, &task.api, text, g),
                    None => contract::judge(draft, &task.api, text),
                };
                match sent_back.take() {
                    None if judged.clean() => return done(files, None, usage),
                    None => {
                        tracing::debug!(
                            task = %task.id,
                            missing = judged.missing.len(),
                            changed = judged.changed.len(),
                            "answer breaks the module's API: sent back once"
                        );
                        let shown = target_rel
                            .strip_prefix(task.package_dir.as_str())
                            .unwrap_or(target_rel);
                        messages.push(Message::assistant(answer));
                        messages.push(Message::user(match &task.group {
                            Some(g) => groups::resend_message(&judged, shown, g),
                            None => judged.resend_message(shown),
                        }));
                        sent_back = Some((files, judged));
                    }
                    Some(_) if judged.clean() => {
                        let report = ContractReport {
                            resent: true,
                            ..ContractReport::default()
                        };
                        return done(files, Some(report), usage);
                    }
                    Some(first) => {
                        // The answer with fewer shortfalls is merged (the later on a tie).
                        let best = if judged.shortfalls() <= first.1.shortfalls() {
                            (files, judged)
                        } else {
                            first
                        };
                        return TaskResult {
                            attempts: asked,
                            requests,
                            cache_hits: hits,
                            usage,
                            latency: started.elapsed(),
                            ..merged(name, task, (target_rel, draft), best, None)
                        };
                    }
                }
            }
            Err(e) => {
                tracing::debug!(task = %task.id, attempt = asked, "answer rejected: {e}");
                if let (Some(best), Some(target)) = (sent_back.take(), target) {
                    return TaskResult {
                        attempts: asked,
                        requests,
                        cache_hits: hits,
                        usage,
                        latency: started.elapsed(),
                        ..merged(
                            name,
                            task,
                            target,
                            best,
                            Some(format!("the answer to the resend was rejected: {e}")),
                        )
                    };
                }
                rejected += 1;
                if rejected >= attempts {
                    break match cut {
                        Some(n) => format!(
                            "{e} (the answer was cut off at max_tokens = {n}; raise ETERNA_PORT_LLM_MAX_TOKENS if the module needs more)"
                        ),
                        None => e.to_string(),
                    };
                }
                messages.push(Message::assistant(answer));
                messages.push(Message::user(format!(
                    "Your answer was rejected: {e}. Answer again with the complete file(s), \
                     each in a ```rust block whose info string names its path."
                )));
            }
        }
    };
    failed(
        name,
        task,
        asked,
        requests,
        hits,
        usage,
        started.elapsed(),
        format!(
            "the model's answer was rejected {attempts} time(s), last: {last_error}; the offline draft is kept"
        ),
    )
}

/// The result of an answer that still breaks the API after the resend: its files, with
/// the target merged with the engine's draft, and what the contract found.
fn merged(
    name: &str,
    task: &Task,
    (target_rel, draft): (&str, &str),
    (mut files, judged): (Vec<(String, String)>, Judgement),
    note: Option<String>,
) -> TaskResult {
    if let Some(g) = &task.group {
        // A group's answer holds only its items: the items it falls short on keep the
        // draft's when the module's groups are merged ([`groups::fold`]).
        let mut report = judged.report();
        report.resent = true;
        report.kept_from_draft = report
            .missing
            .iter()
            .chain(&report.changed)
            .filter_map(|n| g.unit_of(n))
            .fold(Vec::new(), |mut v: Vec<String>, i| {
                if !v.iter().any(|x| x == i) {
                    v.push(i.to_string());
                }
                v
            });
        report.note = note;
        tracing::debug!(task = %task.id, kept = report.kept_from_draft.len(), "group answer falls short; its items keep the draft");
        return TaskResult {
            files,
            files_from: FilesFrom::Merged,
            contract: Some(report),
            ..result(name, task, TaskStatus::Done)
        };
    }
    let answer = files
        .iter()
        .find(|(rel, _)| rel == target_rel)
        .map_or(String::new(), |(_, t)| t.clone());
    let m = contract::merge(draft, &answer);
    match files.iter_mut().find(|(rel, _)| rel == target_rel) {
        Some((_, t)) => *t = m.text,
        None => files.push((target_rel.to_string(), m.text)),
    }
    let mut report = judged.report();
    report.resent = true;
    report.kept_from_draft = m.kept_from_draft;
    report.note = match (note, m.whole_draft) {
        (n, false) => n,
        (None, true) => Some(WHOLE_DRAFT.to_string()),
        (Some(n), true) => Some(format!("{n}; {WHOLE_DRAFT}")),
    };
    tracing::debug!(task = %task.id, kept = report.kept_from_draft.len(), "answer merged with the draft");
    TaskResult {
        files,
        files_from: FilesFrom::Merged,
        contract: Some(report),
        ..result(name, task, TaskStatus::Done)
    }
}

const WHOLE_DRAFT: &str =
    "merged with the answer, the file would have fewer ported items than the draft: the draft is kept whole";
