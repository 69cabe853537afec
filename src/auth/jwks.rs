//! One identity provider's signing keys: discovery, JWKS fetches and the rules for when to
//! fetch again.
//!
//! - Keys are fetched on first use and then used for `keys_cache`; after that the next token
//!   fetches them again. A failed fetch keeps the keys already held (an unreachable provider
//!   still verifies tokens signed with known keys) and fails closed for unknown ones.
//! - A token whose `kid` is not held triggers a fetch (key rotation), at most one per
//!   `keys_refresh_min` (at least [`REFRESH_INTERVAL_FLOOR`]) per provider whatever tokens
//!   clients make up, so the fetches are bounded; one fetch at a time, the other workers wait
//!   for it (or use a key they hold).
//! - Fetches use the project's HTTP client on the calling worker's runtime, with a deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{ConfigError, OidcConfig};
use crate::http::client::{Client, Target, UrlError};

/// Why a provider's signing keys could not be fetched (logged; the keys held stay in use).
#[derive(Debug)]
pub enum KeysError {
    /// A discovery document's `jwks_uri`, or a URL to fetch, that is not one.
    Url(UrlError),
    /// The request to `url` failed, or its body could not be read.
    Send { url: String, source: std::io::Error },
    /// `url` answered `status`.
    Status { url: String, status: u16 },
    /// The discovery document at `url` does not parse.
    NotDiscovery {
        url: String,
        source: serde_json::Error,
    },
    /// The discovery document at `url` names another issuer.
    Issuer {
        url: String,
        named: String,
        expected: String,
    },
    /// The document at `url` is not a JWKS.
    NotJwks {
        url: String,
        source: serde_json::Error,
    },
    /// Discovery and fetch together took longer than twice the provider's timeout.
    TimedOut,
}

impl std::fmt::Display for KeysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeysError::Url(e) => write!(f, "{e}"),
            KeysError::Send { url, source } => write!(f, "{url}: {source}"),
            KeysError::Status { url, status } => write!(f, "{url}: status {status}"),
            KeysError::NotDiscovery { url, source } => {
                write!(f, "{url}: not a discovery document: {source}")
            }
            KeysError::Issuer {
                url,
                named,
                expected,
            } => write!(f, "{url}: names issuer {named:?}, not {expected:?}"),
            KeysError::NotJwks { url, source } => write!(f, "{url}: not a JWKS: {source}"),
            KeysError::TimedOut => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for KeysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeysError::Url(e) => Some(e),
            KeysError::Send { source, .. } => Some(source),
            KeysError::NotDiscovery { source, .. } | KeysError::NotJwks { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// Largest discovery document or JWKS read; real ones are a few KiB.
pub const JWKS_BYTES_MAX: usize = 256 * 1024;
/// Keys kept per provider; providers publish two or three (current, next, previous).
pub const KEYS_MAX: usize = 64;
/// The smallest `keys_refresh_min` accepted: unknown `kid`s sent by clients must not turn the
/// registry into a load generator against the provider.
pub const REFRESH_INTERVAL_FLOOR: Duration = Duration::from_secs(1);
/// How often a worker waiting for another worker's fetch looks again.
const WAIT_POLL: Duration = Duration::from_millis(10);

/// A verification key and the algorithms it may verify.
pub(super) struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    pub(super) decoding: DecodingKey,
}

struct State {
    keys: Arc<Vec<Key>>,
    /// When `keys` were fetched; None before the first success.
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Set while a worker fetches; others wait for it instead of fetching too.
    fetching: bool,
    /// The `jwks_uri` found by discovery (or configured).
    jwks_uri: Option<String>,
}

/// Why no key was found for a token.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum KeyError {
    /// No held key has this `kid` (or fits this algorithm), and a fetch did not bring one.
    Unknown,
    /// No keys at all: the provider has not been reached yet.
    Unavailable,
}

pub(super) struct KeyStore {
    name: String,
    issuer: String,
    keys_cache: Duration,
    refresh_min: Duration,
    client: Client,
    state: Mutex<State>,
}

/// Clears `fetching` however the fetch ends (also when the request's future is dropped).
struct FetchGuard<'a>(&'a KeyStore);

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().fetching = false;
    }
}

impl KeyStore {
    pub(super) fn new(name: &str, cfg: &OidcConfig) -> Result<KeyStore, ConfigError> {
        let what = format!("oidc.{name}.ca_bundle");
        let tls = crate::tls::client_config(&what, cfg.ca_bundle.as_deref()).map_err(|e| e.0)?;
        Ok(KeyStore {
            name: name.to_string(),
            issuer: cfg.issuer.clone(),
            keys_cache: cfg.keys_cache,
            refresh_min: cfg.keys_refresh_min,
            client: Client {
                tls,
                timeout: cfg.timeout,
            },
            state: Mutex::new(State {
                keys: Arc::new(Vec::new()),
                fetched: None,
                last_attempt: None,
                fetching: false,
                jwks_uri: cfg.jwks_uri.clone(),
            }),
        })
    }

    /// Takes the keys `previous` fetched (and when, and from where), for a provider whose
    /// configuration is the same: a reload neither fetches them again nor loses them while
    /// the provider is unreachable.
    pub(super) fn adopt(&self, previous: &KeyStore) {
        let (keys, fetched, last_attempt, jwks_uri) = {
            let old = previous.lock();
            (
                old.keys.clone(),
                old.fetched,
                old.last_attempt,
                old.jwks_uri.clone(),
            )
        };
        let mut st = self.lock();
        st.keys = keys;
        st.fetched = fetched;
        st.last_attempt = last_attempt;
        st.jwks_uri = jwks_uri;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding it; the state stays consistent if something did.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key for a token's header, fetching keys when they are stale or the `kid` is new
    /// (within the rate limit). Never blocks the thread: it awaits the fetch.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<Vec<Key>>, KeyError> {
        let deadline = Instant::now() + self.client.timeout * 3;
        loop {
            let now = Instant::now();
            let (keys, should_fetch, wait) = {
                let mut st = self.lock();
                let fresh = st.fetched.is_some_and(|t| now < t + self.keys_cache);
                let known = find(&st.keys, kid, alg).is_some();
                let may = st.last_attempt.is_none_or(|t| now >= t + self.refresh_min);
                // A held key is used at once while another worker refreshes; past the rate
                // limit, whatever is held is all there is.
                let use_held = known && (fresh || st.fetching);
                let rate_limited = !may && !st.fetching;
                if use_held || rate_limited {
                    (st.keys.clone(), false, false)
                } else if st.fetching {
                    (st.keys.clone(), false, true)
                } else {
                    st.fetching = true;
                    st.last_attempt = Some(now);
                    (st.keys.clone(), true, false)
                }
            };
            if wait && Instant::now() < deadline {
                compio::time::sleep(WAIT_POLL).await;
                continue;
            }
            let keys = if should_fetch {
                let _guard = FetchGuard(self);
                self.refresh().await.unwrap_or(keys)
            } else {
                keys
            };
            return match find(&keys, kid, alg) {
                Some(_) => Ok(keys),
                None if keys.is_empty() => Err(KeyError::Unavailable),
                None => Err(KeyError::Unknown),
            };
        }
    }

    /// Fetches the keys (discovering the JWKS URI first if needed) and publishes them.
    /// On failure the held keys stay and the reason is logged.
    #[tracing::instrument(target = "origin::span", name = "auth.jwks_refresh", skip_all)]
    async fn refresh(&self) -> Option<Arc<Vec<Key>>> {
        let deadline = self.client.timeout * 2;
        let fetched = match compio::time::timeout(deadline, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(KeysError::TimedOut),
        };
        match fetched {
            Ok((uri, keys)) => {
                tracing::info!(provider = %self.name, keys = keys.len(), "OIDC signing keys fetched");
                let keys = Arc::new(keys);
                let mut st = self.lock();
                st.keys = keys.clone();
                st.fetched = Some(Instant::now());
                st.jwks_uri = Some(uri);
                Some(keys)
            }
            Err(e) => {
                crate::metrics::Metrics::add(&crate::metrics::METRICS.oidc_key_fetch_failures, 1);
                tracing::warn!(provider = %self.name, "OIDC signing keys not fetched: {e}");
                None
            }
        }
    }

    async fn fetch(&self) -> Result<(String, Vec<Key>), KeysError> {
        let configured = self.lock().jwks_uri.clone();
        let uri = match configured {
            Some(u) => u,
            None => self.discover().await?,
        };
        let body = self.get(&uri).await?;
        let keys = parse_jwks(&body).map_err(|source| KeysError::NotJwks {
            url: uri.clone(),
            source,
        })?;
        Ok((uri, keys))
    }

    /// `jwks_uri` from `<issuer>/.well-known/openid-configuration`, whose `issuer` must be ours.
    async fn discover(&self) -> Result<String, KeysError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|source| KeysError::NotDiscovery {
                url: url.clone(),
                source,
            })?;
        if doc.issuer != self.issuer {
            return Err(KeysError::Issuer {
                url,
                named: doc.issuer,
                expected: self.issuer.clone(),
            });
        }
        crate::http::client::UpstreamUrl::parse(&doc.jwks_uri).map_err(KeysError::Url)?;
        Ok(doc.jwks_uri)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, KeysError> {
        let target = Target::absolute(url).map_err(KeysError::Url)?;
        let send = |source| KeysError::Send {
            url: url.to_string(),
            source,
        };
        let headers = [("accept", "application/json".to_string())];
        let resp = self
            .client
            .send("GET", &target, &headers)
            .await
            .map_err(send)?;
        if resp.status != 200 {
            let status = resp.status;
            resp.drain().await;
            return Err(KeysError::Status {
                url: url.to_string(),
                status,
            });
        }
        resp.bytes(JWKS_BYTES_MAX).await.map_err(send)
    }
}

/// The key a token names: by `kid`, or the only key for its algorithm when it names none.
pub(super) fn find<'k>(keys: &'k [Key], kid: Option<&str>, alg: Algorithm) -> Option<&'k Key> {
    let mut fits = keys.iter().filter(|k| k.algorithms.contains(&alg));
    match kid {
        Some(kid) => fits.find(|k| k.kid.as_deref() == Some(kid)),
        None => {
            let first = fits.next()?;
            fits.next().is_none().then_some(first)
        }
    }
}

/// The signature keys of a JWKS document. Keys that are not for signatures, not of a kind
/// accepted here (symmetric `oct` keys never are) or malformed are skipped, not fatal: a
/// provider may publish keys for other uses beside them.
pub(super) fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body)?;
    let mut keys = Vec::new();
    for value in set.keys.into_iter().take(KEYS_MAX) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if let Some(key) = key_of(&jwk) {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn key_of(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let mut algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => return None,
    };
    // A key that names its algorithm verifies that one only.
    if let Some(ka) = &jwk.common.key_algorithm {
        let named = format!("{ka:?}");
        algorithms.retain(|a| format!("{a:?}") == named);
    }
    if algorithms.is_empty() {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        decoding: DecodingKey::from_jwk(jwk).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_keeps_signature_keys_and_skips_the_rest() {
        let body = br#"{"keys":[
            {"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRjGbtNbSrFnbXHyVmUrLLv7RhXcp2WPhBWDRrE","use":"sig","alg":"ES256"},
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"RSA","kid":"enc","n":"AQAB","e":"AQAB","use":"enc"},
            {"kty":"RSA","kid":"rsa","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjBk9jqR7wY8Lu5QnQoI0s6ftNQ7wm8l1J2E4Gc7YZ5rUZVy3i4k3kq8Xp9Hqf8U8vPPvbnX8c","e":"AQAB","alg":"RS256"},
            {"kty":"weird"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("ec"), Some("rsa")]);
        assert!(find(&keys, Some("ec"), Algorithm::ES256).is_some());
        assert!(find(&keys, Some("ec"), Algorithm::ES384).is_none());
        // The RSA key names RS256, so PS256 is not accepted with it.
        assert!(find(&keys, Some("rsa"), Algorithm::PS256).is_none());
        assert!(find(&keys, Some("hmac"), Algorithm::HS256).is_none());
        assert!(find(&keys, None, Algorithm::RS256).is_some());
        assert!(find(&keys, Some("nope"), Algorithm::RS256).is_none());
        assert!(parse_jwks(b"[]").is_err());
    }
}
