//! S3 request metrics: every attempt the S3 client sends, by operation and outcome, its
//! latency, and the retries. Fixed arrays of atomics like `metrics.rs` (no lock, no
//! allocation when counting); rendered into the same `/metrics` text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Operations counted one by one; any other falls in the last slot ("Other").
const OPS: [&str; 12] = [
    "GetObject",
    "PutObject",
    "HeadObject",
    "DeleteObject",
    "ListObjectsV2",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "CopyObject",
    "Other",
];

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    PreconditionFailed,
    ClientError,
    ServerError,
    Timeout,
    ConnectionError,
}

const OUTCOMES: [&str; 7] = [
    "ok",
    "not_found",
    "precondition_failed",
    "client_error",
    "server_error",
    "timeout",
    "connection_error",
];

impl Outcome {
    /// The outcome of an attempt that got an answer with this status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            404 => Outcome::NotFound,
            412 => Outcome::PreconditionFailed,
            100..=399 => Outcome::Ok,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }
}

/// Latency bucket upper bounds, in seconds (object storage: milliseconds to a part upload).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

pub struct S3Metrics {
    requests: [[AtomicU64; OUTCOMES.len()]; OPS.len()],
    retries: [AtomicU64; OPS.len()],
    buckets: [[AtomicU64; BUCKETS.len()]; OPS.len()],
    latency_count: [AtomicU64; OPS.len()],
    latency_sum_micros: [AtomicU64; OPS.len()],
}

pub static S3_METRICS: S3Metrics = S3Metrics::new();

/// The slot of an operation name (a `&'static str` of the S3 client: compared, not copied).
fn op_slot(op: &str) -> usize {
    OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1)
}

impl S3Metrics {
    const fn new() -> Self {
        S3Metrics {
            requests: [const { [const { AtomicU64::new(0) }; OUTCOMES.len()] }; OPS.len()],
            retries: [const { AtomicU64::new(0) }; OPS.len()],
            buckets: [const { [const { AtomicU64::new(0) }; BUCKETS.len()] }; OPS.len()],
            latency_count: [const { AtomicU64::new(0) }; OPS.len()],
            latency_sum_micros: [const { AtomicU64::new(0) }; OPS.len()],
        }
    }

    /// One attempt of `op`: how it ended and how long it took.
    pub fn attempt(&self, op: &str, outcome: Outcome, took: Duration) {
        let o = op_slot(op);
        self.requests[o][outcome as usize].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[o][i].fetch_add(1, Relaxed);
        }
        self.latency_count[o].fetch_add(1, Relaxed);
        self.latency_sum_micros[o].fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// `op` is about to be sent again after a failed attempt.
    pub fn retry(&self, op: &str) {
        self.retries[op_slot(op)].fetch_add(1, Relaxed);
    }

    /// Appends the Prometheus text of the S3 metrics (nothing for operations never sent).
    pub fn render_into(&self, out: &mut String) {
        out.push_str(
            "# HELP origin_s3_requests_total S3 request attempts, by operation and outcome.\n",
        );
        out.push_str("# TYPE origin_s3_requests_total counter\n");
        for (o, op) in OPS.iter().enumerate() {
            for (k, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.requests[o][k].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "origin_s3_requests_total{{operation=\"{op}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP origin_s3_retries_total S3 requests sent again after a failed attempt.\n",
        );
        out.push_str("# TYPE origin_s3_retries_total counter\n");
        for (o, op) in OPS.iter().enumerate() {
            let n = self.retries[o].load(Relaxed);
            if n > 0 {
                let _ = writeln!(out, "origin_s3_retries_total{{operation=\"{op}\"}} {n}");
            }
        }
        out.push_str("# HELP origin_s3_request_duration_seconds S3 request attempt latency, send to response head.\n");
        out.push_str("# TYPE origin_s3_request_duration_seconds histogram\n");
        for (o, op) in OPS.iter().enumerate() {
            let count = self.latency_count[o].load(Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += self.buckets[o][i].load(Relaxed);
                let _ = writeln!(
                    out,
                    "origin_s3_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "origin_s3_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {count}"
            );
            let sum = self.latency_sum_micros[o].load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "origin_s3_request_duration_seconds_sum{{operation=\"{op}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "origin_s3_request_duration_seconds_count{{operation=\"{op}\"}} {count}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_outcome() {
        let m = S3Metrics::new();
        m.attempt("PutObject", Outcome::Ok, Duration::from_millis(3));
        m.attempt(
            "PutObject",
            Outcome::of_status(412),
            Duration::from_millis(30),
        );
        m.attempt("NoSuchOp", Outcome::of_status(503), Duration::from_secs(60));
        m.retry("NoSuchOp");
        let mut text = String::new();
        m.render_into(&mut text);
        assert!(text.contains("origin_s3_requests_total{operation=\"PutObject\",outcome=\"ok\"} 1"));
        assert!(text.contains(
            "origin_s3_requests_total{operation=\"PutObject\",outcome=\"precondition_failed\"} 1"
        ));
        assert!(text
            .contains("origin_s3_requests_total{operation=\"Other\",outcome=\"server_error\"} 1"));
        assert!(text.contains("origin_s3_retries_total{operation=\"Other\"} 1"));
        assert!(text.contains(
            "origin_s3_request_duration_seconds_bucket{operation=\"PutObject\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "origin_s3_request_duration_seconds_bucket{operation=\"PutObject\",le=\"+Inf\"} 2"
        ));
        assert!(!text.contains("operation=\"GetObject\""));
        assert_eq!(Outcome::of_status(304), Outcome::Ok);
        assert_eq!(Outcome::of_status(404), Outcome::NotFound);
        assert_eq!(Outcome::of_status(403), Outcome::ClientError);
    }
}
