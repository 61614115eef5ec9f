//! How the server's certificate is trusted. There is deliberately no "accept anything".

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// Trust for the API endpoint's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// The operating system's trust store (`/etc/ssl/certs`, read by rustls-native-certs, so
    /// a CA the operator installed with `update-ca-certificates` counts and nothing is
    /// fetched from the network). The certificate must also match the host name.
    SystemRoots,
    /// A PEM bundle of CA certificates, e.g. the cluster's `/etc/pve/pve-root-ca.pem`. The
    /// certificate must chain to one of them and match the host name.
    CaFile(PathBuf),
    /// The SHA-256 fingerprint of the server's own certificate (as Proxmox shows it:
    /// `AB:CD:...`, colons optional). Chain and name are not checked (Proxmox node
    /// certificates are self-issued), but the handshake signature is, so only the holder of
    /// that certificate's key is accepted.
    Fingerprint([u8; 32]),
}

impl TlsTrust {
    /// Parses a fingerprint such as `AB:CD:...` (64 hex digits, colons optional).
    pub fn fingerprint(text: &str) -> Result<TlsTrust, Error> {
        let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(hex_digits.trim())
            .map_err(|_| Error::Config(format!("invalid SHA-256 fingerprint '{text}'")))?;
        let pin: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::Config(format!("fingerprint '{text}' is not 32 bytes (SHA-256)"))
        })?;
        Ok(TlsTrust::Fingerprint(pin))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for a trust mode.
pub(crate) fn client_config(trust: &TlsTrust) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let config = match trust {
        TlsTrust::SystemRoots => {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for err in &loaded.errors {
                tracing::warn!(error = %err, "while loading system CA certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err(Error::Tls("no usable system CA certificates found".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Tls(format!("reading CA file {}: {e}", path.display())))?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| Error::Tls(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("CA file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Tls(format!(
                    "CA file {} holds no certificate",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// A SHA-256 fingerprint as Proxmox shows it (`pvenode cert info`, the GUI, `/nodes`'s
/// `ssl_fingerprint`): upper-case hex pairs joined by colons.
pub fn format_fingerprint(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The server's certificate is not the pinned one. Names the fingerprint the server
/// presented (public, like the certificate itself), so that an operator can compare it with
/// the node's after a certificate renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintMismatch {
    /// The SHA-256 fingerprint of the certificate the server presented, `AB:CD:...`.
    pub presented: String,
}

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server presented a certificate with SHA-256 fingerprint {}, not the pinned one",
            self.presented
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Accepts exactly the certificate with the pinned SHA-256 fingerprint, and still verifies
/// that the peer signed the handshake with that certificate's key.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Sha256::digest(end_entity.as_ref());
        // Constant-time compare; the fingerprint is not secret, but it costs nothing.
        let diff = got
            .iter()
            .zip(self.pin.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = FingerprintMismatch {
                presented: format_fingerprint(&got),
            };
            tracing::warn!("{mismatch}");
            // Carried in the error so the caller's message names it too (see
            // `Error::presented_fingerprint`).
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(mismatch))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fingerprints() {
        let fp = "AB:".repeat(31) + "AB";
        assert!(
            matches!(TlsTrust::fingerprint(&fp), Ok(TlsTrust::Fingerprint(p)) if p == [0xab; 32])
        );
        assert!(TlsTrust::fingerprint("AB:CD").is_err());
        // What is printed parses back to the same pin.
        let printed = format_fingerprint(&[0x0a; 32]);
        assert!(printed.starts_with("0A:0A:") && printed.len() == 32 * 3 - 1);
        assert!(
            matches!(TlsTrust::fingerprint(&printed), Ok(TlsTrust::Fingerprint(p)) if p == [0x0a; 32])
        );
        assert!(TlsTrust::fingerprint("zz").is_err());
    }
}
