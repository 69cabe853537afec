//! The write journal: group commit for the fs backend's small objects.
//!
//! Without it every `put` waits for two flushes in a row (the new file's data, then its
//! directory), and a manifest PUT makes a dozen puts one after another. With it, a mutation
//! is a record appended to one log file; a single thread writes whatever records are waiting
//! with one `pwrite` and one `fdatasync` (so concurrent requests share the flush: group
//! commit), then applies them to the tree without any fsync, in log order. A checkpoint
//! every `CHECKPOINT_INTERVAL` or `CHECKPOINT_BYTES` makes the tree durable up to the log's
//! end (`durable.rs`: on ext4 with its journal and on xfs, the data of the files the log
//! wrote and one journal commit; elsewhere `syncfs`), after which the log starts again. At
//! start-up, records left in the log are replayed into the tree (every put and delete is a
//! whole-object overwrite, so replaying one that was applied already changes nothing), and
//! the tree is made durable with `syncfs`.
//!
//! # A flush that waits for nobody else
//! The log file is written full of zeros ahead of the groups (`LOG_PREALLOC_STEP` at a time,
//! so it stops growing a little past `CHECKPOINT_BYTES`) and otherwise only overwritten in
//! place: a checkpoint rewrites the header with a new epoch instead of truncating. Overwriting blocks that are already allocated and written changes no metadata
//! `fdatasync` has to commit, so a group's flush is the data write and a cache flush, not a
//! commit of the filesystem's journal, which would also have to write out whatever another
//! process allocated meanwhile (`bench/checkpoint.sh`). Each group's checksum covers the
//! epoch, so groups left over from an earlier epoch end the log at replay.
//!
//! # A failed checkpoint
//! A writeback error is reported once (by `syncfs`, `sync_file_range` or `fsync`), and the
//! pages that failed are clean afterwards: a retry alone would succeed and empty a log whose
//! records may not be on disk. So the log keeps its records (writes go on, appended after
//! them; the touched keys are kept too) and after a backoff the flusher re-applies the log's
//! last state of each key to the tree (`recover.rs`, which explains why that is safe beside
//! concurrent writers) and checkpoints again. `syncfs` goes through the root's descriptor,
//! held since start, so it sees any writeback error since then; a `Commit` checkpoint sees
//! one through the file's inode (`durable.rs`). While the log is past `LOG_BYTES_MAX` writes
//! fail as transient (503).
//!
//! # Why an acknowledged write survives a crash
//! Two kinds of write go through here:
//! - **durable** (`put`, `delete`, `put_batch`): the record is flushed *before* the tree is
//!   changed, and the caller returns only after both. What a reader can see is therefore
//!   always in the durable log (or checkpointed), and after a power loss replay puts back
//!   every acknowledged write, whole. A batch is one record group: replayed all or nothing.
//! - **pending** (`put_pending`): the tree is changed at once (visible, for the GC's
//!   Dekker-style checks, which need a write to be visible before the next read) and the
//!   record is queued; it is flushed with the next group. The log is a prefix: once any later
//!   record is durable, so is this one. Every request that writes pending objects and is
//!   acknowledged as stored ends with a durable write, so by its acknowledgement they are
//!   durable too. Pending writes are only used where the object's presence (or absence)
//!   after a power loss, without the rest of its request, is harmless: GC candidates and
//!   untagged hints, reference edges, an upload's expiry index and its removal, and
//!   content-addressed bytes (`Registry::store_content` checks bytes it finds in place
//!   against their digest before trusting them). That is debris GC, expiry and `scrub`
//!   already handle; a visible link, tag or blob is never pending.
//! - After a process crash (kill -9) the page cache survives: the tree holds exactly what the
//!   process applied, in the order it applied it (the orderings the GC protocol relies on),
//!   and replay re-applies the durable log on top.
//!
//! Direct writes that bypass the log (upload data, and the hard link of an upload commit)
//! make themselves durable with their own fsyncs; an upload commit then appends a *direct*
//! marker for its destination, so replay does not undo it with an older logged delete.
//!
//! One process owns a root's journal (an exclusive `flock`); a second `serve` on the same
//! root refuses to start. Maintenance commands from another process write directly (durable
//! on their own), so a replay after a server crash could reapply a server write older than
//! theirs to the same key within the last checkpoint interval; the GC protocol tolerates that
//! (it only delays a collection).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::super::TEMP_PREFIX;
use super::files::is_absent;
use super::locks::KeyLock;
use super::DIR_RACE_RETRIES_MAX;

/// The journal's directory under the root. Starts with the temp prefix, so it is never a key
/// and never listed.
pub(super) const JOURNAL_DIR: &str = ".tmp-journal";
const JOURNAL_FILE: &str = "log";
/// The log format written: groups checksummed with their epoch, in a preallocated file.
const FILE_MAGIC: &[u8; 8] = b"ORIGJRN2";
/// The format before it (groups checksummed alone, the file truncated at each checkpoint):
/// still replayed, so an upgrade loses nothing.
const FILE_MAGIC_V1: &[u8; 8] = b"ORIGJRN1";
const GROUP_MAGIC: &[u8; 4] = b"GRP1";
/// File header: magic and epoch.
const HEADER_BYTES: u64 = 16;
/// Group frame: magic, payload length, first 8 bytes of the payload's SHA-256.
const FRAME_BYTES: usize = 16;

/// A checkpoint (the tree made durable, then the log starts again) after the log grows past
/// this...
#[cfg(not(test))]
const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;
#[cfg(test)]
const CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// ...or after this long with records in it. Bounds replay work and how far a maintenance
/// command's write can be overtaken by replay (module docs).
#[cfg(not(test))]
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
#[cfg(test)]
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// The log file is written full of zeros ahead of the groups by this much at a time, so that
/// a group overwrites blocks that are already there; it stops growing once checkpoints keep
/// it under `CHECKPOINT_BYTES` plus a group.
const LOG_PREALLOC_STEP: u64 = 1024 * 1024;
/// While checkpoints fail the log keeps every record since the last good one; past this,
/// writes fail as transient until a checkpoint succeeds.
const LOG_BYTES_MAX: u64 = 4 * CHECKPOINT_BYTES;
/// A failed checkpoint is tried again after this, doubling up to `CHECKPOINT_RETRY_MAX`.
const CHECKPOINT_RETRY_MIN: Duration = Duration::from_millis(250);
#[cfg(not(test))]
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_secs(30);
#[cfg(test)]
const CHECKPOINT_RETRY_MAX: Duration = Duration::from_millis(500);
/// Most bytes of records queued for the next group; beyond it a write fails as transient
/// (each request's records are bounded by its body limit, so this only bounds a burst).
const QUEUED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most bytes a replay reads into memory: a log never grows much past `LOG_BYTES_MAX`.
const REPLAY_BYTES_MAX: u64 = LOG_BYTES_MAX + QUEUED_BYTES_MAX as u64 + (16 << 20);
/// Outcomes kept for waiters that have not collected them yet.
const OUTCOMES_MAX: usize = 1 << 16;
/// How long the flusher sleeps when idle before checking whether a checkpoint is due.
const IDLE_TICK: Duration = Duration::from_millis(500);

const OP_PUT: u8 = 1;
const OP_PUT_IF_ABSENT: u8 = 2;
const OP_DELETE: u8 = 3;
const OP_DIRECT: u8 = 4;

/// A mutation the flusher applies after its record is durable.
pub(super) enum Apply {
    Put { path: PathBuf, bytes: Vec<u8> },
    PutIfAbsent { path: PathBuf, bytes: Vec<u8> },
    Delete { path: PathBuf },
}

/// What the flusher found when applying: whether the write or delete took effect.
pub(super) type Applied = bool;

struct State {
    /// Encoded records waiting for the next group.
    queued: Vec<u8>,
    /// Mutations of the queued records, with the sequence number each answers to.
    applies: Vec<(u64, Apply)>,
    /// Key locks released once the queued records are applied.
    guards: Vec<KeyLock>,
    next_seq: u64,
    /// Every record up to here is durable and applied.
    done_seq: u64,
    /// Outcomes of applied mutations not yet collected by their waiter.
    outcomes: HashMap<u64, Vec<Applied>>,
    waiters: Vec<Waker>,
    /// Set when a write, flush or apply failed: the log and the tree may disagree until a
    /// restart replays the log, so every later write fails too.
    failed: Option<String>,
    /// A checkpoint failed and the log has grown to `LOG_BYTES_MAX` meanwhile.
    log_full: bool,
    shutdown: bool,
    /// Checkpoints done and failed since the journal was opened.
    checkpoints: u64,
    checkpoint_failures: u64,
    /// Checkpoint attempts still to fail on purpose (tests).
    #[cfg(test)]
    inject_checkpoint_failures: u32,
}

impl State {
    fn new() -> State {
        State {
            queued: Vec::new(),
            applies: Vec::new(),
            guards: Vec::new(),
            next_seq: 1,
            done_seq: 0,
            outcomes: HashMap::new(),
            waiters: Vec::new(),
            failed: None,
            log_full: false,
            shutdown: false,
            checkpoints: 0,
            checkpoint_failures: 0,
            #[cfg(test)]
            inject_checkpoint_failures: 0,
        }
    }
}

struct Shared {
    root: PathBuf,
    state: Mutex<State>,
    wake_flusher: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it (plain bookkeeping), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A root's journal: the log file, the flusher thread and the queue in front of it.
pub(super) struct Journal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("root", &self.shared.root)
            .finish()
    }
}

impl Journal {
    /// Takes the root's journal (refusing if another process holds it), replays what a
    /// previous run left in it, checkpoints, and starts the flusher. Blocking: call at start.
    pub(super) fn open(root: &Path) -> io::Result<Journal> {
        let dir = root.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(JOURNAL_FILE))?;
        // SAFETY: plain syscall on an open descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "{} is in use by another origin process ({e}); one server per root_dir",
                    dir.display()
                ),
            ));
        }
        let root_dir = File::open(root)?;
        let epoch = replay(root, &root_dir, &file)?;
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            state: Mutex::new(State::new()),
            wake_flusher: Condvar::new(),
        });
        let mode = durable::Mode::of(&root_dir, &file, root);
        tracing::debug!(root = %root.display(), ?mode, "journal checkpoints");
        let ahead = match mode {
            durable::Mode::Commit => Some(durable::Ahead::start()?),
            durable::Mode::Syncfs => None,
        };
        let flusher_shared = shared.clone();
        let durability = Durability {
            mode,
            root_dir,
            ahead,
        };
        let flusher = std::thread::Builder::new()
            .name("origin-journal".into())
            .spawn(move || flusher(flusher_shared, file, durability, epoch))?;
        Ok(Journal {
            shared,
            flusher: Some(flusher),
        })
    }

    /// Queues records (encoded with [`Record::encode`]). `apply` mutations are applied by the flusher once durable (then
    /// `guards` are released); pending records (no `apply`) were applied by the caller.
    /// Returns the sequence number to wait for.
    pub(super) fn append(
        &self,
        records: &[u8],
        apply: Vec<Apply>,
        guards: Vec<KeyLock>,
    ) -> io::Result<u64> {
        let mut st = self.shared.lock();
        if st.queued.len() >= QUEUED_BYTES_MAX {
            // Never block a core: the request fails as storage that is briefly unavailable
            // (`Error::StorageUnavailable`) and the client tries again.
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the write journal's queue is full (QUEUED_BYTES_MAX)",
            ));
        }
        if let Some(e) = &st.failed {
            return Err(io::Error::other(e.clone()));
        }
        if st.log_full {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the write journal is full until a checkpoint succeeds (LOG_BYTES_MAX)",
            ));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queued.extend_from_slice(records);
        let wake = !apply.is_empty() || !guards.is_empty();
        for a in apply {
            st.applies.push((seq, a));
        }
        // Pending records (nothing to apply) do not wake the flusher: they ride with the next
        // durable group (every request that writes them ends with one), so a request pays
        // one flush, not one per pending write. An idle flusher still writes them within
        // IDLE_TICK.
        st.guards.extend(guards);
        drop(st);
        if wake {
            self.shared.wake_flusher.notify_one();
        }
        Ok(seq)
    }

    /// Waits until record `seq` is durable and applied; its mutations' outcomes (true where
    /// the write took effect), in the order they were given.
    #[tracing::instrument(target = "origin::span", name = "journal.group_commit", skip_all)]
    pub(super) async fn wait(&self, seq: u64) -> io::Result<Vec<Applied>> {
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.done_seq >= seq {
                let outcome = st.outcomes.remove(&seq).unwrap_or_default();
                return Poll::Ready(Ok(outcome));
            }
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(io::Error::other(e.clone())));
            }
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            drop(st);
            // A waiter wants a flush now (its record may be a pending one, which did not).
            self.shared.wake_flusher.notify_one();
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
impl Journal {
    fn clone_shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake_flusher.notify_one();
        if let Some(t) = self.flusher.take() {
            let _ = t.join();
        }
    }
}

/// One logged mutation, as replay sees it.
pub(super) enum Record<'a> {
    Put(&'a str, &'a [u8]),
    PutIfAbsent(&'a str, &'a [u8]),
    Delete(&'a str),
    /// The key was written durably outside the log: replay leaves it as it finds it.
    Direct(&'a str),
}

impl Record<'_> {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let (op, key, bytes) = match self {
            Record::Put(k, b) => (OP_PUT, k, Some(b)),
            Record::PutIfAbsent(k, b) => (OP_PUT_IF_ABSENT, k, Some(b)),
            Record::Delete(k) => (OP_DELETE, k, None),
            Record::Direct(k) => (OP_DIRECT, k, None),
        };
        out.push(op);
        // Keys are at most KEY_BYTES_MAX (1024) bytes, objects at most the metadata limit.
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        if let Some(b) = bytes {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// What the flusher's checkpoints need (`durable.rs`).
struct Durability {
    mode: durable::Mode,
    /// The root's descriptor, held since start (for `syncfs`, which then also reports a
    /// writeback error of any time since).
    root_dir: File,
    /// Writeback ahead of the checkpoint, in `Commit` mode.
    ahead: Option<durable::Ahead>,
}

fn flusher(shared: Arc<Shared>, file: File, durability: Durability, mut epoch: u64) {
    let mut end = HEADER_BYTES;
    let mut zeroed = file.metadata().map_or(0, |m| m.len());
    let mut last_checkpoint = Instant::now();
    // The keys of the records in the log: what the next `Commit` checkpoint waits for.
    let mut touched = touched::Touched::default();
    // A `Commit` checkpoint's wait, running beside the flusher, and the keys logged since it
    // started (`durable::Presync`).
    let mut presync: Option<durable::Presync> = None;
    let mut since = touched::Touched::default();
    // Set while checkpoints fail: when to try again, and the wait after the next failure.
    let mut retry: Option<(Instant, Duration)> = None;
    let checkpoint_due = |end: u64, last: Instant, retry: Option<(Instant, Duration)>| {
        end > HEADER_BYTES
            && match retry {
                Some((at, _)) => Instant::now() >= at,
                None => end >= CHECKPOINT_BYTES || last.elapsed() >= CHECKPOINT_INTERVAL,
            }
    };
    loop {
        let (queued, applies, guards, upto) = {
            let mut st = shared.lock();
            while st.queued.is_empty() && !st.shutdown {
                if presync.as_ref().is_some_and(durable::Presync::is_done)
                    || (presync.is_none()
                        && st.failed.is_none()
                        && checkpoint_due(end, last_checkpoint, retry))
                {
                    break;
                }
                st = shared
                    .wake_flusher
                    .wait_timeout(st, IDLE_TICK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if st.shutdown && st.queued.is_empty() {
                drop(st);
                if let Some(p) = presync.take() {
                    let _ = p.join(); // the log is replayed at the next start
                }
                return;
            }
            let upto = st.next_seq - 1;
            (
                std::mem::take(&mut st.queued),
                std::mem::take(&mut st.applies),
                std::mem::take(&mut st.guards),
                upto,
            )
        };
        let result = (|| -> io::Result<HashMap<u64, Vec<Applied>>> {
            if !queued.is_empty() {
                let group_end = end + (FRAME_BYTES + queued.len()) as u64;
                if group_end > zeroed {
                    zeroed = preallocate(&file, zeroed, group_end + LOG_PREALLOC_STEP);
                }
                write_group(&file, end, epoch, &queued)?;
                end += (FRAME_BYTES + queued.len()) as u64;
                if durability.mode == durable::Mode::Commit {
                    touched.note(&queued)?;
                    if presync.is_some() {
                        since.note(&queued)?;
                    }
                }
            }
            if !applies.is_empty() {
                // Durable, not yet applied: the restart must replay it.
                crate::failpoint::hit("journal-after-flush");
            }
            let mut outcomes: HashMap<u64, Vec<Applied>> = HashMap::new();
            for (seq, a) in applies {
                let written = match (&durability.ahead, &a) {
                    (Some(_), Apply::Put { path, .. } | Apply::PutIfAbsent { path, .. }) => {
                        Some(path.clone())
                    }
                    _ => None,
                };
                outcomes
                    .entry(seq)
                    .or_default()
                    .push(apply(&shared.root, a)?);
                if let (Some(ahead), Some(path)) = (&durability.ahead, written) {
                    ahead.push(path);
                }
            }
            Ok(outcomes)
        })();
        drop(guards);
        let mut st = shared.lock();
        match result {
            Ok(outcomes) => {
                st.outcomes.extend(outcomes);
                // Collected by their waiters; those of a waiter that gave up are dropped once
                // far behind (no live waiter is OUTCOMES_MAX records late).
                if st.outcomes.len() > OUTCOMES_MAX {
                    let oldest = upto.saturating_sub(OUTCOMES_MAX as u64);
                    st.outcomes.retain(|seq, _| *seq > oldest);
                }
                st.done_seq = upto;
            }
            Err(e) => {
                tracing::error!(error = %e, "the write journal failed; writes fail until a restart replays it");
                st.failed = Some(format!("write journal: {e}"));
            }
        }
        let waiters = std::mem::take(&mut st.waiters);
        st.log_full = end >= LOG_BYTES_MAX;
        let presync_done = presync.as_ref().is_some_and(durable::Presync::is_done);
        let due = presync_done
            || (presync.is_none()
                && st.failed.is_none()
                && checkpoint_due(end, last_checkpoint, retry));
        drop(st);
        for w in waiters {
            w.wake();
        }
        if !due {
            continue;
        }
        let attempt = if let Some(p) = presync.take() {
            // The wait beside the flusher is over: the rest of the checkpoint.
            durable::finish(p, &shared, &since, &file, epoch + 1)
        } else if durability.mode == durable::Mode::Commit && retry.is_none() {
            // The checkpoint's wait starts beside the flusher, which goes on.
            let waker = shared.clone();
            let started = durable::Presync::start(
                &shared.root,
                touched.written_files(&shared.root),
                move || {
                    let _st = waker.lock();
                    waker.wake_flusher.notify_one();
                },
            );
            match started {
                Ok(p) => {
                    presync = Some(p);
                    since.clear();
                    continue;
                }
                Err(e) => Err(e),
            }
        } else {
            match retry {
                // The last attempt failed: pages it reported may be lost, so the log's state
                // is written to the tree again before the keys are synced again, in one
                // step on the flusher.
                Some(_) => recover::reapply(&shared, &file, epoch, end),
                None => Ok(()),
            }
            .and_then(|()| injected_failure(&shared))
            .and_then(|()| {
                durable::checkpoint(
                    durability.mode,
                    &durability.root_dir,
                    &shared.root,
                    &touched,
                    &file,
                    epoch + 1,
                )
            })
        };
        let mut st = shared.lock();
        match attempt {
            Ok(()) => {
                st.checkpoints += 1;
                st.log_full = false;
                epoch += 1;
                end = HEADER_BYTES;
                touched.clear();
                since.clear();
                last_checkpoint = Instant::now();
                if retry.take().is_some() {
                    tracing::info!("journal checkpoint succeeded again");
                }
            }
            Err(e) => {
                st.checkpoint_failures += 1;
                let wait = retry.map_or(CHECKPOINT_RETRY_MIN, |(_, w)| {
                    (w * 2).min(CHECKPOINT_RETRY_MAX)
                });
                tracing::error!(error = %e, retry_in = ?wait, "journal checkpoint failed; the log keeps its records until one succeeds");
                retry = Some((Instant::now() + wait, wait));
            }
        }
    }
}

mod apply;
mod durable;
mod log;
mod recover;
mod replay;
mod touched;
pub(super) use apply::apply;
#[cfg(test)]
use log::GROUPS_WRITTEN;
use log::{checkpoint, group_sum, injected_failure, preallocate, write_group};
use replay::replay;

#[cfg(test)]
mod tests;
