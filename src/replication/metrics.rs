//! Replication metrics per target: counters the worker and the copies increment, gauges the
//! worker sets from each scan of the queue; rendered with the process's other metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Targets whose series are kept (configured targets are at most `TARGETS_MAX`; names of
/// targets removed by a reload stay until the process ends, so this bounds them).
pub const SERIES_TARGETS_MAX: usize = 256;

#[derive(Default)]
pub struct TargetMetrics {
    pub jobs_succeeded: AtomicU64,
    pub jobs_retried: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub blobs_sent: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub blobs_present: AtomicU64,
    /// Blob uploads continued where an earlier attempt (a crash, another node) left them.
    pub blobs_resumed: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub manifests_sent: AtomicU64,
    /// Jobs waiting or running, as of the last scan of the queue.
    pub queue_depth: AtomicU64,
    /// Age of the oldest of them, in seconds.
    pub lag_seconds: AtomicU64,
    /// Reconcile passes this node ran, by outcome.
    pub reconcile_ok: AtomicU64,
    pub reconcile_partial: AtomicU64,
    pub reconcile_error: AtomicU64,
    /// Drift those passes found (and queued jobs for).
    pub reconcile_missing: AtomicU64,
    pub reconcile_moved: AtomicU64,
    pub reconcile_deleted: AtomicU64,
    /// Start (ms) of the latest finished pass of any node, as last read from storage.
    pub reconcile_last_ms: AtomicU64,
}

/// Series per target name, bounded to `SERIES_TARGETS_MAX` (an `_other` series beyond).
pub struct PerTarget<T>(Mutex<BTreeMap<String, Arc<T>>>);

impl<T: Default> PerTarget<T> {
    pub const fn new() -> PerTarget<T> {
        PerTarget(Mutex::new(BTreeMap::new()))
    }

    /// The series of `target`.
    pub fn of(&self, target: &str) -> Arc<T> {
        let mut map = self.lock();
        if let Some(m) = map.get(target) {
            return m.clone();
        }
        let name = if map.len() >= SERIES_TARGETS_MAX {
            "_other"
        } else {
            target
        };
        map.entry(name.to_string()).or_default().clone()
    }

    /// Every target's series, for rendering.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static TARGETS: PerTarget<TargetMetrics> = PerTarget::new();

/// The series of push target `target`.
pub fn of(target: &str) -> Arc<TargetMetrics> {
    TARGETS.of(target)
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// The Prometheus text of every target's series.
pub fn render_into(out: &mut String) {
    let map = TARGETS.lock();
    if map.is_empty() {
        return;
    }
    type Field = fn(&TargetMetrics) -> &AtomicU64;
    let series: [(&str, &str, &str, Field); 11] = [
        (
            "origin_replication_jobs_succeeded_total",
            "counter",
            "Replication jobs that completed.",
            |m| &m.jobs_succeeded,
        ),
        (
            "origin_replication_jobs_retried_total",
            "counter",
            "Replication attempts that failed and will be retried.",
            |m| &m.jobs_retried,
        ),
        (
            "origin_replication_jobs_failed_total",
            "counter",
            "Replication jobs that ran out of retries (kept as failed).",
            |m| &m.jobs_failed,
        ),
        (
            "origin_replication_blobs_sent_total",
            "counter",
            "Blobs uploaded to replication targets.",
            |m| &m.blobs_sent,
        ),
        (
            "origin_replication_blobs_mounted_total",
            "counter",
            "Blobs a target mounted from another of its repositories (no bytes sent).",
            |m| &m.blobs_mounted,
        ),
        (
            "origin_replication_blobs_present_total",
            "counter",
            "Blobs a target already had (a HEAD, no bytes sent).",
            |m| &m.blobs_present,
        ),
        (
            "origin_replication_blobs_resumed_total",
            "counter",
            "Blob uploads continued from where an earlier attempt left them.",
            |m| &m.blobs_resumed,
        ),
        (
            "origin_replication_bytes_sent_total",
            "counter",
            "Blob bytes uploaded to replication targets.",
            |m| &m.bytes_sent,
        ),
        (
            "origin_replication_manifests_sent_total",
            "counter",
            "Manifests (and tags) written to replication targets.",
            |m| &m.manifests_sent,
        ),
        (
            "origin_replication_queue_depth",
            "gauge",
            "Replication jobs waiting or running (all nodes), at this node's last scan.",
            |m| &m.queue_depth,
        ),
        (
            "origin_replication_lag_seconds",
            "gauge",
            "Age of the oldest replication job waiting or running, at this node's last scan.",
            |m| &m.lag_seconds,
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
    type Labelled = [(&'static str, Field); 3];
    let labelled: [(&str, &str, &str, Labelled); 2] = [
        (
            "origin_replication_reconcile_runs_total",
            "outcome",
            "Reconcile passes this node ran, by outcome (partial: stopped at a per-pass limit).",
            [
                ("ok", |m| &m.reconcile_ok),
                ("partial", |m| &m.reconcile_partial),
                ("error", |m| &m.reconcile_error),
            ],
        ),
        (
            "origin_replication_reconcile_drift_total",
            "kind",
            "Tags reconcile passes of this node found out of step at the target (a job queued).",
            [
                ("missing", |m| &m.reconcile_missing),
                ("moved", |m| &m.reconcile_moved),
                ("deleted", |m| &m.reconcile_deleted),
            ],
        ),
    ];
    for (name, label, help, values) in labelled {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (target, m) in map.iter() {
            for (value, field) in values {
                let _ = writeln!(
                    out,
                    "{name}{{target=\"{target}\",{label}=\"{value}\"}} {}",
                    field(m).load(Relaxed)
                );
            }
        }
    }
    let name = "origin_replication_reconcile_last_run_timestamp_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Start of the latest finished reconcile pass (any node), as this node last read it.\n# TYPE {name} gauge"
    );
    for (target, m) in map.iter() {
        let _ = writeln!(
            out,
            "{name}{{target=\"{target}\"}} {}",
            m.reconcile_last_ms.load(Relaxed) / 1000
        );
    }
}
