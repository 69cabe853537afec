//! The `tracing` layer that records spans of the [`super::ROOT`] and [`super::SPAN`] targets
//! as OpenTelemetry spans, and hands each finished one to the exporter's queue.
//!
//! Context needs no thread-local of ours: a span's parent is `tracing`'s current span, which
//! follows a future across awaits (`Instrument` enters the span on every poll), and the
//! runtime never moves a task to another thread.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::SystemTime;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::record::{self, Attribute, Finished, Kind, Value};
use super::{SpanIds, ROOT, SPAN};

/// Attributes kept per span: the server span has about 15; more are dropped and counted.
const ATTRIBUTES_MAX: usize = 32;
/// Events kept per span (retries, say); more are dropped and counted.
const EVENTS_MAX: usize = 32;

/// A span being recorded, kept in the registry's extensions of its `tracing` span.
struct Recording(Finished);

impl Recording {
    fn ids(&self) -> SpanIds {
        SpanIds {
            trace_id: self.0.trace_id,
            span_id: self.0.span_id,
        }
    }
}

/// Which spans and events the layer sees: none while tracing is off (the interest cache is
/// rebuilt when it turns on); roots always; children only inside a recorded trace.
pub struct SpanFilter;

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target() == SPAN || meta.target() == ROOT
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for SpanFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        if !super::is_on() || !ours(meta) {
            return false;
        }
        // A child or an event: only inside a recorded span (the thread-local stack of
        // `on_enter`; `Gated` asked it already for children, so no registry lookup here).
        meta.target() == ROOT && meta.is_span() || recording()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if super::is_on() && ours(meta) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if super::is_on() {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        })
    }
}

thread_local! {
    /// The recorded spans entered on this thread now, innermost last (a recorded request is
    /// being polled). `tracing` enters and exits spans nested on a thread.
    /// (Ids only: entering needs no lookup of the span; [`current`] looks the innermost up.)
    static ENTERED: RefCell<Vec<Id>> = const { RefCell::new(Vec::new()) };
}

/// True while a recorded span is current on this thread: a child span or event made now
/// belongs to a recorded trace. One thread-local read.
pub fn recording() -> bool {
    ENTERED.with(|e| !e.borrow().is_empty())
}

/// The ids of the innermost recorded span entered on this thread (looked up in the
/// registry: asked for an outbound `traceparent` or a queued delivery, not per poll).
pub fn current() -> Option<SpanIds> {
    let id = ENTERED.with(|e| e.borrow().last().cloned())?;
    tracing::dispatcher::get_default(|dispatch| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(&id)?;
        let ids = span.extensions().get::<Recording>().map(Recording::ids);
        ids
    })
}

/// The subscriber as installed: the layers, behind a gate that a child span's or a span
/// event's call site meets first. Outside a recorded span it stops there, before any layer's
/// filter runs, so an unsampled request pays one thread-local read per call site; while
/// tracing is off those call sites are disabled in the interest cache. Everything else is
/// the inner subscriber's.
pub struct Gated<S>(pub S);

impl<S: Subscriber> Subscriber for Gated<S> {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber)
    }
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.target() != SPAN {
            return self.0.register_callsite(meta);
        }
        if !super::is_on() {
            return Interest::never();
        }
        match self.0.register_callsite(meta) {
            i if i.is_never() => i,
            _ => Interest::sometimes(),
        }
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        (meta.target() != SPAN || recording()) && self.0.enabled(meta)
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.0.new_span(span)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.record(span, values)
    }
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0.record_follows_from(span, follows)
    }
    fn event_enabled(&self, event: &Event<'_>) -> bool {
        self.0.event_enabled(event)
    }
    fn event(&self, event: &Event<'_>) {
        self.0.event(event)
    }
    fn enter(&self, span: &Id) {
        self.0.enter(span)
    }
    fn exit(&self, span: &Id) {
        self.0.exit(span)
    }
    fn clone_span(&self, id: &Id) -> Id {
        self.0.clone_span(id)
    }
    fn try_close(&self, id: Id) -> bool {
        self.0.try_close(id)
    }
    fn current_span(&self) -> tracing_core::span::Current {
        self.0.current_span()
    }
    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(std::ptr::from_ref(self).cast());
        }
        // SAFETY: the inner subscriber answers for its own types (the registry, the layers),
        // which `trace::layer::current` looks up.
        unsafe { self.0.downcast_raw(id) }
    }
}

/// Turns `tracing` spans into OpenTelemetry spans.
pub struct SpanLayer;

/// Reads a span's fields: `otel.*` steer the span, the rest become attributes (an empty
/// string is no attribute).
struct Fields<'a> {
    rec: &'a mut Finished,
}

impl Fields<'_> {
    fn push(&mut self, key: &'static str, value: Value) {
        let attrs = &mut self.rec.attributes;
        if let Some(old) = attrs.iter_mut().find(|a| a.0 == key) {
            old.1 = value;
        } else if attrs.len() < ATTRIBUTES_MAX {
            attrs.push((key, value));
        } else {
            self.rec.dropped_attributes += 1;
        }
    }
}

impl Fields<'_> {
    /// A string field, owned once (`record_debug` formats into it; nothing copies it again).
    fn record_owned(&mut self, field: &Field, value: String) {
        match field.name() {
            "otel.name" => self.rec.name = Cow::Owned(value),
            "otel.kind" => {
                self.rec.kind = match value.as_str() {
                    "server" => Kind::Server,
                    "client" => Kind::Client,
                    _ => Kind::Internal,
                }
            }
            "error" => {
                self.rec.error = Some(value.clone());
                self.push("error.message", Value::Str(value));
            }
            _ if value.is_empty() => {}
            name => self.push(name, Value::Str(value)),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_owned(field, value.to_string());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        if field.name() == "otel.trace_id" {
            self.rec.trace_id = TraceId::from_bytes(value.to_be_bytes());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "otel.parent_id" => self.rec.parent_span_id = SpanId::from_bytes(value.to_be_bytes()),
            name => self.push(name, Value::Int(i64::try_from(value).unwrap_or(i64::MAX))),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), Value::Int(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            // A parent on another thread of this process, not in another process.
            "otel.local" => self.rec.parent_is_remote = !value,
            name => self.push(name, Value::Bool(value)),
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_owned(field, format!("{value:?}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_owned(field, value.to_string());
    }
}

/// Reads an event's message and fields into an OpenTelemetry event.
struct EventFields {
    name: Cow<'static, str>,
    attributes: Vec<Attribute>,
}

impl EventFields {
    fn record_owned(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.name = Cow::Owned(value);
        } else {
            self.push(field.name(), Value::Str(value));
        }
    }
    fn push(&mut self, key: &'static str, value: Value) {
        if self.attributes.len() < ATTRIBUTES_MAX {
            self.attributes.push((key, value));
        }
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_owned(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_owned(field, format!("{value:?}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        self.push(field.name(), Value::Int(v));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), Value::Int(value));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(id) else { return };
        let meta = span.metadata();
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
            attributes: Vec::new(),
            dropped_attributes: 0,
            events: Vec::new(),
            dropped_events: 0,
            error: None,
        };
        if meta.target() == SPAN {
            let parent = span.parent();
            let ids = parent.and_then(|p| p.extensions().get::<Recording>().map(Recording::ids));
            if let Some(p) = ids {
                rec.trace_id = p.trace_id;
                rec.parent_span_id = p.span_id;
                rec.parent_is_remote = false;
            }
        }
        attrs.record(&mut Fields { rec: &mut rec });
        if rec.trace_id == TraceId::INVALID {
            rec.trace_id = generator.new_trace_id();
        }
        span.extensions_mut().insert(Recording(rec));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        let Some(span) = cx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(rec) = ext.get_mut::<Recording>() {
            values.record(&mut Fields { rec: &mut rec.0 });
        }
    }

    fn on_event(&self, event: &Event<'_>, cx: Context<'_, S>) {
        let Some(span) = cx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(Recording(rec)) = ext.get_mut::<Recording>() else {
            return;
        };
        if rec.events.len() >= EVENTS_MAX {
            rec.dropped_events += 1;
            return;
        }
        let mut fields = EventFields {
            name: Cow::Borrowed("event"),
            attributes: Vec::new(),
        };
        event.record(&mut fields);
        rec.events.push(record::Event {
            name: fields.name,
            time: SystemTime::now(),
            attributes: fields.attributes,
        });
    }

    fn on_enter(&self, id: &Id, _cx: Context<'_, S>) {
        // Only recorded spans reach this layer (its filter): no lookup.
        ENTERED.with(|e| e.borrow_mut().push(id.clone()));
    }

    fn on_exit(&self, _id: &Id, _cx: Context<'_, S>) {
        ENTERED.with(|e| e.borrow_mut().pop());
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(&id) else { return };
        let Some(Recording(mut rec)) = span.extensions_mut().remove::<Recording>() else {
            return;
        };
        rec.end = SystemTime::now();
        super::export::push(rec);
    }
}
