//! The one table from method + path to an endpoint and its policy action.

use crate::http::Method;

/// An endpoint of the distribution API, with the raw path parts it carries.
/// Names, digests and references are parsed into types by the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Endpoint<'a> {
    /// The route as a template (`http.route` of a trace's server span).
    pub fn template(&self) -> &'static str {
        match self {
            Endpoint::Base => "/v2/",
            Endpoint::Catalog => "/v2/_catalog",
            Endpoint::Tags { .. } => "/v2/{name}/tags/list",
            Endpoint::Manifest { .. } => "/v2/{name}/manifests/{reference}",
            Endpoint::Blob { .. } => "/v2/{name}/blobs/{digest}",
            Endpoint::UploadStart { .. } => "/v2/{name}/blobs/uploads/",
            Endpoint::Upload { .. } => "/v2/{name}/blobs/uploads/{id}",
            Endpoint::Referrers { .. } => "/v2/{name}/referrers/{digest}",
        }
    }

    /// The repository name in the path, if the endpoint has one.
    pub fn name(&self) -> Option<&'a str> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags { name }
            | Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// The same endpoint for another repository name.
    pub fn with_name<'b>(&self, new: &'b str) -> Endpoint<'b>
    where
        'a: 'b,
    {
        match *self {
            Endpoint::Base => Endpoint::Base,
            Endpoint::Catalog => Endpoint::Catalog,
            Endpoint::Tags { .. } => Endpoint::Tags { name: new },
            Endpoint::Manifest { reference, .. } => Endpoint::Manifest {
                name: new,
                reference,
            },
            Endpoint::Blob { digest, .. } => Endpoint::Blob { name: new, digest },
            Endpoint::UploadStart { .. } => Endpoint::UploadStart { name: new },
            Endpoint::Upload { id, .. } => Endpoint::Upload { name: new, id },
            Endpoint::Referrers { digest, .. } => Endpoint::Referrers { name: new, digest },
        }
    }
}

pub use crate::policy::Action;

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed(&'static str),
}

/// Maps a request to its endpoint and action.
pub fn route(method: Method, path: &str) -> Result<(Endpoint<'_>, Action), RouteError> {
    let endpoint = endpoint(path).ok_or(RouteError::NotFound)?;
    let action = action(&endpoint, method)?;
    Ok((endpoint, action))
}

fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Endpoint::Catalog);
    }
    // Every other endpoint ends in `/<kind>/<segment>`: split at the last '/' once (a byte
    // search) and compare suffixes, instead of searching the path for each marker.
    let (prefix, last) = rest.rsplit_once('/')?;
    if last.is_empty() {
        return prefix
            .strip_suffix("/blobs/uploads")
            .map(|name| Endpoint::UploadStart { name });
    }
    if last == "list" {
        if let Some(name) = prefix.strip_suffix("/tags") {
            return Some(Endpoint::Tags { name });
        }
    }
    if last == "uploads" {
        if let Some(name) = prefix.strip_suffix("/blobs") {
            return Some(Endpoint::UploadStart { name });
        }
    }
    let named = |kind: &str| prefix.strip_suffix(kind).filter(|name| !name.is_empty());
    if let Some(name) = named("/blobs/uploads") {
        return Some(Endpoint::Upload { name, id: last });
    }
    if let Some(name) = named("/blobs") {
        return Some(Endpoint::Blob { name, digest: last });
    }
    if let Some(name) = named("/manifests") {
        return Some(Endpoint::Manifest {
            name,
            reference: last,
        });
    }
    if let Some(name) = named("/referrers") {
        return Some(Endpoint::Referrers { name, digest: last });
    }
    None
}

/// The metrics group of a request path.
pub fn group(path: &str) -> crate::metrics::Group {
    use crate::metrics::Group;
    match endpoint(path) {
        Some(Endpoint::Base) => Group::Base,
        Some(Endpoint::Catalog) => Group::Catalog,
        Some(Endpoint::Tags { .. }) => Group::Tags,
        Some(Endpoint::Manifest { .. }) => Group::Manifests,
        Some(Endpoint::Blob { .. }) => Group::Blobs,
        Some(Endpoint::UploadStart { .. } | Endpoint::Upload { .. }) => Group::Uploads,
        Some(Endpoint::Referrers { .. }) => Group::Referrers,
        None if matches!(path, "/metrics" | "/healthz" | "/readyz") => Group::Ops,
        None => Group::Other,
    }
}

fn action(endpoint: &Endpoint<'_>, method: Method) -> Result<Action, RouteError> {
    use Method::*;
    let allowed = |list: &'static str| RouteError::MethodNotAllowed(list);
    Ok(match (endpoint, method) {
        (Endpoint::Base, Get | Head) => Action::GetApiVersion,
        (Endpoint::Base, _) => return Err(allowed("GET, HEAD")),
        (Endpoint::Catalog, Get) => Action::ListCatalog,
        (Endpoint::Catalog, _) => return Err(allowed("GET")),
        (Endpoint::Tags { .. }, Get) => Action::ListTags,
        (Endpoint::Tags { .. }, _) => return Err(allowed("GET")),
        (Endpoint::Manifest { .. }, Get | Head) => Action::GetManifest,
        (Endpoint::Manifest { .. }, Put) => Action::PutManifest,
        (Endpoint::Manifest { .. }, Delete) => Action::DeleteManifest,
        (Endpoint::Manifest { .. }, _) => return Err(allowed("GET, HEAD, PUT, DELETE")),
        (Endpoint::Blob { .. }, Get | Head) => Action::GetBlob,
        (Endpoint::Blob { .. }, Delete) => Action::DeleteBlob,
        (Endpoint::Blob { .. }, _) => return Err(allowed("GET, HEAD, DELETE")),
        (Endpoint::UploadStart { .. }, Post) => Action::PutBlob,
        (Endpoint::UploadStart { .. }, _) => return Err(allowed("POST")),
        (Endpoint::Upload { .. }, Get | Patch | Put | Delete) => Action::PutBlob,
        (Endpoint::Upload { .. }, _) => return Err(allowed("GET, PATCH, PUT, DELETE")),
        (Endpoint::Referrers { .. }, Get) => Action::GetReferrers,
        (Endpoint::Referrers { .. }, _) => return Err(allowed("GET")),
    })
}

pub use crate::http::query::query_param;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::query::percent_decode;

    #[test]
    fn every_endpoint_routes_with_its_action() {
        let cases = [
            (Method::Get, "/v2/", Endpoint::Base, Action::GetApiVersion),
            (Method::Get, "/v2", Endpoint::Base, Action::GetApiVersion),
            (
                Method::Get,
                "/v2/_catalog",
                Endpoint::Catalog,
                Action::ListCatalog,
            ),
            (
                Method::Get,
                "/v2/a/b/tags/list",
                Endpoint::Tags { name: "a/b" },
                Action::ListTags,
            ),
            (
                Method::Put,
                "/v2/a/manifests/latest",
                Endpoint::Manifest {
                    name: "a",
                    reference: "latest",
                },
                Action::PutManifest,
            ),
            (
                Method::Delete,
                "/v2/a/blobs/sha256:00",
                Endpoint::Blob {
                    name: "a",
                    digest: "sha256:00",
                },
                Action::DeleteBlob,
            ),
            (
                Method::Post,
                "/v2/x/y/z/blobs/uploads/",
                Endpoint::UploadStart { name: "x/y/z" },
                Action::PutBlob,
            ),
            (
                Method::Patch,
                "/v2/x/blobs/uploads/abc",
                Endpoint::Upload {
                    name: "x",
                    id: "abc",
                },
                Action::PutBlob,
            ),
            (
                Method::Get,
                "/v2/x/referrers/sha256:00",
                Endpoint::Referrers {
                    name: "x",
                    digest: "sha256:00",
                },
                Action::GetReferrers,
            ),
            // A repository may itself have a component called "blobs" or "manifests".
            (
                Method::Get,
                "/v2/blobs/manifests/blobs/sha256:00",
                Endpoint::Blob {
                    name: "blobs/manifests",
                    digest: "sha256:00",
                },
                Action::GetBlob,
            ),
            (
                Method::Post,
                "/v2/x/blobs/uploads",
                Endpoint::UploadStart { name: "x" },
                Action::PutBlob,
            ),
            (
                Method::Put,
                "/v2/a/blobs/uploads/b/blobs/uploads/c",
                Endpoint::Upload {
                    name: "a/blobs/uploads/b",
                    id: "c",
                },
                Action::PutBlob,
            ),
            (
                Method::Get,
                "/v2/x/manifests/tags/list",
                Endpoint::Tags {
                    name: "x/manifests",
                },
                Action::ListTags,
            ),
        ];
        for (m, path, ep, act) in cases {
            assert_eq!(route(m, path), Ok((ep, act)), "{path}");
        }
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(route(Method::Get, "/v3/"), Err(RouteError::NotFound));
        assert_eq!(route(Method::Get, "/v2/a/b"), Err(RouteError::NotFound));
        for path in [
            "/v2/a/blobs/uploads/x/y",
            "/v2/blobs/uploads/abc",
            "/v2//blobs/sha256:00",
            "/v2/a/manifests/",
            "/v2/a/referrers",
        ] {
            assert_eq!(
                route(Method::Get, path),
                Err(RouteError::NotFound),
                "{path}"
            );
        }
        assert_eq!(
            route(Method::Get, "/v2/a/blobs/"),
            Err(RouteError::NotFound)
        );
        assert!(matches!(
            route(Method::Post, "/v2/a/manifests/x"),
            Err(RouteError::MethodNotAllowed(_))
        ));
    }

    #[test]
    fn query_values_are_decoded() {
        let q = "digest=sha256%3Aab&n=10&artifactType=application%2Fvnd.x%2Bjson&flag";
        assert_eq!(query_param(q, "digest").as_deref(), Some("sha256:ab"));
        assert_eq!(query_param(q, "n").as_deref(), Some("10"));
        assert_eq!(
            query_param(q, "artifactType").as_deref(),
            Some("application/vnd.x+json")
        );
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
