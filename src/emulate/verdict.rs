//! Serial console → verdict, and guest-trace extraction and comparison. Pure functions:
//! everything here is decided from the captured text and the emulator's exit status.

use serde::Serialize;

/// QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`):
/// a guest that writes `v` to port 0xf4 makes QEMU exit with status `(v << 1) | 1`.
/// The statuses the verdict reads:
///
/// * 1 (`v` = 0): the guest reported success;
/// * 33 (`v` = 0x10): the port booted and found no VT-x (the VMX-unavailable verdict);
/// * any other odd status: the guest reported failure code `v`;
/// * 0: QEMU powered off: an ACPI power-off, or (with `-no-reboot`) a reset such as
///   a triple fault. It carries no verdict of its own: only a success line does.
pub const QEMU_DEBUG_EXIT_SUCCESS_STATUS: i32 = 1;
/// QEMU's exit status when the port reports VMX unavailable: the port writes 0x10 to
/// `isa-debug-exit` (port 0xf4), and QEMU exits with `(0x10 << 1) | 1`.
pub const QEMU_VMX_UNAVAILABLE_STATUS: i32 = 33;
/// What QEMU logs (`-d cpu_reset`) when the guest triple-faults (TCG).
pub const QEMU_TRIPLE_FAULT_LOG: &str = "Triple fault";
/// What Bochs logs when the guest writes "Shutdown" to port 0x8900.
pub const BOCHS_SHUTDOWN_PORT_LOG: &str = "Shutdown port: shutdown requested";
/// What Bochs logs on an ACPI soft power-off (S5).
pub const BOCHS_ACPI_POWER_OFF_LOG: &str = "ACPI control: soft power off";
/// What Bochs logs when the guest triple-faults (then it resets the CPU).
pub const BOCHS_TRIPLE_FAULT_LOG: &str = "exception with no resolution";
/// The emulator-log lines the verdict reads (the runners keep only these).
pub const EMULATOR_LOG_SIGNALS: &[&str] = &[
    QEMU_TRIPLE_FAULT_LOG,
    BOCHS_SHUTDOWN_PORT_LOG,
    BOCHS_ACPI_POWER_OFF_LOG,
    BOCHS_TRIPLE_FAULT_LOG,
];

/// Default failure patterns: a Rust panic message. (A stub's panic, a triple fault
/// and the timeout are failures whatever the patterns.)
pub const DEFAULT_FAILURE: &[&str] = &["panicked at"];

/// What the tool's stubs say: `unimplemented!("eterna-port: <reason>")`, which panics
/// with `not implemented: eterna-port: <reason>`.
pub const STUB_MARKER: &str = "eterna-port: ";

/// An `eterna-port` stub a boot ran into (or a source file still holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stub {
    /// The item the stub stands for: the first `` `name` `` of its message.
    pub item: Option<String>,
    /// The stub's message after `eterna-port: `.
    pub message: String,
}

impl Stub {
    /// `` `item`: message `` for reports.
    pub fn describe(&self) -> String {
        match &self.item {
            Some(item) if self.message.starts_with(&format!("`{item}`")) => self.message.clone(),
            Some(item) => format!("`{item}`: {}", self.message),
            None => self.message.clone(),
        }
    }
}

/// The first `eterna-port` stub in `text`: a panic line `… not implemented:
/// eterna-port: <reason>` on a serial console, or `unimplemented!("eterna-port: …")`
/// in source. The item is the first backquoted name of the reason.
pub fn find_stub(text: &str) -> Option<Stub> {
    text.lines().find_map(|line| {
        let line = line.trim_end_matches('\r');
        let mut from = 0;
        while let Some(i) = line[from..].find(STUB_MARKER) {
            let at = from + i;
            let before = line[..at].trim_end_matches(' ');
            if before.ends_with("not implemented:") || before.ends_with("unimplemented!(\"") {
                let rest = &line[at + STUB_MARKER.len()..];
                let message = if before.ends_with('"') {
                    rest.split("\")").next().unwrap_or(rest)
                } else {
                    rest
                };
                let message = message.trim().to_string();
                let item = message
                    .split('`')
                    .nth(1)
                    .filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
                    .map(str::to_string);
                return Some(Stub { item, message });
            }
            from = at + STUB_MARKER.len();
        }
        None
    })
}

/// What to look for in the serial console. Everything workspace-specific comes from
/// its configuration (`success-patterns`, `failure-patterns`, `exit-code-pattern`,
/// `vmx-unavailable-pattern`, `trace-prefix`); without it only the emulator's own
/// signals, a Rust panic, a stub, a triple fault and the timeout decide.
#[derive(Debug, Clone)]
pub struct Patterns {
    /// Serial text that means success.
    pub success: Vec<String>,
    /// Serial text that means failure.
    pub failure: Vec<String>,
    /// A line prefix followed by a decimal exit code: 0 is success, anything else a
    /// failure; the line closes the guest trace.
    pub exit_code: Option<String>,
    /// Serial text meaning "booted, but the CPU has no VT-x".
    pub vmx_unavailable: Option<String>,
    /// Prefix of the guest-visible trace lines (`qemu --compare` diffs them).
    pub trace_prefix: Option<String>,
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns::new(&[], &[])
    }
}

impl Patterns {
    /// `success`/`failure` replace the generic defaults when non-empty; nothing else
    /// configured.
    pub fn new(success: &[String], failure: &[String]) -> Self {
        Patterns {
            success: success.to_vec(),
            failure: if failure.is_empty() {
                DEFAULT_FAILURE.iter().map(|s| s.to_string()).collect()
            } else {
                failure.to_vec()
            },
            exit_code: None,
            vmx_unavailable: None,
            trace_prefix: None,
        }
    }

    /// Whether `serial` already holds a verdict (a failure, success or VMX-unavailable
    /// pattern, an exit-code line, or a stub).
    pub fn decided(&self, serial: &str) -> bool {
        let (failure, success) = self.scan(serial);
        failure.is_some()
            || success.is_some()
            || self.exit_code(serial).is_some()
            || self.vmx_unavailable(serial).is_some()
            || find_stub(serial).is_some()
    }

    /// The first failure pattern found in `serial`, then the first success pattern.
    pub fn scan<'a>(&'a self, serial: &str) -> (Option<&'a str>, Option<&'a str>) {
        let find = |patterns: &'a [String]| {
            patterns
                .iter()
                .map(String::as_str)
                .find(|p| serial.contains(p))
        };
        (find(&self.failure), find(&self.success))
    }

    /// The VMX-unavailable pattern, when `serial` has it.
    pub fn vmx_unavailable(&self, serial: &str) -> Option<&str> {
        self.vmx_unavailable
            .as_deref()
            .filter(|p| serial.contains(p))
    }

    /// The code of the first exit-code line of `serial` (`<exit-code-pattern>N`).
    pub fn exit_code(&self, serial: &str) -> Option<String> {
        let prefix = self.exit_code.as_deref()?;
        serial
            .lines()
            .filter_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
            .find_map(|rest| {
                let rest = rest.trim_start();
                let sign = usize::from(rest.starts_with('-'));
                let digits = rest[sign..].bytes().take_while(u8::is_ascii_digit).count();
                (digits > 0).then(|| rest[..sign + digits].to_string())
            })
    }

    /// The guest-visible trace: the lines starting with the trace prefix and the
    /// closing exit-code line. Empty without a configured trace prefix.
    pub fn extract_trace(&self, serial: &str) -> Vec<String> {
        let Some(prefix) = self.trace_prefix.as_deref() else {
            return Vec::new();
        };
        let exit = self.exit_code.as_deref();
        serial
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| line.starts_with(prefix) || exit.is_some_and(|e| line.starts_with(e)))
            .map(str::to_string)
            .collect()
    }
}

/// How a run ended, as the emulator runner saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The emulator exited on its own with this status (`None`: killed by a signal).
    Exited(Option<i32>),
    /// The runner stopped it after a success or failure pattern appeared.
    StoppedAfterVerdict,
    /// Still running at the timeout; killed.
    TimedOut,
}

/// Which emulator produced the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Emulator {
    /// QEMU booting the x86_64 port.
    Qemu,
    /// Bochs (with VMX) booting the x86_64 port.
    Bochs,
    /// qemu-system-aarch64 booting the ARM64 original (`--compare`).
    QemuAarch64,
}

/// The verdict of one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The guest ran and exited with code 0 (or a custom success pattern matched).
    Success,
    /// The port booted and reported VT-x unavailable (QEMU TCG, status 33).
    VmxUnavailable,
    /// Anything else: the reason says what.
    Failure,
}

/// A verdict with its explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    /// Success, VT-x unavailable, or failure.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    /// The item whose `eterna-port` stub the boot ran into.
    pub boots_up_to: Option<String>,
}

impl Judgement {
    /// Whether the boot counts as passed (anything but a failure).
    pub fn passed(&self) -> bool {
        self.verdict != Verdict::Failure
    }
}

/// Decides the verdict of a run from its serial console and how it ended.
pub fn judge(emulator: Emulator, serial: &str, ending: Ending, patterns: &Patterns) -> Judgement {
    judge_with(emulator, serial, "", "", ending, patterns)
}

/// [`judge`], also reading the emulator's own output `stderr` (a stub's panic, QEMU's
/// errors) and the signal lines of its log `log` ([`EMULATOR_LOG_SIGNALS`]).
pub fn judge_with(
    emulator: Emulator,
    serial: &str,
    stderr: &str,
    log: &str,
    ending: Ending,
    patterns: &Patterns,
) -> Judgement {
    let fail = |reason: String| Judgement {
        verdict: Verdict::Failure,
        reason,
        boots_up_to: None,
    };
    let pass = |verdict: Verdict, reason: String| Judgement {
        verdict,
        reason,
        boots_up_to: None,
    };
    // A port with stubs boots as far as it can: the stub it reached is the verdict.
    if let Some(stub) = find_stub(serial).or_else(|| find_stub(stderr)) {
        let item = stub.item.clone();
        return Judgement {
            verdict: Verdict::Failure,
            reason: format!(
                "boots up to {} (an eterna-port stub: {})",
                item.as_deref()
                    .map_or_else(|| "a stub".to_string(), |i| format!("`{i}`")),
                stub.message
            ),
            boots_up_to: item.or(Some(stub.message)),
        };
    }
    let (failure, success) = patterns.scan(serial);
    if let Some(p) = failure {
        return fail(format!(
            "the serial console matched the failure pattern `{p}`"
        ));
    }
    let exit_code = patterns.exit_code(serial);
    if let Some(code) = exit_code.as_deref().filter(|c| *c != "0") {
        return fail(format!("the guest exited with code {code}"));
    }
    if let Some(line) = [QEMU_TRIPLE_FAULT_LOG, BOCHS_TRIPLE_FAULT_LOG]
        .into_iter()
        .find(|p| log.contains(p))
    {
        return fail(format!(
            "the guest triple-faulted and the CPU reset (the emulator logged `{line}`)"
        ));
    }
    let vmx_line = patterns.vmx_unavailable(serial);
    let success_line = success.map(str::to_string).or_else(|| {
        exit_code.map(|code| {
            format!(
                "{}{code}",
                patterns.exit_code.as_deref().unwrap_or_default()
            )
        })
    });
    let status = match ending {
        Ending::Exited(status) => status,
        Ending::StoppedAfterVerdict => None,
        Ending::TimedOut => {
            return fail(timeout_reason(success_line.as_deref().or(vmx_line)));
        }
    };
    let vmx = |how: &str| {
        pass(
            Verdict::VmxUnavailable,
            format!("the port booted and reported VT-x unavailable ({how})"),
        )
    };
    match (emulator, status) {
        (Emulator::Qemu, Some(QEMU_VMX_UNAVAILABLE_STATUS)) => {
            return vmx(&format!(
                "QEMU status {QEMU_VMX_UNAVAILABLE_STATUS} = (0x10 << 1) | 1 through isa-debug-exit"
            ))
        }
        (Emulator::Qemu, Some(QEMU_DEBUG_EXIT_SUCCESS_STATUS)) if stderr.trim().is_empty() => {
            if let Some(p) = vmx_line {
                return vmx(&format!("`{p}` appeared on the serial console"));
            }
            return pass(
                Verdict::Success,
                format!(
                    "the guest reported success through isa-debug-exit (QEMU status {QEMU_DEBUG_EXIT_SUCCESS_STATUS} = (0 << 1) | 1)"
                ),
            );
        }
        (Emulator::Qemu, Some(s)) if s % 2 == 1 && s > 1 => {
            return fail(format!(
                "the guest reported failure code {:#x} through isa-debug-exit (QEMU status {s} = ({:#x} << 1) | 1)",
                s >> 1,
                s >> 1
            ))
        }
        (Emulator::Qemu | Emulator::QemuAarch64, Some(s)) if s != 0 => {
            return fail(match success_line.as_deref().or(vmx_line) {
                Some(p) => format!("`{p}` appeared but QEMU exited with status {s}"),
                None => format!("QEMU exited with status {s} without a success line"),
            });
        }
        _ => {}
    }
    if let Some(p) = vmx_line {
        return vmx(&format!("`{p}` appeared on the serial console"));
    }
    if let Some(p) = success_line {
        return pass(
            Verdict::Success,
            format!("`{p}` appeared on the serial console"),
        );
    }
    // Bochs' exit status carries no verdict (it exits 1 after a power-off); its log
    // says how it stopped.
    if emulator == Emulator::Bochs {
        if let Some(line) = [BOCHS_SHUTDOWN_PORT_LOG, BOCHS_ACPI_POWER_OFF_LOG]
            .into_iter()
            .find(|p| log.contains(p))
        {
            return pass(
                Verdict::Success,
                format!("the guest powered Bochs off (Bochs logged `{line}`)"),
            );
        }
    }
    fail(match (emulator, ending) {
        (Emulator::Qemu | Emulator::QemuAarch64, Ending::Exited(Some(0))) => {
            "QEMU exited with status 0 without a success line: the guest powered off or reset \
             (a crash, a triple fault); configure `success-patterns` or `exit-code-pattern`, or \
             have the guest report success by writing 0 to isa-debug-exit (port 0xf4)"
                .to_string()
        }
        (_, Ending::Exited(Some(s))) => format!(
            "the emulator exited with status {s} without a success line (a crash, a triple fault or a reset)"
        ),
        _ => "the emulator stopped without a success line".to_string(),
    })
}

fn timeout_reason(success: Option<&str>) -> String {
    match success {
        Some(p) => format!("`{p}` appeared but the emulator did not stop before the timeout"),
        None => "no success line before the timeout (the boot hangs); the emulator was killed"
            .to_string(),
    }
}

/// The last `n` lines of `serial`.
pub fn tail(serial: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = serial.lines().map(|l| l.trim_end_matches('\r')).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Unified diff of two traces (`None` when they are equal).
pub fn diff_traces(original: &[String], port: &[String]) -> Option<String> {
    if original == port {
        return None;
    }
    let a = lines_text(original);
    let b = lines_text(port);
    Some(
        similar::TextDiff::from_lines(&a, &b)
            .unified_diff()
            .context_radius(3)
            .header("aarch64 (original)", "x86_64 (port)")
            .to_string(),
    )
}

fn lines_text(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic() -> Patterns {
        Patterns::default()
    }

    /// A workspace that configured its console (neutral sample strings).
    fn configured() -> Patterns {
        Patterns {
            trace_prefix: Some("[vm] ".into()),
            exit_code: Some("[hv] exit code=".into()),
            vmx_unavailable: Some("[hv] no vmx".into()),
            ..Patterns::new(&[], &["[hv] panic".into(), "panicked at".into()])
        }
    }

    #[test]
    fn qemu_status_33_is_vmx_unavailable_with_or_without_a_pattern() {
        for p in [generic(), configured()] {
            let j = judge(
                Emulator::Qemu,
                "[hv] no vmx: CPUID.1:ECX.VMX is clear\n",
                Ending::Exited(Some(33)),
                &p,
            );
            assert_eq!(j.verdict, Verdict::VmxUnavailable, "{j:?}");
        }
        // The configured line and a success status; the line and a failure status.
        let p = configured();
        let j = judge(Emulator::Qemu, "[hv] no vmx\n", Ending::Exited(Some(0)), &p);
        assert_eq!(j.verdict, Verdict::VmxUnavailable, "{j:?}");
        assert!(!judge(Emulator::Qemu, "[hv] no vmx\n", Ending::Exited(Some(4)), &p).passed());
        // Unconfigured, the line means nothing.
        let j = judge(
            Emulator::Qemu,
            "[hv] no vmx\n",
            Ending::Exited(Some(0)),
            &generic(),
        );
        assert_eq!(j.verdict, Verdict::Failure, "{j:?}");
    }

    #[test]
    fn generic_verdicts_come_from_the_emulator() {
        let p = generic();
        assert!(p.success.is_empty() && p.trace_prefix.is_none());
        // isa-debug-exit: 1 = the guest wrote 0 (success), other odd = its failure code.
        let j = judge(Emulator::Qemu, "hello\n", Ending::Exited(Some(1)), &p);
        assert_eq!(j.verdict, Verdict::Success, "{j:?}");
        let j = judge_with(
            Emulator::Qemu,
            "",
            "qemu-system-x86_64: cannot load kernel",
            "",
            Ending::Exited(Some(1)),
            &p,
        );
        assert_eq!(j.verdict, Verdict::Failure, "QEMU's own error: {j:?}");
        let j = judge(Emulator::Qemu, "", Ending::Exited(Some(35)), &p);
        assert!(j.reason.contains("failure code 0x11"), "{j:?}");
        // Status 0 without a success line: a power-off or a reset, not a verdict.
        let j = judge(Emulator::Qemu, "[vm] x\n", Ending::Exited(Some(0)), &p);
        assert!(!j.passed());
        assert!(j.reason.contains("success-patterns"), "{j:?}");
        // Bochs: the guest powered it off (shutdown port or ACPI), whatever its status.
        let log = "00012345i[UNMP  ] Shutdown port: shutdown requested\n";
        let j = judge_with(Emulator::Bochs, "", "", log, Ending::Exited(Some(1)), &p);
        assert_eq!(j.verdict, Verdict::Success, "{j:?}");
        assert!(!judge(Emulator::Bochs, "", Ending::Exited(Some(1)), &p).passed());
        // A Rust panic, a triple fault, the timeout.
        let j = judge(
            Emulator::Qemu,
            "panicked at src/main.rs:3:5\n",
            Ending::Exited(Some(1)),
            &p,
        );
        assert!(j.reason.contains("`panicked at`"), "{j:?}");
        let j = judge_with(
            Emulator::Qemu,
            "",
            "",
            "Triple fault\n",
            Ending::Exited(Some(0)),
            &p,
        );
        assert!(j.reason.contains("triple-faulted"), "{j:?}");
        let log = "exception(): 3rd (13) exception with no resolution, shutdown status is 00h, resetting\n";
        let j = judge_with(Emulator::Bochs, "", "", log, Ending::TimedOut, &p);
        assert!(j.reason.contains("triple-faulted"), "{j:?}");
        assert!(!judge(Emulator::Qemu, "[vm] x\n", Ending::TimedOut, &p).passed());
        // No trace without a prefix.
        assert!(p.extract_trace("[vm] a\n[hv] exit code=0\n").is_empty());
    }

    #[test]
    fn configured_patterns_decide_and_the_exit_line_closes_the_trace() {
        let p = configured();
        let panic = "[vm] x\n[hv] panic: boom\n[hv] exit code=0\n";
        let j = judge(Emulator::Bochs, panic, Ending::Exited(Some(1)), &p);
        assert!(j.reason.contains("[hv] panic"), "{j:?}");
        let code = "[hv] exit code=3\n";
        assert!(p.decided(code));
        let j = judge(Emulator::Bochs, code, Ending::Exited(Some(1)), &p);
        assert!(j.reason.contains("code 3"), "{j:?}");
        assert_eq!(
            p.exit_code("[hv] exit code= 12 (bad)\n").as_deref(),
            Some("12")
        );
        assert_eq!(p.exit_code("[hv] exit code=none\n"), None);
        let serial = "[vm] vcpu0: yield\r\n[hv] noise\r\n[hv] exit code=0\r\n";
        let j = judge(Emulator::Bochs, serial, Ending::Exited(Some(1)), &p);
        assert_eq!(j.verdict, Verdict::Success, "{j:?}");
        assert!(j.reason.contains("`[hv] exit code=0`"), "{j:?}");
        assert_eq!(
            p.extract_trace(serial),
            ["[vm] vcpu0: yield", "[hv] exit code=0"]
        );
        // A success line with a failure status from QEMU.
        let j = judge(Emulator::Qemu, serial, Ending::Exited(Some(4)), &p);
        assert!(!j.passed(), "{j:?}");
    }

    #[test]
    fn custom_patterns_replace_defaults() {
        let p = Patterns::new(&["READY".into()], &["OOPS".into()]);
        let j = judge(Emulator::Qemu, "READY\n", Ending::Exited(Some(0)), &p);
        assert_eq!(j.verdict, Verdict::Success);
        assert!(!judge(Emulator::Qemu, "READY OOPS\n", Ending::Exited(Some(0)), &p).passed());
    }

    #[test]
    fn stub_messages_name_the_item() {
        let serial = "[hv] x86_64: console up\r\n[hv] panic: not implemented: eterna-port: `init` has ARM64-specific code (msr ICC_SRE_EL2) with no x86_64 mapping yet (src/arch/x86_64/gic.rs:40)\r\n";
        let stub = find_stub(serial).unwrap();
        assert_eq!(stub.item.as_deref(), Some("init"));
        assert!(stub.message.starts_with("`init` has ARM64-specific code"));
        // A Rust panic message of another workspace, and the stub in source.
        let other =
            "panicked at src/x.rs:3:5:\nnot implemented: eterna-port: `Vcpu::run` needs the VMCS\n";
        assert_eq!(find_stub(other).unwrap().item.as_deref(), Some("Vcpu::run"));
        let source = "fn f() {\n    unimplemented!(\"eterna-port: `f` has ARM64-specific code (eret)\")\n}\n";
        let stub = find_stub(source).unwrap();
        assert_eq!(stub.item.as_deref(), Some("f"));
        assert_eq!(stub.message, "`f` has ARM64-specific code (eret)");
        // No backquoted name: the message is all there is.
        let bare = "not implemented: eterna-port: no VMX yet\n";
        assert_eq!(find_stub(bare).unwrap().item, None);
        assert_eq!(find_stub(bare).unwrap().describe(), "no VMX yet");
        // Other mentions are not stubs.
        assert!(
            find_stub("[eterna-port] eterna-port: `x` ran\nnot implemented: other\n").is_none()
        );
    }

    #[test]
    fn a_boot_into_a_stub_fails_as_boots_up_to_the_item() {
        let p = configured();
        let serial = "[hv] booting\n[hv] panic: not implemented: eterna-port: `init` has ARM64-specific code\n";
        assert!(p.decided(serial));
        let j = judge(Emulator::Qemu, serial, Ending::Exited(Some(0)), &p);
        assert_eq!(j.verdict, Verdict::Failure);
        assert_eq!(j.boots_up_to.as_deref(), Some("init"));
        assert!(j.reason.starts_with("boots up to `init`"), "{j:?}");
        // Seen only in the emulator's own output.
        let j = judge_with(
            Emulator::Qemu,
            "",
            "not implemented: eterna-port: `main` is a stub",
            "",
            Ending::Exited(Some(1)),
            &p,
        );
        assert_eq!(j.boots_up_to.as_deref(), Some("main"));
    }

    #[test]
    fn diff_is_unified_and_none_when_equal() {
        let a = vec!["[vm] a".to_string(), "[vm] b".to_string()];
        let b = vec!["[vm] a".to_string(), "[vm] c".to_string()];
        assert!(diff_traces(&a, &a).is_none());
        let d = diff_traces(&a, &b).unwrap();
        assert!(d.contains("-[vm] b") && d.contains("+[vm] c"), "{d}");
        assert_eq!(tail("1\n2\n3\n", 2), ["2", "3"]);
    }
}
