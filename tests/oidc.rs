//! OIDC / JWT identities against a running server and a real identity provider on 127.0.0.1:
//! discovery and JWKS over HTTP, tokens signed with real ES256 and RS256 keys.

mod common;
// Only this suite (and the interop helper) needs the identity provider.
#[path = "common/issuer.rs"]
mod issuer;

use std::time::Duration;

use base64::Engine;
use common::*;
use issuer::{now, Issuer, SigningKey};
use serde_json::json;

const AUDIENCE: &str = "origin";

fn basic(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A provider section for `issuer`, with `extra` keys.
fn provider(issuer: &Issuer, extra: &str) -> String {
    format!(
        "[oidc.ci]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nusername_claim = \"sub\"\n{extra}\n",
        issuer.url
    )
}

/// Anyone may read and write outside `acme`; in `acme`, the release workflow of acme/app on
/// main, or the password identity `admin`.
fn policies() -> String {
    r#"
[[repository]]
namespace = ""
policy_default_allow = true
policies = []

[[repository]]
namespace = "acme"
policies = [
  'identity.oidc.provider == "ci" && identity.oidc.claims.repository == "acme/app" && identity.oidc.claims.ref == "refs/heads/main" && identity.oidc.claims.workflow == "release"',
  'identity.username == "admin"',
]
"#
    .to_string()
}

fn start(issuer: &Issuer, provider_extra: &str, extra: &str) -> Server {
    let dir = TempDir::new("oidc");
    let text = config_text(
        &dir.0,
        "",
        &format!(
            "{}\n{}\n{extra}",
            provider(issuer, provider_extra),
            policies()
        ),
    )
    .replace("filter = \"info\"", "filter = \"debug\"");
    Server::start_config(dir, &text, &[])
}

/// A counter from /metrics (0 when absent).
fn counter(srv: &Server, name: &str) -> u64 {
    let text = String::from_utf8(srv.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn status(srv: &Server, method: &str, path: &str, auth: &str) -> u16 {
    srv.request(method, path, &[("Authorization", auth)], b"")
        .status
}

/// One request from the loopback address `from` (127.0.0.x): failures are counted per client
/// address, so a test that makes many on purpose spreads them over addresses.
fn request_from(srv: &Server, from: &str, method: &str, path: &str, auth: &str) -> Resp {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&srv.addr.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send(&mut s, method, path, &[("Authorization", auth)], b"");
    read_response(&mut s, method == "HEAD").expect("response")
}

/// Good tokens are accepted as Bearer and as a Basic password (ES256 and RS256, found by
/// discovery); expired, not yet valid, wrong audience, wrong issuer, tampered, `alg: none`
/// and HMAC tokens are refused with 401, never served as anonymous; tokens never reach the
/// log, even at debug level.
#[test]
fn valid_tokens_are_accepted_and_bad_ones_refused() {
    let es = SigningKey::es256("es-1");
    let rs = SigningKey::rs256("rs-1");
    let issuer = Issuer::start(&[&es, &rs]);
    let mut srv = start(&issuer, "", "");
    let good = es.sign(&issuer.claims(AUDIENCE, json!({})));

    // Anonymous is allowed on /v2/ here: a bad token must still be a 401.
    assert_eq!(srv.get("/v2/").status, 200);
    let r = srv.request("GET", "/v2/", &[("Authorization", &bearer(&good))], b"");
    assert_eq!(r.status, 200);
    assert_eq!(status(&srv, "GET", "/v2/", &basic("x", &good)), 200);
    let rsa = rs.sign(&issuer.claims(AUDIENCE, json!({})));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&rsa)), 200);
    // Verified once each; then served from the cache, as Bearer or as a password.
    let checks = counter(&srv, "origin_oidc_signature_checks_total");
    assert_eq!(checks, 2);
    for _ in 0..3 {
        assert_eq!(status(&srv, "GET", "/v2/", &bearer(&good)), 200);
        assert_eq!(status(&srv, "GET", "/v2/", &basic("y", &rsa)), 200);
    }
    assert_eq!(counter(&srv, "origin_oidc_signature_checks_total"), checks);

    let mut refused = Vec::new();
    let claims = |extra| issuer.claims(AUDIENCE, extra);
    refused.push((
        "expired",
        es.sign(&claims(json!({"exp": now() - 3600, "nbf": now() - 7200}))),
    ));
    refused.push((
        "not yet valid",
        es.sign(&claims(json!({"nbf": now() + 3600}))),
    ));
    refused.push(("no exp", {
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("exp");
        es.sign(&c)
    }));
    refused.push((
        "wrong audience",
        es.sign(&issuer.claims("someone-else", json!({}))),
    ));
    let other = Issuer::start(&[&es]);
    refused.push(("wrong issuer", es.sign(&other.claims(AUDIENCE, json!({})))));
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = good.split('.').collect();
    let forged = claims(json!({"sub": "admin", "repository": "acme/app"}));
    refused.push((
        "tampered payload",
        format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(forged.to_string()),
            parts[2]
        ),
    ));
    let none_header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    refused.push((
        "alg none",
        format!("{none_header}.{}.{}", parts[1], parts[2]),
    ));
    refused.push((
        "alg none, no signature",
        format!("{none_header}.{}.", parts[1]),
    ));
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    refused.push(("HS256", hmac));
    refused.push(("not a token", "hunter2".to_string()));
    // Two failures per token, each token from its own address (failures are rate-limited
    // per address).
    for (i, (what, token)) in refused.iter().enumerate() {
        let from = format!("127.0.0.{}", 10 + i);
        let r = request_from(&srv, &from, "GET", "/v2/", &bearer(token));
        assert_eq!(r.status, 401, "{what} as Bearer");
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Basic "),
            "{what}: the challenge stays Basic"
        );
        assert_eq!(
            request_from(&srv, &from, "GET", "/v2/", &basic("x", token)).status,
            401,
            "{what} as Basic password"
        );
    }
    // The good token still works (and came from the cache).
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&good)), 200);

    srv.logs_until("no such line", Duration::from_millis(500));
    assert!(
        srv.seen.iter().any(|l| l.contains("OIDC token rejected")),
        "rejections are logged at debug level"
    );
    for (what, token) in refused.iter().chain([("good", good.clone())].iter()) {
        let signature = token.rsplit('.').next().unwrap();
        let payload = token.split('.').nth(1).unwrap_or("");
        for line in &srv.seen {
            assert!(
                (signature.len() < 16 || !line.contains(signature))
                    && (payload.len() < 16 || !line.contains(payload)),
                "{what}: token in the log: {line}"
            );
        }
    }
}

/// A policy on claims: the release workflow on main may push to acme/app, the same
/// repository's other workflow may not; a password identity still works in the same
/// namespace, and anonymous is challenged.
#[test]
fn a_policy_on_claims_allows_one_workflow_and_denies_another() {
    let key = SigningKey::es256("k");
    let issuer = Issuer::start(&[&key]);
    let pw = "s3cret";
    let identity = format!(
        "[identity.admin]\nusername = \"admin\"\npassword = \"{}\"\n",
        hash_password(pw)
    );
    let srv = start(&issuer, "", &identity);
    let token = |workflow: &str, r#ref: &str| {
        key.sign(&issuer.claims(
            AUDIENCE,
            json!({"repository": "acme/app", "ref": r#ref, "workflow": workflow}),
        ))
    };
    let upload = "/v2/acme/app/blobs/uploads/";
    let release = token("release", "refs/heads/main");
    assert_eq!(status(&srv, "POST", upload, &bearer(&release)), 202);
    assert_eq!(status(&srv, "POST", upload, &basic("ci", &release)), 202);
    let r = srv.request(
        "POST",
        upload,
        &[("Authorization", &bearer(&token("lint", "refs/heads/main")))],
        b"",
    );
    assert_eq!((r.status, r.error_code().as_str()), (403, "DENIED"));
    let feature = token("release", "refs/heads/feature");
    assert_eq!(status(&srv, "POST", upload, &bearer(&feature)), 403);
    // A token without the claims at all: the policy is false, not an error.
    let bare = key.sign(&issuer.claims(AUDIENCE, json!({})));
    assert_eq!(status(&srv, "POST", upload, &bearer(&bare)), 403);
    assert_eq!(status(&srv, "POST", upload, &basic("admin", pw)), 202);
    assert_eq!(status(&srv, "POST", upload, &basic("admin", "wrong")), 401);
    assert_eq!(srv.request("POST", upload, &[], b"").status, 401);
    // Elsewhere anyone may push: the token is not needed, but a verified one is fine.
    assert_eq!(
        status(&srv, "POST", "/v2/other/blobs/uploads/", &bearer(&feature)),
        202
    );
}

/// Key rotation: a token signed with a new `kid` makes the server fetch the JWKS again, at
/// most once per `keys_refresh_min`; an unknown `kid` inside that interval is refused
/// without a fetch. A verified token stays accepted from the cache after its key is gone,
/// while a new token with that key is refused once the keys were fetched again.
#[test]
fn unknown_kid_fetches_keys_again_and_follows_rotation() {
    let old = SigningKey::es256("old");
    let new = SigningKey::es256("new");
    let issuer = Issuer::start(&[&old]);
    let srv = start(&issuer, "keys_refresh_min = \"3s\"", "");
    let sign = |k: &SigningKey, n: u32| k.sign(&issuer.claims(AUDIENCE, json!({"n": n})));
    let cached = sign(&old, 0);
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&cached)), 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(&old, 1))), 200);
    assert_eq!(issuer.jwks_fetches(), 1, "known keys are not fetched again");

    issuer.publish(&[&new]);
    // Within keys_refresh_min (3s) of the last fetch: refused, no fetch.
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(&new, 2))), 401);
    assert_eq!(issuer.jwks_fetches(), 1);
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(&new, 3))), 200);
    assert_eq!(
        issuer.jwks_fetches(),
        2,
        "the new kid fetched the keys once"
    );
    let made_up = SigningKey::es256("made-up");
    for n in 4..10 {
        assert_eq!(
            status(&srv, "GET", "/v2/", &bearer(&sign(&made_up, n))),
            401
        );
    }
    assert_eq!(issuer.jwks_fetches(), 2, "unknown kids are rate-limited");

    // The old key is gone from the fetched set: a new token with it is refused ...
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(&old, 10))), 401);
    // ... but the token verified before is still trusted from the cache.
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&cached)), 200);
}

/// With the provider unreachable, tokens signed with keys already fetched keep working
/// (even after `keys_cache` has run out) and unknown keys fail closed.
#[test]
fn unreachable_provider_keeps_cached_keys_and_fails_closed() {
    let key = SigningKey::es256("k1");
    let issuer = Issuer::start(&[&key]);
    let srv = start(
        &issuer,
        "keys_cache = \"2s\"\nkeys_refresh_min = \"1s\"",
        "",
    );
    let sign = |n: u32| key.sign(&issuer.claims(AUDIENCE, json!({"n": n})));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(0))), 200);
    issuer.set_down(true);
    std::thread::sleep(Duration::from_millis(2100));
    // keys_cache (2s) has passed: the fetch fails, the held key still verifies.
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(1))), 200);
    assert_eq!(counter(&srv, "origin_oidc_key_fetch_failures_total"), 1);
    let other = SigningKey::es256("k2");
    let unknown = other.sign(&issuer.claims(AUDIENCE, json!({})));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&unknown)), 401);
    // Back up, and past keys_refresh_min: the new key is found.
    issuer.publish(&[&key, &other]);
    issuer.set_down(false);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&unknown)), 200);
}

/// An HTTPS provider is reached with its `ca_bundle` as the trusted roots; without it the
/// certificate is not trusted, nothing is fetched and tokens are refused.
#[test]
fn https_provider_is_trusted_through_its_ca_bundle() {
    let dir = TempDir::new("oidc-pki");
    let pki = common::pki::Pki::new(&dir.0, &[]);
    let key = SigningKey::es256("k");
    let issuer = Issuer::start_tls(&[&key], &pki);
    assert!(issuer.url.starts_with("https://127.0.0.1:"));
    let token = key.sign(&issuer.claims(AUDIENCE, json!({})));
    let bundle = format!("ca_bundle = \"{}\"", pki.ca.display());
    let trusted = start(&issuer, &bundle, "");
    assert_eq!(status(&trusted, "GET", "/v2/", &bearer(&token)), 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    let mut untrusted = start(&issuer, "", "");
    assert_eq!(status(&untrusted, "GET", "/v2/", &bearer(&token)), 401);
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "no JWKS fetched over an untrusted connection"
    );
    assert!(untrusted
        .logs_until("OIDC signing keys not fetched", Duration::from_secs(5))
        .is_some());
}

/// Providers reload on SIGHUP like identities and policies; `check-config` rejects a bad
/// provider naming the key.
#[test]
fn providers_reload_and_are_checked() {
    let key = SigningKey::es256("k");
    let issuer = Issuer::start(&[&key]);
    let dir = TempDir::new("oidc-reload");
    let base = config_text(&dir.0, "", &policies());
    let mut srv = Server::start_config(dir, &base, &[]);
    let token = key.sign(&issuer.claims(
        AUDIENCE,
        json!({"repository": "acme/app", "ref": "refs/heads/main", "workflow": "release"}),
    ));
    let upload = "/v2/acme/app/blobs/uploads/";
    // No provider: credentials are ignored, and anonymous may not push to acme.
    assert_eq!(status(&srv, "POST", upload, &bearer(&token)), 401);
    std::fs::write(
        &srv.config_path,
        format!("{base}\n{}", provider(&issuer, "")),
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    assert_eq!(status(&srv, "POST", upload, &bearer(&token)), 202);

    let check = |text: &str| {
        let path = srv.dir.0.join("check.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let ok = check(&format!("{base}\n{}", provider(&issuer, "")));
    assert!(ok.status.success(), "{ok:?}");
    let bad = check(&format!(
        "{base}\n{}",
        provider(&issuer, "").replace(&issuer.url, "ftp://idp")
    ));
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("oidc.ci.issuer"), "{err}");
    let bad = check(&format!(
        "{base}\n{}",
        provider(&issuer, "ca_bundle = \"/nonexistent.pem\"")
    ));
    assert!(!bad.status.success(), "a missing ca_bundle fails the check");
}

/// Failed tokens count against the client address's limit like failed passwords, in the
/// same window: past ten failures (tokens as Bearer, tokens as Basic passwords and wrong
/// passwords together) the address gets 429 with Retry-After, even with a good token, and
/// the rate-limit metric counts it; another address is not affected.
#[test]
fn failed_tokens_are_rate_limited_like_passwords() {
    let key = SigningKey::es256("k");
    let issuer = Issuer::start(&[&key]);
    let hash = hash_password("admin-pw");
    let admin = format!("[identity.admin]\nusername = \"admin\"\npassword = \"{hash}\"\n");
    let srv = start(&issuer, "", &admin);
    let good = key.sign(&issuer.claims(AUDIENCE, json!({})));
    let forged = SigningKey::es256("k").sign(&issuer.claims(AUDIENCE, json!({})));
    let from = "127.0.0.2";
    for _ in 0..4 {
        let r = request_from(&srv, from, "GET", "/v2/", &bearer(&forged));
        assert_eq!(r.status, 401);
    }
    for _ in 0..3 {
        let r = request_from(&srv, from, "GET", "/v2/", &basic("x", &forged));
        assert_eq!(r.status, 401);
    }
    for _ in 0..3 {
        let r = request_from(&srv, from, "GET", "/v2/", &basic("admin", "wrong"));
        assert_eq!(r.status, 401);
    }
    assert_eq!(counter(&srv, "origin_auth_failures_total"), 10);
    assert_eq!(counter(&srv, "origin_auth_rate_limited_total"), 0);
    for auth in [
        bearer(&good),
        bearer(&forged),
        basic("x", &good),
        basic("admin", "admin-pw"),
    ] {
        let r = request_from(&srv, from, "GET", "/v2/", &auth);
        assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("retry-after"), Some("60"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["errors"][0]["code"],
            "TOOMANYREQUESTS"
        );
    }
    assert_eq!(counter(&srv, "origin_auth_rate_limited_total"), 4);
    assert_eq!(counter(&srv, "origin_auth_failures_total"), 10);
    let r = request_from(&srv, "127.0.0.3", "GET", "/v2/", &bearer(&good));
    assert_eq!(r.status, 200, "another address is not limited");
}

/// A reload keeps the signing keys of a provider whose section did not change: with the
/// provider down, a token never seen before still verifies after SIGHUP, with no fetch. A
/// provider whose section changed starts over (and fails closed while its provider is down).
#[test]
fn a_reload_keeps_the_keys_of_unchanged_providers() {
    let key = SigningKey::es256("k");
    let issuer = Issuer::start(&[&key]);
    let dir = TempDir::new("oidc-keep");
    let base = config_text(&dir.0, "", &policies());
    let with = |extra: &str| format!("{base}\n{}", provider(&issuer, extra));
    let mut srv = Server::start_config(dir, &with(""), &[]);
    let sign = |n: u32| key.sign(&issuer.claims(AUDIENCE, json!({"n": n})));
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(0))), 200);
    assert_eq!(issuer.jwks_fetches(), 1);
    issuer.set_down(true);
    // An unrelated change: a repository entry more.
    let more = "[[repository]]\nnamespace = \"other\"\npolicy_default_allow = true\n";
    std::fs::write(&srv.config_path, format!("{}\n{more}", with(""))).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(1))), 200);
    assert_eq!(issuer.jwks_fetches(), 1, "no fetch after the reload");
    // The provider's own section changes: its keys are fetched again, and cannot be.
    srv.seen.clear();
    std::fs::write(&srv.config_path, with("leeway = \"30s\"")).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("second reload logged");
    assert_eq!(status(&srv, "GET", "/v2/", &bearer(&sign(2))), 401);
}

/// A token identity has `identity.id` = `oidc:<provider>:<sub>`, for policies and events.
#[test]
fn token_identities_have_an_id() {
    let key = SigningKey::es256("k");
    let issuer = Issuer::start(&[&key]);
    let only = "[[repository]]\nnamespace = \"ids\"\n         policies = ['identity.id == \"oidc:ci:repo:acme/app:ref:refs/heads/main\"']\n";
    let srv = start(&issuer, "", only);
    let upload = "/v2/ids/app/blobs/uploads/";
    let token = key.sign(&issuer.claims(AUDIENCE, json!({"actor": "octocat"})));
    assert_eq!(status(&srv, "POST", upload, &bearer(&token)), 202);
    let other = key.sign(&issuer.claims(
        AUDIENCE,
        json!({"actor": "octocat", "sub": "repo:acme/app:ref:refs/heads/dev"}),
    ));
    assert_eq!(status(&srv, "POST", upload, &bearer(&other)), 403);
}

/// Not a check: prints what one signature verification costs, which decided that tokens are
/// verified inline on the worker rather than through the thread pool (run with --ignored).
#[test]
#[ignore]
fn bench_verification() {
    for key in [SigningKey::es256("k"), SigningKey::rs256("k")] {
        let issuer = Issuer::start(&[]);
        let token = key.sign(&issuer.claims(AUDIENCE, json!({})));
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(key.alg);
        validation.set_audience(&[AUDIENCE]);
        let n = 2000;
        let start = std::time::Instant::now();
        for _ in 0..n {
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        }
        println!("{:?}: {:?} per verification", key.alg, start.elapsed() / n);
    }
}
