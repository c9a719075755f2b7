//! The x86_64 templates (`templates/x86_64/`), embedded in the binary: a manifest that
//! says which template ports which component (or which source file stem), rendered
//! with minijinja.

use anyhow::{anyhow, Context, Result};
use include_dir::{include_dir, Dir};
use serde::Deserialize;

static X86_64: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates/x86_64");

/// One module template.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplateEntry {
    /// Path below `templates/x86_64/modules/`.
    pub file: String,
    /// The component it ports (plan vocabulary).
    pub component: String,
    /// Source file stems it is for; empty: the component's default.
    #[serde(default)]
    pub stems: Vec<String>,
    #[serde(default)]
    pub summary: String,
}

/// A pure-logic file a template declares with `#[path]`: written beside the target of
/// the module ported with `declared_by`.
#[derive(Debug, Clone, Deserialize)]
pub struct SupportEntry {
    /// Path below `templates/x86_64/` (`vtx/…` for the generic VT-x library).
    pub file: String,
    /// The template (`file`) that declares it.
    pub declared_by: String,
    #[serde(default)]
    pub summary: String,
}

/// A file the port needs besides the modules (linker script, boot configuration),
/// written to `target` relative to the crate directory.
#[derive(Debug, Clone, Deserialize)]
pub struct ExtraEntry {
    /// Path below `templates/x86_64/`.
    pub file: String,
    pub target: String,
    #[serde(default)]
    pub summary: String,
}

#[derive(Debug, Default, Deserialize)]
struct Manifest {
    #[serde(default)]
    template: Vec<TemplateEntry>,
    #[serde(default)]
    support: Vec<SupportEntry>,
    #[serde(default)]
    extra: Vec<ExtraEntry>,
}

/// What a template is rendered with.
#[derive(Debug, Clone)]
pub struct RenderContext<'a> {
    pub crate_name: &'a str,
    pub source: &'a str,
    pub target: &'a str,
    pub component: &'a str,
    pub target_triple: &'a str,
}

/// The loaded templates.
pub struct Templates {
    manifest: Manifest,
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// The templates embedded in this binary.
    pub fn embedded() -> Result<Self> {
        let text = file_text("manifest.toml")?;
        let manifest: Manifest =
            toml::from_str(text).context("templates/x86_64/manifest.toml is not valid")?;
        let mut env = minijinja::Environment::new();
        let mut syntax = minijinja::syntax::SyntaxConfig::builder();
        syntax.keep_trailing_newline(true);
        env.set_syntax(
            syntax
                .build()
                .map_err(|e| anyhow!("template syntax configuration: {e}"))?,
        );
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for name in manifest
            .template
            .iter()
            .map(|t| format!("modules/{}", t.file))
            .chain(manifest.support.iter().map(|e| e.file.clone()))
            .chain(manifest.extra.iter().map(|e| e.file.clone()))
        {
            let source = file_text(&name)?;
            env.add_template_owned(name.clone(), source.to_string())
                .with_context(|| format!("templates/x86_64/{name} is not a valid template"))?;
        }
        Ok(Templates { manifest, env })
    }

    /// The template for a module of `component` whose source file stem is `stem`:
    /// one made for that stem, else the component's default.
    pub fn select(&self, component: &str, stem: &str) -> Option<&TemplateEntry> {
        let t = &self.manifest.template;
        t.iter()
            .find(|e| e.component == component && e.stems.iter().any(|s| s == stem))
            .or_else(|| t.iter().find(|e| e.stems.iter().any(|s| s == stem)))
            .or_else(|| {
                t.iter()
                    .find(|e| e.component == component && e.stems.is_empty())
            })
    }

    /// Every module template.
    pub fn module_templates(&self) -> impl Iterator<Item = &TemplateEntry> {
        self.manifest.template.iter()
    }

    pub fn extras(&self) -> &[ExtraEntry] {
        &self.manifest.extra
    }

    /// The support files a module template declares.
    pub fn support_of<'a>(&'a self, template: &'a str) -> impl Iterator<Item = &'a SupportEntry> {
        self.manifest
            .support
            .iter()
            .filter(move |s| s.declared_by == template)
    }

    /// Renders a module or support template by its manifest `file`.
    pub fn render(&self, file: &str, ctx: &RenderContext<'_>) -> Result<String> {
        self.render_named(&format!("modules/{file}"), ctx)
    }

    /// Renders a support file by its manifest `file`.
    pub fn render_support(&self, file: &str, ctx: &RenderContext<'_>) -> Result<String> {
        self.render_named(file, ctx)
    }

    /// Renders an extra by its manifest `file`.
    pub fn render_extra(&self, file: &str, ctx: &RenderContext<'_>) -> Result<String> {
        self.render_named(file, ctx)
    }

    fn render_named(&self, name: &str, ctx: &RenderContext<'_>) -> Result<String> {
        self.env
            .get_template(name)
            .and_then(|t| {
                t.render(minijinja::context! {
                    crate_name => ctx.crate_name,
                    source => ctx.source,
                    target => ctx.target,
                    component => ctx.component,
                    target_triple => ctx.target_triple,
                })
            })
            .map_err(|e| anyhow!("rendering templates/x86_64/{name}: {e}"))
    }
}

fn file_text(path: &str) -> Result<&'static str> {
    let f = X86_64
        .get_file(path)
        .ok_or_else(|| anyhow!("templates/x86_64/{path} is missing from this build"))?;
    f.contents_utf8()
        .ok_or_else(|| anyhow!("templates/x86_64/{path} is not UTF-8"))
}
