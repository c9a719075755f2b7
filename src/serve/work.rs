//! The work a run does, on a thread of its own: the library calls of the command line
//! (`ops::port::run`, `ops::boot::run`, …) with the run as their event sink. The
//! run's final event and status come from what the call returned.

use std::sync::Arc;

use serde_json::{json, Value};

use super::runs::{status, Run};
use super::App;
use crate::ops::error::Outcome;
use crate::ops::port::{Level, PortEvents, PortOptions};
use crate::ops::Error;
use crate::store::FixIterationRecord;
use crate::swarm::Event;
use crate::writer;

/// A run's events: everything the port says, as JSON events with a `reason` (the
/// swarm's and the fix loop's are the lines of `--message-format json`).
pub struct RunEvents(pub Arc<Run>);

impl PortEvents for RunEvents {
    fn message(&self, level: Level, text: &str) {
        self.0.push(&json!({
            "reason": "message",
            "level": level.as_str(),
            "message": text,
        }));
    }

    fn tasks(&self, tasks: usize) {
        self.0.push(&json!({"reason": "tasks", "tasks": tasks}));
    }

    fn swarm(&self, event: &Event) {
        match serde_json::to_value(event) {
            Ok(v) => self.0.push(&v),
            Err(e) => tracing::warn!("run {}: an event could not be encoded: {e}", self.0.id),
        }
    }

    fn progress(&self, text: &str) {
        self.0.push(&json!({"reason": "progress", "message": text}));
    }

    fn fix_iteration(&self, record: &FixIterationRecord) {
        if let Ok(Value::Object(mut fields)) = serde_json::to_value(record) {
            fields.insert("reason".into(), "fix-iteration".into());
            self.0.push(&Value::Object(fields));
        }
    }
}

/// What a port run does after the port.
#[derive(Debug, Clone)]
pub struct PortJob {
    /// The port's options (its cancel token is the run's).
    pub options: PortOptions,
    /// Boot the written port in this emulator afterwards.
    pub boot: Option<crate::emulate::Emulator>,
}

/// A file the port decided on, with its unified diff.
fn file_json(p: &writer::Planned) -> Value {
    let (action, note) = match &p.action {
        writer::Action::Create => ("create", None),
        writer::Action::Update => ("update", None),
        writer::Action::Unchanged => ("unchanged", None),
        writer::Action::SkipEdited { reason } => ("skip-edited", Some(reason.clone())),
        writer::Action::ForceUpdate { backup } => ("force-update", Some(backup.clone())),
    };
    let diff = matches!(
        p.action,
        writer::Action::Create | writer::Action::Update | writer::Action::ForceUpdate { .. }
    )
    .then(|| writer::diff(p));
    json!({"path": p.rel, "action": action, "note": note, "diff": diff})
}

/// Runs `work` on a thread of its own and ends the run with what it returned: `Ok`
/// with a result and an outcome, or an error (`Interrupted` is `cancelled`). A panic
/// ends the run `failed`, and the server goes on.
pub fn spawn(
    app: &Arc<App>,
    run: Arc<Run>,
    work: impl FnOnce(&App, &Arc<Run>) -> Result<(Value, Outcome), Error> + Send + 'static,
) {
    let thread_app = app.clone();
    let name = format!("eterna-port {}", run.id);
    let thread_run = run.clone();
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let (app, run) = (thread_app, thread_run);
        let started = std::time::Instant::now();
        let mut result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&app, &run)));
        if let Ok(Ok((Value::Object(fields), _))) = &mut result {
            fields.insert(
                "elapsed_ms".into(),
                (started.elapsed().as_millis() as u64).into(),
            );
        }
        let (state, result, error) = match result {
            Ok(Ok((result, Outcome::Done))) => (status::DONE, Some(result), None),
            Ok(Ok((result, Outcome::Problems))) => (status::PROBLEMS, Some(result), None),
            Ok(Err(Error::Interrupted(m))) => (status::CANCELLED, None, Some(m)),
            Ok(Err(Error::Unscannable { diagnostics })) => (
                status::FAILED,
                None,
                Some(format!(
                    "{} source file(s) could not be scanned: {}",
                    diagnostics.len(),
                    diagnostics
                        .iter()
                        .map(|d| format!("{}: {}", d.path, d.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            ),
            Ok(Err(e)) => (status::FAILED, None, Some(format!("{e:#}"))),
            Err(_) => (
                status::FAILED,
                None,
                Some("internal error: the run stopped on a panic (see the server's log)".into()),
            ),
        };
        app.runs.finish(&run, state, result, error);
    });
    if let Err(e) = spawned {
        app.runs.finish(
            &run,
            status::FAILED,
            None,
            Some(format!("could not start the run's thread: {e}")),
        );
    }
}

/// A port (and, when asked, a boot of what it wrote): the result holds the port's
/// summary (the `port-finished` line of `--message-format json`, also sent as an
/// event), every file with its diff, and the boot verdict.
pub fn port(app: &App, run: &Arc<Run>, job: PortJob) -> Result<(Value, Outcome), Error> {
    let mut options = job.options;
    options.cancel = run.cancel.clone();
    options.cancel_on_ctrl_c = false;
    let done = crate::ops::port::run(&app.session, &options, Arc::new(RunEvents(run.clone())))?;
    let summary = match &done.summary {
        Some(s) => {
            let v = serde_json::to_value(s).map_err(|e| Error::Usage(e.into()))?;
            run.push(&v);
            v
        }
        None => Value::Null,
    };
    let mut outcome = done.outcome;
    let mut result = json!({
        "summary": summary,
        "files": done.planned.iter().map(file_json).collect::<Vec<_>>(),
    });
    if let (Some(emulator), false, true) = (job.boot, options.dry_run, done.summary.is_some()) {
        run.push(&json!({"reason": "progress", "message": "booting the port"}));
        let boot = crate::ops::boot::BootOptions {
            bin: None,
            emulator,
            accel: crate::emulate::Accel::Auto,
            timeout: std::time::Duration::from_secs(60),
            compare: false,
            patterns: crate::ops::boot::patterns(&app.session.config.console, &[], &[], None),
            echo: false,
            quiet: true,
        };
        let report = crate::ops::boot::run(&app.session, &boot)?;
        if !report.success {
            outcome = Outcome::Problems;
        }
        let v = serde_json::to_value(&report).unwrap_or(Value::Null);
        run.push(&json!({"reason": "boot-finished", "success": report.success}));
        result["boot"] = v;
    }
    Ok((result, outcome))
}
