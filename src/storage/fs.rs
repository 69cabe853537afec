//! Filesystem backend: one file per key under `root_dir`.
//!
//! Atomicity: every `put` writes a `.tmp*` file in the destination directory, fsyncs it and
//! renames it into place (or, for create-if-absent, hard-links it, which fails if the name
//! exists, so of two racing creators exactly one wins). The parent directory is fsynced after
//! each rename, link, unlink and mkdir so the change survives a crash. Leftover temp files
//! from a crash are never listed and are removed by [`FsStorage::cleanup_temp`].
//!
//! Etags are the hex SHA-256 of the content. That costs a hash per `get`/`put` of a small
//! metadata object, but unlike mtime+size+inode it cannot repeat for different content (inode
//! numbers are reused and mtimes are only as fine as the kernel's coarse clock), and it is
//! stable across restarts and copies of the store.
//!
//! Replace-if-unchanged and every other mutation of a key serialise on a per-key lock held in
//! this process (shared by all cores and all `FsStorage` values). The backend therefore
//! assumes **one node per `root_dir`**; several nodes need the object-store backend, whose
//! conditional writes the server relies on instead.
//!
//! Directories are implicit: created on demand and pruned when a delete empties them. A
//! creator that loses the race against a prune (its fresh directory removed before its file
//! lands) retries.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, SystemTime};

use compio::buf::{IntoInner, IoBuf, IoBufMut};
use compio::fs::{File, OpenOptions};
use compio::io::{AsyncReadAt, AsyncWriteAtExt};
use compio::BufResult;
use sha2::{Digest, Sha256};

use super::{
    validate_key, validate_prefix, BlobReader, CommitOutcome, Etag, Meta, Object, PutCondition,
    PutOutcome, Result, Storage, StorageError, UploadWriter, LIST_KEYS_MAX, TEMP_PREFIX,
};

/// Default cap on `get`: the 4 MiB manifest limit (the OCI spec's guidance) plus room for
/// the small metadata objects that are not manifests.
pub const METADATA_OBJECT_BYTES_MAX_DEFAULT: u64 = 4 * 1024 * 1024 + 64 * 1024;

/// Objects up to this size are hashed on the core; larger ones on the blocking pool.
/// SHA-256 runs at roughly 0.4-2 GB/s here, so 16 KiB stays well under the ~100 µs budget
/// for work on a core (DESIGN.md), and typical manifests and links are smaller.
const HASH_INLINE_BYTES_MAX: usize = 16 * 1024;

/// Most entries one directory may have for a listing, which holds them all in memory to sort
/// them (~100 bytes each, so ~100 MiB at worst). The layout shards blobs far below this.
const DIR_ENTRIES_MAX: usize = 1 << 20;

/// Attempts at creating a file whose fresh parent directory a concurrent prune removed. Each
/// failure needs a delete emptying that very directory in the same microseconds; eight in a
/// row means something else is wrong.
const DIR_RACE_RETRIES_MAX: usize = 8;

/// Attempts at picking an unused random temp-file name; 64 random bits make a single
/// collision already unlikely.
const TEMP_NAME_ATTEMPTS_MAX: usize = 4;

/// The filesystem backend. Cheap to clone; `Send + Sync`, so all cores can share one.
#[derive(Clone, Debug)]
pub struct FsStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Canonical, so that key locks taken through any `FsStorage` on the same directory meet.
    root: PathBuf,
    metadata_object_bytes_max: u64,
}

impl FsStorage {
    /// Opens (creating it if needed) a store rooted at `root_dir`. Blocking: call at startup,
    /// before the cores serve requests.
    pub fn new(root_dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&root_dir)?;
        let root = std::fs::canonicalize(&root_dir)?;
        Ok(FsStorage {
            inner: Arc::new(Inner {
                root,
                metadata_object_bytes_max: METADATA_OBJECT_BYTES_MAX_DEFAULT,
            }),
        })
    }

    /// Sets the cap on `get` (whole-object reads).
    pub fn with_metadata_object_bytes_max(self, bytes_max: u64) -> Self {
        FsStorage {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                metadata_object_bytes_max: bytes_max,
            }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Removes temp files (crash leftovers) at least `age_min` old; returns how many. Call at
    /// startup: with `age_min` zero it would also remove the temp files of puts in flight.
    pub async fn cleanup_temp(&self, age_min: Duration) -> Result<u64> {
        let root = self.inner.root.clone();
        blocking(move || remove_temp_files(&root, age_min)).await?
    }

    fn path(&self, key: &str) -> PathBuf {
        self.inner.root.join(key)
    }

    /// Reads a whole object of at most `metadata_object_bytes_max` bytes.
    async fn read_object(&self, path: &Path, key: &str) -> Result<Option<Object>> {
        let Some((file, size)) = open_file(path, OpenOptions::new().read(true)).await? else {
            return Ok(None);
        };
        let max = self.inner.metadata_object_bytes_max;
        let too_large = || StorageError::TooLarge {
            key: key.to_owned(),
            limit_bytes: max,
        };
        if size > max {
            return Err(too_large());
        }
        // `size <= max` and `max` was chosen to fit memory, so the conversion only fails on a
        // platform with a tiny usize; treat that like an oversized object.
        let size = usize::try_from(size).map_err(|_| too_large())?;
        // Objects are never written in place (a put renames a new file over the old one), so
        // the `size` bytes of this inode, as of the open, are the whole object: one read.
        let mut buf = Vec::with_capacity(size);
        while buf.len() < size {
            let pos = buf.len();
            let BufResult(res, slice) = file.read_at(buf.slice(pos..), pos as u64).await;
            buf = slice.into_inner();
            match res {
                Ok(0) => break, // Truncated under us (not by this backend): take what is there.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (bytes, etag) = etag_of(buf).await?;
        Ok(Some(Object { bytes, etag }))
    }

    /// Writes `bytes` to a new, fsynced temp file next to `path`, creating directories.
    async fn write_temp(&self, path: &Path, bytes: Vec<u8>) -> Result<PathBuf> {
        let (mut file, temp) = self.create_temp(path).await?;
        let BufResult(res, _) = file.write_all_at(bytes, 0).await;
        let res = match res {
            Ok(()) => file.sync_data().await,
            Err(e) => Err(e),
        };
        drop(file);
        if let Err(e) = res {
            remove_quietly(&temp).await;
            return Err(e.into());
        }
        Ok(temp)
    }

    async fn create_temp(&self, path: &Path) -> Result<(File, PathBuf)> {
        let dir = parent_of(path)?;
        for _ in 0..TEMP_NAME_ATTEMPTS_MAX {
            let temp = dir.join(temp_name()?);
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            match self.create_file(&temp, &options).await {
                Ok(file) => return Ok((file, temp)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("no unused temp file name found").into())
    }

    /// Opens `path` with `options` (which create it), creating missing directories first
    /// and retrying if a concurrent prune removes them before the file lands.
    async fn create_file(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        let mut attempt = 0;
        loop {
            match options.open(path).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < DIR_RACE_RETRIES_MAX => {
                    attempt += 1;
                    self.create_dirs(parent_of(path)?).await?;
                }
                res => return res,
            }
        }
    }

    /// Creates `dir` and its missing ancestors below the root, fsyncing each new entry's
    /// parent so the directories survive a crash along with the file put in them. A concurrent
    /// prune may remove a fresh (still empty) ancestor between two steps: start over then.
    async fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        let mut attempt = 0;
        loop {
            match self.create_dirs_once(dir).await {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < DIR_RACE_RETRIES_MAX => {
                    attempt += 1;
                }
                res => return res,
            }
        }
    }

    async fn create_dirs_once(&self, dir: &Path) -> io::Result<()> {
        let root = &self.inner.root;
        let mut missing = Vec::new();
        let mut cur = dir;
        while cur != root.as_path() && cur.starts_with(root) {
            match compio::fs::metadata(cur).await {
                Ok(m) if m.is_dir() => break,
                Ok(_) => return Err(io::Error::from(io::ErrorKind::NotADirectory)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(cur),
                Err(e) => return Err(e),
            }
            cur = parent_of(cur)?;
        }
        for new_dir in missing.into_iter().rev() {
            match compio::fs::create_dir(new_dir).await {
                Ok(()) => sync_dir(parent_of(new_dir)?).await?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes the empty directories from `dir` up to (not including) the root. Stops at the
    /// first that is not empty; a racing creator recreates what it needs (`create_file`).
    async fn prune_dirs(&self, dir: &Path) {
        let root = &self.inner.root;
        let mut cur = dir;
        while cur != root.as_path() && cur.starts_with(root) {
            if compio::fs::remove_dir(cur).await.is_err() {
                return;
            }
            match cur.parent() {
                Some(parent) => cur = parent,
                None => return,
            }
        }
    }

    /// Places a synced temp file at `path`: rename (replace), or link (create-if-absent,
    /// `false` if the name exists). The temp file is gone afterwards either way.
    async fn place(&self, temp: &Path, path: &Path, replace: bool) -> Result<bool> {
        let res = if replace {
            compio::fs::rename(temp, path).await
        } else {
            let linked = compio::fs::hard_link(temp, path).await;
            remove_quietly(temp).await;
            linked
        };
        match res {
            Ok(()) => {}
            Err(e) if !replace && e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => {
                remove_quietly(temp).await;
                return Err(e.into());
            }
        }
        sync_dir(parent_of(path)?).await?;
        Ok(true)
    }

    async fn commit_upload(&self, upload: &Path, dest: &Path) -> Result<Option<CommitOutcome>> {
        let Some((file, _)) = open_file(upload, OpenOptions::new().read(true)).await? else {
            return Ok(None);
        };
        file.sync_data().await?;
        drop(file);
        let mut attempt = 0;
        let outcome = loop {
            match compio::fs::hard_link(upload, dest).await {
                Ok(()) => break CommitOutcome::Committed,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    break CommitOutcome::AlreadyExisted
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < DIR_RACE_RETRIES_MAX => {
                    if !is_file(upload).await? {
                        return Ok(None); // Committed or deleted concurrently.
                    }
                    attempt += 1;
                    self.create_dirs(parent_of(dest)?).await?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if outcome == CommitOutcome::Committed {
            sync_dir(parent_of(dest)?).await?;
        }
        match compio::fs::remove_file(upload).await {
            Ok(()) => self.prune_dirs(parent_of(upload)?).await,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Some(outcome))
    }
}

impl Storage for FsStorage {
    type Reader = FsReader;
    type Upload = FsUpload;

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        validate_key(key)?;
        self.read_object(&self.path(key), key).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, cond: PutCondition) -> Result<PutOutcome> {
        validate_key(key)?;
        let path = self.path(key);
        let _lock = lock_key(path.clone()).await;
        match &cond {
            PutCondition::Always => {}
            // Cheap early answer; the link below is what makes it race-free.
            PutCondition::IfAbsent if is_file(&path).await? => {
                return Ok(PutOutcome::PreconditionFailed)
            }
            PutCondition::IfAbsent => {}
            PutCondition::IfMatch(etag) => match self.read_object(&path, key).await? {
                Some(current) if current.etag == *etag => {}
                _ => return Ok(PutOutcome::PreconditionFailed),
            },
        }
        let (bytes, etag) = etag_of(bytes).await?;
        let temp = self.write_temp(&path, bytes).await?;
        let replace = cond != PutCondition::IfAbsent;
        if self.place(&temp, &path, replace).await? {
            Ok(PutOutcome::Written(etag))
        } else {
            Ok(PutOutcome::PreconditionFailed)
        }
    }

    async fn head(&self, key: &str) -> Result<Option<Meta>> {
        validate_key(key)?;
        let meta = if crate::sys::direct_file_calls() {
            std::fs::metadata(self.path(key)).map(|m| (m.is_file(), m.len(), m.modified()))
        } else {
            compio::fs::metadata(self.path(key))
                .await
                .map(|m| (m.is_file(), m.len(), m.modified()))
        };
        match meta {
            Ok((true, size, modified)) => Ok(Some(Meta {
                size,
                modified: modified?,
            })),
            Ok(_) => Ok(None),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let path = self.path(key);
        let _lock = lock_key(path.clone()).await;
        match compio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let dir = parent_of(&path)?;
        sync_dir(dir).await?;
        self.prune_dirs(dir).await;
        Ok(true)
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let root = self.inner.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        let limit = limit.min(LIST_KEYS_MAX);
        blocking(move || list_sorted(&root, &prefix, start_after.as_deref(), limit)).await?
    }

    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let dir = self.inner.root.join(prefix.trim_end_matches('/'));
        let prefix = prefix.to_owned();
        blocking(move || {
            let mut names = Vec::new();
            for (name, _) in read_dir_entries(&dir, &prefix)? {
                names.push(name);
            }
            names.sort_unstable();
            Ok(names)
        })
        .await?
    }

    async fn open_read(&self, key: &str) -> Result<Option<FsReader>> {
        validate_key(key)?;
        if crate::sys::direct_file_calls() {
            return open_read_direct(&self.path(key));
        }
        let opened = open_file(&self.path(key), OpenOptions::new().read(true)).await?;
        Ok(opened.map(|(file, size)| FsReader { file, size }))
    }

    async fn upload_create(&self, key: &str) -> Result<FsUpload> {
        validate_key(key)?;
        let path = self.path(key);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        match self.create_file(&path, &options).await {
            Ok(file) => {
                sync_dir(parent_of(&path)?).await?;
                Ok(FsUpload { file })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(StorageError::AlreadyExists {
                    key: key.to_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn open_upload(&self, key: &str) -> Result<Option<FsUpload>> {
        validate_key(key)?;
        let opened = open_file(&self.path(key), OpenOptions::new().read(true).write(true)).await?;
        Ok(opened.map(|(file, _)| FsUpload { file }))
    }

    async fn upload_size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.head(key).await?.map(|meta| meta.size))
    }

    async fn upload_commit(
        &self,
        upload_key: &str,
        dest_key: &str,
    ) -> Result<Option<CommitOutcome>> {
        validate_key(upload_key)?;
        validate_key(dest_key)?;
        let dest = self.path(dest_key);
        // Serialises with a delete of the destination; the upload data itself is owned by the
        // session, and a second commit of it finds it gone.
        let _lock = lock_key(dest.clone()).await;
        self.commit_upload(&self.path(upload_key), &dest).await
    }
}

/// An object opened for serving. Exposes its fd for `sendfile(2)`.
#[derive(Debug, Clone)]
pub struct FsReader {
    file: File,
    size: u64,
}

impl FsReader {
    /// The open file, for serving it (read_at or sendfile) from the HTTP layer.
    pub fn into_file(self) -> File {
        self.file
    }
}

impl BlobReader for FsReader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> BufResult<usize, B> {
        self.file.read_at(buf, offset).await
    }

    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }
}

impl AsRawFd for FsReader {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for FsReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Upload data open for writing.
#[derive(Debug)]
pub struct FsUpload {
    file: File,
}

impl UploadWriter for FsUpload {
    async fn write_all_at<B: IoBuf>(&mut self, buf: B, offset: u64) -> BufResult<(), B> {
        let len = buf.buf_len() as u64;
        let res = self.file.write_all_at(buf, offset).await;
        if res.0.is_ok() {
            start_writeback(&self.file, offset, len);
        }
        res
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        Ok(self.file.set_len(len).await?)
    }

    async fn sync(&mut self) -> Result<()> {
        Ok(self.file.sync_data().await?)
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.file.metadata().await?.len())
    }
}

/// Upload data is handed to the disk in windows of this size as it arrives, so the fsync at
/// commit finds little left to write (the disk works while the rest is still received).
const WRITEBACK_WINDOW_BYTES: u64 = 8 * 1024 * 1024;

/// When a write completes a writeback window, starts writing that window out (not waiting
/// for it: `SYNC_FILE_RANGE_WRITE` only queues the I/O).
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (before, after) = (
        offset / WRITEBACK_WINDOW_BYTES,
        (offset + len) / WRITEBACK_WINDOW_BYTES,
    );
    if after > before {
        let start = (after - 1) * WRITEBACK_WINDOW_BYTES;
        // SAFETY: plain syscall on an open descriptor; failure only loses the head start.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start as libc::off64_t,
                WRITEBACK_WINDOW_BYTES as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

/// Opens a regular file: `None` if it (or a parent) is missing or it is a directory.
async fn open_file(path: &Path, options: &OpenOptions) -> Result<Option<(File, u64)>> {
    let file = match options.open(path).await {
        Ok(file) => file,
        Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata().await?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some((file, meta.len())))
}

/// `open_read` with direct calls (polling driver): open and fstat on this thread.
fn open_read_direct(path: &Path) -> Result<Option<FsReader>> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if is_absent(&e) || e.kind() == io::ErrorKind::IsADirectory => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    // SAFETY: the descriptor was just opened and its ownership moves to the compio File.
    let file = unsafe { File::from_raw_fd(file.into_raw_fd()) };
    Ok(Some(FsReader {
        file,
        size: meta.len(),
    }))
}

async fn is_file(path: &Path) -> io::Result<bool> {
    match compio::fs::metadata(path).await {
        Ok(m) => Ok(m.is_file()),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Missing file, or a parent that is a file rather than a directory: no such key.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    // Every path here is the root joined with a validated, non-empty key, so it has a parent.
    path.parent()
        .ok_or_else(|| io::Error::other("storage path without parent"))
}

/// Makes `dir`'s entries (a rename, link, unlink or mkdir in it) durable.
/// Makes a directory's entries durable. A directory that is gone was pruned by a concurrent
/// delete, which only removes empty directories: whatever we changed in it is already gone
/// too, so there is nothing left to make durable.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .await;
    match opened {
        Ok(dir) => dir.sync_all().await,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

async fn remove_quietly(path: &Path) {
    // Best effort on an error path: a temp file left behind is never listed, and
    // `cleanup_temp` removes it at the next start.
    let _ = compio::fs::remove_file(path).await;
}

fn temp_name() -> io::Result<String> {
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(io::Error::other)?;
    Ok(format!("{TEMP_PREFIX}-{}", hex(&random)))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The content's etag; hashes large objects off the core.
async fn etag_of(bytes: Vec<u8>) -> io::Result<(Vec<u8>, Etag)> {
    let hash = |bytes: &[u8]| Etag::new(hex(&Sha256::digest(bytes)));
    if bytes.len() <= HASH_INLINE_BYTES_MAX {
        let etag = hash(&bytes);
        return Ok((bytes, etag));
    }
    blocking(move || {
        let etag = hash(&bytes);
        (bytes, etag)
    })
    .await
}

/// Runs `f` on compio's blocking pool (directory walks, large hashes).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    compio::runtime::spawn_blocking(f)
        .await
        .map_err(io::Error::from)
}

/// A directory's entries usable as key components: UTF-8 names, no temp files, regular
/// files (`false`) and directories (`true`); symlinks and others are ignored. A directory
/// that is missing (deleted concurrently, or never created) has no entries.
fn read_dir_entries(dir: &Path, prefix: &str) -> Result<Vec<(String, bool)>> {
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
fn list_sorted(
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

fn remove_temp_files(root: &Path, age_min: Duration) -> Result<u64> {
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

/// Per-key locks shared by every `FsStorage` in the process, keyed by absolute path. A key
/// present in the map is held; its waiters are woken (all of them: contention on one key is
/// rare, and waking all makes a cancelled waiter harmless) when the holder drops its guard.
/// The waiter lists are bounded by the requests in flight, which the server caps.
static KEY_LOCKS: LazyLock<Mutex<HashMap<PathBuf, Vec<Waker>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn key_locks() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Vec<Waker>>> {
    // No code panics while holding this mutex (map operations only), so a poisoned lock
    // still holds a consistent map.
    KEY_LOCKS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a key is being mutated; releases on drop.
struct KeyLock {
    path: PathBuf,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        let waiters = key_locks().remove(&self.path).unwrap_or_default();
        for waker in waiters {
            waker.wake();
        }
    }
}

async fn lock_key(path: PathBuf) -> KeyLock {
    poll_fn(|cx| {
        let mut locks = key_locks();
        match locks.get_mut(&path) {
            None => {
                locks.insert(path.clone(), Vec::new());
                Poll::Ready(())
            }
            Some(waiters) => {
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    })
    .await;
    KeyLock { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock admits one holder per key at a time, and different keys do not interfere.
    #[test]
    fn key_lock_excludes_per_key() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let a = PathBuf::from("/nonexistent/key-lock-test/a");
            let b = PathBuf::from("/nonexistent/key-lock-test/b");
            let held = lock_key(a.clone()).await;
            let _other = lock_key(b).await;
            let waiter = compio::runtime::spawn(lock_key(a.clone()));
            compio::runtime::time::sleep(Duration::from_millis(20)).await;
            assert!(!waiter.is_finished(), "second holder admitted");
            drop(held);
            let again = waiter.await.unwrap();
            drop(again);
            assert!(!key_locks().contains_key(&a), "lock entry leaked");
        });
    }

    /// One `FsStorage` can be shared by all cores.
    #[test]
    fn storage_is_send_sync() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<FsStorage>();
    }

    /// Create-if-absent placement by link(2) lets exactly one of several racing creators
    /// win even without the key lock (which normally serialises them first), on both drivers,
    /// and leaves no temp file behind.
    #[test]
    fn link_placement_has_one_winner() {
        let poll = {
            let mut proactor = compio::driver::ProactorBuilder::new();
            proactor.driver_type(compio::driver::DriverType::Poll);
            compio::runtime::RuntimeBuilder::new()
                .with_proactor(proactor)
                .build()
                .unwrap()
        };
        for rt in [compio::runtime::Runtime::new().unwrap(), poll] {
            let dir = crate::storage::tests::TempDir::new();
            let s = FsStorage::new(dir.path().join("s")).unwrap();
            rt.block_on(async {
                const RACERS: u8 = 8;
                let path = s.path("k/x");
                let mut temps = Vec::new();
                for i in 0..RACERS {
                    temps.push((i, s.write_temp(&path, vec![i]).await.unwrap()));
                }
                let tasks: Vec<_> = temps
                    .into_iter()
                    .map(|(i, temp)| {
                        let (s, path) = (s.clone(), path.clone());
                        compio::runtime::spawn(async move {
                            (i, s.place(&temp, &path, false).await.unwrap())
                        })
                    })
                    .collect();
                let mut winners = Vec::new();
                for task in tasks {
                    let (i, won) = task.await.unwrap();
                    if won {
                        winners.push(i);
                    }
                }
                assert_eq!(winners.len(), 1, "{winners:?}");
                assert_eq!(std::fs::read(&path).unwrap(), [winners[0]]);
                let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                assert_eq!(names, ["x"]);
            });
        }
    }

    /// Hex encoding matches the usual lower-case form.
    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
