//! A small HTTP/1.1 client for outbound requests (upstream registries, object storage, identity
//! providers): plain TCP or rustls, redirects followed,
//! every wait bounded. Connections are kept alive: a response read to its end goes back to a
//! small per-worker pool (compio sockets belong to the thread that made them), and the next
//! request to the same origin takes it after checking the upstream has not closed it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use compio::time::timeout;

use crate::http::chunked::Decoder;
use crate::tls::TlsStream;

/// Largest response head accepted from an upstream.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Header fields parsed in a response head.
const RESPONSE_HEADERS_MAX: usize = 64;
/// Redirects followed for one request (blob downloads redirect to a CDN or object store).
pub const REDIRECTS_MAX: usize = 5;
/// Idle upstream connections kept per worker thread (the oldest is closed beyond).
pub const IDLE_CONNECTIONS_MAX: usize = 16;
/// How long an idle upstream connection is kept.
pub const IDLE_KEEP: Duration = Duration::from_secs(30);

/// An upstream's base URL: scheme, host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` ("" for most registries).
    pub path: String,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{text:?} must start with http:// or https://"));
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "{text:?}: put credentials in username/password, not the URL"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text:?}: unclosed [ in host"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{text:?}: invalid port {p:?}"))?,
            None if https => 443,
            None => 80,
        };
        Ok(UpstreamUrl {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The Host header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    fn same_origin(&self, other: &UpstreamUrl) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }
}

/// Where a request goes: an origin and a request target (path and query).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: UpstreamUrl,
    /// Starts with `/`, includes the base path and the query.
    pub path: String,
}

impl Target {
    /// An absolute URL as a target: its origin, and its path with the query as the request
    /// target.
    pub fn absolute(text: &str) -> Result<Target, String> {
        let url = UpstreamUrl::parse(text)?;
        let after_scheme = text.split_once("://").map_or("", |(_, r)| r);
        let path = match after_scheme.find('/') {
            Some(i) => after_scheme[i..].to_string(),
            None => "/".to_string(),
        };
        Ok(Target {
            url: UpstreamUrl {
                path: String::new(),
                ..url
            },
            path,
        })
    }

    /// `Location` resolved against this target: absolute URL or absolute path.
    fn redirected(&self, location: &str) -> Option<Target> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Target::absolute(location).ok()
        } else if location.starts_with('/') {
            Some(Target {
                url: self.url.clone(),
                path: location.to_string(),
            })
        } else {
            None
        }
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<rustls::ClientConnection>>),
}

/// Which connections may serve a request: same scheme, host and port, and the same TLS
/// settings (upstreams may trust different CAs).
#[derive(Clone, PartialEq, Eq)]
struct PoolKey {
    https: bool,
    host: String,
    port: u16,
    tls: usize,
}

struct Idle {
    key: PoolKey,
    conn: Conn,
    since: std::time::Instant,
}

thread_local! {
    static IDLE: std::cell::RefCell<Vec<Idle>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most recently idled live connection for `key`, if any. Expired ones are closed.
fn take_idle(key: &PoolKey) -> Option<Conn> {
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.retain(|i| i.since.elapsed() < IDLE_KEEP);
        while let Some(at) = idle.iter().rposition(|i| &i.key == key) {
            let i = idle.remove(at);
            if i.conn.quiet() {
                return Some(i.conn);
            }
        }
        None
    })
    .ok()
    .flatten()
}

/// Closes this thread's idle upstream connections (before its runtime stops).
pub fn close_idle() {
    let _ = IDLE.try_with(|idle| idle.borrow_mut().clear());
}

fn put_idle(key: PoolKey, conn: Conn) {
    // Not during thread teardown (the pool is gone, and so may be the runtime).
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() >= IDLE_CONNECTIONS_MAX {
            idle.remove(0);
        }
        idle.push(Idle {
            key,
            conn,
            since: std::time::Instant::now(),
        });
    });
}

impl Conn {
    /// An idle connection is usable when the upstream has sent nothing since the last
    /// response: no end of stream, no error, no stray bytes (a TLS close_notify included).
    fn quiet(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Tls(s) => s.tcp().as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a live local; the descriptor is open (owned by self).
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        match self {
            Conn::Tcp(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all<B: IoBuf>(&mut self, buf: B) -> BufResult<(), B> {
        match self {
            Conn::Tcp(s) => s.write_all(buf).await,
            Conn::Tls(s) => s.write_all(buf).await,
        }
    }
}

enum Framing {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

/// A response with its body still on the connection.
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    /// None only once the connection has gone back to the pool (in drop).
    conn: Option<Conn>,
    /// Body bytes read along with the head, not yet handed out.
    pending: Vec<u8>,
    framing: Framing,
    timeout: Duration,
    /// Where the response came from (after redirects).
    pub target: Target,
    /// Set when the connection may serve another request once this body is read: HTTP/1.1
    /// without `Connection: close`, a declared length, nothing stray read.
    reuse: Option<PoolKey>,
}

impl Drop for Response {
    fn drop(&mut self) {
        self.release();
    }
}

/// Largest body read only to keep a connection (a probe's `{}`, an error document).
const DRAIN_BYTES_MAX: u64 = 64 * 1024;

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
    async fn fill(&mut self, out: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
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

/// Sends requests to upstreams with one TLS configuration and one deadline.
#[derive(Clone)]
pub struct Client {
    pub tls: Arc<rustls::ClientConfig>,
    /// Connect, response head, and longest pause in a body.
    pub timeout: Duration,
}

impl Client {
    /// Sends one request and reads the response head, following redirects. Authorization
    /// is sent only to the origin it was meant for.
    pub async fn send(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
    ) -> io::Result<Response> {
        let mut target = target.clone();
        let origin = target.url.clone();
        for _ in 0..=REDIRECTS_MAX {
            let same = target.url.same_origin(&origin);
            let resp = self.send_once(method, &target, headers, same, &[]).await?;
            if matches!(resp.status, 301 | 302 | 303 | 307 | 308) {
                if let Some(next) = resp.header("location").and_then(|l| target.redirected(l)) {
                    // Docker Hub redirects every blob to its CDN: keep the registry's
                    // connection for the next request.
                    resp.drain().await;
                    target = next;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(io::Error::other("upstream redirected too many times"))
    }

    /// Sends one request with a body (a webhook's POST), no redirects followed. The caller
    /// gives the `Content-Type`; `Content-Length` is added here.
    pub async fn send_with_body(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send_once(method, target, headers, true, body).await
    }

    async fn send_once(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        with_auth: bool,
        body: &[u8],
    ) -> io::Result<Response> {
        let url = &target.url;
        let key = PoolKey {
            https: url.https,
            host: url.host.clone(),
            port: url.port,
            tls: Arc::as_ptr(&self.tls) as usize,
        };
        if let Some(conn) = take_idle(&key) {
            match self
                .exchange(conn, method, target, headers, with_auth, &key, body)
                .await
            {
                Ok(r) => return Ok(r),
                // Closed by the upstream just as it was taken: once more on a new one
                // (only GET and HEAD are sent, so repeating is safe).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::BrokenPipe
                    ) && matches!(method, "GET" | "HEAD") => {}
                Err(e) => return Err(e),
            }
        }
        let conn = self.connect(url).await?;
        self.exchange(conn, method, target, headers, with_auth, &key, body)
            .await
    }

    async fn connect(&self, url: &UpstreamUrl) -> io::Result<Conn> {
        let addr = (url.host.as_str(), url.port);
        let tcp = match timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(r) => r.map_err(|e| {
                io::Error::new(e.kind(), format!("connect to {}: {e}", url.authority()))
            })?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {} timed out", url.authority()),
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        Ok(if url.https {
            let tls = crate::tls::connect(&self.tls, &url.host, tcp, self.timeout).await?;
            Conn::Tls(Box::new(tls))
        } else {
            Conn::Tcp(tcp)
        })
    }

    /// Sends the request on `conn` and reads the response head.
    #[allow(clippy::too_many_arguments)] // The request's parts, passed through unchanged.
    async fn exchange(
        &self,
        mut conn: Conn,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        with_auth: bool,
        key: &PoolKey,
        body: &[u8],
    ) -> io::Result<Response> {
        let url = &target.url;
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: origin/{}\r\n",
            target.path,
            url.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in headers {
            if !with_auth && name.eq_ignore_ascii_case("authorization") {
                continue;
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut head = head.into_bytes();
        head.extend_from_slice(body);
        match timeout(self.timeout, conn.write_all(head)).await {
            Ok(BufResult(r, _)) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream did not take the request",
                ))
            }
        }
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            let mut parsed = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
            let mut resp = httparse::Response::new(&mut parsed);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).trim().to_string(),
                            )
                        })
                        .collect();
                    let pending = buf[n..].to_vec();
                    let framing = framing(method, status, &headers)?;
                    let close = headers.iter().any(|(n, v)| {
                        n.eq_ignore_ascii_case("connection")
                            && v.to_ascii_lowercase().contains("close")
                    });
                    let reuse = (resp.version == Some(1)
                        && !close
                        && matches!(framing, Framing::Length(_) | Framing::Done))
                    .then(|| key.clone());
                    return Ok(Response {
                        status,
                        headers,
                        conn: Some(conn),
                        pending,
                        framing,
                        timeout: self.timeout,
                        target: target.clone(),
                        reuse,
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad response head from upstream: {e}"),
                    ))
                }
            }
            if buf.len() >= RESPONSE_HEAD_BYTES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "upstream response head too large",
                ));
            }
            buf.reserve(16 * 1024);
            let read = timeout(self.timeout, conn.read(buf.uninit())).await;
            match read {
                Ok(BufResult(Ok(0), _)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed before answering",
                    ))
                }
                Ok(BufResult(Ok(_), b)) => buf = b.into_inner(),
                Ok(BufResult(Err(e), _)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "upstream did not answer in time",
                    ))
                }
            }
        }
    }
}

/// Moves up to `max` bytes read along with the head into `out`; returns how many.
fn take_pending(pending: &mut Vec<u8>, out: &mut Vec<u8>, max: usize) -> usize {
    let n = max.min(pending.len());
    out.extend_from_slice(&pending[..n]);
    pending.drain(..n);
    n
}

fn framing(method: &str, status: u16, headers: &[(String, String)]) -> io::Result<Framing> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = UpstreamUrl::parse("https://registry-1.docker.io").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port),
            (true, "registry-1.docker.io", 443)
        );
        assert_eq!(u.authority(), "registry-1.docker.io");
        let u = UpstreamUrl::parse("http://127.0.0.1:5001/prefix/").unwrap();
        assert_eq!((u.port, u.path.as_str()), (5001, "/prefix"));
        assert_eq!(u.authority(), "127.0.0.1:5001");
        let u = UpstreamUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority()),
            ("::1", "[::1]:8080".to_string())
        );
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("http://u:p@host").is_err());
        assert!(UpstreamUrl::parse("http://host:99999").is_err());
        assert!(UpstreamUrl::parse("http://").is_err());
    }

    #[test]
    fn redirects_resolve() {
        let t = Target {
            url: UpstreamUrl::parse("http://a:1").unwrap(),
            path: "/v2/x/blobs/sha256:1".into(),
        };
        let r = t.redirected("/other?x=1").unwrap();
        assert_eq!((r.url.host.as_str(), r.path.as_str()), ("a", "/other?x=1"));
        let r = t.redirected("https://cdn.example/b/c?sig=1").unwrap();
        assert_eq!(
            (r.url.https, r.url.host.as_str(), r.path.as_str()),
            (true, "cdn.example", "/b/c?sig=1")
        );
        assert!(t.redirected("relative").is_none());
    }
}
