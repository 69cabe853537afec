//! The free-space guard (`storage.fs.min_free_bytes`, `storage.fs.min_free_ratio`): below
//! either threshold, the operations that add data refuse (507), while reads, deletes, GC and
//! the operations that only add metadata to bytes already stored (a mount, the commit of an
//! upload whose bytes have arrived) carry on, so space can be freed without a restart.
//!
//! The filesystem is sampled (`statvfs`, through `Backend::free_space`) at most once per
//! [`SPACE_SAMPLE_INTERVAL`] per process, by whichever worker asks first; the others use the
//! last sample. Thresholds come from the reloadable set, so a reload applies at once to the
//! last sample. Each crossing (low, then enough again) is logged once and shows in
//! `origin_storage_space_low`. Object storage has no such guard: its space is the
//! provider's to manage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::metrics::{Metrics, METRICS};
use crate::storage::Backend;
use crate::sys::FsSpace;

/// The filesystem is sampled at most this often: a statvfs per write request would cost
/// little, but a second is as fresh as a guard that keeps a margin needs to be.
pub const SPACE_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// The configured thresholds; both zero is off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Thresholds {
    pub min_free_bytes: u64,
    pub min_free_ratio: f64,
}

impl Thresholds {
    /// From `[storage.fs]`; off on object storage.
    pub fn of(config: &crate::config::Config) -> Thresholds {
        match &config.storage.fs {
            Some(fs) if config.storage.s3.is_none() => Thresholds {
                min_free_bytes: fs.min_free_bytes,
                min_free_ratio: fs.min_free_ratio,
            },
            _ => Thresholds::default(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.min_free_bytes == 0 && self.min_free_ratio <= 0.0
    }

    /// Why `space` is below a threshold, or `None` when it is not.
    fn shortfall(&self, space: FsSpace) -> Option<String> {
        let free = space.available_bytes;
        if free < self.min_free_bytes {
            return Some(format!(
                "{} free, below storage.fs.min_free_bytes = {}",
                bytes(free),
                bytes(self.min_free_bytes)
            ));
        }
        let ratio = match space.total_bytes {
            0 => 0.0,
            total => free as f64 / total as f64,
        };
        if self.min_free_ratio > 0.0 && ratio < self.min_free_ratio {
            return Some(format!(
                "{} free ({:.1} %), below storage.fs.min_free_ratio = {}",
                bytes(free),
                ratio * 100.0,
                self.min_free_ratio
            ));
        }
        None
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// The last sample and whether it was below the thresholds, shared by the workers.
pub struct SpaceGuard {
    epoch: Instant,
    /// When the last sample was taken, in milliseconds since `epoch`, plus one (0: never).
    sampled_at_ms: AtomicU64,
    available_bytes: AtomicU64,
    total_bytes: AtomicU64,
    /// Below a threshold at the last check (for logging each crossing once).
    low: AtomicBool,
}

impl Default for SpaceGuard {
    fn default() -> Self {
        SpaceGuard {
            epoch: Instant::now(),
            sampled_at_ms: AtomicU64::new(0),
            available_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            low: AtomicBool::new(false),
        }
    }
}

impl SpaceGuard {
    /// Why writes that add data are refused now, or `None`: the last sample (taken again
    /// when older than [`SPACE_SAMPLE_INTERVAL`]) against `t`.
    pub fn shortfall(&self, store: &Backend, t: Thresholds) -> Option<String> {
        if t.is_off() {
            self.crossed(None);
            return None;
        }
        let space = self.sample(store)?;
        let why = t.shortfall(space);
        self.crossed(why.as_deref());
        why
    }

    /// The filesystem's space, sampled again when the last sample is old; `None` without a
    /// filesystem, or when it cannot be read (logged: the writes then fail by themselves).
    fn sample(&self, store: &Backend) -> Option<FsSpace> {
        let now_ms = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.sampled_at_ms.load(Relaxed);
        let stale =
            last == 0 || now_ms.saturating_sub(last) >= SPACE_SAMPLE_INTERVAL.as_millis() as u64;
        // One worker samples; the others go on with the last sample meanwhile.
        if stale
            && self
                .sampled_at_ms
                .compare_exchange(last, now_ms, Relaxed, Relaxed)
                .is_ok()
        {
            match store.free_space()? {
                Ok(s) => {
                    self.available_bytes.store(s.available_bytes, Relaxed);
                    self.total_bytes.store(s.total_bytes, Relaxed);
                    METRICS.storage_free_bytes.store(s.available_bytes, Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "free-space guard: cannot read the filesystem's free space");
                    self.sampled_at_ms.store(0, Relaxed);
                    return None;
                }
            }
        } else if last == 0 {
            // Another worker is taking the first sample.
            return None;
        }
        Some(FsSpace {
            available_bytes: self.available_bytes.load(Relaxed),
            total_bytes: self.total_bytes.load(Relaxed),
        })
    }

    /// Logs and counts a crossing of the thresholds, once per crossing.
    fn crossed(&self, why: Option<&str>) {
        let low = why.is_some();
        if self.low.load(Relaxed) == low || self.low.swap(low, Relaxed) == low {
            return;
        }
        METRICS.storage_space_low.store(u64::from(low), Relaxed);
        match why {
            Some(why) => tracing::error!(
                "free-space guard: storage is low on space ({why}); writes that add data are \
                 refused with 507 until space is freed (reads, deletes and GC go on)"
            ),
            None => tracing::warn!(
                "free-space guard: storage has enough free space again; writes are accepted"
            ),
        }
    }
}

/// Refuses an operation that adds data when storage is below its free-space thresholds.
/// The one check of every such operation (`service::uploads`, `service::manifests::put`).
pub fn ensure(svc: &super::Service) -> Result<()> {
    let thresholds = svc.live.peek(|l| l.space);
    match svc.space.shortfall(&svc.registry.store, thresholds) {
        None => Ok(()),
        Some(why) => {
            Metrics::add(&METRICS.storage_space_refusals, 1);
            Err(Error::InsufficientStorage(format!(
                "the registry's storage is low on free space ({why}); pushes are refused until \
                 space is freed, pulls and deletes still work"
            )))
        }
    }
}

/// What `/readyz` adds to its answer: why writes are refused now, if they are.
pub fn readiness_note(svc: &super::Service) -> Option<String> {
    let thresholds = svc.live.peek(|l| l.space);
    svc.space.shortfall(&svc.registry.store, thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(available_bytes: u64, total_bytes: u64) -> FsSpace {
        FsSpace {
            available_bytes,
            total_bytes,
        }
    }

    /// Either threshold alone makes storage low; zero is off; the message names the key.
    #[test]
    fn thresholds_by_bytes_and_by_ratio() {
        let off = Thresholds::default();
        assert!(off.is_off());
        assert_eq!(off.shortfall(space(0, 100)), None);
        let by_bytes = Thresholds {
            min_free_bytes: 1000,
            min_free_ratio: 0.0,
        };
        assert!(by_bytes
            .shortfall(space(999, 1 << 40))
            .unwrap()
            .contains("min_free_bytes"));
        assert_eq!(by_bytes.shortfall(space(1000, 1 << 40)), None);
        let by_ratio = Thresholds {
            min_free_bytes: 0,
            min_free_ratio: 0.1,
        };
        assert!(by_ratio
            .shortfall(space(9, 100))
            .unwrap()
            .contains("min_free_ratio"));
        assert_eq!(by_ratio.shortfall(space(10, 100)), None);
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
