//! The replication worker: a thread with its own runtime (off the request path, like the
//! webhook senders) that scans the queue in storage, claims due jobs up to each target's
//! `concurrency`, and runs them. Every node on the storage runs one; claims keep a job to
//! one node at a time.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::copy::{self, Outcome};
use super::job::{self, Kind};
use super::metrics;
use super::queue::{self, Attempt, Claimed};
use super::reconcile;
use crate::config::IoDriver;
use crate::oci::{Reference, RepoName};
use crate::registry::{layout, Registry};
use crate::reload::{Live, LiveCell, LocalLive};
use crate::storage::Storage;

/// Pause between two scans of the queue while it holds jobs (in backoff, or run by others).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Pause between two scans of an empty queue: the longest a job recorded by another process
/// (another node, `origin gc`) waits to start. A job this process records wakes the worker
/// at once, and an idle node lists the bucket only this often.
pub const IDLE_SCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How often a pausing worker looks for jobs this process recorded (no I/O: a counter).
const WAKE_CHECK: Duration = Duration::from_millis(50);
/// Job keys read per listing call.
const SCAN_PAGE_KEYS: usize = 1000;
/// Job keys looked at in one scan: bounds a scan's time and memory with a huge backlog
/// (the oldest are first, and they are what runs next anyway).
const SCAN_KEYS_MAX: usize = 100_000;
/// Jobs waiting out a backoff whose due time this node remembers (not to read them again
/// before); past this the memory is emptied.
const WAITING_MAX: usize = 100_000;

/// What the worker's jobs share.
struct Ctx {
    registry: Registry,
    live: LocalLive<Live>,
    node: String,
    /// Jobs running on this node, per target.
    running: RefCell<HashMap<String, usize>>,
    /// Keys of the jobs running on this node.
    keys: RefCell<HashSet<String>>,
    /// Jobs in backoff: key -> due (ms).
    waiting: RefCell<HashMap<String, u64>>,
    /// Where `replication.failed` events go (the process's queue of webhook deliveries).
    events: Arc<crate::events::Queue>,
    /// Jobs this node finished: a slot freed wakes the worker to claim the next job at once
    /// (at most every `WAKE_CHECK`), not at its next scan.
    finished: std::cell::Cell<u64>,
    /// Targets whose reconcile pass runs on this node.
    reconciling: RefCell<HashSet<String>>,
    /// Target -> when its next reconcile pass is due (ms), as last read from storage.
    reconcile_due: RefCell<HashMap<String, u64>>,
}

/// Starts the worker thread; it ends when `stopped` returns true.
pub fn start(
    io_driver: IoDriver,
    registry: impl FnOnce() -> Registry + Send + 'static,
    live: Arc<LiveCell<Live>>,
    events: Arc<crate::events::Queue>,
    stopped: impl Fn() -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("origin-replication".into())
        .spawn(move || {
            let rt = match crate::server::build_runtime(io_driver) {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "replication worker: cannot start a runtime");
                    return;
                }
            };
            let ctx = Rc::new(Ctx {
                registry: registry(),
                live: LocalLive::new(live),
                node: job::node_id().to_string(),
                running: RefCell::new(HashMap::new()),
                keys: RefCell::new(HashSet::new()),
                waiting: RefCell::new(HashMap::new()),
                events,
                finished: std::cell::Cell::new(0),
                reconciling: RefCell::new(HashSet::new()),
                reconcile_due: RefCell::new(HashMap::new()),
            });
            rt.block_on(async {
                while !stopped() {
                    let enqueued = queue::enqueued();
                    let finished = ctx.finished.get();
                    let pending = match scan(&ctx).await {
                        Ok(n) => n,
                        Err(e) => {
                            e.log_cause();
                            tracing::warn!(error = %e.client_message(), "replication queue scan failed");
                            1
                        }
                    };
                    if let Err(e) = reconcile_due(&ctx).await {
                        e.log_cause();
                        tracing::warn!(error = %e.client_message(), "replication reconcile check failed");
                    }
                    let pause = if pending > 0 { SCAN_INTERVAL } else { IDLE_SCAN_INTERVAL };
                    let until = std::time::Instant::now() + pause;
                    while std::time::Instant::now() < until
                        && queue::enqueued() == enqueued
                        && ctx.finished.get() == finished
                        && !stopped()
                    {
                        compio::time::sleep(WAKE_CHECK).await;
                    }
                }
                crate::http::client::close_idle();
            });
        })
}

fn now_ms(ctx: &Ctx) -> u64 {
    job::millis(ctx.registry.clock.now())
}

/// One pass over the queue: depth and lag per target, and claims of due jobs. Returns the
/// jobs seen of configured targets.
async fn scan(ctx: &Rc<Ctx>) -> crate::error::Result<u64> {
    let live = ctx.live.get();
    let targets = &live.replication;
    if targets.is_empty() {
        return Ok(0);
    }
    let store = &ctx.registry.store;
    let now = now_ms(ctx);
    let mut depth: HashMap<&str, (u64, u64)> = HashMap::new();
    for t in targets.all() {
        depth.insert(t.name.as_str(), (0, now));
    }
    let mut after: Option<String> = None;
    let mut seen = 0;
    while seen < SCAN_KEYS_MAX {
        let page = store
            .list(layout::REPLICATION_JOBS, after.as_deref(), SCAN_PAGE_KEYS)
            .await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        seen += page.len();
        for key in &page {
            let Some((name, id)) = queue::parse_key(key) else {
                continue;
            };
            let Some(target) = targets.by_name(name) else {
                continue;
            };
            let entry = depth.entry(target.name.as_str()).or_insert((0, now));
            entry.0 += 1;
            entry.1 = entry.1.min(job::created_of_id(id).unwrap_or(now));
            let busy = ctx.running.borrow().get(name).copied().unwrap_or(0);
            if busy >= target.concurrency || ctx.keys.borrow().contains(key) {
                continue;
            }
            if ctx.waiting.borrow().get(key).is_some_and(|due| *due > now) {
                continue;
            }
            match queue::claim(store, key, &ctx.node, now).await? {
                Attempt::Claimed(claimed) => {
                    ctx.waiting.borrow_mut().remove(key);
                    launch(ctx, *claimed);
                }
                Attempt::NotYet(due) => {
                    let mut waiting = ctx.waiting.borrow_mut();
                    if waiting.len() >= WAITING_MAX {
                        waiting.clear();
                    }
                    waiting.insert(key.clone(), due);
                }
                Attempt::Taken => {}
            }
        }
        let full = page.len() == SCAN_PAGE_KEYS;
        after = Some(last);
        if !full {
            break;
        }
    }
    let total = depth.values().map(|(n, _)| n).sum();
    for (name, (n, oldest)) in depth {
        let m = metrics::of(name);
        m.queue_depth.store(n, std::sync::atomic::Ordering::Relaxed);
        let lag = if n == 0 {
            0
        } else {
            now.saturating_sub(oldest) / 1000
        };
        m.lag_seconds
            .store(lag, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(total)
}

/// Starts the reconcile pass of each target that has one due and that this node wins (the
/// record in storage is read only when the due time this node knows of has come).
async fn reconcile_due(ctx: &Rc<Ctx>) -> crate::error::Result<()> {
    let live = ctx.live.get();
    let now = now_ms(ctx);
    for t in live.replication.all() {
        if t.reconcile_interval.is_zero() || ctx.reconciling.borrow().contains(&t.name) {
            continue;
        }
        if ctx
            .reconcile_due
            .borrow()
            .get(&t.name)
            .is_some_and(|due| *due > now)
        {
            continue;
        }
        let turn = reconcile::claim(
            &ctx.registry.store,
            &t.name,
            t.reconcile_interval,
            &ctx.node,
            now,
        );
        match turn.await? {
            reconcile::Turn::Wait(due, last) => {
                ctx.reconcile_due.borrow_mut().insert(t.name.clone(), due);
                if let Some(last) = last {
                    reconcile::seen(&t.name, &last);
                }
            }
            reconcile::Turn::Run(lease) => {
                ctx.reconciling.borrow_mut().insert(t.name.clone());
                let (ctx, live, target) = (ctx.clone(), live.clone(), t.clone());
                compio::runtime::spawn(async move {
                    let s = reconcile::run(&ctx.registry, &live.replication, &target, &lease).await;
                    tracing::info!(target = %target.name, outcome = s.outcome.as_str(),
                        repositories = s.repositories, tags = s.tags, missing = s.missing,
                        moved = s.moved, deleted = s.deleted, error = s.error.as_deref().unwrap_or(""),
                        "replication reconcile pass");
                    ctx.reconcile_due.borrow_mut().remove(&target.name);
                    ctx.reconciling.borrow_mut().remove(&target.name);
                })
                .detach();
            }
        }
    }
    Ok(())
}

fn launch(ctx: &Rc<Ctx>, claimed: Claimed) {
    *ctx.running
        .borrow_mut()
        .entry(claimed.target().to_string())
        .or_default() += 1;
    ctx.keys.borrow_mut().insert(claimed.key().to_string());
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        // Each job is a trace of its own, sampled as a background pass is.
        let root = crate::trace::pass_span("replication");
        tracing::Instrument::instrument(run(&ctx, &claimed), root).await;
        if let Some(n) = ctx.running.borrow_mut().get_mut(claimed.target()) {
            *n = n.saturating_sub(1);
        }
        ctx.keys.borrow_mut().remove(claimed.key());
        ctx.finished.set(ctx.finished.get() + 1);
    })
    .detach();
}

/// Runs one claimed job and records what came of it.
#[tracing::instrument(
    target = "origin::span",
    name = "replication.job",
    skip_all,
    fields(
        replication.target = %claimed.target(),
        oci.repository = %claimed.record.repository,
        oci.reference = claimed.record.reference(),
        replication.attempt = claimed.record.attempts + 1,
        error = tracing::field::Empty,
    )
)]
async fn run(ctx: &Ctx, claimed: &Claimed) {
    let live = ctx.live.get();
    let store = &ctx.registry.store;
    let job = &claimed.record;
    let Some(target) = live.replication.by_name(claimed.target()) else {
        return;
    };
    let m = metrics::of(&target.name);
    let result = match (RepoName::parse(&job.repository), parse_reference(job)) {
        (Ok(name), Some(reference)) => match job.kind {
            Kind::Push => copy::push(&ctx.registry, target, &name, &reference, Some(claimed)).await,
            Kind::Delete => copy::delete(&ctx.registry, target, &name, &reference).await,
        },
        _ => Err(copy_error(
            "the job names no valid repository and reference",
        )),
    };
    let now = now_ms(ctx);
    let recorded = match &result {
        Ok(outcome) => {
            metrics::add(&m.jobs_succeeded, 1);
            tracing::debug!(target = %target.name, repository = %job.repository,
                reference = job.reference(), gone = *outcome == Outcome::Gone, "replicated");
            claimed.done(store).await
        }
        Err(e) => {
            let message = e.to_string();
            tracing::Span::current().record("error", tracing::field::display(&message));
            let failed = claimed
                .failed(store, &message, target.max_retries, target.backoff_max, now)
                .await;
            if let Ok(true) = failed {
                metrics::add(&m.jobs_failed, 1);
                tracing::error!(target = %target.name, repository = %job.repository,
                    reference = job.reference(), attempts = job.attempts + 1, error = %message,
                    "replication failed for good (see `origin replication status`)");
                failed_event(ctx, &live, &target.name, job, &message).await;
            } else {
                metrics::add(&m.jobs_retried, 1);
                tracing::warn!(target = %target.name, repository = %job.repository,
                    reference = job.reference(), attempt = job.attempts + 1, error = %message,
                    "replication attempt failed; will retry");
            }
            failed.map(drop)
        }
    };
    if let Err(e) = recorded {
        e.log_cause();
        tracing::warn!(error = %e.client_message(), key = %claimed.key(),
            "could not record a replication job's outcome (its lease will expire)");
    }
}

/// `replication.failed` to the webhooks that want it: every delivery, after the fact (as
/// for the registry's own passes, a `required` webhook cannot refuse it).
async fn failed_event(ctx: &Ctx, live: &Live, target: &str, job: &job::Job, error: &str) {
    if live.webhooks.is_empty() {
        return;
    }
    let note = crate::events::ReplicationNote {
        target,
        job: match job.kind {
            Kind::Push => "push",
            Kind::Delete => "delete",
        },
        attempts: job.attempts + 1,
        error,
    };
    let event = crate::events::Event {
        kind: crate::events::EventKind::ReplicationFailed,
        repository: &job.repository,
        digest: &job.digest,
        tag: job.tag.as_deref(),
        reference: Some(job.reference()),
        media_type: None,
        size: None,
        actor: &crate::events::Actor::Replication,
        quota: None,
        replication: Some(note),
    };
    let phase = crate::events::Phase::All;
    let _ = crate::events::send(&live.webhooks, &ctx.events, &event, phase).await;
}

fn copy_error(message: &str) -> super::remote::CopyError {
    super::remote::CopyError::Target(message.to_string())
}

fn parse_reference(job: &job::Job) -> Option<Reference> {
    match &job.tag {
        Some(t) => Reference::parse(t).ok(),
        None => Reference::parse(&job.digest).ok(),
    }
}
