//! Storage keys: the only place that knows where things live.
//!
//! ```text
//! blobs/<alg>/<hex[0..2]>/<hex>/data                      content, stored once
//! repositories/<name>/_layers/<alg>/<hex>                 the repository may see this blob
//! repositories/<name>/_manifests/revisions/<alg>/<hex>    a manifest of the repository
//! repositories/<name>/_manifests/tags/<tag>               tag -> manifest digest
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  subject -> referrer descriptor
//! repositories/<name>/_uploads/<id>/{data,state}          an upload session
//! uploads/<id>                                            index of sessions, for expiry (fs)
//! uploads/<name with + for />/<id>                        an upload session (S3: the one
//!                                                         object, state inline; no index)
//! catalog/<name>/_repository                              the repository exists
//! linked/<alg>/<hex>/<name with + for />                  the repository has a layer link
//!                                                         (on S3 this is the link itself)
//! refs/<alg>/<hex>/<name with + for />/<alg>-<hex>        reference edge: manifest -> blob
//! refs/<alg>/<hex>/<name with + for />/_revision          a revision link holds its blob
//! gc/candidates/<alg>-<hex>                               released or new: GC looks here
//! gc/deleting/<alg>-<hex>                                 tombstone while GC deletes
//! mirror/pulled/<name with + for />/<alg>-<hex>           a mirrored manifest's last pull
//! retention/pulled/<name with + for />/<alg>-<hex>        a manifest's last pull (retention)
//! replication/jobs/<target>/<ms>-<hex>                    a replication job, waiting or claimed
//! replication/failed/<target>/<ms>-<hex>                  a job that ran out of retries
//! replication/pull/<target>                               a pull target's last run and claim
//! replication/reconcile/<target>                          the target's reconcile record:
//!                                                         claim, position, last outcome
//! replication/uploads/<target>/<repo with + for />/<alg>/<hex>
//!                                                         a blob upload to the target's
//!                                                         repository, to resume
//! quota/usage/<namespace with + for />                    a namespace's usage and the
//!                                                         reservations in flight
//! quota/held/<alg>/<hex>/<namespace with + for />         the namespace's usage counts this
//!                                                         blob or manifest (once)
//! ui/session-key                                          the web UI's session signing key
//! ui/logout/<hex>                                         an identity's last UI logout
//! ```
//! Repository name components never start with `_` (grammar), so `_x` keys cannot collide
//! with a nested repository.

use crate::oci::{Digest, RepoName, Tag, UploadId};

/// `parts` back to back in one allocation of the exact size (`format!` guesses, then grows):
/// for the keys built on every read.
fn concat(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        key.push_str(p);
    }
    key
}

/// Every replication job waiting or claimed, of every target.
pub const REPLICATION_JOBS: &str = "replication/jobs/";
/// Every replication job that ran out of retries.
pub const REPLICATION_FAILED: &str = "replication/failed/";

/// A replication job of `target` (a configured name: letters, digits, `-`, `_`); `id`
/// sorts by creation time.
pub fn replication_job(target: &str, id: &str) -> String {
    concat(&[REPLICATION_JOBS, target, "/", id])
}

/// Every target's reconcile record.
pub const REPLICATION_RECONCILE: &str = "replication/reconcile/";

/// The reconcile record of `target`: who runs its pass, where it stopped, what it found.
pub fn replication_reconcile(target: &str) -> String {
    concat(&[REPLICATION_RECONCILE, target])
}

/// The record of a replication job that ran out of retries.
pub fn replication_failed(target: &str, id: &str) -> String {
    concat(&[REPLICATION_FAILED, target, "/", id])
}

/// A pull target's record: its last run, when the next is due, who runs it now.
pub fn replication_pull(target: &str) -> String {
    concat(&["replication/pull/", target])
}

/// Every blob upload to a replication target that a copy may resume.
pub const REPLICATION_UPLOADS: &str = "replication/uploads/";

/// The upload of `d` to `repo` at replication target `target` (where it is, how much the
/// target acknowledged), kept while the blob is being sent.
pub fn replication_upload(target: &str, repo: &str, d: &Digest) -> String {
    format!(
        "{REPLICATION_UPLOADS}{target}/{}/{}/{}",
        repo.replace('/', "+"),
        d.algorithm().as_str(),
        d.hex()
    )
}

/// The web UI's session signing key, when `[ui]` configures none (created once, shared by
/// every node).
pub const UI_SESSION_KEY: &str = "ui/session-key";

/// When the identity whose keyed hash is `hex` last logged out of the web UI: its sessions
/// from before are refused on every node.
pub fn ui_logout(hex: &str) -> String {
    concat(&["ui/logout/", hex])
}

pub fn blob_data(d: &Digest) -> String {
    let hex = d.hex();
    let alg = d.algorithm().as_str();
    concat(&["blobs/", alg, "/", &hex[..2], "/", hex, "/data"])
}

pub fn layer_link(name: &RepoName, d: &Digest) -> String {
    let alg = d.algorithm().as_str();
    concat(&[
        "repositories/",
        name.as_str(),
        "/_layers/",
        alg,
        "/",
        d.hex(),
    ])
}

pub fn manifest_link(name: &RepoName, d: &Digest) -> String {
    let alg = d.algorithm().as_str();
    concat(&[
        "repositories/",
        name.as_str(),
        "/_manifests/revisions/",
        alg,
        "/",
        d.hex(),
    ])
}

pub fn tags_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_manifests/tags")
}

pub fn tag_link(name: &RepoName, tag: &Tag) -> String {
    format!("repositories/{name}/_manifests/tags/{tag}")
}

pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "repositories/{}/_referrers/{}/{}",
        name,
        subject.algorithm().as_str(),
        subject.hex()
    )
}

pub fn referrer_entry(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers_dir(name, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    )
}

pub fn uploads_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_uploads")
}

pub fn upload_data(name: &RepoName, id: &UploadId) -> String {
    format!("repositories/{name}/_uploads/{id}/data")
}

pub fn upload_state(name: &RepoName, id: &UploadId) -> String {
    format!("repositories/{name}/_uploads/{id}/state")
}

pub const UPLOAD_INDEX_PREFIX: &str = "uploads/";

pub fn upload_index(id: &UploadId) -> String {
    format!("uploads/{id}")
}

/// An upload session on object storage: one object (data state and the registry's state
/// inline, see `storage/s3/upload.rs`) under one prefix for every repository, so the expiry
/// lists the sessions themselves and no index object is written or removed per session.
pub fn upload_session(name: &RepoName, id: &UploadId) -> String {
    format!("{UPLOAD_INDEX_PREFIX}{}/{id}", flat(name))
}

/// Where a repository's sessions are listed on object storage (children: `<id>` and the
/// sessions' staged parts, `<id>.part-<token>`).
pub fn upload_sessions_dir(name: &RepoName) -> String {
    format!("{UPLOAD_INDEX_PREFIX}{}", flat(name))
}

/// The repository and id of a session key listed under [`UPLOAD_INDEX_PREFIX`] (relative to
/// it); `None` for anything else (an fs index entry, a staged part).
pub fn parse_upload_session(rest: &str) -> Option<(RepoName, UploadId)> {
    let (repo, id) = rest.split_once('/')?;
    Some((
        RepoName::parse(&repo.replace('+', "/")).ok()?,
        UploadId::parse(id).ok()?,
    ))
}

/// A repository name as one key component (`/` never appears in a component; `+` never
/// appears in a repository name).
fn flat(name: &RepoName) -> String {
    name.as_str().replace('/', "+")
}

fn flat_digest(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().as_str(), d.hex())
}

/// Parses `<alg>-<hex>` back into a digest.
pub fn unflat_digest(s: &str) -> Option<Digest> {
    let (alg, hex) = s.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// Prefix of every reference edge that holds `blob`.
pub fn refs_prefix(blob: &Digest) -> String {
    format!("refs/{}/{}/", blob.algorithm().as_str(), blob.hex())
}

/// Who holds a blob: a manifest of a repository, or the repository's revision link itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder<'a> {
    Manifest(&'a Digest),
    Revision,
}

pub fn ref_edge(blob: &Digest, name: &RepoName, holder: &Holder<'_>) -> String {
    let who = match holder {
        Holder::Manifest(m) => flat_digest(m),
        Holder::Revision => "_revision".to_string(),
    };
    format!("{}{}/{}", refs_prefix(blob), flat(name), who)
}

/// Prefix of the index entries of every repository with a layer link to `blob`, so GC can
/// remove the links when it removes the blob (or when no manifest of the repository names it).
pub fn link_index_prefix(blob: &Digest) -> String {
    format!("linked/{}/{}/", blob.algorithm().as_str(), blob.hex())
}

pub fn link_index(blob: &Digest, name: &RepoName) -> String {
    format!("{}{}", link_index_prefix(blob), flat(name))
}

/// The repository of a key listed under [`link_index_prefix`].
pub fn link_index_repo(blob: &Digest, key: &str) -> Option<RepoName> {
    let flat = key.strip_prefix(&link_index_prefix(blob))?;
    RepoName::parse(&flat.replace('+', "/")).ok()
}

/// Prefix of a repository's manifest revisions and tags.
pub fn manifests_prefix(name: &RepoName) -> String {
    format!("repositories/{name}/_manifests/")
}

pub const GC_CANDIDATES_PREFIX: &str = "gc/candidates/";

pub fn gc_candidate(d: &Digest) -> String {
    format!("{GC_CANDIDATES_PREFIX}{}", flat_digest(d))
}

pub const GC_TOMBSTONES_PREFIX: &str = "gc/deleting/";

pub fn gc_tombstone(d: &Digest) -> String {
    format!("{GC_TOMBSTONES_PREFIX}{}", flat_digest(d))
}

pub const GC_UNTAGGED_PREFIX: &str = "gc/untagged/";

/// A manifest that may have lost its last tag (only used with `gc.remove_untagged`).
pub fn gc_untagged(name: &RepoName, d: &Digest) -> String {
    format!("{GC_UNTAGGED_PREFIX}{}/{}", flat(name), flat_digest(d))
}

/// Parses a key listed under [`GC_UNTAGGED_PREFIX`] (relative to it).
pub fn parse_untagged(rest: &str) -> Option<(RepoName, Digest)> {
    let (repo, d) = rest.split_once('/')?;
    Some((
        RepoName::parse(&repo.replace('+', "/")).ok()?,
        unflat_digest(d)?,
    ))
}

/// The repository component of an edge key below [`refs_prefix`], and its holder part.
pub fn edge_holder<'k>(blob: &Digest, key: &'k str) -> Option<(&'k str, &'k str)> {
    key.strip_prefix(&refs_prefix(blob))?.split_once('/')
}

pub const MIRROR_PULLED_PREFIX: &str = "mirror/pulled/";

/// When a mirrored manifest was last pulled (the object's modification time).
pub fn mirror_pulled(name: &RepoName, d: &Digest) -> String {
    format!("{MIRROR_PULLED_PREFIX}{}/{}", flat(name), flat_digest(d))
}

/// When a manifest was last pulled, for retention rules (the object's modification time;
/// written at most once per manifest per node per `retention::PULL_RECORD_INTERVAL`).
pub fn pulled(name: &RepoName, d: &Digest) -> String {
    format!("retention/pulled/{}/{}", flat(name), flat_digest(d))
}

/// Where a repository's manifest revisions are listed: `<dir>/<alg>/<hex>`.
pub fn revisions_dir(name: &RepoName) -> String {
    format!("repositories/{name}/_manifests/revisions")
}

/// The digest of `key`, listed under `dir` (`revisions_dir` with its `/`): `<dir><alg>/<hex>`.
pub fn revision_digest(dir: &str, key: &str) -> Option<Digest> {
    let (alg, hex) = key.strip_prefix(dir)?.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// A quota's namespace as one key component: `/` as `+`, and `_all` for `""` (the namespace
/// of every repository; no repository name component starts with `_`).
fn quota_component(ns: &str) -> String {
    match ns {
        "" => "_all".to_string(),
        ns => ns.replace('/', "+"),
    }
}

pub const QUOTA_USAGE_PREFIX: &str = "quota/usage/";

/// A namespace's usage record (`registry/quota/`), replaced with `If-Match`.
pub fn quota_usage(ns: &str) -> String {
    format!("{QUOTA_USAGE_PREFIX}{}", quota_component(ns))
}

/// The namespace of a key listed under [`QUOTA_USAGE_PREFIX`] (relative to it).
pub fn quota_usage_namespace(rest: &str) -> String {
    match rest {
        "_all" => String::new(),
        c => c.replace('+', "/"),
    }
}

pub const QUOTA_HELD_PREFIX: &str = "quota/held/";

/// Prefix of the markers of every namespace whose usage counts `d`.
pub fn quota_held_prefix(d: &Digest) -> String {
    format!("{QUOTA_HELD_PREFIX}{}/{}/", d.algorithm().as_str(), d.hex())
}

/// The marker saying that namespace `ns` counts `d` in its usage.
pub fn quota_held(d: &Digest, ns: &str) -> String {
    format!("{}{}", quota_held_prefix(d), quota_component(ns))
}

/// The digest and namespace of a key listed under [`QUOTA_HELD_PREFIX`] (relative to it).
pub fn parse_quota_held(rest: &str) -> Option<(Digest, String)> {
    let mut parts = rest.splitn(3, '/');
    let (alg, hex, ns) = (parts.next()?, parts.next()?, parts.next()?);
    let d = Digest::parse(&format!("{alg}:{hex}")).ok()?;
    Some((d, quota_usage_namespace(ns)))
}

pub fn flat_name(name: &RepoName) -> String {
    flat(name)
}

pub const CATALOG_PREFIX: &str = "catalog/";
const CATALOG_MARKER: &str = "/_repository";

pub fn catalog_entry(name: &RepoName) -> String {
    format!("catalog/{name}{CATALOG_MARKER}")
}

/// The catalog position of a repository name (a `last` from a client, not necessarily a
/// valid name): listing after it gives the repositories after that name.
pub fn catalog_position(last: &str) -> String {
    format!("{CATALOG_PREFIX}{last}{CATALOG_MARKER}")
}

/// The repository name in a key listed under [`CATALOG_PREFIX`] (relative to it).
pub fn catalog_name(listed: &str) -> Option<&str> {
    listed.strip_suffix(CATALOG_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_storage_keys_and_distinct() {
        let name = RepoName::parse("library/alpine").unwrap();
        let d = Digest::of(crate::oci::Algorithm::Sha256, b"x");
        let tag = Tag::parse("latest").unwrap();
        let id = UploadId::generate().unwrap();
        let keys = [
            blob_data(&d),
            layer_link(&name, &d),
            manifest_link(&name, &d),
            tag_link(&name, &tag),
            referrer_entry(&name, &d, &d),
            upload_data(&name, &id),
            upload_state(&name, &id),
            upload_index(&id),
            upload_session(&name, &id),
            catalog_entry(&name),
            link_index(&d, &name),
            ref_edge(&d, &name, &Holder::Manifest(&d)),
            ref_edge(&d, &name, &Holder::Revision),
            gc_candidate(&d),
            gc_tombstone(&d),
            gc_untagged(&name, &d),
            mirror_pulled(&name, &d),
            pulled(&name, &d),
            quota_usage(""),
            quota_usage("library"),
            quota_held(&d, ""),
            quota_held(&d, "library/x"),
        ];
        for k in &keys {
            crate::storage::validate_key(k).unwrap();
        }
        let unique: std::collections::BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(
            link_index_repo(&d, &link_index(&d, &name)).as_ref(),
            Some(&name)
        );
        let rest = upload_session(&name, &id);
        let rest = rest.strip_prefix(UPLOAD_INDEX_PREFIX).unwrap();
        assert_eq!(parse_upload_session(rest), Some((name.clone(), id.clone())));
        assert_eq!(parse_upload_session(&format!("{rest}.part-0a1b")), None);
        assert_eq!(parse_upload_session(id.as_str()), None);
        let held = quota_held(&d, "library/x");
        let rest = held.strip_prefix(QUOTA_HELD_PREFIX).unwrap();
        assert_eq!(
            parse_quota_held(rest),
            Some((d.clone(), "library/x".into()))
        );
        assert_eq!(quota_usage_namespace("_all"), "");
        assert_eq!(
            catalog_name("library/alpine/_repository"),
            Some("library/alpine")
        );
    }
}
