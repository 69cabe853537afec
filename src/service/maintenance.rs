//! The registry's own operations: a GC pass, a retention pass and the mirror's eviction,
//! each with the events and audit records of what it deleted. The same functions serve the
//! background passes of a running server and `origin gc` / `origin scrub --retention`.

use std::time::Duration;

use super::audit::{self, Write};
use super::events::{self, Spec};
use crate::error::Result;
use crate::events::{Actor, EventKind, Queue};
use crate::metrics::{Metrics, METRICS};
use crate::oci::{Digest, RepoName};
use crate::registry::gc::GcReport;
use crate::registry::retention::Deletion;
use crate::registry::Registry;
use crate::reload::Live;

/// What a pass works with: the storage, the rules and webhooks of this moment, the queue
/// of `async` event deliveries and the audit trail's.
pub struct Pass<'a> {
    pub registry: &'a Registry,
    pub live: &'a Live,
    pub queue: &'a Queue,
    pub audit: &'a crate::audit::Log,
}

/// One GC pass (blobs nothing links, and with `gc.remove_untagged` manifests that lost
/// their last tag): a `manifest.delete` event and audit record (actor `gc`) for each
/// manifest removed, a `blob.delete` audit record for each blob reclaimed. A pass that
/// fails is counted (`origin_gc_failures_total`), for alerts.
#[tracing::instrument(target = "origin::span", name = "maintenance.gc", skip_all)]
pub async fn gc(p: &Pass<'_>, grace: Duration, dry_run: bool) -> Result<GcReport> {
    let report = match p.registry.gc_pass(grace, dry_run).await {
        Ok(report) => report,
        Err(e) => {
            if !dry_run {
                Metrics::add(&METRICS.gc_failures, 1);
            }
            return Err(e);
        }
    };
    if dry_run {
        return Ok(report);
    }
    // Reservations of writes that never settled (a crash) expire here at the latest.
    for q in p.live.quotas.all() {
        if let Err(e) = p.registry.quota_expire(&q.namespace).await {
            e.log_cause();
            tracing::warn!(namespace = q.label(), error = %e.client_message(), "could not expire quota reservations");
        }
    }
    removed_events(p, &report.untagged_removed, &Actor::Gc, "gc").await;
    for (digest, _) in &report.removed {
        audit::reclaimed(p, digest);
    }
    Metrics::add(&METRICS.gc_passes, 1);
    Metrics::add(&METRICS.gc_blobs_reclaimed, report.blobs_removed as u64);
    Metrics::add(&METRICS.gc_bytes_reclaimed, report.bytes_removed);
    Metrics::add(
        &METRICS.gc_manifests_removed,
        report.manifests_removed as u64,
    );
    let micros = report.duration.as_micros() as u64;
    METRICS
        .gc_last_pass_micros
        .store(micros, std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

/// Evicts what each mirror has not served for its `evict_after`: a `manifest.delete`
/// event and audit record (actor `mirror`) for each manifest evicted.
#[tracing::instrument(target = "origin::span", name = "maintenance.evict", skip_all)]
pub async fn evict(p: &Pass<'_>, dry_run: bool) -> Result<Vec<(RepoName, Digest)>> {
    let evicted = crate::mirror::evict(p.registry, &p.live.mirrors, dry_run).await?;
    if !dry_run {
        removed_events(p, &evicted, &Actor::Mirror, "mirror").await;
    }
    Ok(evicted)
}

/// One retention pass with the rules of `p.live`: a `manifest.delete` and a `tag.delete`
/// for each of its tags (actor `retention`) for each manifest deleted, as events and audit
/// records. Returns what was
/// deleted (or would be).
#[tracing::instrument(target = "origin::span", name = "maintenance.retention", skip_all)]
pub async fn retention(p: &Pass<'_>, dry_run: bool) -> Result<Vec<Deletion>> {
    let reg = p.registry;
    let now = reg.clock.unix_secs() as i64;
    let deleted = reg
        .retention_pass(&p.live.retention, &p.live.immutable, now, dry_run)
        .await?;
    if dry_run {
        return Ok(deleted);
    }
    for d in &deleted {
        let targets = &p.live.replication;
        for tag in &d.tags {
            let tag = Some(tag.as_str());
            super::replication::deleted_by_pass(reg, targets, &d.repository, tag, &d.digest).await;
        }
        super::replication::deleted_by_pass(reg, targets, &d.repository, None, &d.digest).await;
    }
    for d in &deleted {
        let write = Write {
            digest: Some(&d.digest),
            ..Write::new(audit::MANIFEST_DELETE, &d.repository)
        };
        audit::done(p, "retention", &write);
        for tag in &d.tags {
            let write = Write {
                reference: Some(tag),
                ..Write::new(audit::TAG_DELETE, &d.repository)
            };
            audit::done(p, "retention", &write);
        }
    }
    if p.live.webhooks.is_empty() {
        return Ok(deleted);
    }
    for d in &deleted {
        let manifest = Spec {
            kind: EventKind::ManifestDelete,
            name: &d.repository,
            digest: &d.digest,
            tag: d.tags.first().map(String::as_str),
            reference: Some(d.digest.as_str()),
            media_type: Some(&d.media_type),
            size: Some(d.size),
        };
        events::done(&p.live.webhooks, p.queue, &Actor::Retention, &manifest).await;
        for tag in &d.tags {
            let tag_delete = Spec {
                kind: EventKind::TagDelete,
                tag: Some(tag),
                reference: Some(tag),
                ..manifest
            };
            events::done(&p.live.webhooks, p.queue, &Actor::Retention, &tag_delete).await;
        }
    }
    Ok(deleted)
}

/// `manifest.delete` events and audit records (actor `who`) for manifests the registry
/// removed itself.
async fn removed_events(
    p: &Pass<'_>,
    removed: &[(RepoName, Digest)],
    actor: &Actor,
    who: &'static str,
) {
    for (name, d) in removed {
        let write = Write {
            digest: Some(d),
            ..Write::new(audit::MANIFEST_DELETE, name)
        };
        audit::done(p, who, &write);
        let targets = &p.live.replication;
        super::replication::deleted_by_pass(p.registry, targets, name, None, d).await;
    }
    if p.live.webhooks.is_empty() {
        return;
    }
    for (name, d) in removed {
        let spec = Spec {
            kind: EventKind::ManifestDelete,
            name,
            digest: d,
            tag: None,
            reference: Some(d.as_str()),
            media_type: None,
            size: None,
        };
        events::done(&p.live.webhooks, p.queue, actor, &spec).await;
    }
}
