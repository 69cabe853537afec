//! Listings: tags, the catalog (both paged with `n` and `last`) and referrers.

use super::route::query_param;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::{Request, Response};
use crate::mirror::MirrorNs;
use crate::oci::{media_type, referrers_index, Descriptor, Digest, RepoName};
use crate::service::{listing, Service};

/// Page size when the client gives no `n`; also the largest `n` honoured.
pub const PAGE_DEFAULT: usize = 1000;
pub const PAGE_MAX: usize = 10_000;

/// Longest `last` accepted: a tag is at most 128 bytes and a repository name 255; a
/// longer one is no position in any listing.
const LAST_BYTES_MAX: usize = 512;

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

/// The tags of a repository, paged.
pub async fn tags(
    svc: &Service,
    req: &mut Request<'_>,
    name: &RepoName,
    mirror: Option<&MirrorNs>,
) -> Result<Response> {
    let q = page_query(req.head.query())?;
    let want = q.n.saturating_add(1);
    let items = listing::tags(svc, name, q.last.as_deref(), want, mirror).await?;
    let p = page(items, q.n, String::clone);
    let body = serde_json::json!({ "name": name.as_str(), "tags": p.items });
    let resp = Response::json(200, body.to_string().into_bytes());
    Ok(with_link(resp, &format!("/v2/{name}/tags/list"), &p, ""))
}

/// The repositories the caller may `list-catalog`, paged.
pub async fn catalog(
    svc: &Service,
    req: &mut Request<'_>,
    identity: &Identity,
) -> Result<Response> {
    let q = page_query(req.head.query())?;
    let ns = namespace(req.head.query())?;
    let want = q.n.saturating_add(1);
    let visible = listing::catalog(svc, identity, ns.as_ref(), q.last.as_deref(), want).await?;
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

/// The referrers of a manifest, paged, optionally filtered by `artifactType`.
pub async fn referrers(
    svc: &Service,
    req: &mut Request<'_>,
    name: &RepoName,
    subject: &Digest,
    mirror: Option<&MirrorNs>,
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
    let list = listing::referrers(
        svc,
        name,
        subject,
        filter.as_deref(),
        last.as_ref(),
        want,
        mirror,
    )
    .await?;
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
