//! `origin scrub` for quotas: each configured namespace's usage recomputed from the links
//! themselves (layer links and manifest revisions of the repositories it meters, each digest
//! once, at its stored size), compared with the usage record and the markers
//! (`mod.rs`), and with `--repair` made to match.
//!
//! The recomputation reads every layer link of the registry (`linked/`) and the revisions of
//! the namespace's repositories: a full walk, as the rest of scrub. A write that settles while
//! it walks makes the final conditional write fail; the walk is then done again, at most
//! [`WALKS_MAX`] times (a namespace pushed to without pause is reported, not repaired).

use std::collections::{BTreeMap, BTreeSet};

use super::{Quota, Quotas};
use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName};
use crate::registry::listing::KeyPages;
use crate::registry::{layout, Registry};
use crate::storage::{PutCondition, Storage};

/// Walks of one namespace tried before its repair gives up (writes kept settling meanwhile).
const WALKS_MAX: usize = 5;

/// What scrub found for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub namespace: String,
    /// In the usage record (reservations in flight left out).
    pub recorded_bytes: u64,
    pub recorded_manifests: u64,
    /// Counted from storage.
    pub actual_bytes: u64,
    pub actual_manifests: u64,
    /// Digests held without a marker, and markers of digests no longer held.
    pub missing_markers: usize,
    pub stray_markers: usize,
    pub repaired: bool,
}

impl Drift {
    pub fn is_drift(&self) -> bool {
        self.recorded_bytes != self.actual_bytes
            || self.recorded_manifests != self.actual_manifests
            || self.missing_markers > 0
            || self.stray_markers > 0
    }
}

/// A digest the namespace holds: its size and whether it is a manifest.
type Held = BTreeMap<Digest, (u64, bool)>;

impl Registry {
    /// Recomputes every configured quota's usage; with `repair`, rewrites markers and usage.
    pub async fn quota_scrub(&self, quotas: &Quotas, repair: bool) -> Result<Vec<Drift>> {
        let mut out = Vec::new();
        for q in quotas.all() {
            out.push(self.quota_scrub_one(quotas, q, repair).await?);
        }
        Ok(out)
    }

    async fn quota_scrub_one(&self, quotas: &Quotas, q: &Quota, repair: bool) -> Result<Drift> {
        let ns = q.namespace.as_str();
        let mut last = None;
        for _ in 0..WALKS_MAX {
            let (usage, etag) = self.quota_usage(ns).await?;
            let held = self.quota_held_now(quotas, q).await?;
            let markers = self.quota_markers(ns).await?;
            let pending: BTreeSet<&str> = usage.pending.iter().map(|p| p.id.as_str()).collect();
            let in_flight = |d: &Digest| {
                markers
                    .get(d)
                    .is_some_and(|rid| pending.contains(rid.as_str()))
            };
            // What the record should say: the digests held, but those whose write is still
            // in flight (it adds them itself when it settles).
            let settled = held.iter().filter(|(d, _)| !in_flight(d));
            let actual_bytes = settled.clone().map(|(_, (size, _))| size).sum();
            let actual_manifests = settled.filter(|(_, (_, m))| *m).count() as u64;
            let missing: Vec<&Digest> = held.keys().filter(|d| !markers.contains_key(*d)).collect();
            let stray: Vec<&Digest> = markers
                .iter()
                .filter(|(d, rid)| !held.contains_key(*d) && !pending.contains(rid.as_str()))
                .map(|(d, _)| d)
                .collect();
            let mut drift = Drift {
                namespace: ns.to_string(),
                recorded_bytes: usage.bytes,
                recorded_manifests: usage.manifests,
                actual_bytes,
                actual_manifests,
                missing_markers: missing.len(),
                stray_markers: stray.len(),
                repaired: false,
            };
            if !repair || !drift.is_drift() {
                return Ok(drift);
            }
            for d in &missing {
                let (size, manifest) = held[*d];
                let body = serde_json::json!({"size": size, "manifest": manifest, "rid": "scrub"});
                self.store
                    .put(
                        &layout::quota_held(d, ns),
                        body.to_string().into_bytes(),
                        PutCondition::IfAbsent,
                    )
                    .await?;
            }
            for d in &stray {
                self.store.remove(&layout::quota_held(d, ns)).await?;
            }
            let mut fixed = usage.clone();
            fixed.bytes = actual_bytes;
            fixed.manifests = actual_manifests;
            if self.quota_write(ns, &fixed, etag).await? {
                drift.repaired = true;
                return Ok(drift);
            }
            last = Some(drift);
        }
        last.ok_or_else(|| Error::internal("quota scrub: no walk"))
    }

    /// What the repositories `q` meters hold now: layer links and manifest revisions.
    async fn quota_held_now(&self, quotas: &Quotas, q: &Quota) -> Result<Held> {
        let metered = |name: &str| quotas.of(name).is_some_and(|m| m.namespace == q.namespace);
        let mut held = Held::new();
        let mut pages = KeyPages::new("linked/".to_string(), None);
        let mut sizes = Vec::new();
        while let Some(keys) = pages.next(&self.store).await? {
            for key in keys {
                let mut parts = key.strip_prefix("linked/").unwrap_or("").splitn(3, '/');
                let (Some(alg), Some(hex), Some(repo)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if !metered(&repo.replace('+', "/")) {
                    continue;
                }
                if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                    sizes.push((d, false));
                }
            }
        }
        let mut repos = KeyPages::new(layout::CATALOG_PREFIX.to_string(), None);
        while let Some(keys) = repos.next(&self.store).await? {
            for key in keys {
                let rest = key.strip_prefix(layout::CATALOG_PREFIX).unwrap_or("");
                let Some(name) = layout::catalog_name(rest) else {
                    continue;
                };
                if !metered(name) {
                    continue;
                }
                let Ok(name) = RepoName::parse(name) else {
                    continue;
                };
                let dir = format!("{}/", layout::revisions_dir(&name));
                let mut revisions = KeyPages::new(dir.clone(), None);
                while let Some(keys) = revisions.next(&self.store).await? {
                    for key in keys {
                        if let Some(d) = layout::revision_digest(&dir, &key) {
                            sizes.push((d, true));
                        }
                    }
                }
            }
        }
        for (d, manifest) in sizes {
            if let Some((_, m)) = held.get_mut(&d) {
                *m |= manifest;
                continue;
            }
            if let Some(size) = self.blob_size(&d).await? {
                held.insert(d, (size, manifest));
            }
        }
        Ok(held)
    }

    /// The markers of namespace `ns`, with the reservation each names.
    async fn quota_markers(&self, ns: &str) -> Result<BTreeMap<Digest, String>> {
        let mut out = BTreeMap::new();
        let mut pages = KeyPages::new(layout::QUOTA_HELD_PREFIX.to_string(), None);
        while let Some(keys) = pages.next(&self.store).await? {
            for key in keys {
                let rest = key.strip_prefix(layout::QUOTA_HELD_PREFIX).unwrap_or("");
                let Some((d, marker_ns)) = layout::parse_quota_held(rest) else {
                    continue;
                };
                if marker_ns != ns {
                    continue;
                }
                let Some(obj) = self.store.get(&key).await? else {
                    continue;
                };
                let rid = serde_json::from_slice::<serde_json::Value>(&obj.bytes)
                    .ok()
                    .and_then(|v| v["rid"].as_str().map(str::to_string))
                    .unwrap_or_default();
                out.insert(d, rid);
            }
        }
        Ok(out)
    }
}
