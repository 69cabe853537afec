//! A packed span (`super::packed`) written as the protobuf of the OTLP `Span` message
//! (`opentelemetry-proto`'s `trace::v1::Span`), straight from its record: the exporter's
//! thread reads each string once, as it copies it into the batch.
//!
//! Reading a record into a reused `Span` message first and letting prost encode that copied
//! every string twice, checked each as UTF-8 again and walked the message twice (its lengths,
//! then its bytes): 1.1 µs of the 1.9 µs the exporter spent per recorded 4 KiB blob GET, in a
//! profile at 100 % sampling (bench/results, tracing). The bytes are prost's for the same
//! message, field for field: fields in number order, a field at its default left out but for
//! a oneof's value and a present `status` (`trace::tests` compares them with prost's encoding
//! of the messages built by the reference conversion).

use opentelemetry::trace::TraceFlags;
use opentelemetry_proto::tonic::trace::v1::{span, status, SpanFlags};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use super::packed::{Packed, Reader};
use super::record::Kind;

// `Span`'s fields (`opentelemetry/proto/trace/v1/trace.proto`).
const TRACE_ID: u32 = 1;
const SPAN_ID: u32 = 2;
const PARENT_SPAN_ID: u32 = 4;
const NAME: u32 = 5;
const KIND: u32 = 6;
const START_TIME: u32 = 7;
const END_TIME: u32 = 8;
const ATTRIBUTES: u32 = 9;
const DROPPED_ATTRIBUTES: u32 = 10;
const EVENTS: u32 = 11;
const DROPPED_EVENTS: u32 = 12;
const STATUS: u32 = 15;
const FLAGS: u32 = 16;
// `Span.Event`'s.
const EVENT_TIME: u32 = 1;
const EVENT_NAME: u32 = 2;
const EVENT_ATTRIBUTES: u32 = 3;
// `Status`'s.
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;
// `KeyValue`'s (`common.proto`), and `AnyValue`'s oneof.
const KEY: u32 = 1;
const VALUE: u32 = 2;
const STRING_VALUE: u32 = 1;
const BOOL_VALUE: u32 = 2;
const INT_VALUE: u32 = 3;

/// Appends the next record of `spans` to `out` as field `tag` holding its `Span` message
/// (`scratch` holds the message until its length is known); false at the end.
pub(super) fn encode_next(
    spans: &mut Reader<'_>,
    tag: u32,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> bool {
    if spans.is_empty() {
        return false;
    }
    scratch.clear();
    if span(spans, scratch).is_none() {
        return false;
    }
    frame(tag, scratch.len(), out);
    out.extend_from_slice(scratch);
    true
}

fn span(r: &mut Reader<'_>, out: &mut Vec<u8>) -> Option<()> {
    let trace_id: [u8; 16] = r.take()?;
    let span_id: [u8; 8] = r.take()?;
    let parent: [u8; 8] = r.take()?;
    let parent_is_remote = r.u8()? != 0;
    let kind = match r.kind()? {
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Internal => span::SpanKind::Internal,
    };
    let start = r.u64()?;
    let end = r.u64()?;
    let dropped_attributes = r.u32()?;
    let dropped_events = r.u32()?;
    let name = r.str()?;
    let error = match r.u8()? {
        0 => None,
        _ => Some(r.str()?),
    };
    let has_parent = parent != [0; 8];
    bytes_field(TRACE_ID, &trace_id, out);
    bytes_field(SPAN_ID, &span_id, out);
    if has_parent {
        bytes_field(PARENT_SPAN_ID, &parent, out);
    }
    let route = match kind {
        span::SpanKind::Server => server_name(*r),
        _ => None,
    };
    match route {
        Some((method, route)) => {
            frame(NAME, method.len() + 1 + route.len(), out);
            out.extend_from_slice(method);
            out.push(b' ');
            out.extend_from_slice(route);
        }
        None => bytes_field(NAME, name, out),
    }
    varint_field(KIND, kind as u64, out);
    fixed64_field(START_TIME, start, out);
    fixed64_field(END_TIME, end, out);
    for _ in 0..r.u32()? {
        let (key, value) = r.attribute()?;
        key_value(ATTRIBUTES, key, &value, out);
    }
    varint_field(DROPPED_ATTRIBUTES, dropped_attributes.into(), out);
    for _ in 0..r.u32()? {
        let time = r.u64()?;
        let name = r.str()?;
        let n = r.u32()?;
        let mut len = fixed64_len(EVENT_TIME, time) + bytes_len(EVENT_NAME, name);
        let mut probe = *r;
        for _ in 0..n {
            let (key, value) = probe.attribute()?;
            len += field_len(EVENT_ATTRIBUTES, key_value_len(key, &value));
        }
        frame(EVENTS, len, out);
        fixed64_field(EVENT_TIME, time, out);
        bytes_field(EVENT_NAME, name, out);
        for _ in 0..n {
            let (key, value) = r.attribute()?;
            key_value(EVENT_ATTRIBUTES, key, &value, out);
        }
    }
    varint_field(DROPPED_EVENTS, dropped_events.into(), out);
    // No links. The status is always present, empty when unset.
    let (code, message) = match error {
        Some(e) => (status::StatusCode::Error as u64, e),
        None => (status::StatusCode::Unset as u64, &[][..]),
    };
    let status_len = bytes_len(STATUS_MESSAGE, message) + varint_len(STATUS_CODE, code);
    frame(STATUS, status_len, out);
    bytes_field(STATUS_MESSAGE, message, out);
    varint_field(STATUS_CODE, code, out);
    let mut flags = u32::from(TraceFlags::SAMPLED.to_u8());
    flags |= SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote && has_parent {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    field_key(FLAGS, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&flags.to_le_bytes());
    Some(())
}

/// A server span's name, `{method} {route}` (the HTTP semantic conventions), once its route
/// is known: composed here, on the exporter's thread, from the two attributes (the first of
/// each key, if a string) read by `attributes`, a copy of the reader at the span's attributes,
/// rather than formatted on the worker for every recorded request.
fn server_name<'a>(mut attributes: Reader<'a>) -> Option<(&'a [u8], &'a [u8])> {
    let (mut method, mut route) = (None, None);
    for _ in 0..attributes.u32()? {
        let (key, value) = attributes.attribute()?;
        let slot = match key {
            b"http.request.method" => &mut method,
            b"http.route" => &mut route,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(match value {
                Packed::Str(s) => Some(s),
                _ => None,
            });
        }
    }
    Some((method??, route??))
}

/// A `KeyValue` as field `tag`.
fn key_value(tag: u32, key: &[u8], value: &Packed<'_>, out: &mut Vec<u8>) {
    frame(tag, key_value_len(key, value), out);
    bytes_field(KEY, key, out);
    frame(VALUE, any_value_len(value), out);
    match *value {
        Packed::Str(s) => {
            // A oneof's value is written even when empty.
            frame(STRING_VALUE, s.len(), out);
            out.extend_from_slice(s);
        }
        Packed::Int(i) => {
            field_key(INT_VALUE, WireType::Varint, out);
            varint(i as u64, out);
        }
        Packed::Bool(b) => {
            field_key(BOOL_VALUE, WireType::Varint, out);
            varint(u64::from(b), out);
        }
    }
}

fn key_value_len(key: &[u8], value: &Packed<'_>) -> usize {
    bytes_len(KEY, key) + field_len(VALUE, any_value_len(value))
}

fn any_value_len(value: &Packed<'_>) -> usize {
    match *value {
        Packed::Str(s) => field_len(STRING_VALUE, s.len()),
        Packed::Int(i) => key_len(INT_VALUE) + encoded_len_varint(i as u64),
        Packed::Bool(_) => key_len(BOOL_VALUE) + 1,
    }
}

/// The key and length of a length-delimited field whose content follows.
pub(super) fn frame(tag: u32, len: usize, out: &mut Vec<u8>) {
    field_key(tag, WireType::LengthDelimited, out);
    varint(len as u64, out);
}

/// A field's key: prost's `encode_key`, inline for a tag below 16 (one byte), as every tag
/// but `FLAGS` is.
#[inline]
fn field_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    if tag < 16 {
        out.push(((tag << 3) | wire_type as u32) as u8);
    } else {
        encode_key(tag, wire_type, out);
    }
}

/// prost's `encode_varint`, inline for a value below 128 (one byte): most lengths here.
#[inline]
fn varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        encode_varint(value, out);
    }
}

/// Bytes of a length-delimited field `tag` with `len` bytes of content.
pub(super) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A `bytes` or `string` field, left out when empty.
fn bytes_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    if !bytes.is_empty() {
        frame(tag, bytes.len(), out);
        out.extend_from_slice(bytes);
    }
}

fn bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        field_len(tag, bytes.len())
    }
}

/// A `uint32` or enumeration field, left out at 0.
fn varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        field_key(tag, WireType::Varint, out);
        varint(value, out);
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A `fixed64` field, left out at 0.
fn fixed64_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        field_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + 8
    }
}
