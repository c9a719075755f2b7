//! Command dispatch: turns parsed arguments into work and an exit code.

mod memory;

use anyhow::Result;

use crate::cli::{Cli, ColorWhen, Command, GlobalArgs, MessageFormat};
use crate::config::{process_env, Config, Flags};
use crate::knowledge::Knowledge;
use crate::plan::{self, Plan};
use crate::report;
use crate::workspace::{scan_packages, ScanLimits, Severity, Workspace};

/// Exit codes (DESIGN.md): success, problems found, usage/configuration/environment error.
pub const EXIT_OK: u8 = 0;
pub const EXIT_PROBLEMS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Runs the command line and returns the process exit code. Never panics on bad input:
/// every error is reported on stderr with exit code 2.
pub fn run(cli: Cli) -> u8 {
    setup_output(&cli.global);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            report::stderr_message("error", &format!("{err:#}"));
            EXIT_ERROR
        }
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
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("ETERNA_PORT_LOG").unwrap_or_else(|_| {
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
        Some(Command::Port(t)) => cmd_port(&g, &t.targets),
        Some(Command::Config) => cmd_config(&g),
        Some(Command::Index(a)) => memory::cmd_index(&g, &a),
        Some(Command::Search(a)) => memory::cmd_search(&g, &a),
        Some(Command::Status) => memory::cmd_status(&g),
        None => cmd_port(&g, &cli.targets),
    }
}

/// Everything a command needs about the workspace.
struct Session {
    quiet: bool,
    ws: Workspace,
    config: Config,
    knowledge: Knowledge,
}

fn open(g: &GlobalArgs) -> Result<Session> {
    let ws = Workspace::load(g.manifest_path.as_deref(), &g.packages)?;
    let mut warnings = Vec::new();
    let flags = Flags {
        target: g.target.clone(),
    };
    let config = Config::resolve(&ws, &flags, &process_env, &mut warnings)?;
    if !g.quiet {
        for w in warnings {
            report::stderr_message("warning", &w);
        }
    }
    let knowledge = Knowledge::embedded()?;
    Ok(Session {
        quiet: g.quiet,
        ws,
        config,
        knowledge,
    })
}

fn make_plan(s: &Session, targets: &[String]) -> Result<Plan> {
    let limits = ScanLimits {
        max_file_size: s.config.max_file_size.value,
    };
    // A spinner on stderr, drawn only when stderr is a terminal.
    let bar = if s.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message("scanning the workspace");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    };
    let (modules, diagnostics) = scan_packages(&s.ws, &s.knowledge, limits, &|n| {
        bar.set_message(format!("scanning the workspace: {n} files"))
    });
    bar.finish_and_clear();
    let mut plan = plan::build(
        &s.ws.root,
        &s.config.target.value,
        &modules,
        diagnostics,
        &s.knowledge,
    );
    tracing::debug!(
        scanned = modules.len(),
        planned = plan.modules.len(),
        "workspace scanned"
    );
    plan::select(&mut plan, targets, &s.knowledge)?;
    Ok(plan)
}

fn emit_plan(g: &GlobalArgs, plan: &Plan) -> Result<u8> {
    match g.message_format {
        MessageFormat::Json => {
            let mut text = serde_json::to_string_pretty(plan)?;
            text.push('\n');
            report::print_stdout(&text)?;
        }
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

fn cmd_port(g: &GlobalArgs, targets: &[String]) -> Result<u8> {
    let s = open(g)?;
    let plan = make_plan(&s, targets)?;
    let code = emit_plan(g, &plan)?;
    if code != EXIT_OK {
        return Ok(code);
    }
    if plan.modules.is_empty() {
        if !g.quiet {
            report::stderr_message("note", "nothing to port");
        }
        return Ok(EXIT_OK);
    }
    report::stderr_message(
        "warning",
        &format!(
            "porting is not available in this version yet: the plan above lists the {} module(s) it will port; nothing was written",
            plan.modules.len()
        ),
    );
    Ok(EXIT_PROBLEMS)
}

fn cmd_config(g: &GlobalArgs) -> Result<u8> {
    let s = open(g)?;
    match g.message_format {
        MessageFormat::Json => {
            let mut text = serde_json::to_string_pretty(&s.config)?;
            text.push('\n');
            report::print_stdout(&text)?;
        }
        MessageFormat::Human => report::print_stdout(&report::config_human(&s.config))?,
    }
    Ok(EXIT_OK)
}
