//! ARM64 assembly as evidence: string literals of `asm!`/`global_asm!` and the `.S`
//! files they include, read line by line for AArch64 mnemonics, general registers and
//! system registers (also those written by their encoding).

use super::*;

impl Collector<'_> {
    /// Scans a macro invocation's tokens. Inside asm macros string literals are
    /// assembly; anywhere, identifiers that are system registers count.
    pub(super) fn macro_tokens(&mut self, tokens: &TokenStream, mut in_asm: bool) {
        let mut prev_ident: Option<String> = None;
        // Whether the previous two tokens were `::` (so an identifier is a path segment).
        let mut after_colons = false;
        let mut colon = false;
        for tt in tokens.clone() {
            let is_colon = matches!(&tt, TokenTree::Punct(p) if p.as_char() == ':');
            if let TokenTree::Ident(id) = &tt {
                let s = id.to_string();
                if after_colons && names_arm64(&s) {
                    self.evidence(EvidenceKind::ArchPath, s, id.span().start().line);
                }
            }
            after_colons = colon && is_colon;
            colon = is_colon;
            match tt {
                TokenTree::Group(g) => {
                    let include = prev_ident.as_deref() == Some("include_str");
                    if include {
                        self.include_str(&g.stream(), in_asm);
                    } else {
                        self.macro_tokens(&g.stream(), in_asm);
                    }
                    prev_ident = None;
                }
                TokenTree::Ident(id) => {
                    let s = id.to_string();
                    if matches!(s.as_str(), "asm" | "global_asm" | "naked_asm") {
                        in_asm = true;
                    }
                    if is_sysreg_shape(&s) && self.knowledge.is_known_sysreg(&s) {
                        let line = id.span().start().line;
                        self.evidence(EvidenceKind::Sysreg, s.to_ascii_uppercase(), line);
                    }
                    prev_ident = Some(s);
                }
                TokenTree::Literal(lit) => {
                    if in_asm {
                        let text = lit.to_string();
                        if is_string_literal(&text) {
                            self.asm_text(&text, lit.span().start().line, None);
                        }
                    }
                    prev_ident = None;
                }
                TokenTree::Punct(p) => {
                    if p.as_char() != '!' {
                        prev_ident = None;
                    }
                }
            }
        }
    }

    pub(super) fn include_str(&mut self, tokens: &TokenStream, in_asm: bool) {
        let Some(TokenTree::Literal(lit)) = tokens.clone().into_iter().next() else {
            return;
        };
        let Ok(syn::Lit::Str(s)) = syn::parse_str::<syn::Lit>(&lit.to_string()) else {
            return;
        };
        let rel = s.value();
        let line = lit.span().start().line;
        let lower = rel.to_ascii_lowercase();
        let is_asm_file = lower.ends_with(".s") || lower.ends_with(".asm");
        if !(is_asm_file || in_asm) {
            return;
        }
        self.evidence(EvidenceKind::AsmFile, rel.clone(), line);
        let full = self.dir.join(&rel);
        let read = std::fs::read(&full);
        self.facts
            .includes
            .push((rel.clone(), read.as_ref().ok().map(|b| content_hash(b))));
        match read {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                for (i, l) in text.lines().enumerate() {
                    self.asm_line(l, line, Some((rel.clone(), i + 1)));
                }
            }
            Err(e) => self
                .facts
                .warnings
                .push((line, format!("could not read included `{rel}`: {e}"))),
        }
    }

    /// Scans a string literal's source text (quotes and escapes included) as assembly.
    pub(super) fn asm_text(
        &mut self,
        literal: &str,
        first_line: usize,
        file: Option<(String, usize)>,
    ) {
        // Strip the literal's own delimiters (`"…"`, `r#"…"#`) once, not per line:
        // the text itself may end in `r` (`xzr`, `ldr`).
        let body = literal
            .strip_prefix('r')
            .unwrap_or(literal)
            .trim_start_matches('#')
            .trim_end_matches('#');
        let body = body.strip_prefix('"').unwrap_or(body);
        let body = body.strip_suffix('"').unwrap_or(body);
        for (i, src_line) in body.lines().enumerate() {
            for part in src_line.split("\\n") {
                self.asm_line(part, first_line + i, file.clone());
            }
        }
    }

    pub(super) fn asm_line(&mut self, line_text: &str, line: usize, file: Option<(String, usize)>) {
        for stmt in line_text.split(';') {
            let mut s = stmt.trim();
            // Comments.
            for marker in ["//", "/*", "@ "] {
                if let Some(i) = s.find(marker) {
                    s = s[..i].trim();
                }
            }
            // Labels (`1:`, `entry:`).
            while let Some(i) = s.find(':') {
                let (label, rest) = s.split_at(i);
                if label.is_empty()
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                {
                    break;
                }
                s = rest[1..].trim();
            }
            if s.is_empty() || s.starts_with('.') || s.starts_with('#') || s.starts_with('{') {
                continue;
            }
            let mnemonic = s
                .split(|c: char| c.is_whitespace() || c == ',')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if self.knowledge.instruction(&mnemonic).is_some() {
                self.asm_evidence(EvidenceKind::AsmMnemonic, mnemonic, line, &file);
            }
            // Operand modifiers `{0:w}` / `{x:x}` pick AArch64 register views.
            for (modifier, name) in [(":w}", "{:w}"), (":x}", "{:x}")] {
                if s.contains(modifier) {
                    self.asm_evidence(EvidenceKind::AsmRegister, name.to_string(), line, &file);
                }
            }
            for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if is_arm_register(word) {
                    self.asm_evidence(
                        EvidenceKind::AsmRegister,
                        word.to_ascii_lowercase(),
                        line,
                        &file,
                    );
                }
                if word.len() > 3
                    && (is_sysreg_shape(word)
                        || is_encoded_sysreg(word)
                        || self.knowledge.is_known_sysreg(word))
                {
                    let upper = word.to_ascii_uppercase();
                    self.asm_evidence(EvidenceKind::Sysreg, upper, line, &file);
                }
            }
        }
    }

    pub(super) fn asm_evidence(
        &mut self,
        kind: EvidenceKind,
        name: String,
        line: usize,
        file: &Option<(String, usize)>,
    ) {
        self.facts.evidence.push(Evidence {
            kind,
            name,
            line: Some(line),
            file: file.as_ref().map(|f| f.0.clone()),
            line_in_file: file.as_ref().map(|f| f.1),
            count: 1,
        });
    }
}

/// An AArch64 general-purpose register name: `x0`–`x30`, `w0`–`w30`, `xzr`, `wzr`.
pub(super) fn is_arm_register(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    if w == "xzr" || w == "wzr" {
        return true;
    }
    let Some(n) = w.strip_prefix('x').or_else(|| w.strip_prefix('w')) else {
        return false;
    };
    let canonical = n == "0" || !n.starts_with('0');
    canonical && n.len() <= 2 && n.parse::<u8>().is_ok_and(|n| n <= 30)
}

/// `NAME_EL0..3` shape, case-insensitive.
pub(super) fn is_sysreg_shape(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() > 4 && {
        let tail = &b[b.len() - 4..];
        tail[0] == b'_'
            && tail[1].eq_ignore_ascii_case(&b'e')
            && tail[2].eq_ignore_ascii_case(&b'l')
            && (b'0'..=b'3').contains(&tail[3])
    }
}

/// `S3_4_C12_C9_5` — a system register written by its encoding.
pub(super) fn is_encoded_sysreg(word: &str) -> bool {
    let parts: Vec<&str> = word.split('_').collect();
    parts.len() == 5
        && parts[0].len() == 2
        && parts[0].to_ascii_lowercase().starts_with('s')
        && parts[2].to_ascii_lowercase().starts_with('c')
        && parts[3].to_ascii_lowercase().starts_with('c')
        && parts.iter().all(|p| {
            p.trim_start_matches(['s', 'S', 'c', 'C'])
                .parse::<u8>()
                .is_ok()
        })
}
