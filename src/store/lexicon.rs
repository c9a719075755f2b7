//! What the knowledge base adds to the lexical side of retrieval:
//!
//! - **identifier aliases**: an identifier part that is a known abbreviation (`gicd`,
//!   `mpidr`, `pt` of `pt_entry`) also indexes the words it stands for ("gic
//!   distributor", "multiprocessor affinity register", "page table"), and a query word
//!   that is one also looks for them;
//! - **concept expansion**: a query that names a concept of the concept map in words
//!   ("exception return", "clean to the point of coherency", "translation table base")
//!   also looks for the identifiers code uses for it (`eret`, `elr_el2`, `spsr_el2`;
//!   `dc cvac`; `ttbr0_el2`), ranked below the query's own words.
//!
//! Both come from `templates/knowledge` (abbreviations.toml and the `means` of every
//! concept), never from a list in the code.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use super::embed::{normalize_word, split_identifier, tokens};
use crate::knowledge::Knowledge;

/// Concepts a query expands to at most.
const MAX_CONCEPTS: usize = 6;
/// Terms taken from one concept at most.
const MAX_TERMS_PER_CONCEPT: usize = 3;

struct Concept {
    /// Consecutive content words of its meaning.
    bigrams: HashSet<(String, String)>,
    /// The content words of its name (the meaning up to `:`): "exception return" of
    /// `eret`, "exception link reg el2" of `ELR_EL2`.
    head: Vec<String>,
    terms: Vec<String>,
}

/// The aliases and concepts of a knowledge base, ready for indexing and queries.
pub struct Lexicon {
    aliases: HashMap<String, Vec<String>>,
    concepts: Vec<Concept>,
    fingerprint: String,
}

/// English words that carry no meaning of their own in a question. (The index's stop
/// words also drop Rust keywords such as `return`, which a meaning needs.)
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "in", "into", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "via", "what",
    "when", "where", "which", "who", "why", "with",
];

/// The content words of a text, folded (`registers` → `reg`), in order.
fn content_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    tokens(text, |tok| {
        split_identifier(tok, |part| {
            let lower = part.to_ascii_lowercase();
            if lower.len() < 2
                || FUNCTION_WORDS.contains(&lower.as_str())
                || lower.bytes().all(|b| b.is_ascii_digit())
            {
                return;
            }
            out.push(normalize_word(&lower).to_string());
        });
    });
    out
}

fn bigrams(words: &[String]) -> HashSet<(String, String)> {
    words
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

impl Lexicon {
    /// The lexicon of `knowledge`.
    pub fn from_knowledge(knowledge: &Knowledge) -> Lexicon {
        let mut hash = blake3::Hasher::new();
        let mut aliases = HashMap::new();
        for a in knowledge.abbreviations() {
            hash.update(a.short.as_bytes());
            for m in &a.means {
                hash.update(b" ");
                hash.update(m.as_bytes());
            }
            hash.update(b"\n");
            aliases.insert(a.short.to_ascii_lowercase(), a.means.clone());
        }
        let concepts = knowledge
            .concept_terms()
            .into_iter()
            .map(|c| Concept {
                bigrams: bigrams(&content_words(&c.means)),
                head: content_words(c.means.split(':').next().unwrap_or("")),
                terms: c.terms,
            })
            .filter(|c| !c.bigrams.is_empty())
            .collect();
        Lexicon {
            aliases,
            concepts,
            fingerprint: hash.finalize().to_hex()[..16].to_string(),
        }
    }

    /// The lexicon of the embedded knowledge (built once per process).
    pub fn embedded() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(|| match Knowledge::embedded() {
            Ok(k) => Lexicon::from_knowledge(&k),
            Err(e) => {
                tracing::warn!("the knowledge does not load, retrieval goes without it: {e}");
                Lexicon {
                    aliases: HashMap::new(),
                    concepts: Vec::new(),
                    fingerprint: String::new(),
                }
            }
        })
    }

    /// Changes whenever the aliases do: part of every source's index hash, so that a
    /// new alias table re-indexes the sources.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The words an identifier part stands for, when it is a known abbreviation.
    pub fn aliases_of(&self, part: &str) -> Option<&[String]> {
        self.aliases
            .get(&part.to_ascii_lowercase())
            .map(Vec::as_slice)
    }

    /// The words the aliases add to a text for the full-text index: for every
    /// identifier part of `text` that is an abbreviation (`gicd` of `GICD_CTLR`, `pt` of
    /// `pt_entry`), the words it stands for, once each.
    pub fn alias_words(&self, text: &str) -> String {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = String::new();
        tokens(text, |tok| {
            split_identifier(tok, |part| {
                if let Some((key, words)) = self.aliases.get_key_value(&part.to_ascii_lowercase()) {
                    if seen.insert(key.as_str()) {
                        for w in words {
                            out.push_str(w);
                            out.push(' ');
                        }
                    }
                }
            });
        });
        out
    }

    /// The identifiers of the concepts a query names in words: concepts whose meaning
    /// shares the most pairs of consecutive words with the query (at least one), best
    /// first, without the query's own words.
    pub fn expand(&self, query: &str) -> Vec<String> {
        let words = content_words(query);
        let asked = bigrams(&words);
        if asked.is_empty() {
            return Vec::new();
        }
        let own: HashSet<String> = query
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(str::to_ascii_lowercase)
            .collect();
        let asked_words: HashSet<&String> = words.iter().collect();
        // (share of its name the query says, in thousandths; shared pairs; index)
        let mut scored: Vec<(usize, usize, usize)> = self
            .concepts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let shared = c.bigrams.intersection(&asked).count();
                let named = c.head.iter().filter(|w| asked_words.contains(w)).count();
                (named * 1000 / c.head.len().max(1), shared, i)
            })
            .filter(|(_, shared, _)| *shared > 0)
            .collect();
        // Only the concepts sharing the most pairs with the query ("stage 2
        // translation tables" is VTTBR_EL2's "stage 2 translation table base", more
        // than TTBR0_EL2's "translation table base"); among them those the query names
        // outright first ("exception return" is `eret`, only part of `ELR_EL2`'s
        // meaning); the knowledge's order breaks ties.
        let best = scored.iter().map(|s| s.1).max().unwrap_or(0);
        scored.retain(|s| s.1 == best);
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        let mut out: Vec<String> = Vec::new();
        for (_, _, i) in scored.into_iter().take(MAX_CONCEPTS) {
            for t in self.concepts[i].terms.iter().take(MAX_TERMS_PER_CONCEPT) {
                if !own.contains(t) && !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> &'static Lexicon {
        Lexicon::embedded()
    }

    #[test]
    fn words_of_a_concept_expand_to_its_identifiers() {
        let l = lexicon();
        let e = l.expand("how does the hypervisor do an exception return to the guest?");
        assert!(e.contains(&"eret".to_string()), "{e:?}");
        assert!(e.iter().any(|t| t == "elr_el2" || t == "spsr_el2"), "{e:?}");
        let e = l.expand("clean the data cache to the point of coherency");
        assert!(e.iter().any(|t| t.contains("cvac")), "{e:?}");
        let e = l.expand("where is the translation table base programmed");
        assert!(
            e.iter()
                .any(|t| t.starts_with("ttbr") || t.starts_with("vttbr")),
            "{e:?}"
        );
        assert!(l.expand("make it faster please").is_empty());
        assert!(l.expand("eret").is_empty(), "one word has no pair");
    }

    #[test]
    fn abbreviated_identifier_parts_index_their_words() {
        let l = lexicon();
        let words = l.alias_words("fn read_mpidr() -> u64 { GICD_CTLR.get() + pt_entry }");
        for w in ["multiprocessor", "affinity", "distributor", "page", "table"] {
            assert!(words.split_whitespace().any(|x| x == w), "{w}: {words}");
        }
        assert_eq!(l.aliases_of("GICD"), l.aliases_of("gicd"));
        assert!(l.alias_words("fn plain_words() {}").is_empty());
        assert!(!l.fingerprint().is_empty());
    }
}
