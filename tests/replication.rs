//! Replication to real targets: CNCF distribution 2.8.2 and a second Origin. What arrives
//! pulls byte-identical (index, children, blobs, a signature referrer), tags move, deletions
//! replicate only where configured, a target that was down gets everything, two nodes on
//! one bucket run each job once, and `sync` mode fails a push the target refuses.

mod common;

use std::time::Duration;

use common::replication::*;
use common::s3::Moto;
use common::upstream::{Upstream, UpstreamAuth};
use common::*;

/// How long replication may take to show at a target in these tests.
const ARRIVES_WITHIN: Duration = Duration::from_secs(60);

/// What `push_index` pushed.
struct Pushed {
    index: (Vec<u8>, String),
    children: Vec<(Vec<u8>, String)>,
    blobs: Vec<String>,
    shared: String,
    signature: (Vec<u8>, String),
}

/// An index tagged `tag` with two platforms sharing a layer of `shared_len` bytes, and a
/// signature whose subject is the index (pushed by digest after it).
fn push_index(src: &Server, repo: &str, tag: &str, seed: u64, shared_len: usize) -> Pushed {
    let shared = bytes(seed, shared_len);
    let shared_d = src.push_blob(repo, &shared);
    let mut blobs = vec![shared_d.clone()];
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"seed\":{seed}}}");
        let config_d = src.push_blob(repo, config.as_bytes());
        let own = bytes(seed * 10 + i as u64, 4096 + i);
        let own_d = src.push_blob(repo, &own);
        blobs.extend([config_d.clone(), own_d.clone()]);
        let m = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\
             \"layers\":[{},{}]}}",
            config.len(),
            layer_desc(&shared_d, shared.len()),
            layer_desc(&own_d, own.len())
        );
        let d = digest(m.as_bytes());
        let r = src.put_manifest(repo, &d, OCI_MANIFEST, m.as_bytes());
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        descs.push(format!(
            "{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{},\
             \"platform\":{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}}}",
            m.len()
        ));
        children.push((m.into_bytes(), d));
    }
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
        descs.join(",")
    );
    let index_d = digest(index.as_bytes());
    let r = src.put_manifest(repo, tag, OCI_INDEX, index.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let sig_config = b"{}";
    let sig_config_d = src.push_blob(repo, sig_config);
    let payload =
        format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{index_d}\"}}}}}}");
    let payload_d = src.push_blob(repo, payload.as_bytes());
    blobs.extend([sig_config_d.clone(), payload_d.clone()]);
    let sig = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"artifactType\":\"application/vnd.dev.cosign.artifact.sig.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{sig_config_d}\",\"size\":2}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"{payload_d}\",\"size\":{}}}],\
         \"subject\":{{\"mediaType\":\"{OCI_INDEX}\",\"digest\":\"{index_d}\",\"size\":{}}}}}",
        payload.len(),
        index.len()
    );
    let sig_d = digest(sig.as_bytes());
    let r = src.put_manifest(repo, &sig_d, OCI_MANIFEST, sig.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    Pushed {
        index: (index.into_bytes(), index_d),
        children,
        blobs,
        shared: shared_d,
        signature: (sig.into_bytes(), sig_d),
    }
}

/// GET of a path at the distribution target (with its credentials, if any).
fn dist_get(up: &Upstream, repo: &str, path: &str) -> Resp {
    up.request_as(repo, "GET", path, &[("Accept", ACCEPT)], b"")
}

fn origin_get(peer: &Server, path: &str) -> Resp {
    peer.request("GET", path, &[("Accept", ACCEPT)], b"")
}

/// Checks that everything `p` pushed pulls byte-identical through `get` under `repo`.
fn assert_identical(p: &Pushed, repo: &str, tag: &str, get: &dyn Fn(&str) -> Resp) {
    let r = get(&format!("/v2/{repo}/manifests/{tag}"));
    assert_eq!(r.status, 200, "{repo}:{tag}");
    assert_eq!(r.body, p.index.0, "the index by tag");
    for (bytes, d) in p.children.iter().chain([&p.index, &p.signature]) {
        let r = get(&format!("/v2/{repo}/manifests/{d}"));
        assert_eq!(r.status, 200, "{repo}@{d}");
        assert_eq!(&r.body, bytes, "{repo}@{d}");
    }
    for d in &p.blobs {
        let r = get(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.status, 200, "blob {d} in {repo}");
        assert_eq!(&digest(&r.body), d, "blob {d} in {repo}");
    }
}

#[test]
fn an_index_with_two_platforms_and_a_signature_arrives_byte_identical_and_tags_move() {
    let Some(dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let peer = Server::start();
    let targets = format!(
        "[replication.dist]\nurl = \"{}\"\n\
         [replication.peer]\nurl = \"http://{}\"\ntarget_prefix = \"mirror\"\n",
        dist.url(),
        peer.addr
    );
    let src = source(&["dist", "peer"], &targets);
    // The shared layer is over one chunk: it goes in PATCHes.
    let p = push_index(&src, "team/app", "v1", 1, 9 * 1024 * 1024 + 17);
    let sig = &p.signature.1;
    wait_until(
        "the tag and the signature at distribution",
        ARRIVES_WITHIN,
        || {
            [
                format!("/v2/team/app/manifests/{sig}"),
                "/v2/team/app/manifests/v1".into(),
            ]
            .iter()
            .all(|path| dist_get(&dist, "team/app", path).status == 200)
        },
    );
    wait_until(
        "the tag and the signature at the peer",
        ARRIVES_WITHIN,
        || {
            [
                format!("/v2/mirror/team/app/manifests/{sig}"),
                "/v2/mirror/team/app/manifests/v1".into(),
            ]
            .iter()
            .all(|path| origin_get(&peer, path).status == 200)
        },
    );
    assert_identical(&p, "team/app", "v1", &|path| {
        dist_get(&dist, "team/app", path)
    });
    assert_identical(&p, "mirror/team/app", "v1", &|path| origin_get(&peer, path));
    // The signature follows its subject: the peer lists it as a referrer of the index.
    let r = peer.get(&format!("/v2/mirror/team/app/referrers/{}", p.index.1));
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains(sig.as_str()),
        "referrers: {:?}",
        r.json()
    );
    // The shared layer was uploaded once (by chunks), though two platforms (and the jobs of
    // the children pushed by digest) name it.
    let hex = p.shared.trim_start_matches("sha256:");
    assert_eq!(
        dist.count_requests("PUT", hex),
        1,
        "uploads of the shared layer"
    );
    assert!(dist.count_requests("PATCH", "/v2/team/app/blobs/uploads/") >= 2);
    // A re-tag moves the tag at the targets.
    let (_, moved) = src.push_image("team/app", "v1", &[bytes(99, 1000)]);
    wait_until("v1 to move at distribution", ARRIVES_WITHIN, || {
        let r = dist.request_as(
            "team/app",
            "HEAD",
            "/v2/team/app/manifests/v1",
            &[("Accept", ACCEPT)],
            b"",
        );
        r.header("docker-content-digest") == Some(moved.as_str())
    });
    wait_until("v1 to move at the peer", ARRIVES_WITHIN, || {
        let r = peer.request(
            "HEAD",
            "/v2/mirror/team/app/manifests/v1",
            &[("Accept", ACCEPT)],
            b"",
        );
        r.header("docker-content-digest") == Some(moved.as_str())
    });
    let metrics = String::from_utf8(src.get("/metrics").body).unwrap();
    for line in [
        "origin_replication_blobs_sent_total{target=\"dist\"}",
        "origin_replication_bytes_sent_total{target=\"peer\"}",
        "origin_replication_jobs_succeeded_total{target=\"dist\"}",
        "origin_replication_queue_depth{target=\"peer\"}",
    ] {
        let v: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{line} missing"));
        if !line.contains("queue_depth") {
            assert!(v > 0, "{line} {v}");
        }
    }
    wait_until("an empty queue", ARRIVES_WITHIN, || {
        let (code, out) = src.cli(&["replication", "status"]);
        code == 0 && out.contains("dist: pending 0") && out.contains("peer: pending 0")
    });
}

#[test]
fn deletes_replicate_only_where_configured() {
    let peer = Server::start();
    let targets = format!(
        "[replication.del]\nurl = \"http://{0}\"\ntarget_prefix = \"d\"\nevents = [\"push\", \"delete\"]\n\
         [replication.keep]\nurl = \"http://{0}\"\ntarget_prefix = \"k\"\n",
        peer.addr
    );
    let src = source(&["del", "keep"], &targets);
    let (_, d) = src.push_image("app", "v1", &[bytes(5, 2000)]);
    src.push_image("app", "v2", &[bytes(6, 2000)]);
    for prefix in ["d", "k"] {
        wait_until("both tags at both targets", ARRIVES_WITHIN, || {
            ["v1", "v2"]
                .iter()
                .all(|t| peer.get(&format!("/v2/{prefix}/app/manifests/{t}")).status == 200)
        });
    }
    assert_eq!(
        src.request("DELETE", "/v2/app/manifests/v2", &[], b"")
            .status,
        202
    );
    assert_eq!(
        src.request("DELETE", &format!("/v2/app/manifests/{d}"), &[], b"")
            .status,
        202
    );
    wait_until(
        "the deletions at the target that replicates them",
        ARRIVES_WITHIN,
        || {
            peer.get("/v2/d/app/manifests/v2").status == 404
                && peer.get(&format!("/v2/d/app/manifests/{d}")).status == 404
        },
    );
    wait_until("an empty queue", ARRIVES_WITHIN, || {
        src.cli(&["replication", "status"])
            .1
            .contains("del: pending 0")
    });
    assert_eq!(peer.get("/v2/k/app/manifests/v2").status, 200);
    assert_eq!(peer.get(&format!("/v2/k/app/manifests/{d}")).status, 200);
    assert_eq!(peer.get("/v2/k/app/manifests/v1").status, 200);
}

/// Pushes made while the target is down wait in storage, retrying with backoff, survive a
/// SIGKILL of the source in the middle of an attempt, and all arrive once the target is back:
/// the restarted server (the root's one owner) does not wait out the lease of the job the
/// killed one held (minutes) before it takes it up again. On the filesystem in every run: on
/// shared storage (S3) a node cannot tell a dead node's claim from a live one's, and waits
/// out the lease (`src/replication/tests.rs` takes an expired lease over).
#[test]
fn a_target_down_for_a_while_gets_everything_once_back() {
    let Some(mut dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    // An attempt waits for an answer up to its timeout: long enough that the kill below
    // comes while the first one is still waiting, and a tenth of the jobs' lease.
    let targets = format!(
        "[replication.dist]\nurl = \"{}\"\ntimeout = \"12s\"\nretry_backoff_max = \"1s\"\n",
        dist.url()
    );
    let src = fs_source(&["dist"], &targets);
    dist.stop();
    let tags = ["a", "b", "c"];
    let digests: Vec<String> = tags
        .iter()
        .enumerate()
        .map(|(i, t)| src.push_image("svc", t, &[bytes(20 + i as u64, 3000)]).1)
        .collect();
    // Down at first: the connections are refused, and the jobs wait in storage, retrying...
    wait_until("failed attempts", ARRIVES_WITHIN, || {
        let out = src.cli(&["replication", "status"]).1;
        out.contains("dist: pending 3") && !out.contains("retrying 0")
    });
    // ...then a listener that never answers takes the port: an attempt hangs, holding its
    // job's claim, when the source is killed.
    let hole = std::net::TcpListener::bind(dist.addr()).expect("bind the target's port");
    wait_until("an attempt in flight", ARRIVES_WITHIN, || {
        let out = src.cli(&["replication", "status"]).1;
        out.contains("dist: pending 3") && !out.contains("running 0")
    });
    let mut src = src;
    src.signal(libc::SIGKILL);
    let _ = src.wait_exit(Duration::from_secs(10));
    drop(hole);
    dist.restart();
    let src = src.restart();
    for (t, d) in tags.iter().zip(&digests) {
        wait_until(
            "every tag after the target came back",
            ARRIVES_WITHIN,
            || {
                let r = dist.request(
                    "HEAD",
                    &format!("/v2/svc/manifests/{t}"),
                    &[("Accept", ACCEPT)],
                    b"",
                );
                r.header("docker-content-digest") == Some(d.as_str())
            },
        );
    }
    wait_until("an empty queue", ARRIVES_WITHIN, || {
        let out = src.cli(&["replication", "status"]).1;
        out.contains("dist: pending 0") && out.contains("failed 0")
    });
}

#[test]
fn two_nodes_on_one_bucket_run_each_job_once() {
    let Some(mut dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let Some(moto) = Moto::start("two_nodes_on_one_bucket_run_each_job_once") else {
        return;
    };
    moto.create_bucket("shared");
    let extra = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [\"dist\"]\n\
         [replication.dist]\nurl = \"{}\"\ntimeout = \"2s\"\nretry_backoff_max = \"1s\"\n",
        dist.url()
    );
    let nodes: Vec<Server> = (0..2)
        .map(|_| Server::start_on_bucket("repl-node", &moto, "shared", &extra))
        .collect();
    // Pushed while the target is down: both nodes then see every job due again and again
    // (after each backoff) and race to claim it.
    dist.stop();
    let n = 8;
    let mut pushed = Vec::new();
    for i in 0..n {
        let node = &nodes[i % 2];
        let (_, d) = node.push_image("multi", &format!("t{i}"), &[bytes(40 + i as u64, 2048)]);
        pushed.push(d);
    }
    wait_until("failed attempts", ARRIVES_WITHIN, || {
        !nodes[1]
            .cli(&["replication", "status"])
            .1
            .contains("retrying 0")
    });
    dist.restart();
    for (i, d) in pushed.iter().enumerate() {
        wait_until("every tag at the target", ARRIVES_WITHIN, || {
            let r = dist.request(
                "HEAD",
                &format!("/v2/multi/manifests/t{i}"),
                &[("Accept", ACCEPT)],
                b"",
            );
            r.header("docker-content-digest") == Some(d.as_str())
        });
    }
    wait_until("an empty queue", ARRIVES_WITHIN, || {
        nodes[0]
            .cli(&["replication", "status"])
            .1
            .contains("dist: pending 0")
    });
    // Each job ran once: one PUT of each tag, one of each manifest by digest, one upload of
    // each layer.
    for (i, d) in pushed.iter().enumerate() {
        assert_eq!(
            dist.count_requests("PUT", &format!("/v2/multi/manifests/t{i}")),
            1,
            "t{i}"
        );
        assert_eq!(
            dist.count_requests("PUT", &format!("/v2/multi/manifests/{d}")),
            1,
            "{d}"
        );
        let layer = digest(&bytes(40 + i as u64, 2048));
        assert_eq!(
            dist.count_requests("PUT", layer.trim_start_matches("sha256:")),
            1,
            "layer {i}"
        );
    }
}

#[test]
fn sync_mode_acknowledges_only_what_the_target_has_and_fails_cleanly_when_refused() {
    let Some(dist) = Upstream::start(UpstreamAuth::basic("robot", "s3cret")) else {
        return;
    };
    let dir = TempDir::new("secret");
    let secret = dir.0.join("password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let good = source(
        &["dist"],
        &format!(
            "[replication.dist]\nurl = \"{}\"\nmode = \"sync\"\nusername = \"robot\"\npassword_file = \"{}\"\n",
            dist.url(),
            secret.display()
        ),
    );
    let (body, d) = good.push_image("sync/app", "v1", &[bytes(60, 5000)]);
    // Acknowledged: the target has it already, with no waiting.
    let r = dist_get(&dist, "sync/app", "/v2/sync/app/manifests/v1");
    assert_eq!((r.status, r.body), (200, body));
    // The job the copy ran under is gone with its success.
    let (code, out) = good.cli(&["replication", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dist: pending 0"), "{out}");
    let bad = source(
        &["dist"],
        &format!(
            "[replication.dist]\nurl = \"{}\"\nmode = \"sync\"\nusername = \"robot\"\npassword = \"wrong\"\n\
             retry_backoff_max = \"1h\"\n",
            dist.url()
        ),
    );
    let layer = bytes(61, 5000);
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let (ld, cd) = (
        bad.push_blob("sync/other", &layer),
        bad.push_blob("sync/other", config),
    );
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cd}\",\"size\":{}}},\
         \"layers\":[{}]}}",
        config.len(),
        layer_desc(&ld, layer.len())
    );
    let r = bad.put_manifest("sync/other", "v1", OCI_MANIFEST, m.as_bytes());
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("replication to dist failed"), "{text}");
    assert!(text.contains("401"), "{text}");
    assert_eq!(
        dist_get(&dist, "sync/other", "/v2/sync/other/manifests/v1").status,
        404
    );
    let _ = d;
    // Not lost: the job waits in storage for the target to accept it.
    let (code, out) = bad.cli(&["replication", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dist: pending 1"), "{out}");
}

#[test]
fn targets_reload_with_sighup_and_check_config_names_bad_keys() {
    let peer = Server::start();
    let targets = format!(
        "[replication.a]\nurl = \"http://{}\"\ntarget_prefix = \"a\"\n",
        peer.addr
    );
    let mut src = source(&["a"], &targets);
    src.push_image("app", "one", &[bytes(70, 100)]);
    wait_until("the first push at target a", ARRIVES_WITHIN, || {
        peer.get("/v2/a/app/manifests/one").status == 200
    });
    // check-config rejects a bad target, naming the key; the server keeps its set.
    let text = std::fs::read_to_string(&src.config_path).unwrap();
    let bad = text.replace(
        "target_prefix = \"a\"",
        "target_prefix = \"a\"\nconcurrency = 0",
    );
    std::fs::write(&src.config_path, &bad).unwrap();
    let (code, out) = src.cli(&["check-config"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("replication.a.concurrency"), "{out}");
    // A reload replaces the targets: pushes now go to b.
    let reloaded = text
        .replace("replications = [\"a\"]", "replications = [\"b\"]")
        .replace("[replication.a]", "[replication.b]")
        .replace("target_prefix = \"a\"", "target_prefix = \"b\"");
    std::fs::write(&src.config_path, reloaded).unwrap();
    assert_eq!(src.cli(&["check-config"]).0, 0);
    src.signal(libc::SIGHUP);
    src.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload");
    src.push_image("app", "two", &[bytes(71, 100)]);
    wait_until("the second push at target b", ARRIVES_WITHIN, || {
        peer.get("/v2/b/app/manifests/two").status == 200
    });
    assert_eq!(peer.get("/v2/a/app/manifests/two").status, 404);
}

#[test]
fn a_target_behind_a_token_service_gets_pushes_with_tokens_for_push_scopes() {
    let Some(dist) = Upstream::start(UpstreamAuth::token_with_basic("robot", "pw")) else {
        return;
    };
    let targets = format!(
        "[replication.dist]\nurl = \"{}\"\nusername = \"robot\"\npassword_env = \"REPL_TEST_PASSWORD\"\n",
        dist.url()
    );
    let list = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [\"dist\"]\n";
    let dir = TempDir::new("repl-token");
    let text = config_text(&dir.0, "", &format!("{list}{targets}"));
    let src = Server::start_config_env(dir, &text, &[("REPL_TEST_PASSWORD", "pw")]);
    let (body, _) = src.push_image("tok/app", "v1", &[bytes(80, 3000)]);
    wait_until("the push behind the token service", ARRIVES_WITHIN, || {
        dist_get(&dist, "tok/app", "/v2/tok/app/manifests/v1").status == 200
    });
    assert_eq!(
        dist_get(&dist, "tok/app", "/v2/tok/app/manifests/v1").body,
        body
    );
    let asked = dist.token_request_log();
    assert!(
        asked.iter().any(|q| q.contains("pull%2Cpush")),
        "token requests: {asked:?}"
    );
}

#[test]
fn a_retention_pass_from_the_command_line_replicates_its_deletions() {
    let peer = Server::start();
    let extra = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [\"peer\"]\n\
         retention = [\"image.tag != null && image.tag.startsWith('keep')\"]\n\
         [replication.peer]\nurl = \"http://{}\"\nevents = [\"push\", \"delete\"]\n",
        peer.addr
    );
    let src = Server::start_with("", &extra);
    let (_, dropped) = src.push_image("ret", "drop1", &[bytes(90, 500)]);
    src.push_image("ret", "keep1", &[bytes(91, 500)]);
    wait_until("both tags at the target", ARRIVES_WITHIN, || {
        ["drop1", "keep1"]
            .iter()
            .all(|t| peer.get(&format!("/v2/ret/manifests/{t}")).status == 200)
    });
    // `origin scrub --retention` is another process: its jobs go to storage, and the
    // server's worker finds them at its next scan.
    let (code, out) = src.cli(&["scrub", "--retention"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&dropped), "{out}");
    wait_until(
        "the retention deletion at the target",
        ARRIVES_WITHIN,
        || {
            peer.get("/v2/ret/manifests/drop1").status == 404
                && peer.get(&format!("/v2/ret/manifests/{dropped}")).status == 404
        },
    );
    assert_eq!(peer.get("/v2/ret/manifests/keep1").status, 200);
}

/// The address the ops listener logged.
fn ops_addr(srv: &mut Server) -> std::net::SocketAddr {
    let line = srv
        .logs_until("ops endpoints listening on ", Duration::from_secs(5))
        .expect("ops listener");
    line.split("ops endpoints listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("ops address")
}

/// A job that fails for good is a `replication.failed` webhook event (target, attempts,
/// error), and is in the admin report: `/admin/replication` on the ops listener (never on
/// the main one) and `origin replication status --json`, which agree.
#[test]
fn a_job_that_fails_for_good_is_an_event_and_in_the_admin_report() {
    use common::receiver::Receiver;
    let refusing = Receiver::start();
    refusing.answer(500);
    let hooks = Receiver::start();
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         replications = [\"broken\"]\nevent_webhooks = [\"ops\"]\n\n\
         [replication.broken]\nurl = \"{}\"\ntimeout = \"2s\"\nmax_retries = 1\n\
         retry_backoff_max = \"1s\"\n\n\
         [event_webhook.ops]\nurl = \"{}\"\nevents = [\"replication.failed\"]\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        refusing.url(""),
        hooks.url("/hook")
    );
    let mut src = Server::start_with("", &config);
    let ops = ops_addr(&mut src);
    let (_, d) = src.push_image("fails/app", "v1", &[bytes(70, 3000)]);
    let got = hooks.wait_for(ARRIVES_WITHIN, |got| !got.is_empty());
    let event = got[0].json();
    assert_eq!(event["kind"], "replication.failed", "{event}");
    assert_eq!(event["repository"], "fails/app");
    assert_eq!(event["tag"], "v1");
    assert_eq!(event["digest"], d.as_str());
    assert_eq!(event["actor"]["kind"], "replication");
    assert_eq!(event["replication"]["target"], "broken");
    assert_eq!(event["replication"]["job"], "push");
    assert_eq!(event["replication"]["attempts"], 2, "{event}");
    let error = event["replication"]["error"].as_str().unwrap_or("");
    assert!(error.contains("500"), "{event}");
    // Only the failure is sent: this webhook asked for nothing else.
    assert_eq!(got.len(), 1, "{got:?}");

    let mut s = std::net::TcpStream::connect(ops).unwrap();
    send(&mut s, "GET", "/admin/replication", &[], b"");
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let broken = &report["targets"]["broken"];
    assert_eq!(broken["pending"], 0, "{report}");
    assert_eq!(broken["failed"], 1, "{report}");
    let job = &broken["failed_jobs"][0];
    assert_eq!(job["repository"], "fails/app");
    assert_eq!(job["reference"], "v1");
    assert_eq!(job["attempts"], 2);
    assert!(
        job["error"].as_str().unwrap_or("").contains("500"),
        "{report}"
    );
    // The command line says the same.
    let (code, out) = src.cli(&["replication", "status", "--json"]);
    assert_eq!(code, 0, "{out}");
    // The report is the first line (stdout; logs, if any, follow on stderr).
    let cli: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap();
    assert_eq!(cli["targets"]["broken"], report["targets"]["broken"]);
    // Not on the main listener: it names repositories and errors.
    assert_eq!(src.get("/admin/replication").status, 404);
}
