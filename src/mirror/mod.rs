//! The pull-through cache: namespaces that mirror upstream registries.
//!
//! - Names: `/v2/docker.io/library/alpine/...` is the `docker.io` mirror's
//!   `library/alpine`; so is `/v2/library/alpine/...?ns=docker.io` (containerd), and so is
//!   `/v2/library/alpine/...` when `docker.io` is the default mirror (the Docker engine's
//!   `registry-mirrors`). Content is stored under the full local name.
//! - Manifests by digest are fetched once and kept. Tags are trusted for `tag_freshness`,
//!   then revalidated with a HEAD (a GET only when the digest changed); when no upstream
//!   answers, the cached tag is served with a warning and a metric.
//! - Blobs are fetched once however many clients ask at the same time: one task streams the
//!   upstream body into an upload session while every client reads the growing file; the
//!   digest is verified before the blob is committed, and clients never get the last byte
//!   of content that failed.

pub mod auth;
use crate::http::client;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use client::UpstreamUrl;

use crate::app::App;
use crate::config::{Config, MirrorConfig};
use crate::error::{Code, Error, Result};
use crate::http::growing::{Failure, GrowingBody, Progress, WAITERS_MAX};
use crate::http::{Body, Response};
use crate::metrics::METRICS;
use crate::oci::{Digest, Reference, RepoName, Tag};

/// Blob fetches in flight at once across the process; more are refused with 503.
pub const FETCHES_MAX: usize = 256;
/// Tags whose freshness is remembered; past this the memory is emptied (tags revalidate).
const FRESH_TAGS_MAX: usize = 65_536;
/// Pull records written at most this often per manifest (at most a quarter of evict_after).
const PULL_RECORD_INTERVAL_MAX: Duration = Duration::from_secs(3600);
/// Manifests whose last pull record time is remembered in memory.
const PULL_RECORDS_MAX: usize = 65_536;
/// Largest manifest accepted from an upstream.
const UPSTREAM_MANIFEST_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Every manifest type asked of upstreams (indexes first, so multi-platform tags stay so).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// One upstream registry.
pub struct Upstream {
    pub url: UpstreamUrl,
    client: client::Client,
    auth: auth::Auth,
}

impl Upstream {
    /// Sends a request for `path` under `/v2/` of repository `repo` upstream, answering one
    /// authentication challenge (token fetch or Basic) and retrying once.
    async fn request(
        &self,
        method: &str,
        repo: &str,
        path: &str,
        extra: &[(&str, String)],
    ) -> std::result::Result<client::Response, String> {
        METRICS.mirror_upstream_requests.fetch_add(1, Relaxed);
        let scope = format!("repository:{repo}:pull");
        let target = client::Target {
            url: self.url.clone(),
            path: format!("{}/v2/{repo}/{path}", self.url.path),
        };
        if self.auth.header_for(&scope).is_none() {
            self.auth.prepare(&self.client, &self.url, &scope).await?;
        }
        let mut answered = false;
        loop {
            let mut headers: Vec<(&str, String)> = extra.to_vec();
            if let Some(h) = self.auth.header_for(&scope) {
                headers.push(("Authorization", h));
            }
            let resp = self
                .client
                .send(method, &target, &headers)
                .await
                .map_err(|e| format!("{}: {e}", self.url.authority()))?;
            if resp.status != 401 || answered {
                return Ok(resp);
            }
            answered = true;
            if !self.auth.answer(&self.client, &resp, &scope).await? {
                return Ok(resp);
            }
            resp.drain().await;
        }
    }
}

/// A mirrored namespace.
pub struct MirrorNs {
    pub namespace: String,
    pub registry: String,
    pub upstreams: Vec<Upstream>,
    pub tag_freshness: Duration,
    pub writable: bool,
    pub evict_after: Option<Duration>,
}

impl MirrorNs {
    fn new(namespace: &str, m: &MirrorConfig) -> std::result::Result<MirrorNs, String> {
        let mut upstreams = Vec::new();
        for (i, u) in m.upstream.iter().enumerate() {
            let what = format!("repository {namespace:?} mirror.upstream[{i}]");
            let url = UpstreamUrl::parse(&u.url).map_err(|e| format!("{what}.url: {e}"))?;
            let tls =
                crate::tls::client_config(&format!("{what}.ca_bundle"), u.ca_bundle.as_deref())
                    .map_err(|e| e.0)?;
            upstreams.push(Upstream {
                url,
                client: client::Client {
                    tls,
                    timeout: u.timeout,
                },
                auth: auth::Auth::new(u.username.as_deref(), u.password.as_deref()),
            });
        }
        Ok(MirrorNs {
            namespace: namespace.to_string(),
            registry: m.registry.clone().unwrap_or_else(|| namespace.to_string()),
            upstreams,
            tag_freshness: m.tag_freshness,
            writable: m.writable,
            evict_after: m.evict_after,
        })
    }

    /// The repository name upstream for a local name inside this namespace.
    pub fn upstream_name<'a>(&self, local: &'a str) -> &'a str {
        local
            .strip_prefix(self.namespace.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(local)
    }
}

/// A blob being fetched: the upload's data file, shared by every client reading along.
struct Fetch {
    /// The repository it is fetched for: others must have the upstream confirm they have it.
    repo: RepoName,
    progress: Arc<Progress>,
    file: std::sync::OnceLock<std::fs::File>,
}

/// All mirrored namespaces, shared by every worker.
#[derive(Default)]
pub struct Mirrors {
    pub namespaces: Vec<MirrorNs>,
    default: Option<usize>,
    /// Namespaces of ordinary (non-mirror) repositories: never mapped to the default mirror.
    local_namespaces: Vec<String>,
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    fresh: Mutex<HashMap<(String, String), Instant>>,
    pulled: Mutex<HashMap<(String, Digest), Instant>>,
    /// Threads that hash fetched blobs, started with the first fetch.
    hash_pool: std::sync::OnceLock<Option<crate::pool::Pool>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn upstream_error(message: impl Into<String>) -> Error {
    Error::new(
        Code::Unknown,
        format!("upstream unavailable: {}", message.into()),
    )
    .with_status(502)
}

impl Mirrors {
    pub fn from_config(config: &Config) -> std::result::Result<Mirrors, String> {
        let mut mirrors = Mirrors::default();
        for repo in &config.repository {
            let ns = repo.namespace.trim_end_matches('/');
            match &repo.mirror {
                Some(m) => {
                    if m.default {
                        mirrors.default = Some(mirrors.namespaces.len());
                    }
                    mirrors.namespaces.push(MirrorNs::new(ns, m)?);
                }
                None if !ns.is_empty() => mirrors.local_namespaces.push(ns.to_string()),
                None => {}
            }
        }
        Ok(mirrors)
    }

    /// Maps a request's repository name to a mirror: the mirror's index and the local name.
    pub fn resolve(&self, name: &str, query: &str) -> Option<(usize, String)> {
        if self.namespaces.is_empty() {
            return None;
        }
        let under = |ns: &str| {
            name.strip_prefix(ns)
                .is_some_and(|r| r.starts_with('/') && r.len() > 1)
        };
        // containerd names the registry it mirrors; an unknown one never means the default.
        let ns_param = crate::api::route::query_param(query, "ns");
        if let Some(ns) = &ns_param {
            if let Some(i) = self.namespaces.iter().position(|m| m.registry == **ns) {
                let m = &self.namespaces[i];
                if under(&m.namespace) {
                    return Some((i, name.to_string()));
                }
                return Some((i, format!("{}/{name}", m.namespace)));
            }
        }
        let best = self
            .namespaces
            .iter()
            .enumerate()
            .filter(|(_, m)| under(&m.namespace))
            .max_by_key(|(_, m)| m.namespace.len());
        if let Some((i, _)) = best {
            return Some((i, name.to_string()));
        }
        if ns_param.is_some() {
            return None;
        }
        let i = self.default?;
        let local = self
            .local_namespaces
            .iter()
            .any(|ns| name == ns || under(ns));
        if local {
            return None;
        }
        Some((i, format!("{}/{name}", self.namespaces[i].namespace)))
    }

    fn is_fresh(&self, ns: &MirrorNs, name: &RepoName, tag: &Tag) -> bool {
        let key = (name.as_str().to_string(), tag.as_str().to_string());
        lock(&self.fresh)
            .get(&key)
            .is_some_and(|t| t.elapsed() < ns.tag_freshness)
    }

    fn mark_fresh(&self, name: &RepoName, tag: &Tag) {
        let mut fresh = lock(&self.fresh);
        if fresh.len() >= FRESH_TAGS_MAX {
            fresh.clear();
        }
        fresh.insert(
            (name.as_str().to_string(), tag.as_str().to_string()),
            Instant::now(),
        );
    }

    /// Whether a pull of this manifest should be recorded now (throttled per manifest).
    fn pull_record_due(&self, ns: &MirrorNs, name: &RepoName, d: &Digest) -> bool {
        let Some(evict) = ns.evict_after else {
            return false;
        };
        let every = (evict / 4).min(PULL_RECORD_INTERVAL_MAX);
        let key = (name.as_str().to_string(), d.clone());
        let mut pulled = lock(&self.pulled);
        if pulled.get(&key).is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        if pulled.len() >= PULL_RECORDS_MAX {
            pulled.clear();
        }
        pulled.insert(key, Instant::now());
        true
    }
}

/// Makes the local copy of a mirrored manifest current before it is served: fetches what
/// is missing, revalidates a stale tag, and falls back to the cached tag when no upstream
/// answers. Afterwards the normal manifest path serves it.
pub async fn refresh_manifest(
    app: &App,
    ns: &MirrorNs,
    name: &RepoName,
    reference: &Reference,
) -> Result<()> {
    let reg = &app.registry;
    let upstream_name = ns.upstream_name(name.as_str());
    match reference {
        Reference::Digest(d) => {
            if reg.manifest_meta(name, reference).await.is_ok() {
                return Ok(());
            }
            let (media_type, body, _) = fetch_manifest(ns, upstream_name, d.as_str()).await?;
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(upstream_error(format!(
                    "manifest {d} arrived with digest {actual}"
                )));
            }
            reg.put_manifest_mirrored(name, reference, media_type.as_deref(), body)
                .await?;
            if ns.evict_after.is_some() {
                reg.note_pulled(name, d).await?;
            }
            Ok(())
        }
        Reference::Tag(tag) => {
            let local = reg.resolve_tag(name, tag).await?;
            if local.is_some() && app.mirrors.is_fresh(ns, name, tag) {
                return Ok(());
            }
            match revalidate_tag(app, ns, name, tag, local.as_ref()).await {
                Ok(()) => {
                    app.mirrors.mark_fresh(name, tag);
                    Ok(())
                }
                Err(e) if e.status == 404 => Err(e),
                Err(e) => match local {
                    Some(d) => {
                        METRICS.mirror_stale_served.fetch_add(1, Relaxed);
                        tracing::warn!(
                            repository = %name, tag = %tag, digest = %d, error = %e.message,
                            "upstream unreachable: serving the cached tag"
                        );
                        Ok(())
                    }
                    None => Err(e),
                },
            }
        }
    }
}

/// Checks a tag upstream: HEAD first, GET only when the digest differs from `local`.
async fn revalidate_tag(
    app: &App,
    ns: &MirrorNs,
    name: &RepoName,
    tag: &Tag,
    local: Option<&Digest>,
) -> Result<()> {
    let reg = &app.registry;
    let upstream_name = ns.upstream_name(name.as_str());
    if let Some(local) = local {
        let mut last = None;
        for up in &ns.upstreams {
            let path = format!("manifests/{tag}");
            let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
            match up.request("HEAD", upstream_name, &path, &accept).await {
                Ok(r) if r.status == 200 => {
                    if r.header("docker-content-digest") == Some(local.as_str()) {
                        return Ok(());
                    }
                    break;
                }
                Ok(r) if r.status == 404 => {
                    last = Some(Error::new(
                        Code::ManifestUnknown,
                        "manifest unknown upstream",
                    ))
                }
                Ok(r) => {
                    last = Some(upstream_error(format!(
                        "{} answered {}",
                        up.url.authority(),
                        r.status
                    )))
                }
                Err(e) => last = Some(upstream_error(e)),
            }
            if last.as_ref().is_some_and(|e| e.status == 404) {
                continue;
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    let (media_type, body, header_digest) = fetch_manifest(ns, upstream_name, tag.as_str()).await?;
    if let Some(hd) = header_digest.as_deref().and_then(|h| Digest::parse(h).ok()) {
        let actual = Digest::of(hd.algorithm(), &body);
        if actual != hd {
            return Err(upstream_error(format!(
                "manifest for tag {tag} has digest {actual}, upstream said {hd}"
            )));
        }
    }
    let put = reg
        .put_manifest_mirrored(
            name,
            &Reference::Tag(tag.clone()),
            media_type.as_deref(),
            body,
        )
        .await?;
    if ns.evict_after.is_some() {
        reg.note_pulled(name, &put.digest).await?;
    }
    tracing::info!(repository = %name, tag = %tag, digest = %put.digest, "mirrored tag updated from upstream");
    Ok(())
}

/// Sends `method path` to each upstream in turn until one answers 200. None when every one
/// answers 404; otherwise the last error (a 502 naming the upstream or the failure).
async fn first_found(
    ns: &MirrorNs,
    method: &str,
    upstream_name: &str,
    path: &str,
    extra: &[(&str, String)],
) -> Result<Option<client::Response>> {
    let mut last = None;
    for up in &ns.upstreams {
        match up.request(method, upstream_name, path, extra).await {
            Ok(r) if r.status == 200 => return Ok(Some(r)),
            Ok(r) if r.status == 404 => {}
            Ok(r) => {
                last = Some(upstream_error(format!(
                    "{} answered {}",
                    up.url.authority(),
                    r.status
                )))
            }
            Err(e) => last = Some(upstream_error(e)),
        }
    }
    last.map_or(Ok(None), Err)
}

/// GETs a manifest from the first upstream that has it: (media type, bytes, digest header).
async fn fetch_manifest(
    ns: &MirrorNs,
    upstream_name: &str,
    reference: &str,
) -> Result<(Option<String>, Vec<u8>, Option<String>)> {
    let path = format!("manifests/{reference}");
    let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
    let r = first_found(ns, "GET", upstream_name, &path, &accept)
        .await?
        .ok_or_else(|| Error::new(Code::ManifestUnknown, "manifest unknown upstream"))?;
    let media_type = r.header("content-type").map(str::to_owned);
    let digest = r.header("docker-content-digest").map(str::to_owned);
    let body = r
        .bytes(UPSTREAM_MANIFEST_BYTES_MAX)
        .await
        .map_err(|e| upstream_error(e.to_string()))?;
    Ok((media_type, body, digest))
}

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
fn next_page<'a>(link: &'a str, repo: &str) -> Option<&'a str> {
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

/// HEAD of a blob that is not stored: asks the upstream for its size.
pub async fn blob_size_upstream(ns: &MirrorNs, name: &RepoName, digest: &Digest) -> Result<u64> {
    let upstream_name = ns.upstream_name(name.as_str());
    let r = first_found(ns, "HEAD", upstream_name, &format!("blobs/{digest}"), &[])
        .await?
        .ok_or_else(|| Error::new(Code::BlobUnknown, "blob unknown to registry"))?;
    r.header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| upstream_error("blob HEAD without Content-Length"))
}

impl Mirrors {
    /// True while a fetch of `digest` for repository `name` runs (until it is linked).
    pub fn fetching_for(&self, name: &RepoName, digest: &Digest) -> bool {
        lock(&self.fetches)
            .get(digest)
            .is_some_and(|f| f.repo == *name)
    }
}

/// Serves a blob that is not stored yet: joins the fetch in flight or starts one, then
/// streams the file as it grows. `range` is the parsed Range header against the size.
pub async fn serve_blob(
    app: &App,
    ns_index: usize,
    name: &RepoName,
    digest: &Digest,
    range_header: Option<&str>,
) -> Result<Response> {
    let mirrors = &app.mirrors;
    let (fetch, confirm) = {
        let mut fetches = lock(&mirrors.fetches);
        match fetches.get(digest) {
            Some(f) => {
                if Arc::strong_count(&f.progress) > WAITERS_MAX {
                    return Err(busy("too many clients waiting for this blob"));
                }
                (f.clone(), f.repo != *name)
            }
            None => {
                if fetches.len() >= FETCHES_MAX {
                    return Err(busy("too many upstream fetches in flight"));
                }
                let f = Arc::new(Fetch {
                    repo: name.clone(),
                    progress: Arc::default(),
                    file: std::sync::OnceLock::new(),
                });
                fetches.insert(digest.clone(), f.clone());
                let app_rc = app
                    .this
                    .upgrade()
                    .ok_or_else(|| Error::internal("application gone"))?;
                compio::runtime::spawn(run_fetch(
                    app_rc,
                    ns_index,
                    name.clone(),
                    digest.clone(),
                    f.clone(),
                ))
                .detach();
                (f, false)
            }
        }
    };
    if confirm {
        // In flight for another repository: this one must have it upstream too.
        blob_size_upstream(&mirrors.namespaces[ns_index], name, digest).await?;
    }
    let progress = fetch.progress.clone();
    let idle = app.config.server.body_idle_timeout;
    let total = match compio::time::timeout(idle, progress.wait_start()).await {
        Ok(Ok(total)) => total,
        Ok(Err(f)) => return Err(failure_error(f)),
        Err(_) => return Err(upstream_error("no answer in time")),
    };
    let file = fetch
        .file
        .get()
        .ok_or_else(|| Error::internal("fetch started without a file"))?
        .try_clone()
        .map_err(|e| Error::internal(e.to_string()))?;
    let file = {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor was just duplicated and is owned by nobody else.
        unsafe { compio::fs::File::from_raw_fd(file.into_raw_fd()) }
    };
    let (resp, offset, len) = crate::api::blobs::ranged(digest, total, range_header)?;
    Ok(resp.body(Body::Growing(GrowingBody {
        file,
        progress,
        offset,
        len,
    })))
}

fn busy(message: &str) -> Error {
    Error::new(Code::TooManyRequests, message)
        .with_status(503)
        .with_header("Retry-After", "1")
}

fn failure_error(f: Failure) -> Error {
    if f.status == 404 {
        Error::new(Code::BlobUnknown, "blob unknown to registry")
    } else {
        upstream_error(f.message)
    }
}

/// The fetch task: runs detached on the worker that started it, so it finishes for the
/// other clients even when the first one goes away.
async fn run_fetch(
    app: Rc<App>,
    ns_index: usize,
    name: RepoName,
    digest: Digest,
    fetch: Arc<Fetch>,
) {
    let started = Instant::now();
    let result = fetch_blob(&app, ns_index, &name, &digest, &fetch).await;
    match &result {
        Ok(size) => {
            METRICS.mirror_blob_fetches.fetch_add(1, Relaxed);
            METRICS.mirror_bytes_fetched.fetch_add(*size, Relaxed);
            tracing::info!(repository = %name, digest = %digest, bytes = size,
                duration_ms = started.elapsed().as_millis() as u64, "blob fetched from upstream");
        }
        Err(f) => {
            METRICS.mirror_fetch_failures.fetch_add(1, Relaxed);
            tracing::warn!(repository = %name, digest = %digest, status = f.status, error = %f.message,
                "blob fetch from upstream failed");
        }
    }
    fetch.progress.finish(result.map(|_| ()));
    let mut fetches = lock(&app.mirrors.fetches);
    if fetches.get(&digest).is_some_and(|f| Arc::ptr_eq(f, &fetch)) {
        fetches.remove(&digest);
    }
}

fn dup_std(f: &compio::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(f.as_fd().try_clone_to_owned()?))
}

fn failed(status: u16, message: impl Into<String>) -> Failure {
    Failure {
        status,
        message: message.into(),
    }
}

/// Streams the upstream body into an upload session and commits it once verified.
async fn fetch_blob(
    app: &App,
    ns_index: usize,
    name: &RepoName,
    digest: &Digest,
    fetch: &Fetch,
) -> std::result::Result<u64, Failure> {
    let ns = &app.mirrors.namespaces[ns_index];
    let upstream_name = ns.upstream_name(name.as_str());
    let reg = &app.registry;
    let internal = |e: Error| failed(500, e.message);
    // Committed meanwhile (a request that looked just before another fetch finished)?
    // Linked here only if the upstream has it in this repository. Held first, so a blob
    // found stored stays stored (see registry/gc.rs).
    reg.hold_blob(digest).await.map_err(internal)?;
    if let Some(stored) = reg.open_stored_blob(digest).await.map_err(internal)? {
        blob_size_upstream(ns, name, digest)
            .await
            .map_err(|e| failed(e.status, e.message))?;
        let total = crate::storage::BlobReader::size(&stored);
        let file = dup_std(&stored.into_file()).map_err(|e| failed(500, e.to_string()))?;
        let _ = fetch.file.set(file);
        reg.link_blob(name, digest).await.map_err(internal)?;
        fetch.progress.start(total);
        fetch.progress.advance(total);
        return Ok(0);
    }
    let mut resp = None;
    let mut last = failed(404, "blob unknown upstream");
    for up in &ns.upstreams {
        match up
            .request("GET", upstream_name, &format!("blobs/{digest}"), &[])
            .await
        {
            Ok(r) if r.status == 200 => {
                resp = Some(r);
                break;
            }
            Ok(r) if r.status == 404 => {}
            Ok(r) => last = failed(502, format!("{} answered {}", up.url.authority(), r.status)),
            Err(e) => last = failed(502, e),
        }
    }
    let mut resp = resp.ok_or(last)?;
    let id = reg.upload_start(name).await.map_err(internal)?;
    let result = async {
        let mut session = reg
            .upload_open_or_unknown(name, &id)
            .await
            .map_err(internal)?;
        let reader = reg
            .upload_data_reader(name, &id)
            .await
            .map_err(internal)?
            .ok_or_else(|| failed(500, "upload data vanished"))?;
        let file = dup_std(&reader.into_file()).map_err(|e| failed(500, e.to_string()))?;
        let _ = fetch.file.set(file);
        let declared = resp.content_length();
        if let Some(total) = declared {
            fetch.progress.start(total);
        }
        if session.hasher.algorithm() != digest.algorithm() {
            session.hasher = crate::oci::Hasher::new(digest.algorithm());
        }
        // Three buffers in a pipeline: while one is written to the file (by the kernel, off
        // this thread), the next is hashed here and the one after fills from the upstream.
        let mut hasher = Some(std::mem::replace(
            &mut session.hasher,
            crate::oci::Hasher::new(digest.algorithm()),
        ));
        let pool = app.mirrors.hash_pool();
        let mut free: Vec<Vec<u8>> = (0..3).map(|_| app.buffers.take()).collect();
        let mut to_hash: Option<Vec<u8>> = None;
        let mut to_write: Option<Vec<u8>> = None;
        let mut ended = false;
        let mut received = 0u64;
        let mut written = 0u64;
        while !(ended && to_hash.is_none() && to_write.is_none()) {
            let fill_buf = if ended { None } else { free.pop() };
            let write_buf = to_write.take();
            let writing = async {
                match write_buf {
                    Some(b) => {
                        let (r, b) = reg.upload_write(&mut session, b).await;
                        Some((r, b))
                    }
                    None => None,
                }
            };
            let filling = async {
                match fill_buf {
                    Some(b) => Some(fill(&mut resp, b).await),
                    None => None,
                }
            };
            let hashing = async {
                match (to_hash.take(), hasher.take()) {
                    (Some(b), Some(h)) => Some(hash_update(pool, h, b).await),
                    (_, h) => {
                        hasher = h;
                        None
                    }
                }
            };
            let ((wrote, filled), hashed) =
                crate::future::join(crate::future::join(writing, filling), hashing).await;
            if let Some((r, b)) = wrote {
                r.map_err(internal)?;
                written += b.len() as u64;
                fetch.progress.advance(written);
                free.push(b);
            }
            if let Some(done) = hashed {
                let (h, b) = done.ok_or_else(|| failed(500, "hashing failed"))?;
                hasher = Some(h);
                to_write = Some(b);
            }
            if let Some((r, end)) = filled {
                let b = r.map_err(|e| failed(502, format!("upstream body: {e}")))?;
                ended = end;
                received += b.len() as u64;
                if declared.is_some_and(|t| received > t) {
                    return Err(failed(502, "upstream sent more than it declared"));
                }
                if b.is_empty() {
                    free.push(b);
                } else {
                    to_hash = Some(b);
                }
            }
        }
        for b in free {
            app.buffers.give(b);
        }
        // Read to its end: the connection can serve the next request during the commit.
        resp.release();
        session.hasher = hasher.ok_or_else(|| failed(500, "hashing failed"))?;
        if declared.is_some_and(|t| written != t) {
            return Err(failed(502, "upstream body shorter than declared"));
        }
        // Verified: clients may have the last byte now, while the commit makes it durable.
        let actual = session.hasher.clone().finalize();
        if &actual != digest {
            return Err(failed(
                502,
                format!("upstream content has digest {actual}, not {digest}"),
            ));
        }
        if declared.is_none() {
            fetch.progress.start(written);
        }
        fetch.progress.advance(written);
        fetch.progress.finish(Ok(()));
        reg.upload_finish(session, digest)
            .await
            .map_err(|e| failed(502, format!("upstream content rejected: {}", e.message)))?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = reg.upload_cancel(name, &id).await;
    }
    result
}

/// Hashing jobs queued at once: each fetch has at most one outstanding.
const HASH_QUEUE_MAX: usize = FETCHES_MAX;

impl Mirrors {
    /// The hashing threads, one per core: a fetch hashes one buffer there while the worker
    /// receives the next and writes the previous, so the hash does not hold up the sockets.
    /// None if the threads could not be started (fetches then hash on the worker).
    fn hash_pool(&self) -> Option<&crate::pool::Pool> {
        self.hash_pool
            .get_or_init(|| {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                match crate::pool::Pool::new("origin-hash", threads, HASH_QUEUE_MAX) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start hashing threads; hashing on the workers");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Feeds `buf` to `hasher` on the hashing threads (here when there are none or their queue
/// is full). None if the hashing job died.
async fn hash_update(
    pool: Option<&crate::pool::Pool>,
    mut hasher: crate::oci::Hasher,
    mut buf: Vec<u8>,
) -> Option<(crate::oci::Hasher, Vec<u8>)> {
    if let Some(pool) = pool {
        // The job owns its inputs through this slot, so a refused job leaves them here.
        let slot = Arc::new(Mutex::new(Some((hasher, buf))));
        let job_slot = slot.clone();
        if let Some(reply) = pool.submit(move || {
            let (mut h, b) = lock(&job_slot).take()?;
            h.update(&b);
            Some((h, b))
        }) {
            return reply.await.flatten();
        }
        (hasher, buf) = lock(&slot).take()?;
    }
    hasher.update(&buf);
    Some((hasher, buf))
}

/// Reads the upstream body into `buf` until it is full or the body ends. Returns the bytes
/// (empty at the end) and whether the body has ended.
async fn fill(resp: &mut client::Response, mut buf: Vec<u8>) -> (std::io::Result<Vec<u8>>, bool) {
    buf.clear();
    while buf.len() < buf.capacity() {
        let (r, b) = resp.read(buf).await;
        buf = b;
        match r {
            Ok(0) => return (Ok(buf), true),
            Ok(_) => {}
            Err(e) => return (Err(e), true),
        }
    }
    (Ok(buf), false)
}

/// Evicts what has not been pulled for each mirror's `evict_after`.
pub async fn evict(
    app_registry: &crate::registry::Registry,
    mirrors: &Mirrors,
    dry_run: bool,
) -> Result<usize> {
    let mut total = 0;
    for ns in &mirrors.namespaces {
        if let Some(age) = ns.evict_after {
            total += app_registry
                .evict_unpulled(&ns.namespace, age, dry_run)
                .await?;
        }
    }
    Ok(total)
}

/// Records a pull of a mirrored manifest (for eviction), throttled per manifest.
pub async fn note_pulled(app: &App, ns: &MirrorNs, name: &RepoName, d: &Digest) {
    if app.mirrors.pull_record_due(ns, name, d) {
        if let Err(e) = app.registry.note_pulled(name, d).await {
            tracing::warn!(error = %e.message, "could not record a mirrored pull");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(toml_extra: &str) -> Mirrors {
        let text = format!(
            r#"
[server]
[storage.fs]
root_dir = "/tmp/x"
[[repository]]
namespace = "team"
policy_default_allow = true
[[repository]]
namespace = ""
policy_default_allow = true
[[repository]]
namespace = "docker.io"
policy_default_allow = true
[repository.mirror]
default = true
[[repository.mirror.upstream]]
url = "http://127.0.0.1:1"
[[repository]]
namespace = "ghcr"
policy_default_allow = true
[repository.mirror]
registry = "ghcr.io"
[[repository.mirror.upstream]]
url = "http://127.0.0.1:2"
{toml_extra}"#
        );
        let config = Config::parse(&text).unwrap();
        Mirrors::from_config(&config).unwrap()
    }

    #[test]
    fn names_map_to_mirrors() {
        let m = mirrors("");
        assert_eq!(
            m.resolve("library/alpine", ""),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve("docker.io/library/alpine", ""),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve("library/alpine", "ns=docker.io"),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve("owner/app", "ns=ghcr.io"),
            Some((1, "ghcr/owner/app".into()))
        );
        assert_eq!(
            m.resolve("ghcr/owner/app", ""),
            Some((1, "ghcr/owner/app".into()))
        );
        // Explicit local namespaces stay local; unknown ns values fall back to the rules.
        assert_eq!(m.resolve("team/app", ""), None);
        assert_eq!(m.resolve("team", ""), None);
        assert_eq!(m.resolve("team/app", "ns=quay.io"), None);
        assert_eq!(m.resolve("x/y", "ns=quay.io"), None);
        assert_eq!(
            m.namespaces[0].upstream_name("docker.io/library/alpine"),
            "library/alpine"
        );
    }

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
    }

    #[test]
    fn config_is_checked() {
        let bad = |extra: &str| {
            let text = format!(
                "[server]\n[storage.fs]\nroot_dir = \"/tmp/x\"\n[[repository]]\nnamespace = \"m\"\n[repository.mirror]\n{extra}"
            );
            Config::parse(&text).err().map(|e| e.0)
        };
        assert!(bad("upstream = []")
            .unwrap()
            .contains("at least one upstream"));
        assert!(bad("[[repository.mirror.upstream]]\nurl = \"ftp://x\"")
            .unwrap()
            .contains("http://"));
        assert!(
            bad("[[repository.mirror.upstream]]\nurl = \"http://x\"\nusername = \"u\"")
                .unwrap()
                .contains("go together")
        );
        assert!(bad("[[repository.mirror.upstream]]\nurl = \"http://x\"").is_none());
    }
}
