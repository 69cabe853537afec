//! Directory walks: whole-directory listings and the removal of leftover temp files (the
//! paged listing is `dir_index.rs`).

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::super::{Result, StorageError, TEMP_PREFIX};
use super::files::is_absent;
use super::DIR_ENTRIES_MAX;

/// A directory's entries usable as key components: UTF-8 names, no temp files, regular
/// files (`false`) and directories (`true`); symlinks and others are ignored. A directory
/// that is missing (deleted concurrently, or never created) has no entries.
pub(super) fn read_dir_entries(dir: &Path, prefix: &str) -> Result<Vec<(String, bool)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        if file_type.is_file() || file_type.is_dir() {
            if out.len() == DIR_ENTRIES_MAX {
                return Err(StorageError::TooManyEntries {
                    prefix: prefix.to_owned(),
                    limit: DIR_ENTRIES_MAX,
                });
            }
            out.push((name, file_type.is_dir()));
        }
    }
    Ok(out)
}

/// Deepest nesting the temp-file sweep descends (keys are far shallower); what lies deeper
/// is left alone.
const SWEEP_DEPTH_MAX: usize = 32;

/// Removes temp files at least `age_min` old anywhere under `root`. One open directory per
/// level is held (memory follows the tree's depth, not its width: `refs/sha256/` holds a
/// directory per blob), and only temp files are stat'd (the entry type comes with the
/// directory read).
pub(super) fn remove_temp_files(root: &Path, age_min: Duration) -> Result<u64> {
    let now = SystemTime::now();
    let mut removed = 0;
    let mut open = match std::fs::read_dir(root) {
        Ok(entries) => vec![entries],
        Err(e) if is_absent(&e) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    while let Some(entries) = open.last_mut() {
        let Some(entry) = entries.next() else {
            open.pop();
            continue;
        };
        // An entry can vanish while we walk (a put's temp file renamed into place).
        let (entry, file_type) = match entry.and_then(|e| Ok((e.file_type()?, e))) {
            Ok((file_type, entry)) => (entry, file_type),
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let is_temp = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes());
        if is_temp && file_type.is_file() {
            let modified = match entry.metadata().and_then(|m| m.modified()) {
                Ok(modified) => modified,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
            if age >= age_min {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        } else if file_type.is_dir() && open.len() < SWEEP_DEPTH_MAX {
            match std::fs::read_dir(entry.path()) {
                Ok(entries) => {
                    open.push(entries);
                    #[cfg(test)]
                    SWEEP_OPEN_PEAK.fetch_max(open.len(), std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(removed)
}

/// The most directories a sweep held open at once (all sweeps of the process), for tests.
#[cfg(test)]
static SWEEP_OPEN_PEAK: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl super::FsStorage {
    /// One page of keys under `prefix` after `start_after`, with their sizes (a stat per
    /// key, on the blocking pool with the walk).
    pub async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>> {
        super::super::validate_prefix(prefix)?;
        let root = self.inner.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        let limit = limit.min(super::super::LIST_KEYS_MAX);
        super::files::blocking(move || {
            let limits = super::dir_index::Limits::DEFAULT;
            let keys = super::dir_index::list_sorted(
                &root,
                &prefix,
                start_after.as_deref(),
                limit,
                limits,
            )?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                match std::fs::metadata(root.join(&key)) {
                    Ok(m) => out.push((key, m.len())),
                    Err(e) if is_absent(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(out)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep holds a directory per level, not the directories of a level: a tree as wide
    /// as `refs/sha256/` at a million blobs costs what a narrow one does. Old temp files are
    /// removed at every depth, young ones and other files stay.
    #[test]
    fn the_temp_sweep_holds_a_directory_per_level() {
        let root = crate::storage::tests::TempDir::new();
        let wide = root.path().join("refs/sha256");
        for i in 0..3_000 {
            let dir = wide.join(format!("{i:064x}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("link"), b"x").unwrap();
        }
        let deep = root.path().join("a/b/c/d/e");
        std::fs::create_dir_all(&deep).unwrap();
        for dir in [
            wide.join(format!("{:064x}", 1234)),
            deep.clone(),
            root.path().to_owned(),
        ] {
            std::fs::write(dir.join(format!("{TEMP_PREFIX}-crash")), b"x").unwrap();
        }
        assert_eq!(
            remove_temp_files(root.path(), Duration::from_secs(3600)).unwrap(),
            0
        );
        assert_eq!(remove_temp_files(root.path(), Duration::ZERO).unwrap(), 3);
        assert!(!deep.join(format!("{TEMP_PREFIX}-crash")).exists());
        assert!(wide.join(format!("{:064x}", 2999)).join("link").exists());
        // root, a, b, c, d, e: six levels at most, although refs/sha256/ has 3,000 children.
        let peak = SWEEP_OPEN_PEAK.load(std::sync::atomic::Ordering::Relaxed);
        assert!((3..=6).contains(&peak), "held {peak} directories at once");
    }
}
