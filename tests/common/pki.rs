//! Test certificates: a CA, a server certificate for 127.0.0.1/localhost, client
//! certificates (CN and O set), and a client from an unknown CA, written as PEM files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// name -> (cert, key) files
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

impl Pki {
    /// `clients`: (file name, CN, O); a name starting with "rogue" is signed by another CA.
    pub fn new(dir: &Path, clients: &[(&str, &str, &str)]) -> Pki {
        let (ca_cert, issuer) = ca("Origin Test CA");
        let (_, rogue_issuer) = ca("Rogue CA");
        let ca_path = write(dir, "ca.crt", ca_cert.pem());
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let server = params.signed_by(&key, &issuer).unwrap();
        let server_cert = write(dir, "server.crt", server.pem());
        let server_key = write(dir, "server.key", key.serialize_pem());
        let mut out = Vec::new();
        for (name, cn, o) in clients {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, *cn);
            params.distinguished_name.push(DnType::OrganizationName, *o);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            let signer = if name.starts_with("rogue") {
                &rogue_issuer
            } else {
                &issuer
            };
            let cert = params.signed_by(&key, signer).unwrap();
            let c = write(dir, &format!("{name}.crt"), cert.pem());
            let k = write(dir, &format!("{name}.key"), key.serialize_pem());
            out.push((name.to_string(), c, k));
        }
        Pki {
            ca: ca_path,
            server_cert,
            server_key,
            clients: out,
        }
    }

    pub fn tls_section(&self, client_ca: bool, required: Option<bool>) -> String {
        let mut s = format!(
            "[server.tls]\nserver_certificate_bundle = \"{}\"\nserver_private_key = \"{}\"\n",
            self.server_cert.display(),
            self.server_key.display()
        );
        if client_ca {
            s.push_str(&format!("client_ca_bundle = \"{}\"\n", self.ca.display()));
        }
        match required {
            Some(true) => s.push_str("client_certificate = \"required\"\n"),
            Some(false) => s.push_str("client_certificate = \"optional\"\n"),
            None => {}
        }
        s
    }

    /// A rustls client trusting the test CA, with an optional client certificate.
    pub fn client_config(
        &self,
        client: Option<&str>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let (_, c, k) = self.clients.iter().find(|(n, _, _)| n == name).unwrap();
                let chain: Vec<_> = CertificateDer::pem_file_iter(c)
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect();
                let key = PrivateKeyDer::from_pem_file(k).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
