//! Hybrid retrieval: vector k-NN and FTS5 BM25, fused by reciprocal rank.
//!
//! The vector side is two-stage: sqlite-vec finds the nearest binary codes (sign bits
//! of the embeddings, Hamming distance) among all chunks — with the kind and component
//! filters applied inside the k-NN — and the candidates are re-scored with their full
//! float vectors (cosine). The text side ranks with BM25 over titles and bodies (body:
//! the content plus identifier parts, module path and component). Each list gives
//! `1 / (60 + rank)` to a chunk; the sum orders the result.

use std::collections::HashMap;

use rusqlite::types::Value;
use serde::Serialize;

use super::embed::{dot, from_blob, is_stopword, normalize_word, quantize, Embedder};
use super::index::Kind;
use super::{Result, Store, StoreError};
use crate::plan::ModulePlan;

/// The RRF constant.
const RRF_K: f64 = 60.0;
/// Added to the fused score of chunks of a component the query names: about what a
/// 10th place in one list is worth.
const COMPONENT_BONUS: f64 = 1.0 / (RRF_K + 10.0);
/// The weight of the expansion list in the fusion: below the query's own lists.
const EXPANSION_WEIGHT: f64 = 0.5;
/// The share of the best score a kind's best result needs to move up.
const KIND_HEAD_SHARE: f64 = 0.7;

/// Above this many chunks, full-text search avoids ranking every chunk with any word.
const LARGE_INDEX: i64 = 20_000;

/// A fused score with the ranks in the vector and the text list.
type Fused = (f64, Option<usize>, Option<usize>);

/// Restricts a search.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Only chunks of this kind (code, doc, knowledge, artifact).
    pub kind: Option<Kind>,
    /// Source paths starting with this (workspace-relative, `/`-separated).
    pub path_prefix: Option<String>,
    /// Only chunks of this component (hard filter).
    pub component: Option<String>,
    /// Components the query is about (soft: their chunks rank higher, others stay).
    pub prefer_components: Vec<String>,
    /// At most this many results from one source file (more varied results).
    pub max_per_source: Option<usize>,
    /// Only the query's own words: no expansion by the concepts it names (see
    /// [`super::lexicon::Lexicon::expand`]).
    pub literal: bool,
    /// Only chunks of these architectures (`aarch64`, `neutral`, …); empty: any.
    pub arches: Vec<String>,
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct RankedChunk {
    /// 1-based rank in the fused list.
    pub rank: usize,
    /// The chunk's row id.
    pub id: i64,
    /// `code`, `doc`, `knowledge` or `artifact`.
    pub kind: String,
    /// The source's path (workspace-relative, or `@knowledge/…`, `@artifact/…`).
    pub path: String,
    /// 1-based first line of the chunk.
    pub start_line: i64,
    /// 1-based last line, inclusive.
    pub end_line: i64,
    /// The module the chunk is in, for code.
    pub module_path: Option<String>,
    /// Its component, when known.
    pub component: Option<String>,
    /// Its file's architecture (`aarch64`, `riscv64`, …, `neutral`).
    pub arch: String,
    /// What the chunk is, for a person.
    pub title: String,
    /// The fused (reciprocal-rank) score.
    pub score: f64,
    /// 1-based rank in the vector list, when the chunk was in it.
    pub vector_rank: Option<usize>,
    /// 1-based rank in the BM25 list, when the chunk was in it.
    pub text_rank: Option<usize>,
    /// The chunk's text.
    pub content: String,
}

impl RankedChunk {
    /// Approximate size in tokens (4 characters a token).
    pub fn tokens(&self) -> usize {
        self.content.len().div_ceil(4)
    }
}

/// FTS5 queries for free text, every word quoted (no query syntax from the user),
/// each word together with its folded form (`initialisation` / `init`): the first
/// requires every word, then (for three words or more) every word but one, in turn,
/// and the last any word. BM25 ranks within each.
#[cfg(test)]
fn fts_queries(query: &str) -> Option<(String, Vec<String>, String)> {
    fts_queries_of(&query_groups(query))
}

/// The words of a query, each with its folded form.
fn query_groups(query: &str) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    for w in query.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let lw = w.to_lowercase();
        if lw.is_empty() || is_stopword(&lw) || groups.iter().any(|g| g[0] == lw) {
            continue;
        }
        let folded = normalize_word(&lw).to_string();
        let aliases = super::lexicon::Lexicon::embedded()
            .aliases_of(&lw)
            .map(|words| words.join(" "));
        let mut g = vec![lw];
        if folded != g[0] {
            g.push(folded);
        }
        // An abbreviation also finds code that spells it out (`gicd`: "gic distributor").
        if let Some(a) = aliases.filter(|a| !g.contains(a)) {
            g.push(a);
        }
        groups.push(g);
    }
    groups
}

fn quote_group(g: &[String]) -> String {
    let alts: Vec<String> = g
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "")))
        .collect();
    if alts.len() == 1 {
        alts[0].clone()
    } else {
        format!("({})", alts.join(" OR "))
    }
}

/// Queries longer than this skip the all-but-one-word pass.
const MAX_MOST_TERMS: usize = 8;

fn fts_queries_of(groups: &[Vec<String>]) -> Option<(String, Vec<String>, String)> {
    if groups.is_empty() {
        return None;
    }
    let quote = |w: &String| format!("\"{}\"", w.replace('"', ""));
    let terms: Vec<String> = groups.iter().map(|g| quote_group(g)).collect();
    let all = terms.join(" AND ");
    let mut most = Vec::new();
    // All-but-one only for short queries: for a module's long query (dozens of item
    // names) no chunk has all but one word, and each variant is an FTS query.
    if (3..=MAX_MOST_TERMS).contains(&terms.len()) {
        for skip in (0..terms.len()).rev() {
            let t: Vec<&str> = terms
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, t)| t.as_str())
                .collect();
            most.push(t.join(" AND "));
        }
    }
    let mut any: Vec<String> = Vec::new();
    for w in groups.iter().flatten() {
        let q = quote(w);
        if !any.contains(&q) {
            any.push(q);
        }
    }
    Some((all, most, any.join(" OR ")))
}

impl Store {
    /// The `n` best chunks for `query`.
    /// Puts the best result of each kind (code, doc, knowledge, artifact) first, in
    /// score order, then the rest as ranked: a search over everything should show the
    /// module's code next to the knowledge about it, not five knowledge entries. Only
    /// results that are relevant in their own right move up (a score of at least
    /// [`KIND_HEAD_SHARE`] of the best): a document that barely matches keeps its place.
    fn diversify_kinds(&self, order: Vec<(i64, Fused)>) -> Result<Vec<(i64, Fused)>> {
        let floor = order.first().map_or(0.0, |o| o.1 .0 * KIND_HEAD_SHARE);
        let mut st = self
            .conn()
            .prepare_cached("SELECT kind FROM agent_memory WHERE id = ?1")
            .map_err(|e| self.err("read chunks", e))?;
        let mut seen_kinds: Vec<String> = Vec::new();
        let mut heads = Vec::new();
        let mut rest = Vec::with_capacity(order.len());
        for o in order {
            let kind: String = st.query_row([o.0], |r| r.get(0)).unwrap_or_default();
            if seen_kinds.contains(&kind) || o.1 .0 < floor {
                rest.push(o);
            } else {
                seen_kinds.push(kind);
                heads.push(o);
            }
        }
        heads.extend(rest);
        Ok(heads)
    }

    /// The `n` best chunks for `query` under `filters`: vector k-NN and FTS5 BM25, fused
    /// by reciprocal rank.
    pub fn search(
        &self,
        query: &str,
        n: usize,
        filters: &Filters,
        embedder: &dyn Embedder,
    ) -> Result<Vec<RankedChunk>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        // Candidates per list: enough for the fusion and the per-file cap, few enough
        // that the k-NN stays fast (sqlite-vec's cost grows with k).
        let depth = (n * 3).max(30);
        let t0 = std::time::Instant::now();
        let vector = self.vector_candidates(query, (n * 2).max(20), filters, embedder)?;
        let t1 = std::time::Instant::now();
        let text = self.text_candidates(query, depth, filters)?;
        // The identifiers of the concepts the query names in words (`eret`, `elr_el2`
        // for "exception return"): a list of their own, weighted below the query's.
        let expansion = if filters.literal {
            Vec::new()
        } else {
            self.expansion_candidates(query, depth, filters)?
        };
        tracing::debug!(vector = ?(t1 - t0), text = ?t1.elapsed(), query, "search timings");

        let mut fused: HashMap<i64, Fused> = HashMap::new();
        let vw = embedder.fusion_weight();
        for (i, id) in vector.iter().enumerate() {
            let e = fused.entry(*id).or_default();
            e.0 += vw / (RRF_K + (i + 1) as f64);
            e.1 = Some(i + 1);
        }
        for (i, id) in text.iter().enumerate() {
            let e = fused.entry(*id).or_default();
            e.0 += 1.0 / (RRF_K + (i + 1) as f64);
            e.2 = Some(i + 1);
        }
        for (i, id) in expansion.iter().enumerate() {
            fused.entry(*id).or_default().0 += EXPANSION_WEIGHT / (RRF_K + (i + 1) as f64);
        }
        if !filters.prefer_components.is_empty() && !fused.is_empty() {
            let ids: Vec<i64> = fused.keys().copied().collect();
            let mut st = self
                .conn()
                .prepare_cached("SELECT component FROM agent_memory WHERE id = ?1")
                .map_err(|e| self.err("read chunks", e))?;
            for id in ids {
                let c: Option<String> = st.query_row([id], |r| r.get(0)).unwrap_or(None);
                if c.is_some_and(|c| filters.prefer_components.contains(&c)) {
                    if let Some(e) = fused.get_mut(&id) {
                        e.0 += COMPONENT_BONUS;
                    }
                }
            }
        }
        let mut order: Vec<(i64, Fused)> = fused.into_iter().collect();
        order.sort_by(|a, b| {
            b.1 .0
                .partial_cmp(&a.1 .0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.0.cmp(&b.0))
        });
        if filters.kind.is_none() && order.len() > 1 {
            order = self.diversify_kinds(order)?;
        }
        if let Some(max) = filters.max_per_source.filter(|m| *m > 0) {
            let mut per: HashMap<String, usize> = HashMap::new();
            let mut st = self
                .conn()
                .prepare_cached("SELECT source_path FROM agent_memory WHERE id = ?1")
                .map_err(|e| self.err("read chunks", e))?;
            let mut kept = Vec::with_capacity(n);
            for o in order {
                if kept.len() == n {
                    break;
                }
                let path: String = st.query_row([o.0], |r| r.get(0)).unwrap_or_default();
                let c = per.entry(path).or_default();
                if *c < max {
                    *c += 1;
                    kept.push(o);
                }
            }
            order = kept;
        }
        order.truncate(n);

        let mut out = Vec::with_capacity(order.len());
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT kind, source_path, start_line, end_line, module_path, component, title, content, arch
                 FROM agent_memory WHERE id = ?1",
            )
            .map_err(|e| self.err("read chunks", e))?;
        for (i, (id, (score, vr, tr))) in order.into_iter().enumerate() {
            let row = st.query_row([id], |r| {
                Ok(RankedChunk {
                    rank: i + 1,
                    id,
                    kind: r.get(0)?,
                    path: r.get(1)?,
                    start_line: r.get(2)?,
                    end_line: r.get(3)?,
                    module_path: r.get(4)?,
                    component: r.get(5)?,
                    arch: r.get(8)?,
                    title: r.get(6)?,
                    score,
                    vector_rank: vr,
                    text_rank: tr,
                    content: r.get(7)?,
                })
            });
            match row {
                Ok(c) => out.push(c),
                // Deleted by a concurrent `index` between the two reads.
                Err(rusqlite::Error::QueryReturnedNoRows) => {}
                Err(e) => return Err(self.err("read chunks", e)),
            }
        }
        for (i, c) in out.iter_mut().enumerate() {
            c.rank = i + 1;
        }
        Ok(out)
    }

    /// Chunk ids by vector similarity, best first.
    fn vector_candidates(
        &self,
        query: &str,
        depth: usize,
        filters: &Filters,
        embedder: &dyn Embedder,
    ) -> Result<Vec<i64>> {
        let indexed = self.meta("embedder")?;
        let Some(indexed) = indexed else {
            return Ok(Vec::new()); // nothing indexed yet
        };
        if indexed != embedder.id() {
            return Err(StoreError::EmbedderMismatch {
                path: self.path().to_path_buf(),
                indexed,
                configured: embedder.id(),
            });
        }
        if !self.has_table("agent_memory_vec")? {
            return Ok(Vec::new());
        }
        let q = embedder
            .embed(&[query])?
            .pop()
            .ok_or_else(|| StoreError::Embed("the embedder returned no vector".into()))?;
        if q.iter().all(|x| *x == 0.0) {
            return Ok(Vec::new()); // no features: the text side decides
        }
        // Path and architecture filters are applied after the k-NN: look deeper.
        let k = if filters.path_prefix.is_some() || !filters.arches.is_empty() {
            depth * 8
        } else {
            depth
        };
        let mut sql = String::from(
            "SELECT rowid FROM agent_memory_vec WHERE embedding MATCH vec_bit(?1) AND k = ?2",
        );
        let mut args: Vec<Value> = vec![Value::Blob(quantize(&q)), Value::Integer(k as i64)];
        if let Some(kind) = filters.kind {
            sql.push_str(" AND kind = ?3");
            args.push(Value::Text(kind.as_str().into()));
        }
        if let Some(c) = &filters.component {
            sql.push_str(&format!(" AND component = ?{}", args.len() + 1));
            args.push(Value::Text(c.clone()));
        }
        let ids: Vec<i64> = {
            let mut st = self
                .conn()
                .prepare_cached(&sql)
                .map_err(|e| self.err("vector search", e))?;
            let rows = st
                .query_map(rusqlite::params_from_iter(args), |r| r.get(0))
                .map_err(|e| self.err("vector search", e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err("vector search", e))?
        };
        // Re-score with the full vectors.
        let mut st = self
            .conn()
            .prepare_cached("SELECT embedding, source_path, arch FROM agent_memory WHERE id = ?1")
            .map_err(|e| self.err("read vectors", e))?;
        let mut scored: Vec<(f32, i64)> = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(Option<Vec<u8>>, String, String)> =
                match st.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))) {
                    Ok(r) => Some(r),
                    Err(rusqlite::Error::QueryReturnedNoRows) => None,
                    Err(e) => return Err(self.err("read vectors", e)),
                };
            let Some((Some(blob), path, arch)) = row else {
                continue;
            };
            if !filters.arches.is_empty() && !filters.arches.contains(&arch) {
                continue;
            }
            if let Some(p) = &filters.path_prefix {
                if !path.starts_with(p.as_str()) {
                    continue;
                }
            }
            let v = from_blob(&blob);
            if v.len() != q.len() {
                continue;
            }
            scored.push((dot(&q, &v), id));
        }
        scored.sort_by(|a, b| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.1.cmp(&b.1))
        });
        scored.truncate(depth);
        Ok(scored.into_iter().map(|s| s.1).collect())
    }

    /// Chunk ids by BM25 for the identifiers of the concepts the query names, best
    /// first; none when it names none.
    fn expansion_candidates(
        &self,
        query: &str,
        depth: usize,
        filters: &Filters,
    ) -> Result<Vec<i64>> {
        let terms = super::lexicon::Lexicon::embedded().expand(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        tracing::debug!(?terms, "query expanded");
        let any = terms
            .iter()
            // A prefix: a register family's name (`ich_lr`) finds its members
            // (`ich_lr0_el2`).
            .map(|t| format!("\"{}\"*", t.replace('"', "")))
            .collect::<Vec<_>>()
            .join(" OR ");
        // The knowledge defines these terms and is found by the query's own words;
        // the expansion is for the code and documents that only use them.
        self.fts_ranked_in(&any, depth, filters, true)
    }

    /// Chunk ids by BM25, best first.
    fn text_candidates(&self, query: &str, depth: usize, filters: &Filters) -> Result<Vec<i64>> {
        let groups = query_groups(query);
        let chunks = self.approx_chunks()?;
        let Some((all, most, any)) = fts_queries_of(&groups) else {
            return Ok(Vec::new());
        };
        // Chunks with every word first: usually enough, and far fewer rows to rank than
        // with any word on a large index. When short: chunks with all words but one
        // (three words or more), then chunks with any word.
        let mut ids = self.fts_ranked(&all, depth, filters)?;
        let add = |more: Vec<i64>, ids: &mut Vec<i64>| {
            for id in more {
                if ids.len() == depth {
                    break;
                }
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        };
        for q in &most {
            if ids.len() >= depth {
                break;
            }
            let more = self.fts_ranked(q, depth, filters)?;
            add(more, &mut ids);
        }
        // Any word: on a large index a common word matches tens of thousands of chunks,
        // all of which BM25 must score; there it is only worth it when the stricter
        // queries found almost nothing (the vector list still brings the rest).
        let large = chunks > LARGE_INDEX;
        if all != any && (ids.len() < depth.min(10) || (!large && ids.len() < depth)) {
            let more = self.fts_ranked(&any, depth, filters)?;
            add(more, &mut ids);
        }
        Ok(ids)
    }

    /// About how many chunks there are (the largest id; O(1)).
    fn approx_chunks(&self) -> Result<i64> {
        self.conn()
            .query_row("SELECT coalesce(max(id), 0) FROM agent_memory", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err("count chunks", e))
    }

    fn fts_ranked(&self, m: &str, depth: usize, filters: &Filters) -> Result<Vec<i64>> {
        self.fts_ranked_in(m, depth, filters, false)
    }

    /// [`Self::fts_ranked`], without the knowledge's chunks when `no_knowledge`.
    fn fts_ranked_in(
        &self,
        m: &str,
        depth: usize,
        filters: &Filters,
        no_knowledge: bool,
    ) -> Result<Vec<i64>> {
        let filtered = no_knowledge
            || filters.kind.is_some()
            || filters.component.is_some()
            || filters.path_prefix.is_some()
            || !filters.arches.is_empty();
        let mut args: Vec<Value> = vec![Value::Text(m.to_string())];
        let sql = if !filtered {
            // `rank` is bm25 with the title weighted 2 (set when the table is created).
            args.push(Value::Integer(depth as i64));
            "SELECT rowid FROM agent_memory_fts WHERE agent_memory_fts MATCH ?1 ORDER BY rank LIMIT ?2"
                .to_string()
        } else {
            let mut sql = String::from(
                "SELECT agent_memory_fts.rowid FROM agent_memory_fts
                 JOIN agent_memory m ON m.id = agent_memory_fts.rowid
                 WHERE agent_memory_fts MATCH ?1",
            );
            if let Some(kind) = filters.kind {
                args.push(Value::Text(kind.as_str().into()));
                sql.push_str(&format!(" AND m.kind = ?{}", args.len()));
            }
            if no_knowledge {
                sql.push_str(" AND m.kind != 'knowledge'");
            }
            if let Some(c) = &filters.component {
                args.push(Value::Text(c.clone()));
                sql.push_str(&format!(" AND m.component = ?{}", args.len()));
            }
            if !filters.arches.is_empty() {
                let mut marks = Vec::new();
                for a in &filters.arches {
                    args.push(Value::Text(a.clone()));
                    marks.push(format!("?{}", args.len()));
                }
                sql.push_str(&format!(" AND m.arch IN ({})", marks.join(", ")));
            }
            if let Some(p) = &filters.path_prefix {
                args.push(Value::Text(p.clone()));
                sql.push_str(&format!(
                    " AND substr(m.source_path, 1, length(?{0})) = ?{0}",
                    args.len()
                ));
            }
            args.push(Value::Integer(depth as i64));
            sql.push_str(&format!(" ORDER BY rank LIMIT ?{}", args.len()));
            sql
        };
        let mut st = self
            .conn()
            .prepare_cached(&sql)
            .map_err(|e| self.err("full-text search", e))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| r.get(0))
            .map_err(|e| self.err("full-text search", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("full-text search", e))
    }
}

/// The components a query names: by component name (`interrupt controller`), alias
/// (`gic`, `vmcs`, `ept`) or x86_64 name (`apic`).
pub fn query_components(query: &str, knowledge: &crate::knowledge::Knowledge) -> Vec<String> {
    let words: Vec<String> = query
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let joined = format!(" {} ", words.join(" ").replace('-', " "));
    let mut out = Vec::new();
    for c in &knowledge.components {
        if c.name == crate::knowledge::ARCH_NEUTRAL {
            continue;
        }
        let named = joined.contains(&format!(" {} ", c.name.replace('-', " ")))
            || words
                .iter()
                .any(|w| w == &c.name || w == &c.x86_name || c.aliases.iter().any(|a| a == w));
        if named && !out.contains(&c.name) {
            out.push(c.name.clone());
        }
    }
    out
}

/// The query that describes a planned module: its component, module path, public
/// items and the ARM64 evidence (system registers, instructions) it uses.
pub fn module_query(m: &ModulePlan) -> String {
    let name = m.module_path.rsplit("::").next().unwrap_or("");
    let mut q = format!("{} {name}", m.component.as_str().replace('-', " "));
    // Not the cfg evidence: porting in place adds cfg gates, and the query (hence an
    // agent's prompt) must stay the same for an unchanged re-run.
    for e in m
        .evidence
        .iter()
        .filter(|e| e.kind != crate::workspace::EvidenceKind::Cfg)
        .take(24)
    {
        q.push(' ');
        q.push_str(&e.name);
    }
    for i in m.items.iter().take(24) {
        q.push(' ');
        q.push_str(&i.name.replace("::", " "));
    }
    q
}

/// The architectures a planned module's context may come from: its own (ARM64),
/// arch-neutral code and documents, and x86_64 (the port's target: an existing x86_64
/// layer, the port's own earlier artifacts). Never another architecture's code: RISC-V
/// or LoongArch trap and paging code reads like the module's and misleads the agent.
pub fn context_arches(_module: &ModulePlan) -> Vec<String> {
    [
        crate::knowledge::ARCH_AARCH64,
        crate::knowledge::NO_ARCH,
        crate::knowledge::ARCH_X86_64,
    ]
    .map(String::from)
    .to_vec()
}

/// Context for porting one planned module: the best chunks about it (knowledge on its
/// component, related code and docs, earlier artifacts), its own source excluded (the
/// agent reads that whole), within `budget_tokens` (4 characters a token).
pub fn context_for_module(
    store: &Store,
    module: &ModulePlan,
    embedder: &dyn Embedder,
    budget_tokens: usize,
) -> Result<Vec<RankedChunk>> {
    let filters = Filters {
        prefer_components: vec![module.component.to_string()],
        max_per_source: Some(4),
        arches: context_arches(module),
        ..Filters::default()
    };
    let found = store.search(&module_query(module), 40, &filters, embedder)?;
    let mut used = 0;
    let mut out = Vec::new();
    for c in found {
        if c.path == module.source {
            continue;
        }
        let t = c.tokens();
        if used + t > budget_tokens {
            continue; // a smaller chunk further down may still fit
        }
        used += t;
        out.push(c);
    }
    for (i, c) in out.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries_quote_words_and_drop_syntax() {
        let (all, most, any) = fts_queries("the VMCS \"launch\" OR -x NEAR(").unwrap();
        assert_eq!(all, "\"vmcs\" AND \"launch\" AND \"x\" AND \"near\"");
        assert_eq!(most.len(), 4);
        assert_eq!(most[0], "\"vmcs\" AND \"launch\" AND \"x\"");
        assert_eq!(any, "\"vmcs\" OR \"launch\" OR \"x\" OR \"near\"");
        assert_eq!(fts_queries("the of"), None);
        let (all, most, any) = fts_queries("interrupt controllers").unwrap();
        assert!(most.is_empty());
        assert_eq!(
            all,
            "(\"interrupt\" OR \"irq\") AND (\"controllers\" OR \"ctrl\")"
        );
        assert_eq!(
            any,
            "\"interrupt\" OR \"irq\" OR \"controllers\" OR \"ctrl\""
        );
        assert_eq!(fts_queries("ICH_LR0_EL2").unwrap().0, "\"ich_lr0_el2\"");
    }
}
