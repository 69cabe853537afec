//! `[tracing]`: traces exported over OTLP/HTTP (protobuf) to a collector (`crate::trace`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::duration;
use super::{ConfigError, Secret};

/// Finished spans waiting for the exporter at most: about 1 KiB each, so a few MiB, and
/// enough for a few seconds of a busy node at 100 % sampling while a collector restarts.
pub const TRACING_QUEUE_SPANS_DEFAULT: usize = 8192;
/// Spans per OTLP request (the OpenTelemetry SDK's default export batch).
pub const TRACING_BATCH_SPANS_DEFAULT: usize = 512;
/// Longest a finished span waits for its batch to fill before it is sent anyway.
pub const TRACING_BATCH_DELAY_DEFAULT: Duration = Duration::from_secs(2);
/// Deadline of one export request (connect, send, answer).
pub const TRACING_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Bounds that keep a typo from making the queue or a batch absurd.
pub const TRACING_QUEUE_SPANS_MAX: usize = 1_000_000;
pub const TRACING_BATCH_SPANS_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Export traces at all (also needs `endpoint`).
    #[serde(default)]
    pub enabled: bool,
    /// The collector's OTLP/HTTP base URL; spans are POSTed to `<endpoint>/v1/traces`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Fraction of new traces recorded (0.0 to 1.0). Parent-based: a request whose
    /// `traceparent` says sampled is always recorded, one that says not sampled never is.
    #[serde(default = "sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the resource.
    #[serde(default = "service_name")]
    pub service_name: String,
    /// More resource attributes (`deployment.environment = "prod"`); `service.version` and
    /// `host.name` are set already.
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// Headers sent with every export (an API key); `headers_file` and `headers_env` give a
    /// header's value from a file or an environment variable instead.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_file: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// PEM roots to trust for an https endpoint instead of the system's.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    #[serde(default = "timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Spans waiting for export at most; more are dropped and counted. Read at start.
    #[serde(default = "queue_spans_max")]
    pub queue_spans_max: usize,
    #[serde(default = "batch_spans_max")]
    pub batch_spans_max: usize,
    #[serde(default = "batch_delay", deserialize_with = "duration")]
    pub batch_delay: Duration,
}

fn sample_ratio() -> f64 {
    1.0
}
fn service_name() -> String {
    "origin".into()
}
fn timeout() -> Duration {
    TRACING_TIMEOUT_DEFAULT
}
fn queue_spans_max() -> usize {
    TRACING_QUEUE_SPANS_DEFAULT
}
fn batch_spans_max() -> usize {
    TRACING_BATCH_SPANS_DEFAULT
}
fn batch_delay() -> Duration {
    TRACING_BATCH_DELAY_DEFAULT
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            endpoint: None,
            sample_ratio: sample_ratio(),
            service_name: service_name(),
            resource: BTreeMap::new(),
            headers: BTreeMap::new(),
            headers_file: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            ca_bundle: None,
            timeout: timeout(),
            queue_spans_max: queue_spans_max(),
            batch_spans_max: batch_spans_max(),
            batch_delay: batch_delay(),
        }
    }
}

impl TracingConfig {
    /// True when spans are recorded and exported.
    pub fn is_on(&self) -> bool {
        self.enabled && self.endpoint.is_some()
    }

    /// The keys' bounds (`check-config` calls this too); the endpoint's URL is checked by
    /// `crate::trace` when it builds the exporter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::new(format!("tracing.{key}: {why}")));
        if self.enabled && self.endpoint.is_none() {
            return bad("endpoint", "required when tracing is enabled");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad("sample_ratio", "must be between 0.0 and 1.0");
        }
        if self.service_name.is_empty() {
            return bad("service_name", "must not be empty");
        }
        if self.queue_spans_max == 0 || self.queue_spans_max > TRACING_QUEUE_SPANS_MAX {
            return bad("queue_spans_max", "must be between 1 and 1000000");
        }
        if self.batch_spans_max == 0 || self.batch_spans_max > TRACING_BATCH_SPANS_MAX {
            return bad("batch_spans_max", "must be between 1 and 10000");
        }
        if self.batch_delay.is_zero() || self.timeout.is_zero() {
            return bad("batch_delay and timeout", "must be more than zero");
        }
        for name in self
            .headers
            .keys()
            .chain(self.headers_file.keys())
            .chain(self.headers_env.keys())
        {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return bad("headers", &format!("{name:?} is not a header name"));
            }
        }
        Ok(())
    }

    /// Replaces `headers_file` and `headers_env` entries by their values in `headers`.
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let names: Vec<String> = self
            .headers_file
            .keys()
            .chain(self.headers_env.keys())
            .cloned()
            .collect();
        for name in names {
            let source = Secret {
                plain: self.headers.remove(&name),
                file: self.headers_file.get(&name).map(|p| p.as_path()),
                env: self.headers_env.get(&name).map(|v| v.as_str()),
            };
            if let Some(value) = source.resolve(&format!("tracing.headers.{name}"))? {
                self.headers.insert(name, value);
            }
        }
        self.headers_file.clear();
        self.headers_env.clear();
        Ok(())
    }
}
