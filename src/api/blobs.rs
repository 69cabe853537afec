//! Blobs: GET and HEAD (with single byte ranges), DELETE.

use super::events::{self, Spec, Who};
use crate::app::App;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::http::response::{BodySource, SourceRead, StreamBody};
use crate::http::{Body, FileBody, Method, Request, Response};
use crate::oci::{Digest, RepoName};
use crate::storage::{BlobBody, BlobReader, BlobStream};

/// A blob the store streams (not a local file) served as a pulled body, from `pos` on.
struct StoredBlob {
    reader: BlobStream,
    pos: u64,
}

impl BodySource for StoredBlob {
    fn read(&mut self, mut buf: Vec<u8>, want: usize) -> SourceRead<'_> {
        Box::pin(async move {
            use compio::buf::{IntoInner, IoBuf};
            buf.clear();
            buf.reserve(want);
            let compio::BufResult(r, slice) =
                self.reader.read_at(buf.slice(..want), self.pos).await;
            let buf = slice.into_inner();
            if let Ok(n) = r {
                self.pos += n as u64;
            }
            (r, buf)
        })
    }
}

fn blob_unknown() -> Error {
    Error::BlobUnknown("blob unknown to registry".into())
}

pub async fn handle(
    app: &App,
    req: &mut Request<'_>,
    method: Method,
    name: &RepoName,
    digest: &Digest,
    mirror: Option<&std::sync::Arc<crate::mirror::MirrorNs>>,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
    if method == Method::Delete {
        let _write = req.clock.hold();
        if !reg.unlink_blob(name, digest).await? {
            return Err(blob_unknown());
        }
        return Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()));
    }
    let head_only = method == Method::Head;
    if let Some(ns) = mirror {
        // Not in this repository: stored for another one, it is linked here only once the
        // upstream confirms this repository has it; else it is fetched.
        if reg.repo_blob_size(name, digest).await?.is_none() {
            // A fetch for this repository that is committing (stored, not linked yet) is
            // joined rather than confirmed again upstream.
            let linked = !app.mirrors.fetching_for(name, digest)
                && reg.blob_size(digest).await?.is_some()
                && {
                    crate::mirror::blob_size_upstream(ns, name, digest).await?;
                    reg.mount_blob(name, digest, None).await?
                };
            if !linked {
                if head_only {
                    let size = crate::mirror::blob_size_upstream(ns, name, digest).await?;
                    return Ok(Response::new(200)
                        .header("Content-Type", "application/octet-stream")
                        .header("Docker-Content-Digest", digest.to_string())
                        .header("Accept-Ranges", "bytes")
                        .body(Body::Length(size)));
                }
                let range = req.head.header("range").map(str::to_owned);
                let clock = req.clock;
                let moving = || clock.moved();
                let served =
                    crate::mirror::serve_blob(app, ns, name, digest, range.as_deref(), &moving)
                        .await?;
                if let Some((resp, size)) = served {
                    // Streamed while it arrives: pulled all the same.
                    pulled(app, who, name, digest, size).await?;
                    return Ok(resp);
                }
            }
        }
    }
    // On S3 with `redirect`, a GET is answered with a 307 to the bucket after the same
    // checks as a streamed one (the link here, the blob's size); HEAD never redirects. A
    // Range GET redirects too: the client sends its Range to S3, which honours it.
    let redirect = !head_only && reg.redirects_blobs();
    let reader = if head_only || redirect {
        None
    } else {
        Some(
            reg.open_blob(name, digest)
                .await?
                .ok_or_else(blob_unknown)?,
        )
    };
    let size = match &reader {
        Some(r) => r.size(),
        None => reg
            .repo_blob_size(name, digest)
            .await?
            .ok_or_else(blob_unknown)?,
    };
    let (resp, offset, len) = ranged(digest, size, req.head.header("range"))?;
    if !head_only {
        pulled(app, who, name, digest, size).await?;
    }
    if redirect {
        let url = reg
            .blob_redirect_url(digest)?
            .ok_or_else(|| Error::internal("redirect without a URL"))?;
        crate::metrics::METRICS
            .blob_redirects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Ok(Response::new(307)
            .header("Location", url)
            .header("Docker-Content-Digest", digest.to_string())
            .header("Cache-Control", "no-store"));
    }
    let body = match reader {
        Some(r) => match r
            .into_body(offset, len)
            .await
            .map_err(crate::storage::StorageError::Io)?
        {
            BlobBody::File(file) => Body::File(FileBody { file, offset, len }),
            BlobBody::Stream(stream) => Body::Stream(StreamBody {
                source: Box::new(StoredBlob {
                    reader: stream,
                    pos: offset,
                }),
                len,
            }),
        },
        None => Body::Length(len),
    };
    Ok(resp.body(body))
}

/// The `blob.pull` event of a GET (its `required` webhooks may refuse it).
async fn pulled(
    app: &App,
    who: &Who<'_>,
    name: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    if !events::wanted(app) {
        return Ok(());
    }
    let spec = Spec {
        kind: EventKind::BlobPull,
        name,
        digest,
        tag: None,
        reference: Some(digest.as_str()),
        media_type: None,
        size: Some(size),
    };
    events::before(app, who, &spec).await?;
    events::after(app, who, &spec).await;
    Ok(())
}

/// A blob response without its body, for `size` bytes and an optional Range header (206
/// with Content-Range, or 416), and the region (offset, length) to send.
pub fn ranged(
    digest: &Digest,
    size: u64,
    range_header: Option<&str>,
) -> Result<(Response, u64, u64)> {
    let range = match range_header {
        Some(h) => parse_range(h, size).map_err(|_| Error::RangeNotSatisfiable { size })?,
        None => None,
    };
    let (status, offset, len) = match range {
        Some((start, end)) => (206, start, end - start + 1),
        None => (200, 0, size),
    };
    let mut resp = Response::new(status)
        .header("Content-Type", "application/octet-stream")
        .content_digest(digest.as_str())
        .header("Accept-Ranges", "bytes");
    if status == 206 {
        resp = resp.header(
            "Content-Range",
            format!("bytes {}-{}/{}", offset, offset + len - 1, size),
        );
    }
    Ok((resp, offset, len))
}

/// A Range header that cannot be served (416).
#[derive(Debug, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single `bytes=` range against `size`. `Ok(None)`: serve the whole blob (no
/// range, several ranges, or another unit); `Err`: unsatisfiable (416).
pub fn parse_range(
    header: &str,
    size: u64,
) -> std::result::Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.trim().split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // Suffix: the last b bytes.
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .min(size.saturating_sub(1))
        };
        (start, end)
    };
    if start >= size || start > end {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::{parse_range, Unsatisfiable};

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=5-1", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=x-1", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-0", 0), Err(Unsatisfiable));
    }
}
