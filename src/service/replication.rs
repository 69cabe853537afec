//! Replication of what took effect, for every operation that pushes or deletes a manifest or
//! a tag (client pushes and deletes, mirror fills, and the GC, retention and eviction
//! passes). With no target configured every call here is one check and a return.
//!
//! `async` targets get a job recorded in storage before the operation answers; `sync`
//! targets get the copy itself, in the request, and a failure fails the push.

use super::Service;
use crate::config::ReplicationMode;
use crate::error::{Error, Result};
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::Registry;
use crate::replication::job::{millis, Job, Kind};
use crate::replication::{copy, queue, Targets};

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

/// After a manifest was stored under `reference` (as `digest`): a job for each `async`
/// target, the copy for each `sync` one. A `sync` target that fails fails the push (an
/// `async` job is then recorded for it too, so the target still converges once it can).
pub async fn pushed(
    svc: &Service,
    name: &RepoName,
    reference: &Reference,
    digest: &Digest,
) -> Result<()> {
    if svc.live.peek(|l| l.replication.is_empty()) {
        return Ok(());
    }
    let live = svc.live.get();
    let reg = &svc.registry;
    let tag = tag_of(reference);
    for t in live.replication.select(name.as_str()) {
        if !t.push || !t.wants_tag(tag) {
            continue;
        }
        let job = Job::new(
            Kind::Push,
            name.as_str(),
            tag,
            digest.as_str(),
            millis(reg.clock.now()),
        );
        if t.mode == ReplicationMode::Async {
            queue::enqueue(&reg.store, &t.name, &job).await?;
            continue;
        }
        if let Err(e) = copy::push(reg, &t, name, reference, None).await {
            queue::enqueue(&reg.store, &t.name, &job).await?;
            tracing::warn!(target = %t.name, repository = %name, reference = reference.as_str(),
                error = %e, "sync replication failed: push refused, job queued");
            return Err(Error::Upstream(format!(
                "replication to {} failed, so the push is not acknowledged (stored here, queued \
                 for the target): {e}",
                t.name
            )));
        }
    }
    Ok(())
}

/// After a tag (`tag` Some) or a manifest was deleted: a job for each target that
/// replicates deletions. Deletions are always queued, whatever the target's mode.
pub async fn deleted(
    reg: &Registry,
    targets: &Targets,
    name: &RepoName,
    tag: Option<&str>,
    digest: &Digest,
) -> Result<()> {
    if targets.is_empty() {
        return Ok(());
    }
    for t in targets.select(name.as_str()) {
        if !t.delete || (tag.is_some() && !t.wants_tag(tag)) {
            continue;
        }
        let job = Job::new(
            Kind::Delete,
            name.as_str(),
            tag,
            digest.as_str(),
            millis(reg.clock.now()),
        );
        queue::enqueue(&reg.store, &t.name, &job).await?;
    }
    Ok(())
}

/// `deleted` for a pass of the registry's own (the deletion is done: a failure to record
/// the job is logged, not returned).
pub async fn deleted_by_pass(
    reg: &Registry,
    targets: &Targets,
    name: &RepoName,
    tag: Option<&str>,
    digest: &Digest,
) {
    if let Err(e) = deleted(reg, targets, name, tag, digest).await {
        e.log_cause();
        tracing::warn!(error = %e.client_message(), repository = %name,
            "could not record a replication job for a deletion");
    }
}
