//! Traces (README "Observability"): spans are `tracing` spans under two targets, kept and
//! recorded by the process's subscriber ([`spans::Spans`], as [`record::Finished`] spans) and
//! exported over OTLP/HTTP by the exporter thread ([`export`]).
//!
//! - [`ROOT`] spans start a trace: one server span per request ([`server_span`], after the
//!   sampling decision), a background pass ([`pass_span`]), an async webhook delivery linked
//!   to the request that queued it ([`linked_span`]).
//! - [`SPAN`] spans are children (operations, storage, S3, upstream fetches, auth, policy);
//!   they exist only inside a recorded trace, so an unsampled request allocates none.
//!
//! Off, the targets' callsites are disabled in `tracing`'s interest cache: a span macro costs
//! one load of a cached interest, as a disabled log line does. A reload that turns tracing on
//! or off rebuilds that cache.

pub mod export;
mod fields;
mod packed;
pub mod record;
pub mod spans;
#[cfg(test)]
mod tests;
mod wire;

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::thread::LocalKey;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, ShouldSample};
use tracing::field::Empty;
use tracing::Span;

pub use export::Settings;
pub use spans::set_static;

/// Target of spans inside a trace (created only when their parent is recorded).
pub const SPAN: &str = "origin::span";
/// Target of spans that start a trace, created only after the sampling decision.
pub const ROOT: &str = "origin::root";

/// Tracing on: spans are recorded (read by the filter, set by [`apply`]).
static ON: AtomicBool = AtomicBool::new(false);
/// `sample_ratio` as f64 bits.
static RATIO_BITS: AtomicU64 = AtomicU64::new(0);

/// A child span inside the current trace (`trace::span!("storage.get", key = %k)`).
#[macro_export]
macro_rules! span {
    ($name:expr $(, $($field:tt)*)?) => {
        tracing::info_span!(target: "origin::span", $name $(, $($field)*)?)
    };
}

/// An event on the current span (a retry, a cache miss), kept with the span.
#[macro_export]
macro_rules! span_event {
    ($($arg:tt)*) => {
        tracing::info!(target: "origin::span", $($arg)*)
    };
}

/// True when tracing is on (spans are recorded for sampled requests).
pub fn is_on() -> bool {
    ON.load(Relaxed)
}

/// True while this thread runs inside a recorded span (a sampled request, a pass): what a
/// request's code asks before it records an attribute.
pub fn recording() -> bool {
    is_on() && spans::recording()
}

/// Applies `[tracing]` from a new configuration (start and reload): the exporter's settings,
/// the sampling ratio, on or off.
pub fn apply(settings: Option<std::sync::Arc<Settings>>, io_driver: crate::config::IoDriver) {
    let on = settings.is_some();
    if let Some(s) = &settings {
        RATIO_BITS.store(s.sample_ratio.to_bits(), Relaxed);
        export::start(s.queue_spans_max, io_driver);
    }
    export::set_settings(settings);
    if ON.swap(on, Relaxed) != on {
        tracing::callsite::rebuild_interest_cache();
    }
}

thread_local! {
    /// This thread's sampler and the ratio it was built for (rebuilt when a reload changes it).
    static SAMPLER: RefCell<(u64, Option<Sampler>)> = const { RefCell::new((u64::MAX, None)) };
}

/// The sampling decision for a new trace or for a remote parent: parent-based over a
/// trace-id ratio, the OpenTelemetry SDK's sampler.
fn sampled(parent: Option<&opentelemetry::Context>, trace_id: TraceId) -> bool {
    let bits = RATIO_BITS.load(Relaxed);
    SAMPLER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != bits || cell.1.is_none() {
            let ratio = Sampler::TraceIdRatioBased(f64::from_bits(bits));
            *cell = (bits, Some(Sampler::ParentBased(Box::new(ratio))));
        }
        let Some(sampler) = &cell.1 else { return false };
        let kind = SpanKind::Server;
        let result = sampler.should_sample(parent, trace_id, "request", &kind, &[], &[]);
        matches!(
            result.decision,
            opentelemetry_sdk::trace::SamplingDecision::RecordAndSample
        )
    })
}

/// The two headers of W3C Trace Context a request may carry.
struct Headers<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The incoming W3C `traceparent` (and `tracestate`), as a remote parent context.
pub fn remote_parent<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
) -> Option<opentelemetry::Context> {
    let traceparent = header("traceparent").filter(|v| well_formed(v))?;
    let headers = Headers {
        traceparent,
        tracestate: header("tracestate"),
    };
    let cx = TraceContextPropagator::new().extract(&headers);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The W3C field widths (the SDK's propagator parses the ids as numbers, and so accepts a
/// short one): version, trace id, parent id and flags of 2, 32, 16 and 2 hex digits.
fn well_formed(traceparent: &str) -> bool {
    let mut parts = traceparent.trim().split('-');
    let widths = [2, 32, 16, 2];
    widths.iter().all(|w| {
        parts
            .next()
            .is_some_and(|p| p.len() == *w && p.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// What the HTTP layer knows of a request when it starts (its headers are read through the
/// `header` function given with it, and only once the request is sampled).
pub struct RequestInfo<'a> {
    pub method: &'static str,
    pub path: &'a str,
    pub peer: SocketAddr,
}

/// One recorded request: its server span (exported), and its trace id, which every log
/// line of the request names ([`InTrace`]).
pub struct RequestSpans {
    pub server: Span,
    pub trace_id: TraceId,
}

/// How a request takes part in tracing.
pub enum RequestTrace {
    /// Sampled: its spans are recorded.
    Recorded(RequestSpans),
    /// Not sampled, with a valid incoming `traceparent`: nothing is recorded, and outbound
    /// requests made for it carry that `traceparent` on (W3C Trace Context: a participant
    /// that does not record still propagates), see [`passing`].
    Passed(Rc<str>),
}

/// How a request takes part in tracing, continuing its `traceparent`; none (nothing
/// allocated) when tracing is off, or when the request is not sampled and has no parent.
pub fn server_span<'a>(
    info: &RequestInfo<'_>,
    header: impl Fn(&str) -> Option<&'a str> + Copy,
) -> Option<RequestTrace> {
    if !is_on() {
        return None;
    }
    // Without a parent at a ratio of 0 nothing can be sampled or passed on: no trace id is
    // drawn and no header is read (the cost of tracing at 0 %, bench/tracing.sh).
    if RATIO_BITS.load(Relaxed) == 0 && header("traceparent").is_none() {
        return None;
    }
    let parent = remote_parent(header);
    let parent_sc = parent.as_ref().map(|cx| cx.span().span_context().clone());
    let trace_id = match &parent_sc {
        Some(sc) => sc.trace_id(),
        None => RandomIdGenerator::default().new_trace_id(),
    };
    if !sampled(parent.as_ref(), trace_id) {
        parent.as_ref()?;
        let incoming = header("traceparent")?.trim().to_ascii_lowercase();
        return Some(RequestTrace::Passed(incoming.into()));
    }
    let parent_id = parent_sc.map_or(SpanId::INVALID, |sc| sc.span_id());
    let server = tracing::info_span!(
        target: ROOT,
        parent: None,
        "request",
        error = Empty,
        otel.kind = "server",
        otel.trace_id = u128::from_be_bytes(trace_id.to_bytes()),
        otel.parent_id = u64::from_be_bytes(parent_id.to_bytes()),
        url.path = info.path,
        http.response.status_code = Empty,
        server.address = header("host").unwrap_or(""),
        client.address = &*ip_text(info.peer.ip(), &mut [0; 15]),
        client.port = info.peer.port(),
        user_agent.original = header("user-agent").unwrap_or(""),
        oci.repository = Empty,
        enduser.id = Empty,
    );
    // Its name, `{method} {route}`, is composed when it is exported (`record::Finished`).
    spans::set_static(&server, "http.request.method", info.method);
    Some(RequestTrace::Recorded(RequestSpans { server, trace_id }))
}

/// `ip` as its `Display` writes it: an IPv4 address written by hand into `buf` (through the
/// formatter it cost 0.2 µs of a recorded request's CPU in a profile, bench/results,
/// tracing), an IPv6 one through `Display`.
fn ip_text(ip: IpAddr, buf: &mut [u8; 15]) -> Cow<'_, str> {
    let IpAddr::V4(v4) = ip else {
        return Cow::Owned(ip.to_string());
    };
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    match std::str::from_utf8(&buf[..n]) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => Cow::Owned(v4.to_string()),
    }
}

thread_local! {
    /// The trace id of the recorded request being polled on this thread (its log lines').
    static LOGGED: RefCell<Option<TraceId>> = const { RefCell::new(None) };
    /// The `traceparent` passed on for the unsampled request being polled on this thread.
    static PASSED: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
}

fn with_local<T: 'static, R>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    /// Puts the outer value back, also when `f` panics (a request's panic is caught by its
    /// task; the thread goes on serving others, whose lines must not name this trace).
    struct Restore<T: 'static> {
        slot: &'static LocalKey<RefCell<Option<T>>>,
        outer: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            self.slot.with(|s| *s.borrow_mut() = outer);
        }
    }
    let _restore = Restore {
        slot,
        outer: slot.with(|s| s.replace(Some(value))),
    };
    f()
}

/// A request's future polled in its trace: a recorded request's inside its server span,
/// with its log lines naming its trace (a thread-local, not a `tracing` span the log layer
/// would format: a span per request was a measurable share of the cost at 100 % sampling);
/// an unsampled one's with its `traceparent` passed on to the outbound requests it makes.
/// One struct around the future, where `Instrumented` inside two `async fn` wrappers moved
/// the request's whole future once per layer before its first poll (bench/results, tracing).
pub struct InTrace<'a, F> {
    fut: F,
    trace: &'a RequestTrace,
}

impl<'a, F: Future> InTrace<'a, F> {
    pub fn new(fut: F, trace: &'a RequestTrace) -> Self {
        InTrace { fut, trace }
    }
}

impl<F: Future> Future for InTrace<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `fut` is pinned structurally: it is never moved out of `self` (no method
        // hands it out by value and there is no `Drop` impl), and `InTrace` is `Unpin` only
        // when `F` is.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above; `this` is not moved after this.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        match this.trace {
            RequestTrace::Recorded(s) => {
                let _entered = s.server.enter();
                with_local(&LOGGED, s.trace_id, || fut.poll(cx))
            }
            RequestTrace::Passed(tp) => with_local(&PASSED, tp.clone(), || fut.poll(cx)),
        }
    }
}

/// Runs `f` with the log lines it writes naming `trace_id` (see [`InTrace`]).
pub fn with_trace_id<R>(trace_id: TraceId, f: impl FnOnce() -> R) -> R {
    with_local(&LOGGED, trace_id, f)
}

/// The trace id a log line written now names: that of the recorded request being polled.
pub fn logged_trace_id() -> Option<TraceId> {
    LOGGED.with(|l| *l.borrow())
}

/// Runs `fut` (an unsampled request's) with `traceparent` passed on to the outbound
/// requests it makes.
pub async fn passing<F: Future>(fut: F, traceparent: Rc<str>) -> F::Output {
    let trace = RequestTrace::Passed(traceparent);
    InTrace::new(fut, &trace).await
}

/// The `traceparent` an unsampled request being polled on this thread passes on (None in
/// a recorded span, or with no parent): for work it queues for another thread.
pub fn passed() -> Option<Box<str>> {
    if !is_on() || spans::current().is_some() {
        return None;
    }
    PASSED.with(|p| p.borrow().as_deref().map(Box::from))
}

/// The root span of a background pass (GC, retention, upload expiry, eviction): its own
/// trace, sampled at `sample_ratio` as a request without a parent is (at 1 % a node's
/// passes leave a trace now and then, not one per tick).
pub fn pass_span(name: &'static str) -> Span {
    if !is_on() {
        return Span::none();
    }
    let trace_id = RandomIdGenerator::default().new_trace_id();
    if !sampled(None, trace_id) {
        return Span::none();
    }
    tracing::info_span!(
        target: ROOT,
        "pass",
        otel.name = name,
        otel.kind = "internal",
        otel.trace_id = u128::from_be_bytes(trace_id.to_bytes()),
    )
}

/// The current span's trace and span ids, to continue the trace elsewhere (a queued webhook
/// delivery, an outbound `traceparent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// The ids of the innermost recorded span that is current on this thread.
pub fn current() -> Option<SpanIds> {
    if !is_on() {
        return None;
    }
    spans::current()
}

/// The W3C `traceparent` header value for an outbound request: the current recorded span,
/// or else the unsampled request's own parent, passed on as it came.
pub fn traceparent() -> Option<String> {
    if !is_on() {
        return None;
    }
    match spans::current() {
        Some(ids) => Some(format!("00-{}-{}-01", ids.trace_id, ids.span_id)),
        None => PASSED.with(|p| p.borrow().as_deref().map(str::to_string)),
    }
}

/// A root-target span continuing `parent` (a delivery queued by a request, on another thread).
pub fn linked_span(name: &'static str, parent: Option<SpanIds>) -> Span {
    let Some(p) = parent.filter(|_| is_on()) else {
        return Span::none();
    };
    tracing::info_span!(
        target: ROOT,
        "linked",
        otel.name = name,
        otel.kind = "client",
        otel.trace_id = u128::from_be_bytes(p.trace_id.to_bytes()),
        otel.parent_id = u64::from_be_bytes(p.span_id.to_bytes()),
        otel.local = true,
    )
}
