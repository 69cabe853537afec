//! The web UI (`[ui]`, src/ui/): served with strict headers, redirected to from `/`, off
//! when disabled, its JSON API showing pushed content, hiding what a caller may not read,
//! and giving untrusted content back as data that its scripts only ever set as text.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The security headers every UI response carries.
fn assert_secure(r: &Resp, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
}

fn basic(user: &str, pass: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b}")
}

/// A client of one server with one set of headers (credentials or none).
struct As<'a> {
    srv: &'a Server,
    auth: Vec<(&'static str, String)>,
}

impl As<'_> {
    fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut h: Vec<(&str, &str)> = self.auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.extend_from_slice(headers);
        self.srv.request(method, path, &h, body)
    }

    fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], b"")
    }

    fn blob(&self, repo: &str, data: &[u8]) -> Value {
        let d = digest(data);
        let r = self.req(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            &[],
            data,
        );
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        json!({ "mediaType": "application/octet-stream", "digest": d, "size": data.len() })
    }

    /// Puts a manifest under `reference` (a digest when None); returns its descriptor.
    fn manifest(&self, repo: &str, reference: Option<&str>, m: &Value) -> Value {
        let body = serde_json::to_vec(m).unwrap();
        let d = digest(&body);
        let media_type = m["mediaType"].as_str().unwrap();
        let path = format!("/v2/{repo}/manifests/{}", reference.unwrap_or(&d));
        let r = self.req("PUT", &path, &[("Content-Type", media_type)], &body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        json!({ "mediaType": media_type, "digest": d, "size": body.len() })
    }

    /// An image with a config (labels, env, history) and one layer, tagged `tag`.
    fn image(&self, repo: &str, tag: Option<&str>, arch: &str, labels: Value) -> Value {
        let config = json!({
            "created": "2026-01-02T03:04:05Z", "os": "linux", "architecture": arch,
            "config": { "Entrypoint": ["/bin/app", "--serve"], "Env": ["PATH=/bin", "MODE=prod"],
                        "Labels": labels, "ExposedPorts": { "8080/tcp": {} } },
            "history": [{ "created_by": "COPY app /bin/app" }, { "created_by": "ENV MODE=prod", "empty_layer": true }],
        });
        let mut cfg = self.blob(repo, &serde_json::to_vec(&config).unwrap());
        cfg["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        let mut layer = self.blob(repo, &bytes(arch.len() as u64, 3000));
        layer["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
        let m = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer] });
        self.manifest(repo, tag, &m)
    }

    /// A referrer of `subject` with the given artifact type.
    fn referrer(&self, repo: &str, subject: &Value, artifact_type: &str, payload: &[u8]) -> Value {
        let mut empty = self.blob(repo, b"{}");
        empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
        let mut layer = self.blob(repo, payload);
        layer["mediaType"] = json!(artifact_type);
        let m = json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                        "config": empty, "layers": [layer], "subject": subject });
        self.manifest(repo, None, &m)
    }
}

fn anon(srv: &Server) -> As<'_> {
    As { srv, auth: vec![] }
}

/// The content the tests browse: an index of two platforms tagged `multi` with a signature
/// and an SBOM referring to it, and an image tagged `v1`.
struct Pushed {
    index: Value,
    image: Value,
}

fn push_content(c: &As<'_>, repo: &str) -> Pushed {
    let amd = c.image(
        repo,
        None,
        "amd64",
        json!({ "org.opencontainers.image.title": "app" }),
    );
    let arm = c.image(repo, None, "arm64", json!({}));
    let mut children = vec![amd, arm];
    children[0]["platform"] = json!({ "os": "linux", "architecture": "amd64" });
    children[1]["platform"] = json!({ "os": "linux", "architecture": "arm64", "variant": "v8" });
    let index = c.manifest(
        repo,
        Some("multi"),
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children }),
    );
    c.referrer(
        repo,
        &index,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        b"sig",
    );
    c.referrer(
        repo,
        &index,
        "application/spdx+json",
        b"{\"spdxVersion\":\"SPDX-2.3\"}",
    );
    let image = c.image(repo, Some("v1"), "amd64", json!({ "team": "core" }));
    Pushed { index, image }
}

/// Every kind of UI response (shell, assets, JSON, errors, redirect, refused method)
/// carries the CSP and the other security headers.
#[test]
fn every_ui_response_has_the_security_headers() {
    let srv = Server::start();
    push_content(&anon(&srv), "team/app");
    let paths = [
        "/",
        "/ui",
        "/ui/",
        "/ui/assets/style.css",
        "/ui/assets/app.js",
        "/ui/assets/dom.js",
        "/ui/assets/repos.js",
        "/ui/assets/repo.js",
        "/ui/assets/manifest.js",
        "/ui/assets/login.js",
        "/ui/assets/nope.js",
        "/ui/api/session",
        "/ui/nope",
        "/ui/api/repositories",
        "/ui/api/tags?repo=team/app",
        "/ui/api/tags?repo=none",
        "/ui/api/tags",
        "/ui/api/manifest?repo=team/app&ref=multi",
        "/ui/api/nope",
        "/ui/api/referrers?repo=team/app&digest=sha256:bad",
    ];
    for p in paths {
        let r = srv.get(p);
        assert_secure(&r, p);
    }
    let r = srv.request("POST", "/ui/api/repositories", &[], b"");
    assert_eq!(r.status, 405);
    assert_secure(&r, "POST");
    let r = srv.request("HEAD", "/ui/", &[], b"");
    assert_secure(&r, "HEAD");
    // The registry's own responses are not the UI's: no UI headers on /v2/.
    assert!(srv.get("/v2/").header("content-security-policy").is_none());
}

/// `/` and the UI path without its slash redirect to the UI; the shell loads only
/// same-origin files (no inline script or style) and shows the configured title escaped.
#[test]
fn root_redirects_to_the_ui_and_the_shell_is_served() {
    let srv = Server::start_with(
        "",
        &format!("{ALLOW_ALL}\n[ui]\npath = \"/console/\"\ntitle = \"A&B <i>\"\n"),
    );
    for p in ["/", "/console"] {
        let r = srv.get(p);
        assert_eq!(r.status, 302, "{p}");
        assert_eq!(r.header("location"), Some("/console/"));
    }
    let r = srv.get("/console/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("<title>A&amp;B &lt;i&gt;</title>"), "{html}");
    assert!(html.contains("<script type=\"module\" src=\"assets/app.js\"></script>"));
    assert_eq!(
        html.matches("<script").count(),
        1,
        "one external module, no inline script"
    );
    assert!(
        !html.contains("<style") && !html.contains("style="),
        "no inline style"
    );
    assert_eq!(
        srv.get("/console/assets/app.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(srv.get("/ui/").status, 404, "only the configured path");
}

/// `[ui] enabled = false`: no UI, no JSON API, and `/` is not redirected.
#[test]
fn disabled_ui_is_not_served() {
    let srv = Server::start_with("", &format!("{ALLOW_ALL}\n[ui]\nenabled = false\n"));
    for p in ["/ui/", "/ui/assets/app.js", "/ui/api/repositories", "/"] {
        let r = srv.get(p);
        assert_eq!(r.status, 404, "{p}");
        assert!(r.header("content-security-policy").is_none(), "{p}");
    }
    assert_eq!(srv.get("/v2/").status, 200);
}

/// The JSON API shows what was pushed: repositories by namespace, paged; tags with digest,
/// media type and size; an index's platforms; an image's config and layers; referrers
/// grouped by artifact type with signature and SBOM badges.
#[test]
fn json_api_shows_pushed_content() {
    let srv = Server::start();
    let c = anon(&srv);
    let p = push_content(&c, "team/app/api");
    c.image("team/web", Some("latest"), "amd64", json!({}));
    c.image("other", Some("latest"), "amd64", json!({}));

    let all = c.get("/ui/api/repositories").json();
    assert_eq!(
        all["repositories"],
        json!(["other", "team/app/api", "team/web"])
    );
    assert_eq!(all["next"], Value::Null);
    let team = c.get("/ui/api/repositories?ns=team").json();
    assert_eq!(team["repositories"], json!(["team/app/api", "team/web"]));
    let first = c.get("/ui/api/repositories?ns=team/&n=1").json();
    assert_eq!(
        (first["repositories"].clone(), first["next"].clone()),
        (json!(["team/app/api"]), json!("team/app/api"))
    );
    let second = c
        .get("/ui/api/repositories?ns=team/&n=1&last=team/app/api")
        .json();
    assert_eq!(
        (second["repositories"].clone(), second["next"].clone()),
        (json!(["team/web"]), Value::Null)
    );

    let mut tags = c.get("/ui/api/tags?repo=team/app/api").json();
    assert_eq!(tags["tags"].as_array().unwrap().len(), 2);
    // Times are checked in tests/ui_repo.rs.
    assert!(tags["tags"][0]["pushed"].is_i64());
    tags["tags"][0].as_object_mut().unwrap().remove("pushed");
    assert_eq!(
        tags["tags"][0],
        json!({ "tag": "multi", "digest": p.index["digest"], "mediaType": OCI_INDEX, "size": p.index["size"],
                "pulled": null, "deletable": true, "immutable": null })
    );
    assert_eq!(tags["tags"][1]["tag"], "v1");
    assert_eq!(tags["tags"][1]["digest"], p.image["digest"]);
    let paged = c.get("/ui/api/tags?repo=team/app/api&n=1").json();
    assert_eq!(paged["next"], "multi");
    assert_eq!(
        c.get("/ui/api/tags?repo=team/app/api&n=1&last=multi")
            .json()["tags"][0]["tag"],
        "v1"
    );

    let index = c.get("/ui/api/manifest?repo=team/app/api&ref=multi").json();
    assert_eq!(index["kind"], "index");
    assert_eq!(index["digest"], p.index["digest"]);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}/{}",
                m["platform"]["os"], m["platform"]["architecture"], m["platform"]["variant"]
            )
        })
        .collect();
    assert_eq!(
        platforms,
        ["\"linux\"/\"amd64\"/null", "\"linux\"/\"arm64\"/\"v8\""]
    );

    let child = index["manifests"][1]["digest"].as_str().unwrap();
    let image = c
        .get(&format!("/ui/api/manifest?repo=team/app/api&ref={child}"))
        .json();
    assert_eq!(image["kind"], "image");
    assert_eq!(image["image"]["architecture"], "arm64");
    assert_eq!(image["image"]["entrypoint"], json!(["/bin/app", "--serve"]));
    assert_eq!(image["image"]["env"], json!(["PATH=/bin", "MODE=prod"]));
    assert_eq!(image["image"]["created"], "2026-01-02T03:04:05Z");
    assert_eq!(image["image"]["history"][1]["emptyLayer"], true);
    assert_eq!(image["image"]["exposedPorts"], json!(["8080/tcp"]));
    assert_eq!(image["layers"][0]["size"], 3000);
    assert_eq!(
        image["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let v1 = c.get("/ui/api/manifest?repo=team/app/api&ref=v1").json();
    assert_eq!(v1["image"]["labels"], json!({ "team": "core" }));

    let refs = c
        .get(&format!(
            "/ui/api/referrers?repo=team/app/api&digest={}",
            p.index["digest"].as_str().unwrap()
        ))
        .json();
    let mut badges: Vec<String> = refs["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            format!(
                "{} {} {}",
                g["badge"]["kind"],
                g["badge"]["label"],
                g["items"].as_array().unwrap().len()
            )
        })
        .collect();
    badges.sort();
    assert_eq!(
        badges,
        ["\"sbom\" \"SPDX\" 1", "\"signature\" \"cosign\" 1"]
    );

    // Looking is not pulling: the UI sent no pull through the API's operation.
    assert_eq!(
        c.get("/ui/api/manifest?repo=team/app/api&ref=nope").status,
        404
    );
    assert_eq!(c.get("/ui/api/tags?repo=Bad..Name").status, 400);
}

/// A user whose policies deny a repository finds neither its name, its tags nor its
/// manifests through any UI endpoint (the same decisions as /v2/); anonymous callers are
/// refused; a permitted repository stays visible to the same user.
#[test]
fn denied_repository_is_invisible_through_every_ui_endpoint() {
    let identities = format!(
        "[identity.alice]\nusername = \"alice\"\npassword = \"{}\"\n[identity.bob]\nusername = \"bob\"\npassword = \"{}\"\n",
        hash_password("alice-pw"),
        hash_password("bob-pw"),
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = [\n  \
        'identity.id == \"alice\"',\n  'identity.id == \"bob\" && (request.action.startsWith(\"get\") || request.action.startsWith(\"list\"))',\n]\n\
        [[repository]]\nnamespace = \"secret\"\npolicy_default_allow = false\npolicies = ['identity.id == \"alice\"']\n";
    let srv = Server::start_with("", &format!("{identities}{repos}"));
    let alice = As {
        srv: &srv,
        auth: vec![("Authorization", basic("alice", "alice-pw"))],
    };
    let bob = As {
        srv: &srv,
        auth: vec![("Authorization", basic("bob", "bob-pw"))],
    };
    let hidden = push_content(&alice, "secret/app");
    alice.image("public/app", Some("shown"), "amd64", json!({}));
    let (index, image) = (
        hidden.index["digest"].as_str().unwrap(),
        hidden.image["digest"].as_str().unwrap(),
    );

    // Alice sees it all (the control).
    assert_eq!(
        alice.get("/ui/api/repositories").json()["repositories"],
        json!(["public/app", "secret/app"])
    );
    assert_eq!(alice.get("/ui/api/tags?repo=secret/app").status, 200);

    let calls = [
        "/ui/api/repositories".to_string(),
        "/ui/api/repositories?ns=secret".into(),
        "/ui/api/repositories?ns=secret/app".into(),
        "/ui/api/tags?repo=secret/app".into(),
        "/ui/api/tags?repo=secret/app&last=a".into(),
        "/ui/api/untagged?repo=secret/app".into(),
        "/ui/api/retention?repo=secret/app".into(),
        "/ui/api/size?repo=secret/app".into(),
        "/ui/api/manifest?repo=secret/app&ref=multi".into(),
        "/ui/api/manifest?repo=secret/app&ref=v1".into(),
        format!("/ui/api/manifest?repo=secret/app&ref={index}"),
        format!("/ui/api/manifest?repo=secret/app&ref={image}"),
        format!("/ui/api/referrers?repo=secret/app&digest={index}"),
    ];
    for call in &calls {
        for (who, r) in [("bob", bob.get(call)), ("anonymous", anon(&srv).get(call))] {
            let body = String::from_utf8_lossy(&r.body).to_string();
            for secret in ["secret/app", "multi", "\"v1\"", &index[7..], &image[7..]] {
                assert!(
                    !body.contains(secret),
                    "{who} {call} shows {secret}: {body}"
                );
            }
            if call.contains("repo=") {
                assert!(
                    matches!(r.status, 401 | 403),
                    "{who} {call}: {} {body}",
                    r.status
                );
            }
            // The page logs in through its own form: no challenge opens the browser's dialog.
            assert!(r.header("www-authenticate").is_none(), "{call}");
            assert_secure(&r, call);
        }
    }
    assert_eq!(
        bob.get("/ui/api/repositories").json()["repositories"],
        json!(["public/app"])
    );
    assert_eq!(
        bob.get("/ui/api/repositories?ns=secret").json()["repositories"],
        json!([])
    );
    assert_eq!(
        bob.get("/ui/api/tags?repo=public/app").json()["tags"][0]["tag"],
        "shown"
    );
    // The same decision as the registry API for the same user.
    assert_eq!(bob.get("/v2/secret/app/tags/list").status, 403);
    assert_eq!(bob.get("/ui/api/tags?repo=secret/app").status, 403);
    // A wrong password never falls back to anonymous.
    let wrong = As {
        srv: &srv,
        auth: vec![("Authorization", basic("bob", "nope"))],
    };
    assert_eq!(wrong.get("/ui/api/repositories").status, 401);
}

/// Markup, control characters and very long values in labels and annotations come back
/// as JSON strings (served as application/json with nosniff), long ones cut and marked.
#[test]
fn untrusted_content_comes_back_as_data() {
    let srv = Server::start();
    let c = anon(&srv);
    let nasty = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
        "tab\tbell\u{7}esc\u{1b}[31mnul\u{0}end",
        "</title><svg onload=alert(1)>",
    ];
    let long = "A".repeat(100_000);
    let mut labels = serde_json::Map::new();
    for (i, v) in nasty.iter().enumerate() {
        labels.insert(format!("label{i}<b>"), json!(v));
    }
    labels.insert("long".into(), json!(long));
    let img = c.image("evil/app", Some("x"), "amd64", Value::Object(labels));
    // An annotated index naming the image: annotations are shown too.
    let mut annotations = serde_json::Map::new();
    for (i, v) in nasty.iter().enumerate() {
        annotations.insert(format!("org.example.{i}"), json!(v));
    }
    c.manifest(
        "evil/app",
        Some("idx"),
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [img], "annotations": annotations }),
    );

    let r = c.get("/ui/api/manifest?repo=evil/app&ref=x");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_secure(&r, "manifest");
    let v = r.json();
    for (i, want) in nasty.iter().enumerate() {
        assert_eq!(v["image"]["labels"][format!("label{i}<b>")], *want);
    }
    let cut = v["image"]["labels"]["long"].as_str().unwrap();
    assert!(cut.len() < 10_000 && cut.starts_with("AAAA") && cut.ends_with('…'));
    assert_eq!(v["image"]["truncated"], true);
    let raw = String::from_utf8_lossy(&r.body);
    assert!(
        !raw.contains('\u{1b}') && !raw.contains('\u{0}'),
        "control characters are escaped in JSON"
    );
    let idx = c.get("/ui/api/manifest?repo=evil/app&ref=idx").json();
    for (i, want) in nasty.iter().enumerate() {
        assert_eq!(idx["annotations"][format!("org.example.{i}")], *want);
    }
}

/// The scripts the UI serves never turn data into markup or code: no innerHTML,
/// outerHTML, insertAdjacentHTML, document.write, eval or Function; and what is served is
/// what the repository holds.
#[test]
fn embedded_scripts_never_parse_strings_as_html_or_code() {
    let srv = Server::start();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ui/assets");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".js") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let served = srv.get(&format!("/ui/assets/{name}"));
        assert_eq!(served.status, 200, "{name} is served");
        assert_eq!(String::from_utf8(served.body).unwrap(), source, "{name}");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "Function(",
            "setTimeout('",
            "setTimeout(\"",
            "srcdoc",
            "javascript:",
        ] {
            assert!(!source.contains(banned), "{name} uses {banned}");
        }
        checked += 1;
    }
    assert!(checked >= 4, "found the UI's modules");
}

/// A mirror namespace says so (#24 point 2): the repositories call marks the namespace a
/// mirror of its registry, with its upstream and no credentials; the tags of a mirrored
/// repository are exactly what was pulled through (cached), not what the upstream has,
/// with the namespace's settings; the page's script shows it; an ordinary repository has
/// no `mirror`.
#[test]
fn a_mirror_namespace_shows_its_upstream_and_what_is_cached() {
    let Some(up) = common::upstream::Upstream::start(common::upstream::UpstreamAuth::basic(
        "puller",
        "secret-pw",
    )) else {
        return;
    };
    up.push_image("lib/app", "cached", &bytes(7, 500));
    up.push_image("lib/app", "not-pulled", &bytes(8, 500));
    let config = format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"hub\"\npolicy_default_allow = true\n\
         [repository.mirror]\nregistry = \"upstream.test\"\ntag_freshness = \"5m\"\nevict_after = \"720h\"\n\
         [[repository.mirror.upstream]]\nurl = \"{}\"\nusername = \"puller\"\npassword = \"secret-pw\"\n",
        up.url()
    );
    let srv = Server::start_with("", &config);
    let c = anon(&srv);
    c.image("team/app", Some("v1"), "amd64", json!({}));
    let pulled = c.get("/v2/hub/lib/app/manifests/cached");
    assert_eq!(
        pulled.status,
        200,
        "{}",
        String::from_utf8_lossy(&pulled.body)
    );

    let expected = json!({ "namespace": "hub", "registry": "upstream.test",
        "upstreams": [up.url()], "writable": false,
        "tagFreshnessSecs": 300, "evictAfterSecs": 30 * 86400 });
    let top = c.get("/ui/api/repositories").json();
    assert_eq!(top["repositories"], json!(["hub/lib/app", "team/app"]));
    assert_eq!(top["mirrors"], json!([expected]));
    let inside = c.get("/ui/api/repositories?ns=hub").json();
    assert_eq!(inside["mirrors"], json!([expected]));
    assert_eq!(
        c.get("/ui/api/repositories?ns=team").json()["mirrors"],
        json!([])
    );

    let tags = c.get("/ui/api/tags?repo=hub/lib/app");
    assert_eq!(tags.status, 200);
    let tags = tags.json();
    assert_eq!(tags["mirror"], expected);
    let names: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cached"], "only what was pulled through");
    let upstream_too = c.get("/v2/hub/lib/app/tags/list").json();
    assert_eq!(
        upstream_too["tags"],
        json!(["cached", "not-pulled"]),
        "/v2/ merges"
    );
    assert_eq!(tags["tags"][0]["deletable"], false, "read-only mirror");
    assert!(!tags.to_string().contains("secret-pw"));
    assert_eq!(
        c.get("/ui/api/tags?repo=team/app").json()["mirror"],
        Value::Null
    );
    for (file, needle) in [
        ("dom.js", "mirrorCard"),
        ("repo.js", "page.mirror"),
        ("repos.js", "page.mirrors"),
    ] {
        let js = String::from_utf8(c.get(&format!("/ui/assets/{file}")).body).unwrap();
        assert!(js.contains(needle), "{file} shows the mirror");
    }
}
