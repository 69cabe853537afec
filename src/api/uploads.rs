//! Blob uploads: POST (session, monolithic, mount), PATCH, PUT, GET status, DELETE.

use super::{digest_of, repo, route::query_param};
use crate::error::{Error, Result};
use crate::http::{Method, Request, Response};
use crate::oci::{Digest, RepoName, UploadId};
use crate::registry::uploads::Session;
use crate::service::uploads::{self, SMALL_BLOB_BYTES_MAX};
use crate::service::{Caller, Service};

/// The body of a push small enough for `uploads::put_small`, or `None` (not declared,
/// larger).
async fn small_body(svc: &Service, req: &mut Request<'_>) -> Result<Option<Vec<u8>>> {
    let limit = SMALL_BLOB_BYTES_MAX.min(svc.limits.blob_bytes_max);
    match req.body.declared_len() {
        Some(n) if n <= limit => Ok(Some(req.body.read_to_vec(limit).await?)),
        _ => Ok(None),
    }
}

pub(super) fn location(name: &RepoName, id: &UploadId) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>` as Docker expects it; `0-0` before anything arrived.
pub(super) fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn accepted(s: &Session) -> Response {
    Response::new(202)
        .header("Location", location(&s.name, &s.id))
        .header("Range", range_header(s.offset))
        .header("Docker-Upload-UUID", s.id.to_string())
}

fn created(name: &RepoName, digest: &Digest) -> Response {
    Response::new(201)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest.to_string())
}

pub async fn start(
    svc: &Service,
    req: &mut Request<'_>,
    caller: &Caller<'_>,
    name: &RepoName,
) -> Result<Response> {
    let query = req.head.query().to_string();
    if let Some(mount) = query_param(&query, "mount") {
        let digest = digest_of(&mount)?;
        let from = match query_param(&query, "from") {
            Some(f) if !f.is_empty() => Some(repo(&f)?),
            _ => None,
        };
        if uploads::mount(svc, caller, name, &digest, from.as_ref())
            .await?
            .is_some()
        {
            return Ok(created(name, &digest));
        }
        // Nothing to mount: the spec says to answer with a new session instead.
    }
    let digest = match query_param(&query, "digest") {
        Some(d) => Some(digest_of(&d)?),
        None => None,
    };
    let Some(digest) = digest else {
        // A POST body without a digest is not part of the protocol; leave it to the
        // connection to drain or close.
        let session = uploads::start(svc, name).await?;
        return Ok(accepted(&session));
    };
    // Monolithic upload: the body is the whole blob.
    if let Some(body) = small_body(svc, req).await? {
        uploads::put_small(svc, caller, name, &digest, body, None).await?;
    } else {
        uploads::monolithic(svc, caller, name, &digest, &mut req.body).await?;
    }
    Ok(created(name, &digest))
}

pub async fn handle(
    svc: &Service,
    req: &mut Request<'_>,
    caller: &Caller<'_>,
    name: &RepoName,
    id: &UploadId,
) -> Result<Response> {
    match req.head.method {
        Method::Delete => {
            uploads::cancel(svc, caller, name, id).await?;
            Ok(Response::new(204))
        }
        Method::Get => {
            let s = uploads::status(svc, name, id).await?;
            let mut r = accepted(&s);
            r.status = 204;
            Ok(r)
        }
        Method::Patch => {
            let mut s = open_chunk(svc, req, name, id).await?;
            uploads::append(svc, caller, &mut s, &mut req.body).await?;
            Ok(accepted(&s))
        }
        Method::Put => {
            let query = req.head.query().to_string();
            let digest = query_param(&query, "digest")
                .ok_or_else(|| Error::DigestInvalid("digest parameter missing".into()))?;
            let digest = digest_of(&digest)?;
            let s = open_chunk(svc, req, name, id).await?;
            if s.offset == 0 {
                // POST then PUT with the whole blob (containerd's monolithic push).
                if let Some(body) = small_body(svc, req).await? {
                    drop(s);
                    uploads::put_small(svc, caller, name, &digest, body, Some(id)).await?;
                    return Ok(created(name, &digest));
                }
            }
            uploads::finish(svc, caller, s, &digest, &mut req.body).await?;
            Ok(created(name, &digest))
        }
        _ => Err(Error::MethodNotAllowed {
            message: "method not allowed".into(),
            allow: None,
        }),
    }
}

/// Opens a session for a request that appends to it, checking its Content-Range. A session
/// state from the process's cache that disagrees with the client's range is read from
/// storage before answering 416 (another node may have appended).
async fn open_chunk(
    svc: &Service,
    req: &Request<'_>,
    name: &RepoName,
    id: &UploadId,
) -> Result<Session> {
    let mut s = uploads::open(svc, name, id).await?;
    if s.is_cached() && check_content_range(req, &s).is_err() {
        s = uploads::refresh(svc, s).await?;
    }
    check_content_range(req, &s)?;
    s.ranged = req.head.header("content-range").is_some();
    Ok(s)
}

/// A chunk must start where the session ends; otherwise 416 with the current range.
fn check_content_range(req: &Request<'_>, s: &Session) -> Result<()> {
    let Some(value) = req.head.header("content-range") else {
        return Ok(());
    };
    let spec = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches(['=', ' ']);
    let spec = spec.split('/').next().unwrap_or("");
    let parsed = spec
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    let out_of_order = || Error::UploadRangeInvalid {
        message: "chunk does not start at the upload's offset".into(),
        offset: s.offset,
        session: Some((s.name.clone(), s.id.clone())),
    };
    let Some((start, end)) = parsed else {
        return Err(out_of_order());
    };
    if start != s.offset || end < start {
        return Err(out_of_order());
    }
    if let Some(len) = req.body.declared_len() {
        if len != end - start + 1 {
            return Err(Error::UploadRangeInvalid {
                message: "Content-Range does not match Content-Length".into(),
                offset: s.offset,
                session: None,
            });
        }
    }
    Ok(())
}
