//! ARM64 assembly detection: the mnemonics, general registers, operand modifiers and
//! system registers of `asm!`/`global_asm!` text and of included `.S` files, recorded
//! as evidence of the module that holds them.

use super::{Collector, Evidence, EvidenceKind};

impl Collector<'_> {
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

    fn asm_evidence(
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
