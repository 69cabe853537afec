//! Identities without long-lived secrets: short-lived JWTs signed by an OIDC identity provider
//! (GitHub Actions, GitLab CI, Kubernetes service accounts, any OIDC issuer).
//!
//! A token arrives as `Authorization: Bearer <jwt>` or as the password of HTTP Basic (what
//! `docker login -p "$TOKEN"` sends). It is accepted when its signature verifies against one of
//! the provider's current keys (RSA, ECDSA P-256/P-384 or Ed25519; never `none` or HMAC), and its
//! `iss`, `aud`, `exp` and `nbf` hold. The signature check is `jsonwebtoken`'s, on `ring`.
//!
//! - Which provider: the one whose `issuer` equals the token's (not yet verified) `iss`; the
//!   signature then has to verify with that provider's keys, so naming another issuer gains
//!   nothing.
//! - A verified token is cached under its SHA-256 until its `exp` (at most
//!   [`VERIFIED_TTL_MAX`]), so clients that send it on every request pay one signature check.
//!   One verification costs ~35 µs for RS256 and ~85 µs for ES256 (measured here with
//!   `cargo test --test oidc bench_verification -- --ignored`), under the ~100 µs above which
//!   work goes to the thread pool, and it happens once per token: it runs inline on the worker
//!   (a pool round trip and its queue would cost as much as the check itself).
//! - Tokens are never logged; neither are claims. Rejections are logged at debug level with
//!   the reason only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{self, KeyStore};
use super::{AuthOutcome, Expiring, Identity};
use crate::config::{ConfigError, OidcConfig};

/// Longest token accepted: provider tokens are 1-2 KiB; this bounds the claims kept per
/// cached token too.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Verified tokens cached at once (one per CI job in flight, typically); the oldest go first.
pub const VERIFIED_CACHE_MAX: usize = 4096;
/// Longest time a verified token is trusted without a new signature check, whatever its
/// `exp`: a provider that revokes a key is followed within this time.
pub const VERIFIED_TTL_MAX: Duration = Duration::from_secs(600);
/// Providers configured at most; each is tried by exact issuer, so this is only sanity.
pub const PROVIDERS_MAX: usize = 64;

/// The OIDC part of an [`Identity`]: which provider vouched for it, and the token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The `[oidc.<name>]` key.
    pub provider: String,
    pub claims: Map<String, Value>,
}

/// Checks the `[oidc.*]` sections (no I/O).
pub fn validate(providers: &BTreeMap<String, OidcConfig>) -> Result<(), ConfigError> {
    if providers.len() > PROVIDERS_MAX {
        return Err(ConfigError::new(format!(
            "oidc: at most {PROVIDERS_MAX} providers"
        )));
    }
    let mut issuers = std::collections::BTreeSet::new();
    for (name, p) in providers {
        let bad =
            |key: &str, why: String| Err(ConfigError::new(format!("oidc.{name}.{key}: {why}")));
        if let Err(e) = crate::http::client::UpstreamUrl::parse(&p.issuer) {
            return bad("issuer", e.to_string());
        }
        if !issuers.insert(p.issuer.as_str()) {
            return bad("issuer", format!("{:?} is used by two providers", p.issuer));
        }
        if let Some(uri) = &p.jwks_uri {
            if let Err(e) = crate::http::client::UpstreamUrl::parse(uri) {
                return bad("jwks_uri", e.to_string());
            }
        }
        if p.audience.is_empty() {
            return bad("audience", "must not be empty".into());
        }
        if p.username_claim.is_empty() {
            return bad("username_claim", "must not be empty".into());
        }
        if p.leeway > Duration::from_secs(600) {
            return bad("leeway", "at most 10m".into());
        }
        if p.keys_refresh_min < jwks::REFRESH_INTERVAL_FLOOR {
            return bad(
                "keys_refresh_min",
                format!("at least {:?}", jwks::REFRESH_INTERVAL_FLOOR),
            );
        }
        if p.keys_cache < p.keys_refresh_min {
            return bad("keys_cache", "at least keys_refresh_min".into());
        }
        if p.timeout.is_zero() {
            return bad("timeout", "must be greater than zero".into());
        }
    }
    Ok(())
}

struct Provider {
    name: String,
    /// As configured: a reload keeps the fetched keys of a provider whose section is the same.
    config: OidcConfig,
    issuer: String,
    audience: String,
    username_claim: String,
    leeway: Duration,
    keys: KeyStore,
}

/// Verifies tokens for every configured provider. One per configuration, shared by all
/// workers; a reload builds a new one.
pub struct OidcVerifier {
    providers: Vec<Provider>,
    /// SHA-256 of a verified token → the identity it proved.
    verified: Mutex<Expiring<[u8; 32], Identity>>,
}

impl OidcVerifier {
    /// Builds the providers (and reads their `ca_bundle`s); fetches nothing yet.
    pub fn new(config: &BTreeMap<String, OidcConfig>) -> Result<OidcVerifier, ConfigError> {
        validate(config)?;
        let mut providers = Vec::with_capacity(config.len());
        for (name, p) in config {
            providers.push(Provider {
                name: name.clone(),
                config: p.clone(),
                issuer: p.issuer.clone(),
                audience: p.audience.clone(),
                username_claim: p.username_claim.clone(),
                leeway: p.leeway,
                keys: KeyStore::new(name, p)?,
            });
        }
        Ok(OidcVerifier {
            providers,
            verified: Mutex::new(Expiring::new(VERIFIED_CACHE_MAX)),
        })
    }

    /// Takes over the signing keys `previous` fetched for every provider whose section did
    /// not change (a reload): they are not fetched again, and an unreachable provider's
    /// tokens keep verifying across the reload.
    pub fn keep_keys_from(&self, previous: &OidcVerifier) {
        for p in &self.providers {
            let same = previous
                .providers
                .iter()
                .find(|o| o.name == p.name && o.config == p.config);
            if let Some(old) = same {
                p.keys.adopt(&old.keys);
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Whether a Basic password is a token for one of the providers: shaped like a JWT, and
    /// its (unverified) `iss` is a configured issuer. Cheap: no signature is checked.
    pub fn claims_password(&self, password: &str) -> bool {
        self.is_enabled() && self.provider_of(password).is_some()
    }

    fn provider_of(&self, token: &str) -> Option<&Provider> {
        let iss = unverified_issuer(token)?;
        self.providers.iter().find(|p| p.issuer == iss)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Expiring<[u8; 32], Identity>> {
        // Nothing panics while holding it; the map stays consistent if something did.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Verifies a token: its identity, or BadCredentials (whatever the reason, logged at
    /// debug level without the token).
    #[tracing::instrument(target = "origin::span", name = "auth.oidc", skip_all)]
    pub async fn verify(&self, token: &str) -> AuthOutcome {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(identity) = self.lock().get(&hash, Instant::now()) {
            return AuthOutcome::Ok(identity.clone());
        }
        match self.verify_uncached(token).await {
            Ok((identity, ttl)) => {
                let expiry = Instant::now() + ttl.min(VERIFIED_TTL_MAX);
                self.lock().insert(hash, identity.clone(), expiry);
                AuthOutcome::Ok(identity)
            }
            Err(Rejected::Bad(reason)) => {
                tracing::debug!("OIDC token rejected: {reason}");
                AuthOutcome::BadCredentials
            }
            Err(Rejected::NoKeys(reason)) => {
                tracing::debug!("OIDC token not checked: {reason}");
                AuthOutcome::Unverifiable
            }
        }
    }

    /// The identity and how long it stays valid (until `exp`).
    async fn verify_uncached(&self, token: &str) -> Result<(Identity, Duration), Rejected> {
        if !is_jwt_shaped(token) {
            return Err("not a JWT".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg).into());
        }
        let provider = self
            .provider_of(token)
            .ok_or("no provider has the token's issuer")?;
        let keys = provider
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .map_err(|e| {
                let reason = format!("provider {}: key: {e:?}", provider.name);
                match e {
                    jwks::KeyError::Unavailable => Rejected::NoKeys(reason),
                    jwks::KeyError::Unknown => Rejected::Bad(reason),
                }
            })?;
        let key = jwks::find(&keys, header.kid.as_deref(), header.alg).ok_or("key vanished")?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&provider.issuer]);
        validation.set_audience(&[&provider.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = provider.leeway.as_secs();
        validation.validate_nbf = true;
        crate::metrics::Metrics::add(&crate::metrics::METRICS.oidc_signature_checks, 1);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| format!("provider {}: {e}", provider.name))?;
        let claims = data.claims;
        let username = match claims.get(&provider.username_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(format!(
                    "provider {}: no string claim {:?} for the username",
                    provider.name, provider.username_claim
                )
                .into())
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Checked by `decode` (a number, not long past); what is left is until it expires.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(now);
        let ttl = Duration::from_secs(exp.saturating_sub(now));
        // `sub` names the subject for the provider (OIDC requires it); the username claim
        // stands in for a token without one.
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => username.clone(),
        };
        let identity = Identity {
            id: Some(format!("oidc:{}:{subject}", provider.name)),
            username: Some(username),
            oidc: Some(Arc::new(OidcIdentity {
                provider: provider.name.clone(),
                claims,
            })),
            ..Identity::default()
        };
        Ok((identity, ttl))
    }
}

/// Why a token was refused: a bad token is the client's failure (counted against its rate
/// limit); a provider whose keys were never fetched is not.
enum Rejected {
    Bad(String),
    NoKeys(String),
}

impl From<String> for Rejected {
    fn from(reason: String) -> Self {
        Rejected::Bad(reason)
    }
}

impl From<&str> for Rejected {
    fn from(reason: &str) -> Self {
        Rejected::Bad(reason.to_string())
    }
}

/// Signature algorithms accepted: asymmetric only. HMAC would need a shared secret (and lets
/// a public key be misused as one); `none` does not even parse.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `Authorization: Bearer <token>`: the token, or None for another scheme.
pub fn parse_bearer(header_value: &str) -> Option<&str> {
    let (scheme, rest) = header_value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_matches([' ', '\t']))
}

/// Three non-empty base64url segments, within the size limit.
fn is_jwt_shaped(token: &str) -> bool {
    let b = token.as_bytes();
    b.len() <= TOKEN_BYTES_MAX
        && b.iter().filter(|&&c| c == b'.').count() == 2
        && token.split('.').all(|s| !s.is_empty())
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The `iss` of a JWT-shaped string whose header names an `alg`, before any verification.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Header {
        #[allow(dead_code)]
        alg: String,
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        iss: String,
    }
    if !is_jwt_shaped(token) {
        return None;
    }
    let mut parts = token.split('.');
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.decode(parts.next()?).ok()?;
    serde_json::from_slice::<Header>(&header).ok()?;
    let payload = b64.decode(parts.next()?).ok()?;
    Some(serde_json::from_slice::<Payload>(&payload).ok()?.iss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn only_jwts_with_an_alg_and_iss_are_taken_for_tokens() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"iss":"https://idp"}"#)
        );
        assert_eq!(unverified_issuer(&token).as_deref(), Some("https://idp"));
        let no_alg = format!("{}.{}.c2ln", b64("{}"), b64(r#"{"iss":"https://idp"}"#));
        assert_eq!(unverified_issuer(&no_alg), None);
        for not_jwt in ["hunter2", "a.b", "a..c", "a.b.c.d", "a+b.c.d", ""] {
            assert!(!is_jwt_shaped(not_jwt), "{not_jwt}");
        }
        assert!(!is_jwt_shaped(&"a.b.".repeat(TOKEN_BYTES_MAX)));
        assert_eq!(parse_bearer("Bearer abc"), Some("abc"));
        assert_eq!(parse_bearer("bearer  abc "), Some("abc"));
        assert_eq!(parse_bearer("Basic abc"), None);
    }

    #[test]
    fn validation_names_the_key() {
        let mut providers = BTreeMap::new();
        let text = "issuer = \"https://idp.example\"\naudience = \"origin\"\n";
        let good: OidcConfig = toml::from_str(text).unwrap();
        assert_eq!(good.username_claim, "sub");
        providers.insert("a".to_string(), good.clone());
        assert!(validate(&providers).is_ok());
        providers.insert("b".to_string(), good.clone());
        assert!(validate(&providers)
            .unwrap_err()
            .to_string()
            .starts_with("oidc.b.issuer"));
        providers.remove("b");
        let mut bad = good.clone();
        bad.audience.clear();
        providers.insert("a".to_string(), bad);
        assert!(validate(&providers)
            .unwrap_err()
            .to_string()
            .starts_with("oidc.a.audience"));
        let mut bad = good;
        bad.jwks_uri = Some("ftp://x".into());
        providers.insert("a".to_string(), bad);
        assert!(validate(&providers)
            .unwrap_err()
            .to_string()
            .starts_with("oidc.a.jwks_uri"));
    }
}
