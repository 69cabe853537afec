//! Sizes of stored blobs, remembered per worker, so a blob HEAD or GET answered through a
//! repository link costs one stat (the link) instead of two.
//!
//! Why this is sound: a digest names its content, so a blob's size never changes while it
//! exists, and the cache is consulted only after the repository's link was found, which is
//! what a HEAD checks (GC and scrub remove a blob's links before its data; see gc.rs). What
//! could still go stale is existence, for a reader that found a link just before it went:
//! - a deletion in this process bumps [`DELETIONS`], and every worker's cache drops all its
//!   entries at its next lookup (passes that delete are rare: a bump per deleted blob);
//! - a deletion by another process (`origin gc` or `origin scrub --repair` next to a live
//!   server) is bounded by [`ENTRY_TTL`], as the manifest cache is.
//!
//! One per worker (no lock on the request path), bounded by [`ENTRIES_MAX`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::oci::Digest;

/// Entries per worker: a digest key and a size, about 120 bytes each with the map's
/// overhead, so about 1 MiB per worker at most. Full, the cache starts over (a miss costs
/// one stat).
const ENTRIES_MAX: usize = 8192;
/// An entry older than this is read again (deletions by another process).
const ENTRY_TTL: Duration = Duration::from_secs(10);

/// Blob deletions by this process; a cache that saw a different count starts over.
static DELETIONS: AtomicU64 = AtomicU64::new(0);

/// Called before a blob's content is deleted (and harmless if the delete then fails).
pub fn note_deleted() {
    DELETIONS.fetch_add(1, Ordering::AcqRel);
}

#[derive(Default)]
pub struct BlobSizes {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    deletions: u64,
    map: HashMap<Box<str>, (u64, Instant)>,
}

impl BlobSizes {
    pub fn get(&self, digest: &Digest) -> Option<u64> {
        let mut inner = self.inner.borrow_mut();
        let deletions = DELETIONS.load(Ordering::Acquire);
        if inner.deletions != deletions {
            inner.map.clear();
            inner.deletions = deletions;
            return None;
        }
        let &(size, at) = inner.map.get(digest.as_str())?;
        (at.elapsed() < ENTRY_TTL).then_some(size)
    }

    /// Records a size read from storage. `seen` is the deletion count taken *before* the
    /// read: a deletion that raced with the read makes the insert a no-op.
    pub fn insert(&self, seen: u64, digest: &Digest, size: u64) {
        let mut inner = self.inner.borrow_mut();
        if seen != DELETIONS.load(Ordering::Acquire) || inner.deletions != seen {
            return;
        }
        if inner.map.len() >= ENTRIES_MAX {
            inner.map.clear();
        }
        inner
            .map
            .insert(digest.as_str().into(), (size, Instant::now()));
    }

    /// The deletion count to pass to [`insert`](Self::insert) after reading storage.
    pub fn seen(&self) -> u64 {
        DELETIONS.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn a_deletion_empties_every_cache_and_voids_a_racing_insert() {
        let (a, b) = (BlobSizes::default(), BlobSizes::default());
        let d = Digest::of(Algorithm::Sha256, b"blob");
        // Other tests in this process delete blobs (the count is process-wide), and any
        // deletion between `seen` and `insert` rightly voids the insert: retry until one lands.
        let settle = |c: &BlobSizes| {
            for _ in 0..10_000 {
                c.insert(c.seen(), &d, 4);
                if c.get(&d) == Some(4) {
                    return;
                }
            }
            panic!("an insert never landed between two deletions");
        };
        settle(&a);
        // A read started before a deletion must not fill the cache after it.
        let before = b.seen();
        note_deleted();
        b.insert(before, &d, 4);
        assert_eq!(b.get(&d), None);
        assert_eq!(
            a.get(&d),
            None,
            "a deletion in another worker empties this one"
        );
        settle(&a);
    }

    #[test]
    fn bounded() {
        let c = BlobSizes::default();
        let seen = c.seen();
        for i in 0..(ENTRIES_MAX + 10) {
            let d = Digest::of(Algorithm::Sha256, &i.to_le_bytes());
            c.insert(seen, &d, i as u64);
        }
        assert!(c.inner.borrow().map.len() <= ENTRIES_MAX);
    }
}
