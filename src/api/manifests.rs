//! Manifests: GET, HEAD, PUT, DELETE by tag or digest.

use crate::app::App;
use crate::error::{Code, Error, Result};
use crate::http::{Body, Method, Request, Response};
use crate::oci::{Reference, RepoName};
use crate::registry::manifests::{immutable_conflict, TagRule};

pub async fn handle(
    app: &App,
    req: &mut Request<'_>,
    method: Method,
    name: &RepoName,
    reference: &Reference,
    mirror: Option<usize>,
) -> Result<Response> {
    let reg = &app.registry;
    let mirror = mirror.map(|i| &app.mirrors.namespaces[i]);
    if let Some(ns) = mirror {
        if matches!(method, Method::Get | Method::Head) {
            crate::mirror::refresh_manifest(app, ns, name, reference).await?;
        }
    }
    match method {
        Method::Get => {
            // Whatever the Accept header lists, the stored manifest is served as stored: a
            // client asking only for Docker types still gets the OCI manifest it pushed, as
            // distribution and containerd expect (no schema 1 conversion exists here).
            let m = reg.get_manifest(name, reference).await?;
            if let Some(ns) = mirror {
                crate::mirror::note_pulled(app, ns, name, &m.digest).await;
            }
            Ok(Response::new(200)
                .header("Content-Type", m.media_type)
                .header("Docker-Content-Digest", m.digest.as_str())
                .header("ETag", format!("\"{}\"", m.digest))
                .body(Body::Bytes(m.bytes)))
        }
        Method::Head => {
            let (digest, media_type, size) = reg.manifest_meta(name, reference).await?;
            Ok(Response::new(200)
                .header("Content-Type", media_type)
                .header("Docker-Content-Digest", digest.as_str())
                .header("ETag", format!("\"{digest}\""))
                .body(Body::Length(size)))
        }
        Method::Put => {
            let limit = app.config.server.manifest_bytes_max;
            let body = req.body.read_to_vec(limit).await.map_err(|e| {
                let e = Error::from(e);
                if e.status == 413 {
                    Error::new(
                        Code::ManifestInvalid,
                        format!("manifest larger than {limit} bytes"),
                    )
                    .with_status(413)
                } else {
                    e
                }
            })?;
            let content_type = req.head.header("content-type").map(str::to_owned);
            let rule = match reference {
                Reference::Tag(t)
                    if app
                        .live
                        .get()
                        .immutable
                        .is_immutable(name.as_str(), t.as_str()) =>
                {
                    TagRule::Immutable
                }
                _ => TagRule::Mutable,
            };
            let put = reg
                .put_manifest(name, reference, content_type.as_deref(), body, rule)
                .await?;
            let mut resp = Response::new(201)
                .header("Location", format!("/v2/{name}/manifests/{}", put.digest))
                .header("Docker-Content-Digest", put.digest.as_str());
            if let Some(subject) = put.subject {
                resp = resp.header("OCI-Subject", subject.as_str());
            }
            Ok(resp)
        }
        Method::Delete => {
            let live = app.live.get();
            let rules = &live.immutable;
            match reference {
                Reference::Digest(d) => {
                    if !rules.is_empty() {
                        let immutable = |t: &str| rules.is_immutable(name.as_str(), t);
                        if let Some(tag) = reg.immutable_tag_of(name, d, immutable).await? {
                            return Err(immutable_conflict(
                                name,
                                &tag,
                                &format!("the manifest {d} it names cannot be deleted"),
                            ));
                        }
                    }
                    reg.delete_manifest(name, d).await?
                }
                Reference::Tag(t) => {
                    if rules.is_immutable(name.as_str(), t.as_str()) {
                        reg.resolve_tag(name, t)
                            .await?
                            .ok_or_else(|| Error::new(Code::ManifestUnknown, "manifest unknown"))?;
                        return Err(immutable_conflict(name, t.as_str(), "it cannot be deleted"));
                    }
                    reg.delete_tag(name, t).await?
                }
            }
            Ok(Response::new(202))
        }
        _ => Err(Error::new(Code::Unsupported, "method not allowed").with_status(405)),
    }
}
