//! Tag lists and referrers from the upstream, merged with what is cached.

use super::*;

/// Largest page of a tag list accepted from an upstream.
const UPSTREAM_TAGS_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Pages of a tag list followed upstream (its `Link: rel="next"`).
const UPSTREAM_TAGS_PAGES_MAX: usize = 64;
/// Tags taken from an upstream list; the rest are not listed.
const UPSTREAM_TAGS_MAX: usize = 100_000;

/// The tags of a repository at the first upstream that knows it, following its pages; None
/// when every upstream answers 404. Values that are not valid tags are left out.
pub async fn upstream_tags(ns: &MirrorNs, name: &RepoName) -> Result<Option<Vec<String>>> {
    let upstream_name = ns.upstream_name(name.as_str());
    let mut last = None;
    'upstreams: for up in &ns.upstreams {
        let mut tags = Vec::new();
        let mut path = "tags/list".to_string();
        for _ in 0..UPSTREAM_TAGS_PAGES_MAX {
            let r = match up.request("GET", upstream_name, &path, &[]).await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(upstream_error(e));
                    continue 'upstreams;
                }
            };
            match r.status {
                200 => {}
                404 if tags.is_empty() => continue 'upstreams,
                status => {
                    last = Some(upstream_error(format!(
                        "{} answered {status}",
                        up.url.authority()
                    )));
                    continue 'upstreams;
                }
            }
            let next = r
                .header("link")
                .and_then(|l| next_page(l, upstream_name))
                .map(str::to_owned);
            let body = match r.bytes(UPSTREAM_TAGS_PAGE_BYTES_MAX).await {
                Ok(b) => b,
                Err(e) => {
                    last = Some(upstream_error(e.to_string()));
                    continue 'upstreams;
                }
            };
            #[derive(serde::Deserialize)]
            struct Page {
                tags: Option<Vec<String>>,
            }
            let page: Page = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    last = Some(upstream_error(format!("tag list: {e}")));
                    continue 'upstreams;
                }
            };
            tags.extend(
                page.tags
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| Tag::parse(t).is_ok()),
            );
            tags.truncate(UPSTREAM_TAGS_MAX);
            match next {
                Some(n) if tags.len() < UPSTREAM_TAGS_MAX => path = n,
                _ => break,
            }
        }
        return Ok(Some(tags));
    }
    match last {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// The path (under `/v2/<repo>/`) of the next page named by a `Link` header, when it is the
/// same repository's tag list: `</v2/library/x/tags/list?n=100&last=v2>; rel="next"`.
pub(super) fn next_page<'a>(link: &'a str, repo: &str) -> Option<&'a str> {
    let (target, params) = link.split_once(';')?;
    if !params.replace(' ', "").contains("rel=\"next\"") {
        return None;
    }
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    // An absolute URL is followed only on the same upstream: keep its path.
    let path = match target.find("://") {
        Some(i) => &target[target[i + 3..].find('/').map(|j| i + 3 + j)?..],
        None => target,
    };
    let rest = path
        .split_once("/v2/")?
        .1
        .strip_prefix(repo)?
        .strip_prefix('/')?;
    rest.starts_with("tags/list").then_some(rest)
}

/// Largest page of a catalog accepted from an upstream.
const UPSTREAM_CATALOG_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Pages of a catalog followed upstream.
const UPSTREAM_CATALOG_PAGES_MAX: usize = 1000;
/// Repositories asked per page of a catalog.
const UPSTREAM_CATALOG_PAGE_ENTRIES: usize = 1000;

/// The repositories the first upstream lists in its `_catalog`, following its pages, up to
/// `max` of those `keep` accepts. Values that are not valid names are left out.
pub async fn upstream_catalog(
    ns: &MirrorNs,
    max: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let up = ns
        .upstreams
        .first()
        .ok_or_else(|| upstream_error("no upstream"))?;
    let mut names = Vec::new();
    let mut path = format!("_catalog?n={UPSTREAM_CATALOG_PAGE_ENTRIES}");
    for _ in 0..UPSTREAM_CATALOG_PAGES_MAX {
        let r = up
            .request_scoped("GET", &path, "registry:catalog:*", &[])
            .await
            .map_err(upstream_error)?;
        if r.status != 200 {
            return Err(upstream_error(format!(
                "{} answered {} to its catalog (list the repositories in `repositories`)",
                up.url.authority(),
                r.status
            )));
        }
        let next = r
            .header("link")
            .and_then(catalog_next_page)
            .map(str::to_owned);
        let body = r
            .bytes(UPSTREAM_CATALOG_PAGE_BYTES_MAX)
            .await
            .map_err(|e| upstream_error(e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Page {
            repositories: Option<Vec<String>>,
        }
        let page: Page =
            serde_json::from_slice(&body).map_err(|e| upstream_error(format!("catalog: {e}")))?;
        for n in page.repositories.unwrap_or_default() {
            if RepoName::parse(&n).is_ok() && keep(&n) && names.len() < max {
                names.push(n);
            }
        }
        match next {
            Some(n) if names.len() < max => path = n,
            _ => break,
        }
    }
    Ok(names)
}

/// The path (under `/v2/`) of a catalog's next page named by a `Link` header.
fn catalog_next_page(link: &str) -> Option<&str> {
    let (target, params) = link.split_once(';')?;
    if !params.replace(' ', "").contains("rel=\"next\"") {
        return None;
    }
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    let rest = target.split_once("/v2/")?.1;
    rest.starts_with("_catalog").then_some(rest)
}

/// Largest referrers index accepted from an upstream.
const UPSTREAM_REFERRERS_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The referrers of `subject` at the first upstream that answers with an index (all of them:
/// the caller filters). None when every upstream answers 404, which is also what upstreams
/// without the referrers API say.
pub async fn upstream_referrers(
    ns: &MirrorNs,
    name: &RepoName,
    subject: &Digest,
) -> Result<Option<Vec<crate::oci::Descriptor>>> {
    let upstream_name = ns.upstream_name(name.as_str());
    let accept = [("Accept", crate::oci::media_type::OCI_INDEX.to_string())];
    let path = format!("referrers/{subject}");
    let Some(r) = first_found(ns, "GET", upstream_name, &path, &accept).await? else {
        return Ok(None);
    };
    let body = r
        .bytes(UPSTREAM_REFERRERS_BYTES_MAX)
        .await
        .map_err(|e| upstream_error(e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Index {
        manifests: Vec<crate::oci::Descriptor>,
    }
    serde_json::from_slice::<Index>(&body)
        .map(|i| Some(i.manifests))
        .map_err(|e| upstream_error(format!("referrers index: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_page_links_stay_in_the_repository() {
        let repo = "library/app";
        assert_eq!(
            next_page("</v2/library/app/tags/list?n=2&last=b>; rel=\"next\"", repo),
            Some("tags/list?n=2&last=b")
        );
        assert_eq!(
            next_page(
                "<https://up.test/v2/library/app/tags/list?last=b>;rel=\"next\"",
                repo
            ),
            Some("tags/list?last=b")
        );
        assert_eq!(
            next_page("</v2/library/app/tags/list?last=b>; rel=\"prev\"", repo),
            None
        );
        assert_eq!(
            next_page("</v2/other/tags/list?last=b>; rel=\"next\"", repo),
            None
        );
        assert_eq!(
            next_page("</v2/library/app/manifests/x>; rel=\"next\"", repo),
            None
        );
        assert_eq!(next_page("garbage", repo), None);
        assert_eq!(
            catalog_next_page("</v2/_catalog?last=b&n=2>; rel=\"next\""),
            Some("_catalog?last=b&n=2")
        );
        assert_eq!(catalog_next_page("</v2/x/tags/list>; rel=\"next\""), None);
    }
}
