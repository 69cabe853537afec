//! Who is asking, and may they: Basic credentials, OIDC tokens and the client certificate become one
//! `Identity`; the repository's policies decide the request's action. Failed logins and
//! denials are audited here, where they are decided.

use std::net::IpAddr;

use super::route::{query_param, Action, Endpoint};
use crate::app::App;
use crate::audit::Outcome;
use crate::auth::{parse_basic, AuthOutcome, Identity};
use crate::error::{Error, Result};
use crate::http::Request;
use crate::metrics::{Metrics, METRICS};
use crate::policy::AccessRequest;
use crate::service::audit::{self, Denial};

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
    // The Basic username tried, for the audit record of a failed login (never the password).
    let mut username = None;
    let outcome = if let Some(token) = crate::auth::oidc::parse_bearer(header) {
        verify_token(&live, token, ip).await
    } else {
        let Some((user, pass)) = parse_basic(header.as_bytes()) else {
            let reason = "unsupported or malformed Authorization header";
            login_failed(app, &identity, ip, None, Outcome::Denied, reason);
            return Err(challenge(reason));
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
            let outcome = live.auth.verify(&user, &pass, ip).await;
            username = Some(user);
            outcome
        }
    };
    let verified = verified(app, &identity, ip, username.as_deref(), outcome)?;
    Ok(verified.with_certificate(identity.common_names, identity.organizations))
}

/// What a password or token check decided, as the API answers it: the identity, or 401
/// (counted), 429 (too many failures from this address or for this user) or 503. A failure
/// is audited with the caller as far as it is known (`caller`: its client certificate) and
/// the username tried (`user`, `None` for a token).
pub fn verified(
    app: &App,
    caller: &Identity,
    ip: IpAddr,
    user: Option<&str>,
    outcome: AuthOutcome,
) -> Result<Identity> {
    let identity = caller;
    match outcome {
        AuthOutcome::Ok(verified) => Ok(verified),
        AuthOutcome::BadCredentials => {
            Metrics::add(&METRICS.auth_failures, 1);
            login_failed(
                app,
                identity,
                ip,
                user,
                Outcome::Denied,
                match user {
                    Some(_) => "wrong username or password",
                    None => "token did not verify",
                },
            );
            Err(challenge("invalid username or password"))
        }
        AuthOutcome::Unverifiable => {
            Metrics::add(&METRICS.auth_failures, 1);
            login_failed(
                app,
                identity,
                ip,
                user,
                Outcome::Failed,
                "credentials could not be verified (identity provider unreachable)",
            );
            Err(challenge("invalid username or password"))
        }
        AuthOutcome::RateLimited => Err({
            Metrics::add(&METRICS.auth_rate_limited, 1);
            login_failed(
                app,
                identity,
                ip,
                user,
                Outcome::Denied,
                "rate limited: too many failed logins from this address or for this user",
            );
            Error::RateLimited {
                message: "too many failed authentication attempts; try again later".into(),
                retry_after: AUTH_RATE_LIMITED_RETRY_AFTER,
            }
        }),
        AuthOutcome::Busy => Err(Error::Busy("authentication is busy".into())),
    }
}

/// The audit record of a login that failed: the caller as far as it is known (its client
/// certificate), the username tried, why.
fn login_failed(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
    login_username: Option<&str>,
    outcome: Outcome,
    reason: &str,
) {
    audit::denied(
        &app.svc,
        &Denial {
            action: audit::LOGIN,
            identity,
            peer,
            repository: None,
            reference: None,
            digest: None,
            login_username,
            outcome,
            reason,
        },
    );
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
/// a denied known caller gets DENIED. A denial is audited with the rule that decided.
pub fn authorize(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
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
    let live = app.svc.live.get();
    let (decision, rule) = live.policies.explain(identity, &access);
    if decision.is_allowed() {
        return Ok(());
    }
    Metrics::add(&METRICS.policy_denials, 1);
    if audit::wanted(&app.svc) {
        let reason = rule.to_string();
        let denial = Denial {
            action: action.as_str(),
            identity,
            peer,
            repository: Some(access.namespace),
            // A tag; a digest is in `digest`.
            reference: access.reference.filter(|r| !r.contains(':')),
            digest: access.digest,
            login_username: None,
            outcome: Outcome::Denied,
            reason: &reason,
        };
        audit::denied(&app.svc, &denial);
    }
    if identity.is_authenticated() {
        Err(Error::Denied(
            "requested access to the resource is denied".into(),
        ))
    } else {
        Err(challenge("authentication required"))
    }
}

/// Applies `[[rate_limit]]` to an authorized request, once: over its group's rate it is
/// refused (429 with Retry-After, counted); a blob pull under `pull_bytes_per_second` gets
/// the pacer of its body. With no entry configured this is one flag read.
pub fn limit(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
    endpoint: &Endpoint<'_>,
    action: Action,
    query: &str,
) -> Result<Option<Box<dyn crate::http::Pacer>>> {
    app.svc.live.peek(|live| {
        if live.rates.is_empty() {
            return Ok(None);
        }
        let digest_param = query_param(query, "digest");
        let access = access_request(endpoint, action, digest_param.as_deref());
        match live.rates.admit(identity, peer, &access) {
            Ok(pacer) => Ok(pacer.map(|p| Box::new(p) as Box<dyn crate::http::Pacer>)),
            Err(refusal) => {
                Metrics::add(&METRICS.rate_limited, 1);
                tracing::debug!(
                    entry = refusal.entry,
                    group = refusal.group.as_str(),
                    %peer,
                    "rate limited"
                );
                let secs = refusal.retry_after.as_secs();
                Err(Error::RateLimited {
                    message: format!(
                        "too many {} requests: over this registry's rate limit; retry after {secs} s",
                        refusal.group.as_str()
                    ),
                    retry_after: refusal.retry_after,
                })
            }
        }
    })
}

/// A write to a read-only mirror: refused (405), and audited as a denial.
pub fn read_only_mirror(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
    action: Action,
    name: &str,
) -> Error {
    let reason = "this repository is a read-only mirror of an upstream registry";
    let denial = Denial {
        action: action.as_str(),
        identity,
        peer,
        repository: Some(name),
        reference: None,
        digest: None,
        login_username: None,
        outcome: Outcome::Denied,
        reason,
    };
    audit::denied(&app.svc, &denial);
    Error::MethodNotAllowed {
        message: reason.into(),
        allow: None,
    }
}

/// Whether the policies let `identity` do `action` on `endpoint` (nothing counted nor
/// audited: the UI asks this to show only the buttons that would work).
pub fn may(app: &App, identity: &Identity, endpoint: &Endpoint<'_>, action: Action) -> bool {
    app.svc
        .live
        .get()
        .policies
        .may(identity, &access_request(endpoint, action, None))
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
