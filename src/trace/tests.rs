use std::collections::HashMap;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};

use opentelemetry::trace::TraceFlags;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, SpanFlags, Status};

use super::record::{nanos, Attribute, Finished, Kind, Value};
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

/// A server span with a remote parent, attributes, an event and an error, and its child.
fn two_spans() -> (super::record::Finished, super::record::Finished) {
    use std::time::{Duration, SystemTime};

    use super::record::{Event, Finished, Kind, Value};

    let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let root = Finished {
        trace_id,
        span_id: SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
        parent_span_id: SpanId::from_hex("1111111111111111").expect("hex"),
        parent_is_remote: true,
        name: "GET /v2/{name}/blobs/{digest}".into(),
        kind: Kind::Server,
        start,
        end: start + Duration::from_micros(1500),
        attributes: vec![
            ("oci.repository", Value::Str("a/b".into())),
            ("http.response.status_code", Value::Int(500)),
        ],
        dropped_attributes: 2,
        events: vec![Event {
            name: "retry".into(),
            time: start + Duration::from_micros(700),
            attributes: vec![("attempt", Value::Int(2))],
        }],
        dropped_events: 1,
        error: Some("500".into()),
    };
    let child = Finished {
        span_id: SpanId::from_hex("2222222222222222").expect("hex"),
        parent_span_id: SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
        parent_is_remote: false,
        name: "storage.get".into(),
        kind: Kind::Internal,
        attributes: vec![("key", Value::Str("blobs/x".into()))],
        dropped_attributes: 0,
        events: Vec::new(),
        dropped_events: 0,
        error: None,
        ..root
    };
    (root, child)
}

/// A batch encodes to an OTLP request that decodes back with its ids, names, kinds,
/// attributes, events, status and resource, as the SDK's conversion of the same span would.
#[test]
fn a_batch_encodes_as_otlp_protobuf() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::trace::v1::{span, status};
    use prost::Message;

    let (root, child) = two_spans();
    let trace_id = root.trace_id;
    let mut batch = super::export::Batch::default();
    batch.push_span(root);
    batch.push_span(child);
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name("origin-test")
        .build();
    let body = super::export::encode(&batch, &(&resource).into());
    let decoded = ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes");
    assert_eq!(decoded.resource_spans.len(), 1);
    let rs = &decoded.resource_spans[0];
    let service = rs.resource.as_ref().expect("resource").attributes.iter();
    assert!(service
        .filter(|kv| kv.key == "service.name")
        .any(|kv| format!("{:?}", kv.value).contains("origin-test")));
    let scope = &rs.scope_spans[0];
    assert_eq!(scope.scope.as_ref().expect("scope").name, "origin");
    let (s, c) = (&scope.spans[0], &scope.spans[1]);
    assert_eq!(s.trace_id, trace_id.to_bytes().to_vec());
    assert_eq!(
        s.span_id,
        vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
    );
    assert_eq!(s.parent_span_id, vec![0x11; 8]);
    assert_eq!(s.name, "GET /v2/{name}/blobs/{digest}");
    assert_eq!(s.kind, span::SpanKind::Server as i32);
    assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 1_500_000);
    // Sampled, and the parent is known to be remote (W3C flags and the OTLP remote bits).
    assert_eq!(s.flags, 0x01 | 0x100 | 0x200);
    assert_eq!(c.flags, 0x01 | 0x100);
    let value = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| {
        kv.value.as_ref().and_then(|v| v.value.clone())
    };
    assert_eq!(s.attributes[0].key, "oci.repository");
    assert_eq!(
        value(&s.attributes[0]),
        Some(any_value::Value::StringValue("a/b".into()))
    );
    assert_eq!(
        value(&s.attributes[1]),
        Some(any_value::Value::IntValue(500))
    );
    assert_eq!(s.dropped_attributes_count, 2);
    assert_eq!(s.events[0].name, "retry");
    assert_eq!(s.events[0].time_unix_nano - s.start_time_unix_nano, 700_000);
    assert_eq!(s.dropped_events_count, 1);
    let st = s.status.as_ref().expect("status");
    assert_eq!(
        (st.code, st.message.as_str()),
        (status::StatusCode::Error as i32, "500")
    );
    assert_eq!(c.trace_id, s.trace_id);
    assert_eq!(c.parent_span_id, s.span_id);
    assert_eq!(c.kind, span::SpanKind::Internal as i32);
    let st = c.status.as_ref().expect("status");
    assert_eq!(st.code, status::StatusCode::Unset as i32);
}

/// The request prost writes for `spans` under `resource`, built whole.
fn whole_request(
    resource: &opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema,
    spans: Vec<Span>,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;

    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.attributes.0.clone(),
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "origin".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: resource.schema_url.clone().unwrap_or_default(),
        }],
    }
    .encode_to_vec()
}

/// The body of a batch whose spans were packed, read back and encoded one by one as they
/// were taken is, byte for byte, prost's encoding of the whole request built from the same
/// spans by the reference conversion.
#[test]
fn a_batch_body_is_what_prost_writes_for_the_whole_request() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use prost::Message;

    for schema_url in [None, Some("https://opentelemetry.io/schemas/1.30.0")] {
        let mut builder = opentelemetry_sdk::Resource::builder_empty().with_service_name("o");
        if let Some(url) = schema_url {
            builder = builder.with_schema_url([opentelemetry::KeyValue::new("k", "v")], url);
        }
        let resource: ResourceAttributesWithSchema = (&builder.build()).into();
        let mut batch = super::export::Batch::default();
        let (root, child) = two_spans();
        batch.push_span(root);
        batch.push_span(child);
        let (root, child) = two_spans();
        let expected = whole_request(&resource, vec![into_proto(root), into_proto(child)]);
        let body = super::export::encode(&batch, &resource);
        assert_eq!(body, expected, "schema URL {schema_url:?}");
        let empty = super::export::encode(&super::export::Batch::default(), &resource);
        let decoded = ExportTraceServiceRequest::decode(empty.as_slice()).expect("decodes");
        assert!(decoded.resource_spans[0].scope_spans[0].spans.is_empty());
    }
}

/// Spans of every shape, one after another, are written as prost writes their messages:
/// with and without a parent, events, an error, a name from their route; values of each type
/// (a negative integer, an empty string, a string past 127 bytes) in the same places; and
/// nothing of a span is left over in the next (the message is written through a reused
/// buffer).
#[test]
fn spans_of_every_shape_are_written_as_prost_writes_them() {
    let spans = || {
        let (root, child) = two_spans();
        let (mut server, _) = two_spans();
        server.attributes = vec![
            ("http.request.method", Value::Static("GET")),
            ("http.route", Value::Static("/v2/{name}/tags/list")),
            ("client.port", Value::Int(40_000)),
        ];
        server.events.clear();
        server.error = None;
        let (_, mut typed) = two_spans();
        typed.attributes = vec![
            ("key", Value::Int(7)),
            ("a", Value::Bool(true)),
            ("b", Value::Str("z".repeat(300))),
            ("c", Value::Str(String::new())),
            ("d", Value::Int(-3)),
            ("e", Value::Bool(false)),
        ];
        // A server span whose route is not a string keeps its own name.
        let (mut unrouted, _) = two_spans();
        unrouted.attributes = vec![
            ("http.request.method", Value::Static("GET")),
            ("http.route", Value::Int(1)),
        ];
        unrouted.events[0].attributes = vec![
            ("what", Value::Str("w".repeat(200))),
            ("attempt", Value::Int(i64::MIN)),
        ];
        let (_, mut rootless) = two_spans();
        rootless.parent_span_id = SpanId::INVALID;
        [
            root,
            child,
            server,
            typed,
            unrouted,
            rootless,
            two_spans().1,
        ]
    };
    let resource = (&opentelemetry_sdk::Resource::builder_empty().build()).into();
    let mut batch = super::export::Batch::default();
    for span in spans() {
        batch.push_span(span);
    }
    let reference = spans().into_iter().map(into_proto).collect();
    let body = super::export::encode(&batch, &resource);
    assert_eq!(body, whole_request(&resource, reference));
}

/// A request that panics while its trace id is set (its task catches the panic) leaves the
/// thread's later log lines without that trace id.
#[test]
fn a_panic_under_a_trace_id_does_not_leave_it_set() {
    let id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("hex");
    let caught = std::panic::catch_unwind(|| super::with_trace_id(id, || panic!("request")));
    assert!(caught.is_err());
    assert_eq!(super::logged_trace_id(), None);
    // Nested: the inner id while inside, the outer one after.
    let inner = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex");
    super::with_trace_id(id, || {
        super::with_trace_id(inner, || assert_eq!(super::logged_trace_id(), Some(inner)));
        assert_eq!(super::logged_trace_id(), Some(id));
    });
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
/// is known.
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

/// The OTLP `Span` message of `span`, as the SDK's conversion builds it from `SpanData`:
/// the reference the exporter's packed path is checked against.
fn into_proto(span: Finished) -> Span {
    let kind = match span.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
    };
    let remote = span.parent_is_remote && span.parent_span_id != SpanId::INVALID;
    let mut flags = u32::from(TraceFlags::SAMPLED.to_u8());
    flags |= SpanFlags::ContextHasIsRemoteMask as u32;
    if remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    let status = match span.error {
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
        trace_id: span.trace_id.to_bytes().to_vec(),
        span_id: span.span_id.to_bytes().to_vec(),
        trace_state: String::new(),
        parent_span_id: if span.parent_span_id == SpanId::INVALID {
            Vec::new()
        } else {
            span.parent_span_id.to_bytes().to_vec()
        },
        flags,
        name: match span.kind {
            Kind::Server => server_name(&span.attributes),
            _ => None,
        }
        .unwrap_or_else(|| span.name.into_owned()),
        kind: kind as i32,
        start_time_unix_nano: nanos(span.start),
        end_time_unix_nano: nanos(span.end),
        attributes: attributes(span.attributes),
        dropped_attributes_count: span.dropped_attributes,
        events: span
            .events
            .into_iter()
            .map(|e| span::Event {
                time_unix_nano: nanos(e.time),
                name: e.name.into_owned(),
                attributes: attributes(e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: span.dropped_events,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(status),
    }
}

/// A client's address is recorded as `Display` writes it, IPv4 (written by hand) and IPv6.
#[test]
fn a_client_address_is_written_as_display_writes_it() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    let mut v4: Vec<IpAddr> = [
        [0, 0, 0, 0],
        [255, 255, 255, 255],
        [127, 0, 0, 1],
        [10, 9, 99, 100],
        [199, 200, 201, 109],
    ]
    .into_iter()
    .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
    .collect();
    v4.extend((0..=255u8).map(|o| IpAddr::V4(Ipv4Addr::new(o, 255 - o, o / 3, 7))));
    v4.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    v4.push(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
    for ip in v4 {
        assert_eq!(super::ip_text(ip, &mut [0; 15]), ip.to_string());
    }
}
