//! Crash safety: SIGKILL at random moments of concurrent pushes leaves no partial blob and no
//! broken manifest or tag, and everything acknowledged before the kill is served after it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

struct Acked {
    blobs: Vec<(String, Vec<u8>)>,
    tags: Vec<(String, String)>,
}

/// Pushes images until the server goes away; records what was acknowledged.
fn pusher(addr: std::net::SocketAddr, seed: u64, acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let client = Client { addr };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let layer = bytes(seed * 1000 + i, 512 * 1024 + (i as usize * 7919) % 65536);
        let Some(d) = client.chunked_push("crash/app", &layer) else {
            eprintln!("pusher {seed}: blob push ended at {i}");
            return;
        };
        acked.lock().unwrap().blobs.push((d.clone(), layer.clone()));
        let Some(cfg) = client.mono_push("crash/app", b"{\"os\":\"linux\"}") else {
            return;
        };
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":15}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{d}\",\"size\":{}}}]}}",
            layer.len()
        );
        let tag = format!("s{seed}-{i}");
        match client.put_manifest("crash/app", &tag, manifest.as_bytes()) {
            Some(201) => acked
                .lock()
                .unwrap()
                .tags
                .push((tag, digest(manifest.as_bytes()))),
            _ => return,
        }
    }
}

/// A client that returns None instead of panicking when the server dies.
struct Client {
    addr: std::net::SocketAddr,
}

impl Client {
    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Resp> {
        let mut s = std::net::TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        send(&mut s, method, path, headers, body);
        read_response(&mut s, false)
    }

    fn chunked_push(&self, repo: &str, data: &[u8]) -> Option<String> {
        let r = self.req("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"")?;
        let mut loc = r.header("location")?.to_string();
        let mut off = 0;
        for piece in data.chunks(128 * 1024) {
            let range = format!("{}-{}", off, off + piece.len() - 1);
            let r = self.req("PATCH", &loc, &[("Content-Range", &range)], piece)?;
            if r.status != 202 {
                return None;
            }
            loc = r.header("location")?.to_string();
            off += piece.len();
        }
        let d = digest(data);
        let r = self.req("PUT", &format!("{loc}?digest={d}"), &[], b"")?;
        (r.status == 201).then_some(d)
    }

    fn mono_push(&self, repo: &str, data: &[u8]) -> Option<String> {
        let d = digest(data);
        let r = self.req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            data,
        )?;
        (r.status == 201).then_some(d)
    }

    fn put_manifest(&self, repo: &str, tag: &str, body: &[u8]) -> Option<u16> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        Some(
            self.req("PUT", &path, &[("Content-Type", OCI_MANIFEST)], body)?
                .status,
        )
    }
}

#[test]
fn sigkill_mid_push_loses_nothing_acknowledged() {
    let mut srv = Server::start();
    let acked = Arc::new(Mutex::new(Acked {
        blobs: Vec::new(),
        tags: Vec::new(),
    }));
    for round in 0..4u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let pushers: Vec<_> = (0..3)
            .map(|p| {
                let (acked, stop, addr) = (acked.clone(), stop.clone(), srv.addr);
                std::thread::spawn(move || pusher(addr, round * 10 + p + 1, acked, stop))
            })
            .collect();
        // Wait for some progress (bounded), then kill at a moment that varies per round,
        // while the pushers are mid-request.
        let before = acked.lock().unwrap().tags.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().tags.len() < before + 2 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(round * 37));
        srv = srv.restart();
        stop.store(true, Ordering::Relaxed);
        for p in pushers {
            p.join().unwrap();
        }
    }
    let acked = acked.lock().unwrap();
    eprintln!(
        "acknowledged before the kills: {} blobs, {} tags",
        acked.blobs.len(),
        acked.tags.len()
    );
    assert!(
        acked.tags.len() >= 4,
        "too little was pushed to prove anything: {}",
        acked.tags.len()
    );
    for (d, data) in &acked.blobs {
        let r = srv.get(&format!("/v2/crash/app/blobs/{d}"));
        assert_eq!(r.status, 200, "acknowledged blob {d} lost");
        assert_eq!(&r.body, data);
    }
    for (tag, d) in &acked.tags {
        let r = srv.get(&format!("/v2/crash/app/manifests/{tag}"));
        assert_eq!(r.status, 200, "acknowledged tag {tag} lost");
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    }
    // No broken tag: every listed tag resolves, and its layers are there.
    let tags = srv.get("/v2/crash/app/tags/list").json()["tags"].clone();
    for tag in tags.as_array().unwrap() {
        let r = srv.get(&format!(
            "/v2/crash/app/manifests/{}",
            tag.as_str().unwrap()
        ));
        assert_eq!(r.status, 200, "tag {tag} is listed but broken");
        for layer in r.json()["layers"].as_array().unwrap() {
            let d = layer["digest"].as_str().unwrap();
            assert_eq!(srv.get(&format!("/v2/crash/app/blobs/{d}")).status, 200);
        }
    }
    // No partial blob: every stored blob's content matches its name.
    assert!(assert_blobs_intact(&srv.dir.0.join("data/blobs")) > 0);
}

/// Pushes a one-layer image, returning None as soon as the server stops answering.
fn try_push_image(client: &Client, repo: &str, tag: &str, layer: &[u8]) -> Option<String> {
    let cfg = b"{\"os\":\"linux\"}";
    let cfg_d = client.mono_push(repo, cfg)?;
    let layer_d = client.mono_push(repo, layer)?;
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg_d}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer_d}\",\"size\":{}}}]}}",
        cfg.len(),
        layer.len()
    );
    (client.put_manifest(repo, tag, manifest.as_bytes())? == 201)
        .then(|| digest(manifest.as_bytes()))
}

/// A crash at each step of a push or delete that the crash-safety argument orders (after a
/// manifest's content, after its edges, after an upload's index, after a blob is held, after
/// its commit, after a small blob's content, after a deleted manifest's link): what was
/// acknowledged before is served after
/// the restart, the same push then
/// succeeds, and once the grace period (and the request deadline) has passed, the online GC
/// has removed the debris without an operator: `origin scrub` reports nothing.
#[test]
fn every_crash_point_leaves_debris_that_gc_collects() {
    // (failpoint, which hit kills): one image is a small config (stored without a session,
    // see `put_small_blob`), a layer above that size (an upload session) and a manifest.
    let points = [
        ("manifest-after-content", "2"),
        ("manifest-after-edges", "2"),
        ("upload-after-index", "2"),
        ("blob-after-hold", "2"),
        ("blob-after-commit", "2"),
        ("small-blob-after-content", "2"),
        ("delete-after-link", "1"),
    ];
    for (point, nth) in points {
        let dir = TempDir::new("crashpoint");
        let text = config_text(
            &dir.0,
            "query_timeout = \"2s\"",
            &format!(
                "{ALLOW_ALL}\n[gc]\ninterval = \"1s\"\ngrace_period = \"1s\"\ndebris_after = \"4s\"\n[uploads]\nidle_expiry = \"3s\"\n"
            ),
        );
        let spec = format!("{point}@{nth}");
        let mut srv = Server::start_config_env(dir, &text, &[("ORIGIN_FAILPOINT", &spec)]);
        let client = Client { addr: srv.addr };
        let kept = bytes(7, 100_000);
        let kept_d = try_push_image(&client, "crash/points", "kept", &kept)
            .unwrap_or_else(|| panic!("{point}: the first image must get through"));
        let lost = bytes(8, 110_000);
        if point.starts_with("delete-") {
            // The second image is pushed, then its deletion is cut short.
            let d = try_push_image(&client, "crash/points", "cut", &lost).unwrap();
            let path = format!("/v2/crash/points/manifests/{d}");
            assert_eq!(
                client.req("DELETE", &path, &[], b"").map(|r| r.status),
                None
            );
        } else {
            assert_eq!(
                try_push_image(&client, "crash/points", "cut", &lost),
                None,
                "{point}: the push should have died at the failpoint"
            );
        }
        let _ = srv.wait_exit(Duration::from_secs(10));
        let status = srv.child.try_wait().unwrap();
        assert_eq!(
            status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            Some(libc::SIGKILL),
            "{point}: the server should have been killed at the failpoint"
        );
        let text = std::fs::read_to_string(&srv.config_path).unwrap();
        let dir = std::mem::replace(&mut srv.dir, TempDir(std::path::PathBuf::new()));
        drop(srv);
        let srv = Server::start_config(dir, &text, &[]);
        let r = srv.get("/v2/crash/points/manifests/kept");
        assert_eq!(r.status, 200, "{point}: acknowledged image lost");
        assert_eq!(r.header("docker-content-digest"), Some(kept_d.as_str()));
        // Debris is collected online: scrub (read-only) comes clean without --repair, once
        // the grace period, the request deadline and the upload expiry are over (the killed
        // server's requests are: only the clock has to pass them).
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        let mut first = None;
        loop {
            let (code, out) = srv.cli(&["scrub"]);
            if first.is_none() {
                first = Some(out.clone());
                srv.advance_clock(Duration::from_secs(5));
            }
            if code == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{point}: scrub still reports after 40 s:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // A PUT cut after its edges, or a delete after its link, leaves stray edges until
        // the request deadline is over.
        if point == "manifest-after-edges" || point == "delete-after-link" {
            let first = first.unwrap_or_default();
            assert!(first.contains("stray reference"), "{point}: {first}");
        }
        eprintln!("{point}: clean");
        // The acknowledged image survived the passes, and the cut push now goes through.
        let r = srv.get(&format!("/v2/crash/points/blobs/{}", digest(&kept)));
        assert_eq!((r.status, r.body == kept), (200, true), "{point}");
        let client = Client { addr: srv.addr };
        assert!(
            try_push_image(&client, "crash/points", "cut", &lost).is_some(),
            "{point}: pushing again after the crash failed"
        );
    }
}

/// The journal's own crash point: killed after a group of records is durable in the log but
/// before it is applied to the tree. The manifest PUT whose publishing batch that was got no
/// answer, yet it was durable: a maintenance command run before the restart replays it, so
/// do a restart, and the tag, the revision and the blobs it names are all served.
#[test]
fn journal_replays_a_durable_group_that_was_never_applied() {
    let dir = TempDir::new("journalreplay");
    let text = config_text(&dir.0, "", ALLOW_ALL);
    let srv = Server::start_config(dir, &text, &[]);
    let client = Client { addr: srv.addr };
    let layer = bytes(11, 200_000);
    let layer_d = client.chunked_push("journal/app", &layer).unwrap();
    let cfg = b"{\"os\":\"linux\"}";
    let cfg_d = client.mono_push("journal/app", cfg).unwrap();
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg_d}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer_d}\",\"size\":{}}}]}}",
        cfg.len(),
        layer.len()
    );
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    let dir = stop_keep_dir(srv);
    // The first group with writes to apply after this start is the PUT's publishing batch
    // (its hold, content and edges are pending writes, applied by the request itself).
    let mut srv =
        Server::start_config_env(dir, &text, &[("ORIGIN_FAILPOINT", "journal-after-flush@1")]);
    let client = Client { addr: srv.addr };
    assert_eq!(
        client.put_manifest("journal/app", "v1", manifest.as_bytes()),
        None,
        "the PUT should have died between the flush and the apply"
    );
    let _ = srv.wait_exit(Duration::from_secs(10));
    let status = srv.child.try_wait().unwrap();
    assert_eq!(
        status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(libc::SIGKILL),
        "the server should have been killed at the failpoint"
    );
    // With no server running, a maintenance command replays the journal first: the tag is
    // on disk after it, and what it checks is whole.
    let tag_file = srv
        .dir
        .0
        .join("data/repositories/journal/app/_manifests/tags/v1");
    assert!(!tag_file.exists(), "the batch was applied before the kill");
    let (code, out) = srv.cli(&["scrub"]);
    assert_eq!(code, 0, "{out}");
    assert!(tag_file.exists(), "origin scrub did not replay the journal");
    let dir = stop_keep_dir(srv);
    let srv = Server::start_config(dir, &text, &[]);
    let r = srv.get("/v2/journal/app/manifests/v1");
    assert_eq!(r.status, 200, "the durable batch was not replayed");
    assert_eq!(r.body, manifest.as_bytes());
    let r = srv.get(&format!("/v2/journal/app/blobs/{layer_d}"));
    assert_eq!((r.status, r.body == layer), (200, true));
    let (code, out) = srv.cli(&["scrub"]);
    assert_eq!(code, 0, "{out}");
}

/// Stops a server (kills it if it still runs) and hands back its directory.
fn stop_keep_dir(mut srv: Server) -> TempDir {
    let dir = std::mem::replace(&mut srv.dir, TempDir(std::path::PathBuf::new()));
    drop(srv);
    dir
}
