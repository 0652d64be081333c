//! rustls client configurations for `--tls` and `--insecure`.
//!
//! tonic is built without its TLS features (the bootstrap itself never terminates TLS), so the
//! client brings its own rustls config and `connect.rs` drives the handshake. Both configs
//! offer ALPN `h2`: gRPC gateways (nginx, Envoy, FC's and NVCF's front ends) pick the HTTP
//! version from ALPN and would otherwise answer HTTP/1.1.

use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How the server certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Against the operating system's trust store.
    SystemRoots,
    /// Not at all: for self-signed gateways, as FC's Go sample allows.
    Insecure,
}

/// A client config for `verification`, speaking TLS 1.2/1.3 with ring and offering ALPN `h2`.
pub fn client_config(verification: Verification) -> anyhow::Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("ring provider does not support the default TLS versions")?;
    let mut config = match verification {
        Verification::SystemRoots => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        Verification::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The system trust store. Unreadable individual certificates are skipped (the platform
/// store commonly holds a few rustls cannot parse); an empty result is an error, because every
/// handshake would then fail with an unhelpful `UnknownIssuer`.
fn system_roots() -> anyhow::Result<RootCertStore> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(loaded.certs);
    if roots.is_empty() {
        match loaded.errors.first() {
            Some(e) => bail!("no usable system root certificates: {e}"),
            None => bail!("no system root certificates found (is ca-certificates installed?)"),
        }
    }
    Ok(roots)
}

/// Accepts any certificate chain and name, but still checks that the peer signed the
/// handshake with the key in the certificate it presented. That keeps the handshake itself
/// honest (no downgrade to an unsigned exchange) while dropping identity checks, which is
/// exactly what a self-signed gateway needs and nothing more.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_config_offers_h2() {
        let config = client_config(Verification::Insecure).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
