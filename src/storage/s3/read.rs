//! Ranged reads of an object: one open GET streamed while reads are sequential, a new ranged
//! GET when they jump. Memory is the caller's buffer plus one copy of it.

use std::cell::RefCell;
use std::io;
use std::os::fd::BorrowedFd;

use compio::buf::IoBufMut;
use compio::BufResult;
use rusty_s3::{Bucket, Credentials, S3Action};

use super::client::{Request, SIGNATURE_EXPIRY};
use super::S3Storage;
use crate::http::client::Response;
use crate::storage::{BlobReader, Etag};

/// A GET in progress and where its next byte is in the object.
struct Stream {
    pos: u64,
    resp: Response,
}

pub struct S3Reader {
    store: S3Storage,
    full: String,
    size: u64,
    /// The version seen at open: later reads are pinned to it with `If-Match`, so a replaced
    /// object fails the read instead of mixing two contents.
    etag: Option<Etag>,
    stream: RefCell<Option<Stream>>,
}

impl S3Reader {
    pub(super) fn new(store: S3Storage, full: String, size: u64, etag: Option<Etag>) -> Self {
        S3Reader {
            store,
            full,
            size,
            etag,
            stream: RefCell::new(None),
        }
    }

    /// A GET from `offset` to the end.
    async fn open_at(&self, offset: u64) -> io::Result<Response> {
        let mut headers = vec![("range", format!("bytes={offset}-"))];
        if let Some(e) = &self.etag {
            headers.push(("if-match", e.as_str().to_string()));
        }
        let full = self.full.as_str();
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| {
            let mut a = b.get_object(c, full);
            for (n, v) in h {
                a.headers_mut().insert(*n, v.clone());
            }
            a.sign(SIGNATURE_EXPIRY)
        };
        let sent = self
            .store
            .client()
            .call(&Request {
                op: "GetObject",
                method: "GET",
                key: full,
                sign: &sign,
                headers,
                body: &[],
            })
            .await
            .map_err(io::Error::other)?;
        match sent.resp.status {
            206 => Ok(sent.resp),
            200 if offset == 0 => Ok(sent.resp),
            412 | 404 => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("S3 object {full:?} was replaced or removed while being read"),
            )),
            s => Err(io::Error::other(format!(
                "S3 GetObject {full:?} range {offset}-: status {s}"
            ))),
        }
    }

    async fn read_into(&self, want: usize, offset: u64) -> io::Result<Vec<u8>> {
        let taken = self.stream.borrow_mut().take();
        let mut stream = match taken {
            Some(s) if s.pos == offset => s,
            _ => Stream {
                pos: offset,
                resp: self.open_at(offset).await?,
            },
        };
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let (r, o) = stream.resp.read(out).await;
            out = o;
            if r? == 0 {
                break;
            }
        }
        stream.pos += out.len() as u64;
        if stream.pos < self.size {
            *self.stream.borrow_mut() = Some(stream);
        }
        Ok(out)
    }
}

impl BlobReader for S3Reader {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at<B: IoBufMut>(&self, mut buf: B, offset: u64) -> BufResult<usize, B> {
        if offset >= self.size {
            return BufResult(Ok(0), buf);
        }
        let room = buf.as_uninit().len();
        let want = (room as u64).min(self.size - offset) as usize;
        if want == 0 {
            return BufResult(Ok(0), buf);
        }
        match self.read_into(want, offset).await {
            Ok(bytes) => {
                let n = bytes.len();
                for (dst, src) in buf.as_uninit().iter_mut().zip(&bytes) {
                    dst.write(*src);
                }
                // SAFETY: the first `n` bytes were just written, and n <= the capacity.
                unsafe { buf.set_len(n) };
                BufResult(Ok(n), buf)
            }
            Err(e) => BufResult(Err(e), buf),
        }
    }

    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
