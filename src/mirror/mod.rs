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
mod blobs;
mod listings;
mod manifests;
use crate::http::client;

pub use blobs::{blob_size_upstream, fetch_stored, serve_blob, Fetching};
pub use listings::{upstream_catalog, upstream_referrers, upstream_tags};
pub use manifests::{fetch_manifest, refresh_manifest, upstream_digest};

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use client::UpstreamUrl;

use crate::config::{Config, ConfigError, MirrorConfig};
use crate::error::{Error, Result};
use crate::http::growing::{Failure, FailureKind, Progress, WAITERS_MAX};
use crate::metrics::METRICS;
use crate::oci::{Digest, Reference, RepoName, Tag};

/// Blob fetches in flight at once across the process; more are refused as busy.
pub const FETCHES_MAX: usize = 256;
/// The same on object storage, where each fetch holds up to one upload part in memory
/// (`storage.s3.multipart_part_size`, 8 MiB by default): 32 keep that near 256 MiB.
pub const FETCHES_MAX_S3: usize = 32;
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

/// What the cache needs of the worker it runs on. The service layer implements it: a fetch
/// that outlives its request keeps an owning handle, and a manifest fill goes through the
/// service's operation (with its events).
pub trait Host: 'static {
    fn registry(&self) -> &crate::registry::Registry;
    fn mirrors(&self) -> &Mirrors;
    fn buffers(&self) -> &crate::http::buffers::Buffers;
    /// Longest pause a client waits through while a fetch it follows makes no progress.
    fn body_idle_timeout(&self) -> Duration;
    fn is_immutable(&self, name: &RepoName, tag: &str) -> bool;
    /// An owning handle, for a fetch that goes on when its first client leaves.
    fn handle(&self) -> Option<Rc<Self>>;
    /// Stores a manifest fetched from an upstream (a push by the registry itself).
    async fn fill_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        media_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<crate::registry::manifests::PutManifest>;
}

/// One upstream registry.
pub struct Upstream {
    pub url: UpstreamUrl,
    client: client::Client,
    auth: auth::Auth,
}

impl Upstream {
    /// An upstream at `url` (a replication pull target's source; the cache's own come from
    /// `[repository.mirror]`): Basic credentials, or a fixed Bearer token.
    pub fn new(
        url: UpstreamUrl,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        username: Option<&str>,
        password: Option<&str>,
        token: Option<&str>,
    ) -> Upstream {
        Upstream {
            url,
            client: client::Client { tls, timeout },
            auth: auth::Auth::new(username, password).with_token(token),
        }
    }

    /// Sends a request for `path` under `/v2/` of repository `repo` upstream, answering one
    /// authentication challenge (token fetch or Basic) and retrying once.
    async fn request(
        &self,
        method: &str,
        repo: &str,
        path: &str,
        extra: &[(&str, String)],
    ) -> std::result::Result<client::Response, auth::UpstreamError> {
        let scope = format!("repository:{repo}:pull");
        self.request_scoped(method, &format!("{repo}/{path}"), &scope, extra)
            .await
    }

    /// Sends a request for `rest` under `/v2/` (a repository's path, or `_catalog`) with
    /// `scope` for a token service.
    #[tracing::instrument(
        target = "origin::span",
        name = "upstream.request",
        skip_all,
        fields(otel.kind = "client", http.request.method = method, server.address = %self.url.authority(), url.path = rest)
    )]
    async fn request_scoped(
        &self,
        method: &str,
        rest: &str,
        scope: &str,
        extra: &[(&str, String)],
    ) -> std::result::Result<client::Response, auth::UpstreamError> {
        METRICS.mirror_upstream_requests.fetch_add(1, Relaxed);
        let target = client::Target {
            url: self.url.clone(),
            path: format!("{}/v2/{rest}", self.url.path),
        };
        self.auth
            .send(&self.client, &self.url, method, &target, scope, extra, None)
            .await
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
    /// A namespace with one upstream, not served as a cache: what a replication pull target
    /// copies from (the local name `<namespace>/<name>` is `<name>` upstream).
    pub fn for_pull(namespace: &str, upstream: Upstream) -> MirrorNs {
        MirrorNs {
            namespace: namespace.to_string(),
            registry: namespace.to_string(),
            upstreams: vec![upstream],
            tag_freshness: Duration::ZERO,
            writable: false,
            evict_after: None,
        }
    }

    fn new(namespace: &str, m: &MirrorConfig) -> std::result::Result<MirrorNs, ConfigError> {
        let mut upstreams = Vec::new();
        for (i, u) in m.upstream.iter().enumerate() {
            let what = format!("repository {namespace:?} mirror.upstream[{i}]");
            let url = UpstreamUrl::parse(&u.url)
                .map_err(|e| ConfigError::caused(format!("{what}.url"), e))?;
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

/// The mirrored namespaces as configured: built with the rest of the reloadable set (see
/// `reload::Live`), so SIGHUP replaces it. A request takes the namespace it maps to (an
/// `Arc`) and keeps it to its end, and a blob fetch for as long as it runs: what is in flight
/// finishes with the settings it started with, new requests get the new ones.
#[derive(Default)]
pub struct MirrorTable {
    pub namespaces: Vec<Arc<MirrorNs>>,
    default: Option<usize>,
    /// Namespaces of ordinary (non-mirror) repositories: never mapped to the default mirror.
    local_namespaces: Vec<String>,
}

/// What the pull-through cache keeps while it runs, whatever the configuration: the blob
/// fetches in flight and what was recently checked upstream or recorded. Shared by every
/// worker; kept across reloads.
#[derive(Default)]
pub struct Mirrors {
    fetches: Mutex<HashMap<Digest, Arc<Fetch>>>,
    fresh: Mutex<HashMap<(String, String), Instant>>,
    pulled: Mutex<HashMap<(String, Digest), Instant>>,
    /// Threads that hash fetched blobs, started with the first fetch.
    hash_pool: std::sync::OnceLock<Option<crate::pool::Pool>>,
    /// What freshness and pull records are measured on.
    clock: crate::clock::Clock,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn upstream_error(message: impl std::fmt::Display) -> Error {
    Error::Upstream(message.to_string())
}

impl MirrorTable {
    pub fn from_config(config: &Config) -> std::result::Result<MirrorTable, ConfigError> {
        let mut mirrors = MirrorTable::default();
        for repo in &config.repository {
            let ns = repo.namespace.trim_end_matches('/');
            match &repo.mirror {
                Some(m) => {
                    if m.default {
                        mirrors.default = Some(mirrors.namespaces.len());
                    }
                    mirrors.namespaces.push(Arc::new(MirrorNs::new(ns, m)?));
                }
                None if !ns.is_empty() => mirrors.local_namespaces.push(ns.to_string()),
                None => {}
            }
        }
        Ok(mirrors)
    }

    /// Maps a request's repository name to a mirror: the mirror and the local name.
    pub fn resolve(&self, name: &str, query: &str) -> Option<(Arc<MirrorNs>, String)> {
        let (i, local) = self.resolve_index(name, query)?;
        Some((self.namespaces[i].clone(), local))
    }

    fn resolve_index(&self, name: &str, query: &str) -> Option<(usize, String)> {
        if self.namespaces.is_empty() {
            return None;
        }
        let under = |ns: &str| {
            name.strip_prefix(ns)
                .is_some_and(|r| r.starts_with('/') && r.len() > 1)
        };
        // containerd names the registry it mirrors; an unknown one never means the default.
        let ns_param = crate::http::query::query_param(query, "ns");
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
}

impl Mirrors {
    /// Measures tag freshness and pull records on `clock` (the system clock unless a test
    /// moves it).
    pub fn with_clock(clock: crate::clock::Clock) -> Self {
        Mirrors {
            clock,
            ..Default::default()
        }
    }

    fn is_fresh(&self, ns: &MirrorNs, name: &RepoName, tag: &Tag) -> bool {
        let key = (name.as_str().to_string(), tag.as_str().to_string());
        lock(&self.fresh)
            .get(&key)
            .is_some_and(|t| self.clock.instant().saturating_duration_since(*t) < ns.tag_freshness)
    }

    fn mark_fresh(&self, name: &RepoName, tag: &Tag) {
        let mut fresh = lock(&self.fresh);
        if fresh.len() >= FRESH_TAGS_MAX {
            fresh.clear();
        }
        fresh.insert(
            (name.as_str().to_string(), tag.as_str().to_string()),
            self.clock.instant(),
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
        let now = self.clock.instant();
        if pulled
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < every)
        {
            return false;
        }
        if pulled.len() >= PULL_RECORDS_MAX {
            pulled.clear();
        }
        pulled.insert(key, now);
        true
    }
}

/// Sends `method path` to each upstream in turn until one answers 200. None when every one
/// answers 404; otherwise the last error (`Error::Upstream` naming the upstream or the failure).
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

/// Evicts what has not been pulled for each mirror's `evict_after`.
pub async fn evict(
    app_registry: &crate::registry::Registry,
    mirrors: &MirrorTable,
    dry_run: bool,
) -> Result<Vec<(RepoName, Digest)>> {
    let mut total = Vec::new();
    for ns in &mirrors.namespaces {
        if let Some(age) = ns.evict_after {
            total.extend(
                app_registry
                    .evict_unpulled(&ns.namespace, age, dry_run)
                    .await?,
            );
        }
    }
    Ok(total)
}

/// Records a pull of a mirrored manifest (for eviction), throttled per manifest.
pub async fn note_pulled(
    mirrors: &Mirrors,
    registry: &crate::registry::Registry,
    ns: &MirrorNs,
    name: &RepoName,
    d: &Digest,
) {
    if mirrors.pull_record_due(ns, name, d) {
        if let Err(e) = registry.note_pulled(name, d).await {
            e.log_cause();
            tracing::warn!(error = %e.client_message(), "could not record a mirrored pull");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(toml_extra: &str) -> MirrorTable {
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
        MirrorTable::from_config(&config).unwrap()
    }

    #[test]
    fn names_map_to_mirrors() {
        let table = mirrors("");
        let m = &table;
        assert_eq!(
            m.resolve_index("library/alpine", ""),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve_index("docker.io/library/alpine", ""),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve_index("library/alpine", "ns=docker.io"),
            Some((0, "docker.io/library/alpine".into()))
        );
        assert_eq!(
            m.resolve_index("owner/app", "ns=ghcr.io"),
            Some((1, "ghcr/owner/app".into()))
        );
        assert_eq!(
            m.resolve_index("ghcr/owner/app", ""),
            Some((1, "ghcr/owner/app".into()))
        );
        // Explicit local namespaces stay local; unknown ns values fall back to the rules.
        assert_eq!(m.resolve_index("team/app", ""), None);
        assert_eq!(m.resolve_index("team", ""), None);
        assert_eq!(m.resolve_index("team/app", "ns=quay.io"), None);
        assert_eq!(m.resolve_index("x/y", "ns=quay.io"), None);
        assert_eq!(
            m.namespaces[0].upstream_name("docker.io/library/alpine"),
            "library/alpine"
        );
    }

    #[test]
    fn config_is_checked() {
        let bad = |extra: &str| {
            let text = format!(
                "[server]\n[storage.fs]\nroot_dir = \"/tmp/x\"\n[[repository]]\nnamespace = \"m\"\n[repository.mirror]\n{extra}"
            );
            Config::parse(&text)
                .and_then(|c| MirrorTable::from_config(&c).map(drop))
                .err()
                .map(|e| e.to_string())
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
