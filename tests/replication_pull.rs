//! Pull replication from a real upstream (CNCF distribution 2.8.2): an index with two
//! platforms and a signature arrives on schedule and pulls byte-identical, a tag moved
//! upstream moves here and a run with nothing new fetches no blob, filters and the prefix
//! hold, and two nodes on one bucket run one pull per schedule between them.

mod common;

use std::time::{Duration, Instant};

use common::replication::*;
use common::s3::Moto;
use common::upstream::{Upstream, UpstreamAuth};
use common::*;

/// How long a scheduled copy may take to show here in these tests.
const ARRIVES_WITHIN: Duration = Duration::from_secs(60);

/// A registry whose `[replication.up]` pulls from `up` with the given extra keys.
fn puller(up: &Upstream, keys: &str) -> Server {
    Server::start_with("", &pull_section(up, keys))
}

fn pull_section(up: &Upstream, keys: &str) -> String {
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [replication.up]\nurl = \"{}\"\ndirection = \"pull\"\n{keys}\n",
        up.url()
    )
}

/// A counter of this node's metrics (0 when absent).
fn metric(srv: &Server, line: &str) -> u64 {
    let text = String::from_utf8(srv.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

fn runs(srv: &Server) -> u64 {
    metric(
        srv,
        "origin_replication_pull_runs_succeeded_total{target=\"up\"}",
    )
}

struct Pushed {
    index: (Vec<u8>, String),
    children: Vec<(Vec<u8>, String)>,
    blobs: Vec<String>,
    signature: (Vec<u8>, String),
}

/// Pushes to the upstream an index tagged `tag` with two platforms sharing a layer, and a
/// signature whose subject is the index, listed under the tag schema's `sha256-<hex>` tag
/// (distribution 2.8.2 has no referrers API).
fn push_index(up: &Upstream, repo: &str, tag: &str, seed: u64) -> Pushed {
    let shared = bytes(seed, 300_000);
    let shared_d = up.push_blob(repo, &shared);
    let mut blobs = vec![shared_d.clone()];
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"seed\":{seed}}}");
        let config_d = up.push_blob(repo, config.as_bytes());
        let own = bytes(seed * 10 + i as u64, 4096 + i);
        let own_d = up.push_blob(repo, &own);
        blobs.extend([config_d.clone(), own_d.clone()]);
        let m = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_d}\",\"size\":{}}},\
             \"layers\":[{},{}]}}",
            config.len(),
            layer_desc(&shared_d, shared.len()),
            layer_desc(&own_d, own.len())
        );
        let d = up.push_manifest(repo, &digest(m.as_bytes()), OCI_MANIFEST, m.as_bytes());
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
    let index_d = up.push_manifest(repo, tag, OCI_INDEX, index.as_bytes());
    let sig_config = b"{}";
    let sig_config_d = up.push_blob(repo, sig_config);
    let payload =
        format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{index_d}\"}}}}}}");
    let payload_d = up.push_blob(repo, payload.as_bytes());
    blobs.extend([sig_config_d.clone(), payload_d.clone()]);
    let artifact = "application/vnd.dev.cosign.artifact.sig.v1+json";
    let sig = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"artifactType\":\"{artifact}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{sig_config_d}\",\"size\":2}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"{payload_d}\",\"size\":{}}}],\
         \"subject\":{{\"mediaType\":\"{OCI_INDEX}\",\"digest\":\"{index_d}\",\"size\":{}}}}}",
        payload.len(),
        index.len()
    );
    let sig_d = up.push_manifest(repo, &digest(sig.as_bytes()), OCI_MANIFEST, sig.as_bytes());
    // What an OCI 1.1 client pushes to a registry without the referrers API.
    let referrers = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{sig_d}\",\"size\":{},\"artifactType\":\"{artifact}\"}}]}}",
        sig.len()
    );
    let fallback = index_d.replacen(':', "-", 1);
    up.push_manifest(repo, &fallback, OCI_INDEX, referrers.as_bytes());
    Pushed {
        index: (index.into_bytes(), index_d),
        children,
        blobs,
        signature: (sig.into_bytes(), sig_d),
    }
}

fn origin_get(srv: &Server, path: &str) -> Resp {
    srv.request("GET", path, &[("Accept", ACCEPT)], b"")
}

fn head_digest(srv: &Server, repo: &str, tag: &str) -> Option<String> {
    let r = srv.request(
        "HEAD",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", ACCEPT)],
        b"",
    );
    (r.status == 200)
        .then(|| r.header("docker-content-digest").map(str::to_owned))
        .flatten()
}

#[test]
fn an_index_with_a_signature_arrives_on_schedule_byte_identical_and_moved_tags_move() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let p = push_index(&up, "team/app", "v1", 1);
    let srv = puller(
        &up,
        "schedule = \"1s\"\ntarget_prefix = \"mirror\"\nrepositories = [\"team/app\"]\n\
         tag_filter = [\"v.*\"]",
    );
    wait_until("the tag and its signature", ARRIVES_WITHIN, || {
        head_digest(&srv, "mirror/team/app", "v1").as_deref() == Some(p.index.1.as_str())
            && origin_get(
                &srv,
                &format!("/v2/mirror/team/app/manifests/{}", p.signature.1),
            )
            .status
                == 200
    });
    let repo = "mirror/team/app";
    let r = origin_get(&srv, &format!("/v2/{repo}/manifests/v1"));
    assert_eq!(r.body, p.index.0, "the index by tag");
    for (bytes, d) in p.children.iter().chain([&p.index, &p.signature]) {
        let r = origin_get(&srv, &format!("/v2/{repo}/manifests/{d}"));
        assert_eq!(r.status, 200, "{repo}@{d}");
        assert_eq!(&r.body, bytes, "{repo}@{d}");
    }
    for d in &p.blobs {
        let r = srv.get(&format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.status, 200, "blob {d}");
        assert_eq!(&digest(&r.body), d, "blob {d}");
    }
    // The signature follows its subject: this registry lists it as a referrer.
    let r = srv.get(&format!("/v2/{repo}/referrers/{}", p.index.1));
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains(p.signature.1.as_str()),
        "referrers: {:?}",
        r.json()
    );
    // The tag schema's tag is not a `v.*` tag: filtered out, not copied.
    let fallback = p.index.1.replacen(':', "-", 1);
    assert_eq!(head_digest(&srv, repo, &fallback), None);
    // Moved upstream, moved here at a later run.
    let (moved, _, _) = up.push_image("team/app", "v1", &bytes(99, 5000));
    wait_until("v1 to move", ARRIVES_WITHIN, || {
        head_digest(&srv, repo, "v1").as_deref() == Some(moved.as_str())
    });
    // Two whole runs after that: nothing new upstream, so no blob is fetched and the tag
    // counts as unchanged in each. The run that stored the move may still be finishing
    // (its tag is written before the run is counted), so three more runs counted from
    // here hold two that began after the move.
    let blob_gets = up.count_requests("GET", "/blobs/sha256:");
    let unchanged = || {
        metric(
            &srv,
            "origin_replication_pull_tags_unchanged_total{target=\"up\"}",
        )
    };
    let (done, unchanged_before) = (runs(&srv), unchanged());
    wait_until("three more runs", ARRIVES_WITHIN, || runs(&srv) >= done + 3);
    assert_eq!(
        up.count_requests("GET", "/blobs/sha256:"),
        blob_gets,
        "blob GETs upstream in runs with nothing new"
    );
    assert!(
        unchanged() >= unchanged_before + 2,
        "unchanged tags: {} before, {} after three runs",
        unchanged_before,
        unchanged()
    );
    assert!(metric(&srv, "origin_replication_pull_blobs_total{target=\"up\"}") >= 6);
    let (code, out) = srv.cli(&["replication", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("up (pull): last run"), "{out}");
    assert!(out.contains("tags unchanged 1, ok"), "{out}");
}

#[test]
fn filters_and_prefix_are_honoured_from_the_catalog() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let mut want = Vec::new();
    for (repo, tag, seed) in [
        ("team/app", "v1", 1),
        ("team/app", "v2", 2),
        ("team/app", "dev", 3),
        ("team/other", "v1", 4),
        ("lib/x", "v1", 5),
    ] {
        let (d, _, _) = up.push_image(repo, tag, &bytes(seed, 1000 + seed as usize));
        want.push((repo, tag, d));
    }
    let srv = puller(
        &up,
        "schedule = \"1s\"\ntarget_prefix = \"pre\"\nrepository_filter = [\"team/.*\"]\n\
         tag_filter = [\"v[0-9]+\"]",
    );
    wait_until("a run", ARRIVES_WITHIN, || runs(&srv) >= 1);
    for (repo, tag, d) in &want {
        let copied = repo.starts_with("team/") && tag.starts_with('v');
        let here = head_digest(&srv, &format!("pre/{repo}"), tag);
        match copied {
            true => assert_eq!(here.as_deref(), Some(d.as_str()), "pre/{repo}:{tag}"),
            false => assert_eq!(here, None, "pre/{repo}:{tag} is filtered out"),
        }
        assert_eq!(
            head_digest(&srv, repo, tag),
            None,
            "{repo} without the prefix"
        );
    }
    let catalog = String::from_utf8(srv.get("/v2/_catalog").body).unwrap();
    assert!(!catalog.contains("lib/x"), "{catalog}");
}

/// A pulled manifest is stored as a push is: the namespace's push targets get it, and an
/// immutable tag moved upstream is refused here (the run reports it, the tag stays).
#[test]
fn pulled_manifests_are_stored_as_pushes_are() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let peer = Server::start();
    let (d1, _, _) = up.push_image("team/app", "v1", &bytes(11, 2000));
    let extra = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nimmutable_tags = true\n\
         replications = [\"peer\"]\n\
         [replication.peer]\nurl = \"http://{}\"\n\
         [replication.up]\nurl = \"{}\"\ndirection = \"pull\"\nschedule = \"1s\"\n\
         repositories = [\"team/app\"]\n",
        peer.addr,
        up.url()
    );
    let srv = Server::start_with("", &extra);
    wait_until("v1 here and at the push target", ARRIVES_WITHIN, || {
        head_digest(&srv, "team/app", "v1").as_deref() == Some(d1.as_str())
            && head_digest(&peer, "team/app", "v1").as_deref() == Some(d1.as_str())
    });
    let (d2, _, _) = up.push_image("team/app", "v1", &bytes(12, 2000));
    wait_until(
        "the run to report the immutable tag",
        ARRIVES_WITHIN,
        || {
            let out = srv.cli(&["replication", "status"]).1;
            out.contains("failed (") && out.contains("team/app:v1") && out.contains("immutable")
        },
    );
    assert_ne!(d1, d2);
    assert_eq!(
        head_digest(&srv, "team/app", "v1").as_deref(),
        Some(d1.as_str())
    );
    assert!(
        metric(
            &srv,
            "origin_replication_pull_runs_failed_total{target=\"up\"}"
        ) >= 1
    );
}

/// A run that cannot reach the upstream records its error; a later run, once the upstream
/// is back, copies everything and records success.
#[test]
fn a_failed_run_is_visible_and_retried() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let (d, _, _) = up.push_image("team/app", "v1", &bytes(21, 2000));
    up.stop();
    let srv = puller(
        &up,
        "schedule = \"1s\"\ntimeout = \"2s\"\nrepositories = [\"team/app\"]",
    );
    wait_until("a failed run", ARRIVES_WITHIN, || {
        srv.cli(&["replication", "status"]).1.contains("failed (")
    });
    up.restart();
    wait_until(
        "the image after the upstream came back",
        ARRIVES_WITHIN,
        || head_digest(&srv, "team/app", "v1").as_deref() == Some(d.as_str()),
    );
    wait_until("a run that succeeded", ARRIVES_WITHIN, || {
        srv.cli(&["replication", "status"]).1.contains(", ok;")
    });
}

/// A pull target reloads with SIGHUP like the rest: the next run copies what the new
/// configuration names, and a shortened schedule applies at once (not after the old one).
#[test]
fn a_pull_target_reloads_with_sighup() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let (a, _, _) = up.push_image("team/a", "v1", &bytes(31, 1000));
    let (b, _, _) = up.push_image("team/b", "v1", &bytes(32, 1000));
    let mut srv = puller(&up, "schedule = \"1h\"\nrepositories = [\"team/a\"]");
    wait_until("team/a", ARRIVES_WITHIN, || {
        head_digest(&srv, "team/a", "v1").as_deref() == Some(a.as_str())
    });
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    let reloaded = text
        .replace(
            "repositories = [\"team/a\"]",
            "repositories = [\"team/b\"]\ntarget_prefix = \"re\"",
        )
        .replace("schedule = \"1h\"", "schedule = \"1s\"");
    std::fs::write(&srv.config_path, reloaded).unwrap();
    assert_eq!(srv.cli(&["check-config"]).0, 0);
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload");
    wait_until("re/team/b after the reload", ARRIVES_WITHIN, || {
        head_digest(&srv, "re/team/b", "v1").as_deref() == Some(b.as_str())
    });
    assert_eq!(head_digest(&srv, "re/team/a", "v1"), None);
}

/// `check-config` refuses what a pull target cannot do, naming the key.
#[test]
fn a_pull_target_is_checked_by_check_config() {
    let dir = TempDir::new("pull-check");
    let check = |keys: &str, referenced: bool| {
        let named = if referenced {
            "replications = [\"up\"]\n"
        } else {
            ""
        };
        let extra = format!(
            "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n{named}\
             [replication.up]\nurl = \"http://127.0.0.1:1\"\ndirection = \"pull\"\n{keys}\n"
        );
        let path = dir.0.join("check.toml");
        std::fs::write(&path, config_text(&dir.0, "", &extra)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, out) = check("schedule = \"15m\"", false);
    assert_eq!(code, 0, "{out}");
    for (keys, referenced, says) in [
        ("", false, "schedule: required"),
        ("schedule = \"15m\"\nmode = \"sync\"", false, "mode"),
        (
            "schedule = \"15m\"\nevents = [\"push\", \"delete\"]",
            false,
            "events",
        ),
        ("schedule = \"15m\"", true, "push targets only"),
        (
            "schedule = \"15m\"\nrepositories = [\"Bad Name\"]",
            false,
            "repositories[0]",
        ),
    ] {
        let (code, out) = check(keys, referenced);
        assert_ne!(code, 0, "{keys}: {out}");
        assert!(out.contains(says), "{keys}: {out}");
    }
}

#[test]
fn two_nodes_on_one_bucket_run_one_pull_per_schedule() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let Some(moto) = Moto::start("two_nodes_on_one_bucket_run_one_pull_per_schedule") else {
        return;
    };
    moto.create_bucket("shared");
    let (d, _, _) = up.push_image("team/app", "v1", &bytes(7, 3000));
    let schedule = Duration::from_secs(2);
    let extra = pull_section(&up, "schedule = \"2s\"\nrepositories = [\"team/app\"]");
    let started = Instant::now();
    let nodes: Vec<Server> = (0..2)
        .map(|_| Server::start_on_bucket("pull-node", &moto, "shared", &extra))
        .collect();
    let total = || nodes.iter().map(runs).sum::<u64>();
    wait_until("five runs between the nodes", ARRIVES_WITHIN, || {
        total() >= 5
    });
    let elapsed = started.elapsed();
    let n = total();
    // Each run lists the repository's tags once: every run is counted, none ran twice.
    let listings = up.count_requests("GET", "/v2/team/app/tags/list") as u64;
    assert!(
        listings >= n && listings <= n + 2,
        "{listings} tag listings for {n} runs"
    );
    // Runs start at least one schedule apart, whichever node runs them.
    let bound = elapsed.as_millis() as u64 / schedule.as_millis() as u64 + 2;
    assert!(
        n <= bound,
        "{n} runs in {elapsed:?} with a {schedule:?} schedule"
    );
    assert!(listings <= bound + 2, "{listings} listings in {elapsed:?}");
    for node in &nodes {
        assert_eq!(
            head_digest(node, "team/app", "v1").as_deref(),
            Some(d.as_str())
        );
        let (code, out) = node.cli(&["replication", "status"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("up (pull): last run"), "{out}");
    }
}
