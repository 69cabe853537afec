//! The checkpoint: the tree made durable up to the log's end, so the log may start again.
//!
//! Two ways, chosen once per root at start ([`Mode::of`]):
//!
//! - **`Commit`**, on ext4 with its journal and on xfs: the data of each file the log wrote is
//!   waited for (`sync_file_range`, see [`wait_written`]), then one commit of the
//!   filesystem's journal makes every name and inode change before it durable (see
//!   [`commit`]). The checkpoint waits for the registry's own files and nothing else. ext4's
//!   journal (jbd2) commits its transactions whole and in order, so forcing the commit of the
//!   transaction that holds a change made *after* all those files were written and renamed
//!   commits them too, and the commit's cache flush makes their data, already on the device,
//!   durable with it. The change is an extended attribute on the log file: ext4's fast
//!   commits (a per-inode commit, when the filesystem has them) do not take attribute
//!   changes, so the commit is a full one on every ext4. xfs's log is the same kind of
//!   journal: `fsync` forces the log up to the inode's last change, and a log force writes
//!   every change committed before it (its delayed-logging checkpoints are written in order),
//!   with a cache flush.
//! - **`Syncfs`** everywhere else (ext4 without a journal, btrfs, tmpfs, ...): `syncfs`
//!   of the root's filesystem. It is right on any filesystem, and also writes out whatever
//!   every other process dirtied there: a 2 GiB `dd` beside the registry made one checkpoint,
//!   and every group commit queued behind it, wait half a second to a second
//!   (bench/results/2026-12-06-checkpoint-commit.md).
//!
//! In `Commit` mode the wait runs beside the flusher ([`Presync`]): group commits go on
//! while it waits for the files logged until it started, and the flusher pauses only for the
//! end ([`finish`]: the files logged since, the journal commit, the new header). After a
//! failed checkpoint the next one runs whole on the flusher, after the log's state is
//! written to the tree again (`recover.rs`).
//!
//! In `Commit` mode a thread writes applied files back soon after the flusher applied them
//! ([`Ahead`]), so at the checkpoint their data is mostly on the device already and the wait
//! is short: the kernel would write them within its 30 s expiry anyway; this only starts it
//! sooner. Nothing depends on it: the checkpoint's own pass starts what it has not.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::log::{checkpoint as syncfs_checkpoint, injected_failure, write_header};
use super::touched::Touched;
use super::*;

/// ext4's (and ext2/3's) `statfs` magic.
const EXT4_SUPER_MAGIC: i64 = 0xEF53;
/// xfs's `statfs` magic ("XFSB").
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
/// The extended attribute the `Commit` checkpoint sets on the log file: the new epoch.
const COMMIT_XATTR: &std::ffi::CStr = c"user.origin.checkpoint";
/// Threads waiting for written files while the flusher pauses at a checkpoint's end. Files
/// the writeback ahead has not reached wait for a device write each, so the more wait side
/// by side the fewer rounds of device latency the pause takes: on the 2-core test VM, a
/// whole checkpoint of 15,000-18,000 files took 260-360 ms with 2 threads, 110-160 with 8
/// and 80-130 with 64 (128 gained nothing more).
const WAIT_THREADS: usize = 64;
/// Threads of a [`Presync`]'s wait, which runs beside group commits: few, so its writes
/// do not crowd the log's flushes at the device (with 64, the slowest 1 % of manifest PUTs
/// took 23-28 ms on a quiet filesystem, with 4 13-15 ms; with 1 and a lower CPU priority,
/// 10-11 ms, but the wait took long enough that the flusher's pause grew to 170-250 ms).
const PRESYNC_THREADS: usize = 4;
/// Files queued for writeback ahead at most; beyond, the checkpoint's pass starts them.
const AHEAD_QUEUE_MAX: usize = 16 * 1024;

/// How checkpoints make the tree durable (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Commit,
    Syncfs,
}

impl Mode {
    /// `Commit` when `root_dir` is on ext4 with a journal or on xfs, and the log takes an
    /// extended attribute; `Syncfs` otherwise (or when anything here cannot be told).
    pub(super) fn of(root_dir: &File, log: &File, root: &Path) -> Mode {
        #[cfg(test)]
        if FORCE_COMMIT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|r| r == root)
        {
            return Mode::Commit;
        }
        let _ = root;
        match journaled(root_dir) {
            Ok(true) if set_commit_xattr(log, 0).is_ok() => Mode::Commit,
            _ => Mode::Syncfs,
        }
    }
}

/// True when `dir` is on xfs (which always has its log), or on ext4 whose journal is
/// running: the kernel lists a running jbd2 journal as `/proc/fs/jbd2/<device>-<journal
/// inode>`, 8 for ext4's own.
fn journaled(dir: &File) -> io::Result<bool> {
    // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall on an open descriptor and a statfs it may write.
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type is an i64 here and an i32 on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let fs_type = i64::from(st.f_type);
    match fs_type {
        XFS_SUPER_MAGIC => return Ok(true),
        EXT4_SUPER_MAGIC => {}
        _ => return Ok(false),
    }
    let dev = dir.metadata()?.dev();
    let uevent = std::fs::read_to_string(format!(
        "/sys/dev/block/{}:{}/uevent",
        libc::major(dev),
        libc::minor(dev)
    ))?;
    let Some(name) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
        return Ok(false);
    };
    let jbd2 = format!("/proc/fs/jbd2/{}-8", name.replace('/', "!"));
    Ok(Path::new(&jbd2).exists())
}

fn set_commit_xattr(log: &File, epoch: u64) -> io::Result<()> {
    let value = epoch.to_le_bytes();
    // SAFETY: plain syscall on an open descriptor, a NUL-terminated name and a live buffer.
    let r = unsafe {
        libc::fsetxattr(
            log.as_raw_fd(),
            COMMIT_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the tree durable up to the log's end (module docs), then starts the log again under
/// `epoch`.
pub(super) fn checkpoint(
    mode: Mode,
    root_dir: &File,
    root: &Path,
    touched: &Touched,
    log: &File,
    epoch: u64,
) -> io::Result<()> {
    match mode {
        Mode::Syncfs => syncfs_checkpoint(root_dir, log, epoch),
        Mode::Commit => wait_commit_restart(root, touched, log, epoch, (0, Duration::ZERO)),
    }
}

/// The end of every `Commit` checkpoint: the files `touched` wrote waited for, one journal
/// commit, and the log started again under `epoch`. `presync` (files, time) is what a wait
/// beside the flusher did before, for the debug line.
fn wait_commit_restart(
    root: &Path,
    touched: &Touched,
    log: &File,
    epoch: u64,
    (presync_files, presync_took): (usize, Duration),
) -> io::Result<()> {
    let started = Instant::now();
    let files = touched.written_files(root);
    wait_written(&files, WAIT_THREADS)?;
    let written = started.elapsed();
    commit(log, epoch)?;
    tracing::debug!(
        presync_files,
        ?presync_took,
        files = files.len(),
        ?written,
        committed = ?started.elapsed().saturating_sub(written),
        "journal checkpoint"
    );
    write_header(log, epoch)
}

/// The bulk of a `Commit` checkpoint, off the flusher: a thread waits for the files the log
/// wrote up to the moment it started ([`wait_written`]) while the flusher goes on committing
/// groups. The flusher then ends the checkpoint itself ([`finish`]): it waits only for the
/// files written since (mostly written back by then), commits the filesystem's journal and
/// starts the log again. So group commits pause for that short end, not for the whole wait.
pub(super) struct Presync {
    thread: std::thread::JoinHandle<()>,
    result: Arc<Mutex<Option<io::Result<()>>>>,
    started: Instant,
    files: usize,
}

impl Presync {
    /// Starts waiting for `files`; `done` runs on the thread when the wait is over (the
    /// flusher's wake-up).
    pub(super) fn start(
        root: &Path,
        files: Vec<PathBuf>,
        done: impl FnOnce() + Send + 'static,
    ) -> io::Result<Presync> {
        let result = Arc::new(Mutex::new(None));
        let out = result.clone();
        let count = files.len();
        #[cfg(test)]
        let root = root.to_path_buf();
        #[cfg(not(test))]
        let _ = root;
        let thread = std::thread::Builder::new()
            .name("origin-checkpoint".into())
            .spawn(move || {
                #[cfg(test)]
                hold_presync(&root);
                let r = wait_written(&files, PRESYNC_THREADS);
                *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                done();
            })?;
        Ok(Presync {
            thread,
            result,
            started: Instant::now(),
            files: count,
        })
    }

    /// True once the wait is over.
    pub(super) fn is_done(&self) -> bool {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Waits for the thread; what its wait returned.
    pub(super) fn join(self) -> io::Result<()> {
        let _ = self.thread.join();
        let result = self
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        result.unwrap_or_else(|| Err(io::Error::other("a checkpoint thread panicked")))
    }
}

/// Ends a `Commit` checkpoint whose [`Presync`] succeeded: waits for the files written since
/// it started (`since`), commits the filesystem's journal, and starts the log again under
/// `epoch`.
pub(super) fn finish(
    presync: Presync,
    shared: &Shared,
    since: &Touched,
    log: &File,
    epoch: u64,
) -> io::Result<()> {
    let done = (presync.files, presync.started.elapsed());
    presync.join()?;
    injected_failure(shared)?;
    wait_commit_restart(&shared.root, since, log, epoch, done)
}

/// Waits until the data of each file is on the device, starting its writeback if nothing
/// has: `sync_file_range` with `WAIT_BEFORE | WRITE | WAIT_AFTER`, which (unlike `fsync`)
/// neither commits the filesystem's journal nor flushes the device cache per file; the
/// commit after does both once. A file gone by now was removed after its record; its
/// removal is a name change the commit covers. A writeback error the kernel kept for a file
/// since its last report is returned here, as `fsync` would.
fn wait_written(paths: &[PathBuf], width: usize) -> io::Result<()> {
    let next = AtomicUsize::new(0);
    let worker = || -> io::Result<()> {
        loop {
            let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return Ok(());
            };
            if let Err(e) = wait_one(path) {
                next.store(paths.len(), Ordering::Relaxed); // the others stop too
                return Err(e);
            }
        }
    };
    std::thread::scope(|s| {
        let mut threads = Vec::new();
        for _ in 1..width.min(paths.len()) {
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

fn wait_one(path: &Path) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscall on an open descriptor.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(test)]
    WAITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(path.to_path_buf());
    Ok(())
}

/// One full commit of the filesystem's journal, after everything the checkpoint covers: an
/// attribute change on the log file (in the journal's running transaction, and never taken
/// by a fast commit), then `fsync` of the log file, which waits for that transaction's
/// commit and so for every one before it.
fn commit(log: &File, epoch: u64) -> io::Result<()> {
    set_commit_xattr(log, epoch)?;
    log.sync_all()
}

/// Writeback started soon after the flusher applies a file (module docs): a thread of its
/// own, fed through a bounded queue; a full queue skips the file.
pub(super) struct Ahead {
    queue: SyncSender<PathBuf>,
}

impl Ahead {
    /// Starts the thread; it ends when the `Ahead` is dropped.
    pub(super) fn start() -> io::Result<Ahead> {
        let (queue, files) = sync_channel(AHEAD_QUEUE_MAX);
        std::thread::Builder::new()
            .name("origin-writeback".into())
            .spawn(move || write_back(files))?;
        Ok(Ahead { queue })
    }

    /// Queues `path` for writeback; never waits.
    pub(super) fn push(&self, path: PathBuf) {
        let _ = self.queue.try_send(path);
    }
}

fn write_back(files: Receiver<PathBuf>) {
    while let Ok(path) = files.recv() {
        // Errors are the checkpoint's to report: it waits for the same file.
        if let Ok(file) = File::open(&path) {
            // SAFETY: plain syscall on an open descriptor.
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        }
    }
}

/// Roots whose [`Presync`] waits, before it starts, until a test takes the root out again;
/// each presync that started holding is counted in `PRESYNCS_HELD`.
#[cfg(test)]
pub(super) static HOLD_PRESYNC: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
#[cfg(test)]
pub(super) static PRESYNCS_HELD: AtomicUsize = AtomicUsize::new(0);

#[cfg(test)]
fn hold_presync(root: &Path) {
    let held = || {
        HOLD_PRESYNC
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|r| r == root)
    };
    if held() {
        PRESYNCS_HELD.fetch_add(1, Ordering::SeqCst);
        while held() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Roots whose journal a test runs in `Commit` mode whatever their filesystem.
#[cfg(test)]
pub(super) static FORCE_COMMIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Every file a `Commit` checkpoint waited for (all journals of the process), for tests.
#[cfg(test)]
pub(super) static WAITED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
