//! End-to-end checks of the `eterna-arm64` fixture, the reference AArch64
//! hypervisor that `cargo-eterna-port` takes as input.
//!
//! The fixture is copied into a temporary directory first, so cargo never
//! writes into the checked-in tree. The boot test builds it for
//! `aarch64-unknown-none`, runs it under `qemu-system-aarch64` through the
//! fixture's cargo runner, and compares the guest trace against the contract
//! below. Missing tools make the tests fail (not skip) with the command that
//! installs them.

use crate::common;

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The guest-visible trace of a successful run: every `[guest] ` line, in
/// order, followed by the closing line. This list is the contract; the
/// fixture's `expected-trace.txt` must say the same.
const EXPECTED_TRACE: &[&str] = &[
    "[guest] vcpu0: print \"hello from the eterna guest\"",
    "[guest] vcpu0: hypercall abi version 1.0",
    "[guest] vcpu0: vcpu info: index 0 of 2",
    "[guest] vcpu0: virtual timer read",
    "[guest] vcpu0: virtual timer read",
    "[guest] vcpu0: print \"virtual timer advanced\"",
    "[guest] vcpu0: yield",
    "[guest] vcpu1: vcpu info: index 1 of 2",
    "[guest] vcpu1: print \"secondary vcpu running\"",
    "[guest] vcpu1: yield",
    "[guest] vcpu0: print \"arming the virtual timer\"",
    "[guest] vcpu0: virtual irq 27 injected",
    "[guest] vcpu0: print \"virtual timer interrupt handled\"",
    "[guest] vcpu0: mmio read 0x10000000 -> 0x4554524e",
    "[guest] vcpu0: mmio write 0x10000004 <- 0x2a",
    "[guest] vcpu0: mmio read 0x10000004 -> 0x2a",
    "[guest] vcpu0: mmio write 0x10000008 <- 0x1",
    "[guest] vcpu0: print \"test device ok\"",
    "[guest] vcpu0: unknown hypercall 0xc60000ff",
    "[guest] vcpu0: print \"unknown hypercall rejected\"",
    "[guest] vcpu0: yield",
    "[guest] vcpu1: exit code=0",
    "[guest] vcpu0: exit code=0",
    EXIT_LINE,
];

/// Last line of every successful run.
const EXIT_LINE: &str = "[eterna] guest exited code=0";
/// Prefix of guest-visible trace lines.
const GUEST_PREFIX: &str = "[guest] ";
/// Bare-metal target the fixture builds for.
const FIXTURE_TARGET: &str = "aarch64-unknown-none";
/// Emulator the fixture's cargo runner invokes.
const QEMU: &str = "qemu-system-aarch64";
/// Upper bound for building and booting; a broken run is killed after it.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

/// A temporary copy of the fixture; cargo runs only there.
struct FixtureCopy {
    _dir: tempfile::TempDir,
    root: PathBuf,
    target_dir: PathBuf,
}

fn copy_fixture() -> FixtureCopy {
    let dir = common::copy_tree(&common::fixture_dir());
    let root = dir.path().to_path_buf();
    assert!(!root.join("target").exists(), "target/ must not be copied");
    let target_dir = root.join("target");
    FixtureCopy {
        _dir: dir,
        root,
        target_dir,
    }
}

/// Output of a command run under [`run_with_timeout`].
struct RunOutput {
    /// `None` if the command was killed at the timeout.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl RunOutput {
    /// Everything the run printed, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "---- status: {} after {:.1?} ----\n---- stdout (serial console) ----\n{}\n---- stderr ----\n{}",
            match self.status {
                Some(status) => status.to_string(),
                None => "killed at timeout".to_string(),
            },
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` with piped output and kills it (and its children, such
/// as QEMU under `cargo run`) if it outlives `timeout`.
fn run_with_timeout(mut command: Command, timeout: Duration) -> RunOutput {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        // Own process group, so a timeout can take down the whole tree.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let start = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));

    let status = loop {
        match child.try_wait().expect("polling child") {
            Some(status) => break Some(status),
            None if start.elapsed() >= timeout => {
                kill_tree(&mut child);
                break None;
            }
            None => thread::sleep(Duration::from_millis(100)),
        }
    };
    RunOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: start.elapsed(),
    }
}

fn kill_tree(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        // The child leads its own process group (see `run_with_timeout`).
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", child.id()))
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn cargo(fixture: &FixtureCopy, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .args(args)
        .current_dir(&fixture.root)
        .env("CARGO_TARGET_DIR", &fixture.target_dir);
    command
}

/// Fails with install instructions unless QEMU can be started.
fn require_qemu() {
    let found = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        found,
        "`{QEMU}` is required to boot the eterna-arm64 fixture but could not be run; \
         install it with `apt-get install qemu-system-arm` (Debian/Ubuntu)"
    );
}

/// Fails with install instructions unless the bare-metal target's standard
/// library is installed for the toolchain cargo uses.
fn require_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", FIXTURE_TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = libdir.as_deref().is_some_and(|dir| {
        fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
    });
    assert!(
        installed,
        "the `{FIXTURE_TARGET}` target is not installed for this toolchain; \
         run `rustup target add {FIXTURE_TARGET}`"
    );
}

/// Host triple of the toolchain (for the fixture's host-side unit tests).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("running rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_string)
        .unwrap_or_else(|| "x86_64-unknown-linux-gnu".to_string())
}

/// The guest trace in a serial log: `[guest] ` lines plus exit lines.
fn extract_trace(serial: &str) -> Vec<String> {
    serial
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with(GUEST_PREFIX) || *line == EXIT_LINE)
        .map(str::to_string)
        .collect()
}

/// Line-by-line comparison of two traces, marking the lines that differ.
fn trace_diff<A: AsRef<str>, E: AsRef<str>>(actual: &[A], expected: &[E]) -> String {
    let mut out = String::from("    line | expected | actual\n");
    for index in 0..actual.len().max(expected.len()) {
        let want = expected.get(index).map_or("<missing>", AsRef::as_ref);
        let got = actual.get(index).map_or("<missing>", AsRef::as_ref);
        let marker = if want == got { "   " } else { ">>>" };
        out.push_str(&format!("{marker} {index:2} | {want} | {got}\n"));
    }
    out
}

#[test]
fn expected_trace_file_matches_the_contract() {
    let path = common::fixture_dir().join("expected-trace.txt");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lines: Vec<&str> = text
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .collect();
    assert!(
        lines == EXPECTED_TRACE,
        "{} disagrees with the trace contract in this test
{}",
        path.display(),
        trace_diff(&lines, EXPECTED_TRACE)
    );
}

#[test]
fn fixture_boots_in_qemu_and_prints_the_expected_trace() {
    require_qemu();
    require_target();
    let fixture = copy_fixture();
    let run = run_with_timeout(cargo(&fixture, &["run", "--release"]), RUN_TIMEOUT);
    let transcript = run.transcript();

    assert!(
        run.status.is_some(),
        "`cargo run --release` did not finish within {RUN_TIMEOUT:?}\n{transcript}"
    );
    assert!(
        run.status.is_some_and(|status| status.success()),
        "`cargo run --release` (build + QEMU) failed\n{transcript}"
    );
    let trace = extract_trace(&run.stdout);
    assert!(
        trace == EXPECTED_TRACE,
        "guest trace differs from the contract
{}
{transcript}",
        trace_diff(&trace, EXPECTED_TRACE)
    );
    let last = run
        .stdout
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .rfind(|line| !line.is_empty());
    assert_eq!(
        last,
        Some(EXIT_LINE),
        "the run must end with the exit line\n{transcript}"
    );

    let file =
        fs::read_to_string(fixture.root.join("expected-trace.txt")).expect("expected-trace.txt");
    let file_lines: Vec<&str> = file.lines().collect();
    assert!(
        trace == file_lines,
        "trace differs from expected-trace.txt
{}
{transcript}",
        trace_diff(&trace, &file_lines)
    );
}

#[test]
fn fixture_core_unit_tests_pass_on_the_host() {
    let fixture = copy_fixture();
    let host = host_triple();
    let run = run_with_timeout(
        cargo(&fixture, &["test", "-p", "eterna-core", "--target", &host]),
        RUN_TIMEOUT,
    );
    assert!(
        run.status.is_some_and(|status| status.success()),
        "`cargo test -p eterna-core --target {host}` failed in the fixture\n{}",
        run.transcript()
    );
    assert!(
        run.stdout.contains("test result: ok"),
        "no test results from eterna-core's unit tests\n{}",
        run.transcript()
    );
}

#[test]
fn fixture_checks_for_aarch64_without_warnings() {
    require_target();
    let fixture = copy_fixture();
    let run = run_with_timeout(
        cargo(
            &fixture,
            &[
                "check",
                "--target",
                FIXTURE_TARGET,
                "--message-format",
                "short",
            ],
        ),
        RUN_TIMEOUT,
    );
    assert!(
        run.status.is_some_and(|status| status.success()),
        "`cargo check --target {FIXTURE_TARGET}` failed in the fixture\n{}",
        run.transcript()
    );
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the fixture must check clean:\n{}",
        warnings.join("\n")
    );
}
