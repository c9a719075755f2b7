//! Incremental indexing: sources → chunks → vectors, full-text rows and bookkeeping.
//!
//! A source whose hash (text, kind, module path, component) is unchanged is skipped
//! without chunking. In a changed source, chunks are matched by content hash: a chunk
//! that already exists keeps its vector (its span and title are updated when they
//! moved), new chunks are embedded, vanished chunks are deleted. Sources that are no
//! longer given are removed with their chunks. Each batch of sources is written in one
//! transaction together with its bookkeeping row, so a killed run leaves a consistent
//! store and the next run simply redoes the sources it had not committed.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rayon::prelude::*;
use rusqlite::params;
use serde::Serialize;

use super::chunk::{chunk_knowledge_toml, chunk_lines, chunk_markdown, chunk_rust, Chunk};
use super::embed::{from_blob, quantize, split_words, to_blob, Embedder};
use super::{Result, Store, StoreError};

/// What a chunk was cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Rust source of the workspace.
    Code,
    /// A Markdown document of the workspace.
    Doc,
    /// The embedded concept map and notes.
    Knowledge,
    /// A file the port wrote (its newest version).
    Artifact,
}

impl Kind {
    /// `code`, `doc`, `knowledge` or `artifact`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Code => "code",
            Kind::Doc => "doc",
            Kind::Knowledge => "knowledge",
            Kind::Artifact => "artifact",
        }
    }

    /// The kind of a name [`Kind::as_str`] gives; `None` for any other text.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "code" => Some(Kind::Code),
            "doc" => Some(Kind::Doc),
            "knowledge" => Some(Kind::Knowledge),
            "artifact" => Some(Kind::Artifact),
            _ => None,
        }
    }
}

/// One file to index.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Workspace-relative, `/`-separated; `@knowledge/…` for the embedded knowledge.
    pub path: String,
    /// What the file is.
    pub kind: Kind,
    /// Its content.
    pub text: String,
    /// For Rust: the module path of the file.
    pub module_path: Option<String>,
    /// The component (from the plan) of every chunk of the file.
    pub component: Option<String>,
    /// The file's architecture (`aarch64`, `riscv64`, `loongarch64`, `x86_64`, `other`
    /// or `neutral`; see [`crate::knowledge::ARCHES`]), for every chunk of it.
    pub arch: String,
}

/// Version of the chunking and of the text chunks are embedded from: part of every
/// source hash, so a new version re-chunks every source (unchanged chunks still keep
/// their vectors).
const CHUNK_FORMAT: &str = "chunks-v5";

impl SourceFile {
    fn hash(&self) -> String {
        let mut h = blake3::Hasher::new();
        for part in [
            CHUNK_FORMAT,
            super::lexicon::Lexicon::embedded().fingerprint(),
            self.kind.as_str(),
            self.module_path.as_deref().unwrap_or(""),
            self.component.as_deref().unwrap_or(""),
            &self.arch,
            &self.text,
        ] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        h.finalize().to_hex()[..32].to_string()
    }

    fn chunks(&self) -> Vec<Chunk> {
        let is = |ext: &str| self.path.ends_with(ext);
        let mut chunks = if is(".rs") {
            chunk_rust(
                &self.text,
                self.module_path.as_deref().unwrap_or(&self.path),
            )
        } else if is(".md") {
            chunk_markdown(&self.text, &self.path)
        } else if is(".toml") && self.kind == Kind::Knowledge {
            chunk_knowledge_toml(&self.text, &self.path)
        } else {
            chunk_lines(&self.text, &self.path)
        };
        for c in &mut chunks {
            if c.component.is_none() {
                c.component = self.component.clone();
            }
            if c.module_path.is_none() {
                c.module_path = self.module_path.clone();
            }
        }
        chunks
    }
}

/// The text a chunk is embedded and hashed from: title, path, module path and
/// content. The component is not part of it (it would make every chunk of a
/// component look alike); searches that name a component prefer its chunks instead.
pub(crate) fn embed_text(
    path: &str,
    module_path: Option<&str>,
    title: &str,
    content: &str,
) -> String {
    format!("{title}\n{path}\n{}\n{content}", module_path.unwrap_or(""))
}

/// The full-text body: content plus identifier parts and module path words.
fn fts_body(c: &Prepared) -> String {
    let text = format!("{} {}", c.chunk.title, c.chunk.content);
    format!(
        "{}\n{}\n{}",
        c.chunk.content,
        split_words(&text),
        c.chunk
            .module_path
            .as_deref()
            .unwrap_or("")
            .replace("::", " "),
    )
}

/// What `index` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexStats {
    /// Sources given.
    pub sources: usize,
    /// Sources skipped as unchanged since the last index.
    pub sources_unchanged: usize,
    /// Sources (re)indexed.
    pub sources_indexed: usize,
    /// Sources in the store that are gone and were dropped.
    pub sources_removed: usize,
    /// New chunks.
    pub chunks_added: usize,
    /// Chunks whose text changed.
    pub chunks_updated: usize,
    /// Chunks kept as they were.
    pub chunks_unchanged: usize,
    /// Chunks dropped.
    pub chunks_removed: usize,
    /// Chunks given a new vector.
    pub chunks_embedded: usize,
    /// True when the embedder changed and every chunk was embedded again.
    pub reembedded_all: bool,
    /// The embedder used (its name and model).
    pub embedder: String,
    /// Wall time of the indexing.
    pub seconds: f64,
}

struct Prepared {
    chunk: Chunk,
    hash: String,
    text: String,
}

struct Existing {
    id: i64,
    hash: String,
    start: usize,
    end: usize,
    title: String,
    module_path: Option<String>,
    component: Option<String>,
    arch: String,
}

/// Chunks per write transaction.
const BATCH_CHUNKS: usize = 2000;

impl Store {
    /// Indexes `sources` (the whole set: sources indexed before and missing now are
    /// removed). `progress(done, total)` is told about the changed sources.
    pub fn index(
        &self,
        sources: &[SourceFile],
        embedder: &dyn Embedder,
        progress: &dyn Fn(usize, usize),
    ) -> Result<IndexStats> {
        let t0 = Instant::now();
        let mut stats = IndexStats {
            sources: sources.len(),
            embedder: embedder.id(),
            ..Default::default()
        };
        stats.reembedded_all = self.switch_embedder(&embedder.id())?;

        // Which sources changed.
        let known: HashMap<String, String> = {
            let mut st = self
                .conn()
                .prepare("SELECT path, file_hash FROM memory_sources")
                .map_err(|e| self.err("read sources", e))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.err("read sources", e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err("read sources", e))?
        };
        let hashes: Vec<String> = sources.par_iter().map(SourceFile::hash).collect();
        let mut changed: Vec<(usize, String)> = Vec::new();
        for (i, h) in hashes.into_iter().enumerate() {
            if known.get(&sources[i].path) == Some(&h) {
                stats.sources_unchanged += 1;
            } else {
                changed.push((i, h));
            }
        }
        let given: HashSet<&str> = sources.iter().map(|s| s.path.as_str()).collect();
        let removed: Vec<&String> = known
            .keys()
            .filter(|p| !given.contains(p.as_str()))
            .collect();
        if !removed.is_empty() {
            let tx = self
                .conn()
                .unchecked_transaction()
                .map_err(|e| self.err("begin", e))?;
            for path in &removed {
                stats.chunks_removed += self.delete_source(path)?;
            }
            tx.commit().map_err(|e| self.err("commit", e))?;
            stats.sources_removed = removed.len();
        }

        // Changed sources, in batches of about BATCH_CHUNKS chunks.
        let total = changed.len();
        let mut done = 0;
        progress(0, total);
        let mut start = 0;
        while start < changed.len() {
            // Chunk a slice of sources in parallel, then cut it to the batch size.
            let end = (start + 64).min(changed.len());
            let mut batch: Vec<(usize, String, Vec<Prepared>)> = changed[start..end]
                .par_iter()
                .map(|(i, h)| (*i, h.clone(), prepare(&sources[*i])))
                .collect();
            let mut take = 0;
            let mut n = 0;
            for b in &batch {
                take += 1;
                n += b.2.len();
                if n >= BATCH_CHUNKS {
                    break;
                }
            }
            batch.truncate(take);
            start += take;
            self.write_batch(sources, batch, embedder, &mut stats)?;
            done += take;
            progress(done, total);
        }

        // Chunks without a vector (embedder switched, or a run stopped in between).
        stats.chunks_embedded += self.embed_missing(embedder)?;
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_indexed', strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                [],
            )
            .map_err(|e| self.err("write meta", e))?;
        stats.seconds = t0.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Records `id` as the embedder; when another one was recorded, drops every vector
    /// so that all chunks are embedded again. Returns whether it switched.
    fn switch_embedder(&self, id: &str) -> Result<bool> {
        let current = self.meta("embedder")?;
        if current.as_deref() == Some(id) {
            return Ok(false);
        }
        let tx = self
            .conn()
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        tx.execute_batch(
            "DROP TABLE IF EXISTS agent_memory_vec;
             UPDATE agent_memory SET embedding = NULL WHERE embedding IS NOT NULL;
             DELETE FROM meta WHERE key = 'embedding_dim';",
        )
        .map_err(|e| self.err("reset the vectors", e))?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('embedder', ?1)",
            [id],
        )
        .map_err(|e| self.err("write meta", e))?;
        tx.commit().map_err(|e| self.err("commit", e))?;
        if let Some(old) = current {
            tracing::info!(old, new = id, "embedder changed: re-embedding every chunk");
            return Ok(true);
        }
        Ok(false)
    }

    /// Creates the vector table for `dim` dimensions when missing (inside the caller's
    /// transaction). A different dimension under the same embedder id is an error.
    fn ensure_vec_table(&self, dim: usize) -> Result<()> {
        match self.meta("embedding_dim")? {
            Some(d) if d == dim.to_string() && self.has_table("agent_memory_vec")? => Ok(()),
            Some(d) if d != dim.to_string() => Err(StoreError::Embed(format!(
                "the embedder returned {dim}-dimensional vectors, but the index holds {d}-dimensional ones; run `cargo eterna-port index --rebuild-index`"
            ))),
            _ => {
                let bits = dim.div_ceil(8) * 8;
                self.conn()
                    .execute_batch(&format!(
                        "CREATE VIRTUAL TABLE IF NOT EXISTS agent_memory_vec USING vec0(
                             embedding bit[{bits}], kind text, component text);"
                    ))
                    .map_err(|e| self.err("create the vector table", e))?;
                self.conn()
                    .execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('embedding_dim', ?1)",
                        [dim.to_string()],
                    )
                    .map_err(|e| self.err("write meta", e))?;
                Ok(())
            }
        }
    }

    /// Deletes a source's chunks and bookkeeping (inside the caller's transaction).
    fn delete_source(&self, path: &str) -> Result<usize> {
        let ids: Vec<i64> = {
            let mut st = self
                .conn()
                .prepare_cached("SELECT id FROM agent_memory WHERE source_path = ?1")
                .map_err(|e| self.err("read chunks", e))?;
            let rows = st
                .query_map([path], |r| r.get(0))
                .map_err(|e| self.err("read chunks", e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.err("read chunks", e))?
        };
        for id in &ids {
            self.delete_chunk(*id)?;
        }
        self.conn()
            .execute("DELETE FROM memory_sources WHERE path = ?1", [path])
            .map_err(|e| self.err("delete the source", e))?;
        Ok(ids.len())
    }

    fn delete_chunk(&self, id: i64) -> Result<()> {
        let c = self.conn();
        c.prepare_cached("DELETE FROM agent_memory WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(|e| self.err("delete a chunk", e))?;
        c.prepare_cached("DELETE FROM agent_memory_fts WHERE rowid = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(|e| self.err("delete a chunk", e))?;
        if self.has_table("agent_memory_vec")? {
            c.prepare_cached("DELETE FROM agent_memory_vec WHERE rowid = ?1")
                .and_then(|mut s| s.execute([id]))
                .map_err(|e| self.err("delete a chunk", e))?;
        }
        Ok(())
    }

    fn existing_chunks(&self, path: &str) -> Result<Vec<Existing>> {
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT id, content_hash, start_line, end_line, title, module_path, component, arch
                 FROM agent_memory WHERE source_path = ?1 ORDER BY id",
            )
            .map_err(|e| self.err("read chunks", e))?;
        let rows = st
            .query_map([path], |r| {
                Ok(Existing {
                    id: r.get(0)?,
                    hash: r.get(1)?,
                    start: r.get::<_, i64>(2)? as usize,
                    end: r.get::<_, i64>(3)? as usize,
                    title: r.get(4)?,
                    module_path: r.get(5)?,
                    component: r.get(6)?,
                    arch: r.get(7)?,
                })
            })
            .map_err(|e| self.err("read chunks", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read chunks", e))
    }

    fn write_batch(
        &self,
        sources: &[SourceFile],
        batch: Vec<(usize, String, Vec<Prepared>)>,
        embedder: &dyn Embedder,
        stats: &mut IndexStats,
    ) -> Result<()> {
        // Decide per source what is new, kept and gone (reads only).
        struct Plan {
            source: usize,
            hash: String,
            new: Vec<Prepared>,
            /// (chunk id, chunk, span/title moved, component changed)
            keep: Vec<(i64, Prepared, bool, bool)>,
            gone: Vec<i64>,
        }
        let mut plans = Vec::new();
        for (i, hash, prepared) in batch {
            let mut existing: HashMap<String, Vec<Existing>> = HashMap::new();
            for e in self.existing_chunks(&sources[i].path)? {
                existing.entry(e.hash.clone()).or_default().push(e);
            }
            let mut plan = Plan {
                source: i,
                hash,
                new: Vec::new(),
                keep: Vec::new(),
                gone: Vec::new(),
            };
            for p in prepared {
                match existing.get_mut(&p.hash).and_then(|v| v.pop()) {
                    Some(e) => {
                        let moved = e.start != p.chunk.start_line
                            || e.end != p.chunk.end_line
                            || e.title != p.chunk.title
                            || e.module_path != p.chunk.module_path
                            || e.component != p.chunk.component
                            || e.arch != sources[i].arch;
                        let recomponent = e.component != p.chunk.component;
                        plan.keep.push((e.id, p, moved, recomponent));
                    }
                    None => plan.new.push(p),
                }
            }
            plan.gone = existing.into_values().flatten().map(|e| e.id).collect();
            plans.push(plan);
        }

        // Embed the new chunks outside the write transaction.
        let texts: Vec<&str> = plans
            .iter()
            .flat_map(|p| p.new.iter().map(|c| c.text.as_str()))
            .collect();
        let vectors = embed_all(embedder, &texts)?;
        stats.chunks_embedded += vectors.len();

        let tx = self
            .conn()
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        if let Some(v) = vectors.first() {
            self.ensure_vec_table(v.len())?;
        }
        let mut vectors = vectors.into_iter();
        for plan in plans {
            let src = &sources[plan.source];
            for id in &plan.gone {
                self.delete_chunk(*id)?;
            }
            stats.chunks_removed += plan.gone.len();
            for (id, p, moved, recomponent) in &plan.keep {
                if *moved {
                    self.conn()
                        .prepare_cached(
                            "UPDATE agent_memory SET start_line = ?2, end_line = ?3, title = ?4,
                             module_path = ?5, component = ?6, arch = ?7 WHERE id = ?1",
                        )
                        .and_then(|mut s| {
                            s.execute(params![
                                id,
                                p.chunk.start_line as i64,
                                p.chunk.end_line as i64,
                                p.chunk.title,
                                p.chunk.module_path,
                                p.chunk.component,
                                src.arch
                            ])
                        })
                        .map_err(|e| self.err("update a chunk", e))?;
                    if *recomponent {
                        self.refile_vector(*id, src.kind.as_str(), p.chunk.component.as_deref())?;
                    }
                    stats.chunks_updated += 1;
                } else {
                    stats.chunks_unchanged += 1;
                }
            }
            let n_chunks = plan.keep.len() + plan.new.len();
            for p in &plan.new {
                let v = vectors.next().ok_or_else(|| {
                    StoreError::Embed("the embedder returned fewer vectors than texts".into())
                })?;
                self.insert_chunk(src, p, &v)?;
                stats.chunks_added += 1;
            }
            self.conn()
                .prepare_cached(
                    "INSERT OR REPLACE INTO memory_sources (path, kind, file_hash, chunks, indexed_at)
                     VALUES (?1, ?2, ?3, ?4, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                )
                .and_then(|mut s| {
                    s.execute(params![src.path, src.kind.as_str(), plan.hash, n_chunks as i64])
                })
                .map_err(|e| self.err("record the source", e))?;
            stats.sources_indexed += 1;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    fn insert_chunk(&self, src: &SourceFile, p: &Prepared, v: &[f32]) -> Result<()> {
        let (kind, path) = (src.kind, src.path.as_str());
        let c = self.conn();
        c.prepare_cached(
            "INSERT INTO agent_memory (kind, source_path, start_line, end_line, module_path,
             component, arch, title, content, content_hash, embedding)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut s| {
            s.execute(params![
                kind.as_str(),
                path,
                p.chunk.start_line as i64,
                p.chunk.end_line as i64,
                p.chunk.module_path,
                p.chunk.component,
                src.arch,
                p.chunk.title,
                p.chunk.content,
                p.hash,
                to_blob(v)
            ])
        })
        .map_err(|e| self.err("insert a chunk", e))?;
        let id = c.last_insert_rowid();
        // The words abbreviated identifiers stand for (`gicd` → "gic distributor", see
        // [`super::lexicon`]) in a column of their own, ranked below the text.
        let aliases = super::lexicon::Lexicon::embedded()
            .alias_words(&format!("{} {}", p.chunk.title, p.chunk.content));
        c.prepare_cached(
            "INSERT INTO agent_memory_fts (rowid, title, body, aliases) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                format!("{} {path}", p.chunk.title),
                fts_body(p),
                aliases
            ])
        })
        .map_err(|e| self.err("insert a full-text row", e))?;
        self.insert_vec(id, kind.as_str(), p.chunk.component.as_deref(), v)
    }

    fn insert_vec(&self, id: i64, kind: &str, component: Option<&str>, v: &[f32]) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO agent_memory_vec (rowid, embedding, kind, component)
                 VALUES (?1, vec_bit(?2), ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![id, quantize(v), kind, component.unwrap_or("")]))
            .map_err(|e| self.err("insert a vector", e))?;
        Ok(())
    }

    /// Re-inserts a chunk's vector with a new component (the vector index filters on it).
    fn refile_vector(&self, id: i64, kind: &str, component: Option<&str>) -> Result<()> {
        let blob: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT embedding FROM agent_memory WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .map_err(|e| self.err("read a vector", e))?;
        let Some(blob) = blob else {
            return Ok(()); // not embedded yet: embed_missing files it
        };
        self.conn()
            .execute("DELETE FROM agent_memory_vec WHERE rowid = ?1", [id])
            .map_err(|e| self.err("update a vector", e))?;
        self.insert_vec(id, kind, component, &from_blob(&blob))
    }

    /// Embeds chunks that have no vector yet, in batches. Returns how many.
    fn embed_missing(&self, embedder: &dyn Embedder) -> Result<usize> {
        let mut total = 0;
        loop {
            let rows: Vec<Unembedded> = {
                let mut st = self
                    .conn()
                    .prepare_cached(
                        "SELECT id, kind, source_path, title, module_path, component, content
                         FROM agent_memory WHERE embedding IS NULL ORDER BY id LIMIT ?1",
                    )
                    .map_err(|e| self.err("read chunks", e))?;
                let rows = st
                    .query_map([BATCH_CHUNKS as i64], |r| {
                        Ok(Unembedded {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            path: r.get(2)?,
                            title: r.get(3)?,
                            module_path: r.get(4)?,
                            component: r.get(5)?,
                            content: r.get(6)?,
                        })
                    })
                    .map_err(|e| self.err("read chunks", e))?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(|e| self.err("read chunks", e))?
            };
            if rows.is_empty() {
                return Ok(total);
            }
            let texts: Vec<String> = rows
                .iter()
                .map(|r| embed_text(&r.path, r.module_path.as_deref(), &r.title, &r.content))
                .collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embed_all(embedder, &refs)?;
            let tx = self
                .conn()
                .unchecked_transaction()
                .map_err(|e| self.err("begin", e))?;
            if let Some(v) = vectors.first() {
                self.ensure_vec_table(v.len())?;
            }
            for (r, v) in rows.iter().zip(&vectors) {
                self.conn()
                    .prepare_cached("UPDATE agent_memory SET embedding = ?2 WHERE id = ?1")
                    .and_then(|mut s| s.execute(params![r.id, to_blob(v)]))
                    .map_err(|e| self.err("store a vector", e))?;
                self.conn()
                    .prepare_cached("DELETE FROM agent_memory_vec WHERE rowid = ?1")
                    .and_then(|mut s| s.execute([r.id]))
                    .map_err(|e| self.err("store a vector", e))?;
                self.insert_vec(r.id, &r.kind, r.component.as_deref(), v)?;
            }
            tx.commit().map_err(|e| self.err("commit", e))?;
            total += rows.len();
        }
    }
}

fn prepare(src: &SourceFile) -> Vec<Prepared> {
    src.chunks()
        .into_iter()
        .map(|chunk| {
            let text = embed_text(
                &src.path,
                chunk.module_path.as_deref(),
                &chunk.title,
                &chunk.content,
            );
            let hash = blake3::hash(text.as_bytes()).to_hex()[..32].to_string();
            Prepared { chunk, hash, text }
        })
        .collect()
}

/// Embeds `texts` in the embedder's batch size, batches in parallel.
fn embed_all(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
    let size = embedder.batch_size().max(1);
    let parts: Vec<Result<Vec<Vec<f32>>>> = texts
        .par_chunks(size)
        .with_max_len(1)
        .map(|batch| embedder.embed(batch))
        .collect();
    let mut out = Vec::with_capacity(texts.len());
    for p in parts {
        out.extend(p?);
    }
    if out.len() != texts.len() {
        return Err(StoreError::Embed(format!(
            "the embedder returned {} vectors for {} texts",
            out.len(),
            texts.len()
        )));
    }
    Ok(out)
}

/// A chunk waiting for its vector.
struct Unembedded {
    id: i64,
    kind: String,
    path: String,
    title: String,
    module_path: Option<String>,
    component: Option<String>,
    content: String,
}
