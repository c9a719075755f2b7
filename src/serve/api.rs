//! The routes: request and response shapes (also the OpenAPI document's), and the
//! handlers, each a thin layer over the library calls the command line makes.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::runs::{status, Run, StartError};
use super::work::{self, PortJob};
use super::App;
use crate::config::Backend;
use crate::ops::port::PortOptions;
use crate::plan::Plan;
use crate::swarm::Role;

/// An error answer: `{"error": {"status", "message", "field"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

/// The body of an error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status.
    status: u16,
    /// What was wrong and what to do.
    message: String,
    /// The request field at fault, when one is.
    field: Option<String>,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

/// A JSON body read whatever its content type says; malformed JSON and unknown or
/// missing fields are a 400 naming the field, a body over the limit a 413.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "the request body is over the server's limit (--body-limit)",
                )
            } else {
                ApiError::new(status, r.body_text())
            }
        })?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map(Body).map_err(|e| {
            let message = e.to_string();
            let field = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"))
                .map(str::to_string);
            ApiError {
                status: StatusCode::BAD_REQUEST,
                message: format!("the request body is not valid: {message}"),
                field,
            }
        })
    }
}

/// The server's status.
#[derive(Serialize, ToSchema)]
pub struct Status {
    /// `cargo-eterna-port`.
    name: &'static str,
    /// Its version.
    version: &'static str,
    /// The workspace it serves.
    workspace: String,
    /// `llm` (a key or a local server is set) or `offline`.
    backend: &'static str,
    /// The model asked on the LLM backend.
    model: Option<String>,
    /// The LLM server's base URL (never a key).
    llm_base_url: Option<String>,
    /// The store's file.
    store: String,
    /// Whether requests need a bearer token.
    auth: bool,
    /// Runs in progress.
    runs_in_progress: Vec<String>,
}

/// `GET /`: what this server serves, and its runs in progress.
#[utoipa::path(get, path = "/", tag = "status",
    responses((status = 200, description = "The server's status", body = Status)))]
pub async fn status(State(app): State<Arc<App>>) -> Json<Status> {
    let s = &app.session;
    let llm = s.config.backend.value == Backend::Llm;
    let settings = crate::llm::LlmSettings::from_config(&s.config);
    Json(Status {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        workspace: s.ws.root.display().to_string(),
        backend: if llm { "llm" } else { "offline" },
        model: llm.then(|| settings.model.clone()),
        llm_base_url: llm.then(|| without_credentials(&settings.base_url)),
        store: s.config.db.value.display().to_string(),
        auth: app.token.is_some(),
        runs_in_progress: app
            .runs
            .in_progress()
            .iter()
            .map(|r| r.id.clone())
            .collect(),
    })
}

/// A URL without the user name and password it may carry.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// The swarm's health.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `live` (a run of this server is working), `last-run` (the newest run's table)
    /// or `none`.
    source: &'static str,
    /// The run the table is from.
    run_id: Option<String>,
    /// One row per agent: handshake, last heartbeat, tasks, latency.
    #[schema(value_type = Vec<Object>)]
    agents: Vec<crate::store::HealthRecord>,
    /// The coordinator's figures.
    stats: HealthStats,
}

/// The coordinator's figures.
#[derive(Serialize, ToSchema)]
pub struct HealthStats {
    /// Runs in progress.
    runs_in_progress: usize,
    /// Agents in the table.
    agents: usize,
    /// Tasks finished by the agents in the table.
    tasks_done: i64,
    /// Tasks that failed.
    tasks_failed: i64,
    /// Mean task latency over the table's agents, weighted by their tasks.
    mean_latency_ms: Option<f64>,
}

/// `GET /swarm/health`: the agents' health table: the live run's, else the newest
/// recorded one.
#[utoipa::path(get, path = "/swarm/health", tag = "swarm",
    responses((status = 200, description = "The health table", body = Health)))]
pub async fn health(State(app): State<Arc<App>>) -> Result<Json<Health>, ApiError> {
    let live = app.runs.in_progress();
    let (source, run_id, agents) = match live.last() {
        Some(run) => ("live", Some(run.id.clone()), run.health()),
        None => match app.runs.last_ended() {
            Some(run) => ("last-run", Some(run.id.clone()), run.health()),
            None => {
                let app = app.clone();
                tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
                    let store = app.runs.store();
                    match store.last_run(Some("port"))? {
                        Some(r) => {
                            let rows = store.run_health(&r.run_id)?;
                            Ok(("last-run", Some(r.run_id), rows))
                        }
                        None => Ok(("none", None, Vec::new())),
                    }
                })
                .await
                .map_err(ApiError::internal)??
            }
        },
    };
    let done: i64 = agents.iter().map(|a| a.tasks_done).sum();
    let weighted: f64 = agents
        .iter()
        .filter_map(|a| a.mean_latency_ms.map(|m| m * a.tasks_done as f64))
        .sum();
    Ok(Json(Health {
        source,
        run_id,
        stats: HealthStats {
            runs_in_progress: live.len(),
            agents: agents.len(),
            tasks_done: done,
            tasks_failed: agents.iter().map(|a| a.tasks_failed).sum(),
            mean_latency_ms: (done > 0).then(|| weighted / done as f64),
        },
        agents,
    }))
}

/// `?wait=true`: answer when the run ends.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Answer when the run ends, with its result, instead of at once.
    #[serde(default)]
    wait: bool,
}

/// A request that starts work. Every field is optional; which ones a route reads is
/// said per route. Unknown fields are refused.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkRequest {
    /// `/swarm/orchestrate`: what to do, in words ("Port VMCS to x86").
    #[serde(rename = "userMessage")]
    user_message: Option<String>,
    /// `/swarm/orchestrate`: the caller's conversation, echoed back.
    #[serde(rename = "conversationId")]
    conversation_id: Option<String>,
    /// Components, aliases (vmcs, ept, gic, …) or module paths to port.
    #[serde(default)]
    targets: Vec<String>,
    /// One module path (`/eterna/port`).
    module: Option<String>,
    /// One ARM64 source file, workspace-relative (`/eterna/port`).
    file: Option<String>,
    /// Source files, workspace-relative (`/eterna/port/bulk`).
    #[serde(default)]
    files: Vec<String>,
    /// `/agent/research/execute`: the question.
    question: Option<String>,
    /// `/agent/research/execute`: passages to cite at most (default 5).
    limit: Option<usize>,
    /// Write the port into the workspace; without it the run is a dry run (diffs only).
    #[serde(default)]
    write: bool,
    /// Write into a git tree with uncommitted changes.
    #[serde(default)]
    allow_dirty: bool,
    /// Write into a workspace outside git.
    #[serde(default)]
    allow_no_vcs: bool,
    /// Overwrite generated files edited by hand (a backup is kept).
    #[serde(default)]
    force: bool,
    /// `offline` or `llm`; default: the server's (llm when a key is set).
    backend: Option<String>,
    /// Fix rounds of the cargo check loop after a written port (default 5; 0 skips it).
    max_fix_iterations: Option<u32>,
    /// Agent tasks in flight at most (default 8).
    jobs: Option<usize>,
    /// Boot the written port afterwards: `qemu` or `bochs`.
    boot: Option<String>,
}

/// A run, as listed and as shown.
#[derive(Serialize, ToSchema)]
pub struct RunView {
    /// Its id.
    run_id: String,
    /// `port`, `orchestrate`, `agent:eterna_port`, `agent:code`, `agent:debug`.
    kind: String,
    /// Whether it writes to the workspace.
    write: bool,
    /// `running`, `done`, `problems`, `failed`, `cancelled` or `interrupted`.
    status: String,
    /// When it started.
    created_at: String,
    /// When it ended.
    finished_at: Option<String>,
    /// Why it failed, when it did.
    error: Option<String>,
    /// The request.
    #[schema(value_type = Object)]
    request: Value,
    /// Progress of a live run (tasks started, finished, failed; events).
    #[schema(value_type = Option<Object>)]
    progress: Option<Value>,
    /// The result, once it ended: `summary` (the port's figures: coverage, modules with
    /// their items, tasks, fix loop, i.e. the `port-finished` line of the command
    /// line's JSON), `files` (each with its action and diff), `boot` (the verdict),
    /// `elapsed_ms`.
    #[schema(value_type = Option<Object>)]
    result: Option<Value>,
    /// Where its events are.
    events: String,
}

impl RunView {
    fn new(row: crate::store::ServeRunRow, live: Option<&Arc<Run>>, full: bool) -> RunView {
        RunView {
            events: format!("/runs/{}/events", row.run_id),
            progress: live.map(|r| r.progress()),
            result: if full { row.result } else { None },
            run_id: row.run_id,
            kind: row.kind,
            write: row.write,
            status: row.status,
            created_at: row.created_at,
            finished_at: row.finished_at,
            error: row.error,
            request: row.request,
        }
    }
}

/// A run just started.
#[derive(Serialize, ToSchema)]
pub struct Started {
    /// Its id.
    run_id: String,
    /// `running`.
    status: &'static str,
    /// The caller's conversation, echoed back.
    #[serde(rename = "conversationId", skip_serializing_if = "Option::is_none")]
    conversation_id: Option<String>,
    /// What the request was read as: the port targets (empty: every module).
    targets: Vec<String>,
    /// The modules the run ports, each a task: its source and target file.
    tasks: Vec<PlannedTask>,
    /// Whether it writes.
    write: bool,
    /// Server-sent events of the run.
    events: String,
    /// The same events over a websocket.
    websocket: String,
}

/// A module the run ports.
#[derive(Serialize, ToSchema)]
pub struct PlannedTask {
    /// The module path.
    module: String,
    /// Its component.
    component: String,
    /// The ARM64 source file.
    source: String,
    /// The x86_64 file it becomes.
    file_path: String,
    /// `pending` until the run's events say otherwise.
    status: &'static str,
}

fn bad_backend(b: &str) -> ApiError {
    ApiError::field(
        "backend",
        format!("backend `{b}` is not known: use `offline` or `llm`"),
    )
}

/// The plan of the workspace (scanned on a blocking thread).
async fn plan_of(app: &Arc<App>) -> Result<Plan, ApiError> {
    let app = app.clone();
    let plan = tokio::task::spawn_blocking(move || app.session.full_plan(true, &|_| {}))
        .await
        .map_err(ApiError::internal)?;
    Ok(plan)
}

/// A workspace-relative path for a file the request names; refused when it leaves the
/// workspace or does not exist.
fn workspace_file(root: &Path, field: &str, file: &str) -> Result<String, ApiError> {
    let given = Path::new(file);
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    // Lexically first (`..` may not climb out, even through a path that does not exist),
    // then for real (a symlink may not lead out either).
    let mut lexical = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    let outside = || {
        ApiError::field(
            field,
            format!(
                "`{file}` is outside the workspace ({}): name a file inside it",
                root.display()
            ),
        )
    };
    if !lexical.starts_with(root) {
        return Err(outside());
    }
    let real = lexical
        .canonicalize()
        .map_err(|_| ApiError::field(field, format!("`{file}` does not exist in the workspace")))?;
    let real_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let rel = real.strip_prefix(&real_root).map_err(|_| outside())?;
    Ok(rel.to_string_lossy().replace('\\', "/"))
}

/// The checks of every request that starts a port, and its options.
struct PortStart {
    kind: String,
    targets: Vec<String>,
    options: PortOptions,
    boot: Option<crate::emulate::Emulator>,
    conversation_id: Option<String>,
}

fn port_options(req: &WorkRequest, targets: Vec<String>) -> Result<PortOptions, ApiError> {
    let backend = match req.backend.as_deref() {
        None => None,
        Some("offline") => Some(Backend::Offline),
        Some("llm") => Some(Backend::Llm),
        Some(b) => return Err(bad_backend(b)),
    };
    let jobs = req.jobs.unwrap_or(8);
    if !(1..=64).contains(&jobs) {
        return Err(ApiError::field("jobs", "`jobs` must be between 1 and 64"));
    }
    let max_fix_iterations = req.max_fix_iterations.unwrap_or(5);
    if max_fix_iterations > 50 {
        return Err(ApiError::field(
            "max_fix_iterations",
            "`max_fix_iterations` must be at most 50",
        ));
    }
    Ok(PortOptions {
        targets,
        backend,
        dry_run: !req.write,
        allow_dirty: req.allow_dirty,
        allow_no_vcs: req.allow_no_vcs,
        force: req.force,
        jobs,
        no_cache: false,
        allow_deps: false,
        max_fix_iterations,
        host_fallback: false,
        stream: false,
        cancel: crate::llm::CancellationToken::new(),
        cancel_on_ctrl_c: false,
        roles: None,
    })
}

fn boot_of(req: &WorkRequest) -> Result<Option<crate::emulate::Emulator>, ApiError> {
    let boot = match req.boot.as_deref() {
        None => None,
        Some("qemu") => Some(crate::emulate::Emulator::Qemu),
        Some("bochs") => Some(crate::emulate::Emulator::Bochs),
        Some(b) => {
            return Err(ApiError::field(
                "boot",
                format!("`boot` is `qemu` or `bochs`, not `{b}`"),
            ))
        }
    };
    if boot.is_some() && !req.write {
        return Err(ApiError::field(
            "boot",
            "`boot` boots what the run writes: send \"write\": true with it",
        ));
    }
    Ok(boot)
}

/// Refuses fields that belong to another route.
fn only(req: &WorkRequest, route: &str, allowed: &[&str]) -> Result<(), ApiError> {
    let given: BTreeMap<&str, bool> = [
        ("userMessage", req.user_message.is_some()),
        ("conversationId", req.conversation_id.is_some()),
        ("targets", !req.targets.is_empty()),
        ("module", req.module.is_some()),
        ("file", req.file.is_some()),
        ("files", !req.files.is_empty()),
        ("question", req.question.is_some()),
        ("limit", req.limit.is_some()),
    ]
    .into_iter()
    .collect();
    for (field, set) in given {
        if set && !allowed.contains(&field) {
            return Err(ApiError::field(
                field,
                format!(
                    "`{field}` is not read by {route} (it reads {})",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Starts a port run: the targets are checked against the plan first (an unknown
/// target is a 400, not a failed run), a write is checked against the git tree (a 409
/// when it has changes and `allow_dirty` is not set), and a second writing run is a
/// 409.
async fn start_port(
    app: &Arc<App>,
    start: PortStart,
    request: Value,
    wait: bool,
) -> Result<Response, ApiError> {
    let mut selected = plan_of(app).await?;
    crate::plan::select(&mut selected, &start.targets, &app.session.knowledge)
        .map_err(|e| ApiError::field("targets", format!("{e:#}")))?;
    if !start.options.dry_run {
        let s = &app.session;
        crate::writer::check_vcs(
            &s.ws.root,
            &s.own_paths(),
            start.options.allow_dirty,
            start.options.allow_no_vcs,
        )
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    }
    let write = !start.options.dry_run;
    if write && app.runs.writer().is_none() {
        // Another process (the command line, a second server) may be writing: the run
        // would fail at once, so say it now.
        crate::writer::WriteLock::acquire(&app.session.ws.target_dir)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    }
    let run = app
        .runs
        .start(&start.kind, write, request)
        .map_err(|e| match e {
            StartError::Busy(id) => ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "run {id} is writing to this workspace; one writing run at a time: wait for it (GET /runs/{id}), cancel it (POST /runs/{id}/cancel), or send a dry run"
                ),
            ),
            StartError::Store(e) => ApiError::internal(e),
        })?;
    let tasks = selected
        .modules
        .iter()
        .map(|m| PlannedTask {
            module: m.module_path.clone(),
            component: m.component.as_str().to_string(),
            source: m.source.clone(),
            file_path: m.target.clone(),
            status: "pending",
        })
        .collect();
    let job = PortJob {
        options: start.options,
        boot: start.boot,
    };
    work::spawn(app, run.clone(), move |app, run| work::port(app, run, job));
    if wait {
        run.wait().await;
        let row = run.row();
        if start.kind == "orchestrate" {
            return Ok(Json(orchestrate_shape(&row, start.conversation_id)).into_response());
        }
        return Ok(Json(RunView::new(row, Some(&run), true)).into_response());
    }
    let started = Started {
        events: format!("/runs/{}/events", run.id),
        websocket: format!("/runs/{}/ws", run.id),
        run_id: run.id.clone(),
        status: status::RUNNING,
        conversation_id: start.conversation_id,
        targets: start.targets,
        tasks,
        write,
    };
    Ok((StatusCode::ACCEPTED, Json(started)).into_response())
}

/// The answer of the original system's `/swarm/orchestrate`: tasks with status, file
/// path and output, and `swarm_stats`.
fn orchestrate_shape(row: &crate::store::ServeRunRow, conversation: Option<String>) -> Value {
    let summary = row.result.as_ref().and_then(|r| r.get("summary"));
    let files = row
        .result
        .as_ref()
        .and_then(|r| r.get("files"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let modules: BTreeMap<String, String> = summary
        .and_then(|s| s.get("modules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some((
                m.get("module_path")?.as_str()?.to_string(),
                m.get("target")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let tasks: Vec<Value> = summary
        .and_then(|s| s.get("tasks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let module = t.get("module").and_then(Value::as_str).unwrap_or_default();
            let path = modules.get(module).cloned();
            let output = files
                .iter()
                .find(|f| f.get("path").and_then(Value::as_str) == path.as_deref())
                .and_then(|f| f.get("diff").cloned())
                .filter(|d| !d.is_null())
                .or_else(|| t.get("error").cloned())
                .unwrap_or(Value::Null);
            json!({
                "id": t.get("task"),
                "agent": t.get("agent"),
                "module": module,
                "status": t.get("status"),
                "file_path": path,
                "output": output,
            })
        })
        .collect();
    let failures = tasks
        .iter()
        .filter(|t| t.get("status").and_then(Value::as_str) != Some("done"))
        .count();
    let wall = row
        .result
        .as_ref()
        .and_then(|r| r.get("elapsed_ms"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "run_id": row.run_id,
        "conversationId": conversation,
        "status": row.status,
        "error": row.error,
        "tasks": tasks,
        "swarm_stats": {
            "completion_time_ms": wall,
            "total_tasks": tasks.len(),
            "failures": failures,
        },
        "result": row.result,
    })
}

/// `POST /swarm/orchestrate`: the PrimaryAgent reads the targets in the message (component
/// names and aliases, module paths, file names) and starts a port of them.
#[utoipa::path(post, path = "/swarm/orchestrate", tag = "swarm", params(WaitQuery),
    request_body = WorkRequest,
    responses(
        (status = 202, description = "Started", body = Started),
        (status = 200, description = "With ?wait=true: tasks with status, file path and output, and swarm_stats"),
        (status = 400, description = "No target in the message, or a bad field", body = ErrorBody),
        (status = 409, description = "Another run is writing, or the git tree has changes", body = ErrorBody)))]
pub async fn orchestrate(
    State(app): State<Arc<App>>,
    Query(q): Query<WaitQuery>,
    Body(req): Body<WorkRequest>,
) -> Result<Response, ApiError> {
    only(
        &req,
        "/swarm/orchestrate",
        &["userMessage", "conversationId"],
    )?;
    let message = req.user_message.clone().unwrap_or_default();
    if message.trim().is_empty() {
        return Err(ApiError::field(
            "userMessage",
            "`userMessage` is missing or empty: say what to port (\"Port VMCS to x86\")",
        ));
    }
    let plan = plan_of(&app).await?;
    let read = crate::swarm::primary::targets_from_message(&message, &plan, &app.session.knowledge);
    if read.targets.is_empty() && !read.all {
        let names: Vec<&str> = app
            .session
            .knowledge
            .components
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(ApiError::field(
            "userMessage",
            format!(
                "the message names no component, module or file of the plan; name one of {} (or an alias: vmcs, ept, gic, apic, …), a module path or a source file, or say \"all\"",
                names.join(", ")
            ),
        ));
    }
    let targets = if read.all { Vec::new() } else { read.targets };
    let start = PortStart {
        kind: "orchestrate".into(),
        options: port_options(&req, targets.clone())?,
        boot: boot_of(&req)?,
        targets,
        conversation_id: req.conversation_id.clone(),
    };
    let request = serde_json::to_value(&req).unwrap_or(Value::Null);
    start_port(&app, start, request, q.wait).await
}

fn port_targets(app: &App, req: &WorkRequest) -> Result<Vec<String>, ApiError> {
    let root = &app.session.ws.root;
    let mut targets = req.targets.clone();
    targets.extend(req.module.iter().cloned());
    if let Some(f) = &req.file {
        targets.push(workspace_file(root, "file", f)?);
    }
    for f in &req.files {
        targets.push(workspace_file(root, "files", f)?);
    }
    Ok(targets)
}

/// `POST /eterna/port`: ports one source file or module (`file`, `module` or `targets`).
#[utoipa::path(post, path = "/eterna/port", tag = "port", params(WaitQuery),
    request_body = WorkRequest,
    responses(
        (status = 202, description = "Started", body = Started),
        (status = 200, description = "With ?wait=true: the run", body = RunView),
        (status = 400, description = "A bad field, a file outside the workspace, an unknown target", body = ErrorBody),
        (status = 409, description = "Another run is writing, or the git tree has changes", body = ErrorBody),
        (status = 413, description = "The body is over the limit", body = ErrorBody)))]
pub async fn port_one(
    State(app): State<Arc<App>>,
    Query(q): Query<WaitQuery>,
    Body(req): Body<WorkRequest>,
) -> Result<Response, ApiError> {
    only(&req, "/eterna/port", &["file", "module", "targets"])?;
    port_route(app, q, req, "/eterna/port").await
}

/// `POST /eterna/port/bulk`: ports many source files or modules (`files`, `targets`).
#[utoipa::path(post, path = "/eterna/port/bulk", tag = "port", params(WaitQuery),
    request_body = WorkRequest,
    responses(
        (status = 202, description = "Started", body = Started),
        (status = 200, description = "With ?wait=true: the run", body = RunView),
        (status = 400, description = "A bad field, a file outside the workspace, an unknown target", body = ErrorBody),
        (status = 409, description = "Another run is writing, or the git tree has changes", body = ErrorBody)))]
pub async fn port_bulk(
    State(app): State<Arc<App>>,
    Query(q): Query<WaitQuery>,
    Body(req): Body<WorkRequest>,
) -> Result<Response, ApiError> {
    only(&req, "/eterna/port/bulk", &["files", "targets"])?;
    port_route(app, q, req, "/eterna/port/bulk").await
}

async fn port_route(
    app: Arc<App>,
    q: WaitQuery,
    req: WorkRequest,
    route: &str,
) -> Result<Response, ApiError> {
    let targets = port_targets(&app, &req)?;
    if targets.is_empty() {
        return Err(ApiError::field(
            "targets",
            format!("{route} needs what to port: `file`, `files`, `module` or `targets`"),
        ));
    }
    let start = PortStart {
        kind: "port".into(),
        options: port_options(&req, targets.clone())?,
        boot: boot_of(&req)?,
        targets,
        conversation_id: None,
    };
    let request = serde_json::to_value(&req).unwrap_or(Value::Null);
    start_port(&app, start, request, q.wait).await
}

/// `POST /agent/{type}/execute`: one agent. `eterna_port` and `code` run only that
/// agent's tasks of a port (the other modules keep the offline engine's drafts; no fix
/// loop unless `max_fix_iterations` says so); `debug` runs the fix loop on a written
/// port (only the DebugAgent asks the model); `research` answers `question` from the
/// store with citations.
#[utoipa::path(post, path = "/agent/{type}/execute", tag = "agents", params(
        ("type" = String, Path, description = "eterna_port, code, debug or research"), WaitQuery),
    request_body = WorkRequest,
    responses(
        (status = 202, description = "Started (port agents)", body = Started),
        (status = 200, description = "The research answer, or with ?wait=true the run"),
        (status = 400, description = "A bad field", body = ErrorBody),
        (status = 404, description = "Unknown agent type", body = ErrorBody),
        (status = 409, description = "Another run is writing", body = ErrorBody)))]
pub async fn agent(
    State(app): State<Arc<App>>,
    UrlPath(kind): UrlPath<String>,
    Query(q): Query<WaitQuery>,
    Body(req): Body<WorkRequest>,
) -> Result<Response, ApiError> {
    let route = format!("/agent/{kind}/execute");
    let (roles, fix_default) = match kind.as_str() {
        "eterna_port" => (vec![Role::EternaPort], 0),
        "code" => (vec![Role::Code], 0),
        "debug" => (Vec::new(), 5),
        "research" => {
            only(&req, &route, &["question", "limit"])?;
            return research(app, req).await;
        }
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no agent type `{other}`: use eterna_port, code, debug or research"),
            ))
        }
    };
    only(&req, &route, &["targets", "module", "file", "files"])?;
    if kind == "debug" && !req.write {
        return Err(ApiError::field(
            "write",
            "the DebugAgent fixes cargo check errors in the written port: send \"write\": true (a dry run has nothing to check)",
        ));
    }
    let targets = port_targets(&app, &req)?;
    let mut options = port_options(&req, targets.clone())?;
    options.roles = Some(roles);
    if req.max_fix_iterations.is_none() {
        options.max_fix_iterations = fix_default;
    }
    let start = PortStart {
        kind: format!("agent:{kind}"),
        options,
        boot: boot_of(&req)?,
        targets,
        conversation_id: None,
    };
    let request = serde_json::to_value(&req).unwrap_or(Value::Null);
    start_port(&app, start, request, q.wait).await
}

async fn research(app: Arc<App>, req: WorkRequest) -> Result<Response, ApiError> {
    let question = req.question.clone().unwrap_or_default();
    if question.trim().is_empty() {
        return Err(ApiError::field(
            "question",
            "`question` is missing or empty: ask something about the port",
        ));
    }
    let limit = req.limit.unwrap_or(crate::ops::ask::DEFAULT_LIMIT);
    if !(1..=crate::ops::ask::MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!(
                "`limit` must be between 1 and {}",
                crate::ops::ask::MAX_LIMIT
            ),
        ));
    }
    let options = crate::ops::ask::AskOptions {
        question,
        limit,
        backend: None,
    };
    options
        .validate()
        .map_err(|e| ApiError::field("question", format!("{e:#}")))?;
    let answer = tokio::task::spawn_blocking(move || crate::ops::ask::run(&app.session, &options))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(answer).into_response())
}

/// `?limit=N` for lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Runs at most (default 100).
    limit: Option<usize>,
}

/// `GET /runs`: the server's runs, newest first (they survive a restart).
#[utoipa::path(get, path = "/runs", tag = "runs", params(ListQuery),
    responses((status = 200, description = "Runs, newest first", body = [RunView])))]
pub async fn runs(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.runs.list(limit)?;
    Ok(Json(
        rows.into_iter()
            .map(|r| {
                let live = app.runs.live(&r.run_id);
                RunView::new(r, live.as_ref(), false)
            })
            .collect(),
    ))
}

fn no_run(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no run `{id}`: GET /runs lists them"),
    )
}

/// `GET /runs/{id}`: a run with its result: per-module and per-item results, diffs,
/// the check (fix loop) and boot verdicts.
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = RunView),
        (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn run(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<RunView>, ApiError> {
    let row = app.runs.row(&id)?.ok_or_else(|| no_run(&id))?;
    let live = app.runs.live(&id);
    Ok(Json(RunView::new(row, live.as_ref(), true)))
}

/// `POST /runs/{id}/cancel`: cancels a live run (what is written stays whole).
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 202, description = "Cancelling", body = RunView),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "The run already ended", body = ErrorBody)))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let Some(run) = app.runs.live(&id) else {
        return match app.runs.row(&id)? {
            Some(r) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("run {id} already ended ({})", r.status),
            )),
            None => Err(no_run(&id)),
        };
    };
    if run.finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} already ended ({})", run.row().status),
        ));
    }
    run.cancel.cancel();
    Ok((
        StatusCode::ACCEPTED,
        Json(RunView::new(run.row(), Some(&run), false)),
    )
        .into_response())
}

/// A run's events from the first: the live run's stream, or the store's record.
async fn event_stream(
    app: &Arc<App>,
    id: &str,
) -> Result<futures_util::stream::BoxStream<'static, Arc<str>>, ApiError> {
    if let Some(run) = app.runs.live(id) {
        return Ok(run.subscribe().boxed());
    }
    let app2 = app.clone();
    let id2 = id.to_string();
    let recorded = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let store = app2.runs.store();
        match store.serve_run(&id2)? {
            Some(_) => Ok(Some(store.serve_events(&id2)?)),
            None => Ok(None),
        }
    })
    .await
    .map_err(ApiError::internal)??;
    let events = recorded.ok_or_else(|| no_run(id))?;
    Ok(futures_util::stream::iter(events.into_iter().map(Arc::<str>::from)).boxed())
}

/// `GET /runs/{id}/events`: the run's events as server-sent events (`data:` one JSON
/// event, `event:` its reason, `id:` its number), from the first, ending after the
/// `run-finished` event.
#[utoipa::path(get, path = "/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "text/event-stream of the run's JSON events"),
        (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn events(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let stream = event_stream(&app, &id).await?;
    let sse = stream.enumerate().map(|(i, e)| {
        let reason = serde_json::from_str::<Value>(&e)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "message".into());
        Ok::<_, std::convert::Infallible>(
            SseEvent::default()
                .id(i.to_string())
                .event(reason)
                .data(&*e),
        )
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /runs/{id}/ws`: the run's events over a websocket, one JSON text message each,
/// from the first; the server closes after the `run-finished` event.
#[utoipa::path(get, path = "/runs/{id}/ws", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 101, description = "Websocket of the run's JSON events"),
        (status = 404, description = "No such run", body = ErrorBody)))]
pub async fn websocket(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = event_stream(&app, &id).await?;
    Ok(ws.on_upgrade(move |socket| send_events(socket, stream)))
}

async fn send_events(
    mut socket: WebSocket,
    mut stream: futures_util::stream::BoxStream<'static, Arc<str>>,
) {
    while let Some(e) = stream.next().await {
        if socket
            .send(Message::Text(e.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// `GET /plan`: the plan (`cargo eterna-port plan --message-format json`).
#[utoipa::path(get, path = "/plan", tag = "status",
    responses((status = 200, description = "The plan")))]
pub async fn plan(State(app): State<Arc<App>>) -> Result<Json<Plan>, ApiError> {
    Ok(Json(plan_of(&app).await?))
}

/// `?q=…&n=…` for the search.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// What to look for.
    q: String,
    /// Results (default 10, at most 100).
    n: Option<usize>,
}

/// `GET /search?q=…`: the store's hybrid search (as `cargo eterna-port search`).
#[utoipa::path(get, path = "/search", tag = "status", params(SearchQuery),
    responses((status = 200, description = "Ranked chunks"),
        (status = 400, description = "An empty query", body = ErrorBody)))]
pub async fn search(
    State(app): State<Arc<App>>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, ApiError> {
    if q.q.trim().is_empty() {
        return Err(ApiError::field("q", "`q` is empty: say what to look for"));
    }
    let n = q.n.unwrap_or(10).clamp(1, 100);
    let results = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let embedder = crate::ops::index::make_embedder(&app.session.config)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
        // A connection of its own: an index refresh does not hold up the runs' events.
        let store = crate::ops::index::open_store(&app.session.config)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
        if store.stats()?.chunks == 0 {
            crate::ops::index::refresh(&app.session, &store)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
        }
        let filters = crate::store::Filters {
            prefer_components: crate::store::rag::query_components(&q.q, &app.session.knowledge),
            ..Default::default()
        };
        Ok(store.search(&q.q, n, &filters, embedder.as_ref())?)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(results).into_response())
}

/// `GET /ui`: the dashboard.
pub async fn ui() -> Html<&'static str> {
    Html(include_str!("assets/ui.html"))
}

/// `GET /docs`: the API's interactive documentation (reads `/openapi.json`).
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("assets/docs.html"))
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    use utoipa::OpenApi;
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|_| "{}".into()),
    )
        .into_response()
}
