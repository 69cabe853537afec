//! Where a request's access decision went, in its trace (a real OTLP/HTTP receiver on
//! 127.0.0.1): Basic authentication with the argon2 verification apart, and the policy
//! evaluation of a repository with policies; a repository without policies has nothing to
//! evaluate and no policy span.

mod common;

use common::otlp::*;
use common::receiver::Receiver;
use common::*;

const PASSWORD: &str = "correct horse battery";

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    let raw = format!("{user}:{pass}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    format!("Basic {encoded}")
}

/// The spans of the one trace whose server span has `path`, once its `want` child arrived.
fn trace_of(rx: &Receiver, path: &str, want: &str) -> Vec<Span> {
    let spans = spans_until(rx, |s| {
        s.iter()
            .filter(|s| {
                s.kind == KIND_SERVER && s.attrs.get("url.path").map(String::as_str) == Some(path)
            })
            .any(|server| {
                s.iter()
                    .any(|c| c.trace_id == server.trace_id && c.name == want)
            })
    });
    let server = server_spans(&spans)
        .into_iter()
        .find(|s| s.attrs.get("url.path").map(String::as_str) == Some(path))
        .unwrap_or_else(|| panic!("a server span for {path}: {spans:#?}"))
        .clone();
    spans
        .into_iter()
        .filter(|s| s.trace_id == server.trace_id)
        .collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} in {spans:#?}"))
}

#[test]
fn authentication_and_policy_evaluation_are_spans_of_the_request() {
    let rx = Receiver::start();
    let hash = hash_password(PASSWORD);
    let config = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{hash}\"\n\n\
         [[repository]]\nnamespace = \"locked\"\npolicy_default_allow = false\n\
         policies = [\"identity.username == 'alice'\"]\n\n\
         [[repository]]\nnamespace = \"\"\npolicy_default_allow = true\n\n{}",
        tracing_section(&rx.url(""), 1.0)
    );
    let srv = Server::start_with("", &config);

    // Alice, to a repository with a policy: authenticated (argon2 on the first request),
    // then allowed by the policy (the manifest is not there: 404 after the decision).
    let alice = basic("alice", PASSWORD);
    let path = "/v2/locked/app/manifests/v1";
    let r = srv.request("GET", path, &[("Authorization", alice.as_str())], b"");
    assert_eq!(r.status, 404);
    let spans = trace_of(&rx, path, "policy.evaluate");
    let server = spans
        .iter()
        .find(|s| s.kind == KIND_SERVER)
        .expect("server span");
    assert_eq!(server.attrs["enduser.id"], "alice");
    let auth = named(&spans, "auth.basic");
    assert_eq!(
        auth.parent, server.span_id,
        "authentication under the request"
    );
    let argon2 = named(&spans, "auth.argon2");
    assert_eq!(
        argon2.parent, auth.span_id,
        "the verification under the authentication"
    );
    for attr in ["pool.wait_us", "argon2.verify_us"] {
        assert!(argon2.attrs.contains_key(attr), "{attr}: {argon2:#?}");
    }
    let policy = named(&spans, "policy.evaluate");
    assert_eq!(
        policy.parent, server.span_id,
        "policy evaluation under the request"
    );
    assert_eq!(policy.attrs["policy.namespace"], "locked");
    assert_eq!(policy.attrs["policy.count"], "1");
    assert_eq!(policy.attrs["oci.action"], "get-manifest");

    // Anonymous, to a repository without policies: decided by its default, nothing
    // evaluated, so no policy span; the operation span is there.
    let open = "/v2/open/app/manifests/v1";
    assert_eq!(srv.request("GET", open, &[], b"").status, 404);
    let spans = trace_of(&rx, open, "manifests.get");
    assert!(
        spans
            .iter()
            .all(|s| !s.name.starts_with("policy.") && !s.name.starts_with("auth.")),
        "{spans:#?}"
    );
}
