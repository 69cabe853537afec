//! Process-wide metrics: fixed arrays of atomics (no locks, no allocation on the request
//! path), rendered in the Prometheus text format on scrape. Others only increment.
//!
//! The per-request counters (requests by group and status, latency, bytes, requests in
//! flight) are sharded per thread: each worker writes its own shard with plain loads and
//! stores (no locked instruction, no cache line shared between cores), and a scrape sums
//! the shards. The rarer counters are shared atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Route groups requests are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Base,
    Catalog,
    Tags,
    Manifests,
    Blobs,
    Uploads,
    Referrers,
    Ops,
    Other,
}

const GROUPS: [(&str, Group); 9] = [
    ("base", Group::Base),
    ("catalog", Group::Catalog),
    ("tags", Group::Tags),
    ("manifests", Group::Manifests),
    ("blobs", Group::Blobs),
    ("uploads", Group::Uploads),
    ("referrers", Group::Referrers),
    ("ops", Group::Ops),
    ("other", Group::Other),
];

/// Statuses counted one by one; any other falls in the last slot ("other").
const STATUSES: [u16; 29] = [
    100, 200, 201, 202, 204, 206, 302, 307, 400, 401, 403, 404, 405, 408, 409, 412, 413, 414, 415,
    416, 429, 431, 500, 501, 502, 503, 504, 505, 507,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Latency histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Only the shard's own thread calls this (see [`add_own`]).
    fn observe_own(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            add_own(&self.buckets[i], 1);
        }
        add_own(&self.count, 1);
        add_own(&self.sum_micros, d.as_micros() as u64);
    }
}

/// Adds to a counter that only the calling thread writes (others only read it): a load and a
/// store, not a locked read-modify-write.
fn add_own(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One thread's per-request counters.
pub struct Shard {
    requests: [[AtomicU64; STATUS_SLOTS]; GROUPS.len()],
    latency: [Histogram; GROUPS.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicI64,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            requests: [const { [const { AtomicU64::new(0) }; STATUS_SLOTS] }; GROUPS.len()],
            latency: [const { Histogram::new() }; GROUPS.len()],
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
        }
    }

    fn request(
        &self,
        group: Group,
        status: u16,
        duration: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let g = group as usize;
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        add_own(&self.requests[g][s], 1);
        self.latency[g].observe_own(duration);
        add_own(&self.bytes_in, bytes_in);
        add_own(&self.bytes_out, bytes_out);
    }

    fn in_flight_add(&self, n: i64) {
        self.in_flight
            .store(self.in_flight.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

/// Every thread's shard, for scrapes. A shard lives as long as the process (its counts must
/// never go back); there is one per thread that served a request: the workers.
static SHARDS: Mutex<Vec<&'static Shard>> = Mutex::new(Vec::new());

thread_local! {
    static SHARD: &'static Shard = {
        let shard: &'static Shard = Box::leak(Box::new(Shard::new()));
        SHARDS.lock().unwrap_or_else(|p| p.into_inner()).push(shard);
        shard
    };
}

/// A request being handled: counted in flight until dropped, however the request ends (a
/// handler cut at its deadline included).
pub struct InFlight(());

impl InFlight {
    pub fn start() -> InFlight {
        SHARD.with(|s| s.in_flight_add(1));
        InFlight(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Dropped on the thread that made it (a request's future never moves between threads).
        SHARD.with(|s| s.in_flight_add(-1));
    }
}

pub struct Metrics {
    pub auth_failures: AtomicU64,
    pub auth_rate_limited: AtomicU64,
    pub oidc_signature_checks: AtomicU64,
    pub oidc_key_fetch_failures: AtomicU64,
    pub policy_denials: AtomicU64,
    pub gc_passes: AtomicU64,
    /// GC passes that ended in an error (nothing counted in the reclaimed totals).
    pub gc_failures: AtomicU64,
    pub gc_blobs_reclaimed: AtomicU64,
    pub gc_bytes_reclaimed: AtomicU64,
    pub gc_manifests_removed: AtomicU64,
    pub gc_last_pass_micros: AtomicU64,
    /// Bytes of blob content stored: counted at startup, then kept by commits and GC.
    pub stored_bytes: AtomicI64,
    pub stored_bytes_known: std::sync::atomic::AtomicBool,
    pub uploads_open: AtomicI64,
    pub mirror_upstream_requests: AtomicU64,
    pub mirror_blob_fetches: AtomicU64,
    pub mirror_bytes_fetched: AtomicU64,
    pub mirror_fetch_failures: AtomicU64,
    pub mirror_stale_served: AtomicU64,
    pub mirror_evicted: AtomicU64,
    pub blob_redirects: AtomicU64,
    pub webhook_deliveries: AtomicU64,
    pub webhook_failures: AtomicU64,
    pub webhook_dropped: AtomicU64,
    pub webhook_queued: AtomicI64,
    pub retention_deleted: AtomicU64,
    /// Audit records written, and dropped (queue full or closed, file unwritable).
    pub audit_records: AtomicU64,
    pub audit_dropped: AtomicU64,
    /// The free-space guard: bytes free at its last sample, 1 while below its thresholds,
    /// and writes it refused.
    pub storage_free_bytes: AtomicU64,
    pub storage_space_low: AtomicU64,
    pub storage_space_refusals: AtomicU64,
    /// Requests refused by `[[rate_limit]]`, and the time blob bodies waited for
    /// `pull_bytes_per_second`.
    pub rate_limited: AtomicU64,
    pub pull_paced_micros: AtomicU64,
    /// Spans exported, dropped before export (queue full), lost in a failed export; queued.
    pub trace_spans_exported: AtomicU64,
    pub trace_spans_dropped: AtomicU64,
    pub trace_spans_failed: AtomicU64,
    pub trace_queued: AtomicI64,
    /// The last `/readyz` storage probe: 1 passed, 0 failed, -1 none yet (not rendered).
    pub storage_ready: AtomicI64,
}

pub static METRICS: Metrics = Metrics::new();

/// Namespaces whose quota usage this process remembers for `/metrics`, at most: only the
/// configured quotas are rendered (bounded label cardinality); the bound keeps the map small
/// whatever namespaces reloads have come and gone.
const QUOTA_NAMESPACES_MAX: usize = 4096;

/// Each namespace's usage (bytes, manifests) as this process last read or wrote its record.
pub struct QuotaGauges(std::sync::Mutex<std::collections::BTreeMap<String, (u64, u64)>>);

pub static QUOTA_USAGE: QuotaGauges =
    QuotaGauges(std::sync::Mutex::new(std::collections::BTreeMap::new()));

impl QuotaGauges {
    pub fn set(&self, namespace: &str, bytes: u64, manifests: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= QUOTA_NAMESPACES_MAX && !map.contains_key(namespace) {
            map.clear();
        }
        map.insert(namespace.to_string(), (bytes, manifests));
    }

    /// `origin_quota_*{namespace}` for each of `quotas` (namespace, byte quota, manifest
    /// quota): the quota, and the usage if this process has seen it.
    pub fn render<'a>(
        &self,
        out: &mut String,
        quotas: impl Iterator<Item = (&'a str, Option<u64>, Option<u64>)>,
    ) {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut lines: [(&str, &str, String); 4] = [
            ("origin_quota_bytes", "The namespace's quota_bytes.", String::new()),
            ("origin_quota_manifests", "The namespace's quota_manifests.", String::new()),
            ("origin_quota_usage_bytes", "Bytes the namespace holds, as this node last read or wrote its usage record (at least once per gc.interval).", String::new()),
            ("origin_quota_usage_manifests", "Manifests the namespace holds, as this node last read or wrote its usage record.", String::new()),
        ];
        for (ns, bytes, manifests) in quotas {
            let label = ns.replace('\\', "\\\\").replace('"', "\\\"");
            let used = map.get(ns);
            let values = [bytes, manifests, used.map(|u| u.0), used.map(|u| u.1)];
            for ((name, _, text), value) in lines.iter_mut().zip(values) {
                if let Some(v) = value {
                    let _ = writeln!(text, "{name}{{namespace=\"{label}\"}} {v}");
                }
            }
        }
        for (name, help, text) in &lines {
            if !text.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                out.push_str(text);
            }
        }
    }
}

impl Metrics {
    const fn new() -> Self {
        Metrics {
            auth_failures: AtomicU64::new(0),
            auth_rate_limited: AtomicU64::new(0),
            oidc_signature_checks: AtomicU64::new(0),
            oidc_key_fetch_failures: AtomicU64::new(0),
            policy_denials: AtomicU64::new(0),
            gc_passes: AtomicU64::new(0),
            gc_failures: AtomicU64::new(0),
            gc_blobs_reclaimed: AtomicU64::new(0),
            gc_bytes_reclaimed: AtomicU64::new(0),
            gc_manifests_removed: AtomicU64::new(0),
            gc_last_pass_micros: AtomicU64::new(0),
            stored_bytes: AtomicI64::new(0),
            stored_bytes_known: std::sync::atomic::AtomicBool::new(false),
            uploads_open: AtomicI64::new(0),
            mirror_upstream_requests: AtomicU64::new(0),
            mirror_blob_fetches: AtomicU64::new(0),
            mirror_bytes_fetched: AtomicU64::new(0),
            mirror_fetch_failures: AtomicU64::new(0),
            mirror_stale_served: AtomicU64::new(0),
            mirror_evicted: AtomicU64::new(0),
            blob_redirects: AtomicU64::new(0),
            webhook_deliveries: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
            webhook_queued: AtomicI64::new(0),
            retention_deleted: AtomicU64::new(0),
            audit_records: AtomicU64::new(0),
            audit_dropped: AtomicU64::new(0),
            storage_free_bytes: AtomicU64::new(0),
            storage_space_low: AtomicU64::new(0),
            storage_space_refusals: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            pull_paced_micros: AtomicU64::new(0),
            trace_spans_exported: AtomicU64::new(0),
            trace_spans_dropped: AtomicU64::new(0),
            trace_spans_failed: AtomicU64::new(0),
            trace_queued: AtomicI64::new(0),
            storage_ready: AtomicI64::new(-1),
        }
    }

    /// Counts a finished request in the calling thread's shard.
    pub fn request(
        &self,
        group: Group,
        status: u16,
        duration: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        SHARD.with(|s| s.request(group, status, duration, bytes_in, bytes_out));
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let shards: Vec<&Shard> = SHARDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        render_requests(&mut out, &shards);
        self.render_shared(&mut out);
        crate::replication::metrics::render_into(&mut out);
        crate::replication::pull::render_metrics(&mut out);
        crate::metrics_s3::S3_METRICS.render_into(&mut out);
        render_build_info(&mut out);
        out
    }

    fn render_shared(&self, out: &mut String) {
        let gauges_and_counters: [(&str, &str, &str, i128); 37] = [
            ("origin_upload_sessions_open", "gauge", "Upload sessions started and not yet finished, cancelled or expired (this process).", self.uploads_open.load(Relaxed) as i128),
            ("origin_auth_failures_total", "counter", "Requests with wrong credentials.", self.auth_failures.load(Relaxed) as i128),
            ("origin_auth_rate_limited_total", "counter", "Requests refused by the authentication rate limit.", self.auth_rate_limited.load(Relaxed) as i128),
            ("origin_oidc_signature_checks_total", "counter", "OIDC token signatures checked (verified tokens are then cached).", self.oidc_signature_checks.load(Relaxed) as i128),
            ("origin_oidc_key_fetch_failures_total", "counter", "Failed discovery or JWKS fetches from OIDC providers.", self.oidc_key_fetch_failures.load(Relaxed) as i128),
            ("origin_rate_limited_total", "counter", "Requests refused with 429 by a [[rate_limit]] entry (this node).", self.rate_limited.load(Relaxed) as i128),
            ("origin_pull_paced_seconds_total", "counter", "Time blob bodies waited for pull_bytes_per_second (summed over bodies).", 0),
            ("origin_policy_denials_total", "counter", "Requests denied by access policies.", self.policy_denials.load(Relaxed) as i128),
            ("origin_gc_passes_total", "counter", "Garbage collection passes run.", self.gc_passes.load(Relaxed) as i128),
            ("origin_gc_failures_total", "counter", "Garbage collection passes that failed.", self.gc_failures.load(Relaxed) as i128),
            ("origin_gc_blobs_reclaimed_total", "counter", "Blobs removed by garbage collection.", self.gc_blobs_reclaimed.load(Relaxed) as i128),
            ("origin_gc_bytes_reclaimed_total", "counter", "Bytes removed by garbage collection.", self.gc_bytes_reclaimed.load(Relaxed) as i128),
            ("origin_gc_manifests_removed_total", "counter", "Untagged manifests removed by garbage collection.", self.gc_manifests_removed.load(Relaxed) as i128),
            ("origin_gc_last_pass_duration_seconds", "gauge", "Duration of the last garbage collection pass.", 0),
            ("origin_storage_blob_bytes", "gauge", "Bytes of blob content stored (after the startup count).", self.stored_bytes.load(Relaxed) as i128),
            ("origin_storage_free_bytes", "gauge", "Bytes free on the storage filesystem at the free-space guard's last sample (0 before one; fs only).", self.storage_free_bytes.load(Relaxed) as i128),
            ("origin_storage_space_low", "gauge", "1 while storage is below storage.fs.min_free_bytes or min_free_ratio (writes that add data refused).", self.storage_space_low.load(Relaxed) as i128),
            ("origin_storage_space_refusals_total", "counter", "Writes refused with 507 by the free-space guard.", self.storage_space_refusals.load(Relaxed) as i128),
            ("origin_storage_blob_bytes_counted", "gauge", "1 once the startup count of stored bytes is done.", self.stored_bytes_known.load(Relaxed) as i128),
            ("origin_mirror_upstream_requests_total", "counter", "Requests sent to upstream registries (not counting auth retries' token fetches).", self.mirror_upstream_requests.load(Relaxed) as i128),
            ("origin_mirror_blob_fetches_total", "counter", "Blobs fetched from upstreams and committed.", self.mirror_blob_fetches.load(Relaxed) as i128),
            ("origin_mirror_fetched_bytes_total", "counter", "Bytes of blobs fetched from upstreams and committed.", self.mirror_bytes_fetched.load(Relaxed) as i128),
            ("origin_mirror_fetch_failures_total", "counter", "Blob fetches from upstreams that failed (nothing committed).", self.mirror_fetch_failures.load(Relaxed) as i128),
            ("origin_mirror_stale_served_total", "counter", "Cached tags served because no upstream could be reached.", self.mirror_stale_served.load(Relaxed) as i128),
            ("origin_mirror_evicted_total", "counter", "Mirrored manifests evicted for not being pulled.", self.mirror_evicted.load(Relaxed) as i128),
            ("origin_blob_redirects_total", "counter", "Blob GETs answered with a redirect to a presigned S3 URL.", self.blob_redirects.load(Relaxed) as i128),
            ("origin_webhook_deliveries_total", "counter", "Events delivered to webhooks (after retries).", self.webhook_deliveries.load(Relaxed) as i128),
            ("origin_webhook_failures_total", "counter", "Event deliveries that failed after every retry.", self.webhook_failures.load(Relaxed) as i128),
            ("origin_webhook_dropped_total", "counter", "Async event deliveries dropped: queue full or closed.", self.webhook_dropped.load(Relaxed) as i128),
            ("origin_webhook_queue_depth", "gauge", "Async event deliveries waiting in the queue.", self.webhook_queued.load(Relaxed) as i128),
            ("origin_retention_deleted_total", "counter", "Manifests deleted by retention policies.", self.retention_deleted.load(Relaxed) as i128),
            ("origin_audit_records_total", "counter", "Audit records written.", self.audit_records.load(Relaxed) as i128),
            ("origin_audit_dropped_total", "counter", "Audit records dropped: queue full or closed, or the file not writable.", self.audit_dropped.load(Relaxed) as i128),
            ("origin_trace_spans_exported_total", "counter", "Spans sent to the OTLP collector and accepted.", self.trace_spans_exported.load(Relaxed) as i128),
            ("origin_trace_spans_dropped_total", "counter", "Spans dropped before export: the queue was full.", self.trace_spans_dropped.load(Relaxed) as i128),
            ("origin_trace_spans_failed_total", "counter", "Spans lost in exports the collector did not accept (down, refused, timed out).", self.trace_spans_failed.load(Relaxed) as i128),
            ("origin_trace_queue_depth", "gauge", "Finished spans waiting for the exporter.", self.trace_queued.load(Relaxed) as i128),
        ];
        for (name, kind, help, value) in gauges_and_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if name == "origin_gc_last_pass_duration_seconds" {
                let secs = self.gc_last_pass_micros.load(Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "{name} {secs}");
            } else if name == "origin_pull_paced_seconds_total" {
                let secs = self.pull_paced_micros.load(Relaxed) as f64 / 1e6;
                let _ = writeln!(out, "{name} {secs}");
            } else {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        // Absent until something probes `/readyz` (a readiness probe, a monitor): a scrape
        // does not write to storage itself.
        let ready = self.storage_ready.load(Relaxed);
        if ready >= 0 {
            let _ = writeln!(
                out,
                "# HELP origin_storage_ready The last /readyz storage probe: 1 passed, 0 failed.\n\
                 # TYPE origin_storage_ready gauge\norigin_storage_ready {ready}"
            );
        }
    }
}

/// `origin_build_info{version,revision,build_date} 1`: which build answers, for dashboards
/// and alerts across nodes (the same stamp as `origin --version`).
fn render_build_info(out: &mut String) {
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP origin_build_info The running build: version, git revision, build date.\n\
         # TYPE origin_build_info gauge\n\
         origin_build_info{{version=\"{}\",revision=\"{}\",build_date=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION")),
        label(env!("ORIGIN_GIT_REVISION")),
        label(env!("ORIGIN_BUILD_DATE")),
    );
}

/// The per-request series, summed over the shards.
fn render_requests(out: &mut String, shards: &[&Shard]) {
    let sum = |f: &dyn Fn(&Shard) -> u64| shards.iter().map(|s| f(s)).sum::<u64>();
    out.push_str(
        "# HELP origin_http_requests_total Requests answered, by route group and status.\n",
    );
    out.push_str("# TYPE origin_http_requests_total counter\n");
    for (g, (gname, _)) in GROUPS.iter().enumerate() {
        for s in 0..STATUS_SLOTS {
            let n = sum(&|x| x.requests[g][s].load(Relaxed));
            if n == 0 {
                continue;
            }
            let status = STATUSES
                .get(s)
                .map_or("other".to_string(), |c| c.to_string());
            let _ = writeln!(
                out,
                "origin_http_requests_total{{group=\"{gname}\",status=\"{status}\"}} {n}"
            );
        }
    }
    out.push_str(
        "# HELP origin_http_request_duration_seconds Request latency, head to end of response.\n",
    );
    out.push_str("# TYPE origin_http_request_duration_seconds histogram\n");
    for (g, (gname, _)) in GROUPS.iter().enumerate() {
        let count = sum(&|x| x.latency[g].count.load(Relaxed));
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += sum(&|x| x.latency[g].buckets[i].load(Relaxed));
            let _ = writeln!(
                out,
                "origin_http_request_duration_seconds_bucket{{group=\"{gname}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "origin_http_request_duration_seconds_bucket{{group=\"{gname}\",le=\"+Inf\"}} {count}"
        );
        let total = sum(&|x| x.latency[g].sum_micros.load(Relaxed)) as f64 / 1e6;
        let _ = writeln!(
            out,
            "origin_http_request_duration_seconds_sum{{group=\"{gname}\"}} {total}"
        );
        let _ = writeln!(
            out,
            "origin_http_request_duration_seconds_count{{group=\"{gname}\"}} {count}"
        );
    }
    let bytes_in = sum(&|x| x.bytes_in.load(Relaxed));
    let bytes_out = sum(&|x| x.bytes_out.load(Relaxed));
    let in_flight: i64 = shards.iter().map(|s| s.in_flight.load(Relaxed)).sum();
    let series: [(&str, &str, &str, i128); 3] = [
        (
            "origin_http_received_bytes_total",
            "counter",
            "Request body bytes received.",
            bytes_in as i128,
        ),
        (
            "origin_http_sent_bytes_total",
            "counter",
            "Response body bytes sent.",
            bytes_out as i128,
        ),
        (
            "origin_http_requests_in_flight",
            "gauge",
            "Requests being handled now.",
            in_flight as i128,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards are summed at scrape: counts, cumulative buckets, bytes, the statuses counted
    /// one by one (307, 409, 502 included) and the rest as "other".
    #[test]
    fn renders_counters_and_cumulative_buckets_summed_over_shards() {
        let (a, b) = (Shard::new(), Shard::new());
        a.request(Group::Blobs, 200, Duration::from_millis(3), 0, 100);
        b.request(Group::Blobs, 200, Duration::from_millis(30), 0, 100);
        b.request(Group::Blobs, 299, Duration::from_secs(60), 5, 0);
        for status in [307, 409, 502] {
            a.request(Group::Manifests, status, Duration::from_millis(1), 0, 0);
        }
        a.in_flight_add(2);
        b.in_flight_add(-1);
        let mut text = String::new();
        render_requests(&mut text, &[&a, &b]);
        assert!(text.contains("origin_http_requests_total{group=\"blobs\",status=\"200\"} 2"));
        assert!(text.contains("origin_http_requests_total{group=\"blobs\",status=\"other\"} 1"));
        for status in [307, 409, 502] {
            let line =
                format!("origin_http_requests_total{{group=\"manifests\",status=\"{status}\"}} 1");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(text.contains(
            "origin_http_request_duration_seconds_bucket{group=\"blobs\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "origin_http_request_duration_seconds_bucket{group=\"blobs\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "origin_http_request_duration_seconds_bucket{group=\"blobs\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("origin_http_sent_bytes_total 200"));
        assert!(text.contains("origin_http_received_bytes_total 5"));
        assert!(text.contains("origin_http_requests_in_flight 1"));
    }

    /// The build stamp is one gauge of value 1 whose labels say the version and revision.
    #[test]
    fn renders_build_info() {
        let text = Metrics::new().render();
        let line = text
            .lines()
            .find(|l| l.starts_with("origin_build_info{"))
            .expect("origin_build_info in the exposition");
        let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(line.contains(&version), "{line}");
        assert!(line.contains(",revision=\""), "{line}");
        assert!(line.ends_with("\"} 1"), "{line}");
    }
}
