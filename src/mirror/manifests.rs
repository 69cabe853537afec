//! Manifests through the cache: by digest once, by tag with freshness and revalidation.

use super::*;

/// Makes the local copy of a mirrored manifest current before it is served: fetches what
/// is missing, revalidates a stale tag, and falls back to the cached tag when no upstream
/// answers. Afterwards the normal manifest path serves it.
pub async fn refresh_manifest(
    app: &App,
    ns: &MirrorNs,
    name: &RepoName,
    reference: &Reference,
) -> Result<()> {
    let reg = &app.registry;
    let upstream_name = ns.upstream_name(name.as_str());
    match reference {
        Reference::Digest(d) => {
            if reg.manifest_meta(name, reference).await.is_ok() {
                return Ok(());
            }
            let (media_type, body, _) = fetch_manifest(ns, upstream_name, d.as_str()).await?;
            let actual = Digest::of(d.algorithm(), &body);
            if &actual != d {
                return Err(upstream_error(format!(
                    "manifest {d} arrived with digest {actual}"
                )));
            }
            fill(app, name, reference, media_type.as_deref(), body).await?;
            if ns.evict_after.is_some() {
                reg.note_pulled(name, d).await?;
            }
            Ok(())
        }
        Reference::Tag(tag) => {
            let local = reg.resolve_tag(name, tag).await?;
            // An immutable tag never changes: once cached it is served without asking upstream.
            let immutable = app
                .live
                .peek(|l| l.immutable.is_immutable(name.as_str(), tag.as_str()));
            if local.is_some() && (immutable || app.mirrors.is_fresh(ns, name, tag)) {
                return Ok(());
            }
            match revalidate_tag(app, ns, name, tag, local.as_ref()).await {
                Ok(()) => {
                    app.mirrors.mark_fresh(name, tag);
                    Ok(())
                }
                Err(e) if e.is_not_found() => Err(e),
                Err(e) => match local {
                    Some(d) => {
                        METRICS.mirror_stale_served.fetch_add(1, Relaxed);
                        e.log_cause();
                        tracing::warn!(
                            repository = %name, tag = %tag, digest = %d, error = %e.client_message(),
                            "upstream unreachable: serving the cached tag"
                        );
                        Ok(())
                    }
                    None => Err(e),
                },
            }
        }
    }
}

/// Checks a tag upstream: HEAD first, GET only when the digest differs from `local`.
async fn revalidate_tag(
    app: &App,
    ns: &MirrorNs,
    name: &RepoName,
    tag: &Tag,
    local: Option<&Digest>,
) -> Result<()> {
    let reg = &app.registry;
    let upstream_name = ns.upstream_name(name.as_str());
    if let Some(local) = local {
        let mut last = None;
        for up in &ns.upstreams {
            let path = format!("manifests/{tag}");
            let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
            match up.request("HEAD", upstream_name, &path, &accept).await {
                Ok(r) if r.status == 200 => {
                    if r.header("docker-content-digest") == Some(local.as_str()) {
                        return Ok(());
                    }
                    break;
                }
                Ok(r) if r.status == 404 => {
                    last = Some(Error::ManifestUnknown("manifest unknown upstream".into()))
                }
                Ok(r) => {
                    last = Some(upstream_error(format!(
                        "{} answered {}",
                        up.url.authority(),
                        r.status
                    )))
                }
                Err(e) => last = Some(upstream_error(e)),
            }
            if last.as_ref().is_some_and(Error::is_not_found) {
                continue;
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
    }
    let (media_type, body, header_digest) = fetch_manifest(ns, upstream_name, tag.as_str()).await?;
    if let Some(hd) = header_digest.as_deref().and_then(|h| Digest::parse(h).ok()) {
        let actual = Digest::of(hd.algorithm(), &body);
        if actual != hd {
            return Err(upstream_error(format!(
                "manifest for tag {tag} has digest {actual}, upstream said {hd}"
            )));
        }
    }
    let reference = Reference::Tag(tag.clone());
    let put = fill(app, name, &reference, media_type.as_deref(), body).await?;
    if ns.evict_after.is_some() {
        reg.note_pulled(name, &put.digest).await?;
    }
    tracing::info!(repository = %name, tag = %tag, digest = %put.digest, "mirrored tag updated from upstream");
    Ok(())
}

/// Stores a manifest fetched from an upstream, with the events of a push by the registry
/// itself (actor `mirror`): `manifest.push`, and `tag.create` for a tag. `required` webhooks
/// are asked first and may refuse the fill (`Error::Refused`, nothing is stored).
async fn fill(
    app: &App,
    name: &RepoName,
    reference: &Reference,
    media_type: Option<&str>,
    body: Vec<u8>,
) -> Result<crate::registry::manifests::PutManifest> {
    use crate::api::events::{after_as, before_as, Spec};
    use crate::events::{Actor, EventKind};
    if !crate::api::events::wanted(app) {
        return app
            .registry
            .put_manifest_mirrored(name, reference, media_type, body)
            .await;
    }
    let (digest, tag) = match reference {
        Reference::Digest(d) => (d.clone(), None),
        Reference::Tag(t) => (
            Digest::of(crate::oci::Algorithm::Sha256, &body),
            Some(t.as_str()),
        ),
    };
    let size = body.len() as u64;
    let kinds: &[EventKind] = match tag {
        Some(_) => &[EventKind::ManifestPush, EventKind::TagCreate],
        None => &[EventKind::ManifestPush],
    };
    let specs: Vec<Spec> = kinds
        .iter()
        .map(|&kind| Spec {
            kind,
            name,
            digest: &digest,
            tag,
            reference: Some(reference.as_str()),
            media_type,
            size: Some(size),
        })
        .collect();
    for spec in &specs {
        before_as(app, &Actor::Mirror, spec).await?;
    }
    let put = app
        .registry
        .put_manifest_mirrored(name, reference, media_type, body)
        .await?;
    for spec in &specs {
        after_as(app, &Actor::Mirror, spec).await;
    }
    Ok(put)
}

/// GETs a manifest from the first upstream that has it: (media type, bytes, digest header).
async fn fetch_manifest(
    ns: &MirrorNs,
    upstream_name: &str,
    reference: &str,
) -> Result<(Option<String>, Vec<u8>, Option<String>)> {
    let path = format!("manifests/{reference}");
    let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
    let r = first_found(ns, "GET", upstream_name, &path, &accept)
        .await?
        .ok_or_else(|| Error::ManifestUnknown("manifest unknown upstream".into()))?;
    let media_type = r.header("content-type").map(str::to_owned);
    let digest = r.header("docker-content-digest").map(str::to_owned);
    let body = r
        .bytes(UPSTREAM_MANIFEST_BYTES_MAX)
        .await
        .map_err(|e| upstream_error(e.to_string()))?;
    Ok((media_type, body, digest))
}
