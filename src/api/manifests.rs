//! Manifests: GET, HEAD, PUT, DELETE by tag or digest.

use super::events::{self, Spec, Who};
use crate::app::App;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::http::{Body, Method, Request, Response};
use crate::oci::{Algorithm, Digest, Reference, RepoName};
use crate::registry::manifests::{immutable_conflict, TagRule};

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

pub async fn handle(
    app: &App,
    req: &mut Request<'_>,
    method: Method,
    name: &RepoName,
    reference: &Reference,
    mirror: Option<&crate::mirror::MirrorNs>,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
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
            // Coalesced: a storage write at most once per manifest per node per interval.
            if app.live.peek(|l| l.retention.applies(name.as_str()))
                && app.pulls.due(name, &m.digest)
            {
                if let Err(e) = reg.record_pull(name, &m.digest).await {
                    e.log_cause();
                    tracing::warn!(error = %e.client_message(), "could not record a pull");
                }
            }
            if events::wanted(app) {
                let spec = Spec {
                    kind: EventKind::ManifestPull,
                    name,
                    digest: &m.digest,
                    tag: tag_of(reference),
                    reference: Some(reference.as_str()),
                    media_type: Some(&m.media_type),
                    size: Some(m.bytes.len() as u64),
                };
                events::before(app, who, &spec).await?;
                events::after(app, who, &spec).await;
            }
            Ok(Response::new(200)
                .header("Content-Type", m.media_type)
                .content_digest(m.digest.as_str())
                .body(Body::Bytes(m.bytes)))
        }
        Method::Head => {
            let (digest, media_type, size) = reg.manifest_meta(name, reference).await?;
            Ok(Response::new(200)
                .header("Content-Type", media_type)
                .content_digest(digest.as_str())
                .body(Body::Length(size)))
        }
        Method::Put => put(app, req, name, reference, who).await,
        Method::Delete => {
            // Storage writes and `required` webhooks (each with a deadline of its own): a
            // delete is not cut half-way by the request's deadline.
            let _write = req.clock.hold();
            delete(app, name, reference, who).await
        }
        _ => Err(Error::MethodNotAllowed {
            message: "method not allowed".into(),
            allow: None,
        }),
    }
}

async fn put(
    app: &App,
    req: &mut Request<'_>,
    name: &RepoName,
    reference: &Reference,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
    let limit = app.config.server.manifest_bytes_max;
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
    let content_type = req.head.header("content-type").map(str::to_owned);
    let immutable = |t: &str| {
        app.live
            .peek(|l| l.immutable.is_immutable(name.as_str(), t))
    };
    let rule = match reference {
        Reference::Tag(t) if immutable(t.as_str()) => TagRule::Immutable,
        _ => TagRule::Mutable,
    };
    // The events of this push, known before it is stored (for `required` webhooks).
    let pushed = events::wanted(app).then(|| {
        let algorithm = match reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        (Digest::of(algorithm, &body), body.len() as u64)
    });
    let specs = |digest: &Digest, size: u64| -> Vec<(EventKind, Digest, u64)> {
        let mut kinds = vec![(EventKind::ManifestPush, digest.clone(), size)];
        if matches!(reference, Reference::Tag(_)) {
            kinds.push((EventKind::TagCreate, digest.clone(), size));
        }
        kinds
    };
    let planned = pushed
        .as_ref()
        .map(|(d, size)| specs(d, *size))
        .unwrap_or_default();
    let specs: Vec<Spec> = planned
        .iter()
        .map(|(kind, digest, size)| Spec {
            kind: *kind,
            name,
            digest,
            tag: tag_of(reference),
            reference: Some(reference.as_str()),
            media_type: content_type.as_deref(),
            size: Some(*size),
        })
        .collect();
    for spec in &specs {
        events::before(app, who, spec).await?;
    }
    let put = {
        let _write = req.clock.hold();
        reg.put_manifest(name, reference, content_type.as_deref(), body, rule)
            .await?
    };
    for spec in &specs {
        events::after(app, who, spec).await;
    }
    let mut resp = Response::new(201)
        .header("Location", format!("/v2/{name}/manifests/{}", put.digest))
        .header("Docker-Content-Digest", put.digest.to_string());
    if let Some(subject) = put.subject {
        resp = resp.header("OCI-Subject", subject.to_string());
    }
    Ok(resp)
}

async fn delete(
    app: &App,
    name: &RepoName,
    reference: &Reference,
    who: &Who<'_>,
) -> Result<Response> {
    let reg = &app.registry;
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
            let meta = match events::wanted(app) {
                true => Some(reg.manifest_meta(name, reference).await?),
                false => None,
            };
            let spec = meta.as_ref().map(|(digest, media_type, size)| Spec {
                kind: EventKind::ManifestDelete,
                name,
                digest,
                tag: None,
                reference: Some(reference.as_str()),
                media_type: Some(media_type),
                size: Some(*size),
            });
            crate::failpoint::pause("immutable-delete-after-precheck").await;
            if let Some(spec) = &spec {
                events::before(app, who, spec).await?;
            }
            if rules.is_empty() {
                reg.delete_manifest(name, d).await?;
            } else {
                // Checked again, in one conditional step with the removal: a push may have
                // created an immutable tag since the check above.
                let immutable = |t: &str| rules.is_immutable(name.as_str(), t);
                reg.delete_manifest_unless_immutable(name, d, &immutable)
                    .await?;
            }
            if let Some(spec) = &spec {
                events::after(app, who, spec).await;
            }
        }
        Reference::Tag(t) => {
            if rules.is_immutable(name.as_str(), t.as_str()) {
                reg.resolve_tag(name, t)
                    .await?
                    .ok_or_else(|| Error::ManifestUnknown("manifest unknown".into()))?;
                return Err(immutable_conflict(name, t.as_str(), "it cannot be deleted"));
            }
            let digest = match events::wanted(app) {
                true => Some(
                    reg.resolve_tag(name, t)
                        .await?
                        .ok_or_else(|| Error::ManifestUnknown("manifest unknown".into()))?,
                ),
                false => None,
            };
            let spec = digest.as_ref().map(|digest| Spec {
                kind: EventKind::TagDelete,
                name,
                digest,
                tag: Some(t.as_str()),
                reference: Some(t.as_str()),
                media_type: None,
                size: None,
            });
            if let Some(spec) = &spec {
                events::before(app, who, spec).await?;
            }
            reg.delete_tag(name, t).await?;
            if let Some(spec) = &spec {
                events::after(app, who, spec).await;
            }
        }
    }
    Ok(Response::new(202))
}
