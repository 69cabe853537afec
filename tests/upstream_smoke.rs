//! The upstream harness itself: distribution (docker-registry) in each auth mode.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::upstream::{self, Upstream, UpstreamAuth};
use common::{bytes, OCI_MANIFEST};

/// Push, pull back, anonymous access, request counting, stop and restart.
fn exercise(auth: UpstreamAuth) {
    let Some(mut up) = Upstream::start(auth.clone()) else {
        return;
    };
    let repo = "library/smoke";
    let layer = bytes(7, 3000);
    let (manifest_digest, config_digest, layer_digest) = up.push_image(repo, "v1", &layer);
    assert_eq!(layer_digest, common::digest(&layer));
    let config = upstream::image_config(&layer_digest);
    assert_eq!(config_digest, common::digest(&config));
    let manifest =
        upstream::image_manifest(&config_digest, config.len(), &layer_digest, layer.len());
    assert_eq!(manifest_digest, common::digest(&manifest));

    // Pull back with credentials.
    let manifest_path = format!("/v2/{repo}/manifests/v1");
    let r = up.request_as(
        repo,
        "GET",
        &manifest_path,
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, manifest);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    let blob_path = format!("/v2/{repo}/blobs/{layer_digest}");
    let r = up.get(repo, &blob_path);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, layer);
    let r = up.get(repo, &format!("/v2/{repo}/blobs/{config_digest}"));
    assert_eq!(r.body, config);

    // The access log has each request once.
    assert_eq!(
        up.count_requests("GET", &layer_digest),
        1,
        "{}",
        up.log_text()
    );
    assert_eq!(up.count_requests("HEAD", &layer_digest), 0);
    assert_eq!(up.count_requests("GET", "/manifests/v1"), 1);
    assert_eq!(up.count_requests("PUT", "/manifests/v1"), 1);

    // Without credentials.
    let anon = up.request("GET", &blob_path, &[], b"");
    match &auth {
        UpstreamAuth::None => {
            assert_eq!(anon.status, 200);
            assert_eq!(anon.body, layer);
        }
        UpstreamAuth::Basic { user, .. } => {
            assert_eq!(anon.status, 401);
            assert_eq!(
                anon.header("www-authenticate"),
                Some(format!("Basic realm=\"{}\"", upstream::BASIC_REALM).as_str())
            );
            let wrong = upstream::basic_header(user, "not-the-password");
            let r = up.request("GET", &blob_path, &[("Authorization", &wrong)], b"");
            assert_eq!(r.status, 401);
        }
        UpstreamAuth::Token | UpstreamAuth::TokenWithBasic { .. } => {
            assert_eq!(anon.status, 401);
            let realm = up.token_realm().unwrap();
            let challenge = anon.header("www-authenticate").unwrap();
            assert_eq!(
                challenge,
                format!(
                    "Bearer realm=\"{realm}\",service=\"{}\",scope=\"repository:{repo}:pull\"",
                    upstream::SERVICE
                )
            );
            token_dance(&up, &auth, repo, &blob_path, &layer);
        }
    }
    let blob_gets = up.count_requests("GET", &layer_digest);

    // Stopped: nothing listens; back: same content.
    up.stop();
    assert!(!up.is_running());
    assert!(TcpStream::connect_timeout(&up.addr(), Duration::from_secs(1)).is_err());
    up.restart();
    let r = up.request_as(
        repo,
        "GET",
        &manifest_path,
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, manifest);
    let r = up.get(repo, &blob_path);
    assert_eq!(r.body, layer);
    assert_eq!(up.count_requests("GET", &layer_digest), blob_gets + 1);
    assert!(up.url().starts_with("http://127.0.0.1:"));
}

/// What a client does on a Bearer challenge: ask the realm for a token, then retry.
fn token_dance(up: &Upstream, auth: &UpstreamAuth, repo: &str, blob_path: &str, layer: &[u8]) {
    let realm = up.token_realm().unwrap();
    let issuer_addr = realm
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let target = format!(
        "/token?service={}&scope=repository%3A{}%3Apull",
        upstream::SERVICE,
        repo.replace('/', "%2F")
    );
    let get_token = |headers: &[(&str, &str)]| {
        let mut s = TcpStream::connect(&issuer_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        common::send(&mut s, "GET", &target, headers, b"");
        common::read_response(&mut s, false).unwrap()
    };
    let before = up.token_requests();
    let r = match auth.credentials() {
        Some((user, password)) => {
            let r = get_token(&[]);
            assert_eq!(r.status, 401);
            let wrong = upstream::basic_header(user, "wrong");
            assert_eq!(get_token(&[("Authorization", &wrong)]).status, 401);
            let right = upstream::basic_header(user, password);
            get_token(&[("Authorization", &right)])
        }
        None => get_token(&[]),
    };
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let expected_requests = if auth.credentials().is_some() { 3 } else { 1 };
    assert_eq!(up.token_requests(), before + expected_requests);
    assert!(up
        .token_request_log()
        .last()
        .unwrap()
        .starts_with("/token?"));
    let v = r.json();
    let token = v["token"].as_str().unwrap();
    assert_eq!(v["access_token"].as_str(), Some(token));
    assert_eq!(v["expires_in"], 300);
    assert!(v["issued_at"].as_str().unwrap().ends_with('Z'));
    let claims = upstream::base64_decode(token.split('.').nth(1).unwrap()).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["aud"], upstream::SERVICE);
    assert_eq!(
        claims["sub"],
        auth.credentials().map_or("anonymous", |c| c.0)
    );
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": repo, "actions": ["pull"]}])
    );

    let bearer = format!("Bearer {token}");
    let r = up.request("GET", blob_path, &[("Authorization", &bearer)], b"");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, layer);
    // A pull token does not allow a push.
    let r = up.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"insufficient_scope\""));
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn upstream_without_auth() {
    exercise(UpstreamAuth::None);
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn upstream_with_basic_auth() {
    exercise(UpstreamAuth::basic("alice", "s3cret pass"));
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn upstream_with_anonymous_tokens() {
    exercise(UpstreamAuth::Token);
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn upstream_with_tokens_for_basic_credentials() {
    exercise(UpstreamAuth::token_with_basic("bob", "hunter2"));
}

#[test]
fn encoders() {
    assert_eq!(upstream::base64_std(b""), "");
    assert_eq!(upstream::base64_std(b"f"), "Zg==");
    assert_eq!(upstream::base64_std(b"fo"), "Zm8=");
    assert_eq!(upstream::base64_std(b"foo"), "Zm9v");
    assert_eq!(upstream::base64_url(&[0xfb, 0xff]), "-_8");
    assert_eq!(upstream::base64_decode("-_8").unwrap(), [0xfb, 0xff]);
    assert_eq!(upstream::base64_decode("Zm9vYg==").unwrap(), b"foob");
    assert_eq!(upstream::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(upstream::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(upstream::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
}
