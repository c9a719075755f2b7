//! `qemu`: the boot verdict, the serial log's place and the trace comparison.

use super::{ERROR, NOTE_OK};

/// The verdict of `qemu` for a person: verdict line, serial tail on failure, trace diff.
pub fn boot_human(r: &crate::emulate::Report, quiet: bool) -> String {
    use crate::emulate::{BootRun, Emulator, Verdict};
    let mut s = String::new();
    let name = |run: &BootRun| match run.emulator {
        Emulator::Qemu => format!("QEMU ({})", run.accel.as_deref().unwrap_or("tcg")),
        Emulator::Bochs => "Bochs (VMX)".to_string(),
        Emulator::QemuAarch64 => "qemu-system-aarch64 (ARM64 original)".to_string(),
    };
    let status = |run: &BootRun| match run.status {
        Some(code) => format!("status {code}"),
        None => run.ending.clone(),
    };
    let one = |run: &BootRun, s: &mut String| {
        let (style, word) = match run.verdict {
            Verdict::Success => (NOTE_OK, "ok"),
            Verdict::VmxUnavailable => (NOTE_OK, "ok (vmx unavailable)"),
            Verdict::Failure => (ERROR, "FAILED"),
        };
        s.push_str(&format!(
            "{style}boot {word}{style:#}: {} {}/{} in {:.1} s, {}: {}\n",
            name(run),
            r.package,
            r.bin,
            run.elapsed_ms as f64 / 1000.0,
            status(run),
            run.reason
        ));
        if run.verdict == Verdict::Failure && run.ending != "not-bootable" {
            s.push_str(&format!(
                "last serial lines ({}):\n",
                run.serial_log.display()
            ));
            for line in &run.serial_tail {
                s.push_str(&format!("  | {line}\n"));
            }
        } else if !quiet {
            s.push_str(&format!("serial log: {}\n", run.serial_log.display()));
        }
    };
    one(&r.port, &mut s);
    if !quiet {
        let origin = match r.linker_script.origin {
            crate::emulate::image::Origin::Config => "the workspace's x86_64-linker-script",
            crate::emulate::image::Origin::CrateDir => "the crate's own",
            crate::emulate::image::Origin::Generated => "the tool's generic multiboot layout",
        };
        s.push_str(&format!(
            "linker script: {} ({origin})\n",
            r.linker_script.path.display()
        ));
    }
    if let Some(c) = &r.compare {
        one(&c.original, &mut s);
        if c.identical {
            s.push_str(&format!(
                "{NOTE_OK}traces identical{NOTE_OK:#}: {} guest trace lines, x86_64 = ARM64\n",
                c.original.trace.len()
            ));
        } else if c.diff.is_empty() {
            s.push_str(&format!(
                "{ERROR}traces not compared{ERROR:#}: the ARM64 original did not boot\n"
            ));
        } else {
            s.push_str(&format!(
                "{ERROR}traces differ{ERROR:#} (- ARM64 original, + x86_64 port):\n{}",
                c.diff
            ));
        }
    }
    s
}
