//! The S3-compatible backend: the `Storage` contract on one bucket (AWS S3, R2, GCS's S3 API,
//! MinIO, Ceph RGW, moto), coordinated only by S3's conditional writes.
//!
//! - `put` maps `IfAbsent` to `If-None-Match: *` and `IfMatch` to `If-Match`; a 412 is
//!   `PreconditionFailed`. Etags are S3's ETags (an MD5 of the content for plain PUTs, so
//!   equal content has equal etags, as the trait's fs twin promises).
//! - `list` is ListObjectsV2 (S3 lists in byte order, as the contract wants); `list_dir` the
//!   same with delimiter `/`.
//! - `open_read` gives a reader streaming one ranged GET at a time, pinned to the ETag seen at
//!   open (`If-Match`), so it never mixes two versions; memory is the caller's buffer.
//! - Uploads: see `upload.rs`.
//!
//! Requests go through `client.rs` (signing by rusty-s3, retries in one place).

mod batch;
pub mod client;
mod commit;
mod listing;
pub mod probe;
mod read;
mod session_cache;
mod upload;
pub mod xml;

#[cfg(test)]
#[allow(dead_code)] // Shared with the integration tests, which use more of it.
mod fault;
#[cfg(test)]
pub(crate) mod moto;
#[cfg(test)]
pub(crate) mod moto_launch;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{
    validate_key, validate_prefix, CommitOutcome, Etag, Meta, Object, PutCondition, PutOutcome,
    Result, Storage, StorageError, LIST_KEYS_MAX,
};
pub use crate::config::s3::S3Config;
use crate::config::ConfigError;
use crate::http::client::Client;
use client::{s3_error, sign_with, token, Request, RetryPolicy, S3Client, SIGNATURE_EXPIRY};
pub use read::S3Reader;
pub use upload::S3Upload;

/// Largest whole object `get` returns (metadata: manifests, links, upload state), as the fs
/// backend's default: a manifest (4 MiB) plus room.
pub const METADATA_OBJECT_BYTES_MAX: u64 = 4 * 1024 * 1024 + 64 * 1024;
/// Largest ListObjectsV2 response read: 1,000 keys of up to 1 KiB plus XML per key.
const LIST_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Keys per ListObjectsV2 page (S3's maximum).
const LIST_PAGE_KEYS_MAX: usize = 1000;
/// Children one `list_dir` holds in memory (the fs backend's bound, too).
const DIR_ENTRIES_MAX: usize = 1 << 20;
/// Metadata header carrying a conditional write's token (see `client.rs`, the retry rule).
const WRITE_TOKEN_HEADER: &str = "x-amz-meta-origin-write";

/// The backend; cheap to clone (shared by every worker of a process).
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

struct Inner {
    client: S3Client,
    /// "" or ending in `/`.
    key_prefix: String,
    part_bytes: u64,
    metadata_object_bytes_max: u64,
    redirect: bool,
    redirect_expiry: Duration,
    /// Upload session states this process wrote or read last (`session_cache.rs`).
    sessions: session_cache::SessionCache,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "S3Storage({} prefix {:?})",
            self.inner.client.bucket.base_url(),
            self.inner.key_prefix
        )
    }
}

impl S3Storage {
    /// Builds the backend from its (validated) config; no request is sent (see `probe`).
    pub fn new(c: &S3Config) -> std::result::Result<S3Storage, ConfigError> {
        c.validate()?;
        let secrets = c.secrets()?;
        let endpoint: url::Url = c
            .endpoint_url()
            .parse()
            .map_err(|e| ConfigError::caused("storage.s3.endpoint", e))?;
        let style = if c.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, c.bucket.clone(), c.region.clone())
            .map_err(|e| ConfigError::caused("storage.s3", e))?;
        let credentials = match secrets.token {
            Some(t) => Credentials::new_with_token(secrets.key, secrets.secret, t),
            None => Credentials::new(secrets.key, secrets.secret),
        };
        let tls = crate::tls::client_config("storage.s3", c.ca_bundle.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(S3Storage {
            inner: Arc::new(Inner {
                client: S3Client {
                    http: Client {
                        tls,
                        timeout: c.request_timeout,
                    },
                    bucket,
                    credentials: Some(credentials),
                    retry: RetryPolicy {
                        attempts_max: c.attempts_max,
                        deadline: c.operation_deadline,
                    },
                },
                key_prefix: c.normalized_prefix(),
                part_bytes: c.multipart_part_size,
                metadata_object_bytes_max: METADATA_OBJECT_BYTES_MAX,
                redirect: c.redirect,
                redirect_expiry: c.redirect_expiry,
                sessions: Default::default(),
            }),
        })
    }

    /// Whether blob GETs should redirect to presigned URLs (`storage.s3.redirect`).
    pub fn redirect(&self) -> bool {
        self.inner.redirect
    }

    /// A presigned GET URL for `key`, valid for `storage.s3.redirect_expiry`: what a
    /// redirected blob GET sends the client to. Pure (no request): the caller has checked
    /// that the object exists and that the client may read it. A Range header the client
    /// sends along is honoured by S3 (it is not part of the signature).
    pub fn presigned_get(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        let full = self.full(key);
        let c = self.client();
        Ok(c.bucket
            .get_object(c.credentials.as_ref(), &full)
            .sign(self.inner.redirect_expiry)
            .to_string())
    }

    /// The part size of uploads.
    pub fn part_bytes(&self) -> u64 {
        self.inner.part_bytes
    }

    /// Removes an object that is not an upload session, with one DELETE: no HEAD first,
    /// because S3 answers the same whether or not it existed.
    pub async fn remove(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.delete_full(&self.full(key)).await
    }

    pub(super) fn client(&self) -> &S3Client {
        &self.inner.client
    }

    fn sessions(&self) -> &session_cache::SessionCache {
        &self.inner.sessions
    }

    /// `open_read` with the GET of the whole object sent at once instead of a HEAD first:
    /// the size and ETag come from its answer, and a read from byte 0 goes on with its body.
    /// For a blob about to be served whole (one request fewer); a read elsewhere sends its
    /// own ranged GET, as after `open_read`, and the first one is dropped.
    pub async fn open_read_started(&self, key: &str) -> Result<Option<S3Reader>> {
        validate_key(key)?;
        let full = self.full(key);
        let Some(resp) = self.get_response(&full).await? else {
            return Ok(None);
        };
        if upload::is_upload(&resp) {
            // A session object is small (its state): read it through, then its parts.
            resp.drain().await;
            return self.open_upload_read(&full).await;
        }
        let size = resp
            .content_length()
            .ok_or_else(|| s3_error("GetObject", &full, "no Content-Length"))?;
        let etag = resp.header("etag").map(|e| Etag::new(e.to_string()));
        Ok(Some(S3Reader::started(
            self.clone(),
            full,
            size,
            etag,
            resp,
        )))
    }

    /// The object key in the bucket.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.inner.key_prefix)
    }

    /// A bucket key back to a storage key; `None` if it is outside the prefix.
    fn strip<'k>(&self, full: &'k str) -> Option<&'k str> {
        full.strip_prefix(self.inner.key_prefix.as_str())
    }

    /// A GetObject by bucket key whose answer is 200 (its body unread), or `None` on 404.
    async fn get_response(&self, full: &str) -> Result<Option<crate::http::client::Response>> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.get_object(c, full).sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "GetObject",
                method: "GET",
                key: full,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await?;
        let resp = sent.resp;
        match resp.status {
            404 => {
                // Read the small error document so the connection goes back to the pool.
                resp.drain().await;
                Ok(None)
            }
            200 => Ok(Some(resp)),
            s => Err(s3_error("GetObject", full, format!("status {s}"))),
        }
    }

    /// GET of a whole object (at most `limit` bytes) by its bucket key.
    async fn get_full(&self, full: &str, limit: u64) -> Result<Option<Object>> {
        let Some(resp) = self.get_response(full).await? else {
            return Ok(None);
        };
        let etag = resp
            .header("etag")
            .map(|e| Etag::new(e.to_string()))
            .ok_or_else(|| s3_error("GetObject", full, "no ETag"))?;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(StorageError::TooLarge {
                key: full.to_string(),
                limit_bytes: limit,
            });
        }
        let bytes = resp
            .bytes(limit as usize)
            .await
            .map_err(|e| s3_error("GetObject", full, e))?;
        Ok(Some(Object { bytes, etag }))
    }

    /// PUT by bucket key with a condition and extra signed headers.
    async fn put_full(
        &self,
        full: &str,
        bytes: &[u8],
        cond: &PutCondition,
        extra: &[(&'static str, String)],
    ) -> Result<PutOutcome> {
        let mut headers: Vec<(&'static str, String)> = extra.to_vec();
        let write_token = token();
        match cond {
            PutCondition::Always => {}
            PutCondition::IfAbsent => headers.push(("if-none-match", "*".into())),
            PutCondition::IfMatch(e) => headers.push(("if-match", e.as_str().to_string())),
        }
        if *cond != PutCondition::Always {
            headers.push((WRITE_TOKEN_HEADER, write_token.clone()));
        }
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| {
            sign_with(b.put_object(c, full), h)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "PutObject",
                method: "PUT",
                key: full,
                sign: &sign,
                headers,
                body: bytes,
            })
            .await?;
        let (resp, unsure) = (sent.resp, sent.unsure);
        match resp.status {
            200 => {
                let etag = resp
                    .header("etag")
                    .ok_or_else(|| s3_error("PutObject", full, "no ETag"))?;
                Ok(PutOutcome::Written(Etag::new(etag.to_string())))
            }
            // If-Match on a missing object: 404 on AWS, 412 elsewhere.
            412 | 404 if *cond != PutCondition::Always => {
                resp.drain().await;
                if unsure {
                    // An earlier attempt may have written it: our token says so.
                    if let Some((etag, Some(t))) = self.head_token(full).await? {
                        if t == write_token {
                            return Ok(PutOutcome::Written(etag));
                        }
                    }
                }
                Ok(PutOutcome::PreconditionFailed)
            }
            s => Err(s3_error("PutObject", full, format!("status {s}"))),
        }
    }

    /// HEAD by bucket key: the response's headers, or `None`.
    async fn head_full(&self, full: &str) -> Result<Option<crate::http::client::Response>> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.head_object(c, full).sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "HeadObject",
                method: "HEAD",
                key: full,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await?;
        match sent.resp.status {
            404 => Ok(None),
            200 => Ok(Some(sent.resp)),
            s => Err(s3_error("HeadObject", full, format!("status {s}"))),
        }
    }

    /// The ETag and write token of an object, or `None` if it is absent.
    async fn head_token(&self, full: &str) -> Result<Option<(Etag, Option<String>)>> {
        Ok(self.head_full(full).await?.map(|r| {
            let etag = Etag::new(r.header("etag").unwrap_or_default().to_string());
            (etag, r.header(WRITE_TOKEN_HEADER).map(str::to_string))
        }))
    }

    /// DELETE by bucket key (S3 answers 204 whether or not it existed).
    async fn delete_full(&self, full: &str) -> Result<()> {
        let sign = |b: &Bucket, c: Option<&Credentials>, _: &[(&'static str, String)]| {
            b.delete_object(c, full).sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "DeleteObject",
                method: "DELETE",
                key: full,
                sign: &sign,
                headers: Vec::new(),
                body: &[],
            })
            .await?;
        let status = sent.resp.status;
        sent.resp.drain().await;
        match status {
            200 | 204 | 404 => Ok(()),
            s => Err(s3_error("DeleteObject", full, format!("status {s}"))),
        }
    }
}

/// An HTTP date (`Last-Modified`) as a time; the epoch when it does not parse.
fn http_date(text: Option<&str>) -> SystemTime {
    text.and_then(|t| {
        jiff::fmt::rfc2822::DateTimeParser::new()
            .parse_timestamp(t)
            .ok()
    })
    .and_then(|ts| u64::try_from(ts.as_second()).ok())
    .map_or(SystemTime::UNIX_EPOCH, |s| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    })
}

impl Storage for S3Storage {
    type Reader = S3Reader;
    type Upload = S3Upload;

    async fn get(&self, key: &str) -> Result<Option<Object>> {
        validate_key(key)?;
        let limit = self.inner.metadata_object_bytes_max;
        match self.get_full(&self.full(key), limit).await {
            Err(StorageError::TooLarge { limit_bytes, .. }) => Err(StorageError::TooLarge {
                key: key.to_string(),
                limit_bytes,
            }),
            other => other,
        }
    }

    async fn put(&self, key: &str, bytes: Vec<u8>, cond: PutCondition) -> Result<PutOutcome> {
        validate_key(key)?;
        self.put_full(&self.full(key), &bytes, &cond, &[]).await
    }

    async fn head(&self, key: &str) -> Result<Option<Meta>> {
        validate_key(key)?;
        Ok(self.head_full(&self.full(key)).await?.map(|r| Meta {
            size: r
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            modified: http_date(r.header("last-modified")),
        }))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let full = self.full(key);
        let Some(head) = self.head_full(&full).await? else {
            return Ok(false);
        };
        if upload::is_upload(&head) {
            drop(head);
            self.delete_upload(&full).await?;
        } else {
            drop(head);
            self.delete_full(&full).await?;
        }
        Ok(true)
    }

    async fn delete_if_match(&self, key: &str, etag: &Etag) -> Result<bool> {
        validate_key(key)?;
        let full = self.full(key);
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| {
            sign_with(b.delete_object(c, &full), h)
        };
        let sent = self
            .client()
            .call(&Request {
                op: "DeleteObject",
                method: "DELETE",
                key: &full,
                sign: &sign,
                headers: vec![("if-match", etag.as_str().to_string())],
                body: &[],
            })
            .await?;
        let (status, unsure) = (sent.resp.status, sent.unsure);
        sent.resp.drain().await;
        match status {
            200 | 204 => Ok(true),
            // Absent: if an earlier attempt of this call may have deleted it, it did (the
            // object had this etag then, or that attempt would have been refused).
            404 => Ok(unsure),
            412 => Ok(false),
            s => Err(s3_error("DeleteObject", &full, format!("status {s}"))),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let limit = limit.min(LIST_KEYS_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let full_prefix = self.full(prefix);
        let full_after = start_after.map(|s| self.full(s));
        let keys = self
            .list_full(&full_prefix, full_after.as_deref(), limit)
            .await?;
        Ok(keys
            .iter()
            .filter_map(|k| self.strip(k).map(str::to_string))
            .collect())
    }

    async fn list_dir(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let dir = prefix.trim_end_matches('/');
        let full_prefix = if dir.is_empty() {
            self.inner.key_prefix.clone()
        } else {
            self.full(&format!("{dir}/"))
        };
        let mut names = std::collections::BTreeSet::new();
        let mut token: Option<String> = None;
        loop {
            let (keys, dirs, next) = self
                .list_page(
                    &full_prefix,
                    None,
                    true,
                    LIST_PAGE_KEYS_MAX,
                    token.as_deref(),
                )
                .await?;
            for k in keys.iter().chain(dirs.iter()) {
                if let Some(name) = k.strip_prefix(full_prefix.as_str()) {
                    let name = name.trim_end_matches('/');
                    if !name.is_empty() {
                        names.insert(name.to_string());
                    }
                }
            }
            if names.len() > DIR_ENTRIES_MAX {
                return Err(StorageError::TooManyEntries {
                    prefix: prefix.to_string(),
                    limit: DIR_ENTRIES_MAX,
                });
            }
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(names.into_iter().collect())
    }

    async fn open_read(&self, key: &str) -> Result<Option<S3Reader>> {
        validate_key(key)?;
        let full = self.full(key);
        let Some(head) = self.head_full(&full).await? else {
            return Ok(None);
        };
        if upload::is_upload(&head) {
            // A session: its staged parts in order (what a commit would make of it).
            drop(head);
            return self.open_upload_read(&full).await;
        }
        let size = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| s3_error("HeadObject", &full, "no Content-Length"))?;
        let etag = head.header("etag").map(|e| Etag::new(e.to_string()));
        Ok(Some(S3Reader::new(self.clone(), full, size, etag)))
    }

    async fn upload_create(&self, key: &str) -> Result<S3Upload> {
        validate_key(key)?;
        S3Upload::create(self.clone(), key, None).await
    }

    async fn open_upload(&self, key: &str) -> Result<Option<S3Upload>> {
        validate_key(key)?;
        S3Upload::open(self.clone(), key).await
    }

    async fn upload_size(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        Ok(self
            .load_upload(&self.full(key))
            .await?
            .map(|(state, _)| state.size()))
    }

    async fn upload_commit(
        &self,
        upload_key: &str,
        dest_key: &str,
    ) -> Result<Option<CommitOutcome>> {
        validate_key(upload_key)?;
        validate_key(dest_key)?;
        self.commit_upload(&self.full(upload_key), &self.full(dest_key))
            .await
    }
}
