//! The reconcile pass against real targets (CNCF distribution 2.8.2 and a second Origin): a
//! target whose storage was wiped gets everything back byte-identical, a tag moved at the
//! target by someone else moves back, tags the source no longer has are deleted at the
//! target only with `delete` events, and two nodes on one bucket run one pass per interval.

mod common;

use std::time::Duration;

use common::replication::*;
use common::s3::Moto;
use common::upstream::{Upstream, UpstreamAuth};
use common::*;

/// How long a repair may take to show at a target (passes every second or so here).
const REPAIRED_WITHIN: Duration = Duration::from_secs(60);

/// The value of the series `line` (name and labels) in the server's metrics, 0 if absent.
fn metric(srv: &Server, line: &str) -> u64 {
    let text = String::from_utf8(srv.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

fn runs(srv: &Server, target: &str) -> u64 {
    ["ok", "partial", "error"]
        .iter()
        .map(|o| {
            metric(
                srv,
                &format!(
                    "origin_replication_reconcile_runs_total{{target=\"{target}\",outcome=\"{o}\"}}"
                ),
            )
        })
        .sum()
}

fn dist_digest(dist: &Upstream, repo: &str, tag: &str) -> Option<String> {
    let r = dist.request(
        "HEAD",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", ACCEPT)],
        b"",
    );
    (r.status == 200).then(|| r.header("docker-content-digest").unwrap_or("").to_string())
}

#[test]
fn reconcile_restores_a_target_whose_storage_was_wiped() {
    let Some(mut dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let targets = format!(
        "[replication.dist]\nurl = \"{}\"\ntimeout = \"2s\"\nretry_backoff_max = \"1s\"\n\
         reconcile_interval = \"1s\"\n",
        dist.url()
    );
    let src = source(&["dist"], &targets);
    let mut pushed = Vec::new();
    for (i, (repo, tag)) in [
        ("wiped/app", "v1"),
        ("wiped/app", "v2"),
        ("other", "latest"),
    ]
    .iter()
    .enumerate()
    {
        let layers = vec![bytes(300 + i as u64, 5000 + i), bytes(310 + i as u64, 700)];
        let (body, d) = src.push_image(repo, tag, &layers);
        pushed.push((repo.to_string(), tag.to_string(), body, d, layers));
    }
    for (repo, tag, _, d, _) in &pushed {
        wait_until("every tag at the target", REPAIRED_WITHIN, || {
            dist_digest(&dist, repo, tag).as_deref() == Some(d.as_str())
        });
    }
    // The target loses everything: stopped, its storage removed, started on the same port.
    dist.stop();
    std::fs::remove_dir_all(dist.dir.0.join("data")).unwrap();
    dist.restart();
    assert_eq!(dist_digest(&dist, "wiped/app", "v1"), None);
    for (repo, tag, _, d, _) in &pushed {
        wait_until("every tag back at the target", REPAIRED_WITHIN, || {
            dist_digest(&dist, repo, tag).as_deref() == Some(d.as_str())
        });
    }
    // Byte-identical: manifests by tag and by digest, every blob.
    for (repo, tag, body, d, layers) in &pushed {
        for reference in [tag, d] {
            let r = dist.request(
                "GET",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("Accept", ACCEPT)],
                b"",
            );
            assert_eq!((r.status, &r.body), (200, body), "{repo}:{reference}");
        }
        for layer in layers {
            let r = dist.get(repo, &format!("/v2/{repo}/blobs/{}", digest(layer)));
            assert_eq!((r.status, &r.body), (200, layer), "a layer of {repo}");
        }
    }
    assert!(
        metric(
            &src,
            "origin_replication_reconcile_drift_total{target=\"dist\",kind=\"missing\"}"
        ) >= 3
    );
    wait_until("the status to show the passes", REPAIRED_WITHIN, || {
        let (code, out) = src.cli(&["replication", "status"]);
        code == 0 && out.contains("dist: pending 0") && out.contains("  reconciled: ")
    });
}

#[test]
fn reconcile_moves_back_a_tag_moved_at_the_target() {
    let Some(dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let targets = format!(
        "[replication.dist]\nurl = \"{}\"\nreconcile_interval = \"1s\"\n",
        dist.url()
    );
    let src = source(&["dist"], &targets);
    let (body, d) = src.push_image("moved/app", "v1", &[bytes(400, 3000)]);
    wait_until("the tag at the target", REPAIRED_WITHIN, || {
        dist_digest(&dist, "moved/app", "v1").as_deref() == Some(d.as_str())
    });
    // Someone pushes another image under the same tag at the target.
    let (other, _, _) = dist.push_image("moved/app", "v1", &bytes(401, 2000));
    assert_ne!(other, d);
    wait_until("the tag moved back", REPAIRED_WITHIN, || {
        dist_digest(&dist, "moved/app", "v1").as_deref() == Some(d.as_str())
    });
    let r = dist.request(
        "GET",
        "/v2/moved/app/manifests/v1",
        &[("Accept", ACCEPT)],
        b"",
    );
    assert_eq!((r.status, r.body), (200, body));
    assert!(
        metric(
            &src,
            "origin_replication_reconcile_drift_total{target=\"dist\",kind=\"moved\"}"
        ) >= 1
    );
}

#[test]
fn reconcile_deletes_at_the_target_only_with_delete_events() {
    let peer = Server::start();
    let targets = format!(
        "[replication.del]\nurl = \"http://{0}\"\ntarget_prefix = \"d\"\nevents = [\"push\", \"delete\"]\n\
         reconcile_interval = \"1s\"\n\
         [replication.keep]\nurl = \"http://{0}\"\ntarget_prefix = \"k\"\nreconcile_interval = \"1s\"\n",
        peer.addr
    );
    let src = source(&["del", "keep"], &targets);
    src.push_image("app", "v1", &[bytes(500, 2000)]);
    src.push_image("app", "v2", &[bytes(501, 2000)]);
    for prefix in ["d", "k"] {
        wait_until("both tags at both targets", REPAIRED_WITHIN, || {
            ["v1", "v2"]
                .iter()
                .all(|t| peer.get(&format!("/v2/{prefix}/app/manifests/{t}")).status == 200)
        });
    }
    // A tag at the targets that the source never had (so never deleted through a job)...
    // (More than one page of the target's tags list: it is paged with `n` and `last`.)
    let strays: Vec<String> = (0..150).map(|i| format!("stray{i:03}")).collect();
    for prefix in ["d", "k"] {
        let repo = format!("{prefix}/app");
        let (body, _) = peer.push_image(&repo, "stray", &[bytes(502, 100)]);
        for t in &strays {
            let r = peer.put_manifest(&repo, t, OCI_MANIFEST, &body);
            assert_eq!(r.status, 201);
        }
    }
    // ...and, on the filesystem, a tag gone from the source with no job recorded (as when a
    // process dies between the two).
    let removed = !storage_on_s3();
    if removed {
        let link = src.dir.0.join("data/repositories/app/_manifests/tags/v2");
        std::fs::remove_file(&link).unwrap();
    }
    wait_until(
        "the deletions at the target with delete events",
        REPAIRED_WITHIN,
        || {
            peer.get("/v2/d/app/manifests/stray").status == 404
                && peer.get("/v2/d/app/manifests/stray149").status == 404
                && (!removed || peer.get("/v2/d/app/manifests/v2").status == 404)
        },
    );
    assert_eq!(peer.get("/v2/d/app/manifests/v1").status, 200);
    for t in &strays {
        assert_eq!(
            peer.get(&format!("/v2/d/app/manifests/{t}")).status,
            404,
            "{t}"
        );
    }
    assert!(
        metric(
            &src,
            "origin_replication_reconcile_drift_total{target=\"del\",kind=\"deleted\"}"
        ) >= 1
    );
    // Two more passes of the other target end: one started after the changes, and kept
    // what is there.
    let before = runs(&src, "keep");
    wait_until("two more passes of keep", REPAIRED_WITHIN, || {
        runs(&src, "keep") >= before + 2
    });
    for t in ["v1", "v2", "stray", "stray149"] {
        assert_eq!(
            peer.get(&format!("/v2/k/app/manifests/{t}")).status,
            200,
            "{t}"
        );
    }
    assert_eq!(
        metric(
            &src,
            "origin_replication_reconcile_drift_total{target=\"keep\",kind=\"deleted\"}"
        ),
        0
    );
}

#[test]
fn two_nodes_on_one_bucket_run_one_reconcile_pass_per_interval() {
    let Some(dist) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let Some(moto) = Moto::start("two_nodes_on_one_bucket_run_one_reconcile_pass_per_interval")
    else {
        return;
    };
    moto.create_bucket("shared");
    // A long interval: the nodes race for the first pass at start, then none is due.
    let extra = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nreplications = [\"dist\"]\n\
         [replication.dist]\nurl = \"{}\"\nreconcile_interval = \"1h\"\n",
        dist.url()
    );
    let nodes: Vec<Server> = (0..2)
        .map(|_| Server::start_on_bucket("recon-node", &moto, "shared", &extra))
        .collect();
    let last = "origin_replication_reconcile_last_run_timestamp_seconds{target=\"dist\"}";
    // Both nodes have read the record of a finished pass (so each has had its turn).
    wait_until("both nodes to see a finished pass", REPAIRED_WITHIN, || {
        nodes.iter().all(|n| metric(n, last) > 0)
    });
    assert_eq!(metric(&nodes[0], last), metric(&nodes[1], last));
    let total: u64 = nodes.iter().map(|n| runs(n, "dist")).sum();
    assert_eq!(total, 1, "reconcile passes run by the two nodes");
    let (code, out) = nodes[1].cli(&["replication", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  reconciled: "), "{out}");
    assert!(!out.contains("reconciled: never"), "{out}");
}

#[test]
fn check_config_names_a_bad_reconcile_interval() {
    let peer = Server::start();
    let targets = format!(
        "[replication.p]\nurl = \"http://{}\"\nreconcile_interval = \"0\"\n",
        peer.addr
    );
    let src = source(&["p"], &targets);
    assert_eq!(src.cli(&["check-config"]).0, 0, "0 turns the pass off");
    let text = std::fs::read_to_string(&src.config_path).unwrap();
    let bad = text.replace(
        "reconcile_interval = \"0\"",
        "reconcile_interval = \"500ms\"",
    );
    std::fs::write(&src.config_path, bad).unwrap();
    let (code, out) = src.cli(&["check-config"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("replication.p.reconcile_interval"), "{out}");
    // Off: no pass runs.
    std::fs::write(&src.config_path, text).unwrap();
    let (code, out) = src.cli(&["replication", "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("reconciled: never"), "{out}");
}
