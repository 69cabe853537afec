//! Sorted directory listings kept in memory, so that a page of a large directory (a
//! repository's tags, the catalog) costs a stat, a binary search and the page instead of a
//! `readdir` and a sort of the whole directory.
//!
//! An index is used only while the directory's inode, mtime and ctime are those seen before
//! it was read. Creating, removing or renaming a name in a directory updates its mtime, and
//! every write of this backend returns only after its rename, link or unlink, so the next
//! listing after a write sees a changed directory and reads it again; so does a listing
//! after a write of another process (a maintenance command). The kernel stamps directories
//! from a coarse clock (one tick, 1-10 ms), so two changes within one tick can leave the
//! same mtime: an index read while the directory's last change is younger than
//! [`RACY_MARGIN`] is not kept (git's "racy index" rule), and the next listing reads again.
//!
//! Directories too small to be worth it are read each time; directories too large for the
//! cache are streamed and only the smallest names past the caller's position are kept
//! ([`window`]), so one listing's memory stays bounded whatever the directory holds.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use super::super::{Result, TEMP_PREFIX};
use super::files::is_absent;

/// Directories with fewer entries are read on every listing (one `getdents` call); the
/// index would cost more to validate and keep than it saves.
const INDEXED_ENTRIES_MIN: usize = 256;

/// Bytes of names all indexes together may hold (names packed, ~4 bytes of overhead each):
/// 100,000 tags of 20 bytes take about 2.4 MiB.
const INDEX_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Below this age a directory's last change may share its timestamp with a change still to
/// come (see the module comment); comfortably above any kernel tick (10 ms at HZ=100).
const RACY_MARGIN: Duration = Duration::from_millis(100);

/// Limits of a listing; a parameter so that tests can exercise the streaming path cheaply.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Entries one directory may have and still be read whole and sorted (and indexed);
    /// larger directories are streamed with only a window of names held.
    pub dir_entries_whole_max: usize,
    /// Names a stream keeps for the next pages (`dir_window.rs`).
    pub window_names: usize,
}

impl Limits {
    /// ~100 bytes per entry while reading, so at most ~25 MiB for one directory read whole,
    /// and its index (~80 bytes a name) fits the cache (half of [`INDEX_BYTES_MAX`]): a
    /// directory read whole is one that can be kept. Past that (the edges and link index of
    /// a registry of a million blobs), memory is a window's, whatever the directory holds.
    pub const DEFAULT: Limits = Limits {
        dir_entries_whole_max: 1 << 18,
        window_names: super::dir_window::WINDOW_NAMES,
    };
}

/// A directory's names in key form (`name`, or `name/` for a directory), sorted, packed.
#[derive(Debug, Default)]
pub(super) struct Sorted {
    buf: String,
    ends: Vec<usize>,
}

impl Sorted {
    fn from_sorted(names: &[String]) -> Sorted {
        let mut s = Sorted {
            buf: String::with_capacity(names.iter().map(String::len).sum()),
            ends: Vec::with_capacity(names.len()),
        };
        for n in names {
            s.buf.push_str(n);
            s.ends.push(s.buf.len());
        }
        s
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// The first index whose name does not satisfy `pred` (names satisfying it come first).
    fn partition_point(&self, pred: impl Fn(&str) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn bytes(&self) -> usize {
        self.buf.len() + self.ends.len() * std::mem::size_of::<usize>()
    }
}

/// Which names of a directory a listing still wants: those after `after` (relative to the
/// directory, key form) and, when `into` is set, the directory that `after` lies inside, and
/// only names starting with `name_prefix`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound<'a> {
    pub after: Option<&'a str>,
    /// `after` may lie inside a child directory (a position from the caller), rather than
    /// being a name already visited whole.
    pub into: bool,
    pub name_prefix: &'a str,
}

impl Bound<'_> {
    fn wants(&self, name: &str) -> bool {
        if !name.starts_with(self.name_prefix) {
            return false;
        }
        match self.after {
            None => true,
            Some(a) => name > a || (self.into && name.ends_with('/') && a.starts_with(name)),
        }
    }

    /// Where the wanted names start in a sorted directory.
    pub(super) fn start_in(&self, names: &Sorted) -> usize {
        let mut pos = names.partition_point(|n| n < self.name_prefix);
        if let Some(a) = self.after {
            let mut after = names.partition_point(|n| n <= a);
            if self.into && after > 0 {
                let prev = names.get(after - 1);
                if prev.ends_with('/') && a.starts_with(prev) {
                    after -= 1;
                }
            }
            pos = pos.max(after);
        }
        pos
    }
}

/// Names of a directory a listing walks: all of them (sorted, shared with the index), or a
/// window of the smallest wanted ones when the directory is too large to hold.
pub(super) struct Listed {
    pub names: Arc<Sorted>,
    /// Index of the first wanted name in `names`.
    pub start: usize,
    /// False when `names` is a window and more wanted names may follow its last.
    pub complete: bool,
}

/// (device, inode, mtime, ctime): what a directory change moves.
pub(super) type Signature = (u64, u64, i64, i64, i64, i64);

struct Entry {
    signature: Signature,
    names: Arc<Sorted>,
    last_used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<PathBuf, Entry>,
    bytes: usize,
    clock: u64,
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

impl Cache {
    fn get(&mut self, dir: &Path, signature: Signature) -> Option<Arc<Sorted>> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.entries.get_mut(dir)?;
        if entry.signature != signature {
            let stale = self.entries.remove(dir)?;
            self.bytes -= stale.names.bytes();
            return None;
        }
        entry.last_used = clock;
        Some(entry.names.clone())
    }

    fn insert(&mut self, dir: &Path, signature: Signature, names: Arc<Sorted>) {
        let size = names.bytes();
        if size > INDEX_BYTES_MAX / 2 {
            return;
        }
        if let Some(old) = self.entries.remove(dir) {
            self.bytes -= old.names.bytes();
        }
        // Least recently used first; evictions are rare (only large directories are kept).
        while self.bytes + size > INDEX_BYTES_MAX {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.names.bytes();
            }
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.insert(
            dir.to_path_buf(),
            Entry {
                signature,
                names,
                last_used: self.clock,
            },
        );
    }
}

/// Calls `f(name in key form)` for each entry usable as a key component: UTF-8 names, no
/// temp files, regular files and directories. A missing directory has no entries.
fn for_each_entry(dir: &Path, mut f: impl FnMut(String)) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if is_absent(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        let Ok(mut name) = entry.file_name().into_string() else {
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
        if file_type.is_dir() {
            name.push('/');
            f(name);
        } else if file_type.is_file() {
            f(name);
        }
    }
    Ok(())
}

fn signature(meta: &std::fs::Metadata) -> Signature {
    (
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// Whether a directory last changed at least [`RACY_MARGIN`] ago, so no change still to
/// come can carry the same timestamps.
fn settled(meta: &std::fs::Metadata) -> bool {
    let changed = |secs: i64, nsecs: i64| {
        u64::try_from(secs)
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, nsecs.clamp(0, 999_999_999) as u32))
    };
    let (Some(m), Some(c)) = (
        changed(meta.mtime(), meta.mtime_nsec()),
        changed(meta.ctime(), meta.ctime_nsec()),
    ) else {
        return false;
    };
    SystemTime::now()
        .duration_since(m.max(c))
        .is_ok_and(|age| age >= RACY_MARGIN)
}

/// The wanted names of directory `dir` (blocking: run off the cores). `want` is how many the
/// caller may use; a window holds at least that many when the directory is streamed.
pub(super) fn list_dir_sorted(
    dir: &Path,
    prefix: &str,
    bound: Bound<'_>,
    want: usize,
    limits: Limits,
) -> Result<Listed> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Ok(empty()),
        Err(e) if is_absent(&e) => return Ok(empty()),
        Err(e) => return Err(e.into()),
    };
    let sig = signature(&meta);
    if let Some(names) = cache().get(dir, sig) {
        let start = bound.start_in(&names);
        return Ok(Listed {
            names,
            start,
            complete: true,
        });
    }
    if let Some(listed) = super::dir_window::lookup(dir, sig, &bound) {
        return Ok(listed);
    }
    let mut all: Vec<String> = Vec::new();
    let mut window: Option<BinaryHeap<String>> = None;
    // A stream keeps more than this page wants, for the next pages (`dir_window.rs`).
    let keep = want.max(limits.window_names).max(1);
    for_each_entry(dir, |name| match &mut window {
        Some(heap) => keep_smallest(heap, name, &bound, keep),
        None if all.len() < limits.dir_entries_whole_max => all.push(name),
        None => {
            let mut heap = BinaryHeap::new();
            for n in all.drain(..) {
                keep_smallest(&mut heap, n, &bound, keep);
            }
            keep_smallest(&mut heap, name, &bound, keep);
            window = Some(heap);
        }
    })?;
    if let Some(heap) = window {
        tracing::debug!(prefix, "directory too large to index; streamed a window");
        #[cfg(test)]
        STREAMS.with(|n| n.set(n.get() + 1));
        let complete = heap.len() < keep;
        let names = Arc::new(Sorted::from_sorted(&heap.into_sorted_vec()));
        if settled(&meta) {
            super::dir_window::keep(dir, sig, &bound, names.clone(), complete);
        }
        return Ok(Listed {
            names,
            start: 0,
            complete,
        });
    }
    all.sort_unstable();
    let names = Arc::new(Sorted::from_sorted(&all));
    drop(all);
    if names.len() >= INDEXED_ENTRIES_MIN && settled(&meta) {
        cache().insert(dir, sig, names.clone());
    }
    let start = bound.start_in(&names);
    Ok(Listed {
        names,
        start,
        complete: true,
    })
}

#[cfg(test)]
thread_local! {
    /// Streams of directories too large to index, on this thread (what a test counts).
    static STREAMS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Keeps in `heap` (a max-heap) the `want` smallest wanted names seen.
fn keep_smallest(heap: &mut BinaryHeap<String>, name: String, bound: &Bound<'_>, want: usize) {
    if !bound.wants(&name) {
        return;
    }
    if heap.len() < want {
        heap.push(name);
        return;
    }
    if let Some(mut top) = heap.peek_mut() {
        if name.as_str().cmp(top.as_str()) == Ordering::Less {
            *top = name;
        }
    }
}

fn empty() -> Listed {
    Listed {
        names: Arc::new(Sorted::default()),
        start: 0,
        complete: true,
    }
}

/// Keys under `prefix` in lexical order, after `start_after`, at most `limit`.
///
/// A depth-first walk yields lexical order when each directory's names are sorted with
/// directories named `name/`: every key below a directory starts with that string. Each
/// directory is entered at the caller's position (a binary search in its sorted names) and
/// the walk stops at `limit`, so a page costs the page and the depth, not the directory.
pub(super) fn list_sorted(
    root: &Path,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    limits: Limits,
) -> Result<Vec<String>> {
    let top = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "",
    };
    let name_prefix = &prefix[top.len()..];
    let mut keys: Vec<String> = Vec::new();
    if limit == 0 {
        return Ok(keys);
    }
    // One level per directory being walked: its key prefix, its names and the next index.
    struct Level {
        base: String,
        listed: Listed,
        next: usize,
    }
    let open = |base: String, want: usize| -> Result<Level> {
        if start_after.is_some_and(|s| base.as_str() < s && !s.starts_with(base.as_str())) {
            // Every key in this directory sorts before `start_after`.
            let listed = empty();
            return Ok(Level {
                base,
                listed,
                next: 0,
            });
        }
        // `start_after` inside this directory bounds it; a directory wholly after it (the
        // walk enters no directory wholly before it) has no bound.
        let bound = Bound {
            after: start_after.and_then(|s| s.strip_prefix(base.as_str())),
            into: true,
            name_prefix: if base == top { name_prefix } else { "" },
        };
        let dir = root.join(base.trim_end_matches('/'));
        let listed = list_dir_sorted(&dir, prefix, bound, want, limits)?;
        let next = listed.start;
        Ok(Level { base, listed, next })
    };
    let mut stack = vec![open(top.to_owned(), limit)?];
    while keys.len() < limit {
        let want = limit - keys.len();
        let Some(level) = stack.last_mut() else { break };
        if level.next >= level.listed.names.len() {
            if level.listed.complete {
                stack.pop();
                continue;
            }
            // A window ran out: stream the directory again for the names after its last.
            let Some(last) = level.listed.names.len().checked_sub(1) else {
                stack.pop();
                continue;
            };
            let last = level.listed.names.get(last).to_owned();
            let bound = Bound {
                after: Some(&last),
                into: false,
                name_prefix: if level.base == top { name_prefix } else { "" },
            };
            let dir = root.join(level.base.trim_end_matches('/'));
            level.listed = list_dir_sorted(&dir, prefix, bound, want, limits)?;
            level.next = level.listed.start;
            continue;
        }
        let name = level.listed.names.get(level.next);
        level.next += 1;
        if level.base == top && !name.starts_with(name_prefix) {
            if name > name_prefix {
                // Past every name with the prefix (they sort together).
                level.next = level.listed.names.len();
                level.listed.complete = true;
            }
            continue;
        }
        let key = format!("{}{}", level.base, name);
        if key.ends_with('/') {
            let child = open(key, want)?;
            stack.push(child);
        } else if start_after.is_none_or(|s| key.as_str() > s) {
            keys.push(key);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
