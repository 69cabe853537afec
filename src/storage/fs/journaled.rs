//! The fs backend's writes through the journal (see `journal/mod.rs` for the argument), and the
//! pending and batched writes the `Storage` trait offers for group commit.

use std::path::PathBuf;

use super::super::{validate_key, Etag, PutCondition, PutOutcome, Result, StorageError};
use super::files::etag_of;
use super::journal::{Apply, Journal, Record};
use super::locks::{lock_key, KeyLock};
use super::FsStorage;

/// Pending writes up to this size are made with direct syscalls on the core (a temp file,
/// its write, a rename or link: page-cache work of some 10-30 µs, inside the budget for work
/// on a core: docs/ARCHITECTURE.md, section 4); larger ones go through the ring.
const PENDING_DIRECT_BYTES_MAX: usize = 16 * 1024;

/// A put whose condition held, ready to be logged.
struct Decided {
    key: String,
    path: PathBuf,
    bytes: Vec<u8>,
    etag: Etag,
    if_absent: bool,
}

impl Decided {
    fn record(&self) -> Record<'_> {
        match self.if_absent {
            true => Record::PutIfAbsent(&self.key, &self.bytes),
            false => Record::Put(&self.key, &self.bytes),
        }
    }

    fn apply(self) -> (Apply, Etag) {
        let a = match self.if_absent {
            true => Apply::PutIfAbsent {
                path: self.path,
                bytes: self.bytes,
            },
            false => Apply::Put {
                path: self.path,
                bytes: self.bytes,
            },
        };
        (a, self.etag)
    }
}

impl FsStorage {
    pub(super) fn journal(&self) -> Option<&Journal> {
        self.inner.journal.as_deref()
    }

    /// Decides `cond` for `key` (its lock held by the caller) and hashes the content.
    async fn decide(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: &PutCondition,
    ) -> Result<Option<Decided>> {
        let path = self.path(key);
        match cond {
            PutCondition::Always => {}
            // A direct stat: io_uring would hand statx to a kernel worker thread and back.
            PutCondition::IfAbsent if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) => {
                return Ok(None)
            }
            PutCondition::IfAbsent => {}
            PutCondition::IfMatch(etag) => match self.read_object(&path, key).await? {
                Some(current) if current.etag == *etag => {}
                _ => return Ok(None),
            },
        }
        let (bytes, etag) = etag_of(bytes).await?;
        Ok(Some(Decided {
            key: key.to_owned(),
            path,
            bytes,
            etag,
            if_absent: *cond == PutCondition::IfAbsent,
        }))
    }

    /// A durable put through the journal: logged, flushed with whatever else is waiting,
    /// then applied; the key stays locked until it is.
    pub(super) async fn put_journaled(
        &self,
        journal: &Journal,
        key: &str,
        bytes: Vec<u8>,
        cond: PutCondition,
    ) -> Result<PutOutcome> {
        let mut outcomes = self
            .put_batch_journaled(journal, vec![(key.to_owned(), bytes, cond)])
            .await?;
        Ok(outcomes.pop().unwrap_or(PutOutcome::PreconditionFailed))
    }

    pub(super) async fn put_batch_journaled(
        &self,
        journal: &Journal,
        items: Vec<(String, Vec<u8>, PutCondition)>,
    ) -> Result<Vec<PutOutcome>> {
        for (key, _, _) in &items {
            validate_key(key)?;
        }
        // Locks in key order, so two batches sharing keys cannot wait on each other.
        let mut keys: Vec<PathBuf> = items.iter().map(|(k, _, _)| self.path(k)).collect();
        keys.sort();
        keys.dedup();
        if keys.len() != items.len() {
            return Err(StorageError::InvalidKey {
                key: items.first().map(|i| i.0.clone()).unwrap_or_default(),
                reason: "the same key twice in one batch",
            });
        }
        let mut guards: Vec<KeyLock> = Vec::with_capacity(keys.len());
        for k in keys {
            guards.push(lock_key(k).await);
        }
        let mut decided = Vec::with_capacity(items.len());
        for (key, bytes, cond) in items {
            decided.push(self.decide(&key, bytes, &cond).await?);
        }
        let mut encoded = Vec::new();
        for d in decided.iter().flatten() {
            d.record().encode(&mut encoded);
        }
        if encoded.is_empty() {
            return Ok(decided
                .iter()
                .map(|_| PutOutcome::PreconditionFailed)
                .collect());
        }
        let mut etags = Vec::with_capacity(decided.len());
        let mut applies = Vec::new();
        for d in decided {
            match d {
                Some(d) => {
                    let (a, etag) = d.apply();
                    applies.push(a);
                    etags.push(Some(etag));
                }
                None => etags.push(None),
            }
        }
        let seq = journal.append(&encoded, applies, guards)?;
        let mut applied = journal.wait(seq).await?.into_iter();
        Ok(etags
            .into_iter()
            .map(|etag| match etag {
                // A create-if-absent the apply found taken (another process got there
                // between the check and the apply) did not happen.
                Some(etag) if applied.next().unwrap_or(false) => PutOutcome::Written(etag),
                _ => PutOutcome::PreconditionFailed,
            })
            .collect())
    }

    /// A durable delete through the journal.
    pub(super) async fn delete_journaled(&self, journal: &Journal, key: &str) -> Result<bool> {
        validate_key(key)?;
        let path = self.path(key);
        let guard = lock_key(path.clone()).await;
        let mut encoded = Vec::new();
        Record::Delete(key).encode(&mut encoded);
        let seq = journal.append(&encoded, vec![Apply::Delete { path }], vec![guard])?;
        Ok(journal.wait(seq).await?.first().copied().unwrap_or(false))
    }

    /// A durable delete through the journal, only if the object has `etag`: decided and
    /// logged under the key's lock, which the journal holds until the delete is applied.
    pub(super) async fn delete_if_match_journaled(
        &self,
        journal: &Journal,
        key: &str,
        etag: &Etag,
    ) -> Result<bool> {
        validate_key(key)?;
        let path = self.path(key);
        let guard = lock_key(path.clone()).await;
        match self.read_object(&path, key).await? {
            Some(current) if current.etag == *etag => {}
            _ => return Ok(false),
        }
        let mut encoded = Vec::new();
        Record::Delete(key).encode(&mut encoded);
        let seq = journal.append(&encoded, vec![Apply::Delete { path }], vec![guard])?;
        Ok(journal.wait(seq).await?.first().copied().unwrap_or(false))
    }

    /// A pending put: applied now, logged for the next flush (see the trait).
    pub(super) async fn put_pending_journaled(
        &self,
        journal: &Journal,
        key: &str,
        bytes: Vec<u8>,
        cond: PutCondition,
    ) -> Result<PutOutcome> {
        validate_key(key)?;
        let path = self.path(key);
        // Held until the record is queued, so the log orders this write as the tree does.
        let _lock = lock_key(path.clone()).await;
        let Some(d) = self.decide(key, bytes, &cond).await? else {
            return Ok(PutOutcome::PreconditionFailed);
        };
        let placed = if d.bytes.len() <= PENDING_DIRECT_BYTES_MAX {
            // Small: a few page-cache syscalls made directly cost less than their ring
            // round trips.
            let a = match d.if_absent {
                true => Apply::PutIfAbsent {
                    path: path.clone(),
                    bytes: d.bytes.clone(),
                },
                false => Apply::Put {
                    path: path.clone(),
                    bytes: d.bytes.clone(),
                },
            };
            super::journal::apply(self.root(), a)?
        } else {
            let temp = self.write_temp(&path, d.bytes.clone(), false).await?;
            self.place(&temp, &path, !d.if_absent, false).await?
        };
        if !placed {
            return Ok(PutOutcome::PreconditionFailed);
        }
        let mut encoded = Vec::new();
        d.record().encode(&mut encoded);
        journal.append(&encoded, Vec::new(), Vec::new())?;
        Ok(PutOutcome::Written(d.etag))
    }

    /// A pending delete: applied now, logged for the next flush.
    pub(super) async fn delete_pending_journaled(
        &self,
        journal: &Journal,
        key: &str,
    ) -> Result<bool> {
        validate_key(key)?;
        let path = self.path(key);
        let _lock = lock_key(path.clone()).await;
        // Direct, as small pending puts are: an unlink and maybe a few rmdirs.
        let removed = super::journal::apply(self.root(), Apply::Delete { path })?;
        let mut encoded = Vec::new();
        Record::Delete(key).encode(&mut encoded);
        journal.append(&encoded, Vec::new(), Vec::new())?;
        Ok(removed)
    }

    /// After a direct (self-fsynced) write of `key`: a durable marker so that replay keeps
    /// it rather than redoing an older logged write or delete of the same key.
    pub(super) async fn mark_direct(&self, journal: &Journal, key: &str) -> Result<()> {
        let mut encoded = Vec::new();
        Record::Direct(key).encode(&mut encoded);
        let seq = journal.append(&encoded, Vec::new(), Vec::new())?;
        journal.wait(seq).await?;
        Ok(())
    }
}
