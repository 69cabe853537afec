//! A bounded, process-wide cache of manifests by (repository, reference), shared by every
//! core and coherent with writes in this process.
//!
//! Coherence without holding a lock across storage reads: every write bumps a generation
//! counter and then invalidates its keys; a reader notes the generation before reading
//! storage and inserts only if it has not moved. An insert either lands before the
//! invalidation (which then removes it) or sees the bumped generation (and is skipped).
//! Writes by another process (`origin gc` or `origin scrub --retention` beside a live
//! registry) or by another node on the same bucket are not seen here: an entry is served for
//! at most `server.manifest_cache_ttl` after it was read from storage, then read again. That
//! is the bound on how long a manifest deleted elsewhere can still be served by this node.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::oci::Digest;

/// Manifests larger than this are not cached (indexes of thousands of children).
const ENTRY_BYTES_MAX: usize = 256 * 1024;

#[derive(Clone)]
pub struct Cached {
    pub digest: Digest,
    pub media_type: Arc<str>,
    pub bytes: Arc<Vec<u8>>,
    at: Instant,
}

struct Inner {
    map: HashMap<String, Cached>,
    /// Insertion order, for FIFO eviction.
    order: VecDeque<String>,
    bytes: usize,
}

pub struct ManifestCache {
    generation: AtomicU64,
    bytes_max: usize,
    /// Entries older than this are read from storage again (writes by other processes and
    /// other nodes).
    ttl: Duration,
    inner: Mutex<Inner>,
    /// What the TTL is measured on.
    clock: crate::clock::Clock,
}

fn key(repo: &str, reference: &str) -> String {
    format!("{repo}@{reference}")
}

impl ManifestCache {
    pub fn new(bytes_max: usize, ttl: Duration) -> Self {
        ManifestCache {
            generation: AtomicU64::new(0),
            bytes_max,
            ttl,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            clock: crate::clock::Clock::system(),
        }
    }

    /// Measures the TTL on `clock` (the system clock unless a test moves it).
    pub fn with_clock(mut self, clock: crate::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The generation to pass to [`insert`] after reading storage.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, repo: &str, reference: &str) -> Option<Cached> {
        if self.bytes_max == 0 {
            return None;
        }
        let inner = self.lock();
        let hit = inner.map.get(&key(repo, reference))?;
        let age = self.clock.instant().saturating_duration_since(hit.at);
        (age < self.ttl).then(|| hit.clone())
    }

    pub fn insert(
        &self,
        generation: u64,
        repo: &str,
        reference: &str,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) {
        if self.bytes_max == 0 || bytes.len() > ENTRY_BYTES_MAX {
            return;
        }
        let mut inner = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        let k = key(repo, reference);
        let entry = Cached {
            digest: digest.clone(),
            media_type: media_type.into(),
            bytes: Arc::new(bytes.to_vec()),
            at: self.clock.instant(),
        };
        let size = k.len() + bytes.len();
        if let Some(old) = inner.map.insert(k.clone(), entry) {
            inner.bytes -= k.len() + old.bytes.len();
        } else {
            inner.order.push_back(k);
        }
        inner.bytes += size;
        while inner.bytes > self.bytes_max {
            let Some(victim) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.map.remove(&victim) {
                inner.bytes -= victim.len() + old.bytes.len();
            }
        }
    }

    /// Called after a write to storage, before the write is acknowledged.
    pub fn invalidate(&self, repo: &str, references: &[&str]) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut inner = self.lock();
        for r in references {
            if let Some(old) = inner.map.remove(&key(repo, r)) {
                let k = key(repo, r);
                inner.bytes -= k.len() + old.bytes.len();
                inner.order.retain(|o| o != &k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn insert_after_a_concurrent_write_is_skipped() {
        let c = ManifestCache::new(1 << 20, Duration::from_secs(60));
        let d = Digest::of(Algorithm::Sha256, b"m");
        let g = c.generation();
        c.invalidate("r", &["v1"]); // a write lands while the reader reads storage
        c.insert(g, "r", "v1", &d, "t", b"old");
        assert!(c.get("r", "v1").is_none());
        let g = c.generation();
        c.insert(g, "r", "v1", &d, "t", b"new");
        assert_eq!(&**c.get("r", "v1").unwrap().bytes, b"new");
        c.invalidate("r", &["v1"]);
        assert!(c.get("r", "v1").is_none());
    }

    /// An entry is served for the TTL after it was read, then no more (what another process
    /// or node deleted meanwhile is read again from storage).
    #[test]
    fn entries_expire_after_the_ttl() {
        let clock = crate::clock::Clock::manual();
        let c = ManifestCache::new(1 << 20, Duration::from_secs(60)).with_clock(clock.clone());
        let d = Digest::of(Algorithm::Sha256, b"m");
        c.insert(c.generation(), "r", "v1", &d, "t", b"m");
        clock.advance(Duration::from_secs(59));
        assert!(c.get("r", "v1").is_some());
        clock.advance(Duration::from_secs(2));
        assert!(c.get("r", "v1").is_none());
    }

    #[test]
    fn bounded_by_bytes() {
        let c = ManifestCache::new(10_000, Duration::from_secs(60));
        let d = Digest::of(Algorithm::Sha256, b"m");
        for i in 0..100 {
            let g = c.generation();
            c.insert(g, "r", &format!("t{i}"), &d, "t", &[0u8; 1000]);
        }
        let inner = c.lock();
        assert!(inner.bytes <= 10_000);
        assert!(inner.map.len() < 10 && !inner.map.is_empty());
        assert_eq!(inner.map.len(), inner.order.len());
    }
}
