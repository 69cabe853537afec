//! What the web UI shows beside a tag or a manifest that a pull never needs: when a tag was
//! last set, when a manifest was last pulled (where pulls are recorded), and a repository's
//! untagged manifests. Times are the modification times of the objects the registry writes
//! anyway (a tag link is rewritten at each push of the tag; pull records are written for
//! retention rules and mirrors), so none of this costs a write.

use std::collections::HashSet;
use std::time::SystemTime;

use super::immutable::ImmutableTags;
use super::listing::KeyPages;
use super::retention::Deletion;
use super::{layout, Registry};
use crate::error::{Error, Result};
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};
use crate::policy::retention::RetentionRules;
use crate::storage::Storage;

/// Which pull records a repository has: `retention` where retention rules apply to it (the
/// API records pulls for them), `mirror` in a mirror namespace (pulls drive eviction).
#[derive(Debug, Clone, Copy, Default)]
pub struct PullRecords {
    pub retention: bool,
    pub mirror: bool,
}

/// A page of untagged manifests.
#[derive(Debug, Default)]
pub struct Untagged {
    pub digests: Vec<Digest>,
    /// Where the next page starts (`last`), when there may be more.
    pub next: Option<Digest>,
    /// Revisions examined for this page: an untagged manifest is rare among many tagged
    /// ones, so the walk is bounded and may end a page early (with `next`).
    pub examined: usize,
}

/// What a repository stores: its manifests and the distinct blobs they name.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoredSize {
    pub bytes: u64,
    pub blobs: u64,
    pub manifests: u64,
    /// False when the walk stopped at its bound: the figures are then a lower bound.
    pub complete: bool,
}

impl Registry {
    /// When `tag` was last pushed (its link's modification time); `None` if it is gone.
    pub async fn tag_pushed(&self, name: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
        Ok(self
            .store
            .head(&layout::tag_link(name, tag))
            .await?
            .map(|m| m.modified))
    }

    /// When manifest `d` was stored in `name` (its revision link's modification time).
    pub async fn manifest_pushed(&self, name: &RepoName, d: &Digest) -> Result<Option<SystemTime>> {
        Ok(self
            .store
            .head(&layout::manifest_link(name, d))
            .await?
            .map(|m| m.modified))
    }

    /// When `d` was last pulled from `name`, as far as the records say: they are written
    /// at most once per interval per node, so this is "at or a little before".
    pub async fn last_pulled(
        &self,
        name: &RepoName,
        d: &Digest,
        records: PullRecords,
    ) -> Result<Option<SystemTime>> {
        let mut last = None;
        if records.retention {
            last = self
                .store
                .head(&layout::pulled(name, d))
                .await?
                .map(|m| m.modified);
        }
        if records.mirror {
            let mirrored = self
                .store
                .head(&layout::mirror_pulled(name, d))
                .await?
                .map(|m| m.modified);
            last = last.max(mirrored);
        }
        Ok(last)
    }

    /// Up to `want` manifests of `name` that no tag names, in digest order after `last`.
    /// The tags are read first (at most `tags_max`; `Ok(None)` past it, as the answer
    /// would cost too much), then revisions are walked (at most `examine_max`).
    pub async fn untagged_page(
        &self,
        name: &RepoName,
        last: Option<&Digest>,
        want: usize,
        tags_max: usize,
        examine_max: usize,
    ) -> Result<Option<Untagged>> {
        let mut tagged = HashSet::new();
        let mut tags = self.tag_pages(name, None);
        let mut seen = 0;
        while let Some(page) = tags.next(&self.store).await? {
            seen += page.len();
            if seen > tags_max {
                return Ok(None);
            }
            for tag in page {
                let Ok(t) = Tag::parse(&tag) else { continue };
                if let Some(d) = self.resolve_tag(name, &t).await? {
                    tagged.insert(d);
                }
            }
        }
        let dir = format!("{}/", layout::revisions_dir(name));
        let after = last.map(|d| layout::manifest_link(name, d));
        let mut revisions = KeyPages::new(dir.clone(), after);
        let mut out = Untagged::default();
        while let Some(page) = revisions.next(&self.store).await? {
            for key in page {
                let Some(d) = layout::revision_digest(&dir, &key) else {
                    continue;
                };
                out.examined += 1;
                if !tagged.contains(&d) {
                    out.digests.push(d.clone());
                }
                if out.digests.len() >= want || out.examined >= examine_max {
                    out.next = Some(d);
                    return Ok(Some(out));
                }
            }
        }
        Ok(Some(out))
    }

    /// What the next retention pass would delete in `name` now (a dry run of its plan),
    /// when the repository has at most `revisions_max` manifests; `None` past that, as the
    /// plan reads every manifest.
    pub async fn retention_preview(
        &self,
        name: &RepoName,
        rules: &RetentionRules,
        immutable: &ImmutableTags,
        now: i64,
        revisions_max: usize,
    ) -> Result<Option<Vec<Deletion>>> {
        let mut revisions = KeyPages::new(format!("{}/", layout::revisions_dir(name)), None);
        let mut count = 0;
        while let Some(page) = revisions.next(&self.store).await? {
            count += page.len();
            if count > revisions_max {
                return Ok(None);
            }
        }
        Ok(Some(
            self.retention_plan(name, rules, immutable, now).await?,
        ))
    }

    /// The bytes `name` stores: its manifests, and each blob they name (config, layers)
    /// once, at its stored size. Read from the manifests, so it is the same on every backend
    /// (the S3 layout keeps a blob's links by blob, not by repository) and a blob uploaded
    /// but named by no manifest (GC's to collect) is not counted. At most `reads_max`
    /// reads (a manifest, or a blob's `head`); past that the figures are a lower bound.
    pub async fn stored_size(&self, name: &RepoName, reads_max: usize) -> Result<StoredSize> {
        let mut out = StoredSize {
            complete: true,
            ..StoredSize::default()
        };
        let mut reads = 0usize;
        let mut blobs: HashSet<Digest> = HashSet::new();
        let dir = format!("{}/", layout::revisions_dir(name));
        let mut pages = KeyPages::new(dir.clone(), None);
        'walk: while let Some(page) = pages.next(&self.store).await? {
            for key in page {
                let Some(d) = layout::revision_digest(&dir, &key) else {
                    continue;
                };
                if reads >= reads_max {
                    out.complete = false;
                    break 'walk;
                }
                reads += 1;
                let m = match self.get_manifest(name, &Reference::Digest(d)).await {
                    Ok(m) => m,
                    Err(Error::ManifestUnknown(_)) => continue,
                    Err(e) => return Err(e),
                };
                out.bytes += m.bytes.len() as u64;
                out.manifests += 1;
                if let Ok(parsed) = Manifest::parse(Some(&m.media_type), &m.bytes) {
                    let named = parsed.config().into_iter().chain(parsed.layers());
                    blobs.extend(named.map(|desc| desc.digest.clone()));
                }
            }
        }
        for d in blobs {
            if reads >= reads_max {
                out.complete = false;
                break;
            }
            reads += 1;
            if let Some(meta) = self.store.head(&layout::blob_data(&d)).await? {
                out.bytes += meta.size;
                out.blobs += 1;
            }
        }
        Ok(out)
    }
}
