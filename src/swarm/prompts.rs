//! The agents' prompts: minijinja templates from `templates/prompts/`, embedded in the
//! binary, filled from the plan, the sources, the offline engine's drafts, the store's
//! retrieved context and (for the DebugAgent) `cargo check` diagnostics.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use minijinja::Environment;
use serde::Serialize;

use super::Role;
use crate::knowledge::Knowledge;
use crate::llm::Message;
use crate::plan::ModulePlan;
use crate::store::RankedChunk;
use crate::workspace::EvidenceKind;

const SYSTEM: &str = include_str!("../../templates/prompts/system.md");
const ETERNA_PORT: &str = include_str!("../../templates/prompts/eterna_port.md");
const CODE: &str = include_str!("../../templates/prompts/code.md");
const DEBUG: &str = include_str!("../../templates/prompts/debug.md");

/// At most this many concept-map entries go into one system prompt.
const MAX_CONCEPTS: usize = 60;

/// One concept-map entry as the system prompt shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Concept {
    pub name: String,
    pub x86_64: String,
    pub note: String,
}

/// A retrieved chunk as the prompts show it.
#[derive(Debug, Clone, Serialize)]
pub struct ContextChunk {
    pub title: String,
    pub path: String,
    pub start_line: i64,
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
    pub path: String,
    pub content: String,
}

/// The prompt renderer.
pub struct Prompts {
    env: Environment<'static>,
}

/// What a port (EternaPortAgent) or in-place (CodeAgent) prompt needs.
pub struct PortPrompt<'a> {
    pub module: &'a ModulePlan,
    /// Paths relative to the package root.
    pub source: &'a str,
    pub target: &'a str,
    pub source_text: &'a str,
    pub draft: Option<&'a str>,
    pub dependents: Vec<String>,
    pub context: Vec<ContextChunk>,
    pub triple: &'a str,
}

/// What a DebugAgent prompt needs.
pub struct DebugPrompt<'a> {
    pub module: &'a ModulePlan,
    /// Package-relative paths the agent may rewrite, with their current text.
    pub current: Vec<FileText>,
    /// Rendered diagnostics (rustc's `rendered` text).
    pub diagnostics: Vec<String>,
    pub context: Vec<ContextChunk>,
    pub triple: &'a str,
}

impl Prompts {
    pub fn embedded() -> Result<Prompts> {
        let mut env = Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.trim_blocks(true).keep_trailing_newline(true);
        env.set_syntax(
            syntax
                .build()
                .map_err(|e| anyhow::anyhow!("prompt template syntax: {e}"))?,
        );
        for (name, text) in [
            ("system.md", SYSTEM),
            ("eterna_port.md", ETERNA_PORT),
            ("code.md", CODE),
            ("debug.md", DEBUG),
        ] {
            env.add_template(name, text)
                .with_context(|| format!("internal: prompt template {name} does not parse"))?;
        }
        Ok(Prompts { env })
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
        self.render(
            "system.md",
            minijinja::context! {
                agent => role.name(),
                specialization => role.specialization(),
                concepts => minijinja::Value::from(minijinja::value::Serde(concepts_for(module, knowledge))),
                example_path => example_path,
                target => triple,
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
        let user = self.render(
            template,
            minijinja::context! {
                module_path => &p.module.module_path,
                component => &p.module.component,
                package => &p.module.package,
                source => p.source,
                target => p.target,
                source_text => p.source_text,
                draft => p.draft,
                dependents => &p.dependents,
                api => api_of(p.module),
                context => minijinja::Value::from(minijinja::value::Serde(&p.context)),
            },
        )?;
        Ok(vec![
            Message::system(self.system(role, p.module, knowledge, p.target, p.triple)?),
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
            },
        )?;
        let example = files.first().map_or("src/lib.rs", String::as_str);
        Ok(vec![
            Message::system(self.system(Role::Debug, p.module, knowledge, example, p.triple)?),
            Message::user(user),
        ])
    }
}

/// The module's public API as signatures.
fn api_of(module: &ModulePlan) -> Vec<String> {
    module.items.iter().map(|i| i.signature.clone()).collect()
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
