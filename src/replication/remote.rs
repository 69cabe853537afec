//! Requests to a replication target: the distribution API's manifest and blob calls, sent
//! with the project's HTTP client and the pull-through cache's authentication (Basic, a
//! fixed Bearer token, or Docker token-service challenges answered per scope).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http::client::{Client, Response, Target, UpstreamUrl, UrlError};
use crate::mirror::auth::Auth;
use crate::oci::Digest;

use super::limit::Bandwidth;

/// Error bodies kept for the message of a failed request.
const ERROR_BODY_BYTES_MAX: usize = 512;
/// Blobs remembered per target with the repository they were last sent to there, for
/// cross-repository mounts; past this the memory is emptied (a blob is then uploaded).
const MOUNT_HINTS_MAX: usize = 65_536;

/// A tags-list page's body: `n` tags of at most 128 bytes each, with JSON around them, for
/// the pages a reconcile pass asks for (see `reconcile::TARGET_TAGS_PAGE`).
const TAGS_BODY_BYTES_MAX: usize = 256 * 1024;

/// Every manifest type asked for in a HEAD (the target's answer names the digest only).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Why a copy or a deletion did not reach the target.
#[derive(Debug)]
pub enum CopyError {
    /// The target refused, failed, or could not be reached.
    Target(String),
    /// What was to be copied could not be read here.
    Source(crate::error::Error),
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Target(m) => f.write_str(m),
            CopyError::Source(e) => write!(f, "reading the source: {}", e.client_message()),
        }
    }
}

impl From<crate::error::Error> for CopyError {
    fn from(e: crate::error::Error) -> Self {
        CopyError::Source(e)
    }
}

pub type CopyResult<T> = Result<T, CopyError>;

/// An upload started at the target.
pub enum Started {
    /// A cross-repository mount took: the blob is there.
    Mounted,
    /// An upload session to send the bytes to.
    Session(Target),
}

pub struct Remote {
    pub url: UpstreamUrl,
    client: Client,
    auth: Auth,
    /// `max_bytes_per_second`: paces blob bodies (every copy to this target on this node).
    bandwidth: Option<Bandwidth>,
    /// Blob -> a repository at the target that has it (sent there by this process).
    mounts: Mutex<HashMap<Digest, Arc<str>>>,
    /// Blobs and manifests being sent by a copy of this process: another copy of the same
    /// blob (to any repository of the target) waits for it, then finds it there or mounts it
    /// from where it went (one upload, not two); another PUT of the same manifest waits,
    /// then finds it there.
    sending: Mutex<HashSet<Digest>>,
}

/// A blob or manifest being sent to the target; the mark goes with it.
pub struct Sending<'a> {
    remote: &'a Remote,
    key: Digest,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut sending = self
            .remote
            .sending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sending.remove(&self.key);
    }
}

fn with_query(mut t: Target, query: &str) -> Target {
    t.path.push(if t.path.contains('?') { '&' } else { '?' });
    t.path.push_str(query);
    t
}

impl Remote {
    pub fn new(
        url: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        username: &Option<String>,
        password: &Option<String>,
        token: &Option<String>,
        max_bytes_per_second: Option<u64>,
    ) -> Result<Remote, UrlError> {
        Ok(Remote {
            url: UpstreamUrl::parse(url)?,
            client: Client { tls, timeout },
            auth: Auth::new(username.as_deref(), password.as_deref()).with_token(token.as_deref()),
            bandwidth: max_bytes_per_second.map(Bandwidth::new),
            mounts: Mutex::new(HashMap::new()),
            sending: Mutex::new(HashSet::new()),
        })
    }

    fn target(&self, repo: &str, rest: &str) -> Target {
        Target {
            url: self.url.clone(),
            path: format!("{}/v2/{repo}/{rest}", self.url.path),
        }
    }

    async fn send(
        &self,
        method: &str,
        repo: &str,
        target: &Target,
        extra: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> CopyResult<Response> {
        self.send_paced(method, repo, target, extra, body, false)
            .await
    }

    /// `send`; a blob's bytes (`blob`) go at the target's `max_bytes_per_second`.
    #[tracing::instrument(
        target = "origin::span",
        name = "replication.request",
        skip_all,
        fields(
            otel.kind = "client",
            http.request.method = method,
            server.address = %self.url.authority(),
            url.path = %target.path,
        )
    )]
    async fn send_paced(
        &self,
        method: &str,
        repo: &str,
        target: &Target,
        extra: &[(&str, String)],
        body: Option<&[u8]>,
        blob: bool,
    ) -> CopyResult<Response> {
        let scope = format!("repository:{repo}:pull,push");
        let pacer = self
            .bandwidth
            .as_ref()
            .filter(|_| blob)
            .map(|b| b as &dyn crate::http::Pacer);
        self.auth
            .send_paced(
                &self.client,
                &self.url,
                method,
                target,
                &scope,
                extra,
                body,
                pacer,
            )
            .await
            .map_err(|e| CopyError::Target(e.to_string()))
    }

    /// The error for an unexpected answer, with the start of its body.
    async fn refused(&self, what: &str, resp: Response) -> CopyError {
        let status = resp.status;
        let body = resp.bytes(ERROR_BODY_BYTES_MAX).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        CopyError::Target(format!(
            "{} answered {status} to {what}: {}",
            self.url.authority(),
            text.trim()
        ))
    }

    /// A HEAD of `rest` under the target's `repo`: `Docker-Content-Digest` (empty when the
    /// registry sends none) when it is there, None on 404.
    async fn head(
        &self,
        repo: &str,
        rest: &str,
        extra: &[(&str, String)],
    ) -> CopyResult<Option<String>> {
        let t = self.target(repo, rest);
        let resp = self.send("HEAD", repo, &t, extra, None).await?;
        let found = match resp.status {
            200 => Some(
                resp.header("docker-content-digest")
                    .unwrap_or("")
                    .to_string(),
            ),
            404 => None,
            _ => return Err(self.refused(&format!("HEAD {}", t.path), resp).await),
        };
        resp.drain().await;
        Ok(found)
    }

    /// Whether the target has the manifest `reference` in `repo`.
    pub async fn has_manifest(&self, repo: &str, reference: &str) -> CopyResult<bool> {
        Ok(self.manifest_digest(repo, reference).await?.is_some())
    }

    /// The digest the target's `reference` of `repo` names (HEAD), None when it has none.
    /// A registry that answers without `Docker-Content-Digest` gives an empty string.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> CopyResult<Option<String>> {
        let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
        self.head(repo, &format!("manifests/{reference}"), &accept)
            .await
    }

    /// Up to `n` tags of the target's `repo` after `last`, and whether more follow (a
    /// `Link` header, or a full page). A repository the target does not have has none.
    pub async fn tags_page(
        &self,
        repo: &str,
        last: Option<&str>,
        n: usize,
    ) -> CopyResult<(Vec<String>, bool)> {
        let mut query = format!("n={n}");
        if let Some(l) = last {
            query.push_str("&last=");
            query.push_str(&crate::http::query::escape(l));
        }
        let t = with_query(self.target(repo, "tags/list"), &query);
        let resp = self.send("GET", repo, &t, &[], None).await?;
        match resp.status {
            200 => {}
            404 => {
                resp.drain().await;
                return Ok((Vec::new(), false));
            }
            _ => return Err(self.refused(&format!("GET {}", t.path), resp).await),
        }
        let link = resp.header("link").is_some();
        let body = resp
            .bytes(TAGS_BODY_BYTES_MAX)
            .await
            .map_err(|e| CopyError::Target(format!("{}: tags list: {e}", self.url.authority())))?;
        #[derive(serde::Deserialize)]
        struct List {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let list: List = serde_json::from_slice(&body).map_err(|e| {
            CopyError::Target(format!(
                "{}: unreadable tags list: {e}",
                self.url.authority()
            ))
        })?;
        let mut tags = list.tags.unwrap_or_default();
        // A registry that ignores `n` sends them all: keep the page's worth.
        tags.truncate(n);
        let more = !tags.is_empty() && (link || tags.len() == n);
        Ok((tags, more))
    }

    /// Whether the target's `repo` has the blob.
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> CopyResult<bool> {
        let found = self.head(repo, &format!("blobs/{digest}"), &[]).await?;
        Ok(found.is_some())
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> CopyResult<()> {
        let t = self.target(repo, &format!("manifests/{reference}"));
        let headers = [("Content-Type", media_type.to_string())];
        let resp = self.send("PUT", repo, &t, &headers, Some(body)).await?;
        if resp.status == 201 || resp.status == 200 {
            resp.drain().await;
            return Ok(());
        }
        Err(self.refused(&format!("PUT {}", t.path), resp).await)
    }

    /// Deletes a manifest (by digest) or a tag; one already gone is no error.
    pub async fn delete_manifest(&self, repo: &str, reference: &str) -> CopyResult<()> {
        let t = self.target(repo, &format!("manifests/{reference}"));
        let resp = self.send("DELETE", repo, &t, &[], Some(&[])).await?;
        if matches!(resp.status, 200 | 202 | 204 | 404) {
            resp.drain().await;
            return Ok(());
        }
        Err(self.refused(&format!("DELETE {}", t.path), resp).await)
    }

    /// Marks `digest` as being sent; None while another copy of this process is sending it
    /// (to any repository of the target).
    pub fn start_sending(&self, digest: &Digest) -> Option<Sending<'_>> {
        let key = digest.clone();
        let mut sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        if !sending.insert(key.clone()) {
            return None;
        }
        Some(Sending { remote: self, key })
    }

    /// Whether another copy of this process is sending `digest` now.
    pub fn is_sending(&self, digest: &Digest) -> bool {
        let sending = self.sending.lock().unwrap_or_else(|p| p.into_inner());
        sending.contains(digest)
    }

    /// A repository at the target that has `digest`, as far as this process knows.
    pub fn mount_hint(&self, digest: &Digest) -> Option<Arc<str>> {
        let mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        mounts.get(digest).cloned()
    }

    /// Remembers that `repo` at the target has `digest`.
    pub fn note_sent(&self, digest: &Digest, repo: &str) {
        let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        if mounts.len() >= MOUNT_HINTS_MAX {
            mounts.clear();
        }
        mounts.insert(digest.clone(), repo.into());
    }

    /// Starts an upload to `repo`, asking to mount `digest` from `from` first when given.
    pub async fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> CopyResult<Started> {
        let mut t = self.target(repo, "blobs/uploads/");
        if let Some((d, from)) = mount {
            t = with_query(
                t,
                &format!(
                    "mount={}&from={}",
                    crate::http::query::escape(d.as_str()),
                    crate::http::query::escape(from)
                ),
            );
        }
        let resp = self.send("POST", repo, &t, &[], Some(&[])).await?;
        match resp.status {
            201 if mount.is_some() => {
                resp.drain().await;
                Ok(Started::Mounted)
            }
            202 => {
                let at = self.location(&t, &resp)?;
                resp.drain().await;
                Ok(Started::Session(at))
            }
            _ => Err(self.refused(&format!("POST {}", t.path), resp).await),
        }
    }

    fn location(&self, sent: &Target, resp: &Response) -> CopyResult<Target> {
        resp.header("location")
            .and_then(|l| sent.redirected(l))
            .ok_or_else(|| {
                CopyError::Target(format!(
                    "{} answered an upload request without a usable Location",
                    self.url.authority()
                ))
            })
    }

    /// Appends `chunk` at `start` to the session at `at`; returns where the next goes.
    pub async fn patch(
        &self,
        repo: &str,
        at: &Target,
        start: u64,
        chunk: &[u8],
    ) -> CopyResult<Target> {
        let end = start + chunk.len() as u64 - 1;
        let headers = [
            ("Content-Type", "application/octet-stream".to_string()),
            ("Content-Range", format!("{start}-{end}")),
        ];
        let sent = self.send_paced("PATCH", repo, at, &headers, Some(chunk), true);
        let resp = sent.await?;
        if resp.status != 202 {
            return Err(self.refused("PATCH of an upload", resp).await);
        }
        let next = self.location(at, &resp)?;
        resp.drain().await;
        Ok(next)
    }

    /// Ends the session at `at` with `last` (empty after PATCHes) as the blob `digest`.
    pub async fn finish(
        &self,
        repo: &str,
        at: Target,
        digest: &Digest,
        last: &[u8],
    ) -> CopyResult<()> {
        let t = with_query(
            at,
            &format!("digest={}", crate::http::query::escape(digest.as_str())),
        );
        let headers = [("Content-Type", "application/octet-stream".to_string())];
        let resp = self
            .send_paced("PUT", repo, &t, &headers, Some(last), !last.is_empty())
            .await?;
        if resp.status == 201 {
            resp.drain().await;
            return Ok(());
        }
        Err(self.refused("the PUT that ends an upload", resp).await)
    }
}

/// Where an upload session of the target stands.
pub enum Status {
    /// The target holds the session with this many bytes; send the next ones to `at`.
    At { offset: u64, at: Target },
    /// The target does not know the session (expired, or it answered the request with an
    /// error): start another.
    Forgotten,
}

impl Remote {
    /// The upload session at `path` (an absolute path, as recorded) of this target's
    /// origin: a record never sends credentials elsewhere.
    pub fn session_at(&self, path: &str) -> Option<Target> {
        path.starts_with('/').then(|| Target {
            url: self.url.clone(),
            path: path.to_string(),
        })
    }

    /// The path to record for the session at `at`; None when it is on another origin than
    /// the target's (it is then not resumed).
    pub fn session_path(&self, at: &Target) -> Option<String> {
        let same = at.url.https == self.url.https
            && at.url.host == self.url.host
            && at.url.port == self.url.port;
        same.then(|| at.path.clone())
    }

    /// Asks the target how much of the upload at `at` it has (`GET`: `204` with
    /// `Range: 0-<last byte>`). A 4xx answer means the session is gone; a 5xx or no answer
    /// is an error (the target may still hold it: try again later).
    pub async fn upload_status(&self, repo: &str, at: &Target) -> CopyResult<Status> {
        let resp = self.send("GET", repo, at, &[], None).await?;
        match resp.status {
            200 | 204 => {
                let offset = resp.header("range").and_then(range_end).map(|end| end + 1);
                let next = resp
                    .header("location")
                    .and_then(|l| at.redirected(l))
                    .unwrap_or_else(|| at.clone());
                resp.drain().await;
                Ok(match offset {
                    Some(offset) => Status::At { offset, at: next },
                    None => Status::Forgotten,
                })
            }
            400..=499 => {
                resp.drain().await;
                Ok(Status::Forgotten)
            }
            _ => Err(self.refused("GET of an upload's status", resp).await),
        }
    }

    /// Cancels the upload at `at` (best effort: the target expires it anyway).
    pub async fn cancel_upload(&self, repo: &str, at: &Target) {
        if let Ok(resp) = self.send("DELETE", repo, at, &[], Some(&[])).await {
            resp.drain().await;
        }
    }
}

/// The last byte of a `Range: 0-<last>` value (`bytes=` accepted before it); `0-0` is read
/// as one byte (a session this resumes always holds more than that).
fn range_end(value: &str) -> Option<u64> {
    let spec = value.trim().trim_start_matches("bytes=");
    let (start, end) = spec.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn upload_ranges_parse() {
        assert_eq!(super::range_end("0-8388607"), Some(8_388_607));
        assert_eq!(super::range_end("bytes=0-9"), Some(9));
        assert_eq!(super::range_end("5-9"), None);
        assert_eq!(super::range_end("0-x"), None);
    }
}
