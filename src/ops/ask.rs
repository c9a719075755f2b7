//! The ResearchAgent as a library call: answers a question about the workspace and its
//! port from the store, with citations.
//!
//! Retrieval first: the index is brought up to date (incremental, so an unchanged
//! workspace costs a scan and a hash per file) and searched with the question (hybrid
//! vector + BM25, the components the question names preferred, at most two passages
//! a file). Offline (no key, or `--backend offline`) the answer is those passages with
//! their file and lines. With a model, the passages go into the `research.md` prompt,
//! numbered, and the model is told to answer only from them, to cite them as `[n]`,
//! and to reply [`REFUSAL_MARKER`] when they do not answer the question; its citations
//! are checked against the passages (those naming none are dropped, and said).
//!
//! `cargo eterna-port ask` and the REST API's `POST /agent/research/execute` call
//! [`run`]. It may be called from inside an async runtime: the model is asked on a
//! thread of its own.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context};
use serde::Serialize;

use super::index::{make_embedder, open_store, refresh};
use super::{Error, Session};
use crate::config::Backend;
use crate::llm::{CancellationToken, ChatRequest, LlmClient, LlmSettings, Message};
use crate::store::{Filters, RankedChunk};

/// The prompt template (`templates/prompts/research.md`).
const RESEARCH: &str = include_str!("../../templates/prompts/research.md");

/// What the model replies when the passages do not answer the question.
pub const REFUSAL_MARKER: &str = "NOT IN PASSAGES";

/// Passages retrieved when the caller does not say.
pub const DEFAULT_LIMIT: usize = 5;
/// At most this many passages (they all go into one prompt).
pub const MAX_LIMIT: usize = 50;

/// The system message of the research prompt.
const SYSTEM: &str = "You are the ResearchAgent of cargo-eterna-port, a tool that ports an ARM64 (EL2) hypervisor workspace to x86_64 (Intel VT-x). You answer questions about the workspace and its port from retrieved passages only, citing them by number.";

/// What [`run`] is asked.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// The question, in words.
    pub question: String,
    /// How many passages to retrieve (1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] by default).
    pub limit: usize,
    /// The backend; `None`: the configuration's (the model when a key is set).
    pub backend: Option<Backend>,
}

impl AskOptions {
    /// `question` with the default limit and the configured backend.
    pub fn new(question: impl Into<String>) -> AskOptions {
        AskOptions {
            question: question.into(),
            limit: DEFAULT_LIMIT,
            backend: None,
        }
    }

    /// Checks the question and the limit (what [`run`] checks first), so that a front
    /// end can refuse bad input before it opens a workspace.
    pub fn validate(&self) -> Result<(), Error> {
        if self.question.trim().is_empty() {
            return Err(anyhow!(
                "the QUESTION is empty; ask something about the workspace, e.g. `cargo eterna-port ask \"how are guest interrupts injected?\"`"
            )
            .into());
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(anyhow!(
                "`-n/--limit {}` must be between 1 and {MAX_LIMIT} (passages to retrieve)",
                self.limit
            )
            .into());
        }
        Ok(())
    }
}

/// One retrieved passage, numbered for citation.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    /// 1-based citation number (`[n]` in the answer).
    pub n: usize,
    /// The source's path: workspace-relative, or `@knowledge/…`, `@artifact/…`.
    pub path: String,
    /// 1-based first line.
    pub start_line: i64,
    /// 1-based last line, inclusive.
    pub end_line: i64,
    /// `code`, `doc`, `knowledge` or `artifact`.
    pub kind: String,
    /// What the passage is, for a person.
    pub title: String,
    /// The module it is in, for code.
    pub module_path: Option<String>,
    /// Its component, when known.
    pub component: Option<String>,
    /// The retrieval score (reciprocal-rank fusion).
    pub score: f64,
    /// The passage's text.
    pub text: String,
}

impl Passage {
    fn from_chunk(n: usize, c: RankedChunk) -> Passage {
        Passage {
            n,
            path: c.path,
            start_line: c.start_line,
            end_line: c.end_line,
            kind: c.kind,
            title: c.title,
            module_path: c.module_path,
            component: c.component,
            score: c.score,
            text: c.content,
        }
    }

    /// `path:start-end`.
    pub fn location(&self) -> String {
        format!("{}:{}-{}", self.path, self.start_line, self.end_line)
    }
}

/// The answer to a question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The question asked.
    pub question: String,
    /// The passages retrieved, best first, numbered from 1.
    pub passages: Vec<Passage>,
    /// The model's grounded answer (or its refusal); `None` offline.
    pub answer: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The model said the passages do not answer the question.
    pub refused: bool,
    /// The passage numbers the answer cites, in order of first citation; each names a
    /// passage.
    pub citations: Vec<usize>,
    /// What is questionable about the answer: citations naming no passage (dropped),
    /// an answer citing nothing.
    pub warnings: Vec<String>,
}

impl Answer {
    /// Whether there is something to show: passages, and no refusal.
    pub fn found(&self) -> bool {
        !self.passages.is_empty() && !self.refused
    }
}

/// Answers `opts.question` from the store (see the module docs).
pub fn run(s: &Session, opts: &AskOptions) -> Result<Answer, Error> {
    opts.validate()?;
    let question = opts.question.trim();
    let backend = opts.backend.unwrap_or(s.config.backend.value);
    let settings = LlmSettings::from_config(&s.config);
    if backend == Backend::Llm && settings.keys.is_empty() && settings.openrouter_usage {
        return Err(anyhow!(
            "--backend llm: no API key is set for {}; set OPENROUTER_API_KEY in the environment or the workspace's .env, or point ETERNA_PORT_LLM_BASE_URL at a local OpenAI-compatible server",
            settings.base_url
        )
        .into());
    }
    // The client is made before anything is indexed: a bad setting is said first.
    let client = match backend {
        Backend::Llm => Some(LlmClient::new(settings)?),
        Backend::Offline => None,
    };

    let passages = retrieve(s, question, opts.limit)?;
    let mut answer = Answer {
        question: question.to_string(),
        passages,
        answer: None,
        model: None,
        refused: false,
        citations: Vec::new(),
        warnings: Vec::new(),
    };
    let Some(client) = client else {
        return Ok(answer);
    };
    if answer.passages.is_empty() {
        // Nothing to ground an answer in: the model is not asked.
        answer
            .warnings
            .push("nothing in the index matches the question; the model was not asked".into());
        return Ok(answer);
    }
    let prompt = render_prompt(question, &answer.passages)?;
    let request = ChatRequest {
        messages: vec![Message::system(SYSTEM), Message::user(prompt)],
        temperature: Some(0.0),
        max_tokens: s.config.llm_max_tokens.as_ref().map(|m| m.value),
        model: None,
    };
    let response = ask_model(&client, &request)?;
    let reply = response.content.trim().to_string();
    answer.model = Some(if response.model.is_empty() {
        client.settings().model.clone()
    } else {
        response.model.clone()
    });
    answer.refused = is_refusal(&reply);
    let (citations, unknown) = citations(&reply, answer.passages.len());
    answer.citations = citations;
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|n| format!("[{n}]")).collect();
        answer.warnings.push(format!(
            "the answer cites {} which name{} no passage (there {} {}); dropped from the citations",
            list.join(", "),
            if unknown.len() == 1 { "s" } else { "" },
            if answer.passages.len() == 1 {
                "is"
            } else {
                "are"
            },
            answer.passages.len()
        ));
    }
    if !answer.refused && answer.citations.is_empty() {
        answer
            .warnings
            .push("the answer cites no passage: it may not be grounded in them".into());
    }
    if response.finish_reason.as_deref() == Some("length") {
        answer
            .warnings
            .push("the answer was cut at the token limit (ETERNA_PORT_LLM_MAX_TOKENS)".into());
    }
    answer.answer = Some(reply);
    Ok(answer)
}

/// The `limit` best passages for `question`, the index brought up to date first.
fn retrieve(s: &Session, question: &str, limit: usize) -> Result<Vec<Passage>, Error> {
    let store = open_store(&s.config)?;
    refresh(s, &store).with_context(|| {
        format!(
            "could not bring the index in {} up to date",
            store.path().display()
        )
    })?;
    let embedder = make_embedder(&s.config)?;
    let filters = Filters {
        prefer_components: crate::store::rag::query_components(question, &s.knowledge),
        max_per_source: Some(2),
        ..Filters::default()
    };
    let chunks = store
        .search(question, limit, &filters, embedder.as_ref())
        .with_context(|| format!("search in {} failed", store.path().display()))?;
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| Passage::from_chunk(i + 1, c))
        .collect())
}

/// A passage as the prompt shows it: with a code fence longer than any backtick run
/// in its text.
#[derive(Serialize)]
struct Shown<'a> {
    n: usize,
    path: &'a str,
    start_line: i64,
    end_line: i64,
    kind: &'a str,
    component: Option<&'a str>,
    title: &'a str,
    text: &'a str,
    fence: String,
}

/// The research prompt for `question` over `passages`.
pub fn render_prompt(question: &str, passages: &[Passage]) -> Result<String, Error> {
    let env = crate::swarm::prompts::template_env(&[("research.md", RESEARCH)])?;
    let shown: Vec<Shown<'_>> = passages
        .iter()
        .map(|p| Shown {
            n: p.n,
            path: &p.path,
            start_line: p.start_line,
            end_line: p.end_line,
            kind: &p.kind,
            component: p.component.as_deref(),
            title: &p.title,
            text: p.text.trim_end(),
            fence: "`".repeat(longest_backtick_run(&p.text).max(2) + 1),
        })
        .collect();
    let numbers: Vec<usize> = passages.iter().map(|p| p.n).collect();
    let text = env
        .get_template("research.md")
        .and_then(|t| {
            t.render(minijinja::context! {
                question => question,
                passages => minijinja::Value::from(minijinja::value::Serde(shown)),
                numbers => numbers,
                marker => REFUSAL_MARKER,
            })
        })
        .context("internal: prompt template research.md failed to render")?;
    Ok(text)
}

fn longest_backtick_run(text: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// Asks the model on a thread of its own with its own runtime, so that a caller inside
/// an async runtime (the REST API) does not block it from within.
fn ask_model(client: &LlmClient, request: &ChatRequest) -> Result<crate::llm::ChatResponse, Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<crate::llm::ChatResponse, Error> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("could not start the async runtime")?;
                let cancel = CancellationToken::new();
                Ok(runtime.block_on(client.chat(request, &cancel))?)
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow!("internal: the model request panicked").into()))
    })
}

/// Whether the reply is the refusal: a line that is the marker, or the reply opening
/// with it followed by an explanation (`NOT IN PASSAGES: …`, `NOT IN PASSAGES. …`);
/// case, surrounding punctuation and Markdown emphasis aside. A sentence that only
/// starts with the words (`Not in passages 1-2, but [3] …`) is not one.
pub fn is_refusal(reply: &str) -> bool {
    let strip = |t: &str| {
        t.trim_start_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
            .to_ascii_uppercase()
    };
    let exact = reply.lines().any(|line| {
        strip(line).trim_end_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
            == REFUSAL_MARKER
    });
    let opening = strip(reply);
    let opens = opening.strip_prefix(REFUSAL_MARKER).is_some_and(|rest| {
        rest.starts_with('\n')
            || rest.trim_start_matches(' ').starts_with(|c: char| {
                c.is_ascii_punctuation() || c == '\u{2014}' || c == '\u{2013}'
            })
    });
    exact || opens
}

/// The passage numbers `reply` cites (`[1]`, `[2][4]`, `[1, 3]`, `[2-4]`), in order of
/// first citation, and the numbers it cites that name no passage (of `count`).
pub fn citations(reply: &str, count: usize) -> (Vec<usize>, Vec<usize>) {
    let mut cited: Vec<usize> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut rest = reply;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        if let Some(numbers) = citation_list(inside) {
            for n in numbers {
                if seen.insert(n) {
                    cited.push(n);
                }
            }
            rest = &rest[close + 1..];
        }
    }
    let (known, unknown) = cited.into_iter().partition(|n| (1..=count).contains(n));
    (known, unknown)
}

/// The numbers of a bracket's content when it is a citation (`1`, `1, 3`, `2-4`),
/// else `None` (a link's text, an array index `[i]`).
fn citation_list(inside: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in inside.split([',', ';']) {
        let part = part.trim();
        let part = part
            .strip_prefix("passage ")
            .or_else(|| part.strip_prefix("Passage "))
            .unwrap_or(part);
        if let Some((a, b)) = part.split_once(['-', '–']) {
            let a: usize = a.trim().parse().ok()?;
            let b: usize = b.trim().parse().ok()?;
            if b < a || b - a > MAX_LIMIT {
                return None;
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().ok()?);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_question_and_the_limit() {
        let err = AskOptions::new("  ").validate().unwrap_err();
        assert!(format!("{err:#}").contains("QUESTION is empty"));
        assert_eq!(err.exit_code(), crate::ops::error::EXIT_ERROR);
        for limit in [0, MAX_LIMIT + 1] {
            let err = AskOptions {
                limit,
                ..AskOptions::new("how?")
            }
            .validate()
            .unwrap_err();
            assert!(format!("{err:#}").contains(&format!("--limit {limit}")));
        }
        assert!(AskOptions::new("how?").validate().is_ok());
    }

    #[test]
    fn citations_are_read_in_order_and_checked() {
        let (known, unknown) = citations(
            "The list registers hold it [2]. See also [1][2] and [4, 9]; ranges [2-3]. Not: a[i], [link](x), [].",
            5,
        );
        assert_eq!(known, vec![2, 1, 4, 3]);
        assert_eq!(unknown, vec![9]);
        let (known, unknown) = citations("nothing cited", 3);
        assert!(known.is_empty() && unknown.is_empty());
        let (known, unknown) = citations("[0] and [7]", 3);
        assert!(known.is_empty());
        assert_eq!(unknown, vec![0, 7]);
    }

    #[test]
    fn refusal_is_the_marker_on_a_line_of_its_own() {
        assert!(is_refusal("NOT IN PASSAGES"));
        assert!(is_refusal("**NOT IN PASSAGES**\nThey only show the timer."));
        assert!(is_refusal("`not in passages.`"));
        assert!(is_refusal("NOT IN PASSAGES: no passage shows the EPT."));
        assert!(is_refusal("NOT IN PASSAGES. They only show the timer."));
        assert!(is_refusal(
            "NOT IN PASSAGES \u{2014} only the timer is shown."
        ));
        assert!(!is_refusal(
            "The answer is in [1]; nothing is missing from the passages."
        ));
        assert!(!is_refusal("Not in passages 1-2, but [3] shows it."));
    }

    #[test]
    fn the_prompt_numbers_the_passages_with_their_lines_and_fences_them_safely() {
        let p = |n: usize, path: &str, text: &str| Passage {
            n,
            path: path.into(),
            start_line: 10 * n as i64,
            end_line: 10 * n as i64 + 4,
            kind: "code".into(),
            title: format!("fn f{n}"),
            module_path: None,
            component: Some("interrupt-controller".into()),
            score: 0.1,
            text: text.into(),
        };
        let passages = vec![
            p(1, "src/a.rs", "fn f1() {}"),
            p(2, "docs/b.md", "```rust\nlet x = 1;\n```"),
        ];
        let prompt = render_prompt("how is x set?", &passages).unwrap();
        assert!(prompt.contains("## [1] src/a.rs:10-14 (code, interrupt-controller): fn f1"));
        assert!(prompt.contains("## [2] docs/b.md:20-24"));
        assert!(prompt.contains(REFUSAL_MARKER));
        assert!(prompt.contains("(1, 2)"), "{prompt}");
        // The Markdown passage's own fence does not close the passage's.
        assert!(
            prompt.contains("````\n```rust\nlet x = 1;\n```\n````"),
            "{prompt}"
        );
        assert_eq!(prompt.matches("how is x set?").count(), 2);
    }
}
