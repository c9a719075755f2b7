//! `ask`: the answer (when the model gave one), then the passages, each as
//! `[n] path:start-end  title` and its first lines.

use std::fmt::Write;

use super::{BOLD, DIM, NOTE};
use crate::ops::ask::Answer;

/// Lines of a passage shown under its heading (more with `-v`).
const SHOWN_LINES: usize = 4;
const SHOWN_LINES_VERBOSE: usize = 16;
/// Characters of a shown line.
const LINE_WIDTH: usize = 100;

/// The answer for a person.
pub fn ask_human(a: &Answer, verbose: bool) -> String {
    let mut s = String::new();
    if let Some(text) = &a.answer {
        let by = a.model.as_deref().unwrap_or("the model");
        let head = if a.refused {
            format!("{by}: the passages do not answer the question")
        } else {
            format!("answer ({by})")
        };
        let _ = writeln!(s, "{NOTE}{head}{NOTE:#}");
        for line in text.lines() {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s);
    }
    if a.passages.is_empty() {
        let _ = writeln!(s, "no passage found for: {}", a.question);
        return s;
    }
    let _ = writeln!(
        s,
        "{BOLD}{}{BOLD:#}",
        if a.answer.is_some() {
            "passages"
        } else {
            "passages (no model: the best matches in the index)"
        }
    );
    for p in &a.passages {
        let cited = a.citations.contains(&p.n);
        let mark = if a.answer.is_some() && !cited {
            " (not cited)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "{BOLD}[{}]{BOLD:#} {}  {}{DIM}{mark}{DIM:#}",
            p.n,
            p.location(),
            p.title
        );
        let lines = p
            .text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(if verbose {
                SHOWN_LINES_VERBOSE
            } else {
                SHOWN_LINES
            });
        for l in lines {
            let l: String = l.chars().take(LINE_WIDTH).collect();
            let _ = writeln!(s, "    {DIM}│ {l}{DIM:#}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::ask::Passage;

    fn plain(s: &str) -> String {
        anstream::adapter::strip_str(s).to_string()
    }

    fn passage(n: usize) -> Passage {
        Passage {
            n,
            path: format!("src/p{n}.rs"),
            start_line: 3,
            end_line: 9,
            kind: "code".into(),
            title: format!("fn p{n}"),
            module_path: None,
            component: None,
            score: 0.03,
            text: "first\n\nsecond\nthird\nfourth\nfifth\nsixth".into(),
        }
    }

    #[test]
    fn offline_shows_each_passage_with_its_location_and_first_lines() {
        let a = Answer {
            question: "q".into(),
            passages: vec![passage(1), passage(2)],
            answer: None,
            model: None,
            refused: false,
            citations: vec![],
            warnings: vec![],
        };
        let out = plain(&ask_human(&a, false));
        assert!(out.contains("[1] src/p1.rs:3-9  fn p1"), "{out}");
        assert!(out.contains("[2] src/p2.rs:3-9  fn p2"), "{out}");
        assert!(
            out.contains("│ fourth") && !out.contains("│ fifth"),
            "{out}"
        );
        assert!(!out.contains("not cited"), "{out}");
    }

    #[test]
    fn the_answer_comes_first_and_uncited_passages_are_marked() {
        let a = Answer {
            question: "q".into(),
            passages: vec![passage(1), passage(2)],
            answer: Some("It is done in p1 [1].".into()),
            model: Some("m".into()),
            refused: false,
            citations: vec![1],
            warnings: vec![],
        };
        let out = plain(&ask_human(&a, false));
        let answer_at = out.find("It is done in p1 [1].").unwrap();
        assert!(answer_at < out.find("[1] src/p1.rs").unwrap(), "{out}");
        assert!(
            out.contains("fn p2") && out.contains("(not cited)"),
            "{out}"
        );
        assert_eq!(out.matches("(not cited)").count(), 1, "{out}");
    }
}
