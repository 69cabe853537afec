//! A span as the subscriber records it: compact (attribute keys are the fields' static
//! names, values owned once), packed into its thread's export queue when it ends
//! (`super::packed`) and read from there into the OTLP message on the exporter's thread. The
//! SDK's `SpanData` and its grouping by scope cost a copy of every string and a hash of the
//! scope per span: every span here has the one resource and the one scope of this process.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceId};

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

/// A span being recorded; packed for export when it ends.
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

pub(super) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
