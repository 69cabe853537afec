//! Authenticating to an upstream: anonymous, Basic, or the Bearer token flow of Docker Hub,
//! GHCR and Quay (401 with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, a token
//! from the realm, reused per scope until it expires).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::client::{Client, Response, Target, UpstreamUrl, UrlError};

/// Why a request to an upstream registry, or to its token server, failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The exchange with `at` (an upstream's authority, or a token realm) failed.
    Send { at: String, source: std::io::Error },
    /// A Bearer challenge without a realm.
    NoRealm,
    /// A Bearer challenge whose realm is not a URL.
    Realm(UrlError),
    /// The token server at `realm` answered `status`.
    TokenRefused { realm: String, status: u16 },
    /// The token response could not be read.
    TokenRead(std::io::Error),
    /// The token response is not JSON of a token.
    TokenJson(serde_json::Error),
    /// The token response has no token.
    NoToken,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Send { at, source } => write!(f, "{at}: {source}"),
            UpstreamError::NoRealm => f.write_str("Bearer challenge without a realm"),
            UpstreamError::Realm(e) => write!(f, "token realm: {e}"),
            UpstreamError::TokenRefused { realm, status } => {
                write!(f, "token server {realm} answered {status}")
            }
            UpstreamError::TokenRead(e) => write!(f, "token response: {e}"),
            UpstreamError::TokenJson(e) => write!(f, "token response: {e}"),
            UpstreamError::NoToken => f.write_str("token response without a token"),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Send { source, .. } | UpstreamError::TokenRead(source) => Some(source),
            UpstreamError::Realm(e) => Some(e),
            UpstreamError::TokenJson(e) => Some(e),
            _ => None,
        }
    }
}

/// Tokens kept per upstream (one per repository scope); past this the cache is emptied.
pub const TOKENS_MAX: usize = 4096;
/// Largest token response accepted.
const TOKEN_RESPONSE_BYTES_MAX: usize = 1024 * 1024;
/// Lifetime assumed when the token server does not say (the spec's default).
const TOKEN_LIFETIME_DEFAULT: Duration = Duration::from_secs(60);
/// A token is replaced this long before it expires, so it never expires in flight.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased: "bearer" or "basic".
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the first challenge of a `WWW-Authenticate` value: a scheme, then
/// `name=value` or `name="quoted value"` pairs separated by commas.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = Vec::new();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &q[end?..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        params.push((name, value));
        rest = rest.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// Standard base64 with padding (for Basic credentials).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Credentials and cached tokens of one upstream (or replication target).
pub struct Auth {
    /// `Basic <base64(user:password)>` when credentials are configured.
    basic: Option<String>,
    /// `Bearer <token>` when a fixed token is configured: sent with every request.
    fixed: Option<String>,
    /// Set once the upstream asked for Basic: later requests send it up front.
    wants_basic: AtomicBool,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// The upstream's Bearer challenge (without a scope), once seen: tokens for new scopes
    /// are then fetched before the request, so no request is sent only to be refused.
    bearer: Mutex<Option<Challenge>>,
    /// Set once `/v2/` was asked how the upstream authenticates.
    probed: AtomicBool,
}

impl Auth {
    pub fn new(username: Option<&str>, password: Option<&str>) -> Auth {
        let basic = match (username, password) {
            (Some(u), Some(p)) => Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            _ => None,
        };
        Auth {
            basic,
            fixed: None,
            wants_basic: AtomicBool::new(false),
            tokens: Mutex::new(HashMap::new()),
            bearer: Mutex::new(None),
            probed: AtomicBool::new(false),
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (a token from the
    /// configuration; nothing is fetched).
    pub fn with_token(mut self, token: Option<&str>) -> Auth {
        self.fixed = token.map(|t| format!("Bearer {t}"));
        self
    }

    /// Sends a request (with `body`, or without one for GET and HEAD, which follow
    /// redirects) with the credentials known for `scope`, answering one authentication
    /// challenge (token fetch or Basic) and sending it once more.
    #[allow(clippy::too_many_arguments)] // The request's parts; a struct would only rename them.
    pub async fn send(
        &self,
        client: &Client,
        base: &UpstreamUrl,
        method: &str,
        target: &Target,
        scope: &str,
        extra: &[(&str, String)],
        body: Option<&[u8]>,
    ) -> Result<Response, UpstreamError> {
        self.send_paced(client, base, method, target, scope, extra, body, None)
            .await
    }

    /// `send`, with the body (if any) paced by `pacer` (a replication target's bandwidth
    /// limit); a body sent again after a challenge is paced again, as it is sent again.
    #[allow(clippy::too_many_arguments)] // As `send`.
    pub async fn send_paced(
        &self,
        client: &Client,
        base: &UpstreamUrl,
        method: &str,
        target: &Target,
        scope: &str,
        extra: &[(&str, String)],
        body: Option<&[u8]>,
        pacer: Option<&dyn crate::http::Pacer>,
    ) -> Result<Response, UpstreamError> {
        if self.header_for(scope).is_none() {
            self.prepare(client, base, scope).await?;
        }
        let mut answered = false;
        loop {
            let mut headers: Vec<(&str, String)> = extra.to_vec();
            let sent_with = self.header_for(scope);
            if let Some(h) = &sent_with {
                headers.push(("Authorization", h.clone()));
            }
            let sent = match (body, pacer) {
                (None, _) => client.send(method, target, &headers).await,
                (Some(b), None) => client.send_body(method, target, &headers, b).await,
                (Some(b), Some(p)) => client.send_body_paced(method, target, &headers, b, p).await,
            };
            let resp = sent.map_err(|source| UpstreamError::Send {
                at: base.authority(),
                source,
            })?;
            if resp.status != 401 || answered || self.fixed.is_some() {
                return Ok(resp);
            }
            answered = true;
            // Credentials learnt meanwhile by a concurrent request (its probe, its answer to
            // the same challenge) are worth one more try too.
            let learnt = self.answer(client, &resp, scope).await?;
            if !learnt && self.header_for(scope) == sent_with {
                return Ok(resp);
            }
            resp.drain().await;
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Authorization header to send up front for `scope`, if any is known to work.
    pub fn header_for(&self, scope: &str) -> Option<String> {
        if let Some(fixed) = &self.fixed {
            return Some(fixed.clone());
        }
        if let Some((token, expires)) = self.tokens().get(scope) {
            if Instant::now() < *expires {
                return Some(format!("Bearer {token}"));
            }
        }
        if self.wants_basic.load(Relaxed) {
            return self.basic.clone();
        }
        None
    }

    /// Before a request with no credentials known for `scope`: learns how the upstream
    /// authenticates (one `GET /v2/`, as Docker clients do) and fetches a token if it wants
    /// one, so requests are not sent twice (a 401 first) for every new repository.
    pub async fn prepare(
        &self,
        client: &Client,
        base: &UpstreamUrl,
        scope: &str,
    ) -> Result<(), UpstreamError> {
        let known = self
            .bearer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(challenge) = known {
            return self.store_token(client, &challenge, scope).await;
        }
        if self.probed.swap(true, Relaxed) {
            return Ok(());
        }
        let target = Target {
            url: base.clone(),
            path: format!("{}/v2/", base.path),
        };
        let resp =
            client
                .send("GET", &target, &[])
                .await
                .map_err(|source| UpstreamError::Send {
                    at: base.authority(),
                    source,
                })?;
        if resp.status == 401 {
            self.answer(client, &resp, scope).await?;
        }
        resp.drain().await;
        Ok(())
    }

    async fn store_token(
        &self,
        client: &Client,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<(), UpstreamError> {
        let (token, lifetime) = self.fetch_token(client, challenge, scope).await?;
        let expires = Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN);
        let mut tokens = self.tokens();
        if tokens.len() >= TOKENS_MAX {
            tokens.clear();
        }
        tokens.insert(scope.to_string(), (token, expires));
        Ok(())
    }

    /// Answers a 401: fetches a token for a Bearer challenge, or switches to Basic. Returns
    /// false when there is nothing new to try.
    pub async fn answer(
        &self,
        client: &Client,
        resp: &Response,
        scope: &str,
    ) -> Result<bool, UpstreamError> {
        let Some(challenge) = resp.header("www-authenticate").and_then(parse_challenge) else {
            return Ok(false);
        };
        match challenge.scheme.as_str() {
            "bearer" => {
                let mut general = challenge.clone();
                general
                    .params
                    .retain(|(n, _)| !n.eq_ignore_ascii_case("scope"));
                *self.bearer.lock().unwrap_or_else(|p| p.into_inner()) = Some(general);
                self.store_token(client, &challenge, scope).await?;
                Ok(true)
            }
            "basic" if self.basic.is_some() => Ok(!self.wants_basic.swap(true, Relaxed)),
            _ => Ok(false),
        }
    }

    async fn fetch_token(
        &self,
        client: &Client,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<(String, Duration), UpstreamError> {
        let realm = challenge.param("realm").ok_or(UpstreamError::NoRealm)?;
        let mut target = Target::absolute(realm).map_err(UpstreamError::Realm)?;
        let path = &mut target.path;
        path.push(if path.contains('?') { '&' } else { '?' });
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", crate::http::query::escape(service)));
        }
        // The challenge names the scope the upstream wants; ours is the same for pulls.
        let scope = challenge.param("scope").unwrap_or(scope);
        query.push(format!("scope={}", crate::http::query::escape(scope)));
        path.push_str(&query.join("&"));
        let mut headers = Vec::new();
        if let Some(basic) = &self.basic {
            headers.push(("Authorization", basic.clone()));
        }
        let resp = client
            .send("GET", &target, &headers)
            .await
            .map_err(|source| UpstreamError::Send {
                at: format!("token request to {realm}"),
                source,
            })?;
        if resp.status != 200 {
            return Err(UpstreamError::TokenRefused {
                realm: realm.to_string(),
                status: resp.status,
            });
        }
        let body = resp
            .bytes(TOKEN_RESPONSE_BYTES_MAX)
            .await
            .map_err(UpstreamError::TokenRead)?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(UpstreamError::TokenJson)?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or(UpstreamError::NoToken)?;
        let lifetime = parsed
            .expires_in
            .map_or(TOKEN_LIFETIME_DEFAULT, Duration::from_secs);
        Ok((token, lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(c.param("scope"), Some("repository:library/alpine:pull"));
        let c = parse_challenge(r#"Basic realm="a \"quoted\" realm", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c.param("charset"), Some("UTF-8"));
        assert!(parse_challenge("").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }
}
