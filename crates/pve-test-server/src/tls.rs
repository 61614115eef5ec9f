//! Certificates of the test server, made at start: a CA (like a cluster's `pve-root-ca.pem`)
//! and a node certificate signed by it (like `pve-ssl.pem`) for `localhost` and `127.0.0.1`.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Error while making certificates or the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificates.
pub struct TlsMaterial {
    /// PEM of the CA certificate.
    pub ca_pem: String,
    /// PEM of the node certificate.
    pub cert_pem: String,
    /// DER of the node certificate.
    pub cert_der: Vec<u8>,
    /// rustls server configuration using them.
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TlsMaterial {
    /// Makes a fresh CA and node certificate.
    pub fn generate(node: &str) -> Result<TlsMaterial, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Proxmox Virtual Environment (test)");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "pve-test-server");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_string(), node.to_string()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{node}.test"));
        let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

        let cert_der = cert.der().to_vec();
        let chain = vec![CertificateDer::from(cert_der.clone())];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            cert_der,
            server_config: Arc::new(config),
        })
    }

    /// SHA-256 fingerprint of the node certificate as Proxmox shows it (`AB:CD:...`).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.cert_der);
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
