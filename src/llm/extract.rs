//! Takes the files out of an LLM answer and validates them before anything is written.
//!
//! Two forms are accepted:
//! - a JSON envelope `{"files": [{"path": "...", "content": "..."}]}`, bare or in a
//!   ```` ```json ```` fence;
//! - fenced ```` ```rust ```` blocks, each naming its file in the fence's info string
//!   (```` ```rust src/x.rs ````, `path=src/x.rs`), in a first-line comment
//!   (`// src/x.rs`, `// path: src/x.rs`, `// File: src/x.rs`) or on the line before the
//!   fence (`src/x.rs:`, `**src/x.rs**`); a block naming no file is the single expected
//!   target.
//!
//! Every path must be relative to the package root, without `..`, and inside the
//! allowed target set; `Cargo.toml` and `build.rs` are dependency changes, rejected
//! unless `allow_deps`. Every `.rs` file must parse with `syn::parse_file`.

use serde::Deserialize;
use thiserror::Error;

/// What the caller expects the answer to contain.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Paths the answer may write, relative to the package root with `/` separators:
    /// a file (`src/arch/x86_64/vmcs.rs`) or, ending in `/`, a directory
    /// (`src/arch/x86_64/`).
    pub allowed: Vec<String>,
    /// The file a block that names no file is for. Default: the only allowed file
    /// entry, if there is exactly one.
    pub default_target: Option<String>,
    /// `--allow-deps`: the package's `Cargo.toml` and `build.rs` may be written.
    pub allow_deps: bool,
}

impl ExtractOptions {
    /// Options allowing exactly `targets`.
    pub fn for_targets<I, S>(targets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExtractOptions {
            allowed: targets.into_iter().map(Into::into).collect(),
            ..ExtractOptions::default()
        }
    }

    fn default_target(&self) -> Option<&str> {
        if let Some(t) = &self.default_target {
            return Some(t);
        }
        let files: Vec<&String> = self.allowed.iter().filter(|a| !a.ends_with('/')).collect();
        match files.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        }
    }
}

/// One file from the answer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedFile {
    /// Normalised relative path (`/` separators, no `.` components).
    pub path: String,
    /// The file's content.
    pub content: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
/// Why an answer's files were not accepted.
pub enum ExtractError {
    /// The answer holds no code at all.
    #[error("the answer contains no code: expected a JSON envelope {{\"files\": [...]}} or a ```rust block")]
    NoCode,
    /// A JSON `{"files": [...]}` envelope that does not parse.
    #[error("the JSON envelope is malformed: {0}")]
    Envelope(String),
    /// A code block names no file, and no single file is expected.
    #[error("a code block names no file and there is no single expected target (allowed: {allowed}); name the file in the block")]
    NoTarget {
        /// The files the answer may contain.
        allowed: String,
    },
    /// Several code blocks name no file.
    #[error("{blocks} code blocks name no file; only one can be the expected target `{target}`")]
    AmbiguousTarget {
        /// How many.
        blocks: usize,
        /// The one file expected.
        target: String,
    },
    /// A file with an empty path.
    #[error("an empty file path in the answer")]
    EmptyPath,
    /// An absolute path.
    #[error("`{path}` is an absolute path; only paths relative to the package root are accepted")]
    AbsolutePath {
        /// The path.
        path: String,
    },
    /// A path that goes up with `..`.
    #[error("`{path}` goes up with `..`; only paths inside the package are accepted")]
    ParentDir {
        /// The path.
        path: String,
    },
    /// A file outside the planned target modules.
    #[error("`{path}` is outside the planned target modules (allowed: {allowed})")]
    OutsideTargets {
        /// The path.
        path: String,
        /// The files the answer may contain.
        allowed: String,
    },
    /// A `Cargo.toml` or `build.rs`, without `--allow-deps`.
    #[error("`{path}` changes the package's dependencies or build; rerun with --allow-deps to accept it")]
    DepsChange {
        /// The path.
        path: String,
    },
    /// The same file twice.
    #[error("`{path}` appears twice in the answer")]
    DuplicatePath {
        /// The path.
        path: String,
    },
    /// A Rust file that does not parse.
    #[error("`{path}` is not valid Rust: line {line}, column {column}: {message}")]
    InvalidRust {
        /// The path.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// syn's message.
        message: String,
    },
    /// A `Cargo.toml` that does not parse as TOML.
    #[error("`{path}` is not a valid Cargo.toml: {message}")]
    InvalidManifest {
        /// The path.
        path: String,
        /// The TOML parser's message.
        message: String,
    },
}

/// Extracts and validates the files of `answer`.
pub fn extract_files(
    answer: &str,
    opts: &ExtractOptions,
) -> Result<Vec<ExtractedFile>, ExtractError> {
    let blocks = fenced_blocks(answer);
    let raw = match envelope(answer, &blocks)? {
        Some(files) => files,
        None => rust_blocks(&blocks, opts)?,
    };
    if raw.is_empty() {
        return Err(ExtractError::NoCode);
    }
    let mut out: Vec<ExtractedFile> = Vec::with_capacity(raw.len());
    for (path, content) in raw {
        let path = check_path(&path, opts)?;
        if out.iter().any(|f| f.path == path) {
            return Err(ExtractError::DuplicatePath { path });
        }
        validate_content(&path, &content)?;
        out.push(ExtractedFile { path, content });
    }
    Ok(out)
}

/// A fenced block: its info string, its content, and the line before the fence.
#[derive(Debug)]
struct Block<'a> {
    info: &'a str,
    content: String,
    before: Option<&'a str>,
}

impl Block<'_> {
    fn lang(&self) -> &str {
        self.info
            .split(|c: char| c.is_whitespace() || c == ',' || c == '{')
            .next()
            .unwrap_or("")
    }
}

fn fenced_blocks(text: &str) -> Vec<Block<'_>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let fence_char = match trimmed.chars().next() {
            Some(c @ ('`' | '~')) => c,
            _ => {
                i += 1;
                continue;
            }
        };
        let len = trimmed.chars().take_while(|&c| c == fence_char).count();
        if len < 3 {
            i += 1;
            continue;
        }
        let info = trimmed[len..].trim();
        let before = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .copied();
        let mut content = Vec::new();
        let mut j = i + 1;
        while j < lines.len() {
            let t = lines[j].trim();
            if t.len() >= len && t.chars().all(|c| c == fence_char) {
                break;
            }
            content.push(lines[j]);
            j += 1;
        }
        let mut content = content.join("\n");
        content.push('\n');
        blocks.push(Block {
            info,
            content,
            before,
        });
        i = j + 1;
    }
    blocks
}

#[derive(Deserialize)]
struct Envelope {
    files: Vec<EnvelopeFile>,
}

#[derive(Deserialize)]
struct EnvelopeFile {
    path: String,
    content: String,
}

/// The files of a JSON envelope, if the answer is (or fences) one.
fn envelope(
    answer: &str,
    blocks: &[Block<'_>],
) -> Result<Option<Vec<(String, String)>>, ExtractError> {
    // (text, whether a parse error there is the answer's error)
    let mut candidates: Vec<(&str, bool)> = Vec::new();
    let whole = answer.trim();
    if whole.starts_with('{') {
        candidates.push((whole, true));
    }
    for b in blocks {
        let t = b.content.trim();
        if (b.lang().eq_ignore_ascii_case("json") || b.lang().is_empty()) && t.starts_with('{') {
            candidates.push((t, true));
        }
    }
    // An envelope in prose without a fence: from the first `{` to the last `}`.
    if let (Some(start), Some(end)) = (answer.find('{'), answer.rfind('}')) {
        let inner = &answer[start..=end.max(start)];
        if candidates.is_empty() && inner.contains("\"files\"") {
            candidates.push((inner, false));
        }
    }
    for (c, strict) in candidates {
        let v: serde_json::Value = match serde_json::from_str(c) {
            Ok(v) => v,
            Err(e) => {
                if strict && c.contains("\"files\"") {
                    return Err(ExtractError::Envelope(e.to_string()));
                }
                continue;
            }
        };
        if v.get("files").is_none() {
            continue;
        }
        let env: Envelope =
            serde_json::from_value(v).map_err(|e| ExtractError::Envelope(e.to_string()))?;
        return Ok(Some(
            env.files.into_iter().map(|f| (f.path, f.content)).collect(),
        ));
    }
    Ok(None)
}

/// The files of the ```rust blocks of the answer.
fn rust_blocks(
    blocks: &[Block<'_>],
    opts: &ExtractOptions,
) -> Result<Vec<(String, String)>, ExtractError> {
    let mut named = Vec::new();
    let mut unnamed = Vec::new();
    for b in blocks {
        let lang = b.lang().to_ascii_lowercase();
        let is_rust = matches!(lang.as_str(), "rust" | "rs") || lang.starts_with("rust:");
        let info_path = path_in_info(b.info);
        let (first_line_path, body) = path_in_first_line(&b.content);
        let path = info_path
            .clone()
            .or(first_line_path.clone())
            .or_else(|| b.before.and_then(path_in_line));
        // Other named files matter too: a manifest must be seen to be rejected (or
        // accepted with --allow-deps), and a file named in the fence is meant to be
        // written.
        let wanted = path.as_deref().is_some_and(|p| {
            p.ends_with(".rs") || p.ends_with("Cargo.toml") || info_path.is_some()
        });
        if !is_rust && !wanted {
            continue;
        }
        let content = if first_line_path.is_some() {
            body
        } else {
            b.content.clone()
        };
        match path {
            Some(p) => named.push((p, content)),
            None => unnamed.push(content),
        }
    }
    if !unnamed.is_empty() {
        let Some(target) = opts.default_target() else {
            return Err(ExtractError::NoTarget {
                allowed: allowed_list(opts),
            });
        };
        if unnamed.len() > 1 || named.iter().any(|(p, _)| same_path(p, target)) {
            return Err(ExtractError::AmbiguousTarget {
                blocks: unnamed.len(),
                target: target.to_string(),
            });
        }
        named.push((target.to_string(), unnamed.remove(0)));
    }
    Ok(named)
}

fn same_path(a: &str, b: &str) -> bool {
    a.trim_start_matches("./") == b.trim_start_matches("./")
}

fn looks_like_path(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(char::is_whitespace)
        && (s.contains('/') || s.contains('\\') || s.contains('.'))
        && s.rsplit(['/', '\\'])
            .next()
            .is_some_and(|name| name.contains('.'))
}

/// A path in a fence's info string: ```` ```rust src/x.rs ````, ```` ```rust:src/x.rs ````,
/// `path=src/x.rs`, `title="src/x.rs"`, or a path for a language (```` ```src/x.rs ````).
fn path_in_info(info: &str) -> Option<String> {
    for (n, word) in info
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let word = match word.split_once('=') {
            Some(("path" | "file" | "title" | "filename", v)) => v,
            Some(_) => continue,
            None => word,
        };
        let word = if n == 0 {
            match word.split_once(':') {
                Some((_, rest)) => rest,
                None => word,
            }
        } else {
            word
        };
        let word = word.trim_matches(|c| c == '"' || c == '\'' || c == '`');
        if looks_like_path(word) {
            return Some(word.to_string());
        }
    }
    None
}

/// A first line `// src/x.rs`, `// path: src/x.rs` or `// File: src/x.rs`; returns the
/// path and the content without that line.
fn path_in_first_line(content: &str) -> (Option<String>, String) {
    let (first, rest) = content.split_once('\n').unwrap_or((content, ""));
    let Some(comment) = first.trim().strip_prefix("//") else {
        return (None, content.to_string());
    };
    if comment.starts_with('/') || comment.starts_with('!') {
        return (None, content.to_string());
    }
    let mut c = comment.trim();
    for prefix in ["path:", "Path:", "file:", "File:", "filename:", "Filename:"] {
        if let Some(r) = c.strip_prefix(prefix) {
            c = r.trim();
            break;
        }
    }
    let c = c.trim_matches('`');
    if looks_like_path(c) && (c.ends_with(".rs") || c.ends_with(".toml")) {
        (Some(c.to_string()), rest.to_string())
    } else {
        (None, content.to_string())
    }
}

/// A path named on the line before a fence: `src/x.rs:`, `**src/x.rs**`,
/// ``### `src/x.rs` ``, `File: src/x.rs`.
fn path_in_line(line: &str) -> Option<String> {
    let mut words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| {
                matches!(c, '*' | '`' | '#' | ':' | '"' | '\'' | '(' | ')' | '_')
            })
            .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() > 3 {
        // A sentence, not a file heading.
        words.retain(|w| w.ends_with(".rs") && w.contains('/'));
        if words.len() != 1 {
            return None;
        }
    }
    words
        .into_iter()
        .find(|w| looks_like_path(w) && (w.ends_with(".rs") || w.ends_with(".toml")))
}

fn allowed_list(opts: &ExtractOptions) -> String {
    if opts.allowed.is_empty() {
        "nothing".into()
    } else {
        opts.allowed.join(", ")
    }
}

/// Normalises `raw` and checks it is one the answer may write.
fn check_path(raw: &str, opts: &ExtractOptions) -> Result<String, ExtractError> {
    let raw_trimmed = raw.trim();
    if raw_trimmed.is_empty() {
        return Err(ExtractError::EmptyPath);
    }
    let unified = raw_trimmed.replace('\\', "/");
    let bytes = unified.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if unified.starts_with('/') || unified.starts_with('~') || drive || unified.contains('\0') {
        return Err(ExtractError::AbsolutePath {
            path: raw_trimmed.to_string(),
        });
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ExtractError::ParentDir {
                    path: raw_trimmed.to_string(),
                })
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(ExtractError::EmptyPath);
    }
    let path = parts.join("/");
    if path == "Cargo.toml" || path == "build.rs" || path.ends_with("/Cargo.toml") {
        if !opts.allow_deps {
            return Err(ExtractError::DepsChange { path });
        }
        if path == "Cargo.toml" || path == "build.rs" {
            return Ok(path);
        }
    }
    let inside = opts.allowed.iter().any(|a| {
        let a = a.trim_start_matches("./");
        match a.strip_suffix('/') {
            Some(dir) => path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')),
            None => path == a,
        }
    });
    if !inside {
        return Err(ExtractError::OutsideTargets {
            path,
            allowed: allowed_list(opts),
        });
    }
    Ok(path)
}

fn validate_content(path: &str, content: &str) -> Result<(), ExtractError> {
    if path.ends_with(".rs") {
        if let Err(e) = syn::parse_file(content) {
            let start = e.span().start();
            return Err(ExtractError::InvalidRust {
                path: path.to_string(),
                line: start.line,
                column: start.column + 1,
                message: e.to_string(),
            });
        }
    } else if path.ends_with("Cargo.toml") {
        if let Err(e) = content.parse::<toml::Table>() {
            return Err(ExtractError::InvalidManifest {
                path: path.to_string(),
                message: e.message().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_info_strings() {
        assert_eq!(path_in_info("rust src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(path_in_info("rust:src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(
            path_in_info("rust path=\"src/a.rs\"").as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(
            path_in_info("rust title=src/a.rs").as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(path_in_info("rust"), None);
        assert_eq!(path_in_info("rust,ignore"), None);
    }

    #[test]
    fn paths_in_first_lines_and_headings() {
        let (p, body) = path_in_first_line("// path: src/a.rs\nfn a() {}\n");
        assert_eq!(p.as_deref(), Some("src/a.rs"));
        assert_eq!(body, "fn a() {}\n");
        assert_eq!(path_in_first_line("//! docs.rs\n").0, None);
        assert_eq!(path_in_first_line("// a comment\n").0, None);
        assert_eq!(
            path_in_line("**`src/arch/x86_64/vmx.rs`**:").as_deref(),
            Some("src/arch/x86_64/vmx.rs")
        );
        assert_eq!(path_in_line("### src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(
            path_in_line("Here is the updated file src/a.rs with the fix:").as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(path_in_line("Here is the code, e.g. for this."), None);
    }

    #[test]
    fn path_normalisation() {
        let o = ExtractOptions::for_targets(["src/a.rs", "src/x86_64/"]);
        assert_eq!(check_path("./src/a.rs", &o).unwrap(), "src/a.rs");
        assert_eq!(
            check_path("src\\x86_64\\b.rs", &o).unwrap(),
            "src/x86_64/b.rs"
        );
        assert_eq!(
            check_path("src//x86_64/./c/d.rs", &o).unwrap(),
            "src/x86_64/c/d.rs"
        );
        assert!(matches!(
            check_path("src/x86_64", &o),
            Err(ExtractError::OutsideTargets { .. })
        ));
        assert!(matches!(
            check_path("src/x86_64_evil/a.rs", &o),
            Err(ExtractError::OutsideTargets { .. })
        ));
        assert!(matches!(
            check_path("C:\\x.rs", &o),
            Err(ExtractError::AbsolutePath { .. })
        ));
        assert!(matches!(
            check_path("~/x.rs", &o),
            Err(ExtractError::AbsolutePath { .. })
        ));
        assert!(matches!(
            check_path("src/x86_64/../../a.rs", &o),
            Err(ExtractError::ParentDir { .. })
        ));
        assert!(matches!(check_path(" ", &o), Err(ExtractError::EmptyPath)));
        assert!(matches!(
            check_path("sub/Cargo.toml", &o),
            Err(ExtractError::DepsChange { .. })
        ));
        let deps = ExtractOptions {
            allow_deps: true,
            ..o
        };
        assert_eq!(check_path("Cargo.toml", &deps).unwrap(), "Cargo.toml");
        assert!(matches!(
            check_path("sub/Cargo.toml", &deps),
            Err(ExtractError::OutsideTargets { .. })
        ));
    }

    #[test]
    fn tilde_fences_and_longer_fences() {
        let a = "~~~rust\nfn a() {}\n~~~\n\n````rust src/b.rs\nfn b() { let s = \"```\"; }\n````\n";
        let o = ExtractOptions {
            allowed: vec!["src/".into()],
            default_target: Some("src/a.rs".into()),
            allow_deps: false,
        };
        let files = extract_files(a, &o).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "src/b.rs");
        assert!(files[0].content.contains("\"```\""));
        assert_eq!(files[1].path, "src/a.rs");
    }
}
