//! The agents' prompts: minijinja templates from `templates/prompts/`, embedded in the
//! binary, filled from the plan, the sources, the offline engine's drafts, the store's
//! retrieved context and (for the DebugAgent) `cargo check` diagnostics.
//!
//! Every statement a prompt makes is read from the workspace or checked, never assumed:
//! the toolchain, edition and `no_std` come from [`WorkspaceFacts`] (set with
//! [`Prompts::with_workspace`]; without them the prompts say nothing of the kind), the
//! trace rule only where the workspace configures a trace, whether the engine's draft
//! compiles from the check made before prompting ([`Prompts::with_draft_checks`];
//! without it the prompt says the draft is not checked), the API from the draft and
//! the ARM64 source (`pub mod`/`pub use` lines, methods with their type), and the task
//! names the draft's own `eterna-port` stubs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use minijinja::Environment;
use serde::Serialize;

use super::Role;
use crate::engine::coverage::{items_of, ItemStatus};
use crate::engine::port::{mode_of, Mode};
use crate::knowledge::Knowledge;
use crate::llm::Message;
use crate::plan::ModulePlan;
use crate::store::RankedChunk;
use crate::workspace::{EvidenceKind, WorkspaceFacts};

const SYSTEM: &str = include_str!("../../templates/prompts/system.md");
const ETERNA_PORT: &str = include_str!("../../templates/prompts/eterna_port.md");
const CODE: &str = include_str!("../../templates/prompts/code.md");
const DEBUG: &str = include_str!("../../templates/prompts/debug.md");
const CHECK: &str = include_str!("../../templates/prompts/check.md");
const TASK: &str = include_str!("../../templates/prompts/task.md");
const PORT_GROUP_TEMPLATE: &str = include_str!("../../templates/prompts/eterna_port_group.md");

/// At most this many concept-map entries go into one system prompt.
const MAX_CONCEPTS: usize = 60;

/// At most this many of a draft's errors are shown in a prompt (the count is said).
pub const MAX_DRAFT_ERRORS: usize = 3;

/// At most this many characters of one shown error (rustc's rendering).
const MAX_ERROR_CHARS: usize = 1500;

/// What the check made before prompting found in one module's draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum DraftCheck {
    /// `cargo check` compiled the module's files without an error.
    Compiles,
    /// Errors in the module's files.
    Errors {
        /// How many.
        count: usize,
        /// The first few, as rustc renders them.
        shown: Vec<String>,
    },
    /// Not known: the check could not run, or did not reach the module.
    NotChecked {
        /// Why.
        reason: String,
    },
}

impl DraftCheck {
    /// From a module's `cargo check` result: its errors, rendered, the first
    /// [`MAX_DRAFT_ERRORS`] shown (each cut at a sane length). `elsewhere`: the errors
    /// the check found in other files of the module's crate; rustc may stop on those
    /// before it checks this module, so a module without errors of its own then is
    /// not said to compile.
    pub fn from_result(m: &crate::fixloop::ModuleResult, elsewhere: usize) -> DraftCheck {
        if m.errors > 0 {
            let shown = m
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .take(MAX_DRAFT_ERRORS)
                .map(|d| cut(d.rendered.trim_end(), MAX_ERROR_CHARS))
                .collect();
            DraftCheck::Errors {
                count: m.errors,
                shown,
            }
        } else if !m.compiled {
            DraftCheck::NotChecked {
                reason: "cargo check did not compile its crate (it stopped before, or the file is not part of the build)".into(),
            }
        } else if elsewhere > 0 {
            DraftCheck::NotChecked {
                reason: format!(
                    "cargo check found no error in it, but {elsewhere} error(s) elsewhere in its crate, which may have stopped rustc before it checked this module"
                ),
            }
        } else {
            DraftCheck::Compiles
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[… cut]", &text[..end])
}

/// The check of the engine's drafts made once before prompting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftChecks {
    /// The `--target` of the check.
    pub target: String,
    /// By module path.
    pub modules: BTreeMap<String, DraftCheck>,
    /// Why there is no result for a module not in `modules` (the check did not run).
    pub not_run: Option<String>,
}

impl DraftChecks {
    /// The result for `module`.
    pub fn get(&self, module: &str) -> DraftCheck {
        self.modules
            .get(module)
            .cloned()
            .unwrap_or_else(|| DraftCheck::NotChecked {
                reason: self
                    .not_run
                    .clone()
                    .unwrap_or_else(|| "no check was run before this prompt".into()),
            })
    }
}

/// One concept-map entry as the system prompt shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Concept {
    /// The ARM64 concept (`GICv3 distributor`).
    pub name: String,
    /// Its x86_64 counterpart.
    pub x86_64: String,
    /// How to port it.
    pub note: String,
}

/// A retrieved chunk as the prompts show it.
#[derive(Debug, Clone, Serialize)]
pub struct ContextChunk {
    /// What the chunk is.
    pub title: String,
    /// Where it is (workspace-relative, or `@knowledge/…`).
    pub path: String,
    /// Its first line, 1-based.
    pub start_line: i64,
    /// Its text.
    pub content: String,
}

impl From<&RankedChunk> for ContextChunk {
    fn from(c: &RankedChunk) -> Self {
        ContextChunk {
            title: c.title.clone(),
            path: c.path.clone(),
            start_line: c.start_line,
            content: c.content.clone(),
        }
    }
}

/// A file as the DebugAgent prompt shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FileText {
    /// Package-relative path.
    pub path: String,
    /// The file's text.
    pub content: String,
}

/// The prompt renderer, with what the prompts may say about the workspace and the
/// engine's drafts.
pub struct Prompts {
    env: Environment<'static>,
    facts: WorkspaceFacts,
    checks: DraftChecks,
}

/// What a port (EternaPortAgent) or in-place (CodeAgent) prompt needs.
pub struct PortPrompt<'a> {
    /// The module to port.
    pub module: &'a ModulePlan,
    /// Paths relative to the package root.
    pub source: &'a str,
    /// The x86_64 file to write.
    pub target: &'a str,
    /// The ARM64 source as the workspace has it (without the port's own edits).
    pub source_text: &'a str,
    /// The offline engine's draft of `target` (for the CodeAgent: the file it edits,
    /// the ARM64 items gated and their x86_64 twins added). `None`: the CodeAgent edits
    /// `source_text`.
    pub draft: Option<&'a str>,
    /// Planned modules that use this one (its API must not change under them).
    pub dependents: Vec<String>,
    /// Retrieved context from the store.
    pub context: Vec<ContextChunk>,
    /// The x86_64 target triple.
    pub triple: &'a str,
}

/// What a DebugAgent prompt needs.
pub struct DebugPrompt<'a> {
    /// The module whose errors these are.
    pub module: &'a ModulePlan,
    /// Package-relative paths the agent may rewrite, with their current text.
    pub current: Vec<FileText>,
    /// Rendered diagnostics (rustc's `rendered` text).
    pub diagnostics: Vec<String>,
    /// Retrieved context from the store.
    pub context: Vec<ContextChunk>,
    /// The target triple checked.
    pub triple: &'a str,
    /// The fix before this one made things worse and was backed out.
    pub regression: Option<&'a crate::fixloop::Regression>,
}

/// A template environment with the prompts' syntax (blocks trimmed, the trailing newline
/// kept) holding the given templates (`templates/prompts/`).
pub fn template_env(templates: &[(&'static str, &'static str)]) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.trim_blocks(true).keep_trailing_newline(true);
    env.set_syntax(
        syntax
            .build()
            .map_err(|e| anyhow::anyhow!("prompt template syntax: {e}"))?,
    );
    for &(name, text) in templates {
        env.add_template(name, text)
            .with_context(|| format!("internal: prompt template {name} does not parse"))?;
    }
    Ok(env)
}

impl Prompts {
    /// The prompt templates embedded in the binary (`templates/prompts/`).
    pub fn embedded() -> Result<Prompts> {
        let env = template_env(&[
            ("system.md", SYSTEM),
            ("eterna_port.md", ETERNA_PORT),
            ("code.md", CODE),
            ("debug.md", DEBUG),
            ("check.md", CHECK),
            ("task.md", TASK),
            ("eterna_port_group.md", PORT_GROUP_TEMPLATE),
        ])?;
        Ok(Prompts {
            env,
            facts: WorkspaceFacts::default(),
            checks: DraftChecks::default(),
        })
    }

    /// The prompts of a workspace: its toolchain, editions, `no_std` and trace rule.
    pub fn with_workspace(mut self, facts: WorkspaceFacts) -> Prompts {
        self.facts = facts;
        self
    }

    /// The check of the engine's drafts made before prompting.
    pub fn with_draft_checks(mut self, checks: DraftChecks) -> Prompts {
        self.checks = checks;
        self
    }

    /// The check of a module's draft as the prompts state it.
    pub fn draft_check(&self, module: &str) -> DraftCheck {
        self.checks.get(module)
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Result<String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .with_context(|| format!("internal: prompt template {name} failed to render"))
    }

    /// The system prompt of `role` for `module`.
    pub fn system(
        &self,
        role: Role,
        module: &ModulePlan,
        knowledge: &Knowledge,
        example_path: &str,
        triple: &str,
    ) -> Result<String> {
        self.system_for(role, module, knowledge, example_path, triple, None)
    }

    /// The system prompt; `part`: the answer is a group of the module's items, not a
    /// whole file, and the concept map keeps the entries this text of the group names.
    fn system_for(
        &self,
        role: Role,
        module: &ModulePlan,
        knowledge: &Knowledge,
        example_path: &str,
        triple: &str,
        part: Option<&str>,
    ) -> Result<String> {
        let package = self.facts.packages.get(&module.package);
        let mut concepts = concepts_for(module, knowledge);
        if let Some(text) = part {
            concepts = concepts_named_in(concepts, text);
        }
        self.render(
            "system.md",
            minijinja::context! {
                part => part.is_some(),
                agent => role.name(),
                specialization => role.specialization(),
                concepts => minijinja::Value::from(minijinja::value::Serde(concepts)),
                example_path => example_path,
                target => triple,
                toolchain => minijinja::Value::from(minijinja::value::Serde(&self.facts.toolchain)),
                package => minijinja::Value::from(minijinja::value::Serde(package)),
                trace => minijinja::Value::from(minijinja::value::Serde(&self.facts.trace)),
            },
        )
    }

    /// System and user messages for an EternaPortAgent or CodeAgent task.
    pub fn port(
        &self,
        role: Role,
        p: &PortPrompt<'_>,
        knowledge: &Knowledge,
    ) -> Result<Vec<Message>> {
        let template = match role {
            Role::Code => "code.md",
            _ => "eterna_port.md",
        };
        // The CodeAgent edits the engine's draft of the file (or the file itself).
        let draft = p.draft.unwrap_or(p.source_text);
        let check = self.draft_check(&p.module.module_path);
        let user = self.render(
            template,
            minijinja::context! {
                module_path => &p.module.module_path,
                component => p.module.component.as_str(),
                package => &p.module.package,
                source => p.source,
                target => p.target,
                source_text => p.source_text,
                draft => draft,
                dependents => &p.dependents,
                api => api_of(p.module, draft),
                stubs => stubs_of(draft),
                check => minijinja::Value::from(minijinja::value::Serde(&check)),
                check_target => if self.checks.target.is_empty() { p.triple } else { self.checks.target.as_str() },
                context => minijinja::Value::from(minijinja::value::Serde(&p.context)),
            },
        )?;
        Ok(vec![
            Message::system(self.system(role, p.module, knowledge, p.target, p.triple)?),
            Message::user(user),
        ])
    }

    /// System and user messages for one group of a module's items (an EternaPortAgent
    /// task over the prompt budget, [`super::groups`]): the shared context (toolchain,
    /// concept map, the module's whole API, the draft's check) and the `part`: the
    /// draft trimmed to the group's items and the ARM64 source of those items; only
    /// the group's items are asked for.
    pub fn port_group(
        &self,
        p: &PortPrompt<'_>,
        part: &super::groups::Part,
        index: usize,
        count: usize,
        knowledge: &Knowledge,
    ) -> Result<Vec<Message>> {
        let draft = p.draft.unwrap_or(p.source_text);
        let check = self.draft_check(&p.module.module_path);
        let others: Vec<String> = part
            .items
            .iter()
            .filter(|i| !part.stubs.contains(i))
            .cloned()
            .collect();
        let user = self.render(
            "eterna_port_group.md",
            minijinja::context! {
                module_path => &p.module.module_path,
                component => p.module.component.as_str(),
                package => &p.module.package,
                source => p.source,
                target => p.target,
                index => index,
                count => count,
                dependents => &p.dependents,
                api => api_of(p.module, draft),
                items => &part.items,
                stubs => &part.stubs,
                others => others,
                draft => &part.draft,
                source_text => &part.source,
                check => minijinja::Value::from(minijinja::value::Serde(&check)),
                check_target => if self.checks.target.is_empty() { p.triple } else { self.checks.target.as_str() },
            },
        )?;
        Ok(vec![
            Message::system(self.system_for(
                Role::EternaPort,
                p.module,
                knowledge,
                p.target,
                p.triple,
                Some(&part.focus),
            )?),
            Message::user(user),
        ])
    }

    /// System and user messages for a DebugAgent task.
    pub fn debug(&self, p: &DebugPrompt<'_>, knowledge: &Knowledge) -> Result<Vec<Message>> {
        let files: Vec<String> = p.current.iter().map(|f| f.path.clone()).collect();
        let user = self.render(
            "debug.md",
            minijinja::context! {
                module_path => &p.module.module_path,
                package => &p.module.package,
                triple => p.triple,
                files => &files,
                diagnostics => &p.diagnostics,
                current => minijinja::Value::from(minijinja::value::Serde(&p.current)),
                context => minijinja::Value::from(minijinja::value::Serde(&p.context)),
                regression => minijinja::Value::from(minijinja::value::Serde(&p.regression)),
            },
        )?;
        let example = files.first().map_or("src/lib.rs", String::as_str);
        Ok(vec![
            Message::system(self.system(Role::Debug, p.module, knowledge, example, p.triple)?),
            Message::user(user),
        ])
    }
}

/// The module's API as the prompt lists it (see [`super::contract::api_lines`]): the
/// draft's public items (`pub mod`/`pub use` lines included, methods with their type)
/// and, where the draft lacks them, the ARM64 source's. A split module's x86_64 child
/// holds only its ARM64 part: its draft alone is its API.
pub fn api_of(module: &ModulePlan, draft: &str) -> Vec<String> {
    let scanned: &[crate::workspace::Item] = match mode_of(module) {
        Mode::Split => &[],
        Mode::Mirrored | Mode::InPlace => &module.items,
    };
    super::contract::api_lines(draft, scanned)
}

/// The items of a draft the model must fill: those with the engine's `eterna-port`
/// stub, and the ARM64 code the engine left out, by name.
pub fn stubs_of(draft: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items_of(draft) {
        let engine_stub = match i.status {
            ItemStatus::Stubbed => i
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("eterna-port")),
            ItemStatus::LeftOut | ItemStatus::Missing => true,
            ItemStatus::Ported => false,
        };
        if engine_stub && !out.contains(&i.name) {
            out.push(i.name);
        }
    }
    out
}

/// The concept-map entries `text` names (a group of a module's items): a register or
/// an instruction whose name is one of its words, a family (`CNTV_*`) one of whose
/// registers it names, and the component-wide entries (names of several words).
pub fn concepts_named_in(concepts: Vec<Concept>, text: &str) -> Vec<Concept> {
    let words: BTreeSet<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect();
    concepts
        .into_iter()
        .filter(|c| {
            let name = c.name.to_ascii_uppercase();
            if name.contains(' ') {
                true
            } else if let Some(prefix) = name.strip_suffix('*') {
                words.iter().any(|w| w.starts_with(prefix))
            } else {
                words.contains(&name)
            }
        })
        .collect()
}

/// The concept-map entries for a module: every system register and instruction its
/// source uses, then its component's entries, at most [`MAX_CONCEPTS`].
pub fn concepts_for(module: &ModulePlan, k: &Knowledge) -> Vec<Concept> {
    let mut used: Vec<Concept> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut push = |out: &mut Vec<Concept>, name: &str, x86: &str, note: &str| {
        if seen.insert(name.to_ascii_uppercase()) {
            out.push(Concept {
                name: name.to_string(),
                x86_64: x86.to_string(),
                note: note.to_string(),
            });
        }
    };
    for e in &module.evidence {
        match e.kind {
            EvidenceKind::Sysreg => {
                let upper = e.name.to_ascii_uppercase();
                if let Some(s) = k.sysregs.iter().find(|s| s.name == upper) {
                    push(&mut used, &s.name, &s.x86_64, &s.note);
                } else if let Some(f) = k
                    .sysreg_families
                    .iter()
                    .find(|f| upper.starts_with(&f.prefix.to_ascii_uppercase()))
                {
                    push(&mut used, &format!("{}*", f.prefix), &f.x86_64, &f.note);
                }
            }
            EvidenceKind::AsmMnemonic => {
                if let Some(i) = k.instruction(&e.name) {
                    push(&mut used, &i.mnemonic, &i.x86_64, &i.note);
                }
            }
            _ => {}
        }
    }
    let c = module.component.as_str();
    for s in k.sysregs.iter().filter(|s| s.component == c) {
        push(&mut used, &s.name, &s.x86_64, &s.note);
    }
    for f in k.sysreg_families.iter().filter(|f| f.component == c) {
        push(&mut used, &format!("{}*", f.prefix), &f.x86_64, &f.note);
    }
    for i in k.instructions.iter().filter(|i| i.component == c) {
        push(&mut used, &i.mnemonic, &i.x86_64, &i.note);
    }
    for e in k.exception_classes.iter().filter(|e| e.component == c) {
        push(
            &mut used,
            &format!("EC {:#04x} {}", e.ec, e.name),
            &e.x86_64,
            &e.note,
        );
    }
    for d in k.devices.iter().filter(|d| d.component == c) {
        push(&mut used, &d.name, &d.x86_64, &d.note);
    }
    used.truncate(MAX_CONCEPTS);
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{
        Evidence, Item, ItemKind, PackageFacts, ToolchainFact, TraceRule, WorkspaceFacts,
    };

    fn module(source: &str, target: &str) -> ModulePlan {
        ModulePlan {
            package: "hv".into(),
            source: source.into(),
            module_path: "hv::arch::aarch64::irq".into(),
            component: crate::knowledge::ComponentId::InterruptController,
            target: target.into(),
            x86_concept: None,
            status: crate::plan::Status::New,
            depends_on: Vec::new(),
            evidence: ["ICC_IAR1_EL1", "ICH_LR0_EL2", "CNTV_CTL_EL0"]
                .iter()
                .map(|n| Evidence {
                    kind: EvidenceKind::Sysreg,
                    name: n.to_string(),
                    line: Some(1),
                    file: None,
                    line_in_file: None,
                    count: 1,
                })
                .collect(),
            items: vec![
                Item {
                    kind: ItemKind::Struct,
                    name: "Irq".into(),
                    signature: "pub struct Irq".into(),
                    line: 1,
                },
                Item {
                    kind: ItemKind::Method,
                    name: "Irq::reset".into(),
                    signature: "pub fn reset(&self)".into(),
                    line: 2,
                },
            ],
            missing: Vec::new(),
        }
    }

    fn nightly() -> WorkspaceFacts {
        WorkspaceFacts {
            toolchain: ToolchainFact::Pinned {
                channel: "nightly-2024-06-01".into(),
                file: "rust-toolchain.toml".into(),
                nightly: true,
            },
            packages: BTreeMap::from([(
                "hv".to_string(),
                PackageFacts {
                    edition: "2021".into(),
                    rust_version: None,
                    no_std: Some(true),
                    features: vec!["naked_functions".into()],
                },
            )]),
            trace: None,
        }
    }

    const SOURCE: &str = "pub mod regs;\npub use regs::Lr;\n\npub struct Irq;\n\nimpl Irq {\n    pub fn reset(&self) {\n        unsafe { core::arch::asm!(\"msr ich_hcr_el2, xzr\") }\n    }\n    pub fn pending(&self) -> u32 {\n        0\n    }\n}\n";
    const DRAFT: &str = "pub mod regs;\npub use regs::Lr;\n\npub struct Irq;\n\nimpl Irq {\n    pub fn reset(&self) {\n        unimplemented!(\"eterna-port: msr ich_hcr_el2 has no x86_64 counterpart yet\")\n    }\n    pub fn pending(&self) -> u32 {\n        0\n    }\n}\n\npub fn helper() {\n    todo!()\n}\n";

    fn render(prompts: &Prompts, m: &ModulePlan) -> (String, String) {
        let k = Knowledge::embedded().unwrap();
        let msgs = prompts
            .port(
                Role::EternaPort,
                &PortPrompt {
                    module: m,
                    source: "src/arch/aarch64/irq.rs",
                    target: "src/arch/x86_64/irq.rs",
                    source_text: SOURCE,
                    draft: Some(DRAFT),
                    dependents: Vec::new(),
                    context: Vec::new(),
                    triple: "x86_64-unknown-none",
                },
                &k,
            )
            .unwrap();
        (msgs[0].content.clone(), msgs[1].content.clone())
    }

    #[test]
    fn the_system_prompt_says_only_what_the_workspace_says() {
        let m = module("hv/src/arch/aarch64/irq.rs", "hv/src/arch/x86_64/irq.rs");
        let prompts = Prompts::embedded().unwrap().with_workspace(nightly());
        let (system, _) = render(&prompts, &m);
        assert!(
            system.contains("`nightly-2024-06-01`, a nightly pinned by `rust-toolchain.toml`; the crate enables `#![feature(naked_functions)]`")
                && system.contains("with Rust edition 2021")
                && system.contains("The crate is `#![no_std]`"),
            "{system}"
        );
        assert!(!system.to_lowercase().contains("stable"), "{system}");
        assert!(!system.contains("trace"), "no trace rule: {system}");
        // One concept-map entry per line.
        let concepts: Vec<&str> = system
            .lines()
            .skip_while(|l| !l.starts_with("ARM64 → x86_64 concept map"))
            .skip(1)
            .collect();
        assert!(concepts.len() >= 3, "{system}");
        for l in &concepts {
            assert!(
                l.starts_with("- ") && l.matches(" → ").count() == 1,
                "not one entry per line: {l:?}\n{system}"
            );
        }

        // A configured trace: its rule, with the workspace's own prefix.
        let mut facts = nightly();
        facts.trace = Some(TraceRule {
            prefix: "[vm] ".into(),
            exit_prefix: Some("[hv] exit code=".into()),
        });
        facts.toolchain = ToolchainFact::Unpinned;
        facts.packages.get_mut("hv").unwrap().rust_version = Some("1.80".into());
        facts.packages.get_mut("hv").unwrap().no_std = Some(false);
        facts.packages.get_mut("hv").unwrap().features.clear();
        let (system, _) = render(&Prompts::embedded().unwrap().with_workspace(facts), &m);
        assert!(
            system.contains("starting with\n  `[vm] ` that the ARM64 original prints")
                && system.contains("ends with the line `[hv] exit code=<code>`"),
            "{system}"
        );
        assert!(
            system.contains("write stable Rust that builds with Rust 1.80"),
            "{system}"
        );
        assert!(!system.contains("no_std"), "{system}");
        // Unpinned but with `#![feature]`s: not stable.
        let mut facts = nightly();
        facts.toolchain = ToolchainFact::Unpinned;
        let (system, _) = render(&Prompts::embedded().unwrap().with_workspace(facts), &m);
        assert!(
            system.contains(
                "and the crate enables `#![feature(naked_functions)]`: it builds with a nightly."
            ) && !system.contains("stable"),
            "{system}"
        );

        // Nothing known: nothing claimed.
        let (system, _) = render(&Prompts::embedded().unwrap(), &m);
        for claim in ["stable", "nightly", "edition", "no_std", "trace"] {
            assert!(!system.contains(claim), "{claim}: {system}");
        }
    }

    #[test]
    fn the_task_shows_the_api_the_check_and_the_stubs_as_they_are() {
        let m = module("hv/src/arch/aarch64/irq.rs", "hv/src/arch/x86_64/irq.rs");
        let prompts = Prompts::embedded().unwrap().with_workspace(nightly());
        let (_, user) = render(&prompts, &m);
        // The whole API: mod and use lines, methods with their type.
        for line in [
            "- `pub mod regs`\n",
            "- `pub use regs::Lr;`\n",
            "- `pub struct Irq`\n",
            "- `Irq::reset`: `pub fn reset(&self)`\n",
            "- `Irq::pending`: `pub fn pending(&self) -> u32`\n",
        ] {
            assert!(user.contains(line), "{line}: {user}");
        }
        assert!(!user.contains("(none"), "{user}");
        // The ARM64 source as given, the draft, and only the engine's stub as the task.
        assert!(user.contains(SOURCE) && user.contains(DRAFT), "{user}");
        assert!(
            user.contains("engine's `unimplemented!(\"eterna-port: …\")` stub (or the ARM64 code it left out): `Irq::reset`.\n"),
            "{user}"
        );
        // Not checked: never said to compile.
        assert!(
            user.contains("It has not been compiled: no check was run before this prompt.")
                && !user.contains("It compiles"),
            "{user}"
        );

        let failing = DraftChecks {
            target: "x86_64-unknown-none".into(),
            modules: BTreeMap::from([(
                m.module_path.clone(),
                DraftCheck::Errors {
                    count: 5,
                    shown: vec!["error[E0425]: cannot find value `x`".into(); 3],
                },
            )]),
            not_run: None,
        };
        let (_, user) = render(&Prompts::embedded().unwrap().with_draft_checks(failing), &m);
        assert!(
            user.contains("It does not compile: `cargo check --target x86_64-unknown-none` of the drafted workspace,\nrun before this prompt, found 5 error(s) in it (the first 3 below):")
                && user.matches("cannot find value `x`").count() == 3
                && user.contains("Fix the errors above too."),
            "{user}"
        );
        assert!(!user.contains("It compiles"), "{user}");

        let clean = DraftChecks {
            target: "x86_64-unknown-none".into(),
            modules: BTreeMap::from([(m.module_path.clone(), DraftCheck::Compiles)]),
            not_run: None,
        };
        let (_, user) = render(&Prompts::embedded().unwrap().with_draft_checks(clean), &m);
        assert!(user.contains("It compiles: `cargo check --target x86_64-unknown-none`"));
        assert!(!user.contains("Fix the errors"), "{user}");
    }

    #[test]
    fn a_module_compiles_only_when_its_crate_had_no_error_elsewhere() {
        let diag = |level: crate::fixloop::Level| crate::fixloop::Diag {
            file: "hv/src/x86_64/irq.rs".into(),
            line: 3,
            column: 1,
            level,
            code: None,
            message: "m".into(),
            rendered: format!("{}: m\n{}", level.as_str(), "x".repeat(5000)),
        };
        let result = |errors: usize, compiled: bool| crate::fixloop::ModuleResult {
            module_path: "hv::irq".into(),
            component: Some("interrupt-controller".into()),
            package: Some("hv".into()),
            files: vec!["hv/src/x86_64/irq.rs".into()],
            errors,
            warnings: 1,
            compiled,
            status: "ok",
            diagnostics: std::iter::once(diag(crate::fixloop::Level::Warning))
                .chain((0..errors).map(|_| diag(crate::fixloop::Level::Error)))
                .collect(),
        };
        assert_eq!(
            DraftCheck::from_result(&result(0, true), 0),
            DraftCheck::Compiles
        );
        assert!(matches!(
            DraftCheck::from_result(&result(0, true), 2),
            DraftCheck::NotChecked { reason } if reason.contains("2 error(s) elsewhere in its crate")
        ));
        assert!(matches!(
            DraftCheck::from_result(&result(0, false), 0),
            DraftCheck::NotChecked { .. }
        ));
        let DraftCheck::Errors { count, shown } = DraftCheck::from_result(&result(5, true), 0)
        else {
            panic!("errors expected");
        };
        assert_eq!((count, shown.len()), (5, MAX_DRAFT_ERRORS));
        assert!(shown
            .iter()
            .all(|e| e.starts_with("error: m") && e.len() < 1600));
    }

    #[test]
    fn an_arch_root_lists_its_mod_and_use_lines_as_its_api() {
        let mut m = module("hv/src/arch/mod.rs", "hv/src/arch/mod.rs");
        m.items.clear();
        let draft = "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n#[cfg(target_arch = \"x86_64\")]\npub mod x86_64;\n#[cfg(target_arch = \"aarch64\")]\npub use aarch64::Platform;\n#[cfg(target_arch = \"x86_64\")]\npub use x86_64::Platform;\n";
        let k = Knowledge::embedded().unwrap();
        let msgs = Prompts::embedded()
            .unwrap()
            .port(
                Role::Code,
                &PortPrompt {
                    module: &m,
                    source: "src/arch/mod.rs",
                    target: "src/arch/mod.rs",
                    source_text: "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n",
                    draft: Some(draft),
                    dependents: Vec::new(),
                    context: Vec::new(),
                    triple: "x86_64-unknown-none",
                },
                &k,
            )
            .unwrap();
        let user = &msgs[1].content;
        for line in [
            "- `pub mod aarch64`\n",
            "- `pub mod x86_64`\n",
            "- `pub use aarch64::Platform;`\n",
            "- `pub use x86_64::Platform;`\n",
        ] {
            assert!(user.contains(line), "{line}: {user}");
        }
        assert!(!user.contains("no public items"), "{user}");
        assert!(
            user.contains("the draft has no `eterna-port` stubs"),
            "{user}"
        );
    }
}
