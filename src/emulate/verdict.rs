//! Serial console → verdict, and guest-trace extraction and comparison. Pure functions:
//! everything here is decided from the captured text and the emulator's exit status.

use serde::Serialize;

/// Line the x86_64 port prints when the CPU has no VT-x (QEMU TCG).
pub const VMX_UNAVAILABLE_LINE: &str = "[eterna] vmx unavailable";
/// Last line of a successful guest run (both architectures).
pub const GUEST_EXITED_OK: &str = "[eterna] guest exited code=0";
/// Prefix of guest-visible trace lines.
pub const GUEST_PREFIX: &str = "[guest] ";
/// Prefix of the closing line of a guest run, whatever its code.
pub const GUEST_EXITED_PREFIX: &str = "[eterna] guest exited code=";
/// QEMU's exit status when the port reports VMX unavailable: the port writes 0x10 to
/// `isa-debug-exit` (port 0xf4), and QEMU exits with `(0x10 << 1) | 1`.
pub const QEMU_VMX_UNAVAILABLE_STATUS: i32 = 33;

/// Default success patterns: a finished guest run, or the VMX-unavailable report.
pub const DEFAULT_SUCCESS: &[&str] = &[GUEST_EXITED_OK, VMX_UNAVAILABLE_LINE];
/// Default failure patterns: the port's panic line, a Rust panic message. (A nonzero
/// `[eterna] guest exited code=N` is a failure whatever the patterns.)
pub const DEFAULT_FAILURE: &[&str] = &["[eterna] panic", "panicked at"];

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

/// What to look for in the serial console.
#[derive(Debug, Clone)]
pub struct Patterns {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

impl Patterns {
    /// `success`/`failure` replace the defaults when non-empty.
    pub fn new(success: &[String], failure: &[String]) -> Self {
        let pick = |given: &[String], default: &[&str]| {
            if given.is_empty() {
                default.iter().map(|s| s.to_string()).collect()
            } else {
                given.to_vec()
            }
        };
        Patterns {
            success: pick(success, DEFAULT_SUCCESS),
            failure: pick(failure, DEFAULT_FAILURE),
        }
    }

    /// Whether `serial` already holds a verdict (a failure or success pattern, or a
    /// nonzero guest exit).
    pub fn decided(&self, serial: &str) -> bool {
        let (failure, success) = self.scan(serial);
        failure.is_some()
            || success.is_some()
            || nonzero_guest_exit(serial).is_some()
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
    Qemu,
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
    pub verdict: Verdict,
    pub reason: String,
    /// The item whose `eterna-port` stub the boot ran into.
    pub boots_up_to: Option<String>,
}

impl Judgement {
    pub fn passed(&self) -> bool {
        self.verdict != Verdict::Failure
    }
}

/// Decides the verdict of a run from its serial console and how it ended.
pub fn judge(emulator: Emulator, serial: &str, ending: Ending, patterns: &Patterns) -> Judgement {
    judge_with(emulator, serial, "", ending, patterns)
}

/// [`judge`], also looking for a stub's panic in the emulator's own output `stderr`.
pub fn judge_with(
    emulator: Emulator,
    serial: &str,
    stderr: &str,
    ending: Ending,
    patterns: &Patterns,
) -> Judgement {
    let fail = |reason: String| Judgement {
        verdict: Verdict::Failure,
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
    if let Some(code) = nonzero_guest_exit(serial) {
        return fail(format!("the guest exited with code {code}"));
    }
    let status = match ending {
        Ending::Exited(status) => status,
        Ending::StoppedAfterVerdict => None,
        Ending::TimedOut => return fail(timeout_reason(success)),
    };
    let Some(pattern) = success else {
        return fail(match ending {
            Ending::Exited(Some(s)) => format!(
                "the emulator exited with status {s} without a success line (a crash, a triple fault or a reset)"
            ),
            _ => "the emulator stopped without a success line".to_string(),
        });
    };
    let vmx = pattern == VMX_UNAVAILABLE_LINE;
    match (emulator, status) {
        // QEMU: 33 is the documented VMX-unavailable status; 0 is ACPI S5 power-off.
        (Emulator::Qemu, Some(QEMU_VMX_UNAVAILABLE_STATUS)) if vmx => Judgement {
            verdict: Verdict::VmxUnavailable,
            reason: format!(
                "the port booted and reported VT-x unavailable (QEMU status {QEMU_VMX_UNAVAILABLE_STATUS} = (0x10 << 1) | 1)"
            ),
            boots_up_to: None,
        },
        (Emulator::Qemu | Emulator::QemuAarch64, Some(s))
            if s != 0 && s != QEMU_VMX_UNAVAILABLE_STATUS =>
        {
            fail(format!("`{pattern}` appeared but QEMU exited with status {s}"))
        }
        _ if vmx => Judgement {
            verdict: Verdict::VmxUnavailable,
            reason: "the port booted and reported VT-x unavailable".to_string(),
            boots_up_to: None,
        },
        // Bochs exits 1 after ACPI soft power-off: its status carries no verdict.
        _ => Judgement {
            verdict: Verdict::Success,
            reason: format!("`{pattern}` appeared on the serial console"),
            boots_up_to: None,
        },
    }
}

fn timeout_reason(success: Option<&str>) -> String {
    match success {
        Some(p) => format!("`{p}` appeared but the emulator did not stop before the timeout"),
        None => "no success line before the timeout (the boot hangs); the emulator was killed"
            .to_string(),
    }
}

/// The code of a `[eterna] guest exited code=N` line with N other than 0.
pub fn nonzero_guest_exit(serial: &str) -> Option<String> {
    serial
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(GUEST_EXITED_PREFIX))
        .find(|code| code.trim() != "0")
        .map(|code| code.trim().to_string())
}

/// The guest-visible trace: `[guest] ` lines and the closing `guest exited` line.
pub fn extract_trace(serial: &str) -> Vec<String> {
    serial
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with(GUEST_PREFIX) || line.starts_with(GUEST_EXITED_PREFIX))
        .map(str::to_string)
        .collect()
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

    fn defaults() -> Patterns {
        Patterns::new(&[], &[])
    }

    #[test]
    fn qemu_vmx_unavailable_with_status_33_passes() {
        let serial = "[eterna] vmx unavailable: CPUID.1:ECX.VMX is clear\n";
        let j = judge(
            Emulator::Qemu,
            serial,
            Ending::Exited(Some(33)),
            &defaults(),
        );
        assert_eq!(j.verdict, Verdict::VmxUnavailable, "{j:?}");
    }

    #[test]
    fn silent_exit_timeout_and_panic_fail() {
        let p = defaults();
        assert!(!judge(Emulator::Qemu, "", Ending::Exited(Some(0)), &p).passed());
        assert!(!judge(Emulator::Qemu, "[eterna] booting\n", Ending::TimedOut, &p).passed());
        let panic = "[guest] x\n[eterna] panic: boom\n[eterna] guest exited code=0\n";
        let j = judge(Emulator::Bochs, panic, Ending::Exited(Some(1)), &p);
        assert!(j.reason.contains("[eterna] panic"), "{j:?}");
        let code = "[eterna] guest exited code=3\n";
        let j = judge(Emulator::Bochs, code, Ending::Exited(Some(1)), &p);
        assert!(j.reason.contains("code 3"), "{j:?}");
        let wrong = "[eterna] vmx unavailable\n";
        assert!(!judge(Emulator::Qemu, wrong, Ending::Exited(Some(3)), &p).passed());
    }

    #[test]
    fn bochs_guest_exit_passes_whatever_the_status() {
        let serial = "[guest] vcpu0: yield\r\n[eterna] guest exited code=0\r\n";
        let j = judge(
            Emulator::Bochs,
            serial,
            Ending::Exited(Some(1)),
            &defaults(),
        );
        assert_eq!(j.verdict, Verdict::Success);
        assert_eq!(
            extract_trace(serial),
            ["[guest] vcpu0: yield", "[eterna] guest exited code=0"]
        );
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
        let serial = "[eterna] x86_64: console up\r\n[eterna] panic: not implemented: eterna-port: `init` has ARM64-specific code (msr ICC_SRE_EL2) with no x86_64 mapping yet (src/arch/x86_64/gic.rs:40)\r\n";
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
        let p = defaults();
        let serial = "[eterna] booting\n[eterna] panic: not implemented: eterna-port: `init` has ARM64-specific code\n";
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
            Ending::Exited(Some(1)),
            &p,
        );
        assert_eq!(j.boots_up_to.as_deref(), Some("main"));
    }

    #[test]
    fn diff_is_unified_and_none_when_equal() {
        let a = vec!["[guest] a".to_string(), "[guest] b".to_string()];
        let b = vec!["[guest] a".to_string(), "[guest] c".to_string()];
        assert!(diff_traces(&a, &a).is_none());
        let d = diff_traces(&a, &b).unwrap();
        assert!(d.contains("-[guest] b") && d.contains("+[guest] c"), "{d}");
        assert_eq!(tail("1\n2\n3\n", 2), ["2", "3"]);
    }
}
