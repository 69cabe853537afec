//! The events of operations, handed to `crate::events` before and after each takes effect.
//! With no webhook configured every call here is one check and a return.

use super::{Caller, Service};
use crate::error::{Error, Result};
use crate::events::{Actor, Event, EventKind, Phase, Queue, Webhooks};
use crate::oci::{Digest, RepoName};

/// What an operation knows about one of its events.
pub struct Spec<'a> {
    pub kind: EventKind,
    pub name: &'a RepoName,
    pub digest: &'a Digest,
    pub tag: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub size: Option<u64>,
}

impl Spec<'_> {
    fn event<'e>(&'e self, actor: &'e Actor) -> Event<'e> {
        Event {
            kind: self.kind,
            repository: self.name.as_str(),
            digest: self.digest.as_str(),
            tag: self.tag,
            reference: self.reference,
            media_type: self.media_type,
            size: self.size,
            actor,
            quota: None,
            replication: None,
        }
    }
}

/// The client behind a request, as events name it.
pub fn client(caller: &Caller<'_>) -> Actor {
    Actor::Client {
        id: caller.identity.id.clone(),
        username: caller.identity.username.clone(),
        ip: caller.ip,
    }
}

/// True when an event could be sent at all (operations skip their extra lookups otherwise).
pub fn wanted(svc: &Service) -> bool {
    svc.live.has_webhooks()
}

async fn send(svc: &Service, actor: &Actor, spec: &Spec<'_>, phase: Phase) -> Result<()> {
    let live = svc.live.get();
    crate::events::send(&live.webhooks, &svc.events, &spec.event(actor), phase)
        .await
        .map_err(|e| Error::Refused(e.to_string()))
}

/// `required` webhooks, before the operation takes effect: an error fails the operation.
pub async fn before(svc: &Service, actor: &Actor, spec: &Spec<'_>) -> Result<()> {
    if !wanted(svc) {
        return Ok(());
    }
    crate::future::cold(send(svc, actor, spec, Phase::Before)).await
}

/// `optional` and `async` webhooks, after the operation: failures are only logged.
pub async fn after(svc: &Service, actor: &Actor, spec: &Spec<'_>) {
    if !wanted(svc) {
        return;
    }
    let _ = crate::future::cold(send(svc, actor, spec, Phase::After)).await;
}

/// An operation of the registry's own that already took effect (a GC or retention
/// deletion, an eviction): every delivery at once; a `required` webhook cannot refuse it.
pub async fn done(webhooks: &Webhooks, queue: &Queue, actor: &Actor, spec: &Spec<'_>) {
    if webhooks.is_empty() {
        return;
    }
    let event = spec.event(actor);
    let _ = crate::future::cold(crate::events::send(webhooks, queue, &event, Phase::All)).await;
}
