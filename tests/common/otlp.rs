//! What an OTLP/HTTP receiver got, decoded with the OpenTelemetry proto types: spans with
//! their ids, parents, names, kinds, attributes (as strings) and event names.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

use super::receiver::{Received, Receiver};

pub const WAIT: Duration = Duration::from_secs(15);

/// One exported span, decoded.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub kind: i32,
    pub attrs: HashMap<String, String>,
    pub events: Vec<String>,
}

pub const KIND_SERVER: i32 = 2;

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn decode(got: &[Received]) -> Vec<Span> {
    let mut out = Vec::new();
    for r in got.iter().filter(|r| r.path == "/v1/traces") {
        let req = ExportTraceServiceRequest::decode(r.body.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attrs = s
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(Value::IntValue(i)) => i.to_string(),
                                Some(Value::BoolValue(b)) => b.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    out.push(Span {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        attrs,
                        events: s.events.iter().map(|e| e.name.clone()).collect(),
                    });
                }
            }
        }
    }
    out
}

pub fn server_spans(spans: &[Span]) -> Vec<&Span> {
    spans.iter().filter(|s| s.kind == KIND_SERVER).collect()
}

/// The chain of parents from `s` up to its trace's root, by span id.
pub fn ancestors<'a>(spans: &'a [Span], s: &'a Span) -> Vec<&'a Span> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut out = Vec::new();
    let mut at = s;
    while let Some(p) = by_id.get(at.parent.as_str()) {
        out.push(*p);
        at = p;
    }
    out
}

/// A `[tracing]` section exporting to `endpoint` at `ratio`, with a resource attribute and a
/// header, batches sent after 100 ms.
pub fn tracing_section(endpoint: &str, ratio: f64) -> String {
    format!(
        "[tracing]\nenabled = true\nendpoint = \"{endpoint}\"\nsample_ratio = {ratio}\n\
         batch_delay = \"100ms\"\nservice_name = \"origin-test\"\n\
         [tracing.resource]\n\"deployment.environment\" = \"test\"\n\
         [tracing.headers]\nx-api-key = \"secret-key\"\n"
    )
}

/// Waits until the spans received satisfy `pred`; returns them either way.
pub fn spans_until(rx: &Receiver, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = decode(&rx.received());
        if pred(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
