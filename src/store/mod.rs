//! The project's memory: one SQLite file (default `target/eterna-port/eterna.db`).
//!
//! It holds what a run produces and must keep — `runs`, `agent_tasks`, `code_artifacts`
//! (every version of every generated file) and the LLM response cache `llm_cache` — and
//! what can always be rebuilt from the workspace, the *derived* tables: the RAG chunks
//! `agent_memory`, their full-text index `agent_memory_fts` (FTS5), their vector index
//! `agent_memory_vec` (sqlite-vec `vec0`) and the per-file bookkeeping `memory_sources`.
//!
//! Safety rules: the file is only ever written by this binary (`PRAGMA application_id`
//! marks it); a file that is not ours, not SQLite, or from a newer schema is refused and
//! left untouched. The schema is versioned with `PRAGMA user_version` and migrated
//! forward in one transaction. Writers use WAL with a busy timeout, so `search` works
//! while `index` writes, and every write is a transaction, so a killed `index` leaves
//! a consistent store that the next run completes.

pub mod chunk;
pub mod embed;
pub mod index;
pub mod lexicon;
pub mod rag;
mod schema;
mod serve;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

pub use embed::{Embedder, LocalEmbedder, RemoteEmbedder};
pub use index::{IndexStats, SourceFile};
pub use rag::{context_for_module, Filters, RankedChunk};
pub use schema::SCHEMA_VERSION;
pub use serve::ServeRunRow;

/// `PRAGMA application_id` of an eterna-port store ("ETPT").
pub const APPLICATION_ID: i32 = 0x4554_5054;

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the store. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file is not a SQLite database.
    #[error("the store {path} is not a SQLite database (it may be corrupt or another kind of file); nothing was changed. Move it away or point ETERNA_PORT_DB (or `db` in [workspace.metadata.eterna-port]) at another file")]
    NotADatabase {
        /// The store's file.
        path: PathBuf,
    },
    /// A SQLite database of another program.
    #[error("the store {path} is a SQLite database of another program (application_id {found:#x}, expected {expected:#x}); nothing was changed. Point ETERNA_PORT_DB (or `db` in [workspace.metadata.eterna-port]) at another file")]
    Foreign {
        /// The store's file.
        path: PathBuf,
        /// Its `application_id`.
        found: i32,
        /// Ours.
        expected: i32,
    },
    /// A store written by a newer version of the tool.
    #[error("the store {path} has schema version {found}, newer than this cargo-eterna-port knows ({known}); nothing was changed. Upgrade cargo-eterna-port, or point ETERNA_PORT_DB at another file")]
    Newer {
        /// The store's file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The store cannot be created there.
    #[error("cannot create the store {path}: {message}. Set ETERNA_PORT_DB (or `db` in [workspace.metadata.eterna-port]) to a path in a writable directory")]
    Location {
        /// The store's file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The store's index is inconsistent.
    #[error("the store {path} is damaged ({message}); nothing was deleted. Run `cargo eterna-port index --rebuild-index` to rebuild the search index (artifacts and tasks are kept), or move the file away")]
    Damaged {
        /// The store's file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A SQLite operation failed.
    #[error("store {path}: {what}: {source}")]
    Sqlite {
        /// The store's file.
        path: PathBuf,
        /// What was being done.
        what: String,
        #[source]
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The embedder failed (the message says how).
    #[error("{0}")]
    Embed(String),
    /// The index was built with another embedder than the configured one.
    #[error("the index in {path} was built with the embedder `{indexed}`, but `{configured}` is configured; run `cargo eterna-port index` to re-embed with it")]
    EmbedderMismatch {
        /// The store's file.
        path: PathBuf,
        /// The index's embedder.
        indexed: String,
        /// The configured one.
        configured: String,
    },
}

/// The store's results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

static REGISTER_VEC: Once = Once::new();

/// Makes sqlite-vec available to every connection opened afterwards.
fn register_sqlite_vec() {
    REGISTER_VEC.call_once(|| {
        type Init = unsafe extern "C" fn(
            *mut rusqlite::ffi::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const rusqlite::ffi::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        // SAFETY: `sqlite3_vec_init` is the extension's entry point, which has exactly
        // the signature SQLite expects of an auto extension; the crate declares it
        // without arguments only because it is an extern "C" symbol.
        unsafe {
            let init =
                std::mem::transmute::<*const (), Init>(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

/// An open store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Row counts and settings shown by `cargo eterna-port status`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// The store's file.
    pub path: String,
    /// Its schema version.
    pub schema_version: i64,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// The embedder the index was built with.
    pub embedder: Option<String>,
    /// Its vectors' dimension.
    pub embedding_dim: Option<i64>,
    /// Sources indexed.
    pub sources: i64,
    /// Chunks in the index.
    pub chunks: i64,
    /// Chunks per kind (`code`, `doc`, …).
    pub chunks_by_kind: std::collections::BTreeMap<String, i64>,
    /// Vectors stored.
    pub vectors: i64,
    /// Full-text rows.
    pub fts_rows: i64,
    /// Chunks without a vector yet.
    pub unembedded: i64,
    /// File versions the port wrote.
    pub code_artifacts: i64,
    /// Agent tasks recorded.
    pub agent_tasks: i64,
    /// Runs recorded.
    pub runs: i64,
    /// Cached model answers.
    pub llm_cache: i64,
    /// When the index was last brought up to date (RFC 3339).
    pub last_indexed: Option<String>,
}

/// A generated file version to record in `code_artifacts`.
#[derive(Debug, Clone)]
pub struct NewArtifact<'a> {
    /// The module the file belongs to.
    pub module: &'a str,
    /// Workspace-relative path.
    pub path: &'a str,
    /// The content written.
    pub content: &'a str,
    /// Who wrote it (`offline-engine`, an agent, `fix-loop`).
    pub origin_agent: &'a str,
    /// The model, when a model wrote it.
    pub model: Option<&'a str>,
}

/// One agent task's state, for `agent_tasks`.
#[derive(Debug, Clone)]
pub struct TaskRecord<'a> {
    /// `<run>:<task id>`.
    pub task_id: &'a str,
    /// The run.
    pub run_id: Option<&'a str>,
    /// The module it is about.
    pub module: &'a str,
    /// The agent that ran it.
    pub agent: &'a str,
    /// `queued`, `running`, `done`, `failed`.
    pub status: &'a str,
    /// Answers asked for.
    pub attempts: i64,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Answer tokens.
    pub tokens_out: i64,
    /// Cost in USD (0 when unknown).
    pub cost: f64,
    /// Why it failed.
    pub error: Option<&'a str>,
}

/// One agent's row of the swarm health table, for `agent_health`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HealthRecord {
    /// The agent instance.
    pub agent: String,
    /// What it does.
    pub specialization: String,
    /// Comma-separated, e.g. `rust,aarch64-asm,x86_64-asm`.
    pub languages: String,
    /// The model it asks.
    pub model: String,
    /// `idle`, `busy`, `stopped`, `failed`, `unresponsive`.
    pub status: String,
    /// RFC 3339 (UTC) time of the last heartbeat, if any.
    pub last_heartbeat: Option<String>,
    /// Tasks it finished.
    pub tasks_done: i64,
    /// Tasks that failed.
    pub tasks_failed: i64,
    /// Mean task latency.
    pub mean_latency_ms: Option<f64>,
}

/// One item of a module a port wrote, for `port_items`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortItemRecord {
    /// The module.
    pub module: String,
    /// The item (`name` or `Type::name`).
    pub name: String,
    /// What it is (`fn`, `struct`, …).
    pub kind: String,
    /// `ported`, `stubbed` or `left-out`.
    pub status: String,
    /// `engine`, `agent:<agent>` or `fix-loop`.
    pub by: Option<String>,
    /// The model, when a model wrote it.
    pub model: Option<String>,
    /// Why it is not ported.
    pub reason: Option<String>,
}

/// One iteration of the fix loop, for `fix_iterations`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FixIterationRecord {
    /// 1-based: the n-th `cargo check`.
    pub iteration: i64,
    /// Errors the check found.
    pub errors: i64,
    /// Warnings it found.
    pub warnings: i64,
    /// rustc MachineApplicable suggestions applied in this iteration.
    pub rustfix_applied: i64,
    /// Files the DebugAgent rewrote in this iteration.
    pub agent_files: i64,
    /// Hash of the diagnostic set (the no-progress test compares these).
    pub diagnostics_hash: String,
    /// Wall time of the check.
    pub check_ms: i64,
    /// `fixing`, `clean`, `max-iterations`, `no-progress`, `failed`.
    pub outcome: String,
}

/// A stored task of a run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskRow {
    /// The module it is about.
    pub module: String,
    /// The agent that ran it.
    pub agent: String,
    /// `done`, `failed` or `cancelled`.
    pub status: String,
    /// Answers asked for.
    pub attempts: i64,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Answer tokens.
    pub tokens_out: i64,
    /// Cost in USD (0 when unknown).
    pub cost: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// A recorded run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRow {
    /// The run's id.
    pub run_id: String,
    /// The command (`port`, `index`).
    pub command: String,
    /// `running` until it ends: then `done` or `ok`, `failed` or `cancelled`.
    pub status: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
}

/// A stored version of a generated file.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The row id.
    pub id: i64,
    /// The module the file belongs to.
    pub module: String,
    /// Workspace-relative path.
    pub path: String,
    /// The content.
    pub content: String,
}

/// Current UTC time as RFC 3339 (SQLite computes it, so no time crate is needed).
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

impl Store {
    /// Opens (creating when missing) the store at `path` and migrates it to the current
    /// schema. A file that is not an eterna-port store is refused before anything is
    /// written to it.
    pub fn open(path: &Path) -> Result<Store> {
        register_sqlite_vec();
        let path = path.to_path_buf();
        if path.is_dir() {
            return Err(StoreError::Location {
                message: "it is a directory".into(),
                path,
            });
        }
        let exists = path.exists();
        if !exists {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Location {
                    path: path.clone(),
                    message: format!("cannot create the directory {}: {e}", dir.display()),
                })?;
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&path, flags).map_err(|e| {
            if exists {
                StoreError::Sqlite {
                    path: path.clone(),
                    what: "cannot open".into(),
                    source: e,
                }
            } else {
                StoreError::Location {
                    path: path.clone(),
                    message: e.to_string(),
                }
            }
        })?;
        let store = Store { conn, path };
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| store.err("set the busy timeout", e))?;
        // Read-only checks first: nothing is written to a file that is not ours.
        store.check_identity()?;
        store
            .conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| store.location_or("enable WAL", e))?;
        store
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| store.err("set synchronous", e))?;
        store
            .conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| store.err("enable foreign keys", e))?;
        // The vector k-NN reads every code: keep the index in memory (64 MiB, about
        // twice the vector and full-text index of 100,000 chunks).
        store
            .conn
            .pragma_update(None, "cache_size", -65536)
            .map_err(|e| store.err("set the cache size", e))?;
        schema::migrate(&store)?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn err(&self, what: &str, source: rusqlite::Error) -> StoreError {
        classify(&self.path, what, source)
    }

    fn location_or(&self, what: &str, source: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::*;
        match source.sqlite_error_code() {
            Some(ReadOnly) | Some(CannotOpen) | Some(PermissionDenied) => StoreError::Location {
                path: self.path.clone(),
                message: source.to_string(),
            },
            _ => self.err(what, source),
        }
    }

    /// Refuses files that are not SQLite, belong to another program or come from a newer
    /// schema. Only reads.
    fn check_identity(&self) -> Result<()> {
        let app_id: i32 = self
            .conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| self.err("read the application id", e))?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err("read the schema version", e))?;
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| self.err("read the schema", e))?;
        if app_id == 0 && version == 0 && tables == 0 {
            return Ok(()); // a new, empty file: ours to initialise
        }
        if app_id != APPLICATION_ID {
            return Err(StoreError::Foreign {
                path: self.path.clone(),
                found: app_id,
                expected: APPLICATION_ID,
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read meta", e))
    }

    /// Counts and settings for `status`.
    pub fn stats(&self) -> Result<Stats> {
        let count = |sql: &str| -> Result<i64> {
            self.conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| self.err("count rows", e))
        };
        let vectors = if self.has_table("agent_memory_vec")? {
            count("SELECT count(*) FROM agent_memory_vec")?
        } else {
            0
        };
        let mut by_kind = std::collections::BTreeMap::new();
        {
            let mut st = self
                .conn
                .prepare("SELECT kind, count(*) FROM agent_memory GROUP BY kind ORDER BY kind")
                .map_err(|e| self.err("count chunks", e))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(|e| self.err("count chunks", e))?;
            for r in rows {
                let (k, n) = r.map_err(|e| self.err("count chunks", e))?;
                by_kind.insert(k, n);
            }
        }
        Ok(Stats {
            path: self.path.display().to_string(),
            schema_version: count("PRAGMA user_version")?,
            file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            embedder: self.meta("embedder")?,
            embedding_dim: self.meta("embedding_dim")?.and_then(|d| d.parse().ok()),
            sources: count("SELECT count(*) FROM memory_sources")?,
            chunks: count("SELECT count(*) FROM agent_memory")?,
            chunks_by_kind: by_kind,
            vectors,
            fts_rows: count("SELECT count(*) FROM agent_memory_fts")?,
            unembedded: count("SELECT count(*) FROM agent_memory WHERE embedding IS NULL")?,
            code_artifacts: count("SELECT count(*) FROM code_artifacts")?,
            agent_tasks: count("SELECT count(*) FROM agent_tasks")?,
            runs: count("SELECT count(*) FROM runs")?,
            llm_cache: count("SELECT count(*) FROM llm_cache")?,
            last_indexed: self.meta("last_indexed")?,
        })
    }

    pub(crate) fn has_table(&self, name: &str) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.err("read the schema", e))
    }

    /// Drops and recreates the derived tables (chunks, full-text and vector index,
    /// per-file bookkeeping). `code_artifacts`, `agent_tasks`, `runs` and the LLM cache
    /// are kept. The next `index` fills them again.
    pub fn rebuild_derived(&self) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        tx.execute_batch(
            "DROP TABLE IF EXISTS agent_memory_vec;
             DROP TABLE IF EXISTS agent_memory_fts;
             DROP TABLE IF EXISTS agent_memory;
             DROP TABLE IF EXISTS memory_sources;
             DELETE FROM meta WHERE key IN ('embedder', 'embedding_dim', 'last_indexed');",
        )
        .map_err(|e| self.err("drop the derived tables", e))?;
        tx.execute_batch(schema::DERIVED_TABLES)
            .map_err(|e| self.err("create the derived tables", e))?;
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// Checks that the derived tables agree (every chunk has one full-text row and, once
    /// embedded, one vector). Returns a description of the first disagreement.
    pub fn check_consistency(&self) -> Result<Option<String>> {
        let s = self.stats()?;
        if s.fts_rows != s.chunks {
            return Ok(Some(format!(
                "{} chunks but {} full-text rows",
                s.chunks, s.fts_rows
            )));
        }
        if s.vectors != s.chunks - s.unembedded {
            return Ok(Some(format!(
                "{} embedded chunks but {} vectors",
                s.chunks - s.unembedded,
                s.vectors
            )));
        }
        Ok(None)
    }

    /// Records one command run; returns its id.
    pub fn begin_run(&self, command: &str) -> Result<String> {
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        self.conn
            .execute(
                &format!(
                    "INSERT INTO runs (run_id, command, status, started_at) VALUES (?1, ?2, 'running', {NOW})"
                ),
                params![run_id, command],
            )
            .map_err(|e| self.err("record the run", e))?;
        Ok(run_id)
    }

    /// Marks a run finished with `status` (`ok`, `failed`, …).
    pub fn finish_run(&self, run_id: &str, status: &str) -> Result<()> {
        self.conn
            .execute(
                &format!("UPDATE runs SET status = ?2, finished_at = {NOW} WHERE run_id = ?1"),
                params![run_id, status],
            )
            .map_err(|e| self.err("record the run", e))?;
        Ok(())
    }

    /// Records a generated file version; its parent is the newest earlier version of the
    /// same path. Returns the new row id.
    pub fn record_artifact(&self, a: &NewArtifact<'_>) -> Result<i64> {
        let hash = Self::content_hash(a.content);
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        let parent: Option<i64> = tx
            .query_row(
                "SELECT max(id) FROM code_artifacts WHERE path = ?1",
                [a.path],
                |r| r.get(0),
            )
            .map_err(|e| self.err("read artifacts", e))?;
        tx.execute(
            &format!(
                "INSERT INTO code_artifacts (module, path, content, content_hash, parent_id, origin_agent, model, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {NOW})"
            ),
            params![a.module, a.path, a.content, hash, parent, a.origin_agent, a.model],
        )
        .map_err(|e| self.err("record the artifact", e))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(|e| self.err("commit", e))?;
        Ok(id)
    }

    /// Inserts or updates an agent task. `started_at` is set when the task is first
    /// recorded, `finished_at` when its status becomes `done` or `failed`.
    pub fn record_task(&self, t: &TaskRecord<'_>) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO agent_tasks (task_id, run_id, module, agent, status, attempts,
                         tokens_in, tokens_out, cost, started_at, finished_at, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW},
                         CASE WHEN ?5 IN ('done', 'failed') THEN {NOW} END, ?10)
                     ON CONFLICT (task_id) DO UPDATE SET
                         status = excluded.status, attempts = excluded.attempts,
                         tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
                         cost = excluded.cost, error = excluded.error,
                         finished_at = CASE WHEN excluded.status IN ('done', 'failed')
                                            THEN {NOW} ELSE finished_at END"
                ),
                params![
                    t.task_id,
                    t.run_id,
                    t.module,
                    t.agent,
                    t.status,
                    t.attempts,
                    t.tokens_in,
                    t.tokens_out,
                    t.cost,
                    t.error
                ],
            )
            .map_err(|e| self.err("record the task", e))?;
        Ok(())
    }

    /// Replaces the health table of `run_id` with `rows`.
    pub fn record_health(&self, run_id: &str, rows: &[HealthRecord]) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        tx.execute("DELETE FROM agent_health WHERE run_id = ?1", [run_id])
            .map_err(|e| self.err("record agent health", e))?;
        for h in rows {
            tx.execute(
                "INSERT INTO agent_health (run_id, agent, specialization, languages, model, status,
                     last_heartbeat, tasks_done, tasks_failed, mean_latency_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run_id,
                    h.agent,
                    h.specialization,
                    h.languages,
                    h.model,
                    h.status,
                    h.last_heartbeat,
                    h.tasks_done,
                    h.tasks_failed,
                    h.mean_latency_ms
                ],
            )
            .map_err(|e| self.err("record agent health", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// Records one fix-loop iteration of `run_id` (replacing an earlier record of it).
    pub fn record_fix_iteration(&self, run_id: &str, it: &FixIterationRecord) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO fix_iterations (run_id, iteration, errors, warnings,
                         rustfix_applied, agent_files, diagnostics_hash, check_ms, outcome, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW})"
                ),
                params![
                    run_id,
                    it.iteration,
                    it.errors,
                    it.warnings,
                    it.rustfix_applied,
                    it.agent_files,
                    it.diagnostics_hash,
                    it.check_ms,
                    it.outcome
                ],
            )
            .map_err(|e| self.err("record the fix iteration", e))?;
        Ok(())
    }

    /// The newest run of `command` (any command when `None`).
    pub fn last_run(&self, command: Option<&str>) -> Result<Option<RunRow>> {
        self.conn
            .query_row(
                "SELECT run_id, command, status, started_at, finished_at FROM runs
                 WHERE ?1 IS NULL OR command = ?1 ORDER BY id DESC LIMIT 1",
                [command],
                |r| {
                    Ok(RunRow {
                        run_id: r.get(0)?,
                        command: r.get(1)?,
                        status: r.get(2)?,
                        started_at: r.get(3)?,
                        finished_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err("read runs", e))
    }

    /// The tasks of a run, in the order they were recorded.
    pub fn run_tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT module, agent, status, attempts, tokens_in, tokens_out, cost, error
                 FROM agent_tasks WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err("read tasks", e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(TaskRow {
                    module: r.get(0)?,
                    agent: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    tokens_in: r.get(4)?,
                    tokens_out: r.get(5)?,
                    cost: r.get(6)?,
                    error: r.get(7)?,
                })
            })
            .map_err(|e| self.err("read tasks", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read tasks", e))
    }

    /// The health table recorded for a run.
    pub fn run_health(&self, run_id: &str) -> Result<Vec<HealthRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT agent, specialization, languages, model, status, last_heartbeat,
                     tasks_done, tasks_failed, mean_latency_ms
                 FROM agent_health WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err("read agent health", e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(HealthRecord {
                    agent: r.get(0)?,
                    specialization: r.get(1)?,
                    languages: r.get(2)?,
                    model: r.get(3)?,
                    status: r.get(4)?,
                    last_heartbeat: r.get(5)?,
                    tasks_done: r.get(6)?,
                    tasks_failed: r.get(7)?,
                    mean_latency_ms: r.get(8)?,
                })
            })
            .map_err(|e| self.err("read agent health", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read agent health", e))
    }

    /// Replaces the items recorded for `run_id` with `rows`.
    pub fn record_port_items(&self, run_id: &str, rows: &[PortItemRecord]) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.err("begin", e))?;
        tx.execute("DELETE FROM port_items WHERE run_id = ?1", [run_id])
            .map_err(|e| self.err("record the port's items", e))?;
        for i in rows {
            tx.execute(
                "INSERT INTO port_items (run_id, module, name, kind, status, by, model, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run_id, i.module, i.name, i.kind, i.status, i.by, i.model, i.reason],
            )
            .map_err(|e| self.err("record the port's items", e))?;
        }
        tx.commit().map_err(|e| self.err("commit", e))
    }

    /// The items recorded for a run, in the order they were written.
    pub fn run_port_items(&self, run_id: &str) -> Result<Vec<PortItemRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT module, name, kind, status, by, model, reason
                 FROM port_items WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(|e| self.err("read the port's items", e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(PortItemRecord {
                    module: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    status: r.get(3)?,
                    by: r.get(4)?,
                    model: r.get(5)?,
                    reason: r.get(6)?,
                })
            })
            .map_err(|e| self.err("read the port's items", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read the port's items", e))
    }

    /// The fix-loop iterations recorded for a run.
    pub fn run_fix_iterations(&self, run_id: &str) -> Result<Vec<FixIterationRecord>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT iteration, errors, warnings, rustfix_applied, agent_files,
                     diagnostics_hash, check_ms, outcome
                 FROM fix_iterations WHERE run_id = ?1 ORDER BY iteration",
            )
            .map_err(|e| self.err("read fix iterations", e))?;
        let rows = stmt
            .query_map([run_id], |r| {
                Ok(FixIterationRecord {
                    iteration: r.get(0)?,
                    errors: r.get(1)?,
                    warnings: r.get(2)?,
                    rustfix_applied: r.get(3)?,
                    agent_files: r.get(4)?,
                    diagnostics_hash: r.get(5)?,
                    check_ms: r.get(6)?,
                    outcome: r.get(7)?,
                })
            })
            .map_err(|e| self.err("read fix iterations", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read fix iterations", e))
    }

    /// The content hash of a file's text as `code_artifacts` records it.
    pub fn content_hash(text: &str) -> String {
        blake3::hash(text.as_bytes()).to_hex().to_string()
    }

    /// Every content hash ever recorded for each generated path.
    pub fn artifact_hashes(
        &self,
    ) -> Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>> {
        let mut st = self
            .conn
            .prepare("SELECT path, content_hash FROM code_artifacts")
            .map_err(|e| self.err("read artifacts", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err("read artifacts", e))?;
        let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for row in rows {
            let (path, hash) = row.map_err(|e| self.err("read artifacts", e))?;
            out.entry(path).or_default().insert(hash);
        }
        Ok(out)
    }

    /// The newest version of every generated file.
    pub fn latest_artifacts(&self) -> Result<Vec<Artifact>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, module, path, content FROM code_artifacts
                 WHERE id IN (SELECT max(id) FROM code_artifacts GROUP BY path) ORDER BY path",
            )
            .map_err(|e| self.err("read artifacts", e))?;
        let rows = st
            .query_map([], |r| {
                Ok(Artifact {
                    id: r.get(0)?,
                    module: r.get(1)?,
                    path: r.get(2)?,
                    content: r.get(3)?,
                })
            })
            .map_err(|e| self.err("read artifacts", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("read artifacts", e))
    }

    /// Looks up a cached LLM response by its request key.
    pub fn cache_get(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT response FROM llm_cache WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("read the LLM cache", e))
    }

    /// Stores an LLM response under its request key.
    pub fn cache_put(&self, key: &str, model: &str, response: &str) -> Result<()> {
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO llm_cache (key, model, response, created_at) VALUES (?1, ?2, ?3, {NOW})"
                ),
                params![key, model, response],
            )
            .map_err(|e| self.err("write the LLM cache", e))?;
        Ok(())
    }
}

/// Maps SQLite's error codes to the errors users can act on.
pub(crate) fn classify(path: &Path, what: &str, source: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match source.sqlite_error_code() {
        Some(NotADatabase) => StoreError::NotADatabase {
            path: path.to_path_buf(),
        },
        Some(DatabaseCorrupt) => StoreError::Damaged {
            path: path.to_path_buf(),
            message: format!("{what}: {source}"),
        },
        Some(ReadOnly) | Some(CannotOpen) | Some(PermissionDenied) | Some(DiskFull) => {
            StoreError::Location {
                path: path.to_path_buf(),
                message: format!("{what}: {source}"),
            }
        }
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            what: what.to_string(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_iterations_and_tasks_round_trip_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let old = store.begin_run("port").unwrap();
        let run = store.begin_run("port").unwrap();
        assert_ne!(old, run);
        let row = |agent: &str, done| HealthRecord {
            agent: agent.into(),
            specialization: "spec".into(),
            languages: "rust".into(),
            model: "m".into(),
            status: "stopped".into(),
            last_heartbeat: Some("2026-11-26T00:00:00Z".into()),
            tasks_done: done,
            tasks_failed: 1,
            mean_latency_ms: Some(12.5),
        };
        store.record_health(&old, &[row("OldAgent", 9)]).unwrap();
        store
            .record_health(&run, &[row("A", 1), row("B", 2)])
            .unwrap();
        // Recording again replaces the run's table instead of adding to it.
        store
            .record_health(&run, &[row("A", 3), row("B", 4)])
            .unwrap();
        let h = store.run_health(&run).unwrap();
        assert_eq!(
            h.iter()
                .map(|r| (r.agent.as_str(), r.tasks_done))
                .collect::<Vec<_>>(),
            [("A", 3), ("B", 4)]
        );
        for (i, outcome) in [(1, "fixing"), (2, "no-progress")] {
            store
                .record_fix_iteration(
                    &run,
                    &FixIterationRecord {
                        iteration: i,
                        errors: 3 - i,
                        warnings: 0,
                        rustfix_applied: 0,
                        agent_files: 1,
                        diagnostics_hash: format!("h{i}"),
                        check_ms: 10,
                        outcome: outcome.into(),
                    },
                )
                .unwrap();
        }
        let its = store.run_fix_iterations(&run).unwrap();
        assert_eq!(its.len(), 2);
        assert_eq!(its[1].outcome, "no-progress");
        assert!(store.run_fix_iterations(&old).unwrap().is_empty());
        store
            .record_task(&TaskRecord {
                task_id: "t",
                run_id: Some(&run),
                module: "hv::arch::vmcs",
                agent: "EternaPortAgent",
                status: "done",
                attempts: 2,
                tokens_in: 10,
                tokens_out: 5,
                cost: 0.5,
                error: None,
            })
            .unwrap();
        let tasks = store.run_tasks(&run).unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].attempts, tasks[0].tokens_out), (2, 5));
        assert_eq!(store.last_run(Some("port")).unwrap().unwrap().run_id, run);
        assert!(store.last_run(Some("check")).unwrap().is_none());
    }
}
