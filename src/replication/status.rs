//! What `origin replication status` prints: per target, the jobs waiting (and how many are
//! claimed by a node right now), the oldest one's age, and the jobs that failed for good
//! with their last errors. Read from storage, so it shows every node's work.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::job::Job;
use crate::error::Result;
use crate::registry::layout;
use crate::storage::{Backend, Storage};

/// Failed jobs listed with their error per target (the count covers them all).
const FAILED_SHOWN_MAX: usize = 10;
/// Keys read in one listing call.
const PAGE_KEYS: usize = 1000;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub pending: u64,
    /// Of the pending: held by a node whose lease has not expired.
    pub running: u64,
    /// Of the pending: waiting out a backoff after a failed attempt.
    pub retrying: u64,
    pub oldest_created_ms: Option<u64>,
    pub failed: u64,
    /// The first failed jobs, with their last errors.
    pub failed_jobs: Vec<FailedJob>,
    /// The target's reconcile record: the last pass, a pass running now.
    pub reconcile: Option<super::reconcile::Record>,
}

impl TargetStatus {
    /// Age of the oldest pending job (0 with none).
    pub fn lag_seconds(&self, now_ms: u64) -> u64 {
        self.oldest_created_ms
            .map_or(0, |c| now_ms.saturating_sub(c) / 1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedJob {
    pub repository: String,
    /// The tag, or the digest of a push or deletion by digest.
    pub reference: String,
    pub attempts: u32,
    pub error: String,
}

/// What `origin replication status` and `/admin/replication` report.
#[derive(Debug, Default)]
pub struct Report {
    /// Push targets: every name configured, and every target with jobs in storage.
    pub targets: BTreeMap<String, TargetStatus>,
    /// Pull targets: their record (last run, next run, failures).
    pub pulls: BTreeMap<String, super::pull::Record>,
}

/// The jobs of every push target in storage (and of every name in `configured`), and the
/// records of the pull targets `pulls`.
pub async fn read(
    store: &Backend,
    configured: &[String],
    pulls: &[String],
    now_ms: u64,
) -> Result<Report> {
    Ok(Report {
        targets: read_jobs(store, configured, now_ms).await?,
        pulls: super::pull::records(store, pulls).await?,
    })
}

async fn read_jobs(
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
                        s.failed_jobs.push(FailedJob {
                            repository: job.repository.clone(),
                            reference: job.reference().to_string(),
                            attempts: job.attempts,
                            error: job.last_error.clone().unwrap_or_default(),
                        });
                    }
                    continue;
                }
                s.pending += 1;
                if job.claim.as_ref().is_some_and(|c| c.live(now_ms)) {
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
    if let Some(c) = r.and_then(|r| r.claim.as_ref()).filter(|c| c.live(now_ms)) {
        let _ = writeln!(out, "  reconcile running on node {}", c.node);
    }
}

/// The report, one block per target (push targets, then pull targets).
pub fn render(report: &Report, now_ms: u64) -> String {
    let mut out = String::new();
    if report.targets.is_empty() && report.pulls.is_empty() {
        out.push_str("no replication targets configured and no jobs stored\n");
    }
    for (name, s) in &report.targets {
        let lag = s.lag_seconds(now_ms);
        let _ = writeln!(
            out,
            "{name}: pending {} (running {}, retrying {}), oldest {lag}s, failed {}",
            s.pending, s.running, s.retrying, s.failed
        );
        render_reconcile(&mut out, s.reconcile.as_ref(), now_ms);
        for f in &s.failed_jobs {
            let _ = writeln!(
                out,
                "  failed: {}:{} after {} attempts: {}",
                f.repository, f.reference, f.attempts, f.error
            );
        }
    }
    for (name, record) in &report.pulls {
        out.push_str(&super::pull::render_status(name, record, now_ms));
    }
    out
}

/// The same report as JSON (the ops listener's `/admin/replication` and
/// `origin replication status --json`): `{"now_ms": .., "targets": {name: {..}},
/// "pulls": {name: {..}}}`, each push target with its counts, `oldest_created_ms`,
/// `lag_seconds` and `failed_jobs`, each pull target with its record.
pub fn to_json(report: &Report, now_ms: u64) -> Vec<u8> {
    #[derive(Serialize)]
    struct Entry<'a> {
        #[serde(flatten)]
        status: &'a TargetStatus,
        lag_seconds: u64,
    }
    #[derive(Serialize)]
    struct Json<'a> {
        now_ms: u64,
        targets: BTreeMap<&'a str, Entry<'a>>,
        pulls: &'a BTreeMap<String, super::pull::Record>,
    }
    let targets = report
        .targets
        .iter()
        .map(|(name, s)| {
            let lag_seconds = s.lag_seconds(now_ms);
            (
                name.as_str(),
                Entry {
                    status: s,
                    lag_seconds,
                },
            )
        })
        .collect();
    // Plain strings and numbers: serialising cannot fail.
    let pulls = &report.pulls;
    serde_json::to_vec(&Json {
        now_ms,
        targets,
        pulls,
    })
    .unwrap_or_default()
}
