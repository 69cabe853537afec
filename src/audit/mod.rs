//! The audit trail: one JSON object per line for every write and every denial, apart from
//! the access log and the application log, for whoever has to answer "who did this, from
//! where, and was it allowed".
//!
//! A record is encoded on the worker (a few hundred bytes, about a microsecond) and handed to
//! a bounded queue with `try_send`; one writer thread appends the lines to the file (rotating
//! it by size) or logs them under the tracing target `origin::audit`. A full queue drops the
//! record and counts it (`origin_audit_dropped_total`): writing the trail never holds a
//! request. The operations that emit records are in `src/service/audit.rs` (writes) and
//! `src/api/access.rs` (denials).
//!
//! Nothing secret goes into a record: no password, token, header or claim other than an OIDC
//! token's issuer and subject; reasons are the messages clients are shown anyway.

mod writer;

use std::net::IpAddr;

use serde::Serialize;

use crate::auth::Identity;
pub use writer::Log;

/// What came of the operation a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect.
    Allowed,
    /// A rule refused it: a policy, an immutable tag, a webhook, a failed login.
    Denied,
    /// It was allowed but did not complete (unknown blob, invalid manifest, storage error).
    Failed,
}

/// Who did it: a client, or the registry itself.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// A request's caller (anonymous when the identity is empty) from `peer`.
    Client {
        identity: &'a Identity,
        peer: IpAddr,
    },
    /// The registry's own deletions: `gc`, `retention` or `mirror` (eviction, fills).
    System(&'static str),
}

/// One record, borrowed from the operation that emits it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The operation (`manifest.put`, `blob.delete`, `login`, ...) or, for a policy
    /// denial, the policy action (`put-manifest`, ...).
    pub action: &'a str,
    pub outcome: Outcome,
    pub actor: Actor<'a>,
    pub repository: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub digest: Option<&'a str>,
    /// Why it was denied or failed (which policy, which immutable tag, the error's message).
    pub reason: Option<&'a str>,
    /// For a mount: the repository the blob was mounted from.
    pub from: Option<&'a str>,
    /// For a failed Basic login: the username that was tried (never the password).
    pub login_username: Option<&'a str>,
}

impl<'a> Record<'a> {
    /// A record with only the required fields; the rest are set by the caller.
    pub fn new(action: &'a str, outcome: Outcome, actor: Actor<'a>) -> Self {
        Record {
            action,
            outcome,
            actor,
            repository: None,
            reference: None,
            digest: None,
            reason: None,
            from: None,
            login_username: None,
        }
    }
}

/// The identity as written: absent fields are left out.
#[derive(Serialize)]
struct IdentityLine<'a> {
    anonymous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    certificate_cn: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    certificate_o: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc_provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc_issuer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc_subject: Option<&'a str>,
}

impl<'a> IdentityLine<'a> {
    fn of(identity: &'a Identity) -> Self {
        let oidc = identity.oidc.as_deref();
        let claim = |name: &str| oidc.and_then(|o| o.claims.get(name)?.as_str());
        IdentityLine {
            anonymous: !identity.is_authenticated(),
            id: identity.id.as_deref(),
            username: identity.username.as_deref(),
            certificate_cn: &identity.common_names,
            certificate_o: &identity.organizations,
            oidc_provider: oidc.map(|o| o.provider.as_str()),
            oidc_issuer: claim("iss"),
            oidc_subject: claim("sub"),
        }
    }
}

/// One line of the trail, in the order of the documented fields.
#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    action: &'a str,
    outcome: Outcome,
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<IdentityLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// The time as records carry it: RFC 3339 in UTC, to the millisecond.
pub fn now() -> String {
    let ts = jiff::Timestamp::now();
    format!("{ts:.3}")
}

/// Encodes a record as one line of JSON (with its newline) stamped `time`. JSON escaping
/// keeps any name, tag or reason on its line: a newline or quote in one cannot forge a
/// record.
pub fn encode(record: &Record<'_>, time: &str) -> String {
    let (actor, identity, peer) = match record.actor {
        Actor::Client { identity, peer } => {
            ("client", Some(IdentityLine::of(identity)), Some(peer))
        }
        Actor::System(name) => (name, None, None),
    };
    let line = Line {
        time,
        action: record.action,
        outcome: record.outcome,
        actor,
        identity,
        peer,
        repository: record.repository,
        reference: record.reference,
        digest: record.digest,
        from: record.from,
        login_username: record.login_username,
        reason: record.reason,
    };
    // Serializing borrowed strings, bools and an address into a String cannot fail.
    let mut out = serde_json::to_string(&line).unwrap_or_default();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
