//! The audit records of operations (`crate::audit`): one per write a client asks for, with
//! what came of it, and one per deletion the registry makes itself. Denials before an
//! operation (policies, logins) are recorded where they are decided, `src/api/access.rs`.
//! With the trail off every call here is one check and a return.

use std::net::IpAddr;

use super::maintenance::Pass;
use super::{Caller, Service};
use crate::audit::{Actor, Outcome, Record};
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::oci::{Digest, RepoName};

/// The operations recorded, as their records name them.
pub const BLOB_UPLOAD: &str = "blob.upload";
pub const BLOB_MOUNT: &str = "blob.mount";
pub const BLOB_DELETE: &str = "blob.delete";
pub const MANIFEST_PUT: &str = "manifest.put";
pub const MANIFEST_DELETE: &str = "manifest.delete";
pub const TAG_DELETE: &str = "tag.delete";
pub const LOGIN: &str = "login";

/// What a write was about.
#[derive(Clone, Copy)]
pub struct Write<'a> {
    pub action: &'static str,
    pub name: &'a RepoName,
    /// The tag, for a write by tag (a digest goes in `digest`).
    pub reference: Option<&'a str>,
    pub digest: Option<&'a Digest>,
    /// A mount's source repository.
    pub from: Option<&'a RepoName>,
}

impl<'a> Write<'a> {
    pub fn new(action: &'static str, name: &'a RepoName) -> Self {
        Write {
            action,
            name,
            reference: None,
            digest: None,
            from: None,
        }
    }

    fn record(&self, outcome: Outcome, actor: Actor<'a>, reason: Option<&'a str>) -> Record<'a> {
        let mut r = Record::new(self.action, outcome, actor);
        r.repository = Some(self.name.as_str());
        r.reference = self.reference;
        r.digest = self.digest.map(Digest::as_str);
        r.from = self.from.map(RepoName::as_str);
        r.reason = reason;
        r
    }
}

/// True when records are written at all (callers skip their extra work otherwise).
pub fn wanted(svc: &Service) -> bool {
    svc.live.peek(|l| l.audit.enabled)
}

/// An operation's error as the trail sees it: refused by a rule (an immutable tag, a
/// `required` webhook) is a denial, anything else a failure. The reason is the message the
/// client is shown (an internal cause stays in the log).
pub fn outcome_of(e: &Error) -> Outcome {
    match e {
        Error::Conflict(_)
        | Error::Refused(_)
        | Error::Denied(_)
        | Error::QuotaExceeded(_)
        | Error::Unauthorized(_) => Outcome::Denied,
        _ => Outcome::Failed,
    }
}

/// A client's write and what came of it.
pub fn written<T>(svc: &Service, caller: &Caller<'_>, write: &Write<'_>, result: &Result<T>) {
    if !wanted(svc) {
        return;
    }
    let actor = Actor::Client {
        identity: caller.identity,
        peer: caller.ip,
    };
    let settings = svc.live.peek(|l| l.audit.clone());
    match result {
        Ok(_) => svc
            .audit
            .emit(&settings, &write.record(Outcome::Allowed, actor, None)),
        Err(e) => {
            let reason = e.client_message();
            let record = write.record(outcome_of(e), actor, Some(&reason));
            svc.audit.emit(&settings, &record);
        }
    }
}

/// A write the registry made itself (`actor`: `gc`, `retention`, `mirror`), in a pass.
pub fn done(p: &Pass<'_>, actor: &'static str, write: &Write<'_>) {
    if !p.live.audit.enabled {
        return;
    }
    let record = write.record(Outcome::Allowed, Actor::System(actor), None);
    p.audit.emit(&p.live.audit, &record);
}

/// A blob's data removed by a GC pass (no repository links it any more).
pub fn reclaimed(p: &Pass<'_>, digest: &Digest) {
    if !p.live.audit.enabled {
        return;
    }
    let mut record = Record::new(BLOB_DELETE, Outcome::Allowed, Actor::System("gc"));
    record.digest = Some(digest.as_str());
    p.audit.emit(&p.live.audit, &record);
}

/// A write the registry made itself while serving (a mirror fill), and what came of it.
pub fn done_by<T>(svc: &Service, actor: &'static str, write: &Write<'_>, result: &Result<T>) {
    if !wanted(svc) {
        return;
    }
    let settings = svc.live.peek(|l| l.audit.clone());
    let reason = result.as_ref().err().map(|e| e.client_message());
    let outcome = result.as_ref().err().map_or(Outcome::Allowed, outcome_of);
    let record = write.record(outcome, Actor::System(actor), reason.as_deref());
    svc.audit.emit(&settings, &record);
}

/// A request refused before any operation ran: by the policies, a read-only mirror, or a
/// failed login (`login_username` is the Basic username that was tried).
pub struct Denial<'a> {
    pub action: &'a str,
    pub identity: &'a Identity,
    pub peer: IpAddr,
    pub repository: Option<&'a str>,
    pub reference: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub login_username: Option<&'a str>,
    pub outcome: Outcome,
    pub reason: &'a str,
}

/// Records a denial (or a login that could not be checked: `Outcome::Failed`).
pub fn denied(svc: &Service, d: &Denial<'_>) {
    if !wanted(svc) {
        return;
    }
    let settings = svc.live.peek(|l| l.audit.clone());
    let mut r = Record::new(
        d.action,
        d.outcome,
        Actor::Client {
            identity: d.identity,
            peer: d.peer,
        },
    );
    r.repository = d.repository;
    r.reference = d.reference;
    r.digest = d.digest;
    r.login_username = d.login_username;
    r.reason = Some(d.reason);
    svc.audit.emit(&settings, &r);
}
