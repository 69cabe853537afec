//! Listings: tags, the catalog as the caller's policies let them see it, and referrers. In
//! a mirror, the upstream's lists are merged with what is stored here.

use super::Service;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::future::cold;
use crate::mirror::MirrorNs;
use crate::oci::{Descriptor, Digest, RepoName};

/// Repositories read per storage call while filling a catalog page the caller's policies
/// thin out (memory of one request: this many names plus the page).
const CATALOG_SCAN_CHUNK: usize = 1000;

/// Up to `want` tags of a repository after `last`, in order. In a mirror: the upstream's
/// list with any local tags merged in, or the cached tags alone (with a warning) when no
/// upstream can be reached.
#[tracing::instrument(target = "origin::span", name = "listing.tags", skip_all)]
pub async fn tags(
    svc: &Service,
    name: &RepoName,
    last: Option<&str>,
    want: usize,
    mirror: Option<&MirrorNs>,
) -> Result<Vec<String>> {
    let unknown = || Error::NameUnknown("repository name not known to registry".into());
    let reg = &svc.registry;
    let local = match reg.repository_exists(name).await? {
        true => Some(reg.tags_page(name, last, want).await?),
        false => None,
    };
    let Some(ns) = mirror else {
        return local.ok_or_else(unknown);
    };
    match cold(crate::mirror::upstream_tags(ns, name)).await {
        Ok(Some(mut all)) => {
            // The upstream's whole list (bounded by the mirror) with the local page: the
            // first `want` of the union after `last` are among them.
            all.retain(|t| last.is_none_or(|l| t.as_str() > l));
            all.extend(local.unwrap_or_default());
            all.sort();
            all.dedup();
            all.truncate(want);
            Ok(all)
        }
        Ok(None) => local.ok_or_else(unknown),
        Err(e) => {
            let local = local.ok_or(e)?;
            crate::metrics::METRICS
                .mirror_stale_served
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(repository = %name, "no upstream answered; listing the cached tags");
            Ok(local)
        }
    }
}

/// Up to `want` repositories after `last` (under namespace `ns`) that the caller may
/// `list-catalog`, in order.
///
/// An anonymous caller that may list none of the repositories there are, on a registry with
/// credentials, is asked to authenticate rather than shown an empty list: clients such as
/// python-dxf send credentials only after a challenge, as distribution gives one.
#[tracing::instrument(target = "origin::span", name = "listing.catalog", skip_all)]
pub async fn catalog(
    svc: &Service,
    identity: &Identity,
    ns: Option<&RepoName>,
    last: Option<&str>,
    want: usize,
) -> Result<Vec<String>> {
    let live = svc.live.get();
    let reg = &svc.registry;
    let mut pages = reg.catalog_pages(ns, last);
    let chunk = want.min(CATALOG_SCAN_CHUNK);
    let (mut visible, mut seen_any) = (Vec::new(), false);
    // Read on until the page is full or the catalog ends; memory: one chunk and the page.
    while visible.len() < want {
        let names = pages.take_next(&reg.store, chunk).await?;
        if names.is_empty() {
            break;
        }
        seen_any = true;
        visible.extend(
            live.policies
                .filter_catalog(identity, names.iter().map(String::as_str))
                .into_iter()
                .map(str::to_owned),
        );
    }
    visible.truncate(want);
    if visible.is_empty() && seen_any && live.has_identities && !identity.is_authenticated() {
        crate::metrics::Metrics::add(&crate::metrics::METRICS.policy_denials, 1);
        return Err(Error::Unauthorized("authentication required".into()));
    }
    Ok(visible)
}

/// Up to `want` referrers of `subject` after `last` (by digest), with the artifact type
/// `filter` if given. In a mirror: the upstream's merged with the local ones, or the local
/// ones alone when the upstream has none, has no referrers API or cannot be reached.
#[tracing::instrument(target = "origin::span", name = "listing.referrers", skip_all)]
pub async fn referrers(
    svc: &Service,
    name: &RepoName,
    subject: &Digest,
    filter: Option<&str>,
    last: Option<&Digest>,
    want: usize,
    mirror: Option<&MirrorNs>,
) -> Result<Vec<Descriptor>> {
    let mut list = svc
        .registry
        .referrers_page(name, subject, filter, last, want)
        .await?;
    let Some(ns) = mirror else {
        return Ok(list);
    };
    match cold(crate::mirror::upstream_referrers(ns, name, subject)).await {
        Ok(Some(upstream)) => {
            let wanted = |d: &Descriptor| {
                filter.is_none_or(|t| d.artifact_type.as_deref() == Some(t))
                    && last.is_none_or(|l| &d.digest > l)
            };
            list.extend(upstream.into_iter().filter(wanted));
            list.sort_by(|a, b| a.digest.cmp(&b.digest));
            list.dedup_by(|a, b| a.digest == b.digest);
            list.truncate(want);
        }
        Ok(None) => {}
        Err(e) => {
            e.log_cause();
            tracing::warn!(repository = %name, subject = %subject, error = %e.client_message(),
                "no upstream answered; listing the cached referrers");
        }
    }
    Ok(list)
}
