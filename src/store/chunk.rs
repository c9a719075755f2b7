//! Splitting sources into retrieval chunks.
//!
//! - Rust: one chunk per item (by `syn` span, attributes and doc comments included);
//!   large `impl` blocks and inline modules are split into their items, runs of small
//!   items (`use`, short consts) are grouped, and the module docs (`//!`) are a chunk.
//! - Markdown: one chunk per heading section, titled with the heading path.
//! - TOML knowledge: one chunk per `[[table]]` entry, with its `component`.
//! - Anything else, or Rust that does not parse: windows of lines.

use syn::spanned::Spanned;

/// One piece of a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 1-based, inclusive.
    pub start_line: usize,
    /// 1-based, inclusive.
    pub end_line: usize,
    /// What the chunk is, for a person (`fn gic_init`, a Markdown heading).
    pub title: String,
    /// For Rust: the module the item is in (inline modules included).
    pub module_path: Option<String>,
    /// The component, when the chunk itself says (knowledge entries).
    pub component: Option<String>,
    /// The chunk's text.
    pub content: String,
}

/// Items longer than this are split (impls, inline modules) or windowed.
const MAX_ITEM_LINES: usize = 150;
/// Items at most this long are grouped with their small neighbours.
const SMALL_ITEM_LINES: usize = 3;
const WINDOW_LINES: usize = 60;
const MAX_SECTION_CHARS: usize = 4000;

fn slice(lines: &[&str], start: usize, end: usize) -> String {
    let end = end.min(lines.len());
    let start = start.max(1);
    if start > end {
        return String::new();
    }
    lines[start - 1..end].join("\n")
}

/// Windows of `WINDOW_LINES` lines.
pub fn chunk_lines(text: &str, title: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut start = 1;
    while start <= lines.len() {
        let end = (start + WINDOW_LINES - 1).min(lines.len());
        let content = slice(&lines, start, end);
        if !content.trim().is_empty() {
            out.push(Chunk {
                start_line: start,
                end_line: end,
                title: format!("{title} (lines {start}-{end})"),
                module_path: None,
                component: None,
                content,
            });
        }
        start = end + 1;
    }
    out
}

/// Chunks a Rust file whose module path is `module_path`.
pub fn chunk_rust(text: &str, module_path: &str) -> Vec<Chunk> {
    let file = match syn::parse_file(text) {
        Ok(f) => f,
        Err(_) => {
            let mut v = chunk_lines(text, module_path);
            for c in &mut v {
                c.module_path = Some(module_path.to_string());
            }
            return v;
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    // Module docs and inner attributes.
    let docs: Vec<&syn::Attribute> = file
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    if let (Some(first), Some(last)) = (docs.first(), docs.last()) {
        let (s, e) = (first.span().start().line, last.span().end().line);
        out.push(Chunk {
            start_line: s,
            end_line: e,
            title: format!("module {module_path}"),
            module_path: Some(module_path.to_string()),
            component: None,
            content: slice(&lines, s, e),
        });
    }
    items(&file.items, &lines, module_path, None, &mut out);
    out
}

fn item_title(item: &syn::Item) -> (String, Option<String>) {
    use quote::ToTokens;
    match item {
        syn::Item::Fn(f) => (format!("fn {}", f.sig.ident), Some(f.sig.ident.to_string())),
        syn::Item::Struct(s) => (format!("struct {}", s.ident), Some(s.ident.to_string())),
        syn::Item::Enum(e) => (format!("enum {}", e.ident), Some(e.ident.to_string())),
        syn::Item::Union(u) => (format!("union {}", u.ident), Some(u.ident.to_string())),
        syn::Item::Trait(t) => (format!("trait {}", t.ident), Some(t.ident.to_string())),
        syn::Item::Type(t) => (format!("type {}", t.ident), Some(t.ident.to_string())),
        syn::Item::Const(c) => (format!("const {}", c.ident), Some(c.ident.to_string())),
        syn::Item::Static(s) => (format!("static {}", s.ident), Some(s.ident.to_string())),
        syn::Item::Mod(m) => (format!("mod {}", m.ident), Some(m.ident.to_string())),
        syn::Item::Macro(m) => {
            let name = m
                .ident
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| m.mac.path.to_token_stream().to_string().replace(' ', ""));
            (format!("macro {name}"), Some(name))
        }
        syn::Item::Impl(i) => {
            let ty = i.self_ty.to_token_stream().to_string().replace(' ', "");
            match &i.trait_ {
                Some((_, path, _)) => {
                    let tr = path.to_token_stream().to_string().replace(' ', "");
                    (format!("impl {tr} for {ty}"), Some(ty))
                }
                None => (format!("impl {ty}"), Some(ty)),
            }
        }
        syn::Item::Use(_) => ("use".into(), None),
        syn::Item::ExternCrate(e) => (format!("extern crate {}", e.ident), None),
        syn::Item::ForeignMod(_) => ("extern block".into(), None),
        _ => ("item".into(), None),
    }
}

fn items(
    list: &[syn::Item],
    lines: &[&str],
    module_path: &str,
    prefix: Option<&str>,
    out: &mut Vec<Chunk>,
) {
    // A pending group of small items: (start, end, names).
    let mut group: Option<(usize, usize, Vec<String>)> = None;
    let flush = |group: &mut Option<(usize, usize, Vec<String>)>, out: &mut Vec<Chunk>| {
        if let Some((s, e, names)) = group.take() {
            let mut names = names;
            names.dedup();
            let title = match prefix {
                Some(p) => format!("{p}: {}", names.join(", ")),
                None => names.join(", "),
            };
            out.push(Chunk {
                start_line: s,
                end_line: e,
                title,
                module_path: Some(module_path.to_string()),
                component: None,
                content: slice(lines, s, e),
            });
        }
    };
    for item in list {
        let span = item.span();
        let (s, e) = (span.start().line, span.end().line);
        if s == 0 || e < s {
            continue;
        }
        let len = e - s + 1;
        let (title, _) = item_title(item);
        let title = match prefix {
            Some(p) => format!("{p} {title}"),
            None => title,
        };
        // Inline modules: recurse with the longer module path.
        if let syn::Item::Mod(m) = item {
            if let Some((_, inner)) = &m.content {
                flush(&mut group, out);
                let path = format!("{module_path}::{}", m.ident);
                items(inner, lines, &path, None, out);
                continue;
            }
        }
        if len <= SMALL_ITEM_LINES || matches!(item, syn::Item::Use(_)) {
            match &mut group {
                Some((gs, ge, names)) if s <= *ge + 2 && e - *gs < 40 => {
                    *ge = e;
                    names.push(title);
                }
                _ => {
                    flush(&mut group, out);
                    group = Some((s, e, vec![title]));
                }
            }
            continue;
        }
        flush(&mut group, out);
        if len > MAX_ITEM_LINES {
            if let syn::Item::Impl(imp) = item {
                let head = title.clone();
                impl_items(imp, lines, module_path, &head, out);
                continue;
            }
            let mut start = s;
            while start <= e {
                let end = (start + MAX_ITEM_LINES - 1).min(e);
                out.push(Chunk {
                    start_line: start,
                    end_line: end,
                    title: format!("{title} (lines {start}-{end})"),
                    module_path: Some(module_path.to_string()),
                    component: None,
                    content: slice(lines, start, end),
                });
                start = end + 1;
            }
            continue;
        }
        out.push(Chunk {
            start_line: s,
            end_line: e,
            title,
            module_path: Some(module_path.to_string()),
            component: None,
            content: slice(lines, s, e),
        });
    }
    flush(&mut group, out);
}

fn impl_items(
    imp: &syn::ItemImpl,
    lines: &[&str],
    module_path: &str,
    head: &str,
    out: &mut Vec<Chunk>,
) {
    let mut group: Option<(usize, usize, Vec<String>)> = None;
    let push_group = |group: &mut Option<(usize, usize, Vec<String>)>, out: &mut Vec<Chunk>| {
        if let Some((s, e, names)) = group.take() {
            out.push(Chunk {
                start_line: s,
                end_line: e,
                title: format!("{head}: {}", names.join(", ")),
                module_path: Some(module_path.to_string()),
                component: None,
                content: slice(lines, s, e),
            });
        }
    };
    for it in &imp.items {
        let span = it.span();
        let (s, e) = (span.start().line, span.end().line);
        if s == 0 || e < s {
            continue;
        }
        let name = match it {
            syn::ImplItem::Fn(f) => format!("fn {}", f.sig.ident),
            syn::ImplItem::Const(c) => format!("const {}", c.ident),
            syn::ImplItem::Type(t) => format!("type {}", t.ident),
            _ => "item".into(),
        };
        if e - s < SMALL_ITEM_LINES {
            match &mut group {
                Some((_, ge, names)) if s <= *ge + 2 => {
                    *ge = e;
                    names.push(name);
                }
                _ => {
                    push_group(&mut group, out);
                    group = Some((s, e, vec![name]));
                }
            }
            continue;
        }
        push_group(&mut group, out);
        out.push(Chunk {
            start_line: s,
            end_line: e,
            title: format!("{head} {name}"),
            module_path: Some(module_path.to_string()),
            component: None,
            content: slice(lines, s, e),
        });
    }
    push_group(&mut group, out);
}

/// Chunks Markdown by heading; `doc_title` names the document.
pub fn chunk_markdown(text: &str, doc_title: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut heads: Vec<(usize, String)> = Vec::new(); // (level, text)
    let mut start = 1;
    let mut in_fence = false;
    let emit = |start: usize, end: usize, heads: &[(usize, String)], out: &mut Vec<Chunk>| {
        if end < start {
            return;
        }
        let content = slice(&lines, start, end);
        let body_lines = content
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .count();
        if body_lines == 0 {
            return;
        }
        let mut title = doc_title.to_string();
        for (_, h) in heads {
            title.push_str(" > ");
            title.push_str(h);
        }
        // Long sections: split at blank lines.
        if content.len() <= MAX_SECTION_CHARS {
            out.push(Chunk {
                start_line: start,
                end_line: end,
                title,
                module_path: None,
                component: None,
                content,
            });
            return;
        }
        let mut s = start;
        let mut size = 0;
        for i in start..=end {
            size += lines[i - 1].len() + 1;
            let blank = lines[i - 1].trim().is_empty();
            if (size >= MAX_SECTION_CHARS / 2 && blank) || size >= MAX_SECTION_CHARS || i == end {
                out.push(Chunk {
                    start_line: s,
                    end_line: i,
                    title: title.clone(),
                    module_path: None,
                    component: None,
                    content: slice(&lines, s, i),
                });
                s = i + 1;
                size = 0;
            }
        }
    };
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let level = t.bytes().take_while(|b| *b == b'#').count();
        if (1..=6).contains(&level) && t.as_bytes().get(level) == Some(&b' ') {
            emit(start, n - 1, &heads, &mut out);
            heads.retain(|(l, _)| *l < level);
            heads.push((level, t[level..].trim().to_string()));
            start = n;
        }
    }
    emit(start, lines.len(), &heads, &mut out);
    out
}

fn toml_string(line: &str, key: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix(key)?.trim_start();
    let rest = rest.strip_prefix('=')?.trim();
    if let Some(q) = rest.strip_prefix('"') {
        return q.split('"').next().map(str::to_string);
    }
    Some(rest.to_string())
}

/// Chunks a knowledge TOML file: one chunk per `[[table]]` entry.
pub fn chunk_knowledge_toml(text: &str, file: &str) -> Vec<Chunk> {
    let lines: Vec<&str> = text.lines().collect();
    let mut starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[["))
        .map(|(i, _)| i + 1)
        .collect();
    let mut out = Vec::new();
    let first = starts.first().copied().unwrap_or(lines.len() + 1);
    let preamble = slice(&lines, 1, first - 1);
    if preamble.lines().filter(|l| !l.trim().is_empty()).count() >= 3 {
        out.push(Chunk {
            start_line: 1,
            end_line: first - 1,
            title: file.to_string(),
            module_path: None,
            component: None,
            content: preamble,
        });
    }
    starts.push(lines.len() + 1);
    for w in starts.windows(2) {
        let (s, next) = (w[0], w[1]);
        // Trailing comment lines belong to the next entry's section header.
        let mut e = next - 1;
        while e > s && {
            let t = lines[e - 1].trim();
            t.is_empty() || t.starts_with('#')
        } {
            e -= 1;
        }
        let table = lines[s - 1]
            .trim()
            .trim_start_matches("[[")
            .trim_end_matches("]]")
            .to_string();
        let mut name = None;
        let mut component = None;
        for l in &lines[s..e] {
            for key in ["name", "mnemonic", "prefix"] {
                if name.is_none() {
                    name = toml_string(l, key);
                }
            }
            if component.is_none() {
                component = toml_string(l, "component");
            }
        }
        if table == "component" {
            component = name.clone();
        }
        out.push(Chunk {
            start_line: s,
            end_line: e,
            title: format!("{table} {}", name.unwrap_or_default())
                .trim()
                .to_string(),
            module_path: None,
            component,
            content: slice(&lines, s, e),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_chunks_follow_items() {
        let src = "//! GIC driver.\n//! Second line.\nuse a::b;\nuse c::d;\n\n/// Doc.\npub fn init() {\n    let x = 1;\n    let y = 2;\n}\n\nmod inner {\n    pub fn f() {\n        one();\n        two();\n    }\n}\n";
        let c = chunk_rust(src, "k::gic");
        let titles: Vec<&str> = c.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["module k::gic", "use", "fn init", "fn f"]);
        assert_eq!((c[2].start_line, c[2].end_line), (6, 10));
        assert!(c[2].content.starts_with("/// Doc."));
        assert_eq!(c[3].module_path.as_deref(), Some("k::gic::inner"));
    }

    #[test]
    fn broken_rust_falls_back_to_windows() {
        let c = chunk_rust("fn broken( {\n", "k");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].start_line, 1);
    }

    #[test]
    fn markdown_by_heading() {
        let md = "# Title\nintro\n## A\ntext a\n```\n# not a heading\n```\n## B\ntext b\n";
        let c = chunk_markdown(md, "doc.md");
        let titles: Vec<&str> = c.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            ["doc.md > Title", "doc.md > Title > A", "doc.md > Title > B"]
        );
        assert_eq!((c[1].start_line, c[1].end_line), (3, 7));
    }

    #[test]
    fn toml_by_entry() {
        let t = "# header\n# more\n# more\n\n[[sysreg]]\nname = \"HCR_EL2\"\ncomponent = \"vm-control\"\n\n[[instruction]]\nmnemonic = \"eret\"\ncomponent = \"exception\"\n";
        let c = chunk_knowledge_toml(t, "concepts.toml");
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].title, "sysreg HCR_EL2");
        assert_eq!(c[1].component.as_deref(), Some("vm-control"));
        assert_eq!(c[2].title, "instruction eret");
    }
}
