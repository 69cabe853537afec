//! A small HTTP/1.1 client for outbound requests (upstream registries, object storage, identity
//! providers): plain TCP or rustls, redirects followed,
//! every wait bounded. Connections are kept alive: a response read to its end goes back to a
//! small per-worker pool (compio sockets belong to the thread that made them), and the next
//! request to the same origin takes it after checking the upstream has not closed it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::net::TcpStream;
use compio::time::timeout;

use super::Pacer;

mod pool;
mod response;
mod url;

pub use pool::close_idle;
use pool::{take_idle, Conn, PoolKey};
pub use response::Response;
use response::{framing, Framing, BODY_WRITE_BYTES_MAX};
pub use url::{Target, UpstreamUrl, UrlError};

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
            let resp = self.send_once(method, &target, headers, same).await?;
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

    /// Sends one request with a body (`Content-Length` framing; empty for DELETE and the like)
    /// and reads the response head. Redirects are not followed, and a failed attempt is never
    /// repeated here: object storage requests may be conditional, so only the caller knows
    /// whether sending one again is safe.
    pub async fn send_body(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> io::Result<Response> {
        let key = self.pool_key(&target.url);
        let conn = match take_idle(&key) {
            Some(conn) => conn,
            None => self.connect(&target.url).await?,
        };
        let body = Some((body, None));
        self.exchange(conn, method, target, headers, body, true, &key)
            .await
    }

    /// `send_body`, with the body sent in `pacer`'s chunks at the pace it sets (a
    /// replication target's `max_bytes_per_second`). The wait for a chunk is a reservation
    /// made before it is written, never longer than the client's timeout (the receiver's
    /// idle deadline runs meanwhile).
    pub async fn send_body_paced(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        body: &[u8],
        pacer: &dyn Pacer,
    ) -> io::Result<Response> {
        let key = self.pool_key(&target.url);
        let conn = match take_idle(&key) {
            Some(conn) => conn,
            None => self.connect(&target.url).await?,
        };
        let body = Some((body, Some(pacer)));
        self.exchange(conn, method, target, headers, body, true, &key)
            .await
    }

    fn pool_key(&self, url: &UpstreamUrl) -> PoolKey {
        PoolKey {
            https: url.https,
            host: url.host.clone(),
            port: url.port,
            tls: Arc::as_ptr(&self.tls) as usize,
        }
    }

    async fn send_once(
        &self,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        with_auth: bool,
    ) -> io::Result<Response> {
        let url = &target.url;
        let key = self.pool_key(url);
        if let Some(conn) = take_idle(&key) {
            match self
                .exchange(conn, method, target, headers, None, with_auth, &key)
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
        self.exchange(conn, method, target, headers, None, with_auth, &key)
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

    /// Sends the request (with `body`, framed by Content-Length, when there is one) on `conn`
    /// and reads the response head.
    #[allow(clippy::too_many_arguments)] // One private call path; a struct would only rename them.
    async fn exchange(
        &self,
        mut conn: Conn,
        method: &str,
        target: &Target,
        headers: &[(&str, String)],
        body: Option<(&[u8], Option<&dyn Pacer>)>,
        with_auth: bool,
        key: &PoolKey,
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
        // The trace of the request this is sent for (W3C Trace Context), when one is recorded.
        if let Some(parent) = crate::trace::traceparent() {
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("traceparent"))
            {
                head.push_str("traceparent: ");
                head.push_str(&parent);
                head.push_str("\r\n");
            }
        }
        let (mut rest, pacer) = body.unwrap_or((&[], None));
        if body.is_some() {
            head.push_str(&format!("Content-Length: {}\r\n", rest.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        // Small bodies go out with the head; large ones in bounded copies (paced: in the
        // pacer's chunks, each after its wait).
        let piece_max = pacer.map_or(BODY_WRITE_BYTES_MAX, |p| {
            (p.chunk_bytes() as usize).clamp(1, BODY_WRITE_BYTES_MAX)
        });
        loop {
            let room = BODY_WRITE_BYTES_MAX.saturating_sub(out.len());
            let n = rest.len().min(room).min(piece_max);
            if let Some(p) = pacer.filter(|_| n > 0) {
                let wait = p.reserve(n as u64).min(self.timeout);
                if !wait.is_zero() {
                    compio::time::sleep(wait).await;
                }
            }
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            match timeout(self.timeout, conn.write_all(out)).await {
                Ok(BufResult(r, o)) => {
                    r?;
                    out = o;
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "upstream did not take the request",
                    ))
                }
            }
            if rest.is_empty() {
                break;
            }
            out.clear();
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
