//! Listings: tags, the catalog (both paged with `n` and `last`) and referrers.

use super::route::query_param;
use crate::app::App;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::oci::{media_type, referrers_index, Descriptor, Digest, RepoName};

/// Page size when the client gives no `n`; also the largest `n` honoured.
pub const PAGE_DEFAULT: usize = 1000;
pub const PAGE_MAX: usize = 10_000;

/// Longest `last` accepted: a tag is at most 128 bytes and a repository name 255; a
/// longer one is no position in any listing.
const LAST_BYTES_MAX: usize = 512;

/// Repositories read per storage call while filling a catalog page the caller's policies
/// thin out (memory of one request: this many names plus the page).
const CATALOG_SCAN_CHUNK: usize = 1000;

/// `n` and `last` of a listing request.
struct PageQuery {
    n: usize,
    last: Option<String>,
}

fn page_query(query: &str) -> Result<PageQuery> {
    let n = match query_param(query, "n") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| Error::QueryInvalid("n must be a number".into()))?
            .min(PAGE_MAX),
        None => PAGE_DEFAULT,
    };
    let last = query_param(query, "last").filter(|l| !l.is_empty());
    if last.as_ref().is_some_and(|l| l.len() > LAST_BYTES_MAX) {
        return Err(Error::QueryInvalid("last is too long".into()));
    }
    Ok(PageQuery { n, last })
}

struct Page<T> {
    items: Vec<T>,
    /// The `last` value for the next page, when there is one.
    next: Option<String>,
    n: usize,
}

/// A page from up to `n + 1` items in order after `last`: the extra one only says that
/// there is a next page.
fn page<T>(mut items: Vec<T>, n: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > n;
    items.truncate(n);
    let next = match more {
        true => items.last().map(key),
        false => None,
    };
    Page { items, next, n }
}

fn with_link<T>(resp: Response, path: &str, p: &Page<T>, extra: &str) -> Response {
    match &p.next {
        Some(last) => resp.header(
            "Link",
            format!("<{path}?n={}&last={}{extra}>; rel=\"next\"", p.n, last),
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
    let unknown = || Error::NameUnknown("repository name not known to registry".into());
    let q = page_query(req.head.query())?;
    let want = q.n.saturating_add(1);
    let last = q.last.as_deref();
    let local = match app.registry.repository_exists(name).await? {
        true => Some(app.registry.tags_page(name, last, want).await?),
        false => None,
    };
    let items = match mirror {
        None => local.ok_or_else(unknown)?,
        Some(ns) => match crate::mirror::upstream_tags(ns, name).await {
            Ok(Some(mut all)) => {
                // The upstream's whole list (bounded by the mirror) with the local page: the
                // first `want` of the union after `last` are among them.
                all.retain(|t| last.is_none_or(|l| t.as_str() > l));
                all.extend(local.unwrap_or_default());
                all.sort();
                all.dedup();
                all.truncate(want);
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
    let p = page(items, q.n, String::clone);
    let body = serde_json::json!({ "name": name.as_str(), "tags": p.items });
    let resp = Response::json(200, body.to_string().into_bytes());
    Ok(with_link(resp, &format!("/v2/{name}/tags/list"), &p, ""))
}

/// The repositories the caller may `list-catalog`, paged.
///
/// An anonymous caller that may list none of the repositories there are, on a registry with
/// credentials, is challenged (401) rather than shown an empty list: clients such as
/// python-dxf send credentials only after a challenge, as distribution gives one.
pub async fn catalog(app: &App, req: &mut Request<'_>, identity: &Identity) -> Result<Response> {
    let q = page_query(req.head.query())?;
    let ns = namespace(req.head.query())?;
    let want = q.n.saturating_add(1);
    let live = app.live.get();
    let mut pages = app.registry.catalog_pages(ns.as_ref(), q.last.as_deref());
    let chunk = want.min(CATALOG_SCAN_CHUNK);
    let (mut visible, mut seen_any) = (Vec::new(), false);
    // Read on until the page is full or the catalog ends; memory: one chunk and the page.
    while visible.len() < want {
        let names = pages.take_next(&app.registry.store, chunk).await?;
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
        return Err(super::access::challenge("authentication required"));
    }
    let p = page(visible, q.n, String::clone);
    let body = serde_json::json!({ "repositories": p.items });
    let resp = Response::json(200, body.to_string().into_bytes());
    let extra = ns.map(|ns| format!("&ns={ns}/")).unwrap_or_default();
    Ok(with_link(resp, "/v2/_catalog", &p, &extra))
}

/// The `ns` extension parameter of `_catalog`: list only the repositories under this
/// namespace (`ns=team/` or `ns=team`: names starting with `team/`).
fn namespace(query: &str) -> Result<Option<RepoName>> {
    let Some(ns) = query_param(query, "ns").filter(|ns| !ns.is_empty()) else {
        return Ok(None);
    };
    RepoName::parse(ns.strip_suffix('/').unwrap_or(&ns))
        .map(Some)
        .map_err(|_| Error::NameInvalid("ns is not a repository namespace".into()))
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
    let query = req.head.query();
    let filter = query_param(query, "artifactType").filter(|t| !t.is_empty());
    let q = page_query(query)?;
    let last = match q.last.as_deref().map(Digest::parse) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => return Err(Error::DigestInvalid("last is not a digest".into())),
    };
    let want = q.n.saturating_add(1);
    let mut list = app
        .registry
        .referrers_page(name, subject, filter.as_deref(), last.as_ref(), want)
        .await?;
    if let Some(ns) = mirror {
        match crate::mirror::upstream_referrers(ns, name, subject).await {
            Ok(Some(upstream)) => {
                let wanted = |d: &Descriptor| {
                    filter
                        .as_deref()
                        .is_none_or(|t| d.artifact_type.as_deref() == Some(t))
                        && last.as_ref().is_none_or(|l| &d.digest > l)
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
    }
    let p = page(list, q.n, |d: &Descriptor| d.digest.to_string());
    let mut resp = Response::new(200)
        .header("Content-Type", media_type::OCI_INDEX)
        .body(crate::http::Body::Bytes(referrers_index(&p.items)));
    let extra = filter
        .as_deref()
        .map(|t| format!("&artifactType={}", percent_encode(t)))
        .unwrap_or_default();
    resp = with_link(resp, &format!("/v2/{name}/referrers/{subject}"), &p, &extra);
    if filter.is_some() {
        resp = resp.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(resp)
}

/// A query value as it may stand in a Link header (`artifactType` is a media type, with
/// `/` and possibly `+`, which a query keeps only when encoded).
fn percent_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
