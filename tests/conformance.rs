//! The OCI distribution spec's four workflows (pull, push, content discovery, content
//! management), endpoint by endpoint, against a running server, with the negative cases.

mod common;

use std::io::Write;

use common::*;

// ---- pull ------------------------------------------------------------------------------

/// Manifests by tag and by digest, GET and HEAD, with the spec's headers.
#[test]
fn pull_manifest_by_tag_and_digest() {
    let srv = Server::start();
    let (manifest, d) = srv.push_image("pull/app", "v1", &[bytes(1, 1000)]);
    for reference in ["v1", d.as_str()] {
        let r = srv.get(&format!("/v2/pull/app/manifests/{reference}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, manifest);
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
        let h = srv.request(
            "HEAD",
            &format!("/v2/pull/app/manifests/{reference}"),
            &[],
            b"",
        );
        assert_eq!(h.status, 200);
        assert_eq!(
            h.header("content-length"),
            Some(manifest.len().to_string().as_str())
        );
        assert_eq!(h.header("docker-content-digest"), Some(d.as_str()));
    }
    // A client that accepts only Docker types still gets what was pushed.
    let r = srv.request(
        "GET",
        "/v2/pull/app/manifests/v1",
        &[("Accept", DOCKER_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, manifest);
}

/// Blobs: GET, HEAD headers, single ranges (206) and unsatisfiable ranges (416).
#[test]
fn pull_blob_with_ranges() {
    let srv = Server::start();
    let data = bytes(2, 300_000);
    let d = srv.push_blob("pull/blob", &data);
    let r = srv.get(&format!("/v2/pull/blob/blobs/{d}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let h = srv.request("HEAD", &format!("/v2/pull/blob/blobs/{d}"), &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("300000"));
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    assert!(h.body.is_empty());
    let p = srv.request(
        "GET",
        &format!("/v2/pull/blob/blobs/{d}"),
        &[("Range", "bytes=100-199")],
        b"",
    );
    assert_eq!(p.status, 206);
    assert_eq!(p.body, &data[100..200]);
    assert_eq!(p.header("content-range"), Some("bytes 100-199/300000"));
    let s = srv.request(
        "GET",
        &format!("/v2/pull/blob/blobs/{d}"),
        &[("Range", "bytes=-10")],
        b"",
    );
    assert_eq!(s.body, &data[data.len() - 10..]);
    let bad = srv.request(
        "GET",
        &format!("/v2/pull/blob/blobs/{d}"),
        &[("Range", "bytes=300000-")],
        b"",
    );
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("content-range"), Some("bytes */300000"));
}

/// What is not there answers 404 with the right code; bad names and digests 400.
#[test]
fn pull_negative_cases() {
    let srv = Server::start();
    srv.push_image("neg/app", "v1", &[bytes(3, 10)]);
    let missing = digest(b"never pushed");
    let r = srv.get(&format!("/v2/neg/app/blobs/{missing}"));
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = srv.get("/v2/neg/app/manifests/nope");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    let r = srv.get(&format!("/v2/neg/app/manifests/{missing}"));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    // A reference that is neither a tag nor a digest names no manifest: 404 on reads and
    // deletes (the conformance suite probes with `.INVALID_MANIFEST_NAME`), as distribution.
    for path in [
        "/v2/neg/app/manifests/.INVALID_MANIFEST_NAME",
        "/v2/neg/app/manifests/sha256:xyz",
        "/v2/neg/app/manifests/bad..tag!",
    ] {
        for method in ["GET", "DELETE"] {
            let r = srv.request(method, path, &[], b"");
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (404, "MANIFEST_UNKNOWN"),
                "{method} {path}"
            );
        }
        let r = srv.request("HEAD", path, &[], b"");
        assert_eq!(r.status, 404, "HEAD {path}");
    }
    let r = srv.get("/v2/Bad_Name/manifests/v1");
    assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"));
    let r = srv.get("/v2/neg/app/blobs/sha256:xyz");
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let r = srv.get("/v2/neg/other/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
    // A blob of another repository is not visible here.
    let d = srv.push_blob("neg/private", b"secret layer");
    assert_eq!(srv.get(&format!("/v2/neg/app/blobs/{d}")).status, 404);
}

// ---- push ------------------------------------------------------------------------------

/// POST then PUT with the whole blob as the PUT body.
#[test]
fn push_post_then_put() {
    let srv = Server::start();
    let data = bytes(4, 70_000);
    let d = digest(&data);
    let loc = srv.start_upload("push/a");
    let r = srv.request("PUT", &format!("{loc}?digest={d}"), &[], &data);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/push/a/blobs/{d}").as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_eq!(srv.get(&format!("/v2/push/a/blobs/{d}")).body, data);
}

/// Chunked upload: PATCHes with Content-Range, status GET, an out-of-order chunk (416),
/// then PUT with a last chunk.
#[test]
fn push_chunked_with_content_range() {
    let srv = Server::start();
    let data = bytes(5, 250_000);
    let d = digest(&data);
    let loc = srv.start_upload("push/chunks");
    let r = srv.request(
        "PATCH",
        &loc,
        &[("Content-Range", "0-99999")],
        &data[..100_000],
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-99999"));
    let loc = r.header("location").unwrap().to_string();
    let st = srv.get(&loc);
    assert_eq!(st.status, 204);
    assert_eq!(st.header("range"), Some("0-99999"));
    assert!(st.header("docker-upload-uuid").is_some());
    // Out of order: starts past the current end.
    let bad = srv.request(
        "PATCH",
        &loc,
        &[("Content-Range", "150000-199999")],
        &data[150_000..200_000],
    );
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("range"), Some("0-99999"));
    let r = srv.request(
        "PATCH",
        &loc,
        &[("Content-Range", "100000-199999")],
        &data[100_000..200_000],
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-199999"));
    let r = srv.request(
        "PUT",
        &format!("{loc}?digest={d}"),
        &[("Content-Range", "200000-249999")],
        &data[200_000..],
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(srv.get(&format!("/v2/push/chunks/blobs/{d}")).body, data);
}

/// Streamed PATCH without Content-Range, chunked transfer coding and Expect: 100-continue,
/// as the Docker engine sends it.
#[test]
fn push_streamed_chunked_transfer_with_expect_continue() {
    let srv = Server::start();
    let data = bytes(6, 1_000_003);
    let d = digest(&data);
    let loc = srv.start_upload("push/stream");
    let mut s = srv.connect();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    // The server asks for the body before we send it.
    let mut first = [0u8; 25];
    std::io::Read::read_exact(&mut s, &mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    for chunk in data.chunks(65_537) {
        write!(s, "{:x};ext=1\r\n", chunk.len()).unwrap();
        s.write_all(chunk).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\nX-Trailer: yes\r\n\r\n").unwrap();
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-1000002"));
    // Same connection, next request: the PUT that closes the upload.
    send(&mut s, "PUT", &format!("{loc}?digest={d}"), &[], b"");
    assert_eq!(read_response(&mut s, false).unwrap().status, 201);
    assert_eq!(srv.get(&format!("/v2/push/stream/blobs/{d}")).body, data);
}

/// A wrong digest answers DIGEST_INVALID and leaves nothing behind.
#[test]
fn push_wrong_digest_leaves_nothing() {
    let srv = Server::start();
    let data = bytes(7, 5000);
    let wrong = digest(b"something else");
    let r = srv.request(
        "POST",
        &format!("/v2/push/bad/blobs/uploads/?digest={wrong}"),
        &[],
        &data,
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(srv.get(&format!("/v2/push/bad/blobs/{wrong}")).status, 404);
    assert_eq!(
        srv.get(&format!("/v2/push/bad/blobs/{}", digest(&data)))
            .status,
        404
    );
    let loc = srv.start_upload("push/bad");
    srv.request("PATCH", &loc, &[], &data);
    let r = srv.request("PUT", &format!("{loc}?digest={wrong}"), &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    // The session is gone too.
    assert_eq!(srv.get(&loc).status, 404);
    let blobs_dir = srv.dir.0.join("data/blobs");
    let count = files_under(&blobs_dir).len();
    assert_eq!(count, 0, "a blob file exists after failed pushes");
}

/// sha512 digests are accepted for blobs.
#[test]
fn push_sha512_blob() {
    let srv = Server::start();
    let data = bytes(8, 10_000);
    let d = {
        use sha2::Digest as _;
        format!("sha512:{}", hex(&sha2::Sha512::digest(&data)))
    };
    let r = srv.request(
        "POST",
        &format!("/v2/push/sha512/blobs/uploads/?digest={d}"),
        &[],
        &data,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let g = srv.get(&format!("/v2/push/sha512/blobs/{d}"));
    assert_eq!(g.body, data);
    assert_eq!(g.header("docker-content-digest"), Some(d.as_str()));
}

/// Unknown or cancelled uploads answer BLOB_UPLOAD_UNKNOWN; ids belong to their repository.
#[test]
fn push_unknown_and_cancelled_uploads() {
    let srv = Server::start();
    let r = srv.get("/v2/push/x/blobs/uploads/0123456789abcdef0123456789abcdef");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    let r = srv.request("PATCH", "/v2/push/x/blobs/uploads/not-an-id", &[], b"abc");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    let loc = srv.start_upload("push/x");
    let other = loc.replace("/push/x/", "/push/y/");
    assert_eq!(
        srv.get(&other).status,
        404,
        "upload visible from another repository"
    );
    assert_eq!(srv.request("DELETE", &loc, &[], b"").status, 204);
    assert_eq!(srv.get(&loc).status, 404);
    assert_eq!(srv.request("DELETE", &loc, &[], b"").status, 404);
}

/// Cross-repository mount, with `from` and without it; nothing to mount gives a session.
#[test]
fn push_cross_repository_mount() {
    let srv = Server::start();
    let d = srv.push_blob("mount/src", b"shared layer");
    let r = srv.request(
        "POST",
        &format!("/v2/mount/dst/blobs/uploads/?mount={d}&from=mount/src"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/mount/dst/blobs/{d}").as_str())
    );
    assert_eq!(
        srv.get(&format!("/v2/mount/dst/blobs/{d}")).body,
        b"shared layer"
    );
    let r = srv.request(
        "POST",
        &format!("/v2/mount/third/blobs/uploads/?mount={d}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 201);
    let missing = digest(b"nowhere");
    let r = srv.request(
        "POST",
        &format!("/v2/mount/dst/blobs/uploads/?mount={missing}&from=mount/src"),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    assert!(r.header("location").unwrap().contains("/blobs/uploads/"));
}

/// Manifest PUT: missing blobs, invalid JSON, mismatched digest, oversized body.
#[test]
fn push_manifest_negative_cases() {
    let srv = Server::start();
    let cfg = srv.push_blob("man/app", b"{}");
    let missing = digest(b"missing layer");
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{missing}\",\"size\":1}}]}}"
    );
    let r = srv.put_manifest("man/app", "v1", OCI_MANIFEST, m.as_bytes());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = srv.put_manifest("man/app", "v1", OCI_MANIFEST, b"{not json");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    let good = m.replace(&missing, &cfg);
    let wrong = digest(b"other");
    let r = srv.put_manifest("man/app", &wrong, OCI_MANIFEST, good.as_bytes());
    assert_eq!((r.status, r.error_code().as_str()), (400, "DIGEST_INVALID"));
    let big = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = srv.put_manifest("man/app", "big", OCI_MANIFEST, &big);
    assert_eq!(r.status, 413);
    // A PUT under a name that is not a tag is the client's error: 400, not 404.
    let r = srv.put_manifest("man/app", "bad..tag!", OCI_MANIFEST, good.as_bytes());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    let r = srv.put_manifest(
        "man/app",
        ".INVALID_MANIFEST_NAME",
        OCI_MANIFEST,
        good.as_bytes(),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_INVALID")
    );
    // Nothing was stored by the failures: the repository, with blobs but no manifest, is
    // not known to the tag list (as distribution).
    let r = srv.get("/v2/man/app/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

/// Index and Docker manifest list with children, and a Docker schema 2 manifest.
#[test]
fn push_indexes_and_docker_types() {
    let srv = Server::start();
    let (amd, amd_d) = srv.push_image("idx/app", "amd64", &[bytes(9, 100)]);
    let (arm, arm_d) = srv.push_image("idx/app", "arm64", &[bytes(10, 100)]);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{amd_d}\",\"size\":{},\"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}},\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{arm_d}\",\"size\":{},\"platform\":{{\"architecture\":\"arm64\",\"os\":\"linux\"}}}}]}}",
        amd.len(),
        arm.len()
    );
    let r = srv.put_manifest("idx/app", "multi", OCI_INDEX, index.as_bytes());
    assert_eq!(r.status, 201);
    let g = srv.get("/v2/idx/app/manifests/multi");
    assert_eq!(g.header("content-type"), Some(OCI_INDEX));
    assert_eq!(g.body, index.as_bytes());
    let list = index.replace(OCI_INDEX, DOCKER_LIST);
    let r = srv.put_manifest("idx/app", "dockerlist", DOCKER_LIST, list.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let cfg = srv.push_blob("idx/app", b"{\"os\":\"linux\"}");
    let layer = srv.push_blob("idx/app", b"layer");
    let docker = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{DOCKER_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"{cfg}\",\"size\":15}},\"layers\":[{{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"{layer}\",\"size\":5}}]}}"
    );
    let r = srv.put_manifest("idx/app", "docker", DOCKER_MANIFEST, docker.as_bytes());
    assert_eq!(r.status, 201);
    let g = srv.get("/v2/idx/app/manifests/docker");
    assert_eq!(g.header("content-type"), Some(DOCKER_MANIFEST));
}

/// An upload continues on another connection and after a restart of the server.
#[test]
fn upload_resumes_across_connections_and_restart() {
    let srv = Server::start();
    let data = bytes(11, 200_000);
    let d = digest(&data);
    let loc = srv.start_upload("resume/app");
    assert_eq!(
        srv.request(
            "PATCH",
            &loc,
            &[("Content-Range", "0-99999")],
            &data[..100_000]
        )
        .status,
        202
    );
    // Restart on the same storage.
    let srv2 = srv.restart();
    let st = srv2.get(&loc);
    assert_eq!(st.status, 204);
    assert_eq!(st.header("range"), Some("0-99999"));
    let r = srv2.request(
        "PATCH",
        &loc,
        &[("Content-Range", "100000-199999")],
        &data[100_000..],
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        srv2.request("PUT", &format!("{loc}?digest={d}"), &[], b"")
            .status,
        201
    );
    assert_eq!(srv2.get(&format!("/v2/resume/app/blobs/{d}")).body, data);
}

// ---- content discovery -------------------------------------------------------------------

/// Tags are listed sorted, paged with n and last, with a Link header to the next page.
#[test]
fn discovery_tags_paging() {
    let srv = Server::start();
    let (m, _) = srv.push_image("disc/app", "b", &[bytes(12, 10)]);
    for tag in ["c", "a", "d", "e"] {
        assert_eq!(
            srv.put_manifest("disc/app", tag, OCI_MANIFEST, &m).status,
            201
        );
    }
    let all = srv.get("/v2/disc/app/tags/list");
    assert_eq!(
        all.json()["tags"],
        serde_json::json!(["a", "b", "c", "d", "e"])
    );
    assert_eq!(all.json()["name"], "disc/app");
    let p1 = srv.get("/v2/disc/app/tags/list?n=2");
    assert_eq!(p1.json()["tags"], serde_json::json!(["a", "b"]));
    let link = p1.header("link").unwrap();
    assert!(
        link.contains("last=b") && link.contains("rel=\"next\""),
        "{link}"
    );
    let p2 = srv.get("/v2/disc/app/tags/list?n=2&last=b");
    assert_eq!(p2.json()["tags"], serde_json::json!(["c", "d"]));
    let p3 = srv.get("/v2/disc/app/tags/list?n=2&last=d");
    assert_eq!(p3.json()["tags"], serde_json::json!(["e"]));
    assert!(p3.header("link").is_none());
    let p0 = srv.get("/v2/disc/app/tags/list?n=0");
    assert_eq!(p0.json()["tags"], serde_json::json!([]));
}

/// The catalog lists repositories, paged the same way.
#[test]
fn discovery_catalog_paging() {
    let srv = Server::start();
    for repo in ["cat/b", "cat/a", "cat/c/d"] {
        srv.push_image(repo, "v1", &[repo.as_bytes().to_vec()]);
    }
    let all = srv.get("/v2/_catalog");
    assert_eq!(
        all.json()["repositories"],
        serde_json::json!(["cat/a", "cat/b", "cat/c/d"])
    );
    let p1 = srv.get("/v2/_catalog?n=1");
    assert_eq!(p1.json()["repositories"], serde_json::json!(["cat/a"]));
    assert!(p1.header("link").unwrap().contains("last=cat/a"));
    let p2 = srv.get("/v2/_catalog?n=5&last=cat/a");
    assert_eq!(
        p2.json()["repositories"],
        serde_json::json!(["cat/b", "cat/c/d"])
    );
}

/// A repository enters the catalog with its first manifest: blobs pushed (or an upload
/// open) do not list it, and its tag list is NAME_UNKNOWN until then.
#[test]
fn discovery_catalog_lists_repositories_with_manifests() {
    let srv = Server::start();
    let layer = bytes(15, 2000);
    srv.push_blob("cat/blobs", &layer);
    srv.start_upload("cat/blobs");
    srv.start_upload("cat/open");
    assert_eq!(
        srv.get("/v2/_catalog").json()["repositories"],
        serde_json::json!([])
    );
    let r = srv.get("/v2/cat/blobs/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
    srv.push_image("cat/blobs", "v1", &[layer]);
    assert_eq!(
        srv.get("/v2/_catalog").json()["repositories"],
        serde_json::json!(["cat/blobs"])
    );
    assert_eq!(
        srv.get("/v2/cat/blobs/tags/list").json()["tags"],
        serde_json::json!(["v1"])
    );
}

/// Referrers: kept current on PUT and DELETE, filterable by artifactType.
#[test]
fn discovery_referrers() {
    let srv = Server::start();
    let (_, subject) = srv.push_image("ref/app", "v1", &[bytes(13, 10)]);
    let empty = srv.get(&format!("/v2/ref/app/referrers/{subject}"));
    assert_eq!(empty.status, 200);
    assert_eq!(empty.header("content-type"), Some(OCI_INDEX));
    assert_eq!(empty.json()["manifests"], serde_json::json!([]));
    let empty_cfg = srv.push_blob("ref/app", b"{}");
    let mut referrers = Vec::new();
    for (i, ty) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let m = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"{ty}\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty_cfg}\",\"size\":2}},\
             \"layers\":[],\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{subject}\",\"size\":1}},\
             \"annotations\":{{\"n\":\"{i}\"}}}}"
        );
        let d = digest(m.as_bytes());
        let r = srv.put_manifest("ref/app", &d, OCI_MANIFEST, m.as_bytes());
        assert_eq!(r.status, 201);
        assert_eq!(r.header("oci-subject"), Some(subject.as_str()));
        referrers.push(d);
    }
    let all = srv.get(&format!("/v2/ref/app/referrers/{subject}"));
    let list = all.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(all.header("oci-filters-applied").is_none());
    let f = srv.get(&format!(
        "/v2/ref/app/referrers/{subject}?artifactType=application/vnd.example.sig"
    ));
    assert_eq!(f.header("oci-filters-applied"), Some("artifactType"));
    let list = f.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(list[0]["digest"], referrers[1].as_str());
    assert_eq!(list[0]["annotations"]["n"], "1");
    // A referrer whose subject does not exist (yet) is accepted.
    let ghost = digest(b"ghost subject");
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"x/y\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty_cfg}\",\"size\":2}},\
         \"layers\":[],\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{ghost}\",\"size\":1}}}}"
    );
    assert_eq!(
        srv.put_manifest("ref/app", "ghost", OCI_MANIFEST, m.as_bytes())
            .status,
        201
    );
    // Deleting a referrer removes it from the list.
    let r = srv.request(
        "DELETE",
        &format!("/v2/ref/app/manifests/{}", referrers[0]),
        &[],
        b"",
    );
    assert_eq!(r.status, 202);
    let after = srv.get(&format!("/v2/ref/app/referrers/{subject}"));
    assert_eq!(after.json()["manifests"].as_array().unwrap().len(), 1);
    let bad = srv.get("/v2/ref/app/referrers/sha256:nothex");
    assert_eq!(bad.status, 400);
}

// ---- content management ------------------------------------------------------------------

/// Deleting tags, manifests and blobs, and deleting what is not there.
#[test]
fn management_deletes() {
    let srv = Server::start();
    let (_, d) = srv.push_image("del/app", "v1", &[bytes(14, 10)]);
    let (m, _) = (srv.get("/v2/del/app/manifests/v1").body, ());
    assert_eq!(
        srv.put_manifest("del/app", "v2", OCI_MANIFEST, &m).status,
        201
    );
    // Tag deletion keeps the manifest.
    assert_eq!(
        srv.request("DELETE", "/v2/del/app/manifests/v2", &[], b"")
            .status,
        202
    );
    assert_eq!(srv.get("/v2/del/app/manifests/v2").status, 404);
    assert_eq!(srv.get(&format!("/v2/del/app/manifests/{d}")).status, 200);
    // Manifest deletion removes the tags that pointed to it.
    assert_eq!(
        srv.request("DELETE", &format!("/v2/del/app/manifests/{d}"), &[], b"")
            .status,
        202
    );
    assert_eq!(srv.get(&format!("/v2/del/app/manifests/{d}")).status, 404);
    assert_eq!(srv.get("/v2/del/app/manifests/v1").status, 404);
    // Its last manifest gone, the repository is gone from the catalog (as distribution,
    // whose tag list then answers NAME_UNKNOWN too).
    let r = srv.get("/v2/del/app/tags/list");
    assert_eq!((r.status, r.error_code().as_str()), (404, "NAME_UNKNOWN"));
    assert_eq!(
        srv.get("/v2/_catalog").json()["repositories"],
        serde_json::json!([])
    );
    let r = srv.request("DELETE", &format!("/v2/del/app/manifests/{d}"), &[], b"");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    let r = srv.request("DELETE", "/v2/del/app/manifests/nosuchtag", &[], b"");
    assert_eq!(r.status, 404);
    // Blob deletion.
    let b = srv.push_blob("del/app", b"to delete");
    assert_eq!(
        srv.request("DELETE", &format!("/v2/del/app/blobs/{b}"), &[], b"")
            .status,
        202
    );
    assert_eq!(srv.get(&format!("/v2/del/app/blobs/{b}")).status, 404);
    let r = srv.request("DELETE", &format!("/v2/del/app/blobs/{b}"), &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (404, "BLOB_UNKNOWN"));
}

/// Every response carries the API version header, errors included.
#[test]
fn api_version_header_everywhere() {
    let srv = Server::start();
    for path in ["/v2/", "/v2/x/manifests/y", "/v2/_catalog", "/nope"] {
        let r = srv.get(path);
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0"),
            "{path}"
        );
    }
}

/// Upload sessions idle longer than `uploads.idle_expiry` are removed with their data.
#[test]
fn idle_upload_sessions_expire() {
    let srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}\n[uploads]\nidle_expiry = \"2s\"\n"),
    );
    let loc = srv.start_upload("exp/app");
    assert_eq!(srv.request("PATCH", &loc, &[], b"some bytes").status, 202);
    // On S3 (ORIGIN_TEST_STORAGE=s3) the session's objects are checked by the backend's own
    // tests; here only that the session is gone.
    let uploads = srv.dir.0.join("data/repositories/exp/app/_uploads");
    if !storage_on_s3() {
        assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 1);
    }
    // Idle for longer than the expiry on the registry's clock; the housekeeping pass runs
    // every second of real time.
    srv.advance_clock(std::time::Duration::from_secs(3));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let left = || std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    while srv.get(&loc).status != 404 || left() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "session or its data never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Large blobs (served with sendfile when cached, on io_uring) arrive whole and in ranges,
/// on several requests of one keep-alive connection.
#[test]
fn pull_large_blob_whole_and_ranged() {
    let srv = Server::start();
    let data = bytes(21, 8 * 1024 * 1024 + 123);
    let d = srv.push_blob("big/app", &data);
    let mut s = srv.connect();
    for _ in 0..2 {
        send(&mut s, "GET", &format!("/v2/big/app/blobs/{d}"), &[], b"");
        let r = read_response(&mut s, false).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == data, "large blob corrupted");
        send(
            &mut s,
            "GET",
            &format!("/v2/big/app/blobs/{d}"),
            &[("Range", "bytes=1000000-5000000")],
            b"",
        );
        let r = read_response(&mut s, false).unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body == data[1_000_000..=5_000_000]);
    }
}

/// With `uploads.allow_missing_index_children = false`, an index whose children are not in
/// the repository is refused; by default (buildx attestation indexes) it is admitted.
#[test]
fn index_children_checked_when_configured() {
    let strict = Server::start_with(
        "",
        &format!("{ALLOW_ALL}\n[uploads]\nallow_missing_index_children = false\n"),
    );
    let lenient = Server::start();
    let missing = digest(b"a child that was never pushed");
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{missing}\",\"size\":10}}]}}"
    );
    let r = strict.put_manifest("idx/strict", "v1", OCI_INDEX, index.as_bytes());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    assert_eq!(
        lenient
            .put_manifest("idx/lenient", "v1", OCI_INDEX, index.as_bytes())
            .status,
        201
    );
}
