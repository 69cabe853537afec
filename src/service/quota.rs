//! Quotas per namespace, as the operations that add content use them: a reservation taken
//! inside the operation's gate (content verified and held, nothing committed yet) and
//! settled once the registry call returned, whatever came of it; the `quota.warning` event
//! when a settle crosses the namespace's warning ratio. The protocol itself, in storage, is
//! `registry/quota/`.
//!
//! A repository that no quota meters costs one lookup in the live configuration and no
//! storage request.

use std::cell::RefCell;
use std::sync::Arc;

use super::{Caller, Service};
use crate::error::Result;
use crate::events::{Event, EventKind, Phase, QuotaNote};
use crate::oci::{Digest, RepoName};
use crate::registry::quota::{Quota, Reservation};

/// What an operation holds between its gate and its end: the reservation, if one was taken.
#[derive(Default)]
pub struct Held(RefCell<Option<(Arc<Quota>, Reservation)>>);

/// The quota that meters `name`, if any.
pub fn of(svc: &Service, name: &RepoName) -> Option<Arc<Quota>> {
    svc.live.peek(|l| l.quotas.of(name.as_str()).cloned())
}

/// Checks and reserves `size` bytes (and a manifest) for `digest` in `name`'s namespace:
/// refused with `QuotaExceeded` when it does not fit. Nothing is reserved when no quota
/// meters `name` or the namespace counts `digest` already.
pub async fn reserve(
    svc: &Service,
    held: &Held,
    name: &RepoName,
    digest: &Digest,
    size: u64,
    manifest: bool,
) -> Result<()> {
    let Some(q) = of(svc, name) else {
        return Ok(());
    };
    if let Some(r) = svc
        .registry
        .quota_reserve(&q, digest, size, manifest)
        .await?
    {
        *held.0.borrow_mut() = Some((q, r));
    }
    Ok(())
}

/// Settles what `held` reserved, once the operation is over (committed or not): a failure
/// here is logged and leaves the reservation to expire (counted until then, never under).
pub async fn settle(svc: &Service, caller: &Caller<'_>, held: Held, name: &RepoName) {
    let Some((q, r)) = held.0.into_inner() else {
        return;
    };
    match svc.registry.quota_settle(&q, &r).await {
        Ok(Some(crossing)) => {
            tracing::warn!(
                namespace = q.label(),
                bytes = crossing.bytes,
                manifests = crossing.manifests,
                "quota warning ratio crossed"
            );
            if !svc.live.has_webhooks() {
                return;
            }
            let note = QuotaNote {
                namespace: &q.namespace,
                usage_bytes: crossing.bytes,
                usage_manifests: crossing.manifests,
                quota_bytes: q.bytes,
                quota_manifests: q.manifests,
                warn_ratio: q.warn_ratio,
            };
            let actor = super::events::client(caller);
            let event = Event {
                kind: EventKind::QuotaWarning,
                repository: name.as_str(),
                digest: r.digest.as_str(),
                tag: None,
                reference: None,
                media_type: None,
                size: None,
                actor: &actor,
                quota: Some(note),
                replication: None,
            };
            let live = svc.live.get();
            let _ = crate::events::send(&live.webhooks, &svc.events, &event, Phase::All).await;
        }
        Ok(None) => {}
        Err(e) => {
            e.log_cause();
            tracing::warn!(namespace = q.label(), error = %e.client_message(), "could not settle a quota reservation; it expires after gc.debris_after");
        }
    }
}
