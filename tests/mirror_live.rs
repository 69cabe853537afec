//! The pull-through cache as an operator sees it, against real upstreams (CNCF distribution
//! on loopback): the events of mirror fills and of blobs streamed through the mirror, and
//! `[repository.mirror]` settings reloaded with SIGHUP while a fetch is in flight.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::receiver::{Received, Receiver};
use common::upstream::{Upstream, UpstreamAuth};
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// A mirror `up` of `url` (the default mirror, registry name "upstream.test") with `extra`
/// mirror keys, an ordinary catch-all using `hooks`, and `rest` appended.
fn mirror_config(url: &str, extra: &str, hooks: &str, rest: &str) -> String {
    format!(
        "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\nevent_webhooks = [{hooks}]\n\n\
         [[repository]]\nnamespace = \"up\"\npolicy_default_allow = true\nevent_webhooks = [{hooks}]\n\
         [repository.mirror]\nregistry = \"upstream.test\"\ndefault = true\ntag_freshness = \"1h\"\n{extra}\n\
         [[repository.mirror.upstream]]\nurl = \"{url}\"\ntimeout = \"5s\"\n\n{rest}"
    )
}

fn events(got: &[Received]) -> Vec<serde_json::Value> {
    got.iter().map(|r| r.json()).collect()
}

/// A manifest fetched from upstream is a push by the mirror (`manifest.push`, and
/// `tag.create` when fetched by tag), the client's request its `manifest.pull`; a blob
/// streamed to the client while it is fetched is a `blob.pull` like a cached one. A
/// `required` `manifest.push` webhook that refuses a fill fails the pull (502) and nothing is
/// stored; once it accepts, the same pull fills.
#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn mirror_fills_and_streamed_blobs_send_events() {
    let Some(mut up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let layer = bytes(1, 300_000);
    let (m, c, l) = up.push_image("library/app", "v1", &layer);
    let (gated, _, _) = up.push_image("library/gated", "v1", b"gated layer");
    let feed = Receiver::start();
    let gate = Receiver::start();
    let hooks = format!(
        "[event_webhook.feed]\nurl = \"{}\"\n\
         events = [\"manifest.push\", \"manifest.pull\", \"tag.create\", \"blob.pull\"]\n\
         [event_webhook.gate]\nurl = \"{}\"\nevents = [\"manifest.push\"]\ndelivery = \"required\"\n\
         repository_filter = [\"up/library/gated\"]\nmax_retries = 0\n",
        feed.url("/feed"),
        gate.url("/gate")
    );
    let srv = Server::start_with(
        "",
        &mirror_config(&up.url(), "", "\"feed\", \"gate\"", &hooks),
    );
    let r = srv.get("/v2/library/app/manifests/v1");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = srv.get(&format!("/v2/library/app/blobs/{l}"));
    assert_eq!(r.status, 200);
    assert!(r.body == layer);
    let r = srv.get(&format!("/v2/library/app/blobs/{c}"));
    assert_eq!(r.status, 200);
    let got = feed.wait_for(WAIT, |g| g.len() >= 5);
    let got = events(&got);
    let find = |kind: &str, digest: &str| {
        got.iter()
            .filter(|v| v["kind"] == kind && v["digest"] == digest)
            .collect::<Vec<_>>()
    };
    let repo = "up/library/app";
    let pushed = find("manifest.push", &m);
    assert_eq!(pushed.len(), 1, "{got:#?}");
    assert_eq!(pushed[0]["actor"], serde_json::json!({"kind": "mirror"}));
    assert_eq!(pushed[0]["repository"], repo);
    assert_eq!(pushed[0]["tag"], "v1");
    let tagged = find("tag.create", &m);
    assert_eq!(tagged.len(), 1, "{got:#?}");
    assert_eq!(tagged[0]["actor"]["kind"], "mirror");
    let pulled = find("manifest.pull", &m);
    assert_eq!(pulled.len(), 1, "{got:#?}");
    assert_eq!(pulled[0]["actor"]["kind"], "client");
    let blob = find("blob.pull", &l);
    assert_eq!(blob.len(), 1, "streamed blob {l}: {got:#?}");
    assert_eq!(blob[0]["actor"]["kind"], "client");
    assert_eq!(blob[0]["actor"]["ip"], "127.0.0.1");
    assert_eq!(blob[0]["size"], layer.len());
    assert_eq!(blob[0]["repository"], repo);
    assert_eq!(find("blob.pull", &c).len(), 1, "{got:#?}");
    // Served from the cache now: a pull, no second push.
    assert_eq!(
        srv.get(&format!("/v2/library/app/manifests/{m}")).status,
        200
    );
    let got = events(&feed.wait_for(WAIT, |g| g.len() >= 6));
    let pushes = got.iter().filter(|v| v["kind"] == "manifest.push").count();
    assert_eq!(pushes, 1, "{got:#?}");
    assert!(
        gate.received().is_empty(),
        "the filter keeps library/app out"
    );

    // A required webhook refuses the fill of library/gated.
    gate.answer(500);
    let r = srv.get("/v2/library/gated/manifests/v1");
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(gate.received().len(), 1);
    assert_eq!(gate.received()[0].json()["digest"], gated.as_str());
    assert_eq!(gate.received()[0].json()["actor"]["kind"], "mirror");
    up.stop();
    // Nothing stored: with the upstream gone there is nothing to serve.
    let r = srv.get(&format!("/v2/library/gated/manifests/{gated}"));
    assert_ne!(r.status, 200);
    up.restart();
    gate.answer(204);
    let r = srv.get("/v2/library/gated/manifests/v1");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(gate.received().len(), 2);
}

/// A TCP proxy to `to` that sends the upstream's answers at about 1.6 MB/s, so a fetch of a
/// few MiB is still running seconds after it started.
fn slow_proxy(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
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
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if client.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

/// Reads a response head from `s`: (status, Content-Length).
fn read_head(s: &mut TcpStream) -> (u16, usize) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed in the head"
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    (status, len)
}

/// SIGHUP changes a mirror's upstream and makes it writable, with no restart: new requests
/// reach the new upstream and may push, while a blob fetch from the old upstream that was
/// in flight during the reload finishes, whole and verified, for its client.
#[test]
#[cfg_attr(
    origin_no_upstream,
    ignore = "needs docker-registry (apt-get install docker-registry)"
)]
fn mirror_settings_reload_and_fetches_in_flight_finish() {
    let Some(old_up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let Some(new_up) = Upstream::start(UpstreamAuth::None) else {
        return;
    };
    let big = bytes(2, 4 * 1024 * 1024);
    let (_, _, big_digest) = old_up.push_image("library/app", "v1", &big);
    let (moved, _, _) = new_up.push_image("library/app", "v2", b"only on the new upstream");
    let slow = format!("http://{}", slow_proxy(old_up.addr()));
    let dir = TempDir::new("mirror-reload");
    let base = config_text(&dir.0, "", "");
    let mut srv = Server::start_config(
        dir,
        &format!("{base}{}", mirror_config(&slow, "", "", "")),
        &[],
    );
    assert_eq!(
        srv.request("POST", "/v2/library/app/blobs/uploads/", &[], b"")
            .status,
        405,
        "read-only before the reload"
    );
    // A cold pull of the big blob, through the slow proxy: head and first bytes arrive.
    let mut pull = srv.connect();
    send(
        &mut pull,
        "GET",
        &format!("/v2/library/app/blobs/{big_digest}"),
        &[],
        b"",
    );
    let (status, len) = read_head(&mut pull);
    assert_eq!((status, len), (200, big.len()));
    let mut got = vec![0u8; 64 * 1024];
    pull.read_exact(&mut got).unwrap();

    let reloaded = mirror_config(&new_up.url(), "writable = true", "", "");
    std::fs::write(&srv.config_path, format!("{base}{reloaded}")).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", WAIT)
        .expect("reload logged");
    assert!(
        !srv.seen.iter().any(|l| l.contains("only after a restart")),
        "{:#?}",
        srv.seen
    );
    // New requests: the new upstream, and pushes allowed.
    let r = srv.get("/v2/library/app/manifests/v2");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("docker-content-digest"), Some(moved.as_str()));
    assert_eq!(
        srv.request("POST", "/v2/library/app/blobs/uploads/", &[], b"")
            .status,
        202
    );
    // The fetch in flight finished on the old upstream, whole.
    let mut rest = vec![0u8; big.len() - got.len()];
    pull.read_exact(&mut rest)
        .expect("the transfer in flight was cut");
    got.extend_from_slice(&rest);
    assert!(got == big, "the transfer in flight was corrupted");
    let again = srv.get(&format!("/v2/library/app/blobs/{big_digest}"));
    assert_eq!(again.status, 200);
    assert!(again.body == big);
    assert_eq!(
        old_up.count_requests("GET", &format!("/blobs/{big_digest}")),
        1
    );
}
