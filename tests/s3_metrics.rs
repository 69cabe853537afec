//! S3 request metrics through a real server on moto: a push moves the counters of the
//! operations it used, and a connection cut between Origin and the bucket is counted as a
//! connection error and a retry (the request itself still succeeds).

mod common;

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::s3::Moto;
use common::*;

/// A TCP pipe to moto that can cut every open connection and refuse the next ones.
struct CutProxy {
    port: u16,
    /// Client-side sockets of the open pipes, to cut them.
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections still to be closed on accept, without forwarding anything.
    refuse: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CutProxy {
    fn start(upstream: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, r, s) = (open.clone(), refuse.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let take = r
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if take {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                o.lock().unwrap().push(client.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        CutProxy {
            port,
            open,
            refuse,
            stop,
        }
    }

    /// Cuts every open connection and refuses the next `n`.
    fn cut(&self, n: usize) {
        self.refuse.store(n, Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut(0);
    }
}

/// Copies one direction until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// The value of the metric line starting with `series` (`name{labels}`), 0 when absent.
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Sum of every line of the metric `name` whose labels contain `label`.
fn sum(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn scrape(srv: &Server) -> String {
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_string()
}

/// A push on S3 counts PutObject and HeadObject attempts with their outcomes and latency; a
/// cut connection to the bucket shows as connection errors and retries, and the pull that
/// met it still succeeds.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_metrics_count_requests_and_retries() {
    let Some(moto) = Moto::start("s3_metrics_count_requests_and_retries") else {
        return;
    };
    moto.create_bucket("metrics");
    let proxy = CutProxy::start(moto.port);
    let dir = TempDir::new("s3metrics");
    let text = config_text(&dir.0, "", ALLOW_ALL);
    let section = moto.storage_section("metrics").replace(
        &moto.endpoint(),
        &format!("http://127.0.0.1:{}", proxy.port),
    );
    let text = with_storage(&text, &dir.0, &section);
    let srv = Server::start_config(dir, &text, &[]);

    let before = scrape(&srv);
    let put_ok = "origin_s3_requests_total{operation=\"PutObject\",outcome=\"ok\"}";
    let blob = bytes(7, 100_000);
    let d = srv.push_blob("m/one", &blob);
    let after = scrape(&srv);
    assert!(
        value(&after, put_ok) > value(&before, put_ok),
        "PutObject ok did not move:\n{after}"
    );
    let put_count = "origin_s3_request_duration_seconds_count{operation=\"PutObject\"}";
    assert!(value(&after, put_count) > value(&before, put_count));
    assert!(after.contains(
        "origin_s3_request_duration_seconds_bucket{operation=\"PutObject\",le=\"+Inf\"}"
    ));
    // Looking for the blob before the commit: a HEAD answered 404 is an outcome, not an error.
    assert!(
        sum(&after, "origin_s3_requests_total", "outcome=\"not_found\"") > 0,
        "no not_found outcome:\n{after}"
    );

    let retries = sum(&after, "origin_s3_retries_total", "operation=");
    let cut = sum(
        &after,
        "origin_s3_requests_total",
        "outcome=\"connection_error\"",
    );
    proxy.cut(1);
    let got = srv.get(&format!("/v2/m/one/blobs/{d}"));
    assert_eq!(got.status, 200);
    assert!(got.body == blob, "blob bytes differ");
    let last = scrape(&srv);
    assert!(
        sum(&last, "origin_s3_retries_total", "operation=") > retries,
        "no retry counted:\n{last}"
    );
    assert!(
        sum(
            &last,
            "origin_s3_requests_total",
            "outcome=\"connection_error\""
        ) > cut,
        "no connection error counted:\n{last}"
    );
}

/// Scrapes until the start-up count of stored bytes is done; returns that scrape.
fn scrape_counted(srv: &Server) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(srv);
        if value(&text, "origin_storage_blob_bytes_counted") == 1 {
            return text;
        }
        assert!(std::time::Instant::now() < until, "never counted:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start-up costs the same S3 requests with 3 blobs or 600 (their sizes come from the
/// listing, not from a HEAD each), and the stored-bytes gauge still adds them all up.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn startup_s3_requests_do_not_grow_with_blobs() {
    let Some(moto) = Moto::start("startup_s3_requests_do_not_grow_with_blobs") else {
        return;
    };
    moto.create_bucket("startup");
    let dir = TempDir::new("s3startup");
    let text = config_text(&dir.0, "", ALLOW_ALL);
    let text = with_storage(&text, &dir.0, &moto.storage_section("startup"));
    let mut expected: u64 = 0;
    let seed = |from: usize, to: usize, expected: &mut u64| {
        for i in from..to {
            let blob = bytes(i as u64, 100 + i);
            let hex = sha256_hex(&blob);
            let key = format!("blobs/sha256/{}/{hex}/data", &hex[..2]);
            moto.put_object("startup", &key, &blob);
            *expected += blob.len() as u64;
        }
    };
    seed(0, 3, &mut expected);
    let requests = |t: &str| sum(t, "origin_s3_requests_total", "operation=");
    let srv = Server::start_config(dir, &text, &[]);
    let few = scrape_counted(&srv);
    assert_eq!(value(&few, "origin_storage_blob_bytes"), expected);
    seed(3, 600, &mut expected);
    let srv = srv.restart();
    let many = scrape_counted(&srv);
    assert_eq!(value(&many, "origin_storage_blob_bytes"), expected);
    assert!(
        requests(&many) <= requests(&few) + 1,
        "start-up S3 requests grew with the blobs: {} with 3 blobs, {} with 600",
        requests(&few),
        requests(&many)
    );
}

/// `/readyz` polled by anyone writes to the bucket at most once per probe interval (5 s):
/// 40 probes in a row cost at most one PutObject, and all answer 200.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn readyz_probes_storage_at_most_every_few_seconds() {
    let Some(moto) = Moto::start("readyz_probes_storage_at_most_every_few_seconds") else {
        return;
    };
    moto.create_bucket("ready");
    let dir = TempDir::new("s3ready");
    let text = config_text(&dir.0, "", ALLOW_ALL);
    let text = with_storage(&text, &dir.0, &moto.storage_section("ready"));
    let srv = Server::start_config(dir, &text, &[]);
    let puts = "origin_s3_requests_total{operation=\"PutObject\",outcome=\"ok\"}";
    assert_eq!(srv.get("/readyz").status, 200);
    let before = value(&scrape(&srv), puts);
    let started = std::time::Instant::now();
    for _ in 0..40 {
        assert_eq!(srv.get("/readyz").status, 200);
    }
    let after = value(&scrape(&srv), puts);
    // Probes made across an interval boundary may each find the last answer stale once.
    let allowed = 1 + started.elapsed().as_secs() / 5;
    assert!(
        after - before <= allowed,
        "{} storage writes for 40 probes",
        after - before
    );
}
