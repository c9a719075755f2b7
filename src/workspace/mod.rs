//! Reading the user's workspace: cargo metadata, then each target's module tree.
//!
//! Metadata is read with `--no-deps --offline`: the plan needs only the workspace's own
//! packages, and a workspace whose git dependencies cannot be fetched must still plan.

mod cache;
mod evidence;
mod facts;
mod scan;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use cargo_metadata::{Metadata, MetadataCommand, Package};

pub use evidence::{
    arch_gate_of, is_arm64_only, is_string_literal, tidy_tokens, type_name, ArchGate, Evidence,
    EvidenceKind, ParseError,
};
pub use facts::{
    crate_root_facts, is_nightly, PackageFacts, ToolchainFact, TraceRule, WorkspaceFacts,
};
pub use scan::{
    is_arm64_path, scan_packages, Diagnostic, GatedRoot, Item, ItemKind, ScanLimits, ScannedModule,
    Severity,
};

/// The workspace as cargo describes it, restricted to the selected packages.
#[derive(Debug)]
pub struct Workspace {
    /// The workspace root (the directory of its root `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory for the workspace.
    pub target_dir: PathBuf,
    /// The whole `cargo metadata` answer.
    pub metadata: Metadata,
    /// Indexes into `metadata.packages` of the packages in scope (`-p`, else all members).
    pub selected: Vec<usize>,
}

impl Workspace {
    /// Runs `cargo metadata --no-deps --offline` for `manifest_path` (or the current
    /// directory) and selects packages as cargo does: `packages` if given; else, when
    /// the manifest is a member's (not the workspace root's), that member; else every
    /// member. `whole_workspace` (`--workspace`) selects every member regardless.
    pub fn load(
        manifest_path: Option<&Path>,
        packages: &[String],
        whole_workspace: bool,
    ) -> Result<Self> {
        let mut cmd = MetadataCommand::new();
        cmd.no_deps().other_options(vec!["--offline".to_string()]);
        if let Some(path) = manifest_path {
            check_manifest_path(path)?;
            cmd.manifest_path(path);
        }
        // The workspace's pinned toolchain (rust-toolchain.toml) runs cargo metadata too.
        let start = match manifest_path {
            Some(p) => p
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            None => std::env::current_dir().ok(),
        };
        let toolchain = match &start {
            Some(dir) => crate::toolchain::Toolchain::for_workspace(dir)?,
            None => crate::toolchain::Toolchain::default(),
        };
        if let Some(tc) = &toolchain.rustup_toolchain {
            cmd.cargo_path("cargo")
                .env("RUSTUP_TOOLCHAIN", tc)
                .env("RUSTUP_AUTO_INSTALL", "0");
        }
        let metadata = match cmd.exec() {
            Ok(m) => m,
            Err(e) => {
                // A pinned toolchain that is not installed: say that, with the command.
                if let (Some(_), Some(dir)) = (&toolchain.rustup_toolchain, &start) {
                    let target = toolchain
                        .pin
                        .as_ref()
                        .and_then(|p| p.targets.first().cloned())
                        .unwrap_or_else(|| "x86_64-unknown-none".into());
                    toolchain.verbose_version(dir, &target)?;
                }
                return Err(metadata_error(e, manifest_path));
            }
        };
        let root = metadata.workspace_root.clone().into_std_path_buf();
        let target_dir = metadata.target_directory.clone().into_std_path_buf();

        let members: Vec<usize> = metadata
            .packages
            .iter()
            .enumerate()
            .filter(|(_, p)| metadata.workspace_members.contains(&p.id))
            .map(|(i, _)| i)
            .collect();
        let own_package = || {
            let located = match manifest_path {
                Some(p) => p.canonicalize().ok(),
                None => std::env::current_dir().ok().and_then(|d| {
                    d.ancestors()
                        .map(|a| a.join("Cargo.toml"))
                        .find(|m| m.is_file())
                        .and_then(|m| m.canonicalize().ok())
                }),
            }?;
            if located == root.join("Cargo.toml").canonicalize().ok()? {
                return None;
            }
            members.iter().copied().find(|&i| {
                metadata.packages[i]
                    .manifest_path
                    .as_std_path()
                    .canonicalize()
                    .is_ok_and(|m| m == located)
            })
        };
        let selected = if packages.is_empty() {
            match (whole_workspace, own_package()) {
                (false, Some(i)) => vec![i],
                _ => members,
            }
        } else {
            let mut selected = Vec::new();
            for spec in packages {
                let found = members
                    .iter()
                    .copied()
                    .find(|&i| metadata.packages[i].name.as_str() == spec.as_str());
                match found {
                    Some(i) if !selected.contains(&i) => selected.push(i),
                    Some(_) => {}
                    None => {
                        let names: Vec<&str> = members
                            .iter()
                            .map(|&i| metadata.packages[i].name.as_str())
                            .collect();
                        bail!(
                            "package `{spec}` (from `-p/--package`) is not a member of the workspace at {}; members: {}",
                            root.display(),
                            names.join(", ")
                        );
                    }
                }
            }
            selected
        };
        Ok(Workspace {
            root,
            target_dir,
            metadata,
            selected,
        })
    }

    /// The packages in scope.
    pub fn packages(&self) -> impl Iterator<Item = &Package> {
        self.selected.iter().map(|&i| &self.metadata.packages[i])
    }

    /// The package whose `[package.metadata.eterna-port]` applies: the only selected
    /// package, else the workspace's root package if it has one.
    pub fn config_package(&self) -> Option<&Package> {
        if self.selected.len() == 1 {
            return Some(&self.metadata.packages[self.selected[0]]);
        }
        self.metadata.root_package()
    }

    /// `path` relative to the workspace root, with `/` separators (for reports).
    pub fn relative(&self, path: &Path) -> String {
        relative_to(&self.root, path)
    }
}

/// `path` relative to `root` with `/` separators; unchanged when outside `root`.
pub fn relative_to(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn check_manifest_path(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!(
            "manifest path `{}` (from `--manifest-path`) does not exist; pass the path of a Cargo.toml",
            path.display()
        );
    }
    if path.is_dir() || path.file_name().is_some_and(|n| n != "Cargo.toml") {
        bail!(
            "manifest path `{}` (from `--manifest-path`) is not a Cargo.toml file; pass the path of the workspace's Cargo.toml",
            path.display()
        );
    }
    Ok(())
}

fn metadata_error(err: cargo_metadata::Error, manifest_path: Option<&Path>) -> anyhow::Error {
    match err {
        cargo_metadata::Error::CargoMetadata { stderr } => {
            let msg = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("error: "))
                .collect::<Vec<_>>()
                .join("\n  ");
            if msg.contains("could not find `Cargo.toml`") {
                anyhow::anyhow!(
                    "not inside a cargo project: {msg}\n  run `cargo eterna-port` inside the hypervisor's workspace, or pass `--manifest-path PATH/Cargo.toml`"
                )
            } else {
                let what = manifest_path
                    .map(|p| format!("`{}`", p.display()))
                    .unwrap_or_else(|| "the workspace".to_string());
                anyhow::anyhow!("cargo metadata failed for {what}:\n  {msg}")
            }
        }
        other => anyhow::Error::new(other).context("could not run `cargo metadata`"),
    }
}

/// Roots of the module trees to walk in a package: its lib and bin targets.
pub fn target_roots(package: &Package) -> Vec<(String, PathBuf)> {
    let mut roots: Vec<(String, PathBuf)> = package
        .targets
        .iter()
        .filter(|t| {
            t.kind.iter().any(|k| {
                matches!(
                    k,
                    cargo_metadata::TargetKind::Lib
                        | cargo_metadata::TargetKind::RLib
                        | cargo_metadata::TargetKind::StaticLib
                        | cargo_metadata::TargetKind::CDyLib
                        | cargo_metadata::TargetKind::DyLib
                        | cargo_metadata::TargetKind::Bin
                )
            })
        })
        .map(|t| {
            (
                t.name.replace('-', "_"),
                t.src_path.clone().into_std_path_buf(),
            )
        })
        .collect();
    roots.sort();
    roots.dedup_by(|a, b| a.1 == b.1);
    roots
}

/// Parses an existing target file for its public items (for the plan's status).
pub fn analyze_target(
    text: &str,
    path: &Path,
    knowledge: &crate::knowledge::Knowledge,
) -> Result<evidence::FileFacts, evidence::ParseError> {
    evidence::analyze_file(text, path, knowledge)
}
