use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::auth::oidc::OidcIdentity;

fn parse(line: &str) -> Value {
    assert!(line.ends_with('\n'), "a record ends its line: {line:?}");
    assert_eq!(line.matches('\n').count(), 1, "one line: {line:?}");
    serde_json::from_str(line).unwrap()
}

/// Hostile names (quotes, newlines, control characters, a forged second record, non-ASCII)
/// stay inside their field: the record is one line that parses back to the same strings.
#[test]
fn hostile_names_cannot_break_or_forge_a_line() {
    let identity = Identity::default();
    let hostile = [
        "a\"b",
        "line\nbreak\r\n{\"action\":\"forged\"}",
        "tab\tnul\u{0}bell\u{7}esc\u{1b}",
        "back\\slash",
        "\u{2028}sep\u{2029}",
        "ünïcødé 🐳",
    ];
    for name in hostile {
        let mut r = Record::new(
            "manifest.put",
            Outcome::Denied,
            Actor::Client {
                identity: &identity,
                peer: "::1".parse().unwrap(),
            },
        );
        r.repository = Some(name);
        r.reference = Some(name);
        r.reason = Some(name);
        r.login_username = Some(name);
        let line = encode(&r, "2026-01-02T03:04:05.678Z");
        assert!(
            !line.trim_end().contains(['\n', '\r', '\u{0}', '\u{1b}']),
            "{line:?}"
        );
        let v = parse(&line);
        for field in ["repository", "reference", "reason", "login_username"] {
            assert_eq!(v[field], name, "{field} of {line}");
        }
        assert_eq!(v["action"], "manifest.put");
    }
}

/// The fields as documented: time first, the identity with certificate and OIDC parts, the
/// peer, no absent field, and `anonymous` for an empty identity.
#[test]
fn fields_of_a_client_and_of_the_registry() {
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), "https://token.example".into());
    claims.insert("sub".into(), "repo:acme/app:ref:main".into());
    claims.insert("secret_claim".into(), "never written".into());
    let identity = Identity {
        id: Some("oidc:ci:repo:acme/app:ref:main".into()),
        username: Some("acme".into()),
        common_names: vec!["builder".into()],
        organizations: vec!["CI".into()],
        oidc: Some(Arc::new(OidcIdentity {
            provider: "ci".into(),
            claims,
        })),
    };
    let mut r = Record::new(
        "blob.mount",
        Outcome::Allowed,
        Actor::Client {
            identity: &identity,
            peer: "192.0.2.7".parse().unwrap(),
        },
    );
    r.repository = Some("acme/app");
    r.digest = Some("sha256:00");
    r.from = Some("acme/base");
    let line = encode(&r, "2026-01-02T03:04:05.678Z");
    assert!(line.starts_with("{\"time\":\"2026-01-02T03:04:05.678Z\",\"action\":"));
    assert!(!line.contains("never written"), "{line}");
    let v = parse(&line);
    assert_eq!(v["outcome"], "allowed");
    assert_eq!(v["actor"], "client");
    assert_eq!(v["peer"], "192.0.2.7");
    assert_eq!(v["from"], "acme/base");
    let id = &v["identity"];
    assert_eq!(id["anonymous"], false);
    assert_eq!(id["username"], "acme");
    assert_eq!(id["certificate_cn"][0], "builder");
    assert_eq!(id["certificate_o"][0], "CI");
    assert_eq!(id["oidc_provider"], "ci");
    assert_eq!(id["oidc_issuer"], "https://token.example");
    assert_eq!(id["oidc_subject"], "repo:acme/app:ref:main");
    assert!(v.get("reason").is_none() && v.get("reference").is_none());

    let anonymous = Identity::default();
    let v = parse(&encode(
        &Record::new(
            "login",
            Outcome::Denied,
            Actor::Client {
                identity: &anonymous,
                peer: "127.0.0.1".parse().unwrap(),
            },
        ),
        "t",
    ));
    assert_eq!(v["identity"], serde_json::json!({"anonymous": true}));

    let mut gc = Record::new("manifest.delete", Outcome::Allowed, Actor::System("gc"));
    gc.repository = Some("acme/app");
    let v = parse(&encode(&gc, "t"));
    assert_eq!(v["actor"], "gc");
    assert!(v.get("identity").is_none() && v.get("peer").is_none());
}

/// Records are stamped in RFC 3339, UTC, to the millisecond.
#[test]
fn time_is_rfc3339_utc_milliseconds() {
    let t = now();
    assert_eq!(t.len(), "2026-01-02T03:04:05.678Z".len(), "{t}");
    assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    t.parse::<jiff::Timestamp>().unwrap();
}
