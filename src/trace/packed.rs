//! A finished span packed into its thread's export queue: written, when it ends, as a compact
//! record at the end of the thread's one byte buffer, and read back by the exporter into a
//! reused OTLP message.
//!
//! The span's strings and lists are freed on the thread that made them, as it packs them, and
//! the exporter reads one buffer front to back. Handing the exporter the span's own
//! allocations instead cost a worker the collection of their cross-thread frees, and the
//! exporter a cache miss on every list and string it touched first on its own core: together
//! about 1.5 µs of a recorded 4 KiB blob GET (bench/results, tracing).
//!
//! A record: ids (trace 16 bytes, span 8, parent 8), remote flag, kind, start and end (ns),
//! dropped counts, name, error (flag, text), attributes (count, then key and value each),
//! events (count; time, name, attributes each). Integers are little-endian, strings a `u32`
//! length and their bytes, values a tag (string, int, bool) and the value. The buffer is
//! written and read only by this module.

use opentelemetry::trace::{SpanId, TraceFlags};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, SpanFlags, Status};

use super::record::{nanos, Attribute, Finished, Kind, Value};

const STR: u8 = 0;
const INT: u8 = 1;
const BOOL: u8 = 2;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // A value past 4 GiB cannot be recorded (the request head and storage keys are bounded
    // far below); it would be cut, not misread.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

/// A string value: its tag, then the string.
fn put_text(out: &mut Vec<u8>, s: &str) {
    out.push(STR);
    put_str(out, s);
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_attributes(out: &mut Vec<u8>, attributes: &[Attribute]) {
    put_count(out, attributes.len());
    for (key, value) in attributes {
        put_str(out, key);
        match value {
            Value::Str(s) => put_text(out, s),
            Value::Static(s) => put_text(out, s),
            Value::Int(i) => {
                out.push(INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Bool(b) => {
                out.push(BOOL);
                out.push(u8::from(*b));
            }
        }
    }
}

/// Appends `span` to `out` as one record (and frees its strings and lists, here).
pub(super) fn pack(span: Finished, out: &mut Vec<u8>) {
    out.extend_from_slice(&span.trace_id.to_bytes());
    out.extend_from_slice(&span.span_id.to_bytes());
    out.extend_from_slice(&span.parent_span_id.to_bytes());
    out.push(u8::from(span.parent_is_remote));
    out.push(match span.kind {
        Kind::Internal => 0,
        Kind::Server => 1,
        Kind::Client => 2,
    });
    out.extend_from_slice(&nanos(span.start).to_le_bytes());
    out.extend_from_slice(&nanos(span.end).to_le_bytes());
    out.extend_from_slice(&span.dropped_attributes.to_le_bytes());
    out.extend_from_slice(&span.dropped_events.to_le_bytes());
    put_str(out, &span.name);
    match &span.error {
        Some(e) => {
            out.push(1);
            put_str(out, e);
        }
        None => out.push(0),
    }
    put_attributes(out, &span.attributes);
    put_count(out, span.events.len());
    for e in &span.events {
        out.extend_from_slice(&nanos(e.time).to_le_bytes());
        put_str(out, &e.name);
        put_attributes(out, &e.attributes);
    }
}

/// Reads records front to back; None at the end (or, never expected, a short record).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        if len > self.buf.len() {
            return None;
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        // Written from a &str by `pack`.
        std::str::from_utf8(s).ok()
    }

    /// Reads `n` attributes over `out`'s, reusing its entries' strings.
    fn attributes(&mut self, out: &mut Vec<KeyValue>) -> Option<()> {
        let n = self.u32()? as usize;
        out.truncate(n);
        for i in 0..n {
            let key = self.str()?;
            if i == out.len() {
                out.push(KeyValue::default());
            }
            let kv = &mut out[i];
            kv.key.clear();
            kv.key.push_str(key);
            kv.key_strindex = 0;
            // The string of the entry's last value, if it had one, takes this one's.
            let old = kv.value.take().and_then(|v| v.value);
            let value = match self.u8()? {
                STR => {
                    let mut buf = match old {
                        Some(any_value::Value::StringValue(buf)) => buf,
                        _ => String::new(),
                    };
                    buf.clear();
                    buf.push_str(self.str()?);
                    any_value::Value::StringValue(buf)
                }
                INT => any_value::Value::IntValue(i64::from_le_bytes(self.take()?)),
                BOOL => any_value::Value::BoolValue(self.u8()? != 0),
                _ => return None,
            };
            kv.value = Some(AnyValue { value: Some(value) });
        }
        Some(())
    }

    /// Reads the next record over `out`, a message reused from span to span (its buffers
    /// kept, so a span costs no allocation once they have grown); false at the end.
    pub(super) fn next_into(&mut self, out: &mut Span) -> bool {
        !self.buf.is_empty() && self.read(out).is_some()
    }

    fn read(&mut self, out: &mut Span) -> Option<()> {
        let trace_id: [u8; 16] = self.take()?;
        let span_id: [u8; 8] = self.take()?;
        let parent: [u8; 8] = self.take()?;
        let parent_is_remote = self.u8()? != 0;
        let kind = match self.u8()? {
            1 => Kind::Server,
            2 => Kind::Client,
            _ => Kind::Internal,
        };
        let start = self.u64()?;
        let end = self.u64()?;
        let dropped_attributes = self.u32()?;
        let dropped_events = self.u32()?;
        let name = self.str()?;
        let error = match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        };
        let bytes = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.clear();
            out.extend_from_slice(bytes);
        };
        bytes(&mut out.trace_id, &trace_id);
        bytes(&mut out.span_id, &span_id);
        let has_parent = SpanId::from_bytes(parent) != SpanId::INVALID;
        out.parent_span_id.clear();
        if has_parent {
            out.parent_span_id.extend_from_slice(&parent);
        }
        out.trace_state.clear();
        let mut flags = u32::from(TraceFlags::SAMPLED.to_u8());
        flags |= SpanFlags::ContextHasIsRemoteMask as u32;
        if parent_is_remote && has_parent {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        out.flags = flags;
        out.kind = match kind {
            Kind::Internal => span::SpanKind::Internal,
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
        } as i32;
        out.start_time_unix_nano = start;
        out.end_time_unix_nano = end;
        self.attributes(&mut out.attributes)?;
        out.dropped_attributes_count = dropped_attributes;
        out.name.clear();
        if !(kind == Kind::Server && server_name(&out.attributes, &mut out.name)) {
            out.name.push_str(name);
        }
        let events = self.u32()? as usize;
        out.events.truncate(events);
        for i in 0..events {
            if i == out.events.len() {
                out.events.push(span::Event::default());
            }
            let e = &mut out.events[i];
            e.time_unix_nano = self.u64()?;
            e.name.clear();
            e.name.push_str(self.str()?);
            self.attributes(&mut e.attributes)?;
            e.dropped_attributes_count = 0;
        }
        out.dropped_events_count = dropped_events;
        out.links.clear();
        out.dropped_links_count = 0;
        let status = out.status.get_or_insert_with(Status::default);
        status.message.clear();
        match error {
            Some(e) => {
                status.code = status::StatusCode::Error as i32;
                status.message.push_str(e);
            }
            None => status.code = status::StatusCode::Unset as i32,
        }
        Some(())
    }
}

/// A server span's name, `{method} {route}` (the HTTP semantic conventions), once its route
/// is known: composed here, on the exporter's thread, from the two attributes, rather than
/// formatted on the worker for every recorded request. Written at the end of `out`; false
/// (nothing written) without both.
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
