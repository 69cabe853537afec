use super::*;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::PasswordHasher;

/// A PHC hash with the smallest argon2 cost, so tests run fast.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn identities(users: &[(&str, &str, &str)]) -> BTreeMap<String, IdentityConfig> {
    users
        .iter()
        .map(|(id, username, password)| {
            let config = IdentityConfig {
                username: username.to_string(),
                password: cheap_hash(password),
                ..Default::default()
            };
            (id.to_string(), config)
        })
        .collect()
}

/// A clock that only moves when told to, in whole seconds.
fn manual_clock() -> (Clock, Arc<AtomicU64>) {
    let start = Instant::now();
    let secs = Arc::new(AtomicU64::new(0));
    let s = secs.clone();
    let clock: Clock = Arc::new(move || start + Duration::from_secs(s.load(Ordering::SeqCst)));
    (clock, secs)
}

fn authenticator(limits: AuthLimits) -> (Authenticator, Arc<AtomicU64>) {
    let ids = identities(&[("alice", "alice", "s3cret"), ("bob", "bob", "hunter2")]);
    let (clock, secs) = manual_clock();
    (
        Authenticator::with_clock(&ids, limits, clock).unwrap(),
        secs,
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    compio::runtime::Runtime::new().unwrap().block_on(f)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn alice() -> Identity {
    Identity {
        id: Some("alice".into()),
        username: Some("alice".into()),
        ..Identity::default()
    }
}

/// Basic headers decode to (user, password); anything else is None.
#[test]
fn parse_basic_accepts_only_basic_credentials() {
    let ok = |v: &str| parse_basic(v.as_bytes());
    let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
    assert_eq!(ok("Basic YWxpY2U6czNjcmV0"), pair("alice", "s3cret"));
    assert_eq!(ok("basic   YWxpY2U6czNjcmV0 "), pair("alice", "s3cret"));
    // A password may contain ':'; the username may not.
    assert_eq!(ok("Basic YTpiOmM="), pair("a", "b:c"));
    assert_eq!(ok("Basic YTo="), pair("a", ""));
    assert_eq!(ok("Basic YTpi"), pair("a", "b"));
    assert_eq!(ok("Basic YTpiYw"), pair("a", "bc"));
    assert_eq!(ok("Bearer YWxpY2U6czNjcmV0"), None);
    assert_eq!(ok("Basic"), None);
    assert_eq!(ok("Basic YWxpY2U"), None, "no colon");
    assert_eq!(ok("Basic YWx*Y2U6czNjcmV0"), None, "bad alphabet");
    assert_eq!(ok("Basic YTpiY"), None, "dangling 6 bits");
    assert_eq!(ok("Basic YTpiYx=="), None, "non-zero padding bits");
    assert_eq!(ok("Basic /w=="), None, "not UTF-8");
    let long = format!("Basic {}", "QUFB".repeat(BASIC_HEADER_BYTES_MAX / 4));
    assert_eq!(ok(&long), None, "too long");
}

/// The HMAC matches RFC 4231 test case 2.
#[test]
fn hmac_matches_rfc4231() {
    let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// A second request with the same credentials is answered from the cache, without argon2.
#[test]
fn cache_hit_avoids_argon2() {
    let (auth, _) = authenticator(AuthLimits::default());
    block_on(async {
        assert_eq!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(alice())
        );
        assert_eq!(auth.argon2_runs(), 1);
        for _ in 0..5 {
            assert_eq!(
                auth.verify("alice", "s3cret", ip(2)).await,
                AuthOutcome::Ok(alice())
            );
        }
        assert_eq!(auth.argon2_runs(), 1);
    });
}

/// A wrong password or an unknown user is refused, and both cost one argon2 run.
#[test]
fn bad_credentials_are_refused_at_equal_cost() {
    let (auth, _) = authenticator(AuthLimits::default());
    block_on(async {
        assert_eq!(
            auth.verify("alice", "wrong", ip(1)).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(
            auth.verify("mallory", "s3cret", ip(1)).await,
            AuthOutcome::BadCredentials
        );
        // Another user's password does not open this account.
        assert_eq!(
            auth.verify("alice", "hunter2", ip(1)).await,
            AuthOutcome::BadCredentials
        );
        assert_eq!(auth.argon2_runs(), 3);
        // A failure is never cached as a success, nor a success under another user.
        assert_eq!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(alice())
        );
        assert_eq!(
            auth.verify("bob", "s3cret", ip(1)).await,
            AuthOutcome::BadCredentials
        );
    });
}

/// The dummy hash for unknown users has the cost parameters of a configured hash.
#[test]
fn dummy_hash_has_the_configured_cost() {
    let like = cheap_hash("x");
    let dummy = dummy_hash_like(&like).unwrap();
    let a = PasswordHash::new(&like).unwrap();
    let b = PasswordHash::new(&dummy).unwrap();
    assert_eq!(a.algorithm, b.algorithm);
    assert_eq!(a.version, b.version);
    assert_eq!(a.params, b.params);
    assert_ne!(a.salt, b.salt);
}

/// A cached entry expires after the TTL and the next request runs argon2 again.
#[test]
fn cache_entries_expire() {
    let (auth, secs) = authenticator(AuthLimits::default());
    block_on(async {
        assert!(matches!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(_)
        ));
        secs.store(299, Ordering::SeqCst);
        assert!(matches!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(auth.argon2_runs(), 1);
        secs.store(300, Ordering::SeqCst);
        assert!(matches!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(auth.argon2_runs(), 2);
    });
}

/// Ten failures from one IP lock that IP (even with good credentials, and without running
/// argon2) for the rest of the window; other IPs are not affected.
#[test]
fn failures_rate_limit_per_ip() {
    let (auth, secs) = authenticator(AuthLimits::default());
    block_on(async {
        for n in 0..10 {
            // A different username each time, so only the IP limit is reached.
            let user = format!("user{n}");
            assert_eq!(
                auth.verify(&user, "x", ip(1)).await,
                AuthOutcome::BadCredentials
            );
        }
        let runs = auth.argon2_runs();
        assert_eq!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::RateLimited
        );
        assert_eq!(
            auth.verify("alice", "wrong", ip(1)).await,
            AuthOutcome::RateLimited
        );
        assert_eq!(auth.argon2_runs(), runs);
        assert_eq!(
            auth.verify("alice", "s3cret", ip(2)).await,
            AuthOutcome::Ok(alice())
        );
        secs.store(60, Ordering::SeqCst);
        assert_eq!(
            auth.verify("alice", "s3cret", ip(1)).await,
            AuthOutcome::Ok(alice())
        );
    });
}

/// Ten failures for one username, from many IPs, lock that username; others still work.
#[test]
fn failures_rate_limit_per_username() {
    let (auth, secs) = authenticator(AuthLimits::default());
    block_on(async {
        for n in 0..10 {
            assert_eq!(
                auth.verify("alice", "guess", ip(n)).await,
                AuthOutcome::BadCredentials
            );
        }
        assert_eq!(
            auth.verify("alice", "s3cret", ip(50)).await,
            AuthOutcome::RateLimited
        );
        let bob = auth.verify("bob", "hunter2", ip(50)).await;
        assert!(matches!(bob, AuthOutcome::Ok(_)), "{bob:?}");
        secs.store(61, Ordering::SeqCst);
        assert_eq!(
            auth.verify("alice", "s3cret", ip(50)).await,
            AuthOutcome::Ok(alice())
        );
    });
}

/// IPv6 clients are counted by /64.
#[test]
fn ipv6_is_counted_per_64() {
    let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
    let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    assert_eq!(ip_bucket(a), ip_bucket(b));
    assert_ne!(ip_bucket(a), ip_bucket(c));
}

/// The cache and the failure table never exceed their bounds; the oldest go first.
#[test]
fn tables_are_bounded() {
    let users: Vec<(String, String)> = (0..6).map(|n| (format!("u{n}"), format!("p{n}"))).collect();
    let cfg: Vec<(&str, &str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), u.as_str(), p.as_str()))
        .collect();
    let limits = AuthLimits {
        cache_entries_max: 4,
        failure_keys_max: 8,
        ..AuthLimits::default()
    };
    let (clock, _) = manual_clock();
    let auth = Authenticator::with_clock(&identities(&cfg), limits, clock).unwrap();
    block_on(async {
        for (u, p) in &users {
            assert!(matches!(auth.verify(u, p, ip(1)).await, AuthOutcome::Ok(_)));
        }
        assert_eq!(auth.sizes().0, 4);
        assert_eq!(auth.argon2_runs(), 6);
        // The newest is still cached, the oldest was evicted.
        assert!(matches!(
            auth.verify("u5", "p5", ip(1)).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(auth.argon2_runs(), 6);
        assert!(matches!(
            auth.verify("u0", "p0", ip(1)).await,
            AuthOutcome::Ok(_)
        ));
        assert_eq!(auth.argon2_runs(), 7);
        for n in 0..20 {
            let _ = auth.verify(&format!("x{n}"), "bad", ip(n)).await;
        }
        assert!(auth.sizes().1 <= 8, "{:?}", auth.sizes());
    });
}

/// With one argon2 thread and one queue slot, a burst of verifications gets Busy for the
/// overflow instead of waiting, and Busy is not counted as a failure.
#[test]
fn full_queue_answers_busy() {
    let ids: BTreeMap<String, IdentityConfig> = [(
        "alice".to_string(),
        IdentityConfig {
            username: "alice".into(),
            // The default cost (~20 ms) keeps the thread busy while the burst is queued.
            password: crate::auth_hash::hash("s3cret").unwrap(),
            ..Default::default()
        },
    )]
    .into();
    let limits = AuthLimits {
        verify_threads: 1,
        verify_queue_max: 1,
        ..AuthLimits::default()
    };
    let auth = Arc::new(Authenticator::new(&ids, limits).unwrap());
    let outcomes = block_on(async {
        let tasks: Vec<_> = (0..6)
            .map(|n| {
                let auth = auth.clone();
                let pass = format!("wrong{n}");
                compio::runtime::spawn(async move { auth.verify("alice", &pass, ip(n)).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        outcomes
    });
    let busy = outcomes.iter().filter(|o| **o == AuthOutcome::Busy).count();
    let bad = outcomes
        .iter()
        .filter(|o| **o == AuthOutcome::BadCredentials)
        .count();
    assert!(busy >= 4 && bad >= 1 && busy + bad == 6, "{outcomes:?}");
}

/// A config without identities refuses every Basic credential without argon2.
#[test]
fn no_identities_refuses_everything() {
    let auth = Authenticator::new(&BTreeMap::new(), AuthLimits::default()).unwrap();
    block_on(async {
        assert_eq!(
            auth.verify("a", "b", ip(1)).await,
            AuthOutcome::BadCredentials
        );
    });
    assert_eq!(auth.argon2_runs(), 0);
}

/// The authenticator is shared by every worker thread.
#[test]
fn authenticator_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Authenticator>();
}

/// Anonymous is the default; a password or a certificate authenticates.
#[test]
fn identity_authentication() {
    assert!(!Identity::default().is_authenticated());
    assert!(alice().is_authenticated());
    assert!(Identity::default()
        .with_certificate(vec!["cn".into()], vec![])
        .is_authenticated());
}
