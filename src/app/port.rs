//! `cargo eterna-port [port]`: the port flags as [`PortOptions`], the library's
//! [`port::run`], and its rendering: a progress bar on a terminal, warnings on stderr,
//! JSON event lines with `--message-format json`, then the summary (and with
//! `--dry-run` the diffs) and the exit code.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::open;
use crate::cli::{BackendArg, GlobalArgs, MessageFormat, PortFlags};
use crate::config::Backend;
use crate::ops::port::{self, Level, PortEvents, PortOptions};
use crate::report;
use crate::store::FixIterationRecord;
use crate::swarm::{Event, Role, TaskStatus};
use crate::writer;

pub(super) fn cmd_port(g: &GlobalArgs, targets: &[String], flags: &PortFlags) -> Result<u8> {
    let s = open(g)?;
    let options = PortOptions {
        targets: targets.to_vec(),
        backend: flags.backend.map(|b| match b {
            BackendArg::Offline => Backend::Offline,
            BackendArg::Llm => Backend::Llm,
        }),
        dry_run: flags.dry_run,
        allow_dirty: flags.allow_dirty,
        allow_no_vcs: flags.allow_no_vcs,
        force: flags.force,
        jobs: usize::from(flags.jobs.max(1)),
        no_cache: flags.no_cache,
        allow_deps: flags.allow_deps,
        max_fix_iterations: flags.max_fix_iterations,
        host_fallback: flags.host_fallback,
        stream: stream_setting(g, s.config.llm_stream.value),
        cancel: crate::llm::CancellationToken::new(),
        cancel_on_ctrl_c: true,
        roles: None,
    };
    let sink = Arc::new(EventSink::new(g));
    let result = port::run(&s, &options, sink.clone());
    sink.finish()?;
    let done = result?;
    let Some(summary) = done.summary else {
        return Ok(done.outcome.exit_code());
    };
    match g.message_format {
        MessageFormat::Json => print_json_line(&summary)?,
        MessageFormat::Human => {
            if options.dry_run {
                for p in &done.planned {
                    if matches!(
                        p.action,
                        writer::Action::Create
                            | writer::Action::Update
                            | writer::Action::ForceUpdate { .. }
                    ) {
                        report::print_stdout(&writer::diff(p))?;
                    }
                }
            }
            report::print_stdout(&report::port_human(&summary, g.verbose > 0))?;
        }
    }
    Ok(done.outcome.exit_code())
}

/// Whether answers are streamed: the `llm-stream` setting (`ETERNA_PORT_LLM_STREAM`),
/// else on when the progress bar is shown (a terminal), where a stalled answer is
/// visible sooner.
fn stream_setting(g: &GlobalArgs, setting: Option<bool>) -> bool {
    use std::io::IsTerminal;
    setting.unwrap_or_else(|| {
        !g.quiet && g.message_format == MessageFormat::Human && std::io::stderr().is_terminal()
    })
}

/// A fix-loop iteration as a JSON event line.
#[derive(serde::Serialize)]
struct FixIterationEvent<'a> {
    reason: &'static str,
    #[serde(flatten)]
    record: &'a FixIterationRecord,
}

/// One compact JSON document on one line of stdout.
fn print_json_line<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Shows the port's events: a progress bar on a terminal, messages on stderr (notes
/// and warnings not with `-q`), warnings for failed tasks, and with
/// `--message-format json` one JSON line per swarm event and fix-loop iteration.
struct EventSink {
    bar: indicatif::ProgressBar,
    json: bool,
    quiet: bool,
    /// The first failure to write a JSON line (the rest are not tried).
    error: Mutex<Option<anyhow::Error>>,
}

impl EventSink {
    fn new(g: &GlobalArgs) -> EventSink {
        let json = g.message_format == MessageFormat::Json;
        let bar = if g.quiet || json {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{bar:30}] {pos}/{len} tasks {elapsed} {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        };
        EventSink {
            bar,
            json,
            quiet: g.quiet,
            error: Mutex::new(None),
        }
    }

    /// A JSON line (any serializable event) when JSON is on.
    fn line<T: serde::Serialize>(&self, e: &T) {
        if !self.json {
            return;
        }
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_none() {
            *error = print_json_line(e).err();
        }
    }

    fn finish(&self) -> Result<()> {
        self.bar.finish_and_clear();
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e.context("could not write JSON events to stdout")),
            None => Ok(()),
        }
    }
}

impl PortEvents for EventSink {
    fn message(&self, level: Level, text: &str) {
        if self.quiet && level != Level::Error {
            return;
        }
        self.bar
            .suspend(|| report::stderr_message(level.as_str(), text));
    }

    fn tasks(&self, tasks: usize) {
        self.bar.set_length(tasks as u64);
        if !self.bar.is_hidden() {
            self.bar.enable_steady_tick(Duration::from_millis(120));
        }
    }

    fn swarm(&self, e: &Event) {
        match e {
            Event::TaskStarted {
                module,
                agent,
                role,
                ..
            } => {
                if *role == Role::Debug {
                    self.bar.inc_length(1);
                }
                self.bar.set_message(format!("{module} ({agent})"));
            }
            Event::TaskFinished(r) => {
                self.bar.inc(1);
                // A stopped client is said once, by the client, not once per task.
                if r.status == TaskStatus::Failed && !r.fatal {
                    self.bar.suspend(|| {
                        report::stderr_message(
                            "warning",
                            &format!(
                                "{} ({}): {}",
                                r.module,
                                r.agent,
                                r.error.as_deref().unwrap_or("failed")
                            ),
                        )
                    });
                }
            }
            _ => {}
        }
        self.line(e);
    }

    fn progress(&self, text: &str) {
        self.bar.set_message(text.to_string());
    }

    fn fix_iteration(&self, record: &FixIterationRecord) {
        self.line(&FixIterationEvent {
            reason: "fix-iteration",
            record,
        });
    }
}
