//! The agent swarm: a coordinator that runs agents as tokio tasks with mailboxes.
//!
//! - Every agent introduces itself with a handshake (name, specialization, languages,
//!   model) and gets no work before the coordinator acknowledges it.
//! - Agents send heartbeats, busy or idle; the coordinator keeps a health table
//!   (status, last heartbeat, tasks done/failed, mean latency) and marks an agent that
//!   misses three heartbeats `unresponsive` until it is heard from again.
//! - Tasks are routed by kind ([`Role`]) to an idle agent of that role, in plan order,
//!   with at most `jobs` in flight; one failing module never stops the others.
//! - Cancellation (Ctrl-C) stops dispatching, aborts requests in flight and returns what
//!   finished; the caller then writes nothing.
//! - A client that stops sending (the server cannot be reached, refuses every key: the
//!   LLM client's circuit breaker) does not stop the run: the tasks left fail at once
//!   without a request, each keeping its draft ([`TaskResult::fatal`],
//!   [`SwarmOutcome::fatal`]), and the caller writes the drafts.
//!
//! Agents have a backend: [`Backend::Offline`] hands back the offline engine's draft,
//! [`Backend::Llm`] asks an OpenAI-compatible model (with the response cache) and
//! accepts only answers that pass [`crate::llm::extract_files`]; a port task's answer
//! is then held to the module's API ([`contract`]): sent back once with what it lacks,
//! then merged with the engine's draft.

mod agent;
pub mod cache;
pub mod contract;
mod coordinator;
pub mod groups;
pub mod primary;
pub mod prompts;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use cache::ResponseCache;
pub use contract::ContractReport;
pub use coordinator::{run, SwarmOptions, SwarmOutcome};
pub use groups::Group;

use crate::llm::{ExtractOptions, LlmClient, Message, Usage};

/// The kinds of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Plan → ordered tasks; integrates the results into the run summary.
    Primary,
    /// The ARM64 → x86_64 port of one architecture-specific module.
    EternaPort,
    /// Architecture-neutral edits: cfg gates, `mod` wiring, build configuration.
    Code,
    /// Fixes the `cargo check` errors of one module.
    Debug,
}

impl Role {
    /// The agent's name (`EternaPortAgent`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "PrimaryAgent",
            Role::EternaPort => "EternaPortAgent",
            Role::Code => "CodeAgent",
            Role::Debug => "DebugAgent",
        }
    }

    /// What the agent does, as its handshake says.
    pub fn specialization(self) -> &'static str {
        match self {
            Role::Primary => {
                "planning: turns the port plan into ordered tasks and integrates their results"
            }
            Role::EternaPort => "ARM64 EL2 to x86_64 VT-x port of one architecture-specific module",
            Role::Code => "architecture-neutral edits: cfg gates, mod wiring, re-exports",
            Role::Debug => "fixing cargo check errors of one module",
        }
    }

    /// The languages it works in, as its handshake says.
    pub fn languages(self) -> &'static [&'static str] {
        match self {
            Role::Primary => &["rust"],
            Role::EternaPort => &["rust", "aarch64-asm", "x86_64-asm"],
            Role::Code => &["rust", "toml"],
            Role::Debug => &["rust", "rustc-diagnostics"],
        }
    }
}

/// One unit of work for one agent.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique within a run, e.g. `hv::arch::vmcs#port`.
    pub id: String,
    /// The module path the task is about.
    pub module: String,
    /// Which kind of agent runs it.
    pub role: Role,
    /// The prompt (LLM backend).
    pub messages: Vec<Message>,
    /// Which files the answer may contain, relative to the package root.
    pub extract: ExtractOptions,
    /// The package directory relative to the workspace root (`""` for the root package,
    /// else ending in `/`): package-relative answer paths are joined to it.
    pub package_dir: String,
    /// The offline engine's result for this task (workspace-relative path, text).
    pub draft: Vec<(String, String)>,
    /// Ask the model (LLM backend); `false`: the agent hands back the draft.
    pub ask_model: bool,
    /// The public items of the module's ARM64 source (the scan's), for the API
    /// contract where the draft lacks them; empty where the draft is the whole API.
    pub api: Vec<crate::workspace::Item>,
    /// `max_tokens` of the task's requests ([`answer_max_tokens`] of its files), unless
    /// the `llm-max-tokens` setting overrides it ([`LlmBackend::max_tokens`]).
    pub max_tokens: Option<u32>,
    /// The group of the module's items this task asks for, when the module's prompt
    /// was over the prompt budget ([`groups`]): the answer is judged for those items
    /// only, and [`run`] merges the module's groups into one result. `None`: the whole
    /// module.
    pub group: Option<Group>,
}

/// Characters per token assumed for the size of an answer: 4 characters a token, the
/// usual estimate for English and code. (The prompt budget counts 3, on the safe side
/// for a prompt: [`groups::estimate_tokens`].)
pub const CHARS_PER_TOKEN: usize = 4;
/// An answer's room over the size of the file it rewrites: stubs become bodies, and
/// code tokenizes denser than prose.
pub const ANSWER_FACTOR: usize = 2;
/// Room for the fences, the path and a sentence around the code.
pub const ANSWER_HEADROOM: usize = 1024;
/// Upper bound of the computed `max_tokens`.
pub const ANSWER_MAX_TOKENS: usize = 32768;

/// The `max_tokens` of an answer that rewrites files of these sizes (characters of
/// the largest file it has to write, or of the source it ports):
/// `max_chars / 4 × 2 + 1024`, at most `32768`. A model that rambles is cut off
/// there instead of talking until its context is full; the bound is generous enough
/// that a real answer fits (a cut answer, `finish_reason == "length"`, is said so in
/// the task's error when it is rejected).
pub fn answer_max_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u32 {
    let chars = texts
        .into_iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(0);
    let tokens = chars.div_ceil(CHARS_PER_TOKEN) * ANSWER_FACTOR + ANSWER_HEADROOM;
    tokens.min(ANSWER_MAX_TOKENS) as u32
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// It produced its result.
    Done,
    /// It failed; the module keeps the draft.
    Failed,
    /// The run was cancelled before it finished.
    Cancelled,
}

impl TaskStatus {
    /// `done`, `failed` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a task's files came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilesFrom {
    /// The offline engine (offline backend, or the draft kept after a failed task).
    Draft,
    /// The model's answer.
    Model,
    /// The model's answer with the draft's items where it broke the module's API.
    Merged,
}

/// The result of one task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    /// The task's id.
    pub task: String,
    /// The module it is about.
    pub module: String,
    /// Which kind of agent ran it.
    pub role: Role,
    /// The agent instance that ran it (`EternaPortAgent#2`).
    pub agent: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Workspace-relative path and text of every file of the result.
    #[serde(skip)]
    pub files: Vec<(String, String)>,
    /// Where its files come from.
    pub files_from: FilesFrom,
    /// Answers asked for (the first one, rejected-answer retries, and the one resend
    /// of an answer that broke the module's API).
    pub attempts: u32,
    /// HTTP requests made (0 when every answer came from the cache).
    pub requests: u32,
    /// Answers taken from the cache.
    pub cache_hits: u32,
    /// Tokens and cost, as the server reported them.
    pub usage: Usage,
    #[serde(serialize_with = "ser_ms")]
    /// Wall time of its requests.
    pub latency: Duration,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// What the API contract found, when the answer did not keep the module's API at
    /// first (`None`: it did, or the task is not a port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<ContractReport>,
    /// The client stopped sending requests (the server cannot be reached, refuses
    /// every key, or the client is misconfigured): this task and every later one that
    /// needs a request fail without it, each keeping its draft. Said once for all.
    #[serde(skip)]
    pub fatal: bool,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The LLM side of the agents.
pub struct LlmBackend {
    /// The OpenAI-compatible client, shared by every agent.
    pub client: LlmClient,
    /// `None` with `--no-cache`.
    pub cache: Option<ResponseCache>,
    /// Stream answers (SSE) instead of waiting for the whole body.
    pub stream: bool,
    /// Answers asked for per task: a rejected answer (invalid Rust, a path outside the
    /// targets) is sent back with the reason, up to this many times in all.
    pub max_answer_attempts: u32,
    /// Sampling temperature of every request.
    pub temperature: Option<f32>,
    /// `max_tokens` of every request (the `llm-max-tokens` setting), over each task's
    /// own [`Task::max_tokens`].
    pub max_tokens: Option<u32>,
}

/// What the agents run on.
#[derive(Clone)]
pub enum Backend {
    /// The agents hand back the offline engine's drafts.
    Offline,
    /// The agents ask the model.
    Llm(Arc<LlmBackend>),
}

impl Backend {
    /// The model's name (`offline-engine` offline).
    pub fn model(&self) -> String {
        match self {
            Backend::Offline => "offline-engine".into(),
            Backend::Llm(l) => l.client.settings().model.clone(),
        }
    }
}

/// What the swarm reports while it works (`--message-format json`: one per line).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Event {
    /// An agent's handshake.
    AgentStarted {
        /// The agent instance (`EternaPortAgent#2`).
        agent: String,
        /// Its kind.
        role: Role,
        /// What it does.
        specialization: String,
        /// The languages it works in.
        languages: Vec<String>,
        /// The model it asks.
        model: String,
    },
    /// An agent started a task.
    TaskStarted {
        /// The task's id.
        task: String,
        /// The module it is about.
        module: String,
        /// The agent instance.
        agent: String,
        /// The kind of task (a `debug` task is one the fix loop added).
        role: Role,
    },
    /// A task ended, with its result.
    TaskFinished(TaskResult),
    /// A change in an agent's health (and the whole table at the end).
    AgentHealth(crate::store::HealthRecord),
    /// Totals of the swarm run.
    Usage {
        /// Tasks run.
        tasks: usize,
        /// Tasks that failed.
        failed: usize,
        /// Requests sent.
        requests: u32,
        /// Answers from the cache.
        cache_hits: u32,
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Answer tokens.
        completion_tokens: u64,
        /// Cost in USD, when the server says.
        cost: Option<f64>,
        /// Wall time of the swarm, first handshake to last result.
        wall_ms: u64,
        /// CPU time (user + system) of this process during the swarm, where known.
        cpu_ms: Option<u64>,
    },
}

/// User + system CPU time of this process so far.
pub(crate) fn process_cpu() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call above.
        let u = unsafe { u.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Some(tv(u.ru_utime) + tv(u.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_follow_the_largest_file_within_bounds() {
        // 10 000 characters: 2 500 tokens, twice that, plus the headroom.
        let big = "x".repeat(10_000);
        assert_eq!(answer_max_tokens([big.as_str(), "fn f() {}"]), 6024);
        assert_eq!(answer_max_tokens(["fn f() {}", big.as_str()]), 6024);
        assert_eq!(
            answer_max_tokens(["fn f() {}"]),
            1030,
            "3 tokens and the headroom"
        );
        assert_eq!(answer_max_tokens(std::iter::empty()), 1024);
        let huge = "x".repeat(1_000_000);
        assert_eq!(answer_max_tokens([huge.as_str()]), 32768, "a ceiling");
        // Characters, not bytes.
        let wide = "é".repeat(10_000);
        assert_eq!(answer_max_tokens([wide.as_str()]), 6024);
    }
}
