//! The checkpoint: the keys the log touched, made durable by themselves.
//!
//! The log may start again once the tree holds, durably, the state its records leave. The
//! flusher knows which keys those are (it wrote the records), so the checkpoint makes exactly
//! them durable: `fsync` of each key's file (data and inode) and of every directory from the
//! key's parent up to the root (the file's name, a new directory's name in its parent, the
//! removal of a deleted key or of a directory pruned after it). That is what POSIX asks for a
//! file and its name to survive, on any filesystem; it needs no journal ordering of ext4 or
//! xfs. `syncfs`, used before, also wrote out everything every other process had dirtied on
//! the filesystem (a 2 GiB `dd` beside the registry made one take seconds), and the group
//! commits waited behind it.
//!
//! The syncs are issued from `SYNC_THREADS` threads at once, so the kernel merges their
//! device cache flushes (and filesystem-journal commits, where there is a journal):
//! concurrent waiters share one, instead of paying one each per path.
//!
//! A key whose last record is a *direct* marker was made durable by its writer and is
//! skipped. A file or directory that is gone when its turn comes was removed after its record
//! (by a later pending delete or a prune): its absence is made durable by its parent's sync,
//! which is in the set. A key changed since its record is synced in its newer state; the
//! newer state has a record of its own in the log after the checkpoint (module docs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::log::write_header;
use super::replay::parse_records;
use super::*;

/// Threads syncing at once during a checkpoint. Each `fsync` ends with a device cache flush
/// (on ext4 without a journal, one per file), and concurrent flushes are merged into one, so
/// a checkpoint of N paths waits for about N / SYNC_THREADS flushes in a row: with 16 that
/// was 300-900 ms for the ~1,600 paths of 2 s of manifest pushes, seconds when `dd` made
/// each flush slow. The threads only wait on the disk (a small stack each).
const SYNC_THREADS: usize = 128;

/// The keys of the records logged since the last checkpoint, each with its last operation.
#[derive(Default)]
pub(super) struct Touched {
    last: HashMap<String, u8>,
}

impl Touched {
    /// Notes the keys of records as the log holds them (a group's payload).
    pub(super) fn note(&mut self, records: &[u8]) -> io::Result<()> {
        let parsed = parse_records(records)
            .ok_or_else(|| io::Error::other("the journal's queued records do not parse"))?;
        for (op, key, _) in parsed {
            match self.last.get_mut(key) {
                Some(last) => *last = op,
                None => {
                    self.last.insert(key.to_owned(), op);
                }
            }
        }
        Ok(())
    }

    pub(super) fn clear(&mut self) {
        self.last.clear();
    }

    /// What makes these keys durable: each written key's file, and every directory from each
    /// key's parent up to the root.
    fn targets(&self, root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let mut files = Vec::new();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        for (key, op) in &self.last {
            if *op == OP_DIRECT {
                continue;
            }
            let path = root.join(key);
            let mut dir = path.parent();
            while let Some(d) = dir {
                if !d.starts_with(root) || !dirs.insert(d.to_path_buf()) {
                    break; // this directory, and so every one above it, is in the set
                }
                dir = d.parent();
            }
            if *op != OP_DELETE {
                files.push(path);
            }
        }
        (files, dirs.into_iter().collect())
    }
}

/// Makes the touched keys durable (module docs), then starts the log again under `epoch`.
pub(super) fn checkpoint(root: &Path, touched: &Touched, log: &File, epoch: u64) -> io::Result<()> {
    let started = Instant::now();
    let (mut paths, dirs) = touched.targets(root);
    let files = paths.len();
    // One pass over files and directories alike (any order is sound): the more syncs wait at
    // once, the more of them one device flush serves.
    paths.extend(dirs);
    sync_all(&paths)?;
    tracing::debug!(files, dirs = paths.len() - files, elapsed = ?started.elapsed(), "journal checkpoint");
    write_header(log, epoch)
}

/// `fsync` of each path, from up to `SYNC_THREADS` threads. A path that no longer exists is
/// skipped (module docs). The first error is returned, after every thread has stopped.
fn sync_all(paths: &[PathBuf]) -> io::Result<()> {
    let next = AtomicUsize::new(0);
    let worker = || -> io::Result<()> {
        loop {
            let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            if let Err(e) = sync_one(path) {
                next.store(paths.len(), Ordering::Relaxed); // the others stop too
                return Err(e);
            }
        }
    };
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for _ in 1..SYNC_THREADS.min(paths.len()) {
            match std::thread::Builder::new()
                .name("origin-checkpoint".into())
                .spawn_scoped(s, worker)
            {
                Ok(t) => threads.push(t),
                Err(_) => break, // fewer threads: slower, still complete
            }
        }
        let mut result = worker();
        for t in threads {
            let joined = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a checkpoint thread panicked")));
            result = result.and(joined);
        }
        result
    })
}

fn sync_one(path: &Path) -> io::Result<()> {
    let synced = File::open(path).and_then(|f| f.sync_all());
    #[cfg(test)]
    if synced.is_ok() {
        SYNCED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path.to_path_buf());
    }
    match synced {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Every path a checkpoint synced (all journals of the process), for tests.
#[cfg(test)]
pub(super) static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
