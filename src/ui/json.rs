//! The UI's JSON API under `<ui path>api/`: repositories by namespace, a repository's tags
//! with what they name, a manifest's details and its referrers. Paged and bounded like the
//! distribution API; every call identifies the caller and checks the same policy action
//! as the `/v2/` request it mirrors (`api::access`), so a repository the caller may not
//! read appears nowhere.

use std::net::IpAddr;

use super::actions::{self, Answer};
use super::describe;
use super::gate;
use crate::api::access;
use crate::api::route::{Action, Endpoint};
use crate::app::App;
use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::http::query::query_param;
use crate::http::{Method, Request, Response};
use crate::oci::{Digest, Reference, RepoName};
use crate::service::{browse, layer_files, listing};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Repositories per page of the tree (a page is one catalog listing, filtered by policy).
pub const REPOSITORIES_PAGE_MAX: usize = 500;
/// Tags per page: each costs two small reads (tag link, revision link).
pub const TAGS_PAGE_MAX: usize = 100;
/// Referrers per page (one read each).
pub const REFERRERS_PAGE_MAX: usize = 100;
/// Largest image config read whole for its details; a larger one is only linked.
pub const CONFIG_BYTES_MAX: u64 = 1024 * 1024;
/// Longest `last` or `ns` accepted: a tag is at most 128 bytes, a repository name 255.
const POSITION_BYTES_MAX: usize = 512;

pub async fn handle(app: &App, req: &mut Request<'_>, call: &str) -> Response {
    // Reads of stored content take their turn on this worker (`gate`); the session check
    // and the POSTs (login goes through the bounded password pool) do not.
    if matches!(req.head.method, Method::Get | Method::Head) && call != "session" {
        return match gate::run(respond(app, req, call)).await {
            Ok(resp) => resp,
            Err(e) => error(&e),
        };
    }
    respond(app, req, call).await
}

async fn respond(app: &App, req: &mut Request<'_>, call: &str) -> Response {
    let answer = match req.head.method {
        Method::Post => post(app, req, call).await,
        Method::Get | Method::Head => match call {
            "session" => actions::session(app, req).await,
            "layer-file" => {
                return match layer_file(app, req).await {
                    Ok(resp) => resp,
                    Err(e) => error(&e),
                }
            }
            _ => answer(app, req, call).await.map(Answer::from),
        },
        _ => Err(Error::MethodNotAllowed {
            message: "the UI's API takes GET, and POST for login, logout and delete".into(),
            allow: Some("GET, HEAD, POST".into()),
        }),
    };
    match answer {
        Ok(a) => {
            let resp = Response::json(200, a.value.to_string().into_bytes())
                .header("Cache-Control", "no-store");
            match a.set_cookie {
                Some(c) => resp.header("Set-Cookie", c),
                None => resp,
            }
        }
        Err(e) => error(&e),
    }
}

async fn post(app: &App, req: &mut Request<'_>, call: &str) -> Result<Answer> {
    if !matches!(call, "login" | "logout" | "delete") {
        return Err(Error::MethodNotAllowed {
            message: "this UI call only reads".into(),
            allow: Some("GET, HEAD".into()),
        });
    }
    let cookie = app.ui.cookie(app, req).await?;
    match call {
        "login" => actions::login(app, req, &cookie).await,
        "logout" => actions::logout(app, req, &cookie).await,
        _ => actions::delete(app, req, &cookie).await,
    }
}

/// An error as the API gives it (the OCI envelope), not cached, and without the Basic
/// challenge: the page logs in through its own form, never the browser's dialog.
pub fn error(e: &Error) -> Response {
    let mut resp = crate::api::error::response(e).header("Cache-Control", "no-store");
    resp.headers
        .retain(|(name, _)| !name.eq_ignore_ascii_case("www-authenticate"));
    resp
}

async fn answer(app: &App, req: &mut Request<'_>, call: &str) -> Result<serde_json::Value> {
    let query = req.head.query().to_owned();
    let q = |key: &str| param(&query, key);
    // Parameters first: a malformed request costs no password check.
    match call {
        "repositories" | "tags" | "untagged" | "retention" | "size" | "manifest" | "referrers"
        | "layer" => {}
        _ => return Err(Error::EndpointUnknown("no such UI API call".into())),
    }
    let cookie = app.ui.cookie(app, req).await?;
    let identity = actions::identify(app, req, &cookie).await?;
    let peer = req.peer.ip();
    let svc = &*app.svc;
    match call {
        "repositories" => {
            let ns = match q("ns")? {
                Some(ns) => Some(repo(ns.trim_end_matches('/'))?),
                None => None,
            };
            let n = page_size(&query, REPOSITORIES_PAGE_MAX)?;
            let last = q("last")?;
            let want = n + 1;
            let mut names =
                listing::catalog(svc, &identity, ns.as_ref(), last.as_deref(), want).await?;
            let next = next_of(&mut names, n, String::clone);
            let mirrors = mirrors_shown(app, ns.as_ref().map(RepoName::as_str), &names);
            // The quota that meters this level, on the first page only (one read).
            let ns_str = ns.as_ref().map_or("", RepoName::as_str);
            let quota = match last {
                None => crate::service::browse::quota(svc, ns_str).await?,
                Some(_) => None,
            };
            let quota = quota.map(|(q, u)| {
                serde_json::json!({
                    "namespace": q.namespace,
                    "usageBytes": u.bytes,
                    "usageManifests": u.manifests,
                    "quotaBytes": q.bytes,
                    "quotaManifests": q.manifests,
                })
            });
            Ok(serde_json::json!({
                "repositories": names,
                "next": next,
                "mirrors": mirrors,
                "quota": quota,
            }))
        }
        "tags" => {
            let name = required_repo(&query)?;
            allow(
                app,
                &identity,
                peer,
                &Endpoint::Tags {
                    name: name.as_str(),
                },
                Action::ListTags,
            )?;
            let n = page_size(&query, TAGS_PAGE_MAX)?;
            let last = q("last")?;
            let mut tags = browse::tags(svc, &name, last.as_deref(), n + 1)
                .await?
                .ok_or_else(|| {
                    Error::NameUnknown("repository name not known to registry".into())
                })?;
            let next = next_of(&mut tags, n, |t| t.tag.clone());
            let tags: Vec<_> = tags
                .iter()
                .map(|t| {
                    let mut v = describe::tag(t);
                    let may = deletable(app, &identity, &name, &t.tag);
                    v["immutable"] = immutable(app, &name, &t.tag).into();
                    v["deletable"] = may.into();
                    v
                })
                .collect();
            let mirror = mirrors_shown(app, Some(name.as_str()), &[]).pop();
            Ok(
                serde_json::json!({ "name": name.as_str(), "tags": tags, "next": next, "mirror": mirror }),
            )
        }
        "untagged" | "retention" | "size" => {
            let name = required_repo(&query)?;
            let endpoint = Endpoint::Tags {
                name: name.as_str(),
            };
            allow(app, &identity, peer, &endpoint, Action::ListTags)?;
            if call == "retention" {
                return retention(app, &name).await;
            }
            if call == "size" {
                let s = browse::stored_size(svc, &name).await?.ok_or_else(|| {
                    Error::NameUnknown("repository name not known to registry".into())
                })?;
                return Ok(serde_json::json!({
                    "bytes": s.bytes, "blobs": s.blobs, "manifests": s.manifests,
                    "complete": s.complete, "readsMax": browse::SIZE_READS_MAX,
                }));
            }
            let n = page_size(&query, TAGS_PAGE_MAX)?;
            let last = match q("last")? {
                Some(l) => Some(digest(&l)?),
                None => None,
            };
            let (list, next, available) = browse::untagged(svc, &name, last.as_ref(), n)
                .await?
                .ok_or_else(|| {
                    Error::NameUnknown("repository name not known to registry".into())
                })?;
            let list: Vec<_> = list.iter().map(describe::untagged).collect();
            Ok(serde_json::json!({
                "manifests": list,
                "next": next.map(|d| d.to_string()),
                "available": available,
                "tagsMax": browse::UNTAGGED_TAGS_MAX,
            }))
        }
        "manifest" => {
            let name = required_repo(&query)?;
            let raw = q("ref")?.ok_or_else(|| Error::QueryInvalid("ref is required".into()))?;
            let reference = Reference::parse(&raw)
                .map_err(|e| Error::ManifestUnknown(format!("manifest unknown: {e}")))?;
            let endpoint = Endpoint::Manifest {
                name: name.as_str(),
                reference: &raw,
            };
            allow(app, &identity, peer, &endpoint, Action::GetManifest)?;
            let m = browse::manifest(svc, &name, &reference).await?;
            let mut details = describe::manifest(&name, &m);
            let tag = match &reference {
                Reference::Tag(t) => Some(immutable(app, &name, t.as_str())),
                Reference::Digest(_) => None,
            };
            let may = deletable(app, &identity, &name, &raw);
            details["deletable"] = may.into();
            details["immutable"] = tag.flatten().into();
            if let Some(config) = describe::image_config_digest(&details) {
                details["image"] = image_config(app, &identity, peer, &name, &config).await?;
            }
            Ok(details)
        }
        "layer" => {
            let name = required_repo(&query)?;
            let layer = digest(&q("digest")?.unwrap_or_default())?;
            let d = layer.to_string();
            let endpoint = Endpoint::Blob {
                name: name.as_str(),
                digest: &d,
            };
            allow(app, &identity, peer, &endpoint, Action::GetBlob)?;
            layer_files(app, &name, &layer).await
        }
        _ => {
            let name = required_repo(&query)?;
            let subject = digest(&q("digest")?.unwrap_or_default())?;
            let endpoint = Endpoint::Referrers {
                name: name.as_str(),
                digest: subject.as_ref(),
            };
            allow(app, &identity, peer, &endpoint, Action::GetReferrers)?;
            let n = page_size(&query, REFERRERS_PAGE_MAX)?;
            let last = match q("last")? {
                Some(l) => Some(digest(&l)?),
                None => None,
            };
            let mut list =
                listing::referrers(svc, &name, &subject, None, last.as_ref(), n + 1, None).await?;
            let next = next_of(&mut list, n, |d| d.digest.to_string());
            Ok(serde_json::json!({ "groups": describe::referrer_groups(&list), "next": next }))
        }
    }
}

/// A repository's retention rules and what the next pass would delete now (tags and
/// digests), or `null` when no rule judges it.
async fn retention(app: &App, name: &RepoName) -> Result<serde_json::Value> {
    let Some(preview) = browse::retention(&app.svc, name).await? else {
        return Ok(serde_json::Value::Null);
    };
    let due = preview.due.map(|due| {
        due.iter()
            .map(|d| serde_json::json!({ "digest": d.digest.to_string(), "tags": d.tags }))
            .collect::<Vec<_>>()
    });
    Ok(serde_json::json!({
        "rules": preview.rules,
        "due": due,
        "revisionsMax": browse::RETENTION_PREVIEW_REVISIONS_MAX,
    }))
}

/// File lists made, by layer digest: the same layer in any repository lists the same files.
#[derive(Default)]
pub struct FilesCache(RefCell<HashMap<Digest, Rc<serde_json::Value>>>);

/// File lists kept per worker; all are dropped when full (a list is at most ~2 MB of JSON).
const FILES_CACHED_MAX: usize = 32;

/// The files of a layer of `name`, from the cache when this worker listed that digest
/// before (the repository's link to the blob is checked every time).
async fn layer_files(app: &App, name: &RepoName, layer: &Digest) -> Result<serde_json::Value> {
    let unknown = || Error::BlobUnknown("blob unknown to registry".into());
    let cached = app.ui_files.0.borrow().get(layer).cloned();
    if let Some(v) = cached {
        if !app.svc.registry.is_linked(name, layer).await? {
            return Err(unknown());
        }
        return Ok((*v).clone());
    }
    let listing = layer_files::list(&app.svc, name, layer)
        .await?
        .ok_or_else(unknown)?;
    let value = serde_json::json!({
        "digest": layer.to_string(),
        "format": listing.format,
        "entries": listing.entries,
        "cut": listing.cut,
        "bytesRead": listing.bytes_read,
        "entriesMax": layer_files::ENTRIES_MAX,
    });
    let mut cache = app.ui_files.0.borrow_mut();
    if cache.len() >= FILES_CACHED_MAX {
        cache.clear();
    }
    cache.insert(layer.clone(), Rc::new(value.clone()));
    Ok(value)
}

/// One regular file of a layer (at most `layer_files::FILE_BYTES_MAX`), as a download:
/// `layer-file?repo=&digest=&path=`, with the `get-blob` a pull of the layer needs.
async fn layer_file(app: &App, req: &mut Request<'_>) -> Result<Response> {
    let query = req.head.query().to_owned();
    let name = required_repo(&query)?;
    let layer = digest(&param(&query, "digest")?.unwrap_or_default())?;
    let path =
        param(&query, "path")?.ok_or_else(|| Error::QueryInvalid("path is required".into()))?;
    let cookie = app.ui.cookie(app, req).await?;
    let identity = actions::identify(app, req, &cookie).await?;
    let peer = req.peer.ip();
    let d = layer.to_string();
    let endpoint = Endpoint::Blob {
        name: name.as_str(),
        digest: &d,
    };
    allow(app, &identity, peer, &endpoint, Action::GetBlob)?;
    let unknown = |what: &str| Error::BlobUnknown(what.into());
    match layer_files::file(&app.svc, &name, &layer, &path).await? {
        None => Err(unknown("blob unknown to registry")),
        Some(layer_files::File::Absent) => Err(unknown(
            "no regular file by that path in the layer (within the listing's caps)",
        )),
        Some(layer_files::File::TooLarge(n)) => Err(Error::QueryInvalid(format!(
            "the file is {n} bytes: files up to {} bytes download on their own; download the layer",
            layer_files::FILE_BYTES_MAX
        ))),
        Some(layer_files::File::Bytes(bytes)) => Ok(Response::new(200)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"{}\"", file_name(&path)),
            )
            .header("Cache-Control", "no-store")
            .body(crate::http::Body::Bytes(bytes))),
    }
}

/// The last part of `path` with only letters, digits, `.`, `-` and `_` (a header value
/// built from pushed data).
fn file_name(path: &str) -> String {
    let base = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let safe: String = base
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                true => c,
                false => '_',
            },
        )
        .take(100)
        .collect();
    match safe.trim_matches('.').is_empty() {
        true => "file".into(),
        false => safe,
    }
}

/// The parsed config of an image, when the caller may read that blob (`get-blob`, as a
/// pull of it would need); otherwise a note saying why it is not shown.
async fn image_config(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
    name: &RepoName,
    config: &Digest,
) -> Result<serde_json::Value> {
    let d = config.to_string();
    let endpoint = Endpoint::Blob {
        name: name.as_str(),
        digest: &d,
    };
    if allow(app, identity, peer, &endpoint, Action::GetBlob).is_err() {
        return Ok(serde_json::json!({ "unavailable": "not permitted" }));
    }
    Ok(
        match browse::small_blob(&app.svc, name, config, CONFIG_BYTES_MAX).await? {
            None => serde_json::json!({ "unavailable": "not stored" }),
            Some((_, None)) => serde_json::json!({ "unavailable": "too large to show" }),
            Some((_, Some(bytes))) => describe::image_config(&bytes),
        },
    )
}

/// The mirrored namespaces a page shows, innermost last: those that `at` (the namespace or
/// repository the page is about) or a listed repository is in. A repository of a mirror
/// namespace holds what is cached of the upstream: its tags and manifests are the cached
/// content, and nothing of the upstream is listed that was not pulled.
fn mirrors_shown(app: &App, at: Option<&str>, names: &[String]) -> Vec<serde_json::Value> {
    let within = |name: &str, ns: &str| {
        !ns.is_empty()
            && name
                .strip_prefix(ns)
                .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    };
    app.svc.live.peek(|l| {
        let mut shown: Vec<_> = l
            .mirrors
            .namespaces
            .iter()
            .filter(|m| {
                at.into_iter()
                    .chain(names.iter().map(String::as_str))
                    .any(|n| within(n, &m.namespace))
            })
            .collect();
        shown.sort_by_key(|m| m.namespace.len());
        shown.into_iter().map(|m| describe::mirror(m)).collect()
    })
}

/// Whether the policies let `identity` delete `reference` (a tag or a digest) of `name`, as
/// `DELETE /v2/<name>/manifests/<reference>`, and the repository is not a read-only mirror.
fn deletable(app: &App, identity: &Identity, name: &RepoName, reference: &str) -> bool {
    let endpoint = Endpoint::Manifest {
        name: name.as_str(),
        reference,
    };
    let mirrored = app.svc.live.peek(|l| {
        l.mirrors
            .resolve(name.as_str(), "")
            .is_some_and(|(ns, _)| !ns.writable)
    });
    !mirrored && access::may(app, identity, &endpoint, Action::DeleteManifest)
}

/// Why a tag can never be deleted, when it cannot.
fn immutable(app: &App, name: &RepoName, tag: &str) -> Option<String> {
    app.svc
        .live
        .peek(|l| l.immutable.is_immutable(name.as_str(), tag))
        .then(|| {
            "immutable: this tag matches its repository's immutable_tags, so it can never \
             be moved or deleted"
                .to_string()
        })
}

/// The policy decision of `/v2/` for the same request (denials counted and audited alike).
fn allow(
    app: &App,
    identity: &Identity,
    peer: IpAddr,
    endpoint: &Endpoint<'_>,
    action: Action,
) -> Result<()> {
    access::authorize(app, identity, peer, endpoint, action, "")
}

/// Keeps the first `n` of up to `n + 1` items; the key of the last kept one when more
/// followed (the `last` of the next page).
fn next_of<T>(items: &mut Vec<T>, n: usize, key: impl Fn(&T) -> String) -> Option<String> {
    let more = items.len() > n;
    items.truncate(n);
    more.then(|| items.last().map(key)).flatten()
}

fn param(query: &str, key: &str) -> Result<Option<String>> {
    let v = query_param(query, key).filter(|v| !v.is_empty());
    if v.as_ref().is_some_and(|v| v.len() > POSITION_BYTES_MAX) {
        return Err(Error::QueryInvalid(format!("{key} is too long")));
    }
    Ok(v)
}

fn page_size(query: &str, max: usize) -> Result<usize> {
    match param(query, "n")? {
        None => Ok(max),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n.min(max)),
            _ => Err(Error::QueryInvalid("n must be a positive number".into())),
        },
    }
}

fn repo(name: &str) -> Result<RepoName> {
    crate::api::repo(name)
}

fn required_repo(query: &str) -> Result<RepoName> {
    let name =
        param(query, "repo")?.ok_or_else(|| Error::QueryInvalid("repo is required".into()))?;
    repo(&name)
}

fn digest(s: &str) -> Result<Digest> {
    crate::api::digest_of(s)
}
