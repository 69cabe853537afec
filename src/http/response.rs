//! Responses as handlers build them; the connection serialises them.

use std::borrow::Cow;

/// Header slots reserved with a response: a blob or manifest answer sets about five.
const HEADERS_INITIAL: usize = 6;

/// A file region to send as the body.
pub struct FileBody {
    pub file: compio::fs::File,
    pub offset: u64,
    pub len: u64,
}

/// A body pulled from a source that is not a local file (object storage), one buffer at a
/// time: memory is one buffer per response whatever the length.
pub struct StreamBody {
    pub source: Box<dyn BodySource>,
    pub len: u64,
}

/// The next body bytes: appends at most `want` bytes to `buf` (which arrives empty) and
/// returns how many; 0 before the announced length is a failed source.
pub trait BodySource {
    fn read(&mut self, buf: Vec<u8>, want: usize) -> SourceRead<'_>;
}

/// What `BodySource::read` returns: the count and the buffer back.
pub type SourceRead<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (std::io::Result<usize>, Vec<u8>)> + 'a>>;

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    File(FileBody),
    /// A HEAD answer: Content-Length announced, no body sent.
    Length(u64),
    /// A file region that is still being written (see `growing`).
    Growing(super::growing::GrowingBody),
    /// Pulled from a source (a blob on object storage).
    Stream(StreamBody),
}

impl Body {
    /// A body whose transfer is bounded by its pauses rather than by the request deadline:
    /// files, growing files and streams, whatever their size. (Their first write is the
    /// head, or a small file with it, into an empty socket buffer; every later write has
    /// the idle deadline.)
    pub fn is_long(&self) -> bool {
        matches!(self, Body::File(_) | Body::Growing(_) | Body::Stream(_))
    }

    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(f) => f.len,
            Body::Length(n) => *n,
            Body::Growing(g) => g.len,
            Body::Stream(s) => s.len,
        }
    }
}

pub struct Response {
    pub status: u16,
    /// Values borrowed when static (most are), so a response costs no allocation per header.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Body,
    /// Slows the body (a file, growing file or stream) to a rate; `None`: as fast as it goes.
    pub pacer: Option<Box<dyn Pacer>>,
}

/// Paces a response body: the connection sends it in chunks of `chunk_bytes`, each after
/// the wait `reserve` asks for (bounded by the connection, see `send.rs`).
pub trait Pacer {
    /// Reserves `bytes` about to be sent; how long to wait before sending them.
    fn reserve(&self, bytes: u64) -> std::time::Duration;
    /// Bytes sent between two reservations.
    fn chunk_bytes(&self) -> u64;
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::with_capacity(HEADERS_INITIAL),
            body: Body::Empty,
            pacer: None,
        }
    }

    /// The same response with its body paced by `pacer` (if any).
    pub fn paced(mut self, pacer: Option<Box<dyn Pacer>>) -> Self {
        self.pacer = pacer;
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Docker-Content-Digest and the ETag (the digest, quoted) of content named by `digest`,
    /// each allocated once at its size.
    pub fn content_digest(self, digest: &str) -> Self {
        let mut etag = String::with_capacity(digest.len() + 2);
        etag.push('"');
        etag.push_str(digest);
        etag.push('"');
        self.header("Docker-Content-Digest", digest.to_owned())
            .header("ETag", etag)
    }

    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }

    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(Body::Bytes(body))
    }

    /// Writes the status line and headers into `out`, with Content-Length from the body.
    pub(crate) fn write_head(&self, out: &mut Vec<u8>, close: bool, extra: &[u8]) {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(self.status));
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // 1xx, 204 and 304 carry no Content-Length (RFC 9110 8.6).
        if !matches!(self.status, 100..=199 | 204 | 304) {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, self.body.len());
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(extra);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal (no formatting machinery on the response path).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}
