//! Pull-through cache against a real upstream: CNCF distribution 2.8.2 on loopback, with
//! htpasswd Basic auth, with token auth (a test issuer signing the JWTs it trusts), and open.
//! Skipped when docker-registry is not installed, unless ORIGIN_REQUIRE_UPSTREAM is set (CI).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::upstream::{Upstream, UpstreamAuth};
use common::{bytes, digest, Server, ALLOW_ALL};

/// A mirror config: namespace "up" (registry name "upstream.test", the default mirror) in
/// front of `up`, plus an ordinary catch-all and a local namespace "team".
fn mirror_config(up: &Upstream, freshness: &str, extra_mirror: &str, extra: &str) -> String {
    let creds = match up.auth().credentials() {
        Some((u, p)) => format!("username = \"{u}\"\npassword = \"{p}\"\n"),
        None => String::new(),
    };
    format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"team\"\npolicy_default_allow = true\n\n\
         [[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\n\
         [repository.mirror]\nregistry = \"upstream.test\"\ndefault = true\ntag_freshness = \"{freshness}\"\n{extra_mirror}\n\
         [[repository.mirror.upstream]]\nurl = \"{}\"\ntimeout = \"5s\"\n{creds}\n{extra}",
        up.url()
    )
}

fn start(up: &Upstream, freshness: &str) -> Server {
    Server::start_with("", &mirror_config(up, freshness, "", ""))
}

/// `mirror_config` with the upstream reached through `front` (a proxy in front of `up`).
fn mirror_config_via(up: &Upstream, front: std::net::SocketAddr) -> String {
    mirror_config(up, "1h", "", "").replace(&up.url(), &format!("http://{front}"))
}

/// A server with one worker, so every request shares one thread's upstream connections.
fn start_one_worker(config: &str) -> Server {
    let dir = common::TempDir::new("srv");
    let text = common::config_text(&dir.0, "", config).replace("workers = 2", "workers = 1");
    Server::start_config(dir, &text, &[])
}

/// GET through origin, checking status 200 and the content's digest.
fn pull_blob(srv: &Server, path: &str, want: &str) -> Vec<u8> {
    let r = srv.get(path);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(digest(&r.body), want, "{path}: wrong content");
    r.body
}

/// Everything a client does on a pull, through each way of naming the mirror.
fn pull_through(up: &mut Upstream) {
    let layer = bytes(1, 1 << 20);
    let (m, c, l) = up.push_image("library/app", "v1", &layer);
    let srv = start(up, "1h");
    // Docker's registry-mirrors form, containerd's ?ns= form, and the namespace itself.
    for base in ["/v2/library/app", "/v2/up/library/app"] {
        for q in ["", "?ns=upstream.test"] {
            let r = srv.get(&format!("{base}/manifests/v1{q}"));
            assert_eq!(
                r.status,
                200,
                "{base} {q}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.header("docker-content-digest"), Some(m.as_str()));
            assert_eq!(digest(&r.body), m);
            assert_eq!(
                r.header("content-type"),
                Some("application/vnd.oci.image.manifest.v1+json")
            );
        }
    }
    let r = srv.request("HEAD", &format!("/v2/library/app/manifests/{m}"), &[], b"");
    assert_eq!(r.status, 200);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{c}"), &c);
    let got = pull_blob(
        &srv,
        &format!("/v2/library/app/blobs/{l}?ns=upstream.test"),
        &l,
    );
    assert_eq!(got, layer);
    // Cached now: served again without asking the upstream, ranges included.
    pull_blob(&srv, &format!("/v2/up/library/app/blobs/{l}"), &l);
    let r = srv.request(
        "GET",
        &format!("/v2/library/app/blobs/{l}"),
        &[("Range", "bytes=1000-1999")],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, layer[1000..2000]);
    assert_eq!(up.count_requests("GET", &format!("/blobs/{l}")), 1);
    assert_eq!(up.count_requests("GET", &format!("/blobs/{c}")), 1);
    // A blob stored for one repository is not served under a name the upstream does not
    // have it in (the upstream decides, not the digest).
    let r = srv.get(&format!("/v2/library/nothere/blobs/{l}"));
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        srv.request("HEAD", &format!("/v2/library/nothere/blobs/{l}"), &[], b"")
            .status,
        404
    );
    // A name that is not upstream, and local namespaces that stay local.
    assert_eq!(srv.get("/v2/library/nothere/manifests/v1").status, 404);
    assert_eq!(srv.get("/v2/team/app/manifests/v1").status, 404);
    assert_eq!(up.count_requests("GET", "/v2/team/"), 0);
    // Read-only: pushes and deletes are refused, under every name.
    for path in [
        "/v2/library/app/blobs/uploads/",
        "/v2/up/library/app/blobs/uploads/",
    ] {
        let r = srv.request("POST", path, &[], b"");
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.error_code(), "UNSUPPORTED");
    }
    let r = srv.request(
        "DELETE",
        &format!("/v2/library/app/manifests/{m}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 405);
    // The upstream goes away: what was pulled is still served.
    up.stop();
    let r = srv.get(&format!("/v2/library/app/manifests/{m}"));
    assert_eq!(r.status, 200);
    assert_eq!(srv.get("/v2/library/app/manifests/v1").status, 200);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{l}"), &l);
    // Not pulled before, so nowhere to get it from: a clear 502.
    let r = srv.get("/v2/library/other/manifests/v1");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn pulls_through_an_open_upstream() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    pull_through(&mut up);
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn pulls_through_a_basic_auth_upstream() {
    let Some(mut up) = Upstream::start(UpstreamAuth::basic("mirror", "s3cret-pass")) else {
        return;
    };
    // Without credentials the upstream refuses: the mirror must send them.
    assert_eq!(up.request("GET", "/v2/", &[], b"").status, 401);
    pull_through(&mut up);
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn pulls_through_a_token_auth_upstream_and_reuses_tokens() {
    let Some(mut up) = Upstream::start(UpstreamAuth::token_with_basic("robot", "t0ken-pass"))
    else {
        return;
    };
    let r = up.request("GET", "/v2/library/app/manifests/v1", &[], b"");
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    pull_through(&mut up);
    // One token per repository scope, reused until it expires (300 s here): the whole pull
    // above (manifests, HEAD, blobs, several names) fetched one token for library/app, and
    // one each for the two names that failed.
    let log = up.token_request_log();
    assert!(
        up.token_requests() <= 3,
        "tokens were not reused: {} requests: {log:#?}",
        up.token_requests()
    );
    assert!(
        log.iter()
            .any(|l| l.contains("repository%3Alibrary%2Fapp%3Apull")
                || l.contains("repository:library/app:pull")),
        "{log:#?}"
    );
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn wrong_upstream_credentials_fail_cleanly() {
    let Some(up) = Upstream::start(UpstreamAuth::token_with_basic("robot", "right")) else {
        return;
    };
    up.push_image("library/app", "v1", b"layer");
    let cfg =
        mirror_config(&up, "1h", "", "").replace("password = \"right\"", "password = \"wrong\"");
    let srv = Server::start_with("", &cfg);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("token"));
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn twenty_concurrent_cold_pulls_make_one_upstream_get() {
    let Some(up) = Upstream::start(UpstreamAuth::Token) else {
        return;
    };
    let layer = bytes(7, 64 << 20);
    let (_, _, l) = up.push_image("library/big", "v1", &layer);
    drop(layer);
    let srv = start(&up, "1h");
    let addr = srv.addr;
    let path = format!("/v2/library/big/blobs/{l}");
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                common::send(&mut s, "GET", &path, &[], b"");
                common::read_response(&mut s, false).expect("a whole response")
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 64 << 20);
        assert_eq!(digest(&r.body), l);
    }
    // The upstream's access log is written as each request completes.
    let n = up.wait_requests("GET", &format!("/blobs/{l}"), 1, Duration::from_secs(5));
    assert_eq!(n, 1, "upstream GETs of the blob");
    let metrics = srv.get("/metrics");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("origin_mirror_blob_fetches_total 1"),
        "{text}"
    );
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn tags_are_revalidated_after_the_freshness_window_only() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    // The window is an hour of the registry's clock, which the test moves past it.
    let past_the_window = Duration::from_secs(3600 + 1);
    let (m1, _, _) = up.push_image("library/app", "v1", b"first layer");
    let srv = start(&up, "1h");
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.header("docker-content-digest"), Some(m1.as_str()));
    // The tag moves upstream.
    let (m2, _, _) = up.push_image("library/app", "v1", b"second layer");
    assert_ne!(m1, m2);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(m1.as_str()),
        "seen before the freshness window passed"
    );
    assert_eq!(up.count_requests("HEAD", "/manifests/v1"), 0);
    srv.advance_clock(past_the_window);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(m2.as_str()),
        "not seen after the window"
    );
    assert_eq!(up.count_requests("HEAD", "/manifests/v1"), 1);
    // Unchanged tag: a HEAD only, no GET.
    let gets = up.count_requests("GET", "/manifests/v1");
    srv.advance_clock(past_the_window);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.header("docker-content-digest"), Some(m2.as_str()));
    assert_eq!(
        up.wait_requests("HEAD", "/manifests/v1", 2, Duration::from_secs(5)),
        2
    );
    assert_eq!(up.count_requests("GET", "/manifests/v1"), gets);
    // Upstream down after the window: the cached tag, a warning and a metric.
    up.stop();
    srv.advance_clock(past_the_window);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(m2.as_str()));
    let metrics = srv.get("/metrics");
    assert!(String::from_utf8_lossy(&metrics.body).contains("origin_mirror_stale_served_total 1"));
}

/// A GET on a fresh connection, read until the server closes it (a cut transfer included):
/// the raw bytes, head and all.
fn get_until_closed(srv: &Server, path: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    common::send(&mut s, "GET", path, &[], b"");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

/// Whether origin's storage (a directory, or the bucket under `ORIGIN_TEST_STORAGE=s3`)
/// holds blob `d`.
fn blob_stored(srv: &Server, d: &str) -> bool {
    let hex = d.strip_prefix("sha256:").unwrap();
    let key = format!("blobs/sha256/{}/{hex}/data", &hex[..2]);
    match &srv.moto {
        Some(moto) => !moto.list("registry", &key).is_empty(),
        None => srv.dir.0.join("data").join(key).exists(),
    }
}

/// Finds a blob's data file in distribution's storage.
fn upstream_blob_file(up: &Upstream, d: &str) -> std::path::PathBuf {
    let hex = d.strip_prefix("sha256:").unwrap();
    up.dir.0.join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn content_failing_verification_is_never_served_whole_or_committed() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let layer = bytes(3, 8 << 20);
    let (_, _, l) = up.push_image("library/app", "v1", &layer);
    let file = upstream_blob_file(&up, &l);
    let Ok(mut stored) = std::fs::read(&file) else {
        panic!("distribution's blob file not found at {}", file.display());
    };
    // Same size, one byte different: the upstream serves content that is not `l`.
    stored[5 << 20] ^= 0xff;
    std::fs::write(&file, &stored).unwrap();
    let srv = start(&up, "1h");
    let all = get_until_closed(&srv, &format!("/v2/library/app/blobs/{l}"));
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&all[..head_end]).to_string();
    if srv.moto.is_some() {
        // On S3 clients wait for the verified commit: nothing was sent but the error.
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    } else {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", layer.len())),
            "{head}"
        );
        let body = all.len() - head_end;
        assert!(
            body < layer.len(),
            "the whole body of unverified content was sent"
        );
    }
    // Nothing committed: the blob is not in origin's storage, and a fixed upstream serves.
    assert!(!blob_stored(&srv, &l));
    stored[5 << 20] ^= 0xff;
    std::fs::write(&file, &stored).unwrap();
    let got = pull_blob(&srv, &format!("/v2/library/app/blobs/{l}"), &l);
    assert_eq!(got.len(), layer.len());
    let metrics = srv.get("/metrics");
    assert!(String::from_utf8_lossy(&metrics.body).contains("origin_mirror_fetch_failures_total 1"));
}

/// A TCP proxy to the upstream that cuts every connection after `limit` bytes of response.
fn cutting_proxy(to: std::net::SocketAddr, limit: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            std::thread::spawn(move || {
                let Ok(mut server) = TcpStream::connect(to) else {
                    return;
                };
                let mut c2 = client.try_clone().unwrap();
                let mut s2 = server.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 64 * 1024];
                while sent < limit {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let n = n.min(limit - sent);
                            if client.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            sent += n;
                        }
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn an_upstream_cut_mid_blob_fails_the_transfer_and_commits_nothing() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let layer = bytes(4, 4 << 20);
    let (_, _, l) = up.push_image("library/app", "v1", &layer);
    let proxy = cutting_proxy(up.addr(), 1 << 20);
    let cfg = mirror_config_via(&up, proxy);
    let srv = Server::start_with("", &cfg);
    let all = get_until_closed(&srv, &format!("/v2/library/app/blobs/{l}"));
    let text = String::from_utf8_lossy(&all[..all.len().min(200)]).to_string();
    match all.windows(4).position(|w| w == b"\r\n\r\n") {
        // Streaming had started: a 200 whose body stops short.
        Some(end) if text.starts_with("HTTP/1.1 200") => {
            assert!(
                all.len() - end - 4 < layer.len(),
                "a short body was not cut"
            );
        }
        // Or the failure came before the head: an error status, never a 200.
        _ => assert!(!text.starts_with("HTTP/1.1 200"), "{text}"),
    }
    let hex = l.strip_prefix("sha256:").unwrap();
    let data = srv.dir.0.join("data");
    assert!(!data
        .join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))
        .exists());
    // No upload session left behind either.
    let leftovers = common::files_under(&data.join("repositories"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("_uploads"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn unpulled_content_is_evicted_and_collected() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let layer = bytes(5, 256 << 10);
    let (m, _, l) = up.push_image("library/app", "v1", &layer);
    let cfg = mirror_config(
        &up,
        "1h",
        "evict_after = \"2s\"",
        "[uploads]\nidle_expiry = \"4s\"\n\n[gc]\ninterval = \"1s\"\ngrace_period = \"1s\"\n",
    );
    let srv = Server::start_with("", &cfg);
    assert_eq!(srv.get("/v2/library/app/manifests/v1").status, 200);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{l}"), &l);
    // Clients get the verified bytes while the commit makes them durable: wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !blob_stored(&srv, &l) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(blob_stored(&srv, &l), "the fetched blob was not committed");
    up.stop();
    // Evicted after 2 s without pulls (checked every second), then collected by GC: the
    // registry's clock is moved past the 2 s, the GC's grace period passes in real time.
    srv.advance_clock(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    while blob_stored(&srv, &l) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !blob_stored(&srv, &l),
        "the unpulled blob was not collected"
    );
    // Gone from the cache: with the upstream down it cannot be served any more.
    assert_eq!(
        srv.get(&format!("/v2/library/app/manifests/{m}")).status,
        502
    );
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn policies_apply_to_mirrored_names_before_any_upstream_request() {
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    up.push_image("library/app", "v1", b"layer");
    // The mirror namespace denies everything except get-api-version and pulls of library/*.
    let cfg = mirror_config(&up, "1h", "", "").replace(
        "namespace = \"up\"\npolicy_default_allow = true\n",
        "namespace = \"up\"\npolicy_default_allow = false\npolicies = [\"request.action == 'get-manifest' && request.namespace.startsWith('up/library/')\"]\n",
    );
    let srv = Server::start_with("", &cfg);
    // Allowed: the policy sees the local name (up/library/app) whatever form was requested.
    assert_eq!(srv.get("/v2/library/app/manifests/v1").status, 200);
    assert_eq!(
        srv.get("/v2/library/app/manifests/v1?ns=upstream.test")
            .status,
        200
    );
    // Denied before the upstream is asked: blobs, and names outside library/.
    let before = up.count_requests("GET", "/v2/") + up.count_requests("HEAD", "/v2/");
    let r = srv.get("/v2/library/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(r.status, 401);
    assert_eq!(srv.get("/v2/other/app/manifests/v1").status, 401);
    assert_eq!(srv.get("/v2/up/other/app/manifests/v1").status, 401);
    let after = up.count_requests("GET", "/v2/") + up.count_requests("HEAD", "/v2/");
    assert_eq!(before, after, "a denied request reached the upstream");
}

fn tag_list(srv: &Server, path: &str) -> (u16, Vec<String>, Option<String>) {
    let r = srv.get(path);
    let tags = if r.status == 200 {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    } else {
        Vec::new()
    };
    (r.status, tags, r.header("link").map(str::to_owned))
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn tags_are_listed_from_the_upstream_or_from_the_cache_when_it_is_down() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    up.push_image("library/app", "v1", b"one");
    up.push_image("library/app", "v2", b"two");
    up.push_image("library/app", "v3", b"three");
    let srv = start(&up, "5m");
    // Nothing cached yet: the upstream's whole list, under every name of the mirror.
    for path in [
        "/v2/library/app/tags/list",
        "/v2/up/library/app/tags/list",
        "/v2/library/app/tags/list?ns=upstream.test",
    ] {
        let (status, tags, _) = tag_list(&srv, path);
        assert_eq!(
            (status, tags),
            (200, vec!["v1".into(), "v2".into(), "v3".into()]),
            "{path}"
        );
    }
    // Paging is origin's own, over the merged list.
    let (status, tags, link) = tag_list(&srv, "/v2/library/app/tags/list?n=2");
    assert_eq!((status, tags), (200, vec!["v1".into(), "v2".into()]));
    assert!(link.unwrap().contains("last=v2"));
    let (_, tags, link) = tag_list(&srv, "/v2/library/app/tags/list?n=2&last=v2");
    assert_eq!((tags, link), (vec!["v3".to_string()], None));
    // A repository the upstream does not have.
    assert_eq!(tag_list(&srv, "/v2/library/nothing/tags/list").0, 404);
    // One tag pulled (so cached), then the upstream goes away: the cached tags are listed.
    assert_eq!(srv.get("/v2/library/app/manifests/v2").status, 200);
    up.stop();
    let (status, tags, _) = tag_list(&srv, "/v2/library/app/tags/list");
    assert_eq!((status, tags), (200, vec!["v2".to_string()]));
    let metrics = srv.get("/metrics");
    assert!(String::from_utf8_lossy(&metrics.body).contains("origin_mirror_stale_served_total 1"));
    // Nothing cached and no upstream: a clean 502.
    assert_eq!(tag_list(&srv, "/v2/library/other/tags/list").0, 502);
}

#[test]
fn referrers_come_from_the_upstream_and_from_the_cache_when_it_is_down() {
    // Another origin as the upstream: distribution 2.8.2 has no referrers API.
    let upstream = Server::start();
    let (subject, subject_digest) = upstream.push_image("library/app", "v1", &[bytes(1, 1000)]);
    let empty = upstream.push_blob("library/app", b"{}");
    let sig = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"artifactType\":\"application/vnd.test.sig\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty}\",\"size\":2}},\
         \"layers\":[],\"subject\":{{\"mediaType\":\"{}\",\"digest\":\"{subject_digest}\",\"size\":{}}}}}",
        common::OCI_MANIFEST,
        common::OCI_MANIFEST,
        subject.len()
    );
    let sig_digest = digest(sig.as_bytes());
    let r = upstream.put_manifest(
        "library/app",
        &sig_digest,
        common::OCI_MANIFEST,
        sig.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let config = format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\n\
         [repository.mirror]\ndefault = true\n[[repository.mirror.upstream]]\nurl = \"http://{}\"\n",
        upstream.addr
    );
    let srv = Server::start_with("", &config);
    let listed = |path: &str| -> Vec<(String, String)> {
        let r = srv.get(path);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                (field("digest"), field("artifactType"))
            })
            .collect()
    };
    let path = format!("/v2/library/app/referrers/{subject_digest}");
    let want = vec![(sig_digest.clone(), "application/vnd.test.sig".to_string())];
    // Nothing cached: the upstream's referrers.
    assert_eq!(listed(&path), want);
    let r = srv.get(&format!("{path}?artifactType=application/vnd.test.other"));
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(
        listed(&format!("{path}?artifactType=application/vnd.test.other")),
        vec![]
    );
    // The referrer pulled through the mirror is cached with its subject; with the upstream
    // gone, the cached referrers are listed.
    assert_eq!(
        srv.get(&format!("/v2/library/app/manifests/{sig_digest}"))
            .status,
        200
    );
    drop(upstream);
    assert_eq!(listed(&path), want);
}

/// A TCP proxy to `to` that counts the connections it accepts. With `idle_close`, it closes
/// a connection after nothing crossed it for that long, as load balancers in front of
/// registries do.
fn counting_proxy(
    to: std::net::SocketAddr,
    idle_close: Option<Duration>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let epoch = Instant::now();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            count.fetch_add(1, SeqCst);
            let Ok(server) = TcpStream::connect(to) else {
                continue;
            };
            let last = Arc::new(AtomicU64::new(0));
            let pipe = |mut from: TcpStream, mut to: TcpStream, last: Arc<AtomicU64>| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                last.store(epoch.elapsed().as_millis() as u64, SeqCst);
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                })
            };
            last.store(epoch.elapsed().as_millis() as u64, SeqCst);
            pipe(
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                last.clone(),
            );
            pipe(
                server.try_clone().unwrap(),
                client.try_clone().unwrap(),
                last.clone(),
            );
            if let Some(idle) = idle_close {
                std::thread::spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(20));
                    let quiet = epoch.elapsed().as_millis() as u64 - last.load(SeqCst);
                    if quiet >= idle.as_millis() as u64 {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                });
            }
        }
    });
    (addr, accepted)
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn upstream_connections_are_kept_alive_and_replaced_when_closed() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let (m, c, l) = up.push_image("library/app", "v1", &bytes(5, 300_000));
    let (_, c2, l2) = up.push_image("library/other", "v1", &bytes(6, 200_000));
    let (proxy, accepted) = counting_proxy(up.addr(), Some(Duration::from_millis(700)));
    let cfg = mirror_config_via(&up, proxy);
    let srv = start_one_worker(&cfg);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-content-digest"), Some(m.as_str()));
    pull_blob(&srv, &format!("/v2/library/app/blobs/{c}"), &c);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{l}"), &l);
    let head = srv.request("HEAD", &format!("/v2/library/other/blobs/{l2}"), &[], b"");
    assert_eq!(head.status, 200);
    pull_blob(&srv, &format!("/v2/library/other/blobs/{c2}"), &c2);
    // The probe of /v2/, the manifest and three blobs; the HEAD.
    let requests = up.wait_requests("GET", "/v2/", 5, Duration::from_secs(5))
        + up.wait_requests("HEAD", "/v2/", 1, Duration::from_secs(5));
    assert!(requests >= 6, "{requests} upstream requests");
    assert_eq!(
        accepted.load(SeqCst),
        1,
        "{requests} upstream requests on one kept-alive connection"
    );
    // The proxy closes the idle connection: the next request notices and opens another.
    std::thread::sleep(Duration::from_millis(1200));
    pull_blob(&srv, &format!("/v2/library/other/blobs/{l2}"), &l2);
    assert_eq!(accepted.load(SeqCst), 2);
    // With a connection in the pool, a graceful stop is still clean.
    let mut srv = srv;
    srv.signal(libc::SIGTERM);
    assert_eq!(srv.wait_exit(Duration::from_secs(20)), Some(0));
    assert_eq!(srv.logs_until("panicked", Duration::from_millis(500)), None);
}

/// An upstream front that answers every request with a 307 to the same path on `to` (as
/// Docker Hub sends blobs to its CDN), keeping connections alive. Counts its connections.
fn redirector(
    to: std::net::SocketAddr,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, SeqCst);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    match conn.read(&mut byte) {
                        Ok(1) => buf.push(byte[0]),
                        _ => return,
                    }
                    if !buf.ends_with(b"\r\n\r\n") {
                        continue;
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    buf.clear();
                    let mut first = head.split_whitespace();
                    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or("/"));
                    let body = if method == "HEAD" { "" } else { "see other" };
                    let resp = format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{to}{path}\r\n\
                         Content-Length: 9\r\n\r\n{body}"
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn redirected_pulls_work_and_keep_the_registry_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let (m, c, l) = up.push_image("library/app", "v1", &bytes(7, 300_000));
    let (front, accepted) = redirector(up.addr());
    let cfg = mirror_config_via(&up, front);
    let srv = start_one_worker(&cfg);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(m.as_str()));
    let head = srv.request("HEAD", &format!("/v2/library/app/blobs/{l}"), &[], b"");
    assert_eq!(head.status, 200);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{c}"), &c);
    pull_blob(&srv, &format!("/v2/library/app/blobs/{l}"), &l);
    // Every request went through the front (and on to distribution)...
    assert!(up.wait_requests("GET", &format!("/blobs/{l}"), 1, Duration::from_secs(5)) >= 1);
    // ...on one connection, whose redirect bodies were read so it could be reused.
    assert_eq!(accepted.load(SeqCst), 1);
}

#[test]
fn pulls_through_a_tls_upstream_trusting_its_ca_bundle_on_one_connection() {
    use std::sync::atomic::Ordering::SeqCst;
    let pki_dir = common::TempDir::new("pki");
    let pki = common::pki::Pki::new(&pki_dir.0, &[]);
    // The upstream is another origin: content pushed to it over plain HTTP, then served
    // from the same storage over TLS (the test helpers push in plain HTTP only).
    let store = common::TempDir::new("store");
    let layer = bytes(8, 500_000);
    let (manifest, manifest_digest) = {
        let plain = Server::start_config(
            common::TempDir::new("srv"),
            &common::config_text(&store.0, "", ALLOW_ALL),
            &[],
        );
        plain.push_image("library/app", "v1", std::slice::from_ref(&layer))
    };
    let tls_config = format!("{ALLOW_ALL}\n{}", pki.tls_section(false, None));
    let upstream = Server::start_config(
        common::TempDir::new("srv"),
        &common::config_text(&store.0, "", &tls_config),
        &[],
    );
    let (proxy, accepted) = counting_proxy(upstream.addr, None);
    let cfg = format!(
        "{ALLOW_ALL}\n[[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\n\
         [repository.mirror]\ndefault = true\n[[repository.mirror.upstream]]\n\
         url = \"https://127.0.0.1:{}\"\nca_bundle = \"{}\"\n\n\
         [[repository]]\nnamespace = \"untrusted\"\npolicy_default_allow = true\n\
         [repository.mirror]\n[[repository.mirror.upstream]]\nurl = \"https://127.0.0.1:{}\"\n",
        proxy.port(),
        pki.ca.display(),
        proxy.port()
    );
    let srv = start_one_worker(&cfg);
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, manifest);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(manifest_digest.as_str())
    );
    let m = r.json();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    pull_blob(&srv, &format!("/v2/library/app/blobs/{config}"), &config);
    pull_blob(
        &srv,
        &format!("/v2/library/app/blobs/{}", digest(&layer)),
        &digest(&layer),
    );
    // The probe, the manifest and two blobs over one TLS connection.
    assert_eq!(accepted.load(SeqCst), 1);
    // Without the CA bundle the system roots do not know the upstream's CA: a clean 502.
    let r = srv.get("/v2/untrusted/library/app/manifests/v1");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(srv.get("/v2/library/app/manifests/v1").status, 200);
}
