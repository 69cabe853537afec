//! Object storage: the `Storage` trait and its backends.
//!
//! The trait is shaped like an object store (whole-object put with create-if-absent and
//! replace-if-unchanged conditions, ranged reads, list by prefix with a start-after key,
//! delete); two backends implement it, `fs` and `s3`, and `Backend` dispatches between them.
//! Appends exist only inside upload sessions. Hard links, renames and file locks stay inside
//! the fs backend.
//!
//! Keys are `/`-separated relative paths such as `repositories/library/alpine/_tags/latest`,
//! built by the layout layer above. This module knows nothing of HTTP or OCI.
//!
//! All futures here are `!Send` by design: the server runs one compio runtime per core.

pub mod backend;
mod capabilities;
pub mod fs;
pub mod s3;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;
use std::io;
#[cfg(test)]
use std::os::fd::BorrowedFd;
use std::time::SystemTime;

use compio::buf::{IoBuf, IoBufMut};
use compio::BufResult;

pub use backend::{Backend, BackendReader, BackendUpload, BlobBody, BlobStream};
pub use fs::{FsReader, FsStorage, FsUpload};
pub use s3::{S3Reader, S3Storage, S3Upload};

/// Longest key accepted, in bytes. S3 caps object keys at 1024 bytes; keeping the same cap
/// means a key valid for the fs backend is valid for an object-store backend too.
pub const KEY_BYTES_MAX: usize = 1024;

/// Longest key component, in bytes: Linux `NAME_MAX`, so the fs backend never has to report
/// an over-long name as an opaque I/O error.
pub const KEY_COMPONENT_BYTES_MAX: usize = 255;

/// Key components starting with this are reserved for the fs backend's temporary files, so a
/// key can never collide with (or be listed as) a half-written object.
pub const TEMP_PREFIX: &str = ".tmp";

/// Errors from a storage backend. "Not found" is not an error: lookups return `Option`.
#[derive(Debug)]
pub enum StorageError {
    /// The key (or prefix) is malformed; nothing was touched.
    InvalidKey { key: String, reason: &'static str },
    /// An object is larger than the caller's limit for whole-object reads.
    TooLarge { key: String, limit_bytes: u64 },
    /// A directory has more entries than a listing may hold in memory.
    TooManyEntries { prefix: String, limit: usize },
    /// `upload_create` found an upload with that key already.
    AlreadyExists { key: String },
    /// Another writer changed the upload since this handle opened it; nothing was written.
    Conflict { key: String },
    /// The backend failed.
    Io(io::Error),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::InvalidKey { key, reason } => {
                write!(f, "invalid storage key {key:?}: {reason}")
            }
            StorageError::TooLarge { key, limit_bytes } => {
                write!(f, "object {key:?} is larger than {limit_bytes} bytes")
            }
            StorageError::TooManyEntries { prefix, limit } => {
                write!(f, "listing {prefix:?} has more than {limit} entries")
            }
            StorageError::AlreadyExists { key } => write!(f, "{key:?} already exists"),
            StorageError::Conflict { key } => {
                write!(f, "{key:?} was changed by another writer")
            }
            StorageError::Io(e) => write!(f, "storage I/O error: {e}"),
        }
    }
}

impl StorageError {
    /// The error an `UploadWriter::write_all_at` returned, as the storage error it carries
    /// (a backend wraps its own `StorageError` in the `io::Error` the trait requires: a
    /// `Conflict` stays a `Conflict`, a timeout stays a timeout), or the I/O error itself.
    pub fn from_write(e: io::Error) -> StorageError {
        if !e.get_ref().is_some_and(|inner| inner.is::<StorageError>()) {
            return StorageError::Io(e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<StorageError>()) {
            Some(Ok(storage)) => *storage,
            Some(Err(other)) => StorageError::Io(io::Error::new(kind, other)),
            None => StorageError::Io(kind.into()),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StorageError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for StorageError {
    fn from(e: io::Error) -> Self {
        StorageError::Io(e)
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// An opaque version tag of an object's content, compared by `PutCondition::IfMatch`.
/// The fs backend uses the hex SHA-256 of the content; an S3 backend would use the ETag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(String);

impl Etag {
    pub fn new(tag: String) -> Self {
        Etag(tag)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Etag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A whole small object (metadata: links, manifests, upload state) with its version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub etag: Etag,
}

/// What `head` knows about an object without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    pub modified: SystemTime,
}

/// When a `put` may take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Create or replace.
    Always,
    /// Create only if no object has the key (S3 `If-None-Match: *`).
    IfAbsent,
    /// Replace only if the object exists with this etag (S3 `If-Match`).
    IfMatch(Etag),
}

/// A failed precondition is an outcome, not an error: the caller decides what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written(Etag),
    PreconditionFailed,
}

/// How an upload commit ended; either way the upload data is gone afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The upload data is now the destination object.
    Committed,
    /// The destination already existed and was left as it was (content-addressed keys: same
    /// content); the upload data was removed.
    AlreadyExisted,
}

/// A blob opened for serving: positional reads of an object that does not change while open.
#[allow(async_fn_in_trait)] // Futures are !Send by design (thread-per-core runtime).
pub trait BlobReader {
    /// Size in bytes when opened.
    fn size(&self) -> u64;

    /// Reads at `offset` into `buf`, compio style: fills `buf` from its start up to its
    /// capacity (use `buf.slice(..)` for a window) and returns the byte count; 0 at the end.
    async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> BufResult<usize, B>;

    /// The local file descriptor holding the data, when there is one (tests check which
    /// file a reader holds). `None` for remote backends.
    #[cfg(test)]
    fn local_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// An open upload session's data, appended to by one request at a time.
///
/// Data is append-only: `offset` must be the current `size()` (an object store cannot write
/// in the middle of a multipart upload); backends may refuse any other offset. Writes are
/// durable only after `sync`, which for an object store is also where a second writer that
/// opened the same data loses (`StorageError::Conflict`).
///
/// Drop the handle before `upload_commit`: after a commit the fs backend's destination may
/// share the upload's inode, so a write through a stale handle would change the blob.
#[allow(async_fn_in_trait)] // Futures are !Send by design (thread-per-core runtime).
pub trait UploadWriter {
    /// Appends all of `buf` at `offset` (== `size()`) and hands the buffer back for reuse.
    async fn write_all_at<B: IoBuf>(&mut self, buf: B, offset: u64) -> BufResult<(), B>;

    /// Cuts the data back to `len` bytes (at most `size()`), e.g. to drop a failed chunk or a
    /// crashed request's leftover past the recorded offset.
    async fn truncate(&mut self, len: u64) -> Result<()>;

    /// Makes the data written so far durable; `Conflict` if another writer got there first.
    async fn sync(&mut self) -> Result<()>;

    /// Current size in bytes.
    async fn size(&self) -> Result<u64>;

    /// Makes everything written part of what `upload_commit` will commit. The fs backend's
    /// commit makes the file durable itself, so by default this does nothing; an object store
    /// must stage what it still holds in memory (its `sync`).
    async fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether the backend keeps the caller's own session state (`set_meta`) with the data,
    /// made durable by the same `sync`: an object store then needs one conditional replace
    /// per save instead of two objects. When false the caller stores its state itself.
    fn carries_meta(&self) -> bool {
        false
    }

    /// The caller's state as last set or as found at open (only when `carries_meta`).
    fn meta(&self) -> Option<&str> {
        None
    }

    /// Sets the caller's state, durable with the data at the next `sync` (only when
    /// `carries_meta`; ignored otherwise).
    fn set_meta(&mut self, _meta: String) {}
}

/// An object store. Every key argument is validated with [`validate_key`] before any I/O.
///
/// Reads never block writers: a `put` becomes visible atomically, readers see either the old
/// or the new content. Mutating futures (`put`, `delete`, `upload_commit`) should be driven
/// to completion: dropping one mid-flight may leave its last filesystem step in the kernel's
/// hands after its key lock is released.
#[allow(async_fn_in_trait)] // Futures are !Send by design (thread-per-core runtime).
pub trait Storage {
    type Reader: BlobReader;
    type Upload: UploadWriter;

    /// A whole small object, or `None`. Errors with `TooLarge` above the backend's
    /// metadata object limit: blobs are read through `open_read`.
    async fn get(&self, key: &str) -> Result<Option<Object>>;

    /// Writes a whole object atomically if `cond` holds.
    async fn put(&self, key: &str, bytes: Vec<u8>, cond: PutCondition) -> Result<PutOutcome>;

    /// Size and modification time, or `None`.
    async fn head(&self, key: &str) -> Result<Option<Meta>>;

    /// Removes an object; `false` if there was none. A prefix left empty disappears.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Like `put`, except that on return the write need only be *visible*: it becomes
    /// durable no later than the next durable write (`put`, `delete`, `put_batch`,
    /// `upload_commit`) of this process returns. For objects whose presence after a power
    /// loss, without the rest of their request, is harmless debris (GC candidates, reference
    /// edges, content-addressed bytes that are verified before being trusted). Backends
    /// whose every write is durable use `put`.
    async fn put_pending(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: PutCondition,
    ) -> Result<PutOutcome> {
        self.put(key, bytes, cond).await
    }

    /// Removes an object only if it is there with this etag, as one step (S3 `If-Match` on
    /// DeleteObject; the fs backend under the key's lock): `false`, and nothing removed, if
    /// it is absent or was changed. A check of what an object says and its removal that
    /// another writer must not slip between.
    async fn delete_if_match(&self, key: &str, etag: &Etag) -> Result<bool>;

    /// `delete`, durable as `put_pending` is.
    async fn delete_pending(&self, key: &str) -> Result<bool> {
        self.delete(key).await
    }

    /// Several puts (distinct keys) as one durable step: conditions are decided in order,
    /// and none is visible before all are durable (after a crash, all or none). The fs
    /// backend's journal makes this one flush; by default it is one put after another.
    async fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>, PutCondition)>,
    ) -> Result<Vec<PutOutcome>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, bytes, cond) in items {
            out.push(self.put(&key, bytes, cond).await?);
        }
        Ok(out)
    }

    /// Keys starting with `prefix` (a string prefix, as in S3; `""` for all), lexically
    /// sorted, strictly after `start_after`, at most `limit` (capped at `LIST_KEYS_MAX`).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>>;

    /// Names of the immediate children of the "directory" `prefix` (objects and sub-prefixes
    /// alike, as with an S3 delimiter listing), sorted; empty if there are none. A child being
    /// created or deleted concurrently may be listed yet hold nothing: treat it as deleted.
    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>>;

    /// Opens an object for ranged reads, or `None`.
    async fn open_read(&self, key: &str) -> Result<Option<Self::Reader>>;

    /// Creates empty upload data under `key`; `AlreadyExists` if there is some.
    async fn upload_create(&self, key: &str) -> Result<Self::Upload>;

    /// Opens existing upload data for writing, or `None`.
    async fn open_upload(&self, key: &str) -> Result<Option<Self::Upload>>;

    /// Size of the upload data, or `None`.
    async fn upload_size(&self, key: &str) -> Result<Option<u64>>;

    /// Makes the upload data durable and moves it to `dest_key` atomically: `dest_key` either
    /// does not exist or holds the complete data. If `dest_key` exists already it is kept and
    /// the upload data removed. `None` if there is no upload data.
    async fn upload_commit(
        &self,
        upload_key: &str,
        dest_key: &str,
    ) -> Result<Option<CommitOutcome>>;
}

/// Longest listing returned by one `list` call; callers page with `start_after`. Bounds the
/// memory of one call (about 100 bytes per key, so ~10 MiB) and matches nothing the API needs
/// at once (catalog and tag pages are far smaller).
pub const LIST_KEYS_MAX: usize = 100_000;

/// Checks a key: non-empty, relative, at most `KEY_BYTES_MAX` bytes, no empty, `.`, `..` or
/// `.tmp*` component, no NUL, no backslash (so a key means the same path everywhere).
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(StorageError::InvalidKey {
            key: key.chars().take(KEY_BYTES_MAX).collect(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > KEY_BYTES_MAX {
        return invalid("longer than KEY_BYTES_MAX");
    }
    if key.starts_with('/') {
        return invalid("absolute");
    }
    if key.contains('\0') {
        return invalid("contains NUL");
    }
    if key.contains('\\') {
        return invalid("contains a backslash");
    }
    for component in key.split('/') {
        match component {
            "" => return invalid("empty component (`//` or trailing `/`)"),
            "." | ".." => return invalid("`.` or `..` component"),
            c if c.starts_with(TEMP_PREFIX) => return invalid("component starts with `.tmp`"),
            c if c.len() > KEY_COMPONENT_BYTES_MAX => {
                return invalid("component longer than KEY_COMPONENT_BYTES_MAX")
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a listing prefix: `""` (everything), or a key with an optional trailing `/`.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(dir) => validate_key(dir),
        None => validate_key(prefix),
    }
}
