//! How far a blob's upload to a target got, kept in storage so the next attempt continues
//! it: the same node after a restart, or another node after the job's lease expired.
//!
//! A blob sent in PATCHes (over [`super::copy::CHUNK_BYTES`]) has a record at
//! `replication/uploads/<target>/<repository>/<alg>/<hex>`: the session's path at the target
//! (of the target's origin only) and the bytes the target acknowledged, rewritten after
//! each acknowledged chunk (one small write per chunk, not per byte) and removed when the
//! blob is complete. The next attempt asks the target where the session stands (`GET`,
//! `Range`) and continues from there when the target holds at least what was recorded; a
//! session the target forgot, or one holding less, is cancelled and the blob is sent from
//! its start.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::storage::{Backend, PutCondition, Storage};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The session's path and query at the target (its `Location`, on the target's origin).
    pub path: String,
    /// Bytes the target acknowledged.
    pub offset: u64,
    /// The blob's size: a record of another size is not this blob's.
    pub size: u64,
    pub updated_ms: u64,
}

/// The record at `key`, if any (an unreadable one is no record).
pub async fn read(store: &Backend, key: &str) -> Result<Option<Record>> {
    let Some(obj) = store.get(key).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&obj.bytes).ok())
}

pub async fn write(store: &Backend, key: &str, record: &Record) -> Result<()> {
    // Strings and numbers: serialising cannot fail.
    let bytes = serde_json::to_vec(record).unwrap_or_default();
    store.put(key, bytes, PutCondition::Always).await?;
    Ok(())
}

/// Removes the record; a failure is logged (a stale record costs one status request and
/// is replaced by the next upload of the blob).
pub async fn clear(store: &Backend, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(key, error = %e, "could not remove a replication upload record");
    }
}
