//! Limits a node keeps for itself: the free-space guard (`storage.fs.min_free_bytes`,
//! `min_free_ratio`), per-identity request rates (`[[rate_limit]]`) and pull bandwidth.

mod common;

use std::time::Duration;

use common::*;

/// A threshold far above any real disk's free space: the guard is then always low.
const ABOVE_ANY_DISK: u64 = 1 << 60;

/// The server's configuration as it started, with `keys` added to its `[storage.fs]` table.
fn with_fs_keys(srv: &Server, keys: &str) -> String {
    let text = config_text(&srv.dir.0, "", ALLOW_ALL);
    let root = format!("root_dir = \"{}\"\n", srv.dir.0.join("data").display());
    assert!(text.contains(&root), "{text}");
    text.replace(&root, &format!("{root}{keys}\n"))
}

fn reload(srv: &mut Server, text: &str, nth: usize) {
    std::fs::write(&srv.config_path, text).unwrap();
    srv.signal(libc::SIGHUP);
    assert!(
        srv.logs_count_until("configuration reloaded", nth, Duration::from_secs(10)),
        "reload {nth} not logged: {:#?}",
        srv.seen
    );
}

fn metric(srv: &Server, name: &str) -> Option<f64> {
    let text = String::from_utf8(srv.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Below the free-space threshold (set by a reload above the disk's free space), every
/// write that adds data answers 507 DENIED with a message saying why, while pulls, deletes
/// and the commit of bytes already uploaded go on; `/readyz` stays 200 and says writes are
/// refused; the metric and one log line mark each crossing; a reload back to 0 accepts
/// pushes again.
#[test]
fn below_the_free_space_threshold_writes_are_refused_and_reads_go_on() {
    if storage_on_s3() {
        return; // `[storage.fs]` keys: no guard on S3
    }
    let mut srv = Server::start();
    let (manifest, manifest_digest) = srv.push_image("app", "v1", &[bytes(1, 4096)]);
    let layer = digest(&bytes(1, 4096));
    // A session with its bytes in, committed after the guard trips: no data added then.
    let location = srv.start_upload("app");
    let pending = bytes(2, 1000);
    let patch = srv.request(
        "PATCH",
        &location,
        &[("Content-Type", "application/octet-stream")],
        &pending,
    );
    assert_eq!(patch.status, 202);

    let low = with_fs_keys(&srv, &format!("min_free_bytes = {ABOVE_ANY_DISK}"));
    reload(&mut srv, &low, 1);

    let refused = |r: Resp, what: &str| {
        assert_eq!(
            r.status,
            507,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.error_code(), "DENIED", "{what}");
        let message = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("low on free space"), "{what}: {message}");
        assert!(message.contains("min_free_bytes"), "{what}: {message}");
    };
    refused(
        srv.request("POST", "/v2/app/blobs/uploads/", &[], b""),
        "POST",
    );
    let blob = bytes(3, 200);
    refused(
        srv.request(
            "POST",
            &format!("/v2/app/blobs/uploads/?digest={}", digest(&blob)),
            &[],
            &blob,
        ),
        "monolithic",
    );
    refused(srv.request("PATCH", &location, &[], &bytes(4, 10)), "PATCH");
    refused(
        srv.put_manifest("app", "v2", OCI_MANIFEST, &manifest),
        "manifest PUT",
    );
    // Reads.
    assert_eq!(srv.get(&format!("/v2/app/blobs/{layer}")).status, 200);
    let got = srv.get("/v2/app/manifests/v1");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, manifest);
    assert_eq!(srv.get("/v2/app/tags/list").status, 200);
    // The commit of bytes already stored.
    let commit = srv.request(
        "PUT",
        &format!("{location}?digest={}", digest(&pending)),
        &[],
        b"",
    );
    assert_eq!(
        commit.status,
        201,
        "{}",
        String::from_utf8_lossy(&commit.body)
    );
    // Deletes.
    let deleted = srv.request(
        "DELETE",
        &format!("/v2/app/manifests/{manifest_digest}"),
        &[],
        b"",
    );
    assert_eq!(deleted.status, 202);

    let ready = srv.get("/readyz");
    assert_eq!(ready.status, 200);
    let said = String::from_utf8_lossy(&ready.body).to_string();
    assert!(said.contains("writes that add data are refused"), "{said}");
    assert_eq!(metric(&srv, "origin_storage_space_low"), Some(1.0));
    assert!(metric(&srv, "origin_storage_space_refusals_total").unwrap() >= 4.0);
    assert!(metric(&srv, "origin_storage_free_bytes").unwrap() > 0.0);
    let crossings =
        |srv: &Server, needle: &str| srv.seen.iter().filter(|l| l.contains(needle)).count();
    srv.logs_until("free-space guard: storage is low", Duration::from_secs(5))
        .expect("crossing logged");

    let back = with_fs_keys(&srv, "min_free_bytes = 0");
    reload(&mut srv, &back, 2);
    srv.push_image("app", "v3", &[bytes(5, 4096)]);
    assert_eq!(srv.get("/readyz").body, b"ready\n");
    assert_eq!(metric(&srv, "origin_storage_space_low"), Some(0.0));
    srv.logs_until(
        "storage has enough free space again",
        Duration::from_secs(5),
    )
    .expect("crossing back logged");
    assert_eq!(crossings(&srv, "free-space guard: storage is low"), 1);
}

/// `min_free_ratio` alone trips the guard (1.0: no filesystem is entirely free), and
/// `check-config` rejects a ratio outside 0..=1 naming the key.
#[test]
fn free_ratio_trips_the_guard_and_is_validated() {
    if storage_on_s3() {
        return; // `[storage.fs]` keys: no guard on S3
    }
    let dir = TempDir::new("ratio");
    let text = config_text(&dir.0, "", ALLOW_ALL)
        .replace("[storage.fs]\n", "[storage.fs]\nmin_free_ratio = 1.0\n");
    let srv = Server::start_config(dir, &text, &[]);
    let r = srv.request("POST", "/v2/app/blobs/uploads/", &[], b"");
    assert_eq!(r.status, 507);
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("min_free_ratio"), "{message}");

    let bad = text.replace("min_free_ratio = 1.0", "min_free_ratio = 1.5");
    std::fs::write(&srv.config_path, bad).unwrap();
    let (code, said) = srv.cli(&["check-config"]);
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("storage.fs.min_free_ratio"), "{said}");
}

// ---- rate limits ------------------------------------------------------------------------

/// Outcome counts of requests sent in a loop on one keep-alive connection until `until`.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    limited: usize,
    other: usize,
}

/// Sends `HEAD path` (with `auth`, if any) on one connection in a loop until `until`, at
/// most one request per `gap`; a 429 must carry Retry-After and TOOMANYREQUESTS.
fn hammer(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<&str>,
    until: std::time::Instant,
    gap: Duration,
) -> Tally {
    let mut t = Tally::default();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    while std::time::Instant::now() < until {
        send(&mut s, "GET", path, &headers, b"");
        let r = read_response(&mut s, false).expect("response");
        match r.status {
            200 => t.ok += 1,
            429 => {
                let after: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!(after >= 1, "{after}");
                assert_eq!(r.error_code(), "TOOMANYREQUESTS");
                t.limited += 1;
            }
            _ => t.other += 1,
        }
        std::thread::sleep(gap);
    }
    t
}

fn sum(tallies: Vec<Tally>) -> Tally {
    tallies.into_iter().fold(Tally::default(), |a, b| Tally {
        ok: a.ok + b.ok,
        limited: a.limited + b.limited,
        other: a.other + b.other,
    })
}

/// Pulls hammered at far more than the limit for 10 s are admitted at the configured rate:
/// burst + rate x 10 s, within 10 %, and every other request is a 429 with Retry-After.
#[test]
fn the_rate_limit_holds_within_ten_percent_over_ten_seconds() {
    const RATE: f64 = 20.0;
    const BURST: f64 = 10.0;
    let srv = Server::start_with(
        "",
        &format!(
            "{ALLOW_ALL}\n[[rate_limit]]\npull = {{ requests_per_second = {RATE}, burst = {BURST} }}\n"
        ),
    );
    let blob = srv.push_blob("app", &bytes(7, 100));
    let path = format!("/v2/app/blobs/{blob}");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (addr, path) = (srv.addr, path.clone());
            std::thread::spawn(move || hammer(addr, &path, None, until, Duration::from_millis(2)))
        })
        .collect();
    let t = sum(threads.into_iter().map(|h| h.join().unwrap()).collect());
    let expected = BURST + RATE * 10.0;
    let ok = t.ok as f64;
    assert!(
        (ok - expected).abs() <= expected * 0.1,
        "admitted {ok}, expected {expected} ± 10 %: {t:?}"
    );
    assert!(
        t.limited as f64 > 5.0 * expected,
        "the client did not hammer hard enough: {t:?}"
    );
    assert_eq!(t.other, 0, "{t:?}");
}

/// Basic credentials for `user:pass`.
fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// GETs `path` and reads the whole body; the time it took.
fn timed_pull(srv: &Server, path: &str, auth: Option<&str>, expect: &[u8]) -> Duration {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    let start = std::time::Instant::now();
    let r = srv.request("GET", path, &headers, b"");
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.body == expect, "pulled body differs");
    took
}

fn within_ten_percent(took: Duration, expected: Duration) {
    let (t, e) = (took.as_secs_f64(), expected.as_secs_f64());
    assert!(
        (t - e).abs() <= e * 0.1,
        "took {took:?}, expected {expected:?} ± 10 %"
    );
}

/// A pull of N bytes under `pull_bytes_per_second = B` takes N/B (within 10 %): the
/// stream is slowed, not refused, and arrives whole.
#[test]
fn pull_bandwidth_paces_the_stream() {
    const RATE: usize = 1024 * 1024;
    let srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}\n[[rate_limit]]\npull_bytes_per_second = {RATE}\n"),
    );
    let data = bytes(8, 4 * RATE);
    let blob = srv.push_blob("app", &data);
    let took = timed_pull(&srv, &format!("/v2/app/blobs/{blob}"), None, &data);
    within_ten_percent(took, Duration::from_secs(4));
    let paced = metric(&srv, "origin_pull_paced_seconds_total").unwrap();
    assert!(paced > 3.0, "{paced}");
}

/// One identity flooding pulls is refused (429) while another identity's pulls all pass,
/// and the other's paced pull runs at its own rate while the first one pulls too: each
/// identity has its own buckets.
#[test]
fn one_identitys_flood_does_not_limit_anothers_pulls() {
    const RATE: usize = 512 * 1024;
    let (alice_pw, bob_pw) = (hash_password("alice-pw"), hash_password("bob-pw"));
    let srv = Server::start_with(
        "",
        &format!(
            "[identity.alice]\nusername = \"alice\"\npassword = \"{alice_pw}\"\n\
             [identity.bob]\nusername = \"bob\"\npassword = \"{bob_pw}\"\n\
             {ALLOW_ALL}\n[[rate_limit]]\npull = {{ requests_per_second = 10, burst = 10 }}\n\
             pull_bytes_per_second = {RATE}\n"
        ),
    );
    let data = bytes(9, 2 * RATE);
    let blob = srv.push_blob("app", &data);
    let path = format!("/v2/app/blobs/{blob}");
    let small = srv.push_blob("app", &bytes(11, 100));
    let small_path = format!("/v2/app/blobs/{small}");
    let (alice, bob) = (basic("alice", "alice-pw"), basic("bob", "bob-pw"));
    // Each password verified once (argon2), so the timings below are the limiter's.
    for auth in [&alice, &bob] {
        assert_eq!(
            srv.request("GET", "/v2/", &[("Authorization", auth)], b"")
                .status,
            200
        );
    }
    // Alice pulls the large blob at her bandwidth (2 s) ...
    let alice_pull = {
        let (addr, path, alice, data) = (srv.addr, path.clone(), alice.clone(), data.clone());
        std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            send(&mut s, "GET", &path, &[("Authorization", &alice)], b"");
            read_response(&mut s, false).map(|r| (r.status, r.body == data))
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // ... and floods small pulls, far over her request rate ...
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let (addr, path, alice) = (srv.addr, small_path.clone(), alice.clone());
            std::thread::spawn(move || {
                hammer(addr, &path, Some(&alice), until, Duration::from_millis(2))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // ... while Bob's pull runs at his own bandwidth (sharing Alice's bucket, it would take
    // about 3.5 s), and his requests all pass.
    let took = timed_pull(&srv, &path, Some(&bob), &data);
    within_ten_percent(took, Duration::from_secs(2));
    for _ in 0..5 {
        let r = srv.request("GET", &small_path, &[("Authorization", &bob)], b"");
        assert_eq!(r.status, 200);
    }
    let t = sum(flood.into_iter().map(|h| h.join().unwrap()).collect());
    assert!(t.limited > 100 && t.other == 0, "{t:?}");
    assert_eq!(alice_pull.join().unwrap(), Some((200, true)));
}

/// `[[rate_limit]]` reloads: added, it limits at once; removed, it frees at once; an
/// invalid entry is refused by check-config naming the key, and by a reload (kept as is).
#[test]
fn rate_limits_reload_and_are_validated() {
    let mut srv = Server::start();
    let blob = srv.push_blob("app", &bytes(10, 100));
    let path = format!("/v2/app/blobs/{blob}");
    for _ in 0..20 {
        assert_eq!(srv.request("HEAD", &path, &[], b"").status, 200);
    }
    let base = std::fs::read_to_string(&srv.config_path).unwrap();
    let limited = format!(
        "{base}\n[[rate_limit]]\nnamespace = \"app\"\nanonymous = true\n\
         pull = {{ requests_per_second = 0.1, burst = 2 }}\n"
    );
    reload(&mut srv, &limited, 1);
    assert_eq!(srv.request("HEAD", &path, &[], b"").status, 200);
    assert_eq!(srv.request("HEAD", &path, &[], b"").status, 200);
    let r = srv.request("GET", &path, &[], b"");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("10"));
    // Other namespaces are not covered.
    srv.push_blob("other", &bytes(10, 100));
    for _ in 0..5 {
        assert_eq!(
            srv.request("HEAD", &format!("/v2/other/blobs/{blob}"), &[], b"")
                .status,
            200
        );
    }

    let invalid = limited.replace("requests_per_second = 0.1", "requests_per_second = 0");
    std::fs::write(&srv.config_path, &invalid).unwrap();
    let (code, said) = srv.cli(&["check-config"]);
    assert_ne!(code, 0, "{said}");
    assert!(
        said.contains("rate_limit[0].pull.requests_per_second"),
        "{said}"
    );
    srv.signal(libc::SIGHUP);
    srv.logs_until("reload rejected", Duration::from_secs(10))
        .expect("rejection logged");
    assert_eq!(srv.request("HEAD", &path, &[], b"").status, 429);

    reload(&mut srv, &base, 2);
    for _ in 0..5 {
        assert_eq!(srv.request("HEAD", &path, &[], b"").status, 200);
    }
}
