//! `scripts/setup.sh`, which both README commands (demo.sh and test.sh) run first: what
//! it decides to install on a new machine and on a ready one, run against fake
//! `rustup`, `dpkg` and `apt-get` that record what they are asked (nothing is
//! installed, no network).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory of fake commands: `rustup` lists `installed` targets, `dpkg -s` knows
/// `packages`, `apt-get` and `rustup target add` append their arguments to `log`; the
/// `present` commands exist (empty scripts). Only `grep`, `env` and the shell's
/// builtins come from the machine.
fn fake_machine(dir: &Path, installed: &[&str], packages: &[&str], present: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("log");
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "rustup",
        &format!(
            "case \"$1 $2\" in\n\
             'target list') printf '%s\\n' {installed} ;;\n\
             'target add') echo \"rustup $*\" >> {log} ;;\n\
             'toolchain list') echo stable-x86_64-unknown-linux-gnu ;;\n\
             esac",
            installed = installed.join(" "),
            log = log.display()
        ),
    );
    script(
        "dpkg",
        &format!(
            "for p in {}; do [ \"$2\" = \"$p\" ] && exit 0; done; exit 1",
            packages.join(" ")
        ),
    );
    script(
        "apt-get",
        &format!("echo \"apt-get $*\" >> {}", log.display()),
    );
    script("id", "echo 0");
    for name in present {
        script(name, "exit 0");
    }
    for tool in ["grep", "env"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .expect("grep and env are installed");
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    bin
}

fn setup(bin: &Path, dry_run: bool) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
    let mut c = Command::new("/bin/bash");
    c.arg(script).env_clear().env("PATH", bin);
    if dry_run {
        c.env("SETUP_DRY_RUN", "1");
    }
    c.output().expect("bash runs")
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

const EMULATORS: &[&str] = &[
    "qemu-system-aarch64",
    "qemu-system-x86_64",
    "bochs",
    "grub-mkrescue",
    "xorriso",
    "mformat",
    "chromium",
];

#[test]
fn a_new_machine_gets_both_targets_and_every_emulator_package() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_machine(dir.path(), &[], &[], &[]);
    let out = setup(&bin, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let log = log(dir.path());
    assert!(
        log.contains("rustup target add aarch64-unknown-none x86_64-unknown-none"),
        "{log}"
    );
    let install = log
        .lines()
        .find(|l| l.contains("apt-get") && l.contains(" install "))
        .unwrap_or_else(|| panic!("no apt-get install in {log}"));
    for pkg in [
        "qemu-system-arm",
        "qemu-system-x86",
        "bochs",
        "bochsbios",
        "vgabios",
        "bochs-term",
        "grub-pc-bin",
        "xorriso",
        "mtools",
        "chromium",
    ] {
        assert!(install.split(' ').any(|w| w == pkg), "{pkg}: {install}");
    }
    // It says what it installs.
    assert!(
        err.contains("installing the rustup targets aarch64-unknown-none x86_64-unknown-none")
            && err.contains("installing the Debian packages qemu-system-arm"),
        "{err}"
    );
}

#[test]
fn a_ready_machine_installs_nothing_and_a_partial_one_only_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_machine(
        dir.path(),
        &["aarch64-unknown-none", "x86_64-unknown-none"],
        &["bochs-term"],
        EMULATORS,
    );
    let out = setup(&bin, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(log(dir.path()), "", "{err}");
    assert!(err.contains("already installed"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bin = fake_machine(
        dir.path(),
        &["x86_64-unknown-none"],
        &["bochs-term"],
        &EMULATORS[1..],
    );
    let out = setup(&bin, false);
    assert!(out.status.success());
    let log = log(dir.path());
    assert!(
        log.contains("rustup target add aarch64-unknown-none\n")
            && log.contains("--no-install-recommends qemu-system-arm\n"),
        "{log}"
    );
}

#[test]
fn a_dry_run_says_what_it_would_install_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_machine(dir.path(), &[], &[], &[]);
    let out = setup(&bin, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(log(dir.path()), "");
    assert!(
        err.contains("would run: rustup target add aarch64-unknown-none x86_64-unknown-none")
            && err.contains("apt-get install -y -qq --no-install-recommends qemu-system-arm"),
        "{err}"
    );
}

#[test]
fn without_rustup_it_says_where_to_get_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_machine(dir.path(), &[], &[], &[]);
    std::fs::remove_file(bin.join("rustup")).unwrap();
    let out = setup(&bin, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("https://rustup.rs"));
}
