//! The web UI, a second HTTP adapter beside `api/` over the same service layer: an HTML
//! shell, a stylesheet and a few JavaScript modules compiled into the binary, and a small
//! JSON API under `<ui path>api/` that the pages read. Every JSON call identifies and
//! authorizes its caller exactly as `/v2/` does (`api::access`), so a person sees in the
//! browser what the policies let the same identity pull.
//!
//! Only requests outside `/v2` reach this module (one prefix check in `api::dispatch`): the
//! registry's hot path does not pay for the UI.

mod actions;
mod assets;
mod describe;
mod gate;
mod json;
mod session;

pub use json::FilesCache;
pub use session::{Logouts, Sessions};

use crate::app::App;
use crate::http::{Body, Method, Request, Response};

/// Sent on every UI response, errors and redirects included. No inline script or style is
/// ever needed: the shell loads its modules and stylesheet from `assets/`.
pub const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
];

/// The UI's answer when `path` is the UI's (or `/`, redirected to it), else `None`.
pub async fn respond(app: &App, req: &mut Request<'_>, path: &str) -> Option<Response> {
    let ui = &app.config.ui;
    if !ui.enabled {
        return None;
    }
    let base = ui.path.as_str();
    let resp = if path == "/" || path == &base[..base.len() - 1] {
        redirect(base)
    } else {
        let rest = path.strip_prefix(base)?;
        if let Some(call) = rest.strip_prefix("api/") {
            json::handle(app, req, call).await
        } else if !matches!(req.head.method, Method::Get | Method::Head) {
            json::error(&crate::error::Error::MethodNotAllowed {
                message: "the UI's pages are only read".into(),
                allow: Some("GET, HEAD".into()),
            })
        } else if rest.is_empty() {
            shell(&ui.title)
        } else if let Some(name) = rest.strip_prefix("assets/") {
            assets::serve(name)
        } else {
            json::error(&crate::error::Error::EndpointUnknown(
                "no such UI page".into(),
            ))
        }
    };
    Some(secure(resp))
}

fn secure(mut resp: Response) -> Response {
    for (name, value) in SECURITY_HEADERS {
        resp = resp.header(name, value);
    }
    resp
}

fn redirect(to: &str) -> Response {
    Response::new(302)
        .header("Location", to.to_owned())
        .header("Cache-Control", "no-store")
}

/// The HTML shell with the configured title (escaped: the title comes from the operator's
/// configuration, but an `&` or `<` in a brand name must still show as written).
fn shell(title: &str) -> Response {
    let html = assets::SHELL.replace("{{title}}", &escape_html(title));
    Response::new(200)
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-cache")
        .body(Body::Bytes(html.into_bytes()))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_escaped_in_the_shell() {
        assert_eq!(
            escape_html("<b>A&B</b> \"x\" 'y'"),
            "&lt;b&gt;A&amp;B&lt;/b&gt; &quot;x&quot; &#39;y&#39;"
        );
        let resp = shell("<script>alert(1)</script>");
        let Body::Bytes(b) = resp.body else {
            panic!("shell is bytes")
        };
        let html = String::from_utf8(b).unwrap();
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
