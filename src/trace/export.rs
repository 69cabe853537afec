//! The export of finished spans: a bounded queue per recording thread that the thread only
//! appends to, packed (`super::packed`; a full queue drops the span and counts it), and one
//! thread, `origin-traces`, with its own compio runtime, that takes the queues, batches the
//! spans, encodes them as an OTLP `ExportTraceServiceRequest` (protobuf, the
//! `opentelemetry-proto` messages) and POSTs them to `<endpoint>/v1/traces` on the project's
//! HTTP client, as the async webhook deliveries do.
//!
//! Each span is written as its `Span` message (`super::wire`) as soon as the exporter takes
//! it, into the batch's bytes: in protobuf a repeated message field is the concatenation of
//! its entries, so the body is the request's envelope around those entries, byte for byte
//! what prost writes for the whole request (`trace::tests`). Encoding the whole request at
//! once computed each nested message's length once per level above it (six times for an
//! attribute's value) and kept the batch's messages alive until then.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource as ResourceMessage;
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::Resource;
use prost::Message;

use super::packed::{self, Reader};
use super::record::Finished;
use super::wire::{self, field_len, frame};

use crate::config::{ConfigError, IoDriver, TracingConfig};
use crate::http::client::{Client, Target};
use crate::metrics::{Metrics, METRICS};

/// Response bodies read (and dropped) so the connection can be reused.
const RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// What the exporter needs of `[tracing]`, built (and checked) with the reloadable set.
pub struct Settings {
    pub target: Target,
    pub client: Client,
    pub headers: Vec<(String, String)>,
    pub resource: ResourceAttributesWithSchema,
    pub sample_ratio: f64,
    pub queue_spans_max: usize,
    pub batch_spans_max: usize,
    pub batch_delay: Duration,
}

impl Settings {
    /// The exporter's settings, or None when tracing is off. Errors name the key.
    pub fn build(config: &TracingConfig) -> Result<Option<Settings>, ConfigError> {
        config.validate()?;
        let Some(endpoint) = config.endpoint.as_deref().filter(|_| config.is_on()) else {
            return Ok(None);
        };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let target =
            Target::absolute(&url).map_err(|e| ConfigError::caused("tracing.endpoint", e))?;
        let tls = crate::tls::client_config("tracing.ca_bundle", config.ca_bundle.as_deref())
            .map_err(|e| e.0)?;
        let mut attributes = vec![
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", host_name()),
        ];
        for (k, v) in &config.resource {
            attributes.push(KeyValue::new(k.clone(), v.clone()));
        }
        let resource = Resource::builder_empty()
            .with_attributes(attributes)
            .with_service_name(config.service_name.clone())
            .build();
        Ok(Some(Settings {
            target,
            client: Client {
                tls,
                timeout: config.timeout,
            },
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            resource: (&resource).into(),
            sample_ratio: config.sample_ratio,
            queue_spans_max: config.queue_spans_max,
            batch_spans_max: config.batch_spans_max,
            batch_delay: config.batch_delay,
        }))
    }
}

/// This node's name (`host.name`): the kernel's node name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the array.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The spans one thread has finished and the exporter has not taken yet, packed
/// (`super::packed`). Only that thread appends, under a lock only the exporter also takes,
/// once per poll, to swap the buffer out: no cache line is shared between workers per span
/// (a bounded channel's send and a shared gauge per span were the queue's largest costs in a
/// profile at 100 % sampling).
#[derive(Default)]
struct Shard {
    queued: Mutex<Queued>,
}

#[derive(Default)]
struct Queued {
    bytes: Vec<u8>,
    spans: usize,
}

impl Queued {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans = 0;
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bytes of packed spans a thread's queue holds at most, per span of `queue_spans_max`: a
/// recorded span packs to 100-800 bytes (the server span's attributes are the most).
const QUEUE_BYTES_PER_SPAN: usize = 1024;
/// Capacity a taken queue's buffer keeps for its next turn (the buffers alternate between a
/// thread and the exporter): a worker's 20 ms of small pulls at 100 % sampling fit.
const TAKEN_BYTES_KEPT: usize = 1024 * 1024;

/// Every thread's queue, for the exporter to take from.
static SHARDS: Mutex<Vec<Arc<Shard>>> = Mutex::new(Vec::new());
/// Spans one thread's queue holds at most (`queue_spans_max`); 0 until the exporter starts.
static SHARD_SPANS_MAX: AtomicUsize = AtomicUsize::new(0);
static STARTED: Once = Once::new();

thread_local! {
    /// This thread's queue, registered on its first span.
    static SHARD: Arc<Shard> = {
        let shard = Arc::new(Shard::default());
        SHARDS.lock().unwrap_or_else(|p| p.into_inner()).push(shard.clone());
        shard
    };
}

/// The settings the exporter uses for its next batch; None: tracing off, queued spans go.
static SETTINGS: Mutex<Option<Arc<Settings>>> = Mutex::new(None);

fn settings() -> Option<Arc<Settings>> {
    SETTINGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(super) fn set_settings(s: Option<Arc<Settings>>) {
    *SETTINGS.lock().unwrap_or_else(|p| p.into_inner()) = s;
}

/// Starts the exporter thread once; each recording thread then holds at most
/// `queue_spans_max` spans (its size is then fixed).
pub(super) fn start(queue_spans_max: usize, io_driver: IoDriver) {
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("origin-traces".into())
            .spawn(move || export_loop(io_driver));
        match spawned {
            Ok(_) => SHARD_SPANS_MAX.store(queue_spans_max, Relaxed),
            // Nothing takes the spans: every span is then dropped, counted.
            Err(e) => tracing::error!(
                error = %e,
                "cannot start the trace exporter thread; spans are dropped"
            ),
        }
    });
}

/// Packs a finished span into this thread's queue; drops it (counted) when the queue is full
/// or the exporter is not running, never waits but for the exporter's swap.
pub(super) fn push(span: Finished) {
    let max = SHARD_SPANS_MAX.load(Relaxed);
    let kept = max > 0
        && SHARD
            .try_with(|shard| {
                let mut queued = shard.lock();
                let full = queued.spans >= max
                    || queued.bytes.len() >= max.saturating_mul(QUEUE_BYTES_PER_SPAN);
                if full {
                    return false;
                }
                packed::pack(span, &mut queued.bytes);
                queued.spans += 1;
                true
            })
            .unwrap_or(false);
    if !kept {
        Metrics::add(&METRICS.trace_spans_dropped, 1);
    }
}

/// How often the exporter takes the threads' queues, from the start of one look to the start
/// of the next (a look that took longer, sending to a slow collector, is followed at once).
/// It polls rather than being woken per span (a futex wake and a context switch per span,
/// measured as the largest cost at 100 % sampling before); polling costs a sleeping thread
/// 50 wake-ups a second and lets each thread's queue (8,192 spans by default) absorb 400,000
/// spans a second between two looks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn export_loop(io_driver: IoDriver) {
    let rt = match crate::server::build_runtime(io_driver) {
        Ok(rt) => rt,
        Err(e) => {
            SHARD_SPANS_MAX.store(0, Relaxed);
            tracing::error!(error = %e, "trace exporter: cannot start a runtime; spans are dropped");
            return;
        }
    };
    let mut failing = false;
    let mut batch = Batch::default();
    // Swapped with each thread's queue: the taken buffer becomes the next spare.
    let mut taken = Queued::default();
    // When the oldest span of `batch` was taken.
    let mut oldest = Instant::now();
    let mut looked = Instant::now();
    loop {
        std::thread::sleep(POLL_INTERVAL.saturating_sub(looked.elapsed()));
        looked = Instant::now();
        let s = settings();
        let shards: Vec<Arc<Shard>> = SHARDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for shard in &shards {
            std::mem::swap(&mut *shard.lock(), &mut taken);
            let Some(s) = s.as_deref() else {
                // Tracing was turned off: what was queued goes.
                taken.clear();
                continue;
            };
            let mut spans = Reader::new(&taken.bytes);
            loop {
                let first = batch.is_empty();
                if !batch.push_next(&mut spans) {
                    break;
                }
                if first {
                    oldest = Instant::now();
                }
                if batch.len() >= s.batch_spans_max {
                    failing = export(&rt, s, &batch, failing);
                    batch.clear();
                }
            }
            taken.clear();
            // What a burst grew it to is not kept while the threads idle.
            taken.bytes.shrink_to(TAKEN_BYTES_KEPT);
        }
        drop(shards);
        // The queues of threads that ended, once emptied (held by the list of queues alone).
        SHARDS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|shard| Arc::strong_count(shard) > 1 || shard.lock().spans > 0);
        METRICS
            .trace_queued
            .store(i64::try_from(batch.len()).unwrap_or(i64::MAX), Relaxed);
        match s.as_deref() {
            None => batch.clear(),
            Some(s) if !batch.is_empty() && oldest.elapsed() >= s.batch_delay => {
                failing = export(&rt, s, &batch, failing);
                batch.clear();
            }
            Some(_) => {}
        }
    }
}

/// Sends one batch; returns whether exports are failing now (a warning is logged once per
/// failing stretch, not per batch).
fn export(rt: &compio::runtime::Runtime, s: &Settings, batch: &Batch, failing: bool) -> bool {
    let n = batch.len() as u64;
    match rt.block_on(send(s, batch)) {
        Ok(()) => {
            Metrics::add(&METRICS.trace_spans_exported, n);
            if failing {
                tracing::info!("trace export works again");
            }
            false
        }
        Err(e) => {
            Metrics::add(&METRICS.trace_spans_failed, n);
            if !failing {
                tracing::warn!(error = %e, spans = n, "trace export failed; spans dropped");
            }
            true
        }
    }
}

/// Spans encoded as entries of `ScopeSpans.spans` (field 2: key, length, `Span` message),
/// one after another.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    spans: usize,
    /// Where a span's message is written until its length is known (reused).
    scratch: Vec<u8>,
}

/// `ScopeSpans.spans`.
const SCOPE_SPANS_SPANS: u32 = 2;
/// `ExportTraceServiceRequest.resource_spans`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
/// `ResourceSpans.resource`, `.scope_spans`, `.schema_url`.
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;

impl Batch {
    /// Spans in the batch.
    pub fn len(&self) -> usize {
        self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Encodes the next span of `spans` (its OTLP message) at the end of the batch; false
    /// when there is none.
    fn push_next(&mut self, spans: &mut Reader<'_>) -> bool {
        if !wire::encode_next(spans, SCOPE_SPANS_SPANS, &mut self.scratch, &mut self.bytes) {
            return false;
        }
        self.spans += 1;
        true
    }

    /// Encodes `span` as one queued and taken by the exporter is.
    #[cfg(test)]
    pub fn push_span(&mut self, span: Finished) {
        let mut queued = Vec::new();
        packed::pack(span, &mut queued);
        let mut spans = Reader::new(&queued);
        while self.push_next(&mut spans) {}
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans = 0;
    }
}

/// The OTLP/HTTP request body of a batch: protobuf `ExportTraceServiceRequest`, every span
/// under this process's one resource and one instrumentation scope. Written as prost writes
/// the whole message (fields in number order, empty ones left out), with the batch's
/// encoded entries as `ScopeSpans.spans`.
pub fn encode(batch: &Batch, resource: &ResourceAttributesWithSchema) -> Vec<u8> {
    let scope = ScopeSpans {
        scope: Some(InstrumentationScope {
            name: "origin".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
        }),
        spans: Vec::new(),
        schema_url: String::new(),
    };
    let resource_message = ResourceMessage {
        attributes: resource.attributes.0.clone(),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    let schema_url = resource.schema_url.as_deref().unwrap_or_default();
    // ScopeSpans: its scope (field 1), then the spans (field 2); its schema URL is empty.
    let scope_len = scope.encoded_len() + batch.bytes.len();
    // ResourceSpans: resource (1), scope_spans (2), schema_url (3).
    let mut resource_spans_len = field_len(RESOURCE_SPANS_RESOURCE, resource_message.encoded_len())
        + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_len);
    if !schema_url.is_empty() {
        resource_spans_len += field_len(RESOURCE_SPANS_SCHEMA_URL, schema_url.len());
    }
    let mut out = Vec::with_capacity(field_len(REQUEST_RESOURCE_SPANS, resource_spans_len));
    frame(REQUEST_RESOURCE_SPANS, resource_spans_len, &mut out);
    prost::encoding::message::encode(RESOURCE_SPANS_RESOURCE, &resource_message, &mut out);
    frame(RESOURCE_SPANS_SCOPE_SPANS, scope_len, &mut out);
    scope.encode_raw(&mut out);
    out.extend_from_slice(&batch.bytes);
    if !schema_url.is_empty() {
        frame(RESOURCE_SPANS_SCHEMA_URL, schema_url.len(), &mut out);
        out.extend_from_slice(schema_url.as_bytes());
    }
    out
}

async fn send(s: &Settings, batch: &Batch) -> std::io::Result<()> {
    let body = encode(batch, &s.resource);
    let mut headers: Vec<(&str, String)> =
        vec![("Content-Type", "application/x-protobuf".to_string())];
    for (k, v) in &s.headers {
        headers.push((k.as_str(), v.clone()));
    }
    let send = s.client.send_body("POST", &s.target, &headers, &body);
    let resp = match compio::time::timeout(s.client.timeout, send).await {
        Ok(r) => r?,
        Err(_) => return Err(std::io::Error::other("no answer within the timeout")),
    };
    let status = resp.status;
    let _ = compio::time::timeout(s.client.timeout, resp.bytes(RESPONSE_BYTES_MAX)).await;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "collector answered {status}"
        )))
    }
}
