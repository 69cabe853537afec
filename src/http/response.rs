//! Responses as handlers build them; the connection serialises them.

use std::fmt::Write as _;

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

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
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
        let mut s = String::with_capacity(256);
        let _ = write!(s, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        // 1xx, 204 and 304 carry no Content-Length (RFC 9110 8.6).
        if !matches!(self.status, 100..=199 | 204 | 304) {
            let _ = write!(s, "Content-Length: {}\r\n", self.body.len());
        }
        if close {
            s.push_str("Connection: close\r\n");
        }
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(extra);
        out.extend_from_slice(b"\r\n");
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
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
