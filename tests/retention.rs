//! Retention rules: `origin scrub --retention [--dry-run]` and the online pass with GC,
//! with push and pull times written into the past (no sleeps of days).

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::receiver::Receiver;
use common::*;

const DAY: u64 = 86_400;

struct Repo<'a> {
    srv: &'a Server,
    name: &'a str,
    empty: String,
}

impl<'a> Repo<'a> {
    fn new(srv: &'a Server, name: &'a str) -> Repo<'a> {
        let empty = srv.push_blob(name, b"{}");
        Repo { srv, name, empty }
    }

    /// Pushes a small manifest (distinct by `n`, with an optional subject) under `reference`
    /// or its digest; returns (digest, size).
    fn manifest(
        &self,
        n: &str,
        reference: Option<&str>,
        subject: Option<&(String, usize)>,
    ) -> (String, usize) {
        let subject = subject.map_or(String::new(), |(d, size)| {
            format!(",\"subject\":{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{size}}}")
        });
        let body = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{}\",\"size\":2}},\
             \"layers\":[],\"annotations\":{{\"n\":\"{n}\"}}{subject}}}",
            self.empty
        );
        self.put(reference, OCI_MANIFEST, body.as_bytes())
    }

    fn index(&self, reference: &str, children: &[&(String, usize)]) -> (String, usize) {
        let list: Vec<String> = children
            .iter()
            .map(|(d, s)| {
                format!("{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{d}\",\"size\":{s}}}")
            })
            .collect();
        let body = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[{}]}}",
            list.join(",")
        );
        self.put(Some(reference), OCI_INDEX, body.as_bytes())
    }

    fn put(&self, reference: Option<&str>, media_type: &str, body: &[u8]) -> (String, usize) {
        let d = digest(body);
        let r = self
            .srv
            .put_manifest(self.name, reference.unwrap_or(&d), media_type, body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        (d, body.len())
    }

    fn status(&self, d: &str) -> u16 {
        self.srv
            .get(&format!("/v2/{}/manifests/{d}", self.name))
            .status
    }

    fn revision(&self, d: &(String, usize)) -> std::path::PathBuf {
        let hex = d.0.strip_prefix("sha256:").unwrap();
        self.srv.dir.0.join(format!(
            "data/repositories/{}/_manifests/revisions/sha256/{hex}",
            self.name
        ))
    }

    /// Moves a manifest's push time `days` into the past (the revision link's mtime).
    fn age(&self, d: &(String, usize), days: u64) {
        let path = self.revision(d);
        assert!(path.exists(), "{}", path.display());
        set_mtime(&path, days);
    }
}

fn set_mtime(path: &std::path::Path, days_ago: u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - days_ago * DAY;
    let ok = Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

const RULES: &str = "retention = [\
    \"image.tag != null && image.tag.startsWith('release-')\", \
    \"now - image.pushed_at < days(7)\", \
    \"top_pulled(1)\"]\n\
    immutable_tags = true\nimmutable_tags_exclusions = [\"old-.*\", \"new\", \"release-.*\"]\n";

/// The dry run lists exactly what the rules do not keep; the real run deletes it (and its
/// referrers), prints repository, digest and tags, and sends manifest.delete and tag.delete
/// events with the retention actor. Kept: rule matches, recent pushes, the most recently
/// pulled, immutable tags, index children of a kept index, and the children of a deleted index
/// (judged on their own by the next pass).
#[test]
fn scrub_retention_deletes_what_no_rule_keeps() {
    let recv = Receiver::start();
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         [[repository]]\nnamespace = \"ret\"\npolicy_default_allow = true\n{RULES}\
         event_webhooks = [\"audit\"]\n\
         [event_webhook.audit]\nurl = \"{}\"\nevents = [\"manifest.delete\", \"tag.delete\"]\n\
         [gc]\nenabled = false\n",
        recv.url("/audit")
    );
    let srv = Server::start_with("", &config);
    let repo = Repo::new(&srv, "ret/app");
    let a = repo.manifest("a", Some("release-1"), None);
    let b = repo.manifest("b", Some("old-1"), None);
    let c = repo.manifest("c", None, None);
    let d = repo.manifest("d", Some("new"), None);
    let e = repo.manifest("e", Some("pinned"), None);
    let f = repo.manifest("f", Some("old-pulled"), None);
    let h = repo.manifest("h", None, None);
    let g = repo.index("old-index", &[&h]);
    let j = repo.manifest("j", None, None);
    let i = repo.index("release-2", &[&j]);
    let k = repo.manifest("k", None, Some(&b));
    let l = repo.manifest("l", None, Some(&a));
    for m in [&a, &b, &c, &e, &f, &g, &h, &i, &j, &k, &l] {
        repo.age(m, 30);
    }
    // An unrelated namespace without rules keeps everything, however old.
    let other = Repo::new(&srv, "other/app");
    let o = other.manifest("o", None, None);
    other.age(&o, 300);
    // A pull is recorded (once) and makes f the most recently pulled.
    assert_eq!(srv.get("/v2/ret/app/manifests/old-pulled").status, 200);
    let record = srv.dir.0.join(format!(
        "data/retention/pulled/ret+app/sha256-{}",
        f.0.strip_prefix("sha256:").unwrap()
    ));
    assert!(record.exists(), "pull not recorded");

    let (code, out) = srv.cli(&["scrub", "--retention", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    let mut planned: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("would delete"))
        .collect();
    planned.sort();
    let mut want = vec![
        format!("would delete ret/app@{} tags old-1", b.0),
        format!("would delete ret/app@{} tags (untagged)", c.0),
        format!("would delete ret/app@{} tags old-index", g.0),
    ];
    want.sort();
    assert_eq!(planned, want, "{out}");
    // Checked in storage: a GET here would put b in this server's manifest cache, which
    // a deletion by another process (this CLI) does not reach.
    assert!(repo.revision(&b).exists(), "the dry run deleted");

    let (code, out) = srv.cli(&["scrub", "--retention"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("deleted ret/app@{} tags old-1", b.0)),
        "{out}"
    );
    assert!(out.contains("retention: deleted 3 manifests"), "{out}");
    for gone in [&b, &c, &g, &k] {
        assert_eq!(repo.status(&gone.0), 404, "{} kept", gone.0);
    }
    for kept in [&a, &d, &e, &f, &h, &i, &j, &l] {
        assert_eq!(repo.status(&kept.0), 200, "{} deleted", kept.0);
    }
    assert_eq!(other.status(&o.0), 200);
    assert_eq!(srv.get("/v2/ret/app/manifests/old-1").status, 404);
    let got = recv.wait_for(Duration::from_secs(10), |g| g.len() >= 5);
    let events: Vec<serde_json::Value> = got.iter().map(|r| r.json()).collect();
    assert!(
        events.iter().all(|v| v["actor"]["kind"] == "retention"),
        "{events:?}"
    );
    let deletes: Vec<&str> = events
        .iter()
        .filter(|v| v["kind"] == "manifest.delete")
        .filter_map(|v| v["digest"].as_str())
        .collect();
    assert_eq!(deletes.len(), 3, "{events:?}");
    for gone in [&b, &c, &g] {
        assert!(deletes.contains(&gone.0.as_str()));
    }
    let tag_deletes: Vec<&str> = events
        .iter()
        .filter(|v| v["kind"] == "tag.delete")
        .filter_map(|v| v["tag"].as_str())
        .collect();
    assert_eq!(tag_deletes.len(), 2, "{events:?}");
    // The orphaned child of the deleted index is judged on its own by the next pass.
    let (_, out) = srv.cli(&["scrub", "--retention", "--dry-run"]);
    assert!(
        out.contains(&format!("would delete ret/app@{} tags (untagged)", h.0)),
        "{out}"
    );
}

/// With `gc.retention = true` the background GC applies the rules: an old manifest goes,
/// a retention event is sent, a recent one stays.
#[test]
fn online_retention_runs_with_gc() {
    let recv = Receiver::start();
    let config = format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
         retention = [\"now - image.pushed_at < days(1)\"]\nevent_webhooks = [\"audit\"]\n\
         [event_webhook.audit]\nurl = \"{}\"\nevents = [\"manifest.delete\"]\ndelivery = \"optional\"\n\
         [gc]\nenabled = true\nretention = true\ninterval = \"1s\"\ngrace_period = \"1s\"\n",
        recv.url("/audit")
    );
    let srv = Server::start_with("", &config);
    let repo = Repo::new(&srv, "live/app");
    let old = repo.manifest("old", Some("v1"), None);
    let new = repo.manifest("new", Some("v2"), None);
    repo.age(&old, 2);
    let got = recv.wait_for(Duration::from_secs(15), |g| !g.is_empty());
    assert_eq!(got.len(), 1, "no retention event");
    let v = got[0].json();
    assert_eq!(v["kind"], "manifest.delete");
    assert_eq!(v["digest"], old.0.as_str());
    assert_eq!(v["tag"], "v1");
    assert_eq!(v["actor"]["kind"], "retention");
    assert_eq!(repo.status(&old.0), 404);
    assert_eq!(repo.status(&new.0), 200);
    let metrics = String::from_utf8(srv.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("origin_retention_deleted_total 1\n"),
        "{metrics}"
    );
}

/// A rule that does not compile fails `check-config`, naming the key.
#[test]
fn check_config_rejects_a_bad_rule() {
    let dir = TempDir::new("ret-check");
    let path = dir.0.join("bad.toml");
    let text = config_text(
        &dir.0,
        "",
        "[[repository]]\nnamespace = \"\"\nretention = [\"true\", \"image.pushed_at > days('x')\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("repository[0].retention[1]"), "{err}");
}
