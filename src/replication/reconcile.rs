//! The reconcile pass: a target compared with this registry (tags and digests) and its drift
//! repaired, so a target that was down, wiped or changed by hand converges, and so does a
//! manifest stored here by a process that died before it recorded its job.
//!
//! - Once per `reconcile_interval` per target across every node on the storage: the record
//!   `replication/reconcile/<target>` is claimed with a conditional write and a lease (as a
//!   job is), renewed while the pass runs, and keeps where the pass stopped and what the
//!   last one found (`origin replication status` prints it).
//! - The pass walks the repositories the target covers (catalog order), and in each the tags
//!   here that pass `tag_filter`: a tag the target lacks (HEAD 404) or names another digest
//!   for gets the same push job a push makes, so durability, retries and the failed state
//!   apply. With `delete` events, the target's tags (its tags list, paged with `n`/`last`)
//!   that are not here get a deletion job. No job is queued twice: the target's pending jobs
//!   are read first.
//! - Bounded: at most [`REPOSITORIES_PER_PASS`] repositories and [`TAGS_PER_PASS`] tags; a
//!   pass that stops there records its position and the next one (due at once) goes on from
//!   it. Every listing is a page; every request has the target's `timeout`; the first
//!   failed request ends the pass with its error recorded (a target that is down costs one
//!   request per interval, not a hang).

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::{millis, Claim, Job, Kind};
use super::lease::{self, Held, Leased};
use super::metrics;
use super::queue::{self, LEASE};
use super::remote::{CopyError, CopyResult};
use super::{Target, Targets};
use crate::error::Result;
use crate::oci::{RepoName, Tag};
use crate::registry::{layout, Registry};
use crate::storage::{Backend, Storage};

/// Repositories one pass compares: a bound on its time; the next pass continues after them.
pub const REPOSITORIES_PER_PASS: usize = 1000;
/// Tags one pass compares (a HEAD at the target each) or lists at the target.
pub const TAGS_PER_PASS: usize = 10_000;
/// Catalog names one pass reads (most may be repositories the target does not cover).
const CATALOG_NAMES_PER_PASS: usize = 100_000;
/// Names read from storage per listing call (catalog and tags here).
const SOURCE_PAGE: usize = 1000;
/// Tags asked of the target per tags-list request (`n`).
pub const TARGET_TAGS_PAGE: usize = 100;
/// Pending jobs (and failed ones) of the target read to avoid queueing a duplicate; past
/// this a duplicate may be queued (it copies nothing twice: its HEADs find everything there).
const PENDING_READ_MAX: usize = 10_000;
/// How soon a node looks at a record again while another node holds its pass (ms).
const HELD_RECHECK_MS: u64 = 5000;
/// Longest error message kept in the record.
const ERROR_CHARS_MAX: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// Every covered repository was compared.
    Ok,
    /// Stopped at a per-pass limit; the next pass goes on from there.
    Partial,
    /// A request failed (the target is down or refused); the next pass is an interval later.
    Error,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Partial => "partial",
            RunOutcome::Error => "error",
        }
    }
}

/// What one pass did and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub started_ms: u64,
    pub finished_ms: u64,
    pub outcome: RunOutcome,
    pub repositories: u64,
    pub tags: u64,
    /// Tags here the target did not have.
    pub missing: u64,
    /// Tags the target had pointing elsewhere.
    pub moved: u64,
    /// Tags at the target no longer here (queued for deletion: `delete` events only).
    pub deleted: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// Where a pass stopped: in `repository`, among its tags here (or, `at_target`, the
/// target's), after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub repository: String,
    #[serde(default)]
    pub at_target: bool,
    #[serde(default)]
    pub after: Option<String>,
}

/// The target's reconcile record in storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the current sweep (the passes from the first repository to the last) began.
    #[serde(default)]
    pub sweep_started_ms: u64,
    /// The node running a pass now, until when.
    #[serde(default)]
    pub claim: Option<Claim>,
    /// Where the last pass stopped, when it did not finish the sweep.
    #[serde(default)]
    pub cursor: Option<Cursor>,
    #[serde(default)]
    pub last: Option<Summary>,
}

impl Leased for Record {
    fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    fn to_bytes(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn claim_mut(&mut self) -> &mut Option<Claim> {
        &mut self.claim
    }
}

impl Record {
    /// When the next pass may start (ms): when a running pass's lease ends, at once when
    /// none ran yet or after a pass stopped at a limit, else an interval after the sweep (or the failed pass) began.
    pub fn due_ms(&self, interval: Duration, now_ms: u64) -> u64 {
        if let Some(c) = self.claim.as_ref().filter(|c| c.live(now_ms)) {
            return c.until_ms;
        }
        let interval = interval.as_millis() as u64;
        match &self.last {
            // Never run: at once.
            None if self.cursor.is_none() => 0,
            Some(l) if l.outcome == RunOutcome::Error => l.started_ms.saturating_add(interval),
            _ if self.cursor.is_some() => 0,
            _ => self.sweep_started_ms.saturating_add(interval),
        }
    }
}

/// A pass this node holds: the record as it claimed it.
pub type Lease = Held<Record>;

/// What the record says of `target` now.
pub enum Turn {
    /// This node won the pass.
    Run(Box<Lease>),
    /// Not before this time (ms): another node runs it, or it is not due; with the last
    /// pass's summary, if any.
    Wait(u64, Option<Summary>),
}

/// The record of `target`, if any.
pub async fn read(store: &Backend, target: &str) -> Result<Option<Record>> {
    let Some(obj) = store.get(&layout::replication_reconcile(target)).await? else {
        return Ok(None);
    };
    Ok(Record::parse(&obj.bytes))
}

/// Claims `target`'s pass for `node` if it is due and no other node holds it.
pub async fn claim(
    store: &Backend,
    target: &str,
    interval: Duration,
    node: &str,
    now_ms: u64,
) -> Result<Turn> {
    let key = layout::replication_reconcile(target);
    let (mut record, cond) = lease::read::<Record>(store, &key).await?;
    let due = record.due_ms(interval, now_ms);
    if due > now_ms {
        // While another node runs the pass, look again soon: to see its outcome, and to
        // take the pass over soon after that node's lease expires.
        let held = record.claim.as_ref().is_some_and(|c| c.live(now_ms));
        let due = if held {
            due.min(now_ms + HELD_RECHECK_MS)
        } else {
            due
        };
        return Ok(Turn::Wait(due, record.last));
    }
    if record.cursor.is_none() {
        record.sweep_started_ms = now_ms;
    }
    let last = record.last.clone();
    Ok(
        match lease::take(store, key, node, LEASE, record, cond, now_ms).await? {
            Some(lease) => Turn::Run(Box::new(lease)),
            // Another node's write won: it runs the pass.
            None => Turn::Wait(now_ms + HELD_RECHECK_MS, last),
        },
    )
}

impl Held<Record> {
    /// Records the pass's outcome and releases the record (unless taken over meanwhile).
    async fn finish(
        &self,
        store: &Backend,
        summary: Summary,
        cursor: Option<Cursor>,
    ) -> Result<()> {
        let mut record = self.record.clone();
        record.cursor = cursor;
        record.last = Some(summary);
        self.release(store, record).await?;
        Ok(())
    }
}

/// Runs the pass `lease` holds for `target` and records it; returns what it found.
pub async fn run(reg: &Registry, targets: &Targets, target: &Target, lease: &Lease) -> Summary {
    let started_ms = millis(reg.clock.now());
    let mut walk = Walk {
        reg,
        targets,
        target,
        lease,
        pending: HashSet::new(),
        tags_left: TAGS_PER_PASS,
        names_left: CATALOG_NAMES_PER_PASS,
        summary: Summary {
            started_ms,
            finished_ms: 0,
            outcome: RunOutcome::Ok,
            repositories: 0,
            tags: 0,
            missing: 0,
            moved: 0,
            deleted: 0,
            error: None,
        },
    };
    let start = lease.record.cursor.clone();
    let result = walk.sweep(start.clone()).await;
    let mut summary = walk.summary;
    let cursor = match result {
        Ok(None) => None,
        Ok(Some(c)) => {
            summary.outcome = RunOutcome::Partial;
            Some(c)
        }
        Err(e) => {
            summary.outcome = RunOutcome::Error;
            summary.error = Some(e.to_string().chars().take(ERROR_CHARS_MAX).collect());
            // The next pass starts where this one did (its jobs are not queued twice).
            start
        }
    };
    summary.finished_ms = millis(reg.clock.now());
    let m = metrics::of(&target.name);
    metrics::add(
        match summary.outcome {
            RunOutcome::Ok => &m.reconcile_ok,
            RunOutcome::Partial => &m.reconcile_partial,
            RunOutcome::Error => &m.reconcile_error,
        },
        1,
    );
    metrics::add(&m.reconcile_missing, summary.missing);
    metrics::add(&m.reconcile_moved, summary.moved);
    metrics::add(&m.reconcile_deleted, summary.deleted);
    if let Err(e) = lease.finish(&reg.store, summary.clone(), cursor).await {
        e.log_cause();
        tracing::warn!(target = %target.name, error = %e.client_message(),
            "could not record a reconcile pass (its lease will expire)");
    }
    seen(&target.name, &summary);
    summary
}

/// Notes a finished pass read from (or written to) storage, for the metrics.
pub fn seen(target: &str, summary: &Summary) {
    let m = metrics::of(target);
    m.reconcile_last_ms
        .fetch_max(summary.started_ms, std::sync::atomic::Ordering::Relaxed);
}

struct Walk<'a> {
    reg: &'a Registry,
    targets: &'a Targets,
    target: &'a Target,
    lease: &'a Lease,
    /// (kind, repository, tag) of the target's jobs waiting or running.
    pending: HashSet<(Kind, String, String)>,
    tags_left: usize,
    names_left: usize,
    summary: Summary,
}

impl Walk<'_> {
    /// From `start` (or the first repository) to the last, or to a limit (the position then).
    async fn sweep(&mut self, start: Option<Cursor>) -> CopyResult<Option<Cursor>> {
        self.read_pending().await?;
        let mut after = None;
        if let Some(c) = start {
            if self.targets.covers(&self.target.name, &c.repository) {
                if let Some(stop) = self.repository(&c.repository, Some(&c)).await? {
                    return Ok(Some(stop));
                }
            }
            after = Some(c.repository);
        }
        let store = &self.reg.store;
        let mut pages = self.reg.catalog_pages(None, after.as_deref());
        loop {
            let page = pages.take_next(store, SOURCE_PAGE).await?;
            if page.is_empty() {
                return Ok(None);
            }
            for repo in page {
                let here = Cursor {
                    repository: repo.clone(),
                    at_target: false,
                    after: None,
                };
                if self.names_left == 0 {
                    return Ok(Some(here));
                }
                self.names_left -= 1;
                if !self.targets.covers(&self.target.name, &repo) {
                    continue;
                }
                if self.summary.repositories as usize >= REPOSITORIES_PER_PASS
                    || self.tags_left == 0
                {
                    return Ok(Some(here));
                }
                if let Some(stop) = self.repository(&repo, None).await? {
                    return Ok(Some(stop));
                }
            }
        }
    }

    /// The target's pending jobs, to queue none twice, and its failed deletions: a target
    /// that refuses a deletion (CNCF distribution refuses them by tag) would otherwise get a
    /// new failing job every pass (removing the failed record lets the next pass retry).
    async fn read_pending(&mut self) -> CopyResult<()> {
        let name = &self.target.name;
        let failed = format!("{}{name}/", layout::REPLICATION_FAILED);
        for (prefix, deletions_only) in [(layout::replication_job(name, ""), false), (failed, true)]
        {
            self.read_jobs(&prefix, deletions_only).await?;
        }
        Ok(())
    }

    async fn read_jobs(&mut self, prefix: &str, deletions_only: bool) -> CopyResult<()> {
        let store = &self.reg.store;
        let mut after: Option<String> = None;
        let mut read = 0;
        while read < PENDING_READ_MAX {
            let want = SOURCE_PAGE.min(PENDING_READ_MAX - read);
            let page = store.list(prefix, after.as_deref(), want).await;
            let page = page.map_err(crate::error::Error::from)?;
            read += page.len();
            for key in &page {
                let obj = store.get(key).await.map_err(crate::error::Error::from)?;
                let Some(job) = obj.and_then(|o| Job::parse(&o.bytes)) else {
                    continue;
                };
                if deletions_only && job.kind != Kind::Delete {
                    continue;
                }
                if let Some(tag) = job.tag {
                    self.pending.insert((job.kind, job.repository, tag));
                }
            }
            if page.len() < want {
                break;
            }
            after = page.last().cloned();
        }
        Ok(())
    }

    /// One repository from `resume` (or its start); the position when a limit stops it.
    async fn repository(
        &mut self,
        repo: &str,
        resume: Option<&Cursor>,
    ) -> CopyResult<Option<Cursor>> {
        let Ok(name) = RepoName::parse(repo) else {
            return Ok(None);
        };
        self.summary.repositories += 1;
        // Reading the pending jobs or a long stretch of catalog took time: renew first.
        self.keep().await?;
        let dst = self.target.target_name(repo);
        let (mut at_target, mut after) =
            resume.map_or((false, None), |c| (c.at_target, c.after.clone()));
        let stop = |at_target: bool, after: Option<String>| Cursor {
            repository: repo.to_string(),
            at_target,
            after,
        };
        if !at_target {
            if self.target.push {
                let mut tags = self.reg.tag_pages(&name, after.as_deref());
                loop {
                    let want = SOURCE_PAGE.min(self.tags_left);
                    if want == 0 {
                        return Ok(Some(stop(false, after)));
                    }
                    let page = tags.take_next(&self.reg.store, want).await?;
                    if page.is_empty() {
                        break;
                    }
                    for tag in page {
                        self.tags_left = self.tags_left.saturating_sub(1);
                        self.source_tag(&name, &dst, &tag).await?;
                        after = Some(tag);
                    }
                }
            }
            at_target = true;
            after = None;
        }
        if !self.target.delete {
            return Ok(None);
        }
        loop {
            let want = TARGET_TAGS_PAGE.min(self.tags_left);
            if want == 0 {
                return Ok(Some(stop(at_target, after)));
            }
            let (page, more) = self
                .target
                .remote
                .tags_page(&dst, after.as_deref(), want)
                .await?;
            for tag in &page {
                self.tags_left = self.tags_left.saturating_sub(1);
                self.target_tag(&name, &dst, tag).await?;
            }
            if !more {
                return Ok(None);
            }
            after = page.last().cloned();
        }
    }

    /// A tag here: queued when the target lacks it or names another digest.
    async fn source_tag(&mut self, name: &RepoName, dst: &str, tag: &str) -> CopyResult<()> {
        if !self.target.wants_tag(Some(tag)) {
            return Ok(());
        }
        let Ok(t) = Tag::parse(tag) else {
            return Ok(());
        };
        // Deleted since it was listed: nothing to compare.
        let Some(digest) = self.reg.resolve_tag(name, &t).await? else {
            return Ok(());
        };
        self.summary.tags += 1;
        let there = self.target.remote.manifest_digest(dst, tag).await?;
        match there {
            Some(d) if d == digest.as_str() => {}
            None => {
                self.summary.missing += 1;
                self.enqueue(Kind::Push, name, tag, digest.as_str()).await?;
            }
            Some(_) => {
                self.summary.moved += 1;
                self.enqueue(Kind::Push, name, tag, digest.as_str()).await?;
            }
        }
        self.keep().await
    }

    /// A tag at the target: queued for deletion when it is not here.
    async fn target_tag(&mut self, name: &RepoName, dst: &str, tag: &str) -> CopyResult<()> {
        if !self.target.wants_tag(Some(tag)) {
            return Ok(());
        }
        // A tag no client could push here is not this registry's to delete.
        let Ok(t) = Tag::parse(tag) else {
            return Ok(());
        };
        if self.reg.resolve_tag(name, &t).await?.is_some() {
            return Ok(());
        }
        self.summary.tags += 1;
        let digest = self
            .target
            .remote
            .manifest_digest(dst, tag)
            .await?
            .unwrap_or_default();
        self.summary.deleted += 1;
        self.enqueue(Kind::Delete, name, tag, &digest).await?;
        self.keep().await
    }

    async fn enqueue(
        &mut self,
        kind: Kind,
        name: &RepoName,
        tag: &str,
        digest: &str,
    ) -> CopyResult<()> {
        let key = (kind, name.as_str().to_string(), tag.to_string());
        if self.pending.contains(&key) {
            return Ok(());
        }
        let job = Job::new(
            kind,
            name.as_str(),
            Some(tag),
            digest,
            millis(self.reg.clock.now()),
        );
        queue::enqueue(&self.reg.store, &self.target.name, &job).await?;
        self.pending.insert(key);
        Ok(())
    }

    async fn keep(&self) -> CopyResult<()> {
        let now = millis(self.reg.clock.now());
        if self.lease.keep(&self.reg.store, now).await? {
            return Ok(());
        }
        Err(CopyError::Target(
            "the reconcile pass was taken over by another node (lease expired)".into(),
        ))
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
