//! The web UI's log-in, sessions and deletes (src/ui/session.rs, src/ui/actions.rs), over
//! real HTTP against a real server: cookie flags, signature and expiry, logout and reload
//! revocation, the failure limit shared with Basic auth, CSRF, mTLS in place of a session,
//! and deletes decided by the same policies and immutability rules as `/v2/`.

mod common;
#[path = "common/issuer.rs"]
mod issuer;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::browser::{Browser, ORIGIN};
use common::pki::Pki;
use common::*;
use serde_json::{json, Value};

fn identities() -> String {
    format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n\
         [identity.bob]\nusername = \"bob\"\npassword = \"{}\"\n",
        hash_password("alice-pw"),
        hash_password("bob-pw"),
    )
}

/// alice may do anything; bob may read; anonymous nothing. Tags of `locked/` are immutable.
const POLICIES: &str = "[[repository]]\nnamespace = \"locked\"\npolicy_default_allow = false\n\
    immutable_tags = true\npolicies = ['identity.id == \"alice\"', \
    'identity.id == \"bob\" && (request.action.startsWith(\"get\") || request.action.startsWith(\"list\"))']\n\
    [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = [\n  \
    'identity.id == \"alice\"',\n  'identity.id == \"bob\" && (request.action.startsWith(\"get\") || request.action.startsWith(\"list\"))',\n]\n";

fn start() -> Server {
    Server::start_with("", &format!("{}{POLICIES}", identities()))
}

fn basic(user: &str, pass: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b}")
}

fn push_tag(srv: &Server, repo: &str, tag: &str) -> String {
    let auth = basic("alice", "alice-pw");
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let layer = bytes(tag.len() as u64, 100);
    let mut digests = Vec::new();
    for data in [&config[..], &layer[..]] {
        let d = digest(data);
        let r = srv.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[("Authorization", &auth)],
            data,
        );
        assert_eq!(r.status, 201);
        digests.push((d, data.len()));
    }
    let m = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digests[0].0, "size": digests[0].1 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digests[1].0, "size": digests[1].1 }] });
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

fn tags_via_v2(srv: &Server, repo: &str) -> Value {
    let r = srv.request(
        "GET",
        &format!("/v2/{repo}/tags/list"),
        &[("Authorization", &basic("alice", "alice-pw"))],
        b"",
    );
    r.json()["tags"].clone()
}

/// Logging in with a password sets an HttpOnly, SameSite=Strict cookie scoped to the UI
/// path (not Secure on plain HTTP) that then identifies the visitor; a wrong password sets
/// none and leaves the visitor anonymous.
#[test]
fn password_login_sets_a_strict_session_cookie() {
    let srv = start();
    push_tag(&srv, "team/app", "v1");
    let mut b = Browser::open(&srv);
    let anon = b
        .cookie
        .clone()
        .expect("an anonymous cookie for the CSRF token");
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 401);

    let r = b.login("alice", "wrong");
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.header("www-authenticate").is_none(), "no browser dialog");
    let r = b.login("alice", "alice-pw");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["identity"]["name"], "alice");
    let set = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui/", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert_ne!(b.cookie.as_deref(), Some(anon.as_str()), "a new session");
    let tags = b.get("/ui/api/tags?repo=team/app");
    assert_eq!(tags.status, 200);
    assert_eq!(tags.json()["tags"][0]["tag"], "v1");
    let me = b.get("/ui/api/session").json();
    assert_eq!(
        me["identity"],
        json!({ "name": "alice", "via": "password" })
    );
    assert_eq!(me["login"]["password"], true);
}

/// UI log-in failures count against the same per-address and per-user limit as Basic
/// auth: after ten wrong passwords in the UI, Basic with the right one is refused (429),
/// and so is the UI.
#[test]
fn login_failures_share_the_basic_auth_limit() {
    let srv = start();
    let mut b = Browser::open(&srv);
    for _ in 0..10 {
        assert_eq!(b.login("alice", "guess").status, 401);
    }
    let r = srv.request(
        "GET",
        "/v2/_catalog",
        &[("Authorization", &basic("alice", "alice-pw"))],
        b"",
    );
    assert_eq!(r.status, 429);
    assert_eq!(b.login("alice", "alice-pw").status, 429);
}

/// A cookie whose claims or signature were altered, or that is past its expiry, is refused
/// (401), not taken for anonymous; `GET session` replaces it with an anonymous one.
#[test]
fn tampered_and_expired_cookies_are_refused() {
    let srv = Server::start_with(
        "",
        &format!("{}{POLICIES}[ui]\nsession_ttl = \"1h\"\n", identities()),
    );
    push_tag(&srv, "team/app", "v1");
    let mut b = Browser::open(&srv);
    assert_eq!(b.login("bob", "bob-pw").status, 200);
    let good = b.cookie.clone().unwrap();
    let (payload, tag) = good.split_once('.').unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    claims["id"] = json!("alice");
    let forged = format!("{}.{tag}", b64.encode(claims.to_string()));
    let mut flipped = good.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    for bad in [forged, String::from_utf8(flipped).unwrap(), "x.y".into()] {
        b.cookie = Some(bad.clone());
        let r = b.get("/ui/api/tags?repo=team/app");
        assert_eq!(r.status, 401, "{bad}");
    }
    b.cookie = Some(good.clone());
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 200);
    let mut anon = Browser::open(&srv);
    srv.advance_clock(Duration::from_secs(3601));
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 401);
    // An expired anonymous cookie is no session to end: the visitor reads on as anonymous.
    let r = anon.get("/ui/api/tags?repo=team/app");
    let plain = srv.get("/ui/api/tags?repo=team/app");
    assert_eq!((r.status, &r.body), (plain.status, &plain.body));
    let s = b.get("/ui/api/session");
    assert_eq!(
        (s.json()["identity"].clone(), s.json()["ended"].clone()),
        (Value::Null, json!(true))
    );
    assert_ne!(b.cookie.as_deref(), Some(good.as_str()), "replaced");
}

/// Logout ends the session for whoever kept a copy of the cookie, and the record is in
/// storage: after a restart (as on another node sharing the storage) the old cookie is still
/// refused while a new login works, and the signing key survives the restart.
#[test]
fn logout_revokes_sessions_in_storage() {
    let srv = start();
    push_tag(&srv, "team/app", "v1");
    let mut b = Browser::open(&srv);
    assert_eq!(b.login("alice", "alice-pw").status, 200);
    let mut other = Browser::open(&srv);
    assert_eq!(other.login("alice", "alice-pw").status, 200);
    let kept = b.cookie.clone().unwrap();
    let r = b.post("logout", json!({}));
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    b.cookie = Some(kept.clone());
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 401);
    let o = other.get("/ui/api/tags?repo=team/app");
    assert_eq!(o.status, 401, "every session of the identity");

    let srv = srv.restart();
    let mut c = Browser::open(&srv);
    c.cookie = Some(kept);
    assert_eq!(c.get("/ui/api/tags?repo=team/app").status, 401);
    let mut fresh = Browser::open(&srv);
    assert_eq!(fresh.login("alice", "alice-pw").status, 200);
    let cookie = fresh.cookie.clone();
    let srv = srv.restart();
    let mut again = Browser::open(&srv);
    again.cookie = cookie;
    assert_eq!(
        again.get("/ui/api/tags?repo=team/app").status,
        200,
        "the key is the stored one"
    );
}

/// A reload that removes an identity, or changes its password, ends its sessions at once.
#[test]
fn reload_removing_the_identity_ends_its_sessions() {
    let dir = TempDir::new("ui-reload");
    let base = config_text(&dir.0, "", POLICIES);
    let mut srv = Server::start_config(dir, &format!("{base}{}", identities()), &[]);
    push_tag(&srv, "team/app", "v1");
    let mut b = Browser::open(&srv);
    assert_eq!(b.login("bob", "bob-pw").status, 200);
    let mut a = Browser::open(&srv);
    assert_eq!(a.login("alice", "alice-pw").status, 200);
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 200);
    let alice_only = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n",
        hash_password("alice-new-pw")
    );
    std::fs::write(&srv.config_path, format!("{base}{alice_only}")).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    assert_eq!(b.get("/ui/api/tags?repo=team/app").status, 401, "removed");
    assert_eq!(
        a.get("/ui/api/tags?repo=team/app").status,
        401,
        "password changed"
    );
    let mut c = Browser::open(&srv);
    assert_eq!(c.login("alice", "alice-new-pw").status, 200);
    assert_eq!(c.get("/ui/api/tags?repo=team/app").status, 200);
}

/// Login, logout and delete are refused (403) without the CSRF token, with a wrong one,
/// from another origin or site, or without the cookie; nothing changes.
#[test]
fn state_changes_need_the_csrf_token_and_the_same_origin() {
    let srv = start();
    push_tag(&srv, "team/app", "v1");
    let mut b = Browser::open(&srv);
    assert_eq!(b.login("alice", "alice-pw").status, 200);
    let token = b.csrf.clone();
    let cookie = format!("origin_session={}", b.cookie.clone().unwrap());
    let delete = json!({ "repo": "team/app", "ref": "v1" }).to_string();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("Origin", ORIGIN), ("Cookie", &cookie)],
        vec![
            ("Origin", ORIGIN),
            ("Cookie", &cookie),
            ("X-CSRF-Token", "bad"),
        ],
        vec![
            ("Origin", "http://evil.example"),
            ("Cookie", &cookie),
            ("X-CSRF-Token", &token),
        ],
        vec![
            ("Sec-Fetch-Site", "cross-site"),
            ("Cookie", &cookie),
            ("X-CSRF-Token", &token),
        ],
        vec![("Cookie", &cookie), ("X-CSRF-Token", &token)],
        vec![("Origin", ORIGIN), ("X-CSRF-Token", &token)],
    ];
    for headers in &cases {
        for (call, body) in [
            ("delete", delete.as_str()),
            ("logout", "{}"),
            (
                "login",
                "{\"username\":\"alice\",\"password\":\"alice-pw\"}",
            ),
        ] {
            let r = srv.request("POST", &format!("/ui/api/{call}"), headers, body.as_bytes());
            assert_eq!(r.status, 403, "{call} {headers:?}");
            assert!(r.header("set-cookie").is_none(), "{call} {headers:?}");
        }
    }
    assert_eq!(tags_via_v2(&srv, "team/app"), json!(["v1"]));
    assert_eq!(
        b.get("/ui/api/tags?repo=team/app").status,
        200,
        "not logged out"
    );
    // A GET never changes anything: the calls that do refuse it.
    assert_eq!(b.get("/ui/api/delete?repo=team/app&ref=v1").status, 404);
}

/// The tag list says what the visitor may delete (the policies' delete-manifest decision,
/// and immutability), and the server decides the same way: bob may not delete (403, the
/// tag stays), alice deletes a tag and a manifest by digest, and nobody deletes an immutable
/// tag (409, with why).
#[test]
fn deletes_follow_the_policies_and_immutability() {
    let srv = start();
    push_tag(&srv, "team/app", "v1");
    let v2 = push_tag(&srv, "team/app", "v2-longer");
    push_tag(&srv, "locked/app", "1.0");

    let mut bob = Browser::open(&srv);
    assert_eq!(bob.login("bob", "bob-pw").status, 200);
    let tags = bob.get("/ui/api/tags?repo=team/app").json();
    assert_eq!(tags["tags"][0]["deletable"], false);
    assert_eq!(
        bob.get("/ui/api/manifest?repo=team/app&ref=v1").json()["deletable"],
        false
    );
    let r = bob.post("delete", json!({ "repo": "team/app", "ref": "v1" }));
    assert_eq!(r.status, 403);
    assert_eq!(tags_via_v2(&srv, "team/app"), json!(["v1", "v2-longer"]));

    let mut alice = Browser::open(&srv);
    assert_eq!(alice.login("alice", "alice-pw").status, 200);
    let tags = alice.get("/ui/api/tags?repo=team/app").json();
    assert_eq!(
        (
            tags["tags"][0]["deletable"].clone(),
            tags["tags"][0]["immutable"].clone()
        ),
        (json!(true), Value::Null)
    );
    let r = alice.post("delete", json!({ "repo": "team/app", "ref": "v1" }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(tags_via_v2(&srv, "team/app"), json!(["v2-longer"]));
    let r = alice.post("delete", json!({ "repo": "team/app", "ref": v2 }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        alice
            .get(&format!("/ui/api/manifest?repo=team/app&ref={v2}"))
            .status,
        404
    );

    let locked = alice.get("/ui/api/tags?repo=locked/app").json();
    let why = locked["tags"][0]["immutable"].as_str().unwrap().to_string();
    assert!(why.contains("immutable_tags"), "{why}");
    let m = alice.get("/ui/api/manifest?repo=locked/app&ref=1.0").json();
    assert_eq!(m["immutable"], why.as_str());
    let r = alice.post("delete", json!({ "repo": "locked/app", "ref": "1.0" }));
    assert_eq!(r.status, 409);
    assert!(String::from_utf8_lossy(&r.body).contains("immutable"));
    assert_eq!(tags_via_v2(&srv, "locked/app"), json!(["1.0"]));
}

/// Over TLS the cookie is `Secure`; a client certificate identifies a visitor who has not
/// logged in (its CN for the policies), as on `/v2/`.
#[test]
fn over_tls_cookies_are_secure_and_certificates_identify() {
    let dir = TempDir::new("ui-tls");
    let pki = Pki::new(&dir.0, &[("carol", "carol", "Acme")]);
    let policies = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
        policies = ['identity.certificate.common_names.exists(c, c == \"carol\")', 'identity.id == \"alice\"']\n";
    let text = config_text(
        &dir.0,
        "",
        &format!(
            "{}\n{}{policies}",
            pki.tls_section(true, Some(false)),
            identities()
        ),
    );
    let srv = Server::start_config(dir, &text, &[]);
    let get = |client: Option<&str>, path: &str| {
        let config = pki.client_config(client, &[&rustls::version::TLS13]);
        let mut tls = connect_tls(&srv, config);
        send(&mut tls, "GET", path, &[], b"");
        tls.flush().unwrap();
        read_response(&mut tls, false).unwrap()
    };
    let s = get(None, "/ui/api/session");
    let set = s.header("set-cookie").unwrap();
    assert!(set.contains("; Secure"), "{set}");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    assert_eq!(s.json()["identity"], Value::Null);
    let s = get(Some("carol"), "/ui/api/session");
    assert_eq!(
        s.json()["identity"],
        json!({ "name": "carol", "via": "certificate" })
    );
    assert_eq!(get(Some("carol"), "/ui/api/repositories").status, 200);
    assert_eq!(get(None, "/ui/api/tags?repo=x/y").status, 401);
    assert_eq!(get(Some("carol"), "/ui/api/tags?repo=x/y").status, 404);
}

fn connect_tls(
    srv: &Server,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Where `[oidc.*]` is configured, a pasted token logs in (verified as a Bearer token is; the
/// policies see its provider and claims); a token that does not verify is refused; a
/// reload that removes the provider ends the session.
#[test]
fn a_pasted_token_logs_in_until_its_provider_goes() {
    let key = issuer::SigningKey::es256("k");
    let idp = issuer::Issuer::start(&[&key]);
    let dir = TempDir::new("ui-oidc");
    let policies = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
        policies = ['identity.oidc.provider == \"ci\"']\n";
    let base = config_text(&dir.0, "", policies);
    let provider = format!(
        "[oidc.ci]\nissuer = \"{}\"\naudience = \"origin\"\nusername_claim = \"sub\"\n",
        idp.url
    );
    let mut srv = Server::start_config(dir, &format!("{base}{provider}"), &[]);
    let mut b = Browser::open(&srv);
    assert_eq!(
        b.get("/ui/api/session").json()["login"],
        json!({ "password": false, "token": true })
    );
    assert_eq!(b.get("/ui/api/repositories").status, 200);
    assert_eq!(b.get("/ui/api/tags?repo=a/b").status, 401);
    let wrong = issuer::SigningKey::es256("k").sign(&idp.claims("origin", json!({})));
    assert_eq!(b.post("login", json!({ "token": wrong })).status, 401);
    let token = key.sign(&idp.claims("origin", json!({})));
    let r = b.post("login", json!({ "token": token }));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["identity"],
        json!({ "name": "repo:acme/app:ref:refs/heads/main", "via": "token" })
    );
    assert_eq!(
        b.get("/ui/api/tags?repo=a/b").status,
        404,
        "allowed, not there"
    );

    std::fs::write(&srv.config_path, &base).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    assert_eq!(b.get("/ui/api/tags?repo=a/b").status, 401);
}
