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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use compio::fs::{File, OpenOptions};
use compio::io::AsyncWriteAtExt;
use compio::BufResult;

use super::{
    validate_key, validate_prefix, CommitOutcome, Etag, Meta, Object, PutCondition, PutOutcome,
    Result, Storage, StorageError, LIST_KEYS_MAX,
};

mod dir_index;
mod dir_window;
mod files;
mod journal;
mod journaled;
mod listing;
mod locks;

use files::{
    blocking, etag_of, is_absent, is_file, open_file, open_for_read, parent_of, read_whole,
    remove_quietly, sync_dir, temp_name,
};
pub use files::{FsReader, FsUpload};
use listing::{read_dir_entries, remove_temp_files};
use locks::lock_key;

/// Default cap on `get`: the 4 MiB manifest limit (the OCI spec's guidance) plus room for
/// the small metadata objects that are not manifests.
pub const METADATA_OBJECT_BYTES_MAX_DEFAULT: u64 = 4 * 1024 * 1024 + 64 * 1024;

/// Objects up to this size are hashed on the core; larger ones on the blocking pool.
/// SHA-256 runs at roughly 0.4-2 GB/s here, so 16 KiB stays well under the ~100 µs budget
/// for work on a core (docs/ARCHITECTURE.md, section 4), and typical manifests and links are
/// smaller.
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
/// Paths up to this long are built on the stack for a stat (the standard library copies a
/// path of up to 384 bytes to the stack for its NUL; longer ones it allocates anyway).
const STACK_PATH_BYTES: usize = 384;

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
    /// With a journal, small-object writes are group-committed (`journal/mod.rs`); without one
    /// (tests, maintenance commands) each write makes itself durable.
    journal: Option<Arc<journal::Journal>>,
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
                journal: None,
            }),
        })
    }

    /// Takes the root's write journal: replays what a previous run left in it, then
    /// group-commits every small-object write. One process per root may hold it; a second
    /// fails here. Blocking: call at startup.
    pub fn with_journal(self) -> io::Result<Self> {
        let journal = journal::Journal::open(&self.inner.root)?;
        Ok(FsStorage {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                metadata_object_bytes_max: self.inner.metadata_object_bytes_max,
                journal: Some(Arc::new(journal)),
            }),
        })
    }

    /// Whether this process holds the root's journal (`with_journal`): then it alone writes
    /// the root while it runs.
    pub fn has_journal(&self) -> bool {
        self.inner.journal.is_some()
    }

    /// For a command run beside (or instead of) the server: if no server owns the root's
    /// journal, replays what a crashed one left in it, so the command sees every write it
    /// acknowledged; then lets go of it (this process writes durably on its own). Returns
    /// whether it replayed (false: a server is running, and its tree is current).
    pub fn replay_journal_if_unowned(&self) -> io::Result<bool> {
        match journal::Journal::open(&self.inner.root) {
            Ok(journal) => {
                drop(journal);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the cap on `get` (whole-object reads).
    #[cfg(test)]
    pub fn with_metadata_object_bytes_max(self, bytes_max: u64) -> Self {
        FsStorage {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                metadata_object_bytes_max: bytes_max,
                journal: self.inner.journal.clone(),
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

    /// `f(root/key)`, with the path built on the stack when it fits (every key the registry
    /// makes does): a stat on the request path then allocates nothing.
    fn with_path<R>(&self, key: &str, f: impl FnOnce(&Path) -> R) -> R {
        use std::os::unix::ffi::OsStrExt;
        let root = self.inner.root.as_os_str().as_bytes();
        let len = root.len() + 1 + key.len();
        if len > STACK_PATH_BYTES || key.starts_with('/') {
            return f(&self.path(key));
        }
        let mut buf = [0u8; STACK_PATH_BYTES];
        buf[..root.len()].copy_from_slice(root);
        buf[root.len()] = b'/';
        buf[root.len() + 1..len].copy_from_slice(key.as_bytes());
        f(Path::new(std::ffi::OsStr::from_bytes(&buf[..len])))
    }

    /// Reads a whole object of at most `metadata_object_bytes_max` bytes.
    async fn read_object(&self, path: &Path, key: &str) -> Result<Option<Object>> {
        let Some((file, size)) = open_for_read(path).await? else {
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
        // the `size` bytes of this inode, as of the open, are the whole object (a file cut
        // short under us, not by this backend, gives what is there).
        let buf = read_whole(&file, size).await?;
        let (bytes, etag) = etag_of(buf).await?;
        Ok(Some(Object { bytes, etag }))
    }

    /// Writes `bytes` to a new temp file next to `path` (fsynced if `sync`), creating
    /// directories.
    async fn write_temp(&self, path: &Path, bytes: Vec<u8>, sync: bool) -> Result<PathBuf> {
        let (mut file, temp) = self.create_temp(path).await?;
        let BufResult(res, _) = file.write_all_at(bytes, 0).await;
        let res = match res {
            Ok(()) if sync => file.sync_data().await,
            Ok(()) => Ok(()),
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

    /// Places a temp file at `path`: rename (replace), or link (create-if-absent, `false` if
    /// the name exists), then fsyncs the directory if `sync`. The temp file is gone
    /// afterwards either way.
    async fn place(&self, temp: &Path, path: &Path, replace: bool, sync: bool) -> Result<bool> {
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
        if sync {
            sync_dir(parent_of(path)?).await?;
        }
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
        if let Some(journal) = self.journal() {
            return self.put_journaled(journal, key, bytes, cond).await;
        }
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
        let temp = self.write_temp(&path, bytes, true).await?;
        let replace = cond != PutCondition::IfAbsent;
        if self.place(&temp, &path, replace, true).await? {
            Ok(PutOutcome::Written(etag))
        } else {
            Ok(PutOutcome::PreconditionFailed)
        }
    }

    async fn head(&self, key: &str) -> Result<Option<Meta>> {
        validate_key(key)?;
        // A direct stat on both drivers: io_uring has no inline path for statx (every one is
        // handed to a kernel worker thread and back, which doubled the CPU of a blob HEAD),
        // while a stat of a key in use is a dentry-cache lookup of a microsecond or two. A
        // cold lookup may wait on the disk, as nginx's stat does.
        let meta = self.with_path(key, |p| {
            std::fs::metadata(p).map(|m| (m.is_file(), m.len(), m.modified()))
        });
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
        if let Some(journal) = self.journal() {
            return self.delete_journaled(journal, key).await;
        }
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

    async fn delete_if_match(&self, key: &str, etag: &Etag) -> Result<bool> {
        if let Some(journal) = self.journal() {
            return self.delete_if_match_journaled(journal, key, etag).await;
        }
        validate_key(key)?;
        let path = self.path(key);
        let _lock = lock_key(path.clone()).await;
        match self.read_object(&path, key).await? {
            Some(current) if current.etag == *etag => {}
            _ => return Ok(false),
        }
        match compio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_absent(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let dir = parent_of(&path)?;
        sync_dir(dir).await?;
        self.prune_dirs(dir).await;
        Ok(true)
    }

    async fn put_pending(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: PutCondition,
    ) -> Result<PutOutcome> {
        match self.journal() {
            Some(journal) => self.put_pending_journaled(journal, key, bytes, cond).await,
            None => self.put(key, bytes, cond).await,
        }
    }

    async fn delete_pending(&self, key: &str) -> Result<bool> {
        match self.journal() {
            Some(journal) => self.delete_pending_journaled(journal, key).await,
            None => self.delete(key).await,
        }
    }

    async fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>, PutCondition)>,
    ) -> Result<Vec<PutOutcome>> {
        match self.journal() {
            Some(journal) => self.put_batch_journaled(journal, items).await,
            None => {
                let mut out = Vec::with_capacity(items.len());
                for (key, bytes, cond) in items {
                    out.push(self.put(&key, bytes, cond).await?);
                }
                Ok(out)
            }
        }
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
        blocking(move || {
            let limits = dir_index::Limits::DEFAULT;
            dir_index::list_sorted(&root, &prefix, start_after.as_deref(), limit, limits)
        })
        .await?
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
        let opened = open_for_read(&self.path(key)).await?;
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
        let outcome = self.commit_upload(&self.path(upload_key), &dest).await?;
        if let (Some(journal), Some(CommitOutcome::Committed)) = (self.journal(), outcome) {
            self.mark_direct(journal, dest_key).await?;
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
