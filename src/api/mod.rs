//! The distribution API, an HTTP adapter over the service layer: route, identify and
//! authorize, then one handler per endpoint. Handlers parse path, query and headers into
//! typed values, call one operation of `crate::service`, and encode what it returns.

pub mod access;
pub mod blobs;
pub mod error;
pub mod listing;
pub mod manifests;
pub mod route;
pub mod uploads;

use crate::app::App;
use crate::error::{Error, Result};
use crate::future::cold;
use crate::http::{Request, Response};
use crate::oci::{Digest, DigestError, Reference, RepoName, UploadId};
use crate::service::Caller;
pub use route::Endpoint;

/// Answers one request. Errors become OCI error bodies in the caller.
pub async fn dispatch(app: &App, req: &mut Request<'_>) -> Result<Response> {
    let path = req.head.path().to_string();
    if !path.starts_with("/v2") {
        let metrics = app.config.metrics.expose_on_main;
        if let Some(resp) = crate::ops::respond(&app.svc, &path, metrics).await {
            return Ok(resp);
        }
        // The web UI (and `/`, redirected to it): a sibling adapter over the same service.
        if let Some(resp) = crate::ui::respond(app, req, &path).await {
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
        app.svc
            .live
            .peek(|live| live.mirrors.resolve(n, req.head.query()))
    });
    let endpoint = match &mirrored {
        Some((_, local)) => endpoint.with_name(local),
        None => endpoint,
    };
    let mirror = mirrored.as_ref().map(|(ns, _)| ns);
    if crate::trace::recording() {
        // The server span's name follows from its method and route (crate::trace::record).
        let span = tracing::Span::current();
        crate::trace::set_static(&span, "http.route", endpoint.template());
        crate::trace::set_static(&span, "oci.action", action.as_str());
        if let Some(name) = endpoint.name() {
            span.record("oci.repository", name);
        }
    }
    let identity = access::identify(app, req).await?;
    if let Some(id) = identity.id.as_deref().filter(|_| crate::trace::recording()) {
        // The identity's configured id (never a password or a token).
        tracing::Span::current().record("enduser.id", id);
    }
    let peer = req.peer.ip();
    access::authorize(app, &identity, peer, &endpoint, action, req.head.query())?;
    let pacer = access::limit(app, &identity, peer, &endpoint, action, req.head.query())?;
    if let Some(ns) = mirror {
        if action.writes() && !ns.writable {
            let name = endpoint.name().unwrap_or("");
            return Err(access::read_only_mirror(app, &identity, peer, action, name));
        }
    }
    let method = req.head.method;
    let caller = Caller {
        identity: &identity,
        ip: req.peer.ip(),
        clock: req.clock,
    };
    let svc = &*app.svc;
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
        Endpoint::Catalog => listing::catalog(svc, req, &identity).await,
        Endpoint::Tags { name } => {
            listing::tags(svc, req, &repo(name)?, mirror.map(|ns| &**ns)).await
        }
        Endpoint::Referrers { name, digest } => {
            let ns = mirror.map(|ns| &**ns);
            listing::referrers(svc, req, &repo(name)?, &digest_of(digest)?, ns).await
        }
        Endpoint::Blob { name, digest } => {
            let (name, digest) = (repo(name)?, digest_of(digest)?);
            let resp = blobs::handle(svc, req, &caller, &name, &digest, mirror).await;
            resp.map(|r| r.paced(pacer))
        }
        Endpoint::Manifest { name, reference } => {
            let reference = reference_of(reference, method)?;
            let ns = mirror.map(|ns| &**ns);
            manifests::handle(svc, req, &caller, &repo(name)?, &reference, ns).await
        }
        // Uploads and writes: futures on the heap (`crate::future::cold`), so that the
        // handler's future, copied per request, is the size of a read's.
        Endpoint::UploadStart { name } => {
            cold(uploads::start(svc, req, &caller, &repo(name)?)).await
        }
        Endpoint::Upload { name, id } => {
            let id = UploadId::parse(id)
                .map_err(|_| Error::BlobUploadUnknown("no such upload".into()))?;
            cold(uploads::handle(svc, req, &caller, &repo(name)?, &id)).await
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
