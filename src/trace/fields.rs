//! Reading `tracing` fields into a span being recorded: `otel.*` fields steer the span
//! (name, kind, ids), the others become its attributes; an event's become an event's.

use std::borrow::Cow;

use opentelemetry::trace::{SpanId, TraceId};
use tracing::field::{Field, Visit};

use super::record::{Attribute, Finished, Kind, Value};

/// Attributes kept per span: the server span has about 15; more are dropped and counted.
pub(super) const ATTRIBUTES_MAX: usize = 32;

/// Reads a span's fields: `otel.*` steer the span, the rest become attributes (an empty
/// string is no attribute).
pub(super) struct Fields<'a> {
    pub(super) rec: &'a mut Finished,
    /// The fields a span is created with: each key comes once, so an attribute is appended
    /// without looking for an earlier value of its key (a recorded value replaces one).
    pub(super) new: bool,
}

impl Fields<'_> {
    fn push(&mut self, key: &'static str, value: Value) {
        set(self.rec, key, value, self.new);
    }
}

/// Sets attribute `key` of `rec`: replaces its value, or appends it (`new`: the span is
/// being created and each key comes once, so no earlier value is looked for); past
/// [`ATTRIBUTES_MAX`] it is dropped and counted.
pub(super) fn set(rec: &mut Finished, key: &'static str, value: Value, new: bool) {
    let attrs = &mut rec.attributes;
    let old = if new {
        None
    } else {
        attrs.iter_mut().find(|a| a.0 == key)
    };
    if let Some(old) = old {
        old.1 = value;
    } else if attrs.len() < ATTRIBUTES_MAX {
        attrs.push((key, value));
    } else {
        rec.dropped_attributes += 1;
    }
}

impl Fields<'_> {
    /// A string field, owned once (`record_debug` formats into it; nothing copies it again).
    fn record_owned(&mut self, field: &Field, value: String) {
        match field.name() {
            "otel.name" => self.rec.name = Cow::Owned(value),
            "otel.kind" => self.kind(&value),
            "error" => {
                self.rec.error = Some(value.clone());
                self.push("error.message", Value::Str(value));
            }
            _ if value.is_empty() => {}
            name => self.push(name, Value::Str(value)),
        }
    }
}

impl Fields<'_> {
    fn kind(&mut self, value: &str) {
        self.rec.kind = match value {
            "server" => Kind::Server,
            "client" => Kind::Client,
            _ => Kind::Internal,
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            // Nothing to own for these.
            "otel.kind" => self.kind(value),
            "otel.name" | "error" => self.record_owned(field, value.to_string()),
            _ if value.is_empty() => {}
            name => self.push(name, Value::Str(value.to_string())),
        }
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
pub(super) struct EventFields {
    pub(super) name: Cow<'static, str>,
    pub(super) attributes: Vec<Attribute>,
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
