//! Windows of directories too large to index, kept between the pages of a walk.
//!
//! A directory past `Limits::dir_entries_whole_max` (the reference edges `refs/<alg>/` and
//! the link index `linked/<alg>/` hold one entry per blob) is streamed, keeping only the
//! smallest names past the caller's position. Without more, every page of a walk over it
//! (scrub's edge walk, GC's candidates) would read the whole directory again: a walk of n
//! names in pages of p would read n * n / p entries. So a stream keeps a window of
//! [`WINDOW_NAMES`] names (more than a page asks for), and the next pages are served from
//! it while the directory is unchanged, under the same rules as the index (`dir_index.rs`:
//! same inode, mtime and ctime, and a last change older than the racy margin): a walk reads
//! the directory n / [`WINDOW_NAMES`] times, and holds at most [`WINDOWS_MAX`] windows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::dir_index::{Bound, Listed, Signature, Sorted};

/// Names a stream of a huge directory keeps (~80 bytes each, so ~2.5 MiB): a walk in pages
/// of 1,000 reads the directory once per 32 pages.
pub(super) const WINDOW_NAMES: usize = 32_768;

/// Windows kept at once, one per directory (walks in progress); the least recently used
/// goes. With [`WINDOW_NAMES`], at most ~20 MiB.
const WINDOWS_MAX: usize = 8;

struct Window {
    signature: Signature,
    /// The bound the window was streamed for: it holds the smallest names it wanted.
    name_prefix: String,
    after: Option<String>,
    into: bool,
    names: Arc<Sorted>,
    /// Every wanted name is in the window (none past its last).
    complete: bool,
    last_used: u64,
}

#[derive(Default)]
struct Windows {
    entries: HashMap<PathBuf, Window>,
    clock: u64,
}

fn windows() -> MutexGuard<'static, Windows> {
    static WINDOWS: OnceLock<Mutex<Windows>> = OnceLock::new();
    WINDOWS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Window {
    /// Whether the window holds the first names `bound` wants: streamed with the same name
    /// prefix from a position at or before the bound's (so it holds every wanted name up
    /// to its last), and, when the bound may lie inside a child directory, streamed with
    /// that rule too (so that directory is in it).
    fn serves(&self, bound: &Bound<'_>) -> bool {
        let from_before = match (&self.after, bound.after) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(lower), Some(after)) => lower.as_str() <= after,
        };
        from_before && self.name_prefix == bound.name_prefix && (self.into || !bound.into)
    }
}

/// The listing `bound` wants from a window of `dir` as it is (`signature`), if one serves.
pub(super) fn lookup(dir: &Path, signature: Signature, bound: &Bound<'_>) -> Option<Listed> {
    let mut all = windows();
    all.clock += 1;
    let clock = all.clock;
    let window = all.entries.get_mut(dir)?;
    if window.signature != signature {
        all.entries.remove(dir);
        return None;
    }
    if !window.serves(bound) {
        return None;
    }
    let start = bound.start_in(&window.names);
    if start >= window.names.len() && !window.complete {
        return None; // past the window: stream again from the position
    }
    window.last_used = clock;
    Some(Listed {
        names: window.names.clone(),
        start,
        complete: window.complete,
    })
}

/// Keeps the window just streamed for `bound` (the caller checked the directory is settled).
pub(super) fn keep(
    dir: &Path,
    signature: Signature,
    bound: &Bound<'_>,
    names: Arc<Sorted>,
    complete: bool,
) {
    let mut all = windows();
    all.clock += 1;
    let last_used = all.clock;
    if all.entries.len() >= WINDOWS_MAX && !all.entries.contains_key(dir) {
        let oldest = all
            .entries
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(p, _)| p.clone());
        if let Some(oldest) = oldest {
            all.entries.remove(&oldest);
        }
    }
    all.entries.insert(
        dir.to_path_buf(),
        Window {
            signature,
            name_prefix: bound.name_prefix.to_owned(),
            after: bound.after.map(str::to_owned),
            into: bound.into,
            names,
            complete,
            last_used,
        },
    );
}
