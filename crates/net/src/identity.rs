//! A node's TLS identity: an Ed25519 key from a seed and a self-signed
//! certificate carrying it; and the rustls configurations built from them.

use crate::{cert, NetError, ALPN_QUIC, ALPN_TLS};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// PKCS#8 v1 (RFC 8410) for an Ed25519 private key: this prefix, then the
/// 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Neutral names in the certificate. TLS 1.3 encrypts the certificate, so
/// these are seen only by the client, which checks the pin instead.
const CERT_COMMON_NAME: &str = "server";
const CERT_SUBJECT_ALT_NAME: &str = "localhost";

/// The pin of an Ed25519 public key: blake3 of its 32 raw bytes. This is
/// `NodeSpec::tls_key_pin`.
pub fn pin_of_public_key(public_key: &[u8; 32]) -> [u8; 32] {
    *blake3::hash(public_key).as_bytes()
}

/// A node's TLS key and certificate, with the server configurations of
/// both transports ready to use.
///
/// Use a seed of its own for the TLS key (for instance derived from the
/// node's secret with `blake3::derive_key`), not the account key's seed:
/// the TLS key signs handshakes on every connection.
#[derive(Clone)]
pub struct TlsIdentity {
    public_key: [u8; 32],
    certificate: CertificateDer<'static>,
    pub(crate) tls_server: Arc<rustls::ServerConfig>,
    pub(crate) quic_server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsIdentity(pin {})", crate::hex(&self.pin()[..4]))
    }
}

impl TlsIdentity {
    /// The identity of a 32-byte secret seed. Deterministic in the key (the
    /// pin); the certificate's bytes are not (rcgen picks a random serial),
    /// which nobody relies on.
    pub fn from_seed(seed: [u8; 32]) -> Result<TlsIdentity, NetError> {
        let mut pkcs8 = Vec::with_capacity(48);
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(&seed);
        let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);

        let key_pair =
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(identity_error)?;
        let mut params =
            rcgen::CertificateParams::new(vec![CERT_SUBJECT_ALT_NAME.to_string()]).map_err(identity_error)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, CERT_COMMON_NAME);
        let certificate = params.self_signed(&key_pair).map_err(identity_error)?.der().clone();

        // The key the certificate carries is the one we derived: checked,
        // since the pin is computed from the certificate by clients.
        let public_key = cert::ed25519_key_of_cert(&certificate).map_err(|reason| NetError::Identity { reason })?;
        if key_pair.public_key_raw() != public_key {
            return Err(NetError::Identity { reason: "certificate carries a different key".to_string() });
        }

        let key = PrivateKeyDer::Pkcs8(pkcs8);
        let tls_server = server_config(&certificate, &key, ALPN_TLS)?;
        let quic_server = server_config(&certificate, &key, ALPN_QUIC)?;
        Ok(TlsIdentity { public_key, certificate, tls_server, quic_server })
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    /// blake3 of the public key: what the node publishes as
    /// `NodeSpec::tls_key_pin` and clients pass to [`crate::connect`].
    pub fn pin(&self) -> [u8; 32] {
        pin_of_public_key(&self.public_key)
    }

    /// The self-signed certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }
}

fn identity_error(e: rcgen::Error) -> NetError {
    NetError::Identity { reason: e.to_string() }
}

fn server_config(
    certificate: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    alpn: &[u8],
) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Identity { reason: e.to_string() })?
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key.clone_key())
        .map_err(|e| NetError::Identity { reason: e.to_string() })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    // Clients never resume (every connection checks the pin afresh), so
    // tickets would be wasted bytes.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// rustls's *ring* provider with the TLS 1.3 suites in our order:
/// AES-128-GCM first (hardware AES and carry-less multiply make it the
/// fastest here: ring uses its VAES/VPCLMULQDQ/AVX2 code on CPUs that have
/// them; ADR 0007), then AES-256-GCM, then ChaCha20-Poly1305 for CPUs
/// without AES instructions. Browsers offer the same order. Both ends are
/// ours, and rustls servers follow the client's order.
pub(crate) fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite::*;
            Arc::new(CryptoProvider {
                cipher_suites: vec![TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256],
                ..rustls::crypto::ring::default_provider()
            })
        })
        .clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_rfc8032_key_of_the_seed() {
        // The same seed through ed25519-zebra (tollway-types) gives the
        // same public key: our PKCS#8 wrapping is right.
        let seed = [42u8; 32];
        let identity = TlsIdentity::from_seed(seed).unwrap();
        let account_key = tollway_types::SigningKey::from_seed(seed).public();
        assert_eq!(identity.public_key(), account_key.0);
        assert_eq!(identity.pin(), *blake3::hash(&account_key.0).as_bytes());
        assert_eq!(TlsIdentity::from_seed(seed).unwrap().pin(), identity.pin());
        assert_ne!(TlsIdentity::from_seed([43; 32]).unwrap().pin(), identity.pin());
    }

    #[test]
    fn aes_gcm_is_preferred() {
        let suites: Vec<_> = crypto_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.iter().all(|s| format!("{s:?}").starts_with("TLS13_")));
    }
}
