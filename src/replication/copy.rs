//! Copies to a target: a manifest with everything it names (index children first, then
//! config and layers, then the manifest itself by digest, then its tag), the referrers that
//! follow it (signatures, SBOMs, attestations), and deletions.
//!
//! Only what the target lacks is sent: a manifest it has by digest is not walked again
//! (registries store a manifest only once what it names is there), a blob it has (HEAD) is
//! skipped, one it has in another repository is mounted, and the rest is uploaded from
//! storage in chunks of [`CHUNK_BYTES`], so a copy holds one chunk in memory whatever the
//! blob's size.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use compio::BufResult;

use super::metrics::{self, TargetMetrics};
use super::queue::Claimed;
use super::remote::{CopyError, CopyResult, Sending, Started, Status};
use super::{resume, Target};
use crate::error::Error;
use crate::http::client::Target as Session;
use crate::oci::manifest::Manifest;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::manifests::StoredManifest;
use crate::registry::{layout, Registry};
use crate::storage::{BackendReader, BlobReader};

/// Bytes of a blob sent per request: a blob up to this size goes in one PUT, a larger one
/// in PATCHes of this size. Also what one running copy holds in memory.
pub const CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Nesting followed below the manifest a job names (index children, referrers of referrers).
const DEPTH_MAX: usize = 8;
/// Referrers of one manifest that follow it.
const REFERRERS_MAX: usize = 1000;
/// How often a request sending a blob's bytes looks whether the lease is due for renewal
/// (a check of the time; storage is written once a third of the lease has passed).
const LEASE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);
/// How often a copy that finds its blob being sent by another copy looks again.
const SENDING_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// What a copy came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied,
    /// The reference is no longer at the source (deleted since): nothing to send.
    Gone,
}

struct Copy<'a> {
    reg: &'a Registry,
    target: &'a Target,
    src: &'a RepoName,
    dst: String,
    lease: Option<&'a Claimed>,
    metrics: std::sync::Arc<TargetMetrics>,
}

/// Makes the target's `reference` of `src` what it is here now, with everything it names.
/// `lease` is the claim of the job this is for, renewed as the copy makes progress.
pub async fn push(
    reg: &Registry,
    target: &Target,
    src: &RepoName,
    reference: &Reference,
    lease: Option<&Claimed>,
) -> CopyResult<Outcome> {
    let digest = match reference {
        Reference::Digest(d) => d.clone(),
        Reference::Tag(t) => match reg.resolve_tag(src, t).await? {
            Some(d) => d,
            None => return Ok(Outcome::Gone),
        },
    };
    let Some(m) = stored(reg, src, &digest).await? else {
        return Ok(Outcome::Gone);
    };
    let copy = Copy {
        reg,
        target,
        src,
        dst: target.target_name(src.as_str()),
        lease,
        metrics: metrics::of(&target.name),
    };
    copy.manifest(&m, 0).await?;
    if let Reference::Tag(t) = reference {
        let remote = &target.remote;
        remote
            .put_manifest(&copy.dst, t.as_str(), &m.media_type, &m.bytes)
            .await?;
        metrics::add(&copy.metrics.manifests_sent, 1);
    }
    Ok(Outcome::Copied)
}

/// Deletes `reference` of `src` at the target, unless it is back here (pushed again since
/// the deletion): the target then keeps it.
pub async fn delete(
    reg: &Registry,
    target: &Target,
    src: &RepoName,
    reference: &Reference,
) -> CopyResult<Outcome> {
    let present = match reference {
        Reference::Tag(t) => reg.resolve_tag(src, t).await?.is_some(),
        Reference::Digest(d) => stored(reg, src, d).await?.is_some(),
    };
    if present {
        return Ok(Outcome::Gone);
    }
    let dst = target.target_name(src.as_str());
    target
        .remote
        .delete_manifest(&dst, reference.as_str())
        .await?;
    Ok(Outcome::Copied)
}

/// The manifest as stored now: its link is read from storage first, so a deletion by another
/// process (`origin scrub --retention`, another node) is seen even while this process's
/// manifest cache still holds the content.
async fn stored(reg: &Registry, src: &RepoName, d: &Digest) -> CopyResult<Option<StoredManifest>> {
    if !reg.manifest_stored(src, d).await? {
        return Ok(None);
    }
    match reg.get_manifest(src, &Reference::Digest(d.clone())).await {
        Ok(m) => Ok(Some(m)),
        Err(Error::ManifestUnknown(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

type Step<'f> = Pin<Box<dyn Future<Output = CopyResult<()>> + 'f>>;

impl Copy<'_> {
    /// Where to continue the upload recorded at `record` (of a blob of `size` bytes): the
    /// session and the offset the target holds, or None to start another (no record; the
    /// target forgot the session; or it holds less than it acknowledged, or more than the
    /// blob: cancelled).
    async fn resumed(&self, record: &str, size: u64) -> CopyResult<Option<(Session, u64)>> {
        let store = &self.reg.store;
        let Some(rec) = resume::read(store, record).await? else {
            return Ok(None);
        };
        let remote = &self.target.remote;
        let Some(at) = remote.session_at(&rec.path).filter(|_| rec.size == size) else {
            resume::clear(store, record).await;
            return Ok(None);
        };
        match remote.upload_status(&self.dst, &at).await? {
            Status::At { offset, at } if (rec.offset..=size).contains(&offset) && offset > 0 => {
                metrics::add(&self.metrics.blobs_resumed, 1);
                tracing::info!(target = %self.target.name, repository = %self.dst,
                    offset, size, "resuming a blob upload");
                Ok(Some((at, offset)))
            }
            found => {
                if let Status::At { offset, .. } = found {
                    tracing::info!(target = %self.target.name, repository = %self.dst,
                        offset, recorded = rec.offset,
                        "an upload to resume disagrees with what it acknowledged: sending anew");
                    remote.cancel_upload(&self.dst, &at).await;
                }
                resume::clear(store, record).await;
                Ok(None)
            }
        }
    }

    /// Records that the target acknowledged `offset` bytes of the upload now at `at`.
    async fn record(&self, record: &str, at: &Session, offset: u64, size: u64) -> CopyResult<()> {
        let Some(path) = self.target.remote.session_path(at) else {
            return Ok(());
        };
        let rec = resume::Record {
            path,
            offset,
            size,
            updated_ms: super::job::millis(self.reg.clock.now()),
        };
        resume::write(&self.reg.store, record, &rec).await?;
        Ok(())
    }

    /// Runs `work` (one request with a blob's bytes, which under `max_bytes_per_second` may
    /// take longer than the lease) while renewing the lease beside it. A renewal cut off by
    /// the end of `work` may leave the job's version unknown to this copy: the job is then
    /// not removed at the end, and runs once more after its lease (HEADs only).
    async fn kept<T>(&self, work: impl Future<Output = CopyResult<T>>) -> CopyResult<T> {
        if self.lease.is_none() {
            return work.await;
        }
        let renew = async {
            loop {
                compio::time::sleep(LEASE_CHECK).await;
                if let Err(e) = self.keep().await {
                    return e;
                }
            }
        };
        let mut work = std::pin::pin!(work);
        let mut renew = std::pin::pin!(renew);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = work.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            renew.as_mut().poll(cx).map(Err)
        })
        .await
    }

    async fn keep(&self) -> CopyResult<()> {
        let Some(lease) = self.lease else {
            return Ok(());
        };
        let now = super::job::millis(self.reg.clock.now());
        match lease.keep(&self.reg.store, now).await? {
            true => Ok(()),
            false => Err(CopyError::Target(
                "the job was taken over by another node (lease expired)".into(),
            )),
        }
    }

    /// The manifest `m` at the target by digest, with what it names, then its referrers.
    fn manifest<'f>(&'f self, m: &'f StoredManifest, depth: usize) -> Step<'f> {
        Box::pin(async move {
            if depth > DEPTH_MAX {
                return Err(CopyError::Target(format!(
                    "{}: nested more than {DEPTH_MAX} deep",
                    m.digest
                )));
            }
            let remote = &self.target.remote;
            if !remote.has_manifest(&self.dst, m.digest.as_str()).await? {
                let parsed = Manifest::parse(Some(&m.media_type), &m.bytes).map_err(|e| {
                    CopyError::Source(Error::ManifestInvalid(format!("{}: {e}", m.digest)))
                })?;
                for child in parsed.manifests() {
                    let Some(cm) = stored(self.reg, self.src, &child.digest).await? else {
                        return Err(CopyError::Source(Error::ManifestUnknown(format!(
                            "index child {} is not stored",
                            child.digest
                        ))));
                    };
                    self.manifest(&cm, depth + 1).await?;
                }
                // A blob another copy of this process is sending waits until the others are
                // sent: shared base layers do not hold up an image's own layers.
                let mut later = Vec::new();
                for d in parsed.config().into_iter().chain(parsed.layers()) {
                    // A foreign layer (with `urls`) that is not stored here is fetched by
                    // clients from where it says, at the target as here.
                    let foreign = d.urls.as_ref().is_some_and(|u| !u.is_empty());
                    if remote.is_sending(&d.digest) {
                        later.push((d, foreign));
                        continue;
                    }
                    self.blob(&d.digest, foreign).await?;
                    self.keep().await?;
                }
                for (d, foreign) in later {
                    self.blob(&d.digest, foreign).await?;
                    self.keep().await?;
                }
                // One PUT of a manifest at a time in this process, and none of one the target
                // got meanwhile: two jobs can hold the same manifest (an image, and the index
                // naming it), and a registry that rewrites a manifest's link in place
                // (distribution's filesystem driver truncates, then writes) shows an index
                // PUT verifying it meanwhile an empty link, and refuses the index.
                let (_sending, _) = self.sending(&m.digest).await?;
                if !remote.has_manifest(&self.dst, m.digest.as_str()).await? {
                    remote
                        .put_manifest(&self.dst, m.digest.as_str(), &m.media_type, &m.bytes)
                        .await?;
                    metrics::add(&self.metrics.manifests_sent, 1);
                }
            }
            let referrers = self
                .reg
                .referrers_page(self.src, &m.digest, None, None, REFERRERS_MAX)
                .await?;
            for r in referrers {
                if let Some(rm) = stored(self.reg, self.src, &r.digest).await? {
                    self.manifest(&rm, depth + 1).await?;
                }
            }
            Ok(())
        })
    }

    /// The mark of `digest` being sent by this copy, once no other copy of this process is
    /// sending it; and whether it waited for another.
    async fn sending(&self, digest: &Digest) -> CopyResult<(Sending<'_>, bool)> {
        let mut waited = false;
        loop {
            if let Some(mark) = self.target.remote.start_sending(digest) {
                return Ok((mark, waited));
            }
            waited = true;
            compio::time::sleep(SENDING_POLL).await;
            self.keep().await?;
        }
    }

    /// The blob at the target's repository: there already, mounted, or uploaded.
    async fn blob(&self, digest: &Digest, foreign: bool) -> CopyResult<()> {
        let remote = &self.target.remote;
        if remote.has_blob(&self.dst, digest).await? {
            metrics::add(&self.metrics.blobs_present, 1);
            remote.note_sent(digest, &self.dst);
            return Ok(());
        }
        // One upload of a blob at a time in this process: a copy that waited for another
        // finds the blob there, or mounts it from where the other sent it.
        let (_sending, waited) = self.sending(digest).await?;
        if waited && remote.has_blob(&self.dst, digest).await? {
            metrics::add(&self.metrics.blobs_present, 1);
            return Ok(());
        }
        let Some(reader) = self.reg.open_blob(self.src, digest).await? else {
            if foreign {
                return Ok(());
            }
            return Err(CopyError::Source(Error::BlobUnknown(format!(
                "{digest} is not stored in {}",
                self.src
            ))));
        };
        let size = reader.size();
        let chunked = size > CHUNK_BYTES as u64;
        let record = layout::replication_upload(&self.target.name, &self.dst, digest);
        let resumed = if chunked {
            self.resumed(&record, size).await?
        } else {
            None
        };
        let (mut at, mut offset) = match resumed {
            Some(found) => found,
            None => {
                let hint = remote.mount_hint(digest);
                let from = hint.as_deref().filter(|h| *h != self.dst.as_str());
                let mount = from.map(|f| (digest, f));
                match remote.start_upload(&self.dst, mount).await? {
                    Started::Mounted => {
                        metrics::add(&self.metrics.blobs_mounted, 1);
                        remote.note_sent(digest, &self.dst);
                        return Ok(());
                    }
                    Started::Session(at) => (at, 0),
                }
            }
        };
        if !chunked {
            let bytes = read_chunk(&reader, 0, size as usize).await?;
            self.kept(remote.finish(&self.dst, at, digest, &bytes))
                .await?;
            metrics::add(&self.metrics.bytes_sent, size);
        } else {
            while offset < size {
                let want = (size - offset).min(CHUNK_BYTES as u64) as usize;
                let chunk = read_chunk(&reader, offset, want).await?;
                at = self
                    .kept(remote.patch(&self.dst, &at, offset, &chunk))
                    .await?;
                offset += want as u64;
                metrics::add(&self.metrics.bytes_sent, want as u64);
                self.record(&record, &at, offset, size).await?;
                self.keep().await?;
            }
            remote.finish(&self.dst, at, digest, &[]).await?;
            resume::clear(&self.reg.store, &record).await;
        }
        metrics::add(&self.metrics.blobs_sent, 1);
        remote.note_sent(digest, &self.dst);
        Ok(())
    }
}

/// `len` bytes of the blob from `offset`, whole.
async fn read_chunk(reader: &BackendReader, offset: u64, len: usize) -> CopyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let at = offset + out.len() as u64;
        let want = len - out.len();
        let BufResult(r, buf) = reader.read_at(Vec::with_capacity(want), at).await;
        let n = r.map_err(|e| CopyError::Source(Error::Internal(e.into())))?;
        if n == 0 {
            return Err(CopyError::Source(Error::Internal(
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its size",
                )
                .into(),
            )));
        }
        out.extend_from_slice(&buf[..n.min(buf.len())]);
    }
    Ok(out)
}
