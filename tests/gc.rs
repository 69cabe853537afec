//! Online garbage collection, scrub, and the races and crashes around them.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::remote::Remote;
use common::*;

/// Past a grace period of an hour, which tests move the registry's clock over.
const HOUR_AND_A_BIT: Duration = Duration::from_secs(3600 + 5);

fn gc_section(enabled: bool, interval: &str, grace: &str) -> String {
    format!("{ALLOW_ALL}\n[gc]\nenabled = {enabled}\ninterval = \"{interval}\"\ngrace_period = \"{grace}\"\n")
}

/// Runs `origin <args> -c <config of srv>` on the server's clock; returns (exit code, stdout).
fn origin_cli(srv: &Server, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_origin"))
        .env(CLOCK_FILE_ENV, clock_file(&srv.dir.0))
        .args(args)
        .arg("-c")
        .arg(&srv.config_path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn blob_file(srv: &Server, d: &str) -> std::path::PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    srv.dir
        .0
        .join(format!("data/blobs/sha256/{}/{hex}/data", &hex[..2]))
}

/// Deleting a manifest releases its blobs; `origin gc` keeps them during the grace period and
/// reclaims them after it (a dry run first reports without removing), and keeps what other
/// manifests share.
#[test]
fn gc_reclaims_released_blobs_after_grace() {
    let srv = Server::start_with("", &gc_section(false, "1h", "1h"));
    let shared = bytes(1, 5000);
    let own = bytes(2, 7000);
    let (_, keep) = srv.push_image("gc/keep", "v1", std::slice::from_ref(&shared));
    let (_, gone) = srv.push_image("gc/gone", "v1", &[shared.clone(), own.clone()]);
    assert_eq!(
        srv.request("DELETE", &format!("/v2/gc/gone/manifests/{gone}"), &[], b"")
            .status,
        202
    );
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(", 0 blobs,"),
        "collected within the grace period: {out}"
    );
    assert!(blob_file(&srv, &digest(&own)).exists());
    srv.advance_clock(HOUR_AND_A_BIT);
    let (code, out) = origin_cli(&srv, &["gc", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("would remove {}", digest(&own))),
        "{out}"
    );
    assert!(
        blob_file(&srv, &digest(&own)).exists(),
        "dry run removed a blob"
    );
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("removed {}", digest(&own))), "{out}");
    assert!(out.contains(&format!("removed {gone}")), "{out}");
    assert!(
        !out.contains(&digest(&shared)),
        "shared layer collected: {out}"
    );
    assert!(!blob_file(&srv, &digest(&own)).exists());
    // What is still referenced still pulls.
    assert_eq!(
        srv.get(&format!("/v2/gc/keep/manifests/{keep}")).status,
        200
    );
    assert_eq!(
        srv.get(&format!("/v2/gc/keep/blobs/{}", digest(&shared)))
            .body,
        shared
    );
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(", 0 blobs,"),
        "second pass removed more: {out}"
    );
}

/// A blob that was never referenced is kept during the grace period after its upload.
#[test]
fn gc_keeps_young_blobs() {
    let srv = Server::start_with("", &gc_section(false, "1h", "1h"));
    let d = srv.push_blob("gc/young", b"fresh upload");
    let (_, out) = origin_cli(&srv, &["gc"]);
    assert!(out.contains(", 0 blobs,"), "{out}");
    assert!(blob_file(&srv, &d).exists());
}

/// The race: a client sees a blob exist, GC removes it, the client pushes a manifest naming
/// it. The PUT fails with MANIFEST_BLOB_UNKNOWN and succeeds once the blob is pushed again.
#[test]
fn gc_race_head_then_put_fails_cleanly() {
    let srv = Server::start_with("", &gc_section(false, "1h", "1h"));
    let layer = bytes(3, 3000);
    let cfg = srv.push_blob("gc/race", b"{}");
    let d = srv.push_blob("gc/race", &layer);
    srv.advance_clock(HOUR_AND_A_BIT);
    assert_eq!(
        srv.request("HEAD", &format!("/v2/gc/race/blobs/{d}"), &[], b"")
            .status,
        200
    );
    let (_, out) = origin_cli(&srv, &["gc"]);
    assert!(out.contains(&format!("removed {d}")), "{out}");
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":3000}}]}}"
    );
    let r = srv.put_manifest("gc/race", "v1", OCI_MANIFEST, m.as_bytes());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    srv.push_blob("gc/race", b"{}");
    srv.push_blob("gc/race", &layer);
    assert_eq!(
        srv.put_manifest("gc/race", "v1", OCI_MANIFEST, m.as_bytes())
            .status,
        201
    );
}

/// Referrers go with their subject; the background GC logs each pass, and reclaims them
/// once its clock is past the grace period.
#[test]
fn referrers_go_with_subject_and_passes_are_logged() {
    let mut srv = Server::start_with("", &gc_section(true, "1s", "1h"));
    let (_, subject) = srv.push_image("gc/ref", "v1", &[bytes(4, 100)]);
    let cfg = srv.push_blob("gc/ref", b"{}");
    let sig = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"a/sig\",\"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{cfg}\",\"size\":2}},\"layers\":[],\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{subject}\",\"size\":1}}}}"
    );
    let sig_d = digest(sig.as_bytes());
    assert_eq!(
        srv.put_manifest("gc/ref", &sig_d, OCI_MANIFEST, sig.as_bytes())
            .status,
        201
    );
    assert_eq!(
        srv.request(
            "DELETE",
            &format!("/v2/gc/ref/manifests/{subject}"),
            &[],
            b""
        )
        .status,
        202
    );
    assert_eq!(
        srv.get(&format!("/v2/gc/ref/manifests/{sig_d}")).status,
        404
    );
    let line = srv
        .logs_until("gc pass", Duration::from_secs(10))
        .expect("gc pass log line");
    for field in ["blobs=", "bytes=", "duration_ms="] {
        assert!(line.contains(field), "{line}");
    }
    assert!(
        blob_file(&srv, &subject).exists(),
        "collected within the grace period"
    );
    srv.advance_clock(HOUR_AND_A_BIT);
    // Eventually everything of the deleted subject and its referrer is reclaimed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while blob_file(&srv, &sig_d).exists() || blob_file(&srv, &subject).exists() {
        assert!(
            Instant::now() < deadline,
            "deleted manifests never reclaimed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pushers sharing layers across repositories, deleters, and GC every second with a two
/// second grace period, for a minute: every tag left pulls completely with the right digests,
/// and after one more pass no unreferenced blob older than the grace period remains.
#[test]
fn gc_stress_concurrent_push_delete_collect() {
    /// Tagged images alive at once at most (see the pushers).
    const LIVE_TAGS_MAX: usize = 300;
    let secs: u64 = std::env::var("ORIGIN_GC_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let srv = Server::start_with("", &gc_section(true, "1s", "2s"));
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicUsize::new(0));
    let deleted = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let tags: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    // A small pool of shared layers, so pushes and deletes keep hitting the same blobs.
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
        threads.push(std::thread::spawn(move || {
            let srv = Remote(addr);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Pushes outrun deletes by far: past LIVE_TAGS_MAX, wait for the deleters, so
                // the run stays a race between pushes, deletes and passes and the checks
                // after it look at a bounded number of images.
                if tags.lock().unwrap().len() >= LIVE_TAGS_MAX {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                i += 1;
                let repo = format!("stress/r{}", (p + i) % 4);
                let layers = [
                    pool[((p + i) % 6) as usize].clone(),
                    pool[((p * 3 + i) % 6) as usize].clone(),
                    bytes(p * 100_000 + i, 3000),
                ];
                let tag = format!("p{p}-{i}");
                // A push that races GC may be told MANIFEST_BLOB_UNKNOWN: push again, as clients do.
                for attempt in 0..5 {
                    match srv.push_image(&repo, &tag, &layers) {
                        Ok(d) => {
                            tags.lock().unwrap().push((repo.clone(), tag.clone()));
                            let _ = d;
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
        threads.push(std::thread::spawn(move || {
            let srv = Remote(addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                n += 1;
                let victim = {
                    let mut t = tags.lock().unwrap();
                    if t.len() < 4 {
                        continue;
                    }
                    let idx = ((n * 7 + k) as usize) % t.len();
                    t.remove(idx)
                };
                let (repo, tag) = victim;
                // Alternate: delete the tag only, or the manifest by digest.
                if n.is_multiple_of(2) {
                    assert_eq!(
                        srv.req("DELETE", &format!("/v2/{repo}/manifests/{tag}"))
                            .status,
                        202
                    );
                } else {
                    let h = srv.req("HEAD", &format!("/v2/{repo}/manifests/{tag}"));
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
        "stress: {} pushed, {} deleted, {} pushes retried after GC",
        pushed.load(Ordering::Relaxed),
        deleted.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed)
    );
    assert!(pushed.load(Ordering::Relaxed) > 20 && deleted.load(Ordering::Relaxed) > 10);
    // Every tag still present pulls completely with correct digests.
    let remote = Remote(addr);
    let mut live_tags = 0;
    for r in 0..4 {
        let repo = format!("stress/r{r}");
        let list = srv.get(&format!("/v2/{repo}/tags/list")).json();
        for tag in list["tags"].as_array().cloned().unwrap_or_default() {
            let tag = tag.as_str().unwrap();
            live_tags += 1;
            remote.pull_verified(&repo, tag);
        }
    }
    assert!(live_tags > 0);
    // After the grace period and one more pass, nothing unreferenced remains.
    srv.advance_clock(Duration::from_secs(3));
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = origin_cli(&srv, &["scrub"]);
    assert!(!out.contains("broken:"), "{out}");
    assert!(!out.contains("unreferenced blob"), "{out}");
    assert_eq!(code, 0, "{out}");
    for r in 0..4 {
        let repo = format!("stress/r{r}");
        for tag in srv.get(&format!("/v2/{repo}/tags/list")).json()["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            remote.pull_verified(&repo, tag.as_str().unwrap());
        }
    }
    // Then every manifest is deleted: after the grace period and a pass, nothing is left of
    // the run (no blob data, no layer links or their index, no references) and the emptied
    // repositories are out of the catalog.
    let data = srv.dir.0.join("data");
    assert!(!files_under(&data.join("repositories")).is_empty());
    for r in 0..4 {
        let repo = format!("stress/r{r}");
        for tag in srv.get(&format!("/v2/{repo}/tags/list")).json()["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let h = srv.request(
                "HEAD",
                &format!("/v2/{repo}/manifests/{}", tag.as_str().unwrap()),
                &[],
                b"",
            );
            let Some(d) = h.header("docker-content-digest") else {
                continue; // deleted with the manifest of another of its tags
            };
            let r = srv.request("DELETE", &format!("/v2/{repo}/manifests/{d}"), &[], b"");
            assert!(r.status == 202 || r.status == 404, "delete: {}", r.status);
        }
        // And the manifests whose tag alone was deleted (no API lists untagged manifests).
        let revisions = data.join(format!("repositories/{repo}/_manifests/revisions/sha256"));
        for f in files_under(&revisions) {
            let d = format!("sha256:{}", f.file_name().unwrap().to_string_lossy());
            let r = srv.request("DELETE", &format!("/v2/{repo}/manifests/{d}"), &[], b"");
            assert!(r.status == 202 || r.status == 404, "delete: {}", r.status);
        }
    }
    assert_eq!(
        srv.get("/v2/_catalog").json()["repositories"],
        serde_json::json!([]),
        "repositories without manifests stay in the catalog"
    );
    // The grace period of what the deletes released, for the background passes.
    srv.advance_clock(Duration::from_secs(3));
    // A pass that collects a manifest makes its blobs candidates at that pass's time: each
    // round moves the clock past their grace period too, so how many rounds it takes
    // depends on the passes, not on how loaded the machine is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = |sub: &str| files_under(&data.join(sub));
    loop {
        srv.advance_clock(Duration::from_secs(3));
        let rest: Vec<_> = ["blobs", "repositories", "linked", "refs", "catalog"]
            .iter()
            .flat_map(|sub| left(sub))
            .collect();
        if rest.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} files left after deleting everything, e.g. {:?}",
            rest.len(),
            &rest[..rest.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// SIGKILL during pushes and GC passes, restart: scrub finds nothing broken, and once the
/// grace period and the request deadline are over, nothing at all (GC removed the debris).
#[test]
fn gc_sigkill_then_scrub_finds_nothing_broken() {
    let mut srv = Server::start_with(
        "query_timeout = \"2s\"",
        &format!(
            "{}debris_after = \"4s\"\n[uploads]\nidle_expiry = \"3s\"\n",
            gc_section(true, "1s", "1s")
        ),
    );
    for round in 0..3u64 {
        let addr = srv.addr;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            let srv = Remote(addr);
            let mut i = 0;
            while !s2.load(Ordering::Relaxed) {
                i += 1;
                let tag = format!("k{round}-{i}");
                if srv
                    .push_image("kill/app", &tag, &[bytes(round * 1000 + i, 50_000)])
                    .is_err()
                {
                    return;
                }
                if i.is_multiple_of(2) {
                    let _ = srv.try_req("DELETE", &format!("/v2/kill/app/manifests/{tag}"));
                }
            }
        });
        std::thread::sleep(Duration::from_millis(1500 + round * 300));
        srv = srv.restart();
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
    let (_, out) = origin_cli(&srv, &["scrub"]);
    assert!(!out.contains("broken:"), "{out}");
    // The debris (stray edges of cut PUTs, unreferenced blobs, half sessions) goes online:
    // after the grace period and the request deadline, scrub finds nothing, without --repair.
    // (The killed servers' requests are over: only the clock has to pass the horizons.)
    srv.advance_clock(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = origin_cli(&srv, &["scrub"]);
        if code == 0 {
            assert!(out.contains(" 0 findings"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Disk full: an upload that hits ENOSPC answers a 5xx, leaves nothing partial visible, and
/// the server keeps serving reads. Runs on a 4 MiB tmpfs (needs root, as in CI).
#[test]
fn disk_full_upload_fails_cleanly() {
    let dir = TempDir::new("enospc");
    let mnt = dir.0.join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "cannot mount a tmpfs (this test needs root)");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let text = config_text(&dir.0, "", ALLOW_ALL).replace(
        &format!("root_dir = \"{}\"", dir.0.join("data").display()),
        &format!("root_dir = \"{}\"", mnt.join("data").display()),
    );
    let srv = Server::start_config(TempDir::new("enospc-cfg"), &text, &[]);
    let small = bytes(1, 1000);
    let d = srv.push_blob("full/app", &small);
    // Monolithic, then chunked: both run out of space.
    let big = bytes(2, 6 * 1024 * 1024);
    let r = srv.request(
        "POST",
        &format!("/v2/full/app/blobs/uploads/?digest={}", digest(&big)),
        &[],
        &big,
    );
    assert!(
        r.status >= 500,
        "monolithic upload on a full disk: {}",
        r.status
    );
    let loc = srv.start_upload("full/app");
    let r = srv.request("PATCH", &loc, &[], &big);
    assert!(
        r.status >= 500,
        "chunked upload on a full disk: {}",
        r.status
    );
    assert_eq!(
        srv.get(&format!("/v2/full/app/blobs/{}", digest(&big)))
            .status,
        404
    );
    // Reads still work.
    assert_eq!(srv.get(&format!("/v2/full/app/blobs/{d}")).body, small);
    // Nothing partial under blobs/: every stored blob matches its name.
    assert_blobs_intact(&mnt.join("data/blobs"));
    // Space comes back once the failed session is cancelled, and pushes work again.
    assert_eq!(srv.request("DELETE", &loc, &[], b"").status, 204);
    srv.push_blob("full/app", &bytes(3, 100_000));
}

/// With `gc.remove_untagged`, a manifest that lost its tag is deleted after the grace period
/// (and its blobs after that); index children and the tagged manifest stay.
#[test]
fn untagged_manifests_removed_when_configured() {
    let extra = format!("{}remove_untagged = true\n", gc_section(false, "1h", "1h"));
    let srv = Server::start_with("", &extra);
    let (_, old) = srv.push_image("ut/app", "v1", &[bytes(1, 100)]);
    let (_, new) = srv.push_image("ut/app", "v1", &[bytes(2, 100)]);
    let (child_m, child) = srv.push_image("ut/app", "child", &[bytes(3, 100)]);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{child}\",\"size\":{}}}]}}",
        child_m.len()
    );
    assert_eq!(
        srv.put_manifest("ut/app", "multi", OCI_INDEX, index.as_bytes())
            .status,
        201
    );
    // The child loses its own tag but stays: the index holds it.
    assert_eq!(
        srv.request("DELETE", "/v2/ut/app/manifests/child", &[], b"")
            .status,
        202
    );
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 0 untagged manifests"), "{out}");
    assert_eq!(srv.get(&format!("/v2/ut/app/manifests/{old}")).status, 200);
    srv.advance_clock(HOUR_AND_A_BIT);
    let (code, out) = origin_cli(&srv, &["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 1 untagged manifests"), "{out}");
    assert_eq!(srv.get(&format!("/v2/ut/app/manifests/{old}")).status, 404);
    assert_eq!(srv.get(&format!("/v2/ut/app/manifests/{new}")).status, 200);
    assert_eq!(
        srv.get(&format!("/v2/ut/app/manifests/{child}")).status,
        200
    );
    // The released blobs go on the next pass after their own grace period.
    let released = digest(&bytes(1, 100));
    let (_, out) = origin_cli(&srv, &["gc"]);
    assert!(!out.contains(&format!("removed {released}")), "{out}");
    srv.advance_clock(HOUR_AND_A_BIT);
    let (_, out) = origin_cli(&srv, &["gc"]);
    assert!(
        out.contains(&format!("removed {}", digest(&bytes(1, 100)))),
        "{out}"
    );
}
