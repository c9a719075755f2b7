//! Command dispatch: turns parsed arguments into work and an exit code.

mod ask;
mod check;
mod hook;
mod memory;
mod port;
mod serve;

use anyhow::Result;

pub use crate::ops::error::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEMS};

use crate::cli::{
    AccelArg, Cli, ColorWhen, Command, EmulatorArg, GlobalArgs, MessageFormat, QemuArgs,
};
use crate::emulate;
use crate::ops::Error;
use crate::plan::{self, Plan};
use crate::report;
use crate::workspace::Severity;

/// Runs the command line and returns the process exit code. Never panics on bad input:
/// every error is reported on stderr, and this is the one place that maps an error to
/// its exit code ([`Error::exit_code`]; 2 for any other).
pub fn run(cli: Cli) -> u8 {
    setup_output(&cli.global);
    let quiet = cli.global.quiet;
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => match err.downcast_ref::<Error>() {
            Some(e @ Error::Interrupted(message)) => {
                if !quiet {
                    report::stderr_message("warning", message);
                }
                e.exit_code()
            }
            Some(e @ Error::Unscannable { diagnostics }) => {
                report::print_diagnostics(diagnostics, quiet);
                report::stderr_message(
                    "error",
                    &format!(
                        "{} source file(s) could not be scanned (listed above); fix them before porting",
                        diagnostics.len()
                    ),
                );
                e.exit_code()
            }
            Some(e) => {
                report::stderr_message("error", &format!("{err:#}"));
                e.exit_code()
            }
            None => {
                report::stderr_message("error", &format!("{err:#}"));
                EXIT_ERROR
            }
        },
    }
}

fn setup_output(g: &GlobalArgs) {
    let when = g
        .color
        .or_else(|| match std::env::var("CARGO_TERM_COLOR").ok().as_deref() {
            Some("always") => Some(ColorWhen::Always),
            Some("never") => Some(ColorWhen::Never),
            _ => None,
        });
    let choice = match when {
        Some(ColorWhen::Always) => anstream::ColorChoice::Always,
        Some(ColorWhen::Never) => anstream::ColorChoice::Never,
        Some(ColorWhen::Auto) | None => anstream::ColorChoice::Auto,
    };
    choice.write_global();
    let level = if g.quiet {
        "error"
    } else {
        match g.verbose {
            0 | 1 => "warn",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(crate::config::LOG_ENV)
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("cargo_eterna_port={level}"))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(matches!(choice, anstream::ColorChoice::Always))
        .without_time()
        .try_init();
}

fn dispatch(cli: Cli) -> Result<u8> {
    let g = cli.global;
    match cli.command {
        Some(Command::Plan(t)) => cmd_plan(&g, &t.targets),
        Some(Command::Port(p)) => port::cmd_port(&g, &p.targets, &p.flags),
        Some(Command::Config) => cmd_config(&g),
        Some(Command::Index(a)) => memory::cmd_index(&g, &a),
        Some(Command::Search(a)) => memory::cmd_search(&g, &a),
        Some(Command::Status) => memory::cmd_status(&g),
        Some(Command::Ask(a)) => ask::cmd_ask(&g, &a),
        Some(Command::Qemu(q)) => cmd_qemu(&g, &q),
        Some(Command::Check(a)) => check::cmd_check(&g, &a),
        Some(Command::Hook(h)) => hook::cmd_hook(&g, &h),
        Some(Command::Serve(a)) => serve::cmd_serve(&g, &a),
        None => port::cmd_port(&g, &cli.targets, &cli.port),
    }
}

/// A session for a command: the library's, and whether the command is quiet.
struct Session {
    quiet: bool,
    inner: crate::ops::Session,
}

impl std::ops::Deref for Session {
    type Target = crate::ops::Session;
    fn deref(&self) -> &crate::ops::Session {
        &self.inner
    }
}

/// The global flags as the library's session options.
fn session_options(g: &GlobalArgs) -> crate::ops::SessionOptions {
    crate::ops::SessionOptions {
        manifest_path: g.manifest_path.clone(),
        packages: g.packages.clone(),
        workspace: g.workspace,
        target: g.target.clone(),
    }
}

fn open(g: &GlobalArgs) -> Result<Session, crate::ops::Error> {
    let inner = crate::ops::Session::open(&session_options(g))?;
    if !g.quiet {
        for w in &inner.warnings {
            report::stderr_message("warning", w);
        }
    }
    Ok(Session {
        quiet: g.quiet,
        inner,
    })
}

/// A spinner on stderr for the scan (hidden when quiet or not a terminal).
fn scan_spinner(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.set_message("scanning the workspace");
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Scans the workspace and builds the whole plan, with a spinner. `use_cache`: read
/// and update the scan cache (off for `--dry-run`, which writes nothing).
fn full_plan(s: &Session, use_cache: bool) -> Plan {
    let bar = scan_spinner(s.quiet);
    let plan = s.inner.full_plan(use_cache, &|n| {
        bar.set_message(format!("scanning the workspace: {n} files"))
    });
    bar.finish_and_clear();
    plan
}

fn make_plan(s: &Session, targets: &[String]) -> Result<Plan> {
    let mut plan = full_plan(s, true);
    plan::select(&mut plan, targets, &s.knowledge)?;
    Ok(plan)
}

fn emit_plan(g: &GlobalArgs, plan: &Plan) -> Result<u8> {
    match g.message_format {
        MessageFormat::Json => report::print_json(plan)?,
        MessageFormat::Human => {
            if !plan.modules.is_empty() {
                report::print_stdout(&report::plan_human(plan, g.verbose > 0))?;
            }
        }
    }
    report::print_diagnostics(&plan.diagnostics, g.quiet);
    let errors = plan
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        report::stderr_message(
            "error",
            &format!(
                "{errors} file{} could not be scanned (listed above); the plan covers the rest",
                if errors == 1 { "" } else { "s" }
            ),
        );
        return Ok(EXIT_ERROR);
    }
    Ok(EXIT_OK)
}

fn cmd_plan(g: &GlobalArgs, targets: &[String]) -> Result<u8> {
    let s = open(g)?;
    let plan = make_plan(&s, targets)?;
    if plan.modules.is_empty() && !g.quiet {
        let what = if targets.is_empty() {
            format!("no ARM64 code found in {}", s.ws.root.display())
        } else {
            format!("no planned module matches {}", targets.join(" "))
        };
        report::stderr_message("note", &format!("{what}; nothing to port"));
    }
    emit_plan(g, &plan)
}

fn cmd_config(g: &GlobalArgs) -> Result<u8> {
    let s = open(g)?;
    match g.message_format {
        MessageFormat::Json => {
            let mut doc = serde_json::to_value(&s.config)?;
            doc["environment"] = crate::config::ENVIRONMENT
                .iter()
                .map(|(var, key)| serde_json::json!({"var": var, "setting": key}))
                .collect();
            report::print_json(&doc)?
        }
        MessageFormat::Human => report::print_stdout(&report::config_human(&s.config))?,
    }
    Ok(EXIT_OK)
}

/// The bin target to boot: `--bin`/`-p` if given, else the bin of the package that holds
/// the planned platform module (falling back to packages with an x86_64 linker script).
/// The serial-console patterns of a boot: the flags, else the workspace's
/// configuration, else the generic defaults.
fn console_patterns(c: &crate::config::ConsolePatterns, q: &QemuArgs) -> emulate::Patterns {
    crate::ops::boot::patterns(
        c,
        &q.success_pattern,
        &q.failure_pattern,
        q.trace_prefix.clone(),
    )
}

fn cmd_qemu(g: &GlobalArgs, q: &QemuArgs) -> Result<u8> {
    if !(q.timeout.is_finite() && q.timeout > 0.0 && q.timeout <= 86_400.0) {
        anyhow::bail!(
            "--timeout {}: give a number of seconds between 0 and 86400",
            q.timeout
        );
    }
    if q.success_pattern
        .iter()
        .chain(&q.failure_pattern)
        .any(|p| p.trim().is_empty())
    {
        anyhow::bail!("--success-pattern/--failure-pattern: a pattern must not be empty");
    }
    if q.trace_prefix
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        anyhow::bail!("--trace-prefix: the prefix must not be empty");
    }
    let s = open(g)?;
    let json = g.message_format == MessageFormat::Json;
    let emulator = match q.emulator {
        EmulatorArg::Qemu => emulate::Emulator::Qemu,
        EmulatorArg::Bochs => emulate::Emulator::Bochs,
    };
    if q.compare && emulator == emulate::Emulator::Qemu && !g.quiet {
        report::stderr_message(
            "warning",
            "--compare under QEMU: TCG has no VT-x, so the port prints no guest trace; use --emulator bochs",
        );
    }
    let options = crate::ops::boot::BootOptions {
        bin: q.bin.clone(),
        emulator,
        accel: match q.accel {
            AccelArg::Auto => emulate::Accel::Auto,
            AccelArg::Tcg => emulate::Accel::Tcg,
            AccelArg::Kvm => emulate::Accel::Kvm,
        },
        timeout: std::time::Duration::from_secs_f64(q.timeout),
        compare: q.compare,
        patterns: console_patterns(&s.config.console, q),
        echo: !json && !g.quiet,
        quiet: g.quiet,
    };
    let outcome = crate::ops::boot::run(&s, &options)?;
    if json {
        report::print_json(&outcome)?;
    } else {
        report::print_stdout(&report::boot_human(&outcome, g.quiet))?;
    }
    Ok(if outcome.success {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
