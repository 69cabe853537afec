//! Three Origin nodes on one moto bucket behave as one registry: conformance-style flows with
//! every step on another node, an upload continued across nodes, tag read-after-write and
//! delete-after-write, the GC stress with GC running on every node, and upload expiry, scrub
//! and mirror eviction running on several nodes at once.

mod common;
#[path = "multinode/uploads.rs"]
mod uploads;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::remote::Remote;
use common::s3::Moto;
use common::upstream::{Upstream, UpstreamAuth};
use common::*;

/// What the GC stress's end state is checked under: nothing of the run may be left there.
const RUN_PREFIXES: [&str; 5] = ["blobs/", "repositories/", "linked/", "catalog/", "refs/"];

/// A node on `bucket` with `extra` config (after the catch-all repository).
fn node(moto: &Moto, bucket: &str, extra: &str) -> Server {
    node_with_parts(moto, bucket, extra, None)
}

/// `node`, with staged parts of `part_bytes` instead of the tests' 5 MiB.
fn node_with_parts(moto: &Moto, bucket: &str, extra: &str, part_bytes: Option<usize>) -> Server {
    let dir = TempDir::new("multinode");
    let text = config_text(&dir.0, "", extra);
    let mut section = moto.storage_section(bucket);
    if let Some(n) = part_bytes {
        let (head, _) = section.split_once("multipart_part_size").unwrap();
        let (_, tail) = section.split_once("\nrequest_timeout").unwrap();
        section = format!("{head}multipart_part_size = {n}\nrequest_timeout{tail}");
    }
    let text = with_storage(&text, &dir.0, &section);
    Server::start_config(dir, &text, &[])
}

fn three(moto: &Moto, bucket: &str, extra: &str) -> Vec<Server> {
    moto.create_bucket(bucket);
    (0..3).map(|_| node(moto, bucket, extra)).collect()
}

fn gc_section(interval: &str, grace: &str) -> String {
    format!("{ALLOW_ALL}\n[gc]\nenabled = true\ninterval = \"{interval}\"\ngrace_period = \"{grace}\"\n")
}

/// Runs `origin <args>` against each node's config (and on its clock) at the same time;
/// (exit code, output).
fn cli_on_all(nodes: &[Server], args: &[&str]) -> Vec<(i32, String)> {
    let runs: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_origin"));
            cmd.env(CLOCK_FILE_ENV, clock_file(&n.dir.0));
            cmd.args(args).arg("-c").arg(&n.config_path);
            std::thread::spawn(move || {
                let out = cmd.output().unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                )
            })
        })
        .collect();
    runs.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Waits until nothing is left under `prefixes` in the bucket.
fn wait_bucket_empty(moto: &Moto, bucket: &str, prefixes: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<String> = prefixes.iter().flat_map(|p| moto.list(bucket, p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} objects left, e.g. {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Push on A, pull on B, delete on C; an upload POSTed on A, PATCHed on B and PUT on C; a
/// tag moved or deleted on one node is what the next node serves on the very next request.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn three_nodes_one_bucket_behave_as_one_registry() {
    let Some(moto) = Moto::start("three_nodes_one_bucket_behave_as_one_registry") else {
        return;
    };
    let nodes = three(&moto, "one", ALLOW_ALL);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let layers = vec![bytes(1, 300_000), bytes(2, 1000)];
    let (manifest, md) = a.push_image("multi/app", "v1", &layers);
    let got = b.get("/v2/multi/app/manifests/v1");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, manifest);
    for l in &layers {
        let r = b.get(&format!("/v2/multi/app/blobs/{}", digest(l)));
        assert_eq!(r.status, 200);
        assert!(r.body == *l, "blob differs on another node");
    }
    assert_eq!(
        c.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["multi/app"])
    );
    assert_eq!(
        c.get("/v2/multi/app/tags/list").json()["tags"],
        serde_json::json!(["v1"])
    );
    // A cross-repository mount on C of what A pushed.
    let d0 = digest(&layers[0]);
    let r = c.request(
        "POST",
        &format!("/v2/multi/other/blobs/uploads/?mount={d0}&from=multi/app"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(a.get(&format!("/v2/multi/other/blobs/{d0}")).body == layers[0]);

    // POST on A, PATCH on B (past one part), PUT on C with the rest.
    let data = bytes(3, 7 * 1024 * 1024 + 123);
    let d = digest(&data);
    let cut = 6 * 1024 * 1024;
    let loc = a.start_upload("multi/up");
    let range = format!("0-{}", cut - 1);
    let r = b.request(
        "PATCH",
        &loc,
        &[("Content-Range", range.as_str())],
        &data[..cut],
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap().to_string();
    let status = a.request("GET", &loc, &[], b"");
    assert_eq!(status.status, 204);
    assert_eq!(status.header("range"), Some(range.as_str()));
    let range = format!("{cut}-{}", data.len() - 1);
    let r = c.request(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", range.as_str())],
        &data[cut..],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    for n in &nodes {
        assert!(n.get(&format!("/v2/multi/up/blobs/{d}")).body == data);
    }

    // Read-after-write and delete-after-write on the very next request, on another node.
    for i in 0..6usize {
        let (w, r, x) = (&nodes[i % 3], &nodes[(i + 1) % 3], &nodes[(i + 2) % 3]);
        let (_, d) = w.push_image("multi/tags", "moving", &[bytes(100 + i as u64, 500)]);
        let got = r.request("HEAD", "/v2/multi/tags/manifests/moving", &[], b"");
        assert_eq!(got.status, 200, "round {i}");
        assert_eq!(
            got.header("docker-content-digest"),
            Some(d.as_str()),
            "round {i}"
        );
        if i % 2 == 1 {
            let del = x.request("DELETE", "/v2/multi/tags/manifests/moving", &[], b"");
            assert_eq!(del.status, 202);
            assert_eq!(
                w.get("/v2/multi/tags/manifests/moving").status,
                404,
                "round {i}"
            );
        }
    }

    // Delete on C: gone everywhere at once.
    let del = c.request("DELETE", &format!("/v2/multi/app/manifests/{md}"), &[], b"");
    assert_eq!(del.status, 202);
    assert_eq!(a.get("/v2/multi/app/manifests/v1").status, 404);
    assert_eq!(b.get(&format!("/v2/multi/app/manifests/{md}")).status, 404);
    let tags = a.get("/v2/multi/app/tags/list");
    assert!(
        tags.status == 404 || tags.json()["tags"].as_array().is_none_or(|t| t.is_empty()),
        "tags left: {}",
        String::from_utf8_lossy(&tags.body)
    );
}

/// The GC stress on three nodes: pushers and deleters spread over them, GC every second on
/// every node. Nothing acknowledged is lost; once everything is deleted and the grace period
/// is over, nothing of the run is left in the bucket.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn three_nodes_gc_stress_loses_nothing_and_collects_everything() {
    let Some(moto) = Moto::start("three_nodes_gc_stress") else {
        return;
    };
    let secs: u64 = std::env::var("ORIGIN_GC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let nodes = three(&moto, "stress", &gc_section("1s", "2s"));
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicUsize::new(0));
    let deleted = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let tags: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..6)
            .map(|i| bytes(100 + i, 20_000 + i as usize * 1000))
            .collect(),
    );
    let mut threads = Vec::new();
    for p in 0..3u64 {
        let (stop, pushed, retried, tags, pool) = (
            stop.clone(),
            pushed.clone(),
            retried.clone(),
            tags.clone(),
            pool.clone(),
        );
        let addrs = addrs.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Each push goes to another node than the last.
                let srv = Remote(addrs[((p + i) % 3) as usize]);
                let repo = format!("stress/r{}", (p + i) % 4);
                let layers = [
                    pool[((p + i) % 6) as usize].clone(),
                    pool[((p * 3 + i) % 6) as usize].clone(),
                    bytes(p * 100_000 + i, 3000),
                ];
                let tag = format!("p{p}-{i}");
                for attempt in 0..5 {
                    match srv.push_image(&repo, &tag, &layers) {
                        Ok(_) => {
                            tags.lock().unwrap().push((repo.clone(), tag.clone()));
                            pushed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(code) if code == "MANIFEST_BLOB_UNKNOWN" && attempt < 4 => {
                            retried.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(code) => panic!("push failed: {code}"),
                    }
                }
            }
        }));
    }
    for k in 0..2u64 {
        let (stop, deleted, tags) = (stop.clone(), deleted.clone(), tags.clone());
        let addrs = addrs.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(150));
                n += 1;
                let srv = Remote(addrs[((n + k) % 3) as usize]);
                let victim = {
                    let mut t = tags.lock().unwrap();
                    if t.len() < 4 {
                        continue;
                    }
                    let idx = ((n * 7 + k) as usize) % t.len();
                    t.remove(idx)
                };
                let (repo, tag) = victim;
                if n.is_multiple_of(2) {
                    let r = srv.req("DELETE", &format!("/v2/{repo}/manifests/{tag}"));
                    assert_eq!(r.status, 202, "tag delete");
                } else {
                    let h = srv.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"));
                    assert_eq!(h.status, 200, "{repo}:{tag} pushed but not found");
                    let d = h.header("docker-content-digest").unwrap().to_string();
                    let r = srv.req("DELETE", &format!("/v2/{repo}/manifests/{d}"));
                    assert!(r.status == 202 || r.status == 404, "delete: {}", r.status);
                }
                deleted.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    eprintln!(
        "stress on 3 nodes: {} pushed, {} deleted, {} pushes retried after GC",
        pushed.load(Ordering::Relaxed),
        deleted.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed)
    );
    assert!(pushed.load(Ordering::Relaxed) > 6 && deleted.load(Ordering::Relaxed) > 3);
    // Every tag still listed (by any node) pulls completely from every node.
    let listed = |n: &Server| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for r in 0..4 {
            let repo = format!("stress/r{r}");
            for t in n.get(&format!("/v2/{repo}/tags/list")).json()["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                out.push((repo.clone(), t.as_str().unwrap().to_string()));
            }
        }
        out
    };
    let live = listed(&nodes[0]);
    assert!(!live.is_empty());
    assert_eq!(live, listed(&nodes[2]), "nodes list different tags");
    // Every acknowledged push not deleted is still there.
    for (repo, tag) in tags.lock().unwrap().iter() {
        assert!(
            live.contains(&(repo.clone(), tag.clone())),
            "{repo}:{tag} lost"
        );
    }
    for (i, (repo, tag)) in live.iter().enumerate() {
        Remote(addrs[i % 3]).pull_verified(repo, tag);
    }
    // After the grace period (on every node's clock): a pass and a scrub, on every node at
    // once.
    for n in &nodes {
        n.advance_clock(Duration::from_secs(3));
    }
    for (code, out) in cli_on_all(&nodes, &["gc"]) {
        assert_eq!(code, 0, "{out}");
    }
    for (code, out) in cli_on_all(&nodes, &["scrub"]) {
        assert!(!out.contains("broken:"), "{out}");
        assert!(!out.contains("unreferenced blob"), "{out}");
        assert_eq!(code, 0, "{out}");
    }
    for (i, (repo, tag)) in live.iter().enumerate() {
        Remote(addrs[(i + 1) % 3]).pull_verified(repo, tag);
    }
    // Delete everything, spread over the nodes, including manifests whose tag alone was
    // deleted (found by listing the bucket: no API lists untagged manifests).
    for r in 0..4 {
        let repo = format!("stress/r{r}");
        let prefix = format!("repositories/{repo}/_manifests/revisions/sha256/");
        for (i, key) in moto.list("stress", &prefix).iter().enumerate() {
            let hex = key.rsplit('/').next().unwrap();
            let r = nodes[i % 3].request(
                "DELETE",
                &format!("/v2/{repo}/manifests/sha256:{hex}"),
                &[],
                b"",
            );
            assert!(r.status == 202 || r.status == 404, "delete: {}", r.status);
        }
    }
    assert_eq!(
        nodes[1].get("/v2/_catalog").json()["repositories"],
        serde_json::json!([]),
        "repositories without manifests stay in the catalog"
    );
    wait_bucket_empty(&moto, "stress", &RUN_PREFIXES, Duration::from_secs(60));
}

/// Upload expiry and scrub run on several nodes at once and lose nothing: sessions started on
/// every node expire (their staged data with them), finished pushes stay.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn three_nodes_expire_uploads_and_scrub_without_losses() {
    let Some(moto) = Moto::start("three_nodes_expire_uploads_and_scrub") else {
        return;
    };
    let extra = format!(
        "{}[uploads]\nidle_expiry = \"2s\"\n",
        gc_section("1s", "1s")
    );
    let nodes = three(&moto, "expiry", &extra);
    let mut images = Vec::new();
    let mut sessions = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        images.push((
            format!("keep/n{i}"),
            n.push_image(&format!("keep/n{i}"), "v1", &[bytes(i as u64, 40_000)]),
        ));
        // A session with some data, left idle.
        let loc = n.start_upload(&format!("idle/n{i}"));
        let r = n.request(
            "PATCH",
            &loc,
            &[("Content-Range", "0-999")],
            &bytes(9, 1000),
        );
        assert_eq!(r.status, 202);
        sessions.push(r.header("location").unwrap().to_string());
    }
    // The sessions are listed where they are (no index), and a staged part whose session is
    // gone (a crashed writer's) is removed by the expiry too.
    assert!(moto
        .list("expiry", "uploads/")
        .iter()
        .any(|k| k.starts_with("uploads/idle+n")));
    let orphan = format!("uploads/idle+n2/{}.part-0a1b2c3d", "7".repeat(32));
    moto.put_object("expiry", &orphan, &bytes(10, 100));
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, loc) in sessions.iter().enumerate() {
        loop {
            let r = nodes[(i + 1) % 3].request("GET", loc, &[], b"");
            if r.status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "session {loc} never expired");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    wait_bucket_empty(
        &moto,
        "expiry",
        &["uploads/", "repositories/idle/"],
        Duration::from_secs(30),
    );
    for (code, out) in cli_on_all(&nodes, &["scrub"]) {
        assert!(!out.contains("broken:"), "{out}");
        assert_eq!(code, 0, "{out}");
    }
    for (i, (repo, (manifest, _))) in images.iter().enumerate() {
        let r = nodes[(i + 2) % 3].get(&format!("/v2/{repo}/manifests/v1"));
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, manifest);
        Remote(nodes[i].addr).pull_verified(repo, "v1");
    }
}

/// The pull-through cache on S3: two nodes filling the same blob at once both serve it and
/// it is stored once; a node with `redirect` answers the cached blob with a 307; eviction
/// running on every node removes what is not pulled, GC collects it, and local content
/// next to it stays.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn mirror_on_shared_bucket_fills_once_and_evicts_safely() {
    let Some(moto) = Moto::start("mirror_on_shared_bucket") else {
        return;
    };
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let layer = bytes(5, 3 * 1024 * 1024 + 17);
    let (m, _, l) = up.push_image("library/app", "v1", &layer);
    let mirror = format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"team\"\npolicy_default_allow = true\n\n\
         [[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\n\
         [repository.mirror]\nregistry = \"upstream.test\"\ndefault = true\nevict_after = \"6s\"\n\
         [[repository.mirror.upstream]]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
         [uploads]\nidle_expiry = \"4s\"\n\n[gc]\nenabled = true\ninterval = \"1s\"\ngrace_period = \"1s\"\n",
        up.url()
    );
    moto.create_bucket("cache");
    let a = node(&moto, "cache", &mirror);
    let b = node(&moto, "cache", &mirror);
    for n in [&a, &b] {
        assert_eq!(n.get("/v2/up/library/app/manifests/v1").status, 200);
    }
    // Both nodes fill the same blob at the same time.
    let path = format!("/v2/up/library/app/blobs/{l}");
    let (pa, pb) = (Remote(a.addr), Remote(b.addr));
    let ta = {
        let path = path.clone();
        std::thread::spawn(move || pa.req("GET", &path))
    };
    let tb = {
        let path = path.clone();
        std::thread::spawn(move || pb.req("GET", &path))
    };
    for r in [ta.join().unwrap(), tb.join().unwrap()] {
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(digest(&r.body), l);
    }
    let hex = l.strip_prefix("sha256:").unwrap();
    let stored: Vec<String> = moto
        .list("cache", "blobs/")
        .into_iter()
        .filter(|k| k.contains(hex))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    // Nothing was left of the two fills' sessions.
    assert!(moto.list("cache", "uploads/").is_empty());
    // A third node redirects the cached blob to the bucket: no upstream fetch.
    let c = {
        let dir = TempDir::new("multinode");
        let s3 = format!("{}redirect = true\n", moto.storage_section("cache"));
        let text = with_storage(&config_text(&dir.0, "", &mirror), &dir.0, &s3);
        Server::start_config(dir, &text, &[])
    };
    // Local content next to the cache, which eviction must not touch.
    a.push_image("team/app", "v1", &[bytes(6, 70_000)]);
    // Its manifest pull is recorded afresh, so nothing is evicted before the next GET.
    assert_eq!(c.get("/v2/up/library/app/manifests/v1").status, 200);
    let fetched = up.count_requests("GET", &format!("/blobs/{l}"));
    let r = c.get(&path);
    assert_eq!(r.status, 307);
    let got = follow(r.header("location").unwrap(), &[]);
    assert_eq!(got.status, 200);
    assert_eq!(digest(&got.body), l);
    assert_eq!(up.count_requests("GET", &format!("/blobs/{l}")), fetched);
    // Not pulled for 6 s: evicted (by whichever node gets there first), then collected.
    let deadline = Instant::now() + Duration::from_secs(40);
    let stored = moto.list("cache", "blobs/");
    // The mirrored manifest and layer, and the local image's config, layer and manifest.
    assert_eq!(stored.len(), 5, "{stored:?}");
    while moto.list("cache", "blobs/").len() > 3 {
        assert!(
            Instant::now() < deadline,
            "the unpulled blob was not collected: {:?}",
            moto.list("cache", "")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for n in [&a, &b] {
        Remote(n.addr).pull_verified("team/app", "v1");
    }
    assert_eq!(c.get("/v2/team/app/manifests/v1").status, 200);
    for n in [&a, &b, &c] {
        let r = n.request(
            "HEAD",
            &format!("/v2/up/library/app/manifests/{m}"),
            &[],
            b"",
        );
        // Fetched again from the upstream on demand: still served, never broken.
        assert_eq!(r.status, 200);
    }
}

/// GETs an absolute `http://127.0.0.1:port/...` URL (a presigned S3 URL) with `headers`.
pub fn follow(url: &str, headers: &[(&str, &str)]) -> Resp {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    send(&mut s, "GET", path, headers, b"");
    read_response(&mut s, false).expect("response")
}
