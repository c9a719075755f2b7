//! The workspace's own toolchain (`rust-toolchain.toml` / legacy `rust-toolchain`) and
//! whether a target's standard library is there for it.
//!
//! Every cargo the tool runs for the workspace's code (check, the fix loop's checks, the
//! image build) runs with the pinned toolchain: through the rustup `cargo` proxy with
//! `RUSTUP_TOOLCHAIN=<channel>`. Under `cargo eterna-port` run from another directory,
//! rustup has already exported `RUSTUP_TOOLCHAIN` for the *outer* toolchain; rustup also
//! exports `RUSTUP_TOOLCHAIN_SOURCE` (`default`, `toolchain-file`, `override`, `env`,
//! `cli`). A `RUSTUP_TOOLCHAIN` whose source is `env` or `cli` (or one set without any
//! `RUSTUP_TOOLCHAIN_SOURCE`, i.e. not by a rustup proxy) is the user's explicit choice
//! and wins over the pin (said once on stderr); anything else is replaced by the pin.
//! Without a pin the environment is left alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

/// What a toolchain file pins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pin {
    /// The file the pin comes from.
    pub file: PathBuf,
    /// The channel (`stable`, `1.85`, `nightly-2025-05-20`).
    pub channel: String,
    /// The targets it asks to be installed.
    pub targets: Vec<String>,
    /// The components it asks to be installed.
    pub components: Vec<String>,
}

/// Why the workspace's toolchain cannot be used.
#[derive(Debug, Error)]
pub enum ToolchainError {
    /// The toolchain file does not parse.
    #[error("{file}: {reason}")]
    BadFile {
        /// The toolchain file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pinned toolchain is not installed.
    #[error(
        "{file} pins the toolchain `{channel}`, which is not installed{detail}.\n\
         Install it with:\n    rustup toolchain install {channel} --target {target} --component rust-src\n\
         (or set RUSTUP_TOOLCHAIN=<other toolchain> to check with another one)"
    )]
    NotInstalled {
        /// The file that pins it.
        file: PathBuf,
        /// The pinned channel.
        channel: String,
        /// The target the install command adds.
        target: String,
        /// What rustup said, when it said anything.
        detail: String,
    },
    /// rustup, cargo or rustc could not be run.
    #[error("could not run `{program}`: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The toolchain has no standard library for the target.
    #[error(
        "the toolchain {toolchain} has no standard library for `{target}`{why}.\n\
         Add it with:\n    rustup target add {target} --toolchain {toolchain}\n\
         (or pass --host-fallback to check the host target instead)"
    )]
    TargetMissing {
        /// The target triple.
        target: String,
        /// The toolchain that lacks it.
        toolchain: String,
        /// How that was found out.
        why: String,
    },
}

/// Parses a toolchain file's text: TOML with a `[toolchain]` table, or the legacy
/// one-line form (just the channel). `file` only names the file in errors.
pub fn parse(text: &str, file: &Path) -> Result<Pin, ToolchainError> {
    let bad = |reason: String| ToolchainError::BadFile {
        file: file.to_path_buf(),
        reason,
    };
    let trimmed = text.trim();
    let legacy = !trimmed.is_empty()
        && !trimmed.contains('\n')
        && !trimmed.contains('=')
        && !trimmed.starts_with('[');
    if legacy {
        return Ok(Pin {
            file: file.to_path_buf(),
            channel: trimmed.to_string(),
            ..Pin::default()
        });
    }
    let value: toml::Value = toml::from_str(text).map_err(|e| bad(format!("not TOML: {e}")))?;
    let table = value
        .get("toolchain")
        .and_then(|t| t.as_table())
        .ok_or_else(|| bad("no [toolchain] table".into()))?;
    let channel = match (table.get("channel"), table.get("path")) {
        (Some(c), _) => c
            .as_str()
            .filter(|c| !c.trim().is_empty())
            .ok_or_else(|| bad("`channel` is not a non-empty string".into()))?
            .trim()
            .to_string(),
        (None, Some(p)) => p
            .as_str()
            .ok_or_else(|| bad("`path` is not a string".into()))?
            .to_string(),
        (None, None) => return Err(bad("[toolchain] has no `channel`".into())),
    };
    let list = |key: &str| -> Result<Vec<String>, ToolchainError> {
        match table.get(key) {
            None => Ok(Vec::new()),
            Some(v) => v
                .as_array()
                .ok_or_else(|| bad(format!("`{key}` is not a list")))?
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("`{key}` holds a non-string")))
                })
                .collect(),
        }
    };
    Ok(Pin {
        file: file.to_path_buf(),
        channel,
        targets: list("targets")?,
        components: list("components")?,
    })
}

/// The toolchain file governing `root`: `rust-toolchain.toml` or `rust-toolchain` in
/// `root` or the nearest ancestor that has one (as rustup looks).
pub fn find_pin(root: &Path) -> Result<Option<Pin>, ToolchainError> {
    for dir in root.ancestors() {
        for name in ["rust-toolchain.toml", "rust-toolchain"] {
            let file = dir.join(name);
            if file.is_file() {
                let text = std::fs::read_to_string(&file).map_err(|e| ToolchainError::BadFile {
                    file: file.clone(),
                    reason: format!("could not read it: {e}"),
                })?;
                return parse(&text, &file).map(Some);
            }
        }
    }
    Ok(None)
}

/// The toolchain the workspace's cargo runs use.
#[derive(Debug, Clone, Default)]
pub struct Toolchain {
    /// What the workspace's toolchain file pins; `None`: no file.
    pub pin: Option<Pin>,
    /// `RUSTUP_TOOLCHAIN` to set on spawned cargo/rustc (the pin's channel), `None` to
    /// leave the environment alone.
    pub rustup_toolchain: Option<String>,
    /// The user's explicit `RUSTUP_TOOLCHAIN` that overrides a pin (to say so).
    pub user_override: Option<String>,
}

impl Toolchain {
    /// Decides from the pin and the environment (`env` looks a variable up).
    pub fn decide(pin: Option<Pin>, env: &dyn Fn(&str) -> Option<String>) -> Toolchain {
        let Some(p) = pin else {
            return Toolchain::default();
        };
        let explicit = env("RUSTUP_TOOLCHAIN").filter(|t| {
            !t.is_empty()
                && match env("RUSTUP_TOOLCHAIN_SOURCE").as_deref() {
                    None => true,
                    Some(src) => src == "env" || src == "cli",
                }
        });
        match explicit {
            Some(user) if !same_toolchain(&user, &p.channel) => Toolchain {
                pin: Some(p),
                rustup_toolchain: None,
                user_override: Some(user),
            },
            _ => Toolchain {
                rustup_toolchain: Some(p.channel.clone()),
                pin: Some(p),
                user_override: None,
            },
        }
    }

    /// Reads the pin for `root` and decides with the process environment.
    pub fn for_workspace(root: &Path) -> Result<Toolchain, ToolchainError> {
        let pin = find_pin(root)?;
        Ok(Toolchain::decide(pin, &|k| std::env::var(k).ok()))
    }

    /// The note to print once when the user's `RUSTUP_TOOLCHAIN` overrides the pin.
    pub fn override_note(&self) -> Option<String> {
        let (user, pin) = (self.user_override.as_ref()?, self.pin.as_ref()?);
        Some(format!(
            "RUSTUP_TOOLCHAIN={user} overrides `{}` pinned in {}",
            pin.channel,
            pin.file.display()
        ))
    }

    /// A `cargo` command for the workspace: the rustup proxy with the pinned toolchain,
    /// else `$CARGO` (the cargo running us) or `cargo`.
    pub fn cargo(&self) -> Command {
        match &self.rustup_toolchain {
            Some(tc) => {
                // A missing toolchain is reported with the install command (see
                // `verbose_version`), never installed behind the user's back.
                let mut c = Command::new("cargo");
                c.env("RUSTUP_TOOLCHAIN", tc)
                    .env("RUSTUP_AUTO_INSTALL", "0")
                    .env_remove("RUSTC");
                c
            }
            None => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
        }
    }

    /// A `rustc` command for the workspace's toolchain.
    pub fn rustc(&self) -> Command {
        match &self.rustup_toolchain {
            Some(tc) => {
                let mut c = Command::new("rustc");
                c.env("RUSTUP_TOOLCHAIN", tc)
                    .env("RUSTUP_AUTO_INSTALL", "0");
                c
            }
            None => Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())),
        }
    }

    /// The toolchain's name for messages and hints.
    pub fn name(&self) -> String {
        self.rustup_toolchain
            .clone()
            .or_else(|| self.user_override.clone())
            .or_else(|| std::env::var("RUSTUP_TOOLCHAIN").ok())
            .unwrap_or_else(|| "stable".into())
    }

    /// `rustc -vV` of the toolchain; a pinned toolchain that does not run is reported
    /// as not installed, with the install command.
    pub fn verbose_version(
        &self,
        root: &Path,
        wanted_target: &str,
    ) -> Result<String, ToolchainError> {
        let mut cmd = self.rustc();
        cmd.arg("-vV")
            .current_dir(root)
            .stdin(Stdio::null())
            .env("RUSTUP_AUTO_INSTALL", "0");
        let out = cmd.output();
        match (&self.rustup_toolchain, &self.pin, out) {
            (_, _, Ok(o)) if o.status.success() => {
                Ok(String::from_utf8_lossy(&o.stdout).into_owned())
            }
            (Some(_), Some(pin), out) => {
                let detail = match out {
                    Ok(o) => {
                        let err = String::from_utf8_lossy(&o.stderr);
                        match err.lines().find(|l| !l.trim().is_empty()) {
                            Some(l) => format!(" (rustup: {})", l.trim()),
                            None => String::new(),
                        }
                    }
                    Err(e) => format!(" (could not run rustc: {e})"),
                };
                let target = if wanted_target.ends_with(".json") {
                    pin.targets
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "x86_64-unknown-none".into())
                } else {
                    wanted_target.to_string()
                };
                Err(ToolchainError::NotInstalled {
                    file: pin.file.clone(),
                    channel: pin.channel.clone(),
                    target,
                    detail,
                })
            }
            (_, _, Ok(o)) => Err(ToolchainError::Spawn {
                program: "rustc -vV".into(),
                reason: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            }),
            (_, _, Err(e)) => Err(ToolchainError::Spawn {
                program: "rustc -vV".into(),
                reason: format!("{e}; is Rust installed?"),
            }),
        }
    }

    fn sysroot(&self, root: &Path) -> Result<PathBuf, ToolchainError> {
        let out = self
            .rustc()
            .args(["--print", "sysroot"])
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| ToolchainError::Spawn {
                program: "rustc --print sysroot".into(),
                reason: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(ToolchainError::Spawn {
                program: "rustc --print sysroot".into(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }

    /// How to check `wanted`: as is when the toolchain has its std (or it is the host or
    /// a custom target file); with `-Z build-std=core,alloc` on a nightly with rust-src;
    /// the host target when `host_fallback` allows it; else a `TargetMissing` error.
    pub fn resolve_target(
        &self,
        root: &Path,
        wanted: &str,
        host_fallback: bool,
    ) -> Result<TargetChoice, ToolchainError> {
        let vv = self.verbose_version(root, wanted)?;
        let plain = |triple: &str| TargetChoice {
            triple: triple.to_string(),
            build_std: false,
            note: None,
        };
        if wanted.ends_with(".json") {
            return Ok(plain(wanted));
        }
        let host = vv
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        if host == wanted {
            return Ok(plain(wanted));
        }
        let sysroot = self.sysroot(root)?;
        if sysroot
            .join("lib/rustlib")
            .join(wanted)
            .join("lib")
            .is_dir()
        {
            return Ok(plain(wanted));
        }
        let release = vv
            .lines()
            .find_map(|l| l.strip_prefix("release: "))
            .unwrap_or("")
            .trim()
            .to_string();
        let nightly = release.contains("nightly") || release.contains("dev");
        let rust_src = sysroot.join("lib/rustlib/src/rust/library").is_dir();
        let name = self.name();
        if nightly && rust_src {
            if config_sets_build_std(root) {
                return Ok(plain(wanted));
            }
            return Ok(TargetChoice {
                triple: wanted.to_string(),
                build_std: true,
                note: Some(format!(
                    "{wanted} has no rust-std for {name}; checking with -Z build-std=core,alloc"
                )),
            });
        }
        if host_fallback && !host.is_empty() {
            return Ok(TargetChoice {
                triple: host.clone(),
                build_std: false,
                note: Some(format!(
                    "{name} has no rust-std for {wanted}; checking the host target {host} instead (--host-fallback)"
                )),
            });
        }
        let why = if nightly {
            " and no rust-src component for -Z build-std".to_string()
        } else {
            format!(" (and {name} is not a nightly, so -Z build-std is not available)")
        };
        Err(ToolchainError::TargetMissing {
            target: wanted.to_string(),
            toolchain: name,
            why,
        })
    }
}

/// What `cargo check` gets for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetChoice {
    /// `--target` value.
    pub triple: String,
    /// Add `-Z build-std=core,alloc`.
    pub build_std: bool,
    /// Said once on stderr.
    pub note: Option<String>,
}

fn same_toolchain(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}-")) || b.starts_with(&format!("{a}-"))
}

/// Whether the workspace's `.cargo/config.toml` (or `.cargo/config`) sets
/// `[unstable] build-std` already.
pub fn config_sets_build_std(root: &Path) -> bool {
    root.ancestors().any(|dir| {
        ["config.toml", "config"].iter().any(|name| {
            std::fs::read_to_string(dir.join(".cargo").join(name))
                .ok()
                .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
                .and_then(|v| v.get("unstable")?.get("build-std").cloned())
                .is_some()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn toml_pin_is_parsed() {
        let pin = parse(
            "[toolchain]\nchannel = \"nightly-2024-05-01\"\ntargets = [\"aarch64-unknown-none\"]\ncomponents = [\"rust-src\", \"llvm-tools\"]\n",
            Path::new("rust-toolchain.toml"),
        )
        .unwrap();
        assert_eq!(pin.channel, "nightly-2024-05-01");
        assert_eq!(pin.targets, ["aarch64-unknown-none"]);
        assert_eq!(pin.components, ["rust-src", "llvm-tools"]);
    }

    #[test]
    fn legacy_one_line_pin_is_parsed() {
        let pin = parse("nightly-2023-01-01\n", Path::new("rust-toolchain")).unwrap();
        assert_eq!(pin.channel, "nightly-2023-01-01");
        assert!(pin.targets.is_empty());
        // The legacy file may hold TOML too.
        let pin = parse(
            "[toolchain]\nchannel = \"stable\"\n",
            Path::new("rust-toolchain"),
        )
        .unwrap();
        assert_eq!(pin.channel, "stable");
    }

    #[test]
    fn bad_files_name_the_file() {
        for text in [
            "[toolchain]\ntargets = []\n",
            "[other]\nx = 1\n",
            "[toolchain\n",
            "[toolchain]\nchannel = 3\n",
        ] {
            let err = parse(text, Path::new("/w/rust-toolchain.toml")).unwrap_err();
            assert!(
                err.to_string().starts_with("/w/rust-toolchain.toml: "),
                "{err}"
            );
        }
    }

    #[test]
    fn find_pin_walks_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rust-toolchain"), "nightly\n").unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(find_pin(&sub).unwrap().unwrap().channel, "nightly");
        std::fs::write(
            sub.join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"beta\"\n",
        )
        .unwrap();
        assert_eq!(find_pin(&sub).unwrap().unwrap().channel, "beta");
    }

    #[test]
    fn the_pin_replaces_what_a_rustup_proxy_exported() {
        let pin = || Some(parse("nightly-2024-05-01", Path::new("rust-toolchain")).unwrap());
        // `cargo eterna-port` from another directory: the outer default toolchain.
        let vars = [
            ("RUSTUP_TOOLCHAIN", "stable-x86_64-unknown-linux-gnu"),
            ("RUSTUP_TOOLCHAIN_SOURCE", "default"),
        ];
        let tc = Toolchain::decide(pin(), &env(&vars));
        assert_eq!(tc.rustup_toolchain.as_deref(), Some("nightly-2024-05-01"));
        assert!(tc.override_note().is_none());
        // The user's explicit choice wins, and is said.
        for src in [Some("env"), Some("cli"), None] {
            let mut vars = vec![("RUSTUP_TOOLCHAIN", "beta")];
            if let Some(s) = src {
                vars.push(("RUSTUP_TOOLCHAIN_SOURCE", s));
            }
            let tc = Toolchain::decide(pin(), &env(&vars));
            assert_eq!(tc.rustup_toolchain, None);
            assert!(tc
                .override_note()
                .unwrap()
                .contains("RUSTUP_TOOLCHAIN=beta"));
        }
        // No pin: the environment is left alone.
        let tc = Toolchain::decide(None, &env(&[("RUSTUP_TOOLCHAIN", "beta")]));
        assert_eq!(tc.rustup_toolchain, None);
        assert!(tc.override_note().is_none());
    }

    #[test]
    fn build_std_in_cargo_config_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!config_sets_build_std(dir.path()));
        std::fs::create_dir(dir.path().join(".cargo")).unwrap();
        std::fs::write(
            dir.path().join(".cargo/config.toml"),
            "[unstable]\nbuild-std = [\"core\", \"alloc\"]\n",
        )
        .unwrap();
        assert!(config_sets_build_std(dir.path()));
    }
}
