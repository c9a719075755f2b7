//! Boots the port: builds the x86_64 image with the ported boot code and the
//! workspace's linker script (else the tool's generic one, see [`image`]), checks that
//! a loader can start it, packages it (QEMU `-kernel` takes the multiboot ELF directly
//! — its header uses the a.out kludge; Bochs boots a GRUB ISO made by
//! `grub-mkrescue`), runs the emulator with a bounded timeout, judges the serial
//! console (a port that reaches an `eterna-port` stub "boots up to" that item), and
//! with `compare` boots the ARM64 original under qemu-system-aarch64 and diffs the two
//! guest-visible traces (the lines starting with the configured `trace-prefix`).

pub mod image;
pub mod process;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

pub use image::{BootFile, LINKER_SCRIPT};
pub use verdict::{Emulator, Judgement, Patterns, Verdict};

/// The metadata key naming the prefix of guest-visible trace lines.
pub const TRACE_PREFIX_KEY: &str = "trace-prefix";

/// RUSTFLAGS the x86_64 image needs (absolute addresses for the multiboot header and
/// the 32-bit entry), before `-C link-arg=-T<linker script>`.
pub const X86_RUSTFLAGS: &str = "-C relocation-model=static";
/// Default runner of the ARM64 original (the fixture's `.cargo/config.toml`).
pub const DEFAULT_AARCH64_RUNNER: &str = "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max -smp 2 -m 128M -nographic -no-reboot -semihosting-config enable=off -kernel";

#[derive(Debug, thiserror::Error)]
/// Why a boot could not be tried.
pub enum EmulateError {
    /// An emulator or image tool is not installed.
    #[error("`{tool}` not found on PATH; install it: apt-get install {package}")]
    MissingTool {
        /// The program.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A file an emulator needs (a BIOS image) is missing.
    #[error("{path} is missing; install it: apt-get install {package}")]
    MissingFile {
        /// The file.
        path: String,
        /// The Debian package that has it.
        package: String,
    },
    /// Bad input: what is wrong and what to do.
    #[error("{0}")]
    Usage(String),
    /// The image did not build (the compiler's errors are on stderr above).
    #[error("`{command}` failed (status {status}); its errors are above")]
    Build {
        /// The cargo command.
        command: String,
        /// Its exit status.
        status: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        #[source]
        /// The I/O error.
        source: std::io::Error,
    },
}

impl EmulateError {
    /// Exit code: 1 when the work was done and failed (a build error), else 2.
    pub fn exit_code(&self) -> u8 {
        match self {
            EmulateError::Build { .. } => 1,
            _ => 2,
        }
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmulateError {
    let what = what.into();
    move |source| EmulateError::Io { what, source }
}

/// The hypervisor binary to boot.
#[derive(Debug, Clone)]
pub struct BootTarget {
    /// The package that holds the bin.
    pub package: String,
    /// The bin target.
    pub bin: String,
    /// The package's directory.
    pub crate_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// QEMU's accelerator.
pub enum Accel {
    /// KVM when `/dev/kvm` is usable, else TCG.
    Auto,
    /// Software emulation (no VT-x for guests).
    Tcg,
    /// Hardware virtualisation.
    Kvm,
}

/// The boot files the workspace's configuration names (absolute paths); each absent
/// one is the tool's own (see [`image`]).
#[derive(Debug, Clone, Default)]
pub struct WorkspaceBootFiles {
    /// `x86_64-linker-script`.
    pub linker_script: Option<PathBuf>,
    /// `x86_64-grub-cfg`.
    pub grub_cfg: Option<PathBuf>,
    /// `x86_64-bochsrc`.
    pub bochsrc: Option<PathBuf>,
}

/// Everything one `qemu` command needs.
pub struct Request<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// Cargo's target directory (images and logs go under it).
    pub target_dir: &'a Path,
    /// The bin to boot.
    pub target: &'a BootTarget,
    /// QEMU or Bochs.
    pub emulator: Emulator,
    /// QEMU's accelerator.
    pub accel: Accel,
    /// How long the guest may run.
    pub timeout: Duration,
    /// Also boot the ARM64 original and diff the traces.
    pub compare: bool,
    /// The serial-console patterns.
    pub patterns: Patterns,
    /// Echo serial consoles and cargo's progress (human output).
    pub echo: bool,
    /// Only errors on stderr.
    pub quiet: bool,
    /// The workspace's own linker script and boot configurations.
    pub boot_files: WorkspaceBootFiles,
    /// The port's boot module (named when the image turns out not to be bootable).
    pub boot_module: Option<PathBuf>,
    /// Why there is nothing to boot yet (the x86_64 layer is missing): a usage error,
    /// reported after the emulators are found.
    pub unported: Option<String>,
}

/// One boot's result.
#[derive(Debug, Clone, Serialize)]
pub struct BootRun {
    /// The emulator that ran.
    pub emulator: Emulator,
    /// QEMU's accelerator, as used.
    pub accel: Option<String>,
    /// The emulator's exit status (`null` when it was stopped or killed).
    pub status: Option<i32>,
    /// How the run ended (`exited`, `stopped-after-verdict`, `timed-out`, or
    /// `not-bootable` when no loader could start the image).
    pub ending: String,
    /// Success, VT-x unavailable, or failure.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    /// The item whose `unimplemented!("eterna-port: …")` stub the boot reached.
    pub boots_up_to: Option<String>,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// The guest-visible trace lines (with the workspace's trace prefix).
    pub trace: Vec<String>,
    /// The whole serial console, as a file.
    pub serial_log: PathBuf,
    /// Its last lines.
    pub serial_tail: Vec<String>,
    /// The image booted.
    pub image: PathBuf,
}

impl BootRun {
    /// Whether the boot counts as passed (anything but a failure).
    pub fn passed(&self) -> bool {
        self.verdict != Verdict::Failure
    }
}

/// `--compare`: the ARM64 original's run and the trace diff.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The ARM64 original's run.
    pub original: BootRun,
    /// The traces are the same.
    pub identical: bool,
    /// Unified diff original → port; empty when identical.
    pub diff: String,
}

/// The JSON verdict document of `qemu`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The package booted.
    pub package: String,
    /// The bin booted.
    pub bin: String,
    /// The linker script the x86_64 image was linked with, and where it came from.
    pub linker_script: BootFile,
    /// Symbols the image left undefined (at address 0): with the generic layout, the
    /// linker-script symbols the workspace's code expects.
    pub undefined_symbols: Vec<String>,
    /// The x86_64 port's run.
    pub port: BootRun,
    /// `--compare`: the original's run and the diff.
    pub compare: Option<Comparison>,
    /// The port's boot passed (and, with `--compare`, the traces are identical).
    pub success: bool,
}

/// Tools (and the Debian package that has them) each mode needs.
fn required_tools(
    emulator: Emulator,
    compare: bool,
    aarch64_program: &str,
) -> Vec<(String, &'static str)> {
    let mut tools: Vec<(String, &'static str)> = Vec::new();
    match emulator {
        Emulator::Qemu | Emulator::QemuAarch64 => {
            tools.push(("qemu-system-x86_64".into(), "qemu-system-x86"))
        }
        Emulator::Bochs => {
            tools.push(("bochs".into(), "bochs bochsbios vgabios bochs-term"));
            tools.push(("grub-mkrescue".into(), "grub-pc-bin grub-common"));
            tools.push(("xorriso".into(), "xorriso"));
            tools.push(("mformat".into(), "mtools"));
            tools.push(("script".into(), "bsdutils"));
        }
    }
    if compare {
        tools.push((aarch64_program.to_string(), "qemu-system-arm"));
    }
    tools
}

/// `tool` on PATH (or an existing path when it has a slash).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        let p = PathBuf::from(tool);
        return p.is_file().then_some(p);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Fails with the Debian package to install for the first missing tool or data file.
pub fn check_tools(
    emulator: Emulator,
    compare: bool,
    aarch64_program: &str,
) -> Result<(), EmulateError> {
    for (tool, package) in required_tools(emulator, compare, aarch64_program) {
        if find_tool(&tool).is_none() {
            return Err(EmulateError::MissingTool {
                tool,
                package: package.to_string(),
            });
        }
    }
    if emulator == Emulator::Bochs {
        for (path, package) in [
            ("/usr/share/bochs/BIOS-bochs-latest", "bochsbios"),
            ("/usr/share/vgabios/vgabios.bin", "vgabios"),
            ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
        ] {
            if !Path::new(path).exists() {
                return Err(EmulateError::MissingFile {
                    path: path.to_string(),
                    package: package.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The runner command of the ARM64 original: `[target.aarch64-unknown-none] runner`
/// from the workspace's `.cargo/config.toml`, else [`DEFAULT_AARCH64_RUNNER`].
pub fn aarch64_runner(root: &Path) -> Result<Vec<String>, EmulateError> {
    let default = || {
        DEFAULT_AARCH64_RUNNER
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let mut found = None;
    for name in [".cargo/config.toml", ".cargo/config"] {
        let path = root.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let value: toml::Value = toml::from_str(&text).map_err(|e| {
            EmulateError::Usage(format!(
                "{}: not valid TOML ({e}); fix it or remove the file",
                path.display()
            ))
        })?;
        let runner = value
            .get("target")
            .and_then(|t| t.get("aarch64-unknown-none"))
            .and_then(|t| t.get("runner"));
        found = match runner {
            Some(toml::Value::String(s)) => Some(s.split_whitespace().map(String::from).collect()),
            Some(toml::Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect::<Vec<String>>(),
            ),
            _ => None,
        };
        break;
    }
    Ok(found
        .filter(|r: &Vec<String>| !r.is_empty())
        .unwrap_or_else(default))
}

/// The linker script of the x86_64 image: the one the configuration names (it must
/// exist), else `linker-x86_64.ld` in the crate directory, else the tool's generic
/// multiboot layout written to `target/eterna-port/`.
pub fn linker_script(req: &Request<'_>) -> Result<BootFile, EmulateError> {
    if let Some(path) = &req.boot_files.linker_script {
        if !path.is_file() {
            return Err(EmulateError::Usage(format!(
                "the linker script {} named by `x86_64-linker-script` in the workspace's [workspace.metadata.eterna-port] or [package.metadata.eterna-port] is missing; fix the path or remove the key to use the tool's generic one",
                path.display()
            )));
        }
        return Ok(BootFile {
            path: path.clone(),
            origin: image::Origin::Config,
        });
    }
    let in_crate = req.target.crate_dir.join(LINKER_SCRIPT);
    if in_crate.is_file() {
        return Ok(BootFile {
            path: in_crate,
            origin: image::Origin::CrateDir,
        });
    }
    let path = state_dir(req)?.join(LINKER_SCRIPT);
    std::fs::write(&path, image::GENERIC_LINKER_SCRIPT)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(BootFile {
        path,
        origin: image::Origin::Generated,
    })
}

/// Builds `target` for `triple` in release mode (x86_64 with `linker`); returns the ELF.
pub fn build(
    req: &Request<'_>,
    triple: &str,
    linker: Option<&BootFile>,
) -> Result<PathBuf, EmulateError> {
    let t = req.target;
    // escargot assembles `cargo build --message-format=json` and parses its messages.
    // Exception (documented): a workspace that pins a toolchain (rust-toolchain.toml)
    // is built by the rustup proxy with RUSTUP_TOOLCHAIN set, which escargot's
    // `CargoBuild` (always `$CARGO`) cannot express; its arguments are the same and
    // its messages go through the same escargot parser.
    let pinned = crate::toolchain::Toolchain::for_workspace(req.root)
        .ok()
        .filter(|tc| tc.rustup_toolchain.is_some());
    let mut cmd = match pinned {
        Some(tc) => {
            let mut c = tc.cargo();
            c.args([
                "build",
                "--message-format=json",
                "--release",
                "--target",
                triple,
            ])
            .args(["-p", &t.package, "--bin", &t.bin])
            .arg("--target-dir")
            .arg(req.target_dir);
            c
        }
        None => escargot::CargoBuild::new()
            .release()
            .target(triple)
            .package(&t.package)
            .bin(&t.bin)
            .target_dir(req.target_dir)
            .into_command(),
    };
    // The build runs in the workspace, so its `.cargo/config.toml` applies.
    cmd.current_dir(req.root).stdin(Stdio::null());
    let echo = !req.quiet && req.echo;
    if !echo {
        cmd.arg("--quiet");
    }
    if let Some(linker) = linker.filter(|_| triple.starts_with("x86_64")) {
        let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        if !flags.trim().is_empty() {
            flags.push(' ');
        }
        flags.push_str(&format!(
            "{X86_RUSTFLAGS} -C link-arg=-T{}",
            linker.path.display()
        ));
        // The generic layout cannot define the symbols a workspace's own linker
        // script would (section bounds, stacks), and a boot module that is still a
        // stub defines none of its assembly's: link anyway, so the image boots as far
        // as it can (or is reported as not bootable); the report names what stayed
        // undefined.
        let stubbed_boot = req
            .boot_module
            .as_ref()
            .and_then(|m| std::fs::read_to_string(m).ok())
            .is_some_and(|text| verdict::find_stub(&text).is_some());
        if linker.origin == image::Origin::Generated || stubbed_boot {
            flags.push_str(" -C link-arg=--warn-unresolved-symbols");
        }
        // RUSTFLAGS (with the linker script) is an environment setting escargot has no
        // builder method for; it is set on the command escargot assembled.
        cmd.env("RUSTFLAGS", flags);
    }
    let shown = format!(
        "cargo build --release --target {triple} -p {} --bin {}",
        t.package, t.bin
    );
    run_build(cmd, &shown, &t.bin)
}

/// Runs a `cargo build --message-format=json` and returns the executable it built for
/// `bin`, as its artifact message names it. cargo's stdout (the JSON messages) is read
/// line by line with escargot's message types; its stderr goes straight to the user's
/// (progress and cargo's own errors as they happen, and no pipe to fill up and stall
/// a big build), and the compiler's diagnostics are shown there rendered. A failed
/// build is a `Build` error (its errors are above).
fn run_build(mut cmd: Command, shown: &str, bin: &str) -> Result<PathBuf, EmulateError> {
    use std::io::BufRead;

    use escargot::format::Message;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io(format!("running `{shown}`")))?;
    let stdout = child.stdout.take().ok_or_else(|| EmulateError::Io {
        what: format!("reading the output of `{shown}`"),
        source: std::io::Error::other("no stdout"),
    })?;
    let mut elf = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(io(format!("reading the output of `{shown}`")))?;
        match serde_json::from_str::<Message<'_>>(&line) {
            Ok(Message::CompilerMessage(m)) => {
                if let Some(rendered) = &m.message.rendered {
                    eprint!("{rendered}");
                }
            }
            Ok(Message::CompilerArtifact(a)) if a.target.name == bin => {
                if let Some(exe) = a.executable {
                    elf = Some(exe.into_owned());
                }
            }
            _ => {}
        }
    }
    let status = child.wait().map_err(io(format!("waiting for `{shown}`")))?;
    if !status.success() {
        return Err(EmulateError::Build {
            command: shown.to_string(),
            status: status
                .code()
                .map_or_else(|| "killed".to_string(), |c| c.to_string()),
        });
    }
    match elf {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(EmulateError::Usage(format!(
            "`{shown}` succeeded but {} is missing",
            path.display()
        ))),
        None => Err(EmulateError::Usage(format!(
            "`{shown}` succeeded but named no executable for `{bin}`"
        ))),
    }
}

fn state_dir(req: &Request<'_>) -> Result<PathBuf, EmulateError> {
    let dir = req.target_dir.join("eterna-port");
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn finish(
    emulator: Emulator,
    accel: Option<String>,
    outcome: process::Outcome,
    patterns: &Patterns,
    serial_log: PathBuf,
    image: PathBuf,
) -> Result<BootRun, EmulateError> {
    std::fs::write(&serial_log, &outcome.serial)
        .map_err(io(format!("writing {}", serial_log.display())))?;
    let judgement = verdict::judge_with(
        emulator,
        &outcome.serial,
        &outcome.stderr,
        &outcome.log,
        outcome.ending,
        patterns,
    );
    let mut reason = judgement.reason;
    if !outcome.stderr.trim().is_empty() && judgement.verdict == Verdict::Failure {
        let last: Vec<String> = verdict::tail(&outcome.stderr, 5);
        reason.push_str(&format!("; emulator stderr: {}", last.join(" | ")));
    }
    let (status, ending) = match outcome.ending {
        verdict::Ending::Exited(s) => (s, "exited"),
        verdict::Ending::StoppedAfterVerdict => (None, "stopped-after-verdict"),
        verdict::Ending::TimedOut => (None, "timed-out"),
    };
    Ok(BootRun {
        emulator,
        accel,
        status,
        ending: ending.to_string(),
        verdict: judgement.verdict,
        reason,
        boots_up_to: judgement.boots_up_to,
        elapsed_ms: outcome.elapsed.as_millis() as u64,
        trace: patterns.extract_trace(&outcome.serial),
        serial_tail: verdict::tail(&outcome.serial, 20),
        serial_log,
        image,
    })
}

/// Boots the x86_64 image under QEMU; serial on stdout and in `serial.log`. `auto`
/// tries KVM when /dev/kvm is accessible and falls back to TCG when QEMU cannot start
/// with it (no serial output, a failing status: e.g. a host that refuses `-cpu host`).
pub fn run_qemu(req: &Request<'_>, elf: &Path) -> Result<BootRun, EmulateError> {
    let log = state_dir(req)?.join("serial.log");
    let kvm = match req.accel {
        Accel::Tcg => false,
        Accel::Kvm => {
            if !kvm_usable() {
                return Err(EmulateError::Usage(
                    "--accel kvm: /dev/kvm is missing or not accessible; use --accel tcg or add yourself to the `kvm` group".into(),
                ));
            }
            true
        }
        Accel::Auto => kvm_usable(),
    };
    if kvm {
        let outcome = qemu_once(req, elf, true)?;
        let refused = req.accel == Accel::Auto
            && outcome.serial.is_empty()
            && matches!(outcome.ending, verdict::Ending::Exited(s) if s != Some(0));
        if !refused {
            return finish(
                Emulator::Qemu,
                Some("kvm".into()),
                outcome,
                &req.patterns,
                log,
                elf.to_path_buf(),
            );
        }
        tracing::debug!(stderr = %outcome.stderr, "QEMU refused KVM; falling back to TCG");
    }
    let outcome = qemu_once(req, elf, false)?;
    finish(
        Emulator::Qemu,
        Some("tcg".into()),
        outcome,
        &req.patterns,
        log,
        elf.to_path_buf(),
    )
}

fn qemu_once(req: &Request<'_>, elf: &Path, kvm: bool) -> Result<process::Outcome, EmulateError> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-M", "pc", "-m", "128M", "-smp", "2", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    // `-d cpu_reset` logs "Triple fault" (TCG): -no-reboot alone exits with status 0,
    // like a power-off.
    let log = state_dir(req)?.join("qemu.log");
    let _ = std::fs::remove_file(&log);
    cmd.args(["-d", "cpu_reset", "-D"]).arg(&log);
    cmd.arg("-kernel").arg(elf);
    process::run(process::Run {
        command: cmd,
        serial: process::Serial::Stdout,
        timeout: req.timeout,
        grace: Duration::from_secs(2),
        patterns: &req.patterns,
        echo: req.echo,
        pid_file: None,
        log: Some(log),
    })
    .map_err(io("starting qemu-system-x86_64"))
}

/// A boot configuration the workspace names (it must exist), else `generated`
/// written to `<work>/<name>`.
fn config_file(
    given: Option<&PathBuf>,
    key: &str,
    work: &Path,
    name: &str,
    generated: impl FnOnce() -> String,
) -> Result<PathBuf, EmulateError> {
    if let Some(path) = given {
        if !path.is_file() {
            return Err(EmulateError::Usage(format!(
                "{} named by `{key}` in the workspace's eterna-port metadata is missing; fix the path or remove the key to use a generated one",
                path.display()
            )));
        }
        return Ok(path.clone());
    }
    let path = work.join(format!("generated-{name}"));
    std::fs::write(&path, generated()).map_err(io(format!("writing {}", path.display())))?;
    Ok(path)
}

/// Packages `elf` as a GRUB ISO in `work` (`<work>/eterna.iso`), with the workspace's
/// grub.cfg or a generated one that loads `/boot/kernel` (multiboot or multiboot2).
pub fn make_iso(req: &Request<'_>, elf: &Path, work: &Path) -> Result<PathBuf, EmulateError> {
    let header = std::fs::read(elf)
        .ok()
        .and_then(|bytes| image::boot_header(&bytes));
    let grub_cfg = config_file(
        req.boot_files.grub_cfg.as_ref(),
        "x86_64-grub-cfg",
        work,
        "grub.cfg",
        || image::generic_grub_cfg(header),
    )?;
    let iso_root = work.join("iso");
    let _ = std::fs::remove_dir_all(&iso_root);
    std::fs::create_dir_all(iso_root.join("boot/grub"))
        .map_err(io(format!("creating {}", iso_root.display())))?;
    // The generated grub.cfg loads /boot/kernel; a workspace's own may name the
    // image after its bin.
    for name in [
        image::ISO_IMAGE_PATH.to_string(),
        format!("boot/{}", req.target.bin),
    ] {
        std::fs::copy(elf, iso_root.join(&name))
            .map_err(io(format!("copying {}", elf.display())))?;
    }
    std::fs::copy(&grub_cfg, iso_root.join("boot/grub/grub.cfg"))
        .map_err(io(format!("copying {}", grub_cfg.display())))?;
    let iso = work.join(image::ISO_NAME);
    let out = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&iso_root)
        .current_dir(work)
        .stdin(Stdio::null())
        .output()
        .map_err(io("running grub-mkrescue"))?;
    if !out.status.success() {
        return Err(EmulateError::Usage(format!(
            "grub-mkrescue failed: {}; it needs grub-pc-bin, grub-common, xorriso and mtools",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(iso)
}

/// Boots the GRUB ISO under Bochs (VMX, corei7_skylake_x) with the workspace's
/// bochsrc or a generated one.
pub fn run_bochs(req: &Request<'_>, elf: &Path) -> Result<BootRun, EmulateError> {
    let work = state_dir(req)?.join("bochs");
    std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
    let bochsrc = config_file(
        req.boot_files.bochsrc.as_ref(),
        "x86_64-bochsrc",
        &work,
        "bochsrc",
        image::generic_bochsrc,
    )?;
    make_iso(req, elf, &work)?;
    std::fs::copy(&bochsrc, work.join("bochsrc"))
        .map_err(io(format!("copying {}", bochsrc.display())))?;
    std::fs::write(work.join("cmds"), "c\n").map_err(io("writing the Bochs command file"))?;
    for stale in [
        image::BOCHS_SERIAL,
        "bochs.log",
        "bochs.pid",
        "bochsout.txt",
    ] {
        let _ = std::fs::remove_file(work.join(stale));
    }
    // Bochs' term display needs a terminal: script(1) gives it one. The pid file lets a
    // timeout reach Bochs in the pseudo-terminal's own session.
    let mut cmd = Command::new("script");
    cmd.args([
        "-qec",
        "echo $$ > bochs.pid; exec bochs -q -f bochsrc -rc cmds",
        "/dev/null",
    ])
    .current_dir(&work);
    let outcome = process::run(process::Run {
        command: cmd,
        serial: process::Serial::File(work.join(image::BOCHS_SERIAL)),
        timeout: req.timeout,
        grace: Duration::from_secs(3),
        patterns: &req.patterns,
        echo: req.echo,
        pid_file: Some(work.join("bochs.pid")),
        log: Some(bochs_log(&work)),
    })
    .map_err(io("starting bochs under script"))?;
    let log = state_dir(req)?.join("serial.log");
    finish(
        Emulator::Bochs,
        None,
        outcome,
        &req.patterns,
        log,
        elf.to_path_buf(),
    )
}

/// The log file the bochsrc in `work` names (`log: <file>`), else `bochs.log`.
fn bochs_log(work: &Path) -> PathBuf {
    let named = std::fs::read_to_string(work.join("bochsrc"))
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("log:"))
        .map(|v| v.trim().to_string());
    work.join(
        named
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "bochs.log".into()),
    )
}

/// Boots the ARM64 original with its runner; serial in `serial-aarch64.log`.
pub fn run_aarch64(
    req: &Request<'_>,
    runner: &[String],
    elf: &Path,
) -> Result<BootRun, EmulateError> {
    let Some((program, args)) = runner.split_first() else {
        return Err(EmulateError::Usage("the aarch64 runner is empty".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args).arg(elf).current_dir(req.root);
    let outcome = process::run(process::Run {
        command: cmd,
        serial: process::Serial::Stdout,
        timeout: req.timeout,
        grace: Duration::from_secs(2),
        patterns: &req.patterns,
        echo: false,
        pid_file: None,
        log: None,
    })
    .map_err(io(format!("starting {program}")))?;
    let log = state_dir(req)?.join("serial-aarch64.log");
    finish(
        Emulator::QemuAarch64,
        None,
        outcome,
        &req.patterns,
        log,
        elf.to_path_buf(),
    )
}

/// The run of an image no loader can start: a failure, without an emulator.
fn not_bootable(req: &Request<'_>, reason: String, elf: &Path) -> Result<BootRun, EmulateError> {
    let serial_log = state_dir(req)?.join("serial.log");
    std::fs::write(&serial_log, "").map_err(io(format!("writing {}", serial_log.display())))?;
    Ok(BootRun {
        emulator: req.emulator,
        accel: None,
        status: None,
        ending: "not-bootable".to_string(),
        verdict: Verdict::Failure,
        reason,
        boots_up_to: None,
        elapsed_ms: 0,
        trace: Vec::new(),
        serial_log,
        serial_tail: Vec::new(),
        image: elf.to_path_buf(),
    })
}

/// Builds, boots and (with `compare`) diffs against the ARM64 original.
pub fn boot(req: &Request<'_>) -> Result<Report, EmulateError> {
    if req.compare && req.patterns.trace_prefix.is_none() {
        return Err(EmulateError::Usage(format!(
            "--compare diffs the guest-visible trace, but the workspace names no trace prefix: set `{TRACE_PREFIX_KEY}` (the prefix of the lines both ports print for each guest-visible event) in [workspace.metadata.eterna-port] of {}, or pass --trace-prefix",
            req.root.join("Cargo.toml").display()
        )));
    }
    let runner = if req.compare {
        aarch64_runner(req.root)?
    } else {
        Vec::new()
    };
    let program = runner
        .first()
        .map(String::as_str)
        .unwrap_or("qemu-system-aarch64");
    check_tools(req.emulator, req.compare, program)?;
    if let Some(why) = &req.unported {
        return Err(EmulateError::Usage(why.clone()));
    }
    let linker = linker_script(req)?;
    let elf = build(req, "x86_64-unknown-none", Some(&linker))?;
    let undefined_symbols = std::fs::read(&elf)
        .map(|bytes| image::undefined_symbols(&bytes))
        .unwrap_or_default();
    let port = if let Some(reason) =
        image::unbootable_reason(&elf, req.boot_module.as_deref(), req.root)
    {
        // Reported as exactly that, never started (QEMU would refuse it; a loader
        // could hang on it).
        not_bootable(req, reason, &elf)?
    } else {
        match req.emulator {
            Emulator::Bochs => run_bochs(req, &elf)?,
            _ => run_qemu(req, &elf)?,
        }
    };
    let mut port = port;
    if port.verdict == Verdict::Failure && !undefined_symbols.is_empty() {
        port.reason.push_str(&format!(
            "; the image was linked with {} undefined symbol(s) at address 0 ({}){}",
            undefined_symbols.len(),
            undefined_symbols.join(", "),
            if linker.origin == image::Origin::Generated {
                ": the tool's generic layout does not define the workspace's linker-script symbols; name its x86_64 linker script with `x86_64-linker-script` in [workspace.metadata.eterna-port]"
            } else {
                ""
            }
        ));
    }
    let compare = if req.compare {
        let original_elf = build(req, "aarch64-unknown-none", None)?;
        let original = run_aarch64(req, &runner, &original_elf)?;
        let diff = verdict::diff_traces(&original.trace, &port.trace).unwrap_or_default();
        Some(Comparison {
            identical: diff.is_empty() && original.passed(),
            original,
            diff,
        })
    } else {
        None
    };
    let success = port.passed() && compare.as_ref().map_or(true, |c| c.identical);
    Ok(Report {
        package: req.target.package.clone(),
        bin: req.target.bin.clone(),
        linker_script: linker,
        undefined_symbols,
        port,
        compare,
        success,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-binary crate in a temp dir, whose `main.rs` is `main`.
    fn tiny_crate(main: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.rs"), main).unwrap();
        dir
    }

    fn escargot_build(dir: &Path) -> Command {
        let mut cmd = escargot::CargoBuild::new()
            .package("tiny")
            .bin("tiny")
            .target_dir(dir.join("target"))
            .arg("--quiet")
            .arg("--offline")
            .into_command();
        cmd.current_dir(dir);
        cmd
    }

    #[test]
    fn the_escargot_build_returns_the_executable_its_messages_name() {
        let dir = tiny_crate("fn main() {}\n");
        let elf = run_build(escargot_build(dir.path()), "cargo build -p tiny", "tiny").unwrap();
        assert!(elf.is_file(), "{}", elf.display());
        assert!(
            elf.starts_with(dir.path().join("target")),
            "{}",
            elf.display()
        );
        assert_eq!(elf.file_stem().unwrap(), "tiny");
    }

    #[test]
    fn a_compile_error_is_a_build_error_naming_the_command_not_a_panic() {
        let dir = tiny_crate("fn main() { let x: u32 = \"no\"; }\n");
        let err = run_build(escargot_build(dir.path()), "cargo build -p tiny", "tiny").unwrap_err();
        assert!(
            matches!(&err, EmulateError::Build { command, .. } if command == "cargo build -p tiny"),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string().contains("`cargo build -p tiny` failed"),
            "{err}"
        );
    }

    #[test]
    fn aarch64_runner_comes_from_cargo_config_else_the_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            aarch64_runner(dir.path()).unwrap()[0],
            "qemu-system-aarch64"
        );
        std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
        let config = dir.path().join(".cargo/config.toml");
        std::fs::write(
            &config,
            "[target.aarch64-unknown-none]\nrunner = [\"my-qemu\", \"-kernel\"]\n",
        )
        .unwrap();
        assert_eq!(aarch64_runner(dir.path()).unwrap(), ["my-qemu", "-kernel"]);
        std::fs::write(
            &config,
            "[target.aarch64-unknown-none]\nrunner = \"q -M virt\"\n",
        )
        .unwrap();
        assert_eq!(aarch64_runner(dir.path()).unwrap(), ["q", "-M", "virt"]);
        std::fs::write(&config, "not = [toml").unwrap();
        let err = aarch64_runner(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
    }

    #[test]
    fn missing_tools_name_their_debian_package() {
        let tools = required_tools(Emulator::Bochs, true, "qemu-system-aarch64");
        assert!(tools.contains(&("bochs".to_string(), "bochs bochsbios vgabios bochs-term")));
        assert!(tools.contains(&("qemu-system-aarch64".to_string(), "qemu-system-arm")));
        assert!(find_tool("/nonexistent/qemu").is_none());
    }
}
