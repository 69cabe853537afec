//! The time the registry's rules read: GC grace periods and debris horizons, upload expiry,
//! retention's `now`, mirror eviction ages. A [`Clock`] is the system clock, optionally
//! shifted forward by an offset that tests move, so they can let hours pass in a call instead
//! of sleeping through them.
//!
//! Production always runs on the system clock: the shift exists only in builds with debug
//! assertions (the test profile; release builds, and so every image and release binary, do
//! not compile it), and only when [`TEST_CLOCK_FILE_ENV`] is set, which the server logs as a
//! warning at start. [`Clock::instant`] is the same shift on the monotonic clock, for ages
//! kept in memory (the manifest cache's TTL, the mirror's tag freshness). The HTTP layer's
//! deadlines (timeouts, keep-alive) and the waits of the storage protocols use their own
//! `Instant`s and are not moved.
//!
//! Times the storage records itself (file mtimes, S3 `LastModified`) stay real, so with the
//! clock shifted by `s`, whatever is written *after* a move looks `s` older than it is: tests
//! move the clock after writing what they want aged.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Test hook: names a file holding a whole number of seconds to shift the clock forward by
/// (read at every reading of the clock, so the test moves a running server and `origin gc`
/// alike). Ignored in release builds.
#[cfg(debug_assertions)]
pub const TEST_CLOCK_FILE_ENV: &str = "ORIGIN_TEST_CLOCK_FILE";

/// The registry's clock: the system clock, shifted forward only in tests. Cheap to clone.
#[derive(Clone, Default)]
pub struct Clock {
    /// None (always, in production): the system clock.
    shift: Option<Arc<Shift>>,
}

/// Where a test clock's offset comes from.
enum Shift {
    /// Moved in process by [`Clock::advance`] (unit tests), in seconds.
    #[cfg(test)]
    Manual(std::sync::atomic::AtomicU64),
    /// The content of a file, in seconds (integration tests, across processes).
    #[cfg(debug_assertions)]
    File(std::path::PathBuf),
}

impl Clock {
    /// The system clock, unshifted.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock, or (debug builds only) the test clock that [`TEST_CLOCK_FILE_ENV`]
    /// names, with a warning in the log.
    pub fn from_env() -> Clock {
        #[cfg(debug_assertions)]
        if let Some(path) = std::env::var_os(TEST_CLOCK_FILE_ENV) {
            let path = std::path::PathBuf::from(path);
            tracing::warn!(file = %path.display(), "test hook: the registry's clock is shifted by the seconds in this file");
            return Clock {
                shift: Some(Arc::new(Shift::File(path))),
            };
        }
        Clock::system()
    }

    /// A clock starting at the system time that [`Clock::advance`] moves (for unit tests).
    #[cfg(test)]
    pub fn manual() -> Clock {
        Clock {
            shift: Some(Arc::new(Shift::Manual(Default::default()))),
        }
    }

    /// Moves a [`Clock::manual`] clock (and its clones) forward; whole seconds count.
    #[cfg(test)]
    pub fn advance(&self, by: Duration) {
        if let Some(Shift::Manual(secs)) = self.shift.as_deref() {
            secs.fetch_add(by.as_secs(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// How far this clock is ahead of the system clock.
    fn offset(&self) -> Duration {
        match self.shift.as_deref() {
            None => Duration::ZERO,
            #[cfg(test)]
            Some(Shift::Manual(secs)) => {
                Duration::from_secs(secs.load(std::sync::atomic::Ordering::SeqCst))
            }
            // A missing or half-understood file is no shift: the harness replaces it by a
            // rename, so a reader sees the old offset or the new one, never a torn one.
            #[cfg(debug_assertions)]
            Some(Shift::File(path)) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map_or(Duration::ZERO, Duration::from_secs),
            // A release build has no test clock: `Shift` has no variant there.
            #[cfg(not(any(test, debug_assertions)))]
            Some(_) => Duration::ZERO,
        }
    }

    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// Now, in whole seconds since the Unix epoch.
    pub fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Now on the monotonic clock, shifted like [`Clock::now`]: for ages kept in memory (the
    /// manifest cache's TTL, the mirror's tag freshness and pull records).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// How long ago `t` was; zero for a time in the future.
    pub fn age(&self, t: SystemTime) -> Duration {
        self.now().duration_since(t).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_not_shifted() {
        let c = Clock::system();
        c.advance(Duration::from_secs(3600));
        assert!(c.age(SystemTime::now()) < Duration::from_secs(5));
    }

    #[test]
    fn manual_clock_moves_with_its_clones() {
        let c = Clock::manual();
        let other = c.clone();
        let then = c.now();
        c.advance(Duration::from_secs(3600));
        assert!(other.age(then) >= Duration::from_secs(3600));
        let earlier = std::time::Instant::now();
        assert!(c.instant().duration_since(earlier) >= Duration::from_secs(3600));
        assert!(other.unix_secs() >= 3600 + then.duration_since(UNIX_EPOCH).unwrap().as_secs());
    }

    #[cfg(debug_assertions)]
    #[test]
    fn file_clock_reads_the_file_at_each_call() {
        let path = std::env::temp_dir().join(format!("origin-clock-{}", std::process::id()));
        let c = Clock {
            shift: Some(Arc::new(Shift::File(path.clone()))),
        };
        let then = SystemTime::now();
        assert!(c.age(then) < Duration::from_secs(5), "no file: no shift");
        std::fs::write(&path, "7200\n").unwrap();
        assert!(c.age(then) >= Duration::from_secs(7200));
        std::fs::write(&path, "not a number").unwrap();
        assert!(c.age(then) < Duration::from_secs(5));
        let _ = std::fs::remove_file(&path);
    }
}
