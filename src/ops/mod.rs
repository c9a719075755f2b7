//! The pipeline as library calls: every command of the command line, and the REST API
//! that comes next, opens a [`Session`] on a workspace and calls one function here
//! ([`port::run`], [`index::refresh`], …). These functions never print: what they have
//! to say goes to the caller as events and results, and their errors are typed
//! ([`Error`]), so that one place (`app::run`) turns them into exit codes.

pub mod ask;
pub mod boot;
pub mod check;
pub mod draft_check;
pub mod error;
pub mod fix;
pub mod index;
pub mod port;

use std::path::PathBuf;

pub use error::Error;

use crate::config::{process_env, Config, Flags};
use crate::knowledge::Knowledge;
use crate::plan::{self, Plan};
use crate::workspace::{scan_packages, Diagnostic, ScanLimits, ScannedModule, Workspace};

/// What selects the workspace and its configuration (the global flags of the command
/// line).
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The workspace's `Cargo.toml`; `None`: found from the current directory.
    pub manifest_path: Option<PathBuf>,
    /// Only these packages (`-p`); empty: the default members.
    pub packages: Vec<String>,
    /// Every member of the workspace (`--workspace`).
    pub workspace: bool,
    /// The x86_64 target triple given as a flag (beats the environment and metadata).
    pub target: Option<String>,
}

/// A workspace opened for work: its cargo metadata, the effective configuration and
/// the concept map.
pub struct Session {
    /// The workspace (cargo metadata).
    pub ws: Workspace,
    /// The effective configuration, each setting with its source.
    pub config: Config,
    /// The ARM64 → x86_64 concept map.
    pub knowledge: Knowledge,
    /// What the configuration found questionable but usable (unknown keys, …), for the
    /// caller to show.
    pub warnings: Vec<String>,
    /// The packages asked for (`-p`); empty: the default members.
    pub packages: Vec<String>,
}

impl Session {
    /// Runs cargo metadata (while the concept map is parsed) and resolves the
    /// configuration.
    pub fn open(opts: &SessionOptions) -> Result<Session, Error> {
        let started = std::time::Instant::now();
        let (ws, knowledge) = std::thread::scope(|scope| {
            let knowledge = scope.spawn(Knowledge::embedded);
            let ws = Workspace::load(
                opts.manifest_path.as_deref(),
                &opts.packages,
                opts.workspace,
            );
            let knowledge = knowledge
                .join()
                .unwrap_or(Err(crate::knowledge::KnowledgeError::Panicked));
            (ws, knowledge)
        });
        let ws = ws?;
        let knowledge = knowledge?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "cargo metadata and knowledge loaded"
        );
        let mut warnings = Vec::new();
        let flags = Flags {
            target: opts.target.clone(),
        };
        let config = Config::resolve(&ws, &flags, &process_env, &mut warnings)?;
        Ok(Session {
            ws,
            config,
            knowledge,
            warnings,
            packages: opts.packages.clone(),
        })
    }

    /// The tool's own files (its target directory, the store and its journals): not
    /// the user's changes when the writer looks at the git tree.
    pub fn own_paths(&self) -> Vec<PathBuf> {
        let db = &self.config.db.value;
        let journal = |suffix: &str| {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            PathBuf::from(p)
        };
        vec![
            self.ws.target_dir.clone(),
            db.clone(),
            journal("-wal"),
            journal("-shm"),
            journal("-journal"),
        ]
    }

    /// Scans the workspace's module trees. `use_cache`: read and update the scan cache
    /// (off for a dry run, which writes nothing); `progress` hears the files scanned so
    /// far.
    pub fn scan(
        &self,
        use_cache: bool,
        progress: &(dyn Fn(usize) + Sync),
    ) -> (Vec<ScannedModule>, Vec<Diagnostic>) {
        let limits = ScanLimits {
            max_file_size: self.config.max_file_size.value,
        };
        let started = std::time::Instant::now();
        let cache = self.ws.target_dir.join("eterna-port").join("scan-cache");
        let cache = use_cache.then_some(cache.as_path());
        let scanned = scan_packages(&self.ws, &self.knowledge, limits, cache, progress);
        tracing::debug!(
            files = scanned.0.len(),
            ms = started.elapsed().as_millis() as u64,
            "workspace scanned"
        );
        scanned
    }

    /// Scans the workspace and builds the whole plan (with its ARM-only dependencies).
    pub fn full_plan(&self, use_cache: bool, progress: &(dyn Fn(usize) + Sync)) -> Plan {
        let (modules, diagnostics) = self.scan(use_cache, progress);
        let started = std::time::Instant::now();
        let mut plan = plan::build(
            &self.ws.root,
            &self.config.target.value,
            &modules,
            diagnostics,
            &self.knowledge,
        );
        plan.arm_dependencies =
            plan::arm_dependencies(self.ws.packages(), &modules, &plan, &self.knowledge);
        tracing::debug!(
            planned = plan.modules.len(),
            ms = started.elapsed().as_millis() as u64,
            "plan built"
        );
        plan
    }
}
