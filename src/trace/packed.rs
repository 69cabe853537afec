//! A finished span packed into its thread's export queue: written, when it ends, as a compact
//! record at the end of the thread's one byte buffer, and read by the exporter
//! ([`Reader`]), which writes it as OTLP protobuf (`super::wire`).
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

/// Reads records front to back (`super::wire` reads them into OTLP); None for a short record
/// (never expected: only `pack` writes the buffer).
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

/// An attribute's value as packed.
pub(super) enum Packed<'a> {
    /// A string's bytes (written from a `&str`).
    Str(&'a [u8]),
    Int(i64),
    Bool(bool),
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    /// A string's bytes: UTF-8, as `pack` wrote them from a `&str`, and copied as they are
    /// into protobuf (whose strings are UTF-8), so not checked again here.
    pub(super) fn str(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > self.buf.len() {
            return None;
        }
        let (s, rest) = self.buf.split_at(len);
        self.buf = rest;
        Some(s)
    }

    /// A span's kind, as `pack` wrote it.
    pub(super) fn kind(&mut self) -> Option<Kind> {
        Some(match self.u8()? {
            1 => Kind::Server,
            2 => Kind::Client,
            _ => Kind::Internal,
        })
    }

    /// One attribute: its key and value.
    pub(super) fn attribute(&mut self) -> Option<(&'a [u8], Packed<'a>)> {
        let key = self.str()?;
        let value = match self.u8()? {
            STR => Packed::Str(self.str()?),
            INT => Packed::Int(i64::from_le_bytes(self.take()?)),
            BOOL => Packed::Bool(self.u8()? != 0),
            _ => return None,
        };
        Some((key, value))
    }
}
