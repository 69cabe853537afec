//! Manifests through the cache: by digest once, by tag with freshness and revalidation.

use super::*;

/// Makes the local copy of a mirrored manifest current before it is served: fetches what
/// is missing, revalidates a stale tag, and falls back to the cached tag when no upstream
/// answers. Afterwards the normal manifest path serves it.
pub async fn refresh_manifest<H: Host>(
    host: &H,
    ns: &MirrorNs,
    name: &RepoName,
    reference: &Reference,
) -> Result<()> {
    let reg = host.registry();
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
            host.fill_manifest(name, reference, media_type.as_deref(), body)
                .await?;
            if ns.evict_after.is_some() {
                reg.note_pulled(name, d).await?;
            }
            Ok(())
        }
        Reference::Tag(tag) => {
            let local = reg.resolve_tag(name, tag).await?;
            // An immutable tag never changes: once cached it is served without asking upstream.
            let immutable = host.is_immutable(name, tag.as_str());
            if local.is_some() && (immutable || host.mirrors().is_fresh(ns, name, tag)) {
                return Ok(());
            }
            match revalidate_tag(host, ns, name, tag, local.as_ref()).await {
                Ok(()) => {
                    host.mirrors().mark_fresh(name, tag);
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
async fn revalidate_tag<H: Host>(
    host: &H,
    ns: &MirrorNs,
    name: &RepoName,
    tag: &Tag,
    local: Option<&Digest>,
) -> Result<()> {
    let reg = host.registry();
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
    let put = host
        .fill_manifest(name, &reference, media_type.as_deref(), body)
        .await?;
    if ns.evict_after.is_some() {
        reg.note_pulled(name, &put.digest).await?;
    }
    tracing::info!(repository = %name, tag = %tag, digest = %put.digest, "mirrored tag updated from upstream");
    Ok(())
}

/// The digest an upstream names for `reference` (a HEAD); None when none has it.
pub async fn upstream_digest(
    ns: &MirrorNs,
    upstream_name: &str,
    reference: &str,
) -> Result<Option<Digest>> {
    let path = format!("manifests/{reference}");
    let accept = [("Accept", MANIFEST_ACCEPT.to_string())];
    let Some(r) = first_found(ns, "HEAD", upstream_name, &path, &accept).await? else {
        return Ok(None);
    };
    let digest = r.header("docker-content-digest").map(Digest::parse);
    r.drain().await;
    match digest {
        Some(Ok(d)) => Ok(Some(d)),
        _ => Err(upstream_error(format!(
            "HEAD of manifest {reference} answered without a valid Docker-Content-Digest"
        ))),
    }
}

/// GETs a manifest (at most 4 MiB) from the first upstream that has it: (media type,
/// bytes, digest header).
#[tracing::instrument(target = "origin::span", name = "mirror.fetch_manifest", skip_all)]
pub async fn fetch_manifest(
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
