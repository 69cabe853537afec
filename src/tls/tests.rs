use super::*;

use std::path::PathBuf;

use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::ClientConfig;

/// A CA with a server and a client certificate, another CA with its own client, all as PEM
/// files in a temporary directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
    rogue_client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    dn: &[(DnType, &str)],
    usage: ExtendedKeyUsagePurpose,
) -> (rcgen::Certificate, KeyPair) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("origin-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_cert, issuer) = ca("Origin Test CA");
        let (server, server_key) = leaf(
            &issuer,
            &["localhost"],
            &[(DnType::CommonName, "localhost")],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client, client_key) = leaf(
            &issuer,
            &[],
            &[
                (DnType::CommonName, "alice"),
                (DnType::OrganizationName, "ops"),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (_, rogue_issuer) = ca("Rogue CA");
        let (rogue, rogue_key) = leaf(
            &rogue_issuer,
            &[],
            &[
                (DnType::CommonName, "alice"),
                (DnType::OrganizationName, "ops"),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        // The bundle holds the leaf and its CA, as a real chain file would.
        let bundle = format!("{}{}", server.pem(), ca_cert.pem());
        std::fs::write(dir.join("server.pem"), bundle).unwrap();
        std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca: ca_cert,
            client: (client.der().clone(), private_key(&client_key)),
            rogue_client: (rogue.der().clone(), private_key(&rogue_key)),
        }
    }

    fn config(&self, client_ca: bool, mode: Option<ClientCertificate>) -> TlsConfig {
        TlsConfig {
            server_certificate_bundle: self.dir.join("server.pem"),
            server_private_key: self.dir.join("server.key"),
            client_ca_bundle: client_ca.then(|| self.dir.join("ca.pem")),
            client_certificate: mode,
        }
    }

    fn client(
        &self,
        cert: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some((c, k)) => builder
                .with_client_auth_cert(vec![c.clone()], k.clone_key())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// What the server saw: its peer's identity and the bytes echoed back.
type ServerResult = io::Result<(PeerIdentity, usize)>;
/// What the client got: the echoed bytes and the negotiated ALPN protocol.
type ClientResult = io::Result<(Vec<u8>, Option<Vec<u8>>)>;

/// Runs one connection over 127.0.0.1: the server accepts with [`accept`] and echoes
/// `payload_bytes`; the client connects through compio-tls, sends them and reads them back.
fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    payload_bytes: usize,
) -> (ServerResult, ClientResult) {
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = compio::runtime::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let (mut tls, peer) = accept(&server, tcp, Duration::from_secs(10)).await?;
            let BufResult(res, data) = tls.read_exact(Vec::with_capacity(payload_bytes)).await;
            res?;
            let BufResult(res, _) = tls.write_all(data).await;
            res?;
            tls.shutdown().await?;
            Ok((peer, payload_bytes))
        });
        let payload: Vec<u8> = (0..payload_bytes).map(|i| (i % 251) as u8).collect();
        let client_side = async {
            let tcp = compio::net::TcpStream::connect(addr).await?;
            let connector = compio_tls::TlsConnector::from(client);
            let mut tls = connector.connect("localhost", tcp).await?;
            let alpn = tls.negotiated_alpn().map(|a| a.to_vec());
            let BufResult(res, _) = tls.write_all(payload.clone()).await;
            res?;
            tls.flush().await?;
            let BufResult(res, back) = tls.read_exact(Vec::with_capacity(payload_bytes)).await;
            res?;
            // After the echo the server closes cleanly: the next read is EOF.
            let BufResult(res, _) = tls.read(Vec::with_capacity(16)).await;
            assert_eq!(res?, 0);
            Ok::<_, io::Error>((back, alpn))
        };
        let client_result = compio::time::timeout(Duration::from_secs(20), client_side)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out")));
        let server_result = compio::time::timeout(Duration::from_secs(20), server_task)
            .await
            .expect("server timed out")
            .expect("server task panicked");
        if let Ok((back, _)) = &client_result {
            assert!(back == &payload, "echo differs");
        }
        (server_result, client_result)
    })
}

/// A valid client certificate: the handshake succeeds with ALPN http/1.1, the subject's CN
/// and O come out, and data flows both ways (TLS 1.3 and 1.2).
#[test]
fn valid_client_certificate_gives_identity() {
    let pki = Pki::new("valid");
    let server = server_config(&pki.config(true, None)).unwrap();
    for versions in [ALL_VERSIONS, &[&rustls::version::TLS12][..]] {
        let client = pki.client(Some(&pki.client), versions);
        let (s, c) = exchange(server.clone(), client, 1 << 20);
        let (peer, _) = s.unwrap();
        assert_eq!(peer.common_names, ["alice"]);
        assert_eq!(peer.organizations, ["ops"]);
        let (_, alpn) = c.unwrap();
        assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));
    }
}

/// A client certificate from an unknown CA is refused by the server.
#[test]
fn unknown_ca_is_refused() {
    let pki = Pki::new("rogue");
    let server = server_config(&pki.config(true, None)).unwrap();
    let (s, c) = exchange(
        server,
        pki.client(Some(&pki.rogue_client), ALL_VERSIONS),
        16,
    );
    let e = s.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(c.is_err());
}

/// Without a certificate, a server that requires one refuses; an optional one accepts with
/// an empty identity.
#[test]
fn missing_certificate_required_vs_optional() {
    let pki = Pki::new("missing");
    let required = server_config(&pki.config(true, Some(ClientCertificate::Required))).unwrap();
    let (s, c) = exchange(required, pki.client(None, ALL_VERSIONS), 16);
    assert_eq!(s.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(c.is_err());

    let optional = server_config(&pki.config(true, Some(ClientCertificate::Optional))).unwrap();
    let (s, c) = exchange(optional.clone(), pki.client(None, ALL_VERSIONS), 16);
    assert_eq!(s.unwrap().0, PeerIdentity::default());
    c.unwrap();
    // A good certificate is still read when optional.
    let (s, _) = exchange(optional, pki.client(Some(&pki.client), ALL_VERSIONS), 16);
    assert_eq!(s.unwrap().0.common_names, ["alice"]);

    // The default with a client CA is optional: no certificate is accepted, a good one is
    // read, and one from an unknown CA still fails the handshake.
    let default = server_config(&pki.config(true, None)).unwrap();
    let (s, c) = exchange(default.clone(), pki.client(None, ALL_VERSIONS), 16);
    assert_eq!(s.unwrap().0, PeerIdentity::default());
    c.unwrap();
    let (s, _) = exchange(
        default.clone(),
        pki.client(Some(&pki.client), ALL_VERSIONS),
        16,
    );
    assert_eq!(s.unwrap().0.common_names, ["alice"]);
    let (s, c) = exchange(
        default,
        pki.client(Some(&pki.rogue_client), ALL_VERSIONS),
        16,
    );
    assert_eq!(s.unwrap_err().kind(), io::ErrorKind::InvalidData);
    assert!(c.is_err());

    // No client CA at all: no certificate asked for.
    let plain = server_config(&pki.config(false, None)).unwrap();
    let (s, c) = exchange(plain, pki.client(None, ALL_VERSIONS), 16);
    assert_eq!(s.unwrap().0, PeerIdentity::default());
    c.unwrap();
}

/// A client that connects and says nothing is dropped at the handshake deadline.
#[test]
fn handshake_deadline() {
    let pki = Pki::new("deadline");
    let server = server_config(&pki.config(false, None)).unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = compio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let start = std::time::Instant::now();
        let e = accept(&server, tcp, Duration::from_millis(200))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

/// Configuration errors name the setting, the file and the problem.
#[test]
fn config_errors_name_the_file() {
    let pki = Pki::new("errors");
    let mut cfg = pki.config(true, None);
    cfg.server_private_key = pki.dir.join("nope.key");
    let e = server_config(&cfg).unwrap_err().0;
    assert!(
        e.contains("server_private_key") && e.contains("nope.key"),
        "{e}"
    );

    let mut cfg = pki.config(true, None);
    cfg.server_private_key = pki.dir.join("ca.pem");
    let e = server_config(&cfg).unwrap_err().0;
    assert!(
        e.contains("ca.pem") && e.contains("no PEM private key"),
        "{e}"
    );

    let mut cfg = pki.config(true, None);
    cfg.client_ca_bundle = Some(pki.dir.join("server.key"));
    let e = server_config(&cfg).unwrap_err().0;
    assert!(
        e.contains("client_ca_bundle") && e.contains("no PEM certificate"),
        "{e}"
    );

    // A key that belongs to another certificate.
    std::fs::write(
        pki.dir.join("other.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let mut cfg = pki.config(false, None);
    cfg.server_private_key = pki.dir.join("other.key");
    let e = server_config(&cfg).unwrap_err().0;
    assert!(
        e.contains("cannot be used together") && e.contains("other.key"),
        "{e}"
    );

    let e = server_config(&pki.config(false, Some(ClientCertificate::Optional)))
        .unwrap_err()
        .0;
    assert!(e.contains("client_ca_bundle"), "{e}");
}

/// The client_certificate setting parses from TOML.
#[test]
fn client_certificate_setting_parses() {
    let text = format!(
        "{}\n[server.tls]\nserver_certificate_bundle = \"a\"\nserver_private_key = \"b\"\nclient_ca_bundle = \"c\"\nclient_certificate = \"optional\"\n",
        crate::config::EMBEDDED_DEFAULT
    );
    let tls = crate::config::Config::parse(&text)
        .unwrap()
        .server
        .tls
        .unwrap();
    assert_eq!(tls.client_certificate, Some(ClientCertificate::Optional));
    let bad = text.replace("\"optional\"", "\"sometimes\"");
    assert!(crate::config::Config::parse(&bad).is_err());
}
