//! Static dispatch over the backends: the registry holds a `Backend`, configured as fs or S3.
//! (Futures are `!Send` and generic, so no `dyn`; one `match` per call costs nothing.)

#[cfg(test)]
use std::os::fd::BorrowedFd;

use compio::buf::{IoBuf, IoBufMut};
use compio::BufResult;

use crate::future::cold;

use super::{
    BlobReader, CommitOutcome, Etag, FsReader, FsStorage, FsUpload, Meta, Object, PutCondition,
    PutOutcome, Result, S3Reader, S3Storage, S3Upload, Storage, UploadWriter,
};

#[derive(Clone, Debug)]
pub enum Backend {
    Fs(FsStorage),
    S3(S3Storage),
}

pub enum BackendReader {
    Fs(FsReader),
    /// Boxed: it carries a response in flight, far larger than a file handle.
    S3(Box<S3Reader>),
}

pub enum BackendUpload {
    Fs(FsUpload),
    /// Boxed: it carries its part buffer and state, far larger than a file handle.
    S3(Box<S3Upload>),
}

impl From<FsStorage> for Backend {
    fn from(s: FsStorage) -> Self {
        Backend::Fs(s)
    }
}

impl From<S3Storage> for Backend {
    fn from(s: S3Storage) -> Self {
        Backend::S3(s)
    }
}

impl Backend {
    /// Whether upload sessions carry the registry's state in their own object
    /// (`UploadWriter::carries_meta`): true on S3.
    pub fn upload_meta_inline(&self) -> bool {
        matches!(self, Backend::S3(_))
    }

    /// `upload_create` with the caller's state in the session (S3: one PUT); the fs backend
    /// ignores `meta` (its caller stores the state itself: `upload_meta_inline` is false).
    #[tracing::instrument(target = "origin::span", name = "storage.upload_create_with_meta", skip_all, fields(key = key))]
    pub async fn upload_create_with_meta(&self, key: &str, meta: String) -> Result<BackendUpload> {
        Ok(match self {
            Backend::Fs(s) => BackendUpload::Fs(s.upload_create(key).await?),
            Backend::S3(s) => {
                BackendUpload::S3(Box::new(cold(s.upload_create_with_meta(key, meta)).await?))
            }
        })
    }

    /// `upload_commit` of an open writer: the fs backend drops the handle first (see
    /// `UploadWriter`); S3 commits from the writer's state without reading it back, and
    /// puts a blob that is all in memory straight at `dest_key`.
    #[tracing::instrument(target = "origin::span", name = "storage.commit_writer", skip_all)]
    pub async fn commit_writer(
        &self,
        upload: BackendUpload,
        upload_key: &str,
        dest_key: &str,
    ) -> Result<Option<CommitOutcome>> {
        match (self, upload) {
            (Backend::S3(s), BackendUpload::S3(u)) => {
                cold(s.commit_writer(*u, dest_key)).await.map(Some)
            }
            (s, u) => {
                drop(u);
                s.upload_commit(upload_key, dest_key).await
            }
        }
    }

    /// `open_upload` that reads the session as stored: S3 bypasses its cache of session
    /// states (the fs backend has none).
    #[tracing::instrument(target = "origin::span", name = "storage.open_upload_fresh", skip_all, fields(key = key))]
    pub async fn open_upload_fresh(&self, key: &str) -> Result<Option<BackendUpload>> {
        Ok(match self {
            Backend::Fs(s) => s.open_upload(key).await?.map(BackendUpload::Fs),
            Backend::S3(s) => cold(s.open_upload_fresh(key))
                .await?
                .map(|u| BackendUpload::S3(Box::new(u))),
        })
    }

    /// One page of keys under `prefix` after `start_after`, in order, with their sizes, at
    /// most `limit`: S3 takes the sizes from the listing (no HEAD per key), the fs backend
    /// from a stat per entry.
    #[tracing::instrument(target = "origin::span", name = "storage.list_sized", skip_all, fields(prefix = prefix))]
    pub async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, u64)>> {
        match self {
            Backend::Fs(s) => s.list_sized(prefix, start_after, limit).await,
            Backend::S3(s) => cold(s.list_sized(prefix, start_after, limit)).await,
        }
    }

    /// `open_read` for a blob about to be served from its start: S3 sends the GET at once
    /// instead of a HEAD first (`S3Storage::open_read_started`).
    #[tracing::instrument(target = "origin::span", name = "storage.open_read_started", skip_all, fields(key = key))]
    pub async fn open_read_started(&self, key: &str) -> Result<Option<BackendReader>> {
        Ok(match self {
            Backend::Fs(s) => s.open_read(key).await?.map(BackendReader::Fs),
            Backend::S3(s) => cold(s.open_read_started(key))
                .await?
                .map(|r| BackendReader::S3(Box::new(r))),
        })
    }

    /// Removes an object that is not an upload session, without saying whether it existed
    /// (S3: one DELETE, no HEAD).
    #[tracing::instrument(target = "origin::span", name = "storage.remove", skip_all, fields(key = key))]
    pub async fn remove(&self, key: &str) -> Result<()> {
        match self {
            Backend::Fs(s) => s.delete(key).await.map(drop),
            Backend::S3(s) => cold(s.remove(key)).await,
        }
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Backend::Fs($s) => $e,
            // The S3 arm's future on the heap (`crate::future::cold`).
            Backend::S3($s) => cold(async { $e }).await,
        }
    };
}

impl Storage for Backend {
    type Reader = BackendReader;
    type Upload = BackendUpload;

    #[tracing::instrument(target = "origin::span", name = "storage.get", skip_all, fields(key = key))]
    async fn get(&self, key: &str) -> Result<Option<Object>> {
        each!(self, s => s.get(key).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.put", skip_all, fields(key = key))]
    async fn put(&self, key: &str, bytes: Vec<u8>, cond: PutCondition) -> Result<PutOutcome> {
        each!(self, s => s.put(key, bytes, cond).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.head", skip_all, fields(key = key))]
    async fn head(&self, key: &str) -> Result<Option<Meta>> {
        each!(self, s => s.head(key).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.delete", skip_all, fields(key = key))]
    async fn delete(&self, key: &str) -> Result<bool> {
        each!(self, s => s.delete(key).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.delete_if_match", skip_all, fields(key = key))]
    async fn delete_if_match(&self, key: &str, etag: &Etag) -> Result<bool> {
        each!(self, s => s.delete_if_match(key, etag).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.put_pending", skip_all, fields(key = key))]
    async fn put_pending(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: PutCondition,
    ) -> Result<PutOutcome> {
        each!(self, s => s.put_pending(key, bytes, cond).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.delete_pending", skip_all, fields(key = key))]
    async fn delete_pending(&self, key: &str) -> Result<bool> {
        each!(self, s => s.delete_pending(key).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.put_batch", skip_all)]
    async fn put_batch(
        &self,
        items: Vec<(String, Vec<u8>, PutCondition)>,
    ) -> Result<Vec<PutOutcome>> {
        each!(self, s => s.put_batch(items).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.list", skip_all, fields(prefix = prefix))]
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        #[cfg(test)]
        list_probe::record(prefix, limit);
        each!(self, s => s.list(prefix, start_after, limit).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.list_dir", skip_all, fields(prefix = prefix))]
    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>> {
        each!(self, s => s.list_dir(prefix).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.open_read", skip_all, fields(key = key))]
    async fn open_read(&self, key: &str) -> Result<Option<BackendReader>> {
        Ok(match self {
            Backend::Fs(s) => s.open_read(key).await?.map(BackendReader::Fs),
            Backend::S3(s) => cold(s.open_read(key))
                .await?
                .map(|r| BackendReader::S3(Box::new(r))),
        })
    }

    #[tracing::instrument(target = "origin::span", name = "storage.upload_create", skip_all, fields(key = key))]
    async fn upload_create(&self, key: &str) -> Result<BackendUpload> {
        Ok(match self {
            Backend::Fs(s) => BackendUpload::Fs(s.upload_create(key).await?),
            Backend::S3(s) => BackendUpload::S3(Box::new(cold(s.upload_create(key)).await?)),
        })
    }

    #[tracing::instrument(target = "origin::span", name = "storage.open_upload", skip_all, fields(key = key))]
    async fn open_upload(&self, key: &str) -> Result<Option<BackendUpload>> {
        Ok(match self {
            Backend::Fs(s) => s.open_upload(key).await?.map(BackendUpload::Fs),
            Backend::S3(s) => cold(s.open_upload(key))
                .await?
                .map(|u| BackendUpload::S3(Box::new(u))),
        })
    }

    #[tracing::instrument(target = "origin::span", name = "storage.upload_size", skip_all, fields(key = key))]
    async fn upload_size(&self, key: &str) -> Result<Option<u64>> {
        each!(self, s => s.upload_size(key).await)
    }

    #[tracing::instrument(target = "origin::span", name = "storage.upload_commit", skip_all)]
    async fn upload_commit(
        &self,
        upload_key: &str,
        dest_key: &str,
    ) -> Result<Option<CommitOutcome>> {
        each!(self, s => s.upload_commit(upload_key, dest_key).await)
    }
}

impl BlobReader for BackendReader {
    fn size(&self) -> u64 {
        match self {
            BackendReader::Fs(r) => r.size(),
            BackendReader::S3(r) => r.size(),
        }
    }

    async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> BufResult<usize, B> {
        match self {
            BackendReader::Fs(r) => r.read_at(buf, offset).await,
            BackendReader::S3(r) => cold(r.read_at(buf, offset)).await,
        }
    }

    #[cfg(test)]
    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            BackendReader::Fs(r) => r.local_fd(),
            BackendReader::S3(r) => r.local_fd(),
        }
    }
}

/// How an opened blob is sent: what the HTTP layer needs to know of it, not which backend
/// holds it.
pub enum BlobBody {
    /// A local file: the caller sends its region itself (`sendfile(2)` where it can).
    File(compio::fs::File),
    /// Bytes read in order from the store, from the offset the body was made for.
    Stream(BlobStream),
}

/// A remote blob's bytes, its read already started at the first byte to send.
pub struct BlobStream(Box<S3Reader>);

impl BlobReader for BlobStream {
    fn size(&self) -> u64 {
        self.0.size()
    }

    async fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> BufResult<usize, B> {
        self.0.read_at(buf, offset).await
    }

    #[cfg(test)]
    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl BackendReader {
    /// The body that sends `len` bytes from `offset`: the file itself (nothing is read
    /// here), or a stream whose GET is (re)started at `offset` when there is anything to
    /// send.
    pub async fn into_body(self, offset: u64, len: u64) -> std::io::Result<BlobBody> {
        match self {
            BackendReader::Fs(r) => Ok(BlobBody::File(r.into_file())),
            BackendReader::S3(r) => {
                if len > 0 {
                    cold(r.start_at(offset)).await?;
                }
                Ok(BlobBody::Stream(BlobStream(r)))
            }
        }
    }
}

impl BackendUpload {
    /// Opened from S3's cache of session states and not confirmed by a save yet (another
    /// node may have changed the session since). Never on the fs backend.
    pub fn is_unverified(&self) -> bool {
        match self {
            BackendUpload::Fs(_) => false,
            BackendUpload::S3(u) => u.is_unverified(),
        }
    }

    /// Whether two writers of one session start from the same stored state (S3: the same
    /// ETag). Always true on the fs backend, which has no cache to be stale.
    pub fn same_version(&self, other: &BackendUpload) -> bool {
        match (self, other) {
            (BackendUpload::S3(a), BackendUpload::S3(b)) => a.version() == b.version(),
            _ => true,
        }
    }

    /// Drops a writer that will not be saved, removing what it staged (S3; best effort).
    pub async fn discard(self) {
        if let BackendUpload::S3(u) = self {
            u.discard().await;
        }
    }
}

impl UploadWriter for BackendUpload {
    async fn write_all_at<B: IoBuf>(&mut self, buf: B, offset: u64) -> BufResult<(), B> {
        match self {
            BackendUpload::Fs(u) => u.write_all_at(buf, offset).await,
            BackendUpload::S3(u) => cold(u.write_all_at(buf, offset)).await,
        }
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        match self {
            BackendUpload::Fs(u) => u.truncate(len).await,
            BackendUpload::S3(u) => cold(u.truncate(len)).await,
        }
    }

    async fn sync(&mut self) -> Result<()> {
        match self {
            BackendUpload::Fs(u) => u.sync().await,
            BackendUpload::S3(u) => cold(u.sync()).await,
        }
    }

    async fn size(&self) -> Result<u64> {
        match self {
            BackendUpload::Fs(u) => u.size().await,
            BackendUpload::S3(u) => cold(u.size()).await,
        }
    }

    async fn seal(&mut self) -> Result<()> {
        match self {
            BackendUpload::Fs(u) => u.seal().await,
            BackendUpload::S3(u) => cold(u.seal()).await,
        }
    }

    fn carries_meta(&self) -> bool {
        match self {
            BackendUpload::Fs(u) => u.carries_meta(),
            BackendUpload::S3(u) => u.carries_meta(),
        }
    }

    fn meta(&self) -> Option<&str> {
        match self {
            BackendUpload::Fs(u) => u.meta(),
            BackendUpload::S3(u) => u.meta(),
        }
    }

    fn set_meta(&mut self, meta: String) {
        match self {
            BackendUpload::Fs(u) => u.set_meta(meta),
            BackendUpload::S3(u) => u.set_meta(meta),
        }
    }
}

/// Test builds record the prefix and limit of every `list` call on this thread, so a test
/// can check that a walk reads storage a bounded page at a time (not how much it returned:
/// a page bound is about what one call may hold).
#[cfg(test)]
pub(crate) mod list_probe {
    use std::cell::RefCell;

    thread_local! {
        static CALLS: RefCell<Vec<(String, usize)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn record(prefix: &str, limit: usize) {
        CALLS.with(|c| c.borrow_mut().push((prefix.to_owned(), limit)));
    }

    /// The calls recorded since the last `take`, in order.
    pub(crate) fn take() -> Vec<(String, usize)> {
        CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()))
    }
}
