//! The port as a library call ([`run`]): plan → offline drafts → the agent swarm →
//! safe writes → the cargo check loop → the figures. It prints nothing: what it has to
//! say goes to [`PortEvents`], its result is a [`PortRun`], and its errors are
//! [`Error`]s. The command line (`app/port.rs`) and the REST API call it alike.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::error::Outcome;
use super::{Error, Session};
use crate::config::Backend;
use crate::engine;
use crate::llm::{CancellationToken, LlmClient, LlmSettings};
use crate::plan::{self, ModulePlan};
use crate::report::{self, PortSummary};
use crate::store::{FixIterationRecord, Store};
use crate::swarm::{self, primary, prompts::ContextChunk, Event, TaskStatus};
use crate::workspace::Severity;
use crate::writer;

/// What the port is asked to do (the port flags of the command line).
#[derive(Debug, Clone, Default)]
pub struct PortOptions {
    /// Components, aliases, module paths or files to port; empty: every planned module.
    pub targets: Vec<String>,
    /// The backend; `None`: the configuration's (LLM when a key is set).
    pub backend: Option<Backend>,
    /// Decide and diff, write nothing.
    pub dry_run: bool,
    /// Write into a git tree with uncommitted changes.
    pub allow_dirty: bool,
    /// Write into a workspace outside git.
    pub allow_no_vcs: bool,
    /// Overwrite generated files edited by hand (a backup is kept).
    pub force: bool,
    /// Agent tasks in flight at most (at least 1).
    pub jobs: usize,
    /// Ask the model again instead of reusing cached answers.
    pub no_cache: bool,
    /// Accept answers that change a `Cargo.toml` or add a `build.rs`.
    pub allow_deps: bool,
    /// Fix rounds of the cargo check loop; 0 skips the loop.
    pub max_fix_iterations: u32,
    /// Check for the host target when the toolchain lacks the target's std.
    pub host_fallback: bool,
    /// Stream the model's answers (a stall timeout instead of a total one).
    pub stream: bool,
    /// Cancels the run (nothing more is asked or written; what is written stays whole).
    pub cancel: CancellationToken,
    /// Also cancel on Ctrl-C (the command line; a server cancels through `cancel`).
    pub cancel_on_ctrl_c: bool,
    /// Only the tasks of these agents run (one agent, as the REST API's
    /// `/agent/{type}/execute` asks); the other modules keep the offline engine's
    /// drafts. `None`: every agent.
    pub roles: Option<Vec<swarm::Role>>,
}

/// How important a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Worth knowing (which backend, which toolchain).
    Note,
    /// Something went wrong and the port went on.
    Warning,
    /// Something failed that the result will show.
    Error,
}

impl Level {
    /// `note`, `warning` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// What the port tells its caller while it works. Called from the swarm's threads.
pub trait PortEvents: Send + Sync {
    /// A message for the user.
    fn message(&self, level: Level, text: &str);
    /// Files scanned so far.
    fn scanning(&self, _files: usize) {}
    /// The swarm is about to run this many tasks.
    fn tasks(&self, _tasks: usize) {}
    /// A swarm event (a task started, finished, an agent's heartbeat, …).
    fn swarm(&self, event: &Event);
    /// What the fix loop is doing now, in a few words.
    fn progress(&self, _text: &str) {}
    /// One fix-loop iteration, as the store records it.
    fn fix_iteration(&self, _record: &FixIterationRecord) {}
}

/// The result of a port that ran to the end.
#[derive(Debug)]
pub struct PortRun {
    /// The figures; `None` when there was no ARM64 code to port.
    pub summary: Option<PortSummary>,
    /// Every file the writer decided on (with `dry_run`, what it would write).
    pub planned: Vec<writer::Planned>,
    /// Done, or done with problems (stubs left, tasks failed, check errors left).
    pub outcome: Outcome,
}

/// Retrieved context per module, in tokens (about 4 characters each).
const CONTEXT_BUDGET_TOKENS: usize = 3000;

/// Ports the selected modules of the session's workspace (see the module docs).
pub fn run(
    s: &Session,
    flags: &PortOptions,
    events: Arc<dyn PortEvents>,
) -> Result<PortRun, Error> {
    let full = s.full_plan(!flags.dry_run, &|n| events.scanning(n));
    let unscannable: Vec<_> = full
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .cloned()
        .collect();
    if !unscannable.is_empty() {
        return Err(Error::Unscannable {
            diagnostics: unscannable,
        });
    }
    let mut selected = full.clone();
    plan::select(&mut selected, &flags.targets, &s.knowledge)?;
    if selected.modules.is_empty() {
        events.message(Level::Note, "no ARM64 code to port");
        return Ok(PortRun {
            summary: None,
            planned: Vec::new(),
            outcome: Outcome::Done,
        });
    }

    let backend = flags.backend.unwrap_or(s.config.backend.value);
    let settings = LlmSettings::from_config(&s.config);
    if backend == Backend::Llm && settings.keys.is_empty() && settings.openrouter_usage {
        return Err(anyhow::anyhow!(
            "--backend llm: no API key is set for {}; set OPENROUTER_API_KEY (or OPENROUTER_API_KEY1..3) in the environment or the workspace's .env, or point ETERNA_PORT_LLM_BASE_URL at a local OpenAI-compatible server",
            settings.base_url
        )
        .into());
    }
    if backend == Backend::Offline && flags.backend.is_none() {
        events.message(
            Level::Note,
            "no API key set (OPENROUTER_API_KEY…): porting with the offline engine",
        );
    }

    // Every setting was checked with the configuration, before anything is recorded
    // or asked.
    let heartbeat = s.config.heartbeat();
    let stream = flags.stream;
    let client = match backend {
        Backend::Llm => Some(LlmClient::new(settings.clone())?),
        Backend::Offline => None,
    };
    // Held until the port returns: one writing run per workspace, across processes.
    let _write_lock = if flags.dry_run {
        None
    } else {
        writer::check_vcs(
            &s.ws.root,
            &s.own_paths(),
            flags.allow_dirty,
            flags.allow_no_vcs,
        )?;
        Some(writer::WriteLock::acquire(&s.ws.target_dir)?)
    };
    let package_dirs: BTreeMap<String, PathBuf> =
        s.ws.packages()
            .filter_map(|p| {
                p.manifest_path
                    .parent()
                    .map(|d| (p.name.to_string(), d.as_std_path().to_path_buf()))
            })
            .collect();
    let crate_roots: BTreeMap<String, String> =
        s.ws.packages()
            .flat_map(crate::workspace::target_roots)
            .map(|(name, root)| (name, s.ws.relative(&root)))
            .collect();
    let manifests: BTreeMap<String, String> =
        s.ws.packages()
            .map(|p| {
                (
                    p.name.to_string(),
                    s.ws.relative(p.manifest_path.as_std_path()),
                )
            })
            .collect();
    // ARM-only dependencies: x86_64 code does not import them, and the port may move
    // them under the aarch64 target table (those already there stay).
    let arm_dependencies: Vec<engine::deps::ArmDependency> = full
        .arm_dependencies
        .iter()
        .filter(|d| d.kind == "normal")
        .map(|d| engine::deps::ArmDependency {
            package: d.package.clone(),
            name: d.name.clone(),
            used_outside_arm64: !d.used_outside_arm64.is_empty(),
        })
        .collect();
    let mut output = engine::port::port(&engine::port::PortJob {
        root: &s.ws.root,
        full: &full,
        selected: &selected,
        knowledge: &s.knowledge,
        crate_roots: &crate_roots,
        manifests: &manifests,
        arm_dependencies: &arm_dependencies,
    })?;

    let state = s.ws.target_dir.join("eterna-port");
    // Every written version goes to the store's code_artifacts; a dry run only reads
    // an existing store and never creates one.
    let store = if flags.dry_run && !s.config.db.value.exists() {
        None
    } else {
        Some(Store::open(&s.config.db.value)?)
    };
    let run = match (&store, flags.dry_run) {
        (Some(store), false) => Some(store.begin_run("port")?),
        _ => None,
    };

    // The PrimaryAgent: tasks with their prompts.
    let llm = backend == Backend::Llm;
    // What the prompts say of the workspace is read from it; whether a draft compiles,
    // from one check of the drafts before any prompt.
    let mut prompts = swarm::prompts::Prompts::embedded()?.with_workspace(
        crate::workspace::WorkspaceFacts::read(&s.ws, &s.config.console),
    );
    if llm {
        let packages = selected.packages();
        prompts = prompts.with_draft_checks(super::draft_check::check_drafts(
            &super::draft_check::DraftCheckJob {
                root: &s.ws.root,
                target_dir: &s.ws.target_dir,
                changes: &output.changes,
                modules: &selected.modules,
                packages: &packages,
                target: &s.config.target.value,
                host_fallback: flags.host_fallback,
            },
        ));
    }
    let written: BTreeSet<String> = output.changes.iter().map(|c| c.rel.clone()).collect();
    let embedder = if llm {
        Some(super::index::make_embedder(&s.config)?)
    } else {
        None
    };
    if let (true, Some(store)) = (llm, &store) {
        if store.stats()?.chunks == 0 {
            super::index::refresh(s, store)?;
        }
    }
    let retrieval = std::time::Instant::now();
    // Retrieved context per module, in parallel (one store connection per worker).
    let contexts: BTreeMap<String, Vec<ContextChunk>> = match (&store, &embedder) {
        (Some(_), Some(embedder)) => {
            use rayon::prelude::*;
            let db = &s.config.db.value;
            selected
                .modules
                .par_iter()
                .map_init(
                    || Store::open(db).ok(),
                    |conn, m| {
                        let chunks = match conn {
                            Some(conn) => retrieve(conn, m, embedder.as_ref(), &written),
                            None => Vec::new(),
                        };
                        (m.module_path.clone(), chunks)
                    },
                )
                .collect()
        }
        _ => BTreeMap::new(),
    };
    tracing::debug!(
        ms = retrieval.elapsed().as_millis() as u64,
        "context retrieved for the modules"
    );
    let context = |m: &ModulePlan| -> Vec<ContextChunk> {
        contexts.get(&m.module_path).cloned().unwrap_or_default()
    };
    let planning = std::time::Instant::now();
    let mut tasks = primary::port_tasks(&primary::Inputs {
        root: &s.ws.root,
        full: &full,
        selected: &selected,
        output: &output,
        package_dirs: &package_dirs,
        knowledge: &s.knowledge,
        prompts: &prompts,
        context: &context,
        allow_deps: flags.allow_deps,
        triple: &s.config.target.value,
        llm,
        prompt_budget: Some(s.config.prompt_budget.value as usize),
    })?;
    if let Some(roles) = &flags.roles {
        tasks.retain(|t| roles.contains(&t.role));
    }
    tracing::debug!(
        tasks = tasks.len(),
        ms = planning.elapsed().as_millis() as u64,
        "PrimaryAgent planned the tasks"
    );

    let swarm_backend = if let Some(client) = client {
        let cache = match (&store, flags.no_cache) {
            (Some(_), false) => Some(swarm::ResponseCache::new(
                Store::open(&s.config.db.value)?,
                settings.model.clone(),
            )),
            _ => None,
        };
        swarm::Backend::Llm(Arc::new(swarm::LlmBackend {
            client,
            cache,
            stream,
            max_answer_attempts: 2,
            temperature: Some(0.2),
            max_tokens: s.config.llm_max_tokens.as_ref().map(|m| m.value),
        }))
    } else {
        swarm::Backend::Offline
    };
    let (runtime, cancel) = runtime(&flags.cancel, flags.cancel_on_ctrl_c)?;
    let options = swarm::SwarmOptions {
        jobs: flags.jobs.max(1),
        heartbeat,
        cancel: cancel.clone(),
    };
    events.tasks(tasks.len());
    if let swarm::Backend::Llm(l) = &swarm_backend {
        // What the client says once about the server (it stopped sending, or sends one
        // request at a time).
        let events = events.clone();
        l.client.on_notice(move |n| match n {
            crate::llm::Notice::Stopped { message } => events.message(
                Level::Error,
                &format!(
                    "{message}. Every module not answered yet keeps the offline engine's draft, and the fix loop goes on offline"
                ),
            ),
            crate::llm::Notice::Serial { message } => events.message(Level::Warning, message),
        });
    }
    let mut on_event = |e: &Event| events.swarm(e);
    let outcome = runtime.block_on(swarm::run(
        tasks,
        swarm_backend.clone(),
        &options,
        &mut on_event,
    ));

    // A client that stopped sending (the server cannot be reached, refuses every key)
    // is not a reason to stop: the tasks kept their drafts, which are written and
    // checked like an offline port's (the client said why, once).
    if outcome.cancelled {
        finish(
            &store.as_ref(),
            &run.as_ref(),
            &outcome.results,
            &outcome.health,
            "cancelled",
        )?;
        return Err(Error::Interrupted(
            "interrupted: nothing was written; answers received so far are cached, so a re-run resumes where this one stopped".into(),
        ));
    }

    let deps = primary::integrate(&mut output, &outcome.results);
    // Every agent runs the one configured model.
    if llm {
        for i in output.modules.iter_mut().flat_map(|m| m.items.iter_mut()) {
            if i.by.as_deref().is_some_and(|b| b.starts_with("agent:")) {
                i.model = Some(settings.model.clone());
            }
        }
    }
    engine::port::regate_split_parents(&s.ws.root, &mut output, &s.knowledge)?;
    // The tool's own files: x86_64 modules and the support library, plus module
    // targets the model answered; manifests and build scripts (`--allow-deps`) and
    // every file edited in place stay the user's.
    let targets: BTreeSet<&str> = output
        .modules
        .iter()
        .filter(|m| m.mode != engine::port::Mode::InPlace)
        .map(|m| m.target.as_str())
        .collect();
    let generated: BTreeSet<String> = output
        .changes
        .iter()
        .filter(|c| {
            (output.generated.contains(&c.rel) || targets.contains(c.rel.as_str()))
                && !deps.contains(&c.rel)
        })
        .map(|c| c.rel.clone())
        .collect();
    let model = llm.then(|| settings.model.clone());
    let mut ledger = writer::Ledger::new(store.as_ref(), "offline-engine")?;
    for m in &output.modules {
        ledger
            .modules
            .insert(m.target.clone(), m.module_path.clone());
        ledger
            .modules
            .insert(m.source.clone(), m.module_path.clone());
    }
    for r in &outcome.results {
        if r.files_from != swarm::FilesFrom::Draft {
            for (rel, _) in &r.files {
                ledger.modules.insert(rel.clone(), r.module.clone());
                ledger
                    .origins
                    .insert(rel.clone(), (r.role.name().to_string(), model.clone()));
            }
        }
    }
    let planned = writer::decide(
        &s.ws.root,
        output
            .changes
            .iter()
            .map(|c| (c.rel.clone(), c.new.clone()))
            .collect(),
        &generated,
        &ledger,
        flags.force,
        &state.join("backup"),
    )?;
    let mut results = outcome.results;
    let mut health = outcome.health;
    let mut fix_loop = None;
    let mut unchecked = false;
    if let (Some(store), Some(run)) = (&store, &run) {
        if let Err(e) = writer::apply(&s.ws.root, &planned, &mut ledger, &state.join("tmp")) {
            finish(&Some(store), &Some(run), &results, &health, "failed")?;
            return Err(e.into());
        }

        // The cargo check loop: rustfix, then the DebugAgent (LLM) or the stub fixer
        // (offline), until clean or stuck. Offline, a port that cannot be checked (its
        // pinned toolchain or the target's std is missing) is still a port: said, and
        // the loop skipped.
        let resolved = if flags.max_fix_iterations == 0 {
            None
        } else {
            let resolve = || -> Result<_> {
                let toolchain = crate::toolchain::Toolchain::for_workspace(&s.ws.root)?;
                let choice = toolchain.resolve_target(
                    &s.ws.root,
                    &s.config.target.value,
                    flags.host_fallback,
                )?;
                Ok((toolchain, choice))
            };
            match resolve() {
                Ok(r) => Some(r),
                Err(e) if !llm => {
                    unchecked = true;
                    events.message(
                        Level::Warning,
                        &format!("the port is written but not checked: {e:#}"),
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some((toolchain, choice)) = resolved {
            if let Some(note) = toolchain.override_note() {
                events.message(Level::Note, &note);
            }
            if let Some(note) = &choice.note {
                events.message(Level::Note, note);
            }
            let target = choice.triple.clone();
            let specs = &selected.modules;
            let packages = selected.packages();
            let mut lopts = crate::fixloop::LoopOptions::new(&s.ws.root, &target, specs);
            lopts.packages = &packages;
            lopts.toolchain = toolchain;
            lopts.build_std = choice.build_std;
            lopts.max_iterations = flags.max_fix_iterations;
            let dropped_crates: BTreeMap<String, Option<(String, String)>> = arm_dependencies
                .iter()
                .map(|d| {
                    let gated = output
                        .gated_dependencies
                        .iter()
                        .any(|(p, n)| *p == d.package && *n == d.name)
                        .then(|| {
                            manifests
                                .get(&d.package)
                                .map(|m| (m.clone(), d.name.clone()))
                        })
                        .flatten();
                    (engine::deps::ident_of(&d.name), gated)
                })
                .collect();
            // The DebugAgent, unless the client has stopped sending (then, and if it
            // stops during the loop, the stub fixer works on).
            let stopped = match &swarm_backend {
                swarm::Backend::Llm(l) => l.client.stopped().is_some(),
                swarm::Backend::Offline => false,
            };
            let mut debug = (llm && !stopped).then(|| super::fix::DebugFixer {
                runtime: &runtime,
                backend: swarm_backend.clone(),
                options: options.clone(),
                root: &s.ws.root,
                modules: selected
                    .modules
                    .iter()
                    .map(|m| (m.module_path.clone(), m))
                    .collect(),
                package_dirs: &package_dirs,
                knowledge: &s.knowledge,
                prompts: &prompts,
                triple: &target,
                context: &context,
                on_event: &mut on_event,
                results: Vec::new(),
                health: BTreeMap::new(),
                offline: engine::fix::StubFixer {
                    root: &s.ws.root,
                    generated: &generated,
                    dropped_crates: &dropped_crates,
                },
                regression: None,
            });
            let mut stubs = engine::fix::StubFixer {
                root: &s.ws.root,
                generated: &generated,
                dropped_crates: &dropped_crates,
            };
            let fixer: &mut dyn crate::fixloop::Fixer = match debug.as_mut() {
                Some(d) => d,
                None => &mut stubs,
            };
            let mut write = |files: Vec<(String, String)>| -> Result<()> {
                // rustfix's edits and the DebugAgent's answers come through here.
                for (rel, _) in &files {
                    ledger
                        .origins
                        .insert(rel.clone(), ("fix-loop".to_string(), model.clone()));
                }
                let planned = writer::decide(
                    &s.ws.root,
                    files,
                    &generated,
                    &ledger,
                    false,
                    &state.join("backup"),
                )?;
                writer::apply(&s.ws.root, &planned, &mut ledger, &state.join("tmp"))
            };
            let mut record = |rec: &FixIterationRecord| -> Result<()> {
                events.progress(&format!(
                    "fix loop: check {} found {} error(s); {}",
                    rec.iteration,
                    rec.errors,
                    if rec.outcome == crate::fixloop::IterationOutcome::Fixing.as_str()
                        || rec.outcome == crate::fixloop::IterationOutcome::Regressed.as_str()
                    {
                        "fixing"
                    } else {
                        "done"
                    }
                ));
                events.fix_iteration(rec);
                store.record_fix_iteration(run, rec)?;
                Ok(())
            };
            events.progress(&format!("fix loop: cargo check --target {target}"));
            let looped = crate::fixloop::run_loop(&lopts, Some(fixer), &mut write, &mut record);
            if let Some(mut d) = debug {
                results.append(&mut d.results);
                health.extend(d.health.into_values());
            }
            match looped {
                Ok(l) => {
                    let first = l
                        .final_report
                        .modules
                        .iter()
                        .find_map(|m| m.first_error())
                        .map(|d| format!("{}:{}: {}", d.file, d.line, d.message));
                    for f in &l.final_report.build_failures {
                        events.message(Level::Error, &f.message());
                    }
                    fix_loop = Some(report::FixLoopSummary {
                        stop: l.stop.as_str(),
                        explanation: l.stop.explain(),
                        target_triple: target.clone(),
                        fix_rounds: l.fix_rounds(),
                        regressed: l.regressions(),
                        errors_left: l.final_report.errors,
                        first_error: first,
                        check_ms: l.check_time.as_millis() as u64,
                        total_ms: l.total_time.as_millis() as u64,
                        iterations: l.iterations,
                    });
                }
                Err(e) if cancel.is_cancelled() => {
                    finish(&Some(store), &Some(run), &results, &health, "cancelled")?;
                    return Err(Error::Interrupted(format!(
                        "interrupted during the fix loop ({e:#}); the port's files are written, every file whole"
                    )));
                }
                Err(e) => {
                    // cargo could not check the port (a dependency that does not build
                    // here, say): the port is written, its check is not done: exit 1.
                    unchecked = true;
                    events.message(
                        Level::Warning,
                        &format!("the port is written but cargo check could not judge it: {e:#}"),
                    );
                }
            }
        }
    }
    if fix_loop.is_some() {
        // The loop may have given a dependency back to x86_64 (its types are in an API).
        output.gated_dependencies.retain(|(package, name)| {
            manifests
                .get(package)
                .and_then(|m| std::fs::read_to_string(s.ws.root.join(m)).ok())
                .and_then(|t| t.parse::<toml_edit::DocumentMut>().ok())
                .is_some_and(|doc| {
                    !doc.get("dependencies")
                        .and_then(|d| d.as_table_like())
                        .is_some_and(|d| d.contains_key(name))
                })
        });
        // The loop may have stubbed or rewritten modules: count what is on disk now.
        // Its items carry the model when a DebugAgent's answer was written in it.
        let debug_answered = results.iter().any(|r| {
            r.role == swarm::Role::Debug
                && r.status == TaskStatus::Done
                && r.files_from == swarm::FilesFrom::Model
        });
        for m in output
            .modules
            .iter_mut()
            .filter(|m| m.mode != engine::port::Mode::InPlace)
        {
            if let Ok(text) = std::fs::read_to_string(s.ws.root.join(&m.target)) {
                let model = debug_answered.then_some(settings.model.as_str());
                m.set_items_by(engine::coverage::items_of(&text), "fix-loop", model);
            }
        }
    }
    let failed_tasks = results
        .iter()
        .filter(|r| r.status != TaskStatus::Done)
        .count();
    // Answers that still break their module's API (the draft kept those items).
    let contract_shortfalls = results
        .iter()
        .filter(|r| r.contract.as_ref().is_some_and(|c| c.broken()))
        .count();
    // Modules the last check did not compile are not fixed either (stop `not-compiled`).
    let unfixed = unchecked
        || fix_loop.as_ref().is_some_and(|f| {
            f.errors_left > 0 || f.stop == crate::fixloop::StopReason::NotCompiled.as_str()
        });
    if let (Some(store), Some(run)) = (store.as_ref(), run.as_ref()) {
        let items: Vec<crate::store::PortItemRecord> = output
            .modules
            .iter()
            .flat_map(|m| {
                m.items.iter().map(|i| crate::store::PortItemRecord {
                    module: m.module_path.clone(),
                    name: i.name.clone(),
                    kind: i.kind.to_string(),
                    status: i.status.as_str().to_string(),
                    by: i.by.clone(),
                    model: i.model.clone(),
                    reason: i.reason.clone(),
                })
            })
            .collect();
        store.record_port_items(run, &items)?;
    }
    finish(
        &store.as_ref(),
        &run.as_ref(),
        &results,
        &health,
        if failed_tasks > 0 || contract_shortfalls > 0 || unfixed {
            "failed"
        } else {
            "done"
        },
    )?;
    let mut summary = PortSummary::new(&selected, &output, &planned, flags.dry_run);
    summary.backend = if llm { "llm" } else { "offline" };
    summary.model = model;
    let mut usage = crate::llm::Usage::default();
    for r in &results {
        summary.usage.requests += r.requests;
        summary.usage.cache_hits += r.cache_hits;
        usage.add(&r.usage);
    }
    summary.usage.prompt_tokens = usage.prompt_tokens;
    summary.usage.completion_tokens = usage.completion_tokens;
    summary.usage.cost = usage.cost;
    summary.tasks = results;
    summary.fix_loop = fix_loop;
    let incomplete = summary.coverage.unported > 0
        || summary.files.iter().any(|f| f.skipped())
        || failed_tasks > 0
        || contract_shortfalls > 0
        || unfixed;
    Ok(PortRun {
        summary: Some(summary),
        planned,
        outcome: Outcome::from_problems(incomplete),
    })
}

/// The store's context for one module, without anything the port writes: a re-run
/// must see the same prompt.
fn retrieve(
    store: &Store,
    m: &ModulePlan,
    embedder: &dyn crate::store::Embedder,
    written: &BTreeSet<String>,
) -> Vec<ContextChunk> {
    match crate::store::context_for_module(store, m, embedder, CONTEXT_BUDGET_TOKENS) {
        Ok(chunks) => chunks
            .iter()
            .filter(|c| !written.contains(&c.path) && !c.path.starts_with('@'))
            .map(ContextChunk::from)
            .collect(),
        Err(e) => {
            tracing::warn!("no retrieved context for {}: {e}", m.module_path);
            Vec::new()
        }
    }
}

/// Records the run's tasks, health table and status.
fn finish(
    store: &Option<&Store>,
    run: &Option<&String>,
    results: &[swarm::TaskResult],
    health: &[crate::store::HealthRecord],
    status: &str,
) -> Result<()> {
    let (Some(store), Some(run)) = (store, run) else {
        return Ok(());
    };
    for r in results {
        store.record_task(&crate::store::TaskRecord {
            task_id: &format!("{run}:{}", r.task),
            run_id: Some(run),
            module: &r.module,
            agent: r.role.name(),
            status: r.status.as_str(),
            attempts: i64::from(r.attempts),
            tokens_in: r.usage.prompt_tokens as i64,
            tokens_out: r.usage.completion_tokens as i64,
            cost: r.usage.cost.unwrap_or(0.0),
            error: r.error.as_deref(),
        })?;
    }
    store.record_health(run, health)?;
    store.finish_run(run, status)?;
    Ok(())
}

/// A tokio runtime for the swarm, and the run's token (cancelled on Ctrl-C too when
/// `ctrl_c`).
fn runtime(
    cancel: &CancellationToken,
    ctrl_c: bool,
) -> Result<(tokio::runtime::Runtime, CancellationToken)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    if ctrl_c {
        let watcher = cancel.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                watcher.cancel();
            }
        });
    }
    Ok((runtime, cancel.clone()))
}
