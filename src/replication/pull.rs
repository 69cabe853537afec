//! The pull direction: `[replication.<name>] direction = "pull"` copies repositories of an
//! upstream registry into this one every `schedule` (to prefill a mirror or a standby).
//!
//! - A [`Source`] is the compiled target: the upstream (the pull-through cache's client and
//!   authentication, as a one-upstream [`MirrorNs`]), its filters and limits.
//! - A run happens once per schedule across every node on the storage: the target's
//!   [`Record`] in storage (`replication/pull/<target>`) is claimed with a conditional write
//!   and a lease, like a job of the queue, and keeps the last run's time and outcome. A run
//!   that fails is retried after a backoff (never later than the next schedule).
//! - The copy itself goes through the service layer (`service::pull`), so a pulled manifest
//!   is stored as a push is: events, quotas, immutability and push replication apply.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::job::Claim;
use super::lease::{self, Held, Leased};
use crate::config::{ConfigError, ReplicationConfig};
use crate::error::Result;
use crate::mirror::{MirrorNs, Upstream, UpstreamUrl};
use crate::registry::layout;
use crate::storage::{Backend, Storage};

/// Repositories copied in one run (explicit or from the catalog, after the filter).
pub const REPOSITORIES_PER_RUN_MAX: usize = 1000;
/// Tags looked at in one run across its repositories; the rest wait for the next run.
pub const TAGS_PER_RUN_MAX: usize = 10_000;
/// Referrers followed per manifest (signatures, SBOMs, attestations).
pub const REFERRERS_PER_MANIFEST_MAX: usize = 64;
/// Referrers of referrers followed this deep (a signature of an SBOM of an image).
pub const REFERRER_DEPTH_MAX: usize = 3;
/// Children of an index copied (the manifest limit of 4 MiB bounds them anyway).
pub const INDEX_CHILDREN_MAX: usize = 1024;
/// How long a claim on a run holds without renewal; renewed every third of it.
pub const LEASE: Duration = Duration::from_secs(120);
/// The first retry of a failed run waits this long, each further one twice as long, never
/// beyond the schedule.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// Longest error message kept in the record.
const ERROR_CHARS_MAX: usize = 1000;

/// One pull target, ready to run.
pub struct Source {
    pub name: String,
    /// The upstream as the pull-through cache reaches it; its namespace is the prefix.
    pub ns: Arc<MirrorNs>,
    pub schedule: Duration,
    /// Upstream names; empty: the catalog.
    pub repositories: Vec<String>,
    repository_filter: Vec<Regex>,
    tag_filter: Vec<Regex>,
    prefix: Option<String>,
}

impl Source {
    pub fn compile(name: &str, r: &ReplicationConfig) -> std::result::Result<Source, ConfigError> {
        let filters = |list: &[String]| -> std::result::Result<Vec<Regex>, ConfigError> {
            list.iter()
                .map(|f| crate::events::webhooks::filter(f))
                .collect()
        };
        let what = format!("replication.{name}.ca_bundle");
        let tls = crate::tls::client_config(&what, r.ca_bundle.as_deref()).map_err(|e| e.0)?;
        let url = UpstreamUrl::parse(&r.url)
            .map_err(|e| ConfigError::caused(format!("replication.{name}.url"), e))?;
        let upstream = Upstream::new(
            url,
            tls,
            r.timeout,
            r.username.as_deref(),
            r.password.as_deref(),
            r.token.as_deref(),
        );
        let prefix = r
            .target_prefix
            .as_deref()
            .map(|p| p.trim_matches('/').to_string());
        Ok(Source {
            name: name.to_string(),
            ns: Arc::new(MirrorNs::for_pull(
                prefix.as_deref().unwrap_or(""),
                upstream,
            )),
            schedule: r.schedule.unwrap_or(Duration::from_secs(900)),
            repositories: r.repositories.clone(),
            repository_filter: filters(&r.repository_filter)?,
            tag_filter: filters(&r.tag_filter)?,
            prefix,
        })
    }

    pub fn wants_repository(&self, upstream_name: &str) -> bool {
        self.repository_filter.is_empty()
            || self
                .repository_filter
                .iter()
                .any(|r| r.is_match(upstream_name))
    }

    pub fn wants_tag(&self, tag: &str) -> bool {
        self.tag_filter.is_empty() || self.tag_filter.iter().any(|r| r.is_match(tag))
    }

    /// The local name of an upstream repository (`<prefix>/<name>`).
    pub fn local_name(&self, upstream_name: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}/{upstream_name}"),
            None => upstream_name.to_string(),
        }
    }
}

/// What the last run of a pull target did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Tags created or moved here.
    pub images: u64,
    /// Manifests stored (tags, index children, referrers).
    pub manifests: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Tags whose digest here was already the upstream's (nothing fetched).
    pub unchanged: u64,
    pub error: Option<String>,
}

/// A pull target's state in storage, shared by every node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Not to run before (the schedule, or the backoff after a failure).
    #[serde(default)]
    pub next_ms: u64,
    /// Failed runs in a row.
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub claim: Option<Claim>,
    #[serde(default)]
    pub last: Option<RunOutcome>,
    /// The last run that succeeded, when the last one failed.
    #[serde(default)]
    pub last_success_ms: Option<u64>,
}

impl Leased for Record {
    fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    fn to_bytes(&self) -> Vec<u8> {
        // A struct of plain fields: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn claim_mut(&mut self) -> &mut Option<Claim> {
        &mut self.claim
    }
}

/// A run this node holds: the target's record as claimed.
pub type Run = Held<Record>;

/// What became of an attempt to claim a run.
pub enum Attempt {
    Claimed(Box<Run>),
    /// Not due before this time (ms).
    NotYet(u64),
    /// Held by another node, or another node's write won.
    Taken,
}

/// Claims the run of `target` if it is due and nobody else holds it. A due time more than
/// one `schedule` away was set under a longer schedule (before a reload): it is due now.
pub async fn claim(
    store: &Backend,
    target: &str,
    schedule: Duration,
    node: &str,
    now_ms: u64,
) -> Result<Attempt> {
    let key = layout::replication_pull(target);
    let (record, cond) = lease::read::<Record>(store, &key).await?;
    let latest = now_ms.saturating_add(schedule.as_millis() as u64);
    if record.next_ms > now_ms && record.next_ms <= latest {
        return Ok(Attempt::NotYet(record.next_ms));
    }
    if record.claim.as_ref().is_some_and(|c| c.live(now_ms)) {
        return Ok(Attempt::Taken);
    }
    Ok(
        match lease::take(store, key, node, LEASE, record, cond, now_ms).await? {
            Some(run) => Attempt::Claimed(Box::new(run)),
            None => Attempt::Taken,
        },
    )
}

impl Held<Record> {
    /// Records what the run did and when the next one is due; releases the claim.
    pub async fn finish(
        self,
        store: &Backend,
        mut outcome: RunOutcome,
        schedule: Duration,
    ) -> Result<()> {
        let mut record = self.record.clone();
        let next = match &outcome.error {
            None => {
                record.failures = 0;
                record.last_success_ms = Some(outcome.finished_ms);
                // From the start: one run per schedule, however long a run takes.
                outcome.started_ms + schedule.as_millis() as u64
            }
            Some(e) => {
                outcome.error = Some(e.chars().take(ERROR_CHARS_MAX).collect());
                record.failures = record.failures.saturating_add(1);
                let wait = RETRY_FIRST
                    .saturating_mul(1 << record.failures.saturating_sub(1).min(16))
                    .min(schedule);
                outcome.finished_ms + wait.as_millis() as u64
            }
        };
        record.next_ms = next.max(outcome.finished_ms);
        record.last = Some(outcome);
        if !self.release(store, record).await? {
            tracing::warn!(key = %self.key(), "pull run taken over by another node before it ended");
        }
        Ok(())
    }
}

/// Counters per pull target, rendered with the process's other metrics.
#[derive(Default)]
pub struct PullMetrics {
    pub runs_succeeded: AtomicU64,
    pub runs_failed: AtomicU64,
    pub manifests: AtomicU64,
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
    pub unchanged: AtomicU64,
    /// When the last run of this node ended well (seconds since the epoch).
    pub last_success_seconds: AtomicU64,
}

static METRICS: super::metrics::PerTarget<PullMetrics> = super::metrics::PerTarget::new();

/// The series of pull target `target`.
pub fn metrics(target: &str) -> Arc<PullMetrics> {
    METRICS.of(target)
}

pub use super::metrics::add;

/// The Prometheus text of every pull target's series.
pub fn render_metrics(out: &mut String) {
    let map = METRICS.lock();
    if map.is_empty() {
        return;
    }
    type Field = fn(&PullMetrics) -> &AtomicU64;
    let series: [(&str, &str, &str, Field); 7] = [
        (
            "origin_replication_pull_runs_succeeded_total",
            "counter",
            "Scheduled pull runs this node completed.",
            |m| &m.runs_succeeded,
        ),
        (
            "origin_replication_pull_runs_failed_total",
            "counter",
            "Scheduled pull runs this node ended with an error (retried with backoff).",
            |m| &m.runs_failed,
        ),
        (
            "origin_replication_pull_manifests_total",
            "counter",
            "Manifests copied from pull targets' upstreams.",
            |m| &m.manifests,
        ),
        (
            "origin_replication_pull_blobs_total",
            "counter",
            "Blobs fetched from pull targets' upstreams.",
            |m| &m.blobs,
        ),
        (
            "origin_replication_pull_bytes_total",
            "counter",
            "Blob bytes fetched from pull targets' upstreams.",
            |m| &m.bytes,
        ),
        (
            "origin_replication_pull_tags_unchanged_total",
            "counter",
            "Tags a pull run found already at the upstream's digest (nothing fetched).",
            |m| &m.unchanged,
        ),
        (
            "origin_replication_pull_last_success_timestamp_seconds",
            "gauge",
            "When this node's last pull run of the target ended without error.",
            |m| &m.last_success_seconds,
        ),
    ];
    for (name, kind, help, field) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (target, m) in map.iter() {
            let _ = writeln!(
                out,
                "{name}{{target=\"{target}\"}} {}",
                field(m).load(Relaxed)
            );
        }
    }
}

/// The records of the pull targets `names` in storage (a default one for a target that
/// never ran).
pub async fn records(
    store: &Backend,
    names: &[String],
) -> Result<std::collections::BTreeMap<String, Record>> {
    let mut out = std::collections::BTreeMap::new();
    for name in names {
        let record = match store.get(&layout::replication_pull(name)).await? {
            Some(obj) => Record::parse(&obj.bytes).unwrap_or_default(),
            None => Record::default(),
        };
        out.insert(name.clone(), record);
    }
    Ok(out)
}

fn ago(now_ms: u64, t: u64) -> String {
    format!("{}s ago", now_ms.saturating_sub(t) / 1000)
}

/// One pull target's block of `origin replication status`.
pub fn render_status(name: &str, r: &Record, now_ms: u64) -> String {
    let mut out = String::new();
    let running = r.claim.as_ref().is_some_and(|c| c.live(now_ms));
    let next = if running {
        "running now".to_string()
    } else if r.next_ms <= now_ms {
        "next run due".to_string()
    } else {
        format!("next run in {}s", (r.next_ms - now_ms).div_ceil(1000))
    };
    match &r.last {
        None => {
            let _ = writeln!(out, "{name} (pull): no run yet, {next}");
        }
        Some(l) => {
            let result = match &l.error {
                None => "ok".to_string(),
                Some(e) => format!("failed ({} in a row): {e}", r.failures),
            };
            let _ = writeln!(
                out,
                "{name} (pull): last run {}, {}ms, images copied {}, manifests {}, blobs {}, \
                 bytes {}, tags unchanged {}, {result}; {next}",
                ago(now_ms, l.started_ms),
                l.finished_ms.saturating_sub(l.started_ms),
                l.images,
                l.manifests,
                l.blobs,
                l.bytes,
                l.unchanged
            );
            if l.error.is_some() {
                if let Some(s) = r.last_success_ms {
                    let _ = writeln!(out, "  last success {}", ago(now_ms, s));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_the_last_run() {
        let mut r = Record::default();
        assert!(render_status("up", &r, 10_000).contains("up (pull): no run yet, next run due"));
        r.last = Some(RunOutcome {
            started_ms: 1_000,
            finished_ms: 3_000,
            images: 2,
            manifests: 5,
            blobs: 7,
            bytes: 9,
            unchanged: 1,
            error: None,
        });
        r.next_ms = 61_000;
        let s = render_status("up", &r, 11_000);
        assert!(
            s.contains("last run 10s ago, 2000ms, images copied 2"),
            "{s}"
        );
        assert!(s.contains("bytes 9"), "{s}");
        assert!(s.contains("ok; next run in 50s"), "{s}");
        r.last.as_mut().unwrap().error = Some("boom".into());
        r.failures = 2;
        r.last_success_ms = Some(1_000);
        let s = render_status("up", &r, 11_000);
        assert!(s.contains("failed (2 in a row): boom"), "{s}");
        assert!(s.contains("last success 10s ago"), "{s}");
    }
}
