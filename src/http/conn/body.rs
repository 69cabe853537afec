//! Request bodies: Content-Length or chunked, read with a limit and a deadline.

use std::io;
use std::time::Duration;

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::time::timeout;

use super::super::chunked::{ChunkError, Decoder};
use super::super::head::BodyKind;
use super::deadline::RequestClock;
use super::{Stream, FILE_CHUNK_BYTES};

#[derive(Debug)]
pub enum BodyError {
    /// More than the route's limit; answer 413.
    TooLarge,
    /// No byte within the body idle deadline.
    Timeout,
    /// The client closed before the body ended.
    Closed,
    Malformed(ChunkError),
    Io(io::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("request body too large"),
            BodyError::Timeout => f.write_str("request body timed out"),
            BodyError::Closed => f.write_str("connection closed during request body"),
            BodyError::Malformed(e) => write!(f, "{e}"),
            BodyError::Io(e) => write!(f, "i/o error reading body: {e}"),
        }
    }
}

/// Streams a request body to the handler; it is never buffered whole.
pub struct BodyReader<'a> {
    pub(super) stream: &'a mut Stream,
    /// Bytes read past the head: the body's start, maybe a pipelined request after it.
    pending: &'a mut Vec<u8>,
    kind: BodyKind,
    remaining: u64,
    decoder: Decoder,
    done: bool,
    limit: u64,
    total: u64,
    idle: Duration,
    send_continue: bool,
    broken: bool,
    clock: &'a RequestClock,
    /// Set by routes whose bodies may be large (blob uploads): bytes that arrive push the
    /// request's deadline out (see [`RequestClock`]).
    long: bool,
}

/// A read's result with the buffer handed back, in compio's owned-buffer style.
pub struct BodyRead(pub Result<usize, BodyError>, pub Vec<u8>);

impl<'a> BodyReader<'a> {
    pub(super) fn new(
        stream: &'a mut Stream,
        pending: &'a mut Vec<u8>,
        kind: BodyKind,
        expect_continue: bool,
        idle: Duration,
        clock: &'a RequestClock,
    ) -> Self {
        let (remaining, done) = match kind {
            BodyKind::None => (0, true),
            BodyKind::Length(n) => (n, n == 0),
            BodyKind::Chunked => (0, false),
        };
        BodyReader {
            stream,
            pending,
            kind,
            remaining,
            decoder: Decoder::new(),
            done,
            limit: u64::MAX,
            total: 0,
            idle,
            send_continue: expect_continue && !done,
            broken: false,
            clock,
            long: false,
        }
    }

    /// The body length the client announced (0 for no body), or None when chunked.
    pub fn declared_len(&self) -> Option<u64> {
        match self.kind {
            BodyKind::None => Some(0),
            BodyKind::Length(n) => Some(n),
            BodyKind::Chunked => None,
        }
    }

    /// Sets the route's body limit; reading past it fails with [`BodyError::TooLarge`].
    pub fn set_limit(&mut self, limit: u64) -> Result<(), BodyError> {
        self.limit = limit;
        match self.kind {
            BodyKind::Length(n) if n > limit => Err(BodyError::TooLarge),
            _ => Ok(()),
        }
    }

    /// A body that may take longer than `server.query_timeout` to arrive: while its bytes
    /// keep coming (each pause within `body_idle_timeout`) the request is not cut.
    pub fn allow_long_transfer(&mut self) {
        self.long = true;
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    /// Reads the next body bytes into `out` (cleared first, filled up to its capacity).
    /// `Ok(0)` means the body has ended.
    pub async fn read(&mut self, mut out: Vec<u8>) -> BodyRead {
        out.clear();
        if out.capacity() == 0 {
            out.reserve(FILE_CHUNK_BYTES);
        }
        loop {
            if self.done {
                return BodyRead(Ok(0), out);
            }
            if self.broken {
                return BodyRead(Err(BodyError::Closed), out);
            }
            out = match self.fill(out).await {
                BodyRead(Ok(_), o) => o,
                BodyRead(Err(e), o) => {
                    self.broken = true;
                    return BodyRead(Err(e), o);
                }
            };
            let n = match self.frame(&mut out) {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
                    return BodyRead(Err(e), out);
                }
            };
            if n > 0 || self.done {
                return BodyRead(Ok(n), out);
            }
        }
    }

    /// Reads the whole body into memory, for routes whose bodies are small by rule
    /// (manifests); `limit` bounds it.
    pub async fn read_to_vec(&mut self, limit: u64) -> Result<Vec<u8>, BodyError> {
        self.set_limit(limit)?;
        let first = self.declared_len().unwrap_or(64 * 1024).min(limit) as usize;
        let mut all = Vec::with_capacity(first);
        let mut chunk = Vec::with_capacity(64 * 1024);
        loop {
            let BodyRead(r, c) = self.read(chunk).await;
            chunk = c;
            match r? {
                0 => return Ok(all),
                n => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Moves raw bytes into `out`: pending bytes first, else one socket read.
    async fn fill(&mut self, mut out: Vec<u8>) -> BodyRead {
        if !Vec::is_empty(self.pending) {
            let n = self.pending.len().min(out.capacity());
            out.extend_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return BodyRead(Ok(n), out);
        }
        if self.send_continue {
            self.send_continue = false;
            let BufResult(r, _) = self
                .stream
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await;
            if let Err(e) = r {
                return BodyRead(Err(BodyError::Io(e)), out);
            }
        }
        let cap = out.capacity();
        match timeout(self.idle, self.stream.read(out)).await {
            Err(_) => BodyRead(Err(BodyError::Timeout), Vec::with_capacity(cap)),
            Ok(BufResult(Ok(0), o)) => BodyRead(Err(BodyError::Closed), o),
            Ok(BufResult(Ok(n), o)) => {
                if self.long {
                    self.clock.moved();
                }
                BodyRead(Ok(n), o)
            }
            Ok(BufResult(Err(e), o)) => BodyRead(Err(BodyError::Io(e)), o),
        }
    }

    /// Applies the framing to the raw bytes in `out`; returns the data bytes left at its front.
    /// Bytes past the body go back to `pending` for the next request.
    fn frame(&mut self, out: &mut Vec<u8>) -> Result<usize, BodyError> {
        let n = match self.kind {
            BodyKind::None => 0,
            BodyKind::Length(_) => {
                let take = (out.len() as u64).min(self.remaining) as usize;
                if take < out.len() {
                    self.pending.splice(0..0, out.drain(take..));
                }
                self.remaining -= take as u64;
                self.done = self.remaining == 0;
                take
            }
            BodyKind::Chunked => {
                let p = self.decoder.decode(out).map_err(BodyError::Malformed)?;
                if p.consumed < out.len() {
                    self.pending.splice(0..0, out.drain(p.consumed..));
                }
                out.truncate(p.data);
                self.done = self.decoder.is_done();
                p.data
            }
        };
        self.total += n as u64;
        if self.total > self.limit {
            return Err(BodyError::TooLarge);
        }
        Ok(n)
    }

    /// Reads and discards what is left of the body, up to `max` bytes. True if it ended.
    pub(super) async fn drain(&mut self, max: u64) -> bool {
        if self.broken {
            return false;
        }
        // Nothing was sent yet and the client waits for 100-continue: it will not send the
        // body, but it may not know that either; close rather than guess.
        if self.send_continue {
            return false;
        }
        let start = self.total;
        let mut buf = Vec::with_capacity(16 * 1024);
        while !self.done {
            if self.total - start > max {
                return false;
            }
            let BodyRead(r, b) = self.read(buf).await;
            buf = b;
            if r.is_err() {
                return false;
            }
        }
        true
    }
}
