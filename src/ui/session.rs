//! Log-in sessions of the web UI: signed cookies, nothing kept per node.
//!
//! - A session is a cookie `origin_session = base64url(claims) "." base64url(HMAC-SHA256)`,
//!   `HttpOnly`, `SameSite=Strict`, `Path=<ui path>`, `Secure` when the listener is TLS, with
//!   `Max-Age` = `[ui] session_ttl`; the claims carry their own expiry, checked on every
//!   request (a kept cookie is refused after it).
//! - The signing key is `[ui] session_secret` (or `_file`, `_env`) when given, else a random
//!   key created once in storage with a conditional write (`ui/session-key`): every node that
//!   shares the storage signs and checks with the same key, so a load balancer may send each
//!   request anywhere.
//! - A password session names its `[identity.<id>]` and a keyed fingerprint of its password
//!   hash; a token session carries the OIDC token itself. Both are resolved against the live
//!   configuration on every request: a reload that removes the identity, changes its password
//!   or removes the provider ends the session, and a token session ends with the token.
//! - Logout writes the time in storage under a keyed hash of the identity
//!   (`ui/logout/<hex>`): that identity's sessions issued before are refused on every node.
//!   A node keeps what it read for [`LOGOUT_CACHE_TTL`] (shared by its workers, and updated
//!   at once by a logout on this node): another node honours a logout within that time. Logging out ends all of the identity's UI sessions, in every browser.
//! - Every visitor gets a cookie (an anonymous one before logging in) whose random nonce the
//!   CSRF token is derived from: a state-changing request needs the cookie, the token in
//!   `X-CSRF-Token`, and a same-origin `Origin` / `Sec-Fetch-Site`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::app::App;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::Request;
use crate::registry::layout;
use crate::storage::{PutCondition, PutOutcome, Storage};

pub const COOKIE: &str = "origin_session";
/// Longest `Cookie` header looked at; browsers send at most a few KiB per site.
const COOKIE_HEADER_BYTES_MAX: usize = 8 * 1024;
/// Longest OIDC token a session may carry: the cookie must stay under the 4096 bytes
/// browsers keep for one.
pub const SESSION_TOKEN_BYTES_MAX: usize = 2800;
/// How long a node trusts what it read of an identity's last logout.
pub const LOGOUT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Identities whose last logout a worker remembers; all are forgotten when it is full.
const LOGOUT_CACHE_MAX: usize = 1024;
/// Random bytes in a session's nonce (the CSRF token's seed).
const NONCE_BYTES: usize = 16;
/// Tries at reading or creating the stored key (two nodes racing to create it).
const KEY_ATTEMPTS_MAX: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Not logged in: the cookie only carries the CSRF nonce.
    Anonymous,
    /// Logged in with a username and password.
    Password,
    /// Logged in with a pasted OIDC token.
    Token,
}

/// What a session cookie says (signed, not secret: the browser holds it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    v: u8,
    pub k: Kind,
    /// Random, hex: the CSRF token is derived from it.
    n: String,
    /// Issued and expiring, in Unix microseconds (a logout and a log-in in the same
    /// millisecond are still told apart).
    pub iat: u64,
    pub exp: u64,
    /// `[identity.<id>]` of a password session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Keyed fingerprint of that identity's password hash: a changed password ends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    /// The OIDC token of a token session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
}

/// A visitor's cookie as found on a request.
pub enum Cookie {
    /// None sent.
    Absent,
    /// Signed by us and not expired.
    Valid(Claims),
    /// Altered, expired, or signed with another key.
    Invalid,
}

/// What this process last read of identities' logouts, shared by its workers: a logout on
/// this node is seen by all of them at once.
#[derive(Default)]
pub struct Logouts {
    /// Keyed hash of an identity → (its last logout in Unix ms, when read).
    map: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Logouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Instant)>> {
        // Nothing panics while holding it; the map stays usable if something did.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The signing key of one worker, and the process's logouts.
pub struct Sessions {
    key: RefCell<Option<Rc<hmac::Key>>>,
    logouts: Arc<Logouts>,
}

impl Sessions {
    pub fn new(logouts: Arc<Logouts>) -> Sessions {
        Sessions {
            key: RefCell::new(None),
            logouts,
        }
    }

    /// The signing key: configured, or read (created the first time) from storage.
    pub async fn key(&self, app: &App) -> Result<Rc<hmac::Key>> {
        if let Some(k) = self.key.borrow().clone() {
            return Ok(k);
        }
        let secret = match &app.config.ui.session_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => stored_key(&app.svc.registry.store).await?,
        };
        // Derived, so the configured secret signs nothing directly.
        let root = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let derived = hmac::sign(&root, b"origin web UI sessions v1");
        let key = Rc::new(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()));
        *self.key.borrow_mut() = Some(key.clone());
        Ok(key)
    }

    /// When the identity `who` last logged out, in Unix µs (0: never), at most [`LOGOUT_CACHE_TTL`] old.
    async fn logged_out_at(&self, app: &App, key: &hmac::Key, who: &str) -> Result<u64> {
        let hash = identity_hash(key, who);
        let cached = self.logouts.lock().get(&hash).copied();
        if let Some((at, read)) = cached {
            if read.elapsed() < LOGOUT_CACHE_TTL {
                return Ok(at);
            }
        }
        let stored = app
            .svc
            .registry
            .store
            .get(&layout::ui_logout(&hash))
            .await?;
        let at = stored
            .and_then(|o| String::from_utf8(o.bytes).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        self.remember_logout(hash, at);
        Ok(at)
    }

    fn remember_logout(&self, hash: String, at: u64) {
        let mut cache = self.logouts.lock();
        if cache.len() >= LOGOUT_CACHE_MAX {
            cache.clear();
        }
        // A read that raced a logout on this node must not put the older time back.
        let at = cache.get(&hash).map_or(at, |(known, _)| at.max(*known));
        cache.insert(hash, (at, Instant::now()));
    }

    /// Ends every session of `who` issued before now, on every node.
    pub async fn log_out(&self, app: &App, who: &str) -> Result<()> {
        let key = self.key(app).await?;
        let hash = identity_hash(&key, who);
        let now = now_us(app);
        let store = &app.svc.registry.store;
        let body = now.to_string().into_bytes();
        store
            .put(&layout::ui_logout(&hash), body, PutCondition::Always)
            .await?;
        self.remember_logout(hash, now);
        Ok(())
    }

    /// The session cookie of `req`, checked for signature and expiry.
    pub async fn cookie(&self, app: &App, req: &Request<'_>) -> Result<Cookie> {
        let Some(value) = cookie_value(req) else {
            return Ok(Cookie::Absent);
        };
        let key = self.key(app).await?;
        Ok(match open(&key, value) {
            Some(c) if c.v != 1 => Cookie::Invalid,
            Some(c) if c.exp > now_us(app) => Cookie::Valid(c),
            // An expired anonymous cookie stood for nobody: as if none was sent (a page left
            // open reads on as anonymous; its next change asks for a new CSRF token).
            Some(c) if c.k == Kind::Anonymous => Cookie::Absent,
            _ => Cookie::Invalid,
        })
    }

    /// The identity a valid session stands for, resolved against the live configuration;
    /// None when the session has ended (identity removed or changed, token no longer valid,
    /// logged out since). Anonymous sessions stand for nobody (Some(anonymous)).
    pub async fn identity(
        &self,
        app: &App,
        req: &Request<'_>,
        c: &Claims,
    ) -> Result<Option<Identity>> {
        let key = self.key(app).await?;
        let live = app.svc.live.get();
        let identity = match c.k {
            Kind::Anonymous => return Ok(Some(Identity::default())),
            Kind::Password => {
                let id = c.id.as_deref().unwrap_or_default();
                let Some((identity, phc)) = live.auth.account(id) else {
                    return Ok(None);
                };
                if c.f.as_deref() != Some(&fingerprint(&key, phc)) {
                    return Ok(None);
                }
                identity
            }
            Kind::Token => {
                let token = c.t.as_deref().unwrap_or_default();
                let outcome = crate::api::access::verify_token(&live, token, req.peer.ip()).await;
                match outcome {
                    crate::auth::AuthOutcome::Ok(identity) => identity,
                    crate::auth::AuthOutcome::Busy => {
                        return Err(Error::Busy("authentication is busy".into()))
                    }
                    _ => return Ok(None),
                }
            }
        };
        let who = who(c.k, &identity);
        // Issued at the very microsecond of a logout: ended too (revocation wins ties).
        if c.iat <= self.logged_out_at(app, &key, &who).await? {
            return Ok(None);
        }
        Ok(Some(identity))
    }

    /// A new cookie value for `identity` (anonymous when it is `Kind::Anonymous`).
    pub async fn issue(
        &self,
        app: &App,
        kind: Kind,
        identity: &Identity,
        token: Option<&str>,
    ) -> Result<(String, Claims)> {
        let key = self.key(app).await?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut nonce)
            .map_err(|e| Error::internal(format!("no randomness: {e}")))?;
        let now = now_us(app);
        let live = app.svc.live.get();
        let id = identity.id.clone().filter(|_| kind == Kind::Password);
        let f = match &id {
            Some(id) => live.auth.account(id).map(|(_, phc)| fingerprint(&key, phc)),
            None => None,
        };
        let claims = Claims {
            v: 1,
            k: kind,
            n: hex(&nonce),
            iat: now,
            exp: now + app.config.ui.session_ttl.as_micros() as u64,
            id,
            f,
            t: token.map(str::to_owned),
        };
        let payload = serde_json::to_vec(&claims)
            .map_err(|e| Error::internal(format!("session claims: {e}")))?;
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&key, payload.as_bytes()).as_ref());
        Ok((format!("{payload}.{tag}"), claims))
    }

    /// The CSRF token of a session: a keyed hash of its nonce.
    pub async fn csrf(&self, app: &App, c: &Claims) -> Result<String> {
        let key = self.key(app).await?;
        Ok(csrf_of(&key, c))
    }
}

fn csrf_of(key: &hmac::Key, c: &Claims) -> String {
    URL_SAFE_NO_PAD.encode(hmac::sign(key, &csrf_input(c)).as_ref())
}

/// What a CSRF token is the HMAC of: the session's nonce.
fn csrf_input(c: &Claims) -> Vec<u8> {
    [b"csrf\0", c.n.as_bytes()].concat()
}

/// Refuses a state-changing request that is not provably from this UI's own page: it must
/// come from this origin (`Sec-Fetch-Site: same-origin` when sent, an `Origin` naming this
/// host), with a valid cookie and its CSRF token in `X-CSRF-Token`.
pub async fn check_csrf(app: &App, req: &Request<'_>, cookie: &Cookie) -> Result<()> {
    let refuse = |why: &str| Err(Error::Denied(format!("request refused: {why}")));
    let head = &req.head;
    let site = head.header("sec-fetch-site");
    if site.is_some_and(|s| s != "same-origin") {
        return refuse("it comes from another site");
    }
    match head.header("origin") {
        Some(origin) => {
            let host = origin.split_once("://").map(|(_, h)| h);
            if host.is_none() || host != head.header("host") {
                return refuse("it comes from another origin");
            }
        }
        None if site.is_none() => return refuse("it names no origin"),
        None => {}
    }
    let Cookie::Valid(claims) = cookie else {
        return refuse("no valid session cookie (reload the page)");
    };
    let key = app.ui.key(app).await?;
    let sent = head.header("x-csrf-token").unwrap_or_default();
    let sent = URL_SAFE_NO_PAD.decode(sent).unwrap_or_default();
    // Compared by ring's HMAC verification, in constant time.
    if hmac::verify(&key, &csrf_input(claims), &sent).is_err() {
        return refuse("missing or wrong CSRF token (reload the page)");
    }
    Ok(())
}

/// The `Set-Cookie` value for `value`, or one that removes the cookie when None.
pub fn set_cookie(app: &App, value: Option<&str>) -> String {
    let secure = match app.config.server.tls.is_some() {
        true => "; Secure",
        false => "",
    };
    let path = &app.config.ui.path;
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            app.config.ui.session_ttl.as_secs()
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

/// The name logouts are recorded under: the configured id, or the token identity's.
pub fn who(kind: Kind, identity: &Identity) -> String {
    let id = identity.id.as_deref().unwrap_or_default();
    match kind {
        Kind::Password => format!("identity:{id}"),
        Kind::Token | Kind::Anonymous => format!("token:{id}"),
    }
}

fn now_us(app: &App) -> u64 {
    app.svc
        .registry
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn cookie_value<'r>(req: &'r Request<'_>) -> Option<&'r str> {
    let header = req.head.header("cookie")?;
    if header.len() > COOKIE_HEADER_BYTES_MAX {
        return None;
    }
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The claims of a cookie value whose signature verifies.
fn open(key: &hmac::Key, value: &str) -> Option<Claims> {
    let (payload, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(key, payload.as_bytes(), &tag).ok()?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&json).ok()
}

fn fingerprint(key: &hmac::Key, phc: &str) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(b"password\0");
    ctx.update(phc.as_bytes());
    hex(&ctx.sign().as_ref()[..12])
}

fn identity_hash(key: &hmac::Key, who: &str) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(b"logout\0");
    ctx.update(who.as_bytes());
    hex(&ctx.sign().as_ref()[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key in storage, created by the first node that needs it: a conditional create, so
/// two nodes starting together agree on one.
async fn stored_key(store: &crate::storage::Backend) -> Result<Vec<u8>> {
    for _ in 0..KEY_ATTEMPTS_MAX {
        if let Some(o) = store.get(layout::UI_SESSION_KEY).await? {
            if o.bytes.len() >= 32 {
                return Ok(o.bytes);
            }
            return Err(Error::internal(format!(
                "{} is shorter than 32 bytes",
                layout::UI_SESSION_KEY
            )));
        }
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| Error::internal(format!("no randomness: {e}")))?;
        let written = store
            .put(layout::UI_SESSION_KEY, key.to_vec(), PutCondition::IfAbsent)
            .await?;
        if let PutOutcome::Written(_) = written {
            return Ok(key.to_vec());
        }
    }
    Err(Error::internal(
        "could not read or create the UI session key",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            v: 1,
            k: Kind::Anonymous,
            n: "00".into(),
            iat: 1,
            exp: 2,
            id: None,
            f: None,
            t: None,
        }
    }

    /// A cookie opens only with its own key and unaltered.
    #[test]
    fn cookies_open_only_unaltered_with_their_key() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let tag = URL_SAFE_NO_PAD.encode(hmac::sign(&key, payload.as_bytes()).as_ref());
        let value = format!("{payload}.{tag}");
        assert!(open(&key, &value).is_some());
        assert!(open(&other, &value).is_none());
        let mut forged = claims();
        forged.k = Kind::Password;
        forged.id = Some("admin".into());
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(open(&key, &format!("{forged}.{tag}")).is_none());
        assert!(open(&key, &payload).is_none());
        assert_ne!(csrf_of(&key, &claims()), csrf_of(&other, &claims()));
    }
}
