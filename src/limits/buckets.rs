//! Token buckets by key, in a bounded map shared by the workers of a node.
//!
//! Keys are 64-bit hashes (a randomly keyed SipHash of the entry, the group and the caller),
//! so a lookup allocates nothing and a client cannot aim two callers at one bucket. The map
//! is split in [`SHARDS`] shards, each behind its own mutex (held for a hash lookup and a
//! few arithmetic operations), so workers rarely meet on one. Each shard keeps two
//! generations: a key is looked up in the current one, then in the previous one (and moved
//! over); when the current one is full it becomes the previous one and the old previous one
//! is dropped. Memory is bounded by [`KEYS_MAX`], and a key is forgotten only after a whole
//! generation passed without it: an LRU's behaviour without its list. A forgotten bucket
//! comes back full, which is what an idle key's bucket would hold anyway.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys (callers x entries x groups) a node keeps buckets for. 64k buckets of 16 bytes plus
/// map overhead: a few MiB at most, however many addresses a flood comes from.
pub const KEYS_MAX: usize = 64 * 1024;

/// Shards of the map: more than the cores of any machine this runs on, so that two workers
/// rarely want the same lock.
pub const SHARDS: usize = 16;

/// Keys of one generation of one shard (two generations per shard).
const GENERATION_KEYS_MAX: usize = KEYS_MAX / SHARDS / 2;

/// The keys are hashes already: the map uses them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map = HashMap<u64, Bucket, BuildHasherDefault<PassThrough>>;

/// A bucket's level (in requests or bytes; negative: a debt of paced bytes) and when it was
/// last filled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_second: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
    }
}

#[derive(Default)]
struct Shard {
    current: Map,
    previous: Map,
}

impl Shard {
    /// The bucket of `key`, created full (`burst`) when the map does not know it.
    fn bucket(&mut self, key: u64, now: Instant, burst: f64) -> &mut Bucket {
        if !self.current.contains_key(&key) {
            let kept = self.previous.remove(&key);
            if self.current.len() >= GENERATION_KEYS_MAX {
                self.previous = std::mem::take(&mut self.current);
            }
            let bucket = kept.unwrap_or(Bucket {
                tokens: burst,
                at: now,
            });
            self.current.insert(key, bucket);
        }
        // Present: found or inserted just above.
        self.current.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// A wait in seconds as a duration, saturating (a wait too long to represent is a day: far
/// beyond any Retry-After a client honours, and beyond the pacer's bound).
fn wait(secs: f64) -> Duration {
    const WAIT_MAX: Duration = Duration::from_secs(24 * 3600);
    Duration::try_from_secs_f64(secs).map_or(WAIT_MAX, |d| d.min(WAIT_MAX))
}

/// The buckets of a node.
pub struct Buckets {
    keys: std::collections::hash_map::RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl std::fmt::Debug for Buckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Buckets")
    }
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            keys: std::collections::hash_map::RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
        }
    }
}

impl Buckets {
    /// The key of anything hashable (entry, group, caller).
    pub fn key(&self, parts: impl std::hash::Hash) -> u64 {
        self.keys.hash_one(parts)
    }

    fn with<R>(&self, key: u64, f: impl FnOnce(&mut Shard) -> R) -> R {
        // Bits the map itself does not use (its index takes the low bits, its tags the top
        // ones), so that keys within a shard still spread over the whole table.
        let shard = &self.shards[(key >> 32) as usize % SHARDS];
        f(&mut shard.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes one token from `key`'s bucket; over the limit, how long until one is there.
    pub fn take(&self, key: u64, per_second: f64, burst: f64) -> Result<(), Duration> {
        let now = Instant::now();
        self.with(key, |shard| {
            let b = shard.bucket(key, now, burst);
            b.refill(now, per_second, burst);
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(wait((1.0 - b.tokens) / per_second))
            }
        })
    }

    /// Reserves `amount` from `key`'s bucket, running into debt if need be: how long to
    /// wait before using it so that the bucket's rate holds.
    pub fn reserve(&self, key: u64, per_second: f64, burst: f64, amount: f64) -> Duration {
        let now = Instant::now();
        self.with(key, |shard| {
            let b = shard.bucket(key, now, burst);
            b.refill(now, per_second, burst);
            b.tokens -= amount;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                wait(-b.tokens / per_second)
            }
        })
    }

    /// Keys held now, over all shards.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket admits its burst at once, then refuses with the time until the next token.
    #[test]
    fn a_bucket_admits_its_burst_then_refuses_with_the_wait() {
        let b = Buckets::default();
        let k = b.key("a");
        for _ in 0..5 {
            assert_eq!(b.take(k, 1.0, 5.0), Ok(()));
        }
        let wait = b.take(k, 1.0, 5.0).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another key has its own bucket.
        assert_eq!(b.take(b.key("b"), 1.0, 5.0), Ok(()));
    }

    /// A wait too long to represent saturates instead of panicking.
    #[test]
    fn waits_saturate() {
        assert_eq!(wait(1e300), Duration::from_secs(24 * 3600));
        assert_eq!(wait(f64::NAN), Duration::from_secs(24 * 3600));
        assert_eq!(wait(0.5), Duration::from_millis(500));
    }

    /// Reservations run into debt, and the wait grows with it at the bucket's rate.
    #[test]
    fn reservations_pace_at_the_rate() {
        let b = Buckets::default();
        let k = b.key("bytes");
        assert_eq!(b.reserve(k, 1000.0, 100.0, 100.0), Duration::ZERO);
        let wait = b.reserve(k, 1000.0, 100.0, 500.0);
        assert!(
            wait > Duration::from_millis(490) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        let wait = b.reserve(k, 1000.0, 100.0, 500.0);
        assert!(wait > Duration::from_millis(990), "{wait:?}");
    }

    /// However many keys come, the map holds at most KEYS_MAX; a key in use survives the
    /// turnover of generations.
    #[test]
    fn the_map_is_bounded_and_keeps_keys_in_use() {
        let b = Buckets::default();
        let kept = b.key("in use");
        b.take(kept, 1.0, 3.0).unwrap();
        b.take(kept, 1.0, 3.0).unwrap();
        for i in 0..(KEYS_MAX * 4) as u64 {
            b.take(b.key(i), 1.0, 1.0).unwrap();
            if i % 1000 == 0 {
                // Used within every generation: never forgotten (and never refilled to 3).
                let _ = b.take(kept, 0.000_001, 3.0);
            }
        }
        assert!(b.len() <= KEYS_MAX, "{}", b.len());
        assert!(b.take(kept, 0.000_001, 3.0).is_err());
    }
}
