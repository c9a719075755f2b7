//! The safe writer, in the manner of `cargo fix`: it refuses a dirty git tree unless
//! told otherwise, writes every file atomically (temp file + rename, so a kill leaves
//! the old file or the new one, never half of one), remembers the hash of every file
//! it wrote, and never overwrites a generated file that someone edited since (unless
//! `--force`, and then a backup is kept). Unchanged content is not written at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::store::{NewArtifact, Store};

/// What the writer does with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// A new file.
    Create,
    /// An existing file gets new content.
    Update,
    /// The content is already there; nothing is written.
    Unchanged,
    /// Not written: a generated file that was edited by hand (or never generated).
    SkipEdited {
        /// Why it is skipped.
        reason: String,
    },
    /// Written with `--force`; the previous content is kept at `backup`.
    ForceUpdate {
        /// Where the previous content is kept.
        backup: String,
    },
}

/// A file to write and the decision about it.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Workspace-relative path.
    pub rel: String,
    /// The current content; `None` for a new file.
    pub old: Option<String>,
    /// The content to write.
    pub new: String,
    /// What the writer does with it.
    pub action: Action,
}

/// What the tool wrote: every version of every generated file, kept in the store's
/// `code_artifacts` (path, content, content hash, origin agent).
pub struct Ledger<'s> {
    /// `None` for a dry run with no store yet: nothing was written before, and
    /// nothing will be recorded.
    store: Option<&'s Store>,
    /// Content hashes ever written, per path.
    known: BTreeMap<String, BTreeSet<String>>,
    /// Module path of each file, for the artifact records.
    pub modules: BTreeMap<String, String>,
    /// The agent recorded as the origin of the files.
    pub origin_agent: &'static str,
    /// Per-file origin (agent, model) overriding `origin_agent`: files a model wrote.
    pub origins: BTreeMap<String, (String, Option<String>)>,
}

impl<'s> Ledger<'s> {
    /// The ledger of `store` (the hashes of every version written before); `None` records nothing.
    pub fn new(store: Option<&'s Store>, origin_agent: &'static str) -> Result<Ledger<'s>> {
        Ok(Ledger {
            known: match store {
                Some(s) => s.artifact_hashes()?,
                None => BTreeMap::new(),
            },
            store,
            modules: BTreeMap::new(),
            origin_agent,
            origins: BTreeMap::new(),
        })
    }

    /// Whether `text` at `rel` is content this tool wrote (any version).
    pub fn wrote(&self, rel: &str, text: &str) -> bool {
        self.known
            .get(rel)
            .is_some_and(|hashes| hashes.contains(&Store::content_hash(text)))
    }

    fn has_path(&self, rel: &str) -> bool {
        self.known.contains_key(rel)
    }

    fn record(&mut self, rel: &str, text: &str) -> Result<()> {
        let Some(store) = self.store else {
            bail!("internal: no store to record {rel} in");
        };
        let (agent, model) = match self.origins.get(rel) {
            Some((a, m)) => (a.as_str(), m.as_deref()),
            None => (self.origin_agent, None),
        };
        store.record_artifact(&NewArtifact {
            module: self.modules.get(rel).map(String::as_str).unwrap_or(""),
            path: rel,
            content: text,
            origin_agent: agent,
            model,
        })?;
        self.known
            .entry(rel.to_string())
            .or_default()
            .insert(Store::content_hash(text));
        Ok(())
    }
}

/// Refuses to write into a dirty or unversioned tree unless allowed. `own` are the
/// tool's own files and directories (the cargo target directory, the store and its
/// journal files): they are not the user's changes, so a tree whose only untracked or
/// modified entries are under them is clean (a workspace without a `.gitignore` for
/// `target/` is not dirty because the tool ran in it).
pub fn check_vcs(
    root: &Path,
    own: &[PathBuf],
    allow_dirty: bool,
    allow_no_vcs: bool,
) -> Result<()> {
    let out = Command::new("git")
        .args(["status", "--porcelain", "-z", "--untracked-files=all"])
        .current_dir(root)
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            if allow_no_vcs || allow_dirty {
                return Ok(());
            }
            bail!(
                "no git repository found at {} (or git is not installed); the port edits your source files, so commit them first, or pass `--allow-no-vcs` to write anyway",
                root.display()
            );
        }
    };
    // Porcelain paths are relative to the repository's top level, which may be above
    // `root`.
    let top = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim_end()))
        .unwrap_or_else(|| root.to_path_buf());
    let dirty = dirty_entries(&top, &out.stdout, own);
    if dirty.is_empty() || allow_dirty {
        return Ok(());
    }
    let shown: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
    bail!(
        "the working tree has uncommitted changes ({} file{}: {}{}); commit or stash them first, or pass `--allow-dirty` to write anyway",
        dirty.len(),
        if dirty.len() == 1 { "" } else { "s" },
        shown.join(", "),
        if dirty.len() > shown.len() { ", …" } else { "" }
    )
}

/// The paths of `git status --porcelain -z` output (relative to the repository's top
/// level `top`) that are not under one of `own`.
fn dirty_entries(top: &Path, porcelain: &[u8], own: &[PathBuf]) -> Vec<String> {
    let own: Vec<PathBuf> = own
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let top = std::fs::canonicalize(top).unwrap_or_else(|_| top.to_path_buf());
    let mut out = Vec::new();
    let mut fields = porcelain.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(field) = fields.next() {
        let entry = String::from_utf8_lossy(field);
        let (status, path) = (entry.get(..2).unwrap_or(""), entry.get(3..).unwrap_or(""));
        // A rename or copy is followed by its source path in a field of its own.
        if status.starts_with('R') || status.starts_with('C') {
            fields.next();
        }
        if !own.iter().any(|o| top.join(path).starts_with(o)) {
            out.push(path.to_string());
        }
    }
    out
}

/// Decides, per file, what to do. `generated` are the files the tool owns (port
/// targets); the rest are user files it edits in place (guarded by `check_vcs`).
pub fn decide(
    root: &Path,
    changes: Vec<(String, String)>,
    generated: &BTreeSet<String>,
    ledger: &Ledger<'_>,
    force: bool,
    backup_dir: &Path,
) -> Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (rel, new) in changes {
        let path = root.join(&rel);
        let old = match std::fs::read(&path) {
            Ok(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("{} is not UTF-8; it cannot be ported", path.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("could not read {}", path.display())),
        };
        let action = match &old {
            None => Action::Create,
            Some(o) if *o == new => Action::Unchanged,
            Some(o) if !generated.contains(&rel) || ledger.wrote(&rel, o) => Action::Update,
            Some(_) if force => Action::ForceUpdate {
                backup: crate::workspace::relative_to(root, &backup_dir.join(&rel)),
            },
            Some(_) => Action::SkipEdited {
                reason: if ledger.has_path(&rel) {
                    "edited since cargo-eterna-port wrote it".into()
                } else {
                    "exists and was not written by cargo-eterna-port".into()
                },
            },
        };
        out.push(Planned {
            rel,
            old,
            new,
            action,
        });
    }
    Ok(out)
}

/// Writes the planned files. Each new version is recorded in the store before its
/// file is renamed into place, so a kill between the two never makes a tool-written
/// file look hand-edited.
pub fn apply(
    root: &Path,
    planned: &[Planned],
    ledger: &mut Ledger<'_>,
    tmp_dir: &Path,
) -> Result<()> {
    for p in planned {
        if !matches!(
            p.action,
            Action::Create | Action::Update | Action::ForceUpdate { .. }
        ) {
            continue;
        }
        ledger.record(&p.rel, &p.new)?;
        if let (Action::ForceUpdate { backup }, Some(old)) = (&p.action, &p.old) {
            atomic_write(&root.join(backup), old.as_bytes(), Some(tmp_dir))?;
        }
        atomic_write(&root.join(&p.rel), p.new.as_bytes(), Some(tmp_dir))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temp file renamed into place. The temp file is
/// made in `tmp_dir` (outside the source tree) when that is on the same file system,
/// else beside `path`.
pub fn atomic_write(path: &Path, bytes: &[u8], tmp_dir: Option<&Path>) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".eterna-port-");
    // A new file gets the mode any editor would give it (0666 less the umask), not the
    // temp file's private 0600; an existing file keeps its own (restored below).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = match tmp_dir {
        Some(t) => {
            std::fs::create_dir_all(t).ok();
            builder.tempfile_in(t).or_else(|_| builder.tempfile_in(dir))
        }
        None => builder.tempfile_in(dir),
    }
    .with_context(|| format!("could not create a temporary file for {}", path.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("could not write {}", path.display()))?;
    let perms = std::fs::metadata(path).map(|m| m.permissions()).ok();
    match tmp.persist(path) {
        Ok(_) => {}
        Err(e) => {
            // Across file systems a rename fails: retry with a temp file beside `path`.
            if tmp_dir.is_some() {
                return atomic_write(path, bytes, None);
            }
            return Err(e.error).with_context(|| format!("could not write {}", path.display()));
        }
    }
    if let Some(p) = perms {
        let _ = std::fs::set_permissions(path, p);
    }
    Ok(())
}

/// A unified diff of one planned file (for `--dry-run`).
pub fn diff(p: &Planned) -> String {
    let old = p.old.as_deref().unwrap_or("");
    similar::TextDiff::from_lines(old, &p.new)
        .unified_diff()
        .context_radius(3)
        .header(
            &if p.old.is_some() {
                format!("a/{}", p.rel)
            } else {
                "/dev/null".into()
            },
            &format!("b/{}", p.rel),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.email=t@t", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn the_tools_own_files_do_not_make_the_tree_dirty_but_a_user_edit_does() {
        let repo = tempfile::tempdir().unwrap();
        // The workspace is a subdirectory of the repository, with no .gitignore.
        let ws = repo.path().join("hv");
        std::fs::create_dir_all(ws.join("src")).unwrap();
        std::fs::write(ws.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        git(repo.path(), &["init", "-q"]);
        git(repo.path(), &["add", "-A"]);
        git(repo.path(), &["commit", "-qm", "base"]);
        let target = ws.join("target");
        std::fs::create_dir_all(target.join("eterna-port/scan-cache")).unwrap();
        std::fs::write(target.join("eterna-port/scan-cache/a.json"), "{}").unwrap();
        let db = ws.join("port.db");
        std::fs::write(&db, "x").unwrap();
        std::fs::write(ws.join("port.db-wal"), "x").unwrap();
        let own = [target.clone(), db.clone(), ws.join("port.db-wal")];
        check_vcs(&ws, &own, false, false).unwrap();
        // A `target/` at the repository's top level is not the workspace's.
        std::fs::create_dir_all(repo.path().join("target")).unwrap();
        std::fs::write(repo.path().join("target/notes.txt"), "mine").unwrap();
        std::fs::write(ws.join("src/lib.rs"), "pub fn f() { edited() }\n").unwrap();
        let err = check_vcs(&ws, &own, false, false).unwrap_err().to_string();
        assert!(
            err.contains("(2 files: ")
                && err.contains("hv/src/lib.rs")
                && err.contains("target/notes.txt")
                && !err.contains("scan-cache")
                && !err.contains("port.db"),
            "{err}"
        );
        check_vcs(&ws, &own, true, false).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_usual_mode_and_existing_files_keep_theirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // Whatever the umask, a file created the usual way is the reference.
        let reference = dir.path().join("reference");
        std::fs::write(&reference, "x").unwrap();
        let new = dir.path().join("sub/new.rs");
        atomic_write(&new, b"new", Some(&dir.path().join("tmp"))).unwrap();
        assert_eq!(mode(&new), mode(&reference));
        assert_ne!(mode(&new), 0o600, "not the temp file's private mode");
        let script = dir.path().join("script.sh");
        std::fs::write(&script, "old").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o750)).unwrap();
        atomic_write(&script, b"new", None).unwrap();
        assert_eq!(mode(&script), 0o750);
    }

    #[test]
    fn decisions_protect_edited_generated_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("gen.rs"), "ours\n").unwrap();
        std::fs::write(root.join("edited.rs"), "theirs\n").unwrap();
        std::fs::write(root.join("same.rs"), "same\n").unwrap();
        std::fs::write(root.join("user.rs"), "user\n").unwrap();
        let store = Store::open(&root.join("store.db")).unwrap();
        store
            .record_artifact(&NewArtifact {
                module: "m",
                path: "gen.rs",
                content: "ours\n",
                origin_agent: "test",
                model: None,
            })
            .unwrap();
        store
            .record_artifact(&NewArtifact {
                module: "m",
                path: "edited.rs",
                content: "ours\n",
                origin_agent: "test",
                model: None,
            })
            .unwrap();
        let mut ledger = Ledger::new(Some(&store), "offline-engine").unwrap();
        let generated: BTreeSet<String> = ["gen.rs", "edited.rs", "same.rs", "new.rs"]
            .map(String::from)
            .into();
        let changes = vec![
            ("gen.rs".to_string(), "v2\n".to_string()),
            ("edited.rs".to_string(), "v2\n".to_string()),
            ("same.rs".to_string(), "same\n".to_string()),
            ("new.rs".to_string(), "new\n".to_string()),
            ("user.rs".to_string(), "wired\n".to_string()),
        ];
        let backups = root.join("backup");
        let got = decide(root, changes.clone(), &generated, &ledger, false, &backups).unwrap();
        let actions: Vec<&Action> = got.iter().map(|p| &p.action).collect();
        assert_eq!(actions[0], &Action::Update);
        assert!(matches!(actions[1], Action::SkipEdited { .. }));
        assert_eq!(actions[2], &Action::Unchanged);
        assert_eq!(actions[3], &Action::Create);
        assert_eq!(actions[4], &Action::Update, "in-place edits of user files");

        let forced = decide(root, changes, &generated, &ledger, true, &backups).unwrap();
        assert!(matches!(forced[1].action, Action::ForceUpdate { .. }));
        apply(root, &forced, &mut ledger, &root.join("tmp")).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("edited.rs")).unwrap(),
            "v2\n"
        );
        assert_eq!(
            std::fs::read_to_string(backups.join("edited.rs")).unwrap(),
            "theirs\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("new.rs")).unwrap(),
            "new\n"
        );
        // The store now knows the new content, across a reload.
        let reloaded = Ledger::new(Some(&store), "offline-engine").unwrap();
        assert!(reloaded.wrote("edited.rs", "v2\n"));
        assert!(reloaded.wrote("new.rs", "new\n"));
        assert!(!reloaded.wrote("edited.rs", "theirs\n"));
        // No temp files are left in the tree.
        let stray: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".eterna-port-"))
            .collect();
        assert!(stray.is_empty());
    }

    #[test]
    fn diff_is_unified() {
        let p = Planned {
            rel: "src/a.rs".into(),
            old: Some("a\nb\n".into()),
            new: "a\nc\n".into(),
            action: Action::Update,
        };
        let d = diff(&p);
        assert!(d.contains("--- a/src/a.rs\n+++ b/src/a.rs\n"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
    }
}

/// The one writing run of a workspace: an exclusive lock on
/// `<target>/eterna-port/write.lock` held while a port writes (the command line and
/// every server on the workspace take it), released when dropped or when the process
/// ends, however it ends.
#[derive(Debug)]
pub struct WriteLock {
    _file: std::fs::File,
}

impl WriteLock {
    /// Takes the lock without waiting; an error says another run holds it.
    pub fn acquire(target_dir: &Path) -> Result<WriteLock> {
        let dir = target_dir.join("eterna-port");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("write.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a file descriptor this function owns; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    bail!(
                        "another eterna-port run is writing to this workspace (it holds {}); wait for it to end, or send a dry run",
                        path.display()
                    );
                }
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(WriteLock { _file: file })
    }
}
