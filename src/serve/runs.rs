//! The server's runs: each one's events (kept in memory while it is live, and in the
//! store for ever), its status and result, the one writing run a workspace may have at
//! a time, and subscribers that replay a run's events from its start and then follow
//! it live, each event once, in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::Stream;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::llm::CancellationToken;
use crate::store::{HealthRecord, ServeRunRow, Store, StoreError};

/// Locks a mutex, taking the data of a poisoned one (a panicked run thread leaves its
/// state readable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a run ended, or `running`.
pub mod status {
    /// Still working.
    pub const RUNNING: &str = "running";
    /// Ended with nothing left to do (exit 0 on the command line).
    pub const DONE: &str = "done";
    /// Ended with problems the result shows (exit 1).
    pub const PROBLEMS: &str = "problems";
    /// Could not do its work (exit 2): the error says why.
    pub const FAILED: &str = "failed";
    /// Cancelled on request (or the server was stopped).
    pub const CANCELLED: &str = "cancelled";
    /// The server stopped (or was killed) before the run ended.
    pub const INTERRUPTED: &str = "interrupted";
}

/// The reason of the last event of every run.
pub const FINAL_REASON: &str = "run-finished";

/// A run of this server process.
pub struct Run {
    /// Its id.
    pub id: String,
    /// What it does (`port`, `orchestrate`, `agent:eterna_port`, …).
    pub kind: String,
    /// Whether it may write to the workspace.
    pub write: bool,
    /// The request as received.
    pub request: Value,
    /// When it started (RFC 3339).
    pub created_at: String,
    /// Cancels its work.
    pub cancel: CancellationToken,
    state: Mutex<RunState>,
    /// The number of events so far (subscribers wait on it).
    tick: watch::Sender<usize>,
    store: Arc<Mutex<Store>>,
}

#[derive(Default)]
struct RunState {
    events: Vec<Arc<str>>,
    finished: bool,
    status: String,
    finished_at: Option<String>,
    result: Option<Value>,
    error: Option<String>,
    /// The agents' health, as the swarm last reported it.
    health: BTreeMap<String, HealthRecord>,
    tasks_started: usize,
    tasks_finished: usize,
    tasks_failed: usize,
}

impl Run {
    /// Appends an event (any JSON object with a `reason`): kept in memory, recorded in
    /// the store, and sent to every subscriber. Nothing is appended after the final
    /// event.
    pub fn push(&self, event: &Value) {
        let text: Arc<str> = Arc::from(event.to_string());
        let mut st = lock(&self.state);
        if st.finished {
            return;
        }
        self.observe(&mut st, event);
        let seq = st.events.len();
        st.events.push(text.clone());
        // Recorded while the state is locked, so the store's order is the run's.
        if let Err(e) = lock(&self.store).serve_event(&self.id, seq, &text) {
            tracing::warn!("run {}: {e}", self.id);
        }
        let n = st.events.len();
        drop(st);
        self.tick.send_replace(n);
    }

    /// What the health table and the progress figures learn from an event.
    fn observe(&self, st: &mut RunState, event: &Value) {
        match event.get("reason").and_then(Value::as_str) {
            Some("agent-health") => {
                if let Ok(h) = serde_json::from_value::<HealthRecord>(event.clone()) {
                    st.health.insert(h.agent.clone(), h);
                }
            }
            Some("task-started") => st.tasks_started += 1,
            Some("task-finished") => {
                st.tasks_finished += 1;
                if event.get("status").and_then(Value::as_str) != Some("done") {
                    st.tasks_failed += 1;
                }
            }
            _ => {}
        }
    }

    /// Ends the run: its final event, its status and result in the store. A run
    /// ends once; later calls do nothing.
    pub fn finish(&self, status: &str, result: Option<Value>, error: Option<String>) {
        let mut st = lock(&self.state);
        if st.finished {
            return;
        }
        let last = json!({
            "reason": FINAL_REASON,
            "run_id": self.id,
            "status": status,
            "error": error,
        });
        let seq = st.events.len();
        st.events.push(Arc::from(last.to_string()));
        st.finished = true;
        st.status = status.to_string();
        st.result = result;
        st.error = error;
        {
            let store = lock(&self.store);
            let recorded = store
                .serve_event(&self.id, seq, &last.to_string())
                .and_then(|()| {
                    store.serve_finish(&self.id, status, st.result.as_ref(), st.error.as_deref())
                });
            if let Err(e) = recorded {
                tracing::warn!("run {}: {e}", self.id);
            }
            st.finished_at = store
                .serve_run(&self.id)
                .ok()
                .flatten()
                .and_then(|r| r.finished_at);
        }
        let n = st.events.len();
        drop(st);
        self.tick.send_replace(n);
    }

    /// Whether it ended.
    pub fn finished(&self) -> bool {
        lock(&self.state).finished
    }

    /// Its record, as the store has it (status and result as they are now).
    pub fn row(&self) -> ServeRunRow {
        let st = lock(&self.state);
        ServeRunRow {
            run_id: self.id.clone(),
            kind: self.kind.clone(),
            write: self.write,
            request: self.request.clone(),
            status: if st.finished {
                st.status.clone()
            } else {
                status::RUNNING.to_string()
            },
            created_at: self.created_at.clone(),
            finished_at: st.finished_at.clone(),
            result: st.result.clone(),
            error: st.error.clone(),
        }
    }

    /// Progress so far: tasks started, finished and failed, and events sent.
    pub fn progress(&self) -> Value {
        let st = lock(&self.state);
        json!({
            "tasks_started": st.tasks_started,
            "tasks_finished": st.tasks_finished,
            "tasks_failed": st.tasks_failed,
            "events": st.events.len(),
        })
    }

    /// The agents' health as this run last reported it.
    pub fn health(&self) -> Vec<HealthRecord> {
        lock(&self.state).health.values().cloned().collect()
    }

    /// Waits until the run ends.
    pub async fn wait(&self) {
        let mut rx = self.tick.subscribe();
        while !self.finished() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every event from the first, then each new one as it comes, ending after the
    /// final event.
    pub fn subscribe(self: &Arc<Self>) -> impl Stream<Item = Arc<str>> + Send + 'static {
        let rx = self.tick.subscribe();
        futures_util::stream::unfold(
            (self.clone(), rx, 0usize),
            |(run, mut rx, next)| async move {
                loop {
                    {
                        let st = lock(&run.state);
                        if let Some(e) = st.events.get(next) {
                            let e = e.clone();
                            drop(st);
                            return Some((e, (run, rx, next + 1)));
                        }
                        if st.finished {
                            return None;
                        }
                    }
                    // Woken by every push; a push between the look above and this wait
                    // is not missed (the receiver sees the newer value).
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub enum StartError {
    /// Another run writes to the workspace (its id).
    Busy(String),
    /// The store failed.
    Store(StoreError),
}

/// Every run of the server: the live ones of this process, and the store's.
pub struct Runs {
    store: Arc<Mutex<Store>>,
    live: Mutex<HashMap<String, Arc<Run>>>,
    /// The writing run in progress, if any.
    writer: Mutex<Option<String>>,
    /// The newest run that ended in this process (its health table).
    last_ended: Mutex<Option<Arc<Run>>>,
    counter: AtomicU64,
}

impl Runs {
    /// The runs recorded in `store`. Runs an earlier server left `running` are marked
    /// `interrupted`, with a final event saying so.
    pub fn open(store: Store) -> Result<Runs, StoreError> {
        let cut = store.serve_interrupt_unfinished()?;
        for id in &cut {
            let seq = store.serve_event_count(id)?;
            let last = json!({
                "reason": FINAL_REASON,
                "run_id": id,
                "status": status::INTERRUPTED,
                "error": "the server stopped before the run ended",
            });
            store.serve_event(id, seq, &last.to_string())?;
        }
        if !cut.is_empty() {
            tracing::info!(
                runs = cut.len(),
                "runs cut off by a stopped server marked interrupted"
            );
        }
        Ok(Runs {
            store: Arc::new(Mutex::new(store)),
            live: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
            last_ended: Mutex::new(None),
            counter: AtomicU64::new(0),
        })
    }

    /// The store (for reads; hold it briefly).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Starts a run: recorded as `running`; a writing run takes the workspace's one
    /// writer slot (released when it ends).
    pub fn start(&self, kind: &str, write: bool, request: Value) -> Result<Arc<Run>, StartError> {
        let id = format!(
            "run-{:x}-{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let mut writer = lock(&self.writer);
        if write {
            if let Some(busy) = writer.as_ref() {
                return Err(StartError::Busy(busy.clone()));
            }
        }
        let created_at = lock(&self.store)
            .serve_begin(&id, kind, write, &request)
            .map_err(StartError::Store)?;
        if write {
            *writer = Some(id.clone());
        }
        drop(writer);
        let run = Arc::new(Run {
            id: id.clone(),
            kind: kind.to_string(),
            write,
            request,
            created_at,
            cancel: CancellationToken::new(),
            state: Mutex::new(RunState::default()),
            tick: watch::channel(0).0,
            store: self.store.clone(),
        });
        lock(&self.live).insert(id, run.clone());
        Ok(run)
    }

    /// Ends a run (see [`Run::finish`]), frees the writer slot it held, and lets the
    /// store answer for it from now on (its subscribers keep their copy): a
    /// long-lived server keeps in memory only its live runs and the newest ended one.
    pub fn finish(
        &self,
        run: &Arc<Run>,
        status: &str,
        result: Option<Value>,
        error: Option<String>,
    ) {
        run.finish(status, result, error);
        let mut writer = lock(&self.writer);
        if writer.as_deref() == Some(run.id.as_str()) {
            *writer = None;
        }
        drop(writer);
        lock(&self.live).remove(&run.id);
        *lock(&self.last_ended) = Some(run.clone());
    }

    /// The writing run of this process in progress, if any.
    pub fn writer(&self) -> Option<String> {
        lock(&self.writer).clone()
    }

    /// A run of this process still working (or just ending).
    pub fn live(&self, id: &str) -> Option<Arc<Run>> {
        lock(&self.live).get(id).cloned()
    }

    /// Runs of this process still working.
    pub fn in_progress(&self) -> Vec<Arc<Run>> {
        let mut runs: Vec<_> = lock(&self.live)
            .values()
            .filter(|r| !r.finished())
            .cloned()
            .collect();
        runs.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        runs
    }

    /// The newest run of this process that ended.
    pub fn last_ended(&self) -> Option<Arc<Run>> {
        lock(&self.last_ended).clone()
    }

    /// Cancels every live run (the server is stopping).
    pub fn cancel_all(&self) {
        for r in lock(&self.live).values() {
            r.cancel.cancel();
        }
    }

    /// A run's record: the live one's current state, else the store's.
    pub fn row(&self, id: &str) -> Result<Option<ServeRunRow>, StoreError> {
        match self.live(id) {
            Some(run) => Ok(Some(run.row())),
            None => lock(&self.store).serve_run(id),
        }
    }

    /// The newest runs, at most `limit` (live ones as they are now).
    pub fn list(&self, limit: usize) -> Result<Vec<ServeRunRow>, StoreError> {
        let rows = lock(&self.store).serve_runs(limit)?;
        Ok(rows
            .into_iter()
            .map(|r| match self.live(&r.run_id) {
                Some(run) => run.row(),
                None => r,
            })
            .collect())
    }
}
