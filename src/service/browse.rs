//! Read-only views for the web UI: a page of tags with what each names, a manifest and a
//! small blob (an image config) read without the side effects of a pull. A look in a
//! browser is not a pull: no `manifest.pull` event, no pull record for retention, no mirror
//! refresh (a mirror shows what it has cached).

use super::Service;
use crate::error::Result;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::registry::manifests::StoredManifest;

/// One tag and the manifest it names.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// Up to `want` tags of a repository after `last`, in order, each with its manifest's
/// digest, media type and size: two small reads per tag (the tag link, the revision link),
/// so callers keep `want` small. A tag deleted between the listing and its read is left
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
    let names = reg.tags_page(name, last, want).await?;
    let mut out = Vec::with_capacity(names.len());
    for tag in names {
        let Ok(parsed) = Tag::parse(&tag) else {
            continue;
        };
        match reg.manifest_meta(name, &Reference::Tag(parsed)).await {
            Ok((digest, media_type, size)) => out.push(TagInfo {
                tag,
                digest,
                media_type,
                size,
            }),
            Err(crate::error::Error::ManifestUnknown(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Some(out))
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
