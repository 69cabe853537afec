//! Traces against a real OTLP/HTTP receiver on 127.0.0.1: the exported protobuf is decoded
//! with the OpenTelemetry proto types and checked span by span: one trace per request, the
//! operation, storage (and S3, on S3) spans under the server span, an incoming `traceparent`
//! continued, the outgoing one sent to webhooks and upstreams, nothing when disabled or not
//! sampled, a reload turning it on, and a collector that is down failing nothing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::otlp::*;
use common::receiver::Receiver;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

const INCOMING_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INCOMING_SPAN: &str = "00f067aa0ba902b7";

/// A push and a pull: one trace per request with its server span, the operation and storage
/// spans (S3 requests on S3) below it, the HTTP attributes, the incoming traceparent
/// continued, the trace id on the request's log lines, the configured headers sent.
#[test]
fn a_push_and_a_pull_are_traced_span_by_span() {
    let rx = Receiver::start();
    let mut srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}{}", tracing_section(&rx.url(""), 1.0)),
    );
    let (_, digest) = srv.push_image("traced/app", "v1", &[bytes(1, 2000)]);
    let parent = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-01");
    let r = srv.request(
        "GET",
        &format!("/v2/traced/app/manifests/{digest}"),
        &[("traceparent", &parent), ("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    let spans = spans_until(&rx, |s| {
        s.iter()
            .any(|s| s.kind == KIND_SERVER && s.trace_id == INCOMING_TRACE)
            && s.iter().any(|s| s.name == "manifests.put")
    });
    let servers = server_spans(&spans);
    // The push: config and layer (one POST each), manifest PUT; then the GET.
    let traces: HashSet<&str> = servers.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces.len(), servers.len(), "one trace per request");
    assert!(servers.len() >= 4, "{servers:#?}");
    // The GET continues the incoming trace as a child of the caller's span.
    let get = servers
        .iter()
        .find(|s| s.trace_id == INCOMING_TRACE)
        .expect("incoming trace continued");
    assert_eq!(get.parent, INCOMING_SPAN);
    assert_eq!(get.name, "GET /v2/{name}/manifests/{reference}");
    assert_eq!(get.attrs["http.request.method"], "GET");
    assert_eq!(get.attrs["http.response.status_code"], "200");
    assert_eq!(get.attrs["http.route"], "/v2/{name}/manifests/{reference}");
    assert_eq!(get.attrs["oci.repository"], "traced/app");
    assert_eq!(get.attrs["oci.action"], "get-manifest");
    assert_eq!(
        get.attrs["url.path"],
        format!("/v2/traced/app/manifests/{digest}")
    );
    assert_eq!(get.attrs["client.address"], "127.0.0.1");
    // The manifest PUT: the operation under the server span, storage under the operation.
    let put_server = servers
        .iter()
        .find(|s| s.name == "PUT /v2/{name}/manifests/{reference}")
        .expect("manifest PUT traced");
    let op = spans
        .iter()
        .find(|s| s.name == "manifests.put" && s.trace_id == put_server.trace_id)
        .expect("operation span");
    assert_eq!(op.parent, put_server.span_id);
    let storage: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == put_server.trace_id && s.name.starts_with("storage."))
        .collect();
    assert!(!storage.is_empty(), "storage spans");
    for s in &storage {
        let chain = ancestors(&spans, s);
        assert!(
            chain.iter().any(|a| a.span_id == op.span_id),
            "{} not under the operation",
            s.name
        );
        assert_eq!(chain.last().map(|a| &a.span_id), Some(&put_server.span_id));
    }
    if storage_on_s3() {
        let s3: Vec<&Span> = spans
            .iter()
            .filter(|s| s.trace_id == put_server.trace_id && s.name == "s3.request")
            .collect();
        assert!(!s3.is_empty(), "S3 request spans on S3");
        assert!(s3.iter().all(|s| s.attrs.contains_key("s3.operation")));
    }
    // The blob uploads have their operation spans too.
    assert!(spans.iter().any(|s| s.name.starts_with("uploads.")));
    // The resource, the configured headers and the content type.
    let got = rx.received();
    let first = got
        .iter()
        .find(|r| r.path == "/v1/traces")
        .expect("an export");
    assert_eq!(first.header("x-api-key"), Some("secret-key"));
    assert_eq!(first.header("content-type"), Some("application/x-protobuf"));
    let req = ExportTraceServiceRequest::decode(first.body.as_slice()).unwrap();
    let resource = format!("{:?}", req.resource_spans[0].resource);
    for want in [
        "origin-test",
        "service.version",
        "host.name",
        "deployment.environment",
    ] {
        assert!(resource.contains(want), "{want} in {resource}");
    }
    // The request's log lines name its trace.
    let line = srv
        .logs_until(&format!("trace_id={INCOMING_TRACE}"), WAIT)
        .expect("the GET's access log line carries its trace id");
    assert!(line.contains("origin::access"), "{line}");
}

/// The trace goes on outside: an async webhook delivery continues the push's trace and sends
/// its `traceparent` (failed attempts are events on its span), and so does a mirror's
/// request to its upstream.
#[test]
fn traceparent_goes_to_webhooks_and_upstreams() {
    let rx = Receiver::start();
    let hook = Receiver::start();
    let upstream = Receiver::start();
    upstream.answer(404);
    let broken = Receiver::start();
    broken.answer(500);
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nevent_webhooks = [\"feed\", \"broken\"]\n\n\
         [[repository]]\nnamespace = \"hub\"\npolicy_default_allow = true\n\
         [repository.mirror]\n[[repository.mirror.upstream]]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
         [event_webhook.feed]\nurl = \"{}\"\nevents = [\"tag.create\"]\n\n\
         [event_webhook.broken]\nurl = \"{}\"\nevents = [\"tag.create\"]\nmax_retries = 1\n\n{}",
        upstream.url(""),
        hook.url("/feed"),
        broken.url("/broken"),
        tracing_section(&rx.url(""), 1.0)
    );
    let srv = Server::start_with("", &config);
    srv.push_image("hooked/app", "v1", &[bytes(2, 100)]);
    let delivered = hook.wait_for(WAIT, |g| !g.is_empty());
    let tp = delivered[0]
        .header("traceparent")
        .expect("the delivery carries traceparent")
        .to_string();
    let trace_id = tp.split('-').nth(1).unwrap().to_string();
    let spans = spans_until(&rx, |s| s.iter().any(|s| s.name == "webhook.delivery"));
    let put = server_spans(&spans)
        .into_iter()
        .find(|s| s.name == "PUT /v2/{name}/manifests/{reference}")
        .expect("manifest PUT");
    assert_eq!(
        trace_id, put.trace_id,
        "the delivery continues the push's trace"
    );
    let delivery = spans
        .iter()
        .find(|s| s.name == "webhook.delivery")
        .expect("delivery span");
    assert_eq!(delivery.trace_id, put.trace_id);
    assert_eq!(delivery.attrs["webhook"], "feed");
    // A delivery that fails: each failed attempt is an event on its span.
    let spans = spans_until(&rx, |s| {
        s.iter().any(|s| {
            s.name == "webhook.delivery"
                && s.attrs.get("webhook").map(|w| w.as_str()) == Some("broken")
        })
    });
    let failed = spans
        .iter()
        .find(|s| s.name == "webhook.delivery" && s.attrs["webhook"] == "broken")
        .expect("the failed delivery's span");
    assert_eq!(failed.events, ["attempt failed", "attempt failed"]);
    assert_eq!(failed.trace_id, put.trace_id);

    let r = srv.get("/v2/hub/library/alpine/manifests/3.20");
    assert_eq!(r.status, 404);
    let asked = upstream.wait_for(WAIT, |g| !g.is_empty());
    let tp = asked[0]
        .header("traceparent")
        .expect("upstream gets traceparent");
    let tp = tp.to_string();
    let named = |s: &Span| {
        s.name == "upstream.request" && tp == format!("00-{}-{}-01", s.trace_id, s.span_id)
    };
    let spans = spans_until(&rx, |s| s.iter().any(named));
    let up = spans
        .iter()
        .find(|s| named(s))
        .expect("the upstream request's span is the traceparent sent");
    let get = server_spans(&spans)
        .into_iter()
        .find(|s| s.trace_id == up.trace_id)
        .expect("the upstream request is in the GET's trace");
    assert_eq!(get.attrs["http.response.status_code"], "404");
}

/// Off, nothing is exported; at ratio 0 a request is recorded only when its caller's
/// traceparent says sampled (parent-based); a reload turns tracing on and off.
#[test]
fn nothing_is_exported_unless_on_and_sampled() {
    let rx = Receiver::start();
    let dir = TempDir::new("trace-reload");
    let base = config_text(&dir.0, "", "");
    let mut srv = Server::start_config(dir, &format!("{base}{ALLOW_ALL}"), &[]);
    srv.push_image("quiet/app", "v1", &[bytes(3, 100)]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.received().is_empty(), "nothing exported when off");

    std::fs::write(
        &srv.config_path,
        format!("{base}{ALLOW_ALL}{}", tracing_section(&rx.url(""), 0.0)),
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", WAIT)
        .expect("reloaded");
    assert_eq!(srv.get("/v2/").status, 200);
    let unsampled = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-00");
    let r = srv.request("GET", "/v2/", &[("traceparent", &unsampled)], b"");
    assert_eq!(r.status, 200);
    let sampled = "00-11111111111111111111111111111111-2222222222222222-01";
    let r = srv.request("GET", "/v2/", &[("traceparent", sampled)], b"");
    assert_eq!(r.status, 200);
    let spans = spans_until(&rx, |s| !s.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let spans = if spans.is_empty() {
        spans
    } else {
        decode(&rx.received())
    };
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(
        traces,
        HashSet::from(["11111111111111111111111111111111"]),
        "only the sampled caller's request"
    );
}

/// A collector that is down (a closed port) neither fails nor holds requests; the lost
/// spans are counted.
#[test]
fn a_collector_that_is_down_fails_nothing() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let srv = Server::start_with(
        "",
        &format!(
            "{ALLOW_ALL}{}",
            tracing_section(&format!("http://127.0.0.1:{port}"), 1.0)
        ),
    );
    let started = Instant::now();
    for i in 0..5 {
        srv.push_image("down/app", &format!("t{i}"), &[bytes(i, 100)]);
        assert_eq!(srv.get("/v2/down/app/tags/list").status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let deadline = Instant::now() + WAIT;
    loop {
        let m = String::from_utf8_lossy(&srv.get("/metrics").body).to_string();
        let failed = m
            .lines()
            .find_map(|l| l.strip_prefix("origin_trace_spans_failed_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if failed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "failed exports counted: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A request that is not sampled but carries a `traceparent` records nothing, and its
/// outbound requests (here to the mirror's upstream) carry that `traceparent` on as it came
/// (W3C Trace Context); one without a `traceparent` sends none.
#[test]
fn an_unsampled_traceparent_is_passed_on_upstream() {
    let rx = Receiver::start();
    let upstream = Receiver::start();
    upstream.answer(404);
    let config = format!(
        "[[repository]]\nnamespace = \"hub\"\npolicy_default_allow = true\n\
         [repository.mirror]\n[[repository.mirror.upstream]]\nurl = \"{}\"\ntimeout = \"5s\"\n\n{}",
        upstream.url(""),
        tracing_section(&rx.url(""), 0.0)
    );
    let srv = Server::start_with("", &config);
    let unsampled = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-00");
    let r = srv.request(
        "GET",
        "/v2/hub/library/alpine/manifests/3.20",
        &[("traceparent", &unsampled)],
        b"",
    );
    assert_eq!(r.status, 404);
    let asked = upstream.wait_for(WAIT, |g| !g.is_empty());
    assert_eq!(asked[0].header("traceparent"), Some(unsampled.as_str()));
    let r = srv.get("/v2/hub/library/busybox/manifests/1");
    assert_eq!(r.status, 404);
    let asked = upstream.wait_for(WAIT, |g| g.len() >= 2);
    assert!(
        asked
            .iter()
            .filter(|a| a.path.contains("busybox"))
            .all(|a| a.header("traceparent").is_none()),
        "no traceparent without one coming in"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(decode(&rx.received()).is_empty(), "nothing recorded");
}

/// An unsampled request's `traceparent` also reaches its queued (`async`) webhook
/// deliveries, sent later from another thread; a request without one sends none.
#[test]
fn an_unsampled_traceparent_reaches_queued_webhook_deliveries() {
    let rx = Receiver::start();
    let hooks = Receiver::start();
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nevent_webhooks = [\"hook\"]\n\n\
         [event_webhook.hook]\nurl = \"{}\"\nevents = [\"manifest.push\"]\ndelivery = \"async\"\n\n{}",
        hooks.url("/hook"),
        tracing_section(&rx.url(""), 0.0)
    );
    let srv = Server::start_with("", &config);
    let unsampled = format!("00-{INCOMING_TRACE}-{INCOMING_SPAN}-00");
    let config_d = srv.push_blob("hooked/app", b"{}");
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":2}},\
         \"layers\":[]}}"
    );
    let put = |tag: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", OCI_MANIFEST)];
        all.extend_from_slice(headers);
        let r = srv.request(
            "PUT",
            &format!("/v2/hooked/app/manifests/{tag}"),
            &all,
            manifest.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    };
    put("with", &[("traceparent", &unsampled)]);
    let got = hooks.wait_for(WAIT, |g| !g.is_empty());
    assert_eq!(got[0].header("traceparent"), Some(unsampled.as_str()));
    put("without", &[]);
    let got = hooks.wait_for(WAIT, |g| g.len() >= 2);
    assert_eq!(
        got[1].header("traceparent"),
        None,
        "no traceparent without one coming in"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(decode(&rx.received()).is_empty(), "nothing recorded");
}

/// A replication job is a trace of its own (a `replication` root with `replication.job`
/// under it, naming the target, repository and reference, and a `replication.request`
/// client span per request to the target), and the target continues it: the second
/// Origin's server spans for the copy are in the job's trace, under those requests.
#[test]
fn a_replication_job_is_a_trace_the_target_continues() {
    let rx = Receiver::start();
    let target = Server::start_with(
        "",
        &format!("{ALLOW_ALL}{}", tracing_section(&rx.url(""), 1.0)),
    );
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [\"dr\"]\n\n\
         [replication.dr]\nurl = \"http://{}\"\n\n{}",
        target.addr,
        tracing_section(&rx.url(""), 1.0)
    );
    let src = Server::start_with("", &config);
    let (_, d) = src.push_image("traced/app", "v1", &[bytes(5, 2000)]);
    let spans = spans_until(&rx, |s| {
        s.iter().any(|j| j.name == "replication.job")
            && s.iter().any(|p| {
                p.kind == KIND_SERVER
                    && p.attrs
                        .get("url.path")
                        .is_some_and(|u| u.ends_with("/manifests/v1"))
                    && p.attrs
                        .get("http.request.method")
                        .is_some_and(|m| m == "PUT")
                    && s.iter()
                        .any(|j| j.name == "replication.job" && j.trace_id == p.trace_id)
            })
    });
    let job = spans
        .iter()
        .find(|j| j.name == "replication.job")
        .unwrap_or_else(|| panic!("a replication.job span: {spans:?}"));
    assert_eq!(
        job.attrs.get("replication.target").map(String::as_str),
        Some("dr")
    );
    assert_eq!(
        job.attrs.get("oci.repository").map(String::as_str),
        Some("traced/app")
    );
    assert_eq!(
        job.attrs.get("oci.reference").map(String::as_str),
        Some("v1")
    );
    let root = spans
        .iter()
        .find(|r| r.span_id == job.parent)
        .unwrap_or_else(|| panic!("the job's root: {spans:?}"));
    assert_eq!(
        (root.name.as_str(), root.parent.as_str()),
        ("replication", "")
    );
    // At the target: the manifest PUT of the copy is a server span in the job's trace.
    let put = spans
        .iter()
        .find(|p| {
            p.kind == KIND_SERVER
                && p.trace_id == job.trace_id
                && p.attrs
                    .get("http.request.method")
                    .is_some_and(|m| m == "PUT")
                && p.attrs
                    .get("url.path")
                    .is_some_and(|u| u.ends_with("/manifests/v1"))
        })
        .unwrap_or_else(|| panic!("the target's PUT in the job's trace: {spans:?}"));
    assert!(
        ancestors(&spans, put)
            .iter()
            .any(|a| a.span_id == job.span_id),
        "the target's span is under the job"
    );
    let r = target.request(
        "GET",
        "/v2/traced/app/manifests/v1",
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    let _ = d;
}

/// A background pass is a trace of its own, sampled like a request without a parent: at
/// 100 % each GC pass is a root span named after the pass with the GC operation under it;
/// at 0 % no pass leaves a trace (only the sampled request's one arrives).
#[test]
fn background_passes_are_traces_sampled_at_the_ratio() {
    let gc = "[gc]\ninterval = \"1s\"\n";
    let rx = Receiver::start();
    let srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}{gc}{}", tracing_section(&rx.url(""), 1.0)),
    );
    let spans = spans_until(&rx, |s| {
        s.iter().any(|p| p.name == "gc" && p.parent.is_empty())
            && s.iter().any(|c| c.name == "maintenance.gc")
    });
    let pass = spans
        .iter()
        .find(|p| p.name == "gc" && p.parent.is_empty())
        .expect("a gc pass trace");
    assert!(
        spans.iter().any(|c| c.name == "maintenance.gc"
            && c.trace_id == pass.trace_id
            && c.parent == pass.span_id),
        "the GC operation under its pass: {spans:?}"
    );
    drop(srv);

    let rx = Receiver::start();
    let srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}{gc}{}", tracing_section(&rx.url(""), 0.0)),
    );
    // Three GC passes' time, then a sampled request: its trace is all that arrives.
    std::thread::sleep(Duration::from_secs(3));
    let sampled = "00-11111111111111111111111111111111-2222222222222222-01";
    let r = srv.request("GET", "/v2/", &[("traceparent", sampled)], b"");
    assert_eq!(r.status, 200);
    spans_until(&rx, |s| !s.is_empty());
    std::thread::sleep(Duration::from_millis(500));
    let spans = decode(&rx.received());
    let traces: HashSet<&str> = spans.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(traces, HashSet::from(["11111111111111111111111111111111"]));
}

/// Each recording thread holds at most `queue_spans_max` finished spans until the exporter
/// takes them: with room for one, a push (tens of spans on a worker between two looks of the
/// exporter) overflows it. The surplus is dropped and counted, what fitted is exported, and
/// every request succeeds.
#[test]
fn a_full_queue_drops_spans_and_counts_them() {
    let receiver = Receiver::start();
    let section = tracing_section(&receiver.url(""), 1.0).replacen(
        "[tracing]\n",
        "[tracing]\nqueue_spans_max = 1\n",
        1,
    );
    let srv = Server::start_with("", &format!("{ALLOW_ALL}{section}"));
    for i in 0..3 {
        srv.push_image("full/app", &format!("t{i}"), &[bytes(i, 100)]);
    }
    let counter = |m: &str, name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let m = String::from_utf8_lossy(&srv.get("/metrics").body).to_string();
        let dropped = counter(&m, "origin_trace_spans_dropped_total ");
        let exported = counter(&m, "origin_trace_spans_exported_total ");
        if dropped > 0 && exported > 0 && !decode(&receiver.received()).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "dropped and exported spans: {m}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `check-config` names the bad `[tracing]` key.
#[test]
fn check_config_names_bad_tracing_keys() {
    let dir = TempDir::new("trace-check");
    for (section, key) in [
        ("[tracing]\nenabled = true\n", "tracing.endpoint"),
        (
            "[tracing]\nenabled = true\nendpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 2.0\n",
            "tracing.sample_ratio",
        ),
        (
            "[tracing]\nenabled = true\nendpoint = \"ftp://x\"\n",
            "tracing.endpoint",
        ),
        ("[tracing]\nendpont = \"http://x\"\n", "endpont"),
        (
            "[tracing]\nenabled = true\nendpoint = \"http://x\"\n[tracing.headers_env]\nauthorization = \"ORIGIN_TEST_NO_SUCH_VAR\"\n",
            "tracing.headers.authorization_env",
        ),
    ] {
        let path = dir.0.join("config.toml");
        std::fs::write(
            &path,
            format!("{}{section}", config_text(&dir.0, "", ALLOW_ALL)),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{section}: accepted");
        assert!(err.contains(key), "{section}: {err}");
    }
}
