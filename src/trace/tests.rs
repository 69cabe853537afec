use std::collections::HashMap;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

use super::remote_parent;

fn parent_of(value: &str) -> Option<(TraceId, SpanId, bool)> {
    let headers: HashMap<&str, &str> = [("traceparent", value)].into();
    let cx = remote_parent(|name| headers.get(name).copied())?;
    let sc = cx.span().span_context().clone();
    Some((sc.trace_id(), sc.span_id(), sc.is_sampled()))
}

/// A W3C traceparent is read with its ids and sampled flag; malformed ones are ignored.
#[test]
fn traceparent_is_read_and_checked() {
    let (t, s, sampled) =
        parent_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
    assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.to_string(), "00f067aa0ba902b7");
    assert!(sampled);
    let (_, _, sampled) =
        parent_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
    assert!(!sampled);
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "garbage",
    ] {
        assert!(parent_of(bad).is_none(), "{bad}");
    }
    let none: HashMap<&str, &str> = HashMap::new();
    assert!(remote_parent(|name| none.get(name).copied()).is_none());
}

/// A batch encodes to an OTLP request that decodes back with its ids, names and resource.
#[test]
fn a_batch_encodes_as_otlp_protobuf() {
    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_sdk::trace::SpanData;
    use prost::Message;

    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
    let span = SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: "GET /v2/{name}/blobs/{digest}".into(),
        start_time: std::time::SystemTime::now(),
        end_time: std::time::SystemTime::now(),
        attributes: vec![KeyValue::new("oci.repository", "a/b")],
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("origin").build(),
    };
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("origin-test")
        .build();
    let body = super::export::encode(vec![span], &(&resource).into());
    let decoded = ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes");
    let rs = &decoded.resource_spans[0];
    let service = rs.resource.as_ref().expect("resource").attributes.iter();
    assert!(service
        .filter(|kv| kv.key == "service.name")
        .any(|kv| format!("{:?}", kv.value).contains("origin-test")));
    let s = &rs.scope_spans[0].spans[0];
    assert_eq!(s.trace_id, trace_id.to_bytes().to_vec());
    assert_eq!(s.name, "GET /v2/{name}/blobs/{digest}");
    assert!(s.parent_span_id.is_empty());
}
