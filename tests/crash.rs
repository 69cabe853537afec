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
