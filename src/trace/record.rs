//! A finished span as the layer hands it to the exporter: compact (attribute keys are the
//! fields' static names, values owned once), and turned into the OTLP message on the
//! exporter's thread by moving its strings, not copying them. The SDK's `SpanData` and its
//! grouping by scope cost a copy of every string and a hash of the scope per span: every
//! span here has the one resource and the one scope of this process.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, SpanFlags, Status};

/// An attribute's value: what `tracing` fields record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    /// A value known for the life of the process (a route template, an action, a method):
    /// kept as the reference on the recording thread, copied only on the exporter's.
    Static(&'static str),
    Int(i64),
    Bool(bool),
}

/// An attribute: the field's name and its value.
pub type Attribute = (&'static str, Value);

/// The OpenTelemetry span kinds Origin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal,
    Server,
    Client,
}

/// An event on a span (a retry, a cache miss).
#[derive(Debug)]
pub struct Event {
    pub name: Cow<'static, str>,
    pub time: SystemTime,
    pub attributes: Vec<Attribute>,
}

/// A span that has ended, waiting for export.
#[derive(Debug)]
pub struct Finished {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for a root.
    pub parent_span_id: SpanId,
    /// The parent is in another process (an incoming `traceparent`).
    pub parent_is_remote: bool,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attribute>,
    pub dropped_attributes: u32,
    pub events: Vec<Event>,
    pub dropped_events: u32,
    /// The span failed, with this description.
    pub error: Option<String>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn key_value((key, value): Attribute) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s),
        Value::Static(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

fn attributes(list: Vec<Attribute>) -> Vec<KeyValue> {
    list.into_iter().map(key_value).collect()
}

/// A server span's name, `{method} {route}` (the HTTP semantic conventions), once its route
/// is known: composed here, on the exporter's thread, from the two attributes, rather than
/// formatted on the worker for every recorded request.
fn server_name(attributes: &[Attribute]) -> Option<String> {
    let text = |key: &str| {
        attributes
            .iter()
            .find(|a| a.0 == key)
            .and_then(|a| match &a.1 {
                Value::Str(s) => Some(s.as_str()),
                Value::Static(s) => Some(*s),
                _ => None,
            })
    };
    Some(format!(
        "{} {}",
        text("http.request.method")?,
        text("http.route")?
    ))
}

impl Finished {
    /// The OTLP `Span` message, as the SDK's conversion builds it from `SpanData`.
    pub fn into_proto(self) -> Span {
        let kind = match self.kind {
            Kind::Internal => span::SpanKind::Internal,
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
        };
        let remote = self.parent_is_remote && self.parent_span_id != SpanId::INVALID;
        let mut flags = u32::from(TraceFlags::SAMPLED.to_u8());
        flags |= SpanFlags::ContextHasIsRemoteMask as u32;
        if remote {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        let status = match self.error {
            Some(message) => Status {
                code: status::StatusCode::Error as i32,
                message,
            },
            None => Status {
                code: status::StatusCode::Unset as i32,
                message: String::new(),
            },
        };
        Span {
            trace_id: self.trace_id.to_bytes().to_vec(),
            span_id: self.span_id.to_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: if self.parent_span_id == SpanId::INVALID {
                Vec::new()
            } else {
                self.parent_span_id.to_bytes().to_vec()
            },
            flags,
            name: match self.kind {
                Kind::Server => server_name(&self.attributes),
                _ => None,
            }
            .unwrap_or_else(|| self.name.into_owned()),
            kind: kind as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(self.end),
            attributes: attributes(self.attributes),
            dropped_attributes_count: self.dropped_attributes,
            events: self
                .events
                .into_iter()
                .map(|e| span::Event {
                    time_unix_nano: nanos(e.time),
                    name: e.name.into_owned(),
                    attributes: attributes(e.attributes),
                    dropped_attributes_count: 0,
                })
                .collect(),
            dropped_events_count: self.dropped_events,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(status),
        }
    }
}
