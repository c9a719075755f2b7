//! `cargo eterna-port check`, the fix loop and the pre-commit hook, on temp copies of
//! the reference fixture ported by the tool itself (offline, no network).

use crate::common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cargo_eterna_port::fixloop::{self, Fixer, LoopOptions, ModuleDiagnostics, StopReason};
use cargo_eterna_port::plan::ModulePlan;
use cargo_eterna_port::store::FixIterationRecord;
use common::*;

const VMCS: &str = "eterna/src/arch/x86_64/vm.rs";
const VM_MODULE: &str = "eterna::arch::aarch64::vm";

/// The tool in `dir`, with the copy's own target directory.
fn tool(dir: &Path, args: &[&str]) -> Output {
    command(dir, args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo-eterna-port")
}

/// A temp copy of the fixture, ported by the tool (offline: checked clean, with the
/// stubs it could not port, so exit 1).
fn ported() -> tempfile::TempDir {
    let copy = copy_tree(&fixture_dir());
    let out = tool(copy.path(), &["port", "--allow-no-vcs", "-q"]);
    assert_code(&out, 1);
    copy
}

/// Puts `line` at the start of the body of `vmpidr_for` (arch-neutral, carried over)
/// in the derived vm.rs; returns its 1-based line number.
fn inject(root: &Path, line: &str) -> usize {
    let path = root.join(VMCS);
    let text = std::fs::read_to_string(&path).unwrap();
    let anchor = "pub const fn vmpidr_for(index: usize) -> u64 {\n";
    let at = text.find(anchor).expect("vm.rs has vmpidr_for()") + anchor.len();
    let number = text[..at].lines().count() + 1;
    std::fs::write(&path, format!("{}    {line}\n{}", &text[..at], &text[at..])).unwrap();
    number
}

/// The planned modules, from `plan --message-format json`.
fn specs(root: &Path) -> Vec<ModulePlan> {
    let doc = json(&tool(root, &["plan", "--message-format", "json"]));
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_value(m.clone()).expect("a planned module"))
        .collect()
}

fn options<'a>(
    root: &'a Path,
    modules: &'a [ModulePlan],
    packages: &'a [String],
) -> LoopOptions<'a> {
    let mut opts = LoopOptions::new(root, "x86_64-unknown-none", modules);
    opts.packages = packages;
    opts.target_dir = Some(root.join("target"));
    opts
}

#[test]
fn check_names_the_broken_module_and_line_in_every_format() {
    let copy = ported();
    let root = copy.path();
    let clean = tool(root, &["check"]);
    assert_code(&clean, 0);
    assert!(stdout(&clean).contains("check ok"), "{}", stdout(&clean));

    let line = inject(root, "let x: u32 = \"s\";");
    let at = format!("{VMCS}:{line}");

    // Human: the module and file:line.
    let out = tool(root, &["check"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with(VM_MODULE))
        .unwrap_or_else(|| panic!("no row for {VM_MODULE}:\n{text}"));
    assert!(row.contains(&at), "{row}");
    assert!(
        stderr(&out).contains("mismatched types"),
        "{}",
        stderr(&out)
    );

    // JSON.
    let out = tool(root, &["check", "--message-format", "json"]);
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["clean"], false);
    assert_eq!(doc["errors"], 1, "{doc:#}");
    assert_eq!(doc["target_triple"], "x86_64-unknown-none");
    for m in doc["modules"].as_array().unwrap() {
        if m["module_path"] == VM_MODULE {
            assert_eq!(m["errors"], 1);
            let d = &m["diagnostics"][0];
            assert_eq!(d["file"], VMCS);
            assert_eq!(d["line"], line);
            assert_eq!(d["level"], "error");
            assert_eq!(d["code"], "E0308");
            assert!(m["files"].as_array().unwrap().iter().any(|f| f == VMCS));
        } else {
            assert_eq!(m["errors"], 0, "{m}");
        }
    }

    // GitHub annotations.
    let out = tool(root, &["check", "--format", "github"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("::error ")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(
        errors[0].starts_with(&format!("::error file={VMCS},line={line},col=")),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("title=E0308 in eterna%3A%3Aarch%3A%3Aaarch64%3A%3Avm::"));
    assert!(
        errors[0].contains("mismatched types%0A"),
        "multi-line text is escaped"
    );

    // JUnit: one test case per planned module, the failure in the broken one.
    let report_dir = tempfile::tempdir().unwrap();
    let xml_path = report_dir.path().join("reports/junit.xml");
    let out = tool(
        root,
        &["check", "-q", "--junit", xml_path.to_str().unwrap()],
    );
    assert_code(&out, 1);
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 1);
    let cases: Vec<&str> = xml.split("<testcase ").skip(1).collect();
    assert_eq!(
        cases.len(),
        doc["modules"].as_array().unwrap().len(),
        "{xml}"
    );
    for case in cases {
        let case = case.split("</testcase>").next().unwrap();
        let failed = case.contains("<failure");
        if case.starts_with(&format!("name=\"{VM_MODULE}\"")) {
            assert!(failed, "{case}");
            assert!(case.contains(&format!("at {at}\"")), "{case}");
        } else {
            assert!(!failed, "{case}");
        }
    }
    assert!(xml.contains(r#"failures="1""#), "{xml}");

    // Selecting another module hides the error, and says so.
    let out = tool(root, &["check", "apic"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("not selected"), "{}", stderr(&out));

    // An unwritable --junit path is a setup error naming the path.
    let blocker = report_dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    let bad = blocker.join("junit.xml");
    let out = tool(root, &["check", "-q", "--junit", bad.to_str().unwrap()]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(bad.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn setup_errors_exit_2() {
    let ws = workspace(&[("Cargo.toml", "[package\nname = 1\n")]);
    let out = tool(ws.path(), &["check"]);
    assert_code(&out, 2);
    let hv = mini_hypervisor();
    let out = tool(
        hv.path(),
        &["check", "--format", "github", "--message-format", "json"],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("pick one"), "{}", stderr(&out));
}

/// A fixer that counts its calls and answers with `answer(call, modules)`.
struct Scripted<F: FnMut(u32, &[ModuleDiagnostics]) -> Vec<(String, String)>> {
    calls: Cell<u32>,
    answer: F,
}

impl<F: FnMut(u32, &[ModuleDiagnostics]) -> Vec<(String, String)>> Fixer for Scripted<F> {
    fn fix(
        &mut self,
        iteration: u32,
        modules: &[ModuleDiagnostics],
    ) -> anyhow::Result<Vec<(String, String)>> {
        self.calls.set(self.calls.get() + 1);
        Ok((self.answer)(iteration, modules))
    }
}

fn scripted<F: FnMut(u32, &[ModuleDiagnostics]) -> Vec<(String, String)>>(f: F) -> Scripted<F> {
    Scripted {
        calls: Cell::new(0),
        answer: f,
    }
}

#[test]
fn a_machine_applicable_suggestion_is_applied_without_the_fixer() {
    let copy = ported();
    let root = copy.path();
    let modules = specs(root);
    let packages = vec!["eterna".to_string()];
    // rustc: "consider borrowing here: `&5u32`" (MachineApplicable), an error.
    inject(root, "let _r: &u32 = 5u32;");
    let mut fixer = scripted(|_, _| panic!("the fixer must not be asked"));
    let mut records: Vec<FixIterationRecord> = Vec::new();
    let outcome = fixloop::run_loop(
        &options(root, &modules, &packages),
        Some(&mut fixer),
        &mut |files| fixloop::write_files(root, files),
        &mut |r| {
            records.push(r.clone());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(outcome.stop, StopReason::Clean, "{:#?}", outcome.iterations);
    assert_eq!(fixer.calls.get(), 0);
    let first = &outcome.iterations[0];
    assert_eq!(first.errors, 1);
    assert!(first.rustfix_applied >= 1, "{first:?}");
    assert_eq!(first.rustfix_files, [VMCS]);
    assert!(!first.fixer_called);
    assert_eq!(outcome.iterations.len(), 2);
    assert_eq!(outcome.fix_rounds(), 1);
    let text = std::fs::read_to_string(root.join(VMCS)).unwrap();
    assert!(
        text.contains("let _r: &u32 = &5u32;"),
        "rustfix's fix is in the file"
    );
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].rustfix_applied, first.rustfix_applied as i64);
    assert_eq!(records[0].outcome, "fixing");
    assert_eq!(records[1].outcome, "clean");
    assert_eq!(records[1].errors, 0);
    assert!(outcome.total_time >= outcome.check_time);
}

#[test]
fn the_loop_converges_with_a_good_fixer_and_stops_without_progress_with_a_bad_one() {
    let copy = ported();
    let root = copy.path();
    let modules = specs(root);
    let packages = vec!["eterna".to_string()];
    let original = std::fs::read_to_string(root.join(VMCS)).unwrap();
    let line = inject(root, "let x: u32 = \"s\";");
    let broken = std::fs::read_to_string(root.join(VMCS)).unwrap();
    let opts = options(root, &modules, &packages);

    // No fixer: errors rustc cannot fix remain, and the loop says why it stopped.
    let outcome = fixloop::run_loop(&opts, None, &mut |_| unreachable!(), &mut |_| Ok(())).unwrap();
    assert_eq!(outcome.stop, StopReason::NoFixer);
    assert_eq!(outcome.iterations.len(), 1);

    // A fixer whose answer does not fix the error (a comment appended each time).
    let mut fixer = scripted(|iteration, modules| {
        assert_eq!(modules.len(), 1, "{modules:?}");
        let m = &modules[0];
        assert_eq!(m.module_path, VM_MODULE);
        assert!(m.files.iter().any(|f| f == VMCS));
        assert_eq!(
            (m.diagnostics[0].file.as_str(), m.diagnostics[0].line),
            (VMCS, line)
        );
        let text = std::fs::read_to_string(root.join(VMCS)).unwrap();
        vec![(VMCS.to_string(), format!("{text}// attempt {iteration}\n"))]
    });
    let mut records = Vec::new();
    let outcome = fixloop::run_loop(
        &opts,
        Some(&mut fixer),
        &mut |files| fixloop::write_files(root, files),
        &mut |r| {
            records.push(r.clone());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(
        outcome.stop,
        StopReason::NoProgress,
        "{:#?}",
        outcome.iterations
    );
    assert_eq!(fixer.calls.get(), 1, "stops before the iteration limit");
    assert_eq!(outcome.iterations.len(), 2);
    assert_eq!(
        outcome.iterations[0].diagnostics_hash,
        outcome.iterations[1].diagnostics_hash
    );
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["fixing", "no-progress"]);
    assert_eq!(records[0].agent_files, 1);

    // A fixer that answers with the same broken file changes nothing: no progress at once.
    std::fs::write(root.join(VMCS), &broken).unwrap();
    let same = broken.clone();
    let mut fixer = scripted(move |_, _| vec![(VMCS.to_string(), same.clone())]);
    let outcome = fixloop::run_loop(
        &opts,
        Some(&mut fixer),
        &mut |_| unreachable!(),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(outcome.stop, StopReason::NoProgress);
    assert_eq!(outcome.iterations.len(), 1);

    // A fixer that fixes: one round, then clean.
    let fixed = original.clone();
    let mut fixer = scripted(move |_, _| vec![(VMCS.to_string(), fixed.clone())]);
    let outcome = fixloop::run_loop(
        &opts,
        Some(&mut fixer),
        &mut |files| fixloop::write_files(root, files),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(outcome.stop, StopReason::Clean);
    assert_eq!(fixer.calls.get(), 1);
    assert_eq!(outcome.fix_rounds(), 1);
    assert_eq!(std::fs::read_to_string(root.join(VMCS)).unwrap(), original);
    assert!(outcome.final_report.clean());

    // The iteration limit.
    std::fs::write(root.join(VMCS), &broken).unwrap();
    let mut opts = options(root, &modules, &packages);
    opts.max_iterations = 2;
    let mut n = 0;
    let mut fixer = scripted(move |_, _| {
        // The error moves down a line each time: progress, but never clean.
        n += 1;
        vec![(
            VMCS.to_string(),
            broken.replace("let x: u32", &format!("{}let x: u32", "\n".repeat(n))),
        )]
    });
    let outcome = fixloop::run_loop(
        &opts,
        Some(&mut fixer),
        &mut |files| fixloop::write_files(root, files),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(
        outcome.stop,
        StopReason::MaxIterations,
        "{:#?}",
        outcome.iterations
    );
    assert_eq!(fixer.calls.get(), 2);
    assert_eq!(outcome.iterations.len(), 3);
}

fn with_path(cmd: &mut Command) -> &mut Command {
    let bin_dir = PathBuf::from(BIN).parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).unwrap())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
}

/// `git commit -m MSG` with the hook; returns the output.
fn commit(dir: &Path, msg: &str) -> Output {
    with_path(&mut Command::new("git"))
        .args(["commit", "-q", "-m", msg])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap()
}

#[test]
fn the_pre_commit_hook_blocks_a_commit_that_breaks_the_port() {
    let copy = copy_tree(&fixture_dir());
    let root = copy.path();
    std::fs::write(root.join(".gitignore"), "/target\n").unwrap();
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fixture"]);
    assert_code(&tool(root, &["port", "-q"]), 1); // stubs left: incomplete, checked clean
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "ported"]);

    let hooks = root.join(".git/hooks");
    let hook = hooks.join("pre-commit");
    let out = tool(root, &["hook", "install"]);
    assert_code(&out, 0);
    let script = std::fs::read_to_string(&hook).unwrap();
    assert!(script.contains("check --staged"), "{script}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "executable");
    }

    // Not touching a planned module: allowed without a check.
    std::fs::write(root.join("README.md"), "changed\n").unwrap();
    git(root, &["add", "README.md"]);
    let out = commit(root, "docs");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to check"),
        "{}",
        stderr(&out)
    );

    // Breaking the port: blocked, naming the module.
    let original = std::fs::read_to_string(root.join(VMCS)).unwrap();
    let line = inject(root, "let x: u32 = \"s\";");
    git(root, &["add", VMCS]);
    let out = commit(root, "break");
    assert!(!out.status.success(), "the commit went through");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains(&format!("{VMCS}:{line}")), "{all}");
    assert!(all.contains(VM_MODULE), "{all}");
    assert_eq!(git(root, &["log", "--format=%s", "-1"]).trim(), "docs");

    // A clean change of a planned module: checked and allowed.
    std::fs::write(root.join(VMCS), format!("{original}// a comment\n")).unwrap();
    git(root, &["add", VMCS]);
    let out = commit(root, "clean edit");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        git(root, &["log", "--format=%s", "-1"]).trim(),
        "clean edit"
    );

    // Someone else's hook is left alone without --force, kept as .bak with it.
    assert_code(&tool(root, &["hook", "uninstall"]), 0);
    assert!(!hook.exists());
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    let out = tool(root, &["hook", "install"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    let out = tool(root, &["hook", "uninstall"]);
    assert_code(&out, 2);
    assert!(hook.exists(), "uninstall removes only our hook");
    assert_code(&tool(root, &["hook", "install", "--force"]), 0);
    assert!(std::fs::read_to_string(&hook)
        .unwrap()
        .contains("eterna-port-hook"));
    assert_eq!(
        std::fs::read_to_string(hooks.join("pre-commit.bak")).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    assert_code(&tool(root, &["hook", "uninstall"]), 0);
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        "#!/bin/sh\nexit 0\n",
        "the previous hook is back"
    );
}

// ---- the workspace's own toolchain and target, and what was not compiled ----

/// A small hypervisor library workspace (`hv` with an ARM64 GIC module, depending on
/// `hv-core`), plus `extra` files.
fn small_hv(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let mut files: Vec<(&str, &str)> = vec![
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"hv\", \"core\"]\nresolver = \"2\"\n",
        ),
        (
            "core/Cargo.toml",
            "[package]\nname = \"hv-core\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("core/src/lib.rs", "#![no_std]\npub struct Vm { pub id: u16 }\n"),
        (
            "hv/Cargo.toml",
            "[package]\nname = \"hv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nhv-core = { path = \"../core\" }\n",
        ),
        ("hv/src/lib.rs", "#![no_std]\npub mod arch;\n"),
        (
            "hv/src/arch/mod.rs",
            "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n#[cfg(target_arch = \"x86_64\")]\npub mod x86_64;\n",
        ),
        ("hv/src/arch/aarch64/mod.rs", "pub mod gic;\n"),
        // The port, already written (x86_64 only).
        ("hv/src/arch/x86_64/mod.rs", "pub mod gic;\n"),
        (
            "hv/src/arch/x86_64/gic.rs",
            "/// Signals end of interrupt to the local APIC.\npub fn eoi(_intid: u32) {}\n",
        ),
        (
            "hv/src/arch/aarch64/gic.rs",
            "use core::arch::asm;\n\npub fn eoi(intid: u32) {\n    unsafe { asm!(\"msr icc_eoir1_el1, {0:x}\", \"isb\", in(reg) intid as u64) };\n}\n",
        ),
    ];
    for (p, t) in extra {
        files.retain(|(q, _)| q != p);
        files.push((p, t));
    }
    workspace(&files)
}

/// The tool with no toolchain choice of the user's in the environment (as a rustup
/// proxy run from another directory leaves it: its own default toolchain).
fn tool_default_env(dir: &Path, args: &[&str]) -> Output {
    command(dir, args)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env("RUSTUP_TOOLCHAIN_SOURCE", "default")
        .output()
        .expect("run cargo-eterna-port")
}

fn module_status(doc: &serde_json::Value, module: &str) -> String {
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["module_path"] == module)
        .unwrap_or_else(|| panic!("{module} in {doc}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

const GIC: &str = "hv::arch::aarch64::gic";

#[test]
fn a_pinned_toolchain_that_is_not_installed_exits_2_with_the_install_command() {
    let hv = small_hv(&[(
        "rust-toolchain.toml",
        "[toolchain]\nchannel = \"nightly-2001-01-01\"\ntargets = [\"x86_64-unknown-none\"]\n",
    )]);
    let out = tool_default_env(hv.path(), &["check"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("rust-toolchain.toml"), "{err}");
    assert!(err.contains("`nightly-2001-01-01`"), "{err}");
    assert!(
        err.contains(
            "rustup toolchain install nightly-2001-01-01 --target x86_64-unknown-none --component rust-src"
        ),
        "{err}"
    );
    assert!(err.contains("RUSTUP_TOOLCHAIN="), "{err}");

    // The legacy one-line file pins too.
    std::fs::remove_file(hv.path().join("rust-toolchain.toml")).unwrap();
    std::fs::write(hv.path().join("rust-toolchain"), "nightly-2001-01-01\n").unwrap();
    let out = tool_default_env(hv.path(), &["check"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("nightly-2001-01-01"),
        "{}",
        stderr(&out)
    );

    // The user's explicit RUSTUP_TOOLCHAIN wins over the pin, and is said.
    let out = command(hv.path(), &["check", "--message-format", "json"])
        .env_remove("CARGO_TARGET_DIR")
        .env("RUSTUP_TOOLCHAIN", "stable")
        .env("RUSTUP_TOOLCHAIN_SOURCE", "env")
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("RUSTUP_TOOLCHAIN=stable overrides `nightly-2001-01-01`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_build_script_names_the_missing_tool_and_its_modules_are_not_compiled() {
    let hv = small_hv(&[
        (
            "hv/build.rs",
            "fn main() {\n    std::process::Command::new(\"eterna-no-such-tool\")\n        .status()\n        .expect(\"failed to execute eterna-no-such-tool\");\n}\n",
        ),
    ]);
    let out = tool(hv.path(), &["check"]);
    assert_code(&out, 1);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        e.contains("build script of package hv failed: it runs `eterna-no-such-tool`, which is not installed (or not on PATH)"),
        "{e}"
    );
    assert!(o.contains("not compiled"), "{o}");
    assert!(!o.contains("check ok"), "{o}");

    let out = tool(hv.path(), &["check", "--message-format", "json"]);
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(module_status(&doc, GIC), "not-compiled");
    assert_eq!(doc["clean"], false);
    assert_eq!(
        doc["build_failures"][0]["missing_tool"],
        "eterna-no-such-tool"
    );

    let junit = hv.path().join("junit.xml");
    let out = tool(
        hv.path(),
        &["check", "-q", "--junit", junit.to_str().unwrap()],
    );
    assert_code(&out, 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<skipped message=\"not compiled"), "{xml}");

    let out = tool(hv.path(), &["check", "-q", "--format", "github"]);
    assert_code(&out, 1);
    assert!(stdout(&out).contains("not compiled"), "{}", stdout(&out));
}

#[test]
fn a_crate_that_fails_first_leaves_its_dependents_not_compiled() {
    let hv = small_hv(&[(
        "core/src/lib.rs",
        "#![no_std]\npub struct Vm { pub id: u16 }\npub fn broken() -> u32 { \"no\" }\n",
    )]);
    let out = tool(hv.path(), &["check", "--message-format", "json"]);
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(module_status(&doc, GIC), "not-compiled", "{doc}");
    assert!(doc["not_compiled"].as_u64().unwrap() >= 1, "{doc}");

    // Fixed, the module is compiled again.
    std::fs::write(
        hv.path().join("core/src/lib.rs"),
        "#![no_std]\npub struct Vm { pub id: u16 }\n",
    )
    .unwrap();
    let out = tool(hv.path(), &["check", "--message-format", "json"]);
    assert_code(&out, 0);
    assert_eq!(module_status(&json(&out), GIC), "ok");
}

fn installed_targets() -> Vec<String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn a_target_without_std_exits_2_unless_host_fallback_is_asked() {
    const T: &str = "riscv64gc-unknown-none-elf";
    if installed_targets().iter().any(|t| t == T) {
        eprintln!("skipped: {T} is installed here, so it cannot stand for a target without std");
        return;
    }
    let hv = small_hv(&[]);
    let out = tool(hv.path(), &["check", "--target", T]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("rustup target add {T} --toolchain ")),
        "{err}"
    );
    assert!(err.contains("--host-fallback"), "{err}");

    let out = tool(
        hv.path(),
        &[
            "check",
            "--target",
            T,
            "--host-fallback",
            "--message-format",
            "json",
        ],
    );
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("checking the host target"), "{err}");
    let doc = json(&out);
    assert_ne!(doc["target_triple"], T);
    assert_eq!(doc["requested_target"], T);
}

/// The nightly's sysroot, when a `nightly` toolchain is installed (never installs one).
fn nightly_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[test]
fn a_pinned_nightly_with_rust_src_checks_a_target_without_std_with_build_std() {
    const T: &str = "riscv64gc-unknown-none-elf";
    let Some(sysroot) = nightly_sysroot() else {
        eprintln!("skipped: `rustup run nightly rustc` fails (no nightly toolchain here)");
        return;
    };
    if !sysroot.join("lib/rustlib/src/rust/library").is_dir() {
        eprintln!("skipped: the nightly toolchain has no rust-src component");
        return;
    }
    if sysroot.join("lib/rustlib").join(T).join("lib").is_dir() {
        eprintln!("skipped: the nightly has {T}'s std, so it cannot stand for a target without");
        return;
    }
    let hv = small_hv(&[(
        "rust-toolchain.toml",
        "[toolchain]\nchannel = \"nightly\"\n",
    )]);
    let out = tool_default_env(
        hv.path(),
        &["check", "--target", T, "--message-format", "json"],
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{T} has no rust-std for nightly; checking with -Z build-std=core,alloc"
        )),
        "{err}"
    );
    // The port is x86_64 code: for riscv64 its files are cfg'd out, so not compiled.
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(doc["target_triple"], T);
    assert_eq!(module_status(&doc, GIC), "not-compiled");
}

#[test]
fn a_module_whose_file_the_compiler_never_read_is_not_compiled() {
    // The x86_64 module files are not written yet: the crate compiles, they do not.
    let hv = small_hv(&[(
        "hv/src/arch/mod.rs",
        "#[cfg(target_arch = \"aarch64\")]\npub mod aarch64;\n",
    )]);
    std::fs::remove_dir_all(hv.path().join("hv/src/arch/x86_64")).unwrap();
    let out = tool(hv.path(), &["check", "--message-format", "json"]);
    assert_code(&out, 1);
    let doc = json(&out);
    assert_eq!(module_status(&doc, GIC), "not-compiled", "{doc}");
    assert_eq!(doc["errors"], 0);
}
