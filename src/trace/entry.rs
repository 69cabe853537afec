//! A finished span encoded where it ends: on the thread that recorded it, into one entry of
//! the OTLP `ScopeSpans.spans` field (key, length, `Span` message, written by prost), at the
//! end of the thread's export queue, one byte buffer. The exporter then only copies whole
//! entries into its batch: in protobuf a repeated message field is the concatenation of its
//! entries (`super::export`).
//!
//! The span is moved into one `Span` message per thread, reused from span to span: its owned
//! strings become the message's without a copy, the message's buffers keep their capacity,
//! and what the span held is freed on the thread that made it. Packing the span into a record
//! here and reading the record into a message on the exporter's thread copied every string
//! twice more and checked each as UTF-8 again (bench/results, tracing).

use std::cell::RefCell;

use opentelemetry::trace::{SpanId, TraceFlags};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, SpanFlags, Status};

use super::record::{nanos, Attribute, Finished, Kind, Value};

/// `ScopeSpans.spans`.
pub(super) const SCOPE_SPANS_SPANS: u32 = 2;

thread_local! {
    /// The message this thread's spans are moved into and encoded from.
    static MESSAGE: RefCell<Span> = RefCell::new(Span::default());
}

/// Appends `span` to `out` as one `ScopeSpans.spans` entry.
pub(super) fn encode(span: Finished, out: &mut Vec<u8>) {
    let mut span = Some(span);
    let _ = MESSAGE.try_with(|m| {
        let Ok(mut m) = m.try_borrow_mut() else {
            return;
        };
        if let Some(span) = span.take() {
            fill(span, &mut m);
            prost::encoding::message::encode(SCOPE_SPANS_SPANS, &*m, out);
        }
    });
    // The thread's message is gone (the thread is ending) or in use: a message of its own.
    if let Some(span) = span {
        let mut m = Span::default();
        fill(span, &mut m);
        prost::encoding::message::encode(SCOPE_SPANS_SPANS, &m, out);
    }
}

/// Bytes of the entry at the start of `buf` (key, length, message); None when `buf` holds
/// no whole entry (at its end; never expected before it).
pub(super) fn entry_len(buf: &[u8]) -> Option<usize> {
    let mut rest = buf;
    prost::encoding::decode_varint(&mut rest).ok()?;
    let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
    (len <= rest.len()).then(|| buf.len() - rest.len() + len)
}

fn set_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.clear();
    out.extend_from_slice(bytes);
}

/// Moves `list` over `out`'s entries, reusing their strings where a value is not owned.
fn fill_attributes(list: Vec<Attribute>, out: &mut Vec<KeyValue>) {
    out.truncate(list.len());
    for (i, (key, value)) in list.into_iter().enumerate() {
        if i == out.len() {
            out.push(KeyValue::default());
        }
        let kv = &mut out[i];
        kv.key.clear();
        kv.key.push_str(key);
        kv.key_strindex = 0;
        // The entry's last value goes; its string is kept for a static value.
        let old = kv.value.take().and_then(|v| v.value);
        let value = match value {
            Value::Str(s) => any_value::Value::StringValue(s),
            Value::Static(s) => {
                let mut buf = match old {
                    Some(any_value::Value::StringValue(buf)) => buf,
                    _ => String::new(),
                };
                buf.clear();
                buf.push_str(s);
                any_value::Value::StringValue(buf)
            }
            Value::Int(i) => any_value::Value::IntValue(i),
            Value::Bool(b) => any_value::Value::BoolValue(b),
        };
        kv.value = Some(AnyValue { value: Some(value) });
    }
}

/// Moves `span` into `out`, a message reused from span to span: every field is set, so
/// nothing of the span before is left.
fn fill(span: Finished, out: &mut Span) {
    set_bytes(&mut out.trace_id, &span.trace_id.to_bytes());
    set_bytes(&mut out.span_id, &span.span_id.to_bytes());
    let has_parent = span.parent_span_id != SpanId::INVALID;
    out.parent_span_id.clear();
    if has_parent {
        out.parent_span_id
            .extend_from_slice(&span.parent_span_id.to_bytes());
    }
    out.trace_state.clear();
    let mut flags = u32::from(TraceFlags::SAMPLED.to_u8());
    flags |= SpanFlags::ContextHasIsRemoteMask as u32;
    if span.parent_is_remote && has_parent {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    out.flags = flags;
    out.kind = match span.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
    } as i32;
    out.start_time_unix_nano = nanos(span.start);
    out.end_time_unix_nano = nanos(span.end);
    fill_attributes(span.attributes, &mut out.attributes);
    out.dropped_attributes_count = span.dropped_attributes;
    out.name.clear();
    if !(span.kind == Kind::Server && server_name(&out.attributes, &mut out.name)) {
        out.name.push_str(&span.name);
    }
    out.events.truncate(span.events.len());
    for (i, event) in span.events.into_iter().enumerate() {
        if i == out.events.len() {
            out.events.push(span::Event::default());
        }
        let e = &mut out.events[i];
        e.time_unix_nano = nanos(event.time);
        e.name.clear();
        e.name.push_str(&event.name);
        fill_attributes(event.attributes, &mut e.attributes);
        e.dropped_attributes_count = 0;
    }
    out.dropped_events_count = span.dropped_events;
    out.links.clear();
    out.dropped_links_count = 0;
    let status = out.status.get_or_insert_with(Status::default);
    match span.error {
        Some(e) => {
            status.code = status::StatusCode::Error as i32;
            status.message = e;
        }
        None => {
            status.code = status::StatusCode::Unset as i32;
            status.message.clear();
        }
    }
}

/// A server span's name, `{method} {route}` (the HTTP semantic conventions), once its route
/// is known: composed from the two attributes when the span is encoded, rather than formatted
/// while the request runs. Written at the end of `out`; false (nothing written) without both.
fn server_name(attributes: &[KeyValue], out: &mut String) -> bool {
    let text = |key: &str| {
        attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    };
    let (Some(method), Some(route)) = (text("http.request.method"), text("http.route")) else {
        return false;
    };
    out.push_str(method);
    out.push(' ');
    out.push_str(route);
    true
}
