//! The registry's error: what went wrong, in domain terms, with the cause behind it.
//!
//! The rule: below `api/` errors are domain values; `api/error.rs` maps them once (OCI code,
//! HTTP status, headers such as Retry-After) and logs internal causes there, with their
//! chain. Nothing here or below knows a status code. A variant's `Display` is the message a
//! client is shown, except for the server-side failures (`StorageFull`, `StorageUnavailable`,
//! `Internal`), whose causes stay in the log.

use std::fmt;
use std::time::Duration;

use crate::http::BodyError;
use crate::storage::StorageError;

/// Any error with its cause, boxed: the source of an `Internal` error.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong. Below `api/` errors are domain values; `api/error.rs` maps them once.
#[derive(Debug)]
pub enum Error {
    // Things that are not there.
    /// No such blob (in this repository).
    BlobUnknown(String),
    /// No such upload session, or it expired.
    BlobUploadUnknown(String),
    /// No such manifest or tag.
    ManifestUnknown(String),
    /// No such repository.
    NameUnknown(String),
    /// No such endpoint.
    EndpointUnknown(String),

    // What the client sent is wrong.
    /// An upload cannot go on as asked (bad chunk, changed by another request).
    BlobUploadInvalid(String),
    /// A chunk that does not start at the upload's offset (`out_of_order`), or whose
    /// Content-Range disagrees with its length: the client is told where the upload is.
    UploadRangeInvalid {
        message: String,
        offset: u64,
        /// Where the upload continues, told to a client that sent a chunk out of order.
        session: Option<(crate::oci::RepoName, crate::oci::UploadId)>,
    },
    /// A digest that is malformed, unsupported or does not match the content.
    DigestInvalid(String),
    /// A manifest that does not parse or breaks a rule.
    ManifestInvalid(String),
    /// A manifest above the size limit.
    ManifestTooLarge(String),
    /// A manifest names a blob (or child) the repository does not have.
    ManifestBlobUnknown(String),
    /// A repository name that does not parse.
    NameInvalid(String),
    /// A request body above its limit.
    BodyTooLarge(String),
    /// A request body that stopped arriving.
    BodyTimeout(String),
    /// A query parameter that does not parse.
    QueryInvalid(String),
    /// A byte range outside a blob of `size` bytes.
    RangeNotSatisfiable { size: u64 },
    /// A method the endpoint (or a read-only mirror) does not take; `allow` lists those it
    /// does, when the endpoint has any.
    MethodNotAllowed {
        message: String,
        allow: Option<String>,
    },

    // Who is asking, and may they.
    /// No or wrong credentials.
    Unauthorized(String),
    /// Known, but not allowed.
    Denied(String),
    /// Refused by the repository's rules (an immutable tag).
    Conflict(String),
    /// Too many failed authentications from this address; `retry_after` until it may again.
    RateLimited {
        message: String,
        retry_after: Duration,
    },
    /// A bounded resource of this repository is used up (open upload sessions).
    TooManyRequests(String),
    /// A bounded queue of this node is full (authentication, upstream fetches): try soon.
    Busy(String),

    // The server's side.
    /// A race with another writer or with GC that the client wins by trying again after
    /// `retry_after`.
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// Storage has no space left.
    StorageFull(StorageError),
    /// Storage is below its free-space thresholds: writes that add data are refused.
    InsufficientStorage(String),
    /// The write would take its namespace over its quota (`quota_bytes`, `quota_manifests`).
    QuotaExceeded(String),
    /// Storage stayed unavailable through its own retries.
    StorageUnavailable(StorageError),
    /// The mirror's upstream failed or answered wrongly.
    Upstream(String),
    /// A synchronous webhook refused the operation.
    Refused(String),
    /// Anything else: a bug or a broken invariant. The client sees "internal error".
    Internal(Cause),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An internal failure: the client sees UNKNOWN, the log (at the boundary) the cause.
    pub fn internal(cause: impl Into<Cause>) -> Self {
        Error::Internal(cause.into())
    }

    /// An internal failure of `context`, caused by `cause` (kept as its source).
    #[cfg(test)]
    pub fn internal_in(
        context: impl Into<String>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Internal(Box::new(Context {
            context: context.into(),
            cause: Box::new(cause),
        }))
    }

    /// The message a client may be shown: the error's own text, never an internal cause.
    pub fn client_message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Error::Internal(_) => "internal error".into(),
            e => e.to_string().into(),
        }
    }

    /// Logs a server-side failure with its causes, where it ends (the response to a request,
    /// or a caller that gives up on it); client errors are in the access log only.
    pub fn log_cause(&self) {
        match self {
            Error::StorageFull(_) => tracing::error!(error = %self.chain(), "storage full"),
            Error::StorageUnavailable(_) => {
                tracing::warn!(error = %self.chain(), "storage unavailable")
            }
            Error::Internal(_) => tracing::error!(cause = %self.chain(), "internal error"),
            _ => {}
        }
    }

    /// Something that is not there (a blob, manifest, repository, upload or route).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::BlobUnknown(_)
                | Error::BlobUploadUnknown(_)
                | Error::ManifestUnknown(_)
                | Error::NameUnknown(_)
                | Error::EndpointUnknown(_)
        )
    }

    /// This error and its causes, "outer: inner: ...", for a log line.
    pub fn chain(&self) -> Chain<'_> {
        Chain(self)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BlobUnknown(m)
            | Error::BlobUploadUnknown(m)
            | Error::ManifestUnknown(m)
            | Error::NameUnknown(m)
            | Error::EndpointUnknown(m)
            | Error::BlobUploadInvalid(m)
            | Error::UploadRangeInvalid { message: m, .. }
            | Error::DigestInvalid(m)
            | Error::ManifestInvalid(m)
            | Error::ManifestTooLarge(m)
            | Error::ManifestBlobUnknown(m)
            | Error::NameInvalid(m)
            | Error::BodyTooLarge(m)
            | Error::BodyTimeout(m)
            | Error::QueryInvalid(m)
            | Error::MethodNotAllowed { message: m, .. }
            | Error::Unauthorized(m)
            | Error::Denied(m)
            | Error::Conflict(m)
            | Error::RateLimited { message: m, .. }
            | Error::TooManyRequests(m)
            | Error::Busy(m)
            | Error::InsufficientStorage(m)
            | Error::QuotaExceeded(m)
            | Error::Unavailable { message: m, .. } => f.write_str(m),
            Error::RangeNotSatisfiable { .. } => f.write_str("requested range not satisfiable"),
            Error::StorageFull(_) => f.write_str("storage is full"),
            Error::StorageUnavailable(_) => f.write_str("storage temporarily unavailable"),
            Error::Upstream(m) => write!(f, "upstream unavailable: {m}"),
            Error::Refused(m) => write!(f, "the operation was refused: {m}"),
            // Transparent: the cause says what went wrong (and its source goes on).
            Error::Internal(cause) => fmt::Display::fmt(cause, f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::StorageFull(e) | Error::StorageUnavailable(e) => Some(e),
            Error::Internal(cause) => cause.source(),
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                Error::StorageFull(e)
            }
            // Object storage that stayed unavailable through its retries: transient.
            StorageError::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Error::StorageUnavailable(e)
            }
            StorageError::Conflict { .. } => {
                Error::BlobUploadInvalid("upload was changed by another request".into())
            }
            other => Error::Internal(Box::new(other)),
        }
    }
}

/// Why Origin, or one of its commands, cannot start or finish. Printed once, with its chain,
/// by `serve` or `cli`; the configuration's own errors are `config::ConfigError`.
#[derive(Debug)]
pub enum StartError {
    /// The configuration cannot work (including what the S3 probe found).
    Config(crate::config::ConfigError),
    /// `what` (the I/O driver, a listener, a thread, the write journal) could not start.
    Io { what: String, source: Cause },
    /// A worker stopped before it was ready.
    WorkerExited,
    /// A worker's server failed.
    Worker(std::io::Error),
    /// A maintenance pass (gc, scrub, retention) failed.
    Registry(Error),
}

impl StartError {
    pub fn io(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        StartError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Io { what, source } => write!(f, "{what}: {source}"),
            StartError::WorkerExited => f.write_str("a worker exited during startup"),
            StartError::Worker(e) => write!(f, "{e}"),
            // The operator running the command gets the whole chain.
            StartError::Registry(e) => write!(f, "{}", e.chain()),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // Each variant prints its cause already; the chain goes on below it.
        match self {
            StartError::Config(e) => std::error::Error::source(e),
            StartError::Io { source, .. } => source.source(),
            StartError::Worker(e) => e.source(),
            _ => None,
        }
    }
}

impl From<crate::config::ConfigError> for StartError {
    fn from(e: crate::config::ConfigError) -> Self {
        StartError::Config(e)
    }
}

/// A cause with what was being done when it happened.
#[cfg(test)]
#[derive(Debug)]
struct Context {
    context: String,
    cause: Cause,
}

#[cfg(test)]
impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

#[cfg(test)]
impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// An error and its sources joined by ": ". A source whose text the line already ends with
/// (an error that prints its cause as well as returning it) is not repeated.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = e.source();
        }
        f.write_str(&line)
    }
}

/// A request body that could not be read, as the operation reading it fails.
impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Error::BodyTooLarge(e.to_string()),
            BodyError::Timeout => Error::BodyTimeout(e.to_string()),
            BodyError::Malformed(_) | BodyError::Closed | BodyError::Io(_) => {
                Error::BlobUploadInvalid(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_every_cause_once() {
        let io = std::io::Error::other("journal queue full");
        let e = Error::internal_in("upload state abc", StorageError::Io(io));
        assert_eq!(
            e.chain().to_string(),
            "upload state abc: storage I/O error: journal queue full"
        );
        let full = Error::from(StorageError::Io(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        )));
        assert!(matches!(full, Error::StorageFull(_)));
        assert!(full
            .chain()
            .to_string()
            .starts_with("storage is full: storage I/O error: "));
    }
}
