//! The replication queue in storage, shared by every node on it.
//!
//! - `enqueue` writes a job with a create-only put (durable before the caller answers).
//! - `claim` reads a job and replaces it with `If-Match` naming this node and a lease: of
//!   two nodes that read it, one write wins, the other gets a failed precondition and moves
//!   on. A job whose lease expired (its node died) is claimed the same way.
//! - The holder renews the lease while it works (`Held::keep`), then deletes the job
//!   (`If-Match`: only the version it wrote), or records the failure: a retry after a
//!   backoff, or after `max_retries` the job moves to `replication/failed/`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::job::{backoff, Claim, Job};
use super::lease::{self, Held, Leased};
use crate::error::Result;
use crate::registry::layout;
use crate::storage::{Backend, PutCondition, PutOutcome, Storage};

/// How long a claim holds a job without renewal: a node that died mid-job leaves it to
/// another after this. Renewed every third of it while the job makes progress, so one step
/// (a chunk of a blob, a manifest) may take up to two thirds of it.
pub const LEASE: Duration = Duration::from_secs(120);
/// Longest error message kept in a job.
const ERROR_CHARS_MAX: usize = 1000;

/// Jobs this process recorded: the worker looks at it to start them without waiting for
/// its next scan.
static ENQUEUED: AtomicU64 = AtomicU64::new(0);

pub fn enqueued() -> u64 {
    ENQUEUED.load(Ordering::Acquire)
}

/// Records a job of `target`; returns its key.
pub async fn enqueue(store: &Backend, target: &str, job: &Job) -> Result<String> {
    loop {
        let key = layout::replication_job(target, &job.new_id());
        // Ids carry 64 random bits: a collision means another id, not another job.
        match store
            .put(&key, job.to_bytes(), PutCondition::IfAbsent)
            .await?
        {
            PutOutcome::Written(_) => {
                ENQUEUED.fetch_add(1, Ordering::Release);
                return Ok(key);
            }
            PutOutcome::PreconditionFailed => continue,
        }
    }
}

/// Records a job of `target` already claimed by `node`, for a copy that runs now (a `sync`
/// target's, in the request): if it fails, or the process dies, the job is there for the
/// workers (after the backoff `failed` sets, or when the lease expires).
pub async fn enqueue_claimed(
    store: &Backend,
    target: &str,
    job: Job,
    node: &str,
    now_ms: u64,
) -> Result<Claimed> {
    loop {
        let key = layout::replication_job(target, &job.new_id());
        let cond = PutCondition::IfAbsent;
        let taken = lease::take(store, key, node, LEASE, job.clone(), cond, now_ms);
        if let Some(claimed) = taken.await? {
            return Ok(claimed);
        }
    }
}

/// The target and id of a job key (`replication/jobs/<target>/<id>`).
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(layout::REPLICATION_JOBS)?;
    rest.split_once('/')
}

impl Leased for Job {
    fn parse(bytes: &[u8]) -> Option<Job> {
        Job::parse(bytes)
    }

    fn to_bytes(&self) -> Vec<u8> {
        Job::to_bytes(self)
    }

    fn claim_mut(&mut self) -> &mut Option<Claim> {
        &mut self.claim
    }
}

/// A job this node holds (renewed with `Held::keep`).
pub type Claimed = Held<Job>;

/// What became of an attempt to claim a job.
pub enum Attempt {
    Claimed(Box<Claimed>),
    /// Gone (done by another node), held by another node, or another node's write won.
    Taken,
    /// Waiting out its backoff until this time (ms).
    NotYet(u64),
}

/// Claims the job at `key` for `node` if it is due and nobody else holds it.
pub async fn claim(store: &Backend, key: &str, node: &str, now_ms: u64) -> Result<Attempt> {
    let Some(obj) = store.get(key).await? else {
        return Ok(Attempt::Taken);
    };
    let Some(job) = Job::parse(&obj.bytes) else {
        tracing::warn!(key, "unreadable replication job skipped");
        return Ok(Attempt::Taken);
    };
    if job.not_before_ms > now_ms {
        return Ok(Attempt::NotYet(job.not_before_ms));
    }
    if job.held(now_ms) {
        return Ok(Attempt::Taken);
    }
    let cond = PutCondition::IfMatch(obj.etag);
    let taken = lease::take(store, key.to_string(), node, LEASE, job, cond, now_ms);
    Ok(match taken.await? {
        Some(claimed) => Attempt::Claimed(Box::new(claimed)),
        None => Attempt::Taken,
    })
}

impl Held<Job> {
    /// The target the job is for (from its key).
    pub fn target(&self) -> &str {
        parse_key(self.key()).map_or("", |(t, _)| t)
    }

    /// The job is done: removed, unless another node took it over meanwhile.
    pub async fn done(&self, store: &Backend) -> Result<()> {
        store.delete_if_match(self.key(), &self.etag()).await?;
        Ok(())
    }

    /// The attempt failed with `error`: the job waits out a backoff and is released, or
    /// after `max_retries` retries moves to the failed records. True when it failed for good.
    pub async fn failed(
        &self,
        store: &Backend,
        error: &str,
        max_retries: u32,
        backoff_max: Duration,
        now_ms: u64,
    ) -> Result<bool> {
        let mut job = self.record.clone();
        job.attempts += 1;
        job.claim = None;
        job.last_error = Some(error.chars().take(ERROR_CHARS_MAX).collect());
        let etag = self.etag();
        if job.attempts > max_retries {
            let (target, id) = parse_key(self.key()).unwrap_or(("", ""));
            let record = layout::replication_failed(target, id);
            store
                .put(&record, job.to_bytes(), PutCondition::Always)
                .await?;
            store.delete_if_match(self.key(), &etag).await?;
            return Ok(true);
        }
        job.not_before_ms = now_ms + backoff(job.attempts, backoff_max).as_millis() as u64;
        store
            .put(self.key(), job.to_bytes(), PutCondition::IfMatch(etag))
            .await?;
        Ok(false)
    }
}
