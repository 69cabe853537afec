//! Blob uploads: POST (session, monolithic, mount), PATCH, PUT, GET status, DELETE.

use super::events::{self, Spec, Who};
use super::{digest_of, repo, route::query_param};
use crate::app::App;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::http::{BodyRead, Method, Request, Response};
use crate::oci::{Digest, RepoName, UploadId};
use crate::registry::uploads::Session;

/// A monolithic push of at most this many bytes is read whole and stored without an upload
/// session, in one durable step (`Registry::put_small_blob`). Hashed on the core: 64 KiB
/// is ~40 µs of SHA-256, inside the budget for work on a core (docs/ARCHITECTURE.md,
/// section 4); configs, attestations and small layers fit.
const SMALL_BLOB_BYTES_MAX: u64 = 64 * 1024;

/// The body of a push small enough for `put_small_blob`, or `None` (not declared, larger).
async fn small_body(app: &App, req: &mut Request<'_>) -> Result<Option<Vec<u8>>> {
    let limit = SMALL_BLOB_BYTES_MAX.min(app.config.server.blob_bytes_max);
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

/// The `blob.push` event of a blob becoming visible in `name`.
fn blob_push<'a>(name: &'a RepoName, digest: &'a Digest, size: u64) -> Spec<'a> {
    Spec {
        kind: EventKind::BlobPush,
        name,
        digest,
        tag: None,
        reference: Some(digest.as_str()),
        media_type: None,
        size: Some(size),
    }
}

/// `required` webhooks of a blob push, asked by the registry once the content is verified
/// and before it is committed or linked: a refused blob never becomes visible.
async fn gate(app: &App, who: &Who<'_>, name: &RepoName, digest: &Digest, size: u64) -> Result<()> {
    events::before(app, who, &blob_push(name, digest, size)).await
}

/// A blob is in the repository: the rest of its `blob.push` deliveries, and the answer.
async fn pushed(app: &App, who: &Who<'_>, name: &RepoName, digest: &Digest, size: u64) -> Response {
    events::after(app, who, &blob_push(name, digest, size)).await;
    created(name, digest)
}

pub async fn start(
    app: &App,
    req: &mut Request<'_>,
    name: &RepoName,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
    let query = req.head.query().to_string();
    if let Some(mount) = query_param(&query, "mount") {
        let digest = digest_of(&mount)?;
        let from = match query_param(&query, "from") {
            Some(f) if !f.is_empty() => Some(repo(&f)?),
            _ => None,
        };
        let gated = async |size| gate(app, who, name, &digest, size).await;
        let mounted = {
            let _write = req.clock.hold();
            reg.mount_blob_gated(name, &digest, from.as_ref(), gated)
                .await?
        };
        if let Some(size) = mounted {
            return Ok(pushed(app, who, name, &digest, size).await);
        }
        // Nothing to mount: the spec says to answer with a new session instead.
    }
    let digest = match query_param(&query, "digest") {
        Some(d) => Some(digest_of(&d)?),
        None => None,
    };
    if let Some(digest) = &digest {
        if let Some(body) = small_body(app, req).await? {
            let size = body.len() as u64;
            let gated = async |size| gate(app, who, name, digest, size).await;
            let _write = req.clock.hold();
            reg.put_small_blob(name, digest, body, gated).await?;
            drop(_write);
            return Ok(pushed(app, who, name, digest, size).await);
        }
    }
    let mut session = reg.upload_start_open(name).await?;
    let id = session.id.clone();
    let Some(digest) = digest else {
        // A POST body without a digest is not part of the protocol; leave it to the
        // connection to drain or close.
        return Ok(accepted(&session));
    };
    // Monolithic upload: the body is the whole blob.
    req.body.set_limit(app.config.server.blob_bytes_max)?;
    if let Err(e) = receive(app, req, &mut session).await {
        drop(session);
        let _write = req.clock.hold();
        reg.upload_cancel(name, &id).await?;
        return Err(e);
    }
    let gated = async |size| gate(app, who, name, &digest, size).await;
    let size = {
        let _write = req.clock.hold();
        reg.upload_finish_gated(session, &digest, gated).await?
    };
    Ok(pushed(app, who, name, &digest, size).await)
}

pub async fn handle(
    app: &App,
    req: &mut Request<'_>,
    method: Method,
    name: &RepoName,
    id: &UploadId,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
    match method {
        Method::Delete => {
            let _write = req.clock.hold();
            if !reg.upload_cancel(name, id).await? {
                return Err(Error::BlobUploadUnknown("no such upload".into()));
            }
            Ok(Response::new(204))
        }
        Method::Get => {
            // The status as stored, not as this process's cache last saw it.
            let s = reg.upload_open_or_unknown(name, id).await?;
            let s = reg.upload_refresh(s).await?;
            let mut r = accepted(&s);
            r.status = 204;
            Ok(r)
        }
        Method::Patch => {
            let mut s = open_chunk(reg, req, name, id).await?;
            req.body.set_limit(app.config.server.blob_bytes_max)?;
            receive(app, req, &mut s).await?;
            let _write = req.clock.hold();
            reg.upload_save(&mut s).await?;
            Ok(accepted(&s))
        }
        Method::Put => {
            let query = req.head.query().to_string();
            let digest = query_param(&query, "digest")
                .ok_or_else(|| Error::DigestInvalid("digest parameter missing".into()))?;
            let digest = digest_of(&digest)?;
            let mut s = open_chunk(reg, req, name, id).await?;
            if s.offset == 0 {
                // POST then PUT with the whole blob (containerd's monolithic push).
                if let Some(body) = small_body(app, req).await? {
                    drop(s);
                    let size = body.len() as u64;
                    let gated = async |size| gate(app, who, name, &digest, size).await;
                    let write = req.clock.hold();
                    let put = reg.put_small_blob(name, &digest, body, gated).await;
                    reg.upload_cancel(name, id).await?;
                    drop(write);
                    put?;
                    return Ok(pushed(app, who, name, &digest, size).await);
                }
            }
            req.body.set_limit(app.config.server.blob_bytes_max)?;
            receive(app, req, &mut s).await?;
            let gated = async |size| gate(app, who, name, &digest, size).await;
            let size = {
                let _write = req.clock.hold();
                reg.upload_finish_gated(s, &digest, gated).await?
            };
            Ok(pushed(app, who, name, &digest, size).await)
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
    reg: &crate::registry::Registry,
    req: &Request<'_>,
    name: &RepoName,
    id: &UploadId,
) -> Result<Session> {
    let mut s = reg.upload_open_or_unknown(name, id).await?;
    if s.is_cached() && check_content_range(req, &s).is_err() {
        s = reg.upload_refresh(s).await?;
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

/// Streams the request body through the hasher into the session's data. Two buffers: the
/// next chunk is received while the previous one is written, so the socket and the disk
/// overlap instead of taking turns.
async fn receive(app: &App, req: &mut Request<'_>, s: &mut Session) -> Result<()> {
    let reg = &app.registry;
    req.body.allow_long_transfer();
    let mut filled = app.buffers.take();
    let mut spare = app.buffers.take();
    let BodyRead(first, b) = req.body.read(filled).await;
    filled = b;
    let mut n = match first {
        Ok(n) => n,
        Err(e) => {
            app.buffers.give(filled);
            app.buffers.give(spare);
            return Err(Error::from(e));
        }
    };
    let result = loop {
        if n == 0 {
            break Ok(());
        }
        s.hasher.update(&filled[..n]);
        let ((w, written), BodyRead(r, next)) =
            crate::future::join(reg.upload_write(s, filled), req.body.read(spare)).await;
        spare = written;
        filled = next;
        if let Err(e) = w {
            break Err(e);
        }
        n = match r {
            Ok(n) => n,
            Err(e) => break Err(Error::from(e)),
        };
    };
    app.buffers.give(filled);
    app.buffers.give(spare);
    result
}
