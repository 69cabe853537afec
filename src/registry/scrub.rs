//! `origin scrub`: check what a crash or a bug could have left wrong, and repair what is safe.

use std::collections::HashMap;
use std::fmt;

use super::listing::KeyPages;
use super::{layout, Registry};
use crate::error::Result;
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag, UploadId};
use crate::storage::{PutCondition, Storage};

/// Manifests whose expected edges the stray-edge walk remembers (edges are listed by blob,
/// so one manifest's edges are spread over the walk); past this the memo starts again.
const EDGE_MEMO_MAX: usize = 4096;

/// What a stored manifest revision holds, for the edge checks.
enum Revision {
    /// The revision link is there but the manifest's content is not.
    ContentMissing,
    /// No revision link, or content that does not parse: it should hold no edges.
    NoEdges,
    /// The edges it should hold.
    Edges(Vec<String>),
}

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
        // Counted a page at a time, like the bytes: sessions are capped per repository,
        // not in all.
        let mut uploads = 0;
        let mut pages = KeyPages::new(layout::UPLOAD_INDEX_PREFIX.to_owned(), None);
        while let Some(page) = pages.next(&self.store).await? {
            uploads += page
                .iter()
                .filter_map(|k| k.strip_prefix(layout::UPLOAD_INDEX_PREFIX))
                .filter(|rest| {
                    crate::oci::UploadId::parse(rest).is_ok()
                        || layout::parse_upload_session(rest).is_some()
                })
                .count();
        }
        m.uploads_open.fetch_add(uploads as i64, Relaxed);
        Ok(())
    }

    /// Checks (and with `repair`, fixes) the whole store, a page of keys at a time: no step
    /// holds every key (or every edge) in memory, only the findings.
    pub async fn scrub(&self, repair: bool) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut repos = self.catalog_pages(None, None);
        while let Some(page) = repos.next(&self.store).await? {
            for name in page {
                let Ok(name) = RepoName::parse(&name) else {
                    continue;
                };
                self.scrub_repository(&name, &mut report).await?;
            }
        }
        self.scrub_edges(&mut report).await?;
        self.scrub_blobs(&mut report).await?;
        if repair {
            for f in report.findings.clone() {
                self.repair(&f).await?;
                report.repaired += 1;
            }
        }
        Ok(report)
    }

    /// The edges a revision of the repository should hold, judged from its stored content.
    async fn revision(&self, name: &RepoName, d: &Digest) -> Result<Revision> {
        if self
            .store
            .head(&layout::manifest_link(name, d))
            .await?
            .is_none()
        {
            return Ok(Revision::NoEdges);
        }
        let Some(obj) = self.store.get(&layout::blob_data(d)).await? else {
            return Ok(Revision::ContentMissing);
        };
        let media_type = match self
            .manifest_meta(name, &Reference::Digest(d.clone()))
            .await
        {
            Ok((_, media_type, _)) => media_type,
            // Deleted since the check above.
            Err(crate::error::Error::ManifestUnknown(_)) => return Ok(Revision::NoEdges),
            Err(e) => return Err(e),
        };
        Ok(match Manifest::parse(Some(&media_type), &obj.bytes) {
            Ok(m) => Revision::Edges(super::manifests::edge_keys(name, d, &m)),
            Err(_) => Revision::NoEdges,
        })
    }

    async fn scrub_repository(&self, name: &RepoName, report: &mut ScrubReport) -> Result<()> {
        let prefix = format!("repositories/{name}/_manifests/revisions/");
        let mut revisions = KeyPages::new(prefix.clone(), None);
        while let Some(page) = revisions.next(&self.store).await? {
            for key in page {
                let Some(d) = layout::revision_digest(&prefix, &key) else {
                    continue;
                };
                report.manifests_checked += 1;
                match self.revision(name, &d).await? {
                    Revision::ContentMissing => report
                        .findings
                        .push(Finding::DanglingRevision(name.to_string(), d)),
                    Revision::NoEdges => {}
                    Revision::Edges(edges) => {
                        for k in edges {
                            if self.store.head(&k).await?.is_none() {
                                report.findings.push(Finding::MissingEdge(k));
                            }
                        }
                    }
                }
            }
        }
        let mut tags = self.tag_pages(name, None);
        while let Some(page) = tags.next(&self.store).await? {
            for tag in page {
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
        Ok(self.clock.age(meta.modified) < self.settings.upload_idle_expiry)
    }

    /// Edges no stored manifest accounts for, found by walking the edges a page at a time
    /// and judging each by its holder (missing edges are found per manifest, above).
    async fn scrub_edges(&self, report: &mut ScrubReport) -> Result<()> {
        let mut memo: HashMap<(String, Digest), Option<Vec<String>>> = HashMap::new();
        let mut edges = KeyPages::new("refs/".to_owned(), None);
        while let Some(page) = edges.next(&self.store).await? {
            for key in page {
                if !self.edge_expected(&key, &mut memo).await? {
                    report.findings.push(Finding::StrayEdge(key));
                }
            }
        }
        Ok(())
    }

    /// Whether a stored manifest of the edge's repository should hold the edge `key`.
    async fn edge_expected(
        &self,
        key: &str,
        memo: &mut HashMap<(String, Digest), Option<Vec<String>>>,
    ) -> Result<bool> {
        let Some(blob) = edge_blob(key) else {
            return Ok(false);
        };
        let Some((repo, holder)) = layout::edge_holder(&blob, key) else {
            return Ok(false);
        };
        let Ok(name) = RepoName::parse(&repo.replace('+', "/")) else {
            return Ok(false);
        };
        let manifest = match holder {
            "_revision" => blob.clone(),
            flat => match layout::unflat_digest(flat) {
                Some(m) => m,
                None => return Ok(false),
            },
        };
        let memo_key = (name.as_str().to_owned(), manifest.clone());
        if !memo.contains_key(&memo_key) {
            let edges = match self.revision(&name, &manifest).await? {
                Revision::Edges(edges) => Some(edges),
                Revision::ContentMissing | Revision::NoEdges => None,
            };
            if memo.len() >= EDGE_MEMO_MAX {
                memo.clear();
            }
            memo.insert(memo_key.clone(), edges);
        }
        Ok(memo
            .get(&memo_key)
            .and_then(Option::as_ref)
            .is_some_and(|edges| edges.iter().any(|e| e == key)))
    }

    async fn scrub_blobs(&self, report: &mut ScrubReport) -> Result<()> {
        let mut blobs = KeyPages::new("blobs/".to_owned(), None);
        while let Some(page) = blobs.next(&self.store).await? {
            self.scrub_blob_page(page, report).await?;
        }
        Ok(())
    }

    async fn scrub_blob_page(&self, page: Vec<String>, report: &mut ScrubReport) -> Result<()> {
        for key in page {
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
