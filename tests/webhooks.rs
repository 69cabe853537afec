//! Event webhooks against a real receiver on 127.0.0.1: payloads and signatures for a real
//! client's pushes and pulls, `required` deliveries that block, receivers that hang, SIGHUP
//! reload, the shutdown drain and `check-config`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::{Received, Receiver};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        common::upstream::base64_std(format!("{user}:{pass}").as_bytes())
    )
}

fn hmac_hex(key: &str, body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let tag = ring::hmac::sign(&k, body);
    format!("sha256={}", hex(tag.as_ref()))
}

fn kinds(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|r| r.json()["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

fn allow_all_with(hooks: &str, webhook: &str) -> String {
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nevent_webhooks = [{hooks}]\n\n{webhook}"
    )
}

/// Every received event is signed with the token and carries it as a Bearer token.
fn assert_signed(got: &[Received], token: &str) {
    for r in got {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(
            r.header("x-registry-signature-256"),
            Some(hmac_hex(token, &r.body).as_str()),
            "bad signature on {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(r.header("x-registry-event"), v["kind"].as_str());
        assert_eq!(v["id"].as_str().map(str::len), Some(32));
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}

/// skopeo (a real client, logged in as alice) copies an image from one repository to
/// another: the receiver gets the pull and the push events, signed, with alice and her IP.
#[test]
#[cfg_attr(origin_no_skopeo, ignore = "needs skopeo (apt-get install skopeo)")]
fn a_real_clients_push_and_pull_arrive_signed() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        // CI installs it (.ci/run) and sets ORIGIN_REQUIRE_UPSTREAM: there a skip is a failure.
        assert!(
            std::env::var_os("ORIGIN_REQUIRE_UPSTREAM").is_none(),
            "skopeo is not installed (apt-get install skopeo)"
        );
        eprintln!("skipped: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let recv = Receiver::start();
    let hash = hash_password("alice-pw");
    let config = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{hash}\"\n\n\
         [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
         policies = [\"identity.username == 'alice'\"]\nevent_webhooks = [\"audit\"]\n\n\
         [[repository]]\nnamespace = \"seed\"\npolicy_default_allow = true\nevent_webhooks = [\"audit\"]\n\n\
         [event_webhook.audit]\nurl = \"{}\"\n\
         events = [\"manifest.push\", \"manifest.pull\", \"blob.push\", \"tag.create\"]\n\
         token = \"s3cret-token\"\ndelivery = \"async\"\n",
        recv.url("/hooks/registry")
    );
    let srv = Server::start_with("", &config);
    let (_, seed) = srv.push_image("seed/app", "v1", &[bytes(7, 4000)]);
    let dir = TempDir::new("skopeo");
    let policy = dir.0.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let reg = srv.addr;
    let out = Command::new("skopeo")
        .env("HOME", &dir.0)
        .env("TMPDIR", &dir.0)
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .args([
            "--src-creds",
            "alice:alice-pw",
            "--dest-creds",
            "alice:alice-pw",
        ])
        .arg(format!("docker://{reg}/seed/app:v1"))
        .arg(format!("docker://{reg}/team/app:v1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = srv
        .request(
            "HEAD",
            "/v2/team/app/manifests/v1",
            &[("Authorization", &basic("alice", "alice-pw"))],
            b"",
        )
        .header("docker-content-digest")
        .map(str::to_owned)
        .unwrap();
    let by_alice = |got: &[Received]| -> Vec<Received> {
        got.iter()
            .filter(|r| r.json()["actor"]["username"] == "alice")
            .cloned()
            .collect()
    };
    let got = recv.wait_for(WAIT, |g| {
        let k = kinds(&by_alice(g));
        ["manifest.pull", "blob.push", "manifest.push", "tag.create"]
            .iter()
            .all(|want| k.iter().any(|x| x == want))
    });
    let alice = by_alice(&got);
    assert_signed(&got, "s3cret-token");
    assert!(got.iter().all(|r| r.path == "/hooks/registry"));
    let find = |kind: &str, repo: &str| {
        alice
            .iter()
            .map(Received::json)
            .find(|v| v["kind"] == kind && v["repository"] == repo)
            .unwrap_or_else(|| panic!("no {kind} of {repo} in {:?}", kinds(&got)))
    };
    let pull = find("manifest.pull", "seed/app");
    assert_eq!(pull["digest"], seed.as_str());
    assert_eq!(pull["tag"], "v1");
    assert_eq!(pull["actor"]["kind"], "client");
    assert_eq!(pull["actor"]["id"], "alice");
    assert_eq!(pull["actor"]["ip"], "127.0.0.1");
    assert!(pull["size"].as_u64().unwrap() > 0);
    let push = find("manifest.push", "team/app");
    assert_eq!(push["digest"], pushed.as_str());
    assert_eq!(push["reference"], "v1");
    assert!(push["media_type"].as_str().unwrap().contains("manifest"));
    let tag = find("tag.create", "team/app");
    assert_eq!(
        (tag["tag"].as_str(), tag["digest"].as_str()),
        (Some("v1"), Some(pushed.as_str()))
    );
    let blob = find("blob.push", "team/app");
    assert!(blob["digest"].as_str().unwrap().starts_with("sha256:"));
    // The anonymous seeding push is there too, with no username.
    assert!(got
        .iter()
        .map(Received::json)
        .any(|v| v["kind"] == "manifest.push"
            && v["repository"] == "seed/app"
            && v["actor"]["username"].is_null()));
    // Kinds not subscribed are not sent.
    assert!(!kinds(&got).iter().any(|k| k == "blob.pull"));
    let metrics = String::from_utf8(srv.get("/metrics").body).unwrap();
    assert!(
        !metrics.contains("origin_webhook_deliveries_total 0\n"),
        "{metrics}"
    );
}

/// A `required` webhook that fails blocks the push (502, nothing tagged); retried once; a
/// working one lets it through.
#[test]
fn a_failing_required_webhook_blocks_the_push() {
    let recv = Receiver::start();
    let hook = format!(
        "[event_webhook.gate]\nurl = \"{}\"\nevents = [\"manifest.push\"]\ndelivery = \"required\"\n\
         timeout = \"5s\"\nmax_retries = 1\n",
        recv.url("/gate")
    );
    let srv = Server::start_with("", &allow_all_with("\"gate\"", &hook));
    recv.answer(500);
    let layer = srv.push_blob("gated/app", b"layer");
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{}\",\"size\":2}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer}\",\"size\":5}}]}}",
        srv.push_blob("gated/app", b"{}")
    );
    let r = srv.put_manifest("gated/app", "v1", OCI_MANIFEST, manifest.as_bytes());
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("gate"));
    assert_eq!(srv.get("/v2/gated/app/manifests/v1").status, 404);
    assert_eq!(
        srv.get(&format!(
            "/v2/gated/app/manifests/{}",
            digest(manifest.as_bytes())
        ))
        .status,
        404
    );
    assert_eq!(recv.received().len(), 2, "one attempt and one retry");
    recv.answer(200);
    let r = srv.put_manifest("gated/app", "v1", OCI_MANIFEST, manifest.as_bytes());
    assert_eq!(r.status, 201);
    assert_eq!(srv.get("/v2/gated/app/manifests/v1").status, 200);
    let metrics = String::from_utf8(srv.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("origin_webhook_failures_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("origin_webhook_deliveries_total 1\n"),
        "{metrics}"
    );
}

/// A receiver that never answers holds a push no longer than the webhook's timeout, however
/// many retries are configured: `optional` lets the push through, `required` fails it.
#[test]
fn a_hanging_receiver_does_not_hold_the_push_past_the_timeout() {
    let recv = Receiver::start();
    recv.hang();
    let hooks = format!(
        "[event_webhook.slow]\nurl = \"{0}\"\nevents = [\"tag.create\"]\ndelivery = \"optional\"\n\
         timeout = \"1s\"\nmax_retries = 5\n\
         [event_webhook.gate]\nurl = \"{0}\"\nevents = [\"manifest.delete\"]\ndelivery = \"required\"\n\
         timeout = \"1s\"\nmax_retries = 5\n",
        recv.url("/slow")
    );
    let srv = Server::start_with("", &allow_all_with("\"slow\", \"gate\"", &hooks));
    // Five attempts of a second each, plus backoff, would be over 6 s.
    let bound = Duration::from_millis(4500);
    let start = Instant::now();
    let (_, d) = srv.push_image("hang/app", "v1", &[bytes(3, 100)]);
    assert!(
        start.elapsed() < bound,
        "optional push held {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let r = srv.request("DELETE", &format!("/v2/hang/app/manifests/{d}"), &[], b"");
    assert_eq!(r.status, 502);
    assert!(
        start.elapsed() < bound,
        "required delete held {:?}",
        start.elapsed()
    );
    assert_eq!(
        srv.get(&format!("/v2/hang/app/manifests/{d}")).status,
        200,
        "deleted anyway"
    );
}

/// Webhooks come and go with SIGHUP; on SIGTERM the queued async deliveries are sent before
/// the process exits (the receiver is slow, so they are still queued when the signal comes).
#[test]
fn webhooks_reload_and_the_queue_drains_on_shutdown() {
    let recv = Receiver::start();
    recv.delay(Duration::from_millis(150));
    let dir = TempDir::new("hooks-reload");
    let base = config_text(&dir.0, "query_timeout_grace_period = \"20s\"", "");
    let mut srv = Server::start_config(dir, &format!("{base}{ALLOW_ALL}"), &[]);
    srv.push_image("reload/app", "before", &[bytes(4, 100)]);
    let hook = format!(
        "[event_webhook.feed]\nurl = \"{}\"\nevents = [\"tag.create\"]\n",
        recv.url("/feed")
    );
    std::fs::write(
        &srv.config_path,
        format!("{base}{}", allow_all_with("\"feed\"", &hook)),
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", WAIT)
        .expect("reload logged");
    const TAGS: usize = 12;
    for i in 0..TAGS {
        srv.push_image("reload/app", &format!("t{i}"), &[bytes(4, 100)]);
    }
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(30)), Some(0));
    let got = recv.received();
    let tags: Vec<String> = got
        .iter()
        .map(|r| r.json()["tag"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(got.len(), TAGS, "{tags:?}");
    assert!(!tags.contains(&"before".to_string()));
    assert!(got.iter().all(|r| r.header("authorization").is_none()));
}

/// `check-config` names the key of an unknown event, a bad filter and an unused webhook.
#[test]
fn check_config_names_bad_webhook_keys() {
    let dir = TempDir::new("hooks-check");
    let check = |extra: &str| {
        let path = dir.0.join("check.toml");
        std::fs::write(&path, config_text(&dir.0, "", extra)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let hook = "[event_webhook.a]\nurl = \"http://127.0.0.1:9/\"\nevents = [\"manifest.push\"]\n";
    assert!(check(&allow_all_with("\"a\"", hook)).0);
    let (ok, err) = check(&allow_all_with(
        "\"a\"",
        &hook.replace("manifest.push", "image.push"),
    ));
    assert!(!ok && err.contains("event_webhook.a.events[0]"), "{err}");
    let (ok, err) = check(&allow_all_with(
        "\"a\"",
        &format!("{hook}repository_filter = [\"[\"]\n"),
    ));
    assert!(
        !ok && err.contains("event_webhook.a.repository_filter[0]"),
        "{err}"
    );
    let (ok, err) = check(&allow_all_with("", hook));
    assert!(!ok && err.contains("event_webhook.a"), "{err}");
    let (ok, err) = check(&allow_all_with(
        "\"a\"",
        &format!("{hook}ca_bundle = \"/nonexistent.pem\"\n"),
    ));
    assert!(!ok && err.contains("event_webhook.a.ca_bundle"), "{err}");
}

/// Untagged manifests that GC removes (`gc.remove_untagged`) are reported with the gc actor.
#[test]
fn gc_deletions_are_reported_with_the_gc_actor() {
    let recv = Receiver::start();
    let hook = format!(
        "[event_webhook.audit]\nurl = \"{}\"\nevents = [\"manifest.delete\"]\n\
         [gc]\nenabled = true\nremove_untagged = true\ninterval = \"1s\"\ngrace_period = \"1s\"\n",
        recv.url("/audit")
    );
    let srv = Server::start_with("", &allow_all_with("\"audit\"", &hook));
    let (_, first) = srv.push_image("gc/app", "v1", &[bytes(5, 100)]);
    srv.push_image("gc/app", "v1", &[bytes(6, 100)]);
    let got = recv.wait_for(WAIT, |g| !g.is_empty());
    assert_eq!(got.len(), 1, "no gc event");
    let v = got[0].json();
    assert_eq!(v["kind"], "manifest.delete");
    assert_eq!(v["digest"], first.as_str());
    assert_eq!(v["actor"], serde_json::json!({"kind": "gc"}));
}

/// `origin gc` from the command line sends the same events as the server's own pass: the
/// untagged manifest it removes is reported with the gc actor.
#[test]
fn offline_gc_reports_its_deletions_too() {
    let recv = Receiver::start();
    let hook = format!(
        "[event_webhook.audit]\nurl = \"{}\"\nevents = [\"manifest.delete\"]\n\
         [gc]\nenabled = false\nremove_untagged = true\ngrace_period = \"1s\"\n",
        recv.url("/audit")
    );
    let srv = Server::start_with("", &allow_all_with("\"audit\"", &hook));
    let (_, first) = srv.push_image("gc/cli", "v1", &[bytes(7, 100)]);
    srv.push_image("gc/cli", "v1", &[bytes(8, 100)]);
    srv.advance_clock(Duration::from_secs(3600));
    let (code, out) = srv.cli(&["gc"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("removed 1 untagged manifests"), "{out}");
    let got = recv.wait_for(WAIT, |g| !g.is_empty());
    assert_eq!(got.len(), 1, "no event from origin gc");
    let v = got[0].json();
    assert_eq!(v["kind"], "manifest.delete");
    assert_eq!(v["digest"], first.as_str());
    assert_eq!(v["actor"], serde_json::json!({"kind": "gc"}));
}

/// Whether a blob's content is stored anywhere under the server's fs root.
fn blob_stored(srv: &Server, d: &str) -> bool {
    let hex = d.strip_prefix("sha256:").unwrap();
    files_under(&srv.dir.0.join("data/blobs"))
        .iter()
        .any(|f| f.parent().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new(hex)))
}

/// A `required` `blob.push` webhook is asked after the digest is verified and before the
/// blob is committed: refused, a monolithic push, a chunked upload and a mount all answer 502
/// and leave nothing visible (no link, no stored content, no session); a push with a wrong
/// digest fails before the hook is asked; accepted, the same pushes succeed.
#[test]
fn a_refused_blob_push_never_becomes_visible() {
    let recv = Receiver::start();
    let hook = format!(
        "[event_webhook.gate]\nurl = \"{}\"\nevents = [\"blob.push\"]\ndelivery = \"required\"\n\
         max_retries = 0\nrepository_filter = [\"gated/.*\"]\n",
        recv.url("/gate")
    );
    let srv = Server::start_with("", &allow_all_with("\"gate\"", &hook));
    recv.answer(500);
    let head = |repo: &str, d: &str| {
        srv.request("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"")
            .status
    };
    // Monolithic, small enough to be stored without a session.
    let small = b"small blob".to_vec();
    let ds = digest(&small);
    let path = format!("/v2/gated/app/blobs/uploads/?digest={ds}");
    let r = srv.request("POST", &path, &[], &small);
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(head("gated/app", &ds), 404);
    assert!(!blob_stored(&srv, &ds));
    let got = recv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["kind"], "blob.push");
    assert_eq!(got[0].json()["digest"], ds.as_str());
    assert_eq!(got[0].json()["size"], small.len());
    // A wrong digest is refused before the hook is asked.
    let wrong = format!("/v2/gated/app/blobs/uploads/?digest={}", digest(b"other"));
    let r = srv.request("POST", &wrong, &[], &small);
    assert_eq!(r.status, 400);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    assert_eq!(recv.received().len(), 1);
    // A chunked upload: POST, PATCH, then PUT with the digest.
    let big = bytes(9, 200_000);
    let db = digest(&big);
    let loc = srv.start_upload("gated/app");
    let r = srv.request("PATCH", &loc, &[], &big);
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    let r = srv.request("PUT", &format!("{loc}?digest={db}"), &[], b"");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(head("gated/app", &db), 404);
    assert!(!blob_stored(&srv, &db));
    assert_eq!(srv.get(&loc).status, 404, "the session is removed");
    assert_eq!(recv.received().len(), 2);
    assert_eq!(recv.received()[1].json()["size"], big.len());
    // A mount of a blob another repository has.
    let mounted = srv.push_blob("open/app", &big);
    let mount = format!("/v2/gated/app/blobs/uploads/?mount={mounted}&from=open/app");
    let r = srv.request("POST", &mount, &[], b"");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(head("gated/app", &mounted), 404);
    assert_eq!(recv.received().len(), 3);

    recv.answer(204);
    let r = srv.request("POST", &path, &[], &small);
    assert_eq!(r.status, 201);
    assert_eq!(head("gated/app", &ds), 200);
    let r = srv.request("POST", &mount, &[], b"");
    assert_eq!(r.status, 201);
    assert_eq!(head("gated/app", &db), 200);
    assert_eq!(recv.received().len(), 5);
}
