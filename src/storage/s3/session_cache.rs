//! The states of upload sessions this process wrote last, so the next request of a session
//! that comes back here needs no GET of the session object.
//!
//! An accelerator only: the session object in the bucket stays the truth. An entry is the
//! state and ETag this process last wrote (or read); a writer opened from it is *unverified*
//! (`S3Upload::is_unverified`), and its first write is conditional on that ETag anyway
//! (`If-Match`), so a stale entry (another node continued the session since) can never
//! overwrite anyone: the save fails, the entry is dropped, and the caller reads the session
//! and goes on (see `registry/uploads.rs`). Committing from an entry copies the staged parts
//! it names; they are immutable (unique keys), so the blob is exactly the bytes the caller
//! hashed, whatever happened to the session since.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::upload::UploadState;
use crate::storage::Etag;

/// Sessions remembered per process: more than the uploads one node has in flight (a few
/// hundred connections per worker), each entry a few hundred bytes; past it the expired
/// entries go, then all (the next request of each session reads it: what it cost before).
const SESSIONS_CACHED_MAX: usize = 4096;
/// A session whose state is larger than this is not remembered (many staged parts): with
/// `SESSIONS_CACHED_MAX` it bounds the table at 64 MiB, and such a session's next request
/// moves megabytes anyway, next to which one GET is nothing.
const CACHED_STATE_BYTES_MAX: usize = 16 * 1024;
/// An entry older than this is not used: a session idle for long has probably moved on or
/// expired. Correctness does not depend on it (the conditional save decides), only how
/// long a dead entry may hold memory.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(15 * 60);

struct Entry {
    state: UploadState,
    etag: Etag,
    at: Instant,
}

#[derive(Default)]
pub(super) struct SessionCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl SessionCache {
    /// The state and ETag last written or read for the session at bucket key `full`.
    pub(super) fn get(&self, full: &str) -> Option<(UploadState, Etag)> {
        let m = self.entries.lock().ok()?;
        let e = m.get(full)?;
        if e.at.elapsed() >= SESSION_CACHE_TTL {
            return None;
        }
        Some((e.state.clone(), e.etag.clone()))
    }

    /// Remembers what is now stored at `full` (`state_bytes`: its serialised size).
    pub(super) fn put(&self, full: &str, state: &UploadState, etag: &Etag, state_bytes: usize) {
        let Ok(mut m) = self.entries.lock() else {
            return;
        };
        if state_bytes > CACHED_STATE_BYTES_MAX {
            m.remove(full);
            return;
        }
        if m.len() >= SESSIONS_CACHED_MAX && !m.contains_key(full) {
            m.retain(|_, e| e.at.elapsed() < SESSION_CACHE_TTL);
            if m.len() >= SESSIONS_CACHED_MAX {
                m.clear();
            }
        }
        m.insert(
            full.to_string(),
            Entry {
                state: state.clone(),
                etag: etag.clone(),
                at: Instant::now(),
            },
        );
    }

    /// Forgets a session (removed, or found changed by another writer).
    pub(super) fn forget(&self, full: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(full);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_forgetting() {
        let c = SessionCache::default();
        let etag = Etag::new("\"e\"".into());
        let state = UploadState::default();
        for i in 0..SESSIONS_CACHED_MAX + 10 {
            c.put(&format!("k{i}"), &state, &etag, 10);
            assert!(c.len() <= SESSIONS_CACHED_MAX);
        }
        c.put("big", &state, &etag, CACHED_STATE_BYTES_MAX + 1);
        assert!(c.get("big").is_none(), "too large to remember");
        c.put("x", &state, &etag, 10);
        assert_eq!(c.get("x").map(|(_, e)| e), Some(etag));
        c.forget("x");
        assert!(c.get("x").is_none());
    }
}
