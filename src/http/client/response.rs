//! A response being read: its framing, its body, and draining it for reuse.

use std::io;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::time::timeout;

use crate::http::chunked::Decoder;

use super::pool::{put_idle, Conn, PoolKey};

pub(super) enum Framing {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

/// A response with its body still on the connection.
pub struct Response {
    pub status: u16,
    pub(super) headers: Vec<(String, String)>,
    /// None only once the connection has gone back to the pool (in drop).
    pub(super) conn: Option<Conn>,
    /// Body bytes read along with the head, not yet handed out.
    pub(super) pending: Vec<u8>,
    pub(super) framing: Framing,
    pub(super) timeout: Duration,
    /// Set when the connection may serve another request once this body is read: HTTP/1.1
    /// without `Connection: close`, a declared length, nothing stray read.
    pub(super) reuse: Option<PoolKey>,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.release();
    }
}

/// Request body bytes copied into one socket write: bounds the copy a large part upload
/// makes (the caller keeps the body for a retry) while keeping writes large.
pub(super) const BODY_WRITE_BYTES_MAX: usize = 256 * 1024;

/// Largest body read only to keep a connection (a probe's `{}`, an error document).
pub(super) const DRAIN_BYTES_MAX: u64 = 64 * 1024;

impl Response {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body length when the upstream declared it.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// Appends the next body bytes to `out` (within its spare capacity, which must not be
    /// zero). Returns 0 at the end of the body; a connection cut short is an error.
    pub async fn read(&mut self, mut out: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let start = out.len();
        let spare = out.capacity() - start;
        if spare == 0 {
            return (Err(io::Error::other("no room to read into")), out);
        }
        loop {
            match &mut self.framing {
                Framing::Done => return (Ok(0), out),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return (Ok(0), out);
                }
                Framing::Length(left) => {
                    let want = (*left).min(spare as u64) as usize;
                    let left_now = *left;
                    let got = if !self.pending.is_empty() {
                        take_pending(&mut self.pending, &mut out, want)
                    } else {
                        let (r, o) = self.fill(out).await;
                        out = o;
                        match r {
                            Ok(0) => {
                                return (
                                    Err(io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        "upstream closed before the end of the body",
                                    )),
                                    out,
                                )
                            }
                            Ok(n) => {
                                // Anything past the declared length is not ours (and the
                                // connection is no longer in step).
                                if n > want {
                                    self.reuse = None;
                                }
                                let n = n.min(want);
                                out.truncate(start + n);
                                n
                            }
                            Err(e) => return (Err(e), out),
                        }
                    };
                    self.framing = Framing::Length(left_now - got as u64);
                    return (Ok(got), out);
                }
                Framing::UntilClose => {
                    if !self.pending.is_empty() {
                        let n = take_pending(&mut self.pending, &mut out, spare);
                        return (Ok(n), out);
                    }
                    let (r, o) = self.fill(out).await;
                    if matches!(r, Ok(0)) {
                        self.framing = Framing::Done;
                    }
                    return (r, o);
                }
                Framing::Chunked(_) => {
                    if !self.pending.is_empty() {
                        take_pending(&mut self.pending, &mut out, spare);
                    } else {
                        let (r, o) = self.fill(out).await;
                        out = o;
                        match r {
                            Ok(0) => {
                                return (
                                    Err(io::Error::new(
                                        io::ErrorKind::UnexpectedEof,
                                        "upstream closed inside a chunked body",
                                    )),
                                    out,
                                )
                            }
                            Ok(_) => {}
                            Err(e) => return (Err(e), out),
                        }
                    }
                    let Framing::Chunked(dec) = &mut self.framing else {
                        unreachable!()
                    };
                    let progress = match dec.decode(&mut out[start..]) {
                        Ok(p) => p,
                        Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), out),
                    };
                    let done = dec.is_done();
                    out.truncate(start + progress.data);
                    if done {
                        self.framing = Framing::Done;
                    }
                    if progress.data > 0 || done {
                        return (Ok(progress.data), out);
                    }
                }
            }
        }
    }

    /// Reads from the connection into `out`'s spare capacity, within the timeout.
    pub(super) async fn fill(&mut self, out: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        // `uninit()`: the read appends after what `out` holds (a plain Vec is read from 0).
        let Some(conn) = self.conn.as_mut() else {
            return (Err(io::Error::other("connection already released")), out);
        };
        match timeout(self.timeout, conn.read(out.uninit())).await {
            Ok(BufResult(r, o)) => (r, o.into_inner()),
            Err(_) => (
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream stalled while sending the body",
                )),
                Vec::new(),
            ),
        }
    }

    /// Hands the connection back to the pool once the body has been read to its end (done
    /// on drop too; call it early when the response stays around).
    pub fn release(&mut self) {
        if matches!(self.framing, Framing::Done) && self.pending.is_empty() {
            if let (Some(key), Some(conn)) = (self.reuse.take(), self.conn.take()) {
                put_idle(key, conn);
            }
        }
    }

    /// Reads and drops a small body so the connection can serve another request; a large
    /// one is left (the connection is then closed).
    pub async fn drain(self) {
        let small = match self.framing {
            Framing::Length(n) => n <= DRAIN_BYTES_MAX,
            Framing::Done => true,
            _ => false,
        };
        if small {
            let _ = self.bytes(DRAIN_BYTES_MAX as usize).await;
        }
    }

    /// The whole body, refused past `limit` bytes.
    pub async fn bytes(mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut body: Vec<u8> = Vec::new();
        loop {
            if body.len() > limit {
                return Err(io::Error::other(format!(
                    "upstream body larger than {limit} bytes"
                )));
            }
            body.reserve(64 * 1024);
            let (r, b) = self.read(body).await;
            body = b;
            if r? == 0 {
                return Ok(body);
            }
        }
    }
}

/// Moves up to `max` bytes read along with the head into `out`; returns how many.
pub(super) fn take_pending(pending: &mut Vec<u8>, out: &mut Vec<u8>, max: usize) -> usize {
    let n = max.min(pending.len());
    out.extend_from_slice(&pending[..n]);
    pending.drain(..n);
    n
}

pub(super) fn framing(
    method: &str,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<Framing> {
    if method == "HEAD" || matches!(status, 100..=199 | 204 | 304) {
        return Ok(Framing::Done);
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Ok(Framing::Chunked(Decoder::new()));
    }
    match get("content-length") {
        Some(v) => v
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")),
        None => Ok(Framing::UntilClose),
    }
}
