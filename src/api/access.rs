//! Who is asking, and may they: Basic credentials, OIDC tokens and the client certificate become one
//! `Identity`; the repository's policies decide the request's action.

use super::route::{query_param, Action, Endpoint};
use crate::app::App;
use crate::auth::{parse_basic, AuthOutcome, Identity};
use crate::error::{Error, Result};
use crate::http::Request;
use crate::metrics::{Metrics, METRICS};
use crate::policy::AccessRequest;

/// How long an address refused for too many failed logins is told to wait.
const AUTH_RATE_LIMITED_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Not (or wrongly) authenticated: the response carries the Basic challenge.
pub fn challenge(message: &str) -> Error {
    Error::Unauthorized(message.into())
}

/// Establishes the caller's identity. A wrong password or token never falls back to
/// anonymous. With no `[identity.*]` nor `[oidc.*]` configured, credentials are ignored.
pub async fn identify(app: &App, req: &Request<'_>) -> Result<Identity> {
    let mut identity = Identity::default();
    if let Some(cert) = &req.certificate {
        identity = identity.with_certificate(cert.common_names.clone(), cert.organizations.clone());
    }
    let Some(header) = req.head.header("authorization") else {
        return Ok(identity);
    };
    let live = app.svc.live.get();
    if !live.has_identities && !live.oidc.is_enabled() {
        return Ok(identity);
    }
    let ip = req.peer.ip();
    let outcome = if let Some(token) = crate::auth::oidc::parse_bearer(header) {
        verify_token(&live, token, ip).await
    } else {
        let Some((user, pass)) = parse_basic(header.as_bytes()) else {
            return Err(challenge("unsupported or malformed Authorization header"));
        };
        // podman and skopeo without credentials answer a challenge with `Basic Og==` (empty
        // user and password): that is an anonymous request, not a failed login to rate-limit.
        if user.is_empty() && pass.is_empty() {
            return Ok(identity);
        }
        // `docker login -u <anything> -p "$TOKEN"`: a JWT from a configured issuer.
        if live.oidc.claims_password(&pass) {
            verify_token(&live, &pass, ip).await
        } else {
            live.auth.verify(&user, &pass, ip).await
        }
    };
    let verified = verified(outcome)?;
    Ok(verified.with_certificate(identity.common_names, identity.organizations))
}

/// What a password or token check decided, as the API answers it: the identity, or 401
/// (counted), 429 (too many failures from this address or for this user) or 503.
pub fn verified(outcome: AuthOutcome) -> Result<Identity> {
    match outcome {
        AuthOutcome::Ok(verified) => Ok(verified),
        AuthOutcome::BadCredentials | AuthOutcome::Unverifiable => {
            Metrics::add(&METRICS.auth_failures, 1);
            Err(challenge("invalid username or password"))
        }
        AuthOutcome::RateLimited => Err({
            Metrics::add(&METRICS.auth_rate_limited, 1);
            Error::RateLimited {
                message: "too many failed authentication attempts; try again later".into(),
                retry_after: AUTH_RATE_LIMITED_RETRY_AFTER,
            }
        }),
        AuthOutcome::Busy => Err(Error::Busy("authentication is busy".into())),
    }
}

/// A token, Bearer or as a Basic password, under the same per-address limit as passwords:
/// refused (429) without a check once the address has failed too often, and counted when
/// it does not verify.
pub async fn verify_token(
    live: &crate::reload::Live,
    token: &str,
    ip: std::net::IpAddr,
) -> AuthOutcome {
    if live.auth.ip_rate_limited(ip) {
        return AuthOutcome::RateLimited;
    }
    let outcome = live.oidc.verify(token).await;
    if outcome == AuthOutcome::BadCredentials {
        live.auth.record_ip_failure(ip);
    }
    outcome
}

/// Decides one request; a denied anonymous caller is challenged (so `docker login` works),
/// a denied known caller gets DENIED.
pub fn authorize(
    app: &App,
    identity: &Identity,
    endpoint: &Endpoint<'_>,
    action: Action,
    query: &str,
) -> Result<()> {
    // The catalog is filtered per repository instead (see listing::catalog).
    if matches!(endpoint, Endpoint::Catalog) {
        return Ok(());
    }
    let digest_param = query_param(query, "digest");
    let access = access_request(endpoint, action, digest_param.as_deref());
    if allowed(app, identity, &access) {
        return Ok(());
    }
    Metrics::add(&METRICS.policy_denials, 1);
    if identity.is_authenticated() {
        Err(Error::Denied(
            "requested access to the resource is denied".into(),
        ))
    } else {
        Err(challenge("authentication required"))
    }
}

/// Whether the policies let `identity` do `action` on `endpoint` (nothing counted: the UI
/// asks this to show only the buttons that would work).
pub fn may(app: &App, identity: &Identity, endpoint: &Endpoint<'_>, action: Action) -> bool {
    allowed(app, identity, &access_request(endpoint, action, None))
}

fn allowed(app: &App, identity: &Identity, access: &AccessRequest<'_>) -> bool {
    app.svc
        .live
        .get()
        .policies
        .may(identity, access)
        .is_allowed()
}

/// What the policies are asked about a request to `endpoint`.
fn access_request<'a>(
    endpoint: &Endpoint<'a>,
    action: Action,
    digest_param: Option<&'a str>,
) -> AccessRequest<'a> {
    let (namespace, digest, reference) = match endpoint {
        Endpoint::Base | Endpoint::Catalog => ("", None, None),
        Endpoint::Tags { name } => (*name, None, None),
        Endpoint::Manifest { name, reference } => {
            let digest = reference.contains(':').then_some(*reference);
            (*name, digest, Some(*reference))
        }
        Endpoint::Blob { name, digest } | Endpoint::Referrers { name, digest } => {
            (*name, Some(*digest), None)
        }
        Endpoint::UploadStart { name } | Endpoint::Upload { name, .. } => {
            (*name, digest_param, None)
        }
    };
    AccessRequest {
        action,
        namespace,
        digest,
        reference,
    }
}
