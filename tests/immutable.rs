//! Immutable tags: a pushed tag never moves and is never deleted, decided by conditional
//! writes in storage (several connections, and several processes, agree without a lock).

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::upstream::{Upstream, UpstreamAuth};
use common::*;

const RULES: &str = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
    [[repository]]\nnamespace = \"rel\"\npolicy_default_allow = true\n\
    immutable_tags = true\nimmutable_tags_exclusions = [\"latest\", \"dev-.*\"]\n";

/// A minimal artifact manifest whose bytes differ by `n` (its config is the empty blob).
fn small_manifest(srv: &Server, repo: &str, n: usize) -> Vec<u8> {
    let empty = srv.push_blob(repo, b"{}");
    format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty}\",\"size\":2}},\
         \"layers\":[],\"annotations\":{{\"n\":\"{n}\"}}}}"
    )
    .into_bytes()
}

/// A second push of another manifest to an immutable tag is 409 naming the tag; the same
/// digest again is 201; DELETE of the tag or of its manifest is 409; excluded tags and other
/// namespaces stay mutable.
#[test]
fn immutable_tags_do_not_move_and_cannot_be_deleted() {
    let srv = Server::start_with("", RULES);
    let (first, d1) = srv.push_image("rel/app", "v1", &[bytes(1, 300)]);
    let other = small_manifest(&srv, "rel/app", 1);
    let r = srv.put_manifest("rel/app", "v1", OCI_MANIFEST, &other);
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.error_code(), "DENIED");
    assert!(String::from_utf8_lossy(&r.body).contains("tag v1"));
    assert_eq!(
        srv.get("/v2/rel/app/manifests/v1")
            .header("docker-content-digest"),
        Some(d1.as_str())
    );
    // A client retrying the same push succeeds.
    assert_eq!(
        srv.put_manifest("rel/app", "v1", OCI_MANIFEST, &first)
            .status,
        201
    );
    let r = srv.request("DELETE", "/v2/rel/app/manifests/v1", &[], b"");
    assert_eq!(r.status, 409);
    assert!(String::from_utf8_lossy(&r.body).contains("tag v1"));
    let r = srv.request("DELETE", &format!("/v2/rel/app/manifests/{d1}"), &[], b"");
    assert_eq!(
        r.status, 409,
        "a manifest named by an immutable tag was deleted"
    );
    assert_eq!(srv.get(&format!("/v2/rel/app/manifests/{d1}")).status, 200);
    // An unknown immutable tag is still 404 on DELETE.
    let r = srv.request("DELETE", "/v2/rel/app/manifests/v9", &[], b"");
    assert_eq!(r.status, 404);
    // Excluded tags move and delete.
    for tag in ["latest", "dev-7"] {
        assert_eq!(
            srv.put_manifest("rel/app", tag, OCI_MANIFEST, &first)
                .status,
            201
        );
        assert_eq!(
            srv.put_manifest("rel/app", tag, OCI_MANIFEST, &other)
                .status,
            201
        );
        let r = srv.request("DELETE", &format!("/v2/rel/app/manifests/{tag}"), &[], b"");
        assert_eq!(r.status, 202);
    }
    // Outside the namespace nothing changes.
    srv.push_image("scratch/app", "v1", &[bytes(1, 300)]);
    let other = small_manifest(&srv, "scratch/app", 1);
    assert_eq!(
        srv.put_manifest("scratch/app", "v1", OCI_MANIFEST, &other)
            .status,
        201
    );
    assert_eq!(
        srv.request("DELETE", "/v2/scratch/app/manifests/v1", &[], b"")
            .status,
        202
    );
}

/// Many connections push different manifests to one new immutable tag at once: exactly one
/// wins, every other gets 409, and the tag names the winner's manifest. Repeated over
/// several tags so the race is really run.
#[test]
fn concurrent_pushes_of_one_immutable_tag_have_one_winner() {
    const PUSHERS: usize = 8;
    const ROUNDS: usize = 5;
    let srv = Server::start_with("", RULES);
    let bodies: Vec<Vec<u8>> = (0..PUSHERS)
        .map(|n| small_manifest(&srv, "rel/race", n))
        .collect();
    for round in 0..ROUNDS {
        let tag = format!("r{round}");
        let barrier = Arc::new(Barrier::new(PUSHERS));
        let threads: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|body| {
                let (barrier, tag) = (barrier.clone(), tag.clone());
                let mut s = srv.connect();
                std::thread::spawn(move || {
                    barrier.wait();
                    send(
                        &mut s,
                        "PUT",
                        &format!("/v2/rel/race/manifests/{tag}"),
                        &[("Content-Type", OCI_MANIFEST)],
                        &body,
                    );
                    let r = read_response(&mut s, false).unwrap();
                    (r.status, digest(&body))
                })
            })
            .collect();
        let results: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter(|r| r.0 == 201).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(
            results.iter().all(|r| r.0 == 201 || r.0 == 409),
            "round {round}: {results:?}"
        );
        let r = srv.get(&format!("/v2/rel/race/manifests/{tag}"));
        assert_eq!(
            r.header("docker-content-digest"),
            Some(winners[0].1.as_str())
        );
    }
}

/// A mirrored namespace with immutable tags serves a cached tag without asking upstream again,
/// even after the freshness window (a mutable tag is revalidated with a HEAD then).
#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn mirrored_immutable_tags_are_served_from_the_cache() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let (m1, _, _) = up.push_image("library/app", "v1", b"first layer");
    up.push_image("library/app", "latest", b"first layer");
    let config = format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\n\
         immutable_tags = true\nimmutable_tags_exclusions = [\"latest\"]\n\
         [repository.mirror]\ntag_freshness = \"1h\"\n\
         [[repository.mirror.upstream]]\nurl = \"{}\"\ntimeout = \"5s\"\n",
        up.url()
    );
    let srv = Server::start_with("", &config);
    for tag in ["v1", "latest"] {
        let r = srv.get(&format!("/v2/up/library/app/manifests/{tag}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(
        srv.get("/v2/up/library/app/manifests/v1")
            .header("docker-content-digest"),
        Some(m1.as_str())
    );
    srv.advance_clock(Duration::from_secs(3600 + 1));
    for tag in ["v1", "latest"] {
        assert_eq!(
            srv.get(&format!("/v2/up/library/app/manifests/{tag}"))
                .status,
            200
        );
    }
    assert_eq!(
        up.wait_requests("HEAD", "/manifests/latest", 1, Duration::from_secs(5)),
        1,
        "the mutable tag was not revalidated"
    );
    assert_eq!(up.count_requests("HEAD", "/manifests/v1"), 0);
    assert_eq!(up.count_requests("GET", "/manifests/v1"), 1);
}

/// `check-config` rejects an exclusion that is not a regular expression, naming the key.
#[test]
fn check_config_rejects_a_bad_exclusion() {
    let srv = Server::start_with("", RULES);
    let bad = std::fs::read_to_string(&srv.config_path)
        .unwrap()
        .replace("\"dev-.*\"", "\"dev-(\"");
    let path = srv.dir.0.join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("repository[1].immutable_tags_exclusions[1]"),
        "{text}"
    );
}

/// A server with `RULES`, on fs or on a moto bucket, whose DELETE waits at failpoint `point`.
fn paused_server(point: &str, moto: Option<&common::s3::Moto>) -> Server {
    let dir = TempDir::new("immutable-race");
    let mut text = config_text(&dir.0, "", RULES);
    if let Some(m) = moto {
        let bucket = point.split('~').next().unwrap_or("race");
        m.create_bucket(bucket);
        text = with_storage(&text, &dir.0, &m.storage_section(bucket));
    }
    Server::start_config_env(dir, &text, &[("ORIGIN_FAILPOINT", point)])
}

/// A DELETE by digest paused at `point` while a push of the same manifest creates an
/// immutable tag: the push succeeds, and the tag and the manifest it names are there after
/// the DELETE ends, whatever the DELETE answered (409, or 202 when it was done first).
fn delete_racing_an_immutable_push(srv: &Server, what: &str) {
    let layer = bytes(11, 4000);
    // `latest` is excluded from the rules: the manifest is deletable when the DELETE starts.
    let (manifest, d) = srv.push_image("rel/app", "latest", std::slice::from_ref(&layer));
    let mut s = srv.connect();
    send(
        &mut s,
        "DELETE",
        &format!("/v2/rel/app/manifests/{d}"),
        &[],
        b"",
    );
    // The DELETE reaches its pause (seconds long) well before this.
    std::thread::sleep(Duration::from_millis(700));
    let put = srv.put_manifest("rel/app", "v1", OCI_MANIFEST, &manifest);
    assert_eq!(
        put.status,
        201,
        "{what}: {}",
        String::from_utf8_lossy(&put.body)
    );
    let del = read_response(&mut s, false).unwrap();
    assert!(
        del.status == 409 || del.status == 202,
        "{what}: DELETE answered {} {}",
        del.status,
        String::from_utf8_lossy(&del.body)
    );
    let got = srv.get("/v2/rel/app/manifests/v1");
    assert_eq!(
        got.status, 200,
        "{what}: the immutable tag pushed during the DELETE was lost (DELETE: {})",
        del.status
    );
    assert_eq!(
        got.header("docker-content-digest"),
        Some(d.as_str()),
        "{what}"
    );
    assert_eq!(
        srv.get(&format!("/v2/rel/app/manifests/{d}")).status,
        200,
        "{what}"
    );
    assert!(
        srv.get(&format!("/v2/rel/app/blobs/{}", digest(&layer)))
            .body
            == layer
    );
}

/// The race of a DELETE by digest with a push that creates an immutable tag naming the same
/// manifest, with the DELETE held at each of its steps in turn: after the request's first
/// check, between the check under its mark and the conditional removal, and after the
/// removal. The tag is never lost (before the check and the delete were one conditional
/// step, the first case deleted the new tag with the manifest).
#[test]
fn a_delete_racing_an_immutable_push_never_loses_the_tag() {
    for point in [
        "immutable-delete-after-precheck~3000",
        "immutable-delete-after-check~3000",
        "immutable-delete-after-remove~3000",
    ] {
        let srv = paused_server(point, None);
        delete_racing_an_immutable_push(&srv, point);
    }
}

/// The same race on S3 (moto): the mark is a conditional replace and the removal a
/// DeleteObject with `If-Match`.
#[test]
#[cfg_attr(origin_no_moto, ignore = "needs moto_server (scripts/moto.sh)")]
fn a_delete_racing_an_immutable_push_never_loses_the_tag_on_s3() {
    let Some(moto) = common::s3::Moto::start("immutable_delete_race") else {
        return;
    };
    for point in [
        "immutable-delete-after-precheck~3000",
        "immutable-delete-after-check~3000",
        "immutable-delete-after-remove~3000",
    ] {
        let srv = paused_server(point, Some(&moto));
        delete_racing_an_immutable_push(&srv, point);
    }
}
