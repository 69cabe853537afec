//! The one mapping from domain errors to the wire: each `Error` gets its OCI error code, HTTP
//! status and headers (Retry-After, the Basic challenge, an upload's Range) here and nowhere
//! else; server-side causes are logged here, once, with their chain.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::Error;
use crate::http::Response;

/// The realm in the Basic challenge.
const REALM: &str = "origin";

/// Retry-After of a 503 when storage stayed unavailable through its own retries: long enough
/// for a throttled or restarting object store, short for a client's patience.
const STORAGE_RETRY_AFTER_SECS: u64 = 2;

/// Retry-After of a 503 from a full queue of this node (authentication, upstream fetches).
const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// Retry-After of a 503 the HTTP layer answers when the request deadline passed.
const DEADLINE_RETRY_AFTER_SECS: u64 = 1;

/// The error codes of the distribution spec (and NOT_FOUND, which distribution uses for
/// routes that do not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    NotFound,
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::NotFound => "NOT_FOUND",
            Code::Unknown => "UNKNOWN",
        }
    }
}

/// How one error goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Wire {
    pub code: Code,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

fn wire(code: Code, status: u16) -> Wire {
    Wire {
        code,
        status,
        headers: Vec::new(),
    }
}

fn retry_after(w: Wire, after: Duration) -> Wire {
    with(w, "Retry-After", after.as_secs().to_string())
}

fn with(mut w: Wire, name: &'static str, value: String) -> Wire {
    w.headers.push((name, value));
    w
}

/// The code, status and headers of `e`: the one place they are chosen.
pub fn wire_of(e: &Error) -> Wire {
    match e {
        Error::BlobUnknown(_) => wire(Code::BlobUnknown, 404),
        Error::BlobUploadUnknown(_) => wire(Code::BlobUploadUnknown, 404),
        Error::ManifestUnknown(_) => wire(Code::ManifestUnknown, 404),
        Error::NameUnknown(_) => wire(Code::NameUnknown, 404),
        Error::EndpointUnknown(_) => wire(Code::NotFound, 404),
        Error::BlobUploadInvalid(_) => wire(Code::BlobUploadInvalid, 400),
        Error::UploadRangeInvalid {
            offset, session, ..
        } => {
            let mut w = wire(Code::BlobUploadInvalid, 416);
            if let Some((name, id)) = session {
                w = with(w, "Location", super::uploads::location(name, id));
            }
            w = with(w, "Range", super::uploads::range_header(*offset));
            if let Some((_, id)) = session {
                w = with(w, "Docker-Upload-UUID", id.as_str().to_string());
            }
            w
        }
        Error::DigestInvalid(_) => wire(Code::DigestInvalid, 400),
        Error::ManifestInvalid(_) => wire(Code::ManifestInvalid, 400),
        Error::ManifestTooLarge(_) => wire(Code::ManifestInvalid, 413),
        Error::ManifestBlobUnknown(_) => wire(Code::ManifestBlobUnknown, 400),
        Error::NameInvalid(_) => wire(Code::NameInvalid, 400),
        Error::BodyTooLarge(_) => wire(Code::SizeInvalid, 413),
        Error::BodyTimeout(_) => wire(Code::BlobUploadInvalid, 408),
        Error::QueryInvalid(_) => wire(Code::Unsupported, 400),
        Error::RangeNotSatisfiable { size } => with(
            wire(Code::RangeInvalid, 416),
            "Content-Range",
            format!("bytes */{size}"),
        ),
        Error::MethodNotAllowed { allow, .. } => {
            let w = wire(Code::Unsupported, 405);
            match allow {
                Some(allow) => with(w, "Allow", allow.clone()),
                None => w,
            }
        }
        Error::Unauthorized(_) => with(
            wire(Code::Unauthorized, 401),
            "WWW-Authenticate",
            format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""),
        ),
        Error::Denied(_) => wire(Code::Denied, 403),
        Error::Conflict(_) => wire(Code::Denied, 409),
        Error::RateLimited { retry_after: r, .. } => {
            retry_after(wire(Code::TooManyRequests, 429), *r)
        }
        Error::TooManyRequests(_) => wire(Code::TooManyRequests, 429),
        Error::Busy(_) => retry_after(
            wire(Code::TooManyRequests, 503),
            Duration::from_secs(BUSY_RETRY_AFTER_SECS),
        ),
        Error::Unavailable { retry_after: r, .. } => retry_after(wire(Code::Unknown, 503), *r),
        Error::StorageFull(_) => wire(Code::Unknown, 507),
        // DENIED, not UNKNOWN: Docker prints "denied: <message>" and does not retry it
        // (it retries UNKNOWN 5xx five times), and containerd and podman show the message.
        Error::InsufficientStorage(_) => wire(Code::Denied, 507),
        // 403 DENIED, as Harbor answers an exceeded quota: docker, podman and oras print the
        // message ("denied: ...") and do not retry, where a 5xx or 413 is retried or shown
        // without the body (README, "Quotas and limits").
        Error::QuotaExceeded(_) => wire(Code::Denied, 403),
        Error::StorageUnavailable(_) => retry_after(
            wire(Code::Unknown, 503),
            Duration::from_secs(STORAGE_RETRY_AFTER_SECS),
        ),
        Error::Upstream(_) | Error::Refused(_) => wire(Code::Unknown, 502),
        Error::Internal(_) => wire(Code::Unknown, 500),
    }
}

/// The response to `e`: the OCI error envelope with the status and headers of `wire_of`.
/// Server-side causes are logged here.
pub fn response(e: &Error) -> Response {
    e.log_cause();
    envelope(wire_of(e), &e.client_message())
}

fn envelope(w: Wire, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "code": w.code.as_str(), "message": message, "detail": null }]
    });
    let mut resp = Response::json(w.status, body.to_string().into_bytes());
    resp.headers
        .extend(w.headers.into_iter().map(|(n, v)| (n, Cow::Owned(v))));
    resp
}

/// The answer to a request the HTTP layer refused before any handler (`status` chosen by
/// the connection: a limit, a deadline, a malformed head).
pub fn protocol_response(status: u16, message: &str) -> Response {
    let code = match status {
        413 => Code::SizeInvalid,
        _ => Code::Unknown,
    };
    let w = wire(code, status);
    // 503 here is the request deadline passing (e.g. storage too slow): try again later.
    let w = if status == 503 {
        retry_after(w, Duration::from_secs(DEADLINE_RETRY_AFTER_SECS))
    } else {
        w
    };
    envelope(w, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;
    use crate::oci::{RepoName, UploadId};
    use crate::storage::StorageError;

    fn header<'a>(w: &'a Wire, name: &str) -> Option<&'a str> {
        w.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every domain error gets the OCI code, status and Retry-After clients saw before the
    /// mapping moved here.
    #[test]
    fn each_domain_error_has_its_code_status_and_retry_after() {
        let m = || String::from("m");
        let io = |kind| StorageError::Io(std::io::Error::new(kind, "x"));
        let secs = Duration::from_secs;
        let cases: Vec<(Error, Code, u16, Option<&str>)> = vec![
            (Error::BlobUnknown(m()), Code::BlobUnknown, 404, None),
            (
                Error::BlobUploadUnknown(m()),
                Code::BlobUploadUnknown,
                404,
                None,
            ),
            (
                Error::ManifestUnknown(m()),
                Code::ManifestUnknown,
                404,
                None,
            ),
            (Error::NameUnknown(m()), Code::NameUnknown, 404, None),
            (Error::EndpointUnknown(m()), Code::NotFound, 404, None),
            (
                Error::BlobUploadInvalid(m()),
                Code::BlobUploadInvalid,
                400,
                None,
            ),
            (Error::DigestInvalid(m()), Code::DigestInvalid, 400, None),
            (
                Error::ManifestInvalid(m()),
                Code::ManifestInvalid,
                400,
                None,
            ),
            (
                Error::ManifestTooLarge(m()),
                Code::ManifestInvalid,
                413,
                None,
            ),
            (
                Error::ManifestBlobUnknown(m()),
                Code::ManifestBlobUnknown,
                400,
                None,
            ),
            (Error::NameInvalid(m()), Code::NameInvalid, 400, None),
            (Error::BodyTooLarge(m()), Code::SizeInvalid, 413, None),
            (Error::BodyTimeout(m()), Code::BlobUploadInvalid, 408, None),
            (Error::QueryInvalid(m()), Code::Unsupported, 400, None),
            (
                Error::RangeNotSatisfiable { size: 3 },
                Code::RangeInvalid,
                416,
                None,
            ),
            (
                Error::MethodNotAllowed {
                    message: m(),
                    allow: None,
                },
                Code::Unsupported,
                405,
                None,
            ),
            (Error::Unauthorized(m()), Code::Unauthorized, 401, None),
            (Error::Denied(m()), Code::Denied, 403, None),
            (Error::Conflict(m()), Code::Denied, 409, None),
            (
                Error::RateLimited {
                    message: m(),
                    retry_after: secs(60),
                },
                Code::TooManyRequests,
                429,
                Some("60"),
            ),
            (
                Error::TooManyRequests(m()),
                Code::TooManyRequests,
                429,
                None,
            ),
            (Error::Busy(m()), Code::TooManyRequests, 503, Some("1")),
            (
                Error::Unavailable {
                    message: m(),
                    retry_after: secs(10),
                },
                Code::Unknown,
                503,
                Some("10"),
            ),
            (
                Error::from(StorageError::Io(std::io::Error::from_raw_os_error(
                    libc::ENOSPC,
                ))),
                Code::Unknown,
                507,
                None,
            ),
            (Error::InsufficientStorage(m()), Code::Denied, 507, None),
            (Error::QuotaExceeded(m()), Code::Denied, 403, None),
            (
                Error::from(io(std::io::ErrorKind::TimedOut)),
                Code::Unknown,
                503,
                Some("2"),
            ),
            (
                Error::from(StorageError::Conflict { key: "k".into() }),
                Code::BlobUploadInvalid,
                400,
                None,
            ),
            (Error::Upstream(m()), Code::Unknown, 502, None),
            (Error::Refused(m()), Code::Unknown, 502, None),
            (
                Error::from(io(std::io::ErrorKind::Other)),
                Code::Unknown,
                500,
                None,
            ),
            (Error::internal("broken"), Code::Unknown, 500, None),
        ];
        for (e, code, status, retry) in cases {
            let w = wire_of(&e);
            assert_eq!((w.code, w.status), (code, status), "{e:?}");
            assert_eq!(header(&w, "Retry-After"), retry, "{e:?}");
        }
    }

    /// The headers that tell a client what to do next travel with their errors.
    #[test]
    fn challenge_range_and_allow_headers() {
        let w = wire_of(&Error::Unauthorized("who".into()));
        assert_eq!(
            header(&w, "WWW-Authenticate"),
            Some("Basic realm=\"origin\", charset=\"UTF-8\"")
        );
        let w = wire_of(&Error::RangeNotSatisfiable { size: 7 });
        assert_eq!(header(&w, "Content-Range"), Some("bytes */7"));
        let w = wire_of(&Error::MethodNotAllowed {
            message: "no".into(),
            allow: Some("GET, HEAD".into()),
        });
        assert_eq!(header(&w, "Allow"), Some("GET, HEAD"));
        let name = RepoName::parse("a/b").unwrap();
        let id = UploadId::generate().unwrap();
        let w = wire_of(&Error::UploadRangeInvalid {
            message: "out of order".into(),
            offset: 10,
            session: Some((name, id.clone())),
        });
        let names: Vec<_> = w.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["Location", "Range", "Docker-Upload-UUID"]);
        assert_eq!(header(&w, "Range"), Some("0-9"));
        assert_eq!(
            header(&w, "Location"),
            Some(format!("/v2/a/b/blobs/uploads/{}", id.as_str()).as_str())
        );
    }

    fn body_of(r: &Response) -> serde_json::Value {
        let Body::Bytes(b) = &r.body else {
            panic!("expected a JSON body")
        };
        serde_json::from_slice(b).unwrap()
    }

    /// The body is the OCI error envelope; an internal cause never reaches the client.
    #[test]
    fn body_is_the_oci_error_envelope() {
        let r = response(&Error::NameUnknown("no such repository".into()));
        assert_eq!(r.status, 404);
        let v = body_of(&r);
        assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
        assert_eq!(v["errors"][0]["message"], "no such repository");
        let r = response(&Error::internal_in(
            "upload state 42",
            std::io::Error::other("secret path /var/lib/x"),
        ));
        assert_eq!(r.status, 500);
        assert_eq!(body_of(&r)["errors"][0]["message"], "internal error");
        let r = response(&Error::Upstream("up.example answered 500".into()));
        assert_eq!(
            body_of(&r)["errors"][0]["message"],
            "upstream unavailable: up.example answered 500"
        );
    }

    /// A writer the test's subscriber logs into.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// An internal error is logged once, when it is answered, with every cause in its chain.
    #[test]
    fn internal_error_log_line_carries_the_cause_chain() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let io = std::io::Error::other("journal queue full");
        let e = Error::internal_in("upload state 42", StorageError::Io(io));
        tracing::subscriber::with_default(subscriber, || {
            response(&e);
            response(&Error::BlobUnknown("client error: not logged".into()));
        });
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = log.lines().collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("ERROR"), "{log}");
        assert!(
            lines[0].contains("upload state 42: storage I/O error: journal queue full"),
            "{log}"
        );
    }

    /// A 503 from the HTTP layer (the deadline passed) asks the client to come back.
    #[test]
    fn protocol_errors_keep_their_status() {
        let r = protocol_response(503, "request took too long");
        assert_eq!(r.status, 503);
        assert!(r
            .headers
            .iter()
            .any(|(n, v)| *n == "Retry-After" && v == "1"));
        let r = protocol_response(413, "head too large");
        assert_eq!(body_of(&r)["errors"][0]["code"], "SIZE_INVALID");
    }
}
