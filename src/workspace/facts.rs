//! What the agents' prompts may say about a workspace, read from it rather than
//! assumed: the toolchain its `rust-toolchain(.toml)` pins, each package's edition and
//! `rust-version`, whether its crate roots are `#![no_std]` and which `#![feature]`s
//! they enable, and the guest-visible trace its configuration names (`trace-prefix`,
//! `exit-code-pattern` in `[workspace.metadata.eterna-port]`). Whatever cannot be read
//! is left out of the prompts, never guessed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::Workspace;
use crate::config::ConsolePatterns;

/// The toolchain the workspace builds with, as its files say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ToolchainFact {
    /// Not read (the prompts say nothing about the toolchain).
    #[default]
    Unknown,
    /// No toolchain file: the default toolchain builds it.
    Unpinned,
    /// `channel` pinned by `file` (workspace-relative when inside it).
    Pinned {
        /// The channel (`nightly-2025-05-20`, `1.85`).
        channel: String,
        /// The toolchain file.
        file: String,
        /// A nightly channel (unstable features available).
        nightly: bool,
    },
}

impl ToolchainFact {
    /// From the workspace's toolchain file (see [`crate::toolchain::find_pin`]).
    pub fn read(root: &Path) -> ToolchainFact {
        match crate::toolchain::find_pin(root) {
            Ok(Some(pin)) => ToolchainFact::Pinned {
                nightly: is_nightly(&pin.channel),
                file: super::relative_to(root, &pin.file),
                channel: pin.channel,
            },
            Ok(None) => ToolchainFact::Unpinned,
            Err(e) => {
                tracing::warn!("the prompts say nothing of the toolchain: {e}");
                ToolchainFact::Unknown
            }
        }
    }
}

/// Whether a toolchain channel is a nightly (`nightly`, `nightly-2024-05-01`,
/// `nightly-2024-05-01-x86_64-unknown-linux-gnu`).
pub fn is_nightly(channel: &str) -> bool {
    channel == "nightly" || channel.starts_with("nightly-")
}

/// What one package's manifest and crate roots say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageFacts {
    /// `2015`, `2018`, `2021`, `2024`.
    pub edition: String,
    /// The manifest's `rust-version`, if it sets one.
    pub rust_version: Option<String>,
    /// `Some(true)`: every lib/bin crate root is `#![no_std]` (also under a
    /// `cfg_attr`, e.g. `cfg_attr(not(test), no_std)`); `Some(false)`: none is;
    /// `None`: they differ or could not be read.
    pub no_std: Option<bool>,
    /// The `#![feature(...)]` names its crate roots enable, sorted.
    pub features: Vec<String>,
}

/// The guest-visible trace the workspace's configuration names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceRule {
    /// Every guest-visible event is one line starting with this.
    pub prefix: String,
    /// The line that closes the trace (followed by the exit code), if configured.
    pub exit_prefix: Option<String>,
}

impl TraceRule {
    /// The rule of a configuration: only when it names a trace prefix.
    pub fn from_console(c: &ConsolePatterns) -> Option<TraceRule> {
        let prefix = c.trace_prefix.as_ref()?.value.clone();
        Some(TraceRule {
            prefix,
            exit_prefix: c.exit_code_pattern.as_ref().map(|s| s.value.clone()),
        })
    }
}

/// Everything the prompts may state about the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkspaceFacts {
    /// The toolchain that builds the workspace.
    pub toolchain: ToolchainFact,
    /// By package name.
    pub packages: BTreeMap<String, PackageFacts>,
    /// The guest-visible trace rule, only when the workspace configures one.
    pub trace: Option<TraceRule>,
}

impl WorkspaceFacts {
    /// Reads the facts of the selected packages of `ws`, with its console configuration.
    pub fn read(ws: &Workspace, console: &ConsolePatterns) -> WorkspaceFacts {
        let packages = ws
            .packages()
            .map(|p| {
                let roots: Vec<String> = super::target_roots(p)
                    .into_iter()
                    .filter_map(|(_, root)| std::fs::read_to_string(root).ok())
                    .collect();
                (
                    p.name.to_string(),
                    PackageFacts {
                        edition: p.edition.as_str().to_string(),
                        rust_version: p.rust_version.as_ref().map(|v| {
                            // `1.87` is written `1.87.0` by cargo metadata; say it as set.
                            if v.patch == 0 {
                                format!("{}.{}", v.major, v.minor)
                            } else {
                                v.to_string()
                            }
                        }),
                        ..crate_root_facts(&roots)
                    },
                )
            })
            .collect();
        WorkspaceFacts {
            toolchain: ToolchainFact::read(&ws.root),
            packages,
            trace: TraceRule::from_console(console),
        }
    }
}

/// `no_std` and `features` of a package from the texts of its crate roots.
pub fn crate_root_facts(roots: &[String]) -> PackageFacts {
    let mut no_std = Vec::new();
    let mut features = Vec::new();
    for text in roots {
        let Ok(file) = syn::parse_file(text) else {
            no_std.push(None);
            continue;
        };
        let mut this = false;
        for attr in &file.attrs {
            if attr.path().is_ident("no_std") {
                this = true;
            } else if attr.path().is_ident("cfg_attr") {
                // `cfg_attr(not(test), no_std)` and the like: no_std where it is built.
                let tokens: String = quote::ToTokens::to_token_stream(&attr.meta)
                    .to_string()
                    .split_whitespace()
                    .collect();
                this |= tokens.ends_with(",no_std)");
            } else if attr.path().is_ident("feature") {
                // Only unconditional features: a `cfg_attr`'d one may be off on x86_64.
                if let Ok(list) = attr.parse_args_with(
                    syn::punctuated::Punctuated::<syn::Ident, syn::Token![,]>::parse_terminated,
                ) {
                    features.extend(list.iter().map(|i| i.to_string()));
                }
            }
        }
        no_std.push(Some(this));
    }
    proc_macro2::extra::invalidate_current_thread_spans();
    features.sort();
    features.dedup();
    let no_std = match no_std.first() {
        Some(first) if no_std.iter().all(|n| n == first) => *first,
        _ => None,
    };
    PackageFacts {
        no_std,
        features,
        ..PackageFacts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_roots_say_no_std_and_features() {
        let f = crate_root_facts(&[
            "#![no_std]\n#![feature(naked_functions, asm_const)]\nfn main() {}\n".into(),
        ]);
        assert_eq!(f.no_std, Some(true));
        assert_eq!(f.features, ["asm_const", "naked_functions"]);
        let f = crate_root_facts(&["#![cfg_attr(not(test), no_std)]\npub fn f() {}\n".into()]);
        assert_eq!(f.no_std, Some(true));
        assert!(f.features.is_empty());
        let f = crate_root_facts(&[
            "#![cfg_attr(target_arch = \"aarch64\", feature(stdarch_arm_hints))]\n".into(),
        ]);
        assert_eq!(f.no_std, Some(false));
        assert!(
            f.features.is_empty(),
            "a gated feature may be off on x86_64"
        );
        // A std lib beside a no_std bin: no claim either way.
        let f = crate_root_facts(&["#![no_std]\n".into(), "pub fn f() {}\n".into()]);
        assert_eq!(f.no_std, None);
        // A root that does not parse: no claim.
        assert_eq!(crate_root_facts(&["fn (".into()]).no_std, None);
    }

    #[test]
    fn the_toolchain_file_decides_the_channel() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ToolchainFact::read(dir.path()), ToolchainFact::Unpinned);
        std::fs::write(
            dir.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"nightly-2024-06-01\"\n",
        )
        .unwrap();
        assert_eq!(
            ToolchainFact::read(dir.path()),
            ToolchainFact::Pinned {
                channel: "nightly-2024-06-01".into(),
                file: "rust-toolchain.toml".into(),
                nightly: true,
            }
        );
        std::fs::write(dir.path().join("rust-toolchain.toml"), "[oops\n").unwrap();
        assert_eq!(ToolchainFact::read(dir.path()), ToolchainFact::Unknown);
        assert!(is_nightly("nightly") && !is_nightly("1.80.0") && !is_nightly("stable"));
    }
}
