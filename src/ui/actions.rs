//! Who the UI's visitor is, and what changes state: `session` (who am I, the CSRF token),
//! `login` (a password through the same check and failure limit as Basic auth, or a pasted
//! OIDC token verified as a Bearer token is), `logout`, and `delete` (a tag or a manifest
//! through the service layer's own delete, as `DELETE /v2/<name>/manifests/<ref>` is).
//! Every POST passes [`session::check_csrf`] first.

use super::session::{self, Cookie, Kind};
use crate::api::access;
use crate::api::route::{Action, Endpoint};
use crate::app::App;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::Request;
use crate::oci::Reference;
use crate::service::{manifests, Caller};

/// Largest body of a UI POST: a username and password, a token, or a repository and a
/// reference.
const BODY_BYTES_MAX: u64 = 16 * 1024;

/// An answer and the cookie to set with it, if any.
pub struct Answer {
    pub value: serde_json::Value,
    pub set_cookie: Option<String>,
}

impl From<serde_json::Value> for Answer {
    fn from(value: serde_json::Value) -> Answer {
        Answer {
            value,
            set_cookie: None,
        }
    }
}

/// Who a UI request is from: credentials in `Authorization` exactly as on `/v2/`; else the
/// session cookie (resolved against the live configuration); else the connection's client
/// certificate, or anonymous. An ended or altered session is refused (401), never taken
/// for anonymous.
pub async fn identify(app: &App, req: &Request<'_>, cookie: &Cookie) -> Result<Identity> {
    let base = access::identify(app, req).await?;
    if req.head.header("authorization").is_some() {
        return Ok(base);
    }
    match cookie {
        Cookie::Valid(c) if c.k != Kind::Anonymous => match app.ui.identity(app, req, c).await? {
            Some(id) => Ok(id.with_certificate(base.common_names, base.organizations)),
            None => Err(ended()),
        },
        Cookie::Invalid => Err(ended()),
        _ => Ok(base),
    }
}

fn ended() -> Error {
    Error::Unauthorized(
        "your session has ended (expired, logged out or changed): log in again".into(),
    )
}

/// `GET session`: the visitor's identity, its CSRF token, and how one may log in. A visitor
/// without a usable cookie gets a new anonymous one (its nonce seeds the CSRF token).
pub async fn session(app: &App, req: &Request<'_>) -> Result<Answer> {
    let cookie = app.ui.cookie(app, req).await?;
    let (identity, kind, claims, set_cookie, ended) = match &cookie {
        Cookie::Valid(c) => match app.ui.identity(app, req, c).await? {
            Some(identity) => (identity, c.k, c.clone(), None, false),
            None => anonymous(app, true).await?,
        },
        Cookie::Invalid => anonymous(app, true).await?,
        Cookie::Absent => anonymous(app, false).await?,
    };
    // The client certificate identifies a visitor who has not logged in.
    let identity = match kind {
        Kind::Anonymous => access::identify(app, req).await.unwrap_or_default(),
        _ => identity,
    };
    let live = app.svc.live.get();
    let value = serde_json::json!({
        "identity": describe(&identity, kind),
        "csrf": app.ui.csrf(app, &claims).await?,
        "expires": (kind != Kind::Anonymous).then_some(claims.exp / 1000),
        "login": { "password": live.has_identities, "token": live.oidc.is_enabled() },
        "ended": ended,
    });
    Ok(Answer { value, set_cookie })
}

type Fresh = (Identity, Kind, session::Claims, Option<String>, bool);

async fn anonymous(app: &App, ended: bool) -> Result<Fresh> {
    let (value, claims) = app
        .ui
        .issue(app, Kind::Anonymous, &Identity::default(), None)
        .await?;
    let cookie = session::set_cookie(app, Some(&value));
    Ok((
        Identity::default(),
        Kind::Anonymous,
        claims,
        Some(cookie),
        ended,
    ))
}

fn describe(identity: &Identity, kind: Kind) -> serde_json::Value {
    if !identity.is_authenticated() {
        return serde_json::Value::Null;
    }
    let how = match kind {
        Kind::Password => "password",
        Kind::Token => "token",
        Kind::Anonymous => "certificate",
    };
    let name = identity
        .username
        .clone()
        .or_else(|| identity.common_names.first().cloned())
        .or_else(|| identity.id.clone())
        .unwrap_or_default();
    serde_json::json!({ "name": name, "via": how })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

/// `POST login`: a new session for verified credentials (a new nonce: a session is never
/// one the visitor had before logging in).
pub async fn login(app: &App, req: &mut Request<'_>, cookie: &Cookie) -> Result<Answer> {
    let body: Login = json_body(req).await?;
    session::check_csrf(app, req, cookie).await?;
    let live = app.svc.live.get();
    let ip = req.peer.ip();
    // Who the visitor is before logging in (its client certificate), for the audit record
    // of a failed log-in.
    let mut visitor = Identity::default();
    if let Some(cert) = &req.certificate {
        visitor = visitor.with_certificate(cert.common_names.clone(), cert.organizations.clone());
    }
    let (identity, kind, token) = match (&body.username, &body.password, &body.token) {
        (Some(user), Some(pass), None) if !user.is_empty() => {
            let outcome = live.auth.verify(user, pass, ip).await;
            let verified = access::verified(app, &visitor, ip, Some(user), outcome)?;
            (verified, Kind::Password, None)
        }
        (None, None, Some(token)) if live.oidc.is_enabled() => {
            if token.len() > session::SESSION_TOKEN_BYTES_MAX {
                return Err(Error::QueryInvalid(
                    "this token is too long to keep in a browser session".into(),
                ));
            }
            let outcome = access::verify_token(&live, token.trim(), ip).await;
            let verified = access::verified(app, &visitor, ip, None, outcome)?;
            (verified, Kind::Token, Some(token.trim()))
        }
        _ => {
            return Err(Error::QueryInvalid(
                "give a username and a password, or a token where tokens are accepted".into(),
            ))
        }
    };
    let (cookie, claims) = app.ui.issue(app, kind, &identity, token).await?;
    let value = serde_json::json!({
        "identity": describe(&identity, kind),
        "csrf": app.ui.csrf(app, &claims).await?,
        "expires": claims.exp / 1000,
    });
    Ok(Answer {
        value,
        set_cookie: Some(session::set_cookie(app, Some(&cookie))),
    })
}

/// `POST logout`: ends every UI session of this identity, on every node, and removes the
/// cookie.
pub async fn logout(app: &App, req: &Request<'_>, cookie: &Cookie) -> Result<Answer> {
    session::check_csrf(app, req, cookie).await?;
    if let Cookie::Valid(c) = cookie {
        if c.k != Kind::Anonymous {
            if let Some(identity) = app.ui.identity(app, req, c).await? {
                app.ui.log_out(app, &session::who(c.k, &identity)).await?;
            }
        }
    }
    Ok(Answer {
        value: serde_json::json!({ "loggedOut": true }),
        set_cookie: Some(session::set_cookie(app, None)),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
}

/// `POST delete`: a tag or a manifest, decided by the same policy action as
/// `DELETE /v2/<repo>/manifests/<ref>` and done by the same service function (its events,
/// immutability and retention rules included).
pub async fn delete(app: &App, req: &mut Request<'_>, cookie: &Cookie) -> Result<Answer> {
    let body: Delete = json_body(req).await?;
    session::check_csrf(app, req, cookie).await?;
    let identity = identify(app, req, cookie).await?;
    let name = crate::api::repo(&body.repo)?;
    let reference = Reference::parse(&body.reference)
        .map_err(|e| Error::ManifestUnknown(format!("manifest unknown: {e}")))?;
    let endpoint = Endpoint::Manifest {
        name: name.as_str(),
        reference: &body.reference,
    };
    access::authorize(
        app,
        &identity,
        req.peer.ip(),
        &endpoint,
        Action::DeleteManifest,
        "",
    )?;
    if app.svc.live.peek(|l| {
        l.mirrors
            .resolve(name.as_str(), "")
            .is_some_and(|(ns, _)| !ns.writable)
    }) {
        return Err(Error::MethodNotAllowed {
            message: "this repository is a read-only mirror of an upstream registry".into(),
            allow: None,
        });
    }
    let caller = Caller {
        identity: &identity,
        ip: req.peer.ip(),
        clock: req.clock,
    };
    manifests::delete(&app.svc, &caller, &name, &reference).await?;
    Ok(serde_json::json!({ "deleted": body.reference }).into())
}

async fn json_body<T: serde::de::DeserializeOwned>(req: &mut Request<'_>) -> Result<T> {
    let bytes = req.body.read_to_vec(BODY_BYTES_MAX).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::QueryInvalid(format!("the request body is not what was expected: {e}")))
}
