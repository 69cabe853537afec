//! The process's `tracing` subscriber, [`Spans`]: it keeps the spans of the [`ROOT`] and
//! [`SPAN`] targets itself, as OpenTelemetry spans being recorded, and hands each finished
//! one to the exporter's queue; events go to the log subscriber inside it.
//!
//! Spans are the trace's alone. The log formats events, not spans (a log line of a recorded
//! request names its trace through `super::InTrace`), so no other span is enabled, and every
//! `tracing` span id in the process is one of ours: the address of its [`Node`], an `Arc`
//! whose strong count is the number of `Span` handles to it (`tracing` clones and closes ids
//! as handles are cloned and dropped). A span is then one allocation, recorded under its own
//! lock, with no registry slot, extensions map or per-layer filter state to keep per span and
//! per poll: that bookkeeping was most of a recorded request's cost in `tracing-subscriber`'s
//! registry (bench/results, tracing).
//!
//! Context needs no thread-local set around awaits: a span's parent is the innermost span
//! entered on this thread ([`ENTERED`]), and `Instrument` enters a span on every poll of its
//! future; the runtime never moves a task to another thread.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;
use tracing_core::LevelFilter;

use super::fields::{self, EventFields, Fields, ATTRIBUTES_MAX};
use super::record::{self, Finished, Kind, Value};
use super::{SpanIds, ROOT, SPAN};

/// Events kept per span (retries, say); more are dropped and counted.
const EVENTS_MAX: usize = 32;

/// A span being recorded: what `tracing`'s id of it points to.
struct Node {
    meta: &'static Metadata<'static>,
    ids: SpanIds,
    rec: Mutex<Finished>,
}

impl Node {
    fn lock(&self) -> MutexGuard<'_, Finished> {
        self.rec.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The id `tracing` carries for `node`: one strong reference, given to the new `Span` handle.
fn into_id(node: Arc<Node>) -> Id {
    Id::from_u64(Arc::into_raw(node) as usize as u64)
}

fn node_ptr(id: &Id) -> *const Node {
    id.into_u64() as usize as *const Node
}

/// The node behind an id that a live `Span` handle holds.
fn node(id: &Id) -> &Node {
    // SAFETY: every id `tracing` passes this subscriber came from `into_id` (`new_span` is
    // the only source of ids, and `current_span` returns only ids in `ENTERED`), and is
    // passed while a `Span` handle holding one of its strong references is alive: `enter`,
    // `exit`, `record` and `clone_span` are called through a handle, and an id in `ENTERED`
    // belongs to a span entered through a handle that cannot be dropped before it exits
    // (`Entered` borrows it; `Instrumented` exits before its span drops).
    unsafe { &*node_ptr(id) }
}

thread_local! {
    /// The spans entered on this thread now, innermost last (a recorded request is being
    /// polled). `tracing` enters and exits spans nested on a thread.
    static ENTERED: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
}

/// True while a recorded span is current on this thread: a child span or event made now
/// belongs to a recorded trace. One thread-local read.
pub fn recording() -> bool {
    ENTERED.with(|e| !e.borrow().is_empty())
}

/// The ids of the innermost span entered on this thread.
pub fn current() -> Option<SpanIds> {
    ENTERED.with(|e| e.borrow().last().map(|id| node(id).ids))
}

/// What [`Spans`] also answers to in `downcast_raw`, whatever log subscriber it wraps: how a
/// caller holding a `Span` tells that its id is one of ours.
struct Ours;

/// Sets attribute `key` of `span` to a `&'static str` (a route template, an action, a
/// method), kept as the reference rather than copied into a `String` as a recorded field
/// is. Nothing happens for a disabled span or one another subscriber made.
pub fn set_static(span: &tracing::Span, key: &'static str, value: &'static str) {
    span.with_subscriber(|(id, dispatch)| {
        if dispatch.downcast_ref::<Ours>().is_some() {
            fields::set(&mut node(id).lock(), key, Value::Static(value), false);
        }
    });
}

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target() == SPAN || meta.target() == ROOT
}

/// The subscriber as installed: spans are ours ([`Node`]); events go to `S` (the log), but
/// for span events ([`SPAN`] target), which are recorded on the current span. While tracing
/// is off our call sites are disabled in `tracing`'s interest cache (`super::apply` rebuilds
/// it), so a span call site costs what a disabled log line does; while on, a child span's
/// call site outside a recorded span stops at one thread-local read.
pub struct Spans<S>(pub S);

impl<S: Subscriber> Spans<S> {
    fn open(&self, attrs: &Attributes<'_>) -> Node {
        let meta = attrs.metadata();
        let generator = RandomIdGenerator::default();
        let start = SystemTime::now();
        let mut rec = Finished {
            trace_id: TraceId::INVALID,
            span_id: generator.new_span_id(),
            parent_span_id: SpanId::INVALID,
            parent_is_remote: true,
            name: Cow::Borrowed(meta.name()),
            kind: Kind::Internal,
            start,
            end: start,
            attributes: Vec::with_capacity(meta.fields().len().min(ATTRIBUTES_MAX)),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            error: None,
        };
        // A root's ids come in its fields (`otel.trace_id`, `otel.parent_id`); a child's
        // parent is its explicit one or the current span.
        if meta.target() != ROOT {
            let parent = match attrs.parent() {
                Some(id) => Some(node(id).ids),
                None if attrs.is_contextual() => current(),
                None => None,
            };
            if let Some(p) = parent {
                rec.trace_id = p.trace_id;
                rec.parent_span_id = p.span_id;
                rec.parent_is_remote = false;
            }
        }
        attrs.record(&mut Fields {
            rec: &mut rec,
            new: true,
        });
        if rec.trace_id == TraceId::INVALID {
            rec.trace_id = generator.new_trace_id();
        }
        Node {
            meta,
            ids: SpanIds {
                trace_id: rec.trace_id,
                span_id: rec.span_id,
            },
            rec: Mutex::new(rec),
        }
    }
}

impl<S: Subscriber> Subscriber for Spans<S> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber)
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if ours(meta) {
            return match (super::is_on(), meta.target()) {
                (false, _) => Interest::never(),
                // Created only after the sampling decision.
                (true, ROOT) if meta.is_span() => Interest::always(),
                // Children and events: only inside a recorded span.
                (true, _) => Interest::sometimes(),
            };
        }
        if meta.is_span() {
            return Interest::never();
        }
        self.0.register_callsite(meta)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        if ours(meta) {
            return super::is_on() && (meta.target() == ROOT && meta.is_span() || recording());
        }
        !meta.is_span() && self.0.enabled(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let inner = self.0.max_level_hint()?;
        Some(if super::is_on() {
            inner.max(LevelFilter::INFO)
        } else {
            inner
        })
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        into_id(Arc::new(self.open(attrs)))
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        values.record(&mut Fields {
            rec: &mut node(span).lock(),
            new: false,
        });
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event_enabled(&self, event: &Event<'_>) -> bool {
        event.metadata().target() == SPAN || self.0.event_enabled(event)
    }

    fn event(&self, event: &Event<'_>) {
        if event.metadata().target() != SPAN {
            return self.0.event(event);
        }
        let Some(id) = ENTERED.with(|e| e.borrow().last().cloned()) else {
            return;
        };
        let mut rec = node(&id).lock();
        if rec.events.len() >= EVENTS_MAX {
            rec.dropped_events += 1;
            return;
        }
        let mut fields = EventFields {
            name: Cow::Borrowed("event"),
            attributes: Vec::with_capacity(ATTRIBUTES_MAX.min(4)),
        };
        event.record(&mut fields);
        rec.events.push(record::Event {
            name: fields.name,
            time: SystemTime::now(),
            attributes: fields.attributes,
        });
    }

    fn enter(&self, span: &Id) {
        ENTERED.with(|e| e.borrow_mut().push(span.clone()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if e.last() == Some(span) {
                e.pop();
            } else if let Some(at) = e.iter().rposition(|id| id == span) {
                e.remove(at);
            }
        });
    }

    fn clone_span(&self, id: &Id) -> Id {
        // SAFETY: `id` came from `into_id` and a live handle holds a strong reference to it
        // (see `node`); this adds the one the new handle holds.
        unsafe { Arc::increment_strong_count(node_ptr(id)) };
        id.clone()
    }

    fn try_close(&self, id: Id) -> bool {
        // SAFETY: `id` came from `into_id`; the handle being dropped gives back the strong
        // reference it held, exactly once (`tracing` calls `try_close` once per handle).
        let node = unsafe { Arc::from_raw(node_ptr(&id)) };
        let Some(node) = Arc::into_inner(node) else {
            return false;
        };
        // A span of our targets is exported; any other is kept only as `tracing` asks.
        if ours(node.meta) {
            let mut rec = node.rec.into_inner().unwrap_or_else(|p| p.into_inner());
            rec.end = SystemTime::now();
            super::export::push(rec);
        }
        true
    }

    fn current_span(&self) -> Current {
        ENTERED.with(|e| match e.borrow().last() {
            Some(id) => Current::new(id.clone(), node(id).meta),
            None => Current::none(),
        })
    }

    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() || id == std::any::TypeId::of::<Ours>() {
            return Some(std::ptr::from_ref(self).cast());
        }
        // SAFETY: the inner subscriber answers for its own types.
        unsafe { self.0.downcast_raw(id) }
    }
}
