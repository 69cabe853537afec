//! TLS by rustls (ring provider): the server configuration from `[server.tls]`, the handshake
//! of an accepted connection, and the client certificate's subject as identity fields.
//! It never decides access.
//!
//! The stream is our own ([`TlsStream`]) rather than `compio::tls`: compio-tls 0.10 (behind
//! compio's `rustls` feature) wraps its connection in a private enum with no way to reach the
//! `ServerConnection`, so the peer certificates cannot be read after its handshake.

mod stream;
mod x509;

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use compio::net::TcpStream;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::config::{ClientCertificate, TlsConfig};

pub use stream::TlsStream;
pub use x509::identity_from_certificate;

/// The ALPN protocol offered: the server speaks HTTP/1.1 only.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A configuration problem, naming the setting, the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

fn file_error(key: &str, path: &Path, what: impl fmt::Display) -> TlsError {
    TlsError(format!("server.tls.{key} {}: {what}", path.display()))
}

/// The subject of the client certificate (empty when none was presented).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
}

/// Builds the server configuration: TLS 1.3 and 1.2, ALPN `http/1.1`, and client
/// certificates verified against `client_ca_bundle` when set.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    // Prefer AES-128-GCM: as secure for this use and about a third cheaper per byte than
    // AES-256-GCM on both ends, which is what bounds large pulls over TLS.
    provider.cipher_suites.sort_by_key(|suite| {
        let name = format!("{:?}", suite.suite());
        (!name.contains("AES_128_GCM"), !name.starts_with("TLS13"))
    });
    let provider = Arc::new(provider);
    let chain = load_certificates("server_certificate_bundle", &cfg.server_certificate_bundle)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.server_private_key).map_err(|e| {
        let what = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key found".to_string(),
            other => other.to_string(),
        };
        file_error("server_private_key", &cfg.server_private_key, what)
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("server.tls: {e}")))?;
    let builder = match (&cfg.client_ca_bundle, cfg.client_certificate) {
        (None, None) => builder.with_no_client_auth(),
        (None, Some(_)) => {
            return Err(TlsError(
                "server.tls.client_certificate needs server.tls.client_ca_bundle".into(),
            ))
        }
        (Some(path), mode) => {
            let verifier = client_verifier(path, provider.clone())?;
            // Optional by default: `client_ca_bundle` enables certificates as an identity
            // source beside passwords; a presented certificate is still verified, and a bad
            // one still fails the handshake.
            let verifier = match mode.unwrap_or(ClientCertificate::Optional) {
                ClientCertificate::Required => verifier,
                ClientCertificate::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_error("client_ca_bundle", path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let files = format!(
            "{} and {}",
            cfg.server_certificate_bundle.display(),
            cfg.server_private_key.display()
        );
        TlsError(format!(
            "server.tls: the certificate and key in {files} cannot be used together: {e}"
        ))
    })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Our cipher suite order (AES-128-GCM first) rather than the client's.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::server::ClientCertVerifierBuilder, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certificates("client_ca_bundle", path)?
        .into_iter()
        .enumerate()
    {
        roots.add(cert).map_err(|e| {
            file_error(
                "client_ca_bundle",
                path,
                format!("certificate #{}: {e}", i + 1),
            )
        })?;
    }
    Ok(WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider,
    ))
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
fn load_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| file_error(key, path, e))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// Runs the server handshake on an accepted connection within `deadline`, and reads the
/// client certificate's subject. On a timeout the pending I/O is cancelled and the
/// connection dropped (`TimedOut`); a refused handshake is `InvalidData`.
pub async fn accept(
    config: &Arc<ServerConfig>,
    tcp: TcpStream,
    deadline: Duration,
) -> io::Result<(TlsStream, PeerIdentity)> {
    let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, conn);
    match compio::time::timeout(deadline, stream.handshake()).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        }
    }
    let peer = stream.peer_identity();
    Ok((stream, peer))
}

/// Where distributions keep the system's trusted roots, in the order tried.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// A client configuration for talking to an upstream registry: the roots in `ca_bundle`, or
/// the system's; TLS 1.3 and 1.2; ALPN `http/1.1`. `what` names the setting in errors.
pub fn client_config(
    what: &str,
    ca_bundle: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let paths: Vec<&Path> = match ca_bundle {
        Some(p) => vec![p],
        None => SYSTEM_ROOTS
            .iter()
            .map(Path::new)
            .filter(|p| p.exists())
            .take(1)
            .collect(),
    };
    for path in paths {
        let iter = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
        for cert in iter {
            let cert = cert.map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))?;
            // The system bundle may hold a certificate rustls cannot use: skip it.
            let added = roots.add(cert);
            if let (Err(e), Some(_)) = (added, ca_bundle) {
                return Err(TlsError(format!("{what} {}: {e}", path.display())));
            }
        }
    }
    if roots.is_empty() {
        tracing::warn!("{what}: no trusted roots found; HTTPS upstreams will fail verification");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("{what}: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Connects TLS over `tcp` to `host` (verified against the configuration's roots).
pub async fn connect(
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
    deadline: Duration,
) -> io::Result<TlsStream<rustls::ClientConnection>> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, conn);
    match compio::time::timeout(deadline, stream.handshake()).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        }
    }
    Ok(stream)
}

#[cfg(test)]
mod tests;
