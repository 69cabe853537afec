//! Online garbage collection by reference edges.
//!
//! A manifest PUT records one edge key per blob it names (config, layers, index children,
//! subject) and one for its own revision. A blob is live while any edge under its
//! `refs/<digest>/` prefix exists. Whatever may have just lost its last edge (a released
//! manifest's blobs, a new upload, an unlinked blob) is put on a candidate list with the time;
//! a pass looks only at candidates older than the grace period, so its cost follows what was
//! released, not the size of the registry.
//!
//! The race with a push that names a blob GC is deleting is closed by ordering, Dekker style,
//! through storage alone (so `origin gc` in another process is safe too):
//! - a manifest PUT writes its edges, then checks for a tombstone, then for the blob;
//! - GC writes a tombstone, then re-checks the edges, then deletes.
//!
//! Either the PUT sees the tombstone or the missing blob (and fails MANIFEST_BLOB_UNKNOWN, the
//! client pushes the blob again), or GC sees the new edge and keeps the blob.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{Digest, Manifest, Reference, RepoName};
use crate::storage::{PutCondition, PutOutcome, Storage};

/// Candidates examined per pass at most; the rest wait for the next pass.
const CANDIDATES_PER_PASS_MAX: usize = 100_000;
/// A tombstone older than this was left by a crashed pass and is removed.
const TOMBSTONE_STALE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub examined: usize,
    /// Untagged manifests deleted (with `gc.remove_untagged`).
    pub manifests_removed: usize,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    /// Digest and size of each blob removed (or that would be, in a dry run).
    pub removed: Vec<(Digest, u64)>,
    pub duration: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn age_secs(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// Marks a blob as recently active: released, uploaded or mounted. GC will look at it
    /// once the grace period has passed since now.
    pub async fn gc_touch(&self, d: &Digest) -> Result<()> {
        let stamp = now_secs().to_string().into_bytes();
        self.store
            .put(&layout::gc_candidate(d), stamp, PutCondition::Always)
            .await?;
        Ok(())
    }

    pub async fn has_refs(&self, d: &Digest) -> Result<bool> {
        Ok(!self
            .store
            .list(&layout::refs_prefix(d), None, 1)
            .await?
            .is_empty())
    }

    pub async fn tombstoned(&self, d: &Digest) -> Result<bool> {
        Ok(self.store.head(&layout::gc_tombstone(d)).await?.is_some())
    }

    /// Writes edge keys; returns those that did not exist before (to roll back on failure).
    pub(super) async fn add_edges(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut created = Vec::new();
        for key in keys {
            if let PutOutcome::Written(_) = self
                .store
                .put(key, Vec::new(), PutCondition::IfAbsent)
                .await?
            {
                created.push(key.clone());
            }
        }
        Ok(created)
    }

    pub(super) async fn remove_edges(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.store.delete(key).await?;
        }
        Ok(())
    }

    /// Records that a manifest may have lost its last tag, when untagged manifests are
    /// collected; a pass decides after the grace period.
    pub async fn note_untagged(&self, name: &RepoName, d: &Digest) -> Result<()> {
        if !self.settings.gc_remove_untagged {
            return Ok(());
        }
        let stamp = now_secs().to_string().into_bytes();
        self.store
            .put(&layout::gc_untagged(name, d), stamp, PutCondition::Always)
            .await?;
        Ok(())
    }

    /// Deletes manifests noted as untagged that still are, after the grace period, unless
    /// another manifest of the repository holds them (an index) or they refer to a subject.
    async fn remove_untagged(&self, grace_secs: u64, dry_run: bool) -> Result<usize> {
        let keys = self
            .store
            .list(layout::GC_UNTAGGED_PREFIX, None, CANDIDATES_PER_PASS_MAX)
            .await?;
        let mut removed = 0;
        for key in keys {
            let Some((name, d)) = key
                .strip_prefix(layout::GC_UNTAGGED_PREFIX)
                .and_then(layout::parse_untagged)
            else {
                continue;
            };
            let Some(meta) = self.store.head(&key).await? else {
                continue;
            };
            if age_secs(meta.modified) < grace_secs {
                continue;
            }
            if self.is_untagged(&name, &d).await? && !self.held_in_repo(&name, &d).await? {
                let stored = self
                    .get_manifest(&name, &Reference::Digest(d.clone()))
                    .await;
                let referrer = match &stored {
                    Ok(m) => Manifest::parse(Some(&m.media_type), &m.bytes)
                        .map(|m| m.subject().is_some())
                        .unwrap_or(false),
                    Err(_) => true, // gone already: nothing to do
                };
                if !referrer {
                    if dry_run {
                        removed += 1;
                        continue;
                    }
                    self.delete_manifest(&name, &d).await?;
                    removed += 1;
                }
            }
            if !dry_run {
                self.store.delete(&key).await?;
            }
        }
        Ok(removed)
    }

    /// True when another manifest of the same repository names `d` (an index child).
    async fn held_in_repo(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let repo = layout::flat_name(name);
        let edges = self
            .store
            .list(&format!("{}{repo}/", layout::refs_prefix(d)), None, 2)
            .await?;
        Ok(edges
            .iter()
            .filter_map(|k| layout::edge_holder(d, k))
            .any(|(_, holder)| holder != "_revision"))
    }

    /// One collection pass. With `dry_run`, reports what it would remove and changes nothing.
    pub async fn gc_pass(&self, grace: Duration, dry_run: bool) -> Result<GcReport> {
        let started = Instant::now();
        let mut report = GcReport::default();
        if !dry_run {
            self.clear_stale_tombstones().await?;
        }
        if self.settings.gc_remove_untagged {
            report.manifests_removed = self.remove_untagged(grace.as_secs(), dry_run).await?;
        }
        let keys = self
            .store
            .list(layout::GC_CANDIDATES_PREFIX, None, CANDIDATES_PER_PASS_MAX)
            .await?;
        let grace_secs = grace.as_secs();
        for key in keys {
            let Some(d) = key
                .strip_prefix(layout::GC_CANDIDATES_PREFIX)
                .and_then(layout::unflat_digest)
            else {
                continue;
            };
            report.examined += 1;
            if let Some(size) = self.collect_one(&key, &d, grace_secs, dry_run).await? {
                report.blobs_removed += 1;
                report.bytes_removed += size;
                report.removed.push((d, size));
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Decides one candidate; returns the size of the blob removed, if it was.
    async fn collect_one(
        &self,
        key: &str,
        d: &Digest,
        grace_secs: u64,
        dry_run: bool,
    ) -> Result<Option<u64>> {
        let stamp = match self.store.get(key).await? {
            Some(obj) => std::str::from_utf8(&obj.bytes)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0),
            None => return Ok(None),
        };
        if now_secs().saturating_sub(stamp) < grace_secs {
            return Ok(None);
        }
        if self.has_refs(d).await? {
            // Referenced again: it will come back here when released.
            return self.forget_candidate(key, dry_run).await;
        }
        let Some(meta) = self.store.head(&layout::blob_data(d)).await? else {
            return self.forget_candidate(key, dry_run).await;
        };
        if age_secs(meta.modified) < grace_secs {
            return Ok(None);
        }
        if dry_run {
            return Ok(Some(meta.size));
        }
        let tomb = layout::gc_tombstone(d);
        let stamp = now_secs().to_string().into_bytes();
        if self.store.put(&tomb, stamp, PutCondition::IfAbsent).await?
            == PutOutcome::PreconditionFailed
        {
            // Another pass is on it.
            return Ok(None);
        }
        // The re-check after the tombstone is what closes the race with a manifest PUT.
        if self.has_refs(d).await? {
            self.store.delete(&tomb).await?;
            return self.forget_candidate(key, dry_run).await;
        }
        self.store.delete(&layout::blob_data(d)).await?;
        crate::metrics::METRICS
            .stored_bytes
            .fetch_sub(meta.size as i64, std::sync::atomic::Ordering::Relaxed);
        self.store.delete(&tomb).await?;
        self.store.delete(key).await?;
        Ok(Some(meta.size))
    }

    /// Counts stored blob bytes and open upload sessions once, at startup, for the metrics
    /// (kept current afterwards by commits, GC and session changes).
    pub async fn count_for_metrics(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut bytes: u64 = 0;
        for key in self.list_all("blobs/").await? {
            if let Some(meta) = self.store.head(&key).await? {
                bytes += meta.size;
            }
        }
        let m = &crate::metrics::METRICS;
        m.stored_bytes.fetch_add(bytes as i64, Relaxed);
        m.stored_bytes_known.store(true, Relaxed);
        let uploads = self.list_all(layout::UPLOAD_INDEX_PREFIX).await?.len();
        m.uploads_open.fetch_add(uploads as i64, Relaxed);
        Ok(())
    }

    /// Drops a candidate that needs no collection (referenced again, or already gone).
    async fn forget_candidate(&self, key: &str, dry_run: bool) -> Result<Option<u64>> {
        if !dry_run {
            self.store.delete(key).await?;
        }
        Ok(None)
    }

    async fn clear_stale_tombstones(&self) -> Result<()> {
        let keys = self
            .store
            .list(layout::GC_TOMBSTONES_PREFIX, None, CANDIDATES_PER_PASS_MAX)
            .await?;
        for key in keys {
            if let Some(meta) = self.store.head(&key).await? {
                if age_secs(meta.modified) >= TOMBSTONE_STALE.as_secs() {
                    tracing::warn!(key, "removing a stale GC tombstone");
                    self.store.delete(&key).await?;
                }
            }
        }
        Ok(())
    }
}
