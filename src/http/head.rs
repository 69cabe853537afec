//! Request heads: check the limits, then parse with httparse. No I/O here.

use std::fmt;

/// httparse needs a header array up front; this bounds `server.header_count_max`.
pub const HEADER_SLOTS_MAX: usize = 256;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line_bytes_max: usize,
    pub header_bytes_max: usize,
    pub header_count_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    fn parse(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No Content-Length and no Transfer-Encoding: an empty body.
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// The request target as sent (path and query).
    pub target: String,
    /// Where the query starts in `target` (the `?`), found once at parse time.
    query_at: Option<usize>,
    /// Header fields: names lowercased, values trimmed (lossy UTF-8), back to back in one
    /// string, so a head costs two allocations however many fields it has.
    fields: String,
    /// Where each field is in `fields`: name start, value start (= name end), value end.
    spans: Vec<[u32; 3]>,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn path(&self) -> &str {
        self.target
            .get(..self.query_at.unwrap_or(self.target.len()))
            .unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.query_at
            .and_then(|i| self.target.get(i + 1..))
            .unwrap_or("")
    }

    /// Every header field in order: (lowercase name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans.iter().map(|&[n, v, e]| {
            let (n, v, e) = (n as usize, v as usize, e as usize);
            (&self.fields[n..v], &self.fields[v..e])
        })
    }

    /// The first value of a header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// Why a head was refused; each maps to one status, and the connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    RequestLineTooLong,
    HeadTooLarge,
    TooManyHeaders,
    Malformed(&'static str),
    UnsupportedVersion,
    UnsupportedTransferCoding,
    UnsupportedExpectation,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) => 400,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::UnsupportedExpectation => 417,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::RequestLineTooLong => f.write_str("request line too long"),
            HeadError::HeadTooLarge => f.write_str("request header section too large"),
            HeadError::TooManyHeaders => f.write_str("too many header fields"),
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
            HeadError::UnsupportedVersion => {
                f.write_str("only HTTP/1.0 and HTTP/1.1 are supported")
            }
            HeadError::UnsupportedTransferCoding => f.write_str("unsupported transfer coding"),
            HeadError::UnsupportedExpectation => f.write_str("unsupported expectation"),
        }
    }
}

/// Parses one request head from the start of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some((head, n)))`: the head took `n` bytes.
/// Limits are checked before parsing, so an endless head is refused as soon as it passes them.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line.
    let skip = leading_empty_lines(buf);
    let buf = &buf[skip..];
    // Refuse at the first byte that cannot start a method, rather than waiting for a line
    // end: a TLS ClientHello sent to a plain-HTTP port then fails at once, and clients that
    // probe HTTPS first (skopeo, podman, docker) fall back to HTTP without a delay.
    if !method_prefix_ok(buf) {
        return Err(HeadError::Malformed("not an HTTP/1.x request"));
    }
    match memchr::memchr(b'\n', buf) {
        Some(i) if i > limits.request_line_bytes_max => return Err(HeadError::RequestLineTooLong),
        None if buf.len() > limits.request_line_bytes_max => {
            return Err(HeadError::RequestLineTooLong)
        }
        None => return Ok(None),
        Some(_) => {}
    }
    let end = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match end {
        Some(n) if n > limits.header_bytes_max => return Err(HeadError::HeadTooLarge),
        None if buf.len() > limits.header_bytes_max => return Err(HeadError::HeadTooLarge),
        None => {
            // httparse also accepts bare-LF heads; let it decide whether this one is complete.
            if memchr::memmem::find(buf, b"\n\n").is_none() {
                return Ok(None);
            }
        }
        Some(_) => {}
    }
    // Left uninitialised: httparse writes the slots it fills, and initialising all of them
    // (8 KiB) cost more than the parse itself.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADER_SLOTS_MAX];
    let count_max = limits.header_count_max.min(HEADER_SLOTS_MAX);
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut slots[..count_max]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(_) => return Err(HeadError::Malformed("invalid request head")),
    };
    if n > limits.header_bytes_max {
        return Err(HeadError::HeadTooLarge);
    }
    let head = build(req)?;
    Ok(Some((head, skip + n)))
}

/// True while the bytes before the first space are a valid method token (RFC 9110 tchar).
fn method_prefix_ok(buf: &[u8]) -> bool {
    for &b in buf {
        match b {
            b' ' => return true,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
            | b'`' | b'|' | b'~' => {}
            _ if b.is_ascii_alphanumeric() => {}
            _ => return false,
        }
    }
    true
}

fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    while i < buf.len() && i < 8 {
        match buf[i..] {
            [b'\r', b'\n', ..] => i += 2,
            [b'\n', ..] => i += 1,
            _ => break,
        }
    }
    i
}

fn build(req: httparse::Request<'_, '_>) -> Result<RequestHead, HeadError> {
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("").to_string();
    if !target.starts_with('/') {
        return Err(HeadError::Malformed(
            "request target must be an absolute path",
        ));
    }
    let minor_version = req.version.unwrap_or(1);
    // Both are bounded by the head limits: fields by header_bytes_max, spans by
    // header_count_max (the parser's header array).
    let mut fields = String::with_capacity(
        req.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum(),
    );
    let mut spans = Vec::with_capacity(req.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<String> = None;
    let mut connection_close = minor_version == 0;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let start = fields.len();
        fields.push_str(h.name);
        fields[start..].make_ascii_lowercase();
        let value_start = fields.len();
        fields.push_str(String::from_utf8_lossy(h.value).trim());
        let (name, value) = fields[start..].split_at(value_start - start);
        match name {
            "content-length" => {
                let n = parse_content_length(value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::Malformed("conflicting Content-Length"));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => {
                let all = match transfer_encoding.take() {
                    Some(prev) => format!("{prev}, {value}"),
                    None => value.to_string(),
                };
                transfer_encoding = Some(all);
            }
            "connection" => {
                for token in value.split(',').map(|t| t.trim()) {
                    if token.eq_ignore_ascii_case("close") {
                        connection_close = true;
                    } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                        connection_close = false;
                    }
                }
            }
            "expect" => {
                if value.eq_ignore_ascii_case("100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HeadError::UnsupportedExpectation);
                }
            }
            _ => {}
        }
        if fields.len() > u32::MAX as usize {
            return Err(HeadError::HeadTooLarge);
        }
        spans.push([start as u32, value_start as u32, fields.len() as u32]);
    }
    let body = match (transfer_encoding, content_length) {
        // A request with both is how smuggling starts (RFC 9112 6.3): refuse it.
        (Some(_), Some(_)) => {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(te), None) => {
            if minor_version == 0 {
                return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
            }
            let codings: Vec<&str> = te.split(',').map(|c| c.trim()).collect();
            if codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked") {
                BodyKind::Chunked
            } else {
                return Err(HeadError::UnsupportedTransferCoding);
            }
        }
        (None, Some(n)) => BodyKind::Length(n),
        (None, None) => BodyKind::None,
    };
    Ok(RequestHead {
        method,
        query_at: memchr::memchr(b'?', target.as_bytes()),
        target,
        fields,
        spans,
        body,
        keep_alive: !connection_close,
        expect_continue: expect_continue && minor_version >= 1,
    })
}

fn parse_content_length(value: &str) -> Result<u64, HeadError> {
    if value.is_empty() || value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    value
        .parse()
        .map_err(|_| HeadError::Malformed("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line_bytes_max: 8192,
        header_bytes_max: 16384,
        header_count_max: 64,
    };

    fn parse_all(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse(buf, &LIMITS)
    }

    const SAMPLE: &[u8] = b"PUT /v2/a/b/blobs/uploads/x?digest=sha256:00 HTTP/1.1\r\n\
        Host: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\
        X-Many: a\r\nX-Many: b\r\n\r\nhello";

    #[test]
    fn parses_a_complete_head() {
        let (h, n) = parse_all(SAMPLE).unwrap().unwrap();
        assert_eq!(n, SAMPLE.len() - 5);
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.path(), "/v2/a/b/blobs/uploads/x");
        assert_eq!(h.query(), "digest=sha256:00");
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(h.keep_alive);
        assert!(h.expect_continue);
        assert_eq!(h.header("host"), Some("localhost"));
        assert_eq!(h.header_values("x-many").collect::<Vec<_>>(), ["a", "b"]);
    }

    /// A head arriving in two parts, cut at every byte boundary, parses the same once complete.
    #[test]
    fn every_split_point_gives_the_same_result() {
        let (whole, head_len) = parse_all(SAMPLE).unwrap().unwrap();
        for cut in 0..=SAMPLE.len() {
            match parse_all(&SAMPLE[..cut]).unwrap() {
                None => assert!(cut < head_len, "incomplete after {cut} bytes"),
                Some((h, n)) => {
                    assert!(cut >= head_len, "complete after only {cut} bytes");
                    assert_eq!(n, head_len);
                    assert_eq!(h.target, whole.target);
                    assert!(h.headers().eq(whole.headers()));
                    assert_eq!(h.body, whole.body);
                }
            }
        }
    }

    #[test]
    fn keep_alive_rules_for_1_0_and_1_1() {
        let (h, _) = parse_all(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let (h, _) = parse_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn limits_answer_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            parse_all(long.as_bytes()).unwrap_err(),
            HeadError::RequestLineTooLong
        );
        // An unterminated request line is refused as soon as it passes the limit.
        let endless = "G".repeat(8200);
        assert_eq!(parse_all(endless.as_bytes()).unwrap_err().status(), 414);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(17000));
        assert_eq!(parse_all(big.as_bytes()).unwrap_err().status(), 431);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..65 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_all(many.as_bytes()).unwrap_err(),
            HeadError::TooManyHeaders
        );
    }

    #[test]
    fn framing_conflicts_and_codings_are_refused() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_all(both).unwrap_err().status(), 400);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(parse_all(two).unwrap_err().status(), 400);
        let gz = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse_all(gz).unwrap_err().status(), 501);
        let neg = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse_all(neg).unwrap_err().status(), 400);
        let plus = b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n";
        assert_eq!(parse_all(plus).unwrap_err().status(), 400);
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n";
        assert_eq!(parse_all(huge).unwrap_err().status(), 400);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n";
        assert_eq!(
            parse_all(chunked).unwrap().unwrap().0.body,
            BodyKind::Chunked
        );
        let te10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_all(te10).unwrap_err().status(), 400);
        let expect = b"POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n";
        assert_eq!(parse_all(expect).unwrap_err().status(), 417);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bad in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                parse_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Pseudo-random inputs: whatever happens, no panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"\r\n:; aZ\x00\xff0";
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse_all(&buf);
        }
    }

    /// A TLS ClientHello on a plain port is refused from its first byte, not after a timeout.
    #[test]
    fn tls_client_hello_is_refused_at_once() {
        assert_eq!(parse_all(&[0x16]).unwrap_err().status(), 400);
        assert_eq!(
            parse_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .unwrap_err()
                .status(),
            400
        );
        assert!(parse_all(b"GE").unwrap().is_none());
        assert!(parse_all(b"GET /v2/").unwrap().is_none());
    }

    #[test]
    fn pipelined_heads_parse_one_at_a_time() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (h1, n1) = parse_all(two).unwrap().unwrap();
        let (h2, n2) = parse_all(&two[n1..]).unwrap().unwrap();
        assert_eq!((h1.target.as_str(), h2.target.as_str()), ("/a", "/b"));
        assert_eq!(n1 + n2, two.len());
    }
}
