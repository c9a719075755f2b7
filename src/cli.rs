//! Command-line definitions (clap). Behaviour lives in `app.rs`.
//!
//! clap turns doc comments into `--help` text, so the flags carry their help as doc
//! comments and the rest (value enums, flattened groups) is left without: a doc comment
//! there would change what `--help` shows.
#![allow(missing_docs)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Examples:
  cargo eterna-port plan                 show the ARM64 → x86_64 port plan
  cargo eterna-port plan --message-format json
  cargo eterna-port                      port every planned module (offline engine without
                                         an API key)
  cargo eterna-port vmcs --dry-run       show the port of one component as a diff (aliases:
                                         vmcs, ept, apic, gic, vmexit, trap, serial)
  cargo eterna-port config               show the effective configuration
  cargo eterna-port qemu --emulator bochs --compare
                                         boot the port with VT-x and diff its guest trace
                                         against the ARM64 original's
  cargo eterna-port index                index code, docs and knowledge for retrieval
  cargo eterna-port search \"VMCS\" -n 5   hybrid (vector + full-text) search of the index
  cargo eterna-port status               store statistics
  cargo eterna-port ask \"how is the guest timer virtualized?\"
                                         answer from the index, citing file:line
  cargo eterna-port check --format github --junit target/eterna-port-junit.xml
                                         check the port; CI annotations and JUnit XML
  cargo eterna-port hook install         run `check` before each git commit

Exit status: 0 success; 1 the work was done and found problems; 2 usage, configuration
or environment error.";

/// Port an ARM64 (EL2) Rust hypervisor workspace to x86_64 (Intel VT-x).
#[derive(Debug, Parser)]
#[command(
    name = "cargo-eterna-port",
    bin_name = "cargo eterna-port",
    version,
    about,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Components, aliases (vmcs, ept, apic, …) or module paths to port
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    #[command(flatten)]
    pub port: PortFlags,
}

/// How `port` writes.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Port options")]
pub struct PortFlags {
    /// Porting backend [default: llm when an API key is set, else offline]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,

    /// Print a unified diff of what would change; write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Write even though the git working tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,

    /// Write even though the workspace is not in a git repository
    #[arg(long)]
    pub allow_no_vcs: bool,

    /// Overwrite generated files that were edited by hand (a backup is kept)
    #[arg(long)]
    pub force: bool,

    /// Agent tasks in flight at most (model requests at once)
    #[arg(long, short = 'j', value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,

    /// Ask the model again instead of reusing answers cached in the store
    #[arg(long)]
    pub no_cache: bool,

    /// Accept model answers that change a package's Cargo.toml or add a build.rs
    #[arg(long)]
    pub allow_deps: bool,

    /// Fix rounds of the cargo check loop after the port (rustfix, then the DebugAgent
    /// on the LLM backend, or offline the stub fixer: what does not compile for x86_64
    /// becomes a named stub); 0 skips the loop
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_fix_iterations: u32,

    /// When the toolchain has no standard library for the target (and cannot use
    /// `-Z build-std`), run the fix loop's checks for the host target instead (said on
    /// stderr); without it that is an error (exit 2)
    #[arg(long)]
    pub host_fallback: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Offline,
    Llm,
}

#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Path to the workspace's Cargo.toml
    #[arg(long, global = true, value_name = "PATH")]
    pub manifest_path: Option<PathBuf>,

    /// Only scan this package (repeatable)
    #[arg(short = 'p', long = "package", global = true, value_name = "SPEC")]
    pub packages: Vec<String>,

    /// Scan every workspace member, even from inside one member's directory
    #[arg(long, global = true, conflicts_with = "packages")]
    pub workspace: bool,

    /// x86_64 target triple to port to [default: x86_64-unknown-none]
    #[arg(long, global = true, value_name = "TRIPLE")]
    pub target: Option<String>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human, value_name = "FMT")]
    pub message_format: MessageFormat,

    /// More output (-vv for debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Coloring [default: auto, or $CARGO_TERM_COLOR]
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    pub color: Option<ColorWhen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show which ARM64 modules map to which x86_64 modules, in dependency order
    Plan(TargetArgs),
    /// Port modules to x86_64 (the default when TARGETs are given)
    Port(PortArgs),
    /// Show the effective configuration and where each value comes from
    Config,
    /// Index the workspace's code and docs and the porting knowledge for retrieval
    Index(IndexArgs),
    /// Search the index (vector k-NN and BM25, fused by reciprocal rank)
    Search(SearchArgs),
    /// Show the store: its file, schema, embedder and row counts
    Status,
    /// Answer a question about the workspace and its port from the index, with citations
    #[command(after_help = ASK_AFTER_HELP)]
    Ask(AskArgs),
    /// Build the x86_64 port and boot it (QEMU, or Bochs with VT-x); judge the serial console
    #[command(after_help = QEMU_AFTER_HELP)]
    Qemu(QemuArgs),
    /// Check the port target with cargo check (changes nothing); errors per module
    #[command(after_help = CHECK_AFTER_HELP)]
    Check(CheckArgs),
    /// Install or remove the git pre-commit hook that runs `check`
    #[command(subcommand)]
    Hook(HookCommand),
    /// Serve the REST API, live run events and the dashboard for this workspace
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
}

const SERVE_AFTER_HELP: &str = "\
Routes: GET / (status), /swarm/health, POST /swarm/orchestrate, /agent/{type}/execute,
/eterna/port, /eterna/port/bulk, GET /runs, /runs/{id}, POST /runs/{id}/cancel,
GET /runs/{id}/events (server-sent events), /runs/{id}/ws (websocket), /plan, /search,
/openapi.json, /docs (API docs), /ui (dashboard). Requests are dry runs unless they send
\"write\": true; one writing run at a time (409 otherwise).
Auth: with a token (--token-file, or ETERNA_PORT_SERVE_TOKEN) every route but GET / needs
`Authorization: Bearer <token>` (or ?token=). Binding anything but loopback needs a token.
Runs and their events are kept in the store: a restarted server lists them, and marks a
run it cut off `interrupted`. Ctrl-C cancels the runs in progress and waits for them.
Example: cargo eterna-port serve --bind 127.0.0.1:8000, then open http://127.0.0.1:8000/ui";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port, said on stderr and, with
    /// `--message-format json`, on stdout)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub bind: std::net::SocketAddr,
    /// File holding the bearer token requests must send (beats ETERNA_PORT_SERVE_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
    /// Origin a browser page may call the API from (CORS; repeatable)
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Largest request body in bytes (larger ones get 413)
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub body_limit: usize,
}

const CHECK_AFTER_HELP: &str = "\
Toolchain: the workspace's rust-toolchain.toml (or rust-toolchain) pins the toolchain
cargo check runs with (an explicit RUSTUP_TOOLCHAIN or `cargo +tc` wins, said on stderr).
Target: without its rust-std, a nightly with rust-src checks with -Z build-std=core,alloc;
otherwise exit 2 with the `rustup target add` command. --host-fallback checks the host
target instead (said on stderr); nothing else ever does.
Exit status: 0 the port checks without errors (warnings allowed) and every planned module
was compiled; 1 errors, a failed build script, or a module `not compiled`; 2 setup error
(cargo not runnable, bad manifest, pinned toolchain or target std missing, unwritable
--junit path).
CI: cargo eterna-port check --format github --junit target/eterna-port-junit.xml";

/// Output of `check` besides JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// A per-module summary
    Human,
    /// GitHub Actions annotations (::error file=…,line=…::…), then the summary
    Github,
}

#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Components, aliases (vmcs, ept, apic, …) or module paths to report; all when omitted
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Report format (`--message-format json` gives one JSON document instead)
    #[arg(long, value_enum, default_value_t = CheckFormat::Human, value_name = "FMT")]
    pub format: CheckFormat,

    /// Also write a JUnit XML report (one test case per planned module) to PATH
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Exit 0 at once unless a file staged in git belongs to a planned module (for hooks)
    #[arg(long)]
    pub staged: bool,

    /// When the toolchain has no standard library for the target (and cannot use
    /// `-Z build-std`), check the host target instead (said on stderr); without it
    /// that is an error (exit 2) naming the `rustup target add` command
    #[arg(long)]
    pub host_fallback: bool,
}

#[derive(Debug, Subcommand, Clone)]
pub enum HookCommand {
    /// Write .git/hooks/pre-commit running `cargo-eterna-port check --staged`
    Install {
        /// Replace an existing pre-commit hook that is not ours (kept as pre-commit.bak)
        #[arg(long)]
        force: bool,
    },
    /// Remove the pre-commit hook if it is ours (restoring pre-commit.bak if any)
    Uninstall,
}

#[derive(Debug, Args, Clone)]
pub struct IndexArgs {
    /// Drop and rebuild the derived tables (chunks, vectors, full-text index) first;
    /// artifacts, tasks, runs and the LLM cache are kept
    #[arg(long)]
    pub rebuild_index: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChunkKind {
    Code,
    Doc,
    Knowledge,
    Artifact,
}

#[derive(Debug, Args, Clone)]
pub struct SearchArgs {
    /// What to look for (words, identifiers, register names)
    #[arg(value_name = "QUERY")]
    pub query: String,

    /// Number of results
    #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = 10)]
    pub limit: usize,

    /// Only chunks of this kind
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<ChunkKind>,

    /// Only chunks of this component (or alias: vmcs, ept, gic, …)
    #[arg(long, value_name = "COMPONENT")]
    pub component: Option<String>,

    /// Only chunks whose source path starts with this (workspace-relative; `@knowledge/`
    /// for the built-in knowledge)
    #[arg(long = "path", value_name = "PREFIX")]
    pub path_prefix: Option<String>,

    /// Only code of this architecture, plus arch-neutral code, docs and knowledge
    /// (aarch64, riscv64, loongarch64, x86_64, other); default: every architecture,
    /// each result showing its own
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,

    /// Only the query's own words: do not add the identifiers of the concepts it names
    /// ("exception return" → eret, ELR_EL2, SPSR_EL2)
    #[arg(long)]
    pub literal: bool,
}

const ASK_AFTER_HELP: &str = "\
The index is brought up to date first (incremental), then searched with the question.
Offline (no API key, or --backend offline) the answer is the best passages with their
file:line. With a model, it answers from those passages only, citing them as [n], and
says so when they do not answer the question.
Exit status: 0 passages found (and the model answered); 1 nothing found, or the model
said the passages do not answer it; 2 usage or setup error.
Example: cargo eterna-port ask \"how are virtual interrupts injected into the guest?\"";

#[derive(Debug, Args, Clone)]
pub struct AskArgs {
    /// The question, in words
    #[arg(value_name = "QUESTION")]
    pub question: String,

    /// Passages to retrieve (and cite)
    #[arg(short = 'n', long = "limit", value_name = "N", default_value_t = 5)]
    pub limit: usize,

    /// Answer with the model or with the passages only [default: llm when an API key is
    /// set, else offline]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
}

const QEMU_AFTER_HELP: &str = "\
Verdicts. The workspace says what its console means, in [workspace.metadata.eterna-port]
(or [package.metadata.eterna-port]; see `cargo eterna-port config`):
  success-patterns = [\"…\"]      serial text meaning success
  failure-patterns = [\"…\"]      serial text meaning failure (replaces `panicked at`)
  exit-code-pattern = \"…\"       a line prefix followed by a decimal exit code: 0 is
                                success, anything else failure; the line closes the trace
  vmx-unavailable-pattern = \"…\" booted, but the CPU has no VT-x: the VMX-unavailable
                                verdict (success)
  trace-prefix = \"…\"            prefix of the guest-visible trace lines --compare diffs
Without them only generic signals decide. Success: QEMU isa-debug-exit (port 0xf4; the
guest writes v, QEMU exits with (v << 1) | 1): status 1 (v = 0) is success, 33 (v = 0x10)
is VMX unavailable, any other odd status is the guest's failure code v; Bochs powered off
by the guest (\"Shutdown\" to port 0x8900, or ACPI S5). QEMU status 0 (a power-off, or a
reset under -no-reboot) is success only after a success line. Failure: `panicked at`, an
`unimplemented!(\"eterna-port: …\")` stub (\"boots up to <item>\"), a triple fault, another
exit status, the timeout: exit 1 with the last serial lines. --compare without a
trace-prefix is a usage error (exit 2). Files: target/eterna-port/serial.log and qemu.log
(target/eterna-port/serial-aarch64.log with --compare; Bochs work files in
target/eterna-port/bochs/).";

/// Emulator for `qemu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmulatorArg {
    /// qemu-system-x86_64 (TCG has no VMX: the port reports VMX unavailable)
    Qemu,
    /// Bochs with VMX (corei7_skylake_x), booting a GRUB ISO: runs the guest
    Bochs,
}

/// QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    /// KVM when /dev/kvm is usable, else TCG
    Auto,
    Tcg,
    Kvm,
}

#[derive(Debug, Args, Clone)]
pub struct QemuArgs {
    /// Emulator to boot the port in
    #[arg(long, value_enum, default_value_t = EmulatorArg::Qemu, value_name = "EMULATOR")]
    pub emulator: EmulatorArg,

    /// QEMU accelerator
    #[arg(long, value_enum, default_value_t = AccelArg::Auto, value_name = "ACCEL")]
    pub accel: AccelArg,

    /// Seconds before the emulator is killed and the boot reported as failed
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,

    /// Also boot the ARM64 original (qemu-system-aarch64) and diff the guest-visible
    /// traces (needs a trace prefix: `trace-prefix` in the metadata, or --trace-prefix)
    #[arg(long)]
    pub compare: bool,

    /// Prefix of guest-visible trace lines (replaces the metadata's `trace-prefix`)
    #[arg(long, value_name = "TEXT")]
    pub trace_prefix: Option<String>,

    /// Serial text that means success (repeatable; replaces the metadata's
    /// `success-patterns`)
    #[arg(long, value_name = "TEXT")]
    pub success_pattern: Vec<String>,

    /// Serial text that means failure (repeatable; replaces the metadata's
    /// `failure-patterns` and the default `panicked at`)
    #[arg(long, value_name = "TEXT")]
    pub failure_pattern: Vec<String>,

    /// Binary target to boot [default: the bin of the package with the platform module]
    #[arg(long, value_name = "NAME")]
    pub bin: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PortArgs {
    /// Components, aliases (vmcs, ept, apic, …) or module paths; all when omitted
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,

    #[command(flatten)]
    pub flags: PortFlags,
}

#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Components, aliases (vmcs, ept, apic, …) or module paths; all when omitted
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_positional_is_a_port_target() {
        let cli = Cli::try_parse_from(["cargo-eterna-port", "vmcs", "ept"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.targets, ["vmcs", "ept"]);
        let cli = Cli::try_parse_from(["x", "plan", "--message-format", "json", "gic"]).unwrap();
        match cli.command {
            Some(Command::Plan(t)) => assert_eq!(t.targets, ["gic"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.global.message_format, MessageFormat::Json);
    }

    #[test]
    fn store_commands_parse() {
        let cli =
            Cli::try_parse_from(["x", "search", "VMCS", "-n", "3", "--kind", "knowledge"]).unwrap();
        match cli.command {
            Some(Command::Search(a)) => {
                assert_eq!((a.query.as_str(), a.limit), ("VMCS", 3));
                assert_eq!(a.kind, Some(ChunkKind::Knowledge));
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["x", "index", "--rebuild-index"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Index(IndexArgs {
                rebuild_index: true
            }))
        ));
    }
}
