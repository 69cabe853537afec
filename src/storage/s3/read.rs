//! Ranged reads of an object, or of an upload session's staged parts in order (to rehash a
//! session with another algorithm before it is committed): one open GET streamed while reads
//! are sequential, a new ranged GET when they jump or cross into the next part. Memory is the
//! caller's buffer plus one copy of it.

use std::cell::RefCell;
use std::io;
#[cfg(test)]
use std::os::fd::BorrowedFd;

use compio::buf::IoBufMut;
use compio::BufResult;
use rusty_s3::{Bucket, Credentials};

use super::client::{sign_with, Request};
use super::S3Storage;
use crate::http::client::Response;
use crate::storage::{BlobReader, Etag};

/// One object of what is read, at `start` in the whole.
pub(super) struct Segment {
    pub full: String,
    pub start: u64,
    pub size: u64,
    /// The version seen at open: reads are pinned to it with `If-Match`, so a replaced
    /// object fails the read instead of mixing two contents.
    pub etag: Option<Etag>,
}

/// A GET in progress: its segment and where its next byte is in the whole.
struct Stream {
    segment: usize,
    pos: u64,
    resp: Response,
}

pub struct S3Reader {
    store: S3Storage,
    segments: Vec<Segment>,
    size: u64,
    stream: RefCell<Option<Stream>>,
}

impl S3Reader {
    pub(super) fn new(store: S3Storage, full: String, size: u64, etag: Option<Etag>) -> Self {
        let segment = Segment {
            full,
            start: 0,
            size,
            etag,
        };
        S3Reader::of_segments(store, vec![segment])
    }

    /// A reader whose first GET (from byte 0, the whole object) is already answered, so a
    /// blob served from its start costs that one GET and no HEAD (`open_read_started`).
    pub(super) fn started(
        store: S3Storage,
        full: String,
        size: u64,
        etag: Option<Etag>,
        resp: Response,
    ) -> Self {
        let reader = S3Reader::new(store, full, size, etag);
        *reader.stream.borrow_mut() = Some(Stream {
            segment: 0,
            pos: 0,
            resp,
        });
        reader
    }

    /// Segments in order, contiguous from 0.
    pub(super) fn of_segments(store: S3Storage, segments: Vec<Segment>) -> Self {
        let size = segments.last().map_or(0, |s| s.start + s.size);
        S3Reader {
            store,
            segments,
            size,
            stream: RefCell::new(None),
        }
    }

    /// A GET of segment `i` from `offset` (in the whole) to the segment's end.
    async fn open_at(&self, i: usize, offset: u64) -> io::Result<Response> {
        let seg = &self.segments[i];
        let within = offset - seg.start;
        let mut headers = vec![("range", format!("bytes={within}-"))];
        if let Some(e) = &seg.etag {
            headers.push(("if-match", e.as_str().to_string()));
        }
        let full = seg.full.as_str();
        let sign = |b: &Bucket, c: Option<&Credentials>, h: &[(&'static str, String)]| {
            sign_with(b.get_object(c, full), h)
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
            .map_err(|e| match e {
                // The kind tells the server whether to answer 503 (gave up: TimedOut).
                crate::storage::StorageError::Io(io) => io,
                other => io::Error::other(other),
            })?;
        match sent.resp.status {
            206 => Ok(sent.resp),
            200 if within == 0 => Ok(sent.resp),
            412 | 404 => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("S3 object {full:?} was replaced or removed while being read"),
            )),
            s => Err(io::Error::other(format!(
                "S3 GetObject {full:?} range {within}-: status {s}"
            ))),
        }
    }

    /// Sends the GET that reads from `offset` on, so a failing service is known before a
    /// response head promising the body is sent (a clean 503 rather than a cut body).
    pub async fn start_at(&self, offset: u64) -> io::Result<()> {
        let Some(i) = self.segments.iter().position(|s| offset < s.start + s.size) else {
            return Ok(());
        };
        if self
            .stream
            .borrow()
            .as_ref()
            .is_some_and(|s| s.segment == i && s.pos == offset)
        {
            // Already answered (`started`).
            return Ok(());
        }
        let resp = self.open_at(i, offset).await?;
        *self.stream.borrow_mut() = Some(Stream {
            segment: i,
            pos: offset,
            resp,
        });
        Ok(())
    }

    /// Up to `want` bytes at `offset`, within one segment.
    async fn read_into(&self, want: usize, offset: u64) -> io::Result<Vec<u8>> {
        let i = self
            .segments
            .iter()
            .position(|s| offset < s.start + s.size)
            .ok_or_else(|| io::Error::other("read past the end"))?;
        let seg_end = self.segments[i].start + self.segments[i].size;
        let want = (want as u64).min(seg_end - offset) as usize;
        let taken = self.stream.borrow_mut().take();
        let mut stream = match taken {
            Some(s) if s.pos == offset && s.segment == i => s,
            _ => Stream {
                segment: i,
                pos: offset,
                resp: self.open_at(i, offset).await?,
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
        if stream.pos < seg_end {
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

    #[cfg(test)]
    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}
