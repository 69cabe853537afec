//! Read-only views for the web UI: a page of tags with what each names, a manifest and a
//! small blob (an image config) read without the side effects of a pull. A look in a
//! browser is not a pull: no `manifest.pull` event, no pull record for retention, no mirror
//! refresh (a mirror shows what it has cached).

use std::time::SystemTime;

use super::Service;
use crate::error::{Error, Result};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::browse::{PullRecords, StoredSize};
use crate::registry::manifests::StoredManifest;

/// Tags read at most to find a repository's untagged manifests (one read each).
pub const UNTAGGED_TAGS_MAX: usize = 5_000;
/// Revisions examined at most for one page of untagged manifests.
pub const UNTAGGED_EXAMINE_MAX: usize = 5_000;
/// Reads (a manifest, or a blob's size) at most to add up a repository's stored size.
pub const SIZE_READS_MAX: usize = 10_000;
/// Manifests of a repository at most for the UI to preview its retention plan (the plan
/// reads every manifest of the repository).
pub const RETENTION_PREVIEW_REVISIONS_MAX: usize = 2_000;

/// A repository's retention rules and, when it is small enough to plan here, the tags and
/// manifests the next pass would delete.
#[derive(Debug, Default)]
pub struct RetentionPreview {
    pub rules: Vec<String>,
    pub due: Option<Vec<crate::registry::retention::Deletion>>,
}

/// `None` when no retention rule judges `name`.
pub async fn retention(svc: &Service, name: &RepoName) -> Result<Option<RetentionPreview>> {
    let live = svc.live.get();
    let rules = live.retention.rules_for(name.as_str());
    if rules.is_empty() {
        return Ok(None);
    }
    let now = svc.registry.clock.unix_secs() as i64;
    let due = svc
        .registry
        .retention_preview(
            name,
            &live.retention,
            &live.immutable,
            now,
            RETENTION_PREVIEW_REVISIONS_MAX,
        )
        .await?;
    Ok(Some(RetentionPreview { rules, due }))
}

/// One tag and the manifest it names.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// When the tag was last set.
    pub pushed: Option<SystemTime>,
    /// When its manifest was last pulled, where pulls are recorded ([`pull_records`]).
    pub pulled: Option<SystemTime>,
}

/// A manifest no tag names.
#[derive(Debug, Clone)]
pub struct UntaggedInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub pushed: Option<SystemTime>,
    pub pulled: Option<SystemTime>,
}

/// Where pulls of `name` are recorded: with retention rules, and in a mirror namespace.
pub fn pull_records(svc: &Service, name: &RepoName) -> PullRecords {
    svc.live.peek(|l| PullRecords {
        retention: l.retention.applies(name.as_str()),
        mirror: l.mirrors.resolve(name.as_str(), "").is_some(),
    })
}

/// Up to `want` tags of a repository after `last`, in order, each with its manifest's
/// digest, media type and size, and its times: two small reads per tag (the tag link, the
/// revision link) and one or two `head`s, so callers keep `want` small. A tag deleted between the listing and its read is left
/// out. `None` when the repository does not exist.
pub async fn tags(
    svc: &Service,
    name: &RepoName,
    last: Option<&str>,
    want: usize,
) -> Result<Option<Vec<TagInfo>>> {
    let reg = &svc.registry;
    if !reg.repository_exists(name).await? {
        return Ok(None);
    }
    let records = pull_records(svc, name);
    let names = reg.tags_page(name, last, want).await?;
    let mut out = Vec::with_capacity(names.len());
    for tag in names {
        let Ok(parsed) = Tag::parse(&tag) else {
            continue;
        };
        let pushed = reg.tag_pushed(name, &parsed).await?;
        match reg.manifest_meta(name, &Reference::Tag(parsed)).await {
            Ok((digest, media_type, size)) => out.push(TagInfo {
                tag,
                pulled: reg.last_pulled(name, &digest, records).await?,
                digest,
                media_type,
                size,
                pushed,
            }),
            Err(Error::ManifestUnknown(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Some(out))
}

/// Up to `want` manifests of `name` that no tag names (index children, referrers, images
/// whose tag moved), after `last` in digest order, and where the next page starts; the
/// flag is false when the repository has more than [`UNTAGGED_TAGS_MAX`] tags, too many to
/// tell here (the list is then empty). `None` when the repository does not exist.
pub async fn untagged(
    svc: &Service,
    name: &RepoName,
    last: Option<&Digest>,
    want: usize,
) -> Result<Option<(Vec<UntaggedInfo>, Option<Digest>, bool)>> {
    let reg = &svc.registry;
    if !reg.repository_exists(name).await? {
        return Ok(None);
    }
    let Some(page) = reg
        .untagged_page(name, last, want, UNTAGGED_TAGS_MAX, UNTAGGED_EXAMINE_MAX)
        .await?
    else {
        return Ok(Some((Vec::new(), None, false)));
    };
    let records = pull_records(svc, name);
    let mut out = Vec::with_capacity(page.digests.len());
    for d in page.digests {
        match reg.manifest_meta(name, &Reference::Digest(d.clone())).await {
            Ok((digest, media_type, size)) => out.push(UntaggedInfo {
                pushed: reg.manifest_pushed(name, &digest).await?,
                pulled: reg.last_pulled(name, &digest, records).await?,
                digest,
                media_type,
                size,
            }),
            Err(Error::ManifestUnknown(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Some((out, page.next, true)))
}

/// What `name` stores (bytes, blobs, manifests), from at most [`SIZE_READS_MAX`] reads;
/// `None` when the repository does not exist.
pub async fn stored_size(svc: &Service, name: &RepoName) -> Result<Option<StoredSize>> {
    if !svc.registry.repository_exists(name).await? {
        return Ok(None);
    }
    Ok(Some(svc.registry.stored_size(name, SIZE_READS_MAX).await?))
}

/// A manifest by tag or digest, as stored; not a pull (see the module's note).
pub async fn manifest(
    svc: &Service,
    name: &RepoName,
    reference: &Reference,
) -> Result<StoredManifest> {
    svc.registry.get_manifest(name, reference).await
}

/// A blob of the repository (an image config) whole when at most `bytes_max`, with its
/// size; `None` when the repository has no such blob.
pub async fn small_blob(
    svc: &Service,
    name: &RepoName,
    digest: &Digest,
    bytes_max: u64,
) -> Result<Option<(u64, Option<Vec<u8>>)>> {
    svc.registry.small_blob(name, digest, bytes_max).await
}

/// The quota that meters namespace `ns` (the innermost one covering it), with its usage as
/// stored (one read), for the repository tree; None when no quota meters it.
pub async fn quota(
    svc: &Service,
    ns: &str,
) -> Result<
    Option<(
        std::sync::Arc<crate::registry::quota::Quota>,
        crate::registry::quota::Usage,
    )>,
> {
    let Some(q) = svc.live.peek(|l| l.quotas.of(ns).cloned()) else {
        return Ok(None);
    };
    let (usage, _) = svc.registry.quota_usage(&q.namespace).await?;
    Ok(Some((q, usage)))
}
