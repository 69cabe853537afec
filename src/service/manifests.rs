//! Manifests: get and head (through the pull-through cache where mirrored), put, delete by
//! digest or tag, and the mirror's fill. Each with its events, pull records and
//! immutability rules; the writes with their audit records.

use super::audit;
use super::events::{self, Spec};
use super::{Caller, Service};
use crate::error::{Error, Result};
use crate::events::{Actor, EventKind};
use crate::future::cold;
use crate::mirror::MirrorNs;
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};
use crate::registry::manifests::{immutable_conflict, PutManifest, StoredManifest, TagRule};

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

/// A manifest as stored, for a GET: refreshed from the upstream first in a mirror; the pull
/// is recorded for retention and eviction and sent as a `manifest.pull` event.
#[tracing::instrument(target = "origin::span", name = "manifests.get", skip_all)]
pub async fn get(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    reference: &Reference,
    mirror: Option<&MirrorNs>,
) -> Result<StoredManifest> {
    let reg = &svc.registry;
    if let Some(ns) = mirror {
        cold(crate::mirror::refresh_manifest(svc, ns, name, reference)).await?;
    }
    let m = reg.get_manifest(name, reference).await?;
    if let Some(ns) = mirror {
        cold(crate::mirror::note_pulled(
            &svc.mirrors,
            reg,
            ns,
            name,
            &m.digest,
        ))
        .await;
    }
    // Coalesced: a storage write at most once per manifest per node per interval.
    if svc.live.peek(|l| l.retention.applies(name.as_str())) && svc.pulls.due(name, &m.digest) {
        if let Err(e) = reg.record_pull(name, &m.digest).await {
            e.log_cause();
            tracing::warn!(error = %e.client_message(), "could not record a pull");
        }
    }
    if events::wanted(svc) {
        let spec = Spec {
            kind: EventKind::ManifestPull,
            name,
            digest: &m.digest,
            tag: tag_of(reference),
            reference: Some(reference.as_str()),
            media_type: Some(&m.media_type),
            size: Some(m.bytes.len() as u64),
        };
        let actor = events::client(caller);
        events::before(svc, &actor, &spec).await?;
        events::after(svc, &actor, &spec).await;
    }
    Ok(m)
}

/// A manifest's digest, media type and size, for a HEAD (refreshed first in a mirror).
#[tracing::instrument(target = "origin::span", name = "manifests.head", skip_all)]
pub async fn head(
    svc: &Service,
    name: &RepoName,
    reference: &Reference,
    mirror: Option<&MirrorNs>,
) -> Result<(Digest, String, u64)> {
    if let Some(ns) = mirror {
        cold(crate::mirror::refresh_manifest(svc, ns, name, reference)).await?;
    }
    svc.registry.manifest_meta(name, reference).await
}

/// Stores a pushed manifest under `reference`: `manifest.push` and, by tag, `tag.create`,
/// whose `required` webhooks are asked before anything is stored, then the namespace's
/// quota (a new manifest's bytes and count; settled after the store). An immutable tag that
/// names another manifest is a conflict. Audited with the digest, whatever came of it.
#[tracing::instrument(target = "origin::span", name = "manifests.put", skip_all)]
pub async fn put(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    reference: &Reference,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<PutManifest> {
    super::space::ensure(svc)?;
    let rule = match reference {
        Reference::Tag(t)
            if svc
                .live
                .peek(|l| l.immutable.is_immutable(name.as_str(), t.as_str())) =>
        {
            TagRule::Immutable
        }
        _ => TagRule::Mutable,
    };
    // The events of this push, known before it is stored (for `required` webhooks), and
    // the digest its audit record names if it fails: hashed for the trail alone only within
    // the budget for work on a core (a larger refused manifest's record has no digest).
    let audited = audit::wanted(svc);
    let hashed_for_audit = audited && body.len() as u64 <= super::uploads::SMALL_BLOB_BYTES_MAX;
    let planned = match events::wanted(svc) || hashed_for_audit {
        true => {
            let algorithm = match reference {
                Reference::Digest(d) => d.algorithm(),
                Reference::Tag(_) => Algorithm::Sha256,
            };
            Some((Digest::of(algorithm, &body), body.len() as u64))
        }
        false => None,
    };
    let specs = push_specs(name, reference, content_type, planned.as_ref());
    let actor = match specs.is_empty() {
        true => None,
        false => Some(events::client(caller)),
    };
    let stored = async {
        if let Some(actor) = &actor {
            for spec in &specs {
                events::before(svc, actor, spec).await?;
            }
        }
        let _write = caller.clock.hold();
        let held = super::quota::Held::default();
        let gated = async |digest: &Digest, size| {
            super::quota::reserve(svc, &held, name, digest, size, true).await
        };
        let stored = svc
            .registry
            .put_manifest_gated(name, reference, content_type, body, rule, gated)
            .await;
        super::quota::settle(svc, caller, held, name).await;
        stored
    }
    .await;
    if audited {
        let digest = match &stored {
            Ok(put) => Some(&put.digest),
            Err(_) => planned.as_ref().map(|(d, _)| d),
        };
        let write = audit::Write {
            reference: tag_of(reference),
            digest,
            ..audit::Write::new(audit::MANIFEST_PUT, name)
        };
        audit::written(svc, caller, &write, &stored);
    }
    let put = stored?;
    if let Some(actor) = &actor {
        for spec in &specs {
            events::after(svc, actor, spec).await;
        }
    }
    let clock = Some(caller.clock);
    super::replication::pushed(svc, clock, name, reference, &put.digest).await?;
    Ok(put)
}

/// The events of a manifest stored under `reference`: `manifest.push`, and `tag.create` by
/// tag. None without a digest (no webhook wants them).
fn push_specs<'a>(
    name: &'a RepoName,
    reference: &'a Reference,
    media_type: Option<&'a str>,
    stored: Option<&'a (Digest, u64)>,
) -> Vec<Spec<'a>> {
    let Some((digest, size)) = stored else {
        return Vec::new();
    };
    let kinds: &[EventKind] = match reference {
        Reference::Tag(_) => &[EventKind::ManifestPush, EventKind::TagCreate],
        Reference::Digest(_) => &[EventKind::ManifestPush],
    };
    kinds
        .iter()
        .map(|&kind| Spec {
            kind,
            name,
            digest,
            tag: tag_of(reference),
            reference: Some(reference.as_str()),
            media_type,
            size: Some(*size),
        })
        .collect()
}

/// Stores a manifest fetched from a mirror's upstream, with the events of a push by the
/// registry itself (actor `mirror`). `required` webhooks are asked first and may refuse
/// the fill (`Error::Refused`, nothing is stored).
#[tracing::instrument(target = "origin::span", name = "manifests.fill", skip_all)]
pub async fn fill(
    svc: &Service,
    name: &RepoName,
    reference: &Reference,
    media_type: Option<&str>,
    body: Vec<u8>,
) -> Result<PutManifest> {
    let planned = match events::wanted(svc) {
        true => {
            let digest = match reference {
                Reference::Digest(d) => d.clone(),
                Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
            };
            Some((digest, body.len() as u64))
        }
        false => None,
    };
    let specs = push_specs(name, reference, media_type, planned.as_ref());
    let stored = async {
        for spec in &specs {
            events::before(svc, &Actor::Mirror, spec).await?;
        }
        svc.registry
            .put_manifest_mirrored(name, reference, media_type, body)
            .await
    }
    .await;
    let write = audit::Write {
        reference: tag_of(reference),
        digest: stored.as_ref().ok().map(|put| &put.digest),
        ..audit::Write::new(audit::MANIFEST_PUT, name)
    };
    audit::done_by(svc, "mirror", &write, &stored);
    let put = stored?;
    for spec in &specs {
        events::after(svc, &Actor::Mirror, spec).await;
    }
    // A fill is answered to a puller, not a pusher: a target's failure is the job's to retry.
    if let Err(e) = super::replication::pushed(svc, None, name, reference, &put.digest).await {
        tracing::warn!(error = %e.client_message(), repository = %name, "replication of a mirror fill");
    }
    Ok(put)
}

/// Deletes a manifest (by digest) or a tag, with its audit record. Storage writes and
/// `required` webhooks (each with a deadline of its own) hold the request's deadline: a
/// delete is not cut half-way.
#[tracing::instrument(target = "origin::span", name = "manifests.delete", skip_all)]
pub async fn delete(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    reference: &Reference,
) -> Result<()> {
    let _write = caller.clock.hold();
    let (result, write) = match reference {
        Reference::Digest(d) => (
            delete_manifest(svc, caller, name, d).await,
            audit::Write {
                digest: Some(d),
                ..audit::Write::new(audit::MANIFEST_DELETE, name)
            },
        ),
        Reference::Tag(t) => (
            delete_tag(svc, caller, name, t).await,
            audit::Write {
                reference: Some(t.as_str()),
                ..audit::Write::new(audit::TAG_DELETE, name)
            },
        ),
    };
    audit::written(svc, caller, &write, &result);
    result
}

async fn delete_manifest(
    svc: &Service,
    caller: &Caller<'_>,
    name: &RepoName,
    d: &Digest,
) -> Result<()> {
    let reg = &svc.registry;
    let live = svc.live.get();
    let rules = &live.immutable;
    let immutable = |t: &str| rules.is_immutable(name.as_str(), t);
    if !rules.is_empty() {
        if let Some(tag) = reg.immutable_tag_of(name, d, immutable).await? {
            return Err(immutable_conflict(
                name,
                &tag,
                &format!("the manifest {d} it names cannot be deleted"),
            ));
        }
    }
    let reference = Reference::Digest(d.clone());
    let meta = match events::wanted(svc) {
        true => Some(reg.manifest_meta(name, &reference).await?),
        false => None,
    };
    let spec = meta.as_ref().map(|(digest, media_type, size)| Spec {
        kind: EventKind::ManifestDelete,
        name,
        digest,
        tag: None,
        reference: Some(d.as_str()),
        media_type: Some(media_type),
        size: Some(*size),
    });
    let actor = spec.as_ref().map(|_| events::client(caller));
    crate::failpoint::pause("immutable-delete-after-precheck").await;
    if let (Some(spec), Some(actor)) = (&spec, &actor) {
        events::before(svc, actor, spec).await?;
    }
    if rules.is_empty() {
        reg.delete_manifest(name, d).await?;
    } else {
        // Checked again, in one conditional step with the removal: a push may have created
        // an immutable tag since the check above.
        reg.delete_manifest_unless_immutable(name, d, &immutable)
            .await?;
    }
    if let (Some(spec), Some(actor)) = (&spec, &actor) {
        events::after(svc, actor, spec).await;
    }
    let targets = &svc.live.get().replication;
    super::replication::deleted(reg, targets, name, None, d).await?;
    Ok(())
}

async fn delete_tag(svc: &Service, caller: &Caller<'_>, name: &RepoName, t: &Tag) -> Result<()> {
    let reg = &svc.registry;
    let unknown = || Error::ManifestUnknown("manifest unknown".into());
    if svc
        .live
        .peek(|l| l.immutable.is_immutable(name.as_str(), t.as_str()))
    {
        reg.resolve_tag(name, t).await?.ok_or_else(unknown)?;
        return Err(immutable_conflict(name, t.as_str(), "it cannot be deleted"));
    }
    let replicated = !svc.live.peek(|l| l.replication.is_empty());
    let digest = match events::wanted(svc) || replicated {
        true => Some(reg.resolve_tag(name, t).await?.ok_or_else(unknown)?),
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
    let actor = spec.as_ref().map(|_| events::client(caller));
    if let (Some(spec), Some(actor)) = (&spec, &actor) {
        events::before(svc, actor, spec).await?;
    }
    reg.delete_tag(name, t).await?;
    if let (Some(spec), Some(actor)) = (&spec, &actor) {
        events::after(svc, actor, spec).await;
    }
    if let (true, Some(d)) = (replicated, &digest) {
        let targets = &svc.live.get().replication;
        super::replication::deleted(reg, targets, name, Some(t.as_str()), d).await?;
    }
    Ok(())
}
