//! Listings at any size over HTTP: tag, catalog and referrer pages followed by their `Link`
//! headers list everything, in order, with nothing cut off; the catalog under a namespace;
//! a tag created or deleted shows in the very next listing. Runs on the fs backend, and on
//! S3 (moto) with `ORIGIN_TEST_STORAGE=s3`.

mod common;

use common::*;

/// Tags generated past the old in-memory cap of 100,000 names (fs); on moto, whose PUTs
/// are slow, past one ListObjectsV2 page.
fn generated_tags() -> usize {
    if storage_on_s3() {
        1_100
    } else {
        100_050
    }
}

/// A server for a bulk of generated objects: on the fs backend its directory is on tmpfs
/// when there is one (`/dev/shm`), since removing 100,000 files from a disk that other
/// builds keep busy took minutes here.
fn start_for_bulk() -> Server {
    let shm = std::path::Path::new("/dev/shm");
    if storage_on_s3() || !shm.is_dir() {
        return Server::start();
    }
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).unwrap();
    let dir = TempDir(shm.join(format!("origin-listing-{}", hex(&random))));
    std::fs::create_dir_all(&dir.0).unwrap();
    let text = config_text(&dir.0, "", ALLOW_ALL);
    Server::start_config(dir, &text, &[])
}

/// Writes an object below the API, as a crash or a bulk import could: a file under the
/// server's data directory, or a moto object.
fn put_raw(srv: &Server, key: &str, body: &[u8]) {
    match &srv.moto {
        Some(moto) => moto.put_object("registry", key, body),
        None => {
            let path = srv.dir.0.join("data").join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
    }
}

/// Follows `Link: <...>; rel="next"` from `first`; returns every page's items under `field`
/// and the number of pages.
fn walk(srv: &Server, first: &str, field: &str) -> (Vec<String>, usize) {
    let mut items = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let r = srv.get(&path);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        pages += 1;
        let page = r.json()[field].as_array().unwrap().clone();
        items.extend(page.iter().map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other["digest"].as_str().unwrap().to_string(),
        }));
        if let Some(link) = r.header("link") {
            let (url, rel) = link.split_once(">;").unwrap();
            assert!(rel.contains("rel=\"next\""), "{link}");
            next = Some(url.trim_start_matches('<').to_string());
        }
    }
    (items, pages)
}

/// A repository with more tags than any in-memory cap lists every one, in lexical order,
/// across pages that follow their Link headers; nothing is repeated or skipped.
#[test]
fn every_tag_of_a_huge_repository_is_listed_in_order() {
    let srv = start_for_bulk();
    srv.push_image("big/app", "seed", &[bytes(1, 100)]);
    let digest = srv
        .request(
            "HEAD",
            "/v2/big/app/manifests/seed",
            &[("Accept", OCI_MANIFEST)],
            b"",
        )
        .header("docker-content-digest")
        .unwrap()
        .to_string();
    let n = generated_tags();
    // Not generated in order, so the listing's order is its own work.
    let mut want: Vec<String> = (0..n).map(|i| format!("t{:06}", (i * 7919) % n)).collect();
    for tag in &want {
        put_raw(
            &srv,
            &format!("repositories/big/app/_manifests/tags/{tag}"),
            digest.as_bytes(),
        );
    }
    want.push("seed".to_string());
    want.sort();
    let page = if storage_on_s3() { 1000 } else { 10_000 };
    let (tags, pages) = walk(&srv, &format!("/v2/big/app/tags/list?n={page}"), "tags");
    assert_eq!(tags.len(), want.len());
    assert!(tags == want, "tags listed out of order or incomplete");
    assert_eq!(pages, want.len().div_ceil(page));
    // A page from the middle starts right after `last`.
    let mid = &want[want.len() / 2];
    let r = srv.get(&format!("/v2/big/app/tags/list?n=3&last={mid}"));
    let i = want.len() / 2;
    assert_eq!(r.json()["tags"], serde_json::json!(want[i + 1..i + 4]));
    // A generated tag resolves like a pushed one.
    let r = srv.request(
        "HEAD",
        &format!("/v2/big/app/manifests/{}", want[7]),
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
}

/// A tag pushed or deleted shows in the very next listing, also once the repository is
/// large enough for the fs backend to keep its tags indexed, and with the index built.
#[test]
fn a_tag_change_shows_in_the_next_listing() {
    let srv = Server::start();
    let (manifest, digest) = srv.push_image("fresh/app", "v0", &[bytes(2, 100)]);
    for i in 0..400 {
        put_raw(
            &srv,
            &format!("repositories/fresh/app/_manifests/tags/g{i:04}"),
            digest.as_bytes(),
        );
    }
    let tags =
        |srv: &Server| -> Vec<String> { walk(srv, "/v2/fresh/app/tags/list?n=150", "tags").0 };
    assert_eq!(tags(&srv).len(), 401);
    // Settled: the index is kept from here on.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(tags(&srv).len(), 401);
    for round in 0..5 {
        let tag = format!("g0100x{round}");
        let r = srv.put_manifest("fresh/app", &tag, OCI_MANIFEST, &manifest);
        assert_eq!(r.status, 201);
        let listed = tags(&srv);
        assert!(listed.contains(&tag), "new tag {tag} missing");
        assert_eq!(listed.len(), 402);
        let r = srv.request(
            "DELETE",
            &format!("/v2/fresh/app/manifests/{tag}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 202);
        let listed = tags(&srv);
        assert!(!listed.contains(&tag), "deleted tag {tag} listed");
        assert_eq!(listed.len(), 401);
    }
}

/// The catalog pages through every repository in catalog order with nothing repeated, and
/// `ns` lists one namespace (its Link keeps `ns`); a bad `ns` is refused.
#[test]
fn catalog_pages_and_namespaces() {
    let srv = Server::start();
    for repo in ["team/a", "team/b/c", "team-x/d", "teamy", "other/e"] {
        srv.push_image(repo, "v1", &[repo.as_bytes().to_vec()]);
    }
    let generated = if storage_on_s3() { 300 } else { 1_500 };
    for i in 0..generated {
        let name = format!("gen/r{:04}", (i * 37) % generated);
        put_raw(
            &srv,
            &format!("catalog/{name}/_repository"),
            name.as_bytes(),
        );
    }
    let (all, pages) = walk(&srv, "/v2/_catalog?n=7", "repositories");
    assert_eq!(all.len(), generated + 5);
    assert_eq!(pages, all.len().div_ceil(7));
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "a repository listed twice");
    // Catalog order: `<name>/` byte order.
    let mut by_key = all.clone();
    by_key.sort_by_key(|n| format!("{n}/"));
    assert_eq!(all, by_key);
    for ns in ["team/", "team"] {
        let (team, _) = walk(&srv, &format!("/v2/_catalog?n=1&ns={ns}"), "repositories");
        assert_eq!(team, ["team/a", "team/b/c"], "ns={ns}");
    }
    let r = srv.get("/v2/_catalog?n=1&ns=team/");
    assert!(r.header("link").unwrap().contains("&ns=team/"));
    let r = srv.get("/v2/_catalog?ns=gen/&last=gen/r0010&n=2");
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["gen/r0011", "gen/r0012"])
    );
    let r = srv.get("/v2/_catalog?ns=nobody/");
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
    let r = srv.get("/v2/_catalog?ns=Bad..Name/");
    assert_eq!((r.status, r.error_code().as_str()), (400, "NAME_INVALID"));
}

/// Referrers page by `n` and `last` with Link headers, in digest order, the artifactType
/// filter kept across pages.
#[test]
fn referrers_are_paged() {
    let srv = Server::start();
    let (_, subject) = srv.push_image("refs/app", "v1", &[bytes(3, 10)]);
    let cfg = srv.push_blob("refs/app", b"{}");
    let mut want = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 {
            "application/x.even"
        } else {
            "application/x.odd"
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg, "size": 2},
            "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
            "annotations": {"i": i.to_string()},
        });
        let body = serde_json::to_vec(&manifest).unwrap();
        let digest = format!("sha256:{}", sha256_hex(&body));
        let r = srv.put_manifest("refs/app", &digest, OCI_MANIFEST, &body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        want.push((digest, kind));
    }
    want.sort();
    let all: Vec<String> = want.iter().map(|(d, _)| d.clone()).collect();
    let path = format!("/v2/refs/app/referrers/{subject}");
    let (listed, pages) = walk(&srv, &format!("{path}?n=3"), "manifests");
    assert_eq!((listed, pages), (all.clone(), 3));
    let odd: Vec<String> = want
        .iter()
        .filter(|(_, k)| *k == "application/x.odd")
        .map(|(d, _)| d.clone())
        .collect();
    let first = srv.get(&format!("{path}?n=2&artifactType=application/x.odd"));
    assert_eq!(first.header("oci-filters-applied"), Some("artifactType"));
    assert!(first
        .header("link")
        .unwrap()
        .contains("artifactType=application/x.odd"));
    let (listed, _) = walk(
        &srv,
        &format!("{path}?n=2&artifactType=application/x.odd"),
        "manifests",
    );
    assert_eq!(listed, odd);
    let r = srv.get(&format!("{path}?last=nope"));
    assert_eq!(r.status, 400);
}
