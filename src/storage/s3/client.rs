//! One S3 request with its retries: sign (rusty-s3, a presigned URL per attempt so the
//! signature's time is fresh), send on the project's HTTP client, classify the answer.
//!
//! The retry rule, in one place:
//! - Retried: connection errors, timeouts, 5xx (`InternalError`, `SlowDown`,
//!   `ServiceUnavailable`), 429, 409 `ConditionalRequestConflict` and 400 `RequestTimeout`,
//!   within `attempts_max` attempts and `operation_deadline` for them all, with exponential
//!   backoff and full jitter between attempts.
//! - Everything else is an answer: 2xx, 304, 404, 412 and 416 go back to the caller, other
//!   statuses become an error naming the operation, the status and S3's error code.
//! - A mutating request (not GET or HEAD) whose attempt failed after it may have reached the
//!   server (a cut connection, a timeout, a 500) leaves the outcome *unsure*; the caller learns
//!   it through [`Sent::unsure`]. Unconditional writes of a unique or identical body are safe to
//!   repeat. A conditional PUT is not: its own earlier success turns the repeat into a 412. So
//!   every conditional PUT carries a random write token as object metadata, and after an unsure
//!   attempt the caller resolves a 412 by reading the token back (see `S3Storage::put`): its own
//!   token means the write took effect. 503 `SlowDown` and 409 are refusals, never unsure.

use std::io;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials};
use url::Url;

use crate::http::client::{Client, Response, Target};
use crate::metrics_s3::{Outcome, S3_METRICS};
use crate::storage::StorageError;

use super::xml;

/// Largest error document read (S3's are a few hundred bytes).
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;
/// First backoff; doubled per attempt up to `BACKOFF_MAX`, then jittered down.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Validity of the presigned URL of one attempt: it is used at once, so short, but allows
/// for clock skew between this node and the service.
pub const SIGNATURE_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Signs `action` with the request's headers among its signed ones (every conditional and
/// checksum header the request sends must be signed).
pub fn sign_with<'a, A: rusty_s3::S3Action<'a>>(
    mut action: A,
    headers: &'a [(&'static str, String)],
) -> url::Url {
    for (name, value) in headers {
        action.headers_mut().insert(*name, value.as_str());
    }
    action.sign(SIGNATURE_EXPIRY)
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub deadline: Duration,
}

/// The S3 service as one bucket: signing, sending, retrying.
pub struct S3Client {
    pub http: Client,
    pub bucket: Bucket,
    pub credentials: Option<Credentials>,
    pub retry: RetryPolicy,
}

/// A final answer and whether an earlier attempt of the same request may have taken effect.
pub struct Sent {
    pub resp: Response,
    pub unsure: bool,
}

/// Signs one attempt: the presigned URL for the bucket, credentials and headers to sign.
pub type Signer<'a> = &'a dyn Fn(&Bucket, Option<&Credentials>, &[(&'static str, String)]) -> Url;

/// One request: its signing (redone per attempt), the headers it signs and sends, its body.
pub struct Request<'a> {
    /// Operation name for errors and logs (`PutObject`, `ListObjectsV2`, ...).
    pub op: &'static str,
    pub method: &'static str,
    /// The key (or prefix) concerned, for error messages.
    pub key: &'a str,
    pub sign: Signer<'a>,
    /// Sent as they are; lowercase names, signed by `sign`.
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a [u8],
}

enum Verdict {
    Answer,
    /// Retry; `applied` is whether the failed attempt may have taken effect.
    Retry {
        applied: bool,
    },
    Fail,
}

fn verdict(status: u16, code: &str) -> Verdict {
    match (status, code) {
        (200..=299 | 304 | 404 | 412 | 416, _) => Verdict::Answer,
        (503, _) | (429, _) => Verdict::Retry { applied: false },
        (409, "ConditionalRequestConflict") => Verdict::Retry { applied: false },
        (400, "RequestTimeout") => Verdict::Retry { applied: false },
        (500..=599, _) => Verdict::Retry { applied: true },
        _ => Verdict::Fail,
    }
}

/// An I/O error naming what failed.
pub fn s3_error(op: &str, key: &str, what: impl std::fmt::Display) -> StorageError {
    StorageError::Io(io::Error::other(format!("S3 {op} {key:?}: {what}")))
}

/// The XML document answering an action that can fail inside a 200 (CopyObject,
/// CompleteMultipartUpload, DeleteObjects), read up to `limit` bytes: an error for any other
/// status or for an `<Error>` document, naming its code.
pub async fn ok_document(
    resp: Response,
    op: &str,
    key: &str,
    limit: usize,
) -> Result<String, StorageError> {
    let status = resp.status;
    let body = resp.bytes(limit).await.map_err(|e| s3_error(op, key, e))?;
    let doc = String::from_utf8_lossy(&body).into_owned();
    if status != 200 || xml::is_error(&doc) {
        let code = xml::field(&doc, "Code").unwrap_or_default();
        return Err(s3_error(op, key, format!("status {status} {code}")));
    }
    Ok(doc)
}

impl S3Client {
    /// Sends `req` until it gets an answer, within the retry budget and deadline.
    #[tracing::instrument(
        target = "origin::span",
        name = "s3.request",
        skip_all,
        fields(
            otel.kind = "client",
            http.request.method = req.method,
            s3.operation = req.op,
            s3.key = req.key,
            http.response.status_code = tracing::field::Empty,
        )
    )]
    pub async fn call(&self, req: &Request<'_>) -> Result<Sent, StorageError> {
        let start = Instant::now();
        let mutating = !matches!(req.method, "GET" | "HEAD");
        let mut unsure = false;
        let mut last = String::from("no attempt made");
        for attempt in 0..self.retry.attempts_max {
            let remaining = self.retry.deadline.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                break;
            }
            let url = (req.sign)(&self.bucket, self.credentials.as_ref(), &req.headers);
            let target =
                Target::absolute(url.as_str()).map_err(|e| s3_error(req.op, req.key, e))?;
            if attempt > 0 {
                S3_METRICS.retry(req.op);
            }
            let sent_at = Instant::now();
            let sent = compio::time::timeout(
                remaining,
                self.http
                    .send_body(req.method, &target, &req.headers, req.body),
            )
            .await;
            let outcome = match &sent {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) => Outcome::ConnectionError,
                Ok(Ok(resp)) => Outcome::of_status(resp.status),
            };
            S3_METRICS.attempt(req.op, outcome, sent_at.elapsed());
            match sent {
                Err(_) => {
                    unsure |= mutating;
                    last = "timed out".into();
                }
                Ok(Err(e)) => {
                    unsure |= mutating;
                    last = e.to_string();
                }
                Ok(Ok(resp)) => {
                    let status = resp.status;
                    if matches!(verdict(status, ""), Verdict::Answer) {
                        if crate::trace::recording() {
                            tracing::Span::current().record("http.response.status_code", status);
                        }
                        return Ok(Sent { resp, unsure });
                    }
                    let body = resp.bytes(ERROR_BODY_BYTES_MAX).await.unwrap_or_default();
                    let doc = String::from_utf8_lossy(&body);
                    let code = xml::field(&doc, "Code").unwrap_or_default();
                    let message = xml::field(&doc, "Message").unwrap_or_default();
                    last = format!("{status} {code} {message}").trim().to_string();
                    match verdict(status, &code) {
                        Verdict::Answer => unreachable!("answers return above"),
                        Verdict::Retry { applied } => unsure |= applied && mutating,
                        Verdict::Fail => {
                            let kind = if status == 403 {
                                io::ErrorKind::PermissionDenied
                            } else {
                                io::ErrorKind::Other
                            };
                            return Err(StorageError::Io(io::Error::new(
                                kind,
                                format!("S3 {} {:?}: {last}", req.op, req.key),
                            )));
                        }
                    }
                }
            }
            tracing::debug!(op = req.op, key = req.key, attempt, error = %last, "S3 retry");
            crate::span_event!(attempt, error = %last, "retry");
            if attempt + 1 < self.retry.attempts_max {
                let pause =
                    backoff(attempt).min(self.retry.deadline.saturating_sub(start.elapsed()));
                compio::time::sleep(pause).await;
            }
        }
        Err(StorageError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "S3 {} {:?}: gave up after {} ms: {last}",
                req.op,
                req.key,
                start.elapsed().as_millis()
            ),
        )))
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, first * 2^attempt)].
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let mut r = [0u8; 4];
    let fraction = match getrandom::getrandom(&mut r) {
        Ok(()) => f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    cap.mul_f64(fraction)
}

/// A random token: 16 hex digits.
pub fn token() -> String {
    let mut r = [0u8; 8];
    // Uniqueness, not secrecy: a clock-based fallback is enough if the OS source fails.
    if getrandom::getrandom(&mut r).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        r = nanos.to_le_bytes();
    }
    r.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule() {
        assert!(matches!(verdict(200, ""), Verdict::Answer));
        assert!(matches!(verdict(412, ""), Verdict::Answer));
        assert!(matches!(verdict(404, ""), Verdict::Answer));
        assert!(matches!(
            verdict(503, "SlowDown"),
            Verdict::Retry { applied: false }
        ));
        assert!(matches!(
            verdict(500, "InternalError"),
            Verdict::Retry { applied: true }
        ));
        assert!(matches!(
            verdict(409, "ConditionalRequestConflict"),
            Verdict::Retry { applied: false }
        ));
        assert!(matches!(verdict(409, "BucketNotEmpty"), Verdict::Fail));
        assert!(matches!(verdict(403, "AccessDenied"), Verdict::Fail));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 0..40 {
            assert!(backoff(attempt) <= BACKOFF_MAX);
        }
        assert!(backoff(0) <= BACKOFF_FIRST);
        assert_eq!(token().len(), 16);
    }
}
