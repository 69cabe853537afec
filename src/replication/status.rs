//! What `origin replication status` prints: per target, the jobs waiting (and how many are
//! claimed by a node right now), the oldest one's age, and the jobs that failed for good
//! with their last errors. Read from storage, so it shows every node's work.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::job::Job;
use crate::error::Result;
use crate::registry::layout;
use crate::storage::{Backend, Storage};

/// Failed jobs listed with their error per target (the count covers them all).
const FAILED_SHOWN_MAX: usize = 10;
/// Keys read in one listing call.
const PAGE_KEYS: usize = 1000;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub pending: u64,
    /// Of the pending: held by a node whose lease has not expired.
    pub running: u64,
    /// Of the pending: waiting out a backoff after a failed attempt.
    pub retrying: u64,
    pub oldest_created_ms: Option<u64>,
    pub failed: u64,
    /// (repository, reference, attempts, last error) of the first failed jobs.
    pub failed_jobs: Vec<(String, String, u32, String)>,
    /// The target's reconcile record: the last pass, a pass running now.
    pub reconcile: Option<super::reconcile::Record>,
}

/// Every target with jobs in storage, and every name in `configured`.
pub async fn read(
    store: &Backend,
    configured: &[String],
    now_ms: u64,
) -> Result<BTreeMap<String, TargetStatus>> {
    let mut out: BTreeMap<String, TargetStatus> = configured
        .iter()
        .map(|n| (n.clone(), TargetStatus::default()))
        .collect();
    for (prefix, failed) in [
        (layout::REPLICATION_JOBS, false),
        (layout::REPLICATION_FAILED, true),
    ] {
        let mut after: Option<String> = None;
        loop {
            let page = store.list(prefix, after.as_deref(), PAGE_KEYS).await?;
            for key in &page {
                let Some((target, _)) = key
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                let Some(obj) = store.get(key).await? else {
                    continue;
                };
                let Some(job) = Job::parse(&obj.bytes) else {
                    continue;
                };
                let s = out.entry(target.to_string()).or_default();
                if failed {
                    s.failed += 1;
                    if s.failed_jobs.len() < FAILED_SHOWN_MAX {
                        s.failed_jobs.push((
                            job.repository.clone(),
                            job.reference().to_string(),
                            job.attempts,
                            job.last_error.clone().unwrap_or_default(),
                        ));
                    }
                    continue;
                }
                s.pending += 1;
                if job.claim.as_ref().is_some_and(|c| c.until_ms > now_ms) {
                    s.running += 1;
                } else if job.not_before_ms > now_ms {
                    s.retrying += 1;
                }
                s.oldest_created_ms = Some(
                    s.oldest_created_ms
                        .map_or(job.created_ms, |o| o.min(job.created_ms)),
                );
            }
            if page.len() < PAGE_KEYS {
                break;
            }
            after = page.last().cloned();
        }
    }
    for (name, s) in out.iter_mut() {
        s.reconcile = super::reconcile::read(store, name).await?;
    }
    Ok(out)
}

/// The reconcile line of a target's block.
fn render_reconcile(out: &mut String, r: Option<&super::reconcile::Record>, now_ms: u64) {
    let ago = |ms: u64| now_ms.saturating_sub(ms) / 1000;
    match r.and_then(|r| r.last.as_ref()) {
        None => out.push_str("  reconciled: never\n"),
        Some(l) => {
            let _ = writeln!(
                out,
                "  reconciled: {}s ago, {}: {} repositories, {} tags; missing {}, moved {}, deleted {}",
                ago(l.started_ms),
                l.outcome.as_str(),
                l.repositories,
                l.tags,
                l.missing,
                l.moved,
                l.deleted
            );
            if let Some(e) = &l.error {
                let _ = writeln!(out, "  reconcile error: {e}");
            }
        }
    }
    if let Some(c) = r
        .and_then(|r| r.claim.as_ref())
        .filter(|c| c.until_ms > now_ms)
    {
        let _ = writeln!(out, "  reconcile running on node {}", c.node);
    }
}

/// The report, one block per target.
pub fn render(status: &BTreeMap<String, TargetStatus>, now_ms: u64) -> String {
    let mut out = String::new();
    if status.is_empty() {
        out.push_str("no replication targets configured and no jobs stored\n");
    }
    for (name, s) in status {
        let lag = s
            .oldest_created_ms
            .map_or(0, |c| now_ms.saturating_sub(c) / 1000);
        let _ = writeln!(
            out,
            "{name}: pending {} (running {}, retrying {}), oldest {lag}s, failed {}",
            s.pending, s.running, s.retrying, s.failed
        );
        render_reconcile(&mut out, s.reconcile.as_ref(), now_ms);
        for (repo, reference, attempts, error) in &s.failed_jobs {
            let _ = writeln!(
                out,
                "  failed: {repo}:{reference} after {attempts} attempts: {error}"
            );
        }
    }
    out
}
