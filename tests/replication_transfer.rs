//! How replication moves bytes: `max_bytes_per_second` holds over a 20 s transfer shared by
//! two copies, a blob half-sent when the source is killed is resumed (not sent again) after
//! the restart, and a target over TLS with Basic auth (CNCF distribution, `ca_bundle`) gets
//! an index with its referrer, while a wrong CA fails the job with a clear error; two jobs
//! holding one manifest send it once.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::replication::*;
use common::upstream::{basic_header, htpasswd_line};
use common::*;

const MIB: usize = 1024 * 1024;

/// A TCP proxy in front of a target that counts the bytes sent to it and notes when the
/// first one went through.
struct Proxy {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    first: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(to: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            first: Arc::default(),
            stop: Arc::default(),
        };
        let (received, first, stop) = (p.received.clone(), p.first.clone(), p.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (received, first) = (received.clone(), first.clone());
                std::thread::spawn(move || pipe(client, server, Some((received, first))));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        p
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    fn first_byte(&self) -> Option<Instant> {
        *self.first.lock().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Count = (Arc<AtomicU64>, Arc<Mutex<Option<Instant>>>);

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Count>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((received, first)) = &count {
            first.lock().unwrap().get_or_insert_with(Instant::now);
            received.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn metric(srv: &Server, line: &str) -> Option<u64> {
    let text = String::from_utf8(srv.get("/metrics").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().unwrap()))
}

fn has_manifest(peer: &Server, repo: &str, reference: &str) -> bool {
    let path = format!("/v2/{repo}/manifests/{reference}");
    peer.request("HEAD", &path, &[("Accept", ACCEPT)], b"")
        .status
        == 200
}

/// Two images of 20 MiB each, replicated at once to a target limited to 2 MiB/s: the two
/// copies share the node's budget, so the 40 MiB take about 20 s, never less than the limit
/// allows (within 10 %: the bucket's burst is a quarter second).
#[test]
fn the_bandwidth_limit_holds_over_a_20_second_transfer_shared_by_two_copies() {
    const LIMIT: u64 = 2 * 1024 * 1024;
    let peer = Server::start();
    let proxy = Proxy::start(peer.addr);
    let targets = format!(
        "[replication.peer]\nurl = \"http://{}\"\nmax_bytes_per_second = {LIMIT}\n",
        proxy.addr
    );
    let src = source(&["peer"], &targets);
    let layers = [bytes(1, 20 * MIB), bytes(2, 20 * MIB + 3)];
    let pushed: Vec<String> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            src.push_image("bw/app", &format!("v{i}"), std::slice::from_ref(l))
                .1
        })
        .collect();
    wait_until(
        "both images at the target",
        Duration::from_secs(120),
        || {
            pushed.iter().all(|d| has_manifest(&peer, "bw/app", d))
                && (0..2).all(|i| has_manifest(&peer, "bw/app", &format!("v{i}")))
        },
    );
    let elapsed = proxy.first_byte().expect("bytes went through").elapsed();
    let received = proxy.received();
    let rate = received as f64 / elapsed.as_secs_f64();
    eprintln!(
        "sent {received} bytes in {:.2} s: {:.0} bytes/s ({:.3} of the limit)",
        elapsed.as_secs_f64(),
        rate,
        rate / LIMIT as f64
    );
    assert!(received >= 40 * MIB as u64, "{received}");
    assert!(
        rate <= LIMIT as f64 * 1.10,
        "{rate:.0} bytes/s over a limit of {LIMIT}"
    );
    for l in &layers {
        let d = digest(l);
        let r = peer.get(&format!("/v2/bw/app/blobs/{d}"));
        assert_eq!((r.status, digest(&r.body)), (200, d));
    }
    // The two layers and the config the images share.
    assert_eq!(
        metric(&src, "origin_replication_blobs_sent_total{target=\"peer\"}"),
        Some(3)
    );
}

/// The source is killed (SIGKILL) in the middle of a 32 MiB blob; after the restart the job
/// (taken over once its lease expires) asks the target where the upload stands and sends
/// only the rest: the target gets the blob byte-identical and well under twice its bytes.
#[test]
fn a_blob_half_sent_when_the_source_is_killed_is_resumed_after_the_restart() {
    let peer = Server::start();
    let proxy = Proxy::start(peer.addr);
    let targets = format!(
        "[replication.peer]\nurl = \"http://{}\"\nmax_bytes_per_second = {}\n",
        proxy.addr,
        4 * MIB
    );
    let src = source(&["peer"], &targets);
    let blob = bytes(7, 32 * MIB + 5);
    let (_, d) = src.push_image("resume/app", "v1", std::slice::from_ref(&blob));
    // Two chunks (8 MiB each) acknowledged and a third on its way: kill.
    wait_until("20 MiB at the target", Duration::from_secs(60), || {
        proxy.received() >= 20 * MIB as u64
    });
    let src = src.restart();
    let at_kill = proxy.received();
    assert!(at_kill < blob.len() as u64, "the kill came too late");
    assert!(!has_manifest(&peer, "resume/app", "v1"));
    // The dead process's claim holds the job until its lease (two minutes) expires.
    src.advance_clock(Duration::from_secs(130));
    wait_until("the image at the target", Duration::from_secs(90), || {
        has_manifest(&peer, "resume/app", "v1") && has_manifest(&peer, "resume/app", &d)
    });
    let layer = digest(&blob);
    let r = peer.get(&format!("/v2/resume/app/blobs/{layer}"));
    assert_eq!((r.status, digest(&r.body)), (200, layer));
    let received = proxy.received();
    eprintln!(
        "blob {} bytes; {at_kill} bytes received before the kill, {received} in all ({:.2}x)",
        blob.len(),
        received as f64 / blob.len() as f64
    );
    assert!(
        received < blob.len() as u64 * 3 / 2,
        "{received} bytes received for a blob of {}",
        blob.len()
    );
    assert_eq!(
        metric(
            &src,
            "origin_replication_blobs_resumed_total{target=\"peer\"}"
        ),
        Some(1)
    );
    wait_until("an empty queue", Duration::from_secs(30), || {
        src.cli(&["replication", "status"])
            .1
            .contains("peer: pending 0")
    });
}

/// CNCF distribution serving TLS with htpasswd, on a fresh port.
struct TlsDistribution {
    addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

impl TlsDistribution {
    fn start(pki: &Pki, user: &str, password: &str) -> Option<TlsDistribution> {
        let bin = PathBuf::from("/usr/bin/docker-registry");
        if !bin.is_file() {
            assert!(
                std::env::var_os("ORIGIN_REQUIRE_UPSTREAM").is_none(),
                "docker-registry not installed and ORIGIN_REQUIRE_UPSTREAM is set"
            );
            eprintln!("skipping: docker-registry not installed");
            return None;
        }
        let dir = TempDir::new("tls-dist");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let htpasswd = dir.0.join("htpasswd");
        std::fs::write(&htpasswd, format!("{}\n", htpasswd_line(user, password))).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: \"{}\"\n\
             http:\n  addr: {addr}\n  secret: origin-test\n  tls:\n    certificate: \"{}\"\n    key: \"{}\"\n\
             auth:\n  htpasswd:\n    realm: test\n    path: \"{}\"\n",
            dir.0.join("data").display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            htpasswd.display()
        );
        let config_path = dir.0.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.0.join("registry.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("serve").arg(&config_path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("start docker-registry");
        let d = TlsDistribution {
            addr,
            child,
            _dir: dir,
        };
        wait_until("distribution over TLS", Duration::from_secs(20), || {
            d.try_request(&pki.ca, "GET", "/v2/", None)
                .is_some_and(|r| r.status == 401)
        });
        Some(d)
    }

    fn try_request(&self, ca: &Path, method: &str, path: &str, auth: Option<&str>) -> Option<Resp> {
        let tcp = TcpStream::connect(self.addr).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let config = client_trusting(ca);
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(config, name).ok()?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut headers = vec![("Accept", ACCEPT), ("Connection", "close")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        send(&mut tls, method, path, &headers, b"");
        tls.flush().ok()?;
        read_response(&mut tls, method == "HEAD")
    }
}

impl Drop for TlsDistribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_trusting(ca: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Pushes an image tagged `tag`, an index naming it, and a signature whose subject is the
/// index; returns (index bytes, index digest, signature bytes, signature digest).
fn push_index_with_signature(src: &Server, repo: &str, tag: &str) -> [(Vec<u8>, String); 2] {
    let (m, md) = src.push_image(repo, &format!("{tag}-amd64"), &[bytes(30, 5000)]);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{md}\",\"size\":{},\
         \"platform\":{{\"architecture\":\"amd64\",\"os\":\"linux\"}}}}]}}",
        m.len()
    );
    let index_d = digest(index.as_bytes());
    let r = src.put_manifest(repo, tag, OCI_INDEX, index.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let empty = src.push_blob(repo, b"{}");
    let payload =
        format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{index_d}\"}}}}}}");
    let payload_d = src.push_blob(repo, payload.as_bytes());
    let sig = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
         \"artifactType\":\"application/vnd.dev.cosign.artifact.sig.v1+json\",\
         \"config\":{{\"mediaType\":\"application/vnd.oci.empty.v1+json\",\"digest\":\"{empty}\",\"size\":2}},\
         \"layers\":[{{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"digest\":\"{payload_d}\",\"size\":{}}}],\
         \"subject\":{{\"mediaType\":\"{OCI_INDEX}\",\"digest\":\"{index_d}\",\"size\":{}}}}}",
        payload.len(),
        index.len()
    );
    let sig_d = digest(sig.as_bytes());
    let r = src.put_manifest(repo, &sig_d, OCI_MANIFEST, sig.as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    [(index.into_bytes(), index_d), (sig.into_bytes(), sig_d)]
}

/// distribution 2.8.2 over TLS with Basic auth: a source trusting its CA (`ca_bundle`)
/// replicates an index with a signature referrer, byte-identical; a source trusting another
/// CA fails the job, and `origin replication status` says why.
#[test]
fn a_tls_target_with_basic_auth_gets_an_index_with_its_referrer_and_a_wrong_ca_fails_clearly() {
    let dir = TempDir::new("tls-pki");
    let pki = Pki::new(&dir.0, &[]);
    let Some(dist) = TlsDistribution::start(&pki, "robot", "s3cret") else {
        return;
    };
    let target = |ca: &Path| {
        format!(
            "[replication.tls]\nurl = \"https://127.0.0.1:{}\"\nusername = \"robot\"\n\
             password = \"s3cret\"\nca_bundle = \"{}\"\nmax_retries = 0\n",
            dist.addr.port(),
            ca.display()
        )
    };
    let src = source(&["tls"], &target(&pki.ca));
    let [index, sig] = push_index_with_signature(&src, "secure/app", "v1");
    let auth = basic_header("robot", "s3cret");
    let get = |path: &str| {
        dist.try_request(&pki.ca, "GET", path, Some(&auth))
            .expect("an answer over TLS")
    };
    let arrived = || {
        get("/v2/secure/app/manifests/v1").status == 200
            && get(&format!("/v2/secure/app/manifests/{}", sig.1)).status == 200
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !arrived() {
        assert!(
            Instant::now() < deadline,
            "the index and its signature did not arrive: {}",
            src.cli(&["replication", "status"]).1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get("/v2/secure/app/manifests/v1").body, index.0);
    assert_eq!(
        get(&format!("/v2/secure/app/manifests/{}", index.1)).body,
        index.0
    );
    assert_eq!(
        get(&format!("/v2/secure/app/manifests/{}", sig.1)).body,
        sig.0
    );
    // Without credentials distribution refuses: they were needed, and sent.
    let anonymous = dist.try_request(&pki.ca, "GET", "/v2/secure/app/manifests/v1", None);
    assert_eq!(anonymous.map(|r| r.status), Some(401));

    // A source that trusts another CA: the job fails (no retries configured) and the status
    // names the certificate problem.
    let other_dir = TempDir::new("tls-pki-other");
    let other = Pki::new(&other_dir.0, &[]);
    let bad = source(&["tls"], &target(&other.ca));
    bad.push_image("secure/other", "v1", &[bytes(31, 3000)]);
    let mut out = String::new();
    wait_until(
        "the failed job in the status",
        Duration::from_secs(60),
        || {
            out = bad.cli(&["replication", "status"]).1;
            out.contains("tls: pending 0") && out.contains("failed 1")
        },
    );
    eprintln!("{out}");
    let failed = out
        .lines()
        .find(|l| l.contains("failed: secure/other:v1"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        failed.to_ascii_lowercase().contains("certificate"),
        "the error should say the certificate is not trusted: {failed}"
    );
    assert_eq!(
        dist.try_request(&pki.ca, "GET", "/v2/secure/other/manifests/v1", Some(&auth))
            .map(|r| r.status),
        Some(404)
    );
}

/// `check-config` names a `max_bytes_per_second` below the minimum; a reload that sets a
/// valid one paces the next transfer.
#[test]
fn the_limit_is_checked_by_check_config_and_reloads_with_the_rest() {
    const LIMIT: u64 = 1024 * 1024;
    let peer = Server::start();
    let proxy = Proxy::start(peer.addr);
    let mut src = source(
        &["peer"],
        &format!("[replication.peer]\nurl = \"http://{}\"\n", proxy.addr),
    );
    let text = std::fs::read_to_string(&src.config_path).unwrap();
    let with = |limit: u64| {
        text.replace(
            "[replication.peer]\n",
            &format!("[replication.peer]\nmax_bytes_per_second = {limit}\n"),
        )
    };
    std::fs::write(&src.config_path, with(1000)).unwrap();
    let (code, out) = src.cli(&["check-config"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("replication.peer.max_bytes_per_second"),
        "{out}"
    );
    std::fs::write(&src.config_path, with(LIMIT)).unwrap();
    assert_eq!(src.cli(&["check-config"]).0, 0);
    src.signal(libc::SIGHUP);
    src.logs_until("configuration reloaded", Duration::from_secs(10))
        .expect("reload");
    let layer = bytes(40, 6 * MIB);
    src.push_image("reload/app", "v1", &[layer]);
    wait_until("the image at the target", Duration::from_secs(60), || {
        has_manifest(&peer, "reload/app", "v1")
    });
    let elapsed = proxy.first_byte().expect("bytes went through").elapsed();
    let rate = proxy.received() as f64 / elapsed.as_secs_f64();
    eprintln!("after the reload: {rate:.0} bytes/s under a limit of {LIMIT}");
    assert!(rate <= LIMIT as f64 * 1.10, "{rate:.0} bytes/s");
}

/// An image and the index naming it, replicated at once (two jobs; the image's layer paced
/// to two seconds, so the index's job finds the image's manifest missing before either job
/// has sent it): the target gets that manifest once. Two PUTs of one manifest at once made
/// distribution 2.8, whose filesystem driver rewrites a link in place, refuse the index
/// naming it (`DIGEST_INVALID` and `MANIFEST_BLOB_UNKNOWN` for the image).
#[test]
fn an_image_and_the_index_naming_it_replicated_at_once_send_its_manifest_once() {
    let peer = Server::start();
    let targets = format!(
        "[replication.peer]\nurl = \"http://{}\"\nmax_bytes_per_second = {}\nconcurrency = 4\n",
        peer.addr,
        64 * 1024
    );
    let src = source(&["peer"], &targets);
    let (m, md) = src.push_image("pair/app", "v1-amd64", &[bytes(31, 128 * 1024)]);
    let index = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_INDEX}\",\"manifests\":[\
         {{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{md}\",\"size\":{}}}]}}",
        m.len()
    );
    let r = src.put_manifest("pair/app", "v1", OCI_INDEX, index.as_bytes());
    assert_eq!(r.status, 201);
    let succeeded = "origin_replication_jobs_succeeded_total{target=\"peer\"}";
    wait_until("both jobs done", Duration::from_secs(60), || {
        metric(&src, succeeded) == Some(2)
    });
    assert!(has_manifest(&peer, "pair/app", "v1"));
    assert!(has_manifest(&peer, "pair/app", &md));
    // The image by digest and by tag, the index by digest and by tag: four writes, the
    // image's manifest not twice.
    let sent = "origin_replication_manifests_sent_total{target=\"peer\"}";
    assert_eq!(metric(&src, sent), Some(4));
}
