//! The web UI on several nodes (issue #24, point 8): two Origin nodes on one moto bucket behind
//! no sticky load balancer. A session from one node works on the other, a logout on one ends
//! the session on the other within the documented 5 s, and a delete through one node's UI is
//! what the other's UI and `/v2/` show. On the fs backend two nodes cannot share a root: the
//! second refuses to start, saying so.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::browser::Browser;
use common::s3::Moto;
use common::*;
use serde_json::json;

/// How long another node may keep honouring a session after a logout (README, "Web UI":
/// `LOGOUT_CACHE_TTL` in src/ui/session.rs).
const LOGOUT_BOUND: Duration = Duration::from_secs(5);

/// How long another node may serve a manifest by digest after a delete
/// (`server.manifest_cache_ttl`, 2 s by default).
const MANIFEST_CACHE_BOUND: Duration = Duration::from_secs(2);

/// Added to a documented bound before a poll gives up: a shared 2-core machine under load.
const MARGIN: Duration = Duration::from_secs(10);

/// alice may do anything; anonymous nothing. Nodes share one configuration: a session
/// carries a keyed fingerprint of the identity's password hash, so nodes whose hashes of
/// the same password differ (another salt) refuse each other's sessions.
fn config_extra() -> String {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(config_text_once).clone()
}

fn config_text_once() -> String {
    format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n\
         [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
         policies = ['identity.id == \"alice\"']\n",
        hash_password("alice-pw")
    )
}

fn basic_alice() -> String {
    let b = base64::engine::general_purpose::STANDARD.encode("alice:alice-pw");
    format!("Basic {b}")
}

/// A node on `bucket` (the fs section of the tests' config replaced by the bucket's).
fn node(moto: &Moto, bucket: &str) -> Server {
    Server::start_on_bucket("ui-nodes", moto, bucket, &config_extra())
}

/// Polls `done` every 100 ms until it holds; panics with `what` after `within`.
fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn v2(srv: &Server, path: &str) -> Resp {
    srv.request("GET", path, &[("Authorization", &basic_alice())], b"")
}

fn ui_tags(b: &mut Browser, srv: &Server, repo: &str) -> Vec<String> {
    let r = b.on(srv).get(&format!("/ui/api/tags?repo={repo}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap().to_string())
        .collect()
}

/// Pushes a small image as alice (through `srv`); its manifest digest.
fn push(srv: &Server, repo: &str, tag: &str, seed: u64) -> String {
    let auth = basic_alice();
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let layer = bytes(seed, 200);
    let mut descs = Vec::new();
    for (data, media) in [
        (&config[..], "application/vnd.oci.image.config.v1+json"),
        (&layer[..], "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let d = digest(data);
        let r = srv.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Authorization", &auth)],
            data,
        );
        assert_eq!(r.status, 201);
        descs.push(json!({ "mediaType": media, "digest": d, "size": data.len() }));
    }
    let m = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descs[0], "layers": [descs[1]] });
    let body = serde_json::to_vec(&m).unwrap();
    let r = srv.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Authorization", &auth), ("Content-Type", OCI_MANIFEST)],
        &body,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    digest(&body)
}

/// A session cookie and CSRF token issued by node A work on node B (one signing key, created
/// once in the bucket); a logout on A is refused at once on A and within the documented 5 s
/// on B, which had read the identity's logout record just before; a new log-in on B works.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn sessions_work_across_nodes_and_logout_reaches_every_node() {
    let Some(moto) = Moto::start("sessions_work_across_nodes_and_logout_reaches_every_node") else {
        return;
    };
    moto.create_bucket("ui-sessions");
    let (a, b) = (node(&moto, "ui-sessions"), node(&moto, "ui-sessions"));
    push(&a, "team/app", "v1", 1);

    let mut browser = Browser::open(&a);
    let r = browser.on(&a).post(
        "login",
        json!({ "username": "alice", "password": "alice-pw" }),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let kept = browser.cookie.clone().unwrap();
    assert_eq!(
        ui_tags(&mut browser, &b, "team/app"),
        ["v1"],
        "A's cookie on B"
    );
    let me = browser.on(&b).get("/ui/api/session").json();
    assert_eq!(me["identity"]["name"], "alice");
    assert_eq!(
        browser.cookie.as_deref(),
        Some(kept.as_str()),
        "B kept the session"
    );
    assert_eq!(
        me["csrf"].as_str(),
        Some(browser.csrf.as_str()),
        "one CSRF token"
    );
    // A state change on B with what A issued: the CSRF token checks there too.
    push(&a, "team/app", "scratch", 2);
    let r = browser
        .on(&b)
        .post("delete", json!({ "repo": "team/app", "ref": "scratch" }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // B reads alice's logout record (none yet) right before the logout on A.
    assert_eq!(browser.on(&b).get("/ui/api/tags?repo=team/app").status, 200);
    let r = browser.on(&a).post("logout", json!({}));
    assert_eq!(r.status, 200);
    let mut copy = Browser {
        addr: a.addr,
        cookie: Some(kept.clone()),
        csrf: String::new(),
    };
    assert_eq!(
        copy.on(&a).get("/ui/api/tags?repo=team/app").status,
        401,
        "at once on A"
    );
    let took = eventually(LOGOUT_BOUND + MARGIN, "logout seen on B", || {
        copy.cookie = Some(kept.clone());
        copy.on(&b).get("/ui/api/tags?repo=team/app").status == 401
    });
    eprintln!("logout on A refused on B after {took:?} (bound {LOGOUT_BOUND:?})");
    // Refused for good, not only once.
    copy.cookie = Some(kept.clone());
    assert_eq!(copy.on(&b).get("/ui/api/tags?repo=team/app").status, 401);

    let mut fresh = Browser::open(&b);
    let r = fresh.on(&b).post(
        "login",
        json!({ "username": "alice", "password": "alice-pw" }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        ui_tags(&mut fresh, &a, "team/app"),
        ["v1"],
        "B's cookie on A"
    );
}

/// A tag deleted through node A's UI is gone from node B's UI JSON API (tags, manifest by
/// tag) and from its `/v2/` on the very next request; a manifest
/// deleted by digest through A is gone on B within `server.manifest_cache_ttl` even though B
/// had just served (and cached) it.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn a_delete_through_one_nodes_ui_is_seen_by_the_other() {
    let Some(moto) = Moto::start("a_delete_through_one_nodes_ui_is_seen_by_the_other") else {
        return;
    };
    moto.create_bucket("ui-deletes");
    let (a, b) = (node(&moto, "ui-deletes"), node(&moto, "ui-deletes"));
    push(&a, "team/app", "v1", 1);
    let d2 = push(&a, "team/app", "v2", 2);

    let mut browser = Browser::open(&a);
    let r = browser.on(&a).post(
        "login",
        json!({ "username": "alice", "password": "alice-pw" }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(ui_tags(&mut browser, &b, "team/app"), ["v1", "v2"]);
    assert_eq!(
        browser
            .on(&b)
            .get("/ui/api/manifest?repo=team/app&ref=v1")
            .status,
        200
    );
    assert_eq!(v2(&b, "/v2/team/app/manifests/v1").status, 200);

    let r = browser
        .on(&a)
        .post("delete", json!({ "repo": "team/app", "ref": "v1" }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ui_tags(&mut browser, &b, "team/app"), ["v2"]);
    assert_eq!(
        browser
            .on(&b)
            .get("/ui/api/manifest?repo=team/app&ref=v1")
            .status,
        404
    );
    assert_eq!(v2(&b, "/v2/team/app/manifests/v1").status, 404);
    assert_eq!(
        v2(&b, "/v2/team/app/tags/list").json()["tags"],
        json!(["v2"])
    );

    // By digest: B serves (and caches) it, then A deletes it.
    let by_digest = format!("/v2/team/app/manifests/{d2}");
    assert_eq!(v2(&b, &by_digest).status, 200);
    let r = browser
        .on(&a)
        .post("delete", json!({ "repo": "team/app", "ref": d2 }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let left = browser.on(&b).get("/ui/api/tags?repo=team/app");
    assert!(
        left.status == 404 || left.json()["tags"].as_array().is_some_and(|t| t.is_empty()),
        "tags left on B: {}",
        String::from_utf8_lossy(&left.body)
    );
    eventually(MANIFEST_CACHE_BOUND + MARGIN, "digest gone on B", || {
        v2(&b, &by_digest).status == 404
            && browser
                .on(&b)
                .get(&format!("/ui/api/manifest?repo=team/app&ref={d2}"))
                .status
                == 404
    });
}

/// On the fs backend a root belongs to one server: a second node started on the same
/// `root_dir` exits at start, naming the reason, and the first keeps serving. Several nodes
/// need the S3 backend (the tests above).
#[test]
fn a_second_node_on_one_fs_root_refuses_to_start() {
    let dir = TempDir::new("ui-nodes-fs-first");
    let text = config_text(&dir.0, "", &config_extra());
    let first = Server::start_config(dir, &text, &[]);
    push(&first, "team/app", "v1", 1);
    let dir = TempDir::new("ui-nodes-fs");
    let text = config_text(&first.dir.0, "", &config_extra());
    let config_path = dir.0.join("config.toml");
    std::fs::write(&config_path, text).unwrap();
    let mut second = Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("serve")
        .arg("-c")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server on the same fs root kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("one server per root_dir"), "{err}");
    let mut browser = Browser::open(&first);
    let r = browser.on(&first).post(
        "login",
        json!({ "username": "alice", "password": "alice-pw" }),
    );
    assert_eq!(r.status, 200);
    assert_eq!(ui_tags(&mut browser, &first, "team/app"), ["v1"]);
}
