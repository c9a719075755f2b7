//! `qemu` as a library call ([`run`]): which bin target is the hypervisor, whether it
//! has its x86_64 layer, then [`emulate::boot`] (image build, emulator, verdict).

use std::collections::BTreeSet;

use anyhow::Result;

use super::{Error, Session};
use crate::emulate;
use crate::knowledge::ComponentId;
use crate::plan::{self, Plan};

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// The bin target to boot; `None`: the only bin of the package with the planned
    /// platform module.
    pub bin: Option<String>,
    /// QEMU (TCG has no VT-x) or Bochs (with VMX).
    pub emulator: emulate::Emulator,
    /// QEMU's accelerator.
    pub accel: emulate::Accel,
    /// How long the guest may run.
    pub timeout: std::time::Duration,
    /// Diff the guest-visible trace against the ARM64 original's.
    pub compare: bool,
    /// The serial-console patterns (flags over configuration over defaults).
    pub patterns: emulate::Patterns,
    /// Echo the serial console to stderr while it runs.
    pub echo: bool,
    /// Say nothing but errors while building.
    pub quiet: bool,
}

/// The serial-console patterns: the given ones (flags) over the workspace's
/// configuration over the defaults. Empty `success`/`failure`: the configuration's.
pub fn patterns(
    c: &crate::config::ConsolePatterns,
    success: &[String],
    failure: &[String],
    trace_prefix: Option<String>,
) -> emulate::Patterns {
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
        trace_prefix: trace_prefix.or_else(|| value(&c.trace_prefix)),
        exit_code: value(&c.exit_code_pattern),
        vmx_unavailable: value(&c.vmx_unavailable_pattern),
        ..emulate::Patterns::new(
            &from(success, &c.success_patterns),
            &from(failure, &c.failure_patterns),
        )
    }
}

/// Builds and boots the port of the session's workspace; the report says how far it got.
pub fn run(s: &Session, opts: &BootOptions) -> Result<emulate::Report, Error> {
    let plan = s.full_plan(true, &|_| {});
    let target = boot_target(s, &plan, opts.bin.as_deref())?;
    let (boot_module, unported) = boot_layer(s, &plan, &target);
    let files = &s.config.boot_files;
    let req = emulate::Request {
        root: &s.ws.root,
        target_dir: &s.ws.target_dir,
        target: &target,
        emulator: opts.emulator,
        accel: opts.accel,
        timeout: opts.timeout,
        compare: opts.compare,
        patterns: opts.patterns.clone(),
        echo: opts.echo,
        quiet: opts.quiet,
        boot_files: emulate::WorkspaceBootFiles {
            linker_script: files.linker_script.as_ref().map(|f| f.value.clone()),
            grub_cfg: files.grub_cfg.as_ref().map(|f| f.value.clone()),
            bochsrc: files.bochsrc.as_ref().map(|f| f.value.clone()),
        },
        boot_module,
        unported,
    };
    Ok(emulate::boot(&req)?)
}

fn boot_target(s: &Session, plan: &Plan, bin: Option<&str>) -> Result<emulate::BootTarget> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    if s.packages.is_empty() {
        names.extend(
            plan.modules
                .iter()
                .filter(|m| m.component == ComponentId::Platform)
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
    plan: &Plan,
    target: &emulate::BootTarget,
) -> (Option<std::path::PathBuf>, Option<String>) {
    let ours: Vec<_> = plan
        .modules
        .iter()
        .filter(|m| m.package == target.package)
        .collect();
    let has_root = ours.iter().any(|m| m.component == ComponentId::Platform);
    let unported = ours
        .iter()
        .filter(|m| !has_root || m.component == ComponentId::Platform)
        .find(|m| m.status == plan::Status::New)
        .map(|m| {
            format!(
                "{} has no x86_64 layer yet ({} is missing): run `cargo eterna-port` first to port",
                target.package, m.target
            )
        });
    let boot = ours
        .iter()
        .find(|m| m.component == ComponentId::Boot)
        .map(|m| s.ws.root.join(&m.target));
    (boot, unported)
}
