//! A cache of per-file scan results in `target/eterna-port/scan-cache`, so that running
//! `plan` again (from a pre-commit hook, say) parses only the files that changed.
//!
//! Entries are keyed by canonical path and a hash of the file's contents (not its
//! mtime), and remember the hashes of files pulled in with `include_str!`. The whole
//! cache is keyed by the tool version, the knowledge data and the scan limits; any
//! mismatch, an unreadable or corrupt cache file just means a cold scan. Writes are
//! atomic (temp file + rename), so concurrent runs never see half a cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::evidence::content_hash;
use super::evidence::FileFacts;

/// Bumped when the cached data's meaning changes.
const FORMAT: u64 = 2;

#[derive(Serialize)]
struct CacheOut<'a> {
    key: u64,
    entries: Vec<(&'a Path, u64, &'a FileFacts)>,
}

#[derive(Deserialize)]
struct CacheIn {
    key: u64,
    entries: Vec<(PathBuf, u64, FileFacts)>,
}

/// The cache as read at the start of a scan.
#[derive(Default)]
pub struct ScanCache {
    path: Option<PathBuf>,
    key: u64,
    entries: HashMap<PathBuf, (u64, FileFacts)>,
    /// Paths whose entry was used or replaced; anything else is stale at the end.
    loaded: usize,
}

impl ScanCache {
    /// No cache: every file is parsed and nothing is written.
    pub fn disabled() -> Self {
        ScanCache::default()
    }

    /// Reads the cache at `path` for a scan whose settings hash to `key`.
    pub fn open(path: PathBuf, key: u64) -> Self {
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|bytes| match postcard::from_bytes::<CacheIn>(&bytes) {
                Ok(c) if c.key == key => Some(c.entries),
                Ok(_) => {
                    tracing::debug!("scan cache {} is from other settings", path.display());
                    None
                }
                Err(e) => {
                    tracing::debug!("scan cache {} unreadable: {e}", path.display());
                    None
                }
            })
            .unwrap_or_default();
        let entries: HashMap<PathBuf, (u64, FileFacts)> =
            entries.into_iter().map(|(p, h, f)| (p, (h, f))).collect();
        ScanCache {
            path: Some(path),
            key,
            loaded: entries.len(),
            entries,
        }
    }

    /// Whether the cached facts for `canonical` are still right for contents hashing
    /// to `hash` (including the files it pulls in, relative to `dir`).
    pub fn is_fresh(&self, canonical: &Path, hash: u64, dir: &Path) -> bool {
        let Some((h, facts)) = self.entries.get(canonical) else {
            return false;
        };
        *h == hash
            && facts.includes.iter().all(|(rel, inc_hash)| {
                let now = std::fs::read(dir.join(rel)).ok().map(|b| content_hash(&b));
                now == *inc_hash
            })
    }

    /// Takes the cached facts of a file `is_fresh` accepted.
    pub fn take(&mut self, canonical: &Path) -> Option<FileFacts> {
        self.entries.remove(canonical).map(|(_, f)| f)
    }

    /// Writes the cache for the files of this scan, unless nothing changed. Failures
    /// (a read-only target directory) are not errors: the next scan is just cold.
    pub fn save<'a>(
        &self,
        files: impl Iterator<Item = (&'a Path, u64, &'a FileFacts)>,
        parsed: usize,
    ) {
        let Some(path) = &self.path else { return };
        let entries: Vec<_> = files.collect();
        // Unchanged: every file came from the cache and no cached file went away.
        if parsed == 0 && entries.len() == self.loaded {
            return;
        }
        let out = CacheOut {
            key: self.key,
            entries,
        };
        let result = postcard::to_stdvec(&out)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let dir = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir)?;
                let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                std::io::Write::write_all(&mut tmp, &bytes)?;
                tmp.persist(path).map_err(|e| e.error)?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::debug!("scan cache {} not written: {e}", path.display());
        }
    }
}

/// The key of a scan's settings: tool version, knowledge data and limits.
pub fn settings_key(max_file_size: u64) -> u64 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&FORMAT.to_le_bytes());
    bytes.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    bytes.extend_from_slice(&crate::knowledge::fingerprint().to_le_bytes());
    bytes.extend_from_slice(&max_file_size.to_le_bytes());
    content_hash(&bytes)
}
