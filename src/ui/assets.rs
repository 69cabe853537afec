//! The UI's files, compiled into the binary: nothing is read from disk or fetched at run
//! time. Served with `Cache-Control: no-cache` (revalidated, never stale after an
//! upgrade: the names carry no version).

use crate::http::{Body, Response};

/// The page every view is drawn in (views are chosen by the URL's fragment).
pub const SHELL: &str = include_str!("assets/index.html");

/// Name, content type and content of each asset under `<ui path>assets/`.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
    ("app.js", JS, include_str!("assets/app.js")),
    ("dom.js", JS, include_str!("assets/dom.js")),
    ("repos.js", JS, include_str!("assets/repos.js")),
    ("repo.js", JS, include_str!("assets/repo.js")),
    ("manifest.js", JS, include_str!("assets/manifest.js")),
    ("login.js", JS, include_str!("assets/login.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

pub fn serve(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, content)) => Response::new(200)
            .header("Content-Type", *content_type)
            .header("Cache-Control", "no-cache")
            .body(Body::Bytes(content.as_bytes().to_vec())),
        None => super::json::error(&crate::error::Error::EndpointUnknown(
            "no such UI asset".into(),
        )),
    }
}
