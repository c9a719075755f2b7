//! The PrimaryAgent: turns the plan and the offline engine's drafts into ordered tasks
//! for the other agents, and integrates their results into the port's files and
//! coverage.
//!
//! - Mirrored and split modules (a file of their own on x86_64) go to the
//!   EternaPortAgent; on the LLM backend the model always sees the module.
//! - Modules edited in place (`main.rs`, `arch/mod.rs`) go to the CodeAgent; the model
//!   is asked only when the engine's draft still has stubs (the cfg twins are
//!   mechanical, and an in-place file is also the next run's input).
//!
//! Prompts are built only from inputs an unchanged re-run sees again (the ARM64
//! source, the engine's draft, the plan, retrieved context that excludes every file the
//! port writes), so a re-run hits the response cache and makes no request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::prompts::{ContextChunk, PortPrompt, Prompts};
use super::{contract, groups, FilesFrom, Role, Task, TaskResult, TaskStatus};
use crate::engine::port::{Mode, PortOutput};
use crate::knowledge::Knowledge;
use crate::llm::ExtractOptions;
use crate::plan::{ModulePlan, Plan};

/// The marker the engine (and the prompts) use for what is not ported yet.
pub const STUB_MARKER: &str = "unimplemented!(\"eterna-port";

/// What the PrimaryAgent reads in a request written in words ("Port VMCS to x86").
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MessageTargets {
    /// Port targets, as the command line takes them: component names (for names and
    /// aliases in the text), planned module paths and source files.
    pub targets: Vec<String>,
    /// The text asks for the whole workspace ("all", "everything").
    pub all: bool,
}

/// Reads the port targets a message names: component names and aliases (`VMCS` →
/// `vm-control`, also two words joined: "interrupt controller"), planned module paths
/// (`arch::gic`) and file names (`gic.rs`, `src/arch/aarch64/gic.rs`) of the plan.
pub fn targets_from_message(message: &str, plan: &Plan, knowledge: &Knowledge) -> MessageTargets {
    let words: Vec<&str> = message
        .split(|c: char| {
            c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '"' | '\'' | '`' | '?' | '!')
        })
        .map(|w| w.trim_end_matches(['.', ':']))
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = MessageTargets::default();
    let push = |t: String, out: &mut MessageTargets| {
        if !out.targets.contains(&t) {
            out.targets.push(t);
        }
    };
    for (i, word) in words.iter().enumerate() {
        let lower = word.to_ascii_lowercase();
        if matches!(lower.as_str(), "all" | "everything" | "every") {
            out.all = true;
            continue;
        }
        if let Some(c) = knowledge.component_for_alias(word) {
            push(c.name.clone(), &mut out);
            continue;
        }
        if let Some(next) = words.get(i + 1) {
            let joined = format!("{lower}-{}", next.to_ascii_lowercase());
            if let Some(c) = knowledge.component_for_alias(&joined) {
                push(c.name.clone(), &mut out);
                continue;
            }
        }
        let path = word.trim_start_matches("./").replace('\\', "/");
        let names_module = |m: &ModulePlan| {
            (word.contains("::")
                && (m.module_path == *word || m.module_path.ends_with(&format!("::{word}"))))
                || ((path.ends_with(".rs") || path.contains('/'))
                    && (m.source == path || m.source.ends_with(&format!("/{path}"))))
        };
        if let Some(m) = plan.modules.iter().find(|m| names_module(m)) {
            let target = if word.contains("::") {
                m.module_path.clone()
            } else {
                m.source.clone()
            };
            push(target, &mut out);
        }
    }
    out
}

/// Inputs of the planning step.
pub struct Inputs<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The whole plan (dependencies outside the selection too).
    pub full: &'a Plan,
    /// The modules to port.
    pub selected: &'a Plan,
    /// The offline engine's drafts.
    pub output: &'a PortOutput,
    /// Package directories by package name.
    pub package_dirs: &'a BTreeMap<String, PathBuf>,
    /// The concept map.
    pub knowledge: &'a Knowledge,
    /// The prompt templates, with the workspace's facts.
    pub prompts: &'a Prompts,
    /// Retrieved context for a module (already without the files the port writes).
    pub context: &'a dyn Fn(&ModulePlan) -> Vec<ContextChunk>,
    /// Accept answers that change a `Cargo.toml` or add a `build.rs`.
    pub allow_deps: bool,
    /// The x86_64 target triple.
    pub triple: &'a str,
    /// Whether prompts are needed at all (LLM backend).
    pub llm: bool,
    /// The prompt budget in tokens (the `prompt-budget` setting): a port prompt over it
    /// is sent as groups of the module's items ([`super::groups`]). `None`: every
    /// module in one request.
    pub prompt_budget: Option<usize>,
}

/// `dir` of `package` relative to the root, `""` or ending in `/`.
pub fn package_prefix(root: &Path, dir: Option<&PathBuf>) -> String {
    let rel = dir
        .map(|d| crate::workspace::relative_to(root, d))
        .unwrap_or_default();
    if rel.is_empty() || rel == "." {
        String::new()
    } else {
        format!("{}/", rel.trim_end_matches('/'))
    }
}

/// One task per ported module, in plan (dependency) order.
pub fn port_tasks(inp: &Inputs<'_>) -> Result<Vec<Task>> {
    let by_path: BTreeMap<&str, &ModulePlan> = inp
        .selected
        .modules
        .iter()
        .map(|m| (m.module_path.as_str(), m))
        .collect();
    let changes: BTreeMap<&str, &str> = inp
        .output
        .changes
        .iter()
        .map(|c| (c.rel.as_str(), c.new.as_str()))
        .collect();
    let mut tasks = Vec::new();
    for report in &inp.output.modules {
        let Some(module) = by_path.get(report.module_path.as_str()).copied() else {
            continue;
        };
        let role = match report.mode {
            Mode::InPlace => Role::Code,
            Mode::Mirrored | Mode::Split => Role::EternaPort,
        };
        let prefix = package_prefix(inp.root, inp.package_dirs.get(&module.package));
        let target_rel = report.target.as_str();
        let draft = match changes.get(target_rel) {
            Some(t) => t.to_string(),
            // A module the engine did not write (its parent does not declare it): no task.
            None if !inp.root.join(target_rel).exists() => continue,
            None => read(inp.root, target_rel)?,
        };
        let ask = inp.llm && (role == Role::EternaPort || draft.contains(STUB_MARKER));
        let mut messages = Vec::new();
        let mut max_tokens = None;
        let in_pkg = |rel: &str| rel.strip_prefix(&prefix).unwrap_or(rel).to_string();
        let target_pkg = in_pkg(target_rel);
        if ask {
            // The model sees the ARM64 source as the workspace has it, never the
            // engine's edit of it; and not an earlier run's output either (a re-run must
            // see the same prompt): a split module's source without the port's gates.
            let source_text = match report.mode {
                Mode::Split => {
                    crate::engine::wiring::without_split_wiring(&read(inp.root, &report.source)?)
                }
                Mode::Mirrored | Mode::InPlace => read(inp.root, &report.source)?,
            };
            // The answer is the whole target file: about the draft's size, or the
            // source's where the draft is still mostly stubs.
            max_tokens = Some(super::answer_max_tokens([
                draft.as_str(),
                source_text.as_str(),
            ]));
            let dependents: Vec<String> = inp
                .full
                .modules
                .iter()
                .filter(|m| m.depends_on.iter().any(|d| d == &module.module_path))
                .map(|m| m.module_path.clone())
                .collect();
            // In place, the draft is the whole file (the ARM64 items gated, their
            // x86_64 twins added): the CodeAgent edits it.
            let prompt = PortPrompt {
                module,
                source: &in_pkg(&report.source),
                target: &target_pkg,
                source_text: &source_text,
                draft: Some(&draft),
                dependents,
                context: (inp.context)(module),
                triple: inp.triple,
            };
            messages = inp.prompts.port(role, &prompt, inp.knowledge)?;
            // Over the prompt budget: a port is sent as groups of its items.
            let tokens = groups::prompt_tokens(&messages);
            match inp.prompt_budget {
                Some(budget) if tokens > budget && role == Role::EternaPort => {
                    let mut warnings = Vec::new();
                    let render = |part: &groups::Part, index: usize, count: usize| {
                        inp.prompts
                            .port_group(&prompt, part, index, count, inp.knowledge)
                    };
                    let planned =
                        groups::plan(&draft, &source_text, budget, &render, &mut warnings)?;
                    for w in &warnings {
                        tracing::warn!(
                            "{}: its prompt of about {tokens} tokens is over the prompt budget of {budget}; {w}",
                            module.module_path
                        );
                    }
                    if let Some(planned) = planned {
                        let module_task = format!("{}#port", module.module_path);
                        tracing::debug!(
                            module = %module.module_path,
                            tokens,
                            budget,
                            groups = planned.parts.len(),
                            "port prompt over the budget: sent as groups of its items"
                        );
                        let groups = planned.groups(&module_task);
                        for ((part, messages), group) in planned.parts.into_iter().zip(groups) {
                            tasks.push(Task {
                                id: group.task_id(),
                                module: module.module_path.clone(),
                                role,
                                messages,
                                extract: ExtractOptions {
                                    allowed: vec![target_pkg.clone()],
                                    default_target: Some(target_pkg.clone()),
                                    allow_deps: inp.allow_deps,
                                },
                                package_dir: prefix.clone(),
                                draft: vec![(target_rel.to_string(), draft.clone())],
                                ask_model: true,
                                api: api_of_task(report.mode, module),
                                // The answer holds the group's items only.
                                max_tokens: Some(super::answer_max_tokens([
                                    part.draft.as_str(),
                                    part.source.as_str(),
                                ])),
                                group: Some(group),
                            });
                        }
                        continue;
                    }
                }
                Some(budget) if tokens > budget => tracing::warn!(
                    "{}: its prompt of about {tokens} tokens is over the prompt budget of {budget}; a file edited in place is sent whole",
                    module.module_path
                ),
                _ => {}
            }
        }
        tasks.push(Task {
            id: format!(
                "{}#{}",
                module.module_path,
                match role {
                    Role::Code => "code",
                    _ => "port",
                }
            ),
            module: module.module_path.clone(),
            role,
            messages,
            extract: ExtractOptions {
                allowed: vec![target_pkg.clone()],
                default_target: Some(target_pkg),
                allow_deps: inp.allow_deps,
            },
            package_dir: prefix,
            draft: vec![(target_rel.to_string(), draft)],
            ask_model: ask,
            api: api_of_task(report.mode, module),
            max_tokens,
            group: None,
        });
    }
    Ok(tasks)
}

/// The API items a task's answer is held to where its draft lacks them: a mirrored
/// module's file is the whole ARM64 module, so its public items are the API; split and
/// in-place drafts hold only their part of it.
fn api_of_task(mode: Mode, module: &ModulePlan) -> Vec<crate::workspace::Item> {
    match mode {
        Mode::Mirrored => module.items.clone(),
        Mode::Split | Mode::InPlace => Vec::new(),
    }
}

fn read(root: &Path, rel: &str) -> Result<String> {
    let path = root.join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))
}

/// Puts the model's files into the port's changes and recomputes the coverage of the
/// modules they belong to. Returns the workspace-relative paths of `Cargo.toml` and
/// `build.rs` files the answers changed (only with `--allow-deps`).
pub fn integrate(output: &mut PortOutput, results: &[TaskResult]) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    for r in results {
        // A module sent in groups fails when one of its groups failed, and still
        // brings the other groups' items (the failed group's keep the draft's).
        if r.status == TaskStatus::Cancelled || r.files_from == FilesFrom::Draft {
            continue;
        }
        let target = output
            .modules
            .iter()
            .find(|m| m.module_path == r.module)
            .map(|m| m.target.clone());
        let mut written = None;
        for (rel, text) in &r.files {
            if rel.ends_with("Cargo.toml") || rel.ends_with("build.rs") {
                deps.insert(rel.clone());
            }
            let mut text = text.clone();
            match output.changes.iter_mut().find(|c| &c.rel == rel) {
                Some(c) => {
                    // The agent holds answers to the API contract; whatever got here,
                    // a model's file never lowers the draft's ported items.
                    if target.as_ref() == Some(rel) && contract::lowers(&c.new, &text) {
                        tracing::warn!(
                            "{rel}: the answer would lower the ported items; merged with the draft"
                        );
                        text = contract::merge(&c.new, &text).text;
                    }
                    c.new = text.clone();
                }
                None => output.changes.push(crate::engine::port::FileChange {
                    rel: rel.clone(),
                    new: text.clone(),
                }),
            }
            if target.as_ref() == Some(rel) {
                written = Some(text);
            }
        }
        if let (Some(m), Some(text)) = (
            output
                .modules
                .iter_mut()
                .find(|m| m.module_path == r.module),
            written,
        ) {
            // Counted from the text that will be written, like the engine's drafts.
            m.set_items_by(
                crate::engine::coverage::items_of(&text),
                &format!("agent:{}", r.agent),
                None,
            );
            m.ported_by = Some(r.agent.clone());
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, source: &str, target: &str) -> ModulePlan {
        ModulePlan {
            package: "hv".into(),
            source: source.into(),
            module_path: path.into(),
            component: crate::knowledge::ComponentId::VmControl,
            target: target.into(),
            x86_concept: None,
            status: crate::plan::Status::New,
            depends_on: Vec::new(),
            evidence: Vec::new(),
            items: vec![crate::workspace::Item {
                kind: crate::workspace::ItemKind::Fn,
                name: "enable".into(),
                signature: "pub fn enable() -> u64".into(),
                line: 1,
            }],
            missing: Vec::new(),
        }
    }

    /// A model's answer for `vm`'s port task: `answer` as its target file.
    fn model_answer(vm: &ModulePlan, answer: &str) -> TaskResult {
        TaskResult {
            task: "hv::arch::aarch64::vm#port".into(),
            module: vm.module_path.clone(),
            role: Role::EternaPort,
            agent: "EternaPortAgent#1".into(),
            status: TaskStatus::Done,
            files: vec![(vm.target.clone(), answer.into())],
            files_from: FilesFrom::Model,
            attempts: 1,
            requests: 1,
            cache_hits: 0,
            usage: Default::default(),
            latency: Default::default(),
            error: None,
            contract: None,
            fatal: false,
        }
    }

    fn report(m: &ModulePlan, mode: Mode) -> crate::engine::port::ModuleReport {
        crate::engine::port::ModuleReport::new(
            m,
            mode,
            vec![crate::engine::coverage::ItemReport {
                name: "enable".into(),
                kind: "fn",
                status: crate::engine::coverage::ItemStatus::Stubbed,
                reason: None,
                by: None,
                model: None,
                text_hash: 0,
            }],
        )
    }

    #[test]
    fn tasks_route_by_mode_and_ask_the_model_only_where_it_helps() {
        let root = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write(
            "hv/src/arch/aarch64/vm.rs",
            "pub fn enable() -> u64 { 1 }\n",
        );
        write("hv/src/main.rs", "mod arch;\n");
        write("hv/src/arch/mod.rs", "pub mod aarch64;\n");
        let vm = module(
            "hv::arch::aarch64::vm",
            "hv/src/arch/aarch64/vm.rs",
            "hv/src/arch/x86_64/vmcs.rs",
        );
        let main = module("hv", "hv/src/main.rs", "hv/src/main.rs");
        let arch = module("hv::arch", "hv/src/arch/mod.rs", "hv/src/arch/mod.rs");
        let plan = Plan {
            schema_version: 1,
            workspace_root: root.path().display().to_string(),
            target_triple: "x86_64-unknown-none".into(),
            modules: vec![vm.clone(), main.clone(), arch.clone()],
            diagnostics: Vec::new(),
            arm_dependencies: Vec::new(),
        };
        let change = |rel: &str, text: &str| crate::engine::port::FileChange {
            rel: rel.into(),
            new: text.into(),
        };
        let output = PortOutput {
            changes: vec![
                change(
                    "hv/src/arch/x86_64/vmcs.rs",
                    "pub fn enable() -> u64 { 0 }\n",
                ),
                // In place: one still has a stub, one is complete.
                change(
                    "hv/src/main.rs",
                    "fn f() { unimplemented!(\"eterna-port: no twin\") }\n",
                ),
                change("hv/src/arch/mod.rs", "pub mod x86_64;\n"),
            ],
            modules: vec![
                report(&vm, Mode::Mirrored),
                report(&main, Mode::InPlace),
                report(&arch, Mode::InPlace),
            ],
            ..PortOutput::default()
        };
        let dirs = BTreeMap::from([("hv".to_string(), root.path().join("hv"))]);
        let knowledge = Knowledge::embedded().unwrap();
        let prompts = Prompts::embedded().unwrap();
        let no_context = |_: &ModulePlan| Vec::new();
        let inputs = |llm| Inputs {
            root: root.path(),
            full: &plan,
            selected: &plan,
            output: &output,
            package_dirs: &dirs,
            knowledge: &knowledge,
            prompts: &prompts,
            context: &no_context,
            allow_deps: false,
            triple: "x86_64-unknown-none",
            llm,
            prompt_budget: None,
        };
        let tasks = port_tasks(&inputs(true)).unwrap();
        let summary: Vec<(Role, bool, &str)> = tasks
            .iter()
            .map(|t| (t.role, t.ask_model, t.extract.allowed[0].as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (Role::EternaPort, true, "src/arch/x86_64/vmcs.rs"),
                (Role::Code, true, "src/main.rs"),
                (Role::Code, false, "src/arch/mod.rs"),
            ]
        );
        assert!(tasks.iter().all(|t| t.package_dir == "hv/"));
        // The port prompt shows the ARM64 source and the draft; the CodeAgent's the
        // in-place draft (with its stub) as the file to edit.
        let user = &tasks[0].messages[1].content;
        assert!(
            user.contains("pub fn enable() -> u64 { 1 }")
                && user.contains("pub fn enable() -> u64 { 0 }"),
            "{user}"
        );
        assert!(user.contains("- `pub fn enable() -> u64`"), "{user}");
        let code = &tasks[1].messages[1].content;
        assert!(
            code.contains("as the offline engine leaves it") && code.contains("no twin"),
            "{code}"
        );
        assert!(
            tasks[2].messages.is_empty(),
            "no prompt for a task the model does not see"
        );
        // Offline: the same tasks, none asking the model, drafts as results.
        let offline = port_tasks(&inputs(false)).unwrap();
        assert!(offline
            .iter()
            .all(|t| !t.ask_model && t.messages.is_empty()));
        assert_eq!(offline[0].draft[0].1, "pub fn enable() -> u64 { 0 }\n");
    }

    #[test]
    fn a_model_result_never_counts_below_the_draft() {
        let vm = module(
            "hv::arch::aarch64::vm",
            "hv/src/arch/aarch64/vm.rs",
            "hv/src/arch/x86_64/vmcs.rs",
        );
        let draft = "pub fn enable() -> u64 { 0 }\npub fn disable() { unimplemented!(\"eterna-port: x\") }\n";
        let mut output = PortOutput {
            changes: vec![crate::engine::port::FileChange {
                rel: vm.target.clone(),
                new: draft.into(),
            }],
            modules: vec![crate::engine::port::ModuleReport::new(
                &vm,
                Mode::Mirrored,
                crate::engine::coverage::items_of(draft),
            )],
            ..PortOutput::default()
        };
        assert_eq!(output.modules[0].items_ported, 1);
        // The answer fills `disable` but stubs `enable`, which the draft has working.
        let answer = "pub fn enable() -> u64 { todo!() }\npub fn disable() {}\n";
        let result = model_answer(&vm, answer);
        integrate(&mut output, &[result]);
        let m = &output.modules[0];
        assert_eq!((m.items_ported, m.items_total), (2, 2), "{:?}", m.unported);
        let written = &output.changes[0].new;
        assert!(
            written.contains("pub fn enable() -> u64 { 0 }")
                && written.contains("pub fn disable() {}"),
            "{written}"
        );
    }

    #[test]
    fn an_api_item_the_written_text_lacks_is_missing_until_an_answer_brings_it() {
        let mut vm = module(
            "hv::arch::aarch64::vm",
            "hv/src/arch/aarch64/vm.rs",
            "hv/src/arch/x86_64/vmcs.rs",
        );
        vm.items.push(crate::workspace::Item {
            kind: crate::workspace::ItemKind::Fn,
            name: "disable".into(),
            signature: "pub fn disable(vm: u32)".into(),
            line: 2,
        });
        // A draft with `enable` only: `disable` of the ARM64 source is missing.
        let draft = "pub fn enable() -> u64 { 0 }\n";
        let expected = contract::absent_from(draft, &vm.items);
        assert_eq!(
            expected,
            [("disable".to_string(), "pub fn disable(vm: u32)".to_string())]
        );
        let report = crate::engine::port::ModuleReport::new(
            &vm,
            Mode::Mirrored,
            crate::engine::coverage::items_of(draft),
        )
        .expecting(expected);
        assert_eq!((report.items_ported, report.items_total), (1, 2));
        let missing = report.items.iter().find(|i| i.name == "disable").unwrap();
        assert_eq!(missing.status.as_str(), "missing");
        assert!(report
            .unported
            .iter()
            .any(|u| u.item == "disable" && u.reason.contains("pub fn disable(vm: u32)")));
        let mut output = PortOutput {
            changes: vec![crate::engine::port::FileChange {
                rel: vm.target.clone(),
                new: draft.into(),
            }],
            modules: vec![report],
            ..PortOutput::default()
        };
        let answer = "pub fn enable() -> u64 { 0 }\npub fn disable(vm: u32) { let _ = vm; }\n";
        let result = model_answer(&vm, answer);
        integrate(&mut output, &[result]);
        let m = &output.modules[0];
        assert_eq!((m.items_ported, m.items_total), (2, 2), "{:?}", m.unported);
        let disable = m.items.iter().find(|i| i.name == "disable").unwrap();
        assert_eq!(
            (disable.status.as_str(), disable.by.as_deref()),
            ("ported", Some("agent:EternaPortAgent#1"))
        );
    }

    #[test]
    fn package_prefix_is_relative_with_a_slash() {
        let root = Path::new("/ws");
        assert_eq!(package_prefix(root, Some(&PathBuf::from("/ws"))), "");
        assert_eq!(
            package_prefix(root, Some(&PathBuf::from("/ws/crates/eterna"))),
            "crates/eterna/"
        );
    }

    #[test]
    fn a_message_in_words_names_components_modules_and_files() {
        let knowledge = Knowledge::embedded().unwrap();
        let plan = Plan {
            schema_version: 1,
            workspace_root: "/ws".into(),
            target_triple: "x86_64-unknown-none".into(),
            modules: vec![
                module(
                    "hv::arch::vmx",
                    "src/arch/aarch64/vmx.rs",
                    "src/arch/x86_64/vmx.rs",
                ),
                module(
                    "hv::arch::irq",
                    "src/arch/aarch64/irq.rs",
                    "src/arch/x86_64/irq.rs",
                ),
            ],
            diagnostics: Vec::new(),
            arm_dependencies: Vec::new(),
        };
        let read = |m: &str| targets_from_message(m, &plan, &knowledge);
        assert_eq!(read("Port VMCS to x86").targets, ["vm-control"]);
        assert_eq!(
            read("port the interrupt controller and arch::irq, then src/arch/aarch64/vmx.rs")
                .targets,
            [
                "interrupt-controller",
                "hv::arch::irq",
                "src/arch/aarch64/vmx.rs"
            ]
        );
        assert_eq!(
            read("now irq.rs please").targets,
            ["src/arch/aarch64/irq.rs"]
        );
        let all = read("port everything");
        assert!(all.all && all.targets.is_empty(), "{all:?}");
        assert!(read("make it faster").targets.is_empty());
    }
}
