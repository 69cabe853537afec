//! The `tracing` layer that records spans of the [`super::ROOT`] and [`super::SPAN`] targets
//! as OpenTelemetry spans, and hands each finished one to the exporter's queue.
//!
//! Context needs no thread-local of ours: a span's parent is `tracing`'s current span, which
//! follows a future across awaits (`Instrument` enters the span on every poll), and the
//! runtime never moves a task to another thread.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{SpanIds, ROOT, SPAN};

/// Attributes kept per span: the server span has about 15; more are dropped and counted.
const ATTRIBUTES_MAX: usize = 32;
/// Events kept per span (retries, say); more are dropped and counted.
const EVENTS_MAX: usize = 32;

/// A span being recorded, kept in the registry's extensions of its `tracing` span.
struct Recording {
    ids: SpanIds,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    events: SpanEvents,
    status: Status,
}

/// Which spans and events the layer sees: none while tracing is off (the interest cache is
/// rebuilt when it turns on); roots always; children only inside a recorded trace.
pub struct SpanFilter;

fn ours(meta: &Metadata<'_>) -> bool {
    meta.target() == SPAN || meta.target() == ROOT
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for SpanFilter {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !super::is_on() || !ours(meta) {
            return false;
        }
        meta.target() == ROOT && meta.is_span() || cx.lookup_current().is_some()
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

/// Turns `tracing` spans into OpenTelemetry spans.
pub struct SpanLayer;

/// Reads a span's fields: `otel.*` steer the span, the rest become attributes.
struct Fields<'a> {
    rec: &'a mut Recording,
}

impl Fields<'_> {
    fn push(&mut self, kv: KeyValue) {
        let attrs = &mut self.rec.attributes;
        if let Some(old) = attrs.iter_mut().find(|a| a.key == kv.key) {
            *old = kv;
        } else if attrs.len() < ATTRIBUTES_MAX {
            attrs.push(kv);
        } else {
            self.rec.dropped_attributes += 1;
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "otel.name" => self.rec.name = Cow::Owned(value.to_string()),
            "otel.kind" => {
                self.rec.kind = match value {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    _ => SpanKind::Internal,
                }
            }
            "error" => {
                self.rec.status = Status::error(value.to_string());
                self.push(KeyValue::new("error.message", value.to_string()));
            }
            name => self.push(KeyValue::new(name, value.to_string())),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        if field.name() == "otel.trace_id" {
            self.rec.ids.trace_id = TraceId::from_bytes(value.to_be_bytes());
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "otel.parent_id" => self.rec.parent_span_id = SpanId::from_bytes(value.to_be_bytes()),
            name => self.push(KeyValue::new(
                name,
                i64::try_from(value).unwrap_or(i64::MAX),
            )),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(KeyValue::new(field.name(), value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        match field.name() {
            // A parent on another thread of this process, not in another process.
            "otel.local" => self.rec.parent_is_remote = !value,
            name => self.push(KeyValue::new(name, value)),
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

/// Reads an event's message and fields into an OpenTelemetry event.
struct EventFields {
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.name = Cow::Owned(value.to_string());
        } else if self.attributes.len() < ATTRIBUTES_MAX {
            self.attributes
                .push(KeyValue::new(field.name(), value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        self.attributes.push(KeyValue::new(field.name(), v));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(id) else { return };
        let meta = span.metadata();
        let generator = RandomIdGenerator::default();
        let mut rec = Recording {
            ids: SpanIds {
                trace_id: TraceId::INVALID,
                span_id: generator.new_span_id(),
            },
            parent_span_id: SpanId::INVALID,
            parent_is_remote: true,
            name: Cow::Borrowed(meta.name()),
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes: 0,
            events: SpanEvents::default(),
            status: Status::Unset,
        };
        if meta.target() == SPAN {
            let parent = span.parent();
            let ids = parent.and_then(|p| p.extensions().get::<Recording>().map(|r| r.ids));
            if let Some(p) = ids {
                rec.ids.trace_id = p.trace_id;
                rec.parent_span_id = p.span_id;
                rec.parent_is_remote = false;
            }
        }
        attrs.record(&mut Fields { rec: &mut rec });
        if rec.ids.trace_id == TraceId::INVALID {
            rec.ids.trace_id = generator.new_trace_id();
        }
        span.extensions_mut().insert(rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        let Some(span) = cx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(rec) = ext.get_mut::<Recording>() {
            values.record(&mut Fields { rec });
        }
    }

    fn on_event(&self, event: &Event<'_>, cx: Context<'_, S>) {
        let Some(span) = cx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<Recording>() else {
            return;
        };
        if rec.events.events.len() >= EVENTS_MAX {
            rec.events.dropped_count += 1;
            return;
        }
        let mut fields = EventFields {
            name: Cow::Borrowed("event"),
            attributes: Vec::new(),
        };
        event.record(&mut fields);
        rec.events.events.push(opentelemetry::trace::Event::new(
            fields.name,
            SystemTime::now(),
            fields.attributes,
            0,
        ));
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        let Some(span) = cx.span(&id) else { return };
        let Some(rec) = span.extensions_mut().remove::<Recording>() else {
            return;
        };
        super::export::push(finish(rec));
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("origin")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

thread_local! {
    /// The instrumentation scope, built once per thread (it is cloned into every span).
    static SCOPE: InstrumentationScope = scope();
}

fn finish(rec: Recording) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            rec.ids.trace_id,
            rec.ids.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: rec.parent_span_id,
        parent_span_is_remote: rec.parent_is_remote && rec.parent_span_id != SpanId::INVALID,
        span_kind: rec.kind,
        name: rec.name,
        start_time: rec.start,
        end_time: SystemTime::now(),
        attributes: rec.attributes,
        dropped_attributes_count: rec.dropped_attributes,
        events: rec.events,
        links: SpanLinks::default(),
        status: rec.status,
        instrumentation_scope: SCOPE.with(|s| s.clone()),
    }
}

/// The ids of `id`'s innermost recorded span (itself or an ancestor: the log-only span of a
/// request is current while the request runs).
pub fn ids_of(registry: &tracing_subscriber::Registry, id: &Id) -> Option<SpanIds> {
    let span = registry.span(id)?;
    for s in span.scope() {
        if let Some(rec) = s.extensions().get::<Recording>() {
            return Some(rec.ids);
        }
    }
    None
}
