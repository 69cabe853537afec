//! One connection: read a head, hand the request to the handler, write the response, repeat.
//!
//! Every wait has a deadline (head, keep-alive idle, body idle, whole request). On io_uring a
//! timed-out read is cancelled by compio when its future is dropped, and the kernel's buffer
//! stays owned by the driver until the completion arrives, so a deadline never frees memory
//! the kernel still writes to.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compio::buf::{BufResult, IntoInner, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncReadAt, AsyncReadAtExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use compio::time::timeout;
use std::rc::Rc;

use crate::tls::{PeerIdentity, TlsStream};

use super::chunked::{ChunkError, Decoder};
use super::head::{self, BodyKind, HeadError, Method, RequestHead};
use super::response::{Body, Response};

/// First allocation for a connection's head buffer; it grows to the head limit only if needed.
const HEAD_BUF_INITIAL_BYTES: usize = 4096;
/// Reads of a file body go through a buffer of this size when not using sendfile.
pub const FILE_CHUNK_BYTES: usize = 256 * 1024;
/// After a response, at most this much of an unread request body is drained to keep the
/// connection; more than that and the connection is closed instead.
const DRAIN_BYTES_MAX: u64 = 256 * 1024;
/// Lingering close: at most this long and this much discarded before the socket is closed.
const LINGER_TIME_MAX: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub head: head::Limits,
    pub head_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub query_timeout: Duration,
}

/// The transport under a connection.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }
}

impl AsyncWrite for Stream {
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Stream::Tcp(s) => s.write(buf).await,
            Stream::Tls(s) => s.write(buf).await,
        }
    }
    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush().await,
            Stream::Tls(s) => s.flush().await,
        }
    }
    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate's subject, on an mTLS connection.
    pub certificate: Option<Rc<PeerIdentity>>,
}

/// The application behind the server: routes, auth, storage. Plain functions of a request.
pub trait Handler {
    async fn handle(&self, req: &mut Request<'_>) -> Response;
    /// The answer to a request refused before it reached `handle` (bad head, timeout).
    fn protocol_error(&self, status: u16, message: &str) -> Response;
    /// Header lines (each ending in CRLF) added to every response.
    fn extra_headers(&self) -> &[u8];
    /// Called once per finished request, for the access log and metrics.
    fn completed(&self, record: &AccessRecord<'_>);
    /// True once the server is shutting down: finish this request, then close.
    fn draining(&self) -> bool;
}

pub struct AccessRecord<'a> {
    pub method: Method,
    pub target: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub peer: SocketAddr,
}

pub struct Request<'a> {
    pub head: RequestHead,
    pub peer: SocketAddr,
    pub certificate: Option<Rc<PeerIdentity>>,
    pub body: BodyReader<'a>,
}

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
    stream: &'a mut Stream,
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
}

/// A read's result with the buffer handed back, in compio's owned-buffer style.
pub struct BodyRead(pub Result<usize, BodyError>, pub Vec<u8>);

impl<'a> BodyReader<'a> {
    fn new(
        stream: &'a mut Stream,
        pending: &'a mut Vec<u8>,
        kind: BodyKind,
        expect_continue: bool,
        idle: Duration,
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
            Ok(BufResult(Ok(n), o)) => BodyRead(Ok(n), o),
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
    async fn drain(&mut self, max: u64) -> bool {
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

/// What ended reading a head.
enum HeadRead {
    Head(RequestHead),
    /// The peer closed (or went idle past keep-alive) between requests: close quietly.
    Idle,
    Refused(u16, String),
}

/// Serves one connection until it closes. Never panics on what the client sends.
pub async fn serve_connection<H: Handler>(
    handler: &H,
    mut stream: Stream,
    conn_peer: Peer,
    limits: &ConnLimits,
    idle: &Cell<bool>,
) {
    let peer = conn_peer.addr;
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_BUF_INITIAL_BYTES);
    let mut out: Vec<u8> = Vec::new();
    // Set when we close with request bytes still unread: closing at once would make the
    // kernel send a reset that can destroy the response before the client reads it.
    let mut linger = false;
    loop {
        let head = match read_head(&mut stream, &mut buf, limits, handler, idle).await {
            HeadRead::Head(h) => h,
            HeadRead::Idle => break,
            HeadRead::Refused(status, why) => {
                let resp = handler.protocol_error(status, &why);
                let _ =
                    write_response(&mut stream, resp, true, false, handler, limits, &mut out).await;
                break;
            }
        };
        let started = Instant::now();
        let method = head.method;
        let target = head.target.clone();
        let wants_keep_alive = head.keep_alive;
        let body = BodyReader::new(
            &mut stream,
            &mut buf,
            head.body,
            head.expect_continue,
            limits.body_idle_timeout,
        );
        let mut req = Request {
            head,
            peer,
            certificate: conn_peer.certificate.clone(),
            body,
        };
        let written = Cell::new(false);
        let outcome = timeout(
            limits.query_timeout,
            run_request(
                handler,
                &mut req,
                &written,
                wants_keep_alive,
                limits,
                &mut out,
            ),
        )
        .await;
        let bytes_in = req.body.bytes_read();
        linger = !req.body.is_done();
        drop(req);
        let (status, bytes_out, keep) = match outcome {
            Ok(r) => r,
            Err(_) => {
                // Past query_timeout: if nothing was sent yet, say so; then close either way.
                if !written.get() {
                    let resp = handler.protocol_error(503, "request exceeded query_timeout");
                    let _ =
                        write_response(&mut stream, resp, true, false, handler, limits, &mut out)
                            .await;
                }
                (503, 0, false)
            }
        };
        handler.completed(&AccessRecord {
            method,
            target: &target,
            status,
            bytes_in,
            bytes_out,
            duration: started.elapsed(),
            peer,
        });
        if !keep {
            break;
        }
        // The response buffer is not kept while the connection idles.
        out = Vec::new();
    }
    let _ = stream.shutdown().await;
    if linger {
        lingering_close(&mut stream).await;
    }
}

/// After a close with unread request bytes: read and discard for a short while so the
/// client gets to read our response (bounded in bytes and time).
async fn lingering_close(stream: &mut Stream) {
    let deadline = Instant::now() + LINGER_TIME_MAX;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut total = 0;
    while total < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        buf.clear();
        match timeout(left, stream.read(buf)).await {
            Ok(BufResult(Ok(n), b)) if n > 0 => {
                total += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// Handles one request and writes its response. Returns (status, body bytes sent, keep-alive).
async fn run_request<H: Handler>(
    handler: &H,
    req: &mut Request<'_>,
    written: &Cell<bool>,
    wants_keep_alive: bool,
    limits: &ConnLimits,
    out: &mut Vec<u8>,
) -> (u16, u64, bool) {
    // Boxed: the handler's state (routes, storage calls) is large, and inlined it would make
    // every connection's task that large even while the connection idles.
    let resp = Box::pin(handler.handle(req)).await;
    let status = resp.status;
    // Keep the connection only if the body was consumed (or cheaply drained) and nobody
    // asked to close.
    let mut keep = wants_keep_alive && !handler.draining();
    if keep && !req.body.is_done() {
        keep = req.body.drain(DRAIN_BYTES_MAX).await;
    }
    let head_only = req.head.method == Method::Head;
    written.set(true);
    let sent = write_response(
        req.body.stream,
        resp,
        !keep,
        head_only,
        handler,
        limits,
        out,
    )
    .await;
    match sent {
        Ok(n) => (status, n, keep),
        Err(_) => (status, 0, false),
    }
}

async fn read_head<H: Handler>(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    limits: &ConnLimits,
    handler: &H,
    idle: &Cell<bool>,
) -> HeadRead {
    let mut deadline: Option<Instant> = None;
    loop {
        if !Vec::is_empty(buf) {
            match head::parse(buf, &limits.head) {
                Ok(Some((h, n))) => {
                    buf.drain(..n);
                    return HeadRead::Head(h);
                }
                Ok(None) => {}
                Err(e) => return refused(e),
            }
            deadline.get_or_insert_with(|| Instant::now() + limits.head_read_timeout);
        } else if handler.draining() {
            return HeadRead::Idle;
        }
        // Between requests the keep-alive deadline applies; once a head has started, the
        // head deadline (measured from its first byte) does.
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => limits.keep_alive_timeout,
        };
        if deadline.is_none() {
            if let Stream::Tcp(tcp) = &*stream {
                // Between requests, wait for readability holding no buffer: 10,000 idle
                // keep-alive connections then cost their task state only. (TLS keeps its
                // buffer: rustls may hold decrypted bytes the socket no longer shows.)
                *buf = Vec::new();
                idle.set(true);
                let ready = match tcp.to_poll_fd() {
                    Ok(poll) => timeout(wait, poll.read_ready()).await,
                    Err(_) => return HeadRead::Idle,
                };
                idle.set(false);
                match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return HeadRead::Idle,
                }
            }
        }
        let room = limits.head.header_bytes_max + 1024;
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve((buf.capacity()).clamp(HEAD_BUF_INITIAL_BYTES, room));
        }
        let taken = std::mem::take(buf);
        // Idle means: between requests, nothing received. Shutdown may cut such a read.
        idle.set(deadline.is_none());
        let read = timeout(wait, stream.read(taken.uninit())).await;
        idle.set(false);
        match read {
            Err(_) if deadline.is_some() => {
                return HeadRead::Refused(408, "request head timed out".into())
            }
            Err(_) => return HeadRead::Idle,
            Ok(BufResult(Ok(0), b)) => {
                *buf = b.into_inner();
                return HeadRead::Idle;
            }
            Ok(BufResult(Ok(_), b)) => *buf = b.into_inner(),
            Ok(BufResult(Err(_), _)) => return HeadRead::Idle,
        }
    }
}

fn refused(e: HeadError) -> HeadRead {
    HeadRead::Refused(e.status(), e.to_string())
}

/// Writes a response; returns the body bytes sent.
async fn write_response<H: Handler>(
    stream: &mut Stream,
    resp: Response,
    close: bool,
    head_only: bool,
    handler: &H,
    limits: &ConnLimits,
    out: &mut Vec<u8>,
) -> io::Result<u64> {
    out.clear();
    resp.write_head(out, close, handler.extra_headers());
    let idle = limits.body_idle_timeout;
    match resp.body {
        Body::Bytes(b) if !head_only => {
            out.extend_from_slice(&b);
            write_all(stream, out, idle).await?;
            Ok(b.len() as u64)
        }
        Body::File(f) if !head_only && f.len <= INLINE_FILE_BYTES_MAX => {
            // Small blobs go out with the head in one write: one send instead of two.
            let start = out.len();
            let len = f.len as usize;
            out.reserve(len);
            if crate::sys::direct_file_calls() {
                use std::os::fd::AsRawFd;
                out.resize(start + len, 0);
                crate::sys::read_exact_at(f.file.as_raw_fd(), &mut out[start..], f.offset)?;
            } else {
                let taken = std::mem::take(out);
                let BufResult(r, b) = f
                    .file
                    .read_exact_at(taken.slice(start..start + len), f.offset)
                    .await;
                *out = b.into_inner();
                r?;
            }
            write_all(stream, out, idle).await?;
            Ok(f.len)
        }
        Body::File(f) if !head_only => {
            write_all(stream, out, idle).await?;
            match stream {
                Stream::Tcp(tcp) if zero_copy_ok(&f.file, f.offset, f.len) => {
                    send_file_zero_copy(tcp, &f.file, f.offset, f.len, idle).await?
                }
                _ => send_file(stream, &f.file, f.offset, f.len, idle).await?,
            }
            Ok(f.len)
        }
        Body::Growing(g) if !head_only => {
            write_all(stream, out, idle).await?;
            send_growing(stream, &g, idle).await?;
            Ok(g.len)
        }
        Body::Stream(mut s) if !head_only => {
            write_all(stream, out, idle).await?;
            send_stream(stream, &mut s, idle, out).await?;
            Ok(s.len)
        }
        _ => {
            write_all(stream, out, idle).await?;
            Ok(0)
        }
    }
}

/// Sends a region of a file still being written, as far as the writer has got each time.
/// A failed writer (or one silent for longer than `idle`) ends the response short, so the
/// client sees a failed transfer.
async fn send_growing(
    stream: &mut Stream,
    g: &super::growing::GrowingBody,
    idle: Duration,
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
        match stream {
            Stream::Tcp(tcp) if zero_copy_ok(&g.file, pos, upto - pos) => {
                send_file_zero_copy(tcp, &g.file, pos, upto - pos, idle).await?
            }
            _ => send_file(stream, &g.file, pos, upto - pos, idle).await?,
        }
        pos = upto;
    }
    Ok(())
}

/// Bytes pulled from a stream source per socket write.
const STREAM_CHUNK_BYTES: usize = 256 * 1024;

/// Sends a pulled body: one buffer at a time, each pull and each write within `idle`. A source
/// that fails or ends early ends the response short, so the client sees a failed transfer.
async fn send_stream(
    stream: &mut Stream,
    s: &mut super::response::StreamBody,
    idle: Duration,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut left = s.len;
    while left > 0 {
        let want = left.min(STREAM_CHUNK_BYTES as u64) as usize;
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
        write_all(stream, out, idle).await?;
        left -= n as u64;
    }
    out.clear();
    Ok(())
}

async fn write_all(stream: &mut Stream, out: &mut Vec<u8>, idle: Duration) -> io::Result<()> {
    let taken = std::mem::take(out);
    match timeout(idle, stream.write_all(taken)).await {
        Ok(BufResult(r, b)) => {
            *out = b;
            r
        }
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// File bodies up to this size are read into the response buffer and sent with the head.
const INLINE_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Largest count passed to one sendfile call; the socket buffer bounds what it sends anyway.
const SENDFILE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// sendfile(2) blocks the core on a page-cache miss, so it is used only when the whole
/// range is cached (cachestat(2)); otherwise the async read path brings it in. On both
/// drivers: the socket is non-blocking either way, and on the polling driver the read path
/// costs a thread-pool round trip per 256 KiB (measured: see bench/results, poll runs).
fn zero_copy_ok(file: &compio::fs::File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    len >= 64 * 1024
        && crate::sys::cached_fraction(file.as_raw_fd(), offset, len).is_some_and(|f| f >= 1.0)
}

/// Sends a file region with sendfile(2) on the non-blocking socket, waiting for
/// writability (with the idle deadline) whenever the socket buffer is full.
async fn send_file_zero_copy(
    tcp: &TcpStream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
    idle: Duration,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = tcp.as_raw_fd();
    let poll = tcp.to_poll_fd()?;
    let _nonblocking = crate::sys::NonBlocking::set(sock)?;
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let want = ((end - pos) as usize).min(SENDFILE_CHUNK_BYTES);
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
    Ok(())
}

/// Copies a file region to the stream through one buffer.
async fn send_file(
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
