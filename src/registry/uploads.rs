//! Upload sessions: data appended in place, offset and hash state persisted beside it, so a
//! session continues on any connection, any core, or after a restart.
//!
//! Order of writes: data (fsynced), then state (atomic put). The state is the truth: data
//! past the recorded offset is a crashed request's leftover and is cut off on reopen.
//!
//! On object storage a session is one object (`layout::upload_session`) carrying the data's
//! staged parts and this module's state, replaced with `If-Match`. What a session costs
//! there, and why the requests that are not made are not needed:
//! - No index object (`uploads/<id>`, a PUT at the start and a DELETE at the end on the fs
//!   backend): the sessions of every repository live under the one prefix `uploads/`, so the
//!   expiry lists them directly, with their LastModified (each save rewrites the session
//!   object), and needs nothing else to find a session a crash left.
//! - No listing of the repository's sessions per POST for the cap: a per-process estimate
//!   decides, and lists only when it reaches the cap (`session_cap.rs`, which says what it
//!   bounds).
//! - No catalog entry at the start or at the commit: a repository enters the catalog with
//!   its first manifest (`Registry::ensure_repository`).
//! - No GET of the session when this process wrote it last: the process keeps the states it
//!   wrote (`storage/s3/session_cache.rs`) and opens the session from there, *unconfirmed*
//!   (`Session::is_cached`). Nothing is overwritten on that basis: the PATCH's save is
//!   conditional on the cached ETag, so if another node changed the session meanwhile the
//!   save fails; the session is then read (`upload_confirm`) and this request's bytes, kept
//!   for that (`REPLAY_BYTES_MAX`; past it the session is read before more is written), are
//!   appended again to the stored state, unless the client named an offset (Content-Range)
//!   that is no longer the session's. A commit from a cached state copies the staged parts
//!   it names, which never change: the blob is exactly what was hashed, and a digest that
//!   does not match makes the session be read before it is judged. A status GET and a
//!   Content-Range that disagrees with the cache read the session too. Of two PATCHes that
//!   race on one session with the same Content-Range exactly one wins; two without one
//!   both land, one after the other (as they would a moment apart), never over each other.
//! - At the commit, no HEAD of the destination, no listing of staged parts and one
//!   DeleteObjects for the session and its parts (`storage/s3/upload.rs`), one PUT for the
//!   layer link (on S3 the GC index entry is the link: `Registry::layer_link_key`).

use compio::buf::BufResult;
use serde::{Deserialize, Serialize};

use std::sync::atomic::Ordering::Relaxed;

use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::metrics::METRICS;
use crate::oci::{Algorithm, Digest, Hasher, RepoName, UploadId};
use crate::storage::{
    BackendUpload, BlobReader, Etag, PutCondition, PutOutcome, Storage, UploadWriter,
};

/// Reads of upload data when a digest must be recomputed with another algorithm.
const REHASH_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes of one request kept while its session was opened from the cache (not read back),
/// to append them again to the stored state if another node changed it meanwhile: a small
/// layer or a config. Past it the session is read before more is written (one GET, what
/// every request cost before the cache), so a request holds at most this much extra.
const REPLAY_BYTES_MAX: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StateFile {
    offset: u64,
    /// Hex of the serialised hasher state.
    hash: String,
    started: u64,
    pub(super) updated: u64,
}

/// An open session: its persisted state and its data, held by one request at a time.
pub struct Session {
    pub name: RepoName,
    pub id: UploadId,
    pub offset: u64,
    pub hasher: Hasher,
    pub data: BackendUpload,
    started: u64,
    etag: Etag,
    /// Opened from the process's cache of session states (S3), not read back: the state may
    /// be stale until a save (or a read) confirms it (module docs).
    cached: bool,
    /// This request's bytes while `cached`, at most `REPLAY_BYTES_MAX`.
    replay: Vec<u8>,
    /// The offset when opened.
    opened_offset: u64,
    /// The client named the offset it appends at (Content-Range): if the stored state turns
    /// out to be elsewhere, that is a conflict, not something to append to.
    pub ranged: bool,
}

impl Session {
    /// Opened from the cache and not confirmed yet (see `cached`).
    pub fn is_cached(&self) -> bool {
        self.cached
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unknown_upload() -> Error {
    Error::BlobUploadUnknown("upload unknown or expired".into())
}

impl Registry {
    /// Starts a session. Refused with TOOMANYREQUESTS past the per-repository cap.
    pub async fn upload_start(&self, name: &RepoName) -> Result<UploadId> {
        Ok(self.upload_start_open(name).await?.id)
    }

    /// Starts a session and hands it back open, as `upload_open` would find it (no read:
    /// nobody else knows its id yet).
    pub async fn upload_start_open(&self, name: &RepoName) -> Result<Session> {
        self.check_session_cap(name).await?;
        let id = UploadId::generate().map_err(Error::internal)?;
        if !self.store.upload_meta_inline() {
            // The index first, so a crash at any later step leaves a session that expiry
            // finds (pending: the state's durable put below makes it durable first). Object
            // storage needs none: its sessions are listed where they are (module docs).
            self.store
                .put_pending(
                    &layout::upload_index(&id),
                    name.as_str().as_bytes().to_vec(),
                    PutCondition::Always,
                )
                .await?;
        }
        crate::failpoint::hit("upload-after-index");
        let now = self.clock.unix_secs();
        let state = StateFile {
            offset: 0,
            hash: hex(&Hasher::new(Algorithm::Sha256).to_state_bytes()),
            started: now,
            updated: now,
        };
        let data_key = self.session_key(name, &id);
        let (data, etag) = if self.store.upload_meta_inline() {
            // The state rides in the session object: one conditional create for both.
            let text = serde_json::to_string(&state).map_err(Error::internal)?;
            let data = self.store.upload_create_with_meta(&data_key, text).await?;
            (data, Etag::new(String::new()))
        } else {
            let data = self.store.upload_create(&data_key).await?;
            let bytes = serde_json::to_vec(&state).map_err(Error::internal)?;
            let written = self
                .store
                .put(
                    &layout::upload_state(name, &id),
                    bytes,
                    PutCondition::IfAbsent,
                )
                .await?;
            let PutOutcome::Written(etag) = written else {
                return Err(Error::internal(format!(
                    "upload {id}: state exists already"
                )));
            };
            (data, etag)
        };
        METRICS.uploads_open.fetch_add(1, Relaxed);
        Ok(Session {
            name: name.clone(),
            id,
            offset: 0,
            hasher: Hasher::new(Algorithm::Sha256),
            data,
            started: now,
            etag,
            cached: false,
            replay: Vec::new(),
            opened_offset: 0,
            ranged: false,
        })
    }

    /// Opens a session for one request; `None` if it does not exist in this repository.
    pub async fn upload_open(&self, name: &RepoName, id: &UploadId) -> Result<Option<Session>> {
        if self.store.upload_meta_inline() {
            return self.upload_open_inline(name, id).await;
        }
        let Some(obj) = self.store.get(&layout::upload_state(name, id)).await? else {
            return Ok(None);
        };
        let state: StateFile = serde_json::from_slice(&obj.bytes)
            .map_err(|e| Error::internal(format!("upload state {id}: {e}")))?;
        let hasher = unhex(&state.hash)
            .and_then(|b| Hasher::from_state_bytes(&b).ok())
            .ok_or_else(|| Error::internal(format!("upload state {id}: bad hash state")))?;
        if hasher.bytes_hashed() != state.offset {
            return Err(Error::internal(format!(
                "upload state {id}: offset mismatch"
            )));
        }
        let Some(mut data) = self
            .store
            .open_upload(&layout::upload_data(name, id))
            .await?
        else {
            return Ok(None);
        };
        let size = data.size().await?;
        if size > state.offset {
            data.truncate(state.offset).await?;
        } else if size < state.offset {
            return Err(Error::internal(format!(
                "upload {id}: data shorter than state"
            )));
        }
        Ok(Some(Session {
            name: name.clone(),
            id: id.clone(),
            offset: state.offset,
            hasher,
            data,
            started: state.started,
            etag: obj.etag,
            cached: false,
            replay: Vec::new(),
            opened_offset: state.offset,
            ranged: false,
        }))
    }

    /// `upload_open` where the state is in the session object (one read for both, or none
    /// when this process has the session's state cached: see the module docs).
    async fn upload_open_inline(&self, name: &RepoName, id: &UploadId) -> Result<Option<Session>> {
        self.upload_open_inline_from(name, id, false).await
    }

    async fn upload_open_inline_from(
        &self,
        name: &RepoName,
        id: &UploadId,
        fresh: bool,
    ) -> Result<Option<Session>> {
        let key = self.session_key(name, id);
        let opened = if fresh {
            self.store.open_upload_fresh(&key).await?
        } else {
            self.store.open_upload(&key).await?
        };
        let Some(mut data) = opened else {
            return Ok(None);
        };
        let state: StateFile = data
            .meta()
            .ok_or_else(|| Error::internal(format!("upload {id}: session without state")))
            .and_then(|m| {
                serde_json::from_str(m)
                    .map_err(|e| Error::internal(format!("upload state {id}: {e}")))
            })?;
        let hasher = unhex(&state.hash)
            .and_then(|b| Hasher::from_state_bytes(&b).ok())
            .ok_or_else(|| Error::internal(format!("upload state {id}: bad hash state")))?;
        if hasher.bytes_hashed() != state.offset {
            return Err(Error::internal(format!(
                "upload state {id}: offset mismatch"
            )));
        }
        let size = data.size().await?;
        if size > state.offset {
            data.truncate(state.offset).await?;
        } else if size < state.offset {
            return Err(Error::internal(format!(
                "upload {id}: data shorter than state"
            )));
        }
        Ok(Some(Session {
            name: name.clone(),
            id: id.clone(),
            offset: state.offset,
            hasher,
            cached: data.is_unverified(),
            data,
            started: state.started,
            etag: Etag::new(String::new()),
            replay: Vec::new(),
            opened_offset: state.offset,
            ranged: false,
        }))
    }

    pub async fn upload_open_or_unknown(&self, name: &RepoName, id: &UploadId) -> Result<Session> {
        self.upload_open(name, id).await?.ok_or_else(unknown_upload)
    }

    /// The session as stored, when `s` was opened from the cache and nothing was written
    /// through it yet (a status request, or a Content-Range that does not match the cached
    /// offset: the client may know better than the cache). Otherwise `s` itself.
    pub async fn upload_refresh(&self, s: Session) -> Result<Session> {
        if !s.cached {
            return Ok(s);
        }
        let (name, id) = (s.name.clone(), s.id.clone());
        drop(s);
        self.upload_open_inline_from(&name, &id, true)
            .await?
            .ok_or_else(unknown_upload)
    }

    /// Confirms a cached session against the stored one: the same ETag means the cache was
    /// right; otherwise the stored state replaces it and this request's bytes (`replay`)
    /// are appended to it again and hashed anew, unless the client named an offset that is
    /// no longer the session's (a conflict). Either way the session is confirmed after.
    /// True when the stored state replaced the cached one.
    async fn upload_confirm(&self, s: &mut Session) -> Result<bool> {
        let stored = self
            .upload_open_inline_from(&s.name, &s.id, true)
            .await?
            .ok_or_else(unknown_upload)?;
        let replay = std::mem::take(&mut s.replay);
        s.cached = false;
        if stored.data.same_version(&s.data) {
            return Ok(false);
        }
        if s.ranged && stored.offset != s.opened_offset {
            return Err(Error::BlobUploadInvalid(
                "upload was changed by another request".into(),
            ));
        }
        tracing::debug!(upload = %s.id, "cached session state was stale; continuing from storage");
        let stale = std::mem::replace(&mut s.data, stored.data);
        stale.discard().await;
        s.offset = stored.offset;
        s.hasher = stored.hasher;
        s.started = stored.started;
        s.opened_offset = stored.offset;
        if !replay.is_empty() {
            s.hasher.update(&replay);
            let len = replay.len() as u64;
            let BufResult(r, _) = s.data.write_all_at(replay, s.offset).await;
            r.map_err(|e| Error::from(crate::storage::StorageError::from_write(e)))?;
            s.offset += len;
        }
        Ok(true)
    }

    /// Appends `bytes` (already hashed by the caller into `s.hasher`) at the session offset.
    pub async fn upload_write(&self, s: &mut Session, buf: Vec<u8>) -> (Result<()>, Vec<u8>) {
        if s.cached {
            if s.replay.len() + buf.len() <= REPLAY_BYTES_MAX {
                s.replay.extend_from_slice(&buf);
                let len = buf.len() as u64;
                let BufResult(r, buf) = s.data.write_all_at(buf, s.offset).await;
                let Err(e) = r else {
                    s.offset += len;
                    return (Ok(()), buf);
                };
                // A stale cached state can fail a write (S3: the staged tail it names was
                // combined into a new part by the node that continued the session, and
                // removed): read the session and go on from there, `buf` included.
                return match self.upload_confirm(s).await {
                    Ok(true) => (Ok(()), buf),
                    Ok(false) => (Err(crate::storage::StorageError::from_write(e).into()), buf),
                    Err(e) => (Err(e), buf),
                };
            } else {
                // Too much to keep for a replay: confirm the state before writing more. The
                // caller hashed `buf` into the old hasher; hash it into the confirmed one.
                match self.upload_confirm(s).await {
                    Ok(true) => s.hasher.update(&buf),
                    Ok(false) => {}
                    Err(e) => return (Err(e), buf),
                }
            }
        }
        let BufResult(r, buf) = s.data.write_all_at(buf, s.offset).await;
        match r {
            Ok(()) => {
                s.offset += buf.len() as u64;
                (Ok(()), buf)
            }
            Err(e) => (Err(crate::storage::StorageError::from_write(e).into()), buf),
        }
    }

    /// Makes the data durable, then records offset and hash state.
    pub async fn upload_save(&self, s: &mut Session) -> Result<()> {
        if s.data.carries_meta() {
            // Data and state in one conditional replace: a second writer loses here. A
            // session opened from the cache that loses may only have been stale: it is
            // confirmed against storage and saved again (module docs).
            return match self.save_inline(s).await {
                Err(e @ Error::BlobUploadInvalid(_)) if s.cached => {
                    if !self.upload_confirm(s).await? {
                        return Err(e);
                    }
                    self.save_inline(s).await
                }
                other => other,
            };
        }
        let state = self.state_of(s);
        s.data.sync().await?;
        let bytes = serde_json::to_vec(&state).map_err(Error::internal)?;
        let key = layout::upload_state(&s.name, &s.id);
        match self
            .store
            .put(&key, bytes, PutCondition::IfMatch(s.etag.clone()))
            .await?
        {
            PutOutcome::Written(etag) => {
                s.etag = etag;
                Ok(())
            }
            PutOutcome::PreconditionFailed => Err(Error::BlobUploadInvalid(
                "upload was changed by another request".into(),
            )),
        }
    }

    fn state_of(&self, s: &Session) -> StateFile {
        StateFile {
            offset: s.offset,
            hash: hex(&s.hasher.to_state_bytes()),
            started: s.started,
            updated: self.clock.unix_secs(),
        }
    }

    /// Sets the state in the session object and saves both with one conditional replace.
    async fn save_inline(&self, s: &mut Session) -> Result<()> {
        let state = serde_json::to_string(&self.state_of(s)).map_err(Error::internal)?;
        s.data.set_meta(state);
        match s.data.sync().await {
            Err(crate::storage::StorageError::Conflict { .. }) => Err(Error::BlobUploadInvalid(
                "upload was changed by another request".into(),
            )),
            Err(e) => Err(e.into()),
            Ok(()) => {
                // Confirmed by the conditional write: the bytes need no keeping.
                s.cached = false;
                s.replay = Vec::new();
                Ok(())
            }
        }
    }

    /// Verifies the session's content against `digest` and commits it as a blob linked to
    /// the repository. On a mismatch the session is removed and nothing becomes visible.
    pub async fn upload_finish(&self, s: Session, digest: &Digest) -> Result<()> {
        self.upload_finish_gated(s, digest, async |_| Ok(()))
            .await?;
        Ok(())
    }

    /// [`Registry::upload_finish`] with `gate` asked, with the blob's size, once the content
    /// is verified and held, before anything is committed (webhooks, quota): when it refuses,
    /// the session is removed and nothing becomes visible. Returns the blob's size.
    pub async fn upload_finish_gated(
        &self,
        mut s: Session,
        digest: &Digest,
        gate: impl AsyncFnOnce(u64) -> Result<()>,
    ) -> Result<u64> {
        let (name, id) = (s.name.clone(), s.id.clone());
        let same_algorithm = digest.algorithm() == s.hasher.algorithm();
        // A session opened from the cache is confirmed first only where the commit cannot
        // go back: data to read back and hash again, or bytes of this request to stage onto
        // earlier ones (the commit's conditional save is then the first check). Otherwise
        // it commits what it hashed: the staged parts a cached state names never change.
        if s.cached && (!same_algorithm || (!s.replay.is_empty() && s.opened_offset > 0)) {
            self.upload_confirm(&mut s).await?;
        }
        let mut actual = s.hasher.clone().finalize();
        if same_algorithm && &actual != digest && s.cached && self.upload_confirm(&mut s).await? {
            // The cache was stale: the digest is checked against the stored session.
            actual = s.hasher.clone().finalize();
        }
        let was_cached = s.cached;
        let s_offset = s.offset;
        // What was received becomes what the commit commits (object storage stages its
        // buffered tail here; the fs commit syncs the file itself). A writer that carries
        // its state commits from memory instead (S3: a blob still all in memory is one PUT
        // at its content key), unless the data must be read back to hash it again.
        if !(same_algorithm && s.data.carries_meta()) {
            s.data.seal().await?;
        }
        if !same_algorithm {
            actual = self.rehash(&name, &id, digest.algorithm()).await?;
        }
        if &actual != digest {
            self.upload_cancel(&name, &id).await?;
            return Err(Error::DigestInvalid(format!(
                "content digest is {actual}, not {digest}"
            )));
        }
        let data_key = self.session_key(&name, &id);
        let size = s_offset;
        // Held before the gate and the commit: a pass that is deleting this digest finishes
        // first, and none starts until the grace period is over (see gc.rs). A commit that
        // finds the blob stored already therefore keeps a blob that stays, and a quota
        // check in the gate sees what the pass gave back (quota/mod.rs).
        self.hold_blob(digest).await?;
        if let Err(e) = gate(size).await {
            drop(s);
            self.upload_cancel(&name, &id).await?;
            return Err(e);
        }
        crate::failpoint::hit("blob-after-hold");
        let committed = self
            .store
            .commit_writer(s.data, &data_key, &layout::blob_data(digest))
            .await;
        let outcome = match committed {
            // From a cached state: the session may have been committed or cancelled by
            // another node meanwhile (its parts gone). Then it is unknown, as it would be
            // had it been read.
            Err(e) if was_cached => {
                if self.store.open_upload_fresh(&data_key).await?.is_none() {
                    return Err(unknown_upload());
                }
                return Err(e.into());
            }
            other => other?.ok_or_else(unknown_upload)?,
        };
        if outcome == crate::storage::CommitOutcome::Committed {
            METRICS.stored_bytes.fetch_add(size as i64, Relaxed);
        }
        crate::failpoint::hit("blob-after-commit");
        self.link_blob(&name, digest).await?;
        if self.store.upload_meta_inline() {
            // The commit removed the session with its state; there is no index.
            METRICS.uploads_open.fetch_sub(1, Relaxed);
        } else {
            self.upload_cancel(&name, &id).await?;
        }
        Ok(size)
    }

    async fn rehash(&self, name: &RepoName, id: &UploadId, alg: Algorithm) -> Result<Digest> {
        self.hash_object(&self.session_key(name, id), alg)
            .await?
            .ok_or_else(unknown_upload)
    }

    /// Hashes a stored object with `alg`, reading it in large chunks; None if it is absent.
    pub(crate) async fn hash_object(&self, key: &str, alg: Algorithm) -> Result<Option<Digest>> {
        let Some(reader) = self.store.open_read(key).await? else {
            return Ok(None);
        };
        let mut hasher = Hasher::new(alg);
        let mut buf = Vec::with_capacity(REHASH_CHUNK_BYTES);
        let mut pos = 0;
        while pos < reader.size() {
            buf.clear();
            let BufResult(r, b) = reader.read_at(buf, pos).await;
            buf = b;
            let n = r.map_err(Error::internal)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(Some(hasher.finalize()))
    }

    /// Removes a session and its data. True if there was one.
    pub async fn upload_cancel(&self, name: &RepoName, id: &UploadId) -> Result<bool> {
        if self.store.upload_meta_inline() {
            // Object storage: the session object is the state (its staged parts go with
            // it); there is no index.
            let had = self.store.delete(&self.session_key(name, id)).await?;
            if had {
                METRICS.uploads_open.fetch_sub(1, Relaxed);
            }
            return Ok(had);
        }
        // Pending: a session that a power loss brings back is removed again by expiry.
        let had = self
            .store
            .delete_pending(&layout::upload_state(name, id))
            .await?;
        self.store
            .delete_pending(&layout::upload_data(name, id))
            .await?;
        self.store.delete_pending(&layout::upload_index(id)).await?;
        if had {
            METRICS.uploads_open.fetch_sub(1, Relaxed);
        }
        Ok(had)
    }

    /// Where a session's data lives: beside its state under the repository (fs), or as the
    /// one session object under `uploads/` (object storage, see `layout::upload_session`).
    pub(crate) fn session_key(&self, name: &RepoName, id: &UploadId) -> String {
        if self.store.upload_meta_inline() {
            layout::upload_session(name, id)
        } else {
            layout::upload_data(name, id)
        }
    }
}
