//! Operations: metrics after a scripted workload, health endpoints, a separate ops listener,
//! and live reload on SIGHUP (identities, policies, TLS certificates).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn scrape(srv: &Server) -> String {
    let r = srv.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    String::from_utf8(r.body).unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    let out = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(raw.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    format!("Basic {}", String::from_utf8(out.stdout).unwrap().trim())
}

/// A scripted workload moves each counter by exactly what it did.
#[test]
fn metrics_count_a_scripted_workload() {
    let ident = format!(
        "[identity.u]\nusername = \"u\"\npassword = \"{}\"\n",
        hash_password("pw")
    );
    let repos = "[[repository]]\nnamespace = \"\"\npolicy_default_allow = true\npolicies = ['request.namespace == \"secret/app\"']\n";
    let srv = Server::start_with("", &format!("{repos}\n{ident}"));
    let before = scrape(&srv);
    // Every scrape but the last one read is counted in the sent bytes the last one shows.
    let (mut scraped, mut scrapes) = (before.len(), 1);
    let data = bytes(1, 10_000);
    let d = srv.push_blob("m/app", &data); // uploads 201, 10000 bytes in
    for _ in 0..3 {
        assert_eq!(srv.get(&format!("/v2/m/app/blobs/{d}")).status, 200); // blobs 200, 30000 out
    }
    assert_eq!(srv.get("/v2/m/app/manifests/nope").status, 404); // manifests 404
    assert_eq!(
        srv.request(
            "GET",
            "/v2/",
            &[("Authorization", &basic("u", "wrong"))],
            b""
        )
        .status,
        401
    );
    assert_eq!(srv.get("/v2/secret/app/tags/list").status, 401); // policy denial
    let loc = srv.start_upload("m/app"); // one open session
                                         // A request is counted once its response is written: let the last one land.
    let mut after = scrape(&srv);
    for _ in 0..50 {
        if metric(&after, "origin_upload_sessions_open")
            > metric(&before, "origin_upload_sessions_open")
            && metric(
                &after,
                "origin_http_requests_total{group=\"uploads\",status=\"202\"}",
            ) > metric(
                &before,
                "origin_http_requests_total{group=\"uploads\",status=\"202\"}",
            )
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        scraped += after.len();
        scrapes += 1;
        after = scrape(&srv);
    }
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(
        delta("origin_http_requests_total{group=\"uploads\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        delta("origin_http_requests_total{group=\"uploads\",status=\"202\"}"),
        1.0
    );
    assert_eq!(
        delta("origin_http_requests_total{group=\"blobs\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        delta("origin_http_requests_total{group=\"manifests\",status=\"404\"}"),
        1.0
    );
    assert_eq!(
        delta("origin_http_requests_total{group=\"base\",status=\"401\"}"),
        1.0
    );
    assert_eq!(
        delta("origin_http_request_duration_seconds_count{group=\"blobs\"}"),
        3.0
    );
    assert_eq!(delta("origin_auth_failures_total"), 1.0);
    assert_eq!(delta("origin_policy_denials_total"), 1.0);
    assert_eq!(delta("origin_upload_sessions_open"), 1.0);
    assert!(delta("origin_http_received_bytes_total") >= 10_000.0);
    // Blob bodies out: 3 x 10000, plus heads, the small JSON error bodies and the scrapes.
    let out = delta("origin_http_sent_bytes_total") - scraped as f64;
    let heads = 300.0 * scrapes as f64;
    assert!((30_000.0..34_000.0 + heads).contains(&out), "{out}");
    assert!(metric(&after, "origin_storage_blob_bytes") >= 10_000.0);
    assert_eq!(
        metric(&after, "origin_http_requests_in_flight"),
        1.0,
        "the scrape itself"
    );
    assert_eq!(srv.request("DELETE", &loc, &[], b"").status, 204);
    assert_eq!(
        metric(&scrape(&srv), "origin_upload_sessions_open"),
        metric(&before, "origin_upload_sessions_open")
    );
}

/// /healthz and /readyz on the main listener; /metrics only on the separate ops listener
/// when so configured.
#[test]
fn health_and_separate_ops_listener() {
    let extra =
        format!("{ALLOW_ALL}\n[metrics]\nlisten = \"127.0.0.1:0\"\nexpose_on_main = false\n");
    let mut srv = Server::start_with("", &extra);
    assert_eq!(srv.get("/healthz").status, 200);
    assert_eq!(srv.get("/readyz").status, 200);
    assert_eq!(srv.get("/metrics").status, 404);
    let line = srv
        .logs_until("ops endpoints listening on ", Duration::from_secs(5))
        .unwrap();
    let addr: std::net::SocketAddr = line
        .split("ops endpoints listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    send(&mut s, "GET", "/metrics", &[], b"");
    let r = read_response(&mut s, false).unwrap();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("origin_http_requests_total"));
    send(&mut s, "GET", "/v2/", &[], b"");
    assert_eq!(
        read_response(&mut s, false).unwrap().status,
        404,
        "registry API on the ops port"
    );
}

/// SIGHUP reloads identities and policies: the old password stops working, the new one
/// works, the new policy applies, and a connection opened before the reload is still served.
/// An invalid file on reload changes nothing.
#[test]
fn reload_changes_password_and_policy_keeps_connections() {
    let old_pw = hash_password("old-secret");
    let new_pw = hash_password("new-secret");
    let conf = |pw: &str, policy: &str| {
        format!(
            "[identity.alice]\nusername = \"alice\"\npassword = \"{pw}\"\n\
             [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\npolicies = ['{policy}']\n"
        )
    };
    let mut srv = Server::start_with("", &conf(&old_pw, "identity.username == \"alice\""));
    let old = basic("alice", "old-secret");
    let new = basic("alice", "new-secret");
    assert_eq!(
        srv.request("GET", "/v2/a/tags/list", &[("Authorization", &old)], b"")
            .status,
        404
    );
    // An open keep-alive connection, and an upload in progress on it.
    let mut open = srv.connect();
    send(
        &mut open,
        "POST",
        "/v2/a/blobs/uploads/",
        &[("Authorization", &old)],
        b"",
    );
    let r = read_response(&mut open, false).unwrap();
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    // Reload: new password, and a policy that also lets anyone read tags.
    let text = std::fs::read_to_string(&srv.config_path).unwrap();
    let (head, _) = text.split_once("[identity.alice]").unwrap();
    let reloaded = format!(
        "{head}{}",
        conf(
            &new_pw,
            "identity.username == \"alice\" || request.action == \"list-tags\""
        )
    );
    std::fs::write(&srv.config_path, reloaded).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload logged");
    assert_eq!(
        srv.request("GET", "/v2/", &[("Authorization", &old)], b"")
            .status,
        401
    );
    // (Repository "a" has an upload but no manifest, so it is not listed: a tag list that
    // is allowed answers 404 NAME_UNKNOWN, a refused one 401.)
    let allowed = |r: Resp| (r.status, r.error_code()) == (404, "NAME_UNKNOWN".to_string());
    assert!(allowed(srv.request(
        "GET",
        "/v2/a/tags/list",
        &[("Authorization", &new)],
        b""
    )));
    assert!(
        allowed(srv.get("/v2/a/tags/list")),
        "the new policy lets anonymous list tags"
    );
    assert_eq!(srv.get("/v2/a/manifests/x").status, 401, "but nothing else");
    // The connection opened before the reload is still served, with the new credentials.
    send(
        &mut open,
        "PATCH",
        &loc,
        &[("Authorization", &new)],
        b"chunk",
    );
    assert_eq!(read_response(&mut open, false).unwrap().status, 202);
    // An invalid configuration is rejected and changes nothing.
    let broken = std::fs::read_to_string(&srv.config_path)
        .unwrap()
        .replace("policies = ['", "policies = ['((");
    std::fs::write(&srv.config_path, broken).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("reload rejected", Duration::from_secs(10))
        .expect("rejection logged");
    assert!(allowed(srv.request(
        "GET",
        "/v2/a/tags/list",
        &[("Authorization", &new)],
        b""
    )));
    assert_eq!(
        srv.request("GET", "/v2/", &[("Authorization", &old)], b"")
            .status,
        401
    );
}

/// SIGHUP with a rotated certificate: new connections get the new one, an open TLS
/// connection keeps working; changing the port is reported as needing a restart.
#[test]
fn reload_rotates_tls_certificate() {
    let dir = TempDir::new("rotate");
    let first = dir.0.join("first");
    let second = dir.0.join("second");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    let pki1 = common::pki::Pki::new(&first, &[]);
    let pki2 = common::pki::Pki::new(&second, &[]);
    let text = config_text(
        &dir.0,
        "",
        &format!("{ALLOW_ALL}\n{}", pki1.tls_section(false, None)),
    );
    let mut srv = Server::start_config(dir, &text, &[]);
    let v = &[&rustls::version::TLS13][..];
    let addr = srv.addr;
    let connect = |pki: &common::pki::Pki| {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(None, v), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        send(&mut tls, "GET", "/v2/", &[], b"");
        let _ = tls.flush();
        (read_response(&mut tls, false).map(|r| r.status), tls)
    };
    let (status, mut old_conn) = connect(&pki1);
    assert_eq!(status, Some(200));
    let rotated = std::fs::read_to_string(&srv.config_path)
        .unwrap()
        .replace(
            pki1.server_cert.to_str().unwrap(),
            pki2.server_cert.to_str().unwrap(),
        )
        .replace(
            pki1.server_key.to_str().unwrap(),
            pki2.server_key.to_str().unwrap(),
        )
        .replace("port = 0", "port = 1");
    std::fs::write(&srv.config_path, rotated).unwrap();
    srv.signal(libc::SIGHUP);
    srv.logs_until("configuration reloaded", Duration::from_secs(10))
        .unwrap();
    assert!(srv
        .logs_until("server.port changed", Duration::from_secs(2))
        .is_some());
    assert_eq!(
        connect(&pki2).0,
        Some(200),
        "new connections use the new certificate"
    );
    assert_eq!(
        connect(&pki1).0,
        None,
        "the old CA no longer verifies the server"
    );
    send(&mut old_conn, "GET", "/v2/", &[], b"");
    let _ = old_conn.flush();
    assert_eq!(
        read_response(&mut old_conn, false).map(|r| r.status),
        Some(200)
    );
}

/// The systemd unit passes `systemd-analyze verify`, and the server sends READY=1 when it
/// listens, RELOADING=1 then READY=1 around a reload, and STOPPING=1 on SIGTERM.
#[test]
fn systemd_unit_and_readiness_notification() {
    let dir = TempDir::new("systemd");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/origin.service"
    ))
    .unwrap()
    .replace("/usr/local/bin/origin", env!("CARGO_BIN_EXE_origin"));
    let unit_path = dir.0.join("origin.service");
    std::fs::write(&unit_path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze (package systemd) is needed");
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "Type=notify",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=origin",
    ] {
        assert!(
            std::fs::read_to_string(&unit_path).unwrap().contains(key),
            "{key}"
        );
    }
    let sock_path = dir.0.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let text = config_text(&dir.0, "", ALLOW_ALL);
    let cfg = dir.0.join("config.toml");
    std::fs::write(&cfg, &text).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_origin"));
    cmd.args(["serve", "-c"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path);
    let mut srv = Server::spawn(cmd, TempDir::new("systemd-srv"), cfg);
    let mut buf = [0u8; 256];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert_eq!(next(), "READY=1");
    srv.signal(libc::SIGHUP);
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    srv.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

/// `serve --bind-address/--port` and `ORIGIN_BIND_ADDRESS`/`ORIGIN_PORT` override the file: a
/// file naming an address this machine does not have (TEST-NET-1) starts anyway, on the
/// address and port given; the startup log names the configuration file by its path.
#[test]
fn serve_flags_and_environment_override_the_file() {
    for via_env in [false, true] {
        let dir = TempDir::new("override");
        let text = config_text(&dir.0, "", ALLOW_ALL)
            .replace(
                "bind_address = \"127.0.0.1\"",
                "bind_address = \"192.0.2.1\"",
            )
            .replace("port = 0", "port = 1");
        let config_path = dir.0.join("config.toml");
        std::fs::write(&config_path, &text).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_origin"));
        cmd.arg("serve").arg("-c").arg(&config_path);
        if via_env {
            cmd.env("ORIGIN_BIND_ADDRESS", "127.0.0.1")
                .env("ORIGIN_PORT", "0");
        } else {
            cmd.args(["--bind-address", "127.0.0.1", "--port", "0"]);
        }
        let mut srv = Server::spawn(cmd, dir, config_path.clone());
        assert_eq!(srv.get("/v2/").status, 200, "via_env={via_env}");
        let line = srv
            .logs_until("origin listening on ", Duration::from_secs(1))
            .unwrap();
        assert!(
            line.contains(&format!("config={}", config_path.display())),
            "{line}"
        );
    }
}

/// check-config prints the file's path (not a debug form), warns when the configuration
/// denies everything, and says which file it checked.
#[test]
fn check_config_prints_paths_and_warns_when_everything_is_denied() {
    let dir = TempDir::new("checkwarn");
    let path = dir.0.join("closed.toml");
    std::fs::write(&path, "[storage.fs]\nroot_dir = \"/tmp/x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("configuration OK ({})", path.display()).as_str())
    );
    let restart = lines.next().unwrap_or_default();
    assert!(restart.contains("[repository.mirror]"), "{restart}");
    assert!(
        stderr.contains("warning: no [[repository]] entry"),
        "{stderr}"
    );
}

/// Reloads that remove an identity, racing requests with it on every worker: once each
/// reload has been published, no worker accepts the removed identity (fresh connections,
/// which the kernel spreads over the workers, are all refused).
#[test]
fn reload_removing_an_identity_takes_effect_on_every_worker() {
    let alice_pw = hash_password("alice-pw");
    let bob_pw = hash_password("bob-pw");
    let conf = |with_bob: bool| {
        let bob = if with_bob {
            format!("[identity.bob]\nusername = \"bob\"\npassword = \"{bob_pw}\"\n")
        } else {
            String::new()
        };
        format!(
            "[identity.alice]\nusername = \"alice\"\npassword = \"{alice_pw}\"\n{bob}\
             [[repository]]\nnamespace = \"\"\npolicy_default_allow = false\n\
             policies = ['identity.username != \"\"']\n"
        )
    };
    let mut srv = Server::start_with("", &conf(true));
    let bob = basic("bob", "bob-pw");
    let head = {
        let text = std::fs::read_to_string(&srv.config_path).unwrap();
        text.split_once("[identity.alice]").unwrap().0.to_string()
    };
    assert_eq!(
        srv.request("GET", "/v2/", &[("Authorization", &bob)], b"")
            .status,
        200
    );
    // Requests with bob's credentials on both workers all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammers: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop, bob) = (srv.addr, stop.clone(), bob.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    for _ in 0..20 {
                        send(&mut s, "GET", "/v2/", &[("Authorization", &bob)], b"");
                        if read_response(&mut s, false).is_none() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    let mut reloads = 0;
    for round in 0..8 {
        for with_bob in [true, false] {
            std::fs::write(&srv.config_path, format!("{head}{}", conf(with_bob))).unwrap();
            srv.signal(libc::SIGHUP);
            reloads += 1;
            assert!(
                srv.logs_count_until("configuration reloaded", reloads, Duration::from_secs(20)),
                "reload {reloads} not logged"
            );
        }
        for _ in 0..12 {
            let r = srv.request("GET", "/v2/", &[("Authorization", &bob)], b"");
            // Refused: 401, or 429 once the failures of the hammering threads add up.
            assert!(
                matches!(r.status, 401 | 429),
                "round {round}: a worker still accepts bob ({})",
                r.status
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
}

/// `origin --version` says the version, the git revision and the build date, and /metrics
/// carries the same stamp as `origin_build_info` (what a release is identified by).
#[test]
fn version_and_build_info_name_the_same_build() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    // "origin 0.1.0 (revision 0123456789ab, built 2026-01-31T12:00:00Z)"
    let rest = stdout
        .trim()
        .strip_prefix(&format!("origin {version} (revision "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let (revision, rest) = rest.split_once(", built ").unwrap();
    let date = rest.strip_suffix(')').unwrap();
    assert!(!revision.is_empty() && !revision.contains(' '), "{stdout}");
    assert!(
        date == "unknown" || (date.len() == 20 && date.ends_with('Z') && &date[10..11] == "T"),
        "{stdout}"
    );
    let srv = Server::start();
    let text = scrape(&srv);
    let want = format!(
        "origin_build_info{{version=\"{version}\",revision=\"{revision}\",build_date=\"{date}\"}} 1"
    );
    assert!(text.lines().any(|l| l == want), "{want} not in\n{text}");
}
