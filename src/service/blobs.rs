//! Blobs: reading one (from storage, by a redirect to the bucket, or from a mirror's
//! upstream while it is fetched) with its `blob.pull` event, and unlinking one (audited).

use std::sync::Arc;

use super::audit;
use super::events::{self, Spec};
use super::{Caller, Service};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::future::cold;
use crate::mirror::MirrorNs;
use crate::oci::{Digest, RepoName};
use crate::storage::{BackendReader, BlobReader};

fn blob_unknown() -> Error {
    Error::BlobUnknown("blob unknown to registry".into())
}

/// How a blob's bytes reach the client.
pub enum Content {
    /// A HEAD: the size only.
    Head,
    /// Read from storage.
    Stored(BackendReader),
    /// In the bucket: the client is sent to this URL (S3 with `redirect`).
    Redirect(String),
    /// Arriving from a mirror's upstream: served as it grows.
    Fetching(crate::mirror::Fetching),
}

/// A blob to serve: how, and what `fit` made of its size (the region a Range asks for).
pub struct Served<T> {
    pub content: Content,
    pub fit: T,
}

/// Reads a blob of repository `name`; `head_only` for its size alone. `fit` sees the size
/// before the pull counts (a Range it cannot satisfy fails the read, and no event is
/// sent). In a mirror, a blob stored for another repository is linked here once the
/// upstream confirms this repository has it, else fetched; `moving` is called while an
/// upstream fetch makes progress (the request's deadline lets a moving body finish).
#[allow(clippy::too_many_arguments)]
#[tracing::instrument(target = "origin::span", name = "blobs.read", skip_all)]
pub async fn read<T>(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    head_only: bool,
    mirror: Option<&Arc<MirrorNs>>,
    moving: &dyn Fn(),
    fit: impl FnOnce(u64) -> Result<T>,
) -> Result<Served<T>> {
    let reg = &svc.registry;
    if let Some(ns) = mirror {
        if reg.repo_blob_size(name, digest).await?.is_none() {
            // A fetch for this repository that is committing (stored, not linked yet) is
            // joined rather than confirmed again upstream.
            let linked = !svc.mirrors.fetching_for(name, digest)
                && reg.blob_size(digest).await?.is_some()
                && {
                    cold(crate::mirror::blob_size_upstream(ns, name, digest)).await?;
                    cold(reg.mount_blob(name, digest, None)).await?
                };
            if !linked {
                if head_only {
                    let size = cold(crate::mirror::blob_size_upstream(ns, name, digest)).await?;
                    let fit = fit(size)?;
                    return Ok(Served {
                        content: Content::Head,
                        fit,
                    });
                }
                if let Some(fetching) =
                    cold(crate::mirror::serve_blob(svc, ns, name, digest, moving)).await?
                {
                    // Streamed while it arrives: pulled all the same.
                    let size = fetching.total;
                    let fit = fit(size)?;
                    pulled(svc, caller, name, digest, size).await?;
                    return Ok(Served {
                        content: Content::Fetching(fetching),
                        fit,
                    });
                }
            }
        }
    }
    // On S3 with `redirect`, a GET is answered with a redirect to the bucket after the same
    // checks as a streamed one (the link here, the blob's size); HEAD never redirects. A
    // ranged GET redirects too: the client sends its range to S3, which honours it.
    let redirect = !head_only && reg.redirects_blobs();
    let reader = if head_only || redirect {
        None
    } else {
        Some(
            reg.open_blob(name, digest)
                .await?
                .ok_or_else(blob_unknown)?,
        )
    };
    let size = match &reader {
        Some(r) => r.size(),
        None => reg
            .repo_blob_size(name, digest)
            .await?
            .ok_or_else(blob_unknown)?,
    };
    let fit = fit(size)?;
    if !head_only {
        pulled(svc, caller, name, digest, size).await?;
    }
    let content = match reader {
        Some(r) => Content::Stored(r),
        None if redirect => {
            let url = reg
                .blob_redirect_url(digest)?
                .ok_or_else(|| Error::internal("redirect without a URL"))?;
            crate::metrics::METRICS
                .blob_redirects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Content::Redirect(url)
        }
        None => Content::Head,
    };
    Ok(Served { content, fit })
}

/// The `blob.pull` event of a read (its `required` webhooks may refuse it).
async fn pulled(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    if !events::wanted(svc) {
        return Ok(());
    }
    let spec = Spec {
        kind: EventKind::BlobPull,
        name,
        digest,
        tag: None,
        reference: Some(digest.as_str()),
        media_type: None,
        size: Some(size),
    };
    let actor = events::client(caller);
    events::before(svc, &actor, &spec).await?;
    events::after(svc, &actor, &spec).await;
    Ok(())
}

/// Unlinks a blob from repository `name` (GC reclaims its data once nothing links it), with
/// its audit record.
#[tracing::instrument(target = "origin::span", name = "blobs.delete", skip_all)]
pub async fn delete(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
) -> Result<()> {
    let _write = caller.clock.hold();
    let result = match svc.registry.unlink_blob(name, digest).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(blob_unknown()),
        Err(e) => Err(e),
    };
    let write = audit::Write {
        digest: Some(digest),
        ..audit::Write::new(audit::BLOB_DELETE, name)
    };
    audit::written(svc, caller, &write, &result);
    result
}
