//! Deletions made outside a node's process are served by its manifest cache for at most
//! `server.manifest_cache_ttl`: a delete on another node on the same bucket, and an
//! out-of-process `origin scrub --retention` beside a running registry.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::s3::Moto;
use common::*;

/// A node on `bucket` with `server_extra` keys and the catch-all repository.
fn node(moto: &Moto, bucket: &str, server_extra: &str) -> Server {
    let dir = TempDir::new("deletions");
    let text = config_text(&dir.0, server_extra, ALLOW_ALL);
    let text = with_storage(&text, &dir.0, &moto.storage_section(bucket));
    Server::start_config(dir, &text, &[])
}

/// A manifest read by digest on node A (so in its cache), deleted on node B: A answers 404
/// once the default TTL (2 s) has passed since its read, and the tag is gone on A at once.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn a_delete_on_another_node_is_seen_within_the_ttl() {
    let Some(moto) = Moto::start("a_delete_on_another_node_is_seen_within_the_ttl") else {
        return;
    };
    moto.create_bucket("del");
    let a = node(&moto, "del", "");
    let b = node(&moto, "del", "");
    let (manifest, d) = b.push_image("del/app", "v1", &[bytes(1, 1000)]);
    let by_digest = format!("/v2/del/app/manifests/{d}");
    let read = a.get(&by_digest);
    assert_eq!(read.status, 200);
    assert_eq!(read.body, manifest);
    assert_eq!(a.request("HEAD", &by_digest, &[], b"").status, 200);
    let r = b.request("DELETE", &by_digest, &[], b"");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    // Tags are never cached on object storage.
    assert_eq!(a.get("/v2/del/app/manifests/v1").status, 404);
    a.advance_clock(Duration::from_secs(3));
    assert_eq!(a.get(&by_digest).status, 404, "served from the cache");
    assert_eq!(a.request("HEAD", &by_digest, &[], b"").status, 404);
}

/// `origin scrub --retention`, run as its own process beside a registry on the fs backend
/// with `manifest_cache_ttl = "1s"`, deletes a manifest the registry has cached by digest and
/// by tag: both answer 404 once the second has passed.
#[test]
fn an_out_of_process_retention_run_is_seen_within_the_ttl() {
    let config = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         retention = [\"now - image.pushed_at < days(7)\"]\n[gc]\nenabled = false\n";
    let srv = Server::start_with("manifest_cache_ttl = \"1s\"", config);
    let (manifest, d) = srv.push_image("ret/app", "old", &[bytes(2, 1000)]);
    let hex = d.strip_prefix("sha256:").unwrap();
    let revision = srv.dir.0.join(format!(
        "data/repositories/ret/app/_manifests/revisions/sha256/{hex}"
    ));
    // Pushed thirty days ago, as far as the rule can tell.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 30 * 86_400;
    let touched = Command::new("touch")
        .args(["-m", "-d", &format!("@{secs}")])
        .arg(&revision)
        .status()
        .unwrap();
    assert!(touched.success());
    let by_digest = format!("/v2/ret/app/manifests/{d}");
    assert_eq!(srv.get(&by_digest).body, manifest);
    assert_eq!(srv.get("/v2/ret/app/manifests/old").body, manifest);
    let (code, out) = srv.cli(&["scrub", "--retention"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("deleted ret/app@{d}")), "{out}");
    srv.advance_clock(Duration::from_secs(2));
    assert_eq!(srv.get(&by_digest).status, 404, "served from the cache");
    assert_eq!(srv.get("/v2/ret/app/manifests/old").status, 404);
    assert_eq!(srv.request("HEAD", &by_digest, &[], b"").status, 404);
}
