//! The files in a layer (`<ui path>api/layer`): tar, tar+gzip and tar+zstd layers listed from storage
//! with paths, types, sizes, modes and link targets; a capped list says where it stopped; a
//! blob that is not a tar is not listed; the caller needs the `get-blob` a pull would need.

mod common;

use std::io::Write;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const BLOCK: usize = 512;

fn header(path: &str, kind: u8, size: u64, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    h[100..107].copy_from_slice(if kind == b'5' { b"0000755" } else { b"0000644" });
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// A tar of `entries` (path, type, content, link target).
fn tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, content, link) in entries {
        out.extend(header(path, *kind, content.len() as u64, link));
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }
    out.extend([0u8; 2 * BLOCK]);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd at level 3 with a window of 2^`window_log` bytes.
fn zstd(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.window_log(window_log).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn push(srv: &Server, auth: &[(&str, &str)], repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let r = srv.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        auth,
        data,
    );
    assert_eq!(r.status, 201);
    d
}

fn files(v: &Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}",
                e["path"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["size"],
                e["mode"].as_str().unwrap(),
                e["link"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// A tar+gzip, a tar+zstd and a plain tar layer list their entries (the second call from
/// the cache says the same); a capped list says why; a damaged zstd stream, a zstd frame
/// asking for a larger window than the cap and a non-tar blob are not listed.
#[test]
fn layers_list_their_files() {
    let srv = Server::start();
    let entries: [(&str, u8, &[u8], &str); 5] = [
        ("etc/", b'5', b"", ""),
        ("etc/motd", b'0', b"hello <script>\n", ""),
        ("bin/sh", b'2', b"", "busybox"),
        ("bin/busybox", b'0', &[7u8; 1500], ""),
        ("bin/ls", b'1', b"", "bin/busybox"),
    ];
    let plain = tar(&entries);
    let gz = push(&srv, &[], "a/b", &gzip(&plain));
    let tar_digest = push(&srv, &[], "a/b", &plain);
    let zst = push(&srv, &[], "a/b", &zstd(&plain, 20));
    let want = [
        "etc/ dir 0 0755 -",
        "etc/motd file 15 0644 -",
        "bin/sh symlink 0 0644 busybox",
        "bin/busybox file 1500 0644 -",
        "bin/ls hardlink 0 0644 bin/busybox",
    ];
    for (d, format) in [
        (&gz, "tar+gzip"),
        (&tar_digest, "tar"),
        (&zst, "tar+zstd"),
        (&gz, "tar+gzip"),
    ] {
        let r = srv.get(&format!("/ui/api/layer?repo=a/b&digest={d}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(files(&v), want, "{format}");
        assert_eq!(
            (v["format"].as_str(), v["cut"].clone()),
            (Some(format), Value::Null)
        );
    }
    // Another repository does not see a blob it has no link to.
    assert_eq!(
        srv.get(&format!("/ui/api/layer?repo=other/repo&digest={gz}"))
            .status,
        404
    );

    let many: Vec<(String, u8, &[u8], &str)> = (0..20_001)
        .map(|i| (format!("f{i}"), b'0', &b""[..], ""))
        .collect();
    let many: Vec<(&str, u8, &[u8], &str)> = many
        .iter()
        .map(|(p, k, c, l)| (p.as_str(), *k, *c, *l))
        .collect();
    let big = push(&srv, &[], "a/b", &gzip(&tar(&many)));
    let v = srv
        .get(&format!("/ui/api/layer?repo=a/b&digest={big}"))
        .json();
    assert_eq!(v["entries"].as_array().unwrap().len(), 20_000);
    assert!(v["cut"].as_str().unwrap().contains("20000 entries"), "{v}");

    let damaged = push(&srv, &[], "a/b", &[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]);
    let v = srv
        .get(&format!("/ui/api/layer?repo=a/b&digest={damaged}"))
        .json();
    assert_eq!(
        (v["format"].clone(), v["entries"].clone()),
        (json!("tar+zstd"), json!([]))
    );
    assert!(v["cut"].as_str().unwrap().contains("zstd stream"), "{v}");
    // A 128 MiB window (`zstd --long=27`) is more memory than a listing may take.
    let wide = push(&srv, &[], "a/b", &zstd(&tar(&many[..10]), 27));
    let v = srv
        .get(&format!("/ui/api/layer?repo=a/b&digest={wide}"))
        .json();
    assert_eq!(v["entries"], json!([]), "{v}");
    assert!(v["cut"].as_str().unwrap().contains("zstd stream"), "{v}");
    let junk = push(&srv, &[], "a/b", &bytes(3, 4000));
    let v = srv
        .get(&format!("/ui/api/layer?repo=a/b&digest={junk}"))
        .json();
    assert!(v["cut"].as_str().unwrap().contains("not a tar"), "{v}");
}

/// Listing a layer, or downloading a file of it, needs the `get-blob` a pull of it needs: a
/// caller who may not read the repository learns nothing of its files.
#[test]
fn layer_files_need_the_right_to_pull_the_layer() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let alice = format!("Basic {}", b64.encode("alice:alice-pw"));
    let srv = Server::start_with(
        "",
        &format!(
            "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n\
             [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = ['identity.id == \"alice\"']\n",
            hash_password("alice-pw")
        ),
    );
    let d = push(
        &srv,
        &[("Authorization", &alice)],
        "a/b",
        &gzip(&tar(&[("secret.txt", b'0', b"x", "")])),
    );
    let path = format!("/ui/api/layer?repo=a/b&digest={d}");
    let r = srv.get(&path);
    assert_eq!(r.status, 401);
    assert!(!String::from_utf8_lossy(&r.body).contains("secret.txt"));
    let r = srv.request("GET", &path, &[("Authorization", &alice)], b"");
    assert_eq!(files(&r.json()), ["secret.txt file 1 0644 -"]);
    let file = format!("/ui/api/layer-file?repo=a/b&digest={d}&path=secret.txt");
    let r = srv.get(&file);
    assert_eq!((r.status, r.body.contains(&b'x')), (401, false));
    let r = srv.request("GET", &file, &[("Authorization", &alice)], b"");
    assert_eq!((r.status, r.body), (200, b"x".to_vec()));
}

/// A regular file of a layer up to 1 MiB downloads on its own (as an attachment with a
/// cleaned name); a larger one, a directory or a missing path does not.
#[test]
fn single_files_download_under_a_cap() {
    let srv = Server::start();
    let big = vec![b'z'; 1024 * 1024 + 1];
    let d = push(
        &srv,
        &[],
        "a/b",
        &gzip(&tar(&[
            ("etc/", b'5', b"", ""),
            ("etc/we\"ird name.conf", b'0', b"key = value\n", ""),
            ("big.bin", b'0', &big, ""),
        ])),
    );
    let get = |path: &str| {
        srv.get(&format!(
            "/ui/api/layer-file?repo=a/b&digest={d}&path={}",
            path.replace(' ', "%20").replace('"', "%22")
        ))
    };
    let r = get("etc/we\"ird name.conf");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, b"key = value\n");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"we_ird_name.conf\"")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(get("big.bin").status, 400);
    assert_eq!(get("etc/").status, 404);
    assert_eq!(get("nope").status, 404);
}
