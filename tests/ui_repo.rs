//! A repository's page beyond its tag names (`<ui path>api/tags`, `untagged`, `retention`):
//! each tag's pushed time and last pull (where pulls are recorded), the manifests no tag
//! names, paged, the retention rules with what the next pass would delete now, and what the
//! repository stores.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Pushes a small image manifest (distinct by `n`) under `reference` or its digest.
fn manifest(srv: &Server, repo: &str, n: &str, reference: Option<&str>) -> String {
    let empty = srv.push_blob(repo, b"{}");
    let body = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty}\",\"size\":2}},\
         \"layers\":[],\"annotations\":{{\"n\":\"{n}\"}}}}"
    );
    let d = digest(body.as_bytes());
    let r = srv.put_manifest(repo, reference.unwrap_or(&d), OCI_MANIFEST, body.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    d
}

fn index(srv: &Server, repo: &str, tag: &str, children: &[&str]) -> String {
    let list: Vec<String> = children
        .iter()
        .map(|d| {
            let size = srv.get(&format!("/v2/{repo}/manifests/{d}")).body.len();
            format!("{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{size}}}")
        })
        .collect();
    let body = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        list.join(",")
    );
    let r = srv.put_manifest(repo, tag, OCI_INDEX, body.as_bytes());
    assert_eq!(r.status, 201);
    digest(body.as_bytes())
}

fn tag_row<'a>(tags: &'a Value, tag: &str) -> &'a Value {
    tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {tags}"))
}

/// Each tag says when it was pushed (on the filesystem, exactly its link's time: moved
/// into the past here) and when its manifest was last pulled where pulls are recorded (a
/// repository with retention rules); elsewhere the last pull is `null`, as nothing records it.
#[test]
fn tags_show_when_they_were_pushed_and_last_pulled() {
    let config = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"kept\"\npolicy_default_allow = true\n\
         retention = [\"true\"]\n";
    let srv = Server::start_with("", config);
    let started = now();
    manifest(&srv, "kept/app", "a", Some("v1"));
    manifest(&srv, "plain/app", "b", Some("v1"));

    for repo in ["kept/app", "plain/app"] {
        let tags = srv.get(&format!("/ui/api/tags?repo={repo}")).json();
        let v1 = tag_row(&tags, "v1");
        let pushed = v1["pushed"].as_i64().unwrap_or_else(|| panic!("{v1}"));
        assert!(
            (started - 5..=now() + 5).contains(&pushed),
            "{repo}: pushed {pushed}, test started at {started}"
        );
        assert_eq!(v1["pulled"], Value::Null, "{repo}: never pulled yet");
    }

    for repo in ["kept/app", "plain/app"] {
        assert_eq!(srv.get(&format!("/v2/{repo}/manifests/v1")).status, 200);
    }
    let pulled = srv.get("/ui/api/tags?repo=kept/app").json();
    let at = tag_row(&pulled, "v1")["pulled"]
        .as_i64()
        .unwrap_or_else(|| panic!("the pull is recorded: {pulled}"));
    assert!((started - 5..=now() + 5).contains(&at), "pulled at {at}");
    let plain = srv.get("/ui/api/tags?repo=plain/app").json();
    assert_eq!(tag_row(&plain, "v1")["pulled"], Value::Null);

    // A browser's look is not a pull: the UI's own reads record nothing.
    let looked = srv.get("/ui/api/manifest?repo=plain/app&ref=v1");
    assert_eq!(looked.status, 200);
    let plain = srv.get("/ui/api/tags?repo=plain/app").json();
    assert_eq!(tag_row(&plain, "v1")["pulled"], Value::Null);

    if storage_on_s3() {
        return;
    }
    // The pushed time is the tag link's own time, not the page's clock.
    let link = srv
        .dir
        .0
        .join("data/repositories/plain/app/_manifests/tags/v1");
    assert!(link.exists(), "{}", link.display());
    let past = 1_600_000_000;
    let ok = Command::new("touch")
        .args(["-m", "-d", &format!("@{past}")])
        .arg(&link)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let tags = srv.get("/ui/api/tags?repo=plain/app").json();
    assert_eq!(tag_row(&tags, "v1")["pushed"], json!(past), "{tags}");
}

fn untagged_all(srv: &Server, repo: &str, n: usize) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut last: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("/ui/api/untagged?repo={repo}&n={n}");
        if let Some(l) = &last {
            url.push_str(&format!("&last={l}"));
        }
        let page = srv.get(&url).json();
        assert_eq!(page["available"], true, "{page}");
        pages += 1;
        for m in page["manifests"].as_array().unwrap() {
            assert!(m["mediaType"].is_string() && m["size"].as_u64().unwrap() > 0);
            assert!(m["pushed"].is_i64(), "{m}");
            out.push(m["digest"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => last = Some(next.to_string()),
            None => return (out, pages),
        }
        assert!(pages < 100, "paging ends");
    }
}

/// The manifests no tag names are listed, in digest order, a page at a time: an index's
/// children and an image whose tag moved; tagged ones never. A repository with too many
/// tags to tell says so rather than walking them.
#[test]
fn untagged_manifests_are_listed_and_paged() {
    let srv = Server::start();
    let repo = "team/app";
    let a = manifest(&srv, repo, "a", None);
    let b = manifest(&srv, repo, "b", None);
    let multi = index(&srv, repo, "multi", &[&a, &b]);
    let old = manifest(&srv, repo, "old", Some("v1"));
    let new = manifest(&srv, repo, "new", Some("v1"));
    let (all, _) = untagged_all(&srv, repo, 100);
    let mut want = vec![a.clone(), b.clone(), old.clone()];
    want.sort();
    assert_eq!(all, want);
    for tagged in [&multi, &new] {
        assert!(!all.contains(tagged));
    }
    // One a page: the same manifests, every page but the last with a `next`.
    let (one_by_one, pages) = untagged_all(&srv, repo, 1);
    assert_eq!(one_by_one, want);
    assert!(pages >= 3, "{pages} pages");

    // Tagging one takes it off the list.
    let body = srv.get(&format!("/v2/{repo}/manifests/{old}")).body;
    assert_eq!(
        srv.put_manifest(repo, "v0", OCI_MANIFEST, &body).status,
        201
    );
    let (after, _) = untagged_all(&srv, repo, 100);
    let after: BTreeSet<_> = after.into_iter().collect();
    assert_eq!(after, BTreeSet::from([a, b]));

    assert_eq!(srv.get("/ui/api/untagged?repo=no/such").status, 404);
    assert_eq!(
        srv.get(&format!("/ui/api/untagged?repo={repo}&last=nonsense"))
            .status,
        400
    );
}

/// A repository with retention rules shows them and what the next pass would delete now
/// (here: every manifest but the one tagged `keep`); one without rules answers `null`.
#[test]
fn retention_rules_and_what_the_next_pass_deletes() {
    let config = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"ret\"\npolicy_default_allow = true\n\
         retention = [\"image.tag == 'keep'\"]\n";
    let srv = Server::start_with("", config);
    let keep = manifest(&srv, "ret/app", "k", Some("keep"));
    let drop = manifest(&srv, "ret/app", "d", Some("drop"));
    let loose = manifest(&srv, "ret/app", "u", None);
    manifest(&srv, "other/app", "o", Some("drop"));

    let r = srv.get("/ui/api/retention?repo=ret/app").json();
    assert_eq!(r["rules"], json!(["image.tag == 'keep'"]));
    let due: BTreeSet<(String, String)> = r["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["tags"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        due,
        BTreeSet::from([
            (drop.clone(), json!(["drop"]).to_string()),
            (loose, json!([]).to_string())
        ]),
        "{r}"
    );
    assert!(!due.iter().any(|(d, _)| *d == keep));
    // A preview only: nothing was deleted.
    assert_eq!(srv.get("/v2/ret/app/manifests/drop").status, 200);
    assert_eq!(
        srv.get("/ui/api/retention?repo=other/app").json(),
        Value::Null
    );
}

/// A repository's stored size counts its manifests and each blob they name once (a layer
/// shared by two of its images too); a blob of another repository does not count, and an
/// unknown repository is 404. The same on the filesystem and on S3.
#[test]
fn stored_size_counts_each_blob_once_and_the_manifests() {
    let srv = Server::start();
    let repo = "team/sized";
    let shared = bytes(1, 10_000);
    let (m1, _) = srv.push_image(repo, "a", &[shared.clone(), bytes(2, 3_000)]);
    let (m2, _) = srv.push_image(repo, "b", std::slice::from_ref(&shared));
    srv.push_image("team/other", "x", &[bytes(3, 50_000)]);
    let s = srv.get(&format!("/ui/api/size?repo={repo}")).json();
    // Blobs: the shared layer, the second layer and the configs the images were pushed with.
    let configs: BTreeSet<(String, u64)> = [&m1, &m2]
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_slice(m).unwrap();
            let c = &v["config"];
            (
                c["digest"].as_str().unwrap().to_string(),
                c["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let config_count = configs.len() as u64;
    let configs: u64 = configs.iter().map(|(_, size)| size).sum();
    let want = 10_000 + 3_000 + configs + (m1.len() + m2.len()) as u64;
    assert_eq!(
        (
            s["bytes"].as_u64(),
            s["blobs"].as_u64(),
            s["manifests"].as_u64(),
            s["complete"].as_bool()
        ),
        (Some(want), Some(2 + config_count), Some(2), Some(true)),
        "{s}"
    );
    assert_eq!(srv.get("/ui/api/size?repo=no/such").status, 404);
}
