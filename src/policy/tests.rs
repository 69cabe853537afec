use super::*;

fn repo(namespace: &str, default_allow: bool, policies: &[&str]) -> RepositoryConfig {
    RepositoryConfig {
        namespace: namespace.to_string(),
        policy_default_allow: default_allow,
        policies: policies.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

fn user(id: &str, username: &str) -> Identity {
    Identity {
        id: Some(id.into()),
        username: Some(username.into()),
        ..Identity::default()
    }
}

fn cert(cn: &str, orgs: &[&str]) -> Identity {
    Identity::default().with_certificate(
        vec![cn.into()],
        orgs.iter().map(|o| o.to_string()).collect(),
    )
}

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The request the matrix sends for `action`: a digest on blob routes, a tag on manifests.
fn request(action: Action, namespace: &str) -> AccessRequest<'_> {
    use Action::*;
    let digest = matches!(action, PutBlob | GetBlob | DeleteBlob | GetReferrers).then_some(DIGEST);
    let reference =
        matches!(action, PutManifest | GetManifest | DeleteManifest).then_some("latest");
    AccessRequest {
        action,
        namespace,
        digest,
        reference,
    }
}

fn allowed(set: &PolicySet, who: &Identity, namespace: &str) -> Vec<&'static str> {
    Action::ALL
        .iter()
        .filter(|a| set.may(who, &request(**a, namespace)).is_allowed())
        .map(|a| a.as_str())
        .collect()
}

/// Every action, for several identities, on a default-deny and a default-allow repository
/// whose policies use every variable, gives exactly the expected decisions.
#[test]
fn matrix_over_every_action() {
    let set = PolicySet::compile(&[
        repo(
            "secure",
            false,
            &[
                r#"identity.username == "alice" && request.action in ["put-blob", "put-manifest", "get-blob", "get-manifest", "list-tags"]"#,
                r#""ops" in identity.certificate.organizations && request.action.startsWith("delete-")"#,
                r#"identity.certificate.common_names.exists(cn, cn == "reader") && request.action.startsWith("get-")"#,
                r#"identity.id == "robot" && request.digest.startsWith("sha256:") && request.namespace == "secure/app""#,
                r#"request.reference == "public" && request.action == "get-manifest""#,
                r#"request.action == "list-catalog" && identity.id != """#,
            ],
        ),
        repo(
            "open",
            true,
            &[
                r#"request.action.startsWith("delete-") && !("ops" in identity.certificate.organizations)"#,
                r#"request.action in ["put-blob", "put-manifest"] && identity.id == """#,
            ],
        ),
    ])
    .unwrap();
    let anon = Identity::default();
    let alice = user("alice", "alice");
    let ops = cert("deployer", &["ops"]);
    let reader = cert("reader", &[]);
    let robot = user("robot", "robot-user");

    let ns = "secure/app";
    assert_eq!(allowed(&set, &anon, ns), Vec::<&str>::new());
    assert_eq!(
        allowed(&set, &alice, ns),
        [
            "get-api-version",
            "put-blob",
            "get-blob",
            "put-manifest",
            "get-manifest",
            "list-catalog",
            "list-tags"
        ]
    );
    assert_eq!(
        allowed(&set, &ops, ns),
        ["get-api-version", "delete-blob", "delete-manifest"]
    );
    assert_eq!(
        allowed(&set, &reader, ns),
        [
            "get-api-version",
            "get-blob",
            "get-manifest",
            "get-referrers"
        ]
    );
    assert_eq!(
        allowed(&set, &robot, ns),
        [
            "get-api-version",
            "put-blob",
            "get-blob",
            "delete-blob",
            "get-referrers",
            "list-catalog"
        ]
    );
    // The namespace test in the robot policy: another repository of the entry.
    assert_eq!(
        allowed(&set, &robot, "secure/other"),
        ["get-api-version", "list-catalog"]
    );
    // request.reference: anyone may read the tag "public".
    let public = AccessRequest {
        reference: Some("public"),
        ..request(Action::GetManifest, ns)
    };
    assert!(set.may(&anon, &public).is_allowed());

    let ns = "open/app";
    assert_eq!(
        allowed(&set, &anon, ns),
        [
            "get-blob",
            "get-manifest",
            "get-referrers",
            "list-catalog",
            "list-tags"
        ]
    );
    let all_but_delete = [
        "get-api-version",
        "put-blob",
        "get-blob",
        "put-manifest",
        "get-manifest",
        "get-referrers",
        "list-catalog",
        "list-tags",
    ];
    assert_eq!(allowed(&set, &alice, ns), all_but_delete);
    assert_eq!(allowed(&set, &robot, ns), all_but_delete);
    assert_eq!(
        allowed(&set, &ops, ns),
        [
            "get-api-version",
            "get-blob",
            "delete-blob",
            "get-manifest",
            "delete-manifest",
            "get-referrers",
            "list-catalog",
            "list-tags"
        ]
    );
    assert_eq!(
        allowed(&set, &reader, ns),
        [
            "get-api-version",
            "get-blob",
            "get-manifest",
            "get-referrers",
            "list-catalog",
            "list-tags"
        ]
    );
}

/// The longest namespace that is a prefix on `/` boundaries wins; a trailing `/` is ignored.
#[test]
fn longest_prefix_on_segment_boundaries() {
    let set = PolicySet::compile(&[
        repo("", true, &[]),
        repo("team/", false, &[]),
        repo("team/app", true, &[]),
    ])
    .unwrap();
    let anon = Identity::default();
    let may = |name: &str| set.may(&anon, &request(Action::GetBlob, name));
    assert_eq!(may("team"), Decision::Deny);
    assert_eq!(may("team/app"), Decision::Allow);
    assert_eq!(may("team/app/x"), Decision::Allow);
    assert_eq!(may("team/app2"), Decision::Deny);
    assert_eq!(may("team/other"), Decision::Deny);
    assert_eq!(may("teamx"), Decision::Allow);
    assert_eq!(may("other/thing"), Decision::Allow);
}

/// A repository no entry matches is denied, whoever asks.
#[test]
fn no_matching_entry_denies() {
    let set = PolicySet::compile(&[repo("team", true, &[])]).unwrap();
    let alice = user("alice", "alice");
    assert!(set
        .may(&alice, &request(Action::GetBlob, "team/a"))
        .is_allowed());
    for action in Action::ALL {
        if action != Action::GetApiVersion {
            assert_eq!(set.may(&alice, &request(action, "other")), Decision::Deny);
        }
    }
    let empty = PolicySet::compile(&[]).unwrap();
    assert_eq!(
        empty.may(&alice, &request(Action::GetBlob, "a")),
        Decision::Deny
    );
}

/// `/v2/`: authenticated callers always pass; anonymous ones follow the "" entry, or are
/// denied (so they get a challenge) when there is none.
#[test]
fn api_version_rules() {
    let anon = Identity::default();
    let alice = user("alice", "alice");
    let base = request(Action::GetApiVersion, "");
    let no_root = PolicySet::compile(&[repo("team", true, &[])]).unwrap();
    assert_eq!(no_root.may(&anon, &base), Decision::Deny);
    assert_eq!(no_root.may(&alice, &base), Decision::Allow);
    assert_eq!(no_root.may(&cert("x", &[]), &base), Decision::Allow);

    let open_root = PolicySet::compile(&[repo("", true, &[])]).unwrap();
    assert_eq!(open_root.may(&anon, &base), Decision::Allow);

    let closed_root = PolicySet::compile(&[repo(
        "",
        false,
        &[r#"request.namespace.startsWith("pub/")"#],
    )])
    .unwrap();
    assert_eq!(closed_root.may(&anon, &base), Decision::Deny);
    assert_eq!(closed_root.may(&alice, &base), Decision::Allow);

    let probe_root = PolicySet::compile(&[repo(
        "",
        false,
        &[r#"request.action == "get-api-version" && request.namespace == """#],
    )])
    .unwrap();
    assert_eq!(probe_root.may(&anon, &base), Decision::Allow);
}

/// The catalog keeps only the repositories the identity may list-catalog on, in order.
#[test]
fn catalog_is_filtered_per_repository() {
    let set = PolicySet::compile(&[
        repo("", false, &[]),
        repo("pub", true, &[]),
        repo("team", false, &[r#"identity.username == "alice""#]),
    ])
    .unwrap();
    let names = ["a", "pub/x", "team/y", "pub", "teamz"];
    let anon = Identity::default();
    assert_eq!(set.filter_catalog(&anon, names), ["pub/x", "pub"]);
    let alice = user("alice", "alice");
    assert_eq!(
        set.filter_catalog(&alice, names),
        ["pub/x", "team/y", "pub"]
    );
}

fn compile_error(policy: &str) -> String {
    let e = PolicySet::compile(&[
        repo("", true, &[]),
        repo("team/a", false, &["true", policy]),
    ])
    .expect_err(policy);
    let text = e.to_string();
    assert!(text.contains("\"team/a\""), "{text}");
    assert!(text.contains("policies[1]"), "{text}");
    assert!(text.contains(policy), "{text}");
    text
}

/// Broken policies fail the load with a message naming the namespace, index and text.
#[test]
fn broken_policies_fail_compile() {
    assert!(compile_error(r#"identity.id =="#).contains("syntax"));
    assert!(compile_error(r#"user.id == "x""#).contains("unknown variable `user`"));
    assert!(compile_error(r#"identity.name == "x""#).contains("unknown attribute `identity.name`"));
    assert!(compile_error(r#"identity.id.size == 1"#).contains("no attribute"));
    // Only reached when the sample would take the branch: found by walking the tree.
    assert!(compile_error(r#"false && nope == 1"#).contains("unknown variable `nope`"));
    assert!(compile_error(r#"request.namespace"#).contains("not a bool"));
    assert!(compile_error(r#"size(identity.certificate.common_names) + 1"#).contains("not a bool"));
    assert!(compile_error(r#"request.action.nosuchfunction()"#).contains("fails"));
    assert!(compile_error(r#"identity.certificate.common_names[0] == "x""#).contains("fails"));
    assert!(compile_error(&format!("{} || true", "false || ".repeat(2000))).contains("longer"));
}

/// Comprehension variables, `has()`, type names and regexes are accepted.
#[test]
fn valid_forms_compile() {
    PolicySet::compile(&[repo(
        "",
        false,
        &[
            r#"identity.certificate.organizations.exists(o, o == "ops")"#,
            r#"identity.certificate.common_names.all(c, c.endsWith(".example.com"))"#,
            r#"has(identity.id) && type(identity.id) == string"#,
            r#"request.namespace.matches("^team/[a-z]+$")"#,
            r#"[1, 2].map(x, x * 2).exists(y, y == 4) && {"k": request.action}["k"] != """#,
        ],
    )])
    .unwrap();
}

/// Duplicate namespaces (with or without a trailing `/`) are refused.
#[test]
fn duplicate_namespace_fails() {
    let e = PolicySet::compile(&[repo("team", true, &[]), repo("team/", true, &[])]).unwrap_err();
    assert_eq!(e, PolicyError::DuplicateNamespace("team".into()));
}

/// A policy that errors at run time denies, in a default-allow and a default-deny entry.
#[test]
fn runtime_error_denies() {
    // int("boom") fails; the samples never take that branch.
    let p = r#"request.reference == "boom" ? int(request.reference) > 0 : false"#;
    let set = PolicySet::compile(&[repo("allow", true, &[p]), repo("deny", false, &[p, "true"])])
        .unwrap();
    let anon = Identity::default();
    for ns in ["allow/x", "deny/x"] {
        let fine = AccessRequest {
            reference: Some("latest"),
            ..request(Action::GetManifest, ns)
        };
        assert_eq!(set.may(&anon, &fine), Decision::Allow, "{ns}");
        let boom = AccessRequest {
            reference: Some("boom"),
            ..request(Action::GetManifest, ns)
        };
        assert_eq!(set.may(&anon, &boom), Decision::Deny, "{ns}");
    }
}

/// One set is shared by every worker thread.
#[test]
fn policy_set_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<PolicySet>();
    let set = Arc::new(PolicySet::compile(&[repo("", false, &["identity.id == \"a\""])]).unwrap());
    let t = {
        let set = set.clone();
        std::thread::spawn(move || set.may(&user("a", "a"), &request(Action::GetBlob, "x")))
    };
    assert_eq!(t.join().unwrap(), Decision::Allow);
}

/// Prints the cost of one decision: `cargo test --release --lib policy::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_evaluation() {
    let set = PolicySet::compile(&[
        repo("", false, &[]),
        repo(
            "team",
            false,
            &[
                r#"identity.username == "alice" && request.action in ["put-blob", "put-manifest"]"#,
                r#""ops" in identity.certificate.organizations"#,
                r#"request.action.startsWith("get-") && identity.id != """#,
            ],
        ),
    ])
    .unwrap();
    let who = user("bob", "bob").with_certificate(vec!["bob".into()], vec!["dev".into()]);
    let cases = [
        ("third policy true", request(Action::GetBlob, "team/app")),
        ("three policies false", request(Action::PutBlob, "team/app")),
        ("entry without policies", request(Action::GetBlob, "other")),
    ];
    for (label, req) in cases {
        let n = 200_000;
        let start = std::time::Instant::now();
        let mut allowed = 0;
        for _ in 0..n {
            allowed += set.may(std::hint::black_box(&who), &req).is_allowed() as u32;
        }
        let per = start.elapsed() / n;
        println!("{label}: {per:?} per decision ({allowed} allowed)");
    }
}

fn token(provider: &str, claims: serde_json::Value) -> Identity {
    Identity {
        username: Some("sub".into()),
        oidc: Some(Arc::new(crate::auth::oidc::OidcIdentity {
            provider: provider.into(),
            claims: claims.as_object().cloned().unwrap(),
        })),
        ..Identity::default()
    }
}

/// `identity.oidc.claims` reads a token's claims (strings, numbers, bools, lists, nested
/// objects, `in` for presence); an absent claim is null, so claim policies are simply false
/// for other callers instead of failing (which would deny before a later policy allows).
#[test]
fn policies_read_token_claims() {
    let set = PolicySet::compile(&[repo(
        "acme",
        false,
        &[
            r#"identity.oidc.claims.repository == "acme/app" && identity.oidc.claims["ref"] == "refs/heads/main""#,
            r#"identity.oidc.provider == "gitlab" && identity.oidc.claims.project.id == 42 && "ops" in identity.oidc.claims.groups"#,
            r#""admin" in identity.oidc.claims && identity.oidc.claims.admin == true"#,
            r#"identity.username == "alice""#,
        ],
    )])
    .unwrap();
    let req = request(Action::PutBlob, "acme/app");
    let may = |who: &Identity| set.may(who, &req).is_allowed();
    let gh = |r: &str| {
        token(
            "github",
            serde_json::json!({"repository": "acme/app", "ref": r}),
        )
    };
    assert!(may(&gh("refs/heads/main")));
    assert!(!may(&gh("refs/heads/feature")));
    let gl = |id: i64, groups: &[&str]| {
        token(
            "gitlab",
            serde_json::json!({"project": {"id": id}, "groups": groups}),
        )
    };
    assert!(may(&gl(42, &["dev", "ops"])));
    assert!(!may(&gl(42, &["dev"])));
    assert!(!may(&gl(7, &["ops"])));
    assert!(may(&token("x", serde_json::json!({"admin": true}))));
    assert!(!may(&token("x", serde_json::json!({"admin": "true"}))));
    assert!(!may(&token("x", serde_json::json!({}))));
    // Password and anonymous callers reach the last policy: no claim policy failed on them.
    assert!(may(&user("alice", "alice")));
    assert!(!may(&user("bob", "bob")));
    assert!(!may(&Identity::default()));
    assert!(token("x", serde_json::json!({})).is_authenticated());

    // A list claim used unguarded fails on callers without it: caught at load.
    for bad in [
        "identity.oidc.nope == 1",
        "identity.oidc.provider.x == 1",
        r#""ops" in identity.oidc.claims.groups"#,
    ] {
        assert!(
            PolicySet::compile(&[repo("", false, &[bad])]).is_err(),
            "{bad}"
        );
    }
}

/// `explain` names the rule that decided: the matching policy by index and source, the
/// entry's default when none matched, no entry at all, and a policy that failed at run time.
#[test]
fn explain_names_the_deciding_rule() {
    let set = PolicySet::compile(&[
        repo(
            "team",
            false,
            &["identity.username == 'x'", "identity.username == 'alice'"],
        ),
        repo("open", true, &["request.action == 'delete-blob'"]),
        repo(
            "odd",
            false,
            &[r#"request.reference == "boom" ? int(request.reference) > 0 : false"#],
        ),
    ])
    .unwrap();
    let alice = user("alice", "alice");
    let why = |who: &Identity, action, ns| {
        let (decision, rule) = set.explain(who, &request(action, ns));
        (decision, rule.to_string())
    };
    assert_eq!(
        why(&alice, Action::PutBlob, "team/app"),
        (
            Decision::Allow,
            "repository \"team\": policies[1] `identity.username == 'alice'`".into()
        )
    );
    assert_eq!(
        why(&user("bob", "bob"), Action::PutBlob, "team"),
        (
            Decision::Deny,
            "repository \"team\": no policy matched; policy_default_allow = false".into()
        )
    );
    let (decision, rule) = why(&alice, Action::DeleteBlob, "open");
    assert_eq!(decision, Decision::Deny);
    assert!(
        rule.contains("policies[0] `request.action == 'delete-blob'`"),
        "{rule}"
    );
    assert_eq!(
        why(&alice, Action::GetBlob, "elsewhere"),
        (Decision::Deny, "no [[repository]] entry matches".into())
    );
    let boom = AccessRequest {
        reference: Some("boom"),
        ..request(Action::GetManifest, "odd")
    };
    let (decision, rule) = set.explain(&alice, &boom);
    assert_eq!(decision, Decision::Deny);
    assert!(rule.to_string().ends_with("failed at run time"), "{rule}");
}
