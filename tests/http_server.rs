//! Socket-level tests of the HTTP/1.1 server against a running `origin` process.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// `GET /v2/` answers 200 `{}` with the API version header; HEAD the same without a body.
#[test]
fn base_endpoint_answers_with_api_version() {
    let srv = Server::start();
    let r = srv.get("/v2/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"{}");
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let h = srv.request("HEAD", "/v2/", &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("2"));
}

/// An unknown route answers 404 with an OCI error body.
#[test]
fn unknown_route_is_404_with_oci_error() {
    let srv = Server::start();
    let r = srv.get("/nope");
    assert_eq!(r.status, 404);
    assert!(!r.error_code().is_empty());
    let r = srv.request("POST", "/v2/", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "UNSUPPORTED");
}

/// Several requests on one keep-alive connection, and pipelined requests in one write.
#[test]
fn keep_alive_and_pipelining() {
    let srv = Server::start();
    let mut s = srv.connect();
    for _ in 0..5 {
        send(&mut s, "GET", "/v2/", &[], b"");
        assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    }
    let mut batch = Vec::new();
    for path in ["/v2/", "/v2/missing", "/v2/"] {
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    s.write_all(&batch).unwrap();
    let statuses: Vec<u16> = (0..3)
        .map(|_| read_response(&mut s, false).unwrap().status)
        .collect();
    assert_eq!(statuses, [200, 404, 200]);
}

/// Connection: close and HTTP/1.0 end the connection after the response.
#[test]
fn close_and_http10() {
    let srv = Server::start();
    let mut s = srv.connect();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(is_closed(&mut s));
    let mut s = srv.connect();
    s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("{}"), "{text}");
}

/// Oversized heads answer 414/431 and close; garbage answers 400 and closes.
#[test]
fn oversized_and_malformed_heads_are_refused_and_closed() {
    let srv = Server::start();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000)).into_bytes(),
            414,
        ),
        (
            format!("GET /v2/ HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000)).into_bytes(),
            431,
        ),
        (
            format!(
                "GET /v2/ HTTP/1.1\r\n{}\r\n",
                (0..150)
                    .map(|i| format!("X-{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /v2/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (bytes, want) in cases {
        let mut s = srv.connect();
        // The server may answer and close before reading everything; ignore write errors.
        let _ = s.write_all(&bytes);
        let r = read_response(&mut s, false).expect("a response");
        assert_eq!(r.status, want);
        assert!(is_closed(&mut s), "connection left open after {want}");
    }
    // The server is still fine.
    assert_eq!(srv.get("/v2/").status, 200);
}

/// keep_alive_timeout counts from the end of the last response: a connection used every
/// 400 ms outlives several timeouts of 1 s, and closes about 1 s after its last request.
#[test]
fn keep_alive_timeout_closes_only_idle_connections() {
    let srv = Server::start_with("keep_alive_timeout = \"1s\"", ALLOW_ALL);
    let mut s = srv.connect();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        send(&mut s, "GET", "/v2/", &[], b"");
        assert_eq!(read_response(&mut s, false).unwrap().status, 200);
        std::thread::sleep(Duration::from_millis(400));
    }
    send(&mut s, "GET", "/v2/", &[], b"");
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
    let last = Instant::now();
    assert!(
        is_closed(&mut s),
        "idle connection kept past keep_alive_timeout"
    );
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "closed after {idle:?} idle"
    );
}

/// A small blob whose pages left the page cache is still served whole: the read on the
/// worker's thread declines it (RWF_NOWAIT) and the ring reads it.
#[test]
fn cold_small_blob_is_served_whole() {
    use std::os::fd::AsRawFd;
    let srv = Server::start();
    let data = bytes(7, 40_000);
    let d = srv.push_blob("cold/app", &data);
    let hex = d.strip_prefix("sha256:").unwrap();
    let path = srv
        .dir
        .0
        .join(format!("data/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let file = std::fs::File::open(&path).unwrap();
    file.sync_all().unwrap();
    // SAFETY: fadvise on a descriptor this test holds open; it only drops clean pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
    let r = srv.get(&format!("/v2/cold/app/blobs/{d}"));
    assert_eq!(r.status, 200);
    assert!(r.body == data, "cold blob served differently");
}

/// A client trickling one byte a second is cut off at the head deadline.
#[test]
fn slow_head_is_cut_off_at_deadline() {
    let srv = Server::start_with("head_read_timeout = \"2s\"", ALLOW_ALL);
    let mut s = srv.connect();
    let request = b"GET /v2/ HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut sent = 0;
    let started = Instant::now();
    for b in request.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        sent += 1;
        std::thread::sleep(Duration::from_secs(1));
        s.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 512];
        let r = s.read(&mut probe);
        s.set_nonblocking(false).unwrap();
        match r {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(&probe[..n]);
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        sent < request.len(),
        "the whole head was accepted at 1 byte/s"
    );
    assert!(sent <= 5, "cut off only after {sent} bytes");
    assert!(is_closed(&mut s));
    let _ = started;
}

/// 1,000 connections open at once are all served.
#[test]
fn thousand_concurrent_connections_are_served() {
    let srv = Server::start();
    let mut conns: Vec<_> = (0..1000).map(|_| srv.connect()).collect();
    for s in conns.iter_mut() {
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
    }
    for s in conns.iter_mut() {
        assert_eq!(read_response(s, false).unwrap().status, 200);
    }
}

/// SIGTERM: idle connections are closed, the process exits 0 and stops listening.
#[test]
fn sigterm_closes_idle_connections_and_exits_zero() {
    let mut srv = Server::start();
    let mut idle = srv.connect();
    send(&mut idle, "GET", "/v2/", &[], b"");
    assert_eq!(read_response(&mut idle, false).unwrap().status, 200);
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(is_closed(&mut idle));
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}

/// Every request is logged once at info with method, path, status, bytes, duration and peer.
#[test]
fn access_log_line_per_request() {
    let mut srv = Server::start();
    srv.get("/v2/does-not-exist");
    let line = srv
        .logs_until("/v2/does-not-exist", Duration::from_secs(5))
        .expect("access log line");
    for field in [
        "method=\"GET\"",
        "status=404",
        "bytes_out=",
        "duration_us=",
        "peer=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

/// JSON log output is one JSON object per line.
#[test]
fn json_log_format() {
    let dir = TempDir::new("json");
    let text = config_text(&dir.0, "", ALLOW_ALL).replace("[log]\n", "[log]\nformat = \"json\"\n");
    let mut srv = Server::start_config(dir, &text, &[]);
    srv.get("/v2/");
    let line = srv
        .logs_until("\"status\":200", Duration::from_secs(5))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/v2/");
}

/// Under a seccomp filter that blocks io_uring (as in a container) the server falls back to
/// the polling driver, says so, and serves.
#[test]
fn serves_when_io_uring_is_blocked() {
    let dir = TempDir::new("nouring");
    let launcher = dir.0.join("nouring");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/nouring.c");
    let ok = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&launcher)
        .arg(src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot compile the nouring launcher (is cc installed?)");
    let text =
        config_text(&dir.0, "", ALLOW_ALL).replace("io_driver = \"poll\"", "io_driver = \"auto\"");
    let launcher = launcher.to_string_lossy().to_string();
    let mut srv = Server::start_config(dir, &text, &[&launcher]);
    let line = srv
        .logs_until("origin listening on", Duration::from_secs(1))
        .unwrap();
    assert!(line.contains("io_driver=\"poll\""), "{line}");
    assert_eq!(srv.get("/v2/").status, 200);
}

/// Forcing io_uring where it is blocked fails startup with a message, not a hang.
#[test]
fn forced_io_uring_under_seccomp_fails_cleanly() {
    let dir = TempDir::new("nouring2");
    let launcher = dir.0.join("nouring");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/nouring.c");
    assert!(std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&launcher)
        .arg(src)
        .status()
        .unwrap()
        .success());
    let text = config_text(&dir.0, "", ALLOW_ALL)
        .replace("io_driver = \"poll\"", "io_driver = \"io_uring\"")
        .replace("io_driver = \"auto\"", "io_driver = \"io_uring\"");
    let cfg = dir.0.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(&launcher)
        .arg(env!("CARGO_BIN_EXE_origin"))
        .args(["serve", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("I/O driver"));
}

/// A body that stalls past `query_timeout` gets a 503 and a closed connection.
#[test]
fn query_timeout_cuts_a_stalled_request() {
    let srv = Server::start_with("query_timeout = \"2s\"", ALLOW_ALL);
    let loc = srv.start_upload("slow/app");
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
    )
    .unwrap();
    let started = Instant::now();
    let r = read_response(&mut s, false).expect("a response");
    assert_eq!(r.status, 503);
    assert!(is_closed(&mut s));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The session is still usable: the stalled request's bytes were not recorded.
    assert_eq!(srv.get(&loc).header("range"), Some("0-0"));
}

/// A body idle past `body_idle_timeout` is refused and the connection closed.
#[test]
fn body_idle_timeout_closes() {
    let srv = Server::start_with("body_idle_timeout = \"1s\"", ALLOW_ALL);
    let loc = srv.start_upload("idle/app");
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
    )
    .unwrap();
    let r = read_response(&mut s, false).expect("a response");
    assert_eq!(r.status, 408);
    assert!(is_closed(&mut s));
}

/// Bodies over a route's limit answer 413 and close, without reading the body.
#[test]
fn body_limits_per_route() {
    let srv = Server::start_with(
        "blob_bytes_max = 1000\nother_body_bytes_max = 10",
        ALLOW_ALL,
    );
    let loc = srv.start_upload("lim/app");
    let r = srv.request("PATCH", &loc, &[], &vec![7u8; 1001]);
    assert_eq!(r.status, 413);
    let r = srv.request("PATCH", &loc, &[], &vec![7u8; 1000]);
    assert_eq!(r.status, 202);
    // Chunked bodies are counted as they arrive.
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let _ = write!(s, "7d0\r\n{}\r\n0\r\n\r\n", "x".repeat(2000));
    assert_eq!(read_response(&mut s, false).unwrap().status, 413);
    // Routes without a body have the small limit.
    let r = srv.request("GET", "/v2/", &[("Content-Length", "11")], b"hello world");
    assert_eq!(r.status, 413);
}

/// SIGTERM while an upload is in flight: the upload finishes and is answered, then exit 0.
#[test]
fn sigterm_drains_in_flight_requests() {
    let mut srv = Server::start();
    let loc = srv.start_upload("drain/app");
    let data = bytes(1, 200_000);
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .unwrap();
    s.write_all(&data[..100_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    srv.signal(libc::SIGTERM);
    assert!(srv.logs_until("draining", Duration::from_secs(5)).is_some());
    // New connections are refused while the old one finishes.
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
    s.write_all(&data[100_000..]).unwrap();
    let r = read_response(&mut s, false).expect("in-flight request answered");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-199999"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}
