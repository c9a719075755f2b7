//! The coordinator: starts the agents, acknowledges their handshakes, routes tasks by
//! role to idle agents with at most `jobs` in flight, watches heartbeats and keeps the
//! health table.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent::{self, AgentHandle, Report};
use super::{Backend, Event, Role, Task, TaskResult, TaskStatus};
use crate::llm::Usage;
use crate::store::HealthRecord;

/// How the swarm runs.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// Tasks in flight at most (`--jobs`).
    pub jobs: usize,
    /// Heartbeat period; an agent silent for three periods is `unresponsive`.
    pub heartbeat: Duration,
    /// Cancelled on Ctrl-C.
    pub cancel: CancellationToken,
}

/// What the swarm returns.
#[derive(Debug)]
pub struct SwarmOutcome {
    /// One result per task, in task order; the group tasks of a module
    /// ([`super::Task::group`]) folded into one result with the module's task id.
    pub results: Vec<TaskResult>,
    /// The health table at the end of the run (the PrimaryAgent first).
    pub health: Vec<HealthRecord>,
    /// The run was cancelled (Ctrl-C or its token) before every task finished.
    pub cancelled: bool,
    /// The first error that stopped the client sending requests (the server cannot be
    /// reached, refuses every key, or the client is misconfigured); the tasks after it
    /// failed without a request, each keeping its draft.
    pub fatal: Option<String>,
    /// Wall time of the swarm run.
    pub wall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Idle,
    Busy,
    Unresponsive,
    Stopped,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Idle => "idle",
            State::Busy => "busy",
            State::Unresponsive => "unresponsive",
            State::Stopped => "stopped",
        }
    }
}

struct Health {
    name: String,
    role: Role,
    model: String,
    state: State,
    last_heartbeat: Option<(Instant, SystemTime)>,
    done: i64,
    failed: i64,
    latency_total: Duration,
    /// The task it is running.
    task: Option<usize>,
}

impl Health {
    fn record(&self) -> HealthRecord {
        let finished = self.done + self.failed;
        HealthRecord {
            agent: self.name.clone(),
            specialization: self.role.specialization().into(),
            languages: self.role.languages().join(","),
            model: self.model.clone(),
            status: self.state.as_str().into(),
            last_heartbeat: self.last_heartbeat.map(|(_, t)| rfc3339(t)),
            tasks_done: self.done,
            tasks_failed: self.failed,
            mean_latency_ms: (finished > 0)
                .then(|| self.latency_total.as_secs_f64() * 1000.0 / finished as f64),
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Runs `tasks` on a swarm of agents of `backend`. `on_event` sees every event as it
/// happens (on the caller's task).
pub async fn run(
    tasks: Vec<Task>,
    backend: Backend,
    opts: &SwarmOptions,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> SwarmOutcome {
    let started = Instant::now();
    let cpu_start = super::process_cpu();
    let jobs = opts.jobs.max(1);
    let heartbeat = opts.heartbeat.max(Duration::from_millis(10));
    let cancel = opts.cancel.child_token();
    let (report_tx, mut reports) = mpsc::unbounded_channel::<Report>();

    // Agents per role: as many as the role has tasks, at most `jobs`.
    let mut agents: Vec<AgentHandle> = Vec::new();
    let mut health: Vec<Health> = Vec::new();
    for role in [Role::EternaPort, Role::Code, Role::Debug] {
        let n = tasks.iter().filter(|t| t.role == role).count().min(jobs);
        for i in 1..=n {
            let name = format!("{}#{i}", role.name());
            let index = agents.len();
            agents.push(agent::spawn(
                index,
                name.clone(),
                role,
                backend.clone(),
                report_tx.clone(),
                cancel.clone(),
                heartbeat,
            ));
            health.push(Health {
                name,
                role,
                model: backend.model(),
                state: State::Starting,
                last_heartbeat: None,
                done: 0,
                failed: 0,
                latency_total: Duration::ZERO,
                task: None,
            });
        }
    }
    drop(report_tx);

    let mut queue: VecDeque<usize> = (0..tasks.len()).collect();
    let mut results: Vec<Option<TaskResult>> = vec![None; tasks.len()];
    let mut in_flight = 0usize;
    let mut fatal: Option<String> = None;
    let mut watchdog = tokio::time::interval(heartbeat);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopped = 0usize;
    let total_agents = agents.len();

    loop {
        // Route: each queued task, in plan order, to an idle agent of its role.
        if !cancel.is_cancelled() {
            let mut i = 0;
            while i < queue.len() && in_flight < jobs {
                let t = queue[i];
                let idle = health
                    .iter()
                    .position(|h| h.role == tasks[t].role && h.state == State::Idle);
                match idle {
                    Some(a) => {
                        queue.remove(i);
                        health[a].state = State::Busy;
                        health[a].task = Some(t);
                        in_flight += 1;
                        if agents[a].inbox.try_send((t, tasks[t].clone())).is_err() {
                            // The agent is gone: put the task back for another one.
                            health[a].state = State::Stopped;
                            health[a].task = None;
                            in_flight -= 1;
                            queue.insert(i, t);
                            i += 1;
                        }
                    }
                    None => i += 1,
                }
            }
        }
        let work_left = in_flight > 0 || (!queue.is_empty() && !cancel.is_cancelled());
        if !work_left {
            break;
        }
        // Tasks no live agent can take (every agent of the role stopped) fail.
        if in_flight == 0 {
            let stuck: Vec<usize> = queue
                .iter()
                .copied()
                .filter(|&t| {
                    !health
                        .iter()
                        .any(|h| h.role == tasks[t].role && h.state != State::Stopped)
                })
                .collect();
            if !stuck.is_empty() && stuck.len() == queue.len() {
                break;
            }
        }
        tokio::select! {
            biased;
            _ = opts.cancel.cancelled(), if !cancel.is_cancelled() => {
                cancel.cancel();
            }
            r = reports.recv() => {
                let Some(r) = r else { break };
                match r {
                    Report::Hello { agent, role, model, ack } => {
                        let h = &mut health[agent];
                        h.model = model;
                        h.state = State::Idle;
                        h.last_heartbeat = Some((Instant::now(), SystemTime::now()));
                        let _ = ack.send(());
                        on_event(&Event::AgentStarted {
                            agent: h.name.clone(),
                            role,
                            specialization: role.specialization().into(),
                            languages: role.languages().iter().map(|s| s.to_string()).collect(),
                            model: h.model.clone(),
                        });
                    }
                    Report::Heartbeat { agent } => {
                        let h = &mut health[agent];
                        h.last_heartbeat = Some((Instant::now(), SystemTime::now()));
                        if h.state == State::Unresponsive {
                            h.state = if h.task.is_some() { State::Busy } else { State::Idle };
                            on_event(&Event::AgentHealth(h.record()));
                        }
                    }
                    Report::Started { agent, task } => {
                        on_event(&Event::TaskStarted {
                            task: tasks[task].id.clone(),
                            module: tasks[task].module.clone(),
                            agent: health[agent].name.clone(),
                            role: tasks[task].role,
                        });
                    }
                    Report::Finished { agent, task, result } => {
                        let h = &mut health[agent];
                        h.last_heartbeat = Some((Instant::now(), SystemTime::now()));
                        h.task = None;
                        if h.state != State::Stopped {
                            h.state = State::Idle;
                        }
                        in_flight = in_flight.saturating_sub(1);
                        match result.status {
                            TaskStatus::Done => h.done += 1,
                            TaskStatus::Failed => h.failed += 1,
                            TaskStatus::Cancelled => {}
                        }
                        if result.status != TaskStatus::Cancelled {
                            h.latency_total += result.latency;
                        }
                        // The client has stopped sending: the tasks left fail at
                        // once without a request ("not sent"), each with its draft.
                        if result.fatal && fatal.is_none() {
                            fatal = result.error.clone();
                        }
                        on_event(&Event::TaskFinished((*result).clone()));
                        results[task] = Some(*result);
                    }
                    Report::Stopped { agent } => {
                        let h = &mut health[agent];
                        h.state = State::Stopped;
                        stopped += 1;
                        if let Some(t) = h.task.take() {
                            // Stopped while holding a task (cannot happen without a
                            // panic in the agent loop): another agent takes it.
                            in_flight = in_flight.saturating_sub(1);
                            if results[t].is_none() {
                                queue.push_front(t);
                            }
                        }
                        if stopped == total_agents {
                            break;
                        }
                    }
                }
            }
            _ = watchdog.tick() => {
                let now = Instant::now();
                for h in &mut health {
                    let silent = h.last_heartbeat.map_or(true, |(t, _)| now.duration_since(t) > heartbeat * 3);
                    if matches!(h.state, State::Idle | State::Busy) && silent {
                        h.state = State::Unresponsive;
                        on_event(&Event::AgentHealth(h.record()));
                    }
                }
            }
        }
    }
    // Stop the agents: close their mailboxes and wait for their goodbyes.
    let cancelled = opts.cancel.is_cancelled();
    drop(agents);
    if cancelled {
        cancel.cancel();
    }
    let deadline = tokio::time::Instant::now() + heartbeat * 3 + Duration::from_secs(1);
    while stopped < total_agents {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(Report::Stopped { agent })) => {
                health[agent].state = State::Stopped;
                stopped += 1;
            }
            Ok(Some(Report::Finished {
                agent,
                task,
                result,
            })) => {
                health[agent].task = None;
                if results[task].is_none() {
                    on_event(&Event::TaskFinished((*result).clone()));
                    results[task] = Some(*result);
                }
            }
            Ok(Some(Report::Hello { ack, .. })) => drop(ack),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    for h in &mut health {
        if h.state != State::Unresponsive {
            h.state = State::Stopped;
        }
    }

    let results: Vec<TaskResult> = results
        .into_iter()
        .zip(&tasks)
        .map(|(r, t)| {
            r.unwrap_or_else(|| {
                let (status, error) = if cancelled {
                    (TaskStatus::Cancelled, None)
                } else {
                    (
                        TaskStatus::Failed,
                        Some("no agent could take the task; the offline draft is kept".to_string()),
                    )
                };
                TaskResult {
                    task: t.id.clone(),
                    module: t.module.clone(),
                    role: t.role,
                    agent: String::new(),
                    status,
                    files: t.draft.clone(),
                    files_from: super::FilesFrom::Draft,
                    attempts: 0,
                    requests: 0,
                    cache_hits: 0,
                    usage: Usage::default(),
                    latency: Duration::ZERO,
                    error,
                    contract: None,
                    fatal: false,
                }
            })
        })
        .collect();
    // A module sent as groups of its items is one result again: every group's accepted
    // items merged into its draft (each group had its own events).
    let results = super::groups::fold(&tasks, results);

    let mut table = vec![primary_record(&results, &backend)];
    table.extend(health.iter().map(Health::record));
    for h in &table {
        on_event(&Event::AgentHealth(h.clone()));
    }
    let mut usage = Usage::default();
    for r in &results {
        usage.add(&r.usage);
    }
    on_event(&Event::Usage {
        tasks: results.len(),
        failed: results
            .iter()
            .filter(|r| r.status == TaskStatus::Failed)
            .count(),
        requests: results.iter().map(|r| r.requests).sum(),
        cache_hits: results.iter().map(|r| r.cache_hits).sum(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        cost: usage.cost,
        wall_ms: started.elapsed().as_millis() as u64,
        cpu_ms: super::process_cpu()
            .zip(cpu_start)
            .map(|(end, start)| end.saturating_sub(start).as_millis() as u64),
    });
    SwarmOutcome {
        results,
        health: table,
        cancelled,
        fatal,
        wall: started.elapsed(),
    }
}

/// The PrimaryAgent's row: it planned every task and integrated every result.
fn primary_record(results: &[TaskResult], backend: &Backend) -> HealthRecord {
    let role = Role::Primary;
    HealthRecord {
        agent: format!("{}#1", role.name()),
        specialization: role.specialization().into(),
        languages: role.languages().join(","),
        model: match backend {
            Backend::Offline => "offline-engine".into(),
            Backend::Llm(_) => "none (plans locally)".into(),
        },
        status: "stopped".into(),
        last_heartbeat: Some(rfc3339(SystemTime::now())),
        tasks_done: results
            .iter()
            .filter(|r| r.status != TaskStatus::Cancelled)
            .count() as i64,
        tasks_failed: 0,
        mean_latency_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_651_200_123);
        assert_eq!(rfc3339(t), "2026-11-26T00:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
