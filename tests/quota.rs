//! Quotas per namespace through a real server: a push over the quota is refused with 403
//! DENIED naming the namespace, the quota and the usage, and leaves nothing; re-pushes, mounts
//! of counted blobs and deletes always go through; GC gives the bytes back; racing pushers on
//! one node (fs) and on three nodes sharing one moto bucket never take a namespace past its
//! quota; a push killed mid-way leaves usage that GC makes exact again.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::s3::Moto;
use common::*;

/// One request on a fresh connection to `addr` (for threads: a `Server` stays on its own).
fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send(&mut s, method, path, headers, body);
    read_response(&mut s, method == "HEAD").expect("response")
}

/// A monolithic blob push (a session above 64 KiB, one durable step below): the response.
fn push(addr: SocketAddr, repo: &str, data: &[u8]) -> Resp {
    let d = digest(data);
    req(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
}

fn has_blob(srv: &Server, repo: &str, d: &str) -> bool {
    let r = srv.request("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
    assert!(matches!(r.status, 200 | 404), "HEAD blob: {}", r.status);
    r.status == 200
}

/// `origin usage` for `ns`: (bytes, manifests, reserved bytes, writes in flight).
fn usage(srv: &Server, ns: &str) -> (u64, u64, u64, u64) {
    let (code, out) = srv.cli(&["usage"]);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.split('\t').next() == Some(ns))
        .unwrap_or_else(|| panic!("no line for {ns:?} in:\n{out}"));
    let f: Vec<u64> = line
        .split('\t')
        .skip(1)
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .collect();
    (f[0], f[2], f[4], f[5])
}

fn quota_config(extra: &str) -> String {
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"team\"\npolicy_default_allow = true\n\
         quota_bytes = 300000\nquota_manifests = 2\n\
         [[repository]]\nnamespace = \"other\"\npolicy_default_allow = true\nquota_bytes = 1000000\n\
         [gc]\ninterval = \"1h\"\ngrace_period = \"0s\"\n{extra}"
    )
}

/// The whole contract on one server (fs, or S3 with ORIGIN_TEST_STORAGE=s3).
fn refuses_over_quota_and_gives_back(srv: &Server) {
    let a = srv.addr;
    let l1 = bytes(1, 200_000);
    let l2 = bytes(2, 150_000);
    let (d1, d2) = (digest(&l1), digest(&l2));
    assert_eq!(push(a, "team/app", &l1).status, 201);
    assert_eq!(usage(srv, "team"), (200_000, 0, 0, 0));
    // Metrics: usage and quota of the configured namespaces only.
    let m = String::from_utf8(srv.get("/metrics").body).unwrap();
    for line in [
        "origin_quota_bytes{namespace=\"team\"} 300000",
        "origin_quota_manifests{namespace=\"team\"} 2",
        "origin_quota_usage_bytes{namespace=\"team\"} 200000",
        "origin_quota_bytes{namespace=\"other\"} 1000000",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing");
    }
    assert!(!m.contains("namespace=\"\""));
    // The web UI's repository tree says the same beside the namespace's repositories.
    let page = srv.get("/ui/api/repositories?ns=team").json();
    assert_eq!(page["quota"]["namespace"], "team");
    assert_eq!(page["quota"]["usageBytes"], 200_000);
    assert_eq!(page["quota"]["quotaBytes"], 300_000);
    assert_eq!(
        srv.get("/ui/api/repositories?ns=elsewhere").json()["quota"],
        serde_json::Value::Null
    );

    // Over the quota: 403 DENIED, naming the namespace, the quota and the usage; nothing stays.
    let r = push(a, "team/app", &l2);
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "DENIED");
    let msg = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    for part in ["team", "300000", "200000", "150000"] {
        assert!(msg.contains(part), "{part} missing from {msg:?}");
    }
    assert!(!has_blob(srv, "team/app", &d2));
    assert_eq!(usage(srv, "team"), (200_000, 0, 0, 0));
    // A small blob (stored without a session) is refused the same way.
    let small = bytes(3, 2000);
    let big_enough = bytes(4, 99_000);
    assert_eq!(push(a, "team/app", &big_enough).status, 201);
    assert_eq!(push(a, "team/app", &small).status, 403);
    assert!(!has_blob(srv, "team/app", &digest(&small)));

    // A re-push of counted content and a mount of a counted blob always go through, and count
    // nothing more; a blob shared by two repositories of the namespace counts once.
    assert_eq!(push(a, "team/app", &l1).status, 201);
    let mount = |to: &str, d: &str, from: &str| {
        srv.request(
            "POST",
            &format!("/v2/{to}/blobs/uploads/?mount={d}&from={from}"),
            &[],
            b"",
        )
    };
    assert_eq!(mount("team/copy", &d1, "team/app").status, 201);
    assert_eq!(usage(srv, "team"), (299_000, 0, 0, 0));
    // Another namespace counts the same blob in its own usage.
    assert_eq!(mount("other/app", &d1, "team/app").status, 201);
    assert_eq!(usage(srv, "other").0, 200_000);
    // A mount into a full namespace of a blob it does not count is refused, and links nothing.
    assert_eq!(push(a, "other/app", &l2).status, 201);
    let r = mount("team/app", &d2, "other/app");
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(!has_blob(srv, "team/app", &d2));

    // Deletes are always allowed; the bytes come back when GC reclaims them (here every blob
    // no manifest names, the grace period being 0), not at the delete.
    for (repo, d) in [("team/app", &d1), ("team/copy", &d1)] {
        let r = srv.request("DELETE", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
        assert_eq!(r.status, 202);
    }
    assert_eq!(usage(srv, "team"), (299_000, 0, 0, 0));
    let (code, out) = srv.cli(&["gc"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(usage(srv, "team"), (0, 0, 0, 0));
    assert_eq!(usage(srv, "other"), (0, 0, 0, 0));
    // And the freed room takes the push refused before.
    assert_eq!(push(a, "team/app", &l2).status, 201);
    assert_eq!(usage(srv, "team"), (150_000, 0, 0, 0));

    // Manifests count in bytes and against quota_manifests (2 here).
    let cfg = |n: u32| format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{n}}}");
    let mk = |n: u32| {
        let c = cfg(n);
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\
             \"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":{}}},\
             \"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\
             \"digest\":\"{d2}\",\"size\":150000}}]}}",
            digest(c.as_bytes()),
            c.len()
        )
    };
    let mut expected = 150_000;
    for n in 0..3u32 {
        let c = cfg(n);
        assert_eq!(push(a, "team/app", c.as_bytes()).status, 201);
        expected += c.len() as u64;
        let m = mk(n);
        let r = srv.put_manifest("team/app", &format!("v{n}"), OCI_MANIFEST, m.as_bytes());
        if n < 2 {
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            expected += m.len() as u64;
        } else {
            assert_eq!(r.status, 403);
            let msg = r.json()["errors"][0]["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(msg.contains("manifests 2 of 2"), "{msg}");
            let got = srv.get(&format!("/v2/team/app/manifests/{}", digest(m.as_bytes())));
            assert_eq!(got.status, 404, "a refused manifest must not be stored");
        }
    }
    assert_eq!(usage(srv, "team"), (expected, 2, 0, 0));
    // The same manifest under another tag, or in another repository, is a re-push: allowed.
    let r = srv.put_manifest("team/app", "again", OCI_MANIFEST, mk(0).as_bytes());
    assert_eq!(r.status, 201);
    assert_eq!(usage(srv, "team"), (expected, 2, 0, 0));

    // Deleting the manifests releases their blobs; GC reclaims everything and gives it back.
    for n in 0..2u32 {
        let d = digest(mk(n).as_bytes());
        let r = srv.request("DELETE", &format!("/v2/team/app/manifests/{d}"), &[], b"");
        assert_eq!(r.status, 202);
    }
    let (code, out) = srv.cli(&["gc"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(usage(srv, "team"), (0, 0, 0, 0));
}

/// Point 1 on the filesystem (and on S3 when the suite runs there).
#[test]
fn a_push_over_the_quota_is_refused_and_leaves_nothing() {
    let srv = Server::start_with("", &quota_config(""));
    refuses_over_quota_and_gives_back(&srv);
}

/// Point 1 on S3 (moto).
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn a_push_over_the_quota_is_refused_on_s3_too() {
    let Some(moto) = Moto::start("a_push_over_the_quota_is_refused_on_s3_too") else {
        return;
    };
    moto.create_bucket("quota");
    let srv = s3_node(&moto, "quota", &quota_config(""));
    refuses_over_quota_and_gives_back(&srv);
}

fn s3_node(moto: &Moto, bucket: &str, extra: &str) -> Server {
    Server::start_on_bucket("quota-s3", moto, bucket, extra)
}

const RACE_QUOTA: u64 = 1_000_000;
const RACE_BLOB: usize = 70_000;
const RACE_PUSHERS: usize = 24;

/// `RACE_PUSHERS` threads push distinct blobs of `RACE_BLOB` bytes at once into one namespace
/// with `RACE_QUOTA` bytes, spread over `addrs`: returns the digests accepted.
fn race(addrs: &[SocketAddr]) -> (Vec<String>, usize) {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(std::sync::Barrier::new(RACE_PUSHERS));
    let threads: Vec<_> = (0..RACE_PUSHERS)
        .map(|i| {
            let (accepted, refused, start) = (accepted.clone(), refused.clone(), start.clone());
            let addr = addrs[i % addrs.len()];
            std::thread::spawn(move || {
                let data = bytes(1000 + i as u64, RACE_BLOB);
                start.wait();
                let r = push(addr, &format!("race/r{}", i % 3), &data);
                match r.status {
                    201 => accepted.lock().unwrap().push(digest(&data)),
                    403 => {
                        assert_eq!(r.error_code(), "DENIED");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    s => panic!("push: {s} {}", String::from_utf8_lossy(&r.body)),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    (accepted, refused.load(Ordering::Relaxed))
}

fn race_config() -> String {
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"race\"\npolicy_default_allow = true\nquota_bytes = {RACE_QUOTA}\n"
    )
}

/// Checks a race's outcome against what is stored and counted; the overshoot (bytes over the
/// quota) is printed and must be zero.
fn check_race(srv: &Server, accepted: &[String], refused: usize, nodes: usize) {
    let fit = RACE_QUOTA as usize / RACE_BLOB;
    let (used, _, reserved, in_flight) = usage(srv, "race");
    let overshoot = used as i64 - RACE_QUOTA as i64;
    println!(
        "quota race on {nodes} node(s): {} accepted, {refused} refused, usage {used} of {RACE_QUOTA} \
         (overshoot {} bytes)",
        accepted.len(),
        overshoot.max(0)
    );
    assert_eq!((reserved, in_flight), (0, 0));
    assert_eq!(used, (accepted.len() * RACE_BLOB) as u64);
    assert!(used <= RACE_QUOTA, "overshoot of {overshoot} bytes");
    // Exact, not merely under: every write that fitted was let through.
    assert_eq!(accepted.len(), fit);
    assert_eq!(accepted.len() + refused, RACE_PUSHERS);
    let mut stored = 0;
    for i in 0..RACE_PUSHERS {
        let d = digest(&bytes(1000 + i as u64, RACE_BLOB));
        let here = has_blob(srv, &format!("race/r{}", i % 3), &d);
        assert_eq!(here, accepted.contains(&d), "blob {i}");
        stored += usize::from(here);
    }
    assert_eq!(stored, fit);
}

/// Point 2 on one node: racing pushers against the last bytes of a quota never take the
/// namespace over it, and every push that fits is let through.
#[test]
fn racing_pushers_never_exceed_the_quota() {
    let srv = Server::start_with("", &race_config());
    let (accepted, refused) = race(&[srv.addr]);
    check_race(&srv, &accepted, refused, 1);
}

/// Point 2 on three nodes sharing one bucket: the same, with no lock service (conditional
/// writes on the usage object only).
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn racing_pushers_on_three_nodes_never_exceed_the_quota() {
    let Some(moto) = Moto::start("racing_pushers_on_three_nodes_never_exceed_the_quota") else {
        return;
    };
    moto.create_bucket("race");
    let nodes: Vec<Server> = (0..3)
        .map(|_| s3_node(&moto, "race", &race_config()))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (accepted, refused) = race(&addrs);
    check_race(&nodes[1], &accepted, refused, 3);
}

/// A push killed after its reservation and its marker (before the commit) leaves a
/// reservation; after `gc.debris_after` a GC pass expires it (counted: its marker names
/// it), then collects what the push left and gives the bytes back. Usage is exact after.
#[test]
fn a_push_killed_mid_way_leaves_usage_that_gc_makes_exact() {
    for point in ["quota-after-reserve", "quota-after-marker"] {
        let dir = TempDir::new("quota-crash");
        let text = config_text(
            &dir.0,
            "query_timeout = \"2s\"",
            &format!(
                "{}[gc]\ninterval = \"1h\"\ngrace_period = \"0s\"\ndebris_after = \"4s\"\n",
                race_config()
            ),
        );
        // The fourth reservation dies: the image (config, layer, manifest) gets through.
        let spec = format!("{point}@4");
        let mut srv = Server::start_config_env(dir, &text, &[("ORIGIN_FAILPOINT", &spec)]);
        srv.push_image("race/a", "kept", &[bytes(1, 100_000)]);
        let (kept, manifests, _, _) = usage(&srv, "race");
        assert_eq!(manifests, 1);
        let lost = bytes(2, 120_000);
        let mut s = srv.connect();
        send(
            &mut s,
            "POST",
            &format!("/v2/race/a/blobs/uploads/?digest={}", digest(&lost)),
            &[],
            &lost,
        );
        assert!(
            read_response(&mut s, false).is_none(),
            "{point}: should have died"
        );
        let _ = srv.wait_exit(Duration::from_secs(10));
        let text = std::fs::read_to_string(&srv.config_path).unwrap();
        let dir = std::mem::replace(&mut srv.dir, TempDir(std::path::PathBuf::new()));
        drop(srv);
        let srv = Server::start_config(dir, &text, &[]);
        // The dead push's reservation still counts (never under the truth) ...
        assert_eq!(usage(&srv, "race"), (kept, 1, 120_000, 1), "{point}");
        // ... until it is older than debris_after: then GC expires it and collects what the
        // push left (its marker, if it wrote one, goes with it).
        srv.advance_clock(Duration::from_secs(10));
        for _ in 0..2 {
            let (code, out) = srv.cli(&["gc"]);
            assert_eq!(code, 0, "{out}");
        }
        assert_eq!(usage(&srv, "race"), (kept, 1, 0, 0), "{point}");
        // The same push now goes through and counts once.
        assert_eq!(push(srv.addr, "race/a", &lost).status, 201);
        assert_eq!(usage(&srv, "race"), (kept + 120_000, 1, 0, 0), "{point}");
    }
}

/// A quota added to a namespace that holds content already: `origin scrub` recomputes the
/// usage from the links, reports the drift (exit 3), and `--repair` makes the record exact;
/// the reloaded quota then counts from there.
#[test]
fn scrub_recomputes_usage_and_reports_drift() {
    let base = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n";
    let mut srv = Server::start_with("", base);
    let (manifest, _) = srv.push_image("late/app", "v1", &[bytes(5, 50_000)]);
    let config = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":1}";
    let held = (config.len() + 50_000 + manifest.len()) as u64;
    let text = std::fs::read_to_string(&srv.config_path).unwrap().replace(
        base,
        &format!(
            "{base}[[repository]]\nnamespace = \"late\"\npolicy_default_allow = true\n\
             quota_bytes = 100000\nquota_manifests = 5\n"
        ),
    );
    std::fs::write(&srv.config_path, text).unwrap();
    let (code, out) = srv.cli(&["scrub"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "quota drift: namespace late: recorded 0 bytes 0 manifests, counted from storage {held} bytes 1 manifests; 3 markers missing"
        )),
        "{out}"
    );
    let (code, out) = srv.cli(&["scrub", "--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(repaired)"), "{out}");
    assert_eq!(usage(&srv, "late"), (held, 1, 0, 0));
    let (code, out) = srv.cli(&["scrub"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("quota drift"), "{out}");
    // Reloaded: the quota applies from the recomputed usage.
    srv.signal(libc::SIGHUP);
    assert!(srv
        .logs_until("configuration reloaded", Duration::from_secs(10))
        .is_some());
    assert_eq!(push(srv.addr, "late/app", &bytes(6, 60_000)).status, 403);
    assert_eq!(push(srv.addr, "late/other", &bytes(7, 40_000)).status, 201);
    assert_eq!(usage(&srv, "late"), (held + 40_000, 1, 0, 0));
}

/// `quota.warning` goes to the namespace's webhooks once, when a push takes its usage across
/// `quota_warn_ratio`, with the namespace, the usage and the quota.
#[test]
fn a_push_across_the_warning_ratio_sends_one_quota_warning() {
    let recv = common::receiver::Receiver::start();
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"warn\"\npolicy_default_allow = true\n\
         quota_bytes = 100000\nquota_warn_ratio = 0.5\nevent_webhooks = [\"ops\"]\n\
         [event_webhook.ops]\nurl = \"{}\"\nevents = [\"quota.warning\"]\ndelivery = \"optional\"\n",
        recv.url("/hooks")
    );
    let srv = Server::start_with("", &config);
    for (seed, len) in [(1, 30_000), (2, 30_000), (3, 10_000)] {
        assert_eq!(push(srv.addr, "warn/app", &bytes(seed, len)).status, 201);
    }
    let got = recv.received();
    assert_eq!(
        got.len(),
        1,
        "{:?}",
        got.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    let v = got[0].json();
    assert_eq!(v["kind"], "quota.warning");
    assert_eq!(v["repository"], "warn/app");
    assert_eq!(v["digest"], digest(&bytes(2, 30_000)));
    assert_eq!(v["quota"]["namespace"], "warn");
    assert_eq!(v["quota"]["usage_bytes"], 60_000);
    assert_eq!(v["quota"]["quota_bytes"], 100_000);
}

/// S3 requests of `/metrics`, summed over operations and outcomes.
fn s3_requests(srv: &Server) -> u64 {
    let m = String::from_utf8(srv.get("/metrics").body).unwrap();
    m.lines()
        .filter(|l| l.starts_with("origin_s3_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The hot path without a quota makes no extra storage request: a push into a namespace no
/// quota meters costs the same S3 requests on a node with quotas configured elsewhere as on a
/// node with none; a push into a metered namespace costs the reservation's few more.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn no_quota_costs_no_storage_request() {
    let Some(moto) = Moto::start("no_quota_costs_no_storage_request") else {
        return;
    };
    moto.create_bucket("plain");
    moto.create_bucket("quotas");
    let plain = s3_node(&moto, "plain", ALLOW_ALL);
    let quotas = s3_node(
        &moto,
        "quotas",
        &format!("{ALLOW_ALL}[[repository]]\nnamespace = \"metered\"\npolicy_default_allow = true\nquota_bytes = 10000000\n"),
    );
    let cost = |srv: &Server, repo: &str, seed: u64, len: usize| {
        let before = s3_requests(srv);
        assert_eq!(push(srv.addr, repo, &bytes(seed, len)).status, 201);
        s3_requests(srv) - before
    };
    for (seed, len) in [(1, 100_000), (2, 1000)] {
        // Warm both nodes up the same way first (connections, caches).
        cost(&plain, "warm/app", seed + 10, len);
        cost(&quotas, "warm/app", seed + 10, len);
        let without = cost(&plain, "free/app", seed, len);
        let unmetered = cost(&quotas, "free/app", seed, len);
        let metered = cost(&quotas, "metered/app", seed + 20, len);
        println!("S3 requests of a {len}-byte push: {without} (no quota), {unmetered} (unmetered), {metered} (metered)");
        assert_eq!(unmetered, without, "{len} bytes");
        assert!(metered > unmetered, "{len} bytes");
    }
}

/// Writers of the same new blob into several repositories of one namespace at once: all get
/// through, and the blob counts once (the marker decides; the other reservations are given
/// back at settle).
#[test]
fn the_same_blob_pushed_at_once_counts_once() {
    let srv = Server::start_with("", &race_config());
    let data = Arc::new(bytes(77, 100_000));
    let start = Arc::new(std::sync::Barrier::new(8));
    let addr = srv.addr;
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (data, start) = (data.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                push(addr, &format!("race/same{i}"), &data).status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 201);
    }
    assert_eq!(usage(&srv, "race"), (100_000, 0, 0, 0));
}

/// `origin check-config` checks every quota key and names the bad one.
#[test]
fn check_config_names_a_bad_quota_key() {
    let dir = TempDir::new("quota-check");
    let cases = [
        ("quota_bytes = 10\n[repository.mirror]\n[[repository.mirror.upstream]]\nurl = \"https://example.com\"\n", "repository[1].quota_bytes"),
        ("quota_bytes = 10\nquota_warn_ratio = 1.5\n", "repository[1].quota_warn_ratio"),
        ("quota_warn_ratio = 0.5\n", "repository[1].quota_warn_ratio"),
        ("quota_bytes = -1\n", "quota_bytes"),
        ("quota_byte = 1\n", "quota_byte"),
    ];
    for (keys, named) in cases {
        let text = config_text(
            &dir.0,
            "",
            &format!("{ALLOW_ALL}[[repository]]\nnamespace = \"hub\"\n{keys}"),
        );
        let path = dir.0.join("config.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{keys}: {err}");
        assert!(err.contains(named), "{keys}: {err}");
    }
}
