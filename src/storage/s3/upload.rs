//! Upload sessions on S3.
//!
//! S3 binds a multipart upload to its key when it is created, and a registry learns the
//! destination (the digest) only at the end, so the parts cannot be uploaded into the final
//! multipart upload as they arrive. Instead:
//! - Each part (`part_bytes`, at least S3's 5 MiB) is a staged object `<key>.part-<token>`,
//!   sent as soon as it is full, so a request holds at most one part in memory.
//! - The session object at `<key>` (JSON: the staged parts in order, with sizes) is replaced
//!   with `If-Match` at each `sync`: the durable state. Two writers that opened the same state
//!   cannot both append: the second `sync` fails with `Conflict`, and that writer's staged
//!   objects (unique names, so they never overwrite the winner's) are removed.
//! - A tail below the part size is staged by `sync` too, and read back and combined with the
//!   next bytes on the next append, so every part but the last is a full part.
//! - `upload_commit`: one server-side CopyObject for a single part, else a multipart upload at
//!   the destination assembled with UploadPartCopy and completed. The bytes never pass
//!   through Origin again; S3 copies them once inside the bucket. A destination that exists is
//!   kept (content-addressed keys) and the session removed. (The copies: `commit.rs`.)
//! - The caller's own session state (`UploadWriter::set_meta`: the registry's offset and
//!   hash state) rides in the session object, so one If-Match replace saves both.
//! - A commit from the open writer (`S3Storage::commit_writer`) does not read the session
//!   back; a blob that never reached the part size is one PUT at its destination with
//!   `If-None-Match: *` (no staged part, no copy).
//! - Appends only at the end; truncation only backwards (a crashed request's leftover).

use std::io;

use compio::buf::IoBuf;
use compio::BufResult;
use serde::{Deserialize, Serialize};

use super::client::{s3_error, token};
use super::read::{S3Reader, Segment};
use super::S3Storage;
use crate::http::client::Response;
use crate::storage::{
    validate_key, CommitOutcome, Etag, PutCondition, PutOutcome, Result, StorageError, UploadWriter,
};

/// S3's limit on parts in one multipart upload.
const PARTS_MAX: usize = 10_000;
/// Marks session objects, so `delete` knows to remove their staged parts too.
const UPLOAD_MARK_HEADER: &str = "x-amz-meta-origin-upload";
/// Largest session object: 10,000 parts of ~40 bytes of JSON each.
const STATE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Part {
    token: String,
    size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct UploadState {
    parts: Vec<Part>,
    /// The caller's own session state (the registry's offset and hash state), kept in this
    /// object so one conditional replace makes both durable (see `UploadWriter::set_meta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meta: Option<String>,
}

impl UploadState {
    pub(super) fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

fn part_key(full: &str, token: &str) -> String {
    format!("{full}.part-{token}")
}

/// Whether a HEAD answer is of a session object.
pub(super) fn is_upload(head: &Response) -> bool {
    head.header(UPLOAD_MARK_HEADER).is_some()
}

fn mark() -> [(&'static str, String); 1] {
    [(UPLOAD_MARK_HEADER, "1".to_string())]
}

/// An open session: the durable state plus what this writer added since.
pub struct S3Upload {
    store: S3Storage,
    /// Bucket key of the session object.
    full: String,
    etag: Etag,
    durable: UploadState,
    /// Staged parts in order, durable or not.
    parts: Vec<Part>,
    /// The caller's state as of the next `sync`.
    meta: Option<String>,
    /// Bytes after the last staged part, below the part size.
    pending: Vec<u8>,
    /// Staged by this writer and not yet durable: removed if its sync loses.
    created: Vec<String>,
    /// No longer part of this writer's state: removed once its sync wins.
    replaced: Vec<String>,
    /// Opened from this process's session cache, not read back: another node may have
    /// changed the session since (the next conditional save finds out; `session_cache.rs`).
    unverified: bool,
}

impl S3Upload {
    pub(super) async fn create(
        store: S3Storage,
        key: &str,
        meta: Option<String>,
    ) -> Result<S3Upload> {
        let full = store.full(key);
        let state = UploadState {
            parts: Vec::new(),
            meta,
        };
        let body = serde_json::to_vec(&state).map_err(io::Error::other)?;
        match store
            .put_full(&full, &body, &PutCondition::IfAbsent, &mark())
            .await?
        {
            PutOutcome::Written(etag) => {
                store.sessions().put(&full, &state, &etag, body.len());
                Ok(S3Upload::from_state(store, full, state, etag))
            }
            PutOutcome::PreconditionFailed => Err(StorageError::AlreadyExists {
                key: key.to_string(),
            }),
        }
    }

    /// Opens a session from this process's cache when it has it (no request; the writer is
    /// then unverified), else reads it.
    pub(super) async fn open(store: S3Storage, key: &str) -> Result<Option<S3Upload>> {
        let full = store.full(key);
        if let Some((state, etag)) = store.sessions().get(&full) {
            let mut up = S3Upload::from_state(store, full, state, etag);
            up.unverified = true;
            return Ok(Some(up));
        }
        Self::open_fresh(store, key).await
    }

    /// Opens a session as stored (one GET), and remembers it.
    pub(super) async fn open_fresh(store: S3Storage, key: &str) -> Result<Option<S3Upload>> {
        let full = store.full(key);
        let Some((state, etag)) = store.load_upload(&full).await? else {
            store.sessions().forget(&full);
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&state).map_or(usize::MAX, |b| b.len());
        store.sessions().put(&full, &state, &etag, bytes);
        Ok(Some(S3Upload::from_state(store, full, state, etag)))
    }

    /// Whether this writer was opened from the cache and no save has confirmed it yet.
    pub fn is_unverified(&self) -> bool {
        self.unverified
    }

    /// The ETag of the session object this writer's durable state is (equal ETags: the same
    /// stored state, so a cached writer whose ETag matches a fresh read was not stale).
    pub fn version(&self) -> &Etag {
        &self.etag
    }

    /// Drops a writer that will not be saved, removing what it staged (best effort; the
    /// expiry removes what this could not).
    pub async fn discard(self) {
        self.remove_staged(&self.created).await;
    }

    fn from_state(store: S3Storage, full: String, state: UploadState, etag: Etag) -> Self {
        S3Upload {
            store,
            full,
            etag,
            parts: state.parts.clone(),
            meta: state.meta.clone(),
            durable: state,
            pending: Vec::new(),
            created: Vec::new(),
            replaced: Vec::new(),
            unverified: false,
        }
    }

    fn staged_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Stages `pending` as the next part.
    async fn stage(&mut self) -> Result<()> {
        if self.parts.len() >= PARTS_MAX {
            return Err(s3_error(
                "UploadPart",
                &self.full,
                format!("more than {PARTS_MAX} parts: raise storage.s3.multipart_part_size"),
            ));
        }
        let t = token();
        let key = part_key(&self.full, &t);
        // A unique key: repeating this PUT is always safe.
        self.store
            .put_full(&key, &self.pending, &PutCondition::Always, &[])
            .await?;
        self.created.push(t.clone());
        self.parts.push(Part {
            token: t,
            size: self.pending.len() as u64,
        });
        self.pending.clear();
        Ok(())
    }

    /// Reads the first `len` bytes of a staged part back into `pending` and drops the part
    /// from the state (it is deleted once the new state is durable).
    async fn unstage_last(&mut self, len: u64) -> Result<()> {
        let Some(last) = self.parts.pop() else {
            return Ok(());
        };
        if len > 0 {
            let key = part_key(&self.full, &last.token);
            let obj = self
                .store
                .get_full(&key, self.store.part_bytes().max(last.size))
                .await?
                // Another writer combined this tail into a part of its own and saved
                // first (then removed it): this writer's state is no longer the session's.
                .ok_or_else(|| StorageError::Conflict {
                    key: self.full.clone(),
                })?;
            let keep = (len as usize).min(obj.bytes.len());
            self.pending.splice(0..0, obj.bytes[..keep].iter().copied());
        }
        self.created.retain(|t| t != &last.token);
        self.replaced.push(last.token);
        Ok(())
    }

    async fn append(&mut self, bytes: &[u8]) -> Result<()> {
        // A short last part (a staged tail) is combined with what follows.
        if self.pending.is_empty()
            && !bytes.is_empty()
            && self
                .parts
                .last()
                .is_some_and(|p| p.size < self.store.part_bytes())
        {
            let size = self.parts.last().map_or(0, |p| p.size);
            self.unstage_last(size).await?;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() as u64 >= self.store.part_bytes() {
            self.stage().await?;
        }
        Ok(())
    }

    /// Commits this writer's session to the bucket key `dest` without reading the session
    /// back. Nothing staged (the whole blob arrived in this request, below the part size):
    /// one PUT of the buffered bytes at `dest` with `If-None-Match: *`, no copy. Otherwise
    /// the tail is staged and the state made durable (`If-Match`: a second writer loses here),
    /// then the parts are copied as `upload_commit` does. The session is removed either way.
    pub(super) async fn commit(mut self, dest: &str) -> Result<CommitOutcome> {
        if self.parts.is_empty() {
            let outcome = match self
                .store
                .put_full(dest, &self.pending, &PutCondition::IfAbsent, &[])
                .await?
            {
                PutOutcome::Written(_) => CommitOutcome::Committed,
                PutOutcome::PreconditionFailed => CommitOutcome::AlreadyExisted,
            };
            // Nothing staged now, but the stored session may name parts that this writer
            // read back into memory (a short tail another node staged, combined with this
            // request's bytes): they go with the session object, in one request. (A losing
            // writer's strays, named by no state, are the expiry's.)
            let mut doomed: Vec<String> = self
                .durable
                .parts
                .iter()
                .map(|p| p.token.as_str())
                .chain(self.replaced.iter().map(String::as_str))
                .map(|t| part_key(&self.full, t))
                .collect();
            doomed.sort();
            doomed.dedup();
            doomed.push(self.full.clone());
            self.store.sessions().forget(&self.full);
            self.store.delete_many(&doomed).await?;
            return Ok(outcome);
        }
        self.sync().await?;
        self.store
            .commit_state(&self.full, dest, &self.durable, false)
            .await
    }

    async fn remove_staged(&self, tokens: &[String]) {
        for t in tokens {
            let key = part_key(&self.full, t);
            if let Err(e) = self.store.delete_full(&key).await {
                // Left for the session's deletion (which removes every `.part-` key).
                tracing::warn!(key, error = %e, "could not remove a staged part");
            }
        }
    }
}

impl UploadWriter for S3Upload {
    async fn write_all_at<B: IoBuf>(&mut self, buf: B, offset: u64) -> BufResult<(), B> {
        let size = self.staged_bytes() + self.pending.len() as u64;
        if offset != size {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("S3 uploads append only: write at {offset}, size {size}"),
            );
            return BufResult(Err(e), buf);
        }
        let r = self.append(buf.as_init()).await;
        BufResult(r.map_err(io::Error::other), buf)
    }

    async fn truncate(&mut self, len: u64) -> Result<()> {
        let staged = self.staged_bytes();
        let size = staged + self.pending.len() as u64;
        if len > size {
            return Err(StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("S3 uploads cannot grow by truncation ({size} to {len})"),
            )));
        }
        if len >= staged {
            self.pending.truncate((len - staged) as usize);
            return Ok(());
        }
        self.pending.clear();
        while self.staged_bytes() > len {
            let start = self.staged_bytes() - self.parts.last().map_or(0, |p| p.size);
            let keep = len.saturating_sub(start);
            self.unstage_last(keep).await?;
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.stage().await?;
        }
        if self.parts == self.durable.parts && self.meta == self.durable.meta {
            return Ok(());
        }
        let state = UploadState {
            parts: self.parts.clone(),
            meta: self.meta.clone(),
        };
        let body = serde_json::to_vec(&state).map_err(io::Error::other)?;
        let cond = PutCondition::IfMatch(self.etag.clone());
        match self
            .store
            .put_full(&self.full, &body, &cond, &mark())
            .await?
        {
            PutOutcome::Written(etag) => {
                self.store
                    .sessions()
                    .put(&self.full, &state, &etag, body.len());
                self.unverified = false;
                self.etag = etag;
                self.durable = state;
                self.created.clear();
                let replaced = std::mem::take(&mut self.replaced);
                self.remove_staged(&replaced).await;
                Ok(())
            }
            PutOutcome::PreconditionFailed => {
                self.store.sessions().forget(&self.full);
                let created = std::mem::take(&mut self.created);
                self.remove_staged(&created).await;
                self.parts = self.durable.parts.clone();
                self.meta = self.durable.meta.clone();
                self.replaced.clear();
                Err(StorageError::Conflict {
                    key: self.full.clone(),
                })
            }
        }
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.staged_bytes() + self.pending.len() as u64)
    }

    async fn seal(&mut self) -> Result<()> {
        self.sync().await
    }

    fn carries_meta(&self) -> bool {
        true
    }

    fn meta(&self) -> Option<&str> {
        self.meta.as_deref()
    }

    fn set_meta(&mut self, meta: String) {
        self.meta = Some(meta);
    }
}

impl S3Storage {
    /// `upload_create` with the caller's state already in the session object (one PUT for
    /// both; see `UploadWriter::set_meta`).
    pub async fn upload_create_with_meta(&self, key: &str, meta: String) -> Result<S3Upload> {
        validate_key(key)?;
        S3Upload::create(self.clone(), key, Some(meta)).await
    }

    /// `upload_commit` through the open writer: its state is not read back, and a blob that
    /// is all in the writer's memory is one PUT at `dest_key` (see `S3Upload::commit`).
    pub async fn commit_writer(&self, up: S3Upload, dest_key: &str) -> Result<CommitOutcome> {
        validate_key(dest_key)?;
        up.commit(&self.full(dest_key)).await
    }

    /// `open_upload` that reads the session as stored, never from this process's cache.
    pub async fn open_upload_fresh(&self, key: &str) -> Result<Option<S3Upload>> {
        validate_key(key)?;
        S3Upload::open_fresh(self.clone(), key).await
    }

    /// A session's durable state and the session object's etag, or `None`.
    pub(super) async fn load_upload(&self, full: &str) -> Result<Option<(UploadState, Etag)>> {
        let Some(obj) = self.get_full(full, STATE_BYTES_MAX).await? else {
            return Ok(None);
        };
        let state: UploadState = serde_json::from_slice(&obj.bytes)
            .map_err(|e| s3_error("GetObject", full, format!("not an upload session: {e}")))?;
        Ok(Some((state, obj.etag)))
    }

    /// A reader over a session's durable data: its staged parts in order (the buffered tail
    /// of an open writer is not included: `seal` it first). `None` if there is no session.
    pub(super) async fn open_upload_read(&self, full: &str) -> Result<Option<S3Reader>> {
        let Some((state, _)) = self.load_upload(full).await? else {
            return Ok(None);
        };
        let mut start = 0;
        let segments = state
            .parts
            .iter()
            .map(|p| {
                let seg = Segment {
                    full: part_key(full, &p.token),
                    start,
                    size: p.size,
                    // Staged parts are never rewritten (unique names): no pin needed.
                    etag: None,
                };
                start += p.size;
                seg
            })
            .collect();
        Ok(Some(S3Reader::of_segments(self.clone(), segments)))
    }

    /// Removes a session object and every staged part of it (a losing writer's included).
    pub(super) async fn delete_upload(&self, full: &str) -> Result<()> {
        let staged = self
            .list_full(&part_key(full, ""), None, PARTS_MAX * 2)
            .await?;
        self.sessions().forget(full);
        for key in staged {
            self.delete_full(&key).await?;
        }
        self.delete_full(full).await
    }

    pub(super) async fn commit_upload(
        &self,
        full: &str,
        dest: &str,
    ) -> Result<Option<CommitOutcome>> {
        let Some((state, _)) = self.load_upload(full).await? else {
            return Ok(None);
        };
        self.commit_state(full, dest, &state, true).await.map(Some)
    }

    /// Commits a session whose durable state is `state` to `dest`, then removes it.
    ///
    /// With `head_dest` (the trait's `upload_commit`, whose contract keeps whatever `dest`
    /// holds) an existing `dest` is found by a HEAD first. Without it (a commit from the
    /// open writer: the registry's, to a content-addressed key it verified the digest of)
    /// there is no HEAD: the copy (or put) is conditional on `dest` being absent
    /// (`If-None-Match: *`), so a blob stored already is not copied again; a service that
    /// ignores the condition on a copy (moto does) rewrites the same bytes, which is
    /// harmless (the caller's GC hold keeps a pass from deleting `dest` meanwhile) and only
    /// reports `Committed` for it. The session is removed with the parts its state names in
    /// one DeleteObjects, not by listing `.part-` keys: a part a crashed or losing writer
    /// staged and never recorded is left to the expiry, which lists the sessions' prefix.
    async fn commit_state(
        &self,
        full: &str,
        dest: &str,
        state: &UploadState,
        head_dest: bool,
    ) -> Result<CommitOutcome> {
        if head_dest && self.head_full(dest).await?.is_some() {
            self.delete_upload(full).await?;
            return Ok(CommitOutcome::AlreadyExisted);
        }
        let mut sources: Vec<String> = state
            .parts
            .iter()
            .map(|p| part_key(full, &p.token))
            .collect();
        let outcome = match sources.as_slice() {
            [] => {
                // A concurrent committer of the same (content-addressed) key wrote the same.
                match self
                    .put_full(dest, &[], &PutCondition::IfAbsent, &[])
                    .await?
                {
                    PutOutcome::Written(_) => CommitOutcome::Committed,
                    PutOutcome::PreconditionFailed => CommitOutcome::AlreadyExisted,
                }
            }
            [one] => match self.copy(dest, one, None, true).await? {
                Some(_) => CommitOutcome::Committed,
                None => CommitOutcome::AlreadyExisted,
            },
            many => {
                self.assemble(dest, many).await?;
                CommitOutcome::Committed
            }
        };
        sources.push(full.to_string());
        self.sessions().forget(full);
        self.delete_many(&sources).await?;
        Ok(outcome)
    }
}
