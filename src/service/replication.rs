//! Replication of what took effect, for every operation that pushes or deletes a manifest or
//! a tag (client pushes and deletes, mirror fills, and the GC, retention and eviction
//! passes). With no target configured every call here is one check and a return.
//!
//! `async` targets get a job recorded in storage before the operation answers; `sync`
//! targets get the copy itself, in the request, and a failure fails the push.

use super::Service;
use crate::config::ReplicationMode;
use crate::error::{Error, Result};
use crate::http::conn::RequestClock;
use crate::oci::{Digest, Reference, RepoName};
use crate::registry::Registry;
use crate::replication::job::{millis, node_id, Job, Kind};
use crate::replication::{copy, queue, status, Targets};

fn tag_of(reference: &Reference) -> Option<&str> {
    match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    }
}

/// After a manifest was stored under `reference` (as `digest`): a job for each `async`
/// target, the copy for each `sync` one. A `sync` copy runs under a job recorded first and
/// claimed by this process (removed when the copy succeeds), so a copy that fails, or a
/// process that dies in it, leaves the job to the workers: the target still converges. A
/// `sync` target that fails fails the push. `clock` is the request's: its deadline does not
/// cut the copy (each exchange with the target has the target's `timeout`).
pub async fn pushed(
    svc: &Service,
    clock: Option<&RequestClock>,
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
        let _write = clock.map(RequestClock::hold);
        if t.mode == ReplicationMode::Async {
            queue::enqueue(&reg.store, &t.name, &job).await?;
            continue;
        }
        let now = job.created_ms;
        let claimed = queue::enqueue_claimed(&reg.store, &t.name, job, node_id(), now).await?;
        let copied =
            crate::future::cold(copy::push(reg, &t, name, reference, Some(&claimed))).await;
        if copied.is_ok() {
            if let Err(e) = claimed.done(&reg.store).await {
                // The job runs once more (a copy of what the target has: HEADs only).
                e.log_cause();
            }
        }
        if let Err(e) = copied {
            let now = millis(reg.clock.now());
            let message = e.to_string();
            let recorded = claimed.failed(&reg.store, &message, t.max_retries, t.backoff_max, now);
            if let Err(e) = recorded.await {
                e.log_cause();
            }
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

/// The report as JSON: the queue per push target (every configured target, and every
/// target with jobs in storage), and each pull target's record: what `origin replication status --json` prints, served to operators on
/// the ops listener. Read from storage, so it covers every node's work.
pub async fn status_json(svc: &Service) -> Result<Vec<u8>> {
    let (configured, pulls): (Vec<String>, Vec<String>) = svc.live.peek(|l| {
        let r = &l.replication;
        (
            r.all().iter().map(|t| t.name.clone()).collect(),
            r.pulls().iter().map(|p| p.name.clone()).collect(),
        )
    });
    let now = millis(svc.registry.clock.now());
    let report = status::read(&svc.registry.store, &configured, &pulls, now).await?;
    Ok(status::to_json(&report, now))
}
