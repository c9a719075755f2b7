//! The runs of `cargo eterna-port serve`: each request that started work, its result
//! and every event it sent, so that a restarted server still lists them and replays
//! their events.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store, NOW};

/// A run the server started.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServeRunRow {
    /// The run's id.
    pub run_id: String,
    /// What it does (`port`, `orchestrate`, `agent:<type>`, …).
    pub kind: String,
    /// Whether it may write to the workspace.
    pub write: bool,
    /// The request as received (JSON).
    pub request: serde_json::Value,
    /// `running`, then `done`, `problems`, `failed`, `cancelled` or `interrupted`.
    pub status: String,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Its result (JSON), once it ended with one.
    pub result: Option<serde_json::Value>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

const COLUMNS: &str =
    "run_id, kind, write, request, status, created_at, finished_at, result, error";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServeRunRow> {
    let json = |text: Option<String>| {
        text.map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))
    };
    Ok(ServeRunRow {
        run_id: r.get(0)?,
        kind: r.get(1)?,
        write: r.get::<_, i64>(2)? != 0,
        request: json(r.get(3)?).unwrap_or(serde_json::Value::Null),
        status: r.get(4)?,
        created_at: r.get(5)?,
        finished_at: r.get(6)?,
        result: json(r.get(7)?),
        error: r.get(8)?,
    })
}

impl Store {
    /// Records a run the server starts (status `running`); returns its start time.
    pub fn serve_begin(
        &self,
        run_id: &str,
        kind: &str,
        write: bool,
        request: &serde_json::Value,
    ) -> Result<String> {
        self.conn()
            .query_row(
                &format!(
                    "INSERT INTO serve_runs (run_id, kind, write, request, status, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'running', {NOW}) RETURNING created_at"
                ),
                params![run_id, kind, write, request.to_string()],
                |r| r.get(0),
            )
            .map_err(|e| self.err("record the run", e))
    }

    /// Appends the `seq`-th event (0-based) of a run.
    pub fn serve_event(&self, run_id: &str, seq: usize, event: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO serve_events (run_id, seq, event) VALUES (?1, ?2, ?3)",
                params![run_id, seq as i64, event],
            )
            .map_err(|e| self.err("record the run's event", e))?;
        Ok(())
    }

    /// Records how a run ended.
    pub fn serve_finish(
        &self,
        run_id: &str,
        status: &str,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn()
            .execute(
                &format!(
                    "UPDATE serve_runs SET status = ?2, result = ?3, error = ?4, finished_at = {NOW}
                     WHERE run_id = ?1"
                ),
                params![run_id, status, result.map(|r| r.to_string()), error],
            )
            .map_err(|e| self.err("record the run's end", e))?;
        Ok(())
    }

    /// The server's runs, newest first, at most `limit`.
    pub fn serve_runs(&self, limit: usize) -> Result<Vec<ServeRunRow>> {
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM serve_runs ORDER BY id DESC LIMIT ?1"
            ))
            .map_err(|e| self.err("read the server's runs", e))?;
        let rows = stmt
            .query_map([limit as i64], row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.err("read the server's runs", e))?;
        Ok(rows)
    }

    /// One run of the server.
    pub fn serve_run(&self, run_id: &str) -> Result<Option<ServeRunRow>> {
        self.conn()
            .query_row(
                &format!("SELECT {COLUMNS} FROM serve_runs WHERE run_id = ?1"),
                [run_id],
                row,
            )
            .optional()
            .map_err(|e| self.err("read the server's run", e))
    }

    /// The events of a run, in order.
    pub fn serve_events(&self, run_id: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT event FROM serve_events WHERE run_id = ?1 ORDER BY seq")
            .map_err(|e| self.err("read the run's events", e))?;
        let rows = stmt
            .query_map([run_id], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| self.err("read the run's events", e))?;
        Ok(rows)
    }

    /// Marks every run still `running` as `interrupted` (a server that stopped, or was
    /// killed, left them); returns their ids.
    pub fn serve_interrupt_unfinished(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn()
            .prepare(&format!(
                "UPDATE serve_runs SET status = 'interrupted', finished_at = {NOW},
                 error = 'the server stopped before the run ended'
                 WHERE status = 'running' RETURNING run_id"
            ))
            .map_err(|e| self.err("mark interrupted runs", e))?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| self.err("mark interrupted runs", e))?;
        Ok(rows)
    }

    /// The number of events recorded for a run.
    pub fn serve_event_count(&self, run_id: &str) -> Result<usize> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM serve_events WHERE run_id = ?1",
                [run_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err("read the run's events", e))
    }
}
