//! `cargo eterna-port hook install|uninstall`: the git pre-commit hook that runs
//! `check --staged` (which returns at once when no staged file is a planned module's).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{open, EXIT_OK};
use crate::cli::{GlobalArgs, HookCommand};
use crate::report;

/// Marks a hook as ours; `uninstall` removes only hooks carrying it.
pub const MARKER: &str = "eterna-port-hook v1";

pub(super) fn cmd_hook(g: &GlobalArgs, h: &HookCommand) -> Result<u8> {
    let s = open(g)?;
    let root = s.ws.root.clone();
    let hooks = hooks_dir(&root)?;
    let hook = hooks.join("pre-commit");
    let backup = hooks.join("pre-commit.bak");
    let existing = match std::fs::read(&hook) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("could not read {}", hook.display())),
    };
    let ours = existing.as_deref().is_some_and(|t| t.contains(MARKER));
    match h {
        HookCommand::Install { force } => {
            if existing.is_some() && !ours {
                if !force {
                    bail!(
                        "{} exists and is not cargo-eterna-port's hook; left alone. Pass `--force` to replace it (it is kept as pre-commit.bak), or call `cargo-eterna-port check --staged` from it yourself",
                        hook.display()
                    );
                }
                if backup.exists() {
                    bail!(
                        "{} exists already; move it away before replacing {} with --force",
                        backup.display(),
                        hook.display()
                    );
                }
                std::fs::rename(&hook, &backup).with_context(|| {
                    format!("could not move {} to {}", hook.display(), backup.display())
                })?;
                if !g.quiet {
                    report::stderr_message(
                        "note",
                        &format!("the previous hook is kept as {}", backup.display()),
                    );
                }
            }
            let script = script(&repo_prefix(&root)?);
            crate::writer::atomic_write(&hook, script.as_bytes(), None)?;
            make_executable(&hook)?;
            if !g.quiet {
                report::print_stdout(&format!(
                    "{} pre-commit hook {}: commits touching planned modules run `cargo-eterna-port check`\n",
                    if ours { "updated" } else { "installed" },
                    hook.display()
                ))?;
            }
            Ok(EXIT_OK)
        }
        HookCommand::Uninstall => {
            match existing {
                None => {
                    if !g.quiet {
                        report::stderr_message(
                            "note",
                            &format!(
                                "no pre-commit hook at {}; nothing to remove",
                                hook.display()
                            ),
                        );
                    }
                }
                Some(_) if !ours => bail!(
                    "{} is not cargo-eterna-port's hook; left alone",
                    hook.display()
                ),
                Some(_) => {
                    std::fs::remove_file(&hook)
                        .with_context(|| format!("could not remove {}", hook.display()))?;
                    let restored = backup.exists() && std::fs::rename(&backup, &hook).is_ok();
                    if !g.quiet {
                        report::print_stdout(&format!(
                            "removed pre-commit hook {}{}\n",
                            hook.display(),
                            if restored {
                                " (restored the previous hook from pre-commit.bak)"
                            } else {
                                ""
                            }
                        ))?;
                    }
                }
            }
            Ok(EXIT_OK)
        }
    }
}

/// The hook script. `prefix`: the workspace's directory in the repository.
fn script(prefix: &str) -> String {
    let dir = format!("'{}'", prefix.replace('\'', r"'\''"));
    format!(
        r#"#!/bin/sh
# {MARKER}: installed by `cargo eterna-port hook install`; remove it with
# `cargo eterna-port hook uninstall`. Checks the x86_64 port (the working tree) with
# `cargo eterna-port check` when a staged file belongs to a planned module.
# Skip it once with `git commit --no-verify`.
top=$(git rev-parse --show-toplevel) || exit 2
cd "$top"/{dir} || exit 2
if command -v cargo-eterna-port >/dev/null 2>&1; then
    exec cargo-eterna-port check --staged
fi
if cargo eterna-port --version >/dev/null 2>&1; then
    exec cargo eterna-port check --staged
fi
echo "pre-commit: cargo-eterna-port is not installed (cargo install cargo-eterna-port), so the port cannot be checked; commit with --no-verify to skip" >&2
exit 1
"#
    )
}

/// Where git looks for hooks (`core.hooksPath`, worktrees and all).
fn hooks_dir(root: &Path) -> Result<PathBuf> {
    let out = Command::new("git")
        .args(["rev-parse", "--git-path", "hooks"])
        .current_dir(root)
        .output()
        .context("could not run git")?;
    if !out.status.success() {
        bail!(
            "{} is not in a git repository ({}); a pre-commit hook needs one",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = if p.is_absolute() { p } else { root.join(p) };
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

fn repo_prefix(root: &Path) -> Result<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--show-prefix"])
        .current_dir(root)
        .output()
        .context("could not run git")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(unix)]
fn make_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("could not make {} executable", p.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_the_workspace_directory() {
        let s = script("it's here/");
        assert!(s.contains(MARKER));
        assert!(s.contains(r#"cd "$top"/'it'\''s here/' || exit 2"#), "{s}");
        assert!(s.starts_with("#!/bin/sh\n"));
    }
}
