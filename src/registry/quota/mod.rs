//! Quotas per namespace: `quota_bytes` and `quota_manifests` of a `[[repository]]` entry.
//!
//! A namespace's usage is the total size of the distinct blobs and manifests its repositories
//! hold, each digest counted once however many of its repositories link it (and once in each
//! namespace that holds it). It lives in storage, so every node and every restart sees the
//! same figure, kept with conditional writes only (no lock service):
//! - `quota/usage/<ns>` (one small object per namespace, replaced with `If-Match`): the bytes
//!   and manifests counted, and the *reservations* of the writes in flight (id, digest, size,
//!   when), at most [`PENDING_MAX`];
//! - `quota/held/<digest>/<ns>` (a marker per digest per namespace, created with
//!   `If-None-Match: *`): the namespace counts this digest. Its body names the reservation
//!   that created it.
//!
//! A write that adds content to a repository of a namespace with a quota (a blob commit, a
//! mount, a manifest PUT) goes, after it holds the digest against GC and before it commits:
//! 1. marker there: counted already (a re-push, a mount of a counted blob): no write at all;
//! 2. reserve: read the usage, refuse if counted + reserved + size is over the quota,
//!    else add a reservation, with `If-Match` (a lost race reads again);
//! 3. create the marker, naming the reservation (of two writers of one digest, one creates
//!    it: the other's reservation is given back at settle);
//! 4. commit and link (the caller);
//! 5. settle: remove the reservation and, if this write created the marker, add its size to
//!    the counted bytes, with `If-Match`. A write that failed after 3 leaves its marker,
//!    counted, and GC gives it back with the content it left.
//!
//! Every check is against counted + reserved under one conditional write, so concurrent
//! writers on any number of nodes never take a namespace past its quota: the overshoot is
//! zero (`tests/quota.rs`). A digest counted by two writers at once is reserved twice until
//! one settles: a write near the limit may be refused for a moment, never let through.
//!
//! Crashes: a reservation older than `gc.debris_after` (no request runs that long, the same
//! rule GC uses for a manifest PUT's edges) belongs to a dead write and is *expired*: if its
//! marker exists and names it, its size is counted (the write may have committed), else it
//! is dropped. Expiry runs in each GC pass and in any reservation that finds one. A crash
//! between steps leaves a reservation (counted until expired: never under-counted) or an
//! uncounted marker with its reservation (counted at expiry).
//!
//! Giving back: GC, when it removes a blob or manifest (under its tombstone, when no writer
//! can link the digest), removes its markers and subtracts their sizes (`release`). A
//! marker whose reservation is still in flight takes the reservation with it, and the
//! write's settle then adds nothing.
//!
//! `origin scrub` recomputes every quota's usage from the links themselves and reports the
//! drift (`scrub.rs`); with `--repair` it rewrites markers and usage to match. Which quota
//! meters a repository is `rules.rs`.

mod rules;
pub mod scrub;

use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use rules::{Quota, Quotas};

use super::listing::KeyPages;
use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::Digest;
use crate::storage::{Etag, PutCondition, PutOutcome, Storage};

/// Reservations in flight per namespace, across every node: past it a write waits for a
/// retry (429), so the usage object stays small (~150 bytes a reservation).
pub const PENDING_MAX: usize = 1024;
/// Conditional writes of one usage update tried before giving up (503, try again).
const CAS_ATTEMPTS_MAX: usize = 200;
/// Pause between two attempts, doubled from this up to [`CAS_BACKOFF_MAX`], with jitter.
const CAS_BACKOFF: Duration = Duration::from_millis(2);
const CAS_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// How long a client whose write lost too many races waits before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A namespace's usage record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes counted: the sizes of the namespace's markers whose writes settled.
    pub bytes: u64,
    /// Manifests counted, the same way.
    pub manifests: u64,
    /// Reservations of writes in flight.
    #[serde(default)]
    pub pending: Vec<Pending>,
}

/// A write in flight: counted against the quota until it settles or expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub manifest: bool,
    /// When reserved (unix seconds, the registry's clock).
    pub at: u64,
}

impl Usage {
    /// Bytes and manifests counted, with what is reserved.
    pub fn with_pending(&self) -> (u64, u64) {
        let bytes = self.pending.iter().map(|p| p.size).sum::<u64>();
        let manifests = self.pending.iter().filter(|p| p.manifest).count() as u64;
        (
            self.bytes.saturating_add(bytes),
            self.manifests.saturating_add(manifests),
        )
    }
}

/// A marker's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    size: u64,
    #[serde(default)]
    manifest: bool,
    /// The reservation that created it (`scrub` for markers written by a repair).
    rid: String,
}

/// A write's reservation, to settle once the write is done (whatever came of it).
#[derive(Debug)]
pub struct Reservation {
    /// What it reserves for.
    pub digest: Digest,
    namespace: String,
    id: String,
    /// The write created the marker: its size is counted at settle.
    mine: bool,
}

/// One line of `origin usage`.
pub struct UsageRow {
    pub namespace: String,
    pub usage: Usage,
    pub quota_bytes: Option<u64>,
    pub quota_manifests: Option<u64>,
}

/// A settle that took the counted bytes or manifests across the warning ratio.
#[derive(Debug, Clone)]
pub struct Crossing {
    pub bytes: u64,
    pub manifests: u64,
}

fn random_id() -> String {
    let mut id = [0u8; 8];
    // Without randomness the time and a counter would still be unique enough per process;
    // ids only need to differ between the writes in flight of one namespace.
    if getrandom::getrandom(&mut id).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) ^ std::process::id() as u64;
        id = n.to_le_bytes();
    }
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The refusal of a write that would take `q` over its quota.
fn exceeded(q: &Quota, what: &str, used: u64, limit: u64, adding: u64) -> Error {
    Error::QuotaExceeded(format!(
        "quota exceeded in namespace {}: {what} {used} of {limit} used, this push adds {adding}",
        q.label()
    ))
}

fn lost_races(ns: &str) -> Error {
    Error::Unavailable {
        message: format!("the usage of namespace {ns:?} is changing too fast; try again"),
        retry_after: RETRY_AFTER,
    }
}

/// Backoff between conditional-write attempts: a little jitter so racing writers spread.
async fn backoff(attempt: usize) {
    let base = CAS_BACKOFF
        .saturating_mul(1 << attempt.min(6))
        .min(CAS_BACKOFF_MAX);
    let mut jitter = [0u8; 1];
    let _ = getrandom::getrandom(&mut jitter);
    let extra = base.mul_f64(f64::from(jitter[0]) / 255.0);
    compio::time::sleep(base + extra).await;
}

impl Registry {
    /// The usage record of `ns` and its version (None: never written, usage zero).
    pub async fn quota_usage(&self, ns: &str) -> Result<(Usage, Option<Etag>)> {
        let Some(obj) = self.store.get(&layout::quota_usage(ns)).await? else {
            return Ok((Usage::default(), None));
        };
        let usage: Usage = serde_json::from_slice(&obj.bytes)
            .map_err(|e| Error::internal(format!("quota usage of {ns:?}: {e}")))?;
        crate::metrics::QUOTA_USAGE.set(ns, usage.bytes, usage.manifests);
        Ok((usage, Some(obj.etag)))
    }

    /// Replaces the usage record if it is still at `etag` (created if `None`); false when
    /// another writer changed it first.
    pub(super) async fn quota_write(
        &self,
        ns: &str,
        usage: &Usage,
        etag: Option<Etag>,
    ) -> Result<bool> {
        let bytes = serde_json::to_vec(usage).map_err(Error::internal)?;
        let cond = match etag {
            Some(e) => PutCondition::IfMatch(e),
            None => PutCondition::IfAbsent,
        };
        let written = self
            .store
            .put(&layout::quota_usage(ns), bytes, cond)
            .await?;
        let written = matches!(written, PutOutcome::Written(_));
        if written {
            crate::metrics::QUOTA_USAGE.set(ns, usage.bytes, usage.manifests);
        }
        Ok(written)
    }

    async fn quota_marker(&self, d: &Digest, ns: &str) -> Result<Option<Marker>> {
        let Some(obj) = self.store.get(&layout::quota_held(d, ns)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&obj.bytes).ok())
    }

    /// Expires the reservations of `usage` older than `gc.debris_after` (module docs): a
    /// reservation whose marker names it is counted, the others dropped. True if any was.
    async fn quota_expire_in(&self, ns: &str, usage: &mut Usage) -> Result<bool> {
        let now = self.clock.unix_secs();
        let limit = self.settings.debris_after.as_secs();
        if !usage
            .pending
            .iter()
            .any(|p| now.saturating_sub(p.at) >= limit)
        {
            return Ok(false);
        }
        let (stale, live): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut usage.pending)
            .into_iter()
            .partition(|p| now.saturating_sub(p.at) >= limit);
        usage.pending = live;
        for p in stale {
            let Ok(d) = Digest::parse(&p.digest) else {
                continue;
            };
            if self
                .quota_marker(&d, ns)
                .await?
                .is_some_and(|m| m.rid == p.id)
            {
                usage.bytes = usage.bytes.saturating_add(p.size);
                usage.manifests += u64::from(p.manifest);
            }
            tracing::info!(namespace = ns, digest = %d, "expired the quota reservation of a write that never settled");
        }
        Ok(true)
    }

    /// Expires what is stale in `ns`'s usage (a GC pass calls this for each quota).
    pub async fn quota_expire(&self, ns: &str) -> Result<()> {
        for attempt in 0..CAS_ATTEMPTS_MAX {
            let (mut usage, etag) = self.quota_usage(ns).await?;
            if etag.is_none() || !self.quota_expire_in(ns, &mut usage).await? {
                return Ok(());
            }
            if self.quota_write(ns, &usage, etag).await? {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(lost_races(ns))
    }

    /// Steps 1 to 3 of a write under quota `q` (module docs): None when the namespace counts
    /// `d` already; else the reservation to settle after the write. Refused with
    /// `QuotaExceeded` when `size` (and one manifest, for a manifest) does not fit.
    pub async fn quota_reserve(
        &self,
        q: &Quota,
        d: &Digest,
        size: u64,
        manifest: bool,
    ) -> Result<Option<Reservation>> {
        let ns = q.namespace.as_str();
        let marker_key = layout::quota_held(d, ns);
        if self.store.head(&marker_key).await?.is_some() {
            return Ok(None);
        }
        let id = random_id();
        let mut reserved = false;
        for attempt in 0..CAS_ATTEMPTS_MAX {
            let (mut usage, etag) = self.quota_usage(ns).await?;
            self.quota_expire_in(ns, &mut usage).await?;
            let (bytes, manifests) = usage.with_pending();
            let refusal = match (q.bytes, q.manifests) {
                (Some(limit), _) if bytes.saturating_add(size) > limit => {
                    Some(exceeded(q, "bytes", bytes, limit, size))
                }
                (_, Some(limit)) if manifest && manifests + 1 > limit => {
                    Some(exceeded(q, "manifests", manifests, limit, 1))
                }
                _ => None,
            };
            if let Some(refusal) = refusal {
                // Counted meanwhile by a write of the same digest: nothing to add after all.
                if self.store.head(&marker_key).await?.is_some() {
                    return Ok(None);
                }
                return Err(refusal);
            }
            if usage.pending.len() >= PENDING_MAX {
                return Err(Error::TooManyRequests(format!(
                    "too many pushes in flight in namespace {}; try again",
                    q.label()
                )));
            }
            usage.pending.push(Pending {
                id: id.clone(),
                digest: d.to_string(),
                size,
                manifest,
                at: self.clock.unix_secs(),
            });
            if self.quota_write(ns, &usage, etag).await? {
                reserved = true;
                break;
            }
            backoff(attempt).await;
        }
        if !reserved {
            return Err(lost_races(ns));
        }
        crate::failpoint::hit("quota-after-reserve");
        let mut r = Reservation {
            digest: d.clone(),
            namespace: ns.to_string(),
            id,
            mine: false,
        };
        let marker = Marker {
            size,
            manifest,
            rid: r.id.clone(),
        };
        let body = serde_json::to_vec(&marker).map_err(Error::internal)?;
        match self
            .store
            .put(&marker_key, body, PutCondition::IfAbsent)
            .await
        {
            Ok(outcome) => r.mine = matches!(outcome, PutOutcome::Written(_)),
            Err(e) => {
                // Give the reservation back (it would expire anyway).
                if let Err(e) = self.quota_settle(q, &r).await {
                    tracing::warn!(error = %e, "could not give back a quota reservation");
                }
                return Err(e.into());
            }
        }
        crate::failpoint::hit("quota-after-marker");
        Ok(Some(r))
    }

    /// Step 5 (module docs): the reservation is removed and, if the write created the
    /// marker, its size counted. Some when this took the usage across `q`'s warning ratio.
    pub async fn quota_settle(&self, q: &Quota, r: &Reservation) -> Result<Option<Crossing>> {
        let ns = r.namespace.as_str();
        for attempt in 0..CAS_ATTEMPTS_MAX {
            let (mut usage, etag) = self.quota_usage(ns).await?;
            let Some(pos) = usage.pending.iter().position(|p| p.id == r.id) else {
                // Expired, or taken back by GC with the marker: already decided.
                return Ok(None);
            };
            let p = usage.pending.remove(pos);
            let before = (usage.bytes, usage.manifests);
            if r.mine {
                usage.bytes = usage.bytes.saturating_add(p.size);
                usage.manifests += u64::from(p.manifest);
            }
            if self.quota_write(ns, &usage, etag).await? {
                let crossed = |limit: Option<u64>, before: u64, after: u64| {
                    limit.is_some_and(|l| {
                        let at = (l as f64 * q.warn_ratio).ceil() as u64;
                        before < at && after >= at
                    })
                };
                let crossing = crossed(q.bytes, before.0, usage.bytes)
                    || crossed(q.manifests, before.1, usage.manifests);
                return Ok(crossing.then_some(Crossing {
                    bytes: usage.bytes,
                    manifests: usage.manifests,
                }));
            }
            backoff(attempt).await;
        }
        Err(lost_races(ns))
    }

    /// Gives back what every namespace counted for `d`: called by GC once it removed the
    /// content and its links, under its tombstone (no writer can link `d` meanwhile). The
    /// marker goes first (a crash then leaves bytes counted, never a marker uncounted).
    pub(super) async fn quota_release(&self, d: &Digest) -> Result<()> {
        let mut pages = KeyPages::new(layout::quota_held_prefix(d), None);
        while let Some(keys) = pages.next(&self.store).await? {
            for key in keys {
                let Some(rest) = key.strip_prefix(layout::QUOTA_HELD_PREFIX) else {
                    continue;
                };
                let Some((_, ns)) = layout::parse_quota_held(rest) else {
                    continue;
                };
                let Some(obj) = self.store.get(&key).await? else {
                    continue;
                };
                let marker: Option<Marker> = serde_json::from_slice(&obj.bytes).ok();
                self.store.remove(&key).await?;
                if let Some(m) = marker {
                    self.quota_uncount(&ns, &m).await?;
                }
            }
        }
        Ok(())
    }

    /// The usage of every configured quota, then of the namespaces with a usage record and
    /// no quota now (`origin usage`).
    pub async fn quota_report(&self, quotas: &Quotas) -> Result<Vec<UsageRow>> {
        let mut rows = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for q in quotas.all() {
            seen.insert(q.namespace.clone());
            rows.push(UsageRow {
                namespace: q.namespace.clone(),
                usage: self.quota_usage(&q.namespace).await?.0,
                quota_bytes: q.bytes,
                quota_manifests: q.manifests,
            });
        }
        rows.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        let mut pages = KeyPages::new(layout::QUOTA_USAGE_PREFIX.to_string(), None);
        while let Some(keys) = pages.next(&self.store).await? {
            for key in keys {
                let Some(rest) = key.strip_prefix(layout::QUOTA_USAGE_PREFIX) else {
                    continue;
                };
                let ns = layout::quota_usage_namespace(rest);
                if seen.insert(ns.clone()) {
                    let usage = self.quota_usage(&ns).await?.0;
                    rows.push(UsageRow {
                        namespace: ns,
                        usage,
                        quota_bytes: None,
                        quota_manifests: None,
                    });
                }
            }
        }
        Ok(rows)
    }

    /// Subtracts a removed marker from its namespace's usage, or drops its reservation if
    /// its write has not settled yet.
    async fn quota_uncount(&self, ns: &str, m: &Marker) -> Result<()> {
        for attempt in 0..CAS_ATTEMPTS_MAX {
            let (mut usage, etag) = self.quota_usage(ns).await?;
            if etag.is_none() {
                return Ok(());
            }
            if let Some(pos) = usage.pending.iter().position(|p| p.id == m.rid) {
                usage.pending.remove(pos);
            } else {
                usage.bytes = usage.bytes.saturating_sub(m.size);
                usage.manifests = usage.manifests.saturating_sub(u64::from(m.manifest));
            }
            if self.quota_write(ns, &usage, etag).await? {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(lost_races(ns))
    }
}
