//! 10,000 idle keep-alive connections are held open in bounded memory while another
//! client's requests are still answered.

mod common;

use std::io::Write;

use common::*;

fn raise_fd_limit(want: u64) -> u64 {
    // SAFETY: plain get/setrlimit on a struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(want);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_connections_in_bounded_memory() {
    const N: usize = 10_000;
    let limit = raise_fd_limit(N as u64 + 1000);
    assert!(
        limit >= N as u64 + 100,
        "cannot raise the open-file limit (have {limit})"
    );
    let srv = Server::start();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        // Every connection has made one request and now idles in keep-alive.
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        conns.push(s);
        if i % 1000 == 999 {
            for c in &mut conns[i - 999..=i] {
                assert_eq!(read_response(c, false).unwrap().status, 200);
            }
        }
    }
    let rss = rss_kib(srv.child.id());
    eprintln!("server RSS with {N} idle connections: {} KiB", rss);
    assert!(rss <= 128 * 1024, "RSS {rss} KiB above 128 MiB");
    // Another client is still served while all of them stay open.
    for _ in 0..20 {
        assert_eq!(srv.get("/v2/").status, 200);
    }
    // And the idle ones are still alive.
    for c in conns.iter_mut().step_by(997) {
        send(c, "GET", "/v2/", &[], b"");
        assert_eq!(read_response(c, false).unwrap().status, 200);
    }
}
