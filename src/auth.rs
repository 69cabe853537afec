//! Who is asking: HTTP Basic credentials checked against the configured argon2 hashes, and
//! the client certificate's subject, joined into one [`Identity`] for the policies.
//!
//! argon2 is slow on purpose and clients send credentials on every request, so:
//! - verification runs on a small global thread pool with a bounded queue, never on a core's
//!   runtime; a full queue answers [`AuthOutcome::Busy`];
//! - verified credentials are cached under an HMAC-SHA256 of (per-process random key,
//!   username, password), never the password, with a bounded size and a TTL;
//! - failures are counted per client IP (IPv6 by /64) and per username in fixed windows; past
//!   the limit, requests are refused without verifying until the window ends. The limit is
//!   checked before the cache, or a locked-out guesser could still probe cached passwords;
//!   the price is that an attack on a username also locks out its owner for the window;
//! - an unknown username is verified against a dummy hash with the same parameters as a
//!   configured one, so timing does not tell which usernames exist.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

use crate::config::{ConfigError, IdentityConfig};

mod jwks;
pub mod oidc;

/// The caller as the policies see it. All fields empty: anonymous.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The `[identity.<id>]` key of verified Basic credentials, or `oidc:<provider>:<sub>`
    /// for a verified OIDC token.
    pub id: Option<String>,
    /// The identity's username, or the configured claim of a verified OIDC token.
    pub username: Option<String>,
    /// From the verified client certificate's subject.
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    /// Set for a verified OIDC token: its provider and claims.
    pub oidc: Option<Arc<oidc::OidcIdentity>>,
}

impl Identity {
    /// True when a password or a token was verified, or a client certificate was presented
    /// and verified.
    pub fn is_authenticated(&self) -> bool {
        self.id.is_some()
            || self.oidc.is_some()
            || !self.common_names.is_empty()
            || !self.organizations.is_empty()
    }

    /// Adds the subject of the connection's client certificate.
    pub fn with_certificate(
        mut self,
        common_names: Vec<String>,
        organizations: Vec<String>,
    ) -> Self {
        self.common_names = common_names;
        self.organizations = organizations;
        self
    }
}

/// Longest `Authorization: Basic` value accepted: room for an OIDC token as the password
/// (`oidc::TOKEN_BYTES_MAX`, base64-encoded once more); longer ones are not credentials.
pub const BASIC_HEADER_BYTES_MAX: usize = 12 * 1024;

/// Parses an `Authorization` header value `Basic base64(user:pass)`. None when it is another
/// scheme, malformed, too long, or not UTF-8.
pub fn parse_basic(header_value: &[u8]) -> Option<(String, String)> {
    if header_value.len() > BASIC_HEADER_BYTES_MAX {
        return None;
    }
    let (scheme, rest) = header_value.split_at(header_value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let encoded = trim_ascii(rest);
    let decoded = String::from_utf8(base64_decode(encoded)?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

fn trim_ascii(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// Standard base64 with optional padding; None on any other byte, a dangling bit group or
/// non-zero padding bits.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode};
    use base64::Engine;
    const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT_PADDING.decode(input).ok()
}

/// Bounds of the authenticator; every number has its reason.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// argon2 threads: each run takes a core and ~19 MiB for ~20 ms.
    pub verify_threads: usize,
    /// Verifications waiting for a thread; beyond it answer Busy (503), as the wait would
    /// pass any client timeout anyway (64 × 20 ms / 2 threads ≈ 0.6 s).
    pub verify_queue_max: usize,
    /// Cached verified credentials: one per (user, password) pair in active use.
    pub cache_entries_max: usize,
    /// How long a verified pair is trusted without argon2.
    pub cache_ttl: Duration,
    /// Failures per IP, and per username, allowed in one window.
    pub failures_per_window_max: u32,
    pub failure_window: Duration,
    /// IPs and usernames tracked at once; the oldest windows are forgotten first.
    pub failure_keys_max: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            verify_threads: 2,
            verify_queue_max: 64,
            cache_entries_max: 4096,
            cache_ttl: Duration::from_secs(300),
            failures_per_window_max: 10,
            failure_window: Duration::from_secs(60),
            failure_keys_max: 16_384,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Ok(Identity),
    /// Unknown username or wrong password, or a token that does not verify: 401 with a
    /// challenge.
    BadCredentials,
    /// A token that could not be checked because its provider's keys were never fetched
    /// (the provider is unreachable): 401 like BadCredentials, but not the client's failure,
    /// so not counted against its rate limit.
    Unverifiable,
    /// Too many recent failures from this IP or for this username: 429 TOOMANYREQUESTS.
    RateLimited,
    /// The verification queue is full: 503 with Retry-After. Not counted as a failure.
    Busy,
}

/// The time source; tests pass a clock they move by hand.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

struct Account {
    id: String,
    username: String,
    phc: Arc<str>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    Ip(IpAddr),
    /// A keyed hash of the username: fixed size whatever the client sends.
    User([u8; 32]),
}

struct State {
    /// HMAC of the credentials → (index into `accounts`, expiry).
    cache: Expiring<[u8; 32], usize>,
    failures: Expiring<FailureKey, u32>,
}

/// Verifies Basic credentials. One per process, shared by every worker through an `Arc`.
pub struct Authenticator {
    accounts: Vec<Account>,
    by_username: HashMap<String, usize>,
    /// Verified instead of a real hash when the username is unknown.
    dummy_phc: Option<Arc<str>>,
    key: [u8; 32],
    limits: AuthLimits,
    clock: Clock,
    state: Mutex<State>,
    pool: crate::pool::Pool,
    argon2_runs: Arc<std::sync::atomic::AtomicU64>,
}

impl Authenticator {
    /// Builds the account table, the dummy hash (one argon2 run) and the thread pool.
    pub fn new(
        identities: &BTreeMap<String, IdentityConfig>,
        limits: AuthLimits,
    ) -> Result<Authenticator, ConfigError> {
        Self::with_clock(identities, limits, Arc::new(Instant::now))
    }

    pub fn with_clock(
        identities: &BTreeMap<String, IdentityConfig>,
        limits: AuthLimits,
        clock: Clock,
    ) -> Result<Authenticator, ConfigError> {
        let accounts: Vec<Account> = identities
            .iter()
            .map(|(id, c)| Account {
                id: id.clone(),
                username: c.username.clone(),
                phc: Arc::from(c.password.as_str()),
            })
            .collect();
        let mut by_username = HashMap::new();
        for (i, a) in accounts.iter().enumerate() {
            if by_username.insert(a.username.clone(), i).is_some() {
                return Err(ConfigError::new(format!(
                    "identity.{}: username {:?} is used twice",
                    a.id, a.username
                )));
            }
        }
        let dummy_phc = match accounts.first() {
            Some(a) => Some(
                dummy_hash_like(&a.phc)
                    .map_err(|e| ConfigError::caused(format!("identity.{}", a.id), e))?,
            ),
            None => None,
        };
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| ConfigError::caused("no randomness", e))?;
        let pool = crate::pool::Pool::new(
            "origin-argon2",
            limits.verify_threads,
            limits.verify_queue_max,
        )
        .map_err(|e| ConfigError::caused("cannot start the argon2 threads", e))?;
        Ok(Authenticator {
            accounts,
            by_username,
            dummy_phc,
            key,
            state: Mutex::new(State {
                cache: Expiring::new(limits.cache_entries_max),
                failures: Expiring::new(limits.failure_keys_max),
            }),
            limits,
            clock,
            pool,
            argon2_runs: Arc::default(),
        })
    }

    /// argon2 verifications started so far (a metric; tests use it to see cache hits).
    #[cfg(test)]
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checks Basic credentials from `client_ip`. Never blocks the calling thread on argon2.
    #[tracing::instrument(target = "origin::span", name = "auth.basic", skip_all)]
    pub async fn verify(&self, user: &str, pass: &str, client_ip: IpAddr) -> AuthOutcome {
        let now = (self.clock)();
        let ip_key = FailureKey::Ip(ip_bucket(client_ip));
        let user_key = FailureKey::User(hmac_sha256(&self.key, &[b"user\0", user.as_bytes()]));
        let mac = hmac_sha256(
            &self.key,
            &[
                b"credentials\0",
                &(user.len() as u64).to_le_bytes(),
                user.as_bytes(),
                pass.as_bytes(),
            ],
        );
        {
            let mut st = self.lock();
            let max = self.limits.failures_per_window_max;
            let over =
                |k: &FailureKey, st: &mut State| st.failures.get(k, now).is_some_and(|n| *n >= max);
            if over(&ip_key, &mut st) || over(&user_key, &mut st) {
                return AuthOutcome::RateLimited;
            }
            if let Some(&i) = st.cache.get(&mac, now) {
                return AuthOutcome::Ok(self.identity(i));
            }
        }
        let account = self.by_username.get(user).copied();
        let phc = match (account, &self.dummy_phc) {
            (Some(i), _) => self.accounts[i].phc.clone(),
            (None, Some(dummy)) => dummy.clone(),
            (None, None) => {
                self.record_failure(&[ip_key, user_key], now);
                return AuthOutcome::BadCredentials;
            }
        };
        let password = pass.to_string();
        let runs = self.argon2_runs.clone();
        let job = move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let started = std::time::Instant::now();
            (crate::auth_hash::verify(&password, &phc), started.elapsed())
        };
        // The pool's queue wait and the verification itself, apart, in the trace.
        let span = crate::span!(
            "auth.argon2",
            pool.wait_us = tracing::field::Empty,
            argon2.verify_us = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let submitted = std::time::Instant::now();
        let Some(reply) = self.pool.submit(job) else {
            span.record("error", "pool queue full");
            return AuthOutcome::Busy;
        };
        let reply = tracing::Instrument::instrument(reply, span.clone()).await;
        if let Some((_, verify)) = &reply {
            let wait = submitted.elapsed().saturating_sub(*verify);
            span.record("pool.wait_us", wait.as_micros() as u64);
            span.record("argon2.verify_us", verify.as_micros() as u64);
        }
        drop(span);
        match (reply.map(|(ok, _)| ok), account) {
            (Some(true), Some(i)) => {
                let expiry = (self.clock)() + self.limits.cache_ttl;
                self.lock().cache.insert(mac, i, expiry);
                AuthOutcome::Ok(self.identity(i))
            }
            (Some(_), _) => {
                self.record_failure(&[ip_key, user_key], (self.clock)());
                AuthOutcome::BadCredentials
            }
            // The verification panicked: a server fault, not the client's.
            (None, _) => AuthOutcome::Busy,
        }
    }

    /// The configured account `[identity.<id>]`: its identity and password hash, or None when
    /// the configuration has no such id (a web UI session re-resolves its identity here on
    /// every request, so a reload that removes or changes the account ends it).
    pub fn account(&self, id: &str) -> Option<(Identity, &str)> {
        let i = self.accounts.iter().position(|a| a.id == id)?;
        Some((self.identity(i), &self.accounts[i].phc))
    }

    fn identity(&self, i: usize) -> Identity {
        Identity {
            id: Some(self.accounts[i].id.clone()),
            username: Some(self.accounts[i].username.clone()),
            ..Identity::default()
        }
    }

    /// Whether failures from `client_ip` have reached the limit. Tokens share the per-IP
    /// count with passwords: a client over it is refused (429) before any token is checked,
    /// as it is before any password is.
    pub fn ip_rate_limited(&self, client_ip: IpAddr) -> bool {
        let now = (self.clock)();
        let key = FailureKey::Ip(ip_bucket(client_ip));
        let max = self.limits.failures_per_window_max;
        self.lock()
            .failures
            .get(&key, now)
            .is_some_and(|n| *n >= max)
    }

    /// Counts a refused token from `client_ip`, in the same window as failed passwords (a
    /// token names no user name to count it under).
    pub fn record_ip_failure(&self, client_ip: IpAddr) {
        let key = FailureKey::Ip(ip_bucket(client_ip));
        self.record_failure(&[key], (self.clock)());
    }

    fn record_failure(&self, keys: &[FailureKey], now: Instant) {
        let mut st = self.lock();
        for k in keys {
            match st.failures.get_mut(k, now) {
                Some(n) => *n = n.saturating_add(1),
                None => st
                    .failures
                    .insert(k.clone(), 1, now + self.limits.failure_window),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No code panics while holding the lock; if one did, the maps are still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let st = self.lock();
        (st.cache.len(), st.failures.len())
    }
}

/// IPv4 as is; IPv6 by its /64, since one host usually owns a whole /64.
fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
        }
    }
}

/// A PHC string for a random password with the algorithm, version and cost of `like`.
fn dummy_hash_like(like: &str) -> Result<Arc<str>, ConfigError> {
    let parsed = PasswordHash::new(like)
        .map_err(|e| ConfigError::new(format!("not an argon2 PHC string: {e}")))?;
    let params = argon2::Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let mut secret = [0u8; 32];
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut secret).map_err(|e| ConfigError::caused("no randomness", e))?;
    getrandom::getrandom(&mut salt).map_err(|e| ConfigError::caused("no randomness", e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let hash = argon2::Argon2::default()
        .hash_password_customized(
            &secret,
            Some(parsed.algorithm),
            parsed.version,
            params,
            &salt,
        )
        .map_err(|e| e.to_string())?;
    Ok(Arc::from(hash.to_string()))
}

/// HMAC-SHA256 over the concatenation of `parts` (ring's).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// A map whose entries expire, bounded by dropping the oldest insertion when full.
struct Expiring<K, V> {
    map: HashMap<K, (V, Instant)>,
    /// Insertion order with each entry's expiry; a record whose expiry differs from the
    /// map's is stale (the key was re-inserted) and is skipped.
    order: VecDeque<(K, Instant)>,
    max: usize,
}

impl<K: Clone + Eq + Hash, V> Expiring<K, V> {
    fn new(max: usize) -> Self {
        Expiring {
            map: HashMap::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    fn get(&mut self, k: &K, now: Instant) -> Option<&V> {
        self.get_mut(k, now).map(|v| &*v)
    }

    fn get_mut(&mut self, k: &K, now: Instant) -> Option<&mut V> {
        if self.map.get(k).is_some_and(|(_, exp)| *exp <= now) {
            self.map.remove(k);
        }
        self.map.get_mut(k).map(|(v, _)| v)
    }

    fn insert(&mut self, k: K, v: V, expiry: Instant) {
        while self.order.len() >= self.max {
            if let Some((old, exp)) = self.order.pop_front() {
                if self.map.get(&old).is_some_and(|(_, e)| *e == exp) {
                    self.map.remove(&old);
                }
            }
        }
        self.order.push_back((k.clone(), expiry));
        self.map.insert(k, (v, expiry));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests;
