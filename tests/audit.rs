//! The audit trail against a running server: every write and every denial is a JSON line
//! naming who, from where, what and why, in a file rotated by size or on stderr; nothing
//! secret is in it, and with the trail off nothing is written.

mod common;
#[path = "common/issuer.rs"]
mod issuer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Alice may do anything; bob may only pull; under `rel` tags are immutable.
fn config(audit: &str) -> String {
    let hash = hash_password(PASSWORD);
    format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{hash}\"\n\
         [identity.bob]\nusername = \"bob\"\npassword = \"{hash}\"\n\
         [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
         policies = [\"identity.username == 'alice'\", \
                     \"identity.username == 'bob' && request.action.startsWith('get-')\"]\n\
         [[repository]]\nnamespace = \"rel\"\npolicy_default_allow = false\n\
         policies = [\"identity.username == 'alice'\"]\nimmutable_tags = true\n\
         {audit}\n"
    )
}

fn start(audit: impl Fn(&Path) -> String) -> (Server, PathBuf) {
    let dir = TempDir::new("audit");
    let file = dir.0.join("audit.jsonl");
    let text = config_text(&dir.0, "", &config(&audit(&file)));
    (Server::start_config(dir, &text, &[]), file)
}

fn enabled(file: &Path) -> String {
    format!(
        "[audit]\nenabled = true\nfile = {:?}\n",
        file.display().to_string()
    )
}

/// The records in `file` (and its rotated files, oldest first).
fn records(file: &Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = (1..10)
        .rev()
        .map(|i| PathBuf::from(format!("{}.{i}", file.display())))
        .collect();
    paths.push(file.to_path_buf());
    let mut out = Vec::new();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for line in text.lines() {
            out.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line:?}", p.display())),
            );
        }
    }
    out
}

/// Waits until a record matches `pred` (records are written by their own thread).
fn wait_for(file: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = records(file);
        if let Some(r) = all.iter().find(|r| pred(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record {what} in {}:\n{}",
            file.display(),
            all.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is(r: &Value, action: &str, outcome: &str) -> bool {
    r["action"] == action && r["outcome"] == outcome
}

/// A small image pushed by `user`: its config blob and manifest digest.
fn push(srv: &Server, auth: &str, repo: &str, tag: &str, n: u8) -> (String, String) {
    let h = [("Authorization", auth)];
    let config = format!("{{\"n\":{n}}}").into_bytes();
    let d = digest(&config);
    let r = srv.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &h,
        &config,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\
         \"application/vnd.oci.image.config.v1+json\",\"digest\":\"{d}\",\"size\":{}}},\"layers\":[]}}",
        config.len()
    );
    let r = srv.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Authorization", auth), ("Content-Type", OCI_MANIFEST)],
        manifest.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    (d, digest(manifest.as_bytes()))
}

/// A push (blob, then manifest by tag) leaves one record per write, naming the identity,
/// the peer, the repository, the tag and the digests; a mount names its source; the password
/// and the Authorization header are nowhere in the trail. The writes are counted in the
/// metrics.
#[test]
fn a_push_is_audited_with_identity_and_peer() {
    let (srv, file) = start(enabled);
    let alice = basic("alice", PASSWORD);
    let (blob, manifest) = push(&srv, &alice, "team/app", "v1", 1);
    let upload = wait_for(&file, "blob.upload", |r| is(r, "blob.upload", "allowed"));
    assert_eq!(upload["repository"], "team/app");
    assert_eq!(upload["digest"], blob.as_str());
    assert_eq!(upload["actor"], "client");
    assert_eq!(upload["identity"]["id"], "alice");
    assert_eq!(upload["identity"]["username"], "alice");
    assert_eq!(upload["identity"]["anonymous"], false);
    assert_eq!(upload["peer"], "127.0.0.1");
    let put = wait_for(&file, "manifest.put", |r| is(r, "manifest.put", "allowed"));
    assert_eq!(put["repository"], "team/app");
    assert_eq!(put["reference"], "v1");
    assert_eq!(put["digest"], manifest.as_str());
    assert_eq!(put["identity"]["username"], "alice");
    let time = put["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    // A mount into another repository names where the blob came from.
    let r = srv.request(
        "POST",
        &format!("/v2/team/other/blobs/uploads/?mount={blob}&from=team/app"),
        &[("Authorization", alice.as_str())],
        b"",
    );
    assert_eq!(r.status, 201);
    let mount = wait_for(&file, "blob.mount", |r| is(r, "blob.mount", "allowed"));
    assert_eq!(mount["repository"], "team/other");
    assert_eq!(mount["from"], "team/app");
    assert_eq!(mount["digest"], blob.as_str());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(PASSWORD) && !text.contains(&alice[6..]),
        "{text}"
    );
    let metrics = String::from_utf8(srv.get("/metrics").body).unwrap();
    let written = metrics
        .lines()
        .find_map(|l| l.strip_prefix("origin_audit_records_total "))
        .unwrap();
    assert!(written.parse::<u64>().unwrap() >= 3, "{metrics}");
    assert!(
        metrics.contains("origin_audit_dropped_total 0"),
        "{metrics}"
    );
}

/// Deleting a tag, a manifest and a blob each leave a record; a delete of what is not there
/// is recorded as failed, with the error's message.
#[test]
fn deletes_are_audited() {
    let (srv, file) = start(enabled);
    let alice = basic("alice", PASSWORD);
    let h = [("Authorization", alice.as_str())];
    let (blob, manifest) = push(&srv, &alice, "team/app", "v1", 2);
    assert_eq!(
        srv.request("DELETE", "/v2/team/app/manifests/v1", &h, b"")
            .status,
        202
    );
    let path = format!("/v2/team/app/manifests/{manifest}");
    assert_eq!(srv.request("DELETE", &path, &h, b"").status, 202);
    let path = format!("/v2/team/app/blobs/{blob}");
    assert_eq!(srv.request("DELETE", &path, &h, b"").status, 202);
    assert_eq!(srv.request("DELETE", &path, &h, b"").status, 404);
    let tag = wait_for(&file, "tag.delete", |r| is(r, "tag.delete", "allowed"));
    assert_eq!(tag["reference"], "v1");
    assert_eq!(tag["identity"]["username"], "alice");
    let m = wait_for(&file, "manifest.delete", |r| {
        is(r, "manifest.delete", "allowed")
    });
    assert_eq!(m["digest"], manifest.as_str());
    let b = wait_for(&file, "blob.delete", |r| is(r, "blob.delete", "allowed"));
    assert_eq!(b["digest"], blob.as_str());
    let again = wait_for(&file, "failed blob.delete", |r| {
        is(r, "blob.delete", "failed")
    });
    assert!(
        again["reason"].as_str().unwrap().contains("unknown"),
        "{again}"
    );
}

/// A push bob may not make is denied by the default of the entry (no policy matched) and
/// recorded with the policy action, the repository and that rule; an anonymous push is
/// recorded as anonymous.
#[test]
fn a_denied_push_names_the_rule_that_denied_it() {
    let (srv, file) = start(enabled);
    let bob = basic("bob", PASSWORD);
    let r = srv.request(
        "POST",
        "/v2/team/app/blobs/uploads/",
        &[("Authorization", bob.as_str())],
        b"",
    );
    assert_eq!(r.status, 403);
    let denied = wait_for(&file, "put-blob denied", |r| {
        is(r, "put-blob", "denied") && r["identity"]["username"] == "bob"
    });
    assert_eq!(denied["repository"], "team/app");
    assert_eq!(denied["peer"], "127.0.0.1");
    let reason = denied["reason"].as_str().unwrap();
    assert!(
        reason.contains("repository \"\"") && reason.contains("policy_default_allow = false"),
        "{reason}"
    );
    // Bob's pull is allowed by policies[1]; a pull of a missing tag is not a write: no record.
    let r = srv.request(
        "GET",
        "/v2/team/app/manifests/v9",
        &[("Authorization", bob.as_str())],
        b"",
    );
    assert_eq!(r.status, 404);
    let r = srv.request("PUT", "/v2/rel/app/manifests/v1", &[], b"{}");
    assert_eq!(r.status, 401);
    let anon = wait_for(&file, "anonymous put-manifest", |r| {
        is(r, "put-manifest", "denied")
    });
    assert_eq!(anon["identity"]["anonymous"], true);
    assert_eq!(anon["repository"], "rel/app");
    assert_eq!(anon["reference"], "v1");
    assert!(
        anon["reason"].as_str().unwrap().contains("\"rel\""),
        "{anon}"
    );
    assert!(!records(&file).iter().any(|r| r["action"] == "get-manifest"));
}

/// A policy that matches in a default-allow entry denies: the record names its index and
/// expression.
#[test]
fn a_deny_policy_is_named_by_index_and_expression() {
    let dir = TempDir::new("audit");
    let file = dir.0.join("audit.jsonl");
    let rules = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
                 policies = [\"request.namespace == 'x'\", \"request.action == 'put-manifest'\"]\n";
    let text = config_text(&dir.0, "", &format!("{rules}{}", enabled(&file)));
    let srv = Server::start_config(dir, &text, &[]);
    let r = srv.put_manifest("lib/app", "v1", OCI_MANIFEST, b"{}");
    assert_eq!(r.status, 401);
    let denied = wait_for(&file, "put-manifest denied", |r| {
        is(r, "put-manifest", "denied")
    });
    let reason = denied["reason"].as_str().unwrap();
    assert!(
        reason.contains("policies[1] `request.action == 'put-manifest'`"),
        "{reason}"
    );
}

/// Moving an immutable tag is refused and recorded as denied, naming the tag.
#[test]
fn an_immutable_tag_refusal_is_audited() {
    let (srv, file) = start(enabled);
    let alice = basic("alice", PASSWORD);
    push(&srv, &alice, "rel/app", "v1", 1);
    let config = srv.push_blob_as(&alice, "rel/app", b"{\"n\":2}");
    let other = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\
         \"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config}\",\"size\":7}},\"layers\":[]}}"
    );
    let r = srv.request(
        "PUT",
        "/v2/rel/app/manifests/v1",
        &[
            ("Authorization", alice.as_str()),
            ("Content-Type", OCI_MANIFEST),
        ],
        other.as_bytes(),
    );
    assert_eq!(r.status, 409);
    let refused = wait_for(&file, "manifest.put denied", |r| {
        is(r, "manifest.put", "denied")
    });
    assert_eq!(refused["reference"], "v1");
    assert_eq!(refused["digest"], digest(other.as_bytes()).as_str());
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("tag v1") && reason.contains("immutable"),
        "{reason}"
    );
    let r = srv.request(
        "DELETE",
        "/v2/rel/app/manifests/v1",
        &[("Authorization", alice.as_str())],
        b"",
    );
    assert_eq!(r.status, 409);
    wait_for(&file, "tag.delete denied", |r| {
        is(r, "tag.delete", "denied")
    });
}

/// A wrong password is a denied `login` naming the username tried, never the password; once
/// the address is rate-limited, the refusals are recorded as such.
#[test]
fn a_failed_login_is_audited_without_the_password() {
    let (srv, file) = start(enabled);
    let wrong = "hunter2-not-it";
    let h = basic("alice", wrong);
    let r = srv.request("GET", "/v2/", &[("Authorization", h.as_str())], b"");
    assert_eq!(r.status, 401);
    let login = wait_for(&file, "login denied", |r| is(r, "login", "denied"));
    assert_eq!(login["login_username"], "alice");
    assert_eq!(login["identity"]["anonymous"], true);
    assert_eq!(login["peer"], "127.0.0.1");
    assert_eq!(login["reason"], "wrong username or password");
    let mut status = 401;
    for _ in 0..20 {
        status = srv
            .request("GET", "/v2/", &[("Authorization", h.as_str())], b"")
            .status;
        if status == 429 {
            break;
        }
    }
    assert_eq!(status, 429);
    let limited = wait_for(&file, "rate-limited login", |r| {
        is(r, "login", "denied") && r["reason"].as_str().unwrap().contains("rate limited")
    });
    assert_eq!(limited["login_username"], "alice");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(wrong) && !text.contains(&h[6..]), "{text}");
}

/// At `max_file_bytes` the file is rotated: `keep_files` older files stay, each line whole,
/// the oldest records gone, no file past the limit.
#[test]
fn the_file_rotates_at_its_size_limit() {
    let (srv, file) = start(|f| format!("{}max_file_bytes = 4096\nkeep_files = 2\n", enabled(f)));
    let alice = basic("alice", PASSWORD);
    // About 400 bytes per record: 40 records fill more than three files of 4 KiB.
    for n in 0..20 {
        push(&srv, &alice, "team/app", &format!("t{n}"), n);
    }
    wait_for(&file, "the last push", |r| {
        is(r, "manifest.put", "allowed") && r["reference"] == "t19"
    });
    let rotated = |i: u32| PathBuf::from(format!("{}.{i}", file.display()));
    for p in [file.clone(), rotated(1), rotated(2)] {
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len > 0 && len <= 4096, "{}: {len} bytes", p.display());
    }
    assert!(!rotated(3).exists());
    let kept = records(&file);
    assert!(kept.len() < 40, "nothing was rotated away: {}", kept.len());
    assert!(
        !kept.iter().any(|r| r["reference"] == "t0"),
        "the oldest stayed"
    );
}

/// With the trail off (the default) nothing is written, whatever happens: no file, nothing
/// counted. On with no file, records go to stderr under the target `origin::audit`.
#[test]
fn disabled_writes_nothing_and_stderr_is_the_default_sink() {
    let (srv, file) = start(|f| format!("[audit]\nfile = {:?}\n", f.display().to_string()));
    let alice = basic("alice", PASSWORD);
    push(&srv, &alice, "team/app", "v1", 1);
    let r = srv.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("alice", "x"))],
        b"",
    );
    assert_eq!(r.status, 401);
    std::thread::sleep(Duration::from_millis(200));
    assert!(!file.exists(), "a disabled trail wrote {}", file.display());
    let metrics = String::from_utf8(srv.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("origin_audit_records_total 0"),
        "{metrics}"
    );

    let (mut srv, _) = start(|_| "[audit]\nenabled = true\n".into());
    push(&srv, &alice, "team/app", "v1", 1);
    let line = srv
        .logs_until("origin::audit", Duration::from_secs(10))
        .expect("an audit record on stderr");
    let json = &line[line.find('{').unwrap()..];
    let record: Value = serde_json::from_str(json).unwrap();
    assert_eq!(record["action"], "blob.upload");
    assert_eq!(record["identity"]["username"], "alice");
}

/// A reload turns the trail on and moves it to another file, with no restart.
#[test]
fn a_reload_turns_the_trail_on_and_moves_it() {
    let (mut srv, file) = start(|_| String::new());
    let alice = basic("alice", PASSWORD);
    push(&srv, &alice, "team/app", "v1", 1);
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    std::fs::write(&srv.config_path, format!("{text}{}", enabled(&file))).unwrap();
    srv.signal(libc::SIGHUP);
    assert!(srv
        .logs_until("configuration reloaded", Duration::from_secs(10))
        .is_some());
    push(&srv, &alice, "team/app", "v2", 2);
    wait_for(&file, "v2 after reload", |r| r["reference"] == "v2");
    assert!(!records(&file).iter().any(|r| r["reference"] == "v1"));
    let moved = file.with_file_name("moved.jsonl");
    std::fs::write(&srv.config_path, format!("{text}{}", enabled(&moved))).unwrap();
    srv.signal(libc::SIGHUP);
    assert!(srv.logs_count_until("configuration reloaded", 2, Duration::from_secs(10)));
    push(&srv, &alice, "team/app", "v3", 3);
    wait_for(&moved, "v3 in the new file", |r| r["reference"] == "v3");
}

/// The registry's own deletions are recorded with their actor: GC's removal of an untagged
/// manifest and of the blobs it released (`gc`), and a retention pass's deletion of a
/// manifest and its tag (`retention`).
#[test]
fn gc_and_retention_deletions_name_their_actor() {
    let dir = TempDir::new("audit");
    let file = dir.0.join("audit.jsonl");
    let rules = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\
                 [[repository]]\nnamespace = \"ret\"\npolicy_default_allow = true\n\
                 retention = [\"image.tag == 'keep'\"]\n\
                 [gc]\nenabled = true\nretention = true\nremove_untagged = true\n\
                 interval = \"1s\"\ngrace_period = \"1s\"\n";
    let text = config_text(&dir.0, "", &format!("{rules}{}", enabled(&file)));
    let srv = Server::start_config(dir, &text, &[]);
    let (_, first) = srv.push_image("gc/app", "v1", &[bytes(1, 100)]);
    srv.push_image("gc/app", "v1", &[bytes(2, 100)]);
    let layer = digest(&bytes(1, 100));
    srv.push_image("ret/app", "keep", &[bytes(3, 100)]);
    let (_, dropped) = srv.push_image("ret/app", "drop", &[bytes(4, 100)]);
    let gc = wait_for(&file, "gc manifest.delete", |r| {
        is(r, "manifest.delete", "allowed") && r["actor"] == "gc"
    });
    assert_eq!(gc["repository"], "gc/app");
    assert_eq!(gc["digest"], first.as_str());
    assert!(
        gc.get("identity").is_none() && gc.get("peer").is_none(),
        "{gc}"
    );
    wait_for(&file, "gc blob.delete of the released layer", |r| {
        is(r, "blob.delete", "allowed") && r["actor"] == "gc" && r["digest"] == layer.as_str()
    });
    let m = wait_for(&file, "retention manifest.delete", |r| {
        is(r, "manifest.delete", "allowed") && r["actor"] == "retention"
    });
    assert_eq!(m["repository"], "ret/app");
    assert_eq!(m["digest"], dropped.as_str());
    let t = wait_for(&file, "retention tag.delete", |r| {
        is(r, "tag.delete", "allowed") && r["actor"] == "retention"
    });
    assert_eq!(t["reference"], "drop");
}

/// Over mTLS the client certificate's subject identifies the caller: a push by the CI
/// certificate and a refused one by bob's name each certificate's CN and O.
#[test]
fn certificate_subjects_are_in_the_identity() {
    use std::io::Write as _;
    let dir = TempDir::new("audit");
    let file = dir.0.join("audit.jsonl");
    let pki = common::pki::Pki::new(&dir.0, &[("ci", "builder-1", "ci"), ("dev", "bob", "devs")]);
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
                 policies = ['\"ci\" in identity.certificate.organizations']\n";
    let extra = format!(
        "{repos}{}{}",
        pki.tls_section(true, Some(true)),
        enabled(&file)
    );
    let text = config_text(&dir.0, "", &extra);
    let srv = Server::start_config(dir, &text, &[]);
    let push = |client: &str| {
        let config = pki.client_config(Some(client), &[&rustls::version::TLS13]);
        let tcp = std::net::TcpStream::connect(srv.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let data = format!("layer of {client}").into_bytes();
        let path = format!("/v2/team/app/blobs/uploads/?digest={}", digest(&data));
        send(&mut tls, "POST", &path, &[], &data);
        tls.flush().unwrap();
        read_response(&mut tls, false).unwrap().status
    };
    assert_eq!(push("ci"), 201);
    assert_eq!(push("dev"), 403);
    let ci = wait_for(&file, "the CI push", |r| is(r, "blob.upload", "allowed"));
    assert_eq!(
        ci["identity"]["certificate_cn"],
        serde_json::json!(["builder-1"])
    );
    assert_eq!(ci["identity"]["certificate_o"], serde_json::json!(["ci"]));
    assert_eq!(ci["identity"]["anonymous"], false);
    let bob = wait_for(&file, "bob's refused push", |r| is(r, "put-blob", "denied"));
    assert_eq!(
        bob["identity"]["certificate_cn"],
        serde_json::json!(["bob"])
    );
    assert_eq!(
        bob["identity"]["certificate_o"],
        serde_json::json!(["devs"])
    );
}

/// A token's issuer and subject identify an OIDC caller in its records; a token that does
/// not verify is a denied login, and no token is written.
#[test]
fn oidc_issuer_and_subject_are_in_the_identity() {
    let key = issuer::SigningKey::es256("es-1");
    let idp = issuer::Issuer::start(&[&key]);
    let dir = TempDir::new("audit");
    let file = dir.0.join("audit.jsonl");
    let extra = format!(
        "[oidc.ci]\nissuer = \"{}\"\naudience = \"origin\"\nusername_claim = \"sub\"\n\
         {ALLOW_ALL}{}",
        idp.url,
        enabled(&file)
    );
    let text = config_text(&dir.0, "", &extra);
    let srv = Server::start_config(dir, &text, &[]);
    let token = key.sign(&idp.claims("origin", serde_json::json!({})));
    let bearer = format!("Bearer {token}");
    srv.push_blob_as(&bearer, "acme/app", b"oidc layer");
    let pushed = wait_for(&file, "the OIDC push", |r| is(r, "blob.upload", "allowed"));
    let id = &pushed["identity"];
    assert_eq!(id["oidc_provider"], "ci");
    assert_eq!(id["oidc_issuer"], idp.url.as_str());
    assert_eq!(id["oidc_subject"], "repo:acme/app:ref:refs/heads/main");
    // One character in the middle of the signature changed.
    let at = token.rfind('.').unwrap() + 10;
    let other = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let forged = format!("Bearer {}{other}{}", &token[..at], &token[at + 1..]);
    let r = srv.request("GET", "/v2/", &[("Authorization", forged.as_str())], b"");
    assert_eq!(r.status, 401);
    let login = wait_for(&file, "the forged token", |r| is(r, "login", "denied"));
    assert_eq!(login["reason"], "token did not verify");
    let text = std::fs::read_to_string(&file).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !text.contains(signature),
        "a token reached the trail: {text}"
    );
}

trait PushAs {
    fn push_blob_as(&self, auth: &str, repo: &str, data: &[u8]) -> String;
}

impl PushAs for Server {
    fn push_blob_as(&self, auth: &str, repo: &str, data: &[u8]) -> String {
        let d = digest(data);
        let r = self.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Authorization", auth)],
            data,
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        d
    }
}
