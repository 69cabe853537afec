//! A replication job as stored: what to replicate (a push or a deletion of one reference
//! of one repository, to one target), its attempts and backoff, and who holds it.
//!
//! A job names a reference, not content: when it runs, the source's state of that reference
//! *then* is replicated (the manifest a tag names now; a deletion only if the reference is
//! still gone), so jobs of one reference may run in any order and the target ends as the
//! source is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The first retry waits about this long; each further one twice as long as the one before,
/// up to the target's `retry_backoff_max`.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Push,
    Delete,
}

/// The node working on a job, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub kind: Kind,
    pub repository: String,
    /// The tag pushed or deleted; None for a push or deletion by digest.
    #[serde(default)]
    pub tag: Option<String>,
    /// The manifest pushed or deleted (for a tag: the one it named then).
    pub digest: String,
    pub created_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    /// Not to be run before (the backoff after a failed attempt).
    #[serde(default)]
    pub not_before_ms: u64,
    #[serde(default)]
    pub claim: Option<Claim>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Milliseconds since the epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This process's name in the claims it writes (random, drawn once; [`OWNER`] first where
/// the process owns its storage).
pub fn node_id() -> &'static str {
    static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let owner = if OWNS_STORAGE.load(Ordering::Acquire) {
            OWNER
        } else {
            ""
        };
        format!("{owner}{:016x}", random_u64())
    })
}

/// How the node id of a process that owns its storage begins.
const OWNER: &str = "owner-";

/// Whether this process alone may write its storage (see [`own_storage`]).
static OWNS_STORAGE: AtomicBool = AtomicBool::new(false);

/// Where one process at a time owns the storage (fs: the server holding the root's journal),
/// marks this process as its owner; call before [`node_id`] is first asked. The owner's node
/// id says so, and a claim by another owner is then one a process that is gone left (a
/// server killed mid-job): its job is free at once instead of when its lease ends, minutes
/// later. A claim by another process (an offline command's, on this root) keeps its lease;
/// on shared storage only the lease tells.
pub fn own_storage(store: &crate::storage::Backend) {
    if store.owned_by_this_process() {
        OWNS_STORAGE.store(true, Ordering::Release);
    }
}

impl Claim {
    /// Whether the claim still holds at `now_ms`: its lease has not ended, and it is not the
    /// claim of an owner of this storage before this process (see [`own_storage`]).
    pub fn live(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
            && !(OWNS_STORAGE.load(Ordering::Acquire)
                && self.node.starts_with(OWNER)
                && self.node != node_id())
    }
}

/// Random bits for ids, jitter and node names; the clock stands in without an OS RNG.
pub fn random_u64() -> u64 {
    let mut r = [0u8; 8];
    if getrandom::getrandom(&mut r).is_err() {
        return millis(SystemTime::now()).rotate_left(17) ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(r)
}

impl Job {
    pub fn new(kind: Kind, repository: &str, tag: Option<&str>, digest: &str, now_ms: u64) -> Job {
        Job {
            kind,
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.to_string(),
            created_ms: now_ms,
            attempts: 0,
            not_before_ms: 0,
            claim: None,
            last_error: None,
        }
    }

    /// A fresh id that sorts by creation time: listing a target's jobs lists the oldest first.
    pub fn new_id(&self) -> String {
        format!("{:016}-{:016x}", self.created_ms, random_u64())
    }

    /// The reference the job is about: its tag, else its digest.
    pub fn reference(&self) -> &str {
        self.tag.as_deref().unwrap_or(&self.digest)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Option<Job> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether a copy holds the job at `now_ms` (its claim is live, [`Claim::live`]): another
    /// node's, or one of this process (a `sync` copy in a request, a job of this worker).
    pub fn held(&self, now_ms: u64) -> bool {
        self.claim.as_ref().is_some_and(|c| c.live(now_ms))
    }
}

/// How long to wait before attempt `attempts + 1`: doubling from [`BACKOFF_FIRST`] up to
/// `max`, then a random point in its upper half (jitter, so jobs that failed together do
/// not all come back at once).
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let doubled = BACKOFF_FIRST.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let full = doubled.min(max);
    let half = full / 2;
    let spread = full.saturating_sub(half).as_millis() as u64;
    half + Duration::from_millis(random_u64() % spread.max(1))
}

/// The creation time encoded in a job id (its first field), for the queue's lag.
pub fn created_of_id(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}
