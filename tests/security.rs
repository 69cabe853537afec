//! TLS, mTLS, Basic auth with argon2, and CEL policies, against a running server.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::pki::Pki;
use common::*;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(srv: &Server, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(srv.addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to the end (and surface its failure) before any request.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A GET that may fail: the server may refuse the connection after the client's side of the
/// handshake (TLS 1.3 clients learn of a refused certificate only on their first read).
fn try_tls_get(tls: &mut Tls, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Resp> {
    send(tls, "GET", path, headers, b"");
    tls.flush()?;
    read_response(tls, false).ok_or(std::io::ErrorKind::InvalidData.into())
}

fn tls_get(tls: &mut Tls, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(tls, "GET", path, headers, b"");
    tls.flush().unwrap();
    read_response(tls, false).expect("response over TLS")
}

fn basic(user: &str, pass: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("{user}:{pass}").into_bytes();
    let mut out = String::new();
    for c in raw.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// TLS 1.2 and 1.3 with ALPN http/1.1; plain HTTP on a TLS port fails.
#[test]
fn tls_serves_both_versions_with_alpn() {
    let dir = TempDir::new("tls");
    let pki = Pki::new(&dir.0, &[]);
    let text = config_text(
        &dir.0,
        "",
        &format!("{ALLOW_ALL}\n{}", pki.tls_section(false, None)),
    );
    let srv = Server::start_config(dir, &text, &[]);
    for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut tls = tls_connect(&srv, pki.client_config(None, &[v])).unwrap();
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(tls.conn.protocol_version(), Some(v.version));
        // The server's preference wins: AES-128-GCM, the cheapest suite per byte.
        let suite = format!("{:?}", tls.conn.negotiated_cipher_suite().unwrap().suite());
        assert!(suite.contains("AES_128_GCM"), "{suite}");
        let r = tls_get(&mut tls, "/v2/", &[]);
        assert_eq!(r.status, 200);
        // Keep-alive over TLS.
        assert_eq!(tls_get(&mut tls, "/v2/", &[]).status, 200);
    }
    let mut plain = srv.connect();
    let _ = plain.write_all(b"GET /v2/ HTTP/1.1\r\n\r\n");
    assert!(read_response(&mut plain, false).is_none());
}

/// mTLS required: a certificate from the CA passes and its CN/O reach the policies;
/// no certificate or one from an unknown CA fails the handshake.
#[test]
fn mtls_required() {
    let dir = TempDir::new("mtls");
    let pki = Pki::new(
        &dir.0,
        &[
            ("ci", "builder-1", "ci"),
            ("dev", "bob", "devs"),
            ("rogue", "mallory", "ci"),
        ],
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = [\n  \
        'request.action == \"get-api-version\"',\n  \
        'request.action.startsWith(\"get\") && identity.certificate.common_names.exists(c, c == \"bob\")',\n  \
        '\"ci\" in identity.certificate.organizations',\n]\n";
    let text = config_text(
        &dir.0,
        "",
        &format!("{repos}\n{}", pki.tls_section(true, Some(true))),
    );
    let srv = Server::start_config(dir, &text, &[]);
    let v = &[&rustls::version::TLS13][..];
    assert!(
        tls_connect(&srv, pki.client_config(None, v))
            .and_then(|mut t| try_tls_get(&mut t, "/v2/", &[]))
            .is_err(),
        "no certificate was accepted"
    );
    assert!(
        tls_connect(&srv, pki.client_config(Some("rogue"), v))
            .and_then(|mut t| try_tls_get(&mut t, "/v2/", &[]))
            .is_err(),
        "a certificate from an unknown CA was accepted"
    );
    // The CI client (O=ci) may push; bob (CN=bob, O=devs) may only read.
    let data = b"layer over mtls";
    let d = digest(data);
    let mut ci = tls_connect(&srv, pki.client_config(Some("ci"), v)).unwrap();
    send(
        &mut ci,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={d}"),
        &[],
        data,
    );
    ci.flush().unwrap();
    assert_eq!(read_response(&mut ci, false).unwrap().status, 201);
    let mut bob = tls_connect(&srv, pki.client_config(Some("dev"), v)).unwrap();
    assert_eq!(
        tls_get(&mut bob, &format!("/v2/team/app/blobs/{d}"), &[]).status,
        200
    );
    send(
        &mut bob,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={d}"),
        &[],
        data,
    );
    bob.flush().unwrap();
    let r = read_response(&mut bob, false).unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
}

/// mTLS with `client_ca_bundle` alone (optional by default): without a certificate, Basic
/// auth works beside it; a certificate still identifies CI. With `client_certificate =
/// "required"` the same password user is refused in the handshake.
#[test]
fn mtls_optional_by_default_with_basic_auth() {
    let dir = TempDir::new("mtlsopt");
    let pki = Pki::new(&dir.0, &[("ci", "builder-1", "ci")]);
    let ident = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n",
        hash_password("wonderland")
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = [\n  \
        'identity.username == \"alice\" || \"ci\" in identity.certificate.organizations',\n]\n";
    let text = config_text(
        &dir.0,
        "",
        &format!("{repos}\n{ident}\n{}", pki.tls_section(true, None)),
    );
    let srv = Server::start_config(dir, &text, &[]);
    let v = &[&rustls::version::TLS13][..];
    let mut anon = tls_connect(&srv, pki.client_config(None, v)).unwrap();
    let r = tls_get(&mut anon, "/v2/x/tags/list", &[]);
    assert_eq!(r.status, 401);
    let auth = basic("alice", "wonderland");
    let r = tls_get(&mut anon, "/v2/x/tags/list", &[("Authorization", &auth)]);
    assert_eq!(
        r.status, 404,
        "alice should pass the policy (and find no repository)"
    );
    let mut ci = tls_connect(&srv, pki.client_config(Some("ci"), v)).unwrap();
    assert_eq!(tls_get(&mut ci, "/v2/x/tags/list", &[]).status, 404);

    // The same configuration with certificates required: no certificate, no connection.
    let dir = TempDir::new("mtlsreq");
    let pki = Pki::new(&dir.0, &[("ci", "builder-1", "ci")]);
    let text = config_text(
        &dir.0,
        "",
        &format!("{repos}\n{ident}\n{}", pki.tls_section(true, Some(true))),
    );
    let srv = Server::start_config(dir, &text, &[]);
    let refused = tls_connect(&srv, pki.client_config(None, v))
        .and_then(|mut s| try_tls_get(&mut s, "/v2/x/tags/list", &[("Authorization", &auth)]));
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    let mut ci = tls_connect(&srv, pki.client_config(Some("ci"), v)).unwrap();
    assert_eq!(tls_get(&mut ci, "/v2/x/tags/list", &[]).status, 404);
}

/// Basic auth: a wrong password is 401 with a challenge (never anonymous); anonymous
/// requests are decided by policy (401 with a challenge when denied); a known identity that
/// is denied gets 403 DENIED; repeated failures are rate-limited.
#[test]
fn basic_auth_challenges_denials_and_rate_limit() {
    let ident = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n[identity.eve]\nusername = \"eve\"\npassword = \"{}\"\n",
        hash_password("wonderland"),
        hash_password("apple")
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = [\n  \
        'request.action == \"get-api-version\" || request.action == \"get-manifest\" || request.action == \"list-tags\"',\n  \
        'identity.id == \"alice\"',\n]\n";
    let srv = Server::start_with("", &format!("{repos}\n{ident}"));
    let alice = basic("alice", "wonderland");
    let eve = basic("eve", "apple");
    // Anonymous reads are allowed by policy; anonymous pushes are challenged.
    assert_eq!(srv.get("/v2/").status, 200);
    let r = srv.request("POST", "/v2/p/blobs/uploads/", &[], b"");
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Basic realm="));
    // Wrong password: 401 even where anonymous access would be allowed.
    let r = srv.request(
        "GET",
        "/v2/",
        &[("Authorization", &basic("alice", "nope"))],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // Known and allowed; known and denied.
    assert_eq!(start_upload_as(&srv, &alice).status, 202);
    let r = start_upload_as(&srv, &eve);
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
    // Empty credentials (what podman and skopeo send without a login) are anonymous: they
    // never count as failed logins, however many there are.
    for _ in 0..12 {
        let r = start_upload_as(&srv, "Basic Og==");
        assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    }
    assert_eq!(start_upload_as(&srv, &alice).status, 202);
    // Brute force: after 10 failures (one above, then guesses), even the right password is
    // refused for the rest of the window.
    let mut failures = 1;
    loop {
        let r = srv.request(
            "GET",
            "/v2/",
            &[("Authorization", &basic("eve", &format!("guess{failures}")))],
            b"",
        );
        if r.status == 429 {
            break;
        }
        assert_eq!(r.status, 401);
        failures += 1;
        assert!(failures <= 10, "no rate limit after {failures} failures");
    }
    assert_eq!(failures, 10);
    let r = srv.request("GET", "/v2/", &[("Authorization", &eve)], b"");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "TOOMANYREQUESTS")
    );
    // Other users from other addresses are not affected... but this test shares one address,
    // which is limited too after 10 failures: alice is refused from here for the window.
    let r = srv.request("GET", "/v2/", &[("Authorization", &alice)], b"");
    assert_eq!(r.status, 429);
}

/// Every action, for a default-allow and a default-deny repository, with policies that use
/// every variable; `_catalog` lists only what the caller may list.
#[test]
fn policy_matrix_over_every_action() {
    let ident = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n",
        hash_password("pw")
    );
    let repos = "\
[[repository]]
namespace = \"\"
policy_default_allow = true
policies = []

[[repository]]
namespace = \"open\"
policy_default_allow = true
policies = [
  'request.action == \"delete-manifest\" && identity.username != \"alice\"',
  'request.action == \"delete-blob\" && identity.id == \"\"',
  'request.reference == \"forbidden\"',
  'request.digest == \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"',
]

[[repository]]
namespace = \"locked\"
policy_default_allow = false
policies = [
  'identity.id == \"alice\" && request.namespace.startsWith(\"locked/\")',
  'identity.certificate.common_names.exists(c, c == \"robot\") || identity.certificate.organizations.exists(o, o == \"robots\")',
  'request.action == \"list-catalog\" && identity.username == \"alice\"',
]
";
    let srv = Server::start_with("", &format!("{repos}\n{ident}"));
    let alice = basic("alice", "pw");
    // Seed both repositories as alice (allowed everywhere).
    let seed = |repo: &str| {
        let cfg = srv_push(&srv, repo, b"{}", &alice);
        let layer = srv_push(&srv, repo, b"layer", &alice);
        let m = format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{layer}\",\"size\":5}}]}}");
        let r = srv.request(
            "PUT",
            &format!("/v2/{repo}/manifests/v1"),
            &[("Content-Type", OCI_MANIFEST), ("Authorization", &alice)],
            m.as_bytes(),
        );
        assert_eq!(r.status, 201, "seed {repo}");
        (digest(m.as_bytes()), layer)
    };
    let (open_m, open_l) = seed("open/app");
    let (locked_m, locked_l) = seed("locked/app");
    let who: [(&str, Option<&str>); 2] = [("anonymous", None), ("alice", Some(alice.as_str()))];
    // (action, method, path, expected status for [anonymous, alice])
    let zero = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let cases: Vec<(&str, &str, String, [u16; 2])> = vec![
        ("get-api-version", "GET", "/v2/".into(), [200, 200]),
        (
            "get-manifest",
            "GET",
            format!("/v2/open/app/manifests/{open_m}"),
            [200, 200],
        ),
        (
            "get-manifest ref",
            "GET",
            "/v2/open/app/manifests/forbidden".into(),
            [401, 403],
        ),
        (
            "get-blob",
            "GET",
            format!("/v2/open/app/blobs/{open_l}"),
            [200, 200],
        ),
        (
            "get-blob digest",
            "GET",
            format!("/v2/open/app/blobs/{zero}"),
            [401, 403],
        ),
        (
            "list-tags",
            "GET",
            "/v2/open/app/tags/list".into(),
            [200, 200],
        ),
        (
            "get-referrers",
            "GET",
            format!("/v2/open/app/referrers/{open_m}"),
            [200, 200],
        ),
        (
            "put-blob",
            "POST",
            "/v2/open/app/blobs/uploads/".into(),
            [202, 202],
        ),
        (
            "put-manifest",
            "PUT",
            "/v2/open/app/manifests/v2".into(),
            [400, 400],
        ),
        (
            "delete-blob",
            "DELETE",
            format!("/v2/open/app/blobs/{zero}"),
            [401, 403],
        ),
        (
            "delete-manifest",
            "DELETE",
            "/v2/open/app/manifests/nosuch".into(),
            [401, 404],
        ),
        (
            "get-manifest locked",
            "GET",
            format!("/v2/locked/app/manifests/{locked_m}"),
            [401, 200],
        ),
        (
            "get-blob locked",
            "GET",
            format!("/v2/locked/app/blobs/{locked_l}"),
            [401, 200],
        ),
        (
            "list-tags locked",
            "GET",
            "/v2/locked/app/tags/list".into(),
            [401, 200],
        ),
        (
            "get-referrers locked",
            "GET",
            format!("/v2/locked/app/referrers/{locked_m}"),
            [401, 200],
        ),
        (
            "put-blob locked",
            "POST",
            "/v2/locked/app/blobs/uploads/".into(),
            [401, 202],
        ),
        (
            "put-manifest locked",
            "PUT",
            "/v2/locked/app/manifests/v2".into(),
            [401, 400],
        ),
        (
            "delete-blob locked",
            "DELETE",
            format!("/v2/locked/app/blobs/{zero}"),
            [401, 404],
        ),
        (
            "delete-manifest locked",
            "DELETE",
            "/v2/locked/app/manifests/nosuch".into(),
            [401, 404],
        ),
        (
            "delete-blob open by alice",
            "DELETE",
            format!("/v2/open/app/blobs/{open_l}"),
            [401, 202],
        ),
    ];
    for (name, method, path, want) in &cases {
        for (i, (label, auth)) in who.iter().enumerate() {
            let headers: Vec<(&str, &str)> =
                auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
            let mut headers = headers;
            if *method == "PUT" {
                headers.push(("Content-Type", OCI_MANIFEST));
            }
            let body: &[u8] = if *method == "PUT" { b"{}" } else { b"" };
            let r = srv.request(method, path, &headers, body);
            assert_eq!(
                r.status,
                want[i],
                "{name} as {label}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    // list-catalog: anonymous sees only what the locked namespace's policies let it list.
    let anon = srv.get("/v2/_catalog").json();
    assert_eq!(anon["repositories"], serde_json::json!(["open/app"]));
    let a = srv
        .request("GET", "/v2/_catalog", &[("Authorization", &alice)], b"")
        .json();
    assert_eq!(
        a["repositories"],
        serde_json::json!(["locked/app", "open/app"])
    );
}

/// With credentials configured, an anonymous `_catalog` that may list none of the stored
/// repositories is challenged (401 + WWW-Authenticate), as distribution does, so clients that
/// send credentials only after a challenge list what they may; an empty registry is `[]`.
#[test]
fn anonymous_catalog_is_challenged_when_it_may_list_nothing() {
    let ident = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n",
        hash_password("wonderland")
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = ['identity.id == \"alice\"']\n";
    let srv = Server::start_with("", &format!("{repos}\n{ident}"));
    let alice = basic("alice", "wonderland");
    let r = srv.get("/v2/_catalog");
    assert_eq!(r.status, 200, "an empty registry has nothing to hide");
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
    // A repository is listed from its first manifest.
    let config = b"{}";
    let cd = srv_push(&srv, "private/app", config, &alice);
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\
         \"digest\":\"{cd}\",\"size\":{}}},\"layers\":[]}}",
        config.len()
    );
    let r = srv.request(
        "PUT",
        "/v2/private/app/manifests/v1",
        &[("Authorization", &alice), ("Content-Type", OCI_MANIFEST)],
        manifest.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = srv.get("/v2/_catalog");
    assert_eq!((r.status, r.error_code().as_str()), (401, "UNAUTHORIZED"));
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic "));
    let r = srv.request("GET", "/v2/_catalog", &[("Authorization", &alice)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["private/app"]));
}

fn srv_push(srv: &Server, repo: &str, data: &[u8], auth: &str) -> String {
    let d = digest(data);
    let r = srv.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Authorization", auth)],
        data,
    );
    assert_eq!(r.status, 201);
    d
}

/// A broken policy fails check-config and startup, naming the repository and the policy.
#[test]
fn broken_policy_fails_check_config_and_startup() {
    let dir = TempDir::new("badpolicy");
    let repos = "[[repository]]\nnamespace = \"team\"\npolicy_default_allow = true\npolicies = ['request.action == ', 'true']\n";
    let text = config_text(&dir.0, "", repos);
    let cfg = dir.0.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    for cmd in ["check-config", "serve"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
            .args([cmd, "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "{cmd} accepted a broken policy");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("team") && err.contains("policies[0]"),
            "{cmd}: {err}"
        );
    }
}

/// Starts an upload in repository `p` with the given Authorization header value.
fn start_upload_as(srv: &Server, authorization: &str) -> Resp {
    srv.request(
        "POST",
        "/v2/p/blobs/uploads/",
        &[("Authorization", authorization)],
        b"",
    )
}
