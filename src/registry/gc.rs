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
//!
//! Blob commits and links (uploads, mounts, mirror fills) are ordered the same way against a
//! pass: a writer *holds* the blob first (rewrites its candidate with a unique stamp, then
//! waits out any tombstone); a pass writes the tombstone, then re-reads the candidate and
//! gives up if it changed. So either the pass sees the hold and keeps everything, or the
//! writer sees the tombstone and waits until the pass has finished (and then stores the blob
//! anew). That is what lets a pass remove a deleted blob's layer links (`linked/` indexes
//! them; on object storage the index entry is the link), and drop repositories left without
//! manifests from the catalog.
//!
//! A pass removes a blob's layer links *before* its data, and a link is only written for a
//! stored blob (after the commit, or a mount's check, under a hold). So a layer link whose
//! blob is gone exists only while that blob's tombstone does. A manifest PUT therefore
//! checks each blob it names with one HEAD of the repository's link and no HEAD of the blob:
//! after its edges, it saw no tombstone, so either the pass deleting the blob had finished
//! (its links gone: the link HEAD fails) or a pass that starts later sees the edge and keeps
//! the blob. Scrub's repair of a corrupt blob removes its links first for the same reason.
//! The tombstone checks of all the blobs a manifest names are one listing of `gc/deleting/`
//! (tombstones exist only while a pass deletes: a handful), not a HEAD each
//! (`first_tombstoned`): a listing after the edge writes shows every tombstone written
//! before it, which is all the argument above needs.
//!
//! Crash debris is collected the same way, with no scan: a manifest PUT makes its own digest
//! a candidate and stores its content before it writes its edges, so a PUT cut short leaves
//! a candidate whose `_revision` edge has no revision link. Once the candidate is older than
//! the longest a request may run, no PUT that touched it can still be writing; the pass then
//! undoes the edges (read from the stored content, the revision edge last) and releases what
//! they held. A PUT that touches it later sees the tombstone, or finds its revision edge gone
//! and writes its edges again. Blob commits hold before they store, so a crash after a
//! commit leaves a candidate too. A delete writes the candidates of what it releases before
//! it removes anything (for a crash) and again after (a pass that found the edges still there
//! drops a candidate as referenced, with no condition on what it read).

use std::time::{Duration, Instant, SystemTime};

use super::listing::KeyPages;
use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{Digest, Manifest, RepoName};
use crate::storage::{PutCondition, PutOutcome, Storage};

/// Candidates examined per pass at most; the rest wait for the next pass.
const CANDIDATES_PER_PASS_MAX: usize = 100_000;
/// Candidate keys one listing reads: a pass holds one page (~100 bytes a key), whatever
/// the number of candidates or of blobs.
const CANDIDATES_PAGE_KEYS: usize = if cfg!(test) { 3 } else { 1000 };
/// A tombstone older than this was left by a crashed pass and is removed.
const TOMBSTONE_STALE: Duration = Duration::from_secs(600);
/// Longest a blob write waits for a pass that is deleting the same blob (a pass deletes one
/// blob in milliseconds; past this the tombstone is probably a crashed pass's: unavailable,
/// try again).
const HOLD_WAIT_MAX: Duration = Duration::from_secs(10);
const HOLD_POLL: Duration = Duration::from_millis(20);
/// How long a client told a blob is being collected waits before trying again: the pass
/// deleting it is past its lock by then.
const HOLD_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Edges of one candidate looked at for crash debris per pass (strays are `_revision` edges,
/// one per repository holding the manifest; more wait for the next pass).
const EDGES_LISTED_MAX: usize = 1000;
/// Layer links of one deleted blob removed per pass; the candidate stays for the rest.
const LINKS_PER_PASS_MAX: usize = 1000;
/// Tombstones one listing reads to check a manifest's blobs at once; a pass holds one
/// tombstone at a time, so more than this means many passes (or crashed ones): then one HEAD
/// per blob instead.
const TOMBSTONES_LISTED_MAX: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub examined: usize,
    /// Untagged manifests deleted (with `gc.remove_untagged`).
    pub manifests_removed: usize,
    /// Which ones (not filled in a dry run), for their events.
    pub untagged_removed: Vec<(RepoName, Digest)>,
    pub blobs_removed: usize,
    pub bytes_removed: u64,
    /// Digest and size of each blob removed (or that would be, in a dry run).
    pub removed: Vec<(Digest, u64)>,
    pub duration: Duration,
}

/// A candidate's content: when it was touched, and a nonce so that every touch changes the
/// object (a pass compares it before and after its tombstone).
fn stamp(secs: u64) -> Vec<u8> {
    let mut nonce = [0u8; 8];
    // Without randomness two touches in one second could look alike; the time still differs
    // between most, and a pass that misses a hold only deletes after the grace period.
    let _ = getrandom::getrandom(&mut nonce);
    format!("{secs} {:016x}", u64::from_le_bytes(nonce)).into_bytes()
}

fn stamp_secs(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
}

/// What one candidate's examination did.
#[derive(Default)]
struct Collected {
    /// Size of the blob removed.
    removed: Option<u64>,
    /// Blobs a crashed PUT's edges held, released now (to look at in the same pass).
    released: Vec<Digest>,
}

/// How old things must be before a pass acts on them, and what it found at its start.
#[derive(Clone, Copy)]
struct Ages {
    grace_secs: u64,
    /// A candidate this old has no manifest PUT still writing its edges.
    debris_secs: u64,
    /// Some quota marker existed when the pass started. Without one no removal has bytes to
    /// give back: a marker for a blob this pass removes is written by a push that held the
    /// blob first, and a blob held since its candidate was stamped is kept. So a pass with
    /// no quota configured makes no quota request per removed blob.
    quota_markers: bool,
}

mod untagged;

#[cfg(test)]
mod tests;

fn is_revision_edge(key: &str) -> bool {
    key.ends_with("/_revision")
}

impl Registry {
    fn now_secs(&self) -> u64 {
        self.clock.unix_secs()
    }

    fn age_secs(&self, t: SystemTime) -> u64 {
        self.clock.age(t).as_secs()
    }

    /// Marks a blob as recently active: released, uploaded or mounted. GC will look at it
    /// once the grace period has passed since now.
    ///
    /// Visible at once (the hold protocol needs that), durable with the request's next
    /// durable write (`Storage::put_pending`): a candidate only makes a pass look.
    pub async fn gc_touch(&self, d: &Digest) -> Result<()> {
        self.store
            .put_pending(
                &layout::gc_candidate(d),
                stamp(self.now_secs()),
                PutCondition::Always,
            )
            .await?;
        Ok(())
    }

    /// Holds a blob against collection before it is committed or linked: no pass deletes it
    /// within the grace period from now, and a pass deleting it right now finishes first.
    pub async fn hold_blob(&self, d: &Digest) -> Result<()> {
        let started = Instant::now();
        loop {
            self.gc_touch(d).await?;
            if !self.tombstoned(d).await? {
                return Ok(());
            }
            if started.elapsed() >= HOLD_WAIT_MAX {
                return Err(crate::error::Error::Unavailable {
                    message: format!("blob {d} is being garbage-collected; try again"),
                    retry_after: HOLD_RETRY_AFTER,
                });
            }
            compio::time::sleep(HOLD_POLL).await;
        }
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

    /// The first of `digests` that a pass is deleting right now, if any. Several at once
    /// (a manifest's blobs) with one listing of the tombstones, which exist only while a
    /// pass deletes (a handful at a time), instead of one HEAD each; past
    /// `TOMBSTONES_LISTED_MAX` tombstones, one HEAD each after all. The listing is as strongly
    /// consistent as a HEAD (S3 lists what it has acknowledged), so the Dekker argument in
    /// the module docs holds unchanged.
    pub async fn first_tombstoned<'d>(
        &self,
        digests: impl IntoIterator<Item = &'d Digest>,
    ) -> Result<Option<&'d Digest>> {
        let digests: Vec<&Digest> = digests.into_iter().collect();
        if let [one] = digests.as_slice() {
            return Ok(self.tombstoned(one).await?.then_some(*one));
        }
        let listed = self
            .store
            .list(layout::GC_TOMBSTONES_PREFIX, None, TOMBSTONES_LISTED_MAX)
            .await?;
        if listed.len() >= TOMBSTONES_LISTED_MAX {
            for d in digests {
                if self.tombstoned(d).await? {
                    return Ok(Some(d));
                }
            }
            return Ok(None);
        }
        let listed: std::collections::HashSet<&str> = listed.iter().map(String::as_str).collect();
        Ok(digests
            .into_iter()
            .find(|d| listed.contains(layout::gc_tombstone(d).as_str())))
    }

    /// Writes edge keys, revision edges first (so a crash midway leaves no other edge of a
    /// manifest without its revision edge, which is how GC finds them); returns those that
    /// did not exist before (to roll back on failure).
    pub(super) async fn add_edges(&self, keys: &[String]) -> Result<Vec<String>> {
        let mut created = Vec::new();
        let (revisions, others): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| is_revision_edge(k));
        for key in revisions.into_iter().chain(others) {
            // Pending: visible before the tombstone checks that follow, durable with the
            // publishing batch (an edge only keeps a blob).
            if let PutOutcome::Written(_) = self
                .store
                .put_pending(key, Vec::new(), PutCondition::IfAbsent)
                .await?
            {
                created.push(key.clone());
            }
        }
        Ok(created)
    }

    /// Removes edge keys, revision edges last (the mirror image of `add_edges`).
    pub(super) async fn remove_edges(&self, keys: &[String]) -> Result<()> {
        let (revisions, others): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| is_revision_edge(k));
        for key in others.into_iter().chain(revisions) {
            self.store.remove(key).await?;
        }
        Ok(())
    }

    /// One collection pass. With `dry_run`, reports what it would remove and changes nothing.
    pub async fn gc_pass(&self, grace: Duration, dry_run: bool) -> Result<GcReport> {
        let started = Instant::now();
        let mut report = GcReport::default();
        if !dry_run {
            self.clear_stale_tombstones().await?;
        }
        if self.settings.gc_remove_untagged {
            report.manifests_removed = self
                .remove_untagged(grace.as_secs(), dry_run, &mut report.untagged_removed)
                .await?;
        }
        let quota_markers = !self
            .store
            .list(layout::QUOTA_HELD_PREFIX, None, 1)
            .await?
            .is_empty();
        let ages = Ages {
            grace_secs: grace.as_secs(),
            debris_secs: grace.max(self.settings.debris_after).as_secs(),
            quota_markers,
        };
        // A page of candidates at a time from where the last page ended (what a page
        // removes is behind the position, what a page adds after it is seen next).
        let mut after: Option<String> = None;
        while report.examined < CANDIDATES_PER_PASS_MAX {
            let want = CANDIDATES_PAGE_KEYS.min(CANDIDATES_PER_PASS_MAX - report.examined);
            let keys = self
                .store
                .list(layout::GC_CANDIDATES_PREFIX, after.as_deref(), want)
                .await?;
            let last_page = keys.len() < want;
            after = keys.last().cloned();
            let digests = keys
                .iter()
                .filter_map(|k| k.strip_prefix(layout::GC_CANDIDATES_PREFIX))
                .filter_map(layout::unflat_digest)
                .collect();
            self.collect_page(digests, ages, dry_run, &mut report)
                .await?;
            if last_page {
                break;
            }
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    /// Examines one page of candidates, then the blobs that undoing crash debris released
    /// (once, in the same pass: they were released at the crash, long enough ago).
    async fn collect_page(
        &self,
        mut digests: Vec<Digest>,
        ages: Ages,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<()> {
        for round in 0..2 {
            let mut released = Vec::new();
            for d in digests {
                report.examined += 1;
                let done = self.collect_one(&d, ages, dry_run).await?;
                if let Some(size) = done.removed {
                    report.blobs_removed += 1;
                    report.bytes_removed += size;
                    report.removed.push((d, size));
                }
                if round == 0 {
                    released.extend(done.released);
                }
            }
            released.sort();
            released.dedup();
            digests = released;
        }
        Ok(())
    }

    /// Decides one candidate: undoes crashed PUTs' edges, then removes the blob and its
    /// layer links when nothing references it.
    async fn collect_one(&self, d: &Digest, ages: Ages, dry_run: bool) -> Result<Collected> {
        let key = layout::gc_candidate(d);
        let mut done = Collected::default();
        let Some(candidate) = self.store.get(&key).await? else {
            return Ok(done);
        };
        let age = self.now_secs().saturating_sub(stamp_secs(&candidate.bytes));
        if age < ages.grace_secs {
            return Ok(done);
        }
        let (strays, pending) = self.stray_revisions(d, age >= ages.debris_secs).await?;
        let referenced = self.has_refs(d).await?;
        if referenced && strays.is_empty() {
            // Referenced: it comes back here when released (or when its PUT is old enough).
            if !pending {
                self.forget_candidate(&key, dry_run).await?;
            }
            return Ok(done);
        }
        let data = self.store.head(&layout::blob_data(d)).await?;
        if !referenced {
            if let Some(meta) = &data {
                if self.age_secs(meta.modified) < ages.grace_secs {
                    return Ok(done);
                }
                if dry_run {
                    done.removed = Some(meta.size);
                    return Ok(done);
                }
            }
        }
        if dry_run {
            return Ok(done);
        }
        let tomb = layout::gc_tombstone(d);
        if self
            .store
            .put(&tomb, stamp(self.now_secs()), PutCondition::IfAbsent)
            .await?
            == PutOutcome::PreconditionFailed
        {
            return Ok(done); // another pass is on it
        }
        // The re-reads after the tombstone are what close the races (module docs).
        let held = self.store.get(&key).await?.map(|c| c.etag) != Some(candidate.etag);
        let mut keep_candidate = held || pending;
        if !held {
            for repo in &strays {
                done.released.extend(self.undo_stray_put(repo, d).await?);
            }
            if !self.has_refs(d).await? {
                // The links first, then the data, so that a layer link never outlives its
                // blob without this tombstone (what lets a manifest PUT trust a link it finds
                // after its tombstone check, module docs). More links than one pass removes:
                // the data waits for a later pass, with the candidate.
                let more = self.remove_links(d).await?;
                keep_candidate |= more;
                if !more {
                    done.removed = self.remove_blob(d).await?;
                    // No repository holds it now: every quota that counted it gets it back.
                    if ages.quota_markers {
                        self.quota_release(d).await?;
                    }
                }
            }
        }
        let old = self.now_secs().saturating_sub(ages.grace_secs);
        for r in &done.released {
            // Eligible now (released at the crash), unless someone holds it already.
            self.store
                .put(&layout::gc_candidate(r), stamp(old), PutCondition::IfAbsent)
                .await?;
        }
        if !keep_candidate {
            self.store.remove(&key).await?;
        }
        self.store.remove(&tomb).await?;
        Ok(done)
    }

    /// Repositories whose `_revision` edge for `d` has no revision link: a PUT cut short, if
    /// `old_enough`; else `pending` says there may be one to look at in a later pass.
    async fn stray_revisions(&self, d: &Digest, old_enough: bool) -> Result<(Vec<RepoName>, bool)> {
        let edges = self
            .store
            .list(&layout::refs_prefix(d), None, EDGES_LISTED_MAX)
            .await?;
        let mut strays = Vec::new();
        let mut pending = false;
        for key in &edges {
            let Some((repo, "_revision")) = layout::edge_holder(d, key) else {
                continue;
            };
            let Ok(repo) = RepoName::parse(&repo.replace('+', "/")) else {
                continue;
            };
            if self
                .store
                .head(&layout::manifest_link(&repo, d))
                .await?
                .is_some()
            {
                continue;
            }
            if old_enough {
                strays.push(repo);
            } else {
                pending = true;
            }
        }
        Ok((strays, pending))
    }

    /// Removes the edges a PUT of manifest `d` into `repo` wrote and never completed (the
    /// revision edge last); returns the blobs they held.
    async fn undo_stray_put(&self, repo: &RepoName, d: &Digest) -> Result<Vec<Digest>> {
        if self
            .store
            .head(&layout::manifest_link(repo, d))
            .await?
            .is_some()
        {
            return Ok(Vec::new()); // completed after all
        }
        let revision = layout::ref_edge(d, repo, &layout::Holder::Revision);
        let manifest = match self.store.get(&layout::blob_data(d)).await {
            Ok(Some(obj)) => Manifest::parse(None, &obj.bytes).ok(),
            Ok(None) | Err(crate::storage::StorageError::TooLarge { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let mut released = Vec::new();
        if let Some(m) = &manifest {
            for key in super::manifests::edge_keys(repo, d, m) {
                if key != revision {
                    self.store.remove(&key).await?;
                }
            }
            released.extend(m.references().cloned());
            released.extend(m.subject().map(|s| s.digest.clone()));
        }
        self.store.remove(&revision).await?;
        tracing::info!(repository = %repo, digest = %d, "removed the references of a manifest push that never completed");
        Ok(released)
    }

    /// Deletes an unreferenced blob's data; its size if there was any.
    async fn remove_blob(&self, d: &Digest) -> Result<Option<u64>> {
        let Some(meta) = self.store.head(&layout::blob_data(d)).await? else {
            return Ok(None);
        };
        super::sizes::note_deleted();
        self.store.remove(&layout::blob_data(d)).await?;
        crate::metrics::METRICS
            .stored_bytes
            .fetch_sub(meta.size as i64, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(meta.size))
    }

    /// Removes the layer links (and their index entries) to a blob being deleted, dropping
    /// repositories left empty from the catalog. True when more links remain for a later pass.
    pub(super) async fn remove_links(&self, d: &Digest) -> Result<bool> {
        let entries = self
            .store
            .list(&layout::link_index_prefix(d), None, LINKS_PER_PASS_MAX)
            .await?;
        for entry in &entries {
            if let Some(repo) = layout::link_index_repo(d, entry) {
                let link = self.layer_link_key(&repo, d);
                if &link != entry {
                    self.store.remove(&link).await?;
                }
                self.store.remove(entry).await?;
                self.drop_if_empty(&repo).await?;
            } else {
                self.store.remove(entry).await?;
            }
        }
        Ok(entries.len() >= LINKS_PER_PASS_MAX)
    }

    /// Takes a repository without manifests (and so without tags) out of the catalog.
    /// Manifest PUTs record the entry after their revision link, and this looks for one
    /// again after the removal, so a concurrent push keeps it listed.
    pub async fn drop_if_empty(&self, name: &RepoName) -> Result<()> {
        if self.has_content(name).await? {
            return Ok(());
        }
        if !self.store.delete(&layout::catalog_entry(name)).await? {
            return Ok(());
        }
        if self.has_content(name).await? {
            self.ensure_repository(name).await?;
        }
        Ok(())
    }

    /// Whether the repository has a manifest (revision or tag): what lists it in the
    /// catalog. (Open uploads do not: a session's start writes no catalog entry.)
    async fn has_content(&self, name: &RepoName) -> Result<bool> {
        let prefix = layout::manifests_prefix(name);
        Ok(!self.store.list(&prefix, None, 1).await?.is_empty())
    }

    /// Drops a candidate that needs no collection (referenced again, or already gone).
    async fn forget_candidate(&self, key: &str, dry_run: bool) -> Result<()> {
        if !dry_run {
            self.store.remove(key).await?;
        }
        Ok(())
    }

    async fn clear_stale_tombstones(&self) -> Result<()> {
        let mut pages = KeyPages::new(layout::GC_TOMBSTONES_PREFIX.to_owned(), None);
        while let Some(keys) = pages.next(&self.store).await? {
            self.clear_stale(keys).await?;
        }
        Ok(())
    }

    async fn clear_stale(&self, keys: Vec<String>) -> Result<()> {
        for key in keys {
            if let Some(meta) = self.store.head(&key).await? {
                // Real time, not the registry's clock: staleness is about how long a pass
                // runs, which a test moving the clock does not change.
                let age = SystemTime::now()
                    .duration_since(meta.modified)
                    .unwrap_or_default();
                if age >= TOMBSTONE_STALE {
                    tracing::warn!(key, "removing a stale GC tombstone");
                    self.store.remove(&key).await?;
                }
            }
        }
        Ok(())
    }
}
