//! Command dispatch: turns parsed arguments into work and an exit code.

mod check;
mod draft_check;
mod fix;
mod hook;
mod memory;
mod port;

use anyhow::Result;

use std::collections::BTreeSet;

use crate::cli::{
    AccelArg, Cli, ColorWhen, Command, EmulatorArg, GlobalArgs, MessageFormat, QemuArgs,
};
use crate::config::{process_env, Config, Flags};
use crate::emulate;
use crate::knowledge::Knowledge;
use crate::plan::{self, Plan};
use crate::report;
use crate::workspace::{scan_packages, Diagnostic, ScanLimits, ScannedModule, Severity, Workspace};

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
        Some(Command::Qemu(q)) => cmd_qemu(&g, &q),
        Some(Command::Check(a)) => check::cmd_check(&g, &a),
        Some(Command::Hook(h)) => hook::cmd_hook(&g, &h),
        None => port::cmd_port(&g, &cli.targets, &cli.port),
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
    let started = std::time::Instant::now();
    // Parse the knowledge data while cargo metadata runs.
    let (ws, knowledge) = std::thread::scope(|scope| {
        let knowledge = scope.spawn(Knowledge::embedded);
        let ws = Workspace::load(g.manifest_path.as_deref(), &g.packages, g.workspace);
        let knowledge = knowledge
            .join()
            .unwrap_or(Err(crate::knowledge::KnowledgeError::Panicked));
        (ws, knowledge)
    });
    let ws = ws?;
    let knowledge = knowledge?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "cargo metadata and knowledge loaded"
    );
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
    Ok(Session {
        quiet: g.quiet,
        ws,
        config,
        knowledge,
    })
}

/// Scans the workspace, with a spinner on stderr when it is a terminal. `use_cache`:
/// read and update the scan cache (off for `--dry-run`, which writes nothing).
fn scan(s: &Session, use_cache: bool) -> (Vec<ScannedModule>, Vec<Diagnostic>) {
    let limits = ScanLimits {
        max_file_size: s.config.max_file_size.value,
    };
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
    let started = std::time::Instant::now();
    let cache = s.ws.target_dir.join("eterna-port").join("scan-cache");
    let cache = use_cache.then_some(cache.as_path());
    let scanned = scan_packages(&s.ws, &s.knowledge, limits, cache, &|n| {
        bar.set_message(format!("scanning the workspace: {n} files"))
    });
    bar.finish_and_clear();
    tracing::debug!(
        files = scanned.0.len(),
        ms = started.elapsed().as_millis() as u64,
        "workspace scanned"
    );
    scanned
}

/// Scans the workspace and builds the whole plan.
fn full_plan(s: &Session, use_cache: bool) -> Plan {
    let (modules, diagnostics) = scan(s, use_cache);
    let started = std::time::Instant::now();
    let mut plan = plan::build(
        &s.ws.root,
        &s.config.target.value,
        &modules,
        diagnostics,
        &s.knowledge,
    );
    plan.arm_dependencies = plan::arm_dependencies(s.ws.packages(), &modules, &plan, &s.knowledge);
    tracing::debug!(
        planned = plan.modules.len(),
        ms = started.elapsed().as_millis() as u64,
        "plan built"
    );
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
fn boot_target(s: &Session, g: &GlobalArgs, bin: Option<&str>) -> Result<emulate::BootTarget> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    if g.packages.is_empty() {
        let plan = full_plan(s, true);
        names.extend(
            plan.modules
                .iter()
                .filter(|m| m.component == "platform")
                .map(|m| m.package.clone()),
        );
        if names.is_empty() {
            names.extend(
                s.ws.packages()
                    .filter(|p| {
                        p.manifest_path
                            .parent()
                            .is_some_and(|d| d.join(emulate::LINKER_SCRIPT).is_file())
                    })
                    .map(|p| p.name.to_string()),
            );
        }
    } else {
        names.extend(s.ws.packages().map(|p| p.name.to_string()));
    }
    let mut found = Vec::new();
    for p in s.ws.packages().filter(|p| names.contains(p.name.as_str())) {
        let Some(dir) = p.manifest_path.parent() else {
            continue;
        };
        for t in p.targets.iter().filter(|t| t.is_bin()) {
            if bin.map_or(true, |b| b == t.name) {
                found.push(emulate::BootTarget {
                    package: p.name.to_string(),
                    bin: t.name.clone(),
                    crate_dir: dir.as_std_path().to_path_buf(),
                });
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 if names.is_empty() => anyhow::bail!(
            "no package of {} has a platform module or an x86_64 layer ({}); run `cargo eterna-port` first to port, or pass -p",
            s.ws.root.display(),
            emulate::LINKER_SCRIPT
        ),
        0 => anyhow::bail!(
            "no bin target{} in {}; pass --bin NAME",
            bin.map(|b| format!(" named `{b}`")).unwrap_or_default(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        ),
        _ => anyhow::bail!(
            "several bin targets could be the hypervisor ({}); pick one with -p PACKAGE and --bin NAME",
            found
                .iter()
                .map(|t| format!("{}/{}", t.package, t.bin))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The port's boot module (if the plan has one), and why there is nothing to boot yet:
/// the target of the package's planned arch root (or, without one, of any planned
/// module) is missing, so the workspace is not ported (a usage error).
fn boot_layer(
    s: &Session,
    target: &emulate::BootTarget,
) -> (Option<std::path::PathBuf>, Option<String>) {
    let plan = full_plan(s, true);
    let ours: Vec<_> = plan
        .modules
        .iter()
        .filter(|m| m.package == target.package)
        .collect();
    let has_root = ours.iter().any(|m| m.component == "platform");
    let unported = ours
        .iter()
        .filter(|m| !has_root || m.component == "platform")
        .find(|m| m.status == plan::Status::New)
        .map(|m| {
            format!(
                "{} has no x86_64 layer yet ({} is missing): run `cargo eterna-port` first to port",
                target.package, m.target
            )
        });
    let boot = ours
        .iter()
        .find(|m| m.component == "boot")
        .map(|m| s.ws.root.join(&m.target));
    (boot, unported)
}

/// The serial-console patterns of a boot: the flags, else the workspace's
/// configuration, else the generic defaults.
fn console_patterns(c: &crate::config::ConsolePatterns, q: &QemuArgs) -> emulate::Patterns {
    let from = |flag: &[String], setting: &Option<crate::config::Setting<Vec<String>>>| {
        if flag.is_empty() {
            setting
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default()
        } else {
            flag.to_vec()
        }
    };
    let value = |s: &Option<crate::config::Setting<String>>| s.as_ref().map(|s| s.value.clone());
    emulate::Patterns {
        trace_prefix: q.trace_prefix.clone().or_else(|| value(&c.trace_prefix)),
        exit_code: value(&c.exit_code_pattern),
        vmx_unavailable: value(&c.vmx_unavailable_pattern),
        ..emulate::Patterns::new(
            &from(&q.success_pattern, &c.success_patterns),
            &from(&q.failure_pattern, &c.failure_patterns),
        )
    }
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
    let target = boot_target(&s, g, q.bin.as_deref())?;
    let (boot_module, unported) = boot_layer(&s, &target);
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
    let req = emulate::Request {
        root: &s.ws.root,
        target_dir: &s.ws.target_dir,
        target: &target,
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
        boot_files: emulate::WorkspaceBootFiles {
            linker_script: s
                .config
                .boot_files
                .linker_script
                .as_ref()
                .map(|f| f.value.clone()),
            grub_cfg: s
                .config
                .boot_files
                .grub_cfg
                .as_ref()
                .map(|f| f.value.clone()),
            bochsrc: s
                .config
                .boot_files
                .bochsrc
                .as_ref()
                .map(|f| f.value.clone()),
        },
        boot_module,
        unported,
    };
    let outcome = match emulate::boot(&req) {
        Ok(r) => r,
        Err(e) => {
            report::stderr_message("error", &e.to_string());
            return Ok(e.exit_code());
        }
    };
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
