use std::net::IpAddr;

use super::*;

fn limits(toml_text: &str) -> Result<RateLimits, ConfigError> {
    #[derive(serde::Deserialize)]
    struct File {
        rate_limit: Vec<RateLimitConfig>,
    }
    let file: File = toml::from_str(toml_text).map_err(|e| ConfigError::new(e.to_string()))?;
    RateLimits::compile(&file.rate_limit)
}

fn req(action: Action, namespace: &str) -> AccessRequest<'_> {
    AccessRequest {
        action,
        namespace,
        digest: None,
        reference: None,
    }
}

fn user(name: &str) -> Identity {
    Identity {
        id: Some(name.into()),
        username: Some(name.into()),
        ..Identity::default()
    }
}

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
const OTHER_PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

/// Admits `n` requests in a row and counts the refusals.
fn refused(l: &RateLimits, who: &Identity, peer: IpAddr, r: &AccessRequest<'_>, n: usize) -> usize {
    (0..n).filter(|_| l.admit(who, peer, r).is_err()).count()
}

/// The burst passes, the next request is refused with a whole-second Retry-After naming
/// the group and the entry; other callers, and other groups, have their own buckets.
#[test]
fn a_burst_then_refusal_per_caller_and_group() {
    let l = limits("[[rate_limit]]\npull = { requests_per_second = 0.5, burst = 3 }\n").unwrap();
    let alice = user("alice");
    let pull = req(Action::GetManifest, "a/b");
    assert_eq!(refused(&l, &alice, PEER, &pull, 3), 0);
    let refusal = l.admit(&alice, PEER, &pull).unwrap_err();
    assert_eq!(refusal.group, Group::Pull);
    assert_eq!(refusal.entry, 0);
    assert_eq!(refusal.retry_after, Duration::from_secs(2));
    // Another identity, at the same address.
    assert_eq!(refused(&l, &user("bob"), PEER, &pull, 3), 0);
    // Anonymous callers by address.
    let anon = Identity::default();
    assert_eq!(refused(&l, &anon, PEER, &pull, 4), 1);
    assert_eq!(refused(&l, &anon, OTHER_PEER, &pull, 3), 0);
    // Not limited: pushes (no push limit), and /v2/.
    assert_eq!(refused(&l, &alice, PEER, &req(Action::PutBlob, "a"), 10), 0);
    assert_eq!(
        refused(&l, &alice, PEER, &req(Action::GetApiVersion, ""), 10),
        0
    );
}

/// Per group, the first covering entry that sets that group's limit applies: a specific
/// entry overrides a general one only for the groups it sets.
#[test]
fn the_first_covering_entry_with_the_group_applies() {
    let l = limits(
        "[[rate_limit]]\nusernames = [\"ci\"]\npull = { requests_per_second = 1, burst = 10 }\n\
         [[rate_limit]]\nnamespace = \"team\"\nanonymous = true\n\
         pull = { requests_per_second = 1, burst = 1 }\n\
         [[rate_limit]]\npull = { requests_per_second = 1, burst = 2 }\n\
         push = { requests_per_second = 1, burst = 1 }\n",
    )
    .unwrap();
    let pull = req(Action::GetBlob, "team/app");
    assert_eq!(refused(&l, &user("ci"), PEER, &pull, 11), 1);
    // ci's pushes fall to the last entry.
    assert_eq!(
        refused(&l, &user("ci"), PEER, &req(Action::DeleteManifest, "x"), 2),
        1
    );
    assert_eq!(refused(&l, &Identity::default(), PEER, &pull, 2), 1);
    // Outside `team` (not `teamx` either), anonymous pulls get the general entry.
    let elsewhere = req(Action::GetBlob, "teamx");
    assert_eq!(
        refused(&l, &Identity::default(), OTHER_PEER, &elsewhere, 3),
        1
    );
    assert_eq!(refused(&l, &user("dev"), PEER, &pull, 3), 1);
}

/// Organizations and CEL expressions select callers; an expression that fails at run
/// time limits (counts as covering).
#[test]
fn organizations_and_expressions_select() {
    let l = limits(
        "[[rate_limit]]\norganizations = [\"acme\"]\nlist = { requests_per_second = 1, burst = 1 }\n\
         [[rate_limit]]\nmatch = 'identity.oidc.claims.repository_owner == \"acme\"'\n\
         list = { requests_per_second = 1, burst = 2 }\n",
    )
    .unwrap();
    let list = req(Action::ListTags, "a");
    let cert = Identity {
        organizations: vec!["acme".into()],
        common_names: vec!["builder".into()],
        ..Identity::default()
    };
    assert_eq!(refused(&l, &cert, PEER, &list, 2), 1);
    // Nobody else is covered: no token, no claim.
    assert_eq!(refused(&l, &user("x"), PEER, &list, 5), 0);
}

/// Blob GETs under `pull_bytes_per_second` get a pacer whose chunk is a tenth of a second
/// of bytes; other pulls do not.
#[test]
fn blob_pulls_get_a_pacer() {
    use crate::http::Pacer as _;
    let l = limits("[[rate_limit]]\npull_bytes_per_second = 1048576\n").unwrap();
    let p = l
        .admit(&user("a"), PEER, &req(Action::GetBlob, "x"))
        .unwrap()
        .expect("a pacer");
    assert_eq!(p.chunk_bytes(), 104_857);
    assert_eq!(p.reserve(104_857), Duration::ZERO);
    let wait = p.reserve(104_857);
    assert!(
        wait > Duration::from_millis(95) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    assert!(l
        .admit(&user("a"), PEER, &req(Action::GetManifest, "x"))
        .unwrap()
        .is_none());
}

/// Every key is validated, naming it; an entry that limits nothing is an error.
#[test]
fn invalid_entries_name_their_key() {
    let cases = [
        (
            "pull = { requests_per_second = 0 }",
            "rate_limit[0].pull.requests_per_second",
        ),
        (
            "push = { requests_per_second = -1 }",
            "rate_limit[0].push.requests_per_second",
        ),
        (
            "list = { requests_per_second = nan }",
            "rate_limit[0].list.requests_per_second",
        ),
        (
            "list = { requests_per_second = 1e-300 }",
            "rate_limit[0].list.requests_per_second",
        ),
        (
            "pull = { requests_per_second = 1, burst = 0 }",
            "rate_limit[0].pull.burst",
        ),
        (
            "pull_bytes_per_second = 10",
            "rate_limit[0].pull_bytes_per_second",
        ),
        (
            "anonymous = true\nusernames = [\"a\"]\npull_bytes_per_second = 2048",
            "rate_limit[0].anonymous",
        ),
        (
            "match = 'identity.nope'\npull_bytes_per_second = 2048",
            "rate_limit[0].match",
        ),
        ("namespace = \"a\"", "sets no limit"),
    ];
    for (body, key) in cases {
        let e = limits(&format!("[[rate_limit]]\n{body}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{body}: {e}");
    }
    assert!(limits("[[rate_limit]]\nbogus = 1\npull_bytes_per_second = 2048\n").is_err());
}

/// A reload with the same entries keeps the buckets (no fresh burst); with other entries
/// it starts afresh.
#[test]
fn buckets_survive_a_reload_that_keeps_the_entries() {
    let text = "[[rate_limit]]\npull = { requests_per_second = 0.001, burst = 1 }\n";
    let old = limits(text).unwrap();
    let pull = req(Action::GetManifest, "x");
    assert_eq!(refused(&old, &user("a"), PEER, &pull, 2), 1);
    let mut same = limits(text).unwrap();
    same.carry_over(&old);
    assert_eq!(refused(&same, &user("a"), PEER, &pull, 1), 1);
    let mut other = limits(&text.replace("burst = 1", "burst = 2")).unwrap();
    other.carry_over(&old);
    assert_eq!(refused(&other, &user("a"), PEER, &pull, 2), 0);
}

/// What `admit` costs per request (printed; run with `--ignored --nocapture` in release):
/// an empty set, an entry that never triggers, and that entry with two threads on one
/// bucket (the lock's worst case). Not an assertion: timings belong to bench/limits.sh.
#[test]
#[ignore]
fn admit_cost_per_request() {
    const N: u32 = 2_000_000;
    let never = "[[rate_limit]]\npull = { requests_per_second = 1000000, burst = 1000000 }\n";
    let time = |l: &RateLimits| {
        let r = req(Action::GetBlob, "bench/app");
        let who = Identity::default();
        let start = std::time::Instant::now();
        for _ in 0..N {
            let _ = std::hint::black_box(l.admit(&who, PEER, &r));
        }
        start.elapsed() / N
    };
    let empty = RateLimits::compile(&[]).unwrap();
    println!(
        "empty set: is_empty() only on the request path; admit {:?}",
        time(&empty)
    );
    let l = std::sync::Arc::new(limits(never).unwrap());
    println!("one entry, one thread: {:?} per admit", time(&l));
    let other = {
        let l = l.clone();
        std::thread::spawn(move || time(&l))
    };
    let here = time(&l);
    println!(
        "one entry, two threads on one bucket: {:?} and {:?} per admit",
        here,
        other.join().unwrap()
    );
}
