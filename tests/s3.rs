//! Origin on S3 (a real moto server): pushes and pulls through HTTP, an upload continued on
//! another node of the same bucket, and a refused start when the bucket is missing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::Moto;
use common::*;

/// A config for a node on `bucket`: the usual test config with the fs section replaced.
fn s3_config(dir: &TempDir, moto: &Moto, bucket: &str) -> String {
    let fs = format!(
        "[storage.fs]\nroot_dir = \"{}\"\n",
        dir.0.join("data").display()
    );
    let text = config_text(&dir.0, "", ALLOW_ALL);
    assert!(text.contains(&fs));
    text.replace(&fs, &moto.storage_section(bucket))
}

fn node(moto: &Moto, bucket: &str) -> Server {
    let dir = TempDir::new("s3node");
    let text = s3_config(&dir, moto, bucket);
    Server::start_config(dir, &text, &[])
}

/// An image pushed to a node on S3 pulls back byte for byte (tag, digest, ranges, HEAD); a
/// chunked upload past the part size started on one node continues and ends on another, and
/// the second node serves what the first stored.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_push_pull_across_nodes() {
    let Some(moto) = Moto::start("s3_push_pull_across_nodes") else {
        return;
    };
    moto.create_bucket("registry");
    let a = node(&moto, "registry");
    let b = node(&moto, "registry");
    let layers = vec![bytes(1, 300_000), bytes(2, 10)];
    let (manifest, md) = a.push_image("app/one", "v1", &layers);
    let got = b.get("/v2/app/one/manifests/v1");
    assert_eq!(got.status, 200);
    assert_eq!(got.body, manifest);
    assert_eq!(got.header("docker-content-digest"), Some(md.as_str()));
    let d0 = digest(&layers[0]);
    let blob = b.get(&format!("/v2/app/one/blobs/{d0}"));
    assert_eq!(blob.status, 200);
    let first_diff = blob.body.iter().zip(&layers[0]).position(|(x, y)| x != y);
    assert!(
        blob.body == layers[0],
        "blob bytes differ: {} vs {} bytes, first difference at {first_diff:?}",
        blob.body.len(),
        layers[0].len()
    );
    let part = b.request(
        "GET",
        &format!("/v2/app/one/blobs/{d0}"),
        &[("Range", "bytes=1000-200999")],
        b"",
    );
    assert_eq!(part.status, 206);
    assert!(part.body == layers[0][1000..201_000], "range bytes differ");
    let head = b.request("HEAD", &format!("/v2/app/one/blobs/{d0}"), &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("300000"));

    // A chunked upload: POST on A, PATCHes on B and A, PUT on B; 12 MiB, parts of 5 MiB.
    let data = bytes(3, 12 * 1024 * 1024 + 77);
    let d = digest(&data);
    let mut loc = a.start_upload("app/big");
    let cuts = [0, 1024 * 1024, 7 * 1024 * 1024, 11 * 1024 * 1024];
    for (i, w) in cuts.windows(2).enumerate() {
        let srv = if i % 2 == 0 { &b } else { &a };
        let range = format!("{}-{}", w[0], w[1] - 1);
        let r = srv.request(
            "PATCH",
            &loc,
            &[("Content-Range", range.as_str())],
            &data[w[0]..w[1]],
        );
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("range"), Some(format!("0-{}", w[1] - 1).as_str()));
        loc = r.header("location").unwrap().to_string();
    }
    let last = cuts[cuts.len() - 1];
    let range = format!("{last}-{}", data.len() - 1);
    let r = b.request(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", range.as_str())],
        &data[last..],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = a.get(&format!("/v2/app/big/blobs/{d}"));
    assert_eq!(got.status, 200);
    assert!(got.body == data, "12 MiB blob differs");
    // A wrong digest leaves nothing behind and is refused.
    let loc = a.start_upload("app/big");
    let wrong = digest(b"something else");
    let r = b.request("PUT", &format!("{loc}?digest={wrong}"), &[], b"not it");
    assert_eq!(r.status, 400);
    assert_eq!(a.get(&format!("/v2/app/big/blobs/{wrong}")).status, 404);
}

/// A node whose bucket does not exist refuses to start, naming the bucket.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_missing_bucket_refuses_start() {
    let Some(moto) = Moto::start("s3_missing_bucket_refuses_start") else {
        return;
    };
    let dir = TempDir::new("s3nobucket");
    let text = s3_config(&dir, &moto, "no-such-bucket");
    let path = dir.0.join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("serve")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("origin kept running with a missing bucket");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("\"no-such-bucket\" does not exist"),
        "stderr: {err}"
    );
}

/// A tag moved on one node is what another node serves on its very next request, though the
/// other node had just served (and could have cached) the old one.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn s3_tag_read_after_write_across_nodes() {
    let Some(moto) = Moto::start("s3_tag_read_after_write_across_nodes") else {
        return;
    };
    moto.create_bucket("tags");
    let a = node(&moto, "tags");
    let b = node(&moto, "tags");
    let (_, first) = a.push_image("app/t", "latest", &[bytes(7, 100)]);
    for _ in 0..2 {
        let r = b.get("/v2/app/t/manifests/latest");
        assert_eq!(r.header("docker-content-digest"), Some(first.as_str()));
    }
    let (_, second) = a.push_image("app/t", "latest", &[bytes(8, 100)]);
    assert_ne!(first, second);
    let r = b.get("/v2/app/t/manifests/latest");
    assert_eq!(r.header("docker-content-digest"), Some(second.as_str()));
    let head = b.request("HEAD", "/v2/app/t/manifests/latest", &[], b"");
    assert_eq!(head.header("docker-content-digest"), Some(second.as_str()));
    assert_eq!(
        a.request("DELETE", "/v2/app/t/manifests/latest", &[], b"")
            .status,
        202
    );
    assert_eq!(b.get("/v2/app/t/manifests/latest").status, 404);
}
