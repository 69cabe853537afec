//! Events of client requests: who did what, handed to `crate::events` before and after the
//! operation. With no webhook configured every call here is one check and a return.

use std::net::IpAddr;

use crate::app::App;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::events::{Actor, Event, EventKind, Phase};
use crate::oci::{Digest, RepoName};

/// What a handler knows about an event.
pub struct Spec<'a> {
    pub kind: EventKind,
    pub name: &'a RepoName,
    pub digest: &'a Digest,
    pub tag: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub size: Option<u64>,
}

/// The client behind a request.
pub struct Who<'a> {
    pub identity: &'a Identity,
    pub ip: IpAddr,
}

fn actor(who: &Who<'_>) -> Actor {
    Actor::Client {
        id: who.identity.id.clone(),
        username: who.identity.username.clone(),
        ip: who.ip,
    }
}

async fn send(app: &App, who: &Who<'_>, spec: &Spec<'_>, phase: Phase) -> Result<()> {
    send_as(app, &actor(who), spec, phase).await
}

async fn send_as(app: &App, actor: &Actor, spec: &Spec<'_>, phase: Phase) -> Result<()> {
    let live = app.live.get();
    let digest = spec.digest.as_str();
    let event = Event {
        kind: spec.kind,
        repository: spec.name.as_str(),
        digest,
        tag: spec.tag,
        reference: spec.reference,
        media_type: spec.media_type,
        size: spec.size,
        actor,
    };
    crate::events::send(&live.webhooks, &app.events, &event, phase)
        .await
        .map_err(|e| Error::Refused(e.to_string()))
}

/// True when an event could be sent at all (handlers skip their extra lookups otherwise).
pub fn wanted(app: &App) -> bool {
    app.live.has_webhooks()
}

/// `required` webhooks, before the operation takes effect: an error fails the operation.
pub async fn before(app: &App, who: &Who<'_>, spec: &Spec<'_>) -> Result<()> {
    if !app.live.has_webhooks() {
        return Ok(());
    }
    send(app, who, spec, Phase::Before).await
}

/// `optional` and `async` webhooks, after the operation: failures are only logged.
pub async fn after(app: &App, who: &Who<'_>, spec: &Spec<'_>) {
    if !app.live.has_webhooks() {
        return;
    }
    let _ = send(app, who, spec, Phase::After).await;
}

/// `required` webhooks for an operation of the registry's own (a mirror fill), before it
/// takes effect: an error fails it.
pub async fn before_as(app: &App, actor: &Actor, spec: &Spec<'_>) -> Result<()> {
    if !app.live.has_webhooks() {
        return Ok(());
    }
    send_as(app, actor, spec, Phase::Before).await
}

/// `optional` and `async` webhooks for an operation of the registry's own, after it.
pub async fn after_as(app: &App, actor: &Actor, spec: &Spec<'_>) {
    if !app.live.has_webhooks() {
        return;
    }
    let _ = send_as(app, actor, spec, Phase::After).await;
}
