//! The distribution API: route, then one handler per endpoint. Handlers parse path and query
//! into typed values, call the registry, and build responses; they never build storage keys.

pub mod access;
pub mod blobs;
pub mod error;
pub mod events;
pub mod listing;
pub mod manifests;
pub mod route;
pub mod uploads;

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::{BodyError, Request, Response};
use crate::oci::{Digest, DigestError, Reference, RepoName, UploadId};
pub use route::{Action, Endpoint};

/// Answers one request. Errors become OCI error bodies in the caller.
pub async fn dispatch(app: &App, req: &mut Request<'_>) -> Result<Response> {
    let path = req.head.path().to_string();
    if !path.starts_with("/v2") {
        let metrics = app.config.metrics.expose_on_main;
        if let Some(resp) = crate::ops::respond(app, &path, metrics).await {
            return Ok(resp);
        }
    }
    let (endpoint, action) = match route::route(req.head.method, &path) {
        Ok(r) => r,
        Err(route::RouteError::NotFound) => {
            return Err(Error::EndpointUnknown("no such endpoint".into()))
        }
        Err(route::RouteError::MethodNotAllowed(allow)) => {
            return Err(Error::MethodNotAllowed {
                message: "method not allowed on this endpoint".into(),
                allow: Some(allow.into()),
            })
        }
    };
    // A mirrored repository is known by its local name from here on (policies included).
    // The mirror table of this moment: the request keeps it to its end (a reload publishes a
    // new one for the requests after it).
    let mirrored = endpoint.name().and_then(|n| {
        app.live
            .peek(|live| live.mirrors.resolve(n, req.head.query()))
    });
    let endpoint = match &mirrored {
        Some((_, local)) => endpoint.with_name(local),
        None => endpoint,
    };
    let mirror = mirrored.as_ref().map(|(ns, _)| ns);
    let identity = access::identify(app, req).await?;
    access::authorize(app, &identity, &endpoint, action, req.head.query())?;
    if let Some(ns) = mirror {
        if action.writes() && !ns.writable {
            return Err(Error::MethodNotAllowed {
                message: "this repository is a read-only mirror of an upstream registry".into(),
                allow: None,
            });
        }
    }
    let method = req.head.method;
    let who = events::Who {
        identity: &identity,
        ip: req.peer.ip(),
    };
    // Routes that take a body set their own limit; the rest get the small one.
    let takes_body = matches!(
        endpoint,
        Endpoint::UploadStart { .. } | Endpoint::Upload { .. }
    ) || matches!(endpoint, Endpoint::Manifest { .. })
        && method == crate::http::Method::Put;
    if !takes_body {
        req.body.set_limit(app.config.server.other_body_bytes_max)?;
    }
    match endpoint {
        Endpoint::Base => Ok(Response::json(200, b"{}".to_vec())),
        Endpoint::Catalog => listing::catalog(app, req, &identity).await,
        Endpoint::Tags { name } => {
            listing::tags(app, req, &repo(name)?, mirror.map(|ns| &**ns)).await
        }
        Endpoint::Referrers { name, digest } => {
            let ns = mirror.map(|ns| &**ns);
            listing::referrers(app, req, &repo(name)?, &digest_of(digest)?, ns).await
        }
        Endpoint::Blob { name, digest } => {
            let (name, digest) = (repo(name)?, digest_of(digest)?);
            blobs::handle(app, req, method, &name, &digest, mirror, &who).await
        }
        Endpoint::Manifest { name, reference } => {
            manifests::handle(
                app,
                req,
                method,
                &repo(name)?,
                &reference_of(reference, method)?,
                mirror.map(|ns| &**ns),
                &who,
            )
            .await
        }
        Endpoint::UploadStart { name } => uploads::start(app, req, &repo(name)?, &who).await,
        Endpoint::Upload { name, id } => {
            let id = UploadId::parse(id)
                .map_err(|_| Error::BlobUploadUnknown("no such upload".into()))?;
            uploads::handle(app, req, method, &repo(name)?, &id, &who).await
        }
    }
}

pub fn repo(name: &str) -> Result<RepoName> {
    RepoName::parse(name).map_err(|e| Error::NameInvalid(format!("invalid repository name: {e}")))
}

pub fn digest_of(s: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|e| match e {
        DigestError::Unsupported(_) => Error::DigestInvalid(format!("unsupported digest: {e}")),
        DigestError::Invalid(_) => Error::DigestInvalid(format!("invalid digest: {e}")),
    })
}

/// A reference that is neither a tag nor a digest names nothing: reads and deletes answer
/// 404 MANIFEST_UNKNOWN (as distribution does, and as clients probing with such names
/// expect); only a PUT, where the client sends the name, is told 400.
fn reference_of(s: &str, method: crate::http::Method) -> Result<Reference> {
    Reference::parse(s).map_err(|e| {
        if method != crate::http::Method::Put {
            return Error::ManifestUnknown(format!("manifest unknown: {e}"));
        }
        let message = format!("invalid reference: {e}");
        if s.contains(':') {
            Error::DigestInvalid(message)
        } else {
            Error::ManifestInvalid(message)
        }
    })
}

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
