//! Long transfers against `server.query_timeout`: a body that keeps moving is never cut by the
//! request deadline (only its pauses are bounded), a stalled one is cut after the idle
//! timeout, and a storage write in progress when the deadline passes completes.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// A short request deadline and a short idle timeout: every transfer below takes several
/// times `query_timeout`.
const SHORT: &str = "query_timeout = \"1s\"\nbody_idle_timeout = \"2s\"";

/// A PATCH whose body arrives slowly over ~3 s (three times `query_timeout`) is received
/// whole, and the blob commits and reads back byte for byte.
#[test]
fn throttled_push_longer_than_query_timeout_completes() {
    let srv = Server::start_with(SHORT, ALLOW_ALL);
    let loc = srv.start_upload("slow/push");
    let data = bytes(11, 30 * 64 * 1024);
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    let started = Instant::now();
    for piece in data.chunks(64 * 1024) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = read_response(&mut s, false).expect("a response");
    assert!(started.elapsed() > Duration::from_secs(2), "not throttled");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let range = format!("0-{}", data.len() - 1);
    assert_eq!(r.header("range"), Some(range.as_str()));
    let d = digest(&data);
    let r = srv.request("PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = srv.get(&format!("/v2/slow/push/blobs/{d}"));
    assert_eq!(got.status, 200);
    assert!(got.body == data, "blob differs");
}

/// Pushes a blob of `len` bytes; returns it and its digest.
fn stored_blob(srv: &Server, repo: &str, len: usize) -> (Vec<u8>, String) {
    let data = bytes(len as u64, len);
    let loc = srv.start_upload(repo);
    let d = digest(&data);
    let r = srv.request("PUT", &format!("{loc}?digest={d}"), &[], &data);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (data, d)
}

/// A connection with a fixed receive buffer (no autotuning to megabytes), so the server's
/// sends wait on our reads. (Not much smaller: the server's socket turns writable again
/// only once a third of its send buffer has drained.)
fn slow_reader(srv: &Server) -> std::net::TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(256 * 1024).unwrap();
    sock.connect(&srv.addr.into()).unwrap();
    let s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads a response head, then the body at about `rate` bytes per second, for at most `len`
/// bytes; returns what arrived before the end or a close.
fn read_throttled(s: &mut std::net::TcpStream, len: usize, rate: usize) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "head cut");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let step = rate / 10;
    let mut body = Vec::with_capacity(len);
    let mut buf = vec![0u8; step];
    while body.len() < len {
        let want = step.min(len - body.len());
        match s.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    body
}

/// A GET of a 12 MiB blob read at ~2.5 MiB/s (several times `query_timeout` once the socket
/// buffers are full) arrives whole.
#[test]
fn throttled_pull_longer_than_query_timeout_completes() {
    let srv = Server::start_with(SHORT, ALLOW_ALL);
    let (data, d) = stored_blob(&srv, "slow/pull", 12 * 1024 * 1024);
    let mut s = slow_reader(&srv);
    write!(s, "GET /v2/slow/pull/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let started = Instant::now();
    let body = read_throttled(&mut s, data.len(), 5 * 512 * 1024);
    assert!(started.elapsed() > Duration::from_secs(2), "not throttled");
    assert_eq!(body.len(), data.len(), "pull cut short");
    assert!(body == data, "pull differs");
}

/// A reader that stops reading is cut once a send has waited `body_idle_timeout`: the
/// connection is closed with the body short.
#[test]
fn stalled_pull_is_cut_after_the_idle_timeout() {
    let srv = Server::start_with(SHORT, ALLOW_ALL);
    let (data, d) = stored_blob(&srv, "stall/pull", 24 * 1024 * 1024);
    let mut s = slow_reader(&srv);
    write!(
        s,
        "GET /v2/stall/pull/blobs/{d} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    // Stalled well past the idle timeout, then read as fast as we can.
    std::thread::sleep(Duration::from_secs(5));
    let body = read_throttled(&mut s, data.len(), 100 * 1024 * 1024);
    assert!(
        body.len() < data.len(),
        "a stalled reader got the whole body"
    );
}

/// A manifest PUT whose storage write is slower than `query_timeout` (a stalled disk, by a
/// failpoint) is not abandoned half-done: the manifest is stored whole once the request ends.
#[test]
fn storage_write_past_the_deadline_completes() {
    let dir = TempDir::new("stallwrite");
    let text = config_text(&dir.0, "query_timeout = \"1s\"", ALLOW_ALL);
    let srv = Server::start_config_env(
        dir,
        &text,
        &[("ORIGIN_FAILPOINT", "manifest-after-edges~2500")],
    );
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_d = srv.push_blob("stall/write", config);
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\
         \"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\
         \"layers\":[]}}",
        config.len()
    );
    let r = srv.put_manifest("stall/write", "v1", OCI_MANIFEST, manifest.as_bytes());
    // The write finished past the deadline; the answer may be its result or the deadline's.
    assert!(matches!(r.status, 201 | 503), "{}", r.status);
    let got = srv.get("/v2/stall/write/manifests/v1");
    assert_eq!(got.status, 200, "the manifest write was abandoned");
    assert_eq!(got.body, manifest.as_bytes());
}

/// Requests cut at their deadline (the handler dropped mid-await) are no longer counted in
/// flight: after three of them, a scrape sees only itself.
#[test]
fn requests_cut_at_the_deadline_leave_the_in_flight_gauge() {
    let srv = Server::start_with(
        "query_timeout = \"1s\"\nbody_idle_timeout = \"30s\"",
        ALLOW_ALL,
    );
    for _ in 0..3 {
        let loc = srv.start_upload("cut/app");
        let mut s = srv.connect();
        write!(
            s,
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
        )
        .unwrap();
        let r = read_response(&mut s, false).expect("a response");
        assert_eq!(r.status, 503);
    }
    // Each cut request is counted just after its answer is written: wait for the third.
    let counted = "origin_http_requests_total{group=\"uploads\",status=\"503\"} 3";
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = String::from_utf8_lossy(&srv.get("/metrics").body).to_string();
        if text.contains(counted) || Instant::now() > until {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains(counted), "{text}");
    assert!(
        text.contains("\norigin_http_requests_in_flight 1\n"),
        "{}",
        text.lines()
            .filter(|l| l.contains("in_flight"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
