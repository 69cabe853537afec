//! Manifests: GET, HEAD, PUT, DELETE by tag or digest.

use crate::error::{Error, Result};
use crate::http::{Body, Method, Request, Response};
use crate::mirror::MirrorNs;
use crate::oci::{Reference, RepoName};
use crate::service::{manifests, Caller, Service};

pub async fn handle(
    svc: &Service,
    req: &mut Request<'_>,
    caller: &Caller<'_>,
    name: &RepoName,
    reference: &Reference,
    mirror: Option<&MirrorNs>,
) -> Result<Response> {
    match req.head.method {
        Method::Get => {
            // Whatever the Accept header lists, the stored manifest is served as stored: a
            // client asking only for Docker types still gets the OCI manifest it pushed, as
            // distribution and containerd expect (no schema 1 conversion exists here).
            let m = manifests::get(svc, caller, name, reference, mirror).await?;
            Ok(Response::new(200)
                .header("Content-Type", m.media_type)
                .content_digest(m.digest.as_str())
                .body(Body::Bytes(m.bytes)))
        }
        Method::Head => {
            let (digest, media_type, size) = manifests::head(svc, name, reference, mirror).await?;
            Ok(Response::new(200)
                .header("Content-Type", media_type)
                .content_digest(digest.as_str())
                .body(Body::Length(size)))
        }
        Method::Put => {
            let limit = svc.limits.manifest_bytes_max;
            let body = req
                .body
                .read_to_vec(limit)
                .await
                .map_err(|e| match Error::from(e) {
                    Error::BodyTooLarge(_) => {
                        Error::ManifestTooLarge(format!("manifest larger than {limit} bytes"))
                    }
                    e => e,
                })?;
            let content_type = req.head.header("content-type");
            let put = manifests::put(svc, caller, name, reference, content_type, body);
            let put = crate::future::cold(put).await?;
            let mut resp = Response::new(201)
                .header("Location", format!("/v2/{name}/manifests/{}", put.digest))
                .header("Docker-Content-Digest", put.digest.to_string());
            if let Some(subject) = put.subject {
                resp = resp.header("OCI-Subject", subject.to_string());
            }
            Ok(resp)
        }
        Method::Delete => {
            crate::future::cold(manifests::delete(svc, caller, name, reference)).await?;
            Ok(Response::new(202))
        }
        _ => Err(Error::MethodNotAllowed {
            message: "method not allowed".into(),
            allow: None,
        }),
    }
}
