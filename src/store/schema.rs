//! Schema versions and forward migrations (`PRAGMA user_version`).
//!
//! - 0: an empty file.
//! - 1: the original design: `runs`, `agent_tasks`, `code_artifacts`, `llm_cache` and a
//!   plain `agent_memory(kind, source_path, content)` without spans, components, hashes,
//!   vectors or full-text index.
//! - 2: `meta`; `agent_memory` with spans, module path, component and content hash, its
//!   FTS5 table `agent_memory_fts`, the sqlite-vec table `agent_memory_vec` (created on
//!   the first embedding, when the dimension is known) and `memory_sources`.
//! - 3: `agent_health` (the swarm's health table at the end of each run) and
//!   `fix_iterations` (one row per iteration of the cargo check fix loop).
//! - 4: `port_items` (every item of every module a port wrote: its status and who
//!   wrote it).
//!
//! Each step runs in one `BEGIN IMMEDIATE` transaction that re-reads the version, so two
//! processes opening a new store at once migrate it exactly once.

use super::{Result, Store, APPLICATION_ID};

/// The schema version this build writes (`PRAGMA user_version`); older stores are migrated forward.
pub const SCHEMA_VERSION: i64 = 6;

const V1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE,
    command     TEXT NOT NULL,
    status      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS agent_tasks (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL UNIQUE,
    run_id      TEXT,
    module      TEXT NOT NULL,
    agent       TEXT NOT NULL,
    status      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    tokens_in   INTEGER NOT NULL DEFAULT 0,
    tokens_out  INTEGER NOT NULL DEFAULT 0,
    cost        REAL NOT NULL DEFAULT 0,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS code_artifacts (
    id           INTEGER PRIMARY KEY,
    module       TEXT NOT NULL,
    path         TEXT NOT NULL,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    parent_id    INTEGER REFERENCES code_artifacts(id),
    origin_agent TEXT NOT NULL,
    model        TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS code_artifacts_path ON code_artifacts(path);
CREATE TABLE IF NOT EXISTS llm_cache (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_memory (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    source_path TEXT NOT NULL,
    content     TEXT NOT NULL
);
";

/// The derived tables of version 2 (except the vector table, which needs the
/// embedder's dimension). Also used by `--rebuild-index`.
pub(super) const DERIVED_TABLES: &str = "
CREATE TABLE IF NOT EXISTS memory_sources (
    path       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    file_hash  TEXT NOT NULL,
    chunks     INTEGER NOT NULL,
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS agent_memory (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('code', 'doc', 'knowledge', 'artifact')),
    source_path  TEXT NOT NULL,
    start_line   INTEGER NOT NULL,
    end_line     INTEGER NOT NULL,
    module_path  TEXT,
    component    TEXT,
    arch         TEXT NOT NULL DEFAULT 'neutral',
    title        TEXT NOT NULL,
    content      TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    embedding    BLOB
);
CREATE INDEX IF NOT EXISTS agent_memory_source ON agent_memory(source_path);
CREATE INDEX IF NOT EXISTS agent_memory_unembedded ON agent_memory(id) WHERE embedding IS NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS agent_memory_fts USING fts5(
    title, body, aliases, tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO agent_memory_fts (agent_memory_fts, rank) VALUES ('rank', 'bm25(2.0, 1.0, 0.4)');
";

const V2: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
DROP TABLE IF EXISTS agent_memory;
";

const V3: &str = "
CREATE TABLE IF NOT EXISTS agent_health (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL,
    agent           TEXT NOT NULL,
    specialization  TEXT NOT NULL,
    languages       TEXT NOT NULL,
    model           TEXT NOT NULL,
    status          TEXT NOT NULL,
    last_heartbeat  TEXT,
    tasks_done      INTEGER NOT NULL DEFAULT 0,
    tasks_failed    INTEGER NOT NULL DEFAULT 0,
    mean_latency_ms REAL,
    UNIQUE (run_id, agent)
);
CREATE TABLE IF NOT EXISTS fix_iterations (
    id               INTEGER PRIMARY KEY,
    run_id           TEXT NOT NULL,
    iteration        INTEGER NOT NULL,
    errors           INTEGER NOT NULL,
    warnings         INTEGER NOT NULL,
    rustfix_applied  INTEGER NOT NULL DEFAULT 0,
    agent_files      INTEGER NOT NULL DEFAULT 0,
    diagnostics_hash TEXT NOT NULL,
    check_ms         INTEGER NOT NULL DEFAULT 0,
    outcome          TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    UNIQUE (run_id, iteration)
);
";

const V4: &str = "
CREATE TABLE IF NOT EXISTS port_items (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL,
    module  TEXT NOT NULL,
    name    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    status  TEXT NOT NULL,
    by      TEXT,
    model   TEXT,
    reason  TEXT
);
CREATE INDEX IF NOT EXISTS port_items_run ON port_items(run_id);
";

/// Runs of `serve` (its requests, results and every event, for replay after a restart).
const V5: &str = "
CREATE TABLE IF NOT EXISTS serve_runs (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    write       INTEGER NOT NULL DEFAULT 0,
    request     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    result      TEXT,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS serve_events (
    run_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
";

/// Version 6 rebuilds the derived tables (the next `index` fills them again): each chunk
/// gets its architecture (the agents' context keeps to the module's own, `search
/// --arch` filters on it), and the full-text index an `aliases` column for the words
/// abbreviated identifiers stand for, ranked below the text itself.
const V6: &str = "
DROP TABLE IF EXISTS agent_memory_vec;
DROP TABLE IF EXISTS agent_memory_fts;
DROP TABLE IF EXISTS agent_memory;
DROP TABLE IF EXISTS memory_sources;
DELETE FROM meta WHERE key IN ('embedder', 'embedding_dim', 'last_indexed');
";

pub(super) fn migrate(store: &Store) -> Result<()> {
    let conn = store.conn();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| store.err("read the schema version", e))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| store.err("begin the migration", e))?;
    let result = migrate_in_transaction(store);
    match result {
        Ok(()) => conn
            .execute_batch("COMMIT")
            .map_err(|e| store.err("commit the migration", e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

fn migrate_in_transaction(store: &Store) -> Result<()> {
    let tx = store.conn();
    // Re-read: another process may have migrated while this one waited for the lock.
    let mut version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| store.err("read the schema version", e))?;
    if version == 0 {
        tx.execute_batch(V1)
            .map_err(|e| store.err("create schema version 1", e))?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(|e| store.err("set the application id", e))?;
        version = 1;
    }
    if version == 1 {
        tracing::debug!(path = %store.path().display(), "migrating the store to schema 2");
        tx.execute_batch(V2)
            .map_err(|e| store.err("migrate to schema version 2", e))?;
        tx.execute_batch(DERIVED_TABLES)
            .map_err(|e| store.err("migrate to schema version 2", e))?;
        version = 2;
    }
    if version == 2 {
        tracing::debug!(path = %store.path().display(), "migrating the store to schema 3");
        tx.execute_batch(V3)
            .map_err(|e| store.err("migrate to schema version 3", e))?;
        version = 3;
    }
    if version == 3 {
        tracing::debug!(path = %store.path().display(), "migrating the store to schema 4");
        tx.execute_batch(V4)
            .map_err(|e| store.err("migrate to schema version 4", e))?;
        version = 4;
    }
    if version == 4 {
        tracing::debug!(path = %store.path().display(), "migrating the store to schema 5");
        tx.execute_batch(V5)
            .map_err(|e| store.err("migrate to schema version 5", e))?;
        version = 5;
    }
    if version == 5 {
        tracing::debug!(path = %store.path().display(), "migrating the store to schema 6");
        tx.execute_batch(V6)
            .and_then(|()| tx.execute_batch(DERIVED_TABLES))
            .map_err(|e| store.err("migrate to schema version 6", e))?;
        version = 6;
    }
    tx.pragma_update(None, "user_version", version)
        .map_err(|e| store.err("set the schema version", e))
}
