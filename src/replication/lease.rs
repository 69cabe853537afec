//! A record in storage that one node at a time holds: claimed by a conditional write that
//! puts this node's [`Claim`] and a lease in it, renewed while the holder works (a holder
//! that stalled past its lease finds its renewal refused and stops), released by a last
//! write. The pull runs (`pull.rs`) and the reconcile passes (`reconcile.rs`) keep their
//! schedules and outcomes in such records; the queue's jobs are such records too, a job per
//! object, removed when done (`queue.rs`).

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use super::job::Claim;
use crate::error::Result;
use crate::storage::{Backend, Etag, PutCondition, PutOutcome, Storage};

/// A record with a claim in it.
pub trait Leased: Clone {
    fn parse(bytes: &[u8]) -> Option<Self>;
    fn to_bytes(&self) -> Vec<u8>;
    fn claim_mut(&mut self) -> &mut Option<Claim>;
}

/// A record this node holds.
pub struct Held<R> {
    key: String,
    node: String,
    lease: Duration,
    /// The record as claimed.
    pub record: R,
    etag: RefCell<Etag>,
    renewed: Cell<Instant>,
}

/// The record under `key` (a default one when there is none, or when it is unreadable: it
/// only schedules work) and the condition a write over what was read needs.
pub async fn read<R: Leased + Default>(store: &Backend, key: &str) -> Result<(R, PutCondition)> {
    Ok(match store.get(key).await? {
        Some(obj) => {
            let record = R::parse(&obj.bytes).unwrap_or_else(|| {
                tracing::warn!(key, "unreadable replication record replaced");
                R::default()
            });
            (record, PutCondition::IfMatch(obj.etag))
        }
        None => (R::default(), PutCondition::IfAbsent),
    })
}

fn claim(node: &str, lease: Duration, now_ms: u64) -> Option<Claim> {
    Some(Claim {
        node: node.to_string(),
        until_ms: now_ms + lease.as_millis() as u64,
    })
}

/// Writes `record` under `key` with `node`'s claim for `lease`, if `cond` (from the read it
/// was made from) still holds; None when another node's write won.
pub async fn take<R: Leased>(
    store: &Backend,
    key: String,
    node: &str,
    lease: Duration,
    mut record: R,
    cond: PutCondition,
    now_ms: u64,
) -> Result<Option<Held<R>>> {
    *record.claim_mut() = claim(node, lease, now_ms);
    Ok(match store.put(&key, record.to_bytes(), cond).await? {
        PutOutcome::Written(etag) => Some(Held {
            key,
            node: node.to_string(),
            lease,
            record,
            etag: RefCell::new(etag),
            renewed: Cell::new(Instant::now()),
        }),
        PutOutcome::PreconditionFailed => None,
    })
}

impl<R: Leased> Held<R> {
    /// Renews the lease when a third of it has passed. False when another node took the
    /// record over meanwhile (this one stalled past its lease): the caller stops.
    pub async fn keep(&self, store: &Backend, now_ms: u64) -> Result<bool> {
        if self.renewed.get().elapsed() < self.lease / 3 {
            return Ok(true);
        }
        let mut record = self.record.clone();
        *record.claim_mut() = claim(&self.node, self.lease, now_ms);
        let cond = PutCondition::IfMatch(self.etag.borrow().clone());
        match store.put(&self.key, record.to_bytes(), cond).await? {
            PutOutcome::Written(etag) => {
                *self.etag.borrow_mut() = etag;
                self.renewed.set(Instant::now());
                Ok(true)
            }
            PutOutcome::PreconditionFailed => Ok(false),
        }
    }

    /// Writes `record` without a claim: the record is free. False when another node took it
    /// over meanwhile (nothing is written then).
    pub async fn release(&self, store: &Backend, mut record: R) -> Result<bool> {
        *record.claim_mut() = None;
        let cond = PutCondition::IfMatch(self.etag.borrow().clone());
        let put = store.put(&self.key, record.to_bytes(), cond).await?;
        Ok(matches!(put, PutOutcome::Written(_)))
    }

    /// The record's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version of the record this node wrote last.
    pub fn etag(&self) -> Etag {
        self.etag.borrow().clone()
    }
}
