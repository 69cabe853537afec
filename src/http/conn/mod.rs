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
use compio::io::{AsyncRead, AsyncWrite};
use compio::net::TcpStream;
use compio::time::timeout;
use std::rc::Rc;

use crate::tls::{PeerIdentity, TlsStream};
use crate::trace::RequestTrace;

use super::head::{self, HeadError, Method, RequestHead};
use super::response::Response;

mod body;
mod deadline;
mod pooled;
mod send;

pub use body::{BodyError, BodyRead, BodyReader};
use deadline::Deadline;
pub use deadline::RequestClock;
use send::write_response;

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
    /// The request's deadline: storage writes hold it off (see [`RequestClock::hold`]).
    pub clock: &'a RequestClock,
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
    let mut deadline = Deadline::new();
    let clock = RequestClock::new(limits.query_timeout);
    loop {
        let head =
            match read_head(&mut stream, &mut buf, limits, handler, idle, &mut deadline).await {
                HeadRead::Head(h) => h,
                HeadRead::Idle => break,
                HeadRead::Refused(status, why) => {
                    let resp = handler.protocol_error(status, &why);
                    write_refusal(&mut stream, resp, handler, limits, &mut out).await;
                    break;
                }
            };
        let started = Instant::now();
        clock.restart(started);
        let spans = request_spans(&head, peer);
        let method = head.method;
        let wants_keep_alive = head.keep_alive;
        let body = BodyReader::new(
            &mut stream,
            &mut buf,
            head.body,
            head.expect_continue,
            limits.body_idle_timeout,
            &clock,
        );
        let mut req = Request {
            head,
            peer,
            certificate: conn_peer.certificate.clone(),
            body,
            clock: &clock,
        };
        let written = Cell::new(false);
        let request = deadline.within_request(
            &clock,
            run_request(
                handler,
                &mut req,
                &written,
                wants_keep_alive,
                limits,
                &mut out,
            ),
        );
        // A request taking part in a trace runs in it (crate::trace::InTrace), in a pooled
        // block: inline, its future would be laid out in every connection's task, idle ones
        // included (tests/scale.rs).
        let outcome = match &spans {
            Some(trace) => pooled::Pooled::new(crate::trace::InTrace::new(request, trace)).await,
            None => request.await,
        };
        let bytes_in = req.body.bytes_read();
        linger = !req.body.is_done();
        // Moved out for the access record, not copied: the handler is done with it.
        let target = std::mem::take(&mut req.head.target);
        drop(req);
        let (status, bytes_out, keep) = match outcome {
            Ok(r) => r,
            Err(_) => {
                // Past query_timeout: if nothing was sent yet, say so; then close either way.
                if !written.get() {
                    let resp = handler.protocol_error(503, "request exceeded query_timeout");
                    write_refusal(&mut stream, resp, handler, limits, &mut out).await;
                }
                (503, 0, false)
            }
        };
        let record = AccessRecord {
            method,
            target: &target,
            status,
            bytes_in,
            bytes_out,
            duration: started.elapsed(),
            peer,
        };
        match &spans {
            Some(RequestTrace::Recorded(s)) => {
                s.server.record("http.response.status_code", status);
                if status >= 500 {
                    s.server.record("error", tracing::field::display(status));
                }
                crate::trace::with_trace_id(s.trace_id, || handler.completed(&record));
            }
            _ => handler.completed(&record),
        }
        drop(spans);
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

/// How tracing takes a request (`crate::trace`): recorded, passed on, or none.
fn request_spans(head: &RequestHead, peer: SocketAddr) -> Option<RequestTrace> {
    if !crate::trace::is_on() {
        return None;
    }
    let info = crate::trace::RequestInfo {
        method: head.method.as_str(),
        path: head.path(),
        peer,
    };
    crate::trace::server_span(&info, |name| head.header(name))
}

/// Answers a request refused outside any request's deadline (a bad head, a request past
/// its deadline), under a deadline of its own, then the connection closes.
async fn write_refusal<H: Handler>(
    stream: &mut Stream,
    resp: Response,
    handler: &H,
    limits: &ConnLimits,
    out: &mut Vec<u8>,
) {
    let write = write_response(stream, resp, true, false, handler, limits, out);
    let _ = timeout(limits.body_idle_timeout, write).await;
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
    // On the heap (see pooled.rs): the handler's state is large.
    let resp = pooled::Pooled::new(handler.handle(req)).await;
    let status = resp.status;
    // Keep the connection only if the body was consumed (or cheaply drained) and nobody
    // asked to close.
    let mut keep = wants_keep_alive && !handler.draining();
    if keep && !req.body.is_done() {
        keep = req.body.drain(DRAIN_BYTES_MAX).await;
    }
    let head_only = req.head.method == Method::Head;
    if !head_only && resp.body.is_long() {
        // A body of any size: each write has its pause deadline, and the whole transfer
        // has none (a 20 GiB layer on a slow link takes as long as it takes).
        req.clock.lift();
    }
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

/// One `recv(MSG_DONTWAIT)` between requests, appended to `buf`; `None` if nothing is
/// waiting (or on an error the ring's read will report). It receives on the stack and keeps
/// only what came, in the buffer the connection holds if that is large enough (a parked
/// connection holds none): a small allocation for a typical head at most, not a 4 KiB one
/// per wake-up.
fn try_recv(tcp: &compio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut stack = [0u8; HEAD_BUF_INITIAL_BYTES];
    // SAFETY: recv writes at most `stack.len()` bytes into the array.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            stack.as_mut_ptr().cast(),
            stack.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.extend_from_slice(&stack[..n]);
    Some(n)
}

async fn read_head<H: Handler>(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    limits: &ConnLimits,
    handler: &H,
    idle: &Cell<bool>,
    timer: &mut Deadline,
) -> HeadRead {
    // Set once a head has started: it must be complete by then.
    let mut deadline: Option<Instant> = None;
    // Between requests: the keep-alive deadline, from the end of the last response.
    let idle_until = Instant::now() + limits.keep_alive_timeout;
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
        let until = deadline.unwrap_or(idle_until);
        if deadline.is_none() {
            if let Stream::Tcp(tcp) = &*stream {
                // A client that sends its next request right after our answer (the busy
                // case) finds it here at once: one non-blocking recv into the buffer we
                // hold, instead of freeing it, polling, and reading through the ring.
                match try_recv(tcp, buf) {
                    Some(0) => return HeadRead::Idle,
                    Some(_) => continue,
                    None => {}
                }
                // Between requests, wait for readability holding no buffer: 10,000 idle
                // keep-alive connections then cost their task state only. (TLS keeps its
                // buffer: rustls may hold decrypted bytes the socket no longer shows.)
                *buf = Vec::new();
                idle.set(true);
                let ready = match tcp.to_poll_fd() {
                    Ok(poll) => timer.within(until, poll.read_ready()).await,
                    Err(_) => return HeadRead::Idle,
                };
                idle.set(false);
                match ready {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return HeadRead::Idle,
                }
                // Readable: take the bytes now with one recv rather than a second trip
                // through the ring (a spurious wake-up falls through to the ring read).
                match try_recv(tcp, buf) {
                    Some(0) => return HeadRead::Idle,
                    Some(_) => continue,
                    None => {}
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
        let read = timer.within(until, stream.read(taken.uninit())).await;
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
