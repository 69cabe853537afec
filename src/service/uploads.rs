//! Blob uploads: a session's start, appends, status, cancel and commit; the monolithic and
//! small pushes; cross-repository mounts. A blob becomes visible only once verified and let
//! through by the `required` webhooks of its `blob.push` event. Commits and mounts are
//! audited, whatever came of them.

use super::audit;
use super::events::{self, Spec};
use super::quota;
use super::{Caller, Service};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::http::{BodyRead, BodyReader};
use crate::oci::{Digest, RepoName, UploadId};
use crate::registry::uploads::Session;

/// A monolithic push of at most this many bytes is read whole and stored without an upload
/// session, in one durable step (`Registry::put_small_blob`). Hashed on the core: 64 KiB
/// is ~40 µs of SHA-256, inside the budget for work on a core (docs/ARCHITECTURE.md,
/// section 4); configs, attestations and small layers fit.
pub const SMALL_BLOB_BYTES_MAX: u64 = 64 * 1024;

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

/// `required` webhooks of a blob push, then the namespace's quota, asked once the content is
/// verified and held and before it is committed or linked: a refused blob never becomes
/// visible. A quota reservation taken here is in `held`, settled when the operation ends.
async fn gate(
    svc: &Service,
    caller: &Caller<'_>,
    held: &quota::Held,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    if events::wanted(svc) {
        events::before(svc, &events::client(caller), &blob_push(name, digest, size)).await?;
    }
    quota::reserve(svc, held, name, digest, size, false).await
}

/// A blob is in the repository: the rest of its `blob.push` deliveries.
async fn pushed(svc: &Service, caller: &Caller<'_>, name: &RepoName, digest: &Digest, size: u64) {
    if !events::wanted(svc) {
        return;
    }
    events::after(svc, &events::client(caller), &blob_push(name, digest, size)).await;
}

/// Links a blob stored for repository `from` (or, with no `from`, any blob the caller may
/// see) into `name`. The size when mounted; None when there is nothing to mount.
#[tracing::instrument(target = "origin::span", name = "uploads.mount", skip_all)]
pub async fn mount(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    from: Option<&RepoName>,
) -> Result<Option<u64>> {
    let held = quota::Held::default();
    let gated = async |size| gate(svc, caller, &held, name, digest, size).await;
    let mounted = {
        let _write = caller.clock.hold();
        let mounted = svc
            .registry
            .mount_blob_gated(name, digest, from, gated)
            .await;
        quota::settle(svc, caller, held, name).await;
        mounted
    };
    // Nothing to mount is no write: the client uploads instead.
    if !matches!(mounted, Ok(None)) {
        let write = audit::Write {
            digest: Some(digest),
            from,
            ..audit::Write::new(audit::BLOB_MOUNT, name)
        };
        audit::written(svc, caller, &write, &mounted);
    }
    if let Some(size) = mounted? {
        pushed(svc, caller, name, digest, size).await;
        return Ok(Some(size));
    }
    Ok(None)
}

/// The audit record of a blob upload's commit.
fn uploaded(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    result: &Result<u64>,
) {
    let write = audit::Write {
        digest: Some(digest),
        ..audit::Write::new(audit::BLOB_UPLOAD, name)
    };
    audit::written(svc, caller, &write, result);
}

/// Stores a whole blob received at once (at most [`SMALL_BLOB_BYTES_MAX`]) in one durable
/// step, verified against `digest`. With `session`, the upload it came in is closed too.
#[tracing::instrument(target = "origin::span", name = "uploads.put_small", skip_all)]
pub async fn put_small(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    body: Vec<u8>,
    session: Option<&UploadId>,
) -> Result<u64> {
    super::space::ensure(svc)?;
    let size = body.len() as u64;
    let held = quota::Held::default();
    let gated = async |size| gate(svc, caller, &held, name, digest, size).await;
    let result = {
        let _write = caller.clock.hold();
        let put = svc.registry.put_small_blob(name, digest, body, gated).await;
        quota::settle(svc, caller, held, name).await;
        let closed = match session {
            Some(id) => svc.registry.upload_cancel(name, id).await.map(drop),
            None => Ok(()),
        };
        closed.and(put).map(|()| size)
    };
    uploaded(svc, caller, name, digest, &result);
    let size = result?;
    pushed(svc, caller, name, digest, size).await;
    Ok(size)
}

/// Opens a new upload session in `name` (refused when storage is low on space: the
/// client learns it before it sends the bytes).
#[tracing::instrument(target = "origin::span", name = "uploads.start", skip_all)]
pub async fn start(svc: &Service, name: &RepoName) -> Result<Session> {
    super::space::ensure(svc)?;
    svc.registry.upload_start_open(name).await
}

/// A session as stored (or as this process's cache has it: see `Session::is_cached`).
pub async fn open(svc: &Service, name: &RepoName, id: &UploadId) -> Result<Session> {
    svc.registry.upload_open_or_unknown(name, id).await
}

/// A session read again from storage (another node may have appended).
pub async fn refresh(svc: &Service, s: Session) -> Result<Session> {
    svc.registry.upload_refresh(s).await
}

/// The status of a session as stored, not as this process's cache last saw it.
#[tracing::instrument(target = "origin::span", name = "uploads.status", skip_all)]
pub async fn status(svc: &Service, name: &RepoName, id: &UploadId) -> Result<Session> {
    let s = open(svc, name, id).await?;
    refresh(svc, s).await
}

/// Cancels a session and removes what it received.
#[tracing::instrument(target = "origin::span", name = "uploads.cancel", skip_all)]
pub async fn cancel(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    id: &UploadId,
) -> Result<()> {
    let _write = caller.clock.hold();
    match svc.registry.upload_cancel(name, id).await? {
        true => Ok(()),
        false => Err(Error::BlobUploadUnknown("no such upload".into())),
    }
}

/// Appends a request body to a session and saves its state.
#[tracing::instrument(target = "origin::span", name = "uploads.append", skip_all)]
pub async fn append(
    svc: &Service,
    caller: &Caller<'_>,
    s: &mut Session,
    body: &mut BodyReader<'_>,
) -> Result<()> {
    super::space::ensure(svc)?;
    receive(svc, body, s).await?;
    let _write = caller.clock.hold();
    svc.registry.upload_save(s).await
}

/// Appends a request body to a session and commits it as `digest`: the blob's size. A
/// commit with an empty body adds no data (its bytes are stored already) and is let through
/// when storage is low on space; one that brings bytes is not.
#[tracing::instrument(target = "origin::span", name = "uploads.finish", skip_all)]
pub async fn finish(
    svc: &Service,
    caller: &Caller<'_>,
    mut s: Session,
    digest: &Digest,
    body: &mut BodyReader<'_>,
) -> Result<u64> {
    let name = s.name.clone();
    if body.declared_len() != Some(0) {
        super::space::ensure(svc)?;
    }
    let result = async {
        receive(svc, body, &mut s).await?;
        let held = quota::Held::default();
        let gated = async |size| gate(svc, caller, &held, &name, digest, size).await;
        let _write = caller.clock.hold();
        let finished = svc.registry.upload_finish_gated(s, digest, gated).await;
        quota::settle(svc, caller, held, &name).await;
        finished
    }
    .await;
    uploaded(svc, caller, &name, digest, &result);
    let size = result?;
    pushed(svc, caller, &name, digest, size).await;
    Ok(size)
}

/// A whole blob in one request body, through a session of its own that a failed body
/// leaves nothing of.
#[tracing::instrument(target = "origin::span", name = "uploads.monolithic", skip_all)]
pub async fn monolithic(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    body: &mut BodyReader<'_>,
) -> Result<u64> {
    let result = async {
        let mut session = start(svc, name).await?;
        let id = session.id.clone();
        if let Err(e) = receive(svc, body, &mut session).await {
            drop(session);
            let _write = caller.clock.hold();
            svc.registry.upload_cancel(name, &id).await?;
            return Err(e);
        }
        let held = quota::Held::default();
        let gated = async |size| gate(svc, caller, &held, name, digest, size).await;
        let _write = caller.clock.hold();
        let finished = svc
            .registry
            .upload_finish_gated(session, digest, gated)
            .await;
        quota::settle(svc, caller, held, name).await;
        finished
    }
    .await;
    uploaded(svc, caller, name, digest, &result);
    let size = result?;
    pushed(svc, caller, name, digest, size).await;
    Ok(size)
}

/// Streams a request body through the hasher into the session's data, up to
/// `blob_bytes_max`. Two buffers: the next chunk is received while the previous one is
/// written, so the socket and the disk overlap instead of taking turns.
async fn receive(svc: &Service, body: &mut BodyReader<'_>, s: &mut Session) -> Result<()> {
    let reg = &svc.registry;
    body.set_limit(svc.limits.blob_bytes_max)?;
    body.allow_long_transfer();
    let mut filled = svc.buffers.take();
    let mut spare = svc.buffers.take();
    let BodyRead(first, b) = body.read(filled).await;
    filled = b;
    let mut n = match first {
        Ok(n) => n,
        Err(e) => {
            svc.buffers.give(filled);
            svc.buffers.give(spare);
            return Err(Error::from(e));
        }
    };
    let result = loop {
        if n == 0 {
            break Ok(());
        }
        s.hasher.update(&filled[..n]);
        let ((w, written), BodyRead(r, next)) =
            crate::future::join(reg.upload_write(s, filled), body.read(spare)).await;
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
    svc.buffers.give(filled);
    svc.buffers.give(spare);
    result
}
