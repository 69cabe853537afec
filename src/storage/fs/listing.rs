//! Directory walks: listings and the removal of leftover temp files.

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

/// Keys under `prefix` in lexical order, after `start_after`, at most `limit`.
///
/// A depth-first walk yields lexical order when each directory's entries are sorted with
/// directories named `name/`: every key below a directory starts with that string. Subtrees
/// wholly at or before `start_after` are skipped, and the walk stops at `limit`.
pub(super) fn list_sorted(
    root: &Path,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Result<Vec<String>> {
    let top = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let name_prefix = &prefix[top.len()..];
    let after = |key: &str| start_after.is_none_or(|s| key > s);
    // Stack of keys still to visit, directories ending in `/`; popped in ascending order.
    let mut stack = vec![top.to_owned()];
    let mut keys = Vec::new();
    while let Some(key) = stack.pop() {
        if keys.len() >= limit {
            break;
        }
        if !key.ends_with('/') && key != top {
            keys.push(key);
            continue;
        }
        let dir = root.join(key.trim_end_matches('/'));
        let mut children: Vec<String> = read_dir_entries(&dir, prefix)?
            .into_iter()
            .filter(|(name, _)| key != top || name.starts_with(name_prefix))
            .map(|(name, is_dir)| match is_dir {
                true => format!("{key}{name}/"),
                false => format!("{key}{name}"),
            })
            .filter(|child| match child.ends_with('/') {
                // Keep a directory unless every key in it sorts at or before `start_after`.
                true => start_after.is_none_or(|s| child.as_str() > s || s.starts_with(child)),
                false => after(child),
            })
            .collect();
        children.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(children);
    }
    Ok(keys)
}

pub(super) fn remove_temp_files(root: &Path, age_min: Duration) -> Result<u64> {
    let now = SystemTime::now();
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            // An entry can vanish while we walk (a put's temp file renamed into place).
            let entry_info = entry.and_then(|e| Ok((e.file_type()?, e.metadata()?, e)));
            let (file_type, meta, entry) = match entry_info {
                Ok(info) => info,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let is_temp = entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes());
            if is_temp && file_type.is_file() {
                let modified = meta.modified()?;
                let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
                if age >= age_min {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            } else if file_type.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(removed)
}

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
            let keys = list_sorted(&root, &prefix, start_after.as_deref(), limit)?;
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
