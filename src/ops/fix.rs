//! The DebugAgent as the fix loop's fixer: each module's remaining `cargo check`
//! errors become a task of the swarm; the answers' files go back to the loop, which
//! writes them through the safe writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use tokio::runtime::Runtime;

use crate::fixloop::{Fixer, ModuleDiagnostics};
use crate::knowledge::Knowledge;
use crate::llm::ExtractOptions;
use crate::plan::ModulePlan;
use crate::store::HealthRecord;
use crate::swarm::{self, prompts, Event, Role, Task, TaskResult};

/// Diagnostics per module in one prompt at most (the first ones; the rest follow in
/// the next iteration).
const MAX_DIAGNOSTICS: usize = 20;

/// The DebugAgent as the fix loop's fixer (the offline stub fixer when the client stops).
pub struct DebugFixer<'a> {
    /// The runtime the swarm runs on.
    pub runtime: &'a Runtime,
    /// The model backend.
    pub backend: swarm::Backend,
    /// Jobs, heartbeat and cancellation of the swarm.
    pub options: swarm::SwarmOptions,
    /// The workspace root.
    pub root: &'a Path,
    /// The selected modules by module path.
    pub modules: BTreeMap<String, &'a ModulePlan>,
    /// Package directories by package name.
    pub package_dirs: &'a BTreeMap<String, PathBuf>,
    /// The concept map.
    pub knowledge: &'a Knowledge,
    /// The prompt templates.
    pub prompts: &'a prompts::Prompts,
    /// The target triple checked.
    pub triple: &'a str,
    /// Retrieved context for a module's prompt.
    pub context: &'a dyn Fn(&ModulePlan) -> Vec<prompts::ContextChunk>,
    /// Hears the DebugAgent's swarm events.
    pub on_event: &'a mut (dyn FnMut(&Event) + Send),
    /// Every DebugAgent task so far, for the store and the summary.
    pub results: Vec<TaskResult>,
    /// The DebugAgents' health, summed over the iterations.
    pub health: BTreeMap<String, HealthRecord>,
    /// The fixer once the LLM client has stopped sending requests (the server cannot
    /// be reached or refuses every key): the model is not asked again.
    pub offline: crate::engine::fix::StubFixer<'a>,
    /// The last round, when it made things worse and was backed out: the next prompts
    /// of the modules it touched say so.
    pub regression: Option<crate::fixloop::Regression>,
}

impl DebugFixer<'_> {
    fn task(&self, iteration: u32, md: &ModuleDiagnostics) -> Result<Option<Task>> {
        let Some(module) = self.modules.get(&md.module_path).copied() else {
            return Ok(None);
        };
        let prefix =
            swarm::primary::package_prefix(self.root, self.package_dirs.get(&module.package));
        let mut current = Vec::new();
        for rel in &md.files {
            let Ok(text) = std::fs::read_to_string(self.root.join(rel)) else {
                continue;
            };
            current.push(prompts::FileText {
                path: rel.strip_prefix(&prefix).unwrap_or(rel).to_string(),
                content: text,
            });
        }
        if current.is_empty() {
            return Ok(None);
        }
        let diagnostics: Vec<String> = md
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .take(MAX_DIAGNOSTICS)
            .map(|d| d.rendered.trim_end().to_string())
            .collect();
        let allowed: Vec<String> = current.iter().map(|f| f.path.clone()).collect();
        // The answer rewrites the files shown.
        let max_tokens = Some(swarm::answer_max_tokens(
            current.iter().map(|f| f.content.as_str()),
        ));
        let messages = self.prompts.debug(
            &prompts::DebugPrompt {
                module,
                current,
                diagnostics,
                context: (self.context)(module),
                triple: self.triple,
                regression: self
                    .regression
                    .as_ref()
                    .filter(|r| r.files.iter().any(|f| md.files.contains(f))),
            },
            self.knowledge,
        )?;
        Ok(Some(Task {
            id: format!("{}#debug{iteration}", module.module_path),
            module: module.module_path.clone(),
            role: Role::Debug,
            messages,
            extract: ExtractOptions {
                default_target: (allowed.len() == 1).then(|| allowed[0].clone()),
                allowed,
                allow_deps: false,
            },
            package_dir: prefix,
            draft: Vec::new(),
            ask_model: true,
            api: Vec::new(),
            max_tokens,
            group: None,
        }))
    }
}

impl Fixer for DebugFixer<'_> {
    fn fix(
        &mut self,
        iteration: u32,
        modules: &[ModuleDiagnostics],
    ) -> Result<Vec<(String, String)>> {
        let stopped = || match &self.backend {
            swarm::Backend::Llm(l) => l.client.stopped().is_some(),
            swarm::Backend::Offline => false,
        };
        if stopped() {
            return self.offline.fix(iteration, modules);
        }
        let mut tasks = Vec::new();
        for md in modules {
            if let Some(t) = self.task(iteration, md)? {
                tasks.push(t);
            }
        }
        // Said once: the prompts of this round carry it.
        self.regression = None;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let on_event = &mut *self.on_event;
        let outcome = self.runtime.block_on(swarm::run(
            tasks,
            self.backend.clone(),
            &self.options,
            on_event,
        ));
        let stopped = outcome.fatal.is_some();
        if outcome.cancelled {
            anyhow::bail!("interrupted");
        }
        for h in outcome
            .health
            .into_iter()
            .filter(|h| h.agent.starts_with("DebugAgent"))
        {
            let e = self
                .health
                .entry(h.agent.clone())
                .or_insert_with(|| HealthRecord {
                    tasks_done: 0,
                    tasks_failed: 0,
                    mean_latency_ms: None,
                    ..h.clone()
                });
            let before = (e.tasks_done + e.tasks_failed) as f64;
            let now = (h.tasks_done + h.tasks_failed) as f64;
            if before + now > 0.0 {
                e.mean_latency_ms = Some(
                    (e.mean_latency_ms.unwrap_or(0.0) * before
                        + h.mean_latency_ms.unwrap_or(0.0) * now)
                        / (before + now),
                );
            }
            e.tasks_done += h.tasks_done;
            e.tasks_failed += h.tasks_failed;
            e.last_heartbeat = h.last_heartbeat;
            e.status = h.status;
        }
        let mut files = Vec::new();
        for r in outcome.results {
            if r.status == swarm::TaskStatus::Done && r.files_from == swarm::FilesFrom::Model {
                files.extend(r.files.iter().cloned());
            }
            self.results.push(r);
        }
        // The client stopped during this round (said once, by the client): what was
        // answered before is used, else the stub fixer takes over from this round.
        if stopped && files.is_empty() {
            return self.offline.fix(iteration, modules);
        }
        Ok(files)
    }

    fn regressed(&mut self, regression: &crate::fixloop::Regression) {
        self.regression = Some(regression.clone());
    }
}
