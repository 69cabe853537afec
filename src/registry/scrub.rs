//! `origin scrub`: check what a crash or a bug could have left wrong, and repair what is safe.

use std::collections::BTreeSet;
use std::fmt;

use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag, UploadId};
use crate::storage::{PutCondition, Storage};

/// Keys listed per storage call while walking.
const LIST_PAGE: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A blob whose content does not match its digest. Repair removes it.
    CorruptBlob(Digest),
    /// A tag pointing to a manifest the repository does not have. Repair removes the tag.
    DanglingTag(String, String),
    /// A manifest revision whose content is not stored. Repair removes the revision.
    DanglingRevision(String, Digest),
    /// A stored blob that no manifest references and GC does not know about.
    /// Repair hands it to GC (collected after the grace period).
    UnreferencedBlob(Digest),
    /// A reference edge a stored manifest should have. Repair adds it.
    MissingEdge(String),
    /// An edge whose manifest revision does not exist. Repair removes it.
    StrayEdge(String),
    /// Upload data or state without its other half. Repair removes the session.
    LeftoverUpload(String, String),
}

/// Blob keys per page of the background count of stored bytes (one S3 listing).
const COUNT_PAGE_KEYS: usize = 1000;
/// Pause between two pages of that count: it is background work (10,000 blobs a second).
const COUNT_PAGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl Finding {
    /// Broken: something served or referenced is wrong. The rest are leftovers of an
    /// interrupted operation (space not yet reclaimed), harmless to clients.
    pub fn is_broken(&self) -> bool {
        matches!(
            self,
            Finding::CorruptBlob(_)
                | Finding::DanglingTag(..)
                | Finding::DanglingRevision(..)
                | Finding::MissingEdge(_)
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::CorruptBlob(d) => write!(f, "corrupt blob {d}: content does not match"),
            Finding::DanglingTag(r, t) => write!(f, "dangling tag {r}:{t}: manifest missing"),
            Finding::DanglingRevision(r, d) => {
                write!(f, "dangling manifest {r}@{d}: content missing")
            }
            Finding::UnreferencedBlob(d) => write!(f, "unreferenced blob {d}"),
            Finding::MissingEdge(k) => write!(f, "missing reference {k}"),
            Finding::StrayEdge(k) => write!(f, "stray reference {k}"),
            Finding::LeftoverUpload(r, id) => write!(f, "leftover upload {r} {id}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub findings: Vec<Finding>,
    pub blobs_checked: usize,
    pub manifests_checked: usize,
    pub repaired: usize,
}

impl Registry {
    pub(crate) async fn list_all(&self, prefix: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(prefix, after.as_deref(), LIST_PAGE).await?;
            let done = page.len() < LIST_PAGE;
            after = page.last().cloned();
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Counts stored blob bytes and open upload sessions once, after start-up and in the
    /// background, for the metrics (kept current afterwards by commits, GC and session
    /// changes). Sizes come from the listing itself (S3: one ListObjectsV2 per 1,000 blobs,
    /// no HEAD per blob), a page at a time with a pause between pages, so neither start-up
    /// nor the bucket's bill grows with a HEAD per blob, and memory holds one page.
    pub async fn count_for_metrics(&self) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut bytes: u64 = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_sized("blobs/", after.as_deref(), COUNT_PAGE_KEYS)
                .await?;
            bytes += page.iter().map(|(_, size)| size).sum::<u64>();
            if page.len() < COUNT_PAGE_KEYS {
                break;
            }
            after = page.last().map(|(key, _)| key.clone());
            compio::time::sleep(COUNT_PAGE_PAUSE).await;
        }
        let m = &crate::metrics::METRICS;
        m.stored_bytes.fetch_add(bytes as i64, Relaxed);
        m.stored_bytes_known.store(true, Relaxed);
        // Index entries (fs, `uploads/<id>`) or sessions (S3, `uploads/<repo>/<id>`), not
        // the sessions' staged parts.
        let uploads = self
            .list_all(layout::UPLOAD_INDEX_PREFIX)
            .await?
            .iter()
            .filter_map(|k| k.strip_prefix(layout::UPLOAD_INDEX_PREFIX))
            .filter(|rest| {
                crate::oci::UploadId::parse(rest).is_ok()
                    || layout::parse_upload_session(rest).is_some()
            })
            .count();
        m.uploads_open.fetch_add(uploads as i64, Relaxed);
        Ok(())
    }

    pub async fn scrub(&self, repair: bool) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut expected_edges = BTreeSet::new();
        for name in self.catalog().await? {
            let Ok(name) = RepoName::parse(&name) else {
                continue;
            };
            self.scrub_repository(&name, &mut report, &mut expected_edges)
                .await?;
        }
        self.scrub_edges(&expected_edges, &mut report).await?;
        self.scrub_blobs(&mut report).await?;
        if repair {
            for f in report.findings.clone() {
                self.repair(&f).await?;
                report.repaired += 1;
            }
        }
        Ok(report)
    }

    async fn scrub_repository(
        &self,
        name: &RepoName,
        report: &mut ScrubReport,
        expected_edges: &mut BTreeSet<String>,
    ) -> Result<()> {
        let prefix = format!("repositories/{name}/_manifests/revisions/");
        for key in self.list_all(&prefix).await? {
            let Some(d) = key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok())
            else {
                continue;
            };
            report.manifests_checked += 1;
            let Some(obj) = self.store.get(&layout::blob_data(&d)).await? else {
                report
                    .findings
                    .push(Finding::DanglingRevision(name.to_string(), d));
                continue;
            };
            let (_, media_type, _) = self
                .manifest_meta(name, &Reference::Digest(d.clone()))
                .await?;
            if let Ok(m) = Manifest::parse(Some(&media_type), &obj.bytes) {
                expected_edges.extend(super::manifests::edge_keys(name, &d, &m));
            }
        }
        for tag in self.tags(name).await? {
            let Ok(t) = Tag::parse(&tag) else { continue };
            let Some(d) = self.resolve_tag(name, &t).await? else {
                continue;
            };
            let rev = self.store.head(&layout::manifest_link(name, &d)).await?;
            if rev.is_none() {
                report
                    .findings
                    .push(Finding::DanglingTag(name.to_string(), tag));
            }
        }
        for id in self.store.list_dir(&layout::uploads_dir(name)).await? {
            let Ok(uid) = UploadId::parse(&id) else {
                continue;
            };
            let data = self
                .store
                .upload_size(&layout::upload_data(name, &uid))
                .await?;
            // On S3 the state rides in the session object: one half cannot be missing.
            let state = if self.store.upload_meta_inline() {
                data.map(drop)
            } else {
                self.store
                    .head(&layout::upload_state(name, &uid))
                    .await?
                    .map(drop)
            };
            // Exactly one half: an interrupted start or cancel. (Neither: only a temp file of
            // an interrupted write is left, which the temp cleanup removes.) Within the idle
            // expiry it may be a start in progress, and expiry removes it otherwise.
            if state.is_none() != data.is_none() && !self.upload_fresh(&uid).await? {
                report
                    .findings
                    .push(Finding::LeftoverUpload(name.to_string(), id));
            }
        }
        Ok(())
    }

    /// True when the session's index is younger than the idle expiry.
    async fn upload_fresh(&self, id: &UploadId) -> Result<bool> {
        let Some(meta) = self.store.head(&layout::upload_index(id)).await? else {
            return Ok(false);
        };
        let age = std::time::SystemTime::now()
            .duration_since(meta.modified)
            .unwrap_or_default();
        Ok(age < self.settings.upload_idle_expiry)
    }

    async fn scrub_edges(
        &self,
        expected: &BTreeSet<String>,
        report: &mut ScrubReport,
    ) -> Result<()> {
        let actual: BTreeSet<String> = self.list_all("refs/").await?.into_iter().collect();
        for k in expected.difference(&actual) {
            report.findings.push(Finding::MissingEdge(k.clone()));
        }
        for k in actual.difference(expected) {
            report.findings.push(Finding::StrayEdge(k.clone()));
        }
        Ok(())
    }

    async fn scrub_blobs(&self, report: &mut ScrubReport) -> Result<()> {
        for key in self.list_all("blobs/").await? {
            let Some(d) = key
                .strip_prefix("blobs/")
                .and_then(|k| k.strip_suffix("/data"))
                .and_then(|k| {
                    let mut parts = k.split('/');
                    let alg = parts.next()?;
                    let hex = parts.nth(1)?;
                    Digest::parse(&format!("{alg}:{hex}")).ok()
                })
            else {
                continue;
            };
            report.blobs_checked += 1;
            if self
                .hash_object(&layout::blob_data(&d), d.algorithm())
                .await?
                .as_ref()
                != Some(&d)
            {
                report.findings.push(Finding::CorruptBlob(d));
                continue;
            }
            let candidate = self.store.head(&layout::gc_candidate(&d)).await?;
            if !self.has_refs(&d).await? && candidate.is_none() {
                report.findings.push(Finding::UnreferencedBlob(d));
            }
        }
        Ok(())
    }

    async fn repair(&self, f: &Finding) -> Result<()> {
        match f {
            Finding::CorruptBlob(d) => {
                // Its links first, as GC does: a link is trusted to name a stored blob
                // (manifests.rs, `check_references`), so a client pushes the blob again.
                while self.remove_links(d).await? {}
                super::sizes::note_deleted();
                self.store.delete(&layout::blob_data(d)).await?;
            }
            Finding::DanglingTag(r, t) => {
                if let (Ok(r), Ok(t)) = (RepoName::parse(r), Tag::parse(t)) {
                    self.store.delete(&layout::tag_link(&r, &t)).await?;
                }
            }
            Finding::DanglingRevision(r, d) => {
                if let Ok(r) = RepoName::parse(r) {
                    self.store.delete(&layout::manifest_link(&r, d)).await?;
                }
            }
            Finding::UnreferencedBlob(d) => self.gc_touch(d).await?,
            Finding::MissingEdge(k) => {
                self.store.put(k, Vec::new(), PutCondition::Always).await?;
            }
            Finding::StrayEdge(k) => {
                self.store.delete(k).await?;
                if let Some(d) = edge_blob(k) {
                    self.gc_touch(&d).await?;
                }
            }
            Finding::LeftoverUpload(r, id) => {
                if let (Ok(r), Ok(id)) = (RepoName::parse(r), UploadId::parse(id)) {
                    self.upload_cancel(&r, &id).await?;
                }
            }
        }
        Ok(())
    }
}

/// The blob an edge key holds: `refs/<alg>/<hex>/...`.
fn edge_blob(key: &str) -> Option<Digest> {
    let mut parts = key.strip_prefix("refs/")?.split('/');
    let alg = parts.next()?;
    let hex = parts.next()?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}
