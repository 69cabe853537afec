//! Blobs: GET and HEAD (with single byte ranges), DELETE.

use crate::error::{Error, Result};
use crate::http::growing::GrowingBody;
use crate::http::response::{BodySource, SourceRead, StreamBody};
use crate::http::{Body, FileBody, Method, Request, Response};
use crate::oci::{Digest, RepoName};
use crate::service::blobs::{self, Content};
use crate::service::{Caller, Service};
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

pub async fn handle(
    svc: &Service,
    req: &mut Request<'_>,
    caller: &Caller<'_>,
    name: &RepoName,
    digest: &Digest,
    mirror: Option<&std::sync::Arc<crate::mirror::MirrorNs>>,
) -> Result<Response> {
    let method = req.head.method;
    if method == Method::Delete {
        crate::future::cold(blobs::delete(svc, caller, name, digest)).await?;
        return Ok(Response::new(202).header("Docker-Content-Digest", digest.to_string()));
    }
    let head_only = method == Method::Head;
    let range = req.head.header("range");
    let clock = req.clock;
    let moving = || clock.moved();
    let fit = |size| ranged(digest, size, range);
    let served = blobs::read(svc, caller, name, digest, head_only, mirror, &moving, fit).await?;
    let (resp, offset, len) = served.fit;
    let body = match served.content {
        Content::Head => Body::Length(len),
        Content::Redirect(url) => {
            return Ok(Response::new(307)
                .header("Location", url)
                .header("Docker-Content-Digest", digest.to_string())
                .header("Cache-Control", "no-store"));
        }
        Content::Fetching(f) => Body::Growing(GrowingBody {
            file: f.file,
            progress: f.progress,
            offset,
            len,
        }),
        Content::Stored(r) => match r
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
    };
    Ok(resp.body(body))
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
