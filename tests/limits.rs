//! Limits a node keeps for itself: the free-space guard (`storage.fs.min_free_bytes`,
//! `min_free_ratio`).

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
