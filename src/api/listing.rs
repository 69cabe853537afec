//! Listings: tags, the catalog (both paged with `n` and `last`) and referrers.

use super::route::query_param;
use crate::app::App;
use crate::auth::Identity;
use crate::error::{Code, Error, Result};
use crate::http::{Request, Response};
use crate::oci::{media_type, referrers_index, Descriptor, Digest, RepoName};

/// Page size when the client gives no `n`; also the largest `n` honoured.
pub const PAGE_DEFAULT: usize = 1000;
pub const PAGE_MAX: usize = 10_000;

struct Page {
    items: Vec<String>,
    /// The `last` value for the next page, when there is one.
    next: Option<String>,
    n: usize,
}

/// Applies `last` and `n` to a sorted list.
fn page(all: Vec<String>, query: &str) -> Result<Page> {
    let n = match query_param(query, "n") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| Error::new(Code::Unsupported, "n must be a number").with_status(400))?
            .min(PAGE_MAX),
        None => PAGE_DEFAULT,
    };
    let last = query_param(query, "last");
    let mut rest: Vec<String> = match &last {
        Some(l) => all
            .into_iter()
            .filter(|t| t.as_str() > l.as_str())
            .collect(),
        None => all,
    };
    let more = rest.len() > n;
    rest.truncate(n);
    let next = if more { rest.last().cloned() } else { None };
    Ok(Page {
        items: rest,
        next,
        n,
    })
}

fn with_link(resp: Response, path: &str, p: &Page) -> Response {
    match &p.next {
        Some(last) => resp.header(
            "Link",
            format!("<{path}?n={}&last={}>; rel=\"next\"", p.n, last),
        ),
        None => resp,
    }
}

/// The tags of a repository. In a mirror: the upstream's list with any local tags merged
/// in, or the cached tags alone (with a warning) when no upstream can be reached.
pub async fn tags(
    app: &App,
    req: &mut Request<'_>,
    name: &RepoName,
    mirror: Option<&crate::mirror::MirrorNs>,
) -> Result<Response> {
    let unknown = || Error::new(Code::NameUnknown, "repository name not known to registry");
    let local = match app.registry.repository_exists(name).await? {
        true => Some(app.registry.tags(name).await?),
        false => None,
    };
    let all = match mirror {
        None => local.ok_or_else(unknown)?,
        Some(ns) => match crate::mirror::upstream_tags(ns, name).await {
            Ok(Some(mut all)) => {
                all.extend(local.unwrap_or_default());
                all.sort();
                all.dedup();
                all
            }
            Ok(None) => local.ok_or_else(unknown)?,
            Err(e) => {
                let local = local.ok_or(e)?;
                crate::metrics::METRICS
                    .mirror_stale_served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(repository = %name, "no upstream answered; listing the cached tags");
                local
            }
        },
    };
    let p = page(all, req.head.query())?;
    let body = serde_json::json!({ "name": name.as_str(), "tags": p.items });
    let resp = Response::json(200, body.to_string().into_bytes());
    Ok(with_link(resp, &format!("/v2/{name}/tags/list"), &p))
}

/// The repositories the caller may `list-catalog`, paged.
///
/// An anonymous caller that may list none of the repositories there are, on a registry with
/// credentials, is challenged (401) rather than shown an empty list: clients such as
/// python-dxf send credentials only after a challenge, as distribution gives one.
pub async fn catalog(app: &App, req: &mut Request<'_>, identity: &Identity) -> Result<Response> {
    let all = app.registry.catalog().await?;
    let live = app.live.get();
    let visible: Vec<String> = live
        .policies
        .filter_catalog(identity, all.iter().map(String::as_str))
        .into_iter()
        .map(str::to_owned)
        .collect();
    if visible.is_empty() && !all.is_empty() && live.has_identities && !identity.is_authenticated()
    {
        crate::metrics::Metrics::add(&crate::metrics::METRICS.policy_denials, 1);
        return Err(super::access::challenge("authentication required"));
    }
    let all = visible;
    let p = page(all, req.head.query())?;
    let body = serde_json::json!({ "repositories": p.items });
    let resp = Response::json(200, body.to_string().into_bytes());
    Ok(with_link(resp, "/v2/_catalog", &p))
}

/// The referrers of a manifest. In a mirror: the upstream's with the local ones merged in, or
/// the local ones alone when the upstream has none, has no referrers API or cannot be reached.
pub async fn referrers(
    app: &App,
    req: &mut Request<'_>,
    name: &RepoName,
    subject: &Digest,
    mirror: Option<&crate::mirror::MirrorNs>,
) -> Result<Response> {
    let filter = query_param(req.head.query(), "artifactType").filter(|t| !t.is_empty());
    let mut list = app
        .registry
        .referrers(name, subject, filter.as_deref())
        .await?;
    if let Some(ns) = mirror {
        match crate::mirror::upstream_referrers(ns, name, subject).await {
            Ok(Some(upstream)) => {
                let wanted = |d: &Descriptor| {
                    filter
                        .as_deref()
                        .is_none_or(|t| d.artifact_type.as_deref() == Some(t))
                };
                list.extend(upstream.into_iter().filter(wanted));
                list.sort_by(|a, b| a.digest.cmp(&b.digest));
                list.dedup_by(|a, b| a.digest == b.digest);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(repository = %name, subject = %subject, error = %e.message,
                    "no upstream answered; listing the cached referrers");
            }
        }
    }
    let mut resp = Response::new(200)
        .header("Content-Type", media_type::OCI_INDEX)
        .body(crate::http::Body::Bytes(referrers_index(&list)));
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp)
}
