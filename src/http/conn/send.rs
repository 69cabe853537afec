//! Writing responses: heads, in-memory bodies, files (sendfile where it can), growing
//! files and streams.

use std::io;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncReadAt, AsyncWriteExt};
use compio::net::TcpStream;
use compio::time::timeout;

use super::super::response::{Body, Pacer, Response};
use super::{ConnLimits, Handler, Stream, FILE_CHUNK_BYTES};

/// Room reserved for a response head (a blob or manifest answer's head is 300-600 bytes).
const RESPONSE_HEAD_RESERVE_BYTES: usize = 768;

/// Writes a response; returns the body bytes sent.
pub(super) async fn write_response<H: Handler>(
    stream: &mut Stream,
    mut resp: Response,
    close: bool,
    head_only: bool,
    handler: &H,
    limits: &ConnLimits,
    out: &mut Vec<u8>,
) -> io::Result<u64> {
    out.clear();
    // One allocation for a typical head instead of a doubling from 8 bytes (the buffer is
    // dropped between requests); under 1 KiB, so malloc serves it from its small bins. A
    // body sent with the head is reserved with it: growing the buffer later costs a realloc
    // and, past the small bins, a consolidation of malloc's free lists.
    let inline_body = match &resp.body {
        Body::Bytes(b) if !head_only => b.len(),
        Body::File(f) if !head_only && f.len <= INLINE_FILE_BYTES_MAX => f.len as usize,
        _ => 0,
    };
    out.reserve(RESPONSE_HEAD_RESERVE_BYTES + inline_body);
    resp.write_head(out, close, handler.extra_headers());
    let idle = limits.body_idle_timeout;
    let pacer = resp.pacer.take();
    let pacer = pacer.as_deref();
    match resp.body {
        Body::Bytes(b) if !head_only => {
            out.extend_from_slice(&b);
            write_first(stream, out, idle).await?;
            Ok(b.len() as u64)
        }
        Body::File(f) if !head_only && f.len <= INLINE_FILE_BYTES_MAX => {
            // Small blobs go out with the head in one write: one send instead of two.
            let start = out.len();
            let len = f.len as usize;
            pace(pacer, f.len).await;
            read_into(&f.file, out, f.offset, len).await?;
            if out.len() - start < len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            write_first(stream, out, idle).await?;
            Ok(f.len)
        }
        Body::File(f) if !head_only => {
            write_first(stream, out, idle).await?;
            send_region(stream, &f.file, f.offset, f.len, idle, pacer).await?;
            Ok(f.len)
        }
        Body::Growing(g) if !head_only => {
            write_first(stream, out, idle).await?;
            send_growing(stream, &g, idle, pacer).await?;
            Ok(g.len)
        }
        Body::Stream(mut s) if !head_only => {
            write_first(stream, out, idle).await?;
            send_stream(stream, &mut s, idle, out, pacer).await?;
            Ok(s.len)
        }
        _ => {
            write_first(stream, out, idle).await?;
            Ok(0)
        }
    }
}

/// Appends `len` bytes of `file` at `offset` to `out` (fewer at the end of the file): on
/// this thread what can be read without waiting for the disk (`sys::read_here_at`), the
/// rest through the ring.
async fn read_into(
    file: &compio::fs::File,
    out: &mut Vec<u8>,
    offset: u64,
    len: usize,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let end = out.len() + len;
    let mut at = offset;
    while out.len() < end {
        let want = end - out.len();
        let n = match crate::sys::read_here_at(file.as_raw_fd(), out, at, want)? {
            Some(n) => n,
            None => {
                let start = out.len();
                let taken = std::mem::take(out);
                let BufResult(r, b) = file.read_at(taken.slice(start..start + want), at).await;
                *out = b.into_inner();
                r?
            }
        };
        if n == 0 {
            break;
        }
        at += n as u64;
    }
    Ok(())
}

/// Sends a region of a file still being written, as far as the writer has got each time.
/// A failed writer (or one silent for longer than `idle`) ends the response short, so the
/// client sees a failed transfer.
pub(super) async fn send_growing(
    stream: &mut Stream,
    g: &crate::http::growing::GrowingBody,
    idle: Duration,
    pacer: Option<&dyn Pacer>,
) -> io::Result<()> {
    let end = g.offset + g.len;
    let mut pos = g.offset;
    while pos < end {
        let upto = match timeout(idle, g.progress.wait_beyond(pos)).await {
            Ok(Ok(n)) => n.min(end),
            Ok(Err(f)) => return Err(io::Error::other(f.message)),
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "source stalled")),
        };
        if upto <= pos {
            return Err(io::Error::other("source ended before the announced length"));
        }
        send_region(stream, &g.file, pos, upto - pos, idle, pacer).await?;
        pos = upto;
    }
    Ok(())
}

/// Bytes pulled from a stream source per socket write.
pub(super) const STREAM_CHUNK_BYTES: usize = 256 * 1024;

/// Sends a pulled body: one buffer at a time, each pull and each write within `idle`. A source
/// that fails or ends early ends the response short, so the client sees a failed transfer.
pub(super) async fn send_stream(
    stream: &mut Stream,
    s: &mut crate::http::response::StreamBody,
    idle: Duration,
    out: &mut Vec<u8>,
    pacer: Option<&dyn Pacer>,
) -> io::Result<()> {
    let mut left = s.len;
    let chunk = pacer.map_or(STREAM_CHUNK_BYTES as u64, |p| {
        p.chunk_bytes().clamp(1, STREAM_CHUNK_BYTES as u64)
    });
    while left > 0 {
        let want = left.min(chunk) as usize;
        let mut buf = std::mem::take(out);
        buf.clear();
        let n = match timeout(idle, s.source.read(buf, want)).await {
            Ok((r, b)) => {
                buf = b;
                r?
            }
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "source stalled")),
        };
        if n == 0 || n > want {
            return Err(io::Error::other("source ended before the announced length"));
        }
        *out = buf;
        pace(pacer, n as u64).await;
        write_all(stream, out, idle).await?;
        left -= n as u64;
    }
    out.clear();
    Ok(())
}

/// The first write of a response (its head, or all of a small one). When small it has no
/// pause timer of its own: the socket's send buffer is empty at that point, so it waits on
/// the peer only if the peer stopped reading, and the request's deadline (query_timeout)
/// bounds that like every wait of a request. A timer per small response costs a timer-tree
/// insert and remove for nothing.
async fn write_first(stream: &mut Stream, out: &mut Vec<u8>, idle: Duration) -> io::Result<()> {
    if out.len() > UNTIMED_WRITE_BYTES_MAX {
        return write_all(stream, out, idle).await;
    }
    let BufResult(r, b) = stream.write_all(std::mem::take(out)).await;
    *out = b;
    r
}

pub(super) async fn write_all(
    stream: &mut Stream,
    out: &mut Vec<u8>,
    idle: Duration,
) -> io::Result<()> {
    let taken = std::mem::take(out);
    match timeout(idle, stream.write_all(taken)).await {
        Ok(BufResult(r, b)) => {
            *out = b;
            r
        }
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// A response's first write of up to this much has no pause timer of its own (see
/// `write_first`): less than a socket's send buffer.
const UNTIMED_WRITE_BYTES_MAX: usize = 16 * 1024;

/// File bodies up to this size are read into the response buffer and sent with the head.
pub(super) const INLINE_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Largest count passed to one sendfile call; the socket buffer bounds what it sends anyway.
pub(super) const SENDFILE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// sendfile(2) blocks the core on a page-cache miss, so it is used only when the whole
/// range is cached (cachestat(2)); otherwise the async read path brings it in. On both
/// drivers: the socket is non-blocking either way, and on the polling driver the read path
/// costs a thread-pool round trip per 256 KiB (measured: see bench/results, poll runs).
pub(super) fn zero_copy_ok(file: &compio::fs::File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    len >= 64 * 1024
        && crate::sys::cached_fraction(file.as_raw_fd(), offset, len).is_some_and(|f| f >= 1.0)
}

/// The longest wait before one paced chunk. A pacer asks for more only when many bodies share
/// its bucket (about a hundred pulls at once of one identity at a tenth of a second each);
/// they then go faster than the rate rather than wait without bound.
const PACE_WAIT_MAX: Duration = Duration::from_secs(10);

/// Waits as `pacer` asks before sending `bytes` (no pacer: at once).
async fn pace(pacer: Option<&dyn Pacer>, bytes: u64) {
    if let Some(p) = pacer {
        let wait = p.reserve(bytes).min(PACE_WAIT_MAX);
        if !wait.is_zero() {
            compio::time::sleep(wait).await;
        }
    }
}

/// Sends a file region, in paced chunks when there is a pacer.
async fn send_region(
    stream: &mut Stream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
    idle: Duration,
    pacer: Option<&dyn Pacer>,
) -> io::Result<()> {
    let Some(p) = pacer else {
        return send_region_now(stream, file, offset, len, idle).await;
    };
    let chunk = p.chunk_bytes().max(1);
    let (mut pos, end) = (offset, offset + len);
    while pos < end {
        let n = chunk.min(end - pos);
        pace(pacer, n).await;
        send_region_now(stream, file, pos, n, idle).await?;
        pos += n;
    }
    Ok(())
}

/// Sends a file region: with sendfile(2) as long as the pages it is about to send are in the
/// page cache (plain TCP), the rest through reads that never block the worker.
async fn send_region_now(
    stream: &mut Stream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
    idle: Duration,
) -> io::Result<()> {
    let end = offset + len;
    let sent = match stream {
        Stream::Tcp(tcp) if zero_copy_ok(file, offset, len) => {
            send_file_zero_copy(tcp, file, offset, len, idle).await?
        }
        _ => offset,
    };
    if sent < end {
        send_file(stream, file, sent, end - sent, idle).await?;
    }
    Ok(())
}

/// Sends a file region with sendfile(2) on the non-blocking socket, waiting for
/// writability (with the idle deadline) whenever the socket buffer is full. Each chunk is
/// checked against the page cache first (pages can be evicted during a long transfer), and
/// sending stops at the first one that is not all cached: returns how far it got, for the
/// caller to send the rest through reads that do not block the worker.
pub(super) async fn send_file_zero_copy(
    tcp: &TcpStream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
    idle: Duration,
) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let sock = tcp.as_raw_fd();
    let poll = tcp.to_poll_fd()?;
    let _nonblocking = crate::sys::NonBlocking::set(sock)?;
    let mut pos = offset;
    let end = offset + len;
    // The first chunk was checked by `zero_copy_ok`.
    let mut checked_to = (offset + SENDFILE_CHUNK_BYTES as u64).min(end);
    while pos < end {
        if pos >= checked_to {
            let next = (pos + SENDFILE_CHUNK_BYTES as u64).min(end);
            let cached = crate::sys::cached_fraction(file.as_raw_fd(), pos, next - pos);
            if !cached.is_some_and(|f| f >= 1.0) {
                return Ok(pos);
            }
            checked_to = next;
        }
        let want = ((checked_to - pos) as usize).min(SENDFILE_CHUNK_BYTES);
        match crate::sys::sendfile(sock, file.as_raw_fd(), &mut pos, want) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than announced",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match timeout(idle, poll.write_ready()).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "send timed out"))
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(pos)
}

/// Copies a file region to the stream through one buffer.
pub(super) async fn send_file(
    stream: &mut Stream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
    idle: Duration,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(FILE_CHUNK_BYTES.min(len.max(1) as usize));
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        buf.clear();
        let want = ((end - pos) as usize).min(buf.capacity());
        let BufResult(r, b) = file.read_at(buf.slice(..want), pos).await;
        buf = b.into_inner();
        let n = r?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than announced",
            ));
        }
        pos += n as u64;
        write_all(stream, &mut buf, idle).await?;
    }
    Ok(())
}
